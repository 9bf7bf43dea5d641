//! The control socket's protocol, typed: one [`Request`] per line from a client, one
//! [`Response`] per line back (JSON lines; the wire format is described in `docs/clusterd.md`).
//!
//! A request is a JSON object whose `"cmd"` string names the command, with the command's
//! fields beside it: `{"cmd":"move","ids":[1,2],"to":3}`. An answer is an object with
//! `"ok": true` and the command's fields, or `"ok": false` and an `"error"` message.
//! The node, `clusterd ctl`, `hwctl --device unix:PATH`, the lab's cluster launcher and the
//! benchmark all speak it through these types.

use std::fmt;
use std::net::IpAddr;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::filter::Filter;
use crate::regs_report::RegsBlockOut;

/// Key material in hex as it crosses the control socket (`sa_add`'s `"key"`). Zeroized on
/// drop; its `Debug` shows no digit of it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretHex(Zeroizing<String>);

impl SecretHex {
    /// Wraps hex digits.
    pub fn new(hex: impl Into<String>) -> Self {
        Self(Zeroizing::new(hex.into()))
    }

    /// The hex digits (for decoding into a zeroizing buffer; never log them).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHex(<redacted>)")
    }
}

impl Serialize for SecretHex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretHex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Digits;
        impl serde::de::Visitor<'_> for Digits {
            type Value = SecretHex;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("key material as a string of hex digits")
            }
            // the request line itself (wiped by the control path): copied once, into a
            // zeroizing string
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &str) -> Result<SecretHex, E> {
                Ok(SecretHex::new(v))
            }
            // a copy the parser made: taken over, so it is wiped with the key
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretHex, E> {
                Ok(SecretHex(Zeroizing::new(v)))
            }
            // a transient copy in the parser's own buffer, which nothing wipes
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretHex, E> {
                Err(E::custom(
                    "key material is plain hex digits, without escapes",
                ))
            }
        }
        d.deserialize_str(Digits)
    }
}

/// The direction of an SA (`sa_add`'s `"dir"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaDir {
    /// The cluster seals with the SA.
    #[serde(rename = "out")]
    Out,
    /// The cluster opens with the SA.
    #[serde(rename = "in")]
    In,
}

/// One control request. Fields are declared in alphabetical order so that a request
/// serializes to the same bytes the clients sent before this type existed (they built
/// `serde_json::Value` objects, whose keys are sorted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The node's full status report.
    Status,
    /// The node's view of the allocation (owner per identifier).
    Allocation,
    /// Per identifier: owner, common and card entry counts, common-table digest.
    Counts,
    /// Operator (leader only): move identifiers `ids` to node `to` (also read as `node`).
    Move {
        /// Identifiers to move; those out of range are left out.
        #[serde(default)]
        ids: Vec<u16>,
        /// The member that gets them.
        #[serde(default, alias = "node", skip_serializing_if = "Option::is_none")]
        to: Option<u16>,
    },
    /// Operator (leader only): take node `node` (also read as `to`) out of the allocation.
    Drain {
        /// The member to drain.
        #[serde(default, alias = "to", skip_serializing_if = "Option::is_none")]
        node: Option<u16>,
    },
    /// Operator (leader only): let a drained node `node` (also read as `to`) own again.
    Undrain {
        /// The member to undrain.
        #[serde(default, alias = "to", skip_serializing_if = "Option::is_none")]
        node: Option<u16>,
    },
    /// Operator (leader only): recompute a balanced allocation.
    Rebalance,
    /// Ask every replication peer for a full resync.
    Resync,
    /// The node-specific table's entries (at most `limit`, 10 000 by default).
    Dump {
        /// Most entries to list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// SA state (never keys).
    Sas,
    /// Install an SA (one direction of a tunnel) and replicate its key.
    SaAdd {
        /// `out` (the cluster seals with the SA) or `in` (it opens with it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<SaDir>,
        /// Destination address of the tunnel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<IpAddr>,
        /// The SA's own key and salt: 72 hex digits (AES-256 key, then the 4-byte salt) or 40
        /// (AES-128); a bare key of 64 or 32 digits gets a salt derived from the SPI.
        #[serde(default)]
        key: SecretHex,
        /// The tunnel's peer address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<IpAddr>,
        /// The SPI, non-zero.
        #[serde(default)]
        spi: u32,
    },
    /// Test helper: move an SA's outbound sequence number and replay top forward.
    SaAdvance {
        /// New outbound sequence number (unchanged when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outbound_seq: Option<u64>,
        /// New replay window top (unchanged when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replay_top: Option<u64>,
        /// The SA.
        #[serde(default)]
        spi: u32,
    },
    /// Seal `count` packets (1 by default, at most 10 000) on the owner's outbound SA.
    EspSend {
        /// Packets to seal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        /// The SA.
        #[serde(default)]
        spi: u32,
    },
    /// Open inbound ESP packets (hex) on the owner's inbound SA.
    EspRecv {
        /// The packets, hex; those that are not hex are left out.
        #[serde(default)]
        packets: Vec<String>,
        /// The SA.
        #[serde(default)]
        spi: u32,
    },
    /// The state core's table consistency check.
    Check,
    /// Test helper: cut this node off from `peers`, and drop `loss` (0..=1) of what it sends.
    Partition {
        /// Share of sent frames to drop (out of range or absent: none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss: Option<f64>,
        /// Peers whose frames are dropped both ways (empty: heal).
        #[serde(default)]
        peers: Vec<u16>,
    },
    /// The allocations this node applied, with timings.
    Applied,
    /// Benchmark helper: feed the handshakes of `flows` generated connections, numbered from
    /// `first`, through packet handling.
    Synthesize {
        /// The first connection's number (0 by default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first: Option<u64>,
        /// How many connections (0 by default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flows: Option<u64>,
    },
    /// The node-specific entries with keys in the card's layout (`hwctl --device unix:`).
    CardDump {
        /// Only entries of this distribution identifier.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        did: Option<u16>,
    },
    /// The card's registers, read (`hwctl --device unix: regs`).
    CardRegs,
    /// Leave the cluster gracefully (what SIGTERM does): answered at once; the node hands
    /// every identifier over in planned moves, then exits.
    Leave,
    /// Stop the node at once (its identifiers fail over).
    Stop,
    /// A table's entries that pass `filter` (at most `limit`), streamed: a header line
    /// ([`StreamHeader`]), one [`ViewEntry`] line each, an end line ([`StreamEnd`]).
    TableDump {
        /// Only the entries that pass it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<Filter>,
        /// Most entries to send (all by default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
        /// `common` (the default) or `card` (the node-specific table).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<TableName>,
    },
    /// How many of a table's entries pass `filter` ([`TableCountReply`]).
    TableCount {
        /// Only the entries that pass it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<Filter>,
        /// `common` (the default) or `card`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<TableName>,
    },
    /// The entry of one key, written as the views print it
    /// (`tcp 198.18.0.1:1234 -> 198.18.1.1:80`; either direction).
    TableGet {
        /// The key.
        #[serde(default)]
        key: String,
        /// `common` (the default) or `card`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<TableName>,
    },
    /// An authentication source: `addr`'s new connections belong to `user` for `lifetime_s`
    /// seconds (1 to 7 days), on every member (claim 8); answered with the binding.
    UserBind {
        /// The address whose connections the user starts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<IpAddr>,
        /// Seconds the binding lasts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lifetime_s: Option<u64>,
        /// The user's identifier.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<u32>,
    },
    /// An authentication source: `addr`'s binding ends, on every member.
    UserUnbind {
        /// The bound address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<IpAddr>,
    },
    /// The live user bindings ([`UsersReply`]).
    Users,
    /// Follow the node's changes, streamed: a header line, then one event line (`docs/vocabulary.md`)
    /// each as they happen (entries created, updated, removed, moved on or off this node's
    /// card; epochs applied) until the client goes away.
    Events {
        /// Only entry events of entries that pass it (epoch and lost-events lines always).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<Filter>,
    },
}

/// The tables a view reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableName {
    /// The common table: every entry of the cluster this node holds.
    #[default]
    Common,
    /// The node-specific table: what this node's card (and its software overflow) holds.
    Card,
}

impl TableName {
    /// The name on the wire and in the views.
    pub fn name(self) -> &'static str {
        match self {
            TableName::Common => "common",
            TableName::Card => "card",
        }
    }
}

impl std::str::FromStr for TableName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "common" => Ok(Self::Common),
            "card" => Ok(Self::Card),
            _ => Err(format!(
                "{s:?} is not a table: give common (every entry the node holds) or card (its \
                 node-specific table)"
            )),
        }
    }
}

/// One entry as the views show it (`clusterd ctl dump|get`, names in `docs/vocabulary.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewEntry {
    /// What it does with the packets: allow, tunnel, drop, reject.
    pub action: String,
    /// The node that created it.
    pub creator: u16,
    /// Its distribution identifier.
    pub did: u16,
    /// Destination port (none for keys without ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// Destination address (none for keys without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// The key as the views print it.
    pub key: String,
    /// Packets that hit it on this node.
    pub packets: u64,
    /// The IP protocol name (tcp, udp, icmp, icmp6, esp, isakmp; none for sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// The SPI (`0x` and 8 hex digits) of an ESP key or a tunnelled entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi: Option<String>,
    /// Source port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    /// Source (initiator) address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// The state kind (established, syn-sent, udp-replied, ...).
    pub state: String,
    /// The table it was read from: common or card.
    pub table: String,
    /// Its version.
    pub version: u32,
    /// Where a node-specific entry is: card or overflow (host memory); none in the common
    /// table.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// The first line of a streamed answer (`table_dump`, `events`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamHeader {
    /// The table's entries (table_dump), or the common table's (events).
    pub len: usize,
    /// The node.
    pub node: u16,
    /// What follows: `table_dump` or `events`.
    pub stream: String,
    /// The table (table_dump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// The last line of a `table_dump` stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamEnd {
    /// Always true: the stream ends here.
    pub end: bool,
    /// Entries sent.
    pub entries: u64,
    /// Entries read (passed the filter or not).
    pub scanned: u64,
    /// Milliseconds the dump took on the node.
    pub took_ms: u64,
}

/// `table_count`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableCountReply {
    /// Entries that passed the filter.
    pub count: u64,
    /// Entries in the table.
    pub len: usize,
    /// The table.
    pub table: String,
}

/// `table_get`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableGetReply {
    /// The entry.
    pub entry: ViewEntry,
}

/// The body of a streamed answer inside the node: the header, and the lines (each ending in
/// a newline) the node sends as it goes; the stream ends when the sender is dropped.
#[derive(Clone)]
pub struct StreamBody {
    /// The first line.
    pub header: StreamHeader,
    /// The lines, taken once by the connection that writes them.
    pub lines: std::sync::Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<String>>>>,
}

impl fmt::Debug for StreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamBody")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Every command name [`Request`] accepts, in the order the node lists them.
pub const COMMANDS: [&str; 29] = [
    "status",
    "allocation",
    "counts",
    "move",
    "drain",
    "undrain",
    "rebalance",
    "resync",
    "dump",
    "sas",
    "sa_add",
    "sa_advance",
    "esp_send",
    "esp_recv",
    "check",
    "partition",
    "applied",
    "synthesize",
    "card_dump",
    "card_regs",
    "leave",
    "stop",
    "table_dump",
    "table_count",
    "table_get",
    "user_bind",
    "user_unbind",
    "users",
    "events",
];

/// The part of a request line read to explain a refusal (no other field is kept).
#[derive(Deserialize)]
struct Head {
    cmd: Option<Value>,
}

impl Request {
    /// The command name, as on the wire.
    pub fn cmd(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Allocation => "allocation",
            Self::Counts => "counts",
            Self::Move { .. } => "move",
            Self::Drain { .. } => "drain",
            Self::Undrain { .. } => "undrain",
            Self::Rebalance => "rebalance",
            Self::Resync => "resync",
            Self::Dump { .. } => "dump",
            Self::Sas => "sas",
            Self::SaAdd { .. } => "sa_add",
            Self::SaAdvance { .. } => "sa_advance",
            Self::EspSend { .. } => "esp_send",
            Self::EspRecv { .. } => "esp_recv",
            Self::Check => "check",
            Self::Partition { .. } => "partition",
            Self::Applied => "applied",
            Self::Synthesize { .. } => "synthesize",
            Self::CardDump { .. } => "card_dump",
            Self::CardRegs => "card_regs",
            Self::Leave => "leave",
            Self::Stop => "stop",
            Self::TableDump { .. } => "table_dump",
            Self::TableCount { .. } => "table_count",
            Self::TableGet { .. } => "table_get",
            Self::UserBind { .. } => "user_bind",
            Self::UserUnbind { .. } => "user_unbind",
            Self::Users => "users",
            Self::Events { .. } => "events",
        }
    }

    /// Parses one request line.
    ///
    /// # Errors
    /// The refusal to answer: not JSON, not an object with a `"cmd"` string, an unknown
    /// command, or fields of the wrong type (the last two list the accepted commands).
    pub fn parse(line: &str) -> Result<Self, ErrorReply> {
        let line = line.trim();
        if line.contains('\\') && line.contains("sa_add") {
            // An escaped string is unescaped into the JSON parser's scratch buffer, which is
            // never wiped: a line that may carry key material has no escapes at all (hex
            // digits, addresses and names never need one), so every string of it is read
            // in place.
            return Err(ErrorReply::new(
                "sa_add: no escaped characters (\\) in the request: key material is plain hex \
                 digits and is read without copies",
            ));
        }
        match serde_json::from_str::<Self>(line) {
            Ok(req) => Ok(req),
            Err(e) => Err(Self::refusal(line, &e)),
        }
    }

    /// Why `line` is not a request (`e` is the typed parser's error). Reads only the
    /// command name, so no other field (a key) is copied.
    fn refusal(line: &str, e: &serde_json::Error) -> ErrorReply {
        if let Err(syntax) = serde_json::from_str::<IgnoredAny>(line) {
            return ErrorReply::new(format!("not JSON: {syntax}"));
        }
        let cmd = match serde_json::from_str::<Head>(line) {
            Ok(Head {
                cmd: Some(Value::String(c)),
            }) => c,
            Ok(Head { cmd: None }) if line.starts_with('{') => {
                return ErrorReply::new("missing \"cmd\"");
            }
            _ => {
                return ErrorReply::new("a request is a JSON object with a \"cmd\" string");
            }
        };
        let error = if COMMANDS.contains(&cmd.as_str()) {
            format!("bad fields for {cmd:?}: {e}")
        } else {
            format!("unknown command {cmd:?}")
        };
        ErrorReply {
            commands: Some(COMMANDS.iter().map(|c| (*c).to_owned()).collect()),
            ..ErrorReply::new(error)
        }
    }

    /// Reads the answer `v` to this request into its typed [`Response`].
    ///
    /// # Errors
    /// An answer whose fields do not have this command's shape.
    pub fn response(&self, v: Value) -> Result<Response, serde_json::Error> {
        use serde_json::from_value as de;
        if v.get("ok").and_then(Value::as_bool) != Some(true) {
            let mut e: ErrorReply = de(v).unwrap_or_default();
            if e.error.is_empty() {
                e.error = "no error message".to_owned();
            }
            return Ok(Response::Error(e));
        }
        Ok(match self {
            Self::Status => Response::Status(without_ok(v)),
            Self::Allocation => Response::Allocation(de(v)?),
            Self::Counts => Response::Counts(de(v)?),
            Self::Move { .. } | Self::Drain { .. } | Self::Undrain { .. } | Self::Rebalance => {
                Response::Queued
            }
            Self::Resync => Response::Resync(de(v)?),
            Self::Dump { .. } => Response::Dump(de(v)?),
            Self::Sas => Response::Sas(de(v)?),
            Self::SaAdd { .. } => Response::SaAdded(de(v)?),
            Self::EspSend { .. } => Response::EspSent(de(v)?),
            Self::EspRecv { .. } => Response::EspReceived(de(v)?),
            Self::Check => Response::Check(de(v)?),
            Self::Applied => Response::Applied(de(v)?),
            Self::Synthesize { .. } => Response::Synthesized(de(v)?),
            Self::CardDump { .. } => Response::CardDump(de(v)?),
            Self::CardRegs => Response::CardRegs(de(v)?),
            Self::SaAdvance { .. } | Self::Partition { .. } | Self::Leave | Self::Stop => {
                Response::Done
            }
            Self::TableDump { .. } | Self::Events { .. } => Response::StreamStart(de(v)?),
            Self::TableCount { .. } => Response::TableCount(de(v)?),
            Self::TableGet { .. } => Response::TableGet(de(v)?),
            Self::UserBind { .. } => Response::UserBound(de(v)?),
            Self::UserUnbind { .. } => Response::Done,
            Self::Users => Response::Users(de(v)?),
        })
    }
}

fn without_ok(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("ok");
    }
    v
}

/// A refusal: `{"ok": false, "error": ...}` with what helps the client go on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong, for a person.
    #[serde(default)]
    pub error: String,
    /// The card backend (a failed `card_regs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The accepted commands (unknown command, bad fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<String>>,
    /// The leader, when known (an operator command sent to another node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u16>,
    /// The SA's owner, when known (an ESP command sent to another node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u16>,
}

impl ErrorReply {
    /// A refusal with only a message.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            ..Self::default()
        }
    }
}

/// `allocation`: the node's allocation and the agreed one's epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocationReply {
    /// The epoch of the agreed (Raft-committed) allocation.
    pub agreed_epoch: u64,
    /// The epoch of the allocation the node applies.
    pub epoch: u64,
    /// Owner per identifier (index = identifier).
    pub owners: Vec<Option<u16>>,
}

/// `counts`: one row per identifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CountsReply {
    /// The rows, by identifier.
    pub ids: Vec<IdentifierCount>,
}

/// One identifier in [`CountsReply`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentifierCount {
    /// Entries of it in the node-specific table.
    pub card: usize,
    /// Entries of it in the common table.
    pub common: usize,
    /// The common table's digest of it (16 hex digits).
    pub digest: String,
    /// The identifier.
    pub id: u16,
    /// Its owner.
    pub owner: Option<u16>,
}

/// `resync`: the peers asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResyncReply {
    /// The replication peers a resync was requested from.
    pub requested_from: Vec<u16>,
}

/// A listing of the node-specific table: `dump` ([`DumpReply`]) and `card_dump`
/// ([`CardDumpReply`]) differ only in how they show an entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableReply<E> {
    /// The card backend.
    pub backend: String,
    /// The table's capacity (none: unbounded).
    pub capacity: Option<usize>,
    /// The entries listed.
    pub entries: Vec<E>,
    /// Entries in the table.
    pub len: usize,
}

/// `dump`: the node-specific table, keys in debug form.
pub type DumpReply = TableReply<EntryReport>;

/// `card_dump`: the node-specific table, keys in the card's layout.
pub type CardDumpReply = TableReply<CardEntryReport>;

/// One entry in [`DumpReply`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryReport {
    /// The action: allow, tunnel, drop, reject.
    pub action: String,
    /// The node that created it.
    pub creator: u16,
    /// Its distribution identifier (`did` on the wire; `dist` is read too).
    #[serde(rename = "did", alias = "dist")]
    pub dist: u16,
    /// The flow key (debug form).
    pub key: String,
    /// The state kind (established, syn-sent, ...; docs/vocabulary.md).
    pub state: String,
    /// Its version.
    pub version: u32,
}

/// `sas`: SA state, never keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SasReply {
    /// One row per SA.
    pub sas: Vec<SaReport>,
}

/// One SA in [`SasReply`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaReport {
    /// Its distribution identifier (`did` on the wire; `dist` is read too).
    #[serde(rename = "did", alias = "dist")]
    pub dist: u16,
    /// Tunnel destination.
    pub dst: String,
    /// Whether this node holds its key.
    pub key_present: bool,
    /// Next outbound sequence number.
    pub outbound_seq: u64,
    /// Whether this node owns its identifier.
    pub owned: bool,
    /// Replay window bitmap.
    pub replay_bitmap: u64,
    /// Replay window top.
    pub replay_top: u64,
    /// The SPI.
    pub spi: u32,
}

/// `sa_add`: where the SA went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaAddReply {
    /// The SA's distribution identifier (`did` on the wire; `dist` is read too).
    #[serde(rename = "did", alias = "dist")]
    pub dist: u16,
}

/// `esp_send`: the sequence numbers used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EspSendReply {
    /// The first packet's.
    pub first_seq: u64,
    /// The last packet's.
    pub last_seq: u64,
}

/// `esp_recv`: what the inbound SA made of the packets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EspRecvReply {
    /// Opened and accepted.
    pub accepted: u64,
    /// Refused as failing authentication or malformed.
    pub bad: u64,
    /// Refused as replays.
    pub replays: u64,
}

/// `check`: the table consistency problems found (none: consistent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReply {
    /// Entries whose identifier was recomputed from their key (common and node-specific
    /// tables together).
    #[serde(default)]
    pub checked: u64,
    /// The entries stored under an identifier other than the one their key gives (claim 12).
    #[serde(default)]
    pub mismatches: Vec<IdMismatch>,
    /// One line per problem of invariant 2 (the node-specific table against the common one).
    pub problems: Vec<String>,
}

impl CheckReply {
    /// Whether the check found nothing wrong.
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty() && self.problems.is_empty()
    }
}

/// One entry of `check` stored under the wrong identifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMismatch {
    /// The entry's key as the views print it.
    pub key: String,
    /// The identifier recomputed from the key.
    pub recomputed: u16,
    /// The identifier the entry is stored under.
    pub stored: u16,
    /// The table it was found in: common or card.
    pub table: String,
}

/// `applied`: the allocations applied, oldest first (free-form records).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedReply {
    /// One object per applied allocation (`epoch`, `gained`, `ready`, `took_us`, ...).
    pub applied: Vec<Value>,
}

/// `synthesize`: the entries created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthesizeReply {
    /// Connections that created an entry here.
    pub created: u64,
    /// How long it took.
    pub took_ms: u64,
}

/// One entry in [`CardDumpReply`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CardEntryReport {
    /// The action: allow, tunnel, drop, reject.
    pub action: String,
    /// The node that created it.
    pub creator: u16,
    /// Its distribution identifier.
    pub did: u16,
    /// The key in the card's layout (null: a key the card cannot hold).
    pub key: Value,
    /// The key as the views print it (the initiator first; docs/vocabulary.md).
    pub key_text: String,
    /// Packets seen.
    pub packets: u64,
    /// The state kind (established, syn-sent, ...; docs/vocabulary.md).
    pub state: String,
    /// Its version.
    pub version: u32,
    /// `card` or `overflow` (host memory).
    #[serde(rename = "where")]
    pub location: String,
}

/// One user binding (claim 8) as `user_bind` and `users` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserReport {
    /// The bound address.
    pub addr: IpAddr,
    /// Whole seconds left (rounded up).
    pub lifetime_s: u64,
    /// The member that made this version of the binding.
    pub origin: u16,
    /// The user's identifier.
    pub user: u32,
    /// Its version for the address.
    pub version: u64,
}

/// `users`: the live bindings, by address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersReply {
    /// The bindings.
    pub users: Vec<UserReport>,
}

/// `card_regs`: the card's register blocks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CardRegsReply {
    /// The card backend.
    pub backend: String,
    /// The register report (as `hwctl regs --json` shows a local card's).
    pub blocks: Vec<RegsBlockOut>,
}

/// One answer. On the wire: the body's fields beside `"ok": true`, or an [`ErrorReply`]'s
/// beside `"ok": false`. A client reads it with [`Request::response`].
#[derive(Clone, Debug)]
pub enum Response {
    /// Done (`sa_advance`, `partition`, `stop`, `user_unbind`).
    Done,
    /// Queued for the leader's next allocation (`move`, `drain`, `undrain`, `rebalance`).
    Queued,
    /// `status`: the node's report, free-form (keys in `docs/clusterd.md`).
    Status(Value),
    /// `allocation`.
    Allocation(AllocationReply),
    /// `counts`.
    Counts(CountsReply),
    /// `resync`.
    Resync(ResyncReply),
    /// `dump`.
    Dump(DumpReply),
    /// `sas`.
    Sas(SasReply),
    /// `sa_add`.
    SaAdded(SaAddReply),
    /// `esp_send`.
    EspSent(EspSendReply),
    /// `esp_recv`.
    EspReceived(EspRecvReply),
    /// `check`.
    Check(CheckReply),
    /// `applied`.
    Applied(AppliedReply),
    /// `synthesize`.
    Synthesized(SynthesizeReply),
    /// `card_dump`.
    CardDump(CardDumpReply),
    /// `card_regs`.
    CardRegs(CardRegsReply),
    /// `table_count`.
    TableCount(TableCountReply),
    /// `table_get`.
    TableGet(TableGetReply),
    /// `user_bind`: the binding made.
    UserBound(UserReport),
    /// `users`.
    Users(UsersReply),
    /// A streamed answer's first line as a client reads it (`table_dump`, `events`); the
    /// lines follow.
    StreamStart(StreamHeader),
    /// A streamed answer inside the node (the connection writes its header, then its lines).
    Stream(StreamBody),
    /// Refused.
    Error(ErrorReply),
}

impl Response {
    /// A refusal with only a message.
    pub fn error(error: impl Into<String>) -> Self {
        Self::Error(ErrorReply::new(error))
    }

    /// Whether the command was done (anything but [`Response::Error`]).
    pub fn is_ok(&self) -> bool {
        !matches!(self, Self::Error(_))
    }

    /// The refusal's message, if refused.
    pub fn error_message(&self) -> Option<&str> {
        match self {
            Self::Error(e) => Some(&e.error),
            _ => None,
        }
    }

    /// The answer as the JSON object sent on the wire (keys sorted).
    pub fn to_value(&self) -> Value {
        fn body<T: Serialize>(t: &T) -> Value {
            serde_json::to_value(t).unwrap_or_else(|_| Value::Object(serde_json::Map::new()))
        }
        let mut v = match self {
            Self::Done => Value::Object(serde_json::Map::new()),
            Self::Queued => serde_json::json!({"queued": true}),
            Self::Status(v) => v.clone(),
            Self::Allocation(b) => body(b),
            Self::Counts(b) => body(b),
            Self::Resync(b) => body(b),
            Self::Dump(b) => body(b),
            Self::Sas(b) => body(b),
            Self::SaAdded(b) => body(b),
            Self::EspSent(b) => body(b),
            Self::EspReceived(b) => body(b),
            Self::Check(b) => body(b),
            Self::Applied(b) => body(b),
            Self::Synthesized(b) => body(b),
            Self::CardDump(b) => body(b),
            Self::CardRegs(b) => body(b),
            Self::TableCount(b) => body(b),
            Self::TableGet(b) => body(b),
            Self::UserBound(b) => body(b),
            Self::Users(b) => body(b),
            Self::StreamStart(b) => body(b),
            Self::Stream(b) => body(&b.header),
            Self::Error(b) => body(b),
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("ok".to_owned(), Value::Bool(self.is_ok()));
        }
        v
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa_add() -> Request {
        Request::SaAdd {
            dir: Some(SaDir::Out),
            dst: Some("203.0.113.1".parse().unwrap()),
            key: SecretHex::new("00".repeat(32)),
            peer: Some("198.51.100.7".parse().unwrap()),
            spi: 77,
        }
    }

    /// One request of every command, with fields set.
    fn every_request() -> Vec<Request> {
        vec![
            Request::Status,
            Request::Allocation,
            Request::Counts,
            Request::Move {
                ids: vec![0, 1, 2],
                to: Some(3),
            },
            Request::Drain { node: Some(2) },
            Request::Undrain { node: Some(2) },
            Request::Rebalance,
            Request::Resync,
            Request::Dump { limit: Some(5) },
            Request::Sas,
            sa_add(),
            Request::SaAdvance {
                outbound_seq: Some(100),
                replay_top: None,
                spi: 77,
            },
            Request::EspSend {
                count: Some(20),
                spi: 77,
            },
            Request::EspRecv {
                packets: vec!["45".into()],
                spi: 77,
            },
            Request::Check,
            Request::Partition {
                loss: Some(0.35),
                peers: vec![1, 2],
            },
            Request::Applied,
            Request::Synthesize {
                first: None,
                flows: Some(1000),
            },
            Request::CardDump { did: Some(7) },
            Request::CardRegs,
            Request::Leave,
            Request::Stop,
            Request::TableDump {
                filter: Some(Filter {
                    did: Some(7),
                    dport: Some(80),
                    ..Filter::default()
                }),
                limit: Some(10),
                table: Some(TableName::Card),
            },
            Request::TableCount {
                filter: None,
                table: None,
            },
            Request::TableGet {
                key: "tcp 198.18.0.1:1234 -> 198.18.1.1:80".into(),
                table: Some(TableName::Common),
            },
            Request::UserBind {
                addr: Some("198.18.0.10".parse().unwrap()),
                lifetime_s: Some(3600),
                user: Some(7),
            },
            Request::UserUnbind {
                addr: Some("2001:db8::1".parse().unwrap()),
            },
            Request::Users,
            Request::Events { filter: None },
        ]
    }

    #[test]
    fn every_request_round_trips_and_is_listed() {
        let all = every_request();
        assert_eq!(all.len(), COMMANDS.len());
        for (req, name) in all.iter().zip(COMMANDS) {
            assert_eq!(req.cmd(), name);
            let line = serde_json::to_string(req).unwrap();
            assert_eq!(Request::parse(&line).unwrap(), *req, "{line}");
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["cmd"], name);
        }
    }

    #[test]
    fn requests_are_the_bytes_clients_sent_before() {
        // what the hand-built `json!` objects of the clients and tests serialized to
        let fixtures: [(Request, &str); 7] = [
            (Request::Status, r#"{"cmd":"status"}"#),
            (
                Request::Move {
                    ids: vec![0, 1],
                    to: Some(3),
                },
                r#"{"cmd":"move","ids":[0,1],"to":3}"#,
            ),
            (
                Request::Drain { node: Some(2) },
                r#"{"cmd":"drain","node":2}"#,
            ),
            (
                sa_add(),
                r#"{"cmd":"sa_add","dir":"out","dst":"203.0.113.1","key":"0000000000000000000000000000000000000000000000000000000000000000","peer":"198.51.100.7","spi":77}"#,
            ),
            (
                Request::EspSend {
                    count: Some(20),
                    spi: 9,
                },
                r#"{"cmd":"esp_send","count":20,"spi":9}"#,
            ),
            (
                Request::Partition {
                    loss: Some(0.35),
                    peers: vec![],
                },
                r#"{"cmd":"partition","loss":0.35,"peers":[]}"#,
            ),
            (Request::CardDump { did: None }, r#"{"cmd":"card_dump"}"#),
        ];
        for (req, bytes) in fixtures {
            assert_eq!(serde_json::to_string(&req).unwrap(), bytes);
            assert_eq!(Request::parse(bytes).unwrap(), req);
        }
        let synth = Request::Synthesize {
            first: None,
            flows: Some(4),
        };
        assert_eq!(
            serde_json::to_string(&synth).unwrap(),
            r#"{"cmd":"synthesize","flows":4}"#
        );
    }

    /// Key material is read in place from the request line: a line with an escaped character
    /// (which the parser would unescape into a buffer nothing wipes) is refused, and a key
    /// given as anything but a string is a field error.
    #[test]
    fn sa_add_keys_are_read_without_copies() {
        let hex = "11".repeat(32);
        let line = format!(
            r#"{{"cmd":"sa_add","dir":"out","dst":"203.0.113.1","key":"{hex}","peer":"198.51.100.7","spi":7}}"#
        );
        let Ok(Request::SaAdd { key, .. }) = Request::parse(&line) else {
            panic!("{line}");
        };
        assert_eq!(key.expose(), hex);
        let escaped = line.replacen("\"key\":\"1", "\"key\":\"\\u0031", 1);
        assert_ne!(escaped, line);
        let e = Request::parse(&escaped).unwrap_err();
        assert!(e.error.contains("no escaped characters"), "{}", e.error);
        assert!(!e.error.contains(&hex[1..]), "the reply echoes key digits");
        let e = Request::parse(r#"{"cmd":"sa_add","key":17,"spi":7}"#).unwrap_err();
        assert!(e.error.contains("bad fields"), "{}", e.error);
        // other commands may still use escapes
        assert!(Request::parse(r#"{"cmd":"status","note":"a\"b"}"#).is_ok());
    }

    #[test]
    fn old_field_names_and_defaults_are_accepted() {
        // `move` also reads `node`, `drain` also reads `to`; missing fields take defaults
        assert_eq!(
            Request::parse(r#"{"cmd":"move","ids":[4],"node":1}"#).unwrap(),
            Request::Move {
                ids: vec![4],
                to: Some(1)
            }
        );
        assert_eq!(
            Request::parse(r#"{"cmd":"drain","to":2}"#).unwrap(),
            Request::Drain { node: Some(2) }
        );
        assert_eq!(
            Request::parse(r#" {"cmd":"esp_recv","spi":5} "#).unwrap(),
            Request::EspRecv {
                packets: vec![],
                spi: 5
            }
        );
        assert_eq!(
            Request::parse(r#"{"cmd":"status","extra":1}"#).unwrap(),
            Request::Status
        );
    }

    #[test]
    fn bad_lines_are_refused_with_reasons() {
        let cases = [
            ("not json", "not JSON"),
            ("\u{1}\u{2}", "not JSON"),
            ("", "not JSON"),
            ("[1,2]", "a request is a JSON object"),
            ("5", "a request is a JSON object"),
            (r#"{"cmd": 5}"#, "a request is a JSON object"),
            (r#"{"ids": [1]}"#, "missing \"cmd\""),
            (r#"{"cmd": "frobnicate"}"#, "unknown command \"frobnicate\""),
            (r#"{"cmd": "move", "ids": "x"}"#, "bad fields for \"move\""),
            (
                r#"{"cmd": "sa_add", "spi": -1}"#,
                "bad fields for \"sa_add\"",
            ),
            (r#"{"cmd": "sa_add", "peer": "nowhere"}"#, "bad fields"),
            (r#"{"cmd": "card_dump", "did": 70000}"#, "bad fields"),
        ];
        for (line, want) in cases {
            let e = Request::parse(line).unwrap_err();
            assert!(e.error.contains(want), "{line:?} -> {e:?}");
            let wire = Response::Error(e).to_value();
            assert_eq!(wire["ok"], false);
        }
        let e = Request::parse(r#"{"cmd": "frobnicate"}"#).unwrap_err();
        assert_eq!(e.commands.unwrap().len(), COMMANDS.len());
    }

    #[test]
    fn keys_stay_out_of_debug_and_refusals() {
        let digits = "ab".repeat(32);
        let req = Request::SaAdd {
            dir: None,
            dst: None,
            key: SecretHex::new(digits.clone()),
            peer: None,
            spi: 1,
        };
        assert!(!format!("{req:?}").contains("abab"));
        let line = format!(r#"{{"cmd":"sa_add","key":"{digits}","spi":"x"}}"#);
        let e = Request::parse(&line).unwrap_err();
        assert!(!format!("{e:?}").contains("abab"), "{e:?}");
    }

    #[test]
    fn check_requests_and_answers_parse() {
        assert_eq!(
            Request::parse(r#"{"cmd":"check"}"#).unwrap(),
            Request::Check
        );
        assert_eq!(
            serde_json::to_string(&Request::Check).unwrap(),
            r#"{"cmd":"check"}"#
        );
        let found = CheckReply {
            checked: 12,
            mismatches: vec![IdMismatch {
                key: "esp 192.0.2.9 -> 192.0.2.1 spi=0x00001000".into(),
                recomputed: 17,
                stored: 18,
                table: "common".into(),
            }],
            problems: vec![],
        };
        assert!(!found.is_clean());
        let v = Response::Check(found.clone()).to_value();
        assert_eq!(v["ok"], true);
        assert_eq!(v["mismatches"][0]["stored"], 18);
        let Response::Check(back) = Request::Check.response(v).unwrap() else {
            panic!("not a check answer");
        };
        assert_eq!(back, found, "read back typed");
        // an answer of a node without the identifier check reads as clean of mismatches
        let old = Request::Check
            .response(serde_json::json!({"ok": true, "problems": ["x"]}))
            .unwrap();
        let Response::Check(old) = old else {
            panic!("{old:?}");
        };
        assert_eq!((old.checked, old.mismatches.len()), (0, 0));
        assert!(!old.is_clean(), "a problem is not clean");
        for bad in [
            serde_json::json!({"ok": true}),
            serde_json::json!({"ok": true, "problems": [], "mismatches": [{"key": 1}]}),
            serde_json::json!({"ok": true, "problems": [], "checked": -1}),
        ] {
            assert!(Request::Check.response(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_read_back_typed() {
        let cases = [
            (Request::Stop, Response::Done),
            (Request::Leave, Response::Done),
            (Request::Rebalance, Response::Queued),
            (
                Request::Allocation,
                Response::Allocation(AllocationReply {
                    agreed_epoch: 3,
                    epoch: 3,
                    owners: vec![Some(1), None],
                }),
            ),
            (
                Request::EspSend {
                    count: None,
                    spi: 1,
                },
                Response::EspSent(EspSendReply {
                    first_seq: 1,
                    last_seq: 20,
                }),
            ),
            (
                Request::Status,
                Response::Status(serde_json::json!({"node": 1, "ready": true})),
            ),
            (
                Request::Move {
                    ids: vec![],
                    to: None,
                },
                Response::Error(ErrorReply {
                    leader: Some(2),
                    ..ErrorReply::new("not the leader; send this to the leader")
                }),
            ),
        ];
        for (req, resp) in cases {
            let line = serde_json::to_string(&resp).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["ok"], resp.is_ok(), "{line}");
            assert_eq!(
                req.response(v).unwrap().to_value(),
                resp.to_value(),
                "{line}"
            );
        }
        assert_eq!(
            serde_json::to_string(&Response::Queued).unwrap(),
            r#"{"ok":true,"queued":true}"#
        );
        // a refusal without a message still reads as one
        let r = Request::Status
            .response(serde_json::json!({"ok": false}))
            .unwrap();
        assert_eq!(r.error_message(), Some("no error message"));
        // an answer of the wrong shape is an error, not a panic
        assert!(Request::Allocation
            .response(serde_json::json!({"ok": true, "owners": "x"}))
            .is_err());
    }

    #[test]
    fn user_requests_and_answers_parse() {
        let bind = r#"{"cmd":"user_bind","user":7,"addr":"198.18.0.10","lifetime_s":3600}"#;
        let req = Request::parse(bind).unwrap();
        assert_eq!(
            req,
            Request::UserBind {
                addr: Some("198.18.0.10".parse().unwrap()),
                lifetime_s: Some(3600),
                user: Some(7),
            }
        );
        assert_eq!(
            Request::parse(r#"{"cmd":"user_unbind","addr":"2001:db8::1"}"#).unwrap(),
            Request::UserUnbind {
                addr: Some("2001:db8::1".parse().unwrap())
            }
        );
        assert_eq!(
            Request::parse(r#"{"cmd":"users"}"#).unwrap(),
            Request::Users
        );
        // hostile fields are refused with the command named, before the node sees them
        for bad in [
            r#"{"cmd":"user_bind","user":-1,"addr":"198.18.0.10","lifetime_s":1}"#,
            r#"{"cmd":"user_bind","user":4294967296,"addr":"198.18.0.10"}"#,
            r#"{"cmd":"user_bind","user":7,"addr":"198.18.0.300"}"#,
            r#"{"cmd":"user_bind","user":7,"addr":"198.18.0.10","lifetime_s":"1h"}"#,
            r#"{"cmd":"user_unbind","addr":7}"#,
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert!(e.error.contains("bad fields for"), "{bad}: {}", e.error);
        }
        let made = UserReport {
            addr: "198.18.0.10".parse().unwrap(),
            lifetime_s: 3600,
            origin: 1,
            user: 7,
            version: 1,
        };
        let v = Response::UserBound(made.clone()).to_value();
        assert_eq!(v["ok"], true);
        assert_eq!(v["addr"], "198.18.0.10");
        let Response::UserBound(back) = req.response(v).unwrap() else {
            panic!("not a user_bind answer");
        };
        assert_eq!(back, made);
        let list = UsersReply { users: vec![made] };
        let v = Response::Users(list.clone()).to_value();
        let Response::Users(back) = Request::Users.response(v).unwrap() else {
            panic!("not a users answer");
        };
        assert_eq!(back, list);
        let bad = serde_json::json!({"ok": true, "users": [{"addr": "x"}]});
        assert!(Request::Users.response(bad).is_err());
    }
}
