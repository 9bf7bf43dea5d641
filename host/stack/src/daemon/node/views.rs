//! The views on a running node's tables (`clusterd ctl dump|count|get|events`): filtered
//! dumps streamed in chunks, counts, lookups, and the events of what changes.
//!
//! A dump is worked on in slices between turns of the node's loop, like the walks of
//! [`super::dumps`]: a slice reads entries of one identifier after another until
//! [`SLICE_TIME`] went by, turns those that pass the filter into JSON lines, and hands
//! chunks of about [`CHUNK_BYTES`] to the connection through a channel of
//! [`STREAM_CHUNKS`] chunks. The node never waits for the client: when the channel is full
//! the dump pauses (the loop polls it again a millisecond later), so a slow reader holds at
//! most `STREAM_CHUNKS` chunks of memory and never slows heartbeats. Each identifier is
//! read in pieces at different moments: the dump as a whole is not one snapshot.
//!
//! Events come from what the node already sees: the replication records it sends (its own
//! entries created, updated, removed) and receives (its peers'), and the allocations it
//! applies (identifiers gained and lost, entries installed on and flushed from its card).
//! Each subscriber has a queue of [`EVENT_QUEUE`] lines; when it is full the events are
//! counted, not kept, and the subscriber gets a `lost` line with their number once there is
//! room again.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::Runtime;
use crate::core::entry::{Entry, FlowKey};
use crate::core::events::{Event, Message};
use crate::core::ids::DistributionId;
use crate::core::node_table::NodeSpecificTable;
use crate::core::record::Record;
use crate::daemon::protocol::{
    Request, Response, StreamBody, StreamEnd, StreamHeader, TableCountReply, TableGetReply,
    TableName, ViewEntry,
};
use crate::filter::{core_action, core_state, EntryView, Filter, ViewKey};

/// Time a turn of the loop spends on dumps and counts at most.
pub(super) const SLICE_TIME: Duration = Duration::from_millis(5);
/// Bytes of JSON lines handed to the connection at a time.
pub(super) const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks a dump's channel holds: the most a slow reader makes the node keep.
pub(super) const STREAM_CHUNKS: usize = 8;
/// Lines an event subscriber's queue holds.
pub(super) const EVENT_QUEUE: usize = 4096;
/// Dumps and counts in progress at most (more are refused: each holds a connection).
const MAX_JOBS: usize = 32;
/// Event subscribers at most.
const MAX_SUBSCRIBERS: usize = 32;
/// Entries read between two looks at the clock.
const BATCH: usize = 512;

enum Sink {
    Stream {
        tx: mpsc::Sender<String>,
        buf: Vec<u8>,
        pending: Option<String>,
        sent: u64,
        limit: u64,
    },
    Count {
        reply: oneshot::Sender<Response>,
        count: u64,
    },
}

/// A dump or count in progress.
pub(super) struct TableJob {
    table: TableName,
    filter: Filter,
    next: u16,
    end: u16,
    /// Entries of identifier `next` already read.
    pos: usize,
    scanned: u64,
    /// Entries in the table when the job started.
    len: usize,
    started: Instant,
    sink: Sink,
    /// The end line was queued: the job ends once it is sent.
    done: bool,
}

struct Subscriber {
    tx: mpsc::Sender<String>,
    filter: Filter,
    lost: u64,
}

/// The views in progress on a node.
#[derive(Default)]
pub(super) struct Views {
    jobs: Vec<TableJob>,
    subs: Vec<Subscriber>,
    /// A job waits for its reader (the channel was full) and none can go on now.
    blocked: bool,
}

impl Views {
    /// When the loop should run again for the views: now while a dump or count can go on, in
    /// a millisecond while all of them wait for their readers.
    pub(super) fn wake(&self, now: Duration) -> Option<Duration> {
        if self.jobs.is_empty() {
            None
        } else if self.blocked {
            Some(now + Duration::from_millis(1))
        } else {
            Some(now)
        }
    }

    /// Whether anyone follows the events (else no event is looked at).
    pub(super) fn following(&self) -> bool {
        !self.subs.is_empty()
    }

    /// Whether some subscriber has room for a line.
    fn room(&self) -> bool {
        self.subs.iter().any(|s| s.tx.capacity() > 0)
    }

    /// Sends one event line (made once, when some subscriber takes it) to every subscriber
    /// whose filter passes `view` (`None`: every subscriber); a full queue counts it as
    /// lost, a closed one is dropped.
    fn emit(&mut self, view: Option<&EntryView>, make: impl FnOnce() -> String) {
        let mut line: Option<String> = None;
        let mut make = Some(make);
        self.subs.retain_mut(|s| {
            if view.is_some_and(|v| !s.filter.matches(v)) {
                return !s.tx.is_closed();
            }
            if s.lost > 0 {
                let marker = lost_line(s.lost);
                match s.tx.try_send(marker) {
                    Ok(()) => s.lost = 0,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.lost += 1;
                        return true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            if line.is_none() {
                line = make.take().map(|f| f());
            }
            let l = line.clone().unwrap_or_default();
            match s.tx.try_send(l) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.lost += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Counts `n` events as lost for every subscriber (a burst too large to look at).
    fn lose(&mut self, n: u64) {
        for s in &mut self.subs {
            s.lost += n;
        }
    }
}

fn lost_line(n: u64) -> String {
    format!(
        "{{\"event\":\"lost\",\"lost_events\":{n},\"unix_ms\":{}}}\n",
        super::unix_ms()
    )
}

/// One entry as a view shows it.
pub(super) fn view_entry(e: &Entry, table: TableName, location: Option<&str>) -> ViewEntry {
    let k = ViewKey::of_core(&e.key, e.initiator_is_lo);
    let spi = k.spi.or(e.tunnel.map(|t| t.spi));
    ViewEntry {
        action: core_action(e.action).to_owned(),
        creator: e.creator.0,
        did: e.dist.0,
        dport: k.dport,
        dst: k.dst.map(|p| p.to_string()),
        key: k.to_string(),
        packets: e.packets,
        proto: k.proto().map(|_| proto_name(&k).to_owned()),
        spi: spi.map(|s| format!("0x{s:08x}")),
        sport: k.sport,
        src: k.src.map(|p| p.to_string()),
        state: core_state(e.state).to_owned(),
        table: table.name().to_owned(),
        version: e.version,
        location: location.map(str::to_owned),
    }
}

/// Writes `e` as one JSON line, the fields of [`ViewEntry`] (as `serde_json` writes it,
/// without building one: a dump of a million entries makes no string per field). Every
/// value written is a number or one of the views' own names, addresses and key texts, none
/// of which needs escaping.
pub(super) fn write_entry(buf: &mut Vec<u8>, e: &Entry, table: TableName, location: Option<&str>) {
    use std::io::Write as _;
    let k = ViewKey::of_core(&e.key, e.initiator_is_lo);
    let _ = write!(
        buf,
        "{{\"action\":\"{}\",\"creator\":{},\"did\":{}",
        core_action(e.action),
        e.creator.0,
        e.dist.0
    );
    if let Some(p) = k.dport {
        let _ = write!(buf, ",\"dport\":{p}");
    }
    if let Some(d) = k.dst {
        let _ = write!(buf, ",\"dst\":\"{d}\"");
    }
    let _ = write!(buf, ",\"key\":\"{k}\",\"packets\":{}", e.packets);
    if k.proto().is_some() {
        let _ = write!(buf, ",\"proto\":\"{}\"", proto_name(&k));
    }
    if let Some(spi) = k.spi.or(e.tunnel.map(|t| t.spi)) {
        let _ = write!(buf, ",\"spi\":\"0x{spi:08x}\"");
    }
    if let Some(p) = k.sport {
        let _ = write!(buf, ",\"sport\":{p}");
    }
    if let Some(s) = k.src {
        let _ = write!(buf, ",\"src\":\"{s}\"");
    }
    let _ = write!(
        buf,
        ",\"state\":\"{}\",\"table\":\"{}\",\"version\":{}",
        core_state(e.state),
        table.name(),
        e.version
    );
    if let Some(w) = location {
        let _ = write!(buf, ",\"where\":\"{w}\"");
    }
    buf.extend_from_slice(b"}\n");
}

fn proto_name(k: &ViewKey) -> &'static str {
    match k.kind {
        crate::filter::KeyKind::Isakmp => "udp",
        kind => kind.name(),
    }
}

fn entry_view(e: &Entry) -> EntryView {
    EntryView {
        did: e.dist.0,
        state: core_state(e.state),
        key: ViewKey::of_core(&e.key, e.initiator_is_lo),
    }
}

/// An entry event line.
fn entry_event(kind: &str, node: u16, e: &Entry) -> String {
    let mut v = serde_json::to_value(view_entry(e, TableName::Common, None))
        .unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("table");
        o.remove("packets");
        o.insert("event".into(), kind.into());
        o.insert("node".into(), node.into());
        o.insert("unix_ms".into(), super::unix_ms().into());
    }
    let mut s = v.to_string();
    s.push('\n');
    s
}

impl Runtime {
    /// Starts a streamed or walked view: `table_dump`, `table_count`, `events`.
    pub(super) fn start_view(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        let (table, filter, limit, count) = match req {
            Request::TableDump {
                filter,
                limit,
                table,
            } => (table, filter, limit, false),
            Request::TableCount { filter, table } => (table, filter, None, true),
            Request::Events { filter } => return self.subscribe(filter.unwrap_or_default(), reply),
            _ => {
                let _ = reply.send(Response::error("not a view command"));
                return;
            }
        };
        if self.views.jobs.len() >= MAX_JOBS {
            let _ = reply.send(Response::error(format!(
                "{MAX_JOBS} dumps and counts are already running on this node; wait for one \
                 to end"
            )));
            return;
        }
        let table = table.unwrap_or_default();
        let filter = filter.unwrap_or_default();
        let ids = self.cfg.identifiers.get();
        let (next, end) = match filter.did_only() {
            Some(d) if d >= ids => (0, 0),
            Some(d) => (d, d + 1),
            None => (0, ids),
        };
        let len = self.table_len(table);
        if count && filter.is_empty() {
            let _ = reply.send(Response::TableCount(TableCountReply {
                count: len as u64,
                len,
                table: table.name().to_owned(),
            }));
            return;
        }
        let sink = if count {
            Sink::Count { reply, count: 0 }
        } else {
            let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
            let body = StreamBody {
                header: StreamHeader {
                    len,
                    node: self.cfg.node.0,
                    stream: "table_dump".to_owned(),
                    table: Some(table.name().to_owned()),
                },
                lines: std::sync::Arc::new(std::sync::Mutex::new(Some(rx))),
            };
            if reply.send(Response::Stream(body)).is_err() {
                return;
            }
            Sink::Stream {
                tx,
                buf: Vec::with_capacity(CHUNK_BYTES + 1024),
                pending: None,
                sent: 0,
                limit: limit.unwrap_or(u64::MAX),
            }
        };
        self.views.jobs.push(TableJob {
            table,
            filter,
            next,
            end,
            pos: 0,
            scanned: 0,
            len,
            started: Instant::now(),
            sink,
            done: false,
        });
        self.views_slice();
    }

    fn table_len(&self, table: TableName) -> usize {
        match table {
            TableName::Common => self.member.core().common().len(),
            TableName::Card => self.member.core().node_table().len(),
        }
    }

    fn subscribe(&mut self, filter: Filter, reply: oneshot::Sender<Response>) {
        self.views.subs.retain(|s| !s.tx.is_closed());
        if self.views.subs.len() >= MAX_SUBSCRIBERS {
            let _ = reply.send(Response::error(format!(
                "{MAX_SUBSCRIBERS} clients already follow this node's events; stop one first"
            )));
            return;
        }
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let body = StreamBody {
            header: StreamHeader {
                len: self.member.core().common().len(),
                node: self.cfg.node.0,
                stream: "events".to_owned(),
                table: None,
            },
            lines: std::sync::Arc::new(std::sync::Mutex::new(Some(rx))),
        };
        if reply.send(Response::Stream(body)).is_ok() {
            self.views.subs.push(Subscriber {
                tx,
                filter,
                lost: 0,
            });
        }
    }

    /// `table_get`: the entry of one key, in either direction.
    pub(super) fn table_get(&self, key: &str, table: Option<TableName>) -> Response {
        let table = table.unwrap_or_default();
        let k: ViewKey = match key.parse() {
            Ok(k) => k,
            Err(e) => return Response::error(e),
        };
        let Some(fk) = k.to_core() else {
            return Response::error(format!(
                "key {key:?} has a wildcard or a prefix: a {} table entry has a whole key \
                 (host addresses, every port); give one",
                table.name()
            ));
        };
        let core = self.member.core();
        let found = match table {
            TableName::Common => core.common().get(&fk).map(|e| (e, None)),
            TableName::Card => {
                let t = core.node_table();
                t.card()
                    .get(&fk)
                    .map(|e| (e, Some("card")))
                    .or_else(|| t.overflow().get(&fk).map(|e| (e, Some("overflow"))))
            }
        };
        match found {
            Some((e, location)) => Response::TableGet(TableGetReply {
                entry: view_entry(e, table, location),
            }),
            None => Response::error(format!(
                "no entry {k} in node {}'s {} table (in either direction; `clusterd ctl dump \
                 --table {} --src ADDR` lists the entries of an address)",
                self.cfg.node.0,
                table.name(),
                table.name()
            )),
        }
    }

    /// Works on the dumps and counts in progress for at most [`SLICE_TIME`].
    pub(super) fn views_slice(&mut self) {
        if self.views.jobs.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut jobs = std::mem::take(&mut self.views.jobs);
        let mut any_moved = false;
        for job in &mut jobs {
            if started.elapsed() >= SLICE_TIME {
                any_moved = true;
                break;
            }
            any_moved |= self.job_slice(job, started);
        }
        jobs.retain_mut(|j| !j.finished());
        self.views.blocked = !any_moved && !jobs.is_empty();
        // jobs started by this turn's requests come after
        jobs.append(&mut self.views.jobs);
        self.views.jobs = jobs;
    }

    /// One job's share of the slice; whether it got on (not only waiting for its reader).
    fn job_slice(&self, job: &mut TableJob, started: Instant) -> bool {
        if !job.flush() {
            return false;
        }
        let core = self.member.core();
        while !job.done && started.elapsed() < SLICE_TIME {
            if job.next >= job.end || job.limit_reached() {
                job.finish();
                break;
            }
            let d = DistributionId(job.next);
            let (table, pos) = (job.table, job.pos);
            let mut n = 0;
            let mut more = false;
            {
                let mut each = |e: &Entry, location: Option<&str>| {
                    job.scanned += 1;
                    if job.filter.matches(&entry_view(e)) {
                        job.push(e, location);
                    }
                };
                match table {
                    TableName::Common => {
                        for e in core.common().select(d).skip(pos) {
                            if n == BATCH {
                                more = true;
                                break;
                            }
                            n += 1;
                            each(e, None);
                        }
                    }
                    TableName::Card => {
                        let t = core.node_table();
                        let on_card = t.card().entries_of(d).map(|e| (e, "card"));
                        let overflow = t.overflow().entries_of(d).map(|e| (e, "overflow"));
                        for (e, w) in on_card.chain(overflow).skip(pos) {
                            if n == BATCH {
                                more = true;
                                break;
                            }
                            n += 1;
                            each(e, Some(w));
                        }
                    }
                }
            }
            if more {
                job.pos += n;
            } else {
                job.next += 1;
                job.pos = 0;
            }
            if job.chunk_full() && !job.flush() {
                return true;
            }
        }
        job.flush();
        true
    }

    /// Before an agreed allocation is applied: what this node owns and holds per identifier
    /// (only while someone follows the events).
    pub(super) fn views_before_epoch(&self) -> Option<(Vec<DistributionId>, Vec<usize>)> {
        if !self.views.following() {
            return None;
        }
        let core = self.member.core();
        let owned = core.allocation().ids_of(self.cfg.node);
        let held = self
            .cfg
            .identifiers
            .all()
            .map(|d| core.node_table().dist_len(d))
            .collect();
        Some((owned, held))
    }

    /// After an agreed allocation was applied: the `epoch` event, and a `moved` event per
    /// entry installed on this node's card (gained identifiers) or flushed from it (lost
    /// ones), as many as the subscribers have room for.
    pub(super) fn views_after_epoch(&mut self, before: Option<(Vec<DistributionId>, Vec<usize>)>) {
        let Some((owned_before, held_before)) = before else {
            return;
        };
        let me = self.cfg.node;
        let core = self.member.core();
        let a = core.allocation();
        let owned = a.ids_of(me);
        let gained: Vec<DistributionId> = owned
            .iter()
            .filter(|d| !owned_before.contains(d))
            .copied()
            .collect();
        let lost: Vec<DistributionId> = owned_before
            .iter()
            .filter(|d| !owned.contains(d))
            .copied()
            .collect();
        // a gained identifier's entries: the common table's (a large share goes into the
        // card in slices after this, [`cluster_core::member::rebuild`])
        let installed: usize = gained.iter().map(|d| core.common().dist_len(*d)).sum();
        let flushed: usize = lost
            .iter()
            .map(|d| held_before.get(d.index()).copied().unwrap_or(0))
            .sum();
        let epoch = a.epoch.0;
        let ids = |v: &[DistributionId]| v.iter().map(|d| d.0).collect::<Vec<u16>>();
        let line = serde_json::json!({
            "event": "epoch",
            "epoch": epoch,
            "node": me.0,
            "gained": ids(&gained),
            "lost": ids(&lost),
            "installed": installed,
            "flushed": flushed,
            "owned": owned.len(),
            "unix_ms": super::unix_ms(),
        })
        .to_string()
            + "\n";
        let mut lines: Vec<(EntryView, String)> = Vec::new();
        let mut skipped = 0u64;
        let budget = EVENT_QUEUE;
        let moved = |dir: &str, e: &Entry| -> String {
            let mut l = entry_event("moved", me.0, e);
            l.truncate(l.len().saturating_sub(2));
            format!("{l},\"dir\":\"{dir}\",\"epoch\":{epoch}}}\n")
        };
        // past the budget the entries are only counted (no walk over a large table)
        for d in &gained {
            let room = budget.saturating_sub(lines.len());
            skipped += core.common().dist_len(*d).saturating_sub(room) as u64;
            for e in core.common().select(*d).take(room) {
                lines.push((entry_view(e), moved("installed", e)));
            }
        }
        for d in &lost {
            let room = budget.saturating_sub(lines.len());
            skipped += core.common().dist_len(*d).saturating_sub(room) as u64;
            for e in core.common().select(*d).take(room) {
                lines.push((entry_view(e), moved("flushed", e)));
            }
        }
        self.views.emit(None, || line);
        for (v, l) in lines {
            if !self.views.room() {
                skipped += 1;
                continue;
            }
            self.views.emit(Some(&v), || l);
        }
        if skipped > 0 {
            self.views.lose(skipped);
        }
    }

    /// A replication record this node sends: its own entries created, updated, removed.
    pub(super) fn views_record_out(&mut self, record: &Record) {
        if !self.views.following() {
            return;
        }
        if let Record::Event(m) = record {
            self.views_message(m, None);
        }
    }

    /// Replication records from a peer, before the node applies them (a removed entry is
    /// still in the common table then: its event shows its state).
    pub(super) fn views_records_in<'r>(&mut self, batch: impl IntoIterator<Item = &'r [u8]>) {
        if !self.views.following() {
            return;
        }
        for rec in batch {
            if let Ok(Record::Event(m)) = Record::parse(rec) {
                let old = match &m.event {
                    Event::Clear { key, .. } => self.member.core().common().get(key).cloned(),
                    _ => None,
                };
                self.views_message(&m, old);
            }
        }
    }

    fn views_message(&mut self, m: &Message, old: Option<Entry>) {
        let node = m.sender.0;
        match &m.event {
            Event::Add(e) => {
                let v = entry_view(e);
                self.views
                    .emit(Some(&v), || entry_event("created", node, e));
            }
            Event::Update(e) => {
                let v = entry_view(e);
                self.views
                    .emit(Some(&v), || entry_event("updated", node, e));
            }
            Event::Clear { key, dist, version } => {
                let (v, line) = removed(node, key, *dist, *version, old.as_ref());
                self.views.emit(Some(&v), || line);
            }
            Event::Snapshot { dist, entries, .. } => {
                // anti-entropy: the owner's entries of one identifier replace this node's
                let line = serde_json::json!({
                    "event": "repaired",
                    "did": dist.0,
                    "entries": entries.len(),
                    "node": node,
                    "unix_ms": super::unix_ms(),
                })
                .to_string()
                    + "\n";
                self.views.emit(None, || line);
            }
            _ => {}
        }
    }
}

/// A `removed` event: the entry as it was when known, else its key and identifier.
fn removed(
    node: u16,
    key: &FlowKey,
    dist: DistributionId,
    version: u32,
    old: Option<&Entry>,
) -> (EntryView, String) {
    if let Some(e) = old {
        return (entry_view(e), entry_event("removed", node, e));
    }
    // the initiator is not known any more: the key's canonical order
    let k = ViewKey::of_core(key, true);
    let v = EntryView {
        did: dist.0,
        state: "-",
        key: k,
    };
    let line = serde_json::json!({
        "event": "removed",
        "did": dist.0,
        "key": k.to_string(),
        "node": node,
        "version": version,
        "unix_ms": super::unix_ms(),
    })
    .to_string()
        + "\n";
    (v, line)
}

impl TableJob {
    fn limit_reached(&self) -> bool {
        matches!(self.sink, Sink::Stream { sent, limit, .. } if sent >= limit)
    }

    fn chunk_full(&self) -> bool {
        matches!(&self.sink, Sink::Stream { buf, .. } if buf.len() >= CHUNK_BYTES)
    }

    fn push(&mut self, e: &Entry, location: Option<&str>) {
        match &mut self.sink {
            Sink::Stream {
                buf, sent, limit, ..
            } => {
                if *sent >= *limit {
                    return;
                }
                write_entry(buf, e, self.table, location);
                *sent += 1;
            }
            Sink::Count { count, .. } => *count += 1,
        }
    }

    /// Queues the end line (dump) or answers (count).
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let took_ms = self.started.elapsed().as_millis() as u64;
        match &mut self.sink {
            Sink::Stream { buf, sent, .. } => {
                let end = StreamEnd {
                    end: true,
                    entries: *sent,
                    scanned: self.scanned,
                    took_ms,
                };
                if serde_json::to_writer(&mut *buf, &end).is_ok() {
                    buf.push(b'\n');
                }
            }
            Sink::Count { .. } => {}
        }
    }

    /// Hands the chunk on; false while the reader has not taken the previous one (the job
    /// waits). A reader gone ends the job.
    fn flush(&mut self) -> bool {
        let Sink::Stream {
            tx, buf, pending, ..
        } = &mut self.sink
        else {
            return true;
        };
        if pending.is_none() && (buf.len() >= CHUNK_BYTES || (self.done && !buf.is_empty())) {
            let bytes = std::mem::replace(buf, Vec::with_capacity(CHUNK_BYTES + 1024));
            *pending = Some(String::from_utf8(bytes).unwrap_or_default());
        }
        if let Some(chunk) = pending.take() {
            match tx.try_send(chunk) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(c)) => {
                    *pending = Some(c);
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // the reader went away: nothing more to send
                    buf.clear();
                    self.done = true;
                }
            }
        }
        true
    }

    /// Whether the job has nothing left to do (answered, or its reader is gone).
    fn finished(&mut self) -> bool {
        match &mut self.sink {
            Sink::Stream {
                tx, buf, pending, ..
            } => tx.is_closed() || (self.done && pending.is_none() && buf.is_empty()),
            Sink::Count { reply, count } => {
                if reply.is_closed() {
                    return true;
                }
                if !self.done {
                    return false;
                }
                let (unused, _) = oneshot::channel::<Response>();
                let reply = std::mem::replace(reply, unused);
                let _ = reply.send(Response::TableCount(TableCountReply {
                    count: *count,
                    len: self.len,
                    table: self.table.name().to_owned(),
                }));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entry::{ConnState, Endpoint, SaRef};
    use crate::core::ids::NodeId;

    #[test]
    fn the_fast_line_is_the_serde_line() {
        let a = Endpoint::new("198.18.1.1".parse().unwrap(), 80);
        let b = Endpoint::new("198.18.0.9".parse().unwrap(), 1234);
        let (key, lo) = FlowKey::transport(crate::core::entry::L4Proto::Udp, a, b);
        let mut es = vec![Entry::new(
            key,
            DistributionId(7),
            ConnState::UdpReplied,
            NodeId(2),
        )];
        es[0].initiator_is_lo = !lo;
        es[0].tunnel = Some(SaRef { spi: 0x1234 });
        es.push(Entry::new(
            FlowKey::Esp {
                src: "2001:db8::9".parse().unwrap(),
                dst: "2001:db8::1".parse().unwrap(),
                spi: 9,
            },
            DistributionId(4095),
            ConnState::EspSa,
            NodeId(1),
        ));
        es.push(Entry::new(
            FlowKey::TlsSession(crate::core::entry::SessionDigest([3; 16])),
            DistributionId(0),
            ConnState::Session,
            NodeId(1),
        ));
        for e in &es {
            for (t, w) in [
                (TableName::Common, None),
                (TableName::Card, Some("overflow")),
            ] {
                let mut buf = Vec::new();
                write_entry(&mut buf, e, t, w);
                let fast: serde_json::Value = serde_json::from_slice(&buf).unwrap();
                let slow = serde_json::to_value(view_entry(e, t, w)).unwrap();
                assert_eq!(fast, slow);
                assert_eq!(buf.last(), Some(&b'\n'));
                let back: ViewEntry = serde_json::from_slice(&buf).unwrap();
                assert_eq!(back, view_entry(e, t, w));
            }
        }
    }
}
