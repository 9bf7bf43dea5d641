//! `clusterd demo --skew N`: a few heavy flows carry most packets and automatic load
//! balancing is on; the report's `balance` part measures the imbalance from the wire (which
//! node handled each packet) in the first and the last second of traffic, and takes the
//! leader's rounds and moves from its status.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::traffic::PacketRec;
use crate::core::ids::NodeId;

/// How often the demo's leader runs a balancing round with `--skew`.
pub const DEMO_BALANCE_MS: u64 = 1000;

/// The config lines every node gets with `--skew`.
pub fn config_lines() -> String {
    format!("balance_interval_ms = {DEMO_BALANCE_MS}\n")
}

/// The wire's imbalance over `[from_ms, to_ms)`: the most packets one node handled over the
/// mean of `members` nodes (1.0: even; 0 when nothing was handled).
pub fn wire_imbalance(packets: &[PacketRec], from_ms: u64, to_ms: u64, members: usize) -> f64 {
    let mut per: BTreeMap<NodeId, u64> = BTreeMap::new();
    for p in packets
        .iter()
        .filter(|p| (from_ms..to_ms).contains(&p.t_ms))
    {
        for (n, c) in &p.verdicts {
            if c.handled() {
                *per.entry(*n).or_insert(0) += 1;
            }
        }
    }
    let total: u64 = per.values().sum();
    if total == 0 || members == 0 {
        return 0.0;
    }
    let max = per.values().copied().max().unwrap_or(0);
    max as f64 * members as f64 / total as f64
}

/// The report's `balance` object: the wire's imbalance in the first and the last second, and
/// the leader's balancing (rounds, identifiers moved, its last round, its imbalance now).
pub fn report(
    packets: &[PacketRec],
    duration_ms: u64,
    finals: &BTreeMap<NodeId, Value>,
    heavy: usize,
) -> Value {
    let members = finals.values().filter(|v| v["role"] == "member").count();
    let window = 1000.min(duration_ms / 2);
    let before = wire_imbalance(packets, 0, window, members);
    let after = wire_imbalance(packets, duration_ms - window, duration_ms, members);
    let leader = finals
        .values()
        .find(|v| v["is_leader"] == Value::Bool(true))
        .map(|v| v["balance"].clone())
        .unwrap_or(Value::Null);
    json!({
        "heavy_flows": heavy,
        "interval_ms": DEMO_BALANCE_MS,
        "window_ms": window,
        "imbalance_before": before,
        "imbalance_after": after,
        "rounds": leader["rounds"],
        "moved": leader["moved"],
        "last_round": leader["last_round"],
        "leader_imbalance": leader["imbalance"],
    })
}

/// The human summary lines of the `balance` object.
pub fn summary(b: &Value) -> Vec<String> {
    use crate::ctl_view::{f2, moves_text};
    let mut out = vec![format!(
        "balance ({} heavy flows)    imbalance {} in the first {} ms, {} in the last; {} \
         identifiers moved in {} rounds",
        b["heavy_flows"],
        f2(&b["imbalance_before"]),
        b["window_ms"],
        f2(&b["imbalance_after"]),
        b["moved"],
        b["rounds"]
    )];
    let r = &b["last_round"];
    if !r.is_null() {
        out.push(format!(
            "  last round                {} -> {}: {}",
            f2(&r["before"]),
            f2(&r["after"]),
            moves_text(r)
        ));
    }
    out
}

/// The leader's balancing during a run, from its views at the start (`before`, if it
/// answered) and the end: the imbalance at each end (from the members' latest load reports),
/// the rounds run and identifiers moved in between, the last round that moved something, and
/// the per-node load at the end.
pub fn balance_during(before: Option<&Value>, end: Value) -> Value {
    let n = |v: Option<&Value>, k: &str| v.and_then(|v| v[k].as_u64()).unwrap_or(0);
    json!({
        "imbalance_before": before.map_or(Value::Null, |b| b["imbalance"].clone()),
        "imbalance_after": end["imbalance"],
        "threshold": end["threshold"],
        "rounds": n(Some(&end), "rounds").saturating_sub(n(before, "rounds")),
        "moved": n(Some(&end), "moved").saturating_sub(n(before, "moved")),
        "last_round": end["last_round"],
        "nodes": end["nodes"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::wireproto::Code;
    use crate::lab::traffic::Phase;

    #[test]
    fn a_runs_balancing_is_what_the_leader_did_between_its_two_views() {
        let before = json!({"imbalance": 1.9, "rounds": 4, "moved": 3, "threshold": 1.25});
        let end = json!({
            "imbalance": 1.05, "rounds": 7, "moved": 5, "threshold": 1.25,
            "last_round": {"before": 1.4, "after": 1.05, "moves": [[12, 1, 2]]},
            "nodes": [{"node": 1}],
        });
        let b = balance_during(Some(&before), end.clone());
        assert_eq!(b["rounds"], 3);
        assert_eq!(b["moved"], 2);
        assert_eq!(b["imbalance_before"], 1.9);
        assert_eq!(b["imbalance_after"], 1.05);
        assert_eq!(b["last_round"]["moves"][0][0], 12);
        // no view at the start (no leader then): everything so far counts, no start figure
        let b = balance_during(None, end);
        assert_eq!(
            (b["rounds"].clone(), b["moved"].clone()),
            (json!(7), json!(5))
        );
        assert!(b["imbalance_before"].is_null());
    }

    fn rec(t_ms: u64, node: u16) -> PacketRec {
        PacketRec {
            flow: 0,
            phase: Phase::Established,
            t_ms,
            verdicts: vec![(NodeId(node), Code::Hit), (NodeId(9), Code::NotOurs)],
        }
    }

    #[test]
    fn the_wire_imbalance_is_the_busiest_node_over_the_mean() {
        // first second: node 1 handles 3 of 4 packets (of 2 members): 1.5; then 1 and 1
        let p = vec![
            rec(0, 1),
            rec(10, 1),
            rec(20, 1),
            rec(30, 2),
            rec(1500, 1),
            rec(1600, 2),
        ];
        assert!((wire_imbalance(&p, 0, 1000, 2) - 1.5).abs() < 1e-9);
        assert!((wire_imbalance(&p, 1000, 2000, 2) - 1.0).abs() < 1e-9);
        assert_eq!(wire_imbalance(&p, 5000, 6000, 2), 0.0);
    }
}
