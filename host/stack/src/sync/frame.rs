//! The wire format of a sync frame (version 2, or 4 in a cluster with node identities), parsed
//! strictly: a frame is accepted only when every length adds up, and no accessor can panic on
//! any input.
//!
//! ```text
//! offset  size  field        (all integers big-endian; the 24-byte header is the AEAD's AAD)
//!      0     2  magic        "CD"
//!      2     1  version      2 (no node identities), 4 (node identities: see below)
//!      3     1  kind         1 = data, 2 = ack, 3 = datagram, 4 = hello
//!      4     2  sender       node id
//!      6     2  receiver     node id (a frame for another node is rejected)
//!      8     8  incarnation  the sender's incarnation (selects the frame key)
//!     16     8  seq          the sender's frame sequence number (nonce = sender ++ 00 00 ++ seq)
//!     24     n  ciphertext   the encrypted payload
//!   24+n    16  tag          AES-256-GCM tag over header and payload
//!   40+n    64  signature    version 4 hellos only: the sender's Ed25519 signature of 0..40+n
//! ```
//!
//! Version 2 frames, and version 4 hellos, are sealed with the sender's frame key (derived from
//! the cluster key, the sender and its incarnation). A cluster whose nodes have identities
//! ([`super::identity`]) sends and accepts only version 4: its hellos are signed (checked
//! against the configured public key of the node the header names) and carry the sender's
//! X25519 public key of this incarnation; every other frame is sealed with the pair key of
//! sender and receiver (their incarnations' X25519 shared secret and the cluster key, one key
//! per direction), which only those two nodes can compute. So one signature check per hello,
//! not per frame, binds every frame to its sender. A cluster without identities speaks only
//! version 2.
//!
//! Plaintext payloads:
//!
//! - data: `to_incarnation u64`, `batch u64`, then records, each a LEB128 length (1 byte up to
//!   127 bytes, 2 up to 16383, 3 up to 2 MiB; minimal encoding required, zero length refused)
//!   followed by that many opaque bytes;
//! - ack: `acked_incarnation u64` (the data sender's incarnation this ack is for),
//!   `next_expected u64` (every batch below it was received) and `sack u64` (bit `i` set: batch
//!   `next_expected + 1 + i` was received too);
//! - datagram: opaque bytes, delivered at most once, unordered, not retransmitted;
//! - hello (48 or 49 bytes; 81 in version 4): `known u64`, the receiver's incarnation as the sender knows it (0:
//!   unknown); `conflict u64`, another incarnation of the receiver's node id that the sender
//!   hears at the same time as `known` (0: none; a duplicate node id); `nonce [16]`, the
//!   sender's current challenge to the receiver; `echo [16]`, the receiver's challenge the sender
//!   last heard (zeros: none); `flags u8` (bit 0: please answer with a hello); version 4:
//!   `share [32]`, the sender's X25519 public key of this incarnation.
//!
//! A receiver accepts frames of a peer's incarnation only once that incarnation sent a hello
//! whose `echo` is the receiver's current challenge (random per process, renewed at every
//! accepted incarnation): frames captured before a restart of either side, or from an older
//! incarnation, never pass for a live peer. Data streams start only once both ends know each
//! other's incarnation.

use std::ops::Range;

use crate::core::ids::NodeId;

/// Frame magic.
pub const MAGIC: [u8; 2] = *b"CD";
/// The frame version of a cluster without node identities.
pub const VERSION: u8 = 2;
/// The frame version of a cluster with node identities: signed hellos, pair-keyed frames.
pub const VERSION_SIGNED: u8 = 4;
/// Signature length of a signed hello.
pub const SIG_LEN: usize = super::identity::SIG_LEN;
/// Header length (the AAD).
pub const HEADER_LEN: usize = 24;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Header plus tag: the fixed cost of a frame.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Data payload prefix (`to_incarnation`, `batch`).
pub const DATA_PREFIX: usize = 16;
/// Ack payload length.
pub const ACK_LEN: usize = 24;
/// The largest frame ever sent or accepted (fits a UDP datagram).
pub const MAX_FRAME: usize = 65_000;

mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const SENDER: Range<usize> = 4..6;
    pub const RECEIVER: Range<usize> = 6..8;
    pub const INCARNATION: Range<usize> = 8..16;
    pub const SEQ: Range<usize> = 16..24;
}

driver::code_enum! {
    /// What a frame carries (the header's kind byte).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Kind: u8 {
        /// A batch of reliable, ordered records.
        Data = 1,
        /// Acknowledgement of data batches.
        Ack = 2,
        /// One unreliable datagram (heartbeats).
        Datagram = 3,
        /// "This is my incarnation; I know yours as `u64`" (binds streams to incarnations).
        Hello = 4,
    }
}

/// Why a frame was refused before or during decryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than header plus tag, longer than [`MAX_FRAME`], or wrong magic.
    #[error("garbled frame: {0}")]
    Garbled(&'static str),
    /// A version this code does not speak.
    #[error("frame version {0} is not the one this node speaks (2 without node identities, 4 with: every node of a cluster has an identity_file, or none has; and one clusterd version across the cluster)")]
    Version(u8),
    /// A signed hello whose signature is not its sender's: a member speaking as another, a
    /// peer line with the wrong public key, or a node whose identity was rotated.
    #[error("frame signature is not {0}'s (a member speaking as another, or a wrong public key on its peer line)")]
    Signature(NodeId),
    /// A frame of a cluster with identities that its sender's pair key does not open: a member
    /// speaking as another (it cannot compute the pair key), a corrupted frame, or a peer
    /// whose key was changed and who has not yet sent a hello signed with the new one.
    #[error("frame not sealed with the pair key of {0} and this node (a member speaking as another, or a corrupted frame)")]
    PairKey(NodeId),
    /// Unknown kind byte.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Addressed to another node.
    #[error("frame addressed to {0}, not to this node")]
    Misdirected(NodeId),
    /// From a node that is not a configured peer.
    #[error("frame from {0}, which is not a configured peer")]
    UnknownPeer(NodeId),
    /// The tag did not verify: forged, corrupted, or sealed with another key.
    #[error("frame failed authentication (forged, corrupted or wrong cluster key)")]
    Auth,
    /// Seen before, older than the replay window, or from an incarnation that has not answered
    /// this node's current challenge (a previous incarnation, or frames captured earlier).
    #[error("replayed or stale frame")]
    Replay,
    /// Authenticated and claiming to come from this node's own id under another incarnation:
    /// another process runs with this node id.
    #[error("frame from this node's own id under incarnation {0}: another process runs with this node id")]
    OwnId(u64),
    /// Authenticated but the payload does not parse (a buggy peer).
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Payload kind.
    pub kind: Kind,
    /// Sending node.
    pub sender: NodeId,
    /// Receiving node.
    pub receiver: NodeId,
    /// Sender's incarnation.
    pub incarnation: u64,
    /// Sender's frame sequence number.
    pub seq: u64,
    /// A frame of a cluster with node identities (version 4): signed if a hello, else sealed
    /// with the pair key.
    pub signed: bool,
}

fn be_u16(b: &[u8], r: Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(r) {
        a.copy_from_slice(s);
    }
    u16::from_be_bytes(a)
}

pub(crate) fn be_u64(b: &[u8], r: Range<usize>) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(r) {
        if s.len() == 8 {
            a.copy_from_slice(s);
        }
    }
    u64::from_be_bytes(a)
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        out[field::MAGIC].copy_from_slice(&MAGIC);
        out[field::VERSION] = if self.signed { VERSION_SIGNED } else { VERSION };
        out[field::KIND] = self.kind.code();
        out[field::SENDER].copy_from_slice(&self.sender.0.to_be_bytes());
        out[field::RECEIVER].copy_from_slice(&self.receiver.0.to_be_bytes());
        out[field::INCARNATION].copy_from_slice(&self.incarnation.to_be_bytes());
        out[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Parses the header of a whole frame (length, magic, version and kind are checked).
    ///
    /// # Errors
    /// [`FrameError::Garbled`], [`FrameError::Version`] or [`FrameError::UnknownKind`].
    pub fn parse(frame: &[u8]) -> Result<Header, FrameError> {
        if frame.len() < FRAME_OVERHEAD {
            return Err(FrameError::Garbled("shorter than header and tag"));
        }
        if frame.len() > MAX_FRAME {
            return Err(FrameError::Garbled("longer than the largest frame"));
        }
        if frame.get(field::MAGIC) != Some(&MAGIC[..]) {
            return Err(FrameError::Garbled("bad magic"));
        }
        let version = frame[field::VERSION];
        let signed = match version {
            VERSION => false,
            VERSION_SIGNED => true,
            _ => return Err(FrameError::Version(version)),
        };
        let kind = Kind::from_code(frame[field::KIND]).ok_or(FrameError::UnknownKind(frame[3]))?;
        if signed && kind == Kind::Hello && frame.len() < FRAME_OVERHEAD + SIG_LEN {
            return Err(FrameError::Garbled(
                "hello shorter than header, tag and signature",
            ));
        }
        Ok(Header {
            kind,
            sender: NodeId(be_u16(frame, field::SENDER)),
            receiver: NodeId(be_u16(frame, field::RECEIVER)),
            incarnation: be_u64(frame, field::INCARNATION),
            seq: be_u64(frame, field::SEQ),
            signed,
        })
    }

    /// The AEAD nonce: sender (2 bytes), two zero bytes, frame sequence number (8 bytes).
    pub fn nonce(&self) -> [u8; 12] {
        nonce(self.sender, self.seq)
    }
}

/// The AEAD nonce of frame `seq` from `sender`.
pub fn nonce(sender: NodeId, seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[0..2].copy_from_slice(&sender.0.to_be_bytes());
    n[4..12].copy_from_slice(&seq.to_be_bytes());
    n
}

/// Appends `len` as a minimal LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut len: usize) {
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

/// Bytes a varint of `len` takes.
pub fn varint_len(len: usize) -> usize {
    match len {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        _ => 3,
    }
}

/// Reads a minimal varint of at most 3 bytes; returns the value and bytes consumed.
fn get_varint(b: &[u8]) -> Result<(usize, usize), FrameError> {
    let mut v = 0usize;
    for i in 0..3 {
        let byte = *b
            .get(i)
            .ok_or(FrameError::Malformed("truncated record length"))?;
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(FrameError::Malformed("non-minimal record length"));
            }
            return Ok((v, i + 1));
        }
    }
    Err(FrameError::Malformed("record length longer than 3 bytes"))
}

/// The records of one delivered data batch: one allocation per batch, iterated without copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    /// Records area (after the data prefix), already validated.
    bytes: Vec<u8>,
    count: usize,
}

// records may carry key material (an ESP SA's keys)
impl Drop for RecordBatch {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

impl RecordBatch {
    /// Validates a records area: every record has a minimal non-zero length and fits exactly.
    ///
    /// # Errors
    /// [`FrameError::Malformed`] on any inconsistency.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, FrameError> {
        let mut at = 0;
        let mut count = 0;
        while at < bytes.len() {
            let (len, n) = get_varint(&bytes[at..])?;
            if len == 0 {
                return Err(FrameError::Malformed("zero-length record"));
            }
            let end = at
                .checked_add(n)
                .and_then(|x| x.checked_add(len))
                .ok_or(FrameError::Malformed("record length overflows"))?;
            if end > bytes.len() {
                return Err(FrameError::Malformed("record runs past the frame"));
            }
            at = end;
            count += 1;
        }
        Ok(Self { bytes, count })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records, in order.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            bytes: &self.bytes,
            at: 0,
        }
    }
}

/// Iterator over the records of a [`RecordBatch`].
pub struct RecordIter<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.at..)?;
        if rest.is_empty() {
            return None;
        }
        let (len, n) = get_varint(rest).ok()?;
        let rec = rest.get(n..n + len)?;
        self.at += n + len;
        Some(rec)
    }
}

/// Hello payload length (without the flags byte, which is optional).
pub const HELLO_LEN: usize = 48;
/// X25519 public key length (a version 4 hello's key share).
pub const SHARE_LEN: usize = 32;
/// Hello flag: the sender asks for a hello in return (it does not yet know that the receiver
/// knows its incarnation).
pub const HELLO_ANSWER: u8 = 1;

/// A hello payload (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloRepr {
    /// The receiver's incarnation as the sender knows it (0: unknown).
    pub known: u64,
    /// Another incarnation of the receiver's id heard alongside `known` (0: none).
    pub conflict: u64,
    /// The sender's challenge to the receiver.
    pub nonce: [u8; 16],
    /// The receiver's challenge as the sender last heard it (zeros: none).
    pub echo: [u8; 16],
    /// Flags ([`HELLO_ANSWER`]).
    pub flags: u8,
    /// Version 4: the sender's X25519 public key of this incarnation.
    pub share: Option<[u8; SHARE_LEN]>,
}

impl HelloRepr {
    /// Encodes into 49 bytes (81 with a key share).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.known.to_be_bytes());
        out.extend_from_slice(&self.conflict.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.echo);
        out.push(self.flags);
        if let Some(share) = &self.share {
            out.extend_from_slice(share);
        }
    }

    /// Decodes 48 or 49 bytes, or 81 (with a key share).
    ///
    /// # Errors
    /// [`FrameError::Malformed`] on a wrong length.
    pub fn parse(b: &[u8]) -> Result<Self, FrameError> {
        let share = match b.len() {
            HELLO_LEN | 49 => None,
            81 => {
                let mut k = [0u8; SHARE_LEN];
                k.copy_from_slice(&b[HELLO_LEN + 1..]);
                Some(k)
            }
            _ => {
                return Err(FrameError::Malformed(
                    "hello payload is not 48, 49 or 81 bytes",
                ))
            }
        };
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&b[16..32]);
        let mut echo = [0u8; 16];
        echo.copy_from_slice(&b[32..48]);
        Ok(Self {
            known: be_u64(b, 0..8),
            conflict: be_u64(b, 8..16),
            nonce,
            echo,
            flags: b.get(HELLO_LEN).copied().unwrap_or(0),
            share,
        })
    }
}

/// An ack payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckRepr {
    /// The data sender's incarnation this ack refers to.
    pub acked_incarnation: u64,
    /// Every batch below this was received.
    pub next_expected: u64,
    /// Bit `i`: batch `next_expected + 1 + i` was received.
    pub sack: u64,
}

impl AckRepr {
    /// Encodes into 24 bytes.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.acked_incarnation.to_be_bytes());
        out.extend_from_slice(&self.next_expected.to_be_bytes());
        out.extend_from_slice(&self.sack.to_be_bytes());
    }

    /// Decodes exactly 24 bytes.
    ///
    /// # Errors
    /// [`FrameError::Malformed`] on a wrong length.
    pub fn parse(b: &[u8]) -> Result<Self, FrameError> {
        if b.len() != ACK_LEN {
            return Err(FrameError::Malformed("ack payload is not 24 bytes"));
        }
        Ok(Self {
            acked_incarnation: be_u64(b, 0..8),
            next_expected: be_u64(b, 8..16),
            sack: be_u64(b, 16..24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fixture() {
        let h = Header {
            kind: Kind::Ack,
            sender: NodeId(0x0102),
            receiver: NodeId(3),
            incarnation: 0x1122334455667788,
            seq: 9,
            signed: false,
        };
        let mut b = [0u8; HEADER_LEN];
        h.emit(&mut b);
        assert_eq!(
            b,
            [
                b'C', b'D', 2, 2, 1, 2, 0, 3, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0, 0,
                0, 0, 0, 0, 0, 9
            ]
        );
        let mut frame = b.to_vec();
        frame.extend_from_slice(&[0; TAG_LEN]);
        assert_eq!(Header::parse(&frame).unwrap(), h);
        frame[2] = 1;
        assert_eq!(Header::parse(&frame), Err(FrameError::Version(1)));
        frame[2] = 2;
        frame[3] = 7;
        assert_eq!(Header::parse(&frame), Err(FrameError::UnknownKind(7)));
        assert!(matches!(
            Header::parse(&frame[..30]),
            Err(FrameError::Garbled(_))
        ));
    }

    #[test]
    fn varints_and_records() {
        let mut v = Vec::new();
        for len in [1usize, 127, 128, 16383, 16384] {
            v.clear();
            put_varint(&mut v, len);
            assert_eq!(v.len(), varint_len(len));
            assert_eq!(get_varint(&v).unwrap(), (len, v.len()));
        }
        assert!(get_varint(&[0x80, 0x00]).is_err());
        assert!(get_varint(&[0x80, 0x80, 0x80]).is_err());
        let mut area = Vec::new();
        put_varint(&mut area, 3);
        area.extend_from_slice(b"abc");
        put_varint(&mut area, 1);
        area.push(b'z');
        let batch = RecordBatch::parse(area.clone()).unwrap();
        assert_eq!(batch.iter().collect::<Vec<_>>(), vec![&b"abc"[..], b"z"]);
        area.push(5);
        assert!(RecordBatch::parse(area).is_err());
        assert!(RecordBatch::parse(vec![0]).is_err());
    }

    #[test]
    fn hello_round_trip() {
        let h = HelloRepr {
            known: 5,
            conflict: 6,
            nonce: [1; 16],
            echo: [2; 16],
            flags: HELLO_ANSWER,
            share: None,
        };
        let mut v = Vec::new();
        h.emit(&mut v);
        assert_eq!(v.len(), HELLO_LEN + 1);
        assert_eq!(HelloRepr::parse(&v).unwrap(), h);
        assert_eq!(HelloRepr::parse(&v[..HELLO_LEN]).unwrap().flags, 0);
        assert!(HelloRepr::parse(&v[..8]).is_err());
        v.push(0);
        assert!(HelloRepr::parse(&v).is_err());
        // with a key share: 81 bytes, and every other length refused
        let k = HelloRepr {
            share: Some([7; SHARE_LEN]),
            ..h
        };
        let mut v = Vec::new();
        k.emit(&mut v);
        assert_eq!(v.len(), HELLO_LEN + 1 + SHARE_LEN);
        assert_eq!(HelloRepr::parse(&v).unwrap(), k);
        assert!(HelloRepr::parse(&v[..80]).is_err());
        v.push(0);
        assert!(HelloRepr::parse(&v).is_err());
    }
}
