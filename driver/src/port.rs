//! The packet port block (`hdl/CARD.md`, "Packet port block"): what a host does with the
//! card's data path. The card parses every frame of its two Ethernet ports, computes the
//! distribution identifier with the cluster's keyed hash, drops frames of identifiers the
//! node does not own, forwards CAM hits itself and queues the rest for the host. The host
//! reads that queue ([`PacketPort::receive`]) and sends frames out of a port or back into the
//! pipeline ([`PacketPort::send`]).
//!
//! Nothing here knows the backend: the same calls drive the reference model, the RTL under
//! Verilator and a PCIe card (where the register windows become DMA rings, see CARD.md).

use std::fmt;

use hal::regs::{block_type, port, Reg};
use hal::{BarOffset, RegIo};
use serde::Serialize;

use crate::card::Card;
use crate::key::ResultWord;
use crate::types::{CamIndex, DidSet, DistributionId};
use crate::DriverError;

/// Per-reason counters of the block (`REASON_COUNT[0..REASONS]`).
pub const REASONS: usize = port::REASONS as usize;

/// How many `STATUS` polls a port command may take before the card counts as hung.
const POLL_LIMIT: u32 = 100_000;

crate::code_enum! {
    /// Why the card dropped or queued a frame (`HRX_META.REASON`, `REASON_COUNT[i]`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Reason: u8 {
        /// A code this driver does not know.
        other Other,
        /// Dropped: shorter than an Ethernet header.
        Runt = 1,
        /// Dropped: longer than the card takes.
        TooLong = 2,
        /// Dropped: an identifier the node does not own.
        NotOwned = 3,
        /// Dropped: the entry's action is DROP.
        RuleDrop = 4,
        /// Dropped: the host queue was full.
        QueueFull = 5,
        /// Queued: not IPv4 or IPv6.
        NotIp = 6,
        /// Queued: broken headers.
        Malformed = 7,
        /// Queued: a fragment.
        Fragment = 8,
        /// Queued: too many IPv6 extension headers.
        ExtHeaders = 9,
        /// Queued: no flow the card keys on.
        NoFlow = 10,
        /// Queued: TCP with SYN, FIN or RST.
        TcpControl = 11,
        /// Queued: no entry matched.
        Miss = 12,
        /// Queued: the entry says TO_HOST.
        ToHost = 13,
        /// Queued: the entry says REJECT.
        Reject = 14,
        /// Queued: the entry says ENCRYPT or DECRYPT.
        Esp = 15,
        /// Queued: the entry's action is unknown.
        BadAction = 16,
    }
}

impl Reason {
    /// Whether the card drops (rather than queues) frames for this reason.
    #[must_use]
    pub fn is_drop(self) -> bool {
        matches!(self.code(), 1..=5)
    }

    /// Whether the card queues such frames before its CAM lookup (parse exceptions).
    #[must_use]
    pub fn before_lookup(self) -> bool {
        matches!(self.code(), 6..=10)
    }

    /// The name used in reports (`not_owned`, `miss`, ...).
    #[must_use]
    pub fn name(self) -> String {
        let n = match self {
            Reason::Other(c) => return format!("reason_{c}"),
            Reason::Runt => "runt",
            Reason::TooLong => "too_long",
            Reason::NotOwned => "not_owned",
            Reason::RuleDrop => "rule_drop",
            Reason::QueueFull => "queue_full",
            Reason::NotIp => "not_ip",
            Reason::Malformed => "malformed",
            Reason::Fragment => "fragment",
            Reason::ExtHeaders => "ext_headers",
            Reason::NoFlow => "no_flow",
            Reason::TcpControl => "tcp_control",
            Reason::Miss => "miss",
            Reason::ToHost => "to_host",
            Reason::Reject => "reject",
            Reason::Esp => "esp",
            Reason::BadAction => "bad_action",
        };
        n.to_owned()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Where [`PacketPort::send`] puts a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Out of port 0 or 1, as it is.
    Out(u8),
    /// Into the pipeline, as if it had arrived on port 0 or 1 (after the host installed its
    /// entry, say).
    In(u8),
}

/// A frame the card queued for the host, with what the card found out about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Punted {
    /// The frame.
    #[serde(skip)]
    pub frame: Vec<u8>,
    /// Port it arrived on.
    pub port: u8,
    /// It came from the host (SEND into the pipeline).
    pub from_host: bool,
    /// Why it was queued.
    pub reason: Reason,
    /// Its distribution identifier, when the card got that far.
    pub did: Option<DistributionId>,
    /// The entry it hit, when it hit one.
    pub hit: Option<(CamIndex, ResultWord)>,
    /// Offset of the IP header (0: not reached).
    pub l3: u16,
    /// Offset of the transport header (0: not reached).
    pub l4: u16,
}

/// The block's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortCounters {
    /// Frames that entered the pipeline.
    pub rx_frames: u32,
    /// Frames the card forwarded itself.
    pub forwarded: u32,
    /// Frames queued for the host.
    pub punted: u32,
    /// Frames dropped.
    pub dropped: u32,
    /// Frames sent out of a port.
    pub tx_frames: u32,
    /// Frames the host sent.
    pub host_sent: u32,
    /// Frames waiting for the host now.
    pub queued: u32,
    /// Frames counted per reason, by name (non-zero ones only).
    pub reasons: Vec<(String, u32)>,
}

impl PortCounters {
    /// The count of `reason`.
    #[must_use]
    pub fn reason(&self, reason: Reason) -> u32 {
        let name = reason.name();
        self.reasons
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    }

    /// Frames queued before the CAM lookup (parse exceptions).
    #[must_use]
    pub fn punted_before_lookup(&self) -> u32 {
        (6..=10u8).map(|c| self.reason(Reason::from_code(c))).sum()
    }
}

/// The packet port block of a probed card, borrowed from it.
pub struct PacketPort<'a, R: RegIo> {
    card: &'a mut Card<R>,
    base: u32,
    frame_bytes: u32,
}

impl<R: RegIo> fmt::Debug for PacketPort<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketPort")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl<R: RegIo> Card<R> {
    /// Whether the card has a packet port block.
    #[must_use]
    pub fn has_packet_port(&self) -> bool {
        self.blocks().iter().any(|b| b.type_id == block_type::PORT)
    }

    /// The card's packet port block.
    ///
    /// # Errors
    /// [`DriverError::MissingBlock`] for a card without one; register errors.
    pub fn port(&mut self) -> Result<PacketPort<'_, R>, DriverError> {
        let base = self
            .blocks()
            .iter()
            .find(|b| b.type_id == block_type::PORT)
            .map(|b| b.offset)
            .ok_or(DriverError::MissingBlock { block: "PORT" })?;
        let at = base + port::CAP_FRAME_BYTES.offset;
        let frame_bytes = self.regs_mut().read32(BarOffset(at))?;
        if frame_bytes == hal::regs::DEVICE_GONE {
            return Err(DriverError::DeviceGone {
                offset: BarOffset(at),
            });
        }
        let frame_bytes = frame_bytes.min(4 * port::HTX_BUF.count);
        Ok(PacketPort {
            card: self,
            base,
            frame_bytes,
        })
    }
}

impl<R: RegIo> PacketPort<'_, R> {
    fn rd(&mut self, r: Reg) -> Result<u32, DriverError> {
        self.rd_at(r, 0)
    }
    fn rd_at(&mut self, r: Reg, i: u32) -> Result<u32, DriverError> {
        let o = self.base + r.at(i);
        let v = self.card.regs_mut().read32(BarOffset(o))?;
        Ok(v)
    }
    /// A register that never reads all ones on a working card.
    fn rd_live(&mut self, r: Reg) -> Result<u32, DriverError> {
        let v = self.rd(r)?;
        if v == hal::regs::DEVICE_GONE {
            return Err(DriverError::DeviceGone {
                offset: BarOffset(self.base + r.offset),
            });
        }
        Ok(v)
    }
    fn wr(&mut self, r: Reg, v: u32) -> Result<(), DriverError> {
        self.wr_at(r, 0, v)
    }
    fn wr_at(&mut self, r: Reg, i: u32, v: u32) -> Result<(), DriverError> {
        let o = self.base + r.at(i);
        Ok(self.card.regs_mut().write32(BarOffset(o), v)?)
    }

    /// Longest frame the card takes.
    #[must_use]
    pub fn frame_bytes(&self) -> u32 {
        self.frame_bytes
    }

    /// Key the card's distribution hash with the cluster secret's 16 bytes (k0 = bytes 0..8,
    /// k1 = bytes 8..16, little endian, as the host's `Distributor`), and set the identifier
    /// count (a power of two up to 4,096). The key registers are write-only.
    ///
    /// # Errors
    /// [`DriverError::BadCapability`] for a count that is not a power of two in 1..=4096.
    pub fn set_distribution(&mut self, secret: &[u8; 16], count: u32) -> Result<(), DriverError> {
        if !count.is_power_of_two() || count > port::IDS {
            return Err(DriverError::Port {
                what: format!("{count} identifiers: the card takes a power of two up to 4096"),
            });
        }
        for i in 0..4 {
            let at = 4 * i as usize;
            let w =
                u32::from_le_bytes([secret[at], secret[at + 1], secret[at + 2], secret[at + 3]]);
            self.wr_at(port::HASH_KEY, i, w)?;
        }
        self.wr(port::ID_MASK, count - 1)
    }

    /// Set the identifiers the card handles; frames of every other one are dropped.
    ///
    /// # Errors
    /// Register errors.
    pub fn set_owned(&mut self, owned: &DidSet) -> Result<(), DriverError> {
        for (i, w) in owned.words().iter().enumerate() {
            self.wr_at(port::OWNED, i as u32, *w)?;
        }
        Ok(())
    }

    /// The identifiers the card handles now.
    ///
    /// # Errors
    /// Register errors.
    pub fn owned(&mut self) -> Result<DidSet, DriverError> {
        let mut ids = Vec::new();
        for w in 0..port::OWNED_WORDS {
            let bits = self.rd_at(port::OWNED, w)?;
            for b in 0..32 {
                if bits >> b & 1 == 1 {
                    ids.push(DistributionId((w * 32 + b) as u16));
                }
            }
        }
        DidSet::from_ids(ids)
    }

    fn command(&mut self, code: u32) -> Result<u32, DriverError> {
        use port::status;
        self.wr(port::CMD, code)?;
        for _ in 0..POLL_LIMIT {
            let s = self.rd_live(port::STATUS)?;
            if status::BUSY.get(s) == 0 {
                return Ok(status::ERR.get(s));
            }
            self.card.regs_mut().idle();
        }
        Err(DriverError::Port {
            what: format!("command {code} still busy after {POLL_LIMIT} status polls"),
        })
    }

    /// Take the oldest frame of the host queue, or `None` when it is empty.
    ///
    /// # Errors
    /// Register errors; a queue whose head claims a length above the card's frame size.
    pub fn receive(&mut self) -> Result<Option<Punted>, DriverError> {
        if self.rd_live(port::HRX_COUNT)? == 0 {
            return Ok(None);
        }
        let len = self.rd_live(port::HRX_LEN)?;
        if len > self.frame_bytes {
            return Err(DriverError::Port {
                what: format!(
                    "HRX_LEN reads {len}, above the card's {} byte frames",
                    self.frame_bytes
                ),
            });
        }
        let meta = self.rd(port::HRX_META)?;
        let index = self.rd(port::HRX_INDEX)?;
        let result = self.rd(port::HRX_RESULT)?;
        let offs = self.rd(port::HRX_OFFSETS)?;
        let mut frame = Vec::with_capacity(len as usize);
        for i in 0..len.div_ceil(4) {
            frame.extend_from_slice(&self.rd_at(port::HRX_BUF, i)?.to_be_bytes());
        }
        frame.truncate(len as usize);
        self.command(port::cmd::POP)?;
        use port::{meta as m, offsets as o};
        Ok(Some(Punted {
            frame,
            port: m::PORT.get(meta) as u8,
            from_host: m::FROM_HOST.get(meta) == 1,
            reason: Reason::from_code(m::REASON.get(meta) as u8),
            did: (m::DID_VALID.get(meta) == 1).then(|| DistributionId(m::DID.get(meta) as u16)),
            hit: (m::HIT.get(meta) == 1).then(|| (CamIndex(index), ResultWord::decode(result))),
            l3: o::L3.get(offs) as u16,
            l4: o::L4.get(offs) as u16,
        }))
    }

    /// Send `frame` out of a port or into the pipeline.
    ///
    /// # Errors
    /// [`DriverError::BadCapability`] for an empty frame, one longer than the card takes, or
    /// a port other than 0 and 1; register errors.
    pub fn send(&mut self, frame: &[u8], dest: Dest) -> Result<(), DriverError> {
        let bad = |what: String| DriverError::Port { what };
        if frame.is_empty() || frame.len() > self.frame_bytes as usize {
            return Err(bad(format!(
                "a {} byte frame: the card sends 1 to {} bytes",
                frame.len(),
                self.frame_bytes
            )));
        }
        let code = match dest {
            Dest::Out(p) if p < 2 => u32::from(p),
            Dest::In(p) if p < 2 => 2 + u32::from(p),
            Dest::Out(p) | Dest::In(p) => {
                return Err(bad(format!(
                    "no port {p}: ports are 0 (outside) and 1 (inside)"
                )))
            }
        };
        for (i, c) in frame.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            self.wr_at(port::HTX_BUF, i as u32, u32::from_be_bytes(w))?;
        }
        self.wr(port::HTX_LEN, frame.len() as u32)?;
        self.wr(port::HTX_DEST, code)?;
        match self.command(port::cmd::SEND)? {
            port::err::OK => Ok(()),
            e => Err(bad(format!("SEND failed with error {e}"))),
        }
    }

    /// Frames counted for reason `code` (`REASON_COUNT[code]`, a wrapping counter; 0 for a
    /// code past the counters).
    ///
    /// # Errors
    /// Register errors.
    pub fn reason_count(&mut self, code: u8) -> Result<u32, DriverError> {
        if u32::from(code) >= port::REASONS {
            return Ok(0);
        }
        self.rd_at(port::REASON_COUNT, u32::from(code))
    }

    /// The block's counters.
    ///
    /// # Errors
    /// Register errors.
    pub fn counters(&mut self) -> Result<PortCounters, DriverError> {
        let mut reasons = Vec::new();
        for i in 1..port::REASONS {
            let c = self.rd_at(port::REASON_COUNT, i)?;
            if c != 0 {
                reasons.push((Reason::from_code(i as u8).name(), c));
            }
        }
        Ok(PortCounters {
            rx_frames: self.rd(port::RX_FRAMES)?,
            forwarded: self.rd(port::FORWARDED)?,
            punted: self.rd(port::PUNTED)?,
            dropped: self.rd(port::DROPPED)?,
            tx_frames: self.rd(port::TX_FRAMES)?,
            host_sent: self.rd(port::HOST_SENT)?,
            queued: self.rd(port::HRX_COUNT)?,
            reasons,
        })
    }

    /// Frames and bytes of identifier `did` that reached the lookup.
    ///
    /// # Errors
    /// Register errors.
    pub fn did_counters(&mut self, did: DistributionId) -> Result<(u32, u64), DriverError> {
        self.wr(port::DID_SEL, u32::from(did.0))?;
        let pkts = self.rd(port::DID_PKTS)?;
        let lo = self.rd(port::DID_BYTES_LO)?;
        let hi = self.rd(port::DID_BYTES_HI)?;
        Ok((pkts, u64::from(hi) << 32 | u64::from(lo)))
    }

    /// Frames and bytes that hit entry `index` since the CAM last wrote it.
    ///
    /// # Errors
    /// Register errors.
    pub fn entry_counters(&mut self, index: CamIndex) -> Result<(u32, u64), DriverError> {
        self.wr(port::ENT_SEL, index.0)?;
        let pkts = self.rd(port::ENT_PKTS)?;
        let lo = self.rd(port::ENT_BYTES_LO)?;
        let hi = self.rd(port::ENT_BYTES_HI)?;
        Ok((pkts, u64::from(hi) << 32 | u64::from(lo)))
    }
}
