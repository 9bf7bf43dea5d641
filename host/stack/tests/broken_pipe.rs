//! A reader that goes away (`clusterd demo | head -2`, `clusterd ctl ... | head`,
//! `hwctl ... dump | head -1`) ends the tools quietly: no panic message, an ordinary exit status
//! (issue 14, item 1).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with its standard output a pipe whose read end is closed before it starts; its
/// exit status code and standard error.
fn closed_before_start(mut cmd: Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = cmd
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd`, reads `lines` lines of its standard output, closes the pipe and waits (at most
/// `limit`); its exit status code and standard error.
fn closed_after(mut cmd: Command, lines: usize, limit: Duration) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut r = BufReader::new(child.stdout.take().expect("stdout"));
    for _ in 0..lines {
        let mut l = String::new();
        r.read_line(&mut l).expect("read a line");
        assert!(!l.is_empty(), "the tool ended before {lines} lines");
    }
    drop(r);
    let start = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running {limit:?} after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Of a tool's run (its exit status code and standard error): it ended with exit status
/// `code` and no panic message; its standard error.
fn ended_quietly((status, stderr): (Option<i32>, String), code: i32) -> String {
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status, Some(code), "{stderr}");
    stderr
}

#[test]
fn hwctl_dump_into_a_closed_pipe() {
    // 1024 entries: more than a pipe buffer holds, so the write meets the closed end
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hwctl"));
    cmd.args(["--device", "model", "--seed-entries", "1024", "dump"]);
    ended_quietly(closed_after(cmd, 1, Duration::from_secs(30)), 0);

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hwctl"));
    cmd.args(["--device", "model", "--seed-entries", "20", "dump"]);
    ended_quietly(closed_before_start(cmd), 0);
}

#[test]
fn clusterd_ctl_and_keygen_into_a_closed_pipe() {
    // a command the node would not accept: ctl prints the refusal (nobody reads it) and says
    // so with exit status 1, without a panic
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clusterd"));
    cmd.args(["ctl", "--socket", "no-such.sock", "no_such_command"]);
    let stderr = ended_quietly(closed_before_start(cmd), 1);
    assert!(
        stderr.contains("not a command the node accepts"),
        "{stderr}"
    );

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clusterd"));
    cmd.arg("keygen");
    ended_quietly(closed_before_start(cmd), 0);
}

#[test]
fn clusterd_demo_into_head_2() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clusterd"));
    cmd.args([
        "demo",
        "--nodes",
        "1",
        "--no-faults",
        "--sas",
        "0",
        "--pps",
        "200",
        "--duration",
        "20",
    ]);
    // the banner and "cluster up"; the next progress line meets the closed pipe and the demo
    // stops there, long before its 20 seconds
    ended_quietly(closed_after(cmd, 2, Duration::from_secs(15)), 0);
}
