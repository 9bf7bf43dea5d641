//! Newtypes for the card's address spaces and identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

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
/// nodes (the patent's "distribution identifier"). The card stores 8 bits, so
/// there are 256 identifiers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct DistributionId(pub u8);

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
/// `DID_BITMAP` (bit d of word d/32 = identifier d). Serialises as a sorted
/// list of identifiers.
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

    /// Add `did`.
    pub fn insert(&mut self, did: DistributionId) {
        let d = usize::from(did.0);
        self.words[d / 32] |= 1 << (d % 32);
    }

    /// Remove `did`.
    pub fn remove(&mut self, did: DistributionId) {
        let d = usize::from(did.0);
        self.words[d / 32] &= !(1 << (d % 32));
    }

    /// Whether `did` is in the set.
    #[must_use]
    pub fn contains(&self, did: DistributionId) -> bool {
        let d = usize::from(did.0);
        (self.words[d / 32] >> (d % 32)) & 1 == 1
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
        (0..=255u8)
            .map(DistributionId)
            .filter(|d| self.contains(*d))
    }

    /// The bitmap as the card's `DID_BITMAP[0..8]` words.
    #[must_use]
    pub const fn words(&self) -> [u32; 8] {
        self.words
    }
}

impl FromIterator<DistributionId> for DidSet {
    fn from_iter<I: IntoIterator<Item = DistributionId>>(iter: I) -> Self {
        let mut s = Self::new();
        for d in iter {
            s.insert(d);
        }
        s
    }
}

impl From<Vec<u8>> for DidSet {
    fn from(v: Vec<u8>) -> Self {
        v.into_iter().map(DistributionId).collect()
    }
}

impl From<DidSet> for Vec<u8> {
    fn from(s: DidSet) -> Self {
        s.iter().map(|d| d.0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_set_bitmap_layout() {
        let s: DidSet = [0u8, 33, 255].into_iter().map(DistributionId).collect();
        assert_eq!(s.words(), [1, 2, 0, 0, 0, 0, 0, 1 << 31]);
        assert_eq!(s.len(), 3);
        assert_eq!(Vec::<u8>::from(s), vec![0, 33, 255]);
        let mut t = DidSet::all();
        assert_eq!(t.len(), 256);
        t.remove(DistributionId(7));
        assert!(!t.contains(DistributionId(7)));
        assert!(DidSet::new().is_empty());
    }
}
