//! Sweeps the stall property test's schedule over many seeds and prints, per member count, how
//! many runs broke an invariant (the first few named, to replay with `sim_trace`), and how
//! much the replication windows excused:
//!
//! `cargo run --release -p cluster-sim --example stall_sweep -- SEEDS STALL_MS SKEW_PPM [NODES...]`
//!
//! (defaults: 200 seeds, 4000 ms, 50000 ppm, 2 3 4 5 members). A run is 300 steps of 10 ms.

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!(
                    "stall_sweep: `{a}` is not a number (SEEDS STALL_MS SKEW_PPM [NODES...])"
                );
                std::process::exit(2)
            })
        })
        .collect();
    let seeds = args.first().copied().unwrap_or(200);
    let stall = args.get(1).copied().unwrap_or(4_000);
    let skew = args.get(2).copied().unwrap_or(50_000);
    let Ok(skew) = u32::try_from(skew) else {
        eprintln!("stall_sweep: SKEW_PPM {skew} is too large");
        std::process::exit(2)
    };
    let nodes: Vec<u16> = if args.len() > 3 {
        args[3..].iter().map(|n| (*n).clamp(2, 8) as u16).collect()
    } else {
        vec![2, 3, 4, 5]
    };
    println!("stall sweep: {seeds} seeds, stalls up to {stall} ms, clocks off by up to {skew} ppm");
    println!(
        "{:>7} {:>6} {:>9} {:>8} {:>10} {:>10}  first failing seeds",
        "members", "runs", "violating", "stalls", "lost_in_w", "window_max"
    );
    for &n in &nodes {
        let (mut bad, mut stalls, mut lost, mut window) = (Vec::new(), 0, 0, 0);
        for seed in 0..seeds {
            let cfg = cluster_sim::SimConfig::stalls(seed, n, stall, skew);
            let mut sim = cluster_sim::Sim::new(cfg);
            let r = sim.run(300, 150);
            if !r.violations.is_empty() || r.missing_state > 0 {
                bad.push(seed);
            }
            stalls += r.stalls;
            lost += r.lost_in_window + r.stale_in_window;
            window = window.max(r.window_max_ms);
        }
        let first: Vec<String> = bad.iter().take(8).map(|s| s.to_string()).collect();
        println!(
            "{n:>7} {seeds:>6} {:>9} {stalls:>8} {lost:>10} {:>8}ms  {}",
            bad.len(),
            window,
            first.join(" ")
        );
    }
}
