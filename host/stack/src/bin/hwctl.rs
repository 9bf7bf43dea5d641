//! hwctl: look inside a state-offload card, and run ESP captures through
//! its crypto engine.
//!
//! ```text
//! hwctl --device SPEC [-j|-p] [--seed-entries N] status|regs|sas
//! hwctl --device SPEC [-j|-p] [--seed-entries N] dump|count [FILTERS]
//! hwctl --device SPEC [-j|-p] [--seed-entries N] get 'tcp 198.18.0.1:1234 -> 198.18.1.1:80'
//! hwctl --device SPEC [-j] events [FILTERS] [--interval-ms MS] [--polls N]
//! FILTERS: --src ADDR[/PREFIX] --dst ADDR[/PREFIX] --proto P --sport N --dport N --port N
//!          --state established|new|... --did N      (names: docs/vocabulary.md)
//! hwctl --device SPEC [-j|-p] esp decrypt|encrypt --sa SA [--sa SA ...] --in FILE --out FILE.pcap
//! hwctl --device SPEC [-j|-p] forward --in FILE --out FILE.pcap [--owns LIST] [--rules FILE]
//!       [--identifiers N] [--key @FILE|-] [--inside CIDR]...
//! ```
//!
//! Tables for people, stable JSON for scripts: `-j` (`--json`) compact, `-p` (`--pretty`)
//! pretty. Exit status: 0 on success, 1 when the device, the daemon, the driver or a file
//! fails, 2 for bad arguments (including bad `--sa` strings).

// The submodules live in `hwctl/` (not beside this file, where cargo would
// take them for binaries of their own).
#[path = "hwctl/capture.rs"]
mod capture;
#[path = "hwctl/esp.rs"]
mod esp;
#[path = "hwctl/forward.rs"]
mod forward;
#[path = "hwctl/remote.rs"]
mod remote;
#[path = "hwctl/sa_spec.rs"]
mod sa_spec;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use driver::sample::sample_entry;
use driver::{CamCaps, Card, Counters, DistributionId, DumpEntry, ResultWord};
use hal::RegIo;
use host::device::DeviceSpec;
use host::regs_report::{regs_report, BlockOut, RegsBlockOut};
use serde::Serialize;
use zeroize::Zeroize as _;

const AFTER_HELP: &str = "\
DEVICE SPEC:
  model               the reference model (1024 entries); starts empty
  model:depth=N       the reference model with N entries
  verilator           the RTL under Verilator (build with --features verilator)
  software            no card: the ring ESP path (esp commands only)
  vfio:BDF            a real card bound to vfio-pci, e.g. vfio:0000:03:00.0
  pci:PATH            a real card's BAR through its sysfs resource file, e.g.
                      pci:/sys/bus/pci/devices/0000:03:00.0/resource0
  unix:PATH           a running clusterd's control socket: status, dump, count,
                      get, events, regs and sas of that node's card, whatever its
                      backend

A simulated card is created when hwctl opens it and starts empty; use
--seed-entries N to fill it with N generated sample entries (TCP/UDP/ICMP/ESP/
ISAKMP over IPv4 and IPv6, some with wildcards; entry i has distribution
identifier i mod 256) and to look every third one up, so that dump shows hit
bits.
A real card is attached without a reset: looking never changes its entries.

ESP:
  --sa spi=0x87654321,dst=IP,alg=aes-gcm-128|aes-gcm-256,key=@FILE|-,salt=HEX
       [,icv=8|12|16][,esn][,mode=tunnel|transport][,seq=N][,src=IP]
  (alg also aes-gmac-128|aes-gmac-256; seq=N: sequence number of the SA's
  first packet, default 1; src=IP: outer source for tunnel-mode encrypt.)
  Keys never go on the command line: key=@FILE reads the key (hex) from FILE,
  key=- from a line of standard input; --sa @FILE reads SA strings (with
  key=HEX) from FILE, one per line ('#' comments). Key files must not be
  readable by group or others (chmod 600). Each SA needs its own key: two --sa
  with one key are refused. Keys are never printed.
  Input: pcap or pcapng; Ethernet, raw IP, null/loopback or Linux cooked;
  ESP in IP, or in UDP on port 4500 (NAT traversal, RFC 3948).
  Output: pcap, link type raw IP (101): decrypt writes the inner packet
  (tunnel) or the rebuilt IP packet (transport), encrypt the ESP packets.
  One verdict line per packet: ok, auth-failed, replay, unknown-spi,
  malformed (decrypt); ok, no-sa, unsupported (encrypt). Exit 0 when the
  file was processed, whatever the verdicts.

FILTERS (dump, count, events) and KEYS (get): docs/vocabulary.md
  --src ADDR[/PREFIX] --dst ADDR[/PREFIX] (IPv4 or IPv6), --proto tcp|udp|icmp|
  icmp6|esp|N, --sport N, --dport N, --port N (either side), --state KIND (card
  entries: established when the result has the est flag, else new), --did N.
  Keys are written as dump prints them; quote them (-> is a shell redirect).

EXAMPLES:
  hwctl --device model status
  hwctl --device model --seed-entries 40 dump --did 7
  hwctl --device model --seed-entries 40 dump --proto tcp --src 10.0.0.0/8
  hwctl --device model --seed-entries 40 count --state established
  hwctl --device model --seed-entries 40 get 'esp -> 12.0.0.0 spi=0x10000000'
  hwctl --device model --json regs
  hwctl --device pci:/sys/bus/pci/devices/0000:03:00.0/resource0 status
  hwctl --device unix:/run/clusterd/node1.sock sas
  hwctl --device software esp decrypt --sa @tunnel.sa --in esp.pcapng --out plain.pcap";

/// Look inside a state-offload card (its register blocks, CAM entries and
/// raw registers, locally or through a running clusterd), and run ESP
/// captures through its crypto engine or the software path.
#[derive(Parser, Debug)]
#[command(name = "hwctl", version, after_help = AFTER_HELP)]
struct Cli {
    /// The card to open (see DEVICE SPEC below); needed by every command but completions and
    /// man.
    #[arg(long, short = 'd', value_name = "SPEC")]
    device: Option<DeviceSpec>,

    /// Print compact JSON instead of tables (forward: one object a line).
    #[arg(short = 'j', long, global = true)]
    json: bool,

    /// Print pretty JSON instead of tables.
    #[arg(short = 'p', long, global = true)]
    pretty: bool,

    /// Testing aid: before the command, insert N generated sample entries
    /// through the driver (and look every third one up). Only for simulated
    /// cards.
    #[arg(long, value_name = "N", global = true, default_value_t = 0)]
    seed_entries: u32,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Blocks (type, version, offset), CAM capabilities, occupancy, counters.
    Status,
    /// Every valid CAM entry that passes the filters: slot, identifier, hit bit, state kind,
    /// result, key (`*` = wildcard).
    Dump {
        #[command(flatten)]
        filter: host::filter::FilterArgs,
    },
    /// How many valid CAM entries pass the filters (conntrack -C): the number alone, or
    /// {"count":N,...} with -j.
    Count {
        #[command(flatten)]
        filter: host::filter::FilterArgs,
    },
    /// The CAM entry of one key, written as dump prints it, e.g.
    /// `hwctl get tcp 198.18.0.1:1234 -> 198.18.1.1:80` (quote it or not; `*` for a
    /// wildcard, zone=N to name a zone). Exit status 1 when no entry has it.
    Get {
        /// The key: PROTO SRC:SPORT -> DST:DPORT, icmp SRC -> DST id=N, esp -> DST spi=0xN,
        /// ...
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "KEY")]
        key: Vec<String>,
    },
    /// Follow CAM changes (entries created, removed, changed), one line each (-j: one JSON
    /// object a line). The card reports no changes itself: on a local card hwctl polls the
    /// CAM every --interval-ms and prints the differences (a simulated card opened by hwctl
    /// changes only by hwctl, so it shows nothing); on unix:PATH the daemon reports them as
    /// they happen (`clusterd ctl events`). Ends on Ctrl-C or a closed pipe.
    Events {
        #[command(flatten)]
        filter: host::filter::FilterArgs,
        /// Milliseconds between two polls of a local card.
        #[arg(long, value_name = "MS", default_value_t = 1000,
              value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
        interval_ms: u64,
        /// Stop after this many polls of a local card (0: never).
        #[arg(long, value_name = "N", default_value_t = 0)]
        polls: u64,
    },
    /// Every register of every block found by walking the block chain.
    Regs,
    /// SA state of a running node (unix:PATH): SPI, identifier, destination,
    /// sequence number, replay window; never keys.
    Sas,
    /// Run a capture's packets through the ESP engine.
    Esp {
        #[command(subcommand)]
        op: EspCmd,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell), e.g.
    /// `hwctl completions bash > /etc/bash_completion.d/hwctl`.
    Completions {
        /// The shell.
        shell: host::cli_docs::Shell,
    },
    /// Write the man pages (section 1) into DIR, one per command and subcommand: hwctl.1,
    /// hwctl-status.1, hwctl-esp-decrypt.1, ... (DIR is created when missing).
    Man {
        /// The directory, e.g. /usr/local/share/man/man1.
        dir: std::path::PathBuf,
    },
    /// Run a capture through the card's packet path as one node: the card forwards what its
    /// entries allow, the node's slow path handles what it punts; the frames sent out are
    /// written to a pcap file, with one verdict a frame and a summary.
    Forward(ForwardArgs),
}

#[derive(clap::Args, Debug)]
struct ForwardArgs {
    /// Input capture (pcap or pcapng; Ethernet, raw IP, loopback or Linux cooked).
    #[arg(long = "in", value_name = "FILE")]
    input: std::path::PathBuf,
    /// Output capture (pcap, Ethernet): the frames the card (or the host) sent out.
    #[arg(long = "out", value_name = "FILE")]
    output: std::path::PathBuf,
    /// Identifiers this node owns: all, none, or a list such as 0-127,200 (default all).
    #[arg(long, value_name = "LIST", default_value = "all")]
    owns: String,
    /// Rule set file for first packets (docs/rules.md; default: allow every valid first
    /// packet).
    #[arg(long, value_name = "FILE")]
    rules: Option<std::path::PathBuf>,
    /// Number of distribution identifiers (a power of two, up to 4096).
    #[arg(long, value_name = "N", default_value_t = 256)]
    identifiers: u32,
    /// The cluster key (64 hex digits, as clusterd's key_file): @FILE or - (a line of
    /// standard input), so that identifiers are the cluster's. Default: a fixed, public
    /// distribution key.
    #[arg(long, value_name = "@FILE|-")]
    key: Option<String>,
    /// Frames from addresses in this prefix enter port 1 (inside). Repeatable. Default: the
    /// side that sent a flow's first frame is outside.
    #[arg(long, value_name = "CIDR")]
    inside: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum EspCmd {
    /// ESP packets in, plaintext IP packets out (inbound SAs).
    Decrypt(EspArgs),
    /// Plaintext IP packets in, ESP packets out (outbound SAs).
    Encrypt(EspArgs),
}

#[derive(clap::Args, Debug)]
struct EspArgs {
    /// An SA (see ESP below), or @FILE with one SA per line. Repeatable.
    #[arg(long = "sa", value_name = "SA", required = true)]
    sa: Vec<String>,
    /// Input capture (pcap or pcapng).
    #[arg(long = "in", value_name = "FILE")]
    input: std::path::PathBuf,
    /// Output capture (pcap, raw IP).
    #[arg(long = "out", value_name = "FILE")]
    output: std::path::PathBuf,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if cli.pretty {
        cli.json = true;
        PRETTY.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    match &cli.command {
        Command::Completions { shell } => {
            return print(host::cli_docs::completions(Cli::command(), *shell));
        }
        Command::Man { dir } => {
            return match host::cli_docs::man_pages(Cli::command(), dir) {
                Ok(pages) => print(
                    pages
                        .iter()
                        .map(|p| format!("{}\n", p.display()))
                        .collect::<String>(),
                ),
                Err(e) => {
                    eprintln!("hwctl: error: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    let Some(device) = cli.device.clone() else {
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--device SPEC is needed by this command (e.g. --device model; see DEVICE SPEC \
                 in --help)",
            )
            .exit();
    };
    match run(&mut cli, &device) {
        Ok(out) => print(out),
        Err(e) => {
            eprintln!("hwctl: error: {e}");
            // Bad --sa strings are bad arguments.
            let usage = e.downcast_ref::<sa_spec::SaError>().is_some()
                || e.downcast_ref::<forward::UsageError>().is_some();
            if let Some(NotFound(_)) = e.downcast_ref::<NotFound>() {
                return ExitCode::from(1);
            }
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Writes the command's output; a closed pipe (`hwctl ... | head`) is not an error worth a
/// panic: exit status 0.
fn print(out: String) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hwctl: error: writing output: {e}");
            ExitCode::from(1)
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(cli: &mut Cli, device: &DeviceSpec) -> Res<String> {
    if let Command::Forward(a) = &mut cli.command {
        if cli.seed_entries > 0 {
            return Err("--seed-entries does not apply to forward".into());
        }
        return run_forward(device, a, cli.json);
    }
    if let Command::Esp { op } = &mut cli.command {
        let (op, args) = match op {
            EspCmd::Decrypt(a) => (esp::Op::Decrypt, a),
            EspCmd::Encrypt(a) => (esp::Op::Encrypt, a),
        };
        let sas = parse_sas(&mut args.sa);
        if cli.seed_entries > 0 {
            return Err("--seed-entries does not apply to esp".into());
        }
        let report = esp::run(op, device, &sas?, &args.input, &args.output)?;
        return if cli.json {
            json(&report)
        } else {
            Ok(report.text())
        };
    }
    if let DeviceSpec::Unix { path } = device {
        if cli.seed_entries > 0 {
            return Err(format!(
                "--seed-entries writes to the card; refusing on the running node {}",
                device
            )
            .into());
        }
        let mut r = remote::Remote::connect(path)?;
        return Ok(match &cli.command {
            Command::Status => remote::status(&mut r, cli.json)?,
            Command::Dump { filter } => remote::dump(&mut r, &filter.filter(), cli.json)?,
            Command::Count { filter } => remote::count(&mut r, &filter.filter(), cli.json)?,
            Command::Get { key } => remote::get(&mut r, &key_arg(key)?, cli.json)?,
            Command::Events { filter, .. } => {
                return Ok(remote::events(path, &filter.filter(), cli.json).map(|()| String::new())?)
            }
            Command::Sas => remote::sas(&mut r, cli.json)?,
            Command::Regs => render_regs(&remote::regs(&mut r)?, cli.json)?,
            Command::Esp { .. }
            | Command::Forward(_)
            | Command::Completions { .. }
            | Command::Man { .. } => return Err(dispatched_twice()),
        });
    }
    if matches!(cli.command, Command::Sas) {
        return Err(format!(
            "device {}: sas lists the SA state of a running node; use --device unix:PATH \
             (its control socket)",
            device
        )
        .into());
    }
    if cli.seed_entries > 0 && !device.is_simulated() {
        return Err(format!(
            "--seed-entries writes to the card; refusing on the real device {}",
            device
        )
        .into());
    }
    let mut card = device.open_card()?;
    let mut go = || -> Res<String> {
        if cli.seed_entries > 0 {
            seed(&mut card, cli.seed_entries)?;
        }
        match &cli.command {
            Command::Status => status(&mut card, cli.json),
            Command::Dump { filter } => dump(&mut card, &filter.filter(), cli.json),
            Command::Count { filter } => count(&mut card, &filter.filter(), cli.json),
            Command::Get { key } => get(&mut card, &key_arg(key)?, cli.json),
            Command::Events {
                filter,
                interval_ms,
                polls,
            } => events(&mut card, &filter.filter(), *interval_ms, *polls, cli.json),
            Command::Regs => regs(&mut card, cli.json),
            Command::Sas
            | Command::Esp { .. }
            | Command::Forward(_)
            | Command::Completions { .. }
            | Command::Man { .. } => Err(dispatched_twice()),
        }
    };
    let r = go();
    // A card that fails mid-command (e.g. gone from the bus) is named, with
    // the fix.
    r.map_err(|e| match e.downcast::<driver::DriverError>() {
        Ok(d) => Box::new(device.driver_error(*d)) as Box<dyn std::error::Error>,
        Err(e) => e,
    })
}

/// `forward`: reads the options' files (the key wiped after use) and runs the capture.
fn run_forward(device: &DeviceSpec, a: &mut ForwardArgs, as_json: bool) -> Res<String> {
    if host::core::IdCount::new(a.identifiers).is_err() {
        return Err(Box::new(forward::UsageError(format!(
            "--identifiers {}: a power of two from 1 to 4096",
            a.identifiers
        ))));
    }
    let owns = forward::parse_owns(&a.owns, a.identifiers)?;
    let rules = match &a.rules {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("--rules {}: cannot read: {e}", p.display()))?,
        ),
        None => None,
    };
    let inside = a
        .inside
        .iter()
        .map(|c| {
            host::core::rules::Cidr::parse(c)
                .map_err(|e| forward::UsageError(format!("--inside {c:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let secret = match a.key.take() {
        Some(mut arg) => {
            let mut stdin = std::io::stdin().lock();
            let text = host::secret_arg::read(&arg, "--key", &mut stdin);
            arg.zeroize();
            let key = host::sync::key::ClusterKey::from_hex(text?.trim())
                .map_err(|e| format!("--key: {e}"))?;
            Some(host::core::ClusterSecret::new(
                *key.derive16(host::daemon::DISTRIBUTION_LABEL),
            ))
        }
        None => None,
    };
    forward::run(
        device,
        &forward::Options {
            input: &a.input,
            output: &a.output,
            owns,
            rules,
            identifiers: a.identifiers,
            secret,
            inside,
            json: as_json,
        },
    )
}

/// Commands handled before a card is opened land here only by a bug in
/// `run`; say so instead of panicking.
fn dispatched_twice() -> Box<dyn std::error::Error> {
    "internal: command dispatched to the wrong handler (a bug in hwctl)".into()
}

/// Parses the `--sa` arguments and wipes the argument strings. An SA string in
/// argv names its key (`key=@FILE`, `key=-` for a line of standard input) and
/// never holds it; `--sa @FILE` reads whole SA strings from FILE. Key files must
/// not be readable by group or others.
fn parse_sas(args: &mut [String]) -> Res<Vec<sa_spec::SaSpec>> {
    let mut out = Vec::new();
    let mut result = Ok(());
    let mut stdin = std::io::stdin().lock();
    for a in args.iter() {
        if result.is_err() {
            break;
        }
        if let Some(file) = a.strip_prefix('@') {
            let text = match host::secret_arg::read_file(std::path::Path::new(file), "--sa") {
                Ok(t) => t,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match sa_spec::parse(line) {
                    Ok(s) => out.push(s),
                    Err(mut e) => {
                        e.field = format!("{} (--sa @{file} line {})", e.field, n + 1);
                        result = Err(Box::new(e) as Box<dyn std::error::Error>);
                        break;
                    }
                }
            }
        } else {
            match inline_key(a, &mut stdin).and_then(|line| sa_spec::parse(&line)) {
                Ok(s) => out.push(s),
                Err(e) => result = Err(Box::new(e)),
            }
        }
    }
    for a in args.iter_mut() {
        a.zeroize();
    }
    result.map(|()| out)
}

/// An `--sa` string from argv with the key its `key=@FILE` or `key=-` names read
/// in (a literal key is refused), in a zeroizing buffer.
fn inline_key(
    a: &str,
    stdin: &mut dyn std::io::BufRead,
) -> Result<zeroize::Zeroizing<String>, sa_spec::SaError> {
    let mut line = zeroize::Zeroizing::new(String::with_capacity(a.len() + 160));
    for (i, part) in a.split(',').enumerate() {
        if i > 0 {
            line.push(',');
        }
        match part.trim().strip_prefix("key=") {
            Some(v) => {
                let key = host::secret_arg::read(v.trim(), "key", stdin).map_err(|reason| {
                    sa_spec::SaError {
                        field: "key".into(),
                        reason: format!(
                            "{reason} (or put the whole SA string in a file: --sa @FILE)"
                        ),
                    }
                })?;
                line.push_str("key=");
                line.push_str(&key);
            }
            None => line.push_str(part),
        }
    }
    Ok(line)
}

fn seed<R: RegIo>(card: &mut Card<R>, n: u32) -> Res<()> {
    if n > card.depth() {
        return Err(format!(
            "--seed-entries {n} is more than the CAM holds ({} entries)",
            card.depth()
        )
        .into());
    }
    for i in 0..n {
        card.insert(&seed_entry(i))?;
    }
    for i in (0..n).step_by(3) {
        card.search(&seed_entry(i).key)?;
    }
    Ok(())
}

/// The `i`-th entry of `--seed-entries`: the driver's sample entry, with identifier i mod 256
/// (the sample's own identifiers are a hash of i spread over 256 values, so 20 entries hit
/// only 20 of them and `dump --did 7` found none before entry 337; the cluster's default is
/// 256 identifiers, and entries 7, 263, ... now have identifier 7).
fn seed_entry(i: u32) -> driver::CamEntry {
    let mut e = sample_entry(i);
    e.did = DistributionId((i % 256) as u16);
    e
}

/// `-p`: JSON documents pretty rather than compact.
static PRETTY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `v` as the JSON of `-j` (compact, one line) or `-p` (pretty), with a newline.
fn json<T: Serialize>(v: &T) -> Res<String> {
    Ok(json_text(v)? + "\n")
}

/// `v` as JSON, compact or pretty (`-p`), without a newline.
fn json_text<T: Serialize + ?Sized>(v: &T) -> serde_json::Result<String> {
    if PRETTY.load(std::sync::atomic::Ordering::Relaxed) {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
}

// ---- status -------------------------------------------------------------

/// `status --json` output. Field names are a stable interface.
#[derive(Serialize)]
struct StatusOut<'a> {
    device: &'a str,
    build_id: String,
    bar_bytes: u32,
    blocks: Vec<BlockOut>,
    cam: CamCaps,
    occupancy: u32,
    counters: Counters,
    /// The packet port's counters (`null`: the card has no packet port).
    packet_port: Option<driver::port::PortCounters>,
}

fn status<R: RegIo>(card: &mut Card<R>, as_json: bool) -> Res<String> {
    let counters = card.counters()?;
    let packet_port = if card.has_packet_port() {
        Some(card.port()?.counters()?)
    } else {
        None
    };
    let info = card.info().clone();
    let out = StatusOut {
        device: &info.backend,
        build_id: format!("0x{:08x}", info.build_id),
        bar_bytes: info.bar_bytes,
        blocks: info.blocks.iter().map(BlockOut::from).collect(),
        cam: info.cam,
        occupancy: counters.occupancy,
        counters,
        packet_port,
    };
    if as_json {
        return json(&out);
    }
    let mut s = String::new();
    writeln!(s, "device     {}", out.device)?;
    writeln!(s, "build id   {}", out.build_id)?;
    writeln!(s, "BAR        {} bytes", out.bar_bytes)?;
    writeln!(s)?;
    s += &table(
        &["BLOCK", "TYPE", "VERSION", "OFFSET", "NEXT"],
        &out.blocks,
        |b| {
            vec![
                b.name.clone(),
                b.type_id.clone(),
                b.version.clone(),
                b.offset.clone(),
                b.next.clone(),
            ]
        },
    );
    writeln!(s)?;
    let c = &out.cam;
    let depth = c.depth.max(1);
    let pct = f64::from(out.occupancy) * 100.0 / f64::from(depth);
    let kv = [
        ("CAM depth", c.depth.to_string()),
        ("key bits", c.key_bits.to_string()),
        ("result bits", c.result_bits.to_string()),
        ("did bits", c.did_bits.to_string()),
        ("lookup latency", format!("{} clocks", c.lookup_latency)),
        (
            "occupancy",
            format!("{} / {} ({pct:.1}%)", out.occupancy, c.depth),
        ),
        ("commands", out.counters.cmd_count.to_string()),
        ("command errors", out.counters.err_count.to_string()),
        ("dp lookups", out.counters.dp_lookups.to_string()),
        ("dp hits", out.counters.dp_hits.to_string()),
    ];
    for (k, v) in kv {
        writeln!(s, "{k:<16} {v}")?;
    }
    if let Some(p) = &out.packet_port {
        s += &port_lines(p);
    }
    Ok(s)
}

/// The packet port's counters as `status` lines.
fn port_lines(p: &driver::port::PortCounters) -> String {
    let mut s = String::new();
    let reasons: Vec<String> = p.reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let kv = [
        ("port frames in", p.rx_frames.to_string()),
        ("port forwarded", format!("{} (by the card)", p.forwarded)),
        ("port punted", format!("{} (to the host)", p.punted)),
        ("port dropped", p.dropped.to_string()),
        ("port frames out", p.tx_frames.to_string()),
        ("port host sent", p.host_sent.to_string()),
        ("port queued", p.queued.to_string()),
        (
            "port reasons",
            if reasons.is_empty() {
                "-".to_owned()
            } else {
                reasons.join(", ")
            },
        ),
    ];
    for (k, v) in kv {
        let _ = writeln!(s, "{k:<16} {v}");
    }
    s
}

// ---- dump ---------------------------------------------------------------

/// One `dump --json` element. Field names are a stable interface.
#[derive(Serialize)]
struct EntryOut {
    slot: u32,
    did: u16,
    hit: bool,
    /// The state kind: `established` (the result's `est` flag) or `new`.
    state: &'static str,
    /// The decoded key (`null` fields and `/0` prefixes are wildcards), or
    /// `null` when the bits are not a typed key (then see `key_error`).
    key: Option<driver::CamKey>,
    key_text: String,
    key_error: Option<String>,
    result: ResultWord,
    result_text: String,
    result_raw: String,
    key_words: Vec<String>,
    mask_words: Vec<String>,
}

impl From<&DumpEntry> for EntryOut {
    fn from(e: &DumpEntry) -> Self {
        let hex = |w: &[u32]| w.iter().map(|x| format!("0x{x:08x}")).collect();
        Self {
            slot: e.index.0,
            did: e.did.0,
            hit: e.hit,
            state: host::filter::cam_state(&e.result),
            key: e.key,
            key_text: key_text(e),
            key_error: e.key_error.as_ref().map(ToString::to_string),
            result: e.result,
            result_text: e.result.to_string(),
            result_raw: format!("0x{:08x}", e.result_raw),
            key_words: hex(&e.bits.key),
            mask_words: hex(&e.bits.mask),
        }
    }
}

/// A key as every view prints it (`host::filter::ViewKey`), or its raw bits.
fn key_text(e: &DumpEntry) -> String {
    match &e.key {
        Some(k) => host::filter::ViewKey::of_cam(k).to_string(),
        None => {
            let w = |v: &[u32]| {
                v.iter()
                    .rev()
                    .map(|x| format!("{x:08x}"))
                    .collect::<String>()
            };
            format!("raw key={} mask={}", w(&e.bits.key), w(&e.bits.mask))
        }
    }
}

/// What a filter sees of a card entry (`None`: a key that does not decode, which only
/// a filter without key fields passes).
fn cam_view(e: &DumpEntry) -> Option<host::filter::EntryView> {
    Some(host::filter::EntryView {
        did: e.did.0,
        state: host::filter::cam_state(&e.result),
        key: host::filter::ViewKey::of_cam(e.key.as_ref()?),
    })
}

/// Whether a card entry passes `f`.
fn passes(f: &host::filter::Filter, e: &DumpEntry) -> bool {
    match cam_view(e) {
        Some(v) => f.matches(&v),
        None => {
            let only = host::filter::Filter {
                did: f.did,
                state: f.state,
                ..Default::default()
            };
            *f == only
                && f.did.is_none_or(|d| d == e.did.0)
                && f.state
                    .is_none_or(|s| s == host::filter::cam_state(&e.result))
        }
    }
}

/// The valid entries that pass `f` (the card is asked for one identifier's when the
/// filter names one).
fn filtered<R: RegIo>(card: &mut Card<R>, f: &host::filter::Filter) -> Res<Vec<DumpEntry>> {
    let mut entries = card.dump(f.did.map(DistributionId))?;
    entries.retain(|e| passes(f, e));
    Ok(entries)
}

/// `the filter` words for the summary line: ` with --proto tcp --did 7`.
fn with_filter(f: &host::filter::Filter) -> String {
    if f.is_empty() {
        String::new()
    } else {
        format!(" with {}", f.describe())
    }
}

fn dump<R: RegIo>(card: &mut Card<R>, f: &host::filter::Filter, as_json: bool) -> Res<String> {
    let entries = filtered(card, f)?;
    let out: Vec<EntryOut> = entries.iter().map(EntryOut::from).collect();
    if as_json {
        return json(&out);
    }
    let mut s = entry_table(&out);
    let noun = if out.len() == 1 { "entry" } else { "entries" };
    writeln!(s, "{} {noun}{}", out.len(), with_filter(f))?;
    Ok(s)
}

fn entry_table(out: &[EntryOut]) -> String {
    table(
        &[
            "SLOT",
            "DID",
            "HIT",
            "STATE",
            "RESULT",
            "KEY (* = wildcard)",
        ],
        out,
        |e| {
            vec![
                e.slot.to_string(),
                e.did.to_string(),
                if e.hit { "yes" } else { "-" }.to_owned(),
                e.state.to_owned(),
                e.result_text.clone(),
                e.key_text.clone(),
            ]
        },
    )
}

/// `count --json`.
#[derive(Serialize)]
struct CountOut {
    count: usize,
    /// Valid entries on the card.
    len: usize,
    /// The filter as flags (empty: none).
    filter: String,
}

fn count<R: RegIo>(card: &mut Card<R>, f: &host::filter::Filter, as_json: bool) -> Res<String> {
    let len = card.dump(None)?.len();
    let n = filtered(card, f)?.len();
    if as_json {
        return json(&CountOut {
            count: n,
            len,
            filter: f.describe(),
        });
    }
    Ok(format!("{n}\n"))
}

/// `get` found no entry: exit status 1 with this message.
#[derive(Debug)]
pub(crate) struct NotFound(pub(crate) String);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotFound {}

/// The words of `get KEY...` as one key (a bad key is a usage error: exit status 2).
fn key_arg(words: &[String]) -> Res<host::filter::ViewKey> {
    let text = words.join(" ");
    text.parse()
        .map_err(|e: String| Box::new(forward::UsageError(e)) as Box<dyn std::error::Error>)
}

fn get<R: RegIo>(card: &mut Card<R>, key: &host::filter::ViewKey, as_json: bool) -> Res<String> {
    let entries = card.dump(None)?;
    let found: Vec<EntryOut> = entries
        .iter()
        .filter(|e| {
            e.key
                .as_ref()
                .is_some_and(|k| key.names(&host::filter::ViewKey::of_cam(k)))
        })
        .map(EntryOut::from)
        .collect();
    if found.is_empty() {
        return Err(Box::new(NotFound(format!(
            "no entry {key} on the card ({} entries; `hwctl dump` lists them, keys as get \
             takes them)",
            entries.len()
        ))));
    }
    Ok(found_entries(&found, as_json, entry_table)?)
}

/// What `get` prints of the entries it found: with `--json` one JSON object for one entry and
/// an array for more, else the table `table` makes of them.
fn found_entries<T: Serialize>(
    found: &[T],
    as_json: bool,
    table: impl FnOnce(&[T]) -> String,
) -> serde_json::Result<String> {
    if !as_json {
        return Ok(table(found));
    }
    let j = if found.len() == 1 {
        json_text(&found[0])
    } else {
        json_text(found)
    };
    j.map(|j| j + "\n")
}

/// One `events` line of a local card, -j.
#[derive(Serialize)]
struct CamEvent<'a> {
    event: &'static str,
    unix_ms: u64,
    #[serde(flatten)]
    entry: &'a EntryOut,
}

/// `events` on a local card: polls the CAM and prints what changed between two polls.
fn events<R: RegIo>(
    card: &mut Card<R>,
    f: &host::filter::Filter,
    interval_ms: u64,
    polls: u64,
    as_json: bool,
) -> Res<String> {
    use std::collections::BTreeMap;
    let snapshot = |card: &mut Card<R>| -> Res<BTreeMap<u32, (DumpEntry, EntryOut)>> {
        Ok(filtered(card, f)?
            .into_iter()
            .map(|e| {
                let o = EntryOut::from(&e);
                (e.index.0, (e, o))
            })
            .collect())
    };
    let mut last = snapshot(card)?;
    let mut n = 1;
    while polls == 0 || n < polls {
        std::thread::sleep(std::time::Duration::from_millis(interval_ms));
        n += 1;
        let now = snapshot(card)?;
        let mut lines = Vec::new();
        for (slot, (e, o)) in &now {
            match last.get(slot) {
                None => lines.push(("created", o)),
                Some((old, _)) if old.key != e.key || old.bits != e.bits => {
                    lines.push(("created", o))
                }
                Some((old, _)) if old.result != e.result || old.did != e.did => {
                    lines.push(("updated", o))
                }
                _ => {}
            }
        }
        for (slot, (_, o)) in &last {
            let replaced = now
                .get(slot)
                .is_some_and(|(e, _)| e.key != last[slot].0.key || e.bits != last[slot].0.bits);
            if !now.contains_key(slot) || replaced {
                lines.push(("removed", o));
            }
        }
        let ms = host::daemon::node::unix_ms();
        for (event, o) in lines {
            let text = if as_json {
                json_text(&CamEvent {
                    event,
                    unix_ms: ms,
                    entry: o,
                })?
            } else {
                format!(
                    "{event} slot={} did={} state={} {} ({})",
                    o.slot, o.did, o.state, o.key_text, o.result_text
                )
            };
            if !host::out::line(text) {
                return Ok(String::new());
            }
        }
        last = now;
    }
    Ok(String::new())
}

// ---- regs ---------------------------------------------------------------

fn regs<R: RegIo>(card: &mut Card<R>, as_json: bool) -> Res<String> {
    let out = regs_report(&card.read_all_regs()?);
    render_regs(&out, as_json)
}

fn render_regs(out: &[RegsBlockOut], as_json: bool) -> Res<String> {
    if as_json {
        return json(&out);
    }
    let mut s = String::new();
    for b in out {
        let bo = &b.block;
        writeln!(
            s,
            "{} block at {} (type {}, version {}, next {})",
            bo.name, bo.offset, bo.type_id, bo.version, bo.next
        )?;
        s += &table(
            &["OFFSET", "REGISTER", "ACC", "VALUE", "DESCRIPTION"],
            &b.regs,
            |r| {
                vec![
                    r.offset.clone(),
                    r.name.clone(),
                    r.access.clone(),
                    r.value.clone(),
                    r.doc.clone(),
                ]
            },
        );
        writeln!(s)?;
    }
    Ok(s)
}

// ---- tables -------------------------------------------------------------

/// A table of `items`, one row each (`row` gives its cells): left-aligned columns under
/// `head`, two spaces apart; the last column is not padded.
fn table<T>(head: &[&str], items: &[T], row: impl Fn(&T) -> Vec<String>) -> String {
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 < width.len() {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            } else {
                l.push_str(c);
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut s = line(&mut head.iter().copied());
    for r in &rows {
        s += &line(&mut r.iter().map(String::as_str));
    }
    s
}
