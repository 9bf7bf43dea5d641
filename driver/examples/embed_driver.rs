//! The driver alone, as an appliance embeds it: open a card (here the reference model; on a real
//! card `hal::vfio::VfioCard::open("0000:03:00.0")` instead), probe its block chain, install CAM
//! entries, search them, read hit bits and counters, add an ESP SA whose key cannot be read back,
//! and flush one distribution identifier's entries with one command.
//!
//! ```text
//! cargo run -p driver --example embed_driver
//! ```
//!
//! Every step checks what it did and the example exits non-zero on the first surprise. `cargo
//! test -p driver --example embed_driver` runs the same steps as a test (CI does, through
//! `cargo test --workspace`).

use std::error::Error;

use driver::esp::{CardEsp, Direction, EspEngine, EspRequest, SaConfig, SaKey, Spi};
use driver::{Action, CamEntry, CamKey, Card, DidSet, DistributionId, Flow, IpPrefix, ResultWord};
use hal::{BarOffset, RegIo};
use sim_bridge::model::ModelCard;

/// A TCP entry for `client:port -> 198.51.100.10:443` in identifier `did`.
fn tcp_entry(client: u8, port: u16, did: u16) -> Result<CamEntry, Box<dyn Error>> {
    let key = CamKey::new(
        None,
        Flow::Tcp {
            src: IpPrefix::host(format!("192.0.2.{client}").parse()?),
            dst: "198.51.100.10".parse()?,
            src_port: Some(port),
            dst_port: Some(443),
        },
    );
    Ok(CamEntry {
        key,
        did: DistributionId(did),
        result: ResultWord::new(Action::Accept),
    })
}

/// Fails with `what` unless `ok`.
fn check(ok: bool, what: &str) -> Result<(), Box<dyn Error>> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

/// The whole walk-through; prints what it sees and returns an error on the first step that does
/// not do what it should.
fn run() -> Result<(), Box<dyn Error>> {
    // 1. Open and probe. Probing walks the chain of register blocks from the identity block at
    //    offset 0, checks each block's magic, version and capabilities, and soft-resets the card.
    let mut card = Card::probe(ModelCard::new())?;
    let info = card.info().clone();
    println!(
        "probed {}: build 0x{:08x}, {} blocks, CAM depth {}",
        info.backend,
        info.build_id,
        info.blocks.len(),
        info.cam.depth
    );
    for b in card.blocks() {
        println!(
            "  {} (type {:#010x}) v{}.{} at {:#07x}",
            b.name, b.type_id, b.major, b.minor, b.offset
        );
    }
    check(card.is_empty(), "a freshly probed card holds no entries")?;

    // 2. Install: twelve connections spread over three identifiers.
    let mut entries = Vec::new();
    for i in 0..12u16 {
        let e = tcp_entry(1 + (i % 4) as u8, 40_000 + i, i % 3)?;
        let slot = card.insert(&e)?;
        entries.push((e, slot));
    }
    check(card.len() == 12, "twelve entries installed")?;

    // 3. Search, as a packet would be looked up: the winning slot, its identifier and result.
    let (first, slot) = entries[4];
    let hit = card
        .search(&first.key)?
        .ok_or("the installed key is not found")?;
    check(
        hit.index == slot && hit.did == first.did,
        "search finds the slot and identifier",
    )?;
    check(
        hit.result.action == Action::Accept,
        "search returns the result",
    )?;
    let unknown = tcp_entry(99, 1, 0)?;
    check(
        card.search(&unknown.key)?.is_none(),
        "an unknown key misses",
    )?;

    // 4. Hit bits: the search above set the hit bit of that entry only; an aging scan reports it
    //    active and clears every hit bit.
    let hits: Vec<_> = card.dump(None)?.into_iter().filter(|e| e.hit).collect();
    check(
        hits.len() == 1 && hits[0].index == slot,
        "exactly the searched entry is hit",
    )?;
    let scan = card.age()?;
    check(
        scan.active == vec![slot] && scan.idle.len() == 11,
        "aging: one active, eleven idle",
    )?;
    check(
        card.dump(None)?.iter().all(|e| !e.hit),
        "the scan cleared the hit bits",
    )?;

    // 5. Counters.
    let c = card.counters()?;
    println!(
        "counters: occupancy {}, commands {}, command errors {}",
        c.occupancy, c.cmd_count, c.err_count
    );
    check(c.occupancy == 12, "OCCUPANCY counts the entries")?;
    check(c.cmd_count > 12 && c.err_count == 0, "commands counted")?;

    // 6. An SA. The engine takes the card over; the key goes in through write-only staging
    //    registers and no register of the BAR ever shows it again.
    let mut esp = CardEsp::new(card)?;
    let key = [0xC3u8; 16];
    let salt = [0x5A; 4];
    let mut sa = SaConfig::gcm(
        Spi(0x1000_0001),
        Direction::Inbound,
        SaKey::new(&key, salt)?,
    );
    sa.dst = Some("198.51.100.10".parse()?);
    let sa_slot = esp.install_sa(&sa)?;
    let mut out = SaConfig::gcm(
        Spi(0x1000_0001),
        Direction::Outbound,
        SaKey::new(&key, salt)?,
    );
    out.dst = sa.dst;
    esp.install_sa(&out)?;
    let (_, sealed) = esp.process(EspRequest::Encapsulate {
        spi: Spi(0x1000_0001),
        next_header: 4,
        payload: b"inner packet",
    })?;
    let (_, opened) = esp.process(EspRequest::Decapsulate { packet: &sealed })?;
    check(opened == b"inner packet", "the card seals and opens")?;
    // What can be read of the SA: its state (sequence numbers, window, counters), never its key.
    let state = esp.sa_state(Direction::Inbound, Spi(0x1000_0001))?;
    println!(
        "SA 0x10000001 in slot {sa_slot}: {} packets, {} bytes in",
        state.counters.packets, state.counters.bytes
    );
    let regs = esp.card_mut().regs_mut();
    for off in (0..regs.size() as u32).step_by(4) {
        let v = regs.read32(BarOffset(off))?;
        check(
            v != 0xC3C3_C3C3 && v != 0x5A5A_5A5A,
            "no register reads back key or salt",
        )?;
    }
    check(
        !format!("{sa:?}").contains("c3"),
        "Debug does not show the key",
    )?;

    // 7. Flush by identifier: one command clears every entry of identifier 1 (the inbound SA's
    //    CAM entry lives in identifier 0, so it stays).
    let card = esp.card_mut();
    let before = card.len();
    let flushed = card.flush_dids(&DidSet::from_ids([DistributionId(1)])?)?;
    check(flushed == 4, "four entries of identifier 1 flushed")?;
    check(
        card.len() == before - 4 && card.dump(Some(DistributionId(1)))?.is_empty(),
        "identifier 1 is empty",
    )?;
    check(
        card.search(&entries[1].0.key)?.is_none(),
        "a flushed key misses",
    )?;
    check(
        card.search(&entries[0].0.key)?.is_some(),
        "other identifiers keep theirs",
    )?;
    card.verify()?;
    println!(
        "flushed {flushed} entries of identifier 1; {} remain",
        card.len()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed_driver: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[test]
fn the_driver_walk_through_runs() {
    run().unwrap();
}
