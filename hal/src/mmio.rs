//! A memory-mapped register window: 32-bit volatile accesses through a raw
//! pointer, shared by the PCI resource-file backend ([`crate::pci`]) and the
//! VFIO backend (`crate::vfio`).
//!
//! The window never hands out a Rust reference into the mapped memory: a BAR
//! is device memory that changes under our feet and whose reads have side
//! effects, so every access is one `read_volatile`/`write_volatile` of a whole
//! aligned `u32`, and the value is converted from/to little endian (PCI's byte
//! order) at the access.
//!
//! Two kinds of backing memory exist:
//! * [`MmioWindow::from_mmap`]: a shared mapping of a BAR (or of an ordinary
//!   file standing in for one in tests);
//! * [`MmioWindow::from_words`]: an ordinary heap buffer. Nothing in this path
//!   makes a system call, so the same access code runs under Miri
//!   (`cargo +nightly miri test -p hal mmio`).

// This module is one of the two places in the workspace that hold `unsafe`
// (see the crate docs): raw-pointer volatile access to mapped device memory
// cannot be written without it. Every block carries a `SAFETY` comment.
#![allow(unsafe_code)]

use std::fmt;
use std::ptr::NonNull;

use crate::io::{check_access, BarOffset, HalError};

/// What keeps the window's memory alive.
enum Backing {
    /// A shared mapping, held only to keep it alive; unmapped when dropped.
    Mmap { _map: memmap2::MmapRaw },
    /// A heap buffer leaked from a `Box<[u32]>`; `words` elements long, freed
    /// in `Drop` through `Box::from_raw`.
    Heap { words: usize },
}

/// A window of 32-bit registers at a fixed address range.
///
/// Invariants: `base` is valid for reads and writes of `len` bytes for as long
/// as the window lives, and is 4-byte aligned; `len` is a multiple of 4 (a
/// trailing partial word is never accessed because [`check_access`] rejects
/// it).
pub struct MmioWindow {
    base: NonNull<u8>,
    len: usize,
    backing: Backing,
}

// SAFETY: the window exclusively owns its memory (the mapping or the leaked
// box); nothing else in the process holds a pointer to it, so moving the owner
// to another thread moves all access with it. Device-side changes to a BAR are
// not a Rust data race (volatile accesses to MMIO). `MmioWindow` is
// deliberately not `Sync`: concurrent volatile accesses to a heap buffer would
// be a data race.
unsafe impl Send for MmioWindow {}

impl MmioWindow {
    /// A window over a shared mapping. The mapping's address must be 4-byte
    /// aligned (any `mmap` result is page aligned unless a non-aligned file
    /// offset was asked for).
    ///
    /// # Errors
    /// [`HalError::Open`] when the mapping is empty or not 4-byte aligned.
    pub fn from_mmap(map: memmap2::MmapRaw) -> Result<MmioWindow, HalError> {
        let Some(base) = NonNull::new(map.as_mut_ptr()) else {
            return Err(HalError::Open("mmap returned a null mapping".into()));
        };
        if base.as_ptr().align_offset(4) != 0 {
            return Err(HalError::Open(format!(
                "mapping at {:p} is not 32-bit aligned; map the region at a page-aligned offset",
                base.as_ptr()
            )));
        }
        let len = map.len() & !3;
        Ok(MmioWindow {
            base,
            len,
            backing: Backing::Mmap { _map: map },
        })
    }

    /// A window over an ordinary heap buffer holding `words` (word `i` sits at
    /// byte offset `4 * i`). Used by tests and under Miri; makes no system
    /// call.
    #[must_use]
    pub fn from_words(words: Vec<u32>) -> MmioWindow {
        let count = words.len();
        let raw: *mut [u32] = Box::into_raw(words.into_boxed_slice());
        // `Box::into_raw` never returns null; an empty box gives a dangling,
        // well-aligned, non-null pointer, and `len == 0` means it is never
        // dereferenced.
        let base = NonNull::new(raw.cast::<u8>()).unwrap_or(NonNull::dangling());
        MmioWindow {
            base,
            len: count * 4,
            backing: Backing::Heap { words: count },
        }
    }

    /// Size of the window in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Size of the window in bytes, as [`RegIo::size`](crate::RegIo::size) reports it.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.len as u64
    }

    /// Whether the window has no registers at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the memory is a real mapping (as opposed to a heap buffer).
    #[must_use]
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::Mmap { .. })
    }

    /// Read the little-endian 32-bit register at `offset` (relative to the
    /// window) with one volatile load.
    ///
    /// # Errors
    /// [`HalError::Misaligned`] or [`HalError::OutOfBounds`].
    pub fn read32(&self, offset: BarOffset) -> Result<u32, HalError> {
        let off = check_access(offset, self.len as u64)?;
        // SAFETY: `check_access` guarantees `off + 4 <= len` and `off % 4 ==
        // 0`; `base` is valid for `len` bytes and 4-byte aligned (struct
        // invariant), so `base + off` is in bounds and aligned for a `u32`.
        // No reference into the memory is created.
        let raw = unsafe { self.base.as_ptr().add(off).cast::<u32>().read_volatile() };
        Ok(u32::from_le(raw))
    }

    /// Write `value` little-endian to the 32-bit register at `offset`
    /// (relative to the window) with one volatile store.
    ///
    /// # Errors
    /// [`HalError::Misaligned`] or [`HalError::OutOfBounds`].
    pub fn write32(&mut self, offset: BarOffset, value: u32) -> Result<(), HalError> {
        let off = check_access(offset, self.len as u64)?;
        // SAFETY: as in `read32`: in bounds and aligned by `check_access` and
        // the struct invariant; the memory is writable (shared RW mapping or
        // our own heap buffer), and `&mut self` rules out a concurrent access
        // from this process.
        unsafe {
            self.base
                .as_ptr()
                .add(off)
                .cast::<u32>()
                .write_volatile(value.to_le());
        }
        Ok(())
    }
}

impl Drop for MmioWindow {
    fn drop(&mut self) {
        if let Backing::Heap { words } = self.backing {
            let slice = std::ptr::slice_from_raw_parts_mut(self.base.as_ptr().cast::<u32>(), words);
            // SAFETY: `base`/`words` came from `Box::into_raw` of a
            // `Box<[u32]>` of exactly `words` elements in `from_words`, and
            // this is the only place that turns it back into a box, once.
            drop(unsafe { Box::from_raw(slice) });
        }
        // A `Backing::Mmap` unmaps itself when the field is dropped.
    }
}

impl fmt::Debug for MmioWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioWindow")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

/// A [`RegIo`](crate::RegIo) backend over one [`MmioWindow`] that covers the whole BAR.
///
/// [`crate::pci::PciResourceCard`] is one of these over a `resourceN` mapping;
/// tests can build one over a heap buffer with [`MmioRegs::from_words`].
#[derive(Debug)]
pub struct MmioRegs {
    window: MmioWindow,
    name: String,
}

impl MmioRegs {
    /// Registers in `window`, described as `name` (e.g. `pci:/sys/...`).
    #[must_use]
    pub fn new(window: MmioWindow, name: impl Into<String>) -> MmioRegs {
        MmioRegs {
            window,
            name: name.into(),
        }
    }

    /// Registers over a heap buffer holding `words` (no system calls; Miri
    /// can run it).
    #[must_use]
    pub fn from_words(words: Vec<u32>, name: impl Into<String>) -> MmioRegs {
        MmioRegs::new(MmioWindow::from_words(words), name)
    }

    /// The underlying window.
    #[must_use]
    pub fn window(&self) -> &MmioWindow {
        &self.window
    }
}

crate::io::regio_by_window!(MmioRegs, window);

#[cfg(test)]
mod tests {
    //! These tests use heap windows only, so Miri can run them.
    use super::*;
    use crate::io::RegIo;

    #[test]
    fn heap_window_reads_what_it_was_given_and_keeps_writes() {
        let mut w = MmioWindow::from_words(vec![0x1122_3344, 0xFFFF_FFFF, 0, 7]);
        assert_eq!(w.len(), 16);
        assert!(!w.is_mapped());
        assert_eq!(w.read32(BarOffset(0)).unwrap(), 0x1122_3344);
        assert_eq!(w.read32(BarOffset(4)).unwrap(), 0xFFFF_FFFF);
        w.write32(BarOffset(8), 0xDEAD_BEEF).unwrap();
        assert_eq!(w.read32(BarOffset(8)).unwrap(), 0xDEAD_BEEF);
        assert_eq!(w.read32(BarOffset(12)).unwrap(), 7);
    }

    #[test]
    fn heap_window_rejects_misaligned_and_out_of_range_offsets() {
        let mut w = MmioRegs::from_words(vec![0; 4], "heap");
        crate::conformance::assert_bad_offsets_rejected(
            &mut w,
            &[1, 2, 3, 5, 15],
            &[16, 20, 0xFFFF_FFFC],
        );
        // Nothing was written by the rejected accesses.
        for off in (0..16).step_by(4) {
            assert_eq!(w.read32(BarOffset(off)).unwrap(), 0);
        }
    }

    #[test]
    fn empty_window_has_no_registers() {
        let w = MmioWindow::from_words(Vec::new());
        assert!(w.is_empty());
        assert!(matches!(
            w.read32(BarOffset(0)),
            Err(HalError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn mmio_regs_is_a_send_regio() {
        fn assert_send<T: Send>(_: &T) {}
        let mut r: Box<dyn RegIo> = Box::new(MmioRegs::from_words(vec![0; 8], "heap"));
        assert_send(&r);
        r.write32(BarOffset(28), 0x5354_4331).unwrap();
        assert_eq!(r.read32(BarOffset(28)).unwrap(), 0x5354_4331);
        assert_eq!(r.size(), 32);
        assert_eq!(r.describe(), "heap");
        // Move it to another thread and keep using it there.
        let v = std::thread::spawn(move || r.read32(BarOffset(28)).unwrap())
            .join()
            .unwrap();
        assert_eq!(v, 0x5354_4331);
    }
}
