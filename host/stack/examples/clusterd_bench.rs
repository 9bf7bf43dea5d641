//! clusterd benchmark: replication throughput with encryption on loopback, bytes per IPv4 TCP
//! entry on the wire, memory per common-table entry, and the takeover time of a killed node
//! holding 100,000 entries in a real 3-process cluster.
//!
//! ```text
//! cargo build --release -p host --bin clusterd
//! cargo run --release -p host --example clusterd_bench [-- EVENTS TAKEOVER_ENTRIES]
//! ```

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use host::core::distribution::{ClusterSecret, Distributor};
use host::core::entry::{ConnState, Endpoint as Ep, Entry, FlowKey, L4Proto};
use host::core::events::{Event, Message};
use host::core::ids::{IdCount, Millis, NodeId};
use host::core::node::{Node, NodeConfig};
use host::core::node_table::SoftwareTable;
use host::core::CommonTable;
use host::daemon::protocol::{Request, Response};
use host::lab::cluster::{Cluster, Layout};
use host::sync::{ClusterKey, Endpoint, EndpointConfig, SyncEvent};
use serde_json::json;

fn secret() -> ClusterSecret {
    ClusterSecret::new([3; 16])
}

fn entry(d: &Distributor, i: u32) -> Entry {
    let c = Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff));
    let key = FlowKey::Transport {
        proto: L4Proto::Tcp,
        lo: Ep::new(IpAddr::V4(c), 40000 + (i >> 24) as u16),
        hi: Ep::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 443),
    };
    let dist = d.for_key(&key);
    let mut e = Entry::new(key, dist, ConnState::Established, NodeId(1));
    e.version = 1;
    e
}

fn big_buffers(s: &UdpSocket) {
    let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::RcvBuf, &(16 << 20));
    let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::SndBuf, &(16 << 20));
}

/// Sends `n` encoded IPv4 TCP add events from node 1 to node 2 over loopback UDP, sealed.
/// With `apply`, node 2 decodes every event and applies it to a state-core node (common
/// table). Returns (events/s, wire bytes per event, encoded event size).
fn replication(n: u32, apply: bool) -> (f64, f64, usize) {
    let key = ClusterKey::generate().expect("random");
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    big_buffers(&a);
    big_buffers(&b);
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let origin = Instant::now();
    let key2 = key.clone();
    let receiver = std::thread::spawn(move || {
        let mut ep = Endpoint::new(EndpointConfig::new(NodeId(2), 2), key2, [NodeId(1)]);
        let mut node = Node::new(
            NodeConfig::new(NodeId(2), secret()),
            SoftwareTable::new(IdCount::default()),
        );
        b.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = 0u32;
        let mut applied = 0u32;
        while got < n {
            if let Ok(len) = b.recv(&mut buf) {
                let now = origin.elapsed();
                let _ = ep.handle_frame(now, &buf[..len]);
            }
            let now = origin.elapsed();
            ep.handle_timeout(now);
            while let Some(ev) = ep.poll_event() {
                if let SyncEvent::Records { batch, .. } = ev {
                    for rec in batch.iter() {
                        got += 1;
                        if apply {
                            if let Ok(m) = Message::decode(&rec[1..]) {
                                if node.apply_message(Millis(0), &m).is_ok() {
                                    applied += 1;
                                }
                            }
                        }
                    }
                }
            }
            while let Some(t) = ep.poll_transmit() {
                let _ = b.send_to(&t.bytes, a_addr);
            }
        }
        // keep acking briefly so the sender sees everything acknowledged
        let end = Instant::now();
        while end.elapsed() < Duration::from_millis(50) {
            if let Ok(len) = b.recv(&mut buf) {
                let _ = ep.handle_frame(origin.elapsed(), &buf[..len]);
            }
            ep.handle_timeout(origin.elapsed());
            while let Some(t) = ep.poll_transmit() {
                let _ = b.send_to(&t.bytes, a_addr);
            }
        }
        (origin.elapsed(), applied, node.common().len())
    });
    let d = Distributor::new(&secret(), IdCount::default());
    let mut ep = Endpoint::new(EndpointConfig::new(NodeId(1), 1), key, [NodeId(2)]);
    a.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut rec = Vec::with_capacity(64);
    let mut rec_len = 0;
    // wait until the stream is bound (hello exchange)
    let start = Instant::now();
    for i in 0..n {
        rec.clear();
        rec.push(b'E');
        Message {
            sender: NodeId(1),
            incarnation: 1,
            seq: u64::from(i) + 1,
            event: Event::Add(entry(&d, i)),
        }
        .encode_into(&mut rec);
        rec_len = rec.len();
        ep.send_record(origin.elapsed(), NodeId(2), &rec)
            .expect("queue");
        if i % 32 == 0 {
            while let Ok(len) = a.recv(&mut buf) {
                let _ = ep.handle_frame(origin.elapsed(), &buf[..len]);
            }
            ep.handle_timeout(origin.elapsed());
            while let Some(t) = ep.poll_transmit() {
                let _ = a.send_to(&t.bytes, b_addr);
            }
        }
    }
    let mut last = Instant::now();
    while !receiver.is_finished() {
        while let Ok(len) = a.recv(&mut buf) {
            let _ = ep.handle_frame(origin.elapsed(), &buf[..len]);
        }
        ep.handle_timeout(origin.elapsed());
        while let Some(t) = ep.poll_transmit() {
            let _ = a.send_to(&t.bytes, b_addr);
        }
        if last.elapsed() > Duration::from_secs(60) {
            panic!("receiver stuck");
        }
        std::thread::sleep(Duration::from_micros(50));
        if ep.backlog(NodeId(2)) > 0 {
            last = Instant::now();
        }
    }
    let (done, applied, common) = receiver.join().unwrap();
    let secs = done
        .saturating_sub(start.duration_since(origin))
        .as_secs_f64();
    let s = ep.stats();
    if apply {
        assert_eq!(applied, n, "every event applied");
        assert_eq!(common, n as usize);
    }
    let data_bytes = s.bytes_sent as f64;
    (f64::from(n) / secs, data_bytes / f64::from(n), rec_len)
}

/// In-process costs of the receiving side: decode only, and decode + apply to a state-core node.
fn receive_costs(n: u32) -> (f64, f64) {
    let d = Distributor::new(&secret(), IdCount::default());
    let msgs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            Message {
                sender: NodeId(1),
                incarnation: 1,
                seq: u64::from(i) + 1,
                event: Event::Add(entry(&d, i)),
            }
            .encode()
        })
        .collect();
    let t = Instant::now();
    let mut ok = 0;
    for m in &msgs {
        if Message::decode(m).is_ok() {
            ok += 1;
        }
    }
    let decode = f64::from(ok) / t.elapsed().as_secs_f64();
    let mut node = Node::new(
        NodeConfig::new(NodeId(2), secret()),
        SoftwareTable::new(IdCount::default()),
    );
    let t = Instant::now();
    for m in &msgs {
        if let Ok(m) = Message::decode(m) {
            let _ = node.apply_message(Millis(0), &m);
        }
    }
    let apply = f64::from(n) / t.elapsed().as_secs_f64();
    (decode, apply)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |p| p * 4096)
}

/// Fills a common table with `n` IPv4 TCP entries; returns (RSS delta, heap bytes the table
/// reports), both per entry. Run in a child process of its own (`--memory-child N`), so that no
/// memory an earlier measurement freed is reused and hidden from the RSS delta.
fn common_table_memory_child(n: u32) -> (f64, f64) {
    let d = Distributor::new(&secret(), IdCount::default());
    let before = rss_bytes();
    let mut t = CommonTable::new(IdCount::default());
    for i in 0..n {
        t.upsert_local(entry(&d, i));
    }
    let after = rss_bytes();
    assert_eq!(t.len(), n as usize);
    (
        after.saturating_sub(before) as f64 / f64::from(n),
        t.heap_bytes() as f64 / f64::from(n),
    )
}

fn common_table_memory(n: u32) -> Result<(f64, f64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["--memory-child", &n.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>());
    match (it.next(), it.next()) {
        (Some(Ok(rss)), Some(Ok(heap))) if out.status.success() => Ok((rss, heap)),
        _ => Err(format!("memory child failed: {}", out.status)),
    }
}

fn vu(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

async fn takeover(per_node: u32) -> Result<(), String> {
    let exe: PathBuf = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("clusterd"))
        .ok_or("no binary dir")?;
    if !exe.exists() {
        return Err(format!(
            "{} not found: cargo build --release -p host --bin clusterd",
            exe.display()
        ));
    }
    let dir = host::lab::fresh_dir("clusterd-bench");
    let layout = Layout {
        card_capacity: (per_node as usize * 2).next_power_of_two(),
        ..Layout::default()
    };
    let mut c = Cluster::launch(&dir, &layout, &exe, 3, Duration::from_secs(20)).await?;
    let total = per_node * 3;
    let t0 = Instant::now();
    for i in 1..=3 {
        let synth = Request::Synthesize {
            first: None,
            flows: Some(u64::from(total)),
        };
        let v = match c
            .call_timeout(NodeId(i), synth, Duration::from_secs(120))
            .await
            .map_err(|e| e.to_string())?
        {
            Response::Synthesized(v) => v,
            other => return Err(format!("node {i}: synthesize: {other:?}")),
        };
        println!(
            "  node {i}: created {} entries in {} ms",
            v.created, v.took_ms
        );
    }
    // wait for replication to complete: every common table holds every entry
    loop {
        let st = c.statuses().await;
        let min = st
            .values()
            .map(|v| vu(&v["common_entries"]))
            .min()
            .unwrap_or(0);
        if min >= u64::from(total) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            println!("  working directory: {}", dir.display());
            return Err(format!("replication incomplete: {min} of {total}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  replicated {total} entries to every common table in {:.2} s (fill + sync)",
        t0.elapsed().as_secs_f64()
    );
    let st = c.statuses().await;
    let victim = st
        .iter()
        .find(|(_, v)| v["is_leader"] == json!(false))
        .map(|(id, _)| *id)
        .ok_or("no follower")?;
    let held = vu(&st[&victim]["node_table_entries"]);
    let kill_ms = host::daemon::node::unix_ms();
    c.kill(victim);
    let mut result = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let mut done = 0;
        let mut last = 0;
        let mut installed = 0;
        for id in c.running_ids() {
            if let Ok(Response::Applied(v)) = c.call(id, Request::Applied).await {
                if let Some(r) = v.applied.iter().find(|r| {
                    vu(&r["at_unix_ms"]) >= kill_ms
                        && vu(&r["gained"]) > 0
                        && vu(&r["installed_unix_ms"]) > 0
                }) {
                    // a large share goes into the card in slices: the last one's time
                    done += 1;
                    last = last.max(vu(&r["installed_unix_ms"]));
                    installed += vu(&r["installed"]);
                    println!(
                        "  node {}: gained {} ids, installed {} entries, the last {} ms after the epoch was applied (first slice and apply {} us)",
                        id.0,
                        r["gained"],
                        r["installed"],
                        vu(&r["installed_unix_ms"]).saturating_sub(vu(&r["at_unix_ms"])),
                        r["took_us"]
                    );
                }
            }
        }
        if done == 2 {
            result = Some((last - kill_ms, installed));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if result.is_some() {
        // Bulk resync: the killed node comes back with empty memory and takes its common table
        // from the survivors (conntrackd's figure to compare with is its bulk sync rate).
        // the survivors' (senders') counters, summed
        let senders = |st: &std::collections::BTreeMap<NodeId, serde_json::Value>, k: &str| {
            st.iter()
                .filter(|(id, _)| **id != victim)
                .map(|(_, v)| vu(&v["sync"][k]))
                .sum::<u64>()
        };
        let before = c.statuses().await;
        let restart = Instant::now();
        c.start(victim).map_err(|e| e.to_string())?;
        let mut done = None;
        while restart.elapsed() < Duration::from_secs(60) {
            if let Ok(v) = c.status(victim).await {
                if vu(&v["common_entries"]) >= u64::from(total) && v["last_resync"].is_object() {
                    done = Some((
                        restart.elapsed(),
                        v["last_resync"].clone(),
                        v["ready"].clone(),
                    ));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let after = c.statuses().await;
        let delta = |k: &str| senders(&after, k).saturating_sub(senders(&before, k));
        let (rt, timeouts, in_a_row) = (
            delta("retransmits"),
            delta("timeouts"),
            delta("timeouts_in_a_row"),
        );
        let dup = after
            .get(&victim)
            .map_or(0, |v| vu(&v["sync"]["duplicate_batches"]));
        match done {
            Some((t, r, ready)) => println!(
                "bulk resync of restarted node {}: {} entries in {:.0} ms from first request to last answer = {:.0} entries/s ({:.0} ms from process start to a complete common table; ready {ready}; {rt} frames retransmitted after {timeouts} timeouts, {in_a_row} of them in a row, {dup} received twice)",
                victim.0,
                r["entries"],
                r["took_us"].as_f64().unwrap_or(0.0) / 1000.0,
                r["entries_per_s"].as_f64().unwrap_or(0.0),
                t.as_secs_f64() * 1000.0
            ),
            None => println!("bulk resync of restarted node {}: incomplete after 60 s", victim.0),
        }
    }
    c.shutdown().await;
    if std::env::var_os("CLUSTERD_BENCH_KEEP").is_some() {
        println!("  working directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Some((ms, installed)) => {
            println!(
                "takeover of node {} holding {held} entries: {ms} ms from SIGKILL to entries installed in the survivors' cards ({installed} installed; target <= 500 ms)",
                victim.0
            );
            Ok(())
        }
        None => Err("no takeover observed".into()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--memory-child") {
        let n = args
            .get(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        let (rss, heap) = common_table_memory_child(n);
        println!("{rss} {heap}");
        return;
    }
    let events: u32 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let per_node: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    println!(
        "clusterd bench ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let (rate, bytes, rec) = replication(events, false);
    println!(
        "replication, AES-256-GCM, loopback UDP, transport only:    {:>10.0} events/s per node ({events} events)",
        rate
    );
    let (rate, bytes2, _) = replication(events, true);
    println!(
        "replication, AES-256-GCM, loopback UDP, decode + apply:    {:>10.0} events/s per node (target >= 1,000,000)",
        rate
    );
    println!(
        "bytes on the wire per IPv4 TCP entry: {:.1} (record {} = 1 tag + {} event; + 1 length byte + frame overhead shared by the batch; target <= 84)",
        bytes.max(bytes2),
        rec,
        rec - 1
    );
    let (dec, app) = receive_costs(1_000_000);
    println!("receiver side in-process: decode {dec:.0} events/s, decode + apply to the state core {app:.0} events/s");
    match common_table_memory(1_000_000) {
        Ok((rss, heap)) => println!(
            "memory per common-table entry (1,000,000 IPv4 TCP entries, fresh process): {rss:.0} bytes RSS delta, {heap:.0} bytes heap (Entry itself {} bytes)",
            std::mem::size_of::<Entry>()
        ),
        Err(e) => println!("memory measurement failed: {e}"),
    }
    let rt = host::lab::runtime().unwrap();
    if let Err(e) = rt.block_on(takeover(per_node)) {
        println!("takeover benchmark failed: {e}");
    }
}
