//! A [`RegIo`] wrapper that counts the bus transactions it forwards, for benchmarks that report
//! reads and writes per driver operation.

use crate::io::{BarOffset, HalError, RegIo};

/// Forwards every access to `inner` and counts it.
pub struct Counting<R> {
    /// The wrapped backend.
    pub inner: R,
    /// Register reads forwarded so far.
    pub reads: u64,
    /// Register writes forwarded so far.
    pub writes: u64,
}

impl<R> Counting<R> {
    /// Wraps `inner` with both counters at 0.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            reads: 0,
            writes: 0,
        }
    }
}

impl<R: RegIo> RegIo for Counting<R> {
    fn read32(&mut self, offset: BarOffset) -> Result<u32, HalError> {
        self.reads += 1;
        self.inner.read32(offset)
    }
    fn write32(&mut self, offset: BarOffset, value: u32) -> Result<(), HalError> {
        self.writes += 1;
        self.inner.write32(offset, value)
    }
    crate::io::forward_to_inner!("counting");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmio::MmioRegs;

    #[test]
    fn counts_what_it_forwards() {
        let mut c = Counting::new(MmioRegs::from_words(vec![0; 16], "heap"));
        c.write32(BarOffset(4), 7).unwrap();
        assert_eq!(c.read32(BarOffset(4)).unwrap(), 7);
        assert_eq!(c.read32(BarOffset(8)).unwrap(), 0);
        assert_eq!((c.reads, c.writes), (2, 1));
        assert!(c.read32(BarOffset(2)).is_err(), "errors still come through");
        assert_eq!(c.reads, 3);
    }
}
