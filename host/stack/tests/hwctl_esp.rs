//! `hwctl esp decrypt|encrypt`, run as a process on generated captures and on
//! the ESP packet vectors of draft-mcgrew-gcm-test-01 (read from `$KAT_DIR`).

mod common;

use std::path::Path;

use common::{ok, TempDir};
use host::core::pcap;

use serde_json::Value;

const KEY128: &str = "feffe9928665731c6d6a8f9467308308";
const KEY256: &str = "abbccddef00112233445566778899aababbccddef00112233445566778899aab";

/// Fails with `code`, says `needle` on stderr, no panic, nothing on stdout,
/// and never shows key material.
fn fails(args: &[&str], code: i32, needle: &str) -> String {
    let stderr = common::fails(args, code, needle);
    assert!(
        !stderr.contains("8665731c"),
        "key material on stderr: {stderr}"
    );
    stderr
}

// ---- building packets and captures ---------------------------------------

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        let hi = u32::from(c[0]) << 8;
        s += hi | u32::from(*c.get(1).unwrap_or(&0));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4 UDP packet with a valid header checksum.
fn ipv4_udp(src: [u8; 4], dst: [u8; 4], id: u16, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(28 + payload.len()).unwrap();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 63, 17, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&5001u16.to_be_bytes());
    p.extend_from_slice(&(total - 20).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// An IPv6 UDP packet.
fn ipv6_udp(last: u8, payload: &[u8]) -> Vec<u8> {
    let plen = u16::try_from(8 + payload.len()).unwrap();
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&plen.to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[15] = 1;
    p.extend_from_slice(&a);
    a[15] = last;
    p.extend_from_slice(&a);
    p.extend_from_slice(&7000u16.to_be_bytes());
    p.extend_from_slice(&7001u16.to_be_bytes());
    p.extend_from_slice(&plen.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// An ESP packet in an outer IPv4 header.
fn ipv4_esp(dst: [u8; 4], esp: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + esp.len()).unwrap();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 50, 0, 0, 192, 0, 2, 1]);
    p.extend_from_slice(&dst);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(esp);
    p
}

/// A classic pcap file (microseconds, little endian).
fn pcap(link: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&link.to_le_bytes());
    for (i, d) in frames.iter().enumerate() {
        let len = u32::try_from(d.len()).unwrap();
        f.extend_from_slice(&(1_700_000_000 + i as u32).to_le_bytes());
        f.extend_from_slice(&(i as u32 * 10).to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(d);
    }
    f
}

/// A big-endian pcapng file with one interface.
fn pcapng(link: u16, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x0a, 0x0d, 0x0d, 0x0a]);
    f.extend_from_slice(&28u32.to_be_bytes());
    f.extend_from_slice(&0x1a2b_3c4du32.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(&0u16.to_be_bytes());
    f.extend_from_slice(&[0xff; 8]);
    f.extend_from_slice(&28u32.to_be_bytes());
    f.extend_from_slice(&1u32.to_be_bytes());
    f.extend_from_slice(&20u32.to_be_bytes());
    f.extend_from_slice(&link.to_be_bytes());
    f.extend_from_slice(&0u16.to_be_bytes());
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&20u32.to_be_bytes());
    for d in frames {
        let pad = d.len().div_ceil(4) * 4;
        let blen = u32::try_from(32 + pad).unwrap();
        f.extend_from_slice(&6u32.to_be_bytes());
        f.extend_from_slice(&blen.to_be_bytes());
        f.extend_from_slice(&[0; 12]);
        let len = u32::try_from(d.len()).unwrap();
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(d);
        f.resize(f.len() + pad - d.len(), 0);
        f.extend_from_slice(&blen.to_be_bytes());
    }
    f
}

fn ethernet(ip: &[u8]) -> Vec<u8> {
    let mut e = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    e.extend_from_slice(if ip[0] >> 4 == 6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    e.extend_from_slice(ip);
    e
}

fn arp() -> Vec<u8> {
    let mut e = vec![0xff; 6];
    e.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    e.extend_from_slice(&[0; 28]);
    e
}

/// Reads a classic pcap written by hwctl (little endian, microseconds) with
/// the one capture reader: link type and records.
fn read_pcap(path: &str) -> (u32, Vec<Vec<u8>>) {
    let b = std::fs::read(path).expect("output written");
    assert_eq!(b[..4], 0xa1b2_c3d4u32.to_le_bytes());
    let (link, packets) = pcap::read(&b).expect("hwctl's output reads");
    (link.code(), packets.into_iter().map(|p| p.data).collect())
}

/// `ip` behind the link-layer header of `link` (a LINKTYPE_* code).
fn framed(link: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = match link {
        0 => 2u32.to_le_bytes().to_vec(),
        1 => return ethernet(ip),
        108 => 2u32.to_be_bytes().to_vec(),
        113 => {
            let mut h = vec![0u8; 14];
            h.extend_from_slice(&[0x08, 0x00]);
            h
        }
        276 => {
            let mut h = vec![0x08, 0x00];
            h.resize(20, 0);
            h
        }
        _ => Vec::new(),
    };
    f.extend_from_slice(ip);
    f
}

/// `hwctl --device software esp OP --sa SA --in INPUT --out OUTPUT`.
/// The arguments of `hwctl --device DEV esp OP --sa SA --in INPUT --out OUTPUT`.
fn esp_on<'a>(
    dev: &'a str,
    op: &'a str,
    sa: &'a str,
    input: &'a str,
    output: &'a str,
) -> [&'a str; 10] {
    let sa = if sa.starts_with('@') { sa } else { sa_file(sa) };
    [
        "--device", dev, "esp", op, "--sa", sa, "--in", input, "--out", output,
    ]
}

/// `@FILE` for the SA string `sa`, written to a file only the owner can read: keys
/// never go in argv (hwctl refuses `key=HEX` there). The file lives as long as the
/// test process (its name is unique).
fn sa_file(sa: &str) -> &'static str {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!("hwctl-esp-sa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{}.sa", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&p, format!("{sa}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    Box::leak(format!("@{}", p.display()).into_boxed_str())
}

/// [`esp_on`] the software device.
fn esp_cmd<'a>(op: &'a str, sa: &'a str, input: &'a str, output: &'a str) -> [&'a str; 10] {
    esp_on("software", op, sa, input, output)
}

fn sa(spi: u32, dst: &str, alg: &str, key: &str, extra: &str) -> String {
    format!("spi=0x{spi:08x},dst={dst},alg={alg},key={key},salt=cafebabe{extra}")
}

/// [`sa`] of AES-GCM-128 with [`KEY128`].
fn sa128(spi: u32, dst: &str, extra: &str) -> String {
    sa(spi, dst, "aes-gcm-128", KEY128, extra)
}

/// For the error tests: a directory named after `tag` holding `in.pcap` (an empty
/// capture); returns it, that input, an output path `o.pcap` in it and a valid SA spec.
fn error_setup(tag: &str) -> (TempDir, String, String, String) {
    let d = TempDir::new(tag);
    let input = d.path("in.pcap");
    std::fs::write(&input, pcap(101, &[])).unwrap();
    let o = d.path("o.pcap");
    (d, input, o, sa128(0x1, "201.25.64.1", ""))
}

fn verdict_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("frame ")).collect()
}

// ---- round trips -----------------------------------------------------------

fn round_trip(mode: &str, alg: &str, key: &str, plain: &[Vec<u8>], dst: &str, input_link: u32) {
    let d = TempDir::new(&format!("esp-rt-{mode}-{alg}"));
    let (pin, enc, dec) = (d.path("plain.pcap"), d.path("esp.pcap"), d.path("dec.pcap"));
    let frames: Vec<Vec<u8>> = match input_link {
        1 => plain.iter().map(|p| ethernet(p)).collect(),
        _ => plain.to_vec(),
    };
    std::fs::write(&pin, pcap(input_link, &frames)).unwrap();
    let s = sa(0x8765_4321, dst, alg, key, &format!(",mode={mode},icv=16"));
    let out = ok(&esp_cmd("encrypt", &s, &pin, &enc));
    let lines = verdict_lines(&out);
    assert_eq!(lines.len(), plain.len(), "{out}");
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.contains(&format!("seq {:<10}", i + 1)) && l.ends_with(" ok"),
            "{l}"
        );
        assert!(l.contains("0x87654321"), "{l}");
    }
    let (link, esp) = read_pcap(&enc);
    assert_eq!(link, 101);
    assert_eq!(esp.len(), plain.len());
    for (p, e) in plain.iter().zip(&esp) {
        // Protocol 50 in the (outer or rebuilt) header.
        let proto = match (e[0] >> 4, e[6]) {
            (4, _) => e[9],
            (_, 0) => e[40], // behind a hop-by-hop header
            (_, nh) => nh,
        };
        assert_eq!(proto, 50);
        assert!(e.len() > p.len(), "ESP adds header, IV, trailer and ICV");
        if e[0] >> 4 == 4 {
            assert_eq!(checksum(&e[..20]), 0, "outer header checksum");
        }
    }
    let out = ok(&esp_cmd("decrypt", &s, &enc, &dec));
    assert_eq!(verdict_lines(&out).len(), plain.len(), "{out}");
    assert!(
        out.contains(&format!("ok {}", plain.len())),
        "summary counts: {out}"
    );
    let (link, back) = read_pcap(&dec);
    assert_eq!(link, 101);
    assert_eq!(back, plain, "decrypt(encrypt(x)) == x, in input order");
}

fn plain_v4(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let payload: Vec<u8> = (0..(i * 37) % 1400).map(|b| (b * 7 + i) as u8).collect();
            ipv4_udp([10, 0, 0, 1], [201, 25, 64, 1], i as u16, &payload)
        })
        .collect()
}

#[test]
fn round_trip_tunnel_gcm128_ethernet_in() {
    round_trip(
        "tunnel",
        "aes-gcm-128",
        KEY128,
        &plain_v4(40),
        "201.25.64.1",
        1,
    );
}

#[test]
fn round_trip_transport_gcm256_raw_in() {
    round_trip(
        "transport",
        "aes-gcm-256",
        KEY256,
        &plain_v4(40),
        "201.25.64.1",
        101,
    );
}

#[test]
fn round_trip_ipv6_tunnel_and_transport() {
    let mut plain: Vec<Vec<u8>> = (0..10)
        .map(|i| ipv6_udp(2, &vec![i as u8; i * 50]))
        .collect();
    // One with a hop-by-hop options header, which stays in front of ESP in
    // transport mode.
    let mut hbh = ipv6_udp(2, b"with options");
    let plen = u16::from_be_bytes([hbh[4], hbh[5]]) + 8;
    hbh[4..6].copy_from_slice(&plen.to_be_bytes());
    hbh[6] = 0;
    hbh.splice(40..40, [17u8, 0, 1, 4, 0, 0, 0, 0]);
    plain.push(hbh);
    round_trip(
        "transport",
        "aes-gcm-128",
        KEY128,
        &plain,
        "2001:db8::2",
        101,
    );
    round_trip("tunnel", "aes-gcm-256", KEY256, &plain, "2001:db8::2", 1);
}

// ---- verdicts ----------------------------------------------------------------

/// A fresh directory for test `tag`, the SA `s`, [`plain_v4`]`(n)` and its ESP packets
/// under `s`.
fn encrypted(tag: &str, s: String, n: usize) -> (TempDir, String, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let d = TempDir::new(tag);
    let plain = plain_v4(n);
    let esp = encrypt(&d, &s, &plain);
    (d, s, plain, esp)
}

/// Encrypts `plain` with `s` and returns the ESP packets.
fn encrypt(d: &TempDir, s: &str, plain: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let (pin, enc) = (d.path("p.pcap"), d.path("e.pcap"));
    std::fs::write(&pin, pcap(101, plain)).unwrap();
    ok(&esp_cmd("encrypt", s, &pin, &enc));
    read_pcap(&enc).1
}

/// Decrypts `frames` (written to `in.pcap` in `d` as a raw-IP capture) with `sa`; returns
/// hwctl's output and the path of the decrypted capture.
fn decrypt(d: &TempDir, sa: &str, frames: &[Vec<u8>]) -> (String, String) {
    let (input, o) = (d.path("in.pcap"), d.path("o.pcap"));
    std::fs::write(&input, pcap(101, frames)).unwrap();
    (ok(&esp_cmd("decrypt", sa, &input, &o)), o)
}

#[test]
fn verdicts_auth_failed_replay_unknown_spi_malformed_and_skipped() {
    let (d, s, plain, esp) = encrypted("esp-verdicts", sa128(0x1000, "201.25.64.1", ""), 3);
    let mut tampered = esp[1].clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let mut other_spi = esp[2].clone();
    other_spi[20..24].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    let short = ipv4_esp([201, 25, 64, 1], &[0, 0, 0x10, 0, 0, 0]);
    let no_trailer = {
        // The right SPI, a fresh sequence number, too short for IV + ICV.
        let mut e = 0x1000u32.to_be_bytes().to_vec();
        e.extend_from_slice(&9u32.to_be_bytes());
        e.extend_from_slice(&[0; 10]);
        ipv4_esp([201, 25, 64, 1], &e)
    };
    let frames = vec![
        ethernet(&esp[0]),     // 1 ok, seq 1
        arp(),                 // 2 skipped
        ethernet(&tampered),   // 3 auth-failed, seq 2
        ethernet(&esp[1]),     // 4 ok, seq 2
        ethernet(&esp[1]),     // 5 replay, seq 2
        ethernet(&other_spi),  // 6 unknown-spi
        ethernet(&short),      // 7 malformed (no SPI + seq)
        ethernet(&no_trailer), // 8 malformed
        ethernet(&plain[0]),   // 9 skipped (UDP)
        ethernet(&esp[2]),     // 10 ok, seq 3
    ];
    let (input, out_path) = (d.path("in.pcapng"), d.path("out.pcap"));
    std::fs::write(&input, pcapng(1, &frames)).unwrap();
    let out = ok(&esp_cmd("decrypt", &s, &input, &out_path));
    let lines = verdict_lines(&out);
    assert_eq!(lines.len(), 8, "{out}");
    let expect = [
        (1, "seq 1 ", "ok"),
        (3, "seq 2 ", "auth-failed"),
        (4, "seq 2 ", "ok"),
        (5, "seq 2 ", "replay"),
        (6, "0xdeadbeef", "unknown-spi"),
        (7, "", "malformed"),
        (8, "seq 9 ", "malformed"),
        (10, "seq 3 ", "ok"),
    ];
    for (l, (frame, has, v)) in lines.iter().zip(expect) {
        assert!(l.starts_with(&format!("frame {frame} ")), "{l}");
        assert!(l.contains(has), "{l}: {has}");
        let verdict = l.split_whitespace().nth(6).unwrap_or("");
        assert_eq!(verdict, v, "{l}");
    }
    assert!(
        out.contains("10 frames: 8 ESP packets (auth-failed 1, malformed 2, ok 3, replay 1, unknown-spi 1), 2 non-ESP frames skipped; 3 records written"),
        "{out}"
    );
    let (_, recs) = read_pcap(&out_path);
    assert_eq!(
        recs,
        vec![plain[0].clone(), plain[1].clone(), plain[2].clone()]
    );

    // The same as JSON.
    let j: Value = serde_json::from_str(&ok(&[
        "--device",
        "software",
        "--json",
        "esp",
        "decrypt",
        "--sa",
        sa_file(&s),
        "--in",
        &input,
        "--out",
        &out_path,
    ]))
    .expect("JSON");
    assert_eq!(j["frames"], 10);
    assert_eq!(j["processed"], 8);
    assert_eq!(j["skipped"], 2);
    assert_eq!(j["written"], 3);
    assert_eq!(j["verdicts"]["replay"], 1);
    assert_eq!(j["packets"][1]["verdict"], "auth-failed");
    assert_eq!(j["packets"][1]["spi"], "0x00001000");
    assert_eq!(j["packets"][1]["seq"], 2);
    assert_eq!(j["packets"][4]["spi"], "0xdeadbeef");
    assert_eq!(j["packets"][7]["record"], 3);
    assert_eq!(j["sas"][0]["spi"], "0x00001000");
    assert_eq!(j["sas"][0]["replay_top"], 3);
    assert_eq!(j["sas"][0]["packets"], 3);
    assert_eq!(j["sas"][0]["auth_failures"], 1);
    assert_eq!(j["sas"][0]["replay_drops"], 1);
    assert_eq!(j["sas"][0]["key_bits"], 128);
    assert!(!j.to_string().contains("8665731c"), "no key in the report");
    assert!(!j.to_string().contains("cafebabe"), "no salt in the report");
}

#[test]
fn a_wrong_destination_is_an_unknown_sa_and_null_link_works() {
    let (d, s, _, esp) = encrypted("esp-dst", sa128(0x2000, "201.25.64.1", ""), 1);
    let mut moved = esp[0].clone();
    moved[16..20].copy_from_slice(&[198, 51, 100, 7]);
    let null = |p: &[u8]| {
        let mut f = 2u32.to_le_bytes().to_vec();
        f.extend_from_slice(p);
        f
    };
    let (input, o) = (d.path("null.pcap"), d.path("o.pcap"));
    std::fs::write(&input, pcap(0, &[null(&moved), null(&esp[0])])).unwrap();
    let out = ok(&esp_cmd("decrypt", &s, &input, &o));
    let lines = verdict_lines(&out);
    assert!(
        lines[0].contains("unknown-spi (the SA with this SPI is for dst 201.25.64.1"),
        "{out}"
    );
    assert!(lines[1].ends_with(" ok"), "{out}");
}

/// ESP in UDP (RFC 3948): the ESP packet of an outer IPv4 header, moved into
/// a UDP datagram on port 4500.
fn nat_t(esp_packet: &[u8]) -> Vec<u8> {
    let esp = &esp_packet[20..];
    let mut udp = 4500u16.to_be_bytes().to_vec();
    udp.extend_from_slice(&4500u16.to_be_bytes());
    udp.extend_from_slice(&u16::try_from(8 + esp.len()).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(esp);
    let mut p = esp_packet[..20].to_vec();
    p[9] = 17;
    p.extend_from_slice(&udp);
    let total = u16::try_from(p.len()).unwrap();
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn esp_in_udp_is_decrypted_and_ike_and_keepalives_are_skipped() {
    let d = TempDir::new("esp-natt");
    for mode in ["tunnel", "transport"] {
        let s = sa(
            0x4500,
            "201.25.64.1",
            "aes-gcm-128",
            KEY128,
            &format!(",mode={mode}"),
        );
        let plain = plain_v4(3);
        let esp = encrypt(&d, &s, &plain);
        let ike = {
            let mut p = nat_t(&esp[0]);
            p[28..32].copy_from_slice(&[0; 4]);
            p
        };
        let keepalive = {
            let mut p = nat_t(&esp[0]);
            p.truncate(29);
            p[28] = 0xff;
            p[24..26].copy_from_slice(&9u16.to_be_bytes());
            p[2..4].copy_from_slice(&29u16.to_be_bytes());
            p
        };
        let frames: Vec<Vec<u8>> = vec![
            nat_t(&esp[0]),
            ike,
            keepalive,
            nat_t(&esp[1]),
            esp[2].clone(),
        ];
        let (out, o) = decrypt(&d, &s, &frames);
        assert!(
            out.contains("5 frames: 3 ESP packets (ok 3), 2 non-ESP frames skipped"),
            "{mode}: {out}"
        );
        assert_eq!(read_pcap(&o).1, plain, "{mode}");
    }
}

#[test]
fn transport_mode_keeps_ipv6_hop_by_hop_in_front() {
    let d = TempDir::new("esp-hbh");
    let s = sa128(0x6000, "2001:db8::2", ",mode=transport");
    let mut p = ipv6_udp(2, b"payload");
    let plen = u16::from_be_bytes([p[4], p[5]]) + 8;
    p[4..6].copy_from_slice(&plen.to_be_bytes());
    p[6] = 0;
    p.splice(40..40, [17u8, 0, 1, 4, 0, 0, 0, 0]);
    let esp = encrypt(&d, &s, &[p]);
    assert_eq!(esp[0][6], 0, "the fixed header still names hop-by-hop");
    assert_eq!(esp[0][40], 50, "hop-by-hop names ESP");
}

#[test]
fn truncated_esp_in_ip_is_malformed() {
    let (d, s, _, esp) = encrypted("esp-trunc", sa128(0x7000, "201.25.64.1", ""), 1);
    let mut cut = esp[0].clone();
    cut.truncate(cut.len() - 10);
    let (out, _) = decrypt(&d, &s, &[cut]);
    let line = verdict_lines(&out)[0].to_owned();
    assert_eq!(line.split_whitespace().nth(6), Some("malformed"), "{out}");
    assert!(line.contains("lengths"), "{line}");
}

#[test]
fn several_sas_and_sa_files() {
    let d = TempDir::new("esp-multi");
    let a = sa128(0xa, "201.25.64.1", "");
    let b = sa(0xb, "201.25.64.2", "aes-gcm-256", KEY256, ",mode=transport");
    let pa = vec![ipv4_udp([10, 0, 0, 1], [201, 25, 64, 1], 1, b"to a")];
    let pb = vec![ipv4_udp([10, 0, 0, 1], [201, 25, 64, 2], 2, b"to b")];
    let ea = encrypt(&d, &a, &pa);
    let eb = encrypt(&d, &b, &pb);
    let file = d.path("sas.txt");
    std::fs::write(&file, format!("# two SAs\n{a}\n\n{b}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let at = format!("@{file}");
    let (out, o) = decrypt(&d, &at, &[eb[0].clone(), ea[0].clone()]);
    assert!(out.contains("ok 2"), "{out}");
    assert_eq!(read_pcap(&o).1, vec![pb[0].clone(), pa[0].clone()]);
}

#[test]
fn esn_with_a_starting_sequence_number() {
    let (d, s, plain, esp) = encrypted(
        "esp-esn",
        sa128(0x3000, "201.25.64.1", ",esn,seq=0x1fffffffe"),
        4,
    );
    let (out, o) = decrypt(&d, &s, &esp);
    // 2^33 - 2 .. 2^33 + 1: the high half changes in the middle.
    for (l, seq) in verdict_lines(&out).iter().zip(0x1_ffff_fffeu64..) {
        assert!(
            l.contains(&format!("seq {seq:<10}")) && l.ends_with(" ok"),
            "{l}"
        );
    }
    assert_eq!(read_pcap(&o).1, plain);
}

#[test]
fn help_documents_esp() {
    let top = ok(&["--help"]);
    for needle in ["software", "unix:PATH", "esp", "--sa @FILE", "auth-failed"] {
        assert!(top.contains(needle), "{needle}: {top}");
    }
    let sub = ok(&["esp", "decrypt", "--help"]);
    for needle in ["--sa", "--in", "--out"] {
        assert!(sub.contains(needle), "{needle}: {sub}");
    }
}

// ---- bad arguments and files -------------------------------------------------

#[test]
fn bad_sa_strings_are_usage_errors_naming_the_field() {
    let (d, input, o, good) = error_setup("esp-badsa");
    for (bad, field) in [
        (
            good.replace("alg=aes-gcm-128", "alg=aes-cbc-128"),
            "field alg",
        ),
        (
            good.replace("spi=0x00000001", "spi=0x1ffffffff"),
            "field spi",
        ),
        (
            good.replace("dst=201.25.64.1", "dst=somewhere"),
            "field dst",
        ),
        (good.replace(KEY128, &KEY128[..31]), "field key"),
        (good.replace(KEY128, KEY256), "field key"),
        (good.replace("salt=cafebabe", "salt=cafe"), "field salt"),
        (good.clone() + ",icv=7", "field icv"),
        (good.clone() + ",mode=tunel", "field mode"),
        (good.clone() + ",spi=3", "): given twice"),
        (good.clone() + ",foo=1", "): unknown field"),
        (good.replace(",salt=cafebabe", ""), "): missing"),
    ] {
        fails(&esp_cmd("decrypt", &bad, &input, &o), 2, field);
    }
    // Two SAs with one SPI.
    fails(
        &[
            "--device",
            "software",
            "esp",
            "decrypt",
            "--sa",
            sa_file(&good),
            "--sa",
            sa_file(&good),
            "--in",
            &input,
            "--out",
            &o,
        ],
        1,
        "two --sa with spi 0x00000001",
    );
    // A bad line in an SA file names the file and line.
    let file = d.path("bad.sa");
    std::fs::write(
        &file,
        format!("{good}\n{}\n", good.replace("0x00000001", "0x2") + ",esn=7"),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    fails(
        &esp_cmd("decrypt", &format!("@{file}"), &input, &o),
        2,
        "line 2",
    );
    // Missing --sa is clap's usage error.
    fails(
        &[
            "--device", "software", "esp", "decrypt", "--in", &input, "--out", &o,
        ],
        2,
        "--sa",
    );
}

#[test]
fn unreadable_and_garbage_files_are_clear_errors() {
    let (d, good_in, o, s) = error_setup("esp-files");
    let mut truncated = pcap(101, &plain_v4(2));
    truncated.truncate(truncated.len() - 5);
    // (input file, its bytes or none for a missing file, what the error says)
    let inputs: [(&str, Option<Vec<u8>>, &str); 4] = [
        ("missing.pcap", None, "cannot read --in"),
        (
            "garbage.pcap",
            Some(b"this is not a capture file at all".to_vec()),
            "not a pcap or pcapng file",
        ),
        ("trunc.pcap", Some(truncated), "truncated"),
        (
            "link.pcap",
            Some(pcap(147, &[])),
            "link type 147 is not supported",
        ),
    ];
    for (name, bytes, error) in inputs {
        let input = d.path(name);
        if let Some(bytes) = bytes {
            std::fs::write(&input, bytes).unwrap();
        }
        fails(&esp_cmd("decrypt", &s, &input, &o), 1, error);
    }
    let bad_out = d.path("no/such/dir/o.pcap");
    fails(
        &esp_cmd("decrypt", &s, &good_in, &bad_out),
        1,
        "cannot write --out",
    );
}

#[test]
fn card_specs_say_what_to_use() {
    let (_d, input, o, s) = error_setup("esp-model");
    for dev in ["vfio:0000:99:00.0", "unix:/nonexistent.sock"] {
        fails(
            &esp_on(dev, "decrypt", &s, &input, &o),
            1,
            "--device software",
        );
    }
}

#[test]
fn the_model_card_gives_the_software_paths_packets_and_verdicts() {
    let d = TempDir::new("esp-model-vs-software");
    let s = sa(0x4242, "201.25.64.1", "aes-gcm-256", KEY256, ",icv=12,esn");
    let pin = d.path("plain.pcap");
    let plain = plain_v4(30);
    std::fs::write(&pin, pcap(101, &plain)).unwrap();
    let mut outs = Vec::new();
    for dev in ["software", "model"] {
        let enc = d.path(&format!("enc-{dev}.pcap"));
        let out = ok(&esp_on(dev, "encrypt", &s, &pin, &enc));
        outs.push((out, read_pcap(&enc)));
    }
    assert_eq!(outs[0].1, outs[1].1, "card and ring build the same packets");
    assert_eq!(verdict_lines(&outs[0].0), verdict_lines(&outs[1].0));
    // The card decrypts what the software path built, verdicts included.
    let enc = d.path("enc-software.pcap");
    let (_, mut esp) = read_pcap(&enc);
    let last = esp[3].len() - 1;
    esp[3][last] ^= 1;
    esp.push(esp[5].clone());
    let tampered = d.path("tampered.pcap");
    std::fs::write(&tampered, pcap(101, &esp)).unwrap();
    let mut results = Vec::new();
    for dev in ["software", "model"] {
        let dec = d.path(&format!("dec-{dev}.pcap"));
        let out = ok(&esp_on(dev, "decrypt", &s, &tampered, &dec));
        assert!(
            out.contains("auth-failed") && out.contains("replay"),
            "{out}"
        );
        results.push((
            verdict_lines(&out)
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>(),
            read_pcap(&dec),
        ));
    }
    assert_eq!(results[0], results[1]);
}

// ---- draft-mcgrew-gcm-test-01 ESP packet vectors ------------------------------

#[derive(Default, Debug)]
struct Vector {
    algorithm: String,
    key: String,
    spi: String,
    seq: String,
    nonce: String,
    plaintext: String,
    packet: String,
}

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

/// The test cases of the draft: `name = hex` with continuation lines.
fn vectors(text: &str) -> Vec<Vector> {
    let mut out = Vec::new();
    let mut cur: Option<Vector> = None;
    let mut field = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some((name, value)) = t.split_once(" = ") {
            let name = name.trim();
            if name == "algorithm" {
                if let Some(v) = cur.take() {
                    out.push(v);
                }
                cur = Some(Vector::default());
            }
            field = name.to_owned();
            if let Some(v) = cur.as_mut() {
                append(v, &field, value.trim());
            }
        } else if !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit()) {
            if let Some(v) = cur.as_mut() {
                append(v, &field, t);
            }
        } else {
            field.clear();
        }
    }
    out.extend(cur);
    out
}

fn append(v: &mut Vector, field: &str, value: &str) {
    let slot = match field {
        "algorithm" => &mut v.algorithm,
        "key" => &mut v.key,
        "spi" => &mut v.spi,
        "seq" => &mut v.seq,
        "nonce" => &mut v.nonce,
        "plaintext" => &mut v.plaintext,
        "packet" => &mut v.packet,
        _ => return,
    };
    slot.push_str(value);
}

#[test]
fn draft_mcgrew_esp_vectors_decrypt_through_the_cli() {
    let Some(dir) = std::env::var_os("KAT_DIR").filter(|d| !d.is_empty()) else {
        eprintln!("skipped: KAT_DIR is not set (point it at the shared testdata/kat folder)");
        return;
    };
    let path = Path::new(&dir).join("draft-mcgrew-gcm-test-01.txt");
    let text = std::fs::read_to_string(&path).expect("read draft-mcgrew-gcm-test-01.txt");
    let all = vectors(&text);
    assert!(all.len() >= 15, "found {} test cases", all.len());
    let d = TempDir::new("esp-kat");
    let mut done = 0;
    for (i, v) in all.iter().enumerate() {
        let gmac = v.algorithm.contains("GMAC");
        let bits = v.key.len() * 4;
        if bits == 192 || v.packet.is_empty() || v.nonce.len() != 24 {
            eprintln!(
                "case {i}: {} {bits}-bit: not an AES-128/256 ESP packet, skipped",
                v.algorithm
            );
            continue;
        }
        let packet = hex(&v.packet);
        let alg = format!("aes-{}-{bits}", if gmac { "gmac" } else { "gcm" });
        let esn = v.seq.len() == 16;
        let seq = u64::from_str_radix(&v.seq, 16).unwrap();
        // A fresh SA starts at 1; an ESN vector needs its high half, so the
        // SA starts at the vector's sequence number.
        let extra = if esn {
            format!(",esn,seq={seq}")
        } else {
            String::new()
        };
        let s = format!(
            "spi=0x{},dst=192.0.2.99,alg={alg},key={},salt={}{extra}",
            v.spi,
            v.key,
            &v.nonce[..8]
        );
        let input = d.path(&format!("kat{i}.pcap"));
        let o = d.path(&format!("kat{i}.out.pcap"));
        std::fs::write(&input, pcap(101, &[ipv4_esp([192, 0, 2, 99], &packet)])).unwrap();
        let out = ok(&esp_cmd("decrypt", &s, &input, &o));
        let line = verdict_lines(&out)[0].to_owned();
        assert!(line.contains(&format!("seq {seq:<10}")), "case {i}: {line}");
        assert_eq!(
            line.split_whitespace().nth(6),
            Some("ok"),
            "case {i}: {out}"
        );
        // The record is the payload: the vector's plaintext without padding,
        // pad length and next header (GMAC: the clear payload after the IV).
        let clear = if gmac {
            packet[16..packet.len() - 16].to_vec()
        } else {
            hex(&v.plaintext)
        };
        let pad = usize::from(clear[clear.len() - 2]);
        let payload = &clear[..clear.len() - 2 - pad];
        let (_, recs) = read_pcap(&o);
        assert_eq!(recs.len(), 1, "case {i}");
        assert_eq!(recs[0], payload, "case {i}");

        // Tampering with the ICV is an authentication failure.
        let mut bad = packet.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        std::fs::write(&input, pcap(101, &[ipv4_esp([192, 0, 2, 99], &bad)])).unwrap();
        let out = ok(&esp_cmd("decrypt", &s, &input, &o));
        assert!(
            verdict_lines(&out)[0].ends_with(" auth-failed"),
            "case {i}: {out}"
        );
        done += 1;
    }
    assert!(done >= 12, "decrypted {done} vectors");
    eprintln!("{done} draft-mcgrew ESP packet vectors decrypted through hwctl");
}

#[test]
fn pcapng_input_of_every_link_type_round_trips() {
    let d = TempDir::new("esp-links");
    let plain = plain_v4(3);
    let s = sa128(0x8765_4321, "201.25.64.1", ",mode=tunnel");
    let (enc, dec) = (d.path("esp.pcap"), d.path("dec.pcap"));
    for link in [0u16, 1, 12, 14, 101, 108, 113, 228, 229, 276] {
        let pin = d.path(&format!("in-{link}.pcapng"));
        let mut frames: Vec<Vec<u8>> = plain.iter().map(|p| framed(link, p)).collect();
        // A frame without IP on a link layer that can say so is skipped.
        if matches!(link, 1 | 113 | 276) {
            frames.push(arp());
        }
        std::fs::write(&pin, pcapng(link, &frames)).unwrap();
        let out = ok(&esp_cmd("encrypt", &s, &pin, &enc));
        assert_eq!(verdict_lines(&out).len(), plain.len(), "link {link}: {out}");
        ok(&esp_cmd("decrypt", &s, &enc, &dec));
        assert_eq!(read_pcap(&dec), (101, plain.clone()), "link {link}");
    }
}

/// Issue 13 items 6 and 8 for `hwctl esp`: a key in argv is refused with how to pass it;
/// `key=@FILE` (mode 0600 only) and `key=-` (standard input) work; an `--sa @FILE` that
/// others can read is refused; two SAs with one key are refused, naming both SPIs.
#[test]
fn sa_keys_come_from_files_or_stdin_and_never_serve_two_sas() {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    let (d, input, o, _) = error_setup("esp-keyargs");
    let literal = format!("spi=0x1,dst=201.25.64.1,alg=aes-gcm-128,key={KEY128},salt=cafebabe");
    let e = common::fails(
        &[
            "--device", "software", "esp", "decrypt", "--sa", &literal, "--in", &input, "--out", &o,
        ],
        2,
        "field key",
    );
    assert!(e.contains("@FILE") && e.contains("chmod 600"), "{e}");
    assert!(!e.contains(&KEY128[..12]), "the key leaked: {e}");
    // key=@FILE: refused while group/other can read it, taken at 0600
    let key_file = d.path("sa1.key");
    std::fs::write(&key_file, format!("{KEY128}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o604)).unwrap();
    let by_file = format!("spi=0x1,dst=201.25.64.1,alg=aes-gcm-128,key=@{key_file},salt=cafebabe");
    let args = |sa: &str| -> Vec<String> {
        [
            "--device", "software", "esp", "decrypt", "--sa", sa, "--in", &input, "--out", &o,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let a = args(&by_file);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let e = common::fails(&a, 2, "mode 0604");
    assert!(e.contains(&format!("chmod 600 {key_file}")), "{e}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&a);
    // --sa @FILE readable by others
    let sa_path = d.path("others.sa");
    std::fs::write(&sa_path, format!("{literal}\n")).unwrap();
    std::fs::set_permissions(&sa_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let at = format!("@{sa_path}");
    let e = common::fails(
        &[
            "--device", "software", "esp", "decrypt", "--sa", &at, "--in", &input, "--out", &o,
        ],
        1,
        "chmod 600",
    );
    assert!(e.contains("readable by group or others"), "{e}");
    // key=- reads standard input; the same key for a second SA is refused
    let run_stdin = |extra: &[&str], stdin: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hwctl"))
            .args(["--device", "software", "esp", "decrypt"])
            .args(extra)
            .args(["--in", &input, "--out", &o])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let stdin_sa = "spi=0x2,dst=201.25.64.1,alg=aes-gcm-128,key=-,salt=cafebabf";
    let out = run_stdin(&["--sa", stdin_sa], &format!("{}\n", "ab".repeat(16)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_stdin(
        &["--sa", &by_file, "--sa", stdin_sa],
        &format!("{KEY128}\n"),
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("--sa spi=0x00000001 and --sa spi=0x00000002 have the same key")
            && e.contains("own key"),
        "{e}"
    );
    assert!(!e.contains(&KEY128[..12]), "the key leaked: {e}");
}
