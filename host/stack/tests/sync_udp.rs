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
