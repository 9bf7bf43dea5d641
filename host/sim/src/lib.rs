//! A seeded, deterministic cluster simulation: 2-8 nodes in one process over a simulated
//! network with loss, duplication, reordering (delay jitter), delay and partitions, on
//! simulated small-capacity cards with software overflow. Traffic comes from generated flows
//! and from injected packets (pcap replay). Crashes, joins, rebalances, operator moves and
//! drains happen along the way; invariants 1, 2 and 7 of the design brief are checked after
//! every step and invariant 3 at every settle point; invariant 4 is measured on every packet of
//! an established connection.
//!
//! Allocations are agreed outside the core (by consensus in the daemon); here the simulator
//! plays that role and delivers agreed allocations and handover snapshots reliably. Replication
//! traffic goes over the faulty network.

#![forbid(unsafe_code)]

use cluster_core::alloc_policy::{self, Allocation};
use cluster_core::card_table::CardTable;
use cluster_core::distribution::ClusterSecret;
use cluster_core::entry::Entry;
use cluster_core::entry::{Endpoint, FlowKey, L4Proto};
use cluster_core::events::{Event, Message};
use cluster_core::ids::{DistributionId, IdCount, Millis, NodeId};
use cluster_core::node::{
    Destination, DropReason, Mode, Node, NodeConfig, Outgoing, Timeouts, Verdict,
};
use cluster_core::node_table::{NodeSpecificTable, SimCard, TableError, TableStats, TieredTable};
use cluster_core::packet::{build, Framing, TcpFlags};
use cluster_core::rules::RuleSet;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim_bridge::model::ModelCard;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The rule set of simulated nodes: FTP control with the FTP helper, HTTPS with the session
/// helper, everything else allowed.
pub const SIM_RULES: &str = "allow tcp dport 21 helper ftp\n\
                             allow tcp dport 443 helper session user 5\n\
                             allow any\n";

/// The node-specific table of simulated nodes: a small card with a software overflow.
pub type SimTable = TieredTable<SimCardKind>;

/// The card of a simulated node: the trait-level stand-in, or the reference-model card driven
/// register by register through `driver::Card`.
pub enum SimCardKind {
    /// [`SimCard`]: fast, counts commands.
    Trait(Box<SimCard>),
    /// [`CardTable`] over the reference-model card.
    Model(Box<CardTable<ModelCard>>),
}

macro_rules! both {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            SimCardKind::Trait($c) => $e,
            SimCardKind::Model($c) => $e,
        }
    };
}

impl NodeSpecificTable for SimCardKind {
    fn capacity(&self) -> Option<usize> {
        both!(self, c => c.capacity())
    }
    fn len(&self) -> usize {
        both!(self, c => c.len())
    }
    fn insert(&mut self, entry: Entry) -> Result<(), TableError> {
        both!(self, c => c.insert(entry))
    }
    fn lookup(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        both!(self, c => c.lookup(key))
    }
    fn get(&self, key: &FlowKey) -> Option<&Entry> {
        both!(self, c => c.get(key))
    }
    fn remove(&mut self, key: &FlowKey) -> Result<Option<Entry>, TableError> {
        both!(self, c => c.remove(key))
    }
    fn flush_dist(&mut self, dist: DistributionId) -> Result<usize, TableError> {
        both!(self, c => c.flush_dist(dist))
    }
    fn flush_dists(&mut self, dists: &[DistributionId]) -> Result<(usize, usize), TableError> {
        both!(self, c => c.flush_dists(dists))
    }
    fn dist_len(&self, dist: DistributionId) -> usize {
        both!(self, c => c.dist_len(dist))
    }
    fn entries(&self) -> Box<dyn Iterator<Item = &Entry> + '_> {
        both!(self, c => c.entries())
    }
    fn clear_all(&mut self) {
        both!(self, c => c.clear_all())
    }
    fn stats(&self) -> TableStats {
        both!(self, c => c.stats())
    }
    fn sync_hits(&mut self, now: Millis) {
        both!(self, c => c.sync_hits(now))
    }
    fn take_device_error(&mut self) -> Option<TableError> {
        both!(self, c => c.take_device_error())
    }
}

/// Simulation parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Nodes at start.
    pub initial_nodes: u16,
    /// Most nodes at once.
    pub max_nodes: u16,
    /// Distribution identifiers.
    pub count: IdCount,
    /// Card capacity (entries) per node.
    pub card_capacity: usize,
    /// Use the reference-model card through the driver instead of the trait-level stand-in.
    pub model_card: bool,
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Smallest network delay.
    pub min_delay_ms: u64,
    /// Largest network delay (jitter reorders messages).
    pub max_delay_ms: u64,
    /// Node-specific or prior-art layout.
    pub mode: Mode,
    /// Simulated time per step.
    pub step_ms: u64,
    /// New flows per step.
    pub new_flows_per_step: usize,
    /// Packets of existing flows per step.
    pub packets_per_step: usize,
    /// Anti-entropy period.
    pub digest_every_ms: u64,
    /// Garbage packets and messages per step (invariant 7).
    pub garbage_per_step: usize,
    /// Probability per step of a cluster event (crash, join, rebalance, move, drain,
    /// partition).
    pub event_rate: f64,
    /// Timeouts of the nodes.
    pub timeouts: Timeouts,
}

impl SimConfig {
    /// A small, fast default for `seed` and `nodes`.
    pub fn small(seed: u64, nodes: u16) -> Self {
        SimConfig {
            seed,
            initial_nodes: nodes,
            max_nodes: nodes.max(2) + 1,
            count: IdCount::new(64).unwrap_or_default(),
            card_capacity: 48,
            model_card: false,
            loss: 0.05,
            duplicate: 0.03,
            min_delay_ms: 1,
            max_delay_ms: 30,
            mode: Mode::NodeSpecific,
            step_ms: 10,
            new_flows_per_step: 3,
            packets_per_step: 12,
            digest_every_ms: 300,
            garbage_per_step: 2,
            event_rate: 0.02,
            timeouts: Timeouts {
                tcp_handshake_ms: 2_000,
                tcp_established_ms: 6_000,
                tcp_closing_ms: 2_000,
                datagram_ms: 2_000,
                session_ms: 6_000,
                tombstone_ms: 20_000,
            },
        }
    }
}

/// What the simulation observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Steps run.
    pub steps: u64,
    /// Packets delivered to the cluster.
    pub packets: u64,
    /// Packets of established connections (TCP after the handshake, ICMP replies).
    pub established_packets: u64,
    /// Established packets that found no state outside any crash's replication window
    /// (invariant 4: must be 0).
    pub missing_state: u64,
    /// Established packets that found no state because their entry, or its latest update,
    /// was created inside a crash's replication window.
    pub missing_in_window: u64,
    /// Entries lost in crashes (created inside the replication window).
    pub lost_in_window: u64,
    /// Entries whose latest update was lost in a crash (the new owner holds an older version).
    pub stale_in_window: u64,
    /// Age of the oldest entry lost in a crash, in ms (the measured replication window).
    pub window_max_ms: u64,
    /// Entries that went to a software overflow because a card was full.
    pub card_overflows: u64,
    /// Flows created.
    pub flows: u64,
    /// Flows that completed a TCP close.
    pub closed: u64,
    /// Handshakes that failed (state lost mid-handshake in a crash).
    pub handshake_failures: u64,
    /// FTP data connections announced by PORT on a control connection.
    pub related_flows: u64,
    /// Data connections whose first packet found the routed related entry already installed.
    pub related_hits: u64,
    /// Related entries created on one node for an identifier another node owns.
    pub related_routed: u64,
    /// Application-session entries (TLS session / HTTP cookie) in the common tables at the end.
    pub sessions: u64,
    /// Messages sent.
    pub messages: u64,
    /// Messages the network lost.
    pub messages_lost: u64,
    /// Messages the network duplicated.
    pub messages_duplicated: u64,
    /// Messages a node refused (old incarnation etc.).
    pub messages_refused: u64,
    /// Crashes.
    pub crashes: u64,
    /// Joins.
    pub joins: u64,
    /// Joined nodes admitted (given identifiers) after their common table caught up.
    pub admitted: u64,
    /// Reallocations (all causes).
    pub reallocations: u64,
    /// Identifiers moved by reallocations.
    pub ids_moved: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Invariant checks run.
    pub checks: u64,
    /// Garbage inputs fed (invariant 7).
    pub garbage: u64,
    /// Settle points (invariant 3 checked).
    pub settles: u64,
    /// Invariant violations found (empty when all hold).
    pub violations: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    New,
    SynSent,
    SynAcked,
    Established,
    Fin1,
    Fin2,
    Done,
}

#[derive(Clone, Debug)]
struct Flow {
    kind: Kind,
    client: Endpoint,
    server: Endpoint,
    phase: Phase,
    created: Millis,
    last: Millis,
    lost: bool,
    /// FTP control connection: the PORT command was sent.
    announced: bool,
}

struct InFlight {
    at: Millis,
    order: u64,
    to: NodeId,
    bytes: Vec<u8>,
}

/// The simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: Millis,
    secret: ClusterSecret,
    nodes: BTreeMap<NodeId, Node<SimTable>>,
    incarnations: HashMap<NodeId, u32>,
    weights: BTreeMap<NodeId, u32>,
    alloc: Allocation,
    net: Vec<InFlight>,
    order: u64,
    blocked: BTreeSet<(NodeId, NodeId)>,
    heal_at: Option<Millis>,
    joining: BTreeSet<NodeId>,
    flows: Vec<Flow>,
    next_port: u32,
    load: Vec<u64>,
    last_digest: Millis,
    report: SimReport,
}

impl Sim {
    /// A cluster of `cfg.initial_nodes` nodes with an even split.
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut key = [0u8; 16];
        rng.fill(&mut key);
        let mut sim = Sim {
            rng,
            now: Millis(0),
            secret: ClusterSecret::new(key),
            nodes: BTreeMap::new(),
            incarnations: HashMap::new(),
            weights: BTreeMap::new(),
            alloc: Allocation::unowned(cluster_core::ids::Epoch(0), cfg.count),
            net: Vec::new(),
            order: 0,
            blocked: BTreeSet::new(),
            heal_at: None,
            joining: BTreeSet::new(),
            flows: Vec::new(),
            next_port: 0,
            load: vec![0; cfg.count.len()],
            last_digest: Millis(0),
            report: SimReport::default(),
            cfg,
        };
        let ids: Vec<NodeId> = (1..=sim.cfg.initial_nodes).map(NodeId).collect();
        for &n in &ids {
            sim.spawn(n);
            sim.weights.insert(n, 1);
        }
        let first = alloc_policy::even_split(sim.cfg.count, &ids);
        sim.reallocate(first);
        sim
    }

    fn spawn(&mut self, n: NodeId) {
        let inc = self.incarnations.entry(n).or_insert(0);
        *inc += 1;
        let mut c = NodeConfig::new(n, self.secret.clone());
        c.incarnation = *inc;
        c.count = self.cfg.count;
        c.mode = self.cfg.mode;
        c.timeouts = self.cfg.timeouts;
        c.framing = Framing::Ip;
        c.rules = RuleSet::parse(SIM_RULES).unwrap_or_else(|_| RuleSet::allow_all());
        let card = if self.cfg.model_card {
            let model = ModelCard::with_depth(self.cfg.card_capacity.clamp(1, 1 << 20) as u32);
            match model
                .ok()
                .and_then(|m| driver::Card::probe(m).ok())
                .and_then(|c| CardTable::new(c, self.cfg.count).ok())
            {
                Some(t) => SimCardKind::Model(Box::new(t)),
                None => {
                    self.violation(format!("{n}: the model card did not come up"));
                    SimCardKind::Trait(Box::new(SimCard::new(
                        self.cfg.count,
                        self.cfg.card_capacity,
                    )))
                }
            }
        } else {
            SimCardKind::Trait(Box::new(SimCard::new(
                self.cfg.count,
                self.cfg.card_capacity,
            )))
        };
        let table = TieredTable::new(card, self.cfg.count);
        let mut node = Node::new(c, table);
        if self.alloc.epoch.0 > 0 {
            // Learn the current allocation (owning nothing yet).
            let _ = node.apply_allocation(self.now, &self.alloc);
        }
        self.nodes.insert(n, node);
    }

    /// The report so far.
    pub fn report(&self) -> &SimReport {
        &self.report
    }

    /// The live nodes.
    pub fn nodes(&self) -> &BTreeMap<NodeId, Node<SimTable>> {
        &self.nodes
    }

    /// The agreed allocation.
    pub fn allocation(&self) -> &Allocation {
        &self.alloc
    }

    /// Simulated time.
    pub fn now(&self) -> Millis {
        self.now
    }

    fn violation(&mut self, s: String) {
        if self.report.violations.len() < 50 {
            self.report
                .violations
                .push(format!("t={}ms: {s}", self.now.0));
        }
    }

    // ---- network ----

    fn send(&mut self, from: NodeId, out: Vec<Outgoing>) {
        for o in out {
            let bytes = o.message.encode();
            let targets: Vec<NodeId> = match o.dest {
                Destination::All => self.nodes.keys().copied().filter(|&n| n != from).collect(),
                Destination::Node(n) => vec![n],
            };
            for to in targets {
                self.report.messages += 1;
                if self.blocked.contains(&pair(from, to)) || self.rng.random_bool(self.cfg.loss) {
                    self.report.messages_lost += 1;
                    continue;
                }
                let copies = if self.rng.random_bool(self.cfg.duplicate) {
                    self.report.messages_duplicated += 1;
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay = self
                        .rng
                        .random_range(self.cfg.min_delay_ms..=self.cfg.max_delay_ms);
                    self.order += 1;
                    self.net.push(InFlight {
                        at: Millis(self.now.0 + delay),
                        order: self.order,
                        to,
                        bytes: bytes.clone(),
                    });
                }
            }
        }
    }

    fn flush_outboxes(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for n in ids {
            let out = self
                .nodes
                .get_mut(&n)
                .map(|x| x.drain_outbox())
                .unwrap_or_default();
            self.send(n, out);
        }
    }

    /// Delivers every message due by now; returns how many.
    fn deliver_due(&mut self) -> usize {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= now {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|m| (m.at, m.order));
        let n = due.len();
        for m in due {
            let Some(node) = self.nodes.get_mut(&m.to) else {
                continue;
            };
            match Message::decode(&m.bytes) {
                Ok(msg) => {
                    if node.apply_message(now, &msg).is_err() {
                        self.report.messages_refused += 1;
                    }
                }
                Err(e) => self.violation(format!("sim message did not decode: {e}")),
            }
        }
        n
    }

    // ---- traffic ----

    /// Delivers a packet to every live node (all see the cluster's traffic, figure 2);
    /// returns the verdict of the node that handled it, if any.
    pub fn inject_packet(&mut self, bytes: &[u8]) -> Option<(NodeId, Verdict)> {
        self.report.packets += 1;
        let now = self.now;
        let mut handled = None;
        let mut handlers = 0;
        for (&id, node) in self.nodes.iter_mut() {
            let v = node.handle_packet(now, bytes);
            if !matches!(v, Verdict::NotOurs { .. }) {
                handlers += 1;
                handled = Some((id, v));
            }
        }
        if handlers > 1 {
            self.violation(format!("{handlers} nodes handled one packet"));
        }
        handled
    }

    fn new_flow(&mut self) {
        self.next_port += 1;
        let r: f64 = self.rng.random();
        let kind = if r < 0.7 {
            Kind::Tcp
        } else if r < 0.9 {
            Kind::Udp
        } else {
            Kind::Icmp
        };
        let v6 = self.rng.random_bool(0.2);
        let c: u32 = self.rng.random_range(1..5000);
        let s: u32 = self.rng.random_range(1..50);
        let (ca, sa) = if v6 {
            (
                IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(c))),
                IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(s))),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | c)),
                IpAddr::V4(Ipv4Addr::from(0xc000_0200 | s)),
            )
        };
        let cport = 1024 + (self.next_port % 60000) as u16;
        let sport = match kind {
            Kind::Tcp => match self.rng.random_range(0..4u8) {
                0 => 80,
                1 => 443,
                2 if !v6 => 21, // FTP control: PORT announces an IPv4 data connection.
                _ => 22,
            },
            Kind::Udp => 53,
            Kind::Icmp => cport,
        };
        self.flows.push(Flow {
            kind,
            client: Endpoint::new(ca, cport),
            server: Endpoint::new(sa, sport),
            phase: Phase::New,
            created: self.now,
            last: self.now,
            lost: false,
            announced: false,
        });
        self.report.flows += 1;
        let i = self.flows.len() - 1;
        self.advance_flow(i);
    }

    fn timeout_of(&self, f: &Flow) -> u64 {
        let t = &self.cfg.timeouts;
        match (f.kind, f.phase) {
            (Kind::Tcp, Phase::Established) => t.tcp_established_ms,
            (Kind::Tcp, Phase::SynSent | Phase::SynAcked) => t.tcp_handshake_ms,
            (Kind::Tcp, _) => t.tcp_closing_ms,
            _ => t.datagram_ms,
        }
    }

    fn advance_flow(&mut self, i: usize) {
        let Some(f) = self.flows.get(i).cloned() else {
            return;
        };
        if f.phase == Phase::Done {
            return;
        }
        let flags = |syn, ack, fin| TcpFlags {
            syn,
            ack,
            fin,
            rst: false,
        };
        let to_server = self.rng.random_bool(0.5);
        let (c, s) = (f.client, f.server);
        // Application payload from the client: an HTTP request with a cookie on 443 (session
        // helper), a PORT command once on 21 (FTP helper), plain bytes otherwise.
        let mut payload: Vec<u8> = b"data".to_vec();
        let mut data_flow = None;
        if f.kind == Kind::Tcp && f.phase == Phase::Established && to_server {
            if s.port == 443 {
                payload =
                    format!("GET / HTTP/1.1\r\nCookie: s={}\r\n\r\n", c.port % 40).into_bytes();
            } else if s.port == 21 && !f.announced {
                if let IpAddr::V4(v4) = c.addr {
                    let p = 30_000 + (self.next_port % 30_000) as u16;
                    let o = v4.octets();
                    payload = format!(
                        "PORT {},{},{},{},{},{}\r\n",
                        o[0],
                        o[1],
                        o[2],
                        o[3],
                        p >> 8,
                        p & 0xff
                    )
                    .into_bytes();
                    data_flow = Some(Endpoint::new(c.addr, p));
                }
            }
        }
        let tcp = |fl, cs: bool| {
            if cs {
                build::tcp(c.addr, c.port, s.addr, s.port, fl, &payload)
            } else {
                build::tcp(s.addr, s.port, c.addr, c.port, fl, b"data")
            }
        };
        let (pkt, next, established) = match (f.kind, f.phase) {
            (Kind::Tcp, Phase::New) => {
                (tcp(flags(true, false, false), true), Phase::SynSent, false)
            }
            (Kind::Tcp, Phase::SynSent) => {
                (tcp(flags(true, true, false), false), Phase::SynAcked, false)
            }
            (Kind::Tcp, Phase::SynAcked) => (
                tcp(flags(false, true, false), true),
                Phase::Established,
                false,
            ),
            (Kind::Tcp, Phase::Established) => {
                if self.rng.random_bool(0.1) {
                    (tcp(flags(false, true, true), true), Phase::Fin1, true)
                } else {
                    (
                        tcp(flags(false, true, false), to_server),
                        Phase::Established,
                        true,
                    )
                }
            }
            (Kind::Tcp, Phase::Fin1) => (tcp(flags(false, true, true), false), Phase::Fin2, true),
            (Kind::Tcp, Phase::Fin2) => (tcp(flags(false, true, false), true), Phase::Done, true),
            (Kind::Udp, Phase::New) => (
                build::udp(c.addr, c.port, s.addr, s.port, b"q"),
                Phase::Established,
                false,
            ),
            (Kind::Udp, _) => (
                if to_server {
                    build::udp(c.addr, c.port, s.addr, s.port, b"q")
                } else {
                    build::udp(s.addr, s.port, c.addr, c.port, b"a")
                },
                Phase::Established,
                false,
            ),
            (Kind::Icmp, Phase::New) => (
                build::icmp_echo(c.addr, s.addr, c.port, true),
                Phase::Established,
                false,
            ),
            (Kind::Icmp, _) => (
                build::icmp_echo(s.addr, c.addr, c.port, false),
                Phase::Established,
                true,
            ),
            (_, Phase::Done) => return,
        };
        let Some(pkt) = pkt else {
            return;
        };
        let verdict = self.inject_packet(&pkt);
        if let Some(to) = data_flow {
            if matches!(verdict, Some((_, Verdict::Accept { .. }))) {
                if let Some(fl) = self.flows.get_mut(i) {
                    fl.announced = true;
                }
                // The server opens the data connection from port 20.
                self.report.related_flows += 1;
                self.flows.push(Flow {
                    kind: Kind::Tcp,
                    client: Endpoint::new(s.addr, 20),
                    server: to,
                    phase: Phase::New,
                    created: self.now,
                    last: self.now,
                    lost: false,
                    announced: false,
                });
            }
        }
        if f.kind == Kind::Tcp && f.phase == Phase::New && f.client.port == 20 {
            if let Some((_, Verdict::Accept { created: false, .. })) = verdict {
                // The data connection's first packet found the entry the control connection's
                // node created and routed to this owner.
                self.report.related_hits += 1;
            }
        }
        if let Some(fl) = self.flows.get_mut(i) {
            fl.last = self.now;
        }
        if established {
            self.report.established_packets += 1;
        }
        let missing = matches!(
            verdict,
            Some((
                _,
                Verdict::Drop(DropReason::TcpNoState | DropReason::NoState)
            ))
        );
        let phase = match verdict {
            Some((_, Verdict::Accept { .. })) => next,
            _ if established && missing => {
                if f.lost {
                    self.report.missing_in_window += 1;
                } else {
                    self.report.missing_state += 1;
                    let k = flow_key(&f);
                    self.violation(format!("established {k:?} found no state"));
                }
                Phase::Done
            }
            None => {
                // No owner (every identifier is owned after an allocation; this is a bug).
                self.violation("packet with no owning node".into());
                Phase::Done
            }
            _ => {
                if f.kind == Kind::Tcp && matches!(f.phase, Phase::SynSent | Phase::SynAcked) {
                    self.report.handshake_failures += 1;
                }
                Phase::Done
            }
        };
        if phase == Phase::Done && f.phase == Phase::Fin2 {
            self.report.closed += 1;
        }
        if let Some(fl) = self.flows.get_mut(i) {
            fl.phase = phase;
        }
    }

    fn traffic(&mut self) {
        for _ in 0..self.cfg.new_flows_per_step {
            self.new_flow();
        }
        // Retire flows idle for half their timeout (their entries expire on their own), and
        // forget finished ones.
        let now = self.now;
        let mut retired = Vec::new();
        for (i, f) in self.flows.iter().enumerate() {
            if f.phase != Phase::Done && now.since(f.last) * 2 > self.timeout_of(f) {
                retired.push(i);
            }
        }
        for i in retired {
            self.flows[i].phase = Phase::Done;
        }
        self.flows.retain(|f| f.phase != Phase::Done);
        if self.flows.is_empty() {
            return;
        }
        for _ in 0..self.cfg.packets_per_step {
            let i = self.rng.random_range(0..self.flows.len());
            self.advance_flow(i);
        }
    }

    fn garbage(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        for _ in 0..self.cfg.garbage_per_step {
            let n = ids[self.rng.random_range(0..ids.len())];
            let len = self.rng.random_range(0..80);
            let mut b = vec![0u8; len];
            self.rng.fill(&mut b[..]);
            if self.rng.random_bool(0.5) && !b.is_empty() {
                b[0] = 0x45; // Looks like IPv4, still garbage.
            }
            self.report.garbage += 1;
            let now = self.now;
            if let Some(node) = self.nodes.get_mut(&n) {
                let before = node.common().len();
                let _ = node.handle_packet(now, &b);
                // A garbage message: random bytes after a valid format byte and a foreign sender.
                let mut m = b.clone();
                if m.len() > 3 {
                    m[0] = cluster_core::events::FORMAT;
                    m[1] = 0xee;
                    m[2] = 0xee;
                }
                if let Ok(msg) = Message::decode(&m) {
                    // Decoded by chance: it is a valid message; applying it is legitimate.
                    let _ = node.apply_message(now, &msg);
                } else if node.common().len() < before {
                    self.violation(format!("{n}: garbage input lost state"));
                }
            }
        }
    }

    // ---- cluster events ----

    fn weights_vec(&self) -> Vec<(NodeId, u32)> {
        self.weights.iter().map(|(&n, &w)| (n, w)).collect()
    }

    /// Installs an agreed allocation: handover snapshots (reliable), make on every node, then
    /// flip and break on every node.
    pub fn reallocate(&mut self, next: Allocation) {
        self.report.reallocations += 1;
        self.report.ids_moved += self.alloc.moved(&next) as u64;
        let now = self.now;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let mut direct = Vec::new();
        let mut other = Vec::new();
        for &n in &ids {
            if let Some(node) = self.nodes.get_mut(&n) {
                node.handover_snapshots(&next);
                for o in node.drain_outbox() {
                    if matches!(o.message.event, Event::Snapshot { .. }) {
                        direct.push(o);
                    } else {
                        other.push((n, o));
                    }
                }
            }
        }
        for (n, o) in other {
            self.send(n, vec![o]);
        }
        for o in direct {
            if let Destination::Node(to) = o.dest {
                if let Some(node) = self.nodes.get_mut(&to) {
                    if node.apply_message(now, &o.message).is_err() {
                        self.report.messages_refused += 1;
                    }
                }
            }
        }
        for &n in &ids {
            if let Some(node) = self.nodes.get_mut(&n) {
                if let Err(e) = node.begin_reallocation(now, &next) {
                    let s = format!("{n}: begin_reallocation: {e}");
                    self.violation(s);
                }
            }
        }
        for &n in &ids {
            if let Some(node) = self.nodes.get_mut(&n) {
                if let Err(e) = node.finish_reallocation(next.epoch) {
                    let s = format!("{n}: finish_reallocation: {e}");
                    self.violation(s);
                }
            }
        }
        self.alloc = next;
    }

    /// Crashes a node: its memory is gone; the survivors take its identifiers from their
    /// common tables. Entries it had not replicated yet are lost (measured).
    pub fn crash(&mut self, victim: NodeId) {
        let Some(dead) = self.nodes.remove(&victim) else {
            return;
        };
        self.report.crashes += 1;
        self.weights.remove(&victim);
        self.joining.remove(&victim);
        if self.weights.values().all(|&w| w == 0) {
            // The operator undrains the survivors rather than leave the cluster ownerless:
            // drained nodes first (their common tables are complete), nodes still catching up
            // after a join only if nothing else is left.
            let synced: Vec<NodeId> = self
                .weights
                .keys()
                .copied()
                .filter(|n| !self.joining.contains(n))
                .collect();
            let pick = if synced.is_empty() {
                self.joining.clear();
                self.weights.keys().copied().collect()
            } else {
                synced
            };
            for n in pick {
                self.weights.insert(n, 1);
            }
        }
        self.blocked.retain(|&(a, b)| a != victim && b != victim);
        let next = alloc_policy::node_failure(&self.alloc, victim, &self.weights_vec());
        self.reallocate(next);
        // Measure: entries the dead node held that their new owner does not have.
        let now = self.now;
        // Entries absent at their new owner were lost; entries present in an older version
        // lost their latest update (e.g. the end of a handshake, which also changes the idle
        // timeout). Both were created inside the replication window.
        let mut lost_keys = BTreeSet::new();
        let mut stale_keys = BTreeSet::new();
        for e in dead.node_table().entries() {
            let owner = self.alloc.owner(e.dist);
            let there = owner
                .and_then(|o| self.nodes.get(&o))
                .and_then(|n| n.node_table().get(&e.key).map(|x| x.version));
            match there {
                None => {
                    lost_keys.insert(e.key);
                }
                Some(v) if v < e.version => {
                    stale_keys.insert(e.key);
                }
                Some(_) => {}
            }
        }
        for f in &mut self.flows {
            let k = flow_key(f);
            if lost_keys.contains(&k) {
                f.lost = true;
                self.report.lost_in_window += 1;
                self.report.window_max_ms = self.report.window_max_ms.max(now.since(f.created));
            } else if stale_keys.contains(&k) {
                f.lost = true;
                self.report.stale_in_window += 1;
                self.report.window_max_ms = self.report.window_max_ms.max(now.since(f.last));
            }
        }
    }

    /// A node joins (a new one, or a crashed one restarting with a new incarnation).
    pub fn join(&mut self, n: NodeId) {
        if self.nodes.contains_key(&n) {
            return;
        }
        self.report.joins += 1;
        self.spawn(n);
        // Weight 0 until its common table has caught up (bulk sync by repair requests, then
        // digests): only then does it take identifiers, so it never takes over state it lacks.
        self.weights.insert(n, 0);
        self.joining.insert(n);
        if let Some(node) = self.nodes.get_mut(&n) {
            node.request_sync();
        }
    }

    /// Gives joining nodes whose common tables caught up their share (planned reallocation).
    fn admit_synced(&mut self) {
        let ready: Vec<NodeId> = self
            .joining
            .iter()
            .copied()
            .filter(|n| self.nodes.get(n).is_some_and(|x| x.is_synced()))
            .collect();
        for n in ready {
            self.joining.remove(&n);
            self.weights.insert(n, 1);
            let next = alloc_policy::node_join(&self.alloc, n, &self.weights_vec());
            self.report.admitted += 1;
            self.reallocate(next);
        }
    }

    /// Load balancing from the per-identifier packet counts since the last call.
    pub fn rebalance(&mut self) {
        // Per-identifier load as the nodes measured it since the previous rebalance.
        for node in self.nodes.values_mut() {
            for (l, x) in self.load.iter_mut().zip(node.take_load()) {
                *l += x;
            }
        }
        let next = alloc_policy::load_balance(&self.alloc, &self.load, &self.weights_vec(), 20, 4);
        self.load.iter_mut().for_each(|l| *l = 0);
        if self.alloc.moved(&next) > 0 {
            self.reallocate(next);
        }
    }

    fn random_event(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let pick = |rng: &mut ChaCha8Rng, v: &[NodeId]| v[rng.random_range(0..v.len())];
        match self.rng.random_range(0..7u32) {
            0 if ids.len() > 2 => {
                let v = pick(&mut self.rng, &ids);
                self.crash(v);
            }
            1 if (ids.len() as u16) < self.cfg.max_nodes => {
                let free = (1..=self.cfg.max_nodes + 1)
                    .map(NodeId)
                    .find(|n| !self.nodes.contains_key(n))
                    .unwrap_or(NodeId(99));
                self.join(free);
            }
            2 => self.rebalance(),
            3 => {
                let to = pick(&mut self.rng, &ids);
                let moved: Vec<DistributionId> = (0..3)
                    .map(|_| DistributionId(self.rng.random_range(0..self.cfg.count.get())))
                    .collect();
                let next = alloc_policy::operator_move(&self.alloc, &moved, to);
                self.reallocate(next);
            }
            // Drain only while another node keeps a positive weight.
            4 if self.weights.values().filter(|&&w| w > 0).count() > 1 => {
                let n = pick(&mut self.rng, &ids);
                let next = alloc_policy::drain(&self.alloc, n, &self.weights_vec());
                self.weights.insert(n, 0);
                self.reallocate(next);
            }
            5 => {
                // Undrain: weights back to 1 (joining nodes wait for their sync).
                for (n, w) in self.weights.iter_mut() {
                    if !self.joining.contains(n) {
                        *w = 1;
                    }
                }
                let next = alloc_policy::rebalance(&self.alloc, &self.weights_vec());
                if self.alloc.moved(&next) > 0 {
                    self.reallocate(next);
                }
            }
            6 if ids.len() > 1 => {
                let a = pick(&mut self.rng, &ids);
                let b = pick(&mut self.rng, &ids);
                if a != b {
                    self.report.partitions += 1;
                    self.blocked.insert(pair(a, b));
                    self.heal_at = Some(Millis(self.now.0 + self.rng.random_range(50..300)));
                }
            }
            _ => {}
        }
    }

    // ---- invariants ----

    /// Invariants 1 and 2 (and the allocation agreement).
    pub fn check(&mut self) {
        self.report.checks += 1;
        let mut problems = Vec::new();
        for d in self.cfg.count.all() {
            let owners: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.owns(d))
                .map(|(&id, _)| id)
                .collect();
            if owners.len() > 1 {
                problems.push(format!("invariant 1: {d} owned by {owners:?}"));
            }
            if self.alloc.owner(d).is_some_and(|o| !owners.contains(&o)) {
                problems.push(format!("{d}: agreed owner does not own it"));
            }
        }
        for n in self.nodes.values() {
            if n.allocation().epoch != self.alloc.epoch {
                problems.push(format!("{}: epoch differs", n.id()));
            }
            for p in n.check_tables() {
                problems.push(format!("invariant 2: {p}"));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Stops traffic, heals partitions, delivers everything without loss, runs anti-entropy
    /// to quiescence, then checks invariant 3: every common table equals the union of the
    /// node-specific tables.
    pub fn settle(&mut self) {
        self.report.settles += 1;
        self.blocked.clear();
        self.heal_at = None;
        let (loss, dup) = (self.cfg.loss, self.cfg.duplicate);
        self.cfg.loss = 0.0;
        self.cfg.duplicate = 0.0;
        for round in 0..4 {
            if round > 0 {
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                for n in ids {
                    if let Some(node) = self.nodes.get_mut(&n) {
                        node.queue_digest();
                    }
                }
            }
            for _ in 0..200 {
                self.flush_outboxes();
                if self.net.is_empty() {
                    break;
                }
                self.now = Millis(self.now.0 + self.cfg.max_delay_ms);
                self.deliver_due();
            }
        }
        self.cfg.loss = loss;
        self.cfg.duplicate = dup;
        // Invariant 3.
        let mut truth: HashMap<FlowKey, cluster_core::entry::Entry> = HashMap::new();
        for n in self.nodes.values() {
            for e in n.node_table().entries() {
                if n.owns(e.dist) {
                    truth.insert(e.key, e.clone());
                }
            }
        }
        self.report.sessions = truth
            .values()
            .filter(|e| e.state == cluster_core::entry::ConnState::Session)
            .count() as u64;
        let mut problems = Vec::new();
        for n in self.nodes.values() {
            let c = n.common();
            if c.len() != truth.len() {
                problems.push(format!(
                    "invariant 3: {} common table has {} entries, node-specific union {}",
                    n.id(),
                    c.len(),
                    truth.len()
                ));
                continue;
            }
            for e in truth.values() {
                if !c.get(&e.key).is_some_and(|x| x.same_replicated(e)) {
                    problems.push(format!("invariant 3: {} differs on {:?}", n.id(), e.key));
                    break;
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
        self.check();
    }

    /// One step: time advances, due messages arrive, traffic flows, maybe a cluster event,
    /// housekeeping, then the invariant checks.
    pub fn step(&mut self) {
        self.report.steps += 1;
        self.now = Millis(self.now.0 + self.cfg.step_ms);
        if self.heal_at.is_some_and(|t| t <= self.now) {
            self.blocked.clear();
            self.heal_at = None;
        }
        self.deliver_due();
        self.traffic();
        self.garbage();
        if self.rng.random_bool(self.cfg.event_rate) {
            self.random_event();
        }
        self.admit_synced();
        let now = self.now;
        if now.since(self.last_digest) >= self.cfg.digest_every_ms {
            self.last_digest = now;
            for node in self.nodes.values_mut() {
                node.expire(now);
                // Simulated cards never leave the bus: a failure here is a bug of the simulator.
                node.node_table_mut()
                    .maintain()
                    .expect("a simulated card does not fail");
                node.queue_digest();
            }
        }
        self.flush_outboxes();
        self.report.card_overflows = self
            .nodes
            .values()
            .map(|n| n.node_table().stats().overflowed)
            .sum::<u64>()
            .max(self.report.card_overflows);
        self.report.related_routed = self
            .nodes
            .values()
            .map(|n| n.stats().related_routed)
            .sum::<u64>()
            .max(self.report.related_routed);
        self.check();
    }

    /// Runs `steps` steps, settling every `settle_every` steps and at the end.
    pub fn run(&mut self, steps: u64, settle_every: u64) -> &SimReport {
        for i in 1..=steps {
            self.step();
            if settle_every > 0 && i % settle_every == 0 {
                self.settle();
            }
        }
        self.settle();
        &self.report
    }
}

fn flow_key(f: &Flow) -> FlowKey {
    match f.kind {
        Kind::Tcp => FlowKey::transport(L4Proto::Tcp, f.client, f.server).0,
        Kind::Udp => FlowKey::transport(L4Proto::Udp, f.client, f.server).0,
        Kind::Icmp => FlowKey::icmp(f.client.addr, f.server.addr, f.client.port).0,
    }
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}
