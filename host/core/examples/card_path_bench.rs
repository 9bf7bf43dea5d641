//! Benchmark: the card on the packet path against the host path, in the same run.
//!
//! One node owning every identifier, its node-specific table the reference-model card, fed
//! the same frames (flows like the demo's: TCP connections of 10-40 packets with handshake and
//! close, UDP request/reply exchanges) two ways:
//!
//! * host path (before the card was on the path): every packet to the host, which parses it,
//!   searches the card through its management registers and serves it from its own copy;
//! * card path: every frame into the card's packet port; the host's slow path handles only
//!   what the card punts.
//!
//! Printed: frames/s of each (the model card is software here, so the card path also pays for
//! the card's own work), the share of frames the host handled, host CPU per frame (on the card
//! path: the slow path's calls minus the model card's own time for them), register accesses
//! per frame (what a PCIe card charges at about a microsecond a read), and the ratios.
//!
//! `cargo run --release -p cluster-core --example card_path_bench [FLOWS]`

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use cluster_core::card_table::CardTable;
use cluster_core::node::{FrameOutcome, Node, NodeConfig};
use cluster_core::node_table::TieredTable;
use cluster_core::packet::{build, TcpFlags};
use cluster_core::{ClusterSecret, IdCount, Millis, NodeId};
use hal::counting::Counting;
use hal::RegIo;
use sim_bridge::model::ModelCard;

type Table = TieredTable<CardTable<Counting<ModelCard>>>;

fn node(count: IdCount) -> Node<Table> {
    let mut cfg = NodeConfig::new(NodeId(1), ClusterSecret::new(*b"bench-secret-16b"));
    cfg.count = count;
    let model = ModelCard::with_depth(65536).expect("depth");
    let card = driver::Card::probe(Counting::new(model)).expect("probe");
    let table = TieredTable::new(CardTable::new(card, count).expect("count"), count);
    let mut n = Node::new(cfg, table);
    let all = cluster_core::alloc_policy::even_split(count, &[NodeId(1)]);
    n.apply_allocation(Millis(0), &all).expect("allocation");
    n
}

fn eth(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(ip);
    f
}

/// The frames of `flows` flows, interleaved 64 at a time as a busy link would carry them.
fn traffic(flows: u32) -> Vec<Vec<u8>> {
    let mut per_flow: Vec<Vec<Vec<u8>>> = Vec::new();
    for i in 0..flows {
        let c = IpAddr::V4(Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8));
        let s = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1 + (i % 200) as u8));
        let cp = 1024 + (i % 60000) as u16;
        let len = 10 + (i % 31) as u16;
        let mut v = Vec::new();
        // a segment of this flow, from the client or from the server
        let tcp = |from_client: bool, flags: TcpFlags, payload: &[u8]| {
            let p = if from_client {
                build::tcp(c, cp, s, 443, flags, payload)
            } else {
                build::tcp(s, 443, c, cp, flags, payload)
            };
            eth(&p.expect("tcp"))
        };
        if i % 4 == 3 {
            for k in 0..len {
                let p = if k % 2 == 0 {
                    build::udp(c, cp, s, 53, &[1; 32])
                } else {
                    build::udp(s, 53, c, cp, &[2; 32])
                };
                v.push(eth(&p.expect("udp")));
            }
        } else {
            v.push(tcp(true, TcpFlags::SYN, &[]));
            v.push(tcp(false, TcpFlags::SYN_ACK, &[]));
            v.push(tcp(true, TcpFlags::ACK, &[]));
            for k in 3..len - 3 {
                v.push(if k % 2 == 0 {
                    tcp(true, TcpFlags::ACK, &[5; 64])
                } else {
                    tcp(false, TcpFlags::ACK, &[6; 64])
                });
            }
            v.push(tcp(true, TcpFlags::FIN_ACK, &[]));
            v.push(tcp(false, TcpFlags::FIN_ACK, &[]));
            v.push(tcp(true, TcpFlags::ACK, &[]));
        }
        per_flow.push(v);
    }
    let mut out = Vec::new();
    for group in per_flow.chunks(64) {
        let longest = group.iter().map(Vec::len).max().unwrap_or(0);
        for k in 0..longest {
            for f in group {
                if let Some(p) = f.get(k) {
                    out.push(p.clone());
                }
            }
        }
    }
    out
}

fn main() {
    let flows: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let count = IdCount::new(256).expect("count");
    let frames = traffic(flows);
    let n = frames.len() as f64;
    println!(
        "{flows} flows, {} frames, one node owning all 256 identifiers",
        frames.len()
    );

    let accesses = |n: &mut Node<Table>| {
        let r = n.node_table_mut().card_mut().card_mut().regs_mut();
        r.reads + r.writes
    };

    // The host path: frames as bare IP packets to the host.
    let mut host = node(count);
    let a0 = accesses(&mut host);
    let t = Instant::now();
    for (i, f) in frames.iter().enumerate() {
        let _ = host.handle_packet(Millis(1 + i as u64 / 1000), &f[14..]);
    }
    let host_s = t.elapsed().as_secs_f64();
    let host_regs = (accesses(&mut host) - a0) as f64 / n;

    // The card path.
    let mut card = node(count);
    let a0 = accesses(&mut card);
    let (mut by_card, mut slow, mut dropped) = (0u64, 0u64, 0u64);
    let mut slow_s = 0.0;
    let t = Instant::now();
    for (i, f) in frames.iter().enumerate() {
        let t1 = Instant::now();
        match card.handle_frame(Millis(1 + i as u64 / 1000), 0, f) {
            FrameOutcome::ForwardedByCard => by_card += 1,
            FrameOutcome::Slow(..) | FrameOutcome::Host(_) => {
                slow += 1;
                slow_s += t1.elapsed().as_secs_f64();
            }
            FrameOutcome::DroppedByCard(_) => dropped += 1,
        }
    }
    let card_s = t.elapsed().as_secs_f64();
    let card_regs = (accesses(&mut card) - a0) as f64 / n;
    let pc = card.port_counters().expect("packet port");

    // The model card alone, on the same frames, with the card path's final entries: what the
    // card itself costs in this software model.
    let mut alone = card
        .node_table_mut()
        .card_mut()
        .card_mut()
        .regs_mut()
        .inner
        .clone();
    let t = Instant::now();
    for f in &frames {
        let w = alone.wires().expect("wires");
        let _ = w.wire_rx(0, f);
        let _ = w.wire_tx();
    }
    let model_s = t.elapsed().as_secs_f64();

    let host_us = host_s / n * 1e6;
    let model_us = model_s / n * 1e6;
    // the host's share of the slow path's calls: minus what the card did for those frames
    let slow_us = (slow_s - slow as f64 * model_s / n).max(0.0) / n * 1e6;
    println!();
    println!("{:<44} {:>12} {:>12}", "", "host path", "card path");
    println!(
        "{:<44} {:>12.0} {:>12.0}",
        "frames/s (model card, whole node)",
        n / host_s,
        n / card_s
    );
    println!(
        "{:<44} {:>11.1}% {:>11.1}%",
        "frames the host handled",
        100.0,
        100.0 * slow as f64 / n
    );
    println!(
        "{:<44} {:>12.2} {:>12.2}",
        "host us per frame (card path: minus the model)", host_us, slow_us
    );
    println!(
        "{:<44} {:>12.1} {:>12.1}",
        "register accesses per frame", host_regs, card_regs
    );
    println!(
        "{:<44} {:>12} {:>12.2}",
        "model card us per frame", "-", model_us
    );
    println!();
    println!(
        "card forwarded {by_card}, host slow path {slow}, dropped {dropped}; card counters: \
         in {} forwarded {} punted {} ({:?})",
        pc.rx_frames, pc.forwarded, pc.punted, pc.reasons
    );
    println!(
        "ratios: host CPU per frame {:.1}x less on the card path; frames the host touches \
         {:.1}x fewer; register accesses per frame {:.1}x fewer",
        host_us / slow_us.max(1e-9),
        n / (slow as f64).max(1.0),
        host_regs / card_regs.max(1e-9)
    );
}
