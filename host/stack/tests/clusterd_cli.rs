//! clusterd's operator commands run as a process: check-config (issue 14, item 4),
//! completions and man pages, output formats.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{free_udp, write_key, TempDir};

fn clusterd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clusterd"))
        .args(args)
        .output()
        .expect("run clusterd")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.to_str().expect("utf-8 path").to_owned()
}

fn good(dir: &Path) -> String {
    write_key(dir);
    "# node 1 of 3\n\
     node = 1\n\
     listen = \"127.0.0.1:7101\"\n\
     control = \"node1.sock\"\n\
     key_file = \"cluster.key\"\n\
     \n\
     [[peer]]\n\
     id = 2\n\
     addr = \"127.0.0.1:7102\"\n\
     \n\
     [[peer]]\n\
     id = 3\n\
     addr = \"127.0.0.1:7103\"\n\
     role = \"witness\"\n"
        .to_owned()
}

#[test]
fn check_config_accepts_a_good_file_with_a_summary() {
    let t = TempDir::new("check-ok");
    let conf = write(t.dir(), "n1.toml", &good(t.dir()));
    let o = clusterd(&["check-config", &conf]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(": ok: node 1 (member, voter), listen 127.0.0.1:7101, 2 peers (1 witness"),
        "{out}"
    );
    // nothing was started: no socket, no state directory
    assert!(!t.dir().join("node1.sock").exists());
    assert!(!t.dir().join("node1.state").exists());
}

#[test]
fn check_config_names_the_line_and_the_fix() {
    let t = TempDir::new("check-bad");
    let good = good(t.dir());
    for (text, needles) in [
        (
            good.replace("node = 1\n", "node = 1\nlisen = \"x\"\n"),
            &[
                "line 3: unknown setting \"lisen\"",
                "did you mean \"listen\"?",
            ][..],
        ),
        (
            good.replace("node = 1", "node = \"one\""),
            &["line 2: node: invalid type", "fix: write e.g. node = 1"][..],
        ),
        (
            good.replace("addr = \"127.0.0.1:7102\"", "addr = \"127.0.0.1\""),
            &[
                "line 9: addr = \"127.0.0.1\" is not an IP address with a port",
                "fix:",
            ][..],
        ),
        (
            good.replace(
                "[[peer]]\nid = 2\naddr = \"127.0.0.1:7102\"\n",
                "peer = 2 127.0.0.1:7102\n",
            ),
            &["line 7", "peers are tables now"][..],
        ),
        (
            good.replace("key_file = \"cluster.key\"", "key_file = cluster.key"),
            &[
                "line 5",
                "TOML strings are quoted: write key_file = \"cluster.key\"",
            ][..],
        ),
    ] {
        let conf = write(t.dir(), "bad.toml", &text);
        let o = clusterd(&["check-config", &conf]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{text}\n{err}");
        assert!(o.stdout.is_empty());
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "{n:?} not in {err}");
        }
    }
    let o = clusterd(&["check-config", "no-such-file.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fix:"));
}

#[test]
fn bash_completions_know_the_subcommands() {
    let o = clusterd(&["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0));
    let script = String::from_utf8(o.stdout).expect("utf-8");
    assert!(script.contains("complete -F _clusterd"), "{script}");
    for sub in [
        "run",
        "demo",
        "ctl",
        "lab",
        "keygen",
        "check-config",
        "completions",
        "man",
    ] {
        assert!(script.contains(sub), "no {sub} in the completions");
    }
    // options of a subcommand, and of a nested one
    assert!(script.contains("--duration") && script.contains("--identifiers"));
    let o = clusterd(&["completions", "tcsh"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    for shell in ["zsh", "fish"] {
        let o = clusterd(&["completions", shell]);
        assert!(o.status.success() && !o.stdout.is_empty(), "{shell}");
    }
}

#[test]
fn man_pages_one_per_subcommand() {
    let t = TempDir::new("man");
    let dir = t.dir().join("man1");
    let o = clusterd(&["man", dir.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listed = String::from_utf8(o.stdout).unwrap();
    for page in [
        "clusterd.1",
        "clusterd-run.1",
        "clusterd-demo.1",
        "clusterd-ctl.1",
        "clusterd-check-config.1",
        "clusterd-lab.1",
        "clusterd-lab-up.1",
    ] {
        assert!(dir.join(page).is_file(), "no {page}");
        assert!(listed.contains(page), "{page} not listed: {listed}");
    }
    let top = std::fs::read_to_string(dir.join("clusterd.1")).unwrap();
    assert!(top.starts_with(".ie"), "roff: {top}");
    assert!(top.contains(".TH clusterd 1"), "{top}");
    for sub in ["run", "demo", "ctl", "lab", "check\\-config"] {
        assert!(top.contains(sub), "the top page names {sub}: {top}");
    }
    let demo = std::fs::read_to_string(dir.join("clusterd-demo.1")).unwrap();
    assert!(demo.contains("\\-\\-kill"), "{demo}");
    // a file in the way
    let file = t.dir().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = clusterd(&["man", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fix:"));
}

/// A node of a 3-node cluster whose peers never come: it answers status and allocation.
struct Node(std::process::Child, std::path::PathBuf);

impl Node {
    fn start(dir: &Path) -> Node {
        let text = good(dir)
            .replace("127.0.0.1:7101", &free_udp())
            .replace("127.0.0.1:7102", &free_udp())
            .replace("127.0.0.1:7103", &free_udp());
        let conf = write(dir, "n1.toml", &text);
        let child = Command::new(env!("CARGO_BIN_EXE_clusterd"))
            .args(["run", "--config", &conf])
            .env("CLUSTERD_EXIT_WITH_PARENT", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start clusterd");
        let sock = dir.join("node1.sock");
        let start = std::time::Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "no control socket"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Node(child, sock)
    }

    fn ctl(&self, args: &[&str]) -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_clusterd"))
            .arg("ctl")
            .arg("--socket")
            .arg(&self.1)
            .args(args)
            .output()
            .expect("ctl");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "ctl {args:?}: {err}");
        String::from_utf8(o.stdout).expect("utf-8")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ctl_tables_by_default_json_with_j_and_p() {
    let t = TempDir::new("ctl-formats");
    let n = Node::start(t.dir());
    let table = n.ctl(&["status"]);
    assert!(
        table.starts_with("node             1 (member), pid "),
        "{table}"
    );
    assert!(table.contains("\nPEER  ROLE"), "{table}");
    assert!(table.contains("\n3     witness"), "{table}");
    let compact = n.ctl(&["-j", "status"]);
    assert_eq!(compact.lines().count(), 1, "{compact}");
    let v: serde_json::Value = serde_json::from_str(&compact).expect("JSON");
    assert_eq!(v["node"], 1);
    let pretty = n.ctl(&["-p", "status"]);
    assert!(
        pretty.lines().count() > 20 && pretty.starts_with("{\n"),
        "{pretty}"
    );
    let same: serde_json::Value = serde_json::from_str(&pretty).expect("JSON");
    assert_eq!(same["node"], v["node"]);
    // --json is -j
    let long = n.ctl(&["--json", "allocation"]);
    assert_eq!(long.lines().count(), 1);
    let a: serde_json::Value = serde_json::from_str(&long).expect("JSON");
    assert_eq!(a["owners"].as_array().map(Vec::len), Some(256));
    let alloc = n.ctl(&["allocation"]);
    assert!(alloc.starts_with("epoch "), "{alloc}");
    assert!(alloc.contains("256 identifiers"), "{alloc}");
    // other answers: pretty JSON by default
    let counts = n.ctl(&["counts"]);
    assert!(counts.starts_with("{\n"), "{counts}");
}
