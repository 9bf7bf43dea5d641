//! `hwctl forward`, run as a process on generated captures: the card's packet path with the
//! node's slow path, against the software path (no card) on the same input.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{fails, ok, TempDir};
use host::core::packet::{build, TcpFlags};
use host::core::pcap::{self, LinkType, PcapPacket};
use serde_json::Value;

fn flags(syn: bool, ack: bool, fin: bool) -> TcpFlags {
    TcpFlags {
        syn,
        ack,
        fin,
        rst: false,
    }
}

fn eth(ip: &[u8]) -> Vec<u8> {
    let et = if ip[0] >> 4 == 6 { 0x86DD } else { 0x0800u16 };
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&et.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// A capture of `tcp` TCP connections (handshake, `data` segments each way, close), UDP
/// exchanges and ICMP echoes over IPv4 and IPv6, plus an ARP request, a runt and a fragment,
/// interleaved.
fn capture(tcp: u32, data: u32) -> Vec<Vec<u8>> {
    let mut flows: Vec<Vec<Vec<u8>>> = Vec::new();
    for i in 0..tcp {
        let (c, s): (IpAddr, IpAddr) = if i % 3 == 2 {
            (
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1 + i as u16)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1)),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1 + i as u8)),
                IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            )
        };
        let cp = 40000 + i as u16;
        let t = |a, ap, b, bp, f, p: &[u8]| eth(&build::tcp(a, ap, b, bp, f, p).unwrap());
        let mut v = vec![
            t(c, cp, s, 443, flags(true, false, false), &[]),
            t(s, 443, c, cp, flags(true, true, false), &[]),
            t(c, cp, s, 443, flags(false, true, false), &[]),
        ];
        for k in 0..data {
            v.push(t(c, cp, s, 443, flags(false, true, false), &[k as u8; 100]));
            v.push(t(s, 443, c, cp, flags(false, true, false), &[k as u8; 300]));
        }
        v.push(t(c, cp, s, 443, flags(false, true, true), &[]));
        v.push(t(s, 443, c, cp, flags(false, true, true), &[]));
        v.push(t(c, cp, s, 443, flags(false, true, false), &[]));
        flows.push(v);
    }
    for i in 0..4u8 {
        let c = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1 + i));
        let s = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 53));
        let mut v = Vec::new();
        for k in 0..6u8 {
            v.push(eth(&build::udp(c, 5353, s, 53, &[k; 40]).unwrap()));
            v.push(eth(&build::udp(s, 53, c, 5353, &[k; 80]).unwrap()));
        }
        v.push(eth(&build::icmp_echo(c, s, 7 + u16::from(i), true).unwrap()));
        v.push(eth(
            &build::icmp_echo(s, c, 7 + u16::from(i), false).unwrap()
        ));
        flows.push(v);
    }
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    let mut frag = build::udp(
        IpAddr::V4(Ipv4Addr::new(198, 18, 3, 1)),
        1,
        IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        2,
        &[0; 16],
    )
    .unwrap();
    frag[6] = 0x20; // more fragments
    flows.push(vec![arp, vec![0x02; 10], eth(&frag)]);
    let mut out = Vec::new();
    let longest = flows.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        for f in &flows {
            if let Some(p) = f.get(k) {
                out.push(p.clone());
            }
        }
    }
    out
}

/// A fresh directory for test `tag` with `in.pcap`, the [`capture`] of `tcp` connections of
/// `data` segments each way; the directory, the capture's path and its frames.
fn captured(tag: &str, tcp: u32, data: u32) -> (TempDir, String, Vec<Vec<u8>>) {
    let t = TempDir::new(tag);
    let input = t.path("in.pcap");
    let frames = capture(tcp, data);
    write_capture(&input, &frames);
    (t, input, frames)
}

fn write_capture(path: &str, frames: &[Vec<u8>]) {
    let packets: Vec<PcapPacket> = frames
        .iter()
        .enumerate()
        .map(|(i, d)| PcapPacket {
            ts_us: 1_700_000_000_000_000 + i as u64 * 100,
            data: d.clone(),
        })
        .collect();
    std::fs::write(path, pcap::write(LinkType::Ethernet, &packets)).unwrap();
}

fn out_frames(path: &str) -> Vec<Vec<u8>> {
    let (link, packets) = pcap::read(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(link, LinkType::Ethernet);
    packets.into_iter().map(|p| p.data).collect()
}

/// The arguments of `hwctl --device DEVICE forward --in INPUT --out OUTPUT EXTRA...`.
fn forward_args<'a>(
    device: &'a str,
    input: &'a str,
    output: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--device", device, "forward", "--in", input, "--out", output,
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs forward with `--json`; the frame objects and the summary.
fn forward_json(device: &str, input: &str, output: &str, extra: &[&str]) -> (Vec<Value>, Value) {
    let mut args = forward_args(device, input, output, extra);
    args.insert(2, "--json");
    let text = ok(&args);
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    let summary = lines.pop().expect("summary line")["summary"].clone();
    assert!(summary.is_object(), "last line is the summary: {text}");
    (lines, summary)
}

#[test]
fn card_path_forwards_established_traffic_and_matches_the_software_path() {
    let (t, input, frames) = captured("forward", 9, 8);

    let (card, cs) = forward_json("model", &input, &t.path("card.pcap"), &[]);
    let (soft, ss) = forward_json("software", &input, &t.path("soft.pcap"), &[]);
    assert_eq!(card.len(), frames.len());
    assert_eq!(soft.len(), frames.len());

    // Every frame is accounted for, on the card path and the software path.
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        n(&cs, "forwarded_by_card") + n(&cs, "punted") + n(&cs, "dropped_by_card"),
        frames.len() as u64,
        "{cs}"
    );
    assert_eq!(n(&ss, "host_only"), frames.len() as u64, "{ss}");

    // The card forwarded the established traffic itself: most frames never reached the host.
    assert!(
        n(&cs, "forwarded_by_card") * 2 > frames.len() as u64,
        "card forwarded too little: {cs}"
    );
    // SYNs and FINs go to the host, which sends them on.
    let syn_like = card
        .iter()
        .filter(|v| v["reason"] == "tcp_control" && v["host"] == "accepted")
        .count();
    assert!(
        syn_like >= 9 * 4,
        "handshakes and closes through the host: {syn_like}"
    );
    // The first frame of the first TCP connection: a SYN from outside, punted, sent inside.
    assert_eq!(card[0]["port"], 0);
    assert_eq!(card[0]["verdict"], "punted");
    assert_eq!(card[0]["out"], serde_json::json!([1]));
    // Parse exceptions are punted with their reason: a fragment is kept back; ARP is passed on
    // by the host (this node owns every identifier).
    assert!(
        card.iter()
            .any(|v| v["reason"] == "fragment" && v["out"] == serde_json::json!([])),
        "no fragment punted and kept back"
    );
    assert!(
        card.iter()
            .any(|v| v["reason"] == "not_ip" && v["out"] == serde_json::json!([1])),
        "ARP not passed on"
    );
    assert!(card
        .iter()
        .any(|v| v["reason"] == "runt" && v["verdict"] == "dropped"));

    // Card path and software path send exactly the same frames, in the same order.
    let a = out_frames(&t.path("card.pcap"));
    let b = out_frames(&t.path("soft.pcap"));
    assert_eq!(a.len(), n(&cs, "written") as usize);
    assert_eq!(a, b, "the card path and the software path disagree");
    // And the frames' fates agree one by one.
    for (c, s) in card.iter().zip(&soft) {
        assert_eq!(
            c["out"], s["out"],
            "frame {}: card {c} software {s}",
            c["frame"]
        );
        assert_eq!(c["did"], s["did"]);
        assert_eq!(c["port"], s["port"]);
    }
    // Every written frame is an input frame, unchanged.
    assert!(a.iter().all(|f| frames.contains(f)));
}

#[test]
fn owned_identifiers_decide_what_the_card_takes() {
    let (t, input, _) = captured("forward-owns", 12, 2);
    let (none, s) = forward_json("model", &input, &t.path("none.pcap"), &["--owns", "none"]);
    // Every frame with a flow is dropped by the card, counted as not owned; nothing leaves.
    for v in &none {
        if !v["did"].is_null() {
            assert_eq!(v["verdict"], "dropped", "{v}");
            assert_eq!(v["reason"], "not_owned", "{v}");
        }
    }
    assert_eq!(s["written"], 0, "{s}");

    // Owning half: exactly the flows of owned identifiers pass, on the card and in software.
    let (card, _) = forward_json("model", &input, &t.path("half.pcap"), &["--owns", "0-127"]);
    let (soft, _) = forward_json(
        "software",
        &input,
        &t.path("half-soft.pcap"),
        &["--owns", "0-127"],
    );
    let mut passed = 0;
    for (c, s) in card.iter().zip(&soft) {
        if let Some(d) = c["did"].as_u64() {
            if d >= 128 {
                assert_eq!(c["reason"], "not_owned", "{c}");
                assert_eq!(s["host"], "not-ours", "{s}");
            } else if c["out"] != serde_json::json!([]) {
                passed += 1;
            }
        }
        assert_eq!(c["out"], s["out"], "{c} vs {s}");
    }
    assert!(passed > 0, "no owned flow passed");
    assert_eq!(
        out_frames(&t.path("half.pcap")),
        out_frames(&t.path("half-soft.pcap"))
    );
}

#[test]
fn rules_and_4096_identifiers() {
    let (t, input, _) = captured("forward-rules", 6, 2);
    let rules = t.path("rules.txt");
    std::fs::write(&rules, "allow udp\nallow icmp\ndrop any\n").unwrap();
    let (card, s) = forward_json(
        "model",
        &input,
        &t.path("out.pcap"),
        &["--rules", &rules, "--identifiers", "4096"],
    );
    // No TCP connection gets through; the SYNs are dropped by the host's rules.
    assert!(card
        .iter()
        .all(|v| v["did"].as_u64().is_none_or(|d| d < 4096)));
    assert!(s["host_drops"]["rule"].as_u64().unwrap() >= 6, "{s}");
    for f in out_frames(&t.path("out.pcap")) {
        // ARP passes (no rules apply to it); no TCP frame does
        if let Ok(p) = host::core::parse_packet(&f, host::core::Framing::Ethernet) {
            assert!(
                !matches!(p.kind, host::core::packet::PacketKind::Tcp { .. }),
                "a TCP frame passed a drop-TCP rule set"
            );
        }
    }
    // Identifiers over 255 are in use with 4096.
    assert!(card
        .iter()
        .any(|v| v["did"].as_u64().is_some_and(|d| d > 255)));
}

#[test]
fn text_output_and_bad_input() {
    let (t, input, _) = captured("forward-bad", 2, 1);
    let out = t.path("out.pcap");
    let text = ok(&forward_args("model", &input, &out, &[]));
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("punted tcp_control, host accepted, out 1"),
        "{text}"
    );
    assert!(text.contains("forwarded by the card"), "{text}");

    // Refused options: exit status 2, naming what is wrong.
    for (extra, needle) in [
        (["--owns", "300"], "not an identifier"),
        (["--identifiers", "1000"], "--identifiers"),
        (["--inside", "198.18.0.0/40"], "--inside"),
    ] {
        fails(&forward_args("model", &input, &out, &extra), 2, needle);
    }
    // A truncated capture: a clear error naming the file, nothing written.
    let bytes = std::fs::read(&input).unwrap();
    let cut = t.path("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let cut_out = t.path("cut-out.pcap");
    fails(&forward_args("model", &cut, &cut_out, &[]), 1, "cut.pcap");
    assert!(!std::path::Path::new(&cut_out).exists());
    fails(
        &forward_args("unix:/nonexistent.sock", &input, &out, &[]),
        1,
        "live traffic",
    );
}

/// The RTL under Verilator gives the model's output on the same capture: every verdict line
/// and every frame written.
#[cfg(feature = "verilator")]
#[test]
fn verilator_forwards_exactly_as_the_model() {
    let (t, input, _) = captured("forward-rtl", 6, 4);
    for extra in [&[][..], &["--owns", "0-99"][..]] {
        let (m, ms) = forward_json("model", &input, &t.path("m.pcap"), extra);
        let (r, rs) = forward_json("verilator", &input, &t.path("r.pcap"), extra);
        assert_eq!(m, r, "verdicts differ ({extra:?})");
        for k in [
            "frames",
            "forwarded_by_card",
            "punted",
            "dropped_by_card",
            "written",
        ] {
            assert_eq!(ms[k], rs[k], "{k}");
        }
        assert_eq!(out_frames(&t.path("m.pcap")), out_frames(&t.path("r.pcap")));
    }
}
