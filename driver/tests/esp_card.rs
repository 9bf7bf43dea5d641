//! `CardEsp` over the reference model: key material is never readable, the
//! slot table fills and frees, the SPI lookup goes through the CAM, state
//! moves between the card and the software path without reusing a sequence
//! number, and the fallback engine spills to software when the card is full.

use driver::esp::{
    CardEsp, Cipher, Direction, EspEngine, EspError, EspRequest, FallbackEsp, IcvLen, Placement,
    SaConfig, SaKey, SaState, SoftwareEsp, Spi,
};
use driver::{Action, Card, Flow};
use hal::{BarOffset, RegIo};
use sim_bridge::model::ModelCard;

fn card() -> CardEsp<ModelCard> {
    CardEsp::new(Card::probe(ModelCard::new()).expect("probe")).expect("esp blocks")
}

fn sa(spi: u32, dir: Direction, key: &[u8]) -> SaConfig {
    SaConfig::gcm(
        Spi(spi),
        dir,
        SaKey::new(key, [0x5A, 0x5A, 0x5A, 0x5A]).expect("key"),
    )
}

/// ENCAP of `payload` on SA `spi` (next header 4), then DECAP of the packet; the payload
/// that comes back.
fn round_trip(engine: &mut impl EspEngine, spi: Spi, payload: &[u8]) -> Vec<u8> {
    let (_, pkt) = engine
        .process(EspRequest::Encapsulate {
            spi,
            next_header: 4,
            payload,
        })
        .expect("enc");
    engine
        .process(EspRequest::Decapsulate { packet: &pkt })
        .expect("dec")
        .1
}

#[test]
fn key_material_is_never_readable_anywhere_in_the_bar() {
    let mut hw = card();
    let key = [0xC3u8; 32];
    hw.install_sa(&sa(7, Direction::Inbound, &key))
        .expect("install");
    hw.install_sa(&sa(7, Direction::Outbound, &key))
        .expect("install");
    assert_eq!(round_trip(&mut hw, Spi(7), b"hello"), b"hello");
    let regs = hw.card_mut().regs_mut();
    for o in (0..regs.size() as u32).step_by(4) {
        let v = regs.read32(BarOffset(o)).expect("read");
        assert!(
            v != 0xC3C3_C3C3 && v != 0x5A5A_5A5A,
            "key or salt material readable at 0x{o:05x}: 0x{v:08x}"
        );
    }
    // The driver's own view does not hold it either.
    let dbg = format!("{hw:?}");
    assert!(!dbg.contains("c3c3") && !dbg.contains("195"), "{dbg}");
}

#[test]
fn the_inbound_lookup_goes_through_the_cam() {
    let mut hw = card();
    let mut cfg = sa(0x8765_4321, Direction::Inbound, &[1; 16]);
    cfg.dst = Some("201.25.64.1".parse().expect("ip"));
    let slot = hw.install_sa(&cfg).expect("install");
    let entries = hw.card_mut().dump(None).expect("dump");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.result.action, Action::Decrypt);
    assert_eq!(e.result.sa_slot, slot);
    assert!(matches!(
        e.key.map(|k| k.flow),
        Some(Flow::Esp {
            spi: Some(0x8765_4321),
            ..
        })
    ));
    // Remove the CAM entry behind the engine's back: the SPI is no longer found.
    let idx = e.index;
    hw.card_mut().remove_at(idx).expect("remove");
    let mut pkt = vec![0x87, 0x65, 0x43, 0x21, 0, 0, 0, 1];
    pkt.extend_from_slice(&[0; 40]);
    let r = hw.process(EspRequest::Decapsulate { packet: &pkt });
    assert!(
        matches!(
            r,
            Err(EspError::UnknownSpi {
                spi: 0x8765_4321,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn slots_fill_free_and_refuse_what_the_card_cannot_run() {
    let mut hw = card();
    assert_eq!(hw.capacity(), hal::regs::sa::SLOTS);
    for i in 0..hw.capacity() {
        hw.install_sa(&sa(i, Direction::Outbound, &[2; 16]))
            .expect("install");
    }
    let r = hw.install_sa(&sa(9999, Direction::Outbound, &[2; 16]));
    assert_eq!(r, Err(EspError::NoFreeSlot { capacity: 256 }));
    assert!(matches!(
        hw.install_sa(&sa(5, Direction::Outbound, &[2; 16])),
        Err(EspError::DuplicateSa { .. })
    ));
    hw.remove_sa(Direction::Outbound, Spi(5)).expect("remove");
    hw.install_sa(&sa(9999, Direction::Outbound, &[2; 16]))
        .expect("slot freed");
    let mut gmac = sa(1, Direction::Inbound, &[2; 16]);
    gmac.cipher = Cipher::AesGmac;
    assert!(matches!(
        hw.install_sa(&gmac),
        Err(EspError::Unsupported { .. })
    ));
    assert!(matches!(
        hw.sa_state(Direction::Inbound, Spi(1)),
        Err(EspError::UnknownSpi { .. })
    ));
}

#[test]
fn takeover_between_card_and_software_never_reuses_a_sequence_number() {
    let key = [9u8; 32];
    let mut hw = card();
    let mut sw = SoftwareEsp::new(8);
    for e in [&mut hw as &mut dyn EspEngine, &mut sw] {
        let mut o = sa(42, Direction::Outbound, &key);
        o.icv = IcvLen::Icv12;
        o.esn = true;
        let mut i = o.clone();
        i.direction = Direction::Inbound;
        e.install_sa(&o).expect("out");
        e.install_sa(&i).expect("in");
    }
    let enc = |e: &mut dyn EspEngine| {
        e.process(EspRequest::Encapsulate {
            spi: Spi(42),
            next_header: 6,
            payload: b"x",
        })
        .expect("enc")
        .1
    };
    let start = SaState {
        seq: 0xFFFF_FFFE,
        ..SaState::default()
    };
    sw.set_sa_state(Direction::Outbound, Spi(42), &start)
        .expect("state");
    let rx_start = SaState {
        window: driver::esp::ReplayWindow {
            top: 0xFFFF_FFFE,
            bitmap: 1,
        },
        ..SaState::default()
    };
    sw.set_sa_state(Direction::Inbound, Spi(42), &rx_start)
        .expect("state");
    let early: Vec<Vec<u8>> = (0..4).map(|_| enc(&mut sw)).collect();
    for p in &early[..3] {
        sw.process(EspRequest::Decapsulate { packet: p })
            .expect("sw rx");
    }
    // Software -> card.
    for dir in [Direction::Outbound, Direction::Inbound] {
        let s = sw.sa_state(dir, Spi(42)).expect("state");
        hw.set_sa_state(dir, Spi(42), &s).expect("restore on card");
        assert_eq!(hw.sa_state(dir, Spi(42)).expect("state"), s);
    }
    let next = enc(&mut hw);
    assert_eq!(
        &next[4..8],
        &3u32.to_be_bytes(),
        "seq 0x1_0000_0003 follows 0x1_0000_0002"
    );
    assert!(matches!(
        hw.process(EspRequest::Decapsulate { packet: &early[1] }),
        Err(EspError::Replay { .. })
    ));
    hw.process(EspRequest::Decapsulate { packet: &early[3] })
        .expect("unseen packet");
    hw.process(EspRequest::Decapsulate { packet: &next })
        .expect("new packet");
    // Card -> software.
    for dir in [Direction::Outbound, Direction::Inbound] {
        let s = hw.sa_state(dir, Spi(42)).expect("state");
        sw.set_sa_state(dir, Spi(42), &s)
            .expect("restore in software");
    }
    let after = enc(&mut sw);
    assert_eq!(&after[4..8], &4u32.to_be_bytes());
    assert!(matches!(
        sw.process(EspRequest::Decapsulate { packet: &next }),
        Err(EspError::Replay { .. })
    ));
    sw.process(EspRequest::Decapsulate { packet: &after })
        .expect("after");
}

#[test]
fn fallback_spills_to_software_when_the_card_is_full() {
    let mut fb = FallbackEsp::new(Some(card()), 16);
    assert_eq!(fb.capacity(), 256 + 16);
    for i in 0..256 {
        fb.install_sa(&sa(i, Direction::Inbound, &[3; 16]))
            .expect("card");
    }
    fb.install_sa(&sa(1000, Direction::Outbound, &[4; 16]))
        .expect("software");
    fb.install_sa(&sa(1000, Direction::Inbound, &[4; 16]))
        .expect("software");
    assert_eq!(
        fb.placement(Direction::Inbound, Spi(5)),
        Some(Placement::Card)
    );
    assert_eq!(
        fb.placement(Direction::Inbound, Spi(1000)),
        Some(Placement::Software)
    );
    assert_eq!(round_trip(&mut fb, Spi(1000), b"spill"), b"spill");
    // No card at all: everything runs in software.
    let mut none: FallbackEsp<ModelCard> = FallbackEsp::new(None, 2);
    none.install_sa(&sa(1, Direction::Inbound, &[5; 32]))
        .expect("software");
    assert_eq!(
        none.placement(Direction::Inbound, Spi(1)),
        Some(Placement::Software)
    );
}

#[test]
fn bad_packets_get_typed_errors_from_the_card() {
    let mut hw = card();
    hw.install_sa(&sa(3, Direction::Inbound, &[6; 16]))
        .expect("in");
    hw.install_sa(&sa(3, Direction::Outbound, &[6; 16]))
        .expect("out");
    let (_, good) = hw
        .process(EspRequest::Encapsulate {
            spi: Spi(3),
            next_header: 17,
            payload: &[1; 100],
        })
        .expect("enc");
    for n in [0usize, 7, 8, 20, 33] {
        let r = hw.process(EspRequest::Decapsulate { packet: &good[..n] });
        assert!(matches!(r, Err(EspError::Malformed { .. })), "{n}: {r:?}");
    }
    let mut bad = good.clone();
    bad[20] ^= 4;
    assert!(matches!(
        hw.process(EspRequest::Decapsulate { packet: &bad }),
        Err(EspError::AuthFailed { spi: 3, seq: 1 })
    ));
    hw.process(EspRequest::Decapsulate { packet: &good })
        .expect("genuine");
    assert_eq!(
        hw.process(EspRequest::Decapsulate { packet: &good })
            .map(|_| ()),
        Err(EspError::Replay { spi: 3, seq: 1 })
    );
    let st = hw.sa_state(Direction::Inbound, Spi(3)).expect("state");
    assert_eq!(
        (
            st.counters.auth_failures,
            st.counters.replay_drops,
            st.counters.packets
        ),
        (1, 1, 1)
    );
    let huge = vec![0u8; 3000];
    let r = hw.process(EspRequest::Encapsulate {
        spi: Spi(3),
        next_header: 4,
        payload: &huge,
    });
    assert!(matches!(r, Err(EspError::Unsupported { .. })), "{r:?}");
}

#[test]
fn a_card_that_leaves_the_bus_is_named_as_gone() {
    use hal::fault::{Fault, FaultInjector};
    let regs = FaultInjector::new(ModelCard::new());
    let mut hw = CardEsp::new(Card::probe(regs).expect("probe")).expect("esp blocks");
    hw.install_sa(&sa(9, Direction::Outbound, &[2; 16]))
        .expect("install");
    let r = hw.card_mut().regs_mut();
    let after_reads = r.reads();
    r.inject(Fault::AllOnes { after_reads });
    let e = hw
        .process(EspRequest::Encapsulate {
            spi: Spi(9),
            next_header: 4,
            payload: b"x",
        })
        .expect_err("a gone card seals nothing");
    assert!(matches!(e, EspError::DeviceGone { .. }), "{e:?}");
}

/// The SA block's OCCUPANCY register, read through the driver's register view.
fn sa_occupancy(card: &mut Card<ModelCard>) -> u32 {
    let base = card
        .blocks()
        .iter()
        .find(|b| b.type_id == hal::regs::block_type::SA)
        .expect("SA block")
        .offset;
    card.regs_mut()
        .read32(BarOffset(base + hal::regs::sa::OCCUPANCY.offset))
        .expect("read")
}

#[test]
fn the_borrowed_view_runs_sas_on_a_card_it_does_not_own_without_cam_entries() {
    use driver::esp::{CardEspState, SaLookup};
    let mut card = Card::probe(ModelCard::new()).expect("probe");
    let mut state = CardEspState::new(&mut card, SaLookup::SlotOnly).expect("esp blocks");
    assert_eq!(state.lookup_mode(), SaLookup::SlotOnly);
    let mut soft = SoftwareEsp::new(8);
    let out_key = [0x11u8; 32];
    let in_key = [0x22u8; 16];
    for (spi, dir, key) in [
        (0x100, Direction::Outbound, &out_key[..]),
        (0x200, Direction::Inbound, &in_key[..]),
    ] {
        let mut cfg = sa(spi, dir, key);
        cfg.dst = Some("198.51.100.7".parse().expect("ip"));
        state.view(&mut card).install_sa(&cfg).expect("install");
        // the software twin holds the mirrored SA (the tunnel's other end)
        let mirror = match dir {
            Direction::Outbound => Direction::Inbound,
            Direction::Inbound => Direction::Outbound,
        };
        soft.install_sa(&sa(spi, mirror, key)).expect("soft");
    }
    assert_eq!(state.installed_len(), 2);
    assert_eq!(
        sa_occupancy(&mut card),
        2,
        "both SAs are in the card's table"
    );
    assert!(card.is_empty(), "no CAM entry was written");
    assert_eq!(card.dump(None).expect("dump").len(), 0);

    // outbound: the card seals, the software path opens the same bytes
    let mut eng = state.view(&mut card);
    for i in 1..=3u64 {
        let payload = vec![i as u8; 20 + i as usize];
        let (o, pkt) = eng
            .process(EspRequest::Encapsulate {
                spi: Spi(0x100),
                next_header: 4,
                payload: &payload,
            })
            .expect("seal on card");
        assert_eq!(o.seq, i);
        let (so, back) = soft
            .process(EspRequest::Decapsulate { packet: &pkt })
            .expect("software opens the card's packet");
        assert_eq!((so.seq, back), (i, payload));
    }
    // inbound: the software path seals, the card opens it through the slot (no CAM search)
    let (_, pkt) = soft
        .process(EspRequest::Encapsulate {
            spi: Spi(0x200),
            next_header: 17,
            payload: b"inbound",
        })
        .expect("soft seal");
    let (o, back) = eng
        .process(EspRequest::Decapsulate { packet: &pkt })
        .expect("card opens");
    assert_eq!((o.next_header, back.as_slice()), (17, &b"inbound"[..]));
    assert!(matches!(
        eng.process(EspRequest::Decapsulate { packet: &pkt }),
        Err(EspError::Replay { .. })
    ));
    assert_eq!(
        eng.sa_state(Direction::Outbound, Spi(0x100))
            .expect("st")
            .seq,
        3
    );
    eng.remove_sa(Direction::Inbound, Spi(0x200))
        .expect("remove");
    eng.remove_sa(Direction::Outbound, Spi(0x100))
        .expect("remove");
    assert_eq!(sa_occupancy(&mut card), 0, "removal wipes the slots");
    assert_eq!(state.installed_len(), 0);
    assert!(state.has_free_slot());
}
