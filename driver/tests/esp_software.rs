//! The software ESP path: replay-window edges, ESN wrap, tampering, takeover,
//! table limits, key redaction and robustness against garbage.

use driver::esp::{
    Direction, EspEngine, EspError, EspRequest, IcvLen, ReplayWindow, SaConfig, SaKey, SaState,
    SoftwareEsp, Spi,
};
use rand::{Rng, SeedableRng};

const SPI: Spi = Spi(0x8765_4321);

fn key(bits: usize) -> SaKey {
    let k: Vec<u8> = (0..bits / 8).map(|i| i as u8 ^ 0x5A).collect();
    SaKey::new(&k, [0xCA, 0xFE, 0xBA, 0xBE]).expect("key")
}

/// An outbound and an inbound engine sharing one SA.
fn pair(esn: bool, icv: IcvLen) -> (SoftwareEsp, SoftwareEsp) {
    let mut tx = SoftwareEsp::new(8);
    let mut rx = SoftwareEsp::new(8);
    let mut sa = SaConfig::gcm(SPI, Direction::Outbound, key(256));
    sa.esn = esn;
    sa.icv = icv;
    tx.install_sa(&sa).expect("tx");
    sa.direction = Direction::Inbound;
    rx.install_sa(&sa).expect("rx");
    (tx, rx)
}

fn enc(tx: &mut SoftwareEsp, payload: &[u8]) -> Vec<u8> {
    tx.process(EspRequest::Encapsulate {
        spi: SPI,
        next_header: 4,
        payload,
    })
    .expect("encapsulate")
    .1
}

fn dec(rx: &mut SoftwareEsp, packet: &[u8]) -> Result<Vec<u8>, EspError> {
    rx.process(EspRequest::Decapsulate { packet })
        .map(|(_, p)| p)
}

/// Asserts that `rx` drops `packet` as a replay of sequence number `seq`.
fn assert_replay(rx: &mut SoftwareEsp, packet: &[u8], seq: u64) {
    assert_eq!(dec(rx, packet), Err(EspError::Replay { spi: SPI.0, seq }));
}

fn set_tx_seq(tx: &mut SoftwareEsp, seq: u64) {
    let st = SaState {
        seq,
        ..SaState::default()
    };
    tx.set_sa_state(Direction::Outbound, SPI, &st).expect("set");
}

#[test]
fn round_trip_every_icv_and_length() {
    for icv in [IcvLen::Icv8, IcvLen::Icv12, IcvLen::Icv16] {
        let (mut tx, mut rx) = pair(false, icv);
        for len in 0..70usize {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let pkt = enc(&mut tx, &payload);
            assert_eq!(pkt.len(), 16 + (len + 2).div_ceil(4) * 4 + icv.bytes());
            assert_eq!(dec(&mut rx, &pkt).expect("decapsulate"), payload);
        }
        let st = rx.sa_state(Direction::Inbound, SPI).expect("state");
        assert_eq!((st.counters.packets, st.window.top), (70, 70));
        let st = tx.sa_state(Direction::Outbound, SPI).expect("state");
        assert_eq!(
            (st.seq, st.counters.packets, st.counters.bytes),
            (70, 70, (0..70u64).sum())
        );
    }
}

#[test]
fn replay_window_edges() {
    let (mut tx, mut rx) = pair(false, IcvLen::Icv16);
    let pkts: Vec<Vec<u8>> = (0..200).map(|i| enc(&mut tx, &[i as u8; 10])).collect();
    // seq n is pkts[n - 1]
    dec(&mut rx, &pkts[99]).expect("seq 100");
    // duplicate
    assert_replay(&mut rx, &pkts[99], 100);
    // oldest still inside the window: 100 - 63 = 37
    dec(&mut rx, &pkts[36]).expect("seq 37, left edge");
    assert!(matches!(
        dec(&mut rx, &pkts[36]),
        Err(EspError::Replay { .. })
    ));
    // just outside: 36
    assert_replay(&mut rx, &pkts[35], 36);
    // out of order inside the window
    dec(&mut rx, &pkts[98]).expect("seq 99");
    dec(&mut rx, &pkts[50]).expect("seq 51");
    // far ahead: everything before slides out
    dec(&mut rx, &pkts[199]).expect("seq 200");
    assert!(
        matches!(dec(&mut rx, &pkts[100]), Err(EspError::Replay { .. })),
        "101 is 99 behind"
    );
    dec(&mut rx, &pkts[150]).expect("seq 151 is 49 behind, inside");
    let st = rx.sa_state(Direction::Inbound, SPI).expect("state");
    assert_eq!(st.window.top, 200);
    assert_eq!(st.window.bitmap, 1 | (1 << 49));
    assert_eq!(st.counters.replay_drops, 4);
    assert_eq!(st.counters.packets, 6);
}

#[test]
fn tampered_packets_are_rejected_counted_and_leave_the_window_alone() {
    let (mut tx, mut rx) = pair(false, IcvLen::Icv16);
    let good = enc(&mut tx, b"payload payload");
    for pos in [0usize, 4, 8, 16, good.len() - 17, good.len() - 1] {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        let r = dec(&mut rx, &bad);
        match pos {
            // SPI changed: no such SA
            0 => assert!(matches!(r, Err(EspError::UnknownSpi { .. }))),
            _ => assert!(
                matches!(r, Err(EspError::AuthFailed { .. })),
                "byte {pos}: {r:?}"
            ),
        }
    }
    let st = rx.sa_state(Direction::Inbound, SPI).expect("state");
    assert_eq!(st.counters.auth_failures, 5);
    assert_eq!(
        st.window,
        ReplayWindow::default(),
        "a forged packet must not move the window"
    );
    assert_eq!(
        dec(&mut rx, &good).expect("the genuine packet still passes"),
        b"payload payload"
    );
}

#[test]
fn esn_wrap_outbound_and_inbound() {
    let (mut tx, mut rx) = pair(true, IcvLen::Icv16);
    set_tx_seq(&mut tx, 0xFFFF_FFF0);
    let st = SaState {
        window: ReplayWindow {
            top: 0xFFFF_FFEF,
            bitmap: 1,
        },
        ..SaState::default()
    };
    rx.set_sa_state(Direction::Inbound, SPI, &st).expect("set");
    let pkts: Vec<Vec<u8>> = (0..40).map(|i| enc(&mut tx, &[i as u8; 3])).collect();
    // Across the 2^32 boundary the wire seq restarts at 0 ...
    assert_eq!(&pkts[14][4..8], &[0xFF; 4]);
    assert_eq!(&pkts[15][4..8], &[0, 0, 0, 0]);
    // ... and the receiver infers the high half.
    for (i, p) in pkts.iter().enumerate().skip(20) {
        let (o, _) = rx
            .process(EspRequest::Decapsulate { packet: p })
            .expect("after wrap");
        assert_eq!(o.seq, 0xFFFF_FFF1 + i as u64);
    }
    // Late packets from before the wrap, still inside the window, pass.
    let (o, _) = rx
        .process(EspRequest::Decapsulate { packet: &pkts[10] })
        .expect("before wrap");
    assert_eq!(o.seq, 0xFFFF_FFFB);
    assert!(matches!(
        dec(&mut rx, &pkts[10]),
        Err(EspError::Replay { .. })
    ));
    assert_eq!(
        rx.sa_state(Direction::Inbound, SPI)
            .expect("state")
            .window
            .top,
        0x1_0000_0018
    );
    // Without ESN the sequence space ends at 2^32 - 1.
    let (mut tx, _) = pair(false, IcvLen::Icv16);
    set_tx_seq(&mut tx, 0xFFFF_FFFE);
    enc(&mut tx, b"last");
    let r = tx.process(EspRequest::Encapsulate {
        spi: SPI,
        next_header: 4,
        payload: b"x",
    });
    assert_eq!(r.map(|_| ()), Err(EspError::SeqExhausted { spi: SPI.0 }));
}

#[test]
fn takeover_continues_the_sequence_and_the_window() {
    let (mut tx, mut rx) = pair(false, IcvLen::Icv16);
    let early: Vec<Vec<u8>> = (0..10).map(|_| enc(&mut tx, b"a")).collect();
    for p in &early[..5] {
        dec(&mut rx, p).expect("rx");
    }
    // Another node takes both SAs over from the state alone (plus the key).
    let (mut tx2, mut rx2) = pair(false, IcvLen::Icv16);
    let s = tx.sa_state(Direction::Outbound, SPI).expect("state");
    tx2.set_sa_state(Direction::Outbound, SPI, &s).expect("set");
    let s = rx.sa_state(Direction::Inbound, SPI).expect("state");
    rx2.set_sa_state(Direction::Inbound, SPI, &s).expect("set");
    let next = enc(&mut tx2, b"b");
    assert_eq!(
        &next[4..8],
        &11u32.to_be_bytes(),
        "sequence numbers are never reused"
    );
    assert!(
        matches!(dec(&mut rx2, &early[2]), Err(EspError::Replay { .. })),
        "window restored"
    );
    dec(&mut rx2, &early[7]).expect("unseen packet passes");
    dec(&mut rx2, &next).expect("new packet passes");
}

#[test]
fn table_limits_and_lookup_errors() {
    let mut e = SoftwareEsp::new(2);
    let sa = |spi| SaConfig::gcm(Spi(spi), Direction::Inbound, key(128));
    assert_eq!(e.capacity(), 2);
    e.install_sa(&sa(1)).expect("1");
    assert_eq!(
        e.install_sa(&sa(1)),
        Err(EspError::DuplicateSa {
            spi: 1,
            direction: Direction::Inbound
        })
    );
    e.install_sa(&sa(2)).expect("2");
    assert_eq!(
        e.install_sa(&sa(3)),
        Err(EspError::NoFreeSlot { capacity: 2 })
    );
    e.remove_sa(Direction::Inbound, Spi(1)).expect("remove");
    assert_eq!(
        e.remove_sa(Direction::Inbound, Spi(1)),
        Err(EspError::UnknownSpi {
            spi: 1,
            direction: Direction::Inbound
        })
    );
    e.install_sa(&sa(3)).expect("slot reused");
    assert!(matches!(
        e.sa_state(Direction::Outbound, Spi(3)),
        Err(EspError::UnknownSpi { .. })
    ));
    let r = e.process(EspRequest::Encapsulate {
        spi: Spi(3),
        next_header: 4,
        payload: b"",
    });
    assert!(
        matches!(r, Err(EspError::UnknownSpi { .. })),
        "an inbound SA does not encapsulate"
    );
    assert!(SaKey::new(&[0; 24], [0; 4]).is_err());
    assert!(IcvLen::from_bytes(10).is_err());
}

#[test]
fn keys_never_show_in_debug() {
    let k = SaKey::new(&[0xAB; 32], [0xCD; 4]).expect("key");
    let sa = SaConfig::gcm(SPI, Direction::Inbound, k);
    let (tx, _) = pair(false, IcvLen::Icv16);
    for s in [format!("{sa:?}"), format!("{sa:#?}"), format!("{tx:?}")] {
        let l = s.to_lowercase();
        assert!(
            !l.contains("ab, ") && !l.contains("171") && !l.contains("abab"),
            "{s}"
        );
        assert!(
            !l.contains("205") && !l.contains("cdcd"),
            "salt leaked: {s}"
        );
    }
    assert!(format!("{sa:?}").contains("redacted"));
}

#[test]
fn garbage_never_panics() {
    let (mut tx, mut rx) = pair(true, IcvLen::Icv12);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let good = enc(&mut tx, &[1u8; 40]);
    for i in 0..5000 {
        let mut p = if i % 2 == 0 {
            let n = rng.random_range(0..80);
            (0..n).map(|_| rng.random()).collect::<Vec<u8>>()
        } else {
            good.clone()
        };
        if i % 2 == 1 {
            let n = rng.random_range(0..good.len());
            p.truncate(n);
        }
        if p.len() >= 4 && rng.random_bool(0.5) {
            p[..4].copy_from_slice(&SPI.0.to_be_bytes());
        }
        let r = dec(&mut rx, &p);
        assert!(r.is_err(), "garbage accepted at {i}");
    }
    dec(&mut rx, &good).expect("the genuine packet still passes");
}
