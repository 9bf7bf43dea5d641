//! The card first, the software path when there is no card or no free slot.

use std::collections::HashMap;

use hal::RegIo;

use super::card::CardEsp;
use super::sa::{Direction, SaConfig, Spi};
use super::software::SoftwareEsp;
use super::{
    new_sa_key, EspEngine, EspError, EspHeader, EspRequest, EspTarget, ForwardEsp, SaSlot,
};

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
/// every packet to wherever its SA lives. Slot numbers in [`EspOutcome`](super::EspOutcome) are
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

/// Installs on the card first, then routes every call to the engine that holds its SA.
impl<R: RegIo> ForwardEsp for FallbackEsp<R> {
    fn forwarded_capacity(&self) -> u32 {
        self.card
            .as_ref()
            .map_or(0, EspEngine::capacity)
            .saturating_add(self.soft.capacity())
    }

    fn forward<T>(
        &mut self,
        to: EspTarget<'_>,
        call: impl FnOnce(&mut dyn EspEngine) -> Result<T, EspError>,
    ) -> Result<T, EspError> {
        let (direction, spi) = match to {
            EspTarget::Sa(direction, spi) => (direction, spi),
            EspTarget::Packet(req @ EspRequest::Encapsulate { spi, .. }) => (req.direction(), spi),
            EspTarget::Packet(req @ EspRequest::Decapsulate { packet }) => {
                (req.direction(), EspHeader::new_checked(packet)?.spi())
            }
        };
        call(self.engine(direction, spi)?)
    }

    fn forward_install(&mut self, sa: &SaConfig) -> Result<SaSlot, EspError> {
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
                capacity: self.forwarded_capacity(),
            },
            e => e,
        })?;
        self.placed.insert(k, Placement::Software);
        Ok(slot)
    }

    fn forwarded_removal(&mut self, direction: Direction, spi: Spi) {
        self.placed.remove(&(direction, spi));
    }
}
