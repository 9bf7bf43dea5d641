//! Forwarding a failed owner's share. When an agreed allocation takes identifiers in one step
//! from their owner (a failover, or an owner that was not ready), every other member forwards
//! the entries it holds of them to their new owner, then sends its `F` of the epoch: the new
//! owner may have missed the failed owner's last records (a partition between the two while
//! this member still heard both), and it takes traffic for those identifiers only after every
//! live member's `F`.
//!
//! A failed node's share can be 100,000 entries: forwarded at once it stalled the loop past
//! the lease, so it goes in slices of about [`FORWARD_SLICE`] entries (whole identifiers) a
//! turn, and each `F` waits behind what was queued before it.

use std::collections::VecDeque;

use super::{Member, Role, To};
use crate::alloc_policy::Allocation;
use crate::events::{Event, Message};
use crate::ids::{DistributionId, Epoch, NodeId};
use crate::node_table::NodeSpecificTable;
use crate::record::Record;

/// Entries a turn forwards (whole identifiers: one larger than this goes in one turn).
pub const FORWARD_SLICE: usize = 2048;

/// What waits to be sent, in order.
#[derive(Debug)]
enum Forward {
    /// The entries of an identifier, to its new owner.
    Share(DistributionId, NodeId),
    /// This member's `F` of an epoch, to every peer.
    Final(Epoch),
}

/// The forwards queued.
#[derive(Debug, Default)]
pub struct Forwards {
    todo: VecDeque<Forward>,
}

impl<T: NodeSpecificTable> Member<T> {
    /// Whether forwarding is in progress (it continues at the next turns).
    pub fn forwarding(&self) -> bool {
        !self.forwards.todo.is_empty()
    }

    /// Queues the forwards of the identifiers `a` takes in one step from their owner (the
    /// previous allocation `before`), then this member's `F` of the epoch, and sends the first
    /// slice now.
    pub(super) fn forward_failed_share(&mut self, before: &Allocation, a: &Allocation) {
        let me = self.cfg.node;
        if a.epoch.0 != 0 && self.cfg.role == Role::Member {
            for d in self.cfg.identifiers.all() {
                let (Some(from), Some(to)) = (before.owner(d), a.owner(d)) else {
                    continue;
                };
                // (whether this member still hears the old owner does not matter: the new
                // owner, or the leader, did not)
                if from == to || to == me || from == me {
                    continue;
                }
                self.forwards.todo.push_back(Forward::Share(d, to));
            }
        }
        self.forwards.todo.push_back(Forward::Final(a.epoch));
        self.continue_forwards();
    }

    /// The next slice of the forwards queued (at a turn).
    pub(super) fn continue_forwards(&mut self) {
        let me = self.cfg.node;
        let inc = self.core.config().incarnation;
        let mut budget = FORWARD_SLICE;
        while budget > 0 {
            let Some(f) = self.forwards.todo.pop_front() else {
                return;
            };
            match f {
                Forward::Final(e) => self.send(To::Peers, Record::Final(e)),
                Forward::Share(d, to) => {
                    let msgs: Vec<Message> = self
                        .core
                        .select(d)
                        .map(|e| Message {
                            sender: me,
                            incarnation: inc,
                            seq: 0,
                            event: Event::Add(e.clone()),
                        })
                        .collect();
                    budget = budget.saturating_sub(msgs.len().max(1));
                    for m in msgs {
                        self.send(To::Node(to), Record::Event(m));
                    }
                }
            }
        }
    }
}
