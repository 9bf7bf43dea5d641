//! Frames for the packet port block (`hdl/CARD.md`, "The pipeline, frame by frame"): a
//! crafted set that reaches every branch of the parser, seeded random frames of a pool of
//! flows, and mutations of either. Tests feed them to the model and the RTL alike.
//!
//! Everything is deterministic in its seed ([`Rng`] is a SplitMix64), so a failing frame can
//! be rebuilt from the seed that made it.

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// An IP address of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ip {
    /// IPv4.
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
}

impl Ip {
    /// The address bytes (4 or 16).
    #[must_use]
    pub fn octets(&self) -> &[u8] {
        match self {
            Ip::V4(a) => a,
            Ip::V6(a) => a,
        }
    }

    /// Whether this is IPv6.
    #[must_use]
    pub fn is_v6(&self) -> bool {
        matches!(self, Ip::V6(_))
    }
}

/// The transport of a [`FlowSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP with a flags byte.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20).
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP (IPv4) or ICMPv6 (IPv6) with a type and an echo identifier.
    Icmp {
        /// Message type.
        ty: u8,
        /// Identifier (bytes 4..6).
        ident: u16,
    },
    /// ESP (IP protocol 50).
    Esp {
        /// SPI.
        spi: u32,
    },
    /// ESP in UDP (port 4500, no non-ESP marker).
    NatEsp {
        /// SPI.
        spi: u32,
        /// The other UDP port.
        port: u16,
    },
    /// IKE on UDP 500 or, behind the non-ESP marker, 4500.
    Ike {
        /// 500 or 4500.
        on: u16,
        /// Initiator cookie.
        cookie: u64,
        /// Message id.
        message_id: u32,
    },
}

/// One flow: addresses, transport, and how its frames are wrapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowSpec {
    /// Source address.
    pub src: Ip,
    /// Destination address (same family).
    pub dst: Ip,
    /// The transport.
    pub transport: Transport,
}

impl FlowSpec {
    /// The IP protocol number.
    #[must_use]
    pub fn proto(&self) -> u8 {
        match self.transport {
            Transport::Tcp { .. } => 6,
            Transport::Udp { .. } | Transport::NatEsp { .. } | Transport::Ike { .. } => 17,
            Transport::Icmp { .. } => {
                if self.src.is_v6() {
                    58
                } else {
                    1
                }
            }
            Transport::Esp { .. } => 50,
        }
    }

    /// The transport header and payload, `pay` payload bytes after the headers.
    #[must_use]
    pub fn l4(&self, pay: &[u8]) -> Vec<u8> {
        match self.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
            } => tcp(sport, dport, flags, 5, pay),
            Transport::Udp { sport, dport } => udp(sport, dport, pay),
            Transport::Icmp { ty, ident } => {
                let mut v = vec![ty, 0, 0, 0];
                v.extend_from_slice(&ident.to_be_bytes());
                v.extend_from_slice(&[0, 1]);
                v.extend_from_slice(pay);
                v
            }
            Transport::Esp { spi } => {
                let mut v = spi.to_be_bytes().to_vec();
                v.extend_from_slice(&[0, 0, 0, 1]);
                v.extend_from_slice(pay);
                v
            }
            Transport::NatEsp { spi, port } => {
                let mut v = spi.to_be_bytes().to_vec();
                v.extend_from_slice(&[0, 0, 0, 1]);
                v.extend_from_slice(pay);
                udp(port, 4500, &v)
            }
            Transport::Ike {
                on,
                cookie,
                message_id,
            } => {
                let mut v = Vec::new();
                if on == 4500 {
                    v.extend_from_slice(&[0; 4]);
                }
                v.extend_from_slice(&ike(cookie, message_id));
                v.extend_from_slice(pay);
                udp(on, on, &v)
            }
        }
    }

    /// The whole frame: Ethernet (with an 802.1Q tag if `vlan`), IP, transport, payload.
    #[must_use]
    pub fn frame(&self, vlan: bool, pay: &[u8]) -> Vec<u8> {
        let l4 = self.l4(pay);
        match (self.src, self.dst) {
            (Ip::V4(s), Ip::V4(d)) => eth(0x0800, vlan, &ipv4(s, d, self.proto(), &[], 0, &l4)),
            (Ip::V6(s), Ip::V6(d)) => eth(0x86DD, vlan, &ipv6(s, d, self.proto(), &[], &l4)),
            _ => panic!("a flow's addresses must be of one family"),
        }
    }

    /// The same flow seen from the other end (addresses and ports swapped).
    #[must_use]
    pub fn reversed(&self) -> Self {
        let transport = match self.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
            } => Transport::Tcp {
                sport: dport,
                dport: sport,
                flags,
            },
            Transport::Udp { sport, dport } => Transport::Udp {
                sport: dport,
                dport: sport,
            },
            t => t,
        };
        FlowSpec {
            src: self.dst,
            dst: self.src,
            transport,
        }
    }
}

/// An Ethernet frame of type `ty` around `payload`, 802.1Q-tagged (VLAN 5) if `vlan`.
#[must_use]
pub fn eth(ty: u16, vlan: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    }
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet: `opts` (a multiple of 4 bytes) after the fixed header, fragment field
/// `frag` (flags and offset), total length and checksum filled in.
#[must_use]
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, opts: &[u8], frag: u16, l4: &[u8]) -> Vec<u8> {
    let hl = 20 + opts.len();
    let total = (hl + l4.len()) as u16;
    let mut h = vec![0x40 | (hl / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(opts);
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h.extend_from_slice(l4);
    h
}

/// An IPv6 packet whose extension headers `exts` ((type, length in 8-byte units beyond the
/// first)) come before the upper layer `next`.
#[must_use]
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, exts: &[(u8, u8)], l4: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, &(_, units)) in exts.iter().enumerate() {
        let nh = exts.get(i + 1).map_or(next, |e| e.0);
        let mut e = vec![nh, units];
        e.resize(8 * (usize::from(units) + 1), 0);
        chain.extend_from_slice(&e);
    }
    chain.extend_from_slice(l4);
    let first = exts.first().map_or(next, |e| e.0);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(chain.len() as u16).to_be_bytes());
    h.extend_from_slice(&[first, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&chain);
    h
}

/// A TCP header with data offset `off` (words; options zero) before `pay`.
#[must_use]
pub fn tcp(sport: u16, dport: u16, flags: u8, off: u8, pay: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    t.push(off << 4);
    t.push(flags);
    t.extend_from_slice(&[0xFF, 0xFF, 0, 0, 0, 0]);
    t.resize(t.len().max(4 * usize::from(off)), 0);
    t.extend_from_slice(pay);
    t
}

/// A UDP datagram around `pay` (length field filled in).
#[must_use]
pub fn udp(sport: u16, dport: u16, pay: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + pay.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(pay);
    u
}

/// An IKE header (28 bytes): cookie at 0, message id at 20.
#[must_use]
pub fn ike(cookie: u64, message_id: u32) -> Vec<u8> {
    let mut v = cookie.to_be_bytes().to_vec();
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&[0x21, 0x20, 0x22, 0x08]);
    v.extend_from_slice(&message_id.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 28]);
    v
}

const A4: [u8; 4] = [198, 18, 0, 1];
const B4: [u8; 4] = [198, 18, 0, 2];
const A6: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B6: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn v4(t: Transport) -> FlowSpec {
    FlowSpec {
        src: Ip::V4(A4),
        dst: Ip::V4(B4),
        transport: t,
    }
}

fn v6(t: Transport) -> FlowSpec {
    FlowSpec {
        src: Ip::V6(A6),
        dst: Ip::V6(B6),
        transport: t,
    }
}

/// One flow of each transport shape, for both families.
#[must_use]
pub fn sample_flows() -> Vec<FlowSpec> {
    let ts = [
        Transport::Tcp {
            sport: 40000,
            dport: 443,
            flags: 0x10,
        },
        Transport::Udp {
            sport: 5353,
            dport: 53,
        },
        Transport::Icmp { ty: 8, ident: 77 },
        Transport::Icmp { ty: 0, ident: 78 },
        Transport::Esp { spi: 0x1000_0001 },
        Transport::NatEsp {
            spi: 0x2000_0002,
            port: 4500,
        },
        Transport::Ike {
            on: 500,
            cookie: 0x0102_0304_0506_0708,
            message_id: 1,
        },
        Transport::Ike {
            on: 4500,
            cookie: 0x1112_1314_1516_1718,
            message_id: 2,
        },
    ];
    let mut v = Vec::new();
    for t in ts {
        v.push(v4(t));
        let t6 = match t {
            Transport::Icmp { ty, ident } => Transport::Icmp {
                ty: if ty == 8 { 128 } else { 129 },
                ident,
            },
            t => t,
        };
        v.push(v6(t6));
    }
    v
}

/// The crafted set: every parser branch and every reason the parser gives, every flow kind,
/// each TCP control flag, and every frame cut short at each header boundary.
#[must_use]
pub fn crafted() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let pay = [0xAB; 16];
    // Runts, the frame size limit and just past it, way past it.
    for n in [0, 1, 6, 13] {
        out.push(vec![0x5A; n]);
    }
    let mut big = v4(Transport::Udp {
        sport: 1000,
        dport: 2000,
    })
    .frame(false, &[]);
    let fill = 2048 - big.len();
    big = v4(Transport::Udp {
        sport: 1000,
        dport: 2000,
    })
    .frame(false, &vec![0x11; fill]);
    out.push(big.clone());
    let mut over = big.clone();
    over.push(0);
    out.push(over);
    out.push(vec![0x22; 3000]);
    // Not IP: ARP, unknown types, stacked tags, a tag cut short.
    out.push(eth(0x0806, false, &[0; 28]));
    out.push(eth(0x88B5, false, &[1; 30]));
    out.push(eth(0x88A8, false, &[0; 40]));
    out.push(eth(0x8100, true, &[0; 40]));
    out.push(eth(0x0806, true, &[0; 28]));
    for n in 14..18 {
        let mut f = eth(0x8100, false, &[0, 5, 0x08, 0x00]);
        f.truncate(n);
        out.push(f);
    }
    // Every sample flow, plain and tagged, with and without payload.
    for f in sample_flows() {
        for vlan in [false, true] {
            out.push(f.frame(vlan, &pay));
            out.push(f.frame(vlan, &[]));
        }
    }
    // Each TCP flag alone, and combinations, both families.
    for flags in [
        0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x12, 0x11, 0x14, 0x18, 0xFF,
    ] {
        let t = Transport::Tcp {
            sport: 33000,
            dport: 80,
            flags,
        };
        out.push(v4(t).frame(false, &pay));
        out.push(v6(t).frame(false, &pay));
    }
    // IPv4 options, Ethernet padding, fragments, bad header fields.
    let tcp_ack = tcp(33001, 22, 0x10, 5, &pay);
    for words in 1..=10usize {
        let opts = vec![1u8; 4 * words];
        out.push(eth(0x0800, false, &ipv4(A4, B4, 6, &opts, 0, &tcp_ack)));
    }
    let mut padded = eth(0x0800, false, &ipv4(A4, B4, 17, &[], 0, &udp(7, 9, &[])));
    padded.extend_from_slice(&[0; 18]);
    out.push(padded);
    for frag in [0x2000, 0x0001, 0x2010, 0x1FFF, 0x4000, 0x8000] {
        out.push(eth(0x0800, false, &ipv4(A4, B4, 6, &[], frag, &tcp_ack)));
    }
    let good4 = ipv4(A4, B4, 6, &[], 0, &tcp_ack);
    let bad4 = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good4.clone();
        f(&mut p);
        eth(0x0800, false, &p)
    };
    out.push(bad4(&|p| p[0] = 0x44)); // ihl 4
    out.push(bad4(&|p| p[0] = 0x40)); // ihl 0
    out.push(bad4(&|p| p[0] = 0x4F)); // ihl 15, header past the end on a short packet
    out.push(bad4(&|p| p[0] = 0x55)); // version 5
    out.push(bad4(&|p| p[0] = 0x65)); // version 6 in an IPv4 frame
    out.push(bad4(&|p| p[2..4].copy_from_slice(&19u16.to_be_bytes()))); // total < header
    out.push(bad4(&|p| p[2..4].copy_from_slice(&2000u16.to_be_bytes()))); // total > frame
    out.push(bad4(&|p| p[2..4].copy_from_slice(&20u16.to_be_bytes()))); // no payload
    out.push(bad4(&|p| p[2..4].copy_from_slice(&30u16.to_be_bytes()))); // TCP cut by total
    out.push(bad4(&|p| p[9] = 47)); // GRE
    out.push(bad4(&|p| p[9] = 58)); // ICMPv6 number in IPv4
    out.push(bad4(&|p| p[9] = 132)); // SCTP
                                     // TCP data offsets.
    for off in [0u8, 4, 5, 6, 15] {
        let t = tcp(33002, 25, 0x18, 5, &[0; 8]);
        let mut t2 = t.clone();
        t2[12] = off << 4;
        out.push(eth(0x0800, false, &ipv4(A4, B4, 6, &[], 0, &t2)));
        out.push(eth(0x86DD, false, &ipv6(A6, B6, 6, &[], &t2)));
    }
    // UDP lengths.
    for ulen in [0u16, 7, 8, 9, 16, 17, 100] {
        let mut u = udp(1111, 2222, &[0; 8]);
        u[4..6].copy_from_slice(&ulen.to_be_bytes());
        out.push(eth(0x0800, false, &ipv4(A4, B4, 17, &[], 0, &u)));
    }
    out.push(eth(0x0800, false, &ipv4(A4, B4, 17, &[], 0, &[0; 7])));
    // IKE and NAT-T: short IKE payloads, the marker with short IKE, short 4500 payloads.
    for (sp, dp, body) in [
        (500u16, 500u16, ike(9, 9)[..23].to_vec()),
        (500, 12345, ike(10, 10)[..24].to_vec()),
        (12345, 500, ike(11, 11)),
        (4500, 4500, [&[0u8; 4][..], &ike(12, 12)[..23]].concat()),
        (4500, 999, [&[0u8; 4][..], &ike(13, 13)[..24]].concat()),
        (4500, 4500, vec![0, 0, 0]),
        (4500, 4500, vec![0, 0, 0, 0]),
        (999, 4500, vec![0, 0, 0, 7]),
        (4500, 4500, vec![]),
        (500, 4500, ike(14, 14)),
    ] {
        out.push(eth(
            0x0800,
            false,
            &ipv4(A4, B4, 17, &[], 0, &udp(sp, dp, &body)),
        ));
        out.push(eth(
            0x86DD,
            false,
            &ipv6(A6, B6, 17, &[], &udp(sp, dp, &body)),
        ));
    }
    // ICMP: echo and others, short, and each family's number in the other.
    for ty in [0u8, 3, 8, 11, 128, 129, 135] {
        let m = [ty, 0, 0, 0, 0, 9, 0, 1];
        out.push(eth(0x0800, false, &ipv4(A4, B4, 1, &[], 0, &m)));
        out.push(eth(0x86DD, false, &ipv6(A6, B6, 58, &[], &m)));
        out.push(eth(0x86DD, false, &ipv6(A6, B6, 1, &[], &m)));
    }
    out.push(eth(
        0x0800,
        false,
        &ipv4(A4, B4, 1, &[], 0, &[8, 0, 0, 0, 0, 9, 0]),
    ));
    out.push(eth(0x86DD, false, &ipv6(A6, B6, 58, &[], &[128, 0, 0])));
    // ESP short.
    out.push(eth(
        0x0800,
        false,
        &ipv4(A4, B4, 50, &[], 0, &[0, 0, 0, 1, 0, 0, 0]),
    ));
    out.push(eth(0x86DD, false, &ipv6(A6, B6, 50, &[], &[1; 7])));
    // IPv6 extension header chains: up to and past the walk's limit, bad lengths,
    // fragments (direct and behind options), no next header.
    let l4 = udp(5000, 6000, &pay);
    let chains: [&[(u8, u8)]; 8] = [
        &[(0, 0)],
        &[(0, 1), (43, 0)],
        &[(0, 0), (43, 2), (60, 0)],
        &[(0, 0), (43, 0), (60, 0), (60, 3)],
        &[(0, 0), (43, 0), (60, 0), (60, 0), (60, 0)],
        &[(60, 0), (60, 0), (60, 0), (60, 0), (0, 0), (43, 0)],
        &[(44, 0)],
        &[(0, 0), (44, 0)],
    ];
    for c in chains {
        out.push(eth(0x86DD, false, &ipv6(A6, B6, 17, c, &l4)));
        out.push(eth(0x86DD, true, &ipv6(A6, B6, 6, c, &tcp_ack)));
    }
    out.push(eth(0x86DD, false, &ipv6(A6, B6, 59, &[], &[])));
    out.push(eth(0x86DD, false, &ipv6(A6, B6, 59, &[(0, 0)], &[])));
    let mut ext_long = ipv6(A6, B6, 17, &[(0, 0)], &l4);
    ext_long[41] = 200; // hop-by-hop longer than the payload
    out.push(eth(0x86DD, false, &ext_long));
    let mut ext_short = ipv6(A6, B6, 0, &[], &[17, 0, 0, 0]); // 4 bytes left for a header
    ext_short[6] = 0;
    out.push(eth(0x86DD, false, &ext_short));
    // IPv6 header fields.
    let good6 = ipv6(A6, B6, 6, &[], &tcp_ack);
    let bad6 = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good6.clone();
        f(&mut p);
        eth(0x86DD, false, &p)
    };
    out.push(bad6(&|p| p[0] = 0x40));
    out.push(bad6(&|p| p[4..6].copy_from_slice(&1000u16.to_be_bytes())));
    out.push(bad6(&|p| p[4..6].copy_from_slice(&0u16.to_be_bytes())));
    out.push(bad6(&|p| p[4..6].copy_from_slice(&10u16.to_be_bytes())));
    let mut padded6 = eth(0x86DD, false, &good6);
    padded6.extend_from_slice(&[0xEE; 9]);
    out.push(padded6);
    // Every sample frame cut at every length up to its end: truncated at every header.
    for f in sample_flows() {
        let full = f.frame(true, &[1, 2, 3]);
        for n in 14..full.len() {
            out.push(full[..n].to_vec());
        }
    }
    out
}

/// A pool of `n` flows over a few addresses of both families (so that addresses repeat,
/// ports spread identifiers), every transport shape represented.
#[must_use]
pub fn flow_pool(rng: &mut Rng, n: usize) -> Vec<FlowSpec> {
    let addr = |rng: &mut Rng, v6: bool| {
        if v6 {
            let mut a = B6;
            a[14] = rng.below(3) as u8;
            a[15] = rng.below(4) as u8;
            Ip::V6(a)
        } else {
            Ip::V4([10, 0, rng.below(3) as u8, rng.below(4) as u8])
        }
    };
    (0..n)
        .map(|_| {
            let v6 = rng.chance(1, 3);
            let src = addr(rng, v6);
            let dst = addr(rng, v6);
            let port = |rng: &mut Rng| {
                if rng.chance(1, 4) {
                    [22u16, 53, 80, 443, 8080][rng.below(5)]
                } else {
                    1024 + rng.below(60000) as u16
                }
            };
            let transport = match rng.below(10) {
                0..=3 => Transport::Tcp {
                    sport: port(rng),
                    dport: port(rng),
                    flags: 0x10,
                },
                4 | 5 => Transport::Udp {
                    sport: port(rng),
                    dport: port(rng),
                },
                6 => Transport::Icmp {
                    ty: if v6 { 128 } else { 8 },
                    ident: rng.next_u64() as u16,
                },
                7 => Transport::Esp {
                    spi: rng.next_u64() as u32 | 1,
                },
                8 => Transport::NatEsp {
                    spi: rng.next_u64() as u32 | 1,
                    port: port(rng),
                },
                _ => Transport::Ike {
                    on: if rng.chance(1, 2) { 500 } else { 4500 },
                    cookie: rng.next_u64(),
                    message_id: rng.below(4) as u32,
                },
            };
            FlowSpec {
                src,
                dst,
                transport,
            }
        })
        .collect()
}

/// A random frame of a flow of `pool` (either direction), mostly plain, sometimes tagged,
/// with a random payload length; TCP sometimes carries control flags.
#[must_use]
pub fn random_frame(rng: &mut Rng, pool: &[FlowSpec]) -> Vec<u8> {
    let mut f = pool[rng.below(pool.len())];
    if rng.chance(1, 2) {
        f = f.reversed();
    }
    if let Transport::Tcp { flags, .. } = &mut f.transport {
        if rng.chance(1, 8) {
            *flags = rng.next_u64() as u8;
        }
    }
    let n = match rng.below(4) {
        0 => 0,
        1 => rng.below(64),
        2 => rng.below(600),
        _ => rng.below(1400),
    };
    let vlan = rng.chance(1, 8);
    f.frame(vlan, &rng.bytes(n))
}

/// A mutation of `frame`: bytes flipped or overwritten, the frame cut or extended, header
/// fields the parser reads set to edge values.
#[must_use]
pub fn mutate(rng: &mut Rng, frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(7) {
            0 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
            1 if !f.is_empty() => {
                // Mostly inside the headers, where the parser looks.
                let i = rng.below(f.len().min(80));
                f[i] = [0, 0xFF, 5, 6, 17, 43, 44, 50, 58, 60][rng.below(10)];
            }
            2 => {
                let n = rng.below(f.len() + 1);
                f.truncate(n);
            }
            3 => {
                let n = rng.below(40);
                let extra = rng.bytes(n);
                f.extend_from_slice(&extra);
            }
            4 if f.len() >= 14 => {
                let t = [0x0800u16, 0x86DD, 0x8100, 0x0806, 0x88A8][rng.below(5)];
                f[12..14].copy_from_slice(&t.to_be_bytes());
            }
            5 if f.len() >= 24 => {
                // A length field: IPv4 total, IPv6 payload length, or nearby.
                let i = 14 + rng.below(8);
                let v = [0u16, 1, 8, 20, 40, 0xFFFF][rng.below(6)];
                f[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            _ => {
                if !f.is_empty() {
                    let i = rng.below(f.len());
                    f[i] = rng.next_u64() as u8;
                }
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_port::{parse, FlowKind};
    use hal::regs::port::reason as r;
    use std::collections::BTreeSet;

    #[test]
    fn crafted_frames_reach_every_parser_reason_and_flow_kind() {
        let mut reasons = BTreeSet::new();
        let mut kinds = BTreeSet::new();
        let mut control = BTreeSet::new();
        let mut v6_kinds = BTreeSet::new();
        for f in crafted() {
            match parse(&f) {
                Ok(p) => {
                    let k = match p.kind {
                        FlowKind::Tcp { flags, .. } => {
                            control.insert(flags & 0x07);
                            "tcp"
                        }
                        FlowKind::Udp { .. } => "udp",
                        FlowKind::Icmp { .. } => "icmp",
                        FlowKind::Esp { .. } => "esp",
                        FlowKind::Ike { .. } => "ike",
                    };
                    kinds.insert(k);
                    if p.src.is_v6() {
                        v6_kinds.insert(k);
                    }
                }
                Err(s) => {
                    reasons.insert(s.reason);
                }
            }
        }
        let want: BTreeSet<u32> = [
            r::RUNT,
            r::TOO_LONG,
            r::NOT_IP,
            r::MALFORMED,
            r::FRAGMENT,
            r::EXT_HEADERS,
            r::NO_FLOW,
        ]
        .into();
        assert_eq!(reasons, want);
        let all: BTreeSet<&str> = ["tcp", "udp", "icmp", "esp", "ike"].into();
        assert_eq!(kinds, all);
        assert_eq!(v6_kinds, all);
        // SYN, FIN and RST alone and none of them.
        for c in [0, 1, 2, 4] {
            assert!(control.contains(&c), "no TCP frame with control bits {c}");
        }
    }

    #[test]
    fn generators_are_deterministic_and_mutations_vary() {
        let pool = flow_pool(&mut Rng::new(1), 32);
        assert_eq!(pool, flow_pool(&mut Rng::new(1), 32));
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(random_frame(&mut a, &pool), random_frame(&mut b, &pool));
        }
        let base = sample_flows()[0].frame(false, &[0; 20]);
        let mut rng = Rng::new(3);
        let changed = (0..100).filter(|_| mutate(&mut rng, &base) != base).count();
        assert!(
            changed > 50,
            "only {changed} of 100 mutations changed the frame"
        );
        // Random frames of the pool parse as flows (the pool's frames are well formed).
        let mut rng = Rng::new(9);
        for _ in 0..200 {
            let f = random_frame(&mut rng, &pool);
            assert!(parse(&f).is_ok(), "{f:02x?}");
        }
    }
}
