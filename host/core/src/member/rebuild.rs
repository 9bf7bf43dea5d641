//! Installing entries from the common table in bounded slices: each turn installs whole
//! identifiers until [`REBUILD_SLICE`] entries went in, so that heartbeats and replication
//! keep their deadlines while a large table is installed. Two jobs use it:
//!
//! - rebuilding a replaced card (one reopened or reset after it failed): every identifier the
//!   member owns;
//! - the identifiers an agreed allocation gives the member (a takeover of a failed node's share
//!   can be 100,000 entries: installed at once it stalled the loop past its lease).
//!
//! Until its identifier is installed, a packet is held (or, with the hold full, not handled:
//! [`PacketOutcome::NotReady`](super::PacketOutcome::NotReady)): the card does not hold its
//! state yet.

use std::collections::VecDeque;

use super::{Member, Time};
use crate::ids::{DistributionId, Epoch};
use crate::node_table::NodeSpecificTable;

/// Entries a turn installs (whole identifiers: one larger than this goes in one turn).
pub const REBUILD_SLICE: usize = 2048;

/// Identifiers whose entries wait to be installed.
#[derive(Debug, Default)]
pub struct Installs {
    /// In order, with the epoch that gave each (`None`: a card rebuild).
    todo: VecDeque<(DistributionId, Option<Epoch>)>,
    /// Whether each identifier waits (indexed by identifier).
    pending: Vec<bool>,
    /// Entries a card rebuild installed so far (`None`: no card rebuild in progress).
    rebuilt: Option<usize>,
}

impl Installs {
    /// Whether `d` waits to be installed.
    pub(super) fn pending(&self, d: DistributionId) -> bool {
        self.pending.get(d.index()).copied().unwrap_or(false)
    }

    /// Whether identifiers epoch `e` gave wait (they are the last queued).
    pub(super) fn queued(&self, e: Epoch) -> bool {
        self.todo.back().is_some_and(|(_, x)| *x == Some(e))
    }

    /// Whether anything waits.
    pub(super) fn is_empty(&self) -> bool {
        self.todo.is_empty()
    }

    fn push(&mut self, d: DistributionId, epoch: Option<Epoch>, count: usize) {
        if self.pending.len() < count {
            self.pending.resize(count, false);
        }
        if !self.pending(d) {
            self.pending[d.index()] = true;
            self.todo.push_back((d, epoch));
        }
    }
}

impl<T: NodeSpecificTable> Member<T> {
    /// Puts `table` (a reopened or reset card) in place of the node-specific table and, unless
    /// the member is still in standby, installs the entries of the identifiers it owns from the
    /// common table: the first slice now, the rest at the next turns ([`Member::rebuilding`]).
    /// Returns how many were installed now (all of them for a table that fits one slice).
    ///
    /// The SAs the old card's ESP engine ran are wiped from it (if it still answers) and
    /// installed again from the replicated state, an outbound one past the sequence jump.
    pub fn rebuild_card(&mut self, t: Time, table: T) -> usize {
        let lost = self.release_card_sas();
        *self.core.node_table_mut() = table;
        self.core.table_replaced();
        self.reinstall_card_sas(&lost);
        self.installs = Installs::default();
        if self.core.standby() {
            return 0;
        }
        let count = self.cfg.identifiers.len();
        for d in self.cfg.identifiers.all() {
            self.installs.push(d, None, count);
        }
        self.installs.rebuilt = Some(0);
        self.continue_installs(t)
    }

    /// Whether installs from the common table are in progress (a card rebuild, or the entries
    /// of identifiers an epoch gave this member).
    pub fn rebuilding(&self) -> bool {
        !self.installs.is_empty()
    }

    /// Queues the entries of `gained` (identifiers epoch `e` gave this member, not installed
    /// by the state core) and installs the first slice now; returns how many went in now.
    pub(super) fn install_gained(&mut self, t: Time, e: Epoch, gained: &[DistributionId]) -> usize {
        let count = self.cfg.identifiers.len();
        for &d in gained {
            self.installs.push(d, Some(e), count);
        }
        self.continue_installs(t)
    }

    /// The next slice of the installs in progress (at a turn); returns how many entries it
    /// installed.
    pub(super) fn continue_installs(&mut self, t: Time) -> usize {
        let mut budget = REBUILD_SLICE;
        let mut now = 0;
        while budget > 0 {
            let Some((d, epoch)) = self.installs.todo.pop_front() else {
                break;
            };
            self.installs.pending[d.index()] = false;
            let n = self.core.install_identifier(t.millis(), d);
            now += n;
            budget = budget.saturating_sub(n.max(1));
            if let Some(r) = self.installs.rebuilt.as_mut() {
                *r += n;
            }
            if let Some(e) = epoch {
                self.installed_of(t, e, n);
            }
        }
        if self.installs.is_empty() {
            if let Some(n) = self.installs.rebuilt.take() {
                self.log(format!(
                    "card rebuilt from the common table: {n} entries installed"
                ));
            }
        }
        now
    }

    /// Counts `n` entries installed for epoch `e` in its applied record, and when the last of
    /// its identifiers went in, the time.
    fn installed_of(&mut self, t: Time, e: Epoch, n: usize) {
        // an epoch's identifiers are queued together, behind those of earlier epochs
        let done = self
            .installs
            .todo
            .front()
            .is_none_or(|(_, x)| *x != Some(e));
        if let Some(x) = self.applied.iter_mut().rev().find(|x| x.epoch == e.0) {
            x.installed += n;
            if done {
                x.installed_unix_ms = t.unix_ms;
            }
        }
    }

    /// Whether the entries of `d` wait to be installed.
    pub(super) fn installing(&self, d: DistributionId) -> bool {
        self.installs.pending(d)
    }
}
