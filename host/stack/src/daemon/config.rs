//! The node configuration file of `clusterd run --config FILE` (format in `docs/clusterd.md`).
//!
//! TOML, read through serde: settings first, then one `[[peer]]` table per other member. Every
//! error names the line and says how to fix it; an unknown setting is refused with the nearest
//! known one ("did you mean"). `clusterd check-config FILE` checks a file without starting.
//!
//! ```text
//! node = 1                          # this node's id, 1..=65535
//! listen = "127.0.0.1:7101"         # UDP address for replication and consensus
//! control = "node1.sock"            # Unix control socket (relative to the config file)
//! key_file = "cluster.key"          # cluster key file, 64 hex digits (or: key = "HEX")
//! identity_file = "node1.id"        # this node's own signing key (clusterd keygen --identity)
//! role = "member"                   # or: "witness"
//! voter = true                      # false: this node is a learner (its peers say voter = false)
//! card = "model"                    # card backend spec (model, verilator, vfio:..., pci:...)
//! wire = "127.0.0.1:7201"           # UDP address where the wire delivers packets (optional)
//! outside = "eth1"                  # the card's port 0 on this interface (with inside: optional)
//! inside = "eth2"                   # the card's port 1 on this interface
//! identifiers = 256                 # distribution identifiers, power of two up to 4096
//! state_dir = "node1.state"         # consensus log and hard state (relative to the file)
//! heartbeat_ms = 50                 # heartbeat interval
//! failure_ms = 200                  # silence after which the leader declares a node failed
//! flush_ms = 1                      # replication batch flush interval
//! card_capacity = 4096              # CAM entries used before the software overflow takes over
//! seq_jump = 4096                   # ESP outbound sequence safety jump on takeover
//! balance_interval_ms = 5000        # automatic load balancing round (default 0: off)
//! balance_threshold = 1.25          # imbalance above which a round moves identifiers
//! balance_low = 1.1                 # rounds go on until the imbalance is at or below this
//! balance_max_moves = 4             # identifiers moved per round at most
//! balance_min_pps = 100             # no move while the cluster carries fewer packets/s
//! weight = 1                        # this node's share of the load (0 to 1000)
//! rules = "rules.txt"               # rule set file (default: allow every valid first packet)
//! log_level = "info"                # error, warn, info, debug, trace (RUST_LOG wins when set)
//! log_format = "text"               # or: "json" (one JSON object per line)
//! metrics = "127.0.0.1:9464"        # Prometheus metrics at GET /metrics (optional)
//!
//! [[peer]]                          # one table per other member
//! id = 2
//! addr = "127.0.0.1:7102"
//! key = "HEX"                       # its public key (with identity_file)
//!
//! [[peer]]
//! id = 3
//! addr = "127.0.0.1:7103"
//! role = "witness"                  # a witness votes but handles no traffic
//!
//! [[peer]]
//! id = 4
//! addr = "127.0.0.1:7104"
//! voter = false                     # added to a running cluster: a learner until promoted
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::core::ids::{IdCount, NodeId};
use crate::core::member::balance::BalanceConfig;
use crate::sync::ClusterKey;

/// A member's role (the state core's: members own identifiers, witnesses only vote).
pub use crate::core::member::Role;

/// Another member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its id.
    pub id: NodeId,
    /// Where it listens for sync frames.
    pub addr: SocketAddr,
    /// Its role.
    pub role: Role,
    /// Whether it votes in consensus (false: a Raft learner, e.g. a node added later).
    pub voter: bool,
    /// Its public key (`key=HEX` on its line), with which its frames must be signed.
    pub pubkey: Option<crate::sync::PublicKey>,
}

/// A parsed node configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub node: NodeId,
    /// This node's role.
    pub role: Role,
    /// Whether this node votes (false: Raft learner).
    pub voter: bool,
    /// Sync/consensus UDP address.
    pub listen: SocketAddr,
    /// Control socket path.
    pub control: PathBuf,
    /// Group that may use the control socket besides root and the daemon's user (the
    /// socket is then 0660 and owned by it; without one it is 0600).
    pub control_group: Option<String>,
    /// Cluster key.
    pub key: ClusterKey,
    /// This node's identity file (`identity_file`): with one, frames are signed and every peer
    /// line names its public key.
    pub identity: Option<PathBuf>,
    /// The other members.
    pub peers: Vec<PeerConfig>,
    /// Card backend spec.
    pub card: String,
    /// Wire packet address, if this node takes traffic from a wire.
    pub wire: Option<SocketAddr>,
    /// Interfaces the card's ports 0 and 1 are bridged to (`outside`, `inside`), if any.
    pub interfaces: Option<(String, String)>,
    /// Identifier count.
    pub identifiers: IdCount,
    /// Consensus state directory.
    pub state_dir: PathBuf,
    /// Heartbeat interval in ms.
    pub heartbeat_ms: u64,
    /// Failure detection threshold in ms.
    pub failure_ms: u64,
    /// Batch flush interval in ms.
    pub flush_ms: u64,
    /// CAM entries used before software overflow.
    pub card_capacity: usize,
    /// ESP outbound sequence jump on takeover.
    pub seq_jump: u64,
    /// Automatic load balancing (`balance_interval_ms`, `balance_threshold`, `balance_low`,
    /// `balance_max_moves`, `weight`).
    pub balance: BalanceConfig,
    /// Rule file, if any.
    pub rules: Option<PathBuf>,
    /// The log filter (`log_level`: a level, or `level,target=level,...`); `RUST_LOG` wins
    /// when set.
    pub log_level: Option<String>,
    /// How log lines are written (`log_format`).
    pub log_format: LogFormat,
    /// Where the Prometheus metrics are served (`metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// How the daemon writes its log lines on stderr (`log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (no colours unless stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, node, message.
    Json,
}

/// The levels a `log_level` directive may name.
pub const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log filter: comma-separated directives, each a level or `target=level` (targets
/// such as `clusterd::raft`). Returns the problem with the first bad directive.
///
/// # Errors
/// A sentence naming the bad directive and the levels.
pub fn check_log_filter(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err("is empty".into());
    }
    for d in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = match d.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, d),
        };
        if let Some(t) = target {
            let ok = !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'-');
            if !ok {
                return Err(format!(
                    "{d:?} does not name a target (e.g. clusterd::raft)"
                ));
            }
        }
        if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{level:?} is not a level (one of {})",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// A configuration error: the line (0 when the problem is a missing setting) and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line number, or 0 for a whole-file problem.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}; fix: {}", self.problem, self.fix)
        } else {
            write!(f, "line {}: {}; fix: {}", self.line, self.problem, self.fix)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(line: usize, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError {
        line,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// The file's settings, each with an example (TOML) for the fixes.
const KEYS: &[(&str, &str)] = &[
    ("node", "1"),
    ("listen", "\"127.0.0.1:7101\""),
    ("control", "\"node1.sock\""),
    ("control_group", "\"clusterd\""),
    ("key", "\"<64 hex digits from clusterd keygen>\""),
    ("key_file", "\"cluster.key\""),
    ("identity_file", "\"node1.id\""),
    ("peer", "[[peer]]"),
    ("role", "\"member\""),
    ("voter", "true"),
    ("card", "\"model\""),
    ("wire", "\"127.0.0.1:7201\""),
    ("outside", "\"eth1\""),
    ("inside", "\"eth2\""),
    ("identifiers", "256"),
    ("state_dir", "\"node1.state\""),
    ("heartbeat_ms", "50"),
    ("failure_ms", "200"),
    ("flush_ms", "1"),
    ("card_capacity", "4096"),
    ("seq_jump", "4096"),
    ("balance_interval_ms", "5000"),
    ("balance_threshold", "1.25"),
    ("balance_low", "1.1"),
    ("balance_max_moves", "4"),
    ("balance_min_pps", "100"),
    ("weight", "1"),
    ("rules", "\"rules.txt\""),
    ("log_level", "\"info\""),
    ("log_format", "\"text\""),
    ("metrics", "\"127.0.0.1:9464\""),
];

/// The settings of a `[[peer]]` table, each with an example.
const PEER_KEYS: &[(&str, &str)] = &[
    ("id", "2"),
    ("addr", "\"127.0.0.1:7102\""),
    ("role", "\"witness\""),
    ("voter", "false"),
    ("key", "\"<its public key>\""),
];

/// How a peer is written.
const PEER_FIX: &str = "write each other member as a table: a line [[peer]], then id = 2 and \
                        addr = \"127.0.0.1:7102\" (optionally role = \"witness\", voter = false \
                        for a learner, key = \"<its public key>\")";

fn example(table: &[(&str, &'static str)], key: &str) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == key).map(|(_, e)| *e)
}

/// The 1-based line of byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Levenshtein distance (for "did you mean").
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known name closest to `word`, if it is close enough to be a typo.
fn suggest<'a>(word: &str, known: &[(&'a str, &str)]) -> Option<&'a str> {
    known
        .iter()
        .map(|(k, _)| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= (word.len().max(k.len()) / 2).max(2))
        .min()
        .map(|(_, k)| k)
}

fn unknown_key(line: usize, key: &str, known: &[(&str, &str)], place: &str) -> ConfigError {
    let names: Vec<&str> = known.iter().map(|(k, _)| *k).collect();
    let fix = match suggest(key, known) {
        Some(s) => format!(
            "did you mean {s:?}? (the settings{place}: {})",
            names.join(", ")
        ),
        None => format!("use one of the settings{place}: {}", names.join(", ")),
    };
    err(line, format!("unknown setting {key:?}{place}"), fix)
}

/// Where each setting of the file is: the line of every top-level key, and per `[[peer]]`
/// table its first line and the line of each of its keys. Unknown keys, a `peer` that is not
/// an array of tables and TOML syntax errors are refused here, before serde.
struct Layout {
    keys: BTreeMap<String, usize>,
    peers: Vec<(usize, BTreeMap<String, usize>)>,
}

/// The fix for a TOML syntax error on `line_text`: the likely mistakes of a file in the
/// earlier `key = value` format first.
fn syntax_fix(message: &str, line_text: &str) -> String {
    let t = line_text.trim();
    if message.contains("duplicate key") {
        return "keep one of the two settings (each is set once; peers are [[peer]] tables)".into();
    }
    if let Some((k, v)) = t.split_once('=') {
        let (k, v) = (k.trim(), v.split('#').next().unwrap_or("").trim());
        if k == "peer" {
            return format!("peers are tables now; {PEER_FIX}");
        }
        if let Some(ex) = example(KEYS, k) {
            if ex.starts_with('"') && !v.starts_with('"') && !v.starts_with('\'') {
                return format!("TOML strings are quoted: write {k} = \"{v}\"");
            }
            return format!("write e.g. {k} = {ex}");
        }
    }
    "write settings as TOML: key = value, strings in double quotes, [[peer]] tables last \
     (docs/clusterd.md)"
        .into()
}

fn layout(text: &str) -> Result<Layout, ConfigError> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        let line = line_at(text, at);
        let line_text = text.lines().nth(line - 1).unwrap_or("");
        let message = e.message().lines().next().unwrap_or("").trim().to_owned();
        err(
            line,
            format!("not TOML: {message}"),
            syntax_fix(&message, line_text),
        )
    })?;
    let mut out = Layout {
        keys: BTreeMap::new(),
        peers: Vec::new(),
    };
    for (k, v) in doc.get_ref() {
        let name = k.get_ref().as_ref();
        let line = line_at(text, k.span().start);
        if example(KEYS, name).is_none() {
            return Err(unknown_key(line, name, KEYS, ""));
        }
        out.keys.insert(name.to_owned(), line);
        if name != "peer" {
            continue;
        }
        let tables = match v.get_ref() {
            DeValue::Array(a) => a
                .iter()
                .map(|t| match t.get_ref() {
                    DeValue::Table(t) => Some((t, t_line(text, t, line))),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        let Some(tables) = tables else {
            return Err(err(line, "peer is not a list of [[peer]] tables", PEER_FIX));
        };
        for (t, first) in tables {
            let mut keys = BTreeMap::new();
            for (pk, _) in t {
                let pname = pk.get_ref().as_ref();
                let pline = line_at(text, pk.span().start);
                if example(PEER_KEYS, pname).is_none() {
                    if example(KEYS, pname).is_some() && pname != "peer" {
                        return Err(err(
                            pline,
                            format!("{pname} is a setting of the node, not of a [[peer]]"),
                            format!(
                                "move {pname} above the first [[peer]] (every line after a \
                                 [[peer]] belongs to that peer)"
                            ),
                        ));
                    }
                    return Err(unknown_key(pline, pname, PEER_KEYS, " of a [[peer]]"));
                }
                keys.insert(pname.to_owned(), pline);
            }
            out.peers.push((first, keys));
        }
    }
    Ok(out)
}

/// The line of a `[[peer]]` table: its header line (the line before its first key), or the
/// line of `peer` itself for an inline table.
fn t_line(text: &str, t: &toml::de::DeTable<'_>, fallback: usize) -> usize {
    t.keys()
        .map(|k| line_at(text, k.span().start))
        .min()
        .map_or(fallback, |first| {
            // a [[peer]] header sits on a line of its own above its keys
            let header = text
                .lines()
                .take(first.saturating_sub(1))
                .enumerate()
                .filter(|(_, l)| l.trim_start().starts_with("[[peer]]"))
                .map(|(i, _)| i + 1)
                .last();
            header.unwrap_or(first)
        })
}

/// A string that may hold a secret, wiped when dropped.
struct Secret(zeroize::Zeroizing<String>);

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Secret(zeroize::Zeroizing::new(s)))
    }
}

/// The file as serde reads it; ranges and meanings are checked afterwards, with the lines
/// from [`Layout`]. Integers are read as `i64` so that a value out of range is named with its
/// range and an example.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: Option<i64>,
    listen: Option<String>,
    control: Option<String>,
    control_group: Option<String>,
    key: Option<Secret>,
    key_file: Option<String>,
    identity_file: Option<String>,
    #[serde(default)]
    peer: Vec<RawPeer>,
    role: Option<String>,
    voter: Option<bool>,
    card: Option<String>,
    wire: Option<String>,
    outside: Option<String>,
    inside: Option<String>,
    identifiers: Option<i64>,
    state_dir: Option<String>,
    heartbeat_ms: Option<i64>,
    failure_ms: Option<i64>,
    flush_ms: Option<i64>,
    card_capacity: Option<i64>,
    seq_jump: Option<i64>,
    balance_interval_ms: Option<i64>,
    balance_threshold: Option<f64>,
    balance_low: Option<f64>,
    balance_max_moves: Option<i64>,
    balance_min_pps: Option<i64>,
    weight: Option<i64>,
    rules: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    metrics: Option<String>,
}

/// One `[[peer]]` table.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    id: Option<i64>,
    addr: Option<String>,
    role: Option<String>,
    voter: Option<bool>,
    key: Option<String>,
}

/// A serde error (a value of the wrong type): its line, and the example of the setting at it.
fn type_error(text: &str, e: &toml::de::Error, at: &Layout) -> ConfigError {
    let line = e.span().map_or(0, |s| line_at(text, s.start));
    let message = e.message().lines().next().unwrap_or("").trim().to_owned();
    let top = at
        .keys
        .iter()
        .filter(|(_, l)| **l == line)
        .map(|(k, _)| k.as_str())
        .next();
    let peer = at
        .peers
        .iter()
        .flat_map(|(_, keys)| keys.iter())
        .find(|(_, l)| **l == line)
        .map(|(k, _)| k.as_str());
    let fix = match (top, peer) {
        (Some("peer"), _) => PEER_FIX.to_owned(),
        (Some(k), _) => format!("write e.g. {k} = {}", example(KEYS, k).unwrap_or("...")),
        (None, Some(k)) => format!(
            "in a [[peer]] table write e.g. {k} = {}",
            example(PEER_KEYS, k).unwrap_or("...")
        ),
        (None, None) => "see the format in docs/clusterd.md".to_owned(),
    };
    let shown = match top.or(peer) {
        Some(k) => format!("{k}: {message}"),
        None => message,
    };
    err(line, shown, fix)
}

/// Reads a key file, refusing one that group or others may read (the fix says how).
fn read_key_file(path: &Path) -> Result<zeroize::Zeroizing<String>, (String, String)> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display();
    let fix = "point key_file at a file holding 64 hex digits (clusterd keygen)";
    let mut f = std::fs::File::open(path).map_err(|e| {
        (
            format!("cannot read key file {shown}: {e}"),
            fix.to_string(),
        )
    })?;
    let mode = f
        .metadata()
        .map_err(|e| {
            (
                format!("cannot read key file {shown}: {e}"),
                fix.to_string(),
            )
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err((
            format!(
                "key file {shown} is readable by group or others (mode {:03o})",
                mode & 0o777
            ),
            format!("chmod 600 {shown}"),
        ));
    }
    // into a fixed buffer (never grown, so no copy of the key is left behind); a file longer
    // than the buffer is not a key
    let mut buf = zeroize::Zeroizing::new([0u8; 256]);
    let mut len = 0;
    loop {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err((
                    format!("cannot read key file {shown}: {e}"),
                    fix.to_string(),
                ))
            }
        }
        if len == buf.len() {
            return Err((
                format!("key file {shown} is longer than a key"),
                fix.to_string(),
            ));
        }
    }
    let text = std::str::from_utf8(&buf[..len])
        .map_err(|_| (format!("key file {shown} is not text"), fix.to_string()))?;
    let text = zeroize::Zeroizing::new(text.to_string());
    Ok(text)
}

fn int(line: usize, key: &str, v: i64, min: u64, max: u64) -> Result<u64, ConfigError> {
    match u64::try_from(v) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(err(
            line,
            format!("{key} = {v} is not a whole number in {min}..={max}"),
            format!("write e.g. {key} = {min}"),
        )),
    }
}

/// The balancing keys, checked: an interval up to an hour, marks from 1.0 to 10 with the low
/// one at most the threshold, 1 to 64 moves, a weight up to 1000.
fn balance_config(
    raw: &RawConfig,
    ln: &impl Fn(&str) -> usize,
    num: &impl Fn(&str, Option<i64>, u64, u64, u64) -> Result<u64, ConfigError>,
) -> Result<BalanceConfig, ConfigError> {
    let d = BalanceConfig::DEFAULT;
    let mark = |k: &str, v: Option<f64>, default: f64| match v {
        Some(x) if (1.0..=10.0).contains(&x) => Ok(x),
        Some(x) => Err(err(
            ln(k),
            format!("{k} = {x} is not between 1.0 and 10.0"),
            format!("write e.g. {k} = {default}"),
        )),
        None => Ok(default),
    };
    let interval = num(
        "balance_interval_ms",
        raw.balance_interval_ms,
        0,
        3_600_000,
        d.interval.as_millis() as u64,
    )?;
    let threshold = mark(
        "balance_threshold",
        raw.balance_threshold,
        d.params.threshold,
    )?;
    let low = mark("balance_low", raw.balance_low, d.params.low.min(threshold))?;
    if low > threshold {
        return Err(err(
            ln("balance_low"),
            format!("balance_low = {low} is above balance_threshold = {threshold}"),
            "make balance_low at most balance_threshold (default 1.1 and 1.25)",
        ));
    }
    let max_moves = num(
        "balance_max_moves",
        raw.balance_max_moves,
        1,
        64,
        d.params.max_moves as u64,
    )? as usize;
    let min_pps = num(
        "balance_min_pps",
        raw.balance_min_pps,
        0,
        1_000_000_000,
        d.min_pps,
    )?;
    let weight = num(
        "weight",
        raw.weight,
        0,
        u64::from(crate::core::load_report::MAX_WEIGHT),
        1,
    )? as u32;
    Ok(BalanceConfig {
        interval: std::time::Duration::from_millis(interval),
        params: crate::core::balance::BalanceParams {
            threshold,
            low,
            max_moves,
        },
        weight,
        min_pps,
    })
}

fn parse_addr(line: usize, key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse::<SocketAddr>().map_err(|_| {
        err(
            line,
            format!("{key} = {v:?} is not an IP address with a port"),
            format!("write e.g. {key} = \"127.0.0.1:7101\""),
        )
    })
}

fn parse_node(line: usize, key: &str, v: i64) -> Result<NodeId, ConfigError> {
    match u16::try_from(v) {
        Ok(n) if n >= 1 => Ok(NodeId(n)),
        _ => Err(err(
            line,
            format!("{key} = {v} is not a node id in 1..=65535"),
            format!("use a node id between 1 and 65535, e.g. {key} = 1"),
        )),
    }
}

fn parse_role(line: usize, key: &str, v: &str) -> Result<Role, ConfigError> {
    match v {
        "member" => Ok(Role::Member),
        "witness" => Ok(Role::Witness),
        _ => Err(err(
            line,
            format!("{key} = {v:?} is unknown"),
            format!("write {key} = \"member\" or {key} = \"witness\""),
        )),
    }
}

impl Config {
    /// Reads and parses a config file; relative paths in it are relative to its folder.
    ///
    /// # Errors
    /// [`ConfigError`] naming the line and the fix (line 0 if the file cannot be read).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // the file may hold the cluster key: wipe the text after parsing
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            err(
                0,
                format!("cannot read config file {}: {e}", path.display()),
                "pass an existing, readable file to --config",
            )
        })?);
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
    }

    /// Parses config text (TOML); relative paths are resolved against `base`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the line and the fix.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let at = layout(text)?;
        let raw: RawConfig = toml::from_str(text).map_err(|e| type_error(text, &e, &at))?;
        let ln = |k: &str| at.keys.get(k).copied().unwrap_or(0);
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let non_empty = |k: &str, v: &Option<String>| -> Result<(), ConfigError> {
            match v {
                Some(s) if s.trim().is_empty() => Err(err(
                    ln(k),
                    format!("{k} is empty"),
                    format!("write e.g. {k} = {}", example(KEYS, k).unwrap_or("...")),
                )),
                _ => Ok(()),
            }
        };
        // a setting's name is its field's name: the message cannot name another
        macro_rules! non_empty_settings {
            ($($field:ident),* $(,)?) => {
                $(non_empty(stringify!($field), &raw.$field)?;)*
            };
        }
        non_empty_settings!(
            listen,
            control,
            control_group,
            key_file,
            identity_file,
            card,
            wire,
            state_dir,
            rules,
            log_level,
            log_format,
            metrics,
        );
        let node = raw
            .node
            .map(|v| parse_node(ln("node"), "node", v))
            .transpose()?;
        let role = match &raw.role {
            Some(r) => parse_role(ln("role"), "role", r)?,
            None => Role::Member,
        };
        let voter = raw.voter.unwrap_or(true);
        let listen = raw
            .listen
            .as_deref()
            .map(|v| parse_addr(ln("listen"), "listen", v))
            .transpose()?;
        let wire = raw
            .wire
            .as_deref()
            .map(|v| parse_addr(ln("wire"), "wire", v))
            .transpose()?;
        let metrics = raw
            .metrics
            .as_deref()
            .map(|v| parse_addr(ln("metrics"), "metrics", v))
            .transpose()?;
        if let Some(v) = &raw.log_level {
            check_log_filter(v).map_err(|why| {
                err(
                    ln("log_level"),
                    format!("log_level = {v:?}: {why}"),
                    "write e.g. log_level = \"info\" (error, warn, info, debug, trace; or \
                     \"info,clusterd::raft=debug\")",
                )
            })?;
        }
        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(v) => {
                return Err(err(
                    ln("log_format"),
                    format!("log_format = {v:?} is unknown"),
                    "write log_format = \"text\" or log_format = \"json\"",
                ))
            }
        };
        let control = raw.control.as_deref().map(resolve);
        let control_group = raw.control_group.clone();
        let state_dir = raw.state_dir.as_deref().map(resolve);
        let rules = raw.rules.as_deref().map(resolve);
        let identity = raw.identity_file.as_deref().map(resolve);
        let card = raw.card.clone().unwrap_or_else(|| "model".to_string());
        let interface = |k: &str, v: &Option<String>| -> Result<Option<String>, ConfigError> {
            let Some(v) = v else { return Ok(None) };
            let ok = !v.is_empty()
                && v.len() < 16
                && v.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
            if !ok {
                return Err(err(
                    ln(k),
                    format!("{k} = {v:?} is not an interface name"),
                    "give the name of an interface in the node's network namespace (at most 15 characters, e.g. \"eth1\")",
                ));
            }
            Ok(Some(v.clone()))
        };
        let outside = interface("outside", &raw.outside)?;
        let inside = interface("inside", &raw.inside)?;
        let key = match (&raw.key, &raw.key_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    ln("key_file").max(ln("key")),
                    "the cluster key is given twice (key and key_file)",
                    "keep either key or key_file",
                ))
            }
            (Some(k), None) => Some((ln("key"), zeroize::Zeroizing::new(k.0.to_string()))),
            (None, Some(f)) => Some((
                ln("key_file"),
                read_key_file(&resolve(f))
                    .map_err(|(problem, fix)| err(ln("key_file"), problem, fix))?,
            )),
            (None, None) => None,
        };
        let key = match key {
            Some((line, text)) => Some(ClusterKey::from_hex(&text).map_err(|e| {
                err(
                    line,
                    format!("bad cluster key: {e}"),
                    "generate one with `clusterd keygen` and paste its 64 hex digits in quotes",
                )
            })?),
            None => None,
        };
        let identifiers = match raw.identifiers {
            Some(v) => {
                let n = int(ln("identifiers"), "identifiers", v, 1, 4096)?;
                IdCount::new(n as u32).map_err(|_| {
                    err(
                        ln("identifiers"),
                        format!("identifiers = {n} is not a power of two"),
                        "use 1, 2, 4, ... 4096 (default 256)",
                    )
                })?
            }
            None => IdCount::default(),
        };
        let num = |k: &str, v: Option<i64>, min: u64, max: u64, default: u64| match v {
            Some(v) => int(ln(k), k, v, min, max),
            None => Ok(default),
        };
        let heartbeat_ms = num("heartbeat_ms", raw.heartbeat_ms, 5, 10_000, 50)?;
        let failure_ms = num("failure_ms", raw.failure_ms, 20, 60_000, 200)?;
        let flush_ms = num("flush_ms", raw.flush_ms, 0, 1000, 1)?;
        let card_capacity = num("card_capacity", raw.card_capacity, 1, 1 << 24, 4096)? as usize;
        let seq_jump = num("seq_jump", raw.seq_jump, 1, 1 << 32, 4096)?;
        let balance = balance_config(&raw, &ln, &num)?;
        let mut peers: Vec<(usize, PeerConfig)> = Vec::new();
        for (i, p) in raw.peer.iter().enumerate() {
            let (pl, keys) = at.peers.get(i).cloned().unwrap_or_default();
            let kl = |k: &str| keys.get(k).copied().unwrap_or(pl);
            let id = match p.id {
                Some(v) => parse_node(kl("id"), "id", v)?,
                None => return Err(err(pl, "a [[peer]] table has no id", PEER_FIX)),
            };
            let addr = match &p.addr {
                Some(a) => parse_addr(kl("addr"), "addr", a)?,
                None => {
                    return Err(err(
                        pl,
                        format!("peer {} has no addr", id.0),
                        format!("add addr = \"<ip:port>\" to its table; {PEER_FIX}"),
                    ))
                }
            };
            let prole = match &p.role {
                Some(r) => parse_role(kl("role"), "role", r)?,
                None => Role::Member,
            };
            let pubkey = match &p.key {
                Some(hex) => Some(crate::sync::PublicKey::from_hex(hex).map_err(|e| {
                    err(
                        kl("key"),
                        format!("peer {}: {e}", id.0),
                        "copy the public key `clusterd keygen --identity` printed for that node",
                    )
                })?),
                None => None,
            };
            if let Some((prev, _)) = peers.iter().find(|(_, q)| q.id == id) {
                return Err(err(
                    pl,
                    format!("peer {} is listed twice (first on line {prev})", id.0),
                    "list each peer once",
                ));
            }
            peers.push((
                pl,
                PeerConfig {
                    id,
                    addr,
                    role: prole,
                    voter: p.voter.unwrap_or(true),
                    pubkey,
                },
            ));
        }
        let seen = &at.keys;
        let missing = |k: &str, example: &str| {
            err(
                0,
                format!("missing setting {k:?}"),
                format!("add a line {k} = {example} (above the [[peer]] tables)"),
            )
        };
        let node = node.ok_or_else(|| missing("node", "1"))?;
        let listen = listen.ok_or_else(|| missing("listen", "\"127.0.0.1:7101\""))?;
        let key = key.ok_or_else(|| {
            missing(
                "key_file",
                "\"cluster.key\" (or key = \"<64 hex digits from clusterd keygen>\")",
            )
        })?;
        let control = control.ok_or_else(|| missing("control", "\"node1.sock\""))?;
        if let Some((ln, _)) = peers.iter().find(|(_, p)| p.id == node) {
            return Err(err(
                *ln,
                format!("peer {} is this node itself", node.0),
                "list only the other members as peers",
            ));
        }
        if let Some((ln, _)) = peers.iter().find(|(_, p)| p.addr == listen) {
            return Err(err(
                *ln,
                "a peer has this node's own listen address",
                "give every member its own address",
            ));
        }
        if failure_ms < 2 * heartbeat_ms {
            let ln = seen
                .get("failure_ms")
                .or(seen.get("heartbeat_ms"))
                .copied()
                .unwrap_or(0);
            return Err(err(
                ln,
                format!("failure_ms ({failure_ms}) is less than two heartbeats ({heartbeat_ms} ms each)"),
                "make failure_ms at least twice heartbeat_ms (default 200 and 50)",
            ));
        }
        let members = peers.iter().filter(|(_, p)| p.role == Role::Member).count()
            + usize::from(role == Role::Member);
        let voters = peers.iter().filter(|(_, p)| p.voter).count() + usize::from(voter);
        if members == 2 && voters == 2 {
            return Err(err(
                0,
                "a 2-node cluster without a witness cannot tell a failure from a partition",
                "add a witness: a [[peer]] table with id, addr and role = \"witness\" (run it with role = \"witness\")",
            ));
        }
        if members == 0 {
            return Err(err(
                0,
                "the cluster has no member that handles traffic",
                "make at least one node role = \"member\"",
            ));
        }
        match (&identity, peers.iter().find(|(_, p)| p.pubkey.is_none())) {
            (Some(_), Some((ln, p))) => {
                return Err(err(
                    *ln,
                    format!("peer {} has no public key, but this node has an identity_file", p.id.0),
                    "add key = \"<its public key>\" to its [[peer]] table (every node of a cluster has an identity, or none has)",
                ))
            }
            (None, _) => {
                if let Some((ln, p)) = peers.iter().find(|(_, p)| p.pubkey.is_some()) {
                    return Err(err(
                        *ln,
                        format!("peer {} has a public key, but this node has no identity_file", p.id.0),
                        "add identity_file = \"<file>\" (clusterd keygen --identity <file>), or remove the key",
                    ));
                }
            }
            _ => {}
        }
        let interfaces = match (outside, inside) {
            (Some(o), Some(i)) if o == i => {
                return Err(err(
                    seen.get("inside").copied().unwrap_or(0),
                    format!("outside and inside are both {o:?}"),
                    "bridge the card between two different interfaces",
                ))
            }
            (Some(o), Some(i)) => Some((o, i)),
            (None, None) => None,
            (o, _) => {
                let (have, missing) = if o.is_some() {
                    ("outside", "inside")
                } else {
                    ("inside", "outside")
                };
                return Err(err(
                    seen.get(have).copied().unwrap_or(0),
                    format!("{have} is set but {missing} is not"),
                    format!("add {missing} = \"<interface>\": the card sits between two segments"),
                ));
            }
        };
        if interfaces.is_some() && role == Role::Witness {
            return Err(err(
                seen.get("outside").copied().unwrap_or(0),
                "a witness handles no traffic, so it has no interfaces",
                "remove outside and inside, or make the node a member",
            ));
        }
        let state_dir = state_dir.unwrap_or_else(|| base.join(format!("node{}.state", node.0)));
        if role == Role::Witness && !voter {
            return Err(err(
                seen.get("voter").copied().unwrap_or(0),
                "a witness that does not vote is useless",
                "remove voter = false or make the node a member",
            ));
        }
        Ok(Config {
            node,
            role,
            voter,
            listen,
            control,
            control_group,
            key,
            identity,
            peers: peers.into_iter().map(|(_, p)| p).collect(),
            card,
            wire,
            interfaces,
            identifiers,
            state_dir,
            heartbeat_ms,
            failure_ms,
            flush_ms,
            card_capacity,
            seq_jump,
            balance,
            rules,
            log_level: raw.log_level.clone(),
            log_format,
            metrics,
        })
    }

    /// Every voting member, this node included if it votes, in id order.
    pub fn voters(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|p| p.voter)
            .map(|p| p.id)
            .collect();
        if self.voter {
            v.push(self.node);
        }
        v.sort();
        v
    }

    /// Every non-voting member (Raft learners), this node included if it is one.
    pub fn learners(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|p| !p.voter)
            .map(|p| p.id)
            .collect();
        if !self.voter {
            v.push(self.node);
        }
        v.sort();
        v
    }

    /// The role of `node` (this node or a peer).
    pub fn role_of(&self, node: NodeId) -> Option<Role> {
        if node == self.node {
            return Some(self.role);
        }
        self.peers.iter().find(|p| p.id == node).map(|p| p.role)
    }

    /// One line for `clusterd check-config`: this node, its address, its peers, card,
    /// identifiers and whether frames are signed.
    pub fn summary(&self) -> String {
        let witnesses = self
            .peers
            .iter()
            .filter(|p| p.role == Role::Witness)
            .count();
        let learners = self.peers.iter().filter(|p| !p.voter).count();
        let role = match self.role {
            Role::Member => "member",
            Role::Witness => "witness",
        };
        format!(
            "node {} ({role}, {}), listen {}, {} peers ({witnesses} witness, {learners} \
             learner), card {}, {} identifiers, frames {}",
            self.node.0,
            if self.voter { "voter" } else { "learner" },
            self.listen,
            self.peers.len(),
            self.card,
            self.identifiers.get(),
            if self.identity.is_some() {
                "signed (identities)"
            } else {
                "unsigned (no identities)"
            }
        )
    }

    /// The members that handle traffic (not witnesses), in id order.
    pub fn traffic_members(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|p| p.role == Role::Member)
            .map(|p| p.id)
            .collect();
        if self.role == Role::Member {
            v.push(self.node);
        }
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/clusterd"))
    }

    /// Lines: 1 comment, 2 node, 3 listen, 4 control, 5 key, 6 [[peer]], 7 id, 8 addr,
    /// 9 [[peer]], 10 id, 11 addr.
    fn good() -> String {
        format!(
            "# test\nnode = 1\nlisten = \"127.0.0.1:7101\"\ncontrol = \"n1.sock\"\nkey = \"{KEY}\"\n\
             [[peer]]\nid = 2\naddr = \"127.0.0.1:7102\"\n\
             [[peer]]\nid = 3\naddr = \"127.0.0.1:7103\" # comment\n"
        )
    }

    /// `good()` with `settings` (top-level lines) inserted after line 5.
    fn with(settings: &str) -> String {
        good().replacen("[[peer]]", &format!("{settings}[[peer]]"), 1)
    }

    #[test]
    fn balance_keys_and_their_errors() {
        let c = parse(&good()).unwrap();
        assert_eq!(c.balance, BalanceConfig::DEFAULT);
        let c = parse(&with(
            "balance_interval_ms = 2000\nbalance_threshold = 1.5\nbalance_low = 1.2\n\
             balance_max_moves = 8\nbalance_min_pps = 5000\nweight = 3\n",
        ))
        .unwrap();
        assert_eq!(c.balance.interval, std::time::Duration::from_secs(2));
        assert_eq!(
            (c.balance.params.threshold, c.balance.params.low),
            (1.5, 1.2)
        );
        assert_eq!((c.balance.params.max_moves, c.balance.weight), (8, 3));
        assert_eq!(c.balance.min_pps, 5000);
        for (bad, needle) in [
            ("balance_low = 1.3\n", "above balance_threshold"),
            ("balance_threshold = 0.5\n", "not between 1.0 and 10.0"),
            ("balance_max_moves = 0\n", "balance_max_moves = 0"),
            ("weight = 1001\n", "weight = 1001"),
            ("balance_interval_ms = -1\n", "balance_interval_ms = -1"),
            ("balance_min_pps = -5\n", "balance_min_pps = -5"),
        ] {
            let e = parse(&with(bad)).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn parses_a_good_file() {
        let c = parse(&good()).unwrap();
        assert_eq!(c.node, NodeId(1));
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.peers[1].addr, "127.0.0.1:7103".parse().unwrap());
        assert_eq!(c.control, Path::new("/etc/clusterd/n1.sock"));
        assert_eq!(c.voters(), vec![NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(c.card, "model");
        assert_eq!(c.identifiers.get(), 256);
        assert_eq!(c.heartbeat_ms, 50);
        let c = parse(&with(
            "role = \"member\"\nvoter = true\ncard = \"model:depth=64\"\nidentifiers = 64\n\
             heartbeat_ms = 20\nfailure_ms = 100\nflush_ms = 0\ncard_capacity = 10\n\
             seq_jump = 7\nrules = \"r.txt\"\nwire = \"127.0.0.1:7201\"\n\
             outside = \"eth1\"\ninside = \"eth2\"\nstate_dir = \"/var/lib/n1\"\n",
        ))
        .unwrap();
        assert_eq!(c.card, "model:depth=64");
        assert_eq!(c.identifiers.get(), 64);
        assert_eq!((c.heartbeat_ms, c.failure_ms, c.flush_ms), (20, 100, 0));
        assert_eq!((c.card_capacity, c.seq_jump), (10, 7));
        assert_eq!(c.rules.as_deref(), Some(Path::new("/etc/clusterd/r.txt")));
        assert_eq!(c.state_dir, Path::new("/var/lib/n1"));
        assert_eq!(c.interfaces, Some(("eth1".into(), "eth2".into())));
        assert!(c.wire.is_some());
    }

    #[test]
    fn peers_are_tables_with_role_voter_and_key() {
        let pk = "aa".repeat(32);
        let text = with("identity_file = \"n1.id\"\n")
            .replace(
                "id = 2\naddr = \"127.0.0.1:7102\"\n",
                &format!("id = 2\naddr = \"127.0.0.1:7102\"\nkey = \"{pk}\"\n"),
            )
            .replace(
                "addr = \"127.0.0.1:7103\" # comment\n",
                &format!("addr = \"127.0.0.1:7103\"\nrole = \"witness\"\nkey = \"{pk}\"\n"),
            );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.identity.as_deref(),
            Some(Path::new("/etc/clusterd/n1.id"))
        );
        assert_eq!(c.peers[0].pubkey.unwrap().to_hex(), pk);
        assert!(c.peers[0].voter);
        assert_eq!(c.peers[1].role, Role::Witness);
        assert!(c.learners().is_empty());
        let learner = format!(
            "{}[[peer]]\nid = 4\naddr = \"127.0.0.1:7104\"\nvoter = false\n",
            good()
        );
        assert_eq!(parse(&learner).unwrap().learners(), vec![NodeId(4)]);
        // an inline array of tables means the same
        let inline = format!(
            "node = 1\nlisten = \"127.0.0.1:7101\"\ncontrol = \"n1.sock\"\nkey = \"{KEY}\"\n\
             peer = [{{ id = 2, addr = \"127.0.0.1:7102\" }}, {{ id = 3, addr = \"127.0.0.1:7103\" }}]\n"
        );
        assert_eq!(parse(&inline).unwrap().peers, parse(&good()).unwrap().peers);
    }

    #[test]
    fn identities_all_or_none() {
        let pk = "aa".repeat(32);
        let key2 = |k: &str| format!("id = 2\naddr = \"127.0.0.1:7102\"\nkey = \"{k}\"\n");
        // an identity, and a peer without a key: the line of its [[peer]]
        let e = parse(&with("identity_file = \"n1.id\"\n")).unwrap_err();
        assert_eq!(e.line, 7);
        assert!(e.problem.contains("no public key"), "{e}");
        // a peer key, and no identity
        let e =
            parse(&good().replace("id = 2\naddr = \"127.0.0.1:7102\"\n", &key2(&pk))).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.fix.contains("identity_file"), "{e}");
        // a key that is not one: the line of the key
        let e = parse(&good().replace("id = 2\naddr = \"127.0.0.1:7102\"\n", &key2("xyz")))
            .unwrap_err();
        assert_eq!(e.line, 9);
        assert!(e.problem.contains("64 hexadecimal"), "{e}");
    }

    /// Parses `text`, which must be refused at `line` (0: any line); the error.
    fn refused(text: &str, line: usize) -> ConfigError {
        let Err(e) = parse(text) else {
            panic!("accepted: {text}")
        };
        if line != 0 {
            assert_eq!(e.line, line, "{e}");
        }
        e
    }

    #[test]
    fn empty_settings_are_refused_by_name() {
        for name in [
            "listen",
            "control",
            "control_group",
            "key_file",
            "identity_file",
            "card",
            "wire",
            "state_dir",
            "rules",
            "log_level",
            "log_format",
            "metrics",
        ] {
            // the good file's own line of that setting (listen: 3, control: 4), else a new one
            let own = good()
                .lines()
                .position(|l| l.starts_with(&format!("{name} =")));
            let (text, line) = match own {
                Some(i) => {
                    let old = good().lines().nth(i).unwrap().to_owned();
                    (good().replace(&old, &format!("{name} = \"  \"")), i + 1)
                }
                None => (with(&format!("{name} = \" \"\n")), 6),
            };
            let e = refused(&text, line);
            assert_eq!(e.problem, format!("{name} is empty"), "{name}: {e}");
            assert!(
                e.fix.starts_with(&format!("write e.g. {name} = ")),
                "{name}: {e}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_a_suggestion() {
        // the file, the line of the error (0: not checked), what its problem says and how its
        // fix starts
        for (text, line, problem, fix) in [
            (
                with("nodee = 3\n"),
                6,
                "unknown setting \"nodee\"",
                "did you mean \"node\"?",
            ),
            (
                with("hearbeat_ms = 50\n"),
                0,
                "",
                "did you mean \"heartbeat_ms\"?",
            ),
            (
                with("colour = \"blue\"\n"),
                0,
                "",
                "use one of the settings: node, listen",
            ),
            // in a peer table
            (
                good().replace("id = 3\n", "id = 3\naddress = \"x\"\n"),
                11,
                "\"address\" of a [[peer]]",
                "did you mean \"addr\"?",
            ),
            // a setting after the peers belongs to the last peer: named as such
            (
                format!("{}card = \"model\"\n", good()),
                12,
                "not of a [[peer]]",
                "move card above the first [[peer]]",
            ),
        ] {
            let e = refused(&text, line);
            assert!(e.problem.contains(problem), "{e}");
            assert!(e.fix.starts_with(fix), "{e}");
        }
    }

    #[test]
    fn wrong_types_name_the_setting_and_an_example() {
        let e = parse(&good().replace("node = 1", "node = \"1\"")).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.problem.starts_with("node: invalid type"), "{e}");
        assert_eq!(e.fix, "write e.g. node = 1");
        let e = parse(&with("voter = \"no\"\n")).unwrap_err();
        assert_eq!(e.line, 6);
        assert_eq!(e.fix, "write e.g. voter = true");
        let e = parse(&good().replace("id = 3", "id = \"three\"")).unwrap_err();
        assert_eq!(e.line, 10);
        assert!(
            e.fix.contains("in a [[peer]] table write e.g. id = 2"),
            "{e}"
        );
        let e = parse(&with("heartbeat_ms = -5\n")).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.problem.contains("5..=10000"), "{e}");
    }

    #[test]
    fn bad_peers_are_named() {
        // the earlier format
        let old = "node = 1\nlisten = \"127.0.0.1:7101\"\npeer = 2 127.0.0.1:7102\n";
        let e = parse(old).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.fix.starts_with("peers are tables now"), "{e}");
        let e = parse(&with("peer = \"2 127.0.0.1:7102\"\n")).unwrap_err();
        assert!(
            e.problem.contains("not TOML") || e.problem.contains("[[peer]]"),
            "{e}"
        );
        // peer 3 changed from `from` to `to`: refused at the line (0: not checked), with what
        // the problem and the fix say
        for (from, to, line, problem, fix) in [
            ("id = 3\n", "", 9, "has no id", ""),
            (
                "addr = \"127.0.0.1:7103\" # comment\n",
                "",
                9,
                "peer 3 has no addr",
                "",
            ),
            (
                "127.0.0.1:7103",
                "localhost",
                11,
                "",
                "addr = \"127.0.0.1:7101\"",
            ),
            ("id = 3", "id = 2", 9, "first on line 6", ""),
            ("id = 3", "id = 1", 0, "this node itself", ""),
            (
                "id = 3\naddr = \"127.0.0.1:7103\"",
                "id = 3\naddr = \"127.0.0.1:7103\"\nrole = \"boss\"",
                12,
                "",
                "\"witness\"",
            ),
        ] {
            let e = refused(&good().replace(from, to), line);
            assert!(e.problem.contains(problem), "{to:?}: {e}");
            assert!(e.fix.contains(fix), "{to:?}: {e}");
        }
    }

    #[test]
    fn errors_name_line_and_fix() {
        let e = parse(&good().replace("listen = \"127.0.0.1:7101\"", "listen = \"localhost\""))
            .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("line 3: listen"), "{e}");
        // an unquoted string, as the earlier format wrote it
        let e = parse(&good().replace("listen = \"127.0.0.1:7101\"", "listen = 127.0.0.1:7101"))
            .unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(
            e.fix,
            "TOML strings are quoted: write listen = \"127.0.0.1:7101\""
        );
        let e = parse(&good().replace(KEY, "abcd")).unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.fix.contains("keygen"));
        let e = parse(&with("node = 4\n")).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.fix.contains("keep one"), "{e}");
        let e = parse(&with("identifiers = 100\n")).unwrap_err();
        assert!(e.fix.contains("power") || e.problem.contains("power"));
        let e = parse(&good().replace("node = 1\n", "")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.fix.contains("node = 1"));
        let e = parse(&good().replace(
            "[[peer]]\nid = 3\naddr = \"127.0.0.1:7103\" # comment\n",
            "",
        ))
        .unwrap_err();
        assert!(e.fix.contains("witness"));
        let e = parse(&with("just words\n")).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.problem.starts_with("not TOML"), "{e}");
        let e = parse(&with("outside = \"eth1\"\n")).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.fix.contains("inside = \"<interface>\""), "{e}");
    }

    #[test]
    fn key_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("cfg-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k");
        std::fs::write(&key, format!("{KEY}\n")).unwrap();
        let text = good().replace(&format!("key = \"{KEY}\""), "key_file = \"k\"");
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = Config::parse(&text, &dir);
            if ok {
                assert!(r.is_ok(), "mode {mode:o}: {r:?}");
            } else {
                let e = r.unwrap_err();
                assert!(e.problem.contains("readable by group or others"), "{e}");
                assert_eq!(e.fix, format!("chmod 600 {}", key.display()));
            }
        }
        std::fs::write(&key, "0".repeat(300)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Config::parse(&text, &dir).unwrap_err();
        assert!(e.problem.contains("longer than a key"), "{e}");
        let e = Config::parse(&with("key_file = \"k\"\n"), &dir).unwrap_err();
        assert!(e.problem.contains("given twice"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn log_and_metrics_settings() {
        let c = parse(&good()).unwrap();
        assert_eq!(
            (c.log_level.as_deref(), c.log_format, c.metrics),
            (None, LogFormat::Text, None)
        );
        let c = parse(&with(
            "log_level = \"warn,clusterd::raft=debug\"\nlog_format = \"json\"\nmetrics = \"127.0.0.1:9464\"\n",
        ))
        .unwrap();
        assert_eq!(c.log_level.as_deref(), Some("warn,clusterd::raft=debug"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        let e = parse(&with("log_level = \"loud\"\n")).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.problem.starts_with("log_level = \"loud\""), "{e}");
        assert!(e.fix.contains("log_level = \"info\""), "{e}");
        let e = parse(&with("log_level = \"clusterd raft=debug\"\n")).unwrap_err();
        assert!(e.problem.contains("target"), "{e}");
        let e = parse(&with("log_format = \"xml\"\n")).unwrap_err();
        assert!(e.problem.contains("log_format"), "{e}");
        assert!(e.fix.contains("\"json\""), "{e}");
        let e = parse(&with("metrics = \"9464\"\n")).unwrap_err();
        assert!(e.problem.starts_with("metrics = \"9464\""), "{e}");
        let e = parse(&with("log_levle = \"info\"\n")).unwrap_err();
        assert!(e.fix.starts_with("did you mean \"log_level\"?"), "{e}");
        assert!(check_log_filter("INFO").is_ok());
        assert!(check_log_filter("").is_err());
    }

    #[test]
    fn control_group_is_kept() {
        assert_eq!(parse(&good()).unwrap().control_group, None);
        let c = parse(&with("control_group = \"ops\"\n")).unwrap();
        assert_eq!(c.control_group.as_deref(), Some("ops"));
    }

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("nodee", "node"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(suggest("listn", KEYS), Some("listen"));
        assert_eq!(suggest("keyfile", KEYS), Some("key_file"));
        assert_eq!(suggest("zzzzzz", KEYS), None);
    }

    #[test]
    fn summary_is_one_line() {
        let c = parse(&good()).unwrap();
        let s = c.summary();
        assert!(!s.contains('\n'), "{s}");
        assert!(
            s.starts_with("node 1 (member, voter), listen 127.0.0.1:7101"),
            "{s}"
        );
        assert!(s.contains("2 peers"), "{s}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Arbitrary text, and good files with one line garbled: never a panic, and every
        /// error names a fix and a line inside the file.
        #[test]
        fn never_panics_and_errors_have_fixes(
            junk in ".{0,200}",
            line in 0usize..12,
            garble in "[ -~]{0,30}",
        ) {
            if let Err(e) = parse(&junk) {
                proptest::prop_assert!(!e.fix.is_empty(), "{e}");
            }
            let mut lines: Vec<String> = good().lines().map(str::to_owned).collect();
            let n = line % lines.len();
            lines[n] = garble;
            let text = lines.join("\n");
            if let Err(e) = parse(&text) {
                proptest::prop_assert!(!e.fix.is_empty() && !e.problem.is_empty(), "{e}");
                proptest::prop_assert!(e.line <= lines.len(), "{e}");
            }
        }
    }
}
