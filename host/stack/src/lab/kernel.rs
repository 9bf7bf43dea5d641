//! The baseline our cluster is measured against: the Linux kernel itself as an active-active
//! firewall cluster, routed the way CLUSTERIP clusters work, with nftables for the rules and
//! the bucket split, the kernel's connection tracking for the state and `conntrackd` (FT-FW
//! mode) to replicate it (root only; `clusterd lab up --baseline kernel`).
//!
//! The same namespaces as [`netns`]: `P-client`, `P-server`, `P-n1`..`P-nN` and the switch
//! `P-sw` whose three bridges flood every frame to every port. But the nodes route instead of
//! bridging: the client (198.18.8.1/24, 2001:db8:8::1/64) and the server (198.18.9.1/24,
//! 2001:db8:9::1/64) sit in two subnets, and every node holds both gateway addresses
//! (198.18.8.254 and 2001:db8:8::fe on `o0`, 198.18.9.254 and 2001:db8:9::fe on `i0`) with one
//! MAC shared by all nodes ([`OUTSIDE_MAC`], [`INSIDE_MAC`]). Every node receives every frame;
//! an nftables chain at the raw priority (before conntrack) hashes each packet with `symhash`
//! (both directions of a flow alike) into one of B buckets and drops it unless the bucket is in
//! the node's set `@owned`, so exactly one node forwards a flow and the others never track it.
//! `conntrackd` replicates the state over the sync segment (`y0`, 198.18.100.N): FT-FW keeps
//! one sequence space per channel, so a channel has exactly two ends (three nodes on one
//! multicast channel lose updates as "packets before"), and every node runs one conntrackd
//! per peer, unicast UDP to that peer. When a node fails, each survivor commits the external
//! cache of its instance for that node into its kernel and takes some of its buckets ([`kill`],
//! [`stop`], [`rebalance`]).
//!
//! The lab's directory holds `lab.json` ([`LabInfo`]), `kernel.json` (the marker, the bucket
//! assignment and which nodes live), and per node its ruleset (`nN.nft`) and per conntrackd
//! instance its config, log, lock file, UNIX socket and pid file (`nN-pJ.conntrackd.*`, the
//! instance of node N for peer J; a one-node lab's lone instance is `n1.conntrackd.*`).
//! `docs/clusterd.md`, "The kernel baseline", explains the ruleset, the conntrackd config and
//! the failover steps. [`KernelLab`] is the lab as the backend of `clusterd lab run`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lab::netns::{self, LabError, LabInfo};

/// The client's IPv4 address.
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 8, 1);
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 8, 0, 0, 0, 0, 1);
/// The server's IPv4 address.
pub const SERVER4: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 1);
/// The server's IPv6 address.
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 1);
/// The outside gateway's IPv4 address (every node's `o0`).
pub const OUTSIDE_GW4: Ipv4Addr = Ipv4Addr::new(198, 18, 8, 254);
/// The outside gateway's IPv6 address.
pub const OUTSIDE_GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 8, 0, 0, 0, 0, 0xfe);
/// The inside gateway's IPv4 address (every node's `i0`).
pub const INSIDE_GW4: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 254);
/// The inside gateway's IPv6 address.
pub const INSIDE_GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 0xfe);
/// The MAC every node's `o0` shares.
pub const OUTSIDE_MAC: &str = "02:00:5e:00:08:fe";
/// The MAC every node's `i0` shares.
pub const INSIDE_MAC: &str = "02:00:5e:00:09:fe";
/// The multicast group a one-node lab's lone conntrackd sends to (organization-local scope,
/// RFC 2365; it never leaves the lab's sync bridge, nobody listens).
pub const SYNC_GROUP: Ipv4Addr = Ipv4Addr::new(239, 18, 100, 1);
/// The largest number of buckets `up` accepts.
pub const MAX_BUCKETS: u32 = 65_536;

/// What the fix is when a tool is missing.
const INSTALL: &str = "apt-get install -y nftables conntrack conntrackd";

/// What [`up`] makes.
#[derive(Clone, Debug)]
pub struct KernelOptions {
    /// Nodes in the cluster.
    pub nodes: u16,
    /// Namespace prefix (the same names as `clusterd lab`, so `lab down` removes it).
    pub prefix: String,
    /// Hash buckets the nodes share out (`symhash mod buckets`; 256 by default).
    pub buckets: u32,
    /// The lab's directory (rulesets, conntrackd configs, logs, sockets).
    pub dir: PathBuf,
}

/// What a takeover took ([`kill`], [`stop`]).
#[derive(Clone, Debug)]
pub struct Takeover {
    /// When the node stopped forwarding and syncing ([`kill`]), or when it was asked to leave
    /// ([`stop`]).
    pub died_at: Instant,
    /// When the last survivor had added the node's buckets to its `@owned` set.
    pub buckets_moved_at: Instant,
    /// When the last survivor had committed its external cache into its kernel.
    pub committed_at: Instant,
    /// Entries the survivors committed (the sum of their external caches' sizes).
    pub entries_committed: u64,
}

/// The lab's state as `kernel.json` keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    /// Always "kernel": the marker that this lab is the baseline.
    kind: String,
    nodes: u16,
    buckets: u32,
    /// The owner of every bucket (0: none).
    owner: Vec<u16>,
    /// Whether node i+1 lives.
    live: Vec<bool>,
    /// CPU time (ms) of conntrackd processes that were killed or stopped.
    cpu_gone_ms: u64,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("kernel.json")
}

fn load(lab: &LabInfo) -> Result<State, LabError> {
    let p = state_path(Path::new(&lab.dir));
    let text = std::fs::read_to_string(&p).map_err(|e| {
        format!(
            "{}: {e} (is the kernel baseline lab of prefix {} up? `clusterd lab up --baseline \
             kernel --prefix {}`)",
            p.display(),
            lab.prefix,
            lab.prefix
        )
    })?;
    let s: State = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a kernel lab's state ({e})", p.display()))?;
    if s.kind != "kernel" || s.owner.len() != s.buckets as usize || s.live.len() != lab.nodes.len()
    {
        return Err(format!(
            "{}: not the state of this kernel lab (remove the lab with `clusterd lab down \
             --prefix {}` and build it again)",
            p.display(),
            lab.prefix
        ));
    }
    Ok(s)
}

fn save(dir: &Path, s: &State) -> Result<(), LabError> {
    let p = state_path(dir);
    let tmp = dir.join("kernel.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(s).unwrap_or_default())
        .and_then(|()| std::fs::rename(&tmp, &p))
        .map_err(|e| {
            format!(
                "lab directory {}: cannot write {}: {e}",
                dir.display(),
                p.display()
            )
        })
}

/// A node's file `nN.<what>` in the lab's directory.
fn file(dir: &Path, i: u16, what: &str) -> PathBuf {
    dir.join(format!("n{i}.{what}"))
}

fn node_ns(lab: &LabInfo, i: u16) -> Result<String, LabError> {
    lab.nodes
        .get(usize::from(i).wrapping_sub(1))
        .map(|n| n.ns.clone())
        .ok_or_else(|| {
            format!(
                "node {i}: the lab of prefix {} has nodes 1 to {}",
                lab.prefix,
                lab.nodes.len()
            )
        })
}

/// Runs `cmd args` inside namespace `ns`; its standard output.
fn nsx(ns: &str, cmd: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, cmd])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run `ip netns exec` (install iproute2: apt-get install -y iproute2): {e}"
            )
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd} {}` in {ns} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            if out.status.code() == Some(127) || out.status.code() == Some(255) {
                format!(" (is {cmd} installed? {INSTALL})")
            } else {
                String::new()
            }
        ))
    }
}

/// The file `<ext>` of node `i`'s conntrackd instance for peer `j` (`nI-pJ.conntrackd.EXT`;
/// `j` 0: the one instance of a one-node lab, `nI.conntrackd.EXT`).
fn ctd_file(dir: &Path, i: u16, j: u16, ext: &str) -> PathBuf {
    if j == 0 {
        file(dir, i, &format!("conntrackd.{ext}"))
    } else {
        dir.join(format!("n{i}-p{j}.conntrackd.{ext}"))
    }
}

/// The peers node `i` of `nodes` runs a conntrackd instance for: every other node (FT-FW
/// tracks one sequence per channel, so a channel has two ends); a lone node runs one
/// instance (peer 0) that multicasts to nobody.
fn peers(nodes: u16, i: u16) -> Vec<u16> {
    if nodes <= 1 {
        vec![0]
    } else {
        (1..=nodes).filter(|&j| j != i).collect()
    }
}

/// Node `i`'s conntrackd client command for its instance for peer `j`
/// (`conntrackd -C CONF FLAGS`).
fn ctd(lab: &LabInfo, i: u16, j: u16, flags: &[&str]) -> Result<String, LabError> {
    let conf = ctd_file(Path::new(&lab.dir), i, j, "conf");
    let conf = conf.to_string_lossy();
    let mut args = vec!["-C", conf.as_ref()];
    args.extend_from_slice(flags);
    nsx(&node_ns(lab, i)?, "conntrackd", &args)
}

/// The tools the lab needs, each one run once.
fn check_tools() -> Result<(), LabError> {
    for (tool, arg, pkg) in [
        ("ip", "-V", "iproute2"),
        ("nft", "--version", "nftables"),
        ("conntrack", "--version", "conntrack"),
        ("conntrackd", "-v", "conntrackd"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "the kernel baseline lab needs `{tool}` (package {pkg}), which does not run: \
                 {INSTALL} iproute2"
            ));
        }
    }
    Ok(())
}

/// Whether this process can build a kernel lab (root, and every tool there); why not.
///
/// # Errors
/// What is missing and how to get it.
pub fn preflight() -> Result<(), LabError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "the kernel baseline lab needs root (network namespaces, veth pairs, bridges, \
             nftables, conntrackd): run it as root"
                .into(),
        );
    }
    check_tools()
}

/// Runs `f` on a thread inside namespace `ns`.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, LabError> + Send + 'static,
) -> JoinHandle<Result<T, LabError>> {
    let ns = ns.to_owned();
    thread::spawn(move || {
        let path = format!("/run/netns/{ns}");
        let file = File::open(&path).map_err(|e| format!("namespace {ns} ({path}): {e}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot enter namespace {ns}: {e} (run as root)"))?;
        f()
    })
}

fn join<T>(h: JoinHandle<Result<T, LabError>>) -> Result<T, LabError> {
    h.join()
        .unwrap_or_else(|_| Err("a lab thread panicked".to_owned()))
}

/// Writes sysctls (`net/ipv4/ip_forward` style paths under /proc/sys) inside `ns`.
fn sysctls(ns: &str, kv: Vec<(String, &'static str)>) -> Result<(), LabError> {
    join(in_ns(ns, move || {
        for (k, v) in kv {
            let p = format!("/proc/sys/{k}");
            std::fs::write(&p, v).map_err(|e| format!("sysctl {p} = {v}: {e}"))?;
        }
        Ok(())
    }))
    .map_err(|e| format!("{ns}: {e}"))
}

fn topology(o: &KernelOptions) -> Result<(), LabError> {
    let p = &o.prefix;
    let ip = netns::ip;
    netns::namespaces_and_switch(p, o.nodes)?;
    for (role, dev, br, port, v4, v6, gw4, gw6) in [
        (
            "client",
            "c0",
            "swout",
            "co",
            CLIENT4,
            CLIENT6,
            OUTSIDE_GW4,
            OUTSIDE_GW6,
        ),
        (
            "server", "s0", "swin", "si", SERVER4, SERVER6, INSIDE_GW4, INSIDE_GW6,
        ),
    ] {
        netns::end_host(p, role, dev, br, port, v4, v6)?;
        let ns = format!("{p}-{role}");
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &gw4.to_string(),
        ])?;
        ip(&[
            "-n",
            &ns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &gw6.to_string(),
        ])?;
    }
    for i in 1..=o.nodes {
        let role = format!("n{i}");
        let ns = format!("{p}-{role}");
        netns::attach(p, &role, "o0", "swout", &format!("o{i}"))?;
        netns::attach(p, &role, "i0", "swin", &format!("i{i}"))?;
        netns::attach(p, &role, "y0", "swsync", &format!("y{i}"))?;
        // a router: forwarding on, no redirects (the peers are on the other segment), loose
        // reverse-path checks; no duplicate address detection on the shared gateway addresses
        let mut kv = vec![
            ("net/ipv4/ip_forward".to_owned(), "1"),
            ("net/ipv6/conf/all/forwarding".to_owned(), "1"),
            ("net/ipv4/conf/all/send_redirects".to_owned(), "0"),
            ("net/ipv4/conf/default/send_redirects".to_owned(), "0"),
            ("net/ipv4/conf/all/rp_filter".to_owned(), "0"),
            ("net/ipv4/conf/default/rp_filter".to_owned(), "0"),
        ];
        for dev in ["o0", "i0"] {
            kv.push((format!("net/ipv4/conf/{dev}/send_redirects"), "0"));
            kv.push((format!("net/ipv4/conf/{dev}/rp_filter"), "0"));
            kv.push((format!("net/ipv6/conf/{dev}/accept_dad"), "0"));
            // a link taken down by `kill` or `stop` keeps its IPv6 addresses (and so the
            // connected routes) for `start` (by default Linux drops them on link down)
            kv.push((format!("net/ipv6/conf/{dev}/keep_addr_on_down"), "1"));
        }
        sysctls(&ns, kv)?;
        for (dev, mac, v4, v6) in [
            ("o0", OUTSIDE_MAC, OUTSIDE_GW4, OUTSIDE_GW6),
            ("i0", INSIDE_MAC, INSIDE_GW4, INSIDE_GW6),
        ] {
            ip(&["-n", &ns, "link", "set", dev, "address", mac])?;
            netns::add_addrs(&ns, dev, v4, v6)?;
        }
        netns::add_sync_addr(&ns, i)?;
        for dev in ["lo", "y0", "o0", "i0"] {
            ip(&["-n", &ns, "link", "set", dev, "up"])?;
        }
    }
    Ok(())
}

/// Node's ruleset: the whole table `inet kb`, replaced atomically by `nft -f`.
///
/// `bucket_guard` (prerouting, raw priority -300, before conntrack): packets from the two
/// firewalled segments, but for neighbour discovery, get `meta mark = symhash mod B` and are
/// dropped unless the mark is in `@owned` (counted `not_owned`: on a flooding segment every
/// other node's share of the traffic). `firewall` (forward): established and related pass; a
/// new TCP connection only with a SYN (`new_not_syn` counts the rest: mid-stream packets whose
/// state this node lacks), new UDP and ICMP/ICMPv6 echo requests pass; invalid packets and
/// everything else are dropped and counted (`invalid`, `other`).
fn ruleset(buckets: u32, owned: &[u32]) -> String {
    let elements = if owned.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = owned.iter().map(u32::to_string).collect();
        format!(" elements = {{ {} }};", list.join(", "))
    };
    format!(
        "# generated by clusterd lab (kernel baseline)\n\
         table inet kb\n\
         delete table inet kb\n\
         table inet kb {{\n\
         \tcounter not_owned {{}}\n\
         \tcounter invalid {{}}\n\
         \tcounter new_not_syn {{}}\n\
         \tcounter other {{}}\n\
         \tset owned {{ type mark;{elements} }}\n\
         \tchain bucket_guard {{\n\
         \t\ttype filter hook prerouting priority raw; policy accept;\n\
         \t\tiifname != {{ \"o0\", \"i0\" }} accept\n\
         \t\ticmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, \
         nd-router-advert, nd-redirect }} accept\n\
         \t\tmeta mark set symhash mod {buckets}\n\
         \t\tmeta mark != @owned counter name not_owned drop\n\
         \t}}\n\
         \tchain firewall {{\n\
         \t\ttype filter hook forward priority filter; policy drop;\n\
         \t\tct state established,related accept\n\
         \t\tct state invalid counter name invalid drop\n\
         \t\ttcp flags & (syn | ack) == syn ct state new accept\n\
         \t\tmeta l4proto tcp ct state new counter name new_not_syn drop\n\
         \t\tmeta l4proto udp ct state new accept\n\
         \t\ticmp type echo-request ct state new accept\n\
         \t\ticmpv6 type echo-request ct state new accept\n\
         \t\tcounter name other drop\n\
         \t}}\n\
         }}\n"
    )
}

/// Loads node `i`'s ruleset with the buckets `owned` (the whole table, atomically).
fn load_ruleset(lab: &LabInfo, i: u16, buckets: u32, owned: &[u32]) -> Result<(), LabError> {
    let path = file(Path::new(&lab.dir), i, "nft");
    std::fs::write(&path, ruleset(buckets, owned))
        .map_err(|e| format!("node {i}: cannot write {}: {e}", path.display()))?;
    nsx(&node_ns(lab, i)?, "nft", &["-f", &path.to_string_lossy()])
        .map(|_| ())
        .map_err(|e| format!("node {i}: loading its ruleset: {e}"))
}

/// Adds (`add`) or deletes (`delete`) buckets in node `i`'s `@owned` set.
fn set_buckets(lab: &LabInfo, i: u16, op: &str, buckets: &[u32]) -> Result<(), LabError> {
    if buckets.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = buckets.iter().map(u32::to_string).collect();
    let elems = format!("{{ {} }}", list.join(", "));
    nsx(
        &node_ns(lab, i)?,
        "nft",
        &[op, "element", "inet", "kb", "owned", &elems],
    )
    .map(|_| ())
    .map_err(|e| format!("node {i}: {op} buckets: {e}"))
}

/// The UDP port of the channel between nodes `a` and `b` (both ends bind it on their own
/// sync address).
fn pair_port(a: u16, b: u16) -> u16 {
    3780 + a.min(b) * 17 + a.max(b)
}

/// The config of node `i`'s conntrackd instance for peer `j`: FT-FW, unicast UDP on `y0` to
/// that peer (`j` 0: multicast to [`SYNC_GROUP`], nobody listens); files in the lab's
/// directory.
fn conntrackd_conf(dir: &Path, i: u16, j: u16) -> String {
    let f = |w: &str| ctd_file(dir, i, j, w).display().to_string();
    let channel = if j == 0 {
        format!(
            "\tMulticast {{\n\
             \t\tIPv4_address {SYNC_GROUP}\n\
             \t\tGroup 3780\n\
             \t\tIPv4_interface 198.18.100.{i}\n"
        )
    } else {
        format!(
            "\tUDP {{\n\
             \t\tIPv4_address 198.18.100.{i}\n\
             \t\tIPv4_Destination_Address 198.18.100.{j}\n\
             \t\tPort {}\n",
            pair_port(i, j)
        )
    };
    format!(
        "# generated by clusterd lab (kernel baseline), node {i}, channel to node {j}\n\
         Sync {{\n\
         \tMode FTFW {{\n\
         \t\tDisableExternalCache Off\n\
         \t\tCommitTimeout 1800\n\
         \t\tPurgeTimeout 5\n\
         \t}}\n\
         {channel}\
         \t\tInterface y0\n\
         \t\tSndSocketBuffer 1249280\n\
         \t\tRcvSocketBuffer 1249280\n\
         \t\tChecksum on\n\
         \t}}\n\
         }}\n\
         General {{\n\
         \tSystemd off\n\
         \tHashSize 32768\n\
         \tHashLimit 131072\n\
         \tLogFile {log}\n\
         \tSyslog off\n\
         \tLockFile {lock}\n\
         \tUNIX {{\n\
         \t\tPath {sock}\n\
         \t}}\n\
         \tNetlinkBufferSize 2097152\n\
         \tNetlinkBufferSizeMaxGrowth 8388608\n\
         \tFilter From Userspace {{\n\
         \t\tProtocol Accept {{\n\
         \t\t\tTCP\n\
         \t\t\tUDP\n\
         \t\t\tICMP\n\
         \t\t\tIPv6-ICMP\n\
         \t\t}}\n\
         \t\tAddress Ignore {{\n\
         \t\t\tIPv4_address 127.0.0.1\n\
         \t\t\tIPv6_address ::1\n\
         \t\t\tIPv4_address 198.18.100.0/24\n\
         \t\t}}\n\
         \t}}\n\
         }}\n",
        log = f("log"),
        lock = f("lock"),
        sock = f("sock"),
    )
}

/// The pid of node `i`'s conntrackd instance for peer `j` if it runs (its pid file, checked
/// against /proc: pids are reused).
fn ctd_pid(dir: &Path, i: u16, j: u16) -> Option<i32> {
    let text = std::fs::read_to_string(ctd_file(dir, i, j, "pid")).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let conf = ctd_file(dir, i, j, "conf");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit(')')
        .next()
        .is_some_and(|r| r.trim_start().starts_with('Z'));
    (String::from_utf8_lossy(&cmdline).contains(conf.to_string_lossy().as_ref()) && !zombie)
        .then_some(pid)
}

/// utime + stime of process `pid` in ms (/proc reports USER_HZ ticks, 100 a second on Linux).
fn proc_cpu_ms(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // after the ")": state is field 3, utime field 14, stime field 15
    let tick = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    (tick(14).unwrap_or(0) + tick(15).unwrap_or(0)) * 10
}

/// Starts node `i`'s conntrackd instance for peer `j` inside its namespace (a child of its own
/// process group, reaped by a thread here, by init once this process exits) and waits until
/// it answers.
fn start_conntrackd(lab: &LabInfo, i: u16, j: u16) -> Result<i32, LabError> {
    let dir = Path::new(&lab.dir);
    let conf = ctd_file(dir, i, j, "conf");
    std::fs::write(&conf, conntrackd_conf(dir, i, j))
        .map_err(|e| format!("node {i}: cannot write {}: {e}", conf.display()))?;
    // a lock file left by a killed conntrackd would stop the new one
    let _ = std::fs::remove_file(ctd_file(dir, i, j, "lock"));
    let _ = std::fs::remove_file(ctd_file(dir, i, j, "sock"));
    let log_path = ctd_file(dir, i, j, "log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("node {i}: conntrackd log {}: {e}", log_path.display()))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node_ns(lab, i)?, "conntrackd", "-C"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("node {i}: cannot start conntrackd ({INSTALL}): {e}"))?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    std::fs::write(ctd_file(dir, i, j, "pid"), format!("{pid}\n"))
        .map_err(|e| format!("node {i}: conntrackd pid file: {e}"))?;
    let t = Instant::now();
    loop {
        if ctd(lab, i, j, &["-s"]).is_ok() {
            thread::spawn(move || {
                let _ = child.wait();
            });
            return Ok(pid);
        }
        // the child itself, not /proc (its command line is empty while it execs)
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || t.elapsed() > Duration::from_secs(10) {
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            return Err(format!(
                "node {i}: conntrackd did not come up ({}; config {}; its log: {})",
                exited.map_or_else(|| "no answer within 10 s".to_owned(), |st| st.to_string()),
                conf.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts every conntrackd instance of node `i`.
fn start_node(lab: &LabInfo, nodes: u16, i: u16) -> Result<(), LabError> {
    for j in peers(nodes, i) {
        start_conntrackd(lab, i, j)?;
    }
    Ok(())
}

/// Ends every conntrackd instance of node `i` at once (`sig`, then SIGKILL after 3 s); their
/// CPU time until then.
fn end_node(dir: &Path, nodes: u16, i: u16, sig: nix::sys::signal::Signal) -> u64 {
    let pids: Vec<(u16, i32)> = peers(nodes, i)
        .into_iter()
        .filter_map(|j| ctd_pid(dir, i, j).map(|p| (j, p)))
        .collect();
    let cpu = pids.iter().map(|&(_, pid)| proc_cpu_ms(pid)).sum();
    for &(_, pid) in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
    let alive = || pids.iter().any(|&(j, _)| ctd_pid(dir, i, j).is_some());
    let t = Instant::now();
    while alive() && t.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(5));
    }
    for &(j, pid) in &pids {
        if ctd_pid(dir, i, j).is_some() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    cpu
}

/// Node `i`'s firewalled and sync links up or down.
fn links(lab: &LabInfo, i: u16, up: bool) -> Result<(), LabError> {
    let ns = node_ns(lab, i)?;
    for dev in ["o0", "i0", "y0"] {
        netns::ip(&[
            "-n",
            &ns,
            "link",
            "set",
            dev,
            if up { "up" } else { "down" },
        ])?;
    }
    Ok(())
}

/// Waits until `dev` in `ns` is operationally up (carrier on: conntrackd refuses a sync link
/// without it, and the kernel reports carrier changes with a delay).
fn wait_link_up(ns: &str, dev: &str, within: Duration) -> Result<(), LabError> {
    let t = Instant::now();
    loop {
        let out = Command::new("ip")
            .args(["-n", ns, "-j", "link", "show", dev])
            .output()
            .map_err(|e| format!("cannot run `ip` (apt-get install -y iproute2): {e}"))?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if v[0]["operstate"] == "UP" {
            return Ok(());
        }
        if t.elapsed() > within {
            return Err(format!(
                "{dev} in {ns} is not up after {within:?} (`ip -n {ns} link show {dev}`)"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One TCP exchange client -> server on `port` (IPv4 and IPv6), retried until `within`.
fn tcp_check(lab: &LabInfo, port: u16, within: Duration) -> Result<(), LabError> {
    let addrs = [
        SocketAddr::new(IpAddr::V4(SERVER4), port),
        SocketAddr::new(IpAddr::V6(SERVER6), port),
    ];
    let deadline = Instant::now() + within;
    let server = in_ns(&lab.server_ns, move || {
        let ls: Vec<TcpListener> = addrs
            .iter()
            .map(|a| TcpListener::bind(a).map_err(|e| format!("listen on {a}: {e}")))
            .collect::<Result<_, _>>()?;
        let mut done = [false; 2];
        for l in &ls {
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
        }
        while !done.iter().all(|d| *d) {
            if Instant::now() > deadline {
                return Err("no connection reached the server".to_owned());
            }
            for (k, l) in ls.iter().enumerate() {
                if let Ok((mut s, _)) = l.accept() {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut b = [0u8; 4];
                    if s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {
                        done[k] = true;
                    }
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    });
    let client = in_ns(&lab.client_ns, move || {
        for a in addrs {
            let mut last = String::new();
            let ok = loop {
                if Instant::now() > deadline {
                    break false;
                }
                let r = TcpStream::connect_timeout(&a, Duration::from_secs(1)).and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(b"ping")?;
                    let mut b = [0u8; 4];
                    s.read_exact(&mut b)?;
                    Ok(b == *b"ping")
                });
                match r {
                    Ok(true) => break true,
                    Ok(false) => last = "wrong echo".into(),
                    Err(e) => last = e.to_string(),
                }
                thread::sleep(Duration::from_millis(100));
            };
            if !ok {
                return Err(format!("TCP to {a} through the cluster: {last}"));
            }
        }
        Ok(())
    });
    let c = join(client);
    let s = join(server);
    c.and(s).map_err(|e| {
        format!(
            "the kernel cluster does not forward: {e} (see the nodes' rulesets and `nft list \
             ruleset` in their namespaces)"
        )
    })
}

/// The lab of `prefix` in `dir` as [`LabInfo`] (nothing is created): the kernel lab's
/// addresses, per node the UNIX socket and log of its first conntrackd instance (the one for
/// its lowest-numbered peer; a node runs one for each peer).
pub fn info(prefix: &str, dir: &Path, nodes: u16) -> LabInfo {
    let lab = netns::info_with(prefix, dir, nodes, |i| {
        let first = peers(nodes, i)[0];
        (
            ctd_file(dir, i, first, "sock"),
            ctd_file(dir, i, first, "log"),
        )
    });
    LabInfo {
        client: [CLIENT4.to_string(), CLIENT6.to_string()],
        server: [SERVER4.to_string(), SERVER6.to_string()],
        ..lab
    }
}

/// `clusterd lab up --baseline kernel`: builds the namespaces, loads every node's ruleset
/// (node i of N owns the buckets b with b % N == i - 1), starts conntrackd in every node and
/// waits until TCP over IPv4 and IPv6 crosses the cluster. Writes `lab.json` and `kernel.json`.
///
/// # Errors
/// Not root, a tool missing (with the `apt-get` line), a lab of the prefix exists, or what
/// failed; a lab that failed half-way is torn down again.
pub fn up(o: &KernelOptions) -> Result<LabInfo, LabError> {
    netns::check_prefix(&o.prefix)?;
    if !(1..=netns::MAX_NODES).contains(&o.nodes) {
        return Err(format!("--nodes {}: 1 to {}", o.nodes, netns::MAX_NODES));
    }
    if !(1..=MAX_BUCKETS).contains(&o.buckets) {
        return Err(format!("--buckets {}: 1 to {MAX_BUCKETS}", o.buckets));
    }
    preflight()?;
    netns::fresh_lab(&o.prefix, &o.dir)?;
    let lab = info(&o.prefix, &o.dir, o.nodes);
    let state = State {
        kind: "kernel".into(),
        nodes: o.nodes,
        buckets: o.buckets,
        owner: (0..o.buckets)
            .map(|b| u16::try_from(b % u32::from(o.nodes)).unwrap_or(0) + 1)
            .collect(),
        live: vec![true; usize::from(o.nodes)],
        cpu_gone_ms: 0,
    };
    let built = (|| {
        // the marker first: `down` removes the directory of a half-built lab too
        save(&o.dir, &state)?;
        topology(o)?;
        for i in 1..=o.nodes {
            load_ruleset(&lab, i, o.buckets, &owned_by(&state, i))?;
        }
        for i in 1..=o.nodes {
            wait_link_up(&node_ns(&lab, i)?, "y0", Duration::from_secs(5))?;
            start_node(&lab, o.nodes, i)?;
        }
        tcp_check(&lab, 7999, Duration::from_secs(20))?;
        netns::write_info(&lab, &o.dir)
    })();
    if let Err(e) = built {
        down(&o.prefix, &o.dir);
        return Err(e);
    }
    Ok(lab)
}

fn owned_by(s: &State, i: u16) -> Vec<u32> {
    (0..s.buckets)
        .filter(|&b| s.owner[b as usize] == i)
        .collect()
}

/// The buckets node `node` owns now (from `kernel.json`).
///
/// # Errors
/// No kernel lab there.
pub fn buckets_of(lab: &LabInfo, node: u16) -> Result<Vec<u32>, LabError> {
    Ok(owned_by(&load(lab)?, node))
}

/// Every survivor commits the external cache of its instance for node `from` (the entries
/// `from` sent it) into its kernel (`conntrackd -c`).
fn commit(lab: &LabInfo, survivors: &[u16], from: u16) -> Result<(), LabError> {
    for &s in survivors {
        ctd(lab, s, from, &["-c"]).map_err(|e| format!("node {s}: commit: {e}"))?;
    }
    Ok(())
}

/// The entries in the survivors' external caches for node `from` (what a commit commits).
fn external_entries(lab: &LabInfo, survivors: &[u16], from: u16) -> u64 {
    survivors
        .iter()
        .map(|&s| {
            ctd(lab, s, from, &["-e", "ct"])
                .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count() as u64)
                .unwrap_or(0)
        })
        .sum()
}

/// The rest of the primary-backup script on every survivor: the instance for the node that
/// left flushes its caches (`-f`) and resyncs its internal cache from the kernel (`-R`: what
/// it gives that node when it comes back); the instances for the other survivors resync
/// theirs (`-R`, now with the committed entries) and send them (`-B`).
fn after_commit(lab: &LabInfo, survivors: &[u16], from: u16) -> Result<(), LabError> {
    for &s in survivors {
        for flag in ["-f", "-R"] {
            ctd(lab, s, from, &[flag])
                .map_err(|e| format!("node {s}: conntrackd {flag} (peer {from}): {e}"))?;
        }
        for &p in survivors.iter().filter(|&&p| p != s) {
            for flag in ["-R", "-B"] {
                ctd(lab, s, p, &[flag])
                    .map_err(|e| format!("node {s}: conntrackd {flag} (peer {p}): {e}"))?;
            }
        }
    }
    Ok(())
}

/// Deals `buckets` out to `to` round-robin: (node, its buckets).
fn deal(buckets: &[u32], to: &[u16]) -> Vec<(u16, Vec<u32>)> {
    let mut out: Vec<(u16, Vec<u32>)> = to.iter().map(|&n| (n, Vec::new())).collect();
    if to.is_empty() {
        return out;
    }
    for (k, &b) in buckets.iter().enumerate() {
        out[k % to.len()].1.push(b);
    }
    out
}

fn live_nodes(s: &State) -> Vec<u16> {
    (1..=s.nodes)
        .filter(|&i| s.live[usize::from(i - 1)])
        .collect()
}

fn check_live(lab: &LabInfo, s: &State, node: u16) -> Result<(), LabError> {
    node_ns(lab, node)?;
    if !s.live[usize::from(node - 1)] {
        return Err(format!(
            "node {node} of lab {} is down already (`clusterd lab start {node}` first)",
            lab.prefix
        ));
    }
    Ok(())
}

/// The survivors take the buckets `moved` of node `from` over: commit, add the buckets, then
/// flush/resync/bulk-send.
fn take_over(
    lab: &LabInfo,
    s: &mut State,
    survivors: &[u16],
    from: u16,
    moved: &[u32],
    died_at: Instant,
) -> Result<Takeover, LabError> {
    commit(lab, survivors, from)?;
    let committed_at = Instant::now();
    for (n, bs) in deal(moved, survivors) {
        set_buckets(lab, n, "add", &bs)?;
        for b in bs {
            s.owner[b as usize] = n;
        }
    }
    let buckets_moved_at = Instant::now();
    save(Path::new(&lab.dir), s)?;
    let entries_committed = external_entries(lab, survivors, from);
    after_commit(lab, survivors, from)?;
    Ok(Takeover {
        died_at,
        buckets_moved_at,
        committed_at,
        entries_committed,
    })
}

/// Node `node` dies at once (its `o0`, `i0` and `y0` go down and its conntrackd instances are
/// SIGKILLed: it stops forwarding and syncing); after `detect` (0: the failover script starts
/// the instant the node dies; 3 s is VRRP's usual detection time) the survivors take its
/// buckets over: each commits the external cache of its instance for the dead node into its
/// kernel (`conntrackd -c`), then the buckets are dealt out to them (added to their
/// `@owned`), then each runs `-f` on that instance and `-R`, `-B` on the others. The commit
/// comes before the buckets, so no packet of a moved flow meets a node without its state
/// (keepalived's notify script runs after the address moved: that order costs a window of
/// `new_not_syn` drops that this one does not have).
///
/// # Errors
/// No such node, it is down already, or a command failed.
pub fn kill(lab: &LabInfo, node: u16, detect: Duration) -> Result<Takeover, LabError> {
    let mut s = load(lab)?;
    check_live(lab, &s, node)?;
    let dir = Path::new(&lab.dir);
    links(lab, node, false)?;
    s.cpu_gone_ms += end_node(dir, s.nodes, node, nix::sys::signal::Signal::SIGKILL);
    let died_at = Instant::now();
    s.live[usize::from(node - 1)] = false;
    save(dir, &s)?;
    thread::sleep(detect.saturating_sub(died_at.elapsed()));
    let survivors = live_nodes(&s);
    let moved = owned_by(&s, node);
    for &b in &moved {
        s.owner[b as usize] = 0;
    }
    take_over(lab, &mut s, &survivors, node, &moved, died_at)
}

/// Node `node` leaves gracefully: the survivors commit their external caches and add its
/// buckets first (for a moment both forward those buckets: duplicates the endpoints' TCP
/// discards), then the node removes its buckets, its links go down and its conntrackd ends.
/// `died_at` is when the leave began.
///
/// # Errors
/// No such node, it is down already, or a command failed.
pub fn stop(lab: &LabInfo, node: u16) -> Result<Takeover, LabError> {
    let mut s = load(lab)?;
    check_live(lab, &s, node)?;
    let died_at = Instant::now();
    let survivors: Vec<u16> = live_nodes(&s).into_iter().filter(|&n| n != node).collect();
    let moved = owned_by(&s, node);
    let t = take_over(lab, &mut s, &survivors, node, &moved, died_at)?;
    set_buckets(lab, node, "delete", &moved)?;
    links(lab, node, false)?;
    let dir = Path::new(&lab.dir);
    s.cpu_gone_ms += end_node(dir, s.nodes, node, nix::sys::signal::Signal::SIGTERM);
    s.live[usize::from(node - 1)] = false;
    save(dir, &s)?;
    Ok(t)
}

/// A dead or stopped node comes back: its kernel's connection table is flushed (a rebooted
/// node's is empty), its `@owned` set emptied, its links go up, its conntrackd
/// starts and asks the others for their states (`conntrackd -n`). It owns no buckets until
/// [`rebalance`].
///
/// # Errors
/// No such node, it runs already, or a command failed.
pub fn start(lab: &LabInfo, node: u16) -> Result<(), LabError> {
    let mut s = load(lab)?;
    node_ns(lab, node)?;
    if s.live[usize::from(node - 1)] {
        return Err(format!("node {node} of lab {} runs already", lab.prefix));
    }
    let dir = Path::new(&lab.dir);
    // a pid file of a conntrackd that somehow still runs
    s.cpu_gone_ms += end_node(dir, s.nodes, node, nix::sys::signal::Signal::SIGKILL);
    let ns = node_ns(lab, node)?;
    // no buckets (the counters stay: `drops` adds up the whole run)
    nsx(&ns, "nft", &["flush", "set", "inet", "kb", "owned"])
        .map_err(|e| format!("node {node}: emptying its @owned set: {e}"))?;
    // an empty table is no error for `conntrack -F`; a failure to run it is
    nsx(&ns, "conntrack", &["-F"]).map_err(|e| format!("node {node}: {e}"))?;
    links(lab, node, true)?;
    wait_link_up(&ns, "y0", Duration::from_secs(5))?;
    start_node(lab, s.nodes, node)?;
    let count = |i: u16, j: u16, what: &str| {
        ctd(lab, i, j, &[what, "ct"])
            .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(0)
    };
    for p in live_nodes(&s) {
        // the peer's instance for this node refreshes what it will send, then this node asks
        ctd(lab, p, node, &["-R"]).map_err(|e| format!("node {p}: conntrackd -R: {e}"))?;
        ctd(lab, node, p, &["-n"])
            .map_err(|e| format!("node {node}: resync request to node {p}: {e}"))?;
    }
    // the resync is asynchronous: wait (at most 3 s) until this node holds what its peers have
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3)
        && live_nodes(&s)
            .into_iter()
            .any(|p| count(node, p, "-e") < count(p, node, "-i"))
    {
        thread::sleep(Duration::from_millis(20));
    }
    s.live[usize::from(node - 1)] = true;
    save(dir, &s)
}

/// Spreads the buckets evenly over the live nodes, moving as few as it can (each node keeps
/// its buckets up to its share; the rest and the unowned ones go to the nodes under theirs).
/// For every receiving node B: B commits the external cache of its instance for every giving
/// node A (`conntrackd -c`: the entries A sent it), B adds the buckets, then every giving node
/// removes them — make-before-break as far as the kernel allows. The cost: conntrackd commits
/// all of A's entries, not one bucket's, and while both own a bucket both forward its
/// packets (the flooding segment delivers them to both), so the endpoints see duplicates.
///
/// # Errors
/// No live node, or a command failed.
pub fn rebalance(lab: &LabInfo) -> Result<(), LabError> {
    let mut s = load(lab)?;
    let live = live_nodes(&s);
    if live.is_empty() {
        return Err(format!(
            "lab {}: no live node to give buckets to (`clusterd lab start N` first)",
            lab.prefix
        ));
    }
    let n = live.len() as u32;
    let share = |k: usize| s.buckets / n + u32::from((k as u32) < s.buckets % n);
    let mut target = s.owner.clone();
    let mut pool = Vec::new();
    for (k, &node) in live.iter().enumerate() {
        let mine = owned_by(&s, node);
        pool.extend_from_slice(&mine[share(k).min(mine.len() as u32) as usize..]);
    }
    pool.extend((0..s.buckets).filter(|&b| !live.contains(&s.owner[b as usize])));
    pool.sort_unstable();
    let mut gains: Vec<(u16, Vec<u32>)> = Vec::new();
    let mut it = pool.into_iter();
    for (k, &node) in live.iter().enumerate() {
        let have = owned_by(&s, node).len() as u32;
        let want = share(k).saturating_sub(have);
        let got: Vec<u32> = it.by_ref().take(want as usize).collect();
        for &b in &got {
            target[b as usize] = node;
        }
        if !got.is_empty() {
            gains.push((node, got));
        }
    }
    // make: every receiver commits, then adds
    for (node, got) in &gains {
        let mut from: Vec<u16> = got
            .iter()
            .map(|&b| s.owner[b as usize])
            .filter(|&a| a != 0 && a != *node)
            .collect();
        from.sort_unstable();
        from.dedup();
        for a in from {
            ctd(lab, *node, a, &["-c"])
                .map_err(|e| format!("node {node}: commit of node {a}'s entries: {e}"))?;
        }
        set_buckets(lab, *node, "add", got)?;
    }
    // break: the giving nodes (live ones; a dead node's set is reloaded when it starts)
    for &node in &live {
        let lost: Vec<u32> = (0..s.buckets)
            .filter(|&b| s.owner[b as usize] == node && target[b as usize] != node)
            .collect();
        set_buckets(lab, node, "delete", &lost)?;
    }
    s.owner = target;
    save(Path::new(&lab.dir), &s)
}

/// A link's counters inside `ns` (`ip -s -j link show DEV`): (tx_bytes, tx_packets,
/// rx_bytes, rx_packets).
pub fn link_stats(ns: &str, dev: &str) -> Option<(u64, u64, u64, u64)> {
    let out = Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", dev])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let st = &v.get(0)?["stats64"];
    let n = |d: &str, k: &str| st[d][k].as_u64().unwrap_or(0);
    Some((
        n("tx", "bytes"),
        n("tx", "packets"),
        n("rx", "bytes"),
        n("rx", "packets"),
    ))
}

/// Bytes all nodes sent on the sync segment (the sum of their `y0` tx_bytes: conntrackd's
/// replication, its acknowledgements and the nodes' ARP there).
pub fn sync_bytes(lab: &LabInfo) -> u64 {
    lab.nodes
        .iter()
        .filter_map(|n| link_stats(&n.ns, "y0"))
        .map(|s| s.0)
        .sum()
}

/// CPU time (ms, utime + stime) of all the lab's conntrackd processes, including those killed
/// or stopped since `up`. The kernel's own forwarding, filtering and connection tracking run in
/// softirq context and cannot be attributed to a network namespace, so they are not in it.
pub fn cpu_ms(lab: &LabInfo) -> u64 {
    let dir = Path::new(&lab.dir);
    let gone = load(lab).map(|s| s.cpu_gone_ms).unwrap_or(0);
    let nodes = u16::try_from(lab.nodes.len()).unwrap_or(0);
    gone + lab
        .nodes
        .iter()
        .flat_map(|n| peers(nodes, n.id).into_iter().map(move |j| (n.id, j)))
        .filter_map(|(i, j)| ctd_pid(dir, i, j))
        .map(proc_cpu_ms)
        .sum::<u64>()
}

/// Every node's dropped packets by reason: `("nN/not_owned", packets)` (normal: the other
/// nodes' share on a flooding segment), `nN/new_not_syn` (a TCP packet without state: a flow
/// whose state did not arrive, or arrived late), `nN/invalid` and `nN/other`.
pub fn drops(lab: &LabInfo) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for n in &lab.nodes {
        let Ok(text) = nsx(
            &n.ns,
            "nft",
            &["-j", "list", "counters", "table", "inet", "kb"],
        ) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for item in v["nftables"].as_array().into_iter().flatten() {
            let c = &item["counter"];
            if let Some(name) = c["name"].as_str() {
                out.push((
                    format!("n{}/{name}", n.id),
                    c["packets"].as_u64().unwrap_or(0),
                ));
            }
        }
    }
    out
}

/// Removes the lab of `prefix`: its conntrackd processes, every namespace ([`netns::down`]
/// ends any process left in them) and its directory. Works on whatever is left.
pub fn down(prefix: &str, dir: &Path) {
    // every conntrackd a pid file names whose command line names its config
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".conntrackd.pid") else {
            continue;
        };
        let conf = dir.join(format!("{stem}.conntrackd.conf"));
        let pid = std::fs::read_to_string(e.path())
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(conf.to_string_lossy().as_ref()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = netns::down(prefix, dir);
    if state_path(dir).exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The table the kernel baseline's workload driver loads into the client's and the server's
/// namespaces to count the IP packets between the two ends (`inet kbe2e`: `tx` what this end
/// sent to the other, `rx` what it received from it). The routed nodes answer ARP and
/// neighbour discovery themselves, so the interfaces' counters would count those too.
fn e2e_ruleset(peer4: Ipv4Addr, peer6: Ipv6Addr) -> String {
    format!(
        "# generated by clusterd lab (kernel baseline): packets to and from the other end\n\
         table inet kbe2e\n\
         delete table inet kbe2e\n\
         table inet kbe2e {{\n\
         \tcounter tx {{}}\n\
         \tcounter rx {{}}\n\
         \tchain out {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t\tip daddr {peer4} counter name tx\n\
         \t\tip6 daddr {peer6} counter name tx\n\
         \t}}\n\
         \tchain in {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tip saddr {peer4} counter name rx\n\
         \t\tip6 saddr {peer6} counter name rx\n\
         \t}}\n\
         }}\n"
    )
}

/// The named counters of table `inet TABLE` in `ns`: (name, packets).
fn counters(ns: &str, table: &str) -> Option<Vec<(String, u64)>> {
    let text = nsx(
        ns,
        "nft",
        &["-j", "list", "counters", "table", "inet", table],
    )
    .ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    Some(
        v["nftables"]
            .as_array()?
            .iter()
            .filter_map(|item| {
                let c = &item["counter"];
                Some((
                    c["name"].as_str()?.to_owned(),
                    c["packets"].as_u64().unwrap_or(0),
                ))
            })
            .collect(),
    )
}

/// The kernel baseline as the backend of `clusterd lab run` ([`run::Backend`]): the run's
/// events are this module's [`kill`] (the node's links down and its conntrackd SIGKILLed,
/// the failover after the detection delay), [`stop`], [`start`] and [`rebalance`].
///
/// [`run::Backend`]: crate::lab::run::Backend
pub struct KernelLab {
    info: LabInfo,
    detect: Duration,
}

impl KernelLab {
    /// The kernel lab `info` (made by [`up`]); a kill's failover starts `detect` after the
    /// node died (0: the instant it dies; 3 s: VRRP's usual detection). Loads the counting
    /// table into the client's and the server's namespaces (frames end to end).
    ///
    /// # Errors
    /// Not a kernel lab (no `kernel.json`), or the counting table cannot be loaded.
    pub fn new(info: LabInfo, detect: Duration) -> Result<Self, LabError> {
        load(&info)?;
        let dir = Path::new(&info.dir);
        for (ns, name, peer4, peer6) in [
            (&info.client_ns, "client", SERVER4, SERVER6),
            (&info.server_ns, "server", CLIENT4, CLIENT6),
        ] {
            let path = dir.join(format!("{name}.e2e.nft"));
            std::fs::write(&path, e2e_ruleset(peer4, peer6))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            nsx(ns, "nft", &["-f", &path.to_string_lossy()])
                .map_err(|e| format!("the {name}'s packet counters: {e}"))?;
        }
        Ok(Self { info, detect })
    }

    /// How long a kill's failover waits.
    pub fn detect(&self) -> Duration {
        self.detect
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

impl crate::lab::run::Backend for KernelLab {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn info(&self) -> &LabInfo {
        &self.info
    }

    fn nodes(&self) -> Vec<(u16, bool)> {
        match load(&self.info) {
            Ok(s) => (1..=s.nodes)
                .map(|i| (i, s.live[usize::from(i - 1)]))
                .collect(),
            Err(_) => self.info.nodes.iter().map(|n| (n.id, false)).collect(),
        }
    }

    fn apply(&mut self, e: &crate::lab::run::EventKind) -> Result<String, LabError> {
        use crate::lab::run::EventKind;
        match *e {
            EventKind::Kill { node } => {
                let t = kill(&self.info, node, self.detect)?;
                Ok(format!(
                    "node {node}: links down, conntrackd SIGKILLed; failover after {} ms \
                     detection: {} entries committed at +{} ms, buckets moved at +{} ms",
                    ms(self.detect),
                    t.entries_committed,
                    ms(t.committed_at - t.died_at),
                    ms(t.buckets_moved_at - t.died_at)
                ))
            }
            EventKind::Stop { node } => {
                let t = stop(&self.info, node)?;
                Ok(format!(
                    "node {node}: left: the survivors committed {} entries (+{} ms) and took \
                     its buckets (+{} ms), its conntrackd got SIGTERM",
                    t.entries_committed,
                    ms(t.committed_at - t.died_at),
                    ms(t.buckets_moved_at - t.died_at)
                ))
            }
            EventKind::Join { node } => {
                let t = Instant::now();
                start(&self.info, node)?;
                Ok(format!(
                    "node {node}: started, resynced in {} ms (it owns no bucket until a \
                     rebalance)",
                    ms(t.elapsed())
                ))
            }
            EventKind::Rebalance => {
                let t = Instant::now();
                rebalance(&self.info)?;
                Ok(format!(
                    "buckets spread over the live nodes in {} ms",
                    ms(t.elapsed())
                ))
            }
        }
    }

    fn drops(&self) -> Vec<crate::lab::run::NodeDrop> {
        let mut out = Vec::new();
        for n in &self.info.nodes {
            for (name, c) in counters(&n.ns, "kb").unwrap_or_default() {
                // the other nodes' share of the flooding segments: normal, as ours leaves out
                // its cards' not_owned
                if name != "not_owned" && c > 0 {
                    out.push((n.id, name, c));
                }
            }
        }
        out
    }

    fn sync_bytes(&self) -> u64 {
        sync_bytes(&self.info)
    }

    fn cpu_ms(&self) -> u64 {
        cpu_ms(&self.info)
    }

    fn end_to_end(&self) -> Option<[u64; 4]> {
        let get = |ns: &str| -> Option<(u64, u64)> {
            let c = counters(ns, "kbe2e")?;
            let find = |k: &str| c.iter().find(|(n, _)| n == k).map(|x| x.1);
            Some((find("tx")?, find("rx")?))
        };
        let (ctx, crx) = get(&self.info.client_ns)?;
        let (stx, srx) = get(&self.info.server_ns)?;
        Some([ctx, crx, stx, srx])
    }

    fn notes(&self) -> Vec<String> {
        vec![
            format!(
                "a kill's failover starts {} ms after the node died (--detect-ms; 0: the \
                 instant it dies, 3000: VRRP's usual detection)",
                ms(self.detect)
            ),
            "frames end to end: IP packets between the client's and the server's addresses \
             (nftables counters in their namespaces; the routed nodes answer ARP and neighbour \
             discovery themselves, so interface counters do not compare)"
                .into(),
            "cpu: the conntrackd processes only; the kernel's forwarding, filtering and \
             connection tracking run in softirq context and cannot be attributed to the nodes"
                .into(),
            "dropped by nodes: their nftables counters new_not_syn, invalid and other \
             (not_owned, the other nodes' share of the flooding segments, left out); no hold \
             counters: the kernel holds no frame back"
                .into(),
            "sync: the bytes every node sent on y0 (conntrackd's updates and acknowledgements, \
             unencrypted)"
                .into(),
        ]
    }
}

/// Whether the lab in `dir` is a kernel baseline (its `kernel.json` says so).
pub fn is_kernel_lab(dir: &Path) -> bool {
    std::fs::read_to_string(state_path(dir))
        .ok()
        .and_then(|t| serde_json::from_str::<State>(&t).ok())
        .is_some_and(|s| s.kind == "kernel")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deal_spreads_round_robin() {
        let d = deal(&[1, 2, 3, 4, 5], &[2, 3]);
        assert_eq!(d, vec![(2, vec![1, 3, 5]), (3, vec![2, 4])]);
        assert!(deal(&[1], &[]).is_empty());
    }

    #[test]
    fn ruleset_names_the_buckets() {
        let r = ruleset(256, &[0, 3]);
        assert!(r.contains("symhash mod 256"));
        assert!(r.contains("elements = { 0, 3 }"));
        assert!(!ruleset(8, &[]).contains("elements"));
    }

    #[test]
    fn conntrackd_conf_is_per_node() {
        let c = conntrackd_conf(Path::new("lab"), 2, 3);
        assert!(c.contains("IPv4_address 198.18.100.2"));
        assert!(c.contains("IPv4_Destination_Address 198.18.100.3"));
        assert!(c.contains(&format!("Port {}", pair_port(3, 2))));
        assert!(c.contains("n2-p3.conntrackd.sock"));
        assert!(c.contains("n2-p3.conntrackd.lock"));
        let lone = conntrackd_conf(Path::new("lab"), 1, 0);
        assert!(lone.contains("Multicast") && lone.contains("n1.conntrackd.sock"));
        assert_eq!(peers(3, 2), vec![1, 3]);
        assert_eq!(peers(1, 1), vec![0]);
    }
}
