//! Fuzz the packet parser and a node's packet path with arbitrary bytes.
#![no_main]

use host::core::distribution::{ClusterSecret, Distributor};
use host::core::ids::{IdCount, Millis, NodeId};
use host::core::node::{Node, NodeConfig};
use host::core::node_table::SoftwareTable;
use host::core::packet::{parse_packet, Framing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let d = Distributor::new(&ClusterSecret::new([1; 16]), IdCount::default());
    for f in [Framing::Ip, Framing::Ethernet] {
        if let Ok(p) = parse_packet(data, f) {
            let _ = p.flow(&d);
        }
    }
    let cfg = NodeConfig::new(NodeId(1), ClusterSecret::new([1; 16]));
    let count = cfg.count;
    let mut node = Node::new(cfg, SoftwareTable::new(count));
    let all = host::core::alloc_policy::even_split(count, &[NodeId(1)]);
    if node.apply_allocation(Millis(0), &all).is_ok() {
        let _ = node.handle_packet(Millis(1), data);
        assert!(node.check_tables().is_empty());
    }
});
