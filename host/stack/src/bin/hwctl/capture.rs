//! Capture files for `hwctl esp`: a strict reader for classic pcap (either
//! byte order, micro- or nanosecond timestamps) and pcapng (sections of
//! either byte order, several interfaces, enhanced / simple / obsolete packet
//! blocks, `if_tsresol`), the link layers in front of IP, and the IP headers
//! around an ESP packet. Nothing here panics on any input: every problem is
//! an error naming the offset or a verdict for the frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Largest record accepted (bytes).
const MAX_RECORD: usize = 256 * 1024;

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Capture time in microseconds since the epoch.
    pub ts_us: u64,
    /// Link type of the interface it was captured on (pcap LINKTYPE_*).
    pub link: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// The link types the reader accepts, for error messages.
pub const LINK_TYPES: &str = "null/loopback (0), Ethernet (1), raw IP (101, 12, 14), \
IPv4 (228), IPv6 (229), BSD loop (108), Linux cooked (113, 276)";

fn supported_link(l: u32) -> bool {
    matches!(l, 0 | 1 | 12 | 14 | 101 | 108 | 113 | 228 | 229 | 276)
}

struct Rd<'a> {
    b: &'a [u8],
    be: bool,
}

impl Rd<'_> {
    fn u32(&self, at: usize) -> Result<u32, String> {
        let s = self
            .b
            .get(at..at.saturating_add(4))
            .ok_or_else(|| format!("truncated at offset {at}"))?;
        let a = [s[0], s[1], s[2], s[3]];
        Ok(if self.be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }
    fn u16(&self, at: usize) -> Result<u16, String> {
        let s = self
            .b
            .get(at..at.saturating_add(2))
            .ok_or_else(|| format!("truncated at offset {at}"))?;
        let a = [s[0], s[1]];
        Ok(if self.be {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        })
    }
}

/// Reads a pcap or pcapng file's frames.
///
/// # Errors
/// A message naming what is wrong and where.
pub fn read(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let magic = bytes
        .get(..4)
        .map(|s| [s[0], s[1], s[2], s[3]])
        .ok_or("too short to be a pcap or pcapng file")?;
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        read_pcapng(bytes)
    } else {
        read_pcap(bytes)
    }
}

fn read_pcap(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let le = Rd {
        b: bytes,
        be: false,
    };
    let (be, nanos) = match le.u32(0)? {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        m => {
            return Err(format!(
                "not a pcap or pcapng file (magic number 0x{m:08x})"
            ))
        }
    };
    let r = Rd { b: bytes, be };
    // The link type's low 16 bits (the upper bits may carry FCS flags).
    let link = r.u32(20)? & 0xffff;
    if !supported_link(link) {
        return Err(format!(
            "link type {link} is not supported (supported: {LINK_TYPES})"
        ));
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let sec = u64::from(r.u32(at)?);
        let frac = u64::from(r.u32(at + 4)?);
        let incl = r.u32(at + 8)? as usize;
        if incl > MAX_RECORD {
            return Err(format!(
                "record at offset {at} claims {incl} bytes (more than {MAX_RECORD})"
            ));
        }
        let start = at + 16;
        let data = bytes
            .get(start..start + incl)
            .ok_or_else(|| format!("record at offset {at} is truncated"))?;
        let us = if nanos { frac / 1000 } else { frac };
        frames.push(Frame {
            ts_us: sec.saturating_mul(1_000_000).saturating_add(us),
            link,
            data: data.to_vec(),
        });
        at = start + incl;
    }
    Ok(frames)
}

struct Iface {
    link: u32,
    snaplen: u32,
    /// Timestamp units per second.
    units: u128,
}

fn ts_us(units_per_s: u128, hi: u32, lo: u32) -> u64 {
    let t = (u128::from(hi) << 32) | u128::from(lo);
    // Units of 0 (a resolution that overflowed) are taken as microseconds.
    let us = (t * 1_000_000).checked_div(units_per_s).unwrap_or(t);
    u64::try_from(us).unwrap_or(u64::MAX)
}

fn read_pcapng(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let mut frames = Vec::new();
    let mut ifaces: Vec<Iface> = Vec::new();
    let mut be = false;
    let mut at = 0usize;
    while at < bytes.len() {
        let le = Rd {
            b: bytes,
            be: false,
        };
        let btype_le = le.u32(at)?;
        if btype_le == 0x0a0d_0d0a {
            // Section header: the byte-order magic decides the section's order.
            be = match le.u32(at + 8)? {
                0x1a2b_3c4d => false,
                0x4d3c_2b1a => true,
                m => {
                    return Err(format!(
                        "pcapng section at offset {at} has a bad byte-order magic 0x{m:08x}"
                    ))
                }
            };
            ifaces.clear();
        } else if at == 0 {
            return Err("pcapng file does not start with a section header".into());
        }
        let r = Rd { b: bytes, be };
        let btype = r.u32(at)?;
        let blen = r.u32(at + 4)? as usize;
        if blen < 12 || blen & 3 != 0 || blen > MAX_RECORD + 64 {
            return Err(format!(
                "pcapng block at offset {at} has a bad length {blen}"
            ));
        }
        let end = at
            .checked_add(blen)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| format!("pcapng block at offset {at} is truncated"))?;
        if r.u32(end - 4)? as usize != blen {
            return Err(format!(
                "pcapng block at offset {at}: trailing length differs from {blen}"
            ));
        }
        let body = at + 8;
        let body_end = end - 4;
        match btype {
            // Interface description.
            1 => {
                let link = u32::from(r.u16(body)?);
                let snaplen = r.u32(body + 4)?;
                let mut units: u128 = 1_000_000;
                let mut o = body + 8;
                while o + 4 <= body_end {
                    let code = r.u16(o)?;
                    let len = usize::from(r.u16(o + 2)?);
                    if code == 0 {
                        break;
                    }
                    if code == 9 && len == 1 {
                        let v = bytes.get(o + 4).copied().unwrap_or(6);
                        let n = u32::from(v & 0x7f);
                        units = if v & 0x80 == 0 {
                            10u128.checked_pow(n).unwrap_or(0)
                        } else {
                            2u128.checked_pow(n).unwrap_or(0)
                        };
                    }
                    o += 4 + len.div_ceil(4) * 4;
                }
                ifaces.push(Iface {
                    link,
                    snaplen,
                    units,
                });
            }
            // Enhanced packet (6) and the obsolete packet block (2).
            6 | 2 => {
                let (ifid, hi, lo, caplen, data_at) = if btype == 6 {
                    (
                        r.u32(body)? as usize,
                        r.u32(body + 4)?,
                        r.u32(body + 8)?,
                        r.u32(body + 12)? as usize,
                        body + 20,
                    )
                } else {
                    (
                        usize::from(r.u16(body)?),
                        r.u32(body + 4)?,
                        r.u32(body + 8)?,
                        r.u32(body + 12)? as usize,
                        body + 20,
                    )
                };
                let iface = ifaces.get(ifid).ok_or_else(|| {
                    format!("pcapng packet at offset {at} names undeclared interface {ifid}")
                })?;
                let data = bytes
                    .get(data_at..data_at.saturating_add(caplen))
                    .filter(|_| data_at + caplen <= body_end)
                    .ok_or_else(|| format!("pcapng packet at offset {at} is truncated"))?;
                push(&mut frames, iface, at, ts_us(iface.units, hi, lo), data)?;
            }
            // Simple packet: no timestamp, interface 0.
            3 => {
                let iface = ifaces.first().ok_or_else(|| {
                    format!("pcapng simple packet at offset {at} before any interface")
                })?;
                let orig = r.u32(body)? as usize;
                let mut caplen = orig.min(body_end.saturating_sub(body + 4));
                if iface.snaplen != 0 {
                    caplen = caplen.min(iface.snaplen as usize);
                }
                let data = bytes
                    .get(body + 4..body + 4 + caplen)
                    .ok_or_else(|| format!("pcapng packet at offset {at} is truncated"))?;
                push(&mut frames, iface, at, 0, data)?;
            }
            _ => {}
        }
        at = end;
    }
    Ok(frames)
}

fn push(
    frames: &mut Vec<Frame>,
    iface: &Iface,
    at: usize,
    ts_us: u64,
    data: &[u8],
) -> Result<(), String> {
    if !supported_link(iface.link) {
        return Err(format!(
            "pcapng packet at offset {at}: link type {} is not supported (supported: {LINK_TYPES})",
            iface.link
        ));
    }
    frames.push(Frame {
        ts_us,
        link: iface.link,
        data: data.to_vec(),
    });
    Ok(())
}

/// Writes a classic pcap file (microsecond timestamps, little endian) with
/// link type raw IP (101).
pub fn write_raw_ip(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    for (ts, data) in records {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(
            &u32::try_from(ts / 1_000_000)
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// The IP packet inside a frame, or `None` when the frame carries no IP.
pub fn ip_of(link: u32, data: &[u8]) -> Option<&[u8]> {
    let ip = match link {
        0 => {
            // Host byte order of the capturing machine: accept either.
            let f = data.get(..4)?;
            let le = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
            let be = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
            let fam_ok = |v: u32| matches!(v, 2 | 10 | 24 | 28 | 30);
            if !(fam_ok(le) || fam_ok(be)) {
                return None;
            }
            data.get(4..)?
        }
        108 => {
            let f = data.get(..4)?;
            let v = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
            if !matches!(v, 2 | 10 | 24 | 28 | 30) {
                return None;
            }
            data.get(4..)?
        }
        1 => {
            let mut at = 12;
            loop {
                let t = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]);
                match t {
                    0x8100 | 0x88a8 | 0x9100 => at += 4,
                    0x0800 | 0x86dd => break data.get(at + 2..)?,
                    _ => return None,
                }
            }
        }
        113 => {
            let t = u16::from_be_bytes([*data.get(14)?, *data.get(15)?]);
            if !matches!(t, 0x0800 | 0x86dd) {
                return None;
            }
            data.get(16..)?
        }
        276 => {
            let t = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            if !matches!(t, 0x0800 | 0x86dd) {
                return None;
            }
            data.get(20..)?
        }
        _ => data,
    };
    match ip.first()? >> 4 {
        4 | 6 => Some(ip),
        _ => None,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn pcapng(be: bool, link: u16, packets: &[&[u8]]) -> Vec<u8> {
        let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut f = Vec::new();
        // SHB
        f.extend_from_slice(&[0x0a, 0x0d, 0x0d, 0x0a]);
        f.extend_from_slice(&w32(28));
        f.extend_from_slice(&w32(0x1a2b_3c4d));
        f.extend_from_slice(&w16(1));
        f.extend_from_slice(&w16(0));
        f.extend_from_slice(&[0xff; 8]);
        f.extend_from_slice(&w32(28));
        // IDB with if_tsresol = 9 (nanoseconds)
        f.extend_from_slice(&w32(1));
        f.extend_from_slice(&w32(32));
        f.extend_from_slice(&w16(link));
        f.extend_from_slice(&w16(0));
        f.extend_from_slice(&w32(0));
        f.extend_from_slice(&w16(9));
        f.extend_from_slice(&w16(1));
        f.extend_from_slice(&[9, 0, 0, 0]);
        f.extend_from_slice(&[0; 4]); // opt_endofopt
        f.extend_from_slice(&w32(32));
        for p in packets {
            let pad = p.len().div_ceil(4) * 4;
            let blen = u32::try_from(32 + pad).unwrap();
            f.extend_from_slice(&w32(6));
            f.extend_from_slice(&w32(blen));
            f.extend_from_slice(&w32(0));
            f.extend_from_slice(&w32(0));
            f.extend_from_slice(&w32(3_000_000_000));
            f.extend_from_slice(&w32(p.len() as u32));
            f.extend_from_slice(&w32(p.len() as u32));
            f.extend_from_slice(p);
            f.resize(f.len() + pad - p.len(), 0);
            f.extend_from_slice(&w32(blen));
        }
        f
    }

    #[test]
    fn pcapng_both_byte_orders() {
        for be in [false, true] {
            let f = pcapng(be, 101, &[&[0x45, 1, 2], &[]]);
            let fr = read(&f).unwrap();
            assert_eq!(fr.len(), 2);
            assert_eq!(fr[0].data, vec![0x45, 1, 2]);
            assert_eq!(fr[0].link, 101);
            assert_eq!(fr[0].ts_us, 3_000_000);
            for cut in 1..f.len() {
                let _ = read(&f[..cut]);
            }
        }
        assert!(read(&pcapng(false, 147, &[&[1]])).is_err());
    }

    #[test]
    fn pcap_round_trip_and_garbage() {
        let f = write_raw_ip(&[(1_500_000, vec![0x45, 0]), (2, vec![])]);
        let fr = read(&f).unwrap();
        assert_eq!(fr.len(), 2);
        assert_eq!(fr[0].ts_us, 1_500_000);
        assert!(read(b"hello world, not a capture").is_err());
        assert!(read(&[]).is_err());
        for cut in 0..f.len() {
            let _ = read(&f[..cut]);
        }
    }

    #[test]
    fn link_layers() {
        let ip = [0x45u8, 0, 0, 20];
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0, 1, 0x08, 0x00]);
        eth.extend_from_slice(&ip);
        assert_eq!(ip_of(1, &eth), Some(&ip[..]));
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        assert_eq!(ip_of(0, &null), Some(&ip[..]));
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 0]);
        assert_eq!(ip_of(1, &arp), None);
        assert_eq!(ip_of(101, &[0x12]), None);
    }
}
