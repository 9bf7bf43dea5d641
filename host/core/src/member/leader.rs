//! The leader's duties (means 802/804/806): monitor members, allocate, rebalance, promote
//! learners. Moves away from a live owner go in agreed steps so that no identifier is ever
//! handled by two nodes at once and none of its frames is lost: prepare (the owners stay, the
//! epoch names each moving identifier's next owner, which starts holding its frames while the
//! owner keeps handling them), release (nobody owns it; the
//! releaser sends the next owner its place in each input and its final state), assign (the
//! next owner owns it and, once the final state is there, hands back the held frames the
//! releaser had handled and handles the rest). A dead owner's identifiers move in one step.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::{ConsensusView, Member, Output};
use crate::alloc_policy::{self, Allocation};
use crate::ids::{DistributionId, Epoch, NodeId};
use crate::node_table::NodeSpecificTable;

/// How often the leader looks at the allocation.
pub const CHECK_EVERY: Duration = Duration::from_millis(10);
/// How long a proposal may stay unagreed before the leader plans again.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long phase 2 of a release waits for members that released nothing.
pub const RELEASE_WAIT: Duration = Duration::from_millis(300);

/// An operator request, carried out by the leader in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpRequest {
    /// Move these identifiers to this node.
    Move(Vec<DistributionId>, NodeId),
    /// Rebalance by load.
    Rebalance,
}

/// The leader's bookkeeping.
#[derive(Debug, Default)]
pub struct LeaderState {
    /// Nodes the operator drained.
    pub drained: BTreeSet<NodeId>,
    /// The target of a release under way (phase 2 assigns it), with the operator request it
    /// carries out (put back in the queue if the release is not agreed).
    planned: Option<(Allocation, Option<OpRequest>)>,
    /// Whether the planned move's release step was proposed (before that: its prepare step).
    released: bool,
    /// The live owners the pending release takes identifiers from.
    releasers: BTreeSet<NodeId>,
    phase1_at: Duration,
    /// The last proposal not yet agreed, and when it was made.
    pending: Option<(Epoch, Duration)>,
    /// Operator requests waiting.
    pub(super) ops: VecDeque<OpRequest>,
    /// Owners that are not serving (silent, or they said they are fenced or not ready) whose
    /// stamps this leader no longer echoes: it takes an alive one's identifiers in one step
    /// only once no lease it granted can still run (see `liveness`), and echoes again once
    /// they own nothing and applied the epoch that took the last of their identifiers.
    pub(super) withheld: BTreeMap<NodeId, Withheld>,
}

/// An owner whose stamps the leader does not echo.
#[derive(Clone, Copy, Debug)]
pub(super) struct Withheld {
    /// Since when.
    pub since: Duration,
    /// The first agreed epoch in which it owned nothing: echoed again once it applied it.
    pub clear_at: Option<Epoch>,
}

impl<T: NodeSpecificTable> Member<T> {
    /// A step (`step`: "prepare" or "release") of epoch `epoch` that consensus did not agree
    /// as planned: logged, and the operator's request `op`, not done, goes back to the front of
    /// the queue to be planned again from what is agreed.
    fn plan_again(&mut self, step: &str, epoch: Epoch, op: Option<OpRequest>) {
        self.log(format!(
            "{step} of epoch {} not agreed: planning again",
            epoch.0
        ));
        if let Some(op) = op {
            self.leader.ops.push_front(op);
        }
    }

    /// Whether `n` has applied `epoch`, or is not alive (nobody waits for it).
    fn applied_or_dead(&self, n: NodeId, epoch: Epoch) -> bool {
        !self.is_alive(n) || self.applied_epoch(n) >= epoch
    }

    /// Consensus refused the last proposal (not the leader any more, a full queue): plan
    /// again at the next tick.
    pub fn proposal_failed(&mut self) {
        self.leader.pending = None;
    }

    /// A member that joined as a learner becomes a voter once it is ready (its common table
    /// complete), one configuration change at a time, so the cluster's fault tolerance grows
    /// with it.
    fn promote_learners(&mut self, view: &ConsensusView<'_>) {
        if view.conf_change_pending {
            return;
        }
        let me = self.cfg.node;
        let next = self
            .cfg
            .members
            .iter()
            .copied()
            .find(|n| *n != me && !view.voters.contains(n) && self.is_peer_ready(*n));
        if let Some(n) = next {
            self.log(format!("proposes node {} as a voter", n.0));
            self.out.push(Output::PromoteVoter(n));
        }
    }

    pub(super) fn leader_duties(&mut self, now: Duration, view: &ConsensusView<'_>) {
        if !self.warmed_up(now) || self.has_left() {
            // a leader whose leave is done proposes nothing more (its heartbeats say it
            // retired, and the others' leases no longer wait for its grant)
            return;
        }
        self.promote_learners(view);
        let cur = view.agreed;
        if let Some((p, at)) = self.leader.pending {
            if now.saturating_sub(at) < PROPOSAL_TIMEOUT && cur.epoch < p {
                return;
            }
            self.leader.pending = None;
        }
        let candidates: Vec<NodeId> = self
            .cfg
            .members
            .iter()
            .copied()
            .filter(|n| {
                self.is_peer_ready(*n)
                    && !self.leader.drained.contains(n)
                    && !self.is_peer_leaving(*n)
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        // an owner that is not serving (silent, fenced or not ready) gets no more echoes from
        // this leader, so that it cannot regain a lease and act on the allocation it knows
        // while the one taking its identifiers is agreed and until it has applied that one
        // (a partition that heals just after the takeover: its first heartbeat would be
        // answered with an echo); one serving again gets them again
        for o in cur.owners.iter().flatten().copied() {
            if o != self.cfg.node && !self.is_peer_ready(o) {
                self.leader.withheld.entry(o).or_insert(Withheld {
                    since: now,
                    clear_at: None,
                });
            }
        }
        let live = &self.live;
        self.leader.withheld.retain(|o, w| {
            let serving = live.get(o).is_some_and(|l| l.alive && l.ready && !l.fenced);
            if cur.owners.iter().flatten().any(|x| x == o) {
                w.clear_at = None;
            } else if w.clear_at.is_none() {
                w.clear_at = Some(cur.epoch);
            }
            let caught_up = w
                .clear_at
                .is_some_and(|e| live.get(o).is_some_and(|l| l.applied >= e));
            !serving && !caught_up
        });
        // a silent owner's identifiers move only once a majority of the voters reports it
        // out: by then its lease has expired (see `liveness`)
        if cur
            .owners
            .iter()
            .flatten()
            .any(|o| !self.is_peer_ready(*o) && !self.confirmed_out(*o))
        {
            return;
        }
        let weights: Vec<(NodeId, u32)> = candidates.iter().map(|n| (*n, 1)).collect();
        if let Some((plan, op)) = self.leader.planned.take() {
            if self.leader.released {
                self.release_phase2(now, cur, plan, op, &candidates, &weights);
            } else {
                self.release_step(now, cur, plan, op);
            }
            return;
        }
        if !cur.next_owners.is_empty() && cur.owners.iter().all(Option::is_some) {
            // a prepared move nobody carries out (the leader that planned it lost office): the
            // named next owners stop holding
            self.log(format!(
                "epoch {} prepared a move no leader carries out: clearing it",
                cur.epoch.0
            ));
            self.propose(
                now,
                Allocation {
                    epoch: Epoch(cur.epoch.0 + 1),
                    owners: cur.owners.clone(),
                    next_owners: Vec::new(),
                },
            );
            return;
        }
        let op = self.leader.ops.pop_front();
        let Some(target) = self.target(now, cur, op.clone(), &candidates, &weights) else {
            return;
        };
        if target.owners == cur.owners {
            return;
        }
        let release: Vec<usize> = (0..cur.owners.len())
            .filter(|&i| {
                cur.owners[i].is_some_and(|o| self.is_peer_ready(o) && target.owners[i] != Some(o))
            })
            .collect();
        let next = Epoch(cur.epoch.0 + 1);
        if release.is_empty() {
            self.propose(
                now,
                Allocation {
                    epoch: next,
                    owners: target.owners,
                    next_owners: Vec::new(),
                },
            );
        } else {
            // the prepare step: the owners stay, the next owners are named (they hold from now)
            let prepare = Allocation {
                epoch: next,
                owners: cur.owners.clone(),
                next_owners: release
                    .iter()
                    .filter_map(|&i| target.owners[i].map(|n| (DistributionId(i as u16), n)))
                    .collect(),
            };
            self.leader.phase1_at = now;
            if prepare.next_owners.is_empty() {
                // nobody to hold for: release at once
                self.leader.released = true;
                self.propose_release(now, cur, &target);
            } else {
                self.leader.released = false;
                self.propose(now, prepare);
            }
            self.leader.planned = Some((target, op));
        }
    }

    /// The release step of a planned move (after its prepare step is agreed and applied by
    /// the releasers and the next owners, or took too long for a next owner): nobody owns
    /// the moving identifiers, the next owners still named.
    fn release_step(
        &mut self,
        now: Duration,
        cur: &Allocation,
        plan: Allocation,
        op: Option<OpRequest>,
    ) {
        let prepared = !cur.next_owners.is_empty()
            && cur
                .next_owners
                .iter()
                .all(|(d, n)| cur.owner(*d).is_some() && plan.owner(*d) == Some(*n));
        if !prepared {
            self.plan_again("prepare", cur.epoch, op);
            return;
        }
        let applied = |n: &NodeId| self.applied_or_dead(*n, cur.epoch);
        let owners_applied = cur
            .next_owners
            .iter()
            .all(|(d, n)| applied(n) && cur.owner(*d).is_none_or(|o| applied(&o)));
        let waited = now.saturating_sub(self.leader.phase1_at) >= RELEASE_WAIT;
        if !owners_applied && !waited {
            self.leader.planned = Some((plan, op));
            return;
        }
        self.propose_release(now, cur, &plan);
        self.leader.released = true;
        self.leader.phase1_at = now;
        self.leader.planned = Some((plan, op));
    }

    /// Proposes the release of what `plan` takes from live owners in `cur`, naming the next
    /// owners.
    fn propose_release(&mut self, now: Duration, cur: &Allocation, plan: &Allocation) {
        let mut release = Allocation {
            epoch: Epoch(cur.epoch.0 + 1),
            owners: cur.owners.clone(),
            next_owners: Vec::new(),
        };
        self.leader.releasers.clear();
        for i in 0..release.owners.len() {
            let Some(o) = release.owners[i] else {
                continue;
            };
            if !self.is_peer_ready(o) || plan.owners[i] == Some(o) {
                continue;
            }
            release.owners[i] = None;
            self.leader.releasers.insert(o);
            // whoever phase 2 gives it to holds its packets meanwhile
            if let Some(n) = plan.owners[i] {
                release.next_owners.push((DistributionId(i as u16), n));
            }
        }
        self.propose(now, release);
    }

    /// What the allocation should become: an operator request, or a rebalance when an owner
    /// is not a candidate or a candidate owns nothing. `None`: nothing to do now.
    fn target(
        &mut self,
        now: Duration,
        cur: &Allocation,
        op: Option<OpRequest>,
        candidates: &[NodeId],
        weights: &[(NodeId, u32)],
    ) -> Option<Allocation> {
        Some(match op {
            Some(OpRequest::Move(ids, to)) => alloc_policy::operator_move(cur, &ids, to),
            Some(OpRequest::Rebalance) => {
                // packet load from the reports when there is any, else entry counts
                let (load, lw) = match self.packet_load(now) {
                    Some(l) => (l, self.balance_weights(candidates)),
                    None => (
                        self.cfg
                            .identifiers
                            .all()
                            .map(|d| self.core.common().dist_len(d) as u64 + 1)
                            .collect(),
                        weights.to_vec(),
                    ),
                };
                let lb = alloc_policy::load_balance(cur, &load, &lw, 5, 32);
                // also restore quotas if membership changed
                if lb.owners == cur.owners {
                    alloc_policy::rebalance(cur, weights)
                } else {
                    lb
                }
            }
            None => {
                let owners_ok = cur
                    .owners
                    .iter()
                    .all(|o| o.is_some_and(|n| candidates.contains(&n)));
                let everyone_has = candidates.iter().all(|c| cur.owners.contains(&Some(*c)));
                if owners_ok && everyone_has {
                    // the allocation fits the members: balance by load when a round is due
                    return self.balance_target(now, cur, candidates);
                }
                if cur.epoch.0 == 0 {
                    // first allocation: wait for every configured member, or 3 failure times
                    let all_there = self.cfg.members.iter().all(|n| self.is_peer_ready(*n));
                    if !all_there && now < self.failure() * 3 {
                        return None;
                    }
                }
                alloc_policy::rebalance(cur, weights)
            }
        })
    }

    /// Phase 2 of a release: assign what phase 1 released, once it is agreed and applied.
    fn release_phase2(
        &mut self,
        now: Duration,
        cur: &Allocation,
        plan: Allocation,
        op: Option<OpRequest>,
        candidates: &[NodeId],
        weights: &[(NodeId, u32)],
    ) {
        // the release must be the agreed state: if it was not committed (lost leadership, a
        // dropped proposal), assigning now would move identifiers away from a live owner in
        // one step; plan again from what is agreed
        let unreleased = cur
            .owners
            .iter()
            .zip(&plan.owners)
            .any(|(c, p)| c != p && c.is_some_and(|o| self.is_peer_ready(o)));
        if unreleased {
            self.plan_again("release", cur.epoch, op);
            return;
        }
        // every live member has applied the release (or it took too long for a member that
        // released nothing); a live owner that released identifiers must have applied it,
        // however long that takes (make-before-break: never two owners)
        let applied = |n: &NodeId| self.applied_or_dead(*n, cur.epoch);
        let releasers_applied = self.leader.releasers.iter().all(applied);
        let all_applied = self.cfg.members.iter().all(applied);
        let waited = now.saturating_sub(self.leader.phase1_at) >= RELEASE_WAIT;
        if !releasers_applied || (!all_applied && !waited) {
            self.leader.planned = Some((plan, op));
            return;
        }
        let mut next = Allocation {
            epoch: Epoch(cur.epoch.0 + 1),
            owners: plan.owners,
            next_owners: Vec::new(),
        };
        // the plan may name a node that failed meanwhile
        if next
            .owners
            .iter()
            .flatten()
            .any(|o| !candidates.contains(o))
        {
            let base = Allocation {
                epoch: cur.epoch,
                owners: next
                    .owners
                    .iter()
                    .map(|o| o.filter(|n| candidates.contains(n)))
                    .collect(),
                next_owners: Vec::new(),
            };
            next = alloc_policy::rebalance(&base, weights);
        }
        self.propose(now, next);
    }

    fn propose(&mut self, now: Duration, next: Allocation) {
        self.log(format!("leader proposes epoch {}", next.epoch.0));
        self.leader.pending = Some((next.epoch, now));
        self.out.push(Output::Propose(next));
    }
}
