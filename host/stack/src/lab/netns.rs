//! `clusterd lab`: a cluster as an active-active bump-in-the-wire firewall between real network
//! namespaces (root only). `up` makes the namespaces `P-client`, `P-server`, `P-n1`..`P-nN` and
//! `P-sw` (the switch), three Linux bridges in the switch that flood every frame to every port
//! (learning off): the outside segment (client and every node's `o0`), the inside segment
//! (server and every node's `i0`) and the sync segment (every node's `y0`), writes the configs,
//! the cluster key and one identity per node into the lab's directory, starts one
//! `clusterd run` per node inside its namespace (its card's ports on `o0` and `i0`) and waits
//! until the cluster is ready. `down` removes every namespace and process of a prefix, also
//! after the lab itself crashed (it finds them by name). Addresses come from 198.18.0.0/15 and
//! 2001:db8::/32 only.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::daemon::protocol::{Request, Response};
use crate::sync::{ClusterKey, NodeIdentity};

/// The client's IPv4 address (outside segment).
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
/// The server's IPv4 address (inside segment; one subnet across the transparent cluster).
pub const SERVER4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 1);
/// The server's IPv6 address.
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 2);

/// The largest cluster `up` builds.
pub const MAX_NODES: u16 = 16;

/// What `up` makes.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Nodes (members) in the cluster.
    pub nodes: u16,
    /// Namespace prefix.
    pub prefix: String,
    /// Card backend of every node.
    pub card: String,
    /// Distribution identifiers.
    pub identifiers: u32,
    /// The lab's directory (configs, keys, sockets, logs).
    pub dir: PathBuf,
    /// The clusterd binary.
    pub exe: PathBuf,
}

/// The lab's directory for `prefix` when none is given.
pub fn default_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("clusterd-lab-{prefix}"))
}

/// A lab as `up` reports it (`--json`: this object). Field names are a stable interface.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct LabInfo {
    /// Namespace prefix.
    pub prefix: String,
    /// The lab's directory.
    pub dir: String,
    /// The client's namespace.
    pub client_ns: String,
    /// The server's namespace.
    pub server_ns: String,
    /// The client's addresses.
    pub client: [String; 2],
    /// The server's addresses.
    pub server: [String; 2],
    /// The nodes.
    pub nodes: Vec<LabNode>,
}

/// One node of a lab.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct LabNode {
    /// Node id.
    pub id: u16,
    /// Its namespace.
    pub ns: String,
    /// Its control socket.
    pub socket: String,
    /// Its log file.
    pub log: String,
}

/// Why a lab command failed (the message says what to do).
pub type LabError = String;

pub(crate) fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        format!("cannot run `ip` (install iproute2: apt-get install -y iproute2): {e}")
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Checks a prefix: short (interface and namespace names derive from it), plain characters.
///
/// # Errors
/// What is wrong with it.
pub fn check_prefix(p: &str) -> Result<(), LabError> {
    if p.is_empty()
        || p.len() > 12
        || !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "--prefix {p:?}: 1 to 12 letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// The lab of `prefix` in `dir`: its names and paths (nothing is created).
pub fn info(prefix: &str, dir: &Path, nodes: u16) -> LabInfo {
    info_with(prefix, dir, nodes, |i| {
        (
            dir.join(format!("n{i}.sock")),
            dir.join(format!("n{i}.log")),
        )
    })
}

/// The lab of `prefix` in `dir` with `nodes` nodes, node i's control socket and log being
/// `files(i)`, with this lab's client and server addresses (nothing is created).
pub(crate) fn info_with(
    prefix: &str,
    dir: &Path,
    nodes: u16,
    files: impl Fn(u16) -> (PathBuf, PathBuf),
) -> LabInfo {
    LabInfo {
        prefix: prefix.to_owned(),
        dir: dir.display().to_string(),
        client_ns: format!("{prefix}-client"),
        server_ns: format!("{prefix}-server"),
        client: [CLIENT4.to_string(), CLIENT6.to_string()],
        server: [SERVER4.to_string(), SERVER6.to_string()],
        nodes: (1..=nodes)
            .map(|i| {
                let (socket, log) = files(i);
                LabNode {
                    id: i,
                    ns: format!("{prefix}-n{i}"),
                    socket: socket.display().to_string(),
                    log: log.display().to_string(),
                }
            })
            .collect(),
    }
}

/// Namespaces of `prefix` that exist now.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let want = format!("{prefix}-");
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.strip_prefix(&want).is_some_and(|role| {
                matches!(role, "client" | "server" | "sw")
                    || role
                        .strip_prefix('n')
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .map(str::to_owned)
        .collect()
}

pub(crate) fn attach(
    prefix: &str,
    role: &str,
    dev: &str,
    br: &str,
    sw_dev: &str,
) -> Result<(), LabError> {
    let (ns, sw) = (format!("{prefix}-{role}"), format!("{prefix}-sw"));
    ip(&[
        "-n", &ns, "link", "add", dev, "type", "veth", "peer", "name", sw_dev, "netns", &sw,
    ])?;
    ip(&["-n", &sw, "link", "set", sw_dev, "master", br])?;
    // the switch's ports stay silent (no link-local address, so no router solicitation or
    // neighbour discovery of their own): every frame on a segment comes from an end host, and
    // what the client and server sent equals what the other received
    ip(&["-n", &sw, "link", "set", sw_dev, "addrgenmode", "none"])?;
    // flood every frame to every port: no learning, so every node sees every frame
    ip(&[
        "-n",
        &sw,
        "link",
        "set",
        sw_dev,
        "type",
        "bridge_slave",
        "learning",
        "off",
        "flood",
        "on",
    ])?;
    ip(&["-n", &sw, "link", "set", sw_dev, "up"])
}

/// Gives `dev` in namespace `ns` an IPv4 /24 and an IPv6 /64 address (no duplicate address
/// detection: the lab's addresses are its own).
pub(crate) fn add_addrs(
    ns: &str,
    dev: &str,
    v4: impl std::fmt::Display,
    v6: impl std::fmt::Display,
) -> Result<(), LabError> {
    ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        dev,
        "nodad",
    ])
}

/// Gives node `i` (namespace `ns`) its address on the sync segment: 198.18.100.i/24 on `y0`.
pub(crate) fn add_sync_addr(ns: &str, i: u16) -> Result<(), LabError> {
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("198.18.100.{i}/24"),
        "dev",
        "y0",
    ])
}

/// An end host of a lab (client or server): `dev` in `P-role` on bridge `br` (switch port
/// `port`), one wire frame per packet (the cards' bridges take no offload super-frames, and
/// both labs see the same frames), its addresses, up.
pub(crate) fn end_host(
    prefix: &str,
    role: &str,
    dev: &str,
    br: &str,
    port: &str,
    v4: impl std::fmt::Display,
    v6: impl std::fmt::Display,
) -> Result<(), LabError> {
    attach(prefix, role, dev, br, port)?;
    end_host_interface(&format!("{prefix}-{role}"), dev, v4, v6)
}

/// Readies an end host's interface `dev` in namespace `ns`: one wire frame per packet (no
/// segmentation offload super-frames, which bridges do not take), addresses `v4`/24 and
/// `v6`/64, up, and the namespace's loopback up.
///
/// # Errors
/// What `ip` said.
pub fn end_host_interface(
    ns: &str,
    dev: &str,
    v4: impl std::fmt::Display,
    v6: impl std::fmt::Display,
) -> Result<(), LabError> {
    ip(&[
        "-n",
        ns,
        "link",
        "set",
        dev,
        "gso_max_segs",
        "1",
        "gso_max_size",
        "1500",
    ])?;
    add_addrs(ns, dev, v4, v6)?;
    ip(&["-n", ns, "link", "set", dev, "up"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])
}

/// The lab's namespaces (client, server, switch, `n1`..`nN`) and, in the switch, the three
/// segment bridges (`swout`, `swin`, `swsync`) set to flood (no learning) and to send nothing
/// of their own. Shared by our lab and the kernel
/// baseline's.
pub fn namespaces_and_switch(prefix: &str, nodes: u16) -> Result<(), LabError> {
    let mut roles = vec!["client".to_owned(), "server".to_owned(), "sw".to_owned()];
    roles.extend((1..=nodes).map(|i| format!("n{i}")));
    for r in &roles {
        ip(&["netns", "add", &format!("{prefix}-{r}")])?;
    }
    let sw = format!("{prefix}-sw");
    for br in ["swout", "swin", "swsync"] {
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            "name",
            br,
            "type",
            "bridge",
            "ageing_time",
            "0",
        ])?;
        ip(&["-n", &sw, "link", "set", br, "addrgenmode", "none"])?;
        ip(&["-n", &sw, "link", "set", br, "up"])?;
    }
    Ok(())
}

fn topology(prefix: &str, nodes: u16) -> Result<(), LabError> {
    namespaces_and_switch(prefix, nodes)?;
    for (role, dev, br, port, v4, v6) in [
        ("client", "c0", "swout", "co", CLIENT4, CLIENT6),
        ("server", "s0", "swin", "si", SERVER4, SERVER6),
    ] {
        end_host(prefix, role, dev, br, port, v4, v6)?;
    }
    for i in 1..=nodes {
        let role = format!("n{i}");
        let ns = format!("{prefix}-{role}");
        attach(prefix, &role, "o0", "swout", &format!("o{i}"))?;
        attach(prefix, &role, "i0", "swin", &format!("i{i}"))?;
        attach(prefix, &role, "y0", "swsync", &format!("y{i}"))?;
        for dev in ["o0", "i0"] {
            // the node's own kernel stays off the segments its card bridges
            ip(&["-n", &ns, "link", "set", dev, "addrgenmode", "none"])?;
            ip(&["-n", &ns, "link", "set", dev, "up"])?;
        }
        add_sync_addr(&ns, i)?;
        ip(&["-n", &ns, "link", "set", "y0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

fn configs(o: &LabOptions) -> Result<ClusterKey, LabError> {
    let io = |e: std::io::Error| format!("lab directory {}: {e}", o.dir.display());
    let key = ClusterKey::generate().map_err(|e| e.to_string())?;
    crate::lab::cluster::write_key_file(&o.dir.join("cluster.key"), &key).map_err(io)?;
    let mut public = Vec::new();
    for i in 1..=o.nodes {
        let p = o.dir.join(format!("n{i}.id"));
        let _ = std::fs::remove_file(&p);
        public.push(NodeIdentity::write_new(&p).map_err(|e| e.to_string())?);
    }
    for i in 1..=o.nodes {
        let mut text = format!(
            "# generated by clusterd lab\nnode = {i}\nlisten = \"198.18.100.{i}:7100\"\n\
             control = \"n{i}.sock\"\nkey_file = \"cluster.key\"\nidentity_file = \"n{i}.id\"\n\
             state_dir = \"n{i}.state\"\ncard = \"{}\"\nidentifiers = {}\noutside = \"o0\"\n\
             inside = \"i0\"\n",
            o.card, o.identifiers
        );
        for j in 1..=o.nodes {
            if j != i {
                text += &format!(
                    "\n[[peer]]\nid = {j}\naddr = \"198.18.100.{j}:7100\"\nkey = \"{}\"\n",
                    public[usize::from(j - 1)].to_hex()
                );
            }
        }
        std::fs::write(o.dir.join(format!("n{i}.conf")), text).map_err(io)?;
    }
    Ok(key)
}

/// Starts node `i` of the lab in `dir` (a process of its own session: it outlives the lab
/// command; `down` or `kill` ends it). Returns its pid.
///
/// # Errors
/// When it cannot be started.
pub fn start(prefix: &str, dir: &Path, exe: &Path, i: u16) -> Result<u32, LabError> {
    let conf = dir.join(format!("n{i}.conf"));
    if !conf.exists() {
        return Err(format!(
            "node {i}: no config {} (is the lab of prefix {prefix} up?)",
            conf.display()
        ));
    }
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("n{i}.log")))
        .map_err(|e| format!("node {i}: log file: {e}"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &format!("{prefix}-n{i}")])
        .arg(exe)
        .args(["run", "--config"])
        .arg(&conf)
        .env_remove("CLUSTERD_EXIT_WITH_PARENT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("node {i}: cannot start {}: {e}", exe.display()))?;
    let pid = child.id();
    std::fs::write(dir.join(format!("n{i}.pid")), format!("{pid}\n"))
        .map_err(|e| format!("node {i}: pid file: {e}"))?;
    // the child is reaped by init once this command exits; `down` finds it by its pid file
    std::mem::forget(child);
    Ok(pid)
}

/// The pid of node `i` if it runs.
pub fn pid(dir: &Path, i: u16) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join(format!("n{i}.pid"))).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    // alive, and still a clusterd of this lab (pids are reused)
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let conf = dir.join(format!("n{i}.conf"));
    let conf = conf.to_string_lossy();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit(')')
        .next()
        .is_some_and(|r| r.trim_start().starts_with('Z'));
    (cmdline.contains(conf.as_ref()) && !zombie).then_some(pid)
}

/// Sends `sig` to node `i`; whether it ran.
pub fn signal(dir: &Path, i: u16, sig: nix::sys::signal::Signal) -> bool {
    match pid(dir, i) {
        Some(p) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig).is_ok(),
        None => false,
    }
}

/// A control request to the node at `sock` (2 s timeout).
pub fn ask(sock: &Path, req: &Request) -> Option<Response> {
    let rt = super::runtime().ok()?;
    rt.block_on(crate::daemon::control::call_once(
        sock,
        req,
        Duration::from_secs(2),
    ))
    .ok()
}

/// Node `sock`'s status.
pub fn status(sock: &Path) -> Option<Value> {
    match ask(sock, &Request::Status)? {
        Response::Status(v) => Some(v),
        _ => None,
    }
}

/// Node `sock`'s owner per identifier.
pub fn owners(sock: &Path) -> Option<Vec<Option<u16>>> {
    match ask(sock, &Request::Allocation)? {
        Response::Allocation(a) => Some(a.owners),
        _ => None,
    }
}

/// Waits until the nodes `ids` of `lab` are ready, own identifiers and agree on every owner.
///
/// # Errors
/// A timeout, with the nodes' last log lines.
pub fn wait_ready(lab: &LabInfo, ids: &[u16], within: Duration) -> Result<(), LabError> {
    let t = Instant::now();
    let sock = |i: u16| PathBuf::from(&lab.nodes[usize::from(i - 1)].socket);
    loop {
        let ready = ids.iter().all(|&i| {
            status(&sock(i)).is_some_and(|s| s["ready"] == true && s["owned"].as_u64() > Some(0))
        });
        let agree = ids
            .iter()
            .map(|&i| owners(&sock(i)))
            .collect::<Option<Vec<_>>>()
            .is_some_and(|v| {
                v.windows(2).all(|w| w[0] == w[1])
                    && v[0].iter().all(|o| o.is_some_and(|n| ids.contains(&n)))
            });
        if ready && agree {
            return Ok(());
        }
        if t.elapsed() > within {
            let tails: Vec<String> = ids
                .iter()
                .map(|&i| {
                    let log = std::fs::read_to_string(&lab.nodes[usize::from(i - 1)].log)
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    format!(
                        "node {i}: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )
                })
                .collect();
            return Err(format!(
                "the cluster was not ready within {within:?}; {}",
                tails.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `clusterd lab up`: builds the lab, starts the nodes, waits until the cluster is ready.
///
/// # Errors
/// What failed; a lab that failed half-way is torn down again.
pub fn up(o: &LabOptions) -> Result<LabInfo, LabError> {
    check_prefix(&o.prefix)?;
    if !(1..=MAX_NODES).contains(&o.nodes) {
        return Err(format!("--nodes {}: 1 to {MAX_NODES}", o.nodes));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "clusterd lab needs root (network namespaces, veth pairs, bridges, raw sockets)".into(),
        );
    }
    fresh_lab(&o.prefix, &o.dir)?;
    let lab = info(&o.prefix, &o.dir, o.nodes);
    let built = (|| {
        topology(&o.prefix, o.nodes)?;
        configs(o)?;
        for i in 1..=o.nodes {
            start(&o.prefix, &o.dir, &o.exe, i)?;
        }
        let ids: Vec<u16> = (1..=o.nodes).collect();
        wait_ready(&lab, &ids, Duration::from_secs(60))
    })();
    if let Err(e) = built {
        let _ = down(&o.prefix, &o.dir);
        return Err(e);
    }
    write_info(&lab, &o.dir)?;
    Ok(lab)
}

/// Makes sure no lab of `prefix` exists yet and creates its directory `dir` afresh (mode 0700;
/// whatever an older lab left there is removed).
///
/// # Errors
/// A lab of the prefix exists, or the directory cannot be made.
pub(crate) fn fresh_lab(prefix: &str, dir: &Path) -> Result<(), LabError> {
    let existing = namespaces(prefix);
    if !existing.is_empty() {
        return Err(format!(
            "a lab with prefix {prefix} exists ({}): `clusterd lab down --prefix {prefix}` first, \
             or pick another --prefix",
            existing.join(", "),
        ));
    }
    let _ = std::fs::remove_dir_all(dir);
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("lab directory {}: {e}", dir.display()))
}

/// Writes `lab.json` into the lab's directory `dir`.
///
/// # Errors
/// When the file cannot be written.
pub(crate) fn write_info(lab: &LabInfo, dir: &Path) -> Result<(), LabError> {
    std::fs::write(
        dir.join("lab.json"),
        serde_json::to_string_pretty(lab).unwrap_or_default(),
    )
    .map_err(|e| format!("lab directory {}: {e}", dir.display()))
}

/// `clusterd lab down`: kills every node of the lab, removes its namespaces and directory.
/// Works on whatever is left (a lab whose `up` crashed, nodes already dead). Returns what it
/// removed.
///
/// # Errors
/// A bad prefix.
pub fn down(prefix: &str, dir: &Path) -> Result<Vec<String>, LabError> {
    check_prefix(prefix)?;
    let mut removed = Vec::new();
    for i in 1..=MAX_NODES {
        if signal(dir, i, nix::sys::signal::Signal::SIGKILL) {
            removed.push(format!("node {i}"));
        }
    }
    // a node whose pid file is gone: any process still inside the lab's namespaces
    for ns in namespaces(prefix) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(p) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if ip(&["netns", "del", &ns]).is_ok() {
            removed.push(ns);
        }
    }
    if dir.join("cluster.key").exists() || dir.join("lab.json").exists() {
        let _ = std::fs::remove_dir_all(dir);
        removed.push(dir.display().to_string());
    }
    Ok(removed)
}

/// Cuts node `i` off the sync segment (`heal`: back on).
///
/// # Errors
/// When the node's namespace is not there.
pub fn partition(prefix: &str, i: u16, heal: bool) -> Result<(), LabError> {
    ip(&[
        "-n",
        &format!("{prefix}-n{i}"),
        "link",
        "set",
        "y0",
        if heal { "up" } else { "down" },
    ])
}

/// One node's row of `clusterd lab status`.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// Node id.
    pub id: u16,
    /// Its process, if it runs.
    pub pid: Option<i32>,
    /// It answers on its socket and is ready.
    pub ready: bool,
    /// Identifiers it owns.
    pub owned: u64,
    /// Frames its card forwarded itself.
    pub forwarded_by_card: u64,
    /// Frames its card punted to its slow path.
    pub punted: u64,
}

/// `clusterd lab status`.
pub fn lab_status(dir: &Path) -> Vec<NodeStatus> {
    let mut out = Vec::new();
    for i in 1..=MAX_NODES {
        if !dir.join(format!("n{i}.conf")).exists() {
            continue;
        }
        let pid = pid(dir, i);
        let st = pid
            .and_then(|_| status(&dir.join(format!("n{i}.sock"))))
            .unwrap_or(Value::Null);
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        out.push(NodeStatus {
            id: i,
            pid,
            ready: st["ready"] == true,
            owned: n(&st["owned"]),
            forwarded_by_card: n(&st["card_path"]["forwarded_by_card"]),
            punted: n(&st["card_path"]["punted"]),
        });
    }
    out
}
