//! The daemon `clusterd`: one node's runtime (state core, card, replication transport,
//! consensus, control socket and its protocol, wire traffic). The demo, the traffic
//! generator and the cluster launcher live apart, in [`crate::lab`].

pub mod card;
pub mod config;
pub mod consensus;
pub mod control;
pub mod node;
pub mod protocol;
pub mod raft_store;
pub mod wireproto;
