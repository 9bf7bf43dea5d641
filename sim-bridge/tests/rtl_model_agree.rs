//! The RTL card and the reference model agree register for register on a
//! seeded random sequence of raw register operations (a smoke test; the full
//! differential test drives both through the driver).
#![cfg(feature = "verilator")]

use hal::regs::{cam, cam::cmd, cam::status, ident};
use hal::{BarOffset, RegIo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sim_bridge::model::ModelCard;
use sim_bridge::verilator::{RtlCard, RTL_DEPTH};

/// Every readable word of the CAM block window that holds registers, plus a
/// few holes.
fn cam_offsets() -> Vec<u32> {
    (0..0x100).step_by(4).map(|o| cam::BASE + o).collect()
}

fn wait_idle(r: &mut RtlCard) {
    for _ in 0..100 {
        let s = r.read32(BarOffset(cam::BASE + cam::STATUS.offset)).unwrap();
        if status::BUSY.get(s) == 0 {
            return;
        }
        r.idle();
    }
    panic!("RTL command never finished");
}

#[test]
fn rtl_and_model_agree_on_random_register_traffic() {
    let mut rtl = RtlCard::new().unwrap();
    let mut model = ModelCard::with_depth(RTL_DEPTH).unwrap();
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let offsets = cam_offsets();
    let c = |o: u32| BarOffset(cam::BASE + o);
    let (mut dp_hits, mut matches) = (0u32, 0u32);
    for step in 0..3000u32 {
        let mut ops: Vec<(BarOffset, u32)> = Vec::new();
        // Stage a few registers from a small alphabet so searches hit.
        for _ in 0..rng.random_range(0..6) {
            let w = rng.random_range(0..10);
            match rng.random_range(0..6) {
                0 | 1 => ops.push((c(cam::KEY.at(w)), rng.random_range(0..3))),
                2 => ops.push((
                    c(cam::MASK.at(w)),
                    [0, u32::MAX, 0xFFFF_0000][rng.random_range(0..3)],
                )),
                3 => ops.push((c(cam::DID.offset), rng.random_range(0..0x300))),
                4 => ops.push((c(cam::RESULT.offset), rng.random())),
                _ => ops.push((c(cam::DID_BITMAP.at(w % 8)), rng.random())),
            }
        }
        let index = match rng.random_range(0..10) {
            0 => RTL_DEPTH + rng.random_range(0..3),
            1 => rng.random_range(0..RTL_DEPTH.div_ceil(32) + 2),
            2 => rng.random(),
            _ => rng.random_range(0..64),
        };
        ops.push((c(cam::INDEX.offset), index));
        let code = match rng.random_range(0..20) {
            0 => rng.random_range(9..12),
            1 => 0,
            2 => cmd::FLUSH_ALL,
            n => [
                cmd::WRITE,
                cmd::INVALIDATE,
                cmd::READ,
                cmd::SEARCH,
                cmd::FLUSH_DID,
                cmd::HIT_RC,
                cmd::INSERT,
            ][n as usize % 7],
        };
        ops.push((c(cam::CMD.offset), code));
        if rng.random_ratio(1, 500) {
            ops.push((
                BarOffset(ident::CONTROL.offset),
                ident::control::SOFT_RESET.put(1),
            ));
        }
        // Read-only and unmapped targets drop writes in both.
        if rng.random_ratio(1, 20) {
            ops.push((
                BarOffset(offsets[rng.random_range(0..offsets.len())]),
                rng.random(),
            ));
        }
        for (o, v) in ops {
            rtl.write32(o, v).unwrap();
            model.write32(o, v).unwrap();
            wait_idle(&mut rtl);
        }
        // Now and then a burst on the data-path port (the model's
        // equivalent has no pipeline): same answers, hit bits, counters.
        if rng.random_ratio(1, 10) {
            let keys: Vec<[u32; 10]> = (0..rng.random_range(1..20))
                .map(|_| std::array::from_fn(|_| rng.random_range(0..3)))
                .collect();
            let got = rtl.lookup_stream(&keys).unwrap();
            for (k, g) in keys.iter().zip(&got) {
                let want = model.dp_lookup(k);
                dp_hits += u32::from(want.is_some());
                assert_eq!(
                    g.hit,
                    want.is_some(),
                    "step {step}: data-path hit for {k:x?}"
                );
                if let Some(w) = want {
                    assert_eq!(
                        (g.index, g.result, g.did),
                        (w.index, w.result, w.did),
                        "step {step}"
                    );
                }
            }
        }
        if code == cmd::SEARCH {
            matches += status::MATCH.get(model.read32(c(cam::STATUS.offset)).unwrap());
        }
        for &o in &offsets {
            let (a, b) = (
                rtl.read32(BarOffset(o)).unwrap(),
                model.read32(BarOffset(o)).unwrap(),
            );
            assert_eq!(
                a, b,
                "step {step}: register {o:#x} after command {code}: rtl {a:#x}, model {b:#x}"
            );
        }
    }
    assert!(
        dp_hits > 100 && matches > 50,
        "the traffic should hit: {dp_hits} data-path hits, {matches} search matches"
    );
}
