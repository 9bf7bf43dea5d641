//! hwctl on real-hardware device specs (`vfio:BDF`, `pci:PATH`), run as a
//! process on a machine without a card: the failures name the device, the
//! cause and the fix; a file holding a card's register image stands in for a
//! sysfs `resource0` and is attached (not reset) and read.

mod common;

use std::path::PathBuf;

use hal::regs::{ident, BAR_SIZE};
use hal::{BarOffset, RegIo};
use serde_json::Value;
use sim_bridge::model::ModelCard;

use common::{hwctl, TempDir};

/// Fails with exit 1, names the device, the cause (`needle`) and a fix; no
/// panic, nothing on stdout.
fn fails(args: &[&str], device: &str, needle: &str) {
    let stderr = common::fails(args, 1, needle);
    assert!(stderr.contains(device), "names {device}: {stderr}");
    assert!(stderr.contains("fix:"), "names a fix: {stderr}");
}

/// Writes `bytes` to the file `name` in `dir`; returns its path and its `pci:PATH` spec.
fn pci_file(dir: &TempDir, name: &str, bytes: impl AsRef<[u8]>) -> (PathBuf, String) {
    let path = dir.dir().join(name);
    std::fs::write(&path, bytes).unwrap();
    let spec = format!("pci:{}", path.display());
    (path, spec)
}

/// The register image of a reference-model card holding `n` sample entries.
///
/// A static file cannot run commands: whatever hwctl writes to `CMD`, `STATUS`
/// keeps reading what the model's last command left there. That command is a
/// `READ` of the last (empty) slot, so the attach's shadow rebuild sees
/// completed reads of empty slots.
fn image(n: u32) -> Vec<u8> {
    let mut card = driver::Card::probe(ModelCard::new()).expect("probe model");
    for i in 0..n {
        card.insert(&driver::sample::sample_entry(i))
            .expect("insert");
    }
    let last = driver::CamIndex(card.depth() - 1);
    card.read(last).expect("read the last slot");
    let mut model = card.into_inner();
    (0..BAR_SIZE / 4)
        .flat_map(|i| {
            model
                .read32(BarOffset(4 * i))
                .expect("model read")
                .to_le_bytes()
        })
        .collect()
}

#[test]
fn vfio_without_a_card_is_a_clear_error() {
    fails(
        &["--device", "vfio:0000:99:00.0", "status"],
        "vfio:0000:99:00.0",
        "0000:99:00.0",
    );
}

#[test]
fn pci_without_a_file_is_a_clear_error() {
    fails(
        &["--device", "pci:/nonexistent/resource0", "status"],
        "pci:/nonexistent/resource0",
        "does not exist",
    );
}

#[test]
fn pci_bar_too_small_and_garbage_are_clear_errors() {
    let dir = TempDir::new("dev-small");
    let (_, spec) = pci_file(&dir, "resource0", [0u8; 64]);
    fails(&["--device", &spec, "status"], &spec, "64");

    let (_, spec) = pci_file(&dir, "garbage", vec![0x5au8; BAR_SIZE as usize]);
    fails(&["--device", &spec, "status"], &spec, "wrong magic");
}

#[test]
fn pci_file_image_is_attached_not_reset() {
    let dir = TempDir::new("dev-image");
    let img = image(3);
    let (path, spec) = pci_file(&dir, "resource0", &img);

    let o = hwctl(&["--device", &spec, "--json", "status"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["device"], spec.as_str());
    assert_eq!(v["blocks"][0]["name"], "IDENT");
    assert_eq!(v["cam"]["depth"], 1024);
    assert_eq!(v["occupancy"], 3, "the card's own OCCUPANCY register");

    let o = hwctl(&["--device", &spec, "regs"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("CAM block at 0x01000"));

    // Looking did not reset the card: neither the probe's scratch test nor a
    // soft reset was written (the attach only ran READ commands).
    let now = std::fs::read(&path).unwrap();
    for reg in [ident::SCRATCH.offset, ident::CONTROL.offset] {
        let at = reg as usize;
        assert_eq!(
            now[at..at + 4],
            img[at..at + 4],
            "register 0x{reg:x} untouched"
        );
    }

    // Seeding writes to the card: refused on a real device.
    let o = hwctl(&["--device", &spec, "--seed-entries", "3", "status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing"));
}

#[test]
fn a_card_gone_mid_command_names_device_cause_and_fix() {
    let dir = TempDir::new("dev-gone");
    let mut img = image(0);
    // The CAM block sits at 0x1000; its OCCUPANCY register reads all ones, as
    // a card that dropped off the bus after the attach would.
    let at = 0x1000 + hal::regs::cam::OCCUPANCY.offset as usize;
    img[at..at + 4].copy_from_slice(&[0xff; 4]);
    let (_, spec) = pci_file(&dir, "resource0", &img);
    fails(&["--device", &spec, "status"], &spec, "device gone");
}

#[test]
fn a_card_another_process_drives_is_not_touched() {
    let dir = TempDir::new("dev-locked");
    let (path, spec) = pci_file(&dir, "resource0", image(2));
    // Another driver of the card (a clusterd) holds the lock.
    let held = nix::fcntl::Flock::lock(
        std::fs::File::open(&path).unwrap(),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, e)| e)
    .expect("lock the image");
    let before = std::fs::read(&path).unwrap();
    fails(&["--device", &spec, "status"], &spec, "in use");
    let o = hwctl(&["--device", &spec, "status"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unix:PATH"));
    assert_eq!(std::fs::read(&path).unwrap(), before, "not a single write");
    drop(held);
    let o = hwctl(&["--device", &spec, "status"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
