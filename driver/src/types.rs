//! Newtypes for the card's address spaces and identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DriverError;

/// The index of a CAM entry (slot). Lower indexes win a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CamIndex(pub u32);

/// A distribution identifier: the unit of ownership the cluster allocates to
/// nodes (the patent's "distribution identifier"). The host allocates up to
/// 4096 identifiers; a card stores as many bits as its `CAP_DID_BITS` register
/// says (12 on this tree's card), and the driver refuses an identifier wider than
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

/// The slot of a security-association context on the card (carried in the
/// result word; the SA table itself comes with a later block).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SaSlot(pub u16);

/// `Display` of a number newtype: the number.
macro_rules! display_as_number {
    ($($t:ty),+) => {
        $(impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        })+
    };
}

display_as_number!(CamIndex, DistributionId, SaSlot);

/// Words of the card's `DID_BITMAP`.
const DID_WORDS: usize = hal::regs::cam::DID_WORDS as usize;

/// A set of distribution identifiers, stored as the card's 4,096-bit
/// `DID_BITMAP` (bit d of word d/32 = identifier d), so it holds identifiers
/// 0..=4095 only. Serialises as a sorted list of identifiers.
///
/// # Examples
///
/// The identifiers a node lost in a reallocation, flushed from the card with one command:
///
/// ```
/// use driver::{Card, DidSet, DistributionId};
///
/// let lost = DidSet::from_ids([DistributionId(2), DistributionId(5)])?;
/// assert!(lost.contains(DistributionId(5)) && !lost.contains(DistributionId(3)));
/// assert_eq!(lost.len(), 2);
/// assert!(DidSet::from_ids([DistributionId(4096)]).is_err());
///
/// let mut card = Card::probe(sim_bridge::model::ModelCard::new())?;
/// let flushed = card.flush_dids(&lost)?;
/// assert_eq!(flushed, 0); // nothing was installed
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u16>", into = "Vec<u16>")]
pub struct DidSet {
    words: [u32; DID_WORDS],
}

impl Default for DidSet {
    fn default() -> Self {
        Self::new()
    }
}

impl DidSet {
    /// The empty set.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            words: [0; DID_WORDS],
        }
    }

    /// Every identifier.
    #[must_use]
    pub const fn all() -> Self {
        Self {
            words: [u32::MAX; DID_WORDS],
        }
    }

    /// The number of identifier bits the bitmap covers.
    pub const BITS: u32 = 12;

    /// A set of the identifiers `dids`.
    ///
    /// # Errors
    /// [`DriverError::DidTooWide`] for an identifier above 4095.
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
    /// [`DriverError::DidTooWide`] for an identifier above 4095 (the bitmap has
    /// 4,096 bits); the set is unchanged then.
    pub fn insert(&mut self, did: DistributionId) -> Result<(), DriverError> {
        let (w, b) = Self::bit(did).ok_or(DriverError::DidTooWide {
            did,
            bits: Self::BITS,
        })?;
        self.words[w] |= b;
        Ok(())
    }

    /// Remove `did` (an identifier above 4095 is never in the set).
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
        (d < 32 * DID_WORDS).then(|| (d / 32, 1 << (d % 32)))
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
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            (0..32u16)
                .filter(move |b| bits >> b & 1 == 1)
                .map(move |b| DistributionId(w as u16 * 32 + b))
        })
    }

    /// The bitmap as the card's `DID_BITMAP[0..128]` words.
    #[must_use]
    pub const fn words(&self) -> &[u32; DID_WORDS] {
        &self.words
    }
}

impl TryFrom<Vec<u16>> for DidSet {
    type Error = DriverError;
    fn try_from(v: Vec<u16>) -> Result<Self, DriverError> {
        Self::from_ids(v.into_iter().map(DistributionId))
    }
}

impl From<DidSet> for Vec<u16> {
    fn from(s: DidSet) -> Self {
        s.iter().map(|d| d.0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_set_bitmap_layout() {
        let s = DidSet::from_ids([0, 33, 255, 4095].map(DistributionId)).unwrap();
        assert_eq!(&s.words()[..8], &[1, 2, 0, 0, 0, 0, 0, 1 << 31]);
        assert_eq!(s.words()[127], 1 << 31);
        assert_eq!(s.len(), 4);
        assert_eq!(Vec::<u16>::from(s), vec![0, 33, 255, 4095]);
        let mut t = DidSet::all();
        assert_eq!(t.len(), 4096);
        t.remove(DistributionId(7));
        assert!(!t.contains(DistributionId(7)));
        assert!(DidSet::new().is_empty());
        assert!(matches!(
            t.insert(DistributionId(4096)),
            Err(DriverError::DidTooWide { bits: 12, .. })
        ));
        assert!(t.contains(DistributionId(4095)));
        assert!(DistributionId(255).fits(8) && !DistributionId(256).fits(8));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<DidSet>(&json).unwrap(), s);
        assert!(serde_json::from_str::<DidSet>("[4096]").is_err());
    }
}
