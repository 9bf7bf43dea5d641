//! The daemon `clusterd`: one node's runtime (state core, card, replication transport,
//! consensus, control socket and its protocol, wire traffic). The demo, the traffic
//! generator and the cluster launcher live apart, in [`crate::lab`].

pub mod card;

/// The HKDF label that derives the distribution identifiers' keyed-hash secret from the
/// cluster key (`ClusterKey::derive16`): every tool that computes a cluster's identifiers
/// uses it.
pub const DISTRIBUTION_LABEL: &[u8] = b"distribution identifiers";
pub mod config;
pub mod consensus;
pub mod control;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod raft_store;
pub mod wireproto;
