//! Security-association data model.

use std::fmt;
use std::net::IpAddr;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::types::DistributionId;

use super::replay::ReplayWindow;
use super::EspError;

/// A Security Parameters Index.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Spi(pub u32);

hal::hex_newtype_fmt!(Spi, 8);

/// Which way an SA protects traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Packets we receive: decapsulate.
    Inbound,
    /// Packets we send: encapsulate.
    Outbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        })
    }
}

/// ESP mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The payload is a whole inner IP packet.
    Tunnel,
    /// The payload is the upper-layer segment of the outer packet.
    Transport,
}

/// The transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-GCM encryption and authentication (RFC 4106).
    AesGcm,
    /// AES-GMAC, authentication only (RFC 4543 `ENCR_NULL_AUTH_AES_GMAC`):
    /// the payload travels in clear. Software path only.
    AesGmac,
}

/// ICV (tag) length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IcvLen {
    /// 8 bytes.
    Icv8,
    /// 12 bytes.
    Icv12,
    /// 16 bytes (the default, and the only one RFC 4543 allows for GMAC).
    Icv16,
}

impl IcvLen {
    /// Length in bytes.
    #[must_use]
    pub const fn bytes(self) -> usize {
        match self {
            IcvLen::Icv8 => 8,
            IcvLen::Icv12 => 12,
            IcvLen::Icv16 => 16,
        }
    }

    /// From a length in bytes.
    ///
    /// # Errors
    /// [`EspError::Unsupported`] for anything but 8, 12 and 16.
    pub fn from_bytes(n: usize) -> Result<Self, EspError> {
        match n {
            8 => Ok(IcvLen::Icv8),
            12 => Ok(IcvLen::Icv12),
            16 => Ok(IcvLen::Icv16),
            _ => Err(EspError::Unsupported {
                what: "ICV length must be 8, 12 or 16 bytes",
            }),
        }
    }
}

/// An AES key (128 or 256 bits) with its RFC 4106 salt.
///
/// Wiped when dropped; `Debug` shows the key size only.
///
/// # Examples
///
/// ```
/// use driver::esp::{EspError, SaKey};
///
/// let key = SaKey::new(&[7; 32], [1, 2, 3, 4])?;
/// assert_eq!(key.bits(), 256);
/// // Debug never shows the key
/// assert_eq!(format!("{key:?}"), "SaKey(<256 bits, redacted>)");
/// // AES-192 is not an ESP key this card runs
/// assert!(matches!(SaKey::new(&[7; 24], [0; 4]), Err(EspError::Unsupported { .. })));
/// # Ok::<(), EspError>(())
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SaKey {
    key: [u8; 32],
    key_len: usize,
    salt: [u8; 4],
}

impl SaKey {
    /// A key of 16 or 32 bytes and a 4-byte salt.
    ///
    /// # Errors
    /// [`EspError::Unsupported`] for other key lengths (AES-192 is not
    /// offered: neither `ring` nor the card implements it).
    pub fn new(key: &[u8], salt: [u8; 4]) -> Result<Self, EspError> {
        if key.len() != 16 && key.len() != 32 {
            return Err(EspError::Unsupported {
                what: "AES key must be 128 or 256 bits",
            });
        }
        let mut k = [0u8; 32];
        k[..key.len()].copy_from_slice(key);
        Ok(SaKey {
            key: k,
            key_len: key.len(),
            salt,
        })
    }

    /// The key bytes (16 or 32). Only engines call this, to load the key.
    #[must_use]
    pub fn key_bytes(&self) -> &[u8] {
        &self.key[..self.key_len]
    }

    /// The 4-byte salt.
    #[must_use]
    pub fn salt(&self) -> [u8; 4] {
        self.salt
    }

    /// Key size in bits (128 or 256).
    #[must_use]
    pub fn bits(&self) -> u32 {
        // key_len is 16 or 32 by construction.
        if self.key_len == 32 {
            256
        } else {
            128
        }
    }
}

impl fmt::Debug for SaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SaKey(<{} bits, redacted>)", self.bits())
    }
}

/// The long-lived part of an SA: what is installed once.
#[derive(Clone, Debug)]
pub struct SaConfig {
    /// SPI.
    pub spi: Spi,
    /// Direction.
    pub direction: Direction,
    /// Tunnel or transport.
    pub mode: Mode,
    /// AES-GCM or AES-GMAC.
    pub cipher: Cipher,
    /// Key and salt (redacted in `Debug`).
    pub key: SaKey,
    /// ICV length.
    pub icv: IcvLen,
    /// Extended (64-bit) sequence numbers, RFC 4303 section 2.2.1.
    pub esn: bool,
    /// Destination address of the SA (the card's CAM key is SPI plus this
    /// address; `None` = any IPv4 destination).
    pub dst: Option<IpAddr>,
    /// The distribution identifier the SA belongs to (both SAs of a tunnel
    /// share one), stored beside its CAM entry.
    pub did: DistributionId,
}

impl SaConfig {
    /// An AES-GCM SA with a 16-byte ICV, no ESN, tunnel mode.
    #[must_use]
    pub fn gcm(spi: Spi, direction: Direction, key: SaKey) -> Self {
        SaConfig {
            spi,
            direction,
            mode: Mode::Tunnel,
            cipher: Cipher::AesGcm,
            key,
            icv: IcvLen::Icv16,
            esn: false,
            dst: None,
            did: DistributionId(0),
        }
    }
}

/// Packet and byte counters of an SA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaCounters {
    /// Packets processed successfully.
    pub packets: u64,
    /// Payload bytes (before encapsulation / after decapsulation) of those packets.
    pub bytes: u64,
    /// Inbound packets whose ICV did not verify.
    pub auth_failures: u64,
    /// Inbound packets dropped by the replay check.
    pub replay_drops: u64,
}

/// The moving part of an SA: what is read back and restored on takeover.
/// Never contains key material.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaState {
    /// Outbound: the last sequence number sent (0 = none yet; the next packet
    /// carries `seq + 1`). Unused for inbound SAs.
    pub seq: u64,
    /// Inbound: the anti-replay window. Unused for outbound SAs.
    pub window: ReplayWindow,
    /// Counters.
    pub counters: SaCounters,
}
