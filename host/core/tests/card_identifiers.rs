//! The card's packet path and the host agree, frame by frame (issue: the card computes the
//! distribution identifier with exactly the host's keyed hash and looks up exactly the key the
//! host installs):
//!
//! * for every frame of a seeded mix (TCP with every flag, UDP, IKE on 500 and 4500, ESP over IP
//!   and over UDP 4500, ICMP and ICMPv6 echo, IPv4 and IPv6, with and without an 802.1Q tag,
//!   both directions), the identifier the card reports for a punted frame is the host
//!   `Distributor`'s, with 256 and with 4,096 identifiers;
//! * an entry the host's `CardTable` installs for a flow is the entry the card's data path hits,
//!   so the card forwards the flow's frames itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cluster_core::card_table::cam_key;
use cluster_core::packet::{build, TcpFlags};
use cluster_core::{parse_packet, ClusterSecret, Distributor, Framing, IdCount};
use driver::port::{Dest, Reason};
use driver::{Action, CamEntry, Card, DidSet, ResultWord};
use hal::RegIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sim_bridge::model::ModelCard;

const SECRET: [u8; 16] = *b"cluster-secret!!";

fn addr(rng: &mut StdRng, v6: bool) -> IpAddr {
    if v6 {
        // 2001:db8::/32 only.
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            rng.random(),
            rng.random(),
            0,
            0,
            rng.random_range(0..4),
            rng.random_range(1..200),
        ))
    } else {
        // 198.18.0.0/15 only.
        IpAddr::V4(Ipv4Addr::new(
            198,
            rng.random_range(18..20),
            rng.random_range(0..4),
            rng.random_range(1..200),
        ))
    }
}

fn ethernet(ip: &[u8], v6: bool, vlan: Option<u16>) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(if v6 { &[0x86, 0xDD] } else { &[0x08, 0x00] });
    f.extend_from_slice(ip);
    f
}

fn esp_over_ip(src: IpAddr, dst: IpAddr, spi: u32) -> Vec<u8> {
    let mut esp = spi.to_be_bytes().to_vec();
    esp.extend_from_slice(&[0, 0, 0, 1]);
    esp.extend_from_slice(&[0xAB; 32]);
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64)
        }
        _ => unreachable!("one family"),
    };
    let mut out = Vec::new();
    b.write(
        &mut out,
        etherparse::IpNumber::ENCAPSULATING_SECURITY_PAYLOAD,
        &esp,
    )
    .unwrap();
    out
}

/// One IP packet of a random kind between `a` and `b`.
fn packet(rng: &mut StdRng, a: IpAddr, b: IpAddr) -> Vec<u8> {
    let (sp, dp) = (rng.random_range(1024..65535), rng.random_range(1..1024));
    match rng.random_range(0..8) {
        0 | 1 => {
            let flags = TcpFlags {
                syn: rng.random_bool(0.2),
                ack: rng.random_bool(0.8),
                fin: rng.random_bool(0.1),
                rst: rng.random_bool(0.05),
            };
            build::tcp(a, sp, b, dp, flags, &[7; 12]).unwrap()
        }
        // (not to the IKE port: a datagram there that is no ISAKMP message is refused)
        2 => build::udp(a, sp, b, if dp == 500 { 501 } else { dp }, b"datagram").unwrap(),
        3 => {
            let ike = build::ike(rng.random(), 0, rng.random());
            let p = [500, 4500][rng.random_range(0..2)];
            let mut payload = if p == 4500 { vec![0; 4] } else { Vec::new() };
            payload.extend_from_slice(&ike);
            build::udp(a, p, b, p, &payload).unwrap()
        }
        4 => {
            let mut esp = rng.random_range(256u32..u32::MAX).to_be_bytes().to_vec();
            esp.extend_from_slice(&[0xCD; 28]);
            build::udp(a, 4500, b, 4500, &esp).unwrap()
        }
        5 => esp_over_ip(a, b, rng.random_range(256..u32::MAX)),
        _ => build::icmp_echo(a, b, rng.random(), rng.random_bool(0.5)).unwrap(),
    }
}

/// A model card keyed like the host, owning every identifier.
fn card(count: u32) -> Card<ModelCard> {
    let mut c = Card::probe(ModelCard::new()).unwrap();
    let mut p = c.port().unwrap();
    p.set_distribution(&SECRET, count).unwrap();
    p.set_owned(&DidSet::all()).unwrap();
    c
}

#[test]
fn card_and_host_give_every_frame_the_same_identifier() {
    for count in [256, 4096] {
        let dist = Distributor::new(&ClusterSecret::new(SECRET), IdCount::new(count).unwrap());
        let mut c = card(count);
        let mut rng = StdRng::seed_from_u64(u64::from(count));
        let mut seen = std::collections::BTreeSet::new();
        let mut compared = 0;
        for i in 0..6000 {
            let v6 = rng.random_bool(0.4);
            let (a, b) = (addr(&mut rng, v6), addr(&mut rng, v6));
            let ip = packet(&mut rng, a, b);
            let vlan = rng.random_bool(0.3).then(|| rng.random_range(1..4095));
            let frame = ethernet(&ip, v6, vlan);
            let host = parse_packet(&frame, Framing::Ethernet).unwrap();
            let (key, _, did) = host.flow(&dist).expect("every frame here has a flow");
            let wire_port = (i % 2) as u8;
            c.regs_mut()
                .wires()
                .unwrap()
                .wire_rx(wire_port, &frame)
                .unwrap();
            let got = c
                .port()
                .unwrap()
                .receive()
                .unwrap()
                .expect("a miss is queued");
            assert!(
                matches!(got.reason, Reason::Miss | Reason::TcpControl),
                "frame {i}: {:?}",
                got.reason
            );
            assert_eq!(
                got.did,
                Some(did),
                "frame {i} {key:?}: card and host identifiers"
            );
            assert_eq!(got.port, wire_port);
            assert_eq!(got.frame, frame);
            let want_l3 = if vlan.is_some() { 18 } else { 14 };
            assert_eq!(got.l3, want_l3);
            seen.insert(did.0);
            compared += 1;
        }
        assert_eq!(compared, 6000);
        assert!(
            seen.len() > count as usize / 2,
            "identifiers spread over the range"
        );
        let n = c.port().unwrap().counters().unwrap();
        assert_eq!(n.rx_frames, 6000);
        assert_eq!(n.punted, 6000);
    }
}

#[test]
fn what_the_host_installs_is_what_the_card_hits() {
    let count = 1024;
    let dist = Distributor::new(&ClusterSecret::new(SECRET), IdCount::new(count).unwrap());
    let mut c = card(count);
    let mut rng = StdRng::seed_from_u64(7);
    let mut forwarded = 0;
    for i in 0..500 {
        let v6 = i % 3 == 0;
        let (a, b) = (addr(&mut rng, v6), addr(&mut rng, v6));
        let (sp, dp) = (rng.random_range(1024..65535), 443);
        let ack = TcpFlags {
            ack: true,
            ..TcpFlags::default()
        };
        let out = ethernet(
            &build::tcp(a, sp, b, dp, ack, b"request").unwrap(),
            v6,
            None,
        );
        let back = ethernet(&build::tcp(b, dp, a, sp, ack, b"answer").unwrap(), v6, None);
        let (key, _, did) = parse_packet(&out, Framing::Ethernet)
            .unwrap()
            .flow(&dist)
            .unwrap();
        // The host installs the flow's entry the way its CardTable does.
        let entry = CamEntry {
            key: cam_key(&key).unwrap(),
            did,
            result: ResultWord::new(Action::Accept),
        };
        let index = c.insert(&entry).unwrap();
        let w = c.regs_mut().wires().unwrap();
        w.wire_rx(0, &out).unwrap();
        assert_eq!(
            w.wire_tx(),
            Some((1, out.clone())),
            "flow {i} forwarded inward"
        );
        w.wire_rx(1, &back).unwrap();
        assert_eq!(
            w.wire_tx(),
            Some((0, back.clone())),
            "and the reply outward"
        );
        forwarded += 2;
        let (pkts, bytes) = c.port().unwrap().entry_counters(index).unwrap();
        assert_eq!(pkts, 2);
        assert_eq!(bytes, (out.len() + back.len()) as u64);
        // A FIN still goes to the host, with the entry it hit.
        let fin = TcpFlags {
            fin: true,
            ack: true,
            ..TcpFlags::default()
        };
        let f = ethernet(&build::tcp(a, sp, b, dp, fin, b"").unwrap(), v6, None);
        c.regs_mut().wires().unwrap().wire_rx(0, &f).unwrap();
        let p = c.port().unwrap().receive().unwrap().unwrap();
        assert_eq!(p.reason, Reason::TcpControl);
        assert_eq!(p.hit.map(|h| h.0), Some(index));
        assert_eq!(p.did, Some(did));
    }
    let n = c.port().unwrap().counters().unwrap();
    assert_eq!(n.forwarded, forwarded);
    assert_eq!(c.counters().unwrap().dp_hits, 1500);
    // Give the identifiers away: the card drops their frames instead.
    c.port().unwrap().set_owned(&DidSet::new()).unwrap();
    let frame = ethernet(
        &build::udp(addr(&mut rng, false), 1, addr(&mut rng, false), 2, b"x").unwrap(),
        false,
        None,
    );
    c.regs_mut().wires().unwrap().wire_rx(0, &frame).unwrap();
    let n = c.port().unwrap().counters().unwrap();
    assert_eq!(n.reason(Reason::NotOwned), 1);
    // The host sends a frame out of port 1 itself.
    c.port().unwrap().send(&frame, Dest::Out(1)).unwrap();
    assert_eq!(c.regs_mut().wires().unwrap().wire_tx(), Some((1, frame)));
}

mod hostile {
    //! Arbitrary and mutated frames through the model card's packet path: no panic, exactly
    //! one fate per frame, and wherever both the card and the host find a flow in the same
    //! bytes, the same identifier.
    use super::*;
    use proptest::prelude::{any, proptest, ProptestConfig};

    fn check(c: &mut Card<ModelCard>, dist: &Distributor, frame: &[u8]) {
        let before = c.port().unwrap().counters().unwrap();
        c.regs_mut().wires().unwrap().wire_rx(0, frame).unwrap();
        let out = c.regs_mut().wires().unwrap().wire_tx();
        assert!(out.is_none(), "an empty CAM forwards nothing");
        let after = c.port().unwrap().counters().unwrap();
        assert_eq!(after.rx_frames, before.rx_frames + 1);
        let fates = (after.punted - before.punted) + (after.dropped - before.dropped);
        assert_eq!(fates, 1, "one fate per frame");
        if let Some(p) = c.port().unwrap().receive().unwrap() {
            assert_eq!(p.frame, frame);
            let host = parse_packet(frame, Framing::Ethernet)
                .ok()
                .and_then(|h| h.flow(dist));
            if let (Some(card), Some((_, _, host))) = (p.did, host) {
                assert_eq!(card, host, "frame {frame:02x?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_bytes(frame in proptest::collection::vec(any::<u8>(), 0..2100)) {
            let dist = Distributor::new(&ClusterSecret::new(SECRET), IdCount::new(256).unwrap());
            let mut c = card(256);
            check(&mut c, &dist, &frame);
        }

        #[test]
        fn mutated_frames(
            seed in any::<u64>(),
            flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..4),
            cut in any::<u16>(),
        ) {
            let dist = Distributor::new(&ClusterSecret::new(SECRET), IdCount::new(256).unwrap());
            let mut c = card(256);
            let mut rng = StdRng::seed_from_u64(seed);
            let v6 = rng.random_bool(0.4);
            let (a, b) = (addr(&mut rng, v6), addr(&mut rng, v6));
            let ip = packet(&mut rng, a, b);
            let vlan = rng.random_bool(0.3).then(|| rng.random_range(1..4095));
            let mut frame = ethernet(&ip, v6, vlan);
            for (at, x) in flips {
                let i = usize::from(at) % frame.len();
                frame[i] ^= x;
            }
            if cut % 3 == 0 {
                frame.truncate(usize::from(cut) % (frame.len() + 1));
            }
            check(&mut c, &dist, &frame);
        }
    }
}
