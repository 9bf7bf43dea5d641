//! The node-specific table behind a card backend spec (the `card` config setting, the same
//! grammar as `hwctl --device`: `model`, `model:depth=N`, `verilator`, ...).
//!
//! The card is opened through [`crate::device`] and the driver (`driver::Card`), wrapped in the
//! state core's [`CoreCardTable`] (one `FLUSH_DID` per lost identifier) and put in front of a
//! software overflow table ([`TieredTable`]): a full CAM loses no entry.

use crate::core::card_table::CardTable as CoreCardTable;
use crate::core::ids::IdCount;
use crate::core::node_table::{TableError, TieredTable};
use crate::device::{DeviceError, DeviceSpec, DynRegs, SPEC_HELP};

/// The node-specific table type of a running node.
pub type CardTable = TieredTable<CoreCardTable<DynRegs>>;

/// Why the node-specific table of a `card` setting could not be opened. Each message names
/// the spec and the problem; the underlying error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The setting is not a device spec.
    #[error("card = {spec:?}: {source} (accepted: {SPEC_HELP})")]
    Spec {
        /// The setting.
        spec: String,
        /// Why it does not parse.
        #[source]
        source: DeviceError,
    },
    /// The device did not open or probe.
    #[error("card = {spec:?}: cannot open the card: {source}")]
    Open {
        /// The setting.
        spec: String,
        /// What the device layer reported.
        #[source]
        source: DeviceError,
    },
    /// The card cannot hold this node's tables (for example too few identifier bits).
    #[error("card = {spec:?}: the card cannot hold node-specific tables: {source}")]
    Table {
        /// The setting.
        spec: String,
        /// What the table reported.
        #[source]
        source: TableError,
    },
}

/// Opens the table for `spec`; a bare `model` gets `capacity` CAM entries.
///
/// # Errors
/// [`OpenError`]: a bad spec, a device that does not open, or a card that cannot hold
/// `count` identifiers.
pub fn open(spec: &str, count: IdCount, capacity: usize) -> Result<CardTable, OpenError> {
    let text = if spec == "model" {
        format!("model:depth={capacity}")
    } else {
        spec.to_string()
    };
    let dev: DeviceSpec = text.parse().map_err(|source| OpenError::Spec {
        spec: spec.to_string(),
        source,
    })?;
    let card = dev.open_card().map_err(|source| OpenError::Open {
        spec: spec.to_string(),
        source,
    })?;
    let table = CoreCardTable::new(card, count).map_err(|source| OpenError::Table {
        spec: spec.to_string(),
        source,
    })?;
    Ok(TieredTable::new(table, count))
}
