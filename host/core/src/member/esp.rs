//! The member's ESP data path: the driver's ESP engine ([`SoftwareEsp`], the same trait the card's
//! crypto engine implements) holding the SAs of the identifiers this node owns, their moving
//! state synced into the state core (and so replicated) periodically, and restored on takeover:
//! the outbound sequence number continues past the last synced value plus a safety jump, the
//! inbound replay window is the last synced one (invariant 5).
//!
//! Key material arrives in `K` records (only ever inside sealed sync frames), is kept zeroized
//! and goes into the engine, never back out.

use std::collections::{BTreeMap, BTreeSet};

use driver::esp::{
    Direction, EspEngine, EspError, EspRequest, ReplayWindow, SaConfig, SaKey,
    SaState as EngineState, SoftwareEsp, Spi,
};
use zeroize::Zeroizing;

use crate::events::SaState;

/// The salt of an SA's GCM nonce, derived from its SPI (keys are per SA, so salts need not be
/// secret; both ends derive the same one).
pub fn salt(spi: u32) -> [u8; 4] {
    (spi ^ 0x5a5a_5a5a).to_be_bytes()
}

/// Outcome counters of inbound processing.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct EspCounters {
    /// Outbound packets sealed.
    pub sealed: u64,
    /// Inbound packets accepted.
    pub accepted: u64,
    /// Inbound packets dropped as replays.
    pub replays: u64,
    /// Inbound packets that failed authentication or parsing.
    pub bad: u64,
}

/// The ESP SAs this node runs.
pub struct EspPath {
    engine: SoftwareEsp,
    installed: BTreeSet<u32>,
    /// Counters.
    pub counters: EspCounters,
}

impl Default for EspPath {
    fn default() -> Self {
        Self::new()
    }
}

impl EspPath {
    /// An empty path (room for 4096 SAs per direction).
    pub fn new() -> Self {
        Self {
            engine: SoftwareEsp::new(8192),
            installed: BTreeSet::new(),
            counters: EspCounters::default(),
        }
    }

    /// Whether SA `spi` is installed here.
    pub fn has(&self, spi: u32) -> bool {
        self.installed.contains(&spi)
    }

    /// The installed SPIs.
    pub fn installed(&self) -> impl Iterator<Item = u32> + '_ {
        self.installed.iter().copied()
    }

    /// Installs both directions of SA `spi` with `key`, restored to the replicated `state`:
    /// outbound continues at `state.outbound_seq`, inbound with the replicated window.
    ///
    /// # Errors
    /// The engine's refusal (bad key length, full table).
    pub fn install(&mut self, spi: u32, key: &[u8], state: &SaState) -> Result<(), EspError> {
        if self.installed.contains(&spi) {
            return Ok(());
        }
        for dir in [Direction::Outbound, Direction::Inbound] {
            let k = SaKey::new(key, salt(spi))?;
            self.engine.install_sa(&SaConfig::gcm(Spi(spi), dir, k))?;
        }
        let out = EngineState {
            seq: state.outbound_seq.saturating_sub(1),
            ..Default::default()
        };
        self.engine
            .set_sa_state(Direction::Outbound, Spi(spi), &out)?;
        let inb = EngineState {
            window: ReplayWindow {
                top: state.replay_top,
                bitmap: state.replay_bitmap,
            },
            ..Default::default()
        };
        self.engine
            .set_sa_state(Direction::Inbound, Spi(spi), &inb)?;
        self.installed.insert(spi);
        Ok(())
    }

    /// Removes SA `spi` (both directions; the engine wipes the keys).
    pub fn remove(&mut self, spi: u32) {
        if self.installed.remove(&spi) {
            let _ = self.engine.remove_sa(Direction::Outbound, Spi(spi));
            let _ = self.engine.remove_sa(Direction::Inbound, Spi(spi));
        }
    }

    /// The moving state of SA `spi` in the core's terms (`outbound_seq` = next to send).
    pub fn state(&mut self, spi: u32, dist_template: &SaState) -> Option<SaState> {
        let out = self.engine.sa_state(Direction::Outbound, Spi(spi)).ok()?;
        let inb = self.engine.sa_state(Direction::Inbound, Spi(spi)).ok()?;
        Some(SaState {
            outbound_seq: out.seq + 1,
            replay_top: inb.window.top,
            replay_bitmap: inb.window.bitmap,
            ..*dist_template
        })
    }

    /// Seals `count` packets of `payload` under outbound SA `spi`; returns the sequence numbers
    /// used (first, last) and the packets.
    ///
    /// # Errors
    /// The engine's error (unknown SPI, sequence exhausted).
    pub fn send(
        &mut self,
        spi: u32,
        count: u32,
        payload: &[u8],
    ) -> Result<(u64, u64, Vec<Vec<u8>>), EspError> {
        let mut first = 0;
        let mut last = 0;
        let mut pkts = Vec::new();
        for i in 0..count {
            let (o, pkt) = self.engine.process(EspRequest::Encapsulate {
                spi: Spi(spi),
                next_header: 4,
                payload,
            })?;
            if i == 0 {
                first = o.seq;
            }
            last = o.seq;
            self.counters.sealed += 1;
            pkts.push(pkt);
        }
        Ok((first, last, pkts))
    }

    /// Opens inbound ESP packets; returns (accepted, replays, bad).
    pub fn receive(&mut self, packets: &[Vec<u8>]) -> (u64, u64, u64) {
        let (mut ok, mut replay, mut bad) = (0, 0, 0);
        for p in packets {
            match self.engine.process(EspRequest::Decapsulate { packet: p }) {
                Ok(_) => ok += 1,
                Err(EspError::Replay { .. }) => replay += 1,
                Err(_) => bad += 1,
            }
        }
        self.counters.accepted += ok;
        self.counters.replays += replay;
        self.counters.bad += bad;
        (ok, replay, bad)
    }
}

/// The state to replicate when the engine's state `engine` is ahead of the replicated `core`
/// state in either direction; `None` when it is not (never move a sequence number back: a node
/// that ran an SA with an older state, e.g. on the minority side of a partition, must not
/// overwrite what the owner since replicated).
pub fn newer(core: &SaState, engine: &SaState) -> Option<SaState> {
    let out_ahead = engine.outbound_seq > core.outbound_seq;
    let in_ahead = engine.replay_top > core.replay_top
        || (engine.replay_top == core.replay_top
            && engine.replay_bitmap & !core.replay_bitmap != 0);
    if !out_ahead && !in_ahead {
        return None;
    }
    let mut s = *core;
    s.outbound_seq = core.outbound_seq.max(engine.outbound_seq);
    if engine.replay_top > core.replay_top {
        s.replay_top = engine.replay_top;
        s.replay_bitmap = engine.replay_bitmap;
    } else if engine.replay_top == core.replay_top {
        s.replay_bitmap = core.replay_bitmap | engine.replay_bitmap;
    }
    Some(s)
}

/// Key material per SPI, zeroized on drop.
pub type SaKeys = BTreeMap<u32, Zeroizing<Vec<u8>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DistributionId;
    use std::net::{IpAddr, Ipv4Addr};

    fn st(out: u64, top: u64, bitmap: u64) -> SaState {
        SaState {
            spi: 7,
            dist: DistributionId(1),
            dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
            outbound_seq: out,
            replay_top: top,
            replay_bitmap: bitmap,
        }
    }

    #[test]
    fn takeover_continues_outbound_and_keeps_replay_window() {
        let key = [9u8; 32];
        let mut peer = EspPath::new();
        peer.install(7, &key, &st(1, 0, 0)).unwrap();
        let mut a = EspPath::new();
        a.install(7, &key, &st(1, 0, 0)).unwrap();
        let (f, l, _) = a.send(7, 10, b"x").unwrap();
        assert_eq!((f, l), (1, 10));
        let (_, _, pkts) = peer.send(7, 5, b"y").unwrap();
        assert_eq!(a.receive(&pkts), (5, 0, 0));
        let synced = a.state(7, &st(0, 0, 0)).unwrap();
        assert_eq!(synced.outbound_seq, 11);
        assert_eq!(synced.replay_top, 5);
        // node b takes over with a jump of 1000
        let mut b = EspPath::new();
        let taken = SaState {
            outbound_seq: synced.outbound_seq + 1000,
            ..synced
        };
        b.install(7, &key, &taken).unwrap();
        let (f, _, _) = b.send(7, 1, b"z").unwrap();
        assert_eq!(f, 1011);
        // a replay of an inbound packet a accepted is refused by b; new ones pass
        assert_eq!(b.receive(&pkts[4..]), (0, 1, 0));
        let (_, _, more) = peer.send(7, 2, b"w").unwrap();
        assert_eq!(b.receive(&more), (2, 0, 0));
        // an engine behind the replicated state never moves it back
        assert_eq!(newer(&st(100, 50, 1), &st(90, 40, 1)), None);
        assert_eq!(
            newer(&st(100, 50, 1), &st(120, 40, 1))
                .unwrap()
                .outbound_seq,
            120
        );
        assert_eq!(
            newer(&st(100, 50, 1), &st(120, 40, 1)).unwrap().replay_top,
            50
        );
        assert_eq!(
            newer(&st(100, 50, 1), &st(90, 50, 2))
                .unwrap()
                .replay_bitmap,
            3
        );
    }
}
