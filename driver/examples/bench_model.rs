//! Throughput of the driver into the reference model: inserts, searches,
//! removes, flushes by distribution identifier and aging scans per second,
//! with the register accesses each costs.
//!
//! ```text
//! cargo run -p driver --release --example bench_model [-- ROUNDS]
//! ```
//!
//! A benchmark that prints figures, not a timed test: numbers depend on the
//! machine and its load.

use std::time::{Duration, Instant};

use driver::sample::sample_entry;
use driver::{CamEntry, Card, DidSet, DistributionId};
use hal::counting::Counting;
use sim_bridge::model::ModelCard;

struct Figure {
    ops: u64,
    time: Duration,
    reads: u64,
    writes: u64,
}

impl Figure {
    fn print(&self, name: &str) {
        let per_s = self.ops as f64 / self.time.as_secs_f64();
        let ns = self.time.as_nanos() as f64 / self.ops as f64;
        let acc = (self.reads + self.writes) as f64 / self.ops as f64;
        println!(
            "{name:<22} {:>12.0} /s  {:>9.1} ns/op  {:>7.1} bus accesses/op ({:.1} reads, {:.1} writes)",
            per_s,
            ns,
            acc,
            self.reads as f64 / self.ops as f64,
            self.writes as f64 / self.ops as f64
        );
    }
}

type BenchCard = Card<Counting<ModelCard>>;

fn measure(card: &mut BenchCard, fig: &mut Figure, ops: u64, f: impl FnOnce(&mut BenchCard)) {
    let (r0, w0) = (card.regs_mut().reads, card.regs_mut().writes);
    let t = Instant::now();
    f(card);
    fig.time += t.elapsed();
    fig.ops += ops;
    fig.reads += card.regs_mut().reads - r0;
    fig.writes += card.regs_mut().writes - w0;
}

fn fig() -> Figure {
    Figure {
        ops: 0,
        time: Duration::ZERO,
        reads: 0,
        writes: 0,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: u32 = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| format!("ROUNDS must be a whole number, got {a:?}"))?,
        None => 200,
    };
    let depth = 1024u32;
    let model = ModelCard::with_depth(depth)?;
    let mut card = Card::probe(Counting::new(model))?;
    let entries: Vec<CamEntry> = (0..depth).map(sample_entry).collect();
    let (mut ins, mut srch, mut miss, mut rm, mut flush, mut age) =
        (fig(), fig(), fig(), fig(), fig(), fig());
    let misses: Vec<CamEntry> = (depth..2 * depth).map(sample_entry).collect();
    let dids = DidSet::from_ids((0..16).map(DistributionId)).expect("16 identifiers fit");

    for _ in 0..rounds {
        measure(&mut card, &mut ins, u64::from(depth), |c| {
            for e in &entries {
                c.insert(e).expect("insert");
            }
        });
        measure(&mut card, &mut srch, u64::from(depth), |c| {
            for e in &entries {
                c.search(&e.key).expect("search");
            }
        });
        measure(&mut card, &mut miss, u64::from(depth), |c| {
            for e in &misses {
                c.search(&e.key).expect("search");
            }
        });
        measure(&mut card, &mut age, 1, |c| {
            c.age().expect("age");
        });
        measure(&mut card, &mut flush, 1, |c| {
            c.flush_dids(&dids).expect("flush");
        });
        let left: Vec<CamEntry> = entries
            .iter()
            .filter(|e| !dids.contains(e.did))
            .copied()
            .collect();
        measure(&mut card, &mut rm, left.len() as u64, |c| {
            for e in &left {
                c.remove(&e.key).expect("remove").expect("present");
            }
        });
        assert!(card.is_empty());
    }

    println!(
        "driver -> reference model, CAM depth {depth}, {rounds} rounds (build: {})",
        build()
    );
    ins.print("insert (full fill)");
    srch.print("search (hit)");
    miss.print("search (miss, full)");
    rm.print("remove by key");
    flush.print("flush 16 dids (1 cmd)");
    age.print("aging scan (full)");
    Ok(())
}

fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "debug: use --release for real figures"
    } else {
        "release"
    }
}
