//! Strategies and helpers shared by the crate's tests.

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

use crate::{NodeId, NodeSpec, Ring};

/// Node sets of `min..=max` nodes with distinct ids below 1000, weights
/// 1..=3, and zones: none, all labelled (1..=4 labels), or a mix of
/// labelled and unlabelled nodes.
pub(crate) fn node_set(min: usize, max: usize) -> impl Strategy<Value = Vec<NodeSpec>> {
    (btree_set(1u64..1000, min..=max), 0u8..3, 1u8..=4)
        .prop_flat_map(|(ids, mode, labels)| {
            let attrs = vec((1u32..=3, 0..labels, any::<bool>()), ids.len());
            (Just(ids), attrs, Just(mode))
        })
        .prop_map(|(ids, attrs, mode)| {
            ids.into_iter()
                .zip(attrs)
                .map(|(id, (weight, label, labelled))| {
                    let zone = match mode {
                        0 => None,
                        1 => Some(label),
                        _ => labelled.then_some(label),
                    };
                    NodeSpec { id: NodeId(id), weight, zone: zone.map(|z| format!("zone-{z}")) }
                })
                .collect()
        })
}

/// A node set and a node (id, weight, zone) that is not in it.
pub(crate) fn node_set_and_newcomer(
    min: usize,
    max: usize,
) -> impl Strategy<Value = (Vec<NodeSpec>, NodeSpec)> {
    (node_set(min, max), 1000u64..2000, 1u32..=3, proptest::option::of(0u8..4)).prop_map(
        |(nodes, id, weight, zone)| {
            let newcomer =
                NodeSpec { id: NodeId(id), weight, zone: zone.map(|z| format!("zone-{z}")) };
            (nodes, newcomer)
        },
    )
}

/// The ring of `nodes`, which the strategies keep valid.
pub(crate) fn ring(nodes: &[NodeSpec]) -> Ring {
    Ring::new(nodes.iter().cloned()).expect("strategies build valid node sets")
}

/// Nodes `1..=count` of weight 1, without zones.
pub(crate) fn plain_nodes(count: u64) -> Vec<NodeSpec> {
    (1..=count).map(|i| NodeSpec::new(NodeId(i))).collect()
}
