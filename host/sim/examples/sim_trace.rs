//! Runs one seeded simulation and prints its report: `SIM_TRACE=1 cargo run -p cluster-sim
//! --example sim_trace -- SEED NODES [STEPS [MODE]]` also prints every member's log and the
//! cluster events, for reproducing a violation a test found. MODE 1 is the crash-window test's
//! schedule, 2 the heavy-fault test's, 3 the property test's, 4 the stall property test's (then
//! `STALL_MS SKEW_PPM`). `SIM_WATCH_PORT=N` follows the connections of client port `N` (the
//! port a violation names) member by member.

use cluster_sim::{Sim, SimConfig};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seed = args.first().copied().unwrap_or(1);
    let nodes = args.get(1).copied().unwrap_or(3) as u16;
    let steps = args.get(2).copied().unwrap_or(600);
    let mode = args.get(3).copied();
    let cfg = match mode {
        Some(1) => SimConfig {
            max_nodes: nodes.clamp(3, 8),
            ..SimConfig::crash_window(seed, nodes)
        },
        Some(2) => SimConfig::heavy_faults(seed, nodes),
        Some(3) => SimConfig::property(seed, nodes),
        Some(4) => {
            // STALL_MS and SKEW_PPM follow
            let stall = args.get(4).copied().unwrap_or(1500);
            let skew = args.get(5).copied().unwrap_or(0) as u32;
            SimConfig::stalls(seed, nodes, stall, skew)
        }
        _ => SimConfig {
            max_nodes: nodes.clamp(3, 8),
            ..SimConfig::small(seed, nodes)
        },
    };
    let mut sim = Sim::new(cfg);
    if mode == Some(1) {
        sim.crash_and_restart_first_after_100_steps();
    }
    let every = if mode == Some(2) { 100 } else { 150 };
    let r = sim.run(steps, every);
    println!("{r:#?}");
}
