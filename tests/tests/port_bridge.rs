//! A simulated card on a real network (`sim_bridge::bridge::PortBridge`): three network
//! namespaces, `client` — veth — `bridge` — veth — `server`, the reference-model card's port 0
//! on the client's link and port 1 on the server's, its host side the real node code
//! (`cluster_core::Node` with the card as its node-specific table).
//!
//! * The node owning every identifier: a real TCP connection over IPv4 and one over IPv6
//!   (ARP and neighbour discovery first), 1 MiB each way and a clean close, and the card's own
//!   counters show it forwarded most frames itself.
//! * The node owning no identifier: the TCP connect fails, its frames dropped by the card as
//!   `not_owned` (counted).
//! * Frames of bad lengths from the wire (60, 2049, 9000 bytes and garbage) never break the
//!   bridge; those longer than the card takes are counted as such.
//!
//! Needs root (namespaces, veth, raw sockets) and `ip` (iproute2): it fails saying so
//! otherwise. Every namespace is deleted when the test ends, also when it fails.

#![cfg(target_os = "linux")]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cluster_core::card_table::CardTable;
use cluster_core::node::{FrameOutcome, Node, NodeConfig, Verdict};
use cluster_core::node_table::TieredTable;
use cluster_core::{ClusterSecret, IdCount, Millis, NodeId};
use driver::port::{Dest, PortCounters, Reason};
use driver::{Card, DidSet};
use hal::packet::PacketSocket;
use hal::{HalError, Wires};
use nix::sched::{setns, CloneFlags};
use sim_bridge::bridge::{BridgeCounters, DropReason as BridgeDrop, PortBridge};
use sim_bridge::model::ModelCard;

/// Bytes each way on each connection.
const TRANSFER: usize = 1 << 20;
/// No step of the test waits longer than this for anything.
const STEP: Duration = Duration::from_secs(15);
/// The bridge thread stops by itself after this, whatever happens.
const BRIDGE_LIFE: Duration = Duration::from_secs(45);

const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SERVER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "the port_bridge tests need root (they create network namespaces and veth pairs and \
             open raw packet sockets): run them as root, e.g. `sudo -E cargo test -p tests \
             --test port_bridge`"
        );
    }
}

/// Run `ip` with `args`; panics with its error output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `ip` (iproute2 is needed for the port_bridge tests): {e}")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Network namespaces that are deleted when this goes out of scope, also on a panic.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Namespaces `<test>-<pid>-<role>` for each role.
    fn create(test: &str, roles: &[&str]) -> Namespaces {
        let mut ns = Namespaces { names: Vec::new() };
        for r in roles {
            let name = format!("{test}-{}-{r}", std::process::id());
            // a leftover of an earlier run with the same pid
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            ip(&["netns", "add", &name]);
            ns.names.push(name);
        }
        ns
    }

    fn name(&self, role: &str) -> String {
        self.names
            .iter()
            .find(|n| n.ends_with(&format!("-{role}")))
            .cloned()
            .expect("a namespace of that role")
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// Tells the bridge thread to stop when dropped: at the end of a test, and when it fails.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Move the calling thread into namespace `ns`.
fn enter(ns: &str) {
    let f =
        File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    setns(&f, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
}

/// A thread that runs `f` inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let ns = ns.to_owned();
    thread::spawn(move || {
        enter(&ns);
        f()
    })
}

/// `client` (c0) — `bridge` (b0 | b1) — `server` (s0), one IPv4 /24 and one IPv6 /64 across.
fn topology(test: &str) -> Namespaces {
    let ns = Namespaces::create(test, &["client", "bridge", "server"]);
    let (c, b, s) = (ns.name("client"), ns.name("bridge"), ns.name("server"));
    ip(&[
        "-n", &c, "link", "add", "c0", "type", "veth", "peer", "name", "b0", "netns", &b,
    ]);
    ip(&[
        "-n", &s, "link", "add", "s0", "type", "veth", "peer", "name", "b1", "netns", &b,
    ]);
    for (n, dev, v4, v6) in [(&c, "c0", CLIENT4, CLIENT6), (&s, "s0", SERVER4, SERVER6)] {
        // One wire frame per packet: no segmentation offload super-frames for the bridge.
        host::lab::netns::end_host_interface(n, dev, v4, v6)
            .unwrap_or_else(|e| panic!("{n} {dev}: {e}"));
    }
    for dev in ["b0", "b1"] {
        ip(&["-n", &b, "link", "set", dev, "up"]);
    }
    ns
}

type Table = TieredTable<CardTable<ModelCard>>;

/// The host side of the card: the node's frame path (ARP crosses it too, passed on by the node
/// as the owner of the address pair).
struct NodeHost {
    node: Node<Table>,
    start: Instant,
    /// Frames that left the card towards the wires, for the bridge to write out.
    egress: VecDeque<(u8, Vec<u8>)>,
    l2_sent: u64,
}

impl NodeHost {
    fn new(own_all: bool) -> NodeHost {
        let count = IdCount::new(256).expect("count");
        let mut cfg = NodeConfig::new(NodeId(1), ClusterSecret::new(*b"port-bridge-test"));
        cfg.count = count;
        let model = ModelCard::with_depth(4096).expect("model");
        let card = Card::probe(model).expect("probe");
        let table = TieredTable::new(CardTable::new(card, count).expect("table"), count);
        let mut node = Node::new(cfg, table);
        if own_all {
            let all = cluster_core::alloc_policy::even_split(count, &[NodeId(1)]);
            node.apply_allocation(Millis(0), &all).expect("allocation");
        }
        assert!(
            node.has_packet_path(),
            "the model card is on the packet path"
        );
        NodeHost {
            node,
            start: Instant::now(),
            egress: VecDeque::new(),
            l2_sent: 0,
        }
    }

    fn card(&mut self) -> &mut Card<ModelCard> {
        self.node.node_table_mut().card_mut().card_mut()
    }

    fn owned(&mut self) -> DidSet {
        self.card().port().expect("port").owned().expect("owned")
    }
}

impl Wires for NodeHost {
    fn wire_rx(&mut self, port: u8, frame: &[u8]) -> Result<(), HalError> {
        let now = Millis(self.start.elapsed().as_millis() as u64);
        let mut egress = Vec::new();
        let out = self.node.handle_frame_into(now, port, frame, &mut egress);
        self.egress.extend(egress);
        // ARP: punted (not IP) and passed on by the node itself, as the owner of the pair
        if frame.get(12..14) == Some(&[0x08, 0x06])
            && matches!(
                out,
                FrameOutcome::Slow(Verdict::Accept { .. }, Reason::NotIp)
            )
        {
            self.l2_sent += 1;
        }
        Ok(())
    }

    fn wire_tx(&mut self) -> Option<(u8, Vec<u8>)> {
        self.egress.pop_front()
    }
}

/// What the bridge thread saw.
struct Report {
    port: PortCounters,
    bridge: BridgeCounters,
    card_forwarded: u64,
    card_punted: u64,
    card_dropped: u64,
    l2_sent: u64,
    /// The first card failure the node saw, if any.
    card_error: Option<String>,
}

/// The bridge thread: the card and its node in namespace `ns`, on b0 (port 0, the client's
/// side) and b1 (port 1, the server's), until `stop` or [`BRIDGE_LIFE`].
fn run_bridge(
    ns: &str,
    own_all: bool,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<()>,
) -> JoinHandle<Report> {
    in_ns(ns, move || {
        let mut host = NodeHost::new(own_all);
        let owned = host.owned();
        assert_eq!(owned.iter().count(), if own_all { 256 } else { 0 });
        let frame_bytes = host.card().port().expect("port").frame_bytes() as usize;
        let mut bridge = PortBridge::open("b0", "b1", frame_bytes).expect("bridge");
        ready.send(()).expect("test thread");
        let t = Instant::now();
        while !stop.load(Ordering::Relaxed) && t.elapsed() < BRIDGE_LIFE {
            bridge
                .poll(&mut host, Duration::from_millis(20))
                .expect("bridge poll");
        }
        let s = host.node.stats();
        Report {
            port: host.node.port_counters().expect("port counters"),
            bridge: bridge.counters().clone(),
            card_forwarded: s.card_forwarded,
            card_punted: s.card_punted,
            card_dropped: s.card_dropped,
            l2_sent: host.l2_sent,
            card_error: host.node.take_card_error().map(|e| e.to_string()),
        }
    })
}

/// Deterministic bytes that differ from position to position (and from one side to the
/// other), so a lost, repeated or corrupted segment shows.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed ^ (i >> 10) as u8)
        .collect()
}

/// The server: accept one connection, read [`TRANSFER`] bytes, check them, send
/// [`TRANSFER`] bytes back, read the client's close, close. Returns the bytes it received.
fn serve(listener: TcpListener) -> usize {
    listener.set_nonblocking(true).expect("nonblocking");
    let t = Instant::now();
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(t.elapsed() < STEP, "no connection reached the server");
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).expect("blocking");
    conn.set_read_timeout(Some(STEP)).expect("timeout");
    conn.set_write_timeout(Some(STEP)).expect("timeout");
    let mut got = vec![0; TRANSFER];
    conn.read_exact(&mut got).expect("server read");
    assert!(
        got == pattern(1, TRANSFER),
        "the client's bytes arrived changed"
    );
    conn.write_all(&pattern(2, TRANSFER)).expect("server write");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).expect("server reads the close");
    assert!(rest.is_empty(), "{} bytes after the transfer", rest.len());
    got.len()
}

/// The client: connect, send, receive, close. Returns the seconds the transfer took.
fn client(to: SocketAddr) -> f64 {
    let conn = TcpStream::connect_timeout(&to, STEP);
    let mut conn = conn.unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    conn.set_read_timeout(Some(STEP)).expect("timeout");
    conn.set_write_timeout(Some(STEP)).expect("timeout");
    let t = Instant::now();
    conn.write_all(&pattern(1, TRANSFER)).expect("client write");
    let mut got = vec![0; TRANSFER];
    conn.read_exact(&mut got).expect("client read");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        got == pattern(2, TRANSFER),
        "the server's bytes arrived changed"
    );
    conn.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).expect("client reads the close");
    assert!(rest.is_empty());
    secs
}

/// One TCP connection from the client to `server` through the card.
fn tcp_through_the_card(ns: &Namespaces, server: IpAddr) -> f64 {
    let (tx, rx) = mpsc::channel();
    let srv = in_ns(&ns.name("server"), move || {
        let l = TcpListener::bind(SocketAddr::new(server, 5001)).expect("listen");
        tx.send(()).expect("test thread");
        serve(l)
    });
    rx.recv_timeout(STEP).expect("server listening");
    let to = SocketAddr::new(server, 5001);
    let secs = in_ns(&ns.name("client"), move || client(to))
        .join()
        .expect("client");
    let got = srv.join().expect("server");
    assert_eq!(got, TRANSFER);
    secs
}

#[test]
fn tcp_over_ipv4_and_ipv6_crosses_a_card_that_owns_every_identifier() {
    require_root();
    let t = Instant::now();
    let ns = topology("port_bridge_own");
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let (ready, is_ready) = mpsc::channel();
    let bridge = run_bridge(&ns.name("bridge"), true, stop.0.clone(), ready);
    is_ready.recv_timeout(STEP).expect("bridge up");

    let mut lines = Vec::new();
    for server in [IpAddr::V4(SERVER4), IpAddr::V6(SERVER6)] {
        let secs = tcp_through_the_card(&ns, server);
        let mbit = (2 * TRANSFER * 8) as f64 / secs / 1e6;
        lines.push(format!(
            "{server}: 1 MiB each way in {secs:.2} s ({mbit:.1} Mbit/s both ways together)"
        ));
    }
    drop(stop);
    let r = bridge.join().expect("bridge thread");
    for l in &lines {
        eprintln!("port_bridge: {l}");
    }
    let p = &r.port;
    eprintln!(
        "port_bridge: card rx {} forwarded {} punted {} dropped {} tx {} host_sent {} \
         reasons {:?}; node: by card {} slow {} dropped {}; ARP sent on {}; bridge in {:?} \
         out {:?}, checksums finished {}, dropped {:?} ({:?}); {:.1} s",
        p.rx_frames,
        p.forwarded,
        p.punted,
        p.dropped,
        p.tx_frames,
        p.host_sent,
        p.reasons,
        r.card_forwarded,
        r.card_punted,
        r.card_dropped,
        r.l2_sent,
        r.bridge.to_card,
        r.bridge.from_card,
        r.bridge.checksums_finished,
        r.bridge.dropped,
        r.bridge.last_drop,
        t.elapsed().as_secs_f64()
    );

    assert_eq!(r.card_error, None);
    // Both connections' data went through the card: at least 2 MiB each way in wire frames.
    let frames_min = (2 * TRANSFER / 1500) as u64;
    assert!(r.bridge.to_card[0] > frames_min, "{:?}", r.bridge.to_card);
    assert!(r.bridge.to_card[1] > frames_min, "{:?}", r.bridge.to_card);
    // The card forwarded the established connections' frames itself: most of them.
    assert!(
        u64::from(p.forwarded) > 2 * frames_min,
        "the card forwarded {} frames itself",
        p.forwarded
    );
    assert_eq!(u64::from(p.forwarded), r.card_forwarded);
    assert!(p.punted > 0 && p.punted < p.forwarded / 4, "{p:?}");
    assert_eq!(p.rx_frames, p.forwarded + p.punted + p.dropped);
    // ARP went through the host (not IP), as did neighbour discovery (no flow).
    assert!(p.reason(Reason::NotIp) > 0 && r.l2_sent > 0, "{p:?}");
    assert!(p.reason(Reason::NoFlow) > 0, "{p:?}");
    assert!(p.reason(Reason::TcpControl) >= 4, "{p:?}");
    assert_eq!(p.reason(Reason::NotOwned), 0, "{p:?}");
    // Every frame into the card came out again (the node accepted them all), and nothing the
    // card sent was refused by an interface.
    let into: u64 = r.bridge.to_card.iter().sum();
    let out: u64 = r.bridge.from_card.iter().sum();
    assert!(
        out + u64::from(p.dropped) + 50 >= into,
        "in {into}, out {out}"
    );
    assert_eq!(r.bridge.dropped(BridgeDrop::TxError), 0, "{:?}", r.bridge);
    assert_eq!(r.bridge.dropped(BridgeDrop::TooLong), 0, "{:?}", r.bridge);
    assert!(t.elapsed() < Duration::from_secs(60));
}

#[test]
fn tcp_connect_fails_through_a_card_that_owns_no_identifier() {
    require_root();
    let ns = topology("port_bridge_none");
    // A node owning nothing passes no ARP either: the client knows the server's address
    // already, so its SYNs go out and reach the card.
    ip(&[
        "-n",
        &ns.name("server"),
        "link",
        "set",
        "s0",
        "address",
        "02:00:00:00:5e:02",
    ]);
    ip(&[
        "-n",
        &ns.name("client"),
        "neigh",
        "replace",
        &SERVER4.to_string(),
        "lladdr",
        "02:00:00:00:5e:02",
        "dev",
        "c0",
        "nud",
        "permanent",
    ]);
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let (ready, is_ready) = mpsc::channel();
    let bridge = run_bridge(&ns.name("bridge"), false, stop.0.clone(), ready);
    is_ready.recv_timeout(STEP).expect("bridge up");

    let srv = in_ns(&ns.name("server"), || {
        let l = TcpListener::bind(SocketAddr::new(IpAddr::V4(SERVER4), 5002)).expect("listen");
        l.set_nonblocking(true).expect("nonblocking");
        let t = Instant::now();
        let mut accepted = 0;
        while t.elapsed() < Duration::from_secs(4) {
            if l.accept().is_ok() {
                accepted += 1;
            }
            thread::sleep(Duration::from_millis(10));
        }
        accepted
    });
    let to = SocketAddr::new(IpAddr::V4(SERVER4), 5002);
    let result = in_ns(&ns.name("client"), move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3)).map(|_| ())
    })
    .join()
    .expect("client");
    let accepted = srv.join().expect("server");
    drop(stop);
    let r = bridge.join().expect("bridge thread");
    let p = &r.port;
    eprintln!(
        "port_bridge: connect {result:?}; card rx {} forwarded {} punted {} dropped {} \
         reasons {:?}",
        p.rx_frames, p.forwarded, p.punted, p.dropped, p.reasons
    );
    assert_eq!(r.card_error, None);
    assert!(
        result.is_err(),
        "the connection got through a card owning nothing"
    );
    assert_eq!(accepted, 0);
    // The SYN and its retransmissions: dropped by the card, not by the host.
    assert!(p.reason(Reason::NotOwned) >= 2, "{p:?}");
    assert!(r.card_dropped >= 2);
    assert_eq!(p.forwarded, 0);
    // The server's ARP for the client (if any) was not passed on by a node owning nothing.
    assert_eq!(r.l2_sent, 0, "{p:?}");
}

/// Frames of bad lengths from a wire: the bridge goes on, drops what the card cannot take
/// with the reason, and passes on the rest.
#[test]
fn frames_of_any_length_from_the_wire_never_break_the_bridge() {
    require_root();
    let ns = Namespaces::create("port_bridge_bad", &["wire"]);
    let w = ns.name("wire");
    for (a, b) in [("x0", "x1"), ("y0", "y1")] {
        ip(&[
            "-n", &w, "link", "add", a, "mtu", "9100", "type", "veth", "peer", "name", b, "mtu",
            "9100",
        ]);
        // no IPv6 link-local address, so (almost) nothing but the test's frames on the wire
        ip(&["-n", &w, "link", "set", a, "addrgenmode", "none"]);
        ip(&["-n", &w, "link", "set", b, "addrgenmode", "none"]);
        ip(&["-n", &w, "link", "set", a, "up"]);
        ip(&["-n", &w, "link", "set", b, "up"]);
    }
    let done = in_ns(&w, || {
        let mut card = Card::probe(ModelCard::new()).expect("probe");
        card.port()
            .expect("port")
            .set_owned(&DidSet::all())
            .expect("owned");
        let frame_bytes = card.port().expect("port").frame_bytes() as usize;
        let mut bridge = PortBridge::open("x1", "y1", frame_bytes).expect("bridge");
        let inject = PacketSocket::open("x0").expect("x0");
        let far = PacketSocket::open("y0").expect("y0");
        let mut sent = Vec::new();
        let mut refused = Vec::new();
        let mut seed = 0x9e37_79b9u32;
        for len in [0usize, 1, 13, 14, 60, 61, 1514, 2048, 2049, 4000, 9000] {
            let frame: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            match inject.send(&frame) {
                Ok(true) => sent.push(len),
                _ => refused.push(len),
            }
        }
        let t = Instant::now();
        let mut seen = 0;
        let mut buf = vec![0; 10_000];
        while t.elapsed() < Duration::from_secs(3) {
            bridge
                .poll_regs(card.regs_mut(), Duration::from_millis(20))
                .expect("the bridge goes on");
            // the host forwards whatever the card punts
            // (the host queue holds 8 frames)
            for _ in 0..8 {
                let Some(p) = card.port().expect("port").receive().expect("receive") else {
                    break;
                };
                card.port()
                    .expect("port")
                    .send(&p.frame, Dest::Out(p.port ^ 1))
                    .expect("send");
            }
            for _ in 0..1000 {
                match far.recv(&mut buf) {
                    Ok(Some(_)) => seen += 1,
                    _ => break,
                }
            }
            let c = bridge.counters();
            if c.to_card[0] + c.dropped_total() >= sent.len() as u64 && seen > 0 {
                break;
            }
        }
        let c = bridge.counters().clone();
        let pc = card.port().expect("port").counters().expect("counters");
        (sent, refused, c, pc, seen)
    })
    .join()
    .expect("wire thread");
    let (sent, refused, c, pc, seen) = done;
    eprintln!(
        "port_bridge: sent {sent:?}, refused by the kernel {refused:?}; bridge {c:?}; card \
         {pc:?}; {seen} frames out the far side"
    );
    let long = sent.iter().filter(|&&l| l > 2048).count() as u64;
    assert!(long >= 2, "the kernel took the long frames: {sent:?}");
    assert_eq!(c.dropped(BridgeDrop::TooLong), long, "{c:?}");
    let short = sent.len() as u64 - long;
    // (the kernel may add a multicast report or two of its own)
    assert!(c.to_card[0] >= short, "{c:?}");
    assert!(c.last_drop.as_deref().unwrap_or("").contains("x1"), "{c:?}");
    // The card saw the short ones (runts, garbage that is not IP) and handled each.
    assert_eq!(u64::from(pc.rx_frames), c.to_card[0]);
    assert!(seen > 0);
}
