//! The state core alone, without tokio, Raft or clap: three [`Member`]s in one process, wired by
//! plain in-memory queues (the vendor's own transport, in `support/`), agree an allocation of the
//! distribution identifiers; connections created on one node are replicated to the others'
//! common tables; an operator moves one identifier and its new owner's node-specific table holds
//! the moved entries before traffic flips, while the old owner's holds none of them.
//!
//! ```text
//! cargo run -p cluster-core --example embed_core
//! ```
//!
//! Exits non-zero on the first check that fails; `cargo test -p cluster-core --example
//! embed_core` runs it as a test (CI does, through `cargo test --workspace`).

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use cluster_core::member::{Member, MemberConfig, PacketOutcome};
use cluster_core::packet::build;
use cluster_core::{
    parse_packet, ClusterSecret, DistributionId, Distributor, Framing, IdCount, Node, NodeConfig,
    NodeId, NodeSpecificTable, SoftwareTable,
};

use support::{check, Cluster};

const SECRET: [u8; 16] = *b"vendor's secret!";

fn count() -> IdCount {
    IdCount::new(16).expect("a power of two")
}

/// A member of the nodes `all`, over a software node-specific table (a card works the same:
/// see the `embed_appliance` example).
fn member(n: u16, all: &[NodeId]) -> Member<SoftwareTable> {
    let cfg = MemberConfig::all_members(
        NodeId(n),
        all,
        count(),
        Duration::from_millis(300), // a peer silent this long has failed
        Duration::from_millis(50),  // heartbeat interval
        1000,                       // outbound ESP sequence jump on takeover
    );
    let mut node = NodeConfig::new(NodeId(n), ClusterSecret::new(SECRET));
    node.count = count();
    Member::new(cfg, Node::new(node, SoftwareTable::new(count())))
}

/// `n` UDP flows (client 192.0.2.1, varying source port, to a DNS server) whose distribution
/// identifier is `d`.
fn flows_in(d: DistributionId, n: usize) -> Vec<Vec<u8>> {
    let dist = Distributor::new(&ClusterSecret::new(SECRET), count());
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let server = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 53));
    (1024u16..)
        .filter_map(|port| build::udp(client, port, server, 53, b"query"))
        .filter(|p| {
            parse_packet(p, Framing::Ip)
                .ok()
                .and_then(|pp| pp.flow(&dist))
                .is_some_and(|f| f.2 == d)
        })
        .take(n)
        .collect()
}

fn run() -> Result<(), String> {
    let all = [NodeId(1), NodeId(2), NodeId(3)];
    let mut c = Cluster::new(all.iter().map(|n| member(n.0, &all)).collect(), count());

    // 1. The leader proposes an allocation, consensus agrees it, every member applies it.
    c.settle()?;
    let agreed = c.agreed().clone();
    for n in all {
        let ids = agreed.ids_of(n);
        let list: Vec<u16> = ids.iter().map(|d| d.0).collect();
        println!("{n}: {} identifiers {list:?}", ids.len());
        check(!ids.is_empty(), "every node owns identifiers")?;
    }
    let owned: usize = all.iter().map(|n| agreed.ids_of(*n).len()).sum();
    check(owned == 16, "every identifier has one owner")?;

    // 2. Node 2 handles the first packets of five flows of one of its identifiers: it creates
    //    their entries, and replication puts them in every common table.
    let d = agreed.ids_of(NodeId(2))[0];
    let flows = flows_in(d, 5);
    let t = c.time();
    for f in &flows {
        let o = c.member(NodeId(2)).on_packet(t, f);
        check(o == PacketOutcome::Created, "the owner creates the entry")?;
        let o = c.member(NodeId(3)).on_packet(t, f);
        check(o == PacketOutcome::NotOurs, "another node leaves it")?;
    }
    c.pump();
    for n in all {
        let common = c.members[&n].core().common().select(d).count();
        check(common == 5, "every common table holds the five entries")?;
    }
    check(
        c.members[&NodeId(3)].core().node_table().dist_len(d) == 0,
        "a node that does not own the identifier holds none of it in its node table",
    )?;

    // 3. The operator moves the identifier to node 3 (a request to the leader). The move is
    //    agreed, node 3 installs the entries from its common table, node 2 flushes them.
    let leader = c.leader();
    c.member(leader)
        .request_move(&[u64::from(d.0)], NodeId(3))?;
    c.run_until(Duration::from_secs(10), "identifier moved", |c| {
        let m3 = &c.members[&NodeId(3)];
        let m2 = &c.members[&NodeId(2)];
        c.agreed().owner(d) == Some(NodeId(3))
            && m3.core().owns(d)
            && !m3.handover().is_waiting(d)
            && m3.core().node_table().dist_len(d) == 5
            && m2.core().node_table().dist_len(d) == 0
    })?;
    println!(
        "identifier {d} moved to node 3 at epoch {}: its node table holds {} entries",
        c.agreed().epoch.0,
        c.members[&NodeId(3)].core().node_table().dist_len(d)
    );

    // 4. Traffic follows: node 3 hits the moved entries, node 2 no longer handles them.
    let t = c.time();
    for f in &flows {
        let o = c.member(NodeId(3)).on_packet(t, f);
        check(
            o == PacketOutcome::Hit,
            "the new owner hits the moved entry",
        )?;
        let o = c.member(NodeId(2)).on_packet(t, f);
        check(o == PacketOutcome::NotOurs, "the old owner leaves it")?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    support::exit_code("embed_core", run())
}

#[test]
fn three_members_without_tokio_agree_replicate_and_move() {
    run().unwrap();
}
