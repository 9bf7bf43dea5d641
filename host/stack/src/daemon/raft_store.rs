//! The Raft storage of one node on disk: a checksummed append-only log, a checksummed hard
//! state and a checksummed snapshot, each in `state_dir`, behind the `raft` crate's
//! [`Storage`] trait.
//!
//! Files (all integers big-endian, every checksum CRC-32 (IEEE) through `crc32fast`):
//!
//! - `raft.log`: the 8-byte header `CDRAFTL\x01`, then records `len u32 | crc u32 | entry`,
//!   where `entry` is a protobuf `eraftpb::Entry` of `len` bytes and `crc` covers the length and
//!   the entry. Appended per batch and synced (`fdatasync`) before Raft acts on it. A record
//!   that overwrites (index at or below the last one) truncates the log there, as in Raft.
//! - `raft.hardstate`: the 8-byte header `CDRAFTH\x01`, term u64, vote u64, commit u64, crc u32
//!   over the 32 bytes before it (36 bytes). Replaced atomically (temporary file, fsync,
//!   rename, fsync of the directory).
//! - `raft.snapshot` (after the first compaction): the header `CDRAFTS\x01`, len u32, a protobuf
//!   `eraftpb::Snapshot` (index, term, voter set, and the state machine's data: the applied
//!   allocation), crc u32 over everything before it. Replaced atomically like the hard state.
//!
//! Recovery: a last record cut short (a crash in the middle of an append: its length or its
//! bytes run past the end of the file) is a torn tail; it is truncated and reported. Anything
//! else that does not verify (a bad checksum, zeros, garbage, a record out of order, a hard
//! state or snapshot of the wrong size or checksum, a missing file beside present ones, the
//! unchecked format of older versions) is a [`StoreError::Corrupt`] naming the file, the offset
//! and the fix. A directory without any of the three files is a fresh start.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

const LOG_MAGIC: &[u8; 8] = b"CDRAFTL\x01";
const HS_MAGIC: &[u8; 8] = b"CDRAFTH\x01";
const SNAP_MAGIC: &[u8; 8] = b"CDRAFTS\x01";
/// Size of `raft.hardstate`.
pub const HS_LEN: usize = 36;
/// Largest log record accepted (an allocation of 4096 identifiers is 8 KiB).
pub const MAX_RECORD: usize = 1 << 20;
/// Record header: length and checksum.
const REC_HDR: usize = 8;

/// The fix printed with every corruption error.
pub const FIX: &str = "fix: if this node's other files are intact and you have the latest copy of \
     this file, restore it; otherwise move the state directory away (e.g. `mv DIR DIR.bad`) and \
     start the node again: it rejoins as a new member and catches up from the leader (see \
     docs/clusterd.md, \"Raft state files\")";

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("consensus state {path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        err: std::io::Error,
    },
    /// A file does not verify.
    #[error("consensus state file {path} is corrupt: {what}; {FIX}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong, with the offset where it applies.
        what: String,
    },
    /// Raft asked for something the log cannot hold (an entry out of order).
    #[error("consensus log: {0}")]
    Order(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |err| StoreError::Io {
        path: path.display().to_string(),
        err,
    }
}

fn corrupt(path: &Path, what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        what: what.into(),
    }
}

/// What [`DiskStorage::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// No Raft state existed (first start, or the state directory was lost).
    pub fresh: bool,
    /// A torn final record was cut off: (offset it started at, bytes removed).
    pub torn_tail: Option<(u64, u64)>,
    /// Log records read.
    pub records: usize,
}

/// The node's Raft storage: the log after the snapshot, the hard state, the conf state and
/// the snapshot, in memory and on disk.
pub struct DiskStorage {
    log_path: PathBuf,
    hs_path: PathBuf,
    snap_path: PathBuf,
    hs: HardState,
    cs: ConfState,
    /// The last snapshot (index 0: none); its data is the state machine at its index.
    snap: Snapshot,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
    log: File,
    log_bytes: u64,
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
/// directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// Encodes a hard state as `raft.hardstate` holds it.
pub fn encode_hardstate(hs: &HardState) -> [u8; HS_LEN] {
    let mut b = [0u8; HS_LEN];
    b[..8].copy_from_slice(HS_MAGIC);
    b[8..16].copy_from_slice(&hs.term.to_be_bytes());
    b[16..24].copy_from_slice(&hs.vote.to_be_bytes());
    b[24..32].copy_from_slice(&hs.commit.to_be_bytes());
    let c = crc(&[&b[..32]]);
    b[32..].copy_from_slice(&c.to_be_bytes());
    b
}

fn decode_hardstate(path: &Path, b: &[u8]) -> Result<HardState, StoreError> {
    if b.len() != HS_LEN {
        return Err(corrupt(
            path,
            format!(
                "{} bytes, a hard state is {HS_LEN} (the node's term and vote are lost)",
                b.len()
            ),
        ));
    }
    if &b[..8] != HS_MAGIC {
        return Err(corrupt(
            path,
            "bad header at offset 0 (not a hard state, or the unchecked format of an older \
             clusterd)",
        ));
    }
    let want = u32::from_be_bytes([b[32], b[33], b[34], b[35]]);
    if crc(&[&b[..32]]) != want {
        return Err(corrupt(path, "checksum mismatch at offset 32"));
    }
    let u = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    Ok(HardState {
        term: u(8),
        vote: u(16),
        commit: u(24),
        ..Default::default()
    })
}

/// Encodes a snapshot as `raft.snapshot` holds it.
///
/// # Errors
/// A snapshot that protobuf cannot encode.
pub fn encode_snapshot(s: &Snapshot) -> Result<Vec<u8>, StoreError> {
    let body = s
        .write_to_bytes()
        .map_err(|e| StoreError::Order(format!("snapshot encoding: {e}")))?;
    let mut b = Vec::with_capacity(body.len() + 16);
    b.extend_from_slice(SNAP_MAGIC);
    b.extend_from_slice(&(body.len() as u32).to_be_bytes());
    b.extend_from_slice(&body);
    let c = crc(&[&b]);
    b.extend_from_slice(&c.to_be_bytes());
    Ok(b)
}

fn decode_snapshot(path: &Path, b: &[u8]) -> Result<Snapshot, StoreError> {
    if b.len() < 16 || &b[..8] != SNAP_MAGIC {
        return Err(corrupt(path, "bad header at offset 0 (not a snapshot)"));
    }
    let len = u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
    if b.len() != 16 + len {
        return Err(corrupt(
            path,
            format!(
                "{} bytes, its header says {} (cut short or extended)",
                b.len(),
                16 + len
            ),
        ));
    }
    let want = u32::from_be_bytes(b[12 + len..].try_into().unwrap_or([0; 4]));
    if crc(&[&b[..12 + len]]) != want {
        return Err(corrupt(
            path,
            format!("checksum mismatch at offset {}", 12 + len),
        ));
    }
    Snapshot::parse_from_bytes(&b[12..12 + len])
        .map_err(|_| corrupt(path, "checksum matches but the snapshot does not parse"))
}

/// Encodes one log record.
///
/// # Errors
/// An entry that protobuf cannot encode.
pub fn encode_record(e: &Entry, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let body = e
        .write_to_bytes()
        .map_err(|err| StoreError::Order(format!("entry encoding: {err}")))?;
    let len = (body.len() as u32).to_be_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc(&[&len, &body]).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// The header of `raft.log`.
pub fn log_header() -> &'static [u8] {
    LOG_MAGIC
}

/// Outcome of parsing a log file's bytes.
struct ParsedLog {
    entries: Vec<Entry>,
    /// Where the valid records end (the file is truncated here when `torn`).
    valid_end: usize,
    torn: bool,
}

/// The first offset at or after `from` where a whole record with a good checksum starts.
fn record_after(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len().saturating_sub(REC_HDR)).find(|&at| {
        let r = &buf[at..];
        let len_b = [r[0], r[1], r[2], r[3]];
        let len = u32::from_be_bytes(len_b) as usize;
        len <= MAX_RECORD
            && r.len() >= REC_HDR + len
            && crc(&[&len_b, &r[REC_HDR..REC_HDR + len]])
                == u32::from_be_bytes([r[4], r[5], r[6], r[7]])
    })
}

fn parse_log(path: &Path, buf: &[u8]) -> Result<ParsedLog, StoreError> {
    if buf.len() < LOG_MAGIC.len() {
        // the header is written atomically with the file: a shorter file was cut
        return Err(corrupt(
            path,
            format!("{} bytes, shorter than its 8-byte header", buf.len()),
        ));
    }
    if &buf[..8] != LOG_MAGIC {
        return Err(corrupt(
            path,
            "bad header at offset 0 (not a Raft log, or the unchecked format of an older \
             clusterd)",
        ));
    }
    let mut at = 8;
    let mut entries = Vec::new();
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < REC_HDR {
            return Ok(ParsedLog {
                entries,
                valid_end: at,
                torn: true,
            });
        }
        let len_b = [rest[0], rest[1], rest[2], rest[3]];
        let len = u32::from_be_bytes(len_b) as usize;
        let want = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD {
            return Err(corrupt(
                path,
                format!("record at offset {at} claims {len} bytes (at most {MAX_RECORD})"),
            ));
        }
        if rest.len() < REC_HDR + len {
            // runs past the end: a torn final record, unless whole records follow (then its
            // length field was overwritten)
            if let Some(next) = record_after(buf, at + 1) {
                return Err(corrupt(
                    path,
                    format!(
                        "the record at offset {at} claims {len} bytes, past the end of the file, \
                         but a whole record follows at offset {next}"
                    ),
                ));
            }
            return Ok(ParsedLog {
                entries,
                valid_end: at,
                torn: true,
            });
        }
        let body = &rest[REC_HDR..REC_HDR + len];
        if crc(&[&len_b, body]) != want {
            return Err(corrupt(
                path,
                format!("checksum mismatch in the record at offset {at}"),
            ));
        }
        let e = Entry::parse_from_bytes(body).map_err(|_| {
            corrupt(
                path,
                format!("the record at offset {at} has a good checksum but does not parse"),
            )
        })?;
        entries.push(e);
        at += REC_HDR + len;
    }
    Ok(ParsedLog {
        entries,
        valid_end: at,
        torn: false,
    })
}

impl DiskStorage {
    /// Opens the storage in `dir` (created if missing). A fresh directory starts with
    /// `initial` as its configuration.
    ///
    /// # Errors
    /// [`StoreError`]: unreadable or corrupt files, each named with the fix.
    pub fn open(dir: &Path, initial: ConfState) -> Result<(Self, Recovery), StoreError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let log_path = dir.join("raft.log");
        let hs_path = dir.join("raft.hardstate");
        let snap_path = dir.join("raft.snapshot");
        let read = |p: &Path| match fs::read(p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(p)(e)),
        };
        let log_b = read(&log_path)?;
        let hs_b = read(&hs_path)?;
        let snap_b = read(&snap_path)?;
        let mut rec = Recovery::default();
        let parsed = match &log_b {
            Some(b) => Some(parse_log(&log_path, b)?),
            None => None,
        };
        let snap = match &snap_b {
            Some(b) => Some(decode_snapshot(&snap_path, b)?),
            None => None,
        };
        let log_empty = parsed.as_ref().is_none_or(|p| p.entries.is_empty());
        let hs = match (&hs_b, &parsed) {
            (Some(b), _) => Some(decode_hardstate(&hs_path, b)?),
            // the hard state is written last when a directory is initialised: a log without
            // records and without a hard state is an interrupted first start
            (None, _) if log_empty && snap.is_none() => None,
            (None, _) => {
                return Err(corrupt(
                    &hs_path,
                    "missing while raft.log or raft.snapshot exists (the node's term and vote \
                     are lost)",
                ))
            }
        };
        let Some(mut hs) = hs else {
            // a fresh start: the log first, the hard state last
            rec.fresh = true;
            write_atomic(&log_path, LOG_MAGIC)?;
            let hs = HardState::default();
            write_atomic(&hs_path, &encode_hardstate(&hs))?;
            let log = OpenOptions::new()
                .append(true)
                .open(&log_path)
                .map_err(io(&log_path))?;
            let store = Self {
                log_path,
                hs_path,
                snap_path,
                hs,
                cs: initial,
                snap: Snapshot::default(),
                entries: Vec::new(),
                log,
                log_bytes: LOG_MAGIC.len() as u64,
            };
            return Ok((store, rec));
        };
        let Some(parsed) = parsed else {
            return Err(corrupt(
                &log_path,
                "missing while raft.hardstate exists (the node's log is lost)",
            ));
        };
        let snap = snap.unwrap_or_default();
        let mut cs = initial;
        if snap.get_metadata().index > 0 {
            cs = snap.get_metadata().get_conf_state().clone();
        }
        // replay: entries at or below the snapshot are already in it; later ones must follow
        // on without a gap, overwriting as Raft did
        let base = snap.get_metadata().index;
        let mut entries: Vec<Entry> = Vec::new();
        for (i, e) in parsed.entries.into_iter().enumerate() {
            if e.index == 0 || e.term == 0 {
                return Err(corrupt(
                    &log_path,
                    format!("record {i} holds index {} term {}", e.index, e.term),
                ));
            }
            if e.index <= base {
                continue;
            }
            let last = entries.last().map_or(base, |l| l.index);
            if e.index > last + 1 {
                return Err(corrupt(
                    &log_path,
                    format!(
                        "record {i} holds index {} after index {last} (a gap)",
                        e.index
                    ),
                ));
            }
            entries.truncate((e.index - base - 1) as usize);
            let prev_term = entries.last().map_or(snap.get_metadata().term, |l| l.term);
            if e.term < prev_term {
                return Err(corrupt(
                    &log_path,
                    format!(
                        "record {i} holds term {} below the term {prev_term} before it",
                        e.term
                    ),
                ));
            }
            entries.push(e);
            rec.records += 1;
        }
        if parsed.torn {
            let len = log_b.as_ref().map_or(0, Vec::len);
            let f = OpenOptions::new()
                .write(true)
                .open(&log_path)
                .map_err(io(&log_path))?;
            f.set_len(parsed.valid_end as u64).map_err(io(&log_path))?;
            f.sync_all().map_err(io(&log_path))?;
            rec.torn_tail = Some((
                parsed.valid_end as u64,
                (len - parsed.valid_end.min(len)) as u64,
            ));
        }
        let last = entries.last().map_or(base, |l| l.index);
        hs.commit = hs.commit.clamp(base, last.max(base));
        let log = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let log_bytes = log.metadata().map_err(io(&log_path))?.len();
        let store = Self {
            log_path,
            hs_path,
            snap_path,
            hs,
            cs,
            snap,
            entries,
            log,
            log_bytes,
        };
        Ok((store, rec))
    }

    /// Bytes of `raft.log` now.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Entries held after the snapshot.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The last snapshot (index 0: none).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snap
    }

    /// The hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hs
    }

    /// The configuration.
    pub fn conf_state(&self) -> &ConfState {
        &self.cs
    }

    fn first(&self) -> u64 {
        self.snap.get_metadata().index + 1
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snap.get_metadata().index, |e| e.index)
    }

    /// Appends `ents` (their first index at most the last index plus one, and after the
    /// snapshot), on disk first, then in memory.
    ///
    /// # Errors
    /// [`StoreError`] if the file cannot be written or the entries are out of order.
    pub fn append(&mut self, ents: &[Entry]) -> Result<(), StoreError> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        if first.index < self.first() || first.index > self.last() + 1 {
            return Err(StoreError::Order(format!(
                "entry {} does not follow the log [{}, {}]",
                first.index,
                self.first(),
                self.last()
            )));
        }
        if ents.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(StoreError::Order("entries not contiguous".into()));
        }
        let mut buf = Vec::new();
        for e in ents {
            encode_record(e, &mut buf)?;
        }
        self.log.write_all(&buf).map_err(io(&self.log_path))?;
        // on disk before Raft acts on it (votes and acks must survive a power loss)
        self.log.sync_data().map_err(io(&self.log_path))?;
        self.log_bytes += buf.len() as u64;
        self.entries.truncate((first.index - self.first()) as usize);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Replaces the hard state, on disk first.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn set_hardstate(&mut self, hs: HardState) -> Result<(), StoreError> {
        write_atomic(&self.hs_path, &encode_hardstate(&hs))?;
        self.hs = hs;
        Ok(())
    }

    /// Sets the commit index in memory (it is written with the next hard state; Raft learns
    /// it again from the leader after a restart).
    pub fn set_commit(&mut self, commit: u64) {
        self.hs.commit = commit.min(self.last());
    }

    /// Sets the configuration (applied from the log).
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.cs = cs;
    }

    /// Rewrites `raft.log` with the entries held now (after a snapshot), atomically.
    fn rewrite_log(&mut self) -> Result<(), StoreError> {
        let mut buf = LOG_MAGIC.to_vec();
        for e in &self.entries {
            encode_record(e, &mut buf)?;
        }
        write_atomic(&self.log_path, &buf)?;
        self.log = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .map_err(io(&self.log_path))?;
        self.log_bytes = buf.len() as u64;
        Ok(())
    }

    /// Installs a snapshot received from the leader: the snapshot file first, then an empty
    /// log; the hard state's commit moves to the snapshot.
    ///
    /// # Errors
    /// [`StoreError`]; a snapshot older than the current one is refused.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<(), StoreError> {
        let meta = snap.get_metadata();
        if meta.index < self.snap.get_metadata().index {
            return Err(StoreError::Order(format!(
                "snapshot {} is older than the one held ({})",
                meta.index,
                self.snap.get_metadata().index
            )));
        }
        write_atomic(&self.snap_path, &encode_snapshot(&snap)?)?;
        self.cs = meta.get_conf_state().clone();
        let mut hs = self.hs.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = meta.index;
        self.snap = snap;
        self.entries.clear();
        self.rewrite_log()?;
        self.set_hardstate(hs)
    }

    /// Compacts the log: a snapshot at `index` (applied) holding `data` (the state machine
    /// there) and configuration `cs` replaces every entry up to `index`. The snapshot file is
    /// written before the log is rewritten, so a crash in between only leaves entries the
    /// next start skips.
    ///
    /// # Errors
    /// [`StoreError`]; an index outside the log is refused.
    pub fn compact(&mut self, index: u64, data: Vec<u8>, cs: ConfState) -> Result<(), StoreError> {
        if index < self.first() || index > self.last() {
            return Err(StoreError::Order(format!(
                "compaction at {index} outside the log [{}, {}]",
                self.first(),
                self.last()
            )));
        }
        let term = self.entries[(index - self.first()) as usize].term;
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(cs);
        write_atomic(&self.snap_path, &encode_snapshot(&snap)?)?;
        let drop_n = (index + 1 - self.first()) as usize;
        self.entries.drain(..drop_n);
        self.snap = snap;
        self.rewrite_log()
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hs.clone(), self.cs.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.first()) as usize;
        let hi = (high - self.first()) as usize;
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity(hi - lo);
        let mut size = 0u64;
        for e in &self.entries[lo..hi] {
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.snap.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snap.get_metadata().index == 0 || self.snap.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snap.clone())
    }
}
