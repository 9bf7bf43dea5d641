//! The member's ESP data path: the driver's ESP engines holding the SAs of the identifiers this
//! node owns — the node card's ESP engine when its table offers one and the card has room,
//! [`SoftwareEsp`] (the same trait) otherwise — their moving
//! state synced into the state core (and so replicated) periodically, and restored on takeover:
//! the outbound sequence number continues past the last synced value plus a safety jump, the
//! inbound replay window is the last synced one (invariant 5).
//!
//! An SA is one direction, identified by its SPI, as in IPsec: a tunnel is an outbound SA (the
//! cluster seals with it) and an inbound SA (the cluster opens with it), each with its own
//! SPI, key and salt ([`SaMaterial`]). One key never serves two SAs, so no (key, nonce) pair
//! seals two packets (invariant 5); [`Member::sa_add`](super::Member::sa_add) refuses a key
//! that another SA has.
//!
//! Where an SA runs: [`EspPath`] installs each SA on the card engine the node-specific table
//! lends ([`NodeSpecificTable::esp_engine`](crate::node_table::NodeSpecificTable::esp_engine),
//! a [`CardEngine`] argument of the `*_on` methods) when there is one and it takes the SA, and on
//! its own [`SoftwareEsp`] otherwise, and remembers which ([`Placement`]): packets, state reads
//! and removal go to that engine. The card engine writes no CAM entry (the table owns the CAM).
//! When the card is replaced after a failure, [`EspPath::release_card`] forgets the SAs it ran
//! and the member installs them again from the replicated state, an outbound SA past the
//! sequence jump (the old card may have sealed packets after the last sync).
//!
//! Key material arrives in `K` records (only ever inside sealed sync frames), is kept zeroized
//! and goes into the engine, never back out. A `K` record's key bytes are
//! [`SaMaterial::to_record_bytes`]: `dir:u8 (0 out, 1 in) | key (16 or 32) | salt (4)`.

use std::collections::BTreeMap;

use driver::esp::{
    Direction, EspEngine, EspError, EspHeader, EspRequest, ReplayWindow, SaConfig, SaKey,
    SaState as EngineState, SoftwareEsp, Spi,
};
use zeroize::Zeroizing;

use crate::events::SaState;

/// The salt of an SA's GCM nonce when the operator gives a bare key (16 or 32 bytes) without
/// one: derived from its SPI (both ends derive the same; salts need not be secret, and SPIs
/// differ between the SAs of a tunnel, so the two directions' salts differ too).
pub fn salt(spi: u32) -> [u8; 4] {
    (spi ^ 0x5a5a_5a5a).to_be_bytes()
}

/// The direction's name on the control socket and in messages: `out` or `in`.
pub fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Outbound => "out",
        Direction::Inbound => "in",
    }
}

/// One SA's keying material: which way the cluster uses the SA, its AES key and its salt.
/// The key wipes itself on drop; `Debug` shows no byte of it.
#[derive(Clone, Debug)]
pub struct SaMaterial {
    /// `Outbound`: the cluster seals with this SA; `Inbound`: it opens with it.
    pub dir: Direction,
    /// AES key and RFC 4106 salt.
    pub key: SaKey,
}

/// Why keying material was refused (never carries key bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 16, 20, 32 or 36 bytes.
    #[error(
        "SA key: {0} bytes; give 32 bytes of AES-256 key and 4 of salt (72 hex digits, RFC 4106 \
         keying material), or 16+4 for AES-128 (40 digits); a bare key of 32 or 16 bytes gets \
         a salt derived from the SPI"
    )]
    Length(usize),
    /// A `K` record's bytes are not `dir | key | salt`.
    #[error("SA key record: not dir (0 or 1), a 16 or 32 byte key and a 4 byte salt")]
    Record,
}

impl SaMaterial {
    /// The material of SA `spi` from the operator's keying material: key then salt (RFC 4106:
    /// 36 bytes for AES-256, 20 for AES-128), or a bare key (32 or 16 bytes) whose salt is
    /// [`salt`]`(spi)`.
    ///
    /// # Errors
    /// [`KeyError::Length`].
    pub fn from_keymat(spi: u32, dir: Direction, keymat: &[u8]) -> Result<Self, KeyError> {
        let (key, s) = match keymat.len() {
            16 | 32 => (keymat, salt(spi)),
            20 | 36 => {
                let (k, s) = keymat.split_at(keymat.len() - 4);
                let mut salt = [0u8; 4];
                salt.copy_from_slice(s);
                (k, salt)
            }
            n => return Err(KeyError::Length(n)),
        };
        let key = SaKey::new(key, s).map_err(|_| KeyError::Length(keymat.len()))?;
        Ok(Self { dir, key })
    }

    /// The same SA seen from the tunnel's other end (the direction flipped): what a test's or
    /// the demo's simulated tunnel peer installs.
    #[must_use]
    pub fn mirrored(&self) -> Self {
        Self {
            dir: match self.dir {
                Direction::Outbound => Direction::Inbound,
                Direction::Inbound => Direction::Outbound,
            },
            key: self.key.clone(),
        }
    }

    /// Whether `other` has the same AES key (whatever its salt): two SAs never share a key.
    pub fn same_key(&self, other: &Self) -> bool {
        self.key.key_bytes() == other.key.key_bytes()
    }

    /// The bytes a `K` record carries: `dir | key | salt`, in a zeroizing buffer.
    pub fn to_record_bytes(&self) -> Zeroizing<Vec<u8>> {
        let k = self.key.key_bytes();
        let mut out = Zeroizing::new(Vec::with_capacity(1 + k.len() + 4));
        out.push(match self.dir {
            Direction::Outbound => 0,
            Direction::Inbound => 1,
        });
        out.extend_from_slice(k);
        out.extend_from_slice(&self.key.salt());
        out
    }

    /// Reads [`SaMaterial::to_record_bytes`].
    ///
    /// # Errors
    /// [`KeyError::Record`].
    pub fn from_record_bytes(b: &[u8]) -> Result<Self, KeyError> {
        let (&d, rest) = b.split_first().ok_or(KeyError::Record)?;
        let dir = match d {
            0 => Direction::Outbound,
            1 => Direction::Inbound,
            _ => return Err(KeyError::Record),
        };
        if rest.len() != 20 && rest.len() != 36 {
            return Err(KeyError::Record);
        }
        Self::from_keymat(0, dir, rest).map_err(|_| KeyError::Record)
    }
}

/// Outcome counters of the ESP path.
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
    /// Packets (either direction, whatever the verdict) handed to the card's ESP engine.
    pub on_card: u64,
    /// Packets (either direction, whatever the verdict) handed to the software engine.
    pub in_software: u64,
    /// SAs that went to the software engine although the node's card has an ESP engine (no
    /// free slot, or the card refused or failed the install).
    pub card_fallbacks: u64,
}

/// Where an SA runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// In a slot of the node's card (its SA table and ESP engine).
    Card,
    /// In the path's own [`SoftwareEsp`].
    Software,
}

/// The card's ESP engine, when the node's table offers one
/// ([`NodeSpecificTable::esp_engine`](crate::node_table::NodeSpecificTable::esp_engine)).
pub type CardEngine<'a> = Option<&'a mut dyn EspEngine>;

/// What one send sealed: the sequence numbers used (first, last) and the packets.
pub type Sealed = (u64, u64, Vec<Vec<u8>>);

/// The ESP SAs this node runs: each on the node's card when the card has an ESP engine with a
/// free slot (and takes the SA), else on the path's own [`SoftwareEsp`] (the fallback). The
/// path remembers where each SA lives; the card engine is lent to each call (`card`), since
/// the card belongs to the node-specific table. The `*_on` methods take it; the others are the
/// software-only shorthand (a simulated tunnel peer, tests).
pub struct EspPath {
    engine: SoftwareEsp,
    /// The installed SAs: direction and placement.
    installed: BTreeMap<u32, (Direction, Placement)>,
    /// Counters.
    pub counters: EspCounters,
}

impl Default for EspPath {
    fn default() -> Self {
        Self::new()
    }
}

/// Reborrows a lent card engine for one call.
fn lend<'b>(card: &'b mut CardEngine<'_>) -> CardEngine<'b> {
    match card {
        Some(c) => Some(&mut **c),
        None => None,
    }
}

/// The engine of an SA at `place`; `None` for a card SA without a card lent.
fn pick<'e>(
    soft: &'e mut SoftwareEsp,
    card: &'e mut CardEngine<'_>,
    place: Placement,
) -> Option<&'e mut dyn EspEngine> {
    match place {
        Placement::Software => Some(soft),
        Placement::Card => match card {
            Some(c) => Some(&mut **c),
            None => None,
        },
    }
}

const NO_CARD: EspError = EspError::Backend {
    what: "the SA lives on the node's card, which is not available",
};

impl EspPath {
    /// An empty path (room for 8192 SAs in software).
    pub fn new() -> Self {
        Self {
            engine: SoftwareEsp::new(8192),
            installed: BTreeMap::new(),
            counters: EspCounters::default(),
        }
    }

    /// Whether SA `spi` is installed here.
    pub fn has(&self, spi: u32) -> bool {
        self.installed.contains_key(&spi)
    }

    /// The installed SPIs.
    pub fn installed(&self) -> impl Iterator<Item = u32> + '_ {
        self.installed.keys().copied()
    }

    /// Where SA `spi` runs, if it is installed.
    pub fn placement(&self, spi: u32) -> Option<Placement> {
        self.installed.get(&spi).map(|(_, p)| *p)
    }

    /// How many installed SAs run on the card.
    pub fn on_card(&self) -> usize {
        self.installed
            .values()
            .filter(|(_, p)| *p == Placement::Card)
            .count()
    }

    /// [`EspPath::install_on`] in software.
    ///
    /// # Errors
    /// As there.
    pub fn install(&mut self, spi: u32, m: &SaMaterial, state: &SaState) -> Result<(), EspError> {
        self.install_on(None, spi, m, state)
    }

    /// Installs SA `spi` in its direction with its own key and salt, restored to the
    /// replicated `state`: an outbound SA continues at `state.outbound_seq`, an inbound one
    /// with the replicated window. On `card` when it is given and takes the SA (a free slot, a
    /// cipher it runs, a working card), else in software. Installing an installed SA does
    /// nothing.
    ///
    /// # Errors
    /// The software engine's refusal (full table).
    pub fn install_on(
        &mut self,
        card: CardEngine<'_>,
        spi: u32,
        m: &SaMaterial,
        state: &SaState,
    ) -> Result<(), EspError> {
        if self.installed.contains_key(&spi) {
            return Ok(());
        }
        let cfg = SaConfig::gcm(Spi(spi), m.dir, m.key.clone());
        let st = match m.dir {
            Direction::Outbound => EngineState {
                seq: state.outbound_seq.saturating_sub(1),
                ..Default::default()
            },
            Direction::Inbound => EngineState {
                window: ReplayWindow {
                    top: state.replay_top,
                    bitmap: state.replay_bitmap,
                },
                ..Default::default()
            },
        };
        if let Some(c) = card {
            if install_restored(c, &cfg, &st).is_ok() {
                self.installed.insert(spi, (m.dir, Placement::Card));
                return Ok(());
            }
            self.counters.card_fallbacks += 1;
        }
        install_restored(&mut self.engine, &cfg, &st)?;
        self.installed.insert(spi, (m.dir, Placement::Software));
        Ok(())
    }

    /// [`EspPath::remove_on`] in software.
    pub fn remove(&mut self, spi: u32) {
        self.remove_on(None, spi);
    }

    /// Removes SA `spi`: its engine wipes its key (a card SA's slot is invalidated and wiped;
    /// without the card lent it is only forgotten).
    pub fn remove_on(&mut self, mut card: CardEngine<'_>, spi: u32) {
        if let Some((dir, place)) = self.installed.remove(&spi) {
            if let Some(e) = pick(&mut self.engine, &mut card, place) {
                let _ = e.remove_sa(dir, Spi(spi));
            }
        }
    }

    /// Forgets every SA that runs on the card, after a best-effort wipe of its slot on `card`
    /// (the card being replaced; a card that left the bus is not asked twice). Returns the
    /// SAs forgotten: they must be installed again from the replicated state.
    pub fn release_card(&mut self, mut card: CardEngine<'_>) -> Vec<(u32, Direction)> {
        let on_card: Vec<(u32, Direction)> = self
            .installed
            .iter()
            .filter(|(_, (_, p))| *p == Placement::Card)
            .map(|(s, (d, _))| (*s, *d))
            .collect();
        let mut gone = false;
        for (spi, dir) in &on_card {
            self.installed.remove(spi);
            if let (Some(c), false) = (card.as_deref_mut(), gone) {
                if let Err(EspError::DeviceGone { .. }) = c.remove_sa(*dir, Spi(*spi)) {
                    gone = true;
                }
            }
        }
        on_card
    }

    /// [`EspPath::state_on`] in software.
    pub fn state(&mut self, spi: u32, template: &SaState) -> Option<SaState> {
        self.state_on(None, spi, template)
    }

    /// The moving state of SA `spi` in the core's terms (`outbound_seq` = next to send for an
    /// outbound SA, the replay window for an inbound one; the other direction's fields are
    /// `template`'s), read from wherever the SA runs (never its key). `None` when it is not
    /// installed or its engine cannot be read.
    pub fn state_on(
        &mut self,
        mut card: CardEngine<'_>,
        spi: u32,
        template: &SaState,
    ) -> Option<SaState> {
        let (dir, place) = *self.installed.get(&spi)?;
        let e = pick(&mut self.engine, &mut card, place)?
            .sa_state(dir, Spi(spi))
            .ok()?;
        Some(match dir {
            Direction::Outbound => SaState {
                outbound_seq: e.seq + 1,
                ..*template
            },
            Direction::Inbound => SaState {
                replay_top: e.window.top,
                replay_bitmap: e.window.bitmap,
                ..*template
            },
        })
    }

    /// [`EspPath::send_on`] in software.
    ///
    /// # Errors
    /// As there.
    pub fn send(&mut self, spi: u32, count: u32, payload: &[u8]) -> Result<Sealed, EspError> {
        self.send_on(None, spi, count, payload)
    }

    /// Seals `count` packets of `payload` under outbound SA `spi`, on the engine that holds
    /// it; returns the sequence numbers used (first, last) and the packets.
    ///
    /// # Errors
    /// The engine's error (unknown SPI, sequence exhausted, the card failed).
    pub fn send_on(
        &mut self,
        mut card: CardEngine<'_>,
        spi: u32,
        count: u32,
        payload: &[u8],
    ) -> Result<Sealed, EspError> {
        let place = match self.installed.get(&spi) {
            Some((Direction::Outbound, p)) => *p,
            _ => {
                return Err(EspError::UnknownSpi {
                    spi,
                    direction: Direction::Outbound,
                })
            }
        };
        let engine = pick(&mut self.engine, &mut card, place).ok_or(NO_CARD)?;
        let mut first = 0;
        let mut last = 0;
        let mut pkts = Vec::new();
        for i in 0..count {
            match place {
                Placement::Card => self.counters.on_card += 1,
                Placement::Software => self.counters.in_software += 1,
            }
            let (o, pkt) = engine.process(EspRequest::Encapsulate {
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

    /// [`EspPath::receive_on`] in software.
    pub fn receive(&mut self, packets: &[Vec<u8>]) -> (u64, u64, u64) {
        self.receive_on(None, packets)
    }

    /// Opens inbound ESP packets, each on the engine that holds its SA; returns (accepted,
    /// replays, bad). A packet of an SA not installed here is bad.
    pub fn receive_on(&mut self, mut card: CardEngine<'_>, packets: &[Vec<u8>]) -> (u64, u64, u64) {
        let (mut ok, mut replay, mut bad) = (0, 0, 0);
        for p in packets {
            let place = EspHeader::new_checked(p.as_slice()).ok().and_then(|h| {
                match self.installed.get(&h.spi().0) {
                    Some((Direction::Inbound, place)) => Some(*place),
                    _ => None,
                }
            });
            let Some(place) = place else {
                bad += 1;
                continue;
            };
            let Some(engine) = pick(&mut self.engine, &mut card, place) else {
                bad += 1;
                continue;
            };
            match place {
                Placement::Card => self.counters.on_card += 1,
                Placement::Software => self.counters.in_software += 1,
            }
            match engine.process(EspRequest::Decapsulate { packet: p }) {
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

/// Installs `cfg` on `e` and restores its moving state; on a failure nothing stays installed.
fn install_restored(
    e: &mut dyn EspEngine,
    cfg: &SaConfig,
    st: &EngineState,
) -> Result<(), EspError> {
    e.install_sa(cfg)?;
    if let Err(err) = e.set_sa_state(cfg.direction, cfg.spi, st) {
        let _ = e.remove_sa(cfg.direction, cfg.spi);
        return Err(err);
    }
    Ok(())
}

/// An SA's engine for data-path commands: the node's [`EspPath`] with the card engine lent
/// (see [`Member::esp_for`](super::Member::esp_for)).
pub struct EspLane<'a> {
    path: &'a mut EspPath,
    card: CardEngine<'a>,
}

impl<'a> EspLane<'a> {
    /// The path with the card engine lent.
    pub fn new(path: &'a mut EspPath, card: CardEngine<'a>) -> Self {
        Self { path, card }
    }

    /// [`EspPath::send_on`].
    ///
    /// # Errors
    /// As there.
    pub fn send(&mut self, spi: u32, count: u32, payload: &[u8]) -> Result<Sealed, EspError> {
        self.path.send_on(lend(&mut self.card), spi, count, payload)
    }

    /// [`EspPath::receive_on`].
    pub fn receive(&mut self, packets: &[Vec<u8>]) -> (u64, u64, u64) {
        self.path.receive_on(lend(&mut self.card), packets)
    }

    /// Where SA `spi` runs.
    pub fn placement(&self, spi: u32) -> Option<Placement> {
        self.path.placement(spi)
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

/// Keying material per SPI, zeroized on drop.
pub type SaKeys = BTreeMap<u32, SaMaterial>;

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

    fn mat(dir: Direction, byte: u8) -> SaMaterial {
        SaMaterial::from_keymat(0, dir, &[byte; 36]).unwrap()
    }

    #[test]
    fn takeover_continues_outbound_and_keeps_replay_window() {
        // the tunnel: SA 7 outbound (the cluster seals), SA 8 inbound (the peer seals)
        let out = mat(Direction::Outbound, 9);
        let inb = mat(Direction::Inbound, 10);
        let mut peer = EspPath::new();
        peer.install(7, &out.mirrored(), &st(1, 0, 0)).unwrap();
        peer.install(8, &inb.mirrored(), &st(1, 0, 0)).unwrap();
        let mut a = EspPath::new();
        a.install(7, &out, &st(1, 0, 0)).unwrap();
        a.install(8, &inb, &st(1, 0, 0)).unwrap();
        let (f, l, sealed) = a.send(7, 10, b"x").unwrap();
        assert_eq!((f, l), (1, 10));
        assert_eq!(
            peer.receive(&sealed),
            (10, 0, 0),
            "the peer opens what a sealed"
        );
        assert!(a.send(8, 1, b"x").is_err(), "an inbound SA never seals");
        let (_, _, pkts) = peer.send(8, 5, b"y").unwrap();
        assert_eq!(a.receive(&pkts), (5, 0, 0));
        let synced_out = a.state(7, &st(0, 0, 0)).unwrap();
        let synced_in = a.state(8, &st(0, 0, 0)).unwrap();
        assert_eq!(synced_out.outbound_seq, 11);
        assert_eq!(synced_in.replay_top, 5);
        // node b takes over with a jump of 1000
        let mut b = EspPath::new();
        let taken = SaState {
            outbound_seq: synced_out.outbound_seq + 1000,
            ..synced_out
        };
        b.install(7, &out, &taken).unwrap();
        b.install(8, &inb, &synced_in).unwrap();
        let (f, _, _) = b.send(7, 1, b"z").unwrap();
        assert_eq!(f, 1011);
        // a replay of an inbound packet a accepted is refused by b; new ones pass
        assert_eq!(b.receive(&pkts[4..]), (0, 1, 0));
        let (_, _, more) = peer.send(8, 2, b"w").unwrap();
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

    #[test]
    fn keying_material_lengths_salts_and_record_bytes() {
        // a bare key gets the SPI's salt; key + salt keeps its own
        let bare = SaMaterial::from_keymat(0x1234, Direction::Outbound, &[1; 32]).unwrap();
        assert_eq!(bare.key.salt(), salt(0x1234));
        let mut km = vec![2u8; 16];
        km.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let full = SaMaterial::from_keymat(0x1234, Direction::Inbound, &km).unwrap();
        assert_eq!(
            (full.key.bits(), full.key.salt()),
            (128, [0xde, 0xad, 0xbe, 0xef])
        );
        for n in [0, 1, 15, 17, 24, 31, 33, 35, 37, 64] {
            let e = SaMaterial::from_keymat(1, Direction::Inbound, &vec![0; n]).unwrap_err();
            assert_eq!(e, KeyError::Length(n));
            assert!(e.to_string().contains("72 hex digits"), "{e}");
        }
        // the record bytes round-trip, direction and salt included
        for m in [&bare, &full] {
            let b = m.to_record_bytes();
            let back = SaMaterial::from_record_bytes(&b).unwrap();
            assert_eq!(back.dir, m.dir);
            assert!(back.same_key(m));
            assert_eq!(back.key.salt(), m.key.salt());
        }
        assert!(!format!("{bare:?}").contains("1, 1"), "Debug shows no key");
        // a bare key is not a record; bad direction bytes, lengths
        for bad in [vec![], vec![0; 32], vec![2; 37], vec![0; 36], vec![1; 38]] {
            assert_eq!(
                SaMaterial::from_record_bytes(&bad).unwrap_err(),
                KeyError::Record
            );
        }
        assert!(bare.same_key(&bare.mirrored()) && !bare.same_key(&full));
        assert_eq!(bare.mirrored().dir, Direction::Inbound);
    }
}
