//! The PCI resource-file backend against ordinary files standing in for a
//! BAR: the mmap register path (bounds, alignment, volatile reads and
//! writes), the regions the driver must cope with (all ones), and every open
//! failure this machine can produce. Needs real `mmap`, so not under Miri.
#![cfg(not(miri))]

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use hal::pci::PciResourceCard;
use hal::regs::BAR_SIZE;
use hal::{BarOffset, HalError, RegIo};

/// A file of `words` little-endian words.
fn region(dir: &Path, name: &str, words: impl IntoIterator<Item = u32>) -> std::path::PathBuf {
    let bytes: Vec<u8> = words.into_iter().flat_map(u32::to_le_bytes).collect();
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// Asserts that the message `msg` mentions every one of `parts`.
fn assert_mentions(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
}

fn bar_words() -> u32 {
    BAR_SIZE / 4
}

/// A temporary `resource0` of `bars` BAR sizes, every word `word`; the
/// directory lives as long as the returned guard.
fn filled_bar(word: u32, bars: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let words = std::iter::repeat_n(word, (bars * bar_words()) as usize);
    let path = region(dir.path(), "resource0", words);
    (dir, path)
}

fn open_err(path: &Path) -> String {
    match PciResourceCard::open(path) {
        Ok(_) => panic!("{} opened but should not", path.display()),
        Err(HalError::Open(msg)) => msg,
        Err(other) => panic!("expected HalError::Open, got {other:?}"),
    }
}

#[test]
fn reads_every_word_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = region(
        dir.path(),
        "resource0",
        (0..bar_words()).map(|i| i.wrapping_mul(0x9E37_79B9)),
    );
    let mut card = PciResourceCard::open(&path).unwrap();
    assert_eq!(card.size(), u64::from(BAR_SIZE));
    assert_eq!(card.describe(), format!("pci:{}", path.display()));
    for i in 0..bar_words() {
        assert_eq!(
            card.read32(BarOffset(4 * i)).unwrap(),
            i.wrapping_mul(0x9E37_79B9)
        );
    }
}

#[test]
fn writes_land_in_the_file_little_endian() {
    let (_dir, path) = filled_bar(0, 1);
    let mut card = PciResourceCard::open(&path).unwrap();
    card.write32(BarOffset(0x14), 0x1122_3344).unwrap();
    card.write32(BarOffset(BAR_SIZE - 4), 0xA5A5_5A5A).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[0x14..0x18], &[0x44, 0x33, 0x22, 0x11]);
    assert_eq!(
        &bytes[BAR_SIZE as usize - 4..],
        &0xA5A5_5A5Au32.to_le_bytes()
    );
    // Neighbours untouched.
    assert_eq!(&bytes[0x10..0x14], &[0; 4]);
    assert_eq!(&bytes[0x18..0x1C], &[0; 4]);
}

#[test]
fn reads_are_not_cached_other_writers_are_seen() {
    // A register that changes under us (as device registers do) must be
    // read afresh every time: write the file behind the mapping's back.
    let (_dir, path) = filled_bar(0, 1);
    let mut card = PciResourceCard::open(&path).unwrap();
    let other = fs::OpenOptions::new().write(true).open(&path).unwrap();
    for v in [1u32, 0xFFFF_FFFF, 0x8000_0000, 0] {
        other.write_all_at(&v.to_le_bytes(), 0x28).unwrap();
        assert_eq!(card.read32(BarOffset(0x28)).unwrap(), v);
    }
    // And a second mapping of the same file sees the first one's writes.
    let mut twin = PciResourceCard::open(&path).unwrap();
    card.write32(BarOffset(0x100), 0xC0FF_EE00).unwrap();
    assert_eq!(twin.read32(BarOffset(0x100)).unwrap(), 0xC0FF_EE00);
}

#[test]
fn misaligned_and_out_of_range_accesses_are_errors_not_faults() {
    let (_dir, path) = filled_bar(7, 1);
    let mut card = PciResourceCard::open(&path).unwrap();
    hal::conformance::assert_bad_offsets_rejected(
        &mut card,
        &[1, 2, 3, 0x1001, BAR_SIZE - 1],
        &[BAR_SIZE, BAR_SIZE + 4, 0xFFFF_FFFC],
    );
    // The rejected writes changed nothing.
    let bytes = fs::read(&path).unwrap();
    assert!(bytes.chunks(4).all(|w| w == 7u32.to_le_bytes()));
}

#[test]
fn a_larger_bar_is_mapped_whole() {
    let (_dir, path) = filled_bar(0, 2);
    let mut card = PciResourceCard::open(&path).unwrap();
    assert_eq!(card.size(), 2 * u64::from(BAR_SIZE));
    card.write32(BarOffset(2 * BAR_SIZE - 4), 9).unwrap();
    assert_eq!(card.read32(BarOffset(2 * BAR_SIZE - 4)).unwrap(), 9);
}

#[test]
fn an_all_ones_region_reads_all_ones_without_error() {
    // A device that fell off the bus reads all ones; the backend passes that
    // through and leaves the verdict to the driver.
    let (_dir, path) = filled_bar(u32::MAX, 1);
    let mut card = PciResourceCard::open(&path).unwrap();
    for off in (0..BAR_SIZE).step_by(0x404) {
        let off = off & !3;
        assert_eq!(card.read32(BarOffset(off)).unwrap(), u32::MAX);
    }
}

#[test]
fn too_small_file_is_refused_with_sizes_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    for (name, words) in [
        ("small", 1024),
        ("empty", 0),
        ("one_short", bar_words() - 1),
    ] {
        let path = region(dir.path(), name, std::iter::repeat_n(0, words as usize));
        let msg = open_err(&path);
        assert!(
            msg.starts_with(&format!(
                "pci:{}: BAR too small: {} bytes",
                path.display(),
                words * 4
            )),
            "{msg}"
        );
        assert!(msg.contains(&BAR_SIZE.to_string()), "{msg}");
        assert!(msg.contains("fix:") && msg.contains("lspci"), "{msg}");
    }
}

#[test]
fn missing_resource_file_and_missing_device_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let msg = open_err(&dir.path().join("resource7"));
    assert_mentions(&msg, &["no such resource file", "resource0"]);

    let msg = open_err(&dir.path().join("0000:ff:1f.7/resource0"));
    assert_mentions(&msg, &["no such device", "lspci -D", "rescan"]);
}

#[test]
fn a_directory_is_not_a_bar() {
    let dir = tempfile::tempdir().unwrap();
    let msg = open_err(dir.path());
    assert_mentions(&msg, &["is a directory", "resource0"]);
}

/// A fake sysfs device directory holding a BAR-sized `resource0`.
fn fake_sysfs_device(root: &Path, bdf: &str) -> std::path::PathBuf {
    let dev = root.join("sys/bus/pci/devices").join(bdf);
    fs::create_dir_all(&dev).unwrap();
    fs::write(dev.join("resource0"), vec![0u8; BAR_SIZE as usize]).unwrap();
    dev
}

/// A fake sysfs device `0000:03:00.0` bound to the kernel driver `driver`.
fn device_bound_to(driver: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dev = fake_sysfs_device(root.path(), "0000:03:00.0");
    let drv = root.path().join("sys/bus/pci/drivers").join(driver);
    fs::create_dir_all(&drv).unwrap();
    std::os::unix::fs::symlink(&drv, dev.join("driver")).unwrap();
    (root, dev)
}

#[test]
fn a_disabled_device_is_refused_with_the_enable_command() {
    let root = tempfile::tempdir().unwrap();
    let dev = fake_sysfs_device(root.path(), "0000:03:00.0");
    fs::write(dev.join("enable"), "0\n").unwrap();
    let msg = open_err(&dev.join("resource0"));
    assert_mentions(
        &msg,
        &[
            "disabled",
            &format!("echo 1 > {}", dev.join("enable").display()),
        ],
    );

    fs::write(dev.join("enable"), "1\n").unwrap();
    PciResourceCard::open(&dev.join("resource0")).unwrap();
}

#[test]
fn a_device_owned_by_a_kernel_driver_is_refused_with_the_unbind_command() {
    let (_root, dev) = device_bound_to("ixgbe");
    let msg = open_err(&dev.join("resource0"));
    assert_mentions(
        &msg,
        &[
            "owned by the kernel driver `ixgbe`",
            &format!(
                "echo 0000:03:00.0 > {}",
                dev.join("driver/unbind").display()
            ),
        ],
    );
}

#[test]
fn a_device_bound_to_vfio_pci_points_at_the_vfio_backend() {
    let (_root, dev) = device_bound_to("vfio-pci");
    let msg = open_err(&dev.join("resource0"));
    assert!(msg.contains("--device vfio:0000:03:00.0"), "{msg}");
}

#[test]
fn pci_stub_and_uio_leave_the_bar_to_us() {
    for driver in ["pci-stub", "uio_pci_generic"] {
        let (_root, dev) = device_bound_to(driver);
        PciResourceCard::open(&dev.join("resource0")).unwrap();
    }
}

#[test]
fn open_spec_selects_the_backend_by_prefix() {
    let (_dir, path) = filled_bar(0x5354_4331, 1);
    let mut regs = hal::hw::open_spec(&format!("pci:{}", path.display()))
        .unwrap()
        .unwrap();
    assert_eq!(regs.read32(BarOffset(0xC)).unwrap(), 0x5354_4331);
    assert!(hal::hw::open_spec("model").is_none());
    assert!(hal::hw::open_spec("rtl").is_none());
    let Some(Err(HalError::Open(msg))) = hal::hw::open_spec("pci:") else {
        panic!("empty pci: spec must be an error");
    };
    assert!(msg.contains("resource0"), "{msg}");
    let Some(Err(HalError::Open(msg))) = hal::hw::open_spec("vfio:not-an-address") else {
        panic!("bad vfio: spec must be an error");
    };
    assert!(msg.contains("is not a PCI address"), "{msg}");
}

#[test]
fn the_card_moves_between_threads() {
    let (_dir, path) = filled_bar(0, 1);
    let mut card: Box<dyn RegIo> = Box::new(PciResourceCard::open(&path).unwrap());
    card.write32(BarOffset(0x14), 42).unwrap();
    let v = std::thread::spawn(move || card.read32(BarOffset(0x14)).unwrap())
        .join()
        .unwrap();
    assert_eq!(v, 42);
}
