//! Bulk resync and standby: a starting member (or one back from a partition) asks each peer
//! for everything it owns (`Q`); the peer answers with its entries and SA states, its `F`
//! record and `D`. Until every live peer asked has answered, the member stays in standby: its
//! common table fills and it follows the agreed allocations, but installs nothing in its card
//! and takes no identifiers.

use std::time::Duration;

use super::esp::SaMaterial;
use super::liveness::DISCARD_AFTER;
use super::{Member, Time, To};
use crate::entry::FlowKey;
use crate::events::{Event, Message};
use crate::ids::{DistributionId, NodeId};
use crate::node_table::NodeSpecificTable;
use crate::record::Record;
use std::collections::{BTreeMap, BTreeSet};

/// A resync in progress.
#[derive(Debug)]
struct Run {
    started: Duration,
    before: usize,
    /// When the last answer so far completed it, with the common table's size then.
    answered: Option<(Duration, usize)>,
    /// The peers whose `D` came.
    answered_by: BTreeSet<NodeId>,
    /// The identifiers each peer's answer left to their owners (its `S`).
    skipped: BTreeMap<NodeId, Vec<DistributionId>>,
    /// Whether the identifiers of peers that never answered were asked of those that did
    /// (`P`: once a run).
    part_asked: bool,
}

/// Entries a member sends per turn of its resync answers (shared by the answers in progress):
/// a few milliseconds of work, so that heartbeats and acknowledgements go out between slices.
pub const ANSWER_SLICE: usize = 2048;

/// A resync answer in progress.
#[derive(Debug, Default)]
struct Answer {
    /// The asker.
    to: NodeId,
    /// The next identifier to answer for.
    next: u16,
    /// The keys of the current identifier not sent yet (popped from the end).
    pending: Vec<FlowKey>,
    /// For a `P` request: the identifiers asked for (indexed by identifier), answered
    /// whoever owns them; `None`: a `Q` request ([`Member::answers_for`]).
    only: Option<Vec<bool>>,
    /// For a `Q` request: the identifiers left to their owners so far.
    skipped: Vec<DistributionId>,
}

/// The resync bookkeeping.
#[derive(Debug)]
pub struct Resync {
    /// Peers asked that have not answered yet.
    pub(super) waiting: BTreeSet<NodeId>,
    run: Option<Run>,
    /// The last completed resync: entries it added and how long it took.
    pub(super) last: Option<(usize, Duration)>,
    /// The answers this member is giving, in the order asked.
    answers: Vec<Answer>,
    /// Entries sent per turn of the answers ([`ANSWER_SLICE`]).
    pub(super) slice: usize,
}

impl Default for Resync {
    fn default() -> Self {
        Self {
            waiting: BTreeSet::new(),
            run: None,
            last: None,
            answers: Vec::new(),
            slice: ANSWER_SLICE,
        }
    }
}

impl<T: NodeSpecificTable> Member<T> {
    /// Asks `peer` for everything it owns (`Q`); its `D` ends the answer.
    pub(super) fn request_resync(&mut self, t: Time, peer: NodeId) {
        if self.resync.run.is_none() {
            self.resync.run = Some(Run {
                started: t.mono,
                before: self.core.common().len(),
                answered: None,
                answered_by: BTreeSet::new(),
                skipped: BTreeMap::new(),
                part_asked: false,
            });
        }
        self.resync.waiting.insert(peer);
        self.send(To::Node(peer), Record::ResyncRequest);
    }

    /// `peer`'s `S`: the identifiers its answer left to their owners.
    pub(super) fn resync_skipped(&mut self, peer: NodeId, ids: Vec<DistributionId>) {
        if let Some(run) = &mut self.resync.run {
            if self.resync.waiting.contains(&peer) {
                run.skipped.insert(peer, ids);
            }
        }
    }

    /// `peer`'s `D`: its answer is complete.
    pub(super) fn resync_done(&mut self, t: Time, peer: NodeId) {
        if let Some(run) = &mut self.resync.run {
            if self.resync.waiting.contains(&peer) {
                run.answered_by.insert(peer);
            }
        }
        self.resync_answered(t, peer);
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

    /// Answers `to`'s resync request: every entry of the identifiers this member owns (or that
    /// no other live member answers for), every SA state it knows (owned or not: the state it
    /// holds of an SA it released is that SA's final state; states are merged forward on
    /// receipt) with the keys, then `F` and `D`.
    ///
    /// The answer goes out in slices of at most [`Resync::slice`] entries per turn (the first
    /// now, the next ones at each [`Member::tick`], shared by the answers in progress), so that
    /// heartbeats and acknowledgements keep their deadlines while a large table is answered.
    /// Each slice reads the common table as it is then; what changes meanwhile reaches the
    /// asker through ordinary replication, and `D` comes after the last slice. A second
    /// request from the same asker starts its answer over; an asker that restarts, or stays
    /// silent until its backlog is discarded, has its answer dropped.
    pub(super) fn answer_resync(&mut self, to: NodeId) {
        self.resync.answers.retain(|a| a.to != to);
        self.start_answer(Answer {
            to,
            ..Answer::default()
        });
    }

    /// Answers `to`'s `P` request: every entry of `ids` (those in range), whoever owns them,
    /// then as [`Self::answer_resync`] does. An answer in progress to `to` goes on beside it.
    pub(super) fn answer_resync_part(&mut self, to: NodeId, ids: &[DistributionId]) {
        let count = self.cfg.identifiers.len();
        let mut only = vec![false; count];
        for d in ids {
            if let Some(x) = only.get_mut(d.index()) {
                *x = true;
            }
        }
        self.start_answer(Answer {
            to,
            only: Some(only),
            ..Answer::default()
        });
    }

    fn start_answer(&mut self, answer: Answer) {
        self.resync.answers.push(answer);
        let i = self.resync.answers.len() - 1;
        let budget = self.resync.slice;
        if self.answer_slice(i, budget) {
            self.resync.answers.remove(i);
        }
    }

    /// Drops the answer in progress to `peer` (it restarted: its new process asks anew).
    pub(super) fn cancel_answer(&mut self, peer: NodeId) {
        self.resync.answers.retain(|a| a.to != peer);
    }

    /// Whether resync answers are in progress (the next [`Member::tick`] continues them).
    pub fn answering(&self) -> bool {
        !self.resync.answers.is_empty()
    }

    /// The next slice of every answer in progress (at a tick).
    pub(super) fn continue_answers(&mut self, t: Time) {
        if self.resync.answers.is_empty() {
            return;
        }
        // an asker silent for as long as what waits to be sent to it is discarded
        // (`liveness::DISCARD_AFTER`, far past failure detection) is gone: its answer is dropped
        // with its backlog (it asks again when it is back). One that is merely slow, or falsely
        // suspected under load, still gets the whole answer and its `D`.
        let gone: Vec<NodeId> = self
            .resync
            .answers
            .iter()
            .map(|a| a.to)
            .filter(|p| self.silent_for(t.mono, *p) > DISCARD_AFTER)
            .collect();
        for p in gone {
            self.log(format!(
                "resync answer to node {} dropped: it went silent",
                p.0
            ));
            self.cancel_answer(p);
        }
        let n = self.resync.answers.len().max(1);
        let share = (self.resync.slice / n).max(1);
        let mut i = 0;
        while i < self.resync.answers.len() {
            if self.answer_slice(i, share) {
                self.resync.answers.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Whether this member answers for `d` to `to`: it owns `d`, or no other live member
    /// answers for it (no owner: released in a move; the asker itself: it restarted before its
    /// failure was noticed and lost what it owned; or an owner that is not alive).
    fn answers_for(&self, d: DistributionId, to: NodeId) -> bool {
        match self.core.allocation().owner(d) {
            None => true,
            Some(o) => o == self.cfg.node || o == to || !self.is_alive(o),
        }
    }

    /// Sends up to `budget` entries of answer `i`; after its last entry, the SA states and
    /// keys, `F` and `D`. Returns whether the answer is complete.
    fn answer_slice(&mut self, i: usize, budget: usize) -> bool {
        // what the state core queued goes first: the answer must not overtake it
        self.flush_outbox();
        let me = self.cfg.node;
        let inc = self.core.config().incarnation;
        let count = self.cfg.identifiers.get();
        let Some(mut a) = self.resync.answers.get_mut(i).map(std::mem::take) else {
            return true;
        };
        let mut sent = 0;
        while sent < budget {
            if a.pending.is_empty() {
                if a.next >= count {
                    break;
                }
                let d = DistributionId(a.next);
                a.next += 1;
                let asked = match &a.only {
                    Some(only) => only.get(d.index()).copied().unwrap_or(false),
                    None => self.answers_for(d, a.to),
                };
                // (a member still resyncing itself answers what it has, but covers nothing:
                // the asker asks the others for all of it)
                if (!asked || !self.ready) && a.only.is_none() {
                    a.skipped.push(d);
                }
                if asked {
                    // the keys of the identifier now (popped from the end); an entry cleared
                    // before its turn is skipped, one added meanwhile is replicated anyway
                    a.pending = self.core.select(d).map(|e| e.key).collect();
                    a.pending.reverse();
                }
                continue;
            }
            let Some(key) = a.pending.pop() else {
                continue;
            };
            if let Some(e) = self.core.common().get(&key) {
                let m = Message {
                    sender: me,
                    incarnation: inc,
                    seq: 0,
                    event: Event::Add(e.clone()),
                };
                self.send(To::Node(a.to), Record::Event(m));
                sent += 1;
            }
        }
        let to = a.to;
        let done = a.pending.is_empty() && a.next >= count;
        let a_skipped = if done && !self.forwarding() {
            std::mem::take(&mut a.skipped)
        } else {
            Vec::new()
        };
        if let Some(slot) = self.resync.answers.get_mut(i) {
            *slot = a;
        }
        if !done || self.forwarding() {
            // (its `F` must not overtake what this member forwards of a failed owner's share)
            return false;
        }
        self.sync_esp();
        let spis: Vec<u32> = self.sas.spis.iter().copied().collect();
        // a witness handles no traffic: it gets the sequence states, never a key
        let witness = self.live.get(&to).is_some_and(|l| l.witness);
        let mut states = Vec::new();
        for spi in spis {
            if let Some(s) = self.core.sa_state(spi) {
                states.push(Message {
                    sender: me,
                    incarnation: inc,
                    seq: 0,
                    event: Event::SaState(s),
                });
                let key = (!witness)
                    .then(|| self.sas.keys.get(&spi).map(SaMaterial::to_record_bytes))
                    .flatten();
                if let Some(key) = key {
                    self.send(To::Node(to), Record::SaKey { spi, key });
                }
            }
        }
        for m in states {
            self.send(To::Node(to), Record::Event(m));
        }
        self.flush_outbox();
        if !a_skipped.is_empty() {
            self.send(To::Node(to), Record::ResyncSkipped { ids: a_skipped });
        }
        let applied = self.core.allocation().epoch;
        self.send(To::Node(to), Record::Final(applied));
        self.send(To::Node(to), Record::ResyncDone);
        true
    }

    /// Asks the peers that answered for the identifiers no answer covered (once a run;
    /// returns whether it asked): a peer answers a `Q` only for the identifiers no other live
    /// member (in its view) answers for, and says which it left (`S`), so the share of an
    /// owner that stalled or died before it answered (or that this member never heard from)
    /// came from nobody.
    fn ask_unanswered_part(&mut self) -> bool {
        let Some(run) = &self.resync.run else {
            return false;
        };
        if run.part_asked {
            return false;
        }
        // what every answer left to an owner: that owner did not answer (it stalled, died or
        // was never heard from), or it answered and owns none of them
        let ids: Vec<DistributionId> = self
            .cfg
            .identifiers
            .all()
            .filter(|d| {
                !run.answered_by.is_empty()
                    && run.answered_by.iter().all(|p| {
                        run.skipped
                            .get(p)
                            .is_some_and(|s| s.binary_search(d).is_ok())
                    })
            })
            .collect();
        let askers: Vec<NodeId> = run
            .answered_by
            .iter()
            .copied()
            .filter(|p| self.live.get(p).is_some_and(|l| l.alive))
            .collect();
        if ids.is_empty() || askers.is_empty() {
            return false;
        }
        let a = self.core.allocation();
        let owners: BTreeSet<u16> = ids
            .iter()
            .filter_map(|d| a.owner(*d))
            .map(|o| o.0)
            .collect();
        if let Some(run) = &mut self.resync.run {
            run.part_asked = true;
        }
        self.log(format!(
            "resync: {} identifiers no answer covered (owned by node(s) {owners:?} now) asked of node(s) {:?}",
            ids.len(),
            askers.iter().map(|p| p.0).collect::<Vec<_>>()
        ));
        for p in askers {
            self.resync.waiting.insert(p);
            self.send(To::Node(p), Record::ResyncPart { ids: ids.clone() });
        }
        true
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
        if waiting_alive || self.ask_unanswered_part() {
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
