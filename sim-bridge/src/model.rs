//! The reference model: a register-accurate Rust model of the card.
//!
//! [`ModelCard`] implements [`hal::RegIo`] with exactly the semantics of
//! `hdl/CARD.md`: the identity block at offset 0, the CAM block at
//! [`cam::BASE`], [`UNMAPPED_PATTERN`] for every offset no register maps
//! (holes inside blocks too), read-only registers that drop writes, write-only
//! registers that read 0, soft reset, the `STATUS` fields, the counters and
//! every CAM command with its error codes.
//!
//! Every command completes within the `CMD` write itself, so software never
//! observes `STATUS.BUSY` and the "CMD while busy" case cannot arise here.
//!
//! The model also offers [`ModelCard::dp_lookup`], the equivalent of the RTL's
//! data-path lookup port (without its pipeline latency), so host code can
//! exercise hit bits and the `DP_*` counters without the RTL.
//!
//! Performance: entries are kept as struct-of-arrays with the key stored
//! pre-masked; a bitmap of valid entries skips empty 64-entry groups and finds
//! the lowest free entry for `INSERT` without a scan of every entry. Searches
//! use a tuple-space index: valid entries are grouped by mask, and each group
//! maps a masked key to its entries, so a search is one hash probe per distinct
//! mask (a connection table has one or two) and the lowest matching index wins,
//! as in the RTL. With more than [`MAX_MASK_GROUPS`] distinct masks (random
//! register traffic), searches fall back to one pass over the valid entries.

use hal::io::check_access;
use hal::regs::{block_type, cam, esp, header, ident, port, sa, BAR_SIZE, UNMAPPED_PATTERN};
use hal::{BarOffset, HalError, RegIo, Wires};

use crate::model_crypto::CryptoModel;
use crate::model_port::{Hit, PortModel};
use std::collections::HashMap;

/// Key width in 32-bit words.
const KW: usize = cam::KEY_WORDS as usize;
/// Distribution-identifier bitmap width in 32-bit words.
const DW: usize = cam::DID_WORDS as usize;
/// Mask profiles (`CAP_PROFILES`).
const PROFILES: usize = cam::PROFILES as usize;
/// Default CAM depth of a simulated card.
pub const DEFAULT_DEPTH: u32 = 1024;
/// Largest depth the model accepts (keeps memory use bounded).
pub const MAX_DEPTH: u32 = 1 << 20;

/// Above this many distinct masks among valid entries, a search scans the
/// entries instead of probing each mask group.
pub const MAX_MASK_GROUPS: usize = 8;

/// The entries of one masked key: almost always one.
#[derive(Clone, Debug)]
enum Holders {
    One(u32),
    /// Several entries hold the same masked key (rare): boxed, to keep the common case small.
    Many(Box<[u32]>),
}

impl Holders {
    fn lowest(&self) -> Option<u32> {
        match self {
            Holders::One(i) => Some(*i),
            Holders::Many(v) => v.iter().min().copied(),
        }
    }
}

/// The valid entries of one mask: masked key to entry indices.
#[derive(Clone, Debug)]
struct MaskGroup {
    mask: [u32; KW],
    keys: HashMap<[u32; KW], Holders, ahash::RandomState>,
    len: usize,
}

/// Valid entries grouped by mask (tuple-space search). A group that empties is kept (with its
/// memory) while there is room, so refilling the card does not grow the index again.
#[derive(Clone, Debug)]
struct MaskIndex {
    groups: Vec<MaskGroup>,
    /// Capacity the first group is created with: the card's depth, as the CAM's own memory.
    depth: usize,
}

impl MaskIndex {
    fn new(depth: usize) -> Self {
        MaskIndex {
            groups: Vec::new(),
            depth,
        }
    }

    fn add(&mut self, mask: &[u32; KW], masked: &[u32; KW], i: u32) {
        let g = match self.groups.iter().position(|g| g.mask == *mask) {
            Some(g) => g,
            None => {
                if self.groups.len() >= MAX_MASK_GROUPS {
                    self.groups.retain(|g| g.len > 0);
                }
                let cap = if self.groups.is_empty() {
                    self.depth
                } else {
                    0
                };
                self.groups.push(MaskGroup {
                    mask: *mask,
                    keys: HashMap::with_capacity_and_hasher(cap, ahash::RandomState::new()),
                    len: 0,
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[g];
        g.len += 1;
        match g.keys.entry(*masked) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Holders::One(i));
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let h = o.get_mut();
                match h {
                    Holders::One(j) => *h = Holders::Many(Box::new([*j, i])),
                    Holders::Many(v) => {
                        let mut all = v.to_vec();
                        all.push(i);
                        *v = all.into_boxed_slice();
                    }
                }
            }
        }
    }

    fn remove(&mut self, mask: &[u32; KW], masked: &[u32; KW], i: u32) {
        let Some(g) = self.groups.iter_mut().find(|g| g.mask == *mask) else {
            return;
        };
        let gone = match g.keys.get_mut(masked) {
            Some(Holders::One(j)) if *j == i => true,
            Some(Holders::Many(v)) => {
                if let Some(p) = v.iter().position(|&x| x == i) {
                    let mut rest = v.to_vec();
                    rest.swap_remove(p);
                    g.len -= 1;
                    *v = rest.into_boxed_slice();
                }
                if let [only] = v[..] {
                    g.keys.insert(*masked, Holders::One(only));
                }
                false
            }
            _ => false,
        };
        if gone {
            g.keys.remove(masked);
            g.len -= 1;
        }
    }

    fn clear(&mut self) {
        for g in &mut self.groups {
            g.keys.clear();
            g.len = 0;
        }
    }

    /// Lowest index matching `key`, or `None` when the index is not used
    /// (too many masks) — the caller then scans.
    fn find(&self, key: &[u32; KW]) -> Option<Option<usize>> {
        if self.groups.len() > MAX_MASK_GROUPS {
            return None;
        }
        let mut best: Option<u32> = None;
        for g in self.groups.iter().filter(|g| g.len > 0) {
            let mut k = *key;
            for (w, m) in k.iter_mut().zip(&g.mask) {
                *w &= m;
            }
            if let Some(lowest) = g.keys.get(&k).and_then(Holders::lowest) {
                best = Some(best.map_or(lowest, |b| b.min(lowest)));
            }
        }
        Some(best.map(|b| b as usize))
    }
}

/// The stored contents of one CAM entry, as `READ` would return them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelEntry {
    /// Key words, `key[0]` = key bits 31:0.
    pub key: [u32; KW],
    /// Mask words: a 1 bit takes part in the comparison.
    pub mask: [u32; KW],
    /// Result word.
    pub result: u32,
    /// Distribution identifier.
    pub did: u16,
    /// Valid bit.
    pub valid: bool,
    /// Hit bit.
    pub hit: bool,
}

/// Result of a data-path lookup ([`ModelCard::dp_lookup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpResult {
    /// Index of the winning entry.
    pub index: u32,
    /// Its result word.
    pub result: u32,
    /// Its distribution identifier.
    pub did: u16,
}

/// Staging and status registers of the CAM block.
#[derive(Clone, Copy, Debug)]
struct CamRegs {
    key: [u32; KW],
    mask: [u32; KW],
    result: u32,
    index: u32,
    did: u16,
    did_bitmap: [u32; DW],
    cmd: u32,
    status: u32,
    hits: u32,
    dp_lookups: u32,
    dp_hits: u32,
    cmd_count: u32,
    err_count: u32,
    /// Mask profiles (`SET_PROFILE`).
    profiles: [[u32; KW]; PROFILES],
    batch_done: u32,
    batch_errs: u32,
    batch_err: u32,
}

impl Default for CamRegs {
    fn default() -> Self {
        CamRegs {
            key: [0; KW],
            mask: [0; KW],
            result: 0,
            index: 0,
            did: 0,
            did_bitmap: [0; DW],
            cmd: 0,
            status: 0,
            hits: 0,
            dp_lookups: 0,
            dp_hits: 0,
            cmd_count: 0,
            err_count: 0,
            profiles: [[0; KW]; PROFILES],
            batch_done: 0,
            batch_errs: 0,
            batch_err: 0,
        }
    }
}

/// The reference model of the card. See the module documentation.
#[derive(Clone, Debug)]
pub struct ModelCard {
    depth: u32,
    scratch: u32,
    regs: CamRegs,
    /// Stored key words, as written (READ returns them unmasked).
    keys: Vec<[u32; KW]>,
    /// `key & mask`, what a search compares against.
    masked: Vec<[u32; KW]>,
    masks: Vec<[u32; KW]>,
    results: Vec<u32>,
    dids: Vec<u16>,
    /// Valid bits, 64 entries per word.
    valid: Vec<u64>,
    /// Hit bits, 64 entries per word.
    hit: Vec<u64>,
    occupancy: u32,
    /// Valid entries by mask, for searches.
    index: MaskIndex,
    /// The SA table and ESP engine blocks (`model_crypto.rs`).
    crypto: Box<CryptoModel>,
    /// The packet port block (`model_port.rs`).
    port: Box<PortModel>,
}

impl Default for ModelCard {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelCard {
    /// A card with the default depth ([`DEFAULT_DEPTH`] entries), in its
    /// power-on state.
    #[must_use]
    pub fn new() -> Self {
        Self::build(DEFAULT_DEPTH)
    }

    /// A card with `depth` CAM entries.
    ///
    /// # Errors
    /// [`HalError::Open`] when `depth` is 0 or above [`MAX_DEPTH`].
    pub fn with_depth(depth: u32) -> Result<Self, HalError> {
        if depth == 0 || depth > MAX_DEPTH {
            return Err(HalError::Open(format!(
                "model card depth {depth} is out of range: choose 1..={MAX_DEPTH}"
            )));
        }
        Ok(Self::build(depth))
    }

    fn build(depth: u32) -> Self {
        let n = depth as usize;
        let words = n.div_ceil(64);
        Self {
            depth,
            scratch: 0,
            regs: CamRegs::default(),
            keys: vec![[0; KW]; n],
            masked: vec![[0; KW]; n],
            masks: vec![[0; KW]; n],
            results: vec![0; n],
            dids: vec![0; n],
            valid: vec![0; words],
            hit: vec![0; words],
            occupancy: 0,
            index: MaskIndex::new(n),
            crypto: Box::default(),
            port: Box::new(PortModel::new(n)),
        }
    }

    /// Number of CAM entries.
    #[must_use]
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Number of valid entries.
    #[must_use]
    pub fn occupancy(&self) -> u32 {
        self.occupancy
    }

    /// A copy of entry `index`, or `None` past the depth (a test back door,
    /// not a register access).
    #[must_use]
    pub fn entry(&self, index: u32) -> Option<ModelEntry> {
        let i = index as usize;
        (index < self.depth).then(|| ModelEntry {
            key: self.keys[i],
            mask: self.masks[i],
            result: self.results[i],
            did: self.dids[i],
            valid: self.is_valid(i),
            hit: bit(&self.hit, i),
        })
    }

    /// The data-path lookup port: look `key` up as a packet would. A hit sets
    /// the entry's hit bit and counts in `DP_HITS`; every call counts in
    /// `DP_LOOKUPS`.
    pub fn dp_lookup(&mut self, key: &[u32; KW]) -> Option<DpResult> {
        self.regs.dp_lookups = self.regs.dp_lookups.wrapping_add(1);
        let i = self.find(key)?;
        self.regs.dp_hits = self.regs.dp_hits.wrapping_add(1);
        set_bit(&mut self.hit, i, true);
        Some(DpResult {
            index: i as u32,
            result: self.results[i],
            did: self.dids[i],
        })
    }

    /// One frame through the packet port block, the CAM's data-path port doing its lookup.
    fn run_frame(&mut self, port: u8, from_host: bool, frame: &[u8]) {
        if let Some(p) = self.port.begin(port, from_host, frame) {
            let hit = self.dp_lookup(&p.key).map(|h| Hit {
                index: h.index,
                result: h.result,
            });
            self.port.finish(p, frame, hit);
        }
    }

    /// Return every block to its power-on state.
    fn soft_reset(&mut self) {
        // Frames already sent are on the wire, not in the card: they stay for `wire_tx`.
        let sent = std::mem::take(&mut self.port.out);
        *self = Self::build(self.depth);
        self.port.out = sent;
    }

    fn is_valid(&self, i: usize) -> bool {
        bit(&self.valid, i)
    }

    /// Lowest valid entry matching `key`.
    fn find(&self, key: &[u32; KW]) -> Option<usize> {
        match self.index.find(key) {
            Some(found) => found,
            None => self.find_scan(key),
        }
    }

    /// Lowest valid entry matching `key`, by one pass over the valid entries.
    fn find_scan(&self, key: &[u32; KW]) -> Option<usize> {
        for (w, &bits) in self.valid.iter().enumerate() {
            let mut b = bits;
            while b != 0 {
                let i = w * 64 + b.trailing_zeros() as usize;
                b &= b - 1;
                let m = &self.masks[i];
                let s = &self.masked[i];
                if (0..KW).all(|j| key[j] & m[j] == s[j]) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Lowest invalid entry.
    fn lowest_free(&self) -> Option<usize> {
        self.valid.iter().enumerate().find_map(|(w, &bits)| {
            let i = w * 64 + (!bits).trailing_zeros() as usize;
            (bits != u64::MAX && i < self.depth as usize).then_some(i)
        })
    }

    /// Store the staged entry in slot `i`, with `mask` (MASK, or a profile's).
    fn store(&mut self, i: usize, mask: [u32; KW]) {
        if self.is_valid(i) {
            self.index.remove(&self.masks[i], &self.masked[i], i as u32);
        }
        let r = &self.regs;
        self.keys[i] = r.key;
        self.masks[i] = mask;
        self.masked[i] = std::array::from_fn(|j| r.key[j] & mask[j]);
        self.results[i] = r.result;
        self.dids[i] = r.did;
        if !self.is_valid(i) {
            self.occupancy += 1;
        }
        self.index.add(&self.masks[i], &self.masked[i], i as u32);
        set_bit(&mut self.valid, i, true);
        set_bit(&mut self.hit, i, false);
        self.port.entry_written(i);
    }

    fn invalidate(&mut self, i: usize) {
        if self.is_valid(i) {
            self.occupancy -= 1;
            self.index.remove(&self.masks[i], &self.masked[i], i as u32);
        }
        set_bit(&mut self.valid, i, false);
        set_bit(&mut self.hit, i, false);
    }

    /// Run a command to completion: returns the STATUS fields (without DONE)
    /// and the error code.
    fn execute(&mut self, code: u32) -> (u32, u32) {
        use cam::{cmd, err, status};
        let idx = self.regs.index;
        let in_range = idx < self.depth;
        match code {
            cmd::WRITE | cmd::INVALIDATE | cmd::READ if !in_range => (0, err::BAD_INDEX),
            cmd::WRITE => {
                self.store(idx as usize, self.regs.mask);
                (0, err::OK)
            }
            cmd::INVALIDATE => {
                self.invalidate(idx as usize);
                (0, err::OK)
            }
            cmd::READ => {
                let i = idx as usize;
                self.regs.key = self.keys[i];
                self.regs.mask = self.masks[i];
                self.regs.result = self.results[i];
                self.regs.did = self.dids[i];
                let f = status::VALID.put(u32::from(self.is_valid(i)))
                    | status::HIT.put(u32::from(bit(&self.hit, i)));
                (f, err::OK)
            }
            cmd::SEARCH => {
                let key = self.regs.key;
                match self.find(&key) {
                    Some(i) => {
                        self.regs.index = i as u32;
                        self.regs.result = self.results[i];
                        self.regs.did = self.dids[i];
                        set_bit(&mut self.hit, i, true);
                        (status::MATCH.put(1), err::OK)
                    }
                    None => {
                        self.regs.index = u32::MAX;
                        (0, err::OK)
                    }
                }
            }
            cmd::FLUSH_ALL => {
                self.valid.iter_mut().for_each(|w| *w = 0);
                self.hit.iter_mut().for_each(|w| *w = 0);
                self.occupancy = 0;
                self.index.clear();
                (0, err::OK)
            }
            cmd::FLUSH_DID => {
                let bm = self.regs.did_bitmap;
                for w in 0..self.valid.len() {
                    let mut b = self.valid[w];
                    while b != 0 {
                        let i = w * 64 + b.trailing_zeros() as usize;
                        b &= b - 1;
                        let d = usize::from(self.dids[i]);
                        if (bm[d / 32] >> (d % 32)) & 1 == 1 {
                            self.invalidate(i);
                        }
                    }
                }
                (0, err::OK)
            }
            cmd::HIT_RC => {
                if u64::from(idx) * 32 >= u64::from(self.depth) {
                    return (0, err::BAD_INDEX);
                }
                let base = idx as usize * 32;
                let mut hits = 0u32;
                for b in 0..32 {
                    let i = base + b;
                    if i < self.depth as usize && bit(&self.hit, i) {
                        hits |= 1 << b;
                        set_bit(&mut self.hit, i, false);
                    }
                }
                self.regs.hits = hits;
                (0, err::OK)
            }
            cmd::INSERT => (0, self.insert_with(self.regs.mask)),
            cmd::SET_PROFILE => match self.regs.profiles.get_mut(idx as usize) {
                Some(p) => {
                    *p = self.regs.mask;
                    (0, err::OK)
                }
                None => (0, err::BAD_PROFILE),
            },
            cmd::BATCH_START => {
                self.regs.batch_done = 0;
                self.regs.batch_errs = 0;
                self.regs.batch_err = 0;
                (0, err::OK)
            }
            _ => (0, err::UNKNOWN_CMD),
        }
    }

    /// INSERT with `mask`: the error code.
    fn insert_with(&mut self, mask: [u32; KW]) -> u32 {
        match self.lowest_free() {
            Some(i) => {
                self.store(i, mask);
                self.regs.index = i as u32;
                cam::err::OK
            }
            None => cam::err::FULL,
        }
    }

    /// A batch entry command (`WRITE_P`, `INSERT_P`) with mask profile `profile`: the error
    /// code; the batch counters count it.
    fn batch_entry(&mut self, code: u32, profile: u32) -> u32 {
        use cam::{batch_err, cmd, err};
        let e = match self.regs.profiles.get(profile as usize).copied() {
            None => err::BAD_PROFILE,
            Some(mask) if code == cmd::INSERT_P => self.insert_with(mask),
            Some(_) if self.regs.index >= self.depth => err::BAD_INDEX,
            Some(mask) => {
                self.store(self.regs.index as usize, mask);
                err::OK
            }
        };
        let r = &mut self.regs;
        if e != err::OK {
            if r.batch_errs == 0 {
                r.batch_err = batch_err::POS.put(r.batch_done) | batch_err::CODE.put(e);
            }
            r.batch_errs = r.batch_errs.wrapping_add(1);
        }
        r.batch_done = r.batch_done.wrapping_add(1);
        e
    }

    fn write_cmd(&mut self, code: u32) {
        use cam::status;
        self.regs.cmd = code;
        // STATUS would read BUSY here; the model completes at once.
        let (fields, e) = match batch_entry_code(code) {
            Some((c, profile)) => (0, self.batch_entry(c, profile)),
            None => self.execute(code),
        };
        self.regs.status = status::DONE.put(1) | fields | status::ERR.put(e);
        self.regs.cmd_count = self.regs.cmd_count.wrapping_add(1);
        if e != cam::err::OK {
            self.regs.err_count = self.regs.err_count.wrapping_add(1);
        }
    }

    fn ident_read(&self, o: u32) -> u32 {
        let head = (block_type::IDENT, ident::MAJOR, ident::MINOR, cam::BASE);
        if let Some(v) = header_read(o, head) {
            return v;
        }
        match o {
            _ if o == ident::MAGIC.offset => ident::values::MAGIC,
            _ if o == ident::BUILD_ID.offset => ident::values::BUILD_ID_SIM,
            _ if o == ident::SCRATCH.offset => self.scratch,
            _ if o == ident::CONTROL.offset => 0,
            _ if o == ident::BAR_BYTES.offset => BAR_SIZE,
            _ => UNMAPPED_PATTERN,
        }
    }

    fn ident_write(&mut self, o: u32, v: u32) {
        if o == ident::SCRATCH.offset {
            self.scratch = v;
        } else if o == ident::CONTROL.offset && ident::control::SOFT_RESET.get(v) == 1 {
            self.soft_reset();
        }
    }

    fn cam_read(&self, o: u32) -> u32 {
        if let Some(v) = header_read(o, (block_type::CAM, cam::MAJOR, cam::MINOR, sa::BASE)) {
            return v;
        }
        let r = &self.regs;
        if let Some(i) = array_index(cam::KEY, o) {
            return r.key[i];
        }
        if let Some(i) = array_index(cam::MASK, o) {
            return r.mask[i];
        }
        if let Some(i) = array_index(cam::DID_BITMAP, o) {
            return r.did_bitmap[i];
        }
        match o {
            _ if o == cam::CAP_DEPTH.offset => self.depth,
            _ if o == cam::CAP_KEY_BITS.offset => cam::KEY_BITS,
            _ if o == cam::CAP_RESULT_BITS.offset => 32,
            _ if o == cam::CAP_DID_BITS.offset => cam::DID_BITS,
            _ if o == cam::CAP_LOOKUP_LATENCY.offset => cam::LOOKUP_LATENCY,
            _ if o == cam::OCCUPANCY.offset => self.occupancy,
            _ if o == cam::CMD.offset => r.cmd,
            _ if o == cam::STATUS.offset => r.status,
            _ if o == cam::INDEX.offset => r.index,
            _ if o == cam::RESULT.offset => r.result,
            _ if o == cam::DID.offset => u32::from(r.did),
            _ if o == cam::HITS.offset => r.hits,
            _ if o == cam::DP_LOOKUPS.offset => r.dp_lookups,
            _ if o == cam::DP_HITS.offset => r.dp_hits,
            _ if o == cam::CMD_COUNT.offset => r.cmd_count,
            _ if o == cam::ERR_COUNT.offset => r.err_count,
            _ if o == cam::CAP_PROFILES.offset => cam::PROFILES,
            _ if o == cam::BATCH_DONE.offset => r.batch_done,
            _ if o == cam::BATCH_ERRS.offset => r.batch_errs,
            _ if o == cam::BATCH_ERR.offset => r.batch_err,
            _ => UNMAPPED_PATTERN,
        }
    }

    fn cam_write(&mut self, o: u32, v: u32) {
        let r = &mut self.regs;
        if let Some(i) = array_index(cam::KEY, o) {
            r.key[i] = v;
        } else if let Some(i) = array_index(cam::MASK, o) {
            r.mask[i] = v;
        } else if let Some(i) = array_index(cam::DID_BITMAP, o) {
            r.did_bitmap[i] = v;
        } else if o == cam::INDEX.offset {
            r.index = v;
        } else if o == cam::RESULT.offset {
            r.result = v;
        } else if o == cam::DID.offset {
            r.did = (v & 0xFFF) as u16;
        } else if o == cam::CMD.offset {
            self.write_cmd(v);
        }
        // Everything else is read-only or unmapped: the write is dropped.
    }
}

impl RegIo for ModelCard {
    fn read32(&mut self, offset: BarOffset) -> Result<u32, HalError> {
        let o = check_access(offset, self.size())? as u32;
        Ok(if o < ident::BASE + 0x1000 {
            self.ident_read(o - ident::BASE)
        } else if (cam::BASE..cam::BASE + cam::SPAN).contains(&o) {
            self.cam_read(o - cam::BASE)
        } else if (sa::BASE..sa::BASE + sa::SPAN).contains(&o) {
            self.crypto.sa_read(o - sa::BASE)
        } else if (esp::BASE..esp::BASE + esp::SPAN).contains(&o) {
            self.crypto.esp_read(o - esp::BASE)
        } else if (port::BASE..port::BASE + port::SPAN).contains(&o) {
            self.port.read(o - port::BASE)
        } else {
            UNMAPPED_PATTERN
        })
    }

    fn write32(&mut self, offset: BarOffset, value: u32) -> Result<(), HalError> {
        let o = check_access(offset, self.size())? as u32;
        if o < ident::BASE + 0x1000 {
            self.ident_write(o - ident::BASE, value);
        } else if (cam::BASE..cam::BASE + cam::SPAN).contains(&o) {
            self.cam_write(o - cam::BASE, value);
        } else if (sa::BASE..sa::BASE + sa::SPAN).contains(&o) {
            self.crypto.sa_write(o - sa::BASE, value);
        } else if (esp::BASE..esp::BASE + esp::SPAN).contains(&o) {
            self.crypto.esp_write(o - esp::BASE, value);
        } else if (port::BASE..port::BASE + port::SPAN).contains(&o) {
            if let Some((p, frame)) = self.port.write(o - port::BASE, value) {
                self.run_frame(p, true, &frame);
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        u64::from(BAR_SIZE)
    }

    fn describe(&self) -> String {
        format!("model(depth={})", self.depth)
    }

    fn wires(&mut self) -> Option<&mut dyn Wires> {
        Some(self)
    }
}

impl Wires for ModelCard {
    fn wire_rx(&mut self, port: u8, frame: &[u8]) -> Result<(), HalError> {
        if u32::from(port) >= port::PORTS {
            return Err(HalError::NoPort { port });
        }
        self.run_frame(port, false, frame);
        Ok(())
    }

    fn wire_tx(&mut self) -> Option<(u8, Vec<u8>)> {
        self.port.out.pop_front()
    }
}

/// `(code, profile)` when the `CMD` word `v` is a batch entry command (`WRITE_P` or `INSERT_P`
/// in `CMD.CODE`, bits 31:16 zero); every other word is a code of its own.
pub fn batch_entry_code(v: u32) -> Option<(u32, u32)> {
    use cam::{cmd, cmd_word};
    let code = cmd_word::CODE.get(v);
    (v >> 16 == 0 && (code == cmd::WRITE_P || code == cmd::INSERT_P))
        .then(|| (code, cmd_word::PROFILE.get(v)))
}

fn version(major: u16, minor: u16) -> u32 {
    (u32::from(major) << 16) | u32::from(minor)
}

/// The header register at offset `o` of a block whose header is `(type, major, minor, next)`:
/// every block starts with TYPE, VERSION and NEXT ([`hal::regs::header`]). `None` past them.
pub(crate) fn header_read(o: u32, (ty, major, minor, next): (u32, u16, u16, u32)) -> Option<u32> {
    match o {
        _ if o == header::TYPE.offset => Some(ty),
        _ if o == header::VERSION.offset => Some(version(major, minor)),
        _ if o == header::NEXT.offset => Some(next),
        _ => None,
    }
}

/// Element index of `o` inside register array `r`, if it falls in it.
fn array_index(r: hal::regs::Reg, o: u32) -> Option<usize> {
    (o >= r.offset && o < r.offset + 4 * r.count).then(|| ((o - r.offset) / 4) as usize)
}

fn bit(words: &[u64], i: usize) -> bool {
    (words[i / 64] >> (i % 64)) & 1 == 1
}

fn set_bit(words: &mut [u64], i: usize, v: bool) {
    if v {
        words[i / 64] |= 1 << (i % 64);
    } else {
        words[i / 64] &= !(1 << (i % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::regs::{cam::cmd, cam::err, cam::status, header, DEVICE_GONE};

    fn rd(m: &mut ModelCard, o: u32) -> u32 {
        m.read32(BarOffset(o)).unwrap()
    }
    fn wr(m: &mut ModelCard, o: u32, v: u32) {
        m.write32(BarOffset(o), v).unwrap();
    }
    fn c(r: hal::regs::Reg) -> u32 {
        cam::BASE + r.offset
    }
    fn ca(r: hal::regs::Reg, i: u32) -> u32 {
        cam::BASE + r.at(i)
    }
    fn run(m: &mut ModelCard, code: u32) -> u32 {
        wr(m, c(cam::CMD), code);
        rd(m, c(cam::STATUS))
    }
    fn stage(m: &mut ModelCard, key: [u32; KW], mask: [u32; KW], result: u32, did: u32) {
        for i in 0..KW as u32 {
            wr(m, ca(cam::KEY, i), key[i as usize]);
            wr(m, ca(cam::MASK, i), mask[i as usize]);
        }
        wr(m, c(cam::RESULT), result);
        wr(m, c(cam::DID), did);
    }
    fn key(v: u32) -> [u32; KW] {
        let mut k = [0; KW];
        k[0] = v;
        k[9] = v.rotate_left(7);
        k
    }
    const FULL: [u32; KW] = [u32::MAX; KW];

    #[test]
    fn identity_block() {
        let mut m = ModelCard::new();
        assert_eq!(rd(&mut m, ident::TYPE.offset), block_type::IDENT);
        assert_eq!(rd(&mut m, ident::VERSION.offset), 0x0001_0000);
        assert_eq!(rd(&mut m, ident::NEXT.offset), cam::BASE);
        assert_eq!(rd(&mut m, ident::MAGIC.offset), ident::values::MAGIC);
        assert_eq!(
            rd(&mut m, ident::BUILD_ID.offset),
            ident::values::BUILD_ID_SIM
        );
        assert_eq!(rd(&mut m, ident::BAR_BYTES.offset), BAR_SIZE);
        wr(&mut m, ident::SCRATCH.offset, 0xDEAD_BEEF);
        assert_eq!(rd(&mut m, ident::SCRATCH.offset), 0xDEAD_BEEF);
        // RO drops writes, WO reads 0.
        wr(&mut m, ident::MAGIC.offset, 1);
        assert_eq!(rd(&mut m, ident::MAGIC.offset), ident::values::MAGIC);
        assert_eq!(rd(&mut m, ident::CONTROL.offset), 0);
        for o in [
            ident::TYPE.offset,
            ident::VERSION.offset,
            ident::MAGIC.offset,
        ] {
            assert_ne!(rd(&mut m, o), DEVICE_GONE);
        }
    }

    #[test]
    fn cam_header_and_capabilities() {
        let mut m = ModelCard::with_depth(100).unwrap();
        assert_eq!(rd(&mut m, c(header::TYPE)), block_type::CAM);
        assert_eq!(rd(&mut m, c(header::VERSION)), 0x0002_0001);
        assert_eq!(rd(&mut m, c(cam::CAP_PROFILES)), cam::PROFILES);
        assert_eq!(rd(&mut m, c(header::NEXT)), sa::BASE);
        assert_eq!(rd(&mut m, c(cam::CAP_DEPTH)), 100);
        assert_eq!(rd(&mut m, c(cam::CAP_KEY_BITS)), 320);
        assert_eq!(rd(&mut m, c(cam::CAP_RESULT_BITS)), 32);
        assert_eq!(rd(&mut m, c(cam::CAP_DID_BITS)), 12);
        assert_eq!(rd(&mut m, c(cam::CAP_LOOKUP_LATENCY)), cam::LOOKUP_LATENCY);
        assert!(ModelCard::with_depth(0).is_err());
        assert!(ModelCard::with_depth(MAX_DEPTH + 1).is_err());
    }

    #[test]
    fn unmapped_offsets_and_bounds() {
        let mut m = ModelCard::new();
        hal::conformance::assert_unmapped(&mut m, hal::conformance::UNMAPPED_SAMPLES);
        hal::conformance::assert_bad_offsets_rejected(&mut m, &[2], &[BAR_SIZE]);
    }

    #[test]
    fn every_mapped_register_is_named_in_the_map() {
        // Offsets the map does not name read the pattern; named ones never do
        // (on a fresh card), so the model and regs.rs agree on the layout.
        let mut m = ModelCard::new();
        for b in hal::regs::BLOCKS {
            for o in (0..b.span).step_by(4) {
                let named = b
                    .regs
                    .iter()
                    .any(|r| o >= r.offset && o < r.offset + 4 * r.count);
                let v = rd(&mut m, b.base + o);
                assert_eq!(v == UNMAPPED_PATTERN, !named, "{} +0x{o:x}", b.prefix);
            }
        }
    }

    #[test]
    fn staging_registers_and_ro_counters() {
        let mut m = ModelCard::new();
        wr(&mut m, c(cam::DID), 0x1234);
        assert_eq!(rd(&mut m, c(cam::DID)), 0x234);
        wr(&mut m, ca(cam::DID_BITMAP, 7), 0xFFFF_FFFF);
        assert_eq!(rd(&mut m, ca(cam::DID_BITMAP, 7)), 0xFFFF_FFFF);
        for r in [
            cam::OCCUPANCY,
            cam::STATUS,
            cam::HITS,
            cam::CMD_COUNT,
            cam::ERR_COUNT,
            cam::CAP_DEPTH,
        ] {
            let before = rd(&mut m, c(r));
            wr(&mut m, c(r), 0x77);
            assert_eq!(rd(&mut m, c(r)), before, "{}", r.name);
        }
        assert_eq!(rd(&mut m, c(cam::STATUS)), 0);
    }

    #[test]
    fn write_read_search_invalidate() {
        let mut m = ModelCard::new();
        let mut mask = FULL;
        mask[9] = 0; // word 9 is don't-care
        stage(&mut m, key(7), mask, 0xAB, 3);
        wr(&mut m, c(cam::INDEX), 5);
        let s = run(&mut m, cmd::WRITE);
        assert_eq!(s, status::DONE.put(1));
        assert_eq!(rd(&mut m, c(cam::OCCUPANCY)), 1);
        assert_eq!(rd(&mut m, c(cam::CMD)), cmd::WRITE);

        // Search with a different don't-care word hits.
        let mut k = key(7);
        k[9] = 0x1234_5678;
        stage(&mut m, k, [0; KW], 0, 0);
        let s = run(&mut m, cmd::SEARCH);
        assert_eq!(s, status::DONE.put(1) | status::MATCH.put(1));
        assert_eq!(rd(&mut m, c(cam::INDEX)), 5);
        assert_eq!(rd(&mut m, c(cam::RESULT)), 0xAB);
        assert_eq!(rd(&mut m, c(cam::DID)), 3);

        // READ returns the key as written (unmasked) and the hit bit.
        wr(&mut m, ca(cam::KEY, 9), 0);
        let s = run(&mut m, cmd::READ);
        assert_eq!(
            s,
            status::DONE.put(1) | status::VALID.put(1) | status::HIT.put(1)
        );
        assert_eq!(rd(&mut m, ca(cam::KEY, 9)), key(7)[9]);
        assert_eq!(rd(&mut m, ca(cam::MASK, 9)), 0);

        // Miss: INDEX all ones, RESULT and DID unchanged.
        stage(&mut m, key(8), [0; KW], 0x99, 9);
        let s = run(&mut m, cmd::SEARCH);
        assert_eq!(s, status::DONE.put(1));
        assert_eq!(rd(&mut m, c(cam::INDEX)), u32::MAX);
        assert_eq!(rd(&mut m, c(cam::RESULT)), 0x99);
        assert_eq!(rd(&mut m, c(cam::DID)), 9);

        // INVALIDATE keeps the data but clears valid and hit.
        wr(&mut m, c(cam::INDEX), 5);
        run(&mut m, cmd::INVALIDATE);
        assert_eq!(rd(&mut m, c(cam::OCCUPANCY)), 0);
        let s = run(&mut m, cmd::READ);
        assert_eq!(s, status::DONE.put(1));
        assert_eq!(rd(&mut m, ca(cam::KEY, 0)), 7);
        assert_eq!(m.entry(5).unwrap().result, 0xAB);
        assert_eq!(rd(&mut m, c(cam::CMD_COUNT)), 6);
        assert_eq!(rd(&mut m, c(cam::ERR_COUNT)), 0);
    }

    #[test]
    fn lowest_index_wins_and_search_sets_hit() {
        let mut m = ModelCard::new();
        stage(&mut m, key(1), [0; KW], 10, 0); // matches everything
        wr(&mut m, c(cam::INDEX), 40);
        run(&mut m, cmd::WRITE);
        stage(&mut m, key(1), FULL, 20, 0);
        wr(&mut m, c(cam::INDEX), 30);
        run(&mut m, cmd::WRITE);
        stage(&mut m, key(1), [0; KW], 0, 0);
        run(&mut m, cmd::SEARCH);
        assert_eq!(rd(&mut m, c(cam::INDEX)), 30);
        assert!(m.entry(30).unwrap().hit);
        assert!(!m.entry(40).unwrap().hit);
        stage(&mut m, key(2), [0; KW], 0, 0);
        run(&mut m, cmd::SEARCH);
        assert_eq!(rd(&mut m, c(cam::INDEX)), 40);
        // WRITE over an entry clears its hit bit.
        wr(&mut m, c(cam::INDEX), 40);
        run(&mut m, cmd::WRITE);
        assert!(!m.entry(40).unwrap().hit);
        assert_eq!(rd(&mut m, c(cam::OCCUPANCY)), 2);
    }

    #[test]
    fn bad_index_and_unknown_command() {
        let mut m = ModelCard::with_depth(64).unwrap();
        for code in [cmd::WRITE, cmd::INVALIDATE, cmd::READ] {
            wr(&mut m, c(cam::INDEX), 64);
            let s = run(&mut m, code);
            assert_eq!(s, status::DONE.put(1) | status::ERR.put(err::BAD_INDEX));
        }
        wr(&mut m, c(cam::INDEX), 2); // 2*32 >= 64
        assert_eq!(status::ERR.get(run(&mut m, cmd::HIT_RC)), err::BAD_INDEX);
        wr(&mut m, c(cam::INDEX), u32::MAX);
        assert_eq!(status::ERR.get(run(&mut m, cmd::HIT_RC)), err::BAD_INDEX);
        for code in [0, 13, 0x1_000A, 0xFFFF_FFFF] {
            assert_eq!(
                run(&mut m, code),
                status::DONE.put(1) | status::ERR.put(err::UNKNOWN_CMD)
            );
            assert_eq!(rd(&mut m, c(cam::CMD)), code);
        }
        assert_eq!(rd(&mut m, c(cam::OCCUPANCY)), 0);
        assert_eq!(rd(&mut m, c(cam::CMD_COUNT)), 9);
        assert_eq!(rd(&mut m, c(cam::ERR_COUNT)), 9);
    }

    #[test]
    fn insert_fills_lowest_free_then_full() {
        let mut m = ModelCard::with_depth(70).unwrap();
        for i in 0..70 {
            stage(&mut m, key(i), FULL, i, 0);
            assert_eq!(run(&mut m, cmd::INSERT), status::DONE.put(1));
            assert_eq!(rd(&mut m, c(cam::INDEX)), i);
        }
        stage(&mut m, key(99), FULL, 0, 0);
        wr(&mut m, c(cam::INDEX), 5);
        assert_eq!(status::ERR.get(run(&mut m, cmd::INSERT)), err::FULL);
        assert_eq!(rd(&mut m, c(cam::INDEX)), 5);
        assert_eq!(rd(&mut m, c(cam::OCCUPANCY)), 70);
        wr(&mut m, c(cam::INDEX), 66);
        run(&mut m, cmd::INVALIDATE);
        wr(&mut m, c(cam::INDEX), 3);
        run(&mut m, cmd::INVALIDATE);
        run(&mut m, cmd::INSERT);
        assert_eq!(rd(&mut m, c(cam::INDEX)), 3);
        run(&mut m, cmd::INSERT);
        assert_eq!(rd(&mut m, c(cam::INDEX)), 66);
        assert_eq!(m.entry(66).unwrap().key, key(99));
    }

    #[test]
    fn flush_did_and_flush_all() {
        let mut m = ModelCard::new();
        for i in 0..300u32 {
            stage(&mut m, key(i), FULL, 0, i % 256);
            run(&mut m, cmd::INSERT);
        }
        // Flush identifiers 0, 40 and 255.
        wr(&mut m, ca(cam::DID_BITMAP, 0), 1);
        wr(&mut m, ca(cam::DID_BITMAP, 1), 1 << 8);
        wr(&mut m, ca(cam::DID_BITMAP, 7), 1 << 31);
        run(&mut m, cmd::FLUSH_DID);
        assert_eq!(rd(&mut m, c(cam::OCCUPANCY)), 300 - 5);
        for i in [0, 256, 40, 296, 255] {
            assert!(!m.entry(i).unwrap().valid, "{i}");
        }
        assert!(m.entry(1).unwrap().valid);
        run(&mut m, cmd::FLUSH_ALL);
        assert_eq!(rd(&mut m, c(cam::OCCUPANCY)), 0);
        assert_eq!(m.entry(1).unwrap().key, key(1));
    }

    #[test]
    fn hit_read_and_clear() {
        let mut m = ModelCard::with_depth(40).unwrap();
        for i in 0..40 {
            stage(&mut m, key(i), FULL, 0, 0);
            run(&mut m, cmd::INSERT);
        }
        for i in [0u32, 31, 32, 39] {
            stage(&mut m, key(i), [0; KW], 0, 0);
            run(&mut m, cmd::SEARCH);
        }
        wr(&mut m, c(cam::INDEX), 0);
        assert_eq!(run(&mut m, cmd::HIT_RC), status::DONE.put(1));
        assert_eq!(rd(&mut m, c(cam::HITS)), 1 | 1 << 31);
        run(&mut m, cmd::HIT_RC);
        assert_eq!(rd(&mut m, c(cam::HITS)), 0);
        wr(&mut m, c(cam::INDEX), 1);
        run(&mut m, cmd::HIT_RC);
        assert_eq!(rd(&mut m, c(cam::HITS)), 1 | 1 << 7);
        // Data-path port.
        assert_eq!(m.dp_lookup(&key(3)).map(|r| r.index), Some(3));
        assert_eq!(m.dp_lookup(&key(1000)), None);
        assert_eq!(rd(&mut m, c(cam::DP_LOOKUPS)), 2);
        assert_eq!(rd(&mut m, c(cam::DP_HITS)), 1);
        assert!(m.entry(3).unwrap().hit);
    }

    #[test]
    fn soft_reset_returns_to_power_on() {
        let mut m = ModelCard::new();
        wr(&mut m, ident::SCRATCH.offset, 9);
        stage(&mut m, key(1), FULL, 1, 1);
        run(&mut m, cmd::INSERT);
        run(&mut m, 77);
        wr(&mut m, ca(cam::DID_BITMAP, 3), 3);
        // Bits other than SOFT_RESET do nothing.
        wr(&mut m, ident::CONTROL.offset, 2);
        assert_eq!(rd(&mut m, c(cam::OCCUPANCY)), 1);
        wr(&mut m, ident::CONTROL.offset, 1);
        let fresh = ModelCard::new();
        assert_eq!(m.entry(0), fresh.entry(0));
        assert_eq!(m.entry(0).unwrap(), ModelEntry::default());
        let mut f = fresh;
        for b in hal::regs::BLOCKS {
            for o in (0..b.span).step_by(4) {
                assert_eq!(
                    rd(&mut m, b.base + o),
                    rd(&mut f, b.base + o),
                    "{} +0x{o:x}",
                    b.prefix
                );
            }
        }
    }

    /// The mask-grouped search index against a scan of every valid entry, through random
    /// writes (overwrites included), inserts, invalidates, identifier flushes and full flushes,
    /// with few masks (indexed path) and many (scan fallback).
    #[test]
    fn indexed_search_equals_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for many_masks in [false, true] {
            let mut m = ModelCard::with_depth(128).unwrap();
            let mut masks = [FULL, FULL, FULL];
            masks[1][9] = 0;
            masks[2][4..].fill(0);
            let mut used_groups = 0;
            for _ in 0..4000 {
                let r = rnd();
                let k = key((r >> 8) as u32 % 40);
                let mask = if many_masks {
                    let mut mk = FULL;
                    mk[(r >> 20) as usize % KW] = (r >> 32) as u32 | 0xffff_0000;
                    mk
                } else {
                    masks[(r >> 40) as usize % 3]
                };
                match r % 10 {
                    0..=4 => {
                        stage(&mut m, k, mask, r as u32, (r >> 50) as u32 % 8);
                        wr(&mut m, c(cam::INDEX), (r >> 12) as u32 % 128);
                        run(&mut m, cmd::WRITE);
                    }
                    5 => {
                        stage(&mut m, k, mask, r as u32, (r >> 50) as u32 % 8);
                        run(&mut m, cmd::INSERT);
                    }
                    6 | 7 => {
                        wr(&mut m, c(cam::INDEX), (r >> 12) as u32 % 128);
                        run(&mut m, cmd::INVALIDATE);
                    }
                    8 => {
                        let mut bm = [0u32; DW];
                        bm[0] = (r >> 16) as u32 & 0xff;
                        m.regs.did_bitmap = bm;
                        m.execute(cmd::FLUSH_DID);
                    }
                    _ if r % 97 == 0 => {
                        run(&mut m, cmd::FLUSH_ALL);
                    }
                    _ => {}
                }
                used_groups = used_groups.max(m.index.groups.len());
                for probe in 0..40 {
                    let mut q = key(probe);
                    if probe % 3 == 0 {
                        q[9] ^= 0x55; // matches only entries that ignore word 9
                    }
                    assert_eq!(m.find(&q), m.find_scan(&q), "key {probe}");
                }
                let live: usize = m.index.groups.iter().map(|g| g.len).sum();
                assert_eq!(
                    live,
                    m.occupancy() as usize,
                    "index holds every valid entry"
                );
            }
            assert_eq!(used_groups > MAX_MASK_GROUPS, many_masks);
        }
    }
}
