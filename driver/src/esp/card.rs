//! [`EspEngine`] over the card: SA contexts in the SA table block, packets
//! through the ESP engine block's buffer, inbound SPI lookup through the CAM.
//!
//! Register protocol (`hdl/CARD.md`): stage the data registers, write `CMD`,
//! poll `STATUS` until `BUSY` clears, read `ERR`. Key and salt go only into
//! the write-only staging registers (which the card clears after `WRITE`);
//! nothing here ever reads key material back, and nothing could.
//!
//! Two shapes: [`CardEsp`] owns its card; [`CardEspRef`] is the same engine
//! on a card someone else owns (the state core's node-specific table), built
//! from the card and the engine's card-less state ([`CardEspState`]).
//!
//! With [`SaLookup::OwnCamEntries`] (what [`CardEsp`] uses) an inbound SA
//! gets a CAM entry keyed by SPI and destination ([`Flow::Esp`]) whose result
//! word names its slot ([`Action::Decrypt`]); decapsulation searches the CAM
//! for the packet's SPI and uses the slot the card returns. With
//! [`SaLookup::SlotOnly`] the engine never issues a CAM command: the owner of
//! the CAM keeps its entries, and decapsulation uses the SA's slot directly.
//! Outbound SAs are named by SPI in the request and need no CAM entry.

use std::collections::HashMap;
use std::net::IpAddr;

use hal::regs::{esp, sa, Reg};
use hal::{BarOffset, RegIo};
use zeroize::Zeroize;

use super::sa::{Cipher, Direction, Mode, SaConfig, SaCounters, SaState, Spi};
use super::{
    new_sa_key, EspEngine, EspError, EspHeader, EspOutcome, EspRequest, EspTarget, ForwardEsp,
    ReplayWindow, SaSlot,
};
use crate::card::{CamEntry, Card};
use crate::key::{Action, CamKey, Flow, IpPrefix, ResultFlags, ResultWord};
use crate::types::CamIndex;

/// How many `STATUS` polls a command may take before the card counts as hung
/// (an ENCAP/DECAP of a full buffer takes a few thousand clocks; every poll
/// is at least one bus transaction).
const POLL_LIMIT: u32 = 1_000_000;

/// What the driver remembers about an installed SA (never the key).
#[derive(Clone, Copy, Debug)]
struct Installed {
    slot: u16,
    cam: Option<CamIndex>,
    key: CamKey,
}

/// Whether the engine keeps its own CAM entries for inbound SAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaLookup {
    /// Each inbound SA gets a CAM entry (its SPI and destination, [`Action::Decrypt`], its
    /// slot) inserted and removed through the card; decapsulation finds the slot by searching
    /// the CAM. Only for a card whose CAM nobody else manages ([`CardEsp`], `hwctl esp`).
    OwnCamEntries,
    /// No CAM command at all: decapsulation uses the slot the engine installed the SA in.
    /// For a card whose CAM another table manages (the node-specific table of the state
    /// core keeps a shadow index of every CAM entry; an entry inserted behind its back would
    /// corrupt it). The SA's CAM entry, if the card's data path should hit it, is then that
    /// table's business.
    SlotOnly,
}

/// The card's ESP engine state without the card: the geometry read from the blocks'
/// capability registers, the slot allocation and what is installed where (never a key).
/// Kept by whoever owns the card; [`CardEspState::view`] lends it the card for one or more
/// engine operations ([`CardEspRef`]).
pub struct CardEspState {
    sa_base: u32,
    esp_base: u32,
    slots: u32,
    buf_bytes: u32,
    lookup: SaLookup,
    installed: HashMap<(Direction, Spi), Installed>,
    free: Vec<u16>,
    /// Scratch for packet words (reused, so the data path does not allocate).
    words: Vec<u32>,
}

impl std::fmt::Debug for CardEspState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardEspState")
            .field("slots", &self.slots)
            .field("installed", &self.installed.len())
            .field("buf_bytes", &self.buf_bytes)
            .field("lookup", &self.lookup)
            .finish_non_exhaustive()
    }
}

/// The card's ESP engine behind [`EspEngine`], on a card someone else owns: the card borrowed
/// with the engine's state ([`CardEspState::view`]). Cheap to build; build one per operation
/// or batch.
pub struct CardEspRef<'a, R: RegIo> {
    card: &'a mut Card<R>,
    state: &'a mut CardEspState,
}

impl<R: RegIo> std::fmt::Debug for CardEspRef<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.state.fmt(f)
    }
}

/// The card's ESP engine behind [`EspEngine`], owning its card (inbound SAs get their own CAM
/// entries: [`SaLookup::OwnCamEntries`]).
///
/// # Examples
///
/// Both SAs of one tunnel on the card: what the outbound SA seals, the inbound one opens, once.
///
/// ```
/// use driver::esp::{CardEsp, Direction, EspEngine, EspError, EspRequest, SaConfig, SaKey, Spi};
/// use driver::Card;
///
/// let mut esp = CardEsp::new(Card::probe(sim_bridge::model::ModelCard::new())?)?;
/// for dir in [Direction::Outbound, Direction::Inbound] {
///     esp.install_sa(&SaConfig::gcm(Spi(0x2000), dir, SaKey::new(&[9; 16], [0; 4])?))?;
/// }
/// let (out, packet) = esp.process(EspRequest::Encapsulate {
///     spi: Spi(0x2000),
///     next_header: 4,
///     payload: b"inner",
/// })?;
/// assert_eq!(out.seq, 1);
/// let (_, inner) = esp.process(EspRequest::Decapsulate { packet: &packet })?;
/// assert_eq!(inner, b"inner");
/// // the same packet again is a replay
/// let again = esp.process(EspRequest::Decapsulate { packet: &packet });
/// assert!(matches!(again, Err(EspError::Replay { seq: 1, .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CardEsp<R: RegIo> {
    card: Card<R>,
    state: CardEspState,
}

impl<R: RegIo> std::fmt::Debug for CardEsp<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardEsp")
            .field("slots", &self.state.slots)
            .field("installed", &self.state.installed.len())
            .field("buf_bytes", &self.state.buf_bytes)
            .finish_non_exhaustive()
    }
}

fn hal_err<E>(_: E) -> EspError {
    EspError::Backend {
        what: "register access failed",
    }
}

/// The ESP verdict of a failed CAM command: a card that left the bus stays recognisable
/// ([`EspError::DeviceGone`]); any other driver error is a backend failure described by
/// `what` (the verdict type is small and `Copy`, so it does not carry the driver's error).
fn cam_err(what: &'static str) -> impl FnOnce(crate::DriverError) -> EspError {
    move |e| match e {
        crate::DriverError::DeviceGone { offset } => EspError::DeviceGone { offset },
        _ => EspError::Backend { what },
    }
}

impl CardEspState {
    /// The engine state of a probed card's SA table and ESP engine. Every SA slot is flushed
    /// (keys wiped) so the table starts empty; no CAM entry is touched.
    ///
    /// # Errors
    /// [`EspError::Unsupported`] when the card has no SA table or ESP engine block or reports
    /// an unusable buffer; [`EspError::Backend`] on register or command failures.
    pub fn new<R: RegIo>(card: &mut Card<R>, lookup: SaLookup) -> Result<Self, EspError> {
        let find = |t: u32| {
            card.blocks()
                .iter()
                .find(|b| b.type_id == t)
                .map(|b| b.offset)
        };
        let sa_base = find(hal::regs::block_type::SA).ok_or(EspError::Unsupported {
            what: "card has no SA table block",
        })?;
        let esp_base = find(hal::regs::block_type::ESP).ok_or(EspError::Unsupported {
            what: "card has no ESP engine block",
        })?;
        let mut state = CardEspState {
            sa_base,
            esp_base,
            slots: 0,
            buf_bytes: 0,
            lookup,
            installed: HashMap::new(),
            free: Vec::new(),
            words: Vec::new(),
        };
        let mut me = state.view(card);
        me.state.slots = me.rd(sa_base, sa::CAP_SLOTS)?.min(1 << 16);
        me.state.buf_bytes = me.rd(esp_base, esp::CAP_BUF_BYTES)?;
        let b = me.state.buf_bytes;
        if b < 64 || !b.is_multiple_of(16) || b > 4 * esp::BUF.count {
            return Err(EspError::Unsupported {
                what: "ESP engine reports an unusable buffer size",
            });
        }
        me.state.free = (0..me.state.slots).rev().map(|s| s as u16).collect();
        me.sa_command(sa::cmd::FLUSH_ALL)?;
        Ok(state)
    }

    /// Lends the engine `card` (the card this state was made for).
    pub fn view<'a, R: RegIo>(&'a mut self, card: &'a mut Card<R>) -> CardEspRef<'a, R> {
        CardEspRef { card, state: self }
    }

    /// How SPI lookups are made.
    #[must_use]
    pub fn lookup_mode(&self) -> SaLookup {
        self.lookup
    }

    /// Slot count (`CAP_SLOTS`).
    #[must_use]
    pub fn capacity(&self) -> u32 {
        self.slots
    }

    /// How many SAs are installed.
    #[must_use]
    pub fn installed_len(&self) -> usize {
        self.installed.len()
    }

    /// Whether a slot is free.
    #[must_use]
    pub fn has_free_slot(&self) -> bool {
        !self.free.is_empty()
    }

    /// The slot of an installed SA.
    #[must_use]
    pub fn slot_of(&self, direction: Direction, spi: Spi) -> Option<SaSlot> {
        self.installed
            .get(&(direction, spi))
            .map(|i| SaSlot(i.slot))
    }

    /// Packet buffer size in bytes (`CAP_BUF_BYTES`).
    #[must_use]
    pub fn buffer_bytes(&self) -> u32 {
        self.buf_bytes
    }
}

impl<R: RegIo> CardEsp<R> {
    /// Take over a probed card's SA table and ESP engine. Every SA slot is
    /// flushed (keys wiped) so the table starts empty.
    ///
    /// # Errors
    /// [`EspError::Unsupported`] when the card has no SA table or ESP engine
    /// block; [`EspError::Backend`] on register or command failures.
    pub fn new(mut card: Card<R>) -> Result<Self, EspError> {
        let state = CardEspState::new(&mut card, SaLookup::OwnCamEntries)?;
        Ok(CardEsp { card, state })
    }

    /// The card underneath (for CAM work and counters).
    pub fn card_mut(&mut self) -> &mut Card<R> {
        &mut self.card
    }

    /// Give the card back.
    #[must_use]
    pub fn into_card(self) -> Card<R> {
        self.card
    }

    /// Packet buffer size in bytes (`CAP_BUF_BYTES`).
    #[must_use]
    pub fn buffer_bytes(&self) -> u32 {
        self.state.buf_bytes
    }

    /// The borrowed view of this engine.
    pub fn view(&mut self) -> CardEspRef<'_, R> {
        self.state.view(&mut self.card)
    }
}

impl<R: RegIo> ForwardEsp for CardEsp<R> {
    fn forwarded_capacity(&self) -> u32 {
        self.state.slots
    }
    fn forward<T>(
        &mut self,
        _to: EspTarget<'_>,
        call: impl FnOnce(&mut dyn EspEngine) -> Result<T, EspError>,
    ) -> Result<T, EspError> {
        call(&mut self.view())
    }
}

impl<R: RegIo> CardEspRef<'_, R> {
    fn rd(&mut self, base: u32, r: Reg) -> Result<u32, EspError> {
        let v = self
            .card
            .regs_mut()
            .read32(BarOffset(base + r.offset))
            .map_err(hal_err)?;
        Ok(v)
    }

    fn wr(&mut self, base: u32, r: Reg, v: u32) -> Result<(), EspError> {
        self.card
            .regs_mut()
            .write32(BarOffset(base + r.offset), v)
            .map_err(hal_err)
    }

    fn wr_at(&mut self, base: u32, r: Reg, i: u32, v: u32) -> Result<(), EspError> {
        self.card
            .regs_mut()
            .write32(BarOffset(base + r.at(i)), v)
            .map_err(hal_err)
    }

    /// Write `cmd` to the block's CMD register and poll STATUS; returns the
    /// final STATUS value.
    fn command(
        &mut self,
        base: u32,
        cmd_reg: Reg,
        status_reg: Reg,
        code: u32,
    ) -> Result<u32, EspError> {
        self.wr(base, cmd_reg, code)?;
        for _ in 0..POLL_LIMIT {
            let s = self.rd(base, status_reg)?;
            if s == hal::regs::DEVICE_GONE {
                return Err(EspError::DeviceGone {
                    offset: BarOffset(base + status_reg.offset),
                });
            }
            if s & 1 == 0 {
                return Ok(s);
            }
            self.card.regs_mut().idle();
        }
        Err(EspError::Backend {
            what: "card command timed out (STATUS.BUSY stuck)",
        })
    }

    fn sa_command(&mut self, code: u32) -> Result<u32, EspError> {
        let s = self.command(self.state.sa_base, sa::CMD, sa::STATUS, code)?;
        match sa::status::ERR.get(s) {
            sa::err::OK => Ok(s),
            sa::err::BAD_CONFIG => Err(EspError::Unsupported {
                what: "card refused the SA configuration",
            }),
            sa::err::BAD_SLOT | sa::err::NOT_VALID => Err(EspError::Backend {
                what: "card SA slot not valid (driver and card disagree)",
            }),
            _ => Err(EspError::Backend {
                what: "SA table command failed",
            }),
        }
    }

    fn stage_state(&mut self, st: &SaState, direction: Direction) -> Result<(), EspError> {
        let b = self.state.sa_base;
        let (seq, win) = match direction {
            Direction::Outbound => (st.seq, 0),
            Direction::Inbound => (st.window.top, st.window.bitmap),
        };
        self.wr(b, sa::SEQ_LO, seq as u32)?;
        self.wr(b, sa::SEQ_HI, (seq >> 32) as u32)?;
        self.wr(b, sa::WIN_LO, win as u32)?;
        self.wr(b, sa::WIN_HI, (win >> 32) as u32)?;
        let c = &st.counters;
        self.wr(b, sa::PKTS_LO, c.packets as u32)?;
        self.wr(b, sa::PKTS_HI, (c.packets >> 32) as u32)?;
        self.wr(b, sa::BYTES_LO, c.bytes as u32)?;
        self.wr(b, sa::BYTES_HI, (c.bytes >> 32) as u32)?;
        // The card keeps 32-bit failure counters.
        self.wr(
            b,
            sa::AUTH_FAILS,
            c.auth_failures.min(u64::from(u32::MAX)) as u32,
        )?;
        self.wr(
            b,
            sa::REPLAYS,
            c.replay_drops.min(u64::from(u32::MAX)) as u32,
        )
    }

    /// The outcome of a command that succeeded on `slot`, with the full sequence
    /// number the engine reports.
    fn outcome(&mut self, spi: Spi, next_header: u8, slot: u16) -> Result<EspOutcome, EspError> {
        let eb = self.state.esp_base;
        let seq =
            u64::from(self.rd(eb, esp::SEQ_LO)?) | (u64::from(self.rd(eb, esp::SEQ_HI)?) << 32);
        Ok(EspOutcome {
            spi,
            seq,
            next_header,
            slot: SaSlot(slot),
        })
    }

    fn lookup(&self, direction: Direction, spi: Spi) -> Result<Installed, EspError> {
        self.state
            .installed
            .get(&(direction, spi))
            .copied()
            .ok_or(EspError::unknown_spi(direction, spi))
    }

    fn cam_key(sa: &SaConfig) -> CamKey {
        let dst = match sa.dst {
            Some(a) => IpPrefix::host(a),
            None => IpPrefix::any_v4(),
        };
        CamKey::new(
            None,
            Flow::Esp {
                dst,
                spi: Some(sa.spi.0),
            },
        )
    }

    /// The search key for an inbound packet: its SPI with the SA's
    /// destination (any-destination entries are searched as 0.0.0.0).
    fn search_key(installed: &Installed, spi: Spi) -> CamKey {
        let dst = match installed.key.flow {
            Flow::Esp { dst, .. } => dst,
            _ => IpPrefix::any_v4(),
        };
        let addr: IpAddr = dst.addr();
        CamKey::new(
            None,
            Flow::Esp {
                dst: IpPrefix::host(addr),
                spi: Some(spi.0),
            },
        )
    }

    /// Write `bytes` into the buffer from byte offset `at` (a multiple of 4),
    /// whole words, the last one zero-padded.
    fn put_buf(&mut self, at: u32, bytes: &[u8]) -> Result<(), EspError> {
        self.state.words.clear();
        self.state.words.extend(bytes.chunks(4).map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_be_bytes(w)
        }));
        let first = at / 4;
        for i in 0..self.state.words.len() {
            let w = self.state.words[i];
            self.wr_at(self.state.esp_base, esp::BUF, first + i as u32, w)?;
        }
        Ok(())
    }

    /// Read `len` bytes from byte offset `at` (a multiple of 4) into `out`.
    fn get_buf(&mut self, at: u32, len: usize, out: &mut Vec<u8>) -> Result<(), EspError> {
        out.clear();
        out.reserve(len);
        let first = at / 4;
        let n = len.div_ceil(4) as u32;
        for i in 0..n {
            let w = self
                .card
                .regs_mut()
                .read32(BarOffset(self.state.esp_base + esp::BUF.at(first + i)))
                .map_err(hal_err)?;
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.truncate(len);
        Ok(())
    }

    fn engine_error(&mut self, e: u32, spi: Spi, seq_lo: u32) -> EspError {
        let seq = match (
            self.rd(self.state.esp_base, esp::SEQ_LO),
            self.rd(self.state.esp_base, esp::SEQ_HI),
        ) {
            (Ok(l), Ok(h)) => (u64::from(h) << 32) | u64::from(l),
            _ => u64::from(seq_lo),
        };
        match e {
            esp::err::AUTH => EspError::AuthFailed { spi: spi.0, seq },
            esp::err::REPLAY => EspError::Replay { spi: spi.0, seq },
            esp::err::MALFORMED => EspError::Malformed {
                reason: "length, pad length or padding rejected by the card",
            },
            esp::err::SEQ_EXHAUSTED => EspError::SeqExhausted { spi: spi.0 },
            esp::err::TOO_LONG => EspError::Unsupported {
                what: "packet does not fit the card's buffer",
            },
            esp::err::SPI_MISMATCH => EspError::unknown_spi(Direction::Inbound, spi),
            esp::err::BAD_SLOT | esp::err::WRONG_DIR => EspError::Backend {
                what: "card SA slot not usable (driver and card disagree)",
            },
            _ => EspError::Backend {
                what: "ESP engine command failed",
            },
        }
    }
}

impl<R: RegIo> EspEngine for CardEspRef<'_, R> {
    fn capacity(&self) -> u32 {
        self.state.slots
    }

    fn install_sa(&mut self, cfg: &SaConfig) -> Result<SaSlot, EspError> {
        if cfg.cipher != Cipher::AesGcm {
            return Err(EspError::Unsupported {
                what: "the card runs AES-GCM only",
            });
        }
        let k = new_sa_key(&self.state.installed, cfg)?;
        let Some(slot) = self.state.free.pop() else {
            return Err(EspError::NoFreeSlot {
                capacity: self.state.slots,
            });
        };
        let res = self.write_sa(slot, cfg);
        let res = res.and_then(|()| {
            if cfg.direction == Direction::Inbound && self.state.lookup == SaLookup::OwnCamEntries {
                let entry = CamEntry {
                    key: Self::cam_key(cfg),
                    did: cfg.did,
                    result: ResultWord {
                        action: Action::Decrypt,
                        sa_slot: SaSlot(slot),
                        flags: ResultFlags(0),
                    },
                };
                match self.card.insert(&entry) {
                    Ok(i) => Ok(Some(i)),
                    Err(crate::DriverError::CamFull { .. }) => Err(EspError::NoFreeSlot {
                        capacity: self.state.slots,
                    }),
                    Err(e) => Err(cam_err("CAM insert for the SA failed")(e)),
                }
            } else {
                Ok(None)
            }
        });
        match res {
            Ok(cam) => {
                self.state.installed.insert(
                    k,
                    Installed {
                        slot,
                        cam,
                        key: Self::cam_key(cfg),
                    },
                );
                Ok(SaSlot(slot))
            }
            Err(e) => {
                // Best effort: wipe the slot again; the error that matters is e.
                let _ = self.wr(self.state.sa_base, sa::SLOT, u32::from(slot));
                let _ = self.sa_command(sa::cmd::INVALIDATE);
                self.state.free.push(slot);
                Err(e)
            }
        }
    }

    fn remove_sa(&mut self, direction: Direction, spi: Spi) -> Result<(), EspError> {
        let inst = self.lookup(direction, spi)?;
        if let Some(i) = inst.cam {
            self.card
                .remove_at(i)
                .map_err(cam_err("CAM remove for the SA failed"))?;
        }
        self.wr(self.state.sa_base, sa::SLOT, u32::from(inst.slot))?;
        self.sa_command(sa::cmd::INVALIDATE)?;
        self.state.installed.remove(&(direction, spi));
        self.state.free.push(inst.slot);
        Ok(())
    }

    fn sa_state(&mut self, direction: Direction, spi: Spi) -> Result<SaState, EspError> {
        let inst = self.lookup(direction, spi)?;
        let b = self.state.sa_base;
        self.wr(b, sa::SLOT, u32::from(inst.slot))?;
        self.sa_command(sa::cmd::READ)?;
        let r64 = |me: &mut Self, l: Reg, h: Reg| -> Result<u64, EspError> {
            Ok(u64::from(me.rd(b, l)?) | (u64::from(me.rd(b, h)?) << 32))
        };
        let seq = r64(self, sa::SEQ_LO, sa::SEQ_HI)?;
        let win = r64(self, sa::WIN_LO, sa::WIN_HI)?;
        let counters = SaCounters {
            packets: r64(self, sa::PKTS_LO, sa::PKTS_HI)?,
            bytes: r64(self, sa::BYTES_LO, sa::BYTES_HI)?,
            auth_failures: u64::from(self.rd(b, sa::AUTH_FAILS)?),
            replay_drops: u64::from(self.rd(b, sa::REPLAYS)?),
        };
        Ok(match direction {
            Direction::Outbound => SaState {
                seq,
                window: ReplayWindow::default(),
                counters,
            },
            Direction::Inbound => SaState {
                seq: 0,
                window: ReplayWindow {
                    top: seq,
                    bitmap: win,
                },
                counters,
            },
        })
    }

    fn set_sa_state(
        &mut self,
        direction: Direction,
        spi: Spi,
        state: &SaState,
    ) -> Result<(), EspError> {
        let inst = self.lookup(direction, spi)?;
        self.wr(self.state.sa_base, sa::SLOT, u32::from(inst.slot))?;
        self.stage_state(state, direction)?;
        self.sa_command(sa::cmd::SET_STATE)?;
        Ok(())
    }

    fn process_into(
        &mut self,
        req: EspRequest<'_>,
        out: &mut Vec<u8>,
    ) -> Result<EspOutcome, EspError> {
        out.clear();
        let eb = self.state.esp_base;
        match req {
            EspRequest::Encapsulate {
                spi,
                next_header,
                payload,
            } => {
                let inst = self.lookup(Direction::Outbound, spi)?;
                if payload.len() + 16 > self.state.buf_bytes as usize {
                    return Err(EspError::Unsupported {
                        what: "packet does not fit the card's buffer",
                    });
                }
                self.put_buf(esp::PAYLOAD_OFFSET, payload)?;
                self.wr(eb, esp::SLOT, u32::from(inst.slot))?;
                self.wr(eb, esp::LEN, payload.len() as u32)?;
                self.wr(eb, esp::NEXT_HDR, u32::from(next_header))?;
                let s = self.command(eb, esp::CMD, esp::STATUS, esp::cmd::ENCAP)?;
                let e = esp::status::ERR.get(s);
                if e != esp::err::OK {
                    return Err(self.engine_error(e, spi, 0));
                }
                let len = self.rd(eb, esp::LEN)? as usize;
                if len > self.state.buf_bytes as usize {
                    return Err(EspError::Backend {
                        what: "card reported an output longer than its buffer",
                    });
                }
                self.get_buf(0, len, out)?;
                self.outcome(spi, next_header, inst.slot)
            }
            EspRequest::Decapsulate { packet } => {
                let hdr = EspHeader::new_checked(packet)?;
                let (spi, seq_lo) = (hdr.spi(), hdr.seq_lo());
                let inst = self.lookup(Direction::Inbound, spi)?;
                let slot = if self.state.lookup == SaLookup::SlotOnly {
                    inst.slot
                } else {
                    // The SPI lookup goes through the CAM: the entry's result names the slot.
                    let hit = self
                        .card
                        .search(&Self::search_key(&inst, spi))
                        .map_err(cam_err("CAM search failed"))?;
                    match hit {
                        Some(h) if h.result.action == Action::Decrypt => h.result.sa_slot.0,
                        _ => return Err(EspError::unknown_spi(Direction::Inbound, spi)),
                    }
                };
                if packet.len() > self.state.buf_bytes as usize {
                    return Err(EspError::Malformed {
                        reason: "longer than the card's packet buffer",
                    });
                }
                self.put_buf(0, packet)?;
                self.wr(eb, esp::SLOT, u32::from(slot))?;
                self.wr(eb, esp::LEN, packet.len() as u32)?;
                let s = self.command(eb, esp::CMD, esp::STATUS, esp::cmd::DECAP)?;
                let e = esp::status::ERR.get(s);
                if e != esp::err::OK {
                    return Err(self.engine_error(e, spi, seq_lo));
                }
                let len = self.rd(eb, esp::LEN)? as usize;
                if len + 16 > self.state.buf_bytes as usize {
                    return Err(EspError::Backend {
                        what: "card reported an output longer than its buffer",
                    });
                }
                self.get_buf(esp::PAYLOAD_OFFSET, len, out)?;
                let next_header = self.rd(eb, esp::NEXT_HDR)? as u8;
                self.outcome(spi, next_header, slot)
            }
        }
    }
}

impl<R: RegIo> CardEspRef<'_, R> {
    fn write_sa(&mut self, slot: u16, cfg: &SaConfig) -> Result<(), EspError> {
        let b = self.state.sa_base;
        self.wr(b, sa::SLOT, u32::from(slot))?;
        self.wr(b, sa::SPI, cfg.spi.0)?;
        let config = sa::config::OUTBOUND.put(u32::from(cfg.direction == Direction::Outbound))
            | sa::config::TUNNEL.put(u32::from(cfg.mode == Mode::Tunnel))
            | sa::config::ESN.put(u32::from(cfg.esn))
            | sa::config::KEY256.put(u32::from(cfg.key.bits() == 256))
            | sa::config::ICV_BYTES.put(cfg.icv.bytes() as u32);
        self.wr(b, sa::CONFIG, config)?;
        self.stage_state(&SaState::default(), cfg.direction)?;
        let mut salt = u32::from_be_bytes(cfg.key.salt());
        let mut kw = [0u32; 8];
        for (i, c) in cfg.key.key_bytes().chunks(4).enumerate() {
            kw[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        let staged = (|| {
            self.wr(b, sa::SALT, salt)?;
            for (i, w) in kw.iter().enumerate() {
                self.wr_at(b, sa::KEY, i as u32, *w)?;
            }
            Ok::<(), EspError>(())
        })();
        kw.zeroize();
        salt.zeroize();
        staged?;
        // WRITE clears the key and salt staging registers on the card.
        self.sa_command(sa::cmd::WRITE)?;
        Ok(())
    }
}
