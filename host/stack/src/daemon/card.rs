//! The node-specific table behind a card backend spec (the `card` config setting, the same
//! grammar as `hwctl --device`: `model`, `model:depth=N`, `verilator`, ...).
//!
//! The card is opened through [`crate::device`] and the driver (`driver::Card`), wrapped in the
//! state core's [`CoreCardTable`] (one `FLUSH_DID` per lost identifier) and put in front of a
//! software overflow table ([`TieredTable`]): a full CAM loses no entry.

use crate::core::card_table::CardTable as CoreCardTable;
use crate::core::ids::IdCount;
use crate::core::node_table::TieredTable;
use crate::device::{DeviceSpec, DynRegs};

/// The node-specific table type of a running node.
pub type CardTable = TieredTable<CoreCardTable<DynRegs>>;

/// Opens the table for `spec`; a bare `model` gets `capacity` CAM entries.
///
/// # Errors
/// A message naming the spec, the problem, and the accepted specs.
pub fn open(spec: &str, count: IdCount, capacity: usize) -> Result<CardTable, String> {
    let text = if spec == "model" {
        format!("model:depth={capacity}")
    } else {
        spec.to_string()
    };
    let dev: DeviceSpec = text.parse().map_err(|e| {
        format!(
            "card = {spec:?}: {e} (accepted: {})",
            crate::device::SPEC_HELP
        )
    })?;
    let card = dev
        .open_card()
        .map_err(|e| format!("card = {spec:?}: cannot open the card: {e}"))?;
    let table = CoreCardTable::new(card, count)
        .map_err(|e| format!("card = {spec:?}: the card cannot hold node-specific tables: {e}"))?;
    Ok(TieredTable::new(table, count))
}
