//! Batch installs (`Card::install_batch`): bus transactions per entry counted by hal's
//! `Counting` backend, the same table as entry-by-entry inserts, all-or-nothing checks, mask
//! profiles running out, an older card without batch commands, and a batch whose commands
//! go missing.

use std::net::{IpAddr, Ipv6Addr};

use driver::{
    Action, CamEntry, CamIndex, CamKey, Card, CmdErrorCode, DistributionId, DriverError, Flow,
    IpPrefix, ResultWord,
};
use hal::counting::Counting;
use hal::fault::{Fault, FaultInjector};
use hal::regs::cam;
use hal::BarOffset;
use sim_bridge::model::ModelCard;

/// A distinct IPv6 TCP 5-tuple for each `i`, in one of 16 identifiers; every word of both
/// addresses changes from one `i` to the next.
fn v6_entry(i: u32) -> CamEntry {
    let ip = |n: u32| {
        // The same 32-bit hash of n in each of the four words.
        let h = u128::from(n.wrapping_mul(0x9E37_79B9));
        IpPrefix::host(IpAddr::V6(Ipv6Addr::from_bits(
            h * ((1 << 96) | (1 << 64) | (1 << 32) | 1),
        )))
    };
    CamEntry {
        key: CamKey::new(
            Some(0),
            Flow::Tcp {
                src: ip(i),
                dst: ip(i ^ 0x5555),
                src_port: Some((i % 50_000) as u16 + 1024),
                dst_port: Some(443),
            },
        ),
        did: DistributionId((i % 16) as u16),
        result: ResultWord::new(Action::Accept),
    }
}

fn counted(depth: u32) -> Card<Counting<ModelCard>> {
    Card::probe(Counting::new(ModelCard::with_depth(depth).unwrap())).unwrap()
}

/// Reads and writes `f` costs.
fn cost<T>(
    card: &mut Card<Counting<ModelCard>>,
    f: impl FnOnce(&mut Card<Counting<ModelCard>>) -> T,
) -> (u64, u64, T) {
    let (r0, w0) = (card.regs_mut().reads, card.regs_mut().writes);
    let out = f(card);
    let r = card.regs_mut();
    (r.reads - r0, r.writes - w0, out)
}

#[test]
fn an_ipv6_five_tuple_costs_at_most_16_writes_and_no_read_per_entry_in_a_batch() {
    let mut card = counted(1024);
    assert_eq!(card.mask_profiles(), cam::PROFILES as usize);
    // The first batch sets the one profile these entries share.
    let first: Vec<CamEntry> = (0..4).map(v6_entry).collect();
    card.install_batch(&first).unwrap();
    let one = [v6_entry(100)];
    let (r1, w1, _) = cost(&mut card, |c| c.install_batch(&one).unwrap());
    let many: Vec<CamEntry> = (200..400).map(v6_entry).collect();
    let (rn, wn, slots) = cost(&mut card, |c| c.install_batch(&many).unwrap());
    assert_eq!(slots.len(), 200);
    let n = (many.len() - one.len()) as u64;
    // What 199 more entries cost over a batch of one: the per-entry fast path.
    assert_eq!(
        rn, r1,
        "no read per entry: {r1} reads for one entry, {rn} for 200"
    );
    assert!(wn - w1 <= 16 * n, "{} writes for {n} more entries", wn - w1);
    assert!(
        wn <= 14 * 200 + 1,
        "at most 14 writes per entry and BATCH_START: {wn}"
    );
    // Completion is read once per batch: STATUS, BATCH_DONE, BATCH_ERRS.
    assert_eq!(rn, 3);
    // The single-entry path costs 24 writes (and its STATUS polls).
    let (rs, ws, _) = cost(&mut card, |c| c.insert(&v6_entry(5000)).unwrap());
    assert_eq!(ws, 24);
    assert!(rs >= 1);
    card.verify().unwrap();
    for e in &many {
        assert!(card.search(&e.key).unwrap().is_some());
    }
}

#[test]
fn a_batch_builds_the_table_entry_by_entry_inserts_build() {
    let entries: Vec<CamEntry> = (0..300).map(v6_entry).collect();
    let mut batched = counted(512);
    let mut single = counted(512);
    single.insert(&v6_entry(9999)).unwrap();
    batched.insert(&v6_entry(9999)).unwrap();
    let slots = batched.install_batch(&entries).unwrap();
    let want: Vec<CamIndex> = entries.iter().map(|e| single.insert(e).unwrap()).collect();
    assert_eq!(slots, want);
    assert_eq!(batched.scan().unwrap(), single.scan().unwrap());
    batched.verify().unwrap();
}

#[test]
fn a_batch_that_cannot_go_in_whole_writes_nothing() {
    let mut card = counted(8);
    card.insert(&v6_entry(1)).unwrap();
    let present = [v6_entry(2), v6_entry(1)];
    assert!(matches!(
        card.install_batch(&present),
        Err(DriverError::KeyExists { index: CamIndex(0) })
    ));
    let twice = [v6_entry(2), v6_entry(3), v6_entry(2)];
    assert!(matches!(
        card.install_batch(&twice),
        Err(DriverError::KeyExists { index: CamIndex(1) })
    ));
    let too_many: Vec<CamEntry> = (10..18).map(v6_entry).collect();
    assert!(matches!(
        card.install_batch(&too_many),
        Err(DriverError::CamFull { depth: 8 })
    ));
    let mut wide = v6_entry(4);
    wide.did = DistributionId(1 << 12);
    assert!(matches!(
        card.install_batch(&[wide]),
        Err(DriverError::DidTooWide { .. })
    ));
    assert_eq!(card.len(), 1);
    assert_eq!(card.counters().unwrap().occupancy, 1);
    assert_eq!(card.install_batch(&[]).unwrap(), vec![]);
    card.verify().unwrap();
}

#[test]
fn entries_past_the_last_free_profile_are_written_with_their_own_mask() {
    // 20 masks: source prefixes /108../127 (16 profiles on the card).
    let entries: Vec<CamEntry> = (0..20u32)
        .map(|i| {
            let mut e = v6_entry(i);
            let Flow::Tcp { src, .. } = &mut e.key.flow else {
                unreachable!()
            };
            *src = IpPrefix::new(src.addr(), 108 + i as u8).unwrap();
            e
        })
        .collect();
    let mut card = counted(64);
    let (_, writes, slots) = cost(&mut card, |c| c.install_batch(&entries).unwrap());
    assert_eq!(slots, (0..20).map(CamIndex).collect::<Vec<_>>());
    // 16 profiles set (10 MASK + INDEX + CMD), 16 WRITE_P, 4 WRITE (24 writes).
    assert!(writes > 16 * 12 + 4 * 24, "{writes}");
    card.verify().unwrap();
    for e in &entries {
        assert!(card.find(&e.key).unwrap().is_some());
    }
}

#[test]
fn an_older_card_gets_one_write_command_per_entry() {
    let mut inj = FaultInjector::new(Counting::new(ModelCard::with_depth(64).unwrap()));
    // CAM minor version 0: no profiles, no batch commands.
    inj.inject(Fault::ForceBits {
        offset: BarOffset(cam::BASE + cam::VERSION.offset),
        mask: 0xFFFF,
        value: 0,
    });
    let mut card = Card::probe(inj).unwrap();
    assert_eq!(card.mask_profiles(), 0);
    let entries: Vec<CamEntry> = (0..10).map(v6_entry).collect();
    let w0 = card.regs_mut().inner_mut().writes;
    card.install_batch(&entries).unwrap();
    assert_eq!(card.regs_mut().inner_mut().writes - w0, 24 * 10);
    card.verify().unwrap();
}

#[test]
fn entry_commands_that_never_ran_are_a_batch_error_and_the_shadow_follows_the_card() {
    let mut card = Card::probe(FaultInjector::new(ModelCard::with_depth(64).unwrap())).unwrap();
    assert_eq!(card.install_batch(&[]).unwrap(), vec![]);
    // From here every CAM command is lost, the profile's SET_PROFILE included (STATUS still
    // shows the last command done without an error).
    card.regs_mut().inject(Fault::DropWrites {
        offset: BarOffset(cam::BASE + cam::CMD.offset),
    });
    let entries: Vec<CamEntry> = (1..6).map(v6_entry).collect();
    match card.install_batch(&entries) {
        Err(DriverError::BatchFailed {
            sent: 5,
            failed: 5,
            first: 0,
            code: CmdErrorCode::Busy,
        }) => {}
        r => panic!("{r:?}"),
    }
    card.regs_mut().clear();
    assert_eq!(card.len(), 0, "the shadow was rebuilt from the card");
    // The driver no longer trusts its profiles: the next batch sets them again.
    card.verify().unwrap();
    card.install_batch(&entries).unwrap();
    card.verify().unwrap();
}
