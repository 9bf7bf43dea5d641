//! The state-offload card driver: [`Card`], generic over [`hal::RegIo`].
//!
//! * [`Card::probe`] walks the register block chain (identity block at 0,
//!   then one block per function), checks magic, versions and capabilities,
//!   and soft-resets the card.
//! * Entries are typed ([`CamEntry`]: a [`CamKey`] with wildcards, a
//!   [`DistributionId`], a [`ResultWord`]); the 320-bit key layout is
//!   documented in [`key`].
//! * Commands are bounded: a card that stays busy gives
//!   [`DriverError::Timeout`], one that left the bus
//!   [`DriverError::DeviceGone`]; nothing panics on what a card returns.
//!
//! ```
//! use driver::{Card, CamEntry, CamKey, Flow, IpPrefix, ResultWord, Action, DistributionId};
//! let mut card = Card::probe(sim_bridge::model::ModelCard::new())?;
//! let key = CamKey::new(None, Flow::Esp { dst: "10.0.0.1".parse()?, spi: Some(0x1234) });
//! let entry = CamEntry { key, did: DistributionId(7), result: ResultWord::new(Action::Decrypt) };
//! let slot = card.insert(&entry)?;
//! assert_eq!(card.search(&key)?.map(|h| h.index), Some(slot));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod card;
pub mod codes;
pub mod error;
pub mod esp;
pub mod key;
pub mod port;
pub mod probe;
pub mod sample;
mod shadow;
pub mod types;

pub use card::{
    AgingScan, CamCaps, CamEntry, Card, CardInfo, Counters, DumpEntry, SearchHit,
    DEFAULT_POLL_LIMIT,
};
pub use error::{CamCmd, CmdErrorCode, DriverError};
pub use hal::RegIo;
pub use key::{
    Action, CamKey, Flow, IpPrefix, KeyBits, KeyError, Kind, ResultFlags, ResultWord, KEY_WORDS,
};
pub use probe::{read_block_regs, walk_chain, BlockInfo, RegValue};
pub use types::{CamIndex, DidSet, DistributionId, SaSlot};
