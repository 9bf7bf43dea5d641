//! The RTL card: `hdl/card_top.v` built by Verilator, behind [`hal::RegIo`].
//!
//! Every register access is a real AXI4-Lite transaction over clock cycles
//! (two clocks for a read or a write when the slave is ready), a CAM command
//! is `BUSY` for six clocks from the clock that accepts its `CMD` write (see
//! `hdl/CARD.md`), and [`RegIo::idle`] lets one clock pass. [`RtlCard::lookup_stream`] drives the data-path lookup
//! port, one key per clock; [`RtlCard::cycles`] counts clocks since the card
//! was created.
//!
//! The packet port block's Ethernet wires are [`hal::Wires`], as on the model:
//! [`Wires::wire_rx`] feeds a frame as AXI4-Stream beats into a port (each beat
//! offered until the port takes it) and clocks until the block is idle;
//! [`Wires::wire_tx`] hands back the frames the ports sent, oldest first.
//! [`RtlCard::port_beats`] feeds hand-made beats (`tkeep` = 0 beats, odd
//! `tkeep`), [`RtlCard::stream_frames`] feeds many frames back to back and
//! counts the clocks, and [`RtlCard::set_tx_ready_pattern`] puts back-pressure
//! on the transmit wires.
//!
//! The CAM depth is a Verilator-time parameter: this build has
//! [`RTL_DEPTH`] entries (set `SIM_BRIDGE_RTL_DEPTH` when building to change
//! it). A Verilator fatal error, `$stop` or `$finish` comes back as
//! [`HalError::SimulatorStopped`]; the card then refuses every further access.

// The only unsafe code of the crate: calls into the C++ shim around the
// Verilator model (sim-bridge/csrc/shim.cpp). Each block states its contract.
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr, CString};
use std::ptr::NonNull;

use hal::io::check_access;
use hal::regs::{cam, port, BAR_SIZE};
use hal::{BarOffset, HalError, RegIo, Wires};

include!(concat!(env!("OUT_DIR"), "/rtl_params.rs"));

/// Key width of the data-path port in 32-bit words.
const KW: usize = cam::KEY_WORDS as usize;

/// Longest error message the shim hands back.
const ERR_LEN: usize = 1024;

mod ffi {
    use std::ffi::c_char;

    /// Opaque C++ instance (`SimCard` in shim.cpp).
    #[repr(C)]
    pub struct SimCard {
        _private: [u8; 0],
    }

    /// One data-path answer, as shim.cpp lays it out.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub struct SimLookup {
        pub hit: u32,
        pub index: u32,
        pub result: u32,
        pub did: u32,
    }

    /// One AXI4-Stream beat, as shim.cpp lays it out.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub struct SimBeat {
        pub data: u64,
        pub keep: u32,
        pub last: u32,
    }

    pub const SIM_OK: i32 = 0;
    pub const SIM_STOPPED: i32 = 1;

    extern "C" {
        pub fn sim_create(
            argc: i32,
            argv: *const *const c_char,
            err: *mut c_char,
            err_len: usize,
        ) -> *mut SimCard;
        pub fn sim_destroy(c: *mut SimCard);
        pub fn sim_reset(c: *mut SimCard, clocks: u32) -> i32;
        pub fn sim_tick(c: *mut SimCard, clocks: u64) -> i32;
        pub fn sim_axi_write(c: *mut SimCard, addr: u32, data: u32, resp: *mut u32) -> i32;
        pub fn sim_axi_read(c: *mut SimCard, addr: u32, data: *mut u32, resp: *mut u32) -> i32;
        pub fn sim_lookup_with_write(
            c: *mut SimCard,
            keys: *const u32,
            n: usize,
            out: *mut SimLookup,
            write_at: i64,
            waddr: u32,
            wdata: u32,
        ) -> i32;
        pub fn sim_port_beats(
            c: *mut SimCard,
            port: u32,
            beats: *const SimBeat,
            n: usize,
            wait_idle: i32,
            limit: u64,
        ) -> i32;
        pub fn sim_port_beats_both(
            c: *mut SimCard,
            b0: *const SimBeat,
            n0: usize,
            b1: *const SimBeat,
            n1: usize,
            limit: u64,
        ) -> i32;
        pub fn sim_port_wait_idle(c: *mut SimCard, limit: u64, clocks: *mut u64) -> i32;
        pub fn sim_port_tx(c: *mut SimCard, port: *mut u8, buf: *mut u8, cap: usize) -> i64;
        pub fn sim_port_tx_ready(c: *mut SimCard, period: u32, low: u32);
        pub fn sim_cycles(c: *const SimCard) -> u64;
        pub fn sim_rtl_depth() -> u32;
        pub fn sim_last_error(c: *const SimCard, buf: *mut c_char, len: usize);
    }
}

/// One answer of the data-path lookup port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupResult {
    /// A valid entry matched.
    pub hit: bool,
    /// Index of the matching entry (lowest wins); 0 on a miss.
    pub index: u32,
    /// Its result word; 0 on a miss.
    pub result: u32,
    /// Its distribution identifier; 0 on a miss.
    pub did: u16,
}

/// One AXI4-Stream beat into a packet port ([`RtlCard::port_beats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Beat {
    /// `tdata`: byte `i` in bits `8i+7:8i`.
    pub data: u64,
    /// `tkeep`.
    pub keep: u8,
    /// `tlast`.
    pub last: bool,
}

impl Beat {
    /// The beats that carry `frame` whole: 8 bytes each, the last one partial (a frame of 0
    /// bytes is one beat with `tkeep` 0 and `tlast`).
    #[must_use]
    pub fn frame(frame: &[u8]) -> Vec<Beat> {
        if frame.is_empty() {
            return vec![Beat {
                data: 0,
                keep: 0,
                last: true,
            }];
        }
        let n = frame.len().div_ceil(8);
        frame
            .chunks(8)
            .enumerate()
            .map(|(i, c)| {
                let mut b = [0u8; 8];
                b[..c.len()].copy_from_slice(c);
                Beat {
                    data: u64::from_le_bytes(b),
                    keep: (((1u16 << c.len()) - 1) & 0xFF) as u8,
                    last: i + 1 == n,
                }
            })
            .collect()
    }
}

/// Most clocks a packet port operation may take before the shim gives up (a wedged block).
const PORT_LIMIT: u64 = 1_000_000;

/// The Verilator-built RTL card. See the module documentation.
pub struct RtlCard {
    raw: NonNull<ffi::SimCard>,
}

// SAFETY: the C++ instance behind `raw` is owned by this value alone (no
// aliases are handed out) and holds its own VerilatedContext, so no state is
// shared with any other instance; Verilator models may be driven from any
// thread as long as one thread at a time does so, which `&mut self` on every
// call that touches the model guarantees. `RtlCard` is deliberately not `Sync`.
unsafe impl Send for RtlCard {}

impl RtlCard {
    /// A card with [`RTL_DEPTH`] CAM entries in its power-on state.
    ///
    /// # Errors
    /// [`HalError::SimulatorStopped`] when the simulator fails to start.
    pub fn new() -> Result<Self, HalError> {
        Self::with_args(RTL_DEPTH, &[])
    }

    /// A card with `depth` CAM entries in its power-on state.
    ///
    /// # Errors
    /// [`HalError::Open`] when `depth` is not the depth this build of the RTL
    /// has ([`RTL_DEPTH`]); [`HalError::SimulatorStopped`] when the simulator
    /// fails to start.
    pub fn with_depth(depth: u32) -> Result<Self, HalError> {
        Self::with_args(depth, &[])
    }

    /// As [`RtlCard::with_depth`], passing Verilator runtime arguments to the
    /// card's simulation context, e.g. `+verilator+rand+reset+2` and
    /// `+verilator+seed+7` to start every register at a random value (which
    /// the power-on reset must then clear).
    ///
    /// # Errors
    /// As for [`RtlCard::with_depth`]; an argument Verilator rejects is a
    /// [`HalError::SimulatorStopped`] carrying Verilator's message.
    pub fn with_args(depth: u32, args: &[&str]) -> Result<Self, HalError> {
        // SAFETY: sim_rtl_depth reads a compile-time constant.
        let built = unsafe { ffi::sim_rtl_depth() };
        if depth != built || depth != RTL_DEPTH {
            return Err(HalError::Open(format!(
                "the Verilator RTL card was built with {built} CAM entries, not {depth}: \
                 use depth {built}, or rebuild with SIM_BRIDGE_RTL_DEPTH={depth}"
            )));
        }
        let cargs: Vec<CString> = args
            .iter()
            .map(|a| {
                CString::new(*a).map_err(|_| {
                    HalError::Open(format!("Verilator argument {a:?} contains a NUL byte"))
                })
            })
            .collect::<Result<_, _>>()?;
        let ptrs: Vec<*const c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
        let argc = i32::try_from(ptrs.len())
            .map_err(|_| HalError::Open("too many Verilator arguments".into()))?;
        let mut err = vec![0 as c_char; ERR_LEN];
        // SAFETY: `ptrs` holds `argc` pointers to NUL-terminated strings that
        // `cargs` keeps alive for the call; `err` is a writable buffer of
        // `err.len()` bytes. The shim copies what it keeps.
        let raw = unsafe { ffi::sim_create(argc, ptrs.as_ptr(), err.as_mut_ptr(), err.len()) };
        match NonNull::new(raw) {
            Some(raw) => Ok(Self { raw }),
            None => Err(HalError::SimulatorStopped {
                reason: buf_to_string(&err),
            }),
        }
    }

    /// Clock cycles since the card was created.
    #[must_use]
    pub fn cycles(&self) -> u64 {
        // SAFETY: `raw` is a live instance owned by `self`.
        unsafe { ffi::sim_cycles(self.raw.as_ptr()) }
    }

    /// Number of CAM entries of this build.
    #[must_use]
    pub fn depth(&self) -> u32 {
        RTL_DEPTH
    }

    /// Data-path lookup latency in clocks (`CAP_LOOKUP_LATENCY`).
    #[must_use]
    pub fn lookup_latency(&self) -> u32 {
        cam::LOOKUP_LATENCY
    }

    /// Let `clocks` clock cycles pass with the bus and the data path idle.
    ///
    /// # Errors
    /// [`HalError::SimulatorStopped`] when the simulator has stopped.
    pub fn tick(&mut self, clocks: u64) -> Result<(), HalError> {
        // SAFETY: `raw` is a live instance owned by `self`, used by one thread.
        let st = unsafe { ffi::sim_tick(self.raw.as_ptr(), clocks) };
        self.check(st, BarOffset(0))
    }

    /// Pulse the card's power-on reset (`rst_n`) for `clocks` clocks.
    ///
    /// # Errors
    /// [`HalError::SimulatorStopped`] when the simulator has stopped.
    pub fn power_on_reset(&mut self, clocks: u32) -> Result<(), HalError> {
        // SAFETY: `raw` is a live instance owned by `self`, used by one thread.
        let st = unsafe { ffi::sim_reset(self.raw.as_ptr(), clocks) };
        self.check(st, BarOffset(0))
    }

    /// Look `keys` up on the data-path port, one key per clock, and return
    /// the answers in order. `keys.len() + latency - 1` clocks pass: the
    /// last answer appears `latency` clocks after the last key went in.
    /// Hits set the entries' hit bits and count in `DP_LOOKUPS`/`DP_HITS`.
    ///
    /// # Errors
    /// [`HalError::SimulatorStopped`] when the simulator has stopped;
    /// [`HalError::Bus`] when the port does not answer in time.
    pub fn lookup_stream(&mut self, keys: &[[u32; KW]]) -> Result<Vec<LookupResult>, HalError> {
        self.stream(keys, None)
    }

    /// As [`RtlCard::lookup_stream`], and also offer the register write
    /// `value` -> `offset` on the bus on clock `at_clock` of the stream (0 is
    /// the clock that samples the first key). The slave accepts it on that
    /// clock, so a test can start a command while lookups flow and see which
    /// keys met the table before and after the command's change.
    ///
    /// # Errors
    /// As for [`RtlCard::lookup_stream`], and [`HalError::Misaligned`] or
    /// [`HalError::OutOfBounds`] for a bad `offset`.
    pub fn lookup_stream_with_write(
        &mut self,
        keys: &[[u32; KW]],
        at_clock: u32,
        offset: BarOffset,
        value: u32,
    ) -> Result<Vec<LookupResult>, HalError> {
        check_access(offset, self.size())?;
        self.stream(keys, Some((at_clock, offset, value)))
    }

    fn stream(
        &mut self,
        keys: &[[u32; KW]],
        write: Option<(u32, BarOffset, u32)>,
    ) -> Result<Vec<LookupResult>, HalError> {
        let mut out = vec![ffi::SimLookup::default(); keys.len()];
        let (at, addr, data) = write.map_or((-1, 0, 0), |(at, o, v)| (i64::from(at), o.raw(), v));
        // SAFETY: `[[u32; 10]]` is laid out as `10 * keys.len()` consecutive
        // u32, which is what the shim reads; `out` has room for `keys.len()`
        // answers; `raw` is a live instance owned by `self`.
        let st = unsafe {
            ffi::sim_lookup_with_write(
                self.raw.as_ptr(),
                keys.as_ptr().cast::<u32>(),
                keys.len(),
                out.as_mut_ptr(),
                at,
                addr,
                data,
            )
        };
        self.check(st, BarOffset(cam::BASE))?;
        Ok(out
            .into_iter()
            .map(|r| LookupResult {
                hit: r.hit != 0,
                index: r.index,
                result: r.result,
                did: (r.did & 0xFFF) as u16,
            })
            .collect())
    }

    /// Offer `beats` to packet port `port`, each until the port takes it; with `wait_idle`,
    /// then clock until the packet port block is idle (the frame handled, sent, queued or
    /// dropped). Frames the card sends meanwhile are collected for [`Wires::wire_tx`].
    ///
    /// # Errors
    /// [`HalError::NoPort`] for a port other than 0 or 1; [`HalError::SimulatorStopped`];
    /// [`HalError::Bus`] when the port does not take a beat or stays busy for a million
    /// clocks (a wedged block).
    pub fn port_beats(
        &mut self,
        port: u8,
        beats: &[Beat],
        wait_idle: bool,
    ) -> Result<(), HalError> {
        if u32::from(port) >= port::PORTS {
            return Err(HalError::NoPort { port });
        }
        let raw: Vec<ffi::SimBeat> = beats
            .iter()
            .map(|b| ffi::SimBeat {
                data: b.data,
                keep: u32::from(b.keep),
                last: u32::from(b.last),
            })
            .collect();
        // SAFETY: `raw` holds `raw.len()` beats laid out as the shim's SimBeat and lives
        // across the call; `raw` (the card) is a live instance owned by `self`.
        let st = unsafe {
            ffi::sim_port_beats(
                self.raw.as_ptr(),
                u32::from(port),
                raw.as_ptr(),
                raw.len(),
                i32::from(wait_idle),
                PORT_LIMIT,
            )
        };
        self.check(st, BarOffset(port::BASE))
    }

    /// Offer `port0` to port 0 and `port1` to port 1 at the same time (each beat until its
    /// port takes it), then clock until the block is idle: both wires busy at once.
    ///
    /// # Errors
    /// As for [`RtlCard::port_beats`].
    pub fn port_beats_both(&mut self, port0: &[Beat], port1: &[Beat]) -> Result<(), HalError> {
        let raw = |b: &[Beat]| -> Vec<ffi::SimBeat> {
            b.iter()
                .map(|b| ffi::SimBeat {
                    data: b.data,
                    keep: u32::from(b.keep),
                    last: u32::from(b.last),
                })
                .collect()
        };
        let (a, b) = (raw(port0), raw(port1));
        // SAFETY: `a` and `b` hold `a.len()` and `b.len()` beats laid out as the shim's
        // SimBeat and live across the call; `raw` is a live instance owned by `self`.
        let st = unsafe {
            ffi::sim_port_beats_both(
                self.raw.as_ptr(),
                a.as_ptr(),
                a.len(),
                b.as_ptr(),
                b.len(),
                PORT_LIMIT,
            )
        };
        self.check(st, BarOffset(port::BASE))
    }

    /// Clock until the packet port block is idle; returns the clocks that took.
    ///
    /// # Errors
    /// [`HalError::SimulatorStopped`]; [`HalError::Bus`] when it stays busy for a million clocks.
    pub fn port_wait_idle(&mut self) -> Result<u64, HalError> {
        let mut n = 0u64;
        // SAFETY: `n` is valid for writes; `raw` is a live instance owned by `self`.
        let st = unsafe { ffi::sim_port_wait_idle(self.raw.as_ptr(), PORT_LIMIT, &mut n) };
        self.check(st, BarOffset(port::BASE))?;
        Ok(n)
    }

    /// Back-pressure on both transmit wires: `tready` low for `low` clocks of every `period`
    /// (`period` 0: always ready, the default).
    pub fn set_tx_ready_pattern(&mut self, period: u32, low: u32) {
        // SAFETY: `raw` is a live instance owned by `self`, used by one thread.
        unsafe { ffi::sim_port_tx_ready(self.raw.as_ptr(), period, low) }
    }

    /// Stream `frames` (port, bytes) into the ports back to back, each as soon as the block
    /// takes it, then wait until the block is idle. Returns the clocks that took (for
    /// benchmarks: clocks per frame by size). Frames sent are collected for
    /// [`Wires::wire_tx`].
    ///
    /// # Errors
    /// As for [`RtlCard::port_beats`].
    pub fn stream_frames(&mut self, frames: &[(u8, Vec<u8>)]) -> Result<u64, HalError> {
        let start = self.cycles();
        for (p, f) in frames {
            self.port_beats(*p, &Beat::frame(f), false)?;
        }
        self.port_wait_idle()?;
        Ok(self.cycles() - start)
    }

    /// One AXI4-Lite read at any bus address, without [`RegIo`]'s alignment
    /// and bounds checks (for bus-level tests). Returns RDATA and RRESP.
    ///
    /// # Errors
    /// [`HalError::SimulatorStopped`] when the simulator has stopped (the
    /// RTL stops it on an unaligned address); [`HalError::Bus`] when the
    /// slave does not complete the handshake.
    pub fn axi_read_raw(&mut self, addr: u16) -> Result<(u32, u32), HalError> {
        self.bus_read(u32::from(addr))
    }

    /// One AXI4-Lite write at any bus address, without [`RegIo`]'s alignment
    /// and bounds checks (for bus-level tests). Returns BRESP.
    ///
    /// # Errors
    /// As for [`RtlCard::axi_read_raw`].
    pub fn axi_write_raw(&mut self, addr: u16, data: u32) -> Result<u32, HalError> {
        self.bus_write(u32::from(addr), data)
    }

    fn bus_read(&mut self, addr: u32) -> Result<(u32, u32), HalError> {
        let (mut data, mut resp) = (0u32, 0u32);
        // SAFETY: `data` and `resp` are valid for writes; `raw` is a live
        // instance owned by `self`, used by one thread.
        let st = unsafe { ffi::sim_axi_read(self.raw.as_ptr(), addr, &mut data, &mut resp) };
        self.check(st, BarOffset(addr))?;
        Ok((data, resp))
    }

    fn bus_write(&mut self, addr: u32, data: u32) -> Result<u32, HalError> {
        let mut resp = 0u32;
        // SAFETY: `resp` is valid for writes; `raw` is a live instance owned
        // by `self`, used by one thread.
        let st = unsafe { ffi::sim_axi_write(self.raw.as_ptr(), addr, data, &mut resp) };
        self.check(st, BarOffset(addr))?;
        Ok(resp)
    }

    fn last_error(&self) -> String {
        let mut buf = vec![0 as c_char; ERR_LEN];
        // SAFETY: `buf` is writable for `buf.len()` bytes; `raw` is live.
        unsafe { ffi::sim_last_error(self.raw.as_ptr(), buf.as_mut_ptr(), buf.len()) };
        buf_to_string(&buf)
    }

    fn check(&self, status: i32, offset: BarOffset) -> Result<(), HalError> {
        match status {
            ffi::SIM_OK => Ok(()),
            ffi::SIM_STOPPED => Err(HalError::SimulatorStopped {
                reason: self.last_error(),
            }),
            _ => Err(HalError::Bus {
                offset,
                detail: self.last_error(),
            }),
        }
    }
}

impl Drop for RtlCard {
    fn drop(&mut self) {
        // SAFETY: `raw` came from sim_create and is destroyed exactly once, here.
        unsafe { ffi::sim_destroy(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for RtlCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtlCard")
            .field("depth", &RTL_DEPTH)
            .field("cycles", &self.cycles())
            .finish()
    }
}

/// The AXI response code as a name.
fn resp_name(resp: u32) -> &'static str {
    match resp {
        0 => "OKAY",
        1 => "EXOKAY",
        2 => "SLVERR",
        _ => "DECERR",
    }
}

fn buf_to_string(buf: &[c_char]) -> String {
    // Reinterpret as bytes: c_char is i8 or u8 depending on the target.
    let bytes: Vec<u8> = buf.iter().map(|&c| c as u8).collect();
    match CStr::from_bytes_until_nul(&bytes) {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

impl RegIo for RtlCard {
    fn read32(&mut self, offset: BarOffset) -> Result<u32, HalError> {
        check_access(offset, self.size())?;
        let (data, resp) = self.bus_read(offset.raw())?;
        if resp != 0 {
            return Err(HalError::Bus {
                offset,
                detail: format!("AXI read answered {}", resp_name(resp)),
            });
        }
        Ok(data)
    }

    fn write32(&mut self, offset: BarOffset, value: u32) -> Result<(), HalError> {
        check_access(offset, self.size())?;
        let resp = self.bus_write(offset.raw(), value)?;
        if resp != 0 {
            return Err(HalError::Bus {
                offset,
                detail: format!("AXI write answered {}", resp_name(resp)),
            });
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        u64::from(BAR_SIZE)
    }

    fn describe(&self) -> String {
        format!("verilator:card_top(depth={RTL_DEPTH})")
    }

    fn idle(&mut self) {
        // A stopped simulator reports itself on the next access.
        let _ = self.tick(1);
    }

    fn wires(&mut self) -> Option<&mut dyn Wires> {
        Some(self)
    }
}

impl Wires for RtlCard {
    fn wire_rx(&mut self, port: u8, frame: &[u8]) -> Result<(), HalError> {
        self.port_beats(port, &Beat::frame(frame), true)
    }

    fn wire_tx(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut buf = vec![0u8; 4 * port::FRAME_BYTES as usize];
        let mut p = 0u8;
        loop {
            // SAFETY: `buf` is writable for `buf.len()` bytes and `p` for one; `raw` is a
            // live instance owned by `self`.
            let n =
                unsafe { ffi::sim_port_tx(self.raw.as_ptr(), &mut p, buf.as_mut_ptr(), buf.len()) };
            let n = usize::try_from(n).ok()?;
            if n <= buf.len() {
                buf.truncate(n);
                return Some((p, buf));
            }
            buf.resize(n, 0);
        }
    }
}
