//! Fuzz the replication transport's receive path: arbitrary datagrams from the network go to an
//! endpoint with peers; nothing may panic, and nothing unauthenticated may reach the application.
#![no_main]

use std::time::Duration;

use host::core::ids::NodeId;
use host::sync::endpoint::{Endpoint, EndpointConfig};
use host::sync::ClusterKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::from_bytes([7; 32]);
    let mut ep = Endpoint::new(EndpointConfig::new(NodeId(1), 1), key, [NodeId(2), NodeId(3)]);
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
