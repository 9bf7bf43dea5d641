//! The Prometheus metrics of a running node (`metrics = "127.0.0.1:PORT"`), with real
//! processes: a 3-node cluster on loopback, node 1 scraped over a plain TCP connection. The
//! exposition text is well formed (every family with `# HELP` and `# TYPE`, every sample
//! `name{labels} value` with the node's label), the owned-identifiers gauge matches the
//! allocation, the packet counter rises after traffic, and bad requests (other paths, other
//! methods, garbage, a head too large, a silent client) get their 4xx answers while the node
//! keeps running and answering.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use host::core::ids::NodeId;
use host::daemon::protocol::{Request, Response};
use host::lab::cluster::{Cluster, Layout};

fn free_tcp_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Sends `request` as is and reads the whole answer (the server closes after one).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of an HTTP answer.
fn code(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Scrapes `GET /metrics` and checks the text is well formed; the samples.
fn scrape(addr: SocketAddr, node: u16) -> Vec<Sample> {
    let answer = raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n",
    );
    assert_eq!(code(&answer), 200, "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    assert_eq!(len, body.len(), "Content-Length matches the body");
    parse_exposition(body, node)
}

/// Parses the text exposition format strictly enough for a test: `# HELP` then `# TYPE`
/// before a family's samples, names `clusterd_...`, counters `_total`, label `node` on every
/// sample, values that parse, no family twice.
fn parse_exposition(body: &str, node: u16) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut families = BTreeSet::new();
    let mut help: Option<String> = None;
    let mut current: Option<(String, String)> = None;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP name text");
            assert!(!text.is_empty(), "{line}");
            help = Some(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(help.as_deref(), Some(name), "HELP before TYPE: {line}");
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            assert!(families.insert(name.to_string()), "{name} twice");
            current = Some((name.to_string(), kind.to_string()));
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        let (name, labels) = series.split_once('{').expect("labels");
        let (fam, kind) = current.as_ref().expect("a sample after its TYPE");
        assert_eq!(name, fam, "{line}");
        assert!(name.starts_with("clusterd_"), "{line}");
        if kind == "counter" {
            assert!(value >= 0.0, "{line}");
        }
        let labels = labels.strip_suffix('}').expect("closing brace");
        let mut map = BTreeMap::new();
        for kv in labels.split(',') {
            let (k, v) = kv.split_once('=').expect("label=value");
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .expect("quoted");
            map.insert(k.to_string(), v.to_string());
        }
        assert_eq!(
            map.get("node").map(String::as_str),
            Some(&*node.to_string()),
            "{line}"
        );
        samples.push((name.to_string(), map, value));
    }
    assert!(families.len() > 40, "only {} families", families.len());
    samples
}

/// The value of `name` with `labels` (besides `node`).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

/// Adds `line` to the node settings of the config file at `path` (above the first
/// `[[peer]]`).
fn add_setting(path: &Path, line: &str) {
    let text = std::fs::read_to_string(path).expect("config");
    let text = text.replacen("\n[[peer]]", &format!("\n{line}\n\n[[peer]]"), 1);
    std::fs::write(path, text).expect("config");
}

#[test]
fn metrics_are_served_move_with_traffic_and_survive_bad_requests() {
    let (rt, dir) = common::runtime_and_dir("metrics");
    let exe = Path::new(env!("CARGO_BIN_EXE_clusterd"));
    let mut c = Cluster::prepare(&dir, &Layout::default(), exe).unwrap();
    let addr = free_tcp_port();
    add_setting(
        &c.nodes[&NodeId(1)].config,
        &format!("metrics = \"{addr}\""),
    );
    for n in 1..=3 {
        c.start(NodeId(n)).unwrap();
    }
    rt.block_on(c.wait_settled(Duration::from_secs(40)))
        .unwrap_or_else(|e| panic!("settle: {e}"));
    let log = || std::fs::read_to_string(dir.join("node1.log")).unwrap_or_default();
    assert!(
        log().contains(&format!("metrics at http://{addr}/metrics")),
        "{}",
        log()
    );

    // the gauges say what the control socket says
    let s = scrape(addr, 1);
    assert_eq!(value(&s, "clusterd_ready", &[]), Some(1.0));
    assert_eq!(value(&s, "clusterd_raft_voters", &[]), Some(3.0));
    assert!(value(&s, "clusterd_raft_term", &[]).unwrap() >= 1.0);
    assert!(value(&s, "clusterd_epoch_applied", &[]).unwrap() >= 1.0);
    for p in ["2", "3"] {
        assert_eq!(value(&s, "clusterd_peer_alive", &[("peer", p)]), Some(1.0));
    }
    // the allocation may move between the two reads while the cluster settles: a few tries
    let mut matched = false;
    for _ in 0..20 {
        let a = rt.block_on(c.allocation(NodeId(1))).unwrap();
        let owned = a.owners.iter().filter(|o| **o == Some(1)).count() as f64;
        let s = scrape(addr, 1);
        let epoch = value(&s, "clusterd_epoch_applied", &[]).unwrap();
        if value(&s, "clusterd_owned_identifiers", &[]) == Some(owned) && epoch == a.epoch as f64 {
            assert!(
                owned > 0.0,
                "node 1 owns identifiers in a settled 3-node cluster"
            );
            matched = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        matched,
        "clusterd_owned_identifiers never matched the allocation"
    );

    // traffic: the packet counters rise
    let before = value(&scrape(addr, 1), "clusterd_packets_total", &[]).unwrap();
    let r = rt
        .block_on(c.call_timeout(
            NodeId(1),
            Request::Synthesize {
                first: Some(0),
                flows: Some(500),
            },
            Duration::from_secs(30),
        ))
        .unwrap();
    assert!(matches!(r, Response::Synthesized(_)), "{r:?}");
    let after = scrape(addr, 1);
    let packets = value(&after, "clusterd_packets_total", &[]).unwrap();
    assert!(packets >= before + 500.0, "packets {before} -> {packets}");
    assert!(value(&after, "clusterd_connections_created_total", &[]).unwrap() > 0.0);
    assert!(value(&after, "clusterd_common_entries", &[]).unwrap() > 0.0);
    assert!(value(&after, "clusterd_sync_records_sent_total", &[]).unwrap() > 0.0);
    assert!(value(&after, "clusterd_sync_bytes_received_total", &[]).unwrap() > 0.0);

    // bad requests: 4xx, never a crash
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"GET /metrics/../etc HTTP/1.1\r\n\r\n", 404),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            405,
        ),
        (b"PUT /metrics HTTP/1.1\r\n\r\n", 405),
        (b"hello there\r\n\r\n", 400),
        (b"GET /metrics HTTP/9\r\n\r\n", 400),
        (b"\x00\xff\xfe\x01\r\n\r\n", 400),
    ];
    for (req, want) in cases {
        let answer = raw(addr, req);
        assert_eq!(code(&answer), *want, "{req:?}: {answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
    }
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 20_000));
    assert_eq!(code(&raw(addr, &big)), 431);
    let head = raw(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(code(&head), 200);
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    // a client that connects and says nothing, and one that goes away mid-request: the
    // others are served meanwhile, the silent one gets 408 after the read timeout
    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    {
        let mut gone = TcpStream::connect(addr).unwrap();
        gone.write_all(b"GET /metr").unwrap();
    }
    let t = Instant::now();
    scrape(addr, 1);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "a silent client blocks nobody"
    );
    let mut out = String::new();
    let _ = silent.read_to_string(&mut out);
    assert_eq!(code(&out), 408, "{out}");
    assert!(c.running(NodeId(1)), "node 1 survives the bad requests");
    scrape(addr, 1);
    assert!(!log().contains("panicked"), "{}", log());

    // a second node with the same metrics address cannot start: the error names it
    add_setting(
        &c.nodes[&NodeId(2)].config,
        &format!("metrics = \"{addr}\""),
    );
    rt.block_on(async {
        let _ = c.call(NodeId(2), Request::Stop).await;
    });
    assert!(c.wait_exit(NodeId(2), Duration::from_secs(10)).is_some());
    c.start(NodeId(2)).unwrap();
    let st = c
        .wait_exit(NodeId(2), Duration::from_secs(10))
        .expect("node 2 stops: its metrics address is taken");
    assert!(!st.success());
    let log2 = std::fs::read_to_string(dir.join("node2.log")).unwrap_or_default();
    assert!(
        log2.contains(&format!(
            "cannot bind metrics listener (the metrics setting) {addr}"
        )),
        "{log2}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
