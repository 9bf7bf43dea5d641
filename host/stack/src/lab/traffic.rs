//! The wire's traffic: generated TCP and UDP flows (or a pcap file), paced at a set rate, every
//! packet delivered to every node, every node's verdict collected, and the accounting that turns
//! verdicts into the demo report (unhandled, double handled, established without state).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use etherparse::PacketBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::core::ids::NodeId;
use crate::core::{Endpoint, FlowKey, L4Proto};
use crate::daemon::wireproto::{self, Code};

/// Where a packet sits in its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// TCP handshake (SYN, SYN-ACK, ACK) or a UDP flow's first packet.
    Handshake,
    /// After the handshake: needs the connection's state.
    Established,
    /// A pcap packet: not classified.
    Unknown,
}

/// One packet of the run.
#[derive(Clone, Debug)]
pub struct PacketRec {
    /// Flow index (`u32::MAX` for pcap packets).
    pub flow: u32,
    /// Phase in its flow.
    pub phase: Phase,
    /// Milliseconds since traffic start when sent.
    pub t_ms: u64,
    /// Verdicts received.
    pub verdicts: Vec<(NodeId, Code)>,
}

struct Flow {
    tcp: bool,
    client: [u8; 4],
    server: [u8; 4],
    cport: u16,
    sport: u16,
    idx: u16,
    len: u16,
}

impl Flow {
    /// The next packet of this flow and its phase; None when finished.
    fn next_packet(&mut self, out: &mut Vec<u8>) -> Option<Phase> {
        if self.idx >= self.len {
            return None;
        }
        out.clear();
        let i = self.idx;
        self.idx += 1;
        let payload = [0x5au8; 32];
        if !self.tcp {
            let (s, d, sp, dp) = if i.is_multiple_of(2) {
                (self.client, self.server, self.cport, self.sport)
            } else {
                (self.server, self.client, self.sport, self.cport)
            };
            PacketBuilder::ipv4(s, d, 64)
                .udp(sp, dp)
                .write(out, &payload)
                .ok()?;
            return Some(if i == 0 {
                Phase::Handshake
            } else {
                Phase::Established
            });
        }
        let c2s = |f: &Flow| PacketBuilder::ipv4(f.client, f.server, 64);
        let s2c = |f: &Flow| PacketBuilder::ipv4(f.server, f.client, 64);
        let cseq = 1000u32 + u32::from(i) * 32;
        let sseq = 9000u32 + u32::from(i) * 32;
        let last = self.len - 1;
        let r = match i {
            0 => c2s(self)
                .tcp(self.cport, self.sport, 1000, 65535)
                .syn()
                .write(out, &[]),
            1 => s2c(self)
                .tcp(self.sport, self.cport, 9000, 65535)
                .syn()
                .ack(1001)
                .write(out, &[]),
            2 => c2s(self)
                .tcp(self.cport, self.sport, 1001, 65535)
                .ack(9001)
                .write(out, &[]),
            n if n == last - 2 => c2s(self)
                .tcp(self.cport, self.sport, cseq, 65535)
                .fin()
                .ack(sseq)
                .write(out, &[]),
            n if n == last - 1 => s2c(self)
                .tcp(self.sport, self.cport, sseq, 65535)
                .fin()
                .ack(cseq + 1)
                .write(out, &[]),
            n if n == last => c2s(self)
                .tcp(self.cport, self.sport, cseq + 1, 65535)
                .ack(sseq + 1)
                .write(out, &[]),
            n if n % 2 == 1 => s2c(self)
                .tcp(self.sport, self.cport, sseq, 65535)
                .ack(cseq)
                .psh()
                .write(out, &payload),
            _ => c2s(self)
                .tcp(self.cport, self.sport, cseq, 65535)
                .ack(sseq)
                .psh()
                .write(out, &payload),
        };
        r.ok()?;
        Some(if i < 3 {
            Phase::Handshake
        } else {
            Phase::Established
        })
    }
}

/// The three handshake packets (SYN, SYN-ACK, ACK) of generated TCP connection `i`: client
/// `10.a.b.c:40000` (`a.b.c` = the low 24 bits of `i`) to `192.0.2.1:443`.
pub fn handshake(i: u32) -> Vec<Vec<u8>> {
    let mut f = Flow {
        tcp: true,
        client: [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
        server: [192, 0, 2, 1],
        cport: 40000,
        sport: 443,
        idx: 0,
        len: 10,
    };
    let mut out = Vec::new();
    for _ in 0..3 {
        let mut b = Vec::with_capacity(64);
        if f.next_packet(&mut b).is_some() {
            out.push(b);
        }
    }
    out
}

/// What traffic to generate.
#[derive(Clone, Debug)]
pub enum Source {
    /// `concurrent` flows at a time, each 10-40 packets, replaced as they finish.
    Flows {
        /// Concurrent flows.
        concurrent: usize,
        /// Seed.
        seed: u64,
    },
    /// The IP packets of a pcap file, in order, looped.
    Packets(Vec<Vec<u8>>),
}

/// Reads a pcap or pcapng file into bare IP packets: the link layer of every link type the
/// capture reader accepts is taken off (Ethernet with its VLAN tags, null/loopback, Linux
/// cooked); frames that hold no IPv4/IPv6 packet are left out.
///
/// # Errors
/// A message naming the file and problem (what is malformed and at which offset).
pub fn load_pcap(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let out =
        crate::core::pcap::ip_packets(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if out.is_empty() {
        return Err(format!("{}: no IPv4/IPv6 packets", path.display()));
    }
    Ok(out)
}

/// The wire: sends traffic to every node and collects verdicts.
pub struct Wire {
    sock: UdpSocket,
    nodes: Vec<SocketAddr>,
    /// Every packet sent, indexed by sequence number.
    pub packets: Vec<PacketRec>,
    /// Verdicts that named an unknown sequence number.
    pub stray: u64,
    flows: Vec<Flow>,
    rng: ChaCha8Rng,
    next_flow_id: u32,
    flow_ids: Vec<u32>,
    rr: usize,
    source: Source,
    pcap_at: usize,
    buf: Vec<u8>,
    /// Heavy flows ([`Wire::with_heavy_flows`]): long-lived UDP flows that carry most packets.
    heavy: Vec<(u32, Flow)>,
    heavy_rr: usize,
}

impl Wire {
    /// A wire delivering to `nodes` (their wire addresses).
    ///
    /// # Errors
    /// The bind error.
    pub async fn new(nodes: Vec<SocketAddr>, source: Source) -> std::io::Result<Self> {
        let sock =
            wireproto::bind_wire_socket("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
        let seed = match &source {
            Source::Flows { seed, .. } => *seed,
            Source::Packets(_) => 1,
        };
        Ok(Self {
            sock,
            nodes,
            packets: Vec::new(),
            stray: 0,
            flows: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_flow_id: 0,
            flow_ids: Vec::new(),
            rr: 0,
            source,
            pcap_at: 0,
            buf: Vec::with_capacity(128),
            heavy: Vec::new(),
            heavy_rr: 0,
        })
    }

    /// Skewed traffic: `n` long-lived UDP flows (they never end) carry 80% of the generated
    /// packets, the other flows the rest (no effect on pcap replay). Only flows whose key
    /// `keep` accepts are taken (for example flows of distinct identifiers that one node owns,
    /// so that the skew is certain, not left to the run's random cluster key); after 100,000
    /// flows tried, fewer than `n`.
    #[must_use]
    pub fn with_heavy_flows(mut self, n: usize, mut keep: impl FnMut(&FlowKey) -> bool) -> Self {
        for _ in 0..100_000 {
            if self.heavy.len() >= n {
                break;
            }
            let (id, mut f) = self.new_flow();
            f.tcp = false;
            f.sport = 53;
            f.len = u16::MAX;
            let end = |a: [u8; 4], port| Endpoint::new(IpAddr::from(a), port);
            let (key, _) =
                FlowKey::transport(L4Proto::Udp, end(f.client, f.cport), end(f.server, f.sport));
            if keep(&key) {
                self.heavy.push((id, f));
            }
        }
        self
    }

    /// The next packet of a heavy flow (round robin), restarting one at its established
    /// phase when it would end.
    fn heavy_packet(&mut self) -> Option<(u32, Phase, Vec<u8>)> {
        let n = self.heavy.len();
        let (id, f) = self.heavy.get_mut(self.heavy_rr % n.max(1))?;
        self.heavy_rr = self.heavy_rr.wrapping_add(1);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if f.idx >= f.len - 1 {
            f.idx = 1;
        }
        let phase = f.next_packet(&mut buf);
        let out = phase.map(|ph| (*id, ph, buf.clone()));
        self.buf = buf;
        out
    }

    fn new_flow(&mut self) -> (u32, Flow) {
        let id = self.next_flow_id;
        self.next_flow_id += 1;
        let tcp = self.rng.random_range(0..10) < 8;
        let f = Flow {
            tcp,
            client: [10, 1, (id >> 8) as u8, id as u8],
            server: [192, 0, 2, self.rng.random_range(1..=20)],
            cport: self.rng.random_range(1024..=65000),
            sport: if tcp { 443 } else { 53 },
            idx: 0,
            len: self.rng.random_range(10..=40),
        };
        (id, f)
    }

    fn next_packet(&mut self) -> Option<(u32, Phase, Vec<u8>)> {
        match &self.source {
            Source::Packets(p) => {
                let pkt = p.get(self.pcap_at % p.len().max(1))?.clone();
                self.pcap_at += 1;
                Some((u32::MAX, Phase::Unknown, pkt))
            }
            Source::Flows { .. } if !self.heavy.is_empty() && self.rng.random_range(0..10) < 8 => {
                self.heavy_packet()
            }
            Source::Flows { concurrent, .. } => {
                let concurrent = (*concurrent).max(1);
                while self.flows.len() < concurrent {
                    let (id, f) = self.new_flow();
                    self.flows.push(f);
                    self.flow_ids.push(id);
                }
                for _ in 0..self.flows.len() + 1 {
                    self.rr = (self.rr + 1) % self.flows.len();
                    let i = self.rr;
                    let mut buf = std::mem::take(&mut self.buf);
                    let r = self.flows[i].next_packet(&mut buf);
                    self.buf = buf;
                    match r {
                        Some(phase) => return Some((self.flow_ids[i], phase, self.buf.clone())),
                        None => {
                            let (id, f) = self.new_flow();
                            self.flows[i] = f;
                            self.flow_ids[i] = id;
                        }
                    }
                }
                None
            }
        }
    }

    fn collect(&mut self, d: &[u8]) {
        match wireproto::parse_verdict(d) {
            Some((seq, node, code)) => match self.packets.get_mut(seq as usize) {
                Some(p) => p.verdicts.push((node, code)),
                None => self.stray += 1,
            },
            None => self.stray += 1,
        }
    }

    /// Sends traffic at `pps` for `duration`, then waits `drain` for late verdicts. `sent` is
    /// kept up to date with the number of packets sent (for progress output).
    pub async fn run(
        mut self,
        pps: u64,
        duration: Duration,
        drain: Duration,
        sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let start = Instant::now();
        let mut interval = tokio::time::interval(Duration::from_millis(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut rbuf = vec![0u8; 2048];
        while start.elapsed() < duration + drain {
            tokio::select! {
                _ = interval.tick() => {
                    let el = start.elapsed();
                    if el < duration {
                        let target = el.as_secs_f64() * pps as f64;
                        while (self.packets.len() as f64) < target {
                            let Some((flow, phase, pkt)) = self.next_packet() else { break };
                            let seq = self.packets.len() as u64;
                            self.packets.push(PacketRec {
                                flow,
                                phase,
                                t_ms: el.as_millis() as u64,
                                verdicts: Vec::new(),
                            });
                            let d = wireproto::encode_packet(seq, &pkt);
                            for n in &self.nodes {
                                let _ = self.sock.try_send_to(&d, *n);
                            }
                        }
                        sent.store(self.packets.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                r = self.sock.recv_from(&mut rbuf) => {
                    if let Ok((n, _)) = r {
                        let d = rbuf[..n].to_vec();
                        self.collect(&d);
                        while let Ok((n, _)) = self.sock.try_recv_from(&mut rbuf) {
                            let d = rbuf[..n].to_vec();
                            self.collect(&d);
                        }
                    }
                }
            }
        }
        self
    }
}

/// A node kill or partition, as the accounting needs it: state the node created from
/// `t_ms - window` until `until_ms` may never have reached the others (a kill: `until_ms ==
/// t_ms`; a partition: until the node fenced itself).
#[derive(Clone, Copy, Debug)]
pub struct KillMark {
    /// The node.
    pub node: NodeId,
    /// Milliseconds since traffic start.
    pub t_ms: u64,
    /// End of the span whose state may be lost (ms since traffic start).
    pub until_ms: u64,
}

/// An established-connection packet whose owner had no state.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NoStateSample {
    /// Send time (ms since traffic start).
    pub t_ms: u64,
    /// The node that had no state.
    pub node: u16,
    /// The flow's last handled packet before: send time (ms), node.
    pub last: Option<(u64, u16)>,
}

/// Packet accounting for the report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Accounting {
    /// Packets sent.
    pub packets: u64,
    /// Packets handled per node.
    pub per_node: BTreeMap<u16, u64>,
    /// Packets no node handled.
    pub unhandled: u64,
    /// Of those, packets sent within a takeover or reallocation gap (an owner gone or an
    /// identifier between release and assignment).
    pub unhandled_in_transition: u64,
    /// Unhandled packets by what the nodes said: `not_ready` (some node was syncing, fenced or
    /// behind the agreed epoch), `no_owner` (every answer was "not ours").
    pub unhandled_reasons: BTreeMap<String, u64>,
    /// Send times (ms) of the first unhandled packets outside any gap, with the verdicts seen.
    pub unhandled_outside_gaps: Vec<(u64, String)>,
    /// Packets two or more nodes handled.
    pub double_handled: u64,
    /// Send times (ms) of the first double-handled packets, with the verdicts seen.
    pub double_handled_detail: Vec<(u64, String)>,
    /// Established-connection packets whose owner had no state, outside any crash window.
    pub established_without_state: u64,
    /// The same inside a crash's replication window.
    pub established_without_state_in_crash_window: u64,
    /// The first of those outside crash windows.
    pub established_without_state_detail: Vec<NoStateSample>,
    /// Flows generated.
    pub flows: u64,
    /// Flows whose handshake was not handled (e.g. SYN inside a takeover gap).
    pub flows_broken: u64,
    /// Verdicts per code.
    pub verdicts: BTreeMap<String, u64>,
}

/// Turns the packet records into the report's numbers. `window_ms` is the crash window; a
/// packet sent in `[t - 0, t + gap]` after a kill `t` whose identifier had no owner is counted
/// as in transition when `gaps` contains that interval.
pub fn account(
    packets: &[PacketRec],
    kills: &[KillMark],
    window_ms: u64,
    gaps: &[(u64, u64)],
) -> Accounting {
    let mut a = Accounting {
        packets: packets.len() as u64,
        ..Default::default()
    };
    // per flow: established? and last handled packet (time, node)
    struct FlowState {
        established: bool,
        broken: bool,
        last: Option<(u64, NodeId)>,
    }
    let mut flows: BTreeMap<u32, FlowState> = BTreeMap::new();
    for p in packets {
        for (_, c) in &p.verdicts {
            *a.verdicts.entry(format!("{c:?}")).or_insert(0) += 1;
        }
        let handlers: Vec<(NodeId, Code)> = p
            .verdicts
            .iter()
            .copied()
            .filter(|(_, c)| c.handled())
            .collect();
        match handlers.len() {
            0 => {
                a.unhandled += 1;
                let reason = if p.verdicts.iter().any(|(_, c)| *c == Code::NotReady) {
                    "not_ready"
                } else {
                    "no_owner"
                };
                *a.unhandled_reasons.entry(reason.to_string()).or_insert(0) += 1;
                if gaps.iter().any(|(s, e)| p.t_ms >= *s && p.t_ms <= *e) {
                    a.unhandled_in_transition += 1;
                } else if a.unhandled_outside_gaps.len() < 20 {
                    a.unhandled_outside_gaps
                        .push((p.t_ms, format!("{:?}", p.verdicts)));
                }
            }
            1 => {}
            _ => {
                a.double_handled += 1;
                if a.double_handled_detail.len() < 20 {
                    a.double_handled_detail
                        .push((p.t_ms, format!("{:?}", p.verdicts)));
                }
            }
        }
        for (n, _) in &handlers {
            *a.per_node.entry(n.0).or_insert(0) += 1;
        }
        if p.flow == u32::MAX {
            continue;
        }
        let f = flows.entry(p.flow).or_insert(FlowState {
            established: false,
            broken: false,
            last: None,
        });
        let ok = handlers
            .iter()
            .any(|(_, c)| matches!(c, Code::Hit | Code::Created));
        let no_state = handlers
            .iter()
            .any(|(_, c)| matches!(c, Code::TcpNoState | Code::NoState));
        match p.phase {
            Phase::Handshake => {
                if !ok {
                    f.broken = true;
                }
            }
            Phase::Established => {
                if !f.broken && !f.established {
                    f.established = true;
                }
                if f.established && no_state {
                    let in_window = f.last.is_some_and(|(t, n)| {
                        kills
                            .iter()
                            .any(|k| k.node == n && t + window_ms >= k.t_ms && t <= k.until_ms)
                    });
                    if in_window {
                        a.established_without_state_in_crash_window += 1;
                    } else {
                        a.established_without_state += 1;
                        if a.established_without_state_detail.len() < 20 {
                            let node = handlers.first().map_or(0, |(n, _)| n.0);
                            a.established_without_state_detail.push(NoStateSample {
                                t_ms: p.t_ms,
                                node,
                                last: f.last.map(|(t, n)| (t, n.0)),
                            });
                        }
                    }
                }
            }
            Phase::Unknown => {}
        }
        if ok {
            if let Some((n, _)) = handlers.first() {
                f.last = Some((p.t_ms, *n));
            }
        }
    }
    a.flows = flows.len() as u64;
    a.flows_broken = flows.values().filter(|f| f.broken).count() as u64;
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pcap::{self, LinkType, PcapPacket};

    fn temp_file(tag: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("traffic-{tag}-{}.cap", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn load_pcap_reads_pcap_and_pcapng_of_every_link_type() {
        let ip = handshake(5).remove(0);
        let mut eth = vec![
            2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0, 7, 0x08, 0x00,
        ];
        eth.extend_from_slice(&ip);
        let mut arp = vec![0xffu8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.resize(20, 0);
        sll2.extend_from_slice(&ip);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        let mut lo = 2u32.to_be_bytes().to_vec();
        lo.extend_from_slice(&ip);
        let cases = [
            (LinkType::Ethernet, vec![eth, arp]),
            (LinkType::Raw, vec![ip.clone()]),
            (LinkType::LinuxSll, vec![sll]),
            (LinkType::LinuxSll2, vec![sll2]),
            (LinkType::Null, vec![null]),
            (LinkType::Loop, vec![lo]),
        ];
        for (link, frames) in cases {
            let pk: Vec<PcapPacket> = frames
                .into_iter()
                .map(|data| PcapPacket { ts_us: 1, data })
                .collect();
            for (kind, bytes) in [
                ("pcap", pcap::write(link, &pk)),
                ("ng", pcap::write_ng(link, &pk)),
            ] {
                let p = temp_file(kind, &bytes);
                assert_eq!(load_pcap(&p).unwrap(), vec![ip.clone()], "{link:?} {kind}");
                let _ = std::fs::remove_file(&p);
            }
        }
    }

    #[test]
    fn load_pcap_errors_name_file_and_problem() {
        let ip = handshake(5).remove(0);
        let ng = pcap::write_ng(LinkType::Raw, &[PcapPacket { ts_us: 1, data: ip }]);
        let p = temp_file("cut", &ng[..ng.len() - 2]);
        let e = load_pcap(&p).unwrap_err();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("offset"),
            "{e}"
        );
        let mut bad = ng.clone();
        bad[4] = 13;
        std::fs::write(&p, &bad).unwrap();
        assert!(load_pcap(&p).unwrap_err().contains("offset"));
        std::fs::write(&p, pcap::write_ng(LinkType::Raw, &[])).unwrap();
        assert!(load_pcap(&p).unwrap_err().contains("no IPv4/IPv6 packets"));
        for cut in 0..ng.len() {
            std::fs::write(&p, &ng[..cut]).unwrap();
            let _ = load_pcap(&p);
        }
        let _ = std::fs::remove_file(&p);
    }
}
