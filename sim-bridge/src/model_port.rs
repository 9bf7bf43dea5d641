//! Reference model of the packet port block (`hdl/CARD.md`, "Packet port block"): the
//! parser, the keyed distribution identifier, the owned bitmap, the verdicts, the host queues
//! and the counters. The CAM lookup itself is the CAM model's: [`crate::model::ModelCard`]
//! runs `PortModel::begin`, its data-path lookup, then `PortModel::finish`.
//!
//! [`parse`] is public and pure: it is the card's reading of a frame, which tests hold to the
//! host's parser and `Distributor`.

use std::collections::VecDeque;

use hal::regs::{block_type, port, UNMAPPED_PATTERN};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

use crate::model::header_read;

const FRAME: usize = port::FRAME_BYTES as usize;
const IDS: usize = port::IDS as usize;
const OW: usize = port::OWNED_WORDS as usize;
const REASONS: usize = port::REASONS as usize;
const DEPTH_Q: usize = port::HOSTQ_DEPTH as usize;
/// Key width in 32-bit words.
const KW: usize = hal::regs::cam::KEY_WORDS as usize;

/// Element `i` of register array `r` when `o` falls inside it.
fn in_array(r: hal::regs::Reg, o: u32) -> Option<usize> {
    (r.offset..r.offset + 4 * r.count)
        .contains(&o)
        .then(|| ((o - r.offset) / 4) as usize)
}

/// An IP address as the card holds it: 4 or 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    bytes: [u8; 16],
    v6: bool,
}

impl Addr {
    fn v4(b: &[u8]) -> Self {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&b[..4]);
        Addr { bytes, v6: false }
    }
    fn v6(b: &[u8]) -> Self {
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&b[..16]);
        Addr { bytes, v6: true }
    }
    /// The address's bytes (4 for IPv4, 16 for IPv6).
    #[must_use]
    pub fn octets(&self) -> &[u8] {
        if self.v6 {
            &self.bytes
        } else {
            &self.bytes[..4]
        }
    }
    /// Whether this is an IPv6 address.
    #[must_use]
    pub fn is_v6(&self) -> bool {
        self.v6
    }
    /// The address as CAM key words A or B (`KEY[0]` = bits 31:0 of the address).
    fn words(&self) -> [u32; 4] {
        let o = self.octets();
        if self.v6 {
            let v = u128::from_be_bytes(self.bytes);
            [
                v as u32,
                (v >> 32) as u32,
                (v >> 64) as u32,
                (v >> 96) as u32,
            ]
        } else {
            [u32::from_be_bytes([o[0], o[1], o[2], o[3]]), 0, 0, 0]
        }
    }
}

/// What the card keys a frame on (CARD.md step 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKind {
    /// TCP with its flags byte.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte (`b[l4+13]`).
        flags: u8,
    },
    /// UDP that is not IKE or ESP-in-UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP or ICMPv6 echo.
    Icmp {
        /// The identifier field.
        ident: u16,
    },
    /// ESP (IP protocol 50 or UDP 4500 without the non-ESP marker).
    Esp {
        /// SPI.
        spi: u32,
    },
    /// IKE on UDP 500 or 4500.
    Ike {
        /// Initiator cookie.
        cookie: u64,
        /// Message id.
        message_id: u32,
    },
}

/// A frame the card can key on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// The flow.
    pub kind: FlowKind,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the transport header.
    pub l4: usize,
}

/// A frame the parser stops on: its reason code ([`port::reason`]) and the offsets reached
/// (0 = not reached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    /// Reason code.
    pub reason: u32,
    /// Offset of the IP header, or 0.
    pub l3: usize,
    /// Offset of the transport header, or 0.
    pub l4: usize,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from(be32(b, at)) << 32 | u64::from(be32(b, at + 4))
}

/// CARD.md steps 1-5: the card's reading of a frame.
///
/// # Errors
/// [`Stop`] with the reason the card drops or queues the frame for.
pub fn parse(b: &[u8]) -> Result<Parsed, Stop> {
    use port::reason as r;
    let stop = |reason, l3, l4| Err(Stop { reason, l3, l4 });
    let len = b.len();
    if len > FRAME {
        return stop(r::TOO_LONG, 0, 0);
    }
    if len < 14 {
        return stop(r::RUNT, 0, 0);
    }
    let mut t = be16(b, 12);
    let mut l3 = 14;
    if t == 0x8100 {
        if len < 18 {
            return stop(r::MALFORMED, 0, 0);
        }
        t = be16(b, 16);
        l3 = 18;
    }
    // The payload of the IP layer: [start, end), protocol p.
    let (src, dst, mut p, mut start, end) = match t {
        0x0800 => {
            if len - l3 < 20 || b[l3] >> 4 != 4 {
                return stop(r::MALFORMED, l3, 0);
            }
            let hl = usize::from(b[l3] & 0xF) * 4;
            let total = usize::from(be16(b, l3 + 2));
            if hl < 20 || hl > len - l3 || total < hl || total > len - l3 {
                return stop(r::MALFORMED, l3, 0);
            }
            let frag = be16(b, l3 + 6);
            if frag & 0x2000 != 0 || frag & 0x1FFF != 0 {
                return stop(r::FRAGMENT, l3, 0);
            }
            (
                Addr::v4(&b[l3 + 12..]),
                Addr::v4(&b[l3 + 16..]),
                b[l3 + 9],
                l3 + hl,
                l3 + total,
            )
        }
        0x86DD => {
            if len - l3 < 40 || b[l3] >> 4 != 6 {
                return stop(r::MALFORMED, l3, 0);
            }
            let plen = usize::from(be16(b, l3 + 4));
            if plen > len - l3 - 40 {
                return stop(r::MALFORMED, l3, 0);
            }
            (
                Addr::v6(&b[l3 + 8..]),
                Addr::v6(&b[l3 + 24..]),
                b[l3 + 6],
                l3 + 40,
                l3 + 40 + plen,
            )
        }
        _ => return stop(r::NOT_IP, 0, 0),
    };
    if src.v6 {
        let mut walked = 0;
        while matches!(p, 0 | 43 | 60) {
            if walked == port::V6_EXT_MAX {
                return stop(r::EXT_HEADERS, l3, 0);
            }
            if end - start < 8 {
                return stop(r::MALFORMED, l3, 0);
            }
            let hlen = 8 * (usize::from(b[start + 1]) + 1);
            if hlen > end - start {
                return stop(r::MALFORMED, l3, 0);
            }
            p = b[start];
            start += hlen;
            walked += 1;
        }
        if p == 44 {
            return stop(r::FRAGMENT, l3, 0);
        }
    }
    let l4 = start;
    let n = end - start;
    let at = |i: usize| l4 + i;
    let kind = match p {
        6 => {
            if n < 20 {
                return stop(r::MALFORMED, l3, l4);
            }
            let off = usize::from(b[at(12)] >> 4);
            if off < 5 || 4 * off > n {
                return stop(r::MALFORMED, l3, l4);
            }
            FlowKind::Tcp {
                sport: be16(b, at(0)),
                dport: be16(b, at(2)),
                flags: b[at(13)],
            }
        }
        17 => {
            if n < 8 {
                return stop(r::MALFORMED, l3, l4);
            }
            let ulen = usize::from(be16(b, at(4)));
            if !(8..=n).contains(&ulen) {
                return stop(r::MALFORMED, l3, l4);
            }
            let (sport, dport) = (be16(b, at(0)), be16(b, at(2)));
            let pay = at(8);
            let plen = ulen - 8;
            let ike = |o: usize, l: usize| {
                (l >= 24).then(|| FlowKind::Ike {
                    cookie: be64(b, o),
                    message_id: be32(b, o + 20),
                })
            };
            let udp = FlowKind::Udp { sport, dport };
            if sport == 500 || dport == 500 {
                ike(pay, plen).unwrap_or(udp)
            } else if sport == 4500 || dport == 4500 {
                if plen < 4 {
                    udp
                } else if be32(b, pay) == 0 {
                    ike(pay + 4, plen - 4).unwrap_or(udp)
                } else {
                    FlowKind::Esp { spi: be32(b, pay) }
                }
            } else {
                udp
            }
        }
        1 | 58 if (p == 58) == src.v6 => {
            if n < 8 {
                return stop(r::MALFORMED, l3, l4);
            }
            let ty = b[at(0)];
            let echo = if src.v6 {
                ty == 128 || ty == 129
            } else {
                ty == 8 || ty == 0
            };
            if !echo {
                return stop(r::NO_FLOW, l3, l4);
            }
            FlowKind::Icmp {
                ident: be16(b, at(4)),
            }
        }
        50 => {
            if n < 8 {
                return stop(r::MALFORMED, l3, l4);
            }
            FlowKind::Esp {
                spi: be32(b, at(0)),
            }
        }
        _ => return stop(r::NO_FLOW, l3, l4),
    };
    Ok(Parsed {
        src,
        dst,
        kind,
        l3,
        l4,
    })
}

impl Parsed {
    /// The canonical order: `(lo, lo port, hi, hi port)`; for ICMP, ESP and IKE the ports are 0.
    fn canonical(&self) -> (Addr, u16, Addr, u16) {
        let (sp, dp) = match self.kind {
            FlowKind::Tcp { sport, dport, .. } | FlowKind::Udp { sport, dport } => (sport, dport),
            _ => (0, 0),
        };
        if (self.src.octets(), sp) <= (self.dst.octets(), dp) {
            (self.src, sp, self.dst, dp)
        } else {
            (self.dst, dp, self.src, sp)
        }
    }

    /// The bytes CARD.md step 6 hashes.
    #[must_use]
    pub fn hash_input(&self) -> Vec<u8> {
        let (lo, lp, hi, hp) = self.canonical();
        let mut v = Vec::with_capacity(40);
        match self.kind {
            FlowKind::Tcp { .. } | FlowKind::Udp { .. } => {
                v.push(if matches!(self.kind, FlowKind::Tcp { .. }) {
                    1
                } else {
                    2
                });
                v.extend_from_slice(lo.octets());
                v.extend_from_slice(&lp.to_be_bytes());
                v.extend_from_slice(hi.octets());
                v.extend_from_slice(&hp.to_be_bytes());
            }
            FlowKind::Icmp { ident } => {
                v.push(3);
                v.extend_from_slice(lo.octets());
                v.extend_from_slice(hi.octets());
                v.extend_from_slice(&ident.to_be_bytes());
            }
            FlowKind::Esp { .. } | FlowKind::Ike { .. } => {
                v.push(4);
                v.extend_from_slice(lo.octets());
                v.extend_from_slice(hi.octets());
            }
        }
        v
    }

    /// The 64-bit keyed hash under `(k0, k1)`.
    #[must_use]
    pub fn hash(&self, k0: u64, k1: u64) -> u64 {
        let mut h = SipHasher13::new_with_keys(k0, k1);
        h.write(&self.hash_input());
        h.finish()
    }

    /// The CAM search key (CARD.md step 8, the driver's key layout).
    #[must_use]
    pub fn search_key(&self) -> [u32; KW] {
        let mut k = [0u32; KW];
        let (lo, lp, hi, hp) = self.canonical();
        let v6 = self.dst.v6;
        let (proto, kind) = match self.kind {
            FlowKind::Tcp { .. } => (6, 1),
            FlowKind::Udp { .. } => (17, 2),
            FlowKind::Icmp { .. } => (if v6 { 58 } else { 1 }, 3),
            FlowKind::Esp { .. } => (50, 4),
            FlowKind::Ike { .. } => (17, 5),
        };
        let mut put = |at: usize, a: &Addr| k[at..at + 4].copy_from_slice(&a.words());
        match self.kind {
            FlowKind::Tcp { .. } | FlowKind::Udp { .. } => {
                put(0, &lo);
                put(4, &hi);
                k[8] = u32::from(lp) | u32::from(hp) << 16;
            }
            FlowKind::Icmp { ident } => {
                put(0, &lo);
                put(4, &hi);
                k[8] = u32::from(ident);
            }
            FlowKind::Esp { spi } => {
                put(4, &self.dst);
                k[8] = spi;
            }
            FlowKind::Ike { cookie, message_id } => {
                k[0] = cookie as u32;
                k[1] = (cookie >> 32) as u32;
                k[2] = message_id;
            }
        }
        // IKE entries are keyed on any IPv4 destination: family bit 0.
        let v6bit = u32::from(v6 && !matches!(self.kind, FlowKind::Ike { .. }));
        k[9] = proto | kind << 8 | v6bit << 12;
        k
    }

    /// TCP with SYN, FIN or RST.
    #[must_use]
    pub fn tcp_control(&self) -> bool {
        matches!(self.kind, FlowKind::Tcp { flags, .. } if flags & 0x07 != 0)
    }
}

/// A frame in the host receive queue.
#[derive(Clone, Debug)]
struct Queued {
    frame: Vec<u8>,
    meta: u32,
    index: u32,
    result: u32,
    offsets: u32,
}

/// A frame between the ownership check and the verdict: what the lookup needs and gives back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    in_port: u8,
    meta: u32,
    offsets: u32,
    /// The CAM search key.
    pub key: [u32; KW],
    tcp_control: bool,
}

/// What the CAM answered a data-path lookup.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hit {
    pub index: u32,
    pub result: u32,
}

/// The packet port block's state.
#[derive(Clone)]
pub(crate) struct PortModel {
    id_mask: u32,
    hash_key: [u32; 4],
    owned: [u32; OW],
    cmd: u32,
    status: u32,
    cmd_count: u32,
    err_count: u32,
    rx_frames: u32,
    forwarded: u32,
    punted: u32,
    dropped: u32,
    tx_frames: u32,
    host_sent: u32,
    reason_count: [u32; REASONS],
    queue: VecDeque<Queued>,
    htx: Vec<u8>,
    htx_len: u32,
    htx_dest: u32,
    did_sel: u32,
    ent_sel: u32,
    did_pkts: Vec<u32>,
    did_bytes: Vec<u64>,
    ent_pkts: Vec<u32>,
    ent_bytes: Vec<u64>,
    /// Frames sent out of the ports, oldest first: (port, bytes).
    pub out: VecDeque<(u8, Vec<u8>)>,
}

impl std::fmt::Debug for PortModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hash key: it is the cluster's distribution secret.
        f.debug_struct("PortModel")
            .field("rx_frames", &self.rx_frames)
            .field("queued", &self.queue.len())
            .field("out", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl PortModel {
    pub fn new(depth: usize) -> Self {
        PortModel {
            id_mask: 0,
            hash_key: [0; 4],
            owned: [0; OW],
            cmd: 0,
            status: 0,
            cmd_count: 0,
            err_count: 0,
            rx_frames: 0,
            forwarded: 0,
            punted: 0,
            dropped: 0,
            tx_frames: 0,
            host_sent: 0,
            reason_count: [0; REASONS],
            queue: VecDeque::new(),
            htx: vec![0; FRAME],
            htx_len: 0,
            htx_dest: 0,
            did_sel: 0,
            ent_sel: 0,
            did_pkts: vec![0; IDS],
            did_bytes: vec![0; IDS],
            ent_pkts: vec![0; depth],
            ent_bytes: vec![0; depth],
            out: VecDeque::new(),
        }
    }

    /// The CAM wrote entry `i` (WRITE, INSERT): its counters restart.
    pub fn entry_written(&mut self, i: usize) {
        self.ent_pkts[i] = 0;
        self.ent_bytes[i] = 0;
    }

    fn count(&mut self, reason: u32) {
        let c = &mut self.reason_count[reason as usize];
        *c = c.wrapping_add(1);
    }

    fn drop_frame(&mut self, reason: u32) {
        self.dropped = self.dropped.wrapping_add(1);
        self.count(reason);
    }

    fn send_out(&mut self, port: u8, frame: &[u8]) {
        self.tx_frames = self.tx_frames.wrapping_add(1);
        self.out.push_back((port, frame.to_vec()));
    }

    fn queue_frame(&mut self, frame: &[u8], q: Queued, reason: u32) {
        if self.queue.len() >= DEPTH_Q {
            self.drop_frame(port::reason::QUEUE_FULL);
            return;
        }
        self.punted = self.punted.wrapping_add(1);
        self.count(reason);
        self.queue.push_back(Queued {
            frame: frame.to_vec(),
            meta: q.meta | port::meta::REASON.put(reason),
            ..q
        });
    }

    /// CARD.md "The pipeline, frame by frame", steps 1-7: `None` when the frame's fate is
    /// settled, else the lookup to make (step 8), which [`Self::finish`] completes.
    pub fn begin(&mut self, in_port: u8, from_host: bool, frame: &[u8]) -> Option<Pending> {
        use port::{meta, offsets, reason as r};
        self.rx_frames = self.rx_frames.wrapping_add(1);
        let base_meta =
            meta::PORT.put(u32::from(in_port)) | meta::FROM_HOST.put(u32::from(from_host));
        let offs = |l3: usize, l4: usize| offsets::L3.put(l3 as u32) | offsets::L4.put(l4 as u32);
        let p = match parse(frame) {
            Ok(p) => p,
            Err(s) => {
                if matches!(s.reason, r::TOO_LONG | r::RUNT) {
                    self.drop_frame(s.reason);
                } else {
                    let q = Queued {
                        frame: Vec::new(),
                        meta: base_meta,
                        index: u32::MAX,
                        result: 0,
                        offsets: offs(s.l3, s.l4),
                    };
                    self.queue_frame(frame, q, s.reason);
                }
                return None;
            }
        };
        let k0 = u64::from(self.hash_key[1]) << 32 | u64::from(self.hash_key[0]);
        let k1 = u64::from(self.hash_key[3]) << 32 | u64::from(self.hash_key[2]);
        let d = (p.hash(k0, k1) & u64::from(self.id_mask)) as usize;
        if (self.owned[d / 32] >> (d % 32)) & 1 == 0 {
            self.drop_frame(r::NOT_OWNED);
            return None;
        }
        let len = frame.len() as u64;
        self.did_pkts[d] = self.did_pkts[d].wrapping_add(1);
        self.did_bytes[d] = self.did_bytes[d].wrapping_add(len);
        Some(Pending {
            in_port,
            meta: base_meta | meta::DID_VALID.put(1) | meta::DID.put(d as u32),
            offsets: offs(p.l3, p.l4),
            key: p.search_key(),
            tcp_control: p.tcp_control(),
        })
    }

    /// Steps 8 (the counters of a hit) and 9 (the verdict).
    pub fn finish(&mut self, p: Pending, frame: &[u8], hit: Option<Hit>) {
        use port::{meta, reason as r};
        let mut q = Queued {
            frame: Vec::new(),
            meta: p.meta,
            index: u32::MAX,
            result: 0,
            offsets: p.offsets,
        };
        if let Some(h) = hit {
            let i = h.index as usize;
            let len = frame.len() as u64;
            self.ent_pkts[i] = self.ent_pkts[i].wrapping_add(1);
            self.ent_bytes[i] = self.ent_bytes[i].wrapping_add(len);
            q.meta |= meta::HIT.put(1);
            q.index = h.index;
            q.result = h.result;
        }
        let verdict = if p.tcp_control {
            Some(r::TCP_CONTROL)
        } else {
            match hit {
                None => Some(r::MISS),
                // Action codes: the driver's `Action` (result bits 7:0).
                Some(h) => match h.result & 0xFF {
                    1 => None,
                    0 => {
                        self.drop_frame(r::RULE_DROP);
                        return;
                    }
                    2 => Some(r::REJECT),
                    5 => Some(r::TO_HOST),
                    3 | 4 => Some(r::ESP),
                    _ => Some(r::BAD_ACTION),
                },
            }
        };
        match verdict {
            Some(reason) => self.queue_frame(frame, q, reason),
            None => {
                self.forwarded = self.forwarded.wrapping_add(1);
                self.send_out(p.in_port ^ 1, frame);
            }
        }
    }

    /// A command: its error code, and for SEND into the pipeline the frame to run (port).
    fn execute(&mut self, code: u32) -> (u32, Option<(u8, Vec<u8>)>) {
        use port::{cmd, dest, err};
        match code {
            cmd::POP => {
                if self.queue.pop_front().is_some() {
                    (err::OK, None)
                } else {
                    (err::EMPTY, None)
                }
            }
            cmd::SEND => {
                let n = self.htx_len as usize;
                if n == 0 || n > FRAME {
                    return (err::BAD_LEN, None);
                }
                self.host_sent = self.host_sent.wrapping_add(1);
                let frame = self.htx[..n].to_vec();
                match self.htx_dest {
                    dest::OUT0 | dest::OUT1 => {
                        self.send_out(self.htx_dest as u8, &frame);
                        (err::OK, None)
                    }
                    d => (err::OK, Some(((d - dest::IN0) as u8, frame))),
                }
            }
            _ => (err::UNKNOWN_CMD, None),
        }
    }

    pub fn read(&self, o: u32) -> u32 {
        if let Some(v) = header_read(o, (block_type::PORT, port::MAJOR, port::MINOR, 0)) {
            return v;
        }
        let head = self.queue.front();
        if let Some(i) = in_array(port::HRX_BUF, o) {
            let Some(q) = head else { return 0 };
            let byte = |j: usize| u32::from(q.frame.get(j).copied().unwrap_or(0));
            return (0..4).fold(0, |w, k| w << 8 | byte(4 * i + k));
        }
        if let Some(i) = in_array(port::HTX_BUF, o) {
            return u32::from_be_bytes([
                self.htx[4 * i],
                self.htx[4 * i + 1],
                self.htx[4 * i + 2],
                self.htx[4 * i + 3],
            ]);
        }
        if let Some(i) = in_array(port::OWNED, o) {
            return self.owned[i];
        }
        if let Some(i) = in_array(port::REASON_COUNT, o) {
            return self.reason_count[i];
        }
        if in_array(port::HASH_KEY, o).is_some() {
            return 0;
        }
        let ent = |v: &Vec<u64>| v.get(self.ent_sel as usize).copied().unwrap_or(0);
        let d = self.did_sel as usize;
        match o {
            _ if o == port::CAP_PORTS.offset => port::PORTS,
            _ if o == port::CAP_FRAME_BYTES.offset => port::FRAME_BYTES,
            _ if o == port::CAP_HOSTQ_DEPTH.offset => port::HOSTQ_DEPTH,
            _ if o == port::CAP_IDS.offset => port::IDS,
            _ if o == port::ID_MASK.offset => self.id_mask,
            _ if o == port::CMD.offset => self.cmd,
            _ if o == port::STATUS.offset => self.status,
            _ if o == port::CMD_COUNT.offset => self.cmd_count,
            _ if o == port::ERR_COUNT.offset => self.err_count,
            _ if o == port::RX_FRAMES.offset => self.rx_frames,
            _ if o == port::FORWARDED.offset => self.forwarded,
            _ if o == port::PUNTED.offset => self.punted,
            _ if o == port::DROPPED.offset => self.dropped,
            _ if o == port::TX_FRAMES.offset => self.tx_frames,
            _ if o == port::HOST_SENT.offset => self.host_sent,
            _ if o == port::HRX_COUNT.offset => self.queue.len() as u32,
            _ if o == port::HRX_LEN.offset => head.map_or(0, |q| q.frame.len() as u32),
            _ if o == port::HRX_META.offset => head.map_or(0, |q| q.meta),
            _ if o == port::HRX_INDEX.offset => head.map_or(0, |q| q.index),
            _ if o == port::HRX_RESULT.offset => head.map_or(0, |q| q.result),
            _ if o == port::HRX_OFFSETS.offset => head.map_or(0, |q| q.offsets),
            _ if o == port::HTX_LEN.offset => self.htx_len,
            _ if o == port::HTX_DEST.offset => self.htx_dest,
            _ if o == port::DID_SEL.offset => self.did_sel,
            _ if o == port::DID_PKTS.offset => self.did_pkts[d],
            _ if o == port::DID_BYTES_LO.offset => self.did_bytes[d] as u32,
            _ if o == port::DID_BYTES_HI.offset => (self.did_bytes[d] >> 32) as u32,
            _ if o == port::ENT_SEL.offset => self.ent_sel,
            _ if o == port::ENT_PKTS.offset => self
                .ent_pkts
                .get(self.ent_sel as usize)
                .copied()
                .unwrap_or(0),
            _ if o == port::ENT_BYTES_LO.offset => ent(&self.ent_bytes) as u32,
            _ if o == port::ENT_BYTES_HI.offset => (ent(&self.ent_bytes) >> 32) as u32,
            _ => UNMAPPED_PATTERN,
        }
    }

    /// A register write; SEND into the pipeline returns the frame (and its port) that the
    /// caller runs through [`Self::begin`] and [`Self::finish`].
    pub fn write(&mut self, o: u32, v: u32) -> Option<(u8, Vec<u8>)> {
        use port::status;
        if let Some(i) = in_array(port::HTX_BUF, o) {
            self.htx[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
        } else if let Some(i) = in_array(port::OWNED, o) {
            self.owned[i] = v;
        } else if let Some(i) = in_array(port::HASH_KEY, o) {
            self.hash_key[i] = v;
        } else if o == port::ID_MASK.offset {
            self.id_mask = v & 0xFFF;
        } else if o == port::HTX_LEN.offset {
            self.htx_len = v;
        } else if o == port::HTX_DEST.offset {
            self.htx_dest = v & 3;
        } else if o == port::DID_SEL.offset {
            self.did_sel = v & 0xFFF;
        } else if o == port::ENT_SEL.offset {
            self.ent_sel = v;
        } else if o == port::CMD.offset {
            self.cmd = v;
            let (e, run) = self.execute(v);
            self.status = status::DONE.put(1) | status::ERR.put(e);
            self.cmd_count = self.cmd_count.wrapping_add(1);
            if e != port::err::OK {
                self.err_count = self.err_count.wrapping_add(1);
            }
            return run;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ty: u16, rest: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ty.to_be_bytes());
        f.extend_from_slice(rest);
        f
    }

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let total = (20 + l4.len()) as u16;
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
        h.extend_from_slice(l4);
        h
    }

    #[test]
    fn reasons_of_broken_frames() {
        use port::reason as r;
        assert_eq!(parse(&[0; 13]).unwrap_err().reason, r::RUNT);
        assert_eq!(parse(&vec![0; FRAME + 1]).unwrap_err().reason, r::TOO_LONG);
        assert_eq!(parse(&eth(0x0806, &[0; 28])).unwrap_err().reason, r::NOT_IP);
        assert_eq!(
            parse(&eth(0x0800, &[0x45; 10])).unwrap_err().reason,
            r::MALFORMED
        );
        let mut frag = ipv4(6, &[0; 20]);
        frag[6] = 0x20;
        assert_eq!(parse(&eth(0x0800, &frag)).unwrap_err().reason, r::FRAGMENT);
        // A TCP header whose data offset says 4 words.
        let mut tcp = [0u8; 20];
        tcp[12] = 0x40;
        let e = parse(&eth(0x0800, &ipv4(6, &tcp))).unwrap_err();
        assert_eq!((e.reason, e.l3, e.l4), (r::MALFORMED, 14, 34));
        assert_eq!(
            parse(&eth(0x0800, &ipv4(47, &[0; 8]))).unwrap_err().reason,
            r::NO_FLOW
        );
    }

    #[test]
    fn canonical_key_and_hash_agree_both_ways() {
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x10;
        let a = parse(&eth(0x0800, &ipv4(6, &tcp))).unwrap();
        let mut back = ipv4(6, &tcp);
        back[12..16].copy_from_slice(&[198, 18, 0, 2]);
        back[16..20].copy_from_slice(&[198, 18, 0, 1]);
        back[20..22].copy_from_slice(&443u16.to_be_bytes());
        back[22..24].copy_from_slice(&40000u16.to_be_bytes());
        let b = parse(&eth(0x0800, &back)).unwrap();
        assert_eq!(a.search_key(), b.search_key());
        assert_eq!(a.hash(1, 2), b.hash(1, 2));
        assert_ne!(a.hash(1, 2), a.hash(1, 3));
        let k = a.search_key();
        assert_eq!(k[0], u32::from_be_bytes([198, 18, 0, 1]));
        assert_eq!(k[8], 40000 | 443 << 16);
        assert_eq!(k[9], 6 | 1 << 8);
        assert!(!a.tcp_control());
    }
}
