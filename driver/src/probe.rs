//! Walking the chain of self-describing register blocks.

use std::collections::HashSet;

use hal::regs::{
    self, header, ident, Access, BlockDesc, DEVICE_GONE, MAX_BLOCKS, UNMAPPED_PATTERN,
};
use hal::{BarOffset, RegIo};
use serde::Serialize;

use crate::error::DriverError;

/// One block found in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BlockInfo {
    /// Absolute BAR offset of the block.
    pub offset: u32,
    /// Its `TYPE` register.
    pub type_id: u32,
    /// The block's name (`IDENT`, `CAM`, ...), or `UNKNOWN` for a type this
    /// driver does not know (such blocks are listed and skipped).
    pub name: &'static str,
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Its `NEXT` register (0 ends the chain).
    pub next: u32,
}

impl BlockInfo {
    /// The register map's description of this block, if the driver knows it.
    #[must_use]
    pub fn desc(&self) -> Option<&'static BlockDesc> {
        regs::block_by_type(self.type_id)
    }
}

/// The value of one register, as `hwctl regs` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RegValue {
    /// The block's name.
    pub block: &'static str,
    /// The register's name.
    pub name: &'static str,
    /// Element of a register array, `None` for a plain register.
    pub element: Option<u32>,
    /// Absolute BAR offset.
    pub offset: u32,
    /// Access rule: `RO`, `RW` or `WO`.
    pub access: &'static str,
    /// The value read.
    pub value: u32,
    /// The register's one-line description.
    pub doc: &'static str,
}

fn read<R: RegIo + ?Sized>(regs: &mut R, offset: u32) -> Result<u32, DriverError> {
    Ok(regs.read32(BarOffset(offset))?)
}

/// Read a register that never reads all ones on a working card.
fn read_live<R: RegIo + ?Sized>(regs: &mut R, offset: u32) -> Result<u32, DriverError> {
    let v = read(regs, offset)?;
    if v == DEVICE_GONE {
        return Err(DriverError::DeviceGone {
            offset: BarOffset(offset),
        });
    }
    Ok(v)
}

/// Walk the block chain from offset 0 and check it: the identity block comes
/// first with the right magic, no block is visited twice, no more than
/// [`MAX_BLOCKS`] blocks, every `NEXT` is aligned and inside the BAR, and
/// every known block has the major version this driver understands. Blocks
/// of unknown type are listed (named `UNKNOWN`) and skipped.
///
/// # Errors
/// [`DriverError::DeviceGone`], [`DriverError::WrongMagic`],
/// [`DriverError::ChainLoop`], [`DriverError::BadNextPointer`],
/// [`DriverError::UnknownBlock`], [`DriverError::UnsupportedVersion`], or a
/// HAL error.
pub fn walk_chain<R: RegIo + ?Sized>(regs: &mut R) -> Result<Vec<BlockInfo>, DriverError> {
    let bar = regs.size();
    let mut seen = HashSet::new();
    let mut blocks: Vec<BlockInfo> = Vec::new();
    let mut offset = ident::BASE;
    loop {
        if blocks.len() >= MAX_BLOCKS || !seen.insert(offset) {
            return Err(DriverError::ChainLoop {
                offset,
                blocks: blocks.len(),
            });
        }
        let type_id = read_live(regs, offset + header::TYPE.offset)?;
        if blocks.is_empty() {
            // The identity block: check the magic before trusting anything else.
            let magic = read_live(regs, offset + ident::MAGIC.offset)?;
            if type_id != regs::block_type::IDENT || magic != ident::values::MAGIC {
                return Err(DriverError::WrongMagic {
                    offset: offset + ident::MAGIC.offset,
                    found: magic,
                    expected: ident::values::MAGIC,
                });
            }
        }
        if type_id == UNMAPPED_PATTERN || type_id == 0 {
            return Err(DriverError::UnknownBlock { offset, type_id });
        }
        let version = read_live(regs, offset + header::VERSION.offset)?;
        let next = read_live(regs, offset + header::NEXT.offset)?;
        let major = header::version::MAJOR.get(version) as u16;
        let minor = header::version::MINOR.get(version) as u16;
        let desc = regs::block_by_type(type_id);
        if let Some(d) = desc {
            if major != d.major {
                return Err(DriverError::UnsupportedVersion {
                    block: d.prefix,
                    major,
                    supported: d.major,
                });
            }
        }
        blocks.push(BlockInfo {
            offset,
            type_id,
            name: desc.map_or("UNKNOWN", |d| d.prefix),
            major,
            minor,
            next,
        });
        if next == 0 {
            return Ok(blocks);
        }
        if !next.is_multiple_of(4) || u64::from(next) + 4 * 3 > bar {
            return Err(DriverError::BadNextPointer {
                from: offset,
                next,
                bar_bytes: bar,
            });
        }
        offset = next;
    }
}

/// Read every register of `block` (its header only when the driver does not
/// know the block's type). Reads have no side effects on this card.
///
/// # Errors
/// A HAL error.
pub fn read_block_regs<R: RegIo + ?Sized>(
    regs: &mut R,
    block: &BlockInfo,
) -> Result<Vec<RegValue>, DriverError> {
    let list: &[regs::Reg] = match block.desc() {
        Some(d) => d.regs,
        None => header::ALL,
    };
    let mut out = Vec::new();
    for r in list {
        for e in 0..r.count {
            let offset = block.offset + r.at(e);
            out.push(RegValue {
                block: block.name,
                name: r.name,
                element: (r.count > 1).then_some(e),
                offset,
                access: match r.access {
                    Access::RO => "RO",
                    Access::RW => "RW",
                    Access::WO => "WO",
                },
                value: read(regs, offset)?,
                doc: r.doc,
            });
        }
    }
    Ok(out)
}
