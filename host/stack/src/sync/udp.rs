//! The tokio UDP driver of an [`Endpoint`]: one socket, peer addresses from the config, a
//! [`FaultInjector`] in between.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::endpoint::Endpoint;
use super::fault::FaultInjector;
use super::frame::FrameError;
use crate::core::ids::NodeId;

/// A UDP socket bound for one endpoint.
pub struct UdpDriver {
    socket: UdpSocket,
    addrs: HashMap<NodeId, SocketAddr>,
    origin: Instant,
    /// Faults to inject (none by default).
    pub fault: FaultInjector,
    /// Frames the kernel would not take (dropped; retransmission recovers them).
    pub send_failures: u64,
}

impl UdpDriver {
    /// Binds `local` and remembers where each peer listens.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind(local: SocketAddr, addrs: HashMap<NodeId, SocketAddr>) -> io::Result<Self> {
        let std_sock = std::net::UdpSocket::bind(local)?;
        // best effort: large buffers absorb bursts (bulk resync) while the process is busy
        let _ =
            nix::sys::socket::setsockopt(&std_sock, nix::sys::socket::sockopt::RcvBuf, &(16 << 20));
        let _ =
            nix::sys::socket::setsockopt(&std_sock, nix::sys::socket::sockopt::SndBuf, &(4 << 20));
        std_sock.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(std_sock)?;
        Ok(Self {
            socket,
            addrs,
            origin: Instant::now(),
            fault: FaultInjector::none(),
            send_failures: 0,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Time since this driver started, the endpoint's clock.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The tokio instant of an endpoint time.
    pub fn instant(&self, t: Duration) -> Instant {
        self.origin + t
    }

    /// Sends every frame the endpoint has ready (never blocks: a full socket buffer drops the
    /// frame, which retransmission recovers).
    pub fn send_all(&mut self, ep: &mut Endpoint) {
        while let Some(t) = ep.poll_transmit() {
            let Some(addr) = self.addrs.get(&t.to).copied() else {
                continue;
            };
            for _ in 0..self.fault.outbound(t.to) {
                if self.socket.try_send_to(&t.bytes, addr).is_err() {
                    self.send_failures += 1;
                }
            }
        }
    }

    /// Waits for one datagram.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, _) = self.socket.recv_from(buf).await?;
        Ok(n)
    }

    /// Takes a datagram without waiting, if one is there.
    pub fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        self.socket.try_recv_from(buf).ok().map(|(n, _)| n)
    }

    /// Hands a received datagram to the endpoint (unless the fault injector drops it).
    ///
    /// # Errors
    /// Why the endpoint rejected the frame.
    pub fn deliver(&mut self, ep: &mut Endpoint, bytes: &[u8]) -> Result<(), FrameError> {
        if !self.fault.inbound(bytes) {
            return Ok(());
        }
        let now = self.now();
        ep.handle_frame(now, bytes)
    }
}
