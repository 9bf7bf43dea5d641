//! The CAM block's mask profiles and batch commands (`hdl/CARD.md`), register by register,
//! on the reference model and (with the `verilator` feature) the RTL: the same sequence must
//! give the values the contract names on both.

mod support;

use hal::regs::cam::{self, batch_cmd, cmd, err, status};
use hal::RegIo;
use support::{rd, wr};

fn c(r: hal::regs::Reg) -> u32 {
    cam::BASE + r.offset
}

/// STATUS once the running command has finished.
fn wait(card: &mut dyn RegIo) -> u32 {
    for _ in 0..100 {
        let s = rd(card, c(cam::STATUS));
        if status::BUSY.get(s) == 0 {
            return s;
        }
    }
    panic!("CAM command still busy after 100 polls");
}

fn stage_key(card: &mut dyn RegIo, v: u32) {
    for w in 0..cam::KEY_WORDS {
        wr(card, cam::BASE + cam::KEY.at(w), v + w);
    }
}

/// `(BATCH_DONE, BATCH_ERRS, BATCH_ERR)`.
fn batch(card: &mut dyn RegIo) -> (u32, u32, u32) {
    (
        rd(card, c(cam::BATCH_DONE)),
        rd(card, c(cam::BATCH_ERRS)),
        rd(card, c(cam::BATCH_ERR)),
    )
}

fn ok() -> u32 {
    status::DONE.put(1)
}

fn failed(e: u32) -> u32 {
    status::DONE.put(1) | status::ERR.put(e)
}

fn profiles_and_batches(card: &mut dyn RegIo, depth: u32) {
    assert_eq!(rd(card, c(cam::CAP_PROFILES)), cam::PROFILES);
    assert_eq!(batch(card), (0, 0, 0));
    // Profile 3: word 0 wildcarded, the rest compared.
    for w in 0..cam::KEY_WORDS {
        wr(
            card,
            cam::BASE + cam::MASK.at(w),
            if w == 0 { 0 } else { u32::MAX },
        );
    }
    wr(card, c(cam::INDEX), 3);
    wr(card, c(cam::CMD), cmd::SET_PROFILE);
    assert_eq!(wait(card), ok());
    wr(card, c(cam::INDEX), cam::PROFILES);
    wr(card, c(cam::CMD), cmd::SET_PROFILE);
    assert_eq!(wait(card), failed(err::BAD_PROFILE));
    // MASK staging now all ones: WRITE_P must take the profile's mask, not it.
    wr(card, cam::BASE + cam::MASK.at(0), u32::MAX);

    wr(card, c(cam::CMD), cmd::BATCH_START);
    // Back to back, no STATUS read: entry 7, a bad profile, a bad index, an INSERT_P.
    stage_key(card, 0x100);
    wr(card, c(cam::RESULT), 0xAB);
    wr(card, c(cam::DID), 9);
    wr(card, c(cam::INDEX), 7);
    wr(card, c(cam::CMD), batch_cmd(cmd::WRITE_P, 3));
    wr(card, c(cam::INDEX), 8);
    wr(card, c(cam::CMD), batch_cmd(cmd::WRITE_P, 200));
    wr(card, c(cam::INDEX), depth);
    wr(card, c(cam::CMD), batch_cmd(cmd::WRITE_P, 3));
    stage_key(card, 0x200);
    wr(card, c(cam::CMD), batch_cmd(cmd::INSERT_P, 3));
    assert_eq!(wait(card), ok());
    let pos1 = cam::batch_err::POS.put(1) | cam::batch_err::CODE.put(err::BAD_PROFILE);
    assert_eq!(batch(card), (4, 2, pos1));
    assert_eq!(
        rd(card, c(cam::INDEX)),
        0,
        "INSERT_P took the lowest free entry"
    );
    assert_eq!(rd(card, c(cam::OCCUPANCY)), 2);
    assert_eq!(rd(card, c(cam::CMD_COUNT)), 7);
    assert_eq!(rd(card, c(cam::ERR_COUNT)), 3);
    // Entry 7 has profile 3's mask and the staged key, result and identifier.
    wr(card, c(cam::INDEX), 7);
    wr(card, c(cam::CMD), cmd::READ);
    assert_eq!(wait(card), ok() | status::VALID.put(1));
    assert_eq!(rd(card, cam::BASE + cam::MASK.at(0)), 0);
    assert_eq!(rd(card, cam::BASE + cam::MASK.at(1)), u32::MAX);
    assert_eq!(rd(card, cam::BASE + cam::KEY.at(0)), 0x100);
    assert_eq!(rd(card, c(cam::RESULT)), 0xAB);
    assert_eq!(rd(card, c(cam::DID)), 9);
    // A search with another word 0 matches it (the wildcard).
    stage_key(card, 0x100);
    wr(card, cam::BASE + cam::KEY.at(0), 0xFFFF);
    wr(card, c(cam::CMD), cmd::SEARCH);
    assert_eq!(wait(card), ok() | status::MATCH.put(1));
    assert_eq!(rd(card, c(cam::INDEX)), 7);
    // WRITE_P with bit 16 set is no batch command.
    wr(card, c(cam::CMD), batch_cmd(cmd::WRITE_P, 3) | 1 << 16);
    assert_eq!(wait(card), failed(err::UNKNOWN_CMD));
    assert_eq!(batch(card).0, 4);
    // BATCH_START zeroes the counters; soft reset zeroes profiles and counters.
    wr(card, c(cam::CMD), cmd::BATCH_START);
    assert_eq!(wait(card), ok());
    assert_eq!(batch(card), (0, 0, 0));
    wr(card, c(cam::CMD), batch_cmd(cmd::INSERT_P, 0));
    assert_eq!(wait(card), ok());
    wr(
        card,
        hal::regs::ident::CONTROL.offset,
        hal::regs::ident::control::SOFT_RESET.put(1),
    );
    assert_eq!(batch(card), (0, 0, 0));
    stage_key(card, 0x300);
    wr(card, c(cam::INDEX), 1);
    wr(card, c(cam::CMD), batch_cmd(cmd::WRITE_P, 3));
    assert_eq!(wait(card), ok());
    wr(card, c(cam::CMD), cmd::READ);
    assert_eq!(wait(card), ok() | status::VALID.put(1));
    assert_eq!(
        rd(card, cam::BASE + cam::MASK.at(1)),
        0,
        "profiles are zero after reset"
    );
}

fn full_mid_batch(card: &mut dyn RegIo, depth: u32) {
    wr(card, c(cam::CMD), cmd::BATCH_START);
    for i in 0..depth + 2 {
        stage_key(card, i * 16);
        wr(card, c(cam::CMD), batch_cmd(cmd::INSERT_P, 0));
    }
    wr(card, c(cam::INDEX), 2);
    wr(card, c(cam::CMD), batch_cmd(cmd::WRITE_P, 0));
    assert_eq!(wait(card), ok());
    let full = cam::batch_err::POS.put(depth) | cam::batch_err::CODE.put(err::FULL);
    assert_eq!(batch(card), (depth + 3, 2, full));
    assert_eq!(rd(card, c(cam::OCCUPANCY)), depth);
}

#[test]
fn model_profiles_and_batches() {
    let mut m = sim_bridge::model::ModelCard::with_depth(64).unwrap();
    profiles_and_batches(&mut m, 64);
    full_mid_batch(
        &mut sim_bridge::model::ModelCard::with_depth(64).unwrap(),
        64,
    );
}

#[cfg(feature = "verilator")]
#[test]
fn rtl_profiles_and_batches() {
    use sim_bridge::verilator::{RtlCard, RTL_DEPTH};
    profiles_and_batches(&mut RtlCard::new().unwrap(), RTL_DEPTH);
    full_mid_batch(&mut RtlCard::new().unwrap(), RTL_DEPTH);
}
