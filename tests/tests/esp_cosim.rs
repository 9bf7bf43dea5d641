//! Differential test of the card's ESP path: the reference model (always) and
//! the Verilator RTL (feature `verilator`) against the software path and raw
//! `ring`, on random keys (AES-128 and AES-256), ICV lengths, ESN, and
//! payloads of 0..=2000 bytes; with tampered, replayed and badly padded
//! packets mixed in. Every packet the card builds must equal the software
//! path's byte for byte (both use the sequence number as IV), open under raw
//! `ring`, and decapsulate on both; every verdict and every SA state must
//! agree.
//!
//! Case counts: `ESP_COSIM_CASES` (default 3000 for the model and for the
//! RTL).

use driver::esp::{
    CardEsp, Cipher, Direction, EspCipher, EspEngine, EspError, EspRequest, IcvLen, ReplayWindow,
    SaConfig, SaKey, SaState, SoftwareEsp, Spi,
};
use driver::Card;
use hal::RegIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

struct Pair {
    spi: Spi,
    key: Vec<u8>,
    salt: [u8; 4],
    icv: usize,
    esn: bool,
}

/// Raw-ring reference: open an ESP packet whose full sequence number is
/// `seq`; returns the decrypted body (payload, padding, trailer) or `None`.
fn ring_open(p: &Pair, seq: u64, pkt: &[u8]) -> Option<Vec<u8>> {
    let alg = if p.key.len() == 32 {
        &AES_256_GCM
    } else {
        &AES_128_GCM
    };
    let key = LessSafeKey::new(UnboundKey::new(alg, &p.key).ok()?);
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&p.salt);
    nonce[4..].copy_from_slice(&pkt[8..16]);
    let mut aad = pkt[..4].to_vec();
    if p.esn {
        aad.extend_from_slice(&seq.to_be_bytes());
    } else {
        aad.extend_from_slice(&pkt[4..8]);
    }
    let ct = &pkt[16..pkt.len() - p.icv];
    let icv = &pkt[pkt.len() - p.icv..];
    // CTR is its own inverse: sealing the ciphertext gives the plaintext,
    // sealing that gives the ciphertext's full tag.
    let seal = |data: &mut Vec<u8>| {
        key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), data)
            .ok()
    };
    let mut body = ct.to_vec();
    let _keystream_tag = seal(&mut body)?;
    let mut again = body.clone();
    let tag = seal(&mut again)?;
    (again == ct && &tag.as_ref()[..p.icv] == icv).then_some(body)
}

fn same_verdict(
    a: &Result<(driver::esp::EspOutcome, Vec<u8>), EspError>,
    b: &Result<(driver::esp::EspOutcome, Vec<u8>), EspError>,
) -> bool {
    match (a, b) {
        (Ok((oa, pa)), Ok((ob, pb))) => {
            oa.seq == ob.seq && oa.next_header == ob.next_header && pa == pb
        }
        // The card cannot say which trailer check failed.
        (Err(EspError::Malformed { .. }), Err(EspError::Malformed { .. })) => true,
        (Err(x), Err(y)) => x == y,
        _ => false,
    }
}

fn run<R: RegIo>(card: Card<R>, cases: usize, seed: u64, label: &str) {
    let mut hw = CardEsp::new(card).expect("card has SA table and ESP engine");
    let mut sw = SoftwareEsp::new(64);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut pairs = Vec::new();
    for i in 0..12u32 {
        let bits = if i % 2 == 0 { 128 } else { 256 };
        let key: Vec<u8> = (0..bits / 8).map(|_| rng.random()).collect();
        let salt: [u8; 4] = rng.random();
        let icv = [IcvLen::Icv16, IcvLen::Icv16, IcvLen::Icv12, IcvLen::Icv8][(i % 4) as usize];
        let esn = i % 3 == 0;
        let spi = Spi(0x1000_0000 | (i << 8) | rng.random_range(0..256));
        for dir in [Direction::Outbound, Direction::Inbound] {
            let mut sa = SaConfig::gcm(spi, dir, SaKey::new(&key, salt).expect("key"));
            sa.icv = icv;
            sa.esn = esn;
            sa.cipher = Cipher::AesGcm;
            hw.install_sa(&sa).expect("install on card");
            sw.install_sa(&sa).expect("install in software");
        }
        // Some SAs start near the 32-bit boundary (ESN wrap / exhaustion).
        if i % 4 == 3 {
            let start = if esn { 0xFFFF_FFF0u64 } else { 0xFFFF_FF80 };
            let st = SaState {
                seq: start,
                ..SaState::default()
            };
            hw.set_sa_state(Direction::Outbound, spi, &st)
                .expect("state");
            sw.set_sa_state(Direction::Outbound, spi, &st)
                .expect("state");
            let st = SaState {
                window: ReplayWindow {
                    top: start,
                    bitmap: 1,
                },
                ..SaState::default()
            };
            hw.set_sa_state(Direction::Inbound, spi, &st)
                .expect("state");
            sw.set_sa_state(Direction::Inbound, spi, &st)
                .expect("state");
        }
        pairs.push(Pair {
            spi,
            key,
            salt,
            icv: icv.bytes(),
            esn,
        });
    }
    let mut history: Vec<(usize, Vec<u8>)> = Vec::new();
    let (mut ok, mut tampered, mut replays, mut badpad, mut exhausted) = (0, 0, 0, 0, 0);
    for case in 0..cases {
        let pi = rng.random_range(0..pairs.len());
        let p = &pairs[pi];
        let len = match rng.random_range(0..10) {
            0 => rng.random_range(0..16),
            1 => 2000,
            _ => rng.random_range(0..=2000),
        };
        let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let nh = rng.random();
        let req = EspRequest::Encapsulate {
            spi: p.spi,
            next_header: nh,
            payload: &payload,
        };
        let h = hw.process(req);
        let s = sw.process(req);
        let (ho, hpkt) = match (h, s) {
            (Ok(h), Ok(s)) => {
                assert_eq!(
                    h.1, s.1,
                    "{label} case {case}: card and software packets differ (len {len})"
                );
                assert_eq!(h.0.seq, s.0.seq);
                h
            }
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "{label} case {case}");
                assert!(
                    matches!(a, EspError::SeqExhausted { .. }),
                    "{label} case {case}: {a:?}"
                );
                exhausted += 1;
                continue;
            }
            (a, b) => panic!("{label} case {case}: card {a:?} vs software {b:?}"),
        };
        // Raw ring opens it and finds payload, padding 1,2,3.. and the trailer.
        let body = ring_open(p, ho.seq, &hpkt)
            .unwrap_or_else(|| panic!("{label} case {case}: ring rejects the card's packet"));
        let pad = (4 - (len + 2) % 4) % 4;
        assert_eq!(body.len(), len + pad + 2);
        assert_eq!(&body[..len], &payload[..]);
        assert!((0..pad).all(|k| usize::from(body[len + k]) == k + 1));
        assert_eq!((body[len + pad], body[len + pad + 1]), (pad as u8, nh));

        // Inbound: sometimes tamper, sometimes replay an old packet.
        let mut pkt = hpkt.clone();
        let what = rng.random_range(0..20);
        if what == 0 {
            let bit = rng.random_range(4 * 8..pkt.len() * 8);
            pkt[bit / 8] ^= 1 << (bit % 8);
            tampered += 1;
        } else if what == 1 && !history.is_empty() {
            pkt = history[rng.random_range(0..history.len())].1.clone();
            replays += 1;
        } else if what == 2 {
            // Authentic but badly padded: sealed with ring under the SA's key.
            let ec = EspCipher::new(
                &SaKey::new(&p.key, p.salt).expect("key"),
                Cipher::AesGcm,
                IcvLen::from_bytes(p.icv).expect("icv"),
            )
            .expect("cipher");
            let n = pkt.len() - 16 - p.icv;
            let mut b = body.clone();
            b[n - 2] = 3; // claims 3 bytes of padding
            if n >= 5 {
                b[n - 3] = 9; // which are not 1, 2, 3
            }
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&p.salt);
            nonce[4..].copy_from_slice(&pkt[8..16]);
            let mut aad = pkt[..4].to_vec();
            if p.esn {
                aad.extend_from_slice(&ho.seq.to_be_bytes());
            } else {
                aad.extend_from_slice(&pkt[4..8]);
            }
            let tag = ec.gcm_seal(nonce, &aad, &mut b).expect("seal");
            pkt.truncate(16);
            pkt.extend_from_slice(&b);
            pkt.extend_from_slice(&tag[..p.icv]);
            badpad += 1;
        }
        let h = hw.process(EspRequest::Decapsulate { packet: &pkt });
        let s = sw.process(EspRequest::Decapsulate { packet: &pkt });
        assert!(
            same_verdict(&h, &s),
            "{label} case {case} (what {what}): card {h:?} vs software {s:?}"
        );
        if what > 2 || (what == 1 && history.is_empty()) {
            let (o, pt) = h
                .as_ref()
                .unwrap_or_else(|e| panic!("{label} case {case}: genuine packet rejected: {e:?}"));
            assert_eq!((&pt[..], o.next_header), (&payload[..], nh));
            ok += 1;
            if history.len() < 64 {
                history.push((pi, hpkt));
            } else {
                let k = rng.random_range(0..64);
                history[k] = (pi, hpkt);
            }
        }
        if case % 97 == 0 {
            for p in &pairs {
                for dir in [Direction::Outbound, Direction::Inbound] {
                    let a = hw.sa_state(dir, p.spi).expect("card state");
                    let b = sw.sa_state(dir, p.spi).expect("software state");
                    assert_eq!(a, b, "{label} case {case}: SA state {dir} {}", p.spi);
                }
            }
        }
    }
    for p in &pairs {
        for dir in [Direction::Outbound, Direction::Inbound] {
            assert_eq!(
                hw.sa_state(dir, p.spi).expect("card"),
                sw.sa_state(dir, p.spi).expect("software")
            );
        }
    }
    println!(
        "{label}: {cases} cases: {ok} round trips equal to software and ring, {tampered} tampered, {replays} replayed, \
         {badpad} badly padded, {exhausted} sequence-exhausted; every verdict and SA state equal"
    );
    // Removing the inbound SAs frees their slots and CAM entries.
    for p in &pairs {
        hw.remove_sa(Direction::Inbound, p.spi).expect("remove");
    }
    for (_, pkt) in &history {
        let r = hw.process(EspRequest::Decapsulate { packet: pkt });
        assert!(
            matches!(r, Err(EspError::UnknownSpi { .. })),
            "{label}: {r:?}"
        );
    }
}

fn cases(default: usize) -> usize {
    std::env::var("ESP_COSIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn model_card_matches_software_and_ring() {
    let card = Card::probe(sim_bridge::model::ModelCard::new()).expect("probe");
    run(card, cases(3000), 1, "model");
}

#[cfg(feature = "verilator")]
#[test]
fn rtl_card_matches_software_and_ring() {
    let card = Card::probe(sim_bridge::verilator::RtlCard::new().expect("rtl")).expect("probe");
    run(card, cases(3000), 2, "rtl");
}

/// The RTL and the model agree register for register on random raw traffic
/// to the SA table and ESP engine blocks: staging writes (including key,
/// salt and buffer words), every command code and a few unknown ones, bad
/// slots, bad configurations, bad lengths, wrong directions, SPI mismatches.
#[cfg(feature = "verilator")]
#[test]
fn rtl_and_model_agree_on_raw_sa_and_esp_register_traffic() {
    use hal::regs::{esp, sa};
    use hal::BarOffset;
    use sim_bridge::model::ModelCard;
    use sim_bridge::verilator::{RtlCard, RTL_DEPTH};

    let mut rtl = RtlCard::new().expect("rtl");
    let mut model = ModelCard::with_depth(RTL_DEPTH).expect("model");
    let mut rng = SmallRng::seed_from_u64(0xE5E5);
    let wait = |r: &mut RtlCard| {
        for _ in 0..100_000 {
            let s1 = r
                .read32(BarOffset(sa::BASE + sa::STATUS.offset))
                .expect("status");
            let s2 = r
                .read32(BarOffset(esp::BASE + esp::STATUS.offset))
                .expect("status");
            if s1 & 1 == 0 && s2 & 1 == 0 {
                return;
            }
        }
        panic!("RTL command never finished");
    };
    let keys = [[0x1111_1111u32; 8], [0x2222_2222; 8]];
    let steps = cases(1500);
    for step in 0..steps {
        let mut ops: Vec<(u32, u32)> = Vec::new();
        let slot = [0, 1, 2, 3, 255, 256, rng.random()][rng.random_range(0..7)];
        match rng.random_range(0..8) {
            0..=2 => {
                // Install or inspect an SA.
                ops.push((sa::BASE + sa::SLOT.offset, slot));
                ops.push((
                    sa::BASE + sa::SPI.offset,
                    [0x100, 0x200][rng.random_range(0..2)],
                ));
                let icv = [8, 12, 16, 16, 0, 31][rng.random_range(0..6)];
                let cfg = sa::config::OUTBOUND.put(rng.random_range(0..2))
                    | sa::config::ESN.put(rng.random_range(0..2))
                    | sa::config::KEY256.put(rng.random_range(0..2))
                    | sa::config::ICV_BYTES.put(icv)
                    | if rng.random_bool(0.2) {
                        rng.random()
                    } else {
                        0
                    };
                ops.push((sa::BASE + sa::CONFIG.offset, cfg));
                ops.push((sa::BASE + sa::SALT.offset, [7, 9][rng.random_range(0..2)]));
                let k = keys[rng.random_range(0..2)];
                for (i, w) in k.iter().enumerate() {
                    ops.push((sa::BASE + sa::KEY.at(i as u32), *w));
                }
                let seq: u64 =
                    [0, 5, 0xFFFF_FFF0, u64::MAX - 1, rng.random()][rng.random_range(0..5)];
                ops.push((sa::BASE + sa::SEQ_LO.offset, seq as u32));
                ops.push((sa::BASE + sa::SEQ_HI.offset, (seq >> 32) as u32));
                ops.push((sa::BASE + sa::WIN_LO.offset, rng.random()));
                ops.push((sa::BASE + sa::WIN_HI.offset, rng.random()));
                ops.push((sa::BASE + sa::PKTS_LO.offset, rng.random()));
                ops.push((sa::BASE + sa::AUTH_FAILS.offset, rng.random()));
                let code = [1, 1, 1, 2, 3, 3, 4, 5, 0, 6, rng.random()][rng.random_range(0..11)];
                ops.push((sa::BASE + sa::CMD.offset, code));
            }
            3 => {
                // Scribble the packet buffer.
                let at = rng.random_range(0..esp::BUF.count);
                for i in 0..rng.random_range(1..40) {
                    ops.push((
                        esp::BASE + esp::BUF.at((at + i) % esp::BUF.count),
                        rng.random(),
                    ));
                }
                if rng.random_bool(0.5) {
                    ops.push((
                        esp::BASE + esp::BUF.at(0),
                        [0x100, 0x200][rng.random_range(0..2)],
                    ));
                }
            }
            _ => {
                // Run the engine, often on what the last command left.
                ops.push((esp::BASE + esp::SLOT.offset, slot));
                if rng.random_bool(0.6) {
                    let len = [
                        0,
                        1,
                        17,
                        18,
                        26,
                        30,
                        34,
                        100,
                        1500,
                        2011,
                        2012,
                        2048,
                        2049,
                        rng.random(),
                    ][rng.random_range(0..14)];
                    ops.push((esp::BASE + esp::LEN.offset, len));
                }
                ops.push((esp::BASE + esp::NEXT_HDR.offset, rng.random()));
                let code = [1, 1, 2, 2, 2, 0, 3, rng.random()][rng.random_range(0..8)];
                ops.push((esp::BASE + esp::CMD.offset, code));
            }
        }
        for (o, v) in ops {
            rtl.write32(BarOffset(o), v).expect("rtl write");
            model.write32(BarOffset(o), v).expect("model write");
            wait(&mut rtl);
        }
        let mut offsets: Vec<u32> = (0..0xA0).step_by(4).map(|o| sa::BASE + o).collect();
        offsets.extend((0..0x40).step_by(4).map(|o| esp::BASE + o));
        let words = if step % 16 == 0 { esp::BUF.count } else { 12 };
        offsets.extend((0..words).map(|i| esp::BASE + esp::BUF.at(i)));
        for o in offsets {
            let a = rtl.read32(BarOffset(o)).expect("rtl read");
            let b = model.read32(BarOffset(o)).expect("model read");
            assert_eq!(
                a, b,
                "step {step}: offset 0x{o:05x}: rtl 0x{a:08x} model 0x{b:08x}"
            );
        }
    }
    let ok = |r: &mut ModelCard, reg: hal::regs::Reg| {
        r.read32(BarOffset(esp::BASE + reg.offset)).expect("read")
    };
    println!(
        "raw SA/ESP traffic: {steps} steps, RTL and model agree; ESP commands {}, errors {}",
        ok(&mut model, esp::CMD_COUNT),
        ok(&mut model, esp::ERR_COUNT)
    );
}
