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
    c.step_hostile(data).expect("state persists");
    drop(c);
    open().expect("the state written reopens");
    let _ = std::fs::remove_dir_all(&dir);
});
