//! The state core: the patent's method (seeds: figures 2, 4, 5, 6; claims 1-13) as a sans-I/O
//! library. It owns no sockets and no clock: the caller passes time ([`Millis`]) and bytes in and
//! takes replication messages out, so a seeded simulation (the `cluster-sim` crate, test support)
//! drives it deterministically.
//!
//! # API summary (stable; the daemon codes against this)
//!
//! Identifiers and newtypes ([`ids`]): [`NodeId`], [`DistributionId`], [`Epoch`], [`Millis`],
//! [`IdCount`] (a power of two, 1..=4096, default 256).
//!
//! Entries ([`entry`]): [`FlowKey`] (TCP/UDP 5-tuple in canonical endpoint order, ICMP id, ESP
//! source + destination + SPI, ISAKMP peer pair + initiator cookie + message id, TLS session /
//! HTTP cookie digest: every key holds what its identifier is hashed from) and
//! [`Entry`] (key, distribution identifier, [`ConnState`], [`Action`], rule index, optional
//! [`UserId`], [`SaRef`], [`Nat`], creator node, version, timeout, local counters).
//!
//! Distribution ([`distribution`]): [`Distributor::new`]`(secret, n)` computes the keyed
//! SipHash-1-3 identifier; `for_key` (every key's, recomputed from the key alone: claim 12),
//! `for_ipsec_peers`; both directions of a flow and both SAs plus the IKE traffic of a tunnel
//! get one identifier. [`consistency`]: `Node::check_identifiers` recomputes every entry's
//! identifier and returns those stored under another.
//!
//! Tables: [`CommonTable`] ([`common`], O(1) upsert/clear, O(k) `select(dist)`, per-identifier
//! digests), the [`NodeSpecificTable`] trait ([`node_table`]) with [`SoftwareTable`] (claim 19),
//! [`SimCard`] (small-capacity card stand-in), [`CardTable`] ([`card_table`], the card through
//! `driver::Card<R>`: one `FLUSH_DID` for the lost identifiers, hit bits feed idle timeouts via
//! `sync_hits`) and [`TieredTable`] (card + software overflow: a full CAM loses nothing, hot
//! entries are promoted into the card by `maintain`).
//! //!
//! Packets ([`packet`]): [`parse_packet`]`(bytes, Framing) -> Result<ParsedPacket, ParseError>`.
//! Rules ([`rules`]): [`RuleSet::parse`]`(text)`; first match wins; format in `docs/rules.md`.
//!
//! Events ([`events`]): [`Message`] `{ sender, incarnation, seq, event }` with
//! [`Message::encode`] / [`Message::decode`] (strict, never panics; an IPv4 TCP add is 35-40
//! bytes). [`Event`]: `Add`, `Update`, `Clear`, `SaState`, `Snapshot`, `Digest`,
//! `RepairRequest`. `seq` counts a sender's broadcasts from 1 (0 = unsequenced, addressed);
//! receivers drop duplicates and count gaps; versions make re-application harmless; digests,
//! repair requests and snapshots (from the current owner only) repair whatever was lost.
//!
//! The node ([`node`]): [`Node<T: NodeSpecificTable>`](Node):
//! - `Node::new(NodeConfig, table)`;
//! - `handle_packet(now, bytes) -> Verdict` (figure 2);
//! - `apply_message(now, &Message) -> Result<Applied, ApplyError>` (remote events, claims 4-6);
//! - `drain_outbox() -> Vec<Outgoing>` (local events to send: `Outgoing { dest, message }`);
//! - `begin_reallocation(now, &Allocation)` (install gained ids: make) then
//!   `finish_reallocation(epoch)` (flip, flush lost ids: break), or `apply_allocation` for both;
//!   `handover_snapshots(&Allocation)` queues snapshots of the ids this node is about to lose;
//! - `select(dist)` (entries of one identifier from the common table), `expire(now)` (idle/close),
//!   `queue_digest()` (anti-entropy), `request_sync()` (a joining node fills its common table),
//!   `install_sa` / `update_sa` / `take_over_sa` / `sa_state` (SA state events, invariant 5),
//!   `check_tables()` (invariant 2), `is_synced()` / `unsynced()` (a joining node's catch-up),
//!   `take_load()` (packets and bytes per identifier, for `balance`), `stats()`, `common()`,
//!   `node_table()`, `allocation()`, `owns(dist)`.
//! - [`Mode::PriorArt`] makes every node's active table hold every entry (figure 1B baseline).
//!
//! Allocation ([`alloc_policy`], pure functions): [`Allocation`], `even_split`, `rebalance`
//! (failure, join, weights, drain), `load_balance` (per-id load, hysteresis), `operator_move`.
//! Reallocation planning ([`realloc`]): `plan(old, new, node) -> ReallocPlan { gained, lost }`.
//!
//! The member ([`member`]): [`member::Member`] over a [`Node`]: `on_records` / `on_record`,
//! `on_datagram` (heartbeats in, consensus messages handed back), `on_peer_restarted`,
//! `on_agreed` (an allocation agreed by consensus), `on_packet -> PacketOutcome`,
//! `tick(Time, &ConsensusView)`, control requests (`request_move`, `set_drained`,
//! `request_rebalance`, `request_resync_all`, `sa_add`, `sa_advance`, `esp_for`, `user_bind`,
//! `user_unbind`), then
//! `drain_outputs()` ([`member::Output`]: records and heartbeats to send, proposals, voter
//! promotions, backlog discards, log lines) and `next_timeout()`. A failed card comes back
//! through `take_card_error` and is replaced with `rebuild_card`.
//!
//! Records ([`record`]): [`Record::parse`]`(bytes) -> Result<Record, RecordError>` and
//! [`Record::emit`]`(&self, &mut Vec<u8>)` for the replication stream (`Event`, `Final`,
//! `ResyncRequest`, `ResyncDone`, `SaKey`, `UserBinding`; key bytes zeroized, never in `Debug`);
//! [`Datagram::parse`] / [`Datagram::emit`] for heartbeats ([`Heartbeat`], 30 bytes and two per node id of its out list) and
//! consensus messages; checked views `RecordView` / `DatagramView` underneath.
//!
//! Users ([`users`], claim 8): an authentication source's bindings of an address to a user
//! with a lifetime ([`users::UserTable`]): replicated, expired on the member's clock, given to
//! the connections the address initiates before a rule's static `user`.
//!
//! Captures: [`pcap`] `read_frames` / `read` / `write` / `write_ng` (pcap and pcapng, every
//! link type in front of IP).

#![forbid(unsafe_code)]

pub mod alloc_policy;
pub mod balance;
pub mod card_table;
pub mod common;
pub mod consistency;
pub mod distribution;
pub mod entry;
pub mod events;
pub mod ids;
pub mod load_report;
pub mod member;
pub mod node;
pub mod node_table;
pub mod packet;
pub mod pcap;
pub mod realloc;
pub mod record;
pub mod rules;
pub mod siphash;
#[cfg(any(test, feature = "proptest"))]
pub mod strategies;
pub mod users;

/// The embedding guide (`docs/embedding.md`), here only so that `cargo test --doc` compiles
/// and runs its code blocks: the guide cannot drift from the crates.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/embedding.md")]
pub struct EmbeddingGuide;

pub use alloc_policy::Allocation;
pub use card_table::CardTable;
pub use common::CommonTable;
pub use distribution::{ClusterSecret, Distributor};
pub use entry::{
    Action, ConnState, Endpoint, Entry, FlowKey, L4Proto, Nat, NatKind, SaRef, UserId,
};
pub use events::{DecodeError, Event, Message};
pub use ids::{DistributionId, Epoch, IdCount, Millis, NodeId};
pub use node::{
    Applied, ApplyError, Destination, Mode, Node, NodeConfig, Outgoing, Stats, Verdict,
};
pub use node_table::{NodeSpecificTable, SimCard, SoftwareTable, TableError, TieredTable};
pub use packet::{parse_packet, Framing, ParseError, ParsedPacket};
pub use realloc::ReallocPlan;
pub use record::{Datagram, Heartbeat, Record, RecordError};
pub use rules::RuleSet;
