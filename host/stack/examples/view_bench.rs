//! The table views under load: fills a 2-member cluster's common tables with ENTRIES
//! synthesized connections (1,000,000 by default), streams node 1's whole common table
//! through its control socket (`clusterd ctl dump --table common`), and prints the entries
//! per second, node 1's resident memory before and at its peak during the dump (from
//! /proc), and whether node 1 stayed live meanwhile: its peer kept hearing its heartbeats
//! (the longest silence seen), no epoch changed (no failover) and no log line declared a
//! node failed. The target is 500,000 entries/s; nothing is asserted.
//!
//! ```text
//! cargo build --release -p host --bin clusterd
//! cargo run --release -p host --example view_bench [-- ENTRIES]
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use host::core::ids::NodeId;
use host::daemon::control::ControlClient;
use host::daemon::protocol::{Request, Response, TableName};
use host::lab::cluster::{Cluster, Layout};
use serde_json::Value;

fn clusterd() -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    // target/<profile>/examples/view_bench -> target/<profile>/clusterd
    let exe = me
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("clusterd"))
        .expect("target directory");
    assert!(
        exe.exists(),
        "{} is missing: build it first (cargo build --release -p host --bin clusterd)",
        exe.display()
    );
    exe
}

/// A /proc/PID/status figure in kB (VmRSS, VmHWM).
fn proc_kb(pid: u64, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.trim_start_matches(':').split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Streams node `sock`'s table; (entries, seconds, the end line).
async fn dump(
    sock: &Path,
    table: TableName,
    filter: Option<host::filter::Filter>,
) -> (u64, f64, Value) {
    let mut c = ControlClient::connect(sock).await.expect("connect");
    let t0 = Instant::now();
    let req = Request::TableDump {
        filter,
        limit: None,
        table: Some(table),
    };
    match c
        .start_stream(&req, Duration::from_secs(30))
        .await
        .expect("dump")
    {
        Response::StreamStart(_) => {}
        other => panic!("dump refused: {other:?}"),
    }
    let mut n = 0u64;
    loop {
        let line = c.next_line().await.expect("read").expect("the end line");
        if line.starts_with("{\"end\"") {
            let end: Value = serde_json::from_str(&line).expect("end line");
            return (n, t0.elapsed().as_secs_f64(), end);
        }
        n += 1;
    }
}

fn main() {
    let entries: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ENTRIES is a number"))
        .unwrap_or(1_000_000);
    let rt = host::lab::runtime().expect("runtime");
    let dir = host::lab::fresh_dir("view-bench");
    rt.block_on(async {
        // failure detection at 1 s: filling a million entries on a loaded 2-core machine
        // stalls debug and release nodes alike for longer than the 200 ms default (a
        // failover while filling costs a resync, not a wrong figure); the dumps are judged
        // by the longest silence the peer saw, against the 50 ms heartbeat
        let layout = Layout {
            members: 2,
            card_capacity: 65_536,
            extra: "failure_ms = 1000\n".into(),
            ..Layout::default()
        };
        let mut c = Cluster::launch(&dir, &layout, &clusterd(), 2, Duration::from_secs(60))
            .await
            .expect("cluster");
        let ids = [NodeId(1), NodeId(2)];
        let t0 = Instant::now();
        for id in ids {
            let r = c
                .call_timeout(
                    id,
                    Request::Synthesize {
                        first: None,
                        flows: Some(entries),
                    },
                    Duration::from_secs(3600),
                )
                .await
                .expect("synthesize");
            assert!(matches!(r, Response::Synthesized(_)), "{r:?}");
        }
        // replication done: both common tables hold (nearly) every entry, and stay so
        let mut last = Vec::new();
        loop {
            let st = c.statuses().await;
            let now: Vec<u64> = st.values().map(|v| u(&v["common_entries"])).collect();
            if now.len() == 2 && now[0] == now[1] && now[0] >= entries * 99 / 100 && now == last {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(3600), "replication: {now:?}");
            last = now;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!(
            "filled: {} entries in each common table in {:.1} s",
            last[0],
            t0.elapsed().as_secs_f64()
        );
        c.wait_settled(Duration::from_secs(120)).await.expect("settled");
        let failures = |dir: &Path| -> usize {
            ids.iter()
                .map(|i| {
                    std::fs::read_to_string(dir.join(format!("node{}.log", i.0)))
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| l.contains("failed (silent") || l.contains("fenced: true"))
                        .count()
                })
                .sum()
        };
        let failures_before = failures(&dir);
        let before = c.statuses().await;
        let pid = u(&before[&NodeId(1)]["pid"]);
        let rss_before = proc_kb(pid, "VmRSS");
        let epochs: Vec<u64> = ids.iter().map(|i| u(&before[i]["epoch"])).collect();

        // sample node 1's memory while it dumps
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_before));
        let sampler = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(proc_kb(pid, "VmRSS"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        // and whether its peer keeps hearing it
        let sock1 = c.nodes[&NodeId(1)].control.clone();
        let sock2 = c.nodes[&NodeId(2)].control.clone();
        let watcher = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut worst = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Response::Status(v)) = host::daemon::control::call_once(
                        &sock2,
                        &Request::Status,
                        Duration::from_secs(2),
                    )
                    .await
                    {
                        for p in v["peers"].as_array().into_iter().flatten() {
                            if p["node"] == 1 {
                                worst = worst.max(u(&p["last_heard_ms"]));
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                worst
            })
        };
        let (n, secs, end) = dump(&sock1, TableName::Common, None).await;
        let (nf, secs_f, _) = dump(
            &sock1,
            TableName::Common,
            Some(host::filter::Filter {
                src: "10.0.0.0/12".parse().ok(),
                dport: Some(443),
                ..Default::default()
            }),
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        let silent = watcher.await.unwrap_or(u64::MAX);
        let after = c.statuses().await;
        let epochs_after: Vec<u64> = ids.iter().map(|i| u(&after[i]["epoch"])).collect();
        let failed_lines = failures(&dir) - failures_before;
        let peak = peak.load(Ordering::Relaxed);
        println!(
            "dump --table common: {n} entries in {secs:.2} s = {:.0} entries/s (node side {} ms; target 500000)",
            n as f64 / secs,
            u(&end["took_ms"])
        );
        println!(
            "dump --src 10.0.0.0/12 --dport 443: {nf} of {} entries in {secs_f:.2} s = {:.0} entries scanned/s",
            last[0],
            last[0] as f64 / secs_f
        );
        println!(
            "node 1 RSS: {} MiB before the dumps, {} MiB at the peak during them (+{} MiB); VmHWM {} MiB",
            rss_before / 1024,
            peak / 1024,
            peak.saturating_sub(rss_before) / 1024,
            proc_kb(pid, "VmHWM") / 1024
        );
        let live = epochs == epochs_after && failed_lines == 0 && silent < 1000;
        println!(
            "node 1 live during the dumps: {} (longest silence node 2 saw: {silent} ms, failure \
             detection at 1000 ms, heartbeats every 50 ms; epochs {epochs:?} -> {epochs_after:?}; {failed_lines} \
             failure lines in the logs meanwhile)",
            if live { "yes" } else { "NO" }
        );
        c.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
