//! Hardware abstraction layer for the state-offload card.
//!
//! * [`regs`] is the register map: the one description of the card's BAR0 that
//!   both the Rust driver and the Verilog RTL are built from (the RTL includes
//!   `hdl/generated/regmap.vh`, which [`regs::verilog_header`] generates and a
//!   test keeps in step).
//! * [`RegIo`] is the 32-bit register-access trait every backend implements:
//!   the reference model and the Verilator-built RTL in `sim-bridge`, and the
//!   real-hardware backends here.
//! * [`fault::FaultInjector`] wraps any backend to make it misbehave in tests.
//! * `packet` (Linux): raw Ethernet frames on a network interface, for putting a simulated
//!   card's ports on a real network (`sim_bridge::bridge`).
//!
//! This is the only crate (with the Verilator shim) allowed to hold `unsafe`.

pub mod conformance;
pub mod counting;
pub mod fault;
pub mod hw;
pub mod io;
pub mod mmio;
#[cfg(target_os = "linux")]
pub mod packet;
pub mod pci;
pub mod regs;
pub mod sysfs;
#[cfg(target_os = "linux")]
pub mod vfio;

pub use io::{BarOffset, HalError, RegIo, Wires};
