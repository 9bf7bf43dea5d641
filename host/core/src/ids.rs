//! Newtypes for the address spaces of the core: nodes, distribution identifiers, epochs, time.

use std::fmt;

/// A cluster node's identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// A distribution identifier (claim 2): the keyed hash of a packet's fields, reduced to
/// `0..IdCount`. The set of packets sharing one identifier is handled by one node. One type
/// from the driver to the cluster: the card stores it beside each CAM entry.
pub use driver::DistributionId;

/// The epoch of an agreed allocation; a newer allocation has a larger epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Epoch(pub u64);

/// Time in milliseconds since an arbitrary origin chosen by the caller (the core has no clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// Milliseconds elapsed since `earlier` (zero if `earlier` is later).
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The number of distribution identifiers: a power of two from 1 to 4096.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdCount(u16);

/// The identifier count is not a power of two in 1..=4096.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("distribution identifier count {0} is not a power of two in 1..=4096")]
pub struct BadIdCount(pub u32);

impl IdCount {
    /// The largest supported count.
    pub const MAX: u16 = 4096;
    /// The default count (256).
    pub const DEFAULT: IdCount = IdCount(256);

    /// A validated count.
    ///
    /// # Errors
    /// [`BadIdCount`] unless `n` is a power of two in 1..=4096.
    pub fn new(n: u32) -> Result<Self, BadIdCount> {
        if n == 0 || n > u32::from(Self::MAX) || !n.is_power_of_two() {
            return Err(BadIdCount(n));
        }
        u16::try_from(n).map(IdCount).map_err(|_| BadIdCount(n))
    }

    /// The count.
    pub fn get(self) -> u16 {
        self.0
    }

    /// The count as a `usize`.
    pub fn len(self) -> usize {
        usize::from(self.0)
    }

    /// Always false: a count is at least one.
    pub fn is_empty(self) -> bool {
        false
    }

    /// All identifiers, in order.
    pub fn all(self) -> impl Iterator<Item = DistributionId> {
        (0..self.0).map(DistributionId)
    }

    /// Whether `id` is in range.
    pub fn contains(self, id: DistributionId) -> bool {
        id.0 < self.0
    }
}

impl Default for IdCount {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_count_validation() {
        assert!(IdCount::new(256).is_ok());
        assert!(IdCount::new(4096).is_ok());
        assert!(IdCount::new(1).is_ok());
        assert_eq!(IdCount::new(0), Err(BadIdCount(0)));
        assert_eq!(IdCount::new(100), Err(BadIdCount(100)));
        assert_eq!(IdCount::new(8192), Err(BadIdCount(8192)));
        assert_eq!(IdCount::default().get(), 256);
    }
}
