//! SA contexts on a member: key material (from `K` records or the operator, kept zeroized),
//! the SAs the member knows, which of them run in its ESP engines ([`EspPath`]: the card's
//! when the node table lends one, software otherwise), and takeover (and card replacement)
//! with an outbound sequence jump (invariant 5).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use driver::esp::Direction;
use zeroize::Zeroizing;

use super::esp::{self, EspLane, EspPath, KeyError, SaMaterial};
use super::{Member, Role, Time, To};
use crate::events::SaState;
use crate::ids::DistributionId;
use crate::node_table::NodeSpecificTable;
use crate::record::Record;

/// The SA bookkeeping.
#[derive(Default)]
pub struct SaStore {
    /// Keying material (direction, key, salt) per SPI.
    pub(super) keys: BTreeMap<u32, SaMaterial>,
    /// Every SPI this member has heard of.
    pub(super) spis: BTreeSet<u32>,
    /// The engine running the SAs of owned identifiers.
    pub(super) esp: EspPath,
}

impl std::fmt::Debug for SaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaStore")
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .field("spis", &self.spis)
            .finish_non_exhaustive()
    }
}

/// Why an SA command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaCommandError {
    /// The member does not take traffic now.
    #[error("this node is not taking traffic now (syncing, fenced or behind the agreed epoch)")]
    NotTakingTraffic,
    /// The SA's identifier waits for its previous owner's final state.
    #[error("SA {spi} does not run on this node yet: waiting for node {node}'s final state of epoch {epoch}")]
    Waiting {
        /// The SPI.
        spi: u32,
        /// The previous owner.
        node: u16,
        /// The epoch it lost the identifier in.
        epoch: u64,
    },
    /// The SA runs elsewhere (or nowhere).
    #[error("SA {spi} does not run on this node")]
    NotHere {
        /// The SPI.
        spi: u32,
        /// Its owner, if known.
        owner: Option<u16>,
    },
    /// The SA is unknown.
    #[error("no SA with spi {0}")]
    Unknown(u32),
    /// The SA runs in the engine here: its state comes from the engine.
    #[error("this SA runs in the ESP engine here; its state comes from the engine (use esp_send)")]
    InEngine,
    /// The keying material is not a key (and salt) the engine takes.
    #[error("SA 0x{spi:08x}: {error}")]
    BadKey {
        /// The SPI.
        spi: u32,
        /// What is wrong.
        error: KeyError,
    },
    /// An SA with this SPI exists.
    #[error(
        "SA 0x{0:08x} exists: an SA is never re-keyed in place (its sequence numbers would \
         start again under the new key's nonces); add a new SA with a new SPI"
    )]
    Exists(u32),
    /// The key is another SA's key.
    #[error(
        "SA 0x{spi:08x} ({dir}): its key is already the key of SA 0x{other:08x} ({other_dir}); \
         each SA (each direction of a tunnel) needs its own key and salt, or two packets are \
         sealed under one (key, nonce) pair: give SA 0x{spi:08x} a fresh key"
    )]
    KeyReused {
        /// The SPI being added.
        spi: u32,
        /// Its direction (`out` or `in`).
        dir: &'static str,
        /// The SA that has the key.
        other: u32,
        /// That SA's direction.
        other_dir: &'static str,
    },
}

impl<T: NodeSpecificTable> Member<T> {
    /// Every SPI known, with its replicated state.
    pub fn sa_states(&self) -> impl Iterator<Item = SaState> + '_ {
        self.sas.spis.iter().filter_map(|s| self.core.sa_state(*s))
    }

    /// Whether key material for `spi` is present.
    pub fn has_sa_key(&self, spi: u32) -> bool {
        self.sas.keys.contains_key(&spi)
    }

    /// The ESP engine path (counters, installed SAs).
    pub fn esp(&self) -> &EspPath {
        &self.sas.esp
    }

    /// The engine of SA `spi` for a data-path command, if it runs here and now: the ESP path
    /// with the card's engine lent, so each packet goes to whichever engine holds its SA.
    ///
    /// # Errors
    /// [`SaCommandError`] saying why not.
    pub fn esp_for(&mut self, spi: u32) -> Result<EspLane<'_>, SaCommandError> {
        if !self.ready || self.fenced || self.behind {
            return Err(SaCommandError::NotTakingTraffic);
        }
        let state = self.core.sa_state(spi);
        if let Some((r, e)) = state.and_then(|s| self.handover.waits_for(s.dist)) {
            return Err(SaCommandError::Waiting {
                spi,
                node: r.0,
                epoch: e.0,
            });
        }
        if !self.sas.esp.has(spi) {
            let owner = state
                .and_then(|s| self.core.allocation().owner(s.dist))
                .map(|n| n.0);
            return Err(SaCommandError::NotHere { spi, owner });
        }
        let card = self.core.node_table_mut().esp_engine();
        Ok(EspLane::new(&mut self.sas.esp, card))
    }

    /// A new SA from the operator: one direction of a tunnel (`dir`: `Outbound` if this
    /// cluster seals with it, `Inbound` if it opens with it), identified by its SPI, with its
    /// own keying material (`keymat`: key then salt, or a bare key, see
    /// [`SaMaterial::from_keymat`]). State in the core (replicated), the key to every
    /// replication peer inside sealed frames, the engine if this member owns it. Returns its
    /// distribution identifier (the tunnel's: both SAs of a tunnel between the same peer
    /// pair map to one identifier).
    ///
    /// # Errors
    /// [`SaCommandError::BadKey`], [`SaCommandError::Exists`] for a known SPI, and
    /// [`SaCommandError::KeyReused`] for a key another SA has (invariant 5: no (key, nonce)
    /// pair seals two packets). Nothing changes on an error.
    pub fn sa_add(
        &mut self,
        t: Time,
        peer: IpAddr,
        dst: IpAddr,
        spi: u32,
        dir: Direction,
        keymat: Zeroizing<Vec<u8>>,
    ) -> Result<DistributionId, SaCommandError> {
        let m = SaMaterial::from_keymat(spi, dir, &keymat)
            .map_err(|error| SaCommandError::BadKey { spi, error })?;
        drop(keymat);
        if self.sas.spis.contains(&spi) || self.sas.keys.contains_key(&spi) {
            return Err(SaCommandError::Exists(spi));
        }
        if let Some((other, o)) = self.sas.keys.iter().find(|(_, o)| o.same_key(&m)) {
            return Err(SaCommandError::KeyReused {
                spi,
                dir: esp::dir_name(dir),
                other: *other,
                other_dir: esp::dir_name(o.dir),
            });
        }
        let d = self.core.install_sa(t.millis(), peer, dst, spi);
        self.sas.spis.insert(spi);
        self.send(
            To::Peers,
            Record::SaKey {
                spi,
                key: m.to_record_bytes(),
            },
        );
        self.sas.keys.insert(spi, m);
        self.reconcile_esp();
        Ok(d)
    }

    /// The direction of SA `spi`, when its key is known here.
    pub fn sa_direction(&self, spi: u32) -> Option<Direction> {
        self.sas.keys.get(&spi).map(|m| m.dir)
    }

    /// Test support: moves SA `spi`'s replicated state forward (only for SAs that do not run
    /// in the engine here).
    ///
    /// # Errors
    /// [`SaCommandError::InEngine`] or [`SaCommandError::Unknown`].
    pub fn sa_advance(
        &mut self,
        spi: u32,
        outbound_seq: Option<u64>,
        replay_top: Option<u64>,
    ) -> Result<(), SaCommandError> {
        if self.sas.esp.has(spi) {
            return Err(SaCommandError::InEngine);
        }
        let s = self
            .core
            .sa_state(spi)
            .ok_or(SaCommandError::Unknown(spi))?;
        self.core.update_sa(SaState {
            outbound_seq: outbound_seq.unwrap_or(s.outbound_seq),
            replay_top: replay_top.unwrap_or(s.replay_top),
            ..s
        });
        Ok(())
    }

    pub(super) fn on_sa_key(&mut self, from: crate::ids::NodeId, spi: u32, key: &[u8]) {
        let m = match SaMaterial::from_record_bytes(key) {
            Ok(m) => m,
            Err(e) => {
                self.counters.decode_errors += 1;
                self.log(format!("SA 0x{spi:08x}: key record refused: {e}"));
                return;
            }
        };
        if let Some(cur) = self.sas.keys.get(&spi) {
            // An SA keeps its key for life (a rekey is a new SPI): a record that would change
            // it is a member gone wrong or hostile, and must not redirect what this node
            // decrypts or seals. The same key again (a resync answer) changes nothing.
            if *cur.to_record_bytes() != *m.to_record_bytes() {
                self.counters.sa_keys_refused += 1;
                if self.counters.sa_keys_refused.is_power_of_two() {
                    self.log(format!(
                        "SA 0x{spi:08x}: node {} sent another key for it: refused, the SA keeps \
                         its key (a rekey is a new SPI); {} such records so far",
                        from.0, self.counters.sa_keys_refused
                    ));
                }
            }
            return;
        }
        if let Some((other, _)) = self
            .sas
            .keys
            .iter()
            .find(|(s, o)| **s != spi && o.same_key(&m))
        {
            // the origin refuses this; two members adding SAs at once could still meet here
            self.log(format!(
                "SA 0x{spi:08x}: its key is also SA 0x{other:08x}'s: two SAs share a key (nonce \
                 reuse risk); rekey one of them"
            ));
        }
        self.sas.keys.insert(spi, m);
        self.sas.spis.insert(spi);
        self.reconcile_esp();
    }

    /// Takeover of the SAs of `ids` (invariant 5): the outbound sequence number continues past
    /// the last replicated value plus the configured jump; the replay window is the replicated
    /// one.
    pub(super) fn take_over_sas(&mut self, ids: &BTreeSet<DistributionId>) {
        let spis: Vec<u32> = self.sas.spis.iter().copied().collect();
        for spi in spis {
            if let Some(s) = self.core.sa_state(spi) {
                // an inbound SA has no outbound sequence (an SA whose key did not arrive
                // yet jumps too: harmless)
                let inbound = self.sa_direction(spi) == Some(Direction::Inbound);
                if ids.contains(&s.dist)
                    && !inbound
                    && self.core.owns(s.dist)
                    && self.core.take_over_sa(spi, self.cfg.seq_jump).is_some()
                {
                    self.counters.sa_jumps += 1;
                }
            }
        }
    }

    /// Installs the SAs of owned identifiers into the ESP engine (restored from the replicated
    /// state) and removes the others (after a last sync of their state).
    pub(super) fn reconcile_esp(&mut self) {
        let spis: Vec<u32> = self.sas.spis.iter().copied().collect();
        for spi in spis {
            let Some(s) = self.core.sa_state(spi) else {
                continue;
            };
            let owned = self.core.owns(s.dist)
                && self.cfg.role == Role::Member
                && !self.handover.is_waiting(s.dist);
            if owned && !self.sas.esp.has(spi) {
                if let Some(k) = self.sas.keys.get(&spi) {
                    let card = self.core.node_table_mut().esp_engine();
                    if let Err(e) = self.sas.esp.install_on(card, spi, k, &s) {
                        self.log(format!("SA 0x{spi:08x}: cannot install: {e}"));
                    }
                }
            } else if !owned && self.sas.esp.has(spi) {
                let card = self.core.node_table_mut().esp_engine();
                let state = self.sas.esp.state_on(card, spi, &s);
                if let Some(newer) = state.and_then(|e| esp::newer(&s, &e)) {
                    self.core.update_sa(newer);
                }
                let card = self.core.node_table_mut().esp_engine();
                self.sas.esp.remove_on(card, spi);
            }
        }
    }

    /// After the operator's lane received packets ([`Self::esp_for`]): copies the SAs' new
    /// state into the core and replicates it now rather than at the next periodic sync (up to
    /// 100 ms later), so a replay window that just moved reaches the peers before this member
    /// can be frozen or killed: a takeover then rejects what it accepted.
    pub fn esp_sync_now(&mut self) {
        self.sync_esp();
        self.flush_outbox();
    }

    /// Copies the moving state of every SA the engine runs into the core (which replicates it).
    pub(super) fn sync_esp(&mut self) {
        let spis: Vec<u32> = self.sas.esp.installed().collect();
        for spi in spis {
            let Some(s) = self.core.sa_state(spi) else {
                continue;
            };
            let card = self.core.node_table_mut().esp_engine();
            let state = self.sas.esp.state_on(card, spi, &s);
            if let Some(newer) = state.and_then(|e| esp::newer(&s, &e)) {
                self.core.update_sa(newer);
            }
        }
    }

    /// Before the card is replaced: wipes the slots of the SAs it ran (best effort: the card
    /// may have left the bus) and forgets them; returns them.
    pub(super) fn release_card_sas(&mut self) -> Vec<(u32, Direction)> {
        let card = self.core.node_table_mut().esp_engine();
        self.sas.esp.release_card(card)
    }

    /// After the card was replaced: the SAs the old card ran are installed again (on the new
    /// card when it has room) from the last replicated state, an outbound one past the
    /// configured jump, as on a takeover: the old card may have sealed packets since the last
    /// sync, so its sequence numbers are never used again (invariant 5).
    pub(super) fn reinstall_card_sas(&mut self, lost: &[(u32, Direction)]) {
        for (spi, dir) in lost {
            if *dir == Direction::Outbound
                && self.core.take_over_sa(*spi, self.cfg.seq_jump).is_some()
            {
                self.counters.sa_jumps += 1;
            }
        }
        if !lost.is_empty() {
            self.log(format!(
                "card replaced: {} SA(s) it ran installed again from the replicated state",
                lost.len()
            ));
        }
        self.reconcile_esp();
    }
}
