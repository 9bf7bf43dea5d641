//! A seeded, deterministic cluster simulation that drives the real cluster members: 2-8
//! [`Member`]s (the code the daemon runs) with their real replication transports
//! ([`host::sync::Endpoint`], sealed frames, acks and retransmission) over a simulated network
//! with loss, duplication, reordering (delay jitter), delay and partitions, on simulated
//! small-capacity cards with software overflow, in simulated time. Traffic comes from
//! generated flows and from injected packets (pcap replay). Crashes, restarts, joins,
//! rebalances, operator moves, drains and partitions happen along the way.
//!
//! Consensus is played by the simulator (the daemon runs Raft): the leader is the lowest live
//! voter in contact with a majority of the voters; its proposals are agreed when their epoch
//! follows the agreed one, and every member in contact with the leader receives the agreed
//! allocations in order (a restarted member receives the whole log again, as the daemon
//! replays its Raft log).
//!
//! Checked on the members' own state: invariant 1 at every step (no identifier has two acting
//! owners, no packet is handled by two members), invariants 2 and 3 at every settle point (each
//! card holds exactly its owner's entries; every common table equals the union of the
//! node-specific tables), invariant 4 on every packet of an established connection (state lost
//! inside a crash's replication window is measured apart), invariants 7 and 9 with garbage
//! packets, frames and authenticated records.
//!
//! Test support, not part of the shipped library.

#![forbid(unsafe_code)]

use cluster_core::alloc_policy::Allocation;
use cluster_core::card_table::CardTable;
use cluster_core::distribution::ClusterSecret;
use cluster_core::entry::{Endpoint, Entry, FlowKey, L4Proto};
use cluster_core::ids::{DistributionId, Epoch, IdCount, Millis, NodeId};
use cluster_core::member::{ConsensusView, Member, MemberConfig, Output, PacketOutcome, Time, To};
use cluster_core::node::{Mode, Node, NodeConfig, Timeouts};
use cluster_core::node_table::{NodeSpecificTable, SimCard, TableError, TableStats, TieredTable};
use cluster_core::packet::{build, Framing, TcpFlags};
use cluster_core::rules::RuleSet;
use host::sync::{ClusterKey, Endpoint as SyncEndpoint, EndpointConfig, SyncEvent};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim_bridge::model::ModelCard;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Not;
use std::time::Duration;

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
    fn insert_batch(&mut self, entries: Vec<Entry>) -> Vec<Result<(), TableError>> {
        both!(self, c => c.insert_batch(entries))
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
    /// Probability per step of a cluster event (crash, restart, join, rebalance, move, drain,
    /// partition).
    pub event_rate: f64,
    /// Timeouts of the nodes.
    pub timeouts: Timeouts,
    /// A member silent this long has failed (members' failure detection).
    pub failure_ms: u64,
    /// Members' heartbeat interval.
    pub heartbeat_ms: u64,
    /// Longest stall of a member (a frozen process: it runs nothing, receives nothing and
    /// sends nothing, then carries on with its clock jumped); 0: no stalls. Stalls are cluster
    /// events (see `event_rate`), of any length from one step up to this.
    pub stall_max_ms: u64,
    /// Largest clock-rate difference of a member from true time, in parts per million (each
    /// member's monotonic clock runs at its own rate within ± this).
    pub clock_skew_ppm: u32,
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
            failure_ms: 200,
            heartbeat_ms: 20,
            stall_max_ms: 0,
            clock_skew_ppm: 0,
        }
    }

    /// The crash-window test's schedule: no random events, one-way delays up to 50 ms.
    pub fn crash_window(seed: u64, nodes: u16) -> Self {
        SimConfig {
            event_rate: 0.0,
            max_delay_ms: 50,
            ..Self::small(seed, nodes)
        }
    }

    /// The heavy-fault test's schedule: 20% loss, 10% duplicates, one-way delays up to 80 ms,
    /// frequent events, up to 6 nodes.
    pub fn heavy_faults(seed: u64, nodes: u16) -> Self {
        SimConfig {
            loss: 0.2,
            duplicate: 0.1,
            max_delay_ms: 80,
            event_rate: 0.08,
            max_nodes: 6,
            // a lease needs a round trip (heartbeat out, echo back) within 3/4 of the failure
            // time: with one-way delays up to 80 ms and a heartbeat every 20 ms that is up to
            // 180 ms
            failure_ms: 400,
            ..Self::small(seed, nodes)
        }
    }

    /// The property test's schedule: the default fault mix, up to 6 nodes.
    pub fn property(seed: u64, nodes: u16) -> Self {
        SimConfig {
            max_nodes: nodes.clamp(3, 6),
            event_rate: 0.04,
            ..Self::small(seed, nodes)
        }
    }

    /// The stall property test's schedule: stalls up to `stall_ms`, clocks off by up to
    /// `skew_ppm`, up to 6 nodes.
    pub fn stalls(seed: u64, nodes: u16, stall_ms: u64, skew_ppm: u32) -> Self {
        SimConfig {
            max_nodes: nodes.clamp(3, 6),
            event_rate: 0.05,
            stall_max_ms: stall_ms,
            clock_skew_ppm: skew_ppm,
            ..Self::small(seed, nodes)
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
    /// Packets no member handled (nobody took traffic for their identifier then: a member
    /// starting or fenced, an identifier between owners); the flow retries later, as a TCP
    /// endpoint retransmits.
    pub unhandled: u64,
    /// Of those, packets of established connections.
    pub unhandled_established: u64,
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
    /// Entries found in a common table at a settle's check that their owner had just cleared
    /// (expired while the cluster settled), the `Clear` still in flight: not counted against
    /// invariant 3.
    pub clears_in_flight: u64,
    /// Messages the network duplicated.
    pub messages_duplicated: u64,
    /// Frames a member's transport refused (garbage, duplicates, old incarnations) and records
    /// a member refused.
    pub messages_refused: u64,
    /// Crashes.
    pub crashes: u64,
    /// Stalls (frozen members).
    pub stalls: u64,
    /// Joins.
    pub joins: u64,
    /// Joined or restarted nodes admitted (given identifiers) after their common table caught
    /// up.
    pub admitted: u64,
    /// Agreed allocations (all causes).
    pub reallocations: u64,
    /// Identifiers moved by reallocations.
    pub ids_moved: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Invariant checks run.
    pub checks: u64,
    /// Steps at which some member was fenced.
    pub fenced_steps: u64,
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
    from: NodeId,
    to: NodeId,
    bytes: Vec<u8>,
}

/// One simulated node: the member and its replication transport.
pub struct SimNode {
    member: Member<SimTable>,
    ep: SyncEndpoint,
    /// How many agreed allocations it has received.
    agreed_len: usize,
    /// Whether it was taking traffic at the last step (for `admitted`).
    was_ready: bool,
    /// Joined or restarted: counted in `admitted` when it first takes identifiers.
    joined: bool,
    /// When its process started (simulated time): its monotonic clock starts there.
    born: Millis,
    /// Its clock's rate error (parts per million).
    skew_ppm: i64,
    /// Frozen until then (runs, receives and sends nothing).
    stalled_until: Option<Millis>,
    /// Whether it was fenced at the last step.
    was_fenced: bool,
}

impl SimNode {
    /// Its clock at simulated time `now`: monotonic since its process started.
    fn clock(&self, now: Millis) -> Time {
        let us = now.0.saturating_sub(self.born.0) as i128 * 1000;
        let us = us + us * i128::from(self.skew_ppm) / 1_000_000;
        Time {
            mono: Duration::from_micros(us.max(0) as u64),
            unix_ms: 1_700_000_000_000 + now.0,
        }
    }

    /// The member.
    pub fn member(&self) -> &Member<SimTable> {
        &self.member
    }

    /// The member's state core (tables, allocation).
    pub fn core(&self) -> &Node<SimTable> {
        self.member.core()
    }

    fn stalled(&self, now: Millis) -> bool {
        self.stalled_until.is_some_and(|u| now < u)
    }
}

/// The simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: Millis,
    secret: ClusterSecret,
    key: ClusterKey,
    nodes: BTreeMap<NodeId, SimNode>,
    incarnations: HashMap<NodeId, u64>,
    /// The configured voters (the initial nodes, plus promoted learners).
    voters: Vec<NodeId>,
    /// The consensus leader.
    leader_id: Option<NodeId>,
    /// The agreed allocations, in order (epoch `i + 1` at index `i`).
    log: Vec<Allocation>,
    net: Vec<InFlight>,
    order: u64,
    blocked: BTreeSet<(NodeId, NodeId)>,
    heal_at: Option<Millis>,
    flows: Vec<Flow>,
    next_port: u32,
    last_digest: Millis,
    quiet: bool,
    report: SimReport,
}

impl Sim {
    /// A cluster of `cfg.initial_nodes` members, run until every one of them takes traffic
    /// and the first allocation is agreed (their own leader allocates; nothing is forced).
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut dkey = [0u8; 16];
        rng.fill(&mut dkey);
        let mut skey = [0u8; 32];
        rng.fill(&mut skey);
        let voters: Vec<NodeId> = (1..=cfg.initial_nodes).map(NodeId).collect();
        let mut sim = Sim {
            rng,
            now: Millis(0),
            secret: ClusterSecret::new(dkey),
            key: ClusterKey::from_bytes(skey),
            nodes: BTreeMap::new(),
            incarnations: HashMap::new(),
            voters: voters.clone(),
            leader_id: None,
            log: Vec::new(),
            net: Vec::new(),
            order: 0,
            blocked: BTreeSet::new(),
            heal_at: None,
            flows: Vec::new(),
            next_port: 0,
            last_digest: Millis(0),
            quiet: false,
            report: SimReport::default(),
            cfg,
        };
        for &n in &voters {
            sim.spawn(n, false);
        }
        sim.quiet = true;
        for _ in 0..2000 {
            let all_ready = sim.nodes.values().all(|n| n.member.takes_traffic());
            let owned = sim
                .log
                .last()
                .is_some_and(|a| a.owners.iter().all(Option::is_some));
            if all_ready && owned && sim.settled_allocation() {
                break;
            }
            sim.step();
        }
        sim.quiet = false;
        sim
    }

    /// Every slot a node may use (the configured cluster).
    fn slots(&self) -> impl Iterator<Item = NodeId> {
        (1..=self.cfg.max_nodes.max(self.cfg.initial_nodes)).map(NodeId)
    }

    fn spawn(&mut self, n: NodeId, joined: bool) {
        let inc = self.incarnations.entry(n).or_insert(0);
        *inc += 1;
        let inc = *inc;
        let mut c = NodeConfig::new(n, self.secret.clone());
        c.incarnation = inc as u32;
        c.count = self.cfg.count;
        c.mode = self.cfg.mode;
        c.timeouts = self.cfg.timeouts;
        c.framing = Framing::Ip;
        c.rules = RuleSet::parse(SIM_RULES).unwrap_or_else(|_| RuleSet::allow_all());
        let card = self.card(n);
        let table = TieredTable::new(card, self.cfg.count);
        let slots: Vec<NodeId> = self.slots().collect();
        let mcfg = MemberConfig::all_members(
            n,
            &slots,
            self.cfg.count,
            Duration::from_millis(self.cfg.failure_ms),
            Duration::from_millis(self.cfg.heartbeat_ms),
            1 << 20,
        );
        let member = Member::new(mcfg, Node::new(c, table));
        let skew = i64::from(self.cfg.clock_skew_ppm);
        let skew_ppm = if skew > 0 {
            self.rng.random_range(-skew..=skew)
        } else {
            0
        };
        let ep = SyncEndpoint::new(
            EndpointConfig::new(n, inc),
            self.key.clone(),
            slots.iter().copied().filter(|p| *p != n),
        );
        self.nodes.insert(
            n,
            SimNode {
                member,
                ep,
                agreed_len: 0,
                was_ready: false,
                joined,
                born: self.now,
                skew_ppm,
                stalled_until: None,
                was_fenced: false,
            },
        );
    }

    fn card(&mut self, n: NodeId) -> SimCardKind {
        let trait_card = |cfg: &SimConfig| {
            SimCardKind::Trait(Box::new(SimCard::new(cfg.count, cfg.card_capacity)))
        };
        if !self.cfg.model_card {
            return trait_card(&self.cfg);
        }
        let model = ModelCard::with_depth(self.cfg.card_capacity.clamp(1, 1 << 20) as u32);
        match model
            .ok()
            .and_then(|m| driver::Card::probe(m).ok())
            .and_then(|c| CardTable::new(c, self.cfg.count).ok())
        {
            Some(t) => SimCardKind::Model(Box::new(t)),
            None => {
                self.violation(format!("{n}: the model card did not come up"));
                trait_card(&self.cfg)
            }
        }
    }

    /// The report so far.
    pub fn report(&self) -> &SimReport {
        &self.report
    }

    /// The running nodes.
    pub fn nodes(&self) -> &BTreeMap<NodeId, SimNode> {
        &self.nodes
    }

    /// The last agreed allocation (no owners before the first).
    pub fn allocation(&self) -> Allocation {
        self.log
            .last()
            .cloned()
            .unwrap_or_else(|| Allocation::unowned(Epoch(0), self.cfg.count))
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

    fn connected(&self, a: NodeId, b: NodeId) -> bool {
        a == b || !self.blocked.contains(&pair(a, b))
    }

    // ---- consensus (played by the simulator) ----

    /// Whether voter `v` runs and is in contact with a majority of the voters.
    fn eligible(&self, v: NodeId) -> bool {
        self.nodes.get(&v).is_some_and(|n| !n.stalled(self.now))
            && self
                .voters
                .iter()
                .filter(|&&w| self.nodes.contains_key(&w) && self.connected(v, w))
                .count()
                * 2
                > self.voters.len()
    }

    /// The consensus leader, while it runs and reaches a majority.
    fn leader(&self) -> Option<NodeId> {
        self.leader_id.filter(|l| self.eligible(*l))
    }

    /// Keeps the leader while it is eligible; otherwise elects the eligible voter that has run
    /// longest (its log is complete; a freshly restarted process is elected only when no
    /// other can be).
    fn elect(&mut self) {
        if self.leader().is_some() {
            return;
        }
        self.leader_id = self
            .voters
            .iter()
            .copied()
            .filter(|v| self.eligible(*v))
            .min_by_key(|v| (self.nodes.get(v).map_or(u64::MAX, |n| n.born.0), v.0));
    }

    fn propose(&mut self, from: NodeId, a: Allocation) {
        if self.leader() != Some(from) {
            return;
        }
        let tip = self.log.last().map_or(Epoch(0), |l| l.epoch);
        if a.epoch.0 != tip.0 + 1 {
            return;
        }
        self.report.reallocations += 1;
        self.report.ids_moved += self.allocation().moved(&a) as u64;
        if trace() {
            eprintln!(
                "t={} sim: agreed epoch {} from {from}: {:?}",
                self.now.0,
                a.epoch.0,
                a.owners
                    .iter()
                    .map(|o| o.map_or(0, |n| n.0))
                    .collect::<Vec<_>>()
            );
        }
        self.log.push(a);
    }

    /// Delivers agreed allocations to every member in contact with the leader.
    fn deliver_agreed(&mut self) {
        let Some(leader) = self.leader() else {
            return;
        };
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for n in ids {
            if !self.connected(n, leader) {
                continue;
            }
            let Some(node) = self.nodes.get_mut(&n) else {
                continue;
            };
            if node.stalled(self.now) {
                continue;
            }
            let t = node.clock(self.now);
            while node.agreed_len < self.log.len() {
                let a = &self.log[node.agreed_len];
                node.member.on_agreed(t, a, || Duration::ZERO);
                node.agreed_len += 1;
            }
        }
    }

    // ---- network ----

    /// Carries out a node's outputs: records and heartbeats into its transport, proposals to
    /// consensus.
    fn handle_outputs(&mut self, n: NodeId) {
        let Some(node) = self.nodes.get_mut(&n) else {
            return;
        };
        let now = node.clock(self.now).mono;
        let outputs: Vec<Output> = node.member.drain_outputs().collect();
        let peers: Vec<NodeId> = node.member.replication_peers().collect();
        let mut proposals = Vec::new();
        let mut promotions = Vec::new();
        let mut buf = Vec::new();
        for o in outputs {
            match o {
                Output::Record { to, record } => {
                    buf.clear();
                    record.emit(&mut buf);
                    let targets = match to {
                        To::Peers => peers.clone(),
                        To::Node(p) => vec![p],
                    };
                    for p in targets {
                        let _ = node.ep.send_record(now, p, &buf);
                    }
                }
                Output::Heartbeat { to, heartbeat } => {
                    let _ = node.ep.send_datagram(to, &heartbeat.to_bytes());
                }
                Output::Datagram { to, bytes } => {
                    let _ = node.ep.send_datagram(to, &bytes);
                }
                Output::Propose(a) => proposals.push(a),
                Output::PromoteVoter(p) => promotions.push(p),
                Output::DiscardBacklog(p) => node.ep.discard_backlog(p),
                Output::Log(line) => {
                    if trace() {
                        eprintln!("t={} {n}: {line}", self.now.0);
                    }
                }
                // the simulator's members do not hold packets (holding is off)
                Output::Released { .. } => {}
            }
        }
        for a in proposals {
            self.propose(n, a);
        }
        for p in promotions {
            if self.leader() == Some(n) && !self.voters.contains(&p) {
                self.voters.push(p);
            }
        }
    }

    /// Frames the node's transport has to send go onto the simulated network.
    fn transmit(&mut self, n: NodeId) {
        let mut frames = Vec::new();
        if let Some(node) = self.nodes.get_mut(&n) {
            if node.stalled(self.now) {
                return;
            }
            let now = node.clock(self.now).mono;
            node.ep.handle_timeout(now);
            while let Some(t) = node.ep.poll_transmit() {
                frames.push(t);
            }
        }
        for f in frames {
            // frames to a slot no node runs in (hellos to a member not started yet) go nowhere
            if !self.nodes.contains_key(&f.to) {
                continue;
            }
            self.report.messages += 1;
            if !self.connected(n, f.to) || self.rng.random_bool(self.cfg.loss) {
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
                    from: n,
                    to: f.to,
                    bytes: f.bytes.clone(),
                });
            }
        }
    }

    /// Delivers every frame due by now; returns how many.
    fn deliver_due(&mut self) -> usize {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            let to_stalled = self
                .nodes
                .get(&self.net[i].to)
                .is_some_and(|n| n.stalled(now));
            if self.net[i].at <= now && !to_stalled {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|m| (m.at, m.order));
        let count = due.len();
        for m in due {
            // a partition that began while the frame was in flight drops it too
            if !self.connected(m.from, m.to) {
                self.report.messages_lost += 1;
                continue;
            }
            let Some(node) = self.nodes.get_mut(&m.to) else {
                continue;
            };
            let t = node.clock(now);
            if node.ep.handle_frame(t.mono, &m.bytes).is_err() {
                self.report.messages_refused += 1;
            }
            while let Some(ev) = node.ep.poll_event() {
                match ev {
                    SyncEvent::Records { from, batch } => {
                        node.member.on_records(t, from, batch.iter());
                    }
                    SyncEvent::Datagram { from, payload } => {
                        // no consensus messages travel here: the simulator plays consensus
                        if node.member.on_datagram(t, from, &payload).is_some() {
                            node.member.on_bad_datagram();
                        }
                    }
                    SyncEvent::PeerIncarnation { peer, .. } => {
                        node.member.on_peer_restarted(t, peer);
                    }
                    // the simulator gives every node its own id
                    SyncEvent::DuplicateId { .. } => {}
                }
            }
            let n = m.to;
            self.handle_outputs(n);
        }
        count
    }

    // ---- traffic ----

    /// Delivers a packet to every running member (all see the cluster's traffic, figure 2);
    /// returns the outcome at the member that handled it, if any.
    pub fn inject_packet(&mut self, bytes: &[u8]) -> Option<(NodeId, PacketOutcome)> {
        self.report.packets += 1;
        let now = self.now;
        let mut handled = None;
        let mut handlers = Vec::new();
        for (&id, node) in self.nodes.iter_mut() {
            if node.stalled(now) {
                continue;
            }
            let t = node.clock(now);
            let v = node.member.on_packet(t, bytes);
            if !matches!(v, PacketOutcome::NotOurs | PacketOutcome::NotReady) {
                handlers.push(id);
                handled = Some((id, v));
            }
        }
        if handlers.len() > 1 {
            self.violation(format!(
                "invariant 1: members {handlers:?} all handled one packet"
            ));
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
            (Kind::Tcp, Phase::New) => (tcp(TcpFlags::SYN, true), Phase::SynSent, false),
            (Kind::Tcp, Phase::SynSent) => (tcp(TcpFlags::SYN_ACK, false), Phase::SynAcked, false),
            (Kind::Tcp, Phase::SynAcked) => (tcp(TcpFlags::ACK, true), Phase::Established, false),
            (Kind::Tcp, Phase::Established) => {
                if self.rng.random_bool(0.1) {
                    (tcp(TcpFlags::FIN_ACK, true), Phase::Fin1, true)
                } else {
                    (tcp(TcpFlags::ACK, to_server), Phase::Established, true)
                }
            }
            (Kind::Tcp, Phase::Fin1) => (tcp(TcpFlags::FIN_ACK, false), Phase::Fin2, true),
            (Kind::Tcp, Phase::Fin2) => (tcp(TcpFlags::ACK, true), Phase::Done, true),
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
            if matches!(
                verdict,
                Some((_, PacketOutcome::Created | PacketOutcome::Hit))
            ) {
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
            if let Some((_, PacketOutcome::Hit)) = verdict {
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
            Some((_, PacketOutcome::TcpNoState | PacketOutcome::NoState))
        );
        let phase = match verdict {
            Some((_, PacketOutcome::Created | PacketOutcome::Hit)) => next,
            _ if established && missing => {
                if f.lost {
                    self.report.missing_in_window += 1;
                } else {
                    self.report.missing_state += 1;
                    let k = flow_key(&f);
                    let by = verdict.map(|(n, _)| n);
                    let d = self
                        .nodes
                        .values()
                        .next()
                        .map(|n| n.member.core().distributor().for_key(&k));
                    let seen: Vec<String> = self
                        .nodes
                        .iter()
                        .map(|(id, n)| match n.member.core().common().get(&k) {
                            Some(e) => {
                                format!("{id}: v{} by {} {:?}", e.version, e.creator, e.state)
                            }
                            None => format!("{id}: none"),
                        })
                        .collect();
                    self.violation(format!(
                        "established {k:?} ({d:?}, created {} ms) found no state at {by:?}; common tables: {seen:?}",
                        f.created.0
                    ));
                }
                Phase::Done
            }
            None => {
                // Nobody takes this identifier's traffic right now (a member starting or
                // fenced, an identifier between owners): the packet is lost and the endpoint
                // sends it again later, as TCP retransmits.
                self.report.unhandled += 1;
                if established {
                    self.report.unhandled_established += 1;
                }
                f.phase
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
        let now = self.now;
        for _ in 0..self.cfg.garbage_per_step {
            let n = ids[self.rng.random_range(0..ids.len())];
            let peer = ids[self.rng.random_range(0..ids.len())];
            let len = self.rng.random_range(0..80);
            let mut b = vec![0u8; len];
            self.rng.fill(&mut b[..]);
            if self.rng.random_bool(0.5) && !b.is_empty() {
                b[0] = 0x45; // Looks like IPv4, still garbage.
            }
            self.report.garbage += 1;
            let Some(node) = self.nodes.get_mut(&n).filter(|n| !n.stalled(now)) else {
                continue;
            };
            let t = node.clock(now);
            let before = node.member.core().common().len();
            let _ = node.member.on_packet(t, &b);
            // an unauthenticated frame on the sync port
            if node.ep.handle_frame(t.mono, &b).is_err() {
                self.report.messages_refused += 1;
            }
            // a garbage record from an authenticated peer (invariant 9): a record tag, then
            // random bytes
            let tags = [b'E', b'F', b'Q', b'D', b'K', b'H', b'R', 0];
            if !b.is_empty() {
                b[0] = tags[self.rng.random_range(0..tags.len())];
            }
            if b.first() != Some(&b'Q') && peer != n {
                let decode_errors = node.member.counters().decode_errors;
                node.member.on_record(t, peer, &b);
                if node.member.counters().decode_errors > decode_errors {
                    self.report.messages_refused += 1;
                }
            }
            if node.member.core().common().len() < before {
                self.violation(format!("{n}: garbage input lost state"));
            }
            self.handle_outputs(n);
        }
    }

    // ---- cluster events ----

    /// Crashes a node: its memory is gone; the survivors detect the failure and their leader
    /// gives its identifiers to others, who install them from their common tables. Entries it
    /// had not replicated to every survivor yet were inside the replication window (measured).
    pub fn crash(&mut self, victim: NodeId) {
        if !self.nodes.contains_key(&victim) {
            return;
        }
        self.mark_window(victim, None);
        self.nodes.remove(&victim);
        if self.leader_id == Some(victim) {
            self.leader_id = None;
        }
        self.report.crashes += 1;
        if trace() {
            eprintln!("t={} sim: crash {victim}", self.now.0);
        }
    }

    /// The flows whose latest state `victim` holds but not every other member (its
    /// replication window) are lost if it stops now: counted and excused from invariant 4.
    /// With `since` (a member cut off from a quorum that fenced itself: not gone), only the
    /// flows handled since then whose latest state no other member holds count.
    fn mark_window(&mut self, victim: NodeId, since: Option<Millis>) {
        let Some(dead) = self.nodes.get(&victim) else {
            return;
        };
        let now = self.now;
        let mut lost_keys = BTreeSet::new();
        let mut stale_keys = BTreeSet::new();
        // what it owns, and what it released in the last few epochs (a planned move whose
        // last entries and final state had not left it yet): the common table has those
        let recent: BTreeSet<DistributionId> = self
            .log
            .iter()
            .rev()
            .take(3)
            .flat_map(|a| a.ids_of(victim))
            .collect();
        let owned = dead
            .member
            .core()
            .node_table()
            .entries()
            .filter(|e| dead.member.core().owns(e.dist));
        let released = dead
            .member
            .core()
            .common()
            .iter()
            .filter(|e| recent.contains(&e.dist) && !dead.member.core().owns(e.dist));
        for e in owned.chain(released) {
            // the lowest version another member holds (None: one lacks it), and the highest
            let mut lowest: Option<u32> = None;
            let mut highest: Option<u32> = None;
            let mut missing = false;
            for (id, n) in &self.nodes {
                if *id == victim {
                    continue;
                }
                match n.member.core().common().get(&e.key).map(|x| x.version) {
                    None => missing = true,
                    Some(v) => {
                        lowest = Some(lowest.map_or(v, |b| b.min(v)));
                        highest = Some(highest.map_or(v, |b| b.max(v)));
                    }
                }
            }
            if since.is_some() {
                // cut off, not gone: what some other member holds reaches the next owner
                // (a failed owner's share is forwarded), so only what none holds is lost
                if highest.is_none() {
                    lost_keys.insert(e.key);
                } else if highest.is_some_and(|v| v < e.version) {
                    stale_keys.insert(e.key);
                }
            } else if missing || lowest.is_none() {
                lost_keys.insert(e.key);
            } else if lowest.is_some_and(|v| v < e.version) {
                stale_keys.insert(e.key);
            }
        }
        for f in &mut self.flows {
            if since.is_some_and(|t| f.last.0 < t.0) {
                continue;
            }
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

    /// The crash-window test's events: after 100 steps the first node crashes and at once
    /// starts again (it rejoins).
    pub fn crash_and_restart_first_after_100_steps(&mut self) {
        for _ in 0..100 {
            self.step();
        }
        let victim = *self.nodes().keys().next().expect("nodes");
        self.crash(victim);
        self.join(victim);
    }

    /// A node joins: a new one, or a crashed one restarting with a new incarnation (it
    /// resyncs, stays in standby until then, and the leader gives it a share once it is
    /// ready).
    pub fn join(&mut self, n: NodeId) {
        if self.nodes.contains_key(&n) || !self.slots().any(|s| s == n) {
            return;
        }
        self.report.joins += 1;
        if trace() {
            eprintln!("t={} sim: join {n}", self.now.0);
        }
        self.spawn(n, true);
    }

    fn with_leader(&mut self, f: impl FnOnce(&mut Member<SimTable>, &mut ChaCha8Rng)) {
        if let Some(l) = self.leader() {
            if let Some(node) = self.nodes.get_mut(&l) {
                f(&mut node.member, &mut self.rng);
            }
            self.handle_outputs(l);
        }
    }

    /// Asks the leader to rebalance by load.
    pub fn rebalance(&mut self) {
        self.with_leader(|m, _| m.request_rebalance());
    }

    fn random_event(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let pick = |rng: &mut ChaCha8Rng, v: &[NodeId]| v[rng.random_range(0..v.len())];
        let count = self.cfg.count.get();
        let kinds = if self.cfg.stall_max_ms > 0 { 8 } else { 7 };
        match self.rng.random_range(0..kinds) {
            // keep a majority of the voters running
            0 if ids.len() > 2 => {
                let v = pick(&mut self.rng, &ids);
                let running_voters = self
                    .voters
                    .iter()
                    .filter(|w| self.nodes.contains_key(w) && **w != v)
                    .count();
                if running_voters * 2 > self.voters.len() {
                    self.crash(v);
                }
            }
            1 => {
                if let Some(free) = self.slots().find(|n| !self.nodes.contains_key(n)) {
                    self.join(free);
                }
            }
            2 => self.rebalance(),
            3 => {
                let to = pick(&mut self.rng, &ids);
                self.with_leader(|m, rng| {
                    let moved: Vec<u64> = (0..3)
                        .map(|_| u64::from(rng.random_range(0..count)))
                        .collect();
                    let _ = m.request_move(&moved, to);
                });
            }
            // drain only while another member stays undrained
            4 => {
                let n = pick(&mut self.rng, &ids);
                let undrained = ids.len();
                self.with_leader(|m, _| {
                    if undrained.saturating_sub(m.drained().len()) > 1 {
                        let _ = m.set_drained(n, true);
                    }
                });
            }
            5 => {
                self.with_leader(|m, _| {
                    let drained: Vec<NodeId> = m.drained().iter().copied().collect();
                    for n in drained {
                        let _ = m.set_drained(n, false);
                    }
                });
            }
            6 if ids.len() > 1 => {
                let a = pick(&mut self.rng, &ids);
                let b = pick(&mut self.rng, &ids);
                if a != b {
                    self.report.partitions += 1;
                    self.blocked.insert(pair(a, b));
                    let heal = self.now.0 + self.rng.random_range(50..300);
                    self.heal_at = Some(Millis(heal));
                    if trace() {
                        eprintln!("t={} sim: partition {a}-{b} until {heal}", self.now.0);
                    }
                }
            }
            7 => {
                let v = pick(&mut self.rng, &ids);
                let len = self
                    .rng
                    .random_range(self.cfg.step_ms..=self.cfg.stall_max_ms.max(self.cfg.step_ms));
                self.stall(v, len);
            }
            _ => {}
        }
    }

    /// Freezes `n` for `ms` of simulated time, as `kill -STOP` does: it runs, receives and
    /// sends nothing meanwhile (what is sent to it waits), then carries on where it stopped
    /// with its clock jumped.
    pub fn stall(&mut self, n: NodeId, ms: u64) {
        let until = Millis(self.now.0 + ms);
        // what it has not replicated yet stays inside it while it is frozen: its peers may
        // take its identifiers without it (its replication window, as in a crash)
        self.mark_window(n, None);
        if let Some(node) = self.nodes.get_mut(&n) {
            node.stalled_until = Some(until);
            self.report.stalls += 1;
            if trace() {
                eprintln!("t={} sim: stall {n} for {ms} ms", self.now.0);
            }
        }
    }

    // ---- invariants ----

    /// Invariant 1 on the members' own state: no identifier is acted on by two members (a
    /// member acts on an identifier when it takes traffic, owns it by the allocation it
    /// applied, and the identifier is not waiting for its previous owner).
    pub fn check(&mut self) {
        self.report.checks += 1;
        let mut problems = Vec::new();
        for d in self.cfg.count.all() {
            let acting: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| acts_on_at(n, self.now, d))
                .map(|(&id, _)| id)
                .collect();
            if acting.len() > 1 {
                problems.push(format!("invariant 1: {d} acted on by {acting:?}"));
            }
        }
        if self.nodes.values().any(|n| n.member.is_fenced()) {
            self.report.fenced_steps += 1;
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Whether the cluster is at rest: every running member has applied the last agreed
    /// allocation, takes traffic and waits for no previous owner, and every identifier is
    /// owned by a running member.
    fn settled_allocation(&self) -> bool {
        let a = self.allocation();
        a.owners
            .iter()
            .all(|o| o.is_some_and(|n| self.nodes.contains_key(&n)))
            && self.nodes.values().all(|n| {
                n.member.takes_traffic()
                    && n.member.core().allocation().epoch == a.epoch
                    && n.member.handover().waiting_count() == 0
            })
            && self.nodes.keys().all(|n| a.owners.contains(&Some(*n)))
    }

    /// Stops traffic and faults (partitions healed, no loss), runs until the allocation is at
    /// rest and anti-entropy has had time to repair, then checks invariant 2 (each card holds
    /// exactly the entries of the identifiers its member owns) and invariant 3 (every common
    /// table equals the union of the node-specific tables).
    pub fn settle(&mut self) {
        self.report.settles += 1;
        self.blocked.clear();
        self.heal_at = None;
        let (loss, dup) = (self.cfg.loss, self.cfg.duplicate);
        self.cfg.loss = 0.0;
        self.cfg.duplicate = 0.0;
        self.quiet = true;
        // the operator undrains every member (a drained member owns nothing at rest)
        for node in self.nodes.values_mut() {
            let drained: Vec<NodeId> = node.member.drained().iter().copied().collect();
            for n in drained {
                let _ = node.member.set_drained(n, false);
            }
        }
        let mut calm = 0;
        for _ in 0..3000 {
            self.step();
            // at rest for two anti-entropy rounds (digests every second, repairs after them)
            calm = if self.settled_allocation() {
                calm + 1
            } else {
                0
            };
            if calm * self.cfg.step_ms >= 4_500 {
                break;
            }
        }
        self.quiet = false;
        self.cfg.loss = loss;
        self.cfg.duplicate = dup;
        if !self.settled_allocation() {
            let a = self.allocation();
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|(id, n)| {
                    format!(
                        "{id}: traffic {} fenced {} epoch {} waiting {}",
                        n.member.takes_traffic(),
                        n.member.is_fenced(),
                        n.member.core().allocation().epoch.0,
                        n.member.handover().waiting_count()
                    )
                })
                .collect();
            self.violation(format!(
                "the cluster did not come to rest (agreed epoch {}): {states:?}",
                a.epoch.0
            ));
        }
        let mut problems = Vec::new();
        let a = self.allocation();
        for (id, n) in &self.nodes {
            for d in self.cfg.count.all() {
                if a.owner(d) == Some(*id) && !acts_on(&n.member, d) {
                    problems.push(format!("{d}: agreed owner {id} does not act on it"));
                }
            }
            for p in n.member.core().check_tables() {
                problems.push(format!("invariant 2: {p}"));
            }
            // claim 12: every entry's identifier is the one its key gives
            for m in n.member.core().check_identifiers().mismatches {
                problems.push(format!(
                    "{id}: {:?} in the {} table under {} (its key gives {})",
                    m.key,
                    m.table.name(),
                    m.stored,
                    m.recomputed
                ));
            }
        }
        // Invariant 3.
        let mut truth: HashMap<FlowKey, Entry> = HashMap::new();
        for n in self.nodes.values() {
            let core = n.member.core();
            for e in core.node_table().entries() {
                if core.owns(e.dist) {
                    truth.insert(e.key, e.clone());
                }
            }
        }
        self.report.sessions = truth
            .values()
            .filter(|e| e.state == cluster_core::entry::ConnState::Session)
            .count() as u64;
        // an entry its owner cleared (expired: traffic stops while the cluster settles) at
        // this copy's version or later is on its way out: the owner's `Clear` is still in
        // flight on the replication stream, not lost
        let clearing = |e: &Entry| {
            a.owner(e.dist)
                .and_then(|o| self.nodes.get(&o))
                .and_then(|o| o.member.core().common().tombstone(&e.key))
                .is_some_and(|v| v >= e.version)
        };
        let mut clears_in_flight = 0;
        for (id, n) in &self.nodes {
            let c = n.member.core().common();
            let in_flight = c
                .iter()
                .filter(|e| !truth.contains_key(&e.key) && clearing(e))
                .count();
            clears_in_flight += in_flight as u64;
            if c.len() - in_flight != truth.len() {
                let extra: Vec<String> = c
                    .iter()
                    .filter(|e| !truth.contains_key(&e.key) && !clearing(e))
                    .take(3)
                    .map(|e| {
                        format!(
                            "{:?} {} {:?} owner {:?}",
                            e.key,
                            e.dist,
                            e.state,
                            a.owner(e.dist)
                        )
                    })
                    .collect();
                problems.push(format!(
                    "invariant 3: {id} common table has {} entries, node-specific union {} (not in any: {extra:?})",
                    c.len(),
                    truth.len()
                ));
                continue;
            }
            for e in truth.values() {
                if !c.get(&e.key).is_some_and(|x| x.same_replicated(e)) {
                    problems.push(format!("invariant 3: {id} differs on {:?}", e.key));
                    break;
                }
            }
        }
        self.report.clears_in_flight += clears_in_flight;
        for p in problems {
            self.violation(p);
        }
        self.check();
    }

    /// One step: time advances, due frames arrive, agreed allocations are delivered, every
    /// member ticks, traffic flows, maybe a cluster event, then the invariant checks.
    pub fn step(&mut self) {
        self.report.steps += 1;
        self.now = Millis(self.now.0 + self.cfg.step_ms);
        if self.heal_at.is_some_and(|t| t <= self.now) {
            self.blocked.clear();
            self.heal_at = None;
        }
        self.deliver_due();
        self.elect();
        self.deliver_agreed();
        let leader = self.leader();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &n in &ids {
            let voters = self.voters.clone();
            let Some(node) = self.nodes.get_mut(&n) else {
                continue;
            };
            if node.stalled(self.now) {
                continue;
            }
            let agreed = if node.agreed_len == 0 {
                Allocation::unowned(Epoch(0), self.cfg.count)
            } else {
                self.log[node.agreed_len - 1].clone()
            };
            let view = ConsensusView {
                is_leader: leader == Some(n),
                leader,
                agreed: &agreed,
                voters: &voters,
                conf_change_pending: false,
            };
            let t = node.clock(self.now);
            node.member.tick(t, &view);
            self.handle_outputs(n);
        }
        // a member that just fenced itself (its lease lapsed: cut off from a quorum, while it
        // may still have handled packets) holds what it could not replicate: its replication
        // window, as in a crash or a stall
        // (a member thawing from a stall fences too: the stall's start marked its window)
        let (now, recent) = (self.now, 2 * self.cfg.failure_ms);
        let fenced_now: Vec<NodeId> = self
            .nodes
            .iter_mut()
            .filter_map(|(id, n)| {
                let f = n.member.is_fenced();
                let newly = f && !n.was_fenced;
                n.was_fenced = f;
                let thawing = n.stalled_until.is_some_and(|u| now.since(u) <= recent);
                (newly && !thawing).then_some(*id)
            })
            .collect();
        // (only what it handled in the last two failure times: before that its peers heard it)
        let cut_off_since = Millis(now.0.saturating_sub(recent));
        for n in fenced_now {
            self.mark_window(n, Some(cut_off_since));
        }
        if !self.quiet {
            self.traffic();
            self.garbage();
            if self.rng.random_bool(self.cfg.event_rate) {
                self.random_event();
            }
        }
        let now = self.now;
        if now.since(self.last_digest) >= self.cfg.digest_every_ms {
            self.last_digest = now;
            let mut failures = Vec::new();
            for node in self.nodes.values_mut() {
                // simulated cards never leave the bus: a failure here is a simulator bug
                if let Err(e) = node.member.node_table_mut().maintain() {
                    failures.push(format!("{}: maintain: {e}", node.member.config().node));
                }
            }
            for f in failures {
                self.violation(f);
            }
        }
        for &n in &ids {
            self.transmit(n);
        }
        for node in self.nodes.values_mut() {
            let ready = node.member.takes_traffic()
                && node
                    .member
                    .core()
                    .allocation()
                    .ids_of(node.member.config().node)
                    .is_empty()
                    .not();
            if ready && !node.was_ready && node.joined {
                self.report.admitted += 1;
                node.joined = false;
            }
            node.was_ready = ready;
        }
        self.report.card_overflows = self
            .nodes
            .values()
            .map(|n| n.member.core().node_table().stats().overflowed)
            .sum::<u64>()
            .max(self.report.card_overflows);
        self.report.related_routed = self
            .nodes
            .values()
            .map(|n| n.member.core().stats().related_routed)
            .sum::<u64>()
            .max(self.report.related_routed);
        self.check();
    }

    /// Where the flows whose client port is `port` stand: each member's common-table version
    /// and state, whether its node-specific table has the entry, and the flow's phase.
    fn watch_line(&self, port: u16) -> String {
        let mut line = String::new();
        for f in self.flows.iter().filter(|f| f.client.port == port) {
            let k = flow_key(f);
            for (id, n) in &self.nodes {
                let common = n
                    .member
                    .core()
                    .common()
                    .get(&k)
                    .map(|e| (e.version, e.state));
                let card = n.member.core().node_table().get(&k).is_some();
                line.push_str(&format!(" {id}:{common:?}/{card}"));
            }
            line.push_str(&format!(" phase {:?};", f.phase));
        }
        line
    }

    /// Runs `steps` steps, settling every `settle_every` steps and at the end. With
    /// `SIM_WATCH_PORT=N` in the environment, every change of the flows whose client port is
    /// `N` goes to stderr (where each member's copy stands), to follow one connection of a
    /// violation `sim_trace` reproduces.
    pub fn run(&mut self, steps: u64, settle_every: u64) -> &SimReport {
        let watch: Option<u16> = std::env::var("SIM_WATCH_PORT")
            .ok()
            .and_then(|v| v.parse().ok());
        let mut last = String::new();
        for i in 1..=steps {
            self.step();
            if let Some(port) = watch {
                let now = self.watch_line(port);
                if now != last {
                    eprintln!("t={} watch{now}", self.now.0);
                    last = now;
                }
            }
            if settle_every > 0 && i % settle_every == 0 {
                self.settle();
            }
        }
        self.settle();
        &self.report
    }
}

/// Whether `SIM_TRACE` is set: members' log lines and cluster events go to stderr.
fn trace() -> bool {
    std::env::var_os("SIM_TRACE").is_some()
}

/// Whether `m` acts on identifier `d` now.
fn acts_on<T: NodeSpecificTable>(m: &Member<T>, d: DistributionId) -> bool {
    m.takes_traffic() && m.core().owns(d) && !m.handover().is_waiting(d)
}

/// Whether `n` would act on identifier `d` if a packet reached it at `now` (a stalled member
/// too: the packet waiting for it when it thaws meets the state it has, with its clock
/// jumped).
fn acts_on_at(n: &SimNode, now: Millis, d: DistributionId) -> bool {
    acts_on(&n.member, d) && n.member.takes_traffic_at(n.clock(now).mono)
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
