//! A tiny reader and writer for classic pcap files (microsecond or nanosecond timestamps,
//! either byte order), enough to replay captures into the simulation and to write fixtures.
//! The reader is strict and never panics: every problem is a [`PcapError`] naming the offset.

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
    /// A link type other than Ethernet or raw IP.
    #[error("unsupported link type {0}")]
    LinkType(u32),
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

/// Reads a pcap file.
///
/// # Errors
/// [`PcapError`] on a bad magic number, link type, truncation, or oversized record.
pub fn read(bytes: &[u8]) -> Result<(LinkType, Vec<PcapPacket>), PcapError> {
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
}
