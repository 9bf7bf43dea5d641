//! `hwctl --device unix:PATH ...`: a running `clusterd`'s card through its
//! control socket (JSON lines, `docs/clusterd.md`). hwctl never opens the
//! card's registers itself while the daemon owns them; it asks the daemon.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use host::daemon::protocol::{CardDumpReply, CardEntryReport, Request, Response};
use host::filter::{EntryView, Filter, ViewKey};
use host::regs_report::RegsBlockOut;
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::table;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one daemon's control socket.
pub struct Remote {
    name: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

fn connect_error(name: &str, path: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let (cause, fix) = match e.kind() {
        K::NotFound => (
            "no such socket".to_owned(),
            "start the node (`clusterd run --config FILE`) or give the `control` path of its \
             config file"
                .to_owned(),
        ),
        K::ConnectionRefused => (
            "nothing is listening (a stale socket file: the daemon stopped or crashed)".to_owned(),
            "start the node again; it replaces the stale socket".to_owned(),
        ),
        K::PermissionDenied => (
            "permission denied".to_owned(),
            format!(
                "run hwctl as the daemon's user or give yourself access to {}",
                path.display()
            ),
        ),
        _ => (
            e.to_string(),
            "check the path and that clusterd runs".to_owned(),
        ),
    };
    format!("{name}: cannot connect to the control socket: {cause} ({e})\n  fix: {fix}")
}

impl Remote {
    /// Connects to the control socket at `path`.
    ///
    /// # Errors
    /// A message naming the socket, the cause and the fix.
    pub fn connect(path: &Path) -> Result<Self, String> {
        let name = format!("unix:{}", path.display());
        let s = UnixStream::connect(path).map_err(|e| connect_error(&name, path, &e))?;
        let io = |e: std::io::Error| format!("{name}: {e}");
        s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let r = s.try_clone().map_err(io)?;
        Ok(Self {
            name,
            reader: BufReader::new(r),
            writer: s,
        })
    }

    /// Sends one request, returns the answer unless the daemon refused it.
    ///
    /// # Errors
    /// I/O errors, timeouts, answers that are not JSON or not of the request's
    /// shape, and the daemon's own `"error"`.
    pub fn call(&mut self, req: &Request) -> Result<Response, String> {
        let name = &self.name;
        let cmd = req.cmd();
        let mut line = Zeroizing::new(serde_json::to_string(req).map_err(|e| e.to_string())?);
        line.push('\n');
        let io = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                format!(
                    "{name}: no answer to {cmd:?} within {} s (the node is stuck or overloaded)",
                    TIMEOUT.as_secs()
                )
            } else {
                format!("{name}: control socket: {e}")
            }
        };
        self.writer.write_all(line.as_bytes()).map_err(io)?;
        let mut resp = String::new();
        if self.reader.read_line(&mut resp).map_err(io)? == 0 {
            return Err(format!(
                "{name}: the daemon closed the control socket without answering {cmd:?}"
            ));
        }
        let v: Value = serde_json::from_str(resp.trim())
            .map_err(|e| format!("{name}: answer to {cmd:?} is not JSON: {e}"))?;
        match req.response(v) {
            Ok(Response::Error(e)) => {
                Err(format!("{name}: the daemon refused {cmd:?}: {}", e.error))
            }
            Ok(answer) => Ok(answer),
            Err(e) => Err(format!(
                "{name}: answer to {cmd:?} is not of its shape: {e}"
            )),
        }
    }

    /// Sends `req`, whose answer `pick` takes out of the [`Response`].
    fn ask<T>(&mut self, req: &Request, pick: fn(Response) -> Option<T>) -> Result<T, String> {
        let answer = self.call(req)?;
        pick(answer).ok_or_else(|| {
            format!(
                "{}: the answer to {:?} is another command's",
                self.name,
                req.cmd()
            )
        })
    }

    /// The socket's name (`unix:PATH`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(x) => x.to_string(),
    }
}

/// `-j`/`-p` output: JSON (compact or pretty, as hwctl's own) and a newline.
fn pretty_json<T: Serialize>(t: &T) -> Result<String, String> {
    crate::json_text(t)
        .map(|j| j + "\n")
        .map_err(|e| e.to_string())
}

/// `status --json` of a remote node. Field names are a stable interface;
/// `occupancy` means what it means for a local card (entries in the card).
#[derive(Serialize)]
struct RemoteStatus {
    device: String,
    node: u64,
    role: String,
    card_backend: String,
    occupancy: u64,
    capacity: u64,
    software_overflow_entries: u64,
    node_table_entries: u64,
    common_entries: u64,
    sa_count: u64,
    ready: bool,
    fenced: bool,
    leader: Option<u64>,
    epoch: u64,
    owned: u64,
    /// The node's `card_path` status: its card's packet port counters (`null` for a card
    /// without a packet port).
    card_path: Value,
}

/// `hwctl --device unix:PATH status`.
///
/// # Errors
/// Socket and daemon errors.
pub fn status(r: &mut Remote, as_json: bool) -> Result<String, String> {
    let v = r.ask(&Request::Status, |a| match a {
        Response::Status(v) => Some(v),
        _ => None,
    })?;
    let out = RemoteStatus {
        device: r.name().to_owned(),
        node: u(&v, "node"),
        role: s(&v, "role"),
        card_backend: s(&v, "card_backend"),
        occupancy: u(&v, "card_entries"),
        capacity: u(&v, "card_capacity"),
        software_overflow_entries: u(&v, "software_overflow_entries"),
        node_table_entries: u(&v, "node_table_entries"),
        common_entries: u(&v, "common_entries"),
        sa_count: u(&v, "sa_count"),
        ready: v.get("ready").and_then(Value::as_bool).unwrap_or(false),
        fenced: v.get("fenced").and_then(Value::as_bool).unwrap_or(false),
        leader: v.get("leader").and_then(Value::as_u64),
        epoch: u(&v, "epoch"),
        owned: u(&v, "owned"),
        card_path: v.get("card_path").cloned().unwrap_or(Value::Null),
    };
    if as_json {
        return pretty_json(&out);
    }
    let pct = if out.capacity == 0 {
        0.0
    } else {
        out.occupancy as f64 * 100.0 / out.capacity as f64
    };
    let kv = [
        ("device", out.device.clone()),
        ("node", format!("{} ({})", out.node, out.role)),
        ("card backend", out.card_backend.clone()),
        (
            "occupancy",
            format!("{} / {} ({pct:.1}%)", out.occupancy, out.capacity),
        ),
        (
            "sw overflow",
            format!("{} entries", out.software_overflow_entries),
        ),
        ("node table", format!("{} entries", out.node_table_entries)),
        ("common table", format!("{} entries", out.common_entries)),
        ("SAs", out.sa_count.to_string()),
        (
            "state",
            format!(
                "{}{}",
                if out.ready { "ready" } else { "not ready" },
                if out.fenced { ", fenced" } else { "" }
            ),
        ),
        (
            "leader",
            out.leader.map_or_else(|| "-".to_owned(), |l| l.to_string()),
        ),
        ("epoch", out.epoch.to_string()),
        ("owned ids", out.owned.to_string()),
    ];
    let mut t = String::new();
    for (k, v) in kv {
        let _ = writeln!(t, "{k:<16} {v}");
    }
    t += &card_path_lines(&out.card_path);
    Ok(t)
}

/// A node's `card_path` status as `status` lines (none without a packet port).
pub fn card_path_lines(c: &Value) -> String {
    let mut t = String::new();
    if !c.is_object() {
        return t;
    }
    let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
    let reasons = c
        .get("reasons")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", v.as_u64().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "-".to_owned());
    let kv = [
        ("port frames in", n("frames_in").to_string()),
        (
            "port lookups",
            format!("{} ({} hits)", n("dp_lookups"), n("dp_hits")),
        ),
        (
            "port forwarded",
            format!("{} (by the card)", n("forwarded_by_card")),
        ),
        ("port punted", format!("{} (to the host)", n("punted"))),
        (
            "port dropped",
            format!("{} ({} not owned)", n("dropped"), n("dropped_not_owned")),
        ),
        ("port host sent", n("host_sent").to_string()),
        ("port reasons", reasons),
    ];
    for (k, v) in kv {
        let _ = writeln!(t, "{k:<16} {v}");
    }
    t
}

/// What a filter sees of an entry of `card_dump`: its key text (the initiator first), state
/// kind and identifier (`None`: a key text that does not read back).
fn card_view(e: &CardEntryReport) -> Option<EntryView> {
    Some(EntryView {
        did: e.did,
        state: host::filter::parse_state(&e.state).unwrap_or("-"),
        key: e.key_text.parse().ok()?,
    })
}

/// The node-specific entries (`card_dump`) that pass `f`.
fn card_entries(r: &mut Remote, f: &Filter) -> Result<CardDumpReply, String> {
    let req = Request::CardDump { did: f.did };
    let mut v = r.ask(&req, |a| match a {
        Response::CardDump(d) => Some(d),
        _ => None,
    })?;
    v.entries
        .retain(|e| card_view(e).is_some_and(|v| f.matches(&v)) || (f.is_empty()));
    Ok(v)
}

fn card_table(entries: &[CardEntryReport]) -> String {
    table(
        &["DID", "WHERE", "STATE", "ACTION", "KEY (* = wildcard)"],
        entries,
        |e| {
            vec![
                e.did.to_string(),
                e.location.clone(),
                e.state.clone(),
                e.action.clone(),
                e.key_text.clone(),
            ]
        },
    )
}

/// `hwctl --device unix:PATH dump [filters]`: the node-specific table (what the node's card
/// holds, and what overflowed to host memory) with keys in the card's layout, as
/// `card_dump` reports it; the filters are applied here.
///
/// # Errors
/// Socket and daemon errors.
pub fn dump(r: &mut Remote, f: &Filter, as_json: bool) -> Result<String, String> {
    let v = card_entries(r, f)?;
    let entries = &v.entries;
    if as_json {
        return pretty_json(&entries);
    }
    let mut t = card_table(entries);
    let filter = if f.is_empty() {
        String::new()
    } else {
        format!(" with {}", f.describe())
    };
    let _ = writeln!(
        t,
        "{} entries{filter} (node {}, backend {}, {} in the node table)",
        entries.len(),
        r.name(),
        v.backend,
        v.len
    );
    Ok(t)
}

/// `hwctl --device unix:PATH count [filters]`.
///
/// # Errors
/// Socket and daemon errors.
pub fn count(r: &mut Remote, f: &Filter, as_json: bool) -> Result<String, String> {
    let v = card_entries(r, f)?;
    if as_json {
        return pretty_json(&serde_json::json!({
            "count": v.entries.len(),
            "len": v.len,
            "filter": f.describe(),
        }));
    }
    Ok(format!("{}\n", v.entries.len()))
}

/// `hwctl --device unix:PATH get KEY`.
///
/// # Errors
/// Socket and daemon errors; no entry of the key.
pub fn get(r: &mut Remote, key: &ViewKey, as_json: bool) -> Result<String, String> {
    let v = card_entries(r, &Filter::default())?;
    let found: Vec<CardEntryReport> = v
        .entries
        .into_iter()
        .filter(|e| card_view(e).is_some_and(|v| key.names(&v.key)))
        .collect();
    if found.is_empty() {
        return Err(format!(
            "{}: no entry {key} in the node's node-specific table ({} entries)",
            r.name(),
            v.len
        ));
    }
    crate::found_entries(&found, as_json, card_table).map_err(|e| e.to_string())
}

/// `hwctl --device unix:PATH events [filters]`: the daemon's events (as `clusterd ctl
/// events` shows them), until Ctrl-C or a closed pipe.
///
/// # Errors
/// Socket and daemon errors.
pub fn events(path: &Path, f: &Filter, as_json: bool) -> Result<(), String> {
    let rt = host::lab::runtime().map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let filter = (!f.is_empty()).then_some(*f);
    rt.block_on(host::ctl_view::follow_events(path, filter, as_json))
}

/// `hwctl --device unix:PATH sas`: SA state, never keys.
///
/// # Errors
/// Socket and daemon errors.
pub fn sas(r: &mut Remote, as_json: bool) -> Result<String, String> {
    // Whatever a daemon sends, hwctl shows no key material: the typed answer keeps only
    // the fields of `SaReport`, none of them a key.
    let list = r
        .ask(&Request::Sas, |a| match a {
            Response::Sas(s) => Some(s),
            _ => None,
        })?
        .sas;
    if as_json {
        // the views' SPI is hex (docs/vocabulary.md), as hwctl esp shows it
        let rows: Vec<Value> = list
            .iter()
            .map(|sa| {
                let mut v = serde_json::to_value(sa).unwrap_or(Value::Null);
                v["spi"] = Value::String(format!("0x{:08x}", sa.spi));
                v
            })
            .collect();
        return pretty_json(&rows);
    }
    let mut t = table(
        &[
            "SPI",
            "DID",
            "DST",
            "OUT SEQ",
            "REPLAY TOP",
            "REPLAY BITMAP",
            "OWNED",
            "KEY",
        ],
        &list,
        |sa| {
            vec![
                format!("0x{:08x}", sa.spi),
                sa.dist.to_string(),
                sa.dst.clone(),
                sa.outbound_seq.to_string(),
                sa.replay_top.to_string(),
                format!("0x{:016x}", sa.replay_bitmap),
                if sa.owned { "yes" } else { "-" }.to_owned(),
                if sa.key_present { "present" } else { "missing" }.to_owned(),
            ]
        },
    );
    let _ = writeln!(t, "{} SAs (keys are never shown)", list.len());
    Ok(t)
}

/// `hwctl --device unix:PATH regs`: the daemon reads its card's registers
/// (`card_regs`); hwctl renders them like a local card's.
///
/// # Errors
/// Socket and daemon errors (a node whose card has no registers says so).
pub fn regs(r: &mut Remote) -> Result<Vec<RegsBlockOut>, String> {
    r.ask(&Request::CardRegs, |a| match a {
        Response::CardRegs(c) => Some(c.blocks),
        _ => None,
    })
}
