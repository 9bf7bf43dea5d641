//! Fuzz the replication event decoder, and apply whatever decodes to a node.
#![no_main]

use host::core::distribution::ClusterSecret;
use host::core::events::Message;
use host::core::ids::{Millis, NodeId};
use host::core::node::{Node, NodeConfig};
use host::core::node_table::SoftwareTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        // Canonical encoding: what decodes re-encodes to the same bytes.
        assert_eq!(m.encode(), data);
        let cfg = NodeConfig::new(NodeId(1), ClusterSecret::new([1; 16]));
        let count = cfg.count;
        let mut node = Node::new(cfg, SoftwareTable::new(count));
        let _ = node.apply_message(Millis(0), &m);
        assert!(node.check_tables().is_empty());
    }
});
