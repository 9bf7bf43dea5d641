//! clusterd: the cluster daemon. `clusterd run --config FILE` runs one node; `clusterd demo`
//! runs a whole cluster as separate processes on loopback; `clusterd ctl` talks to a node's
//! control socket; `clusterd keygen` prints a fresh cluster key. See `docs/clusterd.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use host::daemon::control;
use host::daemon::protocol::{Request, Response};
use host::lab::demo;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "clusterd",
    version,
    about = "Cluster daemon: replicated connection state, agreed allocation, failover"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node from a config file.
    Run {
        /// The node's config file (format: docs/clusterd.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a fresh random cluster key (64 hex digits); with --identity FILE, write a new node
    /// identity (Ed25519, mode 0600) to FILE instead and print its public key (for the
    /// `key=` of this node's line in the other nodes' configs).
    Keygen {
        /// Write a node identity to this new file.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Send one control command (JSON) to a node's control socket and print the answer.
    Ctl {
        /// The control socket path.
        #[arg(long)]
        socket: PathBuf,
        /// The command name (status, allocation, counts, move, drain, ...).
        cmd: String,
        /// Extra JSON fields, e.g. `{"ids":[1,2],"to":3}`.
        #[arg(default_value = "{}")]
        args: String,
    },
    /// Run a whole cluster on loopback, drive traffic through it, inject faults, report.
    Demo(demo::DemoArgs),
    /// A cluster as a firewall between real network namespaces (root): up, down, kill, stop,
    /// start, partition, heal, status.
    Lab(LabArgs),
}

#[derive(clap::Args)]
struct LabArgs {
    #[command(subcommand)]
    op: LabOp,
    /// Namespace prefix: P-client, P-server, P-n1.. and P-sw.
    #[arg(long, global = true, default_value = "cl")]
    prefix: String,
    /// The lab's directory (configs, keys, sockets, logs); default one per prefix in the
    /// temporary directory.
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum LabOp {
    /// Build the namespaces and segments, start the nodes, wait until the cluster is ready.
    Up {
        /// Nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// Card backend of every node.
        #[arg(long, default_value = "model")]
        card: String,
        /// Distribution identifiers.
        #[arg(long, default_value_t = 256)]
        identifiers: u32,
        /// `none`: our cluster; `kernel`: the baseline, the Linux kernel routing with
        /// nftables and conntrackd (docs/clusterd.md, "The kernel baseline").
        #[arg(long, default_value = "none", value_parser = ["none", "kernel"])]
        baseline: String,
        /// Hash buckets of the kernel baseline (`symhash mod BUCKETS`).
        #[arg(long, default_value_t = 256)]
        buckets: u32,
    },
    /// Kill every node, remove every namespace and the lab's directory.
    Down,
    /// SIGKILL node NODE.
    Kill { node: u16 },
    /// SIGTERM node NODE.
    Stop { node: u16 },
    /// Start node NODE again (it rejoins and resyncs).
    Start { node: u16 },
    /// Cut node NODE off the sync segment.
    Partition { node: u16 },
    /// Put node NODE back on the sync segment.
    Heal { node: u16 },
    /// Every node: process, readiness, identifiers owned, card counters.
    Status,
}

fn lab(a: LabArgs) -> Result<(), String> {
    use host::lab::netns;
    netns::check_prefix(&a.prefix)?;
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(|| netns::default_dir(&a.prefix));
    let say = |text: String, json: serde_json::Value| {
        if a.json {
            println!("{json}");
        } else {
            println!("{text}");
        }
    };
    match a.op {
        LabOp::Up {
            nodes,
            card,
            identifiers,
            baseline,
            buckets,
        } => {
            let info = match baseline.as_str() {
                "kernel" => host::lab::kernel::up(&host::lab::kernel::KernelOptions {
                    nodes,
                    prefix: a.prefix.clone(),
                    buckets,
                    dir,
                })?,
                _ => netns::up(&netns::LabOptions {
                    nodes,
                    prefix: a.prefix.clone(),
                    card,
                    identifiers,
                    dir,
                    exe: std::env::current_exe().map_err(|e| format!("own executable: {e}"))?,
                })?,
            };
            let mut text = format!(
                "lab {} up: client {} ({}, {}), server {} ({}, {})
",
                info.prefix,
                info.client_ns,
                info.client[0],
                info.client[1],
                info.server_ns,
                info.server[0],
                info.server[1]
            );
            for n in &info.nodes {
                text += &format!(
                    "  node {}  {}  socket {}
",
                    n.id, n.ns, n.socket
                );
            }
            text += &format!("clusterd lab down --prefix {} removes it", info.prefix);
            say(text, serde_json::to_value(&info).unwrap_or_default());
        }
        LabOp::Down => {
            let removed = netns::down(&a.prefix, &dir)?;
            say(
                format!(
                    "removed: {}",
                    if removed.is_empty() {
                        "nothing".to_owned()
                    } else {
                        removed.join(", ")
                    }
                ),
                serde_json::json!({ "removed": removed }),
            );
        }
        LabOp::Kill { node } | LabOp::Stop { node } => {
            let sig = if matches!(a.op, LabOp::Kill { .. }) {
                nix::sys::signal::Signal::SIGKILL
            } else {
                nix::sys::signal::Signal::SIGTERM
            };
            if !netns::signal(&dir, node, sig) {
                return Err(format!("node {node} of lab {} is not running", a.prefix));
            }
            say(
                format!("node {node}: {sig}"),
                serde_json::json!({ "node": node, "signal": sig.as_str() }),
            );
        }
        LabOp::Start { node } => {
            if netns::pid(&dir, node).is_some() {
                return Err(format!("node {node} of lab {} runs already", a.prefix));
            }
            let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
            let pid = netns::start(&a.prefix, &dir, &exe, node)?;
            say(
                format!("node {node}: started (pid {pid})"),
                serde_json::json!({ "node": node, "pid": pid }),
            );
        }
        LabOp::Partition { node } | LabOp::Heal { node } => {
            let heal = matches!(a.op, LabOp::Heal { .. });
            netns::partition(&a.prefix, node, heal)?;
            say(
                format!(
                    "node {node}: {}",
                    if heal {
                        "back on the sync segment"
                    } else {
                        "cut off the sync segment"
                    }
                ),
                serde_json::json!({ "node": node, "partitioned": !heal }),
            );
        }
        LabOp::Status => {
            let rows = netns::lab_status(&dir);
            if rows.is_empty() {
                return Err(format!(
                    "no lab with prefix {} in {}",
                    a.prefix,
                    dir.display()
                ));
            }
            let mut text = "NODE  PID      READY  OWNED  CARD FORWARDED  PUNTED\n".to_owned();
            for r in &rows {
                text += &format!(
                    "{:<4}  {:<7}  {:<5}  {:<5}  {:<14}  {}\n",
                    r.id,
                    r.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                    if r.ready { "yes" } else { "no" },
                    r.owned,
                    r.forwarded_by_card,
                    r.punted
                );
            }
            say(
                text.trim_end().to_owned(),
                serde_json::to_value(&rows).unwrap_or_default(),
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("clusterd: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.cmd {
        Cmd::Run { config } => rt.block_on(host::daemon::node::run_node(&config)),
        Cmd::Keygen { identity: None } => host::sync::ClusterKey::generate()
            .map(|k| println!("{}", *Zeroizing::new(k.to_hex())))
            .map_err(|e| e.to_string()),
        Cmd::Keygen {
            identity: Some(path),
        } => host::sync::NodeIdentity::write_new(&path)
            .map(|k| println!("{}", k.to_hex()))
            .map_err(|e| e.to_string()),
        Cmd::Ctl { socket, cmd, args } => rt.block_on(ctl(socket, cmd, Zeroizing::new(args))),
        Cmd::Demo(args) => rt.block_on(demo::run(args)),
        // blocking work (processes, `ip`, control calls on runtimes of their own)
        Cmd::Lab(args) => lab(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clusterd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `clusterd ctl`: the command name and its JSON fields make one [`Request`] (checked here,
/// so a typo is refused before it reaches the node); the answer is printed as JSON.
async fn ctl(socket: PathBuf, cmd: String, args: Zeroizing<String>) -> Result<(), String> {
    let mut fields: serde_json::Value =
        serde_json::from_str(&args).map_err(|e| format!("arguments are not a JSON object: {e}"))?;
    let Some(obj) = fields.as_object_mut() else {
        return Err("arguments must be a JSON object, e.g. '{\"node\":2}'".to_string());
    };
    // a key is named (`"key":"@FILE"` or `"key":"-"`), never given, in argv
    let key_arg = match obj.remove("key") {
        None => None,
        Some(serde_json::Value::String(k)) => Some(Zeroizing::new(k)),
        Some(_) => return Err(format!("\"key\" is a string: {}", host::secret_arg::HOW)),
    };
    obj.insert("cmd".into(), serde_json::Value::String(cmd));
    let line = Zeroizing::new(fields.to_string());
    let parsed = Request::parse(&line).and_then(|mut req| {
        if let Some(k) = &key_arg {
            let Request::SaAdd { key, .. } = &mut req else {
                return Ok(req);
            };
            let mut stdin = std::io::stdin().lock();
            let hex = host::secret_arg::read(k, "sa_add \"key\"", &mut stdin)
                .map_err(host::daemon::protocol::ErrorReply::new)?;
            *key = host::daemon::protocol::SecretHex::new(hex.as_str());
        }
        Ok(req)
    });
    let (answer, refused) = match parsed {
        Ok(req) => (
            control::call_once(&socket, &req, Duration::from_secs(5))
                .await
                .map_err(|e| connect_error(&socket, &e))?,
            "the node refused the command",
        ),
        Err(refusal) => (
            Response::Error(refusal),
            "not a command the node accepts (not sent)",
        ),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_default()
    );
    if answer.is_ok() {
        Ok(())
    } else {
        Err(refused.to_string())
    }
}

/// What `clusterd ctl` says when the socket cannot be used, with the likely fix.
fn connect_error(socket: &std::path::Path, e: &std::io::Error) -> String {
    let path = socket.display();
    match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no control socket at {path}: is the node running? (the path is `control =` in its \
             config file)"
        ),
        std::io::ErrorKind::ConnectionRefused => {
            format!("nobody listens on {path}: the node that made it is gone (start it again)")
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "{path}: permission denied: run as root, as the node's user, or as a member of its \
             control_group"
        ),
        _ => format!("{path}: {e}"),
    }
}
