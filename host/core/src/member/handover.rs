//! The handover gate: a gained identifier takes no traffic until everything its previous owners
//! replicated before they lost the identifier has arrived (each one's `F` record through the
//! epoch it lost it in), or until that owner is declared failed. Every earlier owner whose `F`
//! has not arrived counts, not only the last: an identifier can move on (A to B to C) before
//! B's gate opened, and then C must wait for A too. That covers the entries it created just
//! before (invariant 4) and its SAs' final state (invariant 5). Until then the identifier's
//! packets are answered "not ready" and its SAs are neither taken over (sequence jump) nor run
//! in the ESP engine.

use std::collections::{BTreeMap, BTreeSet};

use super::liveness::Liveness;
use super::{Member, Time};
use crate::alloc_policy::Allocation;
use crate::ids::{DistributionId, Epoch, IdCount, NodeId};
use crate::node_table::NodeSpecificTable;

/// How long a member waits for the `F` record of a previous owner that released an identifier
/// to it and then went silent, before it takes over from what that owner replicated.
pub const RELEASER_GONE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// How far ahead of this member's applied epoch a peer's `F` may be (a member behind by more
/// than this waits for a later `F`).
pub const FINAL_AHEAD_MAX: u64 = 1024;

/// What [`Handover::on_agreed`] needs to know of the peers.
#[derive(Clone, Copy)]
pub(super) struct Peers<'a> {
    /// Their liveness.
    pub live: &'a BTreeMap<NodeId, Liveness>,
    /// The releasers of the planned moves under way, per identifier.
    pub releasers: &'a BTreeMap<DistributionId, NodeId>,
}

/// The handover bookkeeping.
#[derive(Debug, Default)]
pub struct Handover {
    /// Per identifier: the nodes that lost it and whose final state has not arrived here yet,
    /// each with the epoch in which it lost it and whether that was a release (the identifier
    /// had no owner in that epoch: the first step of a planned move, which the leader proposes
    /// only for a live owner and completes only once that owner has applied it) rather than a
    /// move away from a failed owner.
    lost: BTreeMap<DistributionId, Vec<Loss>>,
    /// Per peer: the highest epoch of its `F` records. A node sends `F` + epoch E on its
    /// replication stream after applying E (and after a resync answer, with its applied
    /// epoch); the stream is in order, so everything it had to say about what it no longer
    /// owned as of E came before.
    final_through: BTreeMap<NodeId, Epoch>,
    /// Gained identifiers waiting: the earlier owners waited for, and the epoch this node
    /// gained the identifier in.
    pub(super) waiting: BTreeMap<DistributionId, Waiting>,
}

/// A node that lost an identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loss {
    /// The node.
    pub node: NodeId,
    /// The epoch it lost the identifier in.
    pub epoch: Epoch,
    /// Released in a planned move (not taken from a failed owner).
    pub released: bool,
    /// Not an owner: a live member whose stream must catch up through the epoch before the
    /// identifier takes traffic here (it may carry entries of the identifier that it created
    /// or forwarded earlier and that are still on their way). It never handled the identifier
    /// then, so packets may be held while it is waited for; no longer waited for once it is
    /// not alive.
    pub bystander: bool,
}

/// A gained identifier waiting for earlier owners' final state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The earlier owners still waited for.
    pub pending: Vec<Loss>,
    /// The epoch this node gained the identifier in.
    pub gained_in: Epoch,
}

impl Handover {
    /// Whether `owner`'s `F` through `lost_in` has arrived.
    pub(super) fn covered(&self, owner: NodeId, lost_in: Epoch) -> bool {
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
        peers: Peers<'_>,
    ) -> BTreeSet<DistributionId> {
        let Peers { live, releasers } = peers;
        for d in count.all() {
            if let Some(o) = before.owner(d) {
                // this node's own losses need no wait here: what it created is in its tables
                if a.owner(d) != Some(o) && o != me {
                    let loss = Loss {
                        node: o,
                        epoch: a.epoch,
                        released: a.owner(d).is_none(),
                        bystander: false,
                    };
                    self.lost.entry(d).or_default().push(loss);
                }
            }
        }
        // what arrived since is no longer waited for
        let final_through = &self.final_through;
        self.lost.retain(|_, v| {
            v.retain(|l| final_through.get(&l.node).is_none_or(|f| *f < l.epoch));
            !v.is_empty()
        });
        self.waiting.retain(|d, _| a.owner(*d) == Some(me));
        let mut now_gained = BTreeSet::new();
        if a.epoch.0 == 0 {
            return now_gained;
        }
        let alive = |n: NodeId| live.get(&n).is_some_and(|l| l.alive);
        // the live members that forward what they hold of a failed owner's identifiers
        // (`Member::forward_failed_share`), each followed by its `F` of this epoch
        let forwarders: Vec<NodeId> = live
            .iter()
            .filter(|(n, l)| **n != me && l.alive && !l.witness)
            .map(|(n, _)| *n)
            .collect();
        for &d in gained {
            let mut extra = Vec::new();
            // a one-step move (from a failed or fenced owner): the live members forward what
            // they hold of it, whether this member still hears the old owner or not (it may be
            // declared failed before its own stream delivered everything)
            if let Some(o) = before.owner(d) {
                if o != me {
                    extra.extend(forwarders.iter().filter(|f| **f != o).map(|f| Loss {
                        node: *f,
                        epoch: a.epoch,
                        released: false,
                        bystander: false,
                    }));
                }
            } else if before.next_owners.contains(&(d, me)) {
                // the last step of a planned move: the releaser's `F` covers its own stream;
                // every other live member's stream catches up through this epoch too, so
                // that an entry of the identifier one of them created or forwarded earlier
                // (its stream here delayed by a partition that just healed) is in before the
                // identifier takes traffic
                // (not its releaser, whose `F` of the release covers it, nor a member on its way
                // out, which may stop before it applies this epoch)
                let mut owners: Vec<NodeId> = self
                    .lost
                    .get(&d)
                    .map(|v| v.iter().map(|l| l.node).collect())
                    .unwrap_or_default();
                owners.extend(releasers.get(&d));
                let leaving = |n: &NodeId| live.get(n).is_some_and(|l| l.leaving || l.retired);
                extra.extend(
                    forwarders
                        .iter()
                        .filter(|f| !owners.contains(f) && !leaving(f))
                        .map(|f| Loss {
                            node: *f,
                            epoch: a.epoch,
                            released: false,
                            bystander: true,
                        }),
                );
            }
            // a released identifier waits for its previous owner's `F` even while this member
            // suspects that owner (a partition between the two only delays the stream); one
            // taken from a failed owner waits only while that owner is still alive here
            let pending: Vec<Loss> = self
                .lost
                .get(&d)
                .map(|v| {
                    v.iter()
                        .copied()
                        .filter(|l| alive(l.node) || l.released)
                        .collect()
                })
                .unwrap_or_default();
            let mut pending = pending;
            pending.extend(extra.into_iter().filter(|l| !self.covered(l.node, l.epoch)));
            if pending.is_empty() {
                now_gained.insert(d);
            } else {
                self.waiting.insert(
                    d,
                    Waiting {
                        pending,
                        gained_in: a.epoch,
                    },
                );
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

    /// Whether `d` waits only for owners that released it in a planned move (they stopped
    /// handling it before this member gained it). Only then may its packets be held: an owner
    /// that did not release it (failed, partitioned, frozen) may still be handling the very
    /// packets this member would hold.
    pub fn waits_for_releasers_only(&self, d: DistributionId) -> bool {
        self.waiting.get(&d).is_some_and(|w| {
            !w.pending.is_empty() && w.pending.iter().all(|l| l.released || l.bystander)
        })
    }

    /// What `d` waits for: the first earlier owner still waited for and the epoch it lost `d`
    /// in.
    pub fn waits_for(&self, d: DistributionId) -> Option<(NodeId, Epoch)> {
        self.waiting
            .get(&d)
            .and_then(|w| w.pending.first())
            .map(|l| (l.node, l.epoch))
    }

    /// The earlier owners the waiting identifiers wait for (`bystanders` false), or the
    /// other live members whose streams they wait for (true).
    pub fn waited_nodes(&self, bystanders: bool) -> BTreeSet<NodeId> {
        self.waiting
            .values()
            .flat_map(|w| {
                w.pending
                    .iter()
                    .filter(move |l| l.bystander == bystanders)
                    .map(|l| l.node)
            })
            .collect()
    }
}

impl<T: NodeSpecificTable> Member<T> {
    /// The handover state.
    pub fn handover(&self) -> &Handover {
        &self.handover
    }

    /// Whether this member holds the packets of identifier `d`: a gained identifier that
    /// still waits for its previous owner's final state, the releaser's last frames not yet
    /// arrived after the gate opened, or the identifier of a planned move coming here once its
    /// releaser applied the move's first step.
    pub(super) fn holds_for(&self, d: DistributionId) -> bool {
        self.handover.is_waiting(d)
            || self.marks.contains_key(&d)
            || self
                .incoming
                .get(&d)
                .is_some_and(|i| self.applied_epoch(i.releaser) >= i.prepared_in)
    }

    /// Marks each of `epochs` complete (now) in the applied records once no gained identifier
    /// of it waits any more.
    pub(super) fn complete_epochs(&mut self, epochs: impl IntoIterator<Item = Epoch>, t: Time) {
        for e in epochs {
            if self.handover.waiting.values().any(|w| w.gained_in == e) {
                continue;
            }
            if let Some(x) = self.applied.iter_mut().rev().find(|x| x.epoch == e.0) {
                if x.complete_unix_ms == 0 {
                    x.complete_unix_ms = t.unix_ms;
                }
            }
        }
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
        let now = t.mono;
        let mut gone_logs = Vec::new();
        let mut ready = Vec::new();
        let mut epochs = BTreeSet::new();
        let ids: Vec<DistributionId> = self.handover.waiting.keys().copied().collect();
        for d in ids {
            let Some(w) = self.handover.waiting.get(&d) else {
                continue;
            };
            let mut pending = Vec::new();
            for l in &w.pending {
                let covered = self.handover.covered(l.node, l.epoch);
                let gone = if l.released && !l.bystander {
                    self.silent_for(now, l.node) > RELEASER_GONE_AFTER
                } else {
                    !self.is_alive(l.node)
                };
                if covered {
                    continue;
                }
                if gone {
                    gone_logs.push((d, l.node));
                    continue;
                }
                pending.push(*l);
            }
            if pending.is_empty() {
                if let Some(w) = self.handover.waiting.remove(&d) {
                    epochs.insert(w.gained_in);
                }
                ready.push(d);
            } else if let Some(w) = self.handover.waiting.get_mut(&d) {
                w.pending = pending;
            }
        }
        for (d, n) in gone_logs {
            self.log(format!(
                "identifier {}: node {} failed before its final state arrived; taking over from what it replicated",
                d.0, n.0
            ));
        }
        if ready.is_empty() {
            return;
        }
        self.complete_epochs(epochs, t);
        let ready: BTreeSet<DistributionId> = ready.into_iter().collect();
        self.take_over_sas(&ready);
        self.reconcile_esp();
        // what was held for these identifiers goes through now, in order
        self.release_held(t);
    }
}
