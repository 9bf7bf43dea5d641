//! Newtypes for the card's address spaces and identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DriverError;

/// The index of a CAM entry (slot). Lower indexes win a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CamIndex(pub u32);

impl fmt::Display for CamIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A distribution identifier: the unit of ownership the cluster allocates to
/// nodes (the patent's "distribution identifier"). The host allocates up to
/// 4096 identifiers; a card stores as many bits as its `CAP_DID_BITS` register
/// says (8 on today's card), and the driver refuses an identifier wider than
/// that ([`crate::DriverError::DidTooWide`]) instead of truncating it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct DistributionId(pub u16);

impl DistributionId {
    /// The identifier as an index into per-identifier arrays.
    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Whether the identifier fits in `bits` bits.
    #[must_use]
    pub fn fits(self, bits: u32) -> bool {
        bits >= 16 || self.0 >> bits == 0
    }
}

impl fmt::Display for DistributionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The slot of a security-association context on the card (carried in the
/// result word; the SA table itself comes with a later block).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SaSlot(pub u16);

impl fmt::Display for SaSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A set of distribution identifiers, stored as the card's 256-bit
/// `DID_BITMAP` (bit d of word d/32 = identifier d), so it holds identifiers
/// 0..=255 only. Serialises as a sorted list of identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "Vec<u8>", into = "Vec<u8>")]
pub struct DidSet {
    words: [u32; 8],
}

impl DidSet {
    /// The empty set.
    #[must_use]
    pub const fn new() -> Self {
        Self { words: [0; 8] }
    }

    /// Every identifier.
    #[must_use]
    pub const fn all() -> Self {
        Self {
            words: [u32::MAX; 8],
        }
    }

    /// The number of identifier bits the bitmap covers.
    pub const BITS: u32 = 8;

    /// A set of the identifiers `dids`.
    ///
    /// # Errors
    /// [`DriverError::DidTooWide`] for an identifier above 255.
    pub fn from_ids<I: IntoIterator<Item = DistributionId>>(dids: I) -> Result<Self, DriverError> {
        let mut s = Self::new();
        for d in dids {
            s.insert(d)?;
        }
        Ok(s)
    }

    /// Add `did`.
    ///
    /// # Errors
    /// [`DriverError::DidTooWide`] for an identifier above 255 (the bitmap has
    /// 256 bits); the set is unchanged then.
    pub fn insert(&mut self, did: DistributionId) -> Result<(), DriverError> {
        let (w, b) = Self::bit(did).ok_or(DriverError::DidTooWide {
            did,
            bits: Self::BITS,
        })?;
        self.words[w] |= b;
        Ok(())
    }

    /// Remove `did` (an identifier above 255 is never in the set).
    pub fn remove(&mut self, did: DistributionId) {
        if let Some((w, b)) = Self::bit(did) {
            self.words[w] &= !b;
        }
    }

    /// Whether `did` is in the set.
    #[must_use]
    pub fn contains(&self, did: DistributionId) -> bool {
        Self::bit(did).is_some_and(|(w, b)| self.words[w] & b != 0)
    }

    /// The word and bit of `did`, `None` when the bitmap has no bit for it.
    fn bit(did: DistributionId) -> Option<(usize, u32)> {
        let d = did.index();
        (d < 256).then(|| (d / 32, 1 << (d % 32)))
    }

    /// Number of identifiers in the set.
    #[must_use]
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The identifiers in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = DistributionId> + '_ {
        (0..=255u16)
            .map(DistributionId)
            .filter(|d| self.contains(*d))
    }

    /// The bitmap as the card's `DID_BITMAP[0..8]` words.
    #[must_use]
    pub const fn words(&self) -> [u32; 8] {
        self.words
    }
}

impl From<Vec<u8>> for DidSet {
    fn from(v: Vec<u8>) -> Self {
        let mut s = Self::new();
        for d in v {
            let (w, b) = (usize::from(d / 32), 1 << (d % 32));
            s.words[w] |= b;
        }
        s
    }
}

impl From<DidSet> for Vec<u8> {
    fn from(s: DidSet) -> Self {
        // Every member is below 256 (`DidSet::bit`).
        s.iter().filter_map(|d| u8::try_from(d.0).ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_set_bitmap_layout() {
        let s = DidSet::from_ids([0, 33, 255].map(DistributionId)).unwrap();
        assert_eq!(s.words(), [1, 2, 0, 0, 0, 0, 0, 1 << 31]);
        assert_eq!(s.len(), 3);
        assert_eq!(Vec::<u8>::from(s), vec![0, 33, 255]);
        let mut t = DidSet::all();
        assert_eq!(t.len(), 256);
        t.remove(DistributionId(7));
        assert!(!t.contains(DistributionId(7)));
        assert!(DidSet::new().is_empty());
        assert!(matches!(
            t.insert(DistributionId(256)),
            Err(DriverError::DidTooWide { bits: 8, .. })
        ));
        assert!(!t.contains(DistributionId(4095)));
        assert!(DistributionId(255).fits(8) && !DistributionId(256).fits(8));
    }
}
