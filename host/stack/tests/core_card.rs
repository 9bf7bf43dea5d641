//! The core on the reference-model card: three nodes whose node-specific tables are
//! `CardTable`s over `sim_bridge::model::ModelCard` (driven register by register through
//! `driver::Card`), with the software overflow behind. After traffic and a reallocation, each
//! card — read back slot by slot with `Card::scan`, the card's own view — holds only entries of
//! identifiers its node owns, and the lost identifiers went with one FLUSH_DID command.

use host::core::alloc_policy::{even_split, operator_move};
use host::core::card_table::{cam_key, CardTable};
use host::core::distribution::ClusterSecret;
use host::core::entry::FlowKey;
use host::core::events::Message;
use host::core::ids::{DistributionId, IdCount, Millis, NodeId};
use host::core::node::{Node, NodeConfig, Verdict};
use host::core::node_table::{NodeSpecificTable, TieredTable};
use host::core::packet::{build, TcpFlags};
use sim_bridge::model::ModelCard;
use std::net::{IpAddr, Ipv4Addr};

type CardNode = Node<TieredTable<CardTable<ModelCard>>>;

const DEPTH: u32 = 64;

fn node(id: u16) -> CardNode {
    let mut c = NodeConfig::new(NodeId(id), ClusterSecret::new([5; 16]));
    c.count = IdCount::new(32).expect("count");
    let card = driver::Card::probe(ModelCard::with_depth(DEPTH).expect("depth")).expect("probe");
    let table = TieredTable::new(CardTable::new(card, c.count).expect("count"), c.count);
    Node::new(c, table)
}

fn exchange(nodes: &mut [CardNode]) {
    loop {
        let mut any = false;
        for i in 0..nodes.len() {
            let out = nodes[i].drain_outbox();
            for o in out {
                any = true;
                let m = Message::decode(&o.message.encode()).expect("codec");
                for (j, n) in nodes.iter_mut().enumerate() {
                    let to_j = match o.dest {
                        host::core::node::Destination::All => j != i,
                        host::core::node::Destination::Node(t) => t == n.id(),
                    };
                    if to_j {
                        n.apply_message(Millis(5), &m).expect("apply");
                    }
                }
            }
        }
        if !any {
            return;
        }
    }
}

/// The distribution identifiers of the entries the card itself holds (a register read of
/// every slot), and how many entries that is.
fn card_dids(n: &mut CardNode) -> (Vec<u16>, usize) {
    let scan = n
        .node_table_mut()
        .card_mut()
        .card_mut()
        .scan()
        .expect("scan");
    let mut d: Vec<u16> = scan.iter().map(|e| e.did.0).collect();
    let len = d.len();
    d.sort_unstable();
    d.dedup();
    (d, len)
}

#[test]
fn cards_hold_exactly_the_owned_entries() {
    let count = IdCount::new(32).expect("count");
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let al = even_split(count, &ids);
    let mut nodes: Vec<CardNode> = ids.iter().map(|i| node(i.0)).collect();
    for n in &mut nodes {
        n.apply_allocation(Millis(0), &al).expect("allocation");
    }
    // 300 TCP connections: more than the cards hold, so some spill to host memory.
    let syn = TcpFlags {
        syn: true,
        ..Default::default()
    };
    for i in 0..300u32 {
        let c = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let s = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let p = build::tcp(c, 1000 + i as u16, s, 443, syn, b"").expect("v4");
        let handled: Vec<Verdict> = nodes
            .iter_mut()
            .map(|n| n.handle_packet(Millis(1), &p))
            .filter(|v| !matches!(v, Verdict::NotOurs { .. }))
            .collect();
        assert_eq!(handled.len(), 1, "exactly one node handles each packet");
    }
    exchange(&mut nodes);
    for n in &mut nodes {
        assert!(n.check_tables().is_empty(), "{:?}", n.check_tables());
        assert_eq!(n.common().len(), 300);
        let (dids, len) = card_dids(n);
        assert!(len <= DEPTH as usize);
        assert_eq!(
            len,
            n.node_table().card().len(),
            "card and driver shadow agree"
        );
        for d in dids {
            assert!(n.owns(DistributionId(d)), "card holds a foreign id");
        }
        // Every entry on the card is findable by its canonical key.
        let keys: Vec<FlowKey> = n
            .node_table()
            .card()
            .entries()
            .map(|e| e.key)
            .take(5)
            .collect();
        for k in keys {
            let ck = cam_key(&k).expect("cam layout");
            let hit = n
                .node_table_mut()
                .card_mut()
                .card_mut()
                .search(&ck)
                .expect("search");
            assert!(hit.is_some());
        }
    }
    assert!(
        nodes.iter().any(|n| n.node_table().overflow().len() > 0),
        "spill happened"
    );

    // Move node 1's identifiers with entries to node 2: make before break.
    let moved: Vec<DistributionId> = al
        .ids_of(NodeId(1))
        .into_iter()
        .filter(|&d| nodes[0].select(d).count() > 0)
        .take(3)
        .collect();
    let k: usize = moved.iter().map(|&d| nodes[0].select(d).count()).sum();
    let next = operator_move(&al, &moved, NodeId(2));
    let flushes_before = nodes[0].node_table().stats().flushes;
    let r = nodes[1].begin_reallocation(Millis(6), &next).expect("make");
    assert_eq!(r.installed, k, "installed before the flip");
    nodes[1].finish_reallocation(next.epoch).expect("flip");
    let r0 = nodes[0].apply_allocation(Millis(6), &next).expect("break");
    nodes[2].apply_allocation(Millis(6), &next).expect("others");
    assert_eq!(r0.flushed, k);
    assert_eq!(r0.flushes, 1, "one FLUSH_DID for all lost identifiers");
    assert_eq!(nodes[0].node_table().stats().flushes, flushes_before + 1);
    for n in &mut nodes {
        assert!(n.check_tables().is_empty(), "{:?}", n.check_tables());
        let (dids, _) = card_dids(n);
        for d in dids {
            assert!(n.owns(DistributionId(d)));
        }
    }
}
