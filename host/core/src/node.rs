//! One cluster node's state core (figure 2, figure 4, figure 6B): the node-specific table, the
//! common table, the allocation, packet handling, replication events in and out, reallocation.
//! Sans-I/O: time and bytes come in through the methods, messages leave through
//! [`Node::drain_outbox`].

use super::alloc_policy::Allocation;
use super::card_table::card_result_changes;
use super::common::{CommonTable, Upsert};
use super::distribution::{ClusterSecret, Distributor};
use super::entry::{Action, ConnState, Endpoint, Entry, FlowKey, L4Proto, SaRef, UserId};
use super::events::{Event, Message, SaState};
use super::ids::{DistributionId, Epoch, IdCount, Millis, NodeId};
use super::load_report::Load;
use super::node_table::{CardOutcome, NodeSpecificTable, TableError};
use super::packet::{parse_packet, Framing, PacketKind, ParseError, ParsedPacket, TcpFlags};
use super::realloc::{plan, ReallocPlan};
use super::rules::{Helper, RuleSet};
use super::users::UserTable;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// Where node-specific tables hold entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The invention: a node's active table holds the entries of the identifiers it owns.
    NodeSpecific,
    /// Prior art (figure 1B): every node's active table holds every entry of the cluster.
    PriorArt,
}

/// Idle timeouts per state, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP handshake states.
    pub tcp_handshake_ms: u64,
    /// TCP established.
    pub tcp_established_ms: u64,
    /// TCP closing states.
    pub tcp_closing_ms: u64,
    /// UDP and ICMP.
    pub datagram_ms: u64,
    /// IKE, ESP and application sessions.
    pub session_ms: u64,
    /// How long a clear is remembered (guards against resurrection by late events).
    pub tombstone_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_handshake_ms: 30_000,
            tcp_established_ms: 3_600_000,
            tcp_closing_ms: 60_000,
            datagram_ms: 60_000,
            session_ms: 3_600_000,
            tombstone_ms: 120_000,
        }
    }
}

impl Timeouts {
    fn for_entry(&self, e: &Entry) -> u64 {
        if e.timeout_s > 0 {
            return u64::from(e.timeout_s) * 1000;
        }
        use ConnState::*;
        match e.state {
            SynSent | SynReceived => self.tcp_handshake_ms,
            Established => self.tcp_established_ms,
            FinWait | Closing | Closed => self.tcp_closing_ms,
            UdpUnreplied | UdpReplied | IcmpRequest | IcmpReplied => self.datagram_ms,
            Ike | EspSa | Session => self.session_ms,
        }
    }
}

/// Configuration of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node.
    pub node: NodeId,
    /// Changes every time the node starts with empty memory.
    pub incarnation: u32,
    /// The cluster secret keying distribution identifiers.
    pub secret: ClusterSecret,
    /// Number of distribution identifiers.
    pub count: IdCount,
    /// Node-specific or prior-art layout.
    pub mode: Mode,
    /// The rule set for first packets.
    pub rules: RuleSet,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Framing of packets given to [`Node::handle_packet`].
    pub framing: Framing,
}

impl NodeConfig {
    /// A configuration with defaults: 256 identifiers, node-specific mode, allow-all rules,
    /// default timeouts, bare IP framing.
    pub fn new(node: NodeId, secret: ClusterSecret) -> Self {
        NodeConfig {
            node,
            incarnation: 1,
            secret,
            count: IdCount::default(),
            mode: Mode::NodeSpecific,
            rules: RuleSet::allow_all(),
            timeouts: Timeouts::default(),
            framing: Framing::Ip,
        }
    }
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Unparseable.
    Parse,
    /// A datagram on the IKE ports whose ISAKMP/IKE header is invalid
    /// ([`crate::packet::IkeError`]): no entry is made for it.
    BadIke,
    /// No rule allowed the first packet.
    Rule,
    /// TCP packet other than a SYN without state (strict TCP).
    TcpNoState,
    /// Reply or follow-up packet without state (ICMP reply, IKE follow-up).
    NoState,
    /// ESP without an installed SA.
    NoSa,
    /// The entry's action drops.
    EntryAction,
    /// The node-specific table refused the new entry.
    TableFull,
}

/// The outcome of [`Node::handle_packet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward with this action.
    Accept {
        /// Allow or Tunnel.
        action: Action,
        /// A new entry was created.
        created: bool,
    },
    /// Another node owns the packet's identifier: ignore it here (figure 2 step 202).
    NotOurs {
        /// The owner, if any.
        owner: Option<NodeId>,
    },
    /// Dropped.
    Drop(DropReason),
}

/// The outcome of [`Node::handle_frame`]: who handled a frame, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameOutcome {
    /// The card forwarded the frame itself (a hit on an entry it serves).
    ForwardedByCard,
    /// The card dropped it: an identifier this node does not own (or a runt, a rule).
    DroppedByCard(driver::port::Reason),
    /// The card punted it (for this reason); the host's slow path decided (and sent it on if
    /// it passed).
    Slow(Verdict, driver::port::Reason),
    /// No card packet path: the host handled the frame as a packet.
    Host(Verdict),
}

/// Frames leaving towards the wires, each with the port to send it out of.
pub type Egress = Vec<(u8, Vec<u8>)>;

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Every other node.
    All,
    /// One node.
    Node(NodeId),
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Destination.
    pub dest: Destination,
    /// The message.
    pub message: Message,
}

/// What applying a message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Tables changed.
    Changed,
    /// Nothing to change (stale or already known).
    Unchanged,
    /// A duplicate of a message already applied.
    Duplicate,
}

/// Why a message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The identifier is outside this cluster's range.
    #[error("distribution identifier {dist} out of range (count {count})")]
    BadDist {
        /// The identifier.
        dist: u16,
        /// The configured count.
        count: u16,
    },
    /// The message claims to come from this node.
    #[error("message claims to be from this node ({0})")]
    FromSelf(NodeId),
    /// The sender restarted since; the message is from an old incarnation.
    #[error("message from an old incarnation {got} of {node} (current {current})")]
    OldIncarnation {
        /// The sender.
        node: NodeId,
        /// The message's incarnation.
        got: u32,
        /// The known incarnation.
        current: u32,
    },
    /// The identifier counts differ.
    #[error("allocation has {got} identifiers, node has {count}")]
    BadAllocation {
        /// Identifiers in the allocation.
        got: usize,
        /// The configured count.
        count: u16,
    },
}

/// Why a reallocation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReallocError {
    /// The epoch does not advance.
    #[error("epoch {got:?} is not newer than {current:?}")]
    OldEpoch {
        /// The new allocation's epoch.
        got: Epoch,
        /// The current epoch.
        current: Epoch,
    },
    /// No reallocation with this epoch was begun.
    #[error("no reallocation to epoch {0:?} in progress")]
    NotBegun(Epoch),
    /// The identifier counts differ.
    #[error("allocation has {got} identifiers, node has {count}")]
    BadAllocation {
        /// Identifiers in the allocation.
        got: usize,
        /// The configured count.
        count: u16,
    },
}

/// What a reallocation step did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReallocReport {
    /// The plan.
    pub plan: ReallocPlan,
    /// Entries installed into the node-specific table for gained identifiers.
    pub installed: usize,
    /// Installs the node-specific table refused.
    pub install_failures: usize,
    /// Flush commands issued for lost identifiers (one per identifier on host memory, one for
    /// the whole set on a card).
    pub flushes: usize,
    /// Entries those flushes removed.
    pub flushed: usize,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets handled.
    pub packets: u64,
    /// Packets whose identifier another node owns.
    pub not_ours: u64,
    /// Node-specific table hits.
    pub hits: u64,
    /// Entries created by first packets.
    pub created: u64,
    /// Drops: unparseable.
    pub dropped_parse: u64,
    /// Drops: invalid ISAKMP/IKE headers on the IKE ports.
    pub dropped_bad_ike: u64,
    /// Drops: rule set.
    pub dropped_rule: u64,
    /// Drops: TCP without state (strict).
    pub dropped_tcp_no_state: u64,
    /// Drops: other packets without state.
    pub dropped_no_state: u64,
    /// Drops: the node-specific table was full.
    pub dropped_table_full: u64,
    /// Entries cleared by TCP close or reset.
    pub closed: u64,
    /// Entries cleared by idle timeout.
    pub expired: u64,
    /// Related entries created here for an identifier another node owns.
    pub related_routed: u64,
    /// Messages queued for sending.
    pub messages_out: u64,
    /// Messages applied.
    pub messages_in: u64,
    /// Messages that were duplicates.
    pub duplicates: u64,
    /// Sequence numbers skipped (lost or reordered messages).
    pub seq_gaps: u64,
    /// Repair requests sent.
    pub repairs_requested: u64,
    /// Snapshots applied.
    pub snapshots_applied: u64,
    /// Installs into the node-specific table that it refused.
    pub install_failures: u64,
    /// Frames the card forwarded itself (its packet path).
    pub card_forwarded: u64,
    /// Frames the card dropped (identifiers this node does not own, rules, runts).
    pub card_dropped: u64,
    /// Frames the card punted to the host's slow path.
    pub card_punted: u64,
    /// Entries rewritten on the card because their state moved on or off the card's path.
    pub card_rewrites: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct PeerSeq {
    incarnation: u32,
    high: u64,
    window: u64,
}

impl PeerSeq {
    /// Records `seq`; returns false for a duplicate. Counts skipped numbers into `gaps`.
    fn accept(&mut self, seq: u64, gaps: &mut u64) -> bool {
        if seq > self.high {
            let shift = seq - self.high;
            *gaps = gaps.saturating_add(shift - 1);
            self.window = if shift >= 64 { 0 } else { self.window << shift };
            self.window |= 1;
            self.high = seq;
            return true;
        }
        let back = self.high - seq;
        if back >= 64 {
            // Too old to tell; versions make re-applying harmless.
            return true;
        }
        let bit = 1u64 << back;
        if self.window & bit != 0 {
            return false;
        }
        self.window |= bit;
        *gaps = gaps.saturating_sub(1);
        true
    }
}

/// A pending reallocation (begun, not finished).
struct Pending {
    alloc: Allocation,
    plan: ReallocPlan,
    installed: usize,
    install_failures: usize,
}

/// One node's state core.
pub struct Node<T: NodeSpecificTable> {
    cfg: NodeConfig,
    dist: Distributor,
    alloc: Allocation,
    owned: Vec<bool>,
    gaining: Vec<bool>,
    /// Standby: the node is not serving yet (starting, its common table still filling), so its
    /// node-specific table takes nothing; see [`Node::set_standby`].
    standby: bool,
    /// Per identifier: the common table is known to match the owner (own identifiers, an
    /// applied snapshot, or a matching digest).
    synced: Vec<bool>,
    /// Packets and bytes handled per identifier since the last [`Node::take_load`].
    load: Vec<Load>,
    pending: Option<Pending>,
    common: CommonTable,
    active: T,
    seq: u64,
    peers: HashMap<NodeId, PeerSeq>,
    outbox: Vec<Outgoing>,
    sa: HashMap<u32, SaState>,
    stats: Stats,
    /// The first device failure of the node-specific table since the last
    /// [`Node::take_card_error`].
    card_error: Option<TableError>,
    /// The card's packet path holds this node's hash key, count and owned identifiers.
    port_synced: bool,
    /// Per identifier: the card's frame and byte counters when [`Node::take_load`] last read
    /// them.
    card_load: Vec<(u32, u64)>,
    /// The user bindings of claim 8 (see [`crate::users`]).
    users: UserTable,
}

impl<T: NodeSpecificTable> Node<T> {
    /// A node with an empty common table, owning nothing (epoch 0) until an allocation arrives.
    pub fn new(cfg: NodeConfig, table: T) -> Self {
        let dist = Distributor::new(&cfg.secret, cfg.count);
        let n = cfg.count.len();
        Node {
            alloc: Allocation::unowned(Epoch(0), cfg.count),
            owned: vec![false; n],
            gaining: vec![false; n],
            standby: false,
            synced: vec![false; n],
            load: vec![Load::default(); n],
            pending: None,
            common: CommonTable::new(cfg.count),
            active: table,
            seq: 0,
            peers: HashMap::new(),
            outbox: Vec::new(),
            sa: HashMap::new(),
            stats: Stats::default(),
            card_error: None,
            port_synced: false,
            card_load: vec![(0, 0); n],
            users: UserTable::new(),
            dist,
            cfg,
        }
        .with_table_setup()
    }

    fn with_table_setup(mut self) -> Self {
        self.table_replaced();
        self
    }

    /// Replaces the rule set (a reload). New connections are judged by `rules` from now on;
    /// existing entries keep the verdict they were created with. An entry names its rule by
    /// index, so its application helper (FTP, session) is the one of the rule at that index in
    /// the new set, if any. Returns how many rules were added and removed, counted as
    /// distinct rules in order (a rule that moved counts as both).
    pub fn replace_rules(&mut self, rules: RuleSet) -> (usize, usize) {
        let old = &self.cfg.rules.rules;
        let added = rules.rules.iter().filter(|r| !old.contains(r)).count();
        let removed = old.iter().filter(|r| !rules.rules.contains(r)).count();
        self.cfg.rules = rules;
        let helpers: Vec<u16> = (0..self.cfg.rules.rules.len())
            .filter(|&i| self.cfg.rules.rules[i].helper.is_some())
            .filter_map(|i| u16::try_from(i).ok())
            .collect();
        self.active.set_host_rules(&helpers);
        (added, removed)
    }

    /// The node-specific table was replaced (a card reopened after a failure): tell the new
    /// one which rules need the host, and key its packet path before the next frame.
    pub fn table_replaced(&mut self) {
        let helpers: Vec<u16> = (0..self.cfg.rules.rules.len())
            .filter(|&i| self.cfg.rules.rules[i].helper.is_some())
            .filter_map(|i| u16::try_from(i).ok())
            .collect();
        self.active.set_host_rules(&helpers);
        self.port_synced = false;
        self.card_load.iter_mut().for_each(|c| *c = (0, 0));
        self.sync_port();
    }

    /// The identifiers the card's packet path handles: those this node owns, unless it is in
    /// standby.
    fn card_owned(&self) -> driver::DidSet {
        let mut set = driver::DidSet::new();
        if !self.standby {
            for d in self.cfg.count.all().filter(|d| self.owns(*d)) {
                // every identifier of the count fits the 4,096-bit set
                let _ = set.insert(d);
            }
        }
        set
    }

    /// Brings the card's packet path up to date: hash key and count once, the owned
    /// identifiers every time (called whenever they change).
    fn sync_port(&mut self) {
        let owned = self.card_owned();
        let (secret, count, synced) = (self.cfg.secret.bytes(), self.cfg.count, self.port_synced);
        let Some(pp) = self.active.packet_path() else {
            return;
        };
        let r = if synced {
            Ok(())
        } else {
            pp.configure(&secret, count)
        }
        .and_then(|()| pp.set_owned(&owned));
        match r {
            Ok(()) => self.port_synced = true,
            Err(e) => {
                self.port_synced = false;
                self.table_failed(e);
            }
        }
    }

    /// A frame from the wire (Ethernet) on `port`. With a card packet path, the card handles
    /// it: it forwards frames of entries it serves and drops frames of identifiers this node
    /// does not own by itself, and only what it punts reaches the host's slow path here (which
    /// sends a frame it lets through out of the other port). Without one, the host handles
    /// the frame as a packet ([`Self::handle_packet`]).
    pub fn handle_frame(&mut self, now: Millis, port: u8, frame: &[u8]) -> FrameOutcome {
        let mut egress = Vec::new();
        self.handle_frame_into(now, port, frame, &mut egress)
    }

    /// [`Node::handle_frame`], and the frames that left towards the wires (port, bytes) are
    /// appended to `egress`: the card's own forwards and what the slow path sent on through
    /// the card (on simulated wires), or, without a packet path, the frame itself out of the
    /// other port when the host accepted it.
    pub fn handle_frame_into(
        &mut self,
        now: Millis,
        port: u8,
        frame: &[u8],
        egress: &mut Egress,
    ) -> FrameOutcome {
        if !self.port_synced {
            self.sync_port();
        }
        let offered = self.active.packet_path().map(|pp| pp.offer(port, frame));
        match offered {
            Some(Ok(CardOutcome::Forwarded(out, sent))) => {
                self.stats.card_forwarded += 1;
                egress.push((out, sent));
                return FrameOutcome::ForwardedByCard;
            }
            Some(Ok(CardOutcome::Dropped(r))) => {
                self.stats.card_dropped += 1;
                return FrameOutcome::DroppedByCard(r);
            }
            Some(Ok(CardOutcome::Punted(p))) => {
                self.stats.card_punted += 1;
                let v = self.handle_framed(now, &p.frame, Framing::Ethernet);
                if matches!(v, Verdict::Accept { .. }) {
                    let sent = match self.active.packet_path() {
                        Some(pp) => pp.send_out(p.port ^ 1, &p.frame),
                        None => Ok(None),
                    };
                    match sent {
                        Ok(Some(f)) => egress.push(f),
                        Ok(None) => {}
                        Err(e) => self.table_failed(e),
                    }
                }
                return FrameOutcome::Slow(v, p.reason);
            }
            Some(Err(e)) => {
                // A failed card loses nothing: the host serves the frame from the common
                // table's copy until the card is rebuilt.
                self.table_failed(e);
                self.port_synced = false;
            }
            None => {}
        }
        // the host handles the frame without the card: sent on out of the other port if
        // accepted
        let v = self.handle_framed(now, frame, Framing::Ethernet);
        if matches!(v, Verdict::Accept { .. }) {
            egress.push((port ^ 1, frame.to_vec()));
        }
        FrameOutcome::Host(v)
    }

    /// ARP (`pair`: sender and target protocol addresses): passed on by the owner of the pair's
    /// identifier, without rules (the segment's address resolution).
    fn arp(&mut self, a: std::net::IpAddr, b: std::net::IpAddr) -> Verdict {
        let d = self.dist.for_address_pair(a, b);
        if !self.owns(d) {
            self.stats.not_ours += 1;
            return Verdict::NotOurs {
                owner: self.alloc.owner(d),
            };
        }
        Verdict::Accept {
            action: Action::Allow,
            created: false,
        }
    }

    /// Whether the node-specific table is a card with a packet path.
    pub fn has_packet_path(&mut self) -> bool {
        self.active.packet_path().is_some()
    }

    /// The card's packet port counters, when the node-specific table has a packet path.
    pub fn port_counters(&mut self) -> Option<driver::port::PortCounters> {
        let r = self.active.packet_path()?.port_counters();
        match r {
            Ok(c) => Some(c),
            Err(e) => {
                self.table_failed(e);
                None
            }
        }
    }

    /// The first device failure of the node-specific table (a card that failed or has gone
    /// away, [`TableError::Device`]; [`TableError::is_device_gone`] tells the two apart) since
    /// the last call, and forgets it. Every method that changes the node-specific table
    /// records such a failure instead of hiding it, and failures of data-path lookups and hit
    /// scans come from [`NodeSpecificTable::take_device_error`]. The common table still holds
    /// every entry, so the caller rebuilds the card from it once it has a working card again.
    pub fn take_card_error(&mut self) -> Option<TableError> {
        let table = self.active.take_device_error();
        self.card_error.take().or(table)
    }

    /// Records a failure of the node-specific table if it is a device failure (a full table
    /// or an entry it cannot hold is not: those are counted where they happen).
    fn table_failed(&mut self, e: TableError) {
        if e.is_device() && self.card_error.is_none() {
            self.card_error = Some(e);
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.node
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The distributor (identifier hash).
    pub fn distributor(&self) -> &Distributor {
        &self.dist
    }

    /// The current (flipped) allocation.
    pub fn allocation(&self) -> &Allocation {
        &self.alloc
    }

    /// Whether this node owns `d` now.
    pub fn owns(&self, d: DistributionId) -> bool {
        self.owned.get(d.index()).copied().unwrap_or(false)
    }

    /// The common table.
    pub fn common(&self) -> &CommonTable {
        &self.common
    }

    /// The node-specific table.
    pub fn node_table(&self) -> &T {
        &self.active
    }

    /// The node-specific table, mutably (housekeeping such as promotion).
    pub fn node_table_mut(&mut self) -> &mut T {
        &mut self.active
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The entries of one identifier, from the common table (O(k)).
    pub fn select(&self, d: DistributionId) -> impl Iterator<Item = &Entry> + '_ {
        self.common.select(d)
    }

    /// The latest replicated state of an SA.
    pub fn sa_state(&self, spi: u32) -> Option<SaState> {
        self.sa.get(&spi).copied()
    }

    /// Takes the messages queued for sending.
    pub fn drain_outbox(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outbox)
    }

    fn installs(&self, d: DistributionId) -> bool {
        self.cfg.mode == Mode::PriorArt
            || (!self.standby
                && (self.owned.get(d.index()).copied().unwrap_or(false)
                    || self.gaining.get(d.index()).copied().unwrap_or(false)))
    }

    /// Puts the node in standby (`true`) or takes it out (`false`). In standby the node keeps
    /// its common table and follows allocations, but installs nothing in its node-specific
    /// table: a node starting up re-applies its own log, whose last epoch may still give it
    /// identifiers it lost while it was down, and must not fill its card with their entries
    /// while its common table is synced. Leaving standby installs the entries of the
    /// identifiers it owns then; returns how many.
    pub fn set_standby(&mut self, now: Millis, on: bool) -> usize {
        let was = self.standby;
        self.standby = on;
        self.sync_port();
        if on || !was || self.cfg.mode == Mode::PriorArt {
            return 0;
        }
        let count = self.cfg.count;
        count.all().map(|d| self.install_identifier(now, d)).sum()
    }

    /// Installs the common table's entries of `d` that the node-specific table lacks, if this
    /// node installs `d` now (it owns or is gaining it, and is not in standby): one step of
    /// rebuilding a replaced card, an identifier at a time. Returns how many were installed.
    pub fn install_identifier(&mut self, now: Millis, d: DistributionId) -> usize {
        if !self.installs(d) {
            return 0;
        }
        let missing: Vec<Entry> = self
            .common
            .select(d)
            .filter(|e| self.active.get(&e.key).is_none())
            .cloned()
            .collect();
        let (n, failures) = self.install_fresh(now, missing);
        self.stats.install_failures += failures as u64;
        n
    }

    /// Whether the node is in standby ([`Node::set_standby`]).
    pub fn standby(&self) -> bool {
        self.standby
    }

    /// Queues a sequenced event for every node.
    fn broadcast(&mut self, event: Event) {
        self.seq += 1;
        self.send(Destination::All, self.seq, event);
    }

    /// Queues an unsequenced event for one node.
    fn unicast(&mut self, to: NodeId, event: Event) {
        self.send(Destination::Node(to), 0, event);
    }

    /// Queues `event` from this node (its incarnation, sequence number `seq`; 0 is unsequenced)
    /// for `dest`.
    fn send(&mut self, dest: Destination, seq: u64, event: Event) {
        self.stats.messages_out += 1;
        self.outbox.push(Outgoing {
            dest,
            message: Message {
                sender: self.cfg.node,
                incarnation: self.cfg.incarnation,
                seq,
                event,
            },
        });
    }

    fn new_version(&self, key: &FlowKey) -> u32 {
        let live = self.common.get(key).map_or(0, |e| e.version);
        let tomb = self.common.tombstone(key).unwrap_or(0);
        live.max(tomb).saturating_add(1)
    }

    /// Handles one packet (figure 2).
    pub fn handle_packet(&mut self, now: Millis, bytes: &[u8]) -> Verdict {
        self.handle_framed(now, bytes, self.cfg.framing)
    }

    fn handle_framed(&mut self, now: Millis, bytes: &[u8], framing: Framing) -> Verdict {
        self.stats.packets += 1;
        if framing == Framing::Ethernet {
            if let Some((a, b)) = crate::packet::arp_addresses(bytes) {
                // ARP between two hosts of the segment: the owner of their pair passes it on
                return self.arp(a, b);
            }
        }
        let p = match parse_packet(bytes, framing) {
            Ok(p) => p,
            Err(ParseError::Ike(_)) => {
                self.stats.dropped_bad_ike += 1;
                return Verdict::Drop(DropReason::BadIke);
            }
            Err(_) => {
                self.stats.dropped_parse += 1;
                return Verdict::Drop(DropReason::Parse);
            }
        };
        let Some((key, dir, d)) = p.flow(&self.dist) else {
            // Stateless traffic (neighbour discovery, ICMP errors, other protocols): the owner
            // of the address pair applies the rules.
            let d = self.dist.for_address_pair(p.src, p.dst);
            if !self.owns(d) {
                self.stats.not_ours += 1;
                return Verdict::NotOurs {
                    owner: self.alloc.owner(d),
                };
            }
            return match self.cfg.rules.evaluate(&p) {
                Some((_, r)) if r.action.forwards() => Verdict::Accept {
                    action: r.action,
                    created: false,
                },
                _ => {
                    self.stats.dropped_rule += 1;
                    Verdict::Drop(DropReason::Rule)
                }
            };
        };
        if !self.owns(d) {
            self.stats.not_ours += 1;
            return Verdict::NotOurs {
                owner: self.alloc.owner(d),
            };
        }
        let len = bytes.len() as u64;
        if let Some(l) = self.load.get_mut(d.index()) {
            l.packets += 1;
            l.bytes += len;
        }
        if let Some(e) = self.active.slow_lookup(&key) {
            self.stats.hits += 1;
            e.packets += 1;
            e.bytes += len;
            e.last_seen = now;
            let action = e.action;
            let from_initiator = dir == e.initiator_is_lo;
            let old = e.state;
            let next = next_state(old, &p.kind, from_initiator);
            let helper = if e.key.is_tcp() && from_initiator && !p.payload.is_empty() {
                self.cfg
                    .rules
                    .rules
                    .get(usize::from(e.rule))
                    .and_then(|r| r.helper)
            } else {
                None
            };
            let user = e.user;
            match next {
                Some(ConnState::Closed) => {
                    let version = e.version;
                    self.close(now, key, d, version);
                    self.stats.closed += 1;
                }
                Some(s) if s != old => {
                    e.state = s;
                    e.version = e.version.saturating_add(1);
                    let snapshot = e.clone();
                    if card_result_changes(old, s) {
                        // the card starts (or stops) forwarding this connection by itself
                        self.stats.card_rewrites += 1;
                        if let Err(err) = self.active.insert(snapshot.clone()) {
                            self.table_failed(err);
                        }
                    }
                    self.common.upsert_local(snapshot.clone());
                    self.broadcast(Event::Update(snapshot));
                }
                _ => {}
            }
            match helper {
                Some(Helper::Ftp) => self.ftp_helper(now, &p),
                Some(Helper::Session) => self.session_helper(now, &p, user),
                None => {}
            }
            return if action.forwards() {
                Verdict::Accept {
                    action,
                    created: false,
                }
            } else {
                Verdict::Drop(DropReason::EntryAction)
            };
        }
        self.first_packet(now, &p, key, dir, d, len)
    }

    fn first_packet(
        &mut self,
        now: Millis,
        p: &ParsedPacket<'_>,
        key: FlowKey,
        dir: bool,
        d: DistributionId,
        len: u64,
    ) -> Verdict {
        let state = match p.kind {
            PacketKind::Tcp { flags, .. } => {
                if !(flags.syn && !flags.ack && !flags.rst && !flags.fin) {
                    self.stats.dropped_tcp_no_state += 1;
                    return Verdict::Drop(DropReason::TcpNoState);
                }
                ConnState::SynSent
            }
            PacketKind::Udp { .. } => ConnState::UdpUnreplied,
            PacketKind::IcmpEcho { request: true, .. } => ConnState::IcmpRequest,
            PacketKind::Isakmp {
                responder_cookie, ..
            } => {
                let phase1 = key.with_message_id(0);
                if responder_cookie != 0 && self.active.get(&phase1).is_none() {
                    self.stats.dropped_no_state += 1;
                    return Verdict::Drop(DropReason::NoState);
                }
                ConnState::Ike
            }
            PacketKind::Esp { .. } => {
                self.stats.dropped_no_state += 1;
                return Verdict::Drop(DropReason::NoSa);
            }
            PacketKind::IcmpEcho { request: false, .. }
            | PacketKind::IcmpOther
            | PacketKind::Other { .. } => {
                self.stats.dropped_no_state += 1;
                return Verdict::Drop(DropReason::NoState);
            }
        };
        let Some((idx, rule)) = self.cfg.rules.evaluate(p) else {
            self.stats.dropped_rule += 1;
            return Verdict::Drop(DropReason::Rule);
        };
        if !rule.action.forwards() {
            self.stats.dropped_rule += 1;
            return Verdict::Drop(DropReason::Rule);
        }
        let mut e = Entry::new(key, d, state, self.cfg.node);
        e.initiator_is_lo = dir;
        e.action = rule.action;
        e.rule = idx;
        e.timeout_s = rule.timeout_s;
        // an authentication source's binding of the initiator takes precedence over the rule
        e.user = self.users.user_of(now, p.src).or(rule.user);
        e.tunnel = rule.tunnel;
        e.nat = rule.nat;
        e.version = self.new_version(&key);
        e.last_seen = now;
        e.packets = 1;
        e.bytes = len;
        let action = e.action;
        match self.active.insert(e.clone()) {
            Ok(()) => {}
            // A failed card loses nothing: the common table takes the entry and the card is
            // rebuilt from it.
            Err(err) if err.is_device() => self.table_failed(err),
            Err(_) => {
                self.stats.dropped_table_full += 1;
                return Verdict::Drop(DropReason::TableFull);
            }
        }
        self.stats.created += 1;
        self.common.upsert_local(e.clone());
        self.broadcast(Event::Add(e));
        Verdict::Accept {
            action,
            created: true,
        }
    }

    fn close(&mut self, now: Millis, key: FlowKey, d: DistributionId, version: u32) {
        if let Err(e) = self.active.remove(&key) {
            self.table_failed(e);
        }
        self.common.clear(&key, version, now);
        self.broadcast(Event::Clear {
            key,
            dist: d,
            version,
        });
    }

    /// FTP PORT on the control connection: the data connection's entry, created here and
    /// routed to its owner if another node owns its identifier.
    fn ftp_helper(&mut self, now: Millis, p: &ParsedPacket<'_>) {
        let Some((client, port)) = parse_ftp_port(p.payload) else {
            return;
        };
        if p.src.is_ipv6() || IpAddr::V4(client) != p.src {
            return; // Only data connections back to the announcing client.
        }
        let server = Endpoint::new(p.dst, 20);
        let (key, dir) = FlowKey::transport(L4Proto::Tcp, server, Endpoint::new(p.src, port));
        let d = self.dist.for_key(&key);
        if self.common.get(&key).is_some() {
            return;
        }
        let mut e = Entry::new(key, d, ConnState::SynSent, self.cfg.node);
        e.initiator_is_lo = dir;
        e.version = self.new_version(&key);
        e.last_seen = now;
        e.timeout_s = 60;
        self.add_related(e);
    }

    /// A TLS session id (ClientHello) or HTTP cookie (request header) seen on a connection
    /// whose rule has `helper session`: the application session's entry (claim 7), keyed by a
    /// keyed digest of the value, carrying the connection's authenticated user (claim 8), and
    /// routed to the owner of its identifier.
    fn session_helper(&mut self, now: Millis, p: &ParsedPacket<'_>, user: Option<UserId>) {
        let key = if let Some(id) = tls_session_id(p.payload) {
            FlowKey::TlsSession(self.dist.session_digest(id))
        } else if let Some(c) = http_cookie(p.payload) {
            FlowKey::HttpCookie(self.dist.session_digest(c))
        } else {
            return;
        };
        let d = self.dist.for_key(&key);
        if self.common.get(&key).is_some() {
            if let Some(e) = self.active.lookup(&key) {
                e.last_seen = now;
                e.packets += 1;
            }
            return;
        }
        let mut e = Entry::new(key, d, ConnState::Session, self.cfg.node);
        e.user = user;
        e.version = self.new_version(&key);
        e.last_seen = now;
        self.add_related(e);
    }

    /// Adds an entry created here on behalf of another set of packets: into this node's
    /// node-specific table if it owns (or is gaining) the identifier, into the common table,
    /// addressed to the owner if that is another node, and broadcast to all.
    fn add_related(&mut self, e: Entry) {
        let d = e.dist;
        if self.installs(d) {
            self.install(e.clone());
        }
        self.common.upsert_local(e.clone());
        if !self.owns(d) {
            self.stats.related_routed += 1;
            if let Some(owner) = self.alloc.owner(d) {
                self.unicast(owner, Event::Add(e.clone()));
            }
        }
        self.broadcast(Event::Add(e));
    }

    /// The user bindings of claim 8.
    pub fn users(&self) -> &UserTable {
        &self.users
    }

    /// The user bindings, to bind, unbind and apply replicated bindings.
    pub fn users_mut(&mut self) -> &mut UserTable {
        &mut self.users
    }

    /// Clears entries idle beyond their timeout (the card's hit information drives
    /// `last_seen`), replicating the clears. Only the owner expires an entry. Returns how many.
    pub fn expire(&mut self, now: Millis) -> usize {
        self.active.sync_hits(now);
        let t = self.cfg.timeouts;
        let expired: Vec<(FlowKey, DistributionId, u32)> = self
            .active
            .entries()
            .filter(|e| self.owns(e.dist) && now.since(e.last_seen) > t.for_entry(e))
            .map(|e| (e.key, e.dist, e.version))
            .collect();
        for &(k, d, v) in &expired {
            self.close(now, k, d, v);
        }
        self.stats.expired += expired.len() as u64;
        self.common.prune_tombstones(now, t.tombstone_ms);
        self.users.expire(now);
        expired.len()
    }

    /// Installs an ESP SA's entry (key: the SA's source `peer`, destination `dst` and SPI; the
    /// identifier is the peer pair's, recomputed from the key) and replicates it with its
    /// sequence state. Returns the identifier.
    pub fn install_sa(
        &mut self,
        now: Millis,
        peer: IpAddr,
        dst: IpAddr,
        spi: u32,
    ) -> DistributionId {
        let key = FlowKey::Esp {
            src: peer,
            dst,
            spi,
        };
        let d = self.dist.for_key(&key);
        let mut e = Entry::new(key, d, ConnState::EspSa, self.cfg.node);
        e.action = Action::Tunnel;
        e.tunnel = Some(SaRef { spi });
        e.version = self.new_version(&key);
        e.last_seen = now;
        if self.installs(d) {
            self.install(e.clone());
        }
        self.common.upsert_local(e.clone());
        self.broadcast(Event::Add(e));
        self.update_sa(SaState {
            spi,
            dist: d,
            dst,
            outbound_seq: 1,
            replay_top: 0,
            replay_bitmap: 0,
        });
        d
    }

    /// Records and replicates an SA's sequence state.
    pub fn update_sa(&mut self, s: SaState) {
        self.sa.insert(s.spi, s);
        self.broadcast(Event::SaState(s));
    }

    /// The outbound sequence number a node taking over an SA continues from: the replicated
    /// next sequence number plus `margin` (updates sent inside the replication window are
    /// covered by the margin, so a number is never reused: invariant 5). Records the jump and
    /// replicates it. `None` if the SA's state was never replicated here.
    pub fn take_over_sa(&mut self, spi: u32, margin: u64) -> Option<SaState> {
        let mut s = *self.sa.get(&spi)?;
        s.outbound_seq = s.outbound_seq.saturating_add(margin);
        self.update_sa(s);
        Some(s)
    }

    /// Queues digests of the identifiers this node owns (anti-entropy; invariant 3).
    pub fn queue_digest(&mut self) {
        let items = self
            .cfg
            .count
            .all()
            .filter(|&d| self.owns(d))
            .map(|d| (d, self.common.digest(d)))
            .collect();
        let epoch = self.alloc.epoch;
        self.send(Destination::All, 0, Event::Digest { epoch, items });
    }

    fn check_dist(&self, d: DistributionId) -> Result<(), ApplyError> {
        if self.cfg.count.contains(d) {
            Ok(())
        } else {
            Err(ApplyError::BadDist {
                dist: d.0,
                count: self.cfg.count.get(),
            })
        }
    }

    /// Installs entries copied from the common table with fresh idle clocks and counters.
    /// Returns how many were installed and how many the node-specific table refused.
    fn install_fresh(&mut self, now: Millis, entries: Vec<Entry>) -> (usize, usize) {
        let (mut installed, mut failures) = (0, 0);
        let fresh = entries
            .into_iter()
            .map(|mut e| {
                e.last_seen = now;
                e.packets = 0;
                e
            })
            .collect();
        for r in self.active.insert_batch(fresh) {
            match r {
                Ok(()) => installed += 1,
                Err(e) => {
                    self.table_failed(e);
                    failures += 1;
                }
            }
        }
        (installed, failures)
    }

    fn install(&mut self, e: Entry) {
        if let Err(e) = self.active.insert(e) {
            self.table_failed(e);
            self.stats.install_failures += 1;
        }
    }

    /// Applies a message from another node (claims 4-6, 15, 16): the common table is updated;
    /// if this node owns (or is gaining) the identifier, the node-specific table too.
    ///
    /// # Errors
    /// [`ApplyError`] for messages that are invalid here; nothing is changed then.
    pub fn apply_message(&mut self, now: Millis, m: &Message) -> Result<Applied, ApplyError> {
        if m.sender == self.cfg.node {
            return Err(ApplyError::FromSelf(m.sender));
        }
        // Validate before touching anything.
        match &m.event {
            Event::Add(e) | Event::Update(e) => self.check_dist(e.dist)?,
            Event::Clear { dist, .. } | Event::Snapshot { dist, .. } => self.check_dist(*dist)?,
            Event::SaState(s) => self.check_dist(s.dist)?,
            Event::Digest { .. } | Event::RepairRequest { .. } => {}
        }
        let peer = self.peers.entry(m.sender).or_default();
        if m.incarnation < peer.incarnation {
            return Err(ApplyError::OldIncarnation {
                node: m.sender,
                got: m.incarnation,
                current: peer.incarnation,
            });
        }
        if m.incarnation > peer.incarnation {
            *peer = PeerSeq {
                incarnation: m.incarnation,
                ..Default::default()
            };
        }
        if m.seq != 0 && !peer.accept(m.seq, &mut self.stats.seq_gaps) {
            self.stats.duplicates += 1;
            return Ok(Applied::Duplicate);
        }
        self.stats.messages_in += 1;
        let changed = match &m.event {
            Event::Add(e) | Event::Update(e) => {
                let mut e = e.clone();
                e.last_seen = now;
                e.packets = 0;
                e.bytes = 0;
                let owner_holds_same_or_newer = self.owns(e.dist)
                    && self
                        .common
                        .get(&e.key)
                        .is_some_and(|c| c.version >= e.version);
                if owner_holds_same_or_newer {
                    // The owner is the authority on its own entries: an equal version from
                    // elsewhere (a related entry racing the connection's own first packet)
                    // does not overwrite it.
                    return Ok(Applied::Unchanged);
                }
                // Only an entry this node installs needs a second copy (for its node-specific
                // table); the common table takes the first.
                let for_card = self.installs(e.dist).then(|| e.clone());
                match self.common.upsert_remote(e) {
                    Upsert::Inserted | Upsert::Replaced => {
                        if let Some(e) = for_card {
                            self.install(e);
                        }
                        true
                    }
                    Upsert::Stale | Upsert::OutOfRange => false,
                }
            }
            Event::Clear { key, dist, version } => {
                let removed = self.common.clear(key, *version, now).is_some();
                if removed && self.installs(*dist) {
                    if let Err(e) = self.active.remove(key) {
                        self.table_failed(e);
                    }
                }
                removed
            }
            Event::SaState(s) => {
                let cur = self.sa.entry(s.spi).or_insert(*s);
                if s.outbound_seq >= cur.outbound_seq {
                    *cur = *s;
                }
                true
            }
            Event::Snapshot { dist, entries, .. } => {
                if self.owns(*dist) || self.alloc.owner(*dist) != Some(m.sender) {
                    // Only the current owner (in this node's allocation) speaks for an
                    // identifier; a snapshot from anyone else is stale (the next digest
                    // repairs whatever it would have).
                    false
                } else {
                    let mut entries = entries.clone();
                    for e in &mut entries {
                        e.last_seen = now;
                    }
                    self.common.replace_dist(*dist, &entries);
                    if self.installs(*dist) {
                        if let Err(e) = self.active.flush_dist(*dist) {
                            self.table_failed(e);
                        }
                        for e in entries.into_iter().filter(|e| e.dist == *dist) {
                            self.install(e);
                        }
                    }
                    self.stats.snapshots_applied += 1;
                    if let Some(s) = self.synced.get_mut(dist.index()) {
                        *s = true;
                    }
                    true
                }
            }
            Event::Digest { items, .. } => {
                // Items count only for identifiers the sender owns in this node's allocation,
                // whatever epoch the sender was in: an unchanged owner's digest stays valid
                // across reallocations of other identifiers.
                {
                    let mut ids = Vec::new();
                    for (d, g) in items {
                        if !self.cfg.count.contains(*d) || self.alloc.owner(*d) != Some(m.sender) {
                            continue;
                        }
                        if self.common.digest(*d) == *g {
                            self.synced[d.index()] = true;
                        } else {
                            ids.push(*d);
                        }
                    }
                    if !ids.is_empty() {
                        self.stats.repairs_requested += 1;
                        let epoch = self.alloc.epoch;
                        self.unicast(m.sender, Event::RepairRequest { epoch, ids });
                    }
                }
                false
            }
            Event::RepairRequest { ids, .. } => {
                let epoch = self.alloc.epoch;
                for &d in ids {
                    if self.owns(d) {
                        let entries: Vec<Entry> = self.common.select(d).cloned().collect();
                        self.unicast(
                            m.sender,
                            Event::Snapshot {
                                dist: d,
                                epoch,
                                entries,
                            },
                        );
                    }
                }
                false
            }
        };
        Ok(if changed {
            Applied::Changed
        } else {
            Applied::Unchanged
        })
    }

    /// Queues repair requests for every identifier this node does not own, addressed to the
    /// owners (a node that joins with an empty common table fills it this way).
    pub fn request_sync(&mut self) {
        let mut by_owner: std::collections::BTreeMap<NodeId, Vec<DistributionId>> =
            std::collections::BTreeMap::new();
        for d in self.cfg.count.all() {
            if let Some(o) = self.alloc.owner(d).filter(|&o| o != self.cfg.node) {
                by_owner.entry(o).or_default().push(d);
            }
        }
        let epoch = self.alloc.epoch;
        for (o, ids) in by_owner {
            self.stats.repairs_requested += 1;
            self.unicast(o, Event::RepairRequest { epoch, ids });
        }
    }

    /// Packets and bytes this node handled per identifier since the previous call (the input
    /// of load balancing, figure 6A step 604); resets the counts.
    pub fn take_load(&mut self) -> Vec<Load> {
        let n = self.load.len();
        let mut load = std::mem::replace(&mut self.load, vec![Load::default(); n]);
        // frames the card forwarded by itself count where the card counted them
        let owned: Vec<DistributionId> = self.cfg.count.all().filter(|d| self.owns(*d)).collect();
        if let Some(pp) = self.active.packet_path() {
            for d in owned {
                if let Ok((frames, bytes)) = pp.did_counters(d) {
                    let i = d.index();
                    let (f0, b0) = self.card_load[i];
                    self.card_load[i] = (frames, bytes);
                    // the card counts every frame that reached its lookup, punted ones too,
                    // which the host counted already: the load is the larger of the two
                    let l = &mut load[i];
                    l.packets = l.packets.max(u64::from(frames.wrapping_sub(f0)));
                    l.bytes = l.bytes.max(bytes.wrapping_sub(b0));
                }
            }
        }
        load
    }

    /// Whether this node's common table is known to match every owner's: each identifier is
    /// owned here, or its owner's snapshot was applied, or its owner's digest matched. A node
    /// that joins with empty memory should take over identifiers (including in a failover)
    /// only once this holds; until then its allocation weight should stay 0.
    pub fn is_synced(&self) -> bool {
        self.cfg
            .count
            .all()
            .all(|d| self.synced[d.index()] || self.alloc.owner(d).is_none())
    }

    /// How many identifiers are not yet known to match their owner (see [`Self::is_synced`]).
    pub fn unsynced(&self) -> usize {
        self.cfg
            .count
            .all()
            .filter(|&d| !self.synced[d.index()] && self.alloc.owner(d).is_some())
            .count()
    }

    /// Queues snapshots of the identifiers this node owns now and `next` gives to another node,
    /// addressed to the new owners (handover before a planned reallocation).
    pub fn handover_snapshots(&mut self, next: &Allocation) {
        let epoch = self.alloc.epoch;
        for d in self.cfg.count.all() {
            if !self.owns(d) {
                continue;
            }
            if let Some(to) = next.owner(d).filter(|&o| o != self.cfg.node) {
                let entries: Vec<Entry> = self.common.select(d).cloned().collect();
                self.unicast(
                    to,
                    Event::Snapshot {
                        dist: d,
                        epoch,
                        entries,
                    },
                );
            }
        }
    }

    /// Make (figure 6B steps 610-613): selects the entries of newly gained identifiers from the
    /// common table and installs them in the node-specific table, before traffic flips. Events
    /// for gained identifiers arriving meanwhile are installed too.
    ///
    /// # Errors
    /// [`ReallocError`] if the epoch does not advance or the size differs.
    pub fn begin_reallocation(
        &mut self,
        now: Millis,
        next: &Allocation,
    ) -> Result<ReallocReport, ReallocError> {
        self.begin(now, next, true)
    }

    /// [`Self::begin_reallocation`], installing the gained identifiers' entries only when
    /// `install`.
    fn begin(
        &mut self,
        now: Millis,
        next: &Allocation,
        install: bool,
    ) -> Result<ReallocReport, ReallocError> {
        if next.len() != self.cfg.count.len() {
            return Err(ReallocError::BadAllocation {
                got: next.len(),
                count: self.cfg.count.get(),
            });
        }
        if next.epoch <= self.alloc.epoch {
            return Err(ReallocError::OldEpoch {
                got: next.epoch,
                current: self.alloc.epoch,
            });
        }
        let plan = plan(&self.alloc, next, self.cfg.node);
        self.gaining = vec![false; self.cfg.count.len()];
        let mut installed = 0;
        let mut failures = 0;
        for &d in &plan.gained {
            self.gaining[d.index()] = true;
            if !install || self.cfg.mode == Mode::PriorArt || self.standby {
                continue;
            }
            let entries: Vec<Entry> = self.common.select(d).cloned().collect();
            let (n, f) = self.install_fresh(now, entries);
            installed += n;
            failures += f;
        }
        self.stats.install_failures += failures as u64;
        self.pending = Some(Pending {
            alloc: next.clone(),
            plan: plan.clone(),
            installed,
            install_failures: failures,
        });
        Ok(ReallocReport {
            plan,
            installed,
            install_failures: failures,
            ..Default::default()
        })
    }

    /// Break (figure 6B steps 614-616): the new allocation takes effect (traffic flips), and
    /// each lost identifier is flushed from the node-specific table with one command.
    ///
    /// # Errors
    /// [`ReallocError::NotBegun`] unless [`Self::begin_reallocation`] ran for `epoch`.
    pub fn finish_reallocation(&mut self, epoch: Epoch) -> Result<ReallocReport, ReallocError> {
        let p = match self.pending.take() {
            Some(p) if p.alloc.epoch == epoch => p,
            other => {
                self.pending = other;
                return Err(ReallocError::NotBegun(epoch));
            }
        };
        self.alloc = p.alloc;
        for (i, o) in self.alloc.owners.iter().enumerate() {
            self.owned[i] = *o == Some(self.cfg.node);
            if self.owned[i] {
                self.synced[i] = true;
            }
        }
        self.gaining.iter_mut().for_each(|g| *g = false);
        // make before break: the card starts dropping lost identifiers' frames now, before
        // their entries go
        self.sync_port();
        let mut report = ReallocReport {
            plan: p.plan,
            installed: p.installed,
            install_failures: p.install_failures,
            ..Default::default()
        };
        if self.cfg.mode == Mode::NodeSpecific && !report.plan.lost.is_empty() {
            match self.active.flush_dists(&report.plan.lost) {
                Ok((n, cmds)) => {
                    report.flushed = n;
                    report.flushes = cmds;
                }
                Err(e) => self.table_failed(e),
            }
        }
        Ok(report)
    }

    /// Both steps at once.
    ///
    /// # Errors
    /// As [`Self::begin_reallocation`].
    pub fn apply_allocation(
        &mut self,
        now: Millis,
        next: &Allocation,
    ) -> Result<ReallocReport, ReallocError> {
        self.begin_reallocation(now, next)?;
        self.finish_reallocation(next.epoch)
    }

    /// Both steps at once, without installing the gained identifiers' entries: the caller
    /// installs them with [`Self::install_identifier`] (in slices, so that a large takeover
    /// does not stall its loop) and must not let a packet of a gained identifier reach the
    /// node-specific table before.
    ///
    /// # Errors
    /// As [`Self::begin_reallocation`].
    pub fn apply_allocation_uninstalled(
        &mut self,
        now: Millis,
        next: &Allocation,
    ) -> Result<ReallocReport, ReallocError> {
        self.begin(now, next, false)?;
        self.finish_reallocation(next.epoch)
    }

    /// Checks invariant 2 (and its prior-art counterpart): returns the problems found.
    /// Node-specific mode: the node-specific table holds exactly the common table's entries of
    /// the owned identifiers. Prior-art mode: it holds exactly the common table.
    pub fn check_tables(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let want =
            |e: &Entry| self.cfg.mode == Mode::PriorArt || (!self.standby && self.owns(e.dist));
        for e in self.active.entries() {
            problems.extend(self.entry_problem(e, want(e)));
        }
        let expected = self.common.iter().filter(|e| want(e)).count();
        if expected != self.active.len() {
            problems.push(format!(
                "{}: node-specific table holds {} entries, common table has {} for it",
                self.cfg.node,
                self.active.len(),
                expected
            ));
        }
        problems
    }

    /// What is wrong with the node-specific table's entry `e` (`wanted`: whether this node
    /// should hold it).
    fn entry_problem(&self, e: &Entry, wanted: bool) -> Option<String> {
        if !wanted {
            return Some(format!(
                "{}: holds {:?} of {} it does not own",
                self.cfg.node, e.key, e.dist
            ));
        }
        match self.common.get(&e.key) {
            Some(c) if c.same_replicated(e) => None,
            Some(_) => Some(format!(
                "{}: {:?} differs from common",
                self.cfg.node, e.key
            )),
            None => Some(format!("{}: {:?} not in common", self.cfg.node, e.key)),
        }
    }

    /// [`Node::check_tables`] for the entries of one identifier (what checks the tables in
    /// bounded steps uses): the problems found with the node-specific table's entries of `d`,
    /// and how many entries of `d` the common table has for it. The node-specific table is
    /// right when, summed over the identifiers, that count is its length and no problem was
    /// found.
    pub fn check_identifier(&self, d: DistributionId) -> (Vec<String>, usize) {
        let mut problems = Vec::new();
        let wanted = self.cfg.mode == Mode::PriorArt || (!self.standby && self.owns(d));
        for e in self.active.entries_of(d) {
            problems.extend(self.entry_problem(e, wanted));
        }
        let expected = if wanted { self.common.dist_len(d) } else { 0 };
        (problems, expected)
    }
}

/// The next TCP/UDP/ICMP state after a packet; `Some(Closed)` means clear the entry.
fn next_state(s: ConnState, kind: &PacketKind, from_initiator: bool) -> Option<ConnState> {
    use ConnState::*;
    match *kind {
        PacketKind::Tcp { flags, .. } => Some(tcp_next(s, flags, from_initiator)),
        PacketKind::Udp { .. } if s == UdpUnreplied && !from_initiator => Some(UdpReplied),
        PacketKind::IcmpEcho { request: false, .. } if s == IcmpRequest => Some(IcmpReplied),
        _ => None,
    }
}

fn tcp_next(s: ConnState, f: TcpFlags, from_initiator: bool) -> ConnState {
    use ConnState::*;
    if f.rst {
        return Closed;
    }
    match s {
        SynSent if f.syn && f.ack && !from_initiator => SynReceived,
        // The initiator's ACK completes the handshake; once the SYN+ACK was seen, an ACK from
        // either side means it completed (the update may have been lost in a failover).
        SynSent | SynReceived if f.ack && !f.syn && (from_initiator || s == SynReceived) => {
            if f.fin {
                FinWait
            } else {
                Established
            }
        }
        Established if f.fin => FinWait,
        FinWait if f.fin => Closing,
        Closing if f.ack && !f.fin => Closed,
        s => s,
    }
}

/// The session id of a TLS ClientHello (RFC 5246 7.4.1.2), if the payload starts with one
/// carrying a non-empty id.
fn tls_session_id(b: &[u8]) -> Option<&[u8]> {
    // Record header (5), handshake header (4), client_version (2), random (32).
    const AT: usize = 5 + 4 + 2 + 32;
    if *b.first()? != 22 || *b.get(1)? != 3 || *b.get(5)? != 1 {
        return None;
    }
    let n = usize::from(*b.get(AT)?);
    if n == 0 || n > 32 {
        return None;
    }
    b.get(AT + 1..AT + 1 + n)
}

/// The value of the `Cookie` header of an HTTP request in the payload's first 2 KiB.
fn http_cookie(b: &[u8]) -> Option<&[u8]> {
    let head = b.get(..b.len().min(2048))?;
    let methods: [&[u8]; 6] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
    ];
    if !methods.iter().any(|m| head.starts_with(m)) {
        return None;
    }
    const NAME: &[u8] = b"\r\ncookie:";
    let start = head
        .windows(NAME.len())
        .position(|w| w.eq_ignore_ascii_case(NAME))?
        + NAME.len();
    let rest = head.get(start..)?;
    let end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(rest.len());
    let value = rest.get(..end)?.trim_ascii();
    (!value.is_empty()).then_some(value)
}

/// Parses `PORT h1,h2,h3,h4,p1,p2` (RFC 959).
fn parse_ftp_port(payload: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let s = std::str::from_utf8(payload.get(..payload.len().min(64))?).ok()?;
    let rest = s.strip_prefix("PORT ")?.trim_end();
    let mut n = [0u8; 6];
    let mut parts = rest.split(',');
    for slot in &mut n {
        *slot = parts.next()?.trim().parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some((
        Ipv4Addr::new(n[0], n[1], n[2], n[3]),
        u16::from(n[4]) << 8 | u16::from(n[5]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_policy::{even_split, operator_move};
    use crate::node_table::SoftwareTable;
    use crate::packet::build;

    fn cfg(n: u16) -> NodeConfig {
        let mut c = NodeConfig::new(NodeId(n), ClusterSecret::new([3; 16]));
        c.count = IdCount::new(16).unwrap();
        c
    }

    /// Nodes 1 and 2 that both applied the first allocation, in which node 1 owns all 16
    /// identifiers; returns them and that allocation.
    fn pair_owned_by_1() -> (Node<SoftwareTable>, Node<SoftwareTable>, Allocation) {
        let mut n1 = node(1);
        let mut n2 = node(2);
        let all = even_split(IdCount::new(16).unwrap(), &[NodeId(1)]);
        n1.apply_allocation(Millis(0), &all).unwrap();
        n2.apply_allocation(Millis(0), &all).unwrap();
        (n1, n2, all)
    }

    fn node(n: u16) -> Node<SoftwareTable> {
        let c = cfg(n);
        let t = SoftwareTable::new(c.count);
        Node::new(c, t)
    }

    fn a(x: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, x))
    }

    #[test]
    fn tcp_lifecycle_replicates() {
        let (mut n1, mut n2, _) = pair_owned_by_1();
        let c = |f, from_client: bool| {
            if from_client {
                build::tcp(a(1), 5555, a(2), 80, f, b"").unwrap()
            } else {
                build::tcp(a(2), 80, a(1), 5555, f, b"").unwrap()
            }
        };
        // Strict TCP: an ACK without state is dropped.
        assert_eq!(
            n1.handle_packet(Millis(1), &c(TcpFlags::ACK, true)),
            Verdict::Drop(DropReason::TcpNoState)
        );
        assert_eq!(
            n2.handle_packet(Millis(1), &c(TcpFlags::SYN, true)),
            Verdict::NotOurs {
                owner: Some(NodeId(1))
            }
        );
        let steps = [
            (TcpFlags::SYN, true, true),
            (TcpFlags::SYN_ACK, false, false),
            (TcpFlags::ACK, true, false),
            (TcpFlags::FIN_ACK, true, false),
            (TcpFlags::FIN_ACK, false, false),
            (TcpFlags::ACK, true, false),
        ];
        for (f, dir, created) in steps {
            let v = n1.handle_packet(Millis(2), &c(f, dir));
            assert_eq!(
                v,
                Verdict::Accept {
                    action: Action::Allow,
                    created
                }
            );
            for o in n1.drain_outbox() {
                let b = o.message.encode();
                n2.apply_message(Millis(2), &Message::decode(&b).unwrap())
                    .unwrap();
            }
            assert!(n1.check_tables().is_empty(), "{:?}", n1.check_tables());
        }
        assert_eq!(n1.stats().closed, 1);
        assert!(n1.common().is_empty());
        assert!(n2.common().is_empty());
        assert_eq!(n1.stats().dropped_tcp_no_state, 1);
    }

    #[test]
    fn reallocation_make_before_break() {
        let (mut n1, mut n2, a1) = pair_owned_by_1();
        for port in 1000..1100u16 {
            let b = build::udp(a(1), port, a(2), 53, b"q").unwrap();
            n1.handle_packet(Millis(1), &b);
        }
        for o in n1.drain_outbox() {
            n2.apply_message(Millis(1), &o.message).unwrap();
        }
        assert_eq!(n2.node_table().len(), 0);
        assert_eq!(n2.common().len(), 100);
        let moved = [DistributionId(3), DistributionId(7)];
        let a2 = operator_move(&a1, &moved, NodeId(2));
        let r2 = n2.begin_reallocation(Millis(2), &a2).unwrap();
        let expect: usize = moved.iter().map(|&d| n1.select(d).count()).sum();
        assert_eq!(r2.installed, expect);
        assert_eq!(n2.node_table().len(), expect, "installed before the flip");
        n2.finish_reallocation(a2.epoch).unwrap();
        let r1 = n1.apply_allocation(Millis(2), &a2).unwrap();
        assert_eq!(r1.flushes, 2);
        let load = n1.take_load();
        assert_eq!(load.iter().map(|l| l.packets).sum::<u64>(), 100);
        assert!(
            load.iter().all(|l| l.bytes >= 20 * l.packets),
            "IP packets of 20 bytes or more"
        );
        assert_eq!(n1.take_load().iter().map(|l| l.packets).sum::<u64>(), 0);
        assert_eq!(r1.flushed, expect);
        assert!(n1.check_tables().is_empty());
        assert!(n2.check_tables().is_empty());
        assert!(n2.begin_reallocation(Millis(3), &a2).is_err());
        assert!(n2.finish_reallocation(Epoch(99)).is_err());
    }

    /// A node in standby follows allocations and fills its common table but installs nothing;
    /// leaving standby installs exactly the entries of the identifiers it owns then.
    #[test]
    fn standby_installs_nothing_until_it_ends() {
        let mut n1 = node(1);
        let mut n2 = node(2);
        n2.set_standby(Millis(0), true);
        let c = IdCount::new(16).unwrap();
        let a1 = even_split(c, &[NodeId(1)]);
        n1.apply_allocation(Millis(0), &a1).unwrap();
        n2.apply_allocation(Millis(0), &a1).unwrap();
        let flows = |n1: &mut Node<SoftwareTable>, n2: &mut Node<SoftwareTable>, ports| {
            for port in ports {
                let b = build::udp(a(1), port, a(2), 53, b"q").unwrap();
                n1.handle_packet(Millis(1), &b);
            }
            for o in n1.drain_outbox() {
                n2.apply_message(Millis(1), &o.message).unwrap();
            }
        };
        flows(&mut n1, &mut n2, 1000..1100u16);
        // node 2 gains identifiers (the stale epoch a restarted node re-applies from its own
        // log), then more entries of them arrive: in standby, none is installed
        let a2 = operator_move(&a1, &a1.ids_of(NodeId(1))[..8], NodeId(2));
        n2.apply_allocation(Millis(2), &a2).unwrap();
        flows(&mut n1, &mut n2, 1100..1200u16);
        let want: usize = a2
            .ids_of(NodeId(2))
            .iter()
            .map(|&d| n2.select(d).count())
            .sum();
        assert!(want > 0, "node 2 owns some of the entries");
        assert_eq!(n2.common().len(), 200);
        assert_eq!(n2.node_table().len(), 0, "standby: nothing installed");
        assert!(n2.check_tables().is_empty(), "{:?}", n2.check_tables());
        // leaving standby installs exactly the owned identifiers' entries
        assert_eq!(n2.set_standby(Millis(3), false), want);
        assert_eq!(n2.node_table().len(), want);
        assert!(n2.check_tables().is_empty(), "{:?}", n2.check_tables());
        // and leaving it again changes nothing
        assert_eq!(n2.set_standby(Millis(4), false), 0);
    }

    #[test]
    fn ftp_port_routes_related_entry() {
        let mut c = cfg(1);
        c.rules = RuleSet::parse("allow tcp dport 21 helper ftp\nallow any").unwrap();
        let mut n1 = Node::new(c.clone(), SoftwareTable::new(c.count));
        let mut n2 = node(2);
        let c16 = IdCount::new(16).unwrap();
        let mut al = even_split(c16, &[NodeId(1)]);
        // Find the data connection's identifier and give it to node 2.
        let (dk, _) = FlowKey::transport(
            L4Proto::Tcp,
            Endpoint::new(a(2), 20),
            Endpoint::new(a(1), 0x1234),
        );
        let dd = n1.distributor().for_key(&dk);
        let ctrl = FlowKey::transport(
            L4Proto::Tcp,
            Endpoint::new(a(1), 4000),
            Endpoint::new(a(2), 21),
        )
        .0;
        let cd = n1.distributor().for_key(&ctrl);
        if dd == cd {
            return; // Same identifier: nothing to route (depends on the secret).
        }
        al.owners[dd.index()] = Some(NodeId(2));
        n1.apply_allocation(Millis(0), &al).unwrap();
        n2.apply_allocation(Millis(0), &al).unwrap();
        let seg = |f, p: &[u8], fc| {
            if fc {
                build::tcp(a(1), 4000, a(2), 21, f, p).unwrap()
            } else {
                build::tcp(a(2), 21, a(1), 4000, f, p).unwrap()
            }
        };
        n1.handle_packet(Millis(1), &seg(TcpFlags::SYN, b"", true));
        n1.handle_packet(Millis(1), &seg(TcpFlags::SYN_ACK, b"", false));
        n1.handle_packet(
            Millis(1),
            &seg(TcpFlags::ACK, b"PORT 10,0,0,1,18,52\r\n", true),
        );
        assert_eq!(n1.stats().related_routed, 1);
        let out = n1.drain_outbox();
        assert!(out
            .iter()
            .any(|o| o.dest == Destination::Node(NodeId(2))
                && matches!(o.message.event, Event::Add(_))));
        for o in out {
            n2.apply_message(Millis(1), &o.message).unwrap();
        }
        assert!(n2.node_table().get(&dk).is_some(), "owner installed it");
        assert!(n1.node_table().get(&dk).is_none());
        let syn = build::tcp(a(2), 20, a(1), 0x1234, TcpFlags::SYN, b"").unwrap();
        assert!(matches!(
            n2.handle_packet(Millis(2), &syn),
            Verdict::Accept { created: false, .. }
        ));
    }

    #[test]
    fn idle_expiry_and_anti_entropy() {
        let (mut n1, mut n2, _) = pair_owned_by_1();
        for port in 1..50u16 {
            n1.handle_packet(Millis(0), &build::udp(a(1), port, a(2), 53, b"").unwrap());
        }
        // Lose every event: n2 learns nothing.
        let lost = n1.drain_outbox();
        assert_eq!(lost.len(), 49);
        n1.queue_digest();
        let mut rounds = 0;
        loop {
            let out1 = n1.drain_outbox();
            let mut out2 = Vec::new();
            for o in &out1 {
                n2.apply_message(Millis(1), &o.message).unwrap();
            }
            out2.extend(n2.drain_outbox());
            if out2.is_empty() {
                break;
            }
            for o in &out2 {
                n1.apply_message(Millis(1), &o.message).unwrap();
            }
            rounds += 1;
            assert!(rounds < 4);
        }
        assert_eq!(n2.common().len(), 49);
        assert!(n2.stats().snapshots_applied > 0);
        // Idle timeout.
        assert_eq!(n1.expire(Millis(1000)), 0);
        assert_eq!(n1.expire(Millis(61_001)), 49);
        for o in n1.drain_outbox() {
            n2.apply_message(Millis(61_001), &o.message).unwrap();
        }
        assert!(n2.common().is_empty());
        assert_eq!(n2.stats().seq_gaps, 49);
    }

    #[test]
    fn bad_messages_change_nothing() {
        let mut n2 = node(2);
        let mut e = Entry::new(
            FlowKey::isakmp(a(1), a(2), 1, 0).0,
            DistributionId(999),
            ConnState::Ike,
            NodeId(1),
        );
        let m = |ev| Message {
            sender: NodeId(1),
            incarnation: 5,
            seq: 1,
            event: ev,
        };
        assert!(matches!(
            n2.apply_message(Millis(0), &m(Event::Add(e.clone()))),
            Err(ApplyError::BadDist { .. })
        ));
        e.dist = DistributionId(1);
        assert_eq!(
            n2.apply_message(Millis(0), &m(Event::Add(e.clone()))),
            Ok(Applied::Changed)
        );
        assert_eq!(
            n2.apply_message(Millis(0), &m(Event::Add(e.clone()))),
            Ok(Applied::Duplicate)
        );
        let mut old = m(Event::Add(e.clone()));
        old.incarnation = 4;
        assert!(matches!(
            n2.apply_message(Millis(0), &old),
            Err(ApplyError::OldIncarnation { .. })
        ));
        // A sequence number near the end of the range (a hostile or broken sender) is counted,
        // never overflows.
        let mut far = m(Event::Add(e.clone()));
        far.seq = u64::MAX;
        assert!(n2.apply_message(Millis(0), &far).is_ok());
        let mut own = m(Event::Add(e));
        own.sender = NodeId(2);
        assert!(n2.apply_message(Millis(0), &own).is_err());
        assert_eq!(n2.common().len(), 1);
    }

    #[test]
    fn sa_state_replicates_and_takeover_skips_ahead() {
        let (mut n1, mut n2, _) = pair_owned_by_1();
        let d = n1.install_sa(Millis(0), a(9), a(1), 0x1000);
        let mut s = n1.sa_state(0x1000).unwrap();
        s.outbound_seq = 5000;
        n1.update_sa(s);
        for o in n1.drain_outbox() {
            n2.apply_message(Millis(1), &Message::decode(&o.message.encode()).unwrap())
                .unwrap();
        }
        assert_eq!(n2.common().dist_len(d), 1);
        let t = n2.take_over_sa(0x1000, 1 << 16).unwrap();
        assert_eq!(t.outbound_seq, 5000 + (1 << 16));
        assert!(n2.take_over_sa(0x2000, 1).is_none());
        // ESP of the tunnel hits the SA entry on the owner; the IKE traffic shares the id.
        let esp = build::udp(a(9), 4500, a(1), 4500, &0x1000u32.to_be_bytes()).unwrap();
        assert_eq!(
            n1.handle_packet(Millis(2), &esp),
            Verdict::Accept {
                action: Action::Tunnel,
                created: false
            }
        );
        assert_eq!(n1.distributor().for_ipsec_peers(a(1), a(9)), d);
    }

    #[test]
    fn invalid_ike_headers_are_dropped_by_name_and_make_no_entry() {
        let (mut n1, _, _) = pair_owned_by_1();
        let good = build::ike(0x77, 0, 0);
        let mut bad_version = good.clone();
        bad_version[17] = 0x30;
        let mut bad_len = good.clone();
        bad_len[27] = 40;
        let mut bad_exchange = good.clone();
        bad_exchange[18] = 1; // an IKEv1 exchange in an IKEv2 header
        for (i, bad) in [&bad_version, &bad_len, &bad_exchange, &good[..20].to_vec()]
            .into_iter()
            .enumerate()
        {
            let p = build::udp(a(1), 500, a(9), 500, bad).unwrap();
            assert_eq!(
                n1.handle_packet(Millis(1), &p),
                Verdict::Drop(DropReason::BadIke)
            );
            assert_eq!(n1.stats().dropped_bad_ike, i as u64 + 1);
        }
        assert_eq!(n1.common().len(), 0, "no entry for an invalid header");
        assert_eq!(n1.stats().created, 0);
        assert_eq!(n1.stats().dropped_parse, 0);
        let p = build::udp(a(1), 500, a(9), 500, &good).unwrap();
        assert!(matches!(
            n1.handle_packet(Millis(2), &p),
            Verdict::Accept { created: true, .. }
        ));
        assert_eq!(n1.common().len(), 1);
    }

    #[test]
    fn session_helper_tracks_tls_and_http_sessions() {
        let mut c = cfg(1);
        c.rules = RuleSet::parse("allow tcp dport 443 helper session user 77").unwrap();
        let mut n1 = Node::new(c.clone(), SoftwareTable::new(c.count));
        let al = even_split(IdCount::new(16).unwrap(), &[NodeId(1)]);
        n1.apply_allocation(Millis(0), &al).unwrap();
        let seg = |f, p: &[u8]| build::tcp(a(1), 4000, a(2), 443, f, p).unwrap();
        n1.handle_packet(Millis(1), &seg(TcpFlags::SYN, b""));
        let mut hello = vec![22, 3, 1, 0, 80, 1, 0, 0, 76, 3, 3];
        hello.extend_from_slice(&[0xaa; 32]);
        hello.push(4);
        hello.extend_from_slice(b"SESS");
        n1.handle_packet(Millis(2), &seg(TcpFlags::ACK, &hello));
        let http = b"GET / HTTP/1.1\r\nHost: x\r\ncOOkie:  id=42 \r\n\r\n";
        n1.handle_packet(Millis(3), &seg(TcpFlags::ACK, http));
        let tls = FlowKey::TlsSession(n1.distributor().session_digest(b"SESS"));
        let web = FlowKey::HttpCookie(n1.distributor().session_digest(b"id=42"));
        for k in [tls, web] {
            let e = n1.common().get(&k).expect("session entry");
            assert_eq!(e.state, ConnState::Session);
            assert_eq!(e.user, Some(UserId(77)));
            assert!(n1.node_table().get(&k).is_some());
        }
        assert!(n1.check_tables().is_empty());
        // the session entries' identifiers recompute from their digests (claim 12)
        let ids = n1.check_identifiers();
        assert_eq!(ids.common, 3, "the connection and its two sessions");
        assert!(ids.is_consistent(), "{ids:?}");
        assert_eq!(tls_session_id(&hello[..40]), None);
        assert_eq!(http_cookie(b"HTTP/1.1 200 OK\r\nCookie: x\r\n"), None);
        assert_eq!(http_cookie(b"GET / HTTP/1.1\r\nCookie:\r\n"), None);
    }

    #[test]
    fn joining_node_syncs_before_taking_identifiers() {
        let c16 = IdCount::new(16).unwrap();
        let mut n1 = node(1);
        let al = even_split(c16, &[NodeId(1)]);
        n1.apply_allocation(Millis(0), &al).unwrap();
        assert!(n1.is_synced(), "an owner of everything is in sync");
        for port in 1..40u16 {
            n1.handle_packet(Millis(0), &build::udp(a(1), port, a(2), 53, b"").unwrap());
        }
        n1.drain_outbox();
        let mut n2 = node(2);
        n2.apply_allocation(Millis(1), &al).unwrap();
        assert_eq!(n2.unsynced(), 16);
        n2.request_sync();
        for o in n2.drain_outbox() {
            n1.apply_message(Millis(1), &o.message).unwrap();
        }
        for o in n1.drain_outbox() {
            n2.apply_message(Millis(1), &o.message).unwrap();
        }
        assert!(n2.is_synced());
        assert_eq!(n2.common().len(), 39);
    }

    #[test]
    fn ftp_port_parser() {
        let cases: [(&[u8], _); 6] = [
            (
                b"PORT 192,168,1,2,4,1\r\n",
                Some((Ipv4Addr::new(192, 168, 1, 2), 1025)),
            ),
            (b"PORT 1,2,3", None),
            (b"PORT 1,2,3,4,5,6,7", None),
            (b"PORT 1,2,3,4,5,300", None),
            (b"port", None),
            (b"\xff", None),
        ];
        for (command, parsed) in cases {
            assert_eq!(parse_ftp_port(command), parsed, "{command:?}");
        }
    }
}
