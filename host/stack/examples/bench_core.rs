//! Benchmark of the state core: the node-specific layout against the prior-art layout
//! (figure 1B: every node's active table holds every entry), side by side.
//!
//! Run: `cargo run --release -p host --example bench_core`
//!
//! Figures: a 3-node cluster with 30,000 entries per node (the patent's figure 3 setting):
//! 1. lookup cost (packet path on a hit, and the bare table lookup);
//! 2. how many connections a cluster of N cards of a fixed size holds before a card overflows;
//! 3. the cost of reallocating one identifier (host tables, and on the reference-model card
//!    through the driver: commands issued);
//! 4. common-table select cost against entries per identifier.

use host::core::alloc_policy::{even_split, operator_move, Allocation};
use host::core::card_table::CardTable;
use host::core::common::CommonTable;
use host::core::distribution::ClusterSecret;
use host::core::entry::{ConnState, Endpoint, Entry, FlowKey, L4Proto};
use host::core::ids::{DistributionId, IdCount, Millis, NodeId};
use host::core::node::{Mode, Node, NodeConfig, Verdict};
use host::core::node_table::{NodeSpecificTable, SimCard, SoftwareTable};
use host::core::packet::{build, TcpFlags};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

const NODES: u16 = 3;
const PER_NODE: usize = 30_000;

fn client(i: u32) -> Endpoint {
    Endpoint::new(
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)),
        1024 + (i % 50_000) as u16,
    )
}

fn server(i: u32) -> Endpoint {
    Endpoint::new(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 200) as u8 + 1)),
        443,
    )
}

fn flags(syn: bool, ack: bool) -> TcpFlags {
    TcpFlags {
        syn,
        ack,
        fin: false,
        rst: false,
    }
}

fn secret() -> ClusterSecret {
    ClusterSecret::new(*b"bench-core-seed!")
}

struct Cluster {
    nodes: Vec<Node<SoftwareTable>>,
    /// Established flows per node: (client, server).
    flows: Vec<Vec<(Endpoint, Endpoint)>>,
    alloc: Allocation,
}

fn replicate(nodes: &mut [Node<SoftwareTable>], from: usize) {
    let out = nodes[from].drain_outbox();
    for o in out {
        // Through the codec, as on the wire.
        let bytes = o.message.encode();
        let m = host::core::events::Message::decode(&bytes).expect("own encoding");
        for (j, n) in nodes.iter_mut().enumerate() {
            if j != from {
                let _ = n.apply_message(Millis(0), &m);
            }
        }
    }
}

fn build_cluster(mode: Mode) -> Cluster {
    let count = IdCount::default();
    let ids: Vec<NodeId> = (0..NODES).map(NodeId).collect();
    let alloc = even_split(count, &ids);
    let mut nodes: Vec<Node<SoftwareTable>> = ids
        .iter()
        .map(|&id| {
            let mut c = NodeConfig::new(id, secret());
            c.mode = mode;
            let mut n = Node::new(c, SoftwareTable::new(count));
            n.apply_allocation(Millis(0), &alloc).expect("allocation");
            n
        })
        .collect();
    let mut flows = vec![Vec::new(); NODES as usize];
    let mut i = 0u32;
    while flows.iter().any(|f| f.len() < PER_NODE) {
        i += 1;
        let (c, s) = (client(i), server(i));
        let (key, _) = FlowKey::transport(L4Proto::Tcp, c, s);
        let d = nodes[0].distributor().for_key(&key);
        let owner = alloc.owner(d).expect("owned").0 as usize;
        if flows[owner].len() >= PER_NODE {
            continue;
        }
        let syn = build::tcp(c.addr, c.port, s.addr, s.port, flags(true, false), b"").expect("v4");
        let synack =
            build::tcp(s.addr, s.port, c.addr, c.port, flags(true, true), b"").expect("v4");
        let ack = build::tcp(c.addr, c.port, s.addr, s.port, flags(false, true), b"").expect("v4");
        for p in [&syn, &synack, &ack] {
            let v = nodes[owner].handle_packet(Millis(1), p);
            assert!(matches!(v, Verdict::Accept { .. }), "{v:?}");
        }
        replicate(&mut nodes, owner);
        flows[owner].push((c, s));
    }
    Cluster {
        nodes,
        flows,
        alloc,
    }
}

fn ns_per(iters: usize, t: Instant) -> f64 {
    t.elapsed().as_nanos() as f64 / iters as f64
}

fn lookup_cost(c: &mut Cluster) -> (f64, f64, usize) {
    let owner = 0usize;
    let pkts: Vec<Vec<u8>> = c.flows[owner]
        .iter()
        .map(|(cl, s)| {
            build::tcp(
                cl.addr,
                cl.port,
                s.addr,
                s.port,
                flags(false, true),
                b"data",
            )
            .expect("v4")
        })
        .collect();
    let keys: Vec<FlowKey> = c.flows[owner]
        .iter()
        .map(|(cl, s)| FlowKey::transport(L4Proto::Tcp, *cl, *s).0)
        .collect();
    let rounds = 5;
    let node = &mut c.nodes[owner];
    // Warm up.
    for p in &pkts {
        black_box(node.handle_packet(Millis(2), p));
    }
    let t = Instant::now();
    for _ in 0..rounds {
        for p in &pkts {
            black_box(node.handle_packet(Millis(2), p));
        }
    }
    let packet_ns = ns_per(rounds * pkts.len(), t);
    let t = Instant::now();
    for _ in 0..rounds * 4 {
        for k in &keys {
            black_box(node.node_table().get(k));
        }
    }
    let table_ns = ns_per(rounds * 4 * keys.len(), t);
    (packet_ns, table_ns, node.node_table().len())
}

fn realloc_cost(c: &mut Cluster, mode: Mode) -> (usize, f64, f64, u64) {
    // Move the identifier of node 0 with the most entries to node 1.
    let d = (0..256u16)
        .map(DistributionId)
        .filter(|&d| c.alloc.owner(d) == Some(NodeId(0)))
        .max_by_key(|&d| c.nodes[0].select(d).count())
        .expect("node 0 owns ids");
    let k = c.nodes[0].select(d).count();
    let next = operator_move(&c.alloc, &[d], NodeId(1));
    let before =
        c.nodes[1].node_table().stats().commands + c.nodes[0].node_table().stats().commands;
    let t = Instant::now();
    let r = c.nodes[1]
        .begin_reallocation(Millis(3), &next)
        .expect("make");
    let make_us = t.elapsed().as_nanos() as f64 / 1000.0;
    let t = Instant::now();
    c.nodes[1].finish_reallocation(next.epoch).expect("flip");
    let r0 = c.nodes[0]
        .apply_allocation(Millis(3), &next)
        .expect("break");
    c.nodes[2]
        .apply_allocation(Millis(3), &next)
        .expect("others");
    let break_us = t.elapsed().as_nanos() as f64 / 1000.0;
    let after = c.nodes[1].node_table().stats().commands + c.nodes[0].node_table().stats().commands;
    c.alloc = next;
    if mode == Mode::NodeSpecific {
        assert_eq!(r.installed, k);
        assert_eq!(r0.flushes, 1);
    }
    (k, make_us, break_us, after - before)
}

/// Connections a cluster of `n` cards of `cap` entries holds before the first card overflows.
fn capacity(n: u16, cap: usize, mode: Mode) -> usize {
    let count = IdCount::default();
    let ids: Vec<NodeId> = (0..n).map(NodeId).collect();
    let alloc = even_split(count, &ids);
    let dist = host::core::distribution::Distributor::new(&secret(), count);
    let mut cards: Vec<SimCard> = (0..n).map(|_| SimCard::new(count, cap)).collect();
    let mut i = 0u32;
    loop {
        i += 1;
        let (key, _) = FlowKey::transport(L4Proto::Tcp, client(i), server(i));
        let d = dist.for_key(&key);
        let e = Entry::new(key, d, ConnState::Established, NodeId(0));
        let targets: Vec<usize> = match mode {
            Mode::NodeSpecific => vec![alloc.owner(d).expect("owned").0 as usize],
            Mode::PriorArt => (0..n as usize).collect(),
        };
        for t in targets {
            if cards[t].insert(e.clone()).is_err() {
                return i as usize - 1;
            }
        }
    }
}

fn select_cost() -> Vec<(usize, f64, f64)> {
    let mut out = Vec::new();
    for per_id in [1usize, 10, 100, 1_000, 10_000] {
        let count = IdCount::new(16).expect("count");
        let mut t = CommonTable::new(count);
        let mut i = 0u32;
        for d in 0..16u16 {
            for _ in 0..per_id {
                i += 1;
                let (key, _) = FlowKey::transport(L4Proto::Tcp, client(i), server(i));
                t.upsert_local(Entry::new(
                    key,
                    DistributionId(d),
                    ConnState::Established,
                    NodeId(0),
                ));
            }
        }
        let reps = (200_000 / per_id).max(20);
        let start = Instant::now();
        let mut n = 0usize;
        for r in 0..reps {
            for e in t.select(DistributionId((r % 16) as u16)) {
                black_box(e);
                n += 1;
            }
        }
        let per_call = ns_per(reps, start);
        out.push((per_id, per_call, per_call / (n / reps).max(1) as f64));
    }
    out
}

fn card_realloc(k: usize) -> (usize, u32, f64, f64) {
    // One identifier of k entries moved between two model cards through the driver.
    let count = IdCount::default();
    let depth = 4096u32;
    let mk = || {
        let card =
            driver::Card::probe(sim_bridge::model::ModelCard::with_depth(depth).expect("depth"))
                .expect("probe");
        CardTable::new(card, count).expect("count")
    };
    let (mut from, mut to) = (mk(), mk());
    let mut entries = Vec::new();
    for i in 0..k as u32 {
        let (key, _) = FlowKey::transport(L4Proto::Tcp, client(i + 1), server(i + 1));
        let e = Entry::new(key, DistributionId(7), ConnState::Established, NodeId(0));
        from.insert(e.clone()).expect("fits");
        entries.push(e);
    }
    // Background entries of other identifiers.
    for i in 0..2000u32 {
        let (key, _) = FlowKey::transport(L4Proto::Udp, client(i + 1), server(i + 1));
        from.insert(Entry::new(
            key,
            DistributionId(8),
            ConnState::UdpReplied,
            NodeId(0),
        ))
        .expect("fits");
    }
    let c0 = to.stats().commands + from.stats().commands;
    let t = Instant::now();
    for e in entries {
        to.insert(e).expect("fits");
    }
    let make_us = t.elapsed().as_nanos() as f64 / 1000.0;
    let t = Instant::now();
    from.flush_dist(DistributionId(7)).expect("host memory");
    let break_us = t.elapsed().as_nanos() as f64 / 1000.0;
    let c1 = to.stats().commands + from.stats().commands;
    (k, (c1 - c0) as u32, make_us, break_us)
}

fn main() {
    println!("bench_core: {NODES}-node cluster, {PER_NODE} entries per node, 256 distribution identifiers");
    println!();
    let t = Instant::now();
    let mut ns = build_cluster(Mode::NodeSpecific);
    let mut pa = build_cluster(Mode::PriorArt);
    println!(
        "setup (create + replicate {} entries, both layouts): {:.1} s",
        3 * PER_NODE,
        t.elapsed().as_secs_f64()
    );
    println!();

    println!("1. lookup cost on node 0 (hit path, {PER_NODE} established flows, 5 rounds)");
    let (ns_pkt, ns_tab, ns_len) = lookup_cost(&mut ns);
    let (pa_pkt, pa_tab, pa_len) = lookup_cost(&mut pa);
    println!("   {:<34} {:>14} {:>14}", "", "node-specific", "prior-art");
    println!(
        "   {:<34} {:>14} {:>14}",
        "active table entries on node 0", ns_len, pa_len
    );
    println!(
        "   {:<34} {:>11.0} ns {:>11.0} ns",
        "handle_packet (parse+hash+lookup)", ns_pkt, pa_pkt
    );
    println!(
        "   {:<34} {:>11.0} ns {:>11.0} ns",
        "table lookup only", ns_tab, pa_tab
    );
    let common: Vec<usize> = ns.nodes.iter().map(|n| n.common().len()).collect();
    println!("   common tables (node-specific layout): {common:?} entries each (every node has every entry)");
    println!();

    println!("2. connections held before the first card overflows (cards of fixed size)");
    println!(
        "   {:<10} {:>8} {:>14} {:>14} {:>7}",
        "cards", "size", "node-specific", "prior-art", "ratio"
    );
    for (n, cap) in [
        (2u16, 16_384usize),
        (3, 16_384),
        (3, 32_768),
        (4, 16_384),
        (8, 16_384),
    ] {
        let a = capacity(n, cap, Mode::NodeSpecific);
        let b = capacity(n, cap, Mode::PriorArt);
        println!(
            "   {:<10} {:>8} {:>14} {:>14} {:>6.2}x",
            n,
            cap,
            a,
            b,
            a as f64 / b as f64
        );
    }
    println!();

    println!("3. reallocating one identifier (node 0 -> node 1), host tables");
    let (k, mk, br, cmds) = realloc_cost(&mut ns, Mode::NodeSpecific);
    println!("   node-specific: {k} entries: make (select + install) {mk:.0} us, flip + break (one flush) {br:.0} us, {cmds} table commands");
    let (k2, mk2, br2, cmds2) = realloc_cost(&mut pa, Mode::PriorArt);
    println!("   prior-art:     {k2} entries: make {mk2:.1} us, flip {br2:.1} us, {cmds2} table commands (every node already holds every entry)");
    for n in &ns.nodes {
        assert!(n.check_tables().is_empty(), "{:?}", n.check_tables());
    }
    for k in [100usize, 350, 1000] {
        let (k, cmds, mk, br) = card_realloc(k);
        println!(
            "   on the reference-model card via the driver: {k} entries: install {mk:.0} us, FLUSH_DID {br:.0} us, {cmds} card commands"
        );
    }
    println!();

    println!("4. common-table select(dist) cost vs entries per identifier");
    println!(
        "   {:>10} {:>14} {:>14}",
        "entries/id", "per call", "per entry"
    );
    for (k, call, per) in select_cost() {
        println!("   {:>10} {:>11.0} ns {:>11.1} ns", k, call, per);
    }
}
