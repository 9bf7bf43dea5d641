//! The JSON shapes of a card's register blocks, shared by `hwctl` (local cards) and `clusterd`'s
//! `card_regs` control command (a running node's card), so both print the same thing.

use driver::{BlockInfo, RegValue};
use serde::{Deserialize, Serialize};

/// A register block as `hwctl status`/`regs --json` show it. Field names are a stable interface.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockOut {
    /// Block name.
    pub name: String,
    /// Type id, hex.
    pub type_id: String,
    /// Version as major.minor.
    pub version: String,
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// BAR offset, hex.
    pub offset: String,
    /// Next-block pointer, hex.
    pub next: String,
}

impl From<&BlockInfo> for BlockOut {
    fn from(b: &BlockInfo) -> Self {
        Self {
            name: b.name.to_owned(),
            type_id: format!("0x{:08x}", b.type_id),
            version: format!("{}.{}", b.major, b.minor),
            major: b.major,
            minor: b.minor,
            offset: format!("0x{:05x}", b.offset),
            next: format!("0x{:05x}", b.next),
        }
    }
}

/// `regs --json` output, one element per block. Field names are a stable
/// interface.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegsBlockOut {
    /// The block header.
    #[serde(flatten)]
    pub block: BlockOut,
    /// Its registers.
    pub regs: Vec<RegOut>,
}

/// One register value as `hwctl regs --json` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegOut {
    /// Register name (with `[i]` for array elements).
    pub name: String,
    /// BAR offset, hex.
    pub offset: String,
    /// Access rule.
    pub access: String,
    /// Value, hex.
    pub value: String,
    /// Value.
    pub value_u32: u32,
    /// One-line description.
    pub doc: String,
}

/// A register's doc comment as plain text (no rustdoc link brackets).
fn plain_doc(doc: &str) -> String {
    doc.trim().replace("[`", "`").replace("`]", "`")
}

impl From<&RegValue> for RegOut {
    fn from(r: &RegValue) -> Self {
        Self {
            name: match r.element {
                Some(e) => format!("{}[{e}]", r.name),
                None => r.name.to_owned(),
            },
            offset: format!("0x{:05x}", r.offset),
            access: r.access.to_owned(),
            value: format!("0x{:08x}", r.value),
            value_u32: r.value,
            doc: plain_doc(r.doc),
        }
    }
}

/// The report of `Card::read_all_regs`, block by block.
#[must_use]
pub fn regs_report(all: &[(BlockInfo, Vec<RegValue>)]) -> Vec<RegsBlockOut> {
    all.iter()
        .map(|(b, regs)| RegsBlockOut {
            block: BlockOut::from(b),
            regs: regs.iter().map(RegOut::from).collect(),
        })
        .collect()
}
