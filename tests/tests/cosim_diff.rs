//! Differential co-simulation: the reference model (`ModelCard`) and the RTL
//! (`RtlCard`, Verilator) driven side by side through the real driver with
//! the same seeded random operation sequences.
//!
//! After every operation the outcomes (return values and errors, formatted)
//! and a snapshot of every named register of every block (`Card::read_all_regs`:
//! identity block, STATUS, INDEX, RESULT, DID, HITS, OCCUPANCY, CMD, the
//! counters, KEY/MASK/DID_BITMAP words) must be identical. Busy-poll counts
//! differ by design (the model completes a command inside the `CMD` write)
//! and are not compared.
//!
//! Operations: typed and raw-bit inserts, batch installs (`install_batch`: mask profiles and
//! `WRITE_P`), card-side `INSERT`, overwrites,
//! upserts, `write_at`, removes by key and by index, searches (hits, misses,
//! wildcard keys), flush by identifier sets, flush all, aging (`HIT_RC`),
//! reads, dumps, counters, soft and power-on resets with re-probe, data-path
//! lookups, and raw register pokes through `Card::regs_mut`: unknown command
//! codes, bad indices, `INSERT` into a full table, raw batches of `WRITE_P`/`INSERT_P` written
//! back to back with bad profiles, bad indices and `FULL` among them, `SET_PROFILE` with bad
//! profile numbers, writes to read-only and
//! unmapped offsets, reads of every kind of offset, unnormalised entries;
//! and "hit, then act on that entry" sequences so that hit-bit clearing is
//! seen before the slot is reused.
//!
//! Five profiles (balanced, fill, wildcards, churn, raw-heavy) of 20,000
//! operations each run in parallel; every other seed starts the RTL from
//! random register and memory contents (`+verilator+rand+reset+2`), which
//! the power-on reset must hide. A failure names the seed, the profile, the
//! step and the last operations; reproduce one run with
//! `COSIM_SEED=<seed> COSIM_PROFILE=<profile> COSIM_OPS=<n> cargo test -p tests
//! --features verilator --test cosim_diff`.
//!
//! The model can never be busy, so the "CMD while busy" rules and the writes that wait
//! for a batch command are checked on the RTL alone (`rtl_cmd_while_busy_...`,
//! `rtl_writes_wait_...`).
#![cfg(feature = "verilator")]

use std::collections::{HashSet, VecDeque};
use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use driver::{
    Action, CamEntry, CamIndex, CamKey, Card, DidSet, DistributionId, Flow, IpPrefix, KeyBits,
    ResultWord, KEY_WORDS,
};
use hal::regs::{cam, ident, BAR_SIZE};
use hal::{BarOffset, RegIo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sim_bridge::model::{batch_entry_code, ModelCard};
use sim_bridge::verilator::{RtlCard, RTL_DEPTH};

type Key = [u32; KEY_WORDS];

/// The data-path lookup port of either card, as a common interface.
trait DpPort: RegIo {
    /// `(index, result, did)` of each hit, `None` for a miss.
    fn dp(&mut self, keys: &[Key]) -> Vec<Option<(u32, u32, u16)>>;
    /// Power-on state, as if the card were just created.
    fn power_on(&mut self);
}

impl DpPort for ModelCard {
    fn dp(&mut self, keys: &[Key]) -> Vec<Option<(u32, u32, u16)>> {
        keys.iter()
            .map(|k| self.dp_lookup(k).map(|r| (r.index, r.result, r.did)))
            .collect()
    }
    fn power_on(&mut self) {
        *self = ModelCard::with_depth(self.depth()).expect("model depth");
    }
}

impl DpPort for RtlCard {
    fn dp(&mut self, keys: &[Key]) -> Vec<Option<(u32, u32, u16)>> {
        self.lookup_stream(keys)
            .expect("RTL data-path lookup")
            .into_iter()
            .map(|r| r.hit.then_some((r.index, r.result, r.did)))
            .collect()
    }
    fn power_on(&mut self) {
        self.power_on_reset(3).expect("RTL power-on reset");
    }
}

/// One operation, generated once and applied to both cards.
#[derive(Clone, Debug)]
enum Op {
    Insert(CamEntry),
    /// `Card::install_batch`.
    Batch(Vec<CamEntry>),
    InsertBits(KeyBits, u16, u32),
    InsertByCard(CamEntry),
    Overwrite(CamEntry),
    Upsert(CamEntry),
    WriteAt(u32, CamEntry),
    Remove(CamKey),
    RemoveAt(u32),
    Search(Key),
    SearchTyped(CamKey),
    /// Hit an entry (SEARCH, or the data path when the flag is set), then
    /// act on that very entry, then READ it and read its group's hit bits:
    /// the hit bit must be cleared (or kept) exactly as hdl/CARD.md says.
    HitThen(Key, bool, Then),
    FlushDids(Box<DidSet>),
    FlushAll,
    Age,
    Read(u32),
    Dump(Option<u16>),
    Counters,
    Find(CamKey),
    Reset,
    /// Power-on reset (or soft reset) of the backend, then a fresh probe.
    Reprobe(bool),
    Verify,
    Dp(Vec<Key>),
    /// Raw command: optional INDEX write, CMD write, poll until not busy.
    RawCmd(Option<u32>, u32),
    RawWrite(u32, u32),
    RawRead(u32),
    /// Raw WRITE of an entry with key bits outside its mask, then a resync.
    RawEntry(u32, KeyBits, u16, u32),
    /// Raw SET_PROFILE: MASK, profile number (INDEX), then a resync.
    RawSetProfile([u32; KEY_WORDS], u32),
    /// Raw batch: BATCH_START, then per entry its staging writes and its CMD word with no
    /// poll in between, then one wait, the batch counters and a resync.
    RawBatch(Vec<RawBatchEntry>),
    RawSoftReset,
}

/// One command of an [`Op::RawBatch`]: `CMD` word (`WRITE_P`/`INSERT_P` with a profile),
/// `INDEX` (written when `Some`), key words, result, identifier.
#[derive(Clone, Debug)]
struct RawBatchEntry {
    cmd: u32,
    index: Option<u32>,
    key: Key,
    result: u32,
    did: u32,
}

/// What [`Op::HitThen`] does to the entry it hit.
#[derive(Clone, Debug)]
enum Then {
    Nothing,
    RemoveAt,
    FlushItsDid,
    WriteAt(CamEntry),
    InsertByCardAfterRemove(CamEntry),
    FlushAll,
}

/// The readable register file, as `(block, name, element, value)`.
type Snapshot = Vec<(&'static str, &'static str, Option<u32>, u32)>;

fn snapshot<R: RegIo>(card: &mut Card<R>) -> Snapshot {
    card.read_all_regs()
        .expect("read_all_regs")
        .into_iter()
        .flat_map(|(_, regs)| {
            regs.into_iter()
                .map(|r| (r.block, r.name, r.element, r.value))
        })
        .collect()
}

fn cam_off(r: hal::regs::Reg) -> u32 {
    cam::BASE + r.offset
}

/// Write INDEX (optionally) and CMD through the raw backend and wait for the
/// command to finish; returns STATUS.
fn raw_cmd<R: RegIo>(regs: &mut R, index: Option<u32>, code: u32) -> String {
    if let Some(i) = index {
        regs.write32(BarOffset(cam_off(cam::INDEX)), i)
            .expect("raw write");
    }
    regs.write32(BarOffset(cam_off(cam::CMD)), code)
        .expect("raw write");
    raw_wait(regs)
}

/// Poll STATUS until the running command finishes; returns STATUS.
fn raw_wait<R: RegIo>(regs: &mut R) -> String {
    for _ in 0..1000 {
        let s = regs
            .read32(BarOffset(cam_off(cam::STATUS)))
            .expect("raw read");
        if cam::status::BUSY.get(s) == 0 {
            return format!("status=0x{s:08x}");
        }
        regs.idle();
    }
    "still busy after 1000 polls".to_string()
}

fn fmt<T: Debug, E: Debug>(r: Result<T, E>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e:?})"),
    }
}

/// Apply `op` to one card; returns the formatted outcome. Operations the
/// driver cannot do in place (re-probe) replace the card.
fn apply<R: DpPort>(slot: &mut Option<Card<R>>, op: &Op) -> String {
    let card = slot.as_mut().expect("card present");
    match op {
        Op::Insert(e) => fmt(card.insert(e)),
        Op::Batch(es) => fmt(card.install_batch(es)),
        Op::InsertBits(b, d, r) => fmt(card.insert_bits(b, DistributionId(*d), *r)),
        Op::InsertByCard(e) => fmt(card.insert_by_card(e)),
        Op::Overwrite(e) => fmt(card.overwrite(e)),
        Op::Upsert(e) => fmt(card.upsert(e)),
        Op::WriteAt(i, e) => fmt(card.write_at(CamIndex(*i), e)),
        Op::Remove(k) => fmt(card.remove(k)),
        Op::RemoveAt(i) => fmt(card.remove_at(CamIndex(*i))),
        Op::Search(k) => fmt(card.search_bits(k)),
        Op::SearchTyped(k) => fmt(card.search(k)),
        Op::HitThen(key, via_dp, then) => {
            let (hit, first) = if *via_dp {
                let r = card.regs_mut().dp(&[*key]);
                (r[0].map(|(i, _, d)| (i, d)), format!("{r:?}"))
            } else {
                let r = card.search_bits(key);
                let hit = match &r {
                    Ok(Some(h)) => Some((h.index.0, h.did.0)),
                    _ => None,
                };
                (hit, fmt(r))
            };
            let Some((i, d)) = hit else {
                return first;
            };
            let second = match then {
                Then::Nothing => String::new(),
                Then::RemoveAt => fmt(card.remove_at(CamIndex(i))),
                Then::FlushItsDid => {
                    fmt(card.flush_dids(&DidSet::from_ids([DistributionId(d)]).expect("8 bits")))
                }
                Then::WriteAt(e) => fmt(card.write_at(CamIndex(i), e)),
                Then::InsertByCardAfterRemove(e) => {
                    let r = fmt(card.remove_at(CamIndex(i)));
                    format!("{r} {}", fmt(card.insert_by_card(e)))
                }
                Then::FlushAll => fmt(card.flush_all()),
            };
            let read = fmt(card.read(CamIndex(i)));
            let hits = raw_cmd(card.regs_mut(), Some(i / 32), cam::cmd::HIT_RC);
            let bits = card.regs_mut().read32(BarOffset(cam_off(cam::HITS)));
            format!("{first} then {second} read {read} hit_rc {hits} {bits:?}")
        }
        Op::FlushDids(s) => fmt(card.flush_dids(s)),
        Op::FlushAll => fmt(card.flush_all()),
        Op::Age => fmt(card.age()),
        Op::Read(i) => fmt(card.read(CamIndex(*i))),
        Op::Dump(d) => fmt(card.dump(d.map(DistributionId))),
        Op::Counters => fmt(card.counters()),
        Op::Find(k) => fmt(card.find(k)),
        Op::Reset => fmt(card.reset()),
        Op::Reprobe(power_on) => {
            let mut regs = slot.take().expect("card present").into_inner();
            if *power_on {
                regs.power_on();
            }
            match Card::probe(regs) {
                Ok(c) => {
                    let mut info = c.info().clone();
                    info.backend = String::new();
                    *slot = Some(c);
                    format!("Ok({info:?})")
                }
                Err(e) => panic!("re-probe failed: {e}"),
            }
        }
        Op::Verify => fmt(card.verify()),
        Op::Dp(keys) => format!("{:?}", card.regs_mut().dp(keys)),
        Op::RawCmd(i, code) => {
            let s = raw_cmd(card.regs_mut(), *i, *code);
            // A raw command that may change the table (an INSERT into a table
            // with room, a batch entry) or the profiles leaves the shadow stale: rebuild it.
            if (*code == cam::cmd::INSERT && card.len() < card.depth() as usize)
                || batch_entry_code(*code).is_some()
                || *code == cam::cmd::SET_PROFILE
            {
                format!("{s} resync={}", fmt(card.resync()))
            } else {
                s
            }
        }
        Op::RawWrite(o, v) => format!("{:?}", card.regs_mut().write32(BarOffset(*o), *v)),
        Op::RawRead(o) => format!("{:?}", card.regs_mut().read32(BarOffset(*o))),
        Op::RawEntry(i, b, d, r) => {
            let regs = card.regs_mut();
            for w in 0..KEY_WORDS as u32 {
                regs.write32(BarOffset(cam::BASE + cam::KEY.at(w)), b.key[w as usize])
                    .expect("raw write");
                regs.write32(BarOffset(cam::BASE + cam::MASK.at(w)), b.mask[w as usize])
                    .expect("raw write");
            }
            regs.write32(BarOffset(cam_off(cam::RESULT)), *r)
                .expect("raw write");
            regs.write32(BarOffset(cam_off(cam::DID)), u32::from(*d))
                .expect("raw write");
            let s = raw_cmd(regs, Some(*i), cam::cmd::WRITE);
            format!("{s} resync={}", fmt(card.resync()))
        }
        Op::RawSetProfile(mask, p) => {
            let regs = card.regs_mut();
            for (w, m) in mask.iter().enumerate() {
                regs.write32(BarOffset(cam::BASE + cam::MASK.at(w as u32)), *m)
                    .expect("raw write");
            }
            let s = raw_cmd(regs, Some(*p), cam::cmd::SET_PROFILE);
            format!("{s} resync={}", fmt(card.resync()))
        }
        Op::RawBatch(entries) => {
            let regs = card.regs_mut();
            let w =
                |regs: &mut R, o: u32, v: u32| regs.write32(BarOffset(o), v).expect("raw write");
            w(regs, cam_off(cam::CMD), cam::cmd::BATCH_START);
            let mut waits = Vec::new();
            for e in entries {
                for (i, k) in e.key.iter().enumerate() {
                    w(regs, cam::BASE + cam::KEY.at(i as u32), *k);
                }
                w(regs, cam_off(cam::RESULT), e.result);
                w(regs, cam_off(cam::DID), e.did);
                if let Some(i) = e.index {
                    w(regs, cam_off(cam::INDEX), i);
                }
                w(regs, cam_off(cam::CMD), e.cmd);
                // Only a batch command holds the next write back; after any other
                // command (UNKNOWN_CMD here) the host waits, as hdl/CARD.md says.
                if batch_entry_code(e.cmd).is_none() {
                    waits.push(raw_wait(regs));
                }
            }
            let s = format!("{} {waits:?}", raw_wait(regs));
            let counters: Vec<u32> = [cam::BATCH_DONE, cam::BATCH_ERRS, cam::BATCH_ERR, cam::INDEX]
                .iter()
                .map(|r| regs.read32(BarOffset(cam_off(*r))).expect("raw read"))
                .collect();
            format!("{s} batch {counters:?} resync={}", fmt(card.resync()))
        }
        Op::RawSoftReset => {
            card.regs_mut()
                .write32(
                    BarOffset(ident::CONTROL.offset),
                    ident::control::SOFT_RESET.put(1),
                )
                .expect("raw write");
            // The shadow is stale now; an empty card resyncs to empty.
            fmt(card.resync())
        }
    }
}

// ---------------------------------------------------------------- generation

/// Weights of the operation kinds for one run (a profile).
#[derive(Clone, Copy, Debug)]
struct Profile {
    name: &'static str,
    insert: u32,
    remove: u32,
    search: u32,
    overwrite: u32,
    flush: u32,
    misc: u32,
    raw: u32,
    /// Percentage of pool keys that carry wildcards.
    wildcard_pct: u32,
    /// Number of distinct keys to draw from (the CAM holds 1024).
    pool: usize,
    /// One operation in this many empties the table (reset, flush all, ...).
    clear_every: u32,
}

const PROFILES: &[Profile] = &[
    Profile {
        name: "balanced",
        insert: 30,
        remove: 15,
        search: 30,
        overwrite: 8,
        flush: 1,
        misc: 8,
        raw: 7,
        wildcard_pct: 25,
        pool: 1600,
        clear_every: 3000,
    },
    Profile {
        name: "fill",
        insert: 55,
        remove: 2,
        search: 25,
        overwrite: 6,
        flush: 1,
        misc: 4,
        raw: 5,
        wildcard_pct: 15,
        pool: 2500,
        clear_every: 6000,
    },
    Profile {
        name: "wildcards",
        insert: 30,
        remove: 15,
        search: 35,
        overwrite: 5,
        flush: 1,
        misc: 6,
        raw: 7,
        wildcard_pct: 70,
        pool: 900,
        clear_every: 3000,
    },
    Profile {
        name: "churn",
        insert: 30,
        remove: 25,
        search: 20,
        overwrite: 5,
        flush: 6,
        misc: 7,
        raw: 7,
        wildcard_pct: 30,
        pool: 1100,
        clear_every: 1500,
    },
    Profile {
        name: "raw-heavy",
        insert: 30,
        remove: 8,
        search: 20,
        overwrite: 5,
        flush: 1,
        misc: 10,
        raw: 25,
        wildcard_pct: 30,
        pool: 2000,
        clear_every: 3000,
    },
];

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8))
}

fn v6(n: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        (n >> 16) as u16,
        n as u16,
    ))
}

fn prefix(rng: &mut SmallRng, is_v6: bool, wild: bool) -> IpPrefix {
    let n = rng.random_range(0..12);
    let addr = if is_v6 { v6(n) } else { v4(n) };
    if wild && rng.random_bool(0.5) {
        let max = if is_v6 { 128 } else { 32 };
        let len = [0u8, 8, 16, 24, max - 2][rng.random_range(0..5)];
        IpPrefix::new(addr, len).expect("prefix length")
    } else {
        IpPrefix::host(addr)
    }
}

fn opt<T>(rng: &mut SmallRng, wild: bool, v: T) -> Option<T> {
    if wild && rng.random_bool(0.4) {
        None
    } else {
        Some(v)
    }
}

/// A typed key from a small space, with wildcards when `wild`.
fn typed_key(rng: &mut SmallRng, wild: bool) -> CamKey {
    let is_v6 = rng.random_bool(0.3);
    let z = rng.random_range(0..3u8);
    let zone = opt(rng, wild, z);
    let ports = [53u16, 80, 443, 500, 4500, 8080];
    let flow = match rng.random_range(0..5) {
        0 | 1 => {
            let (src, dst) = (prefix(rng, is_v6, wild), prefix(rng, is_v6, wild));
            let sp = ports[rng.random_range(0..ports.len())];
            let dp = ports[rng.random_range(0..ports.len())];
            let (src_port, dst_port) = (opt(rng, wild, sp), opt(rng, wild, dp));
            Flow::tcp_or_udp(rng.random_bool(0.5), src, dst, src_port, dst_port)
        }
        2 => {
            let (src, dst) = (prefix(rng, is_v6, wild), prefix(rng, is_v6, wild));
            let id = rng.random_range(0..6u16);
            let id = opt(rng, wild, id);
            Flow::Icmp { src, dst, id }
        }
        3 => {
            let dst = prefix(rng, is_v6, wild);
            let spi = rng.random_range(0x100..0x120u32);
            let spi = opt(rng, wild, spi);
            Flow::Esp { dst, spi }
        }
        _ => {
            let dst = prefix(rng, is_v6, wild);
            let c = rng.random_range(0..5u64) << 40;
            let c = opt(rng, wild, c);
            let m = rng.random_range(0..4u32);
            let m = opt(rng, wild, m);
            Flow::Isakmp {
                dst,
                initiator_cookie: c,
                message_id: m,
            }
        }
    };
    CamKey::new(zone, flow)
}

/// Raw key bits from a tiny alphabet (so that raw entries overlap), with
/// arbitrary masks.
fn raw_bits(rng: &mut SmallRng) -> KeyBits {
    let mut b = KeyBits::default();
    for w in 0..KEY_WORDS {
        b.key[w] = [0, 1, 0xFFFF_FFFF, 0x8000_0000, rng.random_range(0..4)][rng.random_range(0..5)];
        b.mask[w] = match rng.random_range(0..10) {
            0 => 0,
            1 => 0xFF00_FF00,
            2 => rng.random(),
            _ => 0xFFFF_FFFF,
        };
    }
    // Keep the kind field compared so raw entries do not swamp typed searches.
    b.mask[KEY_WORDS - 1] = 0xFFFF_FFFF;
    b.key[KEY_WORDS - 1] = 0xFFFF_FF00 | rng.random_range(0..4);
    b
}

fn did(rng: &mut SmallRng) -> u16 {
    if rng.random_bool(0.05) {
        rng.random_range(0..4096)
    } else {
        rng.random_range(0..64)
    }
}

fn result_word(rng: &mut SmallRng) -> ResultWord {
    if rng.random_bool(0.5) {
        ResultWord::decode(rng.random())
    } else {
        ResultWord::new([Action::Accept, Action::Drop, Action::Decrypt][rng.random_range(0..3)])
    }
}

fn did_set(rng: &mut SmallRng) -> DidSet {
    match rng.random_range(0..10) {
        0 => DidSet::new(),
        1 | 2 => {
            let mut s = DidSet::new();
            for _ in 0..rng.random_range(1..20) {
                s.insert(DistributionId(u16::from(rng.random::<u8>())))
                    .expect("8 bits");
            }
            s
        }
        _ => {
            let mut s = DidSet::new();
            for _ in 0..rng.random_range(1..3) {
                s.insert(DistributionId(rng.random_range(0..64)))
                    .expect("8 bits");
            }
            s
        }
    }
}

struct Gen {
    rng: SmallRng,
    profile: Profile,
    pool: Vec<(CamKey, KeyBits)>,
    raw_pool: Vec<KeyBits>,
    depth: u32,
}

impl Gen {
    fn new(seed: u64, profile: Profile, depth: u32) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut seen = HashSet::new();
        let mut pool = Vec::new();
        let mut attempts = 0;
        while pool.len() < profile.pool && attempts < profile.pool * 50 {
            attempts += 1;
            let wild = rng.random_range(0..100) < profile.wildcard_pct;
            let k = typed_key(&mut rng, wild);
            let b = k.encode().expect("typed keys encode");
            if seen.insert(b.normalized()) {
                pool.push((k, b));
            }
        }
        let raw_pool = (0..200).map(|_| raw_bits(&mut rng)).collect();
        Self {
            rng,
            profile,
            pool,
            raw_pool,
            depth,
        }
    }

    fn pool_key(&mut self) -> (CamKey, KeyBits) {
        self.pool[self.rng.random_range(0..self.pool.len())]
    }

    fn entry(&mut self) -> CamEntry {
        let (key, _) = self.pool_key();
        CamEntry {
            key,
            did: DistributionId(did(&mut self.rng)),
            result: result_word(&mut self.rng),
        }
    }

    /// An index: mostly in range, sometimes at or past the depth.
    fn index(&mut self) -> u32 {
        match self.rng.random_range(0..20) {
            0 => self.depth,
            1 => u32::MAX,
            2 => self.rng.random(),
            3 => self.depth + self.rng.random_range(0..64),
            _ => self.rng.random_range(0..self.depth),
        }
    }

    /// A profile number: mostly one the card has, sometimes past them.
    fn profile_number(&mut self) -> u32 {
        match self.rng.random_range(0..8) {
            0 => cam::PROFILES + self.rng.random_range(0..240),
            1 => cam::PROFILES,
            _ => self.rng.random_range(0..cam::PROFILES),
        }
    }

    /// One command of a raw batch: `WRITE_P` (sometimes with a bad index) or `INSERT_P`, a
    /// profile number that may be out of range, and now and then a `CMD` word with bits
    /// 31:16 set (`UNKNOWN_CMD`).
    fn raw_batch_entry(&mut self) -> RawBatchEntry {
        let (_, b) = self.pool_key();
        let insert = self.rng.random_bool(0.3);
        let code = if insert {
            cam::cmd::INSERT_P
        } else {
            cam::cmd::WRITE_P
        };
        let mut cmd = cam::batch_cmd(code, self.profile_number());
        if self.rng.random_range(0..20) == 0 {
            cmd |= 1 << (16 + self.rng.random_range(0..16));
        }
        let index = match self.rng.random_range(0..4) {
            0 => None,
            _ if insert => None,
            _ => Some(self.index()),
        };
        RawBatchEntry {
            cmd,
            index,
            key: b.key,
            result: self.rng.random(),
            did: self.rng.random(),
        }
    }

    /// A concrete search key: a pool key with its wildcard bits taken from
    /// another pool key (so more entries may match), or a near miss, or noise.
    fn search_key(&mut self) -> Key {
        let (_, b) = self.pool_key();
        match self.rng.random_range(0..10) {
            0 => {
                // Near miss: flip one compared bit.
                let mut k = b.key;
                let w = self.rng.random_range(0..KEY_WORDS);
                let bit = self.rng.random_range(0..32);
                k[w] ^= 1 << bit;
                k
            }
            1 => std::array::from_fn(|_| self.rng.random()),
            2 => {
                let r = self.raw_pool[self.rng.random_range(0..self.raw_pool.len())];
                std::array::from_fn(|w| r.key[w] | (self.rng.random::<u32>() & !r.mask[w]))
            }
            _ => {
                let (_, o) = self.pool_key();
                std::array::from_fn(|w| (b.key[w] & b.mask[w]) | (o.key[w] & !b.mask[w]))
            }
        }
    }

    /// A CAM offset: mapped registers, holes, the identity block, beyond.
    fn offset(&mut self) -> u32 {
        match self.rng.random_range(0..6) {
            0 => 4 * self.rng.random_range(0..0x400),
            1 => cam::BASE + 4 * self.rng.random_range(0..0x40),
            2 => cam::BASE + 4 * self.rng.random_range(0..0x400),
            3 => 4 * self.rng.random_range(0..BAR_SIZE / 4),
            4 => cam::BASE + 0x3C,
            _ => cam::BASE + cam::SPAN + 4 * self.rng.random_range(0..0x100),
        }
    }

    fn next(&mut self, full: bool) -> Op {
        let p = self.profile;
        // Rare: something that empties the table (so that runs both fill up
        // and start over).
        if self.rng.random_range(0..p.clear_every) == 0 {
            return match self.rng.random_range(0..6) {
                0 => Op::Reset,
                1 => Op::Reprobe(self.rng.random_bool(0.5)),
                2 => Op::RawSoftReset,
                3 => Op::FlushDids(Box::new(DidSet::all())),
                _ => Op::FlushAll,
            };
        }
        let total = p.insert + p.remove + p.search + p.overwrite + p.flush + p.misc + p.raw;
        let mut x = self.rng.random_range(0..total);
        if x < p.insert {
            return match self.rng.random_range(0..12) {
                0..=5 => Op::Insert(self.entry()),
                6 | 7 => Op::InsertByCard(self.entry()),
                8 | 9 => {
                    let n = [1, 2, 5, 20][self.rng.random_range(0..4)];
                    Op::Batch((0..n).map(|_| self.entry()).collect())
                }
                _ => {
                    let b = self.raw_pool[self.rng.random_range(0..self.raw_pool.len())];
                    let (d, res) = (did(&mut self.rng), self.rng.random());
                    Op::InsertBits(b, d, res)
                }
            };
        }
        x -= p.insert;
        if x < p.remove {
            return if self.rng.random_range(0..4) == 0 {
                Op::RemoveAt(self.index())
            } else {
                Op::Remove(self.pool_key().0)
            };
        }
        x -= p.remove;
        if x < p.search {
            return match self.rng.random_range(0..10) {
                0 => Op::SearchTyped(self.pool_key().0),
                1 => Op::Find(self.pool_key().0),
                2 => {
                    let (_, b) = self.pool_key();
                    let key = std::array::from_fn(|w| b.key[w] & b.mask[w]);
                    let then = match self.rng.random_range(0..1000) {
                        0..=149 => Then::Nothing,
                        150..=499 => Then::RemoveAt,
                        500..=649 => Then::FlushItsDid,
                        650..=799 => Then::WriteAt(self.entry()),
                        800..=994 => Then::InsertByCardAfterRemove(self.entry()),
                        _ => Then::FlushAll,
                    };
                    Op::HitThen(key, self.rng.random_bool(0.5), then)
                }
                _ => Op::Search(self.search_key()),
            };
        }
        x -= p.search;
        if x < p.overwrite {
            return match self.rng.random_range(0..10) {
                0..=4 => Op::Overwrite(self.entry()),
                5..=8 => Op::Upsert(self.entry()),
                _ => {
                    let i = self.index();
                    Op::WriteAt(i, self.entry())
                }
            };
        }
        x -= p.overwrite;
        if x < p.flush {
            return Op::FlushDids(Box::new(did_set(&mut self.rng)));
        }
        x -= p.flush;
        if x < p.misc {
            return match self.rng.random_range(0..1000) {
                0..=249 => Op::Age,
                250..=499 => Op::Read(self.index()),
                500..=649 => Op::Counters,
                650..=899 => {
                    let n = self.rng.random_range(1..40);
                    Op::Dp((0..n).map(|_| self.search_key()).collect())
                }
                900..=979 => Op::Dump(Some(self.rng.random_range(0..64))),
                980..=989 => Op::Dump(None),
                _ => Op::Verify,
            };
        }
        // Raw pokes behind the driver's back.
        match self.rng.random_range(0..100) {
            0..=14 => {
                // Unknown command codes.
                let code = match self.rng.random_range(0..4) {
                    0 => 0,
                    1 => self.rng.random_range(9..64),
                    2 => u32::MAX,
                    _ => self.rng.random(),
                };
                let code = if (1..=8).contains(&code) { 0 } else { code };
                Op::RawCmd(Some(self.index()), code)
            }
            15..=34 => {
                // Bad indices.
                let code = [cam::cmd::WRITE, cam::cmd::INVALIDATE, cam::cmd::READ]
                    [self.rng.random_range(0..3)];
                let i = match self.rng.random_range(0..3) {
                    0 => self.depth,
                    1 => u32::MAX,
                    _ => self.rng.random_range(self.depth..=u32::MAX),
                };
                Op::RawCmd(Some(i), code)
            }
            35..=44 => {
                let hit_words = self.depth.div_ceil(32);
                let i = match self.rng.random_range(0..4) {
                    0 => hit_words,
                    1 => u32::MAX,
                    2 => self.rng.random_range(0..hit_words),
                    _ => self.rng.random(),
                };
                Op::RawCmd(Some(i), cam::cmd::HIT_RC)
            }
            45..=54 if full => Op::RawCmd(None, cam::cmd::INSERT),
            45..=54 => Op::RawCmd(Some(self.rng.random_range(0..self.depth)), cam::cmd::READ),
            55..=56 => Op::RawCmd(None, cam::cmd::INSERT),
            57..=66 => Op::RawRead(self.offset()),
            67..=76 => {
                // Writes to read-only registers, holes, unmapped space, SCRATCH,
                // CONTROL without the reset bit, staging registers.
                let o = match self.rng.random_range(0..8) {
                    0 => cam_off(cam::STATUS),
                    1 => cam_off(cam::OCCUPANCY),
                    2 => cam_off(cam::HITS),
                    3 => cam_off(
                        [
                            cam::CMD_COUNT,
                            cam::ERR_COUNT,
                            cam::DP_LOOKUPS,
                            cam::DP_HITS,
                        ][self.rng.random_range(0..4)],
                    ),
                    4 => ident::SCRATCH.offset,
                    5 => ident::CONTROL.offset,
                    _ => self.offset(),
                };
                let mut v: u32 = self.rng.random();
                if o == ident::CONTROL.offset {
                    v &= !ident::control::SOFT_RESET.put(1);
                }
                if o == cam_off(cam::CMD) {
                    // A CMD write starts a command: wait for it, and keep it
                    // to codes that cannot change the table.
                    let changes =
                        (1..=cam::cmd::SET_PROFILE).contains(&v) || batch_entry_code(v).is_some();
                    return Op::RawCmd(None, if changes { 0 } else { v });
                }
                Op::RawWrite(o, v)
            }
            77..=90 => Op::RawWrite(
                cam::BASE + [cam::INDEX, cam::RESULT, cam::DID][self.rng.random_range(0..3)].offset,
                self.rng.random(),
            ),
            92..=93 => Op::RawBatch(
                (0..self.rng.random_range(1..12))
                    .map(|_| self.raw_batch_entry())
                    .collect(),
            ),
            94 => {
                let mask = match self.rng.random_range(0..3) {
                    0 => self.pool_key().1.mask,
                    1 => self.raw_pool[self.rng.random_range(0..self.raw_pool.len())].mask,
                    _ => std::array::from_fn(|_| self.rng.random()),
                };
                Op::RawSetProfile(mask, self.profile_number())
            }
            91 => {
                let mut b = self.pool_key().1;
                // Key bits outside the mask: READ must return them as written.
                for w in 0..KEY_WORDS {
                    b.key[w] |= self.rng.random::<u32>() & !b.mask[w];
                }
                let i = self.rng.random_range(0..self.depth);
                Op::RawEntry(i, b, did(&mut self.rng), self.rng.random())
            }
            _ => Op::RawRead(self.offset()),
        }
    }
}

// ------------------------------------------------------------------ the run

struct Pair {
    model: Option<Card<ModelCard>>,
    rtl: Option<Card<RtlCard>>,
}

impl Pair {
    /// Applies `op` to both cards and asserts the driver saw the same outcome; `what` says
    /// where in the test it happened.
    fn apply_both(&mut self, op: &Op, what: &str) {
        let a = apply(&mut self.model, op);
        let b = apply(&mut self.rtl, op);
        assert_eq!(a, b, "{what}: {op:?}");
    }

    /// Asserts that every register of the two cards reads the same.
    fn assert_same_registers(&mut self, what: &str) {
        let sa = snapshot(self.model.as_mut().unwrap());
        let sb = snapshot(self.rtl.as_mut().unwrap());
        assert!(sa == sb, "{what}:\n{}", diff_snapshots(&sa, &sb));
    }

    /// [`Pair::apply_both`], then [`Pair::assert_same_registers`].
    fn step(&mut self, op: &Op, what: &str) {
        self.apply_both(op, what);
        self.assert_same_registers(&format!("{what}: {op:?}"));
    }
}

/// A model and an RTL card, probed. With `random_init`, every RTL register
/// and memory starts at a random value (Verilator `+verilator+rand+reset+2`)
/// that the power-on reset must clear.
fn new_pair(random_init: Option<u64>) -> Pair {
    let model = ModelCard::with_depth(RTL_DEPTH).expect("model card");
    let rtl = match random_init {
        Some(seed) => RtlCard::with_args(
            RTL_DEPTH,
            &[
                "+verilator+rand+reset+2",
                &format!("+verilator+seed+{}", 1 + seed % 1_000_000),
            ],
        ),
        None => RtlCard::with_depth(RTL_DEPTH),
    }
    .expect("RTL card");
    let mut pair = Pair {
        model: Some(Card::probe(model).expect("probe model")),
        rtl: Some(Card::probe(rtl).expect("probe RTL")),
    };
    let (m, r) = (pair.model.as_mut().unwrap(), pair.rtl.as_mut().unwrap());
    assert_eq!(m.depth(), RTL_DEPTH);
    assert_eq!(r.depth(), RTL_DEPTH);
    let (mut mi, mut ri) = (m.info().clone(), r.info().clone());
    mi.backend.clear();
    ri.backend.clear();
    assert_eq!(mi, ri, "probe results differ");
    pair
}

fn diff_snapshots(a: &Snapshot, b: &Snapshot) -> String {
    let mut s = String::new();
    for (x, y) in a.iter().zip(b) {
        if x != y {
            s.push_str(&format!(
                "  {}.{}{}: model 0x{:08x}, rtl 0x{:08x}\n",
                x.0,
                x.1,
                x.2.map(|e| format!("[{e}]")).unwrap_or_default(),
                x.3,
                y.3
            ));
        }
    }
    if a.len() != b.len() {
        s.push_str(&format!("  lengths differ: {} vs {}\n", a.len(), b.len()));
    }
    s
}

/// Statistics of one run, to show the sequences did what they should.
#[derive(Default, Debug)]
struct Stats {
    ops: usize,
    search_hits: usize,
    search_misses: usize,
    /// The driver refused an insert: its shadow says the table is full.
    full: usize,
    /// The card itself answered FULL to an INSERT (raw or `insert_by_card`).
    card_full: usize,
    exists: usize,
    cmd_errors: usize,
    max_occupancy: usize,
}

fn run(seed: u64, profile: Profile, ops: usize) -> Stats {
    // Every other seed starts the RTL from random register contents.
    let mut pair = new_pair(seed.is_multiple_of(2).then_some(seed));
    let mut g = Gen::new(seed, profile, RTL_DEPTH);
    let mut recent: VecDeque<String> = VecDeque::new();
    let mut st = Stats::default();
    for step in 0..ops {
        let full = pair.model.as_ref().unwrap().len() >= RTL_DEPTH as usize;
        let op = g.next(full);
        let a = apply(&mut pair.model, &op);
        let b = apply(&mut pair.rtl, &op);
        if recent.len() == 12 {
            recent.pop_front();
        }
        let mut desc = format!("{op:?}");
        desc.truncate(300);
        recent.push_back(format!("#{step} {desc} -> {}", truncated(&a)));
        let context = || {
            format!(
                "seed {seed} (profile {}), step {step}\nreproduce: COSIM_SEED={seed} COSIM_PROFILE={} COSIM_OPS={} cargo test -p tests --features verilator --test cosim_diff\nlast operations:\n  {}",
                profile.name,
                profile.name,
                step + 1,
                recent.iter().cloned().collect::<Vec<_>>().join("\n  ")
            )
        };
        assert!(
            a == b,
            "outcomes differ\n model: {a}\n rtl:   {b}\n{}",
            context()
        );
        let sa = snapshot(pair.model.as_mut().unwrap());
        let sb = snapshot(pair.rtl.as_mut().unwrap());
        assert!(
            sa == sb,
            "registers differ after the operation:\n{}{}",
            diff_snapshots(&sa, &sb),
            context()
        );
        let ml = pair.model.as_ref().unwrap().len();
        assert_eq!(
            ml,
            pair.rtl.as_ref().unwrap().len(),
            "shadows differ\n{}",
            context()
        );
        st.ops += 1;
        st.max_occupancy = st.max_occupancy.max(ml);
        if matches!(op, Op::Search(_) | Op::SearchTyped(_)) {
            if a.starts_with("Ok(Some") {
                st.search_hits += 1;
            } else {
                st.search_misses += 1;
            }
        }
        let full_status = cam::status::DONE.put(1) | cam::status::ERR.put(cam::err::FULL);
        match &op {
            Op::InsertByCard(_) if a.contains("CamFull") => st.card_full += 1,
            Op::RawCmd(_, c)
                if *c == cam::cmd::INSERT && a == format!("status=0x{full_status:08x}") =>
            {
                st.card_full += 1;
            }
            _ if a.contains("CamFull") => st.full += 1,
            _ => {}
        }
        if a.contains("KeyExists") {
            st.exists += 1;
        }
        if a.contains("CommandError")
            || (a.starts_with("status=") && !a.starts_with("status=0x0000000"))
        {
            st.cmd_errors += 1;
        }
    }
    // A final full comparison of the table contents.
    let sa = pair.model.as_mut().unwrap().scan().expect("scan model");
    let sb = pair.rtl.as_mut().unwrap().scan().expect("scan rtl");
    assert_eq!(sa, sb, "final scans differ (seed {seed})");
    st
}

fn truncated(s: &str) -> String {
    let mut t = s.to_string();
    t.truncate(200);
    t
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// At least 100,000 operations in total over several seeds and profiles
/// (`COSIM_OPS` sets the operations per seed, `COSIM_SEED` and
/// `COSIM_PROFILE` select one run).
#[test]
fn model_and_rtl_agree_on_random_sequences() {
    let per_seed = env_u64("COSIM_OPS").map_or(20_000, |n| n as usize);
    let runs: Vec<(u64, Profile)> = match env_u64("COSIM_SEED") {
        Some(seed) => {
            let name = std::env::var("COSIM_PROFILE").unwrap_or_else(|_| "balanced".into());
            let p = *PROFILES
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("COSIM_PROFILE={name:?}: no such profile"));
            vec![(seed, p)]
        }
        None => PROFILES
            .iter()
            .enumerate()
            .map(|(i, p)| (0xC0_51A0 + i as u64 * 7919, *p))
            .collect(),
    };
    // Seeds run in parallel, one thread each (every card owns its simulator).
    let handles: Vec<_> = runs
        .into_iter()
        .map(|(seed, p)| {
            std::thread::Builder::new()
                .name(format!("cosim-{seed}"))
                .spawn(move || {
                    let t = Instant::now();
                    let st = run(seed, p, per_seed);
                    eprintln!(
                        "cosim seed {seed} profile {}: {st:?} in {:.1?}",
                        p.name,
                        t.elapsed()
                    );
                    st
                })
                .expect("spawn")
        })
        .collect();
    let mut total = 0;
    let mut filled = false;
    let mut failed = Vec::new();
    for h in handles {
        let name = h.thread().name().unwrap_or("?").to_string();
        match h.join() {
            Ok(st) => {
                if per_seed >= 10_000 {
                    // The sequences did what they are for.
                    assert!(
                        st.search_hits > 500 && st.search_misses > 500 && st.cmd_errors > 100,
                        "{name}: {st:?}"
                    );
                }
                filled |= st.max_occupancy == RTL_DEPTH as usize && st.full > 0 && st.card_full > 0;
                total += st.ops;
            }
            Err(_) => failed.push(name),
        }
    }
    assert!(
        failed.is_empty(),
        "runs failed (see their panics above): {failed:?}"
    );
    if env_u64("COSIM_SEED").is_none() && env_u64("COSIM_OPS").is_none() {
        assert!(total >= 100_000, "only {total} operations");
        assert!(filled, "no run filled the table and hit FULL");
    }
}

// ------------------------------------------------- RTL-only contract checks

// The model completes every command inside the `CMD` write, so it can never
// be busy: the "CMD while busy" rules of hdl/CARD.md are checked on the RTL
// alone.

fn rtl_w(c: &mut RtlCard, o: u32, v: u32) {
    c.write32(BarOffset(o), v).expect("RTL write");
}

fn rtl_r(c: &mut RtlCard, o: u32) -> u32 {
    c.read32(BarOffset(o)).expect("RTL read")
}

fn rtl_wait(c: &mut RtlCard) -> u32 {
    for _ in 0..100 {
        let s = rtl_r(c, cam_off(cam::STATUS));
        if cam::status::BUSY.get(s) == 0 {
            return s;
        }
    }
    panic!("RTL command still busy after 100 polls");
}

fn rtl_stage(c: &mut RtlCard, key: u32, result: u32, did: u32, index: u32) {
    for w in 0..cam::KEY_WORDS {
        rtl_w(c, cam::BASE + cam::KEY.at(w), key.wrapping_add(w));
        rtl_w(c, cam::BASE + cam::MASK.at(w), u32::MAX);
    }
    rtl_w(c, cam_off(cam::RESULT), result);
    rtl_w(c, cam_off(cam::DID), did);
    rtl_w(c, cam_off(cam::INDEX), index);
}

#[test]
fn rtl_cmd_while_busy_is_dropped_and_the_running_command_completes() {
    use cam::{cmd, err, status};
    let mut c = RtlCard::with_depth(RTL_DEPTH).expect("RTL card");
    rtl_stage(&mut c, 0x100, 0x1234, 7, 5);
    rtl_w(&mut c, cam_off(cam::CMD), cmd::WRITE);
    // Still busy (a command runs for several clocks): this CMD is dropped ...
    let s = rtl_r(&mut c, cam_off(cam::STATUS));
    assert_eq!(status::BUSY.get(s), 1, "WRITE should still be running");
    rtl_w(&mut c, cam_off(cam::CMD), cmd::FLUSH_ALL);
    // ... and so is a staging write.
    rtl_w(&mut c, cam_off(cam::RESULT), 0xDEAD);
    let s = rtl_wait(&mut c);
    assert_eq!(status::DONE.get(s), 1);
    assert_eq!(status::ERR.get(s), err::BUSY, "STATUS 0x{s:08x}");
    assert_eq!(rtl_r(&mut c, cam_off(cam::ERR_COUNT)), 1);
    assert_eq!(rtl_r(&mut c, cam_off(cam::CMD_COUNT)), 1);
    assert_eq!(
        rtl_r(&mut c, cam_off(cam::OCCUPANCY)),
        1,
        "FLUSH_ALL must have been dropped"
    );
    assert_eq!(
        rtl_r(&mut c, cam_off(cam::RESULT)),
        0x1234,
        "staging write while busy must be dropped"
    );
    assert_eq!(rtl_r(&mut c, cam_off(cam::CMD)), cmd::WRITE);

    // A running command's own error overwrites the BUSY of a dropped one.
    rtl_w(&mut c, cam_off(cam::INDEX), RTL_DEPTH);
    rtl_w(&mut c, cam_off(cam::CMD), cmd::INVALIDATE);
    rtl_w(&mut c, cam_off(cam::CMD), cmd::SEARCH);
    let s = rtl_wait(&mut c);
    assert_eq!(status::ERR.get(s), err::BAD_INDEX, "STATUS 0x{s:08x}");
    assert_eq!(rtl_r(&mut c, cam_off(cam::ERR_COUNT)), 3);
    assert_eq!(rtl_r(&mut c, cam_off(cam::CMD_COUNT)), 2);

    // The next command starts clean.
    rtl_w(&mut c, cam_off(cam::INDEX), 5);
    rtl_w(&mut c, cam_off(cam::CMD), cmd::READ);
    let s = rtl_wait(&mut c);
    assert_eq!(s, status::DONE.put(1) | status::VALID.put(1));
    assert_eq!(rtl_r(&mut c, cam_off(cam::RESULT)), 0x1234);
    assert_eq!(rtl_r(&mut c, cam_off(cam::DID)), 7);
    assert_eq!(rtl_r(&mut c, cam_off(cam::ERR_COUNT)), 3);
}

/// The same fixed sequence on both cards, as a directed smoke test of the
/// comparison itself (and a quick reproducer template for findings).
#[test]
fn directed_sequence_agrees() {
    let mut pair = new_pair(Some(7));
    let e = |i: u32| CamEntry {
        key: CamKey::new(
            Some(1),
            Flow::Esp {
                dst: IpPrefix::host(v4(i)),
                spi: if i.is_multiple_of(3) {
                    None
                } else {
                    Some(0x100 + i)
                },
            },
        ),
        did: DistributionId((i % 4) as u16),
        result: ResultWord::decode(0xA500_0000 | i),
    };
    let mut ops: Vec<Op> = (0..40).map(|i| Op::Insert(e(i))).collect();
    ops.extend((0..40).map(|i| Op::SearchTyped(e(i).key)));
    ops.push(Op::Age);
    ops.push(Op::FlushDids(Box::new(
        DidSet::from_ids([DistributionId(1)]).expect("in range"),
    )));
    ops.push(Op::Age);
    ops.push(Op::RawCmd(Some(RTL_DEPTH), cam::cmd::READ));
    ops.push(Op::RawCmd(Some(0), 0x55));
    ops.push(Op::RawCmd(Some(RTL_DEPTH / 32), cam::cmd::HIT_RC));
    ops.push(Op::Dump(None));
    ops.push(Op::Verify);
    for (step, op) in ops.iter().enumerate() {
        pair.step(op, &format!("step {step}"));
    }
}

/// A soft reset written while a command is still running (on the RTL; the
/// model has finished it) leaves both cards in the same power-on state.
#[test]
fn soft_reset_during_a_command_agrees() {
    let mut pair = new_pair(Some(11));
    for code in [
        cam::cmd::WRITE,
        cam::cmd::INSERT,
        cam::cmd::FLUSH_ALL,
        cam::cmd::SEARCH,
    ] {
        let e = CamEntry {
            key: CamKey::new(
                None,
                Flow::Esp {
                    dst: IpPrefix::host(v4(3)),
                    spi: Some(9),
                },
            ),
            did: DistributionId(3),
            result: ResultWord::decode(0x1234_5678),
        };
        let what = format!("code {code}");
        pair.apply_both(&Op::Insert(e), &what);
        fn poke<R: RegIo>(r: &mut R, code: u32) {
            r.write32(BarOffset(cam_off(cam::INDEX)), 5).unwrap();
            r.write32(BarOffset(cam_off(cam::CMD)), code).unwrap();
            r.write32(
                BarOffset(ident::CONTROL.offset),
                ident::control::SOFT_RESET.put(1),
            )
            .unwrap();
        }
        poke(pair.model.as_mut().unwrap().regs_mut(), code);
        poke(pair.rtl.as_mut().unwrap().regs_mut(), code);
        pair.assert_same_registers(&what);
        for op in [
            Op::RawCmd(Some(5), cam::cmd::READ),
            Op::RawCmd(Some(0), cam::cmd::READ),
        ] {
            pair.step(&op, &what);
        }
        // The driver's shadow is stale after the raw reset: rebuild it.
        pair.apply_both(&Op::Reprobe(false), &what);
    }
}

/// Mask profiles and batches, directed: the driver's batch install, then raw batches with a
/// bad profile, a bad index, a CMD word with high bits set and INSERT_P into a full table
/// part-way, and SET_PROFILE past the profiles; outcomes and every register must agree.
#[test]
fn batch_commands_and_their_errors_agree() {
    use cam::cmd::{INSERT_P, WRITE_P};
    let mut pair = new_pair(Some(13));
    let entry = |i: u32| CamEntry {
        key: CamKey::new(
            Some(0),
            Flow::Tcp {
                src: IpPrefix::host(v6(i)),
                dst: IpPrefix::host(v6(i + 7)),
                src_port: Some(1024 + i as u16),
                dst_port: Some(443),
            },
        ),
        did: DistributionId((i % 5) as u16),
        result: ResultWord::new(Action::Accept),
    };
    let raw = |cmd: u32, index: Option<u32>, i: u32| RawBatchEntry {
        cmd,
        index,
        key: entry(i).key.encode().expect("encode").key,
        result: i,
        did: i,
    };
    let p = cam::PROFILES;
    let mut ops = vec![
        Op::Batch((0..30).map(entry).collect()),
        Op::Verify,
        Op::RawSetProfile([u32::MAX; KEY_WORDS], 1),
        Op::RawSetProfile([u32::MAX; KEY_WORDS], p),
        Op::RawSetProfile([7; KEY_WORDS], u32::MAX),
        Op::RawBatch(vec![
            raw(cam::batch_cmd(WRITE_P, 1), Some(40), 40),
            raw(cam::batch_cmd(WRITE_P, p), Some(41), 41),
            raw(cam::batch_cmd(WRITE_P, 1), Some(RTL_DEPTH), 42),
            raw(cam::batch_cmd(INSERT_P, 255), None, 43),
            raw(cam::batch_cmd(WRITE_P, 1) | 1 << 20, Some(44), 44),
            raw(cam::batch_cmd(INSERT_P, 1), None, 45),
        ]),
        Op::Read(40),
        Op::Read(41),
        Op::Dump(None),
    ];
    // Fill the table with INSERT_P, then one more: FULL.
    let fill: Vec<RawBatchEntry> = (0..RTL_DEPTH - 30)
        .map(|i| raw(cam::batch_cmd(INSERT_P, 1), None, 100 + i))
        .collect();
    ops.push(Op::RawBatch(fill));
    ops.push(Op::RawBatch(vec![
        raw(cam::batch_cmd(INSERT_P, 1), None, 5000),
        raw(cam::batch_cmd(WRITE_P, 1), Some(3), 5001),
    ]));
    ops.push(Op::Batch(vec![entry(6000)]));
    ops.push(Op::Verify);
    for (step, op) in ops.iter().enumerate() {
        pair.step(op, &format!("step {step}"));
    }
    let m = pair.model.as_mut().unwrap().regs_mut();
    let batch: Vec<u32> = [cam::BATCH_DONE, cam::BATCH_ERRS, cam::BATCH_ERR]
        .iter()
        .map(|r| m.read32(BarOffset(cam_off(*r))).expect("read"))
        .collect();
    let full = cam::batch_err::CODE.put(cam::err::FULL);
    assert_eq!(
        batch,
        [2, 1, full],
        "the last raw batch: FULL first, then a WRITE_P"
    );
}

#[test]
fn rtl_writes_wait_while_a_batch_command_runs() {
    use cam::{cmd, status};
    let mut c = RtlCard::with_depth(RTL_DEPTH).expect("RTL card");
    rtl_stage(&mut c, 0x100, 0x1234, 7, 5);
    rtl_w(&mut c, cam_off(cam::CMD), cmd::SET_PROFILE);
    // Held, not dropped: these land once SET_PROFILE has finished.
    rtl_w(&mut c, cam_off(cam::INDEX), 6);
    rtl_w(&mut c, cam_off(cam::RESULT), 0x5678);
    rtl_w(&mut c, cam::BASE + cam::MASK.at(0), 0);
    let t0 = c.cycles();
    rtl_w(&mut c, cam_off(cam::CMD), cam::batch_cmd(cmd::WRITE_P, 5));
    rtl_w(&mut c, cam_off(cam::RESULT), 0x9ABC);
    let held = c.cycles() - t0;
    rtl_w(&mut c, cam_off(cam::CMD), cam::batch_cmd(cmd::WRITE_P, 5));
    let s = rtl_wait(&mut c);
    assert_eq!(s, status::DONE.put(1), "STATUS 0x{s:08x}");
    assert!(
        held > 4,
        "the second write waited for WRITE_P: {held} clocks"
    );
    assert_eq!(rtl_r(&mut c, cam_off(cam::BATCH_DONE)), 2);
    assert_eq!(rtl_r(&mut c, cam_off(cam::BATCH_ERRS)), 0);
    assert_eq!(rtl_r(&mut c, cam_off(cam::ERR_COUNT)), 0);
    assert_eq!(rtl_r(&mut c, cam_off(cam::CMD_COUNT)), 3);
    // Entry 6 has RESULT 0x9ABC (the second WRITE_P), with profile 5's mask.
    rtl_w(&mut c, cam_off(cam::INDEX), 6);
    rtl_w(&mut c, cam_off(cam::CMD), cmd::READ);
    let s = rtl_wait(&mut c);
    assert_eq!(status::VALID.get(s), 1);
    assert_eq!(rtl_r(&mut c, cam_off(cam::RESULT)), 0x9ABC);
    assert_eq!(rtl_r(&mut c, cam::BASE + cam::MASK.at(0)), u32::MAX);
    // An old command still drops a CMD written while it runs.
    rtl_w(&mut c, cam_off(cam::CMD), cmd::FLUSH_ALL);
    rtl_w(&mut c, cam_off(cam::CMD), cam::batch_cmd(cmd::WRITE_P, 5));
    let s = rtl_wait(&mut c);
    assert_eq!(status::ERR.get(s), cam::err::BUSY, "STATUS 0x{s:08x}");
    assert_eq!(rtl_r(&mut c, cam_off(cam::OCCUPANCY)), 0);
    assert_eq!(rtl_r(&mut c, cam_off(cam::BATCH_DONE)), 2);
}
