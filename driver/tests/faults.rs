//! The driver's error paths: faults injected into the reference model, and
//! tiny fake register files for block-chain shapes.

use std::collections::HashMap;

use driver::sample::sample_entry;
use driver::{CamCmd, Card, CmdErrorCode, DriverError};
use hal::fault::{Fault, FaultInjector};
use hal::regs::{block_type, cam, header, ident, UNMAPPED_PATTERN};
use hal::{BarOffset, HalError, RegIo};
use sim_bridge::model::ModelCard;

fn cam_reg(r: hal::regs::Reg) -> BarOffset {
    BarOffset(cam::BASE + r.offset)
}

/// A probed card over a fault injector with no faults yet.
fn faulty() -> Card<FaultInjector<ModelCard>> {
    Card::probe(FaultInjector::new(ModelCard::with_depth(128).unwrap())).unwrap()
}

fn probe_with(f: Fault) -> Result<Card<FaultInjector<ModelCard>>, DriverError> {
    let mut inj = FaultInjector::new(ModelCard::new());
    inj.inject(f);
    Card::probe(inj)
}

/// Probes a card whose register at `offset` always reads `value`.
fn probe_forcing(
    offset: BarOffset,
    value: u32,
) -> Result<Card<FaultInjector<ModelCard>>, DriverError> {
    probe_with(Fault::ForceBits {
        offset,
        mask: u32::MAX,
        value,
    })
}

#[test]
fn stuck_busy_times_out_and_the_card_recovers() {
    let mut c = faulty();
    c.set_poll_limit(50);
    c.regs_mut().inject(Fault::StuckBits {
        offset: cam_reg(cam::STATUS),
        bits: cam::status::BUSY.put(1),
    });
    match c.insert(&sample_entry(1)) {
        Err(DriverError::Timeout {
            cmd: CamCmd::Write,
            polls: 50,
        }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(c.is_empty(), "a failed insert must not enter the shadow");
    c.regs_mut().clear();
    c.insert(&sample_entry(1)).unwrap();
    assert_eq!(c.len(), 1);
}

#[test]
fn error_status_is_reported_with_the_command() {
    let mut c = faulty();
    let err = cam::status::ERR.put(cam::err::BAD_INDEX);
    c.regs_mut().inject(Fault::ForceBits {
        offset: cam_reg(cam::STATUS),
        mask: cam::status::ERR.put(0xFF),
        value: err,
    });
    match c.search(&sample_entry(0).key) {
        Err(DriverError::CommandError {
            cmd: CamCmd::Search,
            code: CmdErrorCode::BadIndex,
        }) => {}
        other => panic!("{other:?}"),
    }
    c.regs_mut().clear();
    let unknown = cam::status::ERR.put(0x77);
    c.regs_mut().inject(Fault::ForceBits {
        offset: cam_reg(cam::STATUS),
        mask: cam::status::ERR.put(0xFF),
        value: unknown,
    });
    let e = c.flush_all().unwrap_err();
    assert!(matches!(
        e,
        DriverError::CommandError {
            code: CmdErrorCode::Other(0x77),
            ..
        }
    ));
    assert!(e.to_string().contains("FLUSH_ALL"), "{e}");
}

#[test]
fn all_ones_means_device_gone() {
    // At probe.
    assert!(matches!(
        probe_with(Fault::AllOnes { after_reads: 0 }),
        Err(DriverError::DeviceGone { .. })
    ));
    // Partway through the chain walk.
    assert!(matches!(
        probe_with(Fault::AllOnes { after_reads: 3 }),
        Err(DriverError::DeviceGone { .. })
    ));
    // In service: commands and counters.
    let mut c = faulty();
    let r = c.regs_mut().reads();
    c.regs_mut().inject(Fault::AllOnes { after_reads: r });
    assert!(matches!(
        c.insert(&sample_entry(0)),
        Err(DriverError::DeviceGone { .. })
    ));
    assert!(matches!(c.counters(), Err(DriverError::DeviceGone { .. })));
    assert!(matches!(c.reset(), Err(DriverError::DeviceGone { .. })));

    // Gone between STATUS and the read of a search's answer.
    let mut c = faulty();
    c.insert(&sample_entry(0)).unwrap();
    let r = c.regs_mut().reads();
    c.regs_mut().inject(Fault::AllOnes { after_reads: r + 1 });
    let e = c.search(&sample_entry(0).key).unwrap_err();
    assert!(
        matches!(e, DriverError::DeviceGone { offset } if offset == cam_reg(cam::INDEX)),
        "{e:?}"
    );
    // ...or of a READ's identifier.
    c.regs_mut().clear();
    let r = c.regs_mut().reads();
    c.regs_mut().inject(Fault::AllOnes {
        after_reads: r + 1 + 20 + 1,
    });
    let e = c.dump(None).unwrap_err();
    assert!(
        matches!(e, DriverError::DeviceGone { offset } if offset == cam_reg(cam::DID)),
        "{e:?}"
    );
}

#[test]
fn bus_errors_surface_as_hal_errors() {
    let mut c = faulty();
    c.regs_mut().inject(Fault::BusError { after: 0 });
    let e = c.insert(&sample_entry(0)).unwrap_err();
    assert!(matches!(e, DriverError::Hal(HalError::Bus { .. })), "{e:?}");
    assert!(c.is_empty());
}

#[test]
fn bit_flips_are_caught() {
    let mut c = faulty();
    for n in 0..10 {
        c.insert(&sample_entry(n)).unwrap();
    }
    type Expect = fn(&DriverError) -> bool;
    let bad_index: Expect = |e| matches!(e, DriverError::BadIndex { .. });
    let inconsistent: Expect = |e| matches!(e, DriverError::Inconsistent { .. });
    let bad_status: Expect = |e| matches!(e, DriverError::BadStatus { .. });
    // SEARCH's answer with one bit flipped on the way back.
    let search_faults: [(&str, hal::regs::Reg, u32, Expect); 4] = [
        ("an index beyond the depth", cam::INDEX, 1 << 20, bad_index),
        ("an index never written", cam::INDEX, 1 << 6, inconsistent),
        ("a result not written", cam::RESULT, 1 << 3, inconsistent),
        ("a reserved STATUS bit", cam::STATUS, 1 << 20, bad_status),
    ];
    for (case, reg, bits, expected) in search_faults {
        let offset = cam_reg(reg);
        c.regs_mut().inject(Fault::FlipBits { offset, bits });
        let e = c.search(&sample_entry(0).key).err();
        assert!(e.as_ref().is_some_and(expected), "{case}: {e:?}");
        c.regs_mut().clear();
    }
    // DONE missing: the command never ran.
    c.regs_mut().inject(Fault::ForceBits {
        offset: cam_reg(cam::STATUS),
        mask: 0xFFFF_FFFF,
        value: 0,
    });
    assert!(matches!(
        c.flush_all(),
        Err(DriverError::BadStatus {
            cmd: CamCmd::FlushAll,
            status: 0
        })
    ));
    c.regs_mut().clear();
    // A key bit flipped on the wire shows up in verify.
    c.regs_mut().inject(Fault::DropWrites {
        offset: BarOffset(cam::BASE + cam::KEY.at(0)),
    });
    c.insert(&sample_entry(20)).unwrap();
    c.regs_mut().clear();
    assert!(matches!(c.verify(), Err(DriverError::Inconsistent { .. })));
    // Scratch test at probe.
    assert!(matches!(
        probe_with(Fault::FlipBits {
            offset: BarOffset(ident::SCRATCH.offset),
            bits: 1
        }),
        Err(DriverError::ScratchMismatch { .. })
    ));
}

#[test]
fn wrong_magic_and_unknown_major_are_refused() {
    let e = probe_with(Fault::FlipBits {
        offset: BarOffset(ident::MAGIC.offset),
        bits: 0x100,
    })
    .unwrap_err();
    assert!(matches!(e, DriverError::WrongMagic { .. }), "{e:?}");
    // The CAM of version 1 kept 8-bit identifiers at other offsets: refused.
    let v = header::version::MAJOR.put(1) | 7;
    let e = probe_forcing(cam_reg(header::VERSION), v).unwrap_err();
    assert!(
        matches!(
            e,
            DriverError::UnsupportedVersion {
                block: "CAM",
                major: 1,
                supported: 2
            }
        ),
        "{e:?}"
    );
    // A newer minor version is fine.
    let v = header::version::MAJOR.put(2) | 9;
    let c = probe_forcing(cam_reg(header::VERSION), v).unwrap();
    assert_eq!(c.blocks()[1].minor, 9);
    let e = probe_forcing(cam_reg(cam::CAP_KEY_BITS), 160).unwrap_err();
    assert!(
        matches!(
            e,
            DriverError::BadCapability {
                name: "CAP_KEY_BITS",
                value: 160,
                ..
            }
        ),
        "{e:?}"
    );
    let e = probe_forcing(cam_reg(cam::CAP_DEPTH), 0).unwrap_err();
    assert!(
        matches!(
            e,
            DriverError::BadCapability {
                name: "CAP_DEPTH",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn chain_faults_in_the_model() {
    // NEXT = 0 ends the chain, so a loop has to point at a block itself.
    let e = probe_forcing(cam_reg(header::NEXT), cam::BASE).unwrap_err();
    assert!(
        matches!(e, DriverError::ChainLoop { offset, blocks: 2 } if offset == cam::BASE),
        "{e:?}"
    );
    // Misaligned and out-of-BAR pointers.
    for bad in [cam::BASE + 2, 0xFFFF_FFF0] {
        let e = probe_forcing(cam_reg(header::NEXT), bad).unwrap_err();
        assert!(matches!(e, DriverError::BadNextPointer { .. }), "{e:?}");
    }
    // Pointing into unmapped space.
    let e = probe_forcing(cam_reg(header::NEXT), 0x8000).unwrap_err();
    assert!(
        matches!(
            e,
            DriverError::UnknownBlock {
                offset: 0x8000,
                type_id: UNMAPPED_PATTERN
            }
        ),
        "{e:?}"
    );
}

/// A register file holding only block headers, for chain shapes the model
/// cannot produce.
struct FakeChain {
    regs: HashMap<u32, u32>,
}

impl FakeChain {
    /// Blocks `(offset, type, version, next)`; the first must be at 0.
    fn new(blocks: &[(u32, u32, u32, u32)]) -> Self {
        let mut regs = HashMap::new();
        for &(o, t, v, n) in blocks {
            regs.insert(o + header::TYPE.offset, t);
            regs.insert(o + header::VERSION.offset, v);
            regs.insert(o + header::NEXT.offset, n);
        }
        regs.insert(ident::MAGIC.offset, ident::values::MAGIC);
        Self { regs }
    }
}

impl RegIo for FakeChain {
    fn read32(&mut self, offset: BarOffset) -> Result<u32, HalError> {
        hal::io::check_access(offset, self.size())?;
        Ok(*self.regs.get(&offset.0).unwrap_or(&UNMAPPED_PATTERN))
    }
    fn write32(&mut self, offset: BarOffset, _value: u32) -> Result<(), HalError> {
        hal::io::check_access(offset, self.size())?;
        Ok(())
    }
    fn size(&self) -> u64 {
        0x1_0000
    }
    fn describe(&self) -> String {
        "fake-chain".into()
    }
}

const V1: u32 = 0x0001_0000;

#[test]
fn chain_shapes() {
    use driver::walk_chain;
    // Blocks of unknown type are listed and skipped.
    let mut f = FakeChain::new(&[
        (0, block_type::IDENT, V1, 0x100),
        (0x100, 0x1234_5678, V1, 0x200),
        (0x200, 0x1234_5679, V1, 0),
    ]);
    let blocks = walk_chain(&mut f).unwrap();
    assert_eq!(
        blocks.iter().map(|b| b.name).collect::<Vec<_>>(),
        ["IDENT", "UNKNOWN", "UNKNOWN"]
    );
    // Unknown blocks are skipped, but a card without a CAM is refused.
    assert!(matches!(
        Card::probe(f),
        Err(DriverError::MissingBlock { block: "CAM" })
    ));

    let mut f = FakeChain::new(&[
        (0, block_type::IDENT, V1, 0x100),
        (0x100, 0x1234_5678, V1, 0),
    ]);
    f.regs.insert(0x108, 0x100); // self loop
    assert!(matches!(
        walk_chain(&mut f),
        Err(DriverError::ChainLoop {
            offset: 0x100,
            blocks: 2
        })
    ));

    // A long chain of distinct blocks: longer than MAX_BLOCKS is a loop too.
    let n = hal::regs::MAX_BLOCKS as u32 + 4;
    let mut blocks = vec![(0, block_type::IDENT, V1, 0x100)];
    for i in 1..n {
        blocks.push((
            i * 0x100,
            0x4242_0000 + i,
            V1,
            if i + 1 < n { (i + 1) * 0x100 } else { 0 },
        ));
    }
    let mut f = FakeChain::new(&blocks);
    assert!(
        matches!(walk_chain(&mut f), Err(DriverError::ChainLoop { blocks, .. }) if blocks == hal::regs::MAX_BLOCKS)
    );

    // Identity block with the wrong type.
    let mut f = FakeChain::new(&[(0, block_type::CAM, V1, 0)]);
    assert!(matches!(
        walk_chain(&mut f),
        Err(DriverError::WrongMagic { .. })
    ));
    // Identity block of an unknown major.
    let mut f = FakeChain::new(&[(0, block_type::IDENT, 0x0003_0000, 0)]);
    assert!(matches!(
        walk_chain(&mut f),
        Err(DriverError::UnsupportedVersion {
            block: "IDENT",
            major: 3,
            ..
        })
    ));
}
