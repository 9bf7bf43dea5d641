//! Stateless frames on a shared segment (ARP, IPv6 neighbour discovery, ICMP errors): every
//! node sees them, and exactly one, the owner of the address pair's identifier, passes each on.

use std::net::Ipv6Addr;

use cluster_core::alloc_policy::even_split;
use cluster_core::node::{Node, NodeConfig, Verdict};
use cluster_core::{ClusterSecret, IdCount, Millis, NodeId, SoftwareTable};

fn nodes() -> Vec<Node<SoftwareTable>> {
    let count = IdCount::new(256).unwrap();
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let alloc = even_split(count, &ids);
    ids.iter()
        .map(|&id| {
            let mut cfg = NodeConfig::new(id, ClusterSecret::new(*b"stateless-frames"));
            cfg.count = count;
            let mut n = Node::new(cfg, SoftwareTable::new(count));
            n.apply_allocation(Millis(0), &alloc).unwrap();
            n
        })
        .collect()
}

fn arp(op: u16, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f
}

/// An ICMPv6 message of `kind` (neighbour solicitation 135, advertisement 136, ...).
fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, kind: u8) -> Vec<u8> {
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 1, 0x86, 0xDD];
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 24, 58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&[0; 16]);
    f
}

fn passed_by(nodes: &mut [Node<SoftwareTable>], frame: &[u8]) -> Vec<usize> {
    let mut by = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        let mut out = Vec::new();
        let o = n.handle_frame_into(Millis(1), 0, frame, &mut out);
        match o {
            cluster_core::node::FrameOutcome::Host(Verdict::Accept { .. }) => {
                assert_eq!(out, vec![(1, frame.to_vec())], "accepted but not sent on");
                by.push(i);
            }
            cluster_core::node::FrameOutcome::Host(Verdict::NotOurs { .. }) => {
                assert!(out.is_empty());
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    by
}

#[test]
fn exactly_one_node_passes_each_stateless_frame() {
    let mut ns = nodes();
    let mut per_node = [0usize; 3];
    for i in 0..200u8 {
        let a = [198, 18, 0, i];
        let b = [198, 18, 1, 200 - i];
        let req = passed_by(&mut ns, &arp(1, a, b));
        let rep = passed_by(&mut ns, &arp(2, b, a));
        assert_eq!(req.len(), 1, "ARP request passed by {req:?}");
        assert_eq!(req, rep, "a request and its reply have one owner");
        per_node[req[0]] += 1;
        let c = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i) + 1);
        let s = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, u16::from(i) + 1);
        for kind in [135, 136, 1] {
            let by = passed_by(&mut ns, &icmp6(c, s, kind));
            assert_eq!(by.len(), 1, "ICMPv6 {kind} passed by {by:?}");
        }
    }
    // every node owns some pairs
    assert!(per_node.iter().all(|&n| n > 20), "{per_node:?}");
    // a frame that only looks like ARP (wrong protocol type) is not passed as ARP
    let mut bad = arp(1, [198, 18, 0, 1], [198, 18, 0, 2]);
    bad[16] = 0x86;
    for n in &mut ns {
        let o = n.handle_frame(Millis(2), 0, &bad);
        assert!(
            matches!(o, cluster_core::node::FrameOutcome::Host(Verdict::Drop(_))),
            "{o:?}"
        );
    }
}
