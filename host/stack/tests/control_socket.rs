//! The control socket and the node's files against misuse, with real `clusterd` processes:
//! socket mode, long lines, accept errors, what sits at the socket path, the state directory
//! lock and key file permissions (issue 13, items 7 and 8).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_udp, one_node_config, write_key, TempDir, KEY};

/// [`one_node_config`] `dir/<name>.conf` with its control socket `sock` and state directory
/// `state`, then the settings `extra`.
fn node_config(dir: &Path, name: &str, sock: &str, state: &str, extra: &str) -> PathBuf {
    one_node_config(
        dir,
        name,
        &format!("control = \"{sock}\"\nstate_dir = \"{state}\"\n{extra}"),
    )
}

/// Node `n` of [`node_config`] in `t` (socket `n.sock`, state `n.state`), started through
/// `wrapper` (see [`Node::spawn`]) and answering; the node and its socket.
fn node_n(t: &TempDir, wrapper: &[&str]) -> (Node, PathBuf) {
    let sock = t.dir().join("n.sock");
    let conf = node_config(t.dir(), "n", "n.sock", "n.state", "");
    let mut n = Node::spawn(&conf, wrapper);
    n.ready(&sock);
    (n, sock)
}

struct Node {
    child: Child,
    /// The node's stderr, a file beside its config.
    log: PathBuf,
}

impl Node {
    /// Starts `clusterd run` through `wrapper` (e.g. `["prlimit", "--nofile=40:40"]`).
    fn spawn(conf: &Path, wrapper: &[&str]) -> Node {
        let exe = env!("CARGO_BIN_EXE_clusterd");
        let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        argv.extend([exe.to_string(), "run".into(), "--config".into()]);
        argv.push(conf.display().to_string());
        let log = conf.with_extension("log");
        let err = std::fs::File::create(&log).expect("log file");
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("CLUSTERD_EXIT_WITH_PARENT", "1")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn clusterd");
        Node { child, log }
    }

    /// Starts `clusterd run` on `conf` and waits until `sock` answers `status`.
    fn started(conf: &Path, sock: &Path) -> Node {
        let mut n = Node::spawn(conf, &[]);
        n.ready(sock);
        n
    }

    /// Waits until `sock` answers `status`.
    fn ready(&mut self, sock: &Path) {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("clusterd exited early: {st}: {}", self.stderr());
            }
            if status(sock).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("node did not come up at {}", sock.display());
    }

    /// Waits for the process to end (it must, by itself) and returns its stderr.
    fn failure(mut self) -> String {
        let st = self.child.wait().expect("wait");
        assert!(!st.success(), "clusterd should have failed");
        self.stderr()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the node by `stop`, kills it when that fails, returns its stderr.
    fn stop(mut self, sock: &Path) -> String {
        let _ = call(sock, r#"{"cmd":"stop"}"#);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.stderr();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request line, one answer line.
fn call(sock: &Path, line: &str) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(line.as_bytes()).ok()?;
    s.write_all(b"\n").ok()?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).ok()?;
    serde_json::from_str(&answer).ok()
}

fn status(sock: &Path) -> Option<serde_json::Value> {
    call(sock, r#"{"cmd":"status"}"#).filter(|v| v.get("error").is_none())
}

#[test]
fn socket_is_0600_whatever_the_umask_and_0660_for_a_group() {
    let t = TempDir::new("ctl-mode");
    let (n, sock) = node_n(&t, &["sh", "-c", "umask 000; exec \"$@\"", "sh"]);
    let meta = std::fs::symlink_metadata(&sock).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "socket mode under umask 000"
    );
    n.stop(&sock);

    // with control_group: 0660 and owned by the group
    let gid = nix::unistd::getgid();
    let group = nix::unistd::Group::from_gid(gid)
        .expect("group lookup")
        .expect("own group has a name");
    let sock = t.dir().join("g.sock");
    let conf = node_config(
        t.dir(),
        "g",
        "g.sock",
        "g.state",
        &format!("control_group = \"{}\"\n", group.name),
    );
    let n = Node::started(&conf, &sock);
    let meta = std::fs::symlink_metadata(&sock).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid.as_raw());
    n.stop(&sock);

    // a group that does not exist is refused with the fix
    let conf = node_config(
        t.dir(),
        "bad",
        "bad.sock",
        "bad.state",
        "control_group = \"no-such-group-h13\"\n",
    );
    let err = Node::spawn(&conf, &[]).failure();
    assert!(err.contains("no such group"), "{err}");
}

#[test]
fn an_endless_line_is_refused_and_the_node_keeps_answering() {
    let t = TempDir::new("ctl-line");
    let (n, sock) = node_n(&t, &[]);
    let pid = n.child.id();

    let s = UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..64 {
            if w.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut answer = String::new();
    BufReader::new(&s)
        .read_line(&mut answer)
        .expect("an answer before the close");
    let sent = writer.join().expect("writer");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("json answer");
    let e = v["error"].as_str().expect("an error answer");
    assert!(e.contains("longer than"), "{e}");
    assert!(
        sent < 64 << 20,
        "the node closed the connection before all 64 MiB were sent"
    );
    // the node never held the line: its peak resident memory stays far below 64 MiB
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let hwm_kb: u64 = st
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(hwm_kb < 40 * 1024, "peak RSS {hwm_kb} kB");
    assert!(status(&sock).is_some(), "status after the long line");
    let err = n.stop(&sock);
    assert!(err.contains("request line longer than"), "logged: {err}");
}

#[test]
fn accept_errors_are_survived() {
    let t = TempDir::new("ctl-emfile");
    let (n, sock) = node_n(&t, &["prlimit", "--nofile=48:48"]);
    // hold far more connections than the node has descriptors: its accepts fail (EMFILE)
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = UnixStream::connect(&sock) {
            held.push(s);
        }
    }
    assert!(held.len() > 48, "the backlog takes the connections");
    // the node hits the limit and logs the failed accept
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until && !n.stderr().contains("accept failed") {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        n.stderr().contains("accept failed"),
        "logged: {}",
        n.stderr()
    );
    drop(held);
    let until = Instant::now() + Duration::from_secs(20);
    let mut answered = false;
    while Instant::now() < until && !answered {
        answered = status(&sock).is_some();
    }
    assert!(answered, "the node answers again once descriptors are free");
    n.stop(&sock);
}

#[test]
fn what_sits_at_the_socket_path() {
    let t = TempDir::new("ctl-path");
    // a plain file: refused, and left alone
    let file = t.dir().join("f.sock");
    std::fs::write(&file, "precious").expect("file");
    let conf = node_config(t.dir(), "f", "f.sock", "f.state", "");
    let err = Node::spawn(&conf, &[]).failure();
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "precious"
    );

    // a stale socket (nobody listens): replaced
    let sock = t.dir().join("s.sock");
    drop(UnixListener::bind(&sock).expect("bind"));
    assert!(sock.exists());
    let first = Node::started(&node_config(t.dir(), "s", "s.sock", "s.state", ""), &sock);

    // a socket another clusterd listens on: refused, the first keeps it
    let conf2 = node_config(t.dir(), "s2", "s.sock", "s2.state", "");
    let err = Node::spawn(&conf2, &[]).failure();
    assert!(err.contains("is in use by another clusterd"), "{err}");
    assert!(status(&sock).is_some(), "the first node still answers");
    first.stop(&sock);
}

#[test]
fn a_second_process_on_the_same_state_dir_is_refused() {
    let t = TempDir::new("ctl-lock");
    let a = t.dir().join("a.sock");
    let mut first = Node::started(&node_config(t.dir(), "a", "a.sock", "shared.state", ""), &a);
    let conf2 = node_config(t.dir(), "b", "b.sock", "shared.state", "");
    let err = Node::spawn(&conf2, &[]).failure();
    assert!(err.contains("in use by another clusterd"), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    assert!(err.contains("own state_dir"), "{err}");
    assert!(
        !t.dir().join("b.sock").exists(),
        "the refused node bound nothing"
    );
    // kill -9 leaves no stale lock: the next process starts
    first.child.kill().expect("kill");
    first.child.wait().expect("wait");
    let b = t.dir().join("b.sock");
    Node::started(&conf2, &b).stop(&b);
}

#[test]
fn a_key_file_others_can_read_is_refused_with_the_fix() {
    let t = TempDir::new("ctl-keyfile");
    let conf = node_config(t.dir(), "n", "n.sock", "n.state", "");
    let err = refused_once_readable(&conf, &t.dir().join("cluster.key"), 0o640);
    assert!(!err.contains(KEY), "the key is never printed");
}

/// Gives `secret` (a file the node of `conf` reads) the mode `mode`, which lets others read
/// it: the node must refuse to start, naming the fix; its stderr.
fn refused_once_readable(conf: &Path, secret: &Path, mode: u32) -> String {
    std::fs::set_permissions(secret, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let err = Node::spawn(conf, &[]).failure();
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(
        err.contains(&format!("chmod 600 {}", secret.display())),
        "{err}"
    );
    err
}

#[test]
fn the_demo_writes_its_key_file_0600() {
    let t = TempDir::new("ctl-demokey");
    let key = host::sync::ClusterKey::from_hex(KEY).expect("key");
    let path = t.dir().join("cluster.key");
    std::fs::write(&path, "old").expect("old file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    host::lab::cluster::write_key_file(&path, &key).expect("write");
    let meta = std::fs::metadata(&path).expect("meta");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        format!("{KEY}\n")
    );
}

#[test]
fn ctl_names_a_missing_or_dead_socket() {
    let t = TempDir::new("ctl-client");
    // `clusterd ctl --socket SOCK status`, which must fail; its stderr
    let ctl_status_fails = |sock: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_clusterd"))
            .args(["ctl", "--socket"])
            .arg(sock)
            .arg("status")
            .output()
            .expect("ctl");
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = ctl_status_fails(&t.dir().join("none.sock"));
    assert!(
        err.contains("no control socket at") && err.contains("is the node running"),
        "{err}"
    );
    let dead = t.dir().join("dead.sock");
    drop(UnixListener::bind(&dead).expect("bind"));
    let err = ctl_status_fails(&dead);
    assert!(err.contains("nobody listens on"), "{err}");
}

/// `clusterd keygen --identity FILE`: the file is created 0600 and never overwritten; the
/// public key printed is the one a node with that file signs with.
fn keygen_identity(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clusterd"))
        .args(["keygen", "--identity"])
        .arg(path)
        .output()
        .expect("run keygen")
}

#[test]
fn node_identities_from_keygen_to_a_running_node() {
    let t = TempDir::new("ctl-identity");
    let id = t.dir().join("n.id");
    let o = keygen_identity(&id);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let public = String::from_utf8(o.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert_eq!(public.len(), 64, "{public}");
    let meta = std::fs::metadata(&id).expect("identity file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let secret = std::fs::read_to_string(&id).expect("read");
    let loaded = host::sync::NodeIdentity::load(&id).expect("load");
    assert_eq!(loaded.public().to_hex(), public);
    // Never overwritten.
    let again = keygen_identity(&id);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    assert_eq!(std::fs::read_to_string(&id).expect("read"), secret);

    // A node with the identity starts, says which public key it signs with, never the secret.
    let pk = "ab".repeat(32);
    let conf = t.dir().join("n.conf");
    let text = format!(
        "node = 1\nlisten = \"{}\"\nkey_file = \"cluster.key\"\nidentity_file = \"n.id\"\n\
         control = \"n.sock\"\nstate_dir = \"n.state\"\n\
         [[peer]]\nid = 2\naddr = \"{}\"\nkey = \"{pk}\"\n\
         [[peer]]\nid = 3\naddr = \"{}\"\nrole = \"witness\"\nkey = \"{pk}\"\n",
        free_udp(),
        free_udp(),
        free_udp()
    );
    write_key(t.dir());
    std::fs::write(&conf, text).expect("config");
    let sock = t.dir().join("n.sock");
    let log = Node::started(&conf, &sock).stop(&sock);
    assert!(log.contains(&format!("identity {public}")), "{log}");
    assert!(
        !log.contains(secret.trim()),
        "the identity's secret in the log"
    );

    // An identity file others can read is refused with the fix.
    refused_once_readable(&conf, &id, 0o644);
    // And a file that is not an identity is named as such.
    std::fs::write(&id, "00112233\n").expect("write");
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = Node::spawn(&conf, &[]).failure();
    assert!(err.contains("not an Ed25519 identity"), "{err}");
}
