//! Unit tests of the sans-I/O member: one or several members driven by hand with simulated
//! time. The [`Cluster`] harness moves records and heartbeats between members (through their
//! wire bytes), plays consensus for proposals, and can cut a member off, hold one direction of
//! a replication stream, or block heartbeats.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use driver::esp::Direction;
use zeroize::Zeroizing;

use super::esp::{self, EspPath, SaMaterial};
use super::liveness::stamp_of;
use super::sas::SaCommandError;
use super::{ConsensusView, Member, MemberConfig, Output, PacketOutcome, Role, Time, To};
use crate::alloc_policy::{operator_move, Allocation};
use crate::distribution::{ClusterSecret, Distributor};
use crate::entry::FlowKey;
use crate::events::{Event, Message};
use crate::ids::{DistributionId, Epoch, IdCount, NodeId};
use crate::node::{Node, NodeConfig};
use crate::node_table::{NodeSpecificTable, SoftwareTable};
use crate::packet::{build, parse_packet, Framing};
use crate::record::{Datagram, Heartbeat, Record};

const IDS: u32 = 16;
const SECRET: [u8; 16] = [7; 16];
const BASE_UNIX_MS: u64 = 1_700_000_000_000;
const STEP: Duration = Duration::from_millis(10);
const FAILURE: Duration = Duration::from_millis(300);
const HEARTBEAT: Duration = Duration::from_millis(50);
const SEQ_JUMP: u64 = 1000;

mod balance;

type M = Member<SoftwareTable>;

const OUT: Direction = Direction::Outbound;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(mono: Duration) -> Time {
    Time {
        mono,
        unix_ms: BASE_UNIX_MS + mono.as_millis() as u64,
    }
}

fn count() -> IdCount {
    IdCount::new(IDS).unwrap()
}

fn core(n: u16) -> Node<SoftwareTable> {
    let mut c = NodeConfig::new(NodeId(n), ClusterSecret::new(SECRET));
    c.count = count();
    Node::new(c, SoftwareTable::new(count()))
}

fn mcfg(n: u16, all: &[u16], failure: Duration) -> MemberConfig {
    let all: Vec<NodeId> = all.iter().map(|p| NodeId(*p)).collect();
    MemberConfig::all_members(NodeId(n), &all, count(), failure, HEARTBEAT, SEQ_JUMP)
}

fn member(n: u16, all: &[u16]) -> M {
    Member::new(mcfg(n, all, FAILURE), core(n))
}

fn ip(x: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, x))
}

fn bytes(r: &Record) -> Vec<u8> {
    let mut v = Vec::new();
    r.emit(&mut v);
    v
}

fn dist_of(pkt: &[u8]) -> DistributionId {
    let dist = Distributor::new(&ClusterSecret::new(SECRET), count());
    parse_packet(pkt, Framing::Ip)
        .unwrap()
        .flow(&dist)
        .unwrap()
        .2
}

/// The first `n` UDP flows (client 10.0.0.1, varying source port) whose identifier is `d`.
fn udp_flows_in(d: DistributionId, n: usize) -> Vec<Vec<u8>> {
    (1024u16..)
        .map(|port| build::udp(ip(1), port, ip(200), 53, b"q").unwrap())
        .filter(|p| dist_of(p) == d)
        .take(n)
        .collect()
}

/// The `nth` UDP flow whose identifier is `d`.
fn udp_in(d: DistributionId, nth: usize) -> Vec<u8> {
    udp_flows_in(d, nth + 1).pop().unwrap()
}

/// An SA (peer, destination, SPI) whose identifier is `d`.
fn sa_in(d: DistributionId) -> (IpAddr, IpAddr, u32) {
    let dist = Distributor::new(&ClusterSecret::new(SECRET), count());
    let dst = ip(250);
    (1..=255u8)
        .map(|x| IpAddr::V4(Ipv4Addr::new(192, 0, 2, x)))
        .find(|peer| dist.for_ipsec_peers(*peer, dst) == d)
        .map(|peer| (peer, dst, 0x1000 + u32::from(d.0)))
        .unwrap()
}

/// Member `n` of the cluster `all` that has applied epoch 1, in which node `owner` owns every
/// identifier (agreed at time zero); returns it and that allocation.
fn agreed_member(n: u16, all: &[u16], owner: u16) -> (M, Allocation) {
    let mut m = member(n, all);
    let alloc = all_to(owner, 1);
    m.on_agreed(at(Duration::ZERO), &alloc, || Duration::ZERO);
    (m, alloc)
}

/// The view of a member that does not lead: `leader` leads, `agreed` is the last committed
/// allocation, `voters` are the agreed voters, and no membership change is pending.
fn follower_view<'a>(
    leader: u16,
    agreed: &'a Allocation,
    voters: &'a [NodeId],
) -> ConsensusView<'a> {
    ConsensusView {
        is_leader: false,
        leader: Some(NodeId(leader)),
        agreed,
        voters,
        conf_change_pending: false,
    }
}

fn logs(outs: &[Output]) -> Vec<&str> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Log(l) => Some(l.as_str()),
            _ => None,
        })
        .collect()
}

/// `m` hears a heartbeat from `from` that echoes the latest stamp `m` sent it (a peer that
/// hears `m`: it grants `m` its lease).
fn hear(m: &mut M, t: Time, from: u16, ready: bool, applied: u64) {
    let from = NodeId(from);
    let echo = m
        .peers()
        .find(|(n, _)| *n == from)
        .map_or(0, |(_, l)| l.stamp_out);
    let h = Heartbeat {
        echo,
        stamp: stamp_of(t.mono),
        ..hb(ready, applied)
    };
    m.on_heartbeat(t, from, h);
}

fn hb(ready: bool, applied: u64) -> Heartbeat {
    Heartbeat {
        ready,
        witness: false,
        fenced: false,
        applied: Epoch(applied),
        ..Heartbeat::default()
    }
}

fn all_to(n: u16, epoch: u64) -> Allocation {
    Allocation::all_to(NodeId(n), Epoch(epoch), count())
}

// ----- the harness -----

struct Cluster {
    m: BTreeMap<u16, M>,
    now: Duration,
    /// Agreed allocations in order; `history[0]` is epoch 0 (no owners).
    history: Vec<Allocation>,
    /// Per member: the index in `history` of the last allocation it was given.
    known: BTreeMap<u16, usize>,
    leader: u16,
    voters: Vec<NodeId>,
    /// Members cut off: nothing is delivered to or from them, consensus does not hear them.
    cut: BTreeSet<u16>,
    /// Replication streams (from, to) held back: their records queue in `held`, in order.
    hold: BTreeSet<(u16, u16)>,
    held: Vec<(u16, u16, Vec<u8>)>,
    /// Heartbeats (from, to) dropped.
    block_hb: BTreeSet<(u16, u16)>,
    /// Members not ticked (a frozen process).
    frozen: BTreeSet<u16>,
    /// Consensus drops proposals (leadership lost, a full queue).
    drop_proposals: bool,
    /// Members whose consensus log lags: agreed allocations reach them only through `heal`.
    lag: BTreeSet<u16>,
    /// Pairs (from, to) that have met: the first frame raises `on_peer_restarted` (as the
    /// sync endpoint's first `PeerIncarnation` does).
    met: BTreeSet<(u16, u16)>,
    proposals: Vec<(Duration, Allocation)>,
    /// When each epoch was agreed.
    agreed_at: BTreeMap<u64, Duration>,
    logs: Vec<(Duration, u16, String)>,
    /// Held packets handed back: (member, token, outcome).
    released: Vec<(u16, u64, PacketOutcome)>,
}

impl Cluster {
    fn new(nodes: &[u16], failure: Duration) -> Self {
        let m = nodes
            .iter()
            .map(|n| (*n, Member::new(mcfg(*n, nodes, failure), core(*n))))
            .collect();
        Cluster {
            m,
            now: Duration::ZERO,
            history: vec![Allocation::unowned(Epoch(0), count())],
            known: nodes.iter().map(|n| (*n, 0)).collect(),
            leader: nodes[0],
            voters: nodes.iter().map(|n| NodeId(*n)).collect(),
            cut: BTreeSet::new(),
            hold: BTreeSet::new(),
            held: Vec::new(),
            block_hb: BTreeSet::new(),
            frozen: BTreeSet::new(),
            drop_proposals: false,
            lag: BTreeSet::new(),
            met: BTreeSet::new(),
            proposals: Vec::new(),
            agreed_at: BTreeMap::new(),
            logs: Vec::new(),
            released: Vec::new(),
        }
    }

    fn t(&self) -> Time {
        at(self.now)
    }

    fn m(&mut self, n: u16) -> &mut M {
        self.m.get_mut(&n).unwrap()
    }

    fn agreed(&self) -> &Allocation {
        self.history.last().unwrap()
    }

    fn cut_between(&self, a: u16, b: u16) -> bool {
        self.cut.contains(&a) || self.cut.contains(&b)
    }

    /// One step of simulated time: every member ticks, then everything is delivered.
    fn step(&mut self) {
        self.now += STEP;
        let t = self.t();
        let ids: Vec<u16> = self.m.keys().copied().collect();
        for id in ids {
            if self.frozen.contains(&id) {
                continue;
            }
            let agreed = self.history[self.known[&id]].clone();
            let voters = self.voters.clone();
            let view = ConsensusView {
                is_leader: id == self.leader,
                leader: Some(NodeId(self.leader)),
                agreed: &agreed,
                voters: &voters,
                conf_change_pending: false,
            };
            self.m(id).tick(t, &view);
        }
        self.route();
    }

    fn run_for(&mut self, d: Duration, mut check: impl FnMut(&Cluster)) {
        let end = self.now + d;
        while self.now < end {
            self.step();
            check(self);
        }
    }

    /// Runs until `cond` holds (at most `limit` of simulated time).
    fn run_until(&mut self, limit: Duration, cond: impl Fn(&Cluster) -> bool) {
        let end = self.now + limit;
        while !cond(self) {
            assert!(self.now < end, "condition not reached by {:?}", self.now);
            self.step();
        }
    }

    /// Delivers every member's outputs until nobody has anything more to say.
    fn route(&mut self) {
        loop {
            let mut outs = Vec::new();
            for (id, m) in self.m.iter_mut() {
                outs.extend(m.drain_outputs().map(|o| (*id, o)));
            }
            if outs.is_empty() {
                return;
            }
            for (from, o) in outs {
                self.deliver(from, o);
            }
        }
    }

    fn meet(&mut self, from: u16, to: u16) {
        if self.met.insert((from, to)) {
            let t = self.t();
            self.m(to).on_peer_restarted(t, NodeId(from));
        }
    }

    fn deliver(&mut self, from: u16, o: Output) {
        let t = self.t();
        match o {
            Output::Released { token, outcome, .. } => self.released.push((from, token, outcome)),
            Output::Record { to, record } => {
                let targets: Vec<u16> = match to {
                    To::Peers => self.m[&from].replication_peers().map(|n| n.0).collect(),
                    To::Node(n) => vec![n.0],
                };
                let b = bytes(&record);
                for to in targets {
                    if !self.m.contains_key(&to) || self.cut_between(from, to) {
                        continue;
                    }
                    if self.hold.contains(&(from, to)) {
                        self.held.push((from, to, b.clone()));
                        continue;
                    }
                    self.meet(from, to);
                    self.m(to).on_records(t, NodeId(from), [b.as_slice()]);
                }
            }
            Output::Heartbeat { to, heartbeat } => {
                let to = to.0;
                if !self.m.contains_key(&to)
                    || self.cut_between(from, to)
                    || self.block_hb.contains(&(from, to))
                {
                    return;
                }
                self.meet(from, to);
                let wire = heartbeat.to_bytes();
                let Ok(Datagram::Heartbeat(h)) = Datagram::parse(&wire) else {
                    panic!("heartbeat does not round-trip");
                };
                self.m(to).on_heartbeat(t, NodeId(from), h);
            }
            Output::Datagram { to, bytes } => {
                let to = to.0;
                if self.m.contains_key(&to) && !self.cut_between(from, to) {
                    self.meet(from, to);
                    self.m(to).on_datagram(t, NodeId(from), &bytes);
                }
            }
            Output::Propose(a) => {
                self.proposals.push((self.now, a.clone()));
                if !self.drop_proposals
                    && !self.cut.contains(&from)
                    && a.epoch.0 == self.agreed().epoch.0 + 1
                {
                    self.agree(a);
                }
            }
            Output::PromoteVoter(_) | Output::DiscardBacklog(_) => {}
            Output::Log(l) => self.logs.push((self.now, from, l)),
        }
    }

    /// Consensus commits `a`: every member that is not cut off applies it.
    fn agree(&mut self, a: Allocation) {
        let t = self.t();
        self.agreed_at.insert(a.epoch.0, self.now);
        self.history.push(a.clone());
        let idx = self.history.len() - 1;
        let ids: Vec<u16> = self.m.keys().copied().collect();
        for id in ids {
            if !self.cut.contains(&id) && !self.lag.contains(&id) {
                self.m(id).on_agreed(t, &a, || Duration::ZERO);
                self.known.insert(id, idx);
            }
        }
    }

    /// Reconnects `n` and gives it the allocations it missed (its consensus log catches up).
    fn heal(&mut self, n: u16) {
        self.cut.remove(&n);
        let t = self.t();
        let from = self.known[&n] + 1;
        let m = self.m.get_mut(&n).unwrap();
        for a in &self.history[from..] {
            m.on_agreed(t, a, || Duration::ZERO);
        }
        self.known.insert(n, self.history.len() - 1);
        self.route();
    }

    /// Restarts member `n` at once: a new process with an empty state (its consensus log
    /// gives it the agreed allocations again); its peers see a new incarnation.
    fn restart(&mut self, n: u16) {
        let all: Vec<u16> = self.m.keys().copied().collect();
        let mut c = NodeConfig::new(NodeId(n), ClusterSecret::new(SECRET));
        c.count = count();
        // the daemon's incarnations grow across restarts
        c.incarnation = 2 + u32::try_from(self.now.as_millis()).unwrap();
        let fresh = Member::new(
            mcfg(n, &all, FAILURE),
            Node::new(c, SoftwareTable::new(count())),
        );
        self.m.insert(n, fresh);
        self.met.retain(|(f, t)| *f != n && *t != n);
        self.held.retain(|(f, t, _)| *f != n && *t != n);
        self.known.insert(n, 0);
        self.heal(n);
    }

    /// Delivers the records held back on the stream (from, to), in order, and stops holding.
    fn release(&mut self, from: u16, to: u16) {
        self.hold.remove(&(from, to));
        let t = self.t();
        let held = std::mem::take(&mut self.held);
        for (f, d, b) in held {
            if (f, d) == (from, to) {
                self.m(to).on_records(t, NodeId(from), [b.as_slice()]);
            } else {
                self.held.push((f, d, b));
            }
        }
        self.route();
    }

    /// Starts the cluster: runs until an allocation is agreed and every member is ready,
    /// has applied it and takes traffic.
    /// Node 1 (the leader in these tests) asks that `d` move to node 3.
    fn move_to_3(&mut self, d: DistributionId) {
        self.m(1)
            .request_move(&[u64::from(d.0)], NodeId(3))
            .unwrap();
    }

    fn settle(&mut self) {
        self.run_until(ms(5000), |c| {
            let e = c.agreed().epoch;
            e.0 >= 1
                && c.m
                    .values()
                    .all(|m| m.takes_traffic() && m.core().allocation().epoch == e && m.is_ready())
        });
    }

    fn logged(&self, n: u16, needle: &str) -> Option<Duration> {
        self.logs
            .iter()
            .find(|(_, id, l)| *id == n && l.contains(needle))
            .map(|(t, _, _)| *t)
    }

    /// Identifiers owned and acting on two members at once (invariant 1 in effect).
    fn double_actors(&self) -> Vec<DistributionId> {
        count()
            .all()
            .filter(|d| {
                self.m
                    .values()
                    .filter(|m| {
                        m.takes_traffic() && m.core().owns(*d) && !m.handover().is_waiting(*d)
                    })
                    .count()
                    > 1
            })
            .collect()
    }
}

/// A settled cluster of three members (1, 2 and 3) with the usual failure time.
fn three_settled() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3], FAILURE);
    c.settle();
    c
}

/// [`three_settled`] and an identifier node 2 owns.
fn three_and_an_id_of_2() -> (Cluster, DistributionId) {
    let c = three_settled();
    let d = c.agreed().ids_of(NodeId(2))[0];
    (c, d)
}

// ----- 1. standby -----

/// A new member installs nothing while its common table fills and answers packets "not
/// ready" until it is warmed up and the live peer it asked has answered; then it installs the
/// entries of the identifiers it owns.
#[test]
fn standby_until_warmed_up_and_resync_answered() {
    let mut b = member(2, &[1, 2]);
    // node 1's state core creates 40 UDP flows (it owns everything at epoch 1)
    let mut n1 = core(1);
    let a1 = all_to(1, 1);
    n1.apply_allocation(crate::ids::Millis(0), &a1).unwrap();
    let flows: Vec<Vec<u8>> = (0..40u16)
        .map(|i| build::udp(ip(1), 2000 + i, ip(200), 53, b"q").unwrap())
        .collect();
    for f in &flows {
        n1.handle_packet(crate::ids::Millis(0), f);
    }
    let t0 = at(Duration::ZERO);
    b.on_agreed(t0, &a1, || Duration::ZERO);
    let recs: Vec<Vec<u8>> = n1
        .drain_outbox()
        .into_iter()
        .map(|o| bytes(&Record::Event(o.message)))
        .collect();
    b.on_records(t0, NodeId(1), recs.iter().map(|r| r.as_slice()));
    assert_eq!(b.core().common().len(), 40);
    // epoch 2 gives node 2 the first 8 identifiers (node 1 is not alive yet: nothing waits)
    let mine: Vec<DistributionId> = (0..8).map(DistributionId).collect();
    let a2 = operator_move(&a1, &mine, NodeId(2));
    b.on_agreed(t0, &a2, || Duration::ZERO);
    let want: usize = mine.iter().map(|d| b.core().select(*d).count()).sum();
    assert!(want > 0 && want < 40, "{want}");
    assert_eq!(b.core().node_table().len(), 0, "standby installs nothing");
    let own_flow = flows.iter().find(|f| mine.contains(&dist_of(f))).unwrap();
    let other_flow = flows.iter().find(|f| !mine.contains(&dist_of(f))).unwrap();

    // node 1 is heard from and asked for a resync
    let t = at(ms(10));
    b.on_peer_restarted(t, NodeId(1));
    let outs: Vec<Output> = b.drain_outputs().collect();
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Record {
            to: To::Node(NodeId(1)),
            record: Record::ResyncRequest
        }
    )));
    let view_alloc = a2.clone();
    let voters = [NodeId(1), NodeId(2)];
    let view = follower_view(1, &view_alloc, &voters);
    let mut now = ms(10);
    while now < ms(600) {
        now += STEP;
        let t = at(now);
        if now.as_millis().is_multiple_of(50) {
            hear(&mut b, t, 1, true, 2);
        }
        b.tick(t, &view);
        let _ = b.drain_outputs();
        assert!(!b.is_ready(), "at {now:?}: node 1's answer is outstanding");
        assert_eq!(b.on_packet(t, own_flow), PacketOutcome::NotReady);
        assert_eq!(b.core().node_table().len(), 0);
    }
    assert!(now >= FAILURE + HEARTBEAT, "past the warm-up");
    // node 1's answer ends (its entries came earlier): ready at the next tick
    b.on_records(at(now), NodeId(1), [bytes(&Record::ResyncDone).as_slice()]);
    assert!(!b.is_ready());
    now += STEP;
    b.tick(at(now), &view);
    assert!(b.is_ready() && b.takes_traffic());
    let outs: Vec<Output> = b.drain_outputs().collect();
    let line = format!("installed {want} entries of the identifiers it owns");
    assert!(logs(&outs).contains(&line.as_str()), "{:?}", logs(&outs));
    assert_eq!(b.core().node_table().len(), want);
    assert!(
        b.core().check_tables().is_empty(),
        "{:?}",
        b.core().check_tables()
    );
    // the heartbeat now says ready
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Heartbeat { heartbeat, .. } if heartbeat.ready && heartbeat.applied == Epoch(2)
    )));
    assert_eq!(b.on_packet(at(now), own_flow), PacketOutcome::Hit);
    assert_eq!(b.on_packet(at(now), other_flow), PacketOutcome::NotOurs);
}

/// Without an outstanding resync, readiness comes exactly at the first tick at or after
/// failure + heartbeat time.
#[test]
fn standby_ends_exactly_when_warmed_up() {
    let (mut b, a) = agreed_member(2, &[1, 2], 2);
    let voters = [NodeId(2)];
    let view = follower_view(2, &a, &voters);
    let pkt = build::udp(ip(1), 1111, ip(200), 53, b"q").unwrap();
    let mut now = Duration::ZERO;
    while now < FAILURE + HEARTBEAT - STEP {
        now += STEP;
        b.tick(at(now), &view);
        assert!(!b.is_ready(), "{now:?}");
        assert_eq!(b.on_packet(at(now), &pkt), PacketOutcome::NotReady);
    }
    now += STEP;
    assert_eq!(now, FAILURE + HEARTBEAT);
    b.tick(at(now), &view);
    assert!(b.is_ready());
    assert_eq!(b.on_packet(at(now), &pkt), PacketOutcome::Created);
    // no resync ran: none is reported
    assert_eq!(b.last_resync(), None);
}

/// A repair request is answered with a snapshot only once the member's common table speaks
/// for the identifier: a snapshot replaces what the asker holds, and a restarted member still in
/// standby, whose log names it the owner, answered with an empty one and wiped its peers'
/// copies (the stall sweep's seed 290 with 5 members).
#[test]
fn a_member_in_standby_answers_no_repair_request() {
    let (mut b, a) = agreed_member(2, &[1, 2], 2);
    let voters = [NodeId(2)];
    let view = follower_view(2, &a, &voters);
    let ask = bytes(&Record::Event(Message {
        sender: NodeId(1),
        incarnation: 1,
        seq: 0,
        event: Event::RepairRequest {
            epoch: Epoch(1),
            ids: vec![DistributionId(3)],
        },
    }));
    let snapshots = |outs: &[Output]| {
        outs.iter()
            .filter(|o| {
                matches!(o, Output::Record { to: To::Node(NodeId(1)), record: Record::Event(m) }
                    if matches!(m.event, Event::Snapshot { dist: DistributionId(3), .. }))
            })
            .count()
    };
    let mut now = STEP;
    b.on_records(at(now), NodeId(1), [ask.as_slice()]);
    b.tick(at(now), &view);
    assert!(!b.is_ready());
    assert_eq!(snapshots(&b.drain_outputs().collect::<Vec<_>>()), 0);
    assert_eq!(b.counters().repairs_refused, 1);
    while !b.is_ready() {
        now += STEP;
        b.tick(at(now), &view);
        assert!(now <= FAILURE + HEARTBEAT, "ready after the warm-up");
    }
    let _ = b.drain_outputs();
    b.on_records(at(now), NodeId(1), [ask.as_slice()]);
    b.tick(at(now), &view);
    assert_eq!(snapshots(&b.drain_outputs().collect::<Vec<_>>()), 1);
    assert_eq!(b.counters().repairs_refused, 1);
}

// ----- 2. resync -----

/// A starting member asks a known peer for a resync; the answer carries the peer's owned
/// entries, SA states and keys, then `F` with its applied epoch, then `D`.
#[test]
fn resync_answer_order_and_report() {
    let (mut a, a1, mut now, spi) = owner_with_flows(&[1, 2], 20);
    assert_eq!(a.core().common().len(), 21, "20 flows and the SA's entry");

    let mut b = member(2, &[1, 2]);
    let t_req = at(now);
    b.on_peer_restarted(t_req, NodeId(1));
    let q: Vec<Output> = b.drain_outputs().collect();
    assert_eq!(q.len(), 1);
    let Output::Record {
        to: To::Node(NodeId(1)),
        record: Record::ResyncRequest,
    } = &q[0]
    else {
        panic!("{q:?}");
    };
    now += ms(50);
    let t_ans = at(now);
    a.on_records(t_ans, NodeId(2), [bytes(&Record::ResyncRequest).as_slice()]);
    let ans: Vec<Record> = a
        .drain_outputs()
        .filter_map(|o| match o {
            Output::Record {
                to: To::Node(NodeId(2)),
                record,
            } => Some(record),
            _ => None,
        })
        .collect();
    let n = ans.len();
    assert!(n >= 24, "{ans:?}");
    assert_eq!(ans[n - 2], Record::Final(Epoch(1)));
    assert_eq!(ans[n - 1], Record::ResyncDone);
    let mut keys = BTreeSet::new();
    let mut sa_states = 0;
    let mut sa_keys = 0;
    for r in &ans[..n - 2] {
        match r {
            Record::Event(m) => {
                assert_eq!(m.sender, NodeId(1));
                match &m.event {
                    Event::Add(e) => {
                        assert!(keys.insert(e.key));
                    }
                    Event::SaState(s) => {
                        assert_eq!(s.spi, spi);
                        sa_states += 1;
                    }
                    other => panic!("unexpected event in the answer: {other:?}"),
                }
            }
            Record::SaKey { spi: s, key } => {
                assert_eq!(*s, spi);
                let m = SaMaterial::from_record_bytes(key).unwrap();
                assert_eq!((m.dir, m.key.key_bytes()), (OUT, &[0x42; 32][..]));
                sa_keys += 1;
            }
            other => panic!("unexpected record before F: {other:?}"),
        }
    }
    let owned: BTreeSet<FlowKey> = a.core().common().iter().map(|e| e.key).collect();
    assert_eq!(keys, owned, "every owned entry, once");
    assert_eq!((sa_states, sa_keys), (1, 1));

    // the answer fills b's common table; b reports the resync once it is ready
    b.on_agreed(t_ans, &a1, || Duration::ZERO);
    let wire: Vec<Vec<u8>> = ans.iter().map(bytes).collect();
    b.on_records(t_ans, NodeId(1), wire.iter().map(|w| w.as_slice()));
    assert_eq!(b.counters().decode_errors, 0);
    assert_eq!(b.counters().apply_errors, 0);
    assert_eq!(b.core().common().len(), 21);
    assert!(b.has_sa_key(spi));
    assert_eq!(b.sa_states().map(|s| s.spi).collect::<Vec<_>>(), vec![spi]);
    assert_eq!(b.last_resync(), None, "not ready yet");
    let voters = [NodeId(1), NodeId(2)];
    let view = follower_view(1, &a1, &voters);
    let mut bt = now;
    while !b.is_ready() {
        bt += STEP;
        assert!(bt < Duration::from_secs(30), "not ready by {:?}", bt);
        hear(&mut b, at(bt), 1, true, 1);
        b.tick(at(bt), &view);
    }
    assert_eq!(b.last_resync(), Some((21, ms(50))));
    assert_eq!(b.core().node_table().len(), 0, "node 2 owns nothing");
}

/// Member 1 of `all`, owner of every identifier, ready, with `flows` UDP entries and one SA;
/// returns it, the allocation, the time, and the SA's SPI.
fn owner_with_flows(all: &[u16], flows: u16) -> (M, Allocation, Duration, u32) {
    let (mut a, a1) = agreed_member(1, all, 1);
    let voters = [NodeId(1)];
    let view = follower_view(1, &a1, &voters);
    let now = tick_alone_until(&mut a, &view, M::is_ready);
    for i in 0..flows {
        let p = build::udp(ip(1), 3000 + i, ip(200), 53, b"q").unwrap();
        assert_eq!(a.on_packet(at(now), &p), PacketOutcome::Created);
    }
    let (peer, dst, spi) = sa_in(DistributionId(5));
    a.sa_add(at(now), peer, dst, spi, OUT, Zeroizing::new(vec![0x42; 32]))
        .unwrap();
    let _ = a.drain_outputs();
    (a, a1, now, spi)
}

/// What one turn of a member sent: per node, the records (in order), and whether a
/// heartbeat went out.
#[derive(Default)]
struct Turn {
    records: BTreeMap<u16, Vec<Record>>,
    heartbeat: bool,
}

impl Turn {
    fn of(m: &mut M) -> Turn {
        let mut t = Turn::default();
        for o in m.drain_outputs() {
            match o {
                Output::Record {
                    to: To::Node(n),
                    record,
                } => t.records.entry(n.0).or_default().push(record),
                Output::Heartbeat { .. } => t.heartbeat = true,
                _ => {}
            }
        }
        t
    }

    /// The entries (`Add` events) sent to `n` this turn.
    fn adds(&self, n: u16) -> usize {
        self.records.get(&n).map_or(0, |rs| {
            rs.iter()
                .filter(|r| {
                    matches!(
                        r,
                        Record::Event(Message {
                            event: Event::Add(_),
                            ..
                        })
                    )
                })
                .count()
        })
    }

    fn done_to(&self, n: u16) -> bool {
        self.records
            .get(&n)
            .is_some_and(|rs| rs.last() == Some(&Record::ResyncDone))
    }
}

/// Ticks `a` (peers `live` heard at every step) until its answers are all done, at most
/// `limit` turns; returns the turns after the first.
fn answer_turns(
    a: &mut M,
    now: &mut Duration,
    view: &ConsensusView<'_>,
    live: &[u16],
) -> Vec<Turn> {
    let mut turns = Vec::new();
    for _ in 0..10_000 {
        if !a.answering() {
            return turns;
        }
        assert_eq!(
            a.next_timeout(),
            Duration::ZERO,
            "an answer continues at the next turn"
        );
        *now += STEP;
        let t = at(*now);
        for p in live {
            a.on_heartbeat(t, NodeId(*p), hb(false, 0));
        }
        a.tick(t, view);
        turns.push(Turn::of(a));
    }
    panic!("the answers did not end");
}

/// A resync answer goes out in slices of at most the slice size, one per turn, with
/// heartbeats between them; all slices together carry the same records as an answer given at
/// once (every owned entry once, the SA's key and state), and `F` and `D` come after the last
/// entry.
#[test]
fn resync_answer_is_sliced_complete_and_heartbeats_go_between() {
    let (mut a, a1, mut now, spi) = owner_with_flows(&[1, 2], 300);
    let voters = [NodeId(1), NodeId(2)];
    let view = follower_view(1, &a1, &voters);
    let q = bytes(&Record::ResyncRequest);

    // at once (a slice as large as the table): the reference answer
    a.resync.slice = usize::MAX;
    a.on_records(at(now), NodeId(2), [q.as_slice()]);
    assert!(!a.answering());
    let whole = Turn::of(&mut a).records.remove(&2).unwrap();
    assert_eq!(
        whole.len(),
        301 + 2 + 2,
        "300 flows, the SA's entry, key, state, F, D"
    );

    // in slices of 16
    a.resync.slice = 16;
    a.on_records(at(now), NodeId(2), [q.as_slice()]);
    let first = Turn::of(&mut a);
    assert_eq!(first.adds(2), 16);
    assert!(!first.done_to(2));
    assert!(a.answering());
    let turns = answer_turns(&mut a, &mut now, &view, &[2]);
    assert_eq!(
        turns.len(),
        301_usize.div_ceil(16) - 1,
        "one slice per turn"
    );
    let mut sliced = first.records[&2].clone();
    let last = turns.len() - 1;
    for (i, t) in turns.iter().enumerate() {
        assert!(t.adds(2) <= 16, "turn {i}: {} entries", t.adds(2));
        assert_eq!(t.done_to(2), i == last, "turn {i}");
        if i < last {
            assert_eq!(t.adds(2), 16, "turn {i}");
        }
        sliced.extend(t.records.get(&2).cloned().unwrap_or_default());
    }
    let beats = turns[..last].iter().filter(|t| t.heartbeat).count();
    assert!(beats >= 2, "heartbeats between the slices: {beats}");
    let n = sliced.len();
    assert_eq!(sliced[n - 2], Record::Final(Epoch(1)));
    assert_eq!(sliced[n - 1], Record::ResyncDone);
    let adds_before_tail = sliced[..n - 4].iter().all(|r| {
        matches!(
            r,
            Record::Event(Message {
                event: Event::Add(_),
                ..
            })
        )
    });
    assert!(
        adds_before_tail,
        "the SA's key and state come after the last entry"
    );
    assert!(matches!(sliced[n - 4], Record::SaKey { spi: s, .. } if s == spi));
    // the same records as the answer at once (in another order)
    let set = |rs: &[Record]| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = rs.iter().map(bytes).collect();
        v.sort();
        v
    };
    assert_eq!(set(&sliced), set(&whole));
    let owned: BTreeSet<FlowKey> = a.core().common().iter().map(|e| e.key).collect();
    let sent: BTreeSet<FlowKey> = sliced
        .iter()
        .filter_map(|r| match r {
            Record::Event(Message {
                event: Event::Add(e),
                ..
            }) => Some(e.key),
            _ => None,
        })
        .collect();
    assert_eq!(sent, owned);

    // the asker's table ends as it would from the answer at once
    let mut b = member(2, &[1, 2]);
    b.on_agreed(at(now), &a1, || Duration::ZERO);
    b.on_peer_restarted(at(now), NodeId(1));
    let wire: Vec<Vec<u8>> = sliced.iter().map(bytes).collect();
    b.on_records(at(now), NodeId(1), wire.iter().map(|w| w.as_slice()));
    assert_eq!(b.counters().decode_errors + b.counters().apply_errors, 0);
    assert_eq!(b.core().common().len(), 301);
    assert!(b.has_sa_key(spi));
}

fn add_keys(rs: &[Record]) -> Vec<FlowKey> {
    rs.iter()
        .filter_map(|r| match r {
            Record::Event(Message {
                event: Event::Add(e),
                ..
            }) => Some(e.key),
            _ => None,
        })
        .collect()
}

/// Two askers at once share the slice (the entries sent per turn stay bounded), and each gets
/// the whole answer; a second request from an asker mid-answer starts its answer over, so its
/// `D` comes after every entry sent since that request.
#[test]
fn resync_answers_to_several_askers_share_the_slice() {
    let (mut a, a1, mut now, _) = owner_with_flows(&[1, 2, 3], 200);
    let voters = [NodeId(1), NodeId(2), NodeId(3)];
    let view = follower_view(1, &a1, &voters);
    let owned: BTreeSet<FlowKey> = a.core().common().iter().map(|e| e.key).collect();
    assert_eq!(owned.len(), 201);
    a.resync.slice = 20;
    let q = bytes(&Record::ResyncRequest);
    a.on_records(at(now), NodeId(2), [q.as_slice()]);
    a.on_records(at(now), NodeId(3), [q.as_slice()]);
    let first = Turn::of(&mut a);
    let mut got: BTreeMap<u16, Vec<Record>> = first.records.clone();
    let mut turns = Vec::new();
    let mut asked_again = false;
    while a.answering() {
        now += STEP;
        let t = at(now);
        for p in [2, 3] {
            a.on_heartbeat(t, NodeId(p), hb(false, 0));
        }
        a.tick(t, &view);
        let turn = Turn::of(&mut a);
        assert!(
            turn.adds(2) + turn.adds(3) <= 20,
            "{} + {}",
            turn.adds(2),
            turn.adds(3)
        );
        for (n, rs) in &turn.records {
            got.entry(*n).or_default().extend(rs.iter().cloned());
        }
        turns.push(turn);
        if !asked_again && add_keys(&got[&3]).len() > 60 {
            // node 3 asks again: its answer starts over
            asked_again = true;
            got.insert(3, Vec::new());
            a.on_records(at(now), NodeId(3), [q.as_slice()]);
            let again = Turn::of(&mut a);
            for (n, rs) in &again.records {
                got.entry(*n).or_default().extend(rs.iter().cloned());
            }
        }
        assert!(turns.len() < 1000);
    }
    assert!(asked_again);
    assert!(turns.len() >= 201 * 2 / 20, "{} turns", turns.len());
    for n in [2u16, 3] {
        let rs = &got[&n];
        assert_eq!(rs.last(), Some(&Record::ResyncDone), "node {n}");
        assert_eq!(
            rs.iter().filter(|r| **r == Record::ResyncDone).count(),
            1,
            "node {n}"
        );
        let keys = add_keys(rs);
        assert_eq!(keys.len(), 201, "node {n}: every entry once");
        assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), owned, "node {n}");
    }
}

/// An asker that restarts mid-answer (its new process asks anew) or stays silent until its
/// backlog is discarded has its answer dropped: nothing more, and no `D`, goes to it.
#[test]
fn resync_answer_to_a_restarted_or_silent_asker_is_dropped() {
    let (mut a, a1, mut now, _) = owner_with_flows(&[1, 2], 700);
    let voters = [NodeId(1), NodeId(2)];
    let view = follower_view(1, &a1, &voters);
    a.resync.slice = 10;
    let q = bytes(&Record::ResyncRequest);

    // restarted
    a.on_records(at(now), NodeId(2), [q.as_slice()]);
    assert_eq!(Turn::of(&mut a).adds(2), 10);
    a.on_peer_restarted(at(now), NodeId(2));
    assert!(!a.answering());
    let turns = answer_turns(&mut a, &mut now, &view, &[2]);
    assert!(turns.is_empty());
    now += STEP;
    a.tick(at(now), &view);
    assert!(
        !Turn::of(&mut a).records.contains_key(&2),
        "nothing more to node 2"
    );

    // silent: no heartbeat from node 2 after its request; past the failure time (falsely
    // suspected, say) it still gets its answer, until its backlog would be discarded
    a.resync.slice = 1;
    a.on_records(at(now), NodeId(2), [q.as_slice()]);
    let asked = now;
    let mut sent_after = 0;
    let mut dropped_log = false;
    while a.answering() {
        // (steps short enough that the stall credit does not apply)
        now += ms(20);
        a.tick(at(now), &view);
        let outs: Vec<Output> = a.drain_outputs().collect();
        dropped_log |= logs(&outs)
            .iter()
            .any(|l| l.contains("resync answer to node 2 dropped"));
        for o in &outs {
            if let Output::Record {
                to: To::Node(NodeId(2)),
                record,
            } = o
            {
                assert_ne!(*record, Record::ResyncDone);
                sent_after += 1;
            }
        }
        assert!(
            now - asked <= super::liveness::DISCARD_AFTER + ms(20),
            "dropped when its backlog is"
        );
    }
    assert!(now - asked > super::liveness::DISCARD_AFTER);
    assert!(dropped_log);
    assert!(sent_after > 0 && sent_after < 700, "{sent_after}");
}

// ----- 3. failure detection -----

/// Ticks `m` every step from `*now` to `until`, feeding heartbeats from `live` peers at every
/// heartbeat interval; returns the outputs.
fn tick_until(
    m: &mut M,
    now: &mut Duration,
    until: Duration,
    live: &[u16],
    view: &ConsensusView<'_>,
) -> Vec<Output> {
    let mut outs = Vec::new();
    while *now < until {
        *now += STEP;
        let t = at(*now);
        if now.as_millis().is_multiple_of(HEARTBEAT.as_millis()) {
            for p in live {
                let applied = view.agreed.epoch.0;
                hear(m, t, *p, true, applied);
            }
        }
        m.tick(t, view);
        outs.extend(m.drain_outputs());
    }
    outs
}

/// The voters of a cluster of nodes 1, 2 and 3.
const THREE_VOTERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

/// Member 1 of nodes 1, 2 and 3 that has applied `view`'s allocation (at time zero) and is
/// ticked under `view` until 500 ms, hearing nodes 2 and 3; it then takes traffic. Returns it
/// and the time.
fn heard_by_2_and_3_until_500_ms(view: &ConsensusView<'_>) -> (M, Duration) {
    let mut a = member(1, &[1, 2, 3]);
    a.on_agreed(at(Duration::ZERO), view.agreed, || Duration::ZERO);
    let mut now = Duration::ZERO;
    tick_until(&mut a, &mut now, ms(500), &[2, 3], view);
    assert!(a.takes_traffic());
    (a, now)
}

/// A peer silent for longer than the failure time is declared dead, once, with a log line.
#[test]
fn silent_peer_is_declared_dead() {
    let (mut a, alloc) = agreed_member(1, &[1, 2], 1);
    let voters = [NodeId(1)];
    let view = follower_view(1, &alloc, &voters);
    let mut now = Duration::ZERO;
    tick_until(&mut a, &mut now, ms(500), &[2], &view);
    assert!(a.is_alive(NodeId(2)));
    // last heard at 500 ms: alive through 800 ms (silence <= failure), dead at 810 ms
    let outs = tick_until(&mut a, &mut now, ms(800), &[], &view);
    assert!(a.is_alive(NodeId(2)), "silent for exactly the failure time");
    assert!(logs(&outs).iter().all(|l| !l.contains("failed")));
    let outs = tick_until(&mut a, &mut now, ms(810), &[], &view);
    assert!(!a.is_alive(NodeId(2)));
    assert!(a.is_alive(NodeId(1)), "a member is always alive to itself");
    assert_eq!(logs(&outs), vec!["peer 2 failed (silent for 300 ms)"]);
    assert!(!a.is_peer_ready(NodeId(2)));
    // declared once
    let outs = tick_until(&mut a, &mut now, ms(2000), &[], &view);
    assert!(
        logs(&outs).iter().all(|l| !l.contains("failed")),
        "{:?}",
        logs(&outs)
    );
    // heard again: alive again
    hear(&mut a, at(now), 2, true, 1);
    let until = now + STEP;
    tick_until(&mut a, &mut now, until, &[], &view);
    assert!(a.is_alive(NodeId(2)));
}

/// A long gap between the member's own ticks (it was stalled) is credited to its peers: it
/// declares nobody dead. Its own lease has run out meanwhile: it fences itself at once (its
/// peers may have taken its identifiers), before any packet, and its first packet after the
/// stall is not handled even before a tick.
#[test]
fn own_stall_is_credited_to_peers_but_fences() {
    let alloc = all_to(1, 1);
    let view = follower_view(1, &alloc, &THREE_VOTERS);
    let (mut a, mut now) = heard_by_2_and_3_until_500_ms(&view);
    // the member does not run for 2 s (heartbeats it would have heard are not delivered);
    // the first thing it sees afterwards is a packet
    now += ms(2000);
    assert!(
        !a.takes_traffic_at(now),
        "the lease ran out during the stall"
    );
    let pkt = build::udp(ip(1), 4444, ip(200), 53, b"q").unwrap();
    assert_eq!(a.on_packet(at(now), &pkt), PacketOutcome::NotReady);
    assert!(a.is_fenced());
    a.tick(at(now), &view);
    let outs: Vec<Output> = a.drain_outputs().collect();
    assert!(a.is_alive(NodeId(2)) && a.is_alive(NodeId(3)));
    assert!(a.is_fenced() && !a.takes_traffic());
    assert_eq!(logs(&outs), vec!["fenced: true"]);
    // new echoes (a new grant) lift the fence; the member resyncs before it takes traffic
    now += STEP;
    let until = now + HEARTBEAT * 2;
    let outs = tick_until(&mut a, &mut now, until, &[2, 3], &view);
    assert!(!a.is_fenced());
    assert!(logs(&outs).contains(&"resyncing after the partition"));
    assert!(!a.takes_traffic(), "not before the resync is answered");
    for p in [2, 3] {
        a.on_records(at(now), NodeId(p), [bytes(&Record::ResyncDone).as_slice()]);
    }
    let until = now + STEP;
    tick_until(&mut a, &mut now, until, &[2, 3], &view);
    assert!(a.takes_traffic());
    // credited only once: still silent afterwards, they die one failure time later
    let until = now + FAILURE + STEP * 2;
    let outs = tick_until(&mut a, &mut now, until, &[], &view);
    assert!(!a.is_alive(NodeId(2)) && !a.is_alive(NodeId(3)));
    assert!(logs(&outs).contains(&"peer 2 failed (silent for 300 ms)"));
    assert!(a.is_fenced());
}

// ----- 4. self-fencing -----

/// With 3 voters, a member that hears no voter for 3/4 of the failure time fences: packets
/// get "not ready", its heartbeat says fenced. When contact returns it unfences, goes back
/// to not ready and asks the live peers for a resync.
#[test]
fn fences_without_majority_and_resyncs_after() {
    let alloc = all_to(1, 1);
    let view = follower_view(1, &alloc, &THREE_VOTERS);
    let pkt = build::udp(ip(1), 4444, ip(200), 53, b"q").unwrap();
    let (mut a, mut now) = heard_by_2_and_3_until_500_ms(&view);
    assert!(a.takes_traffic() && !a.is_fenced());
    assert_eq!(a.on_packet(at(now), &pkt), PacketOutcome::Created);
    // the last heartbeats (at 500 ms) echo the stamp node 1 sent at 460 ms; an echo grants
    // 3/4 of the failure time (225 ms): the lease runs to 685 ms
    assert_eq!(a.lease_until(), Some(ms(685)));
    let outs = tick_until(&mut a, &mut now, ms(680), &[], &view);
    assert!(!a.is_fenced());
    assert!(logs(&outs).is_empty());
    let outs = tick_until(&mut a, &mut now, ms(690), &[], &view);
    assert!(a.is_fenced());
    assert!(!a.takes_traffic());
    assert!(
        a.is_alive(NodeId(2)),
        "fenced before the peers are declared dead"
    );
    assert_eq!(logs(&outs), vec!["fenced: true"]);
    let fenced_hbs: Vec<&Heartbeat> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Heartbeat { heartbeat, .. } => Some(heartbeat),
            _ => None,
        })
        .collect();
    assert_eq!(fenced_hbs.len(), 2, "both peers learn at once");
    assert!(fenced_hbs.iter().all(|h| h.fenced && h.ready));
    assert_eq!(a.on_packet(at(now), &pkt), PacketOutcome::NotReady);
    assert!(a
        .esp_for(1)
        .is_err_and(|e| e == SaCommandError::NotTakingTraffic));
    // both peers die meanwhile; node 2 comes back at 1000 ms
    tick_until(&mut a, &mut now, ms(990), &[], &view);
    assert!(!a.is_alive(NodeId(2)) && !a.is_alive(NodeId(3)));
    let outs = tick_until(&mut a, &mut now, ms(1000), &[2], &view);
    assert!(!a.is_fenced());
    assert!(!a.is_ready(), "not ready until the resync is answered");
    assert_eq!(a.on_packet(at(now), &pkt), PacketOutcome::NotReady);
    let asked: Vec<NodeId> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Record {
                to: To::Node(n),
                record: Record::ResyncRequest,
            } => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![NodeId(2)], "only the live peer is asked");
    assert!(logs(&outs).contains(&"fenced: false"));
    assert!(logs(&outs).contains(&"resyncing after the partition"));
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Heartbeat { heartbeat, .. } if !heartbeat.fenced && !heartbeat.ready
    )));
    // node 2 answers: ready again, the resync is reported
    tick_until(&mut a, &mut now, ms(1050), &[2], &view);
    assert!(!a.is_ready());
    a.on_records(at(now), NodeId(2), [bytes(&Record::ResyncDone).as_slice()]);
    let until = now + STEP;
    let outs = tick_until(&mut a, &mut now, until, &[2], &view);
    assert!(a.is_ready() && a.takes_traffic());
    assert!(
        logs(&outs).contains(&"resync complete: 0 entries in 50 ms"),
        "{:?}",
        logs(&outs)
    );
    assert_eq!(a.on_packet(at(now), &pkt), PacketOutcome::Hit);
}

// ----- 5. leader duties -----

fn counts_ok(a: &Allocation, nodes: &[u16]) {
    assert!(a.owners.iter().all(|o| o.is_some()), "{a:?}");
    let counts = a.counts();
    let n = IDS as usize / nodes.len();
    for node in nodes {
        let c = counts.get(&NodeId(*node)).copied().unwrap_or(0);
        assert!(c == n || c == n + 1, "node {node} owns {c}: {a:?}");
    }
    assert_eq!(counts.len(), nodes.len(), "{a:?}");
}

/// Identifiers whose owner differs between `a` and `b`.
fn changed(a: &Allocation, b: &Allocation) -> Vec<DistributionId> {
    count()
        .all()
        .filter(|d| a.owner(*d) != b.owner(*d))
        .collect()
}

/// The first allocation is proposed once every member is ready, well before 3 failure times.
#[test]
fn first_allocation_when_every_member_is_ready() {
    let mut c = Cluster::new(&[1, 2, 3], FAILURE);
    c.run_until(ms(2000), |c| !c.proposals.is_empty());
    let (when, a) = c.proposals[0].clone();
    assert!(
        when >= FAILURE + HEARTBEAT && when < FAILURE * 3,
        "{when:?}"
    );
    assert_eq!(a.epoch, Epoch(1));
    counts_ok(&a, &[1, 2, 3]);
    assert!(c.m.values().all(|m| m.is_ready()));
    c.settle();
    assert_eq!(c.proposals.len(), 1, "nothing more to do");
    for (n, m) in &c.m {
        let last = m.applied().last().unwrap();
        assert_eq!(last.epoch, 1);
        assert_eq!(last.owned, a.ids_of(NodeId(*n)).len());
        assert!(last.ready);
    }
}

/// With a member missing, the first allocation waits 3 failure times, then shares everything
/// among the members that are there.
#[test]
fn first_allocation_without_a_member_waits_three_failure_times() {
    let mut c = Cluster::new(&[1, 2, 3], FAILURE);
    c.cut.insert(3);
    c.run_until(ms(2000), |c| !c.proposals.is_empty());
    let (when, a) = c.proposals[0].clone();
    assert_eq!(when, FAILURE * 3);
    assert_eq!(a.epoch, Epoch(1));
    counts_ok(&a, &[1, 2]);
    assert_eq!(c.agreed(), &a);
}

/// An operator move away from a live owner goes in three proposals: the prepare step names
/// the next owner (the owner stays), phase 1 releases the identifier (no owner), phase 2
/// assigns it only after the releaser's heartbeat reports the phase-1 epoch applied, however
/// long that takes.
#[test]
fn move_from_live_owner_is_two_phase() {
    let failure = ms(2000);
    let mut c = Cluster::new(&[1, 2, 3], failure);
    c.settle();
    let e1 = c.agreed().clone();
    let d = e1.ids_of(NodeId(2))[0];
    let before = c.proposals.len();
    // an out-of-range identifier in the list is left out
    c.m(1)
        .request_move(&[u64::from(d.0), 1000], NodeId(3))
        .unwrap();
    c.run_until(ms(100), |c| c.proposals.len() > before);
    let p0 = c.proposals[before].1.clone();
    assert_eq!(p0.epoch.0, e1.epoch.0 + 1);
    assert_eq!(p0.owners, e1.owners, "the prepare step moves nothing");
    assert_eq!(p0.next_owners, vec![(d, NodeId(3))]);
    c.run_until(ms(100), |c| c.agreed().epoch == p0.epoch);
    c.block_hb.insert((2, 1));
    c.run_until(ms(500), |c| c.proposals.len() > before + 1);
    let p1 = c.proposals[before + 1].1.clone();
    assert_eq!(p1.epoch.0, e1.epoch.0 + 2);
    assert_eq!(changed(&e1, &p1), vec![d]);
    assert_eq!(p1.owner(d), None, "phase 1 releases");
    assert_eq!(p1.next_owners, vec![(d, NodeId(3))]);
    c.run_until(ms(100), |c| c.agreed().epoch == p1.epoch);
    assert!(!c.m[&2].core().owns(d) && !c.m[&3].core().owns(d));
    // node 2 applied it, but the leader does not hear its heartbeats: no phase 2, well past
    // the release wait for members that released nothing
    c.run_for(ms(1000), |c| {
        assert_eq!(c.agreed().epoch, p1.epoch);
        assert!(c.m[&1].is_alive(NodeId(2)));
    });
    assert_eq!(c.m[&2].core().allocation().epoch, p1.epoch);
    assert_eq!(c.proposals.len(), before + 2);
    c.block_hb.remove(&(2, 1));
    c.run_until(ms(200), |c| c.agreed().epoch.0 == p1.epoch.0 + 1);
    let p2 = c.agreed().clone();
    assert_eq!(changed(&p1, &p2), vec![d]);
    assert_eq!(p2.owner(d), Some(NodeId(3)));
    assert_eq!(c.proposals.len(), before + 3);
}

/// [`three_settled`], then node 3 cut off from the others (and, with `frozen`, not ticked
/// either: a stalled process). Returns the cluster, the allocation agreed before, and how many
/// proposals had been made.
fn three_then_3_lost(frozen: bool) -> (Cluster, Allocation, usize) {
    let mut c = three_settled();
    let agreed = c.agreed().clone();
    let proposals = c.proposals.len();
    if frozen {
        c.frozen.insert(3);
    }
    c.cut.insert(3);
    (c, agreed, proposals)
}

/// A dead owner's identifiers move in one proposal, to the surviving members.
#[test]
fn dead_owner_identifiers_move_in_one_proposal() {
    let (mut c, e1, before) = three_then_3_lost(false);
    c.run_until(ms(1000), |c| c.agreed().epoch.0 > e1.epoch.0);
    c.run_for(ms(500), |_| {});
    assert_eq!(c.proposals.len(), before + 1, "one proposal");
    let p = c.agreed().clone();
    assert_eq!(p.epoch.0, e1.epoch.0 + 1);
    counts_ok(&p, &[1, 2]);
    for d in changed(&e1, &p) {
        assert_eq!(
            e1.owner(d),
            Some(NodeId(3)),
            "only node 3's identifiers move"
        );
    }
    let moved_at = c.agreed_at[&p.epoch.0];
    let died_at = c.logged(1, "peer 3 failed").unwrap();
    // the leader takes them when node 2 reports node 3 out too (its next heartbeat)
    assert!(
        moved_at >= died_at && moved_at <= died_at + HEARTBEAT + STEP,
        "{died_at:?} {moved_at:?}"
    );
}

/// Drain, undrain and rebalance through the leader; each move from a live owner in two
/// phases.
#[test]
fn drain_undrain_and_rebalance() {
    let mut c = three_settled();
    let e1 = c.agreed().clone();
    let two = e1.ids_of(NodeId(2));
    c.m(1).set_drained(NodeId(2), true).unwrap();
    assert!(c.m[&1].drained().contains(&NodeId(2)));
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == e1.epoch.0 + 3);
    let p1 = c.history[c.history.len() - 2].clone();
    let p0 = c.history[c.history.len() - 3].clone();
    assert_eq!(p0.owners, e1.owners, "the prepare step moves nothing");
    assert_eq!(p0.next_owners, p1.next_owners);
    let p2 = c.agreed().clone();
    assert_eq!(
        changed(&e1, &p1),
        two,
        "phase 1 releases node 2's identifiers"
    );
    assert!(two.iter().all(|d| p1.owner(*d).is_none()));
    assert_eq!(changed(&p1, &p2), two);
    counts_ok(&p2, &[1, 3]);
    c.run_for(ms(500), |_| {});
    assert_eq!(c.agreed(), &p2, "drained: stays so");
    assert!(c.m[&2].core().node_table().is_empty());

    // undrain: node 2 takes its share back from live owners, again in two phases
    c.m(1).set_drained(NodeId(2), false).unwrap();
    assert!(c.m[&1].drained().is_empty());
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == p2.epoch.0 + 3);
    let q1 = c.history[c.history.len() - 2].clone();
    let q2 = c.agreed().clone();
    let released = changed(&p2, &q1);
    assert!(!released.is_empty());
    assert!(released.iter().all(|d| q1.owner(*d).is_none()));
    assert_eq!(changed(&q1, &q2), released);
    assert!(released.iter().all(|d| q2.owner(*d) == Some(NodeId(2))));
    counts_ok(&q2, &[1, 2, 3]);

    // a rebalance of a balanced, idle cluster proposes nothing
    let n = c.proposals.len();
    c.m(1).request_rebalance();
    c.run_for(ms(300), |_| {});
    assert_eq!(c.proposals.len(), n);

    // load on one identifier of node 1: the rebalance moves identifiers off node 1
    let hot = q2.ids_of(NodeId(1))[0];
    let t = c.t();
    for p in udp_flows_in(hot, 60) {
        assert_eq!(c.m(1).on_packet(t, &p), PacketOutcome::Created);
    }
    c.route();
    assert_eq!(c.m[&1].core().common().dist_len(hot), 60);
    c.m(1).request_rebalance();
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == q2.epoch.0 + 3);
    let r1 = c.history[c.history.len() - 2].clone();
    let r2 = c.agreed().clone();
    let moved = changed(&q2, &r1);
    assert!(!moved.is_empty());
    assert!(moved
        .iter()
        .all(|d| q2.owner(*d) == Some(NodeId(1)) && r1.owner(*d).is_none()));
    assert_eq!(changed(&r1, &r2), moved);
    assert!(moved
        .iter()
        .all(|d| r2.owner(*d).is_some_and(|o| o != NodeId(1))));
    assert!(r2.ids_of(NodeId(1)).len() < q2.ids_of(NodeId(1)).len());
}

/// Control requests with bad node ids or identifiers are refused and queue nothing.
#[test]
fn control_errors() {
    let mut m = member(1, &[1, 2, 3]);
    assert_eq!(
        m.request_move(&[1], NodeId(9)),
        Err("move needs \"to\": a member node id".to_string())
    );
    assert_eq!(
        m.request_move(&[16, 99, u64::MAX], NodeId(2)),
        Err("move needs \"ids\": identifiers in range".to_string())
    );
    assert_eq!(
        m.request_move(&[], NodeId(2)),
        Err("move needs \"ids\": identifiers in range".to_string())
    );
    assert_eq!(
        m.set_drained(NodeId(0), true),
        Err("drain needs \"node\": a member node id".to_string())
    );
    assert_eq!(
        m.set_drained(NodeId(4), false),
        Err("drain needs \"node\": a member node id".to_string())
    );
    assert!(m.drained().is_empty());
    assert!(m.leader.ops.is_empty());
    // a witness is not a member
    let mut cfg = mcfg(1, &[1, 2], FAILURE);
    cfg.peers.push((NodeId(3), Role::Witness));
    let mut w = Member::new(cfg, core(1));
    assert!(w.request_move(&[1], NodeId(3)).is_err());
    assert!(w.set_drained(NodeId(3), true).is_err());
    assert!(w.request_move(&[1], NodeId(2)).is_ok());
}

// ----- 6. handover gate -----

/// Moves `d` from node 2 to node 3 through the leader while node 2's stream to node 3 is
/// held back; returns the epochs of phase 1 (node 2 lost `d`) and phase 2 (node 3 gained it),
/// after the prepare step.
fn move_held(c: &mut Cluster, d: DistributionId) -> (Epoch, Epoch) {
    let e = c.agreed().epoch.0;
    c.hold.insert((2, 3));
    c.move_to_3(d);
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == e + 3);
    assert_eq!(c.agreed().owner(d), Some(NodeId(3)));
    (Epoch(e + 2), Epoch(e + 3))
}

/// A gained identifier waits for its live previous owner's `F` through the epoch it lost it
/// in: its packets get "not ready", the epoch is not complete; the `F` opens the gate.
#[test]
fn handover_waits_for_final_of_live_previous_owner() {
    let (mut c, d) = three_and_an_id_of_2();
    let other = c.agreed().ids_of(NodeId(3))[0];
    // an entry of d exists (created by node 2 and replicated)
    let flow = udp_in(d, 0);
    let t = c.t();
    assert_eq!(c.m(2).on_packet(t, &flow), PacketOutcome::Created);
    c.route();
    let (lost_in, gained_in) = move_held(&mut c, d);
    let t = c.t();
    let n3 = c.m(3);
    assert!(n3.core().owns(d));
    assert!(n3.handover().is_waiting(d));
    assert_eq!(n3.handover().waits_for(d), Some((NodeId(2), lost_in)));
    assert!(!n3.handover().is_waiting(other));
    assert_eq!(n3.on_packet(t, &flow), PacketOutcome::NotReady);
    assert_eq!(n3.on_packet(t, &udp_in(other, 0)), PacketOutcome::Created);
    assert_eq!(n3.core().node_table().dist_len(d), 1, "installed, waiting");
    let last = n3.applied().last().unwrap().clone();
    assert_eq!(last.epoch, gained_in.0);
    assert_eq!(last.gained, 1);
    assert_eq!(last.complete_unix_ms, 0);
    assert_eq!(c.m(2).on_packet(t, &flow), PacketOutcome::NotOurs);
    let line = format!(
        "epoch {}: 1 gained identifiers wait for the final SA state of node(s) {{2}}",
        gained_in.0
    );
    assert!(c.logged(3, &line).is_some(), "{:?}", c.logs);
    // it waits as long as node 2 lives and its F is held back
    c.run_for(ms(500), |c| {
        assert!(c.m[&3].handover().is_waiting(d));
        assert!(c.double_actors().is_empty());
    });
    assert_eq!(c.m[&3].applied().last().unwrap().complete_unix_ms, 0);
    c.release(2, 3);
    let t = c.t();
    let n3 = c.m(3);
    assert!(!n3.handover().is_waiting(d));
    assert_eq!(n3.handover().waits_for(d), None);
    let last = n3.applied().last().unwrap();
    assert_eq!(last.epoch, gained_in.0);
    assert_eq!(last.complete_unix_ms, t.unix_ms);
    assert_eq!(n3.on_packet(t, &flow), PacketOutcome::Hit);
}

/// Three settled members, node 3 holding a moving identifier's packets (16 frames, 1 MiB,
/// 1.5 s), and an identifier node 2 owns.
fn three_holding() -> (Cluster, DistributionId) {
    let (mut c, d) = three_and_an_id_of_2();
    c.m(3).set_hold(16, 1 << 20, ms(1500));
    (c, d)
}

/// The last step of a planned move also waits for every other live member's stream to catch
/// up through the epoch (its `F`): a bystander may carry an entry of the identifier it created
/// or forwarded earlier that is still on its way (its stream delayed by a partition that just
/// healed). Meanwhile the packets are held (a bystander never handled them); the bystander's
/// `F` opens the gate, and the log names only the previous owner.
#[test]
fn a_planned_move_waits_for_every_live_members_stream() {
    let (mut c, d) = three_holding();
    let e = c.agreed().epoch.0;
    // node 1's stream to node 3 is held back from now on
    c.hold.insert((1, 3));
    c.move_to_3(d);
    c.run_until(ms(1000), |c| c.agreed().owner(d) == Some(NodeId(3)));
    let gained_in = c.agreed().epoch;
    assert_eq!(gained_in.0, e + 3);
    c.run_for(ms(300), |c| {
        assert!(
            c.m[&3].handover().is_waiting(d),
            "opened without node 1's F"
        );
    });
    assert!(c.m[&3].handover().waits_for_releasers_only(d));
    let t = c.t();
    let PacketOutcome::Held(h) = c.m(3).on_packet(t, &udp_in(d, 1)) else {
        panic!("not held while a bystander is waited for")
    };
    // (node 2's F of this epoch may or may not have come when node 3 applied it)
    let line = format!(
        "epoch {}: 1 gained identifiers wait for the final SA state of node(s) {{}} and the streams of node(s) {{1",
        gained_in.0
    );
    assert!(c.logged(3, &line).is_some(), "{:?}", c.logs);
    c.release(1, 3);
    c.route();
    assert!(!c.m[&3].handover().is_waiting(d));
    assert_eq!(c.released, vec![(3, h, PacketOutcome::Created)]);
    assert!(c.double_actors().is_empty());
}

/// With holding on, the packets of a waiting identifier wait instead of being dropped, and go
/// through in order once the previous owner's `F` opened the gate (a lossless planned move);
/// one that waits too long, or that does not fit, is dropped as before.
#[test]
fn held_packets_go_through_when_the_gate_opens() {
    let mut c = three_settled();
    c.m(3).set_hold(2, 1 << 20, ms(400));
    let d = c.agreed().ids_of(NodeId(2))[0];
    let flow = udp_in(d, 0);
    let t = c.t();
    assert_eq!(c.m(2).on_packet(t, &flow), PacketOutcome::Created);
    // every member takes in every packet, in the same order: node 3 passes these, and the
    // last of them are the releaser's place in the input when it lets `d` go
    assert_eq!(c.m(3).on_packet(t, &flow), PacketOutcome::NotOurs);
    let elsewhere = c.agreed().ids_of(NodeId(1))[0];
    for k in 0..3 {
        let p = udp_in(elsewhere, k);
        assert_eq!(c.m(2).on_packet(t, &p), PacketOutcome::NotOurs);
        assert_eq!(c.m(3).on_packet(t, &p), PacketOutcome::NotOurs);
    }
    c.route();
    move_held(&mut c, d);
    let t = c.t();
    let n3 = c.m(3);
    assert!(n3.handover().is_waiting(d));
    let PacketOutcome::Held(a) = n3.on_packet(t, &flow) else {
        panic!("not held")
    };
    let PacketOutcome::Held(b) = n3.on_packet(t, &udp_in(d, 1)) else {
        panic!("not held")
    };
    // full: the third is dropped as before
    assert_eq!(n3.on_packet(t, &udp_in(d, 2)), PacketOutcome::NotReady);
    assert_eq!(n3.hold_counters(), [2, 0, 1, 2]);
    c.run_for(ms(100), |c| {
        assert!(c.released.is_empty(), "released before the gate opened")
    });
    c.release(2, 3);
    let got: Vec<(u64, PacketOutcome)> = c
        .released
        .iter()
        .filter(|(m, _, _)| *m == 3)
        .map(|(_, t, o)| (*t, *o))
        .collect();
    // in order: the first on the replicated entry, the second a new flow
    assert_eq!(
        got,
        vec![(a, PacketOutcome::Hit), (b, PacketOutcome::Created)]
    );
    assert_eq!(c.m[&3].hold_counters(), [2, 2, 1, 0]);
    assert!(c.double_actors().is_empty());

    // held past max_wait (a gate that never opens): dropped, answered NotReady
    let d2 = c.agreed().ids_of(NodeId(2))[0];
    let f2 = udp_in(d2, 0);
    let t = c.t();
    assert_eq!(c.m(2).on_packet(t, &f2), PacketOutcome::Created);
    c.route();
    c.released.clear();
    move_held(&mut c, d2);
    let t = c.t();
    let PacketOutcome::Held(x) = c.m(3).on_packet(t, &f2) else {
        panic!("not held")
    };
    c.run_for(ms(600), |_| {});
    assert!(
        c.released.contains(&(3, x, PacketOutcome::NotReady)),
        "{:?}",
        c.released
    );
}

/// A planned move by the leader loses no packet and handles none twice. The prepare step names
/// the next owner while the owner keeps handling: the next owner holds the same packets (every
/// member sees every packet) once it knows the owner applied the step. The release step: nobody
/// owns the identifier, the next owner goes on holding, the releaser sends the last packet it
/// handled (`L`) and its final state (`F`). Once phase 2 gives the next owner the identifier and
/// the gate opens, the held packets up to the releaser's last are handed back (the releaser's),
/// the rest are handled, in order.
#[test]
fn a_planned_move_loses_no_packet_and_handles_none_twice() {
    let (mut c, d) = three_holding();
    let flow = udp_in(d, 0);
    let t = c.t();
    assert_eq!(c.m(2).on_packet(t, &flow), PacketOutcome::Created);
    c.route();
    let e = c.agreed().epoch.0;
    c.move_to_3(d);
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == e + 1);
    let prepare = c.agreed().clone();
    assert_eq!(prepare.owners, c.history[c.history.len() - 2].owners);
    assert_eq!(prepare.next_owners, vec![(d, NodeId(3))]);
    // node 3 hears that node 2 applied the prepare step
    c.route();
    let t = c.t();
    let mut held = Vec::new();
    for p in [flow.clone(), udp_in(d, 1)] {
        let by_owner = c.m(2).on_packet(t, &p);
        assert!(
            matches!(by_owner, PacketOutcome::Hit | PacketOutcome::Created),
            "{by_owner:?}"
        );
        let PacketOutcome::Held(h) = c.m(3).on_packet(t, &p) else {
            panic!("the next owner does not hold")
        };
        held.push(h);
    }
    // another identifier of node 2, not moving, is not held
    let other = c.agreed().ids_of(NodeId(2))[1];
    assert_eq!(
        c.m(3).on_packet(t, &udp_in(other, 0)),
        PacketOutcome::NotOurs
    );
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == e + 2);
    let release = c.agreed().clone();
    assert_eq!(release.owner(d), None, "phase 1 releases d");
    assert_eq!(release.next_owners, vec![(d, NodeId(3))]);
    let t = c.t();
    // nobody owns d now: the releaser and the bystander pass, the next owner holds
    for p in [udp_in(d, 1), udp_in(d, 2)] {
        assert_eq!(c.m(2).on_packet(t, &p), PacketOutcome::NotOurs);
        assert_eq!(c.m(1).on_packet(t, &p), PacketOutcome::NotOurs);
        let PacketOutcome::Held(h) = c.m(3).on_packet(t, &p) else {
            panic!("the next owner does not hold")
        };
        held.push(h);
    }
    c.run_until(ms(1000), |c| c.agreed().owner(d) == Some(NodeId(3)));
    c.run_until(ms(1000), |c| c.released.len() == 4);
    assert_eq!(
        c.released,
        vec![
            (3, held[0], PacketOutcome::NotOurs),
            (3, held[1], PacketOutcome::NotOurs),
            (3, held[2], PacketOutcome::Hit),
            (3, held[3], PacketOutcome::Created)
        ]
    );
    assert_eq!(c.m[&3].hold_counters(), [4, 2, 0, 0]);
    assert_eq!(c.m[&3].hold_handed_back(), 2);
    assert!(c.double_actors().is_empty());
    assert!(c.agreed().next_owners.is_empty(), "phase 2 names nobody");
}

/// [`three_holding`], with the identifier moving to node 3: once node 3 is named next owner,
/// node 2 handles two of its flows' packets (p1, then p2, its last), node 3 takes in only p1
/// (held), and the move completes with node 3's gate open. Returns the cluster, the
/// identifier, p2 and the token p1 is held under.
fn gate_opened_before_the_releasers_last() -> (Cluster, DistributionId, Vec<u8>, u64) {
    let (mut c, d) = three_holding();
    let e = c.agreed().epoch.0;
    c.move_to_3(d);
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == e + 1);
    c.route();
    let t = c.t();
    let (p1, p2) = (udp_in(d, 1), udp_in(d, 2));
    assert_eq!(c.m(2).on_packet(t, &p1), PacketOutcome::Created);
    assert_eq!(c.m(2).on_packet(t, &p2), PacketOutcome::Created);
    let PacketOutcome::Held(a) = c.m(3).on_packet(t, &p1) else {
        panic!("not held")
    };
    c.run_until(ms(1000), |c| {
        c.agreed().owner(d) == Some(NodeId(3)) && !c.m[&3].handover().is_waiting(d)
    });
    (c, d, p2, a)
}

/// The next owner's input may lag its replication stream: the releaser's last handled packet
/// can reach it after the gate opened. It then keeps holding the identifier's packets until
/// that packet arrives, hands it back with what came before it, and handles what follows.
#[test]
fn a_releasers_last_packet_arriving_late_is_handed_back() {
    let (mut c, d, p2, a) = gate_opened_before_the_releasers_last();
    let p3 = udp_in(d, 3);
    let t = c.t();
    // p2, the releaser's last, arrives now: held, then handed back with p1
    let PacketOutcome::Held(b) = c.m(3).on_packet(t, &p2) else {
        panic!("the releaser's last packet is not held")
    };
    assert_eq!(c.m(3).on_packet(t, &p3), PacketOutcome::Created);
    c.route();
    assert_eq!(
        c.released,
        vec![
            (3, a, PacketOutcome::NotOurs),
            (3, b, PacketOutcome::NotOurs)
        ]
    );
    assert_eq!(c.m[&3].hold_handed_back(), 2);
}

/// The next owner's input may lag the releaser's by more than the whole move (a loop busy
/// resyncing, a full socket): packets the releaser handled before the move even began reach
/// the next owner after it owns the identifier. They are the releaser's (they came before its
/// place in the input when it let go): handed back, not handled twice; what follows is
/// handled here.
#[test]
fn packets_the_releaser_handled_before_the_move_are_not_handled_again() {
    let (mut c, d) = three_holding();
    let (p1, p2, p3) = (udp_in(d, 1), udp_in(d, 2), udp_in(d, 3));
    let t = c.t();
    // node 2 handles p1 and p2; node 3's input lags: it has not taken them in yet
    assert_eq!(c.m(2).on_packet(t, &p1), PacketOutcome::Created);
    assert_eq!(c.m(2).on_packet(t, &p2), PacketOutcome::Created);
    c.route();
    let e = c.agreed().epoch.0;
    c.move_to_3(d);
    c.run_until(ms(1000), |c| {
        c.agreed().epoch.0 >= e + 3
            && c.agreed().owner(d) == Some(NodeId(3))
            && !c.m[&3].handover().is_waiting(d)
    });
    // p3 comes after the release: the releaser passes it
    let t = c.t();
    assert_eq!(c.m(2).on_packet(t, &p3), PacketOutcome::NotOurs);
    // node 3 now takes in p1, p2, p3, in the same order
    let mut held = Vec::new();
    for p in [&p1, &p2] {
        let PacketOutcome::Held(h) = c.m(3).on_packet(t, p) else {
            panic!("a packet before the releaser's place is not held")
        };
        held.push(h);
    }
    c.route();
    assert_eq!(
        c.released,
        vec![
            (3, held[0], PacketOutcome::NotOurs),
            (3, held[1], PacketOutcome::NotOurs)
        ],
        "the releaser's packets are handed back once its place is reached"
    );
    assert_eq!(c.m(3).on_packet(t, &p3), PacketOutcome::Created);
    assert_eq!(c.m[&3].hold_handed_back(), 2);
    assert_eq!(c.m[&3].counters().marks_not_found, 0);
}

/// A releaser's last packet that never reaches the next owner (lost on its input) holds the
/// identifier's packets only for `MARK_WAIT`: then what was held is handled.
#[test]
fn a_releasers_last_packet_that_never_arrives_delays_by_mark_wait_only() {
    let (mut c, _, _, a) = gate_opened_before_the_releasers_last();
    let opened = c.now;
    c.run_until(ms(1500), |c| !c.released.is_empty());
    assert_eq!(c.released, vec![(3, a, PacketOutcome::Hit)]);
    assert!(c.now - opened >= super::MARK_WAIT, "{:?}", c.now - opened);
    assert_eq!(c.m[&3].hold_handed_back(), 0);
}

/// [`three_holding`], and the next epoch agreed as a step of a planned move of its identifier
/// to node 3 that no leader made: a prepare step (owners unchanged) or, with `release`, a
/// release step (the identifier has no owner); either names node 3 the next owner. Before
/// node 3 hears that node 2 applied the step, it does not hold (checked); then it has heard.
/// Returns the cluster, the identifier, the epoch before the step, and the step.
fn three_with_a_step_naming_3(release: bool) -> (Cluster, DistributionId, Epoch, Allocation) {
    let (mut c, d) = three_holding();
    let e = c.agreed().epoch;
    let mut step = c.agreed().clone();
    step.epoch = Epoch(e.0 + 1);
    if release {
        step.owners[d.index()] = None;
    }
    step.next_owners = vec![(d, NodeId(3))];
    c.agree(step.clone());
    let t = c.t();
    assert_eq!(c.m(3).on_packet(t, &udp_in(d, 1)), PacketOutcome::NotOurs);
    c.route();
    (c, d, e, step)
}

/// Before the next owner knows the owner applied the prepare step, it does not hold (the owner
/// would not note what it handled). A prepare step no leader carries out is cleared by the
/// leader, and the named next owner lets go of what it held without handling it.
#[test]
fn a_prepare_step_nobody_carries_out_is_cleared() {
    let (mut c, d, e, prepare) = three_with_a_step_naming_3(false);
    let t = c.t();
    assert_eq!(c.m(2).on_packet(t, &udp_in(d, 2)), PacketOutcome::Created);
    let PacketOutcome::Held(h) = c.m(3).on_packet(t, &udp_in(d, 2)) else {
        panic!("not held")
    };
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == e.0 + 2);
    let cleared = c.agreed().clone();
    assert_eq!(cleared.owners, prepare.owners);
    assert!(cleared.next_owners.is_empty());
    c.run_until(ms(500), |c| !c.released.is_empty());
    assert_eq!(c.released, vec![(3, h, PacketOutcome::NotReady)]);
    assert_eq!(c.m[&3].hold_handed_back(), 0);
    c.run_for(ms(500), |c| assert_eq!(c.agreed().epoch.0, e.0 + 2));
}

/// A node named next owner that phase 2 does not give the identifier to (the plan changed)
/// lets go of what it held: it does not handle it (the releaser may have).
#[test]
fn held_for_a_release_that_went_elsewhere_is_not_handled() {
    let (mut c, d, e, release) = three_with_a_step_naming_3(true);
    let t = c.t();
    let PacketOutcome::Held(a) = c.m(3).on_packet(t, &udp_in(d, 0)) else {
        panic!("not held")
    };
    let mut elsewhere = release;
    elsewhere.epoch = Epoch(e.0 + 2);
    elsewhere.owners[d.index()] = Some(NodeId(1));
    elsewhere.next_owners.clear();
    c.agree(elsewhere);
    c.run_until(ms(500), |c| !c.released.is_empty());
    assert_eq!(c.released, vec![(3, a, PacketOutcome::NotReady)]);
    assert_eq!(c.m[&3].hold_counters()[2], 1, "dropped");
}

/// A graceful leave: the leaving member's heartbeats say so, the leader moves everything it
/// owns to the others in planned moves (each a release naming the next owner, then the
/// assignment), never two owners, and the leaver then owns nothing while every identifier has
/// an owner. Also when the leaver leads.
#[test]
fn a_leaving_member_hands_everything_over_in_planned_moves() {
    for leaver in [2u16, 1] {
        let mut c = Cluster::new(&[1, 2, 3], FAILURE);
        c.settle();
        assert!(!c.agreed().ids_of(NodeId(leaver)).is_empty());
        assert!(c.m[&leaver].has_successor());
        let before = c.proposals.len();
        c.m(leaver).leave();
        assert!(c.m[&leaver].is_leaving() && !c.m[&leaver].has_left());
        c.run_until(ms(3000), |c| {
            assert!(c.double_actors().is_empty());
            c.m[&leaver].has_left()
        });
        let a = c.agreed();
        assert!(a.ids_of(NodeId(leaver)).is_empty(), "leaver {leaver}");
        assert!(a.owners.iter().all(Option::is_some));
        let steps: Vec<&Allocation> = c.proposals[before..]
            .iter()
            .map(|(_, a)| a)
            .filter(|a| !a.next_owners.is_empty())
            .collect();
        assert!(!steps.is_empty(), "a planned move, not a failover");
        for r in &steps {
            assert!(r.next_owners.iter().all(|(_, n)| n.0 != leaver));
        }
        // each release is prepared first: the same next owners while the leaver still owns
        let releases = steps
            .iter()
            .filter(|r| r.next_owners.iter().all(|(d, _)| r.owner(*d).is_none()));
        for r in releases {
            assert!(steps.iter().any(|p| p.epoch < r.epoch
                && p.next_owners == r.next_owners
                && r.next_owners
                    .iter()
                    .all(|(d, _)| p.owner(*d) == Some(NodeId(leaver)))));
        }
        // the others see it leave and give it nothing back
        assert!(c.m[&3].is_peer_leaving(NodeId(leaver)) || leaver == 3);
        c.run_for(ms(500), |c| {
            assert!(c.agreed().ids_of(NodeId(leaver)).is_empty());
        });
        // its leave done, it retired: it proposes nothing more, and once it is gone the
        // others do not fence waiting for its grant (also when it still leads)
        assert!(c.m[&leaver].has_left());
        let n = c.proposals.len();
        let others: Vec<u16> = [1u16, 2, 3].into_iter().filter(|x| *x != leaver).collect();
        for o in &others {
            assert!(
                c.m[o].live[&NodeId(leaver)].retired,
                "node {o} sees it retired"
            );
        }
        c.cut.insert(leaver);
        c.run_for(FAILURE * 2, |c| {
            for o in &others {
                assert!(
                    c.m[o].takes_traffic(),
                    "node {o} fenced after the leaver left"
                );
            }
        });
        if c.leader == leaver {
            assert_eq!(c.proposals.len(), n, "a retired leader proposes nothing");
        }
    }
}

/// The gate also opens when the previous owner is gone (what it replicated is all there is),
/// with a log line, and the epoch completes then. The identifier was released to node 3 in a
/// planned move, so node 3 does not take node 2's silence for its end at once (a partition
/// between the two only delays node 2's stream): it waits until node 2 has been silent for
/// `RELEASER_GONE_AFTER`.
#[test]
fn handover_gate_opens_when_previous_owner_dies() {
    let (mut c, d) = three_and_an_id_of_2();
    let (_, gained_in) = move_held(&mut c, d);
    assert!(c.m[&3].handover().is_waiting(d));
    c.cut.insert(2);
    let cut_at = c.now;
    c.run_until(ms(1000), |c| !c.m[&3].is_alive(NodeId(2)));
    assert!(
        c.m[&3].handover().is_waiting(d),
        "declared dead, but it released the identifier: still waiting"
    );
    c.run_until(ms(12_000), |c| !c.m[&3].handover().is_waiting(d));
    let died = c.now;
    assert!(
        died - cut_at >= super::handover::RELEASER_GONE_AFTER,
        "{:?}",
        died - cut_at
    );
    let n3 = &c.m[&3];
    assert!(!n3.handover().is_waiting(d));
    let e = n3
        .applied()
        .iter()
        .find(|a| a.epoch == gained_in.0)
        .unwrap();
    assert_eq!(e.complete_unix_ms, BASE_UNIX_MS + died.as_millis() as u64);
    let line = format!(
        "identifier {}: node 2 failed before its final state arrived; taking over from what it replicated",
        d.0
    );
    assert_eq!(c.logged(3, &line), Some(died));
    // once node 3 takes traffic (it may be behind the failover epoch for a moment) the
    // identifier's packets are handled
    c.run_until(ms(1000), |c| c.m[&3].takes_traffic());
    let t = c.t();
    assert_ne!(c.m(3).on_packet(t, &udp_in(d, 0)), PacketOutcome::NotReady);
}

/// A `K` record never replaces an SA's key: an SA keeps its key for life (a rekey is a new
/// SPI), so a member gone wrong cannot redirect what this node seals or opens. The same key
/// again (a resync answer) is no refusal.
#[test]
fn a_key_record_never_replaces_an_sas_key() {
    let (mut a, _) = agreed_member(1, &[1, 2, 3], 1);
    let t = at(ms(10));
    let rec = |fill: u8| {
        let m = SaMaterial::from_keymat(9, OUT, &[fill; 16]).unwrap();
        bytes(&Record::SaKey {
            spi: 9,
            key: m.to_record_bytes(),
        })
    };
    a.on_record(t, NodeId(2), &rec(1));
    assert!(a.has_sa_key(9));
    a.on_record(t, NodeId(3), &rec(2));
    assert_eq!(a.counters().sa_keys_refused, 1);
    let kept = a.sas.keys.get(&9).unwrap().to_record_bytes();
    let first = SaMaterial::from_keymat(9, OUT, &[1; 16])
        .unwrap()
        .to_record_bytes();
    assert_eq!(*kept, *first, "the first key stays");
    a.on_record(t, NodeId(3), &rec(1));
    assert_eq!(a.counters().sa_keys_refused, 1, "the same key again");
    assert_eq!(a.counters().decode_errors, 0);
}

/// Ticks `m` from time zero, a step at a time, until it takes traffic; returns that time.
fn tick_until_serving<T: NodeSpecificTable>(
    m: &mut Member<T>,
    view: &ConsensusView<'_>,
) -> Duration {
    tick_alone_until(m, view, Member::takes_traffic)
}

/// Ticks `m` from time zero, a step at a time and hearing no peer, until `ready` holds (at
/// most 30 s); returns that time.
fn tick_alone_until<T: NodeSpecificTable>(
    m: &mut Member<T>,
    view: &ConsensusView<'_>,
    ready: impl Fn(&Member<T>) -> bool,
) -> Duration {
    let mut now = Duration::ZERO;
    while !ready(m) {
        now += STEP;
        assert!(now < Duration::from_secs(30), "not ready by {now:?}");
        m.tick(at(now), view);
    }
    now
}

/// A resync answer to a witness (which handles no traffic) carries the SA states but no key.
#[test]
fn a_resync_answer_to_a_witness_carries_no_key() {
    let mut cfg = mcfg(1, &[1, 2], FAILURE);
    cfg.peers.push((NodeId(3), Role::Witness));
    let mut m = Member::new(cfg, core(1));
    let a = all_to(1, 1);
    m.on_agreed(at(Duration::ZERO), &a, || Duration::ZERO);
    let voters = [NodeId(1)];
    let view = follower_view(1, &a, &voters);
    let now = tick_until_serving(&mut m, &view);
    assert!(now <= FAILURE + HEARTBEAT + STEP, "ready after the warm-up");
    let (peer, dst, spi) = sa_in(DistributionId(3));
    m.sa_add(at(now), peer, dst, spi, OUT, Zeroizing::new(vec![0x33; 16]))
        .unwrap();
    let _ = m.drain_outputs();
    let answer_to = |m: &mut M, n: u16| -> (usize, usize) {
        m.on_record(at(now), NodeId(n), &bytes(&Record::ResyncRequest));
        for _ in 0..4 {
            m.tick(at(now), &view);
        }
        let outs: Vec<Output> = m.drain_outputs().collect();
        let to_n =
            |o: &&Output| matches!(o, Output::Record { to: To::Node(x), .. } if *x == NodeId(n));
        let keys = outs
            .iter()
            .filter(to_n)
            .filter(|o| {
                matches!(
                    o,
                    Output::Record {
                        record: Record::SaKey { .. },
                        ..
                    }
                )
            })
            .count();
        let states = outs
            .iter()
            .filter(to_n)
            .filter(|o| {
                matches!(o, Output::Record { record: Record::Event(e), .. }
                    if matches!(e.event, Event::SaState(_)))
            })
            .count();
        (keys, states)
    };
    assert_eq!(answer_to(&mut m, 3), (0, 1), "the witness");
    assert_eq!(answer_to(&mut m, 2), (1, 1), "a member");
}

// ----- 7. SA takeover -----

/// An SA added on its owner sends its key to the peers; the owner runs it; after the move the
/// new owner waits for the old owner's final state, then continues the outbound sequence
/// `seq_jump` past it.
#[test]
fn sa_key_replication_and_takeover_with_sequence_jump() {
    let mut c = Cluster::new(&[1, 2, 3], FAILURE);
    assert_eq!(
        c.m(2).esp_for(7).err(),
        Some(SaCommandError::NotTakingTraffic)
    );
    c.settle();
    let d = c.agreed().ids_of(NodeId(2))[0];
    let (peer, dst, spi) = sa_in(d);
    let t = c.t();
    let key = vec![0x17u8; 32];
    assert_eq!(
        c.m(2)
            .sa_add(t, peer, dst, spi, OUT, Zeroizing::new(key.clone())),
        Ok(d)
    );
    let outs: Vec<Output> = c.m(2).drain_outputs().collect();
    let keys: Vec<&Output> = outs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::Record {
                    record: Record::SaKey { .. },
                    ..
                }
            )
        })
        .collect();
    assert_eq!(keys.len(), 1);
    let Output::Record {
        to: To::Peers,
        record: Record::SaKey { spi: s, key: k },
    } = keys[0]
    else {
        panic!("{keys:?}");
    };
    let m = SaMaterial::from_record_bytes(k).unwrap();
    assert_eq!((*s, m.dir, m.key.key_bytes()), (spi, OUT, &key[..]));
    assert_eq!(m.key.salt(), esp::salt(spi), "a bare key: the SPI's salt");
    for o in outs {
        c.deliver(2, o);
    }
    c.route();
    assert!(c.m[&1].has_sa_key(spi) && c.m[&3].has_sa_key(spi));
    // the owner runs it; the others refuse
    let (first, last, _) = c.m(2).esp_for(spi).unwrap().send(spi, 5, b"x").unwrap();
    assert_eq!((first, last), (1, 5));
    assert_eq!(
        c.m(3).esp_for(spi).err(),
        Some(SaCommandError::NotHere {
            spi,
            owner: Some(2)
        })
    );
    assert_eq!(
        c.m(1).esp_for(0xdead).err(),
        Some(SaCommandError::NotHere {
            spi: 0xdead,
            owner: None
        })
    );
    // the engine's state is synced and replicated
    c.run_for(ms(200), |_| {});
    assert_eq!(c.m[&3].core().sa_state(spi).unwrap().outbound_seq, 6);

    let e = c.agreed().epoch.0;
    c.hold.insert((2, 3));
    c.move_to_3(d);
    c.run_until(ms(500), |c| c.agreed().epoch.0 == e + 2);
    assert_eq!(
        c.m(2).esp_for(spi).err(),
        Some(SaCommandError::NotHere { spi, owner: None }),
        "released in phase 1"
    );
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == e + 3);
    assert_eq!(
        c.m(3).esp_for(spi).err(),
        Some(SaCommandError::Waiting {
            spi,
            node: 2,
            epoch: e + 2
        })
    );
    assert_eq!(c.m[&3].counters().sa_jumps, 0);
    assert!(!c.m[&3].esp().has(spi));
    c.release(2, 3);
    let n3 = c.m(3);
    assert_eq!(n3.counters().sa_jumps, 1);
    assert!(n3.esp().has(spi));
    assert_eq!(n3.core().sa_state(spi).unwrap().outbound_seq, 6 + SEQ_JUMP);
    let (first, _, _) = n3.esp_for(spi).unwrap().send(spi, 1, b"y").unwrap();
    assert_eq!(first, 6 + SEQ_JUMP);
    assert_eq!(
        c.m(2).esp_for(spi).err(),
        Some(SaCommandError::NotHere {
            spi,
            owner: Some(3)
        })
    );
    assert_eq!(c.m[&1].counters().sa_jumps + c.m[&2].counters().sa_jumps, 0);
    // the jump is replicated: a later takeover continues past it
    c.run_for(ms(200), |_| {});
    assert_eq!(
        c.m[&1].core().sa_state(spi).unwrap().outbound_seq,
        6 + SEQ_JUMP + 1
    );
}

/// `sa_add` refuses a key another SA has (whatever the salt and direction), an SPI that
/// exists, and keying material of the wrong length; a refusal changes nothing and sends
/// nothing. Each SA's key goes to the peers with its direction and salt.
#[test]
fn sa_add_refuses_a_key_for_two_sas() {
    let (mut c, d) = three_and_an_id_of_2();
    let (peer, dst, spi) = sa_in(d);
    let t = c.t();
    let mut km = vec![0x51u8; 32];
    km.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        c.m(2)
            .sa_add(t, peer, dst, spi, OUT, Zeroizing::new(km.clone())),
        Ok(d)
    );
    c.route();
    // the same key for the other direction (another salt too), for another SPI
    let mut same = vec![0x51u8; 32];
    same.extend_from_slice(&[9, 9, 9, 9]);
    for (m, s, dir, k) in [
        (2, spi + 1, Direction::Inbound, same.clone()),
        (2, spi + 1, OUT, km.clone()),
        (1, spi + 2, Direction::Inbound, vec![0x51u8; 32]),
    ] {
        let e = c
            .m(m)
            .sa_add(t, peer, dst, s, dir, Zeroizing::new(k))
            .unwrap_err();
        let SaCommandError::KeyReused { spi: a, other, .. } = e else {
            panic!("{e:?}");
        };
        assert_eq!((a, other), (s, spi));
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("0x{s:08x}")) && msg.contains(&format!("0x{spi:08x}")),
            "names both SPIs: {msg}"
        );
        assert!(msg.contains("own key"), "{msg}");
        assert!(!msg.contains("5151"), "no key byte: {msg}");
    }
    // the SPI exists (here and on a peer that got its key)
    for m in [2, 3] {
        assert_eq!(
            c.m(m).sa_add(
                t,
                peer,
                dst,
                spi,
                Direction::Inbound,
                Zeroizing::new(vec![7; 32])
            ),
            Err(SaCommandError::Exists(spi))
        );
    }
    assert_eq!(
        c.m(2)
            .sa_add(t, peer, dst, spi + 3, OUT, Zeroizing::new(vec![7; 33])),
        Err(SaCommandError::BadKey {
            spi: spi + 3,
            error: esp::KeyError::Length(33)
        })
    );
    for m in [1, 2, 3] {
        assert_eq!(c.m(m).drain_outputs().count(), 0, "a refusal sends nothing");
        assert_eq!(c.m[&m].sa_states().count(), 1);
        assert_eq!(c.m[&m].sa_direction(spi), Some(OUT));
    }
    // a fresh key for the other direction is taken
    assert_eq!(
        c.m(2).sa_add(
            t,
            peer,
            dst,
            spi + 1,
            Direction::Inbound,
            Zeroizing::new(vec![0x52; 36])
        ),
        Ok(d)
    );
    c.route();
    assert_eq!(c.m[&3].sa_direction(spi + 1), Some(Direction::Inbound));
}

/// A GCM key with the nonce it sealed under: (key, salt, IV).
type KeyNonce = (Vec<u8>, [u8; 4], [u8; 8]);

/// Every (key, salt, IV) that seals a packet, with where it was sealed.
#[derive(Default)]
struct Nonces {
    seen: BTreeMap<KeyNonce, String>,
    sealed: u64,
}

impl Nonces {
    /// Records the nonces of `pkts` (sealed under the SAs of `keys`); panics on a reuse.
    fn record(&mut self, keys: &BTreeMap<u32, SaMaterial>, pkts: &[Vec<u8>], what: &str) {
        for p in pkts {
            let spi = u32::from_be_bytes(p[0..4].try_into().unwrap());
            let iv: [u8; 8] = p[8..16].try_into().unwrap();
            let m = &keys[&spi];
            let k = (m.key.key_bytes().to_vec(), m.key.salt(), iv);
            if let Some(first) = self.seen.insert(k, what.to_owned()) {
                panic!(
                    "(key, nonce) reused: SA 0x{spi:08x} IV {} sealed by {first} and again by {what}",
                    u64::from_be_bytes(iv)
                );
            }
            self.sealed += 1;
        }
    }
}

/// The tunnel of the nonce test: its outbound and inbound SA, the tunnel peer, and what has
/// been sealed and opened on it so far.
struct Tunnel {
    out_spi: u32,
    in_spi: u32,
    keys: BTreeMap<u32, SaMaterial>,
    peer: EspPath,
    nonces: Nonces,
    /// The members that sealed on the outbound SA at some time.
    sealers: BTreeSet<u16>,
    /// The peer's packets the cluster opened on the inbound SA.
    accepted: u64,
}

impl Tunnel {
    /// One step's traffic: every member running the outbound SA seals 5 packets, the peer
    /// seals 3 to whoever runs the inbound SA.
    fn traffic(&mut self, c: &mut Cluster, what: &str) {
        for n in [1u16, 2, 3] {
            if c.frozen.contains(&n) {
                continue;
            }
            if let Ok(mut esp) = c.m(n).esp_for(self.out_spi) {
                let (_, _, pkts) = esp.send(self.out_spi, 5, b"out").unwrap();
                self.nonces
                    .record(&self.keys, &pkts, &format!("node {n} ({what})"));
                self.sealers.insert(n);
            }
        }
        let (_, _, pkts) = self.peer.send(self.in_spi, 3, b"in").unwrap();
        self.nonces
            .record(&self.keys, &pkts, &format!("the peer ({what})"));
        for n in [1u16, 2, 3] {
            if let Ok(mut esp) = c.m(n).esp_for(self.in_spi) {
                self.accepted += esp.receive(&pkts).0;
            }
        }
    }

    /// Up to `most` steps of `c`, each followed by its traffic, until `done` holds (checked
    /// before each step).
    fn steps_until(
        &mut self,
        c: &mut Cluster,
        most: usize,
        what: &str,
        mut done: impl FnMut(&mut Cluster) -> bool,
    ) {
        for _ in 0..most {
            if done(c) {
                break;
            }
            c.step();
            self.traffic(c, what);
        }
    }
}

/// Invariant 5, whole: no (key, nonce) pair ever seals two packets over a tunnel's life. The
/// tunnel is an outbound SA (the cluster seals) and an inbound SA (the tunnel peer seals),
/// each with its own key and salt. Every member that runs the outbound SA seals on every
/// step, through planned moves, failovers (a cut owner seals until it fences), restarts of
/// the owner right after it sealed (before the periodic SA sync) and of other members; the
/// peer seals on the inbound SA throughout. Every packet's (key, salt, IV) is recorded from
/// its bytes, and none repeats.
#[test]
fn no_key_nonce_pair_seals_twice_across_takeovers_and_restarts() {
    let (mut c, d) = three_and_an_id_of_2();
    let (peer_ip, dst, out_spi) = sa_in(d);
    let in_spi = out_spi + 0x100;
    let mut out_km = vec![0xa1u8; 32];
    out_km.extend_from_slice(&[0xa1, 0, 0, 1]);
    let mut in_km = vec![0xb2u8; 32];
    in_km.extend_from_slice(&[0xb2, 0, 0, 2]);
    let t = c.t();
    for (spi, dir, km) in [
        (out_spi, OUT, &out_km),
        (in_spi, Direction::Inbound, &in_km),
    ] {
        assert_eq!(
            c.m(2)
                .sa_add(t, peer_ip, dst, spi, dir, Zeroizing::new(km.clone())),
            Ok(d)
        );
    }
    c.route();
    let keys: BTreeMap<u32, SaMaterial> = [
        (
            out_spi,
            SaMaterial::from_keymat(out_spi, OUT, &out_km).unwrap(),
        ),
        (
            in_spi,
            SaMaterial::from_keymat(in_spi, Direction::Inbound, &in_km).unwrap(),
        ),
    ]
    .into();
    // the tunnel peer: the same SAs, directions flipped
    let mut peer = EspPath::new();
    for (spi, m) in &keys {
        let st = c.m[&2].core().sa_state(*spi).unwrap();
        peer.install(*spi, &m.mirrored(), &st).unwrap();
    }
    let mut tun = Tunnel {
        out_spi,
        in_spi,
        keys,
        peer,
        nonces: Nonces::default(),
        sealers: BTreeSet::new(),
        accepted: 0,
    };
    let owner = |c: &Cluster| c.agreed().owner(d).map(|n| n.0);
    let runs_somewhere = |c: &mut Cluster| {
        [1u16, 2, 3]
            .iter()
            .any(|n| c.m(*n).esp_for(out_spi).is_ok())
    };
    for round in 0..12u32 {
        let o = owner(&c).unwrap();
        let other = [1u16, 2, 3].into_iter().find(|n| *n != o).unwrap();
        let what = match round % 4 {
            0 => format!("round {round}: move from node {o} to node {other}"),
            1 => format!("round {round}: owner node {o} restarts"),
            2 => format!("round {round}: owner node {o} cut off"),
            _ => format!("round {round}: node {other} restarts"),
        };
        tun.traffic(&mut c, &what);
        tun.steps_until(&mut c, 7, &what, |_| false);
        match round % 4 {
            0 => {
                let e = c.agreed().epoch.0;
                c.m(c.leader)
                    .request_move(&[u64::from(d.0)], NodeId(other))
                    .unwrap();
                tun.steps_until(&mut c, 100, &what, |c| c.agreed().epoch.0 >= e + 3);
            }
            1 => c.restart(o),
            2 => {
                if c.leader == o {
                    // consensus elects another leader
                    c.leader = other;
                }
                c.cut.insert(o);
                tun.steps_until(&mut c, 200, &what, |c| owner(c) != Some(o));
                assert_ne!(owner(&c), Some(o), "{what}: no failover");
                tun.steps_until(&mut c, 30, &what, |_| false);
                c.heal(o);
            }
            _ => c.restart(other),
        }
        // until the SA runs again somewhere
        for _ in 0..500 {
            tun.traffic(&mut c, &what);
            c.step();
            if runs_somewhere(&mut c) {
                break;
            }
        }
        assert!(
            runs_somewhere(&mut c),
            "{what}: the SA does not run anywhere"
        );
    }
    // not vacuous: every member sealed on the SA at some time, thousands of packets were
    // sealed, and the cluster opened the peer's packets on the inbound SA
    assert_eq!(tun.sealers, [1, 2, 3].into());
    assert!(tun.nonces.sealed > 1500, "{}", tun.nonces.sealed);
    assert!(tun.accepted > 500, "{}", tun.accepted);
}

// ----- 8. bad input -----

/// A member of a 3-node cluster that owns nothing, with one replicated entry of node 2's.
fn with_one_entry() -> (M, Vec<u8>) {
    let (mut a, alloc) = agreed_member(1, &[1, 2, 3], 2);
    let _ = a.drain_outputs();
    let mut n2 = core(2);
    n2.apply_allocation(crate::ids::Millis(0), &alloc).unwrap();
    let p = build::udp(ip(1), 5000, ip(200), 53, b"q").unwrap();
    n2.handle_packet(crate::ids::Millis(0), &p);
    let msg: Message = n2.drain_outbox().remove(0).message;
    assert!(matches!(msg.event, Event::Add(_)));
    (a, bytes(&Record::Event(msg)))
}

/// Garbage, wrong lengths and an `E` record speaking for another node are counted as decode
/// errors and change nothing; nothing panics.
#[test]
fn bad_records_are_counted_and_change_nothing() {
    let (mut a, good) = with_one_entry();
    let t = at(ms(10));
    let mut spoofed_msg = match Record::parse(&good).unwrap() {
        Record::Event(m) => m,
        _ => unreachable!(),
    };
    spoofed_msg.sender = NodeId(3);
    let spoofed = bytes(&Record::Event(spoofed_msg.clone()));
    spoofed_msg.sender = NodeId(1);
    let as_me = bytes(&Record::Event(spoofed_msg));
    let mut long_final = bytes(&Record::Final(Epoch(9)));
    long_final.push(0);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("unknown tag", b"Z123".to_vec()),
        ("final too short", b"F\x00\x00\x01".to_vec()),
        ("final too long", long_final),
        ("resync request with a payload", b"Qx".to_vec()),
        ("resync done with a payload", b"D\x00".to_vec()),
        (
            "key shorter than its length",
            b"K\x00\x00\x00\x07\x20abc".to_vec(),
        ),
        ("key header truncated", b"K\x00\x00".to_vec()),
        ("event truncated", good[..good.len() - 3].to_vec()),
        ("event tag only", b"E".to_vec()),
        (
            "event spoken for node 3 on node 2's stream",
            spoofed.clone(),
        ),
        ("event spoken for the receiver itself", as_me),
    ];
    let mut bad_key = bytes(&Record::SaKey {
        spi: 9,
        key: Zeroizing::new(vec![1; 16]),
    });
    bad_key.push(0xff);
    cases.push(("key longer than its length", bad_key));
    for (i, (what, rec)) in cases.iter().enumerate() {
        a.on_record(t, NodeId(2), rec);
        assert_eq!(a.counters().decode_errors, i as u64 + 1, "{what}");
        assert_eq!(a.counters().apply_errors, 0, "{what}");
        assert!(a.core().common().is_empty(), "{what}");
        assert!(a.sa_states().next().is_none() && !a.has_sa_key(9), "{what}");
        assert_eq!(a.drain_outputs().count(), 0, "{what}: no answer");
    }
    // the spoofed record is fine from its real sender; the good one from node 2
    a.on_record(t, NodeId(3), &spoofed);
    a.on_record(t, NodeId(2), &good);
    assert_eq!(a.counters().decode_errors, cases.len() as u64);
    assert_eq!(a.core().common().len(), 1);
    // an undecodable datagram is counted as well
    a.on_bad_datagram();
    assert_eq!(a.counters().decode_errors, cases.len() as u64 + 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Random bytes (often behind a real tag) into `on_record` never panic; whatever does not
    /// parse is counted and leaves the tables alone.
    #[test]
    fn random_records_never_panic(
        tag in proptest::sample::select(vec![b'E', b'F', b'Q', b'D', b'K', b'H', 0u8]),
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        from in 0u16..5,
    ) {
        let (mut a, _) = with_one_entry();
        let mut rec = vec![tag];
        rec.extend_from_slice(&body);
        let errors = a.counters().decode_errors;
        let parses = Record::parse(&rec).is_ok();
        a.on_record(at(ms(10)), NodeId(from), &rec);
        let _ = a.drain_outputs().count();
        if !parses {
            proptest::prop_assert_eq!(a.counters().decode_errors, errors + 1);
            proptest::prop_assert!(a.core().common().is_empty());
            proptest::prop_assert_eq!(a.core().node_table().len(), 0);
        }
        let view_alloc = all_to(2, 1);
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        a.tick(at(ms(20)), &ConsensusView {
            is_leader: true,
            leader: Some(a.config().node),
            agreed: &view_alloc,
            voters: &voters,
            conf_change_pending: false,
        });
    }
}

// ----- 9. invariant 1 across a partition -----

/// A member cut off from the other two fences before the majority's new allocation gives its
/// identifiers away; at no tick is an identifier owned and acted on by two members; after the
/// partition heals the member resyncs and takes its share again.
#[test]
fn partition_never_yields_two_acting_owners() {
    let mut c = three_settled();
    let e1 = c.agreed().clone();
    let three = e1.ids_of(NodeId(3));
    let cut_at = c.now;
    c.cut.insert(3);
    let mut fenced_at = None;
    c.run_for(ms(1500), |c| {
        let dbl = c.double_actors();
        assert!(dbl.is_empty(), "at {:?}: {dbl:?} acted on twice", c.now);
        if fenced_at.is_none() && c.m[&3].is_fenced() {
            fenced_at = Some(c.now);
        }
    });
    let fenced_at = fenced_at.expect("node 3 fenced");
    // the first agreed epoch in which node 3 owns nothing
    let given = c
        .history
        .iter()
        .find(|a| a.epoch > e1.epoch && a.ids_of(NodeId(3)).is_empty())
        .expect("node 3's identifiers given away")
        .epoch;
    let given_at = c.agreed_at[&given.0];
    assert!(
        fenced_at < given_at,
        "fenced at {fenced_at:?}, identifiers given away at {given_at:?}"
    );
    assert!(fenced_at - cut_at <= FAILURE * 3 / 4 + STEP);
    // node 3 still believes in epoch 1 but does not act; the majority acts on its identifiers
    assert!(three.iter().all(|d| c.m[&3].core().owns(*d)));
    assert!(!c.m[&3].takes_traffic());
    let t = c.t();
    for d in &three {
        let owner = c.agreed().owner(*d).unwrap().0;
        assert!(owner == 1 || owner == 2);
        let m = c.m(owner);
        assert!(m.takes_traffic() && !m.handover().is_waiting(*d));
        assert_eq!(c.m(3).on_packet(t, &udp_in(*d, 0)), PacketOutcome::NotReady);
    }
    // heal: node 3 catches up on the agreed log, resyncs and gets identifiers back
    c.heal(3);
    c.run_until(ms(3000), |c| {
        let dbl = c.double_actors();
        assert!(dbl.is_empty(), "at {:?}: {dbl:?} acted on twice", c.now);
        c.m[&3].takes_traffic() && !c.agreed().ids_of(NodeId(3)).is_empty()
    });
    c.run_for(ms(1000), |c| {
        assert!(c.double_actors().is_empty(), "at {:?}", c.now);
    });
    assert!(c.m[&3].last_resync().is_some());
    counts_ok(c.agreed(), &[1, 2, 3]);
    let e = c.agreed().epoch;
    assert!(c
        .m
        .values()
        .all(|m| m.core().allocation().epoch == e && m.takes_traffic()));
}

// ----- 10. stalls and lost proposals -----

/// A frozen member's identifiers move in one proposal (it looks dead); when it resumes with
/// the agreed log delivered first, nothing is acted on twice and it takes its share again.
#[test]
fn frozen_member_fails_over_and_rejoins() {
    let (mut c, e1, n) = three_then_3_lost(true);
    c.run_until(ms(2000), |c| c.agreed().ids_of(NodeId(3)).is_empty());
    assert_eq!(
        c.proposals.len(),
        n + 1,
        "a dead owner's identifiers move in one step"
    );
    assert_eq!(c.agreed().epoch.0, e1.epoch.0 + 1);
    c.run_for(ms(500), |_| {});
    c.frozen.remove(&3);
    c.heal(3);
    assert!(!c.m[&3].core().owns(e1.ids_of(NodeId(3))[0]));
    c.run_until(ms(3000), |c| {
        let dbl = c.double_actors();
        assert!(dbl.is_empty(), "at {:?}: {dbl:?}", c.now);
        c.m[&3].takes_traffic() && !c.agreed().ids_of(NodeId(3)).is_empty()
    });
    c.run_for(ms(500), |c| assert!(c.double_actors().is_empty()));
    counts_ok(c.agreed(), &[1, 2, 3]);
}

/// A failover proposal consensus drops is made again after the proposal timeout.
#[test]
fn dropped_failover_proposal_is_made_again() {
    let mut c = three_settled();
    let e = c.agreed().epoch;
    let n = c.proposals.len();
    c.cut.insert(3);
    c.drop_proposals = true;
    c.run_until(ms(1000), |c| c.proposals.len() > n);
    let first = c.proposals[n].0;
    c.run_for(ms(500), |_| {});
    assert_eq!(c.proposals.len(), n + 1, "one proposal pending");
    c.drop_proposals = false;
    c.run_until(ms(2000), |c| c.agreed().epoch > e);
    let (again, a) = c.proposals.last().unwrap().clone();
    assert_eq!(c.proposals.len(), n + 2);
    assert!(
        again >= first + super::leader::PROPOSAL_TIMEOUT,
        "{first:?} {again:?}"
    );
    assert_eq!(a.epoch.0, e.0 + 1);
    counts_ok(&a, &[1, 2]);
}

// ----- the card going away -----

type ModelTable = crate::node_table::TieredTable<
    crate::card_table::CardTable<hal::fault::FaultInjector<sim_bridge::model::ModelCard>>,
>;

fn model_table() -> ModelTable {
    let model = sim_bridge::model::ModelCard::with_depth(64).unwrap();
    let card = driver::Card::probe(hal::fault::FaultInjector::new(model)).unwrap();
    crate::node_table::TieredTable::new(
        crate::card_table::CardTable::new(card, count()).unwrap(),
        count(),
    )
}

/// A card that leaves the bus is an error the member's caller sees (nothing is parked in the
/// software overflow instead); the common table keeps every entry, and a new card is rebuilt
/// from it with exactly the entries of the identifiers the member owns.
#[test]
fn gone_card_reaches_the_caller_and_is_rebuilt_from_the_common_table() {
    let mut c = NodeConfig::new(NodeId(1), ClusterSecret::new(SECRET));
    c.count = count();
    let mut m = Member::new(mcfg(1, &[1], FAILURE), Node::new(c, model_table()));
    let a = all_to(1, 1);
    m.on_agreed(at(Duration::ZERO), &a, || Duration::ZERO);
    let voters = [NodeId(1)];
    let view = follower_view(1, &a, &voters);
    let now = tick_until_serving(&mut m, &view);
    let flows: Vec<Vec<u8>> = (0..6u16)
        .map(|i| build::udp(ip(1), 2000 + i, ip(200), 53, b"q").unwrap())
        .collect();
    for f in &flows[..3] {
        assert_eq!(m.on_packet(at(now), f), PacketOutcome::Created);
    }
    assert_eq!(m.core().node_table().card().len(), 3);
    assert!(m.take_card_error().is_none());
    // the card leaves the bus
    m.node_table_mut()
        .card_mut()
        .card_mut()
        .regs_mut()
        .inject(hal::fault::Fault::AllOnes { after_reads: 0 });
    for f in &flows[3..] {
        let _ = m.on_packet(at(now), f);
    }
    let e = m.take_card_error().expect("the gone card is reported");
    assert!(e.is_device_gone(), "{e}");
    assert!(
        std::error::Error::source(&e).is_some(),
        "the driver's error is kept"
    );
    assert_eq!(
        m.core().node_table().overflow().len(),
        0,
        "nothing parked in the overflow"
    );
    assert_eq!(
        m.core().common().len(),
        6,
        "the common table keeps every entry"
    );
    // a new card: rebuilt from the common table
    let installed = m.rebuild_card(at(now), model_table());
    assert_eq!(installed, 6);
    assert_eq!(m.core().node_table().card().len(), 6);
    assert!(
        m.core().check_tables().is_empty(),
        "{:?}",
        m.core().check_tables()
    );
    let outs: Vec<Output> = m.drain_outputs().collect();
    assert!(logs(&outs)
        .iter()
        .any(|l| l.starts_with("card rebuilt from the common table")));
    for f in &flows {
        assert_eq!(m.on_packet(at(now), f), PacketOutcome::Hit);
    }
}

/// A card rebuild installs whole identifiers per turn, about [`super::rebuild::REBUILD_SLICE`]
/// entries, and continues at the next ticks; until its identifier is rebuilt a packet is not
/// handled, and once done the card holds exactly the owned entries.
#[test]
fn card_rebuild_is_sliced_and_holds_packets_of_identifiers_not_rebuilt() {
    use super::rebuild::REBUILD_SLICE;
    let (mut m, a) = agreed_member(1, &[1], 1);
    let voters = [NodeId(1)];
    let view = follower_view(1, &a, &voters);
    let mut now = tick_until_serving(&mut m, &view);
    let n = 2 * REBUILD_SLICE + 500;
    let flows: Vec<Vec<u8>> = (0..n as u16)
        .map(|i| build::udp(ip(1), 2000 + i, ip(200), 53, b"q").unwrap())
        .collect();
    for f in &flows {
        assert_eq!(m.on_packet(at(now), f), PacketOutcome::Created);
    }
    let largest = count()
        .all()
        .map(|d| m.core().common().dist_len(d))
        .max()
        .unwrap();
    let _ = m.drain_outputs();

    let first = m.rebuild_card(at(now), SoftwareTable::new(count()));
    assert!(
        (REBUILD_SLICE..REBUILD_SLICE + largest).contains(&first),
        "{first}"
    );
    assert!(m.rebuilding());
    assert_eq!(m.next_timeout(), Duration::ZERO);
    assert_eq!(m.core().node_table().len(), first);
    let outcomes: Vec<PacketOutcome> = flows.iter().map(|f| m.on_packet(at(now), f)).collect();
    let hits = outcomes
        .iter()
        .filter(|o| **o == PacketOutcome::Hit)
        .count();
    let held = outcomes
        .iter()
        .filter(|o| **o == PacketOutcome::NotReady)
        .count();
    assert_eq!(
        (hits, held),
        (first, n - first),
        "not yet rebuilt: held, not handled"
    );

    let mut turns = 0;
    let mut done_log = false;
    while m.rebuilding() {
        let before = m.core().node_table().len();
        now += STEP;
        m.tick(at(now), &view);
        let outs: Vec<Output> = m.drain_outputs().collect();
        done_log |= logs(&outs).iter().any(|l| {
            *l == format!("card rebuilt from the common table: {n} entries installed").as_str()
        });
        let added = m.core().node_table().len() - before;
        assert!(added < REBUILD_SLICE + largest, "{added}");
        turns += 1;
        assert!(turns < 100);
    }
    assert!(turns >= 1);
    assert!(done_log);
    assert_eq!(m.core().node_table().len(), n);
    assert!(
        m.core().check_tables().is_empty(),
        "{:?}",
        m.core().check_tables()
    );
    for f in &flows {
        assert_eq!(m.on_packet(at(now), f), PacketOutcome::Hit);
    }
}

// ----- found by these tests, fixed -----

/// A member that hears a heartbeat with a newer applied epoch stops acting at once, not at
/// its next tick.
#[test]
fn behind_is_learned_from_the_heartbeat_itself() {
    let mut c = three_settled();
    let e = c.agreed().epoch.0;
    let d = c.agreed().ids_of(NodeId(3))[0];
    c.hold.insert((3, 1));
    c.hold.insert((3, 2));
    c.block_hb.insert((3, 1));
    c.block_hb.insert((3, 2));
    c.lag.insert(3);
    c.run_until(ms(2000), |c| c.agreed().epoch.0 > e);
    let t = c.t();
    let owner = c.agreed().owner(d).unwrap().0;
    assert!(c.m(owner).takes_traffic() && c.m(owner).core().owns(d));
    assert!(
        c.m(3).applied_epoch(NodeId(owner)).0 > e,
        "node 3 heard the new epoch"
    );
    assert_eq!(c.m(3).on_packet(t, &udp_in(d, 3)), PacketOutcome::NotReady);
}

/// An operator move whose release was not agreed is planned again, not forgotten.
#[test]
fn operator_move_survives_an_unagreed_release() {
    let (mut c, d) = three_and_an_id_of_2();
    c.drop_proposals = true;
    let n = c.proposals.len();
    c.move_to_3(d);
    c.run_until(ms(100), |c| c.proposals.len() > n);
    c.drop_proposals = false;
    c.run_for(ms(3000), |_| {});
    assert_eq!(c.agreed().owner(d), Some(NodeId(3)));
}

/// An epoch whose waiting identifier moved on before its gate opened still completes.
#[test]
fn epoch_completes_when_its_waiting_identifier_moves_on() {
    let (mut c, d) = three_and_an_id_of_2();
    let (_, gained_in) = move_held(&mut c, d);
    let e = c.agreed().epoch.0;
    c.m(1).request_move(&[u64::from(d.0)], NodeId(1)).unwrap();
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == e + 3);
    c.release(2, 3);
    c.run_for(ms(500), |_| {});
    let n3 = &c.m[&3];
    assert!(n3.handover().waits_for(d).is_none());
    let a = n3
        .applied()
        .iter()
        .find(|a| a.epoch == gained_in.0)
        .unwrap();
    assert_ne!(a.complete_unix_ms, 0, "{a:?}");
}

/// An identifier that moves on (node 2 to node 3 to node 1) before node 3's gate opened: node 1
/// waits for node 2's final state too, and never reuses a sequence number node 2 sent.
#[test]
fn handover_gate_remembers_every_earlier_owner() {
    let (mut c, d) = three_and_an_id_of_2();
    let (peer, dst, spi) = sa_in(d);
    let t = c.t();
    c.m(2)
        .sa_add(t, peer, dst, spi, OUT, Zeroizing::new(vec![0x33; 32]))
        .unwrap();
    c.route();
    c.run_for(ms(200), |_| {});
    assert_eq!(c.m[&1].core().sa_state(spi).unwrap().outbound_seq, 1);
    c.hold.insert((2, 1));
    c.hold.insert((2, 3));
    let (_, last, _) = c.m(2).esp_for(spi).unwrap().send(spi, 1500, b"x").unwrap();
    assert_eq!(last, 1500);
    let e = c.agreed().epoch.0;
    c.move_to_3(d);
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == e + 3);
    assert!(c.m[&3].handover().is_waiting(d));
    c.m(1).request_move(&[u64::from(d.0)], NodeId(1)).unwrap();
    c.run_until(ms(1000), |c| c.agreed().epoch.0 == e + 6);
    assert_eq!(c.agreed().owner(d), Some(NodeId(1)));
    assert!(
        c.m[&1].handover().is_waiting(d),
        "node 2's final state has not arrived"
    );
    assert_eq!(
        c.m[&1].handover().waits_for(d).map(|w| w.0),
        Some(NodeId(2))
    );
    assert!(
        c.m(1).esp_for(spi).is_err(),
        "the SA does not run before it"
    );
    // node 2's stream arrives: node 1 continues past everything node 2 sent
    c.release(2, 1);
    c.run_for(ms(300), |_| {});
    assert!(!c.m[&1].handover().is_waiting(d));
    let (first, _, _) = c.m(1).esp_for(spi).unwrap().send(spi, 1, b"y").unwrap();
    assert!(
        first > last,
        "node 1 sends seq {first}; node 2 already used up to {last}"
    );
}

/// A fence shorter than the failure time (the member's loop stalled on a long install, its
/// lease ran out, new echoes came a moment later): no peer has called it failed and the
/// replication streams held, so it takes traffic again without a second resync.
#[test]
fn short_fence_lifts_without_resync() {
    let alloc = all_to(1, 1);
    let view = follower_view(1, &alloc, &THREE_VOTERS);
    let (mut a, mut now) = heard_by_2_and_3_until_500_ms(&view);
    let outs = tick_until(&mut a, &mut now, ms(700), &[], &view);
    assert!(a.is_fenced() && !a.takes_traffic());
    assert!(logs(&outs).contains(&"fenced: true"));
    let outs = tick_until(&mut a, &mut now, ms(760), &[2, 3], &view);
    assert!(!a.is_fenced());
    assert!(a.takes_traffic(), "back at once");
    let l = logs(&outs);
    assert!(
        l.iter().any(|x| x.starts_with("fence lifted after")),
        "{l:?}"
    );
    assert!(!l.contains(&"resyncing after the partition"), "{l:?}");
    assert!(!outs.iter().any(|o| matches!(
        o,
        Output::Record {
            record: Record::ResyncRequest,
            ..
        }
    )));
}

/// An owner that says it is fenced (its lease ran out: no echoes reached it) while the leader
/// still hears it: the leader takes its identifiers in one step, but first stops echoing it
/// for the failure time, so that the owner cannot regain a lease when the echoes come back and
/// act on the allocation it knows while the takeover is agreed (its consensus log lags). It
/// stays fenced until it applied the takeover and owns nothing; then it is echoed again.
#[test]
fn a_fenced_owner_gets_no_lease_while_its_identifiers_are_taken() {
    let mut c = three_settled();
    let share = c.agreed().ids_of(NodeId(3));
    assert!(!share.is_empty());
    let e = c.agreed().epoch.0;
    // nobody's heartbeats reach node 3; its own reach the others
    c.block_hb.insert((1, 3));
    c.block_hb.insert((2, 3));
    c.run_until(ms(1000), |c| c.m[&3].is_fenced());
    c.lag.insert(3);
    // the echoes flow again at once
    c.block_hb.clear();
    let started = c.now;
    c.run_until(ms(2000), |c| c.agreed().epoch.0 > e);
    let took = c.now - started;
    assert!(
        share
            .iter()
            .all(|d| c.agreed().owner(*d) != Some(NodeId(3))),
        "the takeover moves node 3's share"
    );
    assert!(
        took >= FAILURE,
        "proposed after {took:?}: within a lease it may hold"
    );
    // node 3 has not applied it: it must not take traffic meanwhile
    c.run_for(ms(300), |c| {
        assert!(!c.m[&3].takes_traffic(), "node 3 regained a lease");
        assert!(c.double_actors().is_empty());
    });
    c.lag.remove(&3);
    c.heal(3);
    c.run_until(ms(2000), |c| !c.m[&3].is_fenced());
    assert!(c.agreed().ids_of(NodeId(3)).is_empty() || c.m[&3].takes_traffic());
    assert!(c.double_actors().is_empty());
}

/// `n` UDP flows of node 2's identifiers, created on node 2 and replicated; returns node 2's
/// identifiers and the flows' packets.
fn node2_flows(c: &mut Cluster, n: usize) -> (Vec<DistributionId>, Vec<Vec<u8>>) {
    let share = c.agreed().ids_of(NodeId(2));
    let flows: Vec<Vec<u8>> = (1024u16..)
        .map(|port| build::udp(ip(1), port, ip(200), 53, b"q").unwrap())
        .filter(|p| share.contains(&dist_of(p)))
        .take(n)
        .collect();
    assert_eq!(flows.len(), n);
    let t = c.t();
    let others: Vec<u16> = c.m.keys().copied().filter(|n| *n != 2).collect();
    for f in &flows {
        assert_eq!(c.m(2).on_packet(t, f), PacketOutcome::Created);
        // every member takes in every packet, in the same order
        for &o in &others {
            assert_eq!(c.m(o).on_packet(t, f), PacketOutcome::NotOurs);
        }
    }
    c.route();
    (share, flows)
}

/// A share larger than a slice moving in planned moves (its owner leaves): each gainer
/// installs it over several turns (no turn installs much more than
/// [`super::rebuild::REBUILD_SLICE`] entries, so heartbeats keep their deadlines), holds the
/// packets of identifiers whose gate opened but whose entries are not installed yet, and
/// handles them with their state once installed (none as a new flow); the applied record says
/// when the last entry went in, and the card ends with exactly the owned entries.
#[test]
fn a_large_share_is_installed_in_slices_and_its_packets_wait_for_their_state() {
    use super::rebuild::REBUILD_SLICE;
    let mut c = three_settled();
    for n in [1, 3] {
        c.m(n).set_hold(1 << 16, 64 << 20, ms(1500));
    }
    let n = 3 * REBUILD_SLICE;
    let (share, flows) = node2_flows(&mut c, n);
    for m in [1, 3] {
        assert_eq!(c.m[&m].core().common().len(), n, "replicated to {m}");
    }
    let largest = count()
        .all()
        .map(|d| c.m[&1].core().common().dist_len(d))
        .max()
        .unwrap();
    let gained_at = c.agreed().epoch.0;
    c.m(2).leave();
    let mut held = BTreeSet::new();
    let mut turns = 0;
    loop {
        let before: Vec<usize> = [1, 3]
            .iter()
            .map(|g| c.m[g].core().node_table().len())
            .collect();
        c.step();
        for (g, b) in [1u16, 3].iter().zip(before) {
            let added = c.m[g].core().node_table().len().saturating_sub(b);
            assert!(
                added < REBUILD_SLICE + largest,
                "node {g}: {added} in a turn"
            );
        }
        let a = c.agreed().clone();
        let t = c.t();
        for f in &flows {
            let d = dist_of(f);
            let Some(g) = a.owner(d).map(|o| o.0).filter(|o| *o != 2) else {
                continue;
            };
            if !c.m[&g].installing(d) || c.m[&g].handover().is_waiting(d) {
                continue;
            }
            match c.m(g).on_packet(t, f) {
                PacketOutcome::Held(token) => {
                    held.insert((g, token));
                }
                o => panic!("a packet of an identifier not installed yet was handled as {o:?}"),
            }
        }
        let moved = share
            .iter()
            .all(|d| a.owner(*d).is_some_and(|o| o != NodeId(2)));
        if moved && !c.m[&1].rebuilding() && !c.m[&3].rebuilding() {
            break;
        }
        turns += 1;
        assert!(turns < 1000, "not moved and installed after {turns} turns");
    }
    assert!(!held.is_empty(), "nothing waited for its install");
    c.run_until(ms(1000), |c| {
        held.iter()
            .all(|(g, tok)| c.released.iter().any(|(f, t, _)| f == g && t == tok))
    });
    for (from, token, outcome) in &c.released {
        if held.contains(&(*from, *token)) {
            assert_eq!(*outcome, PacketOutcome::Hit, "held on {from}, then handled");
        }
    }
    let a = c.agreed().clone();
    let mut sliced = false;
    for g in [1u16, 3] {
        let m = &c.m[&g];
        assert!(
            m.core().check_tables().is_empty(),
            "{:?}",
            m.core().check_tables()
        );
        for rec in m
            .applied()
            .iter()
            .filter(|r| r.epoch > gained_at && r.gained > 0)
        {
            assert!(rec.installed_unix_ms >= rec.at_unix_ms, "node {g}: {rec:?}");
            sliced |= rec.installed_unix_ms > rec.at_unix_ms;
        }
        let gained: usize = share
            .iter()
            .filter(|d| a.owner(**d) == Some(NodeId(g)))
            .map(|d| m.core().common().dist_len(*d))
            .sum();
        let installed: usize = m
            .applied()
            .iter()
            .filter(|r| r.epoch > gained_at)
            .map(|r| r.installed)
            .sum();
        assert_eq!(installed, gained, "node {g}");
    }
    assert!(sliced, "no gainer's install went on after its epoch's turn");
    let t = c.t();
    for f in &flows {
        let owner = a.owner(dist_of(f)).unwrap().0;
        assert_eq!(c.m(owner).on_packet(t, f), PacketOutcome::Hit);
    }
}

/// A failover of a share larger than a slice: a bystander forwards the failed owner's entries
/// to each new owner over several turns, and its `F` of the epoch comes after the last of them
/// on that stream (the new owner's gate opens only when nothing forwarded is still to come).
#[test]
fn a_large_failed_share_is_forwarded_in_slices_before_the_final_record() {
    use super::forward::FORWARD_SLICE;
    let mut c = three_settled();
    let (share, flows) = node2_flows(&mut c, 4 * FORWARD_SLICE);
    c.hold.insert((1, 3));
    c.hold.insert((3, 1));
    c.cut.insert(2);
    c.run_until(ms(5000), |c| {
        share
            .iter()
            .all(|d| c.agreed().owner(*d).is_some_and(|o| o != NodeId(2)))
    });
    let failover = c.agreed().clone();
    assert!(
        c.m[&1].forwarding() || c.m[&3].forwarding(),
        "a share of {} entries was forwarded at once",
        flows.len()
    );
    c.run_until(ms(1000), |c| !c.m[&1].forwarding() && !c.m[&3].forwarding());
    for (from, to) in [(1u16, 3u16), (3, 1)] {
        let stream: Vec<Record> = c
            .held
            .iter()
            .filter(|(f, d, _)| (*f, *d) == (from, to))
            .map(|(_, _, b)| Record::parse(b).unwrap())
            .collect();
        let final_at = stream
            .iter()
            .position(|r| *r == Record::Final(failover.epoch))
            .unwrap_or_else(|| panic!("no F of the failover epoch from {from} to {to}"));
        let forwarded: Vec<usize> = stream
            .iter()
            .enumerate()
            .filter(|(_, r)| match r {
                Record::Event(m) => match &m.event {
                    Event::Add(e) => {
                        share.contains(&e.dist) && failover.owner(e.dist) == Some(NodeId(to))
                    }
                    _ => false,
                },
                _ => false,
            })
            .map(|(i, _)| i)
            .collect();
        let expected: usize = share
            .iter()
            .filter(|d| failover.owner(**d) == Some(NodeId(to)))
            .map(|d| c.m[&from].core().common().dist_len(*d))
            .sum();
        assert_eq!(forwarded.len(), expected, "{from} -> {to}");
        assert!(
            forwarded.iter().all(|i| *i < final_at),
            "{from} -> {to}: F before a forwarded entry"
        );
    }
    c.release(1, 3);
    c.release(3, 1);
    c.run_until(ms(2000), |c| {
        share.iter().all(|d| {
            !c.m[&failover.owner(*d).unwrap().0]
                .handover()
                .is_waiting(*d)
        })
    });
}

/// A restarted member that never hears one owner (stalled, or dying) while the others still
/// do: they answer its `Q` without that owner's share (they leave it to its owner, and say so
/// in `S`), so it asks them for what no answer covered (`P`) and becomes ready with every
/// entry, not without the silent owner's.
#[test]
fn a_resync_that_misses_a_silent_owners_share_asks_for_it() {
    let mut c = three_settled();
    let (_, flows) = node2_flows(&mut c, 40);
    assert_eq!(c.m[&1].core().common().len(), flows.len());
    // node 1 restarts and hears nothing from node 2 (node 3 does)
    for pair in [(1, 2), (2, 1)] {
        c.hold.insert(pair);
        c.block_hb.insert(pair);
    }
    c.restart(1);
    c.run_until(ms(5000), |c| c.m[&1].is_ready());
    assert!(
        c.m[&3].is_alive(NodeId(2)),
        "node 3 still hears node 2: it left node 2's share to it"
    );
    assert!(
        c.logged(1, "identifiers no answer covered").is_some(),
        "{:?}",
        c.logs
    );
    let n1 = c.m[&1].core().common();
    for f in &flows {
        let key = crate::packet::parse_packet(f, crate::Framing::Ip)
            .unwrap()
            .flow(c.m[&2].core().distributor())
            .unwrap()
            .0;
        assert!(n1.get(&key).is_some(), "node 2's entry missing on node 1");
    }
}

// ----- user bindings (claim 8) -----

/// A UDP flow from `src` (source port `port` or above) whose identifier node `owner` owns.
fn flow_from(c: &Cluster, src: IpAddr, port: u16, owner: u16) -> (Vec<u8>, FlowKey) {
    let ids = c.agreed().ids_of(NodeId(owner));
    let dist = Distributor::new(&ClusterSecret::new(SECRET), count());
    (port..)
        .map(|p| build::udp(src, p, ip(200), 53, b"q").unwrap())
        .find(|p| ids.contains(&dist_of(p)))
        .map(|p| {
            let key = parse_packet(&p, Framing::Ip)
                .unwrap()
                .flow(&dist)
                .unwrap()
                .0;
            (p, key)
        })
        .unwrap()
}

/// The user of `key`'s entry in member `n`'s common table.
fn user_in(c: &Cluster, n: u16, key: &FlowKey) -> Option<crate::entry::UserId> {
    c.m[&n]
        .core()
        .common()
        .get(key)
        .expect("entry replicated")
        .user
}

#[test]
fn a_user_bound_on_one_member_marks_new_connections_on_another() {
    use crate::entry::UserId;
    let mut c = three_settled();
    let user = ip(77);
    let t = c.t();
    c.m(1)
        .user_bind(t, UserId(7), user, Duration::from_secs(60))
        .unwrap();
    c.route();
    for n in [1, 2, 3] {
        let b = c.m[&n].user_bindings(t);
        assert_eq!(b.len(), 1, "member {n}");
        assert_eq!((b[0].addr, b[0].user), (user, Some(UserId(7))));
    }
    // node 2 handles the bound address's new connection: the entry carries the user, on
    // every member's copy
    let (pkt, key) = flow_from(&c, user, 1024, 2);
    assert_eq!(c.m(2).on_packet(t, &pkt), PacketOutcome::Created);
    c.route();
    for n in [1, 2, 3] {
        assert_eq!(user_in(&c, n, &key), Some(UserId(7)), "member {n}");
    }
    // the binding is of the initiator: a connection from another address carries none
    let (other, other_key) = flow_from(&c, ip(78), 1024, 2);
    assert_eq!(c.m(2).on_packet(t, &other), PacketOutcome::Created);
    c.route();
    assert_eq!(user_in(&c, 1, &other_key), None);
    // unbound on node 3: new connections of the address carry no user, old ones keep theirs
    c.m(3).user_unbind(t, user).unwrap();
    c.route();
    assert!(c.m(3).user_unbind(t, user).is_err(), "unbound already");
    for n in [1, 2, 3] {
        assert!(c.m[&n].user_bindings(t).is_empty(), "member {n}");
    }
    let port = match parse_packet(&pkt, Framing::Ip).unwrap().ports() {
        Some((sport, _)) => sport + 1,
        None => unreachable!("UDP has ports"),
    };
    let (later, later_key) = flow_from(&c, user, port, 2);
    assert_eq!(c.m(2).on_packet(t, &later), PacketOutcome::Created);
    c.route();
    assert_eq!(user_in(&c, 1, &later_key), None);
    assert_eq!(user_in(&c, 1, &key), Some(UserId(7)));
}

#[test]
fn user_bindings_reach_a_restarted_member_and_expire_everywhere() {
    use crate::entry::UserId;
    let mut c = three_settled();
    let t0 = c.now;
    let t = c.t();
    c.m(1)
        .user_bind(t, UserId(9), ip(90), Duration::from_secs(3))
        .unwrap();
    c.route();
    // a fresh process learns the binding from its resync
    c.restart(3);
    c.settle();
    let left = c.m[&3].user_bindings(c.t());
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].user, Some(UserId(9)));
    assert!(u64::from(left[0].remaining_ms) <= 3000 - (c.now - t0).as_millis() as u64);
    // after its lifetime no member has it, and a new connection of the address has no user
    c.run_for(Duration::from_secs(3) - (c.now - t0), |_| {});
    for n in [1, 2, 3] {
        assert!(c.m[&n].user_bindings(c.t()).is_empty(), "member {n}");
    }
    let (pkt, key) = flow_from(&c, ip(90), 1024, 2);
    let t = c.t();
    assert_eq!(c.m(2).on_packet(t, &pkt), PacketOutcome::Created);
    c.route();
    assert_eq!(user_in(&c, 2, &key), None);
}
