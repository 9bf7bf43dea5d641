//! The load a node reports for automatic balancing comes from its card's per-identifier
//! counters when the card has a packet path: frames the card forwarded by itself never reach
//! the host, yet they are the node's load. Run against the reference-model card.

use std::net::{IpAddr, Ipv4Addr};

use cluster_core::node::FrameOutcome;
use cluster_core::packet::{build, TcpFlags};
use cluster_core::{
    parse_packet, Allocation, CardTable, ClusterSecret, Epoch, Framing, IdCount, Millis, Node,
    NodeConfig, NodeId,
};
use driver::Card;
use sim_bridge::model::ModelCard;

const SECRET: [u8; 16] = *b"card load secret";
const OUTSIDE: u8 = 0;
const INSIDE: u8 = 1;

fn ethernet(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(ip);
    f
}

fn flags(syn: bool, ack: bool) -> TcpFlags {
    TcpFlags {
        syn,
        ack,
        ..TcpFlags::default()
    }
}

#[test]
fn a_nodes_load_counts_the_frames_its_card_forwarded_by_itself() {
    let count = IdCount::new(16).unwrap();
    let table = CardTable::new(Card::probe(ModelCard::new()).unwrap(), count).unwrap();
    let mut cfg = NodeConfig::new(NodeId(1), ClusterSecret::new(SECRET));
    cfg.count = count;
    let mut node = Node::new(cfg, table);
    node.apply_allocation(Millis(0), &Allocation::all_to(NodeId(1), Epoch(1), count))
        .unwrap();

    // 198.18.0.0/15 only
    let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10));
    let server = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 20));
    let out =
        |f: TcpFlags, p: &[u8]| ethernet(&build::tcp(client, 40_000, server, 443, f, p).unwrap());
    let back =
        |f: TcpFlags, p: &[u8]| ethernet(&build::tcp(server, 443, client, 40_000, f, p).unwrap());
    let mut frames = vec![
        (OUTSIDE, out(flags(true, false), b"")),
        (INSIDE, back(flags(true, true), b"")),
        (OUTSIDE, out(flags(false, true), b"")),
    ];
    for i in 0..20u8 {
        frames.push((OUTSIDE, out(flags(false, true), &[i; 100])));
        frames.push((INSIDE, back(flags(false, true), &[i; 300])));
    }
    let (_, _, d) = parse_packet(&frames[0].1[14..], Framing::Ip)
        .unwrap()
        .flow(node.distributor())
        .unwrap();

    let (mut by_card, mut by_host) = (0u64, 0u64);
    for (t, (port, f)) in frames.iter().enumerate() {
        match node.handle_frame(Millis(t as u64), *port, f) {
            FrameOutcome::ForwardedByCard => by_card += 1,
            FrameOutcome::Slow(..) => by_host += 1,
            other => panic!("frame {t}: {other:?}"),
        }
    }
    assert!(
        by_card > 0 && by_host > 0,
        "{by_card} by the card, {by_host} by the host"
    );
    assert_eq!(by_card + by_host, frames.len() as u64);

    let load = node.take_load();
    let bytes: u64 = frames.iter().map(|(_, f)| f.len() as u64).sum();
    assert_eq!(
        load[d.index()].packets,
        frames.len() as u64,
        "every frame of the connection is load, the {by_card} the host never saw too"
    );
    assert_eq!(load[d.index()].bytes, bytes);
    let elsewhere: u64 = load
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != d.index())
        .map(|(_, l)| l.packets)
        .sum();
    assert_eq!(elsewhere, 0, "no other identifier carried anything");

    // the next report covers only what came after this one
    assert!(node
        .take_load()
        .iter()
        .all(|l| l.packets == 0 && l.bytes == 0));
    let (port, f) = &frames[5];
    assert_eq!(
        node.handle_frame(Millis(100), *port, f),
        FrameOutcome::ForwardedByCard
    );
    let load = node.take_load();
    assert_eq!(
        (load[d.index()].packets, load[d.index()].bytes),
        (1, f.len() as u64)
    );
}
