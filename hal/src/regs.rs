//! The card's register map: the one source of truth.
//!
//! BAR0 is a chain of self-describing register blocks, each starting with the
//! same three header registers (type, version, next pointer). The identity
//! block sits at offset 0; the driver finds every other block by walking the
//! `NEXT` pointers, so nothing but the identity block's place is fixed.
//!
//! The RTL does not keep its own copy of any number below: it includes
//! `hdl/generated/regmap.vh`, produced by [`verilog_header`]. The test
//! `generated_header_is_current` fails when the two drift apart; regenerate with
//! `REGMAP_BLESS=1 cargo test -p hal generated_header_is_current`.
//!
//! Conventions every block follows:
//! * all registers are 32 bits wide and 32-bit aligned;
//! * reads of an offset no block maps return [`UNMAPPED_PATTERN`]; writes to it
//!   are dropped;
//! * a read of `0xFFFF_FFFF` from the identity block means the device is gone;
//! * commands: stage the data registers, write the block's `CMD` register, poll
//!   `STATUS` until `BUSY` clears, then read `ERR`.

use std::fmt::Write as _;

/// How software may access a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read only; writes are dropped.
    RO,
    /// Read and write.
    RW,
    /// Write only; reads return 0. Key material lives only in such registers.
    WO,
}

/// One register (or an array of `count` consecutive registers) of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    /// Name, as in the datasheet and the Verilog header.
    pub name: &'static str,
    /// Byte offset from the start of the block.
    pub offset: u32,
    /// Access rule.
    pub access: Access,
    /// Number of consecutive 32-bit registers (1 for a plain register).
    pub count: u32,
    /// One-line description.
    pub doc: &'static str,
}

impl Reg {
    /// Offset of element `i` of a register array, relative to the block.
    #[must_use]
    pub const fn at(&self, i: u32) -> u32 {
        self.offset + 4 * i
    }
}

/// A bit field of a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Name of the field.
    pub name: &'static str,
    /// Least significant bit.
    pub lsb: u32,
    /// Width in bits.
    pub width: u32,
}

impl Field {
    /// Extract this field from a register value.
    #[must_use]
    pub const fn get(&self, v: u32) -> u32 {
        (v >> self.lsb) & self.mask()
    }
    /// `v` placed into this field's position.
    #[must_use]
    pub const fn put(&self, v: u32) -> u32 {
        (v & self.mask()) << self.lsb
    }
    /// Mask of the field's width (not shifted).
    #[must_use]
    pub const fn mask(&self) -> u32 {
        if self.width >= 32 {
            u32::MAX
        } else {
            (1u32 << self.width) - 1
        }
    }
}

/// A block's static description, as the Verilog generator and `hwctl regs`
/// see it.
#[derive(Clone, Copy, Debug)]
pub struct BlockDesc {
    /// Prefix of every Verilog name of the block (`CAM`, `IDENT`, ...).
    pub prefix: &'static str,
    /// The value of its `TYPE` header register.
    pub type_id: u32,
    /// The major version the driver in this tree understands.
    pub major: u16,
    /// The minor version this tree's RTL and model implement.
    pub minor: u16,
    /// Where this tree's RTL and model place the block.
    pub base: u32,
    /// Size of the block's window in bytes.
    pub span: u32,
    /// Its registers, in offset order.
    pub regs: &'static [Reg],
    /// Its bit fields: (register name, fields).
    pub fields: &'static [(&'static str, &'static [Field])],
    /// Its named constants (command codes, error codes, ...).
    pub consts: &'static [(&'static str, u32)],
}

macro_rules! registers {
    // The three header registers every block starts with, then the block's own.
    (header $ty:ident, next: $next:literal; $($body:tt)*) => {
        registers! {
            #[doc = concat!(" Block type id ([`super::block_type::", stringify!($ty), "`]).")]
            TYPE @ 0x00 RO;
            /// Block version.
            VERSION @ 0x04 RO;
            #[doc = concat!(" ", $next)]
            NEXT @ 0x08 RO;
            $($body)*
        }
    };
    ($( $(#[doc = $doc:expr])* $reg:ident @ $off:literal $acc:ident $([$count:literal])? ; )*) => {
        $(
            $(#[doc = $doc])*
            pub const $reg: $crate::regs::Reg = $crate::regs::Reg {
                name: stringify!($reg),
                offset: $off,
                access: $crate::regs::Access::$acc,
                count: registers!(@count $($count)?),
                doc: concat!($($doc),*),
            };
        )*
        /// Every register of the block, in offset order.
        pub const ALL: &[$crate::regs::Reg] = &[$($reg),*];
    };
    (@count) => { 1 };
    (@count $c:literal) => { $c };
}

/// The constants every block module starts with (`BASE`, `SPAN`, `MAJOR`,
/// `MINOR`) and the block's [`BlockDesc`] as `DESC`, its `TYPE` value from
/// [`block_type`] and its Verilog prefix from the same name.
macro_rules! block {
    (
        $ty:ident at $base:literal, span $span:literal, major $major:literal, minor $minor:literal;
        fields: $fields:expr,
        consts: $consts:expr $(,)?
    ) => {
        /// Where this tree's RTL and model place the block.
        pub const BASE: u32 = $base;
        /// Size of the block's window in bytes.
        pub const SPAN: u32 = $span;
        /// Major version understood.
        pub const MAJOR: u16 = $major;
        /// Minor version implemented.
        pub const MINOR: u16 = $minor;
        /// The block's description, as [`super::BLOCKS`] lists it.
        pub const DESC: $crate::regs::BlockDesc = $crate::regs::BlockDesc {
            prefix: stringify!($ty),
            type_id: $crate::regs::block_type::$ty,
            major: MAJOR,
            minor: MINOR,
            base: BASE,
            span: SPAN,
            regs: ALL,
            fields: $fields,
            consts: $consts,
        };
    };
}

/// The `STATUS` fields of a block that runs commands: `BUSY`, `DONE`, the
/// block's own flags, then `ERR`.
macro_rules! status_fields {
    ($($own:tt)*) => {
        fields!(status for "STATUS" {
            /// A command is running.
            BUSY: 0, 1;
            /// The last command has completed (cleared by the next CMD write).
            DONE: 1, 1;
            $($own)*
            /// Error code of the last command, see [`super::err`].
            ERR: 8, 8;
        });
    };
}

macro_rules! fields {
    ($modname:ident for $reg:literal { $( $(#[doc = $doc:literal])* $f:ident : $lsb:literal , $w:literal ; )* }) => {
        #[doc = concat!("Bit fields of the `", $reg, "` register.")]
        pub mod $modname {
            $(
                $(#[doc = $doc])*
                pub const $f: $crate::regs::Field = $crate::regs::Field { name: stringify!($f), lsb: $lsb, width: $w };
            )*
            /// Every field of the register.
            pub const ALL: &[$crate::regs::Field] = &[$($f),*];
        }
    };
}

macro_rules! constants {
    ($modname:ident : $vprefix:literal { $( $(#[doc = $doc:literal])* $c:ident = $v:expr ; )* }) => {
        #[doc = concat!("Named values (`", $vprefix, "_*` in Verilog).")]
        pub mod $modname {
            $(
                $(#[doc = $doc])*
                pub const $c: u32 = $v;
            )*
            /// Every value with its Verilog name.
            pub const ALL: &[(&str, u32)] = &[$((concat!($vprefix, "_", stringify!($c)), $c)),*];
        }
    };
}

/// Size of BAR0 in bytes.
pub const BAR_SIZE: u32 = 0x1_0000;
/// What a read of an offset that no block maps returns.
pub const UNMAPPED_PATTERN: u32 = 0xBAAD_F00D;
/// What every read returns once the device has fallen off the bus.
pub const DEVICE_GONE: u32 = 0xFFFF_FFFF;
/// The longest chain of blocks the driver will walk before it calls the
/// chain a loop.
pub const MAX_BLOCKS: usize = 16;

/// Registers every block starts with.
pub mod header {
    registers! {
        /// Block type id.
        TYPE @ 0x00 RO;
        /// Version: major in bits 31:16, minor in bits 15:0.
        VERSION @ 0x04 RO;
        /// Absolute BAR offset of the next block; 0 ends the chain.
        NEXT @ 0x08 RO;
    }
    fields!(version for "VERSION" {
        /// Minor version: additions only.
        MINOR: 0, 16;
        /// Major version: the driver refuses one it does not know.
        MAJOR: 16, 16;
    });
}

/// Block type ids (the value of each block's `TYPE` register).
pub mod block_type {
    /// Identity block.
    pub const IDENT: u32 = 0x4944_4E54; // "IDNT"
    /// Ternary CAM block.
    pub const CAM: u32 = 0x5443_414D; // "TCAM"
    /// Security-association table block.
    pub const SA: u32 = 0x5341_5442; // "SATB"
    /// AES-GCM ESP engine block.
    pub const ESP: u32 = 0x4553_5045; // "ESPE"
    /// Packet port block: the data path.
    pub const PORT: u32 = 0x504B_5450; // "PKTP"
}

/// Identity block, always at offset 0.
pub mod ident {
    block! {
        IDENT at 0x0000, span 0x1000, major 1, minor 0;
        fields: &[("CONTROL", control::ALL)],
        consts: values::ALL,
    }
    registers! {
        header IDENT, next: "Offset of the next block.";
        /// Card magic ([`values::MAGIC`]).
        MAGIC @ 0x0C RO;
        /// Build id of the bitstream or model (a short git hash or date code).
        BUILD_ID @ 0x10 RO;
        /// Scratch register for bus tests; cleared by reset.
        SCRATCH @ 0x14 RW;
        /// Control: write [`control::SOFT_RESET`] to reset every block. Reads 0.
        CONTROL @ 0x18 WO;
        /// Size of BAR0 in bytes.
        BAR_BYTES @ 0x1C RO;
    }
    fields!(control for "CONTROL" {
        /// Reset every block to its power-on state.
        SOFT_RESET: 0, 1;
    });
    constants!(values : "IDENT" {
        /// Card magic.
        MAGIC = 0x5354_4331; // "STC1"
        /// BUILD_ID of the simulated cards (reference model and RTL default).
        BUILD_ID_SIM = 0x2026_1121;
    });
}

/// Ternary CAM block.
///
/// Key layout (320 bits, `KEY[0]` holds bits 31:0): see the driver's key
/// encoder. A stored entry matches a search key when
/// `((search ^ entry.key) & entry.mask) == 0` over all 320 bits; the lowest
/// matching index wins.
///
/// Major version 2: 12-bit identifiers, `DID_BITMAP` of 128 words at 0x200.
/// Minor 1: mask profiles and the batch entry commands (`SET_PROFILE`,
/// `WRITE_P`, `INSERT_P`, `BATCH_START`, `CAP_PROFILES`, `BATCH_*`).
pub mod cam {
    block! {
        CAM at 0x1000, span 0x1000, major 2, minor 1;
        fields: &[("STATUS", status::ALL), ("CMD", cmd_word::ALL), ("BATCH_ERR", batch_err::ALL)],
        consts: &[],
    }
    /// Key width in 32-bit words.
    pub const KEY_WORDS: u32 = 10;
    /// Key width in bits.
    pub const KEY_BITS: u32 = KEY_WORDS * 32;
    /// Distribution-identifier bitmap width in 32-bit words (4,096 identifiers).
    pub const DID_WORDS: u32 = 128;
    /// Width of an entry's distribution identifier in bits.
    pub const DID_BITS: u32 = 12;
    /// Data-path lookup latency of this tree's RTL, in clock cycles.
    pub const LOOKUP_LATENCY: u32 = 4;
    /// Mask profiles of this tree's model and RTL default (`CAP_PROFILES`).
    pub const PROFILES: u32 = 16;
    /// The first minor version with mask profiles and batch entry commands.
    pub const MINOR_BATCH: u16 = 1;
    registers! {
        header CAM, next: "Offset of the next block ([`super::sa::BASE`]).";
        /// Capability: number of entries.
        CAP_DEPTH @ 0x0C RO;
        /// Capability: key width in bits.
        CAP_KEY_BITS @ 0x10 RO;
        /// Capability: result width in bits.
        CAP_RESULT_BITS @ 0x14 RO;
        /// Capability: distribution-identifier width in bits.
        CAP_DID_BITS @ 0x18 RO;
        /// Capability: data-path lookup latency in clock cycles.
        CAP_LOOKUP_LATENCY @ 0x1C RO;
        /// Number of valid entries.
        OCCUPANCY @ 0x20 RO;
        /// Command register: writing a [`cmd`] code starts the command.
        CMD @ 0x24 RW;
        /// Status: see [`status`].
        STATUS @ 0x28 RO;
        /// Entry index argument; result index of SEARCH and INSERT.
        INDEX @ 0x2C RW;
        /// Result word of an entry (staged for WRITE/INSERT, loaded by READ/SEARCH).
        RESULT @ 0x30 RW;
        /// Distribution identifier of an entry (low 12 bits stored).
        DID @ 0x34 RW;
        /// Hit bits returned by HIT_RC: bit i is entry 32*INDEX+i.
        HITS @ 0x38 RO;
        /// Key words, `KEY[0]` = key bits 31:0.
        KEY @ 0x40 RW [10];
        /// Mask words: a 1 bit takes part in the comparison.
        MASK @ 0x80 RW [10];
        /// Capability (minor 1): number of mask profiles.
        CAP_PROFILES @ 0xC0 RO;
        /// Batch entry commands (`WRITE_P`, `INSERT_P`) completed since `BATCH_START`.
        BATCH_DONE @ 0xC4 RO;
        /// Batch entry commands that ended with an error since `BATCH_START`.
        BATCH_ERRS @ 0xC8 RO;
        /// The first failed batch entry command since `BATCH_START`: see [`batch_err`].
        BATCH_ERR @ 0xCC RO;
        /// Data-path lookups since reset.
        DP_LOOKUPS @ 0xE0 RO;
        /// Data-path lookups that hit since reset.
        DP_HITS @ 0xE4 RO;
        /// Commands completed since reset.
        CMD_COUNT @ 0xE8 RO;
        /// Commands that ended with an error since reset.
        ERR_COUNT @ 0xEC RO;
        /// Distribution-identifier bitmap for FLUSH_DID: bit d%32 of word d/32 = identifier d.
        DID_BITMAP @ 0x200 RW [128];
    }
    status_fields! {
    /// SEARCH found a matching entry.
    MATCH: 2, 1;
    /// READ: the entry is valid.
    VALID: 3, 1;
    /// READ: the entry's hit bit.
    HIT: 4, 1;
    }
    constants!(cmd : "CAM_CMD" {
        /// Write KEY/MASK/RESULT/DID into entry INDEX and make it valid, all at once.
        WRITE = 1;
        /// Make entry INDEX invalid (and clear its hit bit).
        INVALIDATE = 2;
        /// Load entry INDEX into KEY/MASK/RESULT/DID; STATUS.VALID and .HIT tell its state.
        READ = 3;
        /// Look up KEY: on a match INDEX/RESULT/DID are loaded, STATUS.MATCH set and the
        /// entry's hit bit set; on a miss INDEX reads 0xFFFFFFFF.
        SEARCH = 4;
        /// Invalidate every entry.
        FLUSH_ALL = 5;
        /// Invalidate every valid entry whose identifier is set in DID_BITMAP.
        FLUSH_DID = 6;
        /// Return the hit bits of entries 32*INDEX..32*INDEX+31 in HITS and clear them.
        HIT_RC = 7;
        /// Write KEY/MASK/RESULT/DID into the lowest invalid entry; its index comes back in INDEX.
        INSERT = 8;
        /// Store MASK as mask profile INDEX.
        SET_PROFILE = 9;
        /// Batch entry: WRITE with the mask of profile `CMD.PROFILE` instead of MASK.
        WRITE_P = 10;
        /// Batch entry: INSERT with the mask of profile `CMD.PROFILE` instead of MASK.
        INSERT_P = 11;
        /// Zero BATCH_DONE, BATCH_ERRS and BATCH_ERR.
        BATCH_START = 12;
    });
    fields!(cmd_word for "CMD" {
        /// The command code (for `WRITE_P` and `INSERT_P`; every other code is the whole word).
        CODE: 0, 8;
        /// The mask profile of a `WRITE_P` or `INSERT_P`.
        PROFILE: 8, 8;
    });
    fields!(batch_err for "BATCH_ERR" {
        /// Position of the failed command in the batch (0 = the first after `BATCH_START`).
        POS: 0, 24;
        /// Its error code, see [`super::err`].
        CODE: 24, 8;
    });
    /// The `CMD` word of batch entry command `code` (`WRITE_P`, `INSERT_P`) with mask
    /// profile `profile`.
    #[must_use]
    pub const fn batch_cmd(code: u32, profile: u32) -> u32 {
        cmd_word::CODE.put(code) | cmd_word::PROFILE.put(profile)
    }
    constants!(err : "CAM_ERR" {
        /// Success.
        OK = 0;
        /// INDEX beyond the depth.
        BAD_INDEX = 1;
        /// CMD written while a command was running; the new command was dropped.
        BUSY = 2;
        /// Unknown command code.
        UNKNOWN_CMD = 3;
        /// INSERT found no free entry.
        FULL = 4;
        /// Mask profile number beyond `CAP_PROFILES`.
        BAD_PROFILE = 5;
    });
}

/// Security-association table block: the SA contexts of the ESP engine.
///
/// Each slot holds SPI, configuration (direction, mode, ESN, key size, ICV
/// length), a 4-byte salt and an AES key, the outbound sequence number or
/// the inbound replay window (top and 64-bit bitmap), packet/byte counters and
/// a valid bit. Key and salt registers are write-only, and no command ever
/// copies key material back into a readable register. Commands follow the CAM's
/// protocol (stage, write `CMD`, poll `STATUS`).
pub mod sa {
    block! {
        SA at 0x2000, span 0x1000, major 1, minor 0;
        fields: &[
            ("STATUS", status::ALL),
            ("CONFIG", config::ALL),
            ("CAP_FEATURES", cap::ALL),
        ],
        consts: &[],
    }
    /// Number of SA slots of this tree's RTL and model.
    pub const SLOTS: u32 = 256;
    /// Replay window width in packets.
    pub const WINDOW: u32 = 64;
    /// Key staging width in 32-bit words.
    pub const KEY_WORDS: u32 = 8;
    registers! {
        header SA, next: "Offset of the next block ([`super::esp::BASE`]).";
        /// Capability: number of SA slots.
        CAP_SLOTS @ 0x0C RO;
        /// Capability: replay window width in packets.
        CAP_WINDOW @ 0x10 RO;
        /// Capability: supported features, see [`cap`].
        CAP_FEATURES @ 0x14 RO;
        /// Number of valid slots.
        OCCUPANCY @ 0x18 RO;
        /// Command register: writing a [`cmd`] code starts the command.
        CMD @ 0x1C RW;
        /// Status: see [`status`].
        STATUS @ 0x20 RO;
        /// Slot argument of every command.
        SLOT @ 0x24 RW;
        /// SPI (staged for WRITE, loaded by READ).
        SPI @ 0x28 RW;
        /// Configuration, see [`config`] (staged for WRITE, loaded by READ; only the
        /// field bits are stored).
        CONFIG @ 0x2C RW;
        /// RFC 4106 salt (staged for WRITE; cleared by it). Reads 0.
        SALT @ 0x30 WO;
        /// Sequence number bits 31:0: outbound, the last one sent; inbound, the window top.
        SEQ_LO @ 0x34 RW;
        /// Sequence number bits 63:32.
        SEQ_HI @ 0x38 RW;
        /// Replay bitmap bits 31:0 (bit i: top - i was received).
        WIN_LO @ 0x3C RW;
        /// Replay bitmap bits 63:32.
        WIN_HI @ 0x40 RW;
        /// Packets processed, bits 31:0.
        PKTS_LO @ 0x44 RW;
        /// Packets processed, bits 63:32.
        PKTS_HI @ 0x48 RW;
        /// Payload bytes processed, bits 31:0.
        BYTES_LO @ 0x4C RW;
        /// Payload bytes processed, bits 63:32.
        BYTES_HI @ 0x50 RW;
        /// Inbound packets that failed authentication.
        AUTH_FAILS @ 0x54 RW;
        /// Inbound packets dropped as replays.
        REPLAYS @ 0x58 RW;
        /// Commands completed since reset.
        CMD_COUNT @ 0x5C RO;
        /// Commands that ended with an error since reset.
        ERR_COUNT @ 0x60 RO;
        /// AES key words (staged for WRITE; cleared by it), `KEY[0]` = key bytes 0..3,
        /// big-endian. AES-128 uses `KEY[0..4]`. Read 0.
        KEY @ 0x80 WO [8];
    }
    status_fields! {
    /// READ: the slot is valid.
    VALID: 3, 1;
    }
    fields!(config for "CONFIG" {
        /// 1 = outbound (encapsulate), 0 = inbound (decapsulate).
        OUTBOUND: 0, 1;
        /// 1 = tunnel mode, 0 = transport mode (kept for software; the engine treats both alike).
        TUNNEL: 1, 1;
        /// Extended sequence numbers.
        ESN: 2, 1;
        /// 1 = AES-256, 0 = AES-128.
        KEY256: 3, 1;
        /// ICV length in bytes: 8, 12 or 16.
        ICV_BYTES: 8, 5;
    });
    fields!(cap for "CAP_FEATURES" {
        /// AES-128-GCM.
        AES128: 0, 1;
        /// AES-256-GCM.
        AES256: 1, 1;
        /// Extended sequence numbers.
        ESN: 2, 1;
        /// 8-byte ICV.
        ICV8: 3, 1;
        /// 12-byte ICV.
        ICV12: 4, 1;
        /// 16-byte ICV.
        ICV16: 5, 1;
    });
    constants!(cmd : "SA_CMD" {
        /// Slot SLOT := {SPI, CONFIG, SALT, KEY, SEQ, WIN, counters}, valid; then SALT and KEY staging := 0.
        WRITE = 1;
        /// Slot SLOT invalid, its key and salt wiped.
        INVALIDATE = 2;
        /// SPI, CONFIG, SEQ, WIN and counters := slot SLOT's (never the key); STATUS.VALID := its valid bit.
        READ = 3;
        /// Slot SLOT's SEQ, WIN and counters := the staged ones (takeover); the slot must be valid.
        SET_STATE = 4;
        /// Every slot invalid, every key and salt wiped.
        FLUSH_ALL = 5;
    });
    constants!(err : "SA_ERR" {
        /// Success.
        OK = 0;
        /// SLOT beyond the slot count.
        BAD_SLOT = 1;
        /// CMD written while this block or the ESP engine was busy; the new command was dropped.
        BUSY = 2;
        /// Unknown command code.
        UNKNOWN_CMD = 3;
        /// SET_STATE on an invalid slot.
        NOT_VALID = 4;
        /// WRITE with an ICV length other than 8, 12 or 16.
        BAD_CONFIG = 5;
    });
}

/// AES-GCM ESP engine block: whole ESP packets through a packet buffer.
///
/// Buffer byte `i` is bits `31 - 8*(i%4) .. 24 - 8*(i%4)` of `BUF[i/4]` (the
/// first byte of a word is its most significant). ENCAP takes the payload at
/// byte 16 and leaves the ESP packet at byte 0; DECAP takes the ESP packet at
/// byte 0 and leaves the payload at byte 16. See `hdl/CARD.md`.
pub mod esp {
    block! {
        ESP at 0x3000, span 0x1000, major 1, minor 0;
        fields: &[("STATUS", status::ALL)],
        consts: &[],
    }
    /// Packet buffer size in bytes.
    pub const BUF_BYTES: u32 = 2048;
    /// Where ENCAP expects the payload and DECAP leaves it.
    pub const PAYLOAD_OFFSET: u32 = 16;
    registers! {
        header ESP, next: "Offset of the next block ([`super::port::BASE`]).";
        /// Capability: packet buffer size in bytes.
        CAP_BUF_BYTES @ 0x0C RO;
        /// Command register: writing a [`cmd`] code starts the command.
        CMD @ 0x10 RW;
        /// Status: see [`status`].
        STATUS @ 0x14 RO;
        /// SA slot to use.
        SLOT @ 0x18 RW;
        /// Input length in bytes; the output length once a command succeeds.
        LEN @ 0x1C RW;
        /// ENCAP: next-header value for the trailer; DECAP: the trailer's (low 8 bits stored).
        NEXT_HDR @ 0x20 RW;
        /// Full sequence number of the last packet, bits 31:0 (DECAP: also when it ended in
        /// REPLAY, AUTH or a padding error).
        SEQ_LO @ 0x24 RO;
        /// Full sequence number of the last packet, bits 63:32.
        SEQ_HI @ 0x28 RO;
        /// Commands completed since reset.
        CMD_COUNT @ 0x2C RO;
        /// Commands that ended with an error since reset.
        ERR_COUNT @ 0x30 RO;
        /// DECAPs that failed authentication since reset.
        AUTH_FAILS @ 0x34 RO;
        /// DECAPs dropped as replays since reset.
        REPLAYS @ 0x38 RO;
        /// Packet buffer words.
        BUF @ 0x800 RW [512];
    }
    status_fields! {}
    constants!(cmd : "ESP_CMD" {
        /// Encapsulate the LEN-byte payload at buffer byte 16 with outbound SA SLOT.
        ENCAP = 1;
        /// Decapsulate the LEN-byte ESP packet at buffer byte 0 with inbound SA SLOT.
        DECAP = 2;
    });
    constants!(err : "ESP_ERR" {
        /// Success.
        OK = 0;
        /// SLOT beyond the slot count, or the slot is not valid.
        BAD_SLOT = 1;
        /// CMD written while this block or the SA block was busy; the new command was dropped.
        BUSY = 2;
        /// Unknown command code.
        UNKNOWN_CMD = 3;
        /// ENCAP on an inbound SA or DECAP on an outbound one.
        WRONG_DIR = 4;
        /// DECAP: the packet's SPI is not the slot's.
        SPI_MISMATCH = 5;
        /// DECAP: too short or too long, or a bad pad length / padding after authentication.
        MALFORMED = 6;
        /// DECAP: the ICV did not verify.
        AUTH = 7;
        /// DECAP: a replay, or left of the window.
        REPLAY = 8;
        /// ENCAP: the sequence number space is exhausted.
        SEQ_EXHAUSTED = 9;
        /// ENCAP: the packet would not fit the buffer.
        TOO_LONG = 10;
    });
}

/// Packet port block: the card's data path (`hdl/CARD.md`, "Packet port block").
///
/// Frames enter on Ethernet port 0 (outside) or 1 (inside), or from the host transmit
/// window. The card parses each frame, computes its distribution identifier with the keyed
/// hash (`HASH_KEY`, write-only), drops frames of identifiers the node does not own
/// (`OWNED`), looks the flow up in the CAM through the data-path port and applies the
/// entry's action; what it cannot handle it queues for the host (`HRX_*`) with a reason.
/// Frame buffers use the ESP block's byte order: byte `i` is bits `31 - 8*(i%4) .. 24 -
/// 8*(i%4)` of word `i/4`.
pub mod port {
    block! {
        PORT at 0x4000, span 0x2000, major 1, minor 0;
        fields: &[
            ("STATUS", status::ALL),
            ("HRX_META", meta::ALL),
            ("HRX_OFFSETS", offsets::ALL),
        ],
        consts: &[],
    }
    /// Ethernet ports.
    pub const PORTS: u32 = 2;
    /// Longest frame the card takes, in bytes (longer ones are dropped `TOO_LONG`).
    pub const FRAME_BYTES: u32 = 2048;
    /// Frames the host receive queue holds.
    pub const HOSTQ_DEPTH: u32 = 8;
    /// Distribution identifiers the owned bitmap covers.
    pub const IDS: u32 = 4096;
    /// Words of the owned bitmap.
    pub const OWNED_WORDS: u32 = IDS / 32;
    /// Per-reason counters.
    pub const REASONS: u32 = 32;
    /// Extension headers an IPv6 walk follows before punting `EXT_HEADERS`.
    pub const V6_EXT_MAX: u32 = 4;
    registers! {
        header PORT, next: "Offset of the next block (0: end of chain).";
        /// Capability: Ethernet ports.
        CAP_PORTS @ 0x0C RO;
        /// Capability: longest frame in bytes.
        CAP_FRAME_BYTES @ 0x10 RO;
        /// Capability: host receive queue depth in frames.
        CAP_HOSTQ_DEPTH @ 0x14 RO;
        /// Capability: identifiers of the owned bitmap.
        CAP_IDS @ 0x18 RO;
        /// Identifier mask: identifier = hash & ID_MASK (low 12 bits stored; count - 1).
        ID_MASK @ 0x1C RW;
        /// Command register: writing a [`cmd`] code starts the command.
        CMD @ 0x20 RW;
        /// Status: see [`status`].
        STATUS @ 0x24 RO;
        /// Commands completed since reset.
        CMD_COUNT @ 0x28 RO;
        /// Commands that ended with an error since reset.
        ERR_COUNT @ 0x2C RO;
        /// SipHash key words: k0 = `HASH_KEY[1]:HASH_KEY[0]`, k1 = `HASH_KEY[3]:HASH_KEY[2]`.
        HASH_KEY @ 0x30 WO [4];
        /// Frames that entered the pipeline (both ports and host injections).
        RX_FRAMES @ 0x40 RO;
        /// Frames the card forwarded out of a port by itself (an entry's ACCEPT).
        FORWARDED @ 0x44 RO;
        /// Frames queued for the host.
        PUNTED @ 0x48 RO;
        /// Frames dropped (any drop reason).
        DROPPED @ 0x4C RO;
        /// Frames sent out of a port (forwarded by the card or sent by the host).
        TX_FRAMES @ 0x50 RO;
        /// Frames the host sent through SEND.
        HOST_SENT @ 0x54 RO;
        /// Frames waiting in the host receive queue.
        HRX_COUNT @ 0x60 RO;
        /// Length of the queue's head frame (0: empty).
        HRX_LEN @ 0x64 RO;
        /// Metadata of the head frame: see [`meta`].
        HRX_META @ 0x68 RO;
        /// CAM index the head frame hit (0xFFFFFFFF: no hit).
        HRX_INDEX @ 0x6C RO;
        /// Result word of the entry the head frame hit (0: no hit).
        HRX_RESULT @ 0x70 RO;
        /// Parse offsets of the head frame: see [`offsets`].
        HRX_OFFSETS @ 0x74 RO;
        /// Length of the frame staged in HTX_BUF.
        HTX_LEN @ 0x80 RW;
        /// Where SEND puts the staged frame: see [`dest`] (low 2 bits stored).
        HTX_DEST @ 0x84 RW;
        /// Identifier whose counters DID_PKTS/DID_BYTES_* show (low 12 bits stored).
        DID_SEL @ 0x90 RW;
        /// Frames of identifier DID_SEL that reached the lookup.
        DID_PKTS @ 0x94 RO;
        /// Bytes of those frames, bits 31:0.
        DID_BYTES_LO @ 0x98 RO;
        /// Bits 63:32.
        DID_BYTES_HI @ 0x9C RO;
        /// CAM entry whose counters ENT_PKTS/ENT_BYTES_* show.
        ENT_SEL @ 0xA0 RW;
        /// Frames that hit entry ENT_SEL since the CAM last wrote it.
        ENT_PKTS @ 0xA4 RO;
        /// Bytes of those frames, bits 31:0.
        ENT_BYTES_LO @ 0xA8 RO;
        /// Bits 63:32.
        ENT_BYTES_HI @ 0xAC RO;
        /// Frames counted per reason code ([`reason`]).
        REASON_COUNT @ 0x100 RO [32];
        /// Owned identifiers: bit d%32 of word d/32 = identifier d.
        OWNED @ 0x200 RW [128];
        /// The host receive queue's head frame.
        HRX_BUF @ 0x800 RO [512];
        /// The frame SEND transmits.
        HTX_BUF @ 0x1000 RW [512];
    }
    status_fields! {}
    fields!(meta for "HRX_META" {
        /// Port the frame came in on (host injections: the port named by HTX_DEST).
        PORT: 0, 1;
        /// The frame came from the host (SEND into the pipeline).
        FROM_HOST: 1, 1;
        /// The identifier field is valid.
        DID_VALID: 2, 1;
        /// The frame hit a CAM entry.
        HIT: 3, 1;
        /// Why the frame was queued, see [`super::reason`].
        REASON: 8, 8;
        /// Distribution identifier.
        DID: 16, 12;
    });
    fields!(offsets for "HRX_OFFSETS" {
        /// Offset of the IP header (0: not reached).
        L3: 0, 12;
        /// Offset of the transport header (0: not reached).
        L4: 16, 12;
    });
    constants!(dest : "PORT_DEST" {
        /// Out of port 0.
        OUT0 = 0;
        /// Out of port 1.
        OUT1 = 1;
        /// Into the pipeline as if received on port 0.
        IN0 = 2;
        /// Into the pipeline as if received on port 1.
        IN1 = 3;
    });
    constants!(cmd : "PORT_CMD" {
        /// Drop the host receive queue's head frame.
        POP = 1;
        /// Send the HTX_LEN-byte frame of HTX_BUF as HTX_DEST says.
        SEND = 2;
    });
    constants!(err : "PORT_ERR" {
        /// Success.
        OK = 0;
        /// CMD written while a command was running; the new command was dropped.
        BUSY = 2;
        /// Unknown command code.
        UNKNOWN_CMD = 3;
        /// POP with an empty queue.
        EMPTY = 4;
        /// SEND with HTX_LEN 0 or above CAP_FRAME_BYTES.
        BAD_LEN = 5;
    });
    constants!(reason : "PORT_REASON" {
        /// Dropped: shorter than an Ethernet header (14 bytes).
        RUNT = 1;
        /// Dropped: longer than CAP_FRAME_BYTES.
        TOO_LONG = 2;
        /// Dropped: the identifier is not in OWNED.
        NOT_OWNED = 3;
        /// Dropped: the entry's action is DROP.
        RULE_DROP = 4;
        /// Dropped: to be queued for the host, but the queue was full.
        QUEUE_FULL = 5;
        /// Queued: not IPv4 or IPv6 (ARP, other ether types, stacked VLAN tags).
        NOT_IP = 6;
        /// Queued: a header is truncated or its length fields are wrong.
        MALFORMED = 7;
        /// Queued: an IPv4 fragment or an IPv6 fragment header.
        FRAGMENT = 8;
        /// Queued: more IPv6 extension headers than the card walks.
        EXT_HEADERS = 9;
        /// Queued: no flow the card keys on (ICMP other than echo, other protocols).
        NO_FLOW = 10;
        /// Queued after the lookup: TCP with SYN, FIN or RST.
        TCP_CONTROL = 11;
        /// Queued: no CAM entry matched.
        MISS = 12;
        /// Queued: the entry's action is TO_HOST.
        TO_HOST = 13;
        /// Queued: the entry's action is REJECT (the host answers).
        REJECT = 14;
        /// Queued: the entry's action is ENCRYPT or DECRYPT (not on this block's version).
        ESP = 15;
        /// Queued: the entry's action code is unknown.
        BAD_ACTION = 16;
    });
}

/// Every block this tree knows, in chain order.
pub const BLOCKS: &[BlockDesc] = &[ident::DESC, cam::DESC, sa::DESC, esp::DESC, port::DESC];

/// Named constant groups outside the block descriptions, with their Verilog names.
fn extra_constants() -> Vec<(&'static str, u32)> {
    let mut v = vec![
        ("BAR_SIZE", BAR_SIZE),
        ("UNMAPPED_PATTERN", UNMAPPED_PATTERN),
        ("BLOCK_TYPE_IDENT", block_type::IDENT),
        ("BLOCK_TYPE_CAM", block_type::CAM),
        ("CAM_KEY_WORDS", cam::KEY_WORDS),
        ("CAM_KEY_BITS", cam::KEY_BITS),
        ("CAM_DID_WORDS", cam::DID_WORDS),
        ("CAM_LOOKUP_LATENCY", cam::LOOKUP_LATENCY),
        ("CAM_PROFILES", cam::PROFILES),
    ];
    v.extend_from_slice(cam::cmd::ALL);
    v.extend_from_slice(cam::err::ALL);
    v.extend_from_slice(&[
        ("BLOCK_TYPE_SA", block_type::SA),
        ("BLOCK_TYPE_ESP", block_type::ESP),
        ("SA_SLOTS", sa::SLOTS),
        ("SA_WINDOW", sa::WINDOW),
        ("SA_KEY_WORDS", sa::KEY_WORDS),
        ("ESP_BUF_BYTES", esp::BUF_BYTES),
        ("ESP_PAYLOAD_OFFSET", esp::PAYLOAD_OFFSET),
    ]);
    v.extend_from_slice(sa::cmd::ALL);
    v.extend_from_slice(sa::err::ALL);
    v.extend_from_slice(esp::cmd::ALL);
    v.extend_from_slice(esp::err::ALL);
    v.extend_from_slice(&[
        ("BLOCK_TYPE_PORT", block_type::PORT),
        ("CAM_DID_BITS", cam::DID_BITS),
        ("PORT_FRAME_BYTES", port::FRAME_BYTES),
        ("PORT_HOSTQ_DEPTH", port::HOSTQ_DEPTH),
        ("PORT_IDS", port::IDS),
        ("PORT_OWNED_WORDS", port::OWNED_WORDS),
        ("PORT_REASONS", port::REASONS),
        ("PORT_V6_EXT_MAX", port::V6_EXT_MAX),
    ]);
    v.extend_from_slice(port::dest::ALL);
    v.extend_from_slice(port::cmd::ALL);
    v.extend_from_slice(port::err::ALL);
    v.extend_from_slice(port::reason::ALL);
    v
}

/// Look up a block description by its type id.
#[must_use]
pub fn block_by_type(type_id: u32) -> Option<&'static BlockDesc> {
    BLOCKS.iter().find(|b| b.type_id == type_id)
}

/// The Verilog header the RTL includes (`hdl/generated/regmap.vh`).
///
/// Offsets are emitted relative to their block (`CAM_R_STATUS`), block bases
/// absolute (`CAM_BASE`).
#[must_use]
pub fn verilog_header() -> String {
    let mut s = String::new();
    s.push_str("// Generated from hal/src/regs.rs (the register map's one source of truth).\n");
    s.push_str(
        "// Do not edit: run `REGMAP_BLESS=1 cargo test -p hal generated_header_is_current`.\n",
    );
    s.push_str("// Include inside a module body.\n");
    let p = |s: &mut String, name: &str, v: u32| {
        let _ = writeln!(s, "localparam [31:0] {name} = 32'h{v:08x};");
    };
    s.push_str("\n// ---- global ----\n");
    for (n, v) in extra_constants() {
        p(&mut s, n, v);
    }
    for b in BLOCKS {
        let _ = writeln!(s, "\n// ---- block {} ----", b.prefix);
        p(&mut s, &format!("{}_BASE", b.prefix), b.base);
        p(&mut s, &format!("{}_SPAN", b.prefix), b.span);
        p(
            &mut s,
            &format!("{}_VERSION", b.prefix),
            (u32::from(b.major) << 16) | u32::from(b.minor),
        );
        for r in b.regs {
            p(&mut s, &format!("{}_R_{}", b.prefix, r.name), r.offset);
            if r.count > 1 {
                p(&mut s, &format!("{}_R_{}_COUNT", b.prefix, r.name), r.count);
            }
        }
        for (reg, fs) in b.fields {
            for f in *fs {
                p(
                    &mut s,
                    &format!("{}_{}_{}_LSB", b.prefix, reg, f.name),
                    f.lsb,
                );
                p(
                    &mut s,
                    &format!("{}_{}_{}_W", b.prefix, reg, f.name),
                    f.width,
                );
            }
        }
        for (n, v) in b.consts {
            p(&mut s, n, *v);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_header_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../hdl/generated/regmap.vh");
        let want = verilog_header();
        if std::env::var_os("REGMAP_BLESS").is_some() {
            std::fs::write(path, &want).expect("write regmap.vh");
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "hdl/generated/regmap.vh is stale: run REGMAP_BLESS=1 cargo test -p hal generated_header_is_current"
        );
    }

    #[test]
    fn registers_are_aligned_disjoint_and_inside_their_block() {
        for b in BLOCKS {
            let mut spans: Vec<(u32, u32)> = b
                .regs
                .iter()
                .map(|r| (r.offset, r.offset + 4 * r.count))
                .collect();
            spans.sort_unstable();
            for r in b.regs {
                assert_eq!(r.offset % 4, 0, "{}.{} misaligned", b.prefix, r.name);
                assert!(
                    r.offset + 4 * r.count <= b.span,
                    "{}.{} outside block",
                    b.prefix,
                    r.name
                );
            }
            for w in spans.windows(2) {
                assert!(
                    w[0].1 <= w[1].0,
                    "{} registers overlap at 0x{:x}",
                    b.prefix,
                    w[1].0
                );
            }
            // The header registers are where every block has them.
            assert_eq!(b.regs[0].offset, header::TYPE.offset);
            assert_eq!(b.regs[1].offset, header::VERSION.offset);
            assert_eq!(b.regs[2].offset, header::NEXT.offset);
        }
        assert_eq!(cam::KEY.count, cam::KEY_WORDS);
        assert_eq!(cam::MASK.count, cam::KEY_WORDS);
        assert_eq!(cam::DID_BITMAP.count, cam::DID_WORDS);
        assert_eq!(sa::KEY.count, sa::KEY_WORDS);
        assert_eq!(esp::BUF.count * 4, esp::BUF_BYTES);
        // Key material is write-only.
        assert_eq!(sa::KEY.access, Access::WO);
        assert_eq!(sa::SALT.access, Access::WO);
    }

    #[test]
    fn blocks_do_not_overlap_and_fit_the_bar() {
        let mut prev_end = 0;
        for b in BLOCKS {
            assert!(b.base >= prev_end);
            prev_end = b.base + b.span;
        }
        assert!(prev_end <= BAR_SIZE);
    }

    #[test]
    fn field_get_put_round_trip() {
        let f = cam::status::ERR;
        assert_eq!(f.get(f.put(0x5A)), 0x5A);
        assert_eq!(f.put(0x1FF), 0xFF << 8);
        assert_eq!(header::version::MAJOR.get(0x0003_0001), 3);
    }
}
