use crate::testing::plain_nodes;
use crate::{
    NODES_MAX, NodeId, NodeSpec, Ring, RingError, VNODES_MAX, VNODES_PER_WEIGHT, WEIGHT_MAX,
};

#[test]
fn node_sets_are_validated() {
    assert_eq!(Ring::new([]), Err(RingError::NoNodes));
    assert_eq!(
        Ring::new([NodeSpec::new(NodeId(7)), NodeSpec::new(NodeId(3)), NodeSpec::new(NodeId(7))]),
        Err(RingError::DuplicateNode { node: NodeId(7) })
    );
    for weight in [0, WEIGHT_MAX + 1] {
        assert_eq!(
            Ring::new([NodeSpec::new(NodeId(1)).with_weight(weight)]),
            Err(RingError::WeightOutOfRange { node: NodeId(1), weight, max: WEIGHT_MAX })
        );
    }
    let count = NODES_MAX + 1;
    assert_eq!(
        Ring::new(plain_nodes(count as u64)),
        Err(RingError::TooManyNodes { count, max: NODES_MAX })
    );
    let heavy = (1..=NODES_MAX as u64).map(|i| NodeSpec::new(NodeId(i)).with_weight(WEIGHT_MAX));
    let vnodes = NODES_MAX * (WEIGHT_MAX * VNODES_PER_WEIGHT) as usize;
    assert_eq!(Ring::new(heavy), Err(RingError::TooManyVnodes { vnodes, max: VNODES_MAX }));
    let message = RingError::DuplicateNode { node: NodeId(7) }.to_string();
    assert_eq!(message, "node 7 appears twice: each node must be described once");
}

#[test]
fn rings_count_vnodes_and_zones() {
    let ring = Ring::new([
        NodeSpec::new(NodeId(1)).with_zone("b"),
        NodeSpec::new(NodeId(2)).with_zone("a").with_weight(2),
        NodeSpec::new(NodeId(3)).with_zone("b"),
        NodeSpec::new(NodeId(4)),
        NodeSpec::new(NodeId(5)),
    ])
    .unwrap();
    assert_eq!(ring.node_count(), 5);
    assert_eq!(ring.vnode_count(), 6 * VNODES_PER_WEIGHT as usize);
    // "a", "b", and one zone for each unlabelled node.
    assert_eq!(ring.zone_count(), 4);
    assert_eq!(ring.total_weight(), 6);
    assert_eq!(ring.node(NodeId(2)).unwrap().weight, 2);
    assert_eq!(ring.node(NodeId(9)), None);
}

#[test]
fn nodes_join_and_leave() {
    let ring = Ring::new(plain_nodes(3)).unwrap();
    let grown = ring.with_node(NodeSpec::new(NodeId(4))).unwrap();
    assert_eq!(grown, Ring::new(plain_nodes(4)).unwrap());
    assert_eq!(grown.without_node(NodeId(4)).unwrap(), ring);
    assert_eq!(
        ring.with_node(NodeSpec::new(NodeId(2))),
        Err(RingError::DuplicateNode { node: NodeId(2) })
    );
    assert_eq!(ring.without_node(NodeId(9)), Err(RingError::UnknownNode { node: NodeId(9) }));
    let single = Ring::new(plain_nodes(1)).unwrap();
    assert_eq!(single.without_node(NodeId(1)), Err(RingError::NoNodes));
}

/// A heavier weight keeps the node's old points and adds new ones, so raising
/// a weight is like adding nodes: replicas only move onto the reweighted node.
#[test]
fn raising_a_weight_only_adds_points() {
    let light = Ring::new(plain_nodes(5)).unwrap();
    let heavy = Ring::new(
        plain_nodes(5).into_iter().map(|n| if n.id == NodeId(3) { n.with_weight(2) } else { n }),
    )
    .unwrap();
    let config = crate::PlacementConfig::new(256, 3);
    let plan = crate::MovementPlan::between(
        &light.place(&config).unwrap(),
        &heavy.place(&config).unwrap(),
    )
    .unwrap();
    assert!(!plan.is_empty());
    for step in plan.steps() {
        if let crate::Step::Move { to, .. } = step {
            assert_eq!(*to, NodeId(3), "{step:?}");
        }
    }
}
