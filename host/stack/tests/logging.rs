//! The daemon's log with real `clusterd` processes: `log_format = "json"` writes one JSON
//! object per line (timestamp, level, target, node, message); `RUST_LOG=warn` leaves only
//! warnings and errors, and wins over `log_level`; `log_level = "debug"` brings the raft
//! crate's own log in at target `clusterd::raft`; text lines carry no ANSI colours when stderr
//! is a file; a bad `log_level` is a config error naming the setting, a bad `RUST_LOG` stops
//! the node naming it; a peer with another cluster key is a warning at most once a second.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use common::{one_node_config, KEY};
use std::time::{Duration, Instant};

/// A fresh directory for one test, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let d =
            std::env::temp_dir().join(format!("clusterd-test-log-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A one-node config with its control socket `node1.sock` (`extra` settings above its peers,
/// which never run) and its key file.
fn config(dir: &Path, extra: &str) -> PathBuf {
    one_node_config(dir, "node1", &format!("control = \"node1.sock\"\n{extra}"))
}

/// Runs `clusterd ARGS CONF` (with the environment variables `env` set) to its end; its exit
/// status and stderr.
fn clusterd(args: &[&str], conf: &Path, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clusterd"))
        .args(args)
        .arg(conf)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("clusterd {args:?}: {e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `clusterd run` with `RUST_LOG` set to `rust_log` (or unset), stderr to `node1.log`.
fn spawn(conf: &Path, rust_log: Option<&str>) -> Child {
    let log = std::fs::File::create(conf.with_file_name("node1.log")).expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clusterd"));
    cmd.args(["run", "--config"])
        .arg(conf)
        .env("CLUSTERD_EXIT_WITH_PARENT", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(v) = rust_log {
        cmd.env("RUST_LOG", v);
    }
    cmd.spawn().expect("spawn clusterd")
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("node1.log")).unwrap_or_default()
}

/// Sends one control request line; the answer line.
fn call(sock: &Path, line: &str) -> Option<String> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).ok()?;
    Some(answer)
}

/// Waits until the node answers `status`, then until its log holds `needle` (if any), lets it
/// run `linger` more, then stops it; its log.
fn run_and_stop(dir: &Path, mut child: Child, needle: Option<&str>, linger: Duration) -> String {
    let sock = dir.join("node1.sock");
    let t = Instant::now();
    while call(&sock, r#"{"cmd":"status"}"#).is_none() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("clusterd exited early ({st}):\n{}", log_of(dir));
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no control socket:\n{}",
            log_of(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(n) = needle {
        while !log_of(dir).contains(n) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "never logged {n:?}:\n{}",
                log_of(dir)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(linger);
    let _ = call(&sock, r#"{"cmd":"stop"}"#);
    let t = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            assert!(st.success(), "exit {st}:\n{}", log_of(dir));
            break;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the node did not stop:\n{}", log_of(dir));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log_of(dir)
}

#[test]
fn json_lines_have_timestamp_level_target_node_and_message() {
    let d = Dir::new("json");
    let conf = config(&d.0, "log_format = \"json\"\n");
    let log = run_and_stop(&d.0, spawn(&conf, None), None, Duration::ZERO);
    let mut lines = Vec::new();
    for l in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{log}"));
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.contains('T')),
            "{l}"
        );
        let level = v["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {l}"));
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
            "{l}"
        );
        assert!(
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("clusterd::")),
            "{l}"
        );
        assert_eq!(v["node"], 1, "{l}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{l}");
        // the default filter is info
        assert!(level != "DEBUG" && level != "TRACE", "{l}");
        lines.push(v);
    }
    let has = |level: &str, target: &str, text: &str| {
        lines.iter().any(|v| {
            v["level"] == level
                && v["target"] == target
                && v["message"].as_str().is_some_and(|m| m.contains(text))
        })
    };
    assert!(has("INFO", "clusterd::raft", "no Raft state in"), "{log}");
    assert!(has("WARN", "clusterd::sync", "no identity_file"), "{log}");
    assert!(has("INFO", "clusterd::node", "stopped"), "{log}");
}

#[test]
fn rust_log_wins_over_log_level_and_warn_hides_info() {
    let d = Dir::new("warn");
    // log_level says debug; RUST_LOG=warn wins
    let conf = config(&d.0, "log_level = \"debug\"\n");
    let log = run_and_stop(&d.0, spawn(&conf, Some("warn")), None, Duration::ZERO);
    assert!(
        log.contains(" WARN clusterd::sync: no identity_file"),
        "{log}"
    );
    assert!(
        !log.contains(" INFO "),
        "info lines under RUST_LOG=warn:\n{log}"
    );
    assert!(!log.contains(" DEBUG "), "{log}");
    assert!(!log.contains("stopped"), "{log}");
    // text lines into a file: no colours; the node field on each
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a file: {log:?}");
    assert!(log.lines().all(|l| l.contains("node=1")), "{log}");

    // without RUST_LOG, log_level = "warn" does the same
    let d = Dir::new("level");
    let conf = config(&d.0, "log_level = \"warn\"\n");
    let log = run_and_stop(&d.0, spawn(&conf, None), None, Duration::ZERO);
    assert!(log.contains("no identity_file"), "{log}");
    assert!(!log.contains(" INFO "), "{log}");
}

#[test]
fn debug_brings_in_the_raft_crates_own_log() {
    let d = Dir::new("raft");
    // alone (its peers never run), the node campaigns: the raft crate says so, at debug
    let conf = config(&d.0, "log_level = \"info,clusterd::raft=debug\"\n");
    let log = run_and_stop(
        &d.0,
        spawn(&conf, None),
        Some("DEBUG clusterd::raft: raft: "),
        Duration::ZERO,
    );
    assert!(log.contains(" INFO clusterd::node: stopped"), "{log}");
    // at info, none of it
    let d = Dir::new("raft-info");
    let conf = config(&d.0, "");
    let child = spawn(&conf, None);
    std::thread::sleep(Duration::from_secs(2));
    let log = run_and_stop(&d.0, child, None, Duration::ZERO);
    assert!(!log.contains("clusterd::raft: raft: "), "{log}");
    assert!(log.contains(" INFO clusterd::node: stopped"), "{log}");
}

#[test]
fn bad_log_settings_are_named() {
    let d = Dir::new("bad");
    let conf = config(&d.0, "log_level = \"loud\"\n");
    let (status, err) = clusterd(&["check-config"], &conf, &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("log_level = \"loud\""), "{err}");
    assert!(
        err.contains("fix: write e.g. log_level = \"info\""),
        "{err}"
    );
    let (status, err) = clusterd(&["run", "--config"], &conf, &[]);
    assert!(!status.success());
    assert!(err.contains("log_level"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let conf = config(&d.0, "log_format = \"xml\"\n");
    let (_, err) = clusterd(&["check-config"], &conf, &[]);
    assert!(err.contains("log_format = \"xml\" is unknown"), "{err}");

    // a RUST_LOG that is not a filter stops the node, naming it
    let conf = config(&d.0, "");
    let (status, err) = clusterd(
        &["run", "--config"],
        &conf,
        &[("RUST_LOG", "clusterd=loud")],
    );
    assert!(!status.success());
    assert!(
        err.contains("RUST_LOG=\"clusterd=loud\" is not a log filter"),
        "{err}"
    );
    assert!(err.contains("fix:"), "{err}");
}

#[test]
fn a_peer_with_another_key_is_a_warning_once_a_second_at_most() {
    let d = Dir::new("wrongkey");
    let conf = config(&d.0, "");
    // node 2 at the address node 1 expects it, with another cluster key
    let text = std::fs::read_to_string(&conf).unwrap();
    let addr = |id: u16| -> String {
        let (_, rest) = text
            .split_once(&format!("id = {id}\naddr = \""))
            .expect("peer addr");
        rest.split('"').next().unwrap().to_string()
    };
    let listen1 = text
        .split_once("listen = \"")
        .and_then(|(_, r)| r.split('"').next())
        .unwrap()
        .to_string();
    let other_key = KEY.replace('0', "f");
    let conf2 = d.0.join("node2.conf");
    std::fs::write(
        &conf2,
        format!(
            "node = 2\nlisten = \"{}\"\ncontrol = \"node2.sock\"\nkey = \"{other_key}\"\n\
             state_dir = \"node2.state\"\n\n[[peer]]\nid = 1\naddr = \"{listen1}\"\n\n\
             [[peer]]\nid = 3\naddr = \"{}\"\nrole = \"witness\"\n",
            addr(2),
            addr(3)
        ),
    )
    .unwrap();
    let mut node2 = Command::new(env!("CARGO_BIN_EXE_clusterd"))
        .args(["run", "--config"])
        .arg(&conf2)
        .env("CLUSTERD_EXIT_WITH_PARENT", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node 2");
    let t0 = Instant::now();
    let needle = "frames refused for their authentication";
    // three seconds more of it after the first warning, then stop
    let log = run_and_stop(
        &d.0,
        spawn(&conf, None),
        Some(needle),
        Duration::from_secs(3),
    );
    let _ = node2.kill();
    let _ = node2.wait();
    let elapsed = t0.elapsed().as_secs() + 2;
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
    assert!(
        warnings
            .iter()
            .all(|l| l.contains(" WARN clusterd::sync: ") && l.contains("key_file")),
        "{log}"
    );
    assert!(
        warnings.len() as u64 <= elapsed,
        "{} warnings in {elapsed} s:\n{log}",
        warnings.len()
    );
}
