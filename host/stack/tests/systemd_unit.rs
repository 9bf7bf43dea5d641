//! `contrib/clusterd@.service`, parsed: the keys a node's unit must have (it runs `clusterd
//! run` with the instance's config, `Type=notify`, reload by SIGHUP, a stop timeout above the
//! daemon's leave timeout, the hardening, only the network capabilities). When
//! `systemd-analyze` is installed, `systemd-analyze verify` must accept it too.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contrib/clusterd@.service")
}

/// Section -> key -> values (a key given twice keeps both).
fn parse(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {}: no continuation lines",
            i + 1
        );
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {line}", i + 1));
        assert!(
            !section.is_empty(),
            "line {}: a key outside a section",
            i + 1
        );
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

#[test]
fn the_unit_has_what_a_node_needs() {
    let text = std::fs::read_to_string(unit_path()).expect("contrib/clusterd@.service");
    let u = parse(&text);
    let get = |s: &str, k: &str| -> String {
        u.get(s)
            .and_then(|m| m.get(k))
            .and_then(|v| v.last())
            .cloned()
            .unwrap_or_else(|| panic!("[{s}] {k}= missing"))
    };
    let exec = get("Service", "ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert!(
        argv[0].starts_with('/') && argv[0].ends_with("/clusterd"),
        "{exec}"
    );
    assert_eq!(
        &argv[1..],
        ["run", "--config", "/etc/clusterd/%i.toml"],
        "{exec}"
    );
    assert!(get("Service", "ExecStartPre").ends_with("clusterd check-config /etc/clusterd/%i.toml"));
    assert_eq!(get("Service", "Type"), "notify");
    assert_eq!(get("Service", "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(get("Service", "KillSignal"), "SIGTERM");
    let stop: u64 = get("Service", "TimeoutStopSec").parse().expect("seconds");
    assert!(
        stop > host::daemon::node::LEAVE_TIMEOUT.as_secs(),
        "TimeoutStopSec={stop} leaves the graceful leave no time"
    );
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("RuntimeDirectoryMode", "0700"),
        ("StateDirectoryMode", "0700"),
        ("SystemCallArchitectures", "native"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("ProtectKernelModules", "yes"),
    ] {
        assert_eq!(get("Service", k), v, "{k}");
    }
    assert!(get("Service", "StateDirectory").starts_with("clusterd"));
    assert!(get("Service", "RuntimeDirectory").starts_with("clusterd"));
    let caps = |k: &str| {
        let mut v: Vec<String> = get("Service", k)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        caps("CapabilityBoundingSet"),
        ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    );
    assert_eq!(
        caps("AmbientCapabilities"),
        ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    );
    assert_eq!(
        caps("RestrictAddressFamilies"),
        ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"]
    );
    assert_eq!(get("Install", "WantedBy"), "multi-user.target");
}

#[test]
fn systemd_analyze_verifies_the_unit_when_installed() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    };
    if !out.status.success() {
        return;
    }
    // verify wants the instance's unit and an executable ExecStart: a copy naming this
    // build's clusterd
    let dir = std::env::temp_dir().join(format!("clusterd-test-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(unit_path())
        .unwrap()
        .replace("/usr/local/bin/clusterd", env!("CARGO_BIN_EXE_clusterd"));
    let unit = dir.join("clusterd@node1.service");
    std::fs::write(&unit, text).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("clusterd@node1.service"))
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {said}");
}
