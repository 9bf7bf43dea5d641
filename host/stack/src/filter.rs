//! One view of a table entry and one filter over it, shared by `hwctl` (the card's CAM) and
//! `clusterd ctl` (a node's common or node-specific table): conntrack's and bpftool's
//! conventions, the names of `docs/vocabulary.md`.
//!
//! An entry is seen as an [`EntryView`]: its identifier (`did`), its state kind and its key as
//! a [`ViewKey`]. A key is written the one way every view prints it (and `get` reads it):
//!
//! ```text
//! tcp 198.18.0.1:1234 -> 198.18.1.1:80          udp [2001:db8::1]:5353 -> [2001:db8::2]:53
//! icmp 10.0.0.1 -> 10.0.0.2 id=7                 icmp6 2001:db8::1 -> 2001:db8::2 id=7
//! esp 198.51.100.7 -> 203.0.113.1 spi=0x00001234
//! isakmp 198.51.100.7 -> 192.0.2.1 icookie=0x1 msgid=0x0
//! tls-session 00112233445566778899aabbccddeeff   udp 10.0.0.0/8:* -> 192.0.2.1:53 zone=3
//! ```
//!
//! `*` is a wildcard (a card entry may have them; a common-table entry never has), an
//! address may be a prefix (`10.0.0.0/8`), an IPv6 address with a port is in brackets. The
//! source is the side that sent the flow's first packet (the initiator); an ESP key's is the
//! SA's source. A card's ESP and ISAKMP entries match without a source (`esp -> DST ...`,
//! `isakmp icookie=...`): their CAM keys have none.
//!
//! A [`Filter`] keeps the entries all of whose given fields match: `--src`/`--dst` an
//! address or prefix that contains the entry's address (an entry's prefix must lie inside
//! the filter's; a wildcard address matches only a `/0` filter), `--proto` the IP protocol
//! (`icmp` matches ICMP and ICMPv6), `--sport`/`--dport`/`--port` a port (a wildcard port
//! matches no port filter), `--state` the state kind, `--did` the identifier.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An address and prefix length (`10.0.0.0/8`; a bare address is a host prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

fn family_bits(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(v.to_bits()) << 96,
        IpAddr::V6(v) => v.to_bits(),
    }
}

impl Prefix {
    /// `addr/len`; `None` when `len` is longer than the family's address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        (len <= family_bits(addr)).then_some(Self { addr, len })
    }

    /// A host prefix (`/32`, `/128`).
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: family_bits(addr),
        }
    }

    /// The address as given.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is a host prefix (a single address).
    pub fn is_host(&self) -> bool {
        self.len == family_bits(self.addr)
    }

    /// Whether `inner` lies inside this prefix (same family, at least as long, same leading
    /// bits).
    pub fn contains(&self, inner: &Prefix) -> bool {
        if self.addr.is_ipv4() != inner.addr.is_ipv4() || inner.len < self.len {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        let shift = 128 - u32::from(self.len);
        (bits(self.addr) >> shift) == (bits(inner.addr) >> shift)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            format!(
                "{s:?} is not an address: give an IPv4 or IPv6 address, optionally with a \
                 prefix length (198.18.0.0/15, 2001:db8::/32)"
            )
        })?;
        let max = family_bits(addr);
        let len = match l {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, len })
    }
}

/// What kind of key an entry has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// TCP 5-tuple.
    Tcp,
    /// UDP 5-tuple.
    Udp,
    /// ICMP echo (IPv4).
    Icmp,
    /// ICMPv6 echo.
    Icmp6,
    /// An ESP SA (destination, SPI).
    Esp,
    /// An ISAKMP/IKE exchange.
    Isakmp,
    /// A TLS session (by a digest of its id).
    TlsSession,
    /// An HTTP session (by a digest of its cookie).
    HttpCookie,
}

impl KeyKind {
    /// The name the views print (`tcp`, `icmp6`, `tls-session`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Tcp => "tcp",
            KeyKind::Udp => "udp",
            KeyKind::Icmp => "icmp",
            KeyKind::Icmp6 => "icmp6",
            KeyKind::Esp => "esp",
            KeyKind::Isakmp => "isakmp",
            KeyKind::TlsSession => "tls-session",
            KeyKind::HttpCookie => "http-cookie",
        }
    }

    /// The IP protocol number (none for application sessions).
    pub fn proto(self) -> Option<u8> {
        match self {
            KeyKind::Tcp => Some(6),
            KeyKind::Udp | KeyKind::Isakmp => Some(17),
            KeyKind::Icmp => Some(1),
            KeyKind::Icmp6 => Some(58),
            KeyKind::Esp => Some(50),
            KeyKind::TlsSession | KeyKind::HttpCookie => None,
        }
    }
}

/// An entry's key as the views show it. Fields a kind has not are `None`; so are wildcards
/// (a card entry's `*`, an address prefix of length 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ViewKey {
    /// The kind.
    pub kind: KeyKind,
    /// The source (initiator) address or prefix.
    pub src: Option<Prefix>,
    /// The destination address or prefix.
    pub dst: Option<Prefix>,
    /// The source port.
    pub sport: Option<u16>,
    /// The destination port.
    pub dport: Option<u16>,
    /// ICMP echo identifier.
    pub ident: Option<u16>,
    /// ESP SPI.
    pub spi: Option<u32>,
    /// ISAKMP initiator cookie.
    pub icookie: Option<u64>,
    /// ISAKMP message id.
    pub msgid: Option<u32>,
    /// Application session digest.
    pub digest: Option<[u8; 16]>,
    /// Card zone (card entries only).
    pub zone: Option<u8>,
}

impl ViewKey {
    /// A key of `kind` with every field empty.
    pub fn empty(kind: KeyKind) -> Self {
        Self {
            kind,
            src: None,
            dst: None,
            sport: None,
            dport: None,
            ident: None,
            spi: None,
            icookie: None,
            msgid: None,
            digest: None,
            zone: None,
        }
    }

    /// The IP protocol number.
    pub fn proto(&self) -> Option<u8> {
        self.kind.proto()
    }

    /// The key of a core entry (common or node-specific table): the source is the
    /// initiator.
    pub fn of_core(key: &crate::core::entry::FlowKey, initiator_is_lo: bool) -> Self {
        use crate::core::entry::{FlowKey, L4Proto};
        match *key {
            FlowKey::Transport { proto, lo, hi } => {
                let (s, d) = if initiator_is_lo { (lo, hi) } else { (hi, lo) };
                let kind = match proto {
                    L4Proto::Tcp => KeyKind::Tcp,
                    L4Proto::Udp => KeyKind::Udp,
                };
                Self {
                    src: Some(Prefix::host(s.addr)),
                    dst: Some(Prefix::host(d.addr)),
                    sport: Some(s.port),
                    dport: Some(d.port),
                    ..Self::empty(kind)
                }
            }
            FlowKey::Icmp { lo, hi, ident } => {
                let (s, d) = if initiator_is_lo { (lo, hi) } else { (hi, lo) };
                let kind = if s.is_ipv6() {
                    KeyKind::Icmp6
                } else {
                    KeyKind::Icmp
                };
                Self {
                    src: Some(Prefix::host(s)),
                    dst: Some(Prefix::host(d)),
                    ident: Some(ident),
                    ..Self::empty(kind)
                }
            }
            FlowKey::Esp { src, dst, spi } => Self {
                src: Some(Prefix::host(src)),
                dst: Some(Prefix::host(dst)),
                spi: Some(spi),
                ..Self::empty(KeyKind::Esp)
            },
            FlowKey::Isakmp {
                lo,
                hi,
                initiator_cookie,
                message_id,
            } => {
                let (s, d) = if initiator_is_lo { (lo, hi) } else { (hi, lo) };
                Self {
                    src: Some(Prefix::host(s)),
                    dst: Some(Prefix::host(d)),
                    icookie: Some(initiator_cookie),
                    msgid: Some(message_id),
                    ..Self::empty(KeyKind::Isakmp)
                }
            }
            FlowKey::TlsSession(d) => Self {
                digest: Some(d.0),
                ..Self::empty(KeyKind::TlsSession)
            },
            FlowKey::HttpCookie(d) => Self {
                digest: Some(d.0),
                ..Self::empty(KeyKind::HttpCookie)
            },
        }
    }

    /// The core table's key of this view key (for a lookup), when it names one exactly:
    /// no wildcard, host addresses. Either direction finds the entry.
    pub fn to_core(&self) -> Option<crate::core::entry::FlowKey> {
        use crate::core::entry::{Endpoint, FlowKey, L4Proto, SessionDigest};
        let host = |p: Option<Prefix>| p.filter(Prefix::is_host).map(|p| p.addr);
        Some(match self.kind {
            KeyKind::Tcp | KeyKind::Udp => {
                let proto = if self.kind == KeyKind::Tcp {
                    L4Proto::Tcp
                } else {
                    L4Proto::Udp
                };
                let s = Endpoint::new(host(self.src)?, self.sport?);
                let d = Endpoint::new(host(self.dst)?, self.dport?);
                FlowKey::transport(proto, s, d).0
            }
            KeyKind::Icmp | KeyKind::Icmp6 => {
                FlowKey::icmp(host(self.src)?, host(self.dst)?, self.ident?).0
            }
            KeyKind::Esp => FlowKey::Esp {
                src: host(self.src)?,
                dst: host(self.dst)?,
                spi: self.spi?,
            },
            KeyKind::Isakmp => {
                let msgid = self.msgid?;
                FlowKey::isakmp(host(self.src)?, host(self.dst)?, self.icookie?, msgid).0
            }
            KeyKind::TlsSession => FlowKey::TlsSession(SessionDigest(self.digest?)),
            KeyKind::HttpCookie => FlowKey::HttpCookie(SessionDigest(self.digest?)),
        })
    }

    /// The key of a card (CAM) entry. A `/0` address is a wildcard (`None`).
    pub fn of_cam(k: &driver::CamKey) -> Self {
        use driver::key::Flow;
        let p = |p: &driver::key::IpPrefix| {
            (!p.is_any()).then(|| Prefix {
                addr: p.addr(),
                len: p.prefix_len(),
            })
        };
        let mut v = match &k.flow {
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
            } => Self {
                src: p(src),
                dst: p(dst),
                sport: *src_port,
                dport: *dst_port,
                ..Self::empty(if matches!(k.flow, Flow::Tcp { .. }) {
                    KeyKind::Tcp
                } else {
                    KeyKind::Udp
                })
            },
            Flow::Icmp { src, dst, id } => Self {
                src: p(src),
                dst: p(dst),
                ident: *id,
                ..Self::empty(if src.addr().is_ipv6() {
                    KeyKind::Icmp6
                } else {
                    KeyKind::Icmp
                })
            },
            Flow::Esp { dst, spi } => Self {
                dst: p(dst),
                spi: *spi,
                ..Self::empty(KeyKind::Esp)
            },
            Flow::Isakmp {
                dst,
                initiator_cookie,
                message_id,
            } => Self {
                dst: p(dst),
                icookie: *initiator_cookie,
                msgid: *message_id,
                ..Self::empty(KeyKind::Isakmp)
            },
        };
        v.zone = k.zone;
        v
    }

    /// Whether `self` (a key as `get` was given it) names the entry key `entry`: every field
    /// equal, except that a key given without `zone=` matches any zone.
    pub fn names(&self, entry: &ViewKey) -> bool {
        let mut e = *entry;
        if self.zone.is_none() {
            e.zone = None;
        }
        *self == e
    }
}

/// `addr:port` with brackets around an IPv6 address, `*` for wildcards (written straight
/// into the formatter: a dump prints a million of them).
fn endpoint(f: &mut fmt::Formatter<'_>, p: Option<Prefix>, port: Option<u16>) -> fmt::Result {
    match p {
        Some(p) if p.addr.is_ipv6() => write!(f, "[{p}]")?,
        Some(p) => write!(f, "{p}")?,
        None => f.write_str("*")?,
    }
    match port {
        Some(n) => write!(f, ":{n}"),
        None => f.write_str(":*"),
    }
}

fn opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "*".to_owned(), |v| v.to_string())
}

fn opt_hex(v: Option<u64>) -> String {
    v.map_or_else(|| "*".to_owned(), |v| format!("0x{v:x}"))
}

impl fmt::Display for ViewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.kind.name();
        match self.kind {
            KeyKind::Tcp | KeyKind::Udp => {
                write!(f, "{name} ")?;
                endpoint(f, self.src, self.sport)?;
                f.write_str(" -> ")?;
                endpoint(f, self.dst, self.dport)?;
            }
            KeyKind::Icmp | KeyKind::Icmp6 => write!(
                f,
                "{name} {} -> {} id={}",
                opt(self.src),
                opt(self.dst),
                opt(self.ident)
            )?,
            KeyKind::Esp => {
                f.write_str("esp ")?;
                if let Some(s) = self.src {
                    write!(f, "{s} ")?;
                }
                write!(
                    f,
                    "-> {} spi={}",
                    opt(self.dst),
                    self.spi
                        .map_or_else(|| "*".to_owned(), |s| format!("0x{s:08x}"))
                )?;
            }
            KeyKind::Isakmp => {
                f.write_str("isakmp")?;
                if let Some(s) = self.src {
                    write!(f, " {s}")?;
                }
                if let Some(d) = self.dst {
                    write!(f, " -> {d}")?;
                }
                write!(
                    f,
                    " icookie={} msgid={}",
                    opt_hex(self.icookie),
                    opt_hex(self.msgid.map(u64::from))
                )?;
            }
            KeyKind::TlsSession | KeyKind::HttpCookie => write!(
                f,
                "{name} {}",
                self.digest.map_or_else(|| "*".to_owned(), hex::encode)
            )?,
        }
        if let Some(z) = self.zone {
            write!(f, " zone={z}")?;
        }
        Ok(())
    }
}

/// The key syntax, for error messages.
pub const KEY_SYNTAX: &str = "PROTO SRC:SPORT -> DST:DPORT (tcp, udp; IPv6 as \
     [2001:db8::1]:80), icmp|icmp6 SRC -> DST id=N, esp [SRC] -> DST spi=0xN, \
     isakmp [SRC] [-> DST] icookie=0xN msgid=0xN, tls-session|http-cookie HEX; `*` for a \
     wildcard, an optional zone=N";

fn key_err(text: &str, why: &str) -> String {
    format!("key {text:?}: {why}; write it as dump prints it: {KEY_SYNTAX}")
}

fn parse_addr(s: &str, text: &str) -> Result<Option<Prefix>, String> {
    if s == "*" {
        return Ok(None);
    }
    s.parse::<Prefix>().map(Some).map_err(|e| key_err(text, &e))
}

fn parse_num<T: FromStr>(s: &str, what: &str, text: &str) -> Result<Option<T>, String> {
    if s == "*" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| key_err(text, &format!("{what} {s:?} is not a number in range")))
}

fn parse_hex_num(s: &str, what: &str, text: &str) -> Result<Option<u64>, String> {
    if s == "*" {
        return Ok(None);
    }
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map(Some).map_err(|_| {
        key_err(
            text,
            &format!("{what} {s:?} is not a number (0x... or decimal)"),
        )
    })
}

fn parse_endpoint(s: &str, text: &str) -> Result<(Option<Prefix>, Option<u16>), String> {
    let (a, p) = if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest
            .split_once("]:")
            .ok_or_else(|| key_err(text, &format!("{s:?}: an IPv6 endpoint is [ADDR]:PORT")))?;
        (a, p)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| key_err(text, &format!("{s:?} is not ADDR:PORT")))?
    };
    Ok((parse_addr(a, text)?, parse_num(p, "port", text)?))
}

impl FromStr for ViewKey {
    type Err = String;
    /// Reads a key as the views print it (see the module documentation).
    fn from_str(text: &str) -> Result<Self, String> {
        if text.len() > 512 {
            return Err("key: longer than 512 bytes; no key is that long".to_owned());
        }
        let mut words: Vec<&str> = text.split_whitespace().collect();
        let mut zone = None;
        if let Some(z) = words.last().and_then(|w| w.strip_prefix("zone=")) {
            zone = parse_num::<u8>(z, "zone", text)?;
            words.pop();
        }
        let Some((&kind, rest)) = words.split_first() else {
            return Err(key_err(text, "empty"));
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "tcp" => KeyKind::Tcp,
            "udp" => KeyKind::Udp,
            "icmp" => KeyKind::Icmp,
            "icmp6" | "icmpv6" => KeyKind::Icmp6,
            "esp" => KeyKind::Esp,
            "isakmp" => KeyKind::Isakmp,
            "tls-session" => KeyKind::TlsSession,
            "http-cookie" => KeyKind::HttpCookie,
            k => return Err(key_err(text, &format!("unknown protocol {k:?}"))),
        };
        let arrow = |w: &str| w == "->" || w == ">";
        let kv = |words: &[&str], name: &str| -> Option<String> {
            words
                .iter()
                .find_map(|w| w.strip_prefix(name).map(str::to_owned))
        };
        let mut k = ViewKey::empty(kind);
        k.zone = zone;
        match kind {
            KeyKind::Tcp | KeyKind::Udp => {
                let [s, a, d] = rest else {
                    return Err(key_err(text, "expected SRC:SPORT -> DST:DPORT"));
                };
                if !arrow(a) {
                    return Err(key_err(text, "expected -> between source and destination"));
                }
                (k.src, k.sport) = parse_endpoint(s, text)?;
                (k.dst, k.dport) = parse_endpoint(d, text)?;
            }
            KeyKind::Icmp | KeyKind::Icmp6 => {
                let [s, a, d, id] = rest else {
                    return Err(key_err(text, "expected SRC -> DST id=N"));
                };
                if !arrow(a) {
                    return Err(key_err(text, "expected -> between source and destination"));
                }
                k.src = parse_addr(s, text)?;
                k.dst = parse_addr(d, text)?;
                let id = id
                    .strip_prefix("id=")
                    .ok_or_else(|| key_err(text, "expected id=N after the addresses"))?;
                k.ident = parse_num(id, "id", text)?;
            }
            KeyKind::Esp => {
                let mut r = rest;
                if let [s, a, ..] = r {
                    if !arrow(s) && arrow(a) {
                        k.src = parse_addr(s, text)?;
                        r = &r[1..];
                    }
                }
                let [a, d, spi] = r else {
                    return Err(key_err(text, "expected [SRC] -> DST spi=0xN"));
                };
                if !arrow(a) {
                    return Err(key_err(text, "expected -> before the destination"));
                }
                k.dst = parse_addr(d, text)?;
                let spi = spi
                    .strip_prefix("spi=")
                    .ok_or_else(|| key_err(text, "expected spi=0xN after the destination"))?;
                k.spi = parse_hex_num(spi, "spi", text)?
                    .map(|v| u32::try_from(v).map_err(|_| key_err(text, "spi is a 32-bit number")))
                    .transpose()?;
            }
            KeyKind::Isakmp => {
                let mut r = rest;
                if let [s, a, ..] = r {
                    if !arrow(s) && arrow(a) {
                        k.src = parse_addr(s, text)?;
                        r = &r[1..];
                    }
                }
                if let [a, d, more @ ..] = r {
                    if arrow(a) {
                        k.dst = parse_addr(d, text)?;
                        r = more;
                    }
                }
                if r.len() != 2 {
                    return Err(key_err(text, "expected icookie=0xN msgid=0xN"));
                }
                let c = kv(r, "icookie=").ok_or_else(|| key_err(text, "missing icookie="))?;
                let m = kv(r, "msgid=").ok_or_else(|| key_err(text, "missing msgid="))?;
                k.icookie = parse_hex_num(&c, "icookie", text)?;
                k.msgid = parse_hex_num(&m, "msgid", text)?
                    .map(|v| {
                        u32::try_from(v).map_err(|_| key_err(text, "msgid is a 32-bit number"))
                    })
                    .transpose()?;
            }
            KeyKind::TlsSession | KeyKind::HttpCookie => {
                let [d] = rest else {
                    return Err(key_err(text, "expected 32 hex digits"));
                };
                if *d == "*" {
                    return Ok(k);
                }
                let mut digest = [0u8; 16];
                hex::decode_to_slice(d, &mut digest)
                    .map_err(|_| key_err(text, "the digest is 32 hex digits"))?;
                k.digest = Some(digest);
            }
        }
        Ok(k)
    }
}

/// The state kinds of common-table and node-specific entries (a core entry's protocol
/// state), as the views name them.
pub const CORE_STATES: [&str; 13] = [
    "syn-sent",
    "syn-received",
    "established",
    "fin-wait",
    "closing",
    "closed",
    "udp-unreplied",
    "udp-replied",
    "icmp-request",
    "icmp-replied",
    "ike",
    "esp-sa",
    "session",
];

/// The state kinds of card (CAM) entries: the result word's `est` flag set, or not.
pub const CAM_STATES: [&str; 2] = ["established", "new"];

/// The state kind of a core entry's protocol state.
pub fn core_state(s: crate::core::entry::ConnState) -> &'static str {
    use crate::core::entry::ConnState as S;
    match s {
        S::SynSent => "syn-sent",
        S::SynReceived => "syn-received",
        S::Established => "established",
        S::FinWait => "fin-wait",
        S::Closing => "closing",
        S::Closed => "closed",
        S::UdpUnreplied => "udp-unreplied",
        S::UdpReplied => "udp-replied",
        S::IcmpRequest => "icmp-request",
        S::IcmpReplied => "icmp-replied",
        S::Ike => "ike",
        S::EspSa => "esp-sa",
        S::Session => "session",
    }
}

/// The state kind of a card entry: `established` when its result has the `est` flag.
pub fn cam_state(r: &driver::ResultWord) -> &'static str {
    if r.flags.has(driver::key::ResultFlags::ESTABLISHED) {
        "established"
    } else {
        "new"
    }
}

/// The action of a core entry, as the views name it.
pub fn core_action(a: crate::core::entry::Action) -> &'static str {
    use crate::core::entry::Action as A;
    match a {
        A::Allow => "allow",
        A::Tunnel => "tunnel",
        A::Drop => "drop",
        A::Reject => "reject",
    }
}

/// What a filter sees of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView {
    /// The distribution identifier.
    pub did: u16,
    /// The state kind ([`CORE_STATES`] or [`CAM_STATES`]).
    pub state: &'static str,
    /// The key.
    pub key: ViewKey,
}

/// `--proto`: a name or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoSel {
    /// `icmp`: ICMP and ICMPv6.
    AnyIcmp,
    /// One IP protocol number.
    Number(u8),
}

impl ProtoSel {
    fn matches(self, p: Option<u8>) -> bool {
        match self {
            ProtoSel::AnyIcmp => matches!(p, Some(1 | 58)),
            ProtoSel::Number(n) => p == Some(n),
        }
    }
}

impl fmt::Display for ProtoSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoSel::AnyIcmp => f.write_str("icmp"),
            ProtoSel::Number(6) => f.write_str("tcp"),
            ProtoSel::Number(17) => f.write_str("udp"),
            ProtoSel::Number(50) => f.write_str("esp"),
            ProtoSel::Number(58) => f.write_str("icmp6"),
            ProtoSel::Number(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for ProtoSel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "tcp" => ProtoSel::Number(6),
            "udp" => ProtoSel::Number(17),
            "icmp" => ProtoSel::AnyIcmp,
            "icmp6" | "icmpv6" => ProtoSel::Number(58),
            "esp" => ProtoSel::Number(50),
            n => ProtoSel::Number(n.parse().map_err(|_| {
                format!(
                    "{s:?} is not a protocol: give tcp, udp, icmp, icmp6, esp or a protocol \
                     number 0-255"
                )
            })?),
        })
    }
}

/// Parses `--state KIND` (any kind of [`CORE_STATES`] or [`CAM_STATES`]).
///
/// # Errors
/// An unknown kind, with the list.
pub fn parse_state(s: &str) -> Result<&'static str, String> {
    let s = s.to_ascii_lowercase().replace('_', "-");
    CORE_STATES
        .iter()
        .chain(CAM_STATES.iter())
        .find(|k| **k == s)
        .copied()
        .ok_or_else(|| {
            format!(
                "{s:?} is not a state kind: give one of {} (table entries) or {} (card \
                 entries)",
                CORE_STATES.join(", "),
                CAM_STATES.join(", ")
            )
        })
}

/// Parses `--did N` (0 to 4095).
///
/// # Errors
/// Not a number in range.
pub fn parse_did(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|d| *d < 4096)
        .ok_or_else(|| format!("{s:?} is not an identifier: give a number from 0 to 4095"))
}

/// Parses a port (0 to 65535).
///
/// # Errors
/// Not a number in range.
pub fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .map_err(|_| format!("{s:?} is not a port: give a number from 0 to 65535"))
}

/// A filter over entries: every given field must match (see the module documentation).
/// On the control socket it is an object of the same names, every field optional:
/// `{"src":"198.18.0.0/15","proto":"tcp","dport":80,"state":"established","did":7}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Source address or prefix.
    pub src: Option<Prefix>,
    /// Destination address or prefix.
    pub dst: Option<Prefix>,
    /// IP protocol.
    pub proto: Option<ProtoSel>,
    /// Source port.
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// Either port.
    pub port: Option<u16>,
    /// State kind.
    pub state: Option<&'static str>,
    /// Identifier.
    pub did: Option<u16>,
}

/// [`Filter`] on the wire.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    did: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<String>,
}

fn bounded(s: &str, what: &str) -> Result<(), String> {
    if s.len() > 64 {
        return Err(format!("filter {what}: longer than 64 bytes"));
    }
    Ok(())
}

impl TryFrom<FilterWire> for Filter {
    type Error = String;
    fn try_from(w: FilterWire) -> Result<Self, String> {
        let pfx = |s: &Option<String>, what: &str| -> Result<Option<Prefix>, String> {
            s.as_deref()
                .map(|s| {
                    bounded(s, what)?;
                    s.parse().map_err(|e| format!("filter {what}: {e}"))
                })
                .transpose()
        };
        if let Some(d) = w.did.filter(|d| *d >= 4096) {
            return Err(format!("filter did: {d} is not an identifier (0 to 4095)"));
        }
        Ok(Filter {
            src: pfx(&w.src, "src")?,
            dst: pfx(&w.dst, "dst")?,
            proto: w
                .proto
                .as_deref()
                .map(|s| {
                    bounded(s, "proto")?;
                    s.parse().map_err(|e| format!("filter proto: {e}"))
                })
                .transpose()?,
            sport: w.sport,
            dport: w.dport,
            port: w.port,
            state: w
                .state
                .as_deref()
                .map(|s| {
                    bounded(s, "state")?;
                    parse_state(s).map_err(|e| format!("filter state: {e}"))
                })
                .transpose()?,
            did: w.did,
        })
    }
}

impl From<Filter> for FilterWire {
    fn from(f: Filter) -> Self {
        FilterWire {
            did: f.did,
            dport: f.dport,
            dst: f.dst.map(|p| p.to_string()),
            port: f.port,
            proto: f.proto.map(|p| p.to_string()),
            sport: f.sport,
            src: f.src.map(|p| p.to_string()),
            state: f.state.map(str::to_owned),
        }
    }
}

impl Serialize for Filter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        FilterWire::from(*self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = FilterWire::deserialize(d)?;
        Filter::try_from(w).map_err(serde::de::Error::custom)
    }
}

fn addr_matches(filter: Option<Prefix>, entry: Option<Prefix>) -> bool {
    match (filter, entry) {
        (None, _) => true,
        (Some(f), Some(e)) => f.contains(&e),
        // a wildcard address: only a filter that covers every address
        (Some(f), None) => f.len == 0,
    }
}

fn port_matches(filter: Option<u16>, entry: Option<u16>) -> bool {
    filter.is_none() || (entry.is_some() && filter == entry)
}

impl Filter {
    /// Whether no field is given (every entry matches).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether `e` passes every given field.
    pub fn matches(&self, e: &EntryView) -> bool {
        let k = &e.key;
        self.did.is_none_or(|d| d == e.did)
            && self.state.is_none_or(|s| s == e.state)
            && self.proto.is_none_or(|p| p.matches(k.proto()))
            && addr_matches(self.src, k.src)
            && addr_matches(self.dst, k.dst)
            && port_matches(self.sport, k.sport)
            && port_matches(self.dport, k.dport)
            && self
                .port
                .is_none_or(|p| k.sport == Some(p) || k.dport == Some(p))
    }

    /// Whether the filter can match only entries of identifier `d` (for walks that skip the
    /// others).
    pub fn did_only(&self) -> Option<u16> {
        self.did
    }

    /// The filter as `--src ... --dport ...` words (for messages); empty without one.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("--{k} {v}"));
            }
        };
        add("src", self.src.map(|p| p.to_string()));
        add("dst", self.dst.map(|p| p.to_string()));
        add("proto", self.proto.map(|p| p.to_string()));
        add("sport", self.sport.map(|p| p.to_string()));
        add("dport", self.dport.map(|p| p.to_string()));
        add("port", self.port.map(|p| p.to_string()));
        add("state", self.state.map(str::to_owned));
        add("did", self.did.map(|p| p.to_string()));
        parts.join(" ")
    }
}

/// The filter flags of `hwctl dump|count` and `clusterd ctl dump|count|events`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Only entries whose source (initiator) address is ADDR or inside ADDR/PREFIX (IPv4 or
    /// IPv6).
    #[arg(long, value_name = "ADDR[/PREFIX]", value_parser = Prefix::from_str)]
    pub src: Option<Prefix>,
    /// Only entries whose destination address is ADDR or inside ADDR/PREFIX.
    #[arg(long, value_name = "ADDR[/PREFIX]", value_parser = Prefix::from_str)]
    pub dst: Option<Prefix>,
    /// Only entries of this IP protocol: tcp, udp, icmp (ICMP and ICMPv6), icmp6, esp, or a
    /// number.
    #[arg(long, value_name = "PROTO", value_parser = ProtoSel::from_str)]
    pub proto: Option<ProtoSel>,
    /// Only entries with this source port.
    #[arg(long, value_name = "N", value_parser = parse_port)]
    pub sport: Option<u16>,
    /// Only entries with this destination port.
    #[arg(long, value_name = "N", value_parser = parse_port)]
    pub dport: Option<u16>,
    /// Only entries with this port on either side.
    #[arg(long, value_name = "N", value_parser = parse_port)]
    pub port: Option<u16>,
    /// Only entries in this state kind (established, syn-sent, udp-replied, ...; card
    /// entries: established or new; docs/vocabulary.md).
    #[arg(long, value_name = "KIND", value_parser = parse_state)]
    pub state: Option<&'static str>,
    /// Only entries of this distribution identifier (0-4095).
    #[arg(long, value_name = "N", value_parser = parse_did)]
    pub did: Option<u16>,
}

impl FilterArgs {
    /// The filter of the flags.
    pub fn filter(&self) -> Filter {
        Filter {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport: self.sport,
            dport: self.dport,
            port: self.port,
            state: self.state,
            did: self.did,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> ViewKey {
        ViewKey {
            src: Some(v4(src)),
            dst: Some(v4(dst)),
            sport: Some(sport),
            dport: Some(dport),
            ..ViewKey::empty(KeyKind::Tcp)
        }
    }

    #[test]
    fn keys_print_and_parse_back() {
        let cases = [
            "tcp 198.18.0.1:1234 -> 198.18.1.1:80",
            "udp [2001:db8::1]:5353 -> [2001:db8::2]:53",
            "udp 10.0.0.0/8:* -> 192.0.2.1:53 zone=3",
            "tcp *:* -> [2001:db8::/32]:22",
            "icmp 10.0.0.1 -> 10.0.0.2 id=7",
            "icmp6 2001:db8::1 -> 2001:db8::2 id=*",
            "esp -> 203.0.113.1 spi=0x00001234",
            "esp 198.51.100.7 -> 203.0.113.1 spi=0x00001234",
            "esp -> * spi=*",
            "isakmp 2001:db8::9 -> 2001:db8::1 icookie=0x1 msgid=0x0",
            "isakmp -> 192.0.2.1 icookie=0x1 msgid=0x0",
            "isakmp icookie=0xdeadbeef msgid=0x5",
            "tls-session 00112233445566778899aabbccddeeff",
        ];
        for c in cases {
            let k: ViewKey = c.parse().unwrap_or_else(|e| panic!("{c}: {e}"));
            assert_eq!(k.to_string(), c);
        }
        // the card's old arrow is read too
        let k: ViewKey = "tcp 1.2.3.4:5 > 6.7.8.9:10".parse().unwrap();
        assert_eq!(k, tcp("1.2.3.4", 5, "6.7.8.9", 10));
    }

    #[test]
    fn bad_keys_say_what_and_how() {
        for (text, want) in [
            ("", "empty"),
            ("sctp 1.2.3.4:5 -> 6.7.8.9:10", "unknown protocol"),
            ("tcp 1.2.3.4:5 6.7.8.9:10", "expected"),
            ("tcp 1.2.3.4:5 -> 6.7.8.9", "not ADDR:PORT"),
            ("tcp 1.2.3.400:5 -> 6.7.8.9:10", "not an address"),
            ("tcp 1.2.3.4:70000 -> 6.7.8.9:10", "port"),
            ("esp -> 1.2.3.4 spi=0x1ffffffff", "32-bit"),
            ("tls-session abc", "32 hex digits"),
        ] {
            let e = text.parse::<ViewKey>().unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains("write it as dump prints it"), "{e}");
        }
        assert!("x".repeat(600).parse::<ViewKey>().is_err());
    }

    #[test]
    fn core_keys_round_trip_to_lookups() {
        use crate::core::entry::{Endpoint, FlowKey, L4Proto};
        let a = Endpoint::new("198.18.0.1".parse().unwrap(), 1234);
        let b = Endpoint::new("198.18.1.1".parse().unwrap(), 80);
        // b < a? canonical order puts the smaller first; the initiator is a
        let (key, a_is_lo) = FlowKey::transport(L4Proto::Tcp, a, b);
        let v = ViewKey::of_core(&key, a_is_lo);
        assert_eq!(v.to_string(), "tcp 198.18.0.1:1234 -> 198.18.1.1:80");
        assert_eq!(v.to_core(), Some(key));
        // the other direction names the same entry
        let back: ViewKey = "tcp 198.18.1.1:80 -> 198.18.0.1:1234".parse().unwrap();
        assert_eq!(back.to_core(), Some(key));
        // a wildcard names no single entry
        let w: ViewKey = "tcp 198.18.1.1:* -> 198.18.0.1:1234".parse().unwrap();
        assert_eq!(w.to_core(), None);
        // ESP and ISAKMP keys carry their peers: printed, read back, looked up
        let esp = FlowKey::Esp {
            src: b.addr,
            dst: a.addr,
            spi: 0x1234,
        };
        let v = ViewKey::of_core(&esp, true);
        assert_eq!(v.to_string(), "esp 198.18.1.1 -> 198.18.0.1 spi=0x00001234");
        assert_eq!(
            v.to_string().parse::<ViewKey>().unwrap().to_core(),
            Some(esp)
        );
        let (ike, b_is_lo) = FlowKey::isakmp(b.addr, a.addr, 0xab, 0);
        let v = ViewKey::of_core(&ike, b_is_lo);
        assert_eq!(
            v.to_string(),
            "isakmp 198.18.1.1 -> 198.18.0.1 icookie=0xab msgid=0x0"
        );
        let back: ViewKey = "isakmp 198.18.0.1 -> 198.18.1.1 icookie=0xab msgid=0x0"
            .parse()
            .unwrap();
        assert_eq!(back.to_core(), Some(ike));
        // without its peers (as the card shows it) it names no core entry
        let card: ViewKey = "esp -> 198.18.0.1 spi=0x1234".parse().unwrap();
        assert_eq!(card.to_core(), None);
    }

    #[test]
    fn filters_match_fields() {
        let e = EntryView {
            did: 7,
            state: "established",
            key: tcp("198.18.0.1", 1234, "198.18.1.1", 80),
        };
        let f = |s: &str| -> Filter {
            use clap::Parser;
            #[derive(Parser)]
            struct T {
                #[command(flatten)]
                f: FilterArgs,
            }
            let mut args = vec!["t"];
            args.extend(s.split_whitespace());
            T::try_parse_from(args).unwrap().f.filter()
        };
        for (s, want) in [
            ("", true),
            ("--src 198.18.0.0/15", true),
            ("--src 198.18.1.0/24", false),
            ("--dst 198.18.1.1", true),
            ("--src 2001:db8::/32", false),
            ("--proto tcp", true),
            ("--proto udp", false),
            ("--proto 6", true),
            ("--sport 1234 --dport 80", true),
            ("--sport 80", false),
            ("--port 80", true),
            ("--port 1234", true),
            ("--port 81", false),
            ("--state established", true),
            ("--state syn-sent", false),
            ("--did 7", true),
            ("--did 8", false),
            (
                "--src 0.0.0.0/0 --proto tcp --did 7 --state ESTABLISHED",
                true,
            ),
        ] {
            assert_eq!(f(s).matches(&e), want, "{s}");
        }
        // a wildcard port matches no port filter; a wildcard address only /0
        let mut w = e;
        w.key.sport = None;
        w.key.src = None;
        assert!(!f("--sport 1234").matches(&w));
        assert!(!f("--src 198.18.0.0/15").matches(&w));
        assert!(f("--src 0.0.0.0/0").matches(&w));
        // icmp matches both families
        let i = EntryView {
            key: ViewKey::empty(KeyKind::Icmp6),
            ..e
        };
        assert!(f("--proto icmp").matches(&i));
        assert!(!f("--proto 1").matches(&i));
    }

    #[test]
    fn bad_filter_flags_are_refused_clearly() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct T {
            #[command(flatten)]
            f: FilterArgs,
        }
        for (args, want) in [
            (&["--src", "10.0.0.300"][..], "not an address"),
            (&["--src", "10.0.0.0/33"], "prefix length must be 0 to 32"),
            (&["--dst", "2001:db8::/129"], "0 to 128"),
            (&["--proto", "sctp"], "not a protocol"),
            (&["--proto", "256"], "not a protocol"),
            (&["--sport", "65536"], "not a port"),
            (&["--state", "open"], "not a state kind"),
            (&["--did", "4096"], "0 to 4095"),
        ] {
            let mut v = vec!["t"];
            v.extend(args);
            let e = T::try_parse_from(v).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn filters_cross_the_wire() {
        let f = Filter {
            src: Some(v4("198.18.0.0/15")),
            proto: Some(ProtoSel::AnyIcmp),
            dport: Some(80),
            state: Some("established"),
            did: Some(7),
            ..Filter::default()
        };
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(
            j,
            r#"{"did":7,"dport":80,"proto":"icmp","src":"198.18.0.0/15","state":"established"}"#
        );
        assert_eq!(serde_json::from_str::<Filter>(&j).unwrap(), f);
        for bad in [
            r#"{"src":"nowhere"}"#,
            r#"{"did":5000}"#,
            r#"{"state":"open"}"#,
            r#"{"colour":"red"}"#,
            r#"{"sport":-1}"#,
        ] {
            assert!(serde_json::from_str::<Filter>(bad).is_err(), "{bad}");
        }
        let long = format!(r#"{{"src":"{}"}}"#, "1".repeat(100));
        let e = serde_json::from_str::<Filter>(&long)
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 64"), "{e}");
    }

    /// A bit of an address, most significant first, by family.
    fn bit(a: IpAddr, i: u8) -> bool {
        match a {
            IpAddr::V4(v) => v.to_bits() >> (31 - i) & 1 == 1,
            IpAddr::V6(v) => v.to_bits() >> (127 - i) & 1 == 1,
        }
    }

    /// The brute-force reading of "the entry's address lies in the filter's prefix".
    fn brute_in(f: Prefix, e: Option<Prefix>) -> bool {
        match e {
            None => f.len == 0,
            Some(e) => {
                e.addr.is_ipv4() == f.addr.is_ipv4()
                    && e.len >= f.len
                    && (0..f.len).all(|i| bit(e.addr, i) == bit(f.addr, i))
            }
        }
    }

    fn brute(f: &Filter, e: &EntryView) -> bool {
        let k = &e.key;
        let mut ok = true;
        if let Some(s) = f.src {
            ok &= brute_in(s, k.src);
        }
        if let Some(d) = f.dst {
            ok &= brute_in(d, k.dst);
        }
        if let Some(p) = f.proto {
            ok &= match p {
                ProtoSel::AnyIcmp => matches!(k.kind, KeyKind::Icmp | KeyKind::Icmp6),
                ProtoSel::Number(n) => k.kind.proto() == Some(n),
            };
        }
        if let Some(p) = f.sport {
            ok &= k.sport == Some(p);
        }
        if let Some(p) = f.dport {
            ok &= k.dport == Some(p);
        }
        if let Some(p) = f.port {
            ok &= k.sport == Some(p) || k.dport == Some(p);
        }
        if let Some(s) = f.state {
            ok &= s == e.state;
        }
        if let Some(d) = f.did {
            ok &= d == e.did;
        }
        ok
    }

    /// Addresses from a small pool so that filters and entries often overlap.
    fn addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u32..4, any::<u8>()).prop_map(|(a, b)| IpAddr::V4(std::net::Ipv4Addr::new(
                198,
                18 + a as u8,
                b & 3,
                b
            ))),
            (0u16..3, any::<u16>()).prop_map(|(a, b)| IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001,
                0xdb8,
                a,
                0,
                0,
                0,
                0,
                b & 7
            ))),
        ]
    }

    fn prefix() -> impl Strategy<Value = Prefix> {
        (addr(), 0u8..=128).prop_map(|(a, l)| Prefix {
            addr: a,
            len: l.min(family_bits(a)),
        })
    }

    fn port() -> impl Strategy<Value = Option<u16>> {
        proptest::option::of(prop_oneof![Just(80u16), Just(443), 1000u16..1004])
    }

    fn view() -> impl Strategy<Value = EntryView> {
        let kind = prop_oneof![
            Just(KeyKind::Tcp),
            Just(KeyKind::Udp),
            Just(KeyKind::Icmp),
            Just(KeyKind::Icmp6),
            Just(KeyKind::Esp),
            Just(KeyKind::TlsSession),
        ];
        (
            kind,
            proptest::option::of(prefix()),
            proptest::option::of(prefix()),
            port(),
            port(),
            0u16..4,
            proptest::sample::select(&CORE_STATES[..4]),
        )
            .prop_map(|(kind, src, dst, sport, dport, did, state)| EntryView {
                did,
                state,
                key: ViewKey {
                    src,
                    dst,
                    sport,
                    dport,
                    ..ViewKey::empty(kind)
                },
            })
    }

    fn filter() -> impl Strategy<Value = Filter> {
        (
            proptest::option::of(prefix()),
            proptest::option::of(prefix()),
            proptest::option::of(prop_oneof![
                Just(ProtoSel::AnyIcmp),
                Just(ProtoSel::Number(6)),
                Just(ProtoSel::Number(17)),
                Just(ProtoSel::Number(50)),
                Just(ProtoSel::Number(58)),
            ]),
            port(),
            port(),
            port(),
            proptest::option::of(proptest::sample::select(&CORE_STATES[..4])),
            proptest::option::of(0u16..4),
        )
            .prop_map(|(src, dst, proto, sport, dport, port, state, did)| Filter {
                src,
                dst,
                proto,
                sport,
                dport,
                port,
                state,
                did,
            })
    }

    proptest! {
        #[test]
        fn filter_agrees_with_brute_force(f in filter(), e in view()) {
            prop_assert_eq!(f.matches(&e), brute(&f, &e));
        }

        #[test]
        fn filters_and_keys_round_trip(f in filter(), e in view()) {
            let j = serde_json::to_string(&f).unwrap();
            prop_assert_eq!(serde_json::from_str::<Filter>(&j).unwrap(), f);
            let text = e.key.to_string();
            let back: ViewKey = text.parse().unwrap();
            // what a kind has not is not printed, so compare what is
            prop_assert_eq!(back.to_string(), text);
        }
    }
}
