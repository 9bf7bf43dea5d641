//! A tiny reader and writer for capture files: classic pcap (microsecond or nanosecond
//! timestamps, either byte order) and pcapng (section header, interface description, enhanced
//! and simple packet blocks; other blocks skipped), enough to replay captures into the
//! simulation and to write fixtures. The reader is strict and never panics: every problem is a
//! [`PcapError`] naming the offset.

/// Link type of the packets in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet (LINKTYPE_ETHERNET = 1).
    Ethernet,
    /// Bare IPv4/IPv6 (LINKTYPE_RAW = 101).
    Raw,
}

impl LinkType {
    fn code(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::Raw => 101,
        }
    }
}

/// One captured packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapPacket {
    /// Capture time in microseconds since the epoch.
    pub ts_us: u64,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Why a pcap file did not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    /// Not a pcap file (pcapng is not supported).
    #[error("bad magic number 0x{0:08x} (classic pcap only)")]
    BadMagic(u32),
    /// The file ends inside a header or record.
    #[error("truncated at offset {0}")]
    Truncated(usize),
    /// A record larger than the snapshot length or 256 KiB.
    #[error("record at offset {offset} claims {len} bytes")]
    Oversized {
        /// Where.
        offset: usize,
        /// Claimed length.
        len: u32,
    },
    /// A link type other than Ethernet or raw IP (or, in pcapng, interfaces of different
    /// link types).
    #[error("unsupported link type {0}")]
    LinkType(u32),
    /// A malformed pcapng block.
    #[error("malformed pcapng {what} at offset {offset}")]
    Malformed {
        /// What is wrong.
        what: &'static str,
        /// Where.
        offset: usize,
    },
}

/// Writes a pcap file.
pub fn write(link: LinkType, packets: &[PcapPacket]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + packets.iter().map(|p| 16 + p.data.len()).sum::<usize>());
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&link.code().to_le_bytes());
    for p in packets {
        let len = u32::try_from(p.data.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&((p.ts_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((p.ts_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&p.data);
    }
    out
}

/// Writes a pcapng file: one section, one interface (microsecond timestamps), one enhanced
/// packet block per packet.
pub fn write_ng(link: LinkType, packets: &[PcapPacket]) -> Vec<u8> {
    fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let pad = (4 - body.len() % 4) % 4;
        let total = u32::try_from(12 + body.len() + pad).unwrap_or(u32::MAX);
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(body);
        out.extend(std::iter::repeat_n(0u8, pad));
        out.extend_from_slice(&total.to_le_bytes());
    }
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    block(&mut out, 0x0A0D_0D0A, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&(link.code() as u16).to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    block(&mut out, 1, &idb);
    for p in packets {
        let len = u32::try_from(p.data.len()).unwrap_or(u32::MAX);
        let mut epb = Vec::with_capacity(20 + p.data.len());
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((p.ts_us >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(p.ts_us as u32).to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.extend_from_slice(&p.data);
        block(&mut out, 6, &epb);
    }
    out
}

/// Reads a pcapng file.
fn read_ng(bytes: &[u8]) -> Result<(LinkType, Vec<PcapPacket>), PcapError> {
    let mut be = false;
    // Interfaces of the current section: link type and timestamp units per second.
    let mut ifaces: Vec<(u32, u64)> = Vec::new();
    let mut link: Option<LinkType> = None;
    let mut packets = Vec::new();
    let mut at = 0usize;
    let word = |b: &[u8], at: usize, be: bool| -> Result<u32, PcapError> {
        let s = b.get(at..at + 4).ok_or(PcapError::Truncated(at))?;
        let a = [s[0], s[1], s[2], s[3]];
        Ok(if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    };
    while at < bytes.len() {
        let kind_le = word(bytes, at, false)?;
        if kind_le == 0x0A0D_0D0A {
            let bom = word(bytes, at + 8, false)?;
            be = match bom {
                0x1A2B_3C4D => false,
                0x4D3C_2B1A => true,
                _ => {
                    return Err(PcapError::Malformed {
                        what: "byte-order magic",
                        offset: at + 8,
                    })
                }
            };
            ifaces.clear();
        }
        let kind = word(bytes, at, be)?;
        let total = word(bytes, at + 4, be)? as usize;
        if total < 12 || total & 3 != 0 || total > 16 * 1024 * 1024 {
            return Err(PcapError::Malformed {
                what: "block length",
                offset: at + 4,
            });
        }
        let end = at.checked_add(total).ok_or(PcapError::Truncated(at))?;
        let block = bytes.get(at..end).ok_or(PcapError::Truncated(at))?;
        if word(block, total - 4, be)? as usize != total {
            return Err(PcapError::Malformed {
                what: "trailing block length",
                offset: end - 4,
            });
        }
        let body = &block[8..total - 4];
        match kind {
            1 => {
                // Link type (u16) then a reserved u16.
                let w = word(body, 0, be)?;
                let lt = if be { w >> 16 } else { w & 0xffff };
                // Options: if_tsresol (code 9) sets the timestamp unit.
                let mut per_sec = 1_000_000u64;
                let mut o = 8;
                while o + 4 <= body.len() {
                    let hdr = word(body, o, be)?;
                    let (code, len) = if be {
                        (hdr >> 16, (hdr & 0xffff) as usize)
                    } else {
                        (hdr & 0xffff, (hdr >> 16) as usize)
                    };
                    if code == 0 {
                        break;
                    }
                    if code == 9 && len >= 1 {
                        let v = *body.get(o + 4).ok_or(PcapError::Truncated(at + 8 + o))?;
                        per_sec = if v & 0x80 == 0 {
                            10u64
                                .checked_pow(u32::from(v))
                                .ok_or(PcapError::Malformed {
                                    what: "timestamp resolution",
                                    offset: at + 8 + o,
                                })?
                        } else {
                            1u64.checked_shl(u32::from(v & 0x7f))
                                .ok_or(PcapError::Malformed {
                                    what: "timestamp resolution",
                                    offset: at + 8 + o,
                                })?
                        };
                    }
                    o += 4 + len.div_ceil(4) * 4;
                }
                ifaces.push((lt, per_sec.max(1)));
            }
            3 | 6 => {
                let (iface, ts, cap, data_at) = if kind == 6 {
                    let iface = word(body, 0, be)? as usize;
                    let ts = u64::from(word(body, 4, be)?) << 32 | u64::from(word(body, 8, be)?);
                    (iface, ts, word(body, 12, be)? as usize, 20usize)
                } else {
                    (0, 0, word(body, 0, be)? as usize, 4)
                };
                let &(lt, per_sec) = ifaces.get(iface).ok_or(PcapError::Malformed {
                    what: "interface id",
                    offset: at + 8,
                })?;
                let this = match lt {
                    1 => LinkType::Ethernet,
                    101 => LinkType::Raw,
                    other => return Err(PcapError::LinkType(other)),
                };
                if link.is_some_and(|l| l != this) {
                    return Err(PcapError::LinkType(lt));
                }
                link = Some(this);
                // A simple packet block's captured length is bounded by the block.
                let cap = if kind == 3 {
                    cap.min(body.len().saturating_sub(4))
                } else {
                    cap
                };
                let data =
                    body.get(data_at..data_at.saturating_add(cap))
                        .ok_or(PcapError::Malformed {
                            what: "captured length",
                            offset: at + 8,
                        })?;
                let ts_us = u64::try_from(u128::from(ts) * 1_000_000 / u128::from(per_sec))
                    .unwrap_or(u64::MAX);
                packets.push(PcapPacket {
                    ts_us,
                    data: data.to_vec(),
                });
            }
            _ => {}
        }
        at = end;
    }
    Ok((link.unwrap_or(LinkType::Raw), packets))
}

/// Reads a pcap or pcapng file.
///
/// # Errors
/// [`PcapError`] on a bad magic number, link type, truncation, oversized record, or a
/// malformed pcapng block.
pub fn read(bytes: &[u8]) -> Result<(LinkType, Vec<PcapPacket>), PcapError> {
    if bytes.get(..4) == Some(&0x0A0D_0D0Au32.to_le_bytes()[..]) {
        return read_ng(bytes);
    }
    let word = |at: usize, be: bool| -> Result<u32, PcapError> {
        let s = bytes.get(at..at + 4).ok_or(PcapError::Truncated(at))?;
        let a = [s[0], s[1], s[2], s[3]];
        Ok(if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    };
    let magic = word(0, false)?;
    let (be, nanos) = match magic {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        m => return Err(PcapError::BadMagic(m)),
    };
    let snaplen = word(16, be)?;
    let link = match word(20, be)? {
        1 => LinkType::Ethernet,
        101 => LinkType::Raw,
        other => return Err(PcapError::LinkType(other)),
    };
    let limit = snaplen.clamp(1, 256 * 1024);
    let mut packets = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let sec = u64::from(word(at, be)?);
        let frac = u64::from(word(at + 4, be)?);
        let incl = word(at + 8, be)?;
        if incl > limit {
            return Err(PcapError::Oversized {
                offset: at,
                len: incl,
            });
        }
        let start = at + 16;
        let end = start + incl as usize;
        let data = bytes.get(start..end).ok_or(PcapError::Truncated(start))?;
        let us = if nanos { frac / 1000 } else { frac };
        packets.push(PcapPacket {
            ts_us: sec * 1_000_000 + us,
            data: data.to_vec(),
        });
        at = end;
    }
    Ok((link, packets))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(read(&big), Err(PcapError::Oversized { .. })));
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
        let mut bad_iface = b.clone();
        // The first enhanced packet block's interface id (after the 28-byte SHB and 20-byte IDB).
        bad_iface[28 + 20 + 8] = 5;
        assert!(matches!(
            read(&bad_iface),
            Err(PcapError::Malformed {
                what: "interface id",
                ..
            })
        ));
    }
}
