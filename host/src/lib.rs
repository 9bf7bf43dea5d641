//! host: the state core (entries, distribution identifiers, common and node-specific tables,
//! packet handling, replication events, allocation and reallocation), the daemon `clusterd`
//! and the CLI `hwctl`.
//!
//! The core ([`core`]) is sans-I/O: time and bytes are passed in, messages are taken out.

#![forbid(unsafe_code)]

pub mod core;
pub mod daemon;
pub mod device;
pub mod regs_report;
pub mod sync;
