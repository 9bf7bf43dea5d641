//! The one reader and writer of capture files in the workspace: classic pcap (micro- or
//! nanosecond timestamps, either byte order) and pcapng (sections of either byte order, several
//! interfaces, `if_tsresol`, enhanced, simple and obsolete packet blocks; other blocks skipped),
//! built on the `pcap-file` crate, plus the link layers in front of IP.
//!
//! Accepted link types: [`LinkType`] (null/loopback, Ethernet, raw IP, BSD loop, Linux cooked
//! v1 and v2). The reader is strict and never panics: every problem is a [`PcapError`] that says
//! what is wrong and at which byte offset.
//!
//! Callers: the simulator and `clusterd demo --pcap` read with [`read`] or [`ip_packets`];
//! `hwctl esp` reads with [`read_frames`] and [`ip_packet`] and writes with [`write()`].

use std::borrow::Cow;
use std::time::Duration;

use byteorder_slice::{BigEndian, ByteOrder, LittleEndian};
use pcap_file::pcap::{PcapHeader, RawPcapPacket};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;
use pcap_file::pcapng::blocks::{ENHANCED_PACKET_BLOCK, PACKET_BLOCK, SIMPLE_PACKET_BLOCK};
use pcap_file::pcapng::{Block, PcapNgParser, PcapNgWriter, RawBlock};
use pcap_file::{DataLink, Endianness, TsResolution};

/// Largest record accepted (bytes).
pub const MAX_RECORD: usize = 256 * 1024;

/// The first four bytes of a pcapng file (a section header block's type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Link type of a captured frame: what comes in front of the IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// BSD null/loopback (LINKTYPE_NULL = 0): a 4-byte address family in the capturing host's
    /// byte order.
    Null,
    /// Ethernet (LINKTYPE_ETHERNET = 1), with any number of 802.1Q / 802.1ad tags.
    Ethernet,
    /// Bare IPv4/IPv6 (LINKTYPE_RAW = 101; also read from the older codes 12 and 14 and the
    /// IPv4-only 228 and IPv6-only 229).
    Raw,
    /// OpenBSD loopback (LINKTYPE_LOOP = 108): a 4-byte address family in network byte order.
    Loop,
    /// Linux cooked capture v1 (LINKTYPE_LINUX_SLL = 113): a 16-byte header.
    LinuxSll,
    /// Linux cooked capture v2 (LINKTYPE_LINUX_SLL2 = 276): a 20-byte header.
    LinuxSll2,
}

/// The link types [`LinkType::from_code`] accepts, for error messages.
pub const SUPPORTED_LINK_TYPES: &str = "null/loopback (0), Ethernet (1), raw IP (101, 12, 14), \
IPv4 (228), IPv6 (229), BSD loop (108), Linux cooked (113, 276)";

impl LinkType {
    /// Every link type.
    pub const ALL: [LinkType; 6] = [
        LinkType::Null,
        LinkType::Ethernet,
        LinkType::Raw,
        LinkType::Loop,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
    ];

    /// The LINKTYPE_* code written for this link type.
    pub fn code(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Raw => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
        }
    }

    /// The link type of a LINKTYPE_* code (its low 16 bits; the upper bits may carry FCS
    /// flags), or `None` when it is not one of [`SUPPORTED_LINK_TYPES`].
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code & 0xffff {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 | 228 | 229 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }
}

/// One captured packet of a file with one link type (see [`read`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapPacket {
    /// Capture time in microseconds since the epoch.
    pub ts_us: u64,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// One captured frame with the link type of the interface it was captured on (see
/// [`read_frames`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Capture time in microseconds since the epoch (0 for a pcapng simple packet block).
    pub ts_us: u64,
    /// Link type of its interface.
    pub link: LinkType,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Why a capture file did not read. Every variant names the byte offset of the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    /// Neither a pcap nor a pcapng file.
    #[error("not a pcap or pcapng file (magic number 0x{0:08x})")]
    BadMagic(u32),
    /// The file ends inside a header, record or block.
    #[error("truncated at offset {0}")]
    Truncated(usize),
    /// A record larger than [`MAX_RECORD`].
    #[error("record at offset {offset} claims {len} bytes (more than {MAX_RECORD})")]
    Oversized {
        /// Where the record starts.
        offset: usize,
        /// Claimed length.
        len: u32,
    },
    /// A link type that is not one of [`SUPPORTED_LINK_TYPES`].
    #[error(
        "link type {code} is not supported (supported: {SUPPORTED_LINK_TYPES}); named at offset {offset}"
    )]
    LinkType {
        /// The LINKTYPE_* code.
        code: u32,
        /// Where the header or packet block that names it starts.
        offset: usize,
    },
    /// Packets of different link types where one is required ([`read`]).
    #[error("packet at offset {offset} has link type {found}, earlier packets {expected}")]
    MixedLinkTypes {
        /// The earlier packets' LINKTYPE_* code.
        expected: u32,
        /// This packet's code.
        found: u32,
        /// Where the packet block starts.
        offset: usize,
    },
    /// A malformed pcapng block or pcap header field.
    #[error("malformed capture at offset {offset}: {what}")]
    Malformed {
        /// What is wrong.
        what: &'static str,
        /// Where the block (or header) starts.
        offset: usize,
    },
}

impl PcapError {
    /// Maps an error of the `pcap-file` crate for the block or record at `offset`.
    fn from_crate(e: pcap_file::PcapError, offset: usize) -> Self {
        match e {
            pcap_file::PcapError::IncompleteBuffer => PcapError::Truncated(offset),
            pcap_file::PcapError::InvalidField(what) => PcapError::Malformed { what, offset },
            pcap_file::PcapError::InvalidInterfaceId(_) => PcapError::Malformed {
                what: "packet names an undeclared interface",
                offset,
            },
            pcap_file::PcapError::Utf8Error(_) | pcap_file::PcapError::FromUtf8Error(_) => {
                PcapError::Malformed {
                    what: "option text is not UTF-8",
                    offset,
                }
            }
            pcap_file::PcapError::IoError(_) => PcapError::Malformed {
                what: "unreadable block",
                offset,
            },
        }
    }
}

/// Reads a pcap or pcapng file's frames, each with its interface's link type.
///
/// # Errors
/// [`PcapError`] on a bad magic number, an unsupported link type, truncation, an oversized
/// record or a malformed pcapng block.
pub fn read_frames(bytes: &[u8]) -> Result<Vec<Frame>, PcapError> {
    Ok(frames_at(bytes)?.into_iter().map(|(_, f)| f).collect())
}

/// The frames of a pcap or pcapng file, each with the offset of its record or block.
fn frames_at(bytes: &[u8]) -> Result<Vec<(usize, Frame)>, PcapError> {
    match bytes.get(..4) {
        Some(m) if m == PCAPNG_MAGIC => read_pcapng(bytes),
        Some(_) => read_pcap(bytes),
        None => Err(PcapError::Truncated(0)),
    }
}

/// Reads a pcap or pcapng file whose packets share one link type (a pcapng file without
/// packets reads as [`LinkType::Raw`]).
///
/// # Errors
/// As [`read_frames`], and [`PcapError::MixedLinkTypes`] when a pcapng file's packets come
/// from interfaces of different link types.
pub fn read(bytes: &[u8]) -> Result<(LinkType, Vec<PcapPacket>), PcapError> {
    let header_link = if bytes.get(..4).is_some_and(|m| m != PCAPNG_MAGIC) {
        Some(pcap_link(bytes)?)
    } else {
        None
    };
    let frames = frames_at(bytes)?;
    let link = header_link
        .or_else(|| frames.first().map(|(_, f)| f.link))
        .unwrap_or(LinkType::Raw);
    if let Some((offset, other)) = frames.iter().find(|(_, f)| f.link != link) {
        return Err(PcapError::MixedLinkTypes {
            expected: link.code(),
            found: other.link.code(),
            offset: *offset,
        });
    }
    let packets = frames
        .into_iter()
        .map(|(_, f)| PcapPacket {
            ts_us: f.ts_us,
            data: f.data,
        })
        .collect();
    Ok((link, packets))
}

/// Reads a pcap or pcapng file and keeps the IP packet of every frame that holds one
/// ([`ip_packet`]); frames without IPv4/IPv6 (ARP, other ethertypes) are left out.
///
/// # Errors
/// As [`read_frames`].
pub fn ip_packets(bytes: &[u8]) -> Result<Vec<Vec<u8>>, PcapError> {
    Ok(read_frames(bytes)?
        .iter()
        .filter_map(|f| ip_packet(f.link, &f.data).map(<[u8]>::to_vec))
        .collect())
}

/// The link type named by a classic pcap header.
fn pcap_link(bytes: &[u8]) -> Result<LinkType, PcapError> {
    let (_, header) = pcap_header(bytes)?;
    let code = u32::from(header.datalink);
    LinkType::from_code(code).ok_or(PcapError::LinkType { code, offset: 20 })
}

fn pcap_header(bytes: &[u8]) -> Result<(&[u8], PcapHeader), PcapError> {
    let magic = bytes
        .get(..4)
        .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]))
        .ok_or(PcapError::Truncated(0))?;
    if !matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1) {
        return Err(PcapError::BadMagic(magic));
    }
    PcapHeader::from_slice(bytes).map_err(|e| PcapError::from_crate(e, 0))
}

fn read_pcap(bytes: &[u8]) -> Result<Vec<(usize, Frame)>, PcapError> {
    let link = pcap_link(bytes)?;
    let (mut rest, header) = pcap_header(bytes)?;
    let nanos = header.ts_resolution == TsResolution::NanoSecond;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        let parsed = match header.endianness {
            Endianness::Big => RawPcapPacket::from_slice::<BigEndian>(rest),
            Endianness::Little => RawPcapPacket::from_slice::<LittleEndian>(rest),
        };
        // The record's captured length, checked before the crate looks for its bytes.
        if let Some(len) = word(rest, 8, header.endianness) {
            if len as usize > MAX_RECORD {
                return Err(PcapError::Oversized { offset: at, len });
            }
        }
        let (next, raw) = parsed.map_err(|e| PcapError::from_crate(e, at))?;
        let frac = u64::from(raw.ts_frac);
        let us = if nanos { frac / 1000 } else { frac };
        frames.push((
            at,
            Frame {
                ts_us: u64::from(raw.ts_sec)
                    .saturating_mul(1_000_000)
                    .saturating_add(us),
                link,
                data: raw.data.into_owned(),
            },
        ));
        rest = next;
    }
    Ok(frames)
}

/// The 32-bit word at `at` of `b` in byte order `order`, if `b` holds it.
fn word(b: &[u8], at: usize, order: Endianness) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    let w = [w[0], w[1], w[2], w[3]];
    Some(match order {
        Endianness::Big => u32::from_be_bytes(w),
        Endianness::Little => u32::from_le_bytes(w),
    })
}

/// Timestamp units per second of an interface (its `if_tsresol`, microseconds by default);
/// 0 when the resolution overflows.
fn units_per_second(iface: &InterfaceDescriptionBlock<'_>) -> u128 {
    iface
        .options
        .iter()
        .find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(v) => {
                let n = u32::from(v & 0x7f);
                Some(if v & 0x80 == 0 {
                    10u128.checked_pow(n).unwrap_or(0)
                } else {
                    2u128.checked_pow(n).unwrap_or(0)
                })
            }
            _ => None,
        })
        .unwrap_or(1_000_000)
}

/// Microseconds of `ticks` timestamp units at `units` per second (units of 0, a resolution
/// that overflowed, are taken as microseconds).
fn ticks_to_us(ticks: u128, units: u128) -> u64 {
    let us = ticks
        .saturating_mul(1_000_000)
        .checked_div(units)
        .unwrap_or(ticks);
    u64::try_from(us).unwrap_or(u64::MAX)
}

/// One packet of a pcapng block: interface index, timestamp ticks, captured bytes.
type NgPacket<'a> = (usize, u128, Cow<'a, [u8]>);

/// The packet of an enhanced, simple or obsolete packet block, or `None` for other blocks.
fn ng_packet<'a, B: ByteOrder>(
    raw: RawBlock<'a>,
) -> Result<Option<NgPacket<'a>>, pcap_file::PcapError> {
    if !matches!(
        raw.type_,
        ENHANCED_PACKET_BLOCK | SIMPLE_PACKET_BLOCK | PACKET_BLOCK
    ) {
        return Ok(None);
    }
    Ok(match raw.try_into_block::<B>()? {
        // pcap-file keeps the raw timestamp ticks in a Duration as if they were nanoseconds.
        Block::EnhancedPacket(p) => Some((p.interface_id as usize, p.timestamp.as_nanos(), p.data)),
        Block::Packet(p) => Some((usize::from(p.interface_id), u128::from(p.timestamp), p.data)),
        Block::SimplePacket(p) => {
            // The captured bytes are the original length, bounded by the block (which may
            // carry padding).
            let len = (p.original_len as usize).min(p.data.len());
            let data = match p.data {
                Cow::Borrowed(d) => Cow::Borrowed(&d[..len]),
                Cow::Owned(mut d) => {
                    d.truncate(len);
                    Cow::Owned(d)
                }
            };
            Some((0, 0, data))
        }
        _ => None,
    })
}

fn read_pcapng(bytes: &[u8]) -> Result<Vec<(usize, Frame)>, PcapError> {
    let (mut rest, mut parser) =
        PcapNgParser::new(bytes).map_err(|e| PcapError::from_crate(e, 0))?;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        // A block longer than any record we take (a new section's header excepted: its byte
        // order is not known yet).
        if rest.get(..4) != Some(&PCAPNG_MAGIC[..]) {
            if let Some(len) = word(rest, 4, parser.section().endianness) {
                if len as usize > MAX_RECORD + 64 {
                    return Err(PcapError::Oversized { offset: at, len });
                }
            }
        }
        let (next, raw) = parser
            .next_raw_block(rest)
            .map_err(|e| PcapError::from_crate(e, at))?;
        let packet = match parser.section().endianness {
            Endianness::Big => ng_packet::<BigEndian>(raw),
            Endianness::Little => ng_packet::<LittleEndian>(raw),
        }
        .map_err(|e| PcapError::from_crate(e, at))?;
        if let Some((ifid, ticks, data)) = packet {
            let iface = parser.interfaces().get(ifid).ok_or(PcapError::Malformed {
                what: "packet names an undeclared interface",
                offset: at,
            })?;
            let code = u32::from(iface.linktype);
            let link = LinkType::from_code(code).ok_or(PcapError::LinkType { code, offset: at })?;
            let ts_us = ticks_to_us(ticks, units_per_second(iface));
            frames.push((
                at,
                Frame {
                    ts_us,
                    link,
                    data: data.into_owned(),
                },
            ));
        }
        rest = next;
    }
    Ok(frames)
}

/// Writes a classic pcap file: little endian, microsecond timestamps, snapshot length 65535
/// (or the largest packet's length when that is larger).
pub fn write(link: LinkType, packets: &[PcapPacket]) -> Vec<u8> {
    let longest = packets.iter().map(|p| p.data.len()).max().unwrap_or(0);
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: u32::try_from(longest.max(65535)).unwrap_or(u32::MAX),
        datalink: DataLink::from(link.code()),
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
    };
    let mut out = Vec::with_capacity(24 + packets.iter().map(|p| 16 + p.data.len()).sum::<usize>());
    // Writing into a Vec cannot fail.
    let _ = header.write_to(&mut out);
    for p in packets {
        let len = u32::try_from(p.data.len()).unwrap_or(u32::MAX);
        let raw = RawPcapPacket {
            ts_sec: u32::try_from(p.ts_us / 1_000_000).unwrap_or(u32::MAX),
            ts_frac: (p.ts_us % 1_000_000) as u32,
            incl_len: len,
            orig_len: len,
            data: Cow::Borrowed(&p.data),
        };
        let _ = raw.write_to::<_, LittleEndian>(&mut out);
    }
    out
}

/// Writes a pcapng file: one little-endian section, one interface (default resolution,
/// microseconds), one enhanced packet block per packet.
pub fn write_ng(link: LinkType, packets: &[PcapPacket]) -> Vec<u8> {
    let section = SectionHeaderBlock {
        endianness: Endianness::Little,
        ..Default::default()
    };
    // Writing into a Vec cannot fail, and the one interface is declared before its packets.
    let Ok(mut w) = PcapNgWriter::with_section_header(Vec::new(), section) else {
        return Vec::new();
    };
    let iface = InterfaceDescriptionBlock::new(DataLink::from(link.code()), 65535);
    let _ = w.write_pcapng_block(iface);
    for p in packets {
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            // The ticks (microseconds at the default resolution), kept by pcap-file as if they
            // were nanoseconds.
            timestamp: Duration::from_nanos(p.ts_us),
            original_len: u32::try_from(p.data.len()).unwrap_or(u32::MAX),
            data: Cow::Borrowed(&p.data),
            options: Vec::new(),
        };
        let _ = w.write_pcapng_block(epb);
    }
    w.into_inner()
}

/// Address families a null/loopback header names for IPv4 and IPv6 (BSD, Linux, macOS).
fn ip_family(v: u32) -> bool {
    matches!(v, 2 | 10 | 24 | 28 | 30)
}

/// The IP packet inside a frame of link type `link`, or `None` when the frame carries no
/// IPv4/IPv6 packet (another ethertype or family, a too-short header, a version other than 4
/// or 6).
pub fn ip_packet(link: LinkType, data: &[u8]) -> Option<&[u8]> {
    let word = |at: usize| -> Option<[u8; 4]> {
        let f = data.get(at..at + 4)?;
        Some([f[0], f[1], f[2], f[3]])
    };
    let ethertype = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
    };
    let ip = match link {
        LinkType::Null => {
            // Host byte order of the capturing machine: accept either.
            let w = word(0)?;
            if !(ip_family(u32::from_le_bytes(w)) || ip_family(u32::from_be_bytes(w))) {
                return None;
            }
            data.get(4..)?
        }
        LinkType::Loop => {
            if !ip_family(u32::from_be_bytes(word(0)?)) {
                return None;
            }
            data.get(4..)?
        }
        LinkType::Ethernet => {
            let mut at = 12;
            loop {
                match ethertype(at)? {
                    0x8100 | 0x88a8 | 0x9100 => at += 4,
                    0x0800 | 0x86dd => break data.get(at + 2..)?,
                    _ => return None,
                }
            }
        }
        LinkType::LinuxSll => {
            if !matches!(ethertype(14)?, 0x0800 | 0x86dd) {
                return None;
            }
            data.get(16..)?
        }
        LinkType::LinuxSll2 => {
            if !matches!(ethertype(0)?, 0x0800 | 0x86dd) {
                return None;
            }
            data.get(20..)?
        }
        LinkType::Raw => data,
    };
    match ip.first()? >> 4 {
        4 | 6 => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: [u8; 4] = [0x45, 0, 0, 20];

    /// `IP` behind each link type's header.
    fn framed(link: LinkType) -> Vec<u8> {
        let mut f = match link {
            LinkType::Null => 2u32.to_le_bytes().to_vec(),
            LinkType::Loop => 2u32.to_be_bytes().to_vec(),
            LinkType::Ethernet => {
                let mut e = vec![0u8; 12];
                e.extend_from_slice(&[0x81, 0x00, 0, 1, 0x08, 0x00]);
                e
            }
            LinkType::LinuxSll => {
                let mut h = vec![0u8; 14];
                h.extend_from_slice(&[0x08, 0x00]);
                h
            }
            LinkType::LinuxSll2 => {
                let mut h = vec![0x86, 0xdd];
                h.resize(20, 0);
                h
            }
            LinkType::Raw => Vec::new(),
        };
        f.extend_from_slice(&IP);
        f
    }

    /// A pcapng file of one interface with `if_tsresol` 9 (nanoseconds), in either byte order.
    fn pcapng(be: bool, link: u16, packets: &[&[u8]]) -> Vec<u8> {
        let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut f = Vec::new();
        f.extend_from_slice(&PCAPNG_MAGIC);
        f.extend_from_slice(&w32(28));
        f.extend_from_slice(&w32(0x1a2b_3c4d));
        f.extend_from_slice(&w16(1));
        f.extend_from_slice(&w16(0));
        f.extend_from_slice(&[0xff; 8]);
        f.extend_from_slice(&w32(28));
        f.extend_from_slice(&w32(1));
        f.extend_from_slice(&w32(32));
        f.extend_from_slice(&w16(link));
        f.extend_from_slice(&w16(0));
        f.extend_from_slice(&w32(0));
        f.extend_from_slice(&w16(9));
        f.extend_from_slice(&w16(1));
        f.extend_from_slice(&[9, 0, 0, 0]);
        f.extend_from_slice(&[0; 4]);
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

    /// A classic pcap header and records in either byte order, micro- or nanoseconds.
    fn pcap(be: bool, nanos: bool, link: u32, packets: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut f = w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }).to_vec();
        f.extend_from_slice(&w16(2));
        f.extend_from_slice(&w16(4));
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w32(65535));
        f.extend_from_slice(&w32(link));
        for (s, frac, d) in packets {
            f.extend_from_slice(&w32(*s));
            f.extend_from_slice(&w32(*frac));
            f.extend_from_slice(&w32(d.len() as u32));
            f.extend_from_slice(&w32(d.len() as u32));
            f.extend_from_slice(d);
        }
        f
    }

    #[test]
    fn round_trip_and_errors() {
        let pk = vec![
            PcapPacket {
                ts_us: 1_500_000,
                data: vec![0x45, 0, 0, 20],
            },
            PcapPacket {
                ts_us: 2_000_001,
                data: vec![],
            },
        ];
        let b = write(LinkType::Raw, &pk);
        assert_eq!(read(&b).unwrap(), (LinkType::Raw, pk));
        for cut in [0, 3, 23, 30, 40 + 3] {
            assert!(read(&b[..cut]).is_err(), "{cut}");
        }
        let mut bad = b.clone();
        bad[0] = 0;
        assert!(matches!(read(&bad), Err(PcapError::BadMagic(_))));
        let mut big = b.clone();
        big[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            read(&big),
            Err(PcapError::Oversized {
                offset: 24,
                len: u32::MAX
            })
        );
        assert_eq!(read(&b[..30]), Err(PcapError::Truncated(24)));
        assert_eq!(read_frames(&[]), Err(PcapError::Truncated(0)));
        assert!(read(b"hello world, not a capture").is_err());
        for cut in 0..b.len() {
            let _ = read(&b[..cut]);
        }
    }

    #[test]
    fn pcap_byte_orders_and_resolutions() {
        for be in [false, true] {
            for nanos in [false, true] {
                let f = pcap(be, nanos, 1, &[(3, 2_000, &framed(LinkType::Ethernet))]);
                let frames = read_frames(&f).unwrap();
                let us = if nanos { 3_000_002 } else { 3_002_000 };
                assert_eq!(frames[0].ts_us, us, "be {be} nanos {nanos}");
                assert_eq!(frames[0].link, LinkType::Ethernet);
                assert_eq!(ip_packets(&f).unwrap(), vec![IP.to_vec()]);
            }
        }
        let e = read(&pcap(false, false, 147, &[])).unwrap_err();
        assert_eq!(
            e,
            PcapError::LinkType {
                code: 147,
                offset: 20
            }
        );
        assert!(e.to_string().contains("not supported"), "{e}");
    }

    #[test]
    fn pcapng_round_trip_and_errors() {
        let pk = vec![
            PcapPacket {
                ts_us: 1_500_000,
                data: vec![0x45, 0, 0, 20, 1],
            },
            PcapPacket {
                ts_us: u64::from(u32::MAX) + 7,
                data: vec![],
            },
        ];
        let b = write_ng(LinkType::Ethernet, &pk);
        assert_eq!(read(&b).unwrap(), (LinkType::Ethernet, pk));
        for cut in 1..b.len() {
            if cut % 4 == 0 && read(&b[..cut]).is_ok() {
                continue; // A cut at a block boundary is a shorter, valid file.
            }
            assert!(read(&b[..cut]).is_err(), "{cut}");
        }
        let mut bad_len = b.clone();
        bad_len[4] = 13;
        assert!(read(&bad_len).is_err());
        let mut huge = b.clone();
        huge[48 + 4..48 + 8].copy_from_slice(&(1u32 << 20).to_le_bytes());
        assert_eq!(
            read(&huge),
            Err(PcapError::Oversized {
                offset: 48,
                len: 1 << 20
            })
        );
        let mut bad_iface = b.clone();
        // The first enhanced packet block's interface id (after the 28-byte SHB and 20-byte IDB).
        bad_iface[28 + 20 + 8] = 5;
        assert_eq!(
            read(&bad_iface),
            Err(PcapError::Malformed {
                what: "packet names an undeclared interface",
                offset: 48,
            })
        );
    }

    #[test]
    fn pcapng_both_byte_orders_and_tsresol() {
        for be in [false, true] {
            let f = pcapng(be, 101, &[&[0x45, 1, 2], &[]]);
            let fr = read_frames(&f).unwrap();
            assert_eq!(fr.len(), 2);
            assert_eq!(fr[0].data, vec![0x45, 1, 2]);
            assert_eq!(fr[0].link, LinkType::Raw);
            assert_eq!(fr[0].ts_us, 3_000_000);
            for cut in 1..f.len() {
                let _ = read_frames(&f[..cut]);
            }
        }
        assert!(matches!(
            read_frames(&pcapng(false, 147, &[&[1]])),
            Err(PcapError::LinkType { code: 147, .. })
        ));
    }

    #[test]
    fn simple_packet_block_and_skipped_blocks() {
        let mut f = write_ng(LinkType::Raw, &[]);
        // An interface statistics block (type 5) is skipped.
        let mut isb = 5u32.to_le_bytes().to_vec();
        isb.extend_from_slice(&24u32.to_le_bytes());
        isb.extend_from_slice(&[0; 12]);
        isb.extend_from_slice(&24u32.to_le_bytes());
        f.extend_from_slice(&isb);
        // A simple packet block: original length 3, padded to 4.
        let mut spb = 3u32.to_le_bytes().to_vec();
        spb.extend_from_slice(&20u32.to_le_bytes());
        spb.extend_from_slice(&3u32.to_le_bytes());
        spb.extend_from_slice(&[0x45, 7, 8, 0]);
        spb.extend_from_slice(&20u32.to_le_bytes());
        f.extend_from_slice(&spb);
        let fr = read_frames(&f).unwrap();
        assert_eq!(
            fr,
            vec![Frame {
                ts_us: 0,
                link: LinkType::Raw,
                data: vec![0x45, 7, 8]
            }]
        );
    }

    #[test]
    fn every_link_type_reads_in_both_formats() {
        for link in LinkType::ALL {
            assert_eq!(LinkType::from_code(link.code()), Some(link));
            let pk = vec![PcapPacket {
                ts_us: 42,
                data: framed(link),
            }];
            for file in [write(link, &pk), write_ng(link, &pk)] {
                assert_eq!(read(&file).unwrap(), (link, pk.clone()), "{link:?}");
                assert_eq!(ip_packets(&file).unwrap(), vec![IP.to_vec()], "{link:?}");
            }
        }
        for code in [12, 14, 228, 229] {
            assert_eq!(LinkType::from_code(code), Some(LinkType::Raw));
        }
        assert_eq!(LinkType::from_code(0x1000_0001), Some(LinkType::Ethernet));
        assert_eq!(LinkType::from_code(147), None);
    }

    #[test]
    fn link_layers_without_ip() {
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 0]);
        assert_eq!(ip_packet(LinkType::Ethernet, &arp), None);
        assert_eq!(ip_packet(LinkType::Raw, &[0x12]), None);
        assert_eq!(ip_packet(LinkType::Raw, &[]), None);
        assert_eq!(ip_packet(LinkType::Null, &7u32.to_le_bytes()), None);
        assert_eq!(ip_packet(LinkType::Loop, &2u32.to_le_bytes()), None);
        assert_eq!(ip_packet(LinkType::LinuxSll, &[0; 16]), None);
        assert_eq!(ip_packet(LinkType::LinuxSll2, &[0x08, 0x06]), None);
        let mut qinq = vec![0u8; 12];
        qinq.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x91, 0x00, 0, 2, 0x86, 0xdd, 0x60]);
        assert_eq!(ip_packet(LinkType::Ethernet, &qinq), Some(&[0x60][..]));
    }

    #[test]
    fn mixed_link_types_are_frames_but_not_one_capture() {
        let mut f = write_ng(LinkType::Raw, &[]);
        // A second interface (Ethernet) and a packet on it.
        let mut idb = 1u32.to_le_bytes().to_vec();
        idb.extend_from_slice(&20u32.to_le_bytes());
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        idb.extend_from_slice(&20u32.to_le_bytes());
        f.extend_from_slice(&idb);
        let raw = write_ng(
            LinkType::Raw,
            &[PcapPacket {
                ts_us: 1,
                data: IP.to_vec(),
            }],
        );
        // The raw capture's packet block, re-pointed at interface 1.
        let mut epb = raw[48..].to_vec();
        epb[8] = 1;
        let mut both = f.clone();
        both.extend_from_slice(&raw[48..]);
        both.extend_from_slice(&epb);
        let frames = read_frames(&both).unwrap();
        assert_eq!(
            frames.iter().map(|f| f.link).collect::<Vec<_>>(),
            vec![LinkType::Raw, LinkType::Ethernet]
        );
        // The second packet block starts after the SHB (28), two IDBs (20 each) and the first
        // packet block (36).
        assert_eq!(
            read(&both),
            Err(PcapError::MixedLinkTypes {
                expected: 101,
                found: 1,
                offset: 28 + 20 + 20 + 36,
            })
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let heads = [
            write_ng(LinkType::Raw, &[]),
            write(LinkType::Raw, &[]),
            pcapng(true, 1, &[]),
        ];
        for i in 0..3000 {
            let mut f = heads[i % heads.len()].clone();
            let n = (next() % 96) as usize;
            f.extend((0..n).map(|_| next() as u8));
            let _ = read_frames(&f);
            // Mostly-valid lengths: a block header that claims the rest.
            let mut g = heads[i % 2].clone();
            let body: Vec<u8> = (0..(next() % 40) as usize * 4)
                .map(|_| next() as u8)
                .collect();
            let len = u32::try_from(12 + body.len()).unwrap();
            g.extend_from_slice(&(next() % 8).to_le_bytes());
            g.extend_from_slice(&len.to_le_bytes());
            g.extend_from_slice(&body);
            g.extend_from_slice(&len.to_le_bytes());
            let _ = read_frames(&g);
        }
    }
}
