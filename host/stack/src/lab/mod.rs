//! The lab around the daemon: a whole cluster of `clusterd` processes on loopback
//! ([`cluster`]), the traffic wire that feeds them ([`traffic`]), the demo that drives and
//! reports on them ([`demo`]) and its SVG drawing ([`svg`]); and the same cluster as a
//! firewall between real network namespaces ([`netns`], `clusterd lab`), and the Linux
//! kernel with nftables and conntrackd as the baseline it is measured against ([`kernel`]). Nothing here runs inside a node;
//! a node uses only [`traffic::handshake`] (for its `synthesize` benchmark command).

pub mod cluster;
pub mod demo;
pub mod kernel;
pub mod netns;
pub mod run;
pub mod svg;
pub mod traffic;
