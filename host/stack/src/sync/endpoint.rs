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
//! frames of an older incarnation).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use ring::aead::{Aad, LessSafeKey, Nonce};
use serde::Serialize;
use zeroize::Zeroize;

use super::frame::{
    self, AckRepr, FrameError, Header, Kind, RecordBatch, DATA_PREFIX, FRAME_OVERHEAD, HEADER_LEN,
    MAX_FRAME, TAG_LEN,
};
use super::key::ClusterKey;
use crate::core::ids::NodeId;

/// Tunables of an [`Endpoint`].
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// This node.
    pub me: NodeId,
    /// This process lifetime's incarnation: must grow across restarts (the daemon uses the
    /// wall-clock time in microseconds at start). Never 0.
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
    /// A peer was heard under a new incarnation (`restarted`: it had another one before, so it
    /// lost its state and needs a resync).
    PeerIncarnation {
        /// The peer.
        peer: NodeId,
        /// Its new incarnation.
        incarnation: u64,
        /// Whether an earlier incarnation was known.
        restarted: bool,
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
    /// The peer's current incarnation (0 = unknown).
    incarnation: u64,
    key: Option<LessSafeKey>,
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
    fn new() -> Self {
        Self {
            incarnation: 0,
            key: None,
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
    next_seq: u64,
    peers: BTreeMap<NodeId, Peer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SyncEvent>,
    stats: SyncStats,
    scratch: Vec<u8>,
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
        Self {
            cfg,
            key,
            seal_key,
            next_seq: 1,
            peers: peers
                .into_iter()
                .filter(|p| *p != me)
                .map(|p| (p, Peer::new()))
                .collect(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: SyncStats::default(),
            scratch: Vec::new(),
        }
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
        let header = Header {
            kind,
            sender: self.cfg.me,
            receiver: to,
            incarnation: self.cfg.incarnation,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let mut hdr = [0u8; HEADER_LEN];
        header.emit(&mut hdr);
        let mut buf = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
        buf.extend_from_slice(&hdr);
        buf.extend_from_slice(payload);
        let tag = self
            .seal_key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(header.nonce()),
                Aad::from(hdr),
                &mut buf[HEADER_LEN..],
            )
            .map_err(|_| SendError::TooLarge {
                len: payload.len(),
                max: MAX_FRAME,
            })?;
        buf.extend_from_slice(tag.as_ref());
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
        let known = self.peers.get(&to).map_or(0, |p| p.incarnation);
        let _ = self.seal(to, Kind::Hello, &known.to_be_bytes());
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
                let hello = p.incarnation == 0 && p.hello_due <= now;
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
            if p.incarnation == 0 {
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
            }
        }
        r
    }

    fn handle_frame_inner(&mut self, now: Duration, bytes: &[u8]) -> Result<(), FrameError> {
        let h = Header::parse(bytes)?;
        if h.receiver != self.cfg.me {
            return Err(FrameError::Misdirected(h.receiver));
        }
        let me_inc = self.cfg.incarnation;
        let p = self
            .peers
            .get_mut(&h.sender)
            .ok_or(FrameError::UnknownPeer(h.sender))?;
        if h.incarnation < p.incarnation || (h.incarnation == p.incarnation && p.replayed(h.seq)) {
            return Err(FrameError::Replay);
        }
        if h.incarnation == 0 || h.seq == 0 {
            return Err(FrameError::Replay);
        }
        // authenticate
        let fresh_key;
        let key = match (&p.key, h.incarnation == p.incarnation) {
            (Some(k), true) => k,
            _ => {
                fresh_key = self.key.frame_key(h.sender, h.incarnation);
                &fresh_key
            }
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(&bytes[HEADER_LEN..]);
        let mut hdr = [0u8; HEADER_LEN];
        hdr.copy_from_slice(&bytes[..HEADER_LEN]);
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(h.nonce()),
                Aad::from(hdr),
                &mut self.scratch,
            )
            .map_err(|_| FrameError::Auth)?
            .len();
        self.scratch.truncate(plain_len);
        // authentic: adopt a new incarnation
        let new_incarnation = h.incarnation > p.incarnation;
        if new_incarnation {
            let restarted = p.incarnation != 0;
            p.incarnation = h.incarnation;
            p.key = Some(self.key.frame_key(h.sender, h.incarnation));
            p.replay_top = 0;
            p.replay_bits = [0; 16];
            p.reset_streams();
            self.events.push_back(SyncEvent::PeerIncarnation {
                peer: h.sender,
                incarnation: h.incarnation,
                restarted,
            });
        }
        let p = self
            .peers
            .get_mut(&h.sender)
            .ok_or(FrameError::UnknownPeer(h.sender))?;
        p.mark_seen(h.seq);
        p.last_heard = Some(now);
        self.stats.frames_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        let from = h.sender;
        match h.kind {
            Kind::Datagram => {
                let payload = self.scratch.clone();
                self.events.push_back(SyncEvent::Datagram { from, payload });
            }
            Kind::Hello => {
                if self.scratch.len() != 8 {
                    return Err(FrameError::Malformed("hello payload is not 8 bytes"));
                }
                let known = frame::be_u64(&self.scratch, 0..8);
                if known != me_inc {
                    self.send_hello(from);
                }
            }
            Kind::Ack => {
                let ack = AckRepr::parse(&self.scratch)?;
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
                let records = RecordBatch::parse(self.scratch[DATA_PREFIX..].to_vec())?;
                self.on_data(now, from, batch, records);
            }
        }
        if new_incarnation {
            self.pump(now, from);
        }
        Ok(())
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
