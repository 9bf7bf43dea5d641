//! `hwctl --device unix:PATH`: a real single-node `clusterd run --config`
//! process, traffic through its wire port, an SA through its control socket,
//! and hwctl reading status, dump, sas and regs through the socket.

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{hwctl, TempDir};
use host::daemon::protocol::{Request, SaDir, SecretHex};
use serde_json::Value;

mod common;

/// A secret that must never show up in hwctl's output.
const SA_KEY: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";

/// Succeeds (see [`common::ok`]) and shows no key material.
fn ok(args: &[&str]) -> String {
    let out = common::ok(args);
    assert!(!out.contains("5ec7e7"), "key material in the output: {out}");
    out
}

/// A node process, stopped (and killed if need be) on drop.
struct Node {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
    wire: std::net::SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = call(&self.sock, &Request::Stop);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One control request, straight on the socket; the answer's JSON as it came.
fn call(sock: &Path, req: &Request) -> std::io::Result<Value> {
    let s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let line = serde_json::to_string(req)?;
    w.write_all(format!("{line}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// `clusterd ctl --socket S sa_add FIELDS` with `stdin`; (succeeded, stdout and stderr).
fn ctl_sa_add(node: &Node, fields: &str, stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clusterd"))
        .args(["ctl", "--socket"])
        .arg(&node.sock)
        .args(["sa_add", fields])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Item 8 of issue 13 for `sa_add`: the key comes from `@FILE` (mode 0600) or stdin (`-`),
/// never from argv; and item 6: a key another SA has is refused, naming both SPIs.
fn ctl_sa_add_takes_keys_from_files_and_stdin_only(node: &Node) {
    use std::os::unix::fs::PermissionsExt;
    let fields = |spi: u32, key: &str| {
        format!(r#"{{"peer":"10.1.0.1","dst":"10.2.0.1","spi":{spi},"dir":"in","key":"{key}"}}"#)
    };
    let literal = "ab".repeat(36);
    let (ok, out) = ctl_sa_add(node, &fields(0x2001, &literal), "");
    assert!(
        !ok && out.contains("@FILE") && out.contains("chmod 600"),
        "{out}"
    );
    assert!(!out.contains("abab"), "{out}");
    let file = node.dir.join("sa.key");
    std::fs::write(&file, format!("{}\n", "cd".repeat(36))).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let at = format!("@{}", file.display());
    let (ok, out) = ctl_sa_add(node, &fields(0x2001, &at), "");
    assert!(
        !ok && out.contains("mode 0644") && out.contains("chmod 600"),
        "{out}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, out) = ctl_sa_add(node, &fields(0x2001, &at), "");
    assert!(ok && out.contains("\"did\""), "{out}");
    assert!(!out.contains("cdcd"), "{out}");
    let (ok, out) = ctl_sa_add(node, &fields(0x2002, "-"), &"ef".repeat(36));
    assert!(ok, "{out}");
    // SA 0x12345678's key again, through stdin: refused, both SPIs named
    let (ok, out) = ctl_sa_add(node, &fields(0x2003, "-"), SA_KEY);
    assert!(
        !ok && out.contains("0x00002003") && out.contains("0x12345678") && out.contains("own key"),
        "{out}"
    );
    assert!(!out.contains("5ec7e7"), "{out}");
}

fn start() -> Node {
    let dir = std::env::temp_dir().join(format!("hwctl-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (listen, wire) = (free_udp_port(), free_udp_port());
    let conf = dir.join("node1.conf");
    std::fs::write(
        &conf,
        format!(
            "node = 1\nlisten = \"127.0.0.1:{listen}\"\ncontrol = \"node1.sock\"\n\
             key = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\
             wire = \"127.0.0.1:{wire}\"\ncard_capacity = 4\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("node1.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_clusterd"))
        .args(["run", "--config"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start clusterd");
    let node = Node {
        child,
        sock: dir.join("node1.sock"),
        dir,
        wire: format!("127.0.0.1:{wire}").parse().unwrap(),
    };
    // Ready and owning its identifiers.
    let t = Instant::now();
    loop {
        if let Ok(v) = call(&node.sock, &Request::Status) {
            if v["ready"] == true && v["owned"].as_u64().unwrap_or(0) > 0 {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "node did not get ready: {}",
            std::fs::read_to_string(node.dir.join("node1.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

/// An IPv4 TCP SYN from 10.1.0.x to 10.2.0.1:443.
fn syn(i: u8) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, i, 10, 2, 0, 1,
    ];
    let mut s: u32 = p
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    let c = !(s as u16);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&(40000 + u16::from(i)).to_be_bytes());
    p.extend_from_slice(&443u16.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    p
}

#[test]
fn a_running_node_through_its_control_socket() {
    let node = start();
    let dev = format!("unix:{}", node.sock.display());

    // Traffic: six new TCP connections through the wire port.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 1..=6u8 {
        let mut d = u64::from(i).to_be_bytes().to_vec();
        d.extend_from_slice(&syn(i));
        udp.send_to(&d, node.wire).unwrap();
    }
    // An SA, installed through the control socket.
    let v = call(
        &node.sock,
        &Request::SaAdd {
            dir: Some(SaDir::Out),
            dst: Some("10.2.0.1".parse().unwrap()),
            key: SecretHex::new(SA_KEY),
            peer: Some("10.1.0.1".parse().unwrap()),
            spi: 0x1234_5678,
        },
    )
    .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let t = Instant::now();
    while call(&node.sock, &Request::Status).unwrap()["node_table_entries"]
        .as_u64()
        .unwrap_or(0)
        < 6
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "entries did not arrive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // status: a table and JSON.
    let out = ok(&["--device", &dev, "status"]);
    assert!(out.contains("card backend     model"), "{out}");
    assert!(out.contains("occupancy        4 / 4 (100.0%)"), "{out}");
    assert!(out.contains("SAs              1"), "{out}");
    // The card is on the packet path: the six SYNs entered its port and were punted.
    assert!(out.contains("port frames in   6"), "{out}");
    assert!(out.contains("port punted      6 (to the host)"), "{out}");
    assert!(out.contains("tcp_control 6"), "{out}");
    let v: Value = serde_json::from_str(&ok(&["--device", &dev, "--json", "status"])).unwrap();
    assert_eq!(v["device"], dev.as_str());
    assert_eq!(v["node"], 1);
    assert_eq!(v["occupancy"], 4);
    assert_eq!(v["capacity"], 4);
    assert!(v["node_table_entries"].as_u64().unwrap() >= 6, "{v}");
    assert!(v["software_overflow_entries"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["card_path"]["frames_in"], 6, "{v}");
    assert_eq!(v["card_path"]["reasons"]["tcp_control"], 6, "{v}");

    // dump: every entry of the node-specific table, and one identifier's.
    let all: Value = serde_json::from_str(&ok(&["--device", &dev, "--json", "dump"])).unwrap();
    let all = all.as_array().unwrap().clone();
    assert!(all.len() >= 6, "{all:?}");
    let did = all[0]["did"].as_u64().unwrap();
    let did_arg = did.to_string();
    let one: Value = serde_json::from_str(&ok(&[
        "--device", &dev, "--json", "dump", "--did", &did_arg,
    ]))
    .unwrap();
    let one = one.as_array().unwrap();
    assert!(
        !one.is_empty() && one.iter().all(|e| e["did"] == did),
        "{one:?}"
    );
    // Keys in the card's layout, as a local dump shows them.
    let tcp = all
        .iter()
        .find(|e| e["key"]["type"] == "tcp")
        .expect("a TCP entry");
    assert_eq!(tcp["key"]["dst_port"], 443, "{tcp}");
    assert_eq!(
        all.iter().filter(|e| e["where"] == "card").count(),
        4,
        "the card holds its capacity, the rest overflowed: {all:?}"
    );
    let table = ok(&["--device", &dev, "dump"]);
    assert!(table.starts_with("DID  WHERE"), "{table}");
    assert!(
        table.contains("tcp 10.1.0.1:40001 -> 10.2.0.1:443"),
        "{table}"
    );
    // the node's key text: the SA's peers (claim 12), as `clusterd ctl dump` prints it
    assert!(
        table.contains("esp 10.1.0.1 -> 10.2.0.1 spi=0x12345678"),
        "{table}"
    );
    assert!(
        table.contains(&format!("{} entries (node {dev}", all.len())),
        "{table}"
    );

    // sas: state, never the key.
    let out = ok(&["--device", &dev, "sas"]);
    assert!(out.contains("0x12345678"), "{out}");
    assert!(out.contains("10.2.0.1"), "{out}");
    assert!(out.contains("present"), "{out}");
    assert!(out.contains("1 SAs (keys are never shown)"), "{out}");
    let v: Value = serde_json::from_str(&ok(&["--device", &dev, "--json", "sas"])).unwrap();
    assert_eq!(v[0]["spi"], "0x12345678", "the views show SPIs in hex");
    assert_eq!(v[0]["did"].as_u64().map(|d| d < 4096), Some(true), "{v}");
    assert_eq!(v[0]["key_present"], true);

    // regs: the node reads its own card's registers (reads only) and hwctl renders them like a
    // local card's: the CAM's OCCUPANCY is what the dump says the card holds.
    let out = ok(&["--device", &dev, "regs"]);
    assert!(out.contains("IDENT") && out.contains("CAM"), "{out}");
    let blocks: Value = serde_json::from_str(&ok(&["--device", &dev, "--json", "regs"])).unwrap();
    let cam = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "CAM")
        .expect("a CAM block");
    let occupancy = cam["regs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "OCCUPANCY")
        .expect("OCCUPANCY");
    assert_eq!(occupancy["value_u32"], 4, "{cam}");

    // Writing to a node's card from hwctl is refused.
    let o = hwctl(&["--device", &dev, "--seed-entries", "2", "status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing"));

    ctl_sa_add_takes_keys_from_files_and_stdin_only(&node);
    drop(node);
}

#[test]
fn a_stale_socket_says_nothing_listens() {
    let dir = TempDir::new("stale");
    let path = dir.dir().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let dev = format!("unix:{}", path.display());
    let o = hwctl(&["--device", &dev, "status"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing is listening"), "{stderr}");
    assert!(stderr.contains("fix:"), "{stderr}");
}
