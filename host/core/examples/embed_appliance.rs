//! A minimal appliance loop: the vendor's data plane hands every Ethernet frame it receives to a
//! [`Member`] whose node-specific table is a card (the reference model here, behind
//! [`CardTable`]), and sends out whatever the member says leaves, out of the port it names.
//!
//! * A TCP SYN has no entry: the card punts it to the host, the state core's slow path (rules,
//!   connection tracking) creates the entry and sends the frame on.
//! * Once the handshake is done the entry is offloaded: the card forwards the connection's data
//!   frames itself and the host never sees them.
//! * A stray ACK of an unknown connection is dropped; the card's and the node's counters show
//!   each path.
//!
//! ```text
//! cargo run -p cluster-core --example embed_appliance
//! ```
//!
//! Exits non-zero on the first check that fails; `cargo test -p cluster-core --example
//! embed_appliance` runs it as a test (CI does, through `cargo test --workspace`).

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use cluster_core::member::{Member, MemberConfig, PacketOutcome};
use cluster_core::{
    CardTable, ClusterSecret, IdCount, Node, NodeConfig, NodeId, NodeSpecificTable,
};
use driver::Card;
use etherparse::PacketBuilder;
use sim_bridge::model::ModelCard;

use support::{check, Cluster};

/// The outside port (towards clients) and the inside port (towards servers).
const OUTSIDE: u8 = 0;
const INSIDE: u8 = 1;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);

/// TCP flags of a frame.
#[derive(Clone, Copy)]
enum Tcp {
    Syn,
    SynAck,
    Ack,
}

/// An Ethernet frame of the client's connection from port `client_port` to the server's port
/// 80 (or back, `reply`), built with etherparse as a vendor's traffic source would.
fn conn_frame(
    client_port: u16,
    reply: bool,
    flags: Tcp,
    seq: u32,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let (src, dst, sport, dport) = if reply {
        (SERVER, CLIENT, 80, client_port)
    } else {
        (CLIENT, SERVER, client_port, 80)
    };
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, seq, 64_240);
    let b = match flags {
        Tcp::Syn => b.syn(),
        Tcp::SynAck => b.syn().ack(1),
        Tcp::Ack => b.ack(1),
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).map_err(|e| e.to_string())?;
    Ok(out)
}

/// One frame of the data plane's script: the port it arrives on, whether it is the server's
/// reply, its TCP flags, sequence number and payload, and the outcome the member must give.
type Scripted = (u8, bool, Tcp, u32, &'static [u8], PacketOutcome);

/// A frame of the connection from the client's port 40000.
fn frame(reply: bool, flags: Tcp, seq: u32, payload: &[u8]) -> Result<Vec<u8>, String> {
    conn_frame(40_000, reply, flags, seq, payload)
}

fn run() -> Result<(), String> {
    let count = IdCount::new(16).map_err(|e| e.to_string())?;
    // The card: probe it, hand it to the state core's card table.
    let card = Card::probe(ModelCard::new()).map_err(|e| e.to_string())?;
    let table = CardTable::new(card, count).map_err(|e| e.to_string())?;
    let mut cfg = NodeConfig::new(NodeId(1), ClusterSecret::new(*b"appliance secret"));
    cfg.count = count;
    let mcfg = MemberConfig::all_members(
        NodeId(1),
        &[NodeId(1)],
        count,
        Duration::from_millis(300),
        Duration::from_millis(50),
        1000,
    );
    // A one-node cluster: it agrees its allocation with itself and owns every identifier. A
    // second appliance joins the same way as the members of the `embed_core` example.
    let mut c = Cluster::new(vec![Member::new(mcfg, Node::new(cfg, table))], count);
    c.settle()?;

    // The data plane's script (see `Scripted`).
    use PacketOutcome::{Created, Hit};
    #[rustfmt::skip]
    let script: [Scripted; 6] = [
        (OUTSIDE, false, Tcp::Syn, 1, b"", Created),
        (INSIDE, true, Tcp::SynAck, 9, b"", Hit),
        (OUTSIDE, false, Tcp::Ack, 2, b"", Hit),
        (OUTSIDE, false, Tcp::Ack, 2, b"GET / HTTP/1.1\r\n\r\n", Hit),
        (INSIDE, true, Tcp::Ack, 10, b"HTTP/1.1 200 OK\r\n\r\n", Hit),
        (OUTSIDE, false, Tcp::Ack, 20, b"more", Hit),
    ];
    let mut sent = [Vec::new(), Vec::new()];
    let before = c
        .member(NodeId(1))
        .port_counters()
        .ok_or("the card has a packet port")?;
    for (i, &(port, reply, flags, seq, payload, want)) in script.iter().enumerate() {
        let f = frame(reply, flags, seq, payload)?;
        let t = c.time();
        let mut egress = Vec::new();
        let got = c.member(NodeId(1)).on_frame(t, port, &f, &mut egress);
        println!("frame {i} on port {port}: {got:?}, {} out", egress.len());
        check(got == want, "the verdict the script expects")?;
        check(
            egress.len() == 1 && egress[0].0 == port ^ 1 && egress[0].1 == f,
            "the frame leaves out of the other port unchanged",
        )?;
        for (out, bytes) in egress {
            sent[usize::from(out)].push(bytes);
        }
        // the loop's housekeeping between frames: ticks, replication, offload to the card
        c.step();
    }
    check(
        sent[usize::from(INSIDE)].len() == 4 && sent[usize::from(OUTSIDE)].len() == 2,
        "four frames went in, two came out",
    )?;

    // A stray ACK of a connection nobody opened: dropped, nothing leaves.
    let stray = conn_frame(40_001, false, Tcp::Ack, 77, b"x")?;
    let mut stray_out = Vec::new();
    let t = c.time();
    let got = c
        .member(NodeId(1))
        .on_frame(t, OUTSIDE, &stray, &mut stray_out);
    println!("stray ACK: {got:?}");
    check(
        got == PacketOutcome::TcpNoState,
        "a stray ACK is dropped: no state",
    )?;
    check(stray_out.is_empty(), "nothing leaves for it")?;

    // Counters: the card forwarded the established connection's data itself, the host
    // handled the handshake.
    let m = c.member(NodeId(1));
    let after = m.port_counters().ok_or("the card has a packet port")?;
    let stats = m.core().stats();
    println!(
        "card port: {} frames in, {} forwarded by the card, {} punted to the host, {} dropped",
        after.rx_frames - before.rx_frames,
        after.forwarded - before.forwarded,
        after.punted - before.punted,
        after.dropped - before.dropped
    );
    println!(
        "node: {} card-forwarded, {} card-punted, {} entries in the card",
        stats.card_forwarded,
        stats.card_punted,
        m.core().node_table().len()
    );
    check(
        after.rx_frames - before.rx_frames == 7,
        "the card saw every frame",
    )?;
    // the handshake (SYN, SYN-ACK, the ACK that establishes it) and the stray ACK went to
    // the host; the three data frames after it the card forwarded by itself
    check(
        after.punted - before.punted == 4,
        "the handshake and the stray ACK were punted",
    )?;
    check(
        after.forwarded - before.forwarded == 3,
        "the card forwarded the data frames",
    )?;
    check(
        m.core().node_table().len() == 1,
        "one connection entry, in the card",
    )?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    support::exit_code("embed_appliance", run())
}

#[test]
fn the_appliance_loop_forwards_offloads_and_counts() {
    run().unwrap();
}
