//! Allocation of distribution identifiers to nodes (figure 6A steps 601-607; means 802-806).
//! Pure functions: each takes the current allocation and returns the next one with the epoch
//! incremented, moving as few identifiers as it can.
//!
//! Invariant 1 (no identifier has two owners) holds by construction: an [`Allocation`] maps
//! each identifier to at most one node.

use super::ids::{DistributionId, Epoch, IdCount, NodeId};
use std::collections::BTreeMap;

/// An agreed allocation: each identifier's owner (or none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The epoch.
    pub epoch: Epoch,
    /// Owner of each identifier, indexed by identifier.
    pub owners: Vec<Option<NodeId>>,
    /// The identifiers this epoch releases (no owner now, the first step of a planned move),
    /// each with the node the leader means to give it to in the next step, sorted by
    /// identifier; empty in every other epoch. Only a hint: the node named holds the
    /// identifier's packets instead of letting them drop between the two steps, and handles
    /// them only once a later agreed epoch gives it the identifier and the handover gate
    /// opens.
    pub next_owners: Vec<(DistributionId, NodeId)>,
}

impl Allocation {
    /// An allocation with no owners.
    pub fn unowned(epoch: Epoch, count: IdCount) -> Self {
        Allocation {
            epoch,
            owners: vec![None; count.len()],
            next_owners: Vec::new(),
        }
    }

    /// An allocation that gives every identifier to `owner`.
    pub fn all_to(owner: NodeId, epoch: Epoch, count: IdCount) -> Self {
        Allocation {
            epoch,
            owners: vec![Some(owner); count.len()],
            next_owners: Vec::new(),
        }
    }

    /// The owner of `d`.
    pub fn owner(&self, d: DistributionId) -> Option<NodeId> {
        self.owners.get(d.index()).copied().flatten()
    }

    /// Number of identifiers.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether there are no identifiers.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The identifiers `node` owns.
    pub fn ids_of(&self, node: NodeId) -> Vec<DistributionId> {
        self.owners
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == Some(node))
            .map(|(i, _)| DistributionId(i as u16))
            .collect()
    }

    /// How many identifiers each node owns.
    pub fn counts(&self) -> BTreeMap<NodeId, usize> {
        let mut m = BTreeMap::new();
        for n in self.owners.iter().flatten() {
            *m.entry(*n).or_insert(0) += 1;
        }
        m
    }

    /// How many identifiers have a different owner in `other`.
    pub fn moved(&self, other: &Allocation) -> usize {
        self.owners
            .iter()
            .zip(&other.owners)
            .filter(|(a, b)| a != b)
            .count()
            + self.owners.len().abs_diff(other.owners.len())
    }

    fn next(&self) -> Allocation {
        Allocation {
            epoch: Epoch(self.epoch.0 + 1),
            owners: self.owners.clone(),
            next_owners: Vec::new(),
        }
    }
}

/// Quotas proportional to weights (largest remainder; ties to the smaller node id).
pub fn quotas(total: usize, weights: &[(NodeId, u32)]) -> BTreeMap<NodeId, usize> {
    let mut w: BTreeMap<NodeId, u64> = BTreeMap::new();
    for &(n, x) in weights {
        *w.entry(n).or_insert(0) += u64::from(x);
    }
    let sum: u64 = w.values().sum();
    let mut q = BTreeMap::new();
    if sum == 0 {
        return q;
    }
    let mut rems = Vec::new();
    let mut given = 0usize;
    for (&n, &x) in &w {
        let exact = total as u64 * x;
        let base = (exact / sum) as usize;
        given += base;
        q.insert(n, base);
        if x > 0 {
            rems.push((exact % sum, n));
        }
    }
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, n) in rems.into_iter().take(total - given) {
        *q.entry(n).or_insert(0) += 1;
    }
    q
}

/// Rebalances to the weights: covers node failure (a node absent from `weights`), join (a new
/// node), per-node weights, and drain (weight 0). Identifiers stay with their owner while the
/// owner is within its quota, so the number moved is the minimum for these quotas.
pub fn rebalance(current: &Allocation, weights: &[(NodeId, u32)]) -> Allocation {
    let mut next = current.next();
    let q = quotas(current.len(), weights);
    let mut kept: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut free = Vec::new();
    for (i, o) in next.owners.iter_mut().enumerate() {
        match o {
            Some(n) if kept.get(n).copied().unwrap_or(0) < q.get(n).copied().unwrap_or(0) => {
                *kept.entry(*n).or_insert(0) += 1;
            }
            _ => {
                *o = None;
                free.push(i);
            }
        }
    }
    let mut free = free.into_iter();
    for (&n, &quota) in &q {
        let have = kept.get(&n).copied().unwrap_or(0);
        for _ in have..quota {
            match free.next() {
                Some(i) => next.owners[i] = Some(n),
                None => return next,
            }
        }
    }
    next
}

/// The even initial split among `nodes`.
pub fn even_split(count: IdCount, nodes: &[NodeId]) -> Allocation {
    let w: Vec<(NodeId, u32)> = nodes.iter().map(|&n| (n, 1)).collect();
    rebalance(&Allocation::unowned(Epoch(0), count), &w)
}

/// Node failure: its identifiers go to the survivors (weights without the failed node).
pub fn node_failure(current: &Allocation, failed: NodeId, weights: &[(NodeId, u32)]) -> Allocation {
    let w: Vec<(NodeId, u32)> = weights
        .iter()
        .copied()
        .filter(|(n, _)| *n != failed)
        .collect();
    rebalance(current, &w)
}

/// Node join: the new node takes its share from the others.
pub fn node_join(current: &Allocation, joined: NodeId, weights: &[(NodeId, u32)]) -> Allocation {
    let mut w: Vec<(NodeId, u32)> = weights.to_vec();
    if !w.iter().any(|(n, _)| *n == joined) {
        w.push((joined, 1));
    }
    rebalance(current, &w)
}

/// Drain: the node gives all its identifiers away (weight 0), the rest keep theirs.
pub fn drain(current: &Allocation, node: NodeId, weights: &[(NodeId, u32)]) -> Allocation {
    let w: Vec<(NodeId, u32)> = weights
        .iter()
        .map(|&(n, x)| if n == node { (n, 0) } else { (n, x) })
        .collect();
    rebalance(current, &w)
}

/// Operator move: the listed identifiers go to `to`; nothing else changes.
pub fn operator_move(current: &Allocation, ids: &[DistributionId], to: NodeId) -> Allocation {
    let mut next = current.next();
    for d in ids {
        if let Some(o) = next.owners.get_mut(d.index()) {
            *o = Some(to);
        }
    }
    next
}

/// Load balancing from per-identifier load (figure 6A steps 604-605). Nothing moves unless a
/// node's load exceeds its weighted share by more than `hysteresis_pct` percent; then, at most
/// `max_moves` identifiers move, each from the most overloaded node to the most underloaded
/// (by load over weighted share), as [`crate::balance`] chooses them.
pub fn load_balance(
    current: &Allocation,
    load: &[u64],
    weights: &[(NodeId, u32)],
    hysteresis_pct: u32,
    max_moves: usize,
) -> Allocation {
    let mut next = current.next();
    let limit = 1.0 + f64::from(hysteresis_pct) / 100.0;
    crate::balance::greedy_moves(
        &mut next,
        load,
        weights,
        max_moves,
        &std::collections::BTreeSet::new(),
        |ls| ls.values().any(|&(l, share)| l as f64 > share * limit),
    );
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(x: u16) -> NodeId {
        NodeId(x)
    }

    #[test]
    fn even_and_failure_and_join() {
        let c = IdCount::default();
        let a = even_split(c, &[n(1), n(2), n(3)]);
        let counts = a.counts();
        assert_eq!(
            counts.values().copied().collect::<Vec<_>>(),
            vec![86, 85, 85]
        );
        let w = [(n(1), 1), (n(2), 1), (n(3), 1)];
        let b = node_failure(&a, n(2), &w);
        assert_eq!(a.moved(&b), 85, "only the failed node's ids move");
        assert_eq!(b.counts().get(&n(2)), None);
        let c2 = node_join(&b, n(4), &[(n(1), 1), (n(3), 1)]);
        assert_eq!(c2.counts()[&n(4)], 85);
        assert_eq!(b.moved(&c2), 85);
        let d = drain(&a, n(1), &w);
        assert_eq!(a.moved(&d), 86);
        assert_eq!(d.ids_of(n(1)).len(), 0);
        let e = operator_move(&a, &[DistributionId(0), DistributionId(300)], n(9));
        assert_eq!(e.owner(DistributionId(0)), Some(n(9)));
        assert_eq!(a.moved(&e), 1);
        assert_eq!(e.epoch, Epoch(a.epoch.0 + 1));
    }

    #[test]
    fn weights_and_load_balance_with_hysteresis() {
        let c = IdCount::new(16).unwrap();
        let a = rebalance(&Allocation::unowned(Epoch(0), c), &[(n(1), 3), (n(2), 1)]);
        assert_eq!(a.counts()[&n(1)], 12);
        let w = [(n(1), 1), (n(2), 1)];
        let a = even_split(c, &[n(1), n(2)]);
        // Balanced load: nothing moves.
        let flat = vec![10u64; 16];
        assert_eq!(a.moved(&load_balance(&a, &flat, &w, 10, 8)), 0);
        // Node 1's ids are hot.
        let hot: Vec<u64> = (0..16)
            .map(|i| if a.owners[i] == Some(n(1)) { 30 } else { 10 })
            .collect();
        let b = load_balance(&a, &hot, &w, 10, 8);
        let moved = a.moved(&b);
        assert!((1..=3).contains(&moved), "{moved}");
        let l = |al: &Allocation, x| -> u64 {
            (0..16)
                .filter(|&i| al.owners[i] == Some(x))
                .map(|i| hot[i])
                .sum()
        };
        assert!(l(&b, n(1)).abs_diff(l(&b, n(2))) < l(&a, n(1)).abs_diff(l(&a, n(2))));
        // Within hysteresis: nothing moves.
        let slight: Vec<u64> = (0..16)
            .map(|i| if a.owners[i] == Some(n(1)) { 11 } else { 10 })
            .collect();
        assert_eq!(a.moved(&load_balance(&a, &slight, &w, 10, 8)), 0);
    }

    fn weights_strategy() -> impl Strategy<Value = Vec<(NodeId, u32)>> {
        proptest::collection::btree_map(0u16..10, 0u32..5, 0..8)
            .prop_map(|m| m.into_iter().map(|(k, v)| (NodeId(k), v)).collect())
    }

    proptest! {
        #[test]
        fn rebalance_is_exact_and_minimal(
            start in weights_strategy(),
            then in weights_strategy(),
            log2 in 0u32..9,
        ) {
            let c = IdCount::new(1 << log2).unwrap();
            let a = rebalance(&Allocation::unowned(Epoch(0), c), &start);
            let b = rebalance(&a, &then);
            let q = quotas(c.len(), &then);
            // Each node owns exactly its quota; all ids owned when any weight is positive.
            let counts = b.counts();
            for (node, &quota) in &q {
                prop_assert_eq!(counts.get(node).copied().unwrap_or(0), quota);
            }
            let owned: usize = counts.values().sum();
            let wsum: u32 = then.iter().map(|w| w.1).sum();
            prop_assert_eq!(owned, if wsum > 0 { c.len() } else { 0 });
            // Minimal movement: every id that could stay did.
            let a_counts = a.counts();
            let could_stay: usize = q
                .iter()
                .map(|(node, &quota)| a_counts.get(node).copied().unwrap_or(0).min(quota))
                .sum();
            let stayed = a.owners.iter().zip(&b.owners).filter(|(x, y)| x.is_some() && x == y).count();
            prop_assert_eq!(stayed, could_stay);
        }

        #[test]
        fn any_sequence_of_policies_keeps_one_owner_per_id(
            ops in proptest::collection::vec((0u8..6, 0u16..8, 0u32..4), 1..30),
        ) {
            let c = IdCount::new(128).unwrap();
            let mut weights: BTreeMap<NodeId, u32> = (0..3).map(|i| (n(i), 1)).collect();
            let mut a = even_split(c, &[n(0), n(1), n(2)]);
            for (op, x, w) in ops {
                let wv = |m: &BTreeMap<NodeId, u32>| m.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>();
                let before = a.clone();
                a = match op {
                    0 => { weights.remove(&n(x)); node_failure(&a, n(x), &wv(&weights)) }
                    1 => { weights.insert(n(x), 1); node_join(&a, n(x), &wv(&weights)) }
                    2 => { weights.insert(n(x), w); rebalance(&a, &wv(&weights)) }
                    3 => { let b = drain(&a, n(x), &wv(&weights)); weights.insert(n(x), 0); b }
                    4 => operator_move(&a, &[DistributionId(x * 16)], n(x)),
                    _ => {
                        let load: Vec<u64> = (0..128u64).map(|i| (i * 7 + u64::from(x)) % 13).collect();
                        load_balance(&a, &load, &wv(&weights), 10, 4)
                    }
                };
                prop_assert_eq!(a.epoch.0, before.epoch.0 + 1);
                prop_assert_eq!(a.len(), 128);
                // One owner per identifier: the per-node sets are disjoint and add up.
                let mut seen = [0u8; 128];
                for node in a.counts().keys() {
                    for d in a.ids_of(*node) {
                        seen[d.index()] += 1;
                    }
                }
                prop_assert!(seen.iter().all(|&s| s <= 1));
                let positive = weights.values().any(|&w| w > 0);
                if op < 4 && positive {
                    // Policies that follow the weights leave nothing unowned, and give nothing
                    // to a node that is gone.
                    prop_assert!(seen.iter().all(|&s| s == 1));
                    for node in a.counts().keys() {
                        prop_assert!(weights.get(node).copied().unwrap_or(0) > 0);
                    }
                }
            }
        }

        #[test]
        fn operator_move_moves_only_what_it_names(
            ids in proptest::collection::vec(0u16..64, 0..10),
            to in 0u16..5,
        ) {
            let c = IdCount::new(64).unwrap();
            let a = even_split(c, &[n(0), n(1), n(2)]);
            let ds: Vec<DistributionId> = ids.iter().map(|&i| DistributionId(i)).collect();
            let b = operator_move(&a, &ds, n(to));
            for i in 0..64u16 {
                let d = DistributionId(i);
                if ds.contains(&d) {
                    prop_assert_eq!(b.owner(d), Some(n(to)));
                } else {
                    prop_assert_eq!(b.owner(d), a.owner(d));
                }
            }
        }

        #[test]
        fn load_balance_never_worsens(
            loads in proptest::collection::vec(0u64..100, 32),
            h in 0u32..50,
        ) {
            let c = IdCount::new(32).unwrap();
            let w = [(n(0), 1), (n(1), 1), (n(2), 1)];
            let a = even_split(c, &[n(0), n(1), n(2)]);
            let b = load_balance(&a, &loads, &w, h, 8);
            let spread = |al: &Allocation| {
                let ls: Vec<u64> = (0..3u16)
                    .map(|x| (0..32).filter(|&i| al.owners[i] == Some(n(x))).map(|i| loads[i]).sum())
                    .collect();
                ls.iter().max().copied().unwrap_or(0) - ls.iter().min().copied().unwrap_or(0)
            };
            prop_assert!(spread(&b) <= spread(&a));
            prop_assert!(a.moved(&b) <= 8);
            prop_assert_eq!(b.counts().values().sum::<usize>(), 32);
        }
    }
}
