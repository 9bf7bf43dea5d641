//! Runs one seeded simulation and prints its report: `SIM_TRACE=1 cargo run -p cluster-sim
//! --example sim_trace -- SEED NODES [STEPS]` also prints every member's log and the cluster
//! events, for reproducing a violation a test found.

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
    let mut sim = cluster_sim::Sim::new(cfg);
    let r = sim.run(steps, 150);
    println!("{r:#?}");
}
