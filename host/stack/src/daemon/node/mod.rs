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

mod lifecycle;
mod log_lines;
mod state_dir;
mod upkeep;

use lifecycle::next_signal;
pub use lifecycle::LEAVE_TIMEOUT;
use log_lines::{event_at, member_line_class, LogKind};
use state_dir::{lock_state_dir, next_incarnations};

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
            balance: cfg.balance,
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
                Output::Datagram { to, bytes } => {
                    let _ = self.ep.send_datagram(to, &bytes);
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
