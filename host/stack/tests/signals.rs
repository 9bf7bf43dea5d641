//! Signals and the service manager, with real processes: a node of a 3-node cluster on
//! loopback started as systemd would (`NOTIFY_SOCKET`) says READY once it takes traffic;
//! SIGHUP reloads its rules file (a broken file keeps the rules in force); SIGTERM is a
//! graceful leave: it says STOPPING, hands every identifier over in planned moves (the others
//! own everything, nobody declared it failed first), removes its socket and exits 0. A
//! second node alone with nobody to hand over to stops at once on SIGINT.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use host::core::ids::NodeId;
use host::lab::cluster::{Cluster, Layout};
use nix::sys::signal::Signal;

fn log_of(dir: &Path, n: u16) -> String {
    std::fs::read_to_string(dir.join(format!("node{n}.log"))).unwrap_or_default()
}

/// Waits until node `n`'s log holds `needle`.
fn wait_log(dir: &Path, n: u16, needle: &str) {
    let t = Instant::now();
    while !log_of(dir, n).contains(needle) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "node {n} never logged {needle:?}:\n{}",
            log_of(dir, n)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The service manager's messages until one holds `needle` (all of them, joined).
fn wait_notify(sock: &UnixDatagram, needle: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    while !seen.contains(needle) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no {needle:?} from the node; it said: {seen:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    seen
}

#[test]
fn sigterm_leaves_gracefully_sighup_reloads_and_systemd_hears_it() {
    let (rt, dir) = common::runtime_and_dir("signals");
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules.txt");
    std::fs::write(&rules, "allow any\n").unwrap();
    let layout = Layout {
        extra: format!("rules = \"{}\"\n", rules.display()),
        ..Layout::default()
    };
    let exe = Path::new(env!("CARGO_BIN_EXE_clusterd"));
    let mut c = Cluster::prepare(&dir, &layout, exe).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    c.start(NodeId(1)).unwrap();
    c.start(NodeId(2)).unwrap();
    c.start_with_env(NodeId(3), &[("NOTIFY_SOCKET", notify_path.as_os_str())])
        .unwrap();
    rt.block_on(c.wait_settled(Duration::from_secs(40)))
        .unwrap_or_else(|e| panic!("settle: {e}"));
    let said = wait_notify(&notify, "READY=1");
    assert!(!said.contains("STOPPING"), "{said}");
    wait_notify(&notify, "STATUS=epoch");

    // SIGHUP: the rules file again
    std::fs::write(&rules, "drop udp dport 53\nallow any\n").unwrap();
    assert!(c.signal(NodeId(3), Signal::SIGHUP));
    wait_log(&dir, 3, "rules reloaded from");
    assert!(
        log_of(&dir, 3).contains(": 2 rules,"),
        "{}",
        log_of(&dir, 3)
    );
    let said = wait_notify(&notify, "RELOADING=1");
    assert!(
        said.contains("READY=1") || wait_notify(&notify, "READY=1").contains("READY=1"),
        "{said}"
    );
    std::fs::write(&rules, "allow nonsense\n").unwrap();
    assert!(c.signal(NodeId(3), Signal::SIGHUP));
    wait_log(&dir, 3, "the rules in force stay");
    assert!(
        c.running(NodeId(3)),
        "a bad rules file does not stop the node"
    );

    // SIGTERM: a graceful leave
    let owned = rt
        .block_on(c.allocation(NodeId(3)))
        .unwrap()
        .owners
        .iter()
        .filter(|o| **o == Some(3))
        .count();
    assert!(owned > 0, "node 3 owns identifiers before it leaves");
    let sock = c.nodes[&NodeId(3)].control.clone();
    assert!(c.signal(NodeId(3), Signal::SIGTERM));
    let st = c
        .wait_exit(NodeId(3), Duration::from_secs(12))
        .expect("node 3 exits after its leave");
    assert!(st.success(), "exit status {st:?}\n{}", log_of(&dir, 3));
    let log = log_of(&dir, 3);
    assert!(
        log.contains("left the cluster: every identifier handed over"),
        "{log}"
    );
    assert!(!sock.exists(), "the control socket is removed");
    wait_notify(&notify, "STOPPING=1");
    let a = rt.block_on(c.allocation(NodeId(1))).unwrap();
    assert!(
        a.owners.iter().all(|o| matches!(o, Some(1 | 2))),
        "the others own every identifier: {:?}",
        a.owners
    );
    // handed over before it went silent: no failover of its identifiers
    let l1 = log_of(&dir, 1);
    let failed_at = l1.find("peer 3 failed");
    let last_epoch_at = l1.rfind("applied epoch");
    assert!(
        failed_at.is_none_or(|f| last_epoch_at.is_some_and(|e| e < f)),
        "node 1 applied an epoch after it declared node 3 failed (a failover):\n{l1}"
    );

    // alone with nobody to hand over to (node 1 stopped first), SIGINT stops at once
    rt.block_on(async {
        let _ = c
            .call(NodeId(1), host::daemon::protocol::Request::Stop)
            .await;
    });
    assert!(c.wait_exit(NodeId(1), Duration::from_secs(5)).is_some());
    std::thread::sleep(Duration::from_millis(500));
    assert!(c.signal(NodeId(2), Signal::SIGINT));
    let st = c
        .wait_exit(NodeId(2), Duration::from_secs(12))
        .expect("node 2 stops");
    assert!(st.success(), "{st:?}");
    let log2 = log_of(&dir, 2);
    assert!(
        log2.contains("SIGINT") && log2.contains("stopped"),
        "{log2}"
    );
    rt.block_on(c.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}
