//! Real traffic through a cluster of `clusterd` processes: three nodes, each in its own network
//! namespace with its (model) card bridged to an outside and an inside interface, between a
//! client and a server namespace. The outside and inside segments are Linux bridges that flood
//! every frame to every port (no learning), so every node sees every frame and each card passes
//! only its node's identifiers; the nodes replicate over a third segment. A real TCP connection
//! (the kernels' own stacks) crosses the cluster, and survives a SIGKILL of the node that
//! owns it.
//!
//! Needs root (namespaces, veth pairs, bridges, raw sockets) and iproute2: it fails saying so.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use host::core::entry::{Endpoint, FlowKey, L4Proto};
use host::core::{ClusterSecret, Distributor, IdCount};
use host::daemon::protocol::{Request, Response};
use host::sync::{ClusterKey, NodeIdentity};
use nix::sched::{setns, CloneFlags};
use serde_json::Value;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);
const NODES: u16 = 3;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the real_traffic test needs root (network namespaces, veth pairs, bridges, raw \
         sockets): run it as root, e.g. `sudo -E cargo test -p host --test real_traffic`"
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 is needed): {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The namespaces of one run (`rt<pid>-<role>`), removed on drop, also when the test fails;
/// and the node processes, killed first.
struct Lab {
    prefix: String,
    roles: Vec<String>,
    dir: PathBuf,
    nodes: Vec<Option<Child>>,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn new() -> Lab {
        let prefix = format!("rt{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("clusterd-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("work dir");
        let mut lab = Lab {
            prefix,
            roles: Vec::new(),
            dir,
            nodes: Vec::new(),
        };
        let mut roles = vec!["client".to_owned(), "server".to_owned(), "sw".to_owned()];
        roles.extend((1..=NODES).map(|i| format!("n{i}")));
        for r in roles {
            let n = lab.ns(&r);
            let _ = Command::new("ip").args(["netns", "del", &n]).output();
            ip(&["netns", "add", &n]);
            lab.roles.push(r);
        }
        lab
    }

    /// A veth from `ns:dev` to the switch's bridge `br` (port `sw_dev`).
    fn attach(&self, role: &str, dev: &str, br: &str, sw_dev: &str) {
        let (ns, sw) = (self.ns(role), self.ns("sw"));
        ip(&[
            "-n", &ns, "link", "add", dev, "type", "veth", "peer", "name", sw_dev, "netns", &sw,
        ]);
        ip(&["-n", &sw, "link", "set", sw_dev, "master", br]);
        // flood every frame to every port: no learning, so each node sees everything
        ip(&[
            "-n",
            &sw,
            "link",
            "set",
            sw_dev,
            "type",
            "bridge_slave",
            "learning",
            "off",
            "flood",
            "on",
        ]);
        ip(&["-n", &sw, "link", "set", sw_dev, "up"]);
    }

    fn topology(&self) {
        let sw = self.ns("sw");
        for br in ["swout", "swin", "swsync"] {
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                br,
                "type",
                "bridge",
                "ageing_time",
                "0",
            ]);
            ip(&["-n", &sw, "link", "set", br, "addrgenmode", "none"]);
            ip(&["-n", &sw, "link", "set", br, "up"]);
        }
        for (role, dev, br, port, addr) in [
            ("client", "c0", "swout", "co", CLIENT),
            ("server", "s0", "swin", "si", SERVER),
        ] {
            self.attach(role, dev, br, port);
            let ns = self.ns(role);
            // one wire frame per packet (no offload super-frames for the bridges of the cards)
            ip(&[
                "-n",
                &ns,
                "link",
                "set",
                dev,
                "gso_max_segs",
                "1",
                "gso_max_size",
                "1500",
            ]);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", &ns, "link", "set", dev, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        for i in 1..=NODES {
            let role = format!("n{i}");
            let ns = self.ns(&role);
            self.attach(&role, "o0", "swout", &format!("o{i}"));
            self.attach(&role, "i0", "swin", &format!("i{i}"));
            self.attach(&role, "y0", "swsync", &format!("y{i}"));
            for dev in ["o0", "i0"] {
                // the node's own kernel stays off the segments the card bridges
                ip(&["-n", &ns, "link", "set", dev, "addrgenmode", "none"]);
                ip(&["-n", &ns, "link", "set", dev, "up"]);
            }
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("198.18.100.{i}/24"),
                "dev",
                "y0",
            ]);
            ip(&["-n", &ns, "link", "set", "y0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
    }

    fn sock(&self, i: u16) -> PathBuf {
        self.dir.join(format!("n{i}.sock"))
    }

    /// Config files, the cluster key and every node's identity.
    fn configs(&self) -> ClusterKey {
        let key = ClusterKey::generate().expect("key");
        host::lab::cluster::write_key_file(&self.dir.join("cluster.key"), &key).expect("key file");
        let mut public = Vec::new();
        for i in 1..=NODES {
            let p = self.dir.join(format!("n{i}.id"));
            public.push(NodeIdentity::write_new(&p).expect("identity"));
        }
        for i in 1..=NODES {
            let mut text = format!(
                "node = {i}\nlisten = 198.18.100.{i}:7100\ncontrol = n{i}.sock\n\
                 key_file = cluster.key\nidentity_file = n{i}.id\nstate_dir = n{i}.state\n\
                 card = model\noutside = o0\ninside = i0\n"
            );
            for j in 1..=NODES {
                if j != i {
                    text += &format!(
                        "peer = {j} 198.18.100.{j}:7100 key={}\n",
                        public[usize::from(j - 1)].to_hex()
                    );
                }
            }
            std::fs::write(self.dir.join(format!("n{i}.conf")), text).expect("config");
        }
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        key
    }

    fn start(&mut self, i: u16) {
        let log = File::create(self.dir.join(format!("n{i}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(&format!("n{i}"))])
            .arg(env!("CARGO_BIN_EXE_clusterd"))
            .args(["run", "--config"])
            .arg(self.dir.join(format!("n{i}.conf")))
            .env("CLUSTERD_EXIT_WITH_PARENT", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn clusterd");
        let slot = usize::from(i - 1);
        if self.nodes.len() <= slot {
            self.nodes.resize_with(slot + 1, || None);
        }
        self.nodes[slot] = Some(child);
    }

    fn kill(&mut self, i: u16) {
        if let Some(mut c) = self.nodes[usize::from(i - 1)].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self, i: u16) -> String {
        std::fs::read_to_string(self.dir.join(format!("n{i}.log"))).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.nodes.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for r in &self.roles {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(r)])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ask(sock: &Path, req: &Request) -> Option<Response> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(host::daemon::control::call_once(
        sock,
        req,
        Duration::from_secs(2),
    ))
    .ok()
}

fn status(sock: &Path) -> Option<Value> {
    match ask(sock, &Request::Status)? {
        Response::Status(v) => Some(v),
        _ => None,
    }
}

fn owners(sock: &Path) -> Option<Vec<Option<u16>>> {
    match ask(sock, &Request::Allocation)? {
        Response::Allocation(a) => Some(a.owners),
        _ => None,
    }
}

/// A thread that runs `f` in namespace `ns`.
fn in_ns<T: Send + 'static>(ns: String, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::spawn(move || {
        let file = File::open(format!("/run/netns/{ns}")).expect("namespace");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

#[test]
fn a_tcp_connection_crosses_the_cluster_and_survives_its_owner_being_killed() {
    require_root();
    let mut lab = Lab::new();
    lab.topology();
    let key = lab.configs();
    for i in 1..=NODES {
        lab.start(i);
    }
    // Ready: every node up, every identifier owned by a live node, all three agreeing.
    let t = Instant::now();
    loop {
        let ready = (1..=NODES).all(|i| {
            status(&lab.sock(i))
                .is_some_and(|s| s["ready"] == true && s["owned"].as_u64() > Some(0))
        });
        let agree = (1..=NODES)
            .map(|i| owners(&lab.sock(i)))
            .collect::<Option<Vec<_>>>()
            .is_some_and(|v| {
                v.windows(2).all(|w| w[0] == w[1]) && v[0].iter().all(Option::is_some)
            });
        if ready && agree {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "cluster not ready: {}",
            (1..=NODES)
                .map(|i| lab.log(i))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        thread::sleep(Duration::from_millis(100));
    }

    eprintln!("real_traffic: cluster ready after {:?}", t.elapsed());
    // The server echoes; the client sends 1 KiB every 5 ms for 6 s and reads the echo.
    let server = in_ns(lab.ns("server"), || {
        let l = TcpListener::bind(SocketAddr::new(IpAddr::V4(SERVER), 5001)).expect("listen");
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
    });
    thread::sleep(Duration::from_millis(200));
    let (tx, rx) = std::sync::mpsc::channel();
    let client = in_ns(lab.ns("client"), move || {
        let to = SocketAddr::new(IpAddr::V4(SERVER), 5001);
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        tx.send(s.local_addr().expect("local"))
            .expect("report port");
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
        while start.elapsed() < Duration::from_secs(6) {
            let chunk: Vec<u8> = (0..1024u32)
                .map(|k| (i.wrapping_mul(31) ^ k) as u8)
                .collect();
            s.write_all(&chunk).expect("send");
            sent += chunk.len() as u64;
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
    });
    let local = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("client connected");

    // Whose connection is it? The identifier from the cluster's distribution key.
    let secret = ClusterSecret::new(*key.derive16(host::daemon::DISTRIBUTION_LABEL));
    let dist = Distributor::new(&secret, IdCount::new(256).expect("count"));
    let flow = FlowKey::transport(
        L4Proto::Tcp,
        Endpoint::new(local.ip(), local.port()),
        Endpoint::new(IpAddr::V4(SERVER), 5001),
    )
    .0;
    let did = dist.for_key(&flow).expect("a TCP key has an identifier");
    let owner = owners(&lab.sock(1)).expect("allocation")[usize::from(did.0)].expect("owned");
    thread::sleep(Duration::from_secs(2));
    let before = status(&lab.sock(owner)).expect("owner status");
    let forwarded = before["card_path"]["forwarded_by_card"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        forwarded > 100,
        "the owner's card forwarded only {forwarded} frames: {before}"
    );
    // Kill the owner mid-transfer.
    lab.kill(owner);
    let (sent, back, chunks) = client.join().expect("client thread");
    let echoed = server.join().expect("server thread");
    assert_eq!(echoed, sent, "the server got {echoed} of {sent} bytes");
    assert_eq!(back.len() as u64, sent, "the echo is short");
    let expect: Vec<u8> = (0..chunks)
        .flat_map(|i| (0..1024u32).map(move |k| (i.wrapping_mul(31) ^ k) as u8))
        .collect();
    assert!(back == expect, "the echo differs from what was sent");
    // A survivor took the connection over and its card carried it.
    let survivors: Vec<u16> = (1..=NODES).filter(|&i| i != owner).collect();
    let new_owner = owners(&lab.sock(survivors[0])).expect("allocation")[usize::from(did.0)]
        .expect("owned again");
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
