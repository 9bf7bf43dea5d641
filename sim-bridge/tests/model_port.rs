//! The reference model's packet port block through its registers and wires (`hdl/CARD.md`,
//! "Packet port block"): capabilities, the write-only hash key, SEND and POP with their errors,
//! a miss queued with its metadata, a forwarded hit, drops by reason, a full queue, soft reset.

mod support;

use hal::regs::{cam, ident, port, UNMAPPED_PATTERN};
use hal::Wires;
use sim_bridge::model::ModelCard;
use sim_bridge::model_port::parse;
use support::{own_all, p, pa, rd, stage, wr};

/// An Ethernet + IPv4 + UDP frame from 198.18.0.1:sport to 198.18.0.2:dport.
fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (28 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A model card that owns every identifier.
fn model_owning_all() -> ModelCard {
    let mut m = ModelCard::new();
    own_all(&mut m);
    m
}

/// Run port command `code` (the model finishes it inside the write); returns `STATUS.ERR`.
fn command(m: &mut ModelCard, code: u32) -> u32 {
    wr(m, p(port::CMD), code);
    port::status::ERR.get(rd(m, p(port::STATUS)))
}

fn send(m: &mut ModelCard, frame: &[u8], dest: u32) -> u32 {
    stage(m, frame, dest);
    command(m, port::cmd::SEND)
}

fn head_frame(m: &mut ModelCard) -> Vec<u8> {
    let n = rd(m, p(port::HRX_LEN)) as usize;
    let mut v = Vec::new();
    for i in 0..n.div_ceil(4) {
        v.extend_from_slice(&rd(m, pa(port::HRX_BUF, i as u32)).to_be_bytes());
    }
    v.truncate(n);
    v
}

#[test]
fn capabilities_write_only_key_and_chain() {
    let mut m = ModelCard::new();
    assert_eq!(rd(&mut m, hal::regs::esp::BASE + 8), port::BASE);
    assert_eq!(rd(&mut m, p(port::TYPE)), hal::regs::block_type::PORT);
    assert_eq!(rd(&mut m, p(port::NEXT)), 0);
    assert_eq!(rd(&mut m, p(port::CAP_PORTS)), 2);
    assert_eq!(rd(&mut m, p(port::CAP_FRAME_BYTES)), 2048);
    assert_eq!(rd(&mut m, p(port::CAP_HOSTQ_DEPTH)), 8);
    assert_eq!(rd(&mut m, p(port::CAP_IDS)), 4096);
    for i in 0..4 {
        wr(&mut m, pa(port::HASH_KEY, i), 0xA5A5_0000 + i);
        assert_eq!(
            rd(&mut m, pa(port::HASH_KEY, i)),
            0,
            "HASH_KEY is write-only"
        );
    }
    wr(&mut m, p(port::ID_MASK), 0xFFFF);
    assert_eq!(rd(&mut m, p(port::ID_MASK)), 0xFFF);
    wr(&mut m, p(port::HTX_DEST), 7);
    assert_eq!(rd(&mut m, p(port::HTX_DEST)), 3);
    wr(&mut m, p(port::RX_FRAMES), 9);
    assert_eq!(rd(&mut m, p(port::RX_FRAMES)), 0, "read-only");
    assert_eq!(rd(&mut m, port::BASE + 0x58), UNMAPPED_PATTERN);
    assert_eq!(rd(&mut m, p(port::HRX_INDEX)), 0, "empty queue reads 0");
}

#[test]
fn commands_and_their_errors() {
    let mut m = ModelCard::new();
    assert_eq!(command(&mut m, port::cmd::POP), port::err::EMPTY);
    wr(&mut m, p(port::HTX_LEN), 0);
    assert_eq!(command(&mut m, port::cmd::SEND), port::err::BAD_LEN);
    wr(&mut m, p(port::HTX_LEN), 2049);
    assert_eq!(command(&mut m, port::cmd::SEND), port::err::BAD_LEN);
    assert_eq!(command(&mut m, 99), port::err::UNKNOWN_CMD);
    assert_eq!(rd(&mut m, p(port::CMD_COUNT)), 4);
    assert_eq!(rd(&mut m, p(port::ERR_COUNT)), 4);
    // Out of port 1, untouched.
    let f = udp(1000, 2000, b"hello");
    assert_eq!(send(&mut m, &f, port::dest::OUT1), port::err::OK);
    assert_eq!(m.wire_tx(), Some((1, f)));
    assert_eq!(rd(&mut m, p(port::TX_FRAMES)), 1);
    assert_eq!(rd(&mut m, p(port::HOST_SENT)), 1);
    assert_eq!(rd(&mut m, p(port::RX_FRAMES)), 0);
}

#[test]
fn miss_is_queued_with_metadata_then_a_hit_is_forwarded() {
    let mut m = model_owning_all();
    wr(&mut m, p(port::ID_MASK), 0xFFF);
    for i in 0..4 {
        wr(&mut m, pa(port::HASH_KEY, i), 0x0102_0304 * (i + 1));
    }
    let f = udp(40000, 53, b"query");
    m.wire_rx(0, &f).unwrap();
    assert_eq!(m.wire_tx(), None);
    assert_eq!(rd(&mut m, p(port::HRX_COUNT)), 1);
    let meta = rd(&mut m, p(port::HRX_META));
    assert_eq!(port::meta::REASON.get(meta), port::reason::MISS);
    assert_eq!(port::meta::PORT.get(meta), 0);
    assert_eq!(port::meta::DID_VALID.get(meta), 1);
    assert_eq!(port::meta::HIT.get(meta), 0);
    let parsed = parse(&f).unwrap();
    let k0 = u64::from(0x0204_0608u32) << 32 | 0x0102_0304;
    let k1 = u64::from(0x0408_0C10u32) << 32 | 0x0306_090C;
    let d = (parsed.hash(k0, k1) & 0xFFF) as u32;
    assert_eq!(port::meta::DID.get(meta), d);
    assert_eq!(rd(&mut m, p(port::HRX_INDEX)), u32::MAX);
    let offs = rd(&mut m, p(port::HRX_OFFSETS));
    assert_eq!(
        (port::offsets::L3.get(offs), port::offsets::L4.get(offs)),
        (14, 34)
    );
    assert_eq!(head_frame(&mut m), f);
    wr(&mut m, p(port::DID_SEL), d);
    assert_eq!(rd(&mut m, p(port::DID_PKTS)), 1);
    assert_eq!(rd(&mut m, p(port::DID_BYTES_LO)), f.len() as u32);
    wr(&mut m, p(port::CMD), port::cmd::POP);
    assert_eq!(rd(&mut m, p(port::HRX_COUNT)), 0);
    assert_eq!(rd(&mut m, p(port::HRX_LEN)), 0);

    // Install the flow's entry (ACCEPT) at index 5 and send the reply direction in port 1.
    let key = parsed.search_key();
    for i in 0..10 {
        wr(&mut m, cam::BASE + cam::KEY.at(i), key[i as usize]);
        wr(&mut m, cam::BASE + cam::MASK.at(i), u32::MAX);
    }
    wr(&mut m, cam::BASE + cam::RESULT.offset, 1);
    wr(&mut m, cam::BASE + cam::DID.offset, d);
    wr(&mut m, cam::BASE + cam::INDEX.offset, 5);
    wr(&mut m, cam::BASE + cam::CMD.offset, cam::cmd::WRITE);
    let mut back = udp(53, 40000, b"answer");
    back[26..30].copy_from_slice(&[198, 18, 0, 2]);
    back[30..34].copy_from_slice(&[198, 18, 0, 1]);
    m.wire_rx(1, &back).unwrap();
    assert_eq!(m.wire_tx(), Some((0, back.clone())));
    assert_eq!(rd(&mut m, p(port::FORWARDED)), 1);
    assert_eq!(rd(&mut m, cam::BASE + cam::DP_LOOKUPS.offset), 2);
    assert_eq!(rd(&mut m, cam::BASE + cam::DP_HITS.offset), 1);
    wr(&mut m, p(port::ENT_SEL), 5);
    assert_eq!(rd(&mut m, p(port::ENT_PKTS)), 1);
    assert_eq!(rd(&mut m, p(port::ENT_BYTES_LO)), back.len() as u32);
    // Rewriting the entry restarts its counters.
    wr(&mut m, cam::BASE + cam::CMD.offset, cam::cmd::WRITE);
    assert_eq!(rd(&mut m, p(port::ENT_PKTS)), 0);
    // Not owned any more: dropped and counted.
    wr(&mut m, pa(port::OWNED, d / 32), !(1 << (d % 32)));
    m.wire_rx(1, &back).unwrap();
    assert_eq!(m.wire_tx(), None);
    assert_eq!(
        rd(&mut m, pa(port::REASON_COUNT, port::reason::NOT_OWNED)),
        1
    );
    assert_eq!(rd(&mut m, p(port::DROPPED)), 1);
    assert_eq!(rd(&mut m, p(port::RX_FRAMES)), 3);
}

#[test]
fn runts_jumbos_and_a_full_queue_never_wedge() {
    let mut m = model_owning_all();
    m.wire_rx(0, &[0u8; 13]).unwrap();
    m.wire_rx(0, &vec![0xEE; 9000]).unwrap();
    m.wire_rx(0, &[]).unwrap();
    assert_eq!(rd(&mut m, pa(port::REASON_COUNT, port::reason::RUNT)), 2);
    assert_eq!(
        rd(&mut m, pa(port::REASON_COUNT, port::reason::TOO_LONG)),
        1
    );
    assert!(m.wire_rx(2, &[0; 64]).is_err(), "no port 2");
    // ARP is queued NOT_IP; nine of them overflow the eight-frame queue.
    let mut arp = vec![0xFF; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    for _ in 0..9 {
        m.wire_rx(1, &arp).unwrap();
    }
    assert_eq!(rd(&mut m, p(port::HRX_COUNT)), 8);
    assert_eq!(rd(&mut m, pa(port::REASON_COUNT, port::reason::NOT_IP)), 8);
    assert_eq!(
        rd(&mut m, pa(port::REASON_COUNT, port::reason::QUEUE_FULL)),
        1
    );
    assert_eq!(rd(&mut m, p(port::PUNTED)), 8);
    assert_eq!(rd(&mut m, p(port::DROPPED)), 4);
    let meta = rd(&mut m, p(port::HRX_META));
    assert_eq!(port::meta::PORT.get(meta), 1);
    assert_eq!(port::meta::DID_VALID.get(meta), 0);
    // A frame through SEND into the pipeline is marked as the host's.
    wr(&mut m, p(port::CMD), port::cmd::POP);
    assert_eq!(
        send(&mut m, &udp(1, 2, b""), port::dest::IN1),
        port::err::OK
    );
    assert_eq!(rd(&mut m, p(port::RX_FRAMES)), 13);
    // Soft reset: everything back to zero, the queue empty.
    wr(
        &mut m,
        ident::CONTROL.offset,
        ident::control::SOFT_RESET.put(1),
    );
    assert_eq!(rd(&mut m, p(port::HRX_COUNT)), 0);
    assert_eq!(rd(&mut m, p(port::RX_FRAMES)), 0);
    assert_eq!(rd(&mut m, pa(port::OWNED, 0)), 0);
}
