//! Invariant 7 for the core's parsers of untrusted input: arbitrary bytes never panic the
//! packet parser, the event decoder, the pcap reader, the rule parser or a node; valid
//! events round-trip.

use host::core::distribution::{ClusterSecret, Distributor};
use host::core::entry::{ConnState, Endpoint, Entry, FlowKey, L4Proto};
use host::core::events::{Event, Message};
use host::core::ids::{DistributionId, IdCount, Millis, NodeId};
use host::core::node::{Node, NodeConfig};
use host::core::node_table::SoftwareTable;
use host::core::packet::{parse_packet, Framing, PacketKind};
use host::core::pcap;
use host::core::rules::RuleSet;
use host::core::strategies::entry;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

fn node() -> Node<SoftwareTable> {
    let mut c = NodeConfig::new(NodeId(1), ClusterSecret::new([9; 16]));
    c.count = IdCount::new(16).unwrap_or_default();
    let t = SoftwareTable::new(c.count);
    let mut n = Node::new(c, t);
    let all =
        host::core::alloc_policy::even_split(IdCount::new(16).unwrap_or_default(), &[NodeId(1)]);
    n.apply_allocation(Millis(0), &all)
        .expect("first allocation");
    n
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn packet_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let d = Distributor::new(&ClusterSecret::new([1; 16]), IdCount::default());
        for f in [Framing::Ip, Framing::Ethernet] {
            if let Ok(p) = parse_packet(&bytes, f) {
                let _ = p.flow(&d);
            }
        }
    }

    #[test]
    fn ipv4_ish_packets_never_panic_a_node(mut bytes in proptest::collection::vec(any::<u8>(), 20..120)) {
        bytes[0] = 0x45;
        let mut n = node();
        let _ = n.handle_packet(Millis(1), &bytes);
        prop_assert!(n.check_tables().is_empty());
    }

    #[test]
    fn event_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(m) = Message::decode(&bytes) {
            // The encoding is canonical: what decodes re-encodes to the same bytes.
            prop_assert_eq!(&m.encode(), &bytes);
            let mut n = node();
            let _ = n.apply_message(Millis(0), &m);
        }
    }

    #[test]
    fn mutated_events_never_panic(e in entry(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let m = Message { sender: NodeId(2), incarnation: 1, seq: 7, event: Event::Add(e) };
        let mut b = m.encode();
        for (i, x) in flips {
            let len = b.len();
            b[i % len] ^= x;
        }
        if let Ok(m) = Message::decode(&b) {
            prop_assert_eq!(&m.encode(), &b);
            let mut n = node();
            let _ = n.apply_message(Millis(0), &m);
            prop_assert!(n.check_tables().is_empty());
        }
    }

    #[test]
    fn entries_round_trip(e in entry(), seq in any::<u64>(), inc in any::<u32>()) {
        for ev in [Event::Add(e.clone()), Event::Update(e.clone()), Event::Clear { key: e.key, dist: e.dist, version: e.version }] {
            let m = Message { sender: NodeId(3), incarnation: inc, seq, event: ev };
            prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn pcap_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = pcap::read(&bytes);
        let mut b = bytes.clone();
        if b.len() >= 4 {
            b[..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        }
        let _ = pcap::read(&b);
        // pcapng: a valid section header, then arbitrary blocks.
        let mut ng = pcap::write_ng(pcap::LinkType::Raw, &[]);
        ng.extend_from_slice(&bytes);
        let _ = pcap::read(&ng);
        if b.len() >= 4 {
            b[..4].copy_from_slice(&0x0A0D_0D0Au32.to_le_bytes());
            let _ = pcap::read(&b);
        }
    }

    #[test]
    fn rule_parser_never_panics(text in "[a-z0-9 ./:#\n-]{0,120}") {
        if let Err(e) = RuleSet::parse(&text) {
            prop_assert!(e.line >= 1);
        }
    }
}

#[test]
fn ipv4_tcp_add_fits_the_wire_budget() {
    let (k, _) = FlowKey::transport(
        L4Proto::Tcp,
        Endpoint::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200)), 65000),
        Endpoint::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 443),
    );
    let mut e = Entry::new(k, DistributionId(4095), ConnState::Established, NodeId(7));
    e.version = 70_000;
    e.timeout_s = 3600;
    let m = Message {
        sender: NodeId(7),
        incarnation: u32::MAX,
        seq: u64::from(u32::MAX),
        event: Event::Add(e),
    };
    let n = m.encode().len();
    println!("IPv4 TCP add event: {n} bytes");
    assert!(n <= 48, "{n}");
}

#[test]
fn fuzz_seed_corpus_is_valid() {
    let add = include_bytes!("../../../fuzz/corpus/event_decode/add_tcp4");
    let m = Message::decode(add).expect("seed decodes");
    assert!(matches!(m.event, Event::Add(_)));
    for p in [
        &include_bytes!("../../../fuzz/corpus/packet_parse/ipv4_tcp_syn")[..],
        &include_bytes!("../../../fuzz/corpus/packet_parse/ipv4_ike")[..],
        &include_bytes!("../../../fuzz/corpus/packet_parse/ipv4_ikev2_natt")[..],
    ] {
        let d = Distributor::new(&ClusterSecret::new([1; 16]), IdCount::default());
        let parsed = parse_packet(p, Framing::Ip).expect("seed parses");
        assert!(parsed.flow(&d).is_some());
        if p.len() > 40 {
            // the IKE seeds are valid ISAKMP/IKE headers, so the fuzzer starts past the checks
            assert!(
                matches!(parsed.kind, PacketKind::Isakmp { .. }),
                "{:?}",
                parsed.kind
            );
        }
    }
}
