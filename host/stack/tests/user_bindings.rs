//! Claim 8 on a live cluster: an authentication source binds a user to an address on node 1
//! (`clusterd ctl user-bind`), the binding is replicated, and node 2's `users` answer (its
//! table and its JSON) shows it; unbound on node 2, it is gone from every node. Bad bindings
//! are refused with exit status 1.

mod common;

use std::path::Path;
use std::time::Duration;

use host::core::ids::NodeId;
use host::daemon::protocol::{Request, Response, UsersReply};
use host::lab::cluster::{Cluster, Layout};

/// Node `id`'s bindings, as (address, user).
async fn users(c: &Cluster, id: NodeId) -> Result<Vec<(String, u32)>, String> {
    match c.call(id, Request::Users).await {
        Ok(Response::Users(u)) => Ok(u
            .users
            .iter()
            .map(|b| (b.addr.to_string(), b.user))
            .collect()),
        other => Err(format!("node {}: {other:?}", id.0)),
    }
}

async fn body(c: &mut Cluster, dir: &Path) {
    let bind = r#"{"user":7,"addr":"198.18.0.10","lifetime_s":3600}"#;
    let o = common::ctl(dir, 1, &["user-bind", bind]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("198.18.0.10") && out.contains("USER"), "{out}");
    let want = vec![("198.18.0.10".to_owned(), 7)];
    common::wait_for(Duration::from_secs(20), async || {
        for id in [NodeId(2), NodeId(3)] {
            let have = users(c, id).await?;
            if have != want {
                return Err(format!("node {}: {have:?}", id.0));
            }
        }
        Ok(())
    })
    .await;
    // node 2's answer as a table and as JSON
    let o = common::ctl(dir, 2, &["users"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    let row = out
        .lines()
        .find(|l| l.contains("198.18.0.10"))
        .expect("a row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (cols[0], cols[1], cols[3]),
        ("198.18.0.10", "7", "1"),
        "{out}"
    );
    let left: u64 = cols[2].parse().expect("seconds left");
    assert!((3000..=3600).contains(&left), "{out}");
    let o = common::ctl(dir, 2, &["users", "--json"]);
    let reply: UsersReply = serde_json::from_slice(&o.stdout).expect("a users answer");
    assert_eq!(reply.users.len(), 1);
    assert_eq!((reply.users[0].user, reply.users[0].origin), (7, 1));
    // refused: no lifetime, a lifetime beyond 7 days, unbinding what is not bound
    for (cmd, args) in [
        ("user-bind", r#"{"user":7,"addr":"198.18.0.11"}"#),
        (
            "user-bind",
            r#"{"user":7,"addr":"198.18.0.11","lifetime_s":604801}"#,
        ),
        ("user-unbind", r#"{"addr":"198.18.0.99"}"#),
    ] {
        let o = common::ctl(dir, 1, &[cmd, args]);
        assert_eq!(o.status.code(), Some(1), "{cmd} {args}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("error:"));
    }
    // unbound on node 2: gone everywhere
    let o = common::ctl(dir, 2, &["user-unbind", r#"{"addr":"198.18.0.10"}"#]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    common::wait_for(Duration::from_secs(20), async || {
        for id in [NodeId(1), NodeId(3)] {
            let have = users(c, id).await?;
            if !have.is_empty() {
                return Err(format!("node {}: {have:?}", id.0));
            }
        }
        Ok(())
    })
    .await;
}

#[test]
fn a_user_bound_on_node_1_is_in_node_2s_users() {
    let layout = common::patient(Layout::default());
    common::with_cluster("users", &layout, 3, Duration::from_secs(30), body);
}
