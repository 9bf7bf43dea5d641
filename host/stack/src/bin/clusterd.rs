//! clusterd: the cluster daemon. `clusterd run --config FILE` runs one node; `clusterd demo`
//! runs a whole cluster as separate processes on loopback; `clusterd ctl` talks to a node's
//! control socket; `clusterd keygen` prints a fresh cluster key. See `docs/clusterd.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr as _;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand};
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
    /// Check a config file without starting the node: a one-line summary and exit status 0,
    /// or the error (its line and the fix) and exit status 2.
    CheckConfig {
        /// The config file (format: docs/clusterd.md).
        file: PathBuf,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell), e.g.
    /// `clusterd completions bash > /etc/bash_completion.d/clusterd`.
    Completions {
        /// The shell.
        shell: host::cli_docs::Shell,
    },
    /// Write the man pages (section 1) into DIR, one per command and subcommand:
    /// clusterd.1, clusterd-run.1, clusterd-lab-up.1, ... (DIR is created when missing).
    Man {
        /// The directory, e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
    /// Print a fresh random cluster key (64 hex digits); with --identity FILE, write a new node
    /// identity (Ed25519, mode 0600) to FILE instead and print its public key (for the
    /// `key=` of this node's line in the other nodes' configs).
    Keygen {
        /// Write a node identity to this new file.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Send one control command (JSON) to a node's control socket and print the answer: a
    /// table for status and allocation, pretty JSON for the others; -j compact JSON, -p
    /// pretty JSON for every command. The table views take flags instead of JSON (conntrack's
    /// -L, -C, -G, -E): `dump [--table common|card] [filters] [--limit N]`, `count [--table
    /// ..] [filters]`, `get [--table ..] KEY`, `events [filters]`; filters `--src
    /// ADDR[/PREFIX] --dst ADDR[/PREFIX] --proto P --sport N --dport N --port N --state KIND
    /// --did N` (`clusterd ctl --socket S dump -- --help`; docs/vocabulary.md). `check
    /// [--json]` recomputes every entry's identifier from its key and lists those stored under
    /// another (exit status 1 when any is, or the tables disagree). An authentication source
    /// binds users (claim 8): `user-bind '{"user":7,"addr":"198.18.0.10","lifetime_s":3600}'`,
    /// `user-unbind '{"addr":"198.18.0.10"}'`, `users` (a table; --json).
    Ctl {
        /// The control socket path.
        #[arg(long)]
        socket: PathBuf,
        /// Print the answer as compact JSON (one line).
        #[arg(short = 'j', long)]
        json: bool,
        /// Print the answer as pretty JSON.
        #[arg(short = 'p', long)]
        pretty: bool,
        /// The command name (status, allocation, counts, move, drain, ...).
        cmd: String,
        /// Extra JSON fields, e.g. `{"ids":[1,2],"to":3}`; for dump, count, get and events
        /// their flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
    /// Print compact JSON (one line).
    #[arg(short = 'j', long, global = true)]
    json: bool,
    /// Print pretty JSON.
    #[arg(short = 'p', long, global = true)]
    pretty: bool,
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
    /// SIGKILL node NODE (the kernel baseline: its links down, its conntrackd SIGKILLed, the
    /// survivors' failover at once).
    Kill { node: u16 },
    /// SIGTERM node NODE (the kernel baseline: the survivors take its buckets, then it leaves).
    Stop { node: u16 },
    /// Start node NODE again (it rejoins and resyncs).
    Start { node: u16 },
    /// Cut node NODE off the sync segment.
    Partition { node: u16 },
    /// Put node NODE back on the sync segment.
    Heal { node: u16 },
    /// Every node: process, readiness, identifiers owned, card counters.
    Status,
    /// Real traffic across the lab (long-lived and bulk TCP, UDP, ICMP, IPv4 and IPv6) with
    /// events on a schedule, then a report measured from outside: connections completed,
    /// reset and stalled, the longest stall and the kernels' TCP retransmissions per event,
    /// frames lost end to end, what the nodes dropped and why. Runs on the lab of --prefix:
    /// ours, or the kernel baseline (`lab up --baseline kernel`).
    Run {
        /// Long-lived TCP connections exchanging small messages.
        #[arg(long, default_value_t = 100)]
        connections: u32,
        /// Bulk TCP transfers.
        #[arg(long, default_value_t = 2)]
        bulk: u32,
        /// Each bulk transfer's pace in kB/s (0: as fast as TCP goes, which saturates the
        /// path and makes retransmissions measure congestion rather than the events).
        #[arg(long, default_value_t = 1000)]
        bulk_kbps: u64,
        /// UDP request/response flows.
        #[arg(long, default_value_t = 4)]
        udp: u32,
        /// No ICMP echo.
        #[arg(long)]
        no_ping: bool,
        /// Seconds of traffic.
        #[arg(long, default_value = "10")]
        duration: String,
        /// Milliseconds between two messages of a connection.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// SIGKILL node NODE at SECONDS (repeatable).
        #[arg(long, value_name = "NODE@SECONDS")]
        kill: Vec<String>,
        /// SIGTERM (graceful leave) node NODE at SECONDS (repeatable).
        #[arg(long, value_name = "NODE@SECONDS")]
        stop: Vec<String>,
        /// Start node NODE again at SECONDS (repeatable).
        #[arg(long, value_name = "NODE@SECONDS")]
        join: Vec<String>,
        /// Ask the leader for a rebalance at SECONDS (repeatable).
        #[arg(long, value_name = "SECONDS")]
        rebalance: Vec<String>,
        /// The lab to expect: `none` our cluster, `kernel` the kernel baseline (`lab up
        /// --baseline kernel`); default whichever the lab of --prefix is.
        #[arg(long, value_parser = ["none", "kernel"])]
        baseline: Option<String>,
        /// Kernel baseline: a kill's failover (commit and bucket moves) starts this many ms
        /// after the node died; 0 (default) the instant it dies, 3000 models VRRP's usual
        /// detection.
        #[arg(long, value_name = "MS")]
        detect_ms: Option<u64>,
    },
}

fn lab(a: LabArgs) -> Result<(), String> {
    use host::lab::netns;
    netns::check_prefix(&a.prefix)?;
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(|| netns::default_dir(&a.prefix));
    let say = |text: String, json: serde_json::Value| {
        if a.json || a.pretty {
            host::out::line(host::ctl_view::json_text(&json, a.pretty));
        } else {
            host::out::line(text);
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
        // the kernel baseline's nodes are conntrackd instances and nftables sets, no clusterd
        LabOp::Kill { node } | LabOp::Stop { node } | LabOp::Start { node }
            if host::lab::kernel::is_kernel_lab(&dir) =>
        {
            use host::lab::run::{Backend as _, EventKind};
            let e = match a.op {
                LabOp::Kill { .. } => EventKind::Kill { node },
                LabOp::Stop { .. } => EventKind::Stop { node },
                _ => EventKind::Join { node },
            };
            let info = host::lab::run::load_lab(&dir, &a.prefix)?;
            let outcome = host::lab::kernel::KernelLab::new(info, Duration::ZERO)?.apply(&e)?;
            say(
                outcome.clone(),
                serde_json::json!({ "node": node, "event": e, "outcome": outcome }),
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
        LabOp::Run {
            connections,
            bulk,
            bulk_kbps,
            udp,
            no_ping,
            ref duration,
            interval_ms,
            ref kill,
            ref stop,
            ref join,
            ref rebalance,
            ref baseline,
            detect_ms,
        } => {
            use host::lab::run::{self as lr, EventKind};
            let mut events = Vec::new();
            for (flag, list) in [("kill", kill), ("stop", stop), ("join", join)] {
                for s in list {
                    let (node, at) = lr::parse_node_at(flag, s)?;
                    let kind = match flag {
                        "kill" => EventKind::Kill { node },
                        "stop" => EventKind::Stop { node },
                        _ => EventKind::Join { node },
                    };
                    events.push(lr::Event { at, kind });
                }
            }
            for s in rebalance {
                let at = lr::parse_seconds("rebalance", s)?;
                events.push(lr::Event {
                    at,
                    kind: EventKind::Rebalance,
                });
            }
            events.sort_by_key(|e| e.at);
            if interval_ms == 0 {
                return Err("--interval-ms 0: at least 1".into());
            }
            let o = lr::RunOptions {
                connections,
                bulk,
                bulk_rate: bulk_kbps * 1000,
                udp,
                ping: !no_ping,
                duration: lr::parse_seconds("duration", duration)?,
                interval: std::time::Duration::from_millis(interval_ms),
                events,
            };
            let mut b = run_backend(&a.prefix, &dir, baseline.as_deref(), detect_ms)?;
            let quiet = a.json;
            let report = lr::run(b.as_mut(), &o, &mut |line| {
                if !quiet {
                    eprintln!("{line}");
                }
            })?;
            say(
                lr::render(&report),
                serde_json::to_value(&report).unwrap_or_default(),
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

/// The lab `lab run` drives: the one of `prefix` in `dir`, ours or the kernel baseline (its
/// `kernel.json`), checked against `--baseline` when given.
fn run_backend(
    prefix: &str,
    dir: &std::path::Path,
    baseline: Option<&str>,
    detect_ms: Option<u64>,
) -> Result<Box<dyn host::lab::run::Backend>, String> {
    use host::lab::{kernel, run as lr};
    if let Some(ms) = detect_ms.filter(|&ms| ms > 60_000) {
        return Err(format!("--detect-ms {ms}: 0 to 60000 (3000 models VRRP)"));
    }
    let is_kernel = kernel::is_kernel_lab(dir);
    let info = lr::load_lab(dir, prefix).map_err(|e| match baseline {
        Some("kernel") => format!(
            "no kernel baseline lab with prefix {prefix} ({}): `clusterd lab up --baseline \
             kernel --prefix {prefix}` first",
            dir.display()
        ),
        _ => e,
    })?;
    match (baseline, is_kernel) {
        (Some("kernel"), false) => Err(format!(
            "--baseline kernel: the lab of prefix {prefix} is our cluster: `clusterd lab down \
             --prefix {prefix}`, then `clusterd lab up --baseline kernel --prefix {prefix}`"
        )),
        (Some("none"), true) => Err(format!(
            "--baseline none: the lab of prefix {prefix} is the kernel baseline: `clusterd lab \
             down --prefix {prefix}`, then `clusterd lab up --prefix {prefix}`"
        )),
        (_, true) => Ok(Box::new(kernel::KernelLab::new(
            info,
            Duration::from_millis(detect_ms.unwrap_or(0)),
        )?)),
        (_, false) if detect_ms.is_some() => Err(format!(
            "--detect-ms: the lab of prefix {prefix} is our cluster, which detects failures \
             itself (failure_ms in its config); the flag is for the kernel baseline"
        )),
        (_, false) => {
            let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
            Ok(Box::new(lr::Cluster::new(info, exe)))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Completions { shell } => {
            host::out::text(host::cli_docs::completions(Cli::command(), *shell));
            return ExitCode::SUCCESS;
        }
        Cmd::Man { dir } => {
            return match host::cli_docs::man_pages(Cli::command(), dir) {
                Ok(pages) => {
                    for p in pages {
                        host::out::line(p.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("clusterd: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
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
        Cmd::CheckConfig { file } => return check_config(&file),
        // answered above, before the runtime
        Cmd::Completions { .. } | Cmd::Man { .. } => Ok(()),
        Cmd::Run { config } => rt.block_on(host::daemon::node::run_node(&config)),
        Cmd::Keygen { identity: None } => host::sync::ClusterKey::generate()
            .map(|k| {
                host::out::line(&*Zeroizing::new(k.to_hex()));
            })
            .map_err(|e| e.to_string()),
        Cmd::Keygen {
            identity: Some(path),
        } => host::sync::NodeIdentity::write_new(&path)
            .map(|k| {
                host::out::line(k.to_hex());
            })
            .map_err(|e| e.to_string()),
        Cmd::Ctl {
            socket,
            json,
            pretty,
            cmd,
            args,
        } => {
            // `user-bind` is `user_bind` (no command has a hyphen on the wire)
            let cmd = cmd.replace('-', "_");
            let (json, pretty, args) = check_flags(&cmd, json, pretty, args);
            let format = host::ctl_view::Format::from_flags(json, pretty);
            let json_args = args.len() == 1 && args[0].trim_start().starts_with('{');
            if VIEWS.contains(&cmd.as_str()) && !json_args {
                rt.block_on(view(&socket, &cmd, &args, format))
            } else {
                let args = if args.is_empty() {
                    "{}".to_owned()
                } else {
                    args.join(" ")
                };
                rt.block_on(ctl(socket, cmd, Zeroizing::new(args), format))
            }
        }
        Cmd::Demo(args) => {
            return match rt.block_on(demo::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("clusterd demo: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
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

/// `ctl check` and the user commands also take their output flags after the command (`ctl
/// --socket S check --json`).
fn check_flags(
    cmd: &str,
    mut json: bool,
    mut pretty: bool,
    args: Vec<String>,
) -> (bool, bool, Vec<String>) {
    if !matches!(cmd, "check" | "users" | "user_bind" | "user_unbind") {
        return (json, pretty, args);
    }
    let mut rest = Vec::new();
    for a in args {
        match a.as_str() {
            "-j" | "--json" => json = true,
            "-p" | "--pretty" => pretty = true,
            _ => rest.push(a),
        }
    }
    (json, pretty, rest)
}

/// The `ctl` commands that take flags (the table views).
const VIEWS: [&str; 4] = ["dump", "count", "get", "events"];

/// `clusterd ctl --socket S dump|count|get|events ...`: the table views.
#[derive(Parser)]
#[command(name = "clusterd ctl --socket PATH")]
struct ViewCli {
    #[command(subcommand)]
    cmd: ViewCmd,
}

#[derive(Subcommand)]
enum ViewCmd {
    /// The entries of a table that pass the filters, streamed from the node (conntrack -L):
    /// a table, one JSON object a line with -j, a JSON array with -p.
    Dump {
        /// common: every entry the node holds (the cluster's); card: the node-specific
        /// table (its card and software overflow).
        #[arg(long, default_value = "common", value_parser = host::daemon::protocol::TableName::from_str)]
        table: host::daemon::protocol::TableName,
        #[command(flatten)]
        filter: host::filter::FilterArgs,
        /// At most N entries.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// How many entries of a table pass the filters (conntrack -C).
    Count {
        /// common or card.
        #[arg(long, default_value = "common", value_parser = host::daemon::protocol::TableName::from_str)]
        table: host::daemon::protocol::TableName,
        #[command(flatten)]
        filter: host::filter::FilterArgs,
    },
    /// The entry of one key (conntrack -G), written as dump prints it: `get tcp
    /// 198.18.0.1:1234 -> 198.18.1.1:80` (either direction; quoted or not). Exit status 1
    /// when there is none.
    Get {
        /// common or card.
        #[arg(long, default_value = "common", value_parser = host::daemon::protocol::TableName::from_str)]
        table: host::daemon::protocol::TableName,
        /// The key: PROTO SRC:SPORT -> DST:DPORT, icmp SRC -> DST id=N, esp SRC -> DST spi=0xN.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "KEY")]
        key: Vec<String>,
    },
    /// Follow the node's events as they happen (conntrack -E): entries created, updated,
    /// removed, moved (installed on or flushed from this node's card when an epoch is
    /// applied), and the epochs (identifiers gained and lost). One line each; -j one JSON
    /// object a line. A reader too slow gets a `lost N events` line. Ends on Ctrl-C or a
    /// closed pipe.
    Events {
        #[command(flatten)]
        filter: host::filter::FilterArgs,
    },
}

async fn view(
    socket: &std::path::Path,
    cmd: &str,
    args: &[String],
    format: host::ctl_view::Format,
) -> Result<(), String> {
    use host::ctl_view as v;
    let argv = std::iter::once("clusterd ctl".to_owned())
        .chain(std::iter::once(cmd.to_owned()))
        .chain(args.iter().cloned());
    let cli = ViewCli::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    let some = |f: host::filter::Filter| (!f.is_empty()).then_some(f);
    match cli.cmd {
        ViewCmd::Dump {
            table,
            filter,
            limit,
        } => v::dump_table(socket, table, some(filter.filter()), limit, format).await,
        ViewCmd::Count { table, filter } => {
            v::count_table(socket, table, some(filter.filter()), format).await
        }
        ViewCmd::Get { table, key } => {
            let key = key.join(" ");
            if let Err(e) = key.parse::<host::filter::ViewKey>() {
                eprintln!("clusterd: {e}");
                std::process::exit(2);
            }
            v::get_entry(socket, table, &key, format).await
        }
        ViewCmd::Events { filter } => {
            v::follow_events(socket, some(filter.filter()), format.is_json()).await
        }
    }
}

/// `clusterd ctl`: the command name and its JSON fields make one [`Request`] (checked here,
/// so a typo is refused before it reaches the node); the answer is printed as JSON.
async fn ctl(
    socket: PathBuf,
    cmd: String,
    args: Zeroizing<String>,
    format: host::ctl_view::Format,
) -> Result<(), String> {
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
                .map_err(|e| host::ctl_view::connect_error(&socket, &e))?,
            "the node refused the command",
        ),
        Err(refusal) => (
            Response::Error(refusal),
            "not a command the node accepts (not sent)",
        ),
    };
    host::out::line(ctl_text(&answer, format).trim_end());
    match &answer {
        Response::Check(c) => host::ctl_view::check_verdict(c),
        a if a.is_ok() => Ok(()),
        _ => Err(refused.to_string()),
    }
}

/// The answer of `clusterd ctl` as `format` asks: the tables of `status` and `allocation` for
/// people (refusals as `error: ...`), pretty JSON for the other answers, JSON with -j or -p.
fn ctl_text(answer: &Response, format: host::ctl_view::Format) -> String {
    use host::ctl_view::{self as view, Format};
    match (format, answer) {
        (Format::Json, a) => view::json_text(a, false),
        (Format::Pretty, a) => view::json_text(a, true),
        (Format::Table, Response::Status(v)) => view::status_table(v),
        (Format::Table, Response::Allocation(a)) => view::allocation_table(a),
        (Format::Table, Response::Check(c)) => view::check_table(c),
        (Format::Table, Response::Users(u)) => view::users_table(&u.users),
        (Format::Table, Response::UserBound(u)) => view::users_table(std::slice::from_ref(u)),
        (Format::Table, Response::Error(e)) => {
            let mut s = format!("error: {}", e.error);
            if let Some(l) = e.leader {
                s += &format!("\nleader: node {l} (send the command there)");
            }
            if let Some(o) = e.owner {
                s += &format!("\nowner: node {o} (send the command there)");
            }
            if let Some(b) = &e.backend {
                s += &format!("\ncard backend: {b}");
            }
            if let Some(c) = &e.commands {
                s += &format!("\ncommands: {}", c.join(", "));
            }
            s
        }
        (Format::Table, a) => view::json_text(a, true),
    }
}

/// `clusterd check-config FILE`: parses the file as `run` would (the key file read and
/// checked), starts nothing.
fn check_config(file: &std::path::Path) -> ExitCode {
    match host::daemon::config::Config::load(file) {
        Ok(c) => {
            host::out::line(format_args!("{}: ok: {}", file.display(), c.summary()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clusterd: {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}
