//! Replication transport between cluster nodes.
//!
//! - [`frame`]: the versioned, authenticated wire format (parsed strictly).
//! - [`key`]: the cluster key (zeroized) and per-incarnation frame keys.
//! - [`identity`]: per-node Ed25519 identities that sign every hello (and with it the X25519
//!   share from which the pair key of every other frame comes).
//! - [`endpoint`]: the sans-I/O state machine (batching, sequence numbers, acks,
//!   retransmission, replay protection), driven with time passed in.
//! - [`fault`]: a fault injector (loss, duplication, partitions) between endpoint and socket.
//! - [`udp`]: the tokio UDP driver used by `clusterd` on loopback or a LAN.
//!
//! The transport carries opaque records; the daemon puts the state core's encoded events (and its
//! own control records) in them. SA key material travels only inside sealed frames.

pub mod endpoint;
pub mod fault;
pub mod frame;
pub mod identity;
pub mod key;
pub mod udp;

pub use endpoint::{
    Endpoint, EndpointConfig, PeerStatus, SendError, SyncEvent, SyncStats, Transmit,
};
pub use fault::{FaultConfig, FaultInjector};
pub use frame::{FrameError, RecordBatch};
pub use identity::{IdentityError, NodeIdentity, PublicKey};
pub use key::{ClusterKey, KeyError};
pub use udp::UdpDriver;
