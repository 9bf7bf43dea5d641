//! Replication events (claims 4-6, 15, 16; figure 4) and their compact binary codec.
//!
//! A [`Message`] is one event with its sender, the sender's incarnation (changes when the
//! sender restarts with empty memory) and a per-sender sequence number (0 for unsequenced,
//! addressed messages such as snapshots and repair requests). Framing (length prefixes,
//! batching, authentication and encryption) is the transport's business.
//!
//! Layout (little-endian; `v` = LEB128 varint, at most 10 bytes, no overflow):
//!
//! ```text
//! message := format:u8(=2) sender:u16 incarnation:u32 seq:v event
//! event   := tag:u8 body
//!   1 Add / 2 Update : entry
//!   3 Clear          : key dist:u16 version:v
//!   4 SaState        : spi:u32 dist:u16 dst:addr outbound_seq:v replay_top:v replay_bitmap:u64
//!   5 Snapshot       : dist:u16 epoch:v count:v entry*
//!   6 Digest         : epoch:v count:v (dist:u16 entries:v hash:u64)*
//!   7 RepairRequest  : epoch:v count:v dist:u16*
//! entry   := key dist:u16 flags:u8 state:u8 action:u8 rule:u16 timeout_s:v creator:u16
//!            version:v [user:u32] [tunnel_spi:u32] [nat]
//! key     := kind:u8 ...   kind low 6 bits: 1 TCP 2 UDP (lo_addr lo_port hi_addr hi_port),
//!            3 ICMP (lo hi ident:u16), 4 ESP (src dst spi:u32),
//!            5 ISAKMP (lo hi cookie:u64 msgid:u32), 6 TLS / 7 HTTP (digest:16);
//!            bit 6 = first address is IPv6, bit 7 = second is IPv6
//! nat     := kind:u8 (bit0 destination, bit7 IPv6) addr port:u16
//! ```
//!
//! An IPv4 TCP add is 35-37 bytes. Decoding is strict: every byte is accounted for, unknown
//! codes, unused flag bits, overlong varints and trailing bytes are errors, and no input makes
//! it panic or allocate more than the input could describe. So the encoding is canonical:
//! whatever decodes re-encodes to the same bytes.

use super::common::DistDigest;
use super::entry::{
    Action, ConnState, Endpoint, Entry, FlowKey, L4Proto, Nat, NatKind, SaRef, SessionDigest,
    UserId,
};
use super::ids::{DistributionId, Epoch, Millis, NodeId};
use super::siphash::siphash13;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The codec's format version. 2: ESP keys carry the SA's source and ISAKMP keys their two
/// peer addresses (claim 12); a format-1 message is refused, not read with guessed addresses.
pub const FORMAT: u8 = 2;

/// Smallest possible encoded entry, used to bound counts before allocating.
const MIN_ENTRY_LEN: usize = 20;

/// Replicated state of an IPsec SA (no key material, ever: invariant 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaState {
    /// SPI.
    pub spi: u32,
    /// The tunnel's distribution identifier.
    pub dist: DistributionId,
    /// Destination address of the SA.
    pub dst: IpAddr,
    /// Next outbound sequence number (a takeover continues above it: invariant 5).
    pub outbound_seq: u64,
    /// Highest inbound sequence number accepted.
    pub replay_top: u64,
    /// Inbound replay window bitmap below `replay_top`.
    pub replay_bitmap: u64,
}

/// A replication event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new entry.
    Add(Entry),
    /// A changed entry (higher version).
    Update(Entry),
    /// A cleared entry.
    Clear {
        /// Key of the cleared entry.
        key: FlowKey,
        /// Its identifier.
        dist: DistributionId,
        /// The version cleared.
        version: u32,
    },
    /// SA state (sequence numbers and replay window).
    SaState(SaState),
    /// All entries of one identifier, from its owner (repair, handover).
    Snapshot {
        /// The identifier.
        dist: DistributionId,
        /// The sender's allocation epoch.
        epoch: Epoch,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// Digests of the identifiers the sender owns (anti-entropy).
    Digest {
        /// The sender's allocation epoch.
        epoch: Epoch,
        /// Per-identifier digests.
        items: Vec<(DistributionId, DistDigest)>,
    },
    /// A request for snapshots of these identifiers.
    RepairRequest {
        /// The requester's allocation epoch.
        epoch: Epoch,
        /// The identifiers.
        ids: Vec<DistributionId>,
    },
}

/// One event on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sending node.
    pub sender: NodeId,
    /// The sender's incarnation.
    pub incarnation: u32,
    /// Per-sender sequence number of broadcast events (from 1); 0 = unsequenced.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// Why bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("truncated: {field} at offset {offset}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where.
        offset: usize,
    },
    /// Unknown format version.
    #[error("unsupported format version {0}")]
    Format(u8),
    /// An unknown code.
    #[error("bad {field} code {value} at offset {offset}")]
    BadCode {
        /// The field.
        field: &'static str,
        /// The value.
        value: u8,
        /// Where.
        offset: usize,
    },
    /// A varint longer than 10 bytes or beyond 64 bits, or a value out of its field's range.
    #[error("bad number in {field} at offset {offset}")]
    BadNumber {
        /// The field.
        field: &'static str,
        /// Where.
        offset: usize,
    },
    /// A count larger than the remaining input could hold.
    #[error("{field} count {count} exceeds the input")]
    TooMany {
        /// The field.
        field: &'static str,
        /// The count.
        count: u64,
    },
    /// Bytes after the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(DecodeError::Truncated {
                field,
                offset: self.pos,
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.arr::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.arr(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.arr(field)?))
    }
    fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.u8(field)?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(DecodeError::BadNumber {
                    field,
                    offset: start,
                });
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    // Overlong (a trailing zero group): only the minimal form is accepted, so
                    // every message has exactly one encoding.
                    return Err(DecodeError::BadNumber {
                        field,
                        offset: start,
                    });
                }
                return Ok(v);
            }
        }
        Err(DecodeError::BadNumber {
            field,
            offset: start,
        })
    }
    fn varint_u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let offset = self.pos;
        let v = self.varint(field)?;
        u32::try_from(v).map_err(|_| DecodeError::BadNumber { field, offset })
    }
    fn addr(&mut self, v6: bool, field: &'static str) -> Result<IpAddr, DecodeError> {
        Ok(if v6 {
            IpAddr::V6(Ipv6Addr::from(self.arr::<16>(field)?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.arr::<4>(field)?))
        })
    }
    fn count(&mut self, field: &'static str, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.varint(field)?;
        let remaining = (self.b.len() - self.pos) as u64;
        if n.saturating_mul(min_item as u64) > remaining {
            return Err(DecodeError::TooMany { field, count: n });
        }
        usize::try_from(n).map_err(|_| DecodeError::TooMany { field, count: n })
    }
    fn bad(&self, field: &'static str, value: u8) -> DecodeError {
        DecodeError::BadCode {
            field,
            value,
            offset: self.pos.saturating_sub(1),
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_addr(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v) => out.extend_from_slice(&v.octets()),
        IpAddr::V6(v) => out.extend_from_slice(&v.octets()),
    }
}

fn fam_bits(a: IpAddr, b: Option<IpAddr>) -> u8 {
    let mut f = 0;
    if a.is_ipv6() {
        f |= 0x40;
    }
    if b.is_some_and(|b| b.is_ipv6()) {
        f |= 0x80;
    }
    f
}

/// Appends the encoding of a key.
pub fn encode_key(out: &mut Vec<u8>, key: &FlowKey) {
    match *key {
        FlowKey::Transport { proto, lo, hi } => {
            let kind = match proto {
                L4Proto::Tcp => 1,
                L4Proto::Udp => 2,
            };
            out.push(kind | fam_bits(lo.addr, Some(hi.addr)));
            put_addr(out, lo.addr);
            out.extend_from_slice(&lo.port.to_le_bytes());
            put_addr(out, hi.addr);
            out.extend_from_slice(&hi.port.to_le_bytes());
        }
        FlowKey::Icmp { lo, hi, ident } => {
            out.push(3 | fam_bits(lo, Some(hi)));
            put_addr(out, lo);
            put_addr(out, hi);
            out.extend_from_slice(&ident.to_le_bytes());
        }
        FlowKey::Esp { src, dst, spi } => {
            out.push(4 | fam_bits(src, Some(dst)));
            put_addr(out, src);
            put_addr(out, dst);
            out.extend_from_slice(&spi.to_le_bytes());
        }
        FlowKey::Isakmp {
            lo,
            hi,
            initiator_cookie,
            message_id,
        } => {
            out.push(5 | fam_bits(lo, Some(hi)));
            put_addr(out, lo);
            put_addr(out, hi);
            out.extend_from_slice(&initiator_cookie.to_le_bytes());
            out.extend_from_slice(&message_id.to_le_bytes());
        }
        FlowKey::TlsSession(d) => {
            out.push(6);
            out.extend_from_slice(&d.0);
        }
        FlowKey::HttpCookie(d) => {
            out.push(7);
            out.extend_from_slice(&d.0);
        }
    }
}

fn decode_key(r: &mut Reader<'_>) -> Result<FlowKey, DecodeError> {
    let k = r.u8("key kind")?;
    let (kind, f1, f2) = (k & 0x3f, k & 0x40 != 0, k & 0x80 != 0);
    let key = match kind {
        1 | 2 => {
            let lo_addr = r.addr(f1, "key address")?;
            let lo_port = r.u16("key port")?;
            let hi_addr = r.addr(f2, "key address")?;
            let hi_port = r.u16("key port")?;
            FlowKey::Transport {
                proto: if kind == 1 {
                    L4Proto::Tcp
                } else {
                    L4Proto::Udp
                },
                lo: Endpoint::new(lo_addr, lo_port),
                hi: Endpoint::new(hi_addr, hi_port),
            }
        }
        3 => FlowKey::Icmp {
            lo: r.addr(f1, "key address")?,
            hi: r.addr(f2, "key address")?,
            ident: r.u16("icmp ident")?,
        },
        4 => FlowKey::Esp {
            src: r.addr(f1, "esp src")?,
            dst: r.addr(f2, "esp dst")?,
            spi: r.u32("esp spi")?,
        },
        5 => FlowKey::Isakmp {
            lo: r.addr(f1, "isakmp peer")?,
            hi: r.addr(f2, "isakmp peer")?,
            initiator_cookie: r.u64("isakmp cookie")?,
            message_id: r.u32("isakmp message id")?,
        },
        6 | 7 if !f1 && !f2 => match kind {
            6 => FlowKey::TlsSession(SessionDigest(r.arr("tls digest")?)),
            _ => FlowKey::HttpCookie(SessionDigest(r.arr("http digest")?)),
        },
        _ => return Err(r.bad("key kind", k)),
    };
    Ok(key)
}

/// Appends the encoding of an entry's replicated fields.
pub fn encode_entry(out: &mut Vec<u8>, e: &Entry) {
    encode_key(out, &e.key);
    out.extend_from_slice(&e.dist.0.to_le_bytes());
    let mut flags = 0u8;
    if e.initiator_is_lo {
        flags |= 1;
    }
    if e.user.is_some() {
        flags |= 2;
    }
    if e.tunnel.is_some() {
        flags |= 4;
    }
    if e.nat.is_some() {
        flags |= 8;
    }
    out.push(flags);
    out.push(e.state as u8);
    out.push(e.action as u8);
    out.extend_from_slice(&e.rule.to_le_bytes());
    put_varint(out, u64::from(e.timeout_s));
    out.extend_from_slice(&e.creator.0.to_le_bytes());
    put_varint(out, u64::from(e.version));
    if let Some(u) = e.user {
        out.extend_from_slice(&u.0.to_le_bytes());
    }
    if let Some(t) = e.tunnel {
        out.extend_from_slice(&t.spi.to_le_bytes());
    }
    if let Some(n) = e.nat {
        let mut k = match n.kind {
            NatKind::Source => 0,
            NatKind::Destination => 1,
        };
        if n.addr.is_ipv6() {
            k |= 0x80;
        }
        out.push(k);
        put_addr(out, n.addr);
        out.extend_from_slice(&n.port.to_le_bytes());
    }
}

fn decode_entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let key = decode_key(r)?;
    let dist = DistributionId(r.u16("dist")?);
    let flags = r.u8("entry flags")?;
    if flags & 0xf0 != 0 {
        return Err(r.bad("entry flags", flags));
    }
    let s = r.u8("state")?;
    let state = ConnState::from_code(s).ok_or_else(|| r.bad("state", s))?;
    let a = r.u8("action")?;
    let action = Action::from_code(a).ok_or_else(|| r.bad("action", a))?;
    let rule = r.u16("rule")?;
    let timeout_s = r.varint_u32("timeout")?;
    let creator = NodeId(r.u16("creator")?);
    let version = r.varint_u32("version")?;
    let user = if flags & 2 != 0 {
        Some(UserId(r.u32("user")?))
    } else {
        None
    };
    let tunnel = if flags & 4 != 0 {
        Some(SaRef {
            spi: r.u32("tunnel spi")?,
        })
    } else {
        None
    };
    let nat = if flags & 8 != 0 {
        let k = r.u8("nat kind")?;
        if k & 0x7e != 0 {
            return Err(r.bad("nat kind", k));
        }
        let kind = if k & 1 != 0 {
            NatKind::Destination
        } else {
            NatKind::Source
        };
        let addr = r.addr(k & 0x80 != 0, "nat address")?;
        let port = r.u16("nat port")?;
        Some(Nat { kind, addr, port })
    } else {
        None
    };
    Ok(Entry {
        key,
        dist,
        initiator_is_lo: flags & 1 != 0,
        state,
        action,
        rule,
        timeout_s,
        user,
        tunnel,
        nat,
        creator,
        version,
        last_seen: Millis(0),
        packets: 0,
        bytes: 0,
    })
}

/// A 64-bit fingerprint of an entry's replicated content (same on every node).
pub fn entry_fingerprint(e: &Entry) -> u64 {
    thread_local! {
        // One encoding buffer per thread: this runs for every replicated add and clear.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(128));
    }
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        buf.clear();
        encode_entry(&mut buf, e);
        siphash13(0x6669_6e67_6572_7072, 0x696e_7420_7631_0000, &buf)
    })
}

impl Message {
    /// Appends the encoding of the message to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FORMAT);
        out.extend_from_slice(&self.sender.0.to_le_bytes());
        out.extend_from_slice(&self.incarnation.to_le_bytes());
        put_varint(out, self.seq);
        match &self.event {
            Event::Add(e) => {
                out.push(1);
                encode_entry(out, e);
            }
            Event::Update(e) => {
                out.push(2);
                encode_entry(out, e);
            }
            Event::Clear { key, dist, version } => {
                out.push(3);
                encode_key(out, key);
                out.extend_from_slice(&dist.0.to_le_bytes());
                put_varint(out, u64::from(*version));
            }
            Event::SaState(s) => {
                out.push(4);
                out.extend_from_slice(&s.spi.to_le_bytes());
                out.extend_from_slice(&s.dist.0.to_le_bytes());
                out.push(u8::from(s.dst.is_ipv6()));
                put_addr(out, s.dst);
                put_varint(out, s.outbound_seq);
                put_varint(out, s.replay_top);
                out.extend_from_slice(&s.replay_bitmap.to_le_bytes());
            }
            Event::Snapshot {
                dist,
                epoch,
                entries,
            } => {
                out.push(5);
                out.extend_from_slice(&dist.0.to_le_bytes());
                put_varint(out, epoch.0);
                put_varint(out, entries.len() as u64);
                for e in entries {
                    encode_entry(out, e);
                }
            }
            Event::Digest { epoch, items } => {
                out.push(6);
                put_varint(out, epoch.0);
                put_varint(out, items.len() as u64);
                for (d, g) in items {
                    out.extend_from_slice(&d.0.to_le_bytes());
                    put_varint(out, u64::from(g.count));
                    out.extend_from_slice(&g.hash.to_le_bytes());
                }
            }
            Event::RepairRequest { epoch, ids } => {
                out.push(7);
                put_varint(out, epoch.0);
                put_varint(out, ids.len() as u64);
                for d in ids {
                    out.extend_from_slice(&d.0.to_le_bytes());
                }
            }
        }
    }

    /// The encoding of the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        self.encode_into(&mut out);
        out
    }

    /// Decodes exactly one message from `bytes`.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the field and offset; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader { b: bytes, pos: 0 };
        let f = r.u8("format")?;
        if f != FORMAT {
            return Err(DecodeError::Format(f));
        }
        let sender = NodeId(r.u16("sender")?);
        let incarnation = r.u32("incarnation")?;
        let seq = r.varint("seq")?;
        let tag = r.u8("event tag")?;
        let event = match tag {
            1 => Event::Add(decode_entry(&mut r)?),
            2 => Event::Update(decode_entry(&mut r)?),
            3 => Event::Clear {
                key: decode_key(&mut r)?,
                dist: DistributionId(r.u16("dist")?),
                version: r.varint_u32("version")?,
            },
            4 => {
                let spi = r.u32("spi")?;
                let dist = DistributionId(r.u16("dist")?);
                let fam = r.u8("sa family")?;
                if fam > 1 {
                    return Err(r.bad("sa family", fam));
                }
                Event::SaState(SaState {
                    spi,
                    dist,
                    dst: r.addr(fam == 1, "sa dst")?,
                    outbound_seq: r.varint("outbound seq")?,
                    replay_top: r.varint("replay top")?,
                    replay_bitmap: r.u64("replay bitmap")?,
                })
            }
            5 => {
                let dist = DistributionId(r.u16("dist")?);
                let epoch = Epoch(r.varint("epoch")?);
                let n = r.count("snapshot entries", MIN_ENTRY_LEN)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(decode_entry(&mut r)?);
                }
                Event::Snapshot {
                    dist,
                    epoch,
                    entries,
                }
            }
            6 => {
                let epoch = Epoch(r.varint("epoch")?);
                let n = r.count("digest items", 11)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let d = DistributionId(r.u16("dist")?);
                    let count = r.varint_u32("digest count")?;
                    let hash = r.u64("digest hash")?;
                    items.push((d, DistDigest { count, hash }));
                }
                Event::Digest { epoch, items }
            }
            7 => {
                let epoch = Epoch(r.varint("epoch")?);
                let n = r.count("repair ids", 2)?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(DistributionId(r.u16("dist")?));
                }
                Event::RepairRequest { epoch, ids }
            }
            _ => return Err(r.bad("event tag", tag)),
        };
        if r.pos != bytes.len() {
            return Err(DecodeError::Trailing(bytes.len() - r.pos));
        }
        Ok(Message {
            sender,
            incarnation,
            seq,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tcp4_entry() -> Entry {
        let (k, dir) = FlowKey::transport(
            L4Proto::Tcp,
            Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 49152),
            Endpoint::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 80)), 443),
        );
        let mut e = Entry::new(k, DistributionId(200), ConnState::SynSent, NodeId(3));
        e.initiator_is_lo = dir;
        e.rule = 7;
        e
    }

    #[test]
    fn ipv4_tcp_add_is_small() {
        let m = Message {
            sender: NodeId(3),
            incarnation: 0xdead_beef,
            seq: 1_000_000,
            event: Event::Add(tcp4_entry()),
        };
        let b = m.encode();
        assert!(b.len() <= 40, "{} bytes", b.len());
        assert_eq!(Message::decode(&b).unwrap(), m);
    }

    #[test]
    fn all_events_round_trip_and_truncations_fail() {
        let mut e = tcp4_entry();
        e.user = Some(UserId(42));
        e.tunnel = Some(SaRef { spi: 0x1234 });
        e.nat = Some(Nat {
            kind: NatKind::Destination,
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            port: 8080,
        });
        let events = vec![
            Event::Add(e.clone()),
            Event::Update(e.clone()),
            Event::Clear {
                key: FlowKey::Esp {
                    src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                    dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    spi: 9,
                },
                dist: DistributionId(1),
                version: u32::MAX,
            },
            Event::SaState(SaState {
                spi: 5,
                dist: DistributionId(2),
                dst: IpAddr::V4(Ipv4Addr::BROADCAST),
                outbound_seq: u64::MAX,
                replay_top: 77,
                replay_bitmap: 0xffff,
            }),
            Event::Snapshot {
                dist: DistributionId(200),
                epoch: Epoch(9),
                entries: vec![e.clone(), tcp4_entry()],
            },
            Event::Digest {
                epoch: Epoch(3),
                items: vec![(DistributionId(4), DistDigest { count: 3, hash: 99 })],
            },
            Event::RepairRequest {
                epoch: Epoch(1),
                ids: vec![DistributionId(4), DistributionId(5)],
            },
        ];
        for ev in events {
            let m = Message {
                sender: NodeId(1),
                incarnation: 2,
                seq: 0,
                event: ev,
            };
            let b = m.encode();
            assert_eq!(Message::decode(&b).unwrap(), m);
            for cut in 0..b.len() {
                assert!(Message::decode(&b[..cut]).is_err());
            }
            let mut long = b.clone();
            long.push(0);
            assert_eq!(Message::decode(&long), Err(DecodeError::Trailing(1)));
        }
    }

    #[test]
    fn ipsec_keys_carry_their_peer_addresses() {
        let a = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let b = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let esp = FlowKey::Esp {
            src: a,
            dst: b,
            spi: 0x0102_0304,
        };
        let mut out = Vec::new();
        encode_key(&mut out, &esp);
        let mut want = vec![4 | 0x80, 198, 51, 100, 7];
        want.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        want.extend_from_slice(&[4, 3, 2, 1]);
        assert_eq!(out, want);
        let (ike, _) = FlowKey::isakmp(b, a, 0x1122_3344_5566_7788, 9);
        out.clear();
        encode_key(&mut out, &ike);
        assert_eq!(&out[..5], &[5 | 0x80, 198, 51, 100, 7]);
        assert_eq!(out.len(), 1 + 4 + 16 + 8 + 4);
        for key in [esp, ike] {
            let mut e = tcp4_entry();
            e.key = key;
            let m = Message {
                sender: NodeId(1),
                incarnation: 2,
                seq: 3,
                event: Event::Add(e),
            };
            let bytes = m.encode();
            assert_eq!(Message::decode(&bytes).unwrap(), m);
            // The previous format (no addresses in these keys) is refused, not guessed at.
            let mut old = bytes.clone();
            old[0] = 1;
            assert_eq!(Message::decode(&old), Err(DecodeError::Format(1)));
        }
    }

    #[test]
    fn hostile_counts_and_varints() {
        // Snapshot claiming 2^62 entries.
        let mut b = vec![FORMAT, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0];
        put_varint(&mut b, 1 << 62);
        assert!(matches!(
            Message::decode(&b),
            Err(DecodeError::TooMany { .. })
        ));
        // An 11-byte varint seq.
        let mut b = vec![FORMAT, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0xff; 11]);
        assert!(matches!(
            Message::decode(&b),
            Err(DecodeError::BadNumber { .. })
        ));
        assert_eq!(Message::decode(&[9]), Err(DecodeError::Format(9)));
        // An overlong varint (seq 0 as two bytes).
        let b = [FORMAT, 0, 0, 0, 0, 0, 0, 0x80, 0x00, 7, 0];
        assert!(matches!(
            Message::decode(&b),
            Err(DecodeError::BadNumber { field: "seq", .. })
        ));
    }
}
