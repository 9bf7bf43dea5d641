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
            "node = 1\nlisten = 127.0.0.1:0\ncontrol = node1.sock\nkey = {}\ncard = {card}\n",
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

#[test]
fn vfio_card_that_is_not_there_is_a_clear_error() {
    let (code, err) = run_with_card("vfio:0000:99:00.0");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("vfio:0000:99:00.0"), "{err}");
    assert!(err.contains("no PCI device"), "{err}");
    assert!(err.contains("fix:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn pci_resource_that_is_not_there_is_a_clear_error() {
    let (code, err) = run_with_card("pci:/nonexistent/resource0");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("pci:/nonexistent/resource0"), "{err}");
    assert!(err.contains("fix:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_card_spec_names_the_accepted_ones() {
    let (code, err) = run_with_card("fpga0");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("fpga0"), "{err}");
    assert!(err.contains("vfio:"), "{err}");
}
