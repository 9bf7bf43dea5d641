//! The cluster's ESP SAs live in the node's card (issue: "ESP on the card for the cluster"),
//! with the reference-model card behind `CardTable`:
//!
//! * a member's SAs are in its card's SA table (the SA block's `OCCUPANCY`, read through the
//!   driver, counts them; the key and salt staging registers read 0), and no CAM entry is
//!   written behind the node table's back (its shadow and the card agree);
//! * the card seals exactly the bytes a `SoftwareEsp` with the same SA seals at the same
//!   sequence numbers, and opens what a software peer seals (replays refused);
//! * a card that leaves the bus while it seals is reported; the rebuild installs the SAs again
//!   on the new card past the sequence jump (no number is used twice), with the replay window
//!   restored;
//! * a takeover moves the SAs to the second node's card, the sequence continuing past the jump
//!   (the first node wipes its slots);
//! * an SA beyond the card's free slots runs in software; losing the identifier wipes the slots.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use cluster_core::member::esp::{EspPath, Placement, SaMaterial, Sealed};
use cluster_core::member::{ConsensusView, Member, MemberConfig, Output, Time, To};
use cluster_core::{
    Allocation, CardTable, ClusterSecret, Datagram, Epoch, IdCount, Node, NodeConfig, NodeId,
    NodeSpecificTable, TieredTable,
};
use driver::esp::{Direction, SaConfig, SaKey, Spi};
use driver::Card;
use hal::fault::{Fault, FaultInjector};
use hal::regs::{block_type, sa};
use hal::{BarOffset, RegIo};
use sim_bridge::model::ModelCard;
use zeroize::Zeroizing;

type Regs = FaultInjector<ModelCard>;
type T = TieredTable<CardTable<Regs>>;
type M = Member<T>;

const IDS: u32 = 16;
const STEP: Duration = Duration::from_millis(10);
const SEQ_JUMP: u64 = 1000;
const OUT_SPI: u32 = 0x0100_0001;
const IN_SPI: u32 = 0x0100_0002;
const PAYLOAD: &[u8] = b"an inner IPv4 packet, more or less";

fn count() -> IdCount {
    IdCount::new(IDS).unwrap()
}

fn at(mono: Duration) -> Time {
    Time {
        mono,
        unix_ms: 1_700_000_000_000 + mono.as_millis() as u64,
    }
}

fn table() -> T {
    let card = Card::probe(FaultInjector::new(ModelCard::new())).expect("probe");
    TieredTable::new(CardTable::new(card, count()).expect("table"), count())
}

fn member(n: u16) -> M {
    let cfg = MemberConfig::all_members(
        NodeId(n),
        &[NodeId(1), NodeId(2)],
        count(),
        Duration::from_millis(300),
        Duration::from_millis(50),
        SEQ_JUMP,
    );
    let mut c = NodeConfig::new(NodeId(n), ClusterSecret::new([7; 16]));
    c.count = count();
    Member::new(cfg, Node::new(c, table()))
}

fn all_to(n: u16, epoch: u64) -> Allocation {
    Allocation::all_to(NodeId(n), Epoch(epoch), count())
}

/// Two members, hand-driven: consensus is played by the test (allocations are given to the
/// members directly), records and heartbeats are delivered between the live ones.
struct Pair {
    m: [M; 2],
    now: Duration,
    agreed: Allocation,
    /// Members not ticked and not heard (none in this test; kept for the harness's shape).
    dead: BTreeSet<u16>,
    met: BTreeSet<(u16, u16)>,
}

impl Pair {
    fn m(&mut self, n: u16) -> &mut M {
        &mut self.m[usize::from(n - 1)]
    }

    fn agree(&mut self, a: Allocation) {
        let t = at(self.now);
        for n in [1u16, 2] {
            if !self.dead.contains(&n) {
                self.m(n).on_agreed(t, &a, || Duration::ZERO);
            }
        }
        self.agreed = a;
        self.route();
    }

    fn step(&mut self) {
        self.now += STEP;
        let t = at(self.now);
        let agreed = self.agreed.clone();
        let voters = [NodeId(1), NodeId(2)];
        for n in [1u16, 2] {
            if self.dead.contains(&n) {
                continue;
            }
            let view = ConsensusView {
                is_leader: false,
                leader: Some(NodeId(1)),
                agreed: &agreed,
                voters: &voters,
                conf_change_pending: false,
            };
            self.m(n).tick(t, &view);
        }
        self.route();
    }

    fn run_until(&mut self, limit: Duration, what: &str, cond: impl Fn(&mut Pair) -> bool) {
        let end = self.now + limit;
        while !cond(self) {
            assert!(self.now < end, "{what}: not reached by {:?}", self.now);
            self.step();
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn route(&mut self) {
        loop {
            let mut outs = Vec::new();
            for n in [1u16, 2] {
                let o: Vec<Output> = self.m(n).drain_outputs().collect();
                if !self.dead.contains(&n) {
                    outs.extend(o.into_iter().map(|o| (n, o)));
                }
            }
            if outs.is_empty() {
                return;
            }
            let t = at(self.now);
            for (from, o) in outs {
                let to = 3 - from;
                if self.dead.contains(&to) {
                    continue;
                }
                if self.met.insert((from, to)) {
                    self.m(to).on_peer_restarted(t, NodeId(from));
                }
                match o {
                    Output::Record { to: dest, record }
                        if dest == To::Peers || dest == To::Node(NodeId(to)) =>
                    {
                        let mut b = Vec::new();
                        record.emit(&mut b);
                        self.m(to).on_records(t, NodeId(from), [b.as_slice()]);
                    }
                    Output::Heartbeat {
                        to: dest,
                        heartbeat,
                    } if dest == NodeId(to) => {
                        let wire = heartbeat.to_bytes();
                        let Ok(Datagram::Heartbeat(h)) = Datagram::parse(&wire) else {
                            panic!("heartbeat does not round-trip");
                        };
                        self.m(to).on_heartbeat(t, NodeId(from), h);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn sa_base(card: &Card<Regs>) -> u32 {
    card.blocks()
        .iter()
        .find(|b| b.type_id == block_type::SA)
        .expect("SA block")
        .offset
}

fn card_of(m: &mut M) -> &mut Card<Regs> {
    m.node_table_mut().card_mut().card_mut()
}

/// The SA block's OCCUPANCY register of `m`'s card, through the driver.
fn occupancy(m: &mut M) -> u32 {
    let card = card_of(m);
    let b = sa_base(card);
    card.regs_mut()
        .read32(BarOffset(b + sa::OCCUPANCY.offset))
        .expect("read")
}

/// The key and salt staging registers of `m`'s card (write-only: they read 0).
fn key_registers(m: &mut M) -> Vec<u32> {
    let card = card_of(m);
    let b = sa_base(card);
    let r = card.regs_mut();
    let mut v: Vec<u32> = (0..8)
        .map(|i| r.read32(BarOffset(b + sa::KEY.at(i))).expect("read"))
        .collect();
    v.push(r.read32(BarOffset(b + sa::SALT.offset)).expect("read"));
    v
}

fn keymat(byte: u8) -> Vec<u8> {
    (0..36).map(|i| byte.wrapping_add(i)).collect()
}

fn peer_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))
}

fn dst_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))
}

fn send(m: &mut M, spi: u32, n: u32) -> Sealed {
    m.esp_for(spi)
        .expect("the SA runs here")
        .send(spi, n, PAYLOAD)
        .expect("seal")
}

fn receive(m: &mut M, spi: u32, pkts: &[Vec<u8>]) -> (u64, u64, u64) {
    m.esp_for(spi).expect("the SA runs here").receive(pkts)
}

#[test]
fn cluster_sas_run_on_the_card_move_on_takeover_and_survive_a_card_rebuild() {
    let mut p = Pair {
        m: [member(1), member(2)],
        now: Duration::ZERO,
        agreed: all_to(1, 1),
        dead: BTreeSet::new(),
        met: BTreeSet::new(),
    };
    p.agree(all_to(1, 1));
    p.run_until(Duration::from_secs(30), "both ready", |p| {
        p.m(1).takes_traffic() && p.m(2).takes_traffic()
    });
    assert_eq!(occupancy(p.m(1)), 0);
    assert_eq!(occupancy(p.m(2)), 0);

    // a tunnel: the cluster seals with OUT_SPI, opens with IN_SPI, each with its own key
    let t = at(p.now);
    let (out_km, in_km) = (keymat(0x10), keymat(0x80));
    for (spi, dir, km) in [
        (OUT_SPI, Direction::Outbound, &out_km),
        (IN_SPI, Direction::Inbound, &in_km),
    ] {
        p.m(1)
            .sa_add(t, peer_ip(), dst_ip(), spi, dir, Zeroizing::new(km.clone()))
            .expect("sa_add");
    }
    p.route();
    let out_m = SaMaterial::from_keymat(OUT_SPI, Direction::Outbound, &out_km).unwrap();
    let in_m = SaMaterial::from_keymat(IN_SPI, Direction::Inbound, &in_km).unwrap();
    assert!(p.m(2).has_sa_key(OUT_SPI) && p.m(2).has_sa_key(IN_SPI));

    // both SAs in node 1's card; none in node 2's; keys not readable
    assert_eq!(occupancy(p.m(1)), 2, "the SA table holds both SAs");
    assert_eq!(occupancy(p.m(2)), 0);
    for spi in [OUT_SPI, IN_SPI] {
        assert_eq!(p.m(1).esp().placement(spi), Some(Placement::Card));
    }
    assert!(key_registers(p.m(1)).iter().all(|w| *w == 0));
    let problems = p.m(1).core().check_tables();
    assert!(problems.is_empty(), "{problems:?}");

    // the tunnel's other end, in software; and a software twin of the outbound SA
    let start = p.m(1).core().sa_state(OUT_SPI).unwrap();
    let mut peer = EspPath::new();
    peer.install(OUT_SPI, &out_m.mirrored(), &start).unwrap();
    peer.install(IN_SPI, &in_m.mirrored(), &start).unwrap();
    let mut twin = EspPath::new();
    twin.install(OUT_SPI, &out_m, &start).unwrap();

    // the card seals what the software path seals, byte for byte
    let (first, last, sealed) = send(p.m(1), OUT_SPI, 5);
    assert_eq!((first, last), (1, 5));
    let (_, _, soft) = twin.send(OUT_SPI, 5, PAYLOAD).unwrap();
    assert_eq!(sealed, soft, "card and software seal the same bytes");
    assert_eq!(peer.receive(&sealed), (5, 0, 0));
    // the card opens what the peer seals, and refuses a replay
    let (_, _, inbound) = peer.send(IN_SPI, 4, PAYLOAD).unwrap();
    assert_eq!(receive(p.m(1), IN_SPI, &inbound), (4, 0, 0));
    assert_eq!(receive(p.m(1), IN_SPI, &inbound[1..2]), (0, 1, 0));
    let c = p.m(1).esp().counters;
    assert_eq!((c.on_card, c.in_software), (10, 0));

    // the state is synced from the card and replicated (never the key)
    p.run_for(Duration::from_millis(300));
    assert_eq!(p.m(2).core().sa_state(OUT_SPI).unwrap().outbound_seq, 6);
    assert_eq!(p.m(2).core().sa_state(IN_SPI).unwrap().replay_top, 4);

    // more traffic after the last sync, then the card fails and is replaced
    let (_, used, more) = send(p.m(1), OUT_SPI, 7);
    assert_eq!(used, 12);
    assert_eq!(peer.receive(&more), (7, 0, 0));
    let replicated = p.m(1).core().sa_state(OUT_SPI).unwrap().outbound_seq;
    assert!(replicated <= used, "the sync did not see the last packets");
    let jumps = p.m(1).counters().sa_jumps;
    // the card leaves the bus: sealing fails, the node reports the card, which is replaced
    let regs = card_of(p.m(1)).regs_mut();
    let after_reads = regs.reads();
    regs.inject(Fault::AllOnes { after_reads });
    let gone = p.m(1).esp_for(OUT_SPI).unwrap().send(OUT_SPI, 1, PAYLOAD);
    assert!(
        matches!(gone, Err(driver::esp::EspError::DeviceGone { .. })),
        "{gone:?}"
    );
    let err = p.m(1).take_card_error().expect("the gone card is reported");
    assert!(err.is_device_gone(), "{err}");
    let t = at(p.now);
    p.m(1).rebuild_card(t, table());
    p.route();
    assert_eq!(occupancy(p.m(1)), 2, "the new card holds both SAs again");
    for spi in [OUT_SPI, IN_SPI] {
        assert_eq!(p.m(1).esp().placement(spi), Some(Placement::Card));
    }
    assert_eq!(p.m(1).counters().sa_jumps, jumps + 1);
    let (first, last_a, after) = send(p.m(1), OUT_SPI, 3);
    assert_eq!(first, replicated + SEQ_JUMP, "continues past the jump");
    assert!(first > used, "no sequence number used twice");
    assert_eq!(peer.receive(&after), (3, 0, 0));
    // the replay window came back with the SA
    assert_eq!(receive(p.m(1), IN_SPI, &inbound[..1]), (0, 1, 0));
    let (_, _, fresh) = peer.send(IN_SPI, 2, PAYLOAD).unwrap();
    assert_eq!(receive(p.m(1), IN_SPI, &fresh), (2, 0, 0));
    p.run_for(Duration::from_millis(300));
    assert_eq!(
        p.m(2).core().sa_state(OUT_SPI).unwrap().outbound_seq,
        last_a + 1
    );
    let (_, last_a, tail) = send(p.m(1), OUT_SPI, 2);
    assert_eq!(peer.receive(&tail), (2, 0, 0));

    // every identifier moves to node 2: node 1 wipes its slots (after a last sync of the
    // state), node 2 takes the SAs onto its card past the jump
    p.agree(all_to(2, 2));
    p.run_until(Duration::from_secs(10), "node 2 runs the SAs", |p| {
        p.m(2).esp_for(OUT_SPI).is_ok() && p.m(2).esp_for(IN_SPI).is_ok()
    });
    assert_eq!(occupancy(p.m(1)), 0, "node 1 wiped its slots");
    assert!(p.m(1).esp_for(OUT_SPI).is_err());
    assert_eq!(occupancy(p.m(2)), 2, "node 2's card holds both SAs");
    for spi in [OUT_SPI, IN_SPI] {
        assert_eq!(p.m(2).esp().placement(spi), Some(Placement::Card));
    }
    let (first, _, taken) = send(p.m(2), OUT_SPI, 3);
    assert_eq!(first, last_a + 1 + SEQ_JUMP, "continues past the jump");
    assert_eq!(peer.receive(&taken), (3, 0, 0));
    assert_eq!(
        receive(p.m(2), IN_SPI, &fresh),
        (0, 2, 0),
        "window restored"
    );
    let (_, _, fresh) = peer.send(IN_SPI, 2, PAYLOAD).unwrap();
    assert_eq!(receive(p.m(2), IN_SPI, &fresh), (2, 0, 0));
    assert!(key_registers(p.m(2)).iter().all(|w| *w == 0));
    let c = p.m(2).esp().counters;
    assert_eq!((c.on_card, c.in_software), (7, 0));

    // the card's other slots are taken: a new SA runs in software
    let free = {
        let e = p.m(2).node_table_mut().esp_engine().expect("card engine");
        let mut n = 0u32;
        for i in 0.. {
            let key = SaKey::new(&[i as u8; 16], [0, 0, 0, 1]).unwrap();
            let cfg = SaConfig::gcm(Spi(0x7000_0000 + i), Direction::Outbound, key);
            match e.install_sa(&cfg) {
                Ok(_) => n += 1,
                Err(driver::esp::EspError::NoFreeSlot { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        n
    };
    assert_eq!(occupancy(p.m(2)), 2 + free);
    let spi3 = 0x0100_0003;
    let km3 = keymat(0xc0);
    let t = at(p.now);
    p.m(2)
        .sa_add(
            t,
            peer_ip(),
            dst_ip(),
            spi3,
            Direction::Outbound,
            Zeroizing::new(km3.clone()),
        )
        .expect("sa_add");
    assert_eq!(p.m(2).esp().placement(spi3), Some(Placement::Software));
    assert_eq!(p.m(2).esp().counters.card_fallbacks, 1);
    let m3 = SaMaterial::from_keymat(spi3, Direction::Outbound, &km3).unwrap();
    let s3 = p.m(2).core().sa_state(spi3).unwrap();
    peer.install(spi3, &m3.mirrored(), &s3).unwrap();
    let (_, _, soft_pkts) = send(p.m(2), spi3, 4);
    assert_eq!(peer.receive(&soft_pkts), (4, 0, 0));
    let c = p.m(2).esp().counters;
    assert_eq!((c.on_card, c.in_software), (7, 4));
    p.run_for(Duration::from_millis(300));
    assert_eq!(p.m(2).core().sa_state(spi3).unwrap().outbound_seq, 5);

    // node 2 loses the identifiers: the card's SA slots are wiped, the software SA removed
    p.agree(Allocation::unowned(Epoch(3), count()));
    p.route();
    for spi in [OUT_SPI, IN_SPI, spi3] {
        assert!(!p.m(2).esp().has(spi));
    }
    assert_eq!(
        occupancy(p.m(2)),
        free,
        "only the slots filled by hand remain"
    );
}
