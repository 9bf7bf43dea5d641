//! A simulated card on a real network: [`PortBridge`] joins a card's two Ethernet ports (the
//! [`Wires`] of the reference model or the RTL) to two Linux interfaces through raw packet
//! sockets ([`hal::packet`]). Frames read on the `outside` interface go into port 0, those read
//! on `inside` into port 1; what the card sends out of port 0 is written to `outside`, out of
//! port 1 to `inside`. One [`PortBridge::poll`] moves what is ready both ways.
//!
//! The bridge only moves frames. The host's side of the card (its slow path: reading the host
//! queue, sending frames on, installing entries) is the caller's, and runs between frames: the
//! bridge hands every frame to [`Wires::wire_rx`] separately, and the card has handled it
//! completely when that returns. A caller holding a `driver::Card<R>` wraps it in a small
//! type of its own that implements [`Wires`]: `wire_rx` feeds the frame to the card's wires
//! (`card.regs_mut().wires()`, see [`wires_of`]) and then serves the host queue
//! (`card.port()?.receive()`, `send`); `wire_tx` takes the card's next frame off its wires.
//! A host built on the node (`cluster_core::Node::handle_frame_into`) gets the frames that
//! left the card back from it and hands them to the bridge from `wire_tx`.
//!
//! ```no_run
//! use std::time::Duration;
//! use driver::port::Dest;
//! use driver::{Card, DidSet, RegIo};
//! use hal::{HalError, Wires};
//! use sim_bridge::bridge::{wires_of, PortBridge};
//!
//! /// The card with a host that sends every punted frame out of the other port.
//! struct Host<R: RegIo>(Card<R>);
//!
//! impl<R: RegIo> Wires for Host<R> {
//!     fn wire_rx(&mut self, port: u8, frame: &[u8]) -> Result<(), HalError> {
//!         wires_of(self.0.regs_mut())
//!             .map_err(|e| HalError::Open(e.to_string()))?
//!             .wire_rx(port, frame)?;
//!         while let Ok(Some(p)) = self.0.port().and_then(|mut pp| pp.receive()) {
//!             let _ = self.0.port().and_then(|mut pp| pp.send(&p.frame, Dest::Out(p.port ^ 1)));
//!         }
//!         Ok(())
//!     }
//!     fn wire_tx(&mut self) -> Option<(u8, Vec<u8>)> {
//!         wires_of(self.0.regs_mut()).ok()?.wire_tx()
//!     }
//! }
//!
//! let mut card = Card::probe(sim_bridge::model::ModelCard::new())?;
//! card.port()?.set_owned(&DidSet::all())?;
//! let frame_bytes = card.port()?.frame_bytes() as usize;
//! let mut bridge = PortBridge::open("veth-out", "veth-in", frame_bytes)?;
//! let mut host = Host(card);
//! for _ in 0..1000 {
//!     let step = bridge.poll(&mut host, Duration::from_millis(100))?;
//!     println!("{step:?}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What the kernel hands a packet socket is not always a finished wire frame, and the bridge
//! makes it one before the card sees it ([`prepare`]): a frame a local stack sent with its
//! transport checksum left to the hardware gets the checksum computed, and an 802.1Q tag the
//! kernel moved into metadata goes back into the frame. Frames longer than the card takes
//! (jumbo frames, receive- or segmentation-offload super-frames) are dropped and counted with
//! the reason; they never reach the card, and nothing a wire brings panics the bridge.

use std::fmt;
use std::time::Duration;

use hal::packet::{wait_readable, PacketError, PacketSocket, Received};
use hal::{HalError, RegIo, Wires};

/// Frames read from one interface in one [`PortBridge::poll`] at most, so that the other
/// direction is never starved.
pub const BATCH: usize = 64;

/// Frames taken from the card in one go at most (the rest wait for the next step).
const DRAIN_LIMIT: usize = 16 * BATCH;

/// Why the bridge could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// An interface could not be opened.
    #[error("the {role} interface: {source}")]
    Open {
        /// `outside` (port 0) or `inside` (port 1).
        role: &'static str,
        /// What went wrong, naming the interface and the fix.
        source: PacketError,
    },
    /// The same interface was given for both ports.
    #[error(
        "`{name}` was given as both the outside and the inside interface: a card's ports \
         need two interfaces"
    )]
    SameInterface {
        /// The interface.
        name: String,
    },
    /// Reading or writing an interface failed.
    #[error(transparent)]
    Io(#[from] PacketError),
    /// The card refused a frame or failed.
    #[error("the card: {0}")]
    Card(#[from] HalError),
    /// The backend simulates no wires (a real card has cables).
    #[error(
        "backend `{backend}` has no simulated Ethernet wires: a real card takes frames from \
         its own ports, only a simulated card (model, RTL) can be bridged"
    )]
    NoWires {
        /// The backend's description.
        backend: String,
    },
}

/// The wires of `regs`, or [`BridgeError::NoWires`] naming the backend.
///
/// # Errors
/// [`BridgeError::NoWires`] for a backend without simulated wires.
pub fn wires_of<R: RegIo + ?Sized>(regs: &mut R) -> Result<&mut dyn Wires, BridgeError> {
    let backend = regs.describe();
    regs.wires().ok_or(BridgeError::NoWires { backend })
}

/// Why the bridge dropped a frame instead of passing it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// From a wire: longer than the card takes.
    TooLong,
    /// From a wire: a checksum the kernel left to finish points outside the frame.
    BadChecksumOffsets,
    /// From a wire: the kernel dropped a frame it could not describe.
    Unreadable,
    /// To a wire: the interface refused it (longer than its MTU, say).
    TxError,
    /// To a wire: the interface's queue was full.
    TxBusy,
    /// From a wire: the kernel dropped it before the bridge read it (the socket's receive
    /// buffer was full: the card and its host fell behind the segment).
    RxOverflow,
}

impl DropReason {
    /// The name used in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DropReason::TooLong => "too_long",
            DropReason::BadChecksumOffsets => "bad_checksum_offsets",
            DropReason::Unreadable => "unreadable",
            DropReason::TxError => "tx_error",
            DropReason::TxBusy => "tx_busy",
            DropReason::RxOverflow => "rx_overflow",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one [`PortBridge::poll`] moved, per port (index 0 = outside, 1 = inside).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollCounts {
    /// Frames read from the port's interface and fed into the card.
    pub to_card: [u64; 2],
    /// Frames the card sent out of the port, written to its interface.
    pub from_card: [u64; 2],
    /// Frames dropped by the bridge (either way).
    pub dropped: u64,
}

impl PollCounts {
    /// Frames moved either way.
    #[must_use]
    pub fn moved(&self) -> u64 {
        self.to_card.iter().chain(&self.from_card).sum()
    }
}

/// The bridge's counters since it opened, per port (index 0 = outside, 1 = inside).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeCounters {
    /// Frames read from the interface and fed into the card.
    pub to_card: [u64; 2],
    /// Their bytes.
    pub to_card_bytes: [u64; 2],
    /// Frames the card sent out of the port and the bridge wrote to the interface.
    pub from_card: [u64; 2],
    /// Their bytes.
    pub from_card_bytes: [u64; 2],
    /// Frames whose transport checksum the bridge finished (the sender left it to hardware).
    pub checksums_finished: u64,
    /// Frames whose 802.1Q tag the bridge put back.
    pub vlan_restored: u64,
    /// Frames dropped, per reason.
    pub dropped: Vec<(DropReason, u64)>,
    /// The last drop, said in words.
    pub last_drop: Option<String>,
}

impl BridgeCounters {
    /// Frames dropped for `reason`.
    #[must_use]
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Frames dropped for any reason.
    #[must_use]
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    fn drop(&mut self, reason: DropReason, words: String) {
        self.drop_n(reason, 1, words);
    }

    fn drop_n(&mut self, reason: DropReason, n: u64, words: String) {
        match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.dropped.push((reason, n)),
        }
        self.last_drop = Some(words);
    }
}

/// A frame made ready for the card by [`prepare`], or why not.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Feed this frame into the card.
    Frame {
        /// The transport checksum was finished.
        checksum: bool,
        /// The 802.1Q tag was put back.
        vlan: bool,
    },
    /// Drop it.
    Drop(DropReason, String),
}

/// Make the frame the kernel handed over a wire frame for the card: `buf` holds the first
/// `meta.stored` bytes of a `meta.len` byte frame (more when it was cut short), and on
/// success holds the frame to feed, `buf[..len]` with `len` returned through `out_len`.
/// Checks every length and offset: any bytes and any metadata give a frame or a drop, never a
/// panic.
pub fn prepare(
    buf: &mut [u8],
    meta: &Received,
    frame_bytes: usize,
    iface: &str,
    out_len: &mut usize,
) -> Prepared {
    *out_len = 0;
    if meta.unreadable {
        return Prepared::Drop(
            DropReason::Unreadable,
            format!(
                "the kernel dropped a frame from {iface} that it could not describe (an \
                 offload super-frame: turn GRO/LRO and TSO/GSO off, see docs/port-bridge.md)"
            ),
        );
    }
    let tag = usize::from(meta.vlan.is_some()) * 4;
    let len = meta.len;
    if len + tag > frame_bytes || meta.stored < len || meta.stored > buf.len() {
        let what = if meta.gso {
            " (a segmentation-offload super-frame: turn TSO/GSO off on the sender)"
        } else if len > 1518 {
            " (a jumbo or receive-offload frame: turn GRO/LRO off on the interface, \
               e.g. `ethtool -K IF gro off lro off`, or lower the MTU)"
        } else {
            ""
        };
        return Prepared::Drop(
            DropReason::TooLong,
            format!(
                "a {} byte frame from {iface} is longer than the card's {frame_bytes} byte \
                 frames{what}",
                len + tag
            ),
        );
    }
    let mut checksum = false;
    if let Some((start, offset)) = meta.csum {
        let (start, at) = (usize::from(start), usize::from(start) + usize::from(offset));
        if start >= len || at + 2 > len {
            return Prepared::Drop(
                DropReason::BadChecksumOffsets,
                format!(
                    "a {len} byte frame from {iface} wants its checksum finished at {at} from \
                     {start}: outside the frame"
                ),
            );
        }
        finish_checksum(&mut buf[..len], start, at);
        checksum = true;
    }
    let vlan = if let Some((tpid, tci)) = meta.vlan {
        // checked above: len + 4 <= frame_bytes, and a frame shorter than its MAC addresses
        // gets the tag at its end
        if buf.len() < len + 4 {
            return Prepared::Drop(
                DropReason::TooLong,
                format!("no room for the VLAN tag of a {len} byte frame from {iface}"),
            );
        }
        let at = len.min(12);
        buf.copy_within(at..len, at + 4);
        buf[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
        buf[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
        true
    } else {
        false
    };
    *out_len = len + tag;
    Prepared::Frame { checksum, vlan }
}

/// The Internet checksum over `frame[start..]` (whose checksum field at `at` holds the
/// pseudo-header's sum, as a sender leaving it to hardware writes it), stored at `at`.
fn finish_checksum(frame: &mut [u8], start: usize, at: usize) {
    let mut sum: u32 = 0;
    let mut words = frame[start..].chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    // as the kernel's skb_checksum_help: 0 goes out as 0xffff (the same in one's complement,
    // and UDP's "no checksum" otherwise)
    let c = if c == 0 { 0xffff } else { c };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The receive buffer each socket asks for: about 5,000 full-size frames, so a burst on a
/// busy segment waits instead of being dropped while the card's host works.
pub const RX_BUFFER: usize = 8 << 20;

/// A card's two ports on two Linux interfaces.
pub struct PortBridge {
    socks: [PacketSocket; 2],
    frame_bytes: usize,
    buf: Vec<u8>,
    counters: BridgeCounters,
}

impl fmt::Debug for PortBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortBridge")
            .field("outside", &self.socks[0].name())
            .field("inside", &self.socks[1].name())
            .field("frame_bytes", &self.frame_bytes)
            .finish_non_exhaustive()
    }
}

impl PortBridge {
    /// Open raw sockets on `outside` (port 0) and `inside` (port 1) in the calling thread's
    /// network namespace, for a card that takes frames up to `frame_bytes` long (the packet
    /// port's `CAP_FRAME_BYTES`, `driver`'s `PacketPort::frame_bytes`).
    ///
    /// # Errors
    /// [`BridgeError::Open`] naming the interface and the fix (no such interface, not root);
    /// [`BridgeError::SameInterface`].
    pub fn open(outside: &str, inside: &str, frame_bytes: usize) -> Result<Self, BridgeError> {
        if outside == inside {
            return Err(BridgeError::SameInterface {
                name: outside.into(),
            });
        }
        let o = PacketSocket::open(outside).map_err(|source| BridgeError::Open {
            role: "outside",
            source,
        })?;
        let i = PacketSocket::open(inside).map_err(|source| BridgeError::Open {
            role: "inside",
            source,
        })?;
        for s in [&o, &i] {
            // best effort: a smaller buffer only drops sooner, and says so in the counters
            let _ = s.set_receive_buffer(RX_BUFFER);
        }
        Ok(PortBridge {
            socks: [o, i],
            frame_bytes,
            // room for a frame cut short to be seen as too long, and for a VLAN tag
            buf: vec![0; frame_bytes + 8],
            counters: BridgeCounters::default(),
        })
    }

    /// The sockets, outside first, for an event loop that waits for them to become readable
    /// (borrowed: a loop that must own its registration duplicates them with
    /// `try_clone_to_owned`).
    #[must_use]
    pub fn fds(&self) -> [std::os::fd::BorrowedFd<'_>; 2] {
        use std::os::fd::AsFd as _;
        [self.socks[0].as_fd(), self.socks[1].as_fd()]
    }

    /// The interfaces, outside first.
    #[must_use]
    pub fn interfaces(&self) -> [&str; 2] {
        [self.socks[0].name(), self.socks[1].name()]
    }

    /// The counters since the bridge opened.
    #[must_use]
    pub fn counters(&self) -> &BridgeCounters {
        &self.counters
    }

    /// Adds what the kernel dropped on either socket since the last call (receive buffer
    /// full) to the counters as [`DropReason::RxOverflow`].
    fn count_overflow(&mut self) {
        for (port, s) in self.socks.iter().enumerate() {
            if let Ok(n) = s.take_drops() {
                if n > 0 {
                    let words = format!(
                        "{n} frame(s) from {} dropped by the kernel: the socket's receive \
                         buffer was full",
                        if port == 0 { "outside" } else { "inside" }
                    );
                    self.counters.drop_n(DropReason::RxOverflow, n, words);
                }
            }
        }
    }

    /// One step: write what the card has sent; wait up to `timeout` for frames on either
    /// interface (not at all when the card had frames to send); read up to [`BATCH`] frames
    /// from each and feed them, one at a time, into the card, writing out what it sends after
    /// each.
    ///
    /// # Errors
    /// [`BridgeError::Io`] when an interface fails (not for a frame it refuses: that is a
    /// drop), [`BridgeError::Card`] when the card fails.
    pub fn poll(
        &mut self,
        card: &mut dyn Wires,
        timeout: Duration,
    ) -> Result<PollCounts, BridgeError> {
        let mut step = PollCounts::default();
        self.count_overflow();
        self.drain(card, &mut step);
        let wait = if step.moved() > 0 {
            Duration::ZERO
        } else {
            timeout
        };
        let ready = wait_readable(&[&self.socks[0], &self.socks[1]], wait)?;
        for port in 0..2u8 {
            if !ready[usize::from(port)] {
                continue;
            }
            for _ in 0..BATCH {
                let Some(meta) = self.socks[usize::from(port)].recv(&mut self.buf)? else {
                    break;
                };
                self.take_in(card, port, &meta, &mut step)?;
                self.drain(card, &mut step);
            }
        }
        Ok(step)
    }

    /// [`PortBridge::poll`] on the wires of backend `regs` (`card.regs_mut()` of a
    /// `driver::Card<R>`), for a card whose host serves its queue between polls: the card's
    /// host queue holds 8 frames, so frames punted beyond that in one step are dropped by the
    /// card (`queue_full`). A host that must see every punted frame uses [`PortBridge::poll`]
    /// with a [`Wires`] of its own that serves the queue after each frame (see the module
    /// docs).
    ///
    /// # Errors
    /// [`BridgeError::NoWires`] for a backend without simulated wires; as [`PortBridge::poll`].
    pub fn poll_regs<R: RegIo + ?Sized>(
        &mut self,
        regs: &mut R,
        timeout: Duration,
    ) -> Result<PollCounts, BridgeError> {
        self.poll(wires_of(regs)?, timeout)
    }

    /// Hand a frame read from `port`'s interface (in `self.buf`, described by `meta`) to the
    /// card, or drop it.
    fn take_in(
        &mut self,
        card: &mut dyn Wires,
        port: u8,
        meta: &Received,
        step: &mut PollCounts,
    ) -> Result<(), BridgeError> {
        let p = usize::from(port);
        let mut len = 0;
        match prepare(
            &mut self.buf,
            meta,
            self.frame_bytes,
            self.socks[p].name(),
            &mut len,
        ) {
            Prepared::Frame { checksum, vlan } => {
                self.counters.checksums_finished += u64::from(checksum);
                self.counters.vlan_restored += u64::from(vlan);
                card.wire_rx(port, &self.buf[..len])?;
                self.counters.to_card[p] += 1;
                self.counters.to_card_bytes[p] += len as u64;
                step.to_card[p] += 1;
            }
            Prepared::Drop(reason, words) => {
                self.counters.drop(reason, words);
                step.dropped += 1;
            }
        }
        Ok(())
    }

    /// Write every frame the card has sent to its port's interface.
    /// Writes frames that left the card outside a [`PortBridge::poll`] (for example those its
    /// host sent on later) to the interfaces of their ports, counted as the card's.
    pub fn send(&mut self, frames: impl IntoIterator<Item = (u8, Vec<u8>)>) -> PollCounts {
        struct Queue(std::collections::VecDeque<(u8, Vec<u8>)>);
        impl Wires for Queue {
            fn wire_rx(&mut self, port: u8, _: &[u8]) -> Result<(), HalError> {
                Err(HalError::NoPort { port })
            }
            fn wire_tx(&mut self) -> Option<(u8, Vec<u8>)> {
                self.0.pop_front()
            }
        }
        let mut q = Queue(frames.into_iter().collect());
        let mut step = PollCounts::default();
        while !q.0.is_empty() {
            self.drain(&mut q, &mut step);
        }
        step
    }

    fn drain(&mut self, card: &mut dyn Wires, step: &mut PollCounts) {
        // bounded: a card sends at most a few frames per frame it takes in
        for _ in 0..DRAIN_LIMIT {
            let Some((port, frame)) = card.wire_tx() else {
                break;
            };
            let Some(sock) = self.socks.get(usize::from(port)) else {
                self.counters.drop(
                    DropReason::TxError,
                    format!("the card sent a frame out of port {port}, which has no interface"),
                );
                step.dropped += 1;
                continue;
            };
            match sock.send(&frame) {
                Ok(true) => {
                    let p = usize::from(port);
                    self.counters.from_card[p] += 1;
                    self.counters.from_card_bytes[p] += frame.len() as u64;
                    step.from_card[p] += 1;
                }
                Ok(false) => {
                    let words = format!(
                        "{}'s transmit queue was full for a {} byte frame",
                        sock.name(),
                        frame.len()
                    );
                    self.counters.drop(DropReason::TxBusy, words);
                    step.dropped += 1;
                }
                Err(e) => {
                    let words = format!("a {} byte frame: {e}", frame.len());
                    self.counters.drop(DropReason::TxError, words);
                    step.dropped += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelCard;
    use hal::BarOffset;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const FRAME_BYTES: usize = 2048;

    fn meta(len: usize, buf: usize) -> Received {
        Received {
            len,
            stored: len.min(buf),
            ..Received::default()
        }
    }

    /// A UDP/IPv4 frame with its checksum field holding only the pseudo-header sum, as a
    /// stack that leaves the checksum to hardware writes it; and the finished frame.
    fn partial_udp() -> (Vec<u8>, Vec<u8>) {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let payload = b"checksum me";
        let udp_len = 8 + payload.len() as u16;
        let ip = [
            0x45,
            0,
            0,
            (20 + udp_len) as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
            198,
            18,
            0,
            1,
            198,
            18,
            0,
            2,
        ];
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        // the full checksum, the slow way: pseudo-header + UDP header + payload
        let sum16 = |b: &[u8]| -> u32 {
            b.chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
                .sum()
        };
        let fold = |mut s: u32| {
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            s as u16
        };
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        let pseudo_sum = fold(sum16(&pseudo));
        let full = !fold(sum16(&pseudo) + sum16(&f[34..]));
        let mut partial = f.clone();
        partial[40..42].copy_from_slice(&pseudo_sum.to_be_bytes());
        let mut done = f;
        done[40..42].copy_from_slice(&full.to_be_bytes());
        (partial, done)
    }

    /// `frame` through [`prepare`] with the metadata of a received `frame` changed by
    /// `offload`: `prepare` must say it finished the checksum (`checksum`) and put the VLAN
    /// tag back (`vlan`) as given. Returns the frame it leaves.
    fn prepared(
        frame: &[u8],
        offload: impl FnOnce(&mut Received),
        checksum: bool,
        vlan: bool,
    ) -> Vec<u8> {
        let mut buf = vec![0; FRAME_BYTES + 8];
        buf[..frame.len()].copy_from_slice(frame);
        let mut m = meta(frame.len(), buf.len());
        offload(&mut m);
        let mut len = 0;
        let p = prepare(&mut buf, &m, FRAME_BYTES, "t0", &mut len);
        assert_eq!(p, Prepared::Frame { checksum, vlan });
        buf.truncate(len);
        buf
    }

    #[test]
    fn a_checksum_left_to_hardware_is_finished() {
        let (partial, done) = partial_udp();
        let frame = prepared(&partial, |m| m.csum = Some((34, 6)), true, false);
        assert_eq!(frame, done);
    }

    #[test]
    fn a_vlan_tag_in_metadata_goes_back_into_the_frame() {
        let (_, done) = partial_udp();
        let frame = prepared(&done, |m| m.vlan = Some((0x8100, 42)), false, true);
        assert_eq!(frame.len(), done.len() + 4);
        assert_eq!(&frame[..12], &done[..12]);
        assert_eq!(&frame[12..16], &[0x81, 0x00, 0, 42]);
        assert_eq!(&frame[16..], &done[12..]);
    }

    #[test]
    fn frames_longer_than_the_card_takes_are_dropped_with_the_reason() {
        for (len, gso, hint) in [
            (2049, false, "GRO"),
            (9000, false, "GRO"),
            (4000, true, "TSO"),
        ] {
            let mut buf = vec![0xAB; FRAME_BYTES + 8];
            let mut m = meta(len, buf.len());
            m.gso = gso;
            let mut out = 1;
            match prepare(&mut buf, &m, FRAME_BYTES, "veth-x", &mut out) {
                Prepared::Drop(DropReason::TooLong, words) => {
                    assert!(words.contains("veth-x"), "{words}");
                    assert!(words.contains(&len.to_string()), "{words}");
                    assert!(words.contains(hint), "{words}");
                }
                other => panic!("{len}: {other:?}"),
            }
            assert_eq!(out, 0);
        }
        // exactly the card's size passes; one tag more does not
        let mut buf = vec![0; FRAME_BYTES + 8];
        let mut out = 0;
        let m = meta(FRAME_BYTES, buf.len());
        assert!(matches!(
            prepare(&mut buf, &m, FRAME_BYTES, "t", &mut out),
            Prepared::Frame { .. }
        ));
        let mut m = meta(FRAME_BYTES - 3, buf.len());
        m.vlan = Some((0x8100, 1));
        assert!(matches!(
            prepare(&mut buf, &m, FRAME_BYTES, "t", &mut out),
            Prepared::Drop(DropReason::TooLong, _)
        ));
    }

    /// Any length (0, 1, 60, 2049, 9000 and random ones), any bytes, any metadata the kernel
    /// could claim: the bridge's handling of a received buffer never panics, and what it lets
    /// through the card takes without failing.
    #[test]
    fn no_frame_and_no_metadata_from_a_wire_panics_the_bridge() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut card = ModelCard::new();
        let mut lens = vec![0usize, 1, 2, 13, 14, 15, 17, 18, 60, 64, 1514, 2047, 2048];
        lens.extend([2049, 2052, 9000, 65535]);
        lens.extend((0..400).map(|_| rng.random_range(0..3000)));
        let (mut fed, mut dropped) = (0, 0);
        for (i, &len) in lens.iter().enumerate() {
            let mut buf = vec![0; FRAME_BYTES + 8];
            let stored = len.min(buf.len());
            rng.fill(&mut buf[..stored]);
            let mut m = meta(len, buf.len());
            if i % 3 == 0 {
                m.csum = Some((rng.random(), rng.random()));
            }
            if i % 4 == 1 {
                m.csum = Some((rng.random_range(0..64), rng.random_range(0..32)));
            }
            if i % 5 == 0 {
                m.vlan = Some((rng.random(), rng.random()));
            }
            if i % 7 == 0 {
                // metadata that lies about what is in the buffer
                m.stored = rng.random_range(0..=buf.len() + 10);
            }
            m.gso = rng.random_bool(0.1);
            m.unreadable = rng.random_bool(0.02);
            let mut out = 0;
            match prepare(&mut buf, &m, FRAME_BYTES, "fuzz", &mut out) {
                Prepared::Frame { .. } => {
                    assert!(out <= FRAME_BYTES);
                    card.wires()
                        .expect("model wires")
                        .wire_rx(i as u8 % 2, &buf[..out])
                        .expect("the card takes any frame up to its size");
                    fed += 1;
                }
                Prepared::Drop(_, words) => {
                    assert!(!words.is_empty());
                    dropped += 1;
                }
            }
            while card.wires().expect("model wires").wire_tx().is_some() {}
        }
        assert!(fed > 100 && dropped > 50, "fed {fed}, dropped {dropped}");
    }

    #[test]
    fn a_backend_without_wires_is_named() {
        struct NoWires;
        impl RegIo for NoWires {
            fn read32(&mut self, _: BarOffset) -> Result<u32, HalError> {
                Ok(0)
            }
            fn write32(&mut self, _: BarOffset, _: u32) -> Result<(), HalError> {
                Ok(())
            }
            fn size(&self) -> u64 {
                4
            }
            fn describe(&self) -> String {
                "vfio:0000:03:00.0".into()
            }
        }
        let e = wires_of(&mut NoWires).err().expect("no wires");
        assert!(e.to_string().contains("vfio:0000:03:00.0"), "{e}");
        assert!(wires_of(&mut ModelCard::new()).is_ok());
    }

    #[test]
    fn missing_interfaces_are_named_with_their_role() {
        let e = PortBridge::open("no-such-out0", "no-such-in0", FRAME_BYTES).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("outside") && s.contains("no-such-out0"), "{s}");
        let e = PortBridge::open("same0", "same0", FRAME_BYTES).unwrap_err();
        assert!(matches!(e, BridgeError::SameInterface { .. }), "{e}");
    }
}
