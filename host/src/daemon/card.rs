//! The node-specific table behind a card backend spec.
//!
//! `model` (the default) is the state core's small-capacity card stand-in in front of a software
//! overflow table ([`TieredTable`]): a full card loses no entry. Other specs (`verilator`,
//! `vfio:`, `pci:`) are refused with a clear message until the driver-backed table is wired in.

use crate::core::ids::IdCount;
use crate::core::node_table::{SimCard, TieredTable};

/// The node-specific table type of a running node.
pub type CardTable = TieredTable<SimCard>;

/// Opens the table for `spec`.
///
/// # Errors
/// A message naming the spec and what to use instead.
pub fn open(spec: &str, count: IdCount, capacity: usize) -> Result<CardTable, String> {
    match spec {
        "model" | "sim" => Ok(TieredTable::new(SimCard::new(count, capacity), count)),
        other => Err(format!(
            "card backend {other:?} is not available to clusterd in this build; use \"card = model\""
        )),
    }
}
