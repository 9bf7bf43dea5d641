//! Distribution identifiers (claims 2, 10-13; figure 6A step 601): a keyed hash of header
//! fields, reduced to `0..IdCount`.
//!
//! The hash is SipHash-1-3 keyed with a cluster secret, so an outsider cannot choose addresses
//! that all land on one node. The fields hashed depend on the packet type:
//!
//! | packet | fields hashed |
//! |---|---|
//! | TCP, UDP | protocol, both endpoints in canonical order |
//! | ICMP echo | both addresses in canonical order, identifier |
//! | ESP, IKE (UDP 500/4500) | the peer address pair in canonical order (not the SPI) |
//! | TLS session, HTTP cookie | the keyed digest |
//! | stateless traffic (ARP, neighbour discovery, ICMP errors, other protocols) | the address pair in canonical order |
//!
//! So both directions of a connection share one identifier, and an IPsec tunnel's two SAs and
//! its IKE traffic share one identifier.

use super::entry::{FlowKey, L4Proto, SessionDigest};
use super::ids::{DistributionId, IdCount};
use super::siphash::siphash13;
use std::fmt;
use std::net::IpAddr;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The 128-bit cluster secret keying the distribution hash. Never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClusterSecret([u8; 16]);

impl ClusterSecret {
    /// A secret from its bytes.
    pub fn new(bytes: [u8; 16]) -> Self {
        ClusterSecret(bytes)
    }

    /// The secret's bytes, for keying a card's identifier hash (which only ever writes them
    /// to write-only registers).
    pub(crate) fn bytes(&self) -> [u8; 16] {
        self.0
    }

    fn keys(&self) -> (u64, u64) {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&self.0[..8]);
        b.copy_from_slice(&self.0[8..]);
        (u64::from_le_bytes(a), u64::from_le_bytes(b))
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Domain tags, so different packet types never hash the same byte string.
mod tag {
    pub const TCP: u8 = 1;
    pub const UDP: u8 = 2;
    pub const ICMP: u8 = 3;
    pub const IPSEC: u8 = 4;
    pub const TLS: u8 = 5;
    pub const HTTP: u8 = 6;
    pub const DIGEST: u8 = 7;
    pub const PAIR: u8 = 8;
}

/// A small stack buffer for hash input.
struct Buf {
    b: [u8; 48],
    n: usize,
}

impl Buf {
    fn new(tag: u8) -> Self {
        let mut b = Buf { b: [0; 48], n: 0 };
        b.push(&[tag]);
        b
    }
    fn push(&mut self, s: &[u8]) {
        let end = (self.n + s.len()).min(self.b.len());
        let take = end - self.n;
        self.b[self.n..end].copy_from_slice(&s[..take]);
        self.n = end;
    }
    fn addr(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(v) => self.push(&v.octets()),
            IpAddr::V6(v) => self.push(&v.octets()),
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

/// Computes distribution identifiers.
///
/// # Examples
///
/// Both directions of a connection, and both ends of an IPsec tunnel, get one identifier:
///
/// ```
/// use cluster_core::{ClusterSecret, Distributor, Endpoint, FlowKey, IdCount, L4Proto};
///
/// let dist = Distributor::new(&ClusterSecret::new(*b"16 secret bytes!"), IdCount::new(256)?);
/// let client = Endpoint::new("192.0.2.1".parse()?, 40_000);
/// let server = Endpoint::new("198.51.100.80".parse()?, 443);
/// let (there, _) = FlowKey::transport(L4Proto::Tcp, client, server);
/// let (back, _) = FlowKey::transport(L4Proto::Tcp, server, client);
/// assert_eq!(dist.for_key(&there), dist.for_key(&back));
/// assert!(dist.for_key(&there).0 < 256);
/// // an ESP SA's identifier comes from its own fields: the tunnel's two ends (claim 12)
/// let sa = FlowKey::Esp { src: client.addr, dst: server.addr, spi: 0x1001 };
/// assert_eq!(dist.for_key(&sa), dist.for_ipsec_peers(server.addr, client.addr));
/// assert_eq!(
///     dist.for_ipsec_peers(client.addr, server.addr),
///     dist.for_ipsec_peers(server.addr, client.addr)
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Distributor {
    k0: u64,
    k1: u64,
    count: IdCount,
}

impl fmt::Debug for Distributor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Distributor")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Distributor {
    /// A distributor for `count` identifiers keyed with `secret`.
    pub fn new(secret: &ClusterSecret, count: IdCount) -> Self {
        let (k0, k1) = secret.keys();
        Distributor { k0, k1, count }
    }

    /// The number of identifiers.
    pub fn count(&self) -> IdCount {
        self.count
    }

    fn reduce(&self, h: u64) -> DistributionId {
        // Power of two: the mask keeps the low bits, which SipHash mixes fully.
        DistributionId((h & u64::from(self.count.get() - 1)) as u16)
    }

    fn hash(&self, buf: &Buf) -> u64 {
        siphash13(self.k0, self.k1, buf.bytes())
    }

    /// The identifier of an IPsec tunnel between two peers (its ESP SAs and IKE traffic).
    pub fn for_ipsec_peers(&self, a: IpAddr, b: IpAddr) -> DistributionId {
        self.for_unordered_pair(tag::IPSEC, a, b)
    }

    /// The identifier of stateless traffic between two addresses (ARP, IPv6 neighbour
    /// discovery, ICMP errors, protocols without flows): exactly one node, the owner, passes
    /// it on, so on a shared segment it crosses the cluster once.
    pub fn for_address_pair(&self, a: IpAddr, b: IpAddr) -> DistributionId {
        self.for_unordered_pair(tag::PAIR, a, b)
    }

    /// The identifier of two addresses under `tag`, the same in either order.
    fn for_unordered_pair(&self, tag: u8, a: IpAddr, b: IpAddr) -> DistributionId {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut buf = Buf::new(tag);
        buf.addr(lo);
        buf.addr(hi);
        self.reduce(self.hash(&buf))
    }

    /// The identifier of a key, recomputed from the key's own fields (claim 12): every key
    /// carries the fields its identifier is hashed from. An ESP SA's and an IKE exchange's
    /// identifier is their peer pair's ([`Self::for_ipsec_peers`]), so both SAs of a tunnel
    /// and its IKE traffic share it.
    pub fn for_key(&self, key: &FlowKey) -> DistributionId {
        let buf = match key {
            FlowKey::Transport { proto, lo, hi } => {
                let mut buf = Buf::new(match proto {
                    L4Proto::Tcp => tag::TCP,
                    L4Proto::Udp => tag::UDP,
                });
                buf.addr(lo.addr);
                buf.push(&lo.port.to_be_bytes());
                buf.addr(hi.addr);
                buf.push(&hi.port.to_be_bytes());
                buf
            }
            FlowKey::Icmp { lo, hi, ident } => {
                let mut buf = Buf::new(tag::ICMP);
                buf.addr(*lo);
                buf.addr(*hi);
                buf.push(&ident.to_be_bytes());
                buf
            }
            FlowKey::TlsSession(d) => {
                let mut buf = Buf::new(tag::TLS);
                buf.push(&d.0);
                buf
            }
            FlowKey::HttpCookie(d) => {
                let mut buf = Buf::new(tag::HTTP);
                buf.push(&d.0);
                buf
            }
            FlowKey::Esp { src, dst, .. } => return self.for_ipsec_peers(*src, *dst),
            FlowKey::Isakmp { lo, hi, .. } => return self.for_ipsec_peers(*lo, *hi),
        };
        self.reduce(self.hash(&buf))
    }

    /// A keyed 128-bit digest of a variable-length identifier (TLS session id, HTTP cookie).
    pub fn session_digest(&self, value: &[u8]) -> SessionDigest {
        let mut out = [0u8; 16];
        let mut first = Vec::with_capacity(value.len() + 2);
        first.push(tag::DIGEST);
        first.push(0);
        first.extend_from_slice(value);
        out[..8].copy_from_slice(&siphash13(self.k0, self.k1, &first).to_le_bytes());
        first[1] = 1;
        out[8..].copy_from_slice(&siphash13(self.k0, self.k1, &first).to_le_bytes());
        SessionDigest(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Endpoint;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn d(n: u32) -> Distributor {
        Distributor::new(&ClusterSecret::new([7; 16]), IdCount::new(n).unwrap())
    }

    #[test]
    fn directions_and_range() {
        let dist = d(256);
        for i in 0..500u32 {
            let a = Endpoint::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 1024 + i as u16);
            let b = Endpoint::new(IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64)), 80);
            let (k1, _) = FlowKey::transport(L4Proto::Udp, a, b);
            let (k2, _) = FlowKey::transport(L4Proto::Udp, b, a);
            let i1 = dist.for_key(&k1);
            assert_eq!(i1, dist.for_key(&k2));
            assert!(i1.0 < 256);
            assert_eq!(
                dist.for_ipsec_peers(a.addr, b.addr),
                dist.for_ipsec_peers(b.addr, a.addr)
            );
        }
    }

    #[test]
    fn spreads_and_depends_on_secret() {
        let a = d(64);
        let b = Distributor::new(&ClusterSecret::new([8; 16]), IdCount::new(64).unwrap());
        let mut counts = [0u32; 64];
        let mut differ = 0;
        for i in 0..6400u32 {
            let s = Endpoint::new(IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i)), 5000);
            let t = Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1)), 80);
            let (k, _) = FlowKey::transport(L4Proto::Tcp, s, t);
            let x = a.for_key(&k);
            counts[x.index()] += 1;
            if x != b.for_key(&k) {
                differ += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 50 && c < 160), "{counts:?}");
        assert!(differ > 6000);
    }

    #[test]
    fn a_tunnels_sas_and_ike_share_one_identifier() {
        let dist = d(256);
        for i in 0..200u32 {
            let a = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i));
            let b = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)));
            let peers = dist.for_ipsec_peers(a, b);
            let out = FlowKey::Esp {
                src: a,
                dst: b,
                spi: 0x1000 + i,
            };
            let back = FlowKey::Esp {
                src: b,
                dst: a,
                spi: 0x2000 + i,
            };
            let (ike, _) = FlowKey::isakmp(b, a, u64::from(i) << 8, i);
            assert_eq!(dist.for_key(&out), peers);
            assert_eq!(dist.for_key(&back), peers);
            assert_eq!(dist.for_key(&ike), peers);
            assert_eq!(dist.for_key(&ike.with_message_id(0)), peers);
        }
    }

    #[test]
    fn secret_is_not_printed() {
        let s = ClusterSecret::new([0x41; 16]);
        assert!(!format!("{s:?}").contains("65"));
        assert!(!format!("{:?}", d(4)).contains("k0"));
    }
}
