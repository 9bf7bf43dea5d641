//! Deterministic sample entries, for demos, benchmarks and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::card::CamEntry;
use crate::key::{Action, CamKey, Flow, IpPrefix, ResultFlags, ResultWord};
use crate::types::{DistributionId, SaSlot};

/// The `n`-th sample entry: a mix of every entry type over IPv4 and IPv6,
/// some with wildcards, spread over the distribution identifiers. Distinct
/// `n` below 2^24 give distinct keys.
#[must_use]
pub fn sample_entry(n: u32) -> CamEntry {
    let m = n >> 3; // unique within each of the 8 shapes
    let h = n.wrapping_mul(0x9E37_79B9);
    let v4 = |base: u32| IpPrefix::host(IpAddr::V4(Ipv4Addr::from_bits(base | (m & 0x00FF_FFFF))));
    let v6 = |tag: u16| {
        IpPrefix::host(IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0x0db8,
            tag,
            0,
            0,
            0,
            (m >> 16) as u16,
            m as u16,
        )))
    };
    let peer4 = IpPrefix::host(IpAddr::V4(Ipv4Addr::new(192, 0, 2, (h >> 24) as u8)));
    let peer6 = IpPrefix::host(IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0x0db8,
        0xffff,
        0,
        0,
        0,
        0,
        (h >> 16) as u16,
    )));
    let port = (h >> 8) as u16 | 1024;
    let (flow, action) = match n % 8 {
        0 => (
            Flow::Tcp {
                src: v4(0x0A00_0000),
                dst: peer4,
                src_port: Some(port),
                dst_port: Some(443),
            },
            Action::Accept,
        ),
        1 => (
            Flow::Udp {
                src: v4(0x0A00_0000),
                dst: peer4,
                src_port: None,
                dst_port: Some(53),
            },
            Action::Accept,
        ),
        2 => (
            Flow::Tcp {
                src: v6(1),
                dst: peer6,
                src_port: Some(port),
                dst_port: Some(22),
            },
            Action::Accept,
        ),
        3 => (
            Flow::Udp {
                src: v6(2),
                dst: peer6,
                src_port: Some(port),
                dst_port: Some(4500),
            },
            Action::ToHost,
        ),
        4 => (
            Flow::Icmp {
                src: v4(0x0B00_0000),
                dst: peer4,
                id: Some(m as u16),
            },
            Action::Accept,
        ),
        5 => (
            Flow::Icmp {
                src: v6(3),
                dst: peer6,
                id: None,
            },
            Action::Reject,
        ),
        6 => (
            Flow::Esp {
                dst: v4(0x0C00_0000),
                spi: Some(0x1000_0000 | m),
            },
            Action::Decrypt,
        ),
        _ => (
            Flow::Isakmp {
                dst: peer4,
                initiator_cookie: Some(u64::from(h) << 32 | u64::from(m)),
                message_id: Some(0),
            },
            Action::ToHost,
        ),
    };
    let zone = if n.is_multiple_of(5) {
        None
    } else {
        Some((n % 4) as u8)
    };
    CamEntry {
        key: CamKey::new(zone, flow),
        did: DistributionId(u16::from((h >> 16) as u8)),
        result: ResultWord {
            action,
            sa_slot: SaSlot(if action == Action::Decrypt {
                (m & 0xFFFF) as u16
            } else {
                0
            }),
            flags: ResultFlags(if n.is_multiple_of(3) {
                ResultFlags::ESTABLISHED
            } else {
                0
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn samples_are_distinct_and_encode() {
        let mut seen = HashSet::new();
        for n in 0..5000 {
            let e = sample_entry(n);
            let b = e.key.encode().unwrap();
            assert!(seen.insert(b), "sample {n} repeats");
            assert_eq!(CamKey::decode(&b).unwrap(), e.key);
        }
    }
}
