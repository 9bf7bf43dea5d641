//! Packet parsing (figure 2 step 200): untrusted bytes through `etherparse` into the fields the
//! core needs: addresses, transport, TCP flags, ICMP echo identifier, ESP SPI, ISAKMP cookies.
//! Never panics; every failure is a [`ParseError`].

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
}

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

fn be64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_be_bytes(a))
}

fn isakmp(sport: u16, dport: u16, b: &[u8]) -> Option<PacketKind> {
    Some(PacketKind::Isakmp {
        sport,
        dport,
        initiator_cookie: be64(b, 0)?,
        responder_cookie: be64(b, 8)?,
        message_id: be32(b, 20)?,
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
                isakmp(sport, dport, p).unwrap_or(PacketKind::Udp { sport, dport })
            } else if sport == 4500 || dport == 4500 {
                match be32(p, 0) {
                    Some(0) => {
                        isakmp(sport, dport, &p[4..]).unwrap_or(PacketKind::Udp { sport, dport })
                    }
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
        let mut ike = vec![0u8; 28];
        ike[..8].copy_from_slice(&7u64.to_be_bytes());
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
}
