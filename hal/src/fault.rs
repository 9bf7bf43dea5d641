//! A fault-injecting wrapper around any [`RegIo`] backend, for tests of the
//! driver's error paths.

use crate::io::{BarOffset, HalError, RegIo};

/// A fault to inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Reads of `offset` always have these bits set (e.g. a stuck BUSY bit).
    StuckBits {
        /// Register affected.
        offset: BarOffset,
        /// Bits forced to 1.
        bits: u32,
    },
    /// Reads of `offset` return `value`'s field bits instead of the real ones:
    /// `(real & !mask) | (value & mask)`.
    ForceBits {
        /// Register affected.
        offset: BarOffset,
        /// Bits forced.
        mask: u32,
        /// Their forced value.
        value: u32,
    },
    /// Every read returns all ones: the device fell off the bus.
    /// `after_reads` real reads go through first.
    AllOnes {
        /// Reads that still succeed before the device disappears.
        after_reads: u64,
    },
    /// Flip `bits` in every read of `offset`.
    FlipBits {
        /// Register affected.
        offset: BarOffset,
        /// Bits flipped.
        bits: u32,
    },
    /// Every access fails with a bus error once `after` accesses have passed.
    BusError {
        /// Accesses that still succeed.
        after: u64,
    },
    /// Writes to `offset` are silently dropped.
    DropWrites {
        /// Register affected.
        offset: BarOffset,
    },
}

/// Wraps a backend and applies [`Fault`]s to its accesses.
pub struct FaultInjector<R> {
    inner: R,
    faults: Vec<Fault>,
    reads: u64,
    accesses: u64,
}

impl<R: RegIo> FaultInjector<R> {
    /// Wrap `inner` with no faults yet.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            faults: Vec::new(),
            reads: 0,
            accesses: 0,
        }
    }

    /// Add a fault; it applies from the next access on.
    pub fn inject(&mut self, f: Fault) {
        self.faults.push(f);
    }

    /// Remove every fault.
    pub fn clear(&mut self) {
        self.faults.clear();
    }

    /// The wrapped backend.
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Reads performed so far.
    #[must_use]
    pub fn reads(&self) -> u64 {
        self.reads
    }

    fn bus_error(&self, offset: BarOffset) -> Option<HalError> {
        self.faults.iter().find_map(|f| match f {
            Fault::BusError { after } if self.accesses > *after => Some(HalError::Bus {
                offset,
                detail: "injected bus error".into(),
            }),
            _ => None,
        })
    }
}

impl<R: RegIo> RegIo for FaultInjector<R> {
    fn read32(&mut self, offset: BarOffset) -> Result<u32, HalError> {
        self.accesses += 1;
        self.reads += 1;
        if let Some(e) = self.bus_error(offset) {
            return Err(e);
        }
        let mut v = self.inner.read32(offset)?;
        for f in &self.faults {
            match *f {
                Fault::StuckBits { offset: o, bits } if o == offset => v |= bits,
                Fault::ForceBits {
                    offset: o,
                    mask,
                    value,
                } if o == offset => v = (v & !mask) | (value & mask),
                Fault::FlipBits { offset: o, bits } if o == offset => v ^= bits,
                Fault::AllOnes { after_reads } if self.reads > after_reads => v = u32::MAX,
                _ => {}
            }
        }
        Ok(v)
    }

    fn write32(&mut self, offset: BarOffset, value: u32) -> Result<(), HalError> {
        self.accesses += 1;
        if let Some(e) = self.bus_error(offset) {
            return Err(e);
        }
        if self
            .faults
            .iter()
            .any(|f| matches!(f, Fault::DropWrites { offset: o } if *o == offset))
        {
            return Ok(());
        }
        self.inner.write32(offset, value)
    }

    crate::io::forward_to_inner!("faulty");
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mmio::MmioRegs;

    /// A heap register file of `words` zeroed words, enough to test the wrapper.
    fn mem(words: usize) -> MmioRegs {
        MmioRegs::from_words(vec![0; words], "mem")
    }

    #[test]
    fn faults_apply_as_described() {
        let mut f = FaultInjector::new(mem(16));
        f.write32(BarOffset(4), 0x10).unwrap();
        f.inject(Fault::StuckBits {
            offset: BarOffset(4),
            bits: 1,
        });
        assert_eq!(f.read32(BarOffset(4)).unwrap(), 0x11);
        f.inject(Fault::FlipBits {
            offset: BarOffset(4),
            bits: 0x10,
        });
        assert_eq!(f.read32(BarOffset(4)).unwrap(), 0x01);
        f.clear();
        f.inject(Fault::DropWrites {
            offset: BarOffset(8),
        });
        f.write32(BarOffset(8), 7).unwrap();
        assert_eq!(f.read32(BarOffset(8)).unwrap(), 0);
        f.clear();
        let r = f.reads();
        f.inject(Fault::AllOnes { after_reads: r + 1 });
        assert_eq!(f.read32(BarOffset(4)).unwrap(), 0x10);
        assert_eq!(f.read32(BarOffset(4)).unwrap(), u32::MAX);
        f.clear();
        f.inject(Fault::BusError { after: 0 });
        assert!(matches!(f.read32(BarOffset(0)), Err(HalError::Bus { .. })));
    }

    #[test]
    fn misaligned_and_out_of_range_errors_pass_through() {
        let mut m = FaultInjector::new(mem(4));
        crate::conformance::assert_bad_offsets_rejected(&mut m, &[2], &[16, u32::MAX - 3]);
    }
}
