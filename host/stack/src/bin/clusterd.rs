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
