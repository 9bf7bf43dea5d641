//! IPsec ESP with AES-GCM (RFC 4303, RFC 4106, RFC 4543): the SA data model,
//! the anti-replay window, the packet codec and the [`EspEngine`] trait that the
//! software path ([`SoftwareEsp`], on `ring`) and the card both implement.
//!
//! Engines: [`SoftwareEsp`] (host memory, `ring`), [`CardEsp`] (the card's SA
//! table and ESP engine blocks, SPI lookup through the CAM), [`CardEspRef`]
//! (the same engine on a card another owner keeps, its state in a
//! [`CardEspState`], optionally without CAM entries: [`SaLookup`]) and
//! [`FallbackEsp`] (the card while it has free slots, software after).
//!
//! A secured tunnel's state (claim 9 of the seeds) is an SA context keyed by
//! SPI. Its long-lived part ([`SaConfig`]: SPI, direction, mode, key, salt,
//! ICV length, ESN flag) is installed once; its moving part ([`SaState`]:
//! sequence number, replay window, counters) can be read back and written
//! again, which is how another node takes an SA over without reusing an
//! outbound sequence number or forgetting the inbound window (design
//! invariant 5). Key material is never part of [`SaState`], never shown by
//! `Debug` and zeroized when dropped (invariant 6).
//!
//! Wire format handled here (RFC 4303 section 2, RFC 4106 section 3):
//!
//! ```text
//! SPI(4) | seq low(4) | IV(8) | ciphertext of {payload | padding 1,2,3.. | pad len(1) | next header(1)} | ICV(8/12/16)
//! nonce = salt(4) | IV(8);  AAD = SPI | seq low  (or SPI | seq high | seq low with ESN)
//! ```
//!
//! The engines use the 64-bit sequence number as the explicit IV (RFC 4106
//! section 3.1 allows a counter), so an IV never repeats under one key and the
//! card and the software path produce identical packets.
//!
//! The engine sees ESP payloads: in tunnel mode the payload is the inner IP
//! packet, in transport mode the upper-layer segment. Building or stripping
//! the outer IP header is the caller's job; [`Mode`] is kept with the SA so
//! that callers (and the card) know which it is.

mod card;
mod codec;
mod fallback;
mod replay;
mod sa;
mod software;

pub use card::{CardEsp, CardEspRef, CardEspState, SaLookup};
pub use codec::{
    EspCipher, EspHeader, OpenError, SealHeader, ESP_HEADER_LEN, ESP_IV_LEN, ESP_TRAILER_LEN,
};
pub use fallback::{FallbackEsp, Placement};
pub use replay::{infer_esn, ReplayWindow, REPLAY_WINDOW_BITS};
pub use sa::{Cipher, Direction, IcvLen, Mode, SaConfig, SaCounters, SaKey, SaState, Spi};
pub use software::SoftwareEsp;

/// Index of an SA context in an engine's table (a card slot, or the
/// software path's table index).
pub use crate::types::SaSlot;

/// Why an ESP operation failed. Small and `Copy`: this is the data path's
/// verdict type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EspError {
    /// No SA with this SPI is installed for this direction.
    #[error("unknown SPI 0x{spi:08x} ({direction})")]
    UnknownSpi {
        /// The SPI looked up.
        spi: u32,
        /// The direction looked up.
        direction: Direction,
    },
    /// The ICV did not verify: the packet was forged, corrupted or sealed
    /// with another key. Counted in [`SaCounters::auth_failures`].
    #[error("authentication failed (SPI 0x{spi:08x}, seq {seq})")]
    AuthFailed {
        /// SPI of the packet.
        spi: u32,
        /// Full (ESN-inferred) sequence number of the packet.
        seq: u64,
    },
    /// The sequence number was already seen or lies left of the replay
    /// window. Counted in [`SaCounters::replay_drops`].
    #[error("replayed or too old (SPI 0x{spi:08x}, seq {seq})")]
    Replay {
        /// SPI of the packet.
        spi: u32,
        /// Full (ESN-inferred) sequence number of the packet.
        seq: u64,
    },
    /// The packet is too short or its trailer is inconsistent.
    #[error("malformed ESP packet: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The SA table is full.
    #[error("no free SA slot (capacity {capacity})")]
    NoFreeSlot {
        /// How many SAs the engine holds.
        capacity: u32,
    },
    /// An SA with this SPI and direction is already installed.
    #[error("an SA with SPI 0x{spi:08x} ({direction}) is already installed")]
    DuplicateSa {
        /// The SPI.
        spi: u32,
        /// The direction.
        direction: Direction,
    },
    /// The outbound sequence number space is exhausted (2^32 - 1 without
    /// ESN, 2^64 - 1 with): RFC 4303 forbids cycling; the SA must be rekeyed.
    #[error("sequence number space exhausted for SPI 0x{spi:08x}: rekey")]
    SeqExhausted {
        /// The SPI.
        spi: u32,
    },
    /// The engine cannot hold this SA (for example a cipher the card does
    /// not implement), or the state handed to it is inconsistent.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is not supported.
        what: &'static str,
    },
    /// The card left the bus: a register read all ones. Every later command
    /// on this card fails too; the SAs must be placed elsewhere.
    #[error("card gone: register {offset} read 0xffffffff")]
    DeviceGone {
        /// The register that read all ones.
        offset: hal::BarOffset,
    },
    /// The engine's backend failed (register access, simulator gone).
    #[error("engine backend failed: {what}")]
    Backend {
        /// What failed.
        what: &'static str,
    },
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug)]
pub enum EspRequest<'a> {
    /// Encapsulate `payload` under the outbound SA `spi`.
    Encapsulate {
        /// SPI of the outbound SA.
        spi: Spi,
        /// Next-header value for the trailer (4 = IPv4 for tunnel mode,
        /// 41 = IPv6, 6 = TCP, 17 = UDP for transport mode, ...).
        next_header: u8,
        /// The data to protect.
        payload: &'a [u8],
    },
    /// Decapsulate the ESP packet (starting at the SPI field).
    Decapsulate {
        /// The ESP packet.
        packet: &'a [u8],
    },
}

impl EspRequest<'_> {
    /// The direction of the SA this request uses.
    #[must_use]
    pub fn direction(&self) -> Direction {
        match self {
            EspRequest::Encapsulate { .. } => Direction::Outbound,
            EspRequest::Decapsulate { .. } => Direction::Inbound,
        }
    }
}

/// What a successful operation produced (the bytes are in the caller's
/// output buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspOutcome {
    /// SPI of the SA used.
    pub spi: Spi,
    /// Full 64-bit sequence number of the packet.
    pub seq: u64,
    /// Next-header value (from the request for encapsulation, from the
    /// trailer for decapsulation).
    pub next_header: u8,
    /// Slot of the SA used.
    pub slot: SaSlot,
}

/// An ESP processor: the software path or the card.
///
/// SAs are identified by (direction, SPI). The trait never hands out keys:
/// [`EspEngine::sa_state`] returns sequence numbers, the window and counters
/// only.
pub trait EspEngine {
    /// How many SAs the engine can hold.
    fn capacity(&self) -> u32;

    /// Install an SA.
    ///
    /// # Errors
    /// [`EspError::NoFreeSlot`] when the table is full,
    /// [`EspError::DuplicateSa`] when (direction, SPI) is taken,
    /// [`EspError::Unsupported`] when this engine cannot run the SA.
    fn install_sa(&mut self, sa: &SaConfig) -> Result<SaSlot, EspError>;

    /// Remove an SA; its key is wiped.
    ///
    /// # Errors
    /// [`EspError::UnknownSpi`] when no such SA is installed.
    fn remove_sa(&mut self, direction: Direction, spi: Spi) -> Result<(), EspError>;

    /// Read an SA's moving state (never its key).
    ///
    /// # Errors
    /// [`EspError::UnknownSpi`] when no such SA is installed.
    fn sa_state(&mut self, direction: Direction, spi: Spi) -> Result<SaState, EspError>;

    /// Overwrite an SA's moving state: how a node taking an SA over restores
    /// the outbound sequence number and the inbound replay window.
    ///
    /// # Errors
    /// [`EspError::UnknownSpi`] when no such SA is installed.
    fn set_sa_state(
        &mut self,
        direction: Direction,
        spi: Spi,
        state: &SaState,
    ) -> Result<(), EspError>;

    /// Process one packet, writing the result into `out` (cleared first).
    ///
    /// # Errors
    /// Any [`EspError`]; on error `out` holds no plaintext.
    fn process_into(
        &mut self,
        req: EspRequest<'_>,
        out: &mut Vec<u8>,
    ) -> Result<EspOutcome, EspError>;

    /// Process one packet into a fresh buffer.
    ///
    /// # Errors
    /// As for [`EspEngine::process_into`].
    fn process(&mut self, req: EspRequest<'_>) -> Result<(EspOutcome, Vec<u8>), EspError> {
        let mut out = Vec::new();
        let o = self.process_into(req, &mut out)?;
        Ok((o, out))
    }
}

impl EspError {
    /// [`EspError::UnknownSpi`] for the SA (`direction`, `spi`).
    #[must_use]
    pub fn unknown_spi(direction: Direction, spi: Spi) -> Self {
        EspError::UnknownSpi {
            spi: spi.0,
            direction,
        }
    }
}

/// The table key (direction, SPI) of `sa`, or [`EspError::DuplicateSa`] when
/// `installed` already holds an SA under it: every engine's first install check.
fn new_sa_key<V, S: std::hash::BuildHasher>(
    installed: &std::collections::HashMap<(Direction, Spi), V, S>,
    sa: &SaConfig,
) -> Result<(Direction, Spi), EspError> {
    let k = (sa.direction, sa.spi);
    if installed.contains_key(&k) {
        return Err(EspError::DuplicateSa {
            spi: sa.spi.0,
            direction: sa.direction,
        });
    }
    Ok(k)
}

/// The SA a forwarded call is about.
#[derive(Clone, Copy, Debug)]
pub enum EspTarget<'a> {
    /// The SA (direction, SPI): the one installed, removed or asked about.
    Sa(Direction, Spi),
    /// The SA a packet request uses (a decapsulation names its SPI in the packet).
    Packet(EspRequest<'a>),
}

/// An engine that runs every call on another engine it reaches through itself (a borrowed
/// view of a card, or whichever engine holds the SA). Implement this and [`EspEngine`] comes
/// with it: each call goes through [`ForwardEsp::forward`], and `process_into` clears `out`
/// before it forwards, so `out` is empty also when no engine underneath can be reached.
pub trait ForwardEsp {
    /// How many SAs the engines underneath can hold.
    fn forwarded_capacity(&self) -> u32;

    /// Run `call` on the engine underneath that `to` is about, and return what it returns
    /// (or what this wrapper makes of it).
    ///
    /// # Errors
    /// Whatever `call` returns, or this wrapper's own error when it cannot reach the engine.
    fn forward<T>(
        &mut self,
        to: EspTarget<'_>,
        call: impl FnOnce(&mut dyn EspEngine) -> Result<T, EspError>,
    ) -> Result<T, EspError>;

    /// Install `sa` underneath: by default through [`ForwardEsp::forward`]; a wrapper that
    /// chooses among engines chooses here.
    ///
    /// # Errors
    /// As for [`EspEngine::install_sa`].
    fn forward_install(&mut self, sa: &SaConfig) -> Result<SaSlot, EspError> {
        self.forward(EspTarget::Sa(sa.direction, sa.spi), |e| e.install_sa(sa))
    }

    /// The SA (`direction`, `spi`) is gone from the engine underneath.
    fn forwarded_removal(&mut self, _direction: Direction, _spi: Spi) {}
}

impl<F: ForwardEsp> EspEngine for F {
    fn capacity(&self) -> u32 {
        self.forwarded_capacity()
    }
    fn install_sa(&mut self, sa: &SaConfig) -> Result<SaSlot, EspError> {
        self.forward_install(sa)
    }
    fn remove_sa(&mut self, direction: Direction, spi: Spi) -> Result<(), EspError> {
        self.forward(EspTarget::Sa(direction, spi), |e| {
            e.remove_sa(direction, spi)
        })?;
        self.forwarded_removal(direction, spi);
        Ok(())
    }
    fn sa_state(&mut self, direction: Direction, spi: Spi) -> Result<SaState, EspError> {
        self.forward(EspTarget::Sa(direction, spi), |e| {
            e.sa_state(direction, spi)
        })
    }
    fn set_sa_state(
        &mut self,
        direction: Direction,
        spi: Spi,
        state: &SaState,
    ) -> Result<(), EspError> {
        self.forward(EspTarget::Sa(direction, spi), |e| {
            e.set_sa_state(direction, spi, state)
        })
    }
    fn process_into(
        &mut self,
        req: EspRequest<'_>,
        out: &mut Vec<u8>,
    ) -> Result<EspOutcome, EspError> {
        out.clear();
        self.forward(EspTarget::Packet(req), |e| e.process_into(req, out))
    }
}
