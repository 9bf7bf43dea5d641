//! One node's runtime (`clusterd run`): the state core with its card table, the replication
//! endpoint on UDP, Raft on the allocation map, the leader's allocation / load balancing /
//! monitoring duties (means 802, 804, 806), heartbeats and failure detection, bulk resync on
//! join, anti-entropy, failover with ESP sequence jumps, the wire's packet port and the control
//! socket. One task owns all state; sockets and timers feed it through `tokio::select!`.
//!
//! Records on the replication transport start with a tag byte: `E` a state-core message (its
//! compact codec), `Q` resync request, `D` resync done, `K` SA key material (only ever inside
//! sealed frames), `F` final SA states through an epoch (see [`Runtime`]'s `final_through`).
//! Datagrams: `H` heartbeat, `R` a Raft message.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

mod commands;

use crate::core::alloc_policy::{self, Allocation};
use crate::core::distribution::ClusterSecret;
use crate::core::events::{Event, Message, SaState};
use crate::core::ids::{DistributionId, Epoch, Millis, NodeId};
use crate::core::node::{Destination, DropReason, Node, NodeConfig, Verdict};
use crate::core::node_table::NodeSpecificTable;
use crate::core::rules::RuleSet;
use crate::daemon::card::{self, CardTable};
use crate::daemon::config::{Config, Role};
use crate::daemon::consensus::{Consensus, TICK_MS};
use crate::daemon::control::{self, ControlRequest};
use crate::daemon::wireproto::{self, Code};
use crate::sync::{ClusterKey, Endpoint, EndpointConfig, SyncEvent, UdpDriver};

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
    /// The incarnation file could not be kept.
    #[error("state directory {path}: {err}")]
    State {
        /// The path.
        path: String,
        /// The error.
        err: std::io::Error,
    },
}

/// One log line on stderr: wall-clock milliseconds, node, message.
macro_rules! log {
    ($node:expr, $($arg:tt)*) => {
        eprintln!("{} node{} {}", unix_ms(), $node.0, format_args!($($arg)*))
    };
}

/// Wall-clock milliseconds since the Unix epoch (for reports that compare processes).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Clone, Copy, Debug, Default)]
struct Liveness {
    last_heard: Option<Duration>,
    ready: bool,
    witness: bool,
    fenced: bool,
    applied: Epoch,
    alive: bool,
}

/// A resync in progress (see `resync_run`).
struct ResyncRun {
    started: std::time::Instant,
    before: usize,
    answered: Option<(std::time::Instant, usize)>,
}

/// One applied allocation, as the demo and tests see it.
#[derive(Clone, Debug, serde::Serialize)]
struct Applied {
    epoch: u64,
    at_unix_ms: u64,
    gained: usize,
    lost: usize,
    installed: usize,
    install_failures: usize,
    flushed: usize,
    took_us: u64,
    owned: usize,
    /// Applied while this node was taking traffic (false: replaying its log after a restart,
    /// or still syncing).
    ready: bool,
    /// When every gained identifier took traffic: after the previous owners' final state
    /// arrived (see `Runtime::waiting`); `at_unix_ms` when nothing had to wait.
    complete_unix_ms: u64,
}

/// A `synthesize` command in progress (worked on in slices so heartbeats keep flowing).
struct SynthJob {
    next: u32,
    end: u32,
    created: u64,
    started: std::time::Instant,
    reply: tokio::sync::oneshot::Sender<Value>,
}

enum OpRequest {
    Move(Vec<DistributionId>, NodeId),
    Rebalance,
}

/// The runtime of one node.
pub struct Runtime {
    cfg: Config,
    core: Node<CardTable>,
    core_incarnation: u32,
    ep: Endpoint,
    udp: UdpDriver,
    wire: Option<UdpSocket>,
    ctl_rx: mpsc::Receiver<ControlRequest>,
    raft: Consensus,
    live: BTreeMap<NodeId, Liveness>,
    members: BTreeSet<NodeId>,
    ready: bool,
    fenced: bool,
    /// A live peer has applied a newer epoch than this node: do not handle traffic until
    /// caught up (after a partition heals, or while an epoch change is being applied).
    behind: bool,
    resync_waiting: BTreeSet<NodeId>,
    /// The resync under way: when the first request went out, the common table's size then, and
    /// when the last answer so far completed it (with the size then).
    resync_run: Option<ResyncRun>,
    /// The last completed resync: entries it added and how long it took (status `last_resync`).
    last_resync: Option<(usize, Duration)>,
    drained: BTreeSet<NodeId>,
    planned: Option<Allocation>,
    /// The live owners the pending release (`planned`) takes identifiers from.
    releasers: BTreeSet<NodeId>,
    phase1_at: Duration,
    proposal_at: Duration,
    ops: VecDeque<OpRequest>,
    next_tick: Duration,
    next_heartbeat: Duration,
    next_housekeeping: Duration,
    applied: Vec<Applied>,
    sa_keys: BTreeMap<u32, Zeroizing<Vec<u8>>>,
    sa_spis: BTreeSet<u32>,
    sa_jumps: u64,
    verdicts: BTreeMap<Code, u64>,
    records_dropped: u64,
    decode_errors: u64,
    apply_errors: u64,
    started_unix_ms: u64,
    stopping: bool,
    synth: Option<SynthJob>,
    last_liveness_check: Duration,
    /// Exit when the parent process goes away (set for nodes a demo or test spawned).
    parent: Option<nix::unistd::Pid>,
    esp: crate::daemon::esp::EspPath,
    next_esp_sync: Duration,
    /// Per identifier: the last node that lost it and the epoch in which it did.
    lost_at: BTreeMap<DistributionId, (NodeId, Epoch)>,
    /// Per peer: the highest epoch of its `F` records. A node sends `F` + epoch E on its
    /// replication stream after applying E (and after a resync answer, with its applied
    /// epoch); the stream is in order, so everything it had to say about SAs it no longer owned
    /// as of E (their final state, synced from its ESP engine when it lost them) came before.
    final_through: BTreeMap<NodeId, Epoch>,
    /// Gained identifiers that wait for everything the previous owner replicated before it
    /// lost them (its `F` through the epoch it lost them in), or for it to be declared failed:
    /// entries it created just before (invariant 4) and its SAs' final state (invariant 5).
    /// Until then their packets are answered "not ready" and their SAs are neither taken over
    /// (sequence jump) nor run in the ESP engine. Value: previous owner, the epoch it lost the
    /// identifier in, the epoch this node gained it in.
    waiting: BTreeMap<DistributionId, (NodeId, Epoch, Epoch)>,
}

fn state_err(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |err| RunError::State {
        path: path.display().to_string(),
        err,
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

impl Runtime {
    /// Opens everything a node needs: consensus state, card, sockets.
    ///
    /// # Errors
    /// [`RunError`] naming what failed.
    pub async fn start(cfg: Config) -> Result<Self, RunError> {
        let (t_inc, c_inc) = next_incarnations(&cfg.state_dir)?;
        let table = card::open(&cfg.card, cfg.identifiers, cfg.card_capacity)
            .map_err(|e| RunError::Card(e.to_string()))?;
        let secret = ClusterSecret::new(*cfg.key.derive16(b"distribution identifiers"));
        let mut ncfg = NodeConfig::new(cfg.node, secret);
        ncfg.incarnation = c_inc;
        ncfg.count = cfg.identifiers;
        if let Some(path) = &cfg.rules {
            let text = std::fs::read_to_string(path)
                .map_err(|e| RunError::Rules(format!("{}: {e}", path.display())))?;
            ncfg.rules = RuleSet::parse(&text).map_err(|e| RunError::Rules(e.to_string()))?;
        }
        let mut core = Node::new(ncfg, table);
        // until its common table is synced the node installs nothing in its card (its own log
        // may still give it identifiers it lost while it was down)
        core.set_standby(Millis(0), true);
        let peers: Vec<NodeId> = cfg.peers.iter().map(|p| p.id).collect();
        let mut ecfg = EndpointConfig::new(cfg.node, t_inc);
        ecfg.flush_interval = Duration::from_millis(cfg.flush_ms);
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
        let (tx, ctl_rx) = mpsc::channel(64);
        control::serve(&cfg.control, tx).map_err(|err| RunError::Bind {
            what: "control socket",
            addr: cfg.control.display().to_string(),
            err,
        })?;
        let raft = Consensus::open(
            cfg.node,
            &cfg.voters(),
            &cfg.learners(),
            cfg.identifiers,
            cfg.state_dir.clone(),
        )?;
        let live = cfg
            .peers
            .iter()
            .map(|p| {
                (
                    p.id,
                    Liveness {
                        witness: p.role == Role::Witness,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let members = cfg.traffic_members().into_iter().collect();
        Ok(Self {
            core,
            core_incarnation: c_inc,
            ep,
            udp,
            wire,
            ctl_rx,
            raft,
            live,
            members,
            ready: cfg.role == Role::Witness,
            fenced: false,
            behind: false,
            resync_waiting: BTreeSet::new(),
            resync_run: None,
            last_resync: None,
            drained: BTreeSet::new(),
            planned: None,
            releasers: BTreeSet::new(),
            phase1_at: Duration::ZERO,
            proposal_at: Duration::ZERO,
            ops: VecDeque::new(),
            next_tick: Duration::ZERO,
            next_heartbeat: Duration::ZERO,
            next_housekeeping: Duration::from_secs(1),
            applied: Vec::new(),
            sa_keys: BTreeMap::new(),
            sa_spis: BTreeSet::new(),
            sa_jumps: 0,
            verdicts: BTreeMap::new(),
            records_dropped: 0,
            decode_errors: 0,
            apply_errors: 0,
            started_unix_ms: unix_ms(),
            stopping: false,
            synth: None,
            last_liveness_check: Duration::ZERO,
            parent: std::env::var_os("CLUSTERD_EXIT_WITH_PARENT").map(|_| nix::unistd::getppid()),
            esp: crate::daemon::esp::EspPath::new(),
            next_esp_sync: Duration::ZERO,
            lost_at: BTreeMap::new(),
            final_through: BTreeMap::new(),
            waiting: BTreeMap::new(),
            cfg,
        })
    }

    /// Runs until a `stop` control command.
    pub async fn run(mut self) {
        let mut sbuf = vec![0u8; 65_536];
        let mut wbuf = vec![0u8; 65_536];
        while !self.stopping {
            let deadline = self.udp.instant(self.next_deadline());
            tokio::select! {
                r = self.udp.recv(&mut sbuf) => {
                    if let Ok(n) = r {
                        self.on_sync_datagram(&sbuf[..n]);
                        self.drain_sync(&mut sbuf);
                    }
                }
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
                    if req.get("cmd").and_then(Value::as_str) == Some("synthesize") {
                        self.start_synthesize(&req, tx);
                    } else {
                        let answer = self.control(&req);
                        let _ = tx.send(answer);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
            // acks (and records) already waiting go in before the timers run: after a long
            // handler (a resync answer, a card install) a retransmission timer must not fire
            // for frames the peer has long acknowledged
            self.drain_sync(&mut sbuf);
            self.synthesize_slice();
            self.after_io();
        }
        let _ = std::fs::remove_file(&self.cfg.control);
    }

    fn now(&self) -> Duration {
        self.udp.now()
    }

    fn millis(&self) -> Millis {
        Millis(self.now().as_millis() as u64)
    }

    fn next_deadline(&self) -> Duration {
        let mut d = self
            .next_tick
            .min(self.next_heartbeat)
            .min(self.next_housekeeping);
        if let Some(t) = self.ep.poll_timeout() {
            d = d.min(t);
        }
        if self.synth.is_some() {
            d = d.min(self.now());
        }
        d
    }

    fn failure(&self) -> Duration {
        Duration::from_millis(self.cfg.failure_ms)
    }

    fn warmed_up(&self, now: Duration) -> bool {
        now >= self.failure() + Duration::from_millis(self.cfg.heartbeat_ms)
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

    fn heard(&mut self, from: NodeId) {
        let now = self.now();
        if let Some(l) = self.live.get_mut(&from) {
            l.last_heard = Some(now);
        }
    }

    fn process_sync_events(&mut self) {
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                SyncEvent::Records { from, batch } => {
                    self.heard(from);
                    for rec in batch.iter() {
                        self.on_record(from, rec);
                    }
                }
                SyncEvent::Datagram { from, payload } => {
                    self.heard(from);
                    self.on_datagram(from, &payload);
                }
                SyncEvent::PeerIncarnation { peer, .. } => {
                    // a new process: what the old one said (ready, applied epoch) is void until
                    // its own heartbeats say otherwise
                    if let Some(l) = self.live.get_mut(&peer) {
                        l.ready = false;
                        l.fenced = false;
                        l.applied = Epoch(0);
                    }
                    self.heard(peer);
                    if !self.ready && self.members.contains(&peer) {
                        self.request_resync(peer);
                    }
                }
            }
        }
    }

    fn on_record(&mut self, from: NodeId, rec: &[u8]) {
        let now = self.millis();
        match rec.first() {
            Some(b'E') => match Message::decode(&rec[1..]) {
                Ok(mut m) if m.sender == from => {
                    if let Event::SaState(s) = &mut m.event {
                        self.sa_spis.insert(s.spi);
                        // SA state only moves forward, in both directions: a state with the
                        // same outbound sequence number but an older replay window (a copy
                        // from a node that is not the owner) must not roll the window back
                        if let Some(cur) = self.core.sa_state(s.spi) {
                            *s = crate::daemon::esp::newer(&cur, s).unwrap_or(cur);
                        }
                    }
                    if self.core.apply_message(now, &m).is_err() {
                        self.apply_errors += 1;
                    }
                    if let Event::SaState(s) = &m.event {
                        // a new SA's state may come after its key (`K`): run it now if it is ours
                        if !self.esp.has(s.spi) && self.core.owns(s.dist) {
                            self.reconcile_esp();
                        }
                    }
                }
                _ => self.decode_errors += 1,
            },
            Some(b'F') => match rec.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(b) if rec.len() == 9 => {
                    let e = Epoch(u64::from_be_bytes(b));
                    let f = self.final_through.entry(from).or_insert(e);
                    *f = (*f).max(e);
                    self.resolve_waiting();
                }
                _ => self.decode_errors += 1,
            },
            Some(b'Q') => self.answer_resync(from),
            Some(b'D') => self.resync_answered(from),
            Some(b'K') => {
                if rec.len() >= 6 && rec.len() == 6 + usize::from(rec[5]) {
                    let spi = u32::from_be_bytes([rec[1], rec[2], rec[3], rec[4]]);
                    self.sa_keys.insert(spi, Zeroizing::new(rec[6..].to_vec()));
                    self.sa_spis.insert(spi);
                    self.reconcile_esp();
                } else {
                    self.decode_errors += 1;
                }
            }
            _ => self.decode_errors += 1,
        }
    }

    fn on_datagram(&mut self, from: NodeId, d: &[u8]) {
        match d.first() {
            Some(b'H') if d.len() == 13 => {
                let applied = Epoch(u64::from_be_bytes(d[4..12].try_into().unwrap_or([0; 8])));
                if let Some(l) = self.live.get_mut(&from) {
                    l.ready = d[1] != 0;
                    l.witness = d[2] != 0;
                    l.fenced = d[3] != 0;
                    l.applied = applied;
                }
            }
            Some(b'R') => {
                let _ = self.raft.step(from, &d[1..]);
            }
            _ => self.decode_errors += 1,
        }
    }

    fn on_wire(&mut self, d: &[u8], from: SocketAddr) {
        let Some((seq, pkt)) = wireproto::parse_packet(d) else {
            return;
        };
        let code = if !self.ready
            || self.fenced
            || self.behind
            || self.cfg.role == Role::Witness
            || self.waiting_for(pkt)
        {
            Code::NotReady
        } else {
            let now = self.millis();
            match self.core.handle_packet(now, pkt) {
                Verdict::Accept { created: true, .. } => Code::Created,
                Verdict::Accept { created: false, .. } => Code::Hit,
                Verdict::NotOurs { .. } => Code::NotOurs,
                Verdict::Drop(DropReason::TcpNoState) => Code::TcpNoState,
                Verdict::Drop(DropReason::NoState) => Code::NoState,
                Verdict::Drop(_) => Code::Dropped,
            }
        };
        *self.verdicts.entry(code).or_insert(0) += 1;
        if let Some(w) = &self.wire {
            let _ = w.try_send_to(&wireproto::encode_verdict(seq, self.cfg.node, code), from);
        }
        self.flush_outbox();
    }

    /// Whether `pkt` belongs to a gained identifier that still waits for its previous owner's
    /// final state.
    fn waiting_for(&self, pkt: &[u8]) -> bool {
        if self.waiting.is_empty() {
            return false;
        }
        let framing = self.core.config().framing;
        crate::core::packet::parse_packet(pkt, framing)
            .ok()
            .and_then(|p| p.flow(self.core.distributor()))
            .is_some_and(|(_, _, d)| self.waiting.contains_key(&d))
    }

    // ----- outputs -----

    fn send_record(&mut self, to: NodeId, rec: &[u8]) {
        let now = self.now();
        if self.ep.send_record(now, to, rec).is_err() {
            self.records_dropped += 1;
        }
    }

    fn replication_peers(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .copied()
            .filter(|p| *p != self.cfg.node)
            .collect()
    }

    fn flush_outbox(&mut self) {
        let out = self.core.drain_outbox();
        if out.is_empty() {
            return;
        }
        let peers = self.replication_peers();
        let mut rec = Vec::with_capacity(64);
        for o in out {
            rec.clear();
            rec.push(b'E');
            o.message.encode_into(&mut rec);
            match o.dest {
                Destination::All => {
                    for &p in &peers {
                        self.send_record(p, &rec);
                    }
                }
                Destination::Node(n) => self.send_record(n, &rec),
            }
        }
    }

    fn send_heartbeats(&mut self) {
        let mut hb = [0u8; 13];
        hb[0] = b'H';
        hb[1] = u8::from(self.ready);
        hb[2] = u8::from(self.cfg.role == Role::Witness);
        hb[3] = u8::from(self.fenced);
        hb[4..12].copy_from_slice(&self.core.allocation().epoch.0.to_be_bytes());
        let peers: Vec<NodeId> = self.live.keys().copied().collect();
        for p in peers {
            let _ = self.ep.send_datagram(p, &hb);
        }
    }

    /// Asks `peer` for everything it owns (`Q`); its `D` ends the answer.
    fn request_resync(&mut self, peer: NodeId) {
        if self.resync_run.is_none() {
            self.resync_run = Some(ResyncRun {
                started: std::time::Instant::now(),
                before: self.core.common().len(),
                answered: None,
            });
        }
        self.resync_waiting.insert(peer);
        self.send_record(peer, b"Q");
    }

    /// `peer` finished its answer (or died). With nobody left to answer, the resync is complete
    /// for a ready node; a node still starting may yet ask peers whose hellos come later, so its
    /// resync ends when it becomes ready (`check_ready`), at the last answer's time.
    fn resync_answered(&mut self, peer: NodeId) {
        // a peer that was not asked (a death, a late `D`) changes nothing
        if self.resync_waiting.remove(&peer) && self.resync_waiting.is_empty() {
            let len = self.core.common().len();
            if let Some(run) = &mut self.resync_run {
                run.answered = Some((std::time::Instant::now(), len));
            }
            if self.ready {
                self.close_resync();
            }
        }
    }

    fn close_resync(&mut self) {
        let Some(run) = self.resync_run.take() else {
            return;
        };
        if let Some((at, len)) = run.answered {
            let added = len.saturating_sub(run.before);
            let took = at.saturating_duration_since(run.started);
            self.last_resync = Some((added, took));
            log!(
                self.cfg.node,
                "resync complete: {added} entries in {} ms",
                took.as_millis()
            );
        }
    }

    fn answer_resync(&mut self, to: NodeId) {
        let mut rec = Vec::with_capacity(64);
        let ids: Vec<DistributionId> = self
            .cfg
            .identifiers
            .all()
            .filter(|d| self.core.owns(*d))
            .collect();
        let inc = self.core_incarnation;
        let me = self.cfg.node;
        let mut msgs = Vec::new();
        for d in ids {
            for e in self.core.select(d) {
                msgs.push(Message {
                    sender: me,
                    incarnation: inc,
                    seq: 0,
                    event: Event::Add(e.clone()),
                });
            }
        }
        // every SA this node knows, owned or not: the state it holds of an SA it released
        // is that SA's final state (states are merged forward on receipt, so a copy that is
        // not newer changes nothing)
        self.sync_esp();
        for spi in self.sa_spis.clone() {
            if let Some(s) = self.core.sa_state(spi) {
                msgs.push(Message {
                    sender: me,
                    incarnation: inc,
                    seq: 0,
                    event: Event::SaState(s),
                });
                if let Some(k) = self.sa_keys.get(&spi) {
                    let k = k.clone();
                    self.send_record(to, &key_record(spi, &k));
                }
            }
        }
        for m in msgs {
            rec.clear();
            rec.push(b'E');
            m.encode_into(&mut rec);
            self.send_record(to, &rec);
        }
        self.flush_outbox();
        let applied = self.core.allocation().epoch;
        self.send_record(to, &final_record(applied));
        self.send_record(to, b"D");
    }

    /// Resolves gained identifiers waiting for the previous owner's final state: the owner's
    /// `F` covers the epoch it lost them in, or the owner is no longer alive (then what it
    /// replicated is all there is: state inside its replication window before the crash or
    /// partition is lost, and the report counts what is lost because of it). They take traffic
    /// from now on; their SAs are taken over (outbound sequence jump) and run in the ESP engine.
    fn resolve_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let ready: Vec<DistributionId> = self
            .waiting
            .iter()
            .filter(|(_, (r, e, _))| {
                self.final_through.get(r).is_some_and(|f| f >= e) || !self.is_alive(*r)
            })
            .map(|(d, _)| *d)
            .collect();
        if ready.is_empty() {
            return;
        }
        let mut epochs = BTreeSet::new();
        for d in &ready {
            if let Some((r, e, gained_in)) = self.waiting.remove(d) {
                epochs.insert(gained_in);
                let final_state = self.final_through.get(&r).is_some_and(|f| *f >= e);
                if !final_state {
                    log!(
                        self.cfg.node,
                        "identifier {}: node {} failed before its final state arrived; taking over from what it replicated",
                        d.0,
                        r.0
                    );
                }
            }
        }
        let now = unix_ms();
        for e in epochs {
            if self.waiting.values().all(|w| w.2 != e) {
                if let Some(a) = self.applied.iter_mut().rev().find(|a| a.epoch == e.0) {
                    a.complete_unix_ms = now;
                }
            }
        }
        let ready: BTreeSet<DistributionId> = ready.into_iter().collect();
        self.take_over_sas(&ready);
        self.reconcile_esp();
        self.flush_outbox();
    }

    /// Takeover of the SAs of `ids` (invariant 5): the outbound sequence number continues past
    /// the last replicated value plus `seq_jump`; the replay window is the replicated one.
    fn take_over_sas(&mut self, ids: &BTreeSet<DistributionId>) {
        for spi in self.sa_spis.clone() {
            if let Some(s) = self.core.sa_state(spi) {
                if ids.contains(&s.dist)
                    && self.core.owns(s.dist)
                    && self.core.take_over_sa(spi, self.cfg.seq_jump).is_some()
                {
                    self.sa_jumps += 1;
                }
            }
        }
    }

    // ----- periodic work -----

    fn after_io(&mut self) {
        let now = self.now();
        self.ep.handle_timeout(now);
        self.process_sync_events();
        let tick = Duration::from_millis(TICK_MS);
        let mut ticked = false;
        while now >= self.next_tick {
            self.raft.tick();
            self.next_tick += tick;
            ticked = true;
        }
        if now >= self.next_heartbeat {
            self.send_heartbeats();
            self.next_heartbeat = now + Duration::from_millis(self.cfg.heartbeat_ms);
        }
        self.update_liveness(now);
        self.pump_raft();
        if ticked && self.raft.is_leader() {
            self.leader_duties(now);
            self.pump_raft();
        }
        self.check_ready(now);
        if now >= self.next_housekeeping {
            let m = self.millis();
            self.core.expire(m);
            if self.ready && !self.fenced {
                self.core.queue_digest();
            }
            self.next_housekeeping = now + Duration::from_secs(1);
            if self.parent.is_some_and(|p| p != nix::unistd::getppid()) {
                log!(self.cfg.node, "parent process gone: stopping");
                self.stopping = true;
            }
        }
        if now >= self.next_esp_sync {
            self.sync_esp();
            self.next_esp_sync = now + Duration::from_millis(100);
        }
        self.flush_outbox();
        self.udp.send_all(&mut self.ep);
    }

    /// Installs the SAs of owned identifiers into the ESP engine (restored from the replicated
    /// state) and removes the others (after a last sync of their state).
    fn reconcile_esp(&mut self) {
        for spi in self.sa_spis.clone() {
            let Some(s) = self.core.sa_state(spi) else {
                continue;
            };
            let owned = self.core.owns(s.dist)
                && self.cfg.role == Role::Member
                && !self.waiting.contains_key(&s.dist);
            if owned && !self.esp.has(spi) {
                if let Some(k) = self.sa_keys.get(&spi) {
                    if let Err(e) = self.esp.install(spi, k, &s) {
                        log!(self.cfg.node, "SA 0x{spi:08x}: cannot install: {e}");
                    }
                }
            } else if !owned && self.esp.has(spi) {
                if let Some(newer) = self
                    .esp
                    .state(spi, &s)
                    .and_then(|e| crate::daemon::esp::newer(&s, &e))
                {
                    self.core.update_sa(newer);
                }
                self.esp.remove(spi);
            }
        }
    }

    /// Copies the moving state of every SA the engine runs into the core (which replicates it).
    fn sync_esp(&mut self) {
        let spis: Vec<u32> = self.esp.installed().collect();
        for spi in spis {
            let Some(s) = self.core.sa_state(spi) else {
                continue;
            };
            if let Some(newer) = self
                .esp
                .state(spi, &s)
                .and_then(|e| crate::daemon::esp::newer(&s, &e))
            {
                self.core.update_sa(newer);
            }
        }
    }

    fn update_liveness(&mut self, now: Duration) {
        // this loop itself was stalled (a large install, a descheduled process): the time it
        // was not listening does not count as the peers' silence
        let stall = now.saturating_sub(self.last_liveness_check);
        self.last_liveness_check = now;
        if stall > Duration::from_millis(30) {
            let credit = stall - Duration::from_millis(10);
            for l in self.live.values_mut() {
                if let Some(t) = l.last_heard.as_mut() {
                    *t = (*t + credit).min(now);
                }
            }
        }
        let failure = self.failure();
        let mut died = Vec::new();
        for (id, l) in self.live.iter_mut() {
            let alive = l
                .last_heard
                .is_some_and(|t| now.saturating_sub(t) <= failure);
            if l.alive && !alive {
                died.push(*id);
            }
            l.alive = alive;
        }
        let mine = self.core.allocation().epoch;
        self.behind = self.live.values().any(|l| l.alive && l.applied > mine);
        let any_died = !died.is_empty();
        for p in died {
            log!(
                self.cfg.node,
                "peer {} failed (silent for {} ms)",
                p.0,
                self.cfg.failure_ms
            );
            self.resync_answered(p);
        }
        if any_died {
            self.resolve_waiting();
        }
        // a peer silent for long: drop what waits for it (a false suspicion under load must not
        // lose records, so this waits far longer than failure detection)
        let long = Duration::from_secs(10);
        let stale: Vec<NodeId> = self
            .live
            .iter()
            .filter(|(_, l)| l.last_heard.is_some_and(|t| now.saturating_sub(t) > long))
            .map(|(id, _)| *id)
            .filter(|id| self.ep.backlog(*id) > 0)
            .collect();
        for p in stale {
            self.ep.discard_backlog(p);
        }
        // self-fencing: without contact to a majority of voters for 3/4 of the failure
        // threshold, stop handling traffic (the majority side will take our identifiers)
        let fence_after = failure * 3 / 4;
        // the agreed voters: the configured ones plus every promoted learner
        let voters = self.raft.voters();
        if voters.len() > 1 {
            let seen = voters
                .iter()
                .filter(|v| {
                    **v == self.cfg.node
                        || self.live.get(v).is_some_and(|l| {
                            l.last_heard
                                .is_some_and(|t| now.saturating_sub(t) <= fence_after)
                        })
                })
                .count();
            let was = self.fenced;
            self.fenced = self.warmed_up(now) && seen * 2 <= voters.len();
            if was != self.fenced {
                log!(self.cfg.node, "fenced: {}", self.fenced);
                if was && self.cfg.role == Role::Member && self.ready {
                    // back in contact: what the others replicated meanwhile may still be on its
                    // way; resync (each peer's `D` comes after everything it sent before) and
                    // take no identifiers until then
                    self.ready = false;
                    self.resync_waiting.clear();
                    for p in self.replication_peers() {
                        if self.live.get(&p).is_some_and(|l| l.alive) {
                            self.request_resync(p);
                        }
                    }
                    log!(self.cfg.node, "resyncing after the partition");
                }
                self.send_heartbeats();
            }
        }
    }

    fn check_ready(&mut self, now: Duration) {
        if self.ready || !self.warmed_up(now) {
            return;
        }
        let waiting_alive = self
            .resync_waiting
            .iter()
            .any(|p| self.live.get(p).is_some_and(|l| l.alive));
        if !waiting_alive {
            log!(self.cfg.node, "ready (common table synced)");
            self.ready = true;
            self.close_resync();
            let m = self.millis();
            let installed = self.core.set_standby(m, false);
            if installed > 0 {
                log!(
                    self.cfg.node,
                    "installed {installed} entries of the identifiers it owns"
                );
            }
            self.send_heartbeats();
        }
    }

    fn pump_raft(&mut self) {
        let was_leader = self.raft.leader();
        if self.raft.poll().is_err() {
            self.apply_errors += 1;
        }
        if self.raft.leader() != was_leader {
            log!(
                self.cfg.node,
                "leader is now {:?} (term {})",
                self.raft.leader().map(|n| n.0),
                self.raft.term()
            );
        }
        for (to, bytes) in self.raft.take_messages() {
            let mut d = Vec::with_capacity(bytes.len() + 1);
            d.push(b'R');
            d.extend_from_slice(&bytes);
            let _ = self.ep.send_datagram(to, &d);
        }
        let committed = self.raft.take_committed();
        if !committed.is_empty() {
            // followers learn the commit from these messages: send them before a long install
            self.send_heartbeats();
            self.udp.send_all(&mut self.ep);
        }
        for a in committed {
            self.apply_allocation(&a);
        }
    }

    fn apply_allocation(&mut self, a: &Allocation) {
        let t0 = std::time::Instant::now();
        let m = self.millis();
        let before = self.core.allocation().clone();
        let Ok(report) = self.core.apply_allocation(m, a) else {
            self.apply_errors += 1;
            return;
        };
        for d in self.cfg.identifiers.all() {
            if let Some(o) = before.owner(d) {
                if a.owner(d) != Some(o) {
                    self.lost_at.insert(d, (o, a.epoch));
                }
            }
        }
        let me = self.cfg.node;
        self.waiting.retain(|d, _| a.owner(*d) == Some(me));
        // ESP takeover (invariant 5): outbound sequence numbers continue past the last synced
        // value plus a safety jump; the replay window is the last synced one. The previous
        // owner synced its SAs' final state when it lost them (possibly in the epoch before,
        // a release), but that state travels on its replication stream, not with the agreed
        // log: while it is alive, an SA of a gained identifier waits for the previous owner's
        // `F` covering the epoch it lost the identifier in (see `resolve_waiting`).
        let gained: BTreeSet<DistributionId> = report.plan.gained.iter().copied().collect();
        let mut now_gained = BTreeSet::new();
        if a.epoch.0 > 0 {
            for d in gained {
                match self.lost_at.get(&d).copied() {
                    Some((r, e))
                        if r != me
                            && self.is_alive(r)
                            && self.final_through.get(&r).is_none_or(|f| *f < e) =>
                    {
                        self.waiting.insert(d, (r, e, a.epoch));
                    }
                    _ => {
                        now_gained.insert(d);
                    }
                }
            }
        }
        let waiting: BTreeSet<u16> = self.waiting.values().map(|w| w.0 .0).collect();
        if !waiting.is_empty() {
            log!(
                self.cfg.node,
                "epoch {}: {} gained identifiers wait for the final SA state of node(s) {waiting:?}",
                a.epoch.0,
                self.waiting.len()
            );
        }
        self.take_over_sas(&now_gained);
        self.reconcile_esp();
        let owned = a.ids_of(self.cfg.node).len();
        log!(
            self.cfg.node,
            "applied epoch {}: owns {owned}, gained {}, lost {}, installed {} in {} us",
            a.epoch.0,
            report.plan.gained.len(),
            report.plan.lost.len(),
            report.installed,
            t0.elapsed().as_micros()
        );
        self.applied.push(Applied {
            epoch: a.epoch.0,
            at_unix_ms: unix_ms(),
            gained: report.plan.gained.len(),
            lost: report.plan.lost.len(),
            installed: report.installed,
            install_failures: report.install_failures,
            flushed: report.flushed,
            took_us: t0.elapsed().as_micros() as u64,
            owned,
            ready: self.ready,
            complete_unix_ms: if self.waiting.values().any(|w| w.2 == a.epoch) {
                0
            } else {
                unix_ms()
            },
        });
        if self.applied.len() > 1000 {
            self.applied.remove(0);
        }
        self.send_heartbeats();
        self.flush_outbox();
        // after the final states of the SAs this node just lost (flushed above)
        let f = final_record(a.epoch);
        for p in self.replication_peers() {
            self.send_record(p, &f);
        }
    }

    fn is_alive(&self, n: NodeId) -> bool {
        n == self.cfg.node || self.live.get(&n).is_some_and(|l| l.alive)
    }

    /// A member that joined as a Raft learner becomes a voter once it is ready (its common table
    /// complete), one configuration change at a time, so the cluster's fault tolerance grows
    /// with it: with two learners promoted, a 3-voter cluster survives two of the original
    /// voters failing.
    fn promote_learners(&mut self) {
        if self.raft.conf_change_pending() {
            return;
        }
        let next = self
            .members
            .iter()
            .copied()
            .find(|n| *n != self.cfg.node && !self.raft.is_voter(*n) && self.is_ready(*n));
        if let Some(n) = next {
            match self.raft.promote(n) {
                Ok(()) => log!(self.cfg.node, "proposes node {} as a voter", n.0),
                Err(_) => self.apply_errors += 1,
            }
        }
    }

    fn is_ready(&self, n: NodeId) -> bool {
        if n == self.cfg.node {
            return self.ready && !self.fenced;
        }
        self.live
            .get(&n)
            .is_some_and(|l| l.alive && l.ready && !l.fenced)
    }

    fn applied_epoch(&self, n: NodeId) -> Epoch {
        if n == self.cfg.node {
            return self.core.allocation().epoch;
        }
        self.live.get(&n).map_or(Epoch(0), |l| l.applied)
    }

    /// Means 802/804/806 on the leader: monitor members, allocate, rebalance. Moves away from
    /// a live owner go in two agreed steps (release, then assign) so that no identifier is ever
    /// handled by two nodes at once; a dead owner's identifiers move in one step.
    fn leader_duties(&mut self, now: Duration) {
        if !self.warmed_up(now) {
            return;
        }
        self.promote_learners();
        if let Some(p) = self.raft.pending_epoch {
            if now.saturating_sub(self.proposal_at) < Duration::from_millis(1000)
                && self.raft.allocation().epoch < p
            {
                return;
            }
            self.raft.pending_epoch = None;
        }
        let cur = self.raft.allocation().clone();
        let candidates: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|n| self.is_ready(*n) && !self.drained.contains(n))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let weights: Vec<(NodeId, u32)> = candidates.iter().map(|n| (*n, 1)).collect();
        if let Some(plan) = self.planned.take() {
            // the release must be the agreed state: if it was not committed (lost leadership,
            // a dropped proposal), assigning now would move identifiers away from a live owner
            // in one step; plan again from what is agreed
            let unreleased = cur
                .owners
                .iter()
                .zip(&plan.owners)
                .any(|(c, p)| c != p && c.is_some_and(|o| self.is_ready(o)));
            if unreleased {
                log!(
                    self.cfg.node,
                    "release of epoch {} not agreed: planning again",
                    cur.epoch.0
                );
                return;
            }
            // phase 2: every live member has applied the release (or it took too long for a
            // member that released nothing); a live owner that released identifiers must have
            // applied it, however long that takes (make-before-break: never two owners)
            let applied = |n: &NodeId| !self.is_alive(*n) || self.applied_epoch(*n) >= cur.epoch;
            let releasers_applied = self.releasers.iter().all(applied);
            let all_applied = self.members.iter().all(applied);
            let waited = now.saturating_sub(self.phase1_at) >= Duration::from_millis(300);
            if !releasers_applied || (!all_applied && !waited) {
                self.planned = Some(plan);
                return;
            }
            let mut next = Allocation {
                epoch: Epoch(cur.epoch.0 + 1),
                owners: plan.owners,
            };
            // the plan may name a node that failed meanwhile
            if next
                .owners
                .iter()
                .flatten()
                .any(|o| !candidates.contains(o))
            {
                let base = Allocation {
                    epoch: cur.epoch,
                    owners: next
                        .owners
                        .iter()
                        .map(|o| o.filter(|n| candidates.contains(n)))
                        .collect(),
                };
                next = alloc_policy::rebalance(&base, &weights);
            }
            self.propose(now, next);
            return;
        }
        let target = match self.ops.pop_front() {
            Some(OpRequest::Move(ids, to)) => alloc_policy::operator_move(&cur, &ids, to),
            Some(OpRequest::Rebalance) => {
                let load: Vec<u64> = self
                    .cfg
                    .identifiers
                    .all()
                    .map(|d| self.core.common().dist_len(d) as u64 + 1)
                    .collect();
                let lb = alloc_policy::load_balance(&cur, &load, &weights, 5, 32);
                // also restore quotas if membership changed
                if lb.owners == cur.owners {
                    alloc_policy::rebalance(&cur, &weights)
                } else {
                    lb
                }
            }
            None => {
                let owners_ok = cur
                    .owners
                    .iter()
                    .all(|o| o.is_some_and(|n| candidates.contains(&n)));
                let everyone_has = candidates.iter().all(|c| cur.owners.contains(&Some(*c)));
                if owners_ok && everyone_has {
                    return;
                }
                if cur.epoch.0 == 0 {
                    // first allocation: wait for every configured member, or 3 failure times
                    let all_there = self.members.iter().all(|n| self.is_ready(*n));
                    if !all_there && now < self.failure() * 3 {
                        return;
                    }
                }
                alloc_policy::rebalance(&cur, &weights)
            }
        };
        if target.owners == cur.owners {
            return;
        }
        let release: Vec<usize> = (0..cur.owners.len())
            .filter(|&i| {
                cur.owners[i].is_some_and(|o| self.is_ready(o) && target.owners[i] != Some(o))
            })
            .collect();
        if release.is_empty() {
            self.propose(
                now,
                Allocation {
                    epoch: Epoch(cur.epoch.0 + 1),
                    owners: target.owners,
                },
            );
        } else {
            let mut phase1 = Allocation {
                epoch: Epoch(cur.epoch.0 + 1),
                owners: cur.owners.clone(),
            };
            self.releasers.clear();
            for i in release {
                if let Some(o) = phase1.owners[i].take() {
                    self.releasers.insert(o);
                }
            }
            self.propose(now, phase1);
            self.planned = Some(target);
            self.phase1_at = now;
        }
    }

    fn propose(&mut self, now: Duration, next: Allocation) {
        log!(self.cfg.node, "leader proposes epoch {}", next.epoch.0);
        if self.raft.propose(&next).is_ok() {
            self.proposal_at = now;
        }
    }

    // ----- control socket -----
}

/// `F` + epoch (u64, big-endian): every SA state the sender had when it had applied `epoch`
/// precedes this record on its stream.
fn final_record(epoch: Epoch) -> [u8; 9] {
    let mut r = [0u8; 9];
    r[0] = b'F';
    r[1..].copy_from_slice(&epoch.0.to_be_bytes());
    r
}

fn key_record(spi: u32, key: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut r = Zeroizing::new(Vec::with_capacity(6 + key.len()));
    r.push(b'K');
    r.extend_from_slice(&spi.to_be_bytes());
    r.push(key.len().min(255) as u8);
    r.extend_from_slice(&key[..key.len().min(255)]);
    r
}

/// `clusterd run`: loads the config, starts the runtime, runs until stopped.
///
/// # Errors
/// A message for the operator.
pub async fn run_node(config: &Path) -> Result<(), String> {
    let cfg = Config::load(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let rt = Runtime::start(cfg).await.map_err(|e| e.to_string())?;
    rt.run().await;
    Ok(())
}
