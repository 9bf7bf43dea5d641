//! Multi-process cluster driven through the control sockets: partition (fault-injecting
//! transport), heal, operator move and drain; invariants checked on every sample: no identifier
//! is claimed by two traffic-handling nodes, and cards hold exactly the owned identifiers once
//! settled.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use host::core::ids::NodeId;
use host::daemon::cluster::{Cluster, Layout};
use serde_json::{json, Value};

/// Multi-process clusters are timing-sensitive (200 ms failure detection): run them one at a
/// time so that parallel test threads on a small CI machine do not starve each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn workdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("clusterd-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Identifiers claimed by more than one node that is taking traffic (ready, not fenced, not
/// behind) at the moment of the sample.
async fn double_claims(c: &mut Cluster) -> usize {
    let st = c.statuses().await;
    let mut claims: BTreeMap<u64, usize> = BTreeMap::new();
    for (id, s) in &st {
        let active =
            s["ready"] == json!(true) && s["fenced"] == json!(false) && s["behind"] == json!(false);
        if !active || s["role"] != json!("member") {
            continue;
        }
        if let Ok(a) = c.call(*id, json!({"cmd": "allocation"})).await {
            for (i, o) in a["owners"].as_array().into_iter().flatten().enumerate() {
                if o.as_u64() == Some(u64::from(id.0)) {
                    *claims.entry(i as u64).or_insert(0) += 1;
                }
            }
        }
    }
    claims.values().filter(|n| **n > 1).count()
}

async fn owned(c: &Cluster, id: NodeId) -> u64 {
    c.call(id, json!({"cmd": "status"}))
        .await
        .map(|v| v["owned"].as_u64().unwrap_or(0))
        .unwrap_or(0)
}

async fn check_tables(c: &mut Cluster) {
    for id in c.running_ids() {
        let v: Value = c.call(id, json!({"cmd": "check"})).await.unwrap();
        assert_eq!(
            v["problems"].as_array().map(Vec::len),
            Some(0),
            "node {}: {v}",
            id.0
        );
    }
}

#[test]
fn partition_fences_minority_and_heals() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    rt().block_on(async {
        let dir = workdir("partition");
        let mut c = Cluster::prepare(
            &dir,
            &Layout::default(),
            Path::new(env!("CARGO_BIN_EXE_clusterd")),
        )
        .unwrap();
        for i in 1..=3 {
            c.start(NodeId(i)).unwrap();
        }
        c.wait_settled(Duration::from_secs(20)).await.unwrap();
        assert!(owned(&c, NodeId(3)).await > 0);
        // cut node 3 off in both directions
        c.call(NodeId(3), json!({"cmd": "partition", "peers": [1, 2]}))
            .await
            .unwrap();
        for i in 1..=2 {
            c.call(NodeId(i), json!({"cmd": "partition", "peers": [3]}))
                .await
                .unwrap();
        }
        let start = tokio::time::Instant::now();
        let mut moved = false;
        while start.elapsed() < Duration::from_secs(5) {
            assert_eq!(
                double_claims(&mut c).await,
                0,
                "two active owners during the partition"
            );
            let s3 = c.call(NodeId(3), json!({"cmd": "status"})).await.unwrap();
            let o1 = owned(&c, NodeId(1)).await;
            let o2 = owned(&c, NodeId(2)).await;
            if s3["fenced"] == json!(true) && o1 + o2 == 256 {
                moved = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            moved,
            "the majority did not take over the isolated node's identifiers"
        );
        // heal: node 3 catches up, resyncs its view and gets identifiers back
        for i in 1..=3 {
            c.call(NodeId(i), json!({"cmd": "partition", "peers": []}))
                .await
                .unwrap();
        }
        let start = tokio::time::Instant::now();
        while start.elapsed() < Duration::from_secs(8) && owned(&c, NodeId(3)).await == 0 {
            assert_eq!(
                double_claims(&mut c).await,
                0,
                "two active owners while healing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            owned(&c, NodeId(3)).await > 0,
            "healed node got no identifiers back"
        );
        c.wait_settled(Duration::from_secs(10)).await.unwrap();
        check_tables(&mut c).await;
        c.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn operator_move_and_drain() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    rt().block_on(async {
        let dir = workdir("operator");
        let mut c = Cluster::prepare(
            &dir,
            &Layout::default(),
            Path::new(env!("CARGO_BIN_EXE_clusterd")),
        )
        .unwrap();
        for i in 1..=3 {
            c.start(NodeId(i)).unwrap();
        }
        c.wait_settled(Duration::from_secs(20)).await.unwrap();
        // a non-leader refuses operator commands and names the leader
        let leader = c.leader().await.unwrap();
        let other = (1..=3).map(NodeId).find(|n| *n != leader).unwrap();
        let v = c
            .call(other, json!({"cmd": "move", "ids": [0], "to": 1}))
            .await
            .unwrap();
        assert_eq!(v["ok"], json!(false));
        assert_eq!(v["leader"].as_u64(), Some(u64::from(leader.0)));
        // move identifiers 0..8 to node 3
        c.to_leader(json!({"cmd": "move", "ids": [0, 1, 2, 3, 4, 5, 6, 7], "to": 3}))
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        loop {
            let a = c
                .call(NodeId(1), json!({"cmd": "allocation"}))
                .await
                .unwrap();
            let owners: Vec<u64> = a["owners"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_u64().unwrap_or(0))
                .collect();
            if owners[..8].iter().all(|o| *o == 3) {
                break;
            }
            assert_eq!(double_claims(&mut c).await, 0);
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "move did not happen: {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // drain node 2: it ends with nothing, the others split everything
        c.to_leader(json!({"cmd": "drain", "node": 2}))
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        while owned(&c, NodeId(2)).await > 0 {
            assert_eq!(double_claims(&mut c).await, 0);
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "drain did not happen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.wait_settled(Duration::from_secs(5)).await.unwrap();
        assert_eq!(owned(&c, NodeId(1)).await + owned(&c, NodeId(3)).await, 256);
        check_tables(&mut c).await;
        // invariant 3: common tables converge (same per-identifier digests everywhere), and
        // invariant 6: SA key material is never readable through the control socket
        let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeef0";
        let v = c
            .call(NodeId(1), json!({"cmd": "sa_add", "peer": "198.51.100.7", "dst": "203.0.113.1", "spi": 77, "key": key}))
            .await
            .unwrap();
        assert_eq!(v["ok"], json!(true), "{v}");
        let start = tokio::time::Instant::now();
        loop {
            let mut digests = Vec::new();
            for i in 1..=3 {
                let v = c.call(NodeId(i), json!({"cmd": "counts"})).await.unwrap();
                let d: Vec<String> = v["ids"].as_array().unwrap().iter().map(|x| x["digest"].to_string()).collect();
                digests.push(d);
            }
            if digests.windows(2).all(|w| w[0] == w[1]) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "common tables did not converge");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in 1..=3 {
            for cmd in ["status", "dump", "sas", "counts", "applied"] {
                let v = c.call(NodeId(i), json!({"cmd": cmd})).await.unwrap();
                assert!(!v.to_string().contains(&key[..16]), "key material in {cmd} of node {i}");
            }
            let v = c.call(NodeId(i), json!({"cmd": "sas"})).await.unwrap();
            assert_eq!(v["sas"][0]["key_present"], json!(true), "SA key not replicated to node {i}: {v}");
        }
        // garbage on the control socket gets clear errors and the node keeps answering
        {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
            let s = tokio::net::UnixStream::connect(&c.nodes[&NodeId(1)].control).await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            for junk in ["not json", "[1,2]", "{\"cmd\": 5}", "{\"cmd\": \"move\", \"ids\": \"x\"}", "\u{1}\u{2}"] {
                w.write_all(format!("{junk}\n").as_bytes()).await.unwrap();
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["ok"], json!(false), "{junk:?} -> {v}");
            }
        }
        // unknown and malformed commands get clear errors
        let v = c
            .call(NodeId(1), json!({"cmd": "frobnicate"}))
            .await
            .unwrap();
        assert_eq!(v["ok"], json!(false));
        assert!(v["error"].as_str().unwrap().contains("unknown command"));
        c.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
