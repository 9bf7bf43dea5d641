//! Membership and the allocation map, agreed through Raft (the `raft` crate of TiKV, driven
//! sans-I/O: ticks, messages and proposals go in, messages to send and committed allocations
//! come out).
//!
//! Configured voters (witnesses included) vote from the start. The replicated state machine is the
//! sequence of allocations: a log entry `Allocate { epoch, owners }` is applied only if its epoch
//! is exactly the current epoch plus one, so every node applies the same allocations in the same
//! order, and in every agreed epoch each distribution identifier has at most one owner (the map
//! is a function). Proposals come from the leader only (means 802/804/806 live there).
//!
//! The Raft hard state, log and snapshot are kept in `state_dir` ([`crate::daemon::raft_store`]:
//! checksummed, synced to disk before Raft acts on them), so a node restarted after SIGKILL or a
//! power loss keeps its vote and term and rebuilds the allocation from its snapshot and log. The
//! log is compacted into a snapshot (the applied allocation and the voter set) every
//! [`COMPACT_AFTER`] applied entries, so it stays bounded.
//!
//! Untrusted even when authenticated: every message is checked ([`check_message`]) before it
//! reaches the raft crate: the sender against the authenticated peer and the members, the
//! message type against those a peer may send, terms and indices against sane bounds, entries
//! against the message's own position and the allocation codec, snapshots against the members;
//! a heartbeat's commit is clamped to what this node's log is known to share with the leader
//! (the raft crate panics on a commit beyond the log). See `docs/clusterd.md`, "Raft state
//! files", for what a node whose state was lost or rolled back does.
//!
//! Membership: the configured voters start the cluster; members added later start as learners
//! and the leader promotes each to voter ([`Consensus::promote`]) once it is ready, through a
//! Raft configuration change in the log (so restarts re-apply it like the allocations).

use std::collections::BTreeSet;
use std::path::PathBuf;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage as _};

use crate::daemon::raft_store::{DiskStorage, Recovery, StoreError};

use crate::core::alloc_policy::Allocation;
use crate::core::ids::{DistributionId, Epoch, IdCount, NodeId};

/// Raft ticks: the node runtime ticks every [`TICK_MS`] ms.
pub const TICK_MS: u64 = 10;
/// Election timeout in ticks (randomised by Raft between this and twice this).
pub const ELECTION_TICKS: usize = 15;
/// Leader heartbeat interval in ticks.
pub const HEARTBEAT_TICKS: usize = 3;
/// The log is compacted into a snapshot once this many applied entries precede the applied
/// index.
pub const COMPACT_AFTER: u64 = 64;
/// Terms and indices at or above this are refused (no cluster gets there; it keeps `+ 1`
/// inside the raft crate from overflowing).
pub const MAX_INDEX: u64 = 1 << 48;
/// Most entries one append message may carry.
pub const MAX_ENTRIES: usize = 1024;
/// Largest entry data accepted (an allocation of 4096 identifiers is 8 KiB).
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// Consensus errors.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The Raft library refused something.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The state directory could not be used.
    #[error("consensus state in {path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        err: std::io::Error,
    },
    /// The persisted state does not verify (the message names the file and the fix).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The persisted state verifies but does not make sense to the state machine.
    #[error("consensus state file {0}; {fix}", fix = crate::daemon::raft_store::FIX)]
    Corrupt(String),
    /// A message from the network does not parse.
    #[error("malformed consensus message")]
    BadMessage,
    /// A message from the network parses but is refused (what is wrong with it).
    #[error("consensus message refused: {0}")]
    Refused(&'static str),
    /// Not the leader.
    #[error("not the leader")]
    NotLeader,
}

/// Encodes an allocation as a log entry: tag 1, epoch u64, count u16, owner u16 per id (0
/// none). An epoch of a planned move that names the next owners ([`Allocation::next_owners`]:
/// its prepare step, the owners unchanged, or its release step, the identifiers unowned) is
/// tag 2: the same, then a u16 count and that many (identifier u16, node u16) pairs.
pub fn encode_allocation(a: &Allocation) -> Vec<u8> {
    let mut v = Vec::with_capacity(13 + 2 * a.owners.len() + 4 * a.next_owners.len());
    v.push(if a.next_owners.is_empty() { 1 } else { 2 });
    v.extend_from_slice(&a.epoch.0.to_be_bytes());
    v.extend_from_slice(&(a.owners.len() as u16).to_be_bytes());
    for o in &a.owners {
        v.extend_from_slice(&o.map_or(0, |n| n.0).to_be_bytes());
    }
    if !a.next_owners.is_empty() {
        v.extend_from_slice(&(a.next_owners.len() as u16).to_be_bytes());
        for (d, n) in &a.next_owners {
            v.extend_from_slice(&d.0.to_be_bytes());
            v.extend_from_slice(&n.0.to_be_bytes());
        }
    }
    v
}

/// Decodes [`encode_allocation`] strictly: a next owner must be a node (not 0) for an
/// identifier in range, other than the identifier's owner in this epoch, in increasing
/// identifier order.
pub fn decode_allocation(b: &[u8]) -> Option<Allocation> {
    if b.len() < 11 || !matches!(b[0], 1 | 2) {
        return None;
    }
    let epoch = u64::from_be_bytes(b[1..9].try_into().ok()?);
    let count = usize::from(u16::from_be_bytes([b[9], b[10]]));
    let owners_end = 11 + 2 * count;
    if b.len() < owners_end || (b[0] == 1 && b.len() != owners_end) {
        return None;
    }
    let owners: Vec<Option<NodeId>> = b[11..owners_end]
        .chunks_exact(2)
        .map(|c| match u16::from_be_bytes([c[0], c[1]]) {
            0 => None,
            n => Some(NodeId(n)),
        })
        .collect();
    let mut next_owners = Vec::new();
    if b[0] == 2 {
        let rest = &b[owners_end..];
        if rest.len() < 2 {
            return None;
        }
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if n == 0 || rest.len() != 2 + 4 * n {
            return None;
        }
        for c in rest[2..].chunks_exact(4) {
            let d = u16::from_be_bytes([c[0], c[1]]);
            let node = u16::from_be_bytes([c[2], c[3]]);
            let in_order = next_owners
                .last()
                .is_none_or(|(p, _): &(DistributionId, NodeId)| p.0 < d);
            let owner = owners.get(usize::from(d));
            if node == 0 || !in_order || owner.is_none_or(|o| *o == Some(NodeId(node))) {
                return None;
            }
            next_owners.push((DistributionId(d), NodeId(node)));
        }
    }
    Some(Allocation {
        epoch: Epoch(epoch),
        owners,
        next_owners,
    })
}

/// Whether `t` is a message type a peer may send (the rest are local to a node, or features
/// this cluster does not use: leader transfer, read index, proposals forwarded by followers).
fn network_type(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgAppend
            | MessageType::MsgAppendResponse
            | MessageType::MsgRequestVote
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgSnapshot
            | MessageType::MsgHeartbeat
            | MessageType::MsgHeartbeatResponse
            | MessageType::MsgRequestPreVote
            | MessageType::MsgRequestPreVoteResponse
    )
}

/// Checks a configuration (of a snapshot): voters present, every id a member, no id twice,
/// no joint configuration.
fn check_conf(cs: &ConfState, members: &BTreeSet<u64>) -> Result<(), &'static str> {
    if cs.voters.is_empty() {
        return Err("snapshot without voters");
    }
    if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() || cs.auto_leave {
        return Err("snapshot with a joint configuration");
    }
    let mut seen = BTreeSet::new();
    for id in cs.voters.iter().chain(&cs.learners) {
        if !members.contains(id) {
            return Err("snapshot names a node that is not a member");
        }
        if !seen.insert(*id) {
            return Err("snapshot names a node twice");
        }
    }
    Ok(())
}

/// Checks one log entry's payload: an allocation for `count` identifiers (or empty), or a
/// promotion of a member.
fn check_entry(e: &Entry, count: usize, members: &BTreeSet<u64>) -> Result<(), &'static str> {
    if e.data.len() > MAX_ENTRY_BYTES || !e.context.is_empty() {
        return Err("entry too large or with a context");
    }
    match e.get_entry_type() {
        EntryType::EntryNormal => {
            if !e.data.is_empty()
                && decode_allocation(&e.data).is_none_or(|a| a.owners.len() != count)
            {
                return Err("entry is not an allocation of this cluster");
            }
        }
        EntryType::EntryConfChange => {
            let cc = ConfChange::parse_from_bytes(&e.data)
                .map_err(|_| "configuration change does not parse")?;
            if cc.get_change_type() != ConfChangeType::AddNode || !members.contains(&cc.node_id) {
                return Err("configuration change other than promoting a member");
            }
        }
        EntryType::EntryConfChangeV2 => return Err("joint configuration change"),
    }
    Ok(())
}

/// The checks that need nothing but the message and the cluster's constants: the sender
/// (`from`, authenticated by the transport) and the receiver `me`, the members, the message
/// type, bounds on every term and index, entries that follow the message's position in order
/// and carry allocations of `count` identifiers or promotions, snapshots of members.
///
/// # Errors
/// [`ConsensusError::BadMessage`] for a sender or receiver that does not match, otherwise
/// [`ConsensusError::Refused`] with what is wrong.
pub fn check_message(
    m: &Message,
    from: NodeId,
    me: NodeId,
    members: &BTreeSet<u64>,
    count: usize,
) -> Result<(), ConsensusError> {
    use ConsensusError::Refused;
    if m.from != u64::from(from.0) || m.to != u64::from(me.0) {
        return Err(ConsensusError::BadMessage);
    }
    if !members.contains(&m.from) || m.from == m.to {
        return Err(Refused("sender is not a member"));
    }
    let t = m.get_msg_type();
    if !network_type(t) {
        return Err(Refused("message type a peer may not send"));
    }
    if m.term == 0 || m.term >= MAX_INDEX {
        return Err(Refused("term out of range"));
    }
    if m.log_term > m.term || m.commit_term > m.term {
        return Err(Refused("log term beyond the message's term"));
    }
    // every entry from index 1 on has a term: the raft crate reads the term of a position
    // outside its log as 0, so (index beyond the log, term 0) would "match" and commit past
    // the end of the log
    if t == MessageType::MsgAppend && (m.index == 0) != (m.log_term == 0) {
        return Err(Refused("log position without a term"));
    }
    if [m.index, m.commit, m.reject_hint]
        .iter()
        .any(|&v| v >= MAX_INDEX)
    {
        return Err(Refused("index out of range"));
    }
    if m.request_snapshot != 0
        || m.priority != 0
        || m.deprecated_priority != 0
        || !m.context.is_empty()
    {
        return Err(Refused("field this cluster does not use"));
    }
    if t != MessageType::MsgAppend && !m.entries.is_empty() {
        return Err(Refused("entries in a message that carries none"));
    }
    if t != MessageType::MsgSnapshot && m.has_snapshot() {
        return Err(Refused("snapshot in a message that carries none"));
    }
    if m.reject && t == MessageType::MsgAppendResponse && m.reject_hint > m.index {
        return Err(Refused("rejection hint beyond the rejected index"));
    }
    if m.entries.len() > MAX_ENTRIES {
        return Err(Refused("too many entries"));
    }
    let mut prev_term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        if e.index != m.index + 1 + i as u64 {
            return Err(Refused("entries out of order"));
        }
        // term 0 "matches" any position past the log in the raft crate (see above)
        if e.term == 0 || e.term < prev_term || e.term > m.term {
            return Err(Refused("entry term out of order"));
        }
        prev_term = e.term;
        check_entry(e, count, members).map_err(Refused)?;
    }
    if t == MessageType::MsgSnapshot {
        let meta = m.get_snapshot().get_metadata();
        if meta.index == 0 || meta.index >= MAX_INDEX || meta.term == 0 || meta.term > m.term {
            return Err(Refused("snapshot position out of range"));
        }
        check_conf(meta.get_conf_state(), members).map_err(Refused)?;
        if decode_allocation(&m.get_snapshot().data).is_none_or(|a| a.owners.len() != count) {
            return Err(Refused(
                "snapshot data is not an allocation of this cluster",
            ));
        }
    }
    Ok(())
}

/// One node's consensus participant.
pub struct Consensus {
    raw: RawNode<DiskStorage>,
    me: NodeId,
    members: BTreeSet<u64>,
    count: usize,
    allocation: Allocation,
    committed: Vec<Allocation>,
    outbox: Vec<(NodeId, Vec<u8>)>,
    /// Epoch proposed and not yet applied.
    pub pending_epoch: Option<Epoch>,
    /// (term, leader, index): the last index this node's log is known to share with `leader`
    /// in `term` (an append it accepted, or a snapshot it restored).
    verified: (u64, u64, u64),
    /// Started without state, or found its log shorter than what it had acknowledged (rolled
    /// back): grants no vote to a candidate whose log is not empty until it has caught up with
    /// a leader (a vote it cast before losing its state must not be doubled).
    abstain: bool,
    /// What opening found, for the node's log.
    notes: Vec<String>,
    /// Messages refused by the checks (status `raft_refused`).
    pub refused: u64,
    /// Heartbeats whose commit was clamped.
    pub clamped: u64,
}

impl Consensus {
    /// Opens (or creates) the consensus state in `state_dir` for `me` among `voters`.
    ///
    /// # Errors
    /// [`ConsensusError`] if the state cannot be read (each corrupt file named with the fix) or
    /// Raft refuses the configuration.
    pub fn open(
        me: NodeId,
        voters: &[NodeId],
        learners: &[NodeId],
        count: IdCount,
        state_dir: PathBuf,
    ) -> Result<Self, ConsensusError> {
        let cs = ConfState::from((
            voters.iter().map(|v| u64::from(v.0)).collect::<Vec<_>>(),
            learners.iter().map(|v| u64::from(v.0)).collect::<Vec<_>>(),
        ));
        let members: BTreeSet<u64> = voters
            .iter()
            .chain(learners)
            .map(|n| u64::from(n.0))
            .chain([u64::from(me.0)])
            .collect();
        let (storage, rec) = DiskStorage::open(&state_dir, cs)?;
        let snap = storage.snapshot_ref();
        let applied = snap.get_metadata().index;
        let allocation = if applied > 0 {
            decode_allocation(&snap.data)
                .filter(|a| a.owners.len() == usize::from(count.get()))
                .ok_or_else(|| {
                    ConsensusError::Corrupt(format!(
                        "{}: the snapshot's data is not an allocation of {} identifiers",
                        state_dir.join("raft.snapshot").display(),
                        count.get()
                    ))
                })?
        } else {
            Allocation::unowned(Epoch(0), count)
        };
        let notes = notes_of(&rec, &state_dir);
        let cfg = raft::Config {
            id: u64::from(me.0),
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 64 * 1024,
            max_inflight_msgs: 64,
            applied,
            ..Default::default()
        };
        // the raft crate's own log, at target clusterd::raft (its chatter at debug and trace)
        let logger = crate::daemon::logging::SlogBridge::logger(me.0);
        let raw = RawNode::new(&cfg, storage, &logger)?;
        Ok(Self {
            raw,
            me,
            members,
            count: usize::from(count.get()),
            allocation,
            committed: Vec::new(),
            outbox: Vec::new(),
            pending_epoch: None,
            verified: (0, 0, 0),
            abstain: rec.fresh,
            notes,
            refused: 0,
            clamped: 0,
        })
    }

    /// What opening the state found (a fresh start, a torn tail cut off), once.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Whether this node started without state (or found its state rolled back) and has not
    /// caught up with a leader yet.
    pub fn abstaining(&self) -> bool {
        self.abstain
    }

    /// Bytes of the Raft log file now.
    pub fn log_bytes(&self) -> u64 {
        self.raw.store().log_bytes()
    }

    /// Advances Raft's clock by one tick ([`TICK_MS`]).
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// The highest commit index a heartbeat from `leader` in `term` may carry: what this node
    /// has committed, or what it is known to share with that leader (the raft crate panics on
    /// a commit beyond the log, and a log restored from an older copy may end in entries the
    /// leader no longer has).
    fn commit_bound(&self, term: u64, leader: u64) -> u64 {
        let log = &self.raw.raft.raft_log;
        let (vt, vl, vi) = self.verified;
        let shared = if vt == term && vl == leader && term == self.raw.raft.term {
            vi.min(log.last_index())
        } else {
            0
        };
        log.committed.max(shared)
    }

    /// Steps a Raft message received from a peer (`from` is the authenticated sender).
    ///
    /// # Errors
    /// [`ConsensusError::BadMessage`] for bytes that are not a Raft message from `from` to this
    /// node, [`ConsensusError::Refused`] for one that fails the checks.
    pub fn step(&mut self, from: NodeId, bytes: &[u8]) -> Result<(), ConsensusError> {
        let mut m = Message::parse_from_bytes(bytes).map_err(|_| ConsensusError::BadMessage)?;
        if let Err(e) = self.check(from, &mut m) {
            self.refused += 1;
            return Err(e);
        }
        let t = m.get_msg_type();
        // a node that started without state must not double a vote it cast before
        if self.abstain && t == MessageType::MsgRequestVote && (m.index > 0 || m.log_term > 0) {
            return Ok(());
        }
        let mut clamped_from = None;
        if t == MessageType::MsgHeartbeat {
            let bound = self.commit_bound(m.term, m.from);
            if m.commit > bound {
                clamped_from = Some(m.commit);
                // a leader sends at most what this node acknowledged: past the end of the log,
                // this node lost entries it acknowledged (a state directory rolled back to an
                // older copy), and so maybe a vote too
                if m.commit > self.raw.raft.raft_log.last_index() {
                    self.abstain = true;
                }
                m.commit = bound;
                self.clamped += 1;
            }
        }
        let append_ok = t == MessageType::MsgAppend
            && m.index >= self.raw.raft.raft_log.committed
            && self.raw.raft.raft_log.match_term(m.index, m.log_term);
        let append_end = m.index.saturating_add(m.entries.len() as u64);
        let leader_rollback = self.is_leader()
            && t == MessageType::MsgAppendResponse
            && m.reject
            && m.term == self.raw.raft.term;
        let (peer, hint) = (m.from, m.reject_hint);
        let (term, snap_index) = (m.term, m.get_snapshot().get_metadata().index);
        if leader_rollback {
            // the follower's log is shorter than what it acknowledged (its state was lost or
            // rolled back): probe it again from what it still holds
            if let Some(pr) = self.raw.raft.mut_prs().get_mut(peer) {
                if hint < pr.matched {
                    pr.matched = hint;
                    pr.become_probe();
                }
            }
        }
        self.raw.step(m).map_err(|_| ConsensusError::BadMessage)?;
        if leader_rollback && self.is_leader() {
            self.raw.raft.send_append(peer);
        }
        let following = self.raw.raft.term == term && self.raw.raft.leader_id == peer;
        if following && append_ok {
            self.verified = (term, peer, append_end.max(self.verified_for(term, peer)));
        }
        if following
            && t == MessageType::MsgSnapshot
            && self.raw.raft.raft_log.committed >= snap_index
        {
            self.verified = (term, peer, self.raw.raft.raft_log.last_index());
        }
        if following && t == MessageType::MsgHeartbeat {
            match clamped_from {
                None => self.abstain = false,
                Some(leader_commit) => self.report_behind(peer, leader_commit),
            }
        }
        Ok(())
    }

    fn verified_for(&self, term: u64, leader: u64) -> u64 {
        let (vt, vl, vi) = self.verified;
        if vt == term && vl == leader {
            vi
        } else {
            0
        }
    }

    /// Tells the leader that this node lacks entries it believes this node has: a rejection
    /// whose hint is this node's commit index (entries the leader surely shares), which makes
    /// the leader probe this node again from there.
    fn report_behind(&mut self, leader: u64, leader_commit: u64) {
        let log = &self.raw.raft.raft_log;
        let committed = log.committed;
        let mut r = Message::default();
        r.set_msg_type(MessageType::MsgAppendResponse);
        r.to = leader;
        r.from = u64::from(self.me.0);
        r.term = self.raw.raft.term;
        r.index = leader_commit.max(committed);
        r.reject = true;
        r.reject_hint = committed;
        r.log_term = log.term(committed).unwrap_or(0);
        r.commit = committed;
        self.queue(vec![r]);
    }

    /// [`check_message`], plus the checks against this node's own log.
    fn check(&self, from: NodeId, m: &mut Message) -> Result<(), ConsensusError> {
        check_message(m, from, self.me, &self.members, self.count)?;
        // entries follow `m.index` in order (checked above), and raft-rs ignores an append
        // below its commit index: an append cannot replace a committed entry
        let last = self.raw.raft.raft_log.last_index();
        match m.get_msg_type() {
            // a follower cannot have acknowledged entries this leader never had
            MessageType::MsgAppendResponse if !m.reject && m.index > last => Err(
                ConsensusError::Refused("acknowledges entries beyond the log"),
            ),
            MessageType::MsgHeartbeatResponse if m.commit > last => {
                m.commit = last;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The current leader, if known.
    pub fn leader(&self) -> Option<NodeId> {
        match self.raw.raft.leader_id {
            0 => None,
            n => u16::try_from(n).ok().map(NodeId),
        }
    }

    /// The current Raft term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The applied allocation.
    pub fn allocation(&self) -> &Allocation {
        &self.allocation
    }

    /// The current voters (the configured ones plus every promoted learner).
    pub fn voters(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .raw
            .raft
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .filter_map(|id| u16::try_from(id).ok().map(NodeId))
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether `node` votes now.
    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters().contains(&node)
    }

    /// Whether a configuration change is proposed and not yet applied.
    pub fn conf_change_pending(&self) -> bool {
        self.raw.raft.has_pending_conf()
    }

    /// Proposes to make learner `node` a voter. Leader only; one change at a time.
    ///
    /// # Errors
    /// [`ConsensusError::NotLeader`] or Raft's refusal (a change already pending).
    pub fn promote(&mut self, node: NodeId) -> Result<(), ConsensusError> {
        if !self.is_leader() {
            return Err(ConsensusError::NotLeader);
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = u64::from(node.0);
        self.raw.propose_conf_change(vec![], cc)?;
        Ok(())
    }

    /// Proposes `next` (its epoch must be the applied epoch plus one). Leader only.
    ///
    /// # Errors
    /// [`ConsensusError::NotLeader`] or Raft's refusal.
    pub fn propose(&mut self, next: &Allocation) -> Result<(), ConsensusError> {
        if !self.is_leader() {
            return Err(ConsensusError::NotLeader);
        }
        self.raw.propose(vec![], encode_allocation(next))?;
        self.pending_epoch = Some(next.epoch);
        Ok(())
    }

    /// Processes Raft's ready state: persists, queues messages, applies committed entries,
    /// compacts the log.
    ///
    /// # Errors
    /// [`ConsensusError::Store`] if the state cannot be persisted.
    pub fn poll(&mut self) -> Result<(), ConsensusError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        self.queue(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // a snapshot from the leader (this node was behind its compacted log): the checks
            // in `step` made sure its data is an allocation of this cluster
            let snap = ready.snapshot().clone();
            if let Some(a) = decode_allocation(&snap.data) {
                if a.owners.len() == self.count && a.epoch > self.allocation.epoch {
                    self.allocation = a.clone();
                    if self.pending_epoch.is_some_and(|p| p <= a.epoch) {
                        self.pending_epoch = None;
                    }
                    self.committed.push(a);
                }
            }
            self.raw.mut_store().apply_snapshot(snap)?;
        }
        let committed = ready.take_committed_entries();
        self.apply(committed);
        if !ready.entries().is_empty() {
            self.raw.mut_store().append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            let hs = hs.clone();
            self.raw.mut_store().set_hardstate(hs)?;
        }
        self.queue(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        self.queue(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed);
        self.raw.advance_apply();
        self.maybe_compact()?;
        Ok(())
    }

    /// Compacts the log into a snapshot at the applied index once [`COMPACT_AFTER`] applied
    /// entries are held.
    fn maybe_compact(&mut self) -> Result<(), ConsensusError> {
        let applied = self.raw.raft.raft_log.applied;
        let first = self.raw.store().first_index()?;
        if applied < first || applied - first + 1 < COMPACT_AFTER {
            return Ok(());
        }
        let data = encode_allocation(&self.allocation);
        let cs = self.raw.raft.prs().conf().to_conf_state();
        self.raw.mut_store().compact(applied, data, cs)?;
        Ok(())
    }

    fn queue(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                // a snapshot goes out as one datagram: count it as sent; if it is lost, the
                // follower's next rejection makes the leader send it again
                self.raw.report_snapshot(m.to, SnapshotStatus::Finish);
            }
            if let (Ok(to), Ok(bytes)) = (u16::try_from(m.to), m.write_to_bytes()) {
                self.outbox.push((NodeId(to), bytes));
            }
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryConfChange => {
                    if let Ok(cc) = ConfChange::parse_from_bytes(&e.data) {
                        let cs = self.raw.apply_conf_change(&cc);
                        self.set_conf_state(cs);
                    }
                    continue;
                }
                EntryType::EntryConfChangeV2 => {
                    if let Ok(cc) = ConfChangeV2::parse_from_bytes(&e.data) {
                        let cs = self.raw.apply_conf_change(&cc);
                        self.set_conf_state(cs);
                    }
                    continue;
                }
                EntryType::EntryNormal if !e.data.is_empty() => {}
                EntryType::EntryNormal => continue,
            }
            if let Some(a) = decode_allocation(&e.data) {
                if a.epoch.0 == self.allocation.epoch.0 + 1
                    && a.owners.len() == self.allocation.owners.len()
                {
                    self.allocation = a.clone();
                    if self.pending_epoch.is_some_and(|p| p <= a.epoch) {
                        self.pending_epoch = None;
                    }
                    self.committed.push(a);
                }
            }
        }
    }

    fn set_conf_state(&mut self, cs: raft::Result<ConfState>) {
        // a change Raft refuses (not possible for the promotions proposed here) leaves the
        // configuration as it was, on every node alike
        if let Ok(cs) = cs {
            self.raw.mut_store().set_conf_state(cs);
        }
    }

    /// Raft messages to send: `(to, bytes)`.
    pub fn take_messages(&mut self) -> Vec<(NodeId, Vec<u8>)> {
        std::mem::take(&mut self.outbox)
    }

    /// Allocations applied since the last call, in order.
    pub fn take_committed(&mut self) -> Vec<Allocation> {
        std::mem::take(&mut self.committed)
    }

    /// Feeds `data` as a stream of hostile, authenticated messages: each is a length byte, a
    /// control byte (high nibble: ticks before it; low two bits: the sender, node 2 to 5) and
    /// that many message bytes. What the `raft_step` fuzz target and the test replaying its
    /// corpus both run, so the two read an input the same way.
    ///
    /// # Errors
    /// A failure to persist the state ([`Consensus::poll`]); refused messages are not errors.
    pub fn step_hostile(&mut self, data: &[u8]) -> Result<(), ConsensusError> {
        let mut rest = data;
        while rest.len() >= 2 {
            let n = usize::from(rest[0]).min(rest.len() - 2);
            let ctl = rest[1];
            let msg = &rest[2..2 + n];
            rest = &rest[2 + n..];
            for _ in 0..(ctl >> 4) {
                self.tick();
            }
            let _ = self.step(NodeId(u16::from(ctl & 3) + 2), msg);
            self.poll()?;
            let _ = self.take_messages();
            let _ = self.take_committed();
        }
        Ok(())
    }
}

fn notes_of(rec: &Recovery, dir: &std::path::Path) -> Vec<String> {
    let mut notes = Vec::new();
    if rec.fresh {
        notes.push(format!(
            "no Raft state in {}: a fresh start (first start, or the state directory was lost \
             or moved away); until it has caught up with a leader this node votes for no \
             candidate whose log is not empty",
            dir.display()
        ));
    }
    if let Some((at, n)) = rec.torn_tail {
        notes.push(format!(
            "{}: cut off a torn final record at offset {at} ({n} bytes: a write interrupted by \
             a crash)",
            dir.join("raft.log").display()
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Runs `ticks` clock ticks over an in-process network of `nodes`, every message delivered.
    fn run(nodes: &mut [Consensus], ticks: usize) {
        for _ in 0..ticks {
            for n in nodes.iter_mut() {
                n.tick();
            }
            for _ in 0..5 {
                let mut msgs = Vec::new();
                for n in nodes.iter_mut() {
                    n.poll().unwrap();
                    let from = n.me;
                    msgs.extend(n.take_messages().into_iter().map(|(to, b)| (from, to, b)));
                }
                for (from, to, b) in msgs {
                    if let Some(n) = nodes.iter_mut().find(|n| n.me == to) {
                        let _ = n.step(from, &b);
                    }
                }
            }
        }
    }

    /// The index of the node that leads.
    fn leader_of(nodes: &[Consensus]) -> usize {
        nodes.iter().position(|n| n.is_leader()).expect("a leader")
    }

    /// Epoch 1, in which `owner` owns all 8 identifiers.
    fn epoch1_all_to(owner: u16) -> Allocation {
        Allocation {
            epoch: Epoch(1),
            owners: vec![Some(NodeId(owner)); 8],
            next_owners: Vec::new(),
        }
    }

    /// The leader proposes `a`; then 5 ticks run.
    fn propose(nodes: &mut [Consensus], a: &Allocation) {
        let leader = leader_of(nodes);
        nodes[leader].propose(a).unwrap();
        run(nodes, 5);
    }

    /// Every node has agreed on `a`.
    fn assert_agreed(nodes: &[Consensus], a: &Allocation) {
        for n in nodes {
            assert_eq!(n.allocation(), a, "node {}", n.me.0);
        }
    }

    #[test]
    fn allocation_codec_round_trip_and_strictness() {
        let a = Allocation {
            epoch: Epoch(7),
            owners: vec![Some(NodeId(1)), None, Some(NodeId(3)), Some(NodeId(1))],
            next_owners: Vec::new(),
        };
        let b = encode_allocation(&a);
        assert_eq!(decode_allocation(&b), Some(a.clone()));
        assert_eq!(decode_allocation(&b[..b.len() - 1]), None);
        assert_eq!(decode_allocation(&[]), None);
        let mut c = b.clone();
        c[0] = 2;
        assert_eq!(decode_allocation(&c), None, "tag 2 without next owners");
        c[0] = 3;
        assert_eq!(decode_allocation(&c), None, "unknown tag");
        // a release epoch names the next owner of identifier 1 (unowned in it)
        let r = Allocation {
            next_owners: vec![(DistributionId(1), NodeId(3))],
            ..a.clone()
        };
        let rb = encode_allocation(&r);
        assert_eq!(rb[0], 2);
        assert_eq!(decode_allocation(&rb), Some(r.clone()));
        assert_eq!(decode_allocation(&rb[..rb.len() - 1]), None, "torn pair");
        let mut bad = rb.clone();
        let at = rb.len() - 3; // the identifier's low byte: 2's owner is node 3
        bad[at] = 2;
        assert_eq!(
            decode_allocation(&bad),
            None,
            "next owner already the owner"
        );
        // a prepare step names the next owner of an owned identifier
        let p = Allocation {
            next_owners: vec![(DistributionId(0), NodeId(3))],
            ..a.clone()
        };
        assert_eq!(decode_allocation(&encode_allocation(&p)), Some(p));
        let mut bad = rb.clone();
        bad[at] = 9;
        assert_eq!(decode_allocation(&bad), None, "identifier out of range");
        let mut bad = rb.clone();
        let last = rb.len() - 1;
        bad[last] = 0;
        assert_eq!(decode_allocation(&bad), None, "node 0");
        let two = Allocation {
            owners: vec![None, None, Some(NodeId(3)), Some(NodeId(1))],
            next_owners: vec![
                (DistributionId(1), NodeId(3)),
                (DistributionId(0), NodeId(2)),
            ],
            ..a.clone()
        };
        assert_eq!(
            decode_allocation(&encode_allocation(&two)),
            None,
            "out of order"
        );
    }

    /// Three in-process participants agree on allocations; a restarted one re-applies its log.
    #[test]
    fn three_voters_agree_and_survive_restart() {
        let dir = std::env::temp_dir().join(format!("consensus-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let count = IdCount::new(8).unwrap();
        let open = |n: u16| {
            Consensus::open(NodeId(n), &voters, &[], count, dir.join(format!("n{n}"))).unwrap()
        };
        let mut nodes: Vec<Consensus> = (1..=3).map(open).collect();
        run(&mut nodes, 60);
        let next = epoch1_all_to(1);
        propose(&mut nodes, &next);
        assert_agreed(&nodes, &next);
        // a stale proposal (same epoch again) is ignored by every node
        propose(&mut nodes, &epoch1_all_to(2));
        assert_agreed(&nodes, &next);
        // restart node 3 from its state directory
        nodes.pop();
        nodes.push(open(3));
        run(&mut nodes, 30);
        assert_eq!(nodes[2].allocation(), &next);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A learner promoted through the log is a voter on every node, and still after a
    /// restart (re-applied from the log); with it, two of the three configured voters can fail
    /// and the other two plus the promoted learner still agree.
    #[test]
    fn promoted_learner_votes_survives_restart_and_keeps_quorum() {
        let dir = std::env::temp_dir().join(format!("consensus-promote-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let learners = [NodeId(4), NodeId(5)];
        let count = IdCount::new(8).unwrap();
        let open = |n: u16| {
            Consensus::open(
                NodeId(n),
                &voters,
                &learners,
                count,
                dir.join(format!("n{n}")),
            )
            .unwrap()
        };
        let mut nodes: Vec<Consensus> = (1..=5).map(open).collect();
        run(&mut nodes, 60);
        assert!(leader_of(&nodes) < 3, "learners never lead");
        assert!(nodes.iter().all(|n| n.voters() == voters.to_vec()));
        for l in learners {
            let leader = leader_of(&nodes);
            assert!(!nodes[leader].is_voter(l));
            nodes[leader].promote(l).unwrap();
            run(&mut nodes, 5);
            assert!(!nodes[leader].conf_change_pending());
        }
        let all: Vec<NodeId> = (1..=5).map(NodeId).collect();
        for n in &nodes {
            assert_eq!(n.voters(), all, "node {} sees the promotions", n.me.0);
        }
        // restart node 5: the promotions come back from its log
        nodes.pop();
        nodes.push(open(5));
        run(&mut nodes, 5);
        assert_eq!(nodes[4].voters(), all);
        // nodes 1 and 2 fail: 3, 4 and 5 are a majority of five and still agree
        nodes.retain(|n| n.me.0 >= 3);
        run(&mut nodes, 80);
        let next = epoch1_all_to(4);
        propose(&mut nodes, &next);
        assert_agreed(&nodes, &next);
        let _ = fs::remove_dir_all(&dir);
    }
}
