//! The identifier consistency check (claim 12): an entry's distribution information is what
//! its identifier is calculated from, so every entry's identifier can be recomputed from its
//! own key ([`Distributor::for_key`]) and compared with the identifier it is stored under.
//!
//! A mismatch means the entry sits under an identifier its packets never hash to: the node
//! owning the identifier its packets do hash to does not have it in its card, and a
//! reallocation moves it with the wrong identifier. [`check_entries`] checks any entries (a
//! table built by hand, one identifier's entries); [`Node::check_identifiers`] checks a node's
//! common table and its node-specific table (for a card, the host copy the card's entries are
//! installed from, identifier beside key).

use super::distribution::Distributor;
use super::entry::{Entry, FlowKey};
use super::ids::DistributionId;
use super::node::Node;
use super::node_table::NodeSpecificTable;

/// The table an entry was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckedTable {
    /// The common table (every entry of the cluster the node holds).
    Common,
    /// The node-specific table (the card's entries and their software overflow).
    NodeSpecific,
}

impl CheckedTable {
    /// The table's name in the views (`common`, `card`).
    pub fn name(self) -> &'static str {
        match self {
            CheckedTable::Common => "common",
            CheckedTable::NodeSpecific => "card",
        }
    }
}

/// An entry stored under an identifier other than the one its key gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Where the entry was found.
    pub table: CheckedTable,
    /// The entry's key.
    pub key: FlowKey,
    /// Whether the key's `lo` side sent the first packet (for printing the key as the views
    /// do: initiator first).
    pub initiator_is_lo: bool,
    /// The identifier the entry is stored under.
    pub stored: DistributionId,
    /// The identifier recomputed from the key.
    pub recomputed: DistributionId,
}

/// The outcome of a check: how many entries were checked and which did not match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentifierCheck {
    /// Common-table entries checked.
    pub common: usize,
    /// Node-specific-table entries checked.
    pub node_specific: usize,
    /// The entries whose stored identifier is not the recomputed one.
    pub mismatches: Vec<Mismatch>,
}

impl IdentifierCheck {
    /// Whether every entry checked matched.
    pub fn is_consistent(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Recomputes the identifier of every entry of `entries` (read from `table`), counts them in
/// `out` and adds the mismatches to it.
pub fn check_entries<'a>(
    dist: &Distributor,
    table: CheckedTable,
    entries: impl IntoIterator<Item = &'a Entry>,
    out: &mut IdentifierCheck,
) {
    for e in entries {
        match table {
            CheckedTable::Common => out.common += 1,
            CheckedTable::NodeSpecific => out.node_specific += 1,
        }
        let recomputed = dist.for_key(&e.key);
        if recomputed != e.dist {
            out.mismatches.push(Mismatch {
                table,
                key: e.key,
                initiator_is_lo: e.initiator_is_lo,
                stored: e.dist,
                recomputed,
            });
        }
    }
}

impl<T: NodeSpecificTable> Node<T> {
    /// Recomputes every entry's identifier from its key, in the common table and the
    /// node-specific table, and returns the entries stored under another one.
    pub fn check_identifiers(&self) -> IdentifierCheck {
        let mut out = IdentifierCheck::default();
        let dist = self.distributor();
        check_entries(dist, CheckedTable::Common, self.common().iter(), &mut out);
        check_entries(
            dist,
            CheckedTable::NodeSpecific,
            self.node_table().entries(),
            &mut out,
        );
        out
    }

    /// [`Node::check_identifiers`] for the entries of one identifier (what checks the tables
    /// in bounded steps uses), added to `out`.
    pub fn check_identifiers_of(&self, d: DistributionId, out: &mut IdentifierCheck) {
        let dist = self.distributor();
        check_entries(dist, CheckedTable::Common, self.common().select(d), out);
        check_entries(
            dist,
            CheckedTable::NodeSpecific,
            self.node_table().entries_of(d),
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::CommonTable;
    use crate::distribution::ClusterSecret;
    use crate::entry::{ConnState, Endpoint, L4Proto};
    use crate::events::{Event, Message};
    use crate::ids::{IdCount, Millis, NodeId};
    use crate::node::{NodeConfig, Verdict};
    use crate::node_table::SoftwareTable;
    use crate::packet::{build, parse_packet, Framing, TcpFlags};
    use crate::rules::RuleSet;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn a(x: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, x))
    }

    fn dist() -> Distributor {
        Distributor::new(&ClusterSecret::new([5; 16]), IdCount::default())
    }

    /// A packet of every kind of key the packet path makes, in both directions where it has
    /// two.
    fn packets() -> Vec<Vec<u8>> {
        let v6 = |x: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x));
        let ike = build::ike(0x0102_0304_0506_0708, 0, 7);
        let mut out = Vec::new();
        for (x, y) in [(a(1), a(9)), (v6(1), v6(9))] {
            for (s, d) in [(x, y), (y, x)] {
                out.push(build::tcp(s, 40000, d, 443, TcpFlags::SYN, b"").unwrap());
                out.push(build::udp(s, 5353, d, 53, b"q").unwrap());
                out.push(build::icmp_echo(s, d, 77, true).unwrap());
                // ESP in UDP (NAT traversal): a non-zero SPI where a non-ESP marker would be
                out.push(build::udp(s, 4500, d, 4500, &0x1000u32.to_be_bytes()).unwrap());
                out.push(build::udp(s, 500, d, 500, &ike).unwrap());
            }
        }
        out
    }

    #[test]
    fn every_key_the_packet_path_makes_recomputes_to_its_identifier() {
        let dist = dist();
        let mut kinds = std::collections::HashSet::new();
        for bytes in packets() {
            let p = parse_packet(&bytes, Framing::Ip).expect("parses");
            let (key, _, assigned) = p.flow(&dist).expect("a key");
            assert_eq!(dist.for_key(&key), assigned, "{key:?}");
            kinds.insert(std::mem::discriminant(&key));
        }
        // (session keys come from the session helper: node::tests checks those)
        assert_eq!(kinds.len(), 4, "transport, ICMP, ESP and ISAKMP keys");
    }

    #[test]
    fn a_tunnels_sas_and_its_ike_map_to_one_identifier() {
        let dist = dist();
        let ids: Vec<DistributionId> = packets()
            .iter()
            .filter_map(|b| {
                let p = parse_packet(b, Framing::Ip).ok()?;
                let (k, _, d) = p.flow(&dist)?;
                let v4 = matches!(
                    k,
                    FlowKey::Esp {
                        src: IpAddr::V4(_),
                        ..
                    } | FlowKey::Isakmp {
                        lo: IpAddr::V4(_),
                        ..
                    }
                );
                v4.then_some(d)
            })
            .collect();
        // both ESP directions and the IKE packets both ways
        assert_eq!(ids.len(), 4);
        assert!(ids.iter().all(|&d| d == dist.for_ipsec_peers(a(1), a(9))));
    }

    #[test]
    fn a_table_built_by_hand_reports_the_entry_under_a_wrong_identifier() {
        let dist = dist();
        let mut common = CommonTable::new(IdCount::default());
        let (tcp, _) = FlowKey::transport(
            L4Proto::Tcp,
            Endpoint::new(a(1), 40000),
            Endpoint::new(a(9), 443),
        );
        let esp = FlowKey::Esp {
            src: a(9),
            dst: a(1),
            spi: 0x1000,
        };
        let right = dist.for_key(&esp);
        let wrong = DistributionId((right.0 + 1) % 256);
        common.upsert_local(Entry::new(
            tcp,
            dist.for_key(&tcp),
            ConnState::Established,
            NodeId(1),
        ));
        common.upsert_local(Entry::new(esp, wrong, ConnState::EspSa, NodeId(1)));
        let mut out = IdentifierCheck::default();
        check_entries(&dist, CheckedTable::Common, common.iter(), &mut out);
        assert_eq!(out.common, 2);
        assert_eq!(
            out.mismatches,
            vec![Mismatch {
                table: CheckedTable::Common,
                key: esp,
                initiator_is_lo: true,
                stored: wrong,
                recomputed: right,
            }]
        );
        assert!(!out.is_consistent());
    }

    #[test]
    fn a_node_checks_its_tables_and_finds_a_replicated_entry_under_a_wrong_identifier() {
        let mut c = NodeConfig::new(NodeId(1), ClusterSecret::new([5; 16]));
        c.rules = RuleSet::parse("allow tcp\nallow udp").unwrap();
        let mut n = Node::new(c.clone(), SoftwareTable::new(c.count));
        let al = crate::alloc_policy::even_split(c.count, &[NodeId(1)]);
        n.apply_allocation(Millis(0), &al).unwrap();
        let syn = build::tcp(a(1), 40000, a(9), 443, TcpFlags::SYN, b"").unwrap();
        assert!(matches!(
            n.handle_packet(Millis(1), &syn),
            Verdict::Accept { created: true, .. }
        ));
        n.install_sa(Millis(1), a(9), a(1), 0x1000);
        let clean = n.check_identifiers();
        assert_eq!((clean.common, clean.node_specific), (2, 2));
        assert!(clean.is_consistent(), "{clean:?}");
        // A peer replicates an ESP entry under an identifier its peers do not hash to.
        let key = FlowKey::Esp {
            src: a(7),
            dst: a(1),
            spi: 0x2000,
        };
        let right = n.distributor().for_key(&key);
        let wrong = DistributionId((right.0 + 3) % 256);
        let m = Message {
            sender: NodeId(2),
            incarnation: 1,
            seq: 1,
            event: Event::Add(Entry::new(key, wrong, ConnState::EspSa, NodeId(2))),
        };
        n.apply_message(Millis(2), &m).unwrap();
        let found = n.check_identifiers();
        let bad: Vec<_> = found
            .mismatches
            .iter()
            .map(|m| (m.table, m.key, m.stored, m.recomputed))
            .collect();
        assert!(
            bad.contains(&(CheckedTable::Common, key, wrong, right)),
            "{bad:?}"
        );
        assert!(bad.iter().all(|b| b.1 == key));
        // identifier by identifier: found under the stored one, nothing under the right one
        let mut one = IdentifierCheck::default();
        n.check_identifiers_of(wrong, &mut one);
        assert!(!one.is_consistent());
        let mut other = IdentifierCheck::default();
        n.check_identifiers_of(right, &mut other);
        assert!(other.is_consistent());
    }
}
