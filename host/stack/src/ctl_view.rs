//! How the command-line tools show answers: tables for people by default, JSON for scripts
//! (bpftool's convention: `-j` compact JSON, `-p` pretty JSON). `clusterd ctl status` and
//! `clusterd ctl allocation` have tables of their own here; other answers are shown as pretty
//! JSON unless `-j` asks for compact.

use std::fmt::Write as _;

use serde_json::Value;

use crate::daemon::control::ControlClient;
use crate::daemon::protocol::{AllocationReply, CheckReply, Request, Response, TableName};
use crate::filter::Filter;

/// The output format chosen by the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Tables and lines for people (the default).
    Table,
    /// Compact JSON, one document on one line (`-j`, `--json`).
    Json,
    /// Pretty JSON (`-p`, `--pretty`; wins over `-j`).
    Pretty,
}

impl Format {
    /// The format of the flags `-j` (`json`) and `-p` (`pretty`).
    pub fn from_flags(json: bool, pretty: bool) -> Format {
        match (json, pretty) {
            (_, true) => Format::Pretty,
            (true, false) => Format::Json,
            (false, false) => Format::Table,
        }
    }

    /// Whether the output is JSON.
    pub fn is_json(self) -> bool {
        self != Format::Table
    }
}

/// `v` as JSON: pretty or compact, without a trailing newline.
pub fn json_text<T: serde::Serialize + ?Sized>(v: &T, pretty: bool) -> String {
    let r = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    r.unwrap_or_else(|e| format!("{{\"error\":\"cannot show the answer as JSON: {e}\"}}"))
}

/// Sorted identifiers as ranges: `0-84, 170-171, 200`; `-` when there are none.
pub fn ranges(ids: &[u16]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `ctl allocation` for people: the epochs, then per owner its identifiers as ranges
/// (`node 1: 0-84, 170-171 (87 identifiers)`), then the unowned ones.
pub fn allocation_table(a: &AllocationReply) -> String {
    let mut by_node: std::collections::BTreeMap<u16, Vec<u16>> = Default::default();
    let mut unowned = Vec::new();
    for (id, owner) in a.owners.iter().enumerate() {
        let id = u16::try_from(id).unwrap_or(u16::MAX);
        match owner {
            Some(n) => by_node.entry(*n).or_default().push(id),
            None => unowned.push(id),
        }
    }
    let mut s = format!(
        "epoch {} (agreed {}), {} identifiers\n",
        a.epoch,
        a.agreed_epoch,
        a.owners.len()
    );
    for (n, ids) in &by_node {
        let _ = writeln!(s, "node {n}: {} ({} identifiers)", ranges(ids), ids.len());
    }
    if !unowned.is_empty() {
        let _ = writeln!(
            s,
            "unowned: {} ({} identifiers)",
            ranges(&unowned),
            unowned.len()
        );
    }
    s
}

/// `ctl check` for people: how many entries had their identifier recomputed, a table of the
/// entries stored under another identifier than their key gives, and the other problems.
pub fn check_table(c: &CheckReply) -> String {
    let mut s = format!(
        "{} entries checked: {} under a wrong identifier, {} other problems\n",
        c.checked,
        c.mismatches.len(),
        c.problems.len()
    );
    if !c.mismatches.is_empty() {
        let rows: Vec<Vec<String>> = c
            .mismatches
            .iter()
            .map(|m| {
                vec![
                    m.table.clone(),
                    m.stored.to_string(),
                    m.recomputed.to_string(),
                    m.key.clone(),
                ]
            })
            .collect();
        s += &table(&["TABLE", "STORED", "RECOMPUTED", "KEY"], &rows);
    }
    for p in &c.problems {
        let _ = writeln!(s, "problem: {p}");
    }
    s
}

/// Whether `ctl check` succeeds: an error (exit status 1) naming what was found when an entry
/// sits under a wrong identifier or the tables disagree.
///
/// # Errors
/// The counts of what the check found.
pub fn check_verdict(c: &CheckReply) -> Result<(), String> {
    if c.is_clean() {
        return Ok(());
    }
    Err(format!(
        "check: {} entries under a wrong identifier, {} other problems",
        c.mismatches.len(),
        c.problems.len()
    ))
}

/// `ctl users` and `ctl user-bind` as a table: one row per binding, by address.
pub fn users_table(users: &[crate::daemon::protocol::UserReport]) -> String {
    if users.is_empty() {
        return "no user bindings\n".to_owned();
    }
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.addr.to_string(),
                u.user.to_string(),
                u.lifetime_s.to_string(),
                u.origin.to_string(),
                u.version.to_string(),
            ]
        })
        .collect();
    table(&["ADDR", "USER", "LEFT_S", "ORIGIN", "VERSION"], &rows)
}

fn yes(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// `template` with each `{}` in turn replaced by the next of `values`.
fn fill(template: &str, values: impl IntoIterator<Item = String>) -> String {
    let mut values = values.into_iter();
    let mut parts = template.split("{}");
    let mut s = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        s += &values.next().unwrap_or_default();
        s += part;
    }
    s
}

fn num(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A table of `rows` under `head`: left-aligned columns two spaces apart, the last column not
/// padded.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < cells.len() {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            } else {
                l.push_str(c);
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut s = line(head.to_vec());
    for r in rows {
        s += &line(r.iter().map(String::as_str).collect());
    }
    s
}

/// `ctl status` for people: who the node is, its place in the cluster, its tables and card,
/// replication, and one row per peer. Every figure is in the JSON (`-j`, `-p`) too.
pub fn status_table(v: &Value) -> String {
    let mut s = String::new();
    let kv = |s: &mut String, k: &str, val: String| {
        let _ = writeln!(s, "{k:<16} {val}");
    };
    let up = v["uptime_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let node = ["node", "role", "pid"].map(|k| num(&v[k]));
    kv(
        &mut s,
        "node",
        fill(
            "{} ({}), pid {}, up {} s",
            node.into_iter().chain([format!("{up:.1}")]),
        ),
    );
    let state = ["ready", "fenced", "behind"].map(|k| yes(&v[k]).to_owned());
    kv(
        &mut s,
        "state",
        fill("ready {}, fenced {}, behind {}", state),
    );
    let voters: Vec<String> = v["voters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(num)
        .collect();
    kv(
        &mut s,
        "leader",
        format!(
            "{}{} (term {}), voters {}",
            num(&v["leader"]),
            if v["is_leader"] == Value::Bool(true) {
                " (this node)"
            } else {
                ""
            },
            num(&v["term"]),
            if voters.is_empty() {
                "-".to_owned()
            } else {
                voters.join(", ")
            }
        ),
    );
    // rows of plain figures: the template's `{}` in turn by the figures of the keys
    for (k, template, keys) in [
        (
            "epoch",
            "{} (agreed {}), owns {} identifiers",
            &["epoch", "agreed_epoch", "owned"][..],
        ),
        (
            "card",
            "{}: {} / {} entries, {} in the software overflow",
            &[
                "card_backend",
                "card_entries",
                "card_capacity",
                "software_overflow_entries",
            ],
        ),
        (
            "tables",
            "node-specific {}, common {} entries",
            &["node_table_entries", "common_entries"],
        ),
        (
            "ESP SAs",
            "{} ({} installed, {} on the card)",
            &["sa_count", "esp_installed", "esp_installed_on_card"],
        ),
    ] {
        kv(&mut s, k, fill(template, keys.iter().map(|k| num(&v[*k]))));
    }
    let sync = &v["sync"];
    let rejected: u64 = sync
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("rejected_"))
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    let sent = [
        "records_sent",
        "bytes_sent",
        "records_delivered",
        "retransmits",
    ];
    kv(
        &mut s,
        "sync",
        fill(
            "{} records / {} bytes sent, {} records delivered, {} retransmits, {} rejected",
            sent.map(|k| num(&sync[k]))
                .into_iter()
                .chain([rejected.to_string()]),
        ),
    );
    let errors = [
        "card_errors",
        "decode_errors",
        "apply_errors",
        "records_dropped",
    ]
    .iter()
    .map(|k| format!("{} {}", k.replace('_', " "), num(&v[*k])))
    .collect::<Vec<_>>()
    .join(", ");
    kv(&mut s, "errors", errors);
    let peers: Vec<Vec<String>> = v["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let srtt = v["sync_peers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|q| q["peer"] == p["node"])
                .and_then(|q| q["srtt_us"].as_u64());
            vec![
                num(&p["node"]),
                if p["witness"] == Value::Bool(true) {
                    "witness"
                } else {
                    "member"
                }
                .to_owned(),
                yes(&p["alive"]).to_owned(),
                yes(&p["ready"]).to_owned(),
                yes(&p["fenced"]).to_owned(),
                num(&p["applied_epoch"]),
                p["last_heard_ms"]
                    .as_u64()
                    .map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms ago")),
                srtt.filter(|us| *us > 0).map_or_else(
                    || "-".to_owned(),
                    |us| format!("{:.2} ms", us as f64 / 1000.0),
                ),
            ]
        })
        .collect();
    if !peers.is_empty() {
        s.push('\n');
        s += &table(
            &[
                "PEER", "ROLE", "ALIVE", "READY", "FENCED", "EPOCH", "HEARD", "SRTT",
            ],
            &peers,
        );
    }
    balance_lines(&mut s, &v["balance"]);
    s
}

/// A ratio with two decimals (`-` when absent).
pub fn f2(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
}

/// A balancing round's moves (`[identifier, from, to]` each) as `ID FROM->TO, ...`.
pub fn moves_text(round: &Value) -> String {
    round["moves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| format!("{} {}->{}", num(&m[0]), num(&m[1]), num(&m[2])))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `balance` part of `ctl status`: the settings and imbalance, the last round, and a row
/// per node with its load and share (only the leader has every node's reports).
fn balance_lines(s: &mut String, b: &Value) {
    if b.is_null() {
        return;
    }
    let interval = b["interval_ms"].as_u64().unwrap_or(0);
    let _ = writeln!(
        s,
        "\n{:<16} {}",
        "balance",
        if interval == 0 {
            "off".to_owned()
        } else {
            format!(
                "every {interval} ms, imbalance {} (threshold {}, low mark {}), {} rounds, {} \
                 identifiers moved{}",
                f2(&b["imbalance"]),
                f2(&b["threshold"]),
                f2(&b["low"]),
                num(&b["rounds"]),
                num(&b["moved"]),
                if b["leader"] == Value::Bool(true) {
                    ""
                } else {
                    " (not the leader: its own load only)"
                }
            )
        }
    );
    let r = &b["last_round"];
    if !r.is_null() {
        let _ = writeln!(
            s,
            "{:<16} at {} ms (unix), {} -> {}: {}",
            "last round",
            num(&r["at_unix_ms"]),
            f2(&r["before"]),
            f2(&r["after"]),
            moves_text(r)
        );
    }
    let rows: Vec<Vec<String>> = b["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            vec![
                num(&n["node"]),
                num(&n["weight"]),
                num(&n["identifiers"]),
                num(&n["packets_per_s"]),
                num(&n["bytes_per_s"]),
                format!("{:.0}", n["share_per_s"].as_f64().unwrap_or(0.0)),
                f2(&n["ratio"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        *s += &table(
            &[
                "NODE", "WEIGHT", "IDS", "PKT/S", "BYTES/S", "SHARE", "RATIO",
            ],
            &rows,
        );
    }
}

// ---- the table views: dump, count, get, events ------------------------------------------

/// How long connecting and the first line of a view may take.
const VIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What `clusterd ctl` and the views say when the control socket at `path` cannot be used,
/// with the likely fix.
#[must_use]
pub fn connect_error(path: &std::path::Path, e: &std::io::Error) -> String {
    let p = path.display();
    match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no control socket at {p}: is the node running? (the path is `control =` in its \
             config file)"
        ),
        std::io::ErrorKind::ConnectionRefused => {
            format!("nobody listens on {p}: the node that made it is gone (start it again)")
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "{p}: permission denied: run as root, as the node's user, or as a member of its \
             control_group"
        ),
        _ => format!("{p}: {e}"),
    }
}

/// Starts a streamed request; the client and the header.
async fn start(
    path: &std::path::Path,
    req: &Request,
) -> Result<(ControlClient, crate::daemon::protocol::StreamHeader), String> {
    let mut c = ControlClient::connect_within(path, VIEW_TIMEOUT)
        .await
        .map_err(|e| connect_error(path, &e))?;
    match c.start_stream(req, VIEW_TIMEOUT).await {
        Ok(Response::StreamStart(h)) => Ok((c, h)),
        Ok(Response::Error(e)) => Err(format!("the node refused {}: {}", req.cmd(), e.error)),
        Ok(other) => Err(format!(
            "the node answered {} with another command's answer: {}",
            req.cmd(),
            other.to_value()
        )),
        Err(e) => Err(format!("{}: {}: {e}", path.display(), req.cmd())),
    }
}

/// Column widths of the dump table (fixed: the rows are printed as they arrive).
const DUMP_HEAD: [(&str, usize); 5] = [
    ("DID", 5),
    ("STATE", 13),
    ("ACTION", 7),
    ("CREATOR", 8),
    ("WHERE", 9),
];

fn dump_row(v: &Value, with_where: bool) -> String {
    let cells = [
        num(&v["did"]),
        num(&v["state"]),
        num(&v["action"]),
        num(&v["creator"]),
        num(&v["where"]),
    ];
    let mut l = String::new();
    for (i, ((_, w), c)) in DUMP_HEAD.iter().zip(cells).enumerate() {
        if i == 4 && !with_where {
            continue;
        }
        let _ = write!(l, "{c:<w$}  ");
    }
    l + &num(&v["key"])
}

fn dump_head(with_where: bool) -> String {
    let mut l = String::new();
    for (i, (h, w)) in DUMP_HEAD.iter().enumerate() {
        if i == 4 && !with_where {
            continue;
        }
        let _ = write!(l, "{h:<w$}  ");
    }
    l + "KEY"
}

/// `clusterd ctl dump`: streams a table's entries that pass `filter` from the node and
/// prints them as they arrive: a table (people), one JSON object a line (`-j`), or a
/// pretty JSON array (`-p`). The summary line (table) says how many were shown.
///
/// # Errors
/// The socket, the node's refusal, a stream cut short.
pub async fn dump_table(
    path: &std::path::Path,
    table: TableName,
    filter: Option<Filter>,
    limit: Option<u64>,
    format: Format,
) -> Result<(), String> {
    let req = Request::TableDump {
        filter,
        limit,
        table: Some(table),
    };
    let (mut c, header) = start(path, &req).await?;
    let with_where = table == TableName::Card;
    let mut first = true;
    let mut out = String::new();
    match format {
        Format::Table => {
            crate::out::line(dump_head(with_where));
        }
        Format::Pretty => {
            crate::out::text("[");
        }
        Format::Json => {}
    }
    loop {
        if crate::out::closed() {
            return Ok(());
        }
        let line = c
            .next_line()
            .await
            .map_err(|e| format!("{}: dump: {e}", path.display()))?;
        let Some(line) = line else {
            crate::out::text(&out);
            return Err(format!(
                "{}: the dump ended before its end line (the node stopped?)",
                path.display()
            ));
        };
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| format!("{}: dump: a line that is not JSON: {e}", path.display()))?;
        if v["end"] == Value::Bool(true) {
            crate::out::text(&out);
            match format {
                Format::Table => {
                    let f = filter
                        .filter(|f| !f.is_empty())
                        .map(|f| format!(" with {}", f.describe()))
                        .unwrap_or_default();
                    crate::out::line(format_args!(
                        "{} entries{f} of {} in node {}'s {} table ({} ms)",
                        num(&v["entries"]),
                        header.len,
                        header.node,
                        table.name(),
                        num(&v["took_ms"])
                    ));
                }
                Format::Pretty => {
                    crate::out::line(if first { "]" } else { "\n]" });
                }
                Format::Json => {}
            }
            return Ok(());
        }
        match format {
            Format::Table => {
                out.push_str(&dump_row(&v, with_where));
                out.push('\n');
            }
            Format::Json => {
                out.push_str(&line);
                out.push('\n');
            }
            Format::Pretty => {
                let sep = if first { "\n" } else { ",\n" };
                let body = json_text(&v, true).replace('\n', "\n  ");
                let _ = write!(out, "{sep}  {body}");
            }
        };
        first = false;
        // written in pieces of about 64 KiB, not a write per entry
        if out.len() >= 64 * 1024 {
            crate::out::text(&out);
            out.clear();
        }
    }
}

/// `clusterd ctl count`: how many entries pass `filter` (conntrack -C): the number, or
/// the answer as JSON.
///
/// # Errors
/// The socket or the node's refusal.
pub async fn count_table(
    path: &std::path::Path,
    table: TableName,
    filter: Option<Filter>,
    format: Format,
) -> Result<(), String> {
    let req = Request::TableCount {
        filter,
        table: Some(table),
    };
    let answer = crate::daemon::control::call_once(path, &req, VIEW_TIMEOUT * 6)
        .await
        .map_err(|e| connect_error(path, &e))?;
    match answer {
        Response::TableCount(c) => {
            crate::out::line(match format {
                Format::Table => c.count.to_string(),
                f => json_text(&c, f == Format::Pretty),
            });
            Ok(())
        }
        Response::Error(e) => Err(format!("the node refused count: {}", e.error)),
        other => Err(format!("unexpected answer to count: {}", other.to_value())),
    }
}

/// `clusterd ctl get`: the entry of one key (conntrack -G); an error (exit status 1) when
/// the table has none.
///
/// # Errors
/// The socket, the node's refusal, no such entry.
pub async fn get_entry(
    path: &std::path::Path,
    table: TableName,
    key: &str,
    format: Format,
) -> Result<(), String> {
    let req = Request::TableGet {
        key: key.to_owned(),
        table: Some(table),
    };
    let answer = crate::daemon::control::call_once(path, &req, VIEW_TIMEOUT)
        .await
        .map_err(|e| connect_error(path, &e))?;
    match answer {
        Response::TableGet(g) => {
            let v = serde_json::to_value(&g.entry).unwrap_or(Value::Null);
            crate::out::line(match format {
                Format::Table => {
                    let with_where = table == TableName::Card;
                    format!("{}\n{}", dump_head(with_where), dump_row(&v, with_where))
                }
                f => json_text(&v, f == Format::Pretty),
            });
            Ok(())
        }
        Response::Error(e) => Err(e.error),
        other => Err(format!("unexpected answer to get: {}", other.to_value())),
    }
}

/// One event line for people.
pub fn event_text(v: &Value) -> String {
    let ids = |v: &Value| -> (String, usize) {
        let list: Vec<u16> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_u64().and_then(|n| u16::try_from(n).ok()))
            .collect();
        (ranges(&list), list.len())
    };
    match v["event"].as_str().unwrap_or("-") {
        "epoch" => {
            let (g, gn) = ids(&v["gained"]);
            let (l, ln) = ids(&v["lost"]);
            format!(
                "epoch    {} applied on node {}: gained {g} ({gn}), lost {l} ({ln}); installed \
                 {}, flushed {}; owns {}",
                num(&v["epoch"]),
                num(&v["node"]),
                num(&v["installed"]),
                num(&v["flushed"]),
                num(&v["owned"])
            )
        }
        "lost" => format!(
            "lost     {} events (this reader was too slow; the node did not wait for it)",
            num(&v["lost_events"])
        ),
        "repaired" => format!(
            "repaired did={} from node {}: {} entries (its owner's replace this node's)",
            num(&v["did"]),
            num(&v["node"]),
            num(&v["entries"])
        ),
        kind => {
            let mut s = format!(
                "{kind:<8} did={} state={} node={} {}",
                num(&v["did"]),
                num(&v["state"]),
                num(&v["node"]),
                num(&v["key"])
            );
            if let Some(dir) = v["dir"].as_str() {
                let _ = write!(s, " ({dir}, epoch {})", num(&v["epoch"]));
            }
            s
        }
    }
}

/// `clusterd ctl events` (and `hwctl --device unix:PATH events`): follows the node's
/// events, one line each (`-j`: the JSON object), until Ctrl-C, a closed pipe or the
/// node's end.
///
/// # Errors
/// The socket or the node's refusal.
pub async fn follow_events(
    path: &std::path::Path,
    filter: Option<Filter>,
    as_json: bool,
) -> Result<(), String> {
    let (mut c, _) = start(path, &Request::Events { filter }).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let line = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            l = c.next_line() => l,
        };
        let line = match line {
            Ok(Some(l)) => l,
            Ok(None) => return Err(format!("{}: the node ended the events", path.display())),
            Err(e) => return Err(format!("{}: events: {e}", path.display())),
        };
        let ok = if as_json {
            crate::out::line(&line)
        } else {
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => crate::out::line(event_text(&v)),
                Err(_) => crate::out::line(&line),
            }
        };
        if !ok {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_choose_the_format() {
        assert_eq!(Format::from_flags(false, false), Format::Table);
        assert_eq!(Format::from_flags(true, false), Format::Json);
        assert_eq!(Format::from_flags(false, true), Format::Pretty);
        assert_eq!(Format::from_flags(true, true), Format::Pretty);
        assert!(!Format::Table.is_json());
        let v = json!({"a": [1, 2]});
        assert_eq!(json_text(&v, false), r#"{"a":[1,2]}"#);
        assert_eq!(json_text(&v, true), "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
    }

    #[test]
    fn event_lines_for_people() {
        let epoch = json!({"event": "epoch", "epoch": 5, "node": 1, "gained": [0, 1, 2, 9],
            "lost": [], "installed": 1200, "flushed": 0, "owned": 85});
        assert_eq!(
            event_text(&epoch),
            "epoch    5 applied on node 1: gained 0-2, 9 (4), lost - (0); installed 1200, \
             flushed 0; owns 85"
        );
        let repaired = json!({"event": "repaired", "did": 7, "entries": 120, "node": 2});
        assert_eq!(
            event_text(&repaired),
            "repaired did=7 from node 2: 120 entries (its owner's replace this node's)"
        );
        let lost = json!({"event": "lost", "lost_events": 3});
        assert!(event_text(&lost).starts_with("lost     3 events"));
    }

    #[test]
    fn ranges_are_compact() {
        assert_eq!(ranges(&[]), "-");
        assert_eq!(ranges(&[5]), "5");
        assert_eq!(ranges(&[3, 1, 2, 7, 9, 8, 11]), "1-3, 7-9, 11");
        let mut ids: Vec<u16> = (0..=84).collect();
        ids.extend([170, 171]);
        assert_eq!(ranges(&ids), "0-84, 170-171");
    }

    #[test]
    fn check_as_a_table_of_mismatches() {
        use crate::daemon::protocol::IdMismatch;
        let mut c = CheckReply {
            checked: 3,
            mismatches: vec![],
            problems: vec![],
        };
        assert_eq!(
            check_table(&c),
            "3 entries checked: 0 under a wrong identifier, 0 other problems\n"
        );
        assert_eq!(check_verdict(&c), Ok(()));
        c.mismatches.push(IdMismatch {
            key: "esp 192.0.2.9 -> 192.0.2.1 spi=0x00001000".into(),
            recomputed: 17,
            stored: 200,
            table: "common".into(),
        });
        c.problems
            .push("1: identifier 4: node-specific table holds 1 entries".into());
        assert_eq!(
            check_table(&c),
            "3 entries checked: 1 under a wrong identifier, 1 other problems\n\
             TABLE   STORED  RECOMPUTED  KEY\n\
             common  200     17          esp 192.0.2.9 -> 192.0.2.1 spi=0x00001000\n\
             problem: 1: identifier 4: node-specific table holds 1 entries\n"
        );
        let e = check_verdict(&c).unwrap_err();
        assert!(e.contains("1 entries under a wrong identifier"), "{e}");
        c.problems.clear();
        assert!(check_verdict(&c).is_err(), "a mismatch alone fails");
        c.mismatches.clear();
        c.problems.push("x".into());
        assert!(check_verdict(&c).is_err(), "a table problem alone fails");
    }

    #[test]
    fn allocation_per_node_as_ranges() {
        let mut owners: Vec<Option<u16>> = vec![None; 256];
        for (i, o) in owners.iter_mut().enumerate() {
            *o = match i {
                0..=84 | 170..=171 => Some(1),
                85..=169 => Some(2),
                172..=253 => Some(3),
                _ => None,
            };
        }
        let t = allocation_table(&AllocationReply {
            agreed_epoch: 7,
            epoch: 6,
            owners,
        });
        assert_eq!(
            t,
            "epoch 6 (agreed 7), 256 identifiers\n\
             node 1: 0-84, 170-171 (87 identifiers)\n\
             node 2: 85-169 (85 identifiers)\n\
             node 3: 172-253 (82 identifiers)\n\
             unowned: 254-255 (2 identifiers)\n"
        );
    }

    #[test]
    fn status_as_lines_and_a_peer_table() {
        let v = json!({
            "node": 1, "role": "member", "pid": 42, "uptime_ms": 12_345, "ready": true,
            "fenced": false, "behind": false, "leader": 2, "is_leader": false, "term": 3,
            "voters": [1, 2, 3], "epoch": 5, "agreed_epoch": 5, "owned": 85,
            "card_backend": "model", "card_entries": 120, "card_capacity": 4096,
            "software_overflow_entries": 0, "node_table_entries": 120, "common_entries": 360,
            "sa_count": 4, "esp_installed": 4, "esp_installed_on_card": 4,
            "sync": {"records_sent": 900, "bytes_sent": 40_000, "records_delivered": 1800,
                     "retransmits": 2, "rejected_auth": 1, "rejected_replay": 2},
            "card_errors": 0, "decode_errors": 0, "apply_errors": 0, "records_dropped": 0,
            "peers": [
                {"node": 2, "witness": false, "alive": true, "ready": true, "fenced": false,
                 "applied_epoch": 5, "last_heard_ms": 12},
                {"node": 99, "witness": true, "alive": false, "ready": false, "fenced": false,
                 "applied_epoch": 4, "last_heard_ms": null},
            ],
            "sync_peers": [{"peer": 2, "srtt_us": 350}, {"peer": 99, "srtt_us": 0}],
        });
        let t = status_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "node             1 (member), pid 42, up 12.3 s");
        assert_eq!(lines[1], "state            ready yes, fenced no, behind no");
        assert_eq!(lines[2], "leader           2 (term 3), voters 1, 2, 3");
        assert_eq!(
            lines[3],
            "epoch            5 (agreed 5), owns 85 identifiers"
        );
        assert!(
            t.contains("card             model: 120 / 4096 entries"),
            "{t}"
        );
        assert!(t.contains("sync             900 records / 40000 bytes sent, 1800 records delivered, 2 retransmits, 3 rejected"), "{t}");
        assert!(
            t.contains("PEER  ROLE     ALIVE  READY  FENCED  EPOCH  HEARD      SRTT\n"),
            "{t}"
        );
        assert!(
            t.contains("2     member   yes    yes    no      5      12 ms ago  0.35 ms\n"),
            "{t}"
        );
        assert!(
            t.contains("99    witness  no     no     no      4      never      -\n"),
            "{t}"
        );
        // a status with fields missing (an older node) still renders
        assert!(status_table(&json!({"node": 3})).starts_with("node             3 (-)"));
    }

    #[test]
    fn status_shows_the_load_per_node_and_the_last_round() {
        let v = json!({"node": 1, "balance": {
            "leader": true, "interval_ms": 5000, "threshold": 1.25, "low": 1.1, "max_moves": 4,
            "imbalance": 1.04, "rounds": 3, "moved": 2,
            "nodes": [
                {"node": 1, "weight": 1000, "identifiers": 80, "packets_per_s": 1200,
                 "bytes_per_s": 96000, "share_per_s": 1150.0, "ratio": 1.04},
                {"node": 2, "weight": 1000, "identifiers": 176, "packets_per_s": 1100,
                 "bytes_per_s": 88000, "share_per_s": 1150.0, "ratio": 0.957},
            ],
            "last_round": {"at_unix_ms": 1700000000000u64, "before": 1.9, "after": 1.04,
                           "moves": [[7, 1, 2], [9, 1, 2]]},
        }});
        let t = status_table(&v);
        assert!(t.contains("balance          every 5000 ms, imbalance 1.04 (threshold 1.25, low mark 1.10), 3 rounds, 2 identifiers moved\n"), "{t}");
        assert!(
            t.contains(
                "last round       at 1700000000000 ms (unix), 1.90 -> 1.04: 7 1->2, 9 1->2\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("NODE  WEIGHT  IDS  PKT/S  BYTES/S  SHARE  RATIO\n"),
            "{t}"
        );
        assert!(
            t.contains("2     1000    176  1100   88000    1150   0.96\n"),
            "{t}"
        );
        let off = status_table(&json!({"node": 1, "balance": {"interval_ms": 0}}));
        assert!(off.contains("balance          off\n"), "{off}");
    }
}
