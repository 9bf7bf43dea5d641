//! ESP benchmark: software-path throughput as a ratio to raw `ring` AES-GCM
//! seal/open in the same run, on 64-, 512- and 1400-byte payloads, both key
//! sizes. The ratio that measures the engine is against ring on the same
//! bytes the ESP path encrypts (the payload plus padding and trailer); the
//! ratio against ring on the bare payload is printed beside it.
//!
//! Run with `cargo run --release -p driver --example esp_bench`. The RTL's
//! cycles per block come from the crypto test bench (`hdl/crypto/run_tb.sh`)
//! and, with a card, from the co-simulation benchmark.

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
                        let mut n = [0u8; 12];
                        n[4..].copy_from_slice(&ctr.to_be_bytes());
                        buf[..len].copy_from_slice(&plain);
                        let tag = raw
                            .seal_in_place_separate_tag(
                                Nonce::assume_unique_for_key(n),
                                Aad::from(&[0u8; 8]),
                                &mut buf[..len],
                            )
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
                        let mut n = [0u8; 12];
                        n[4..].copy_from_slice(&i.to_be_bytes());
                        let mut b = vec![0x55u8; len];
                        let tag = raw
                            .seal_in_place_separate_tag(
                                Nonce::assume_unique_for_key(n),
                                Aad::from(&[0u8; 8]),
                                &mut b,
                            )
                            .expect("seal");
                        b.extend_from_slice(tag.as_ref());
                        (i, b)
                    })
                    .collect();
                let mut work: Vec<u8> = Vec::with_capacity(len + 16);
                best_ns(rounds, PACKETS, || {
                    for (i, b) in &sealed {
                        let mut n = [0u8; 12];
                        n[4..].copy_from_slice(&i.to_be_bytes());
                        work.clear();
                        work.extend_from_slice(b);
                        let p = raw
                            .open_in_place(
                                Nonce::assume_unique_for_key(n),
                                Aad::from(&[0u8; 8]),
                                &mut work,
                            )
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
