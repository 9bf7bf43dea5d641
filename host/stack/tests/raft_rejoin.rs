//! A node whose Raft state directory was rolled back to an older copy, or lost, rejoins a
//! running 3-process cluster: no node panics (the leader's heartbeats carry a commit beyond the
//! restarted node's log, which crashed it before), the restarted node catches up (through a
//! snapshot: the others compacted their logs meanwhile) and the cluster keeps agreeing; SIGKILL
//! in the middle of allocation changes never leaves files the next start refuses.

mod common;

use std::path::Path;
use std::time::Duration;

use host::core::ids::NodeId;
use host::daemon::consensus::COMPACT_AFTER;
use host::daemon::protocol::Request;
use host::lab::cluster::{Cluster, Layout};
use serde_json::{json, Value};

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

async fn owners(c: &Cluster, id: NodeId) -> Option<(u64, Vec<Value>)> {
    let v = c.call_json(id, &json!({"cmd": "allocation"})).await.ok()?;
    Some((v["epoch"].as_u64()?, v["owners"].as_array()?.clone()))
}

/// Moves identifier 0 to `to` through the leader and waits until every node agrees.
async fn move_and_wait(c: &mut Cluster, to: u16) {
    let start = tokio::time::Instant::now();
    loop {
        let _ = c
            .to_leader(Request::Move {
                ids: vec![0],
                to: Some(to),
            })
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            let mut all = true;
            for n in 1..=3 {
                let at = owners(c, NodeId(n)).await;
                all &= at.is_some_and(|(_, o)| o[0] == json!(to));
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "identifier 0 did not move to node {to}"
        );
    }
}

/// Every node has the same allocation (the leader may still be moving identifiers: they agree
/// within 10 s); returns its epoch.
async fn assert_agreed(c: &mut Cluster) -> u64 {
    agreed_among(c, &[NodeId(1), NodeId(2), NodeId(3)]).await
}

async fn agreed_among(c: &Cluster, nodes: &[NodeId]) -> u64 {
    let start = tokio::time::Instant::now();
    loop {
        let mut seen = Vec::new();
        for n in nodes {
            seen.push(owners(c, *n).await);
        }
        if seen[0].is_some() && seen.windows(2).all(|w| w[0] == w[1]) {
            return seen[0].as_ref().map_or(0, |s| s.0);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the nodes do not agree: epochs {:?}",
            seen.iter()
                .map(|s| s.as_ref().map(|s| s.0))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_no_panic(dir: &Path) {
    for n in 1..=3 {
        let log = std::fs::read_to_string(dir.join(format!("node{n}.log"))).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "node {n} panicked:\n{}",
            log.lines()
                .filter(|l| l.contains("panicked"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn rolled_back_and_lost_state_directories_rejoin() {
    let (rt, dir) = common::runtime_and_dir("rejoin");
    rt.block_on(async {
        let mut c = common::launch(&dir, &Layout::default(), 3, Duration::from_secs(20)).await;
        let node = NodeId(3);
        let state = dir.join("node3.state");
        let backup = dir.join("node3.state.older");
        // an older copy of node 3's state, taken while it was down
        c.kill(node);
        copy_dir(&state, &backup);
        c.start(node).unwrap();
        c.wait_settled(Duration::from_secs(20)).await.unwrap();
        // enough allocation changes that every log is compacted past the older copy
        for i in 0..COMPACT_AFTER / 2 + 4 {
            move_and_wait(&mut c, if i % 2 == 0 { 1 } else { 2 }).await;
        }
        let before = assert_agreed(&mut c).await;
        // the log holds at most COMPACT_AFTER entries (and the few applied since): each an
        // allocation of 256 identifiers (2 bytes each) naming at most one next owner, plus the
        // entry's header and the store's framing (64 bytes)
        let entry = 13 + 2 * 256 + 4 + 64;
        for n in 1..=3 {
            let st = c.status(NodeId(n)).await.unwrap();
            let bytes = st["raft_state"]["log_bytes"].as_u64().unwrap();
            assert!(
                bytes < (COMPACT_AFTER + 16) * entry,
                "node {n}: raft.log is {bytes} bytes after {before} epochs"
            );
        }
        assert!(state.join("raft.snapshot").exists(), "node 3 compacted");

        // rolled back: node 3 starts again from the older copy
        c.kill(node);
        copy_dir(&backup, &state);
        c.start(node).unwrap();
        c.wait_settled(Duration::from_secs(20)).await.unwrap();
        move_and_wait(&mut c, 3).await;
        assert!(assert_agreed(&mut c).await > before);
        assert_no_panic(&dir);

        // lost: node 3 starts again without its state directory
        c.kill(node);
        std::fs::remove_dir_all(&state).unwrap();
        c.start(node).unwrap();
        c.wait_settled(Duration::from_secs(20)).await.unwrap();
        move_and_wait(&mut c, 1).await;
        let st = c.status(node).await.unwrap();
        assert_eq!(st["raft_state"]["abstaining"], json!(false), "caught up");
        assert_agreed(&mut c).await;
        let log3 = std::fs::read_to_string(dir.join("node3.log")).unwrap();
        assert!(
            log3.contains("no Raft state in"),
            "the fresh start is logged"
        );

        // SIGKILL in the middle of allocation changes (the log being appended, compacted or
        // rewritten): every restart opens its files (a torn tail is cut off, nothing else)
        let mut seed = u64::from(std::process::id());
        for round in 0..6u16 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let _ = c
                .to_leader(Request::Move {
                    ids: vec![1, 2, 3],
                    to: Some(1 + round % 3),
                })
                .await;
            tokio::time::sleep(Duration::from_millis((seed >> 33) % 120)).await;
            c.kill(node);
            c.start(node).unwrap();
            c.wait_settled(Duration::from_secs(20)).await.unwrap();
        }
        assert_agreed(&mut c).await;

        // the rejoined node carries the quorum: the leader goes down, the other two agree
        let leader = c.leader().await.expect("a leader");
        c.kill(leader);
        let survivors: Vec<NodeId> = (1..=3).map(NodeId).filter(|n| *n != leader).collect();
        common::wait_for(Duration::from_secs(10), async || {
            for n in &survivors {
                if c.status(*n)
                    .await
                    .is_ok_and(|s| s["is_leader"] == json!(true))
                {
                    return Ok(());
                }
            }
            Err(format!("no new leader among {survivors:?}"))
        })
        .await;
        c.wait_settled(Duration::from_secs(20)).await.unwrap();
        agreed_among(&c, &survivors).await;
        assert_no_panic(&dir);
        c.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
