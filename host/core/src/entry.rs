//! The entry model (claims 7-9, figure 5A): a key that identifies a set of data packets, and
//! beside it the distribution identifier, protocol state, action, and optional user, tunnel and
//! NAT details.

use super::ids::{DistributionId, Millis, NodeId};
use std::net::IpAddr;

/// An address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// IP address.
    pub addr: IpAddr,
    /// TCP or UDP port.
    pub port: u16,
}

impl Endpoint {
    /// An endpoint.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Self { addr, port }
    }
}

/// The transport of a 5-tuple key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

/// A 128-bit digest of a variable-length application identifier (TLS session id, HTTP cookie).
/// Keyed with the cluster secret, so it is not a raw copy of the secret-bearing value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionDigest(pub [u8; 16]);

/// The key of an entry: the fields that stay constant across the packets of one set
/// (claim 7). Bidirectional keys store their endpoints in canonical order (`lo <= hi`), so both
/// directions of a connection find the same entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowKey {
    /// TCP or UDP 5-tuple, IPv4 or IPv6.
    Transport {
        /// TCP or UDP.
        proto: L4Proto,
        /// The smaller endpoint.
        lo: Endpoint,
        /// The larger endpoint.
        hi: Endpoint,
    },
    /// ICMP or ICMPv6 echo: the address pair (canonical order) and the identifier field.
    Icmp {
        /// The smaller address.
        lo: IpAddr,
        /// The larger address.
        hi: IpAddr,
        /// The ICMP identifier header field.
        ident: u16,
    },
    /// An inbound or outbound ESP SA: its source and destination addresses (the tunnel's
    /// peers, which its identifier is hashed from) and SPI. One direction: the two SAs of a
    /// tunnel are two keys, with `src` and `dst` swapped.
    Esp {
        /// Source address of the SA: the tunnel peer opposite `dst`.
        src: IpAddr,
        /// Destination address of the SA.
        dst: IpAddr,
        /// Security Parameter Index.
        spi: u32,
    },
    /// An ISAKMP/IKE exchange: the two peer addresses (canonical order, which its identifier
    /// is hashed from), initiator cookie (SPI) and message id.
    Isakmp {
        /// The smaller peer address.
        lo: IpAddr,
        /// The larger peer address.
        hi: IpAddr,
        /// ISAKMP initiator cookie.
        initiator_cookie: u64,
        /// ISAKMP message id.
        message_id: u32,
    },
    /// A TLS (SSL) session, keyed by a digest of its session id.
    TlsSession(SessionDigest),
    /// An HTTP session, keyed by a digest of its cookie.
    HttpCookie(SessionDigest),
}

impl FlowKey {
    /// The canonical 5-tuple key for a packet from `src` to `dst`, and whether the packet
    /// travels from `lo` to `hi` (`true`) or the other way.
    pub fn transport(proto: L4Proto, src: Endpoint, dst: Endpoint) -> (FlowKey, bool) {
        if src <= dst {
            (
                FlowKey::Transport {
                    proto,
                    lo: src,
                    hi: dst,
                },
                true,
            )
        } else {
            (
                FlowKey::Transport {
                    proto,
                    lo: dst,
                    hi: src,
                },
                false,
            )
        }
    }

    /// The canonical ICMP echo key for a packet from `src` to `dst`, and its direction.
    pub fn icmp(src: IpAddr, dst: IpAddr, ident: u16) -> (FlowKey, bool) {
        if src <= dst {
            (
                FlowKey::Icmp {
                    lo: src,
                    hi: dst,
                    ident,
                },
                true,
            )
        } else {
            (
                FlowKey::Icmp {
                    lo: dst,
                    hi: src,
                    ident,
                },
                false,
            )
        }
    }

    /// The canonical ISAKMP/IKE key of a packet from `src` to `dst`, and its direction.
    pub fn isakmp(
        src: IpAddr,
        dst: IpAddr,
        initiator_cookie: u64,
        message_id: u32,
    ) -> (FlowKey, bool) {
        let (lo, hi, dir) = if src <= dst {
            (src, dst, true)
        } else {
            (dst, src, false)
        };
        (
            FlowKey::Isakmp {
                lo,
                hi,
                initiator_cookie,
                message_id,
            },
            dir,
        )
    }

    /// The same key with the message id replaced: an IKE exchange's phase-1 key is its key
    /// with message id 0. Other keys are returned unchanged.
    pub fn with_message_id(self, id: u32) -> FlowKey {
        match self {
            FlowKey::Isakmp {
                lo,
                hi,
                initiator_cookie,
                ..
            } => FlowKey::Isakmp {
                lo,
                hi,
                initiator_cookie,
                message_id: id,
            },
            k => k,
        }
    }

    /// Whether this is a TCP key.
    pub fn is_tcp(&self) -> bool {
        matches!(
            self,
            FlowKey::Transport {
                proto: L4Proto::Tcp,
                ..
            }
        )
    }
}

driver::code_enum! {
    /// Protocol state of an entry (its code on the replication wire).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum ConnState: u8 {
        /// TCP: the initiator's SYN was seen.
        SynSent = 1,
        /// TCP: the responder's SYN+ACK was seen.
        SynReceived = 2,
        /// TCP: the handshake completed.
        Established = 3,
        /// TCP: one side sent FIN.
        FinWait = 4,
        /// TCP: both sides sent FIN.
        Closing = 5,
        /// TCP: closed (last ACK or RST seen); kept briefly, then cleared.
        Closed = 6,
        /// UDP: packets seen one way only.
        UdpUnreplied = 7,
        /// UDP: packets seen both ways.
        UdpReplied = 8,
        /// ICMP echo request seen.
        IcmpRequest = 9,
        /// ICMP echo reply seen.
        IcmpReplied = 10,
        /// An IKE exchange.
        Ike = 11,
        /// An established ESP SA.
        EspSa = 12,
        /// An application session (TLS session id, HTTP cookie).
        Session = 13,
    }
}

impl ConnState {
    /// Whether a TCP connection in this state has completed its handshake.
    pub fn is_established_tcp(self) -> bool {
        matches!(
            self,
            ConnState::Established | ConnState::FinWait | ConnState::Closing
        )
    }
}

driver::code_enum! {
    /// What to do with the packets of an entry (the verdict of the rule that created it).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Action: u8 {
        /// Forward in the clear.
        Allow = 0,
        /// Forward through the tunnel named by the entry's [`SaRef`].
        Tunnel = 1,
        /// Drop silently.
        Drop = 2,
        /// Drop and answer with a reset or ICMP unreachable.
        Reject = 3,
    }
}

impl Action {
    /// Whether packets are forwarded.
    pub fn forwards(self) -> bool {
        matches!(self, Action::Allow | Action::Tunnel)
    }
}

/// An authenticated entity (claim 8), by its identifier in the user directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserId(pub u32);

/// A reference to the secured tunnel the packets travel in (claim 9): the SA's SPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SaRef {
    /// SPI of the SA.
    pub spi: u32,
}

/// Which address NAT rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Source NAT (the initiator's address is rewritten).
    Source,
    /// Destination NAT (the responder's address is rewritten).
    Destination,
}

/// NAT details of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Nat {
    /// Which side is rewritten.
    pub kind: NatKind,
    /// The translated address.
    pub addr: IpAddr,
    /// The translated port (0 = unchanged).
    pub port: u16,
}

/// One entry of the node-specific and common tables (figure 5A).
///
/// # Examples
///
/// ```
/// use cluster_core::{ConnState, DistributionId, Endpoint, Entry, FlowKey, L4Proto, NodeId};
///
/// let (key, _) = FlowKey::transport(
///     L4Proto::Udp,
///     Endpoint::new("192.0.2.1".parse()?, 5353),
///     Endpoint::new("198.51.100.53".parse()?, 53),
/// );
/// let e = Entry::new(key, DistributionId(9), ConnState::UdpUnreplied, NodeId(2));
/// assert_eq!((e.dist, e.creator), (DistributionId(9), NodeId(2)));
/// assert!(!key.is_tcp());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: FlowKey,
    /// Distribution information (claim 11): the identifier of the set of packets.
    pub dist: DistributionId,
    /// The first packet went from the key's `lo` to `hi` (5-tuple and ICMP keys).
    pub initiator_is_lo: bool,
    /// Protocol state.
    pub state: ConnState,
    /// The verdict for the packets of this entry.
    pub action: Action,
    /// Index of the rule that created the entry.
    pub rule: u16,
    /// Idle timeout in seconds; 0 means the default for the state.
    pub timeout_s: u32,
    /// Authenticated user (claim 8).
    pub user: Option<UserId>,
    /// Secured tunnel (claim 9).
    pub tunnel: Option<SaRef>,
    /// NAT details.
    pub nat: Option<Nat>,
    /// Node that created the entry.
    pub creator: NodeId,
    /// Version, incremented by the owner on every replicated change.
    pub version: u32,
    /// Local: when a packet last hit the entry (or when it was installed). Not replicated.
    pub last_seen: Millis,
    /// Local: packets that hit the entry on this node. Not replicated.
    pub packets: u64,
    /// Local: bytes that hit the entry on this node. Not replicated.
    pub bytes: u64,
}

impl Entry {
    /// A new entry with version 1, no options, and zero counters.
    pub fn new(key: FlowKey, dist: DistributionId, state: ConnState, creator: NodeId) -> Self {
        Entry {
            key,
            dist,
            initiator_is_lo: true,
            state,
            action: Action::Allow,
            rule: 0,
            timeout_s: 0,
            user: None,
            tunnel: None,
            nat: None,
            creator,
            version: 1,
            last_seen: Millis(0),
            packets: 0,
            bytes: 0,
        }
    }

    /// Whether two entries carry the same replicated content (local fields ignored).
    pub fn same_replicated(&self, other: &Entry) -> bool {
        self.key == other.key
            && self.dist == other.dist
            && self.initiator_is_lo == other.initiator_is_lo
            && self.state == other.state
            && self.action == other.action
            && self.rule == other.rule
            && self.timeout_s == other.timeout_s
            && self.user == other.user
            && self.tunnel == other.tunnel
            && self.nat == other.nat
            && self.creator == other.creator
            && self.version == other.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn both_directions_one_key() {
        let a = Endpoint::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40000);
        let b = Endpoint::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 443);
        let (k1, d1) = FlowKey::transport(L4Proto::Tcp, a, b);
        let (k2, d2) = FlowKey::transport(L4Proto::Tcp, b, a);
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        assert!(k1.is_tcp());
    }

    #[test]
    fn isakmp_keys_are_canonical() {
        let a = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let (k1, d1) = FlowKey::isakmp(a, b, 0x11, 2);
        let (k2, d2) = FlowKey::isakmp(b, a, 0x11, 2);
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        assert!(matches!(k1, FlowKey::Isakmp { lo, hi, .. } if lo == b && hi == a));
        assert_eq!(k1.with_message_id(0), FlowKey::isakmp(a, b, 0x11, 0).0);
        assert_ne!(k1.with_message_id(0), k1);
    }

    #[test]
    fn state_codes_round_trip() {
        for v in 0..=255u8 {
            if let Some(s) = ConnState::from_code(v) {
                assert_eq!(s as u8, v);
            }
            if let Some(a) = Action::from_code(v) {
                assert_eq!(a as u8, v);
            }
        }
    }

    #[test]
    fn wire_codes_are_pinned() {
        let states: Vec<u8> = ConnState::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(states, (1..=13).collect::<Vec<u8>>());
        assert_eq!(ConnState::Session.code(), 13);
        assert_eq!(ConnState::try_from(0u8).ok(), None);
        let actions: Vec<u8> = Action::ALL.iter().map(|a| u8::from(*a)).collect();
        assert_eq!(actions, vec![0, 1, 2, 3]);
        assert_eq!(Action::from_code(3), Some(Action::Reject));
    }
}
