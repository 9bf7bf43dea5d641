//! The sans-I/O replication endpoint: a pure state machine with time passed in.
//!
//! The caller feeds it received datagrams ([`Endpoint::handle_frame`]) and the current time
//! ([`Endpoint::handle_timeout`]), queues records ([`Endpoint::send_record`]) and takes out frames
//! to send ([`Endpoint::poll_transmit`]), delivered records ([`Endpoint::poll_event`]) and the next
//! deadline ([`Endpoint::poll_timeout`]). A seeded simulation or a tokio UDP socket drives it alike.
//!
//! Per peer there is one reliable, ordered stream of records in each direction. Records are
//! batched into data frames (closed when full or `flush_interval` after the first record), every
//! batch has a per-stream sequence number, the receiver acknowledges cumulatively plus a 64-bit
//! selective bitmap, and the sender retransmits after an adaptive timeout with backoff. A stream
//! is bound to both ends' incarnations: when a peer restarts, both directions restart from batch 0
//! and whatever was not yet acknowledged is sent again to the new incarnation.
//!
//! Every frame is sealed with AES-256-GCM under the sender's per-incarnation frame key, with the
//! header as AAD and nonce = sender id + frame sequence number (never reused: the sequence only
//! grows within an incarnation, and each incarnation has its own key). Receivers reject and count
//! garbled, forged, misdirected and replayed frames (a 1024-frame sliding window per sender, and
//! frames of any incarnation but the accepted one).
//!
//! A peer's incarnation is accepted only through a challenge: every endpoint keeps a fresh
//! challenge per peer (random per process, renewed whenever it accepts a new incarnation of that
//! peer) and sends it in its hellos; frames of an incarnation count (mark the peer alive, deliver
//! anything) only after that incarnation sent a hello echoing the current challenge, sealed
//! under its frame key. So frames captured earlier are refused after either side restarted, and
//! a peer whose incarnation went backwards (state directory lost, clock set back) rejoins like
//! any restarted peer. Frames of another incarnation of a peer interleaved with the accepted
//! one, or frames from this node's own id, mean a duplicate node id (or replays): reported as
//! [`SyncEvent::DuplicateId`] on both sides, and the accepted incarnation is kept.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use ring::aead::{Aad, LessSafeKey, Nonce};
use ring::rand::SecureRandom;
use serde::Serialize;
use zeroize::Zeroize;

use super::frame::{
    self, AckRepr, FrameError, Header, HelloRepr, Kind, RecordBatch, DATA_PREFIX, FRAME_OVERHEAD,
    HEADER_LEN, HELLO_ANSWER, MAX_FRAME, TAG_LEN,
};
use super::identity::{NodeIdentity, PublicKey, SIG_LEN};
use super::key::{ClusterKey, PairKeys};
use crate::core::ids::NodeId;

/// Tunables of an [`Endpoint`].
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// This node.
    pub me: NodeId,
    /// This process lifetime's incarnation: it selects the frame key, so it must never repeat
    /// (the daemon uses max(previous + 1, wall-clock microseconds), kept in its state
    /// directory). Peers accept a new one, even a lower one, once it answered their challenge.
    /// Never 0.
    pub incarnation: u64,
    /// Target frame size in bytes; a batch is closed when the next record would exceed it. A
    /// single record larger than this still goes out alone in a bigger frame (up to 65,000).
    pub max_frame: usize,
    /// A partly filled batch is sent at the latest this long after its first record.
    pub flush_interval: Duration,
    /// Acks are delayed at most this long (every 4th batch is acked at once).
    pub ack_delay: Duration,
    /// Unacknowledged batches per peer before records wait in the backlog.
    pub max_in_flight: usize,
    /// Lower bound of the retransmission timeout.
    pub rto_min: Duration,
    /// Upper bound of the retransmission timeout (after backoff).
    pub rto_max: Duration,
    /// Interval of hellos to a peer whose incarnation is unknown.
    pub hello_interval: Duration,
    /// Bytes that may wait per peer (backlog plus open batch) before `send_record` refuses.
    pub max_backlog_bytes: usize,
    /// This node's identity: with one, frames are version 4 (hellos signed and accepted only
    /// when they verify under [`Self::peer_keys`], every other frame sealed with the pair key
    /// that the two nodes' hellos agreed); without, frames are version 2 and any holder of the
    /// cluster key can speak as any node.
    pub identity: Option<std::sync::Arc<NodeIdentity>>,
    /// The public key of every peer (with [`Self::identity`]).
    pub peer_keys: BTreeMap<NodeId, PublicKey>,
}

impl EndpointConfig {
    /// Defaults for loopback or a LAN: 1400-byte frames, 1 ms flush, 128 batches in flight (a receiver never has more than ~4,500 events queued from one peer, so heartbeats behind them are late by milliseconds, not by the failure threshold).
    pub fn new(me: NodeId, incarnation: u64) -> Self {
        Self {
            me,
            incarnation: incarnation.max(1),
            max_frame: 1400,
            flush_interval: Duration::from_millis(1),
            ack_delay: Duration::from_millis(1),
            max_in_flight: 128,
            rto_min: Duration::from_millis(15),
            rto_max: Duration::from_millis(250),
            hello_interval: Duration::from_millis(25),
            max_backlog_bytes: 256 << 20,
            identity: None,
            peer_keys: BTreeMap::new(),
        }
    }
}

/// Something the endpoint has for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEvent {
    /// Records from `from`, in the order it sent them, each exactly once.
    Records {
        /// Sender.
        from: NodeId,
        /// The records.
        batch: RecordBatch,
    },
    /// An unreliable datagram.
    Datagram {
        /// Sender.
        from: NodeId,
        /// Payload.
        payload: Vec<u8>,
    },
    /// A peer was heard under a new incarnation, which answered this node's challenge
    /// (`restarted`: it had another one before, so it lost its state and needs a resync). The
    /// new incarnation may be lower than the old one (its clock or state directory went back).
    PeerIncarnation {
        /// The peer.
        peer: NodeId,
        /// Its new incarnation.
        incarnation: u64,
        /// Whether an earlier incarnation was known.
        restarted: bool,
    },
    /// Two processes seem to run with the node id `node`: authenticated frames of `other`
    /// arrive interleaved with those of `incarnation` (or replayed frames of an old incarnation
    /// do). `reported_by` is the node that saw it (this node, or a peer that told this node its
    /// id is duplicated). Nothing changes: an endpoint keeps the incarnation it accepted and
    /// never accepts the other while it does not answer the challenge. Log it loudly.
    DuplicateId {
        /// The node id that two processes use.
        node: NodeId,
        /// The incarnation accepted (this node's own, when `node` is this node).
        incarnation: u64,
        /// The other incarnation heard with the same id.
        other: u64,
        /// Who noticed.
        reported_by: NodeId,
    },
}

/// A frame to put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination node.
    pub to: NodeId,
    /// The sealed frame.
    pub bytes: Vec<u8>,
}

/// Why a record was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The destination is not a configured peer.
    #[error("{0} is not a configured peer")]
    UnknownPeer(NodeId),
    /// Empty records cannot be framed.
    #[error("empty record")]
    Empty,
    /// The record does not fit the largest frame.
    #[error("record of {len} bytes exceeds the largest frame payload of {max} bytes")]
    TooLarge {
        /// Record length.
        len: usize,
        /// Largest record.
        max: usize,
    },
    /// The peer's backlog is full (it is not acknowledging).
    #[error("backlog to {0} is full; the peer is not acknowledging")]
    Backlog(NodeId),
    /// The frame sequence space is exhausted (never in practice); restart the node.
    #[error("frame sequence numbers exhausted; restart the node")]
    SeqExhausted,
    /// With node identities: no pair key with the peer yet (none of its hellos was accepted).
    #[error("no pair key with {0} yet: its hello has not been accepted")]
    NoPairKey(NodeId),
}

/// Counters of an endpoint (all monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncStats {
    /// Frames sealed and handed out.
    pub frames_sent: u64,
    /// Bytes of those frames.
    pub bytes_sent: u64,
    /// Data frames among them (including retransmissions).
    pub data_frames_sent: u64,
    /// Data frames sent again.
    pub retransmits: u64,
    /// Retransmission timeouts that expired (the first of a run resends one frame).
    pub timeouts: u64,
    /// Timeouts that expired again without progress (every overdue frame resent).
    pub timeouts_in_a_row: u64,
    /// Frames resent because a selective ack showed them missing.
    pub hole_resends: u64,
    /// Records queued by the application.
    pub records_sent: u64,
    /// Frames accepted.
    pub frames_received: u64,
    /// Bytes of accepted frames.
    pub bytes_received: u64,
    /// Records delivered to the application.
    pub records_delivered: u64,
    /// Duplicate data batches (already delivered; acked again).
    pub duplicate_batches: u64,
    /// Data addressed to a previous incarnation of this node (dropped; sender told).
    pub stale_stream_batches: u64,
    /// Rejected: too short, too long or bad magic.
    pub rejected_garbled: u64,
    /// Rejected: unknown version or kind.
    pub rejected_version: u64,
    /// Rejected: authentication failed (forged, corrupted, wrong key).
    pub rejected_auth: u64,
    /// Rejected: replayed or stale.
    pub rejected_replay: u64,
    /// Rejected: addressed to another node.
    pub rejected_misdirected: u64,
    /// Rejected: from an unknown sender.
    pub rejected_unknown_peer: u64,
    /// Rejected: authenticated but unparseable payload.
    pub rejected_malformed: u64,
    /// Rejected: authenticated frames claiming this node's own id (another process uses it).
    pub rejected_own_id: u64,
    /// Rejected: not from the node they claim to come from: a hello it did not sign, or a
    /// frame that its pair key with this node does not open (a member speaking as another, a
    /// wrong public key, or a corrupted frame).
    pub rejected_signature: u64,
    /// Hellos of a not yet accepted incarnation, answered with a challenge.
    pub challenges_answered: u64,
    /// Duplicate node ids reported (by this node, or to it by a peer).
    pub duplicate_ids: u64,
}

impl SyncStats {
    /// All rejected frames.
    pub fn rejected(&self) -> u64 {
        self.rejected_garbled
            + self.rejected_version
            + self.rejected_auth
            + self.rejected_replay
            + self.rejected_misdirected
            + self.rejected_unknown_peer
            + self.rejected_malformed
            + self.rejected_own_id
            + self.rejected_signature
    }
}

/// Per-peer transport state, for status output.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerStatus {
    /// The peer.
    pub peer: u16,
    /// Its incarnation (0: not heard yet).
    pub incarnation: u64,
    /// Batches sent and not acknowledged.
    pub in_flight: usize,
    /// Closed batches waiting for window space.
    pub queued: usize,
    /// Smoothed round-trip time in microseconds.
    pub srtt_us: u64,
    /// Milliseconds since last authenticated frame from it (`u64::MAX`: never).
    pub last_heard_ms: u64,
}

struct InFlight {
    records: Vec<u8>,
    sent_at: Duration,
    retries: u32,
}

// records may carry key material (an ESP SA's keys): every plaintext copy is wiped when it goes
impl Drop for InFlight {
    fn drop(&mut self) {
        self.records.zeroize();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.building.zeroize();
        for b in &mut self.queued {
            b.zeroize();
        }
    }
}

struct Peer {
    /// The peer's accepted incarnation (0 = none yet): set only when a hello of it echoed
    /// `challenge`.
    incarnation: u64,
    key: Option<LessSafeKey>,
    /// The key of the last other incarnation heard (saves a derivation per frame).
    other_key: Option<(u64, LessSafeKey)>,
    /// With node identities: the pair keys with the accepted incarnation.
    pair: Option<PairKeys>,
    /// This node's current challenge to the peer.
    challenge: [u8; 16],
    /// The peer's challenge, from its last authenticated hello (echoed in ours).
    their_nonce: [u8; 16],
    /// The accepted incarnation showed that it knows this node's incarnation.
    knows_me: bool,
    /// Earliest time to answer another hello of an unaccepted incarnation (bounds what
    /// replayed hellos make this node send).
    answer_due: Duration,
    // duplicate node id detection: returns to the previous incarnation in authenticated frames
    last_inc: u64,
    prev_inc: u64,
    returns: u32,
    returns_since: Duration,
    dup_reported: Option<Duration>,
    notice_reported: Option<Duration>,
    last_heard: Option<Duration>,
    // replay window over the peer's frame sequence numbers
    replay_top: u64,
    replay_bits: [u64; 16],
    // send stream
    next_batch: u64,
    building: Vec<u8>,
    building_since: Option<Duration>,
    queued: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    in_flight: BTreeMap<u64, InFlight>,
    rto_deadline: Option<Duration>,
    srtt: Option<Duration>,
    rttvar: Duration,
    backoff: u32,
    hello_due: Duration,
    // receive stream
    next_expected: u64,
    out_of_order: BTreeMap<u64, RecordBatch>,
    ack_due: Option<Duration>,
    unacked: u32,
}

impl Peer {
    fn new(challenge: [u8; 16]) -> Self {
        Self {
            incarnation: 0,
            key: None,
            other_key: None,
            pair: None,
            challenge,
            their_nonce: [0; 16],
            knows_me: false,
            answer_due: Duration::ZERO,
            last_inc: 0,
            prev_inc: 0,
            returns: 0,
            returns_since: Duration::ZERO,
            dup_reported: None,
            notice_reported: None,
            last_heard: None,
            replay_top: 0,
            replay_bits: [0; 16],
            next_batch: 0,
            building: Vec::new(),
            building_since: None,
            queued: VecDeque::new(),
            queued_bytes: 0,
            in_flight: BTreeMap::new(),
            rto_deadline: None,
            srtt: None,
            rttvar: Duration::ZERO,
            backoff: 0,
            hello_due: Duration::ZERO,
            next_expected: 0,
            out_of_order: BTreeMap::new(),
            ack_due: None,
            unacked: 0,
        }
    }

    fn rto(&self, cfg: &EndpointConfig) -> Duration {
        let base = match self.srtt {
            Some(s) => s + 4 * self.rttvar,
            None => cfg.rto_min * 2,
        };
        let base = base.clamp(cfg.rto_min, cfg.rto_max);
        (base * (1u32 << self.backoff.min(5))).min(cfg.rto_max)
    }

    /// Whether `seq` was already seen or is too old for the window.
    fn replayed(&self, seq: u64) -> bool {
        if seq == 0 {
            return true;
        }
        if seq > self.replay_top {
            return false;
        }
        let age = self.replay_top - seq;
        if age >= 1024 {
            return true;
        }
        let age = age as usize;
        self.replay_bits[age / 64] & (1 << (age % 64)) != 0
    }

    fn mark_seen(&mut self, seq: u64) {
        if seq > self.replay_top {
            let shift = seq - self.replay_top;
            if shift >= 1024 {
                self.replay_bits = [0; 16];
            } else {
                // shift the 1024-bit window left by `shift` bits (bit 0 = top)
                let shift = shift as usize;
                let (words, bits) = (shift / 64, shift % 64);
                let old = self.replay_bits;
                for i in (0..16).rev() {
                    let mut v = 0u64;
                    if i >= words {
                        v = old[i - words] << bits;
                        if bits > 0 && i > words {
                            v |= old[i - words - 1] >> (64 - bits);
                        }
                    }
                    self.replay_bits[i] = v;
                }
            }
            self.replay_top = seq;
            self.replay_bits[0] |= 1;
        } else {
            let age = (self.replay_top - seq) as usize;
            if age < 1024 {
                self.replay_bits[age / 64] |= 1 << (age % 64);
            }
        }
    }

    /// The peer has a new incarnation: both streams restart; unacknowledged data is renumbered
    /// and sent again.
    fn reset_streams(&mut self) {
        let mut pending: VecDeque<Vec<u8>> = std::mem::take(&mut self.in_flight)
            .into_values()
            .map(|mut f| std::mem::take(&mut f.records))
            .collect();
        pending.append(&mut self.queued);
        self.queued_bytes = pending.iter().map(Vec::len).sum();
        self.queued = pending;
        self.next_batch = 0;
        self.rto_deadline = None;
        self.srtt = None;
        self.backoff = 0;
        self.next_expected = 0;
        self.out_of_order.clear();
        self.ack_due = None;
        self.unacked = 0;
    }

    fn close_batch(&mut self) {
        if !self.building.is_empty() {
            let b = std::mem::take(&mut self.building);
            self.queued_bytes += b.len();
            self.queued.push_back(b);
        }
        self.building_since = None;
    }
}

/// The replication endpoint of one node (see the module documentation).
pub struct Endpoint {
    cfg: EndpointConfig,
    key: ClusterKey,
    seal_key: LessSafeKey,
    /// With node identities: this incarnation's X25519 secret and its public key (the share
    /// in every hello).
    share: Option<(x25519_dalek::StaticSecret, [u8; frame::SHARE_LEN])>,
    next_seq: u64,
    peers: BTreeMap<NodeId, Peer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SyncEvent>,
    stats: SyncStats,
    scratch: Vec<u8>,
    /// Random per process (mixed into every challenge).
    challenge_seed: [u8; 8],
    challenges_made: u64,
    own_id_reported: Option<Duration>,
}

/// Returns to the previous incarnation of one peer within [`DUP_WINDOW`] that mean a duplicate
/// node id (a restart makes none, a reordered straggler of the old incarnation two).
const DUP_RETURNS: u32 = 3;
/// Window of [`DUP_RETURNS`].
const DUP_WINDOW: Duration = Duration::from_secs(10);
/// A duplicate node id is reported at most this often per peer.
const DUP_REPORT_EVERY: Duration = Duration::from_secs(5);

fn due(last: Option<Duration>, now: Duration, every: Duration) -> bool {
    last.is_none_or(|t| now >= t + every)
}

/// Opens the sealed frame `bytes` (header `h`) with `key` into `scratch`: the plaintext, or
/// `Err` when the tag does not verify.
fn open_into(scratch: &mut Vec<u8>, key: &LessSafeKey, h: &Header, bytes: &[u8]) -> Result<(), ()> {
    scratch.clear();
    scratch.extend_from_slice(&bytes[HEADER_LEN..]);
    let mut hdr = [0u8; HEADER_LEN];
    hdr.copy_from_slice(&bytes[..HEADER_LEN]);
    let plain_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(h.nonce()),
            Aad::from(hdr),
            scratch,
        )
        .map_err(|_| ())?
        .len();
    scratch.truncate(plain_len);
    Ok(())
}

/// The hello in `plain` of a frame with header `h`: it carries a key share exactly when the
/// cluster has identities.
fn parse_hello(plain: &[u8], h: &Header) -> Result<HelloRepr, FrameError> {
    let hello = HelloRepr::parse(plain)?;
    if h.signed != hello.share.is_some() {
        return Err(FrameError::Malformed(
            "a hello carries a key share exactly when the cluster has identities",
        ));
    }
    Ok(hello)
}

impl Endpoint {
    /// A new endpoint for `cfg.me` with the given peers.
    pub fn new(
        cfg: EndpointConfig,
        key: ClusterKey,
        peers: impl IntoIterator<Item = NodeId>,
    ) -> Self {
        let mut cfg = cfg;
        cfg.incarnation = cfg.incarnation.max(1);
        cfg.max_frame = cfg
            .max_frame
            .clamp(FRAME_OVERHEAD + DATA_PREFIX + 64, MAX_FRAME);
        let seal_key = key.frame_key(cfg.me, cfg.incarnation);
        let me = cfg.me;
        // A failing system generator leaves the seed zero: challenges then still differ from
        // every earlier process's as long as incarnations do.
        let mut challenge_seed = [0u8; 8];
        let _ = ring::rand::SystemRandom::new().fill(&mut challenge_seed);
        let share = cfg.identity.as_ref().and_then(|_| {
            let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
            // a failing generator leaves no share: hellos without one are refused by peers,
            // so this node stays unheard rather than use a predictable secret
            ring::rand::SystemRandom::new().fill(&mut bytes[..]).ok()?;
            let secret = x25519_dalek::StaticSecret::from(*bytes);
            let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
            Some((secret, public))
        });
        let mut ep = Self {
            cfg,
            key,
            seal_key,
            share,
            next_seq: 1,
            peers: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: SyncStats::default(),
            scratch: Vec::new(),
            challenge_seed,
            challenges_made: 0,
            own_id_reported: None,
        };
        for p in peers {
            if p != me && !ep.peers.contains_key(&p) {
                let c = ep.new_challenge();
                ep.peers.insert(p, Peer::new(c));
            }
        }
        ep
    }

    /// A challenge never issued before by this process (a counter) nor, with overwhelming
    /// likelihood, by any other (the random seed and the incarnation).
    fn new_challenge(&mut self) -> [u8; 16] {
        self.challenges_made += 1;
        let mut c = [0u8; 16];
        let inc = self.cfg.incarnation.to_be_bytes();
        for (i, b) in c[..8].iter_mut().enumerate() {
            *b = self.challenge_seed[i] ^ inc[i];
        }
        c[8..].copy_from_slice(&self.challenges_made.to_be_bytes());
        c
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.cfg.me
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.cfg.incarnation
    }

    /// The configured peers.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// Counters.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// The largest record [`Endpoint::send_record`] accepts.
    pub fn max_record(&self) -> usize {
        MAX_FRAME - FRAME_OVERHEAD - DATA_PREFIX - 3
    }

    /// Per-peer state for status output.
    pub fn peer_status(&self, now: Duration) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(id, p)| PeerStatus {
                peer: id.0,
                incarnation: p.incarnation,
                in_flight: p.in_flight.len(),
                queued: p.queued.len(),
                srtt_us: p.srtt.map_or(0, |d| d.as_micros() as u64),
                last_heard_ms: p
                    .last_heard
                    .map_or(u64::MAX, |t| now.saturating_sub(t).as_millis() as u64),
            })
            .collect()
    }

    /// Sets (or, with `None`, removes) the public key that `peer`'s signed hellos must verify
    /// under: how a running node learns a peer's rotated identity. Hellos the peer signed with
    /// another key are refused from now on, and its other frames until a hello verifies.
    pub fn set_peer_key(&mut self, peer: NodeId, key: Option<PublicKey>) {
        // the pair keys were agreed under the old public key: the peer's frames count again
        // only after a hello signed under the new one
        if let Some(p) = self.peers.get_mut(&peer) {
            p.pair = None;
        }
        match key {
            Some(k) => {
                self.cfg.peer_keys.insert(peer, k);
            }
            None => {
                self.cfg.peer_keys.remove(&peer);
            }
        }
    }

    /// Bytes waiting or in flight to `peer` (0 for an unknown peer).
    pub fn backlog(&self, peer: NodeId) -> usize {
        self.peers.get(&peer).map_or(0, |p| {
            p.queued_bytes
                + p.building.len()
                + p.in_flight.values().map(|f| f.records.len()).sum::<usize>()
        })
    }

    /// Drops everything queued to `peer` but not yet in flight (it was declared dead: when it
    /// comes back it resyncs in bulk, or anti-entropy repairs what it missed). The in-flight
    /// window is kept so the stream's numbering stays intact.
    pub fn discard_backlog(&mut self, peer: NodeId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.building.clear();
            p.building_since = None;
            p.queued.clear();
            p.queued_bytes = 0;
        }
    }

    /// Queues one record for `to` (reliable, ordered, exactly once per incarnation pair).
    ///
    /// # Errors
    /// [`SendError`] for an unknown peer, an empty or oversized record, or a full backlog.
    pub fn send_record(
        &mut self,
        now: Duration,
        to: NodeId,
        record: &[u8],
    ) -> Result<(), SendError> {
        let max_record = self.max_record();
        let limit = self.cfg.max_frame - FRAME_OVERHEAD - DATA_PREFIX;
        let max_backlog = self.cfg.max_backlog_bytes;
        let p = self.peers.get_mut(&to).ok_or(SendError::UnknownPeer(to))?;
        if record.is_empty() {
            return Err(SendError::Empty);
        }
        if record.len() > max_record {
            return Err(SendError::TooLarge {
                len: record.len(),
                max: max_record,
            });
        }
        if p.queued_bytes + p.building.len() > max_backlog {
            return Err(SendError::Backlog(to));
        }
        let need = frame::varint_len(record.len()) + record.len();
        if !p.building.is_empty() && p.building.len() + need > limit {
            p.close_batch();
        }
        if p.building.capacity() == 0 {
            // one allocation for the whole batch: growing would leave copies of records behind
            p.building.reserve_exact(limit + frame::varint_len(limit));
        }
        frame::put_varint(&mut p.building, record.len());
        p.building.extend_from_slice(record);
        if p.building_since.is_none() {
            p.building_since = Some(now);
        }
        if p.building.len() >= limit {
            p.close_batch();
        }
        self.stats.records_sent += 1;
        if !self.peers[&to].queued.is_empty() {
            self.pump(now, to);
        }
        Ok(())
    }

    /// Queues `record` for every peer.
    ///
    /// # Errors
    /// The first [`SendError`] met; the record is still queued for the other peers.
    pub fn broadcast_record(&mut self, now: Duration, record: &[u8]) -> Result<(), SendError> {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        let mut first = Ok(());
        for p in peers {
            if let Err(e) = self.send_record(now, p, record) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Closes the open batch to `to` now instead of waiting for the flush timer.
    pub fn flush(&mut self, now: Duration, to: NodeId) {
        if let Some(p) = self.peers.get_mut(&to) {
            p.close_batch();
            self.pump(now, to);
        }
    }

    /// Closes every open batch now.
    pub fn flush_all(&mut self, now: Duration) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for p in peers {
            self.flush(now, p);
        }
    }

    /// Sends one unreliable datagram to `to` at once.
    ///
    /// # Errors
    /// [`SendError`] for an unknown peer or a payload that does not fit a frame.
    pub fn send_datagram(&mut self, to: NodeId, payload: &[u8]) -> Result<(), SendError> {
        if !self.peers.contains_key(&to) {
            return Err(SendError::UnknownPeer(to));
        }
        if payload.len() > MAX_FRAME - FRAME_OVERHEAD {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: MAX_FRAME - FRAME_OVERHEAD,
            });
        }
        self.seal(to, Kind::Datagram, payload)
    }

    /// Seals a frame and queues it for transmission.
    fn seal(&mut self, to: NodeId, kind: Kind, payload: &[u8]) -> Result<(), SendError> {
        if self.next_seq == u64::MAX {
            return Err(SendError::SeqExhausted);
        }
        let signed = self.cfg.identity.is_some();
        // hellos (and every frame without identities) use this incarnation's frame key, every
        // other frame of a cluster with identities the pair key with the receiver
        let pair_keyed = signed && kind != Kind::Hello;
        let key = if pair_keyed {
            match self.peers.get(&to).and_then(|p| p.pair.as_ref()) {
                Some(pair) => &pair.seal,
                None => return Err(SendError::NoPairKey(to)),
            }
        } else {
            &self.seal_key
        };
        let header = Header {
            kind,
            sender: self.cfg.me,
            receiver: to,
            incarnation: self.cfg.incarnation,
            seq: self.next_seq,
            signed,
        };
        let mut hdr = [0u8; HEADER_LEN];
        header.emit(&mut hdr);
        let mut buf = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN + SIG_LEN);
        buf.extend_from_slice(&hdr);
        buf.extend_from_slice(payload);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(header.nonce()),
                Aad::from(hdr),
                &mut buf[HEADER_LEN..],
            )
            .map_err(|_| SendError::TooLarge {
                len: payload.len(),
                max: MAX_FRAME,
            })?;
        self.next_seq += 1;
        buf.extend_from_slice(tag.as_ref());
        if let Some(id) = self.cfg.identity.as_ref().filter(|_| kind == Kind::Hello) {
            let sig = id.sign(&buf);
            buf.extend_from_slice(&sig);
        }
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += buf.len() as u64;
        self.transmits.push_back(Transmit { to, bytes: buf });
        Ok(())
    }

    fn send_data(&mut self, now: Duration, to: NodeId, batch: u64, retransmit: bool) {
        let Some(p) = self.peers.get(&to) else { return };
        let Some(f) = p.in_flight.get(&batch) else {
            return;
        };
        let mut payload =
            zeroize::Zeroizing::new(Vec::with_capacity(DATA_PREFIX + f.records.len()));
        payload.extend_from_slice(&p.incarnation.to_be_bytes());
        payload.extend_from_slice(&batch.to_be_bytes());
        payload.extend_from_slice(&f.records);
        if self.seal(to, Kind::Data, &payload).is_ok() {
            self.stats.data_frames_sent += 1;
            if retransmit {
                self.stats.retransmits += 1;
            }
        }
        if let Some(f) = self
            .peers
            .get_mut(&to)
            .and_then(|p| p.in_flight.get_mut(&batch))
        {
            f.sent_at = now;
            if retransmit {
                f.retries += 1;
            }
        }
    }

    /// Moves closed batches into flight while the window allows (only once the peer's
    /// incarnation is known, so the stream is bound to it).
    fn pump(&mut self, now: Duration, to: NodeId) {
        loop {
            let max = self.cfg.max_in_flight;
            let cfg_rto;
            let batch = {
                let Some(p) = self.peers.get_mut(&to) else {
                    return;
                };
                if p.incarnation == 0 || p.in_flight.len() >= max {
                    return;
                }
                let Some(records) = p.queued.pop_front() else {
                    return;
                };
                p.queued_bytes -= records.len();
                let b = p.next_batch;
                p.next_batch += 1;
                p.in_flight.insert(
                    b,
                    InFlight {
                        records,
                        sent_at: now,
                        retries: 0,
                    },
                );
                cfg_rto = p.rto(&self.cfg);
                if p.rto_deadline.is_none() {
                    p.rto_deadline = Some(now + cfg_rto);
                }
                b
            };
            self.send_data(now, to, batch, false);
        }
    }

    fn send_ack(&mut self, to: NodeId) {
        let Some(p) = self.peers.get_mut(&to) else {
            return;
        };
        let mut sack = 0u64;
        for b in p.out_of_order.keys() {
            let off = b.wrapping_sub(p.next_expected + 1);
            if off < 64 {
                sack |= 1 << off;
            }
        }
        let ack = AckRepr {
            acked_incarnation: p.incarnation,
            next_expected: p.next_expected,
            sack,
        };
        p.ack_due = None;
        p.unacked = 0;
        let mut payload = Vec::with_capacity(frame::ACK_LEN);
        ack.emit(&mut payload);
        let _ = self.seal(to, Kind::Ack, &payload);
    }

    fn send_hello(&mut self, to: NodeId) {
        self.send_hello_conflict(to, 0);
    }

    /// A hello to `to`, telling it that `conflict` (if not 0) is another incarnation heard with
    /// its node id.
    fn send_hello_conflict(&mut self, to: NodeId, conflict: u64) {
        let Some(p) = self.peers.get(&to) else {
            return;
        };
        let hello = HelloRepr {
            known: p.incarnation,
            conflict,
            nonce: p.challenge,
            echo: p.their_nonce,
            flags: if p.incarnation == 0
                || !p.knows_me
                || (self.share.is_some() && p.pair.is_none())
            {
                HELLO_ANSWER
            } else {
                0
            },
            share: self.share.as_ref().map(|(_, public)| *public),
        };
        let mut payload = Vec::with_capacity(frame::HELLO_LEN + 1 + frame::SHARE_LEN);
        hello.emit(&mut payload);
        let _ = self.seal(to, Kind::Hello, &payload);
    }

    /// Runs the timers: flushes due batches, retransmits, sends delayed acks and hellos.
    pub fn handle_timeout(&mut self, now: Duration) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for to in peers {
            let mut retransmit = Vec::new();
            let (ack, hello) = {
                let cfg = &self.cfg;
                let Some(p) = self.peers.get_mut(&to) else {
                    continue;
                };
                if p.building_since
                    .is_some_and(|t| t + cfg.flush_interval <= now)
                {
                    p.close_batch();
                }
                if p.rto_deadline.is_some_and(|t| t <= now) {
                    let rto = p.rto(cfg);
                    // A first timeout resends only the oldest frame: a peer that was merely
                    // slow (descheduled, busy applying) acks it with everything else it has,
                    // and the acks' selective bitmap drives the resending of real holes
                    // (`on_ack`). Only timeouts in a row, with no progress, resend all.
                    let limit = if p.backoff == 0 { 1 } else { 256 };
                    self.stats.timeouts += 1;
                    if p.backoff > 0 {
                        self.stats.timeouts_in_a_row += 1;
                    }
                    for (b, f) in &p.in_flight {
                        if f.sent_at + rto <= now + Duration::from_micros(500)
                            && retransmit.len() < limit
                        {
                            retransmit.push(*b);
                        }
                    }
                    p.backoff = (p.backoff + 1).min(5);
                    let rto = p.rto(cfg);
                    p.rto_deadline = if p.in_flight.is_empty() {
                        None
                    } else {
                        Some(now + rto)
                    };
                }
                let ack = p.ack_due.is_some_and(|t| t <= now);
                let hello = (p.incarnation == 0 || !p.knows_me) && p.hello_due <= now;
                if hello {
                    p.hello_due = now + cfg.hello_interval;
                }
                (ack, hello)
            };
            for b in retransmit {
                self.send_data(now, to, b, true);
            }
            self.pump(now, to);
            if ack {
                self.send_ack(to);
            }
            if hello {
                self.send_hello(to);
            }
        }
    }

    /// The next time [`Endpoint::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let mut take = |t: Option<Duration>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for p in self.peers.values() {
            take(p.building_since.map(|t| t + self.cfg.flush_interval));
            take(p.rto_deadline);
            take(p.ack_due);
            if p.incarnation == 0 || !p.knows_me {
                take(Some(p.hello_due));
            }
        }
        next
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SyncEvent> {
        self.events.pop_front()
    }

    /// Handles one received frame. Rejected frames change nothing but a counter.
    ///
    /// # Errors
    /// The [`FrameError`] that rejected the frame (already counted in [`SyncStats`]).
    pub fn handle_frame(&mut self, now: Duration, bytes: &[u8]) -> Result<(), FrameError> {
        let r = self.handle_frame_inner(now, bytes);
        // the decrypted payload may carry key material: wiped after every frame
        self.scratch.as_mut_slice().zeroize();
        self.scratch.clear();
        if let Err(e) = r {
            let s = &mut self.stats;
            match e {
                FrameError::Garbled(_) => s.rejected_garbled += 1,
                FrameError::Version(_) | FrameError::UnknownKind(_) => s.rejected_version += 1,
                FrameError::Misdirected(_) => s.rejected_misdirected += 1,
                FrameError::UnknownPeer(_) => s.rejected_unknown_peer += 1,
                FrameError::Auth => s.rejected_auth += 1,
                FrameError::Replay => s.rejected_replay += 1,
                FrameError::Malformed(_) => s.rejected_malformed += 1,
                FrameError::OwnId(_) => s.rejected_own_id += 1,
                FrameError::Signature(_) | FrameError::PairKey(_) => s.rejected_signature += 1,
            }
        }
        r
    }

    fn handle_frame_inner(&mut self, now: Duration, bytes: &[u8]) -> Result<(), FrameError> {
        let h = Header::parse(bytes)?;
        if h.signed != self.cfg.identity.is_some() {
            // a cluster signs all its frames or none
            return Err(FrameError::Version(bytes[2]));
        }
        // The sealed part (header, ciphertext, tag); a signed hello's signature follows it.
        let (bytes, sig) = if h.signed && h.kind == Kind::Hello {
            bytes.split_at(bytes.len() - SIG_LEN)
        } else {
            (bytes, &[][..])
        };
        if h.receiver != self.cfg.me {
            return Err(FrameError::Misdirected(h.receiver));
        }
        if h.incarnation == 0 || h.seq == 0 {
            return Err(FrameError::Replay);
        }
        if h.sender == self.cfg.me {
            return self.on_own_id(now, &h, bytes, sig);
        }
        let p = known_peer(&mut self.peers, h.sender)?;
        let current = h.incarnation == p.incarnation;
        if current && p.replayed(h.seq) {
            return Err(FrameError::Replay);
        }
        if h.signed && h.kind != Kind::Hello {
            return self.open_pair_keyed(now, &h, bytes, current);
        }
        // authenticate
        if !current
            && p.other_key
                .as_ref()
                .is_none_or(|(i, _)| *i != h.incarnation)
        {
            p.other_key = Some((h.incarnation, self.key.frame_key(h.sender, h.incarnation)));
        }
        let key = match (&p.key, &p.other_key) {
            (Some(k), _) if current => k,
            (_, Some((_, k))) if !current => k,
            _ => return Err(FrameError::Auth),
        };
        open_into(&mut self.scratch, key, &h, bytes).map_err(|()| FrameError::Auth)?;
        let from = h.sender;
        if h.signed {
            // Sealed with the cluster key, so from a member: now check that it is the member
            // it claims to be.
            let signed_by_sender = self
                .cfg
                .peer_keys
                .get(&from)
                .is_some_and(|k| k.verify(bytes, sig));
            if !signed_by_sender {
                return Err(FrameError::Signature(from));
            }
        }
        self.note_incarnation(now, from, h.incarnation);
        if !current {
            return self.on_other_incarnation(now, &h);
        }
        self.on_current_frame(now, &h, bytes.len())
    }

    /// An authenticated frame of `h.sender`'s accepted incarnation (`frame_len` bytes; the
    /// plaintext in `self.scratch`): marks it seen and acts on its kind.
    fn on_current_frame(
        &mut self,
        now: Duration,
        h: &Header,
        frame_len: usize,
    ) -> Result<(), FrameError> {
        let from = h.sender;
        let me_inc = self.cfg.incarnation;
        let p = known_peer(&mut self.peers, from)?;
        p.mark_seen(h.seq);
        p.last_heard = Some(now);
        self.stats.frames_received += 1;
        self.stats.bytes_received += frame_len as u64;
        match h.kind {
            Kind::Datagram => {
                let payload = self.scratch.clone();
                self.events.push_back(SyncEvent::Datagram { from, payload });
            }
            Kind::Hello => {
                let hello = parse_hello(&self.scratch, h)?;
                // the peer's key was changed: this hello verified under the new one
                let pair = if h.signed && p.pair.is_none() {
                    Some(self.pair_with(from, h.incarnation, hello.share.as_ref())?)
                } else {
                    None
                };
                let p = known_peer(&mut self.peers, from)?;
                if pair.is_some() {
                    p.pair = pair;
                }
                p.their_nonce = hello.nonce;
                if hello.known == me_inc {
                    p.knows_me = true;
                }
                if hello.conflict != 0 && hello.conflict != me_inc {
                    self.on_conflict_notice(now, from, hello.conflict);
                }
                if hello.known != me_inc || hello.flags & HELLO_ANSWER != 0 {
                    self.send_hello(from);
                }
            }
            Kind::Ack => {
                let ack = AckRepr::parse(&self.scratch)?;
                if ack.acked_incarnation == me_inc {
                    p.knows_me = true;
                }
                self.on_ack(now, from, ack);
            }
            Kind::Data => {
                if self.scratch.len() < DATA_PREFIX {
                    return Err(FrameError::Malformed(
                        "data payload shorter than its prefix",
                    ));
                }
                let to_inc = frame::be_u64(&self.scratch, 0..8);
                let batch = frame::be_u64(&self.scratch, 8..16);
                if to_inc != me_inc {
                    self.stats.stale_stream_batches += 1;
                    self.send_hello(from);
                    return Ok(());
                }
                p.knows_me = true;
                let records = RecordBatch::parse(self.scratch[DATA_PREFIX..].to_vec())?;
                self.on_data(now, from, batch, records);
            }
        }
        Ok(())
    }

    /// An authenticated frame of an incarnation of `h.sender` that is not the accepted one (in
    /// `self.scratch`). Only a hello echoing this node's current challenge makes it the
    /// accepted incarnation; any other hello is answered with the challenge, and every other
    /// frame is refused (and asks for a hello, at most once per hello interval).
    fn on_other_incarnation(&mut self, now: Duration, h: &Header) -> Result<(), FrameError> {
        let from = h.sender;
        let me_inc = self.cfg.incarnation;
        let hello_interval = self.cfg.hello_interval;
        let p = known_peer(&mut self.peers, from)?;
        if h.kind != Kind::Hello {
            if p.hello_due <= now {
                p.hello_due = now + hello_interval;
                self.send_hello(from);
            }
            return Err(FrameError::Replay);
        }
        let hello = parse_hello(&self.scratch, h)?;
        p.their_nonce = hello.nonce;
        if hello.echo != p.challenge {
            if p.answer_due <= now {
                p.answer_due = now + hello_interval / 5;
                self.stats.challenges_answered += 1;
                self.send_hello(from);
            }
            return Ok(());
        }
        // It answered the challenge: this incarnation is live now. A new challenge, so that
        // this very hello, replayed later, proves nothing.
        let pair = if h.signed {
            Some(self.pair_with(from, h.incarnation, hello.share.as_ref())?)
        } else {
            None
        };
        let fresh = self.new_challenge();
        let p = known_peer(&mut self.peers, from)?;
        let restarted = p.incarnation != 0;
        p.incarnation = h.incarnation;
        p.key = p.other_key.take().map(|(_, k)| k);
        p.pair = pair;
        p.challenge = fresh;
        // every earlier frame of it (sent before it was accepted) counts as seen: a capture of
        // them proves nothing
        p.replay_top = h.seq;
        p.replay_bits = [u64::MAX; 16];
        p.last_heard = Some(now);
        p.knows_me = hello.known == me_inc;
        p.reset_streams();
        self.stats.frames_received += 1;
        self.events.push_back(SyncEvent::PeerIncarnation {
            peer: from,
            incarnation: h.incarnation,
            restarted,
        });
        // tells the peer that this node knows it now (and the new challenge)
        self.send_hello(from);
        self.pump(now, from);
        Ok(())
    }

    /// The pair keys with incarnation `inc` of `peer`, from the key share of its hello.
    fn pair_with(
        &self,
        peer: NodeId,
        inc: u64,
        share: Option<&[u8; frame::SHARE_LEN]>,
    ) -> Result<PairKeys, FrameError> {
        let (Some((secret, _)), Some(share)) = (&self.share, share) else {
            return Err(FrameError::Malformed("hello without a key share"));
        };
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*share));
        if !shared.was_contributory() {
            // a low-order point: every secret gives the same shared value
            return Err(FrameError::Malformed(
                "hello key share is not a valid public key",
            ));
        }
        Ok(self.key.pair_keys(
            shared.as_bytes(),
            (self.cfg.me, self.cfg.incarnation),
            (peer, inc),
        ))
    }

    /// A frame of a cluster with identities other than a hello: sealed with the pair key of
    /// its sender and this node. Only the accepted incarnation has one; another incarnation's
    /// frame (a restart not yet accepted, or a capture) is asked for a hello, at most once per
    /// hello interval, as [`Self::on_other_incarnation`] does, and refused. The plaintext is
    /// left in `self.scratch` for the caller's kind dispatch.
    fn open_pair_keyed(
        &mut self,
        now: Duration,
        h: &Header,
        bytes: &[u8],
        current: bool,
    ) -> Result<(), FrameError> {
        let from = h.sender;
        let hello_interval = self.cfg.hello_interval;
        let p = known_peer(&mut self.peers, from)?;
        // (the pair keys always belong to the accepted incarnation: set with it, or for it)
        let Some(pair) = p.pair.as_ref().filter(|_| current) else {
            if p.hello_due <= now {
                p.hello_due = now + hello_interval;
                self.send_hello(from);
            }
            return Err(if current {
                FrameError::PairKey(from)
            } else {
                FrameError::Replay
            });
        };
        open_into(&mut self.scratch, &pair.open, h, bytes)
            .map_err(|()| FrameError::PairKey(from))?;
        self.note_incarnation(now, from, h.incarnation);
        self.on_current_frame(now, h, bytes.len())
    }

    /// Counts switches between incarnations of `peer`'s authenticated frames; many in a short
    /// time while one incarnation is accepted mean two processes with one node id.
    fn note_incarnation(&mut self, now: Duration, peer: NodeId, inc: u64) {
        let me = self.cfg.me;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let last = std::mem::replace(&mut p.last_inc, inc);
        if last == 0 || last == inc {
            return;
        }
        let back = std::mem::replace(&mut p.prev_inc, last) == inc;
        if !back {
            return;
        }
        if p.returns == 0 || now.saturating_sub(p.returns_since) > DUP_WINDOW {
            p.returns = 0;
            p.returns_since = now;
        }
        p.returns += 1;
        if p.returns < DUP_RETURNS || p.incarnation == 0 {
            return;
        }
        if !due(p.dup_reported, now, DUP_REPORT_EVERY) {
            return;
        }
        p.dup_reported = Some(now);
        let other = if inc == p.incarnation { last } else { inc };
        let incarnation = p.incarnation;
        self.stats.duplicate_ids += 1;
        self.events.push_back(SyncEvent::DuplicateId {
            node: peer,
            incarnation,
            other,
            reported_by: me,
        });
        // tell the node at the configured address (the accepted one) too
        self.send_hello_conflict(peer, other);
    }

    /// A peer says it hears this node's id under another incarnation too.
    fn on_conflict_notice(&mut self, now: Duration, from: NodeId, other: u64) {
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        if !due(p.notice_reported, now, DUP_REPORT_EVERY) {
            return;
        }
        p.notice_reported = Some(now);
        self.stats.duplicate_ids += 1;
        self.events.push_back(SyncEvent::DuplicateId {
            node: self.cfg.me,
            incarnation: self.cfg.incarnation,
            other,
            reported_by: from,
        });
    }

    /// A frame claiming this node's own id.
    fn on_own_id(
        &mut self,
        now: Duration,
        h: &Header,
        bytes: &[u8],
        sig: &[u8],
    ) -> Result<(), FrameError> {
        if h.incarnation == self.cfg.incarnation {
            // one of this process's own frames, reflected back
            return Err(FrameError::Replay);
        }
        if h.signed && h.kind != Kind::Hello {
            // pair-keyed between two other incarnations: nothing here can open it (another
            // process with this node id shows itself by its hellos)
            return Err(FrameError::PairKey(h.sender));
        }
        let key = self.key.frame_key(h.sender, h.incarnation);
        open_into(&mut self.scratch, &key, h, bytes).map_err(|()| FrameError::Auth)?;
        if let Some(id) = &self.cfg.identity {
            // another process with this node's identity, not a member speaking as this node
            if !id.public().verify(bytes, sig) {
                return Err(FrameError::Signature(h.sender));
            }
        }
        if due(self.own_id_reported, now, DUP_REPORT_EVERY) {
            self.own_id_reported = Some(now);
            self.stats.duplicate_ids += 1;
            self.events.push_back(SyncEvent::DuplicateId {
                node: self.cfg.me,
                incarnation: self.cfg.incarnation,
                other: h.incarnation,
                reported_by: self.cfg.me,
            });
        }
        Err(FrameError::OwnId(h.incarnation))
    }

    fn on_data(&mut self, now: Duration, from: NodeId, batch: u64, records: RecordBatch) {
        let ack_delay = self.cfg.ack_delay;
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        let mut immediate = false;
        if batch < p.next_expected {
            self.stats.duplicate_batches += 1;
            immediate = true;
        } else if batch == p.next_expected {
            p.next_expected += 1;
            self.stats.records_delivered += records.len() as u64;
            self.events.push_back(SyncEvent::Records {
                from,
                batch: records,
            });
            while let Some(next) = p.out_of_order.remove(&p.next_expected) {
                p.next_expected += 1;
                self.stats.records_delivered += next.len() as u64;
                self.events
                    .push_back(SyncEvent::Records { from, batch: next });
            }
        } else {
            if batch - p.next_expected <= 4096 && p.out_of_order.insert(batch, records).is_some() {
                self.stats.duplicate_batches += 1;
            }
            immediate = true;
        }
        p.unacked += 1;
        if immediate || p.unacked >= 4 {
            self.send_ack(from);
        } else if p.ack_due.is_none() {
            p.ack_due = Some(now + ack_delay);
        }
    }

    fn on_ack(&mut self, now: Duration, from: NodeId, ack: AckRepr) {
        if ack.acked_incarnation != self.cfg.incarnation {
            return;
        }
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        let mut progress = false;
        let mut sample = None;
        while let Some((&b, _)) = p.in_flight.first_key_value() {
            if b >= ack.next_expected {
                break;
            }
            if let Some(f) = p.in_flight.remove(&b) {
                if f.retries == 0 {
                    sample = Some(now.saturating_sub(f.sent_at));
                }
            }
            progress = true;
        }
        for i in 0..64 {
            if ack.sack & (1 << i) != 0 {
                let b = ack.next_expected.wrapping_add(1 + i);
                if p.in_flight.remove(&b).is_some() {
                    progress = true;
                }
            }
        }
        // Holes: frames still in flight below the highest one the peer has (cumulatively or
        // selectively acked) were lost (a datagram path does not reorder here); resend each
        // at most once per round trip.
        let highest = (ack.sack != 0).then(|| {
            ack.next_expected
                .wrapping_add(64 - u64::from(ack.sack.leading_zeros()))
        });
        let rtt = p.srtt.unwrap_or(self.cfg.rto_min / 4);
        let holes: Vec<u64> = highest.map_or_else(Vec::new, |top| {
            p.in_flight
                .range(..top)
                .filter(|(_, f)| f.sent_at + rtt <= now)
                .map(|(b, _)| *b)
                .take(64)
                .collect()
        });
        if let Some(s) = sample {
            match p.srtt {
                None => {
                    p.srtt = Some(s);
                    p.rttvar = s / 2;
                }
                Some(srtt) => {
                    let diff = s.abs_diff(srtt);
                    p.rttvar = (p.rttvar * 3 + diff) / 4;
                    p.srtt = Some((srtt * 7 + s) / 8);
                }
            }
        }
        if progress {
            p.backoff = 0;
            let rto = p.rto(&self.cfg);
            p.rto_deadline = if p.in_flight.is_empty() {
                None
            } else {
                Some(now + rto)
            };
            self.pump(now, from);
        }
        self.stats.hole_resends += holes.len() as u64;
        for b in holes {
            self.send_data(now, from, b, true);
        }
    }
}

/// The state of peer `id` among `peers`; a frame from any other node is refused.
fn known_peer(peers: &mut BTreeMap<NodeId, Peer>, id: NodeId) -> Result<&mut Peer, FrameError> {
    peers.get_mut(&id).ok_or(FrameError::UnknownPeer(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node 1 (incarnation 100) with node 2 as its peer, the key they share, and a time of 1 s.
    fn node_1_of_2() -> (ClusterKey, Endpoint, Duration) {
        let key = ClusterKey::from_bytes([3; 32]);
        let ep = Endpoint::new(
            EndpointConfig::new(NodeId(1), 100),
            key.clone(),
            [NodeId(2)],
        );
        (key, ep, Duration::from_secs(1))
    }

    /// A frame sealed by hand as node `sender` under `inc` (an endpoint never addresses itself).
    fn sealed(key: &ClusterKey, sender: u16, receiver: u16, inc: u64, seq: u64) -> Vec<u8> {
        let h = Header {
            kind: Kind::Datagram,
            sender: NodeId(sender),
            receiver: NodeId(receiver),
            incarnation: inc,
            seq,
            signed: false,
        };
        let mut hdr = [0u8; HEADER_LEN];
        h.emit(&mut hdr);
        let mut buf = hdr.to_vec();
        buf.extend_from_slice(b"Hx");
        let tag = key
            .frame_key(NodeId(sender), inc)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(h.nonce()),
                Aad::from(hdr),
                &mut buf[HEADER_LEN..],
            )
            .unwrap();
        buf.extend_from_slice(tag.as_ref());
        buf
    }

    #[test]
    fn frames_from_this_nodes_own_id_are_reported_and_refused() {
        let (key, mut ep, t) = node_1_of_2();
        assert_eq!(
            ep.handle_frame(t, &sealed(&key, 1, 1, 300, 1)),
            Err(FrameError::OwnId(300))
        );
        assert_eq!(
            ep.poll_event(),
            Some(SyncEvent::DuplicateId {
                node: NodeId(1),
                incarnation: 100,
                other: 300,
                reported_by: NodeId(1),
            })
        );
        // rate-limited, still refused and counted
        assert_eq!(
            ep.handle_frame(t, &sealed(&key, 1, 1, 300, 2)),
            Err(FrameError::OwnId(300))
        );
        assert_eq!(ep.poll_event(), None);
        // this process's own frame reflected back is a replay; a forgery fails authentication
        assert_eq!(
            ep.handle_frame(t, &sealed(&key, 1, 1, 100, 1)),
            Err(FrameError::Replay)
        );
        let other = ClusterKey::from_bytes([4; 32]);
        assert_eq!(
            ep.handle_frame(t, &sealed(&other, 1, 1, 300, 3)),
            Err(FrameError::Auth)
        );
        assert_eq!(ep.stats().rejected_own_id, 2);
        assert_eq!(ep.stats().duplicate_ids, 1);
        assert_eq!(ep.poll_event(), None);
    }

    #[test]
    fn authenticated_frames_of_an_unaccepted_incarnation_count_for_nothing() {
        let (key, mut ep, t) = node_1_of_2();
        for seq in 1..5 {
            assert_eq!(
                ep.handle_frame(t, &sealed(&key, 2, 1, 7, seq)),
                Err(FrameError::Replay)
            );
        }
        assert_eq!(ep.poll_event(), None);
        assert_eq!(ep.peer_status(t)[0].last_heard_ms, u64::MAX);
        // it is asked for a hello (with the challenge), once per hello interval
        let hellos = std::iter::from_fn(|| ep.poll_transmit()).count();
        assert_eq!(hellos, 1);
    }
}
