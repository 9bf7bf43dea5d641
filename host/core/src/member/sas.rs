//! SA contexts on a member: key material (from `K` records or the operator, kept zeroized),
//! the SAs the member knows, which of them run in its ESP engine ([`EspPath`]), and takeover
//! with an outbound sequence jump (invariant 5).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use zeroize::Zeroizing;

use super::esp::{self, EspPath};
use super::{Member, Role, Time, To};
use crate::events::SaState;
use crate::ids::DistributionId;
use crate::node_table::NodeSpecificTable;
use crate::record::Record;

/// The SA bookkeeping.
#[derive(Default)]
pub struct SaStore {
    /// Key material per SPI.
    pub(super) keys: BTreeMap<u32, Zeroizing<Vec<u8>>>,
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

    /// The engine of SA `spi` for a data-path command, if it runs here and now.
    ///
    /// # Errors
    /// [`SaCommandError`] saying why not.
    pub fn esp_for(&mut self, spi: u32) -> Result<&mut EspPath, SaCommandError> {
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
        Ok(&mut self.sas.esp)
    }

    /// A new SA from the operator: state in the core (replicated), the key to every
    /// replication peer inside sealed frames, the engine if this member owns it. Returns its
    /// distribution identifier.
    pub fn sa_add(
        &mut self,
        t: Time,
        peer: IpAddr,
        dst: IpAddr,
        spi: u32,
        key: Zeroizing<Vec<u8>>,
    ) -> DistributionId {
        let d = self.core.install_sa(t.millis(), peer, dst, spi);
        self.sas.spis.insert(spi);
        self.send(
            To::Peers,
            Record::SaKey {
                spi,
                key: key.clone(),
            },
        );
        self.sas.keys.insert(spi, key);
        self.reconcile_esp();
        d
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

    pub(super) fn on_sa_key(&mut self, spi: u32, key: Zeroizing<Vec<u8>>) {
        self.sas.keys.insert(spi, key);
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
                if ids.contains(&s.dist)
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
                    if let Err(e) = self.sas.esp.install(spi, k, &s) {
                        self.log(format!("SA 0x{spi:08x}: cannot install: {e}"));
                    }
                }
            } else if !owned && self.sas.esp.has(spi) {
                if let Some(newer) = self.sas.esp.state(spi, &s).and_then(|e| esp::newer(&s, &e)) {
                    self.core.update_sa(newer);
                }
                self.sas.esp.remove(spi);
            }
        }
    }

    /// Copies the moving state of every SA the engine runs into the core (which replicates it).
    pub(super) fn sync_esp(&mut self) {
        let spis: Vec<u32> = self.sas.esp.installed().collect();
        for spi in spis {
            let Some(s) = self.core.sa_state(spi) else {
                continue;
            };
            if let Some(newer) = self.sas.esp.state(spi, &s).and_then(|e| esp::newer(&s, &e)) {
                self.core.update_sa(newer);
            }
        }
    }
}
