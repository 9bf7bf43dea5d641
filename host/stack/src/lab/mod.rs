//! The lab around the daemon: a whole cluster of `clusterd` processes on loopback
//! ([`cluster`]), the traffic wire that feeds them ([`traffic`]), the demo that drives and
//! reports on them ([`demo`]) and its SVG drawing ([`svg`]). Nothing here runs inside a node;
//! a node uses only [`traffic::handshake`] (for its `synthesize` benchmark command).

pub mod cluster;
pub mod demo;
pub mod svg;
pub mod traffic;
