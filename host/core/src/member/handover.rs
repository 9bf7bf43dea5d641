//! The handover gate: a gained identifier takes no traffic until everything its previous owner
//! replicated before it lost the identifier has arrived (its `F` record through the epoch it
//! lost it in), or until that owner is declared failed. That covers the entries it created just
//! before (invariant 4) and its SAs' final state (invariant 5). Until then the identifier's
//! packets are answered "not ready" and its SAs are neither taken over (sequence jump) nor run
//! in the ESP engine.

use std::collections::{BTreeMap, BTreeSet};

use super::liveness::Liveness;
use super::{Member, Time};
use crate::alloc_policy::Allocation;
use crate::ids::{DistributionId, Epoch, IdCount, NodeId};
use crate::node_table::NodeSpecificTable;
use crate::packet::parse_packet;

/// How long a member waits for the `F` record of a previous owner that released an identifier
/// to it and then went silent, before it takes over from what that owner replicated.
pub const RELEASER_GONE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// How far ahead of this member's applied epoch a peer's `F` may be (a member behind by more
/// than this waits for a later `F`).
pub const FINAL_AHEAD_MAX: u64 = 1024;

/// The handover bookkeeping.
#[derive(Debug, Default)]
pub struct Handover {
    /// Per identifier: the last node that lost it, the epoch in which it did, and whether that
    /// was a release (the identifier had no owner in that epoch: the first step of a planned
    /// move, which the leader proposes only for a live owner and completes only once that
    /// owner has applied it) rather than a move away from a failed owner.
    lost_at: BTreeMap<DistributionId, (NodeId, Epoch, bool)>,
    /// Per peer: the highest epoch of its `F` records. A node sends `F` + epoch E on its
    /// replication stream after applying E (and after a resync answer, with its applied
    /// epoch); the stream is in order, so everything it had to say about what it no longer
    /// owned as of E came before.
    final_through: BTreeMap<NodeId, Epoch>,
    /// Gained identifiers waiting: previous owner, the epoch it lost the identifier in, the
    /// epoch this node gained it in, whether it was released.
    pub(super) waiting: BTreeMap<DistributionId, (NodeId, Epoch, Epoch, bool)>,
}

impl Handover {
    fn covered(&self, owner: NodeId, lost_in: Epoch) -> bool {
        self.final_through
            .get(&owner)
            .is_some_and(|f| *f >= lost_in)
    }

    /// Bookkeeping for the agreed allocation `a` (the previous one `before`): who lost what,
    /// which gained identifiers must wait. Returns the gained identifiers that take traffic
    /// at once.
    pub(super) fn on_agreed(
        &mut self,
        me: NodeId,
        count: IdCount,
        before: &Allocation,
        a: &Allocation,
        gained: &[DistributionId],
        live: &BTreeMap<NodeId, Liveness>,
    ) -> BTreeSet<DistributionId> {
        for d in count.all() {
            if let Some(o) = before.owner(d) {
                if a.owner(d) != Some(o) {
                    self.lost_at.insert(d, (o, a.epoch, a.owner(d).is_none()));
                }
            }
        }
        self.waiting.retain(|d, _| a.owner(*d) == Some(me));
        let mut now_gained = BTreeSet::new();
        if a.epoch.0 == 0 {
            return now_gained;
        }
        let alive = |n: NodeId| live.get(&n).is_some_and(|l| l.alive);
        for &d in gained {
            // a released identifier waits for its previous owner's `F` even while this member
            // suspects that owner (a partition between the two only delays the stream); one
            // taken from a failed owner waits only while that owner is still alive here
            match self.lost_at.get(&d).copied() {
                Some((r, e, released))
                    if r != me && (alive(r) || released) && !self.covered(r, e) =>
                {
                    self.waiting.insert(d, (r, e, a.epoch, released));
                }
                _ => {
                    now_gained.insert(d);
                }
            }
        }
        now_gained
    }

    /// How many gained identifiers wait.
    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    /// Whether identifier `d` waits for its previous owner.
    pub fn is_waiting(&self, d: DistributionId) -> bool {
        self.waiting.contains_key(&d)
    }

    /// What `d` waits for: previous owner and the epoch it lost `d` in.
    pub fn waits_for(&self, d: DistributionId) -> Option<(NodeId, Epoch)> {
        self.waiting.get(&d).map(|w| (w.0, w.1))
    }
}

impl<T: NodeSpecificTable> Member<T> {
    /// The handover state.
    pub fn handover(&self) -> &Handover {
        &self.handover
    }

    /// Whether `pkt` belongs to a gained identifier that still waits for its previous owner's
    /// final state.
    pub(super) fn waiting_for(&self, pkt: &[u8]) -> bool {
        if self.handover.waiting.is_empty() {
            return false;
        }
        let framing = self.core.config().framing;
        parse_packet(pkt, framing)
            .ok()
            .and_then(|p| p.flow(self.core.distributor()))
            .is_some_and(|(_, _, d)| self.handover.is_waiting(d))
    }

    /// `from`'s `F` record: it has said everything through epoch `e`. An epoch far beyond
    /// any this member has applied cannot be one the peer applied (allocations are agreed in
    /// order and applied everywhere); it is refused, so a corrupt or hostile record cannot
    /// open the gate for identifiers whose state has not arrived. Refusing only makes a
    /// gained identifier wait longer (until the next `F` or the peer's failure).
    pub(super) fn on_final(&mut self, t: Time, from: NodeId, e: Epoch) {
        let known = self.core.allocation().epoch.0;
        if e.0 > known.saturating_add(FINAL_AHEAD_MAX) {
            self.counters.decode_errors += 1;
            return;
        }
        let f = self.handover.final_through.entry(from).or_insert(e);
        *f = (*f).max(e);
        self.resolve_waiting(t);
    }

    /// Resolves gained identifiers whose previous owner's `F` covers the epoch it lost them
    /// in, or whose previous owner is gone: no longer alive (taken from a failed owner), or
    /// silent for [`RELEASER_GONE_AFTER`] (released by an owner that then failed before its `F`
    /// arrived). Then what it replicated is all there is: state inside its replication window
    /// before the crash is lost, and the report counts what is lost because of it. They take traffic from now on; their SAs are
    /// taken over (outbound sequence jump) and run in the ESP engine.
    pub(super) fn resolve_waiting(&mut self, t: Time) {
        if self.handover.waiting.is_empty() {
            return;
        }
        let ready: Vec<DistributionId> = self
            .handover
            .waiting
            .iter()
            .filter(|(_, (r, e, _, released))| {
                self.handover.covered(*r, *e)
                    || if *released {
                        self.silent_for(t.mono, *r) > RELEASER_GONE_AFTER
                    } else {
                        !self.is_alive(*r)
                    }
            })
            .map(|(d, _)| *d)
            .collect();
        if ready.is_empty() {
            return;
        }
        let mut epochs = BTreeSet::new();
        for d in &ready {
            if let Some((r, e, gained_in, _)) = self.handover.waiting.remove(d) {
                epochs.insert(gained_in);
                if !self.handover.covered(r, e) {
                    self.log(format!(
                        "identifier {}: node {} failed before its final state arrived; taking over from what it replicated",
                        d.0, r.0
                    ));
                }
            }
        }
        for e in epochs {
            if self.handover.waiting.values().all(|w| w.2 != e) {
                if let Some(a) = self.applied.iter_mut().rev().find(|a| a.epoch == e.0) {
                    a.complete_unix_ms = t.unix_ms;
                }
            }
        }
        let ready: BTreeSet<DistributionId> = ready.into_iter().collect();
        self.take_over_sas(&ready);
        self.reconcile_esp();
    }
}
