//! Card benchmark: prints figures, asserts nothing about speed.
//!
//! ```text
//! cargo run --release -p tests --features verilator --example bench_card
//! ```
//!
//! * RTL data-path lookups per clock (`RtlCard::lookup_stream`).
//! * RTL bus transactions (reads and writes, counted by a wrapping
//!   [`RegIo`]) and clock cycles per driver operation: insert (the driver's
//!   shadow picks the slot, one `WRITE`), insert by the card (`INSERT`),
//!   overwrite, remove, search (hit and miss), flush by identifier set,
//!   read, one aging group (`HIT_RC`).
//! * RTL bus transactions and clocks per IPv6 5-tuple entry installed: before (the
//!   single-entry path, `Card::insert`: one `WRITE` with its `MASK` words and `STATUS` polls)
//!   and after (`Card::install_batch`: mask profiles and `WRITE_P`, completion read once per
//!   batch), by batch size.
//! * RTL takeover: 10,000 IPv6 5-tuple entries in 256 identifiers installed identifier by
//!   identifier as a node gains them (in rounds that fit the 1,024-entry card, each round's
//!   identifiers flushed again when it ends), before and after: bus transactions and
//!   simulated time per entry.
//! * RTL packet port: clocks per frame by size, frames streamed back to back
//!   into both wires (`RtlCard::stream_frames`), forwarded by a CAM hit or
//!   dropped by a DROP entry.
//! * Driver operations per second into the reference model (`ModelCard`):
//!   inserts, searches, removes.
//!
//! The clock counts are exact for this RTL (they do not depend on the host);
//! the per-second figures depend on the machine and the build profile.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use driver::{
    Action, CamEntry, CamIndex, CamKey, Card, DidSet, DistributionId, DriverError, Flow, IpPrefix,
    ResultWord,
};
use hal::counting::Counting;
use sim_bridge::model::ModelCard;
use sim_bridge::verilator::{RtlCard, RTL_DEPTH};

/// A distinct TCP 5-tuple entry for each `i`, with addresses `ip(..)`, in identifier
/// `i % ids`.
fn tcp_entry(i: u32, ids: u32, ip: impl Fn(u32) -> IpAddr) -> CamEntry {
    let key = CamKey::new(
        Some(0),
        Flow::Tcp {
            src: IpPrefix::host(ip(i)),
            dst: IpPrefix::host(ip(i.wrapping_mul(7) ^ 0x55)),
            src_port: Some((i % 60_000) as u16 + 1024),
            dst_port: Some(443),
        },
    );
    CamEntry {
        key,
        did: DistributionId((i % ids) as u16),
        result: ResultWord::new(Action::Accept),
    }
}

/// A distinct IPv4 TCP 5-tuple entry for each `i`, in 16 identifiers.
fn entry(i: u32) -> CamEntry {
    tcp_entry(i, 16, |n| IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | n)))
}

/// A distinct IPv6 TCP 5-tuple entry for each `i`, in 256 identifiers. Every 32-bit word of
/// both addresses differs from the previous entry's (no staging write can be skipped for
/// them), as between unrelated hosts.
fn v6_entry(i: u32) -> CamEntry {
    tcp_entry(i, 256, |n| {
        // The same 32-bit hash of n in each of the four words.
        let h = u128::from(n.wrapping_mul(0x9E37_79B9));
        IpAddr::V6(Ipv6Addr::from_bits(
            h * ((1 << 96) | (1 << 64) | (1 << 32) | 1),
        ))
    })
}

/// The clock the figures convert clocks into time with: `hdl/pnr.sh`'s default target.
const CLOCK_MHZ: f64 = 150.0;

/// Bus reads, bus writes and clocks per operation, averaged over `n` runs
/// of `op(i)`.
struct Cost {
    reads: f64,
    writes: f64,
    clocks: f64,
}

fn measure(
    card: &mut Card<Counting<RtlCard>>,
    n: u32,
    mut op: impl FnMut(&mut Card<Counting<RtlCard>>, u32),
) -> Cost {
    let r = card.regs_mut();
    let (r0, w0, c0) = (r.reads, r.writes, r.inner.cycles());
    for i in 0..n {
        op(card, i);
    }
    let r = card.regs_mut();
    let n = f64::from(n);
    Cost {
        reads: (r.reads - r0) as f64 / n,
        writes: (r.writes - w0) as f64 / n,
        clocks: (r.inner.cycles() - c0) as f64 / n,
    }
}

fn row(name: &str, c: &Cost) {
    println!(
        "  {name:<40} {:>7.1} {:>7.1} {:>7.1} {:>8.1}",
        c.reads,
        c.writes,
        c.reads + c.writes,
        c.clocks
    );
}

fn rtl_datapath() {
    let mut card = Card::probe(RtlCard::with_depth(RTL_DEPTH).expect("RTL card")).expect("probe");
    let n_entries = RTL_DEPTH / 2;
    for i in 0..n_entries {
        card.insert(&entry(i)).expect("insert");
    }
    let n: u32 = 100_000;
    // Half the keys hit (entries 0..depth), half miss.
    let keys: Vec<[u32; 10]> = (0..n)
        .map(|i| entry(i % RTL_DEPTH).key.encode().expect("encode").key)
        .collect();
    let latency = card.info().cam.lookup_latency;
    let rtl = card.regs_mut();
    let c0 = rtl.cycles();
    let t = Instant::now();
    let answers = rtl.lookup_stream(&keys).expect("lookup_stream");
    let wall = t.elapsed();
    let clocks = rtl.cycles() - c0;
    let hits = answers.iter().filter(|a| a.hit).count();
    println!(
        "RTL data-path port (depth {RTL_DEPTH}, {n_entries} entries, latency {latency} clocks)"
    );
    println!("  lookups                 {n} ({hits} hits)");
    println!(
        "  clocks                  {clocks} (= lookups + latency - 1: {})",
        u64::from(n) + u64::from(latency) - 1 == clocks
    );
    println!(
        "  lookups per clock       {:.4}",
        f64::from(n) / clocks as f64
    );
    println!(
        "  simulation speed        {:.0} clocks/s wall ({:.2?} for the stream)",
        clocks as f64 / wall.as_secs_f64(),
        wall
    );
    println!();
}

fn rtl_bus_costs() {
    let rtl = RtlCard::with_depth(RTL_DEPTH).expect("RTL card");
    let mut card = Card::probe(Counting::new(rtl)).expect("probe");
    let n = 256;
    let base = 10_000;
    println!("RTL bus transactions and clocks per driver operation (mean of {n}; table half full)");
    println!(
        "  {:<40} {:>7} {:>7} {:>7} {:>8}",
        "operation", "reads", "writes", "total", "clocks"
    );
    // Background: half the table.
    for i in 0..RTL_DEPTH / 2 {
        card.insert(&entry(base + i)).expect("insert");
    }
    let c = measure(&mut card, n, |c, i| {
        c.insert(&entry(i)).expect("insert");
    });
    row("insert (shadow slot, WRITE)", &c);
    let c = measure(&mut card, n, |c, i| {
        let mut e = entry(i);
        e.result = ResultWord::new(Action::Drop);
        c.overwrite(&e).expect("overwrite");
    });
    row("overwrite (WRITE in place)", &c);
    let c = measure(&mut card, n, |c, i| {
        c.search(&entry(i).key).expect("search").expect("hit");
    });
    row("search, hit", &c);
    let c = measure(&mut card, n, |c, i| {
        let miss = entry(100_000 + i).key;
        assert!(c.search(&miss).expect("search").is_none());
    });
    row("search, miss", &c);
    let c = measure(&mut card, n, |c, i| {
        c.read(driver::CamIndex(i)).expect("read");
    });
    row("read (READ + 21 register reads)", &c);
    let c = measure(&mut card, n, |c, i| {
        c.remove(&entry(i).key).expect("remove").expect("present");
    });
    row("remove (INVALIDATE)", &c);
    let c = measure(&mut card, n, |c, i| {
        c.insert_by_card(&entry(i)).expect("insert_by_card");
    });
    row("insert by the card (INSERT)", &c);
    let c = measure(&mut card, n, |c, i| {
        let mut s = DidSet::new();
        s.insert(DistributionId((i % 16) as u16))
            .expect("16 identifiers fit");
        c.flush_dids(&s).expect("flush");
    });
    row("flush_dids, one identifier", &c);
    let c = measure(&mut card, 16, |c, _| {
        c.flush_dids(&DidSet::all()).expect("flush");
    });
    row("flush_dids, all 256 identifiers", &c);
    // Aging over a full table: every 32-entry group is scanned.
    for i in 0..RTL_DEPTH {
        card.insert(&entry(i)).expect("insert");
    }
    let groups = RTL_DEPTH.div_ceil(32);
    let c = measure(&mut card, 8, |c, _| {
        c.age().expect("age");
    });
    let per_group = Cost {
        reads: c.reads / f64::from(groups),
        writes: c.writes / f64::from(groups),
        clocks: c.clocks / f64::from(groups),
    };
    row("age, per 32-entry group (HIT_RC)", &per_group);
    println!();
}

/// Run `op` in batches until `min` has passed; returns operations per second.
fn rate(min: Duration, mut batch: impl FnMut() -> u64) -> f64 {
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < min {
        n += batch();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn model_rates() {
    let depth = RTL_DEPTH;
    let mut card = Card::probe(ModelCard::with_depth(depth).expect("model")).expect("probe");
    let entries: Vec<CamEntry> = (0..depth).map(entry).collect();
    let min = Duration::from_secs(1);
    println!(
        "Driver into the reference model (depth {depth}), {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    // The driver picks the index, or the card does (INSERT): the same fill otherwise.
    type Insert = fn(&mut Card<ModelCard>, &CamEntry) -> Result<CamIndex, DriverError>;
    let fills: [(&str, Insert); 2] = [
        ("inserts/s (empty to full)", Card::insert),
        ("inserts/s by the card (INSERT)", Card::insert_by_card),
    ];
    for (label, insert) in fills {
        let inserts = rate(min, || {
            card.flush_all().expect("flush");
            for e in &entries {
                insert(&mut card, e).expect("insert");
            }
            u64::from(depth)
        });
        println!("  {label:<33}{inserts:>12.0}");
    }
    let searches = rate(min, || {
        for e in &entries {
            card.search(&e.key).expect("search").expect("hit");
        }
        u64::from(depth)
    });
    println!("  searches/s (full table, hits)    {searches:>12.0}");
    let misses = rate(min, || {
        for i in 0..depth {
            assert!(card
                .search(&entry(depth + i).key)
                .expect("search")
                .is_none());
        }
        u64::from(depth)
    });
    println!("  searches/s (full table, misses)  {misses:>12.0}");
    let removes = rate(min, || {
        for e in &entries {
            card.remove(&e.key).expect("remove").expect("present");
        }
        for e in &entries {
            card.insert(e).expect("insert");
        }
        u64::from(depth)
    });
    println!("  remove+insert pairs/s            {removes:>12.0}");
}

/// Before and after: the single-entry path and batches of several sizes, IPv6 5-tuples.
fn rtl_entry_costs() {
    let rtl = RtlCard::with_depth(RTL_DEPTH).expect("RTL card");
    let mut card = Card::probe(Counting::new(rtl)).expect("probe");
    println!(
        "RTL cost per IPv6 TCP 5-tuple entry installed (CAM minor {}, {} mask profiles)",
        card.blocks()
            .iter()
            .find(|b| b.name == "CAM")
            .map_or(0, |b| b.minor),
        card.mask_profiles()
    );
    println!(
        "  {:<40} {:>7} {:>7} {:>7} {:>8}",
        "path", "reads", "writes", "total", "clocks"
    );
    let n = 256;
    let c = measure(&mut card, n, |c, i| {
        c.insert(&v6_entry(i)).expect("insert");
    });
    row("before: insert (WRITE, one entry)", &c);
    card.flush_all().expect("flush");
    // The profile is set once, by the first batch.
    card.install_batch(&[v6_entry(n)]).expect("batch");
    for size in [1u32, 16, 256] {
        card.flush_all().expect("flush");
        let batches = n / size;
        let c = measure(&mut card, batches, |c, b| {
            let entries: Vec<CamEntry> = (0..size).map(|i| v6_entry(b * size + i)).collect();
            c.install_batch(&entries).expect("batch");
        });
        let per = Cost {
            reads: c.reads / f64::from(size),
            writes: c.writes / f64::from(size),
            clocks: c.clocks / f64::from(size),
        };
        row(&format!("after: install_batch of {size} (WRITE_P)"), &per);
    }
    println!();
}

/// A takeover of 10,000 IPv6 5-tuple entries in 256 identifiers, identifier by identifier,
/// in rounds of identifiers that fit the card; before (`insert` per entry) and after
/// (`install_batch` per identifier).
fn rtl_takeover() {
    let total: u32 = 10_000;
    let ids: u32 = 256;
    let per_round = (RTL_DEPTH * 9 / 10) / total.div_ceil(ids);
    let by_id: Vec<Vec<CamEntry>> = (0..ids)
        .map(|d| (d..total).step_by(ids as usize).map(v6_entry).collect())
        .collect();
    println!(
        "RTL takeover: {total} IPv6 5-tuple entries in {ids} identifiers, gained {per_round} identifiers a round (card depth {RTL_DEPTH}); time at {CLOCK_MHZ} MHz"
    );
    println!(
        "  {:<40} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "path, per entry installed", "reads", "writes", "total", "clocks", "time"
    );
    for batched in [false, true] {
        let rtl = RtlCard::with_depth(RTL_DEPTH).expect("RTL card");
        let mut card = Card::probe(Counting::new(rtl)).expect("probe");
        let (mut reads, mut writes, mut clocks, mut installed) = (0u64, 0u64, 0u64, 0u64);
        for round in by_id.chunks(per_round as usize) {
            let r = card.regs_mut();
            let (r0, w0, c0) = (r.reads, r.writes, r.inner.cycles());
            for entries in round {
                if batched {
                    card.install_batch(entries).expect("install_batch");
                } else {
                    for e in entries {
                        card.insert(e).expect("insert");
                    }
                }
                installed += entries.len() as u64;
            }
            let r = card.regs_mut();
            reads += r.reads - r0;
            writes += r.writes - w0;
            clocks += r.inner.cycles() - c0;
            // The round's identifiers move on: one FLUSH_DID (not counted).
            let set = DidSet::from_ids(round.iter().map(|e| e[0].did)).expect("identifiers");
            card.flush_dids(&set).expect("flush");
        }
        assert_eq!(installed, u64::from(total));
        let n = installed as f64;
        let name = if batched {
            "after: install_batch per identifier"
        } else {
            "before: insert per entry"
        };
        println!(
            "  {name:<40} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>8.3} us",
            reads as f64 / n,
            writes as f64 / n,
            (reads + writes) as f64 / n,
            clocks as f64 / n,
            clocks as f64 / n / CLOCK_MHZ
        );
        println!(
            "  {:<40} {reads:>9} {writes:>9} {:>9} {clocks:>9} {:>8.3} ms",
            "  (whole takeover)",
            reads + writes,
            clocks as f64 / CLOCK_MHZ / 1000.0
        );
    }
    println!();
}

fn main() {
    println!(
        "bench_card: {}",
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
    println!();
    rtl_datapath();
    rtl_bus_costs();
    rtl_entry_costs();
    rtl_takeover();
    rtl_packet_port();
    model_rates();
}

/// Clocks per frame through the RTL packet port block, by frame size.
fn rtl_packet_port() {
    use hal::regs::port;
    use hal::{BarOffset, RegIo};
    use sim_bridge::frames::{FlowSpec, Ip, Transport};
    let mut card = Card::probe(RtlCard::new().expect("RTL card")).expect("probe");
    let flow = |dport: u16| FlowSpec {
        src: Ip::V4([10, 0, 0, 1]),
        dst: Ip::V4([10, 0, 0, 2]),
        transport: Transport::Udp { sport: 7000, dport },
    };
    for (i, (dport, action)) in [(9000u16, Action::Accept), (9001, Action::Drop)]
        .into_iter()
        .enumerate()
    {
        let host = |o: u8| IpPrefix::host(IpAddr::V4(Ipv4Addr::new(10, 0, 0, o)));
        let e = CamEntry {
            key: CamKey::new(
                Some(0),
                Flow::Udp {
                    src: host(1),
                    dst: host(2),
                    src_port: Some(7000),
                    dst_port: Some(dport),
                },
            ),
            did: DistributionId(0),
            result: ResultWord::new(action),
        };
        card.write_at(CamIndex(i as u32), &e).expect("entry");
    }
    let regs = card.regs_mut();
    for i in 0..port::OWNED_WORDS {
        regs.write32(BarOffset(port::BASE + port::OWNED.at(i)), u32::MAX)
            .expect("owned");
    }
    println!("RTL packet port, frames back to back into both wires (clocks per frame):");
    println!("  {:>6}  {:>10}  {:>10}", "bytes", "forwarded", "dropped");
    for size in [64usize, 128, 256, 512, 1024, 1500, 2048] {
        let mut per = Vec::new();
        for dport in [9000u16, 9001] {
            let f = flow(dport);
            let base = f.frame(false, &[]).len();
            let frame = f.frame(false, &vec![0x5A; size - base]);
            let batch: Vec<(u8, Vec<u8>)> =
                (0..200).map(|i| ((i % 2) as u8, frame.clone())).collect();
            let clocks = regs.stream_frames(&batch).expect("stream");
            while hal::Wires::wire_tx(regs).is_some() {}
            per.push(clocks as f64 / 200.0);
        }
        println!("  {size:>6}  {:>10.1}  {:>10.1}", per[0], per[1]);
    }
    println!();
}
