//! The RTL data-path lookup port (`RtlCard::lookup_stream`) against the
//! reference model's `ModelCard::dp_lookup`.
//!
//! * Throughput and latency: a stream of N keys, one per clock, takes exactly
//!   `N + CAM_LOOKUP_LATENCY - 1` clocks: the first answer comes
//!   `CAM_LOOKUP_LATENCY` clocks after the first key went in, then one answer
//!   per clock (hdl/CARD.md, "Data-path lookup port").
//! * Every answer (hit, index, result, identifier) equals the model's for the
//!   same table, with wildcard entries and overlapping priorities.
//! * Side effects agree: `DP_LOOKUPS`, `DP_HITS` and the hit bits (read back
//!   with an aging scan) are the same on both cards afterwards.
#![cfg(feature = "verilator")]

use driver::{Card, DistributionId, KeyBits, KEY_WORDS};
use hal::regs::cam;
use hal::{BarOffset, RegIo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sim_bridge::model::ModelCard;
use sim_bridge::verilator::{LookupResult, RtlCard, RTL_DEPTH};

type Key = [u32; KEY_WORDS];

fn cards() -> (Card<ModelCard>, Card<RtlCard>) {
    let m = Card::probe(ModelCard::with_depth(RTL_DEPTH).expect("model")).expect("probe model");
    let r = Card::probe(RtlCard::with_depth(RTL_DEPTH).expect("RTL card")).expect("probe RTL");
    (m, r)
}

/// Fill both cards with the same `n` entries: keys from a small space, a
/// third of them with wildcard words, so that keys often match several
/// entries and the lowest index must win.
fn fill(
    rng: &mut SmallRng,
    m: &mut Card<ModelCard>,
    r: &mut Card<RtlCard>,
    n: usize,
) -> Vec<KeyBits> {
    let mut entries = Vec::new();
    while entries.len() < n {
        let mut b = KeyBits::default();
        for w in 0..KEY_WORDS {
            b.key[w] = rng.random_range(0..6);
            b.mask[w] = if rng.random_range(0..3) == 0 && w % 3 == 0 {
                0
            } else {
                u32::MAX
            };
        }
        let did = DistributionId(u16::from(rng.random::<u8>()));
        let result: u32 = rng.random();
        let a = m.insert_bits(&b, did, result);
        let c = r.insert_bits(&b, did, result);
        assert_eq!(format!("{a:?}"), format!("{c:?}"));
        if a.is_ok() {
            entries.push(b);
        }
    }
    entries
}

/// Search keys: concrete versions of stored entries (wildcard words filled
/// at random from the same small space) and misses.
/// The generator seeded with `seed`, and [`cards`] after a [`fill`] of `n` entries from it.
fn filled_cards(seed: u64, n: usize) -> (SmallRng, Card<ModelCard>, Card<RtlCard>, Vec<KeyBits>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut m, mut r) = cards();
    let entries = fill(&mut rng, &mut m, &mut r, n);
    (rng, m, r, entries)
}

fn keys(rng: &mut SmallRng, entries: &[KeyBits], n: usize) -> Vec<Key> {
    (0..n)
        .map(|_| {
            if entries.is_empty() || rng.random_range(0..4) == 0 {
                std::array::from_fn(|_| rng.random_range(0..8))
            } else {
                let e = entries[rng.random_range(0..entries.len())];
                std::array::from_fn(|w| {
                    (e.key[w] & e.mask[w]) | (rng.random_range(0..6) & !e.mask[w])
                })
            }
        })
        .collect()
}

/// What the RTL port must answer for a model result.
fn expected(model: Option<sim_bridge::model::DpResult>) -> LookupResult {
    match model {
        Some(d) => LookupResult {
            hit: true,
            index: d.index,
            result: d.result,
            did: d.did,
        },
        None => LookupResult::default(),
    }
}

/// Stream `keys` through the RTL port, check the clock count, and compare
/// every answer with the model. Returns the number of hits.
fn stream_and_compare(m: &mut Card<ModelCard>, r: &mut Card<RtlCard>, keys: &[Key]) -> usize {
    let latency = u64::from(r.info().cam.lookup_latency);
    let rtl = r.regs_mut();
    let before = rtl.cycles();
    let got = rtl.lookup_stream(keys).expect("lookup_stream");
    let clocks = rtl.cycles() - before;
    let n = keys.len() as u64;
    assert_eq!(
        clocks,
        n + latency - 1,
        "{n} keys took {clocks} clocks; one key per clock at latency {latency} means {}",
        n + latency - 1
    );
    assert_eq!(got.len(), keys.len());
    let model = m.regs_mut();
    let mut hits = 0;
    for (i, (k, g)) in keys.iter().zip(&got).enumerate() {
        let want = expected(model.dp_lookup(k));
        assert_eq!(*g, want, "answer {i} for key {k:08x?}");
        hits += usize::from(g.hit);
    }
    hits
}

fn assert_side_effects_agree(m: &mut Card<ModelCard>, r: &mut Card<RtlCard>) {
    assert_eq!(m.counters().unwrap(), r.counters().unwrap(), "DP counters");
    assert_eq!(m.age().unwrap(), r.age().unwrap(), "hit bits");
}

#[test]
fn latency_register_matches_the_register_map() {
    let (_, mut r) = cards();
    assert_eq!(r.info().cam.lookup_latency, cam::LOOKUP_LATENCY);
    assert_eq!(r.regs_mut().lookup_latency(), cam::LOOKUP_LATENCY);
    let raw = r
        .regs_mut()
        .read32(BarOffset(cam::BASE + cam::CAP_LOOKUP_LATENCY.offset))
        .unwrap();
    assert_eq!(raw, cam::LOOKUP_LATENCY);
}

#[test]
fn one_lookup_per_clock_and_answers_equal_the_model() {
    let (mut rng, mut m, mut r, entries) = filled_cards(0xDA7A_0001, 700);
    let ks = keys(&mut rng, &entries, 10_000);
    let hits = stream_and_compare(&mut m, &mut r, &ks);
    // Mixed hits and misses.
    assert!(hits > 2_000 && hits < 9_500, "{hits} hits of 10000");
    assert_side_effects_agree(&mut m, &mut r);
    let c = r.counters().unwrap();
    assert_eq!(c.dp_lookups, 10_000);
    assert_eq!(c.dp_hits as usize, hits);
}

#[test]
fn stream_length_costs_exactly_one_clock_per_key() {
    let (mut rng, mut m, mut r, entries) = filled_cards(0xDA7A_0002, 200);
    let mut total = 0u64;
    for n in [1usize, 2, 3, 4, 5, 7, 31, 64, 257, 1000] {
        let ks = keys(&mut rng, &entries, n);
        stream_and_compare(&mut m, &mut r, &ks);
        total += n as u64;
    }
    // Streams back to back with bus traffic in between still agree.
    assert_side_effects_agree(&mut m, &mut r);
    assert_eq!(u64::from(r.counters().unwrap().dp_lookups), total);
}

#[test]
fn empty_and_full_tables() {
    let mut rng = SmallRng::seed_from_u64(0xDA7A_0003);
    let (mut m, mut r) = cards();
    // Empty: every lookup misses with zeros.
    let ks = keys(&mut rng, &[], 500);
    assert_eq!(stream_and_compare(&mut m, &mut r, &ks), 0);
    // Full table: the last entry (highest index) must be reachable too.
    let entries = fill(&mut rng, &mut m, &mut r, RTL_DEPTH as usize);
    assert_eq!(m.len(), RTL_DEPTH as usize);
    let ks = keys(&mut rng, &entries, 5_000);
    stream_and_compare(&mut m, &mut r, &ks);
    let last = entries.last().unwrap();
    let k: Key = std::array::from_fn(|w| last.key[w] & last.mask[w]);
    stream_and_compare(&mut m, &mut r, &[k]);
    assert_side_effects_agree(&mut m, &mut r);
    // After a flush every lookup misses again.
    m.flush_all().unwrap();
    r.flush_all().unwrap();
    let ks = keys(&mut rng, &entries, 300);
    assert_eq!(stream_and_compare(&mut m, &mut r, &ks), 0);
    assert_side_effects_agree(&mut m, &mut r);
}

#[test]
fn lookups_see_management_changes_made_before_the_stream() {
    let (mut rng, mut m, mut r, entries) = filled_cards(0xDA7A_0004, 300);
    let ks = keys(&mut rng, &entries, 2_000);
    for round in 0..6 {
        // Change the table between streams: remove some slots, overwrite
        // others with new results, reset hit bits by aging.
        for _ in 0..20 {
            let i = rng.random_range(0..300);
            assert_eq!(
                format!("{:?}", m.remove_at(driver::CamIndex(i))),
                format!("{:?}", r.remove_at(driver::CamIndex(i)))
            );
        }
        if round % 2 == 1 {
            fill(&mut rng, &mut m, &mut r, 20);
        }
        stream_and_compare(&mut m, &mut r, &ks);
        assert_side_effects_agree(&mut m, &mut r);
    }
}
