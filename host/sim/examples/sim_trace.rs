//! Runs one seeded simulation and prints its report: `SIM_TRACE=1 cargo run -p cluster-sim
//! --example sim_trace -- SEED NODES [STEPS [MODE]]` also prints every member's log and the
//! cluster events, for reproducing a violation a test found. MODE 1 is the crash-window test's
//! schedule, 2 the heavy-fault test's, 3 the property test's, 4 the stall property test's (then
//! `STALL_MS SKEW_PPM`). `SIM_WATCH_PORT=N` follows the connections of client port `N` (the
//! port a violation names) member by member.

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seed = args.first().copied().unwrap_or(1);
    let nodes = args.get(1).copied().unwrap_or(3) as u16;
    let steps = args.get(2).copied().unwrap_or(600);
    let mut cfg = cluster_sim::SimConfig::small(seed, nodes);
    cfg.max_nodes = nodes.clamp(3, 8);
    if args.get(3) == Some(&1) {
        cfg.event_rate = 0.0;
        cfg.max_delay_ms = 50;
    }
    if args.get(3) == Some(&3) {
        // the property test's schedule
        cfg.event_rate = 0.04;
        cfg.max_nodes = nodes.clamp(3, 6);
    }
    if args.get(3) == Some(&2) {
        cfg.loss = 0.2;
        cfg.duplicate = 0.1;
        cfg.max_delay_ms = 80;
        cfg.event_rate = 0.08;
        cfg.max_nodes = 6;
        cfg.failure_ms = 400;
    }
    if args.get(3) == Some(&4) {
        // the stall property test's schedule: STALL_MS and SKEW_PPM follow
        cfg.event_rate = 0.05;
        cfg.max_nodes = nodes.clamp(3, 6);
        cfg.stall_max_ms = args.get(4).copied().unwrap_or(1500);
        cfg.clock_skew_ppm = args.get(5).copied().unwrap_or(0) as u32;
    }
    let mut sim = cluster_sim::Sim::new(cfg);
    if args.get(3) == Some(&1) {
        for _ in 0..100 {
            sim.step();
        }
        let victim = *sim.nodes().keys().next().expect("nodes");
        sim.crash(victim);
        sim.join(victim);
    }
    let every = if args.get(3) == Some(&2) { 100 } else { 150 };
    let r = sim.run(steps, every);
    println!("{r:#?}");
}
