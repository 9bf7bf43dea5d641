//! hwctl: look inside a state-offload card.
//!
//! `hwctl --device SPEC [--json] [--seed-entries N] status|dump [--did N]|regs`
//!
//! Tables for people, stable JSON (`--json`) for scripts. Exit status: 0 on
//! success, 1 when the device or the driver fails, 2 for bad arguments.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use driver::sample::sample_entry;
use driver::{BlockInfo, CamCaps, Card, Counters, DistributionId, DumpEntry, RegValue, ResultWord};
use hal::RegIo;
use host::device::DeviceSpec;
use serde::Serialize;

const AFTER_HELP: &str = "\
DEVICE SPEC:
  model               the reference model (1024 entries); starts empty
  model:depth=N       the reference model with N entries
  verilator           the RTL under Verilator (build with --features verilator)
  vfio:BDF, pci:PATH, unix:PATH
                      real cards and remote cards: not supported yet

A simulated card is created when hwctl opens it and starts empty; use
--seed-entries N to fill it with N generated sample entries (TCP/UDP/ICMP/ESP/
ISAKMP over IPv4 and IPv6, some with wildcards, spread over the distribution
identifiers) and to look every third one up, so that dump shows hit bits.

EXAMPLES:
  hwctl --device model status
  hwctl --device model --seed-entries 40 dump --did 7
  hwctl --device model --json regs";

/// Look inside a state-offload card: its register blocks, its CAM entries,
/// its raw registers.
#[derive(Parser, Debug)]
#[command(name = "hwctl", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// The card to open (see DEVICE SPEC below).
    #[arg(long, short = 'd', value_name = "SPEC")]
    device: DeviceSpec,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

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
    /// Every valid CAM entry: slot, decoded key with wildcards, distribution
    /// identifier, result, hit bit.
    Dump {
        /// Only the entries of this distribution identifier (0..=255).
        #[arg(long, value_name = "N")]
        did: Option<u8>,
    },
    /// Every register of every block found by walking the block chain.
    Regs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(out) => {
            // A closed pipe (`hwctl ... | head`) is not an error worth a panic.
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
        Err(e) => {
            eprintln!("hwctl: error: {e}");
            ExitCode::from(1)
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(cli: &Cli) -> Res<String> {
    if cli.seed_entries > 0 && !cli.device.is_simulated() {
        return Err(format!(
            "--seed-entries writes to the card; refusing on the real device {}",
            cli.device
        )
        .into());
    }
    let mut card = cli.device.open_card()?;
    if cli.seed_entries > 0 {
        seed(&mut card, cli.seed_entries)?;
    }
    match &cli.command {
        Command::Status => status(&mut card, cli.json),
        Command::Dump { did } => dump(&mut card, did.map(DistributionId), cli.json),
        Command::Regs => regs(&mut card, cli.json),
    }
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
        card.insert(&sample_entry(i))?;
    }
    for i in (0..n).step_by(3) {
        card.search(&sample_entry(i).key)?;
    }
    Ok(())
}

fn json<T: Serialize>(v: &T) -> Res<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
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
}

#[derive(Serialize)]
struct BlockOut {
    name: &'static str,
    type_id: String,
    version: String,
    major: u16,
    minor: u16,
    offset: String,
    next: String,
}

impl From<&BlockInfo> for BlockOut {
    fn from(b: &BlockInfo) -> Self {
        Self {
            name: b.name,
            type_id: format!("0x{:08x}", b.type_id),
            version: format!("{}.{}", b.major, b.minor),
            major: b.major,
            minor: b.minor,
            offset: format!("0x{:05x}", b.offset),
            next: format!("0x{:05x}", b.next),
        }
    }
}

fn status<R: RegIo>(card: &mut Card<R>, as_json: bool) -> Res<String> {
    let counters = card.counters()?;
    let info = card.info().clone();
    let out = StatusOut {
        device: &info.backend,
        build_id: format!("0x{:08x}", info.build_id),
        bar_bytes: info.bar_bytes,
        blocks: info.blocks.iter().map(BlockOut::from).collect(),
        cam: info.cam,
        occupancy: counters.occupancy,
        counters,
    };
    if as_json {
        return json(&out);
    }
    let mut s = String::new();
    writeln!(s, "device     {}", out.device)?;
    writeln!(s, "build id   {}", out.build_id)?;
    writeln!(s, "BAR        {} bytes", out.bar_bytes)?;
    writeln!(s)?;
    let rows: Vec<Vec<String>> = out
        .blocks
        .iter()
        .map(|b| {
            vec![
                b.name.to_owned(),
                b.type_id.clone(),
                b.version.clone(),
                b.offset.clone(),
                b.next.clone(),
            ]
        })
        .collect();
    s += &table(&["BLOCK", "TYPE", "VERSION", "OFFSET", "NEXT"], &rows);
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
    Ok(s)
}

// ---- dump ---------------------------------------------------------------

/// One `dump --json` element. Field names are a stable interface.
#[derive(Serialize)]
struct EntryOut {
    slot: u32,
    did: u8,
    hit: bool,
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
            key: e.key,
            key_text: key_text(e),
            key_error: e.key_error.clone(),
            result: e.result,
            result_text: e.result.to_string(),
            result_raw: format!("0x{:08x}", e.result_raw),
            key_words: hex(&e.bits.key),
            mask_words: hex(&e.bits.mask),
        }
    }
}

fn key_text(e: &DumpEntry) -> String {
    match &e.key {
        Some(k) => k.to_string(),
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

fn dump<R: RegIo>(card: &mut Card<R>, did: Option<DistributionId>, as_json: bool) -> Res<String> {
    let entries = card.dump(did)?;
    let out: Vec<EntryOut> = entries.iter().map(EntryOut::from).collect();
    if as_json {
        return json(&out);
    }
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|e| {
            vec![
                e.slot.to_string(),
                e.did.to_string(),
                if e.hit { "yes" } else { "-" }.to_owned(),
                e.result_text.clone(),
                e.key_text.clone(),
            ]
        })
        .collect();
    let mut s = table(
        &["SLOT", "DID", "HIT", "RESULT", "KEY (* = wildcard)"],
        &rows,
    );
    let filter = did.map(|d| format!(" with did {d}")).unwrap_or_default();
    writeln!(s, "{} entries{filter}", out.len())?;
    Ok(s)
}

// ---- regs ---------------------------------------------------------------

/// `regs --json` output, one element per block. Field names are a stable
/// interface.
#[derive(Serialize)]
struct RegsBlockOut {
    #[serde(flatten)]
    block: BlockOut,
    regs: Vec<RegOut>,
}

#[derive(Serialize)]
struct RegOut {
    name: String,
    offset: String,
    access: &'static str,
    value: String,
    value_u32: u32,
    doc: String,
}

/// A register's doc comment as plain text (no rustdoc link brackets).
fn plain_doc(doc: &str) -> String {
    doc.trim().replace("[`", "`").replace("`]", "`")
}

impl From<&RegValue> for RegOut {
    fn from(r: &RegValue) -> Self {
        Self {
            name: match r.element {
                Some(e) => format!("{}[{e}]", r.name),
                None => r.name.to_owned(),
            },
            offset: format!("0x{:05x}", r.offset),
            access: r.access,
            value: format!("0x{:08x}", r.value),
            value_u32: r.value,
            doc: plain_doc(r.doc),
        }
    }
}

fn regs<R: RegIo>(card: &mut Card<R>, as_json: bool) -> Res<String> {
    let all = card.read_all_regs()?;
    let out: Vec<RegsBlockOut> = all
        .iter()
        .map(|(b, regs)| RegsBlockOut {
            block: BlockOut::from(b),
            regs: regs.iter().map(RegOut::from).collect(),
        })
        .collect();
    if as_json {
        return json(&out);
    }
    let mut s = String::new();
    for b in &out {
        let bo = &b.block;
        writeln!(
            s,
            "{} block at {} (type {}, version {}, next {})",
            bo.name, bo.offset, bo.type_id, bo.version, bo.next
        )?;
        let rows: Vec<Vec<String>> = b
            .regs
            .iter()
            .map(|r| {
                vec![
                    r.offset.clone(),
                    r.name.clone(),
                    r.access.to_owned(),
                    r.value.clone(),
                    r.doc.to_owned(),
                ]
            })
            .collect();
        s += &table(
            &["OFFSET", "REGISTER", "ACC", "VALUE", "DESCRIPTION"],
            &rows,
        );
        writeln!(s)?;
    }
    Ok(s)
}

// ---- tables -------------------------------------------------------------

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
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
    for r in rows {
        s += &line(&mut r.iter().map(String::as_str));
    }
    s
}
