//! Packet parsing (figure 2 step 200): untrusted bytes through `etherparse` into the fields the
//! core needs: addresses, transport, TCP flags, ICMP echo identifier, ESP SPI, ISAKMP cookies.
//! Never panics; every failure is a [`ParseError`].
//!
//! A UDP datagram on port 500 (or on 4500 behind the non-ESP marker) is ISAKMP/IKE only when its
//! 28-byte header is valid ([`IkeError`] says what is checked); otherwise the packet is refused
//! with [`ParseError::Ike`] and makes no entry.

use super::distribution::Distributor;
use super::entry::{Endpoint, FlowKey, L4Proto};
use super::ids::DistributionId;
use etherparse::{Icmpv4Type, Icmpv6Type, IpNumber, NetSlice, SlicedPacket, TransportSlice};
use std::net::IpAddr;

/// How the bytes start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// An Ethernet II frame (VLAN tags allowed).
    Ethernet,
    /// A bare IPv4 or IPv6 packet.
    Ip,
}

/// Why a packet was not parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Headers are malformed or truncated.
    #[error("malformed packet")]
    Malformed(#[from] etherparse::err::packet::SliceError),
    /// An ESP packet shorter than its header.
    #[error("malformed ESP packet")]
    Esp(#[from] driver::esp::EspError),
    /// Not an IP packet (ARP, other ether types).
    #[error("not an IP packet")]
    NotIp,
    /// A non-first fragment: no transport header to key on.
    #[error("IP fragment without transport header")]
    Fragment,
    /// A datagram on the IKE ports whose ISAKMP/IKE header is not valid.
    #[error("invalid ISAKMP/IKE header: {0}")]
    Ike(#[from] IkeError),
}

/// Why a datagram on UDP 500 (or 4500 after the non-ESP marker) is not an ISAKMP/IKE message.
///
/// The header (RFC 2408 §3.1, RFC 7296 §3.1) is checked field by field:
/// * version: major 1 (ISAKMP/IKEv1) with minor 0 (RFC 2408: a receiver does not accept a
///   minor version above its own), or major 2 (IKEv2) with any minor (RFC 7296: the minor
///   version of received messages is ignored);
/// * length: the header's length field counts the whole message, and one UDP datagram carries
///   one message, so it must equal the UDP payload's length (after the marker on 4500);
/// * exchange type, for IKEv1: 1-5 (RFC 2408: base, identity protection, authentication only,
///   aggressive, informational), 6 (transaction, the mode-config draft that XAUTH uses), 32
///   and 33 (RFC 2409: quick mode, new group mode); 0 (`NONE`) is no exchange. For IKEv2: 34-37
///   (RFC 7296: IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL), 38 (RFC 5723:
///   IKE_SESSION_RESUME), 43 (RFC 9242: IKE_INTERMEDIATE) and 44 (RFC 9370: IKE_FOLLOWUP_KE).
///
/// Next payload and flags are not checked (RFC 7296: reserved flag bits are ignored on receipt).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IkeError {
    /// Fewer bytes than the 28-byte header.
    #[error("{len} bytes, shorter than the 28-byte header")]
    Truncated {
        /// Bytes there were.
        len: usize,
    },
    /// A version other than 1.0 or 2.x.
    #[error("version {major}.{minor} is neither ISAKMP 1.0 nor IKEv2")]
    Version {
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// The length field disagrees with the datagram.
    #[error("length field {field} but {payload} bytes in the datagram")]
    Length {
        /// The header's length field.
        field: u32,
        /// The UDP payload's length (after the non-ESP marker).
        payload: usize,
    },
    /// An exchange type the version does not define.
    #[error("exchange type {exchange} is not defined for IKEv{major}")]
    Exchange {
        /// Major version.
        major: u8,
        /// Exchange type.
        exchange: u8,
    },
}

/// The length of the ISAKMP/IKE header.
pub const IKE_HEADER_LEN: usize = 28;

/// TCP flags the state machine uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

impl TcpFlags {
    /// SYN alone: a connection's first segment.
    pub const SYN: TcpFlags = TcpFlags::new(true, false, false);
    /// SYN and ACK: the server's answer to a SYN.
    pub const SYN_ACK: TcpFlags = TcpFlags::new(true, true, false);
    /// ACK alone: the handshake's last segment, and data.
    pub const ACK: TcpFlags = TcpFlags::new(false, true, false);
    /// FIN and ACK: one side closes.
    pub const FIN_ACK: TcpFlags = TcpFlags::new(false, true, true);

    /// SYN, ACK and FIN as given, without RST.
    pub const fn new(syn: bool, ack: bool, fin: bool) -> Self {
        TcpFlags {
            syn,
            ack,
            fin,
            rst: false,
        }
    }
}

/// The transport-level meaning of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// TCP.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags.
        flags: TcpFlags,
    },
    /// UDP (not IKE).
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP or ICMPv6 echo.
    IcmpEcho {
        /// The identifier field.
        ident: u16,
        /// Request (`true`) or reply.
        request: bool,
    },
    /// Other ICMP (errors, neighbour discovery): not stateful.
    IcmpOther,
    /// ESP (IP protocol 50, or UDP-encapsulated on port 4500).
    Esp {
        /// SPI.
        spi: u32,
    },
    /// ISAKMP/IKE on UDP 500 or 4500.
    Isakmp {
        /// UDP source port.
        sport: u16,
        /// UDP destination port.
        dport: u16,
        /// Initiator cookie (SPI).
        initiator_cookie: u64,
        /// Responder cookie (zero in the first message).
        responder_cookie: u64,
        /// Message id.
        message_id: u32,
    },
    /// Another IP protocol.
    Other {
        /// IP protocol number.
        proto: u8,
    },
}

/// A parsed packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedPacket<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport meaning.
    pub kind: PacketKind,
    /// Transport payload (empty when there is none).
    pub payload: &'a [u8],
    /// Length of the whole input.
    pub len: usize,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Whether IKE version `major` defines exchange type `exchange` (see [`IkeError`]).
fn ike_exchange_defined(major: u8, exchange: u8) -> bool {
    match major {
        1 => matches!(exchange, 1..=6 | 32 | 33),
        _ => matches!(exchange, 34..=38 | 43 | 44),
    }
}

/// The ISAKMP/IKE message `b` (the whole UDP payload after any non-ESP marker), validated.
fn isakmp(sport: u16, dport: u16, b: &[u8]) -> Result<PacketKind, IkeError> {
    let h = b
        .get(..IKE_HEADER_LEN)
        .ok_or(IkeError::Truncated { len: b.len() })?;
    let (major, minor) = (h[17] >> 4, h[17] & 0x0f);
    if !matches!((major, minor), (1, 0) | (2, _)) {
        return Err(IkeError::Version { major, minor });
    }
    let field = u32::from_be_bytes([h[24], h[25], h[26], h[27]]);
    if usize::try_from(field).ok() != Some(b.len()) {
        return Err(IkeError::Length {
            field,
            payload: b.len(),
        });
    }
    let exchange = h[18];
    if !ike_exchange_defined(major, exchange) {
        return Err(IkeError::Exchange { major, exchange });
    }
    let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let dword = |at: usize| u64::from(word(at)) << 32 | u64::from(word(at + 4));
    Ok(PacketKind::Isakmp {
        sport,
        dport,
        initiator_cookie: dword(0),
        responder_cookie: dword(8),
        message_id: word(20),
    })
}

/// The kind of an ICMP message (`$icmp`, a v4 or v6 slice whose types are `$types`): an echo
/// request or reply with its identifier, or another message.
macro_rules! icmp_kind {
    ($icmp:expr, $types:ident) => {
        match $icmp.icmp_type() {
            $types::EchoRequest(h) => PacketKind::IcmpEcho {
                ident: h.id,
                request: true,
            },
            $types::EchoReply(h) => PacketKind::IcmpEcho {
                ident: h.id,
                request: false,
            },
            _ => PacketKind::IcmpOther,
        }
    };
}

/// Parses a packet.
///
/// # Errors
/// [`ParseError`] for malformed, non-IP and non-first-fragment packets.
pub fn parse_packet(bytes: &[u8], framing: Framing) -> Result<ParsedPacket<'_>, ParseError> {
    let sliced = match framing {
        Framing::Ethernet => SlicedPacket::from_ethernet(bytes),
        Framing::Ip => SlicedPacket::from_ip(bytes),
    }?;
    let (src, dst, ip_payload) = match &sliced.net {
        Some(NetSlice::Ipv4(v)) => (
            IpAddr::V4(v.header().source_addr()),
            IpAddr::V4(v.header().destination_addr()),
            v.payload(),
        ),
        Some(NetSlice::Ipv6(v)) => (
            IpAddr::V6(v.header().source_addr()),
            IpAddr::V6(v.header().destination_addr()),
            v.payload(),
        ),
        _ => return Err(ParseError::NotIp),
    };
    let (kind, payload) = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => (
            PacketKind::Tcp {
                sport: t.source_port(),
                dport: t.destination_port(),
                flags: TcpFlags {
                    syn: t.syn(),
                    ack: t.ack(),
                    fin: t.fin(),
                    rst: t.rst(),
                },
            },
            t.payload(),
        ),
        Some(TransportSlice::Udp(u)) => {
            let (sport, dport, p) = (u.source_port(), u.destination_port(), u.payload());
            let kind = if sport == 500 || dport == 500 {
                isakmp(sport, dport, p)?
            } else if sport == 4500 || dport == 4500 {
                match be32(p, 0) {
                    Some(0) => isakmp(sport, dport, &p[4..])?,
                    // A one-byte 0xff payload is a NAT-T keepalive.
                    Some(spi) => PacketKind::Esp { spi },
                    None => PacketKind::Udp { sport, dport },
                }
            } else {
                PacketKind::Udp { sport, dport }
            };
            (kind, p)
        }
        Some(TransportSlice::Icmpv4(i)) => (icmp_kind!(i, Icmpv4Type), i.payload()),
        Some(TransportSlice::Icmpv6(i)) => (icmp_kind!(i, Icmpv6Type), i.payload()),
        _ => {
            if ip_payload.fragmented {
                return Err(ParseError::Fragment);
            }
            let p = ip_payload.payload;
            if ip_payload.ip_number == IpNumber::ENCAPSULATING_SECURITY_PAYLOAD {
                let spi = driver::esp::EspHeader::new_checked(p)?.spi().0;
                (PacketKind::Esp { spi }, p)
            } else {
                (
                    PacketKind::Other {
                        proto: ip_payload.ip_number.0,
                    },
                    p,
                )
            }
        }
    };
    Ok(ParsedPacket {
        src,
        dst,
        kind,
        payload,
        len: bytes.len(),
    })
}

/// Puts a bare IP packet into an Ethernet II frame in `buf` (locally administered addresses;
/// the ether type from the IP version).
pub fn ethernet_frame(buf: &mut Vec<u8>, ip: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
    buf.extend_from_slice(if v6 { &[0x86, 0xDD] } else { &[0x08, 0x00] });
    buf.extend_from_slice(ip);
}

/// The sender and target protocol addresses of an Ethernet ARP frame for IPv4 (with or
/// without 802.1Q tags), or `None` for any other frame.
pub fn arp_addresses(frame: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let mut at = 12;
    let mut et = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    while et == 0x8100 || et == 0x88A8 {
        at += 4;
        et = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    }
    if et != 0x0806 {
        return None;
    }
    let arp = frame.get(at + 2..at + 30)?;
    // hardware Ethernet (1), protocol IPv4, lengths 6 and 4
    if arp[0..2] != [0, 1] || arp[2..4] != [0x08, 0x00] || arp[4] != 6 || arp[5] != 4 {
        return None;
    }
    let ip = |o: usize| IpAddr::from([arp[o], arp[o + 1], arp[o + 2], arp[o + 3]]);
    Some((ip(14), ip(24)))
}

impl ParsedPacket<'_> {
    /// The key of the packet's set, whether the packet travels from the key's `lo` to `hi`,
    /// and its distribution identifier (recomputed from the key alone, claim 12). `None` for
    /// packets that carry no state (other ICMP, other protocols). An ESP key is the SA's
    /// (source, destination, SPI), always in the packet's direction (`true`).
    pub fn flow(&self, dist: &Distributor) -> Option<(FlowKey, bool, DistributionId)> {
        let (key, dir) = match self.kind {
            PacketKind::Tcp { sport, dport, .. } | PacketKind::Udp { sport, dport } => {
                let proto = if matches!(self.kind, PacketKind::Tcp { .. }) {
                    L4Proto::Tcp
                } else {
                    L4Proto::Udp
                };
                FlowKey::transport(
                    proto,
                    Endpoint::new(self.src, sport),
                    Endpoint::new(self.dst, dport),
                )
            }
            PacketKind::IcmpEcho { ident, .. } => FlowKey::icmp(self.src, self.dst, ident),
            PacketKind::Esp { spi } => (
                FlowKey::Esp {
                    src: self.src,
                    dst: self.dst,
                    spi,
                },
                true,
            ),
            PacketKind::Isakmp {
                initiator_cookie,
                message_id,
                ..
            } => FlowKey::isakmp(self.src, self.dst, initiator_cookie, message_id),
            PacketKind::IcmpOther | PacketKind::Other { .. } => return None,
        };
        Some((key, dir, dist.for_key(&key)))
    }

    /// IP protocol number of the transport.
    pub fn proto(&self) -> u8 {
        match self.kind {
            PacketKind::Tcp { .. } => 6,
            PacketKind::Udp { .. } | PacketKind::Isakmp { .. } => 17,
            PacketKind::IcmpEcho { .. } | PacketKind::IcmpOther => {
                if self.src.is_ipv6() {
                    58
                } else {
                    1
                }
            }
            PacketKind::Esp { .. } => 50,
            PacketKind::Other { proto } => proto,
        }
    }

    /// Source and destination ports, where the transport has them.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.kind {
            PacketKind::Tcp { sport, dport, .. }
            | PacketKind::Udp { sport, dport }
            | PacketKind::Isakmp { sport, dport, .. } => Some((sport, dport)),
            _ => None,
        }
    }
}

/// Builders of test and simulation packets (bare IP framing).
pub mod build {
    use super::TcpFlags;
    use etherparse::PacketBuilder;
    use std::net::IpAddr;

    fn ip(
        src: IpAddr,
        dst: IpAddr,
    ) -> Option<etherparse::PacketBuilderStep<etherparse::IpHeaders>> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some(PacketBuilder::ipv4(s.octets(), d.octets(), 64)),
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(PacketBuilder::ipv6(s.octets(), d.octets(), 64)),
            _ => None,
        }
    }

    /// A TCP segment; `None` for mixed address families.
    pub fn tcp(
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        flags: TcpFlags,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let mut b = ip(src, dst)?.tcp(sport, dport, 1, 65535);
        if flags.syn {
            b = b.syn();
        }
        if flags.ack {
            b = b.ack(1);
        }
        if flags.fin {
            b = b.fin();
        }
        if flags.rst {
            b = b.rst();
        }
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).ok()?;
        Some(out)
    }

    /// A UDP datagram; `None` for mixed address families.
    pub fn udp(
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let b = ip(src, dst)?.udp(sport, dport);
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).ok()?;
        Some(out)
    }

    /// A well-formed ISAKMP/IKE header alone (28 bytes, the length field 28): IKEv2
    /// IKE_SA_INIT when `responder_cookie` is zero, else INFORMATIONAL.
    pub fn ike(initiator_cookie: u64, responder_cookie: u64, message_id: u32) -> Vec<u8> {
        let exchange = if responder_cookie == 0 { 34 } else { 37 };
        let mut v = Vec::with_capacity(super::IKE_HEADER_LEN);
        v.extend_from_slice(&initiator_cookie.to_be_bytes());
        v.extend_from_slice(&responder_cookie.to_be_bytes());
        // next payload SA (33), version 2.0, the exchange, flags: initiator
        v.extend_from_slice(&[33, 0x20, exchange, 0x08]);
        v.extend_from_slice(&message_id.to_be_bytes());
        v.extend_from_slice(&(super::IKE_HEADER_LEN as u32).to_be_bytes());
        v
    }

    /// An ICMP(v6) echo request or reply; `None` for mixed address families.
    pub fn icmp_echo(src: IpAddr, dst: IpAddr, ident: u16, request: bool) -> Option<Vec<u8>> {
        let b = ip(src, dst)?;
        let mut out = Vec::new();
        match (src, request) {
            (IpAddr::V4(_), true) => b.icmpv4_echo_request(ident, 1).write(&mut out, &[]).ok()?,
            (IpAddr::V4(_), false) => b.icmpv4_echo_reply(ident, 1).write(&mut out, &[]).ok()?,
            (IpAddr::V6(_), true) => b.icmpv6_echo_request(ident, 1).write(&mut out, &[]).ok()?,
            (IpAddr::V6(_), false) => b.icmpv6_echo_reply(ident, 1).write(&mut out, &[]).ok()?,
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distribution::ClusterSecret;
    use crate::ids::IdCount;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn a4(x: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, x))
    }

    #[test]
    fn tcp_both_directions() {
        let d = Distributor::new(&ClusterSecret::new([1; 16]), IdCount::default());
        let syn = TcpFlags {
            syn: true,
            ..Default::default()
        };
        let p1 = build::tcp(a4(1), 1234, a4(2), 80, syn, b"").unwrap();
        let p2 = build::tcp(a4(2), 80, a4(1), 1234, TcpFlags::default(), b"x").unwrap();
        let a = parse_packet(&p1, Framing::Ip).unwrap();
        let b = parse_packet(&p2, Framing::Ip).unwrap();
        let (ka, da, ia) = a.flow(&d).unwrap();
        let (kb, db, ib) = b.flow(&d).unwrap();
        assert_eq!((ka, ia), (kb, ib));
        assert_ne!(da, db);
        assert!(matches!(a.kind, PacketKind::Tcp { flags, .. } if flags.syn));
        assert_eq!(b.payload, b"x");
    }

    #[test]
    fn ipsec_sas_and_ike_share_an_id() {
        let d = Distributor::new(&ClusterSecret::new([1; 16]), IdCount::default());
        let ike = build::ike(7, 0, 0);
        let ike_p = build::udp(a4(1), 500, a4(2), 500, &ike).unwrap();
        let mut natt = vec![0u8; 4];
        natt.extend_from_slice(&0x1111u32.to_be_bytes());
        natt.extend_from_slice(&[0; 8]);
        let esp_in = build::udp(a4(2), 4500, a4(1), 4500, &natt[4..]).unwrap();
        let esp_out = build::udp(a4(1), 4500, a4(2), 4500, &0x2222u32.to_be_bytes()).unwrap();
        let p = parse_packet(&ike_p, Framing::Ip).unwrap();
        assert!(matches!(
            p.kind,
            PacketKind::Isakmp {
                initiator_cookie: 7,
                ..
            }
        ));
        let id = p.flow(&d).unwrap().2;
        for b in [&esp_in, &esp_out] {
            let p = parse_packet(b, Framing::Ip).unwrap();
            assert!(matches!(p.kind, PacketKind::Esp { .. }), "{:?}", p.kind);
            assert_eq!(p.flow(&d).unwrap().2, id);
        }
    }

    #[test]
    fn icmp_v6_echo_and_garbage() {
        let s = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let t = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let p = build::icmp_echo(s, t, 99, true).unwrap();
        let pp = parse_packet(&p, Framing::Ip).unwrap();
        assert_eq!(
            pp.kind,
            PacketKind::IcmpEcho {
                ident: 99,
                request: true
            }
        );
        assert!(parse_packet(&[], Framing::Ip).is_err());
        assert!(parse_packet(&[0x45; 3], Framing::Ethernet).is_err());
        assert!(build::udp(s, 1, a4(1), 2, b"").is_none());
    }

    /// The ISAKMP/IKE message `ike` on UDP `port` (behind the non-ESP marker on 4500), parsed.
    fn ike_on(port: u16, ike: &[u8]) -> Result<PacketKind, ParseError> {
        let mut pay = if port == 4500 { vec![0; 4] } else { Vec::new() };
        pay.extend_from_slice(ike);
        let b = build::udp(a4(1), 40000, a4(2), port, &pay).unwrap();
        parse_packet(&b, Framing::Ip).map(|p| p.kind)
    }

    /// `ike` with its byte `at` set to `v`.
    fn with(mut ike: Vec<u8>, at: usize, v: u8) -> Vec<u8> {
        ike[at] = v;
        ike
    }

    /// `ike` with its length field set to `len`.
    fn with_len(mut ike: Vec<u8>, len: u32) -> Vec<u8> {
        ike[24..28].copy_from_slice(&len.to_be_bytes());
        ike
    }

    #[test]
    fn well_formed_ikev1_and_ikev2_headers_are_isakmp() {
        let v2 = build::ike(0x0102_0304_0506_0708, 0x1112_1314_1516_1718, 0x2122_2324);
        let mut long = v2.clone();
        long.extend_from_slice(&[0xAB; 72]);
        let long = with_len(long, 100);
        for port in [500, 4500] {
            assert_eq!(
                ike_on(port, &v2),
                Ok(PacketKind::Isakmp {
                    sport: 40000,
                    dport: port,
                    initiator_cookie: 0x0102_0304_0506_0708,
                    responder_cookie: 0x1112_1314_1516_1718,
                    message_id: 0x2122_2324,
                })
            );
            assert!(matches!(ike_on(port, &long), Ok(PacketKind::Isakmp { .. })));
            // IKEv2: every defined exchange, and minor versions ignored
            for x in [34, 35, 36, 37, 38, 43, 44] {
                let m = with(with(v2.clone(), 18, x), 17, 0x2F);
                assert!(
                    matches!(ike_on(port, &m), Ok(PacketKind::Isakmp { .. })),
                    "{x}"
                );
            }
            // ISAKMP 1.0: main, aggressive, informational, transaction, quick and new group
            for x in [1, 2, 3, 4, 5, 6, 32, 33] {
                let m = with(with(v2.clone(), 17, 0x10), 18, x);
                assert!(
                    matches!(ike_on(port, &m), Ok(PacketKind::Isakmp { .. })),
                    "{x}"
                );
            }
        }
    }

    #[test]
    fn hostile_ike_headers_are_refused_by_name() {
        let ok = build::ike(9, 0, 0);
        let v1 = with(ok.clone(), 17, 0x10);
        let cases: Vec<(Vec<u8>, IkeError)> = vec![
            (ok[..27].to_vec(), IkeError::Truncated { len: 27 }),
            (Vec::new(), IkeError::Truncated { len: 0 }),
            (
                with(ok.clone(), 17, 0x00),
                IkeError::Version { major: 0, minor: 0 },
            ),
            (
                with(ok.clone(), 17, 0x30),
                IkeError::Version { major: 3, minor: 0 },
            ),
            (
                with(ok.clone(), 17, 0xF2),
                IkeError::Version {
                    major: 15,
                    minor: 2,
                },
            ),
            (
                with(ok.clone(), 17, 0x11),
                IkeError::Version { major: 1, minor: 1 },
            ),
            (
                with_len(ok.clone(), 27),
                IkeError::Length {
                    field: 27,
                    payload: 28,
                },
            ),
            (
                with_len(ok.clone(), 0),
                IkeError::Length {
                    field: 0,
                    payload: 28,
                },
            ),
            (
                with_len(ok.clone(), 29),
                IkeError::Length {
                    field: 29,
                    payload: 28,
                },
            ),
            (
                with_len(ok.clone(), u32::MAX),
                IkeError::Length {
                    field: u32::MAX,
                    payload: 28,
                },
            ),
            (
                [&ok[..], &[0; 4]].concat(),
                IkeError::Length {
                    field: 28,
                    payload: 32,
                },
            ),
            (
                with(ok.clone(), 18, 0),
                IkeError::Exchange {
                    major: 2,
                    exchange: 0,
                },
            ),
            (
                with(ok.clone(), 18, 33),
                IkeError::Exchange {
                    major: 2,
                    exchange: 33,
                },
            ),
            (
                with(ok.clone(), 18, 39),
                IkeError::Exchange {
                    major: 2,
                    exchange: 39,
                },
            ),
            (
                with(ok.clone(), 18, 255),
                IkeError::Exchange {
                    major: 2,
                    exchange: 255,
                },
            ),
            (
                with(v1.clone(), 18, 0),
                IkeError::Exchange {
                    major: 1,
                    exchange: 0,
                },
            ),
            (
                with(v1.clone(), 18, 7),
                IkeError::Exchange {
                    major: 1,
                    exchange: 7,
                },
            ),
            (
                with(v1.clone(), 18, 34),
                IkeError::Exchange {
                    major: 1,
                    exchange: 34,
                },
            ),
        ];
        for port in [500, 4500] {
            for (bytes, want) in &cases {
                assert_eq!(
                    ike_on(port, bytes),
                    Err(ParseError::Ike(*want)),
                    "{port} {want}"
                );
            }
        }
        // From port 500 as well as to it.
        let b = build::udp(a4(2), 500, a4(1), 40000, &ok[..20]).unwrap();
        assert_eq!(
            parse_packet(&b, Framing::Ip).map(|p| p.kind),
            Err(ParseError::Ike(IkeError::Truncated { len: 20 }))
        );
    }

    #[test]
    fn port_4500_without_the_marker_is_still_esp_or_a_keepalive() {
        let esp = build::udp(a4(1), 4500, a4(2), 4500, &0x2222u32.to_be_bytes()).unwrap();
        let keepalive = build::udp(a4(1), 4500, a4(2), 4500, &[0xff]).unwrap();
        assert_eq!(
            parse_packet(&esp, Framing::Ip).unwrap().kind,
            PacketKind::Esp { spi: 0x2222 }
        );
        assert_eq!(
            parse_packet(&keepalive, Framing::Ip).unwrap().kind,
            PacketKind::Udp {
                sport: 4500,
                dport: 4500
            }
        );
        // the marker followed by a bad header is refused, not taken for ESP or plain UDP
        assert!(matches!(
            ike_on(4500, &[0; 10]),
            Err(ParseError::Ike(IkeError::Truncated { len: 10 }))
        ));
    }
}
