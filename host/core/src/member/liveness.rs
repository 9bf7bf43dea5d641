//! Liveness: failure detection by heartbeat silence, and ownership under leases.
//!
//! Every heartbeat carries the sender's clock (`stamp`) and echoes the latest stamp it received
//! from the recipient (`echo`). An echo of stamp `s` from voter `v` tells this member that `v`
//! heard it at or after its own time `s`, so `v` does not call it failed before `s + failure`
//! by `v`'s clock. The member's **lease** runs until `s + lease` for the echoes of a majority of
//! the voters (itself counted when it is one) and of the consensus leader it knows, with
//! `lease` = 3/4 of the failure time: the quarter left over covers clock rates that differ and
//! the heartbeat interval. A member acts on its identifiers only while its lease has not
//! expired by its own monotonic clock, checked at every packet, not only at ticks: a member
//! whose loop stalled (a frozen process, a clock that jumped) finds its lease expired before
//! it handles anything, fences itself, resyncs and waits for new echoes (a new grant) and the
//! allocation agreed meanwhile.
//!
//! The other side: the leader takes a silent owner's identifiers in one step only when a
//! majority of the voters (the owner not counted) reports the owner out in their heartbeats
//! (silent past failure detection, fenced or not ready). A majority that echoed the owner
//! within its lease and a majority that calls it silent for the failure time share a voter, so
//! the takeover is agreed only after the old owner's lease expired.

use std::time::Duration;

use super::{Member, Output, Role, Time};
use crate::ids::{Epoch, NodeId};
use crate::node_table::NodeSpecificTable;
use crate::record::{Heartbeat, NodeList};

/// A clock reading as a heartbeat stamp (µs; 0 means "none", so the first is at least 1).
pub fn stamp_of(t: Duration) -> u64 {
    (t.as_micros() as u64).max(1)
}

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
    /// Its last heartbeat said it is leaving (a graceful stop).
    pub leaving: bool,
    /// Its last heartbeat said its leave is done: it proposes nothing more.
    pub retired: bool,
    /// The epoch it last said it applied.
    pub applied: Epoch,
    /// Heard within the failure time.
    pub alive: bool,
    /// Its send backlog was discarded (silent past [`DISCARD_AFTER`]).
    pub discarded: bool,
    /// The latest stamp it sent (echoed back to it in this member's heartbeats).
    pub stamp_in: u64,
    /// The latest stamp of this member's own that it echoed, as this member's clock: the
    /// lease it grants runs from there.
    pub granted: Option<Duration>,
    /// The latest stamp this member sent it (an echo beyond it is refused).
    pub stamp_out: u64,
    /// The members it reported out in its last heartbeat.
    pub out: NodeList,
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

    /// Whether `n` (this member too) said it is leaving the cluster: the leader gives it
    /// nothing and moves what it owns away in planned moves.
    pub fn is_peer_leaving(&self, n: NodeId) -> bool {
        if n == self.cfg.node {
            return self.leaving;
        }
        self.live.get(&n).is_some_and(|l| l.leaving)
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

    pub(super) fn update_liveness(&mut self, t: Time) {
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
        self.update_fence(t);
    }

    /// Self-fencing: without contact to a majority of the agreed voters, or to a consensus
    /// leader, for 3/4 of the failure time, stop handling traffic. The leader moves a silent
    /// owner's identifiers after the failure time, so a member cut off from it (even while it
    /// still reaches a majority, in a partial partition, and whatever its own consensus
    /// participant believes during the election it may start) has stopped before they move.
    /// How long an echo grants: 3/4 of the failure time.
    pub fn lease_len(&self) -> Duration {
        self.failure() * 3 / 4
    }

    /// When this member's lease expires (`None`: it needs none, being the only voter).
    /// `Some(ZERO)` when no majority (or the leader) has echoed it yet. Kept up to date as
    /// echoes arrive and the voters or the leader change: every packet reads it.
    pub fn lease_until(&self) -> Option<Duration> {
        self.lease
    }

    /// Recomputes [`Member::lease_until`].
    pub(super) fn update_lease(&mut self) {
        self.lease = self.compute_lease();
    }

    fn compute_lease(&self) -> Option<Duration> {
        let me = self.cfg.node;
        let voters = &self.view.voters;
        if voters.is_empty() || voters == &[me] {
            return None;
        }
        let lease = self.lease_len();
        let grant = |v: &NodeId| self.live.get(v).and_then(|l| l.granted).map(|g| g + lease);
        let need = (voters.len() / 2 + 1).saturating_sub(usize::from(voters.contains(&me)));
        let mut grants: Vec<Duration> = voters
            .iter()
            .filter(|v| **v != me)
            .filter_map(grant)
            .collect();
        grants.sort_unstable_by(|a, b| b.cmp(a));
        let mut until = match need {
            0 => Duration::MAX,
            n => grants.get(n - 1).copied().unwrap_or_default(),
        };
        // a leader that retired (its leave is done) proposes nothing more: its grant is not
        // needed, so its exit does not fence the others until the next leader is elected
        let retired = |l: &NodeId| self.live.get(l).is_some_and(|x| x.retired);
        if let Some(l) = self.view.leader.filter(|l| *l != me && !retired(l)) {
            until = until.min(grant(&l).unwrap_or_default());
        }
        Some(until)
    }

    /// Whether this member holds its lease at `now` (by its own clock).
    pub fn lease_valid(&self, now: Duration) -> bool {
        self.lease_until().is_none_or(|u| now < u)
    }

    /// A heartbeat's lease fields from `from`: what it echoes of this member's stamps (never
    /// beyond the latest this member sent it) and its stamp to echo back.
    pub(super) fn on_lease_fields(&mut self, now: Duration, from: NodeId, hb: &Heartbeat) {
        let Some(l) = self.live.get_mut(&from) else {
            return;
        };
        // the latest heartbeat's stamp, not the largest ever: a peer that restarted counts
        // from zero again (an older heartbeat delivered late only grants less)
        l.stamp_in = hb.stamp;
        l.out = hb.out;
        let retired_changed = l.retired != hb.retired;
        l.retired = hb.retired;
        if hb.echo != 0 && hb.echo <= l.stamp_out {
            let at = Duration::from_micros(hb.echo).min(now);
            l.granted = Some(l.granted.map_or(at, |g| g.max(at)));
            self.update_lease();
        } else if retired_changed {
            self.update_lease();
        }
    }

    /// The members this member does not see serving (for the heartbeat's out list).
    pub(super) fn out_list(&self) -> NodeList {
        let me = self.cfg.node;
        self.cfg
            .members
            .iter()
            .copied()
            .filter(|m| *m != me && !self.is_peer_ready(*m))
            .collect()
    }

    /// Whether the leader may take `owner`'s identifiers in one step: it said itself that it
    /// is fenced or not ready and this leader has withheld its echoes for the failure time, or
    /// a majority of the voters (`owner` not counted) report it out.
    pub fn confirmed_out(&self, owner: NodeId) -> bool {
        if self.live.get(&owner).is_some_and(|l| l.alive) {
            // it said so itself, but it may have been granted a lease since (its fence lifted,
            // its resync ended): only once this leader has echoed nothing of it for the failure
            // time can no lease it granted still run
            return self
                .leader
                .withheld
                .get(&owner)
                .is_some_and(|w| self.now.saturating_sub(w.since) >= self.failure());
        }
        let me = self.cfg.node;
        let voters = &self.view.voters;
        let saying = voters
            .iter()
            .filter(|v| **v != owner)
            .filter(|v| {
                **v == me
                    || self
                        .live
                        .get(v)
                        .is_some_and(|l| l.alive && l.out.contains(owner))
            })
            .count();
        saying > voters.len() / 2
    }

    /// Fences this member when its lease expired (and lifts the fence when a new one was
    /// granted): checked at every tick and every packet.
    pub(super) fn update_fence(&mut self, t: Time) {
        let now = t.mono;
        let was = self.fenced;
        self.fenced = self.warmed_up(now) && !self.lease_valid(now);
        if was == self.fenced {
            return;
        }
        self.log(format!("fenced: {}", self.fenced));
        let fenced_for = now.saturating_sub(self.fenced_since);
        if self.fenced {
            // since the lease ran out, not since this member noticed (after a stall, later)
            self.fenced_since = self.lease_until().map_or(now, |u| u.min(now));
        }
        // a fence shorter than the failure time (a loop that stalled on a long install): no
        // peer has called this member failed, the replication streams held (they retransmit
        // until acknowledged), and any allocation agreed meanwhile goes through the handover
        // gate; no resync
        if was && self.cfg.role == Role::Member && self.ready && fenced_for < self.failure() {
            self.log(format!(
                "fence lifted after {} ms: no resync",
                fenced_for.as_millis()
            ));
        } else if was && self.cfg.role == Role::Member && self.ready {
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
