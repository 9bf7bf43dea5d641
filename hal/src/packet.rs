//! Raw Ethernet frames on a Linux interface: an `AF_PACKET` socket bound to one interface,
//! promiscuous and non-blocking, that does not read back the frames it (or anything else on the
//! host) transmits on that interface. What `sim_bridge::bridge` uses to put a simulated card's
//! ports on real interfaces.
//!
//! The socket asks the kernel for two pieces of per-frame metadata, because frames that a local
//! stack sent (over a veth pair, say) are not finished bytes yet:
//!
//! * a `virtio_net_hdr` (`PACKET_VNET_HDR`): a frame whose transport checksum the sender left to
//!   "hardware" (`CHECKSUM_PARTIAL`) says where the checksum starts and where it goes
//!   ([`Received::csum`]); a segmentation-offload super-frame says so ([`Received::gso`]);
//! * `PACKET_AUXDATA`: the 802.1Q tag the kernel took out of the frame ([`Received::vlan`]).
//!
//! No crate on crates.io gives this safely: `nix` and `socket2` have no `sockaddr_ll`
//! constructor and none of the `SOL_PACKET` options; `pnet_datalink` (0.35) and `afpacket`
//! (0.2) bind and set promiscuous mode but give neither the checksum metadata nor
//! `PACKET_IGNORE_OUTGOING`, and without the first every TCP segment a local stack sends over a
//! veth pair arrives with a checksum the receiver drops. So the few system calls are here, in
//! the crate that may hold `unsafe`.

// `unsafe` here: the libc calls of the socket (socket, setsockopt, bind, recvmsg, send, poll,
// the SIOCGIFFLAGS ioctl) and reading the kernel's control message; each block says why it is
// sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Length of the `virtio_net_hdr` the kernel puts before every frame (and wants before every
/// frame sent) on a socket with `PACKET_VNET_HDR`.
const VNET_HDR: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const VNET_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
const VNET_GSO_NONE: u8 = 0;
/// Reads one [`PacketSocket::recv`] makes at most before it says nothing is waiting.
const RECV_TRIES: usize = 1024;
/// `TP_STATUS_VLAN_TPID_VALID`.
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// Why a packet socket could not be opened or used. The message names the interface, the
/// cause and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// No interface of that name in this network namespace.
    #[error(
        "no network interface `{name}` in this network namespace: check the name with \
         `ip link show` (or create it, e.g. `ip link add {name} type veth peer name {name}p`)"
    )]
    NoInterface {
        /// The name asked for.
        name: String,
    },
    /// The name cannot be an interface name (empty, too long, a NUL byte).
    #[error("`{name}` is not a valid interface name (1 to 15 bytes, no NUL)")]
    BadName {
        /// The name given.
        name: String,
    },
    /// Not allowed to open raw sockets.
    #[error(
        "opening a raw packet socket on `{name}` needs CAP_NET_RAW: run as root, or give the \
         program the capability (`setcap cap_net_raw,cap_net_admin+ep PROGRAM`)"
    )]
    NotPermitted {
        /// The interface.
        name: String,
    },
    /// Another system call failed.
    #[error("packet socket on `{name}`: {what} failed: {source}")]
    Io {
        /// The interface.
        name: String,
        /// The call.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// One frame read from an interface, in the caller's buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The frame's length on the interface; more than the buffer when it was cut short.
    pub len: usize,
    /// Bytes of it in the buffer (`len` capped at the buffer's size).
    pub stored: usize,
    /// The transport checksum is still to be computed: over the bytes from `start` to the
    /// end (the field holds the pseudo-header sum), stored at `start + offset`.
    pub csum: Option<(u16, u16)>,
    /// A segmentation-offload super-frame (several wire frames in one; the sender's TSO/GSO).
    pub gso: bool,
    /// The 802.1Q tag the kernel took out of the frame: (TPID, TCI).
    pub vlan: Option<(u16, u16)>,
    /// The kernel dropped a frame it could not describe (an offload super-frame of a kind the
    /// header cannot carry); nothing is in the buffer.
    pub unreadable: bool,
}

/// An `AF_PACKET` socket on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    name: String,
    ifindex: i32,
}

fn io_err(name: &str, what: &'static str, source: io::Error) -> PacketError {
    if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
        return PacketError::NotPermitted { name: name.into() };
    }
    PacketError::Io {
        name: name.into(),
        what,
        source,
    }
}

/// A new socket of `domain` and `ty` (protocol 0) for interface `name`; `what` names the call
/// in the error.
fn socket(
    name: &str,
    domain: libc::c_int,
    ty: libc::c_int,
    what: &'static str,
) -> Result<OwnedFd, PacketError> {
    // SAFETY: plain system call with constant arguments; the result is checked below.
    let raw = unsafe { libc::socket(domain, ty, 0) };
    if raw < 0 {
        return Err(io_err(name, what, io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a descriptor the call above just opened and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Whether the interface `name` of the calling thread's network namespace is
/// administratively up (`IFF_UP`, what `ip link set NAME up` sets). A raw socket opens on an
/// interface that is down too, and then reads nothing: a program that bridges it asks first.
/// Needs no privilege.
///
/// # Errors
/// [`PacketError::NoInterface`], [`PacketError::BadName`], or [`PacketError::Io`] when the
/// query fails otherwise.
pub fn interface_up(name: &str) -> Result<bool, PacketError> {
    let bad = || PacketError::BadName { name: name.into() };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.as_bytes().contains(&0) {
        return Err(bad());
    }
    // Any socket answers the interface ioctls, for its own network namespace; a UDP one needs
    // no privilege.
    let fd = socket(
        name,
        libc::AF_INET,
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
        "socket(AF_INET) for SIOCGIFFLAGS",
    )?;
    // SAFETY: an all-zero `ifreq` is a valid value of this plain C struct (and union).
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *b as libc::c_char;
    }
    // SAFETY: `ifr` lives on the stack through the call, its name NUL-terminated (the name is
    // shorter than IFNAMSIZ and the rest is zero); SIOCGIFFLAGS writes only the flags into it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS as _, &raw mut ifr) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODEV) {
            return Err(PacketError::NoInterface { name: name.into() });
        }
        return Err(io_err(name, "ioctl(SIOCGIFFLAGS)", e));
    }
    // SAFETY: after a successful SIOCGIFFLAGS the union holds the flags (and all of it was
    // initialized, zeroed above).
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    Ok(libc::c_int::from(flags) & libc::IFF_UP != 0)
}

impl PacketSocket {
    /// Open a socket on interface `name`: every frame the interface receives (promiscuous),
    /// none that it transmits, non-blocking.
    ///
    /// # Errors
    /// [`PacketError::NoInterface`], [`PacketError::BadName`], [`PacketError::NotPermitted`]
    /// (not root), [`PacketError::Io`].
    pub fn open(name: &str) -> Result<PacketSocket, PacketError> {
        let bad = || PacketError::BadName { name: name.into() };
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(bad());
        }
        let cname = CString::new(name).map_err(|_| bad())?;
        // SAFETY: `cname` is a NUL-terminated string that lives through the call; the call
        // only reads it.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(PacketError::NoInterface { name: name.into() });
        }
        let ifindex = i32::try_from(ifindex).map_err(|_| bad())?;
        // Protocol 0: the socket receives nothing until `bind` names the interface, so no
        // frame of another interface gets in first.
        let fd = socket(
            name,
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            "socket(AF_PACKET)",
        )?;
        let s = PacketSocket {
            fd,
            name: name.into(),
            ifindex,
        };
        // Before bind: the kernel adds the header to frames from then on.
        s.set_int(libc::PACKET_VNET_HDR, 1, "setsockopt(PACKET_VNET_HDR)")?;
        s.set_int(libc::PACKET_AUXDATA, 1, "setsockopt(PACKET_AUXDATA)")?;
        // Linux 4.20 and later; `recv` checks the packet type as well, for older kernels.
        let _ = s.set_int(
            libc::PACKET_IGNORE_OUTGOING,
            1,
            "setsockopt(PACKET_IGNORE_OUTGOING)",
        );
        // SAFETY: an all-zero `sockaddr_ll` is a valid value of this plain C struct.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a valid `sockaddr_ll` on the stack for the whole call and the length
        // passed is its size; the kernel only reads it.
        let r = unsafe {
            libc::bind(
                s.fd.as_raw_fd(),
                (&raw const sll).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io_err(name, "bind", io::Error::last_os_error()));
        }
        // SAFETY: an all-zero `packet_mreq` is a valid value of this plain C struct.
        let mut mreq: libc::packet_mreq = unsafe { zeroed() };
        mreq.mr_ifindex = ifindex;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        // The membership ends when the socket closes.
        if s.setsockopt(libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq) < 0 {
            return Err(io_err(
                name,
                "setsockopt(PACKET_ADD_MEMBERSHIP promiscuous)",
                io::Error::last_os_error(),
            ));
        }
        Ok(s)
    }

    /// Ask for a receive buffer of `bytes` (the kernel doubles it for its own bookkeeping);
    /// as root beyond the system's `rmem_max` (`SO_RCVBUFFORCE`), else up to it. A burst of
    /// frames on a busy segment then waits in the buffer instead of being dropped before the
    /// bridge reads it.
    ///
    /// # Errors
    /// [`PacketError::Io`] when neither option is accepted.
    pub fn set_receive_buffer(&self, bytes: usize) -> Result<(), PacketError> {
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let set = |opt: libc::c_int| self.setsockopt(libc::SOL_SOCKET, opt, &v);
        if set(libc::SO_RCVBUFFORCE) == 0 || set(libc::SO_RCVBUF) == 0 {
            return Ok(());
        }
        Err(io_err(
            &self.name,
            "setsockopt(SO_RCVBUF)",
            io::Error::last_os_error(),
        ))
    }

    /// Frames the kernel dropped for this socket since the last call (its receive buffer was
    /// full): `PACKET_STATISTICS`, which the kernel resets on every read.
    ///
    /// # Errors
    /// [`PacketError::Io`] when the kernel refuses the query.
    pub fn take_drops(&self) -> Result<u64, PacketError> {
        // SAFETY: an all-zero `tpacket_stats` is a valid value of this plain C struct.
        let mut st: libc::tpacket_stats = unsafe { zeroed() };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` live on the stack through the call; `len` holds the size of
        // `st`, and the kernel writes at most that many bytes into it.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast::<libc::c_void>(),
                &raw mut len,
            )
        };
        if r < 0 {
            return Err(io_err(
                &self.name,
                "getsockopt(PACKET_STATISTICS)",
                io::Error::last_os_error(),
            ));
        }
        Ok(u64::from(st.tp_drops))
    }

    fn set_int(
        &self,
        opt: libc::c_int,
        v: libc::c_int,
        what: &'static str,
    ) -> Result<(), PacketError> {
        if self.setsockopt(libc::SOL_PACKET, opt, &v) < 0 {
            return Err(io_err(&self.name, what, io::Error::last_os_error()));
        }
        Ok(())
    }

    /// `setsockopt` of `value`, passed with its size, at `level` and `opt`: the call's result.
    fn setsockopt<T>(&self, level: libc::c_int, opt: libc::c_int, value: &T) -> libc::c_int {
        // SAFETY: `value` is borrowed for the whole call and its size is passed; the kernel
        // only reads it.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                opt,
                std::ptr::from_ref(value).cast::<libc::c_void>(),
                size_of::<T>() as libc::socklen_t,
            )
        }
    }

    /// The interface's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's index.
    #[must_use]
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Read the next frame into `buf`; `Ok(None)` when none is waiting (or the interface just
    /// went down). Frames the host transmitted on the interface are skipped. A frame longer
    /// than `buf` is cut short ([`Received::len`] says how long it was).
    ///
    /// # Errors
    /// [`PacketError::Io`] when the read fails (not for "nothing waiting").
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<Received>, PacketError> {
        // bounded: our own transmissions skipped and interrupted reads retried this often
        for _ in 0..RECV_TRIES {
            let mut hdr = [0u8; VNET_HDR];
            let mut iov = [
                libc::iovec {
                    iov_base: hdr.as_mut_ptr().cast(),
                    iov_len: hdr.len(),
                },
                libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                },
            ];
            // u64 words: aligned for `cmsghdr`, room for one `tpacket_auxdata` and more.
            let mut control = [0u64; 16];
            // SAFETY: an all-zero `sockaddr_ll` is a valid value of this plain C struct.
            let mut from: libc::sockaddr_ll = unsafe { zeroed() };
            // SAFETY: an all-zero `msghdr` (null pointers, zero lengths) is valid.
            let mut msg: libc::msghdr = unsafe { zeroed() };
            msg.msg_name = (&raw mut from).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len();
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of::<[u64; 16]>();
            // SAFETY: every pointer in `msg` points at a live local (or at `buf`, borrowed
            // mutably for this call) with its true length; the kernel writes at most those
            // lengths.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, libc::MSG_TRUNC) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(None),
                    Some(libc::EINTR) => continue,
                    // the interface went down (reported once): nothing to read now
                    Some(libc::ENETDOWN) => Ok(None),
                    Some(libc::EINVAL) => Ok(Some(Received {
                        unreadable: true,
                        ..Received::default()
                    })),
                    _ => Err(io_err(&self.name, "recvmsg", e)),
                };
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let len = (n as usize).saturating_sub(VNET_HDR);
            let mut r = Received {
                len,
                stored: len.min(buf.len()),
                ..Received::default()
            };
            if hdr[0] & VNET_NEEDS_CSUM != 0 {
                let start = u16::from_le_bytes([hdr[6], hdr[7]]);
                let offset = u16::from_le_bytes([hdr[8], hdr[9]]);
                r.csum = Some((start, offset));
            }
            r.gso = hdr[1] != VNET_GSO_NONE;
            r.vlan = vlan_of(&msg);
            return Ok(Some(r));
        }
        Ok(None)
    }

    /// Write one whole frame; `Ok(false)` when the interface's queue is full right now.
    ///
    /// # Errors
    /// [`PacketError::Io`] when the write fails (a frame longer than the interface's MTU,
    /// say).
    pub fn send(&self, frame: &[u8]) -> Result<bool, PacketError> {
        // An all-zero header: no checksum or segmentation for the kernel to do.
        let hdr = [0u8; VNET_HDR];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr().cast_mut().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            },
        ];
        // SAFETY: an all-zero `msghdr` (null pointers, zero lengths) is valid.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = iov.as_ptr().cast_mut();
        msg.msg_iovlen = iov.len();
        for _ in 0..RECV_TRIES {
            // SAFETY: `msg` points at `iov`, which points at `hdr` and `frame` with their
            // true lengths, all alive for the call; `sendmsg` only reads through them.
            let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &raw const msg, 0) };
            if n >= 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS) => return Ok(false),
                Some(libc::EINTR) => {}
                _ => return Err(io_err(&self.name, "sendmsg", e)),
            }
        }
        Ok(false)
    }
}

/// The VLAN tag in a received message's `PACKET_AUXDATA` control message.
fn vlan_of(msg: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: `msg` is the header `recvmsg` filled in; CMSG_FIRSTHDR only reads its control
    // pointer and length.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: `c` is non-null and CMSG_FIRSTHDR/CMSG_NXTHDR only return headers that lie
        // wholly inside the control buffer the kernel wrote.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_PACKET
            && h.cmsg_type == libc::PACKET_AUXDATA
            && h.cmsg_len >= size_of::<libc::cmsghdr>() + size_of::<libc::tpacket_auxdata>()
        {
            // SAFETY: the length check above says the data after the header holds a whole
            // `tpacket_auxdata`; `read_unaligned` copes with any alignment.
            let aux = unsafe {
                std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::tpacket_auxdata>())
            };
            if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                return None;
            }
            let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                aux.tp_vlan_tpid
            } else {
                0x8100
            };
            return Some((tpid, aux.tp_vlan_tci));
        }
        // SAFETY: `msg` and `c` are as above.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    None
}

/// Wait up to `timeout` until one of `socks` has a frame to read; which ones have.
///
/// # Errors
/// [`PacketError::Io`] when `poll` fails.
pub fn wait_readable(socks: &[&PacketSocket], timeout: Duration) -> Result<Vec<bool>, PacketError> {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a live array of `fds.len()` pollfd structs for the whole call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; socks.len()]);
        }
        let name = socks.first().map_or("", |s| s.name());
        return Err(io_err(name, "poll", e));
    }
    Ok(fds
        .iter()
        .map(|f| f.revents & (libc::POLLIN | libc::POLLERR) != 0)
        .collect())
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for PacketSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_interfaces_are_refused_clearly() {
        for n in ["", "a-name-much-too-long-for-linux", "nul\0byte"] {
            let e = PacketSocket::open(n).unwrap_err();
            assert!(matches!(e, PacketError::BadName { .. }), "{n:?}: {e}");
        }
        let e = PacketSocket::open("no-such-if0").unwrap_err();
        assert!(matches!(e, PacketError::NoInterface { .. }), "{e}");
        assert!(e.to_string().contains("no-such-if0"), "{e}");
        assert!(e.to_string().contains("ip link"), "{e}");
    }

    #[test]
    fn interface_up_knows_loopback_and_refuses_what_is_not_there() {
        // every network namespace has `lo`; it is up unless someone took it down
        assert!(interface_up("lo").is_ok());
        let e = interface_up("no-such-if0").unwrap_err();
        assert!(matches!(e, PacketError::NoInterface { .. }), "{e}");
        for n in ["", "a-name-much-too-long-for-linux", "nul\0byte"] {
            let e = interface_up(n).unwrap_err();
            assert!(matches!(e, PacketError::BadName { .. }), "{n:?}: {e}");
        }
    }
}
