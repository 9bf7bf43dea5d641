//! Differential co-simulation of the packet port block: the reference model (`ModelCard`)
//! and the RTL (`RtlCard`, Verilator) get the same hash key, `ID_MASK`, owned bitmap and
//! CAM entries (written through the driver's key encoder, so frames of the flows hit), then
//! the same stream of frames on both wires: the crafted set, seeded random frames of a
//! flow pool and mutations of both, with host `SEND`s out of and into the pipeline
//! (including bad lengths), `POP`s (including on an empty queue), a queue left to fill,
//! owned-bitmap and `ID_MASK` changes and CAM rewrites (whose entry counters restart); with
//! `ID_MASK` 4095, one frame of each of the 4,096 identifiers.
//!
//! After every step: every frame sent out of each port (in order, with its port), every
//! counter and `HRX_*` register; whenever the queue is drained, `HRX_*` and `HRX_BUF` of
//! every queued frame; at the end of a seed every identifier's counters (all 4,096) and
//! every entry's, then soft reset and every register again. The first difference fails
//! the test with the seed, the step and the frame's bytes in hex.
#![cfg(feature = "verilator")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use driver::{
    Action, CamEntry, CamIndex, CamKey, Card, DistributionId, Flow, IpPrefix, ResultWord,
};
use hal::regs::{cam, ident, port};
use hal::{BarOffset, RegIo, Wires};
use sim_bridge::frames::{self, FlowSpec, Ip, Rng, Transport};
use sim_bridge::model::ModelCard;
use sim_bridge::verilator::RtlCard;

/// Seeds and the `ID_MASK` each starts with.
const SEEDS: [(u64, u32); 5] = [(1, 4095), (2, 0x3FF), (3, 0xFFF), (4, 0x0F3), (5, 0)];
/// Steps per seed (most are one frame).
const STEPS: usize = 6000;

fn p(r: hal::regs::Reg) -> u32 {
    port::BASE + r.offset
}
fn pa(r: hal::regs::Reg, i: u32) -> u32 {
    port::BASE + r.at(i)
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

fn ip(a: Ip) -> IpAddr {
    match a {
        Ip::V4(b) => IpAddr::V4(Ipv4Addr::from(b)),
        Ip::V6(b) => IpAddr::V6(Ipv6Addr::from(b)),
    }
}

/// The entry key a host (CardTable) writes for a flow: the canonical order (the smaller
/// endpoint as source), zone 0.
fn entry_key(f: &FlowSpec) -> CamKey {
    let host = |a: Ip| IpPrefix::host(ip(a));
    let ordered = |sp: u16, dp: u16| {
        if (f.src.octets(), sp) <= (f.dst.octets(), dp) {
            (f.src, sp, f.dst, dp)
        } else {
            (f.dst, dp, f.src, sp)
        }
    };
    let flow = match f.transport {
        Transport::Tcp { sport, dport, .. } => {
            let (a, ap, b, bp) = ordered(sport, dport);
            Flow::Tcp {
                src: host(a),
                dst: host(b),
                src_port: Some(ap),
                dst_port: Some(bp),
            }
        }
        Transport::Udp { sport, dport } => {
            let (a, ap, b, bp) = ordered(sport, dport);
            Flow::Udp {
                src: host(a),
                dst: host(b),
                src_port: Some(ap),
                dst_port: Some(bp),
            }
        }
        Transport::Icmp { ident, .. } => {
            let (a, _, b, _) = ordered(0, 0);
            Flow::Icmp {
                src: host(a),
                dst: host(b),
                id: Some(ident),
            }
        }
        Transport::Esp { spi } | Transport::NatEsp { spi, .. } => Flow::Esp {
            dst: host(f.dst),
            spi: Some(spi),
        },
        Transport::Ike {
            cookie, message_id, ..
        } => Flow::Isakmp {
            dst: IpPrefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("any"),
            initiator_cookie: Some(cookie),
            message_id: Some(message_id),
        },
    };
    CamKey {
        zone: Some(0),
        flow,
    }
}

/// A result word of every action, accept most often; unknown codes too.
fn random_result(rng: &mut Rng) -> ResultWord {
    let code = match rng.below(12) {
        0..=4 => Action::Accept.code(),
        5 => Action::Drop.code(),
        6 => Action::Reject.code(),
        7 => Action::ToHost.code(),
        8 => Action::Encrypt.code(),
        9 => Action::Decrypt.code(),
        10 => 6 + rng.below(250) as u8,
        _ => Action::Accept.code(),
    };
    ResultWord::decode(u32::from(code) | (rng.next_u64() as u32 & 0xFF00_FF00))
}

struct Pair {
    model: Card<ModelCard>,
    rtl: Card<RtlCard>,
    seed: u64,
    step: usize,
    last: Vec<u8>,
    /// HASH_KEY[0..4] as written.
    key: [u32; 4],
}

impl Pair {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "seed {} step {}: {what}\nlast frame ({} bytes): {}",
            self.seed,
            self.step,
            self.last.len(),
            hex(&self.last)
        );
    }

    fn rd(&mut self, o: u32) -> u32 {
        let a = self
            .model
            .regs_mut()
            .read32(BarOffset(o))
            .expect("model read");
        let b = self.rtl.regs_mut().read32(BarOffset(o)).expect("rtl read");
        if a != b {
            self.fail(&format!(
                "register 0x{o:04x}: model 0x{a:08x}, RTL 0x{b:08x}"
            ));
        }
        a
    }

    fn wr(&mut self, o: u32, v: u32) {
        self.model
            .regs_mut()
            .write32(BarOffset(o), v)
            .expect("model write");
        self.rtl
            .regs_mut()
            .write32(BarOffset(o), v)
            .expect("rtl write");
    }

    /// Run a port command on both and compare its STATUS.
    fn cmd(&mut self, code: u32) -> u32 {
        self.wr(p(port::CMD), code);
        let r = self.rtl.regs_mut();
        let mut polls = 0;
        while port::status::BUSY.get(r.read32(BarOffset(p(port::STATUS))).expect("status")) != 0 {
            r.idle();
            polls += 1;
            assert!(polls < 100_000, "RTL port command {code} hung");
        }
        self.rd(p(port::STATUS))
    }

    fn sent(&mut self) {
        loop {
            let a = self.model.regs_mut().wire_tx();
            let b = self.rtl.regs_mut().wire_tx();
            if a != b {
                let show = |x: &Option<(u8, Vec<u8>)>| {
                    x.as_ref()
                        .map_or("nothing".into(), |(p, f)| format!("port {p}: {}", hex(f)))
                };
                self.fail(&format!(
                    "frames sent differ: model {}, RTL {}",
                    show(&a),
                    show(&b)
                ));
            }
            if a.is_none() {
                return;
            }
        }
    }

    /// Counters and the queue head's registers.
    fn counters(&mut self) {
        for r in [
            port::RX_FRAMES,
            port::FORWARDED,
            port::PUNTED,
            port::DROPPED,
            port::TX_FRAMES,
            port::HOST_SENT,
            port::CMD_COUNT,
            port::ERR_COUNT,
            port::STATUS,
            port::HRX_COUNT,
            port::HRX_LEN,
            port::HRX_META,
            port::HRX_INDEX,
            port::HRX_RESULT,
            port::HRX_OFFSETS,
        ] {
            self.rd(p(r));
        }
        for i in 0..port::REASONS {
            self.rd(pa(port::REASON_COUNT, i));
        }
        for o in [cam::DP_LOOKUPS, cam::DP_HITS] {
            self.rd(cam::BASE + o.offset);
        }
    }

    /// The head frame's registers and bytes (one word past the length too).
    fn head(&mut self) {
        let len = self.rd(p(port::HRX_LEN));
        for r in [
            port::HRX_META,
            port::HRX_INDEX,
            port::HRX_RESULT,
            port::HRX_OFFSETS,
        ] {
            self.rd(p(r));
        }
        for i in 0..(len.div_ceil(4) + 1).min(port::HRX_BUF.count) {
            self.rd(pa(port::HRX_BUF, i));
        }
    }

    /// Read and pop every queued frame, then one POP too many.
    fn drain(&mut self) {
        while self.rd(p(port::HRX_COUNT)) > 0 {
            self.head();
            self.cmd(port::cmd::POP);
        }
        self.cmd(port::cmd::POP);
    }

    fn frame(&mut self, port_no: u8, f: &[u8]) {
        self.last = f.to_vec();
        self.model.regs_mut().wire_rx(port_no, f).expect("model rx");
        self.rtl.regs_mut().wire_rx(port_no, f).expect("rtl rx");
        self.sent();
    }

    fn send(&mut self, f: &[u8], dest: u32, len: u32) {
        self.last = f.to_vec();
        for (i, w) in f.chunks(4).enumerate() {
            let mut b = [0u8; 4];
            b[..w.len()].copy_from_slice(w);
            self.wr(pa(port::HTX_BUF, i as u32), u32::from_be_bytes(b));
        }
        self.wr(p(port::HTX_LEN), len);
        self.wr(p(port::HTX_DEST), dest);
        self.cmd(port::cmd::SEND);
        self.sent();
    }

    fn setup(&mut self, rng: &mut Rng, mask: u32) {
        for i in 0..4 {
            self.key[i as usize] = rng.next_u64() as u32;
            self.wr(pa(port::HASH_KEY, i), self.key[i as usize]);
        }
        self.wr(p(port::ID_MASK), mask);
        for i in 0..port::OWNED_WORDS {
            let v = match rng.below(8) {
                0 => 0,
                1 => rng.next_u64() as u32,
                _ => u32::MAX,
            };
            self.wr(pa(port::OWNED, i), v);
        }
    }

    fn entry(&mut self, at: u32, e: &CamEntry) {
        let a = self
            .model
            .write_at(CamIndex(at), e)
            .map_err(|x| x.to_string());
        let b = self
            .rtl
            .write_at(CamIndex(at), e)
            .map_err(|x| x.to_string());
        assert_eq!(a, b, "write_at {at}");
        a.expect("write_at");
    }

    /// Every identifier's and every entry's counters.
    fn all_counters(&mut self) {
        for d in 0..port::IDS {
            self.wr(p(port::DID_SEL), d);
            for r in [port::DID_PKTS, port::DID_BYTES_LO, port::DID_BYTES_HI] {
                self.rd(p(r));
            }
        }
        for e in 0..self.model.depth() + 2 {
            self.wr(p(port::ENT_SEL), e);
            for r in [port::ENT_PKTS, port::ENT_BYTES_LO, port::ENT_BYTES_HI] {
                self.rd(p(r));
            }
        }
    }

    /// Every register of the block (after soft reset: all back to power-on).
    fn everything(&mut self) {
        for o in (0..0x100).step_by(4) {
            self.rd(port::BASE + o);
        }
        for r in [
            port::REASON_COUNT,
            port::OWNED,
            port::HTX_BUF,
            port::HRX_BUF,
        ] {
            for i in 0..r.count {
                self.rd(pa(r, i));
            }
        }
    }
}

fn run_seed(seed: u64, mask: u32) -> (usize, u32, u32) {
    let mut rng = Rng::new(seed);
    let rtl = RtlCard::new().expect("RTL card");
    let mut pair = Pair {
        model: Card::probe(ModelCard::new()).expect("probe model"),
        rtl: Card::probe(rtl).expect("probe RTL"),
        seed,
        step: 0,
        last: Vec::new(),
        key: [0; 4],
    };
    pair.setup(&mut rng, mask);
    let pool = frames::flow_pool(&mut rng, 300);
    let crafted = frames::crafted();
    let samples = frames::sample_flows();
    // Entries for most pool flows and every sample flow.
    let mut entries: Vec<CamEntry> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for f in samples.iter().chain(pool.iter()) {
        if rng.chance(4, 5) && keys.insert(entry_key(f)) {
            entries.push(CamEntry {
                key: entry_key(f),
                did: DistributionId(rng.below(4096) as u16),
                result: random_result(&mut rng),
            });
        }
    }
    for (i, e) in entries.iter().enumerate() {
        pair.entry(i as u32, e);
    }
    let mut frames_run = 0usize;
    let mut crafted_at = 0usize;
    let mut hold_queue = 0usize;
    for step in 0..STEPS {
        pair.step = step;
        let port_no = rng.below(2) as u8;
        match rng.below(100) {
            0..=24 if crafted_at < crafted.len() => {
                let f = crafted[crafted_at].clone();
                crafted_at += 1;
                pair.frame(port_no, &f);
                frames_run += 1;
            }
            0..=69 => {
                let f = frames::random_frame(&mut rng, &pool);
                pair.frame(port_no, &f);
                frames_run += 1;
            }
            70..=84 => {
                let base = if rng.chance(1, 2) {
                    frames::random_frame(&mut rng, &pool)
                } else {
                    crafted[rng.below(crafted.len())].clone()
                };
                let f = frames::mutate(&mut rng, &base);
                pair.frame(port_no, &f);
                frames_run += 1;
            }
            85..=89 => {
                // Host SEND: out of a port or into the pipeline; now and then a bad length.
                let f = frames::random_frame(&mut rng, &pool);
                let dest = rng.below(4) as u32;
                let len = match rng.below(12) {
                    0 => 0,
                    1 => port::FRAME_BYTES + 1 + rng.below(100) as u32,
                    _ => f.len() as u32,
                };
                pair.send(&f, dest, len);
                if dest >= 2 && (1..=port::FRAME_BYTES).contains(&len) {
                    frames_run += 1;
                }
            }
            90..=94 => {
                if hold_queue == 0 {
                    pair.drain();
                    // Sometimes let the queue fill up for a while.
                    if rng.chance(1, 4) {
                        hold_queue = 30 + rng.below(60);
                    }
                }
            }
            95 => {
                let i = rng.below(port::OWNED_WORDS as usize) as u32;
                pair.wr(pa(port::OWNED, i), rng.next_u64() as u32);
            }
            96 if rng.chance(1, 4) => {
                let m = [4095, 0xFF, 0x3F0, 0][rng.below(4)];
                pair.wr(p(port::ID_MASK), m);
            }
            97 if !entries.is_empty() => {
                // Rewrite an entry (its counters restart) with a new result.
                let i = rng.below(entries.len());
                entries[i].result = random_result(&mut rng);
                let e = entries[i];
                pair.entry(i as u32, &e);
            }
            _ => {
                pair.head();
            }
        }
        hold_queue = hold_queue.saturating_sub(1);
        pair.counters();
    }
    if mask == 0xFFF {
        frames_run += every_identifier(&mut pair, &mut rng);
    }
    pair.drain();
    pair.all_counters();
    let fwd = pair.rd(p(port::FORWARDED));
    let hits = pair.rd(cam::BASE + cam::DP_HITS.offset);
    let full = pair.rd(pa(port::REASON_COUNT, port::reason::QUEUE_FULL));
    assert!(full > 0, "seed {seed}: the queue never filled");
    // Soft reset: every register of the block back to power-on, on both.
    pair.wr(
        ident::BASE + ident::CONTROL.offset,
        ident::control::SOFT_RESET.put(1),
    );
    pair.rtl.regs_mut().tick(4).expect("tick");
    pair.everything();
    pair.all_counters();
    (frames_run, fwd, hits)
}

/// One frame of each of the 4,096 identifiers (ID_MASK 4095): UDP flows drawn at random
/// until each identifier has one, its identifier the one the hash key gives (the host's
/// `Distributor` inputs, CARD.md step 6). Returns the frames run.
fn every_identifier(pair: &mut Pair, rng: &mut Rng) -> usize {
    pair.wr(p(port::ID_MASK), 0xFFF);
    let k0 = u64::from(pair.key[1]) << 32 | u64::from(pair.key[0]);
    let k1 = u64::from(pair.key[3]) << 32 | u64::from(pair.key[2]);
    let mut by_id: Vec<Option<Vec<u8>>> = vec![None; port::IDS as usize];
    let mut missing = by_id.len();
    while missing > 0 {
        let f = FlowSpec {
            src: Ip::V4([10, 1, rng.below(256) as u8, rng.below(256) as u8]),
            dst: Ip::V4([10, 2, 0, rng.below(256) as u8]),
            transport: Transport::Udp {
                sport: rng.next_u64() as u16,
                dport: rng.next_u64() as u16,
            },
        };
        let frame = f.frame(false, &[0x77; 6]);
        let id = (sim_bridge::model_port::parse(&frame)
            .expect("a UDP frame parses")
            .hash(k0, k1)
            & 0xFFF) as usize;
        if by_id[id].is_none() {
            by_id[id] = Some(frame);
            missing -= 1;
        }
    }
    for (id, f) in by_id.iter().enumerate() {
        let port_no = (id % 2) as u8;
        pair.frame(port_no, f.as_ref().expect("every identifier has a frame"));
        if id % 16 == 15 {
            pair.drain();
        }
        pair.counters();
    }
    by_id.len()
}

#[test]
fn model_and_rtl_agree_frame_by_frame() {
    let t = Instant::now();
    let mut total = 0;
    for (seed, mask) in SEEDS {
        let (n, fwd, hits) = run_seed(seed, mask);
        assert!(fwd > 100, "seed {seed}: only {fwd} frames forwarded");
        assert!(hits > 500, "seed {seed}: only {hits} CAM hits");
        eprintln!("seed {seed} (ID_MASK 0x{mask:03x}): {n} frames, {fwd} forwarded, {hits} hits");
        total += n;
    }
    eprintln!("{total} frames in {:.1} s", t.elapsed().as_secs_f64());
    assert!(total >= 20_000, "only {total} frames");
}
