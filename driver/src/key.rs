//! The typed entry model: what a 320-bit CAM key means, and the result word.
//!
//! # Key layout
//!
//! The key is ten 32-bit words; `KEY[0]` holds key bits 31:0. A mask bit of 1
//! takes part in the comparison, 0 is a wildcard.
//!
//! | word  | bits    | field | meaning |
//! |-------|---------|-------|---------|
//! | 0..=3 | 127:0   | `A`   | source address (IPv4 in word 0, words 1..=3 zero); ISAKMP: initiator cookie in words 0..=1 (word 0 = low half), message id in word 2, word 3 zero |
//! | 4..=7 | 255:128 | `B`   | destination address (IPv4 in word 4, words 5..=7 zero); ESP and ISAKMP: the peer (destination) address |
//! | 8     | 15:0    | `P`   | source port (TCP, UDP), identifier (ICMP, ICMPv6); ESP: SPI bits 15:0 |
//! | 8     | 31:16   | `Q`   | destination port (TCP, UDP), zero (ICMP); ESP: SPI bits 31:16 |
//! | 9     | 7:0     | proto | IP protocol number (6, 17, 1, 58, 50; ISAKMP 17) |
//! | 9     | 11:8    | kind  | entry type, see [`Kind`] |
//! | 9     | 12      | v6    | address family: 1 = IPv6 |
//! | 9     | 20:13   | zone  | 8-bit zone (interface group / VRF) |
//! | 9     | 31:21   | -     | reserved, zero |
//!
//! ESP keeps the SPI as the whole of word 8 and has no source address (words
//! 0..=3 are unused). Bits a type does not use are zero in
//! the key **and one in the mask** ("must be zero"), so the same encoder
//! produces both stored entries and search keys and a key can never match an
//! entry of another type or family. Kind, family, protocol and the reserved
//! bits are always compared; every other field may be wildcarded: addresses by
//! prefix length, ports, identifiers, SPI, cookie, message id and zone fully
//! (`None` = any).
//!
//! # Result word layout
//!
//! | bits  | field | meaning |
//! |-------|-------|---------|
//! | 7:0   | action | [`Action`] |
//! | 23:8  | SA slot | [`SaSlot`] of the security association (encrypt / decrypt) |
//! | 31:24 | flags | [`ResultFlags`] |

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::types::SaSlot;

/// Key width in 32-bit words.
pub const KEY_WORDS: usize = hal::regs::cam::KEY_WORDS as usize;

bitfield::bitfield! {
    /// Key word 9, the fields every entry has: the IP protocol (bits 7:0), the entry type
    /// ([`Kind`], 11:8), IPv6 (12) and the zone (20:13); bits 31:21 are reserved (zero).
    #[derive(Clone, Copy)]
    struct Word9(u32);
    u8, proto, set_proto: 7, 0;
    u8, kind, set_kind: 11, 8;
    v6, set_v6: 12;
    u8, zone, set_zone: 20, 13;
}

/// Word 9's masks.
mod w9 {
    /// The zone's position.
    pub const ZONE_LSB: u32 = 13;
    /// proto + kind + v6 + reserved: always compared.
    pub const FIXED_MASK: u32 = !(0xFF << ZONE_LSB);
    pub const ZONE_MASK: u32 = 0xFF << ZONE_LSB;
    /// The reserved bits above the zone.
    pub const RESERVED_LSB: u32 = 21;
}

/// The raw key and mask of an entry, as the card stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct KeyBits {
    /// Key words, `key[0]` = bits 31:0.
    pub key: [u32; KEY_WORDS],
    /// Mask words: 1 = compared, 0 = wildcard.
    pub mask: [u32; KEY_WORDS],
}

impl KeyBits {
    /// The same entry with every key bit outside the mask cleared: two
    /// entries match exactly the same search keys iff their normalised bits
    /// are equal.
    #[must_use]
    pub fn normalized(&self) -> Self {
        let mut k = *self;
        for (w, m) in k.key.iter_mut().zip(self.mask) {
            *w &= m;
        }
        k
    }

    /// Whether search key `search` matches this entry.
    #[must_use]
    pub fn matches(&self, search: &[u32; KEY_WORDS]) -> bool {
        (0..KEY_WORDS).all(|i| (search[i] ^ self.key[i]) & self.mask[i] == 0)
    }
}

/// An address with a prefix length (the length is the wildcard: `/0` is any
/// address of that family). Always normalised: host bits are zero. Written
/// and serialised as `addr/len`, or just `addr` for a full-length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// `addr/len`, with the host bits cleared.
    ///
    /// # Errors
    /// [`KeyError::PrefixLength`] when `len` exceeds the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, KeyError> {
        let max = family_bits(addr);
        if len > max {
            return Err(KeyError::PrefixLength { len, max });
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & prefix_mask32(len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & prefix_mask128(len))),
        };
        Ok(Self { addr, len })
    }

    /// A single host.
    #[must_use]
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: family_bits(addr),
        }
    }

    /// Any IPv4 address (`0.0.0.0/0`).
    #[must_use]
    pub const fn any_v4() -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            len: 0,
        }
    }

    /// Any IPv6 address (`::/0`).
    #[must_use]
    pub const fn any_v6() -> Self {
        Self {
            addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            len: 0,
        }
    }

    /// The (network) address.
    #[must_use]
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    #[must_use]
    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is the any-address wildcard of its family (`/0`).
    #[must_use]
    pub const fn is_any(&self) -> bool {
        self.len == 0
    }

    fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Four words of value and mask, word 0 = least significant.
    fn words(&self) -> ([u32; 4], [u32; 4]) {
        let (v, m): (u128, u128) = match self.addr {
            IpAddr::V4(a) => (
                u128::from(a.to_bits()),
                u128::from(prefix_mask32(self.len)) | !u128::from(u32::MAX),
            ),
            IpAddr::V6(a) => (a.to_bits(), prefix_mask128(self.len)),
        };
        (split128(v), split128(m))
    }

    fn from_words(
        v6: bool,
        key: &[u32],
        mask: &[u32],
        field: &'static str,
    ) -> Result<Self, KeyError> {
        let v = join128(key);
        let m = join128(mask);
        if v6 {
            let len = prefix_len128(m).ok_or(KeyError::Mask { field })?;
            Self::new(IpAddr::V6(Ipv6Addr::from_bits(v)), len)
        } else {
            if m >> 32 != u128::MAX >> 32 || v >> 32 != 0 {
                return Err(KeyError::Reserved { field });
            }
            let len = prefix_len128(m << 96).ok_or(KeyError::Mask { field })?;
            Self::new(IpAddr::V4(Ipv4Addr::from_bits(v as u32)), len)
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == family_bits(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl FromStr for IpPrefix {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::Parse {
            what: "address prefix",
            input: s.to_owned(),
        };
        match s.split_once('/') {
            Some((a, l)) => Self::new(a.parse().map_err(|_| bad())?, l.parse().map_err(|_| bad())?),
            None => Ok(Self::host(s.parse().map_err(|_| bad())?)),
        }
    }
}

impl TryFrom<String> for IpPrefix {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        s.parse()
    }
}

impl From<IpPrefix> for String {
    fn from(p: IpPrefix) -> String {
        p.to_string()
    }
}

crate::code_enum! {
    /// The entry type code stored in key word 9 bits 11:8.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Kind: u8 {
        /// TCP 5-tuple.
        Tcp = 1,
        /// UDP 5-tuple.
        Udp = 2,
        /// ICMP (IPv4) or ICMPv6 echo identifier.
        Icmp = 3,
        /// ESP security association: destination and SPI.
        Esp = 4,
        /// ISAKMP / IKE exchange: initiator cookie and message id.
        Isakmp = 5,
    }
}

impl Kind {
    fn proto(self, v6: bool) -> u8 {
        match self {
            Kind::Tcp => 6,
            Kind::Udp | Kind::Isakmp => 17,
            Kind::Icmp if v6 => 58,
            Kind::Icmp => 1,
            Kind::Esp => 50,
        }
    }
}

/// What an entry matches, by type. `None` fields are wildcards; addresses
/// wildcard by prefix length. Both addresses of a flow must be of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Flow {
    /// TCP 5-tuple (over IPv4 or IPv6).
    Tcp {
        /// Source address.
        src: IpPrefix,
        /// Destination address.
        dst: IpPrefix,
        /// Source port (`None` = any).
        src_port: Option<u16>,
        /// Destination port (`None` = any).
        dst_port: Option<u16>,
    },
    /// UDP 5-tuple (over IPv4 or IPv6).
    Udp {
        /// Source address.
        src: IpPrefix,
        /// Destination address.
        dst: IpPrefix,
        /// Source port (`None` = any).
        src_port: Option<u16>,
        /// Destination port (`None` = any).
        dst_port: Option<u16>,
    },
    /// ICMP echo (IPv4) or ICMPv6 echo (IPv6), by identifier.
    Icmp {
        /// Source address.
        src: IpPrefix,
        /// Destination address.
        dst: IpPrefix,
        /// Echo identifier (`None` = any).
        id: Option<u16>,
    },
    /// An ESP security association: destination address and SPI.
    Esp {
        /// Destination address of the SA.
        dst: IpPrefix,
        /// Security parameter index (`None` = any).
        spi: Option<u32>,
    },
    /// An ISAKMP (IKE) exchange with a peer.
    Isakmp {
        /// The peer (destination) address.
        dst: IpPrefix,
        /// Initiator cookie / SPI (`None` = any).
        initiator_cookie: Option<u64>,
        /// Message id (`None` = any).
        message_id: Option<u32>,
    },
}

impl Flow {
    /// The TCP flow (`tcp`) or else the UDP flow of these addresses and ports.
    #[must_use]
    pub fn tcp_or_udp(
        tcp: bool,
        src: IpPrefix,
        dst: IpPrefix,
        src_port: Option<u16>,
        dst_port: Option<u16>,
    ) -> Flow {
        if tcp {
            Flow::Tcp {
                src,
                dst,
                src_port,
                dst_port,
            }
        } else {
            Flow::Udp {
                src,
                dst,
                src_port,
                dst_port,
            }
        }
    }

    /// The entry type.
    #[must_use]
    pub fn kind(&self) -> Kind {
        match self {
            Flow::Tcp { .. } => Kind::Tcp,
            Flow::Udp { .. } => Kind::Udp,
            Flow::Icmp { .. } => Kind::Icmp,
            Flow::Esp { .. } => Kind::Esp,
            Flow::Isakmp { .. } => Kind::Isakmp,
        }
    }
}

/// A typed CAM key: a flow pattern plus a zone.
///
/// # Examples
///
/// A key encodes into the card's 320-bit key and mask words and decodes back to the same key:
///
/// ```
/// use driver::{CamKey, Flow};
///
/// let key = CamKey::new(None, Flow::Esp { dst: "203.0.113.1".parse()?, spi: Some(0x1000) });
/// let bits = key.encode()?;
/// assert_eq!(CamKey::decode(&bits)?, key);
/// // the SPI is matched exactly, the zone is a wildcard
/// let other = CamKey::new(Some(3), Flow::Esp { dst: "203.0.113.1".parse()?, spi: Some(0x1000) });
/// assert!(bits.matches(&other.encode()?.key));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CamKey {
    /// Zone (`None` = any zone).
    pub zone: Option<u8>,
    /// The flow pattern.
    #[serde(flatten)]
    pub flow: Flow,
}

/// Why a key could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Source and destination are of different address families.
    #[error("source and destination addresses are of different families")]
    MixedFamily,
    /// Prefix longer than the address.
    #[error("prefix length {len} exceeds the address width {max}")]
    PrefixLength {
        /// Requested length.
        len: u8,
        /// Width of the family.
        max: u8,
    },
    /// A field's mask is neither all ones nor all zeros (nor a prefix, for
    /// addresses): the typed model cannot express it.
    #[error("field `{field}` has a mask the typed key model cannot express")]
    Mask {
        /// The field.
        field: &'static str,
    },
    /// Bits that must be zero (and compared) are not.
    #[error("field `{field}` has non-zero or wildcarded reserved bits")]
    Reserved {
        /// The field.
        field: &'static str,
    },
    /// Unknown type code.
    #[error("unknown entry type code {code}")]
    UnknownKind {
        /// The code found.
        code: u32,
    },
    /// Protocol number does not fit the type.
    #[error("protocol {proto} does not belong to entry type {kind:?}")]
    Protocol {
        /// The type.
        kind: Kind,
        /// The protocol found.
        proto: u32,
    },
    /// Text that does not parse.
    #[error("cannot parse {what} from {input:?}")]
    Parse {
        /// What was expected.
        what: &'static str,
        /// The input.
        input: String,
    },
}

/// Helper to put optional fields into key/mask words.
#[derive(Default)]
struct Builder {
    b: KeyBits,
}

impl Builder {
    /// Field of `width` bits at bit `lsb` of word `w`; `None` = wildcard.
    fn field(&mut self, w: usize, lsb: u32, width: u32, v: Option<u32>) {
        let m = if width >= 32 {
            u32::MAX
        } else {
            ((1u32 << width) - 1) << lsb
        };
        // Clear, then set: the mask is always all ones by default below.
        self.b.key[w] &= !m;
        self.b.mask[w] &= !m;
        if let Some(v) = v {
            self.b.key[w] |= (v << lsb) & m;
            self.b.mask[w] |= m;
        }
    }

    fn addr(&mut self, first: usize, p: &IpPrefix) {
        let (v, m) = p.words();
        self.b.key[first..first + 4].copy_from_slice(&v);
        self.b.mask[first..first + 4].copy_from_slice(&m);
    }
}

impl CamKey {
    /// A key with zone `zone` (`None` = any) and flow `flow`.
    #[must_use]
    pub const fn new(zone: Option<u8>, flow: Flow) -> Self {
        Self { zone, flow }
    }

    /// The key's address family (IPv6 or not).
    #[must_use]
    pub fn is_v6(&self) -> bool {
        match &self.flow {
            Flow::Tcp { dst, .. } | Flow::Udp { dst, .. } | Flow::Icmp { dst, .. } => dst.is_v6(),
            Flow::Esp { dst, .. } | Flow::Isakmp { dst, .. } => dst.is_v6(),
        }
    }

    /// Encode into key and mask bits (see the module documentation).
    ///
    /// # Errors
    /// [`KeyError::MixedFamily`] when source and destination differ in family.
    pub fn encode(&self) -> Result<KeyBits, KeyError> {
        let v6 = self.is_v6();
        let kind = self.flow.kind();
        // Start from "everything compared, zero".
        let mut b = Builder {
            b: KeyBits {
                key: [0; KEY_WORDS],
                mask: [u32::MAX; KEY_WORDS],
            },
        };
        let src_family = |src: &IpPrefix| {
            if src.is_v6() == v6 {
                Ok(())
            } else {
                Err(KeyError::MixedFamily)
            }
        };
        match &self.flow {
            Flow::Tcp {
                src,
                dst,
                src_port,
                dst_port,
            }
            | Flow::Udp {
                src,
                dst,
                src_port,
                dst_port,
            } => {
                src_family(src)?;
                b.addr(0, src);
                b.addr(4, dst);
                b.field(8, 0, 16, src_port.map(u32::from));
                b.field(8, 16, 16, dst_port.map(u32::from));
            }
            Flow::Icmp { src, dst, id } => {
                src_family(src)?;
                b.addr(0, src);
                b.addr(4, dst);
                b.field(8, 0, 16, id.map(u32::from));
            }
            Flow::Esp { dst, spi } => {
                b.addr(4, dst);
                b.field(8, 0, 32, *spi);
            }
            Flow::Isakmp {
                dst,
                initiator_cookie,
                message_id,
            } => {
                b.field(0, 0, 32, initiator_cookie.map(|c| c as u32));
                b.field(1, 0, 32, initiator_cookie.map(|c| (c >> 32) as u32));
                b.field(2, 0, 32, *message_id);
                b.addr(4, dst);
            }
        }
        let mut w9 = Word9(0);
        w9.set_proto(kind.proto(v6));
        w9.set_kind(kind as u8);
        w9.set_v6(v6);
        w9.set_zone(self.zone.unwrap_or(0));
        b.b.key[9] = w9.0;
        b.b.mask[9] = w9::FIXED_MASK
            | if self.zone.is_some() {
                w9::ZONE_MASK
            } else {
                0
            };
        Ok(b.b)
    }

    /// Decode key and mask bits. Key bits outside the mask are ignored.
    ///
    /// # Errors
    /// [`KeyError`] when the bits are not something [`CamKey::encode`] can
    /// produce (unknown type, wrong protocol, reserved bits set or
    /// wildcarded, a mask that is not a prefix or a whole field).
    pub fn decode(bits: &KeyBits) -> Result<Self, KeyError> {
        let b = bits.normalized();
        let (k, m) = (&b.key, &b.mask);
        if m[9] & w9::FIXED_MASK != w9::FIXED_MASK || k[9] >> w9::RESERVED_LSB != 0 {
            return Err(KeyError::Reserved { field: "type" });
        }
        let w9 = Word9(k[9]);
        let code = w9.kind();
        let kind = Kind::from_code(code).ok_or(KeyError::UnknownKind {
            code: u32::from(code),
        })?;
        let v6 = w9.v6();
        let proto = u32::from(w9.proto());
        if proto != u32::from(kind.proto(v6)) {
            return Err(KeyError::Protocol { kind, proto });
        }
        let zone = opt_field(k[9], m[9], w9::ZONE_LSB, 8, "zone")?.map(|z| z as u8);
        let zero = |w: std::ops::Range<usize>, field| {
            if w.clone().all(|i| k[i] == 0 && m[i] == u32::MAX) {
                Ok(())
            } else {
                Err(KeyError::Reserved { field })
            }
        };
        let src = || IpPrefix::from_words(v6, &k[0..4], &m[0..4], "src");
        let dst = IpPrefix::from_words(v6, &k[4..8], &m[4..8], "dst")?;
        let port = |lsb, f| opt_field(k[8], m[8], lsb, 16, f).map(|p| p.map(|v| v as u16));
        let flow = match kind {
            Kind::Tcp | Kind::Udp => {
                let (src, src_port, dst_port) =
                    (src()?, port(0, "src_port")?, port(16, "dst_port")?);
                Flow::tcp_or_udp(kind == Kind::Tcp, src, dst, src_port, dst_port)
            }
            Kind::Icmp => {
                let (src, id) = (src()?, port(0, "id")?);
                if (k[8] >> 16) != 0 || (m[8] >> 16) != 0xFFFF {
                    return Err(KeyError::Reserved { field: "icmp" });
                }
                Flow::Icmp { src, dst, id }
            }
            Kind::Esp => {
                zero(0..4, "src")?;
                Flow::Esp {
                    dst,
                    spi: opt_field(k[8], m[8], 0, 32, "spi")?,
                }
            }
            Kind::Isakmp => {
                zero(3..4, "isakmp")?;
                zero(8..9, "isakmp")?;
                let lo = opt_field(k[0], m[0], 0, 32, "initiator_cookie")?;
                let hi = opt_field(k[1], m[1], 0, 32, "initiator_cookie")?;
                let initiator_cookie = match (lo, hi) {
                    (Some(lo), Some(hi)) => Some(u64::from(hi) << 32 | u64::from(lo)),
                    (None, None) => None,
                    _ => {
                        return Err(KeyError::Mask {
                            field: "initiator_cookie",
                        })
                    }
                };
                let message_id = opt_field(k[2], m[2], 0, 32, "message_id")?;
                Flow::Isakmp {
                    dst,
                    initiator_cookie,
                    message_id,
                }
            }
        };
        Ok(Self { zone, flow })
    }
}

impl fmt::Display for CamKey {
    /// A compact one-line form: `tcp 10.0.0.1:* > 10.0.0.2:80 zone=*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = |v: Option<u64>, hex: bool| match v {
            None => "*".to_owned(),
            Some(v) if hex => format!("0x{v:x}"),
            Some(v) => v.to_string(),
        };
        let p = |v: Option<u16>| o(v.map(u64::from), false);
        let v6 = self.is_v6();
        match &self.flow {
            Flow::Tcp {
                src,
                dst,
                src_port,
                dst_port,
            } => {
                write!(
                    f,
                    "tcp {} {} > {} {}",
                    pfx(src),
                    p(*src_port),
                    pfx(dst),
                    p(*dst_port)
                )?;
            }
            Flow::Udp {
                src,
                dst,
                src_port,
                dst_port,
            } => {
                write!(
                    f,
                    "udp {} {} > {} {}",
                    pfx(src),
                    p(*src_port),
                    pfx(dst),
                    p(*dst_port)
                )?;
            }
            Flow::Icmp { src, dst, id } => {
                let name = if v6 { "icmp6" } else { "icmp" };
                write!(f, "{name} {} > {} id={}", pfx(src), pfx(dst), p(*id))?;
            }
            Flow::Esp { dst, spi } => {
                write!(f, "esp > {} spi={}", pfx(dst), o(spi.map(u64::from), true))?
            }
            Flow::Isakmp {
                dst,
                initiator_cookie,
                message_id,
            } => write!(
                f,
                "isakmp > {} icookie={} msgid={}",
                pfx(dst),
                o(*initiator_cookie, true),
                o(message_id.map(u64::from), true)
            )?,
        }
        write!(f, " zone={}", o(self.zone.map(u64::from), false))
    }
}

fn pfx(p: &IpPrefix) -> String {
    if p.is_any() {
        "*".to_owned()
    } else {
        p.to_string()
    }
}

/// A whole-field-or-nothing value from a word.
fn opt_field(
    k: u32,
    m: u32,
    lsb: u32,
    width: u32,
    field: &'static str,
) -> Result<Option<u32>, KeyError> {
    let fm = if width >= 32 {
        u32::MAX
    } else {
        (1u32 << width) - 1
    };
    match (m >> lsb) & fm {
        0 => Ok(None),
        x if x == fm => Ok(Some((k >> lsb) & fm)),
        _ => Err(KeyError::Mask { field }),
    }
}

fn family_bits(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

fn prefix_mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn prefix_mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// Length of a contiguous high-bit prefix mask.
fn prefix_len128(m: u128) -> Option<u8> {
    let len = m.leading_ones();
    (prefix_mask128(len as u8) == m).then_some(len as u8)
}

fn split128(v: u128) -> [u32; 4] {
    [
        v as u32,
        (v >> 32) as u32,
        (v >> 64) as u32,
        (v >> 96) as u32,
    ]
}

fn join128(w: &[u32]) -> u128 {
    w.iter()
        .rev()
        .fold(0u128, |acc, &x| acc << 32 | u128::from(x))
}

crate::code_enum! {
    /// What the card does with a packet that matches an entry (result bits 7:0).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Action: u8 {
        /// A code this driver does not know (kept so decoding never loses bits).
        other Other,
        /// Drop silently.
        Drop = 0,
        /// Pass the packet.
        Accept = 1,
        /// Drop and answer with a reset / ICMP unreachable.
        Reject = 2,
        /// Encrypt with the SA in the result's SA slot.
        Encrypt = 3,
        /// Decrypt with the SA in the result's SA slot.
        Decrypt = 4,
        /// Hand the packet to the host (slow path).
        ToHost = 5,
    }
}

/// Flag bits of the result word (bits 31:24), kept whole so unknown bits
/// survive a decode/encode round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResultFlags(pub u8);

impl ResultFlags {
    /// Log matching packets.
    pub const LOG: u8 = 1 << 0;
    /// The connection is established (state seen in both directions).
    pub const ESTABLISHED: u8 = 1 << 1;
    /// Count matching packets.
    pub const COUNT: u8 = 1 << 2;

    /// Whether every bit of `flag` is set.
    #[must_use]
    pub const fn has(self, flag: u8) -> bool {
        self.0 & flag == flag
    }
}

/// The 32-bit result word of an entry (layout in the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResultWord {
    /// What to do with a matching packet.
    pub action: Action,
    /// SA context slot (for [`Action::Encrypt`] / [`Action::Decrypt`]).
    pub sa_slot: SaSlot,
    /// Flags.
    pub flags: ResultFlags,
}

impl ResultWord {
    /// A result with `action`, SA slot 0 and no flags.
    #[must_use]
    pub const fn new(action: Action) -> Self {
        Self {
            action,
            sa_slot: SaSlot(0),
            flags: ResultFlags(0),
        }
    }

    /// The raw word.
    #[must_use]
    pub fn encode(&self) -> u32 {
        u32::from(self.action.code())
            | u32::from(self.sa_slot.0) << 8
            | u32::from(self.flags.0) << 24
    }

    /// Decode a raw word (total: every word decodes, and re-encodes to itself).
    #[must_use]
    pub fn decode(w: u32) -> Self {
        Self {
            action: Action::from_code(w as u8),
            sa_slot: SaSlot((w >> 8) as u16),
            flags: ResultFlags((w >> 24) as u8),
        }
    }
}

impl fmt::Display for ResultWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::Other(c) => write!(f, "action#{c}")?,
            a => write!(f, "{}", serde_name(a))?,
        }
        if matches!(self.action, Action::Encrypt | Action::Decrypt) || self.sa_slot.0 != 0 {
            write!(f, " sa={}", self.sa_slot)?;
        }
        let names = [
            (ResultFlags::LOG, "log"),
            (ResultFlags::ESTABLISHED, "est"),
            (ResultFlags::COUNT, "count"),
        ];
        let mut rest = self.flags.0;
        for (bit, name) in names {
            if self.flags.has(bit) {
                write!(f, " {name}")?;
                rest &= !bit;
            }
        }
        if rest != 0 {
            write!(f, " flags=0x{rest:02x}")?;
        }
        Ok(())
    }
}

fn serde_name(a: Action) -> &'static str {
    match a {
        Action::Drop => "drop",
        Action::Accept => "accept",
        Action::Reject => "reject",
        Action::Encrypt => "encrypt",
        Action::Decrypt => "decrypt",
        Action::ToHost => "to_host",
        Action::Other(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_v4_layout() {
        let k = CamKey::new(
            Some(3),
            Flow::Tcp {
                src: v4("10.0.0.1"),
                dst: v4("192.168.0.0/16"),
                src_port: None,
                dst_port: Some(443),
            },
        );
        let b = k.encode().unwrap();
        assert_eq!(b.key[0], 0x0A00_0001);
        assert_eq!(b.mask[0], u32::MAX);
        assert_eq!(&b.key[1..4], &[0, 0, 0]);
        assert_eq!(&b.mask[1..4], &[u32::MAX; 3]);
        assert_eq!(b.key[4], 0xC0A8_0000);
        assert_eq!(b.mask[4], 0xFFFF_0000);
        assert_eq!(b.key[8], 443 << 16);
        assert_eq!(b.mask[8], 0xFFFF_0000);
        assert_eq!(b.key[9], 6 | 1 << 8 | 3 << 13);
        assert_eq!(b.mask[9], u32::MAX);
        assert_eq!(CamKey::decode(&b).unwrap(), k);
        assert_eq!(k.to_string(), "tcp 10.0.0.1 * > 192.168.0.0/16 443 zone=3");
    }

    #[test]
    fn esp_and_isakmp_layout() {
        let k = CamKey::new(
            None,
            Flow::Esp {
                dst: "2001:db8::1".parse().unwrap(),
                spi: Some(0xDEAD_BEEF),
            },
        );
        let b = k.encode().unwrap();
        assert_eq!(b.key[8], 0xDEAD_BEEF);
        assert_eq!(b.key[4], 1);
        assert_eq!(b.key[7], 0x2001_0db8);
        assert_eq!(b.key[9], 50 | 4 << 8 | 1 << 12);
        assert_eq!(b.mask[9], !(0xFF << 13));
        assert_eq!(CamKey::decode(&b).unwrap(), k);
        let k = CamKey::new(
            Some(0),
            Flow::Isakmp {
                dst: v4("1.2.3.4"),
                initiator_cookie: Some(0x0102_0304_0506_0708),
                message_id: None,
            },
        );
        let b = k.encode().unwrap();
        assert_eq!((b.key[0], b.key[1]), (0x0506_0708, 0x0102_0304));
        assert_eq!(b.mask[2], 0);
        assert_eq!(CamKey::decode(&b).unwrap(), k);
    }

    #[test]
    fn mixed_family_and_bad_bits_are_errors() {
        let k = CamKey::new(
            None,
            Flow::Udp {
                src: v4("1.1.1.1"),
                dst: "::1".parse().unwrap(),
                src_port: None,
                dst_port: None,
            },
        );
        assert_eq!(k.encode(), Err(KeyError::MixedFamily));
        assert!(matches!(
            CamKey::decode(&KeyBits::default()),
            Err(KeyError::Reserved { .. })
        ));
        let mut b = CamKey::new(
            None,
            Flow::Esp {
                dst: v4("1.1.1.1"),
                spi: Some(1),
            },
        )
        .encode()
        .unwrap();
        b.mask[8] = 0xFF;
        assert_eq!(CamKey::decode(&b), Err(KeyError::Mask { field: "spi" }));
        b.mask[8] = u32::MAX;
        b.key[9] = (b.key[9] & !0xFF) | 6;
        assert!(matches!(CamKey::decode(&b), Err(KeyError::Protocol { .. })));
        assert!("1.2.3.4/33".parse::<IpPrefix>().is_err());
        assert!("nonsense".parse::<IpPrefix>().is_err());
    }

    #[test]
    fn encoded_keys_match_like_the_card() {
        let entry = CamKey::new(
            None,
            Flow::Tcp {
                src: v4("10.0.0.0/8"),
                dst: v4("10.1.1.1"),
                src_port: None,
                dst_port: Some(22),
            },
        )
        .encode()
        .unwrap();
        let probe = |src: &str, sp, dp, zone| {
            CamKey::new(
                Some(zone),
                Flow::Tcp {
                    src: v4(src),
                    dst: v4("10.1.1.1"),
                    src_port: Some(sp),
                    dst_port: Some(dp),
                },
            )
            .encode()
            .unwrap()
            .key
        };
        assert!(entry.matches(&probe("10.9.9.9", 1234, 22, 7)));
        assert!(!entry.matches(&probe("11.0.0.1", 1234, 22, 7)));
        assert!(!entry.matches(&probe("10.9.9.9", 1234, 23, 7)));
        // A UDP search key never matches a TCP entry.
        let udp = CamKey::new(
            None,
            Flow::Udp {
                src: v4("10.9.9.9"),
                dst: v4("10.1.1.1"),
                src_port: Some(1),
                dst_port: Some(22),
            },
        );
        assert!(!entry.matches(&udp.encode().unwrap().key));
    }

    #[test]
    fn result_word_layout() {
        let r = ResultWord {
            action: Action::Decrypt,
            sa_slot: SaSlot(0x1234),
            flags: ResultFlags(ResultFlags::LOG),
        };
        assert_eq!(r.encode(), 0x0112_3404);
        assert_eq!(ResultWord::decode(r.encode()), r);
        assert_eq!(r.to_string(), "decrypt sa=4660 log");
        assert_eq!(ResultWord::decode(0xFF00_00FF).encode(), 0xFF00_00FF);
    }

    #[test]
    fn json_shape() {
        let k = CamKey::new(
            None,
            Flow::Esp {
                dst: v4("10.0.0.0/24"),
                spi: Some(5),
            },
        );
        let j = serde_json::to_string(&k).unwrap();
        assert_eq!(
            j,
            r#"{"zone":null,"type":"esp","dst":"10.0.0.0/24","spi":5}"#
        );
        assert_eq!(serde_json::from_str::<CamKey>(&j).unwrap(), k);
        let r = ResultWord::new(Action::Accept);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"action":"accept","sa_slot":0,"flags":0}"#
        );
    }

    fn arb_prefix(v6: bool) -> impl Strategy<Value = IpPrefix> {
        if v6 {
            (any::<u128>(), 0u8..=128)
                .prop_map(|(a, l)| IpPrefix::new(IpAddr::V6(Ipv6Addr::from_bits(a)), l).unwrap())
                .boxed()
        } else {
            (any::<u32>(), 0u8..=32)
                .prop_map(|(a, l)| IpPrefix::new(IpAddr::V4(Ipv4Addr::from_bits(a)), l).unwrap())
                .boxed()
        }
    }

    fn arb_key() -> impl Strategy<Value = CamKey> {
        any::<bool>().prop_flat_map(|v6| {
            let flow = prop_oneof![
                // TCP and UDP, each as often as every other kind.
                2 => (
                    any::<bool>(),
                    arb_prefix(v6),
                    arb_prefix(v6),
                    any::<Option<u16>>(),
                    any::<Option<u16>>()
                )
                    .prop_map(|(tcp, src, dst, src_port, dst_port)| {
                        Flow::tcp_or_udp(tcp, src, dst, src_port, dst_port)
                    }),
                1 => (arb_prefix(v6), arb_prefix(v6), any::<Option<u16>>())
                    .prop_map(|(src, dst, id)| Flow::Icmp { src, dst, id }),
                1 => (arb_prefix(v6), any::<Option<u32>>())
                    .prop_map(|(dst, spi)| Flow::Esp { dst, spi }),
                1 => (arb_prefix(v6), any::<Option<u64>>(), any::<Option<u32>>()).prop_map(
                    |(dst, initiator_cookie, message_id)| Flow::Isakmp {
                        dst,
                        initiator_cookie,
                        message_id
                    }
                ),
            ];
            (any::<Option<u8>>(), flow).prop_map(|(zone, flow)| CamKey { zone, flow })
        })
    }

    proptest! {
        #[test]
        fn key_encode_decode_round_trip(k in arb_key()) {
            let b = k.encode().unwrap();
            prop_assert_eq!(CamKey::decode(&b).unwrap(), k);
            // Encoded keys are already normalised, and an exact key matches itself.
            prop_assert_eq!(b.normalized(), b);
            prop_assert!(b.matches(&b.key));
        }

        #[test]
        fn prefix_text_round_trip(p in any::<bool>().prop_flat_map(arb_prefix)) {
            let s = p.to_string();
            prop_assert_eq!(s.parse::<IpPrefix>().unwrap(), p);
        }

        #[test]
        fn result_word_round_trip(w in any::<u32>()) {
            prop_assert_eq!(ResultWord::decode(w).encode(), w);
        }

        #[test]
        fn decode_never_panics(key in any::<[u32; 10]>(), mask in any::<[u32; 10]>()) {
            let b = KeyBits { key, mask };
            if let Ok(k) = CamKey::decode(&b) {
                prop_assert_eq!(k.encode().unwrap(), b.normalized());
            }
        }
    }
}
