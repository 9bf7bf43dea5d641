//! Batch installs (CAM minor version 1, `hdl/CARD.md`): mask profiles and the batch entry
//! command `WRITE_P`.
//!
//! The card keeps a small table of masks (profiles) that the driver sets when it first needs
//! one; an entry then names its mask by profile number in its `CMD` word instead of writing
//! ten `MASK` words. While a batch command runs the card holds the next CAM-block write back
//! instead of dropping it, so the driver writes entry after entry without polling and reads
//! the batch's completion counters once at its end. Per entry that is the key words, `RESULT`,
//! `DID`, `INDEX` and `CMD` (14 writes), less the staging words whose value the previous entry
//! of the batch left there, and no read.

use std::collections::HashMap;

use hal::regs::cam;
use hal::RegIo;

use super::Card;
use crate::error::{CamCmd, CmdErrorCode, DriverError};
use crate::key::{KeyBits, KEY_WORDS};
use crate::shadow::Slot;
use crate::types::{CamIndex, DistributionId};
use crate::CamEntry;

/// The staging words a batch entry writes, in order: `KEY[0..9]`, `RESULT`, `DID`, `INDEX`.
const STAGED: usize = KEY_WORDS + 3;
/// Position of `INDEX` among them.
const STAGED_INDEX: usize = KEY_WORDS + 2;

/// What the driver knows the staging registers hold during a batch (`None`: unknown).
type Staged = [Option<u32>; STAGED];

impl<R: RegIo> Card<R> {
    /// Mask profiles the card has (`CAP_PROFILES`); 0 on a card without batch commands
    /// (CAM minor version 0), where [`Card::install_batch`] writes entry by entry.
    #[must_use]
    pub fn mask_profiles(&self) -> usize {
        self.profiles.len()
    }

    /// Install `entries`, in order, into the lowest free slots (chosen from the shadow, as
    /// [`Card::insert`] does for one entry): the takeover path. Returns each entry's slot.
    ///
    /// Nothing is written unless every entry can go in: each key must encode, fit the card's
    /// identifiers and be new (not in the CAM and not twice in `entries`), and there must be
    /// enough free slots. On a card with mask profiles each entry is one `WRITE_P` with no
    /// read (see the module documentation); an entry whose mask has no profile left to take
    /// is written with `WRITE` instead. On an older card every entry is a `WRITE`.
    ///
    /// # Errors
    /// [`DriverError::KeyExists`] (a key present, or repeated in the batch: the index is
    /// where its first copy would go), [`DriverError::CamFull`], a bad key,
    /// [`DriverError::DidTooWide`] (all before anything is written); command errors, and
    /// [`DriverError::BatchFailed`] when the card reports failed or missing entry commands
    /// (the driver has then rebuilt its shadow from the card).
    pub fn install_batch(&mut self, entries: &[CamEntry]) -> Result<Vec<CamIndex>, DriverError> {
        let slots = self.shadow.free_slots(entries.len());
        let mut planned = Vec::with_capacity(entries.len());
        let mut seen: HashMap<KeyBits, u32> = HashMap::with_capacity(entries.len());
        for (n, e) in entries.iter().enumerate() {
            let bits = e.key.encode()?.normalized();
            let did = self.card_did(e.did)?;
            if let Some(i) = self.shadow.find(&bits) {
                return Err(DriverError::KeyExists { index: CamIndex(i) });
            }
            let Some(&slot) = slots.get(n) else {
                return Err(DriverError::CamFull {
                    depth: self.depth(),
                });
            };
            if let Some(&i) = seen.get(&bits) {
                return Err(DriverError::KeyExists { index: CamIndex(i) });
            }
            seen.insert(bits, slot);
            planned.push((
                slot,
                Slot {
                    bits,
                    did,
                    result: e.result.encode(),
                },
            ));
        }
        if self.profiles.is_empty() {
            for (slot, s) in &planned {
                self.write_slot(*slot, &s.bits, DistributionId(s.did), s.result)?;
            }
        } else {
            self.run_batch(&planned)?;
        }
        Ok(planned
            .into_iter()
            .map(|(slot, _)| CamIndex(slot))
            .collect())
    }

    /// `BATCH_START`, one `WRITE_P` (or a `WRITE`) per planned entry, then the completion
    /// check.
    fn run_batch(&mut self, planned: &[(u32, Slot)]) -> Result<(), DriverError> {
        self.write_cam(cam::CMD, CamCmd::BatchStart.code())?;
        let mut staged: Staged = [None; STAGED];
        // the staging register of each staged word: the key words, RESULT, DID, INDEX
        let mut regs = [0; STAGED];
        for (k, r) in regs.iter_mut().enumerate() {
            *r = self.cam_base
                + match k {
                    _ if k < KEY_WORDS => cam::KEY.at(k as u32),
                    _ if k == KEY_WORDS => cam::RESULT.offset,
                    _ if k == KEY_WORDS + 1 => cam::DID.offset,
                    _ => cam::INDEX.offset,
                };
        }
        let mut sent = 0;
        for (slot, s) in planned {
            let Some(profile) = self.profile_for(&s.bits.mask, &mut staged)? else {
                self.write_slot(*slot, &s.bits, DistributionId(s.did), s.result)?;
                staged = [None; STAGED];
                continue;
            };
            let mut words = [0; STAGED];
            words[..KEY_WORDS].copy_from_slice(&s.bits.key);
            words[KEY_WORDS] = s.result;
            words[KEY_WORDS + 1] = u32::from(s.did);
            words[STAGED_INDEX] = *slot;
            for ((&w, known), &r) in words.iter().zip(staged.iter_mut()).zip(&regs) {
                if *known != Some(w) {
                    self.write(r, w)?;
                    *known = Some(w);
                }
            }
            self.write_cam(cam::CMD, cam::batch_cmd(cam::cmd::WRITE_P, profile))?;
            self.shadow.set(*slot, *s);
            sent += 1;
        }
        self.finish_batch(sent)
    }

    /// The profile holding `mask`, set now if the card has a profile the driver has not
    /// used yet; `None` when every profile holds another mask.
    fn profile_for(
        &mut self,
        mask: &[u32; KEY_WORDS],
        staged: &mut Staged,
    ) -> Result<Option<u32>, DriverError> {
        if let Some(p) = self.profiles.iter().position(|p| p.as_ref() == Some(mask)) {
            return Ok(Some(p as u32));
        }
        let Some(p) = self.profiles.iter().position(Option::is_none) else {
            return Ok(None);
        };
        for (i, w) in mask.iter().enumerate() {
            self.write_cam_at(cam::MASK, i as u32, *w)?;
        }
        self.write_cam(cam::INDEX, p as u32)?;
        staged[STAGED_INDEX] = None;
        self.command(CamCmd::SetProfile)?;
        self.profiles[p] = Some(*mask);
        Ok(Some(p as u32))
    }

    /// Wait for the last command of the batch, then read its counters once: every one of
    /// the `sent` entry commands must have run without an error.
    fn finish_batch(&mut self, sent: u32) -> Result<(), DriverError> {
        self.wait_idle(CamCmd::WriteP)?;
        let done = self.read_live(self.cam_base + cam::BATCH_DONE.offset)?;
        let errs = self.read_cam(cam::BATCH_ERRS)?;
        if done == sent && errs == 0 {
            return Ok(());
        }
        let (first, code) = if errs > 0 {
            let e = self.read_cam(cam::BATCH_ERR)?;
            (
                cam::batch_err::POS.get(e),
                CmdErrorCode::from_code(cam::batch_err::CODE.get(e)),
            )
        } else {
            // A command that never ran was dropped while another one was running.
            (done, CmdErrorCode::Busy)
        };
        // Which profiles the card holds is no longer known either: resync forgets them.
        self.resync()?;
        Err(DriverError::BatchFailed {
            sent,
            failed: errs.saturating_add(sent.saturating_sub(done)),
            first,
            code,
        })
    }
}
