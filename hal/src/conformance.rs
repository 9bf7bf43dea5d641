//! Checks that hold for every [`RegIo`] backend, shared by the backends' tests
//! (the heap and mapped windows here, the model and the RTL in `sim-bridge`).
//!
//! Each check panics with the offending offset when the backend misbehaves,
//! so a test calls it like an `assert!`.

use crate::io::{BarOffset, HalError, RegIo};
use crate::regs::{cam, esp, port, sa, BAR_SIZE, UNMAPPED_PATTERN};

/// Offsets of BAR0 that no block of this tree's map names: gaps inside the
/// identity, CAM, SA, ESP and packet port blocks, and the space past the last block.
pub const UNMAPPED_SAMPLES: &[u32] = &[
    0x20,
    0x24,
    0xFFC,
    cam::BASE + 0x3C,
    cam::BASE + 0x68,
    cam::BASE + 0x7C,
    cam::BASE + 0xA8,
    cam::BASE + 0xBC,
    cam::BASE + 0xF0,
    cam::BASE + 0xFFC,
    cam::BASE + 0x1FC,
    cam::BASE + 0x400,
    sa::BASE + 0x64,
    esp::BASE + 0x3C,
    esp::BASE + 0x7FC,
    port::BASE + 0x58,
    port::BASE + 0x7C,
    port::BASE + 0xFC,
    port::BASE + 0x400,
    port::BASE + 0x7FC,
    port::BASE + 0x1800,
    0x6000, // past the packet port block (0x4000..0x6000)
    0x8000,
    BAR_SIZE - 4,
];

/// Asserts that a read and a write (of a non-zero value) at each of `offsets` fail with an error
/// that `expected` accepts; `what` names that error in the panic message.
///
/// # Panics
/// When an access succeeds or fails with another error.
pub fn assert_access_fails<R: RegIo + ?Sized>(
    regs: &mut R,
    offsets: &[u32],
    what: &str,
    expected: impl Fn(&HalError) -> bool,
) {
    for &off in offsets {
        let read = regs.read32(BarOffset(off));
        assert!(
            read.as_ref().is_err_and(&expected),
            "read at {off:#x}: expected {what}, got {read:?}"
        );
        let write = regs.write32(BarOffset(off), 0xA5A5_5A5A);
        assert!(
            write.as_ref().is_err_and(&expected),
            "write at {off:#x}: expected {what}, got {write:?}"
        );
    }
}

/// Asserts that reads and writes at each of `misaligned` fail with
/// [`HalError::Misaligned`], and at each of `out_of_range` with
/// [`HalError::OutOfBounds`] naming the backend's size.
///
/// # Panics
/// When a backend lets one of these accesses through or reports another error.
pub fn assert_bad_offsets_rejected<R: RegIo + ?Sized>(
    regs: &mut R,
    misaligned: &[u32],
    out_of_range: &[u32],
) {
    assert_access_fails(regs, misaligned, "Misaligned", |e| {
        matches!(e, HalError::Misaligned { .. })
    });
    let size = regs.size();
    assert_access_fails(
        regs,
        out_of_range,
        "OutOfBounds",
        |e| matches!(e, HalError::OutOfBounds { size: s, .. } if *s == size),
    );
}

/// Asserts that each of `holes` reads [`UNMAPPED_PATTERN`], before and after
/// a write to it (writes to unmapped offsets are dropped).
///
/// # Panics
/// When a hole reads anything else or an access fails.
pub fn assert_unmapped<R: RegIo + ?Sized>(regs: &mut R, holes: &[u32]) {
    for &off in holes {
        let before = regs.read32(BarOffset(off)).ok();
        assert_eq!(before, Some(UNMAPPED_PATTERN), "offset {off:#x}");
        if let Err(e) = regs.write32(BarOffset(off), 0x5555_AAAA) {
            panic!("write at {off:#x}: {e}");
        }
        let after = regs.read32(BarOffset(off)).ok();
        assert_eq!(
            after,
            Some(UNMAPPED_PATTERN),
            "offset {off:#x} after a write"
        );
    }
}
