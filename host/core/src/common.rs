//! The common table (claims 1, 6, 20): every node's copy of all entries of the cluster, indexed
//! by distribution identifier so that insert, update and clear are O(1) and selecting the
//! entries of one identifier is O(k).

use super::entry::{Entry, FlowKey};
use super::events::entry_fingerprint;
use super::ids::{DistributionId, IdCount, Millis};
use hashbrown::HashTable;
use std::collections::HashMap;

/// The tables' hasher: aHash with per-process random keys. Keys come from traffic an attacker
/// can shape, so the hash must resist collision flooding; aHash does, at a fraction of SipHash's
/// cost on this hot path.
type FlowHasher = ahash::RandomState;

/// One bucket of the key index: the entry's slot and the low 32 bits of its key's hash.
///
/// The bucket holds no key: a probe compares the 7-bit tag first and reads the slot only on a
/// tag match, so a table of millions of entries keeps an index of 8 bytes (plus one control
/// byte) per bucket, which stays in cache far longer than a map of 48-byte keys. The hash is
/// kept so that growing the index never touches the slots.
#[derive(Clone, Copy)]
struct Bucket {
    slot: u32,
    hash: u32,
}

/// The index's hash of a bucket, a function of the 32 bits kept: the odd multiplier spreads them
/// over the top bits, which carry the probe tag.
fn bucket_hash(h: u32) -> u64 {
    u64::from(h).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(h)
}

/// Entries addressed by key, with a per-identifier index. Used by the common table and the
/// software node-specific table.
///
/// Entries live in a slot vector (freed slots are reused); a hash index maps keys to slots
/// and, per identifier, a list holds that identifier's slots, so select is O(k) and insert,
/// lookup and remove are O(1) with one hash of the key each.
pub struct IndexedEntries {
    hasher: FlowHasher,
    slots: Vec<Option<Entry>>,
    /// Position of each slot in its identifier's list (parallel to `slots`).
    pos: Vec<u32>,
    free: Vec<u32>,
    index: HashTable<Bucket>,
    by_dist: Vec<Vec<u32>>,
}

impl IndexedEntries {
    /// An empty set for `count` identifiers.
    pub fn new(count: IdCount) -> Self {
        Self::with_capacity(count, 0)
    }

    /// An empty set for `count` identifiers with room for `capacity` entries before it grows.
    pub fn with_capacity(count: IdCount, capacity: usize) -> Self {
        IndexedEntries {
            hasher: FlowHasher::new(),
            slots: Vec::with_capacity(capacity),
            pos: Vec::with_capacity(capacity),
            free: Vec::new(),
            index: HashTable::with_capacity(capacity),
            by_dist: vec![Vec::new(); count.len()],
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn hash32(&self, key: &FlowKey) -> u32 {
        // The low half of aHash's output; `bucket_hash` spreads it again for the index.
        self.hasher.hash_one(key) as u32
    }

    /// The probe's test for the bucket of `key`: the kept hash first, the slot's key only then.
    fn holds<'a>(
        slots: &'a [Option<Entry>],
        h: u32,
        key: &'a FlowKey,
    ) -> impl Fn(&Bucket) -> bool + 'a {
        move |b| {
            b.hash == h
                && slots
                    .get(b.slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|e| e.key == *key)
        }
    }

    fn find(&self, h: u32, key: &FlowKey) -> Option<u32> {
        self.index
            .find(bucket_hash(h), Self::holds(&self.slots, h, key))
            .map(|b| b.slot)
    }

    fn get_hashed(&self, h: u32, key: &FlowKey) -> Option<&Entry> {
        let i = self.find(h, key)?;
        self.slots.get(i as usize)?.as_ref()
    }

    /// The entry of `key`.
    pub fn get(&self, key: &FlowKey) -> Option<&Entry> {
        self.get_hashed(self.hash32(key), key)
    }

    /// The entry of `key`, mutably. Do not change its key or identifier through this.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        let i = self.find(self.hash32(key), key)?;
        self.slots.get_mut(i as usize)?.as_mut()
    }

    /// Inserts or replaces the entry of `entry.key`; returns the replaced entry. An entry whose
    /// identifier is out of range is refused (returned as `Err`).
    #[allow(clippy::result_large_err)] // the refused entry is handed back to the caller, unboxed
    pub fn insert(&mut self, entry: Entry) -> Result<Option<Entry>, Entry> {
        let h = self.hash32(&entry.key);
        self.insert_hashed(h, entry)
    }

    #[allow(clippy::result_large_err)]
    fn insert_hashed(&mut self, h: u32, entry: Entry) -> Result<Option<Entry>, Entry> {
        if entry.dist.index() >= self.by_dist.len() {
            return Err(entry);
        }
        if let Some(i) = self.find(h, &entry.key) {
            let i = i as usize;
            if let Some(Some(old)) = self.slots.get_mut(i) {
                if old.dist == entry.dist {
                    return Ok(Some(std::mem::replace(old, entry)));
                }
            }
            // The identifier changed: move the entry to its new list.
            let old = self.remove_hashed(h, &entry.key);
            self.insert_new(h, entry);
            return Ok(old);
        }
        self.insert_new(h, entry);
        Ok(None)
    }

    fn insert_new(&mut self, h: u32, entry: Entry) {
        let d = entry.dist.index();
        let list = &mut self.by_dist[d];
        let pos = list.len() as u32;
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(entry);
                self.pos[i as usize] = pos;
                i
            }
            None => {
                self.slots.push(Some(entry));
                self.pos.push(pos);
                // Slot numbers are u32: 4 billion entries is far past any table this runs.
                (self.slots.len() - 1) as u32
            }
        };
        list.push(i);
        self.index
            .insert_unique(bucket_hash(h), Bucket { slot: i, hash: h }, |b| {
                bucket_hash(b.hash)
            });
    }

    /// Removes and returns the entry of `key`.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Entry> {
        let h = self.hash32(key);
        self.remove_hashed(h, key)
    }

    fn remove_hashed(&mut self, h: u32, key: &FlowKey) -> Option<Entry> {
        let found = self
            .index
            .find_entry(bucket_hash(h), Self::holds(&self.slots, h, key))
            .ok()?;
        let (bucket, _) = found.remove();
        let i = bucket.slot as usize;
        let entry = self.slots.get_mut(i)?.take()?;
        self.free.push(bucket.slot);
        let pos = self.pos[i] as usize;
        let list = &mut self.by_dist[entry.dist.index()];
        list.swap_remove(pos);
        if let Some(&moved) = list.get(pos) {
            self.pos[moved as usize] = pos as u32;
        }
        Some(entry)
    }

    /// The entries of one identifier, in O(k).
    pub fn select(&self, dist: DistributionId) -> impl Iterator<Item = &Entry> + '_ {
        self.by_dist
            .get(dist.index())
            .map(|v| v.as_slice())
            .unwrap_or(&[])
            .iter()
            .filter_map(move |&i| self.slots.get(i as usize).and_then(Option::as_ref))
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
        self.slots.iter().filter_map(Option::as_ref)
    }

    /// All entries, mutably. Do not change keys or identifiers through this.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> + '_ {
        self.slots.iter_mut().filter_map(Option::as_mut)
    }

    /// Heap bytes the set holds (capacity, not length: what the allocator handed out).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.slots.capacity() * size_of::<Option<Entry>>()
            + (self.pos.capacity() + self.free.capacity()) * size_of::<u32>()
            + self.index.allocation_size()
            + self.by_dist.capacity() * size_of::<Vec<u32>>()
            + self
                .by_dist
                .iter()
                .map(|v| v.capacity() * size_of::<u32>())
                .sum::<usize>()
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.pos.clear();
        self.free.clear();
        self.index.clear();
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
///
/// # Examples
///
/// Every node's entries, by identifier: what a gaining node selects from when an identifier comes
/// to it.
///
/// ```
/// use cluster_core::{
///     CommonTable, ConnState, DistributionId, Endpoint, Entry, FlowKey, IdCount, L4Proto, Millis,
///     NodeId,
/// };
///
/// let mut common = CommonTable::new(IdCount::new(16)?);
/// let mut keys = Vec::new();
/// for port in 0..6u16 {
///     let (key, _) = FlowKey::transport(
///         L4Proto::Tcp,
///         Endpoint::new("192.0.2.1".parse()?, 40_000 + port),
///         Endpoint::new("198.51.100.80".parse()?, 443),
///     );
///     let dist = DistributionId(port % 2);
///     common.upsert_local(Entry::new(key, dist, ConnState::Established, NodeId(1)));
///     keys.push(key);
/// }
/// assert_eq!(common.len(), 6);
/// assert_eq!(common.select(DistributionId(1)).count(), 3);
/// assert_eq!(common.digest(DistributionId(1)).count, 3);
/// // a clear of the entry's version removes it
/// let version = common.get(&keys[1]).map(|e| e.version).expect("held");
/// assert!(common.clear(&keys[1], version, Millis(0)).is_some());
/// assert_eq!(common.dist_len(DistributionId(1)), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
        let h = self.entries.hash32(&entry.key);
        self.upsert_hashed(h, entry)
    }

    fn upsert_hashed(&mut self, h: u32, entry: Entry) -> Upsert {
        if !self.tombstones.is_empty() {
            self.tombstones.remove(&entry.key);
        }
        // Account by fingerprint, so a refused insert can be undone without keeping a copy.
        let (slot, fp) = (entry.dist.index(), entry_fingerprint(&entry));
        self.account(slot, fp, true);
        match self.entries.insert_hashed(h, entry) {
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
        let h = self.entries.hash32(&entry.key);
        if let Some(old) = self.entries.get_hashed(h, &entry.key) {
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
        self.upsert_hashed(h, entry)
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

    /// Heap bytes the table holds: entries, indexes, digests and remembered clears.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.entries.heap_bytes()
            + self.digests.capacity() * size_of::<DistDigest>()
            // hashbrown: one control byte per bucket; capacity is 7/8 of the buckets.
            + self.tombstones.capacity() * (size_of::<(FlowKey, (u32, Millis))>() + 1) * 8 / 7
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
    use crate::entry::{ConnState, Endpoint, L4Proto};
    use crate::ids::NodeId;
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

    proptest::proptest! {
        /// The slot/index/per-identifier bookkeeping against a plain map, through random
        /// inserts, identifier changes, removes and whole-identifier removes.
        #[test]
        fn indexed_entries_match_a_map(ops in proptest::collection::vec((0u8..4, 0u32..64, 0u16..8), 1..400)) {
            use std::collections::BTreeMap;
            let mut t = IndexedEntries::new(IdCount::new(8).unwrap());
            let mut model: BTreeMap<u32, (u16, u32)> = BTreeMap::new();
            for (n, (op, k, d)) in ops.into_iter().enumerate() {
                let mut e = entry(k, d);
                e.version = n as u32;
                match op {
                    0 | 1 => {
                        let old = t.insert(e).unwrap();
                        let prev = model.insert(k, (d, n as u32));
                        proptest::prop_assert_eq!(old.map(|o| o.version), prev.map(|p| p.1));
                    }
                    2 => {
                        let got = t.remove(&e.key).map(|o| (o.dist.0, o.version));
                        proptest::prop_assert_eq!(got, model.remove(&k));
                    }
                    _ => {
                        let mut got: Vec<u32> = t.remove_dist(DistributionId(d)).iter().map(|o| o.version).collect();
                        got.sort_unstable();
                        let mut want: Vec<u32> = model.iter().filter(|(_, v)| v.0 == d).map(|(_, v)| v.1).collect();
                        want.sort_unstable();
                        model.retain(|_, v| v.0 != d);
                        proptest::prop_assert_eq!(got, want);
                    }
                }
                proptest::prop_assert_eq!(t.len(), model.len());
            }
            for (k, (d, v)) in &model {
                let e = t.get(&entry(*k, *d).key).expect("present");
                proptest::prop_assert_eq!((e.dist.0, e.version), (*d, *v));
            }
            for d in 0..8u16 {
                let n = model.values().filter(|v| v.0 == d).count();
                proptest::prop_assert_eq!(t.dist_len(DistributionId(d)), n);
                proptest::prop_assert_eq!(t.select(DistributionId(d)).count(), n);
                proptest::prop_assert!(t.select(DistributionId(d)).all(|e| e.dist.0 == d));
            }
            proptest::prop_assert_eq!(t.iter().count(), model.len());
        }
    }
}
