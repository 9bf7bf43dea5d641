//! The register-access trait and its address newtype.

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

/// `Debug` (`Name(0x…)`) and `Display` (`0x…`) of a number newtype in hex, zero-padded
/// to `digits` digits: how register offsets and other wire numbers are shown.
///
/// ```
/// pub struct Spi(pub u32);
/// hal::hex_newtype_fmt!(Spi, 8);
/// assert_eq!(format!("{:?}", Spi(0xbeef)), "Spi(0x0000beef)");
/// assert_eq!(Spi(0x1234_5678).to_string(), "0x12345678");
/// assert_eq!(format!("{:?}", hal::BarOffset(0x4_0a0)), "BarOffset(0x040a0)");
/// assert_eq!(hal::BarOffset(0x24).to_string(), "0x00024");
/// ```
#[macro_export]
macro_rules! hex_newtype_fmt {
    ($t:ident, $digits:literal) => {
        impl ::std::fmt::Debug for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}(0x{:0w$x})", stringify!($t), self.0, w = $digits)
            }
        }

        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "0x{:0w$x}", self.0, w = $digits)
            }
        }
    };
}

hex_newtype_fmt!(BarOffset, 5);

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
    /// A frame was fed to a port the card does not have.
    #[error("the card has no port {port} (ports are 0 = outside and 1 = inside)")]
    NoPort {
        /// The port asked for.
        port: u8,
    },
}

/// The Ethernet wires of a card that a backend simulates (the reference model, the RTL under
/// Verilator). A real card's wires are cables: its backend has none of this.
///
/// Frames are whole Ethernet frames without the FCS. The card handles a frame completely
/// before [`Wires::wire_rx`] returns, so the frames it sent because of it are waiting in
/// [`Wires::wire_tx`] by then.
pub trait Wires {
    /// Feed `frame` into port `port`'s receive wire (0 = outside, 1 = inside).
    ///
    /// # Errors
    /// [`HalError::NoPort`] for a port other than 0 or 1; simulator failures as for
    /// [`RegIo::read32`].
    fn wire_rx(&mut self, port: u8, frame: &[u8]) -> Result<(), HalError>;

    /// The oldest frame the card sent out of a port and nobody took yet, with its port.
    fn wire_tx(&mut self) -> Option<(u8, Vec<u8>)>;
}

/// 32-bit register access to one card's BAR0.
///
/// Object safe and `Send`, so a driver can hold `Box<dyn RegIo>` and move it
/// between threads. Accesses take `&mut self` because simulated backends
/// advance their clock on every access.
///
/// # Examples
///
/// A backend is four methods. Sixteen plain registers, the shape of a test double:
///
/// ```
/// use hal::io::check_access;
/// use hal::{BarOffset, HalError, RegIo};
///
/// struct Scratch([u32; 16]);
///
/// impl RegIo for Scratch {
///     fn read32(&mut self, offset: BarOffset) -> Result<u32, HalError> {
///         Ok(self.0[check_access(offset, self.size())? / 4])
///     }
///     fn write32(&mut self, offset: BarOffset, value: u32) -> Result<(), HalError> {
///         self.0[check_access(offset, self.size())? / 4] = value;
///         Ok(())
///     }
///     fn size(&self) -> u64 {
///         64
///     }
///     fn describe(&self) -> String {
///         "scratch".into()
///     }
/// }
///
/// let mut regs = Scratch([0; 16]);
/// regs.write32(BarOffset(8), 0xfeed)?;
/// assert_eq!(regs.read32(BarOffset(8))?, 0xfeed);
/// assert!(matches!(regs.read32(BarOffset(6)), Err(HalError::Misaligned { .. })));
/// assert!(matches!(regs.read32(BarOffset(64)), Err(HalError::OutOfBounds { .. })));
/// # Ok::<(), HalError>(())
/// ```
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

    /// The card's Ethernet wires, when this backend simulates them; `None` for real hardware
    /// (and for wrappers that do not pass them on).
    fn wires(&mut self) -> Option<&mut dyn Wires> {
        None
    }
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
    fn wires(&mut self) -> Option<&mut dyn Wires> {
        (**self).wires()
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

        fn wires(&mut self) -> Option<&mut dyn $crate::io::Wires> {
            self.inner.wires()
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
