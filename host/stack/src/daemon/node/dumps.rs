//! The commands that walk the node-specific table (`dump`, `card_dump`) and the tables'
//! check (`check`: invariant 2, and every entry's identifier recomputed from its key), worked on in bounded slices across loop turns: a slice reads whole
//! identifiers until [`WALK_SLICE`] entries were read or a few milliseconds went by, then the
//! loop serves its sockets and
//! timers again (heartbeats, acknowledgements, Raft) before the next slice. The answer comes
//! when the last identifier was read. Each identifier is read at one moment; the listing as a
//! whole is not one snapshot (entries that change meanwhile show as they were when their
//! identifier was read). The answer is turned into JSON off the loop (the control socket's
//! writer does that on a blocking thread).

use std::collections::VecDeque;

use serde_json::Value;
use tokio::sync::oneshot;

use super::Runtime;
use crate::core::consistency::IdentifierCheck;
use crate::core::ids::DistributionId;
use crate::core::node_table::NodeSpecificTable;
use crate::daemon::protocol::{
    CardDumpReply, CardEntryReport, CheckReply, DumpReply, EntryReport, IdMismatch, Response,
};

/// Entries a turn of the loop reads for the walks in progress (whole identifiers: one larger
/// than this is read in one turn). A few milliseconds of work.
pub(super) const WALK_SLICE: usize = 2048;

/// Time a turn of the loop spends on the walks at most (checked after each identifier): a
/// slow build or a loaded machine reads fewer entries per turn, not longer turns.
const WALK_TIME: std::time::Duration = std::time::Duration::from_millis(4);

/// What a walk collects.
enum Walk {
    /// `dump`: at most `limit` entries, keys in debug form.
    Dump {
        limit: usize,
        entries: Vec<EntryReport>,
    },
    /// `card_dump`: keys in the card's layout, where each entry is.
    Card { entries: Vec<CardEntryReport> },
    /// `check`: the problems found so far and the identifiers recomputed from the keys (each
    /// identifier checked at one moment).
    Check {
        problems: Vec<String>,
        ids: IdentifierCheck,
    },
}

/// A walk over the identifiers in progress.
pub(super) struct WalkJob {
    walk: Walk,
    /// The next identifier to read.
    next: u16,
    /// One past the last identifier to read.
    end: u16,
    reply: oneshot::Sender<Response>,
}

/// The walks in progress, answered in the order asked.
#[derive(Default)]
pub(super) struct Walks {
    jobs: VecDeque<WalkJob>,
}

impl Walks {
    /// Whether a walk is in progress (the loop then does not sleep).
    pub(super) fn busy(&self) -> bool {
        !self.jobs.is_empty()
    }
}

impl Runtime {
    /// Starts `dump` (at most `limit` entries).
    pub(super) fn start_dump(&mut self, limit: u64, reply: oneshot::Sender<Response>) {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.start_walk(
            Walk::Dump {
                limit,
                entries: Vec::new(),
            },
            None,
            reply,
        );
    }

    /// Starts `card_dump` (of identifier `did`, or all).
    pub(super) fn start_card_dump(&mut self, did: Option<u16>, reply: oneshot::Sender<Response>) {
        self.start_walk(
            Walk::Card {
                entries: Vec::new(),
            },
            did,
            reply,
        );
    }

    /// Starts `check`.
    pub(super) fn start_check(&mut self, reply: oneshot::Sender<Response>) {
        self.start_walk(
            Walk::Check {
                problems: Vec::new(),
                ids: IdentifierCheck::default(),
            },
            None,
            reply,
        );
    }

    fn start_walk(&mut self, walk: Walk, did: Option<u16>, reply: oneshot::Sender<Response>) {
        let count = self.cfg.identifiers.get();
        let (next, end) = match did {
            // an identifier out of range has no entries
            Some(d) if d >= count => (0, 0),
            Some(d) => (d, d + 1),
            None => (0, count),
        };
        self.walks.jobs.push_back(WalkJob {
            walk,
            next,
            end,
            reply,
        });
        // the first slice now: a small table is answered at once
        self.walk_slice();
    }

    /// Reads the next slice of the walks in progress; answers those that are done.
    pub(super) fn walk_slice(&mut self) {
        let started = std::time::Instant::now();
        let mut budget = WALK_SLICE;
        while budget > 0 {
            let Some(mut job) = self.walks.jobs.pop_front() else {
                return;
            };
            if job.reply.is_closed() {
                // the client went away: nobody reads the answer
                continue;
            }
            while job.next < job.end && budget > 0 {
                let d = DistributionId(job.next);
                job.next += 1;
                let read = self.walk_identifier(&mut job.walk, d);
                budget = budget.saturating_sub(read.max(1));
                if started.elapsed() >= WALK_TIME {
                    budget = 0;
                }
                if let Walk::Dump { limit, entries } = &job.walk {
                    if entries.len() >= *limit {
                        job.next = job.end;
                    }
                }
            }
            if job.next < job.end {
                self.walks.jobs.push_front(job);
                return;
            }
            let answer = self.walk_answer(job.walk);
            let _ = job.reply.send(answer);
        }
    }

    /// Reads identifier `d` into `walk`; returns how many entries it read.
    fn walk_identifier(&self, walk: &mut Walk, d: DistributionId) -> usize {
        let core = self.member.core();
        let table = core.node_table();
        match walk {
            Walk::Dump { limit, entries } => {
                let room = limit.saturating_sub(entries.len());
                let before = entries.len();
                entries.extend(table.entries_of(d).take(room).map(|e| EntryReport {
                    action: crate::filter::core_action(e.action).to_owned(),
                    creator: e.creator.0,
                    dist: e.dist.0,
                    key: format!("{:?}", e.key),
                    state: crate::filter::core_state(e.state).to_owned(),
                    version: e.version,
                }));
                entries.len() - before
            }
            Walk::Card { entries } => {
                let on_card = table.card().entries_of(d).map(|e| (e, "card"));
                let overflow = table.overflow().entries_of(d).map(|e| (e, "overflow"));
                let before = entries.len();
                entries.extend(on_card.chain(overflow).map(|(e, location)| {
                    let k = crate::core::card_table::cam_key(&e.key).ok();
                    CardEntryReport {
                        action: crate::filter::core_action(e.action).to_owned(),
                        creator: e.creator.0,
                        did: e.dist.0,
                        key: serde_json::to_value(k).unwrap_or(Value::Null),
                        // the views' key text: the initiator first (docs/vocabulary.md)
                        key_text: crate::filter::ViewKey::of_core(&e.key, e.initiator_is_lo)
                            .to_string(),
                        packets: e.packets,
                        state: crate::filter::core_state(e.state).to_owned(),
                        version: e.version,
                        location: location.to_owned(),
                    }
                }));
                entries.len() - before
            }
            Walk::Check { problems, ids } => {
                core.check_identifiers_of(d, ids);
                let (p, expected) = core.check_identifier(d);
                problems.extend(p);
                let held = table.dist_len(d);
                if held != expected {
                    problems.push(format!(
                        "{}: identifier {}: node-specific table holds {held} entries, common table has {expected} for it",
                        self.cfg.node, d.0
                    ));
                }
                held + core.common().dist_len(d)
            }
        }
    }

    fn walk_answer(&self, walk: Walk) -> Response {
        let table = self.member.core().node_table();
        match walk {
            Walk::Dump { entries, .. } => Response::Dump(DumpReply {
                backend: self.cfg.card.clone(),
                capacity: table.capacity(),
                entries,
                len: table.len(),
            }),
            Walk::Card { entries } => Response::CardDump(CardDumpReply {
                backend: self.cfg.card.clone(),
                capacity: table.capacity(),
                entries,
                len: table.len(),
            }),
            Walk::Check { problems, ids } => Response::Check(CheckReply {
                checked: (ids.common + ids.node_specific) as u64,
                mismatches: ids
                    .mismatches
                    .iter()
                    .map(|m| IdMismatch {
                        key: crate::filter::ViewKey::of_core(&m.key, m.initiator_is_lo).to_string(),
                        recomputed: m.recomputed.0,
                        stored: m.stored.0,
                        table: m.table.name().to_owned(),
                    })
                    .collect(),
                problems,
            }),
        }
    }
}
