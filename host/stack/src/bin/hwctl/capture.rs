//! The IP headers around an ESP packet for `hwctl esp`: where the addresses,
//! the protocol and the payload are, and the lengths and checksum to fix after
//! a packet changed size. Capture files and the link layers in front of IP are
//! read by the one capture reader, `host::core::pcap`. Nothing here panics on
//! any input: a header that does not parse is `None`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where things are in an IP packet.
#[derive(Clone, Copy, Debug)]
pub struct IpView {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Offset of the byte that names the protocol after the headers kept
    /// outside ESP (IPv4 protocol field or the last IPv6 next-header field).
    pub nh_at: usize,
    /// The protocol it names.
    pub proto: u8,
    /// Offset of the upper-layer data (the ESP header when `proto` is 50).
    pub payload_at: usize,
    /// End of the packet (the IPv4 total length; capture padding excluded).
    pub end: usize,
    /// A fragment (non-zero offset or more fragments).
    pub fragment: bool,
}

/// IPv6 extension headers that stay in front of ESP (RFC 4303 section 3.1.1):
/// hop-by-hop, routing, fragment; destination options may go either side.
fn ipv6_ext_len(nh: u8, hdr: &[u8]) -> Option<usize> {
    match nh {
        0 | 43 | 60 => Some((usize::from(*hdr.get(1)?) + 1) * 8),
        44 => Some(8),
        51 => Some((usize::from(*hdr.get(1)?) + 2) * 4),
        _ => None,
    }
}

/// Parses the IP header(s) of `ip`, walking IPv6 extension headers until
/// `stop_at` (50 to find ESP) or the upper layer. `None` when the header is
/// not a well-formed IPv4 or IPv6 header.
pub fn view(ip: &[u8], stop_at_esp: bool) -> Option<IpView> {
    match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            if ihl < 20 || ip.len() < ihl || total < ihl || total > ip.len() {
                return None;
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            Some(IpView {
                src: IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
                dst: IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])),
                nh_at: 9,
                proto: ip[9],
                payload_at: ihl,
                end: total,
                fragment: frag & 0x3fff != 0,
            })
        }
        6 => {
            let hdr = ip.get(..40)?;
            let plen = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
            let end = 40 + plen;
            if plen == 0 || end > ip.len() {
                return None;
            }
            let a = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&hdr[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let mut nh_at = 6;
            let mut at = 40;
            let mut fragment = false;
            loop {
                let nh = ip[nh_at];
                if stop_at_esp && nh == 50 {
                    break;
                }
                // Without ESP (encrypting in transport mode) only hop-by-hop,
                // routing and fragment headers stay in front.
                if !stop_at_esp && !matches!(nh, 0 | 43 | 44) {
                    break;
                }
                let Some(len) = ipv6_ext_len(nh, ip.get(at..end)?) else {
                    break;
                };
                if nh == 44 {
                    let off = u16::from_be_bytes([*ip.get(at + 2)?, *ip.get(at + 3)?]);
                    // Offset (13 bits) or the more-fragments flag.
                    fragment |= off & 0xfff9 != 0;
                }
                if at + len > end {
                    return None;
                }
                nh_at = at;
                at += len;
            }
            Some(IpView {
                src: a(8),
                dst: a(24),
                nh_at,
                proto: ip[nh_at],
                payload_at: at,
                end,
                fragment,
            })
        }
        _ => None,
    }
}

/// Sets the lengths (and the IPv4 header checksum) of a packet whose size
/// changed.
pub fn fix_lengths(p: &mut [u8]) {
    let len = p.len();
    match p.first().map(|b| b >> 4) {
        Some(4) if len >= 20 => {
            let ihl = (usize::from(p[0] & 0x0f) * 4).clamp(20, len);
            let total = u16::try_from(len).unwrap_or(u16::MAX);
            p[2..4].copy_from_slice(&total.to_be_bytes());
            p[10] = 0;
            p[11] = 0;
            let c = checksum(&p[..ihl]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Some(6) if len >= 40 => {
            let pl = u16::try_from(len - 40).unwrap_or(u16::MAX);
            p[4..6].copy_from_slice(&pl.to_be_bytes());
        }
        _ => {}
    }
}

/// The Internet checksum.
pub fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u32::from(w);
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
