//! Fuzz the Raft receive path: authenticated (the sender id is the transport's) but arbitrary
//! Raft messages go to a consensus participant with real state files; nothing may panic, and
//! the files it wrote must open again.
#![no_main]

use host::core::ids::{IdCount, NodeId};
use host::daemon::consensus::Consensus;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("raft-step-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let voters = [NodeId(1), NodeId(2), NodeId(3)];
    let count = IdCount::new(8).unwrap();
    let open = || Consensus::open(NodeId(1), &voters, &[NodeId(4)], count, dir.clone());
    let mut c = open().expect("a fresh state directory opens");
    // Messages split on a length prefix; the first byte of each picks the authenticated
    // sender and how many ticks pass before it.
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(rest[0]).min(rest.len() - 2);
        let ctl = rest[1];
        let msg = &rest[2..2 + n];
        rest = &rest[2 + n..];
        for _ in 0..(ctl >> 4) {
            c.tick();
        }
        let from = NodeId(u16::from(ctl & 3) + 2);
        let _ = c.step(from, msg);
        c.poll().expect("state persists");
        let _ = c.take_messages();
        let _ = c.take_committed();
    }
    drop(c);
    open().expect("the state written reopens");
    let _ = std::fs::remove_dir_all(&dir);
});
