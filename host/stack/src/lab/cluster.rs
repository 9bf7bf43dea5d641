//! A cluster of `clusterd run` processes on loopback, managed from one process: config files,
//! spawning (the clusterd binary itself), SIGKILL, restart, control-socket queries. Used by the
//! demo and the multi-process tests.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::core::ids::NodeId;
use crate::daemon::control;
use crate::daemon::protocol::{AllocationReply, Request, Response};
use crate::sync::ClusterKey;

/// One node's place in the cluster.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Its id.
    pub id: NodeId,
    /// Sync address.
    pub listen: SocketAddr,
    /// Wire address (none for a witness).
    pub wire: Option<SocketAddr>,
    /// Control socket.
    pub control: PathBuf,
    /// Config file.
    pub config: PathBuf,
    /// Witness?
    pub witness: bool,
    /// Voter (false: joins later as a learner).
    pub voter: bool,
}

/// Options of a cluster layout.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Members present from the start (ids 1..=n).
    pub members: u16,
    /// Members that join later (learners).
    pub joiners: Vec<u16>,
    /// Card backend spec.
    pub card: String,
    /// Identifiers.
    pub identifiers: u32,
    /// Card capacity.
    pub card_capacity: usize,
    /// Extra config settings (TOML lines) for every node, written before the `[[peer]]`
    /// tables.
    pub extra: String,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            members: 3,
            joiners: Vec::new(),
            card: "model".into(),
            identifiers: 256,
            card_capacity: 4096,
            extra: String::new(),
        }
    }
}

/// The witness id used for 2-member layouts.
pub const WITNESS_ID: u16 = 99;

/// A running (or partly running) cluster.
pub struct Cluster {
    /// Working directory (configs, sockets, logs, state).
    pub dir: PathBuf,
    /// Node layout.
    pub nodes: BTreeMap<NodeId, NodeSpec>,
    children: BTreeMap<NodeId, Child>,
    exe: PathBuf,
    call_timeout: Duration,
    /// The distribution hash every node keys from the cluster key: the lab, as the operator
    /// who made that key, can tell which identifier a flow has.
    dist: crate::core::Distributor,
}

fn free_udp_port() -> std::io::Result<SocketAddr> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.local_addr()
}

/// Writes `key` as hex to a new file at `path`, created mode 0600 (never readable by others,
/// not even for a moment; an older file there is replaced).
///
/// # Errors
/// I/O errors.
pub fn write_key_file(path: &Path, key: &ClusterKey) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let text = zeroize::Zeroizing::new(key.to_hex());
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

impl Cluster {
    /// Writes config files for `layout` into `dir` (created). `exe` is the clusterd binary.
    ///
    /// # Errors
    /// I/O errors.
    pub fn prepare(dir: &Path, layout: &Layout, exe: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = ClusterKey::generate().map_err(|e| std::io::Error::other(e.to_string()))?;
        let key_path = dir.join("cluster.key");
        write_key_file(&key_path, &key)?;
        let mut nodes = BTreeMap::new();
        let mut ids: Vec<(u16, bool, bool)> =
            (1..=layout.members).map(|i| (i, false, true)).collect();
        for j in &layout.joiners {
            ids.push((*j, false, false));
        }
        if layout.members == 2 {
            ids.push((WITNESS_ID, true, true));
        }
        for (id, witness, voter) in &ids {
            let spec = NodeSpec {
                id: NodeId(*id),
                listen: free_udp_port()?,
                wire: if *witness {
                    None
                } else {
                    Some(free_udp_port()?)
                },
                control: dir.join(format!("node{id}.sock")),
                config: dir.join(format!("node{id}.conf")),
                witness: *witness,
                voter: *voter,
            };
            nodes.insert(NodeId(*id), spec);
        }
        // Every node signs its frames with an identity of its own.
        let mut public = BTreeMap::new();
        for id in nodes.keys() {
            let path = dir.join(format!("node{}.id", id.0));
            let _ = std::fs::remove_file(&path);
            let k = crate::sync::NodeIdentity::write_new(&path)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            public.insert(*id, k);
        }
        for spec in nodes.values() {
            let mut text = format!(
                "# generated by clusterd demo\nnode = {}\nlisten = \"{}\"\ncontrol = \"node{}.sock\"\n\
                 key_file = \"cluster.key\"\nidentity_file = \"node{}.id\"\n\
                 state_dir = \"node{}.state\"\ncard = \"{}\"\nidentifiers = {}\ncard_capacity = {}\n",
                spec.id.0, spec.listen, spec.id.0, spec.id.0, spec.id.0, layout.card, layout.identifiers, layout.card_capacity
            );
            if spec.witness {
                text.push_str("role = \"witness\"\n");
            }
            if !spec.voter {
                text.push_str("voter = false\n");
            }
            if let Some(w) = spec.wire {
                text.push_str(&format!("wire = \"{w}\"\n"));
            }
            // settings before the [[peer]] tables (after them they would be a peer's)
            text.push_str(&layout.extra);
            for p in nodes.values().filter(|p| p.id != spec.id) {
                text.push_str(&format!(
                    "\n[[peer]]\nid = {}\naddr = \"{}\"\nkey = \"{}\"\n",
                    p.id.0,
                    p.listen,
                    public[&p.id].to_hex()
                ));
                if p.witness {
                    text.push_str("role = \"witness\"\n");
                } else if !p.voter {
                    text.push_str("voter = false\n");
                }
            }
            std::fs::write(&spec.config, text)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            nodes,
            children: BTreeMap::new(),
            exe: exe.to_path_buf(),
            call_timeout: Duration::from_secs(3),
            dist: crate::core::Distributor::new(
                &crate::core::ClusterSecret::new(*key.derive16(crate::daemon::DISTRIBUTION_LABEL)),
                crate::core::ids::IdCount::new(layout.identifiers)
                    .map_err(|e| std::io::Error::other(format!("identifiers: {e}")))?,
            ),
        })
    }

    /// The distribution hash of the cluster's nodes (the identifier a flow's key has).
    pub fn distributor(&self) -> &crate::core::Distributor {
        &self.dist
    }

    /// Starts node `id` (`clusterd run --config ...`), logging to `nodeN.log`.
    ///
    /// # Errors
    /// Spawn errors, an unknown id, or a node that is already running.
    pub fn start(&mut self, id: NodeId) -> std::io::Result<()> {
        self.start_with_env(id, &[])
    }

    /// [`Cluster::start`] with extra environment variables (`NOTIFY_SOCKET` of a service
    /// manager, `RUST_LOG`).
    ///
    /// # Errors
    /// As [`Cluster::start`].
    pub fn start_with_env(
        &mut self,
        id: NodeId,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> std::io::Result<()> {
        if self.running(id) {
            return Err(std::io::Error::other(format!(
                "node {} is already running",
                id.0
            )));
        }
        let spec = self
            .nodes
            .get(&id)
            .ok_or_else(|| std::io::Error::other(format!("no node {}", id.0)))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{}.log", id.0)))?;
        let child = Command::new(&self.exe)
            .arg("run")
            .arg("--config")
            .arg(&spec.config)
            .env("CLUSTERD_EXIT_WITH_PARENT", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.children.insert(id, child);
        Ok(())
    }

    /// SIGKILLs node `id`. Returns whether it was running.
    pub fn kill(&mut self, id: NodeId) -> bool {
        match self.children.remove(&id) {
            Some(mut c) => {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
                let _ = c.wait();
                true
            }
            None => false,
        }
    }

    /// Sends `sig` to node `id`'s process (SIGSTOP/SIGCONT to freeze and thaw it). Returns
    /// whether it runs.
    pub fn signal(&mut self, id: NodeId, sig: Signal) -> bool {
        match self.children.get(&id) {
            Some(c) => kill(Pid::from_raw(c.id() as i32), sig).is_ok(),
            None => false,
        }
    }

    /// Waits up to `within` for node `id`'s process to exit by itself; its exit status, or
    /// `None` if it still runs (or was not started).
    pub fn wait_exit(&mut self, id: NodeId, within: Duration) -> Option<std::process::ExitStatus> {
        let t = std::time::Instant::now();
        loop {
            let c = self.children.get_mut(&id)?;
            if let Ok(Some(st)) = c.try_wait() {
                self.children.remove(&id);
                return Some(st);
            }
            if t.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether node `id` has a live process.
    pub fn running(&mut self, id: NodeId) -> bool {
        match self.children.get_mut(&id) {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Ids of nodes with live processes.
    pub fn running_ids(&mut self) -> Vec<NodeId> {
        let ids: Vec<NodeId> = self.children.keys().copied().collect();
        ids.into_iter().filter(|i| self.running(*i)).collect()
    }

    /// The control socket of node `id`.
    fn control_path(&self, id: NodeId) -> std::io::Result<&Path> {
        self.nodes
            .get(&id)
            .map(|spec| spec.control.as_path())
            .ok_or_else(|| std::io::Error::other(format!("no node {}", id.0)))
    }

    /// One control request to node `id`.
    ///
    /// # Errors
    /// Connection, timeout or protocol errors.
    pub async fn call(&self, id: NodeId, req: Request) -> std::io::Result<Response> {
        self.call_timeout(id, req, self.call_timeout).await
    }

    /// The timeout of [`Cluster::call`] (3 s at first): short while traffic runs, so that a
    /// frozen node does not hold up the schedule.
    pub fn set_call_timeout(&mut self, t: Duration) {
        self.call_timeout = t;
    }

    /// One control request to node `id` with a custom timeout (long-running commands).
    ///
    /// # Errors
    /// Connection, timeout or protocol errors.
    pub async fn call_timeout(
        &self,
        id: NodeId,
        req: Request,
        timeout: Duration,
    ) -> std::io::Result<Response> {
        control::call_once(self.control_path(id)?, &req, timeout).await
    }

    /// One request line, any JSON, to node `id` (tests of what a node makes of bad
    /// requests); the answer's JSON.
    ///
    /// # Errors
    /// Connection, timeout or protocol errors.
    pub async fn call_json(&self, id: NodeId, req: &Value) -> std::io::Result<Value> {
        control::call_json_once(self.control_path(id)?, req, Duration::from_secs(3)).await
    }

    /// `status` of node `id`.
    ///
    /// # Errors
    /// Connection, timeout or protocol errors, and a refusal.
    pub async fn status(&self, id: NodeId) -> std::io::Result<Value> {
        match self.call(id, Request::Status).await? {
            Response::Status(v) => Ok(v),
            other => Err(unexpected(id, &other)),
        }
    }

    /// `allocation` as node `id` sees it.
    ///
    /// # Errors
    /// Connection, timeout or protocol errors, and a refusal.
    pub async fn allocation(&self, id: NodeId) -> std::io::Result<AllocationReply> {
        match self.call(id, Request::Allocation).await? {
            Response::Allocation(a) => Ok(a),
            other => Err(unexpected(id, &other)),
        }
    }

    /// `status` of every running node (nodes that do not answer are left out).
    pub async fn statuses(&mut self) -> BTreeMap<NodeId, Value> {
        let mut out = BTreeMap::new();
        for id in self.running_ids() {
            if let Ok(v) = self.status(id).await {
                out.insert(id, v);
            }
        }
        out
    }

    /// The current leader according to the running nodes.
    pub async fn leader(&mut self) -> Option<NodeId> {
        self.statuses()
            .await
            .into_iter()
            .find(|(_, v)| v["is_leader"] == json!(true))
            .map(|(id, _)| id)
    }

    /// Sends an operator command (move, drain, rebalance) to the leader.
    ///
    /// # Errors
    /// When no leader answers.
    pub async fn to_leader(&mut self, req: Request) -> std::io::Result<Response> {
        for _ in 0..20 {
            if let Some(l) = self.leader().await {
                let r = self.call(l, req.clone()).await?;
                if r.is_ok() {
                    return Ok(r);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(std::io::Error::other("no leader accepted the command"))
    }

    /// [`Cluster::prepare`], start members `1..=count`, then [`Cluster::wait_settled`] within
    /// `settle`: the usual way to bring a test or benchmark cluster up.
    ///
    /// # Errors
    /// A message naming the step that failed.
    pub async fn launch(
        dir: &Path,
        layout: &Layout,
        exe: &Path,
        count: u16,
        settle: Duration,
    ) -> Result<Self, String> {
        let mut c =
            Self::prepare(dir, layout, exe).map_err(|e| format!("{}: {e}", dir.display()))?;
        for i in 1..=count {
            c.start(NodeId(i))
                .map_err(|e| format!("starting node {i}: {e}"))?;
        }
        c.wait_settled(settle).await?;
        Ok(c)
    }

    /// Waits until every running member (not witness) is ready, all running nodes apply the
    /// same epoch, and every identifier is owned by a running ready member.
    ///
    /// # Errors
    /// On timeout, with the last statuses.
    pub async fn wait_settled(&mut self, timeout: Duration) -> Result<u64, String> {
        let start = tokio::time::Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            // a node that exited will not settle: say why at once
            let dead: Vec<NodeId> = self
                .children
                .iter_mut()
                .filter_map(|(id, c)| (!matches!(c.try_wait(), Ok(None))).then_some(*id))
                .collect();
            if let Some(id) = dead.first() {
                let log = std::fs::read_to_string(self.dir.join(format!("node{}.log", id.0)))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                return Err(format!(
                    "node {} exited: {}",
                    id.0,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ));
            }
            let st = self.statuses().await;
            let running = self.running_ids();
            if st.len() == running.len() && !st.is_empty() {
                let epochs: Vec<u64> = st
                    .values()
                    .map(|v| v["epoch"].as_u64().unwrap_or(0))
                    .collect();
                let members: Vec<&Value> = st
                    .values()
                    .filter(|v| v["role"] == json!("member"))
                    .collect();
                let all_ready = members.iter().all(|v| v["ready"] == json!(true));
                let same = epochs.windows(2).all(|w| w[0] == w[1]) && epochs[0] > 0;
                if all_ready && same {
                    if let Some(l) = st.keys().next() {
                        if let Ok(a) = self.allocation(*l).await {
                            let ok = a
                                .owners
                                .iter()
                                .all(|o| o.is_some_and(|n| running.contains(&NodeId(n))));
                            if ok {
                                return Ok(epochs[0]);
                            }
                        }
                    }
                }
                last = format!("epochs {epochs:?}, ready {all_ready}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("cluster did not settle within {timeout:?}: {last}"))
    }

    /// Stops every node (control `stop`, then SIGKILL).
    pub async fn shutdown(&mut self) {
        for id in self.running_ids() {
            let _ = self.call(id, Request::Stop).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ids: Vec<NodeId> = self.children.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<NodeId> = self.children.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

/// An answer that is not the one asked for (a refusal, or another command's).
fn unexpected(id: NodeId, r: &Response) -> std::io::Error {
    match r.error_message() {
        Some(e) => std::io::Error::other(format!("node {}: {e}", id.0)),
        None => std::io::Error::other(format!("node {}: unexpected answer {r:?}", id.0)),
    }
}
