//! Claim 12 on a live cluster: `clusterd ctl check` recomputes every entry's distribution
//! identifier from its key (TCP connections and the two ESP SAs of a tunnel, whose keys carry
//! the peer addresses) on each of three real `clusterd` processes, and finds none stored
//! under another identifier: exit status 0, a readable summary, and `--json` that says the
//! same.

mod common;

use std::path::Path;
use std::time::Duration;

use host::core::ids::NodeId;
use host::daemon::protocol::{CheckReply, Request, Response, SaDir, SecretHex};
use host::lab::cluster::{Cluster, Layout};
use serde_json::Value;

/// TCP connections synthesized on each node.
const FLOWS: u64 = 300;

fn sa_add(spi: u32, dir: SaDir, key: &str) -> Request {
    Request::SaAdd {
        dir: Some(dir),
        dst: Some("203.0.113.1".parse().unwrap()),
        key: SecretHex::new(key),
        peer: Some("198.51.100.7".parse().unwrap()),
        spi,
    }
}

/// Node `id`'s `status` field `field` as a number.
async fn status_u64(c: &Cluster, id: NodeId, field: &str) -> u64 {
    c.status(id)
        .await
        .map_or(0, |v| v[field].as_u64().unwrap_or(0))
}

async fn body(c: &mut Cluster, dir: &Path) {
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    // each node creates the entries of the connections whose identifiers it owns
    let mut created = 0;
    for (n, id) in ids.into_iter().enumerate() {
        let synth = Request::Synthesize {
            first: Some(n as u64 * FLOWS),
            flows: Some(FLOWS),
        };
        let r = c
            .call_timeout(id, synth, Duration::from_secs(120))
            .await
            .unwrap();
        let Response::Synthesized(s) = r else {
            panic!("node {}: {r:?}", id.0)
        };
        created += s.created;
    }
    // about a third of each node's connections are its own
    assert!(created > FLOWS / 2, "{created} connections made entries");
    // a tunnel: its outbound and its inbound SA, each with its own key
    let keys = [
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeef0",
        "f0eeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
    ];
    for (spi, d, key) in [(77, SaDir::Out, keys[0]), (78, SaDir::In, keys[1])] {
        let r = c.call(NodeId(1), sa_add(spi, d, key)).await.unwrap();
        assert!(r.is_ok(), "sa_add {spi}: {r:?}");
    }
    // every node holds every entry: the connections and the two SA entries
    let created = created + 2;
    common::wait_for(Duration::from_secs(30), async || {
        for id in ids {
            let have = status_u64(c, id, "common_entries").await;
            if have < created {
                return Err(format!("node {}: {have} of {created} entries", id.0));
            }
        }
        Ok(())
    })
    .await;
    for node in 1..=3u16 {
        // the SA entries are there, under the keys with their peers
        let o = common::ctl(dir, node, &["count", "--proto", "esp"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "2",
            "node {node}"
        );
        let o = common::ctl(
            dir,
            node,
            &["get", "esp 198.51.100.7 -> 203.0.113.1 spi=0x0000004d"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // people's summary, exit status 0
        let o = common::ctl(dir, node, &["check"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "node {node}: {out} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.contains("0 under a wrong identifier, 0 other problems"),
            "node {node}: {out}"
        );
        assert!(!out.contains("RECOMPUTED"), "no mismatch table: {out}");
        // the same as JSON
        let o = common::ctl(dir, node, &["check", "--json"]);
        assert!(o.status.success(), "node {node}");
        let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        let reply: CheckReply = serde_json::from_value(v).expect("a check answer");
        assert!(reply.mismatches.is_empty(), "node {node}: {reply:?}");
        assert!(reply.problems.is_empty(), "node {node}: {reply:?}");
        assert!(
            reply.checked >= created,
            "node {node}: checked {} of at least {created} entries",
            reply.checked
        );
    }
}

#[test]
fn ctl_check_finds_no_identifier_mismatch_on_a_live_cluster() {
    let layout = common::patient(Layout::default());
    common::with_cluster("idcheck", &layout, 3, Duration::from_secs(30), body);
}
