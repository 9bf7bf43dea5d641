//! The common table (claims 1, 6, 20): every node's copy of all entries of the cluster, indexed
//! by distribution identifier so that insert, update and clear are O(1) and selecting the
//! entries of one identifier is O(k).

use super::entry::{Entry, FlowKey};
use super::events::entry_fingerprint;
use super::ids::{DistributionId, IdCount, Millis};
use std::collections::HashMap;

/// The tables' hasher: aHash with per-process random keys. Keys come from traffic an attacker
/// can shape, so the hash must resist collision flooding; aHash does, at a fraction of SipHash's
/// cost on this hot path.
type FlowHasher = ahash::RandomState;

struct Slot {
    entry: Entry,
    /// Position of this slot in `by_dist[entry.dist]`.
    pos: usize,
}

/// Entries addressed by key, with a per-identifier index. Used by the common table and the
/// software node-specific table.
pub struct IndexedEntries {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    map: HashMap<FlowKey, usize, FlowHasher>,
    by_dist: Vec<Vec<usize>>,
}

impl IndexedEntries {
    /// An empty set for `count` identifiers.
    pub fn new(count: IdCount) -> Self {
        IndexedEntries {
            slots: Vec::new(),
            free: Vec::new(),
            map: HashMap::with_hasher(FlowHasher::new()),
            by_dist: vec![Vec::new(); count.len()],
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry of `key`.
    pub fn get(&self, key: &FlowKey) -> Option<&Entry> {
        let i = *self.map.get(key)?;
        self.slots.get(i)?.as_ref().map(|s| &s.entry)
    }

    /// The entry of `key`, mutably. Do not change its key or identifier through this.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        let i = *self.map.get(key)?;
        self.slots.get_mut(i)?.as_mut().map(|s| &mut s.entry)
    }

    /// Inserts or replaces the entry of `entry.key`; returns the replaced entry. An entry whose
    /// identifier is out of range is refused (returned as `Err`).
    #[allow(clippy::result_large_err)] // the refused entry is handed back to the caller, unboxed
    pub fn insert(&mut self, entry: Entry) -> Result<Option<Entry>, Entry> {
        if entry.dist.index() >= self.by_dist.len() {
            return Err(entry);
        }
        if let Some(&i) = self.map.get(&entry.key) {
            if let Some(Some(slot)) = self.slots.get(i) {
                if slot.entry.dist == entry.dist {
                    let old = self.slots[i]
                        .as_mut()
                        .map(|s| std::mem::replace(&mut s.entry, entry));
                    return Ok(old);
                }
            }
            let old = self.remove(&entry.key);
            self.insert_new(entry);
            return Ok(old);
        }
        self.insert_new(entry);
        Ok(None)
    }

    fn insert_new(&mut self, entry: Entry) {
        let d = entry.dist.index();
        let key = entry.key;
        let pos = self.by_dist[d].len();
        let slot = Slot { entry, pos };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.by_dist[d].push(i);
        self.map.insert(key, i);
    }

    /// Removes and returns the entry of `key`.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Entry> {
        let i = self.map.remove(key)?;
        let slot = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        let list = &mut self.by_dist[slot.entry.dist.index()];
        list.swap_remove(slot.pos);
        if let Some(&moved) = list.get(slot.pos) {
            if let Some(Some(s)) = self.slots.get_mut(moved) {
                s.pos = slot.pos;
            }
        }
        Some(slot.entry)
    }

    /// The entries of one identifier, in O(k).
    pub fn select(&self, dist: DistributionId) -> impl Iterator<Item = &Entry> + '_ {
        self.by_dist
            .get(dist.index())
            .map(|v| v.as_slice())
            .unwrap_or(&[])
            .iter()
            .filter_map(move |&i| self.slots.get(i).and_then(|s| s.as_ref()).map(|s| &s.entry))
    }

    /// The keys of one identifier.
    pub fn keys_of(&self, dist: DistributionId) -> Vec<FlowKey> {
        self.select(dist).map(|e| e.key).collect()
    }

    /// Number of entries of one identifier.
    pub fn dist_len(&self, dist: DistributionId) -> usize {
        self.by_dist.get(dist.index()).map_or(0, Vec::len)
    }

    /// Removes all entries of one identifier; returns them.
    pub fn remove_dist(&mut self, dist: DistributionId) -> Vec<Entry> {
        let keys = self.keys_of(dist);
        keys.iter().filter_map(|k| self.remove(k)).collect()
    }

    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.slots
            .iter()
            .filter_map(|s| s.as_ref().map(|s| &s.entry))
    }

    /// All entries, mutably. Do not change keys or identifiers through this.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> + '_ {
        self.slots
            .iter_mut()
            .filter_map(|s| s.as_mut().map(|s| &mut s.entry))
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.free.clear();
        self.map.clear();
        for v in &mut self.by_dist {
            v.clear();
        }
    }
}

/// What an upsert into the common table did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    /// A new entry.
    Inserted,
    /// An older version was replaced.
    Replaced,
    /// The table already held this version or a newer one, or a newer clear: nothing changed.
    Stale,
    /// The identifier is out of range: refused.
    OutOfRange,
}

/// Per-identifier digest: entry count and XOR of entry fingerprints (anti-entropy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct DistDigest {
    /// Number of entries.
    pub count: u32,
    /// XOR of the fingerprints of the entries' replicated content.
    pub hash: u64,
}

/// The common table.
pub struct CommonTable {
    entries: IndexedEntries,
    digests: Vec<DistDigest>,
    tombstones: HashMap<FlowKey, (u32, Millis), FlowHasher>,
}

impl CommonTable {
    /// An empty table for `count` identifiers.
    pub fn new(count: IdCount) -> Self {
        CommonTable {
            entries: IndexedEntries::new(count),
            digests: vec![DistDigest::default(); count.len()],
            tombstones: HashMap::with_hasher(FlowHasher::new()),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of `key`.
    pub fn get(&self, key: &FlowKey) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The entries of one identifier (figure 6B step 612), O(k).
    pub fn select(&self, dist: DistributionId) -> impl Iterator<Item = &Entry> + '_ {
        self.entries.select(dist)
    }

    /// Number of entries of one identifier.
    pub fn dist_len(&self, dist: DistributionId) -> usize {
        self.entries.dist_len(dist)
    }

    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.entries.iter()
    }

    /// The digest of one identifier.
    pub fn digest(&self, dist: DistributionId) -> DistDigest {
        self.digests.get(dist.index()).copied().unwrap_or_default()
    }

    /// The version of the last clear of `key` still remembered.
    pub fn tombstone(&self, key: &FlowKey) -> Option<u32> {
        self.tombstones.get(key).map(|t| t.0)
    }

    fn account_remove(&mut self, e: &Entry) {
        self.account(e.dist.index(), entry_fingerprint(e), false);
    }

    /// Writes `entry` unconditionally (the owner's own change), O(1).
    pub fn upsert_local(&mut self, entry: Entry) -> Upsert {
        self.tombstones.remove(&entry.key);
        // Account by fingerprint, so a refused insert can be undone without keeping a copy.
        let (slot, fp) = (entry.dist.index(), entry_fingerprint(&entry));
        self.account(slot, fp, true);
        match self.entries.insert(entry) {
            Ok(Some(old)) => {
                self.account_remove(&old);
                Upsert::Replaced
            }
            Ok(None) => Upsert::Inserted,
            Err(_) => {
                self.account(slot, fp, false);
                Upsert::OutOfRange
            }
        }
    }

    fn account(&mut self, slot: usize, fp: u64, add: bool) {
        if let Some(d) = self.digests.get_mut(slot) {
            d.count = if add {
                d.count + 1
            } else {
                d.count.saturating_sub(1)
            };
            d.hash ^= fp;
        }
    }

    /// Writes a replicated entry unless the table holds the same or a newer version, or a clear
    /// of a newer-or-equal version. O(1).
    pub fn upsert_remote(&mut self, entry: Entry) -> Upsert {
        if let Some(old) = self.entries.get(&entry.key) {
            if old.version > entry.version
                || (old.version == entry.version && old.same_replicated(&entry))
            {
                return Upsert::Stale;
            }
        }
        if let Some(&(v, _)) = self.tombstones.get(&entry.key) {
            if v >= entry.version {
                return Upsert::Stale;
            }
        }
        self.upsert_local(entry)
    }

    /// Updates the local (non-replicated) fields of an entry: last hit time and counters.
    pub fn touch(&mut self, key: &FlowKey, now: Millis, packets: u64, bytes: u64) {
        if let Some(e) = self.entries.get_mut(key) {
            e.last_seen = now;
            e.packets = packets;
            e.bytes = bytes;
        }
    }

    /// Clears the entry of `key` if its version is not newer than `version`, and remembers the
    /// clear. Returns the cleared entry.
    pub fn clear(&mut self, key: &FlowKey, version: u32, now: Millis) -> Option<Entry> {
        if let Some(e) = self.entries.get(key) {
            if e.version > version {
                return None;
            }
        }
        let t = self.tombstones.entry(*key).or_insert((version, now));
        if t.0 <= version {
            *t = (version, now);
        }
        let old = self.entries.remove(key)?;
        self.account_remove(&old);
        Some(old)
    }

    /// Replaces all entries of one identifier with `entries` (a snapshot from the owner).
    /// Entries of other identifiers in `entries` are ignored. Returns how many were installed.
    pub fn replace_dist(&mut self, dist: DistributionId, entries: &[Entry]) -> usize {
        for old in self.entries.remove_dist(dist) {
            self.account_remove(&old);
        }
        if let Some(d) = self.digests.get_mut(dist.index()) {
            *d = DistDigest::default();
        }
        let mut n = 0;
        for e in entries.iter().filter(|e| e.dist == dist) {
            if self.upsert_local(e.clone()) != Upsert::OutOfRange {
                n += 1;
            }
        }
        n
    }

    /// Forgets clears older than `ttl_ms`.
    pub fn prune_tombstones(&mut self, now: Millis, ttl_ms: u64) {
        self.tombstones.retain(|_, (_, t)| now.since(*t) <= ttl_ms);
    }

    /// Removes everything (a node restarting with empty memory).
    pub fn clear_all(&mut self) {
        self.entries.clear();
        self.tombstones.clear();
        for d in &mut self.digests {
            *d = DistDigest::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entry::{ConnState, Endpoint, L4Proto};
    use crate::core::ids::NodeId;
    use std::net::{IpAddr, Ipv4Addr};

    fn entry(i: u32, dist: u16) -> Entry {
        let (k, _) = FlowKey::transport(
            L4Proto::Tcp,
            Endpoint::new(IpAddr::V4(Ipv4Addr::from(i)), 1000),
            Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80),
        );
        Entry::new(k, DistributionId(dist), ConnState::Established, NodeId(1))
    }

    #[test]
    fn insert_select_clear() {
        let mut t = CommonTable::new(IdCount::new(16).unwrap());
        for i in 0..100 {
            assert_eq!(t.upsert_local(entry(i, (i % 4) as u16)), Upsert::Inserted);
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.select(DistributionId(1)).count(), 25);
        assert_eq!(t.dist_len(DistributionId(5)), 0);
        let e = entry(1, 1);
        assert!(t.clear(&e.key, 1, Millis(0)).is_some());
        assert_eq!(t.select(DistributionId(1)).count(), 24);
        assert_eq!(t.upsert_remote(entry(1, 1)), Upsert::Stale, "tombstone");
        let mut newer = entry(1, 1);
        newer.version = 2;
        assert_eq!(t.upsert_remote(newer.clone()), Upsert::Inserted);
        assert_eq!(t.upsert_remote(newer), Upsert::Stale);
        assert_eq!(t.upsert_local(entry(1, 99)), Upsert::OutOfRange);
        assert_eq!(t.len(), 100);
    }

    #[test]
    fn digest_is_order_independent() {
        let c = IdCount::new(8).unwrap();
        let mut a = CommonTable::new(c);
        let mut b = CommonTable::new(c);
        for i in 0..50 {
            a.upsert_local(entry(i, 3));
        }
        for i in (0..60).rev() {
            b.upsert_local(entry(i, 3));
        }
        for i in 50..60 {
            b.clear(&entry(i, 3).key, 1, Millis(0));
        }
        assert_eq!(a.digest(DistributionId(3)), b.digest(DistributionId(3)));
        let snap: Vec<Entry> = a.select(DistributionId(3)).cloned().collect();
        let mut c2 = CommonTable::new(c);
        c2.upsert_local(entry(999, 3));
        assert_eq!(c2.replace_dist(DistributionId(3), &snap), 50);
        assert_eq!(c2.digest(DistributionId(3)), a.digest(DistributionId(3)));
    }

    #[test]
    fn dist_change_moves_index() {
        let mut t = IndexedEntries::new(IdCount::new(8).unwrap());
        t.insert(entry(1, 1)).unwrap();
        t.insert(entry(1, 2)).unwrap();
        assert_eq!(t.dist_len(DistributionId(1)), 0);
        assert_eq!(t.dist_len(DistributionId(2)), 1);
        assert_eq!(t.remove_dist(DistributionId(2)).len(), 1);
        assert!(t.is_empty());
    }
}
