//! The table views (docs/vocabulary.md): `hwctl dump|count|get` with filters on a seeded
//! card, `clusterd ctl dump|count|get` on a real node's common and card tables (streamed),
//! `clusterd ctl events` while entries are created and an epoch is applied, JSON output that
//! parses, and bad arguments refused with exit status 2.

mod common;

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fails, free_udp, json, ok, write_key, TempDir};
use host::filter::{EntryView, Filter, ViewKey};
use serde_json::Value;

// ---- hwctl on a seeded model card ----------------------------------------------------------

/// The seeded sample entries (driver::sample): entry i has shape i mod 8 (0 tcp v4 to 443,
/// 1 udp v4 to 53, 2 tcp v6 to 22, 3 udp v6 to 4500, 4 icmp, 5 icmp6, 6 esp to 12.x, 7
/// isakmp) and identifier i mod 256.
const SEED: &str = "64";

fn hw(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--device", "model", "--seed-entries", SEED]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn hw_json(extra: &[&str]) -> Value {
    let args = hw(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    json(&args)
}

fn slots(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|e| e["slot"].as_u64().expect("slot"))
        .collect()
}

#[test]
fn hwctl_filters_select_the_known_entries() {
    let all = hw_json(&["-j", "dump"]);
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 64);
    let shape =
        |want: &[u64]| -> Vec<u64> { (0..64).filter(|i| want.contains(&(i % 8))).collect() };
    let cases: Vec<(Vec<&str>, Vec<u64>)> = vec![
        (vec!["--proto", "tcp"], shape(&[0, 2])),
        (vec!["--proto", "6"], shape(&[0, 2])),
        (vec!["--proto", "udp"], shape(&[1, 3, 7])),
        (vec!["--proto", "icmp"], shape(&[4, 5])),
        (vec!["--proto", "icmp6"], shape(&[5])),
        (vec!["--proto", "esp"], shape(&[6])),
        (vec!["--dport", "443"], shape(&[0])),
        (vec!["--port", "53"], shape(&[1])),
        (vec!["--src", "10.0.0.0/8"], shape(&[0, 1])),
        (vec!["--src", "2001:db8::/32"], shape(&[2, 3, 5])),
        (vec!["--dst", "12.0.0.0/8"], shape(&[6])),
        (vec!["--proto", "tcp", "--dport", "22"], shape(&[2])),
        (vec!["--did", "7"], vec![7]),
        (vec!["--did", "200"], vec![]),
        (vec!["--src", "10.0.0.3", "--proto", "tcp"], vec![24]),
    ];
    for (filter, want) in cases {
        let mut args = vec!["-j", "dump"];
        args.extend(&filter);
        assert_eq!(slots(&hw_json(&args)), want, "dump {filter:?}");
        let mut args = vec!["count"];
        args.extend(&filter);
        let a = hw(&args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        assert_eq!(ok(&a).trim(), want.len().to_string(), "count {filter:?}");
        let mut args = vec!["-j", "count"];
        args.extend(&filter);
        let c = hw_json(&args);
        assert_eq!(c["count"], want.len(), "{c}");
        assert_eq!(c["len"], 64, "{c}");
    }
    // the state kind is the result's est flag
    let est: Vec<u64> = all
        .iter()
        .filter(|e| e["result_text"].as_str().unwrap().contains(" est"))
        .map(|e| e["slot"].as_u64().unwrap())
        .collect();
    assert!(!est.is_empty() && est.len() < 64);
    assert_eq!(
        slots(&hw_json(&["-j", "dump", "--state", "established"])),
        est
    );
    assert_eq!(
        slots(&hw_json(&["-j", "dump", "--state", "new"])).len(),
        64 - est.len()
    );
    assert!(all
        .iter()
        .all(|e| e["state"] == "established" || e["state"] == "new"));
    // the table says which filter made it
    let a = hw(&["dump", "--proto", "esp"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = ok(&a);
    assert!(out.ends_with("8 entries with --proto esp\n"), "{out}");
}

#[test]
fn hwctl_get_finds_a_key_as_dump_prints_it() {
    let all = hw_json(&["-j", "dump"]);
    for e in all.as_array().unwrap() {
        let key = e["key_text"].as_str().unwrap();
        // one argument, or the words as separate arguments
        let g = hw_json(&["-j", "get", key]);
        assert_eq!(g["slot"], e["slot"], "{key}");
        let mut words = vec!["-j", "get"];
        words.extend(key.split(' '));
        assert_eq!(hw_json(&words)["slot"], e["slot"], "{key}");
    }
    let a = hw(&["get", "tcp 10.0.0.0:1024 -> 192.0.2.0:443"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert!(ok(&a).contains("tcp 10.0.0.0:1024 -> 192.0.2.0:443"));
    let a = hw(&["get", "tcp 198.18.0.1:1234 -> 198.18.1.1:80"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    fails(
        &a,
        1,
        "no entry tcp 198.18.0.1:1234 -> 198.18.1.1:80 on the card",
    );
}

#[test]
fn hwctl_bad_filters_and_keys_exit_2() {
    for (args, want) in [
        (&["dump", "--src", "10.0.0.300"][..], "not an address"),
        (
            &["dump", "--dst", "10.0.0.0/40"],
            "prefix length must be 0 to 32",
        ),
        (&["count", "--proto", "sctp"], "not a protocol"),
        (&["dump", "--sport", "http"], "not a port"),
        (&["dump", "--state", "open"], "not a state kind"),
        (&["count", "--did", "4096"], "0 to 4095"),
        (&["get", "tcp nonsense"], "write it as dump prints it"),
        (&["get"], "KEY"),
    ] {
        let mut a = vec!["--device", "model"];
        a.extend(args);
        fails(&a, 2, want);
    }
}

#[test]
fn hwctl_events_on_a_local_card_polls() {
    // a simulated card changes only by hwctl itself: two polls, no change, nothing printed
    let out = ok(&[
        "--device",
        "model",
        "--seed-entries",
        "4",
        "events",
        "--interval-ms",
        "10",
        "--polls",
        "2",
    ]);
    assert_eq!(out, "");
    let help = ok(&["events", "--help"]);
    assert!(help.contains("polls"), "{help}");
}

// ---- a real node ---------------------------------------------------------------------------

/// A lone node (no peers: it is its own leader and owns every identifier).
struct Lone {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
}

impl Lone {
    fn start(dir: &Path) -> Lone {
        write_key(dir);
        let conf = dir.join("n.conf");
        std::fs::write(
            &conf,
            format!(
                "node = 1\nlisten = \"{}\"\nkey_file = \"cluster.key\"\ncontrol = \"n.sock\"\n\
                 state_dir = \"n.state\"\ncard_capacity = 1000\n",
                free_udp()
            ),
        )
        .unwrap();
        let log = dir.join("n.log");
        let child = Command::new(env!("CARGO_BIN_EXE_clusterd"))
            .args(["run", "--config"])
            .arg(&conf)
            .env("CLUSTERD_EXIT_WITH_PARENT", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn clusterd");
        let n = Lone {
            child,
            sock: dir.join("n.sock"),
            log,
        };
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let st = n.ctl_out(&["-j", "status"]);
            if st.status.success() {
                let v: Value = serde_json::from_slice(&st.stdout).unwrap();
                if v["ready"] == true && v["owned"].as_u64() == Some(256) {
                    break;
                }
            }
            assert!(
                Instant::now() < until,
                "node not ready: {}",
                std::fs::read_to_string(&n.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        n
    }

    fn ctl_out(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_clusterd"))
            .arg("ctl")
            .arg("--socket")
            .arg(&self.sock)
            .args(args)
            .output()
            .expect("run clusterd ctl")
    }

    fn ctl(&self, args: &[&str]) -> String {
        let o = self.ctl_out(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "ctl {args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        String::from_utf8(o.stdout).unwrap()
    }

    fn ctl_fails(&self, args: &[&str], code: i32, want: &str) {
        let o = self.ctl_out(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "ctl {args:?}: {err}");
        assert!(
            err.contains(want),
            "ctl {args:?}: expected {want:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }

    fn synthesize(&self, flows: u64, first: u64) {
        let out = self.ctl(&[
            "-j",
            "synthesize",
            &format!("{{\"flows\":{flows},\"first\":{first}}}"),
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["created"], flows, "{v}");
    }

    /// `ctl -j dump ARGS`: every line one JSON object.
    fn dump(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["-j", "dump"];
        a.extend(args);
        self.ctl(&a)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
}

impl Drop for Lone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a filter sees of a dumped entry (read back from its JSON line).
fn view_of(v: &Value) -> EntryView {
    EntryView {
        did: v["did"].as_u64().unwrap() as u16,
        state: host::filter::parse_state(v["state"].as_str().unwrap()).unwrap(),
        key: v["key"].as_str().unwrap().parse::<ViewKey>().unwrap(),
    }
}

fn filter_of(args: &[&str]) -> Filter {
    use clap::Parser;
    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        f: host::filter::FilterArgs,
    }
    let mut a = vec!["t"];
    a.extend(args);
    T::try_parse_from(a).unwrap().f.filter()
}

const FLOWS: u64 = 3000;

#[test]
fn ctl_dump_count_get_on_a_real_node() {
    let t = TempDir::new("views-node");
    let n = Lone::start(t.dir());
    n.synthesize(FLOWS, 0);
    let all = n.dump(&[]);
    assert_eq!(all.len() as u64, FLOWS);
    for e in &all {
        assert_eq!(e["table"], "common");
        assert_eq!(e["proto"], "tcp");
        assert_eq!(e["dport"], 443);
        assert_eq!(e["state"], "established");
        assert!(e["key"].as_str().unwrap().starts_with("tcp 10."), "{e}");
    }
    // each filter against the library's own reading of the full dump, and the count
    for args in [
        &["--did", "5"][..],
        &["--src", "10.0.1.0/24"],
        &["--src", "10.0.0.7"],
        &["--dst", "192.0.2.1", "--dport", "443"],
        &["--dport", "80"],
        &["--proto", "udp"],
        &["--port", "40000", "--did", "200"],
        &["--state", "syn-sent"],
        &["--src", "2001:db8::/32"],
    ] {
        let f = filter_of(args);
        let want: Vec<&Value> = all.iter().filter(|e| f.matches(&view_of(e))).collect();
        let got = n.dump(args);
        assert_eq!(got.len(), want.len(), "dump {args:?}");
        let mut a = vec!["count"];
        a.extend(args);
        assert_eq!(n.ctl(&a).trim(), want.len().to_string(), "count {args:?}");
    }
    assert_eq!(n.dump(&["--dport", "443"]).len() as u64, FLOWS);
    assert!(n.dump(&["--did", "5"]).iter().all(|e| e["did"] == 5));
    assert_eq!(n.dump(&["--limit", "7"]).len(), 7);
    // -j count
    let c: Value = serde_json::from_str(&n.ctl(&["-j", "count", "--did", "5"])).unwrap();
    let counts: Value = serde_json::from_str(&n.ctl(&["-j", "counts"])).unwrap();
    assert_eq!(c["count"], counts["ids"][5]["common"], "{c}");
    assert_eq!(c["table"], "common");
    // the card table: every entry, on the card or in the overflow (capacity 1000)
    let card = n.dump(&["--table", "card"]);
    assert_eq!(card.len() as u64, FLOWS);
    assert_eq!(card.iter().filter(|e| e["where"] == "card").count(), 1000);
    assert_eq!(
        n.ctl(&["count", "--table", "card"]).trim(),
        FLOWS.to_string()
    );
    // the table for people, and -p as one JSON array
    let text = n.ctl(&["dump", "--did", "9"]);
    assert!(text.starts_with("DID    STATE"), "{text}");
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("of 3000 in node 1's common table"),
        "{text}"
    );
    let pretty: Value = serde_json::from_str(&n.ctl(&["-p", "dump", "--did", "9"])).unwrap();
    assert_eq!(
        pretty.as_array().unwrap().len(),
        n.dump(&["--did", "9"]).len()
    );
    // get: as dump prints it, either direction, in either table
    let e = &all[17];
    let key = e["key"].as_str().unwrap();
    let g: Value = serde_json::from_str(&n.ctl(&["-j", "get", key])).unwrap();
    assert_eq!(&g, e, "the entry as dump shows it");
    let k: ViewKey = key.parse().unwrap();
    let rev = format!(
        "tcp {}:{} -> {}:{}",
        k.dst.unwrap(),
        k.dport.unwrap(),
        k.src.unwrap(),
        k.sport.unwrap()
    );
    let g: Value = serde_json::from_str(&n.ctl(&["-j", "get", &rev])).unwrap();
    assert_eq!(g["key"], key);
    let mut words = vec!["-j", "get", "--table", "card"];
    words.extend(key.split(' '));
    let g: Value = serde_json::from_str(&n.ctl(&words)).unwrap();
    assert!(g["where"].is_string(), "{g}");
    assert_eq!(g["table"], "card");
    assert!(n.ctl(&["get", key]).contains(key));
    n.ctl_fails(
        &["get", "tcp 198.18.0.1:1234 -> 198.18.1.1:80"],
        1,
        "no entry tcp 198.18.0.1:1234 -> 198.18.1.1:80 in node 1's common table",
    );
    n.ctl_fails(
        &["get", "tcp 10.0.0.0/8:* -> 192.0.2.1:443"],
        1,
        "wildcard or a prefix",
    );
    // bad arguments: exit 2, nothing sent
    for (args, want) in [
        (&["dump", "--src", "10.0.0.300"][..], "not an address"),
        (&["dump", "--table", "cam"], "not a table"),
        (&["count", "--proto", "sctp"], "not a protocol"),
        (&["events", "--state", "open"], "not a state kind"),
        (&["dump", "--did", "5000"], "0 to 4095"),
        (&["get", "tcp 10.0.0.1 -> x"], "write it as dump prints it"),
        (&["dump", "--colour", "red"], "--colour"),
    ] {
        n.ctl_fails(args, 2, want);
    }
    // the control socket refuses a bad filter with a reason
    let o = n.ctl_out(&["table_count", r#"{"filter":{"src":"nowhere"}}"#]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("not an address"),
        "{o:?}"
    );
}

/// Reads `child`'s stdout lines on a thread; returns the receiver.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for lines until `pred` holds for one of them; returns every line read.
fn until_line(
    rx: &std::sync::mpsc::Receiver<String>,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let until = Instant::now() + within;
    let mut seen = Vec::new();
    while Instant::now() < until {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            let hit = pred(&l);
            seen.push(l);
            if hit {
                return seen;
            }
        }
    }
    panic!("no such line within {within:?}: {seen:#?}");
}

#[test]
fn ctl_events_follow_creations_and_a_slow_reader_loses_events() {
    let t = TempDir::new("views-events");
    let n = Lone::start(t.dir());
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_clusterd"))
            .arg("ctl")
            .arg("--socket")
            .arg(&n.sock)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut j = spawn(&["-j", "events"]);
    let mut text = spawn(&["events", "--did", "172"]);
    let (jr, tr) = (lines_of(&mut j), lines_of(&mut text));
    std::thread::sleep(Duration::from_millis(500));
    n.synthesize(3, 5000);
    let seen = until_line(&jr, Duration::from_secs(10), |l| {
        l.contains("\"event\":\"updated\"") && l.contains("\"state\":\"established\"")
    });
    for l in &seen {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(v["event"].is_string() && v["unix_ms"].is_u64(), "{v}");
    }
    let created: Value = serde_json::from_str(&seen[0]).unwrap();
    assert_eq!(created["event"], "created");
    assert_eq!(created["state"], "syn-sent");
    assert_eq!(created["node"], 1);
    // the filtered reader for people sees only identifier 172's
    let tl = until_line(&tr, Duration::from_secs(10), |l| l.starts_with("updated "));
    assert!(
        tl[0].starts_with("created  did=172 state=syn-sent node=1 tcp "),
        "{tl:?}"
    );
    assert!(tl.iter().all(|l| l.contains("did=172")), "{tl:?}");
    // Ctrl-C ends it quietly
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(text.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let st = text.wait().unwrap();
    assert!(st.success(), "{st}");
    let mut err = String::new();
    text.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.is_empty(), "{err}");
    // a closed pipe ends it quietly too (the reading thread closes the pipe when it reads
    // a line nobody takes; the writer sees it at its next line: more events until it ends)
    drop(jr);
    let until = Instant::now() + Duration::from_secs(20);
    let mut first = 6000;
    let st = loop {
        if let Some(st) = j.try_wait().unwrap() {
            break st;
        }
        n.synthesize(1, first);
        first += 1;
        assert!(
            Instant::now() < until,
            "events did not end on a closed pipe"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(st.success(), "{st}");

    // a reader that does not read: the node does not wait, counts what it drops, and says
    // so once there is room
    let mut s = std::os::unix::net::UnixStream::connect(&n.sock).unwrap();
    s.write_all(b"{\"cmd\":\"events\"}\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    n.synthesize(20_000, 10_000);
    let status = n.ctl(&["-j", "status"]);
    assert!(t0.elapsed() < Duration::from_secs(120));
    assert!(status.contains("\"ready\":true"), "{status}");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut header = String::new();
    r.read_line(&mut header).unwrap();
    let h: Value = serde_json::from_str(&header).unwrap();
    assert_eq!(h["stream"], "events", "{h}");
    // read what was queued, then one more event brings the marker
    let mut lost = None;
    let mut read = 0;
    let mut poked = false;
    let until = Instant::now() + Duration::from_secs(60);
    while lost.is_none() && Instant::now() < until {
        let mut l = String::new();
        match r.read_line(&mut l) {
            Ok(0) => panic!("stream closed"),
            Ok(_) => {
                read += 1;
                let v: Value = serde_json::from_str(&l).unwrap();
                if v["event"] == "lost" {
                    lost = v["lost_events"].as_u64();
                }
            }
            Err(_) if !poked => {
                poked = true;
                n.synthesize(1, 90_000);
            }
            Err(e) => panic!("{e}"),
        }
        if read == 4000 && !poked {
            poked = true;
            n.synthesize(1, 90_000);
        }
    }
    let lost = lost.expect("a lost-events line");
    assert!(lost > 1000, "{lost} lost, {read} read");
    assert!(
        (read as u64) < 60_000,
        "the queue is bounded: {read} lines read"
    );
}

// ---- events of an epoch in a real cluster ---------------------------------------------------

#[test]
fn ctl_events_show_an_epoch_and_the_entries_it_installs() {
    use host::core::ids::NodeId;
    use host::daemon::protocol::{Request, Response};
    use host::lab::cluster::Layout;
    let layout = common::patient(Layout {
        members: 2,
        ..Layout::default()
    });
    common::with_cluster(
        "views",
        &layout,
        2,
        Duration::from_secs(30),
        async |c, _| {
            c.wait_settled(Duration::from_secs(30)).await.unwrap();
            for id in [NodeId(1), NodeId(2)] {
                let r = c
                    .call_timeout(
                        id,
                        Request::Synthesize {
                            first: None,
                            flows: Some(200),
                        },
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap();
                assert!(matches!(r, Response::Synthesized(_)), "{r:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let sock = c.nodes[&NodeId(1)].control.clone();
            let mut ev = Command::new(env!("CARGO_BIN_EXE_clusterd"))
                .arg("ctl")
                .arg("--socket")
                .arg(&sock)
                .args(["-j", "events"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let rx = lines_of(&mut ev);
            tokio::time::sleep(Duration::from_millis(300)).await;
            // node 2 hands everything to node 1: an epoch that node 1 applies, gaining
            let r = c.to_leader(Request::Drain { node: Some(2) }).await.unwrap();
            assert!(r.is_ok(), "{r:?}");
            let seen = tokio::task::spawn_blocking(move || {
                until_line(&rx, Duration::from_secs(30), |l| {
                    l.contains("\"event\":\"epoch\"") && !l.contains("\"gained\":[]")
                })
                .into_iter()
                .chain(std::iter::from_fn(|| {
                    rx.recv_timeout(Duration::from_millis(500)).ok()
                }))
                .collect::<Vec<String>>()
            })
            .await
            .unwrap();
            let vs: Vec<Value> = seen
                .iter()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
                .collect();
            let epoch = vs
                .iter()
                .find(|v| v["event"] == "epoch" && !v["gained"].as_array().unwrap().is_empty())
                .unwrap();
            assert_eq!(epoch["node"], 1);
            assert!(epoch["installed"].as_u64().unwrap() > 0, "{epoch}");
            assert!(epoch["owned"].as_u64().unwrap() > 128, "{epoch}");
            let installed = vs
                .iter()
                .filter(|v| v["event"] == "moved" && v["dir"] == "installed")
                .count();
            assert_eq!(
                installed as u64,
                epoch["installed"].as_u64().unwrap(),
                "a moved line per entry installed: {epoch}"
            );
            let _ = ev.kill();
            let _ = ev.wait();
        },
    );
}
