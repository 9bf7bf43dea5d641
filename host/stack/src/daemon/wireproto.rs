//! The wire's datagram protocol between the traffic source and the nodes (loopback UDP).
//!
//! Packet, wire to node: `seq u64` then the packet (bare IPv4/IPv6). Verdict, node to wire:
//! `seq u64`, `node u16`, `code u8`. Every node gets every packet (the seeds' shared-address
//! cluster); each answers with its verdict.

use crate::core::ids::NodeId;

driver::code_enum! {
    /// A node's verdict on one packet (the `code u8` of a verdict datagram).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Code: u8 {
        /// Another node owns the identifier (or nobody does).
        NotOurs = 0,
        /// Forwarded on an existing entry.
        Hit = 1,
        /// Forwarded; a new entry was created.
        Created = 2,
        /// Dropped: TCP packet other than SYN without state.
        TcpNoState = 3,
        /// Dropped: other packet without state.
        NoState = 4,
        /// Dropped: rule, parse, entry action, table full or missing SA.
        Dropped = 5,
        /// The node does not take traffic now (syncing, fenced or a witness).
        NotReady = 6,
    }
}

impl From<crate::core::member::PacketOutcome> for Code {
    fn from(o: crate::core::member::PacketOutcome) -> Self {
        use crate::core::member::PacketOutcome as P;
        match o {
            // a held packet's verdict comes when it is released; until then it counts as not
            // handled
            P::NotReady | P::Held(_) => Code::NotReady,
            P::Created => Code::Created,
            P::Hit => Code::Hit,
            P::NotOurs => Code::NotOurs,
            P::TcpNoState => Code::TcpNoState,
            P::NoState => Code::NoState,
            P::Dropped => Code::Dropped,
        }
    }
}

impl Code {
    /// Whether the node handled the packet (it owns the identifier and decided).
    pub fn handled(self) -> bool {
        !matches!(self, Code::NotOurs | Code::NotReady)
    }
}

/// Encodes a packet datagram.
pub fn encode_packet(seq: u64, packet: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + packet.len());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(packet);
    v
}

/// Splits a packet datagram into sequence number and packet.
pub fn parse_packet(d: &[u8]) -> Option<(u64, &[u8])> {
    let seq = u64::from_be_bytes(d.get(..8)?.try_into().ok()?);
    Some((seq, &d[8..]))
}

/// Encodes a verdict datagram.
pub fn encode_verdict(seq: u64, node: NodeId, code: Code) -> [u8; 11] {
    let mut v = [0u8; 11];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v[8..10].copy_from_slice(&node.0.to_be_bytes());
    v[10] = code.code();
    v
}

/// Decodes a verdict datagram.
pub fn parse_verdict(d: &[u8]) -> Option<(u64, NodeId, Code)> {
    if d.len() != 11 {
        return None;
    }
    let seq = u64::from_be_bytes(d[..8].try_into().ok()?);
    let node = NodeId(u16::from_be_bytes([d[8], d[9]]));
    Some((seq, node, Code::from_code(d[10])?))
}

/// Binds a UDP socket for wire traffic with a large receive buffer (best effort: the kernel
/// caps it at `net.core.rmem_max`), so a briefly descheduled process loses no datagrams.
///
/// # Errors
/// The bind error.
pub fn bind_wire_socket(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &(8 << 20));
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s)
}
