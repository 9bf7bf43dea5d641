//! `clusterd lab run --baseline kernel` through the real binary: a 3-node kernel baseline lab
//! (`clusterd lab up --baseline kernel`), a small workload (30 message connections, one bulk
//! transfer, UDP, ping) with a SIGKILL of node 2, the report as JSON; then `clusterd lab down`
//! leaves none of the run's namespaces. No timing figure is asserted (a shared CI machine).
//!
//! Needs root and nftables, conntrack and conntrackd (`apt-get install -y nftables conntrack
//! conntrackd`; CI installs them): without them it says why and skips.

use std::path::PathBuf;
use std::process::{Command, Output};

use host::lab::{kernel, netns};

const EXE: &str = env!("CARGO_BIN_EXE_clusterd");

/// The lab, removed when the test ends, also on a failure.
struct Lab(String, PathBuf);

impl Drop for Lab {
    fn drop(&mut self) {
        kernel::down(&self.0, &self.1);
    }
}

fn lab(prefix: &str, args: &[&str]) -> Output {
    Command::new(EXE)
        .args(["lab", "--prefix", prefix])
        .args(args)
        .output()
        .expect("clusterd")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn lab_run_on_the_kernel_baseline_reports_and_down_cleans_up() {
    if let Err(e) = kernel::preflight() {
        eprintln!("SKIP lab_run_on_the_kernel_baseline_reports_and_down_cleans_up: {e}");
        return;
    }
    let prefix = format!("kr{}", std::process::id() % 100_000);
    let dir = netns::default_dir(&prefix);
    kernel::down(&prefix, &dir);
    let _guard = Lab(prefix.clone(), dir.clone());

    let up = lab(&prefix, &["up", "--baseline", "kernel", "--nodes", "3"]);
    assert!(
        up.status.success(),
        "lab up --baseline kernel: {}",
        text(&up)
    );

    // the lab is the kernel's: asking for ours is refused before any traffic
    let wrong = lab(&prefix, &["run", "--baseline", "none", "--duration", "2"]);
    assert!(!wrong.status.success(), "{}", text(&wrong));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("is the kernel baseline"),
        "{}",
        text(&wrong)
    );

    let run = lab(
        &prefix,
        &[
            "run",
            "--baseline",
            "kernel",
            "--connections",
            "30",
            "--bulk",
            "1",
            "--duration",
            "6",
            "--kill",
            "2@2",
            "--json",
        ],
    );
    assert!(
        run.status.success(),
        "lab run --baseline kernel: {}",
        text(&run)
    );
    let r: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}): {}", text(&run)));
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    assert_eq!(r["backend"], "kernel", "{r}");
    assert_eq!(r["nodes"], 3, "{r}");
    assert!(
        r["opened"].as_u64().unwrap_or(0) > 0,
        "connections opened: {r}"
    );
    let events = r["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{r}");
    assert_eq!(events[0]["event"]["event"], "kill", "{r}");
    assert_eq!(events[0]["event"]["node"], 2, "{r}");
    assert!(
        events[0]["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("conntrackd SIGKILLed")),
        "the kill was carried out: {r}"
    );
    for key in [
        "completed",
        "reset",
        "stalled",
        "longest_stall_ms",
        "frames_lost",
        "sync_bytes",
        "cpu_ms",
        "background_longest_delay_ms",
    ] {
        assert!(r[key].is_number(), "{key} in the report: {r}");
    }
    assert!(
        r["notes"].as_array().is_some_and(|n| !n.is_empty()),
        "the report says what differs for the kernel: {r}"
    );

    let down = lab(&prefix, &["down"]);
    assert!(down.status.success(), "lab down: {}", text(&down));
    assert!(
        netns::namespaces(&prefix).is_empty(),
        "namespaces left after down: {:?}",
        netns::namespaces(&prefix)
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
}
