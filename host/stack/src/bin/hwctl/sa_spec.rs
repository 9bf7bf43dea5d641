//! The `--sa` string of `hwctl esp`:
//!
//! ```text
//! spi=0x87654321,dst=201.25.64.1,alg=aes-gcm-128|aes-gcm-256,key=HEX,salt=HEX
//!     [,icv=8|12|16][,esn][,mode=tunnel|transport][,seq=N][,src=IP]
//! ```
//!
//! `alg` also takes `aes-gmac-128|aes-gmac-256` (RFC 4543, authentication
//! only). `seq=N` is the sequence number of the SA's first packet in the
//! file (default 1): an ESN SA captured in mid-life needs it to infer the
//! high 32 bits. `src=IP` is the outer source address that `esp encrypt`
//! writes in tunnel mode (default: the inner packet's source).
//!
//! The parse is strict: every field at most once, no unknown fields, no empty
//! fields; every error names the field. Key and salt values never appear in
//! an error, in `Debug` output or anywhere else: they go straight into a
//! zeroizing buffer and then into [`SaKey`], which wipes itself on drop.

use std::fmt;
use std::net::IpAddr;

use driver::esp::{Cipher, Direction, IcvLen, Mode, SaConfig, SaKey, Spi};
use zeroize::Zeroizing;

/// What the grammar is, for error messages.
pub const SA_GRAMMAR: &str =
    "spi=0x87654321,dst=IP,alg=aes-gcm-128|aes-gcm-256,key=@FILE|-,salt=HEX\
[,icv=8|12|16][,esn][,mode=tunnel|transport][,seq=N][,src=IP]";

/// A parsed `--sa` string. `Debug` never shows the key.
#[derive(Clone)]
pub struct SaSpec {
    /// SPI.
    pub spi: Spi,
    /// Destination address of the SA (the outer destination on the wire).
    pub dst: IpAddr,
    /// Outer source for tunnel-mode encryption, if given.
    pub src: Option<IpAddr>,
    /// AES-GCM or AES-GMAC.
    pub cipher: Cipher,
    /// Key and salt.
    pub key: SaKey,
    /// ICV length.
    pub icv: IcvLen,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Tunnel or transport.
    pub mode: Mode,
    /// Sequence number of the first packet (at least 1).
    pub first_seq: u64,
}

impl fmt::Debug for SaSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaSpec")
            .field("spi", &self.spi)
            .field("dst", &self.dst)
            .field("cipher", &self.cipher)
            .field("key", &self.key)
            .field("icv", &self.icv)
            .field("esn", &self.esn)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl SaSpec {
    /// The SA's configuration for `direction`.
    pub fn config(&self, direction: Direction) -> SaConfig {
        SaConfig {
            spi: self.spi,
            direction,
            mode: self.mode,
            cipher: self.cipher,
            key: self.key.clone(),
            icv: self.icv,
            esn: self.esn,
            dst: Some(self.dst),
            did: driver::DistributionId(0),
        }
    }
}

/// Why an SA string did not parse. Never contains key or salt material.
#[derive(Debug)]
pub struct SaError {
    /// The field at fault (or `sa` for the string as a whole).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for SaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad --sa: field {}: {} (expected {SA_GRAMMAR})",
            self.field, self.reason
        )
    }
}

impl std::error::Error for SaError {}

fn err(field: &str, reason: impl Into<String>) -> SaError {
    SaError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Decodes hex into a zeroizing buffer. The error says what is wrong without
/// quoting the text.
fn hex(field: &str, s: &str) -> Result<Zeroizing<Vec<u8>>, SaError> {
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    // Decoded straight into the zeroizing buffer: no plain copy of the bytes.
    let mut out = Zeroizing::new(vec![0u8; s.len() / 2]);
    hex::decode_to_slice(s, &mut out[..]).map_err(|e| match e {
        hex::FromHexError::InvalidHexCharacter { index, .. } => {
            err(field, format!("not a hex digit at position {}", index + 1))
        }
        hex::FromHexError::OddLength | hex::FromHexError::InvalidStringLength => {
            err(field, format!("odd number of hex digits ({})", s.len()))
        }
    })?;
    Ok(out)
}

fn number(field: &str, v: &str) -> Result<u64, SaError> {
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse::<u64>(),
    };
    parsed.map_err(|_| err(field, format!("{v:?} is not a number (decimal or 0x hex)")))
}

/// Parses one SA string.
///
/// # Errors
/// [`SaError`] naming the field.
pub fn parse(s: &str) -> Result<SaSpec, SaError> {
    let mut spi = None;
    let mut dst = None;
    let mut src = None;
    let mut alg: Option<(Cipher, usize)> = None;
    let mut key: Option<Zeroizing<Vec<u8>>> = None;
    let mut salt: Option<Zeroizing<Vec<u8>>> = None;
    let mut icv = None;
    let mut esn = None;
    let mut mode = None;
    let mut first_seq = None;
    if s.trim().is_empty() {
        return Err(err("sa", "empty"));
    }
    for part in s.split(',') {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (part.trim(), None),
        };
        if name.is_empty() {
            return Err(err(
                "sa",
                "empty field (two commas in a row, or a trailing comma?)",
            ));
        }
        let val = |what: &str| -> Result<&str, SaError> {
            match value {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(err(name, format!("needs a value: {name}={what}"))),
            }
        };
        macro_rules! once {
            ($slot:ident, $v:expr) => {{
                if $slot.is_some() {
                    return Err(err(name, "given twice"));
                }
                $slot = Some($v);
            }};
        }
        match name {
            "spi" => {
                let v = val("0x87654321")?;
                let n = number("spi", v)?;
                let n = u32::try_from(n)
                    .map_err(|_| err("spi", format!("{v} does not fit in 32 bits")))?;
                once!(spi, Spi(n));
            }
            "dst" | "src" => {
                let v = val("an IPv4 or IPv6 address")?;
                let a: IpAddr = v
                    .parse()
                    .map_err(|_| err(name, format!("{v:?} is not an IPv4 or IPv6 address")))?;
                if name == "dst" {
                    once!(dst, a);
                } else {
                    once!(src, a);
                }
            }
            "alg" => {
                let v = val("aes-gcm-128 or aes-gcm-256")?;
                let a =
                    match v.to_ascii_lowercase().as_str() {
                        "aes-gcm-128" | "aes128-gcm16" | "rfc4106(gcm(aes))-128" => {
                            (Cipher::AesGcm, 16)
                        }
                        "aes-gcm-256" | "aes256-gcm16" | "rfc4106(gcm(aes))-256" => {
                            (Cipher::AesGcm, 32)
                        }
                        "aes-gmac-128" => (Cipher::AesGmac, 16),
                        "aes-gmac-256" => (Cipher::AesGmac, 32),
                        "aes-gcm-192" | "aes-gmac-192" => return Err(err(
                            "alg",
                            "AES-192 is not supported (neither ring nor the card implements it)",
                        )),
                        _ => {
                            return Err(err(
                                "alg",
                                format!(
                            "{v:?} is not aes-gcm-128, aes-gcm-256, aes-gmac-128 or aes-gmac-256"
                        ),
                            ))
                        }
                    };
                once!(alg, a);
            }
            "key" => {
                let k = hex("key", val("HEX")?)?;
                once!(key, k);
            }
            "salt" => {
                let k = hex("salt", val("HEX (8 digits)")?)?;
                once!(salt, k);
            }
            "icv" => {
                let v = val("16")?;
                let n = number("icv", v)?;
                let l = match n {
                    8 => IcvLen::Icv8,
                    12 => IcvLen::Icv12,
                    16 => IcvLen::Icv16,
                    _ => return Err(err("icv", format!("{v} bytes: use 8, 12 or 16"))),
                };
                once!(icv, l);
            }
            "esn" => {
                let on = match value {
                    None => true,
                    Some("1" | "yes" | "true" | "on") => true,
                    Some("0" | "no" | "false" | "off") => false,
                    Some(v) => return Err(err("esn", format!("{v:?}: write esn, or esn=yes|no"))),
                };
                once!(esn, on);
            }
            "mode" => {
                let v = val("tunnel or transport")?;
                let m = match v.to_ascii_lowercase().as_str() {
                    "tunnel" => Mode::Tunnel,
                    "transport" => Mode::Transport,
                    _ => return Err(err("mode", format!("{v:?} is not tunnel or transport"))),
                };
                once!(mode, m);
            }
            "seq" => {
                let v = val("N")?;
                let n = number("seq", v)?;
                if n == 0 {
                    return Err(err("seq", "sequence numbers start at 1"));
                }
                once!(first_seq, n);
            }
            other => {
                return Err(err(
                    other,
                    "unknown field (known: spi, dst, alg, key, salt, icv, esn, mode, seq, src)",
                ))
            }
        }
    }
    let spi = spi.ok_or_else(|| err("spi", "missing"))?;
    let dst = dst.ok_or_else(|| err("dst", "missing"))?;
    let (cipher, key_len) = alg.ok_or_else(|| err("alg", "missing"))?;
    let key = key.ok_or_else(|| err("key", "missing"))?;
    let salt = salt.ok_or_else(|| err("salt", "missing"))?;
    if key.len() != key_len {
        return Err(err(
            "key",
            format!(
                "{} bytes, but {} needs {key_len} bytes ({} hex digits)",
                key.len(),
                if key_len == 16 {
                    "a 128-bit key"
                } else {
                    "a 256-bit key"
                },
                2 * key_len
            ),
        ));
    }
    let salt: [u8; 4] = salt.as_slice().try_into().map_err(|_| {
        err(
            "salt",
            format!("{} bytes, needs 4 (8 hex digits)", salt.len()),
        )
    })?;
    let icv = icv.unwrap_or(IcvLen::Icv16);
    if cipher == Cipher::AesGmac && icv != IcvLen::Icv16 {
        return Err(err("icv", "AES-GMAC (RFC 4543) allows only icv=16"));
    }
    let esn = esn.unwrap_or(false);
    let first_seq = first_seq.unwrap_or(1);
    if !esn && first_seq > u64::from(u32::MAX) {
        return Err(err("seq", "above 2^32 - 1 without esn"));
    }
    if let Some(s) = src {
        if s.is_ipv4() != dst.is_ipv4() {
            return Err(err("src", "src and dst must be of the same IP version"));
        }
    }
    let key = SaKey::new(&key, salt).map_err(|e| err("key", e.to_string()))?;
    Ok(SaSpec {
        spi,
        dst,
        src,
        cipher,
        key,
        icv,
        esn,
        mode: mode.unwrap_or(Mode::Tunnel),
        first_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K128: &str = "4c80cdefbb5d10da906ac73c3613a634";

    fn good() -> String {
        format!("spi=0x87654321,dst=201.25.64.1,alg=aes-gcm-128,key={K128},salt=2e443b68")
    }

    #[test]
    fn parses_the_full_grammar() {
        let s = parse(&good()).unwrap();
        assert_eq!(s.spi, Spi(0x8765_4321));
        assert_eq!(s.dst, "201.25.64.1".parse::<IpAddr>().unwrap());
        assert_eq!(s.key.bits(), 128);
        assert_eq!(s.key.salt(), [0x2e, 0x44, 0x3b, 0x68]);
        assert_eq!(s.icv, IcvLen::Icv16);
        assert_eq!(s.mode, Mode::Tunnel);
        assert!(!s.esn);
        let s = parse(&format!(
            "spi=17,dst=2001:db8::1,alg=aes-gcm-256,key={K128}{K128},salt=00000000,icv=12,esn,mode=transport,seq=5"
        ))
        .unwrap();
        assert_eq!(s.spi, Spi(17));
        assert_eq!(s.key.bits(), 256);
        assert_eq!(s.icv, IcvLen::Icv12);
        assert!(s.esn);
        assert_eq!(s.mode, Mode::Transport);
        assert_eq!(s.first_seq, 5);
        assert!(!format!("{s:?}").contains("4c80"), "Debug shows no key");
    }

    #[test]
    fn errors_name_the_field_and_never_the_key() {
        let g = good();
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "sa"),
            (g.replace("spi=0x87654321", "spi=0x1234567890"), "spi"),
            (g.replace("spi=0x87654321", "spi=zz"), "spi"),
            (g.replace("spi=0x87654321,", ""), "spi"),
            (g.replace("dst=201.25.64.1", "dst=201.25.64"), "dst"),
            (g.replace("aes-gcm-128", "aes-cbc"), "alg"),
            (g.replace("aes-gcm-128", "aes-gcm-256"), "key"),
            (g.replace(K128, &K128[..30]), "key"),
            (g.replace(K128, &K128.replace('4', "g")), "key"),
            (g.replace("salt=2e443b68", "salt=2e443b"), "salt"),
            (g.clone() + ",icv=10", "icv"),
            (g.clone() + ",mode=both", "mode"),
            (g.clone() + ",esn=maybe", "esn"),
            (g.clone() + ",seq=0", "seq"),
            (g.clone() + ",spi=1", "spi"),
            (g.clone() + ",colour=blue", "colour"),
            (g.clone() + ",", "sa"),
            (g.clone() + ",key", "key"),
            (g.clone() + ",src=::1", "src"),
        ];
        for (s, field) in cases {
            let e = parse(&s).unwrap_err();
            assert_eq!(e.field, field, "{s}: {e}");
            let m = e.to_string();
            assert!(m.contains(&format!("field {field}")), "{m}");
            assert!(!m.contains("cdefbb5d"), "the key leaked: {m}");
            assert!(!m.contains("2e443b"), "the salt leaked: {m}");
        }
    }

    #[test]
    fn hex_errors_name_the_character_position_and_the_field() {
        let e = hex("key", "0x00112g").unwrap_err();
        assert_eq!(e.field, "key");
        assert_eq!(e.reason, "not a hex digit at position 6");
        let e = hex("salt", "abc").unwrap_err();
        assert_eq!(e.reason, "odd number of hex digits (3)");
        assert_eq!(&hex("key", "0XA0ff").unwrap()[..], &[0xa0, 0xff]);
        assert!(hex("key", "").unwrap().is_empty());
    }
}
