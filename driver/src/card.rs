//! [`Card`]: probe, reset, and the CAM entry operations.

use hal::regs::{cam, ident, Reg, DEVICE_GONE};
use hal::{BarOffset, RegIo};
use serde::{Deserialize, Serialize};

use crate::error::{CamCmd, CmdErrorCode, DriverError};
use crate::key::{CamKey, KeyBits, KeyError, ResultWord, KEY_WORDS};
use crate::probe::{read_block_regs, walk_chain, BlockInfo, RegValue};
use crate::shadow::{Shadow, Slot};
use crate::types::{CamIndex, DidSet, DistributionId};

mod batch;

/// How many times [`Card`] polls `STATUS` for a command before it gives up
/// with [`DriverError::Timeout`], unless [`Card::set_poll_limit`] says
/// otherwise.
pub const DEFAULT_POLL_LIMIT: u32 = 100_000;

/// The largest CAM depth the driver accepts from `CAP_DEPTH`.
pub const MAX_DEPTH: u32 = 1 << 24;

/// STATUS bits no defined field covers: a working card reads them as 0.
const STATUS_RESERVED: u32 = {
    let mut known = 0;
    let mut i = 0;
    while i < cam::status::ALL.len() {
        let f = cam::status::ALL[i];
        known |= f.mask() << f.lsb;
        i += 1;
    }
    !known
};

/// The CAM block's capability registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CamCaps {
    /// Number of entries.
    pub depth: u32,
    /// Key width in bits (320).
    pub key_bits: u32,
    /// Result width in bits (32).
    pub result_bits: u32,
    /// Distribution-identifier width in bits (1 to 8; 8 on today's card).
    pub did_bits: u32,
    /// Data-path lookup latency in clock cycles.
    pub lookup_latency: u32,
}

/// What probing found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CardInfo {
    /// The backend, as [`RegIo::describe`] names it.
    pub backend: String,
    /// Every block of the chain, in chain order.
    pub blocks: Vec<BlockInfo>,
    /// The identity block's `BUILD_ID`.
    pub build_id: u32,
    /// The identity block's `BAR_BYTES`.
    pub bar_bytes: u32,
    /// The CAM block's capabilities.
    pub cam: CamCaps,
}

/// A typed CAM entry: key (with wildcards), distribution identifier, result.
///
/// # Examples
///
/// A wildcard entry: every TCP connection to port 22 of 198.51.100.0/24, from anywhere, goes to
/// the host; a concrete packet's key hits it.
///
/// ```
/// use driver::{Action, CamEntry, CamKey, Card, DistributionId, Flow, IpPrefix, ResultWord};
///
/// let any_ssh = CamEntry {
///     key: CamKey::new(None, Flow::Tcp {
///         src: IpPrefix::any_v4(),
///         dst: "198.51.100.0/24".parse()?,
///         src_port: None,
///         dst_port: Some(22),
///     }),
///     did: DistributionId(0),
///     result: ResultWord::new(Action::ToHost),
/// };
/// let mut card = Card::probe(sim_bridge::model::ModelCard::new())?;
/// card.insert(&any_ssh)?;
/// let packet = CamKey::new(Some(0), Flow::Tcp {
///     src: "192.0.2.9".parse()?,
///     dst: "198.51.100.7".parse()?,
///     src_port: Some(50_000),
///     dst_port: Some(22),
/// });
/// assert_eq!(card.search(&packet)?.map(|h| h.result.action), Some(Action::ToHost));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CamEntry {
    /// What the entry matches.
    pub key: CamKey,
    /// The distribution identifier the entry belongs to.
    pub did: DistributionId,
    /// What a match yields.
    pub result: ResultWord,
}

/// A successful search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SearchHit {
    /// The winning (lowest matching) entry.
    pub index: CamIndex,
    /// Its distribution identifier.
    pub did: DistributionId,
    /// Its result word.
    pub result: ResultWord,
}

/// One entry as the card holds it (a `READ`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DumpEntry {
    /// The slot.
    pub index: CamIndex,
    /// The decoded key, when the bits are something the typed model expresses.
    pub key: Option<CamKey>,
    /// Why the key did not decode, otherwise (serialised as its message).
    #[serde(serialize_with = "as_message")]
    pub key_error: Option<KeyError>,
    /// The raw key and mask.
    pub bits: KeyBits,
    /// The distribution identifier.
    pub did: DistributionId,
    /// The result word.
    pub result: ResultWord,
    /// The raw result word.
    pub result_raw: u32,
    /// The entry's valid bit.
    pub valid: bool,
    /// The entry's hit bit (set by a search or a data-path hit since the last
    /// aging scan).
    pub hit: bool,
}

/// Serialises an optional error as its message (`null` when there is none).
fn as_message<S: serde::Serializer>(e: &Option<KeyError>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.collect_str(e),
        None => s.serialize_none(),
    }
}

/// The card's counters.
///
/// # Examples
///
/// ```
/// use driver::Card;
///
/// let mut card = Card::probe(sim_bridge::model::ModelCard::new())?;
/// for n in 0..3 {
///     card.insert(&driver::sample::sample_entry(n))?;
/// }
/// let c = card.counters()?;
/// assert_eq!(c.occupancy, 3);
/// assert!(c.cmd_count >= 3);
/// assert_eq!(c.err_count, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Valid entries (`OCCUPANCY`).
    pub occupancy: u32,
    /// Management commands completed.
    pub cmd_count: u32,
    /// Management commands that ended with an error.
    pub err_count: u32,
    /// Data-path lookups.
    pub dp_lookups: u32,
    /// Data-path lookups that hit.
    pub dp_hits: u32,
}

/// The outcome of an aging scan ([`Card::age`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AgingScan {
    /// Valid entries not hit since the previous scan.
    pub idle: Vec<CamIndex>,
    /// Valid entries hit since the previous scan.
    pub active: Vec<CamIndex>,
}

/// The driver of one card, over any register backend.
///
/// The driver keeps a shadow of what it wrote into the CAM, so an insert
/// picks the lowest free slot without asking the card, and removal by key and
/// dump by distribution identifier cost no scan. Anything that changes the
/// CAM behind the driver's back (raw writes through [`Card::regs_mut`])
/// invalidates the shadow; [`Card::resync`] rebuilds it from the card.
///
/// Priority: the lowest matching index wins a search, and inserts take the
/// lowest free slot. Callers that need an order between overlapping wildcard
/// entries place them with [`Card::write_at`].
///
/// # Examples
///
/// Probe a card (here the reference model; on hardware a `hal::vfio::VfioCard`), install an
/// entry, find it, remove it:
///
/// ```
/// use driver::{Action, CamEntry, CamKey, Card, DistributionId, Flow, ResultWord};
///
/// let mut card = Card::probe(sim_bridge::model::ModelCard::new())?;
/// assert!(card.is_empty() && card.depth() > 0);
/// let key = CamKey::new(None, Flow::Icmp {
///     src: "192.0.2.1".parse()?,
///     dst: "192.0.2.2".parse()?,
///     id: Some(7),
/// });
/// let entry = CamEntry { key, did: DistributionId(1), result: ResultWord::new(Action::Accept) };
/// let slot = card.insert(&entry)?;
/// assert_eq!(card.find(&key)?, Some(slot));
/// assert_eq!(card.remove(&key)?, Some(slot));
/// assert!(card.search(&key)?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Card<R: RegIo> {
    regs: R,
    info: CardInfo,
    cam_base: u32,
    shadow: Shadow,
    poll_limit: u32,
    /// The card's mask profiles as the driver set them (`None`: not known, set before use);
    /// empty on a card without batch commands (CAM minor version below
    /// [`cam::MINOR_BATCH`]).
    profiles: Vec<Option<[u32; KEY_WORDS]>>,
}

impl<R: RegIo> std::fmt::Debug for Card<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Card")
            .field("info", &self.info)
            .field("entries", &self.shadow.len())
            .finish_non_exhaustive()
    }
}

impl<R: RegIo> Card<R> {
    /// Probe the card and soft-reset it: walk the block chain (see
    /// [`walk_chain`]), read the CAM capabilities, test the bus with the
    /// scratch register, then reset every block. The CAM is empty afterwards.
    ///
    /// # Errors
    /// Every probe error of [`DriverError`]: device gone, wrong magic,
    /// unsupported major version, chain loop, bad next pointer, missing CAM
    /// block, unsupported capability, scratch mismatch, failed reset.
    pub fn probe(regs: R) -> Result<Self, DriverError> {
        let mut card = Self::discover(regs)?;
        let pattern = 0x5A5A_A5A5;
        card.write(ident::SCRATCH.offset, pattern)?;
        let read = card.read_live(ident::SCRATCH.offset)?;
        if read != pattern {
            return Err(DriverError::ScratchMismatch {
                wrote: pattern,
                read,
            });
        }
        card.reset()?;
        Ok(card)
    }

    /// Probe the card without resetting it, and rebuild the shadow by reading
    /// every CAM entry: for looking at a card that is in service.
    ///
    /// # Errors
    /// As for [`Card::probe`], and command errors of the `READ`s.
    pub fn attach(regs: R) -> Result<Self, DriverError> {
        let mut card = Self::discover(regs)?;
        card.resync()?;
        Ok(card)
    }

    fn discover(mut regs: R) -> Result<Self, DriverError> {
        let blocks = walk_chain(&mut regs)?;
        let cam_block = blocks
            .iter()
            .find(|b| b.type_id == hal::regs::block_type::CAM)
            .ok_or(DriverError::MissingBlock { block: "CAM" })?;
        let cam_base = cam_block.offset;
        let mut card = Self {
            regs,
            info: CardInfo {
                backend: String::new(),
                blocks,
                build_id: 0,
                bar_bytes: 0,
                cam: CamCaps {
                    depth: 0,
                    key_bits: 0,
                    result_bits: 0,
                    did_bits: 0,
                    lookup_latency: 0,
                },
            },
            cam_base,
            shadow: Shadow::new(0),
            poll_limit: DEFAULT_POLL_LIMIT,
            profiles: Vec::new(),
        };
        let minor = card
            .info
            .blocks
            .iter()
            .find(|b| b.offset == cam_base)
            .map_or(0, |b| b.minor);
        card.info.backend = card.regs.describe();
        card.info.build_id = card.read_live(ident::BUILD_ID.offset)?;
        card.info.bar_bytes = card.read_live(ident::BAR_BYTES.offset)?;
        let caps = CamCaps {
            depth: card.cam_cap(
                cam::CAP_DEPTH,
                |v| (1..=MAX_DEPTH).contains(&v),
                "1..=16777216 entries",
            )?,
            key_bits: card.cam_cap(cam::CAP_KEY_BITS, |v| v == cam::KEY_BITS, "320 bits")?,
            result_bits: card.cam_cap(cam::CAP_RESULT_BITS, |v| v == 32, "32 bits")?,
            did_bits: card.cam_cap(
                cam::CAP_DID_BITS,
                |v| (1..=DidSet::BITS).contains(&v),
                "1..=12 bits",
            )?,
            lookup_latency: card.cam_cap(cam::CAP_LOOKUP_LATENCY, |_| true, "any")?,
        };
        card.info.cam = caps;
        card.shadow = Shadow::new(caps.depth);
        if minor >= cam::MINOR_BATCH {
            let n = card.cam_cap(
                cam::CAP_PROFILES,
                |v| (1..=256).contains(&v),
                "1..=256 profiles",
            )?;
            card.profiles = vec![None; n as usize];
        }
        Ok(card)
    }

    fn cam_cap(
        &mut self,
        r: Reg,
        ok: impl Fn(u32) -> bool,
        expected: &'static str,
    ) -> Result<u32, DriverError> {
        let value = self.read_live(self.cam_base + r.offset)?;
        if ok(value) {
            Ok(value)
        } else {
            Err(DriverError::BadCapability {
                name: r.name,
                value,
                expected,
            })
        }
    }

    /// Soft-reset the card: every block returns to its power-on state and the
    /// CAM is empty.
    ///
    /// # Errors
    /// [`DriverError::ResetFailed`] when entries survive, device gone, HAL errors.
    pub fn reset(&mut self) -> Result<(), DriverError> {
        self.write(ident::CONTROL.offset, ident::control::SOFT_RESET.put(1))?;
        self.shadow.clear_all();
        self.profiles.iter_mut().for_each(|p| *p = None);
        self.read_live(ident::MAGIC.offset)?;
        let occupancy = self.read_live(self.cam_base + cam::OCCUPANCY.offset)?;
        if occupancy != 0 {
            return Err(DriverError::ResetFailed { occupancy });
        }
        Ok(())
    }

    /// What probing found.
    #[must_use]
    pub fn info(&self) -> &CardInfo {
        &self.info
    }

    /// The blocks of the chain.
    #[must_use]
    pub fn blocks(&self) -> &[BlockInfo] {
        &self.info.blocks
    }

    /// The CAM depth.
    #[must_use]
    pub fn depth(&self) -> u32 {
        self.info.cam.depth
    }

    /// Number of entries the driver has written (its shadow's occupancy).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shadow.len()
    }

    /// Whether the CAM holds no entry (per the shadow).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shadow.len() == 0
    }

    /// The slot holding exactly this key (same fields, same wildcards), per
    /// the shadow.
    ///
    /// # Errors
    /// [`DriverError::Key`] when the key does not encode.
    pub fn find(&self, key: &CamKey) -> Result<Option<CamIndex>, DriverError> {
        Ok(self.shadow.find(&key.encode()?).map(CamIndex))
    }

    /// Slots the shadow holds for `did`, ascending.
    #[must_use]
    pub fn slots_of(&self, did: DistributionId) -> Vec<CamIndex> {
        self.shadow_of(did).into_iter().map(CamIndex).collect()
    }

    /// Limit the `STATUS` polls per command (at least 1).
    pub fn set_poll_limit(&mut self, polls: u32) {
        self.poll_limit = polls.max(1);
    }

    /// The register backend. Writing CAM registers through it behind the
    /// driver's back desynchronises the shadow (see [`Card::resync`]).
    pub fn regs_mut(&mut self) -> &mut R {
        &mut self.regs
    }

    /// Give the register backend back.
    pub fn into_inner(self) -> R {
        self.regs
    }

    // ---- entry operations -------------------------------------------------

    /// Insert `entry` into the lowest free slot (chosen from the shadow; no
    /// read-back).
    ///
    /// # Errors
    /// [`DriverError::KeyExists`] when the same key (with the same
    /// wildcards) is present, [`DriverError::CamFull`], a bad key, command
    /// errors.
    pub fn insert(&mut self, entry: &CamEntry) -> Result<CamIndex, DriverError> {
        self.insert_bits(&entry.key.encode()?, entry.did, entry.result.encode())
    }

    /// [`Card::insert`] with raw key bits and result word.
    ///
    /// # Errors
    /// As for [`Card::insert`].
    pub fn insert_bits(
        &mut self,
        bits: &KeyBits,
        did: DistributionId,
        result: u32,
    ) -> Result<CamIndex, DriverError> {
        if let Some(i) = self.shadow.find(bits) {
            return Err(DriverError::KeyExists { index: CamIndex(i) });
        }
        let i = self.shadow.lowest_free().ok_or(DriverError::CamFull {
            depth: self.depth(),
        })?;
        self.write_slot(i, bits, did, result)?;
        Ok(CamIndex(i))
    }

    /// Insert with the card's own `INSERT` command (the card picks the lowest
    /// invalid slot and returns it). Same result as [`Card::insert`] while the
    /// shadow is right; costs one more register read.
    ///
    /// # Errors
    /// As for [`Card::insert`]; [`DriverError::Inconsistent`] when the card's
    /// choice is a slot the shadow thinks is in use.
    pub fn insert_by_card(&mut self, entry: &CamEntry) -> Result<CamIndex, DriverError> {
        let bits = entry.key.encode()?.normalized();
        if let Some(i) = self.shadow.find(&bits) {
            return Err(DriverError::KeyExists { index: CamIndex(i) });
        }
        let result = entry.result.encode();
        self.stage(&bits, entry.did, result)?;
        match self.command(CamCmd::Insert) {
            Err(DriverError::CommandError {
                code: CmdErrorCode::Full,
                ..
            }) => {
                return Err(DriverError::CamFull {
                    depth: self.depth(),
                })
            }
            r => r?,
        };
        let i = self.read_cam(cam::INDEX)?;
        self.check_index(i)?;
        if self.shadow.get(i).is_some() {
            return Err(DriverError::Inconsistent {
                index: CamIndex(i),
                detail: "INSERT chose a slot the driver believes is in use".into(),
            });
        }
        self.shadow.set(
            i,
            Slot {
                bits,
                did: self.card_did(entry.did)?,
                result,
            },
        );
        Ok(CamIndex(i))
    }

    /// Replace the distribution identifier and result of the entry with this
    /// key, in place (same slot, so its priority is kept).
    ///
    /// # Errors
    /// [`DriverError::KeyNotFound`], a bad key, command errors.
    pub fn overwrite(&mut self, entry: &CamEntry) -> Result<CamIndex, DriverError> {
        let bits = entry.key.encode()?;
        let i = self.shadow.find(&bits).ok_or(DriverError::KeyNotFound)?;
        self.write_slot(i, &bits, entry.did, entry.result.encode())?;
        Ok(CamIndex(i))
    }

    /// Overwrite the entry with this key if present, insert it otherwise.
    /// Returns the slot and whether an entry was replaced.
    ///
    /// # Errors
    /// As for [`Card::insert`].
    pub fn upsert(&mut self, entry: &CamEntry) -> Result<(CamIndex, bool), DriverError> {
        match self.overwrite(entry) {
            Err(DriverError::KeyNotFound) => Ok((self.insert(entry)?, false)),
            r => Ok((r?, true)),
        }
    }

    /// Write `entry` into slot `index`, replacing whatever was there (for
    /// callers that order overlapping wildcard entries themselves).
    ///
    /// # Errors
    /// [`DriverError::BadIndex`], [`DriverError::KeyExists`] when the key
    /// sits in another slot, a bad key, command errors.
    pub fn write_at(&mut self, index: CamIndex, entry: &CamEntry) -> Result<(), DriverError> {
        self.check_index(index.0)?;
        let bits = entry.key.encode()?;
        match self.shadow.find(&bits) {
            Some(i) if i != index.0 => Err(DriverError::KeyExists { index: CamIndex(i) }),
            _ => self.write_slot(index.0, &bits, entry.did, entry.result.encode()),
        }
    }

    /// Remove the entry with this key (same fields, same wildcards). Returns
    /// the slot it occupied, `None` when no such entry is present.
    ///
    /// # Errors
    /// A bad key, command errors.
    pub fn remove(&mut self, key: &CamKey) -> Result<Option<CamIndex>, DriverError> {
        let bits = key.encode()?;
        match self.shadow.find(&bits) {
            Some(i) => {
                self.remove_at(CamIndex(i))?;
                Ok(Some(CamIndex(i)))
            }
            None => Ok(None),
        }
    }

    /// Invalidate slot `index`. Returns whether the shadow held an entry
    /// there (the card is told in every case).
    ///
    /// # Errors
    /// [`DriverError::BadIndex`], command errors.
    pub fn remove_at(&mut self, index: CamIndex) -> Result<bool, DriverError> {
        self.check_index(index.0)?;
        self.write_cam(cam::INDEX, index.0)?;
        self.command(CamCmd::Invalidate)?;
        Ok(self.shadow.clear(index.0).is_some())
    }

    /// Look a concrete key up (as a packet would be). Wildcarded fields of
    /// `key` are searched as zero.
    ///
    /// # Errors
    /// A bad key, command errors, [`DriverError::Inconsistent`] when the
    /// card answers with a slot the driver never wrote.
    pub fn search(&mut self, key: &CamKey) -> Result<Option<SearchHit>, DriverError> {
        self.search_bits(&key.encode()?.key)
    }

    /// [`Card::search`] with raw key words.
    ///
    /// # Errors
    /// As for [`Card::search`].
    pub fn search_bits(
        &mut self,
        key: &[u32; KEY_WORDS],
    ) -> Result<Option<SearchHit>, DriverError> {
        for (i, w) in key.iter().enumerate() {
            self.write_cam_at(cam::KEY, i as u32, *w)?;
        }
        let status = self.command(CamCmd::Search)?;
        if cam::status::MATCH.get(status) == 0 {
            return Ok(None);
        }
        // After a match INDEX is a slot and DID has 8 bits: all ones in
        // either means the device is gone.
        let i = self.read_live(self.cam_base + cam::INDEX.offset)?;
        self.check_index(i)?;
        let result = self.read_cam(cam::RESULT)?;
        let did = self.read_live(self.cam_base + cam::DID.offset)?;
        let Some(slot) = self.shadow.get(i) else {
            return Err(DriverError::Inconsistent {
                index: CamIndex(i),
                detail: "SEARCH matched a slot the driver never wrote".into(),
            });
        };
        if u32::from(slot.did) != did || slot.result != result {
            return Err(DriverError::Inconsistent {
                index: CamIndex(i),
                detail: format!(
                    "SEARCH returned did {did} result 0x{result:08x}, driver wrote did {} result 0x{:08x}",
                    slot.did, slot.result
                ),
            });
        }
        Ok(Some(SearchHit {
            index: CamIndex(i),
            did: DistributionId(slot.did),
            result: ResultWord::decode(result),
        }))
    }

    /// Read slot `index` back from the card (valid or not).
    ///
    /// # Errors
    /// [`DriverError::BadIndex`], command errors.
    pub fn read(&mut self, index: CamIndex) -> Result<DumpEntry, DriverError> {
        self.check_index(index.0)?;
        self.write_cam(cam::INDEX, index.0)?;
        let status = self.command(CamCmd::Read)?;
        let mut bits = KeyBits::default();
        for i in 0..KEY_WORDS {
            bits.key[i] = self.read_cam_at(cam::KEY, i as u32)?;
            bits.mask[i] = self.read_cam_at(cam::MASK, i as u32)?;
        }
        let result_raw = self.read_cam(cam::RESULT)?;
        let did = self.read_live(self.cam_base + cam::DID.offset)?;
        let (key, key_error) = match CamKey::decode(&bits) {
            Ok(k) => (Some(k), None),
            Err(e) => (None, Some(e)),
        };
        Ok(DumpEntry {
            index,
            key,
            key_error,
            bits,
            // The register's low 8 bits, as the card stores them.
            did: DistributionId((did & 0xFF) as u16),
            result: ResultWord::decode(result_raw),
            result_raw,
            valid: cam::status::VALID.get(status) == 1,
            hit: cam::status::HIT.get(status) == 1,
        })
    }

    /// Read back every entry the driver has written (optionally only those of
    /// one distribution identifier), in slot order. One `READ` per entry.
    ///
    /// # Errors
    /// Command errors; [`DriverError::Inconsistent`] when the card says an
    /// entry the driver wrote is invalid.
    pub fn dump(&mut self, did: Option<DistributionId>) -> Result<Vec<DumpEntry>, DriverError> {
        let slots: Vec<u32> = match did {
            Some(d) => self.shadow_of(d),
            None => self.shadow.occupied().collect(),
        };
        let mut out = Vec::with_capacity(slots.len());
        for i in slots {
            let e = self.read(CamIndex(i))?;
            if !e.valid {
                return Err(DriverError::Inconsistent {
                    index: e.index,
                    detail: "the driver wrote this entry but the card says it is invalid".into(),
                });
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Read every slot of the card and return the valid ones: the card's own
    /// view, independent of the shadow. One `READ` per slot.
    ///
    /// # Errors
    /// Command errors.
    pub fn scan(&mut self) -> Result<Vec<DumpEntry>, DriverError> {
        let mut out = Vec::new();
        for i in 0..self.depth() {
            let e = self.read(CamIndex(i))?;
            if e.valid {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Rebuild the shadow from a [`Card::scan`] of the card, and forget which masks the card's
    /// profiles hold (the next batch sets the ones it uses again).
    ///
    /// # Errors
    /// As for [`Card::scan`].
    pub fn resync(&mut self) -> Result<(), DriverError> {
        self.profiles.iter_mut().for_each(|p| *p = None);
        let entries = self.scan()?;
        self.shadow.clear_all();
        for e in entries {
            self.shadow.set(
                e.index.0,
                Slot {
                    bits: e.bits,
                    did: e.did.0 & 0xFFF,
                    result: e.result_raw,
                },
            );
        }
        Ok(())
    }

    /// Invalidate every entry whose distribution identifier is in `dids`, with
    /// one `FLUSH_DID` command. Returns how many entries the driver had there.
    ///
    /// # Errors
    /// Command errors.
    /// [`DriverError::DidTooWide`] when the set holds an identifier wider than
    /// the card's `CAP_DID_BITS` (nothing is flushed then).
    pub fn flush_dids(&mut self, dids: &DidSet) -> Result<usize, DriverError> {
        for d in dids.iter() {
            self.card_did(d)?;
        }
        for (i, w) in dids.words().iter().enumerate() {
            self.write_cam_at(cam::DID_BITMAP, i as u32, *w)?;
        }
        self.command(CamCmd::FlushDid)?;
        let mut n = 0;
        for d in dids.iter() {
            let slots = self.shadow_of(d);
            for i in slots {
                self.shadow.clear(i);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Invalidate every entry. Returns how many the driver had.
    ///
    /// # Errors
    /// Command errors.
    pub fn flush_all(&mut self) -> Result<usize, DriverError> {
        self.command(CamCmd::FlushAll)?;
        Ok(self.shadow.clear_all())
    }

    /// Aging: read and clear the hit bits of every 32-slot group holding an
    /// entry (`HIT_RC`), and sort the entries into idle (not hit since the
    /// previous scan) and active.
    ///
    /// # Errors
    /// Command errors.
    pub fn age(&mut self) -> Result<AgingScan, DriverError> {
        let mut scan = AgingScan::default();
        for g in 0..self.depth().div_ceil(32) {
            if !self.shadow.group_used(g) {
                continue;
            }
            self.write_cam(cam::INDEX, g)?;
            self.command(CamCmd::HitRc)?;
            let hits = self.read_cam(cam::HITS)?;
            for b in 0..32 {
                let i = g * 32 + b;
                if self.shadow.get(i).is_some() {
                    if (hits >> b) & 1 == 1 {
                        scan.active.push(CamIndex(i));
                    } else {
                        scan.idle.push(CamIndex(i));
                    }
                }
            }
        }
        Ok(scan)
    }

    /// Read the CAM block's counters.
    ///
    /// # Errors
    /// [`DriverError::DeviceGone`], HAL errors.
    pub fn counters(&mut self) -> Result<Counters, DriverError> {
        let occupancy = self.read_live(self.cam_base + cam::OCCUPANCY.offset)?;
        Ok(Counters {
            occupancy,
            cmd_count: self.read_cam(cam::CMD_COUNT)?,
            err_count: self.read_cam(cam::ERR_COUNT)?,
            dp_lookups: self.read_cam(cam::DP_LOOKUPS)?,
            dp_hits: self.read_cam(cam::DP_HITS)?,
        })
    }

    /// Read every register of every block in the chain (`hwctl regs`).
    ///
    /// # Errors
    /// HAL errors.
    pub fn read_all_regs(&mut self) -> Result<Vec<(BlockInfo, Vec<RegValue>)>, DriverError> {
        let blocks = self.info.blocks.clone();
        blocks
            .into_iter()
            .map(|b| Ok((b, read_block_regs(&mut self.regs, &b)?)))
            .collect()
    }

    /// Compare the shadow with the card's contents (a full scan).
    ///
    /// # Errors
    /// [`DriverError::Inconsistent`] at the first difference; command errors.
    pub fn verify(&mut self) -> Result<(), DriverError> {
        let occupied: Vec<u32> = self.shadow.occupied().collect();
        let mut expected = occupied.into_iter();
        for e in self.scan()? {
            let want = expected.next();
            let slot = self.shadow.get(e.index.0).copied();
            let ok = want == Some(e.index.0)
                && slot.is_some_and(|s| {
                    s.bits == e.bits.normalized() && s.did == e.did.0 && s.result == e.result_raw
                });
            if !ok {
                return Err(DriverError::Inconsistent {
                    index: e.index,
                    detail: format!("card holds {e:?}, driver expects {slot:?}"),
                });
            }
        }
        match expected.next() {
            Some(i) => Err(DriverError::Inconsistent {
                index: CamIndex(i),
                detail: "the driver wrote this entry but the card says it is invalid".into(),
            }),
            None => Ok(()),
        }
    }

    // ---- register plumbing -----------------------------------------------

    fn check_index(&self, i: u32) -> Result<(), DriverError> {
        if i < self.depth() {
            Ok(())
        } else {
            Err(DriverError::BadIndex {
                index: CamIndex(i),
                depth: self.depth(),
            })
        }
    }

    fn write_slot(
        &mut self,
        i: u32,
        bits: &KeyBits,
        did: DistributionId,
        result: u32,
    ) -> Result<(), DriverError> {
        let bits = bits.normalized();
        self.stage(&bits, did, result)?;
        self.write_cam(cam::INDEX, i)?;
        self.command(CamCmd::Write)?;
        self.shadow.set(
            i,
            Slot {
                bits,
                did: self.card_did(did)?,
                result,
            },
        );
        Ok(())
    }

    fn stage(
        &mut self,
        bits: &KeyBits,
        did: DistributionId,
        result: u32,
    ) -> Result<(), DriverError> {
        for i in 0..KEY_WORDS {
            self.write_cam_at(cam::KEY, i as u32, bits.key[i])?;
            self.write_cam_at(cam::MASK, i as u32, bits.mask[i])?;
        }
        let did = self.card_did(did)?;
        self.write_cam(cam::RESULT, result)?;
        self.write_cam(cam::DID, u32::from(did))
    }

    /// `did` as the card stores it.
    ///
    /// # Errors
    /// [`DriverError::DidTooWide`] when it does not fit the card's
    /// `CAP_DID_BITS`.
    fn card_did(&self, did: DistributionId) -> Result<u16, DriverError> {
        let bits = self.info.cam.did_bits;
        if did.fits(bits) && did.fits(DidSet::BITS) {
            Ok(did.0)
        } else {
            Err(DriverError::DidTooWide { did, bits })
        }
    }

    /// The shadow's slots of `did`, ascending (none for an identifier the
    /// card cannot hold).
    fn shadow_of(&self, did: DistributionId) -> Vec<u32> {
        self.shadow.of_did(did.0).collect()
    }

    /// Start `cmd` and poll `STATUS` until it completes; returns `STATUS`.
    fn command(&mut self, cmd: CamCmd) -> Result<u32, DriverError> {
        self.write_cam(cam::CMD, cmd.code())?;
        self.wait(cmd)
    }

    /// Poll `STATUS` until the running command (`cmd`, for the errors) completes; returns
    /// `STATUS`, or the command's error.
    fn wait(&mut self, cmd: CamCmd) -> Result<u32, DriverError> {
        let s = self.wait_idle(cmd)?;
        match cam::status::ERR.get(s) {
            cam::err::OK => Ok(s),
            code => Err(DriverError::CommandError {
                cmd,
                code: CmdErrorCode::from_code(code),
            }),
        }
    }

    /// Poll `STATUS` until `BUSY` clears (`cmd` names the command in errors); returns
    /// `STATUS` whatever its error code.
    fn wait_idle(&mut self, cmd: CamCmd) -> Result<u32, DriverError> {
        use cam::status;
        let offset = self.cam_base + cam::STATUS.offset;
        let mut polls = 0;
        loop {
            let s = self.read_live(offset)?;
            polls += 1;
            if s & STATUS_RESERVED != 0 {
                return Err(DriverError::BadStatus { cmd, status: s });
            }
            if status::BUSY.get(s) == 0 {
                if status::DONE.get(s) == 0 {
                    return Err(DriverError::BadStatus { cmd, status: s });
                }
                return Ok(s);
            }
            if polls >= self.poll_limit {
                return Err(DriverError::Timeout { cmd, polls });
            }
            self.regs.idle();
        }
    }

    fn read_cam(&mut self, r: Reg) -> Result<u32, DriverError> {
        Ok(self.regs.read32(BarOffset(self.cam_base + r.offset))?)
    }

    fn read_cam_at(&mut self, r: Reg, i: u32) -> Result<u32, DriverError> {
        Ok(self.regs.read32(BarOffset(self.cam_base + r.at(i)))?)
    }

    fn write_cam(&mut self, r: Reg, v: u32) -> Result<(), DriverError> {
        Ok(self.regs.write32(BarOffset(self.cam_base + r.offset), v)?)
    }

    fn write_cam_at(&mut self, r: Reg, i: u32, v: u32) -> Result<(), DriverError> {
        Ok(self.regs.write32(BarOffset(self.cam_base + r.at(i)), v)?)
    }

    fn write(&mut self, offset: u32, v: u32) -> Result<(), DriverError> {
        Ok(self.regs.write32(BarOffset(offset), v)?)
    }

    /// Read a register that reads all ones only when the device is gone.
    fn read_live(&mut self, offset: u32) -> Result<u32, DriverError> {
        let v = self.regs.read32(BarOffset(offset))?;
        if v == DEVICE_GONE {
            return Err(DriverError::DeviceGone {
                offset: BarOffset(offset),
            });
        }
        Ok(v)
    }
}
