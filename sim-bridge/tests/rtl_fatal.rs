//! Verilator fatal errors come back as Rust errors, never as an abort; the
//! depth is checked; random power-on state is cleared by reset.
#![cfg(feature = "verilator")]

use hal::regs::{cam, cam::cmd, cam::status, ident};
use hal::{BarOffset, HalError, RegIo};
use sim_bridge::verilator::{RtlCard, RTL_DEPTH};

#[test]
fn verilator_fatal_error_is_a_rust_error() {
    // Verilator's runtime calls vl_fatal on a +verilator+ argument it does not
    // know; the shim turns that into an error instead of std::abort.
    let e = RtlCard::with_args(RTL_DEPTH, &["+verilator+no+such+option"]).unwrap_err();
    match e {
        HalError::SimulatorStopped { reason } => {
            assert!(reason.contains("Unknown runtime argument"), "{reason}");
            assert!(reason.contains("+verilator+no+such+option"), "{reason}");
        }
        other => panic!("expected SimulatorStopped, got {other:?}"),
    }
    // The process (and other cards) carry on.
    let mut r = RtlCard::new().unwrap();
    assert_eq!(
        r.read32(BarOffset(ident::MAGIC.offset)).unwrap(),
        ident::values::MAGIC
    );
}

#[test]
fn wrong_depth_is_refused_with_the_fix() {
    let e = RtlCard::with_depth(RTL_DEPTH + 1).unwrap_err();
    match e {
        HalError::Open(msg) => assert!(msg.contains("SIM_BRIDGE_RTL_DEPTH"), "{msg}"),
        other => panic!("expected Open, got {other:?}"),
    }
}

#[test]
fn random_initial_state_is_cleared_by_reset() {
    for seed in [1, 2, 3] {
        let s = format!("+verilator+seed+{seed}");
        let mut r = RtlCard::with_args(RTL_DEPTH, &["+verilator+rand+reset+2", &s]).unwrap();
        let c = |o: u32| BarOffset(cam::BASE + o);
        assert_eq!(r.read32(c(cam::OCCUPANCY.offset)).unwrap(), 0);
        assert_eq!(r.read32(c(cam::STATUS.offset)).unwrap(), 0);
        assert_eq!(r.read32(BarOffset(ident::SCRATCH.offset)).unwrap(), 0);
        // Entry 5 reads as zeros, and a zero key does not match anything.
        r.write32(c(cam::INDEX.offset), 5).unwrap();
        r.write32(c(cam::CMD.offset), cmd::READ).unwrap();
        r.tick(10).unwrap();
        assert_eq!(
            r.read32(c(cam::STATUS.offset)).unwrap(),
            status::DONE.put(1)
        );
        assert_eq!(r.read32(c(cam::KEY.at(0))).unwrap(), 0);
        assert_eq!(r.read32(c(cam::MASK.at(9))).unwrap(), 0);
        r.write32(c(cam::CMD.offset), cmd::SEARCH).unwrap();
        r.tick(10).unwrap();
        assert_eq!(r.read32(c(cam::INDEX.offset)).unwrap(), u32::MAX);
        assert!(!r.lookup_stream(&[[0; 10]]).unwrap()[0].hit);
    }
}

#[test]
fn cards_are_send() {
    fn is_send<T: Send>() {}
    is_send::<RtlCard>();
    let mut r = RtlCard::new().unwrap();
    let h = std::thread::spawn(move || {
        r.write32(BarOffset(ident::SCRATCH.offset), 9).unwrap();
        r
    });
    let mut r = h.join().unwrap();
    assert_eq!(r.read32(BarOffset(ident::SCRATCH.offset)).unwrap(), 9);
}

#[test]
fn stop_inside_the_model_is_a_rust_error_and_the_card_stays_stopped() {
    let mut r = RtlCard::new().unwrap();
    // Aligned raw accesses behave like RegIo ones.
    assert_eq!(r.axi_write_raw(ident::SCRATCH.offset as u16, 5).unwrap(), 0);
    assert_eq!(
        r.axi_read_raw(ident::SCRATCH.offset as u16).unwrap(),
        (5, 0)
    );
    // An unaligned address makes the RTL's bus check call $stop, inside eval.
    match r.axi_write_raw(0x1002, 0).unwrap_err() {
        HalError::SimulatorStopped { reason } => assert!(reason.contains("$stop"), "{reason}"),
        other => panic!("expected SimulatorStopped, got {other:?}"),
    }
    // From now on every access says so; nothing panics or aborts.
    hal::conformance::assert_access_fails(&mut r, &[0], "SimulatorStopped", |e| {
        matches!(e, HalError::SimulatorStopped { .. })
    });
    assert!(matches!(
        r.lookup_stream(&[[0; 10]]),
        Err(HalError::SimulatorStopped { .. })
    ));
    r.idle();
    assert!(matches!(r.tick(1), Err(HalError::SimulatorStopped { .. })));
    drop(r);
    // A fresh card is unaffected.
    let mut r = RtlCard::new().unwrap();
    assert_eq!(
        r.read32(BarOffset(ident::MAGIC.offset)).unwrap(),
        ident::values::MAGIC
    );
}
