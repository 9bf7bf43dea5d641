//! Real traffic through a cluster of `clusterd` processes built by `clusterd lab`
//! (`host::lab::netns`): three nodes, each in its own network namespace with its (model) card
//! bridged to an outside and an inside interface, between a client and a server namespace. The
//! outside and inside segments are Linux bridges that flood every frame to every port (no
//! learning), so every node sees every frame and each card passes only its node's
//! identifiers; the nodes replicate over a third segment. Real TCP connections (the kernels'
//! own stacks, IPv4 and IPv6) cross the cluster, and one survives a SIGKILL of the node that
//! owns it.
//!
//! Needs root (namespaces, veth pairs, bridges, raw sockets) and iproute2: it fails saying so.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use host::core::entry::{Endpoint, FlowKey, L4Proto};
use host::core::{ClusterSecret, Distributor, IdCount};
use host::lab::netns::{self, LabInfo, LabOptions, SERVER4, SERVER6};
use host::sync::ClusterKey;
use nix::sched::{setns, CloneFlags};
use serde_json::Value;

const NODES: u16 = 3;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the real_traffic tests need root (network namespaces, veth pairs, bridges, raw \
         sockets): run them as root, e.g. `sudo -E cargo test -p host --test real_traffic`"
    );
}

/// A lab that is taken down when the test ends, also when it fails.
struct Lab {
    info: LabInfo,
    dir: PathBuf,
}

impl Lab {
    fn up(tag: &str) -> Lab {
        let prefix = format!("{tag}{}", std::process::id() % 100_000);
        let dir = netns::default_dir(&prefix);
        let _ = netns::down(&prefix, &dir);
        let info = netns::up(&LabOptions {
            nodes: NODES,
            prefix,
            card: "model".into(),
            identifiers: 256,
            dir: dir.clone(),
            exe: PathBuf::from(env!("CARGO_BIN_EXE_clusterd")),
        })
        .unwrap_or_else(|e| panic!("lab up: {e}"));
        Lab { info, dir }
    }

    fn sock(&self, i: u16) -> PathBuf {
        PathBuf::from(&self.info.nodes[usize::from(i - 1)].socket)
    }

    fn key(&self) -> ClusterKey {
        let text = std::fs::read_to_string(self.dir.join("cluster.key")).expect("key file");
        ClusterKey::from_hex(text.trim()).expect("key")
    }

    fn kill(&self, i: u16) {
        assert!(
            netns::signal(&self.dir, i, nix::sys::signal::Signal::SIGKILL),
            "node {i} was not running"
        );
        let t = Instant::now();
        while netns::pid(&self.dir, i).is_some() && t.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = netns::down(&self.info.prefix, &self.dir);
    }
}

fn status(sock: &Path) -> Option<Value> {
    netns::status(sock)
}

fn owners(sock: &Path) -> Option<Vec<Option<u16>>> {
    netns::owners(sock)
}

/// A thread that runs `f` in namespace `ns`.
fn in_ns<T: Send + 'static>(ns: String, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::spawn(move || {
        let file = File::open(format!("/run/netns/{ns}")).expect("namespace");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// An echo server on `addr` in the server namespace: the bytes it got.
fn echo_server(lab: &Lab, addr: SocketAddr) -> JoinHandle<u64> {
    in_ns(lab.info.server_ns.clone(), move || {
        let l = TcpListener::bind(addr).expect("listen");
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    s.write_all(&buf[..n]).expect("echo");
                    total += n as u64;
                }
                Err(e) => panic!("server read after {total} bytes: {e}"),
            }
        }
        total
    })
}

fn chunk(i: u32) -> Vec<u8> {
    (0..1024u32)
        .map(|k| (i.wrapping_mul(31) ^ k) as u8)
        .collect()
}

/// A client in the client namespace that sends 1 KiB every 5 ms for `secs` seconds to `to`
/// and reads the echo as it comes; reports its local address once connected. Returns the bytes
/// sent, the echo and the chunk count.
fn echo_client(
    lab: &Lab,
    to: SocketAddr,
    secs: u64,
    connected: std::sync::mpsc::Sender<SocketAddr>,
) -> JoinHandle<(u64, Vec<u8>, u32)> {
    in_ns(lab.info.client_ns.clone(), move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        connected
            .send(s.local_addr().expect("local"))
            .expect("report");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        // the echo is read as it comes (a writer that never reads would fill both windows)
        let mut r = s.try_clone().expect("clone");
        let reader = thread::spawn(move || {
            let mut back = Vec::new();
            let got = r.read_to_end(&mut back);
            (back, got.err().map(|e| e.to_string()))
        });
        let mut sent = 0u64;
        let start = Instant::now();
        let mut i = 0u32;
        while start.elapsed() < Duration::from_secs(secs) {
            s.write_all(&chunk(i)).expect("send");
            sent += 1024;
            i += 1;
            thread::sleep(Duration::from_millis(5));
        }
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let (back, err) = reader.join().expect("reader");
        assert_eq!(
            err,
            None,
            "reading the echo failed after {} bytes",
            back.len()
        );
        (sent, back, i)
    })
}

fn check_echo(sent: u64, back: &[u8], chunks: u32, echoed: u64) {
    assert_eq!(echoed, sent, "the server got {echoed} of {sent} bytes");
    assert_eq!(back.len() as u64, sent, "the echo is short");
    let expect: Vec<u8> = (0..chunks).flat_map(chunk).collect();
    assert!(back == expect, "the echo differs from what was sent");
}

/// The identifier of the TCP connection `local` -> `server`, with the lab's key.
fn identifier(lab: &Lab, local: SocketAddr, server: SocketAddr) -> usize {
    let secret = ClusterSecret::new(*lab.key().derive16(host::daemon::DISTRIBUTION_LABEL));
    let dist = Distributor::new(&secret, IdCount::new(256).expect("count"));
    let flow = FlowKey::transport(
        L4Proto::Tcp,
        Endpoint::new(local.ip(), local.port()),
        Endpoint::new(server.ip(), server.port()),
    )
    .0;
    usize::from(dist.for_key(&flow).0)
}

#[test]
fn tcp_connections_cross_the_cluster_and_survive_their_owner_being_killed() {
    require_root();
    let lab = Lab::up("rt");

    // IPv6 first (neighbour discovery crosses the cluster too): 2 s of echo.
    let to6 = SocketAddr::new(IpAddr::V6(SERVER6), 5006);
    let server = echo_server(&lab, to6);
    thread::sleep(Duration::from_millis(200));
    let (tx, rx) = std::sync::mpsc::channel();
    let client = echo_client(&lab, to6, 2, tx);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("IPv6 client connected");
    let (sent, back, chunks) = client.join().expect("client thread");
    check_echo(sent, &back, chunks, server.join().expect("server thread"));

    // IPv4: 6 s of echo, the connection's owner killed after 2 s.
    let to = SocketAddr::new(IpAddr::V4(SERVER4), 5001);
    let server = echo_server(&lab, to);
    thread::sleep(Duration::from_millis(200));
    let (tx, rx) = std::sync::mpsc::channel();
    let client = echo_client(&lab, to, 6, tx);
    let local = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("client connected");
    let did = identifier(&lab, local, to);
    let owner = owners(&lab.sock(1)).expect("allocation")[did].expect("owned");
    thread::sleep(Duration::from_secs(2));
    let before = status(&lab.sock(owner)).expect("owner status");
    let forwarded = before["card_path"]["forwarded_by_card"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        forwarded > 100,
        "the owner's card forwarded only {forwarded} frames: {before}"
    );
    lab.kill(owner);
    let (sent, back, chunks) = client.join().expect("client thread");
    check_echo(sent, &back, chunks, server.join().expect("server thread"));
    // A survivor took the connection over and its card carried it.
    let survivors: Vec<u16> = (1..=NODES).filter(|&i| i != owner).collect();
    let new_owner = owners(&lab.sock(survivors[0])).expect("allocation")[did].expect("owned again");
    assert_ne!(new_owner, owner);
    let after = status(&lab.sock(new_owner)).expect("status");
    eprintln!(
        "real_traffic: {sent} bytes each way; owner {owner} killed after {forwarded} card \
         forwards; node {new_owner} took over: {}",
        after["card_path"]
    );
    assert!(
        after["card_path"]["forwarded_by_card"].as_u64() > Some(0),
        "{after}"
    );
    for i in survivors {
        let s = status(&lab.sock(i)).expect("status");
        assert_eq!(s["interfaces"]["outside"], "o0", "{s}");
    }
}

fn clusterd(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_clusterd"))
        .args(args)
        .output()
        .expect("run clusterd");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Polls `check` every 100 ms until it says `Ok`; once `limit` has passed, fails with what its
/// last `Err` said.
fn within(limit: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let t = Instant::now();
    loop {
        let failed = match check() {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(t.elapsed() < limit, "{failed}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// `clusterd lab status --json` of the lab of `prefix`: a row per node.
fn rows(prefix: &str) -> Vec<Value> {
    let (ok, out, err) = clusterd(&["lab", "status", "--prefix", prefix, "--json"]);
    assert!(ok, "status: {err}");
    serde_json::from_str::<Vec<Value>>(&out).expect("JSON rows")
}

/// Whether node `i` of the lab of `prefix` owns identifiers; `not` if not.
fn owns_some(prefix: &str, i: usize, not: &str) -> Result<(), String> {
    if rows(prefix)[i - 1]["owned"].as_u64().unwrap_or(0) > 0 {
        Ok(())
    } else {
        Err(not.to_owned())
    }
}

#[test]
fn clusterd_lab_up_status_kill_start_partition_down() {
    require_root();
    let prefix = format!("lc{}", std::process::id() % 100_000);
    let dir = netns::default_dir(&prefix);
    struct Down(String, PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = netns::down(&self.0, &self.1);
        }
    }
    let _guard = Down(prefix.clone(), dir.clone());
    let (ok, out, err) = clusterd(&["lab", "up", "--nodes", "3", "--prefix", &prefix, "--json"]);
    assert!(ok, "lab up: {err}");
    let v: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["client_ns"], format!("{prefix}-client"));
    assert_eq!(v["server"][0], "198.18.7.2");
    assert_eq!(v["server"][1], "2001:db8:7::2");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3));
    let socket = v["nodes"][1]["socket"].as_str().expect("socket").to_owned();
    assert!(status(Path::new(&socket)).is_some_and(|s| s["ready"] == true));
    // A second lab with the same prefix is refused, naming the fix.
    let (ok, _, err) = clusterd(&["lab", "up", "--prefix", &prefix]);
    assert!(!ok && err.contains("lab down"), "{err}");

    assert!(rows(&prefix)
        .iter()
        .all(|r| r["ready"] == true && r["owned"].as_u64() > Some(0)));
    // kill 2: the others take its identifiers
    assert!(clusterd(&["lab", "kill", "2", "--prefix", &prefix]).0);
    within(Duration::from_secs(10), || {
        let r = rows(&prefix);
        let others = r[0]["owned"].as_u64().unwrap_or(0) + r[2]["owned"].as_u64().unwrap_or(0);
        if r[1]["pid"].is_null() && others == 256 {
            Ok(())
        } else {
            Err(format!("no takeover: {r:?}"))
        }
    });
    let (ok, _, err) = clusterd(&["lab", "kill", "2", "--prefix", &prefix]);
    assert!(!ok && err.contains("not running"), "{err}");
    // start 2 again: it rejoins and owns identifiers
    assert!(clusterd(&["lab", "start", "2", "--prefix", &prefix]).0);
    within(Duration::from_secs(20), || {
        owns_some(&prefix, 2, "node 2 did not rejoin")
    });
    // partition 3: it fences itself and loses its identifiers; heal: it gets some back
    assert!(clusterd(&["lab", "partition", "3", "--prefix", &prefix]).0);
    within(Duration::from_secs(10), || {
        let r = rows(&prefix);
        let majority = r[0]["owned"].as_u64().unwrap_or(0) + r[1]["owned"].as_u64().unwrap_or(0);
        if majority == 256 {
            Ok(())
        } else {
            Err(format!("no takeover from the partitioned node: {r:?}"))
        }
    });
    assert!(clusterd(&["lab", "heal", "3", "--prefix", &prefix]).0);
    within(Duration::from_secs(20), || {
        owns_some(&prefix, 3, "node 3 did not come back")
    });
    // down: nothing left, also when run again
    let (ok, out, err) = clusterd(&["lab", "down", "--prefix", &prefix, "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{prefix}-sw")), "{out}");
    assert!(netns::namespaces(&prefix).is_empty());
    assert!(!dir.exists());
    let (ok, out, _) = clusterd(&["lab", "down", "--prefix", &prefix]);
    assert!(ok && out.contains("nothing"), "{out}");
    // a bad prefix is refused before anything is made
    let (ok, _, err) = clusterd(&["lab", "up", "--prefix", "has space"]);
    assert!(!ok && err.contains("--prefix"), "{err}");
}
