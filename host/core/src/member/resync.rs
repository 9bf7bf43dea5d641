//! Bulk resync and standby: a starting member (or one back from a partition) asks each peer
//! for everything it owns (`Q`); the peer answers with its entries and SA states, its `F`
//! record and `D`. Until every live peer asked has answered, the member stays in standby: its
//! common table fills and it follows the agreed allocations, but installs nothing in its card
//! and takes no identifiers.

use std::time::Duration;

use super::esp::SaMaterial;
use super::{Member, Time, To};
use crate::events::{Event, Message};
use crate::ids::{DistributionId, NodeId};
use crate::node_table::NodeSpecificTable;
use crate::record::Record;
use std::collections::BTreeSet;

/// A resync in progress.
#[derive(Debug)]
struct Run {
    started: Duration,
    before: usize,
    /// When the last answer so far completed it, with the common table's size then.
    answered: Option<(Duration, usize)>,
}

/// The resync bookkeeping.
#[derive(Debug, Default)]
pub struct Resync {
    /// Peers asked that have not answered yet.
    pub(super) waiting: BTreeSet<NodeId>,
    run: Option<Run>,
    /// The last completed resync: entries it added and how long it took.
    pub(super) last: Option<(usize, Duration)>,
}

impl<T: NodeSpecificTable> Member<T> {
    /// Asks `peer` for everything it owns (`Q`); its `D` ends the answer.
    pub(super) fn request_resync(&mut self, t: Time, peer: NodeId) {
        if self.resync.run.is_none() {
            self.resync.run = Some(Run {
                started: t.mono,
                before: self.core.common().len(),
                answered: None,
            });
        }
        self.resync.waiting.insert(peer);
        self.send(To::Node(peer), Record::ResyncRequest);
    }

    /// `peer` finished its answer (or died). With nobody left to answer, the resync is
    /// complete for a ready member; a member still starting may yet ask peers whose hellos
    /// come later, so its resync ends when it becomes ready, at the last answer's time.
    pub(super) fn resync_answered(&mut self, t: Time, peer: NodeId) {
        // a peer that was not asked (a death, a late `D`) changes nothing
        if self.resync.waiting.remove(&peer) && self.resync.waiting.is_empty() {
            let len = self.core.common().len();
            if let Some(run) = &mut self.resync.run {
                run.answered = Some((t.mono, len));
            }
            if self.ready {
                self.close_resync();
            }
        }
    }

    fn close_resync(&mut self) {
        let Some(run) = self.resync.run.take() else {
            return;
        };
        if let Some((at, len)) = run.answered {
            let added = len.saturating_sub(run.before);
            let took = at.saturating_sub(run.started);
            self.resync.last = Some((added, took));
            self.log(format!(
                "resync complete: {added} entries in {} ms",
                took.as_millis()
            ));
        }
    }

    /// Answers `to`'s resync request: every entry of the identifiers this member owns (or that no
    /// other live member answers for), every SA
    /// state it knows (owned or not: the state it holds of an SA it released is that SA's final
    /// state; states are merged forward on receipt) with the keys, then `F` and `D`.
    pub(super) fn answer_resync(&mut self, to: NodeId) {
        // what the state core queued goes first: the answer must not overtake it
        self.flush_outbox();
        let me = self.cfg.node;
        let inc = self.core.config().incarnation;
        // the identifiers this member owns, and those no other live member answers for: no
        // owner (released in a move), the asker itself (it restarted before its failure was
        // noticed and lost what it owned), or a member that is not alive
        let alloc = self.core.allocation();
        let ids: Vec<DistributionId> = self
            .cfg
            .identifiers
            .all()
            .filter(|d| match alloc.owner(*d) {
                None => true,
                Some(o) => o == me || o == to || !self.is_alive(o),
            })
            .collect();
        let mut msgs = Vec::new();
        for d in ids {
            for e in self.core.select(d) {
                msgs.push(Message {
                    sender: me,
                    incarnation: inc,
                    seq: 0,
                    event: Event::Add(e.clone()),
                });
            }
        }
        self.sync_esp();
        let spis: Vec<u32> = self.sas.spis.iter().copied().collect();
        for spi in spis {
            if let Some(s) = self.core.sa_state(spi) {
                msgs.push(Message {
                    sender: me,
                    incarnation: inc,
                    seq: 0,
                    event: Event::SaState(s),
                });
                if let Some(key) = self.sas.keys.get(&spi).map(SaMaterial::to_record_bytes) {
                    self.send(To::Node(to), Record::SaKey { spi, key });
                }
            }
        }
        for m in msgs {
            self.send(To::Node(to), Record::Event(m));
        }
        self.flush_outbox();
        let applied = self.core.allocation().epoch;
        self.send(To::Node(to), Record::Final(applied));
        self.send(To::Node(to), Record::ResyncDone);
    }

    /// Ends standby once warmed up, not fenced, and no live peer's answer is outstanding.
    pub(super) fn check_ready(&mut self, t: Time) {
        // a fenced member waits: it becomes ready (and resyncs no second time) once in contact
        if self.ready || self.fenced || !self.warmed_up(t.mono) {
            return;
        }
        let waiting_alive = self
            .resync
            .waiting
            .iter()
            .any(|p| self.live.get(p).is_some_and(|l| l.alive));
        if waiting_alive {
            return;
        }
        self.log("ready (common table synced)".into());
        self.ready = true;
        self.close_resync();
        let installed = self.core.set_standby(t.millis(), false);
        if installed > 0 {
            self.log(format!(
                "installed {installed} entries of the identifiers it owns"
            ));
        }
        self.send_heartbeats();
    }
}
