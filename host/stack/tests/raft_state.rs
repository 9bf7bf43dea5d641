//! The Raft state files and the Raft message checks, in process: torn tails cut at every
//! offset, corruption (zeros, garbage, bad checksums, short files, the old format) refused with
//! the file and the fix, a lost or rolled-back state directory rejoining, the log bounded by
//! compaction, and hostile but authenticated messages (a proptest) that never panic a node.

use std::fs;
use std::path::{Path, PathBuf};

use host::core::alloc_policy::Allocation;
use host::core::ids::{Epoch, IdCount, NodeId};
use host::daemon::consensus::{encode_allocation, Consensus, ConsensusError, COMPACT_AFTER};
use host::daemon::raft_store::{DiskStorage, HS_LEN};
use proptest::prelude::*;
use protobuf::{Message as _, ProtobufEnum as _};
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Message, MessageType,
    Snapshot,
};

const IDS: u32 = 8;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("raft-state-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn voters() -> Vec<NodeId> {
    vec![NodeId(1), NodeId(2), NodeId(3)]
}

fn open(dir: &Path, n: u16) -> Result<Consensus, ConsensusError> {
    Consensus::open(
        NodeId(n),
        &voters(),
        &[],
        IdCount::new(IDS).unwrap(),
        dir.join(format!("n{n}")),
    )
}

/// An in-process cluster of nodes 1..=3; `None` is a node that is down.
struct Net {
    dir: PathBuf,
    nodes: Vec<(u16, Option<Consensus>)>,
}

impl Net {
    fn new(name: &str) -> Self {
        let dir = tmp(name);
        let nodes = (1..=3).map(|n| (n, Some(open(&dir, n).unwrap()))).collect();
        let mut net = Self { dir, nodes };
        net.run(60);
        net
    }

    fn node(&self, n: u16) -> &Consensus {
        self.nodes[usize::from(n - 1)].1.as_ref().unwrap()
    }

    fn node_mut(&mut self, n: u16) -> &mut Consensus {
        self.nodes[usize::from(n - 1)].1.as_mut().unwrap()
    }

    fn up(&mut self) -> impl Iterator<Item = (u16, &mut Consensus)> {
        self.nodes
            .iter_mut()
            .filter_map(|(n, c)| c.as_mut().map(|c| (*n, c)))
    }

    /// `ticks` clock ticks, every message delivered.
    fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for (_, c) in self.up() {
                c.tick();
            }
            for _ in 0..5 {
                let mut msgs = Vec::new();
                for (n, c) in self.up() {
                    c.poll().unwrap();
                    msgs.extend(c.take_messages().into_iter().map(|(to, b)| (n, to, b)));
                }
                for (from, to, b) in msgs {
                    let slot = usize::from(to.0).wrapping_sub(1);
                    if let Some(c) = self.nodes.get_mut(slot).and_then(|n| n.1.as_mut()) {
                        let _ = c.step(NodeId(from), &b);
                    }
                }
            }
        }
    }

    fn leader(&self) -> u16 {
        self.nodes
            .iter()
            .find_map(|(n, c)| c.as_ref().filter(|c| c.is_leader()).map(|_| *n))
            .expect("a leader")
    }

    fn epoch(&self) -> u64 {
        self.node(self.leader()).allocation().epoch.0
    }

    /// The leader proposes the next epoch; a few ticks run.
    fn advance(&mut self) {
        let next = alloc(self.epoch() + 1);
        let l = self.leader();
        self.node_mut(l).propose(&next).unwrap();
        self.run(3);
        assert_eq!(self.node(self.leader()).allocation(), &next, "agreed");
    }

    fn stop(&mut self, n: u16) {
        self.nodes[usize::from(n - 1)].1 = None;
    }

    fn start(&mut self, n: u16) {
        self.nodes[usize::from(n - 1)].1 = Some(open(&self.dir, n).unwrap());
    }

    fn state_dir(&self, n: u16) -> PathBuf {
        self.dir.join(format!("n{n}"))
    }

    fn assert_agreed(&self) {
        let want = self.node(self.leader()).allocation().clone();
        for (n, c) in &self.nodes {
            if let Some(c) = c {
                assert_eq!(c.allocation(), &want, "node {n}");
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Epoch `e`: identifiers rotate among the three nodes with the epoch.
fn alloc(e: u64) -> Allocation {
    Allocation {
        epoch: Epoch(e),
        owners: (0..u64::from(IDS))
            .map(|i| Some(NodeId(((i + e) % 3 + 1) as u16)))
            .collect(),
        next_owners: Vec::new(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn entry(index: u64, term: u64, data: Vec<u8>) -> Entry {
    Entry {
        index,
        term,
        data: data.into(),
        ..Default::default()
    }
}

/// A storage directory holding `n` entries (allocations 1..=n) and a hard state; returns the
/// record boundaries of its log (the header's end first).
fn small_log(dir: &Path, n: u64) -> Vec<usize> {
    let cs = ConfState::from((vec![1, 2, 3], vec![]));
    let (mut s, rec) = DiskStorage::open(dir, cs).unwrap();
    assert!(rec.fresh);
    let mut ends = vec![fs::metadata(dir.join("raft.log")).unwrap().len() as usize];
    for i in 1..=n {
        s.append(&[entry(i, 1, encode_allocation(&alloc(i)))])
            .unwrap();
        ends.push(s.log_bytes() as usize);
    }
    let hs = HardState {
        term: 1,
        vote: 2,
        commit: n,
        ..Default::default()
    };
    s.set_hardstate(hs).unwrap();
    ends
}

fn reopen(dir: &Path) -> Result<(DiskStorage, host::daemon::raft_store::Recovery), String> {
    DiskStorage::open(dir, ConfState::from((vec![1, 2, 3], vec![]))).map_err(|e| e.to_string())
}

fn assert_corrupt(dir: &Path, file: &str, needle: &str) {
    let err = match reopen(dir) {
        Ok(_) => panic!("{file} accepted"),
        Err(e) => e,
    };
    assert!(err.contains(file), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(err.contains("fix:"), "{err}");
    // the node refuses to start with the same message
    let msg = Consensus::open(
        NodeId(1),
        &voters(),
        &[],
        IdCount::new(IDS).unwrap(),
        dir.to_path_buf(),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(msg.contains(file) && msg.contains("fix:"), "{msg}");
}

/// A fresh directory for test `tag` holding `orig`, the state of a [`small_log`] of four
/// entries: the directory, `orig`, where the log's records end and the log's bytes.
fn four_entry_log(tag: &str) -> (PathBuf, PathBuf, Vec<usize>, Vec<u8>) {
    let base = tmp(tag);
    let orig = base.join("orig");
    let ends = small_log(&orig, 4);
    let log = fs::read(orig.join("raft.log")).unwrap();
    (base, orig, ends, log)
}

/// Cutting the log at every offset: inside a record it is a torn tail, cut off and reported;
/// at a record boundary nothing is lost; inside the header it is corruption.
#[test]
fn truncation_at_every_offset() {
    let (base, orig, ends, log) = four_entry_log("trunc");
    assert_eq!(log.len(), *ends.last().unwrap());
    let dir = base.join("cut");
    for cut in 0..log.len() {
        copy_dir(&orig, &dir);
        fs::write(dir.join("raft.log"), &log[..cut]).unwrap();
        if cut < ends[0] {
            assert_corrupt(&dir, "raft.log", "header");
            continue;
        }
        let (s, rec) = reopen(&dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
        let boundary = ends[whole];
        assert_eq!(s.entry_count(), whole, "cut at {cut}");
        assert_eq!(rec.records, whole);
        if cut == boundary {
            assert_eq!(rec.torn_tail, None, "cut at {cut}");
        } else {
            assert_eq!(
                rec.torn_tail,
                Some((boundary as u64, (cut - boundary) as u64))
            );
        }
        assert_eq!(
            fs::metadata(dir.join("raft.log")).unwrap().len() as usize,
            boundary,
            "the torn tail is removed from the file"
        );
        // the commit index never points past the log
        assert!(s.hard_state().commit <= whole as u64);
        drop(s);
        // and the next start finds a clean log
        let (_, again) = reopen(&dir).unwrap();
        assert_eq!(again.torn_tail, None);
    }
    let _ = fs::remove_dir_all(&base);
}

/// Bytes overwritten anywhere, zeros, garbage appended, a short or empty hard state, a
/// missing file, the unchecked format of older versions: each a clear error naming the file.
#[test]
fn corruption_is_refused_with_the_file_and_the_fix() {
    let (base, orig, ends, log) = four_entry_log("corrupt");
    let dir = base.join("bad");
    // a flipped byte in every record (length, checksum or body): bad checksum or a record
    // claiming more than the file (only a flipped length in the last record can look torn)
    for at in ends[0]..log.len() {
        copy_dir(&orig, &dir);
        let mut b = log.clone();
        b[at] ^= 0x40;
        fs::write(dir.join("raft.log"), &b).unwrap();
        let last_len_field = at >= ends[3] && at < ends[3] + 4;
        match reopen(&dir) {
            Err(e) => assert!(e.contains("raft.log") && e.contains("fix:"), "{e}"),
            Ok((_, rec)) => assert!(
                last_len_field && rec.torn_tail.is_some(),
                "a flipped byte at {at} was accepted"
            ),
        }
    }
    // logs with zeros, garbage or an older format: each refused, naming what is wrong
    let with_tail = |tail: &[u8]| [&log[..], tail].concat();
    let mut zeroed = log.clone();
    zeroed[ends[1]..ends[2]].fill(0);
    let body = entry(1, 1, vec![]).write_to_bytes().unwrap();
    let mut old = (body.len() as u32).to_be_bytes().to_vec();
    old.extend_from_slice(&body);
    let mut gap = log[..ends[1]].to_vec();
    gap.extend_from_slice(&log[ends[2]..ends[3]]);
    for (what, bytes, needle) in [
        ("zeros over the second record", zeroed, "checksum"),
        // a whole record header's worth
        ("zeros appended", with_tail(&[0; 64]), "checksum"),
        (
            "a complete record with a wrong checksum appended",
            with_tail(&[0, 0, 0, 4, 1, 2, 3, 4, 9, 9, 9, 9]),
            "checksum",
        ),
        (
            "garbage with a huge length appended",
            with_tail(&[0xff; 40]),
            "claims",
        ),
        // length + protobuf, no header
        (
            "the unchecked format of older versions",
            old,
            "older clusterd",
        ),
        (
            "a record out of order (a gap), with a valid checksum",
            gap,
            "gap",
        ),
    ] {
        copy_dir(&orig, &dir);
        fs::write(dir.join("raft.log"), &bytes).unwrap();
        assert!(reopen(&dir).is_err(), "a log with {what} accepted");
        assert_corrupt(&dir, "raft.log", needle);
    }
    // the hard state: empty, short, long, a flipped byte, the old protobuf format, missing
    let hs = fs::read(orig.join("raft.hardstate")).unwrap();
    assert_eq!(hs.len(), HS_LEN);
    let mut long = hs.clone();
    long.push(0);
    let old_hs = HardState {
        term: 3,
        ..Default::default()
    };
    for (what, bytes) in [
        ("empty", vec![]),
        ("short", hs[..20].to_vec()),
        ("long", long),
        ("old format", old_hs.write_to_bytes().unwrap()),
    ] {
        copy_dir(&orig, &dir);
        fs::write(dir.join("raft.hardstate"), &bytes).unwrap();
        assert!(reopen(&dir).is_err(), "{what} hard state accepted");
        assert_corrupt(&dir, "raft.hardstate", "term and vote are lost");
    }
    for at in 0..HS_LEN {
        copy_dir(&orig, &dir);
        let mut b = hs.clone();
        b[at] ^= 1;
        fs::write(dir.join("raft.hardstate"), &b).unwrap();
        let e = reopen(&dir).err().expect("flipped hard state accepted");
        assert!(e.contains("raft.hardstate") && e.contains("fix:"), "{e}");
    }
    copy_dir(&orig, &dir);
    fs::remove_file(dir.join("raft.hardstate")).unwrap();
    assert_corrupt(&dir, "raft.hardstate", "missing");
    copy_dir(&orig, &dir);
    fs::remove_file(dir.join("raft.log")).unwrap();
    assert_corrupt(&dir, "raft.log", "missing");
    let _ = fs::remove_dir_all(&base);
}

/// A corrupt snapshot file is refused; a good one round-trips.
#[test]
fn snapshot_file_is_checked() {
    let mut net = Net::new("snapfile");
    for _ in 0..COMPACT_AFTER + 5 {
        net.advance();
    }
    let f = (1..=3).find(|&n| n != net.leader()).unwrap();
    let dir = net.state_dir(f);
    net.stop(f);
    let snap = fs::read(dir.join("raft.snapshot")).expect("a snapshot after compaction");
    let backup = net.dir.join("backup");
    copy_dir(&dir, &backup);
    for at in [0, 9, snap.len() / 2, snap.len() - 1] {
        let mut b = snap.clone();
        b[at] ^= 0x10;
        fs::write(dir.join("raft.snapshot"), &b).unwrap();
        assert_corrupt(&dir, "raft.snapshot", "fix:");
    }
    fs::write(dir.join("raft.snapshot"), &snap[..snap.len() - 3]).unwrap();
    assert_corrupt(&dir, "raft.snapshot", "cut short");
    copy_dir(&backup, &dir);
    net.start(f);
    net.run(10);
    net.advance();
    net.assert_agreed();
}

/// Many allocation changes: the log file stays bounded (compacted into a snapshot every
/// `COMPACT_AFTER` entries), and every node restarted from its files has the same allocation.
#[test]
fn compaction_keeps_the_log_bounded() {
    let mut net = Net::new("compact");
    let mut largest = 0;
    for _ in 0..6 * COMPACT_AFTER {
        net.advance();
        for n in 1..=3 {
            let bytes = net.node(n).log_bytes();
            assert_eq!(
                bytes,
                fs::metadata(net.state_dir(n).join("raft.log"))
                    .unwrap()
                    .len()
            );
            largest = largest.max(bytes);
        }
    }
    // a record of an 8-identifier allocation is ~40 bytes; an uncompacted log would be
    // 6 * COMPACT_AFTER of them
    let bound = (COMPACT_AFTER + 8) * 64;
    assert!(
        largest <= bound,
        "log grew to {largest} bytes (bound {bound})"
    );
    let want = net.node(1).allocation().clone();
    assert_eq!(want.epoch.0, 6 * COMPACT_AFTER);
    for n in 1..=3 {
        net.stop(n);
    }
    for n in 1..=3 {
        net.start(n);
    }
    // the allocation is back before any message: snapshot plus the log after it
    net.run(0);
    for n in 1..=3 {
        net.node_mut(n).poll().unwrap();
        assert_eq!(net.node(n).allocation(), &want, "node {n} after restart");
    }
    net.run(60);
    net.advance();
    net.assert_agreed();
}

/// A follower whose state directory was deleted, and one restored from an older copy, rejoin:
/// nothing panics, each catches up (through a snapshot where the leader compacted), and the
/// cluster keeps agreeing.
#[test]
fn lost_and_rolled_back_state_rejoin() {
    for compacted in [false, true] {
        let mut net = Net::new(if compacted { "lost-c" } else { "lost" });
        for _ in 0..3 {
            net.advance();
        }
        let follower = (1..=3).find(|&n| n != net.leader()).unwrap();
        let backup = net.dir.join("backup");
        copy_dir(&net.state_dir(follower), &backup);
        let more = if compacted { 2 * COMPACT_AFTER } else { 5 };
        for _ in 0..more {
            net.advance();
        }
        // rolled back to the older copy
        net.stop(follower);
        copy_dir(&backup, &net.state_dir(follower));
        net.start(follower);
        assert!(net.node(follower).allocation().epoch.0 < net.epoch());
        assert!(
            !net.node(follower).abstaining(),
            "a rollback looks like a restart"
        );
        // the leader's first heartbeat says the follower acknowledged more than its log holds:
        // clamped, and the follower abstains from votes until it caught up
        let l = net.leader();
        for _ in 0..40 {
            net.node_mut(l).tick();
            net.node_mut(l).poll().unwrap();
            let msgs = net.node_mut(l).take_messages();
            for (to, b) in msgs.into_iter().filter(|(to, _)| to.0 == follower) {
                let _ = net.node_mut(to.0).step(NodeId(l), &b);
            }
            if net.node(follower).clamped > 0 {
                break;
            }
        }
        assert!(net.node(follower).clamped > 0, "the heartbeat was clamped");
        assert!(net.node(follower).abstaining(), "rolled back: abstains");
        net.run(40);
        assert!(!net.node(follower).abstaining(), "caught up");
        net.assert_agreed();
        net.advance();
        net.assert_agreed();
        // lost entirely
        net.stop(follower);
        fs::remove_dir_all(net.state_dir(follower)).unwrap();
        net.start(follower);
        assert!(net.node(follower).abstaining());
        net.run(40);
        assert!(
            !net.node(follower).abstaining(),
            "caught up with the leader"
        );
        net.assert_agreed();
        net.advance();
        net.assert_agreed();
        // the rejoined node can carry the quorum: the other follower goes down
        let other = (1..=3)
            .find(|&n| n != net.leader() && n != follower)
            .unwrap();
        net.stop(other);
        net.advance();
        net.assert_agreed();
        net.start(other);
        net.run(40);
        net.assert_agreed();
    }
}

/// A cluster of three (test `tag`) that elected a leader; the net, the leader and a follower.
fn leader_and_follower(tag: &str) -> (Net, u16, u16) {
    let mut net = Net::new(tag);
    net.advance();
    let l = net.leader();
    let f = (1..=3).find(|&n| n != l).unwrap();
    (net, l, f)
}

/// A message of type `t` from node `from` to node `to` in `term`.
fn message(t: MessageType, from: u16, to: u16, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.from = u64::from(from);
    m.to = u64::from(to);
    m.term = term;
    m
}

/// The finding: a heartbeat whose commit is far beyond the follower's log (one authenticated
/// datagram) crashed the follower inside the raft crate. Now it is clamped, and the follower
/// tells the leader it is behind.
#[test]
fn heartbeat_commit_beyond_the_log_is_clamped() {
    let (mut net, l, f) = leader_and_follower("hb");
    let mut m = message(MessageType::MsgHeartbeat, l, f, net.node(f).term());
    m.commit = 1_000_000;
    net.node_mut(f)
        .step(NodeId(l), &m.write_to_bytes().unwrap())
        .unwrap();
    net.node_mut(f).poll().unwrap();
    assert_eq!(net.node(f).clamped, 1);
    net.run(10);
    net.advance();
    net.assert_agreed();
}

/// Messages that fail the checks are refused and change nothing: a sender that is not the
/// authenticated peer, a non-member, local and unused message types, a term 0 (the raft
/// crate's local messages), huge terms, entries out of order, a leader-transfer context.
#[test]
fn refused_messages_change_nothing() {
    let (mut net, l, f) = leader_and_follower("refused");
    let term = net.node(f).term();
    let base = || message(MessageType::MsgAppend, l, f, term);
    let mut cases: Vec<(NodeId, Message)> = Vec::new();
    let other = (1..=3).find(|&n| n != l && n != f).unwrap();
    cases.push((NodeId(other), base())); // speaks as the leader
    let mut m = base();
    m.from = 7;
    cases.push((NodeId(7), m));
    for t in [
        MessageType::MsgHup,
        MessageType::MsgBeat,
        MessageType::MsgPropose,
        MessageType::MsgUnreachable,
        MessageType::MsgSnapStatus,
        MessageType::MsgCheckQuorum,
        MessageType::MsgTransferLeader,
        MessageType::MsgTimeoutNow,
        MessageType::MsgReadIndex,
        MessageType::MsgReadIndexResp,
    ] {
        let mut m = base();
        m.set_msg_type(t);
        cases.push((NodeId(l), m));
    }
    let mut m = base();
    m.term = 0;
    cases.push((NodeId(l), m));
    let mut m = base();
    m.term = u64::MAX;
    cases.push((NodeId(l), m));
    let mut m = base();
    m.index = 3;
    m.log_term = term;
    m.entries.push(entry(9, term, vec![]));
    cases.push((NodeId(l), m));
    let mut m = base();
    m.entries.push(entry(1, term, b"garbage".to_vec()));
    cases.push((NodeId(l), m));
    let mut m = base();
    m.set_msg_type(MessageType::MsgRequestVote);
    m.term = term + 1;
    m.context = b"CampaignTransfer".to_vec().into();
    cases.push((NodeId(l), m));
    let before = net.node(f).allocation().clone();
    let term_before = net.node(f).term();
    for (i, (from, m)) in cases.iter().enumerate() {
        let r = net.node_mut(f).step(*from, &m.write_to_bytes().unwrap());
        assert!(r.is_err(), "case {i} accepted: {m:?}");
        net.node_mut(f).poll().unwrap();
    }
    assert_eq!(net.node(f).allocation(), &before);
    assert_eq!(net.node(f).term(), term_before);
    assert!(
        net.node_mut(f).take_messages().is_empty(),
        "refused messages are not answered"
    );
    net.run(5);
    net.advance();
    net.assert_agreed();
}

// ---- hostile messages (proptest) ----

fn pick_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..6,
        Just(1u64 << 20),
        Just((1u64 << 48) - 1),
        Just(1u64 << 48),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn hostile_entry() -> impl Strategy<Value = (u64, u64, u8, u8)> {
    (pick_u64(), pick_u64(), 0u8..3, 0u8..4)
}

/// Snapshot index, term, voters, learners, data kind.
type HostileSnapshot = (u64, u64, Vec<u64>, Vec<u64>, u8);

#[derive(Debug, Clone)]
struct Hostile {
    target: u16,
    sender: u16,
    claimed_from: Option<u64>,
    msg_type: i32,
    term_delta: Option<u64>,
    log_term: u64,
    index: u64,
    commit: u64,
    commit_term: u64,
    reject: bool,
    reject_hint: u64,
    entries: Vec<(u64, u64, u8, u8)>,
    contiguous: bool,
    snapshot: Option<HostileSnapshot>,
    context: bool,
    /// Entries or a snapshot also on message types that carry none.
    stray_fields: bool,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (
        (1u16..=3, 1u16..=3, prop::option::weighted(0.1, pick_u64())),
        (
            prop_oneof![
                4 => prop::sample::select(vec![3i32, 4, 5, 6, 7, 8, 9, 17, 18]),
                1 => 0i32..19,
            ],
            prop::option::weighted(0.8, 0u64..3),
            pick_u64(),
        ),
        (
            pick_u64(),
            pick_u64(),
            pick_u64(),
            any::<bool>(),
            pick_u64(),
        ),
        (
            prop::collection::vec(hostile_entry(), 0..5),
            any::<bool>(),
            prop::option::weighted(
                0.3,
                (
                    pick_u64(),
                    pick_u64(),
                    prop::collection::vec(0u64..6, 0..4),
                    prop::collection::vec(0u64..6, 0..2),
                    0u8..3,
                ),
            ),
            prop::bool::weighted(0.05),
        ),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                (target, sender, claimed_from),
                (msg_type, term_delta, log_term),
                (index, commit, commit_term, reject, reject_hint),
                (entries, contiguous, snapshot, context),
                stray_fields,
            )| Hostile {
                target,
                sender,
                claimed_from,
                msg_type,
                term_delta,
                log_term,
                index,
                commit,
                commit_term,
                reject,
                reject_hint,
                entries,
                contiguous,
                snapshot,
                context,
                stray_fields,
            },
        )
}

fn data_of(kind: u8, e: u64) -> Vec<u8> {
    match kind {
        0 => vec![],
        1 => encode_allocation(&alloc(e % 1000 + 1)),
        2 => {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::AddNode);
            cc.node_id = e % 5;
            cc.write_to_bytes().unwrap()
        }
        _ => b"\x01garbage".to_vec(),
    }
}

/// Builds the message: a term near the target's (or anything), positions near its log or
/// anywhere, entries in order or not, snapshots of members or not.
fn build(h: &Hostile, target_term: u64, last: u64) -> Message {
    let near = |v: u64| if v < 6 { last.saturating_sub(3) + v } else { v };
    let mut m = Message::default();
    m.set_msg_type(MessageType::from_i32(h.msg_type).unwrap_or(MessageType::MsgAppend));
    m.from = h.claimed_from.unwrap_or(u64::from(h.sender));
    m.to = u64::from(h.target);
    m.term = match h.term_delta {
        Some(d) => target_term + d,
        None => h.log_term,
    };
    m.log_term = h.log_term.min(m.term);
    m.index = near(h.index);
    m.commit = near(h.commit);
    m.commit_term = h.commit_term.min(m.term);
    m.reject = h.reject;
    m.reject_hint = near(h.reject_hint).min(m.index);
    let t = m.get_msg_type();
    let entries: &[(u64, u64, u8, u8)] = if t == MessageType::MsgAppend || h.stray_fields {
        &h.entries
    } else {
        &[]
    };
    for (i, (idx, term, ty, kind)) in entries.iter().enumerate() {
        let index = if h.contiguous {
            m.index.wrapping_add(1 + i as u64)
        } else {
            near(*idx)
        };
        let term = if h.contiguous { m.term } else { *term };
        let mut e = entry(index, term, data_of(*kind, index));
        e.set_entry_type(match ty {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            _ => EntryType::EntryConfChangeV2,
        });
        m.entries.push(e);
    }
    let snapshot = h
        .snapshot
        .as_ref()
        .filter(|_| t == MessageType::MsgSnapshot || h.stray_fields);
    if let Some((idx, term, voters, learners, kind)) = snapshot {
        let mut s = Snapshot {
            data: data_of(*kind, *idx).into(),
            ..Default::default()
        };
        let meta = s.mut_metadata();
        meta.index = near(*idx);
        meta.term = (*term).min(m.term);
        meta.set_conf_state(ConfState::from((voters.clone(), learners.clone())));
        m.set_snapshot(s);
    }
    if h.context {
        m.context = b"CampaignTransfer".to_vec().into();
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Authenticated, well-framed, hostile messages (from any member, speaking as itself or as
    /// another, any type, terms and positions near the log or anywhere, entries and snapshots
    /// right or wrong) interleaved with the cluster's own traffic: no node panics; every node's
    /// files reopen cleanly with its allocation at or below what it had applied, and epochs only
    /// grow.
    #[test]
    fn hostile_messages_never_panic(msgs in prop::collection::vec(hostile(), 1..40)) {
        let mut net = Net::new("hostile");
        net.advance();
        let mut epochs = [0u64; 3];
        for h in &msgs {
            let target = h.target;
            if h.sender == target {
                continue;
            }
            let (term, last) = {
                let c = net.node(target);
                (c.term(), c.allocation().epoch.0 + 2)
            };
            let m = build(h, term, last);
            let _ = net.node_mut(target).step(NodeId(h.sender), &m.write_to_bytes().unwrap());
            net.run(1);
            for n in 1..=3u16 {
                let e = net.node(n).allocation().epoch.0;
                prop_assert!(e >= epochs[usize::from(n - 1)], "epoch went back on node {}", n);
                epochs[usize::from(n - 1)] = e;
            }
        }
        net.run(30);
        for n in 1..=3u16 {
            let had = net.node(n).allocation().epoch;
            net.stop(n);
            let c = open(&net.dir, n).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(c.allocation().epoch <= had);
            net.nodes[usize::from(n - 1)].1 = Some(c);
        }
        net.run(30);
    }
}

/// The `raft_step` fuzz target's corpus, replayed the way the target reads it (a length, a
/// control byte picking the sender and ticks, a message): the seeds include the finding (a
/// heartbeat whose commit is beyond the log).
#[test]
fn fuzz_corpus_replays_without_panic() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/raft_step");
    let mut files: Vec<PathBuf> = fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let dir = tmp("corpus");
    for f in files {
        let data = fs::read(&f).unwrap();
        let _ = fs::remove_dir_all(&dir);
        let open = || {
            Consensus::open(
                NodeId(1),
                &voters(),
                &[NodeId(4)],
                IdCount::new(IDS).unwrap(),
                dir.clone(),
            )
        };
        let mut c = open().unwrap();
        c.step_hostile(&data).unwrap();
        drop(c);
        open().unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    let _ = fs::remove_dir_all(&dir);
}
