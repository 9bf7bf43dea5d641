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

/// A register's doc comment (rustdoc markdown, `hal/src/regs.rs`) as plain text for people:
/// no backticks, no link brackets or targets; a Rust path names its last part
/// (`super::block_type::CAM` is CAM), a next-block offset names the block
/// (`super::esp::BASE` is "the ESP block"), and "see `status`" (a module of field constants)
/// points at the register contract, hdl/CARD.md.
pub fn plain_doc(doc: &str) -> String {
    let doc = doc.trim();
    // [text](target) -> text; [`x`] -> `x`; [X] -> X (not KEY[0], an element)
    let mut s = String::with_capacity(doc.len());
    let chars: Vec<char> = doc.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_word = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '[' && !after_word {
            if let Some(len) = chars[i + 1..].iter().position(|&x| x == ']') {
                let inner: String = chars[i + 1..i + 1 + len].iter().collect();
                let mut next = i + 1 + len + 1;
                if chars.get(next) == Some(&'(') {
                    if let Some(l2) = chars[next..].iter().position(|&x| x == ')') {
                        next += l2 + 1;
                    }
                }
                s.push_str(&inner);
                i = next;
                continue;
            }
        }
        s.push(c);
        i += 1;
    }
    // `code` spans
    let mut out = String::with_capacity(s.len());
    let mut parts = s.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut code = true;
    for part in parts {
        if code {
            let see = out.ends_with("see ");
            let segs: Vec<&str> = part.split("::").filter(|x| *x != "super").collect();
            let text = match segs.as_slice() {
                [m, "BASE"] => format!("the {} block", m.to_uppercase()),
                [.., last] if segs.len() > 1 => (*last).to_owned(),
                [one] if see && one.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                    format!("the {} fields in hdl/CARD.md", one.to_uppercase())
                }
                _ => part.to_owned(),
            };
            out.push_str(&text);
        } else {
            out.push_str(part);
        }
        code = !code;
    }
    out
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

#[cfg(test)]
mod tests {
    use super::plain_doc;

    #[test]
    fn register_docs_are_plain_text() {
        let cases = [
            (
                "Block type id (`super::block_type::CAM`).",
                "Block type id (CAM).",
            ),
            ("Card magic (`values::MAGIC`).", "Card magic (MAGIC)."),
            (
                "Control: write `control::SOFT_RESET` to reset every block. Reads 0.",
                "Control: write SOFT_RESET to reset every block. Reads 0.",
            ),
            (
                "Offset of the next block (`super::esp::BASE`).",
                "Offset of the next block (the ESP block).",
            ),
            (
                "Status: see `status`.",
                "Status: see the STATUS fields in hdl/CARD.md.",
            ),
            (
                "Key words, `KEY[0]` = key bits 31:0.",
                "Key words, KEY[0] = key bits 31:0.",
            ),
            ("Writes [`Card::insert`] uses.", "Writes insert uses."),
            (
                "As in [the contract](../hdl/CARD.md), see [Card].",
                "As in the contract, see Card.",
            ),
            ("  plain  ", "plain"),
        ];
        for (doc, want) in cases {
            assert_eq!(plain_doc(doc), want, "{doc}");
        }
    }

    #[test]
    fn no_register_doc_keeps_markup() {
        let mut card = driver::Card::probe(sim_bridge::model::ModelCard::new()).expect("probe");
        for b in super::regs_report(&card.read_all_regs().expect("regs")) {
            for r in b.regs {
                assert!(
                    !r.doc.contains('`') && !r.doc.contains("::") && !r.doc.contains("]("),
                    "{}: {}",
                    r.name,
                    r.doc
                );
            }
        }
    }
}
