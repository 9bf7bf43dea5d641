//! The driver's probe over the real-hardware mmap path: a file standing in
//! for BAR0, mapped through `hal::pci::PciResourceCard` exactly as a sysfs
//! `resource0` would be, holding a good card image, garbage, all ones or a
//! wrong version. A static file cannot execute commands, so these tests stop
//! at what a probe and register reads can show.
#![cfg(not(miri))]

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use driver::{Card, DriverError};
use hal::pci::PciResourceCard;
use hal::regs::{self, header, ident, BAR_SIZE};
use hal::{BarOffset, RegIo};
use sim_bridge::model::ModelCard;

/// The register image of a freshly reset reference-model card: what a
/// working card's BAR0 reads, word by word.
fn good_image() -> Vec<u32> {
    let mut model = ModelCard::new();
    (0..BAR_SIZE / 4)
        .map(|i| model.read32(BarOffset(4 * i)).expect("model read"))
        .collect()
}

fn write_image(dir: &Path, words: &[u32]) -> PathBuf {
    let path = dir.join("resource0");
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    fs::write(&path, bytes).unwrap();
    path
}

fn probe(
    words: &[u32],
) -> (
    tempfile::TempDir,
    Result<Card<PciResourceCard>, DriverError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_image(dir.path(), words);
    let regs = PciResourceCard::open(&path).expect("BAR-sized file maps");
    (dir, Card::probe(regs))
}

fn word(off: u32) -> usize {
    (off / 4) as usize
}

#[test]
fn a_good_image_probes() {
    let (_dir, card) = probe(&good_image());
    let card = card.expect("probe of a good image");
    assert!(
        card.info().backend.starts_with("pci:"),
        "{}",
        card.info().backend
    );
    assert_eq!(card.info().bar_bytes, BAR_SIZE);
    assert_eq!(card.blocks()[0].type_id, regs::block_type::IDENT);
    assert!(card
        .blocks()
        .iter()
        .any(|b| b.type_id == regs::block_type::CAM));
}

/// Probes a BAR holding `words` and asserts the driver refuses it with an error `expected`
/// accepts.
fn assert_refused(words: &[u32], expected: impl Fn(&DriverError) -> bool) {
    let (_dir, r) = probe(words);
    assert!(r.as_ref().err().is_some_and(&expected), "{:?}", r.err());
}

#[test]
fn probe_writes_reach_the_bar() {
    // Probe tests the bus with the scratch register and soft-resets the
    // card: both writes must land in the mapped file.
    let dir = tempfile::tempdir().unwrap();
    let path = write_image(dir.path(), &good_image());
    let card = Card::probe(PciResourceCard::open(&path).unwrap()).unwrap();
    drop(card);
    let bytes = fs::read(&path).unwrap();
    let at =
        |off: u32| u32::from_le_bytes(bytes[off as usize..off as usize + 4].try_into().unwrap());
    assert_eq!(at(ident::SCRATCH.offset), 0x5A5A_A5A5);
    assert_eq!(at(ident::CONTROL.offset), ident::control::SOFT_RESET.put(1));
}

#[test]
fn garbage_is_wrong_magic() {
    // A deterministic pseudo-random BAR (xorshift), with no all-ones word.
    let mut x: u32 = 0x1234_5678;
    let garbage: Vec<u32> = (0..BAR_SIZE / 4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x == u32::MAX {
                0
            } else {
                x
            }
        })
        .collect();
    let (_dir, r) = probe(&garbage);
    match r {
        Err(DriverError::WrongMagic {
            found, expected, ..
        }) => {
            assert_eq!(found, garbage[word(ident::MAGIC.offset)]);
            assert_eq!(expected, ident::values::MAGIC);
        }
        other => panic!("garbage must be WrongMagic, got {:?}", other.err()),
    }
}

#[test]
fn all_zeros_is_wrong_magic() {
    assert_refused(&vec![0; word(BAR_SIZE)], |e| {
        matches!(e, DriverError::WrongMagic { found: 0, .. })
    });
}

#[test]
fn all_ones_is_device_gone() {
    let (_dir, r) = probe(&vec![u32::MAX; word(BAR_SIZE)]);
    match r {
        Err(e @ DriverError::DeviceGone { .. }) => {
            assert!(e.to_string().contains("device gone"), "{e}");
        }
        other => panic!("all ones must be DeviceGone, got {:?}", other.err()),
    }
}

#[test]
fn right_magic_in_the_wrong_place_is_wrong_magic() {
    // The magic where TYPE should be: the wrong BAR or a shifted window.
    let mut img = vec![regs::UNMAPPED_PATTERN; word(BAR_SIZE)];
    img[0] = ident::values::MAGIC;
    assert_refused(&img, |e| matches!(e, DriverError::WrongMagic { .. }));
}

#[test]
fn an_unknown_identity_major_version_is_refused() {
    let mut img = good_image();
    img[word(header::VERSION.offset)] = header::version::MAJOR.put(2);
    let (_dir, r) = probe(&img);
    match r {
        Err(DriverError::UnsupportedVersion {
            block,
            major,
            supported,
        }) => {
            assert_eq!((block, major, supported), ("IDENT", 2, ident::MAJOR));
        }
        other => panic!("want UnsupportedVersion, got {:?}", other.err()),
    }
}

#[test]
fn an_unknown_cam_major_version_is_refused() {
    let mut img = good_image();
    let cam = regs::cam::BASE + header::VERSION.offset;
    img[word(cam)] = header::version::MAJOR.put(u32::from(regs::cam::MAJOR) + 1);
    assert_refused(&img, |e| {
        matches!(e, DriverError::UnsupportedVersion { block: "CAM", .. })
    });
}

#[test]
fn a_chain_pointing_outside_the_bar_is_refused() {
    let mut img = good_image();
    img[word(header::NEXT.offset)] = BAR_SIZE + 0x1000;
    assert_refused(&img, |e| matches!(e, DriverError::BadNextPointer { .. }));
}

#[test]
fn a_card_without_a_cam_is_refused() {
    let mut img = good_image();
    img[word(header::NEXT.offset)] = 0;
    assert_refused(&img, |e| {
        matches!(e, DriverError::MissingBlock { block: "CAM" })
    });
}

#[test]
fn a_device_that_vanishes_after_probe_is_device_gone_not_a_panic() {
    // Probe a good image, then turn the BAR to all ones behind the mapping
    // (what a surprise removal looks like) and keep using the card.
    let dir = tempfile::tempdir().unwrap();
    let path = write_image(dir.path(), &good_image());
    let mut card = Card::probe(PciResourceCard::open(&path).unwrap()).unwrap();
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&vec![0xFF; BAR_SIZE as usize], 0)
        .unwrap();
    match card.counters() {
        Err(DriverError::DeviceGone { .. }) => {}
        other => panic!("want DeviceGone, got {other:?}"),
    }
    assert!(matches!(card.reset(), Err(DriverError::DeviceGone { .. })));
}

#[test]
fn a_device_selected_by_spec_probes_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_image(dir.path(), &good_image());
    let regs = hal::hw::open_spec(&format!("pci:{}", path.display()))
        .expect("pci: is a hardware spec")
        .expect("opens");
    let card = Card::probe(regs).expect("probe through Box<dyn RegIo>");
    assert_eq!(card.info().backend, format!("pci:{}", path.display()));
}

#[test]
fn a_too_small_bar_never_reaches_the_driver() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_image(dir.path(), &good_image()[..1024]);
    let e = PciResourceCard::open(&path).unwrap_err().to_string();
    assert!(e.contains("BAR too small"), "{e}");
}
