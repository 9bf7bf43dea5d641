//! Register helpers of the packet port block that the model's and the RTL's port tests share.
// Each test file uses its own part of this module.
#![allow(dead_code)]

use hal::regs::{port, Reg};
use hal::{BarOffset, RegIo};

/// Read the register at absolute offset `o`.
pub fn rd(c: &mut dyn RegIo, o: u32) -> u32 {
    c.read32(BarOffset(o)).expect("read")
}

/// Write `v` to the register at absolute offset `o`.
pub fn wr(c: &mut dyn RegIo, o: u32, v: u32) {
    c.write32(BarOffset(o), v).expect("write");
}

/// Absolute offset of port register `r`.
pub fn p(r: Reg) -> u32 {
    port::BASE + r.offset
}

/// Absolute offset of element `i` of port register array `r`.
pub fn pa(r: Reg, i: u32) -> u32 {
    port::BASE + r.at(i)
}

/// Stage `frame` for a SEND to `dest`: `HTX_BUF`, `HTX_LEN` and `HTX_DEST`.
pub fn stage(c: &mut dyn RegIo, frame: &[u8], dest: u32) {
    for (i, w) in frame.chunks(4).enumerate() {
        let mut b = [0u8; 4];
        b[..w.len()].copy_from_slice(w);
        wr(c, pa(port::HTX_BUF, i as u32), u32::from_be_bytes(b));
    }
    wr(c, p(port::HTX_LEN), frame.len() as u32);
    wr(c, p(port::HTX_DEST), dest);
}

/// Own every distribution identifier.
pub fn own_all(c: &mut dyn RegIo) {
    for i in 0..port::OWNED_WORDS {
        wr(c, pa(port::OWNED, i), u32::MAX);
    }
}
