//! Replay protection across restarts and duplicate node ids, on real sealed frames: a peer's
//! incarnation counts only after it answered this process's challenge, so frames captured before
//! a restart (of either side) never mark a dead peer alive; a peer whose incarnation went
//! backwards rejoins; a second process with a node id is reported on both sides and never
//! displaces the accepted one.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::endpoint;
use host::core::ids::NodeId;
use host::sync::{Endpoint, EndpointConfig, FrameError, SyncEvent};

/// A wire between named processes: frames to node `to` reach the process registered at
/// that node's address (`addr`), as the UDP driver sends to configured addresses.
struct Wire {
    procs: BTreeMap<&'static str, Endpoint>,
    /// node id -> process at its configured address
    addr: BTreeMap<u16, &'static str>,
    now: Duration,
    /// every frame sent by each process
    captured: BTreeMap<&'static str, Vec<Vec<u8>>>,
    events: BTreeMap<&'static str, Vec<SyncEvent>>,
}

impl Wire {
    fn new() -> Self {
        Self {
            procs: BTreeMap::new(),
            addr: BTreeMap::new(),
            now: Duration::ZERO,
            captured: BTreeMap::new(),
            events: BTreeMap::new(),
        }
    }

    fn add(&mut self, name: &'static str, ep: Endpoint, at_address: bool) {
        if at_address {
            self.addr.insert(ep.me().0, name);
        }
        self.procs.insert(name, ep);
    }

    fn ep(&mut self, name: &str) -> &mut Endpoint {
        self.procs.get_mut(name).unwrap()
    }

    /// Steps one millisecond: timers, then every frame delivered until quiet.
    fn step(&mut self) {
        self.now += Duration::from_millis(1);
        let now = self.now;
        for ep in self.procs.values_mut() {
            ep.handle_timeout(now);
        }
        loop {
            let mut moved = Vec::new();
            for (name, ep) in self.procs.iter_mut() {
                while let Some(t) = ep.poll_transmit() {
                    self.captured.entry(name).or_default().push(t.bytes.clone());
                    moved.push(t);
                }
            }
            if moved.is_empty() {
                break;
            }
            for t in moved {
                if let Some(dst) = self.addr.get(&t.to.0) {
                    if let Some(ep) = self.procs.get_mut(dst) {
                        let _ = ep.handle_frame(now, &t.bytes);
                    }
                }
            }
        }
        for (name, ep) in self.procs.iter_mut() {
            while let Some(ev) = ep.poll_event() {
                self.events.entry(name).or_default().push(ev);
            }
        }
    }

    fn run_ms(&mut self, ms: u32) {
        for _ in 0..ms {
            self.step();
        }
    }

    fn records(&self, name: &str, from: u16) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for ev in self.events.get(name).into_iter().flatten() {
            if let SyncEvent::Records { from: f, batch } = ev {
                if f.0 == from {
                    out.extend(batch.iter().map(<[u8]>::to_vec));
                }
            }
        }
        out
    }
}

fn rec(tag: u8, i: u32) -> Vec<u8> {
    let mut r = vec![tag];
    r.extend_from_slice(&i.to_be_bytes());
    r
}

fn incarnation_of(ep: &Endpoint, peer: u16) -> u64 {
    let now = Duration::ZERO;
    ep.peer_status(now)
        .into_iter()
        .find(|s| s.peer == peer)
        .map_or(0, |s| s.incarnation)
}

/// A pair that exchanged records and heartbeats; every frame of node 1's incarnation captured.
fn running_pair(inc1: u64, inc2: u64) -> Wire {
    let mut w = Wire::new();
    w.add("n1", endpoint(1, inc1, &[1, 2]), true);
    w.add("n2", endpoint(2, inc2, &[1, 2]), true);
    for i in 0..50 {
        let now = w.now;
        w.ep("n1").send_record(now, NodeId(2), &rec(1, i)).unwrap();
        w.ep("n1").send_datagram(NodeId(2), b"heartbeat").unwrap();
        w.step();
    }
    w.run_ms(50);
    assert_eq!(w.records("n2", 1).len(), 50);
    assert_eq!(incarnation_of(&w.procs["n2"], 1), inc1);
    w
}

#[test]
fn old_frames_replayed_after_the_receiver_restarted_do_not_revive_a_dead_peer() {
    let w = running_pair(1000, 2000);
    let captured = w.captured["n1"].clone();
    assert!(captured.len() > 100);
    // node 1 dies (never driven again); node 2 restarts and hears the capture, twice over
    let mut n2 = endpoint(2, 3000, &[1, 2]);
    let mut now = Duration::from_secs(5);
    for _ in 0..2 {
        for f in &captured {
            let r = n2.handle_frame(now, f);
            assert!(
                matches!(r, Ok(()) | Err(FrameError::Replay)),
                "captured frame: {r:?}"
            );
            now += Duration::from_millis(1);
            n2.handle_timeout(now);
            while n2.poll_transmit().is_some() {}
        }
    }
    assert_eq!(
        n2.poll_event(),
        None,
        "a captured frame reached the application"
    );
    let st = &n2.peer_status(now)[0];
    assert_eq!(
        st.incarnation, 0,
        "the dead peer's incarnation was accepted"
    );
    assert_eq!(st.last_heard_ms, u64::MAX, "the dead peer was marked alive");
    assert_eq!(n2.stats().frames_received, 0);
    assert_eq!(n2.stats().records_delivered, 0);
    assert!(n2.stats().rejected_replay > 0);
    // hellos of the capture are only answered with a challenge
    assert!(n2.stats().challenges_answered > 0);
}

#[test]
fn old_frames_replayed_after_the_sender_restarted_are_refused() {
    let mut w = running_pair(1000, 2000);
    let captured = w.captured["n1"].clone();
    // node 1 restarts (lower incarnation: its clock went back and its state dir was lost)
    w.procs.insert("n1", endpoint(1, 500, &[1, 2]));
    w.run_ms(100);
    assert_eq!(incarnation_of(&w.procs["n2"], 1), 500);
    let events_before = w.events["n2"].len();
    let received = w.procs["n2"].stats().frames_received;
    let now = w.now;
    let n2 = w.ep("n2");
    for f in &captured {
        assert!(matches!(
            n2.handle_frame(now, f),
            Ok(()) | Err(FrameError::Replay)
        ));
    }
    w.run_ms(20);
    assert_eq!(incarnation_of(&w.procs["n2"], 1), 500);
    assert_eq!(w.procs["n2"].stats().frames_received, received);
    assert!(
        w.events["n2"][events_before..].iter().all(|e| !matches!(
            e,
            SyncEvent::Records { .. }
                | SyncEvent::Datagram { .. }
                | SyncEvent::PeerIncarnation { .. }
        )),
        "{:?}",
        &w.events["n2"][events_before..]
    );
}

#[test]
fn a_sender_whose_incarnation_went_backwards_rejoins() {
    let mut w = running_pair(9000, 2000);
    w.events.clear();
    // restarted with a much lower incarnation
    w.procs.insert("n1", endpoint(1, 10, &[1, 2]));
    for i in 0..30 {
        let now = w.now;
        w.ep("n1").send_record(now, NodeId(2), &rec(3, i)).unwrap();
        w.ep("n2").send_record(now, NodeId(1), &rec(4, i)).unwrap();
        w.step();
    }
    w.run_ms(100);
    let want: Vec<Vec<u8>> = (0..30).map(|i| rec(3, i)).collect();
    assert_eq!(w.records("n2", 1), want);
    let want: Vec<Vec<u8>> = (0..30).map(|i| rec(4, i)).collect();
    assert_eq!(w.records("n1", 2), want);
    assert!(w.events["n2"].contains(&SyncEvent::PeerIncarnation {
        peer: NodeId(1),
        incarnation: 10,
        restarted: true,
    }));
    assert_eq!(incarnation_of(&w.procs["n2"], 1), 10);
    // the handshake ends: no hellos once both sides know each other
    let sent = w.procs["n1"].stats().frames_sent + w.procs["n2"].stats().frames_sent;
    w.run_ms(500);
    let sent2 = w.procs["n1"].stats().frames_sent + w.procs["n2"].stats().frames_sent;
    assert_eq!(sent, sent2, "hellos keep going after the handshake");
}

#[test]
fn a_duplicate_node_id_is_reported_on_both_nodes_and_displaces_nothing() {
    let mut w = Wire::new();
    w.add("healthy", endpoint(1, 100, &[1, 2]), true);
    w.add("n2", endpoint(2, 200, &[1, 2]), true);
    w.run_ms(20);
    assert_eq!(incarnation_of(&w.procs["n2"], 1), 100);
    // a second process configured as node 1 (newer incarnation), elsewhere on the network
    w.add("dup", endpoint(1, 300, &[1, 2]), false);
    for i in 0..2000 {
        let now = w.now;
        if i % 10 == 0 {
            w.ep("healthy")
                .send_record(now, NodeId(2), &rec(1, i))
                .unwrap();
            w.ep("dup").send_record(now, NodeId(2), &rec(9, i)).unwrap();
            w.ep("n2").send_record(now, NodeId(1), &rec(2, i)).unwrap();
            w.ep("healthy").send_datagram(NodeId(2), b"hb").unwrap();
            w.ep("dup").send_datagram(NodeId(2), b"hb").unwrap();
        }
        w.step();
    }
    let want = SyncEvent::DuplicateId {
        node: NodeId(1),
        incarnation: 100,
        other: 300,
        reported_by: NodeId(2),
    };
    assert!(w.events["n2"].contains(&want), "{:?}", w.events.get("n2"));
    assert!(
        w.events["healthy"].contains(&want),
        "{:?}",
        w.events.get("healthy")
    );
    // nothing moved: node 2 still holds the healthy incarnation and hears only it
    assert_eq!(incarnation_of(&w.procs["n2"], 1), 100);
    let from1 = w.records("n2", 1);
    assert_eq!(from1.len(), 200);
    assert!(
        from1.iter().all(|r| r[0] == 1),
        "the duplicate's records were delivered"
    );
    assert_eq!(w.records("healthy", 2).len(), 200);
    assert!(w.events["n2"].iter().all(|e| !matches!(
        e,
        SyncEvent::PeerIncarnation {
            incarnation: 300,
            ..
        }
    )));
    // reports are rate-limited (2 s of duplicates: one report each way)
    let reports = |n: &str| {
        w.events[n]
            .iter()
            .filter(|e| matches!(e, SyncEvent::DuplicateId { .. }))
            .count()
    };
    assert_eq!(reports("n2"), 1);
    assert_eq!(reports("healthy"), 1);
}

#[test]
fn a_peer_restarting_often_is_not_reported_as_a_duplicate() {
    let mut w = running_pair(1000, 2000);
    for (k, inc) in [1500u64, 700, 1600, 800, 1700].into_iter().enumerate() {
        w.procs.insert("n1", endpoint(1, inc, &[1, 2]));
        for i in 0..20 {
            let now = w.now;
            w.ep("n1")
                .send_record(now, NodeId(2), &rec(k as u8, i))
                .unwrap();
            w.ep("n1").send_datagram(NodeId(2), b"hb").unwrap();
            w.step();
        }
        w.run_ms(30);
        assert_eq!(incarnation_of(&w.procs["n2"], 1), inc);
        let want: Vec<Vec<u8>> = (0..20).map(|i| rec(k as u8, i)).collect();
        assert_eq!(
            w.records("n2", 1).split_off(w.records("n2", 1).len() - 20),
            want
        );
    }
    assert!(w.events["n2"]
        .iter()
        .all(|e| !matches!(e, SyncEvent::DuplicateId { .. })));
    assert_eq!(w.procs["n2"].stats().duplicate_ids, 0);
}

// ---- node identities ---------------------------------------------------------------------

use host::sync::{NodeIdentity, PublicKey};
use std::sync::Arc;

fn identity() -> Arc<NodeIdentity> {
    Arc::new(NodeIdentity::generate().unwrap().0)
}

/// Node `me` with identity `id`, knowing the peers' public keys.
fn signed_endpoint(
    me: u16,
    inc: u64,
    id: &Arc<NodeIdentity>,
    peers: &[(u16, PublicKey)],
) -> Endpoint {
    let mut cfg = EndpointConfig::new(NodeId(me), inc);
    cfg.identity = Some(id.clone());
    cfg.peer_keys = peers.iter().map(|(n, k)| (NodeId(*n), *k)).collect();
    let mut ids: Vec<NodeId> = peers.iter().map(|(n, _)| NodeId(*n)).collect();
    ids.push(NodeId(me));
    Endpoint::new(cfg, common::sync_key(), ids)
}

#[test]
fn a_member_holding_the_cluster_key_cannot_speak_as_another() {
    let (a, b, c) = (identity(), identity(), identity());
    let keys = [(1, a.public()), (2, b.public()), (3, c.public())];
    let others = |me: u16| -> Vec<(u16, PublicKey)> {
        keys.iter().copied().filter(|(n, _)| *n != me).collect()
    };
    let mut w = Wire::new();
    w.add("n1", signed_endpoint(1, 1000, &a, &others(1)), true);
    w.add("n2", signed_endpoint(2, 2000, &b, &others(2)), true);
    for i in 0..20 {
        let now = w.now;
        w.ep("n2").send_record(now, NodeId(1), &rec(2, i)).unwrap();
        w.step();
    }
    w.run_ms(50);
    assert_eq!(
        w.records("n1", 2).len(),
        20,
        "signed frames flow between members"
    );
    // Every frame on the wire is version 4; only hellos carry a signature (the hello's 81-byte
    // payload with its key share, then the 64-byte signature), every other frame is sealed
    // with the pair key of node 2 and node 1.
    assert!(w.captured["n2"].iter().all(|f| f[2] == 4));
    let hello_len = 24 + 81 + 16 + 64;
    assert!(w.captured["n2"]
        .iter()
        .any(|f| f[3] == 4 && f.len() == hello_len));
    assert!(w.captured["n2"].iter().any(|f| f[3] == 1), "data frames");

    // Member 3 knows the cluster key and its own identity, and runs an endpoint that claims
    // to be node 2 (its own key pair, node 2's id and even its incarnation). To make frames
    // that pass for pair-keyed ones, it agrees a pair key with a node 1 of its own making (a
    // key pair it holds); then its frames go to the real node 1.
    let d = identity();
    let mut side = Wire::new();
    side.add(
        "impostor",
        signed_endpoint(2, 2000, &c, &[(1, d.public())]),
        true,
    );
    side.add(
        "fake1",
        signed_endpoint(1, 1000, &d, &[(2, c.public())]),
        true,
    );
    for _ in 0..300 {
        // (its frame numbers pass node 1's replay window of node 2's frames)
        side.ep("impostor")
            .send_datagram(NodeId(1), b"x")
            .unwrap_or(());
        side.step();
    }
    assert_eq!(
        incarnation_of(&side.procs["impostor"], 1),
        1000,
        "side handshake"
    );
    let mut impostor = side.procs.remove("impostor").unwrap();
    let before = w.procs["n1"].stats().rejected_signature;
    let (mut pair_keyed, mut hellos) = (0, 0);
    for i in 0..20 {
        w.step();
        let now = w.now;
        impostor.send_record(now, NodeId(1), &rec(9, i)).unwrap();
        impostor.send_datagram(NodeId(1), b"I am node 2").unwrap();
        impostor.handle_timeout(now + Duration::from_millis(30));
        while let Some(t) = impostor.poll_transmit() {
            let r = w.ep("n1").handle_frame(now, &t.bytes);
            if t.bytes[3] == 4 {
                assert_eq!(r, Err(FrameError::Signature(NodeId(2))), "impostor hello");
                hellos += 1;
            } else {
                assert_eq!(r, Err(FrameError::PairKey(NodeId(2))), "impostor frame");
                pair_keyed += 1;
            }
        }
    }
    assert!(
        pair_keyed >= 40,
        "the impostor sent {pair_keyed} pair-keyed frames"
    );
    // and its hellos, sent to node 1 directly, fail their signature
    let mut lone = signed_endpoint(2, 9000, &c, &others(2));
    lone.handle_timeout(w.now);
    while let Some(t) = lone.poll_transmit() {
        if t.to != NodeId(1) {
            continue;
        }
        let now = w.now;
        assert_eq!(
            w.ep("n1").handle_frame(now, &t.bytes),
            Err(FrameError::Signature(NodeId(2)))
        );
        hellos += 1;
    }
    assert!(hellos >= 1);
    let n1 = &w.procs["n1"];
    assert!(n1.stats().rejected_signature >= before + pair_keyed);
    assert_eq!(incarnation_of(n1, 2), 2000, "the impostor displaced node 2");
    assert!(
        !w.records("n1", 2).iter().any(|r| r[0] == 9),
        "a record of the impostor reached node 1"
    );
    // node 2's own stream still flows
    let now = w.now;
    w.ep("n2").send_record(now, NodeId(1), &rec(2, 99)).unwrap();
    w.run_ms(50);
    assert_eq!(w.records("n1", 2).last(), Some(&rec(2, 99)));

    // An unsigned frame (a node without identities, or a downgrade) is refused outright.
    let mut plain = endpoint(2, 2000, &[1, 2]);
    plain.send_datagram(NodeId(1), b"unsigned").unwrap();
    let f = plain.poll_transmit().unwrap().bytes;
    let now = w.now;
    assert_eq!(
        w.ep("n1").handle_frame(now, &f),
        Err(FrameError::Version(2))
    );
    // A hello whose signature bytes were altered, and a data frame altered anywhere.
    let last_to_node1 = |kind: u8| {
        w.captured["n2"]
            .iter()
            .rev()
            .find(|f| f[3] == kind && f[6..8] == [0, 1])
            .unwrap()
            .clone()
    };
    let (mut g, mut d) = (last_to_node1(4), last_to_node1(1));
    let last = g.len() - 1;
    g[last] ^= 1;
    let r = w.ep("n1").handle_frame(now, &g);
    assert!(
        matches!(r, Err(FrameError::Signature(_) | FrameError::Replay)),
        "{r:?}"
    );
    d[30] ^= 1;
    assert!(matches!(
        w.ep("n1").handle_frame(now, &d),
        Err(FrameError::PairKey(_) | FrameError::Replay)
    ));
}

#[test]
fn a_rotated_identity_is_refused_until_peers_learn_it_and_a_removed_one_for_good() {
    let (a, b, b2) = (identity(), identity(), identity());
    let mut w = Wire::new();
    w.add("n1", signed_endpoint(1, 1000, &a, &[(2, b.public())]), true);
    w.add("n2", signed_endpoint(2, 2000, &b, &[(1, a.public())]), true);
    w.run_ms(30);
    // Node 2 restarts with a new identity; node 1 still has the old public key.
    w.procs
        .insert("n2", signed_endpoint(2, 3000, &b2, &[(1, a.public())]));
    let now = w.now;
    w.ep("n2").send_record(now, NodeId(1), &rec(7, 1)).unwrap();
    w.run_ms(50);
    assert!(
        w.records("n1", 2).is_empty(),
        "the unknown identity got through"
    );
    assert!(w.procs["n1"].stats().rejected_signature > 0);
    // The operator gives node 1 the new public key: the stream goes through.
    w.ep("n1").set_peer_key(NodeId(2), Some(b2.public()));
    w.run_ms(200);
    assert_eq!(w.records("n1", 2), vec![rec(7, 1)]);
    assert_eq!(incarnation_of(&w.procs["n1"], 2), 3000);
    // Removing node 2's key removes its voice.
    w.ep("n1").set_peer_key(NodeId(2), None);
    let rejected = w.procs["n1"].stats().rejected_signature;
    let now = w.now;
    w.ep("n2").send_record(now, NodeId(1), &rec(7, 2)).unwrap();
    w.run_ms(50);
    assert_eq!(w.records("n1", 2).len(), 1);
    assert!(w.procs["n1"].stats().rejected_signature > rejected);
}
