//! What an appliance vendor wires around [`Member`]s, the smallest honest version, shared by the
//! `embed_core` and `embed_appliance` examples (a folder without `main.rs` is no example of its
//! own):
//!
//! * a transport: plain in-memory queues carrying each output's wire bytes (records through
//!   [`Record::emit`], heartbeats through [`Heartbeat::to_bytes`]) to the peer's
//!   [`Member::on_records`] or [`Member::on_datagram`], as a vendor's sockets or shared memory
//!   would;
//! * consensus: an agreed log played the way the core's own tests and `cluster-sim` play it
//!   (the lowest node leads; a proposal is agreed when its epoch follows the last agreed one and
//!   every member then gets it through [`Member::on_agreed`]). A product runs a real consensus
//!   library here (the daemon in `host` runs Raft) and fills [`ConsensusView`] from it;
//! * time: a simulated monotonic clock handed to every call as [`Time`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use cluster_core::member::{ConsensusView, Member, Output, Time, To};
use cluster_core::{Allocation, Epoch, IdCount, NodeId, NodeSpecificTable};

/// How far the clock moves between two ticks.
pub const STEP: Duration = Duration::from_millis(10);

/// Bytes in flight on the in-memory transport.
enum Wire {
    /// A record of the reliable replication stream.
    Record(Vec<u8>),
    /// A datagram (a heartbeat).
    Datagram(Vec<u8>),
}

/// Members in one process, their transport and their consensus.
pub struct Cluster<T: NodeSpecificTable> {
    /// The members, by node id.
    pub members: BTreeMap<NodeId, Member<T>>,
    /// The clock.
    pub now: Duration,
    /// Agreed allocations in order; the first is epoch 0 (nothing owned).
    agreed: Vec<Allocation>,
    voters: Vec<NodeId>,
    /// (from, to, bytes) waiting to be delivered.
    queue: VecDeque<(NodeId, NodeId, Wire)>,
    /// Pairs that have met (a transport tells the member of a peer's new process once).
    met: BTreeSet<(NodeId, NodeId)>,
    /// The members' log lines, with their node.
    pub logs: Vec<(NodeId, String)>,
}

impl<T: NodeSpecificTable> Cluster<T> {
    /// A cluster of these members (every one a voter), nothing agreed yet.
    pub fn new(members: Vec<Member<T>>, count: IdCount) -> Self {
        let members: BTreeMap<NodeId, Member<T>> =
            members.into_iter().map(|m| (m.config().node, m)).collect();
        Cluster {
            voters: members.keys().copied().collect(),
            members,
            now: Duration::ZERO,
            agreed: vec![Allocation::unowned(Epoch(0), count)],
            queue: VecDeque::new(),
            met: BTreeSet::new(),
            logs: Vec::new(),
        }
    }

    /// The clock as the members take it.
    pub fn time(&self) -> Time {
        Time {
            mono: self.now,
            unix_ms: 1_700_000_000_000 + self.now.as_millis() as u64,
        }
    }

    /// The last agreed allocation.
    pub fn agreed(&self) -> &Allocation {
        self.agreed.last().expect("epoch 0 is always there")
    }

    /// Member `n`.
    pub fn member(&mut self, n: NodeId) -> &mut Member<T> {
        self.members.get_mut(&n).expect("a member of this cluster")
    }

    /// The consensus leader: the lowest voter.
    pub fn leader(&self) -> NodeId {
        self.voters[0]
    }

    /// One step: the clock moves, every member ticks with its consensus view, then everything
    /// the members said is delivered.
    pub fn step(&mut self) {
        self.now += STEP;
        let t = self.time();
        let agreed = self.agreed().clone();
        let leader = self.leader();
        for (id, m) in self.members.iter_mut() {
            let view = ConsensusView {
                is_leader: *id == leader,
                leader: Some(leader),
                agreed: &agreed,
                voters: &self.voters,
                conf_change_pending: false,
            };
            m.tick(t, &view);
        }
        self.pump();
    }

    /// Steps until `cond` holds, at most `limit` of simulated time.
    pub fn run_until(
        &mut self,
        limit: Duration,
        what: &str,
        cond: impl Fn(&Self) -> bool,
    ) -> Result<(), String> {
        let end = self.now + limit;
        while !cond(self) {
            if self.now >= end {
                return Err(format!("{what}: not reached after {:?}", self.now));
            }
            self.step();
        }
        Ok(())
    }

    /// Steps until an allocation is agreed and every member applied it, is ready and takes
    /// traffic.
    pub fn settle(&mut self) -> Result<(), String> {
        self.run_until(Duration::from_secs(10), "cluster settled", |c| {
            let e = c.agreed().epoch;
            e.0 >= 1
                && c.members
                    .values()
                    .all(|m| m.is_ready() && m.takes_traffic() && m.core().allocation().epoch == e)
        })
    }

    /// Collects every member's outputs and delivers them until nobody has more to say.
    pub fn pump(&mut self) {
        loop {
            let mut outs = Vec::new();
            for (id, m) in self.members.iter_mut() {
                outs.extend(m.drain_outputs().map(|o| (*id, o)));
            }
            for (from, o) in outs {
                self.send(from, o);
            }
            let Some((from, to, wire)) = self.queue.pop_front() else {
                return;
            };
            self.deliver(from, to, wire);
        }
    }

    /// One output of `from`: onto the transport, into consensus, or into the log.
    fn send(&mut self, from: NodeId, o: Output) {
        match o {
            Output::Record { to, record } => {
                let mut bytes = Vec::new();
                record.emit(&mut bytes);
                let targets: Vec<NodeId> = match to {
                    To::Peers => self.members[&from].replication_peers().collect(),
                    To::Node(n) => vec![n],
                };
                for to in targets {
                    self.queue
                        .push_back((from, to, Wire::Record(bytes.clone())));
                }
            }
            Output::Heartbeat { to, heartbeat } => {
                let bytes = heartbeat.to_bytes();
                self.queue.push_back((from, to, Wire::Datagram(bytes)));
            }
            Output::Propose(a) if a.epoch.0 == self.agreed().epoch.0 + 1 => {
                let t = self.time();
                for m in self.members.values_mut() {
                    m.on_agreed(t, &a, || Duration::ZERO);
                }
                self.agreed.push(a);
            }
            Output::Log(line) => self.logs.push((from, line)),
            // a stale proposal, a voter promotion (every member is a voter already), a backlog
            // to discard (this transport keeps none), a held frame handed back (not used here)
            _ => {}
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, wire: Wire) {
        let t = self.time();
        if self.met.insert((from, to)) {
            self.member(to).on_peer_restarted(t, from);
        }
        match wire {
            Wire::Record(b) => self.member(to).on_records(t, from, [b.as_slice()]),
            Wire::Datagram(b) => {
                // a consensus message would come back here for the consensus library
                let _ = self.member(to).on_datagram(t, from, &b);
            }
        }
    }
}

/// Fails with `what` unless `ok`.
pub fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}"))
    }
}

/// The exit code of example `name` for its outcome: failure (with the reason on stderr) on
/// an error.
pub fn exit_code(name: &str, outcome: Result<(), String>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
