//! Replication transport: delivery under loss, duplication and reorder; forged, garbled,
//! replayed and misdirected frames rejected and counted; restarts; arbitrary bytes never panic.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::endpoint;
use host::core::ids::NodeId;
use host::sync::{ClusterKey, Endpoint, EndpointConfig, FrameError, SyncEvent, Transmit};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded network of endpoints: every frame may be lost, duplicated or delayed (reordered).
struct Net {
    eps: BTreeMap<u16, Endpoint>,
    now: Duration,
    rng: ChaCha8Rng,
    loss: f64,
    dup: f64,
    in_air: Vec<(Duration, Transmit)>,
    delivered: BTreeMap<(u16, u16), Vec<Vec<u8>>>,
    restarts: Vec<(u16, u16)>,
}

impl Net {
    fn new(ids: &[u16], seed: u64, loss: f64, dup: f64) -> Self {
        let eps = ids.iter().map(|i| (*i, endpoint(*i, 100, ids))).collect();
        Self {
            eps,
            now: Duration::ZERO,
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss,
            dup,
            in_air: Vec::new(),
            delivered: BTreeMap::new(),
            restarts: Vec::new(),
        }
    }

    /// Queues `rec` at endpoint `from` for node `to`.
    fn send(&mut self, from: u16, to: u16, rec: &[u8]) {
        let now = self.now;
        let ep = self.eps.get_mut(&from).unwrap();
        ep.send_record(now, NodeId(to), rec).unwrap();
    }

    /// Steps `n` times by one millisecond.
    fn run_ms(&mut self, n: u32) {
        for _ in 0..n {
            self.step(Duration::from_millis(1));
        }
    }

    fn step(&mut self, dt: Duration) {
        self.now += dt;
        let now = self.now;
        for ep in self.eps.values_mut() {
            ep.handle_timeout(now);
            while let Some(t) = ep.poll_transmit() {
                if self.rng.random::<f64>() < self.loss {
                    continue;
                }
                let copies = if self.rng.random::<f64>() < self.dup {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay = Duration::from_micros(self.rng.random_range(100..3000));
                    self.in_air.push((now + delay, t.clone()));
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = self.in_air.drain(..).partition(|(t, _)| *t <= now);
        self.in_air = later;
        for (_, t) in due {
            if let Some(ep) = self.eps.get_mut(&t.to.0) {
                let _ = ep.handle_frame(now, &t.bytes);
            }
        }
        for (id, ep) in self.eps.iter_mut() {
            while let Some(ev) = ep.poll_event() {
                match ev {
                    SyncEvent::Records { from, batch } => {
                        let v = self.delivered.entry((from.0, *id)).or_default();
                        v.extend(batch.iter().map(<[u8]>::to_vec));
                    }
                    SyncEvent::PeerIncarnation {
                        peer,
                        restarted: true,
                        ..
                    } => self.restarts.push((*id, peer.0)),
                    _ => {}
                }
            }
        }
    }
}

fn record(from: u16, i: u32) -> Vec<u8> {
    let mut r = vec![from as u8];
    r.extend_from_slice(&i.to_be_bytes());
    r.resize(40 + (i % 23) as usize, 0xab);
    r
}

#[test]
fn reliable_in_order_delivery_under_loss_dup_reorder() {
    let ids = [1u16, 2, 3];
    let mut net = Net::new(&ids, 42, 0.2, 0.1);
    let n = 3000u32;
    for i in 0..n {
        for &from in &ids {
            let now = net.now;
            net.eps
                .get_mut(&from)
                .unwrap()
                .broadcast_record(now, &record(from, i))
                .unwrap();
        }
        if i % 50 == 0 {
            net.step(Duration::from_micros(500));
        }
    }
    net.run_ms(4000);
    for &from in &ids {
        for &to in &ids {
            if from == to {
                continue;
            }
            let got = &net.delivered[&(from, to)];
            let want: Vec<Vec<u8>> = (0..n).map(|i| record(from, i)).collect();
            assert_eq!(got.len(), want.len(), "{from}->{to}");
            assert!(got == &want, "{from}->{to} out of order or altered");
        }
    }
    let s = net.eps[&1].stats();
    assert!(s.retransmits > 0, "loss must have caused retransmissions");
    assert_eq!(s.rejected_auth, 0);
    // per-record framing overhead stays around a byte or two plus the amortised frame header
    let payload: u64 = (0..n).map(|i| record(1, i).len() as u64).sum::<u64>() * 2;
    assert!(s.records_sent == u64::from(n) * 2);
    assert!(s.bytes_sent > payload);
}

#[test]
fn peer_restart_resets_streams_and_redelivers() {
    let ids = [1u16, 2];
    let mut net = Net::new(&ids, 7, 0.0, 0.0);
    for i in 0..100 {
        net.send(1, 2, &record(1, i));
    }
    net.run_ms(50);
    assert_eq!(net.delivered[&(1, 2)].len(), 100);
    // node 2 restarts with a newer incarnation
    net.eps.insert(2, endpoint(2, 200, &ids));
    net.delivered.clear();
    for i in 0..100 {
        net.send(1, 2, &record(1, i));
    }
    net.run_ms(200);
    assert_eq!(net.delivered[&(1, 2)].len(), 100);
    assert!(net.restarts.contains(&(1, 2)));
}

/// Two endpoints wired by hand, with every frame from 1 to 2 captured.
fn pair() -> (Endpoint, Endpoint, Vec<Vec<u8>>) {
    let mut a = endpoint(1, 10, &[1, 2]);
    let mut b = endpoint(2, 20, &[1, 2]);
    let mut now = Duration::ZERO;
    for i in 0..20 {
        a.send_record(now, NodeId(2), &record(1, i)).unwrap();
    }
    let captured = run_pair(&mut a, &mut b, &mut now, 30);
    (a, b, captured)
}

/// Runs `a` and `b` for `ms` steps of one millisecond from `*now`, every frame delivered
/// ([`exchange`] at each step); returns the frames from `a` to `b`.
fn run_pair(a: &mut Endpoint, b: &mut Endpoint, now: &mut Duration, ms: u32) -> Vec<Vec<u8>> {
    let mut a_to_b = Vec::new();
    for _ in 0..ms {
        *now += Duration::from_millis(1);
        a.handle_timeout(*now);
        b.handle_timeout(*now);
        exchange(a, b, *now, &mut |t| {
            a_to_b.push(t.bytes.clone());
            true
        });
    }
    a_to_b
}

#[test]
fn replayed_frames_rejected_and_counted() {
    let (_a, mut b, captured) = pair();
    let delivered_before = b.stats().records_delivered;
    assert_eq!(delivered_before, 20);
    for f in &captured {
        assert_eq!(
            b.handle_frame(Duration::from_secs(1), f),
            Err(FrameError::Replay)
        );
    }
    assert_eq!(b.stats().rejected_replay, captured.len() as u64);
    assert_eq!(b.stats().records_delivered, delivered_before);
}

#[test]
fn forged_and_garbled_frames_rejected_and_counted() {
    let (_a, mut b, captured) = pair();
    let now = Duration::from_secs(1);
    let data = captured.iter().find(|f| f[3] == 1).unwrap().clone();
    // flip one bit in the ciphertext, in the header (AAD), and in the tag
    for pos in [30, 17, data.len() - 1] {
        let mut f = data.clone();
        f[pos] ^= 1;
        // a fresh sequence number so the replay check does not answer first
        f[23] = f[23].wrapping_add(100);
        if pos == 17 || pos == 30 || pos == data.len() - 1 {
            assert_eq!(b.handle_frame(now, &f), Err(FrameError::Auth), "bit {pos}");
        }
    }
    // a frame sealed with another cluster key
    let mut mallory = Endpoint::new(
        EndpointConfig::new(NodeId(1), 11),
        ClusterKey::from_bytes([9; 32]),
        [NodeId(2)],
    );
    mallory.send_datagram(NodeId(2), b"hello").unwrap();
    let forged = mallory.poll_transmit().unwrap();
    assert_eq!(b.handle_frame(now, &forged.bytes), Err(FrameError::Auth));
    // garbled: truncated, bad magic, unknown version, unknown kind, misdirected, unknown peer
    assert!(matches!(
        b.handle_frame(now, &data[..10]),
        Err(FrameError::Garbled(_))
    ));
    let mut f = data.clone();
    f[0] = b'X';
    assert!(matches!(
        b.handle_frame(now, &f),
        Err(FrameError::Garbled(_))
    ));
    let mut f = data.clone();
    f[2] = 9;
    assert_eq!(b.handle_frame(now, &f), Err(FrameError::Version(9)));
    let mut f = data.clone();
    f[3] = 99;
    assert_eq!(b.handle_frame(now, &f), Err(FrameError::UnknownKind(99)));
    let mut f = data.clone();
    f[7] = 5;
    assert_eq!(
        b.handle_frame(now, &f),
        Err(FrameError::Misdirected(NodeId(5)))
    );
    let mut f = data.clone();
    f[5] = 9;
    assert_eq!(
        b.handle_frame(now, &f),
        Err(FrameError::UnknownPeer(NodeId(9)))
    );
    let s = b.stats();
    assert_eq!(s.rejected_auth, 4);
    assert_eq!(s.rejected_garbled, 2);
    assert_eq!(s.rejected_version, 2);
    assert_eq!(s.rejected_misdirected, 1);
    assert_eq!(s.rejected_unknown_peer, 1);
    assert_eq!(s.records_delivered, 20);
}

#[test]
fn payload_is_never_plaintext_on_the_wire() {
    let mut a = endpoint(1, 10, &[1, 2]);
    let mut b = endpoint(2, 20, &[1, 2]);
    let secret = b"SA-KEY-MATERIAL-0123456789abcdef";
    let mut now = Duration::ZERO;
    a.send_record(now, NodeId(2), secret).unwrap();
    let wire = run_pair(&mut a, &mut b, &mut now, 10);
    assert_eq!(b.stats().records_delivered, 1);
    for f in wire {
        assert!(!f.windows(8).any(|w| w == &secret[..8]));
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut b = endpoint(2, 20, &[1, 2]);
        let r = b.handle_frame(Duration::from_secs(1), &bytes);
        prop_assert!(r.is_err());
        prop_assert_eq!(b.stats().rejected(), 1);
    }

    #[test]
    fn mutated_frames_never_accepted(pos in 0usize..200, bit in 0u8..8) {
        let (_a, mut b, captured) = pair();
        let mut f = captured[0].clone();
        let pos = pos % f.len();
        f[pos] ^= 1 << bit;
        prop_assert!(b.handle_frame(Duration::from_secs(2), &f).is_err());
    }
}

/// Moves every frame between two endpoints until both are quiet; `keep` decides, per frame from
/// `a`, whether it arrives (the ones it refuses are returned, lost or held back).
fn exchange(
    a: &mut Endpoint,
    b: &mut Endpoint,
    now: Duration,
    keep: &mut dyn FnMut(&Transmit) -> bool,
) -> Vec<Transmit> {
    let mut held = Vec::new();
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            if keep(&t) {
                let _ = b.handle_frame(now, &t.bytes);
            } else {
                held.push(t);
            }
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            let _ = a.handle_frame(now, &t.bytes);
        }
        if !moved {
            return held;
        }
    }
}

fn records_of(ep: &mut Endpoint) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(ev) = ep.poll_event() {
        if let SyncEvent::Records { batch, .. } = ev {
            out.extend(batch.iter().map(<[u8]>::to_vec));
        }
    }
    out
}

/// A peer that is only slow (acks late) gets one frame again on the first timeout, not the whole
/// window; a frame really lost is resent as soon as an ack shows the hole, before any timeout,
/// and only once per round trip.
#[test]
fn slow_peer_costs_one_resend_and_holes_are_resent_from_acks() {
    let mut a = endpoint(1, 100, &[2]);
    let mut b = endpoint(2, 200, &[1]);
    let mut now = Duration::ZERO;
    // bind the streams (hellos)
    for _ in 0..4 {
        a.handle_timeout(now);
        b.handle_timeout(now);
        exchange(&mut a, &mut b, now, &mut |_| true);
        now += Duration::from_millis(30);
    }
    let _ = records_of(&mut b);
    // ten records of 1000 bytes: one batch each
    let sent: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1000]).collect();
    for r in &sent {
        a.send_record(now, NodeId(2), r).unwrap();
    }
    a.handle_timeout(now + Duration::from_millis(2));
    let held = exchange(&mut a, &mut b, now, &mut |_| false);
    assert_eq!(held.len(), 10, "ten data frames in flight");
    assert_eq!(a.stats().retransmits, 0);

    // the peer is slow: nothing acked when the timeout fires
    now += Duration::from_millis(40);
    a.handle_timeout(now);
    let again = exchange(&mut a, &mut b, now, &mut |_| false);
    assert_eq!(
        again.len(),
        1,
        "a first timeout resends the oldest frame only"
    );
    assert_eq!(a.stats().retransmits, 1);
    assert_eq!((a.stats().timeouts, a.stats().timeouts_in_a_row), (1, 0));

    // the held frames arrive late, all but the fourth (lost); the resend of the first is a
    // duplicate. The receiver acks the gap at once; the ack resends the hole, no timeout needed.
    for (i, t) in held.iter().enumerate() {
        if i != 3 {
            let _ = b.handle_frame(now, &t.bytes);
        }
    }
    let _ = b.handle_frame(now, &again[0].bytes);
    let mut resent = Vec::new();
    while let Some(t) = b.poll_transmit() {
        let _ = a.handle_frame(now, &t.bytes);
        while let Some(r) = a.poll_transmit() {
            resent.push(r);
        }
    }
    assert_eq!(resent.len(), 1, "exactly the hole is resent");
    assert_eq!(a.stats().retransmits, 2);
    assert_eq!(a.stats().hole_resends, 1);
    // a second ack showing the same hole within the round trip resends nothing more
    let _ = b.handle_frame(now, &held[5].bytes);
    while let Some(t) = b.poll_transmit() {
        let _ = a.handle_frame(now, &t.bytes);
    }
    assert!(
        a.poll_transmit().is_none(),
        "no second resend within a round trip"
    );
    assert_eq!(a.stats().retransmits, 2);

    let _ = b.handle_frame(now, &resent[0].bytes);
    assert_eq!(records_of(&mut b), sent, "all ten, in order");
    now += Duration::from_millis(2);
    b.handle_timeout(now); // the delayed ack
    exchange(&mut a, &mut b, now, &mut |_| true);
    assert_eq!(a.backlog(NodeId(2)), 0, "everything acknowledged");
}
