//! A node whose `outside` or `inside` interface is missing, or administratively down, stops at
//! start (exit status 1) with the interface's name and the fix; with both up it starts. Real
//! `clusterd run` processes in a scratch network namespace with veth pairs this test makes and
//! removes (root only: without root it says why and skips).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The scratch namespace, removed (with its veth pairs) when the test ends, also on a failure.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node's config with `outside` and `inside` in `dir`.
fn config(dir: &Path, outside: &str, inside: &str) -> PathBuf {
    let conf = dir.join(format!("{outside}-{inside}.conf"));
    std::fs::write(
        &conf,
        format!(
            "node = 1\nlisten = \"127.0.0.1:7100\"\ncontrol = \"n1.sock\"\nkey_file = \
             \"cluster.key\"\nstate_dir = \"n1.state\"\ncard = \"model\"\noutside = \
             \"{outside}\"\ninside = \"{inside}\"\n"
        ),
    )
    .expect("config");
    conf
}

/// Runs `clusterd run --config CONF` in `ns` until it exits (or `within`: then it is killed);
/// its exit code (None: still running at the deadline) and its standard error.
fn run(ns: &str, conf: &Path, within: Duration, until_log: Option<&str>) -> (Option<i32>, String) {
    let err = conf.with_extension("err");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_clusterd"), "run"])
        .arg("--config")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("clusterd");
    let t = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code();
        }
        let log = std::fs::read_to_string(&err).unwrap_or_default();
        if t.elapsed() > within || until_log.is_some_and(|l| log.contains(l)) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&err).unwrap_or_default())
}

#[test]
fn a_missing_or_down_interface_stops_the_node_with_the_fix() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIP a_missing_or_down_interface_stops_the_node_with_the_fix: needs root (a network \
             namespace, veth pairs, raw sockets): run as root"
        );
        return;
    }
    let ns = Netns(format!("ifc{}", std::process::id() % 100_000));
    // one left by an earlier run that was killed
    let _ = Command::new("ip")
        .args(["netns", "del", &ns.0])
        .stderr(Stdio::null())
        .status();
    ip(&["netns", "add", &ns.0]);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    for (a, b) in [("o0", "o0p"), ("i0", "i0p")] {
        ip(&[
            "-n", &ns.0, "link", "add", a, "type", "veth", "peer", "name", b,
        ]);
        ip(&["-n", &ns.0, "link", "set", b, "up"]);
    }
    ip(&["-n", &ns.0, "link", "set", "o0", "up"]);
    // i0 stays down for now

    let dir = std::env::temp_dir().join(format!("clusterd-test-ifc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let key = Command::new(env!("CARGO_BIN_EXE_clusterd"))
        .arg("keygen")
        .output()
        .expect("keygen");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join("cluster.key"))
            .and_then(|mut f| f.write_all(&key.stdout))
            .expect("key file");
    }
    let within = Duration::from_secs(20);

    // no such interface
    let (code, err) = run(&ns.0, &config(&dir, "o0", "i9"), within, None);
    assert_eq!(code, Some(1), "a missing interface: exit status 1\n{err}");
    assert!(
        err.contains("inside = \"i9\"") && err.contains("no interface i9"),
        "the message names the interface: {err}"
    );
    assert!(err.contains("ip link show"), "and the fix: {err}");

    // an interface that is down
    let (code, err) = run(&ns.0, &config(&dir, "o0", "i0"), within, None);
    assert_eq!(
        code,
        Some(1),
        "an interface that is down: exit status 1\n{err}"
    );
    assert!(
        err.contains("inside = \"i0\"") && err.contains("i0 is down"),
        "the message names the interface: {err}"
    );
    assert!(err.contains("ip link set i0 up"), "and the fix: {err}");

    // the outside one down (checked first)
    ip(&["-n", &ns.0, "link", "set", "o0", "down"]);
    let (code, err) = run(&ns.0, &config(&dir, "o0", "i9"), within, None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("ip link set o0 up"), "{err}");

    // both up: the node starts and bridges them
    ip(&["-n", &ns.0, "link", "set", "o0", "up"]);
    ip(&["-n", &ns.0, "link", "set", "i0", "up"]);
    let started = "card ports on interfaces: outside o0, inside i0";
    let (code, err) = run(&ns.0, &config(&dir, "o0", "i0"), within, Some(started));
    assert_eq!(code, None, "with both up the node runs\n{err}");
    assert!(err.contains(started), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
