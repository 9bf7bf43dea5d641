//! Automatic load balancing (figure 6A steps 604-605, means 804): how uneven the measured
//! per-identifier load is over the nodes' weighted shares, and the moves of one balancing
//! round. Pure functions over an [`Allocation`], like [`crate::alloc_policy`].
//!
//! - The **imbalance** is the largest ratio, over the nodes with a positive weight, of a node's
//!   load to its weighted share of the total (1.0: every node carries exactly its share).
//! - A round ([`balance_round`]) starts moving only when the imbalance exceeds
//!   [`BalanceParams::threshold`]; once started, rounds go on until it is at or below
//!   [`BalanceParams::low`] (hysteresis: between the two marks a balanced cluster stays as it
//!   is and an unbalanced one keeps improving). A round moves at most
//!   [`BalanceParams::max_moves`] identifiers and never one named in `frozen` (those the
//!   previous round moved: no identifier moves twice in a row).
//! - Each move takes one identifier from the node with the highest load-to-share ratio to the
//!   node with the lowest, choosing the identifier that leaves the higher of the two ratios
//!   lowest, and only when that lowers the imbalance by [`MIN_GAIN`] at least: a move never
//!   raises it, and moves that hardly help are not made. Nodes of weight 0 (drained) never receive anything, and a node never gives
//!   away its last identifier.

use std::collections::{BTreeMap, BTreeSet};

use crate::alloc_policy::Allocation;
use crate::ids::{DistributionId, NodeId};

/// The least a move must lower the imbalance by (measured load is noisy: smaller gains are
/// not worth a move).
pub const MIN_GAIN: f64 = 0.02;

/// The settings of automatic balancing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BalanceParams {
    /// Rounds start moving when the imbalance is above this (e.g. 1.25).
    pub threshold: f64,
    /// Once moving, rounds go on until the imbalance is at or below this (e.g. 1.10; at most
    /// `threshold`).
    pub low: f64,
    /// Identifiers moved per round at most.
    pub max_moves: usize,
}

/// One identifier a round moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// The identifier.
    pub id: DistributionId,
    /// Its owner before.
    pub from: NodeId,
    /// Its owner after.
    pub to: NodeId,
}

/// What one balancing round decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Round {
    /// The allocation after the moves (the epoch incremented even when nothing moved).
    pub next: Allocation,
    /// The moves, in the order chosen.
    pub moves: Vec<Move>,
    /// The imbalance before the round.
    pub before: f64,
    /// The imbalance the moves give (with the same load).
    pub after: f64,
    /// Whether the next round goes on moving (the imbalance is still above the low mark).
    pub active: bool,
}

/// Per node: its load and its weighted share of the total.
fn loads_and_shares(
    a: &Allocation,
    load: &[u64],
    weights: &[(NodeId, u32)],
) -> BTreeMap<NodeId, (u64, f64)> {
    let mut w: BTreeMap<NodeId, u64> = BTreeMap::new();
    for &(n, x) in weights {
        *w.entry(n).or_insert(0) += u64::from(x);
    }
    // a node of weight 0 (drained) takes no part: what it still owns goes by the drain
    w.retain(|_, x| *x > 0);
    let mut per: BTreeMap<NodeId, u64> = w.keys().map(|&n| (n, 0)).collect();
    for (i, o) in a.owners.iter().enumerate() {
        if let Some(l) = o.and_then(|n| per.get_mut(&n)) {
            *l += load.get(i).copied().unwrap_or(0);
        }
    }
    let total: u64 = per.values().sum();
    let wsum: u64 = w.values().sum();
    per.into_iter()
        .map(|(n, l)| {
            let share = if wsum == 0 {
                0.0
            } else {
                total as f64 * w[&n] as f64 / wsum as f64
            };
            (n, (l, share))
        })
        .collect()
}

fn ratio(load: u64, share: f64) -> f64 {
    if share > 0.0 {
        load as f64 / share
    } else {
        1.0
    }
}

fn max_ratio(ls: &BTreeMap<NodeId, (u64, f64)>) -> f64 {
    ls.values()
        .filter(|(_, s)| *s > 0.0)
        .map(|&(l, s)| ratio(l, s))
        .fold(1.0, f64::max)
}

/// The imbalance of `a` under `load` (indexed by identifier): the largest load-to-share ratio
/// over the nodes of positive weight in `weights`, counting the load of the identifiers they
/// own; 1.0 when there is no load. Identifiers of nodes not in `weights` (or of weight 0) are
/// not counted.
pub fn imbalance(a: &Allocation, load: &[u64], weights: &[(NodeId, u32)]) -> f64 {
    max_ratio(&loads_and_shares(a, load, weights))
}

/// Moves identifiers in `next` (at most `max_moves`, none in `frozen`), each from the node of
/// the highest ratio to the node of the lowest (weight above 0), while `go_on` says so of the
/// current imbalance and a move lowers the pair's higher ratio. Returns the moves.
pub(crate) fn greedy_moves(
    next: &mut Allocation,
    load: &[u64],
    weights: &[(NodeId, u32)],
    max_moves: usize,
    frozen: &BTreeSet<DistributionId>,
    go_on: impl Fn(&BTreeMap<NodeId, (u64, f64)>) -> bool,
) -> Vec<Move> {
    let mut ls = loads_and_shares(next, load, weights);
    let mut moves = Vec::new();
    while moves.len() < max_moves && go_on(&ls) {
        let by_ratio = |a: &(&NodeId, &(u64, f64)), b: &(&NodeId, &(u64, f64))| {
            ratio(a.1 .0, a.1 .1)
                .total_cmp(&ratio(b.1 .0, b.1 .1))
                .then(b.0.cmp(a.0))
        };
        let positive = || ls.iter().filter(|(_, (_, s))| *s > 0.0);
        let (Some((&from, &(lf, sf))), Some((&to, &(lt, st)))) =
            (positive().max_by(by_ratio), positive().min_by(by_ratio))
        else {
            break;
        };
        // a node keeps at least one identifier (one with none gets a share by count again)
        if from == to || next.owners.iter().filter(|o| **o == Some(from)).count() < 2 {
            break;
        }
        // the imbalance now and without the pair: a move must lower it by MIN_GAIN at least
        let now = max_ratio(&ls);
        let others = ls
            .iter()
            .filter(|(n, (_, s))| **n != from && **n != to && *s > 0.0)
            .map(|(_, &(l, s))| ratio(l, s))
            .fold(0.0, f64::max);
        let best = next
            .owners
            .iter()
            .enumerate()
            .filter(|(i, o)| **o == Some(from) && !frozen.contains(&DistributionId(*i as u16)))
            .map(|(i, _)| (load.get(i).copied().unwrap_or(0), i))
            .filter(|&(x, _)| x > 0 && x <= lf)
            .map(|(x, i)| (ratio(lf - x, sf).max(ratio(lt + x, st)), x, i))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)));
        match best {
            Some((after, x, i)) if after.max(others) <= now - MIN_GAIN => {
                next.owners[i] = Some(to);
                ls.insert(from, (lf - x, sf));
                ls.insert(to, (lt + x, st));
                moves.push(Move {
                    id: DistributionId(i as u16),
                    from,
                    to,
                });
            }
            _ => break,
        }
    }
    moves
}

/// One automatic balancing round from `current` under `load` (per identifier, e.g. packets per
/// second) and `weights` (the candidates; drained nodes absent or 0). `active`: whether the
/// previous round left the imbalance above the low mark. `frozen`: identifiers not to move
/// (those the previous round moved).
pub fn balance_round(
    current: &Allocation,
    load: &[u64],
    weights: &[(NodeId, u32)],
    params: &BalanceParams,
    frozen: &BTreeSet<DistributionId>,
    active: bool,
) -> Round {
    let mut next = Allocation {
        epoch: crate::ids::Epoch(current.epoch.0 + 1),
        owners: current.owners.clone(),
        next_owners: Vec::new(),
    };
    let before = imbalance(current, load, weights);
    let low = params.low.min(params.threshold);
    let start = before > params.threshold || (active && before > low);
    let moves = if start {
        greedy_moves(&mut next, load, weights, params.max_moves, frozen, |ls| {
            max_ratio(ls) > low
        })
    } else {
        Vec::new()
    };
    let after = imbalance(&next, load, weights);
    Round {
        next,
        moves,
        before,
        after,
        active: start && after > low,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_policy::even_split;
    use crate::ids::IdCount;
    use proptest::prelude::*;

    fn n(x: u16) -> NodeId {
        NodeId(x)
    }

    const P: BalanceParams = BalanceParams {
        threshold: 1.25,
        low: 1.1,
        max_moves: 4,
    };

    /// 16 identifiers over nodes 1 and 2; node 1's first `hot` identifiers carry 100, every
    /// other one 10.
    fn skewed(hot: usize) -> (Allocation, Vec<u64>) {
        let a = even_split(IdCount::new(16).unwrap(), &[n(1), n(2)]);
        let mut seen = 0;
        let load = (0..16)
            .map(|i| {
                if a.owners[i] == Some(n(1)) && seen < hot {
                    seen += 1;
                    100
                } else {
                    10
                }
            })
            .collect();
        (a, load)
    }

    #[test]
    fn imbalance_is_the_largest_load_to_share_ratio() {
        let (a, load) = skewed(2);
        // node 1: 6 * 10 + 2 * 100 = 260, node 2: 80, share 170 each
        let w = [(n(1), 1), (n(2), 1)];
        assert!((imbalance(&a, &load, &w) - 260.0 / 170.0).abs() < 1e-9);
        // no load: balanced
        assert_eq!(imbalance(&a, &[0; 16], &w), 1.0);
        // node 1 with weight 3: share 255 of 340
        let w3 = [(n(1), 3), (n(2), 1)];
        assert!((imbalance(&a, &load, &w3) - 260.0 / 255.0).abs() < 1e-9);
    }

    #[test]
    fn below_the_threshold_nothing_moves_above_it_the_imbalance_falls() {
        let w = [(n(1), 1), (n(2), 1)];
        // 104 / 92 = 1.13: under 1.25, nothing moves unless a round is already under way
        let (a, mut load) = skewed(0);
        for (i, l) in load.iter_mut().enumerate() {
            if a.owners[i] == Some(n(1)) {
                *l = 13;
            }
        }
        let r = balance_round(&a, &load, &w, &P, &BTreeSet::new(), false);
        assert!(r.moves.is_empty() && !r.active, "{r:?}");
        assert_eq!(r.next.owners, a.owners);
        // the same imbalance in an active round (above the low mark of 1.1): it moves
        let r = balance_round(&a, &load, &w, &P, &BTreeSet::new(), true);
        assert!(!r.moves.is_empty());
        assert!(r.after < r.before);
        // skewed well above the threshold
        let (a, load) = skewed(2);
        let r = balance_round(&a, &load, &w, &P, &BTreeSet::new(), false);
        assert!(r.before > 1.25 && r.after < r.before, "{r:?}");
        assert!(r.after <= P.low || r.moves.len() == P.max_moves || r.active);
        assert_eq!(a.moved(&r.next), r.moves.len());
        for m in &r.moves {
            assert_eq!((m.from, m.to), (n(1), n(2)));
            assert_eq!(r.next.owner(m.id), Some(n(2)));
        }
        assert!((imbalance(&r.next, &load, &w) - r.after).abs() < 1e-9);
    }

    #[test]
    fn hysteresis_stops_at_the_low_mark() {
        let w = [(n(1), 1), (n(2), 1)];
        let (a, load) = skewed(3);
        let p = BalanceParams { max_moves: 1, ..P };
        let mut cur = a;
        let mut active = false;
        let mut frozen = BTreeSet::new();
        let mut rounds = 0;
        loop {
            let r = balance_round(&cur, &load, &w, &p, &frozen, active);
            assert!(r.moves.len() <= 1);
            if r.moves.is_empty() {
                break;
            }
            assert!(r.after < r.before);
            frozen = r.moves.iter().map(|m| m.id).collect();
            active = r.active;
            cur = r.next;
            rounds += 1;
            assert!(rounds < 16);
        }
        let end = imbalance(&cur, &load, &w);
        // it stopped either at the low mark or where no move helps any more
        assert!(!active || end > p.low);
        assert!(end < 1.25, "{end}");
    }

    #[test]
    fn frozen_identifiers_and_drained_nodes() {
        let w = [(n(1), 1), (n(2), 1)];
        let (a, load) = skewed(2);
        let hot: BTreeSet<DistributionId> = (0..16u16)
            .map(DistributionId)
            .filter(|d| load[d.index()] == 100)
            .collect();
        let r = balance_round(&a, &load, &w, &P, &hot, false);
        assert!(r.moves.iter().all(|m| !hot.contains(&m.id)));
        // every identifier of node 1 frozen: nothing can move
        let all1: BTreeSet<DistributionId> = a.ids_of(n(1)).into_iter().collect();
        let r = balance_round(&a, &load, &w, &P, &all1, false);
        assert!(r.moves.is_empty());
        // node 3 (drained: weight 0) is the least loaded but gets nothing
        let w0 = [(n(1), 1), (n(2), 1), (n(3), 0)];
        let r = balance_round(&a, &load, &w0, &P, &BTreeSet::new(), false);
        assert!(!r.moves.is_empty());
        assert!(r.next.ids_of(n(3)).is_empty());
    }

    #[test]
    fn weights_are_honoured() {
        // node 1 weighs 3, node 2 weighs 1: 3:1 of the load is balanced, 1:1 is not
        let c = IdCount::new(16).unwrap();
        let a = even_split(c, &[n(1), n(2)]);
        let load = vec![10u64; 16];
        let w = [(n(1), 3), (n(2), 1)];
        assert!((imbalance(&a, &load, &w) - 80.0 / 40.0).abs() < 1e-9);
        let p = BalanceParams { max_moves: 16, ..P };
        let r = balance_round(&a, &load, &w, &p, &BTreeSet::new(), false);
        assert!(r.moves.iter().all(|m| m.from == n(2) && m.to == n(1)));
        assert_eq!(r.next.ids_of(n(1)).len(), 12, "{r:?}");
        assert!((r.after - 1.0).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn a_round_never_raises_the_imbalance_and_keeps_its_limits(
            loads in proptest::collection::vec(0u64..1000, 64),
            ws in proptest::collection::vec(0u32..4, 3),
            max_moves in 0usize..10,
            frozen in proptest::collection::btree_set(0u16..64, 0..20),
            active in any::<bool>(),
        ) {
            let c = IdCount::new(64).unwrap();
            let a = even_split(c, &[n(0), n(1), n(2)]);
            let w: Vec<(NodeId, u32)> = ws.iter().enumerate().map(|(i, &x)| (n(i as u16), x)).collect();
            let frozen: BTreeSet<DistributionId> = frozen.into_iter().map(DistributionId).collect();
            let r = balance_round(&a, &loads, &w, &BalanceParams { max_moves, ..P }, &frozen, active);
            prop_assert!(r.after <= r.before + 1e-9);
            prop_assert!(r.moves.len() <= max_moves);
            prop_assert_eq!(a.moved(&r.next), r.moves.len());
            for m in &r.moves {
                prop_assert!(!frozen.contains(&m.id));
                prop_assert!(ws[m.to.0 as usize] > 0, "a node of weight 0 received {:?}", m);
                prop_assert_eq!(a.owner(m.id), Some(m.from));
            }
            if !active && r.before <= P.threshold {
                prop_assert!(r.moves.is_empty());
            }
            if r.before <= P.low {
                prop_assert!(r.moves.is_empty());
            }
        }
    }
}
