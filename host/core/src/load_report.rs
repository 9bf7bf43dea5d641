//! The load report datagram (`W`): what a member tells the leader of the traffic of the
//! identifiers it owns, for automatic balancing ([`crate::balance`]). It travels beside
//! heartbeats, in the authenticated sync transport, and is parsed as strictly as they are.
//!
//! # Wire format
//!
//! Big-endian integers:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | `W` |
//! | 4 | interval (ms) the counts cover, 1 to [`MAX_INTERVAL_MS`] |
//! | 4 | the sender's configured weight, 0 to [`MAX_WEIGHT`] |
//! | 4 | its card's capacity in entries (0: unbounded) |
//! | 2 | entry count, at most [`MAX_ENTRIES`] |
//! | 14 per entry | identifier (u16, below [`MAX_ENTRIES`], strictly ascending), packets (u32, at least 1), bytes (u64, at least the packets) |
//!
//! A report is exactly [`HEADER_LEN`] bytes plus [`ENTRY_LEN`] per entry (at most 57 359
//! bytes: it fits one sync frame). Identifiers without traffic are left out.

use crate::ids::DistributionId;

/// The first byte of a load report.
pub const TAG: u8 = b'W';
/// The most entries a report carries (the most identifiers a cluster has).
pub const MAX_ENTRIES: usize = 4096;
/// The longest interval a report may cover (ms).
pub const MAX_INTERVAL_MS: u32 = 3_600_000;
/// The largest configured weight.
pub const MAX_WEIGHT: u32 = 1000;
/// The bytes before the entries.
pub const HEADER_LEN: usize = 15;
/// The bytes of one entry.
pub const ENTRY_LEN: usize = 14;

/// Packets and bytes of one identifier over an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Packets (frames).
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One identifier's entry in a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdLoad {
    /// The identifier.
    pub id: DistributionId,
    /// Packets in the interval (saturated at `u32::MAX`).
    pub packets: u32,
    /// Bytes in the interval.
    pub bytes: u64,
}

/// A member's load report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadReport {
    /// The interval the counts cover (ms).
    pub interval_ms: u32,
    /// The sender's configured weight.
    pub weight: u32,
    /// The sender's card capacity in entries (0: unbounded).
    pub capacity: u32,
    /// Per identifier with traffic, ascending.
    pub entries: Vec<IdLoad>,
}

/// Why a load report did not parse (or could not be built).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum LoadReportError {
    /// The first byte is not `W` (or there is none).
    #[error("not a load report (first byte {0:?})")]
    NotALoadReport(Option<u8>),
    /// Shorter than the header.
    #[error("load report is {0} bytes long, shorter than its {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// More entries than [`MAX_ENTRIES`].
    #[error("load report declares {0} entries, more than {MAX_ENTRIES}")]
    TooManyEntries(usize),
    /// Not exactly as long as the entry count says.
    #[error("load report is {len} bytes long, expected exactly {expected}")]
    BadLength {
        /// The length received.
        len: usize,
        /// The length its entry count gives.
        expected: usize,
    },
    /// An interval of 0 or above [`MAX_INTERVAL_MS`].
    #[error("load report interval {0} ms is not between 1 and {MAX_INTERVAL_MS}")]
    BadInterval(u32),
    /// A weight above [`MAX_WEIGHT`].
    #[error("load report weight {0} is above {MAX_WEIGHT}")]
    BadWeight(u32),
    /// An identifier out of range or not above the one before.
    #[error("load report entry {index}: identifier {id} out of range or not ascending")]
    BadId {
        /// The entry's position.
        index: usize,
        /// Its identifier.
        id: u16,
    },
    /// An entry with no packets, or fewer bytes than packets.
    #[error("load report identifier {id}: {packets} packets and {bytes} bytes do not fit")]
    BadCounts {
        /// The identifier.
        id: u16,
        /// Its packets.
        packets: u32,
        /// Its bytes.
        bytes: u64,
    },
}

fn be<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

impl LoadReport {
    /// A report over `interval_ms` of the identifiers in `load` (indexed by identifier) with
    /// traffic; packets saturate at `u32::MAX`, bytes are raised to the packets if fewer.
    pub fn from_load(interval_ms: u32, weight: u32, capacity: u32, load: &[Load]) -> Self {
        let entries = load
            .iter()
            .enumerate()
            .take(MAX_ENTRIES)
            .filter(|(_, l)| l.packets > 0)
            .map(|(i, l)| {
                let packets = u32::try_from(l.packets).unwrap_or(u32::MAX);
                IdLoad {
                    id: DistributionId(i as u16),
                    packets,
                    bytes: l.bytes.max(u64::from(packets)),
                }
            })
            .collect();
        LoadReport {
            interval_ms: interval_ms.clamp(1, MAX_INTERVAL_MS),
            weight: weight.min(MAX_WEIGHT),
            capacity,
            entries,
        }
    }

    /// The report's wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.entries.len().min(MAX_ENTRIES);
        let mut b = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * n);
        b.push(TAG);
        b.extend_from_slice(&self.interval_ms.to_be_bytes());
        b.extend_from_slice(&self.weight.to_be_bytes());
        b.extend_from_slice(&self.capacity.to_be_bytes());
        b.extend_from_slice(&(n as u16).to_be_bytes());
        for e in &self.entries[..n] {
            b.extend_from_slice(&e.id.0.to_be_bytes());
            b.extend_from_slice(&e.packets.to_be_bytes());
            b.extend_from_slice(&e.bytes.to_be_bytes());
        }
        b
    }

    /// Parses one whole report. Never panics.
    ///
    /// # Errors
    /// Every [`LoadReportError`]: a report must be exactly as long as its count says, with
    /// ascending identifiers, counts that fit, and header values in range.
    pub fn parse(b: &[u8]) -> Result<LoadReport, LoadReportError> {
        match b.first() {
            Some(&TAG) => {}
            other => return Err(LoadReportError::NotALoadReport(other.copied())),
        }
        if b.len() < HEADER_LEN {
            return Err(LoadReportError::Truncated(b.len()));
        }
        let interval_ms = u32::from_be_bytes(be(b, 1));
        let weight = u32::from_be_bytes(be(b, 5));
        let capacity = u32::from_be_bytes(be(b, 9));
        let n = usize::from(u16::from_be_bytes(be(b, 13)));
        if n > MAX_ENTRIES {
            return Err(LoadReportError::TooManyEntries(n));
        }
        let expected = HEADER_LEN + ENTRY_LEN * n;
        if b.len() != expected {
            return Err(LoadReportError::BadLength {
                len: b.len(),
                expected,
            });
        }
        if interval_ms == 0 || interval_ms > MAX_INTERVAL_MS {
            return Err(LoadReportError::BadInterval(interval_ms));
        }
        if weight > MAX_WEIGHT {
            return Err(LoadReportError::BadWeight(weight));
        }
        let mut entries = Vec::with_capacity(n);
        let mut prev: Option<u16> = None;
        for (index, e) in b[HEADER_LEN..].chunks_exact(ENTRY_LEN).enumerate() {
            let id = u16::from_be_bytes(be(e, 0));
            let packets = u32::from_be_bytes(be(e, 2));
            let bytes = u64::from_be_bytes(be(e, 6));
            if usize::from(id) >= MAX_ENTRIES || prev.is_some_and(|p| id <= p) {
                return Err(LoadReportError::BadId { index, id });
            }
            if packets == 0 || bytes < u64::from(packets) {
                return Err(LoadReportError::BadCounts { id, packets, bytes });
            }
            prev = Some(id);
            entries.push(IdLoad {
                id: DistributionId(id),
                packets,
                bytes,
            });
        }
        Ok(LoadReport {
            interval_ms,
            weight,
            capacity,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> LoadReport {
        let mut load = vec![Load::default(); 8];
        load[1] = Load {
            packets: 5,
            bytes: 500,
        };
        load[6] = Load {
            packets: u64::MAX,
            bytes: 7,
        };
        LoadReport::from_load(1000, 2, 4096, &load)
    }

    #[test]
    fn round_trip_and_layout() {
        let r = sample();
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.entries[1].packets, u32::MAX);
        assert_eq!(r.entries[1].bytes, u64::from(u32::MAX));
        let b = r.to_bytes();
        assert_eq!(b.len(), HEADER_LEN + 2 * ENTRY_LEN);
        assert_eq!(&b[..5], &[b'W', 0, 0, 0x03, 0xe8]);
        assert_eq!(&b[13..17], &[0, 2, 0, 1]);
        assert_eq!(LoadReport::parse(&b), Ok(r));
        // the longest report fits a sync frame
        let full = LoadReport::from_load(
            1,
            1,
            0,
            &vec![
                Load {
                    packets: 1,
                    bytes: 64
                };
                MAX_ENTRIES
            ],
        );
        let fb = full.to_bytes();
        assert_eq!(fb.len(), 57_359);
        assert_eq!(LoadReport::parse(&fb).map(|r| r.entries.len()), Ok(4096));
    }

    #[test]
    fn bad_reports_are_refused() {
        let good = sample().to_bytes();
        assert_eq!(
            LoadReport::parse(&[]),
            Err(LoadReportError::NotALoadReport(None))
        );
        assert_eq!(
            LoadReport::parse(b"H"),
            Err(LoadReportError::NotALoadReport(Some(b'H')))
        );
        // truncated: in the header, in an entry
        assert_eq!(
            LoadReport::parse(&good[..10]),
            Err(LoadReportError::Truncated(10))
        );
        assert!(matches!(
            LoadReport::parse(&good[..good.len() - 1]),
            Err(LoadReportError::BadLength { .. })
        ));
        // oversized: a trailing byte, a count above the maximum
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            LoadReport::parse(&long),
            Err(LoadReportError::BadLength { .. })
        ));
        let mut many = good.clone();
        many[13..15].copy_from_slice(&4097u16.to_be_bytes());
        assert_eq!(
            LoadReport::parse(&many),
            Err(LoadReportError::TooManyEntries(4097))
        );
        let patch = |at: usize, v: &[u8]| {
            let mut b = good.clone();
            b[at..at + v.len()].copy_from_slice(v);
            LoadReport::parse(&b)
        };
        assert_eq!(patch(1, &[0; 4]), Err(LoadReportError::BadInterval(0)));
        assert_eq!(
            patch(5, &1001u32.to_be_bytes()),
            Err(LoadReportError::BadWeight(1001))
        );
        // second entry's identifier at or below the first, or out of range
        let e2 = HEADER_LEN + ENTRY_LEN;
        assert_eq!(
            patch(e2, &[0, 1]),
            Err(LoadReportError::BadId { index: 1, id: 1 })
        );
        assert_eq!(
            patch(e2, &4096u16.to_be_bytes()),
            Err(LoadReportError::BadId { index: 1, id: 4096 })
        );
        // bad counts: no packets, fewer bytes than packets
        assert!(matches!(
            patch(HEADER_LEN + 2, &[0; 4]),
            Err(LoadReportError::BadCounts { packets: 0, .. })
        ));
        assert!(matches!(
            patch(HEADER_LEN + 6, &[0; 8]),
            Err(LoadReportError::BadCounts { bytes: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panic_and_round_trip(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            tagged in any::<bool>(),
        ) {
            let mut b = bytes;
            if tagged && !b.is_empty() {
                b[0] = TAG;
            }
            if let Ok(r) = LoadReport::parse(&b) {
                prop_assert_eq!(r.to_bytes(), b);
            }
        }
    }
}
