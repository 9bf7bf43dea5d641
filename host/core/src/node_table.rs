//! The node-specific table (claims 1, 14, 19, 21, 22): the entries of the traffic this node
//! handles now. Behind the [`NodeSpecificTable`] trait so the core runs on a card, on host
//! memory, or on a simulated small card.
//!
//! - [`SoftwareTable`]: host memory (claim 19's kernel-space memory); no card needed.
//! - [`SimCard`]: a stand-in for a small card: fixed capacity, counts commands.
//! - [`TieredTable`]: a card first and a software overflow behind it, so a full CAM loses no
//!   entry; [`TieredTable::promote_hot`] keeps the hottest entries in the card.
//!
//! A full card is not an error of the node: the tiered table keeps the entry in host memory.
//! A card that failed or has gone away is: [`TableError::Device`] reaches the caller of insert,
//! remove and flush, and nothing is moved into the overflow in its place (the common table
//! still holds every entry, so the owner of the table rebuilds the card from it).

use super::common::IndexedEntries;
use super::entry::{Entry, FlowKey};
use super::ids::{DistributionId, IdCount};

/// Errors of a node-specific table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The table is at capacity.
    #[error("node-specific table full ({capacity} entries)")]
    Full {
        /// The capacity.
        capacity: usize,
    },
    /// The entry's identifier is out of range.
    #[error("distribution identifier {dist} out of range")]
    BadDist {
        /// The identifier.
        dist: u16,
    },
    /// The key kind has no layout in the card's CAM (TLS session and HTTP cookie keys): a
    /// [`TieredTable`] keeps such an entry in host memory.
    #[error("{kind} keys have no CAM layout")]
    NoCamLayout {
        /// The key kind.
        kind: &'static str,
    },
    /// The device failed or has gone away: its contents are no longer known.
    #[error("node-specific table device failed")]
    Device {
        /// What the driver reported.
        #[from]
        source: driver::DriverError,
    },
}

impl TableError {
    /// Whether this is a failure of the device (as opposed to a full table or an entry the
    /// table cannot hold): the table's contents are unknown and it should be rebuilt.
    #[must_use]
    pub fn is_device(&self) -> bool {
        matches!(self, TableError::Device { .. })
    }

    /// Whether the device has left the bus (a register read all ones).
    #[must_use]
    pub fn is_device_gone(&self) -> bool {
        matches!(
            self,
            TableError::Device {
                source: driver::DriverError::DeviceGone { .. }
            }
        )
    }
}

/// Counters of a node-specific table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Management commands issued (insert, remove, flush).
    pub commands: u64,
    /// Flush-by-identifier commands issued.
    pub flushes: u64,
    /// Inserts refused because the table was full.
    pub full: u64,
    /// Entries that went to the software overflow (tiered tables).
    pub overflowed: u64,
    /// Entries promoted from the overflow into the card (tiered tables).
    pub promoted: u64,
}

/// What a card's packet path did with a frame offered to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CardOutcome {
    /// The card forwarded the frame itself, out of this port (the frame as it left).
    Forwarded(u8, Vec<u8>),
    /// The card dropped it (an identifier the node does not own, a rule, a runt).
    Dropped(driver::port::Reason),
    /// The card queued it for the host: the slow path decides.
    Punted(driver::port::Punted),
}

/// A node-specific table whose device handles frames itself: the card's packet port. The
/// node keys it with the cluster's distribution hash, tells it which identifiers it owns,
/// offers it frames and handles only what it punts.
pub trait PacketPath {
    /// Key the card's identifier hash (the cluster secret's bytes) and set the identifier
    /// count.
    ///
    /// # Errors
    /// [`TableError::Device`] when the card refuses or fails.
    fn configure(&mut self, secret: &[u8; 16], count: IdCount) -> Result<(), TableError>;
    /// The identifiers whose frames the card handles; every other frame it drops.
    ///
    /// # Errors
    /// [`TableError::Device`] when the card fails.
    fn set_owned(&mut self, owned: &driver::DidSet) -> Result<(), TableError>;
    /// Feed `frame` into the card on `port` and say what it did.
    ///
    /// # Errors
    /// [`TableError::Device`] when the card fails or has no simulated wires to feed.
    fn offer(&mut self, port: u8, frame: &[u8]) -> Result<CardOutcome, TableError>;
    /// Send a frame the slow path let through out of `port`; on simulated wires, the frame
    /// as it left the card.
    ///
    /// # Errors
    /// [`TableError::Device`] when the card fails.
    fn send_out(&mut self, port: u8, frame: &[u8]) -> Result<Option<(u8, Vec<u8>)>, TableError>;
    /// The card's packet port counters.
    ///
    /// # Errors
    /// [`TableError::Device`] when the card fails.
    fn port_counters(&mut self) -> Result<driver::port::PortCounters, TableError>;
    /// Frames and bytes of identifier `d` that reached the card's lookup (wrapping counters).
    ///
    /// # Errors
    /// [`TableError::Device`] when the card fails.
    fn did_counters(&mut self, d: DistributionId) -> Result<(u32, u64), TableError>;
}

/// The node-specific table.
pub trait NodeSpecificTable {
    /// The maximum number of entries, if bounded.
    fn capacity(&self) -> Option<usize>;
    /// Number of entries.
    fn len(&self) -> usize;
    /// Whether the table is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Inserts or replaces the entry of `entry.key`.
    ///
    /// # Errors
    /// [`TableError::Full`] when a bounded table is full and the key is new;
    /// [`TableError::BadDist`] for an identifier out of range; [`TableError::NoCamLayout`] for
    /// a key a card cannot hold; [`TableError::Device`] when the device failed.
    fn insert(&mut self, entry: Entry) -> Result<(), TableError>;
    /// Inserts several entries, each as [`Self::insert`] would (a takeover installing an
    /// identifier's entries); one result per entry, in order. Default: one insert each; a card
    /// installs new entries in one batch.
    fn insert_batch(&mut self, entries: Vec<Entry>) -> Vec<Result<(), TableError>> {
        entries.into_iter().map(|e| self.insert(e)).collect()
    }
    /// Data-path lookup: the entry of `key`, mutably (the caller updates state and counters).
    fn lookup(&mut self, key: &FlowKey) -> Option<&mut Entry>;
    /// The entry of `key`, read-only, without counting a hit.
    fn get(&self, key: &FlowKey) -> Option<&Entry>;
    /// Removes the entry of `key`; `Ok(None)` when there was none.
    ///
    /// # Errors
    /// [`TableError::Device`] when the device failed (the entry may still be on it).
    fn remove(&mut self, key: &FlowKey) -> Result<Option<Entry>, TableError>;
    /// Removes all entries of one identifier with one flush-by-identifier command.
    /// Returns how many were removed.
    ///
    /// # Errors
    /// [`TableError::Device`] when the device failed.
    fn flush_dist(&mut self, dist: DistributionId) -> Result<usize, TableError>;
    /// Removes all entries of several identifiers. Returns how many were removed and how many
    /// commands it took. Default: one [`Self::flush_dist`] per identifier; a card flushes a
    /// whole identifier set with one command.
    ///
    /// # Errors
    /// [`TableError::Device`] when the device failed (identifiers before the failing one may
    /// have been flushed).
    fn flush_dists(&mut self, dists: &[DistributionId]) -> Result<(usize, usize), TableError> {
        let mut n = 0;
        for &d in dists {
            n += self.flush_dist(d)?;
        }
        Ok((n, dists.len()))
    }
    /// Number of entries of one identifier.
    fn dist_len(&self, dist: DistributionId) -> usize;
    /// All entries.
    fn entries(&self) -> Box<dyn Iterator<Item = &Entry> + '_>;
    /// The entries of one identifier (what walks the table in bounded steps, one identifier
    /// at a time, uses). Default: a filter over [`Self::entries`]; indexed tables do it in
    /// O(k).
    fn entries_of(&self, dist: DistributionId) -> Box<dyn Iterator<Item = &Entry> + '_> {
        Box::new(self.entries().filter(move |e| e.dist == dist))
    }
    /// Removes everything (reset).
    fn clear_all(&mut self);
    /// Counters.
    fn stats(&self) -> TableStats;
    /// Periodic housekeeping (a tiered table promotes hot entries). Default: nothing.
    ///
    /// # Errors
    /// [`TableError::Device`] when the device failed during it.
    fn maintain(&mut self) -> Result<(), TableError> {
        Ok(())
    }
    /// Folds hit information the device gathered on its own (a card's data-path hit bits)
    /// into the entries' `last_seen`, so idle timeouts see traffic the host never saw.
    /// Default: nothing (host-memory tables see every hit).
    fn sync_hits(&mut self, _now: super::ids::Millis) {}
    /// The first device failure seen where the trait cannot return it (a data-path
    /// [`Self::lookup`], [`Self::sync_hits`], [`Self::clear_all`]) since the last call, and
    /// forgets it. Default: none (host memory does not fail).
    fn take_device_error(&mut self) -> Option<TableError> {
        None
    }
    /// The slow path's lookup of a frame the device already looked up and punted: the entry
    /// of `key` without asking the device again. Default: [`Self::lookup`].
    fn slow_lookup(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        self.lookup(key)
    }
    /// The device's packet path, when it has one (a card that forwards frames itself).
    /// Default: none (the host handles every packet).
    fn packet_path(&mut self) -> Option<&mut dyn PacketPath> {
        None
    }
    /// The device's ESP engine, when it has one (a card with an SA table and an ESP engine
    /// block): SAs installed through it live on the device, their keys never to be read back.
    /// The engine issues no CAM command (the table keeps the CAM). Default: none (the member
    /// runs every SA on its software engine).
    fn esp_engine(&mut self) -> Option<&mut dyn driver::esp::EspEngine> {
        None
    }
    /// Rules whose connections the host must see whole (protocol helpers): their entries
    /// send every packet to the host. Default: nothing to do (the host sees every packet).
    fn set_host_rules(&mut self, _rules: &[u16]) {}
}

/// Host-memory node-specific table (claim 19). Unbounded unless built with a capacity.
///
/// # Examples
///
/// ```
/// use cluster_core::{
///     ConnState, DistributionId, Endpoint, Entry, FlowKey, IdCount, L4Proto, NodeId,
///     NodeSpecificTable, SoftwareTable,
/// };
///
/// let mut table = SoftwareTable::new(IdCount::new(16)?);
/// let (key, _) = FlowKey::transport(
///     L4Proto::Udp,
///     Endpoint::new("192.0.2.1".parse()?, 5353),
///     Endpoint::new("198.51.100.53".parse()?, 53),
/// );
/// table.insert(Entry::new(key, DistributionId(3), ConnState::UdpUnreplied, NodeId(1)))?;
/// assert_eq!((table.len(), table.dist_len(DistributionId(3))), (1, 1));
/// assert!(table.lookup(&key).is_some());
/// table.flush_dist(DistributionId(3))?;
/// assert!(table.get(&key).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SoftwareTable {
    entries: IndexedEntries,
    capacity: Option<usize>,
    stats: TableStats,
}

impl SoftwareTable {
    /// An unbounded table for `count` identifiers.
    pub fn new(count: IdCount) -> Self {
        SoftwareTable {
            entries: IndexedEntries::new(count),
            capacity: None,
            stats: TableStats::default(),
        }
    }

    /// A bounded table.
    pub fn with_capacity(count: IdCount, capacity: usize) -> Self {
        SoftwareTable {
            capacity: Some(capacity),
            ..Self::new(count)
        }
    }

    fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> + '_ {
        self.entries.iter_mut()
    }
}

/// The [`NodeSpecificTable`] methods that only read the entries, for a table that keeps them in
/// an [`IndexedEntries`] (its field `$entries`): `len`, `get`, `dist_len`, `entries` and
/// `entries_of`. Invoked inside the trait's impl.
macro_rules! reads_from_indexed_entries {
    ($entries:ident) => {
        fn len(&self) -> usize {
            self.$entries.len()
        }
        fn get(&self, key: &FlowKey) -> Option<&Entry> {
            self.$entries.get(key)
        }
        fn dist_len(&self, dist: DistributionId) -> usize {
            self.$entries.dist_len(dist)
        }
        fn entries(&self) -> Box<dyn Iterator<Item = &Entry> + '_> {
            Box::new(self.$entries.iter())
        }
        fn entries_of(&self, dist: DistributionId) -> Box<dyn Iterator<Item = &Entry> + '_> {
            Box::new(self.$entries.select(dist))
        }
    };
}
pub(crate) use reads_from_indexed_entries;

/// Inserts `entry` into a table's [`IndexedEntries`] as [`NodeSpecificTable::insert`] does:
/// an entry whose identifier is out of range is refused with [`TableError::BadDist`].
pub(crate) fn insert_indexed(entries: &mut IndexedEntries, entry: Entry) -> Result<(), TableError> {
    entries
        .insert(entry)
        .map(|_| ())
        .map_err(|refused| TableError::BadDist {
            dist: refused.dist.0,
        })
}

impl NodeSpecificTable for SoftwareTable {
    fn capacity(&self) -> Option<usize> {
        self.capacity
    }
    reads_from_indexed_entries!(entries);
    fn insert(&mut self, entry: Entry) -> Result<(), TableError> {
        if let Some(cap) = self.capacity {
            if self.entries.len() >= cap && self.entries.get(&entry.key).is_none() {
                self.stats.full += 1;
                return Err(TableError::Full { capacity: cap });
            }
        }
        self.stats.commands += 1;
        insert_indexed(&mut self.entries, entry)
    }
    fn lookup(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        self.entries.get_mut(key)
    }
    fn remove(&mut self, key: &FlowKey) -> Result<Option<Entry>, TableError> {
        self.stats.commands += 1;
        Ok(self.entries.remove(key))
    }
    fn flush_dist(&mut self, dist: DistributionId) -> Result<usize, TableError> {
        self.stats.commands += 1;
        self.stats.flushes += 1;
        Ok(self.entries.remove_dist(dist).len())
    }
    fn clear_all(&mut self) {
        self.entries.clear();
    }
    fn stats(&self) -> TableStats {
        self.stats
    }
}

/// A simulated small-capacity card at the level of the trait: a bounded table whose every
/// management operation is one command, flush by identifier included.
pub struct SimCard {
    inner: SoftwareTable,
}

impl SimCard {
    /// A card holding at most `capacity` entries.
    pub fn new(count: IdCount, capacity: usize) -> Self {
        SimCard {
            inner: SoftwareTable::with_capacity(count, capacity),
        }
    }
}

impl NodeSpecificTable for SimCard {
    fn capacity(&self) -> Option<usize> {
        self.inner.capacity()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn insert(&mut self, entry: Entry) -> Result<(), TableError> {
        self.inner.insert(entry)
    }
    fn lookup(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        self.inner.lookup(key)
    }
    fn get(&self, key: &FlowKey) -> Option<&Entry> {
        self.inner.get(key)
    }
    fn remove(&mut self, key: &FlowKey) -> Result<Option<Entry>, TableError> {
        self.inner.remove(key)
    }
    fn flush_dist(&mut self, dist: DistributionId) -> Result<usize, TableError> {
        self.inner.flush_dist(dist)
    }
    fn dist_len(&self, dist: DistributionId) -> usize {
        self.inner.dist_len(dist)
    }
    fn entries(&self) -> Box<dyn Iterator<Item = &Entry> + '_> {
        self.inner.entries()
    }
    fn entries_of(&self, dist: DistributionId) -> Box<dyn Iterator<Item = &Entry> + '_> {
        self.inner.entries_of(dist)
    }
    fn clear_all(&mut self) {
        self.inner.clear_all()
    }
    fn stats(&self) -> TableStats {
        self.inner.stats()
    }
}

/// A card with a software overflow behind it (claim 19 plus claims 21/22, as the description
/// of figure 7 combines them): inserts go to the card; when the card is full they go to host
/// memory, so nothing is lost. [`TieredTable::promote_hot`] swaps overflow entries that
/// received more packets than the coldest card entries into the card.
pub struct TieredTable<C: NodeSpecificTable> {
    card: C,
    soft: SoftwareTable,
    overflowed: u64,
    promoted: u64,
    /// Number of swaps attempted per `maintain` call.
    pub promote_batch: usize,
}

impl<C: NodeSpecificTable> TieredTable<C> {
    /// A tiered table over `card`.
    pub fn new(card: C, count: IdCount) -> Self {
        TieredTable {
            card,
            soft: SoftwareTable::new(count),
            overflowed: 0,
            promoted: 0,
            promote_batch: 64,
        }
    }

    /// The card tier.
    pub fn card(&self) -> &C {
        &self.card
    }

    /// The card tier, mutably (device housekeeping: aging scans, read-back). Changing entries
    /// through it bypasses the tiering.
    pub fn card_mut(&mut self) -> &mut C {
        &mut self.card
    }

    /// The software tier.
    pub fn overflow(&self) -> &SoftwareTable {
        &self.soft
    }

    /// Moves up to `max` overflow entries that are hotter (more packets) than the coldest card
    /// entries into the card, demoting those. Returns how many moved up.
    ///
    /// # Errors
    /// [`TableError::Device`] when the card failed; the entry being moved stays where it was
    /// (in the overflow, or in the card's host copy), so the table still holds every entry.
    pub fn promote_hot(&mut self, max: usize) -> Result<usize, TableError> {
        if self.soft.is_empty() {
            return Ok(0);
        }
        let mut hot: Vec<(u64, FlowKey)> =
            self.soft.entries().map(|e| (e.packets, e.key)).collect();
        hot.sort_unstable_by_key(|h| std::cmp::Reverse(h.0));
        hot.truncate(max);
        let mut cold: Vec<(u64, FlowKey)> =
            self.card.entries().map(|e| (e.packets, e.key)).collect();
        cold.sort_unstable_by_key(|c| c.0);
        let mut cold = cold.into_iter();
        let mut moved = 0;
        let mut failed = None;
        for (heat, key) in hot {
            let free = self.card.capacity().is_none_or(|c| self.card.len() < c);
            if !free {
                match cold.next() {
                    Some((c_heat, c_key)) if c_heat < heat => match self.card.remove(&c_key) {
                        // The software tier is unbounded: this cannot fail for range reasons
                        // because the entry came from a table with the same identifier count.
                        Ok(Some(e)) => {
                            let _ = self.soft.insert(e);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    },
                    _ => break,
                }
            }
            let Some(e) = self.soft.get(&key).cloned() else {
                continue;
            };
            match self.card.insert(e) {
                Ok(()) => {
                    let _ = self.soft.remove(&key);
                    moved += 1;
                }
                Err(e) if e.is_device() => {
                    failed = Some(e);
                    break;
                }
                // Full or not for the card: it stays in the overflow.
                Err(_) => {}
            }
        }
        self.promoted += moved as u64;
        // Reset heat so that promotion follows recent traffic.
        for e in self.soft.entries_mut() {
            e.packets /= 2;
        }
        failed.map_or(Ok(moved), Err)
    }
}

impl<C: NodeSpecificTable> NodeSpecificTable for TieredTable<C> {
    fn capacity(&self) -> Option<usize> {
        None
    }
    fn len(&self) -> usize {
        self.card.len() + self.soft.len()
    }
    fn insert(&mut self, entry: Entry) -> Result<(), TableError> {
        if self.soft.get(&entry.key).is_some() {
            return self.soft.insert(entry);
        }
        match self.card.insert(entry.clone()) {
            Ok(()) => Ok(()),
            // A full card or a key it has no layout for: host memory holds the entry. A failed
            // card is the caller's error, not a reason to park entries here.
            Err(TableError::Full { .. }) | Err(TableError::NoCamLayout { .. }) => {
                self.overflowed += 1;
                self.soft.insert(entry)
            }
            Err(e) => Err(e),
        }
    }
    fn insert_batch(&mut self, entries: Vec<Entry>) -> Vec<Result<(), TableError>> {
        // Keys the overflow holds stay there (as `insert` does); the rest go to the card in
        // one batch, and what it refuses for room or layout overflows.
        if entries.iter().any(|e| self.soft.get(&e.key).is_some()) {
            return entries.into_iter().map(|e| self.insert(e)).collect();
        }
        let results = self.card.insert_batch(entries.clone());
        entries
            .into_iter()
            .zip(results)
            .map(|(e, r)| match r {
                Err(TableError::Full { .. }) | Err(TableError::NoCamLayout { .. }) => {
                    self.overflowed += 1;
                    self.soft.insert(e)
                }
                r => r,
            })
            .collect()
    }
    fn lookup(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        if self.card.get(key).is_some() {
            return self.card.lookup(key);
        }
        self.soft.lookup(key)
    }
    fn get(&self, key: &FlowKey) -> Option<&Entry> {
        self.card.get(key).or_else(|| self.soft.get(key))
    }
    fn remove(&mut self, key: &FlowKey) -> Result<Option<Entry>, TableError> {
        match self.card.remove(key)? {
            Some(e) => Ok(Some(e)),
            None => self.soft.remove(key),
        }
    }
    fn flush_dist(&mut self, dist: DistributionId) -> Result<usize, TableError> {
        let mut n = self.card.flush_dist(dist)?;
        if self.soft.dist_len(dist) > 0 {
            n += self.soft.flush_dist(dist)?;
        }
        Ok(n)
    }
    fn flush_dists(&mut self, dists: &[DistributionId]) -> Result<(usize, usize), TableError> {
        let (mut n, cmds) = self.card.flush_dists(dists)?;
        for &d in dists {
            if self.soft.dist_len(d) > 0 {
                n += self.soft.flush_dist(d)?;
            }
        }
        Ok((n, cmds))
    }
    fn dist_len(&self, dist: DistributionId) -> usize {
        self.card.dist_len(dist) + self.soft.dist_len(dist)
    }
    fn entries(&self) -> Box<dyn Iterator<Item = &Entry> + '_> {
        Box::new(self.card.entries().chain(self.soft.entries()))
    }
    fn entries_of(&self, dist: DistributionId) -> Box<dyn Iterator<Item = &Entry> + '_> {
        Box::new(self.card.entries_of(dist).chain(self.soft.entries_of(dist)))
    }
    fn clear_all(&mut self) {
        self.card.clear_all();
        self.soft.clear_all();
    }
    fn stats(&self) -> TableStats {
        let c = self.card.stats();
        TableStats {
            commands: c.commands,
            flushes: c.flushes,
            full: c.full,
            overflowed: self.overflowed,
            promoted: self.promoted,
        }
    }
    fn maintain(&mut self) -> Result<(), TableError> {
        let n = self.promote_batch;
        self.promote_hot(n).map(|_| ())
    }
    fn sync_hits(&mut self, now: super::ids::Millis) {
        self.card.sync_hits(now);
    }
    fn take_device_error(&mut self) -> Option<TableError> {
        self.card.take_device_error()
    }
    fn slow_lookup(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        if self.card.get(key).is_some() {
            return self.card.slow_lookup(key);
        }
        self.soft.lookup(key)
    }
    fn packet_path(&mut self) -> Option<&mut dyn PacketPath> {
        self.card.packet_path()
    }
    fn esp_engine(&mut self) -> Option<&mut dyn driver::esp::EspEngine> {
        self.card.esp_engine()
    }
    fn set_host_rules(&mut self, rules: &[u16]) {
        self.card.set_host_rules(rules);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{ConnState, Endpoint, L4Proto};
    use crate::ids::NodeId;
    use std::net::{IpAddr, Ipv4Addr};

    fn entry(i: u32) -> Entry {
        let (k, _) = FlowKey::transport(
            L4Proto::Udp,
            Endpoint::new(IpAddr::V4(Ipv4Addr::from(i)), 53),
            Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 53),
        );
        Entry::new(
            k,
            DistributionId((i % 8) as u16),
            ConnState::UdpReplied,
            NodeId(0),
        )
    }

    /// `entries_of` of every table kind lists exactly the entries of that identifier, on the
    /// card and in the overflow.
    #[test]
    fn entries_of_one_identifier() {
        let c = IdCount::new(8).unwrap();
        let mut tiered = TieredTable::new(SimCard::new(c, 10), c);
        let mut soft = SoftwareTable::new(c);
        for i in 0..40 {
            tiered.insert(entry(i)).unwrap();
            soft.insert(entry(i)).unwrap();
        }
        assert!(!tiered.overflow().is_empty() && !tiered.card().is_empty());
        let tables: [&dyn NodeSpecificTable; 3] = [&tiered, &soft, tiered.card()];
        for t in tables {
            let mut total = 0;
            for d in c.all() {
                let mut got: Vec<FlowKey> = t.entries_of(d).map(|e| e.key).collect();
                let mut want: Vec<FlowKey> =
                    t.entries().filter(|e| e.dist == d).map(|e| e.key).collect();
                got.sort();
                want.sort();
                assert_eq!(got, want, "{d:?}");
                assert_eq!(got.len(), t.dist_len(d));
                total += got.len();
            }
            assert_eq!(total, t.len());
        }
    }

    #[test]
    fn sim_card_is_bounded() {
        let c = IdCount::new(8).unwrap();
        let mut card = SimCard::new(c, 4);
        for i in 0..4 {
            card.insert(entry(i)).unwrap();
        }
        assert!(matches!(
            card.insert(entry(9)),
            Err(TableError::Full { capacity: 4 })
        ));
        card.insert(entry(1)).unwrap(); // replace is fine when full
        assert_eq!(card.flush_dist(DistributionId(1)).unwrap(), 1);
        assert_eq!(card.len(), 3);
    }

    #[test]
    fn tiered_overflows_and_promotes() {
        let c = IdCount::new(8).unwrap();
        let mut t = TieredTable::new(SimCard::new(c, 4), c);
        for i in 0..10 {
            t.insert(entry(i)).unwrap();
        }
        assert_eq!(t.len(), 10);
        assert_eq!(t.card().len(), 4);
        assert_eq!(t.stats().overflowed, 6);
        // Make entry 9 (in the overflow) hot.
        for _ in 0..100 {
            t.lookup(&entry(9).key).unwrap().packets += 1;
        }
        assert_eq!(t.promote_hot(1).unwrap(), 1);
        assert!(t.card().get(&entry(9).key).is_some());
        assert_eq!(t.len(), 10);
        assert_eq!(t.flush_dist(DistributionId(1)).unwrap(), 2);
        assert_eq!(t.len(), 8);
    }
}
