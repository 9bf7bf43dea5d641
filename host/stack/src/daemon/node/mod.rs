//! One node's runtime (`clusterd run`): the I/O shell around the sans-I/O cluster member
//! ([`crate::core::member::Member`]): the replication endpoint on UDP, Raft on the allocation
//! map (its storage and messages), the wire's packet port, the control socket and the timers.
//! One task owns all state; sockets and timers feed it through `tokio::select!`, and the
//! member's outputs go to the sockets and to Raft.
//!
//! The records and datagrams on the replication transport are the state core's
//! [`crate::core::record`] types: records `E` (a state-core message), `Q`/`D` (resync request
//! and end), `K` (SA key material, only ever inside sealed frames), `F` (final state through an
//! epoch); datagrams `H` (heartbeat) and `R` (a Raft message).

mod commands;
mod dumps;
mod ports;
mod views;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::core::distribution::ClusterSecret;
use crate::core::ids::NodeId;
use crate::core::member::{ConsensusView, Member, MemberConfig, Output, PacketOutcome, Time, To};
use crate::core::node::{Node, NodeConfig};
use crate::core::record::{Datagram, Record};
use crate::core::rules::RuleSet;
use crate::daemon::card::{self, CardTable};
use crate::daemon::config::Config;
use crate::daemon::consensus::{Consensus, TICK_MS};
use crate::daemon::control::{self, ControlRequest};
use crate::daemon::logging::{RateLimiter, Verdict};
use crate::daemon::protocol::{Request, Response};
use crate::daemon::wireproto::{self, Code};
use crate::sync::{Endpoint, EndpointConfig, SyncEvent, UdpDriver};

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A socket could not be bound.
    #[error("cannot bind {what} {addr}: {err}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// Address or path.
        addr: String,
        /// The error.
        err: std::io::Error,
    },
    /// The consensus state could not be opened.
    #[error("{0}")]
    Consensus(#[from] crate::daemon::consensus::ConsensusError),
    /// The card backend could not be opened.
    #[error("{0}")]
    Card(String),
    /// The rule file is unreadable or invalid.
    #[error("rules: {0}")]
    Rules(String),
    /// The identity file is unreadable, too open or not an identity.
    #[error("{0}")]
    Identity(#[from] crate::sync::IdentityError),
    /// The incarnation file could not be kept.
    #[error("state directory {path}: {err}")]
    State {
        /// The path.
        path: String,
        /// The error.
        err: std::io::Error,
    },
}

/// One log event ([`tracing`]): level, target (`clusterd::node`, `clusterd::sync`, ...), the
/// node (field `node`), message (see [`crate::daemon::logging`]).
macro_rules! log {
    ($lvl:ident, $target:literal, $node:expr, $($arg:tt)*) => {
        tracing::event!(target: $target, tracing::Level::$lvl, node = $node.0, $($arg)*)
    };
}

/// Lines a remote peer (or a broken interface) could cause at will: each kind is
/// rate-limited to [`LOG_LINES_PER_S`] a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LogKind {
    /// Frames of this node's id under another incarnation.
    DuplicateId,
    /// Errors on the card's interfaces.
    Interfaces,
    /// Records of a peer refused (an SA key record).
    PeerRecords,
}

/// Lines of one [`LogKind`] written each second at most.
const LOG_LINES_PER_S: u32 = 5;

/// Where and how loud one of the member's log lines goes (the member's lines are plain text:
/// classified by what they say).
fn member_line_class(line: &str) -> (tracing::Level, &'static str, Option<LogKind>) {
    use tracing::Level;
    if (line.starts_with("peer ") && line.contains(" failed")) || line == "fenced: true" {
        return (Level::WARN, "node", None);
    }
    if line.starts_with("identifier ") && line.contains("failed before its final state") {
        return (Level::WARN, "node", None);
    }
    if line.starts_with("SA ") {
        if line.contains("key record refused") {
            return (Level::WARN, "esp", Some(LogKind::PeerRecords));
        }
        if line.contains("cannot install") || line.contains("share a key") {
            return (Level::WARN, "esp", None);
        }
        return (Level::INFO, "esp", None);
    }
    if line.starts_with("resync answer") {
        return (Level::WARN, "sync", None);
    }
    if line.starts_with("resync") || line.starts_with("ready (") || line.starts_with("installed ") {
        return (Level::INFO, "sync", None);
    }
    if line.starts_with("card ") {
        return (Level::INFO, "card", None);
    }
    if line.starts_with("leader proposes") || line.starts_with("proposes node") {
        return (Level::INFO, "raft", None);
    }
    (Level::INFO, "node", None)
}

/// Writes `line` at `level` to target `clusterd::<target>` (the targets need literals).
fn event_at(level: tracing::Level, target: &str, node: NodeId, line: &str) {
    use tracing::Level;
    macro_rules! at {
        ($t:literal) => {
            match level {
                Level::ERROR => log!(ERROR, $t, node, "{line}"),
                Level::WARN => log!(WARN, $t, node, "{line}"),
                Level::INFO => log!(INFO, $t, node, "{line}"),
                Level::DEBUG => log!(DEBUG, $t, node, "{line}"),
                _ => log!(TRACE, $t, node, "{line}"),
            }
        };
    }
    match target {
        "sync" => at!("clusterd::sync"),
        "raft" => at!("clusterd::raft"),
        "card" => at!("clusterd::card"),
        "esp" => at!("clusterd::esp"),
        _ => at!("clusterd::node"),
    }
}

/// How long a graceful leave may take before the node stops anyway.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The next delivery of a signal stream (never, without one).
async fn next_signal(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Wall-clock milliseconds since the Unix epoch (for reports that compare processes).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A `synthesize` command in progress (worked on in slices so heartbeats keep flowing).
struct SynthJob {
    next: u32,
    end: u32,
    created: u64,
    started: std::time::Instant,
    reply: tokio::sync::oneshot::Sender<Response>,
}

/// The runtime of one node: the member and the I/O around it.
pub struct Runtime {
    cfg: Config,
    member: Member<CardTable>,
    ep: Endpoint,
    udp: UdpDriver,
    wire: Option<UdpSocket>,
    /// The card's ports on real interfaces (`outside`/`inside`).
    ports: Option<ports::Ports>,
    /// Wire packets held by the member (token -> sequence number and sender), answered when
    /// released.
    held_wire: std::collections::HashMap<u64, (u64, SocketAddr)>,
    ctl_rx: mpsc::Receiver<ControlRequest>,
    raft: Consensus,
    next_tick: Duration,
    verdicts: BTreeMap<Code, u64>,
    records_dropped: u64,
    raft_errors: u64,
    /// Card failures seen (status `card_errors`).
    card_errors: u64,
    next_card_retry: Duration,
    started_unix_ms: u64,
    stopping: bool,
    /// A graceful leave under way (SIGTERM, SIGINT, `ctl leave`): since when.
    leaving_since: Option<Duration>,
    /// READY=1 was sent to the service manager (systemd), and when STATUS is due next.
    notified_ready: bool,
    next_status_notify: Duration,
    synth: Option<SynthJob>,
    /// The walks over the tables in progress (`dump`, `card_dump`, `check`).
    walks: dumps::Walks,
    /// The views in progress (`ctl dump|count|events`).
    views: views::Views,
    /// Exit when the parent process goes away (set for nodes a demo or test spawned).
    parent: Option<nix::unistd::Pid>,
    next_parent_check: Duration,
    /// Reused buffer for encoding records.
    rec_buf: Vec<u8>,
    /// The rate limiters of the log lines a peer could flood.
    log_limits: BTreeMap<LogKind, RateLimiter>,
    /// Each peer's liveness as last logged (a change is a log line).
    peers_alive: BTreeMap<NodeId, bool>,
    /// Frames refused for their authentication (wrong key, bad signature) as last logged.
    auth_refused_seen: u64,
    /// The state directory's lock, held while the node runs (released by the kernel when the
    /// process ends, however it ends).
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn state_err(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |err| RunError::State {
        path: path.display().to_string(),
        err,
    }
}

/// Takes the state directory's lock (`state_dir/lock`, an exclusive `flock`, which dies with
/// the process): a second process for the same state directory is refused. The file names
/// the holder's process id.
fn lock_state_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, RunError> {
    use std::io::{Read as _, Seek as _, Write as _};
    std::fs::create_dir_all(dir).map_err(state_err(dir))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(state_err(&path))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let pid = format!("{}\n", std::process::id());
            let _ = lock
                .set_len(0)
                .and_then(|()| lock.rewind())
                .and_then(|()| lock.write_all(pid.as_bytes()));
            Ok(lock)
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another clusterd".to_string()
            } else {
                format!("another clusterd (pid {holder})")
            };
            Err(RunError::State {
                path: dir.display().to_string(),
                err: std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "in use by {who}: {} is locked; stop that node, or give this one its \
                         own state_dir",
                        path.display()
                    ),
                ),
            })
        }
        Err((_, e)) => Err(RunError::State {
            path: path.display().to_string(),
            err: std::io::Error::other(format!("cannot lock: {e}")),
        }),
    }
}

/// Picks incarnations that grow across restarts: max(previous + 1, clock), kept in the state
/// directory. Returns (transport incarnation, core incarnation).
fn next_incarnations(dir: &Path) -> Result<(u64, u32), RunError> {
    std::fs::create_dir_all(dir).map_err(state_err(dir))?;
    let path = dir.join("incarnation");
    let prev: (u64, u32) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .unwrap_or((0, 0));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let t = (prev.0 + 1).max(now.as_micros() as u64);
    let c = (prev.1.saturating_add(1)).max(now.as_secs() as u32);
    std::fs::write(&path, format!("{t} {c}\n")).map_err(state_err(&path))?;
    Ok((t, c))
}

async fn recv_opt(
    sock: &Option<UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Packets and frames held at most while their identifiers wait for a handover.
const HOLD_ITEMS: usize = 8192;
/// Their bytes at most.
const HOLD_BYTES: usize = 16 << 20;
/// How long one waits at most (a handover whose previous owner died opens after failure
/// detection, well within this).
const HOLD_WAIT: Duration = Duration::from_millis(1500);

async fn ports_readable(ports: &Option<ports::Ports>) {
    match ports {
        Some(p) => p.readable().await,
        None => std::future::pending().await,
    }
}

impl Runtime {
    /// Opens everything a node needs: consensus state, card, sockets.
    ///
    /// # Errors
    /// [`RunError`] naming what failed.
    pub async fn start(cfg: Config) -> Result<Self, RunError> {
        let lock = lock_state_dir(&cfg.state_dir)?;
        let (t_inc, c_inc) = next_incarnations(&cfg.state_dir)?;
        let table = card::open(&cfg.card, cfg.identifiers, cfg.card_capacity)
            .map_err(|e| RunError::Card(e.to_string()))?;
        let secret = ClusterSecret::new(*cfg.key.derive16(crate::daemon::DISTRIBUTION_LABEL));
        let mut ncfg = NodeConfig::new(cfg.node, secret);
        ncfg.incarnation = c_inc;
        ncfg.count = cfg.identifiers;
        if let Some(path) = &cfg.rules {
            let text = std::fs::read_to_string(path)
                .map_err(|e| RunError::Rules(format!("{}: {e}", path.display())))?;
            ncfg.rules = RuleSet::parse(&text).map_err(|e| RunError::Rules(e.to_string()))?;
        }
        let core = Node::new(ncfg, table);
        let mcfg = MemberConfig {
            node: cfg.node,
            role: cfg.role,
            identifiers: cfg.identifiers,
            peers: cfg.peers.iter().map(|p| (p.id, p.role)).collect(),
            members: cfg.traffic_members().into_iter().collect(),
            failure: Duration::from_millis(cfg.failure_ms),
            heartbeat: Duration::from_millis(cfg.heartbeat_ms),
            seq_jump: cfg.seq_jump,
        };
        let mut member = Member::new(mcfg, core);
        // a planned move loses nothing: packets of identifiers in transition wait for the
        // handover (bounded), then go through in order
        member.set_hold(HOLD_ITEMS, HOLD_BYTES, HOLD_WAIT);
        let peers: Vec<_> = cfg.peers.iter().map(|p| p.id).collect();
        let mut ecfg = EndpointConfig::new(cfg.node, t_inc);
        ecfg.flush_interval = Duration::from_millis(cfg.flush_ms);
        if let Some(path) = &cfg.identity {
            let id = crate::sync::NodeIdentity::load(path)?;
            log!(
                INFO,
                "clusterd::sync",
                cfg.node,
                "identity {}: frames signed, peers' signatures checked",
                id.public().to_hex()
            );
            ecfg.identity = Some(std::sync::Arc::new(id));
            ecfg.peer_keys = cfg
                .peers
                .iter()
                .filter_map(|p| p.pubkey.map(|k| (p.id, k)))
                .collect();
        } else if !cfg.peers.is_empty() {
            log!(
                WARN,
                "clusterd::sync",
                cfg.node,
                "no identity_file: frames are sealed with the cluster key only, so any member can \
                 speak as any other (see docs/clusterd.md, \"Node identities\")"
            );
        }
        let ep = Endpoint::new(ecfg, cfg.key.clone(), peers.iter().copied());
        let addrs = cfg.peers.iter().map(|p| (p.id, p.addr)).collect();
        let udp = UdpDriver::bind(cfg.listen, addrs)
            .await
            .map_err(|err| RunError::Bind {
                what: "sync socket",
                addr: cfg.listen.to_string(),
                err,
            })?;
        let wire = match cfg.wire {
            Some(a) => Some(
                wireproto::bind_wire_socket(a).map_err(|err| RunError::Bind {
                    what: "wire socket",
                    addr: a.to_string(),
                    err,
                })?,
            ),
            None => None,
        };
        let ports = match &cfg.interfaces {
            None => None,
            Some((outside, inside)) => {
                let card = member.node_table_mut().card_mut().card_mut();
                if card.regs_mut().wires().is_none() || !card.has_packet_port() {
                    return Err(RunError::Card(format!(
                        "outside/inside bridge a simulated card's ports to interfaces; card = \
                         {} has none (a real card's Ethernet ports are its own: remove \
                         outside and inside)",
                        cfg.card
                    )));
                }
                let frame_bytes = card
                    .port()
                    .map_err(|e| RunError::Card(e.to_string()))?
                    .frame_bytes() as usize;
                let p = ports::Ports::open(outside, inside, frame_bytes).map_err(RunError::Card)?;
                log!(
                    INFO,
                    "clusterd::card",
                    cfg.node,
                    "card ports on interfaces: outside {outside}, inside {inside}"
                );
                Some(p)
            }
        };
        let (tx, ctl_rx) = mpsc::channel(64);
        let access = control::Access::for_daemon(cfg.control_group.as_deref()).map_err(|err| {
            RunError::Bind {
                what: "control socket",
                addr: cfg.control.display().to_string(),
                err,
            }
        })?;
        if let Some(addr) = cfg.metrics {
            let listener =
                crate::daemon::metrics::bind(addr)
                    .await
                    .map_err(|err| RunError::Bind {
                        what: "metrics listener (the metrics setting)",
                        addr: addr.to_string(),
                        err,
                    })?;
            crate::daemon::metrics::serve(listener, cfg.node, tx.clone());
            log!(
                INFO,
                "clusterd::metrics",
                cfg.node,
                "metrics at http://{addr}/metrics"
            );
        }
        control::serve(&cfg.control, cfg.node, access, tx).map_err(|err| RunError::Bind {
            what: "control socket",
            addr: cfg.control.display().to_string(),
            err,
        })?;
        let mut raft = Consensus::open(
            cfg.node,
            &cfg.voters(),
            &cfg.learners(),
            cfg.identifiers,
            cfg.state_dir.clone(),
        )?;
        for note in raft.take_notes() {
            if note.contains("cut off") {
                log!(WARN, "clusterd::raft", cfg.node, "{note}");
            } else {
                log!(INFO, "clusterd::raft", cfg.node, "{note}");
            }
        }
        Ok(Self {
            member,
            ep,
            udp,
            wire,
            ports,
            held_wire: std::collections::HashMap::new(),
            ctl_rx,
            raft,
            next_tick: Duration::ZERO,
            verdicts: BTreeMap::new(),
            records_dropped: 0,
            raft_errors: 0,
            card_errors: 0,
            next_card_retry: Duration::ZERO,
            started_unix_ms: unix_ms(),
            stopping: false,
            leaving_since: None,
            notified_ready: false,
            next_status_notify: Duration::ZERO,
            synth: None,
            walks: dumps::Walks::default(),
            views: views::Views::default(),
            parent: std::env::var_os("CLUSTERD_EXIT_WITH_PARENT").map(|_| nix::unistd::getppid()),
            next_parent_check: Duration::from_secs(1),
            rec_buf: Vec::with_capacity(256),
            log_limits: BTreeMap::new(),
            peers_alive: BTreeMap::new(),
            auth_refused_seen: 0,
            _lock: lock,
            cfg,
        })
    }

    /// Runs until a `stop` control command, or until a graceful leave (SIGTERM, SIGINT,
    /// `leave`) handed every identifier over.
    pub async fn run(mut self) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sbuf = vec![0u8; 65_536];
        let mut wbuf = vec![0u8; 65_536];
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        let mut hup = signal(SignalKind::hangup()).ok();
        while !self.stopping {
            let deadline = self.udp.instant(self.next_deadline());
            tokio::select! {
                Some(()) = next_signal(&mut term) => self.begin_leave("SIGTERM"),
                Some(()) = next_signal(&mut int) => self.begin_leave("SIGINT"),
                Some(()) = next_signal(&mut hup) => self.reload(),
                r = self.udp.recv(&mut sbuf) => {
                    if let Ok(n) = r {
                        self.on_sync_datagram(&sbuf[..n]);
                        self.drain_sync(&mut sbuf);
                    }
                }
                () = ports_readable(&self.ports) => self.on_ports(),
                r = recv_opt(&self.wire, &mut wbuf) => {
                    if let Ok((n, from)) = r {
                        self.on_wire(&wbuf[..n], from);
                        for _ in 0..512 {
                            let Some(w) = &self.wire else { break };
                            match w.try_recv_from(&mut wbuf) {
                                Ok((n, from)) => self.on_wire(&wbuf[..n], from),
                                Err(_) => break,
                            }
                        }
                    }
                }
                Some((req, tx)) = self.ctl_rx.recv() => {
                    match req {
                        Request::Synthesize { flows, first } => {
                            self.start_synthesize(flows, first, tx);
                        }
                        Request::Dump { limit } => self.start_dump(limit.unwrap_or(10_000), tx),
                        Request::CardDump { did } => self.start_card_dump(did, tx),
                        Request::Check => self.start_check(tx),
                        req @ (Request::TableDump { .. }
                        | Request::TableCount { .. }
                        | Request::Events { .. }) => self.start_view(req, tx),
                        req => {
                            let _ = tx.send(self.control(&req));
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
            // acks (and records) already waiting go in before the timers run: after a long
            // handler (a resync answer, a card install) a retransmission timer must not fire
            // for frames the peer has long acknowledged
            self.drain_sync(&mut sbuf);
            self.synthesize_slice();
            self.walk_slice();
            self.views_slice();
            self.after_io();
        }
        let _ = std::fs::remove_file(&self.cfg.control);
        log!(INFO, "clusterd::node", self.cfg.node, "stopped");
    }

    /// Starts a graceful leave: the member hands every identifier over in planned moves, and
    /// the loop ends once that is done and the replication stream is delivered
    /// ([`Self::check_leave`]). A second signal stops at once; so does a node with nobody to
    /// hand over to.
    fn begin_leave(&mut self, why: &str) {
        if self.leaving_since.is_some() {
            log!(
                INFO,
                "clusterd::node",
                self.cfg.node,
                "{why} again: stopping now"
            );
            self.stopping = true;
            return;
        }
        if !self.member.has_successor() {
            log!(
                INFO,
                "clusterd::node",
                self.cfg.node,
                "{why}: no other member takes traffic to hand over to: stopping"
            );
            self.stopping = true;
            return;
        }
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("leaving: handing identifiers over"),
        ]);
        log!(INFO, "clusterd::node",
            self.cfg.node,
            "{why}: leaving the cluster (planned moves of {} identifiers; a second signal stops at once)",
            self.member.core().allocation().ids_of(self.cfg.node).len()
        );
        self.leaving_since = Some(self.udp.now());
        self.member.leave();
        self.handle_outputs();
    }

    /// Ends a graceful leave: once the member owns nothing and what it sent has reached its
    /// live peers (its final state records among it); after [`LEAVE_TIMEOUT`] it stops
    /// anyway (what it still owns then fails over).
    fn check_leave(&mut self) {
        let Some(since) = self.leaving_since else {
            return;
        };
        let now = self.udp.now();
        let delivered = self
            .ep
            .peers()
            .filter(|p| self.member.is_alive(*p))
            .all(|p| self.ep.backlog(p) == 0);
        if self.member.has_left() && delivered {
            log!(
                INFO,
                "clusterd::node",
                self.cfg.node,
                "left the cluster: every identifier handed over in {} ms",
                now.saturating_sub(since).as_millis()
            );
            self.stopping = true;
        } else if now.saturating_sub(since) >= LEAVE_TIMEOUT {
            log!(
                WARN,
                "clusterd::node",
                self.cfg.node,
                "leave not done after {} s (owns {}): stopping; the rest fails over",
                LEAVE_TIMEOUT.as_secs(),
                self.member.core().allocation().ids_of(self.cfg.node).len()
            );
            self.stopping = true;
        } else if !self.member.has_successor() && !self.member.has_left() {
            log!(
                INFO,
                "clusterd::node",
                self.cfg.node,
                "leave: no other member takes traffic any more: stopping"
            );
            self.stopping = true;
        }
    }

    /// SIGHUP: reads the rules file again and replaces the rule set (what else the config
    /// holds needs a restart: addresses, keys and identities, the card). A file that does not
    /// parse keeps the rules in force, with a log line naming the error.
    fn reload(&mut self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        match &self.cfg.rules {
            None => log!(
                INFO,
                "clusterd::node",
                self.cfg.node,
                "SIGHUP: no rules file in the config (allow all); nothing to reload"
            ),
            Some(path) => {
                let read = std::fs::read_to_string(path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| RuleSet::parse(&t).map_err(|e| e.to_string()));
                match read {
                    Ok(rules) => {
                        self.member
                            .replace_rules(rules, &path.display().to_string());
                        self.handle_outputs();
                    }
                    Err(e) => {
                        log!(WARN, "clusterd::node",
                        self.cfg.node,
                        "SIGHUP: rules {}: {e}; the rules in force stay (fix the file and send \
                         SIGHUP again)",
                        path.display()
                    )
                    }
                }
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }

    /// Tells the service manager (systemd, `Type=notify`) that the node is ready once it
    /// takes traffic, and what it does every few seconds. Nothing without `NOTIFY_SOCKET`.
    fn notify_service_manager(&mut self) {
        let now = self.udp.now();
        if !self.notified_ready && self.member.takes_traffic() {
            self.notified_ready = true;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
        if now >= self.next_status_notify {
            self.next_status_notify = now + Duration::from_secs(5);
            let a = self.member.core().allocation();
            let status = format!(
                "epoch {}, owns {} of {} identifiers{}",
                a.epoch.0,
                a.ids_of(self.cfg.node).len(),
                a.len(),
                if self.member.takes_traffic() {
                    ""
                } else {
                    ", not taking traffic"
                }
            );
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
        }
    }

    fn time(&self) -> Time {
        Time {
            mono: self.udp.now(),
            unix_ms: unix_ms(),
        }
    }

    fn next_deadline(&self) -> Duration {
        let mut d = self.next_tick.min(self.member.next_timeout());
        if let Some(t) = self.ep.poll_timeout() {
            d = d.min(t);
        }
        if self.synth.is_some() || self.walks.busy() {
            d = d.min(self.udp.now());
        }
        if let Some(w) = self.views.wake(self.udp.now()) {
            d = d.min(w);
        }
        d
    }

    // ----- inputs -----

    fn on_sync_datagram(&mut self, bytes: &[u8]) {
        let _ = self.udp.deliver(&mut self.ep, bytes);
        self.process_sync_events();
    }

    /// Handles up to 64 sync datagrams already waiting, without blocking.
    fn drain_sync(&mut self, buf: &mut [u8]) {
        for _ in 0..64 {
            match self.udp.try_recv(buf) {
                Some(n) => self.on_sync_datagram(&buf[..n]),
                None => break,
            }
        }
    }

    fn process_sync_events(&mut self) {
        while let Some(ev) = self.ep.poll_event() {
            let t = self.time();
            match ev {
                SyncEvent::Records { from, batch } => {
                    self.views_records_in(batch.iter());
                    self.member.on_records(t, from, batch.iter());
                }
                SyncEvent::Datagram { from, payload } => {
                    if let Some(m) = self.member.on_datagram(t, from, &payload) {
                        if self.raft.step(from, m).is_err() {
                            self.raft_errors += 1;
                        }
                    }
                }
                SyncEvent::PeerIncarnation { peer, .. } => self.member.on_peer_restarted(t, peer),
                SyncEvent::DuplicateId {
                    node,
                    incarnation,
                    other,
                    reported_by,
                } => {
                    // never acted on: the endpoint keeps the incarnation it accepted
                    if !self.log_allowed(LogKind::DuplicateId) {
                    } else if reported_by == self.cfg.node {
                        log!(
                            ERROR,
                            "clusterd::sync",
                            self.cfg.node,
                            "DUPLICATE NODE ID: frames of {node} arrive under incarnation {other} \
                             as well as {incarnation}: two processes are configured as {node} (or \
                             old frames are replayed); give each process its own node id"
                        );
                    } else {
                        log!(
                            ERROR,
                            "clusterd::sync",
                            self.cfg.node,
                            "DUPLICATE NODE ID: {reported_by} hears this node's id {node} under \
                             incarnation {other} too (this process is {incarnation}): another \
                             process is configured as {node}; stop it or give it its own node id"
                        );
                    }
                }
            }
        }
        self.handle_outputs();
    }

    /// Frames on the real interfaces: through the member, out of their ports.
    fn on_ports(&mut self) {
        let t = self.time();
        let Some(p) = &mut self.ports else { return };
        let pumped = p.pump(&mut self.member, t, &mut self.verdicts);
        if let Err(e) = pumped {
            if self.log_allowed(LogKind::Interfaces) {
                log!(ERROR, "clusterd::card", self.cfg.node, "interfaces: {e}");
            }
        }
        self.handle_outputs();
    }

    fn on_wire(&mut self, d: &[u8], from: SocketAddr) {
        let Some((seq, pkt)) = wireproto::parse_packet(d) else {
            return;
        };
        let t = self.time();
        let outcome = self.member.on_packet(t, pkt);
        if let PacketOutcome::Held(token) = outcome {
            // the verdict goes out when the member releases it
            self.held_wire.insert(token, (seq, from));
            self.handle_outputs();
            return;
        }
        let code = Code::from(outcome);
        *self.verdicts.entry(code).or_insert(0) += 1;
        if let Some(w) = &self.wire {
            let _ = w.try_send_to(&wireproto::encode_verdict(seq, self.cfg.node, code), from);
        }
        self.handle_outputs();
    }

    // ----- outputs -----

    /// Carries out what the member asked for: records and heartbeats to the endpoint,
    /// proposals and promotions to Raft, log lines to stderr.
    fn handle_outputs(&mut self) {
        let outputs: Vec<Output> = self.member.drain_outputs().collect();
        if outputs.is_empty() {
            return;
        }
        let peers: Vec<_> = self.member.replication_peers().collect();
        let now = self.udp.now();
        for o in outputs {
            match o {
                Output::Record { to, record } => {
                    self.views_record_out(&record);
                    let one;
                    let targets: &[_] = match to {
                        To::Peers => &peers,
                        To::Node(n) => {
                            one = [n];
                            &one
                        }
                    };
                    // key material goes through a buffer of its own that is wiped on drop;
                    // everything else through the reused one
                    let key_bytes;
                    let bytes: &[u8] = if matches!(record, Record::SaKey { .. }) {
                        key_bytes = record.to_bytes();
                        &key_bytes
                    } else {
                        self.rec_buf.clear();
                        record.emit(&mut self.rec_buf);
                        &self.rec_buf
                    };
                    for &p in targets {
                        if self.ep.send_record(now, p, bytes).is_err() {
                            self.records_dropped += 1;
                        }
                    }
                }
                Output::Heartbeat { to, heartbeat } => {
                    let _ = self.ep.send_datagram(to, &heartbeat.to_bytes());
                }
                Output::Propose(a) => {
                    if self.raft.propose(&a).is_err() {
                        self.member.proposal_failed();
                    }
                }
                Output::PromoteVoter(n) => {
                    if self.raft.promote(n).is_err() {
                        self.raft_errors += 1;
                    }
                }
                Output::DiscardBacklog(p) => {
                    if self.ep.backlog(p) > 0 {
                        self.ep.discard_backlog(p);
                    }
                }
                Output::Log(line) => {
                    let (level, target, kind) = member_line_class(&line);
                    if kind.is_none_or(|k| self.log_allowed(k)) {
                        event_at(level, target, self.cfg.node, &line);
                    }
                }
                Output::Released {
                    token,
                    outcome,
                    egress,
                } => {
                    let code = Code::from(outcome);
                    *self.verdicts.entry(code).or_insert(0) += 1;
                    if let Some((seq, from)) = self.held_wire.remove(&token) {
                        if let Some(w) = &self.wire {
                            let v = wireproto::encode_verdict(seq, self.cfg.node, code);
                            let _ = w.try_send_to(&v, from);
                        }
                    }
                    if let Some(p) = &mut self.ports {
                        if !egress.is_empty() {
                            p.send(egress);
                        }
                    }
                }
            }
        }
    }

    // ----- periodic work -----

    fn after_io(&mut self) {
        let now = self.udp.now();
        self.ep.handle_timeout(now);
        self.process_sync_events();
        let tick = Duration::from_millis(TICK_MS);
        while now >= self.next_tick {
            self.raft.tick();
            self.next_tick += tick;
        }
        self.pump_raft();
        let t = self.time();
        let voters = self.raft.voters();
        let view = ConsensusView {
            is_leader: self.raft.is_leader(),
            leader: self.raft.leader(),
            agreed: self.raft.allocation(),
            voters: &voters,
            conf_change_pending: self.raft.conf_change_pending(),
        };
        self.member.tick(t, &view);
        self.handle_outputs();
        self.pump_raft();
        if now >= self.next_parent_check {
            self.next_parent_check = now + Duration::from_secs(1);
            self.log_once_a_second();
            if self.parent.is_some_and(|p| p != nix::unistd::getppid()) {
                log!(
                    INFO,
                    "clusterd::node",
                    self.cfg.node,
                    "parent process gone: stopping"
                );
                self.stopping = true;
            }
        }
        self.handle_outputs();
        self.check_card();
        self.udp.send_all(&mut self.ep);
        self.check_leave();
        self.notify_service_manager();
    }

    /// Whether a line of `kind` goes out now; the first after a run of suppressed ones is
    /// preceded by a line that says how many.
    fn log_allowed(&mut self, kind: LogKind) -> bool {
        let l = self
            .log_limits
            .entry(kind)
            .or_insert_with(|| RateLimiter::new(LOG_LINES_PER_S));
        match l.check(std::time::Instant::now()) {
            Verdict::Suppress => false,
            Verdict::Log { suppressed } => {
                if suppressed > 0 {
                    self.log_suppressed(kind, suppressed);
                }
                true
            }
        }
    }

    fn log_suppressed(&self, kind: LogKind, n: u64) {
        log!(
            WARN,
            "clusterd::node",
            self.cfg.node,
            "suppressed {n} lines of kind {kind:?} (more than {LOG_LINES_PER_S} a second)"
        );
    }

    /// Once a second: the suppressed lines of a second that is over, peers that came back,
    /// frames refused for their authentication (a peer with the wrong key, or forged frames).
    fn log_once_a_second(&mut self) {
        let now = std::time::Instant::now();
        let flushed: Vec<(LogKind, u64)> = self
            .log_limits
            .iter_mut()
            .map(|(k, l)| (*k, l.flush(now)))
            .filter(|(_, n)| *n > 0)
            .collect();
        for (k, n) in flushed {
            self.log_suppressed(k, n);
        }
        let alive: Vec<(NodeId, bool)> = self.member.peers().map(|(id, l)| (id, l.alive)).collect();
        for (id, up) in alive {
            let was = self.peers_alive.insert(id, up);
            if up && was != Some(true) {
                let again = if was.is_some() { " again" } else { "" };
                log!(
                    INFO,
                    "clusterd::node",
                    self.cfg.node,
                    "peer {} alive{again}",
                    id.0
                );
            }
        }
        let st = self.ep.stats();
        let refused = st.rejected_auth + st.rejected_signature;
        if refused > self.auth_refused_seen {
            log!(
                WARN,
                "clusterd::sync",
                self.cfg.node,
                "{} frames refused for their authentication (in all: {} failed decryption, {} \
                 bad signatures): a node with another cluster key or identity, or forged frames; \
                 check that every node's key_file holds the same key and each [[peer]] key is \
                 that node's public key",
                refused - self.auth_refused_seen,
                st.rejected_auth,
                st.rejected_signature
            );
            self.auth_refused_seen = refused;
        }
    }

    /// A card that failed (gone from the bus, a command error) is reopened and rebuilt from the
    /// common table; while it cannot be reopened, the failure is logged once a second and the
    /// node keeps its common table (and replicates) without a card.
    fn check_card(&mut self) {
        let Some(e) = self.member.take_card_error() else {
            return;
        };
        self.card_errors += 1;
        let now = self.udp.now();
        if now < self.next_card_retry {
            return;
        }
        self.next_card_retry = now + Duration::from_secs(1);
        let mut cause = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            cause.push_str(": ");
            cause.push_str(&s.to_string());
            src = s.source();
        }
        log!(
            ERROR,
            "clusterd::card",
            self.cfg.node,
            "card failed: {cause}; reopening it"
        );
        match card::open(&self.cfg.card, self.cfg.identifiers, self.cfg.card_capacity) {
            Ok(table) => {
                let t = self.time();
                self.member.rebuild_card(t, table);
                self.handle_outputs();
            }
            Err(e) => log!(
                ERROR,
                "clusterd::card",
                self.cfg.node,
                "card {}: cannot reopen: {e}",
                self.cfg.card
            ),
        }
    }

    fn pump_raft(&mut self) {
        let was_leader = self.raft.leader();
        if self.raft.poll().is_err() {
            self.raft_errors += 1;
        }
        if self.raft.leader() != was_leader {
            log!(
                INFO,
                "clusterd::raft",
                self.cfg.node,
                "leader is now {:?} (term {})",
                self.raft.leader().map(|n| n.0),
                self.raft.term()
            );
        }
        for (to, bytes) in self.raft.take_messages() {
            let mut d = Vec::with_capacity(bytes.len() + 1);
            Datagram::Raft(&bytes).emit(&mut d);
            let _ = self.ep.send_datagram(to, &d);
        }
        let committed = self.raft.take_committed();
        if committed.is_empty() {
            return;
        }
        // followers learn the commit from these messages: send them before a long install
        self.member.send_heartbeats();
        self.handle_outputs();
        self.udp.send_all(&mut self.ep);
        for a in committed {
            let t0 = std::time::Instant::now();
            let t = self.time();
            let before = self.views_before_epoch();
            self.member.on_agreed(t, &a, || t0.elapsed());
            self.handle_outputs();
            self.views_after_epoch(before);
        }
    }
}

/// `clusterd run`: loads the config, starts the runtime, runs until stopped.
///
/// # Errors
/// A message for the operator.
pub async fn run_node(config: &Path) -> Result<(), String> {
    let cfg = Config::load(config).map_err(|e| format!("{}: {e}", config.display()))?;
    crate::daemon::logging::init(cfg.log_level.as_deref(), cfg.log_format)?;
    let rt = Runtime::start(cfg).await.map_err(|e| e.to_string())?;
    rt.run().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn member_lines_get_their_levels_and_targets() {
        let class = |l: &str| {
            let (level, target, kind) = member_line_class(l);
            (level, target, kind.is_some())
        };
        // the lines of each level, target and kind
        let classes = [
            (
                (Level::WARN, "node", false),
                &[
                    "peer 3 failed (silent for 200 ms)",
                    "fenced: true",
                    "identifier 7: node 2 failed before its final state arrived; taking over",
                ][..],
            ),
            (
                (Level::INFO, "node", false),
                &[
                    "fenced: false",
                    "applied epoch 4: owns 85, gained 3, lost 0, installed 0 in 10 us",
                ],
            ),
            (
                (Level::WARN, "esp", true),
                &["SA 0x00000010: key record refused: bad length"],
            ),
            (
                (Level::WARN, "esp", false),
                &["SA 0x00000010: cannot install: full"],
            ),
            (
                (Level::WARN, "sync", false),
                &["resync answer to node 2 dropped: it went silent"],
            ),
            (
                (Level::INFO, "sync", false),
                &["resync complete: 10 entries in 3 ms"],
            ),
            (
                (Level::INFO, "card", false),
                &["card rebuilt from the common table: 5 entries installed"],
            ),
            ((Level::INFO, "raft", false), &["leader proposes epoch 7"]),
        ];
        for (want, lines) in classes {
            for line in lines {
                assert_eq!(class(line), want, "{line}");
            }
        }
        // every target and level goes out without a subscriber
        for t in ["node", "sync", "raft", "card", "esp", "other"] {
            for l in [
                Level::ERROR,
                Level::WARN,
                Level::INFO,
                Level::DEBUG,
                Level::TRACE,
            ] {
                event_at(l, t, NodeId(1), "a line");
            }
        }
    }
}
