//! The daemon `clusterd`: one node's runtime (state core, card, replication transport,
//! consensus, control socket, wire traffic), and the demo that runs a whole cluster as separate
//! processes on loopback.

pub mod card;
pub mod cluster;
pub mod config;
pub mod consensus;
pub mod control;
pub mod demo;

pub mod node;
pub mod svg;
pub mod traffic;
pub mod wireproto;
