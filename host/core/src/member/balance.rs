//! Automatic load balancing in the member (figure 6A step 604, means 804): every member
//! reports the load of the identifiers it owns to the leader each balancing interval (a `W`
//! datagram, [`crate::load_report`]; the leader keeps its own), and the leader runs a
//! [`crate::balance`] round each interval over the latest reports, carrying out its moves as
//! planned moves (prepare, release, assign: no packet lost, never two owners).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Member, Output};
use crate::alloc_policy::Allocation;
use crate::balance::{self, BalanceParams, Move};
use crate::ids::{DistributionId, NodeId};
use crate::load_report::{LoadReport, MAX_WEIGHT};
use crate::node_table::NodeSpecificTable;

/// The settings of automatic balancing ([`super::MemberConfig::balance`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BalanceConfig {
    /// How often members report load and the leader runs a round (zero: off; members then
    /// report nothing and an operator rebalance uses entry counts).
    pub interval: Duration,
    /// The round's marks and move limit.
    pub params: BalanceParams,
    /// This node's configured weight (0 to [`MAX_WEIGHT`]): its share of the load is its
    /// weight, scaled by its card's capacity over the largest card's, over the sum of them.
    pub weight: u32,
    /// Below this many packets per second over the whole cluster a round moves nothing: a
    /// nearly idle cluster's ratios are noise (one flow makes any node "overloaded"), and a
    /// move costs more than it balances.
    pub min_pps: u64,
}

impl BalanceConfig {
    /// Balancing off (the default of [`super::MemberConfig::all_members`]).
    pub const OFF: BalanceConfig = BalanceConfig {
        interval: Duration::ZERO,
        params: BalanceParams {
            threshold: 1.25,
            low: 1.1,
            max_moves: 4,
        },
        weight: 1,
        min_pps: 100,
    };

    /// The daemon's defaults: off (opt in with an interval, e.g. 5 s), threshold 1.25, low
    /// mark 1.10, 4 moves per round, weight 1, nothing moved under 100 packets per second.
    /// Off because a balancing round that overlaps a graceful leave makes that leave lose
    /// frames in the namespace lab (`lab_run`'s graceful stop: 1,232 frames lost, a 2 s
    /// stall, where it loses none with balancing off); until that is fixed an operator turns
    /// it on knowingly.
    pub const DEFAULT: BalanceConfig = BalanceConfig::OFF;
}

/// One node's latest report at the leader.
#[derive(Clone, Debug)]
struct Reported {
    at: Duration,
    report: LoadReport,
}

/// One node's load as the leader sees it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NodeLoad {
    /// The node.
    pub node: u16,
    /// Its effective weight (configured weight scaled by card capacity).
    pub weight: u32,
    /// Its configured weight (as it reported it).
    pub configured_weight: u32,
    /// Its card capacity in entries (0: unbounded).
    pub capacity: u32,
    /// Packets per second of the identifiers it owns.
    pub packets_per_s: u64,
    /// Bytes per second of the identifiers it owns.
    pub bytes_per_s: u64,
    /// Its weighted share of the total, packets per second.
    pub share_per_s: f64,
    /// Its load over its share (1.0: exactly its share).
    pub ratio: f64,
    /// Identifiers it owns.
    pub identifiers: usize,
}

/// A balancing round that moved something.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RoundReport {
    /// When (wall clock, ms).
    pub at_unix_ms: u64,
    /// The imbalance before.
    pub before: f64,
    /// The imbalance the moves give under the same load.
    pub after: f64,
    /// The moves: identifier, from, to.
    pub moves: Vec<(u16, u16, u16)>,
}

/// What `ctl load` shows.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LoadView {
    /// Whether this member leads (only the leader has every node's reports).
    pub leader: bool,
    /// The balancing interval (ms; 0: off).
    pub interval_ms: u64,
    /// Rounds start above this imbalance.
    pub threshold: f64,
    /// Rounds go on until at or below this one.
    pub low: f64,
    /// Moves per round at most.
    pub max_moves: usize,
    /// The imbalance now (from the latest reports, over the current allocation).
    pub imbalance: f64,
    /// Per node with a fresh report (or a candidate).
    pub nodes: Vec<NodeLoad>,
    /// Rounds run so far (by this member as leader).
    pub rounds: u64,
    /// Identifiers moved by those rounds.
    pub moved: u64,
    /// The last round that moved something.
    pub last_round: Option<RoundReport>,
}

/// The member's balancing state.
#[derive(Debug, Default)]
pub(super) struct BalanceState {
    next_report: Duration,
    last_report: Duration,
    /// Per node (this one too): its latest report.
    book: BTreeMap<NodeId, Reported>,
    next_round: Duration,
    /// The previous round left the imbalance above the low mark.
    active: bool,
    /// What the previous round moved (not moved again by the next one).
    frozen: BTreeSet<DistributionId>,
    rounds: u64,
    moved: u64,
    last_round: Option<RoundReport>,
    /// The latest wall clock of a tick (rounds are stamped with it).
    pub(super) unix_ms: u64,
}

impl<T: NodeSpecificTable> Member<T> {
    /// Takes the load of the last interval and reports it to `leader` (kept here when this
    /// member leads), when balancing is on and the interval has passed.
    pub(super) fn report_load(&mut self, now: Duration, leader: Option<NodeId>) {
        let every = self.cfg.balance.interval;
        if every.is_zero() || now < self.balance.next_report {
            return;
        }
        self.balance.next_report = now + every;
        let covered = now.saturating_sub(self.balance.last_report);
        self.balance.last_report = now;
        let load = self.core.take_load();
        let capacity = self
            .core
            .node_table()
            .capacity()
            .map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX));
        let report = LoadReport::from_load(
            u32::try_from(covered.as_millis()).unwrap_or(u32::MAX),
            self.cfg.balance.weight,
            capacity,
            &load,
        );
        match leader {
            Some(l) if l == self.cfg.node => self.note_report(now, l, report),
            Some(l) if self.live.contains_key(&l) => self.out.push(Output::Datagram {
                to: l,
                bytes: report.to_bytes(),
            }),
            _ => {}
        }
    }

    /// A `W` datagram from `from`: kept for the leader's rounds; one that does not parse or
    /// names an identifier out of range is counted as a decode error.
    pub(super) fn on_load_report(&mut self, now: Duration, from: NodeId, bytes: &[u8]) {
        let n = self.cfg.identifiers.len();
        match LoadReport::parse(bytes) {
            Ok(r) if r.entries.iter().all(|e| e.id.index() < n) => self.note_report(now, from, r),
            _ => self.on_bad_datagram(),
        }
    }

    fn note_report(&mut self, now: Duration, from: NodeId, report: LoadReport) {
        self.balance.book.insert(from, Reported { at: now, report });
    }

    /// Per identifier: packets and bytes per second, the largest of the fresh reports (an
    /// identifier that moved during an interval is in both its owners' reports).
    fn load_rates(&self, now: Duration) -> Vec<(u64, u64)> {
        let n = self.cfg.identifiers.len();
        let mut rates = vec![(0u64, 0u64); n];
        let stale = self.cfg.balance.interval * 3;
        for r in self.balance.book.values() {
            if now.saturating_sub(r.at) > stale {
                continue;
            }
            let ms = u64::from(r.report.interval_ms.max(1));
            for e in &r.report.entries {
                if let Some(x) = rates.get_mut(e.id.index()) {
                    x.0 = x.0.max(u64::from(e.packets) * 1000 / ms);
                    x.1 = x.1.max(e.bytes.saturating_mul(1000) / ms);
                }
            }
        }
        rates
    }

    /// The configured weight and card capacity `n` reported (this node: its own).
    fn weight_and_capacity(&self, n: NodeId) -> (u32, u32) {
        if n == self.cfg.node {
            let cap = self.core.node_table().capacity().unwrap_or(0);
            return (
                self.cfg.balance.weight.min(MAX_WEIGHT),
                u32::try_from(cap).unwrap_or(u32::MAX),
            );
        }
        self.balance
            .book
            .get(&n)
            .map_or((1, 0), |r| (r.report.weight, r.report.capacity))
    }

    /// Effective weights of `candidates`: configured weight × 1000 × capacity / largest
    /// capacity (an unbounded card counts as the largest).
    pub(super) fn balance_weights(&self, candidates: &[NodeId]) -> Vec<(NodeId, u32)> {
        let wc: Vec<(NodeId, u32, u32)> = candidates
            .iter()
            .map(|&n| {
                let (w, c) = self.weight_and_capacity(n);
                (n, w, c)
            })
            .collect();
        let max_cap = wc.iter().map(|x| u64::from(x.2)).max().unwrap_or(0);
        wc.into_iter()
            .map(|(n, w, c)| {
                let scale = if c == 0 || max_cap == 0 {
                    1000
                } else {
                    (1000 * u64::from(c) / max_cap).max(1)
                };
                (n, (u64::from(w) * scale) as u32)
            })
            .collect()
    }

    /// Packets per second per identifier from the reports, if any identifier has traffic.
    pub(super) fn packet_load(&self, now: Duration) -> Option<Vec<u64>> {
        let l: Vec<u64> = self.load_rates(now).into_iter().map(|x| x.0).collect();
        l.iter().any(|&x| x > 0).then_some(l)
    }

    /// The leader's round, when one is due: the allocation its moves give, or `None` (not
    /// due, no load, or balanced).
    pub(super) fn balance_target(
        &mut self,
        now: Duration,
        cur: &Allocation,
        candidates: &[NodeId],
    ) -> Option<Allocation> {
        let every = self.cfg.balance.interval;
        if every.is_zero() || now < self.balance.next_round {
            return None;
        }
        self.balance.next_round = now + every;
        let load = self.packet_load(now)?;
        if load.iter().sum::<u64>() < self.cfg.balance.min_pps {
            return None;
        }
        let weights = self.balance_weights(candidates);
        let frozen = std::mem::take(&mut self.balance.frozen);
        let round = balance::balance_round(
            cur,
            &load,
            &weights,
            &self.cfg.balance.params,
            &frozen,
            self.balance.active,
        );
        self.balance.rounds += 1;
        self.balance.active = round.active;
        self.balance.frozen = round.moves.iter().map(|m| m.id).collect();
        if round.moves.is_empty() {
            return None;
        }
        self.balance.moved += round.moves.len() as u64;
        let list: Vec<String> = round
            .moves
            .iter()
            .map(|m| format!("{} {}->{}", m.id.0, m.from.0, m.to.0))
            .collect();
        let p = self.cfg.balance.params;
        self.log(format!(
            "balance: imbalance {:.2} (threshold {:.2}, low mark {:.2}): moving {} \
             identifiers ({}); {:.2} after",
            round.before,
            p.threshold,
            p.low,
            round.moves.len(),
            list.join(", "),
            round.after
        ));
        self.balance.last_round = Some(RoundReport {
            at_unix_ms: self.balance.unix_ms,
            before: round.before,
            after: round.after,
            moves: round
                .moves
                .iter()
                .map(|&Move { id, from, to }| (id.0, from.0, to.0))
                .collect(),
        });
        Some(round.next)
    }

    /// What `ctl load` shows: the latest reports over the agreed allocation `cur`.
    pub fn load_view(&self, cur: &Allocation) -> LoadView {
        let now = self.now;
        let rates = self.load_rates(now);
        let load: Vec<u64> = rates.iter().map(|x| x.0).collect();
        let mut nodes: BTreeSet<NodeId> = self.cfg.members.clone();
        nodes.retain(|n| !self.leader.drained.contains(n) && self.is_peer_ready(*n));
        let candidates: Vec<NodeId> = nodes.into_iter().collect();
        let weights = self.balance_weights(&candidates);
        let wsum: u64 = weights.iter().map(|w| u64::from(w.1)).sum();
        let per = |n: NodeId, pick: fn(&(u64, u64)) -> u64| -> u64 {
            cur.ids_of(n).iter().map(|d| pick(&rates[d.index()])).sum()
        };
        let total: u64 = candidates.iter().map(|&n| per(n, |x| x.0)).sum();
        let nodes = weights
            .iter()
            .map(|&(n, w)| {
                let (configured_weight, capacity) = self.weight_and_capacity(n);
                let pps = per(n, |x| x.0);
                let share = if wsum == 0 {
                    0.0
                } else {
                    total as f64 * f64::from(w) / wsum as f64
                };
                NodeLoad {
                    node: n.0,
                    weight: w,
                    configured_weight,
                    capacity,
                    packets_per_s: pps,
                    bytes_per_s: per(n, |x| x.1),
                    share_per_s: share,
                    ratio: if share > 0.0 { pps as f64 / share } else { 1.0 },
                    identifiers: cur.ids_of(n).len(),
                }
            })
            .collect();
        let p = self.cfg.balance.params;
        LoadView {
            leader: self.view.leader == Some(self.cfg.node),
            interval_ms: self.cfg.balance.interval.as_millis() as u64,
            threshold: p.threshold,
            low: p.low,
            max_moves: p.max_moves,
            imbalance: balance::imbalance(cur, &load, &weights),
            nodes,
            rounds: self.balance.rounds,
            moved: self.balance.moved,
            last_round: self.balance.last_round.clone(),
        }
    }
}
