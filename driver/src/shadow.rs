//! The host-side shadow of the CAM's occupancy.
//!
//! The driver keeps a copy of what it wrote, so inserting needs no read-back
//! to find a free slot, and removal by key and dump by distribution
//! identifier need no scan of the card.

use std::collections::{BTreeSet, HashMap};

use crate::key::KeyBits;

/// What the driver wrote into one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Normalised key and mask.
    pub bits: KeyBits,
    pub did: u16,
    pub result: u32,
}

#[derive(Debug)]
pub(crate) struct Shadow {
    slots: Vec<Option<Slot>>,
    /// Occupied bits, 64 slots per word.
    used: Vec<u64>,
    /// No free slot below `64 * hint`.
    hint: usize,
    /// Keys come from traffic an attacker can shape: aHash with random keys resists collision
    /// flooding. Sized for the card's depth at probe, so it never grows (rehashes) while
    /// entries are installed in a takeover.
    by_key: HashMap<KeyBits, u32, ahash::RandomState>,
    by_did: Vec<BTreeSet<u32>>,
    len: usize,
}

impl Shadow {
    pub fn new(depth: u32) -> Self {
        let n = depth as usize;
        Self {
            slots: vec![None; n],
            used: vec![0; n.div_ceil(64)],
            hint: 0,
            by_key: HashMap::with_capacity_and_hasher(n, ahash::RandomState::new()),
            by_did: vec![BTreeSet::new(); 1 << crate::types::DidSet::BITS],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    pub fn get(&self, i: u32) -> Option<&Slot> {
        self.slots.get(i as usize).and_then(Option::as_ref)
    }

    pub fn find(&self, bits: &KeyBits) -> Option<u32> {
        self.by_key.get(&bits.normalized()).copied()
    }

    /// Lowest free slot.
    pub fn lowest_free(&mut self) -> Option<u32> {
        let depth = self.depth();
        while self.hint < self.used.len() {
            let w = self.used[self.hint];
            if w != u64::MAX {
                let i = self.hint * 64 + (!w).trailing_zeros() as usize;
                return (i < depth).then_some(i as u32);
            }
            self.hint += 1;
        }
        None
    }

    /// Record `slot` at `i`, replacing whatever was there.
    pub fn set(&mut self, i: u32, slot: Slot) {
        self.clear(i);
        let s = Slot {
            bits: slot.bits.normalized(),
            ..slot
        };
        self.by_key.insert(s.bits, i);
        self.by_did[usize::from(s.did)].insert(i);
        self.used[i as usize / 64] |= 1 << (i % 64);
        self.slots[i as usize] = Some(s);
        self.len += 1;
    }

    /// Forget slot `i`; returns what it held.
    pub fn clear(&mut self, i: u32) -> Option<Slot> {
        let s = self.slots.get_mut(i as usize)?.take()?;
        if self.by_key.get(&s.bits) == Some(&i) {
            self.by_key.remove(&s.bits);
        }
        self.by_did[usize::from(s.did)].remove(&i);
        self.used[i as usize / 64] &= !(1 << (i % 64));
        self.hint = self.hint.min(i as usize / 64);
        self.len -= 1;
        Some(s)
    }

    pub fn clear_all(&mut self) -> usize {
        let n = self.len;
        *self = Self::new(self.depth() as u32);
        n
    }

    /// Occupied slots of identifier `did`, ascending.
    pub fn of_did(&self, did: u16) -> impl Iterator<Item = u32> + '_ {
        self.by_did
            .get(usize::from(did))
            .into_iter()
            .flat_map(|s| s.iter().copied())
    }

    /// Occupied slots, ascending.
    pub fn occupied(&self) -> impl Iterator<Item = u32> + '_ {
        self.used.iter().enumerate().flat_map(|(w, &bits)| {
            let mut b = bits;
            std::iter::from_fn(move || {
                (b != 0).then(|| {
                    let i = w * 64 + b.trailing_zeros() as usize;
                    b &= b - 1;
                    i as u32
                })
            })
        })
    }

    /// The `n` lowest free slots, ascending (fewer when fewer are free).
    pub fn free_slots(&self, n: usize) -> Vec<u32> {
        let depth = self.depth();
        let mut out = Vec::with_capacity(n);
        for (w, &bits) in self.used.iter().enumerate().skip(self.hint) {
            let mut free = !bits;
            while free != 0 && out.len() < n {
                let i = w * 64 + free.trailing_zeros() as usize;
                if i >= depth {
                    return out;
                }
                out.push(i as u32);
                free &= free - 1;
            }
            if out.len() == n {
                break;
            }
        }
        out
    }

    /// Whether any slot of the 32-slot group `g` is occupied.
    pub fn group_used(&self, g: u32) -> bool {
        let w = self.used[g as usize / 2];
        (w >> ((g % 2) * 32)) & 0xFFFF_FFFF != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(v: u32, did: u16) -> Slot {
        let mut bits = KeyBits::default();
        bits.key[0] = v;
        bits.mask[0] = u32::MAX;
        Slot {
            bits,
            did,
            result: v,
        }
    }

    #[test]
    fn allocation_and_indexes() {
        let mut s = Shadow::new(130);
        for i in 0..130 {
            assert_eq!(s.lowest_free(), Some(i));
            s.set(i, slot(i, (i % 3) as u16));
        }
        assert_eq!(s.lowest_free(), None);
        assert_eq!(s.clear(70).map(|x| x.result), Some(70));
        assert_eq!(s.clear(70), None);
        s.clear(3);
        assert_eq!(s.lowest_free(), Some(3));
        assert_eq!(s.find(&slot(5, 0).bits), Some(5));
        assert_eq!(s.find(&slot(70, 0).bits), None);
        assert_eq!(s.of_did(1).take(2).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(s.occupied().count(), 128);
        assert!(s.group_used(4));
        assert_eq!(s.len(), 128);
        assert_eq!(s.clear_all(), 128);
        assert_eq!(s.lowest_free(), Some(0));
    }
}
