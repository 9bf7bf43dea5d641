//! The RTL card's packet port block (`hdl/port.v`) on its own: register reset values (also
//! from random initial contents and after soft reset), the write-only hash key,
//! back-pressure on the transmit wires, `tkeep` = 0 beats and odd `tkeep`, frames over 2048
//! bytes, random beat streams that must not wedge it, both wires busy at once, SEND with a
//! bad length, POP on an empty queue, a command while one runs, clocks per frame, and the
//! crafted frame set against the reference model with a wildcard CAM entry of each action.
//! (`tests/tests/port_cosim.rs` holds the two cards to each other on many frames.)
#![cfg(feature = "verilator")]

mod support;

use hal::regs::{cam, ident, port, UNMAPPED_PATTERN};
use hal::{RegIo, Wires};
use sim_bridge::frames;
use sim_bridge::model::ModelCard;
use sim_bridge::verilator::{Beat, RtlCard};
use support::{own_all, p, pa, rd, stage, wr};

/// Run port command `code` to completion; returns STATUS.
fn cmd(c: &mut dyn RegIo, code: u32) -> u32 {
    wr(c, p(port::CMD), code);
    for _ in 0..100_000 {
        let s = rd(c, p(port::STATUS));
        if port::status::BUSY.get(s) == 0 {
            return s;
        }
        c.idle();
    }
    panic!("port command {code} never finished");
}

/// Take the frames both cards send out, one by one until the model has none left: they must
/// be the same. Returns how many there were.
fn same_frames_out(m: &mut ModelCard, r: &mut RtlCard) -> usize {
    let mut n = 0;
    loop {
        let (a, b) = (m.wire_tx(), r.wire_tx());
        assert_eq!(a, b, "frame {n} out");
        if a.is_none() {
            return n;
        }
        n += 1;
    }
}

/// Every register of the block but the big windows, as (offset, value).
fn snapshot(c: &mut dyn RegIo) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for o in (0..0xB0).step_by(4) {
        v.push((o, rd(c, port::BASE + o)));
    }
    for i in 0..port::REASONS {
        let o = port::REASON_COUNT.at(i);
        v.push((o, rd(c, port::BASE + o)));
    }
    let len = rd(c, p(port::HRX_LEN));
    for i in 0..len.div_ceil(4) + 1 {
        let o = port::HRX_BUF.at(i);
        v.push((o, rd(c, port::BASE + o)));
    }
    v
}

fn setup(c: &mut dyn RegIo, mask: u32) {
    for (i, k) in [0x0706_0504u32, 0x0302_0100, 0x0F0E_0D0C, 0x0B0A_0908]
        .iter()
        .enumerate()
    {
        wr(c, pa(port::HASH_KEY, i as u32), *k);
    }
    wr(c, p(port::ID_MASK), mask);
    for i in 0..port::OWNED_WORDS {
        // Every identifier but a few.
        wr(
            c,
            pa(port::OWNED, i),
            if i % 5 == 3 { 0x0F0F_0F0F } else { u32::MAX },
        );
    }
}

/// A CAM entry matching every key of kind `kind` (key word 9 bits 11:8) with `result`.
fn wildcard(c: &mut dyn RegIo, index: u32, kind: u32, result: u32) {
    for i in 0..cam::KEY_WORDS {
        wr(
            c,
            cam::BASE + cam::KEY.at(i),
            if i == 9 { kind << 8 } else { 0 },
        );
        wr(
            c,
            cam::BASE + cam::MASK.at(i),
            if i == 9 { 0xF00 } else { 0 },
        );
    }
    wr(c, cam::BASE + cam::RESULT.offset, result);
    wr(c, cam::BASE + cam::DID.offset, 0);
    wr(c, cam::BASE + cam::INDEX.offset, index);
    wr(c, cam::BASE + cam::CMD.offset, cam::cmd::WRITE);
    for _ in 0..100 {
        if cam::status::BUSY.get(rd(c, cam::BASE + cam::STATUS.offset)) == 0 {
            return;
        }
        c.idle();
    }
    panic!("CAM WRITE never finished");
}

/// A model and an RTL card set up alike: [`setup`] with `mask`, then a [`wildcard`] entry
/// for each (index, kind, result).
fn card_pair(mask: u32, entries: &[(u32, u32, u32)]) -> (ModelCard, RtlCard) {
    let mut m = ModelCard::new();
    let mut r = RtlCard::new().expect("rtl");
    for c in [&mut m as &mut dyn RegIo, &mut r] {
        setup(c, mask);
        for &(index, kind, result) in entries {
            wildcard(c, index, kind, result);
        }
    }
    (m, r)
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn crafted_frames_agree_with_the_model() {
    // TCP accept, UDP to host, ICMP reject, ESP decrypt, IKE an unknown action.
    let (mut m, mut r) = card_pair(
        0xFFF,
        &[(0, 1, 1), (3, 2, 5), (6, 3, 2), (9, 4, 4), (12, 5, 9)],
    );
    let set = frames::crafted();
    for (n, f) in set.iter().enumerate() {
        let port = (n % 2) as u8;
        m.wire_rx(port, f).unwrap();
        r.wire_rx(port, f).unwrap();
        let (a, b) = (m.wire_tx(), r.wire_tx());
        assert_eq!(a, b, "frame {n} sent differently: {}", hex(f));
        assert_eq!(
            snapshot(&mut m),
            snapshot(&mut r),
            "frame {n}: registers differ after {}",
            hex(f)
        );
        // Keep the queue from filling most of the time; let it fill now and then.
        if n % 11 != 0 {
            while rd(&mut m, p(port::HRX_COUNT)) > 0 {
                assert_eq!(cmd(&mut m, port::cmd::POP), cmd(&mut r, port::cmd::POP));
            }
        }
    }
}

/// Power-on value of block offset `o` (not the windows), per CARD.md.
fn power_on(o: u32) -> u32 {
    match o {
        _ if o == port::TYPE.offset => hal::regs::block_type::PORT,
        _ if o == port::VERSION.offset => u32::from(port::MAJOR) << 16 | u32::from(port::MINOR),
        _ if o == port::CAP_PORTS.offset => port::PORTS,
        _ if o == port::CAP_FRAME_BYTES.offset => port::FRAME_BYTES,
        _ if o == port::CAP_HOSTQ_DEPTH.offset => port::HOSTQ_DEPTH,
        _ if o == port::CAP_IDS.offset => port::IDS,
        _ if port::ALL
            .iter()
            .any(|r| (r.offset..r.offset + 4 * r.count).contains(&o)) =>
        {
            0
        }
        _ => UNMAPPED_PATTERN,
    }
}

fn check_power_on(r: &mut RtlCard, what: &str) {
    for o in (0..0x800).step_by(4) {
        assert_eq!(
            rd(r, port::BASE + o),
            power_on(o),
            "{what}: offset 0x{o:03x}"
        );
    }
    for i in (0..port::HRX_BUF.count).step_by(7) {
        assert_eq!(rd(r, pa(port::HRX_BUF, i)), 0, "{what}: HRX_BUF[{i}]");
    }
    for i in 0..port::HTX_BUF.count {
        assert_eq!(rd(r, pa(port::HTX_BUF, i)), 0, "{what}: HTX_BUF[{i}]");
    }
    for d in (0..port::IDS).step_by(97) {
        wr(r, p(port::DID_SEL), d);
        for reg in [port::DID_PKTS, port::DID_BYTES_LO, port::DID_BYTES_HI] {
            assert_eq!(rd(r, p(reg)), 0, "{what}: identifier {d}");
        }
    }
    wr(r, p(port::DID_SEL), 0);
}

#[test]
fn registers_reset_to_power_on_values_even_from_random_contents() {
    let mut r = RtlCard::new().expect("rtl");
    check_power_on(&mut r, "power-on");
    assert_eq!(
        rd(&mut r, hal::regs::esp::BASE + hal::regs::esp::NEXT.offset),
        port::BASE,
        "the ESP block's NEXT names the port block"
    );
    let mut r = RtlCard::with_args(
        sim_bridge::verilator::RTL_DEPTH,
        &["+verilator+rand+reset+2", "+verilator+seed+11"],
    )
    .expect("rtl");
    check_power_on(&mut r, "random start");
    // Dirty everything, then soft reset.
    setup(&mut r, 0xFFF);
    wildcard(&mut r, 0, 1, 1);
    let f = frames::sample_flows()[0].frame(false, &[7; 100]);
    stage(&mut r, &f, port::dest::IN0);
    assert_eq!(cmd(&mut r, port::cmd::SEND), port::status::DONE.put(1));
    for i in 0..9 {
        r.wire_rx(1, &frames::sample_flows()[2 + i % 4].frame(false, &[1; 30]))
            .unwrap();
    }
    assert_ne!(rd(&mut r, p(port::RX_FRAMES)), 0);
    assert_ne!(rd(&mut r, p(port::HRX_COUNT)), 0);
    wr(
        &mut r,
        ident::BASE + ident::CONTROL.offset,
        ident::control::SOFT_RESET.put(1),
    );
    r.tick(4).unwrap();
    while r.wire_tx().is_some() {}
    check_power_on(&mut r, "soft reset");
    wr(&mut r, p(port::ENT_SEL), 0);
    assert_eq!(rd(&mut r, p(port::ENT_PKTS)), 0);
}

#[test]
fn hash_key_is_write_only_and_keys_the_identifier() {
    let mut r = RtlCard::new().expect("rtl");
    setup(&mut r, 0xFFF);
    for i in 0..4 {
        assert_eq!(rd(&mut r, pa(port::HASH_KEY, i)), 0);
    }
    let f = frames::sample_flows()[2].frame(false, &[]);
    let parsed = sim_bridge::model_port::parse(&f).expect("parses");
    let mut dids = Vec::new();
    for key in [[1u32, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]] {
        for (i, k) in key.iter().enumerate() {
            wr(&mut r, pa(port::HASH_KEY, i as u32), *k);
        }
        assert_eq!(rd(&mut r, pa(port::HASH_KEY, 0)), 0);
        wr(&mut r, pa(port::OWNED, 0), 0); // keep some identifiers unowned is fine
        own_all(&mut r);
        r.wire_rx(0, &f).unwrap();
        let meta = rd(&mut r, p(port::HRX_META));
        assert_eq!(port::meta::REASON.get(meta), port::reason::MISS);
        let k0 = u64::from(key[1]) << 32 | u64::from(key[0]);
        let k1 = u64::from(key[3]) << 32 | u64::from(key[2]);
        let want = (parsed.hash(k0, k1) & 0xFFF) as u32;
        assert_eq!(port::meta::DID.get(meta), want);
        dids.push(want);
        assert_eq!(cmd(&mut r, port::cmd::POP), port::status::DONE.put(1));
    }
    assert_ne!(dids[0], dids[1], "the key changes the identifier");
}

#[test]
fn back_pressure_on_the_wires_loses_nothing() {
    let (mut m, mut r) = card_pair(0, &[(1, 1, 1), (2, 2, 1), (3, 3, 1), (4, 4, 1), (5, 5, 1)]);
    for c in [&mut m as &mut dyn RegIo, &mut r] {
        own_all(c);
    }
    r.set_tx_ready_pattern(7, 5);
    let mut rng = frames::Rng::new(5);
    let pool = frames::flow_pool(&mut rng, 20);
    let mut batch = Vec::new();
    for i in 0..60 {
        let f = frames::random_frame(&mut rng, &pool);
        batch.push(((i % 2) as u8, f));
    }
    // Back to back: the RTL holds rxN_tready low while it handles a frame.
    let clocks = r.stream_frames(&batch).unwrap();
    for (port_no, f) in &batch {
        m.wire_rx(*port_no, f).unwrap();
    }
    let n = same_frames_out(&mut m, &mut r);
    assert!(n > 30, "only {n} frames forwarded");
    assert_eq!(snapshot(&mut m), snapshot(&mut r));
    assert_eq!(rd(&mut r, p(port::RX_FRAMES)), 60);
    assert!(clocks > 0);
    // A host SEND out of a port under back-pressure too.
    let f = frames::sample_flows()[1].frame(false, &[3; 333]);
    for c in [&mut m as &mut dyn RegIo, &mut r] {
        stage(c, &f, port::dest::OUT1);
        assert_eq!(cmd(c, port::cmd::SEND), port::status::DONE.put(1));
    }
    assert_eq!(r.wire_tx(), Some((1, f.clone())));
    assert_eq!(m.wire_tx(), Some((1, f)));
}

#[test]
fn empty_beats_odd_tkeep_and_long_frames_never_wedge_the_port() {
    let (mut m, mut r) = card_pair(0xFFF, &[(0, 1, 1), (1, 2, 5)]);
    let f = frames::sample_flows()[0].frame(false, &[9; 45]);
    // tkeep = 0 beats between the frame's beats and before a last beat with nothing.
    let mut beats = Vec::new();
    for b in Beat::frame(&f) {
        beats.push(Beat {
            data: 0xDEAD_BEEF,
            keep: 0,
            last: false,
        });
        beats.push(Beat { last: false, ..b });
    }
    beats.push(Beat {
        data: 0x1234,
        keep: 0,
        last: true,
    });
    r.port_beats(0, &beats, true).unwrap();
    m.wire_rx(0, &f).unwrap();
    assert_eq!(m.wire_tx(), r.wire_tx());
    assert_eq!(snapshot(&mut m), snapshot(&mut r));
    // A beat whose tkeep is not contiguous keeps its lanes below the first gap.
    let g = frames::sample_flows()[2].frame(false, &[]);
    let mut beats = Beat::frame(&g);
    let cut = beats.len() - 1;
    beats[cut].keep = 0b1011_0111;
    let mut want = g[..8 * cut].to_vec();
    want.extend_from_slice(&g[8 * cut..(8 * cut + 3).min(g.len())]);
    r.port_beats(1, &beats, true).unwrap();
    m.wire_rx(1, &want).unwrap();
    assert_eq!(snapshot(&mut m), snapshot(&mut r));
    // Frames over 2048 bytes are dropped TOO_LONG whatever their length; 2048 is fine.
    for len in [2049usize, 2055, 2056, 4096, 9000, 2048] {
        let mut big = f.clone();
        big.resize(len, 0x5C);
        m.wire_rx(len as u8 % 2, &big).unwrap();
        r.wire_rx(len as u8 % 2, &big).unwrap();
        assert_eq!(m.wire_tx(), r.wire_tx(), "{len} bytes");
        assert_eq!(snapshot(&mut m), snapshot(&mut r), "{len} bytes");
    }
    // A frame with no bytes at all, then runts: dropped RUNT; the port still works.
    r.port_beats(0, &Beat::frame(&[]), true).unwrap();
    m.wire_rx(0, &[]).unwrap();
    for n in [1usize, 8, 13] {
        m.wire_rx(0, &f[..n]).unwrap();
        r.wire_rx(0, &f[..n]).unwrap();
    }
    m.wire_rx(1, &f).unwrap();
    r.wire_rx(1, &f).unwrap();
    assert_eq!(m.wire_tx(), r.wire_tx());
    assert_eq!(snapshot(&mut m), snapshot(&mut r));
    assert_eq!(
        rd(&mut r, pa(port::REASON_COUNT, port::reason::TOO_LONG)),
        5
    );
}

#[test]
fn send_bad_len_pop_empty_and_busy() {
    use port::{err, status};
    let mut r = RtlCard::new().expect("rtl");
    setup(&mut r, 0xFFF);
    let done = |e: u32| status::DONE.put(1) | status::ERR.put(e);
    assert_eq!(cmd(&mut r, port::cmd::POP), done(err::EMPTY));
    for len in [0, port::FRAME_BYTES + 1, u32::MAX] {
        wr(&mut r, p(port::HTX_LEN), len);
        assert_eq!(cmd(&mut r, port::cmd::SEND), done(err::BAD_LEN));
    }
    assert_eq!(cmd(&mut r, 77), done(err::UNKNOWN_CMD));
    assert_eq!(rd(&mut r, p(port::HOST_SENT)), 0);
    assert_eq!(rd(&mut r, p(port::ERR_COUNT)), 5);
    assert_eq!(rd(&mut r, p(port::CMD_COUNT)), 5);
    assert!(r.wire_tx().is_none());
    // A long SEND into the pipeline is busy for a while: a CMD meanwhile is dropped with
    // BUSY, staging writes too; the SEND completes and BUSY stays in ERR.
    let f = frames::sample_flows()[1].frame(false, &[4; 1400]);
    stage(&mut r, &f, port::dest::IN1);
    wr(&mut r, p(port::CMD), port::cmd::SEND);
    assert_eq!(rd(&mut r, p(port::STATUS)), status::BUSY.put(1));
    wr(&mut r, p(port::CMD), port::cmd::POP);
    wr(&mut r, p(port::HTX_LEN), 5);
    let s = loop {
        let s = rd(&mut r, p(port::STATUS));
        if status::BUSY.get(s) == 0 {
            break s;
        }
    };
    assert_eq!(s, done(err::BUSY));
    assert_eq!(rd(&mut r, p(port::CMD)), port::cmd::SEND);
    assert_eq!(rd(&mut r, p(port::HTX_LEN)), f.len() as u32);
    assert_eq!(rd(&mut r, p(port::ERR_COUNT)), 6);
    assert_eq!(rd(&mut r, p(port::CMD_COUNT)), 6);
    assert_eq!(rd(&mut r, p(port::HOST_SENT)), 1);
    // The frame went into the pipeline from the host on port 1: a miss, queued.
    let meta = rd(&mut r, p(port::HRX_META));
    assert_eq!(port::meta::FROM_HOST.get(meta), 1);
    assert_eq!(port::meta::PORT.get(meta), 1);
    assert_eq!(port::meta::REASON.get(meta), port::reason::MISS);
    assert_eq!(rd(&mut r, p(port::HRX_INDEX)), u32::MAX);
    assert_eq!(rd(&mut r, p(port::HRX_LEN)), f.len() as u32);
    assert_eq!(cmd(&mut r, port::cmd::POP), done(err::OK));
    assert_eq!(rd(&mut r, p(port::HRX_INDEX)), 0, "empty queue");
}

/// Clocks per frame by size, frames forwarded back to back (an ACCEPT hit), printed for the
/// benchmark table; the bound only catches a pipeline that got far slower.
#[test]
fn clocks_per_frame_by_size() {
    let mut r = RtlCard::new().expect("rtl");
    setup(&mut r, 0xFFF);
    own_all(&mut r);
    wildcard(&mut r, 0, 2, 1);
    let flow = frames::sample_flows()[2]; // IPv4 UDP
    for size in [64usize, 512, 1500] {
        let base = flow.frame(false, &[]);
        let f = flow.frame(false, &vec![0xA5; size - base.len()]);
        assert_eq!(f.len(), size);
        let batch: Vec<(u8, Vec<u8>)> = (0..50).map(|i| ((i % 2) as u8, f.clone())).collect();
        let clocks = r.stream_frames(&batch).unwrap();
        let mut out = 0;
        while let Some((_, g)) = r.wire_tx() {
            assert_eq!(g, f);
            out += 1;
        }
        assert_eq!(out, 50);
        let per = clocks as f64 / 50.0;
        eprintln!("{size}-byte frames: {per:.1} clocks per frame");
        let beats = size.div_ceil(8) as f64;
        assert!(
            per < 2.0 * beats + 80.0,
            "{size} bytes: {per} clocks per frame"
        );
    }
}

/// Random beat streams (any `tkeep`, empty beats, frames of any length up to past the
/// buffer) never wedge the block, and the RTL handles each as the model handles the bytes
/// the beats carry (each beat's lanes up to its first clear `tkeep` bit).
#[test]
fn random_beats_never_wedge_and_agree_with_the_model() {
    let (mut m, mut r) = card_pair(0xFFF, &[(0, 1, 1), (1, 2, 0), (2, 3, 5)]);
    let mut rng = frames::Rng::new(77);
    let pool = frames::flow_pool(&mut rng, 16);
    for n in 0..400 {
        let base = if rng.chance(1, 2) {
            frames::random_frame(&mut rng, &pool)
        } else {
            let len = rng.below(2200);
            rng.bytes(len)
        };
        let mut beats = Beat::frame(&base);
        // Scramble: empty beats, odd tkeep, cut short.
        for _ in 0..rng.below(4) {
            let i = rng.below(beats.len());
            match rng.below(3) {
                0 => beats.insert(
                    i,
                    Beat {
                        data: rng.next_u64(),
                        keep: 0,
                        last: false,
                    },
                ),
                1 => beats[i].keep = rng.next_u64() as u8,
                _ => {
                    beats.truncate(i + 1);
                    beats[i].last = true;
                }
            }
        }
        if let Some(b) = beats.last_mut() {
            b.last = true;
        }
        let mut bytes = Vec::new();
        for b in &beats {
            let lanes = b.keep.trailing_ones() as usize;
            bytes.extend_from_slice(&b.data.to_le_bytes()[..lanes]);
        }
        let port_no = (n % 2) as u8;
        r.port_beats(port_no, &beats, true)
            .unwrap_or_else(|e| panic!("beat stream {n} wedged the block: {e}"));
        m.wire_rx(port_no, &bytes).unwrap();
        assert_eq!(m.wire_tx(), r.wire_tx(), "stream {n}: {}", hex(&bytes));
        assert_eq!(
            snapshot(&mut m),
            snapshot(&mut r),
            "stream {n}: {}",
            hex(&bytes)
        );
        if n % 3 == 0 {
            while rd(&mut m, p(port::HRX_COUNT)) > 0 {
                assert_eq!(cmd(&mut m, port::cmd::POP), cmd(&mut r, port::cmd::POP));
            }
        }
    }
    assert_eq!(rd(&mut r, p(port::RX_FRAMES)), 400);
}

/// Both wires busy at once: the block takes whole frames from the two ports in turn (the
/// port not served last first, port 1 first after reset), so the model fed the frames in
/// that order agrees; every frame of both ports is handled.
#[test]
fn both_ports_at_once_take_turns() {
    let (mut m, mut r) = card_pair(0xFFF, &[(0, 1, 1), (1, 2, 1)]);
    let mut rng = frames::Rng::new(31);
    let pool = frames::flow_pool(&mut rng, 12);
    let f0: Vec<Vec<u8>> = (0..20)
        .map(|_| frames::random_frame(&mut rng, &pool))
        .collect();
    let f1: Vec<Vec<u8>> = (0..20)
        .map(|_| frames::random_frame(&mut rng, &pool))
        .collect();
    let beats = |fs: &[Vec<u8>]| fs.iter().flat_map(|f| Beat::frame(f)).collect::<Vec<_>>();
    r.port_beats_both(&beats(&f0), &beats(&f1)).unwrap();
    for i in 0..20 {
        m.wire_rx(1, &f1[i]).unwrap();
        m.wire_rx(0, &f0[i]).unwrap();
    }
    same_frames_out(&mut m, &mut r);
    assert_eq!(snapshot(&mut m), snapshot(&mut r));
    assert_eq!(rd(&mut r, p(port::RX_FRAMES)), 40);
}
