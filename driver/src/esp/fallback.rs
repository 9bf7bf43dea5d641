//! The card first, the software path when there is no card or no free slot.

use std::collections::HashMap;

use hal::RegIo;

use super::card::CardEsp;
use super::sa::{Direction, SaConfig, SaState, Spi};
use super::software::SoftwareEsp;
use super::{new_sa_key, EspEngine, EspError, EspHeader, EspOutcome, EspRequest, SaSlot};

/// Where an SA runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In a card slot.
    Card,
    /// On the software path.
    Software,
}

/// An [`EspEngine`] that installs each SA on the card when it can (a free
/// slot, a cipher the card runs) and on [`SoftwareEsp`] otherwise, then sends
/// every packet to wherever its SA lives. Slot numbers in [`EspOutcome`] are
/// those of the engine that ran the SA (see [`FallbackEsp::placement`]).
pub struct FallbackEsp<R: RegIo> {
    card: Option<CardEsp<R>>,
    soft: SoftwareEsp,
    placed: HashMap<(Direction, Spi), Placement>,
}

impl<R: RegIo> std::fmt::Debug for FallbackEsp<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackEsp")
            .field("card", &self.card)
            .field("soft", &self.soft)
            .field("installed", &self.placed.len())
            .finish()
    }
}

impl<R: RegIo> FallbackEsp<R> {
    /// `card` (if any) first, then a software path of `soft_capacity` SAs.
    #[must_use]
    pub fn new(card: Option<CardEsp<R>>, soft_capacity: u32) -> Self {
        FallbackEsp {
            card,
            soft: SoftwareEsp::new(soft_capacity),
            placed: HashMap::new(),
        }
    }

    /// Where the SA runs, if it is installed.
    #[must_use]
    pub fn placement(&self, direction: Direction, spi: Spi) -> Option<Placement> {
        self.placed.get(&(direction, spi)).copied()
    }

    fn engine(&mut self, direction: Direction, spi: Spi) -> Result<&mut dyn EspEngine, EspError> {
        match self.placed.get(&(direction, spi)) {
            Some(Placement::Card) => match self.card.as_mut() {
                Some(c) => Ok(c),
                None => Err(EspError::Backend {
                    what: "SA placed on a card that is gone",
                }),
            },
            Some(Placement::Software) => Ok(&mut self.soft),
            None => Err(EspError::unknown_spi(direction, spi)),
        }
    }
}

impl<R: RegIo> EspEngine for FallbackEsp<R> {
    fn capacity(&self) -> u32 {
        self.card
            .as_ref()
            .map_or(0, EspEngine::capacity)
            .saturating_add(self.soft.capacity())
    }

    fn install_sa(&mut self, sa: &SaConfig) -> Result<SaSlot, EspError> {
        let k = new_sa_key(&self.placed, sa)?;
        if let Some(card) = self.card.as_mut() {
            match card.install_sa(sa) {
                Ok(slot) => {
                    self.placed.insert(k, Placement::Card);
                    return Ok(slot);
                }
                Err(EspError::NoFreeSlot { .. } | EspError::Unsupported { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let slot = self.soft.install_sa(sa).map_err(|e| match e {
            EspError::NoFreeSlot { .. } => EspError::NoFreeSlot {
                capacity: self.capacity(),
            },
            e => e,
        })?;
        self.placed.insert(k, Placement::Software);
        Ok(slot)
    }

    fn remove_sa(&mut self, direction: Direction, spi: Spi) -> Result<(), EspError> {
        self.engine(direction, spi)?.remove_sa(direction, spi)?;
        self.placed.remove(&(direction, spi));
        Ok(())
    }

    fn sa_state(&mut self, direction: Direction, spi: Spi) -> Result<SaState, EspError> {
        self.engine(direction, spi)?.sa_state(direction, spi)
    }

    fn set_sa_state(
        &mut self,
        direction: Direction,
        spi: Spi,
        state: &SaState,
    ) -> Result<(), EspError> {
        self.engine(direction, spi)?
            .set_sa_state(direction, spi, state)
    }

    fn process_into(
        &mut self,
        req: EspRequest<'_>,
        out: &mut Vec<u8>,
    ) -> Result<EspOutcome, EspError> {
        let spi = match req {
            EspRequest::Encapsulate { spi, .. } => spi,
            EspRequest::Decapsulate { packet } => match EspHeader::new_checked(packet) {
                Ok(hdr) => hdr.spi(),
                Err(e) => {
                    out.clear();
                    return Err(e);
                }
            },
        };
        self.engine(req.direction(), spi)?.process_into(req, out)
    }
}
