//! The Prometheus metrics of a node (`metrics = "ADDR:PORT"` in its config): `GET /metrics`
//! over plain HTTP/1.1 answers the text exposition format (version 0.0.4).
//!
//! The numbers are those of the `status` control request: the listener asks the node's loop
//! for a status report through the control channel, exactly as the control socket does, and
//! [`render`] turns the report into metric families ([`METRICS`], documented in
//! `docs/clusterd.md`, "Metrics"). Every sample carries the label `node`.
//!
//! The server is small and defensive: one request per connection (`Connection: close`), the
//! request head bounded to [`MAX_HEAD`] bytes and read within [`READ_TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] connections at once; other paths get 404, other methods 405, a request
//! that is not HTTP 400, a head too large 431.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::core::ids::NodeId;
use crate::daemon::control::ControlRequest;
use crate::daemon::protocol::{Request, Response};

/// Longest request head read (request line and headers).
pub const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing the answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the node's loop may take to answer the status request.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once (more are answered 503 and closed).
pub const MAX_CONNECTIONS: usize = 16;
/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (reset by a restart); the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A sample's value: integers stay exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    /// An unsigned integer.
    U(u64),
    /// A float.
    F(f64),
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Num::U(n) => write!(f, "{n}"),
            Num::F(x) if x.is_nan() => f.write_str("NaN"),
            Num::F(x) if x.is_infinite() => f.write_str(if x > 0.0 { "+Inf" } else { "-Inf" }),
            Num::F(x) => write!(f, "{x}"),
        }
    }
}

/// The text exposition format, written family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// Escapes a label value (backslash, double quote, newline).
fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl Exposition {
    /// Starts family `name`: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    /// One sample of family `name`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Num) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(v, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Where a metric's samples come from in the status report.
#[derive(Clone, Copy)]
pub enum Src {
    /// The number at this JSON pointer (no sample when absent or null).
    At(&'static str),
    /// The boolean at this JSON pointer, as 1 or 0.
    Flag(&'static str),
    /// The object at this JSON pointer, name to number: one sample per name, with the name as
    /// the value of label `.1`.
    Map(&'static str, &'static str),
    /// Several numbers, one sample each: label `.0` set to each name, from each pointer.
    Each(&'static str, &'static [(&'static str, &'static str)]),
    /// A list of objects at `.0` (one per peer, each with the peer's id at key `.1`): one
    /// sample per element from its key `.2`, labelled `peer`.
    Peers(&'static str, &'static str, &'static str),
    /// The SAs this node runs, labelled `placement`: `card` and `software`.
    EspPlacement,
    /// Computed from the report.
    Fn(fn(&Value) -> Option<Num>),
}

/// One metric: its name, type, meaning and source.
pub struct Def {
    /// The name (`clusterd_` prefix; counters end in `_total`).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Where its samples come from.
    pub src: Src,
}

const fn c(name: &'static str, help: &'static str, src: Src) -> Def {
    Def {
        name,
        kind: Kind::Counter,
        help,
        src,
    }
}

const fn g(name: &'static str, help: &'static str, src: Src) -> Def {
    Def {
        name,
        kind: Kind::Gauge,
        help,
        src,
    }
}

fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Bool(b) => Some(Num::U(u64::from(*b))),
        Value::Number(n) => n.as_u64().map(Num::U).or_else(|| n.as_f64().map(Num::F)),
        _ => None,
    }
}

/// A label value in snake case (`NotOurs` -> `not_ours`; snake case stays).
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn u(status: &Value, ptr: &str) -> u64 {
    status.pointer(ptr).and_then(Value::as_u64).unwrap_or(0)
}

/// Every metric the node serves, in the order served (the table in `docs/clusterd.md`,
/// "Metrics", lists the same).
pub const METRICS: &[Def] = &[
    // the node
    g(
        "clusterd_uptime_seconds",
        "Seconds since the node started.",
        Src::Fn(|s| Some(Num::F(s.get("uptime_ms")?.as_u64()? as f64 / 1000.0))),
    ),
    g(
        "clusterd_ready",
        "1 when the node's common table is synced and it takes traffic for what it owns.",
        Src::Flag("/ready"),
    ),
    g(
        "clusterd_fenced",
        "1 while the node is fenced (cut off from a quorum: it handles no traffic).",
        Src::Flag("/fenced"),
    ),
    g(
        "clusterd_leaving",
        "1 during a graceful leave (SIGTERM, SIGINT, leave).",
        Src::Flag("/leaving"),
    ),
    // consensus
    g(
        "clusterd_raft_term",
        "The current Raft term.",
        Src::At("/term"),
    ),
    g(
        "clusterd_raft_leader",
        "The node id of the Raft leader this node knows (0: none).",
        Src::Fn(|s| s.get("leader").map(|l| Num::U(l.as_u64().unwrap_or(0)))),
    ),
    g(
        "clusterd_raft_is_leader",
        "1 when this node is the Raft leader.",
        Src::Flag("/is_leader"),
    ),
    g(
        "clusterd_raft_voters",
        "Voters in the current Raft configuration.",
        Src::Fn(|s| {
            s.get("voters")
                .and_then(Value::as_array)
                .map(|v| Num::U(v.len() as u64))
        }),
    ),
    g(
        "clusterd_raft_log_bytes",
        "Bytes of the Raft log file on disk.",
        Src::At("/raft_state/log_bytes"),
    ),
    c(
        "clusterd_raft_refused_total",
        "Raft messages refused by the message checks.",
        Src::At("/raft_state/refused"),
    ),
    g(
        "clusterd_epoch_applied",
        "The allocation epoch this node applied.",
        Src::At("/epoch"),
    ),
    g(
        "clusterd_epoch_agreed",
        "The latest allocation epoch agreed through Raft.",
        Src::At("/agreed_epoch"),
    ),
    // tables
    g(
        "clusterd_owned_identifiers",
        "Distribution identifiers this node owns in the applied epoch.",
        Src::At("/owned"),
    ),
    g(
        "clusterd_common_entries",
        "Entries of the common (replicated) table.",
        Src::At("/common_entries"),
    ),
    g(
        "clusterd_common_bytes",
        "Heap bytes of the common table.",
        Src::At("/common_bytes"),
    ),
    g(
        "clusterd_node_table_entries",
        "Entries of the node-specific table (card and software overflow).",
        Src::At("/node_table_entries"),
    ),
    g(
        "clusterd_card_entries",
        "Entries in the card's CAM.",
        Src::At("/card_entries"),
    ),
    g(
        "clusterd_card_capacity",
        "CAM entries used before the software overflow takes over (card_capacity).",
        Src::At("/card_capacity"),
    ),
    g(
        "clusterd_software_overflow_entries",
        "Entries of the node-specific table kept in host memory (the card is full).",
        Src::At("/software_overflow_entries"),
    ),
    // packets through the state core
    c(
        "clusterd_packets_total",
        "Packets the node's state core handled (wire, interfaces, punted by the card).",
        Src::At("/core/packets"),
    ),
    c(
        "clusterd_packets_not_ours_total",
        "Packets of identifiers this node does not own.",
        Src::At("/core/not_ours"),
    ),
    c(
        "clusterd_packets_hit_total",
        "Packets forwarded on an existing entry.",
        Src::At("/core/hits"),
    ),
    c(
        "clusterd_connections_created_total",
        "Entries created (first packets the rules allowed).",
        Src::At("/core/created"),
    ),
    c(
        "clusterd_connections_expired_total",
        "Entries removed after their idle timeout.",
        Src::At("/core/expired"),
    ),
    c(
        "clusterd_connections_closed_total",
        "Entries removed when their connection closed.",
        Src::At("/core/closed"),
    ),
    c(
        "clusterd_packets_dropped_total",
        "Packets dropped by the state core, by reason.",
        Src::Each(
            "reason",
            &[
                ("tcp_no_state", "/core/dropped_tcp_no_state"),
                ("no_state", "/core/dropped_no_state"),
                ("rule", "/core/dropped_rule"),
                ("table_full", "/core/dropped_table_full"),
                ("parse", "/core/dropped_parse"),
                ("bad_ike", "/core/dropped_bad_ike"),
            ],
        ),
    ),
    c(
        "clusterd_verdicts_total",
        "Verdicts answered for packets from the wire or the interfaces, by verdict.",
        Src::Map("/verdicts", "verdict"),
    ),
    c(
        "clusterd_card_install_failures_total",
        "Entries the card refused to install.",
        Src::At("/core/install_failures"),
    ),
    // the card's packet path
    c(
        "clusterd_card_frames_total",
        "Frames that entered the card's pipeline.",
        Src::At("/card_path/frames_in"),
    ),
    c(
        "clusterd_card_forwarded_total",
        "Frames the card forwarded itself (fast path).",
        Src::At("/card_path/forwarded_by_card"),
    ),
    c(
        "clusterd_card_punted_total",
        "Frames the card punted to the host (slow path).",
        Src::At("/card_path/punted"),
    ),
    c(
        "clusterd_card_dropped_total",
        "Frames the card dropped.",
        Src::At("/card_path/dropped"),
    ),
    c(
        "clusterd_card_reason_total",
        "Frames the card counted per reason (punt and drop reasons).",
        Src::Map("/card_path/reasons", "reason"),
    ),
    c(
        "clusterd_card_host_sent_total",
        "Frames the host sent out through the card.",
        Src::At("/card_path/host_sent"),
    ),
    g(
        "clusterd_card_queued_frames",
        "Frames waiting in the card for the host.",
        Src::At("/card_path/queued"),
    ),
    c(
        "clusterd_card_lookups_total",
        "Data-path lookups in the card's CAM.",
        Src::At("/card_path/dp_lookups"),
    ),
    c(
        "clusterd_card_lookup_hits_total",
        "Data-path lookups in the card's CAM that hit.",
        Src::At("/card_path/dp_hits"),
    ),
    // replication
    c(
        "clusterd_sync_records_sent_total",
        "Records queued on the replication transport.",
        Src::At("/sync/records_sent"),
    ),
    c(
        "clusterd_sync_records_received_total",
        "Records delivered by the replication transport.",
        Src::At("/sync/records_delivered"),
    ),
    c(
        "clusterd_sync_frames_sent_total",
        "Frames sealed and sent.",
        Src::At("/sync/frames_sent"),
    ),
    c(
        "clusterd_sync_frames_received_total",
        "Frames accepted.",
        Src::At("/sync/frames_received"),
    ),
    c(
        "clusterd_sync_bytes_sent_total",
        "Bytes of the frames sent.",
        Src::At("/sync/bytes_sent"),
    ),
    c(
        "clusterd_sync_bytes_received_total",
        "Bytes of the frames accepted.",
        Src::At("/sync/bytes_received"),
    ),
    c(
        "clusterd_sync_retransmits_total",
        "Data frames sent again.",
        Src::At("/sync/retransmits"),
    ),
    c(
        "clusterd_sync_auth_failures_total",
        "Frames refused for their authentication: decryption failed (another cluster key, \
         forged or corrupted) or a bad signature (a wrong public key, a member speaking as \
         another).",
        Src::Fn(|s| {
            s.get("sync")?.as_object()?;
            Some(Num::U(
                u(s, "/sync/rejected_auth") + u(s, "/sync/rejected_signature"),
            ))
        }),
    ),
    c(
        "clusterd_sync_rejected_total",
        "Frames refused, by reason.",
        Src::Each(
            "reason",
            &[
                ("garbled", "/sync/rejected_garbled"),
                ("version", "/sync/rejected_version"),
                ("auth", "/sync/rejected_auth"),
                ("signature", "/sync/rejected_signature"),
                ("replay", "/sync/rejected_replay"),
                ("misdirected", "/sync/rejected_misdirected"),
                ("unknown_peer", "/sync/rejected_unknown_peer"),
                ("malformed", "/sync/rejected_malformed"),
                ("own_id", "/sync/rejected_own_id"),
            ],
        ),
    ),
    c(
        "clusterd_sync_duplicate_ids_total",
        "Duplicate node ids seen (two processes with one node id).",
        Src::At("/sync/duplicate_ids"),
    ),
    c(
        "clusterd_sync_send_failures_total",
        "Datagrams the replication socket could not send.",
        Src::At("/sync_send_failures"),
    ),
    g(
        "clusterd_sync_peer_in_flight",
        "Batches sent to a peer and not acknowledged yet.",
        Src::Peers("/sync_peers", "peer", "in_flight"),
    ),
    g(
        "clusterd_peer_alive",
        "1 while a peer is alive (heard within the failure time).",
        Src::Peers("/peers", "node", "alive"),
    ),
    g(
        "clusterd_peer_ready",
        "1 while a peer says it is ready.",
        Src::Peers("/peers", "node", "ready"),
    ),
    // ESP
    g(
        "clusterd_esp_sas",
        "SAs this node runs, by where they run (card or software).",
        Src::EspPlacement,
    ),
    g(
        "clusterd_esp_replicated_sas",
        "SAs known to this node (replicated, whoever runs them).",
        Src::At("/sa_count"),
    ),
    c(
        "clusterd_esp_packets_total",
        "ESP packets, by result.",
        Src::Each(
            "result",
            &[
                ("sealed", "/esp/sealed"),
                ("accepted", "/esp/accepted"),
                ("replay", "/esp/replays"),
                ("bad", "/esp/bad"),
            ],
        ),
    ),
    c(
        "clusterd_esp_engine_packets_total",
        "ESP packets handed to an engine, by engine (card or software).",
        Src::Each(
            "engine",
            &[("card", "/esp/on_card"), ("software", "/esp/in_software")],
        ),
    ),
    c(
        "clusterd_esp_card_fallbacks_total",
        "SAs that went to the software engine although the card has an ESP engine.",
        Src::At("/esp/card_fallbacks"),
    ),
    c(
        "clusterd_esp_seq_jumps_total",
        "ESP outbound sequence jumps on takeover.",
        Src::At("/sa_seq_jumps"),
    ),
    // packets held for a handover
    c(
        "clusterd_hold_held_total",
        "Packets held while their identifier waited for a handover.",
        Src::At("/hold/held"),
    ),
    c(
        "clusterd_hold_released_total",
        "Held packets released after the handover.",
        Src::At("/hold/released"),
    ),
    c(
        "clusterd_hold_dropped_total",
        "Held packets dropped (hold full, or waited too long).",
        Src::At("/hold/dropped"),
    ),
    g(
        "clusterd_hold_waiting",
        "Packets held now.",
        Src::At("/hold/now"),
    ),
    // errors
    c(
        "clusterd_errors_total",
        "Errors, by kind: card (card failures), decode (records that did not decode), apply \
         (records or Raft entries not applied), records_dropped (records the transport \
         refused).",
        Src::Each(
            "kind",
            &[
                ("card", "/card_errors"),
                ("decode", "/decode_errors"),
                ("apply", "/apply_errors"),
                ("records_dropped", "/records_dropped"),
            ],
        ),
    ),
];

/// The exposition text of one status report of node `node`: every family of [`METRICS`]
/// (with `# HELP` and `# TYPE`), samples where the report has the numbers.
pub fn render(status: &Value, node: NodeId) -> String {
    let node = node.0.to_string();
    let base = [("node", node.as_str())];
    let mut x = Exposition::default();
    for d in METRICS {
        x.family(d.name, d.kind, d.help);
        match d.src {
            Src::At(p) | Src::Flag(p) => {
                if let Some(v) = status.pointer(p).and_then(num) {
                    x.sample(d.name, &base, v);
                }
            }
            Src::Map(p, label) => {
                if let Some(m) = status.pointer(p).and_then(Value::as_object) {
                    for (k, v) in m {
                        if let Some(v) = num(v) {
                            let k = snake(k);
                            x.sample(d.name, &[("node", &node), (label, &k)], v);
                        }
                    }
                }
            }
            Src::Each(label, items) => {
                for (k, p) in items {
                    if let Some(v) = status.pointer(p).and_then(num) {
                        x.sample(d.name, &[("node", &node), (label, k)], v);
                    }
                }
            }
            Src::Peers(p, id_key, key) => {
                for e in status
                    .pointer(p)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let (Some(id), Some(v)) =
                        (e.get(id_key).and_then(num), e.get(key).and_then(num))
                    else {
                        continue;
                    };
                    let id = id.to_string();
                    x.sample(d.name, &[("node", &node), ("peer", &id)], v);
                }
            }
            Src::EspPlacement => {
                let Some(all) = status.get("esp_installed").and_then(Value::as_u64) else {
                    continue;
                };
                let card = u(status, "/esp_installed_on_card");
                x.sample(
                    d.name,
                    &[("node", &node), ("placement", "card")],
                    Num::U(card),
                );
                let soft = Num::U(all.saturating_sub(card));
                x.sample(d.name, &[("node", &node), ("placement", "software")], soft);
            }
            Src::Fn(f) => {
                if let Some(v) = f(status) {
                    x.sample(d.name, &base, v);
                }
            }
        }
    }
    x.finish()
}

/// Binds the metrics listener (done at start, so a taken port stops the node with the
/// address named).
///
/// # Errors
/// The bind error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` on `listener` until the process ends: each scrape asks the node's
/// loop for a status report through `tx` (the control channel).
pub fn serve(listener: TcpListener, node: NodeId, tx: mpsc::Sender<ControlRequest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        // accept errors (out of file descriptors) may repeat every retry: one line a second
        let mut limit = crate::daemon::logging::RateLimiter::new(1);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            connection(stream, node, tx).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tokio::spawn(async move {
                            let mut stream = stream;
                            let r = reply(503, "Service Unavailable", "too many connections\n");
                            let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&r)).await;
                        });
                    }
                },
                Err(e) => {
                    use crate::daemon::logging::Verdict;
                    if let Verdict::Log { suppressed } = limit.check(std::time::Instant::now()) {
                        tracing::warn!(target: "clusterd::metrics", node = node.0,
                            "metrics listener: accept failed: {e}; retrying in 100 ms \
                             ({suppressed} more such lines suppressed before this one)");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// Why a request head could not be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The client closed (or the socket failed) before a whole head.
    Closed,
    /// Longer than [`MAX_HEAD`].
    TooLarge,
}

/// Reads a request head (up to the empty line), at most [`MAX_HEAD`] bytes.
async fn read_head<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = r.read(&mut buf).await.map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        let tail = &head[from..];
        let end = find(tail, b"\r\n\r\n")
            .map(|i| from + i + 4)
            .or_else(|| find(tail, b"\n\n").map(|i| from + i + 2));
        if let Some(end) = end {
            if end > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (`head`: `HEAD /metrics`, the headers only).
    Metrics {
        /// A HEAD request.
        head: bool,
    },
    /// An answer without the node: status code, reason, body.
    Answer(u16, &'static str, &'static str),
}

/// Routes one request head: `GET` or `HEAD` of `/metrics` (a query string is ignored).
pub fn route(head: &[u8]) -> Route {
    let bad = Route::Answer(400, "Bad Request", "not an HTTP/1.x request\n");
    let Ok(text) = std::str::from_utf8(head) else {
        return bad;
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return bad;
    }
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return bad;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Route::Answer(404, "Not Found", "not found; the metrics are at /metrics\n");
    }
    match method {
        "GET" => Route::Metrics { head: false },
        "HEAD" => Route::Metrics { head: true },
        _ => Route::Answer(
            405,
            "Method Not Allowed",
            "method not allowed; use GET /metrics\n",
        ),
    }
}

/// An HTTP/1.1 answer with a plain-text body.
fn reply(code: u16, reason: &str, body: &str) -> Vec<u8> {
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Asks the node's loop for its status report.
async fn status(tx: &mpsc::Sender<ControlRequest>) -> Option<Value> {
    let (otx, orx) = oneshot::channel();
    tokio::time::timeout(STATUS_TIMEOUT, tx.send((Request::Status, otx)))
        .await
        .ok()?
        .ok()?;
    match tokio::time::timeout(STATUS_TIMEOUT, orx).await {
        Ok(Ok(Response::Status(v))) => Some(v),
        _ => None,
    }
}

async fn connection(mut stream: TcpStream, node: NodeId, tx: mpsc::Sender<ControlRequest>) {
    let answer = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => reply(
            408,
            "Request Timeout",
            "request head not received in time\n",
        ),
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::TooLarge)) => reply(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ),
        Ok(Ok(head)) => match route(&head) {
            Route::Answer(code, reason, body) => reply(code, reason, body),
            Route::Metrics { head } => match status(&tx).await {
                None => reply(
                    503,
                    "Service Unavailable",
                    "the node did not answer in time\n",
                ),
                Some(st) => {
                    let body = render(&st, node);
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: \
                         {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    if !head {
                        r.extend_from_slice(body.as_bytes());
                    }
                    r
                }
            },
        },
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
    // what the client still sends (a body, the rest of a head too large) is read and dropped
    // for a moment before the socket closes: closing with unread data would reset the
    // connection, and the client could lose the answer
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut sink = [0u8; 4096];
        let mut left = 256 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn families_have_help_type_and_samples_labels() {
        let mut x = Exposition::default();
        x.family("clusterd_x_total", Kind::Counter, "Some \\ help\nnext.");
        x.sample("clusterd_x_total", &[("node", "1")], Num::U(7));
        x.sample(
            "clusterd_x_total",
            &[("node", "1"), ("reason", "a\"b\\c\nd")],
            Num::F(0.5),
        );
        x.family("clusterd_y", Kind::Gauge, "Y.");
        x.sample("clusterd_y", &[], Num::F(f64::NAN));
        x.sample("clusterd_y", &[], Num::F(f64::INFINITY));
        assert_eq!(
            x.finish(),
            "# HELP clusterd_x_total Some \\\\ help\\nnext.\n\
             # TYPE clusterd_x_total counter\n\
             clusterd_x_total{node=\"1\"} 7\n\
             clusterd_x_total{node=\"1\",reason=\"a\\\"b\\\\c\\nd\"} 0.5\n\
             # HELP clusterd_y Y.\n\
             # TYPE clusterd_y gauge\n\
             clusterd_y NaN\n\
             clusterd_y +Inf\n"
        );
        assert_eq!(Num::U(u64::MAX).to_string(), "18446744073709551615");
    }

    #[test]
    fn names_follow_the_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for d in METRICS {
            assert!(d.name.starts_with("clusterd_"), "{}", d.name);
            assert!(
                d.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                d.name
            );
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                d.name
            );
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(!d.help.is_empty() && !d.help.contains('\n'));
        }
    }

    #[test]
    fn every_metric_is_documented() {
        let doc = include_str!("../../../../docs/clusterd.md");
        let section = doc
            .split("## Metrics")
            .nth(1)
            .expect("docs/clusterd.md has a Metrics section");
        for d in METRICS {
            let row = format!("| `{}` | {} |", d.name, d.kind.name());
            assert!(
                section.contains(&row),
                "docs/clusterd.md lacks the row {row}"
            );
        }
    }

    /// A status report as the node builds one (a subset of its keys).
    fn report() -> Value {
        json!({
            "node": 2, "uptime_ms": 1500, "ready": true, "fenced": false, "leaving": false,
            "term": 4, "leader": null, "is_leader": false, "voters": [1, 2, 3],
            "epoch": 9, "agreed_epoch": 9, "owned": 85,
            "core": {"packets": 10, "dropped_rule": 2, "dropped_tcp_no_state": 1},
            "verdicts": {"Hit": 3, "NotOurs": 4},
            "card_path": null,
            "sync": {"records_sent": 5, "rejected_auth": 1, "rejected_signature": 2},
            "peers": [{"node": 1, "alive": true, "ready": true}, {"node": 3, "alive": false}],
            "sync_peers": [{"peer": 1, "in_flight": 0}],
            "esp_installed": 3, "esp_installed_on_card": 1,
            "hold": {"held": 1, "released": 1, "dropped": 0, "now": 0},
            "card_errors": 0, "apply_errors": 1,
        })
    }

    #[test]
    fn render_maps_the_status_report() {
        let text = render(&report(), NodeId(2));
        let has = |l: &str| assert!(text.lines().any(|x| x == l), "no line {l:?} in\n{text}");
        has("# TYPE clusterd_packets_total counter");
        has("clusterd_packets_total{node=\"2\"} 10");
        has("clusterd_uptime_seconds{node=\"2\"} 1.5");
        has("clusterd_ready{node=\"2\"} 1");
        has("clusterd_fenced{node=\"2\"} 0");
        has("clusterd_raft_leader{node=\"2\"} 0");
        has("clusterd_raft_voters{node=\"2\"} 3");
        has("clusterd_owned_identifiers{node=\"2\"} 85");
        has("clusterd_packets_dropped_total{node=\"2\",reason=\"rule\"} 2");
        has("clusterd_verdicts_total{node=\"2\",verdict=\"hit\"} 3");
        assert_eq!(snake("NotOurs"), "not_ours");
        assert_eq!(snake("tcp_control"), "tcp_control");
        has("clusterd_sync_auth_failures_total{node=\"2\"} 3");
        has("clusterd_peer_alive{node=\"2\",peer=\"1\"} 1");
        has("clusterd_peer_alive{node=\"2\",peer=\"3\"} 0");
        has("clusterd_esp_sas{node=\"2\",placement=\"software\"} 2");
        has("clusterd_errors_total{node=\"2\",kind=\"apply\"} 1");
        // no card path: the family is there, without samples
        has("# TYPE clusterd_card_frames_total counter");
        assert!(!text.contains("clusterd_card_frames_total{"), "{text}");
        // every line is a comment or `name{labels} value`
        for l in text.lines() {
            if l.starts_with("# HELP ") || l.starts_with("# TYPE ") {
                continue;
            }
            let (name, value) = l.rsplit_once(' ').unwrap();
            assert!(name.starts_with("clusterd_") && name.ends_with('}'), "{l}");
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
        // nothing in the report: families only, no panic
        let empty = render(&json!({}), NodeId(1));
        assert!(empty.lines().all(|l| l.starts_with('#')), "{empty}");
        let junk = render(
            &json!({"core": 5, "verdicts": [1], "peers": {"a": 1}}),
            NodeId(1),
        );
        assert!(junk.lines().all(|l| l.starts_with('#')), "{junk}");
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { head: true }
        );
        let code = |r: Route| match r {
            Route::Answer(c, ..) => c,
            Route::Metrics { .. } => 200,
        };
        assert_eq!(code(route(b"GET / HTTP/1.1\r\n\r\n")), 404);
        assert_eq!(code(route(b"GET /metricsx HTTP/1.1\r\n\r\n")), 404);
        assert_eq!(code(route(b"POST /metrics HTTP/1.1\r\n\r\n")), 405);
        assert_eq!(code(route(b"DELETE /metrics HTTP/1.1\r\n\r\n")), 405);
        for bad in [
            &b"hello\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"",
        ] {
            assert_eq!(code(route(bad)), 400, "{bad:?}");
        }
    }

    #[test]
    fn heads_are_bounded() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut ok: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nextra";
            assert_eq!(
                read_head(&mut ok).await.unwrap(),
                b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
            );
            let big = vec![b'a'; MAX_HEAD + 10];
            assert_eq!(read_head(&mut &big[..]).await, Err(HeadError::TooLarge));
            let mut short: &[u8] = b"GET /metrics HTTP/1.1\r\n";
            assert_eq!(read_head(&mut short).await, Err(HeadError::Closed));
        });
    }
}
