//! The ring: nodes, their virtual nodes and zones, on the 64-bit hash circle.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ids::{NodeId, ShardId};

/// Virtual nodes a node gets per unit of weight.
///
/// A node's share of the circle is a sum of this many random arcs, so its
/// relative spread is about `1/√(VNODES_PER_WEIGHT · weight)` (9% at 128);
/// more points would buy little, since with a few thousand shards the
/// sampling of shard points dominates (see the `balance` example).
pub const VNODES_PER_WEIGHT: u32 = 128;

/// Weight of a node that does not say otherwise.
pub const DEFAULT_WEIGHT: u32 = 1;

/// Largest node weight: a node may be sized up to 64 times a weight-1 node.
pub const WEIGHT_MAX: u32 = 64;

/// Largest number of nodes in one ring.
pub const NODES_MAX: usize = 4096;

/// Largest number of virtual nodes in one ring (all nodes together), which
/// bounds a ring's memory to about 24 MiB.
pub const VNODES_MAX: usize = 1 << 21;

/// Seed of the hash that places virtual nodes; part of the cluster's format.
const VNODE_SEED: u64 = u64::from_be_bytes(*b"ringkvVN");

/// Seed of the hash that places shards; part of the cluster's format.
const SHARD_SEED: u64 = u64::from_be_bytes(*b"ringkvSH");

/// A node as the ring sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeSpec {
    /// The node's id; unique within a ring.
    pub id: NodeId,
    /// Relative capacity, `1..=WEIGHT_MAX`: the node gets
    /// `weight · VNODES_PER_WEIGHT` virtual nodes and, on average, a share of
    /// the replicas proportional to its weight.
    pub weight: u32,
    /// Failure domain (rack, zone, region). Replicas of one shard go to
    /// distinct zones first; a node without a zone is a zone of its own.
    pub zone: Option<String>,
}

impl NodeSpec {
    /// A node of [`DEFAULT_WEIGHT`] and no zone.
    pub fn new(id: NodeId) -> Self {
        NodeSpec { id, weight: DEFAULT_WEIGHT, zone: None }
    }

    /// This node with another weight.
    #[must_use]
    pub fn with_weight(self, weight: u32) -> Self {
        NodeSpec { weight, ..self }
    }

    /// This node in `zone`.
    #[must_use]
    pub fn with_zone(self, zone: impl Into<String>) -> Self {
        NodeSpec { zone: Some(zone.into()), ..self }
    }
}

/// Error building a [`Ring`].
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingError {
    /// The node set is empty.
    #[error("a ring needs at least one node: add a node before computing a placement")]
    NoNodes,
    /// More nodes than [`NODES_MAX`].
    #[error("{count} nodes is more than the {max} a ring may hold: remove nodes")]
    TooManyNodes {
        /// Nodes given.
        count: usize,
        /// [`NODES_MAX`].
        max: usize,
    },
    /// Two node descriptions carry the same id.
    #[error("node {} appears twice: each node must be described once", .node.0)]
    DuplicateNode {
        /// The repeated id.
        node: NodeId,
    },
    /// A weight outside `1..=WEIGHT_MAX`.
    #[error("node {} has weight {weight}: weights must be between 1 and {max}", .node.0)]
    WeightOutOfRange {
        /// The node.
        node: NodeId,
        /// Its weight.
        weight: u32,
        /// [`WEIGHT_MAX`].
        max: u32,
    },
    /// The weights add up to more virtual nodes than [`VNODES_MAX`].
    #[error(
        "the node weights add up to {vnodes} virtual nodes, more than the {max} a ring may \
         hold: lower the weights"
    )]
    TooManyVnodes {
        /// Virtual nodes the weights ask for.
        vnodes: usize,
        /// [`VNODES_MAX`].
        max: usize,
    },
    /// [`Ring::without_node`] was asked to remove a node the ring lacks.
    #[error("node {} is not in the ring, so it cannot be removed", .node.0)]
    UnknownNode {
        /// The missing node.
        node: NodeId,
    },
}

/// Nodes placed on the 64-bit hash circle by their virtual nodes.
///
/// A pure function of the node *set*: the same nodes in any order build an
/// equal ring, because nodes are sorted by id and every point is a hash of
/// `(node id, vnode index)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// The nodes, sorted by id; a node's index here is its "node index".
    nodes: Vec<NodeSpec>,
    /// Zone index of each node index. Labelled zones are numbered in name
    /// order, then every unlabelled node gets a zone of its own.
    zone_of: Vec<u32>,
    /// Number of nodes in each zone index. Invariant: all entries `>= 1`.
    zone_sizes: Vec<u32>,
    /// Virtual-node points, ascending. Ties (hash collisions) are broken by
    /// node index, i.e. by node id, so the order is still a function of the
    /// node set.
    points: Vec<u64>,
    /// Node index owning each point. Invariant: `owners.len() == points.len()`.
    owners: Vec<u32>,
}

impl Ring {
    /// Builds the ring of a node set.
    ///
    /// # Errors
    ///
    /// [`RingError`] when the set is empty, too large, has a duplicate id or
    /// a weight out of range.
    pub fn new(nodes: impl IntoIterator<Item = NodeSpec>) -> Result<Self, RingError> {
        let mut nodes: Vec<NodeSpec> = nodes.into_iter().collect();
        if nodes.is_empty() {
            return Err(RingError::NoNodes);
        }
        if nodes.len() > NODES_MAX {
            return Err(RingError::TooManyNodes { count: nodes.len(), max: NODES_MAX });
        }
        nodes.sort_by_key(|node| node.id);
        if let Some(pair) = nodes.windows(2).find(|pair| pair[0].id == pair[1].id) {
            return Err(RingError::DuplicateNode { node: pair[0].id });
        }
        let mut vnodes = 0usize;
        for node in &nodes {
            if node.weight == 0 || node.weight > WEIGHT_MAX {
                return Err(RingError::WeightOutOfRange {
                    node: node.id,
                    weight: node.weight,
                    max: WEIGHT_MAX,
                });
            }
            vnodes += vnode_count(node.weight);
        }
        if vnodes > VNODES_MAX {
            return Err(RingError::TooManyVnodes { vnodes, max: VNODES_MAX });
        }

        let (zone_of, zone_sizes) = number_zones(&nodes);

        let mut placed: Vec<(u64, u32)> = Vec::with_capacity(vnodes);
        for (index, node) in nodes.iter().enumerate() {
            let index = u32::try_from(index).expect("NODES_MAX fits in u32");
            for vnode in 0..node.weight * VNODES_PER_WEIGHT {
                placed.push((vnode_point(node.id, vnode), index));
            }
        }
        placed.sort_unstable();
        let (points, owners) = placed.into_iter().unzip();

        let ring = Ring { nodes, zone_of, zone_sizes, points, owners };
        ring.check_invariants();
        Ok(ring)
    }

    /// This ring with one more node.
    ///
    /// # Errors
    ///
    /// As [`Ring::new`], e.g. [`RingError::DuplicateNode`] if it is present.
    pub fn with_node(&self, node: NodeSpec) -> Result<Self, RingError> {
        Ring::new(self.nodes.iter().cloned().chain([node]))
    }

    /// This ring without node `id`.
    ///
    /// # Errors
    ///
    /// [`RingError::UnknownNode`] if the ring lacks it, [`RingError::NoNodes`]
    /// if it was the last node.
    pub fn without_node(&self, id: NodeId) -> Result<Self, RingError> {
        if self.index_of(id).is_none() {
            return Err(RingError::UnknownNode { node: id });
        }
        Ring::new(self.nodes.iter().filter(|node| node.id != id).cloned())
    }

    /// The nodes, sorted by id.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// The description of node `id`, if it is in the ring.
    pub fn node(&self, id: NodeId) -> Option<&NodeSpec> {
        self.index_of(id).map(|index| &self.nodes[index])
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of virtual nodes (points on the circle).
    pub fn vnode_count(&self) -> usize {
        self.points.len()
    }

    /// Number of zones, counting each unlabelled node as a zone of its own.
    pub fn zone_count(&self) -> usize {
        self.zone_sizes.len()
    }

    /// The sum of all node weights.
    pub fn total_weight(&self) -> u64 {
        self.nodes.iter().map(|node| u64::from(node.weight)).sum()
    }

    /// The point of `shard` on the circle.
    pub(crate) fn shard_point(shard: ShardId) -> u64 {
        xxh3_64_with_seed(&shard.0.to_le_bytes(), SHARD_SEED)
    }

    pub(crate) fn index_of(&self, id: NodeId) -> Option<usize> {
        self.nodes.binary_search_by_key(&id, |node| node.id).ok()
    }

    pub(crate) fn zone_of(&self, node_index: usize) -> usize {
        self.zone_of[node_index] as usize
    }

    pub(crate) fn zone_sizes(&self) -> &[u32] {
        &self.zone_sizes
    }

    /// Node indices of the points clockwise from `point`: the first point at
    /// or after it, around the circle once. Nodes repeat (one per vnode).
    pub(crate) fn clockwise(&self, point: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|&p| p < point);
        let (before, after) = self.owners.split_at(start);
        after.iter().chain(before).map(|&owner| owner as usize)
    }

    /// Checks the structural invariants; cheap enough to keep on in release.
    fn check_invariants(&self) {
        assert_eq!(self.points.len(), self.owners.len());
        assert_eq!(self.zone_of.len(), self.nodes.len());
        assert!(self.points.is_sorted(), "ring points must be sorted");
        assert!(self.nodes.windows(2).all(|pair| pair[0].id < pair[1].id));
        let zoned: u32 = self.zone_sizes.iter().sum();
        assert_eq!(zoned as usize, self.nodes.len(), "every node is in exactly one zone");
        assert!(self.zone_sizes.iter().all(|&size| size >= 1), "no zone is empty");
    }
}

/// Virtual nodes of a node of `weight`. `weight <= WEIGHT_MAX` keeps it small.
fn vnode_count(weight: u32) -> usize {
    (weight * VNODES_PER_WEIGHT) as usize
}

/// The point of virtual node `vnode` of node `node`.
///
/// A node's points depend only on its own id, so adding or removing a node
/// leaves every other point where it was, and raising a node's weight only
/// adds points (the indices are `0..weight · VNODES_PER_WEIGHT`).
fn vnode_point(node: NodeId, vnode: u32) -> u64 {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&node.0.to_le_bytes());
    bytes[8..].copy_from_slice(&vnode.to_le_bytes());
    xxh3_64_with_seed(&bytes, VNODE_SEED)
}

/// Zone index of every node, and the size of every zone.
fn number_zones(nodes: &[NodeSpec]) -> (Vec<u32>, Vec<u32>) {
    let labels: BTreeSet<&str> = nodes.iter().filter_map(|node| node.zone.as_deref()).collect();
    let labelled: BTreeMap<&str, u32> = labels
        .into_iter()
        .enumerate()
        .map(|(index, label)| (label, u32::try_from(index).expect("NODES_MAX fits in u32")))
        .collect();
    let mut next = u32::try_from(labelled.len()).expect("NODES_MAX fits in u32");
    let mut zone_sizes = vec![0u32; labelled.len()];
    let zone_of = nodes
        .iter()
        .map(|node| match node.zone.as_deref() {
            Some(label) => {
                let zone = labelled[label];
                zone_sizes[zone as usize] += 1;
                zone
            }
            None => {
                let zone = next;
                next += 1;
                zone_sizes.push(1);
                zone
            }
        })
        .collect();
    (zone_of, zone_sizes)
}

#[cfg(test)]
mod tests;
