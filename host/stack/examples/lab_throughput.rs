//! Bulk TCP through one node: our cluster (`clusterd lab`, one node with a model card) against
//! the kernel baseline (`clusterd lab up --baseline kernel`, one node routing with nftables
//! and conntrackd). Real kernel sockets in the client and server namespaces send for S
//! seconds; the figures are the bytes the server received and the frames on the wire (the
//! client's `c0` tx_packets, the server's `s0` rx_packets). It prints figures, it asserts
//! nothing.
//!
//! As root, after building the daemon:
//!
//! ```sh
//! cargo build --release -p host --bin clusterd
//! cargo run --release -p host --example lab_throughput -- [--seconds S]
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use host::lab::kernel::{self, KernelOptions};
use host::lab::netns::{self, LabInfo, LabOptions};
use host::lab::DownOnDrop;

const PORT: u16 = 5201;

/// What one run measured.
struct Figures {
    seconds: f64,
    bytes: u64,
    client_frames: u64,
    server_frames: u64,
}

impl Figures {
    fn mbit(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds / 1e6
    }
    fn frames_per_s(&self) -> f64 {
        self.server_frames as f64 / self.seconds
    }
}

fn joined<T>(h: JoinHandle<Result<T, String>>) -> Result<T, String> {
    h.join()
        .unwrap_or_else(|_| Err("a thread panicked".to_owned()))
}

/// Sends for `secs` seconds from the client to `server` (the lab's server address).
fn bulk(lab: &LabInfo, server: IpAddr, secs: u64) -> Result<Figures, String> {
    let addr = SocketAddr::new(server, PORT);
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = kernel::in_ns(&lab.server_ns, move || {
        let l = TcpListener::bind(addr).map_err(|e| format!("listen on {addr}: {e}"))?;
        let _ = tx.send(());
        let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) => return Err(format!("server read after {total} bytes: {e}")),
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .map_err(|_| "the server did not listen".to_owned())?;
    let before = (
        kernel::link_stats(&lab.client_ns, "c0").map_or(0, |s| s.1),
        kernel::link_stats(&lab.server_ns, "s0").map_or(0, |s| s.3),
    );
    let t = Instant::now();
    let source = kernel::in_ns(&lab.client_ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let buf = vec![0x5au8; 1 << 16];
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            s.write_all(&buf)
                .map_err(|e| format!("client write: {e}"))?;
        }
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
        Ok(())
    });
    joined(source)?;
    let bytes = joined(sink)?;
    let seconds = t.elapsed().as_secs_f64();
    let after = (
        kernel::link_stats(&lab.client_ns, "c0").map_or(0, |s| s.1),
        kernel::link_stats(&lab.server_ns, "s0").map_or(0, |s| s.3),
    );
    Ok(Figures {
        seconds,
        bytes,
        client_frames: after.0 - before.0,
        server_frames: after.1 - before.1,
    })
}

/// The clusterd binary next to this example (target/<profile>/clusterd).
fn clusterd_exe() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let exe = me
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("clusterd"))
        .ok_or("cannot locate the target directory")?;
    if exe.exists() {
        Ok(exe)
    } else {
        Err(format!(
            "{} is missing: build it first with `cargo build --release -p host --bin clusterd` \
             (the same profile as this example)",
            exe.display()
        ))
    }
}

fn run(secs: u64) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("lab_throughput needs root (network namespaces): run it as root".into());
    }
    kernel::preflight()?;
    let exe = clusterd_exe()?;
    let pid = std::process::id() % 100_000;

    let prefix = format!("tpo{pid}");
    let dir = netns::default_dir(&prefix);
    let ours = {
        let _guard = DownOnDrop::ours(&prefix, &dir);
        let lab = netns::up(&LabOptions {
            nodes: 1,
            prefix: prefix.clone(),
            card: "model".into(),
            identifiers: 256,
            dir: dir.clone(),
            exe,
        })?;
        eprintln!("our cluster (1 node, model card): sending for {secs} s");
        bulk(&lab, IpAddr::V4(netns::SERVER4), secs)?
    };

    let prefix = format!("tpk{pid}");
    let dir = netns::default_dir(&prefix);
    let base = {
        let _guard = DownOnDrop::kernel(&prefix, &dir);
        let lab = kernel::up(&KernelOptions {
            nodes: 1,
            prefix: prefix.clone(),
            buckets: 256,
            dir: dir.clone(),
        })?;
        eprintln!("kernel baseline (1 node, nftables + conntrackd): sending for {secs} s");
        bulk(&lab, IpAddr::V4(kernel::SERVER4), secs)?
    };

    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>14} {:>10}",
        "bulk TCP client -> server, 1 node", "seconds", "MB", "frames/s", "Mbit/s", "cl. frames"
    );
    for (name, f) in [
        ("ours (clusterd, model card)", &ours),
        ("kernel (nftables + conntrackd)", &base),
    ] {
        println!(
            "{:<34} {:>12.2} {:>12.1} {:>12.0} {:>14.1} {:>10}",
            name,
            f.seconds,
            f.bytes as f64 / 1e6,
            f.frames_per_s(),
            f.mbit(),
            f.client_frames
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "{:<34} {:>12} {:>12} {:>12.3} {:>14.3}",
        "ratio ours / kernel",
        "",
        "",
        ratio(ours.frames_per_s(), base.frames_per_s()),
        ratio(ours.mbit(), base.mbit())
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut secs = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => match args.next().and_then(|v| v.parse::<u64>().ok()) {
                Some(s) if (1..=60).contains(&s) => secs = s,
                _ => {
                    eprintln!("lab_throughput: --seconds takes 1 to 60");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("usage (as root): lab_throughput [--seconds S]   (S: 1 to 60, default 5)");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("lab_throughput: unknown argument {other:?} (usage: [--seconds S])");
                return ExitCode::from(2);
            }
        }
    }
    match run(secs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab_throughput: {e}");
            ExitCode::FAILURE
        }
    }
}
