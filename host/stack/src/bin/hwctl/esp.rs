//! `hwctl esp decrypt|encrypt`: ESP packets of a capture file through an
//! [`EspEngine`] (the `ring` software path, or a simulated card's ESP engine
//! with the software path for what the card cannot hold), one verdict line per
//! packet, results as a raw-IP pcap.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use driver::esp::{
    CardEsp, Direction, EspEngine, EspError, EspRequest, FallbackEsp, Mode, SoftwareEsp, Spi,
};
use host::core::pcap::{self, Frame, LinkType, PcapPacket};
use host::device::DeviceSpec;
use serde::Serialize;

use super::capture;
use super::sa_spec::SaSpec;

/// ESP is IP protocol 50.
const IPPROTO_ESP: u8 = 50;
/// "No next header": a dummy packet (RFC 4303 section 2.6), dropped.
const NH_NONE: u8 = 59;

/// Which way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// ESP in, plaintext out.
    Decrypt,
    /// Plaintext in, ESP out.
    Encrypt,
}

/// The engine a device spec gives for ESP.
///
/// # Errors
/// A message naming the device, why it cannot run ESP here, and what to use.
pub fn engine(spec: &DeviceSpec, sas: usize) -> Result<Box<dyn EspEngine>, String> {
    match spec {
        DeviceSpec::Software => {
            let cap = u32::try_from(sas.max(1)).unwrap_or(u32::MAX);
            Ok(Box::new(SoftwareEsp::new(cap)))
        }
        DeviceSpec::Model { .. } | DeviceSpec::Verilator => {
            // The simulated card's SA table and ESP engine (SPI lookup through
            // its CAM); SAs the card cannot hold run on the ring path.
            let card = spec.open_card().map_err(|e| e.to_string())?;
            let hw = CardEsp::new(card).map_err(|e| {
                format!("device {spec}: {e}\n  fix: use --device software (the ring path)")
            })?;
            let cap = u32::try_from(sas.max(1)).unwrap_or(u32::MAX);
            Ok(Box::new(FallbackEsp::new(Some(hw), cap)))
        }
        DeviceSpec::Vfio { .. } | DeviceSpec::Pci { .. } => Err(format!(
            "device {spec}: hwctl runs ESP files only on a simulated card or the software path: \
             installing SAs would change a card in service\n  fix: use --device software"
        )),
        DeviceSpec::Unix { .. } => Err(format!(
            "device {spec}: a running node's ESP engine is not driven from files\n  fix: use \
             --device software with the SA's key, or `hwctl --device {spec} sas` for its state"
        )),
    }
}

/// One packet's outcome, as printed and in `--json`.
#[derive(Serialize, Clone, Debug)]
pub struct PacketReport {
    /// Frame number in the input file, from 1.
    pub frame: usize,
    /// SPI (`0x%08x`), when the packet is long enough to carry one.
    pub spi: Option<String>,
    /// Sequence number: full 64-bit when the SA is known, else the 32 bits
    /// on the wire.
    pub seq: Option<u64>,
    /// `ok`, `auth-failed`, `replay`, `unknown-spi`, `malformed` (decrypt);
    /// `ok`, `no-sa`, `unsupported`, `seq-exhausted` (encrypt).
    pub verdict: &'static str,
    /// Why, when not ok (or a note, such as a dummy packet).
    pub detail: Option<String>,
    /// Record number in the output file (from 1), when one was written.
    pub record: Option<usize>,
}

/// The run as a whole (`--json`).
#[derive(Serialize, Debug)]
pub struct Report {
    /// `decrypt` or `encrypt`.
    pub op: &'static str,
    /// The device spec.
    pub device: String,
    /// Input file.
    pub input: String,
    /// Output file.
    pub output: String,
    /// Frames read.
    pub frames: usize,
    /// Frames processed (ESP packets for decrypt, IP packets for encrypt).
    pub processed: usize,
    /// Frames skipped: not ESP (decrypt) or not IP (encrypt).
    pub skipped: usize,
    /// Records written to the output.
    pub written: usize,
    /// Count per verdict.
    pub verdicts: BTreeMap<&'static str, usize>,
    /// Per processed packet, in input order.
    pub packets: Vec<PacketReport>,
    /// Each SA's state after the run (never its key).
    pub sas: Vec<SaReport>,
}

/// An SA's state after the run, as `--json` shows it. Never key material.
#[derive(Serialize, Debug)]
pub struct SaReport {
    /// SPI (`0x%08x`).
    pub spi: String,
    /// Destination address.
    pub dst: String,
    /// `tunnel` or `transport`.
    pub mode: &'static str,
    /// `aes-gcm` or `aes-gmac`.
    pub cipher: &'static str,
    /// Key size in bits.
    pub key_bits: u32,
    /// ICV length in bytes.
    pub icv: usize,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Encrypt: the last sequence number sent.
    pub last_seq_sent: Option<u64>,
    /// Decrypt: the replay window's highest accepted sequence number.
    pub replay_top: Option<u64>,
    /// Decrypt: the replay window's bitmap (bit i: top - i seen).
    pub replay_bitmap: Option<String>,
    /// Packets processed successfully.
    pub packets: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// ICV failures.
    pub auth_failures: u64,
    /// Replay drops.
    pub replay_drops: u64,
}

impl Report {
    /// The human form: one line per packet, then a summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for p in &self.packets {
            let _ = write!(
                s,
                "frame {:<6} spi {:<10}  seq {:<10}  {}",
                p.frame,
                p.spi.as_deref().unwrap_or("-"),
                p.seq.map_or_else(|| "-".to_owned(), |q| q.to_string()),
                p.verdict
            );
            if let Some(d) = &p.detail {
                let _ = write!(s, " ({d})");
            }
            s.push('\n');
        }
        let what = match self.op {
            "decrypt" => "ESP packets",
            _ => "IP packets",
        };
        let skipped = match self.op {
            "decrypt" => "non-ESP frames skipped",
            _ => "non-IP frames skipped",
        };
        let counts: Vec<String> = self
            .verdicts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "{} frames: {} {what} ({}), {} {skipped}; {} records written to {}",
            self.frames,
            self.processed,
            if counts.is_empty() {
                "none".to_owned()
            } else {
                counts.join(", ")
            },
            self.skipped,
            self.written,
            self.output
        );
        s
    }
}

/// Runs `esp decrypt|encrypt`.
///
/// # Errors
/// Unreadable or unparsable input, unwritable output, SAs the engine
/// refuses, an engine backend failure.
pub fn run(
    op: Op,
    spec: &DeviceSpec,
    sas: &[SaSpec],
    input: &Path,
    output: &Path,
) -> Result<Report, String> {
    if sas.is_empty() {
        return Err("esp needs at least one --sa".into());
    }
    let mut seen = BTreeMap::new();
    for sa in sas {
        if let Some(prev) = seen.insert(sa.spi, sa.dst) {
            return Err(format!(
                "two --sa with spi {} (dst {prev} and {}): SAs are looked up by SPI, give each \
                 SPI once",
                sa.spi, sa.dst
            ));
        }
    }
    // one key for two SAs seals two packets under one (key, nonce) pair
    for (i, a) in sas.iter().enumerate() {
        if let Some(b) = sas[..i]
            .iter()
            .find(|b| b.key.key_bytes() == a.key.key_bytes())
        {
            return Err(format!(
                "--sa spi={} and --sa spi={} have the same key: each SA (each direction of a \
                 tunnel) needs its own key and salt, or two packets are sealed under one \
                 (key, nonce) pair; give spi={} its own key",
                b.spi, a.spi, a.spi
            ));
        }
    }
    let mut eng = engine(spec, sas.len())?;
    let bytes =
        std::fs::read(input).map_err(|e| format!("cannot read --in {}: {e}", input.display()))?;
    let frames = pcap::read_frames(&bytes).map_err(|e| format!("--in {}: {e}", input.display()))?;
    let direction = match op {
        Op::Decrypt => Direction::Inbound,
        Op::Encrypt => Direction::Outbound,
    };
    for sa in sas {
        eng.install_sa(&sa.config(direction))
            .map_err(|e| format!("--sa spi={}: the engine refused it: {e}", sa.spi))?;
        let mut st = eng
            .sa_state(direction, sa.spi)
            .map_err(|e| format!("--sa spi={}: {e}", sa.spi))?;
        match direction {
            Direction::Inbound => st.window.top = sa.first_seq - 1,
            Direction::Outbound => st.seq = sa.first_seq - 1,
        }
        eng.set_sa_state(direction, sa.spi, &st)
            .map_err(|e| format!("--sa spi={}: {e}", sa.spi))?;
    }
    let mut report = Report {
        op: match op {
            Op::Decrypt => "decrypt",
            Op::Encrypt => "encrypt",
        },
        device: spec.to_string(),
        input: input.display().to_string(),
        output: output.display().to_string(),
        frames: frames.len(),
        processed: 0,
        skipped: 0,
        written: 0,
        verdicts: BTreeMap::new(),
        packets: Vec::new(),
        sas: Vec::new(),
    };
    let mut records: Vec<PcapPacket> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let frame = i + 1;
        let r = match op {
            Op::Decrypt => decrypt_one(eng.as_mut(), sas, frame, f)?,
            Op::Encrypt => encrypt_one(eng.as_mut(), sas, frame, f)?,
        };
        let Some((mut p, out)) = r else {
            report.skipped += 1;
            continue;
        };
        report.processed += 1;
        if let Some(o) = out {
            records.push(PcapPacket {
                ts_us: f.ts_us,
                data: o,
            });
            p.record = Some(records.len());
        }
        *report.verdicts.entry(p.verdict).or_default() += 1;
        report.packets.push(p);
    }
    report.written = records.len();
    for sa in sas {
        let st = eng
            .sa_state(direction, sa.spi)
            .map_err(|e| format!("--sa spi={}: {e}", sa.spi))?;
        let inbound = direction == Direction::Inbound;
        report.sas.push(SaReport {
            spi: sa.spi.to_string(),
            dst: sa.dst.to_string(),
            mode: match sa.mode {
                Mode::Tunnel => "tunnel",
                Mode::Transport => "transport",
            },
            cipher: match sa.cipher {
                driver::esp::Cipher::AesGcm => "aes-gcm",
                driver::esp::Cipher::AesGmac => "aes-gmac",
            },
            key_bits: sa.key.bits(),
            icv: sa.icv.bytes(),
            esn: sa.esn,
            last_seq_sent: (!inbound).then_some(st.seq),
            replay_top: inbound.then_some(st.window.top),
            replay_bitmap: inbound.then(|| format!("0x{:016x}", st.window.bitmap)),
            packets: st.counters.packets,
            bytes: st.counters.bytes,
            auth_failures: st.counters.auth_failures,
            replay_drops: st.counters.replay_drops,
        });
    }
    std::fs::write(output, pcap::write(LinkType::Raw, &records))
        .map_err(|e| format!("cannot write --out {}: {e}", output.display()))?;
    Ok(report)
}

type OneResult = Result<Option<(PacketReport, Option<Vec<u8>>)>, String>;

fn verdict(frame: usize, spi: Option<Spi>, seq: Option<u64>, v: &'static str) -> PacketReport {
    PacketReport {
        frame,
        spi: spi.map(|s| s.to_string()),
        seq,
        verdict: v,
        detail: None,
        record: None,
    }
}

fn detail(mut p: PacketReport, d: impl Into<String>) -> PacketReport {
    p.detail = Some(d.into());
    p
}

fn decrypt_one(eng: &mut dyn EspEngine, sas: &[SaSpec], frame: usize, f: &Frame) -> OneResult {
    let Some(ip) = pcap::ip_packet(f.link, &f.data) else {
        return Ok(None);
    };
    // Find ESP: a malformed IP header is not ESP we can see.
    let Some(v) = capture::view(ip, true) else {
        // An IPv4 header naming ESP but with broken lengths is a malformed
        // ESP packet; anything else is just not ESP.
        if ip.len() >= 20 && ip[0] >> 4 == 4 && ip[9] == IPPROTO_ESP {
            return Ok(Some((
                detail(
                    verdict(frame, None, None, "malformed"),
                    "IPv4 header lengths do not fit the capture",
                ),
                None,
            )));
        }
        return Ok(None);
    };
    let esp_at = if v.proto == IPPROTO_ESP {
        v.payload_at
    } else if let Some(at) = udp_encapsulated(ip, &v) {
        at
    } else {
        return Ok(None);
    };
    let esp = &ip[esp_at..v.end];
    let spi = (esp.len() >= 4).then(|| Spi(u32::from_be_bytes([esp[0], esp[1], esp[2], esp[3]])));
    let wire_seq =
        (esp.len() >= 8).then(|| u64::from(u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]])));
    if v.fragment {
        return Ok(Some((
            detail(
                verdict(frame, spi, wire_seq, "malformed"),
                "IP fragment (reassemble the capture first)",
            ),
            None,
        )));
    }
    let (Some(spi), Some(_)) = (spi, wire_seq) else {
        return Ok(Some((
            detail(
                verdict(frame, spi, None, "malformed"),
                format!("{} bytes, shorter than the ESP header", esp.len()),
            ),
            None,
        )));
    };
    let Some(sa) = sas.iter().find(|s| s.spi == spi) else {
        return Ok(Some((
            verdict(frame, Some(spi), wire_seq, "unknown-spi"),
            None,
        )));
    };
    if sa.dst != v.dst {
        return Ok(Some((
            detail(
                verdict(frame, Some(spi), wire_seq, "unknown-spi"),
                format!(
                    "the SA with this SPI is for dst {}, the packet goes to {}",
                    sa.dst, v.dst
                ),
            ),
            None,
        )));
    }
    match eng.process(EspRequest::Decapsulate { packet: esp }) {
        Ok((o, plain)) => {
            let p = verdict(frame, Some(spi), Some(o.seq), "ok");
            if o.next_header == NH_NONE {
                return Ok(Some((
                    detail(p, "dummy packet (next header 59), not written"),
                    None,
                )));
            }
            let mut p = p;
            let out = match sa.mode {
                Mode::Tunnel => {
                    if !matches!(o.next_header, 4 | 41) {
                        p = detail(
                            p,
                            format!(
                                "tunnel mode, but next header {} is not IPv4/IPv6: payload \
                                 written as is",
                                o.next_header
                            ),
                        );
                    }
                    plain
                }
                Mode::Transport => {
                    let mut pkt = Vec::with_capacity(v.payload_at + plain.len());
                    pkt.extend_from_slice(&ip[..v.payload_at]);
                    pkt[v.nh_at] = o.next_header;
                    pkt.extend_from_slice(&plain);
                    capture::fix_lengths(&mut pkt);
                    pkt
                }
            };
            Ok(Some((p, Some(out))))
        }
        Err(e) => {
            let (seq, v) = match e {
                EspError::AuthFailed { seq, .. } => (Some(seq), "auth-failed"),
                EspError::Replay { seq, .. } => (Some(seq), "replay"),
                EspError::UnknownSpi { .. } => (wire_seq, "unknown-spi"),
                EspError::Malformed { .. } => (wire_seq, "malformed"),
                other => return Err(format!("frame {frame}: {other}")),
            };
            let p = verdict(frame, Some(spi), seq, v);
            let p = match e {
                EspError::Malformed { reason } => detail(p, reason),
                _ => p,
            };
            Ok(Some((p, None)))
        }
    }
}

fn encrypt_one(eng: &mut dyn EspEngine, sas: &[SaSpec], frame: usize, f: &Frame) -> OneResult {
    let Some(ip) = pcap::ip_packet(f.link, &f.data) else {
        return Ok(None);
    };
    let Some(v) = capture::view(ip, false) else {
        return Ok(None);
    };
    let sa = if sas.len() == 1 {
        &sas[0]
    } else if let Some(sa) = sas.iter().find(|s| s.dst == v.dst) {
        sa
    } else {
        return Ok(Some((
            detail(
                verdict(frame, None, None, "no-sa"),
                format!("no --sa with dst {}", v.dst),
            ),
            None,
        )));
    };
    let (next_header, payload): (u8, &[u8]) = match sa.mode {
        Mode::Tunnel => (if v.dst.is_ipv4() { 4 } else { 41 }, &ip[..v.end]),
        Mode::Transport => {
            if v.fragment {
                return Ok(Some((
                    detail(
                        verdict(frame, Some(sa.spi), None, "unsupported"),
                        "an IP fragment cannot be protected in transport mode",
                    ),
                    None,
                )));
            }
            if v.dst.is_ipv4() != sa.dst.is_ipv4() {
                return Ok(Some((
                    detail(
                        verdict(frame, Some(sa.spi), None, "unsupported"),
                        "transport mode needs a packet of the SA's IP version",
                    ),
                    None,
                )));
            }
            (v.proto, &ip[v.payload_at..v.end])
        }
    };
    let esp = match eng.process(EspRequest::Encapsulate {
        spi: sa.spi,
        next_header,
        payload,
    }) {
        Ok((o, esp)) => (o.seq, esp),
        Err(EspError::SeqExhausted { .. }) => {
            return Ok(Some((
                detail(
                    verdict(frame, Some(sa.spi), None, "seq-exhausted"),
                    "sequence number space exhausted: the SA must be rekeyed",
                ),
                None,
            )))
        }
        Err(e) => return Err(format!("frame {frame}: {e}")),
    };
    let (seq, esp) = esp;
    let out = match sa.mode {
        Mode::Tunnel => {
            let src = match (sa.src, v.src) {
                (Some(s), _) => s,
                (None, s) if s.is_ipv4() == sa.dst.is_ipv4() => s,
                (None, _) => {
                    return Ok(Some((
                        detail(
                            verdict(frame, Some(sa.spi), Some(seq), "unsupported"),
                            "inner and outer IP versions differ: give src= in the --sa",
                        ),
                        None,
                    )))
                }
            };
            outer(src, sa.dst, &esp)
        }
        Mode::Transport => {
            let mut pkt = Vec::with_capacity(v.payload_at + esp.len());
            pkt.extend_from_slice(&ip[..v.payload_at]);
            pkt[v.nh_at] = IPPROTO_ESP;
            pkt.extend_from_slice(&esp);
            capture::fix_lengths(&mut pkt);
            pkt
        }
    };
    Ok(Some((
        verdict(frame, Some(sa.spi), Some(seq), "ok"),
        Some(out),
    )))
}

/// ESP in UDP (RFC 3948, NAT traversal): a UDP datagram from or to port
/// 4500 whose payload does not start with the 4-byte non-ESP marker (IKE) and
/// is not a 1-byte NAT keepalive. Returns the offset of the ESP header.
fn udp_encapsulated(ip: &[u8], v: &capture::IpView) -> Option<usize> {
    const NAT_T_PORT: u16 = 4500;
    if v.proto != 17 || v.fragment {
        return None;
    }
    let udp = ip.get(v.payload_at..v.end)?;
    let port = |at: usize| Some(u16::from_be_bytes([*udp.get(at)?, *udp.get(at + 1)?]));
    if port(0)? != NAT_T_PORT && port(2)? != NAT_T_PORT {
        return None;
    }
    let payload = udp.get(8..)?;
    if payload.len() <= 1 || payload.get(..4) == Some(&[0, 0, 0, 0][..]) {
        return None;
    }
    Some(v.payload_at + 8)
}

/// An outer IP header (TTL/hop limit 64, DF clear, identification 0) around
/// an ESP packet.
fn outer(src: IpAddr, dst: IpAddr, esp: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + esp.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, IPPROTO_ESP, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let six = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            p.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, IPPROTO_ESP, 64]);
            p.extend_from_slice(&six(s));
            p.extend_from_slice(&six(d));
        }
    }
    p.extend_from_slice(esp);
    capture::fix_lengths(&mut p);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa() -> SaSpec {
        super::super::sa_spec::parse(
            "spi=0x1000,dst=10.0.0.2,alg=aes-gcm-128,key=000102030405060708090a0b0c0d0e0f,\
             salt=01020304,mode=transport",
        )
        .unwrap()
    }

    proptest! {
        /// Arbitrary frames of every link type: a verdict or a skip, never a
        /// panic, in both directions.
        #[test]
        fn arbitrary_frames_never_panic(
            link in prop::sample::select(vec![0u32, 1, 12, 14, 101, 108, 113, 228, 229, 276]),
            head in prop::sample::select(vec![
                vec![], vec![0x45, 0, 0, 40], vec![0x60, 0, 0, 0, 0, 8, 50, 64],
                vec![0x08, 0, 0x45], vec![2, 0, 0, 0, 0x46],
            ]),
            body in prop::collection::vec(any::<u8>(), 0..200),
            proto in prop::sample::select(vec![50u8, 17, 0, 44, 43, 60]),
        ) {
            let mut data = head;
            data.extend_from_slice(&body);
            if data.len() > 9 && data[0] == 0x45 {
                data[9] = proto;
            }
            let link = LinkType::from_code(link).expect("a supported link type");
            let f = Frame { ts_us: 0, link, data };
            let sas = [sa()];
            let mut dec = SoftwareEsp::new(1);
            dec.install_sa(&sas[0].config(Direction::Inbound)).unwrap();
            let _ = decrypt_one(&mut dec, &sas, 1, &f);
            let mut enc = SoftwareEsp::new(1);
            enc.install_sa(&sas[0].config(Direction::Outbound)).unwrap();
            let _ = encrypt_one(&mut enc, &sas, 1, &f);
        }

        /// Arbitrary bytes, and a valid header followed by arbitrary bytes,
        /// read as a capture: an error or frames, never a panic.
        #[test]
        fn arbitrary_captures_never_panic(
            ng in any::<bool>(),
            body in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            let _ = pcap::read_frames(&body);
            let mut f = if ng {
                let mut h = vec![0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a];
                h.extend_from_slice(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
                h.extend_from_slice(&[28, 0, 0, 0]);
                h
            } else {
                pcap::write(LinkType::Raw, &[])
            };
            f.extend_from_slice(&body);
            let _ = pcap::read_frames(&f);
        }
    }

    #[test]
    fn outer_header_checksum_is_valid() {
        let p = outer(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        assert_eq!(capture::checksum(&p[..20]), 0);
        let v = capture::view(&p, true).unwrap();
        assert_eq!(v.proto, IPPROTO_ESP);
        assert_eq!(v.end, 28);
    }
}
