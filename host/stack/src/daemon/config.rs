//! The node configuration file of `clusterd run --config FILE` (format in `docs/clusterd.md`).
//!
//! One setting per line, `key = value`; `#` starts a comment; blank lines are ignored. Every
//! error names the line and says how to fix it.
//!
//! ```text
//! node = 1                         # this node's id, 1..=65535
//! listen = 127.0.0.1:7101          # UDP address for replication and consensus
//! control = node1.sock             # Unix control socket (relative to the config file)
//! key = 64 hex digits              # cluster key (or: key_file = path, holding the hex)
//! identity_file = node1.id         # this node's own signing key (clusterd keygen --identity)
//! peer = 2 127.0.0.1:7102 key=HEX  # one line per other member: id address [key=its public key]
//! peer = 3 127.0.0.1:7103 witness  # a witness votes but handles no traffic
//! peer = 4 127.0.0.1:7104 learner  # added to a running cluster: a learner until the leader promotes it
//! role = member                    # or: witness
//! voter = yes                      # no: this node is a learner (must match the peers' lines)
//! card = model                     # card backend spec (model, verilator, vfio:..., pci:...)
//! wire = 127.0.0.1:7201            # UDP address where the wire delivers packets (optional)
//! outside = eth1                   # the card's port 0 on this interface (with inside: optional)
//! inside = eth2                    # the card's port 1 on this interface
//! identifiers = 256                # distribution identifiers, power of two up to 4096
//! state_dir = node1.state          # consensus log and hard state (relative to the file)
//! heartbeat_ms = 50                # heartbeat interval
//! failure_ms = 200                 # silence after which the leader declares a node failed
//! flush_ms = 1                     # replication batch flush interval
//! card_capacity = 4096             # CAM entries used before the software overflow takes over
//! seq_jump = 4096                  # ESP outbound sequence safety jump on takeover
//! rules = rules.txt                # rule set file (default: allow every valid first packet)
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::core::ids::{IdCount, NodeId};
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
    /// Rule file, if any.
    pub rules: Option<PathBuf>,
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

const KEYS: &[&str] = &[
    "node",
    "role",
    "listen",
    "control",
    "control_group",
    "key",
    "key_file",
    "identity_file",
    "peer",
    "card",
    "wire",
    "outside",
    "inside",
    "identifiers",
    "state_dir",
    "heartbeat_ms",
    "failure_ms",
    "flush_ms",
    "card_capacity",
    "seq_jump",
    "rules",
    "voter",
];

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

fn parse_u64(line: usize, key: &str, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(err(
            line,
            format!("{key} = {v:?} is not a whole number in {min}..={max}"),
            format!("write e.g. \"{key} = {min}\""),
        )),
    }
}

fn parse_addr(line: usize, key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse::<SocketAddr>().map_err(|_| {
        err(
            line,
            format!("{key} = {v:?} is not an IP address with a port"),
            format!("write e.g. \"{key} = 127.0.0.1:7101\""),
        )
    })
}

fn parse_node(line: usize, v: &str) -> Result<NodeId, ConfigError> {
    match v.parse::<u16>() {
        Ok(n) if n >= 1 => Ok(NodeId(n)),
        _ => Err(err(
            line,
            format!("node id {v:?} is not a number in 1..=65535"),
            "use a node id between 1 and 65535",
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

    /// Parses config text; relative paths are resolved against `base`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the line and the fix.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut node = None;
        let mut role = Role::Member;
        let mut listen = None;
        let mut control = None;
        let mut control_group = None;
        let mut key: Option<ClusterKey> = None;
        let mut peers: Vec<(usize, PeerConfig)> = Vec::new();
        let mut card = "model".to_string();
        let mut wire = None;
        let mut identifiers = IdCount::default();
        let mut state_dir = None;
        let mut heartbeat_ms = 50;
        let mut failure_ms = 200;
        let mut flush_ms = 1;
        let mut card_capacity = 4096;
        let mut seq_jump = 4096;
        let mut rules = None;
        let mut identity = None;
        let mut outside: Option<String> = None;
        let mut inside: Option<String> = None;
        let mut voter = true;
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        for (i, raw) in text.lines().enumerate() {
            let ln = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let Some((k, v)) = content.split_once('=') else {
                return Err(err(
                    ln,
                    format!("{content:?} is not a setting"),
                    "write settings as \"key = value\"",
                ));
            };
            let (k, v) = (k.trim(), v.trim());
            let Some(kk) = KEYS.iter().copied().find(|x| *x == k) else {
                return Err(err(
                    ln,
                    format!("unknown setting {k:?}"),
                    format!("use one of: {}", KEYS.join(", ")),
                ));
            };
            if v.is_empty() {
                return Err(err(
                    ln,
                    format!("{k} has no value"),
                    format!("write \"{k} = <value>\""),
                ));
            }
            if kk != "peer" {
                if let Some(prev) = seen.insert(kk, ln) {
                    return Err(err(
                        ln,
                        format!("{k} is set twice (first on line {prev})"),
                        "keep one of the two lines",
                    ));
                }
            }
            match kk {
                "node" => node = Some(parse_node(ln, v)?),
                "role" => {
                    role = match v {
                        "member" => Role::Member,
                        "witness" => Role::Witness,
                        _ => {
                            return Err(err(
                                ln,
                                format!("role {v:?} is unknown"),
                                "write \"role = member\" or \"role = witness\"",
                            ))
                        }
                    }
                }
                "listen" => listen = Some(parse_addr(ln, k, v)?),
                "wire" => wire = Some(parse_addr(ln, k, v)?),
                "control" => control = Some(resolve(v)),
                "control_group" => control_group = Some(v.to_string()),
                "state_dir" => state_dir = Some(resolve(v)),
                "rules" => rules = Some(resolve(v)),
                "identity_file" => identity = Some(resolve(v)),
                "outside" | "inside" => {
                    let ok = !v.is_empty()
                        && v.len() < 16
                        && v.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
                    if !ok {
                        return Err(err(
                            ln,
                            format!("{k} = {v:?} is not an interface name"),
                            "give the name of an interface in the node's network namespace (at most 15 characters, e.g. eth1)",
                        ));
                    }
                    if k == "outside" {
                        outside = Some(v.to_owned());
                    } else {
                        inside = Some(v.to_owned());
                    }
                }
                "card" => card = v.to_string(),
                "voter" => {
                    voter = match v {
                        "yes" | "true" => true,
                        "no" | "false" => false,
                        _ => {
                            return Err(err(
                                ln,
                                format!("voter = {v:?} is not yes or no"),
                                "write \"voter = yes\" or \"voter = no\"",
                            ))
                        }
                    }
                }
                "key" | "key_file" => {
                    if key.is_some() {
                        return Err(err(
                            ln,
                            "the cluster key is given twice (key and key_file)",
                            "keep either \"key\" or \"key_file\"",
                        ));
                    }
                    let text = if kk == "key" {
                        zeroize::Zeroizing::new(v.to_string())
                    } else {
                        read_key_file(&resolve(v))
                            .map_err(|(problem, fix)| err(ln, problem, fix))?
                    };
                    key = Some(ClusterKey::from_hex(&text).map_err(|e| {
                        err(
                            ln,
                            format!("bad cluster key: {e}"),
                            "generate one with `clusterd keygen` and paste its 64 hex digits",
                        )
                    })?);
                }
                "peer" => {
                    let parts: Vec<&str> = v.split_whitespace().collect();
                    let fix = "write \"peer = <id> <ip:port>\", optionally followed by \"witness\" or \"learner\" and \"key=<its public key>\"";
                    let mut parts = parts;
                    let mut pubkey = None;
                    if let Some(i) = parts.iter().position(|p| p.starts_with("key=")) {
                        let hex = &parts[i][4..];
                        pubkey = Some(crate::sync::PublicKey::from_hex(hex).map_err(|e| {
                            err(
                                ln,
                                e.to_string(),
                                "copy the public key `clusterd keygen --identity` printed for that node",
                            )
                        })?);
                        parts.remove(i);
                    }
                    if !(2..=3).contains(&parts.len()) {
                        return Err(err(
                            ln,
                            format!("peer {v:?} has {} fields", parts.len()),
                            fix,
                        ));
                    }
                    let id = parse_node(ln, parts[0])?;
                    let addr = parse_addr(ln, "peer address", parts[1])?;
                    let (role, pvoter) = match parts.get(2) {
                        None => (Role::Member, true),
                        Some(&"witness") => (Role::Witness, true),
                        Some(&"learner") => (Role::Member, false),
                        Some(other) => {
                            return Err(err(ln, format!("peer flag {other:?} is unknown"), fix))
                        }
                    };
                    if let Some((prev, _)) = peers.iter().find(|(_, p)| p.id == id) {
                        return Err(err(
                            ln,
                            format!("peer {} is listed twice (first on line {prev})", id.0),
                            "list each peer once",
                        ));
                    }
                    peers.push((
                        ln,
                        PeerConfig {
                            id,
                            addr,
                            role,
                            voter: pvoter,
                            pubkey,
                        },
                    ));
                }
                "identifiers" => {
                    let n = parse_u64(ln, k, v, 1, 4096)?;
                    identifiers = IdCount::new(n as u32).map_err(|_| {
                        err(
                            ln,
                            format!("identifiers = {n} is not a power of two"),
                            "use 1, 2, 4, ... 4096 (default 256)",
                        )
                    })?;
                }
                "heartbeat_ms" => heartbeat_ms = parse_u64(ln, k, v, 5, 10_000)?,
                "failure_ms" => failure_ms = parse_u64(ln, k, v, 20, 60_000)?,
                "flush_ms" => flush_ms = parse_u64(ln, k, v, 0, 1000)?,
                "card_capacity" => card_capacity = parse_u64(ln, k, v, 1, 1 << 24)? as usize,
                "seq_jump" => seq_jump = parse_u64(ln, k, v, 1, 1 << 32)?,
                _ => {}
            }
        }
        let missing = |k: &str, example: &str| {
            err(
                0,
                format!("missing setting {k:?}"),
                format!("add a line \"{k} = {example}\""),
            )
        };
        let node = node.ok_or_else(|| missing("node", "1"))?;
        let listen = listen.ok_or_else(|| missing("listen", "127.0.0.1:7101"))?;
        let key = key.ok_or_else(|| missing("key", "<64 hex digits from `clusterd keygen`>"))?;
        let control = control.ok_or_else(|| missing("control", "node1.sock"))?;
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
                "add a witness: \"peer = <id> <ip:port> witness\" (run it with role = witness)",
            ));
        }
        if members == 0 {
            return Err(err(
                0,
                "the cluster has no member that handles traffic",
                "make at least one node role = member",
            ));
        }
        match (&identity, peers.iter().find(|(_, p)| p.pubkey.is_none())) {
            (Some(_), Some((ln, p))) => {
                return Err(err(
                    *ln,
                    format!("peer {} has no public key, but this node has an identity_file", p.id.0),
                    "add \"key=<its public key>\" to the line (every node of a cluster has an identity, or none has)",
                ))
            }
            (None, _) => {
                if let Some((ln, p)) = peers.iter().find(|(_, p)| p.pubkey.is_some()) {
                    return Err(err(
                        *ln,
                        format!("peer {} has a public key, but this node has no identity_file", p.id.0),
                        "add \"identity_file = <file>\" (clusterd keygen --identity <file>), or remove the key",
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
                    format!("add \"{missing} = <interface>\": the card sits between two segments"),
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
                "remove \"voter = no\" or make the node a member",
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
            rules,
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

    fn good() -> String {
        format!(
            "# test\nnode = 1\nlisten = 127.0.0.1:7101\ncontrol = n1.sock\nkey = {KEY}\n\
             peer = 2 127.0.0.1:7102\npeer = 3 127.0.0.1:7103 # comment\n"
        )
    }

    #[test]
    fn parses_a_good_file() {
        let c = parse(&good()).unwrap();
        assert_eq!(c.node, NodeId(1));
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.control, Path::new("/etc/clusterd/n1.sock"));
        assert_eq!(c.voters(), vec![NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(c.card, "model");
        assert_eq!(c.identifiers.get(), 256);
    }

    #[test]
    fn identities_all_or_none() {
        let pk = "aa".repeat(32);
        let signed = good()
            .replace(
                "peer = 2 127.0.0.1:7102",
                &format!("peer = 2 127.0.0.1:7102 key={pk}"),
            )
            .replace(
                "peer = 3 127.0.0.1:7103",
                &format!("peer = 3 127.0.0.1:7103 witness key={pk}"),
            )
            + "identity_file = n1.id\n";
        let c = parse(&signed).unwrap();
        assert_eq!(
            c.identity.as_deref(),
            Some(Path::new("/etc/clusterd/n1.id"))
        );
        assert_eq!(c.peers[0].pubkey.unwrap().to_hex(), pk);
        assert_eq!(c.peers[1].role, Role::Witness);
        // an identity, and a peer without a key
        let e = parse(&format!("{}identity_file = n1.id\n", good())).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.problem.contains("no public key"), "{e}");
        // a peer key, and no identity
        let e = parse(&good().replace(
            "peer = 2 127.0.0.1:7102",
            &format!("peer = 2 127.0.0.1:7102 key={pk}"),
        ))
        .unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.fix.contains("identity_file"), "{e}");
        // a key that is not one
        let e = parse(&signed.replace(&format!("7102 key={pk}"), "7102 key=xyz")).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.problem.contains("64 hexadecimal"), "{e}");
    }

    #[test]
    fn errors_name_line_and_fix() {
        let e = parse(&format!("{}nodee = 3\n", good())).unwrap_err();
        assert_eq!(e.line, 8);
        assert!(e.fix.contains("node"));
        let e =
            parse(&good().replace("listen = 127.0.0.1:7101", "listen = localhost")).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("line 3: listen"));
        let e = parse(&good().replace(KEY, "abcd")).unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.fix.contains("keygen"));
        let e = parse(&format!("{}node = 4\n", good())).unwrap_err();
        assert!(e.problem.contains("first on line 2"));
        let e = parse(&format!("{}identifiers = 100\n", good())).unwrap_err();
        assert!(e.fix.contains("power") || e.problem.contains("power"));
        let e = parse(&good().replace("node = 1\n", "")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.fix.contains("node = 1"));
        let e = parse(&good().replace("peer = 3 127.0.0.1:7103 # comment\n", "")).unwrap_err();
        assert!(e.fix.contains("witness"));
        let e = parse(&format!("{}peer = 1 127.0.0.1:7109\n", good())).unwrap_err();
        assert_eq!(e.line, 8);
        let e = parse(&format!("{}just words\n", good())).unwrap_err();
        assert_eq!(e.line, 8);
    }

    #[test]
    fn key_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("cfg-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k");
        std::fs::write(&key, format!("{KEY}\n")).unwrap();
        let text = good().replace(&format!("key = {KEY}"), "key_file = k");
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
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn control_group_is_kept() {
        assert_eq!(parse(&good()).unwrap().control_group, None);
        let c = parse(&format!("{}control_group = ops\n", good())).unwrap();
        assert_eq!(c.control_group.as_deref(), Some("ops"));
    }
}
