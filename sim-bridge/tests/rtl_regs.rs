//! Register semantics of the RTL card (hdl/CARD.md), through real AXI
//! transactions on the Verilator model.
#![cfg(feature = "verilator")]

use hal::regs::{block_type, cam, cam::cmd, cam::err, cam::status, ident, BAR_SIZE};
use hal::{conformance, BarOffset, RegIo};
use sim_bridge::verilator::{RtlCard, RTL_DEPTH};

fn card() -> RtlCard {
    RtlCard::new().expect("RTL card")
}

fn c(off: u32) -> BarOffset {
    BarOffset(cam::BASE + off)
}

fn rd(r: &mut RtlCard, o: BarOffset) -> u32 {
    r.read32(o).expect("read")
}

fn wr(r: &mut RtlCard, o: BarOffset, v: u32) {
    r.write32(o, v).expect("write");
}

/// Write CMD and poll STATUS until BUSY clears; returns the final STATUS.
fn run(r: &mut RtlCard, code: u32) -> u32 {
    wr(r, c(cam::CMD.offset), code);
    for _ in 0..100 {
        let s = rd(r, c(cam::STATUS.offset));
        if status::BUSY.get(s) == 0 {
            return s;
        }
        r.idle();
    }
    panic!("command {code} still busy");
}

fn stage(r: &mut RtlCard, key: &[u32; 10], mask: &[u32; 10], result: u32, did: u32) {
    for i in 0..10 {
        wr(r, c(cam::KEY.at(i)), key[i as usize]);
        wr(r, c(cam::MASK.at(i)), mask[i as usize]);
    }
    wr(r, c(cam::RESULT.offset), result);
    wr(r, c(cam::DID.offset), did);
}

/// The staging registers read back `key`, `mask`, `result` and `did`; `what` names the case.
fn assert_staged(
    r: &mut RtlCard,
    key: &[u32; 10],
    mask: &[u32; 10],
    result: u32,
    did: u32,
    what: &str,
) {
    for i in 0..10 {
        assert_eq!(
            rd(r, c(cam::KEY.at(i))),
            key[i as usize],
            "{what}: KEY[{i}]"
        );
        assert_eq!(
            rd(r, c(cam::MASK.at(i))),
            mask[i as usize],
            "{what}: MASK[{i}]"
        );
    }
    assert_eq!(rd(r, c(cam::RESULT.offset)), result, "{what}: RESULT");
    assert_eq!(rd(r, c(cam::DID.offset)), did, "{what}: DID");
}

fn key(seed: u32) -> [u32; 10] {
    std::array::from_fn(|i| {
        seed.wrapping_mul(0x9E37_79B9)
            .wrapping_add(i as u32 * 0x0101_0101)
    })
}

const ALL: [u32; 10] = [u32::MAX; 10];

#[test]
fn identity_block() {
    let mut r = card();
    assert_eq!(rd(&mut r, BarOffset(ident::TYPE.offset)), block_type::IDENT);
    assert_eq!(
        rd(&mut r, BarOffset(ident::VERSION.offset)),
        u32::from(ident::MAJOR) << 16 | u32::from(ident::MINOR)
    );
    assert_eq!(rd(&mut r, BarOffset(ident::NEXT.offset)), cam::BASE);
    assert_eq!(
        rd(&mut r, BarOffset(ident::MAGIC.offset)),
        ident::values::MAGIC
    );
    assert_eq!(
        rd(&mut r, BarOffset(ident::BUILD_ID.offset)),
        ident::values::BUILD_ID_SIM
    );
    assert_eq!(rd(&mut r, BarOffset(ident::BAR_BYTES.offset)), BAR_SIZE);
    assert_eq!(rd(&mut r, BarOffset(ident::SCRATCH.offset)), 0);
    wr(&mut r, BarOffset(ident::SCRATCH.offset), 0xDEAD_BEEF);
    assert_eq!(rd(&mut r, BarOffset(ident::SCRATCH.offset)), 0xDEAD_BEEF);
    // Read-only registers drop writes; CONTROL reads 0.
    for reg in [
        ident::TYPE,
        ident::VERSION,
        ident::NEXT,
        ident::MAGIC,
        ident::BUILD_ID,
        ident::BAR_BYTES,
    ] {
        let before = rd(&mut r, BarOffset(reg.offset));
        wr(&mut r, BarOffset(reg.offset), 0x1234_5678);
        assert_eq!(rd(&mut r, BarOffset(reg.offset)), before, "{}", reg.name);
    }
    wr(&mut r, BarOffset(ident::CONTROL.offset), 0xFFFF_FFFE);
    assert_eq!(rd(&mut r, BarOffset(ident::CONTROL.offset)), 0);
    assert_eq!(
        rd(&mut r, BarOffset(ident::SCRATCH.offset)),
        0xDEAD_BEEF,
        "CONTROL without SOFT_RESET resets nothing"
    );
    assert_eq!(
        r.describe(),
        format!("verilator:card_top(depth={RTL_DEPTH})")
    );
    assert_eq!(r.size(), u64::from(BAR_SIZE));
}

#[test]
fn unmapped_offsets_read_the_pattern_and_drop_writes() {
    let mut r = card();
    conformance::assert_unmapped(&mut r, conformance::UNMAPPED_SAMPLES);
    conformance::assert_bad_offsets_rejected(&mut r, &[2, 0x1001], &[BAR_SIZE]);
}

/// Stages an entry (`stage`'s arguments) and WRITEs it into entry `index`; the final STATUS.
fn write_at(
    r: &mut RtlCard,
    index: u32,
    k: &[u32; 10],
    m: &[u32; 10],
    result: u32,
    did: u32,
) -> u32 {
    stage(r, k, m, result, did);
    wr(r, c(cam::INDEX.offset), index);
    run(r, cmd::WRITE)
}

/// SEARCH of the staged key: asserts a match at `index` answering `result` and `did`.
fn assert_search_hits(r: &mut RtlCard, index: u32, result: u32, did: u32) {
    assert_eq!(
        run(r, cmd::SEARCH),
        status::DONE.put(1) | status::MATCH.put(1)
    );
    assert_eq!(rd(r, c(cam::INDEX.offset)), index);
    assert_eq!(rd(r, c(cam::RESULT.offset)), result);
    assert_eq!(rd(r, c(cam::DID.offset)), did);
}

#[test]
fn cam_header_capabilities_and_read_only_registers() {
    let mut r = card();
    assert_eq!(rd(&mut r, c(cam::TYPE.offset)), block_type::CAM);
    assert_eq!(
        rd(&mut r, c(cam::VERSION.offset)),
        u32::from(cam::MAJOR) << 16 | u32::from(cam::MINOR)
    );
    assert_eq!(rd(&mut r, c(cam::NEXT.offset)), hal::regs::sa::BASE);
    assert_eq!(rd(&mut r, c(cam::CAP_DEPTH.offset)), RTL_DEPTH);
    assert_eq!(rd(&mut r, c(cam::CAP_KEY_BITS.offset)), cam::KEY_BITS);
    assert_eq!(rd(&mut r, c(cam::CAP_RESULT_BITS.offset)), 32);
    assert_eq!(rd(&mut r, c(cam::CAP_DID_BITS.offset)), 12);
    assert_eq!(
        rd(&mut r, c(cam::CAP_LOOKUP_LATENCY.offset)),
        cam::LOOKUP_LATENCY
    );
    for reg in cam::ALL
        .iter()
        .filter(|g| g.access == hal::regs::Access::RO)
    {
        let before = rd(&mut r, c(reg.offset));
        wr(&mut r, c(reg.offset), 0x0F0F_0F0F);
        assert_eq!(rd(&mut r, c(reg.offset)), before, "{}", reg.name);
    }
}

#[test]
fn staging_registers_hold_their_values() {
    let mut r = card();
    let key: [u32; 10] = std::array::from_fn(|i| 0x1000 + i as u32);
    let mask: [u32; 10] = std::array::from_fn(|i| 0x2000 + i as u32);
    stage(&mut r, &key, &mask, 0xCAFE_F00D, 0x1234);
    for i in 0..8 {
        wr(&mut r, c(cam::DID_BITMAP.at(i)), 0x3000 + i);
    }
    wr(&mut r, c(cam::INDEX.offset), 0xFFFF_FFFF);
    assert_staged(&mut r, &key, &mask, 0xCAFE_F00D, 0x234, "DID keeps 12 bits");
    for i in 0..8 {
        assert_eq!(rd(&mut r, c(cam::DID_BITMAP.at(i))), 0x3000 + i);
    }
    assert_eq!(rd(&mut r, c(cam::INDEX.offset)), 0xFFFF_FFFF);
    assert_eq!(rd(&mut r, c(cam::STATUS.offset)), 0);
    assert_eq!(rd(&mut r, c(cam::CMD.offset)), 0);
}

#[test]
fn write_read_search_invalidate() {
    let mut r = card();
    let k = key(1);
    assert_eq!(
        write_at(&mut r, 5, &k, &ALL, 0xAAAA_0001, 7),
        status::DONE.put(1)
    );
    assert_eq!(rd(&mut r, c(cam::CMD.offset)), cmd::WRITE);
    assert_eq!(rd(&mut r, c(cam::OCCUPANCY.offset)), 1);

    // READ loads the staging registers.
    stage(&mut r, &[0; 10], &[0; 10], 0, 0);
    assert_eq!(
        run(&mut r, cmd::READ),
        status::DONE.put(1) | status::VALID.put(1)
    );
    assert_staged(&mut r, &k, &ALL, 0xAAAA_0001, 7, "READ of entry 5");

    // SEARCH hits and sets the hit bit.
    wr(&mut r, c(cam::INDEX.offset), 0);
    wr(&mut r, c(cam::RESULT.offset), 0);
    wr(&mut r, c(cam::DID.offset), 0);
    assert_search_hits(&mut r, 5, 0xAAAA_0001, 7);
    assert_eq!(
        run(&mut r, cmd::READ),
        status::DONE.put(1) | status::VALID.put(1) | status::HIT.put(1)
    );

    // A miss: INDEX all ones, RESULT and DID unchanged.
    wr(&mut r, c(cam::KEY.at(3)), 0);
    wr(&mut r, c(cam::RESULT.offset), 0x1111);
    assert_eq!(run(&mut r, cmd::SEARCH), status::DONE.put(1));
    assert_eq!(rd(&mut r, c(cam::INDEX.offset)), 0xFFFF_FFFF);
    assert_eq!(rd(&mut r, c(cam::RESULT.offset)), 0x1111);
    assert_eq!(rd(&mut r, c(cam::DID.offset)), 7);

    // INVALIDATE keeps the entry's data but drops valid and hit.
    wr(&mut r, c(cam::INDEX.offset), 5);
    assert_eq!(run(&mut r, cmd::INVALIDATE), status::DONE.put(1));
    assert_eq!(rd(&mut r, c(cam::OCCUPANCY.offset)), 0);
    assert_eq!(run(&mut r, cmd::READ), status::DONE.put(1));
    assert_eq!(rd(&mut r, c(cam::KEY.at(0))), k[0]);
    assert_eq!(rd(&mut r, c(cam::RESULT.offset)), 0xAAAA_0001);
    assert_eq!(rd(&mut r, c(cam::CMD_COUNT.offset)), 7);
    assert_eq!(rd(&mut r, c(cam::ERR_COUNT.offset)), 0);
}

#[test]
fn ternary_match_lowest_index_wins() {
    let mut r = card();
    let k = key(9);
    // Entry 10: exact; entry 3: wildcard on word 0 only; entry 1: invalid.
    write_at(&mut r, 10, &k, &ALL, 10, 1);
    let mut m = ALL;
    m[0] = 0;
    let mut k3 = k;
    k3[0] = !k[0];
    write_at(&mut r, 3, &k3, &m, 3, 2);
    write_at(&mut r, 1, &k, &ALL, 1, 3);
    run(&mut r, cmd::INVALIDATE);
    stage(&mut r, &k, &[0; 10], 0, 0);
    assert_search_hits(&mut r, 3, 3, 2);
    // Differ in word 1: only entries 3 and 10 compare word 1, so no match.
    wr(&mut r, c(cam::KEY.at(1)), !k[1]);
    assert_eq!(run(&mut r, cmd::SEARCH), status::DONE.put(1));
}

#[test]
fn errors_and_counters() {
    let mut r = card();
    let bad = |e| status::DONE.put(1) | status::ERR.put(e);
    wr(&mut r, c(cam::INDEX.offset), RTL_DEPTH);
    for code in [cmd::WRITE, cmd::INVALIDATE, cmd::READ] {
        assert_eq!(run(&mut r, code), bad(err::BAD_INDEX));
    }
    wr(&mut r, c(cam::INDEX.offset), RTL_DEPTH.div_ceil(32));
    assert_eq!(run(&mut r, cmd::HIT_RC), bad(err::BAD_INDEX));
    // INDEX*32 would wrap in 32 bits: still out of range.
    wr(&mut r, c(cam::INDEX.offset), 0x0800_0000);
    assert_eq!(run(&mut r, cmd::HIT_RC), bad(err::BAD_INDEX));
    for code in [0, 13, 0xFF, 0x1_000A, 0xFFFF_FFFF] {
        assert_eq!(run(&mut r, code), bad(err::UNKNOWN_CMD));
        assert_eq!(rd(&mut r, c(cam::CMD.offset)), code);
    }
    assert_eq!(rd(&mut r, c(cam::CMD_COUNT.offset)), 10);
    assert_eq!(rd(&mut r, c(cam::ERR_COUNT.offset)), 10);
    assert_eq!(rd(&mut r, c(cam::OCCUPANCY.offset)), 0);
}

#[test]
fn busy_command_is_dropped_and_staging_writes_too() {
    let mut r = card();
    stage(&mut r, &key(2), &ALL, 0x77, 9);
    wr(&mut r, c(cam::INDEX.offset), 4);
    wr(&mut r, c(cam::CMD.offset), cmd::WRITE);
    // Still running: the second CMD and the staging write are dropped.
    wr(&mut r, c(cam::CMD.offset), cmd::FLUSH_ALL);
    wr(&mut r, c(cam::INDEX.offset), 6);
    let s = rd(&mut r, c(cam::STATUS.offset));
    assert_eq!(
        s,
        status::BUSY.put(1) | status::ERR.put(err::BUSY),
        "status {s:#x}"
    );
    assert_eq!(rd(&mut r, c(cam::CMD.offset)), cmd::WRITE);
    r.tick(20).unwrap();
    // The running command succeeded: ERR keeps BUSY, counted once.
    assert_eq!(
        rd(&mut r, c(cam::STATUS.offset)),
        status::DONE.put(1) | status::ERR.put(err::BUSY)
    );
    assert_eq!(rd(&mut r, c(cam::INDEX.offset)), 4);
    assert_eq!(rd(&mut r, c(cam::OCCUPANCY.offset)), 1);
    assert_eq!(rd(&mut r, c(cam::CMD_COUNT.offset)), 1);
    assert_eq!(rd(&mut r, c(cam::ERR_COUNT.offset)), 1);
    // The next accepted command clears ERR.
    assert_eq!(
        run(&mut r, cmd::READ),
        status::DONE.put(1) | status::VALID.put(1)
    );

    // A failing command overwrites the BUSY error with its own.
    wr(&mut r, c(cam::INDEX.offset), RTL_DEPTH);
    wr(&mut r, c(cam::CMD.offset), cmd::READ);
    wr(&mut r, c(cam::CMD.offset), cmd::READ);
    r.tick(20).unwrap();
    assert_eq!(
        rd(&mut r, c(cam::STATUS.offset)),
        status::DONE.put(1) | status::ERR.put(err::BAD_INDEX)
    );
    assert_eq!(rd(&mut r, c(cam::CMD_COUNT.offset)), 3);
    assert_eq!(rd(&mut r, c(cam::ERR_COUNT.offset)), 3);
}

#[test]
fn insert_flush_and_hits() {
    let mut r = card();
    // Fill entries 0..4 by INSERT, with dids 0..4.
    for i in 0..5u32 {
        stage(&mut r, &key(100 + i), &ALL, 0x100 + i, i * 60);
        assert_eq!(run(&mut r, cmd::INSERT), status::DONE.put(1));
        assert_eq!(rd(&mut r, c(cam::INDEX.offset)), i);
    }
    assert_eq!(rd(&mut r, c(cam::OCCUPANCY.offset)), 5);
    // Free entry 2; the next INSERT takes it.
    wr(&mut r, c(cam::INDEX.offset), 2);
    run(&mut r, cmd::INVALIDATE);
    stage(&mut r, &key(200), &ALL, 0x200, 2 * 60);
    run(&mut r, cmd::INSERT);
    assert_eq!(rd(&mut r, c(cam::INDEX.offset)), 2);
    // Hit entries 1 and 3 by SEARCH.
    for i in [1u32, 3] {
        stage(&mut r, &key(100 + i), &ALL, 0, 0);
        assert_eq!(status::MATCH.get(run(&mut r, cmd::SEARCH)), 1);
    }
    wr(&mut r, c(cam::INDEX.offset), 0);
    assert_eq!(run(&mut r, cmd::HIT_RC), status::DONE.put(1));
    assert_eq!(rd(&mut r, c(cam::HITS.offset)), 0b1010);
    run(&mut r, cmd::HIT_RC);
    assert_eq!(rd(&mut r, c(cam::HITS.offset)), 0, "read-and-clear");
    // Flush dids 60 and 240 (entries 1 and 4).
    for w in 0..8 {
        wr(&mut r, c(cam::DID_BITMAP.at(w)), 0);
    }
    wr(&mut r, c(cam::DID_BITMAP.at(60 / 32)), 1 << (60 % 32));
    wr(&mut r, c(cam::DID_BITMAP.at(240 / 32)), 1 << (240 % 32));
    assert_eq!(run(&mut r, cmd::FLUSH_DID), status::DONE.put(1));
    assert_eq!(rd(&mut r, c(cam::OCCUPANCY.offset)), 3);
    for (i, valid) in [(0, 1), (1, 0), (2, 1), (3, 1), (4, 0)] {
        wr(&mut r, c(cam::INDEX.offset), i);
        assert_eq!(
            status::VALID.get(run(&mut r, cmd::READ)),
            valid,
            "entry {i}"
        );
    }
    assert_eq!(run(&mut r, cmd::FLUSH_ALL), status::DONE.put(1));
    assert_eq!(rd(&mut r, c(cam::OCCUPANCY.offset)), 0);
}

#[test]
fn insert_reports_full() {
    let mut r = card();
    stage(&mut r, &key(5), &ALL, 1, 1);
    for i in 0..RTL_DEPTH {
        wr(&mut r, c(cam::INDEX.offset), i);
        run(&mut r, cmd::WRITE);
    }
    assert_eq!(rd(&mut r, c(cam::OCCUPANCY.offset)), RTL_DEPTH);
    wr(&mut r, c(cam::INDEX.offset), 17);
    assert_eq!(
        run(&mut r, cmd::INSERT),
        status::DONE.put(1) | status::ERR.put(err::FULL)
    );
    assert_eq!(rd(&mut r, c(cam::INDEX.offset)), 17, "nothing changes");
    wr(&mut r, c(cam::INDEX.offset), RTL_DEPTH - 1);
    run(&mut r, cmd::INVALIDATE);
    assert_eq!(run(&mut r, cmd::INSERT), status::DONE.put(1));
    assert_eq!(rd(&mut r, c(cam::INDEX.offset)), RTL_DEPTH - 1);
}

#[test]
fn soft_reset_returns_to_power_on_state() {
    let mut r = card();
    wr(&mut r, BarOffset(ident::SCRATCH.offset), 42);
    write_at(&mut r, 8, &key(3), &ALL, 0x99, 0x42);
    run(&mut r, cmd::SEARCH);
    wr(&mut r, c(cam::DID_BITMAP.at(7)), 0x8000_0000);
    run(&mut r, 0x55);
    wr(
        &mut r,
        BarOffset(ident::CONTROL.offset),
        ident::control::SOFT_RESET.put(1),
    );
    assert_eq!(rd(&mut r, BarOffset(ident::SCRATCH.offset)), 0);
    for reg in cam::ALL {
        let expect = match reg.name {
            "TYPE" => block_type::CAM,
            "VERSION" => u32::from(cam::MAJOR) << 16 | u32::from(cam::MINOR),
            "CAP_DEPTH" => RTL_DEPTH,
            "CAP_KEY_BITS" => cam::KEY_BITS,
            "CAP_RESULT_BITS" => 32,
            "CAP_DID_BITS" => 12,
            "CAP_LOOKUP_LATENCY" => cam::LOOKUP_LATENCY,
            "CAP_PROFILES" => cam::PROFILES,
            "NEXT" => hal::regs::sa::BASE,
            _ => 0,
        };
        for i in 0..reg.count {
            assert_eq!(rd(&mut r, c(reg.at(i))), expect, "{}[{i}]", reg.name);
        }
    }
    // The entry is gone, all of it.
    wr(&mut r, c(cam::INDEX.offset), 8);
    assert_eq!(run(&mut r, cmd::READ), status::DONE.put(1));
    assert_staged(
        &mut r,
        &[0; 10],
        &[0; 10],
        0,
        0,
        "READ of entry 8 after the soft reset",
    );
}

#[test]
fn bus_transactions_take_two_clocks() {
    let mut r = card();
    let t0 = r.cycles();
    rd(&mut r, BarOffset(0));
    assert_eq!(r.cycles() - t0, 2);
    wr(&mut r, BarOffset(ident::SCRATCH.offset), 1);
    assert_eq!(r.cycles() - t0, 4);
    r.idle();
    assert_eq!(r.cycles() - t0, 5);
}

#[test]
fn command_is_busy_for_six_clocks() {
    // The CMD write is accepted on its first clock and answered on the
    // second; a read shows the state after the clock before it.
    for (extra, busy) in [(0, 1), (4, 1), (5, 0)] {
        let mut r = card();
        wr(&mut r, c(cam::CMD.offset), cmd::FLUSH_ALL);
        r.tick(extra).unwrap();
        let s = rd(&mut r, c(cam::STATUS.offset));
        assert_eq!(
            status::BUSY.get(s),
            busy,
            "{extra} clocks after the write: status {s:#x}"
        );
        assert_eq!(status::DONE.get(s), 1 - busy);
    }
}
