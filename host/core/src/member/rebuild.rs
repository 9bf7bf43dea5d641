//! Rebuilding a replaced card (one reopened or reset after it failed) from the common table,
//! in bounded slices: each turn installs whole identifiers until [`REBUILD_SLICE`] entries
//! went in, so that heartbeats and replication keep their deadlines while a large table is
//! installed. Until its identifier is rebuilt, a packet is not handled
//! ([`PacketOutcome::NotReady`](super::PacketOutcome::NotReady)): the card does not hold its
//! state yet.

use super::{Member, Time};
use crate::ids::DistributionId;
use crate::node_table::NodeSpecificTable;
use crate::packet::parse_packet;

/// Entries a turn of a card rebuild installs (whole identifiers: one larger than this goes in
/// one turn).
pub const REBUILD_SLICE: usize = 2048;

/// A card rebuild in progress.
#[derive(Debug)]
pub struct Rebuild {
    /// The next identifier to install (identifiers before it are rebuilt).
    next: u16,
    /// Entries installed so far.
    installed: usize,
}

impl<T: NodeSpecificTable> Member<T> {
    /// Puts `table` (a reopened or reset card) in place of the node-specific table and, unless
    /// the member is still in standby, installs the entries of the identifiers it owns from the
    /// common table: the first slice now, the rest at the next ticks ([`Member::rebuilding`]).
    /// Returns how many were installed now (all of them for a table that fits one slice).
    ///
    /// The SAs the old card's ESP engine ran are wiped from it (if it still answers) and
    /// installed again from the replicated state, an outbound one past the sequence jump.
    pub fn rebuild_card(&mut self, t: Time, table: T) -> usize {
        let lost = self.release_card_sas();
        *self.core.node_table_mut() = table;
        self.core.table_replaced();
        self.reinstall_card_sas(&lost);
        self.rebuild = None;
        if self.core.standby() {
            return 0;
        }
        self.rebuild = Some(Rebuild {
            next: 0,
            installed: 0,
        });
        self.continue_rebuild(t)
    }

    /// Whether a card rebuild is in progress.
    pub fn rebuilding(&self) -> bool {
        self.rebuild.is_some()
    }

    /// The next slice of the card rebuild in progress (at a tick); returns how many entries it
    /// installed.
    pub(super) fn continue_rebuild(&mut self, t: Time) -> usize {
        let Some(mut r) = self.rebuild.take() else {
            return 0;
        };
        let count = self.cfg.identifiers.get();
        let mut budget = REBUILD_SLICE;
        let mut now = 0;
        while budget > 0 && r.next < count {
            let n = self
                .core
                .install_identifier(t.millis(), DistributionId(r.next));
            r.next += 1;
            now += n;
            budget = budget.saturating_sub(n.max(1));
        }
        r.installed += now;
        if r.next < count {
            self.rebuild = Some(r);
        } else {
            self.log(format!(
                "card rebuilt from the common table: {} entries installed",
                r.installed
            ));
        }
        now
    }

    /// Whether `pkt` belongs to an identifier the card rebuild has not reached yet.
    pub(super) fn rebuilding_for(&self, pkt: &[u8], framing: crate::Framing) -> bool {
        let Some(r) = &self.rebuild else {
            return false;
        };
        parse_packet(pkt, framing)
            .ok()
            .and_then(|p| p.flow(self.core.distributor()))
            .is_some_and(|(_, _, d)| d.0 >= r.next)
    }
}
