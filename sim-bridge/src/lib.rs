//! Simulated cards behind [`hal::RegIo`], and [`frames`]: frames for their packet port
//! blocks (crafted to reach every parser branch, seeded random, mutated).
//!
//! * [`model::ModelCard`]: the reference model, bit-accurate to `hdl/CARD.md`,
//!   fast, and the embedded default (no Verilator needed).
//! * `verilator::RtlCard` (feature `verilator`): the RTL in `hdl/`, built by
//!   Verilator, with the data-path lookup port and a clock-cycle counter.
//! * [`bridge::PortBridge`] (Linux): a simulated card's two Ethernet ports on two real
//!   network interfaces.

#[cfg(target_os = "linux")]
pub mod bridge;
pub mod model;
mod model_crypto;
pub mod model_port;
#[cfg(feature = "verilator")]
pub mod verilator;

// Frames for tests of either card (no feature needed).
pub mod frames;
