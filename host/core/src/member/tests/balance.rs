//! Automatic load balancing through the member harness: skewed load reported by the members
//! makes the leader move identifiers in planned moves until the imbalance is below the
//! threshold; a drained node gets nothing meanwhile; bad reports are counted, not applied.

use std::collections::BTreeSet;

use super::*;
use crate::balance::{imbalance, BalanceParams};
use crate::load_report::{Load, LoadReport};
use crate::member::balance::BalanceConfig;

const PARAMS: BalanceParams = BalanceParams {
    threshold: 1.25,
    low: 1.1,
    max_moves: 2,
};

/// Three settled members with balancing on (every 400 ms), no load floor.
fn balanced_three() -> Cluster {
    balanced_three_above(0)
}

/// Three settled members with balancing on (every 400 ms) above `min_pps` packets per second.
fn balanced_three_above(min_pps: u64) -> Cluster {
    let nodes = [1u16, 2, 3];
    let mut c = Cluster::new(&nodes, FAILURE);
    for &n in &nodes {
        let mut cfg = mcfg(n, &nodes, FAILURE);
        cfg.balance = BalanceConfig {
            interval: ms(400),
            params: PARAMS,
            weight: 1,
            min_pps,
        };
        c.m.insert(n, Member::new(cfg, core(n)));
    }
    c.settle();
    c
}

/// Per identifier, packets per step: two of node 1's identifiers carry 10, the rest 1.
fn skew(a: &Allocation) -> Vec<u64> {
    let hot: Vec<DistributionId> = a.ids_of(NodeId(1)).into_iter().take(2).collect();
    count()
        .all()
        .map(|d| if hot.contains(&d) { 10 } else { 1 })
        .collect()
}

/// Steps the cluster for `d`, each step sending every identifier's packets to every member
/// (a shared segment: the owner handles them, the others let them go).
fn run_with_traffic(c: &mut Cluster, d: Duration, load: &[u64], flows: &[Vec<u8>]) {
    let end = c.now + d;
    let members: Vec<u16> = c.m.keys().copied().collect();
    while c.now < end {
        let t = c.t();
        for (f, &k) in flows.iter().zip(load) {
            for _ in 0..k {
                for &n in &members {
                    c.m(n).on_packet(t, f);
                }
            }
        }
        c.step();
        assert!(c.double_actors().is_empty(), "two owners at {:?}", c.now);
    }
}

/// The moves of each round the leader logged, in order.
fn rounds_logged(c: &Cluster) -> Vec<Vec<u16>> {
    c.logs
        .iter()
        .filter(|(_, n, l)| *n == c.leader && l.starts_with("balance:"))
        .map(|(_, _, l)| {
            let list = &l[l.find("identifiers (").unwrap() + 13..l.rfind(')').unwrap()];
            list.split(", ")
                .map(|m| m.split(' ').next().unwrap().parse().unwrap())
                .collect()
        })
        .collect()
}

fn weights(nodes: &[u16]) -> Vec<(NodeId, u32)> {
    nodes.iter().map(|n| (NodeId(*n), 1)).collect()
}

#[test]
fn skewed_reports_make_the_leader_move_until_below_the_threshold() {
    let mut c = balanced_three();
    let start = c.agreed().clone();
    let load = skew(&start);
    let flows: Vec<Vec<u8>> = count().all().map(|d| udp_in(d, 0)).collect();
    let w = weights(&[1, 2, 3]);
    let before = imbalance(&start, &load, &w);
    assert!(before > 2.0, "{before}");
    run_with_traffic(&mut c, ms(8000), &load, &flows);
    let end = c.agreed().clone();
    let after = imbalance(&end, &load, &w);
    assert!(after < PARAMS.threshold, "{before} -> {after}: {end:?}");
    // every move went in the planned steps: a release epoch (no owner) between the owners
    let rounds = rounds_logged(&c);
    assert!(!rounds.is_empty() && rounds.len() <= 4, "{rounds:?}");
    for r in &rounds {
        assert!(!r.is_empty() && r.len() <= PARAMS.max_moves, "{rounds:?}");
    }
    for pair in rounds.windows(2) {
        let a: BTreeSet<u16> = pair[0].iter().copied().collect();
        assert!(
            pair[1].iter().all(|d| !a.contains(d)),
            "an identifier moved in two rounds in a row: {rounds:?}"
        );
    }
    let released = c
        .history
        .iter()
        .any(|a| a.owners.iter().any(Option::is_none) && a.epoch.0 > 1);
    assert!(released, "moves are planned moves (release, then assign)");
    // the leader's view agrees: below the threshold, with the last round's moves
    let v = c.m[&1].load_view(&end);
    assert!(v.leader && v.imbalance < PARAMS.threshold, "{v:?}");
    assert_eq!(v.nodes.len(), 3);
    let last = v.last_round.clone().unwrap();
    assert!(last.after < last.before && !last.moves.is_empty());
    assert_eq!(v.moved as usize, rounds.iter().map(Vec::len).sum::<usize>());
    // balanced now: more traffic moves nothing more (hysteresis)
    let n = c.history.len();
    run_with_traffic(&mut c, ms(2000), &load, &flows);
    let idle_moves = rounds_logged(&c).len() - rounds.len();
    assert!(
        c.agreed().epoch.0 as usize + 1 == c.history.len() && idle_moves <= 1,
        "{idle_moves} more rounds moved, {} epochs",
        c.history.len() - n
    );
    assert!(imbalance(c.agreed(), &load, &w) < PARAMS.threshold);
}

#[test]
fn below_the_load_floor_the_same_skew_moves_nothing() {
    // the skew the test above balances, but the cluster's packets per second are under the
    // floor: a round's ratios would be noise, so nothing moves and no round is logged
    let mut c = balanced_three_above(1_000_000_000);
    let start = c.agreed().clone();
    let load = skew(&start);
    let flows: Vec<Vec<u8>> = count().all().map(|d| udp_in(d, 0)).collect();
    let w = weights(&[1, 2, 3]);
    assert!(imbalance(&start, &load, &w) > 2.0);
    run_with_traffic(&mut c, ms(4000), &load, &flows);
    assert!(rounds_logged(&c).is_empty(), "{:?}", rounds_logged(&c));
    assert_eq!(c.agreed().owners, start.owners);
}

#[test]
fn a_drained_node_gets_nothing_while_balancing_runs() {
    let mut c = balanced_three();
    let flows: Vec<Vec<u8>> = count().all().map(|d| udp_in(d, 0)).collect();
    let load = skew(c.agreed());
    c.m(1).set_drained(NodeId(3), true).unwrap();
    run_with_traffic(&mut c, ms(6000), &load, &flows);
    let end = c.agreed().clone();
    assert!(end.ids_of(NodeId(3)).is_empty(), "{end:?}");
    assert!(end.owners.iter().all(Option::is_some));
    assert!(
        !rounds_logged(&c).is_empty(),
        "balancing went on between 1 and 2"
    );
    assert!(imbalance(&end, &load, &weights(&[1, 2])) < PARAMS.threshold);
    assert!(c.m[&3].core().node_table().is_empty());
}

#[test]
fn bad_load_reports_are_counted_and_ignored() {
    let mut c = balanced_three();
    let t = c.t();
    let before = c.m[&1].counters().decode_errors;
    let good = LoadReport::from_load(
        400,
        1,
        0,
        &[Load {
            packets: 5,
            bytes: 500,
        }],
    )
    .to_bytes();
    // truncated, oversized, and an identifier beyond the cluster's 16
    let mut beyond = good.clone();
    beyond[15..17].copy_from_slice(&16u16.to_be_bytes());
    let mut long = good.clone();
    long.push(0);
    for bad in [&good[..good.len() - 3], &long[..], &beyond[..]] {
        assert!(c.m(1).on_datagram(t, NodeId(2), bad).is_none());
    }
    assert_eq!(c.m[&1].counters().decode_errors, before + 3);
    assert!(c.m(1).on_datagram(t, NodeId(2), &good).is_none());
    assert_eq!(c.m[&1].counters().decode_errors, before + 3);
}
