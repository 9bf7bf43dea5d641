//! Records of the replication stream and the datagrams beside it, parsed and emitted in one
//! place.
//!
//! Two kinds of bytes travel between members:
//!
//! - **records**, on the reliable, ordered replication stream ([`Record`]): the first byte is a
//!   tag, the rest depends on it;
//! - **datagrams**, unreliable ([`Datagram`]): heartbeats and consensus (Raft) messages.
//!
//! # Wire format
//!
//! The integers of the framing are big-endian (the message inside an `E` record keeps its own
//! codec, [`crate::events`]).
//!
//! | record | bytes |
//! |---|---|
//! | event | `E`, then a [`Message`] as [`Message::encode_into`] writes it |
//! | final state | `F`, epoch (u64): exactly 9 bytes |
//! | resync request | `Q`: exactly 1 byte |
//! | resync done | `D`: exactly 1 byte |
//! | SA key | `K`, SPI (u32), key length (u8), key bytes: the length byte equals the rest |
//! | partial resync request | `P`, identifier count (u16, at most 4096), then that many identifiers (u16, each below 4096, strictly ascending): exactly 3 bytes plus two per identifier |
//! | resync skipped | `S`, as `P` |
//! | user binding | `U`, version (u64), origin node (u16), user (u32), bound (u8: 1 bound, 0 unbound, then the user is 0), remaining lifetime (u32, ms, at most 7 days), address family (u8: 4 or 6), address (4 or 16 bytes): exactly 25 or 37 bytes ([`crate::users`]) |
//! | last handled | `L`, identifier (u16), mark count (u8, at most 3), then per mark its input (u8: 0 outside port, 1 inside port, 2 the wire's packets; strictly ascending), a digest count (u8, 1 to 4) and that many digests (u64), oldest first, of the last frames the sender took in on that input (of any identifier) when it let the identifier go: exactly as long as the counts say |
//!
//! | datagram | bytes |
//! |---|---|
//! | heartbeat | `H`, ready, witness, fenced (one byte each, 0 or 1), applied epoch (u64), flags (u8: bit 0 leaving, bit 1 retired, the rest reserved), stamp (u64, the sender's clock in µs), echo (u64, the latest stamp received from the recipient), out count (u8, at most 32), then that many node ids (u16): 30 bytes plus two per id |
//! | consensus | `R`, then the consensus library's message bytes (opaque here) |
//!
//! # Three views
//!
//! Untrusted bytes go through a view first: [`RecordView::new_unchecked`] wraps a buffer (its
//! accessors may panic on a short buffer), [`RecordView::new_checked`] (or
//! [`RecordView::check_len`]) makes sure the length fits the tag, after which no accessor can
//! panic. [`Record::parse`] / [`Record::emit`] give the meaning. [`DatagramView`] does the
//! same for datagrams.
//!
//! # Strictness
//!
//! - Fixed-length records and heartbeats must have exactly their length; a longer one is an
//!   error, not a record with trailing bytes ignored.
//! - A heartbeat flag byte other than 0 or 1 is rejected ([`RecordError::BadFlag`]): every
//!   member emits 0 or 1, so any other value is corruption or a foreign sender, and a flag
//!   such as `fenced` must not be guessed. In the flags byte, bit 0 is `leaving`, bit 1 `retired`; the other
//!   bits are reserved: ignored on parse (a later version may use them) and emitted as 0.
//! - An event record whose message does not decode is [`RecordError::Event`], with the
//!   [`DecodeError`] as its source.
//!
//! # Example
//!
//! ```
//! use cluster_core::record::{Datagram, Heartbeat, Record, RecordError};
//! use cluster_core::Epoch;
//!
//! let mut out = Vec::new();
//! Record::Final(Epoch(7)).emit(&mut out);
//! assert_eq!(out, [b'F', 0, 0, 0, 0, 0, 0, 0, 7]);
//! assert_eq!(Record::parse(&out), Ok(Record::Final(Epoch(7))));
//! assert!(matches!(Record::parse(b"Qx"), Err(RecordError::BadLength { tag: b'Q', .. })));
//!
//! let hb = Heartbeat { ready: true, ..Heartbeat::default() }.to_bytes();
//! assert!(matches!(Datagram::parse(&hb), Ok(Datagram::Heartbeat(h)) if h.ready));
//! ```
//!
//! Key material (invariant 6): a [`Record::SaKey`] holds its key in a [`Zeroizing`] buffer, its
//! `Debug` prints only the key's length, and no error carries key bytes.

use core::fmt;
use core::ops::{Range, RangeFrom};

use zeroize::Zeroizing;

use crate::entry::UserId;
use crate::events::{DecodeError, Message};
use crate::ids::{DistributionId, Epoch, NodeId};
use crate::users::{UserBinding, MAX_LIFETIME_S};

/// A byte range of a fixed-position field.
type Field = Range<usize>;

/// The first byte of every record and datagram.
pub mod tag {
    /// Record: a replication event ([`Record::Event`](super::Record::Event)).
    pub const EVENT: u8 = b'E';
    /// Record: final state through an epoch ([`Record::Final`](super::Record::Final)).
    pub const FINAL: u8 = b'F';
    /// Record: resync request ([`Record::ResyncRequest`](super::Record::ResyncRequest)).
    pub const RESYNC_REQUEST: u8 = b'Q';
    /// Record: resync done ([`Record::ResyncDone`](super::Record::ResyncDone)).
    pub const RESYNC_DONE: u8 = b'D';
    /// Record: an SA's key ([`Record::SaKey`](super::Record::SaKey)).
    pub const SA_KEY: u8 = b'K';
    /// Record: where a releaser was in each input when it let an identifier go
    /// ([`Record::LastHandled`](super::Record::LastHandled)).
    pub const LAST_HANDLED: u8 = b'L';
    /// Record: a resync request for some identifiers
    /// ([`Record::ResyncPart`](super::Record::ResyncPart)).
    pub const RESYNC_PART: u8 = b'P';
    /// Record: the identifiers a resync answer left to their owners
    /// ([`Record::ResyncSkipped`](super::Record::ResyncSkipped)).
    pub const RESYNC_SKIPPED: u8 = b'S';
    /// Record: a user binding of claim 8 ([`Record::UserBinding`](super::Record::UserBinding)).
    pub const USER_BINDING: u8 = b'U';
    /// Datagram: heartbeat ([`Datagram::Heartbeat`](super::Datagram::Heartbeat)).
    pub const HEARTBEAT: u8 = b'H';
    /// Datagram: consensus message ([`Datagram::Raft`](super::Datagram::Raft)).
    pub const RAFT: u8 = b'R';
}

/// Field positions, named after the wire format in the module documentation.
mod field {
    use super::{Field, RangeFrom};

    /// The tag byte of every record and datagram.
    pub const TAG: usize = 0;
    /// Everything after the tag.
    pub const PAYLOAD: RangeFrom<usize> = 1..;

    /// `F`: the epoch.
    pub const FINAL_EPOCH: Field = 1..9;
    /// `F`: the whole record's length.
    pub const FINAL_LEN: usize = FINAL_EPOCH.end;

    /// `Q` and `D`: the whole record's length (the tag alone).
    pub const BARE_LEN: usize = 1;

    /// `K`: the SPI.
    pub const KEY_SPI: Field = 1..5;
    /// `K`: the key length byte.
    pub const KEY_LEN: usize = 5;
    /// `K`: the key bytes.
    pub const KEY: RangeFrom<usize> = 6..;
    /// `K`: the header before the key bytes.
    pub const KEY_HEADER_LEN: usize = KEY.start;

    /// `L`: the identifier.
    pub const LAST_DID: Field = 1..3;
    /// `L`: how many marks follow.
    pub const LAST_COUNT: usize = 3;
    /// `L`: the header before the marks.
    pub const LAST_HEADER_LEN: usize = 4;
    /// `L`: one mark's header (input byte, digest count).
    pub const LAST_MARK_HEADER_LEN: usize = 2;
    /// `L`: one digest's length.
    pub const LAST_DIGEST_LEN: usize = 8;

    /// `P` and `S`: how many identifiers follow.
    pub const PART_COUNT: Field = 1..3;
    /// `P` and `S`: the header before the identifiers.
    pub const PART_HEADER_LEN: usize = 3;

    /// `U`: the version.
    pub const USER_VERSION: Field = 1..9;
    /// `U`: the origin node.
    pub const USER_ORIGIN: Field = 9..11;
    /// `U`: the user.
    pub const USER_ID: Field = 11..15;
    /// `U`: the bound flag.
    pub const USER_BOUND: usize = 15;
    /// `U`: the remaining lifetime (ms).
    pub const USER_REMAINING: Field = 16..20;
    /// `U`: the address family byte.
    pub const USER_FAMILY: usize = 20;
    /// `U`: the address.
    pub const USER_ADDR: RangeFrom<usize> = 21..;

    /// `H`: ready flag.
    pub const HB_READY: usize = 1;
    /// `H`: witness flag.
    pub const HB_WITNESS: usize = 2;
    /// `H`: fenced flag.
    pub const HB_FENCED: usize = 3;
    /// `H`: the applied allocation epoch.
    pub const HB_APPLIED: Field = 4..12;
    /// `H`: flags: bit 0 leaving, bit 1 retired; the other bits reserved (emitted as 0,
    /// ignored on parse).
    pub const HB_FLAGS: usize = 12;
    /// `H`: the sender's monotonic clock when it sent the heartbeat (µs since it started).
    pub const HB_STAMP: Field = 13..21;
    /// `H`: the latest stamp the sender received from the recipient (0: none yet).
    pub const HB_ECHO: Field = 21..29;
    /// `H`: how many node ids follow (the members the sender does not see serving).
    pub const HB_OUT_COUNT: usize = 29;
    /// `H`: the fixed part's length; two bytes per node id follow.
    pub const HB_LEN: usize = HB_OUT_COUNT + 1;
}

/// Most node ids a heartbeat's out list carries.
pub const MAX_HEARTBEAT_OUT: usize = 32;

/// The most marks an `L` record carries (one per input: outside, inside, the wire).
pub const MAX_MARKS: usize = 3;

/// An `L` record's marks: per input, the digests of the last frames handled, oldest first.
pub type Marks = Vec<(u8, Vec<u64>)>;

/// The most digests an `L` record's mark carries (the last frames of one input).
pub const MAX_MARK_DIGESTS: usize = 4;

/// The longest key a `K` record carries (its length is one byte).
pub const MAX_KEY_LEN: usize = u8::MAX as usize;

/// Length of a heartbeat datagram with an empty out list.
pub const HEARTBEAT_LEN: usize = field::HB_LEN;
/// Length of the longest heartbeat datagram.
pub const MAX_HEARTBEAT_LEN: usize = field::HB_LEN + 2 * MAX_HEARTBEAT_OUT;

/// Why a record or datagram did not parse (or a key record could not be built).
///
/// No variant carries key bytes.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Zero bytes.
    #[error("empty record")]
    Empty,
    /// A first byte that names no record (or, for [`Datagram::parse`], no datagram).
    #[error("unknown tag 0x{0:02x}")]
    UnknownTag(u8),
    /// A fixed-length record or datagram (`F`, `Q`, `D`, `H`) of the wrong length.
    #[error("'{}' is {len} bytes long, expected exactly {expected}", char::from(*tag))]
    BadLength {
        /// The tag.
        tag: u8,
        /// The length received, tag included.
        len: usize,
        /// The length this tag has, tag included.
        expected: usize,
    },
    /// A variable-length record shorter than its fixed header.
    #[error("'{}' is {len} bytes long, shorter than its {min}-byte header", char::from(*tag))]
    Truncated {
        /// The tag.
        tag: u8,
        /// The length received, tag included.
        len: usize,
        /// The header's length, tag included.
        min: usize,
    },
    /// A `K` record whose key length byte does not match the bytes after it.
    #[error(
        "key record for SPI 0x{spi:08x} declares a {declared}-byte key but carries {actual} bytes"
    )]
    KeyLength {
        /// The SPI.
        spi: u32,
        /// The key length byte.
        declared: u8,
        /// The number of key bytes present.
        actual: usize,
    },
    /// A key longer than a `K` record can carry ([`MAX_KEY_LEN`]).
    #[error(
        "key for SPI 0x{spi:08x} is {len} bytes, more than the {MAX_KEY_LEN} a key record carries"
    )]
    KeyTooLong {
        /// The SPI.
        spi: u32,
        /// The key's length.
        len: usize,
    },
    /// A heartbeat flag byte other than 0 or 1.
    #[error("heartbeat {field} flag is {value}, expected 0 or 1")]
    BadFlag {
        /// The flag's name.
        field: &'static str,
        /// The byte received.
        value: u8,
    },
    /// An `L` record whose marks are not one per input in ascending order, or name an input
    /// that does not exist.
    #[error(
        "last-handled record: mark {index} (input {input}) is not one of inputs 0-2 in ascending order with 1-4 digests"
    )]
    BadMark {
        /// The mark's position.
        index: usize,
        /// The input byte received.
        input: u8,
    },
    /// A `P` or `S` record whose identifiers are not strictly ascending, or not below 4096.
    #[error("partial resync record: identifier {index} ({did}) is not below 4096 and above the one before it")]
    BadIdentifier {
        /// The identifier's position.
        index: usize,
        /// The identifier received.
        did: u16,
    },
    /// A `U` record with a field out of its range (`what` names it).
    #[error("user binding record: {what}")]
    BadUserBinding {
        /// The field and what is wrong with it.
        what: &'static str,
    },
    /// An `E` record whose message does not decode (the cause is the source).
    #[error("event record does not decode")]
    Event(#[from] DecodeError),
}

/// The constructors and accessors every view of tagged bytes has (inside its `impl` block;
/// the view brings its own `check_len`).
macro_rules! view_basics {
    () => {
        /// Wraps `buffer` without looking at it.
        pub const fn new_unchecked(buffer: T) -> Self {
            Self { buffer }
        }

        /// Wraps `buffer` and checks its length against its tag
        /// ([`check_len`](Self::check_len)).
        ///
        /// # Errors
        /// As [`check_len`](Self::check_len).
        pub fn new_checked(buffer: T) -> Result<Self, RecordError> {
            let v = Self::new_unchecked(buffer);
            v.check_len()?;
            Ok(v)
        }

        /// The wrapped buffer.
        pub fn into_inner(self) -> T {
            self.buffer
        }

        /// The tag byte.
        ///
        /// # Panics
        /// On an empty buffer in an unchecked view.
        pub fn tag(&self) -> u8 {
            self.buffer.as_ref()[field::TAG]
        }
    };
}

/// A checked or unchecked view of a record's bytes.
///
/// Built with [`new_unchecked`](Self::new_unchecked), the accessors may panic on a buffer too
/// short for its tag; built with [`new_checked`](Self::new_checked) (or after
/// [`check_len`](Self::check_len) succeeded), none can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RecordView<T> {
    view_basics!();

    /// Checks that the buffer is long enough for every accessor its tag has, and exactly as
    /// long as the record it holds. It does not decode an event's message.
    ///
    /// # Errors
    /// [`RecordError::Empty`], [`RecordError::UnknownTag`], [`RecordError::BadLength`] (`F`,
    /// `Q`, `D`), [`RecordError::Truncated`] or [`RecordError::KeyLength`] (`K`).
    pub fn check_len(&self) -> Result<(), RecordError> {
        let b = self.buffer.as_ref();
        let len = b.len();
        let Some(&t) = b.first() else {
            return Err(RecordError::Empty);
        };
        let exact = |expected: usize| {
            if len == expected {
                Ok(())
            } else {
                Err(RecordError::BadLength {
                    tag: t,
                    len,
                    expected,
                })
            }
        };
        match t {
            tag::EVENT => Ok(()),
            tag::FINAL => exact(field::FINAL_LEN),
            tag::RESYNC_REQUEST | tag::RESYNC_DONE => exact(field::BARE_LEN),
            tag::LAST_HANDLED => {
                let Some(&n) = b.get(field::LAST_COUNT) else {
                    return Err(RecordError::Truncated {
                        tag: t,
                        len,
                        min: field::LAST_HEADER_LEN,
                    });
                };
                let mut pos = field::LAST_HEADER_LEN;
                let mut prev: Option<u8> = None;
                for i in 0..usize::from(n) {
                    let (Some(&input), Some(&k)) = (b.get(pos), b.get(pos + 1)) else {
                        return Err(RecordError::Truncated {
                            tag: t,
                            len,
                            min: pos + field::LAST_MARK_HEADER_LEN,
                        });
                    };
                    let k = usize::from(k);
                    if i >= MAX_MARKS
                        || usize::from(input) >= MAX_MARKS
                        || prev.is_some_and(|p| input <= p)
                        || !(1..=MAX_MARK_DIGESTS).contains(&k)
                    {
                        return Err(RecordError::BadMark { index: i, input });
                    }
                    prev = Some(input);
                    pos += field::LAST_MARK_HEADER_LEN + field::LAST_DIGEST_LEN * k;
                    if pos > len {
                        return Err(RecordError::Truncated {
                            tag: t,
                            len,
                            min: pos,
                        });
                    }
                }
                exact(pos)
            }
            tag::RESYNC_PART | tag::RESYNC_SKIPPED => {
                let Some(n) = b.get(field::PART_COUNT) else {
                    return Err(RecordError::Truncated {
                        tag: t,
                        len,
                        min: field::PART_HEADER_LEN,
                    });
                };
                let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
                if n > usize::from(crate::ids::IdCount::MAX) {
                    return Err(RecordError::BadIdentifier {
                        index: n,
                        did: crate::ids::IdCount::MAX,
                    });
                }
                exact(field::PART_HEADER_LEN + 2 * n)?;
                let mut prev: Option<u16> = None;
                for (index, c) in b[field::PART_HEADER_LEN..].chunks_exact(2).enumerate() {
                    let did = u16::from_be_bytes([c[0], c[1]]);
                    if did >= crate::ids::IdCount::MAX || prev.is_some_and(|p| did <= p) {
                        return Err(RecordError::BadIdentifier { index, did });
                    }
                    prev = Some(did);
                }
                Ok(())
            }
            tag::USER_BINDING => {
                let Some(&family) = b.get(field::USER_FAMILY) else {
                    return Err(RecordError::Truncated {
                        tag: t,
                        len,
                        min: field::USER_ADDR.start,
                    });
                };
                let addr_len = match family {
                    4 => 4,
                    6 => 16,
                    _ => return Err(user_error("address family is not 4 or 6")),
                };
                exact(field::USER_ADDR.start + addr_len)?;
                let user = be_u32(&b[field::USER_ID]);
                match b[field::USER_BOUND] {
                    1 => {}
                    0 if user == 0 => {}
                    0 => return Err(user_error("an unbound record names a user")),
                    _ => return Err(user_error("bound flag is not 0 or 1")),
                }
                if be_u32(&b[field::USER_REMAINING]) > MAX_LIFETIME_S * 1000 {
                    return Err(user_error("remaining lifetime above 7 days"));
                }
                Ok(())
            }
            tag::SA_KEY => {
                let (Some(spi), Some(&declared), Some(key)) = (
                    b.get(field::KEY_SPI),
                    b.get(field::KEY_LEN),
                    b.get(field::KEY),
                ) else {
                    return Err(RecordError::Truncated {
                        tag: t,
                        len,
                        min: field::KEY_HEADER_LEN,
                    });
                };
                if key.len() == usize::from(declared) {
                    Ok(())
                } else {
                    Err(RecordError::KeyLength {
                        spi: be_u32(spi),
                        declared,
                        actual: key.len(),
                    })
                }
            }
            other => Err(RecordError::UnknownTag(other)),
        }
    }

    /// `E`: the encoded message after the tag.
    ///
    /// # Panics
    /// On an empty buffer in an unchecked view.
    pub fn message_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }

    /// `F`: the epoch.
    ///
    /// # Panics
    /// On a buffer shorter than 9 bytes in an unchecked view (or a checked view of another
    /// tag).
    pub fn final_epoch(&self) -> Epoch {
        Epoch(be_u64(&self.buffer.as_ref()[field::FINAL_EPOCH]))
    }

    /// `L`: the identifier.
    ///
    /// # Panics
    /// On a buffer shorter than 3 bytes in an unchecked view.
    pub fn last_did(&self) -> DistributionId {
        let b = &self.buffer.as_ref()[field::LAST_DID];
        DistributionId(u16::from_be_bytes([b[0], b[1]]))
    }

    /// `L`: the marks, each an input and its digests, oldest first (in a checked view, the
    /// count byte's number of them).
    ///
    /// # Panics
    /// On a buffer shorter than its counts say in an unchecked view.
    pub fn last_marks(&self) -> impl Iterator<Item = (u8, Vec<u64>)> + '_ {
        let b = self.buffer.as_ref();
        let n = usize::from(b[field::LAST_COUNT]);
        let mut pos = field::LAST_HEADER_LEN;
        (0..n).map(move |_| {
            let input = b[pos];
            let k = usize::from(b[pos + 1]);
            pos += field::LAST_MARK_HEADER_LEN;
            let digests = b[pos..pos + field::LAST_DIGEST_LEN * k]
                .chunks_exact(field::LAST_DIGEST_LEN)
                .map(be_u64)
                .collect();
            pos += field::LAST_DIGEST_LEN * k;
            (input, digests)
        })
    }

    /// `P` and `S`: the identifiers (in a checked view, the count's number of them, ascending).
    ///
    /// # Panics
    /// On a buffer shorter than 3 bytes in an unchecked view.
    pub fn part_ids(&self) -> impl Iterator<Item = DistributionId> + '_ {
        let b = self.buffer.as_ref();
        let n = usize::from(u16::from_be_bytes([b[1], b[2]]));
        b[field::PART_HEADER_LEN..]
            .chunks_exact(2)
            .take(n)
            .map(|c| DistributionId(u16::from_be_bytes([c[0], c[1]])))
    }

    /// `U`: the binding.
    ///
    /// # Panics
    /// On a buffer shorter than its address family says in an unchecked view.
    pub fn user_binding(&self) -> UserBinding {
        let b = self.buffer.as_ref();
        let a = &b[field::USER_ADDR];
        let addr = match <[u8; 16]>::try_from(a) {
            Ok(v6) => std::net::IpAddr::from(v6),
            Err(_) => std::net::IpAddr::from([a[0], a[1], a[2], a[3]]),
        };
        let o = &b[field::USER_ORIGIN];
        UserBinding {
            addr,
            user: (b[field::USER_BOUND] == 1).then(|| UserId(be_u32(&b[field::USER_ID]))),
            remaining_ms: be_u32(&b[field::USER_REMAINING]),
            version: be_u64(&b[field::USER_VERSION]),
            origin: NodeId(u16::from_be_bytes([o[0], o[1]])),
        }
    }

    /// `K`: the SPI.
    ///
    /// # Panics
    /// On a buffer shorter than 5 bytes in an unchecked view (or a checked view of a short
    /// record of another tag).
    pub fn key_spi(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::KEY_SPI])
    }

    /// `K`: the key length byte.
    ///
    /// # Panics
    /// On a buffer shorter than 6 bytes in an unchecked view (or a checked view of a short
    /// record of another tag).
    pub fn key_len(&self) -> u8 {
        self.buffer.as_ref()[field::KEY_LEN]
    }

    /// `K`: the key bytes (in a checked view, exactly [`key_len`](Self::key_len) of them).
    ///
    /// # Panics
    /// On a buffer shorter than 6 bytes in an unchecked view (or a checked view of a short
    /// record of another tag).
    pub fn key(&self) -> &[u8] {
        &self.buffer.as_ref()[field::KEY]
    }
}

/// A checked or unchecked view of a datagram's bytes; see [`RecordView`] for the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DatagramView<T> {
    view_basics!();

    /// Checks that the buffer is long enough for every accessor its tag has (a heartbeat:
    /// [`HEARTBEAT_LEN`] bytes plus two per node id of its out list, at most
    /// [`MAX_HEARTBEAT_OUT`] of them). It does not check flag values.
    ///
    /// # Errors
    /// [`RecordError::Empty`], [`RecordError::UnknownTag`], [`RecordError::BadLength`] (`H`).
    pub fn check_len(&self) -> Result<(), RecordError> {
        let b = self.buffer.as_ref();
        match b.first() {
            None => Err(RecordError::Empty),
            Some(&tag::HEARTBEAT) if b.len() < field::HB_LEN => Err(RecordError::BadLength {
                tag: tag::HEARTBEAT,
                len: b.len(),
                expected: field::HB_LEN,
            }),
            Some(&tag::HEARTBEAT) => {
                let n = usize::from(b[field::HB_OUT_COUNT]);
                let expected = field::HB_LEN + 2 * n;
                if n > MAX_HEARTBEAT_OUT || b.len() != expected {
                    Err(RecordError::BadLength {
                        tag: tag::HEARTBEAT,
                        len: b.len(),
                        expected: field::HB_LEN + 2 * n.min(MAX_HEARTBEAT_OUT),
                    })
                } else {
                    Ok(())
                }
            }
            Some(&tag::RAFT) => Ok(()),
            Some(&other) => Err(RecordError::UnknownTag(other)),
        }
    }

    /// `R`: the consensus message after the tag.
    ///
    /// # Panics
    /// On an empty buffer in an unchecked view.
    pub fn raft_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }

    /// `H`: the ready flag byte.
    ///
    /// # Panics
    /// On a buffer shorter than a heartbeat in an unchecked view.
    pub fn ready_byte(&self) -> u8 {
        self.buffer.as_ref()[field::HB_READY]
    }

    /// `H`: the witness flag byte.
    ///
    /// # Panics
    /// On a buffer shorter than a heartbeat in an unchecked view.
    pub fn witness_byte(&self) -> u8 {
        self.buffer.as_ref()[field::HB_WITNESS]
    }

    /// `H`: the fenced flag byte.
    ///
    /// # Panics
    /// On a buffer shorter than a heartbeat in an unchecked view.
    pub fn fenced_byte(&self) -> u8 {
        self.buffer.as_ref()[field::HB_FENCED]
    }

    /// `H`: the applied allocation epoch.
    ///
    /// # Panics
    /// On a buffer shorter than a heartbeat in an unchecked view.
    pub fn applied(&self) -> Epoch {
        Epoch(be_u64(&self.buffer.as_ref()[field::HB_APPLIED]))
    }

    /// `H`: the flags byte (bit 0: leaving, bit 1: retired).
    ///
    /// # Panics
    /// On a buffer shorter than a heartbeat in an unchecked view.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::HB_FLAGS]
    }

    /// `H`: the sender's clock when it sent the heartbeat (µs).
    ///
    /// # Panics
    /// On a buffer shorter than a heartbeat in an unchecked view.
    pub fn stamp(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::HB_STAMP])
    }

    /// `H`: the latest stamp the sender received from the recipient.
    ///
    /// # Panics
    /// On a buffer shorter than a heartbeat in an unchecked view.
    pub fn echo(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::HB_ECHO])
    }

    /// `H`: the node ids of the out list.
    ///
    /// # Panics
    /// On a buffer shorter than its out count says in an unchecked view.
    pub fn out_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        let b = self.buffer.as_ref();
        let n = usize::from(b[field::HB_OUT_COUNT]);
        b[field::HB_LEN..field::HB_LEN + 2 * n]
            .chunks_exact(2)
            .map(|c| NodeId(u16::from_be_bytes([c[0], c[1]])))
    }
}

/// A record of the reliable replication stream.
///
/// `Debug` never prints key bytes.
///
/// # Examples
///
/// A key record keeps its key out of `Debug`:
///
/// ```
/// use cluster_core::Record;
/// use zeroize::Zeroizing;
///
/// let rec = Record::SaKey { spi: 0x1000, key: Zeroizing::new(vec![0xAB; 20]) };
/// let mut wire = Vec::new();
/// rec.emit(&mut wire);
/// assert_eq!(Record::parse(&wire), Ok(rec.clone()));
/// assert!(!format!("{rec:?}").to_lowercase().contains("ab, "));
/// assert!(!format!("{rec:?}").contains("171"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Record {
    /// `E`: a replication event.
    Event(Message),
    /// `F`: every SA state the sender had when it had applied this epoch precedes this record
    /// on its stream.
    Final(Epoch),
    /// `Q`: asks the receiver for everything it owns.
    ResyncRequest,
    /// `D`: ends the answer to a resync request.
    ResyncDone,
    /// `P`: asks the receiver for every entry it holds of these identifiers, whoever owns
    /// them (a resyncing member whose answer from their owner never came), then `F` and `D`.
    ResyncPart {
        /// The identifiers, strictly ascending, each below 4096.
        ids: Vec<DistributionId>,
    },
    /// `S`: the identifiers a resync answer did not cover because another live member owns
    /// them (sent before its `D`): what no answer covered the asker asks for with `P`.
    ResyncSkipped {
        /// The identifiers, strictly ascending, each below 4096.
        ids: Vec<DistributionId>,
    },
    /// `L`: where the sender was in each input's stream when it released an identifier in a
    /// planned move (sent to the next owner before the `F` of the release epoch). The next
    /// owner held the identifier's frames from the move's first step on; the held frames that
    /// came before that place, per input, are the releaser's, the rest are its own (see
    /// `member::hold`).
    LastHandled {
        /// The identifier.
        did: DistributionId,
        /// Per input (0 outside port, 1 inside port, 2 the wire's packets, ascending, at most
        /// [`MAX_MARKS`]): the releaser's place in that input's stream when it let the
        /// identifier go, the digests of the last frames it took in there, of any identifier
        /// ([`frame_digest`]), oldest first, 1 to [`MAX_MARK_DIGESTS`] of them.
        marks: Marks,
    },
    /// `U`: a user binding of claim 8, or its tombstone ([`crate::users`]).
    UserBinding(UserBinding),
    /// `K`: an SA's key (key material: invariant 6; the stream is encrypted).
    SaKey {
        /// The SA's SPI.
        spi: u32,
        /// The key, at most [`MAX_KEY_LEN`] bytes (see [`Record::emit`]).
        key: Zeroizing<Vec<u8>>,
    },
}

impl Record {
    /// A key record, refusing a key longer than [`MAX_KEY_LEN`].
    ///
    /// # Errors
    /// [`RecordError::KeyTooLong`].
    pub fn sa_key(spi: u32, key: Zeroizing<Vec<u8>>) -> Result<Record, RecordError> {
        if key.len() > MAX_KEY_LEN {
            return Err(RecordError::KeyTooLong {
                spi,
                len: key.len(),
            });
        }
        Ok(Record::SaKey { spi, key })
    }

    /// Parses one whole record. Never panics.
    ///
    /// # Errors
    /// Any [`RecordError`] but [`RecordError::KeyTooLong`] and [`RecordError::BadFlag`]; see
    /// [`RecordView::check_len`]; [`RecordError::Event`] for an `E` record whose message does
    /// not decode.
    pub fn parse(bytes: &[u8]) -> Result<Record, RecordError> {
        let v = RecordView::new_checked(bytes)?;
        Ok(match v.tag() {
            tag::EVENT => Record::Event(Message::decode(v.message_bytes())?),
            tag::FINAL => Record::Final(v.final_epoch()),
            tag::RESYNC_REQUEST => Record::ResyncRequest,
            tag::RESYNC_DONE => Record::ResyncDone,
            tag::RESYNC_PART => Record::ResyncPart {
                ids: v.part_ids().collect(),
            },
            tag::RESYNC_SKIPPED => Record::ResyncSkipped {
                ids: v.part_ids().collect(),
            },
            tag::LAST_HANDLED => Record::LastHandled {
                did: v.last_did(),
                marks: v.last_marks().collect(),
            },
            tag::USER_BINDING => Record::UserBinding(v.user_binding()),
            tag::SA_KEY => Record::SaKey {
                spi: v.key_spi(),
                key: Zeroizing::new(v.key().to_vec()),
            },
            // check_len accepted only the tags above
            other => return Err(RecordError::UnknownTag(other)),
        })
    }

    /// Appends the record's wire bytes to `out`.
    ///
    /// An event is its tag then [`Message::encode_into`] (no allocation beyond `out`'s growth).
    /// A key longer than [`MAX_KEY_LEN`] (which [`Record::sa_key`] refuses) is cut to its first
    /// [`MAX_KEY_LEN`] bytes, as the daemon always did; such a record does not round-trip.
    /// If `out` reallocates while a key is appended, its old buffer is not zeroized: give a key
    /// record a buffer with room (or use [`Record::to_bytes`]).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        match self {
            Record::Event(m) => m.encode_into(out),
            Record::Final(e) => out.extend_from_slice(&e.0.to_be_bytes()),
            Record::ResyncRequest | Record::ResyncDone => {}
            Record::ResyncPart { ids } | Record::ResyncSkipped { ids } => {
                // at most 4096 identifiers (more are cut, as a key is)
                let ids = ids
                    .get(..usize::from(crate::ids::IdCount::MAX))
                    .unwrap_or(ids);
                out.extend_from_slice(&(ids.len() as u16).to_be_bytes());
                for d in ids {
                    out.extend_from_slice(&d.0.to_be_bytes());
                }
            }
            Record::LastHandled { did, marks } => {
                // at most MAX_MARKS marks of at most MAX_MARK_DIGESTS digests (more are cut,
                // as a key is), so the counts fit a byte
                let marks = marks.get(..MAX_MARKS).unwrap_or(marks);
                out.extend_from_slice(&did.0.to_be_bytes());
                out.push(marks.len() as u8);
                for (input, digests) in marks {
                    let tail = digests.len().saturating_sub(MAX_MARK_DIGESTS);
                    out.push(*input);
                    out.push((digests.len() - tail) as u8);
                    for d in &digests[tail..] {
                        out.extend_from_slice(&d.to_be_bytes());
                    }
                }
            }
            Record::UserBinding(u) => {
                out.extend_from_slice(&u.version.to_be_bytes());
                out.extend_from_slice(&u.origin.0.to_be_bytes());
                out.extend_from_slice(&u.user.map_or(0, |u| u.0).to_be_bytes());
                out.push(u8::from(u.user.is_some()));
                // longer than a record carries: cut to the longest lifetime, as a key is cut
                let remaining = u.remaining_ms.min(MAX_LIFETIME_S * 1000);
                out.extend_from_slice(&remaining.to_be_bytes());
                match u.addr {
                    std::net::IpAddr::V4(a) => {
                        out.push(4);
                        out.extend_from_slice(&a.octets());
                    }
                    std::net::IpAddr::V6(a) => {
                        out.push(6);
                        out.extend_from_slice(&a.octets());
                    }
                }
            }
            Record::SaKey { spi, key } => {
                let key: &[u8] = key;
                let key = key.get(..MAX_KEY_LEN).unwrap_or(key);
                out.extend_from_slice(&spi.to_be_bytes());
                // `key` is at most MAX_KEY_LEN = u8::MAX bytes long
                out.push(u8::try_from(key.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(key);
            }
        }
    }

    /// The record's wire bytes in a fresh buffer, sized up front and zeroized when dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let cap = match self {
            Record::Event(_) => 64,
            Record::Final(_) => field::FINAL_LEN,
            Record::ResyncRequest | Record::ResyncDone => field::BARE_LEN,
            Record::ResyncPart { ids } | Record::ResyncSkipped { ids } => {
                field::PART_HEADER_LEN + 2 * ids.len()
            }
            Record::LastHandled { marks, .. } => {
                field::LAST_HEADER_LEN
                    + marks
                        .iter()
                        .take(MAX_MARKS)
                        .map(|(_, d)| {
                            field::LAST_MARK_HEADER_LEN
                                + field::LAST_DIGEST_LEN * d.len().min(MAX_MARK_DIGESTS)
                        })
                        .sum::<usize>()
            }
            Record::SaKey { key, .. } => field::KEY_HEADER_LEN + key.len().min(MAX_KEY_LEN),
            Record::UserBinding(_) => field::USER_ADDR.start + 16,
        };
        let mut out = Zeroizing::new(Vec::with_capacity(cap));
        self.emit(&mut out);
        out
    }

    /// The record's tag byte ([`tag`]).
    pub fn tag(&self) -> u8 {
        match self {
            Record::Event(_) => tag::EVENT,
            Record::Final(_) => tag::FINAL,
            Record::ResyncRequest => tag::RESYNC_REQUEST,
            Record::ResyncDone => tag::RESYNC_DONE,
            Record::ResyncPart { .. } => tag::RESYNC_PART,
            Record::ResyncSkipped { .. } => tag::RESYNC_SKIPPED,
            Record::LastHandled { .. } => tag::LAST_HANDLED,
            Record::SaKey { .. } => tag::SA_KEY,
            Record::UserBinding(_) => tag::USER_BINDING,
        }
    }
}

/// The digest a member keeps of a frame it handled, and that an `L` record carries: the keyed
/// hash of its first 128 bytes and its length (the headers and the start of the payload tell
/// one frame of a flow from the next; only a byte-identical copy digests the same).
pub fn frame_digest(frame: &[u8]) -> u64 {
    const K0: u64 = 0x6c61_7374_2068_616e;
    const K1: u64 = 0x646c_6564_2066_726d;
    let head = frame.get(..128).unwrap_or(frame);
    crate::siphash::siphash13(K0, K1, head) ^ (frame.len() as u64).rotate_left(48)
}

/// Prints a key's length in place of its bytes.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

/// Prints an SPI in hex.
struct Spi(u32);

impl fmt::Debug for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08x}", self.0)
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Event(m) => f.debug_tuple("Event").field(m).finish(),
            Record::Final(e) => f.debug_tuple("Final").field(e).finish(),
            Record::ResyncRequest => f.write_str("ResyncRequest"),
            Record::ResyncDone => f.write_str("ResyncDone"),
            Record::ResyncPart { ids } => f.debug_struct("ResyncPart").field("ids", ids).finish(),
            Record::ResyncSkipped { ids } => {
                f.debug_struct("ResyncSkipped").field("ids", ids).finish()
            }
            Record::LastHandled { did, marks } => f
                .debug_struct("LastHandled")
                .field("did", did)
                .field("marks", marks)
                .finish(),
            Record::UserBinding(u) => f.debug_tuple("UserBinding").field(u).finish(),
            Record::SaKey { spi, key } => f
                .debug_struct("SaKey")
                .field("spi", &Spi(*spi))
                .field("key", &Redacted(key.len()))
                .finish(),
        }
    }
}

/// A member's liveness report (the `H` datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// The sender is ready to handle traffic.
    pub ready: bool,
    /// The sender is a witness (votes, owns nothing).
    pub witness: bool,
    /// The sender has fenced itself (its lease lapsed).
    pub fenced: bool,
    /// The sender is leaving the cluster (a graceful stop): it still serves what it owns, but
    /// the leader gives it nothing and moves what it owns away in planned moves.
    pub leaving: bool,
    /// The sender's leave is done (it owns nothing, every identifier has an owner): it proposes
    /// nothing more, even while consensus still names it the leader, so the others' leases
    /// do not need its grant (they would fence until the next leader is elected once it has
    /// exited).
    pub retired: bool,
    /// The allocation epoch the sender has applied.
    pub applied: Epoch,
    /// The sender's clock when it sent this heartbeat (µs since it started): the recipient
    /// echoes it back, which grants the sender its lease (see `member::liveness`).
    pub stamp: u64,
    /// The latest stamp the sender received from the recipient (0: none yet).
    pub echo: u64,
    /// The members the sender does not see serving (silent past failure detection, fenced or
    /// not ready): the leader takes identifiers from a silent owner only when a majority of
    /// the voters says so.
    pub out: NodeList,
}

/// A short list of node ids (at most [`MAX_HEARTBEAT_OUT`]), kept sorted and without
/// duplicates; `Copy`, like the heartbeat that carries it.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeList {
    len: u8,
    ids: [u16; MAX_HEARTBEAT_OUT],
}

impl NodeList {
    /// Adds `n` (ignored when the list is full or holds it already). Returns whether it was
    /// added.
    pub fn insert(&mut self, n: NodeId) -> bool {
        let len = usize::from(self.len);
        let cur = &self.ids[..len];
        match cur.binary_search(&n.0) {
            Ok(_) => false,
            Err(_) if len == MAX_HEARTBEAT_OUT => false,
            Err(i) => {
                self.ids.copy_within(i..len, i + 1);
                self.ids[i] = n.0;
                self.len += 1;
                true
            }
        }
    }

    /// Whether `n` is in the list.
    pub fn contains(&self, n: NodeId) -> bool {
        self.ids[..usize::from(self.len)]
            .binary_search(&n.0)
            .is_ok()
    }

    /// The ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.ids[..usize::from(self.len)].iter().map(|i| NodeId(*i))
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for NodeList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter().map(|n| n.0)).finish()
    }
}

impl FromIterator<NodeId> for NodeList {
    fn from_iter<I: IntoIterator<Item = NodeId>>(iter: I) -> Self {
        let mut l = NodeList::default();
        for n in iter {
            l.insert(n);
        }
        l
    }
}

impl Heartbeat {
    /// The heartbeat's wire bytes ([`HEARTBEAT_LEN`] plus two per node id of the out list).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEARTBEAT_LEN + 2 * self.out.len()];
        b[field::TAG] = tag::HEARTBEAT;
        b[field::HB_READY] = u8::from(self.ready);
        b[field::HB_WITNESS] = u8::from(self.witness);
        b[field::HB_FENCED] = u8::from(self.fenced);
        b[field::HB_FLAGS] = u8::from(self.leaving) | (u8::from(self.retired) << 1);
        b[field::HB_APPLIED].copy_from_slice(&self.applied.0.to_be_bytes());
        b[field::HB_STAMP].copy_from_slice(&self.stamp.to_be_bytes());
        b[field::HB_ECHO].copy_from_slice(&self.echo.to_be_bytes());
        b[field::HB_OUT_COUNT] = self.out.len() as u8;
        for (i, n) in self.out.iter().enumerate() {
            let at = field::HB_LEN + 2 * i;
            b[at..at + 2].copy_from_slice(&n.0.to_be_bytes());
        }
        b
    }

    fn from_view<T: AsRef<[u8]>>(v: &DatagramView<T>) -> Result<Heartbeat, RecordError> {
        let flag = |field: &'static str, value: u8| match value {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(RecordError::BadFlag { field, value }),
        };
        Ok(Heartbeat {
            ready: flag("ready", v.ready_byte())?,
            witness: flag("witness", v.witness_byte())?,
            fenced: flag("fenced", v.fenced_byte())?,
            leaving: v.flags() & 1 == 1,
            retired: v.flags() & 2 == 2,
            applied: v.applied(),
            stamp: v.stamp(),
            echo: v.echo(),
            out: v.out_ids().collect(),
        })
    }
}

/// An unreliable datagram between members, borrowing from the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// `H`: a heartbeat.
    Heartbeat(Heartbeat),
    /// `R`: a consensus message (opaque here; possibly empty).
    Raft(&'a [u8]),
}

impl<'a> Datagram<'a> {
    /// Parses one whole datagram. Never panics.
    ///
    /// # Errors
    /// [`RecordError::Empty`], [`RecordError::UnknownTag`], [`RecordError::BadLength`] (a
    /// heartbeat shorter than 30 bytes or not as long as its out count says), [`RecordError::BadFlag`] (a heartbeat flag byte other
    /// than 0 or 1).
    pub fn parse(bytes: &'a [u8]) -> Result<Datagram<'a>, RecordError> {
        let v = DatagramView::new_checked(bytes)?;
        match v.tag() {
            tag::HEARTBEAT => Ok(Datagram::Heartbeat(Heartbeat::from_view(&v)?)),
            tag::RAFT => Ok(Datagram::Raft(
                v.into_inner().get(field::PAYLOAD).unwrap_or(&[]),
            )),
            // check_len accepted only the tags above
            other => Err(RecordError::UnknownTag(other)),
        }
    }

    /// Appends the datagram's wire bytes to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Datagram::Heartbeat(h) => out.extend_from_slice(&h.to_bytes()),
            Datagram::Raft(m) => {
                out.push(tag::RAFT);
                out.extend_from_slice(m);
            }
        }
    }
}

fn user_error(what: &'static str) -> RecordError {
    RecordError::BadUserBinding { what }
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::DistDigest;
    use crate::events::{Event, SaState};
    use crate::ids::{DistributionId, NodeId};
    use crate::strategies::{addr, entry, flow_key};
    use proptest::prelude::*;

    /// A repair request for identifiers 1 and 2, hand-encoded: format 1, sender 3,
    /// incarnation 9, seq 0, event tag 7, epoch 5, two identifiers (the message codec's
    /// fixed-width integers are little-endian, unlike the record framing around it).
    const EVENT_BYTES: [u8; 16] = [
        b'E', 2, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 7, 5, 2, 0x01, 0x00, 0x02, 0x00,
    ];
    const FINAL_BYTES: [u8; 9] = [b'F', 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
    const KEY_BYTES: [u8; 10] = [b'K', 0xde, 0xad, 0xbe, 0xef, 4, 0xa1, 0xa2, 0xa3, 0xa4];
    const HEARTBEAT_BYTES: [u8; 34] = [
        b'H', 1, 0, 1, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2c, 0, // flags, epoch
        0, 0, 0, 0, 0, 0x01, 0xe2, 0x40, // stamp 123456
        0, 0, 0, 0, 0, 0, 0x30, 0x39, // echo 12345
        2, 0x00, 0x02, 0x01, 0x00, // out: 2, 256
    ];

    fn repair_message() -> Message {
        Message {
            sender: NodeId(3),
            incarnation: 9,
            seq: 0,
            event: Event::RepairRequest {
                epoch: Epoch(5),
                ids: vec![DistributionId(1), DistributionId(2)],
            },
        }
    }

    fn key_record() -> Record {
        Record::SaKey {
            spi: 0xdead_beef,
            key: Zeroizing::new(vec![0xa1, 0xa2, 0xa3, 0xa4]),
        }
    }

    fn emitted(r: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        r.emit(&mut out);
        out
    }

    #[test]
    fn event_fixture() {
        let r = Record::parse(&EVENT_BYTES).unwrap();
        assert_eq!(r, Record::Event(repair_message()));
        assert_eq!(r.tag(), b'E');
        assert_eq!(emitted(&r), EVENT_BYTES);
        assert_eq!(&r.to_bytes()[..], &EVENT_BYTES[..]);
        let v = RecordView::new_checked(&EVENT_BYTES[..]).unwrap();
        assert_eq!(v.message_bytes(), &EVENT_BYTES[1..]);
    }

    #[test]
    fn event_emit_appends_tag_and_message() {
        let m = repair_message();
        let mut out = vec![0xff];
        Record::Event(m.clone()).emit(&mut out);
        let mut want = vec![0xff, b'E'];
        want.extend_from_slice(&m.encode());
        assert_eq!(out, want);
    }

    #[test]
    fn final_fixture() {
        let r = Record::parse(&FINAL_BYTES).unwrap();
        assert_eq!(r, Record::Final(Epoch(0x0102_0304_0506_0708)));
        assert_eq!(emitted(&r), FINAL_BYTES);
        assert_eq!(
            RecordView::new_checked(&FINAL_BYTES[..])
                .unwrap()
                .final_epoch(),
            Epoch(0x0102_0304_0506_0708)
        );
    }

    #[test]
    fn resync_fixtures() {
        assert_eq!(Record::parse(b"Q"), Ok(Record::ResyncRequest));
        assert_eq!(Record::parse(b"D"), Ok(Record::ResyncDone));
        assert_eq!(emitted(&Record::ResyncRequest), b"Q");
        assert_eq!(emitted(&Record::ResyncDone), b"D");
        assert_eq!(&Record::ResyncDone.to_bytes()[..], b"D");
    }

    #[test]
    fn partial_resync_fixtures() {
        let ids = vec![DistributionId(7), DistributionId(300), DistributionId(4095)];
        let part = Record::ResyncPart { ids: ids.clone() };
        let bytes = [b'P', 0, 3, 0, 7, 0x01, 0x2c, 0x0f, 0xff];
        assert_eq!(emitted(&part), bytes);
        assert_eq!(&part.to_bytes()[..], &bytes[..]);
        assert_eq!(Record::parse(&bytes), Ok(part));
        let mut s = bytes;
        s[0] = b'S';
        assert_eq!(
            Record::parse(&s),
            Ok(Record::ResyncSkipped { ids: ids.clone() })
        );
        assert_eq!(
            Record::parse(b"P\0\0"),
            Ok(Record::ResyncPart { ids: vec![] })
        );
        // truncated, long, out of order, repeated, out of range, a count past 4096
        assert!(matches!(
            Record::parse(b"P\0"),
            Err(RecordError::Truncated { tag: b'P', .. })
        ));
        assert!(matches!(
            Record::parse(&bytes[..8]),
            Err(RecordError::BadLength {
                tag: b'P',
                len: 8,
                expected: 9
            })
        ));
        assert!(matches!(
            Record::parse(&[b'S', 0, 1, 0, 7, 0]),
            Err(RecordError::BadLength { tag: b'S', .. })
        ));
        assert_eq!(
            Record::parse(&[b'P', 0, 2, 0, 9, 0, 7]),
            Err(RecordError::BadIdentifier { index: 1, did: 7 })
        );
        assert_eq!(
            Record::parse(&[b'P', 0, 2, 0, 9, 0, 9]),
            Err(RecordError::BadIdentifier { index: 1, did: 9 })
        );
        assert_eq!(
            Record::parse(&[b'S', 0, 1, 0x10, 0]),
            Err(RecordError::BadIdentifier {
                index: 0,
                did: 4096
            })
        );
        assert!(matches!(
            Record::parse(&[b'P', 0x10, 1]),
            Err(RecordError::BadIdentifier { .. })
        ));
        assert_eq!(
            RecordError::BadIdentifier { index: 1, did: 7 }.to_string(),
            "partial resync record: identifier 1 (7) is not below 4096 and above the one before it"
        );
    }

    #[test]
    fn key_fixture() {
        let r = Record::parse(&KEY_BYTES).unwrap();
        assert_eq!(r, key_record());
        assert_eq!(emitted(&r), KEY_BYTES);
        assert_eq!(&r.to_bytes()[..], &KEY_BYTES[..]);
        let v = RecordView::new_checked(&KEY_BYTES[..]).unwrap();
        assert_eq!(v.key_spi(), 0xdead_beef);
        assert_eq!(v.key_len(), 4);
        assert_eq!(v.key(), &[0xa1, 0xa2, 0xa3, 0xa4]);
        // an empty key is a valid record
        let empty = [b'K', 0, 0, 0, 7, 0];
        assert_eq!(
            Record::parse(&empty),
            Ok(Record::SaKey {
                spi: 7,
                key: Zeroizing::new(Vec::new())
            })
        );
    }

    #[test]
    fn key_debug_is_redacted() {
        let s = format!("{:?}", key_record());
        assert_eq!(s, "SaKey { spi: 0xdeadbeef, key: <4 bytes redacted> }");
        let s = format!("{:#?}", key_record());
        assert!(!s.contains("a1") && !s.contains("161"), "{s}");
        assert_eq!(format!("{:?}", Record::Final(Epoch(2))), "Final(Epoch(2))");
        assert_eq!(format!("{:?}", Record::ResyncRequest), "ResyncRequest");
    }

    #[test]
    fn long_keys() {
        let spi = 1;
        let max = Zeroizing::new(vec![7u8; MAX_KEY_LEN]);
        let r = Record::sa_key(spi, max).unwrap();
        assert_eq!(Record::parse(&r.to_bytes()), Ok(r));
        assert_eq!(
            Record::sa_key(spi, Zeroizing::new(vec![7u8; 256])),
            Err(RecordError::KeyTooLong { spi, len: 256 })
        );
        // emit cuts an over-long key to what the length byte can say, as the daemon did
        let r = Record::SaKey {
            spi,
            key: Zeroizing::new(vec![7u8; 300]),
        };
        let b = r.to_bytes();
        assert_eq!(b.len(), 6 + MAX_KEY_LEN);
        assert_eq!(b[5], 255);
        assert!(Record::parse(&b).is_ok());
    }

    #[test]
    fn heartbeat_fixture() {
        let h = Heartbeat {
            ready: true,
            witness: false,
            fenced: true,
            leaving: false,
            retired: false,
            applied: Epoch(300),
            stamp: 123_456,
            echo: 12_345,
            out: [NodeId(256), NodeId(2)].into_iter().collect(),
        };
        assert_eq!(h.to_bytes(), HEARTBEAT_BYTES);
        assert_eq!(h.out.iter().collect::<Vec<_>>(), [NodeId(2), NodeId(256)]);
        assert!(h.out.contains(NodeId(256)) && !h.out.contains(NodeId(3)));
        assert_eq!(
            Datagram::parse(&HEARTBEAT_BYTES),
            Ok(Datagram::Heartbeat(h))
        );
        let mut out = Vec::new();
        Datagram::Heartbeat(h).emit(&mut out);
        assert_eq!(out, HEARTBEAT_BYTES);
        let v = DatagramView::new_checked(&HEARTBEAT_BYTES[..]).unwrap();
        assert_eq!(
            (v.ready_byte(), v.witness_byte(), v.fenced_byte(), v.flags()),
            (1, 0, 1, 0)
        );
        assert_eq!(v.applied(), Epoch(300));
        assert_eq!((v.stamp(), v.echo()), (123_456, 12_345));
        // the reserved bits of the flags byte are ignored; bit 0 is leaving, bit 1 retired
        let mut b = HEARTBEAT_BYTES;
        b[12] = 0x58;
        assert_eq!(Datagram::parse(&b), Ok(Datagram::Heartbeat(h)));
        b[12] = 0x59;
        let leaving = Heartbeat { leaving: true, ..h };
        assert_eq!(Datagram::parse(&b), Ok(Datagram::Heartbeat(leaving)));
        let mut wire = HEARTBEAT_BYTES;
        wire[12] = 1;
        assert_eq!(leaving.to_bytes(), wire);
        b[12] = 0x5b;
        let retired = Heartbeat {
            retired: true,
            ..leaving
        };
        assert_eq!(Datagram::parse(&b), Ok(Datagram::Heartbeat(retired)));
        wire[12] = 3;
        assert_eq!(retired.to_bytes(), wire);
    }

    #[test]
    fn raft_fixture() {
        let b = [b'R', 1, 2, 3];
        let d = Datagram::parse(&b).unwrap();
        assert_eq!(d, Datagram::Raft(&[1, 2, 3]));
        let mut out = Vec::new();
        d.emit(&mut out);
        assert_eq!(out, b);
        assert_eq!(Datagram::parse(b"R"), Ok(Datagram::Raft(&[])));
    }

    /// [`RecordError::BadLength`]: a `tag` record `len` bytes long that must be `expected`.
    fn bad_length(tag: u8, len: usize, expected: usize) -> RecordError {
        RecordError::BadLength { tag, len, expected }
    }

    /// [`RecordError::Truncated`]: a `tag` record `len` bytes long, its header `min`.
    fn truncated(tag: u8, len: usize, min: usize) -> RecordError {
        RecordError::Truncated { tag, len, min }
    }

    /// [`RecordError::KeyLength`]: SPI `spi`'s key declared `declared` bytes, `actual` there.
    fn key_length(spi: u32, declared: u8, actual: usize) -> RecordError {
        RecordError::KeyLength {
            spi,
            declared,
            actual,
        }
    }

    /// [`RecordError::BadFlag`]: flag `field` carries `value`.
    fn bad_flag(field: &'static str, value: u8) -> RecordError {
        RecordError::BadFlag { field, value }
    }

    #[test]
    fn malformed_records() {
        use RecordError::*;
        let cases: &[(&[u8], RecordError)] = &[
            (b"", Empty),
            (b"Z", UnknownTag(b'Z')),
            (b"H", UnknownTag(b'H')),
            (&[0x00, 1, 2], UnknownTag(0)),
            (b"F", bad_length(b'F', 1, 9)),
            (&FINAL_BYTES[..8], bad_length(b'F', 8, 9)),
            (&[b'F', 0, 0, 0, 0, 0, 0, 0, 0, 0], bad_length(b'F', 10, 9)),
            (b"Qx", bad_length(b'Q', 2, 1)),
            (b"D\0", bad_length(b'D', 2, 1)),
            (b"K", truncated(b'K', 1, 6)),
            (&KEY_BYTES[..5], truncated(b'K', 5, 6)),
            (&KEY_BYTES[..9], key_length(0xdead_beef, 4, 3)),
            (&[b'K', 0, 0, 0, 1, 0, 0xaa], key_length(1, 0, 1)),
            (
                b"E",
                Event(DecodeError::Truncated {
                    field: "format",
                    offset: 0,
                }),
            ),
            (&[b'E', 99], Event(DecodeError::Format(99))),
        ];
        for (bytes, want) in cases {
            assert_eq!(Record::parse(bytes).as_ref(), Err(want), "{bytes:?}");
        }
    }

    #[test]
    fn malformed_datagrams() {
        use RecordError::*;
        let mut long = HEARTBEAT_BYTES.to_vec();
        long.push(0);
        let mut flag = HEARTBEAT_BYTES;
        flag[3] = 2;
        let mut ready = HEARTBEAT_BYTES;
        ready[1] = 0xff;
        let mut too_many = HEARTBEAT_BYTES[..30].to_vec();
        too_many[29] = MAX_HEARTBEAT_OUT as u8 + 1;
        let cases: &[(&[u8], RecordError)] = &[
            (b"", Empty),
            (b"E", UnknownTag(b'E')),
            (b"x12", UnknownTag(b'x')),
            (b"H", bad_length(b'H', 1, 30)),
            (&HEARTBEAT_BYTES[..29], bad_length(b'H', 29, 30)),
            (&HEARTBEAT_BYTES[..33], bad_length(b'H', 33, 34)),
            (&long, bad_length(b'H', 35, 34)),
            (&too_many, bad_length(b'H', 30, 30 + 2 * MAX_HEARTBEAT_OUT)),
            (&flag, bad_flag("fenced", 2)),
            (&ready, bad_flag("ready", 0xff)),
        ];
        for (bytes, want) in cases {
            assert_eq!(Datagram::parse(bytes).as_ref(), Err(want), "{bytes:?}");
        }
    }

    #[test]
    fn error_messages_and_sources() {
        use std::error::Error;
        let e = Record::parse(b"Qx").unwrap_err();
        assert_eq!(e.to_string(), "'Q' is 2 bytes long, expected exactly 1");
        let e = Record::parse(&KEY_BYTES[..9]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "key record for SPI 0xdeadbeef declares a 4-byte key but carries 3 bytes"
        );
        assert_eq!(
            Record::parse(b"\x01").unwrap_err().to_string(),
            "unknown tag 0x01"
        );
        let e = Record::parse(&[b'E', 99]).unwrap_err();
        assert_eq!(e.to_string(), "event record does not decode");
        let src = e.source().expect("the decode error is the source");
        assert_eq!(src.to_string(), DecodeError::Format(99).to_string());
    }

    #[test]
    fn unchecked_views_of_good_bytes() {
        let v = RecordView::new_unchecked(KEY_BYTES);
        assert!(v.check_len().is_ok());
        assert_eq!(v.tag(), b'K');
        assert_eq!(v.into_inner(), KEY_BYTES);
        let d = DatagramView::new_unchecked(&b"R\x05"[..]);
        assert!(d.check_len().is_ok());
        assert_eq!(d.raft_bytes(), &[5]);
    }

    // ----- property tests -----

    fn event() -> impl Strategy<Value = Event> {
        let dist = || any::<u16>().prop_map(DistributionId);
        let epoch = || any::<u64>().prop_map(Epoch);
        prop_oneof![
            entry().prop_map(Event::Add),
            entry().prop_map(Event::Update),
            (flow_key(), dist(), any::<u32>()).prop_map(|(key, dist, version)| Event::Clear {
                key,
                dist,
                version
            }),
            (
                any::<u32>(),
                dist(),
                addr(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(
                    |(spi, dist, dst, outbound_seq, replay_top, replay_bitmap)| {
                        Event::SaState(SaState {
                            spi,
                            dist,
                            dst,
                            outbound_seq,
                            replay_top,
                            replay_bitmap,
                        })
                    }
                ),
            (dist(), epoch(), proptest::collection::vec(entry(), 0..4)).prop_map(
                |(dist, epoch, entries)| Event::Snapshot {
                    dist,
                    epoch,
                    entries
                }
            ),
            (
                epoch(),
                proptest::collection::vec((dist(), any::<u32>(), any::<u64>()), 0..8)
            )
                .prop_map(|(epoch, items)| Event::Digest {
                    epoch,
                    items: items
                        .into_iter()
                        .map(|(d, count, hash)| (d, DistDigest { count, hash }))
                        .collect(),
                }),
            (epoch(), proptest::collection::vec(dist(), 0..8))
                .prop_map(|(epoch, ids)| Event::RepairRequest { epoch, ids }),
        ]
    }

    prop_compose! {
        fn message()(
            sender in any::<u16>(),
            incarnation in any::<u32>(),
            seq in any::<u64>(),
            event in event(),
        ) -> Message {
            Message { sender: NodeId(sender), incarnation, seq, event }
        }
    }

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            message().prop_map(Record::Event),
            any::<u64>().prop_map(|e| Record::Final(Epoch(e))),
            Just(Record::ResyncRequest),
            Just(Record::ResyncDone),
            (
                any::<bool>(),
                proptest::collection::btree_set(0u16..crate::ids::IdCount::MAX, 0..40)
            )
                .prop_map(|(part, ids)| {
                    let ids = ids.into_iter().map(DistributionId).collect();
                    if part {
                        Record::ResyncPart { ids }
                    } else {
                        Record::ResyncSkipped { ids }
                    }
                }),
            (
                any::<u16>(),
                proptest::sample::subsequence(vec![0u8, 1, 2], 0..=3),
                proptest::collection::vec(
                    proptest::collection::vec(any::<u64>(), 1..=MAX_MARK_DIGESTS),
                    3
                )
            )
                .prop_map(|(d, inputs, digests)| Record::LastHandled {
                    did: DistributionId(d),
                    marks: inputs.into_iter().zip(digests).collect(),
                }),
            (
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..=MAX_KEY_LEN)
            )
                .prop_map(|(spi, key)| Record::SaKey {
                    spi,
                    key: Zeroizing::new(key)
                }),
            (
                any::<u64>(),
                any::<u16>(),
                proptest::option::of(any::<u32>()),
                0..=MAX_LIFETIME_S * 1000,
                addr()
            )
                .prop_map(|(version, origin, user, remaining_ms, addr)| {
                    Record::UserBinding(UserBinding {
                        addr,
                        user: user.map(UserId),
                        remaining_ms,
                        version,
                        origin: NodeId(origin),
                    })
                }),
        ]
    }

    fn datagram() -> impl Strategy<Value = (Option<Heartbeat>, Vec<u8>)> {
        prop_oneof![
            (
                (any::<bool>(), any::<bool>(), any::<bool>(), any::<u64>()),
                (any::<u64>(), any::<u64>(), any::<bool>(), any::<bool>()),
                proptest::collection::vec(any::<u16>(), 0..40)
            )
                .prop_map(
                    |((ready, witness, fenced, applied), (stamp, echo, leaving, retired), out)| {
                        let h = Heartbeat {
                            ready,
                            witness,
                            fenced,
                            leaving,
                            retired,
                            applied: Epoch(applied),
                            stamp,
                            echo,
                            out: out.into_iter().map(NodeId).collect(),
                        };
                        (Some(h), Vec::new())
                    }
                ),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|raft| (None, raft)),
        ]
    }

    /// What `bytes` parse to re-emits to bytes that parse to the same value: a record to the
    /// same bytes, a datagram (heartbeats up to the ignored reserved byte) to an equal one.
    fn reparses(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(r) = Record::parse(bytes) {
            prop_assert_eq!(&emitted(&r), bytes);
        }
        if let Ok(d) = Datagram::parse(bytes) {
            let mut b = Vec::new();
            d.emit(&mut b);
            prop_assert_eq!(Datagram::parse(&b), Ok(d));
        }
        Ok(())
    }

    /// A `U` record's bytes, field by field, and the malformed ones it refuses.
    #[test]
    fn user_binding_fixture() {
        let r = Record::UserBinding(UserBinding {
            addr: std::net::IpAddr::from([198, 18, 0, 10]),
            user: Some(UserId(7)),
            remaining_ms: 3_600_000,
            version: 2,
            origin: NodeId(1),
        });
        let b = emitted(&r);
        let want = [
            b'U', 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 7, 1, 0x00, 0x36, 0xEE, 0x80, 4, 198, 18,
            0, 10,
        ];
        assert_eq!(b, want);
        assert_eq!(Record::parse(&b), Ok(r.clone()));
        // the fuzz target's seed is this record
        let seed = include_bytes!("../../../fuzz/corpus/record_parse/user_binding_v4");
        assert_eq!(&seed[..], &want[..]);
        let v6 = Record::UserBinding(UserBinding {
            addr: "2001:db8::7".parse().unwrap(),
            user: None,
            remaining_ms: 0,
            version: u64::MAX,
            origin: NodeId(u16::MAX),
        });
        let b6 = emitted(&v6);
        assert_eq!(b6.len(), 37);
        assert_eq!(Record::parse(&b6), Ok(v6));
        let bad = |at: usize, v: u8| {
            let mut b = want.to_vec();
            b[at] = v;
            Record::parse(&b)
        };
        let named = |what| Err(RecordError::BadUserBinding { what });
        assert_eq!(bad(20, 5), named("address family is not 4 or 6"));
        assert_eq!(bad(15, 2), named("bound flag is not 0 or 1"));
        assert_eq!(bad(15, 0), named("an unbound record names a user"));
        assert_eq!(bad(16, 0x30), named("remaining lifetime above 7 days"));
        assert_eq!(
            bad(20, 6),
            Err(RecordError::BadLength {
                tag: b'U',
                len: 25,
                expected: 37
            })
        );
        assert_eq!(Record::parse(&want[..24]), Err(bad_length(b'U', 24, 25)));
        assert_eq!(
            Record::parse(&[&want[..], &[0]].concat()),
            Err(bad_length(b'U', 26, 25))
        );
        assert_eq!(Record::parse(&want[..20]), Err(truncated(b'U', 20, 21)));
        assert_eq!(Record::parse(b"U"), Err(truncated(b'U', 1, 21)));
        // a longer lifetime than a record carries is cut to the longest
        let Record::UserBinding(ub) = r else {
            unreachable!("built as a user binding")
        };
        let long = Record::UserBinding(UserBinding {
            remaining_ms: u32::MAX,
            ..ub
        });
        let Ok(Record::UserBinding(cut)) = Record::parse(&emitted(&long)) else {
            panic!("a cut lifetime parses");
        };
        assert_eq!(cut.remaining_ms, MAX_LIFETIME_S * 1000);
    }

    /// An `L` record's bytes, field by field, and the malformed ones it refuses.
    #[test]
    fn last_handled_fixture() {
        let r = Record::LastHandled {
            did: DistributionId(0x0102),
            marks: vec![(0, vec![0x1122_3344_5566_7788]), (2, vec![9, 10])],
        };
        let b = emitted(&r);
        assert_eq!(
            b,
            [
                b'L', 1, 2, 2, 0, 1, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 2, 2, 0, 0, 0,
                0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 10
            ]
        );
        assert_eq!(Record::parse(&b), Ok(r));
        assert_eq!(
            Record::parse(&[b'L', 0, 7, 0]),
            Ok(Record::LastHandled {
                did: DistributionId(7),
                marks: vec![]
            })
        );
        // truncated, a count the bytes do not carry, trailing bytes
        assert!(matches!(
            Record::parse(b"L\0\x01"),
            Err(RecordError::Truncated { tag: b'L', .. })
        ));
        assert!(matches!(
            Record::parse(&b[..b.len() - 1]),
            Err(RecordError::Truncated { tag: b'L', .. })
        ));
        assert!(matches!(
            Record::parse(&b[..5]),
            Err(RecordError::Truncated { tag: b'L', .. })
        ));
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            Record::parse(&long),
            Err(RecordError::BadLength { .. })
        ));
        // inputs out of order, repeated, unknown; no digest, too many; more marks than inputs
        let bad = |at: usize, v: u8| {
            let mut x = b.clone();
            x[at] = v;
            Record::parse(&x)
        };
        assert_eq!(bad(14, 0), Err(RecordError::BadMark { index: 1, input: 0 }));
        assert_eq!(bad(14, 3), Err(RecordError::BadMark { index: 1, input: 3 }));
        assert_eq!(bad(5, 0), Err(RecordError::BadMark { index: 0, input: 0 }));
        assert_eq!(bad(5, 5), Err(RecordError::BadMark { index: 0, input: 0 }));
        let mut four = vec![b'L', 0, 1, 4];
        for i in 0..4u8 {
            four.extend_from_slice(&[i, 1]);
            four.extend_from_slice(&[0; 8]);
        }
        assert!(matches!(
            Record::parse(&four),
            Err(RecordError::BadMark { index: 3, .. })
        ));
        // more digests than a mark carries are cut to the last ones
        let cut = Record::LastHandled {
            did: DistributionId(1),
            marks: vec![(1, (1..=6).collect())],
        };
        assert_eq!(
            Record::parse(&emitted(&cut)),
            Ok(Record::LastHandled {
                did: DistributionId(1),
                marks: vec![(1, vec![3, 4, 5, 6])]
            })
        );
        assert_eq!(emitted(&cut).len(), cut.to_bytes().len());
    }

    /// A frame's digest depends on its first 128 bytes and its length only.
    #[test]
    fn frame_digests() {
        let a = vec![7u8; 200];
        let mut b = a.clone();
        b[150] = 8;
        assert_eq!(frame_digest(&a), frame_digest(&b));
        b[10] = 8;
        assert_ne!(frame_digest(&a), frame_digest(&b));
        assert_ne!(frame_digest(&a), frame_digest(&a[..199]));
        assert_ne!(frame_digest(&[]), frame_digest(&[0]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn records_round_trip(r in record()) {
            let b = emitted(&r);
            prop_assert_eq!(b[0], r.tag());
            prop_assert_eq!(&b[..], &r.to_bytes()[..]);
            prop_assert_eq!(Record::parse(&b), Ok(r));
        }

        #[test]
        fn datagrams_round_trip((hb, raft) in datagram()) {
            let d = match hb {
                Some(h) => Datagram::Heartbeat(h),
                None => Datagram::Raft(&raft),
            };
            let mut b = Vec::new();
            d.emit(&mut b);
            prop_assert_eq!(Datagram::parse(&b), Ok(d));
        }

        /// Whatever parses re-emits to bytes that parse to the same value; records are
        /// canonical (the same bytes), heartbeats up to the ignored reserved byte.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            reparses(&bytes)?;
            let _ = RecordView::new_checked(&bytes[..]).map(|v| (v.tag(), v.message_bytes().len()));
            let _ = DatagramView::new_checked(&bytes[..]).map(|v| v.tag());
        }

        /// Arbitrary bytes behind each tag, so the tag-specific checks are reached often.
        #[test]
        fn tagged_bytes_never_panic(
            t in prop::sample::select(b"EFQDKLPSHRx".to_vec()),
            rest in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            let mut bytes = vec![t];
            bytes.extend_from_slice(&rest);
            reparses(&bytes)?;
        }
    }
}
