//! Forged, garbled and replayed sync frames sent over UDP to a running node are rejected and
//! counted, and the cluster keeps working.

use std::path::Path;
use std::time::Duration;

use host::core::ids::NodeId;
use host::lab::cluster::{Cluster, Layout};
use host::sync::{ClusterKey, Endpoint, EndpointConfig};
use serde_json::json;

#[test]
fn running_node_rejects_and_counts_bad_frames() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let dir =
                std::env::temp_dir().join(format!("clusterd-test-syncudp-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut c = Cluster::launch(
                &dir,
                &Layout::default(),
                Path::new(env!("CARGO_BIN_EXE_clusterd")),
                3,
                Duration::from_secs(20),
            )
            .await
            .unwrap();
            let target = c.nodes[&NodeId(1)].listen;
            let before = c.status(NodeId(1)).await.unwrap()["sync"].clone();
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            // garbled: random bytes and a truncated header
            sock.send_to(b"hello, not a frame", target).unwrap();
            sock.send_to(&[b'C', b'D', 1, 3, 0, 2, 0, 1], target)
                .unwrap();
            // forged: sealed with another key, claiming to be node 2
            let mut mallory = Endpoint::new(
                EndpointConfig::new(NodeId(2), u64::MAX / 2),
                ClusterKey::generate().unwrap(),
                [NodeId(1)],
            );
            mallory.send_datagram(NodeId(1), b"Hxxxxxxxxxxxx").unwrap();
            let forged = mallory.poll_transmit().unwrap();
            sock.send_to(&forged.bytes, target).unwrap();
            // replayed / stale: a valid frame of an old incarnation of node 2
            let key =
                ClusterKey::from_hex(&std::fs::read_to_string(dir.join("cluster.key")).unwrap())
                    .unwrap();
            let mut old = Endpoint::new(EndpointConfig::new(NodeId(2), 5), key, [NodeId(1)]);
            old.send_datagram(NodeId(1), b"Hxxxxxxxxxxxx").unwrap();
            let stale = old.poll_transmit().unwrap();
            sock.send_to(&stale.bytes, target).unwrap();
            sock.send_to(&stale.bytes, target).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = c.status(NodeId(1)).await.unwrap();
            let s = &after["sync"];
            let d = |k: &str| s[k].as_u64().unwrap() - before[k].as_u64().unwrap();
            assert_eq!(d("rejected_garbled"), 2, "{s}");
            assert_eq!(d("rejected_auth"), 1, "{s}");
            assert_eq!(d("rejected_replay"), 2, "{s}");
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
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let dir =
                std::env::temp_dir().join(format!("clusterd-test-dupid-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut c = Cluster::launch(
                &dir,
                &Layout::default(),
                Path::new(env!("CARGO_BIN_EXE_clusterd")),
                3,
                Duration::from_secs(20),
            )
            .await
            .unwrap();
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
                        format!("listen = {}", free())
                    } else if l.starts_with("wire =") {
                        format!("wire = {}", free())
                    } else if l.starts_with("control =") {
                        "control = dup.sock".to_string()
                    } else if l.starts_with("state_dir =") {
                        "state_dir = dup.state".to_string()
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
