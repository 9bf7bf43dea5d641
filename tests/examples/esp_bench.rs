//! ESP benchmark.
//!
//! 1. With feature `verilator`: the RTL ESP engine's clock cycles per
//!    ENCAP/DECAP command (from the CMD write to STATUS.BUSY clearing) on 64-,
//!    512-, 1400- and 2000-byte payloads, both key sizes, and the cycles per
//!    16-byte block (the slope between 64 and 2000 bytes; target <= 14 for
//!    AES-256).
//! 2. Software-path throughput as a ratio to raw `ring` AES-GCM seal/open in
//!    the same run, on 64-, 512- and 1400-byte payloads, both key sizes
//!    (target >= 0.8). The ratio that measures the engine is against ring on
//!    the same bytes the ESP path encrypts (payload plus padding and
//!    trailer); the ratio against ring on the bare payload is printed beside
//!    it.
//!
//! Run with `cargo run --release -p tests --example esp_bench --features verilator`
//! (without the feature only part 2 runs).

use std::hint::black_box;
use std::time::{Duration, Instant};

use driver::esp::{
    Direction, EspEngine, EspRequest, ReplayWindow, SaConfig, SaKey, SaState, SoftwareEsp, Spi,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

const SPI: Spi = Spi(0x1000_0001);
const PACKETS: usize = 4096;

/// Best of `rounds` runs of `f` over `n` items: nanoseconds per item.
fn best_ns(rounds: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    best.as_nanos() as f64 / n as f64
}

fn main() {
    #[cfg(feature = "verilator")]
    rtl::cycles();
    software_ratios();
}

#[cfg(feature = "verilator")]
mod rtl {
    use driver::esp::{CardEsp, Direction, EspEngine, EspRequest, SaConfig, SaKey, Spi};
    use driver::Card;
    use hal::regs::esp;
    use hal::{BarOffset, RegIo};
    use sim_bridge::verilator::RtlCard;

    /// Clock cycles from the CMD write to BUSY clearing, for one command on
    /// a buffer already staged.
    fn timed(r: &mut RtlCard, code: u32) -> u64 {
        let at = |o: u32| BarOffset(esp::BASE + o);
        let c0 = r.cycles();
        r.write32(at(esp::CMD.offset), code).expect("cmd");
        loop {
            let s = r.read32(at(esp::STATUS.offset)).expect("status");
            if esp::status::BUSY.get(s) == 0 {
                assert_eq!(esp::status::ERR.get(s), esp::err::OK, "engine error");
                return r.cycles() - c0;
            }
        }
    }

    fn stage(r: &mut RtlCard, at: u32, bytes: &[u8]) {
        for (i, c) in bytes.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            r.write32(
                BarOffset(esp::BASE + esp::BUF.at(at / 4 + i as u32)),
                u32::from_be_bytes(w),
            )
            .expect("buf");
        }
    }

    /// Stages `bytes` at buffer byte `at` as the input of command `code` on SA slot `slot`,
    /// then times the command.
    fn staged_and_timed(r: &mut RtlCard, at: u32, bytes: &[u8], slot: u16, code: u32) -> u64 {
        stage(r, at, bytes);
        r.write32(BarOffset(esp::BASE + esp::SLOT.offset), u32::from(slot))
            .expect("slot");
        r.write32(BarOffset(esp::BASE + esp::LEN.offset), bytes.len() as u32)
            .expect("len");
        timed(r, code)
    }

    pub fn cycles() {
        println!("RTL ESP engine (Verilator), clock cycles per command, CMD write to BUSY clear");
        println!("(each DECAP here switches SA slot, so it includes reloading the key schedule):");
        println!("key  op      64 B    512 B   1400 B   2000 B   cycles/16-byte block (64..2000 B slope)");
        for bits in [128usize, 256] {
            let key: Vec<u8> = (0..bits / 8).map(|i| i as u8).collect();
            let card = Card::probe(RtlCard::new().expect("rtl card")).expect("probe");
            let mut hw = CardEsp::new(card).expect("esp blocks");
            let spi = Spi(0x0BE0_0001);
            let sa_key = SaKey::new(&key, [9; 4]).expect("key");
            let mut install = |dir| {
                hw.install_sa(&SaConfig::gcm(spi, dir, sa_key.clone()))
                    .expect("install")
            };
            let (tx, rx) = (install(Direction::Outbound), install(Direction::Inbound));
            let sizes = [64usize, 512, 1400, 2000];
            let mut enc = Vec::new();
            let mut dec = Vec::new();
            for &n in &sizes {
                let payload = vec![0xA5u8; n];
                // Warm the key schedule, then measure ENCAP on the staged payload.
                let pkt = hw
                    .process(EspRequest::Encapsulate {
                        spi,
                        next_header: 4,
                        payload: &payload,
                    })
                    .expect("enc")
                    .1;
                let r = hw.card_mut().regs_mut();
                enc.push(staged_and_timed(
                    r,
                    esp::PAYLOAD_OFFSET,
                    &payload,
                    tx.0,
                    esp::cmd::ENCAP,
                ));
                // DECAP of the packet built before (its sequence number is fresh).
                dec.push(staged_and_timed(r, 0, &pkt, rx.0, esp::cmd::DECAP));
            }
            let blocks = |n: usize| (n + 2).div_ceil(16) as f64;
            for (op, v) in [("encap", &enc), ("decap", &dec)] {
                let slope = (v[3] - v[0]) as f64 / (blocks(2000) - blocks(64));
                println!(
                    "{bits:>3}  {op}  {:>6}  {:>7}  {:>7}  {:>7}   {slope:.2}{}",
                    v[0],
                    v[1],
                    v[2],
                    v[3],
                    if bits == 256 { "  (target <= 14)" } else { "" }
                );
            }
        }
        println!();
    }
}

/// The nonce of the ring baselines' packet `n`: the counter in the last 8 bytes.
fn counter_nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

fn software_ratios() {
    let rounds = 7;
    println!("ns per packet; ring(payload) seals the bare payload, ring(body) the ESP body (payload+padding+trailer)");
    println!(
        "size  key  op   ring(payload) ring(body)  esp  ring MB/s  esp MB/s  vs payload  vs body"
    );
    let mut worst: f64 = f64::MAX;
    for bits in [128usize, 256] {
        let key_bytes: Vec<u8> = (0..bits / 8).map(|i| (i * 7 + 3) as u8).collect();
        let alg = if bits == 256 {
            &AES_256_GCM
        } else {
            &AES_128_GCM
        };
        let raw = LessSafeKey::new(UnboundKey::new(alg, &key_bytes).expect("key"));
        for size in [64usize, 512, 1400] {
            let payload: Vec<u8> = vec![0x55u8; size];
            let key = SaKey::new(&key_bytes, [1, 2, 3, 4]).expect("key");
            let mut tx = SoftwareEsp::new(16);
            let mut rx = SoftwareEsp::new(16);
            tx.install_sa(&SaConfig::gcm(SPI, Direction::Outbound, key.clone()))
                .expect("tx");
            rx.install_sa(&SaConfig::gcm(SPI, Direction::Inbound, key))
                .expect("rx");

            // Raw ring: copy the plaintext into a buffer, seal it in place,
            // append the tag; measured on the bare payload and on the ESP body
            // (payload, padding and the 2-byte trailer: what the ESP path
            // really encrypts).
            let body = size + (4 - (size + 2) % 4) % 4 + 2;
            let mut ctr = 0u64;
            let mut raw_seal = |len: usize| {
                let plain = vec![0x55u8; len];
                let mut buf = vec![0u8; len + 16];
                best_ns(rounds, PACKETS, || {
                    for _ in 0..PACKETS {
                        ctr += 1;
                        let n = counter_nonce(ctr);
                        buf[..len].copy_from_slice(&plain);
                        let tag = raw
                            .seal_in_place_separate_tag(n, Aad::from(&[0u8; 8]), &mut buf[..len])
                            .expect("seal");
                        buf[len..].copy_from_slice(tag.as_ref());
                        black_box(&buf);
                    }
                })
            };
            let ring_seal_bare = raw_seal(size);
            let ring_seal = raw_seal(body);
            let mut out = Vec::with_capacity(size + 64);
            let esp_seal = best_ns(rounds, PACKETS, || {
                for _ in 0..PACKETS {
                    tx.process_into(
                        EspRequest::Encapsulate {
                            spi: SPI,
                            next_header: 4,
                            payload: &payload,
                        },
                        &mut out,
                    )
                    .expect("encapsulate");
                    black_box(&out);
                }
            });

            // Open: both sides open PACKETS distinct packets, copying each into a work buffer.
            let raw_open = |len: usize| {
                let sealed: Vec<(u64, Vec<u8>)> = (1..=PACKETS as u64)
                    .map(|i| {
                        let n = counter_nonce(i);
                        let mut b = vec![0x55u8; len];
                        let tag = raw
                            .seal_in_place_separate_tag(n, Aad::from(&[0u8; 8]), &mut b)
                            .expect("seal");
                        b.extend_from_slice(tag.as_ref());
                        (i, b)
                    })
                    .collect();
                let mut work: Vec<u8> = Vec::with_capacity(len + 16);
                best_ns(rounds, PACKETS, || {
                    for (i, b) in &sealed {
                        let n = counter_nonce(*i);
                        work.clear();
                        work.extend_from_slice(b);
                        let p = raw
                            .open_in_place(n, Aad::from(&[0u8; 8]), &mut work)
                            .expect("open");
                        black_box(p);
                    }
                })
            };
            let ring_open_bare = raw_open(size);
            let ring_open = raw_open(body);
            let mut src = SoftwareEsp::new(1);
            src.install_sa(&SaConfig::gcm(
                SPI,
                Direction::Outbound,
                SaKey::new(&key_bytes, [1, 2, 3, 4]).expect("key"),
            ))
            .expect("src");
            let packets: Vec<Vec<u8>> = (0..PACKETS)
                .map(|_| {
                    src.process(EspRequest::Encapsulate {
                        spi: SPI,
                        next_header: 4,
                        payload: &payload,
                    })
                    .expect("enc")
                    .1
                })
                .collect();
            let fresh = SaState {
                window: ReplayWindow::default(),
                ..SaState::default()
            };
            let mut esp_open = f64::MAX;
            for _ in 0..rounds {
                rx.set_sa_state(Direction::Inbound, SPI, &fresh)
                    .expect("reset window");
                let t = best_ns(1, PACKETS, || {
                    for p in &packets {
                        rx.process_into(EspRequest::Decapsulate { packet: p }, &mut out)
                            .expect("decapsulate");
                        black_box(&out);
                    }
                });
                esp_open = esp_open.min(t);
            }

            for (op, bare, r, e) in [
                ("seal", ring_seal_bare, ring_seal, esp_seal),
                ("open", ring_open_bare, ring_open, esp_open),
            ] {
                let mbs = |ns: f64| size as f64 / ns * 1e3;
                let ratio = r / e;
                worst = worst.min(ratio);
                println!(
                    "{size:>4}  {bits:>3}  {op:<5} {bare:>9.1} {r:>9.1} {e:>9.1} {:>9.0} {:>9.0} {:>11.3} {ratio:>10.3}",
                    mbs(bare),
                    mbs(e),
                    bare / e
                );
            }
        }
    }
    println!("worst ratio esp/ring(body) {worst:.3} (target >= 0.8)");
}
