//! Per-node identities: each node signs its hellos with its own Ed25519 key, and a receiver
//! checks the signature with the public key it was configured with for the hello's sender. A
//! signed hello carries the X25519 public key of the sender's incarnation; every other frame
//! between two nodes is sealed with their pair key (see [`super::frame`]), which only those two
//! can compute. The cluster key still enters every key (outsiders are refused before any
//! signature work), but holding it is no longer enough to speak for another node: a member
//! knows only its own private keys.
//!
//! An identity file holds the PKCS#8 v2 document of the key pair (as `ring` generates it) in
//! hexadecimal on one line; like a key file it must not be readable by group or others. A
//! public key is 64 hexadecimal digits (32 bytes), given on the `peer` lines of the other
//! nodes' configurations (`docs/clusterd.md`, "Node identities").

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use zeroize::Zeroizing;

/// Length of a frame signature.
pub const SIG_LEN: usize = 64;

/// Why an identity or a public key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The identity file could not be read, or its permissions are too open.
    #[error("identity file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// Not a hex-encoded Ed25519 PKCS#8 document.
    #[error("identity file {path}: not an Ed25519 identity (hex PKCS#8 as `clusterd keygen --identity FILE` writes)")]
    Bad {
        /// The file.
        path: String,
    },
    /// A public key that is not 64 hex digits.
    #[error("public key {0:?}: an Ed25519 public key is 64 hexadecimal digits")]
    BadPublicKey(String),
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// This node's key pair. `Debug` shows only the public key.
pub struct NodeIdentity {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("public", &self.public().to_hex())
            .finish()
    }
}

impl NodeIdentity {
    /// A fresh identity and its PKCS#8 document in hex (to be written to a private file).
    ///
    /// # Errors
    /// [`IdentityError::Random`].
    pub fn generate() -> Result<(Self, Zeroizing<String>), IdentityError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| IdentityError::Random)?;
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| IdentityError::Random)?;
        Ok((Self { pair }, Zeroizing::new(hex::encode(doc.as_ref()))))
    }

    /// Generates an identity into a new file at `path` (mode 0600 from its creation; an
    /// existing file is never overwritten: rotating an identity is a deliberate step) and
    /// returns its public key.
    ///
    /// # Errors
    /// [`IdentityError::File`] (the file exists, or cannot be written) or
    /// [`IdentityError::Random`].
    pub fn write_new(path: &Path) -> Result<PublicKey, IdentityError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let (id, doc) = Self::generate()?;
        let file_err = |e: std::io::Error| IdentityError::File {
            path: path.display().to_string(),
            reason: if e.kind() == std::io::ErrorKind::AlreadyExists {
                "exists; an identity is never overwritten (move it away first to rotate: \
                 docs/clusterd.md, \"Node identities\")"
                    .to_owned()
            } else {
                e.to_string()
            },
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(file_err)?;
        f.write_all(doc.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(file_err)?;
        Ok(id.public())
    }

    /// Reads an identity file (hex PKCS#8, mode 0600 or stricter).
    ///
    /// # Errors
    /// [`IdentityError::File`] (unreadable, readable by group or others) or
    /// [`IdentityError::Bad`].
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        let text = crate::secret_arg::read_file(path, "identity_file").map_err(|reason| {
            IdentityError::File {
                path: shown.clone(),
                reason,
            }
        })?;
        Self::from_hex(text.trim()).ok_or(IdentityError::Bad { path: shown })
    }

    /// An identity from the hex PKCS#8 text; `None` when the text is not one.
    pub fn from_hex(text: &str) -> Option<Self> {
        let doc = Zeroizing::new(hex::decode(text).ok()?);
        let pair = Ed25519KeyPair::from_pkcs8(&doc).ok()?;
        Some(Self { pair })
    }

    /// The public key peers are configured with.
    pub fn public(&self) -> PublicKey {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(b)
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIG_LEN] {
        let mut s = [0u8; SIG_LEN];
        s.copy_from_slice(self.pair.sign(msg).as_ref());
        s
    }
}

/// A peer's public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl PublicKey {
    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// [`IdentityError::BadPublicKey`].
    pub fn from_hex(s: &str) -> Result<Self, IdentityError> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).map_err(|_| IdentityError::BadPublicKey(s.to_owned()))?;
        Ok(Self(b))
    }

    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `sig` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_round_trips() {
        let (a, doc) = NodeIdentity::generate().unwrap();
        let (b, _) = NodeIdentity::generate().unwrap();
        let again = NodeIdentity::from_hex(&doc).unwrap();
        assert_eq!(again.public(), a.public());
        let sig = a.sign(b"frame");
        assert!(a.public().verify(b"frame", &sig));
        assert!(!a.public().verify(b"frame!", &sig));
        assert!(!b.public().verify(b"frame", &sig), "another node's key");
        let p = PublicKey::from_hex(&a.public().to_hex()).unwrap();
        assert_eq!(p, a.public());
        assert!(PublicKey::from_hex("abc").is_err());
        assert!(NodeIdentity::from_hex("00").is_none());
        assert!(
            !format!("{a:?}").contains(&doc[20..40]),
            "Debug shows no secret"
        );
    }
}
