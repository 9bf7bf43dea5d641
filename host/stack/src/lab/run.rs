//! `clusterd lab run`: a workload of real kernel sockets across a lab (ours, or the kernel
//! baseline), events on a schedule (a node killed, stopped gracefully, started again, a
//! rebalance), and a report measured from outside the cluster.
//!
//! The workload runs in this process: one thread enters the server's network namespace
//! (`setns`) and serves, one enters the client's and drives the traffic, each with its own
//! single-threaded tokio runtime, so every socket belongs to its namespace's kernel:
//!
//! - long-lived TCP connections (IPv4 and IPv6 alternately), each sending a 64-byte message
//!   every `interval` and waiting for its echo; a message whose echo takes longer than
//!   [`STALL`] is a stall (no progress for that long);
//! - bulk TCP transfers, each writing 64 KiB chunks for the whole run and then checking the
//!   byte count the server read; a write that cannot complete for [`STALL`] is a stall;
//! - UDP request/response flows (one datagram every `interval`, answered by the server);
//! - ICMP echo (`ping`, IPv4 and IPv6) from the client to the server.
//!
//! Measured: connections opened, completed (closed cleanly, every byte checked), reset, stalled;
//! per event, the longest stall that began in its window, the longest wait that began in it
//! (stall or not: the takeover gap the endpoints see) and the kernel's TCP retransmissions
//! (`TcpRetransSegs`, from `nstat`) of the client and the server during it; the frames the
//! cluster lost or duplicated end to end (what the client's and server's interfaces sent
//! against what the other received, read once the traffic stopped: our nodes originate no frame
//! on the segments, so the two must be equal; the kernel baseline's routers do, so there the IP
//! packets between the two ends are counted, [`Backend::end_to_end`]), and what each node
//! dropped and why.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::lab::netns::{self, LabError, LabInfo};

/// No progress for longer than this is a stall.
pub const STALL: Duration = Duration::from_millis(500);
/// A wait longer than this is a delay: kept for the longest wait per event (the takeover gap
/// as the endpoints see it, short of a stall too).
pub const DELAY: Duration = Duration::from_millis(20);
/// The message connections' and UDP flows' port on the server.
pub const ECHO_PORT: u16 = 7000;
/// The bulk transfers' port.
pub const BULK_PORT: u16 = 7001;
/// The UDP flows' port.
pub const UDP_PORT: u16 = 7002;
const MSG: usize = 64;
const CHUNK: usize = 64 * 1024;
/// How long the workload waits at the end for what is still in flight.
const GRACE: Duration = Duration::from_secs(3);

/// One scheduled event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// SIGKILL of a node.
    Kill {
        /// The node.
        node: u16,
    },
    /// A graceful stop (SIGTERM: the node hands its identifiers over, then exits).
    Stop {
        /// The node.
        node: u16,
    },
    /// A node (killed or stopped before) started again.
    Join {
        /// The node.
        node: u16,
    },
    /// A rebalance asked of the leader.
    Rebalance,
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kill { node } => write!(f, "kill {node}"),
            Self::Stop { node } => write!(f, "stop {node}"),
            Self::Join { node } => write!(f, "join {node}"),
            Self::Rebalance => write!(f, "rebalance"),
        }
    }
}

/// An event at a time after the workload started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub at: Duration,
    /// What.
    pub kind: EventKind,
}

/// What the workload does.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Long-lived message connections.
    pub connections: u32,
    /// Bulk transfers.
    pub bulk: u32,
    /// Each bulk transfer's pace (bytes a second; 0: as fast as TCP goes). Paced, the
    /// transfers keep the segments busy without saturating them, so retransmissions measure
    /// the events, not congestion.
    pub bulk_rate: u64,
    /// UDP request/response flows.
    pub udp: u32,
    /// ICMP echo on or off.
    pub ping: bool,
    /// How long the traffic runs.
    pub duration: Duration,
    /// Each message connection's and UDP flow's period.
    pub interval: Duration,
    /// The events, in time order.
    pub events: Vec<Event>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            connections: 100,
            bulk: 2,
            bulk_rate: 1_000_000,
            udp: 4,
            ping: true,
            duration: Duration::from_secs(10),
            interval: Duration::from_millis(100),
            events: Vec::new(),
        }
    }
}

/// Checks a schedule against the run and the lab before anything starts.
///
/// # Errors
/// An event outside the run, a node that is not in the lab, a join of a node that is running
/// and not killed or stopped before, a kill or stop of a node not running then.
pub fn check_schedule(o: &RunOptions, nodes: &[(u16, bool)]) -> Result<(), LabError> {
    let mut running: std::collections::BTreeMap<u16, bool> = nodes.iter().copied().collect();
    let mut last = Duration::ZERO;
    for e in &o.events {
        if e.at >= o.duration {
            return Err(format!(
                "{} at {:.1} s: after the end of the run (--duration {} s)",
                e.kind,
                e.at.as_secs_f64(),
                o.duration.as_secs()
            ));
        }
        if e.at < last {
            return Err("events must be given in time order".into());
        }
        last = e.at;
        let node = match &e.kind {
            EventKind::Kill { node } | EventKind::Stop { node } | EventKind::Join { node } => *node,
            EventKind::Rebalance => continue,
        };
        let Some(up) = running.get_mut(&node) else {
            return Err(format!(
                "{}: the lab has no node {node} (nodes {:?})",
                e.kind,
                nodes.iter().map(|n| n.0).collect::<Vec<_>>()
            ));
        };
        match e.kind {
            EventKind::Join { .. } if *up => {
                return Err(format!(
                    "{} at {:.1} s: node {node} runs then (kill or stop it earlier)",
                    e.kind,
                    e.at.as_secs_f64()
                ))
            }
            EventKind::Kill { .. } | EventKind::Stop { .. } if !*up => {
                return Err(format!(
                    "{} at {:.1} s: node {node} is not running then",
                    e.kind,
                    e.at.as_secs_f64()
                ))
            }
            EventKind::Join { .. } => *up = true,
            _ => *up = false,
        }
    }
    Ok(())
}

/// Parses `NODE@SECONDS`.
///
/// # Errors
/// A clear message naming the flag.
pub fn parse_node_at(flag: &str, s: &str) -> Result<(u16, Duration), LabError> {
    let err = || format!("--{flag} {s}: expected NODE@SECONDS, e.g. 2@3.5");
    let (n, t) = s.split_once('@').ok_or_else(err)?;
    let n: u16 = n.parse().map_err(|_| err())?;
    Ok((n, parse_seconds(flag, t)?))
}

/// Parses a time in seconds (fractions allowed).
///
/// # Errors
/// A clear message naming the flag.
pub fn parse_seconds(flag: &str, s: &str) -> Result<Duration, LabError> {
    s.parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0 && *t < 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("--{flag} {s}: expected seconds, e.g. 3 or 2.5"))
}

/// Frames a node dropped for one reason: (node, reason, frames).
pub type NodeDrop = (u16, String, u64);

/// What the run does to the lab's nodes: ours or the kernel baseline.
pub trait Backend {
    /// `cluster` or `kernel`.
    fn name(&self) -> &'static str;
    /// The lab.
    fn info(&self) -> &LabInfo;
    /// Whether each node runs now.
    fn nodes(&self) -> Vec<(u16, bool)>;
    /// Carries out an event; a line for the report.
    ///
    /// # Errors
    /// When it cannot be done.
    fn apply(&mut self, e: &EventKind) -> Result<String, LabError>;
    /// What each node dropped and why, cumulative.
    fn drops(&self) -> Vec<NodeDrop>;
    /// Bytes the nodes sent on the sync segment, cumulative.
    fn sync_bytes(&self) -> u64;
    /// CPU time (ms) of the cluster's processes, cumulative.
    fn cpu_ms(&self) -> u64;
    /// Frames end to end, cumulative: what the client sent and received, what the server
    /// sent and received. By default the client's and the server's interface counters (right
    /// when the nodes originate no frame on the segments, as a bridging cluster does).
    fn end_to_end(&self) -> Option<[u64; 4]> {
        end_to_end(self.info())
    }
    /// What the report's figures mean for this backend where they differ from ours, and
    /// which do not apply (one line each, for the report's `notes`).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// The leader's automatic load balancing view (`status` -> `balance`: per-node load,
    /// the imbalance, rounds and identifiers moved so far, the last round); `None` where the
    /// backend has none (the kernel baseline) or no leader answers.
    fn balance(&self) -> Option<Value> {
        None
    }
}

/// Our cluster in a lab made by [`netns::up`].
pub struct Cluster {
    info: LabInfo,
    dir: PathBuf,
    exe: PathBuf,
}

impl Cluster {
    /// The lab `info` (its directory holds the configs), started with `exe`.
    pub fn new(info: LabInfo, exe: PathBuf) -> Self {
        let dir = PathBuf::from(&info.dir);
        Self { info, dir, exe }
    }

    fn sock(&self, i: u16) -> PathBuf {
        self.dir.join(format!("n{i}.sock"))
    }
}

fn proc_cpu_ms(pid: i32) -> u64 {
    // utime and stime are fields 14 and 15 of /proc/PID/stat, in clock ticks (100 a second
    // on Linux); the command name (field 2) may hold spaces, so count from its closing paren
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) * 10
}

/// Bytes a namespace's interface sent (`tx`) or received, and its frames.
fn link_stats(ns: &str, dev: &str) -> Option<[u64; 4]> {
    let out = Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", dev])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let s = &v[0]["stats64"];
    let n = |x: &Value| x.as_u64().unwrap_or(0);
    Some([
        n(&s["tx"]["packets"]),
        n(&s["tx"]["bytes"]),
        n(&s["rx"]["packets"]),
        n(&s["rx"]["bytes"]),
    ])
}

impl Backend for Cluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn info(&self) -> &LabInfo {
        &self.info
    }

    fn nodes(&self) -> Vec<(u16, bool)> {
        self.info
            .nodes
            .iter()
            .map(|n| (n.id, netns::pid(&self.dir, n.id).is_some()))
            .collect()
    }

    fn apply(&mut self, e: &EventKind) -> Result<String, LabError> {
        use nix::sys::signal::Signal;
        match *e {
            EventKind::Kill { node } | EventKind::Stop { node } => {
                let sig = if matches!(e, EventKind::Kill { .. }) {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                };
                if !netns::signal(&self.dir, node, sig) {
                    return Err(format!("node {node} is not running"));
                }
                Ok(format!("node {node}: {sig}"))
            }
            EventKind::Join { node } => {
                // a stopped node may still be finishing its leave
                let t = Instant::now();
                while netns::pid(&self.dir, node).is_some() && t.elapsed() < Duration::from_secs(12)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let pid = netns::start(&self.info.prefix, &self.dir, &self.exe, node)?;
                Ok(format!("node {node}: started (pid {pid})"))
            }
            EventKind::Rebalance => {
                let req = crate::daemon::protocol::Request::Rebalance;
                for n in &self.info.nodes {
                    if let Some(crate::daemon::protocol::Response::Queued) =
                        netns::ask(&self.sock(n.id), &req)
                    {
                        return Ok(format!("rebalance queued by node {}", n.id));
                    }
                }
                Err("rebalance: no node accepted it (no leader?)".into())
            }
        }
    }

    fn drops(&self) -> Vec<NodeDrop> {
        let mut out = Vec::new();
        for n in &self.info.nodes {
            let Some(st) = netns::status(&self.sock(n.id)) else {
                continue;
            };
            let num = |v: &Value| v.as_u64().unwrap_or(0);
            let v = &st["verdicts"];
            let held = num(&st["hold"]["held"]);
            // a held frame was answered NotReady when it arrived and again when released
            let not_ready = num(&v["NotReady"]).saturating_sub(held);
            for (reason, c) in [
                ("not_ready", not_ready),
                ("tcp_no_state", num(&v["TcpNoState"])),
                ("no_state", num(&v["NoState"])),
                ("dropped", num(&v["Dropped"])),
                ("hold_dropped", num(&st["hold"]["dropped"])),
            ] {
                if c > 0 {
                    out.push((n.id, reason.to_owned(), c));
                }
            }
            if let Some(m) = st["card_path"]["reasons"].as_object() {
                for (r, c) in m {
                    if r != "not_owned" && num(c) > 0 {
                        out.push((n.id, format!("card_{r}"), num(c)));
                    }
                }
            }
            if let Some(m) = st["interfaces"]["dropped"].as_object() {
                for (r, c) in m {
                    if num(c) > 0 {
                        out.push((n.id, format!("bridge_{r}"), num(c)));
                    }
                }
            }
        }
        out
    }

    fn sync_bytes(&self) -> u64 {
        self.info
            .nodes
            .iter()
            .filter_map(|n| link_stats(&n.ns, "y0"))
            .map(|s| s[1])
            .sum()
    }

    fn cpu_ms(&self) -> u64 {
        self.info
            .nodes
            .iter()
            .filter_map(|n| netns::pid(&self.dir, n.id))
            .map(proc_cpu_ms)
            .sum()
    }

    fn balance(&self) -> Option<Value> {
        self.info.nodes.iter().find_map(|n| {
            let st = netns::status(&self.sock(n.id))?;
            (st["balance"]["leader"] == Value::Bool(true)).then(|| st["balance"].clone())
        })
    }
}

/// One stall: a connection that made no progress for longer than [`STALL`].
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stall {
    /// When it began (ms after the start).
    pub at_ms: u64,
    /// How long.
    pub ms: u64,
}

/// What one connection (or UDP flow) saw.
#[derive(Clone, Debug, Default)]
struct ConnLog {
    /// A UDP flow, not a TCP connection.
    udp: bool,
    udp_sent: u64,
    udp_answered: u64,
    opened: bool,
    completed: bool,
    reset: bool,
    error: Option<String>,
    stalls: Vec<Stall>,
    /// Every wait longer than [`DELAY`] (stalls too).
    delays: Vec<Stall>,
    /// Message round trips (or bulk chunks) done.
    progress: u64,
}

impl ConnLog {
    /// Records a stall that began at `since` and lasted until now, if it was longer than
    /// [`STALL`] (`always`: whatever its length, for a wait cut off at the end of the run).
    /// Every wait longer than [`DELAY`] is kept as a delay as well.
    fn stall(&mut self, start: Instant, since: Instant, always: bool) {
        let ms = since.elapsed();
        let s = Stall {
            at_ms: ms_since(start, since),
            ms: ms.as_millis() as u64,
        };
        if always || ms > DELAY {
            self.delays.push(s);
        }
        if always || ms > STALL {
            self.stalls.push(s);
        }
    }

    /// Records the I/O error `e` of what `what` names (a reset when it broke the connection).
    fn failed(&mut self, e: &std::io::Error, what: String) {
        self.reset = broken(e);
        self.error = Some(format!("{what}: {e}"));
    }

    /// One step of the connection, `io`, begun at `since` and cut off after `limit`: its
    /// result, with its wait recorded as a stall; or `None` with the error, named by `what`
    /// (the step cut off is a stall to the end, `what` followed by `cut_off`).
    async fn step<T>(
        &mut self,
        start: Instant,
        since: Instant,
        limit: Duration,
        io: impl std::future::Future<Output = std::io::Result<T>>,
        what: impl FnOnce() -> String,
        cut_off: &str,
    ) -> Option<T> {
        match tokio::time::timeout(limit, io).await {
            Ok(Ok(v)) => {
                self.stall(start, since, false);
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(&e, what());
                None
            }
            Err(_) => {
                self.stall(start, since, true);
                self.error = Some(format!("{}{cut_off}", what()));
                None
            }
        }
    }
}

/// Connects to `to` within 5 s (`what` names the connection in the error).
async fn connect(to: SocketAddr, what: &str) -> Result<tokio::net::TcpStream, String> {
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(to)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("{what} {to}: {e}")),
        Err(_) => Err(format!("{what} {to}: no answer in 5 s")),
    }
}

/// The report of one event.
#[derive(Clone, Debug, Serialize)]
pub struct EventReport {
    /// When (ms after the start).
    pub at_ms: u64,
    /// What.
    pub event: EventKind,
    /// What was done.
    pub outcome: String,
    /// The longest stall that began in this event's window (from the event to the next one).
    pub longest_stall_ms: u64,
    /// Connections that stalled in the window.
    pub stalled_connections: u64,
    /// The longest wait (a message's round trip, a bulk write, a connect) that began in the
    /// window (or up to [`STALL`] before the event, as the stalls), stall or not: the takeover
    /// gap as the endpoints see it (0: none
    /// longer than [`DELAY`]). A loaded machine's own delays count too: compare with
    /// [`Report::background_longest_delay_ms`].
    pub longest_delay_ms: u64,
    /// The client's `TcpRetransSegs` in the window.
    pub client_retrans: u64,
    /// The server's `TcpRetransSegs` in the window.
    pub server_retrans: u64,
    /// How long the window is.
    pub window_ms: u64,
}

/// The whole report (`--json`: this object).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `cluster` or `kernel`.
    pub backend: String,
    /// Nodes in the lab.
    pub nodes: usize,
    /// How long the traffic ran.
    pub duration_ms: u64,
    /// TCP connections (message and bulk) opened.
    pub opened: u64,
    /// Closed cleanly with every byte checked.
    pub completed: u64,
    /// Reset or broken.
    pub reset: u64,
    /// Connections that stalled at least once.
    pub stalled: u64,
    /// The longest stall of any connection.
    pub longest_stall_ms: u64,
    /// Message round trips done.
    pub messages: u64,
    /// Bulk bytes the server read.
    pub bulk_bytes: u64,
    /// UDP requests sent.
    pub udp_sent: u64,
    /// UDP requests answered.
    pub udp_answered: u64,
    /// ICMP echo requests sent (IPv4 and IPv6).
    pub ping_sent: u64,
    /// ICMP echo replies.
    pub ping_received: u64,
    /// The client's and server's `TcpRetransSegs` before the first event, per second.
    pub background_retrans_per_s: f64,
    /// The longest wait that ended before the first event (the whole run without events):
    /// the delays the machine makes without any event.
    pub background_longest_delay_ms: u64,
    /// Every event.
    pub events: Vec<EventReport>,
    /// Frames the cluster lost end to end (sent by the client or server, not received by the
    /// other).
    pub frames_lost: i64,
    /// Frames sent end to end (both directions).
    pub frames_sent: u64,
    /// What the nodes dropped and why, during the run.
    pub dropped: Vec<Value>,
    /// Bytes on the sync segment during the run.
    pub sync_bytes: u64,
    /// CPU time of the cluster's processes during the run.
    pub cpu_ms: u64,
    /// The first few connection errors.
    pub errors: Vec<String>,
    /// What the figures mean for this backend, and which do not apply ([`Backend::notes`]).
    pub notes: Vec<String>,
    /// Automatic load balancing during the run ([`super::skew::balance_during`]); absent for a backend
    /// without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<Value>,
}

/// Runs the workload with its events on `b`, and reports.
///
/// # Errors
/// A schedule that cannot happen, or a lab that is not usable (namespaces gone, the server
/// not reachable).
pub fn run(
    b: &mut dyn Backend,
    o: &RunOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, LabError> {
    check_schedule(o, &b.nodes())?;
    let info = b.info().clone();
    let servers = server_addrs(&info)?;
    let client_ns = info.client_ns.clone();
    let server_ns = info.server_ns.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let (stop, servers, ns) = (stop.clone(), servers.clone(), server_ns.clone());
        std::thread::spawn(move || serve(&ns, &servers, &stop, ready_tx))
    };
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("the workload's server did not start".into()),
    }
    let drops0 = b.drops();
    let (sync0, cpu0) = (b.sync_bytes(), b.cpu_ms());
    let balance0 = b.balance();
    let links0 = b.end_to_end();
    let start = Instant::now();
    let mut samples = vec![(Duration::ZERO, retrans(&client_ns), retrans(&server_ns))];
    let client = {
        let (o, ns, servers) = (o.clone(), client_ns.clone(), servers.clone());
        std::thread::spawn(move || drive(&ns, &servers, &o, start))
    };
    let pings: Vec<std::process::Child> = if o.ping {
        let count = (o.duration.as_millis() / 200).max(1).to_string();
        servers
            .iter()
            .filter_map(|a| {
                Command::new("ip")
                    .args([
                        "netns", "exec", &client_ns, "ping", "-q", "-n", "-i", "0.2", "-W", "1",
                        "-c",
                    ])
                    .arg(&count)
                    .arg(a.to_string())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .ok()
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut outcomes = Vec::new();
    for e in &o.events {
        let wait = e.at.saturating_sub(start.elapsed());
        std::thread::sleep(wait);
        let at = start.elapsed();
        samples.push((at, retrans(&client_ns), retrans(&server_ns)));
        let outcome = b
            .apply(&e.kind)
            .unwrap_or_else(|err| format!("failed: {err}"));
        progress(&format!(
            "{:>6.2} s  {}: {outcome}",
            at.as_secs_f64(),
            e.kind
        ));
        outcomes.push((at, outcome));
    }
    let conns = client
        .join()
        .map_err(|_| "the workload's client panicked")??;
    let end = start.elapsed();
    samples.push((end, retrans(&client_ns), retrans(&server_ns)));
    let (mut ping_sent, mut ping_received) = (0, 0);
    for p in pings {
        if let Ok(out) = p.wait_with_output() {
            let (s, r) = ping_counts(&String::from_utf8_lossy(&out.stdout));
            ping_sent += s;
            ping_received += r;
        }
    }
    // `ip netns exec` itself starts, so a missing ping shows as nothing transmitted
    let pings_ok = !o.ping || ping_sent > 0;
    stop.store(true, Ordering::SeqCst);
    let bulk_bytes = server
        .join()
        .map_err(|_| "the workload's server panicked")??;
    // what is still in flight has arrived by now
    std::thread::sleep(Duration::from_millis(300));
    let links1 = b.end_to_end();
    let drops1 = b.drops();
    let mut r = report(
        &info,
        o,
        &conns,
        &samples,
        &outcomes,
        Measured {
            end,
            bulk_bytes,
            ping: (ping_sent, ping_received),
            links: (links0, links1),
            drops: (drops0, drops1),
            sync: b.sync_bytes().saturating_sub(sync0),
            cpu: b.cpu_ms().saturating_sub(cpu0),
        },
    );
    r.backend = b.name().to_owned();
    r.notes = b.notes();
    r.balance = b
        .balance()
        .map(|end| super::skew::balance_during(balance0.as_ref(), end));
    if !pings_ok {
        r.errors.insert(
            0,
            "ping: not installed in the client's namespace (apt-get install iputils-ping)".into(),
        );
    }
    Ok(r)
}

struct Measured {
    end: Duration,
    bulk_bytes: u64,
    ping: (u64, u64),
    links: (Option<[u64; 4]>, Option<[u64; 4]>),
    drops: (Vec<NodeDrop>, Vec<NodeDrop>),
    sync: u64,
    cpu: u64,
}

/// Client tx, client rx, server tx, server rx (frames).
fn end_to_end(info: &LabInfo) -> Option<[u64; 4]> {
    let c = link_stats(&info.client_ns, &netns_dev(&info.client_ns)?)?;
    let s = link_stats(&info.server_ns, &netns_dev(&info.server_ns)?)?;
    Some([c[0], c[2], s[0], s[2]])
}

/// The one non-loopback interface of a namespace.
fn netns_dev(ns: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show"])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .find(|n| *n != "lo")
        .map(str::to_owned)
}

fn report(
    info: &LabInfo,
    o: &RunOptions,
    conns: &[ConnLog],
    samples: &[(Duration, u64, u64)],
    outcomes: &[(Duration, String)],
    m: Measured,
) -> Report {
    let tcp: Vec<&ConnLog> = conns.iter().filter(|c| !c.udp).collect();
    let all_stalls: Vec<Stall> = conns
        .iter()
        .flat_map(|c| c.stalls.iter().copied())
        .collect();
    let all_delays: Vec<Stall> = conns
        .iter()
        .flat_map(|c| c.delays.iter().copied())
        .collect();
    let mut events = Vec::new();
    for (i, (e, (at, outcome))) in o.events.iter().zip(outcomes).enumerate() {
        let until = outcomes.get(i + 1).map_or(m.end, |n| n.0);
        let (from_ms, to_ms) = (at.as_millis() as u64, until.as_millis() as u64);
        // stalls that began a little before the event count too (a message sent just before
        // a node died waits for the takeover)
        let lo = from_ms.saturating_sub(STALL.as_millis() as u64);
        let in_window = |s: &&Stall| s.at_ms >= lo && s.at_ms < to_ms;
        let longest_in_window = |waits: &[Stall]| {
            waits
                .iter()
                .filter(in_window)
                .map(|s| s.ms)
                .max()
                .unwrap_or(0)
        };
        let longest = longest_in_window(&all_stalls);
        let stalled = conns
            .iter()
            .filter(|c| c.stalls.iter().any(|s| in_window(&s)))
            .count() as u64;
        // as the stalls: the waits that began in the window or just before the event
        let delay = longest_in_window(&all_delays);
        let (a, b) = (&samples[i + 1], &samples[i + 2]);
        events.push(EventReport {
            at_ms: from_ms,
            event: e.kind.clone(),
            outcome: outcome.clone(),
            longest_stall_ms: longest,
            stalled_connections: stalled,
            longest_delay_ms: delay,
            client_retrans: b.1.saturating_sub(a.1),
            server_retrans: b.2.saturating_sub(a.2),
            window_ms: to_ms.saturating_sub(from_ms),
        });
    }
    let first_ms = outcomes.first().map_or(m.end, |n| n.0).as_millis() as u64;
    let background_delay = all_delays
        .iter()
        .filter(|d| d.at_ms + d.ms <= first_ms)
        .map(|d| d.ms)
        .max()
        .unwrap_or(0);
    let (s0, s1) = (&samples[0], &samples[1]);
    let bg_secs = s1.0.saturating_sub(s0.0).as_secs_f64();
    let background = if bg_secs > 0.5 {
        (s1.1.saturating_sub(s0.1) + s1.2.saturating_sub(s0.2)) as f64 / bg_secs
    } else {
        0.0
    };
    let (frames_lost, frames_sent) = match m.links {
        (Some(a), Some(b)) => {
            let d = |i: usize| b[i].saturating_sub(a[i]) as i64;
            (d(0) - d(3) + d(2) - d(1), (d(0) + d(2)) as u64)
        }
        _ => (0, 0),
    };
    let mut dropped = Vec::new();
    for (n, r, c) in &m.drops.1 {
        let before = m
            .drops
            .0
            .iter()
            .find(|(n0, r0, _)| n0 == n && r0 == r)
            .map_or(0, |x| x.2);
        if *c > before {
            dropped.push(json!({"node": n, "reason": r, "frames": c - before}));
        }
    }
    Report {
        backend: String::new(),
        nodes: info.nodes.len(),
        duration_ms: m.end.as_millis() as u64,
        opened: tcp.iter().filter(|c| c.opened).count() as u64,
        completed: tcp.iter().filter(|c| c.completed).count() as u64,
        reset: tcp.iter().filter(|c| c.reset).count() as u64,
        stalled: conns.iter().filter(|c| !c.stalls.is_empty()).count() as u64,
        longest_stall_ms: all_stalls.iter().map(|s| s.ms).max().unwrap_or(0),
        messages: conns.iter().map(|c| c.progress).sum(),
        bulk_bytes: m.bulk_bytes,
        udp_sent: conns.iter().map(|c| c.udp_sent).sum(),
        udp_answered: conns.iter().map(|c| c.udp_answered).sum(),
        ping_sent: m.ping.0,
        ping_received: m.ping.1,
        background_retrans_per_s: background,
        background_longest_delay_ms: background_delay,
        events,
        frames_lost,
        frames_sent,
        dropped,
        sync_bytes: m.sync,
        cpu_ms: m.cpu,
        errors: conns
            .iter()
            .filter_map(|c| c.error.clone())
            .take(8)
            .collect(),
        notes: Vec::new(),
        balance: None,
    }
}

fn ping_counts(out: &str) -> (u64, u64) {
    // "10 packets transmitted, 10 received, 0% packet loss, time 1800ms"
    for line in out.lines() {
        if let Some((a, rest)) = line.split_once(" packets transmitted, ") {
            let sent = a.trim().parse().unwrap_or(0);
            let recv = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return (sent, recv);
        }
    }
    (0, 0)
}

/// The server's IPv4 and IPv6 addresses from the lab.
fn server_addrs(info: &LabInfo) -> Result<Vec<IpAddr>, LabError> {
    info.server
        .iter()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| format!("lab.json: server address {s} is not an address"))
        })
        .collect()
}

/// `TcpRetransSegs` of a namespace's kernel (0 when `nstat` is missing).
pub fn retrans(ns: &str) -> u64 {
    let Ok(out) = Command::new("ip")
        .args(["netns", "exec", ns, "nstat", "-asz", "TcpRetransSegs"])
        .output()
    else {
        return 0;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("TcpRetransSegs"))
                .then(|| f.next().and_then(|v| v.parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

/// Moves this thread into the network namespace `ns` (sockets it makes from now on are that
/// namespace's).
fn enter(ns: &str) -> Result<(), LabError> {
    let f = File::open(Path::new("/var/run/netns").join(ns))
        .map_err(|e| format!("namespace {ns}: {e} (is the lab up?)"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("entering namespace {ns}: {e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime, LabError> {
    super::runtime().map_err(|e| format!("workload runtime: {e}"))
}

/// The server side: echo, bulk sink, UDP echo, until `stop`. Returns the bulk bytes read.
fn serve(
    ns: &str,
    addrs: &[IpAddr],
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<Result<(), LabError>>,
) -> Result<u64, LabError> {
    let setup = enter(ns).and_then(|()| runtime());
    let rt = match setup {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    rt.block_on(async {
        let bulk = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut listeners = Vec::new();
        for a in addrs {
            for port in [ECHO_PORT, BULK_PORT] {
                let l = tokio::net::TcpListener::bind(SocketAddr::new(*a, port))
                    .await
                    .map_err(|e| format!("server: bind {a} port {port}: {e}"));
                match l {
                    Ok(l) => listeners.push((port, l)),
                    Err(e) => {
                        let _ = ready.send(Err(e.clone()));
                        return Err(e);
                    }
                }
            }
            match tokio::net::UdpSocket::bind(SocketAddr::new(*a, UDP_PORT)).await {
                Ok(u) => {
                    tokio::spawn(async move {
                        let mut b = [0u8; 2048];
                        while let Ok((n, from)) = u.recv_from(&mut b).await {
                            let _ = u.send_to(&b[..n], from).await;
                        }
                    });
                }
                Err(e) => {
                    let e = format!("server: bind udp {a} port {UDP_PORT}: {e}");
                    let _ = ready.send(Err(e.clone()));
                    return Err(e);
                }
            }
        }
        for (port, l) in listeners {
            let bulk = bulk.clone();
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    let bulk = bulk.clone();
                    tokio::spawn(async move {
                        if port == ECHO_PORT {
                            let _ = echo(s).await;
                        } else {
                            let _ = sink(s, &bulk).await;
                        }
                    });
                }
            });
        }
        let _ = ready.send(Ok(()));
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(bulk.load(Ordering::SeqCst))
    })
}

async fn echo(mut s: tokio::net::TcpStream) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&b[..n]).await?;
    }
}

async fn sink(
    mut s: tokio::net::TcpStream,
    total: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    let mut b = vec![0u8; CHUNK];
    let mut n = 0u64;
    loop {
        let k = s.read(&mut b).await?;
        if k == 0 {
            break;
        }
        n += k as u64;
        total.fetch_add(k as u64, Ordering::SeqCst);
    }
    s.write_all(&n.to_be_bytes()).await?;
    s.shutdown().await
}

/// The client side: every connection and flow, for the run's duration.
fn drive(
    ns: &str,
    servers: &[IpAddr],
    o: &RunOptions,
    start: Instant,
) -> Result<Vec<ConnLog>, LabError> {
    enter(ns)?;
    let rt = runtime()?;
    let end = start + o.duration;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..o.connections {
            let to = SocketAddr::new(servers[i as usize % servers.len()], ECHO_PORT);
            let interval = o.interval;
            // spread the connections' phases over one interval
            let phase = o
                .interval
                .mul_f64(f64::from(i) / f64::from(o.connections.max(1)));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(phase).await;
                messages(to, interval, start, end).await
            }));
        }
        for i in 0..o.bulk {
            let to = SocketAddr::new(servers[i as usize % servers.len()], BULK_PORT);
            let rate = o.bulk_rate;
            tasks.push(tokio::spawn(
                async move { bulk(to, rate, start, end).await },
            ));
        }
        for i in 0..o.udp {
            let to = SocketAddr::new(servers[i as usize % servers.len()], UDP_PORT);
            let interval = o.interval;
            tasks.push(tokio::spawn(async move { udp(to, interval, end).await }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_else(|_| ConnLog {
                error: Some("task panicked".into()),
                ..ConnLog::default()
            }));
        }
        Ok(out)
    })
}

fn ms_since(start: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(start).as_millis() as u64
}

fn broken(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted | K::UnexpectedEof
    )
}

/// [`connect`] for a connection of the run: the stream and the log of the opened connection,
/// or the log of one that never opened.
async fn open(to: SocketAddr, what: &str) -> Result<(tokio::net::TcpStream, ConnLog), ConnLog> {
    match connect(to, what).await {
        Ok(s) => Ok((
            s,
            ConnLog {
                opened: true,
                ..ConnLog::default()
            },
        )),
        Err(e) => Err(ConnLog {
            error: Some(e),
            ..ConnLog::default()
        }),
    }
}

async fn messages(to: SocketAddr, interval: Duration, start: Instant, end: Instant) -> ConnLog {
    let t0 = Instant::now();
    let (mut s, mut log) = match open(to, "connect").await {
        Ok(opened) => opened,
        Err(log) => return log,
    };
    log.stall(start, t0, false);
    let _ = s.set_nodelay(true);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut buf = [0u8; MSG];
    while Instant::now() < end {
        tick.tick().await;
        seq += 1;
        let mut msg = [0u8; MSG];
        for (i, b) in msg.iter_mut().enumerate() {
            *b = (seq as u8).wrapping_add(i as u8);
        }
        msg[..8].copy_from_slice(&seq.to_be_bytes());
        let sent = Instant::now();
        let r = async {
            s.write_all(&msg).await?;
            s.read_exact(&mut buf).await?;
            Ok::<(), std::io::Error>(())
        };
        // a message still unanswered well after the run is a stall to the end
        let limit = (end + GRACE).saturating_duration_since(sent);
        let what = || format!("{to}: message {seq}");
        if log
            .step(start, sent, limit, r, what, " never answered")
            .await
            .is_none()
        {
            return log;
        }
        if buf != msg {
            log.error = Some(format!("{to}: echo of message {seq} differs"));
            return log;
        }
        log.progress += 1;
    }
    // a clean close: our FIN, the server's FIN back
    let closed = async {
        s.shutdown().await?;
        let n = s.read(&mut buf).await?;
        Ok::<usize, std::io::Error>(n)
    };
    match tokio::time::timeout(GRACE, closed).await {
        Ok(Ok(0)) => log.completed = true,
        Ok(Ok(_)) => log.error = Some(format!("{to}: bytes after the close")),
        Ok(Err(e)) => log.failed(&e, format!("{to}: close")),
        Err(_) => log.error = Some(format!("{to}: close not answered")),
    }
    log
}

async fn bulk(to: SocketAddr, rate: u64, start: Instant, end: Instant) -> ConnLog {
    let (mut s, mut log) = match open(to, "bulk connect").await {
        Ok(opened) => opened,
        Err(log) => return log,
    };
    let chunk = vec![0x5au8; CHUNK];
    let mut sent = 0u64;
    let began = Instant::now();
    while Instant::now() < end {
        if rate > 0 {
            // the pace: chunk n leaves no earlier than n chunks' worth of time after the start
            let due = began + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            if Instant::now() >= end {
                break;
            }
        }
        let t = Instant::now();
        let limit = (end + GRACE).saturating_duration_since(t);
        let what = || format!("bulk {to}");
        let written = s.write_all(&chunk);
        let blocked = ": write blocked to the end";
        if log
            .step(start, t, limit, written, what, blocked)
            .await
            .is_none()
        {
            return log;
        }
        sent += CHUNK as u64;
        log.progress += 1;
    }
    let check = async {
        s.shutdown().await?;
        let mut n = [0u8; 8];
        s.read_exact(&mut n).await?;
        Ok::<u64, std::io::Error>(u64::from_be_bytes(n))
    };
    match tokio::time::timeout(GRACE + Duration::from_secs(5), check).await {
        Ok(Ok(n)) if n == sent => log.completed = true,
        Ok(Ok(n)) => log.error = Some(format!("bulk {to}: server read {n} of {sent} bytes")),
        Ok(Err(e)) => log.failed(&e, format!("bulk {to}: close")),
        Err(_) => log.error = Some(format!("bulk {to}: count not answered")),
    }
    log
}

/// A UDP flow: one request every `interval`, each answer awaited for at most [`STALL`]
/// (UDP has no connection to stall or reset: only requests sent and answered count).
async fn udp(to: SocketAddr, interval: Duration, end: Instant) -> ConnLog {
    let mut log = ConnLog {
        udp: true,
        ..ConnLog::default()
    };
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(to)
    } else {
        "[::]:0".parse().unwrap_or(to)
    };
    let Ok(u) = tokio::net::UdpSocket::bind(bind).await else {
        log.error = Some(format!("udp {to}: bind failed"));
        return log;
    };
    if u.connect(to).await.is_err() {
        log.error = Some(format!("udp {to}: connect failed"));
        return log;
    }
    let mut tick = tokio::time::interval(interval);
    let mut b = [0u8; 64];
    let mut seq = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        seq += 1;
        if u.send(&seq.to_be_bytes()).await.is_err() {
            continue;
        }
        if let Ok(Ok(n)) = tokio::time::timeout(STALL, u.recv(&mut b)).await {
            if n == 8 && b[..8] == seq.to_be_bytes() {
                log.udp_answered += 1;
            }
        }
        log.udp_sent += 1;
    }
    log
}

/// The lab `clusterd lab up` left in `dir` (its `lab.json`).
///
/// # Errors
/// No lab there, or an unreadable description.
pub fn load_lab(dir: &Path, prefix: &str) -> Result<LabInfo, LabError> {
    let p = dir.join("lab.json");
    let text = std::fs::read_to_string(&p).map_err(|e| {
        format!(
            "no lab with prefix {prefix} ({}: {e}): `clusterd lab up --prefix {prefix}` first",
            p.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// The report for people: a summary, a line per event, what the nodes dropped.
pub fn render(r: &Report) -> String {
    let mut t = format!(
        "lab run ({}, {} nodes, {:.1} s): {} TCP connections opened, {} completed, {} reset, {} \
         stalled (longest stall {} ms)\n",
        r.backend,
        r.nodes,
        r.duration_ms as f64 / 1000.0,
        r.opened,
        r.completed,
        r.reset,
        r.stalled,
        r.longest_stall_ms
    );
    t += &format!(
        "traffic: {} messages echoed, {:.1} MB bulk, UDP {}/{} answered, ping {}/{} answered\n",
        r.messages,
        r.bulk_bytes as f64 / 1e6,
        r.udp_answered,
        r.udp_sent,
        r.ping_received,
        r.ping_sent
    );
    t += &format!(
        "frames end to end: {} sent, {} lost{}; sync {:.1} kB, cluster CPU {} ms; background \
         TCP retransmissions {:.1}/s, longest delay {} ms\n",
        r.frames_sent,
        r.frames_lost.max(0),
        if r.frames_lost < 0 {
            format!(" ({} duplicated)", -r.frames_lost)
        } else {
            String::new()
        },
        r.sync_bytes as f64 / 1e3,
        r.cpu_ms,
        r.background_retrans_per_s,
        r.background_longest_delay_ms
    );
    if !r.events.is_empty() {
        t += "AT (s)  EVENT        LONGEST DELAY  LONGEST STALL  STALLED  RETRANS CLIENT/SERVER  \
              OUTCOME\n";
        for e in &r.events {
            t += &format!(
                "{:>6.2}  {:<11}  {:>10} ms  {:>10} ms  {:>7}  {:>21}  {}\n",
                e.at_ms as f64 / 1000.0,
                e.event.to_string(),
                e.longest_delay_ms,
                e.longest_stall_ms,
                e.stalled_connections,
                format!("{}/{}", e.client_retrans, e.server_retrans),
                e.outcome
            );
        }
    }
    if !r.dropped.is_empty() {
        let d: Vec<String> = r
            .dropped
            .iter()
            .map(|v| {
                format!(
                    "node {} {} {}",
                    v["node"],
                    v["reason"].as_str().unwrap_or("?"),
                    v["frames"]
                )
            })
            .collect();
        t += &format!("dropped by nodes: {}\n", d.join(", "));
    }
    for e in &r.errors {
        t += &format!("error: {e}\n");
    }
    if let Some(b) = &r.balance {
        use crate::ctl_view::{f2, moves_text};
        t += &format!(
            "balance: imbalance {} at the start, {} at the end (threshold {}); {} identifiers \
             moved in {} rounds\n",
            f2(&b["imbalance_before"]),
            f2(&b["imbalance_after"]),
            f2(&b["threshold"]),
            b["moved"],
            b["rounds"]
        );
        let l = &b["last_round"];
        if !l.is_null() {
            t += &format!(
                "  last round: {} -> {}: {}\n",
                f2(&l["before"]),
                f2(&l["after"]),
                moves_text(l)
            );
        }
    }
    for n in &r.notes {
        t += &format!("note: {n}\n");
    }
    t.trim_end().to_owned()
}
