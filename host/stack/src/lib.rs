//! host: the stack around the state core (the `cluster-core` crate, re-exported as [`core`]):
//! the daemon `clusterd` (replication transport, Raft, sockets, control socket) and the CLI
//! `hwctl`, and the lab around them ([`lab`]: the demo, the traffic generator and the cluster
//! launcher).

#![forbid(unsafe_code)]

/// The state core (the `cluster-core` crate), re-exported under its old path.
pub use cluster_core as core;
pub mod cli_docs;
pub mod ctl_view;
pub mod daemon;
pub mod device;
pub mod filter;
pub mod lab;
pub mod out;
pub mod regs_report;
pub mod secret_arg;
pub mod sync;
