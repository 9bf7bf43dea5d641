//! Helpers shared by the tests that run `hwctl` as a process (`mod common;` in each).

// Each test binary includes this module and uses only some of its helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `hwctl` binary built for these tests with `args`.
pub fn hwctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hwctl"))
        .args(args)
        .output()
        .expect("run hwctl")
}

/// Runs `hwctl`, which must succeed without a panic; its standard output.
pub fn ok(args: &[&str]) -> String {
    let o = hwctl(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "hwctl {args:?} failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8(o.stdout).expect("utf-8 output")
}

/// Runs `hwctl`, which must succeed and print JSON; the parsed output.
pub fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).expect("valid JSON")
}

/// Runs `hwctl`, which must fail with exit status `code`, say something containing `needle`
/// on stderr, not panic and print nothing on stdout; its stderr.
pub fn fails(args: &[&str], code: i32, needle: &str) -> String {
    let o = hwctl(args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "hwctl {args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "hwctl {args:?}: expected {needle:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(o.stdout.is_empty(), "nothing on stdout on failure");
    stderr
}

/// A fresh directory under the system's temporary directory, named by `tag` and the test
/// process, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates (or empties) the directory `<tmp>/hwctl-<tag>-<pid>`.
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("hwctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// A file in the directory, as a string for command lines.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A current-thread tokio runtime for one test that runs `clusterd` processes, and the test's
/// working directory `<tmp>/clusterd-test-<tag>-<pid>`, emptied (it is kept after the test,
/// with the nodes' logs).
pub fn runtime_and_dir(tag: &str) -> (tokio::runtime::Runtime, PathBuf) {
    let rt = host::lab::runtime().expect("tokio runtime");
    (rt, host::lab::fresh_dir(&format!("clusterd-test-{tag}")))
}

/// The cluster key of the nodes these tests run (hex).
pub const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A UDP address on loopback that was free a moment ago.
pub fn free_udp() -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    s.local_addr().expect("addr").to_string()
}

/// Writes [`KEY`] to `dir/cluster.key`, mode 0600.
pub fn write_key(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let key = dir.join("cluster.key");
    std::fs::write(&key, format!("{KEY}\n")).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Writes `dir/<name>.conf`, the config of node 1 of a cluster whose other members (node 2
/// and witness 3) never run, with `extra` settings before its peers, and the key file
/// `cluster.key` beside it unless there is one already.
pub fn one_node_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    if !dir.join("cluster.key").exists() {
        write_key(dir);
    }
    let path = dir.join(format!("{name}.conf"));
    let text = format!(
        "node = 1\nlisten = \"{}\"\nkey_file = \"cluster.key\"\n{extra}\n\
         [[peer]]\nid = 2\naddr = \"{}\"\n\n[[peer]]\nid = 3\naddr = \"{}\"\nrole = \"witness\"\n",
        free_udp(),
        free_udp(),
        free_udp()
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// Runs `clusterd ctl` (the binary built for these tests) against node `node`'s control
/// socket in `dir` (the cluster launcher's `nodeN.sock`) with `args`.
pub fn ctl(dir: &Path, node: u16, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clusterd"))
        .arg("ctl")
        .arg("--socket")
        .arg(dir.join(format!("node{node}.sock")))
        .args(args)
        .output()
        .expect("run clusterd ctl")
}

/// Launches members 1..=`count` of `layout` (the `clusterd` built for these tests) in `dir`
/// and waits up to `settle` until they have settled.
pub async fn launch(
    dir: &Path,
    layout: &host::lab::cluster::Layout,
    count: u16,
    settle: std::time::Duration,
) -> host::lab::cluster::Cluster {
    let exe = Path::new(env!("CARGO_BIN_EXE_clusterd"));
    host::lab::cluster::Cluster::launch(dir, layout, exe, count, settle)
        .await
        .unwrap()
}

/// Polls `check` every 50 ms until it returns `Ok`; once `within` has passed, panics with
/// what its last `Err` said.
pub async fn wait_for(
    within: std::time::Duration,
    mut check: impl AsyncFnMut() -> Result<(), String>,
) {
    let start = tokio::time::Instant::now();
    loop {
        let failed = match check().await {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(start.elapsed() < within, "{failed}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The cluster key of the sync tests' endpoints.
pub fn sync_key() -> host::sync::ClusterKey {
    host::sync::ClusterKey::from_bytes([7; 32])
}

/// A sync endpoint: node `me` at incarnation `inc`, with the peers `peers`, under
/// [`sync_key`].
pub fn endpoint(me: u16, inc: u64, peers: &[u16]) -> host::sync::Endpoint {
    use host::core::ids::NodeId;
    host::sync::Endpoint::new(
        host::sync::EndpointConfig::new(NodeId(me), inc),
        sync_key(),
        peers.iter().map(|p| NodeId(*p)),
    )
}

/// `layout` with failure detection at 600 ms: debug-built nodes on a loaded CI machine stall
/// for longer than the default allows while they install, stream or dump large tables, and one
/// failover there makes the next.
pub fn patient(layout: host::lab::cluster::Layout) -> host::lab::cluster::Layout {
    host::lab::cluster::Layout {
        extra: format!("{}failure_ms = 600\n", layout.extra),
        ..layout
    }
}

/// Launches members 1..=`count` of `layout` in the working directory of test `tag` (see
/// [`runtime_and_dir`]), waits up to `settle` until they have settled, runs `body` against the
/// cluster and that directory, then stops the nodes and removes the directory.
pub fn with_cluster(
    tag: &str,
    layout: &host::lab::cluster::Layout,
    count: u16,
    settle: std::time::Duration,
    body: impl AsyncFnOnce(&mut host::lab::cluster::Cluster, &Path),
) {
    let (rt, dir) = runtime_and_dir(tag);
    rt.block_on(async {
        let mut c = launch(&dir, layout, count, settle).await;
        body(&mut c, &dir).await;
        c.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
