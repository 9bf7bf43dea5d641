//! The register-access trait and its address newtype.

use std::fmt;

/// A byte offset into the card's BAR0 register space.
///
/// Offsets are always 32-bit aligned when they reach a backend; the
/// constructor does not enforce it so that a backend can report the
/// misalignment as an error instead of a panic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BarOffset(pub u32);

impl BarOffset {
    /// The offset `bytes` further on.
    #[must_use]
    pub const fn add(self, bytes: u32) -> BarOffset {
        BarOffset(self.0.wrapping_add(bytes))
    }

    /// The raw byte offset.
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for BarOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BarOffset(0x{:05x})", self.0)
    }
}

impl fmt::Display for BarOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:05x}", self.0)
    }
}

/// Errors a register backend can report.
#[derive(Debug, thiserror::Error)]
pub enum HalError {
    /// The offset lies outside the mapped region.
    #[error("register offset {offset} is outside the {size}-byte BAR")]
    OutOfBounds {
        /// Offending offset.
        offset: BarOffset,
        /// Size of the mapped region in bytes.
        size: u64,
    },
    /// The offset is not 32-bit aligned.
    #[error("register offset {offset} is not 32-bit aligned")]
    Misaligned {
        /// Offending offset.
        offset: BarOffset,
    },
    /// The simulator behind the backend stopped (a Verilator fatal error,
    /// `$stop` or `$finish`); the device is unusable from now on.
    #[error("simulator stopped: {reason}")]
    SimulatorStopped {
        /// What the simulator said.
        reason: String,
    },
    /// The bus transaction itself failed (e.g. an AXI SLVERR/DECERR).
    #[error("bus error at {offset}: {detail}")]
    Bus {
        /// Offset of the failing access.
        offset: BarOffset,
        /// Backend-specific detail.
        detail: String,
    },
    /// Opening or mapping the device failed. The message names the device,
    /// the cause and the fix.
    #[error("{0}")]
    Open(String),
}

/// 32-bit register access to one card's BAR0.
///
/// Object safe and `Send`, so a driver can hold `Box<dyn RegIo>` and move it
/// between threads. Accesses take `&mut self` because simulated backends
/// advance their clock on every access.
pub trait RegIo: Send {
    /// Read the 32-bit register at `offset`.
    ///
    /// # Errors
    /// [`HalError`] when the offset is unaligned or out of range, or the
    /// backend cannot complete the access.
    fn read32(&mut self, offset: BarOffset) -> Result<u32, HalError>;

    /// Write `value` to the 32-bit register at `offset`.
    ///
    /// # Errors
    /// As for [`RegIo::read32`].
    fn write32(&mut self, offset: BarOffset, value: u32) -> Result<(), HalError>;

    /// Size of the register space in bytes.
    fn size(&self) -> u64;

    /// A short human-readable name of the backend and device, e.g.
    /// `model` or `vfio:0000:03:00.0`.
    fn describe(&self) -> String;

    /// Let the device make progress while the driver waits (a simulated
    /// card advances its clock). Real hardware needs nothing.
    fn idle(&mut self) {}
}

impl<T: RegIo + ?Sized> RegIo for Box<T> {
    fn read32(&mut self, offset: BarOffset) -> Result<u32, HalError> {
        (**self).read32(offset)
    }
    fn write32(&mut self, offset: BarOffset, value: u32) -> Result<(), HalError> {
        (**self).write32(offset, value)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn idle(&mut self) {
        (**self).idle();
    }
}

/// Implements [`RegIo`] for a named hardware backend: every access goes to the register window
/// in the field `$window` (anything with `read32`, `write32` and `size`), and `describe` answers
/// with the backend's `name` field.
macro_rules! regio_by_window {
    ($ty:ty, $window:ident) => {
        impl $crate::io::RegIo for $ty {
            fn read32(
                &mut self,
                offset: $crate::io::BarOffset,
            ) -> Result<u32, $crate::io::HalError> {
                self.$window.read32(offset)
            }

            fn write32(
                &mut self,
                offset: $crate::io::BarOffset,
                value: u32,
            ) -> Result<(), $crate::io::HalError> {
                self.$window.write32(offset, value)
            }

            fn size(&self) -> u64 {
                self.$window.size()
            }

            fn describe(&self) -> String {
                self.name.clone()
            }
        }
    };
}
pub(crate) use regio_by_window;

/// The [`RegIo`] methods a wrapper hands to its `inner` backend unchanged (`size`, `idle`),
/// and `describe` as `label(<inner>)`. Expands inside the wrapper's `impl RegIo` block.
macro_rules! forward_to_inner {
    ($label:literal) => {
        fn size(&self) -> u64 {
            self.inner.size()
        }

        fn describe(&self) -> String {
            format!(concat!($label, "({})"), self.inner.describe())
        }

        fn idle(&mut self) {
            self.inner.idle();
        }
    };
}
pub(crate) use forward_to_inner;

/// Check alignment and bounds of an access: the common prologue of every
/// backend.
///
/// # Errors
/// [`HalError::Misaligned`] or [`HalError::OutOfBounds`].
pub fn check_access(offset: BarOffset, size: u64) -> Result<usize, HalError> {
    if !offset.0.is_multiple_of(4) {
        return Err(HalError::Misaligned { offset });
    }
    if u64::from(offset.0) + 4 > size {
        return Err(HalError::OutOfBounds { offset, size });
    }
    Ok(offset.0 as usize)
}
