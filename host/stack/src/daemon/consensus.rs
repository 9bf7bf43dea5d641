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
//! The Raft hard state and log are kept in `state_dir` (appended per ready batch and synced to
//! disk before Raft acts on them), so a node restarted after SIGKILL or a power loss keeps its
//! vote and term and rebuilds the allocation by re-applying its log.
//!
//! Membership: the configured voters start the cluster; members added later start as learners
//! and the leader promotes each to voter ([`Consensus::promote`]) once it is ready, through a
//! Raft configuration change in the log (so restarts re-apply it like the allocations).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message,
};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

use crate::core::alloc_policy::Allocation;
use crate::core::ids::{Epoch, IdCount, NodeId};

/// Raft ticks: the node runtime ticks every [`TICK_MS`] ms.
pub const TICK_MS: u64 = 10;
/// Election timeout in ticks (randomised by Raft between this and twice this).
pub const ELECTION_TICKS: usize = 15;
/// Leader heartbeat interval in ticks.
pub const HEARTBEAT_TICKS: usize = 3;

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
    /// The persisted state does not parse.
    #[error("consensus state file {0} is corrupt; move the state directory away to start fresh")]
    Corrupt(String),
    /// A message from the network does not parse.
    #[error("malformed consensus message")]
    BadMessage,
    /// Not the leader.
    #[error("not the leader")]
    NotLeader,
}

/// Encodes an allocation as a log entry: tag 1, epoch u64, count u16, owner u16 per id (0 none).
pub fn encode_allocation(a: &Allocation) -> Vec<u8> {
    let mut v = Vec::with_capacity(11 + 2 * a.owners.len());
    v.push(1);
    v.extend_from_slice(&a.epoch.0.to_be_bytes());
    v.extend_from_slice(&(a.owners.len() as u16).to_be_bytes());
    for o in &a.owners {
        v.extend_from_slice(&o.map_or(0, |n| n.0).to_be_bytes());
    }
    v
}

/// Decodes [`encode_allocation`] strictly.
pub fn decode_allocation(b: &[u8]) -> Option<Allocation> {
    if b.len() < 11 || b[0] != 1 {
        return None;
    }
    let epoch = u64::from_be_bytes(b[1..9].try_into().ok()?);
    let count = usize::from(u16::from_be_bytes([b[9], b[10]]));
    if b.len() != 11 + 2 * count {
        return None;
    }
    let owners = b[11..]
        .chunks_exact(2)
        .map(|c| match u16::from_be_bytes([c[0], c[1]]) {
            0 => None,
            n => Some(NodeId(n)),
        })
        .collect();
    Some(Allocation {
        epoch: Epoch(epoch),
        owners,
    })
}

/// One node's consensus participant.
pub struct Consensus {
    raw: RawNode<MemStorage>,
    me: NodeId,
    log_path: PathBuf,
    hs_path: PathBuf,
    allocation: Allocation,
    committed: Vec<Allocation>,
    outbox: Vec<(NodeId, Vec<u8>)>,
    /// Epoch proposed and not yet applied.
    pub pending_epoch: Option<Epoch>,
}

fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> ConsensusError + '_ {
    move |err| ConsensusError::Io {
        path: path.display().to_string(),
        err,
    }
}

impl Consensus {
    /// Opens (or creates) the consensus state in `state_dir` for `me` among `voters`.
    ///
    /// # Errors
    /// [`ConsensusError`] if the state cannot be read or Raft refuses the configuration.
    pub fn open(
        me: NodeId,
        voters: &[NodeId],
        learners: &[NodeId],
        count: IdCount,
        state_dir: PathBuf,
    ) -> Result<Self, ConsensusError> {
        fs::create_dir_all(&state_dir).map_err(io(&state_dir))?;
        let log_path = state_dir.join("raft.log");
        let hs_path = state_dir.join("raft.hardstate");
        let cs = ConfState::from((
            voters.iter().map(|v| u64::from(v.0)).collect::<Vec<_>>(),
            learners.iter().map(|v| u64::from(v.0)).collect::<Vec<_>>(),
        ));
        let storage = MemStorage::new_with_conf_state(cs);
        // replay persisted log batches, then the hard state
        if let Ok(mut f) = File::open(&log_path) {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map_err(io(&log_path))?;
            let mut at = 0;
            let corrupt = || ConsensusError::Corrupt(log_path.display().to_string());
            while at < buf.len() {
                let Some(len) = buf.get(at..at + 4) else {
                    break;
                };
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let Some(rec) = buf.get(at + 4..at + 4 + len) else {
                    break; // a torn final write: ignore it
                };
                let e = Entry::parse_from_bytes(rec).map_err(|_| corrupt())?;
                storage.wl().append(&[e]).map_err(|_| corrupt())?;
                at += 4 + len;
            }
        }
        if let Ok(bytes) = fs::read(&hs_path) {
            let hs = HardState::parse_from_bytes(&bytes)
                .map_err(|_| ConsensusError::Corrupt(hs_path.display().to_string()))?;
            let mut hs = hs;
            let last_index = raft::Storage::last_index(&storage)?;
            hs.commit = hs.commit.min(last_index);
            storage.wl().set_hardstate(hs);
        }
        let cfg = raft::Config {
            id: u64::from(me.0),
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 64 * 1024,
            max_inflight_msgs: 64,
            applied: 0,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&cfg, storage, &logger)?;
        Ok(Self {
            raw,
            me,
            log_path,
            hs_path,
            allocation: Allocation::unowned(Epoch(0), count),
            committed: Vec::new(),
            outbox: Vec::new(),
            pending_epoch: None,
        })
    }

    /// Advances Raft's clock by one tick ([`TICK_MS`]).
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Steps a Raft message received from a peer.
    ///
    /// # Errors
    /// [`ConsensusError::BadMessage`] for bytes that are not a Raft message from a voter.
    pub fn step(&mut self, from: NodeId, bytes: &[u8]) -> Result<(), ConsensusError> {
        let m = Message::parse_from_bytes(bytes).map_err(|_| ConsensusError::BadMessage)?;
        if m.from != u64::from(from.0) || m.to != u64::from(self.me.0) {
            return Err(ConsensusError::BadMessage);
        }
        // local message types must never come from the network
        if raft::raw_node::is_local_msg(m.get_msg_type()) {
            return Err(ConsensusError::BadMessage);
        }
        self.raw.step(m).map_err(|_| ConsensusError::BadMessage)
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

    /// Processes Raft's ready state: persists, queues messages, applies committed entries.
    ///
    /// # Errors
    /// [`ConsensusError::Io`] if the state cannot be persisted.
    pub fn poll(&mut self) -> Result<(), ConsensusError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        self.queue(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // snapshots are never produced (the log is small); apply one defensively
            let snap = ready.snapshot().clone();
            let _ = self.raw.mut_store().wl().apply_snapshot(snap);
        }
        let committed = ready.take_committed_entries();
        self.apply(committed);
        if !ready.entries().is_empty() {
            let entries = ready.entries().clone();
            self.persist_entries(&entries)?;
            self.raw.mut_store().wl().append(&entries)?;
        }
        if let Some(hs) = ready.hs() {
            let hs = hs.clone();
            self.persist_hs(&hs)?;
            self.raw.mut_store().wl().set_hardstate(hs);
        }
        self.queue(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw
                .mut_store()
                .wl()
                .mut_hard_state()
                .set_commit(commit);
        }
        self.queue(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed);
        self.raw.advance_apply();
        Ok(())
    }

    fn queue(&mut self, msgs: Vec<Message>) {
        for m in msgs {
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
            self.raw.mut_store().wl().set_conf_state(cs);
        }
    }

    fn persist_entries(&self, entries: &[Entry]) -> Result<(), ConsensusError> {
        let mut buf = Vec::new();
        for e in entries {
            let bytes = e
                .write_to_bytes()
                .map_err(|_| ConsensusError::Corrupt("entry encoding".into()))?;
            buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            buf.extend_from_slice(&bytes);
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io(&self.log_path))?;
        f.write_all(&buf).map_err(io(&self.log_path))?;
        // on disk before Raft acts on it (votes and acks must survive a power loss)
        f.sync_data().map_err(io(&self.log_path))
    }

    fn persist_hs(&self, hs: &HardState) -> Result<(), ConsensusError> {
        let bytes = hs
            .write_to_bytes()
            .map_err(|_| ConsensusError::Corrupt("hard state encoding".into()))?;
        let tmp = self.hs_path.with_extension("tmp");
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_data().map_err(io(&tmp))?;
        fs::rename(&tmp, &self.hs_path).map_err(io(&self.hs_path))?;
        // the rename itself is durable once the directory is synced
        if let Some(dir) = self.hs_path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Ok(())
    }

    /// Raft messages to send: `(to, bytes)`.
    pub fn take_messages(&mut self) -> Vec<(NodeId, Vec<u8>)> {
        std::mem::take(&mut self.outbox)
    }

    /// Allocations applied since the last call, in order.
    pub fn take_committed(&mut self) -> Vec<Allocation> {
        std::mem::take(&mut self.committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let b = encode_allocation(&a);
        assert_eq!(decode_allocation(&b), Some(a));
        assert_eq!(decode_allocation(&b[..b.len() - 1]), None);
        assert_eq!(decode_allocation(&[]), None);
        let mut c = b.clone();
        c[0] = 2;
        assert_eq!(decode_allocation(&c), None);
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
