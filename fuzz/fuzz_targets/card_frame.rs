//! Fuzz the card's packet path as a node drives it: arbitrary frames (the first byte picks the
//! port) into a node whose node-specific table is the reference-model card, owning every
//! identifier. Nothing panics, each frame has one fate on the card, and the tables stay right.
#![no_main]

use host::core::card_table::CardTable;
use host::core::distribution::ClusterSecret;
use host::core::ids::{Millis, NodeId};
use host::core::node::{Node, NodeConfig};
use host::core::node_table::TieredTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&port, frame)) = data.split_first() else {
        return;
    };
    let cfg = NodeConfig::new(NodeId(1), ClusterSecret::new([1; 16]));
    let count = cfg.count;
    let Ok(model) = sim_bridge::model::ModelCard::with_depth(64) else {
        return;
    };
    let Ok(card) = driver::Card::probe(model) else {
        return;
    };
    let Ok(table) = CardTable::new(card, count) else {
        return;
    };
    let mut node = Node::new(cfg, TieredTable::new(table, count));
    let all = host::core::alloc_policy::even_split(count, &[NodeId(1)]);
    if node.apply_allocation(Millis(0), &all).is_ok() {
        // the frame twice: the second sees the entry the first may have created
        let _ = node.handle_frame(Millis(1), port & 1, frame);
        let _ = node.handle_frame(Millis(2), port & 1, frame);
        assert!(node.check_tables().is_empty());
        let c = node.port_counters().expect("the model card has a packet port");
        assert_eq!(c.rx_frames, 2);
        assert_eq!(c.forwarded + c.punted + c.dropped, 2);
        assert!(node.take_card_error().is_none());
    }
});
