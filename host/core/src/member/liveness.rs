//! Liveness: failure detection by heartbeat silence, and self-fencing (a member without contact
//! to a majority of the agreed voters stops handling traffic; the majority side takes its
//! identifiers).

use std::time::Duration;

use super::{Member, Output, Role, Time};
use crate::ids::{Epoch, NodeId};
use crate::node_table::NodeSpecificTable;

/// Silence after which what waits to be sent to a peer is dropped: far longer than failure
/// detection, so a false suspicion under load loses no record.
pub const DISCARD_AFTER: Duration = Duration::from_secs(10);

/// What a member knows of one peer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Liveness {
    /// When it was last heard from (the member's clock).
    pub last_heard: Option<Duration>,
    /// Its last heartbeat said it is ready.
    pub ready: bool,
    /// A consensus witness (no traffic).
    pub witness: bool,
    /// Its last heartbeat said it is fenced.
    pub fenced: bool,
    /// The epoch it last said it applied.
    pub applied: Epoch,
    /// Heard within the failure time.
    pub alive: bool,
    /// Its send backlog was discarded (silent past [`DISCARD_AFTER`]).
    pub discarded: bool,
}

impl Liveness {
    /// A peer not heard from yet.
    pub fn new(witness: bool) -> Self {
        Self {
            witness,
            ..Self::default()
        }
    }
}

impl<T: NodeSpecificTable> Member<T> {
    /// Whether `n` is alive (this member always is).
    pub fn is_alive(&self, n: NodeId) -> bool {
        n == self.cfg.node || self.live.get(&n).is_some_and(|l| l.alive)
    }

    /// Whether `n` is ready to own identifiers: alive, synced and not fenced.
    pub fn is_peer_ready(&self, n: NodeId) -> bool {
        if n == self.cfg.node {
            return self.ready && !self.fenced;
        }
        self.live
            .get(&n)
            .is_some_and(|l| l.alive && l.ready && !l.fenced)
    }

    /// How long `n` has been silent (since this member started, if never heard).
    pub fn silent_for(&self, now: std::time::Duration, n: NodeId) -> std::time::Duration {
        if n == self.cfg.node {
            return std::time::Duration::ZERO;
        }
        let heard = self.live.get(&n).and_then(|l| l.last_heard);
        now.saturating_sub(heard.unwrap_or_default())
    }

    /// The epoch `n` applied.
    pub fn applied_epoch(&self, n: NodeId) -> Epoch {
        if n == self.cfg.node {
            return self.core.allocation().epoch;
        }
        self.live.get(&n).map_or(Epoch(0), |l| l.applied)
    }

    pub(super) fn update_liveness(&mut self, t: Time, voters: &[NodeId], leader: Option<NodeId>) {
        let now = t.mono;
        // this loop itself was stalled (a large install, a descheduled process): the time it
        // was not listening does not count as the peers' silence
        let stall = now.saturating_sub(self.last_liveness_check);
        self.last_liveness_check = now;
        if stall > Duration::from_millis(30) {
            let credit = stall - Duration::from_millis(10);
            for l in self.live.values_mut() {
                if let Some(h) = l.last_heard.as_mut() {
                    *h = (*h + credit).min(now);
                }
            }
        }
        let failure = self.failure();
        let mut died = Vec::new();
        for (id, l) in self.live.iter_mut() {
            let alive = l
                .last_heard
                .is_some_and(|h| now.saturating_sub(h) <= failure);
            if l.alive && !alive {
                died.push(*id);
            }
            l.alive = alive;
        }
        let mine = self.core.allocation().epoch;
        self.behind = self.live.values().any(|l| l.alive && l.applied > mine);
        let any_died = !died.is_empty();
        for p in died {
            self.log(format!(
                "peer {} failed (silent for {} ms)",
                p.0,
                failure.as_millis()
            ));
            self.resync_answered(t, p);
        }
        if any_died {
            self.resolve_waiting(t);
        }
        for (id, l) in self.live.iter_mut() {
            let stale = l
                .last_heard
                .is_some_and(|h| now.saturating_sub(h) > DISCARD_AFTER);
            if stale && !l.discarded {
                self.out.push(Output::DiscardBacklog(*id));
            }
            l.discarded = stale;
        }
        self.update_fence(t, voters, leader);
    }

    /// Self-fencing: without contact to a majority of the agreed voters, or to a consensus
    /// leader, for 3/4 of the failure time, stop handling traffic. The leader moves a silent
    /// owner's identifiers after the failure time, so a member cut off from it (even while it
    /// still reaches a majority, in a partial partition, and whatever its own consensus
    /// participant believes during the election it may start) has stopped before they move.
    fn update_fence(&mut self, t: Time, voters: &[NodeId], leader: Option<NodeId>) {
        let now = t.mono;
        let fence_after = self.failure() * 3 / 4;
        let me = self.cfg.node;
        let heard = |v: &NodeId| {
            *v == me
                || self.live.get(v).is_some_and(|l| {
                    l.last_heard
                        .is_some_and(|h| now.saturating_sub(h) <= fence_after)
                })
        };
        let seen = voters.iter().filter(|v| heard(v)).count();
        let no_majority = voters.len() > 1 && seen * 2 <= voters.len();
        // the last time this member heard a leader (itself when it leads); during an election
        // (no leader known) the clock keeps running from the last one
        let contact = match leader {
            Some(l) if l == me => Some(now),
            Some(l) => self.live.get(&l).and_then(|x| x.last_heard),
            None => None,
        };
        if let Some(c) = contact {
            self.leader_heard = Some(self.leader_heard.map_or(c, |h| h.max(c)));
        }
        // (a member that has never heard a leader yet, while starting, is held back by its
        // standby and the majority rule; fencing it then would only cost it a second resync)
        let no_leader = self
            .leader_heard
            .is_some_and(|h| now.saturating_sub(h) > fence_after);
        let was = self.fenced;
        self.fenced = self.warmed_up(now) && (no_majority || no_leader);
        if was == self.fenced {
            return;
        }
        self.log(format!("fenced: {}", self.fenced));
        if was && self.cfg.role == Role::Member && self.ready {
            // back in contact: what the others replicated meanwhile may still be on its way;
            // resync (each peer's `D` comes after everything it sent before) and take no
            // identifiers until then
            self.ready = false;
            self.resync.waiting.clear();
            let peers: Vec<NodeId> = self
                .replication_peers()
                .filter(|p| self.live.get(p).is_some_and(|l| l.alive))
                .collect();
            for p in peers {
                self.request_resync(t, p);
            }
            self.log("resyncing after the partition".into());
        }
        self.send_heartbeats();
    }
}
