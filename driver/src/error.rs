//! The driver's error type.

use std::fmt;

use hal::regs::cam;
use hal::{BarOffset, HalError};
use serde::Serialize;

use crate::key::KeyError;
use crate::types::{CamIndex, DistributionId};

crate::code_enum! {
    /// A CAM command, as written to the CAM block's `CMD` register.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub enum CamCmd: u32 {
        /// Write an entry at `INDEX`.
        Write = cam::cmd::WRITE,
        /// Invalidate the entry at `INDEX`.
        Invalidate = cam::cmd::INVALIDATE,
        /// Read the entry at `INDEX`.
        Read = cam::cmd::READ,
        /// Search for `KEY`.
        Search = cam::cmd::SEARCH,
        /// Invalidate every entry.
        FlushAll = cam::cmd::FLUSH_ALL,
        /// Invalidate the entries whose identifier is in `DID_BITMAP`.
        FlushDid = cam::cmd::FLUSH_DID,
        /// Read and clear 32 hit bits.
        HitRc = cam::cmd::HIT_RC,
        /// Write an entry at the lowest free index.
        Insert = cam::cmd::INSERT,
        /// Store `MASK` as mask profile `INDEX`.
        SetProfile = cam::cmd::SET_PROFILE,
        /// Batch entry: write an entry at `INDEX` with a profile's mask.
        WriteP = cam::cmd::WRITE_P,
        /// Batch entry: insert an entry with a profile's mask.
        InsertP = cam::cmd::INSERT_P,
        /// Zero the batch counters.
        BatchStart = cam::cmd::BATCH_START,
    }
}

/// The register map's name of `code` in `table`, without the group's `prefix`
/// (`CAM_CMD_FLUSH_ALL` is `FLUSH_ALL`); every variant of [`CamCmd`] and every
/// known [`CmdErrorCode`] has one.
fn map_name(table: &'static [(&'static str, u32)], prefix: &str, code: u32) -> &'static str {
    table
        .iter()
        .find(|&&(_, v)| v == code)
        .and_then(|(name, _)| name.strip_prefix(prefix))
        .unwrap_or("?")
}

impl fmt::Display for CamCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(map_name(cam::cmd::ALL, "CAM_CMD_", self.code()))
    }
}

crate::code_enum! {
    /// An error code the card reported in `STATUS.ERR` (a non-OK value).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
    pub enum CmdErrorCode: u32 {
        /// A code this driver does not know.
        other Other,
        /// `INDEX` beyond the depth.
        BadIndex = cam::err::BAD_INDEX,
        /// `CMD` written while a command was running.
        Busy = cam::err::BUSY,
        /// Unknown command code.
        UnknownCmd = cam::err::UNKNOWN_CMD,
        /// `INSERT` found no free entry.
        Full = cam::err::FULL,
        /// Mask profile number beyond `CAP_PROFILES`.
        BadProfile = cam::err::BAD_PROFILE,
    }
}

impl fmt::Display for CmdErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(c) => write!(f, "unknown error code {c}"),
            known => f.write_str(map_name(cam::err::ALL, "CAM_ERR_", known.code())),
        }
    }
}

/// Everything that can go wrong talking to the card.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The register backend failed.
    #[error("register access failed: {0}")]
    Hal(#[from] HalError),
    /// A register read all ones: the device has left the bus.
    #[error(
        "device gone: register {offset} read 0xffffffff (device removed, reset or powered off?)"
    )]
    DeviceGone {
        /// The register that read all ones.
        offset: BarOffset,
    },
    /// The identity block's magic is wrong: not our card, or the wrong BAR.
    #[error("wrong magic 0x{found:08x} at offset 0x{offset:x} (expected 0x{expected:08x}): not a state-offload card")]
    WrongMagic {
        /// Where the magic was read.
        offset: u32,
        /// What was read.
        found: u32,
        /// What it should be.
        expected: u32,
    },
    /// A block's major version is not the one this driver understands.
    #[error("block {block} has major version {major}, this driver understands only {supported}: update the driver")]
    UnsupportedVersion {
        /// The block's name.
        block: &'static str,
        /// Its major version.
        major: u16,
        /// The major version this driver supports.
        supported: u16,
    },
    /// Something that is not a block header where the chain points.
    #[error("no block header at offset 0x{offset:x} (TYPE reads 0x{type_id:08x})")]
    UnknownBlock {
        /// Where the chain pointed.
        offset: u32,
        /// What `TYPE` read there.
        type_id: u32,
    },
    /// The chain of blocks points back at itself or is longer than
    /// [`hal::regs::MAX_BLOCKS`].
    #[error("register block chain loops at offset 0x{offset:x} after {blocks} blocks")]
    ChainLoop {
        /// The offset seen twice (or the one past the limit).
        offset: u32,
        /// Blocks walked before.
        blocks: usize,
    },
    /// A `NEXT` pointer that is misaligned or outside the BAR.
    #[error("block at 0x{from:x} has a bad NEXT pointer 0x{next:x} (BAR is {bar_bytes} bytes)")]
    BadNextPointer {
        /// The block holding the pointer.
        from: u32,
        /// The pointer.
        next: u32,
        /// BAR size.
        bar_bytes: u64,
    },
    /// A block the driver needs is not in the chain.
    #[error("the card has no {block} block")]
    MissingBlock {
        /// The block's name.
        block: &'static str,
    },
    /// A capability register holds a value the driver cannot work with.
    #[error("capability {name} = {value} is not supported ({expected})")]
    BadCapability {
        /// Register name.
        name: &'static str,
        /// Its value.
        value: u32,
        /// What the driver accepts.
        expected: &'static str,
    },
    /// The scratch register did not hold what was written: the bus is broken.
    #[error("scratch register test failed: wrote 0x{wrote:08x}, read 0x{read:08x}")]
    ScratchMismatch {
        /// Written value.
        wrote: u32,
        /// Read value.
        read: u32,
    },
    /// A command did not finish within the poll limit.
    #[error("CAM command {cmd} still busy after {polls} status polls")]
    Timeout {
        /// The command.
        cmd: CamCmd,
        /// Polls made.
        polls: u32,
    },
    /// The card finished a command with an error code.
    #[error("CAM command {cmd} failed: {code}")]
    CommandError {
        /// The command.
        cmd: CamCmd,
        /// The card's error code.
        code: CmdErrorCode,
    },
    /// `STATUS` holds a value no working card produces (reserved bits set, or
    /// neither BUSY nor DONE after a command).
    #[error("CAM command {cmd}: implausible STATUS 0x{status:08x}")]
    BadStatus {
        /// The command.
        cmd: CamCmd,
        /// The status read.
        status: u32,
    },
    /// No free entry: the CAM holds `depth` entries already.
    #[error("CAM full: all {depth} entries are in use")]
    CamFull {
        /// The CAM depth.
        depth: u32,
    },
    /// An index beyond the CAM depth.
    #[error("CAM index {index} is out of range (depth {depth})")]
    BadIndex {
        /// The index.
        index: CamIndex,
        /// The depth.
        depth: u32,
    },
    /// Inserting a key (key and mask) that is already present.
    #[error("key already present at CAM index {index}")]
    KeyExists {
        /// Where it is.
        index: CamIndex,
    },
    /// Overwriting a key that is not present.
    #[error("key not present in the CAM")]
    KeyNotFound,
    /// A distribution identifier wider than the card (or the flush bitmap)
    /// stores: the driver refuses it instead of truncating it.
    #[error("distribution identifier {did} does not fit the card's {bits}-bit identifiers")]
    DidTooWide {
        /// The identifier.
        did: DistributionId,
        /// How many identifier bits there are.
        bits: u32,
    },
    /// A key that cannot be encoded.
    #[error("bad key: {0}")]
    Key(#[from] KeyError),
    /// After a soft reset the card still reports valid entries.
    #[error("soft reset failed: OCCUPANCY reads {occupancy} afterwards")]
    ResetFailed {
        /// What `OCCUPANCY` read.
        occupancy: u32,
    },
    /// A packet port request the card cannot take, or a port command that failed.
    #[error("packet port: {what}")]
    Port {
        /// What went wrong, and the fix where there is one.
        what: String,
    },
    /// Commands of a batch install failed or went missing on the card
    /// ([`crate::Card::install_batch`]); the driver has re-read the card.
    #[error("batch install: {failed} of {sent} entry commands failed or went missing (first: position {first}, {code})")]
    BatchFailed {
        /// Entry commands the driver sent.
        sent: u32,
        /// Those that failed (`BATCH_ERRS`) or never ran (`sent - BATCH_DONE`).
        failed: u32,
        /// Position in the batch of the first failed one (`BATCH_ERR.POS`).
        first: u32,
        /// Its error code.
        code: CmdErrorCode,
    },
    /// The card and the driver's shadow of it disagree.
    #[error("card and driver disagree at CAM index {index}: {detail}")]
    Inconsistent {
        /// The entry.
        index: CamIndex,
        /// What differs.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_error_codes_show_their_register_map_names() {
        let cmds = [
            (CamCmd::Write, "WRITE"),
            (CamCmd::Invalidate, "INVALIDATE"),
            (CamCmd::Read, "READ"),
            (CamCmd::Search, "SEARCH"),
            (CamCmd::FlushAll, "FLUSH_ALL"),
            (CamCmd::FlushDid, "FLUSH_DID"),
            (CamCmd::HitRc, "HIT_RC"),
            (CamCmd::Insert, "INSERT"),
            (CamCmd::SetProfile, "SET_PROFILE"),
            (CamCmd::WriteP, "WRITE_P"),
            (CamCmd::InsertP, "INSERT_P"),
            (CamCmd::BatchStart, "BATCH_START"),
        ];
        for (c, name) in cmds {
            assert_eq!(c.to_string(), name, "{c:?}");
        }
        let errs = [
            (CmdErrorCode::BadIndex, "BAD_INDEX"),
            (CmdErrorCode::Busy, "BUSY"),
            (CmdErrorCode::UnknownCmd, "UNKNOWN_CMD"),
            (CmdErrorCode::Full, "FULL"),
            (CmdErrorCode::BadProfile, "BAD_PROFILE"),
            (CmdErrorCode::Other(1), "unknown error code 1"),
            (CmdErrorCode::Other(0), "unknown error code 0"),
        ];
        for (e, name) in errs {
            assert_eq!(e.to_string(), name, "{e:?}");
        }
    }
}
