//! `hwctl forward`: a capture through a card's packet path, as one node of a cluster would
//! handle it.
//!
//! The node is the state core's real `Node` (rules, connection tracking, entries offloaded to
//! the card once established) over the device's card: every frame goes into the card's packet
//! port, the card forwards what its entries allow, and the node's slow path handles what the
//! card punts (and sends on what it accepts, through the card). On `software` there is no card:
//! the node handles every frame on the host. The frames that leave the card (or the host) are
//! written to a pcap file; one verdict a frame and a summary are printed.
//!
//! Ports: a capture does not say which side of the firewall a frame came from. A frame enters
//! port 1 (inside) when its source address lies in an `--inside` prefix; without `--inside`,
//! the side that sent a flow's first frame in the capture is outside (port 0) and the other
//! side inside. Frames without a flow (ARP, other ICMP) enter port 0.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use host::core::card_table::CardTable as CoreCardTable;
use host::core::node::{DropReason, FrameOutcome, Node, NodeConfig, Verdict};
use host::core::node_table::{NodeSpecificTable, SoftwareTable, TieredTable};
use host::core::pcap::{self, LinkType, PcapPacket};
use host::core::rules::Cidr;
use host::core::{
    parse_packet, Allocation, ClusterSecret, Epoch, Framing, IdCount, Millis, NodeId, RuleSet,
};
use host::device::DeviceSpec;
use serde::Serialize;

/// The distribution key when `--key` is not given. Not a secret: it only makes the
/// identifiers of a run repeatable. Give the cluster's key to see its identifiers.
const DEFAULT_SECRET: [u8; 16] = *b"hwctl forward v1";

/// The node the tool plays; identifiers it does not own belong to a second, absent node.
const ME: NodeId = NodeId(1);
const OTHER: NodeId = NodeId(2);

/// CAM entries of a bare `model` device: room for a busy capture.
const MODEL_DEPTH: u32 = 16384;

/// A bad `forward` argument (exit status 2, as clap's own errors).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// What `forward` was asked to do.
pub struct Options<'a> {
    /// Input capture.
    pub input: &'a Path,
    /// Output capture (pcap, Ethernet).
    pub output: &'a Path,
    /// Identifiers this node owns (`None`: all).
    pub owns: Option<Vec<u16>>,
    /// Rule set text (`None`: allow every valid first packet).
    pub rules: Option<String>,
    /// Distribution identifiers.
    pub identifiers: u32,
    /// Distribution secret (`None`: [`DEFAULT_SECRET`]).
    pub secret: Option<ClusterSecret>,
    /// Source prefixes that enter port 1.
    pub inside: Vec<Cidr>,
    /// Print JSON lines instead of text.
    pub json: bool,
}

/// Parses an `--owns` list: `all`, `none`, or identifiers and ranges (`0-127,200`).
pub fn parse_owns(s: &str, count: u32) -> Result<Option<Vec<u16>>, UsageError> {
    parse_owns_text(s, count).map_err(UsageError)
}

fn parse_owns_text(s: &str, count: u32) -> Result<Option<Vec<u16>>, String> {
    let s = s.trim();
    if s == "all" {
        return Ok(None);
    }
    if s == "none" {
        return Ok(Some(Vec::new()));
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let num = |t: &str| -> Result<u32, String> {
            t.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n < count)
                .ok_or_else(|| {
                    format!(
                        "--owns: {t:?} is not an identifier (0..={} with --identifiers {count})",
                        count - 1
                    )
                })
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if a > b {
            return Err(format!("--owns: range {part:?} runs backwards"));
        }
        out.extend((a..=b).map(|d| d as u16));
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

/// One frame's fate (`--json`: one object a line). Field names are a stable interface.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct FrameVerdict {
    /// Frame number in the input, from 1.
    pub frame: usize,
    /// Port it entered (0 outside, 1 inside).
    pub port: u8,
    /// Its distribution identifier (host's computation; `null` for frames without a flow).
    pub did: Option<u16>,
    /// `forwarded` (by the card), `punted` (to the host), `dropped` (by the card), `host`
    /// (no card: the host handled it).
    pub verdict: &'static str,
    /// The card's reason for a punt or a drop.
    pub reason: Option<String>,
    /// What the host's slow path decided: `accepted`, `not-ours` or `dropped:REASON`.
    pub host: Option<String>,
    /// Ports the frame went out of.
    pub out: Vec<u8>,
}

impl FrameVerdict {
    fn text(&self) -> String {
        let did = self.did.map_or_else(|| "-".to_owned(), |d| d.to_string());
        let mut s = format!("{:>6}  in {}  did {:>4}  ", self.frame, self.port, did);
        match self.verdict {
            "forwarded" => {
                let _ = write!(s, "forwarded {}", ports(&self.out));
            }
            "host" => {
                let _ = write!(s, "host {}", self.host.as_deref().unwrap_or("?"));
            }
            v => {
                let _ = write!(s, "{v} {}", self.reason.as_deref().unwrap_or("?"));
                if let Some(h) = &self.host {
                    let _ = write!(s, ", host {h}");
                }
            }
        }
        if self.verdict != "forwarded" && !self.out.is_empty() {
            let _ = write!(s, ", out {}", ports(&self.out));
        }
        s.push('\n');
        s
    }
}

fn ports(p: &[u8]) -> String {
    p.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
}

/// The run's totals. Field names are a stable interface.
#[derive(Serialize, Default, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Device spec.
    pub device: String,
    /// Frames read.
    pub frames: usize,
    /// Forwarded by the card itself.
    pub forwarded_by_card: usize,
    /// Punted to the host.
    pub punted: usize,
    /// Punted, and sent on by the host.
    pub punted_sent_on: usize,
    /// Dropped by the card.
    pub dropped_by_card: usize,
    /// Handled by the host without a card (`software`).
    pub host_only: usize,
    /// Frames written to the output capture.
    pub written: usize,
    /// Card drops and punts by reason.
    pub reasons: BTreeMap<String, usize>,
    /// Host slow-path drops by reason.
    pub host_drops: BTreeMap<String, usize>,
}

impl Summary {
    fn text(&self) -> String {
        let mut s = format!(
            "\n{} frames: {} forwarded by the card, {} punted ({} sent on by the host), {} \
             dropped by the card, {} handled by the host alone; {} written\n",
            self.frames,
            self.forwarded_by_card,
            self.punted,
            self.punted_sent_on,
            self.dropped_by_card,
            self.host_only,
            self.written
        );
        for (what, m) in [("card", &self.reasons), ("host drops", &self.host_drops)] {
            if !m.is_empty() {
                let list: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(s, "{what}: {}", list.join(", "));
            }
        }
        s
    }
}

/// A frame as the card's port takes it: Ethernet as captured, or an IP packet of another
/// link type behind a made-up Ethernet header.
fn ethernet(link: LinkType, data: &[u8]) -> Option<Vec<u8>> {
    if link == LinkType::Ethernet {
        return Some(data.to_vec());
    }
    let ip = pcap::ip_packet(link, data)?;
    if !matches!(ip.first()? >> 4, 4 | 6) {
        return None;
    }
    let mut f = Vec::with_capacity(14 + ip.len());
    host::core::packet::ethernet_frame(&mut f, ip);
    Some(f)
}

fn drop_name(r: DropReason) -> &'static str {
    match r {
        DropReason::Parse => "parse",
        DropReason::BadIke => "bad-ike",
        DropReason::Rule => "rule",
        DropReason::TcpNoState => "tcp-no-state",
        DropReason::NoState => "no-state",
        DropReason::NoSa => "no-sa",
        DropReason::EntryAction => "entry-action",
        DropReason::TableFull => "table-full",
    }
}

fn host_text(v: Verdict) -> (String, Option<&'static str>) {
    match v {
        Verdict::Accept { .. } => ("accepted".to_owned(), None),
        Verdict::NotOurs { .. } => ("not-ours".to_owned(), Some("not-ours")),
        Verdict::Drop(r) => (format!("dropped:{}", drop_name(r)), Some(drop_name(r))),
    }
}

/// The node's allocation: `owns` (all when `None`) to this node, the rest to an absent one.
fn allocation(count: IdCount, owns: Option<&[u16]>) -> Allocation {
    let mut a = Allocation::unowned(Epoch(1), count);
    for (d, o) in a.owners.iter_mut().enumerate() {
        let mine = owns.is_none_or(|l| l.binary_search(&(d as u16)).is_ok());
        *o = Some(if mine { ME } else { OTHER });
    }
    a
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Runs `opts.input` through `device` and writes `opts.output`; returns the text (or JSON
/// lines) to print.
pub fn run(device: &DeviceSpec, opts: &Options<'_>) -> Res<String> {
    let count = IdCount::new(opts.identifiers)
        .map_err(|e| UsageError(format!("--identifiers {}: {e}", opts.identifiers)))?;
    let rules = match &opts.rules {
        Some(t) => RuleSet::parse(t).map_err(|e| format!("--rules: {e}"))?,
        None => RuleSet::allow_all(),
    };
    let bytes = std::fs::read(opts.input)
        .map_err(|e| format!("--in {}: cannot read: {e}", opts.input.display()))?;
    let frames =
        pcap::read_frames(&bytes).map_err(|e| format!("--in {}: {e}", opts.input.display()))?;
    let mut cfg = NodeConfig::new(
        ME,
        opts.secret
            .clone()
            .unwrap_or_else(|| ClusterSecret::new(DEFAULT_SECRET)),
    );
    cfg.count = count;
    cfg.rules = rules;
    cfg.framing = Framing::Ethernet;
    let alloc = allocation(count, opts.owns.as_deref());
    let device_name = device.to_string();
    let run = match device {
        DeviceSpec::Software => {
            let mut node = Node::new(cfg, SoftwareTable::new(count));
            node.apply_allocation(Millis(0), &alloc)
                .map_err(|e| format!("allocation: {e:?}"))?;
            drive(&mut node, &frames, opts)?
        }
        d if d.is_simulated() => {
            let spec = match d {
                DeviceSpec::Model { depth } if *depth == sim_bridge::model::DEFAULT_DEPTH => {
                    DeviceSpec::Model { depth: MODEL_DEPTH }
                }
                other => other.clone(),
            };
            let card = spec.open_card()?;
            if !card.has_packet_port() {
                return Err(format!("device {device_name}: the card has no packet port").into());
            }
            let table = CoreCardTable::new(card, count)
                .map_err(|e| format!("device {device_name}: {e}"))?;
            let mut node = Node::new(cfg, TieredTable::new(table, count));
            node.apply_allocation(Millis(0), &alloc)
                .map_err(|e| format!("allocation: {e:?}"))?;
            drive(&mut node, &frames, opts)?
        }
        DeviceSpec::Unix { .. } => {
            return Err(format!(
                "device {device_name}: forward runs a capture through a card of its own; a \
                 running node's card carries live traffic (use --device model or verilator)"
            )
            .into())
        }
        _ => {
            return Err(format!(
                "device {device_name}: forward resets the card and feeds frames into its \
                 ports, which only simulated cards (model, verilator) or software allow"
            )
            .into())
        }
    };
    let (verdicts, written) = run;
    let mut sum = Summary {
        device: device_name,
        frames: verdicts.len(),
        written: written.len(),
        ..Summary::default()
    };
    for v in &verdicts {
        match v.verdict {
            "forwarded" => sum.forwarded_by_card += 1,
            "punted" => {
                sum.punted += 1;
                if !v.out.is_empty() {
                    sum.punted_sent_on += 1;
                }
            }
            "dropped" => sum.dropped_by_card += 1,
            _ => sum.host_only += 1,
        }
        if let Some(r) = &v.reason {
            *sum.reasons.entry(r.clone()).or_default() += 1;
        }
        if let Some(h) = v.host.as_deref().and_then(|h| h.strip_prefix("dropped:")) {
            *sum.host_drops.entry(h.to_owned()).or_default() += 1;
        }
        if v.host.as_deref() == Some("not-ours") {
            *sum.host_drops.entry("not-ours".to_owned()).or_default() += 1;
        }
    }
    let file = pcap::write(LinkType::Ethernet, &written);
    let mut f = std::fs::File::create(opts.output)
        .map_err(|e| format!("--out {}: cannot create: {e}", opts.output.display()))?;
    f.write_all(&file)
        .and_then(|()| f.flush())
        .map_err(|e| format!("--out {}: cannot write: {e}", opts.output.display()))?;
    let mut s = String::new();
    if opts.json {
        for v in &verdicts {
            s += &serde_json::to_string(v)?;
            s.push('\n');
        }
        s += &serde_json::to_string(&serde_json::json!({ "summary": sum }))?;
        s.push('\n');
    } else {
        for v in &verdicts {
            s += &v.text();
        }
        s += &sum.text();
    }
    Ok(s)
}

/// Feeds every frame to `node`. Returns the verdicts and the frames that left (through the
/// card, or from the host without one), in order, stamped with their input frame's time.
fn drive<T: NodeSpecificTable>(
    node: &mut Node<T>,
    frames: &[pcap::Frame],
    opts: &Options<'_>,
) -> Res<(Vec<FrameVerdict>, Vec<PcapPacket>)> {
    let t0 = frames.first().map_or(0, |f| f.ts_us);
    // A flow's first direction (whether it ran lo -> hi) marks the outside.
    let mut first_dir: HashMap<host::core::FlowKey, bool> = HashMap::new();
    let mut verdicts = Vec::with_capacity(frames.len());
    let mut written = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let mut v = FrameVerdict {
            frame: i + 1,
            port: 0,
            did: None,
            verdict: "dropped",
            reason: None,
            host: None,
            out: Vec::new(),
        };
        let Some(eth) = ethernet(f.link, &f.data) else {
            // An IP-less frame of a link type without Ethernet: nothing a port can take.
            v.verdict = "host";
            v.host = Some("dropped:parse".to_owned());
            verdicts.push(v);
            continue;
        };
        let parsed = parse_packet(&eth, Framing::Ethernet).ok();
        let flow = parsed.as_ref().and_then(|p| p.flow(node.distributor()));
        if let Some((key, dir, did)) = &flow {
            v.did = Some(did.0);
            let first = *first_dir.entry(*key).or_insert(*dir);
            v.port = u8::from(first != *dir);
        }
        if !opts.inside.is_empty() {
            v.port = match &parsed {
                Some(p) => u8::from(opts.inside.iter().any(|c| c.contains(p.src))),
                None => 0,
            };
        }
        let now = Millis(1 + f.ts_us.saturating_sub(t0) / 1000);
        let mut out = Vec::new();
        let outcome = node.handle_frame_into(now, v.port, &eth, &mut out);
        match outcome {
            FrameOutcome::ForwardedByCard => v.verdict = "forwarded",
            FrameOutcome::DroppedByCard(r) => {
                v.verdict = "dropped";
                v.reason = Some(r.name());
            }
            FrameOutcome::Slow(h, reason) => {
                v.verdict = "punted";
                v.reason = Some(reason.name());
                v.host = Some(host_text(h).0);
            }
            FrameOutcome::Host(h) => {
                v.verdict = "host";
                v.host = Some(host_text(h).0);
            }
        }
        for (port, frame) in out {
            v.out.push(port);
            written.push(PcapPacket {
                ts_us: f.ts_us,
                data: frame,
            });
        }
        verdicts.push(v);
    }
    Ok((verdicts, written))
}
