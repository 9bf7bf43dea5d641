//! The kernel baseline (`host::lab::kernel`): the Linux kernel routing between real network
//! namespaces with nftables splitting the flows into buckets and conntrackd replicating the
//! connection state. A real TCP connection (IPv4, and one over IPv6) survives a SIGKILL of the
//! node that forwards it, because the survivors commit the state conntrackd gave them; a
//! graceful leave, a rejoin and a rebalance keep a connection too; `down` leaves nothing.
//!
//! Needs root and nftables, conntrack and conntrackd (`apt-get install -y nftables conntrack
//! conntrackd`; CI installs them): without them every test says why and skips.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use host::lab::kernel::{self, KernelOptions, SERVER4, SERVER6};
use host::lab::netns::{self, LabInfo};
use nix::sched::{setns, CloneFlags};

/// Whether the tests can run here; says why not.
fn can_run(test: &str) -> bool {
    match kernel::preflight() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIP {test}: {e}");
            false
        }
    }
}

/// A kernel lab that is taken down when the test ends, also when it fails.
struct Lab {
    info: LabInfo,
    dir: PathBuf,
}

impl Lab {
    fn up(tag: &str, nodes: u16) -> Lab {
        let prefix = format!("{tag}{}", std::process::id() % 100_000);
        let dir = netns::default_dir(&prefix);
        kernel::down(&prefix, &dir);
        let info = kernel::up(&KernelOptions {
            nodes,
            prefix,
            buckets: 256,
            dir: dir.clone(),
        })
        .unwrap_or_else(|e| panic!("kernel lab up: {e}"));
        Lab { info, dir }
    }

    fn ns(&self, i: u16) -> String {
        self.info.nodes[usize::from(i - 1)].ns.clone()
    }

    /// Node `i`'s conntrack table lines of the flow from client port `port`.
    fn kernel_has(&self, i: u16, port: u16) -> bool {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), "conntrack", "-L", "-p", "tcp"])
            .args(["--sport", &port.to_string()])
            .output()
            .expect("conntrack");
        String::from_utf8_lossy(&out.stdout).contains(&format!("sport={port} "))
    }

    /// Whether node `i`'s conntrackd instance for node `from` has the flow from client port
    /// `port` in its external cache (the state `from` sent it).
    fn external_has(&self, i: u16, from: u16, port: u16) -> bool {
        let conf = self.dir.join(format!("n{i}-p{from}.conntrackd.conf"));
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), "conntrackd", "-C"])
            .arg(&conf)
            .args(["-e", "ct"])
            .output()
            .expect("conntrackd -e");
        String::from_utf8_lossy(&out.stdout).contains(&format!("sport={port} "))
    }

    /// The node whose kernel tracks the flow from client port `port` (exactly one does).
    fn owner(&self, port: u16) -> u16 {
        let have: Vec<u16> = self
            .info
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&i| self.kernel_has(i, port))
            .collect();
        assert_eq!(
            have.len(),
            1,
            "the flow from port {port} is tracked by nodes {have:?}: exactly one should"
        );
        have[0]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        kernel::down(&self.info.prefix, &self.dir);
    }
}

/// A thread that runs `f` in namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let ns = ns.to_owned();
    thread::spawn(move || {
        let file = File::open(format!("/run/netns/{ns}")).expect("namespace");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// An echo server in the server namespace on port `port` (IPv4 and IPv6), one thread a
/// connection; it ends with the test process.
fn echo_server(lab: &Lab, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    for ip in [IpAddr::V4(SERVER4), IpAddr::V6(SERVER6)] {
        let tx = tx.clone();
        drop(in_ns(&lab.info.server_ns, move || {
            let l = TcpListener::bind(SocketAddr::new(ip, port)).expect("listen");
            tx.send(()).expect("ready");
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }));
    }
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the echo server listens");
    }
}

/// A TCP connection from the client namespace (the socket stays in it; any thread may use it).
fn connect(lab: &Lab, to: SocketAddr) -> TcpStream {
    let s = in_ns(&lab.info.client_ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })
    .join()
    .expect("client thread")
    .unwrap_or_else(|e| panic!("connect to {to} through the kernel cluster: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Sends `round`'s message and checks the echo, byte for byte.
fn exchange(s: &mut TcpStream, round: u32, what: &str) {
    let msg: Vec<u8> = (0..1500u32)
        .map(|k| (k.wrapping_mul(31).wrapping_add(round * 7) % 251) as u8)
        .collect();
    let t = Instant::now();
    s.write_all(&msg)
        .unwrap_or_else(|e| panic!("{what}: send round {round}: {e}"));
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap_or_else(|e| {
        panic!(
            "{what}: echo of round {round} did not come back ({e}) after {:?}",
            t.elapsed()
        )
    });
    assert_eq!(back, msg, "{what}: round {round} came back different");
}

fn port(s: &TcpStream) -> u16 {
    s.local_addr().expect("local address").port()
}

/// Waits until `cond` holds (or `within` passes); whether it did.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() > within {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A kernel lab of `nodes` nodes (prefix `tag`) with echo servers on `port` and an IPv4
/// connection to them.
fn lab_with_a_connection(tag: &str, nodes: u16, port: u16) -> (Lab, TcpStream) {
    let lab = Lab::up(tag, nodes);
    echo_server(&lab, port);
    let s = connect(&lab, SocketAddr::new(IpAddr::V4(SERVER4), port));
    (lab, s)
}

#[test]
fn a_connection_survives_killing_its_node() {
    if !can_run("a_connection_survives_killing_its_node") {
        return;
    }
    let (lab, mut v4) = lab_with_a_connection("kb1", 3, 5001);
    for r in 0..5 {
        exchange(&mut v4, r, "IPv4");
    }
    let owner = lab.owner(port(&v4));
    // an IPv6 connection on the same node (the buckets are spread: a few tries find one)
    let mut v6 = None;
    for _ in 0..30 {
        let mut s = connect(&lab, SocketAddr::new(IpAddr::V6(SERVER6), 5001));
        exchange(&mut s, 0, "IPv6");
        if lab.owner(port(&s)) == owner {
            v6 = Some(s);
            break;
        }
    }
    let mut v6 = v6.expect("no IPv6 connection landed on the IPv4 connection's node in 30 tries");
    let survivors: Vec<u16> = (1..=3).filter(|&i| i != owner).collect();
    for &i in &survivors {
        for (s, what) in [(&v4, "IPv4"), (&v6, "IPv6")] {
            assert!(
                eventually(Duration::from_secs(5), || lab.external_has(
                    i,
                    owner,
                    port(s)
                )),
                "node {i}'s conntrackd never got the {what} flow from node {owner}"
            );
        }
    }
    let t = kernel::kill(&lab.info, owner, Duration::ZERO).expect("kill");
    eprintln!(
        "killed node {owner}: committed after {:?}, buckets moved after {:?}, {} entries",
        t.committed_at - t.died_at,
        t.buckets_moved_at - t.died_at,
        t.entries_committed
    );
    assert!(t.entries_committed >= 2, "{t:?}");
    for &i in &survivors {
        for (s, what) in [(&v4, "IPv4"), (&v6, "IPv6")] {
            assert!(
                lab.kernel_has(i, port(s)),
                "node {i} did not commit the {what} flow into its kernel"
            );
        }
    }
    let after = Instant::now();
    for r in 5..10 {
        exchange(&mut v4, r, "IPv4 after the kill");
        exchange(&mut v6, r, "IPv6 after the kill");
    }
    assert!(
        after.elapsed() < Duration::from_secs(8),
        "the connections took {:?} to continue",
        after.elapsed()
    );
    // new connections still work over the two survivors
    let mut fresh = connect(&lab, SocketAddr::new(IpAddr::V4(SERVER4), 5001));
    exchange(&mut fresh, 0, "a new connection after the kill");
    eprintln!(
        "sync bytes {}, conntrackd cpu {} ms, drops {:?}",
        kernel::sync_bytes(&lab.info),
        kernel::cpu_ms(&lab.info),
        kernel::drops(&lab.info)
    );
    assert!(kernel::sync_bytes(&lab.info) > 0);
}

#[test]
fn stop_start_and_rebalance_keep_a_connection() {
    if !can_run("stop_start_and_rebalance_keep_a_connection") {
        return;
    }
    let (lab, mut s) = lab_with_a_connection("kb3", 2, 5003);
    exchange(&mut s, 0, "before");
    let owner = lab.owner(port(&s));
    let other = 3 - owner;
    assert!(
        eventually(Duration::from_secs(5), || lab.external_has(
            other,
            owner,
            port(&s)
        )),
        "node {other}'s conntrackd never got the flow"
    );
    let t = kernel::stop(&lab.info, owner).expect("stop");
    assert!(t.entries_committed >= 1, "{t:?}");
    exchange(&mut s, 1, "after the owner left");
    assert_eq!(
        kernel::buckets_of(&lab.info, other).expect("buckets").len(),
        256
    );
    kernel::start(&lab.info, owner).expect("start");
    assert!(kernel::buckets_of(&lab.info, owner)
        .expect("buckets")
        .is_empty());
    exchange(&mut s, 2, "after the node came back");
    kernel::rebalance(&lab.info).expect("rebalance");
    assert_eq!(
        kernel::buckets_of(&lab.info, owner).expect("buckets").len(),
        128
    );
    for r in 3..6 {
        exchange(&mut s, r, "after the rebalance");
    }
    let mut fresh = connect(&lab, SocketAddr::new(IpAddr::V4(SERVER4), 5003));
    exchange(&mut fresh, 0, "a new connection after the rebalance");
}

fn conntrackd_of(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("conntrackd") && cmd.contains(&dir) {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn down_leaves_nothing() {
    if !can_run("down_leaves_nothing") {
        return;
    }
    let lab = Lab::up("kb2", 2);
    assert_eq!(conntrackd_of(&lab.dir).len(), 2, "one conntrackd a node");
    kernel::down(&lab.info.prefix, &lab.dir);
    assert!(
        netns::namespaces(&lab.info.prefix).is_empty(),
        "namespaces left: {:?}",
        netns::namespaces(&lab.info.prefix)
    );
    assert!(
        eventually(Duration::from_secs(2), || conntrackd_of(&lab.dir)
            .is_empty()),
        "conntrackd left: {:?}",
        conntrackd_of(&lab.dir)
    );
    assert!(!lab.dir.exists(), "{} is still there", lab.dir.display());
}
