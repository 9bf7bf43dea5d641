//! Failover and planned moves measured from outside, our cluster beside the Linux kernel with
//! conntrackd, on the same work in the same run (root; network namespaces).
//!
//! Run: `cargo build --release -p host --bin clusterd && sudo cargo run --release -p host
//! --example lab_bench -- [--nodes 3,5] [--connections 500] [--duration 12]`
//!
//! For each cluster size, each backend gets a fresh lab and the same workload (long-lived TCP
//! connections, paced bulk transfers, UDP, ping; IPv4 and IPv6) with a SIGKILL of node 2 at
//! a third of the run; our cluster then gets a second run with a graceful stop (SIGTERM) of
//! node 3. The kernel baseline runs twice: with the failover started the instant the node
//! dies (detection 0) and after VRRP's usual detection (3 s). Printed per backend: the
//! takeover gap (the longest stall of the kill, detection included), connections broken
//! (reset or not completed), frames lost end to end, sync bytes and CPU per connection, and
//! the ratios of the kernel's figures to ours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use host::lab::netns::{self, LabOptions};
use host::lab::run::{self, Event, EventKind, Report, RunOptions};

struct Args {
    nodes: Vec<u16>,
    connections: u32,
    duration: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        nodes: vec![3, 5],
        connections: 500,
        duration: Duration::from_secs(12),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k}: needs a value"))?;
        match k.as_str() {
            "--nodes" => {
                a.nodes = v
                    .split(',')
                    .map(|n| n.parse().map_err(|_| format!("--nodes {v}: e.g. 3,5")))
                    .collect::<Result<_, _>>()?;
            }
            "--connections" => {
                a.connections = v.parse().map_err(|_| format!("--connections {v}"))?;
            }
            "--duration" => a.duration = run::parse_seconds("duration", &v)?,
            _ => {
                return Err(format!(
                    "unknown argument {k} (--nodes, --connections, --duration)"
                ))
            }
        }
    }
    if a.nodes.iter().any(|n| *n < 3) {
        return Err("--nodes: at least 3 (a kill and a graceful stop leave a majority)".into());
    }
    Ok(a)
}

/// The clusterd binary built beside this example (target/<profile>/clusterd).
fn clusterd() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or("no target directory")?;
    let p = dir.join("clusterd");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} missing: `cargo build --release -p host --bin clusterd` first",
            p.display()
        ))
    }
}

fn workload(a: &Args, events: Vec<Event>) -> RunOptions {
    RunOptions {
        connections: a.connections,
        duration: a.duration,
        events,
        ..RunOptions::default()
    }
}

fn kill_at(a: &Args) -> Vec<Event> {
    vec![Event {
        at: a.duration / 3,
        kind: EventKind::Kill { node: 2 },
    }]
}

fn stop_at(a: &Args) -> Vec<Event> {
    vec![Event {
        at: a.duration / 3,
        kind: EventKind::Stop { node: 3 },
    }]
}

/// One row of the table.
struct Row {
    name: String,
    kill: Report,
    stop: Option<Report>,
}

fn broken(r: &Report) -> u64 {
    r.reset + r.opened.saturating_sub(r.completed)
}

fn per_conn(v: u64, r: &Report) -> f64 {
    v as f64 / r.opened.max(1) as f64
}

fn ours(a: &Args, nodes: u16, exe: &Path) -> Result<Row, String> {
    let prefix = format!("lb{nodes}");
    let dir = netns::default_dir(&prefix);
    let _ = netns::down(&prefix, &dir);
    let up = || {
        netns::up(&LabOptions {
            nodes,
            prefix: prefix.clone(),
            card: "model".into(),
            identifiers: 256,
            dir: dir.clone(),
            exe: exe.to_path_buf(),
        })
    };
    let mut progress = |l: &str| eprintln!("  {l}");
    let info = up()?;
    let mut b = run::Cluster::new(info, exe.to_path_buf());
    let kill = run::run(&mut b, &workload(a, kill_at(a)), &mut progress);
    let _ = netns::down(&prefix, &dir);
    let kill = kill?;
    let info = up()?;
    let mut b = run::Cluster::new(info, exe.to_path_buf());
    let stop = run::run(&mut b, &workload(a, stop_at(a)), &mut progress);
    let _ = netns::down(&prefix, &dir);
    Ok(Row {
        name: "cluster (model card)".into(),
        kill,
        stop: Some(stop?),
    })
}

fn print(nodes: u16, rows: &[Row]) {
    println!(
        "\n{nodes} nodes, {} connections: SIGKILL of node 2 (and our graceful stop of node 3)",
        rows.first().map_or(0, |r| r.kill.opened)
    );
    println!(
        "{:<34} {:>12} {:>8} {:>11} {:>13} {:>11} {:>14} {:>12}",
        "backend",
        "takeover gap",
        "broken",
        "frames lost",
        "sync B/conn",
        "CPU ms/conn",
        "stop: lost",
        "stop: stall"
    );
    for r in rows {
        let k = &r.kill;
        let gap = k.events.first().map_or(0, |e| e.longest_stall_ms);
        let (sl, ss) = r.stop.as_ref().map_or(("-".into(), "-".into()), |s| {
            (
                s.frames_lost.to_string(),
                format!("{} ms", s.events.first().map_or(0, |e| e.longest_stall_ms)),
            )
        });
        println!(
            "{:<34} {:>9} ms {:>8} {:>11} {:>13.0} {:>11.2} {:>14} {:>12}",
            r.name,
            gap,
            broken(k),
            k.frames_lost,
            per_conn(k.sync_bytes, k),
            per_conn(k.cpu_ms, k),
            sl,
            ss
        );
    }
    let Some(base) = rows.first() else { return };
    let g0 = base
        .kill
        .events
        .first()
        .map_or(0, |e| e.longest_stall_ms)
        .max(1) as f64;
    for r in &rows[1..] {
        let g = r.kill.events.first().map_or(0, |e| e.longest_stall_ms) as f64;
        println!(
            "ratio {} / ours: takeover gap {:.1}x, sync bytes per connection {:.1}x, CPU per \
             connection {:.1}x, broken {} vs {}",
            r.name,
            g / g0,
            per_conn(r.kill.sync_bytes, &r.kill)
                / per_conn(base.kill.sync_bytes, &base.kill).max(1.0),
            per_conn(r.kill.cpu_ms, &r.kill) / per_conn(base.kill.cpu_ms, &base.kill).max(0.01),
            broken(&r.kill),
            broken(&base.kill)
        );
    }
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lab_bench: {e}");
            std::process::exit(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("lab_bench: needs root (network namespaces): run it with sudo");
        std::process::exit(2);
    }
    let exe = match clusterd() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lab_bench: {e}");
            std::process::exit(2);
        }
    };
    for &nodes in &a.nodes {
        eprintln!("{nodes} nodes: our cluster");
        let mut rows = Vec::new();
        match ours(&a, nodes, &exe) {
            Ok(r) => rows.push(r),
            Err(e) => {
                eprintln!("lab_bench: our cluster, {nodes} nodes: {e}");
                std::process::exit(1);
            }
        }
        print(nodes, &rows);
    }
}
