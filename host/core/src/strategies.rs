//! Proptest strategies for the core's values, shared by the core's own property tests and the
//! host stack's robustness tests (enable the `proptest` feature to use them from another crate).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use crate::entry::{
    Action, ConnState, Endpoint, Entry, FlowKey, L4Proto, Nat, NatKind, SaRef, SessionDigest,
    UserId,
};
use crate::ids::{DistributionId, NodeId};

/// Any IPv4 or IPv6 address.
pub fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|x| IpAddr::V4(Ipv4Addr::from(x))),
        any::<u128>().prop_map(|x| IpAddr::V6(Ipv6Addr::from(x))),
    ]
}

/// A flow key of every kind: TCP or UDP, ICMP, ESP, ISAKMP, TLS session and HTTP cookie.
pub fn flow_key() -> impl Strategy<Value = FlowKey> {
    prop_oneof![
        (any::<bool>(), addr(), any::<u16>(), addr(), any::<u16>()).prop_map(
            |(tcp, a, p, b, q)| {
                let proto = if tcp { L4Proto::Tcp } else { L4Proto::Udp };
                FlowKey::transport(proto, Endpoint::new(a, p), Endpoint::new(b, q)).0
            }
        ),
        (addr(), addr(), any::<u16>()).prop_map(|(a, b, i)| FlowKey::icmp(a, b, i).0),
        (addr(), addr(), any::<u32>()).prop_map(|(src, dst, spi)| FlowKey::Esp { src, dst, spi }),
        (addr(), addr(), any::<u64>(), any::<u32>())
            .prop_map(|(a, b, c, m)| FlowKey::isakmp(a, b, c, m).0),
        any::<[u8; 16]>().prop_map(|d| FlowKey::TlsSession(SessionDigest(d))),
        any::<[u8; 16]>().prop_map(|d| FlowKey::HttpCookie(SessionDigest(d))),
    ]
}

prop_compose! {
    /// An entry with any key, identifier, state, action, rule, timeout, user, tunnel, NAT,
    /// creator and version.
    pub fn entry()(
        key in flow_key(),
        dist in any::<u16>(),
        dir in any::<bool>(),
        state in 1u8..=13,
        action in 0u8..=3,
        rule in any::<u16>(),
        timeout in any::<u32>(),
        user in proptest::option::of(any::<u32>()),
        spi in proptest::option::of(any::<u32>()),
        nat in proptest::option::of((any::<bool>(), addr(), any::<u16>())),
        creator in any::<u16>(),
        version in any::<u32>(),
    ) -> Entry {
        let state = ConnState::from_code(state).unwrap_or(ConnState::Session);
        let mut e = Entry::new(key, DistributionId(dist), state, NodeId(creator));
        e.initiator_is_lo = dir;
        e.action = Action::from_code(action).unwrap_or(Action::Allow);
        e.rule = rule;
        e.timeout_s = timeout;
        e.user = user.map(UserId);
        e.tunnel = spi.map(|spi| SaRef { spi });
        e.nat = nat.map(|(dst, addr, port)| Nat {
            kind: if dst { NatKind::Destination } else { NatKind::Source },
            addr,
            port,
        });
        e.version = version;
        e
    }
}
