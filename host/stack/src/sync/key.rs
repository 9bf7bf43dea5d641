//! The cluster key and the per-incarnation frame keys derived from it.
//!
//! Every node of a cluster shares one 256-bit cluster key (from its config file). Frames are never
//! sealed with the cluster key itself: each sender derives a frame key per incarnation (one process
//! lifetime) with HKDF-SHA256, so the AEAD nonce (sender id + frame sequence number) is never
//! reused even though a restarted node counts its frames from zero again.

use ring::{aead, hkdf, rand::SecureRandom};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::core::ids::NodeId;

/// Why a cluster key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not 64 hexadecimal digits.
    #[error("a cluster key is 64 hexadecimal digits (32 bytes); got {len} characters")]
    BadLength {
        /// Characters found.
        len: usize,
    },
    /// A character is not a hexadecimal digit.
    #[error("a cluster key is hexadecimal; character {position} is not a hex digit")]
    NotHex {
        /// 1-based position of the bad character.
        position: usize,
    },
    /// The key is all zeros (a placeholder, never a real key).
    #[error("the cluster key is all zeros; generate one with `clusterd keygen`")]
    AllZero,
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The 256-bit cluster key shared by all members. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClusterKey {
    bytes: [u8; 32],
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// The AEAD used for every frame.
pub(crate) static AEAD: &aead::Algorithm = &aead::AES_256_GCM;

impl ClusterKey {
    /// A key from raw bytes (the caller should zeroize its copy).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { bytes }
    }

    /// A key from 64 hexadecimal digits (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`KeyError`] if the text is not 64 hex digits or is all zeros.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(KeyError::BadLength {
                len: text.chars().count(),
            });
        }
        // Decoded straight into the key, which wipes itself on drop (also on an error).
        let mut key = Self { bytes: [0; 32] };
        hex::decode_to_slice(text, &mut key.bytes).map_err(|e| match e {
            hex::FromHexError::InvalidHexCharacter { index, .. } => KeyError::NotHex {
                position: index + 1,
            },
            hex::FromHexError::OddLength | hex::FromHexError::InvalidStringLength => {
                KeyError::BadLength {
                    len: text.chars().count(),
                }
            }
        })?;
        if key.bytes.iter().all(|b| *b == 0) {
            return Err(KeyError::AllZero);
        }
        Ok(key)
    }

    /// A fresh random key from the system generator.
    ///
    /// # Errors
    /// [`KeyError::Random`] if the system generator fails.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = Self { bytes: [0; 32] };
        ring::rand::SystemRandom::new()
            .fill(&mut key.bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(key)
    }

    /// The key as 64 lowercase hex digits (for `clusterd keygen` only; never log this).
    pub fn to_hex(&self) -> String {
        // Encoded in a buffer that is wiped, then copied once into a string of exactly that
        // size (no reallocation leaves a copy behind).
        let mut digits = zeroize::Zeroizing::new([0u8; 64]);
        // 32 bytes always fill 64 digits, so the lengths match.
        let _ = hex::encode_to_slice(self.bytes, &mut digits[..]);
        let mut s = String::with_capacity(64);
        s.extend(digits.iter().map(|&d| char::from(d)));
        s
    }

    /// The frame key of `sender` during its incarnation `incarnation` (HKDF-SHA256, info =
    /// label, sender, incarnation).
    pub(crate) fn frame_key(&self, sender: NodeId, incarnation: u64) -> aead::LessSafeKey {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"clusterd sync frame key v1");
        let prk = salt.extract(&self.bytes);
        let sender = sender.0.to_be_bytes();
        let inc = incarnation.to_be_bytes();
        let info: [&[u8]; 3] = [b"frame", &sender, &inc];
        // `expand` fails only when the output is longer than 255 hash lengths; 32 bytes is not.
        let okm = prk
            .expand(&info, AEAD)
            .unwrap_or_else(|_| unreachable!("HKDF output of 32 bytes is always valid"));
        aead::LessSafeKey::new(aead::UnboundKey::from(okm))
    }
}

/// The two keys of one pair of incarnations in a cluster with node identities: frames this
/// node sends to the peer are sealed with `seal`, the peer's frames to it opened with `open`.
pub(crate) struct PairKeys {
    pub(crate) seal: aead::LessSafeKey,
    pub(crate) open: aead::LessSafeKey,
}

impl ClusterKey {
    /// The pair keys of `me` (incarnation `my_inc`) and `peer` (incarnation `peer_inc`) from
    /// their X25519 shared secret: HKDF-SHA256 over the cluster key and the shared secret, one
    /// key per direction (info = label, sender id and incarnation, receiver id and
    /// incarnation). Only the two nodes can compute them: a member holding the cluster key
    /// but neither X25519 secret cannot.
    pub(crate) fn pair_keys(
        &self,
        shared: &[u8; 32],
        me: (NodeId, u64),
        peer: (NodeId, u64),
    ) -> PairKeys {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"clusterd sync pair key v1");
        let mut ikm = zeroize::Zeroizing::new([0u8; 64]);
        ikm[..32].copy_from_slice(&self.bytes);
        ikm[32..].copy_from_slice(shared);
        let prk = salt.extract(&ikm[..]);
        let direction = |from: (NodeId, u64), to: (NodeId, u64)| {
            let (f, fi) = (from.0 .0.to_be_bytes(), from.1.to_be_bytes());
            let (t, ti) = (to.0 .0.to_be_bytes(), to.1.to_be_bytes());
            let info: [&[u8]; 5] = [b"pair", &f, &fi, &t, &ti];
            // `expand` fails only for outputs longer than 255 hash lengths; 32 bytes is not.
            let okm = prk
                .expand(&info, AEAD)
                .unwrap_or_else(|_| unreachable!("HKDF output of 32 bytes is always valid"));
            aead::LessSafeKey::new(aead::UnboundKey::from(okm))
        };
        PairKeys {
            seal: direction(me, peer),
            open: direction(peer, me),
        }
    }
}

/// HKDF output length marker for derived secrets.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl ClusterKey {
    /// A 16-byte secret derived from the cluster key for another purpose (`label`), e.g. the
    /// keyed hash of distribution identifiers. Independent of every frame key.
    pub fn derive16(&self, label: &[u8]) -> zeroize::Zeroizing<[u8; 16]> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"clusterd derived secret v1");
        let prk = salt.extract(&self.bytes);
        let info: [&[u8]; 1] = [label];
        let mut out = zeroize::Zeroizing::new([0u8; 16]);
        if let Ok(okm) = prk.expand(&info, Len(16)) {
            // fill only fails for a length mismatch, which Len(16) rules out
            let _ = okm.fill(&mut out[..]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let k = ClusterKey::generate().unwrap();
        let k2 = ClusterKey::from_hex(&k.to_hex()).unwrap();
        assert_eq!(k.bytes, k2.bytes);
        assert_eq!(
            ClusterKey::from_hex("abc").unwrap_err(),
            KeyError::BadLength { len: 3 }
        );
        let mut bad = "0".repeat(63);
        bad.push('g');
        assert_eq!(
            ClusterKey::from_hex(&bad).unwrap_err(),
            KeyError::NotHex { position: 64 }
        );
        let mut mid = "a".repeat(64);
        mid.replace_range(9..10, "-");
        assert_eq!(
            ClusterKey::from_hex(&mid).unwrap_err(),
            KeyError::NotHex { position: 10 }
        );
        let upper = k.to_hex().to_uppercase();
        assert_eq!(ClusterKey::from_hex(&upper).unwrap().bytes, k.bytes);
        assert_eq!(k.to_hex().len(), 64);
        assert_eq!(
            ClusterKey::from_hex(&"0".repeat(64)).unwrap_err(),
            KeyError::AllZero
        );
        assert_eq!(format!("{k:?}"), "ClusterKey(<redacted>)");
    }
}
