//! The RTL card's data-path lookup port: one key per clock at the fixed
//! latency `CAM_LOOKUP_LATENCY`, lowest index wins, hit bits and counters.
#![cfg(feature = "verilator")]

use hal::regs::{cam, cam::cmd, cam::status};
use hal::{BarOffset, RegIo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sim_bridge::verilator::{LookupResult, RtlCard, RTL_DEPTH};

fn c(off: u32) -> BarOffset {
    BarOffset(cam::BASE + off)
}

fn rd(r: &mut RtlCard, off: u32) -> u32 {
    r.read32(c(off)).expect("read")
}

fn wr(r: &mut RtlCard, off: u32, v: u32) {
    r.write32(c(off), v).expect("write");
}

fn run(r: &mut RtlCard, code: u32) -> u32 {
    wr(r, cam::CMD.offset, code);
    loop {
        let s = rd(r, cam::STATUS.offset);
        if status::BUSY.get(s) == 0 {
            return s;
        }
        r.idle();
    }
}

/// A table entry as the test keeps it.
#[derive(Clone, Copy)]
struct Entry {
    key: [u32; 10],
    mask: [u32; 10],
    result: u32,
    did: u16,
}

fn write_entry(r: &mut RtlCard, index: u32, e: &Entry) {
    for i in 0..10 {
        wr(r, cam::KEY.at(i), e.key[i as usize]);
        wr(r, cam::MASK.at(i), e.mask[i as usize]);
    }
    wr(r, cam::RESULT.offset, e.result);
    wr(r, cam::DID.offset, u32::from(e.did));
    wr(r, cam::INDEX.offset, index);
    assert_eq!(run(r, cmd::WRITE), status::DONE.put(1));
}

/// What the table answers for `key`: the lowest matching entry.
fn expect(table: &[(u32, Entry)], key: &[u32; 10]) -> LookupResult {
    table
        .iter()
        .filter(|(_, e)| (0..10).all(|w| (key[w] ^ e.key[w]) & e.mask[w] == 0))
        .min_by_key(|(i, _)| *i)
        .map_or(LookupResult::default(), |(i, e)| LookupResult {
            hit: true,
            index: *i,
            result: e.result,
            did: e.did,
        })
}

#[test]
fn one_lookup_per_clock_at_fixed_latency() {
    let mut r = RtlCard::new().unwrap();
    assert_eq!(
        rd(&mut r, cam::CAP_LOOKUP_LATENCY.offset),
        cam::LOOKUP_LATENCY
    );
    let mut rng = SmallRng::seed_from_u64(7);
    let mut table = Vec::new();
    for n in 0..40u32 {
        let index = rng.random_range(0..RTL_DEPTH);
        // Masks wildcard a random subset of words, so several entries may match.
        let mut mask = [u32::MAX; 10];
        for m in &mut mask {
            if rng.random_ratio(1, 2) {
                *m = 0;
            }
        }
        let key: [u32; 10] = std::array::from_fn(|_| rng.random_range(0..2));
        let e = Entry {
            key,
            mask,
            result: 0x5000 + n,
            did: ((n * 7) % 4096) as u16,
        };
        write_entry(&mut r, index, &e);
        table.retain(|(i, _)| *i != index);
        table.push((index, e));
    }
    let keys: Vec<[u32; 10]> = (0..500)
        .map(|_| std::array::from_fn(|_| rng.random_range(0..2)))
        .collect();
    let t0 = r.cycles();
    let got = r.lookup_stream(&keys).unwrap();
    let spent = r.cycles() - t0;
    // N keys, one per clock; the last answer shows LATENCY clocks after the
    // clock that sampled the last key.
    assert_eq!(
        spent,
        keys.len() as u64 + u64::from(cam::LOOKUP_LATENCY) - 1
    );
    let mut hits = 0;
    for (k, g) in keys.iter().zip(&got) {
        let want = expect(&table, k);
        assert_eq!(*g, want, "key {k:x?}");
        hits += u32::from(want.hit);
    }
    assert!(
        hits > 50 && hits < 500,
        "the test should mix hits and misses ({hits})"
    );
    assert_eq!(rd(&mut r, cam::DP_LOOKUPS.offset), 500);
    assert_eq!(rd(&mut r, cam::DP_HITS.offset), hits);

    // A single key takes exactly the latency.
    let t0 = r.cycles();
    r.lookup_stream(&keys[..1]).unwrap();
    assert_eq!(r.cycles() - t0, u64::from(cam::LOOKUP_LATENCY));
    assert!(r.lookup_stream(&[]).unwrap().is_empty());
}

#[test]
fn data_path_hits_set_hit_bits_and_empty_table_misses() {
    let mut r = RtlCard::new().unwrap();
    // Two entries with the same key; `a` is the lower one, in hit word 1 when
    // the depth allows.
    let a = 33.min(RTL_DEPTH - 2);
    let b = (a + 37).min(RTL_DEPTH - 1);
    let k = [0x1111_2222; 10];
    assert_eq!(r.lookup_stream(&[k]).unwrap()[0], LookupResult::default());
    let e = Entry {
        key: k,
        mask: [u32::MAX; 10],
        result: 0xAB,
        did: 0xCD,
    };
    write_entry(&mut r, a, &e);
    write_entry(&mut r, b, &e);
    let got = r.lookup_stream(&[k, [0; 10], k]).unwrap();
    assert_eq!(
        got[0],
        LookupResult {
            hit: true,
            index: a,
            result: 0xAB,
            did: 0xCD
        }
    );
    assert!(!got[1].hit);
    assert_eq!(got[2], got[0]);
    // HIT_RC of a's hit word: only a was hit.
    wr(&mut r, cam::INDEX.offset, a / 32);
    assert_eq!(run(&mut r, cmd::HIT_RC), status::DONE.put(1));
    assert_eq!(rd(&mut r, cam::HITS.offset), 1 << (a % 32));
    run(&mut r, cmd::HIT_RC);
    assert_eq!(rd(&mut r, cam::HITS.offset), 0);
    assert_eq!(rd(&mut r, cam::DP_LOOKUPS.offset), 4);
    assert_eq!(rd(&mut r, cam::DP_HITS.offset), 2);
    // Invalidate a: the data path now finds b.
    wr(&mut r, cam::INDEX.offset, a);
    run(&mut r, cmd::INVALIDATE);
    assert_eq!(r.lookup_stream(&[k]).unwrap()[0].index, b);
}

/// A fresh card whose entry 0 matches exactly `key`, answering `result` and `did`, streams
/// `n` lookups of that key while command `code` is written on clock `at` (INDEX is 0).
/// The card and the `n` answers.
fn stream_over_command(
    key: [u32; 10],
    (result, did): (u32, u16),
    n: usize,
    at: usize,
    code: u32,
) -> (RtlCard, Vec<LookupResult>) {
    let mut r = RtlCard::new().unwrap();
    let e = Entry {
        key,
        mask: [u32::MAX; 10],
        result,
        did,
    };
    write_entry(&mut r, 0, &e);
    let got = r
        .lookup_stream_with_write(&vec![key; n], at as u32, c(cam::CMD.offset), code)
        .unwrap();
    (r, got)
}

/// The clock (counted from the first key) on which a command whose CMD write
/// is accepted on clock `at` changes the table: start, VEC, ENC, COMMIT.
fn commit_clock(at: usize) -> usize {
    at + 4
}

#[test]
fn lookups_see_the_table_as_it_stood_when_they_entered() {
    // INVALIDATE entry 0 while 20 lookups of its key stream by.
    let at = 5;
    let (mut r, got) = stream_over_command([0x42; 10], (0x77, 3), 20, at, cmd::INVALIDATE);
    let hits: Vec<bool> = got.iter().map(|g| g.hit).collect();
    // Keys sampled up to and including the commit clock read the old table.
    let n_hit = commit_clock(at) + 1;
    assert!(hits[..n_hit].iter().all(|&h| h), "{hits:?}");
    assert!(hits[n_hit..].iter().all(|&h| !h), "{hits:?}");
    assert_eq!(
        got[0],
        LookupResult {
            hit: true,
            index: 0,
            result: 0x77,
            did: 3
        }
    );
    assert_eq!(rd(&mut r, cam::DP_HITS.offset), n_hit as u32);
    assert_eq!(rd(&mut r, cam::STATUS.offset), status::DONE.put(1));
    // The hit the last old-table key set on the commit clock is cleared by
    // the invalidate, which comes after it.
    assert_eq!(run(&mut r, cmd::READ), status::DONE.put(1));
}

#[test]
fn a_hit_on_the_hit_rc_clock_is_kept() {
    // HIT_RC of entries 0..31 commits on the clock that samples the last key.
    let at = 3;
    let (mut r, got) = stream_over_command([7; 10], (1, 1), 8, at, cmd::HIT_RC);
    assert_eq!(got.len(), commit_clock(at) + 1);
    assert!(got.iter().all(|g| g.hit));
    assert_eq!(rd(&mut r, cam::HITS.offset), 1, "earlier hits were read");
    // Read-and-clear came first, then the last key's hit set the bit again.
    assert_eq!(
        run(&mut r, cmd::READ),
        status::DONE.put(1) | status::VALID.put(1) | status::HIT.put(1)
    );
    wr(&mut r, cam::INDEX.offset, 0);
    run(&mut r, cmd::HIT_RC);
    assert_eq!(rd(&mut r, cam::HITS.offset), 1);
    run(&mut r, cmd::HIT_RC);
    assert_eq!(rd(&mut r, cam::HITS.offset), 0);
}
