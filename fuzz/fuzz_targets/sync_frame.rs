//! Fuzz the replication transport's receive path: arbitrary datagrams from the network go to an
//! endpoint with peers (with node identities when the first byte is odd, so signed hellos and pair-keyed frames are
//! checked too); nothing may panic, and nothing unauthenticated may reach the application.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use host::core::ids::NodeId;
use host::sync::endpoint::{Endpoint, EndpointConfig};
use host::sync::{ClusterKey, NodeIdentity};

/// This node's identity and two peers' (generated once per fuzzing process).
fn identities() -> &'static [Arc<NodeIdentity>; 3] {
    static IDS: OnceLock<[Arc<NodeIdentity>; 3]> = OnceLock::new();
    IDS.get_or_init(|| {
        std::array::from_fn(|_| Arc::new(NodeIdentity::generate().expect("random").0))
    })
}
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::from_bytes([7; 32]);
    let mut cfg = EndpointConfig::new(NodeId(1), 1);
    if data.first().is_some_and(|b| b & 1 == 1) {
        let ids = identities();
        cfg.identity = Some(ids[0].clone());
        cfg.peer_keys = [(NodeId(2), ids[1].public()), (NodeId(3), ids[2].public())].into();
    }
    let data = data.get(1..).unwrap_or(&[]);
    let mut ep = Endpoint::new(cfg, key, [NodeId(2), NodeId(3)]);
    // Feed the input as a sequence of datagrams split on a length prefix, so the fuzzer can
    // build multi-frame exchanges too.
    let mut rest = data;
    let mut now = Duration::from_millis(1);
    while !rest.is_empty() {
        let n = usize::from(rest[0]).min(rest.len() - 1);
        let frame = &rest[1..=n];
        rest = &rest[n + 1..];
        let _ = ep.handle_frame(now, frame);
        now += Duration::from_millis(3);
        ep.handle_timeout(now);
        // No datagram forged without the key can deliver a record to the application.
        assert!(ep.poll_event().is_none(), "unauthenticated bytes reached the application");
        while ep.poll_transmit().is_some() {}
    }
});
