//! A simulated card on a real network: the reference-model card's port 0 on interface
//! `--outside`, port 1 on `--inside`, with the simplest host behind it (every frame the card
//! punts is sent on out of the other port; the host installs no entries, so the card forwards
//! nothing itself and drops the frames of identifiers it does not own).
//!
//! ```text
//! cargo run -p sim-bridge --example port_bridge -- --outside IF --inside IF \
//!     [--owns all|none|LIST] [--ids N] [--seconds N] [--json]
//! ```
//!
//! `LIST` is identifiers and ranges, `0-127,200,300-301`. Prints the counters once a second
//! and at the end on standard output; with `--json` those lines go to standard error and
//! standard output gets every counter as one JSON object at the end. Stops after `--seconds`
//! (60 by default). Needs root (or CAP_NET_RAW) for the raw sockets; see
//! `docs/port-bridge.md`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use driver::port::{Dest, PortCounters};
use driver::{Card, DidSet, DistributionId};
use hal::{HalError, Wires};
use sim_bridge::bridge::{wires_of, BridgeCounters, PortBridge};
use sim_bridge::model::ModelCard;

/// Put the reference-model card between two network interfaces.
#[derive(Parser, Debug)]
#[command(name = "port_bridge")]
struct Args {
    /// Interface of the card's port 0 (outside).
    #[arg(long)]
    outside: String,
    /// Interface of the card's port 1 (inside).
    #[arg(long)]
    inside: String,
    /// Identifiers the card owns: `all`, `none`, or a list like `0-127,200`.
    #[arg(long, default_value = "all")]
    owns: String,
    /// Number of distribution identifiers (a power of two up to 4096).
    #[arg(long, default_value_t = 256)]
    ids: u32,
    /// A file holding the 16-byte secret keying the identifier hash (its first 16 bytes; a
    /// secret never goes on the command line). Default: a fixed, public demo key.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<std::path::PathBuf>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Print every counter as JSON on standard output at the end.
    #[arg(long)]
    json: bool,
}

/// The identifiers named by `spec`, each below `ids`.
fn parse_owns(spec: &str, ids: u32) -> Result<DidSet, String> {
    let ids = u16::try_from(ids).map_err(|_| format!("{ids} identifiers: at most 4096"))?;
    let mut set = DidSet::new();
    let mut add = |d: u16| {
        if d >= ids {
            return Err(format!(
                "identifier {d} in --owns: there are {ids} (0 to {})",
                ids - 1
            ));
        }
        set.insert(DistributionId(d)).map_err(|e| e.to_string())
    };
    match spec {
        "all" => (0..ids).try_for_each(&mut add)?,
        "none" => {}
        list => {
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let num = |s: &str| {
                    s.trim().parse::<u16>().map_err(|_| {
                        format!("`{part}` in --owns: use all, none, or a list like 0-127,200")
                    })
                };
                let (lo, hi) = match part.split_once('-') {
                    Some((a, b)) => (num(a)?, num(b)?),
                    None => (num(part)?, num(part)?),
                };
                if lo > hi {
                    return Err(format!("`{part}` in --owns: the range is empty"));
                }
                (lo..=hi).try_for_each(&mut add)?;
            }
        }
    }
    Ok(set)
}

/// The card and the simplest host: whatever the card punts goes out of the other port.
struct Host {
    card: Card<ModelCard>,
    host_forwarded: u64,
    host_errors: u64,
    last_error: Option<String>,
}

impl Host {
    fn serve_queue(&mut self) {
        // the card's host queue holds 8 frames; one frame in puts at most one there
        for _ in 0..64 {
            let next = self.card.port().and_then(|mut p| p.receive());
            let p = match next {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => return self.failed(e.to_string()),
            };
            let sent = self
                .card
                .port()
                .and_then(|mut port| port.send(&p.frame, Dest::Out(p.port ^ 1)));
            match sent {
                Ok(()) => self.host_forwarded += 1,
                Err(e) => self.failed(e.to_string()),
            }
        }
    }

    fn failed(&mut self, e: String) {
        self.host_errors += 1;
        self.last_error = Some(e);
    }
}

impl Wires for Host {
    fn wire_rx(&mut self, port: u8, frame: &[u8]) -> Result<(), HalError> {
        match wires_of(self.card.regs_mut()) {
            Ok(w) => w.wire_rx(port, frame)?,
            Err(e) => return Err(HalError::Open(e.to_string())),
        }
        self.serve_queue();
        Ok(())
    }

    fn wire_tx(&mut self) -> Option<(u8, Vec<u8>)> {
        wires_of(self.card.regs_mut()).ok()?.wire_tx()
    }
}

fn line(t: f64, b: &BridgeCounters, c: &PortCounters, h: &Host, ifs: [&str; 2]) -> String {
    let reasons: Vec<String> = c.reasons.iter().map(|(n, v)| format!("{n} {v}")).collect();
    let kb = |x: u64| x as f64 / 1000.0;
    format!(
        "{t:5.1}s  {o} -> card {} ({:.1} kB), card -> {o} {} | {i} -> card {} ({:.1} kB), \
         card -> {i} {} | card: rx {} forwarded {} punted {} dropped {} [{}] | host sent {} \
         | bridge dropped {}{}",
        b.to_card[0],
        kb(b.to_card_bytes[0]),
        b.from_card[0],
        b.to_card[1],
        kb(b.to_card_bytes[1]),
        b.from_card[1],
        c.rx_frames,
        c.forwarded,
        c.punted,
        c.dropped,
        reasons.join(", "),
        h.host_forwarded,
        b.dropped_total(),
        b.last_drop
            .as_deref()
            .map(|d| format!(" (last: {d})"))
            .unwrap_or_default(),
        o = ifs[0],
        i = ifs[1],
    )
}

fn json(secs: f64, bridge: &PortBridge, c: &PortCounters, h: &Host, owned: usize) -> String {
    let b = bridge.counters();
    let [o, i] = bridge.interfaces();
    let dropped: serde_json::Map<String, serde_json::Value> = b
        .dropped
        .iter()
        .map(|(r, n)| (r.name().to_owned(), (*n).into()))
        .collect();
    let v = serde_json::json!({
        "seconds": secs,
        "outside": o,
        "inside": i,
        "owned_identifiers": owned,
        "bridge": {
            "to_card": b.to_card,
            "to_card_bytes": b.to_card_bytes,
            "from_card": b.from_card,
            "from_card_bytes": b.from_card_bytes,
            "checksums_finished": b.checksums_finished,
            "vlan_restored": b.vlan_restored,
            "dropped": dropped,
            "last_drop": b.last_drop,
        },
        "card": c,
        "host": {
            "forwarded": h.host_forwarded,
            "errors": h.host_errors,
            "last_error": h.last_error,
        },
    });
    v.to_string()
}

/// A counters line: on standard output, or on standard error when that carries the JSON.
fn say(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

fn run(a: &Args) -> Result<(), String> {
    let mut secret = *b"port-bridge-demo";
    if let Some(f) = &a.secret_file {
        let bytes = std::fs::read(f).map_err(|e| format!("--secret-file {}: {e}", f.display()))?;
        let Some(first) = bytes.get(..16) else {
            return Err(format!(
                "--secret-file {}: {} bytes; it must hold at least 16",
                f.display(),
                bytes.len()
            ));
        };
        secret.copy_from_slice(first);
    }
    let owned = parse_owns(&a.owns, a.ids)?;
    let mut card = Card::probe(ModelCard::new()).map_err(|e| format!("model card: {e}"))?;
    let frame_bytes = {
        let mut p = card.port().map_err(|e| e.to_string())?;
        p.set_distribution(&secret, a.ids)
            .map_err(|e| e.to_string())?;
        p.set_owned(&owned).map_err(|e| e.to_string())?;
        p.frame_bytes() as usize
    };
    let mut bridge =
        PortBridge::open(&a.outside, &a.inside, frame_bytes).map_err(|e| e.to_string())?;
    let mut host = Host {
        card,
        host_forwarded: 0,
        host_errors: 0,
        last_error: None,
    };
    let n_owned = owned.iter().count();
    eprintln!(
        "port_bridge: model card between {} (port 0) and {} (port 1), owning {n_owned} of {} \
         identifiers, for {} s",
        a.outside, a.inside, a.ids, a.seconds
    );
    let start = Instant::now();
    let end = Duration::from_secs(a.seconds);
    let mut next_line = Duration::from_secs(1);
    let counters = |host: &mut Host| {
        host.card
            .port()
            .and_then(|mut p| p.counters())
            .map_err(|e| e.to_string())
    };
    while start.elapsed() < end {
        let left = end.saturating_sub(start.elapsed());
        bridge
            .poll(&mut host, left.min(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        if start.elapsed() >= next_line {
            next_line += Duration::from_secs(1);
            let c = counters(&mut host)?;
            let l = line(
                start.elapsed().as_secs_f64(),
                bridge.counters(),
                &c,
                &host,
                bridge.interfaces(),
            );
            say(a.json, &l);
        }
    }
    let c = counters(&mut host)?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        println!("{}", json(secs, &bridge, &c, &host, n_owned));
    } else {
        let l = line(secs, bridge.counters(), &c, &host, bridge.interfaces());
        say(false, &l);
    }
    Ok(())
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("port_bridge: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owns_lists() {
        assert_eq!(parse_owns("all", 256).unwrap().iter().count(), 256);
        assert_eq!(parse_owns("none", 256).unwrap().iter().count(), 0);
        let s = parse_owns("0-9, 17,200-201", 256).unwrap();
        assert_eq!(s.iter().count(), 13);
        assert!(s.contains(DistributionId(17)) && !s.contains(DistributionId(10)));
        assert!(parse_owns("256", 256).unwrap_err().contains("256"));
        assert!(parse_owns("9-3", 256).is_err());
        assert!(parse_owns("x", 256).unwrap_err().contains("--owns"));
    }
}
