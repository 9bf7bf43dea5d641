//! Forged, garbled and replayed sync frames sent over UDP to a running node are rejected and
//! counted, and the cluster keeps working; frames captured before a restart do not revive a dead
//! peer; a second process with a node id is reported and displaces nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use host::core::ids::NodeId;
use host::lab::cluster::{Cluster, Layout};
use host::sync::{ClusterKey, Endpoint, EndpointConfig, NodeIdentity};

/// The endpoint settings of node `me` of the lab cluster in `dir` (whose nodes sign their
/// frames): its identity from its file, the other nodes' public keys from theirs.
fn as_node(dir: &Path, me: u16, incarnation: u64) -> EndpointConfig {
    let load = |n: u16| NodeIdentity::load(&dir.join(format!("node{n}.id"))).unwrap();
    let mut cfg = EndpointConfig::new(NodeId(me), incarnation);
    cfg.identity = Some(std::sync::Arc::new(load(me)));
    cfg.peer_keys = (1..=3u16)
        .filter(|&n| n != me)
        .map(|n| (NodeId(n), load(n).public()))
        .collect();
    cfg
}
use serde_json::json;

/// Three `clusterd` nodes of the default layout in `dir`, launched.
async fn launch_three(dir: &Path) -> Cluster {
    common::launch(dir, &Layout::default(), 3, Duration::from_secs(20)).await
}

#[test]
fn running_node_rejects_and_counts_bad_frames() {
    let (rt, dir) = common::runtime_and_dir("syncudp");
    rt.block_on(async {
        let mut c = launch_three(&dir).await;
        let target = c.nodes[&NodeId(1)].listen;
        let before = c.status(NodeId(1)).await.unwrap()["sync"].clone();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // garbled: random bytes and a truncated header
        sock.send_to(b"hello, not a frame", target).unwrap();
        sock.send_to(&[b'C', b'D', 1, 3, 0, 2, 0, 1], target)
            .unwrap();
        // forged: sealed with another key, claiming to be node 2
        let mut mallory = Endpoint::new(
            as_node(&dir, 2, u64::MAX / 2),
            ClusterKey::generate().unwrap(),
            [NodeId(1)],
        );
        // (in a cluster with identities a node's first frames are hellos)
        mallory.handle_timeout(Duration::from_secs(1));
        let forged = mallory.poll_transmit().unwrap();
        sock.send_to(&forged.bytes, target).unwrap();
        // stale: a pair-keyed frame (here a data frame) of an incarnation of node 2 that
        // node 1 never accepted, as a capture from an old incarnation is: refused before
        // any key work
        let key = ClusterKey::from_hex(&std::fs::read_to_string(dir.join("cluster.key")).unwrap())
            .unwrap();
        let mut old = Endpoint::new(as_node(&dir, 2, 5), key, [NodeId(1)]);
        old.handle_timeout(Duration::from_secs(1));
        let mut stale = old.poll_transmit().unwrap();
        stale.bytes[3] = 1;
        sock.send_to(&stale.bytes, target).unwrap();
        sock.send_to(&stale.bytes, target).unwrap();
        // unsigned, though sealed with the cluster key: a member without its identity (or
        // a downgrade) is refused
        let key2 = ClusterKey::from_hex(&std::fs::read_to_string(dir.join("cluster.key")).unwrap())
            .unwrap();
        let mut plain = Endpoint::new(EndpointConfig::new(NodeId(2), 7), key2, [NodeId(1)]);
        plain.send_datagram(NodeId(1), b"Hxxxxxxxxxxxx").unwrap();
        sock.send_to(&plain.poll_transmit().unwrap().bytes, target)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = c.status(NodeId(1)).await.unwrap();
        let s = &after["sync"];
        let d = |k: &str| s[k].as_u64().unwrap() - before[k].as_u64().unwrap();
        assert_eq!(d("rejected_garbled"), 2, "{s}");
        assert_eq!(d("rejected_auth"), 1, "{s}");
        assert_eq!(d("rejected_replay"), 2, "{s}");
        assert_eq!(d("rejected_version"), 1, "{s}");
        assert_eq!(after["ready"], json!(true));
        // the cluster still agrees and works
        c.wait_settled(Duration::from_secs(5)).await.unwrap();
        c.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Reads a log file, empty if it is not there yet.
fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A second clusterd configured with node 1's id (its own address, state and control socket)
/// is reported loudly by a peer and by node 1 itself, and node 1 keeps its place: its peers
/// still hold its incarnation and the cluster stays settled.
#[test]
fn duplicate_node_id_on_the_wire_is_reported_and_displaces_nothing() {
    let (rt, dir) = common::runtime_and_dir("dupid");
    rt.block_on(async {
        let mut c = launch_three(&dir).await;
        let inc1 = c.status(NodeId(1)).await.unwrap()["incarnation"].clone();
        // node 1's config, moved to a fresh address, state directory and socket
        let free = || {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let text = std::fs::read_to_string(dir.join("node1.conf")).unwrap();
        let dup: String = text
            .lines()
            .map(|l| {
                if l.starts_with("listen =") {
                    format!("listen = \"{}\"", free())
                } else if l.starts_with("wire =") {
                    format!("wire = \"{}\"", free())
                } else if l.starts_with("control =") {
                    "control = \"dup.sock\"".to_string()
                } else if l.starts_with("state_dir =") {
                    "state_dir = \"dup.state\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("dup.conf"), dup + "\n").unwrap();
        let log = std::fs::File::create(dir.join("dup.log")).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clusterd"))
            .arg("run")
            .arg("--config")
            .arg(dir.join("dup.conf"))
            .env("CLUSTERD_EXIT_WITH_PARENT", "1")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let (peer_log, own_log) = (dir.join("node2.log"), dir.join("node1.log"));
        let mut reported = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let peer = log_of(&peer_log);
            let own = log_of(&own_log);
            if peer.contains("DUPLICATE NODE ID: frames of node1")
                && own.contains("DUPLICATE NODE ID: node2 hears this node's id")
            {
                reported = true;
                break;
            }
        }
        assert!(
            reported,
            "node2.log:\n{}\nnode1.log:\n{}",
            log_of(&peer_log),
            log_of(&own_log)
        );
        // nothing moved: node 1 is still the node 1 its peers hear
        for peer in [NodeId(2), NodeId(3)] {
            let st = c.status(peer).await.unwrap();
            let p1 = st["sync_peers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["peer"] == json!(1))
                .unwrap()
                .clone();
            assert_eq!(p1["incarnation"], inc1, "{st}");
        }
        assert_eq!(c.status(NodeId(1)).await.unwrap()["ready"], json!(true));
        c.wait_settled(Duration::from_secs(10)).await.unwrap();
        let _ = child.kill();
        let _ = child.wait();
        c.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Node 1's view of peer `peer` (`sync_peers` of its status).
async fn peer_view(c: &Cluster, peer: u16) -> serde_json::Value {
    let st = c.status(NodeId(1)).await.unwrap();
    st["sync_peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == json!(peer))
        .unwrap()
        .clone()
}

/// Real frames of one incarnation of node 3 (an endpoint with the cluster key at node 3's
/// address, accepted by the running node 1), captured, then replayed to node 1 after it
/// restarted: all refused, and the dead node 3 is not marked alive.
#[test]
fn captured_frames_replayed_after_a_restart_do_not_revive_a_dead_peer() {
    let (rt, dir) = common::runtime_and_dir("replay");
    rt.block_on(async {
        let mut c = launch_three(&dir).await;
        c.kill(NodeId(3));
        let key = ClusterKey::from_hex(&std::fs::read_to_string(dir.join("cluster.key")).unwrap())
            .unwrap();
        let target = c.nodes[&NodeId(1)].listen;
        let sock = std::net::UdpSocket::bind(c.nodes[&NodeId(3)].listen).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let inc = 4_000_000_000_000_000u64;
        let mut n3 = Endpoint::new(as_node(&dir, 3, inc), key, [NodeId(1)]);
        let origin = std::time::Instant::now();
        let mut captured = Vec::new();
        let mut buf = vec![0u8; 65_536];
        let mut accepted = false;
        for round in 0..2000 {
            let now = origin.elapsed();
            n3.handle_timeout(now);
            if round % 20 == 0 && n3.peer_status(now)[0].incarnation != 0 {
                n3.send_datagram(NodeId(1), b"not a heartbeat").unwrap();
            }
            while let Some(t) = n3.poll_transmit() {
                sock.send_to(&t.bytes, target).unwrap();
                captured.push(t.bytes);
            }
            if let Ok(n) = sock.recv(&mut buf) {
                let _ = n3.handle_frame(origin.elapsed(), &buf[..n]);
                while n3.poll_event().is_some() {}
            }
            if round % 100 == 99 && peer_view(&c, 3).await["incarnation"] == json!(inc) {
                accepted = true;
                break;
            }
        }
        assert!(
            accepted,
            "node 1 never accepted the endpoint posing as node 3"
        );
        drop(sock);
        // node 1 restarts; node 3 stays dead
        c.kill(NodeId(1));
        c.start(NodeId(1)).unwrap();
        let mut up = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if c.status(NodeId(1)).await.is_ok() {
                up = true;
                break;
            }
        }
        assert!(up, "node 1 did not come back");
        let before = c.status(NodeId(1)).await.unwrap()["sync"]["rejected_replay"]
            .as_u64()
            .unwrap();
        let replayer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for f in &captured {
            replayer.send_to(f, target).unwrap();
        }
        // wait until node 1 has handled them (refused as replays)
        let mut refused = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let st = c.status(NodeId(1)).await.unwrap();
            if st["sync"]["rejected_replay"].as_u64().unwrap() > before {
                refused = true;
                break;
            }
        }
        assert!(refused, "no captured frame was refused as a replay");
        let view = peer_view(&c, 3).await;
        assert_eq!(view["incarnation"], json!(0), "{view}");
        assert_eq!(view["last_heard_ms"], json!(u64::MAX), "{view}");
        c.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
