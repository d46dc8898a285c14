//! Identifiers of nodes and shards.
//!
//! These have exactly the shape of the newtypes `crates/consensus` defines, so
//! that the two unify by replacing this module with a re-export; until then
//! the ring builds without depending on an engine crate.

/// A node (one `ringkv` server process) of the cluster.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// A shard: one consensus group holding one part of the key space.
///
/// Shard 0 is the metadata group ([`METADATA_SHARD`]); data shards are
/// numbered from [`FIRST_DATA_SHARD`] up to the shard count.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u64);

/// The metadata group: cluster members, the ring, placement and leaders.
pub const METADATA_SHARD: ShardId = ShardId(0);

/// The lowest data shard id; a cluster of `S` shards has data shards `1..=S`.
pub const FIRST_DATA_SHARD: ShardId = ShardId(1);
