//! Reallocation planning (claims 3, 18, 25; figure 6B steps 610-617): which identifiers a node
//! gains and loses between two allocations. Execution is in [`super::node::Node`]:
//! gained identifiers are selected from the common table and installed before the flip (make),
//! lost identifiers are flushed with one command each after it (break), unchanged identifiers
//! cost nothing.

use super::alloc_policy::Allocation;
use super::ids::{DistributionId, Epoch, NodeId};

/// What a reallocation means for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReallocPlan {
    /// The new allocation's epoch.
    pub epoch: Epoch,
    /// Identifiers newly allocated to the node (step 611).
    pub gained: Vec<DistributionId>,
    /// Identifiers no longer allocated to the node (step 614).
    pub lost: Vec<DistributionId>,
}

impl ReallocPlan {
    /// Whether nothing changes for the node (step 617).
    pub fn is_noop(&self) -> bool {
        self.gained.is_empty() && self.lost.is_empty()
    }
}

/// The plan for `node` going from `old` to `new`.
pub fn plan(old: &Allocation, new: &Allocation, node: NodeId) -> ReallocPlan {
    let mut p = ReallocPlan {
        epoch: new.epoch,
        ..Default::default()
    };
    let n = old.len().max(new.len());
    for i in 0..n {
        let d = DistributionId(i as u16);
        let was = old.owner(d) == Some(node);
        let is = new.owner(d) == Some(node);
        match (was, is) {
            (false, true) => p.gained.push(d),
            (true, false) => p.lost.push(d),
            _ => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_policy::{even_split, operator_move};
    use crate::ids::IdCount;

    #[test]
    fn patent_example() {
        // Figure 6B's example: ids 1,2,3 on node 1, 4,5 on node 2; id 3 moves to node 2.
        let c = IdCount::new(8).unwrap();
        let mut a = even_split(c, &[NodeId(1)]);
        for i in [4, 5] {
            a.owners[i] = Some(NodeId(2));
        }
        let b = operator_move(&a, &[DistributionId(3)], NodeId(2));
        let p2 = plan(&a, &b, NodeId(2));
        assert_eq!(p2.gained, vec![DistributionId(3)]);
        assert!(p2.lost.is_empty());
        let p1 = plan(&a, &b, NodeId(1));
        assert_eq!(p1.lost, vec![DistributionId(3)]);
        assert!(plan(&a, &b, NodeId(7)).is_noop());
    }
}
