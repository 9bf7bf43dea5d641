//! Failover and planned moves measured from outside, our cluster beside the Linux kernel with
//! conntrackd (`clusterd lab run` and `clusterd lab run --baseline kernel`), on the same work
//! and the same schedule (root; network namespaces; nftables, conntrack and conntrackd for the
//! kernel).
//!
//! Run: `cargo build --release -p host --bin clusterd && sudo cargo run --release -p host
//! --example lab_bench -- [--nodes 3,5] [--connections 500] [--duration 12] [--vrrp-ms 3000]
//! [--json]`
//!
//! For each cluster size, every run gets a fresh lab and the same workload (long-lived TCP
//! message connections, paced bulk transfers, UDP, ping; IPv4 and IPv6) with one event at a
//! third of the run: a SIGKILL of node 2, or a graceful stop of node 3. Our cluster and the
//! kernel each run both; the kernel's kill runs twice, with the failover started the instant
//! the node dies (detection 0) and after VRRP's usual detection (`--vrrp-ms`, 3 s). Printed
//! per run: the takeover gap (the longest wait of any connection that began at the event,
//! stall or not), the longest stall (over 500 ms), connections opened, reset, broken (not
//! completed) and stalled, frames lost end to end, sync bytes and CPU ms per connection,
//! the client's TCP retransmissions in the event's window; then the ratios kernel / ours.
//! Five runs a size, each bounded by its duration plus a few seconds of grace and its lab's
//! set-up (at most about a minute).

use std::path::{Path, PathBuf};
use std::time::Duration;

use host::lab::kernel::{self, KernelLab, KernelOptions};
use host::lab::netns::{self, LabOptions};
use host::lab::run::{self, Event, EventKind, Report, RunOptions};
use host::lab::DownOnDrop;
use serde_json::{json, Value};

struct Args {
    nodes: Vec<u16>,
    connections: u32,
    duration: Duration,
    vrrp: Duration,
    json: bool,
}

const USAGE: &str = "--nodes 3,5 --connections 500 --duration 12 --vrrp-ms 3000 --json";

fn args() -> Result<Args, String> {
    let mut a = Args {
        nodes: vec![3, 5],
        connections: 500,
        duration: Duration::from_secs(12),
        vrrp: Duration::from_secs(3),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--json" {
            a.json = true;
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{k}: needs a value ({USAGE})"))?;
        match k.as_str() {
            "--nodes" => {
                a.nodes = v
                    .split(',')
                    .map(|n| n.parse().map_err(|_| format!("--nodes {v}: e.g. 3,5")))
                    .collect::<Result<_, _>>()?;
            }
            "--connections" => {
                a.connections = v
                    .parse()
                    .ok()
                    .filter(|c| (1..=5000).contains(c))
                    .ok_or_else(|| format!("--connections {v}: 1 to 5000"))?;
            }
            "--duration" => {
                a.duration = run::parse_seconds("duration", &v)?;
                if !(Duration::from_secs(6)..=Duration::from_secs(120)).contains(&a.duration) {
                    return Err(format!("--duration {v}: 6 to 120 seconds"));
                }
            }
            "--vrrp-ms" => {
                let ms: u64 = v
                    .parse()
                    .ok()
                    .filter(|m| *m <= 10_000)
                    .ok_or_else(|| format!("--vrrp-ms {v}: 0 to 10000"))?;
                a.vrrp = Duration::from_millis(ms);
            }
            _ => return Err(format!("unknown argument {k} ({USAGE})")),
        }
    }
    if a.nodes.iter().any(|n| !(3..=netns::MAX_NODES).contains(n)) {
        return Err(format!(
            "--nodes: 3 to {} (a kill and a graceful stop leave a majority)",
            netns::MAX_NODES
        ));
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum What {
    Kill,
    Stop,
}

impl What {
    fn name(self) -> &'static str {
        match self {
            What::Kill => "kill",
            What::Stop => "stop",
        }
    }
}

fn workload(a: &Args, what: What) -> RunOptions {
    let kind = match what {
        What::Kill => EventKind::Kill { node: 2 },
        What::Stop => EventKind::Stop { node: 3 },
    };
    RunOptions {
        connections: a.connections,
        duration: a.duration,
        events: vec![Event {
            at: a.duration / 3,
            kind,
        }],
        ..RunOptions::default()
    }
}

fn progress(l: &str) {
    eprintln!("  {l}");
}

fn ours(a: &Args, nodes: u16, exe: &Path, what: What) -> Result<Report, String> {
    let prefix = format!("lb{nodes}");
    let dir = netns::default_dir(&prefix);
    let _ = netns::down(&prefix, &dir);
    let _guard = DownOnDrop::ours(&prefix, &dir);
    let info = netns::up(&LabOptions {
        nodes,
        prefix: prefix.clone(),
        card: "model".into(),
        identifiers: 256,
        dir: dir.clone(),
        exe: exe.to_path_buf(),
    })?;
    let mut b = run::Cluster::new(info, exe.to_path_buf());
    run::run(&mut b, &workload(a, what), &mut progress)
}

fn theirs(a: &Args, nodes: u16, detect: Duration, what: What) -> Result<Report, String> {
    let prefix = format!("lk{nodes}");
    let dir = netns::default_dir(&prefix);
    kernel::down(&prefix, &dir);
    let _guard = DownOnDrop::kernel(&prefix, &dir);
    let info = kernel::up(&KernelOptions {
        nodes,
        prefix: prefix.clone(),
        buckets: 256,
        dir: dir.clone(),
    })?;
    let mut b = KernelLab::new(info, detect)?;
    run::run(&mut b, &workload(a, what), &mut progress)
}

/// One run's figures.
struct Row {
    backend: String,
    detect_ms: Option<u64>,
    what: What,
    r: Report,
}

impl Row {
    fn gap(&self) -> u64 {
        self.r.events.first().map_or(0, |e| e.longest_delay_ms)
    }
    fn stall(&self) -> u64 {
        self.r.events.first().map_or(0, |e| e.longest_stall_ms)
    }
    fn broken(&self) -> u64 {
        self.r.opened.saturating_sub(self.r.completed)
    }
    fn per_conn(&self, v: u64) -> f64 {
        v as f64 / self.r.opened.max(1) as f64
    }
    fn sync(&self) -> f64 {
        self.per_conn(self.r.sync_bytes)
    }
    fn cpu(&self) -> f64 {
        self.per_conn(self.r.cpu_ms)
    }
    fn retrans(&self) -> u64 {
        self.r
            .events
            .first()
            .map_or(0, |e| e.client_retrans + e.server_retrans)
    }
    fn json(&self, nodes: u16) -> Value {
        json!({
            "nodes": nodes,
            "backend": self.backend,
            "detect_ms": self.detect_ms,
            "event": self.what.name(),
            "takeover_gap_ms": self.gap(),
            "longest_stall_ms": self.stall(),
            "opened": self.r.opened,
            "reset": self.r.reset,
            "broken": self.broken(),
            "stalled": self.r.stalled,
            "frames_lost": self.r.frames_lost,
            "sync_bytes_per_connection": self.sync(),
            "cpu_ms_per_connection": self.cpu(),
            "retransmissions": self.retrans(),
            "background_longest_delay_ms": self.r.background_longest_delay_ms,
            "report": self.r,
        })
    }
}

/// `a / b`, or None when `b` is 0 (a ratio that does not exist).
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn ratio_text(a: f64, b: f64) -> String {
    match ratio(a, b) {
        Some(0.0) => "0x".into(),
        Some(x) if x >= 0.95 => format!("{x:.1}x"),
        Some(x) if x >= 0.095 => format!("{x:.2}x"),
        Some(x) => format!("{x:.3}x"),
        None if a == 0.0 => "both 0".into(),
        None => "- (ours 0)".into(),
    }
}

fn table(nodes: u16, a: &Args, rows: &[Row]) -> String {
    let mut t = format!(
        "\n{nodes} nodes, {} connections (+2 bulk), {} s, the event at {:.1} s: SIGKILL of node 2 \
         or graceful stop of node 3\n",
        a.connections,
        a.duration.as_secs(),
        (a.duration / 3).as_secs_f64()
    );
    t += &format!(
        "{:<24} {:<5} {:>8} {:>9} {:>6} {:>5} {:>6} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8}\n",
        "backend",
        "event",
        "gap ms",
        "stall ms",
        "opened",
        "reset",
        "broken",
        "stalled",
        "frames",
        "sync B/c",
        "CPU ms/c",
        "retrans",
        "bg delay"
    );
    for r in rows {
        t += &format!(
            "{:<24} {:<5} {:>8} {:>9} {:>6} {:>5} {:>6} {:>7} {:>7} {:>8.0} {:>8.2} {:>7} {:>8}\n",
            r.backend,
            r.what.name(),
            r.gap(),
            r.stall(),
            r.r.opened,
            r.r.reset,
            r.broken(),
            r.r.stalled,
            r.r.frames_lost,
            r.sync(),
            r.cpu(),
            r.retrans(),
            r.r.background_longest_delay_ms
        );
    }
    for (k, o) in pairs(rows) {
        t += &format!(
            "{} / ours, {}: takeover gap {}, longest stall {}, reset {} vs {}, broken {} vs {}, \
             stalled {} vs {}, frames lost {} vs {}, sync B/conn {}, CPU ms/conn {}\n",
            k.backend,
            k.what.name(),
            ratio_text(k.gap() as f64, o.gap() as f64),
            ratio_text(k.stall() as f64, o.stall() as f64),
            k.r.reset,
            o.r.reset,
            k.broken(),
            o.broken(),
            k.r.stalled,
            o.r.stalled,
            k.r.frames_lost,
            o.r.frames_lost,
            ratio_text(k.sync(), o.sync()),
            ratio_text(k.cpu(), o.cpu()),
        );
    }
    t
}

/// Every kernel run with our run of the same event.
fn pairs(rows: &[Row]) -> Vec<(&Row, &Row)> {
    rows.iter()
        .filter(|k| k.detect_ms.is_some())
        .filter_map(|k| {
            rows.iter()
                .find(|o| o.detect_ms.is_none() && o.what == k.what)
                .map(|o| (k, o))
        })
        .collect()
}

fn ratios_json(nodes: u16, rows: &[Row]) -> Vec<Value> {
    pairs(rows)
        .into_iter()
        .map(|(k, o)| {
            json!({
                "nodes": nodes,
                "event": k.what.name(),
                "kernel": k.backend,
                "takeover_gap": ratio(k.gap() as f64, o.gap() as f64),
                "longest_stall": ratio(k.stall() as f64, o.stall() as f64),
                "reset": [k.r.reset, o.r.reset],
                "broken": [k.broken(), o.broken()],
                "stalled": [k.r.stalled, o.r.stalled],
                "frames_lost": [k.r.frames_lost, o.r.frames_lost],
                "sync_bytes_per_connection": ratio(k.sync(), o.sync()),
                "cpu_ms_per_connection": ratio(k.cpu(), o.cpu()),
            })
        })
        .collect()
}

fn bench(a: &Args, nodes: u16, exe: &Path) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let vrrp = a.vrrp.as_millis() as u64;
    for what in [What::Kill, What::Stop] {
        eprintln!("{nodes} nodes, our cluster, {}", what.name());
        let r = ours(a, nodes, exe, what).map_err(|e| format!("our cluster: {e}"))?;
        rows.push(Row {
            backend: "cluster (model card)".into(),
            detect_ms: None,
            what,
            r,
        });
        let detects: &[u64] = if what == What::Kill { &[0, vrrp] } else { &[0] };
        for &d in detects {
            eprintln!(
                "{nodes} nodes, the kernel, {} (detection {d} ms)",
                what.name()
            );
            let r = theirs(a, nodes, Duration::from_millis(d), what)
                .map_err(|e| format!("the kernel baseline: {e}"))?;
            rows.push(Row {
                backend: if what == What::Kill {
                    format!("kernel (detect {d} ms)")
                } else {
                    "kernel".into()
                },
                detect_ms: Some(d),
                what,
                r,
            });
        }
    }
    Ok(rows)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lab_bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = kernel::preflight() {
        eprintln!("lab_bench: {e}");
        std::process::exit(2);
    }
    let exe = match clusterd() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lab_bench: {e}");
            std::process::exit(2);
        }
    };
    let (mut runs, mut ratios) = (Vec::new(), Vec::new());
    for &nodes in &a.nodes {
        let rows = match bench(&a, nodes, &exe) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("lab_bench: {nodes} nodes: {e}");
                std::process::exit(1);
            }
        };
        if a.json {
            runs.extend(rows.iter().map(|r| r.json(nodes)));
            ratios.extend(ratios_json(nodes, &rows));
        } else {
            print!("{}", table(nodes, &a, &rows));
        }
    }
    if a.json {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        println!(
            "{}",
            json!({
                "unix_time": unix,
                "connections": a.connections,
                "duration_ms": a.duration.as_millis() as u64,
                "runs": runs,
                "ratios": ratios,
            })
        );
    } else {
        println!(
            "\ngap: the longest wait of any connection that began at the event (stall or not); \
             stall: over 500 ms; broken: opened, not completed; frames: lost end to end \
             (negative: duplicated); sync B/c and CPU ms/c: per TCP connection opened; retrans: \
             the client's and server's TCP retransmissions in the event's window; bg delay: \
             the longest wait before the event. The kernel's CPU is its conntrackd processes \
             only (its forwarding runs in softirq, unattributed); ours is the clusterd \
             processes, which forward in user space with a model card."
        );
    }
}
