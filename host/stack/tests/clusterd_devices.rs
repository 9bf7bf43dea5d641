//! clusterd takes the same card specs as hwctl (`vfio:BDF`, `pci:PATH`): a card it cannot open
//! stops the node at start with the device, the cause and the fix, and a non-zero exit.

use std::process::Command;

fn run_with_card(card: &str) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!(
        "clusterd-devices-{}-{}",
        std::process::id(),
        card.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("node1.conf");
    std::fs::write(
        &conf,
        format!(
            "node = 1\nlisten = \"127.0.0.1:0\"\ncontrol = \"node1.sock\"\nkey = \"{}\"\ncard = \"{card}\"\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clusterd"))
        .args(["run", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a node with `card`; it must stop at start with exit status 1, an error that says
/// every one of `says`, and no panic.
fn refused(card: &str, says: &[&str]) {
    let (code, err) = run_with_card(card);
    assert_eq!(code, Some(1), "{err}");
    for s in says {
        assert!(err.contains(s), "{s:?} not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn vfio_card_that_is_not_there_is_a_clear_error() {
    refused(
        "vfio:0000:99:00.0",
        &["vfio:0000:99:00.0", "no PCI device", "fix:"],
    );
}

#[test]
fn pci_resource_that_is_not_there_is_a_clear_error() {
    refused(
        "pci:/nonexistent/resource0",
        &["pci:/nonexistent/resource0", "fix:"],
    );
}

#[test]
fn unknown_card_spec_names_the_accepted_ones() {
    refused("fpga0", &["fpga0", "vfio:"]);
}
