//! `clusterd demo`: a whole cluster as separate processes on loopback, traffic through the wire,
//! faults on a schedule, and the report (keys documented in `docs/clusterd.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::cluster::{Cluster, Layout, WITNESS_ID};
use super::svg::{self, Mark, Sample};
use super::traffic::{self, KillMark, Source, Wire};
use crate::core::ids::NodeId;
use crate::core::member::esp::SaMaterial;
use crate::daemon::node::unix_ms;
use crate::daemon::protocol::{AllocationReply, Request, Response, SaDir, SecretHex};

/// How long before a partition or a freeze a packet may still be on its way to the node or in
/// its socket's queue (a loaded 2-core machine delays a node's loop by tens of ms): such a
/// packet is answered after the fault, and counts in the fault's gap.
const IN_FLIGHT_MS: u64 = 60;

/// A line on standard output that ends quietly when the reader went away (`crate::out`).
macro_rules! out {
    ($($arg:tt)*) => {
        crate::out::line(format_args!($($arg)*))
    };
}

/// Command-line arguments of `clusterd demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Members present from the start (a 2-member cluster gets a witness, id 99).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Card backend of every node.
    #[arg(long, default_value = "model")]
    pub card: String,
    /// Replay the IP packets of this pcap file (looped) instead of generated flows.
    #[arg(long, conflicts_with = "flows")]
    pub pcap: Option<PathBuf>,
    /// Concurrent generated flows (80% TCP, 20% UDP; each 10-40 packets, replaced when done).
    #[arg(long)]
    pub flows: Option<usize>,
    /// Packets per second on the wire.
    #[arg(long, default_value_t = 2000)]
    pub pps: u64,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 8.0)]
    pub duration: f64,
    /// SIGKILL node NODE (or `leader`: whichever node leads then) at SECONDS after traffic
    /// starts (repeatable).
    #[arg(long = "kill", value_name = "NODE@SECONDS")]
    pub kill: Vec<String>,
    /// Start node NODE (an id above --nodes) at SECONDS; it joins as a non-voting member.
    #[arg(long = "join", value_name = "NODE@SECONDS")]
    pub join: Vec<String>,
    /// Restart a killed node NODE at SECONDS (it resyncs, then takes identifiers again).
    #[arg(long = "restart", value_name = "NODE@SECONDS")]
    pub restart: Vec<String>,
    /// Cut node NODE off from all others (both directions, in every node's fault-injecting
    /// transport) from START to END seconds (repeatable).
    #[arg(long = "partition", value_name = "NODE@START-END")]
    pub partition: Vec<String>,
    /// Freeze node NODE (SIGSTOP) from START to END seconds, then let it go on (SIGCONT), as a
    /// stalled process or VM does (repeatable).
    #[arg(long = "stop", value_name = "NODE@START-END")]
    pub stop: Vec<String>,
    /// Ask the leader to load-balance (by reported packet load, else entry counts) at half
    /// time.
    #[arg(long)]
    pub rebalance: bool,
    /// Skewed traffic: N long-lived heavy flows carry 80% of the packets, all starting on the
    /// first node (each of its own identifier), and automatic load balancing runs every second; the report's `balance` shows the imbalance before and
    /// after and the moves made (0: off).
    #[arg(long, value_name = "N", default_value_t = 0, conflicts_with = "pcap")]
    pub skew: usize,
    /// Run without the default fault (kill node 2 at 40% of the run) when none is given.
    #[arg(long)]
    pub no_faults: bool,
    /// Print the report as compact JSON only (one line).
    #[arg(short = 'j', long)]
    pub json: bool,
    /// Print the report as pretty JSON only.
    #[arg(short = 'p', long)]
    pub pretty: bool,
    /// Draw ownership and card occupancy over time into this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Distribution identifiers.
    #[arg(long, default_value_t = 256)]
    pub identifiers: u32,
    /// CAM entries per card before the software overflow.
    #[arg(long, default_value_t = 4096)]
    pub card_capacity: usize,
    /// ESP SAs to install and advance (their sequence numbers are checked across takeovers).
    #[arg(long, default_value_t = 4)]
    pub sas: u32,
    /// Working directory (configs, sockets, logs); default a fresh temporary one, removed after.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Keep the working directory.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Kill(NodeId),
    KillLeader,
    Partition(NodeId),
    Heal(NodeId),
    Stop(NodeId),
    Cont(NodeId),
    Join(NodeId),
    Restart(NodeId),
    Rebalance,
}

/// `NODE@START-END` of `--what`.
fn parse_span(p: &str, what: &str) -> Result<(NodeId, f64, f64), String> {
    let fix = format!("write --{what} NODE@START-END, e.g. --{what} 3@2-4");
    let (n, span) = p
        .split_once('@')
        .ok_or_else(|| format!("--{what} {p:?}: no '@'; {fix}"))?;
    let (a, b) = span
        .split_once('-')
        .ok_or_else(|| format!("--{what} {p:?}: no '-'; {fix}"))?;
    let (n, start) = parse_at(&format!("{n}@{a}"), what)?;
    let (_, end) = parse_at(&format!("{}@{b}", n.0), what)?;
    if end <= start {
        return Err(format!("--{what} {p:?}: END must be after START; {fix}"));
    }
    Ok((n, start, end))
}

fn parse_at(s: &str, what: &str) -> Result<(NodeId, f64), String> {
    let fix = format!("write --{what} NODE@SECONDS, e.g. --{what} 2@3.5");
    let (n, t) = s
        .split_once('@')
        .ok_or_else(|| format!("--{what} {s:?}: no '@'; {fix}"))?;
    let n: u16 = n
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("--{what} {s:?}: {n:?} is not a node id; {fix}"))?;
    let t: f64 = t
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| format!("--{what} {s:?}: {t:?} is not a time in seconds; {fix}"))?;
    Ok((NodeId(n), t))
}

fn vu(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// When a node's applied epoch was complete: every gained identifier taking traffic (after the
/// previous owners' final state arrived), at least the time it was applied.
fn done_ms(applied: &Value) -> u64 {
    vu(&applied["at_unix_ms"]).max(vu(&applied["complete_unix_ms"]))
}

/// Why the demo failed, and so its exit status ([`DemoError::exit_code`]).
#[derive(Debug, Clone, PartialEq)]
pub enum DemoError {
    /// Bad arguments, found before any process started (exit status 2).
    Usage(String),
    /// The run itself failed: a cluster that did not come up, a file (exit status 1).
    Run(String),
    /// The run finished, but figures of the report that must be 0 are not (exit status 1);
    /// the report was printed.
    Violations(Vec<String>),
}

impl DemoError {
    /// The process exit status for this error: 2 for bad arguments, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DemoError::Usage(_) => 2,
            DemoError::Run(_) | DemoError::Violations(_) => 1,
        }
    }
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::Usage(m) | DemoError::Run(m) => f.write_str(m),
            DemoError::Violations(v) => write!(
                f,
                "the report shows violations: {}; the node logs (--keep --workdir DIR) tell \
                 what happened",
                v.join(", ")
            ),
        }
    }
}

impl From<String> for DemoError {
    fn from(m: String) -> Self {
        DemoError::Run(m)
    }
}

/// The figures of a demo report that must be 0 (or hold), as `name = value` for every one that
/// does not: `double_handled`, `established_without_state`, `two_owner_conflicts`,
/// `owners_agree` (must be true), `table_problems` (must be empty), `esp.outbound_seq_reused`,
/// and `esp.replays_accepted` outside crash windows (`replays_accepted` −
/// `replays_accepted_in_crash_window`). Empty for a clean run.
pub fn violations(report: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for key in [
        "double_handled",
        "established_without_state",
        "two_owner_conflicts",
    ] {
        let n = vu(&report[key]);
        if n != 0 {
            v.push(format!("{key} = {n}"));
        }
    }
    if report["owners_agree"] == json!(false) {
        v.push("owners_agree = false".into());
    }
    let problems = report["table_problems"].as_array().map_or(0, Vec::len);
    if problems != 0 {
        v.push(format!("table_problems = {problems}"));
    }
    let reused = vu(&report["esp"]["outbound_seq_reused"]);
    if reused != 0 {
        v.push(format!("esp.outbound_seq_reused = {reused}"));
    }
    let outside = vu(&report["esp"]["replays_accepted"])
        .saturating_sub(vu(&report["esp"]["replays_accepted_in_crash_window"]));
    if outside != 0 {
        v.push(format!(
            "esp.replays_accepted outside crash windows = {outside}"
        ));
    }
    v
}

/// What the demo will do, checked before any process starts.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    schedule: Vec<(f64, Action)>,
    joiners: Vec<u16>,
}

/// Checks the arguments and turns the fault options into one schedule sorted by time. Every
/// error names the flag and the fix.
fn plan(args: &DemoArgs) -> Result<Plan, String> {
    if args.nodes == 0 || args.nodes > 16 {
        return Err(format!(
            "--nodes {}: between 1 and 16; fix: e.g. --nodes 3",
            args.nodes
        ));
    }
    if args.pps == 0 || args.pps > 200_000 {
        return Err(format!(
            "--pps {}: between 1 and 200000; fix: e.g. --pps 2000",
            args.pps
        ));
    }
    if !(0.5..=600.0).contains(&args.duration) {
        return Err(format!(
            "--duration {}: between 0.5 and 600 seconds; fix: e.g. --duration 8",
            args.duration
        ));
    }
    if let Some(f) = args.flows {
        if f == 0 || f > 100_000 {
            return Err(format!(
                "--flows {f}: between 1 and 100000 concurrent flows; fix: e.g. --flows 300 \
                 (the default)"
            ));
        }
    }
    if crate::core::ids::IdCount::new(args.identifiers).is_err() {
        return Err(format!(
            "--identifiers {}: a power of two from 1 to 4096; fix: e.g. --identifiers 256",
            args.identifiers
        ));
    }
    if args.skew > 64 {
        return Err(format!(
            "--skew {}: at most 64 heavy flows; fix: e.g. --skew 3",
            args.skew
        ));
    }
    if args.card_capacity == 0 {
        return Err(
            "--card-capacity 0: a card holds at least 1 entry; fix: e.g. \
                    --card-capacity 4096"
                .into(),
        );
    }
    let mut schedule: Vec<(f64, Action, String)> = Vec::new();
    for k in &args.kill {
        if let Some(t) = k.strip_prefix("leader@") {
            let (_, t) = parse_at(&format!("1@{t}"), "kill")?;
            schedule.push((t, Action::KillLeader, format!("--kill {k}")));
            continue;
        }
        let (n, t) = parse_at(k, "kill")?;
        schedule.push((t, Action::Kill(n), format!("--kill {k}")));
    }
    let mut joiners = Vec::new();
    for j in &args.join {
        let (n, t) = parse_at(j, "join")?;
        if n.0 <= args.nodes || n.0 == WITNESS_ID {
            return Err(format!(
                "--join {j}: node {} exists from the start; fix: join a new id above --nodes {}",
                n.0, args.nodes
            ));
        }
        if joiners.contains(&n.0) {
            return Err(format!(
                "--join {j}: node {} joins twice; fix: one --join per new node (--restart \
                 starts it again after a --kill)",
                n.0
            ));
        }
        joiners.push(n.0);
        schedule.push((t, Action::Join(n), format!("--join {j}")));
    }
    for r in &args.restart {
        let (n, t) = parse_at(r, "restart")?;
        schedule.push((t, Action::Restart(n), format!("--restart {r}")));
    }
    for p in &args.partition {
        let (n, start, end) = parse_span(p, "partition")?;
        schedule.push((start, Action::Partition(n), format!("--partition {p}")));
        schedule.push((end, Action::Heal(n), format!("--partition {p}")));
    }
    for p in &args.stop {
        let (n, start, end) = parse_span(p, "stop")?;
        if n.0 > args.nodes {
            return Err(format!(
                "--stop {p}: node {} does not run from the start (--nodes {}); fix: freeze \
                 one of nodes 1..={}",
                n.0, args.nodes, args.nodes
            ));
        }
        schedule.push((start, Action::Stop(n), format!("--stop {p}")));
        schedule.push((end, Action::Cont(n), format!("--stop {p}")));
    }
    if args.rebalance {
        schedule.push((args.duration / 2.0, Action::Rebalance, "--rebalance".into()));
    }
    if schedule.is_empty() && !args.no_faults && args.nodes >= 3 {
        schedule.push((
            (args.duration * 0.4 * 10.0).round() / 10.0,
            Action::Kill(NodeId(2)),
            "the default fault".into(),
        ));
    }
    schedule.sort_by(|a, b| a.0.total_cmp(&b.0));
    // every event within the run, on a node of the cluster, in an order that can happen: a
    // kill of a running node, a restart of a killed one
    let witness = args.nodes == 2;
    let known = |n: u16| n <= args.nodes || joiners.contains(&n) || (witness && n == WITNESS_ID);
    let mut running: BTreeSet<u16> = (1..=args.nodes).collect();
    if witness {
        running.insert(WITNESS_ID);
    }
    let mut leader_kills = 0usize;
    for (t, action, flag) in &schedule {
        if *t >= args.duration {
            return Err(format!(
                "{flag}: {t} s is not within the run (--duration {}); fix: a time below {}, \
                 or a longer --duration",
                args.duration, args.duration
            ));
        }
        let node = match action {
            Action::Kill(n)
            | Action::Restart(n)
            | Action::Partition(n)
            | Action::Heal(n)
            | Action::Stop(n)
            | Action::Cont(n)
            | Action::Join(n) => Some(n.0),
            Action::KillLeader | Action::Rebalance => None,
        };
        if let Some(n) = node {
            if !known(n) {
                let joiners_text = if joiners.is_empty() {
                    String::new()
                } else {
                    format!(" or a joining node ({joiners:?})")
                };
                return Err(format!(
                    "{flag}: node {n} is not in the cluster (--nodes {}); fix: one of nodes \
                     1..={}{joiners_text}, or add it with --join {n}@SECONDS",
                    args.nodes, args.nodes
                ));
            }
        }
        match action {
            // (the guard takes the node out of the running set)
            Action::Kill(n) if !running.remove(&n.0) => {
                return Err(format!(
                    "{flag}: node {} is not running at {t} s (not started yet, or killed \
                     before); fix: --restart {}@SECONDS it in between, or kill it once",
                    n.0, n.0
                ));
            }
            Action::KillLeader => leader_kills += 1,
            Action::Join(n) => {
                running.insert(n.0);
            }
            Action::Restart(n) => {
                if running.contains(&n.0) {
                    // a `leader` kill before may have been this node
                    if leader_kills == 0 {
                        return Err(format!(
                            "{flag}: node {} is running at {t} s (no --kill {} before); fix: \
                             --kill {}@SECONDS at an earlier time, or drop the --restart",
                            n.0, n.0, n.0
                        ));
                    }
                    leader_kills -= 1;
                } else {
                    running.insert(n.0);
                }
            }
            _ => {}
        }
    }
    Ok(Plan {
        schedule: schedule.into_iter().map(|(t, a, _)| (t, a)).collect(),
        joiners,
    })
}

/// Checks that `path` can be written, before the run, without touching an existing file (a
/// file created for the check is removed again).
fn check_writable(path: &std::path::Path, flag: &str) -> Result<(), String> {
    let existed = path.exists();
    if path.is_dir() {
        return Err(format!(
            "{flag} {}: is a directory; fix: name a file, e.g. {flag} run.svg",
            path.display()
        ));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| {
            format!(
                "{flag} {}: cannot write there: {e}; fix: a path in an existing directory you \
                 may write to",
                path.display()
            )
        })?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Runs the demo.
///
/// # Errors
/// Bad arguments (found before any process starts), a cluster that does not come up, or a
/// report with violations ([`violations`]; the report is printed first).
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let Plan { schedule, joiners } = plan(&args).map_err(DemoError::Usage)?;
    if let Some(p) = &args.svg {
        check_writable(p, "--svg").map_err(DemoError::Usage)?;
    }
    // open the card backend once here, so a bad spec fails before any process starts
    crate::daemon::card::open(&args.card, crate::core::ids::IdCount::default(), 16).map_err(
        |e| {
            DemoError::Usage(format!(
                "--card {}: {e}; fix: a device spec as hwctl --device takes (model, \
                 model:depth=N, verilator)",
                args.card
            ))
        },
    )?;
    let source = match &args.pcap {
        Some(p) => Source::Packets(traffic::load_pcap(p)?),
        None => Source::Flows {
            concurrent: args.flows.unwrap_or(300),
            seed: 7,
        },
    };
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the clusterd binary: {e}"))?;
    let (dir, temp) = match &args.workdir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "clusterd-demo-{}-{}",
                std::process::id(),
                unix_ms()
            )),
            true,
        ),
    };
    let layout = Layout {
        members: args.nodes,
        joiners: joiners.clone(),
        card: args.card.clone(),
        identifiers: args.identifiers,
        card_capacity: args.card_capacity,
        extra: if args.skew > 0 {
            super::skew::config_lines()
        } else {
            String::new()
        },
    };
    let mut cluster =
        Cluster::prepare(&dir, &layout, &exe).map_err(|e| format!("{}: {e}", dir.display()))?;
    let machine = args.json || args.pretty;
    let say = |s: String| {
        if !machine {
            out!("{s}");
        }
    };
    say(format!(
        "clusterd demo: {} members{}, card {}, {} pps for {:.1} s, working dir {}",
        args.nodes,
        if args.nodes == 2 { " + witness" } else { "" },
        args.card,
        args.pps,
        args.duration,
        dir.display()
    ));
    let initial: Vec<NodeId> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|n| !joiners.contains(&n.0))
        .collect();
    for n in &initial {
        cluster
            .start(*n)
            .map_err(|e| format!("cannot start node {}: {e}", n.0))?;
    }
    let settle = cluster.wait_settled(Duration::from_secs(30)).await;
    let first_epoch = match settle {
        Ok(e) => e,
        Err(e) => {
            cluster.shutdown().await;
            return Err(format!("{e}; node logs are in {}", dir.display()).into());
        }
    };
    say(format!(
        "cluster up: epoch {first_epoch}, leader {:?}",
        cluster.leader().await.map(|n| n.0)
    ));

    // ESP SAs: installed through node 1; every tick the owner seals outbound packets on its
    // engine and opens inbound ones from the tunnel peer (simulated here), plus one replay
    let mut esp = EspDemo::default();
    for i in 0..args.sas {
        // a tunnel: an outbound SA (the cluster seals) and an inbound SA (the peer seals),
        // each with its own SPI, key and salt (invariant 5)
        let out_spi = 0x1000 + i;
        let in_spi = 0x2000 + i;
        let peer_ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, (i + 1) as u8));
        let dst = std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1));
        let mut dist = None;
        for (spi, dir, seed) in [
            (out_spi, SaDir::Out, 0xfeed_0000u64),
            (in_spi, SaDir::In, 0xbeef_0000u64),
        ] {
            let key = zeroize::Zeroizing::new(format!(
                "{:064x}{:08x}",
                seed + u64::from(i),
                seed as u32 + i
            ));
            let req = Request::SaAdd {
                dir: Some(dir),
                dst: Some(dst),
                key: SecretHex::new(key.as_str()),
                peer: Some(peer_ip),
                spi,
            };
            let Ok(Response::SaAdded(added)) = cluster.call(NodeId(1), req).await else {
                break;
            };
            let mut kb = zeroize::Zeroizing::new(vec![0u8; key.len() / 2]);
            let dir = match dir {
                SaDir::Out => driver::esp::Direction::Outbound,
                SaDir::In => driver::esp::Direction::Inbound,
            };
            let st = crate::core::events::SaState {
                spi,
                dist: crate::core::ids::DistributionId(added.dist),
                dst,
                outbound_seq: 1,
                replay_top: 0,
                replay_bitmap: 0,
            };
            // the simulated tunnel peer runs the same SA the other way
            let installed = hex::decode_to_slice(key.as_str(), &mut kb[..]).is_ok()
                && SaMaterial::from_keymat(spi, dir, &kb)
                    .is_ok_and(|m| esp.peer.install(spi, &m.mirrored(), &st).is_ok());
            if !installed {
                break;
            }
            dist = Some(added.dist);
        }
        if let Some(d) = dist {
            esp.dist.insert(out_spi, usize::from(d));
            esp.inbound.insert(out_spi, in_spi);
        }
    }

    // --skew: the heavy flows all start on one node, each of its own identifier, so the
    // leader always has an imbalance to correct and a way to spread it
    let mut heavy_on = None;
    if args.skew > 0 {
        if let Some(first) = initial.first() {
            match cluster.allocation(*first).await {
                Ok(a) => heavy_on = Some((first.0, a.owners)),
                Err(e) => say(format!(
                    "--skew: allocation of node {}: {e}; heavy flows anywhere",
                    first.0
                )),
            }
        }
    }
    let mut taken = std::collections::BTreeSet::new();
    let dist = cluster.distributor().clone();
    let wire_addrs = cluster.nodes.values().filter_map(|s| s.wire).collect();
    let wire = Wire::new(wire_addrs, source)
        .await
        .map_err(|e| format!("wire: {e}"))?
        .with_heavy_flows(args.skew, |key| {
            let d = dist.for_key(key).index();
            let owned = heavy_on
                .as_ref()
                .is_none_or(|(n, owners)| owners.get(d).copied().flatten() == Some(*n));
            owned && taken.insert(d)
        });
    let sent = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(args.duration);
    let drain = Duration::from_millis(400);
    let t0 = Instant::now();
    let t0_unix = unix_ms();
    let wire_task = tokio::spawn(wire.run(args.pps, duration, drain, sent.clone()));

    let mut samples: Vec<Sample> = Vec::new();
    let mut marks: Vec<Mark> = Vec::new();
    let mut kills: Vec<(NodeId, u64, u64)> = Vec::new(); // node, t_ms, unix ms
    let mut partitions: Vec<(NodeId, u64)> = Vec::new(); // node, t_ms
    let mut last_sync: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
    let mut max_srtt_us = 0u64;
    let mut next = 0usize;
    // a frozen node (--stop) must not hold up the schedule: short control timeouts meanwhile
    cluster.set_call_timeout(Duration::from_millis(300));
    let mut next_sample = Duration::ZERO;
    let mut next_progress = Duration::from_secs(1);
    while t0.elapsed() < duration + drain {
        if crate::out::closed() {
            // nobody reads the progress or the report any more (`| head`): stop quietly
            wire_task.abort();
            cluster.shutdown().await;
            if temp && !args.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Ok(());
        }
        let el = t0.elapsed();
        while next < schedule.len() && el.as_secs_f64() >= schedule[next].0 {
            let (_, action) = schedule[next];
            next += 1;
            let t_ms = el.as_millis() as u64;
            // a mark on the timeline (`label`) and a progress line (`said`), both at now
            let mut mark = |label: String, said: String| {
                marks.push(Mark { t_ms, label });
                say(format!("[{:5.1}s] {said}", el.as_secs_f64()));
            };
            let action = match action {
                Action::KillLeader => match cluster.leader().await {
                    Some(l) => Action::Kill(l),
                    None => continue,
                },
                a => a,
            };
            match action {
                Action::KillLeader => {}
                Action::Kill(n) => {
                    let now_unix = unix_ms();
                    if cluster.kill(n) {
                        kills.push((n, t_ms, now_unix));
                        mark(format!("kill {}", n.0), format!("SIGKILL node {}", n.0));
                    }
                }
                Action::Join(n) | Action::Restart(n) => {
                    if let Err(e) = cluster.start(n) {
                        say(format!(
                            "[{:5.1}s] cannot start node {}: {e}",
                            el.as_secs_f64(),
                            n.0
                        ));
                    } else {
                        let what = if matches!(action, Action::Join(_)) {
                            "join"
                        } else {
                            "restart"
                        };
                        mark(format!("{what} {}", n.0), format!("{what} node {}", n.0));
                    }
                }
                Action::Partition(n) | Action::Heal(n) => {
                    let cut = matches!(action, Action::Partition(_));
                    let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
                    for id in ids {
                        let peers: Vec<u16> = if !cut {
                            vec![]
                        } else if id == n {
                            cluster
                                .nodes
                                .keys()
                                .filter(|x| **x != n)
                                .map(|x| x.0)
                                .collect()
                        } else {
                            vec![n.0]
                        };
                        let _ = cluster
                            .call(id, Request::Partition { loss: None, peers })
                            .await;
                    }
                    if cut {
                        partitions.push((n, t_ms));
                    }
                    let what = if cut { "partition" } else { "heal" };
                    mark(format!("{what} {}", n.0), format!("{what} node {}", n.0));
                }
                Action::Stop(n) | Action::Cont(n) => {
                    let stop = matches!(action, Action::Stop(_));
                    let sig = if stop {
                        nix::sys::signal::Signal::SIGSTOP
                    } else {
                        nix::sys::signal::Signal::SIGCONT
                    };
                    if cluster.signal(n, sig) {
                        // what the frozen node has not replicated yet is its replication
                        // window, as for a partition
                        if stop {
                            partitions.push((n, t_ms));
                        }
                        let (what, label) = if stop {
                            ("SIGSTOP", "stop")
                        } else {
                            ("SIGCONT", "cont")
                        };
                        mark(format!("{label} {}", n.0), format!("{what} node {}", n.0));
                    }
                }
                Action::Rebalance => {
                    let r = cluster.to_leader(Request::Rebalance).await;
                    mark(
                        "rebalance".into(),
                        format!(
                            "rebalance requested: {}",
                            if r.is_ok() { "queued" } else { "no leader" }
                        ),
                    );
                }
            }
        }
        if el >= next_sample {
            next_sample += Duration::from_millis(250);
            let st = cluster.statuses().await;
            let mut s = Sample {
                t_ms: el.as_millis() as u64,
                owned: BTreeMap::new(),
                card: BTreeMap::new(),
            };
            let mut owners: BTreeMap<u64, NodeId> = BTreeMap::new();
            for (id, v) in &st {
                if v["role"] == json!("witness") {
                    continue;
                }
                s.owned.insert(id.0, vu(&v["owned"]));
                s.card.insert(id.0, vu(&v["card_entries"]));
                last_sync.insert(
                    *id,
                    (vu(&v["sync"]["records_sent"]), vu(&v["sync"]["bytes_sent"])),
                );
                if kills.is_empty() {
                    for p in v["sync_peers"].as_array().into_iter().flatten() {
                        max_srtt_us = max_srtt_us.max(vu(&p["srtt_us"]));
                    }
                }
                owners.insert(vu(&v["epoch"]), *id);
            }
            samples.push(s);
            if el < duration {
                if let Some((_, who)) = owners.iter().next_back() {
                    let who = *who;
                    esp.tick(&cluster, who, t0).await;
                }
            }
        }
        if !machine && el >= next_progress {
            next_progress += Duration::from_secs(1);
            if let Some(s) = samples.last() {
                let owned: Vec<String> = s.owned.iter().map(|(n, v)| format!("n{n}:{v}")).collect();
                let card: Vec<String> = s.card.iter().map(|(n, v)| format!("n{n}:{v}")).collect();
                out!(
                    "[{:5.1}s] packets {:>7}  ids {}  card {}",
                    el.as_secs_f64(),
                    sent.load(Ordering::Relaxed),
                    owned.join(" "),
                    card.join(" ")
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wire = wire_task.await.map_err(|e| format!("wire task: {e}"))?;
    cluster.set_call_timeout(Duration::from_secs(3));

    // collect from the survivors
    tokio::time::sleep(Duration::from_millis(200)).await;
    let finals = cluster.statuses().await;
    let mut applied: BTreeMap<NodeId, Vec<Value>> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut allocs: BTreeMap<NodeId, AllocationReply> = BTreeMap::new();
    for id in finals.keys() {
        if let Ok(Response::Applied(a)) = cluster.call(*id, Request::Applied).await {
            applied.insert(*id, a.applied);
        }
        if let Ok(Response::Check(c)) = cluster.call(*id, Request::Check).await {
            problems.extend(c.problems);
        }
        if let Ok(a) = cluster.allocation(*id).await {
            allocs.insert(*id, a);
        }
    }
    for (id, v) in &finals {
        last_sync.insert(
            *id,
            (vu(&v["sync"]["records_sent"]), vu(&v["sync"]["bytes_sent"])),
        );
    }
    cluster.shutdown().await;

    // takeovers: the first epoch after each kill in which survivors gained identifiers
    let mut takeovers = Vec::new();
    for (node, t_ms, kill_unix) in &kills {
        let mut by_epoch: BTreeMap<u64, u64> = BTreeMap::new();
        // epochs applied before the kill (a restarted node replays old epochs: not takeovers)
        let before = applied
            .values()
            .flatten()
            .filter(|r| vu(&r["at_unix_ms"]) < *kill_unix)
            .map(|r| vu(&r["epoch"]))
            .max()
            .unwrap_or(0);
        for (id, recs) in &applied {
            if id == node {
                continue;
            }
            for r in recs {
                if vu(&r["epoch"]) > before && vu(&r["gained"]) > 0 && r["ready"] == json!(true) {
                    let e = by_epoch.entry(vu(&r["epoch"])).or_insert(0);
                    *e = (*e).max(done_ms(r));
                }
            }
        }
        let done = by_epoch.values().next().copied();
        takeovers.push(json!({"node": node.0, "at_ms": t_ms,
            "takeover_ms": done.map(|d| d.saturating_sub(*kill_unix))}));
    }
    let takeover_ms = takeovers
        .iter()
        .filter_map(|t| t["takeover_ms"].as_u64())
        .max();
    let entries_moved: u64 = applied
        .values()
        .flatten()
        .filter(|r| vu(&r["epoch"]) > first_epoch)
        .map(|r| vu(&r["installed"]))
        .sum();
    // transition gaps: from each kill to its takeover, and around every epoch change
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    for t in &takeovers {
        let s = vu(&t["at_ms"]);
        let node = vu(&t["node"]);
        // Packets still in flight to the killed node (sent, not yet answered) when SIGKILL
        // landed die with it: the gap opens after the last packet it answered, not at the kill.
        let last_answered = wire
            .packets
            .iter()
            .filter(|p| p.t_ms <= s && p.verdicts.iter().any(|(n, _)| u64::from(n.0) == node))
            .map(|p| p.t_ms)
            .max()
            .unwrap_or(s);
        gaps.push((
            last_answered.min(s),
            s + t["takeover_ms"].as_u64().unwrap_or(1000) + 20,
        ));
    }
    let mut epoch_times: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for r in applied.values().flatten() {
        let at = vu(&r["at_unix_ms"]);
        let e = epoch_times.entry(vu(&r["epoch"])).or_insert((at, at));
        e.0 = e.0.min(at);
        e.1 = e.1.max(done_ms(r));
    }
    // an epoch change is a gap from its first application to the last application of the
    // next epoch when that follows within a second (a release and its assignment)
    let et: Vec<(u64, u64)> = epoch_times.values().copied().collect();
    for (i, (lo, hi)) in et.iter().enumerate() {
        let end = match et.get(i + 1) {
            Some((nlo, nhi)) if nlo.saturating_sub(*hi) < 1000 => *nhi,
            _ => *hi,
        };
        if end >= t0_unix {
            gaps.push((
                lo.saturating_sub(t0_unix).saturating_sub(20),
                end.saturating_sub(t0_unix) + 20,
            ));
        }
    }
    for (_, t) in &partitions {
        let start_unix = t0_unix + t;
        let first = applied
            .values()
            .flatten()
            .filter(|r| {
                vu(&r["at_unix_ms"]) >= start_unix
                    && vu(&r["gained"]) > 0
                    && r["ready"] == json!(true)
            })
            .map(done_ms)
            .min();
        // (from just before the cut or the freeze: packets on their way to the node then, or
        // still in its socket's queue, are answered late)
        gaps.push((
            t.saturating_sub(IN_FLIGHT_MS),
            first.map_or(t + 1000, |f| f - t0_unix) + 20,
        ));
    }
    let window_ms = 1 + 2 * max_srtt_us.div_ceil(1000) + 10;
    // a partitioned node fences itself within the failure threshold (200 ms)
    let mut kill_marks: Vec<KillMark> = kills
        .iter()
        .map(|(n, t, _)| KillMark {
            node: *n,
            t_ms: *t,
            until_ms: *t,
        })
        .collect();
    kill_marks.extend(partitions.iter().map(|(n, t)| KillMark {
        node: *n,
        t_ms: *t,
        until_ms: t + 200 + window_ms,
    }));
    let acc = traffic::account(&wire.packets, &kill_marks, window_ms, &gaps);
    let owners_agree = {
        let v: BTreeSet<&Vec<Option<u16>>> = allocs.values().map(|a| &a.owners).collect();
        v.len() <= 1
    };
    let mut two_owners = 0u64;
    if let Some(a) = allocs.values().next() {
        // an allocation is a map: one owner per identifier by construction; count disagreement
        // between nodes on the same epoch as the only way to see two owners
        for b in allocs.values() {
            if b.epoch == a.epoch && b.owners != a.owners {
                two_owners += 1;
            }
        }
    }
    let card_occupancy: BTreeMap<String, Value> = finals
        .iter()
        .filter(|(_, v)| v["role"] == json!("member"))
        .map(|(id, v)| {
            (id.0.to_string(), json!({"entries": v["card_entries"], "capacity": v["card_capacity"],
                                       "overflowed": v["card_overflowed"], "common": v["common_entries"],
                                       "owned_ids": v["owned"]}))
        })
        .collect();
    let card_path = card_path_report(&finals);
    // where each survivor ran its ESP packets and SAs (a killed node's counts end with it)
    let esp_per_node: serde_json::Map<String, Value> = finals
        .iter()
        .map(|(id, v)| {
            let node = json!({
                "on_card": vu(&v["esp"]["on_card"]),
                "in_software": vu(&v["esp"]["in_software"]),
                "sas_on_card": vu(&v["esp_installed_on_card"]),
                "sas_installed": vu(&v["esp_installed"]),
            });
            (id.0.to_string(), node)
        })
        .collect();
    let sync_messages: u64 = last_sync.values().map(|v| v.0).sum();
    let sync_bytes: u64 = last_sync.values().map(|v| v.1).sum();
    let report = json!({
        "packets": acc.packets,
        "per_node": acc.per_node,
        "unhandled": acc.unhandled,
        "unhandled_in_transition": acc.unhandled_in_transition,
        "unhandled_reasons": acc.unhandled_reasons,
        "unhandled_outside_gaps": acc.unhandled_outside_gaps,
        "gaps_ms": gaps,
        "double_handled": acc.double_handled,
        "double_handled_detail": acc.double_handled_detail,
        "established_without_state": acc.established_without_state,
        "established_without_state_in_crash_window": acc.established_without_state_in_crash_window,
        "established_without_state_detail": acc.established_without_state_detail,
        "crash_window_ms": window_ms,
        "takeover_ms": takeover_ms,
        "takeovers": takeovers,
        "entries_moved": entries_moved,
        "card_occupancy": card_occupancy,
        "card_path": card_path,
        "sync_messages": sync_messages,
        "sync_bytes": sync_bytes,
        "flows": acc.flows,
        "flows_broken": acc.flows_broken,
        "verdicts": acc.verdicts,
        "stray_verdicts": wire.stray,
        "final_epoch": allocs.values().next().map(|a| a.epoch),
        "owners_agree": owners_agree,
        "two_owner_conflicts": two_owners,
        "table_problems": problems,
        "esp": {"sas": esp.dist.len(), "outbound_sealed": esp.sealed,
                "outbound_seq_reused": esp.reused, "inbound_accepted": esp.accepted,
                "replays_rejected": esp.replays_rejected, "replays_accepted": esp.replays_accepted,
                "replays_accepted_in_crash_window": esp.replays_accepted_in_window(&kill_marks),
                "replays_accepted_detail": esp.replay_detail,
                "seq_jumps": finals.values().map(|v| vu(&v["sa_seq_jumps"])).sum::<u64>(),
                "on_card": finals.values().map(|v| vu(&v["esp"]["on_card"])).sum::<u64>(),
                "in_software": finals.values().map(|v| vu(&v["esp"]["in_software"])).sum::<u64>(),
                "per_node": esp_per_node},
        "sync_rejected": finals.values().map(|v| vu(&v["sync"]["rejected_auth"]) + vu(&v["sync"]["rejected_replay"]) + vu(&v["sync"]["rejected_garbled"])).sum::<u64>(),
        "nodes": cluster.nodes.keys().map(|n| n.0).collect::<Vec<_>>(),
        "events": marks.iter().map(|m| json!({"t_ms": m.t_ms, "event": m.label})).collect::<Vec<_>>(),
        "duration_s": args.duration,
        "pps": args.pps,
    });
    let mut report = report;
    if args.skew > 0 {
        report["balance"] = super::skew::report(
            &wire.packets,
            (args.duration * 1000.0) as u64,
            &finals,
            args.skew,
        );
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg::render(&samples, &marks))
            .map_err(|e| format!("--svg {}: {e}", path.display()))?;
    }
    if machine {
        out!("{}", crate::ctl_view::json_text(&report, args.pretty));
    } else {
        print_summary(&report);
        if let Some(p) = &args.svg {
            out!("picture: {}", p.display());
        }
    }
    if temp && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let bad = violations(&report);
    if bad.is_empty() {
        Ok(())
    } else {
        Err(DemoError::Violations(bad))
    }
}

/// `card_path` of the report: per member, what entered its card and what the card did
/// (`status.card_path`), whether every frame is accounted for (frames in = dropped as not
/// owned + looked up + punted before the lookup), and over all members the share of looked-up
/// frames the cards forwarded themselves.
fn card_path_report(finals: &BTreeMap<NodeId, Value>) -> Value {
    let mut per_node = serde_json::Map::new();
    let (mut looked_up, mut forwarded) = (0u64, 0u64);
    for (id, v) in finals {
        let c = &v["card_path"];
        if v["role"] != json!("member") || c.is_null() {
            continue;
        }
        let frames_in = vu(&c["frames_in"]);
        let sum =
            vu(&c["dropped_not_owned"]) + vu(&c["dp_lookups"]) + vu(&c["punted_before_lookup"]);
        looked_up += vu(&c["dp_lookups"]);
        forwarded += vu(&c["forwarded_by_card"]);
        let mut n = c.clone();
        n["accounted"] = json!(frames_in == sum);
        per_node.insert(id.0.to_string(), n);
    }
    json!({
        "nodes": per_node,
        "dp_lookups": looked_up,
        "forwarded_by_card": forwarded,
        "forwarded_share": if looked_up == 0 { 0.0 } else { forwarded as f64 / looked_up as f64 },
    })
}

/// The demo's ESP traffic: per SA, sequence numbers seen and the last inbound packet (replayed
/// on the next tick, possibly to a new owner).
#[derive(Default)]
struct EspDemo {
    peer: crate::core::member::esp::EspPath,
    /// Per tunnel (its outbound SPI): its identifier.
    dist: BTreeMap<u32, usize>,
    /// Per tunnel (its outbound SPI): its inbound SPI.
    inbound: BTreeMap<u32, u32>,
    max_out: BTreeMap<u32, u64>,
    last_in: BTreeMap<u32, (Vec<u8>, u64, NodeId)>,
    sealed: u64,
    reused: u64,
    accepted: u64,
    replays_rejected: u64,
    replays_accepted: u64,
    /// (time accepted first, node that accepted it first) of replays that were accepted again
    replay_origins: Vec<(u64, NodeId)>,
    /// Every accepted replay: spi, time and node of the first acceptance, time and node of the
    /// second (for the report)
    replay_detail: Vec<Value>,
}

impl EspDemo {
    /// One tick: per SA, 20 outbound packets and 5 inbound ones plus the replay on its owner.
    /// Times are ms since `t0`, taken just before the inbound packets are sent to the owner (so
    /// a packet was accepted no earlier than its recorded time).
    async fn tick(&mut self, cluster: &Cluster, ask: NodeId, t0: Instant) {
        let Ok(alloc) = cluster.allocation(ask).await else {
            return;
        };
        for (spi, dist) in self.dist.clone() {
            let Some(owner) = alloc.owners.get(dist).copied().flatten().map(NodeId) else {
                continue;
            };
            let send = Request::EspSend {
                count: Some(20),
                spi,
            };
            let Ok(Response::EspSent(r)) = cluster.call(owner, send).await else {
                continue; // the owner is still installing (transition)
            };
            let (first, last) = (r.first_seq, r.last_seq);
            let max = self.max_out.entry(spi).or_insert(0);
            if first <= *max {
                self.reused += 1;
            }
            *max = (*max).max(last);
            self.sealed += last.saturating_sub(first) + 1;
            let Some(in_spi) = self.inbound.get(&spi).copied() else {
                continue;
            };
            let Ok((_, _, pkts)) = self.peer.send(in_spi, 5, b"inbound") else {
                continue;
            };
            let mut hex: Vec<String> = pkts.iter().map(hex::encode).collect();
            let replay = self.last_in.get(&spi).cloned();
            if let Some((old, _, _)) = &replay {
                hex.push(hex::encode(old));
            }
            let t_ms = t0.elapsed().as_millis() as u64;
            let recv = Request::EspRecv {
                packets: hex,
                spi: in_spi,
            };
            let Ok(Response::EspReceived(r)) = cluster.call(owner, recv).await else {
                continue;
            };
            let acc = r.accepted;
            self.accepted += acc.min(5);
            self.replays_rejected += r.replays;
            if acc > 5 {
                self.replays_accepted += acc - 5;
                if let Some((_, t, n)) = replay {
                    self.replay_origins.push((t, n));
                    self.replay_detail
                        .push(json!({"spi": spi, "first_ms": t, "first_node": n.0,
                        "again_ms": t_ms, "again_node": owner.0}));
                }
            }
            if let Some(p) = pkts.last() {
                self.last_in.insert(spi, (p.clone(), t_ms, owner));
            }
        }
    }

    /// Replays accepted because the node that first accepted the packet was killed within one
    /// SA-sync interval (100 ms) plus slack of accepting it, before its window was replicated.
    fn replays_accepted_in_window(&self, marks: &[KillMark]) -> u64 {
        self.replay_origins
            .iter()
            .filter(|(t, n)| {
                marks
                    .iter()
                    .any(|k| k.node == *n && t + 150 >= k.t_ms && *t <= k.until_ms)
            })
            .count() as u64
    }
}

fn print_summary(r: &Value) {
    out!("");
    out!("== report ==");
    out!("packets                     {}", r["packets"]);
    if let Some(m) = r["per_node"].as_object() {
        let v: Vec<String> = m.iter().map(|(k, v)| format!("node {k}: {v}")).collect();
        out!("handled per node            {}", v.join(", "));
    }
    out!(
        "unhandled                   {} ({} inside takeover/reallocation gaps)",
        r["unhandled"],
        r["unhandled_in_transition"]
    );
    out!("double handled              {}", r["double_handled"]);
    out!(
        "established without state   {} (outside crash windows; must be 0)",
        r["established_without_state"]
    );
    out!(
        "  inside crash window       {} (window {} ms)",
        r["established_without_state_in_crash_window"],
        r["crash_window_ms"]
    );
    out!("takeover                    {} ms", r["takeover_ms"]);
    out!("entries moved into cards    {}", r["entries_moved"]);
    if let Some(m) = r["card_occupancy"].as_object() {
        for (k, v) in m {
            out!(
                "card of node {k:<3}            {} entries ({} ids, common table {})",
                v["entries"],
                v["owned_ids"],
                v["common"]
            );
        }
    }
    out!(
        "sync messages / bytes       {} / {}",
        r["sync_messages"],
        r["sync_bytes"]
    );
    out!(
        "flows (broken handshakes)   {} ({})",
        r["flows"],
        r["flows_broken"]
    );
    out!(
        "owners agree / conflicts    {} / {}",
        r["owners_agree"],
        r["two_owner_conflicts"]
    );
    let esp = &r["esp"];
    for (label, a, b, note) in [
        ("ESP SAs / seq jumps", "sas", "seq_jumps", ""),
        (
            "ESP out sealed / seq reused",
            "outbound_sealed",
            "outbound_seq_reused",
            " (must be 0)",
        ),
        ("ESP packets on card / sw", "on_card", "in_software", ""),
    ] {
        out!("{label:<29}{} / {}{note}", esp[a], esp[b]);
    }
    out!(
        "ESP in accepted / replays    {} / {} rejected, {} accepted ({} inside a crash window)",
        esp["inbound_accepted"],
        esp["replays_rejected"],
        esp["replays_accepted"],
        esp["replays_accepted_in_crash_window"]
    );
    if !r["balance"].is_null() {
        for l in super::skew::summary(&r["balance"]) {
            out!("{l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    fn args(a: &str) -> DemoArgs {
        Cli::try_parse_from(std::iter::once("demo").chain(a.split_whitespace()))
            .expect("parses")
            .demo
    }

    fn refused(a: &str, needles: &[&str]) {
        let e = plan(&args(a)).expect_err(a);
        for n in needles {
            assert!(e.contains(n), "{a}: {n:?} not in {e}");
        }
        assert!(e.contains("fix:"), "{a}: {e}");
    }

    #[test]
    fn schedules_are_checked_before_the_run() {
        refused(
            "--kill 2@100 --duration 2",
            &["--kill 2@100", "--duration 2"],
        );
        refused("--restart 2@1", &["--restart 2@1", "--kill 2@"]);
        refused("--kill 2@3 --restart 2@1", &["--restart 2@1"]);
        refused("--flows 0", &["--flows 0"]);
        refused("--kill 7@1", &["--kill 7@1", "node 7", "--join 7@"]);
        refused("--partition 9@1-2", &["--partition 9@1-2"]);
        refused("--stop 2@1-9 --duration 8", &["--stop 2@1-9"]);
        refused("--kill 2@1 --kill 2@2", &["--kill 2@2", "not running"]);
        refused("--join 5@1 --join 5@2", &["--join 5@2"]);
        refused("--kill 5@1 --join 5@2", &["--kill 5@1", "not running"]);
        refused("--identifiers 100", &["--identifiers 100"]);
        refused("--nodes 0", &["--nodes 0"]);
    }

    #[test]
    fn good_schedules_pass_in_time_order() {
        let p = plan(&args("--kill 2@1.2 --restart 2@2.4 --duration 4")).unwrap();
        assert_eq!(
            p.schedule,
            vec![
                (1.2, Action::Kill(NodeId(2))),
                (2.4, Action::Restart(NodeId(2)))
            ]
        );
        let p = plan(&args(
            "--nodes 5 --kill 1@1.2 --join 6@2 --rebalance --duration 5",
        ))
        .unwrap();
        assert_eq!(p.joiners, vec![6]);
        assert_eq!(p.schedule.len(), 3);
        // a restart after a leader kill may restart the leader that was killed
        assert!(plan(&args("--kill leader@1 --restart 1@2")).is_ok());
        // a joiner may be killed after it joined; a 2-node cluster's witness may be cut off
        assert!(plan(&args("--nodes 5 --join 6@1 --kill 6@2 --duration 4")).is_ok());
        assert!(plan(&args("--nodes 2 --partition 99@1-2")).is_ok());
        // the default fault: node 2 at 40%
        let p = plan(&args("--duration 5")).unwrap();
        assert_eq!(p.schedule, vec![(2.0, Action::Kill(NodeId(2)))]);
        assert!(plan(&args("--no-faults")).unwrap().schedule.is_empty());
    }

    #[test]
    fn violations_name_the_figures_that_must_be_0() {
        let clean = json!({
            "double_handled": 0, "established_without_state": 0, "two_owner_conflicts": 0,
            "owners_agree": true, "table_problems": [],
            "esp": {"outbound_seq_reused": 0, "replays_accepted": 2,
                    "replays_accepted_in_crash_window": 2},
        });
        assert!(violations(&clean).is_empty());
        let mut bad = clean.clone();
        bad["double_handled"] = json!(3);
        bad["owners_agree"] = json!(false);
        bad["table_problems"] = json!(["id 7: entry in card not in common"]);
        bad["esp"]["outbound_seq_reused"] = json!(1);
        bad["esp"]["replays_accepted"] = json!(5);
        assert_eq!(
            violations(&bad),
            vec![
                "double_handled = 3",
                "owners_agree = false",
                "table_problems = 1",
                "esp.outbound_seq_reused = 1",
                "esp.replays_accepted outside crash windows = 3",
            ]
        );
        let e = DemoError::Violations(violations(&bad));
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("double_handled = 3"), "{e}");
        assert_eq!(DemoError::Usage("x".into()).exit_code(), 2);
    }

    #[test]
    fn svg_path_is_checked_without_touching_a_file() {
        let dir = std::env::temp_dir().join(format!("demo-svg-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let new = dir.join("new.svg");
        check_writable(&new, "--svg").unwrap();
        assert!(!new.exists(), "the check leaves no file behind");
        let old = dir.join("old.svg");
        std::fs::write(&old, "<svg/>").unwrap();
        check_writable(&old, "--svg").unwrap();
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "<svg/>");
        let e = check_writable(&dir.join("no/such/dir.svg"), "--svg").unwrap_err();
        assert!(e.contains("--svg") && e.contains("fix:"), "{e}");
        let e = check_writable(&dir, "--svg").unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
