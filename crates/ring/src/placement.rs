//! Shards to ordered replica nodes: the zone rule, the walk, bounded loads.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::ids::{FIRST_DATA_SHARD, NodeId, ShardId};
use crate::keyspace::SHARD_COUNT_MAX;
use crate::ring::Ring;

/// Largest replication factor.
///
/// As etcd advises for its own clusters: more than 7 voters only slows every
/// commit (a larger quorum) without a useful gain in fault tolerance.
pub const REPLICAS_MAX: u32 = 7;

/// Largest load slack ε, in percent (ε = 10, i.e. caps at 11× the mean, is
/// already no bound at all for any real cluster).
pub const EPSILON_PERCENT_MAX: u32 = 1000;

/// A cap on the replicas per node: consistent hashing with bounded loads
/// (Mirrokni, Thorup and Zadimoghaddam, 2018).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoadBound {
    /// Slack ε in percent, `1..=EPSILON_PERCENT_MAX`: node `n` holds at most
    /// `⌈(1 + ε) · R · S · weight(n) / total weight⌉` replicas.
    pub epsilon_percent: u32,
}

/// What to place: how many shards, how many replicas each, and whether loads
/// are bounded.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlacementConfig {
    /// Number of data shards `S` (ids `1..=S`), `1..=SHARD_COUNT_MAX`.
    pub shard_count: u32,
    /// Replicas per shard `R`, `1..=REPLICAS_MAX` and at most the node count.
    pub replicas: u32,
    /// A load bound, or `None` for plain consistent hashing (the default:
    /// only plain consistent hashing never moves a replica between two nodes
    /// that stay; see the crate docs).
    pub load_bound: Option<LoadBound>,
}

impl PlacementConfig {
    /// `shard_count` shards of `replicas` replicas, loads unbounded.
    pub fn new(shard_count: u32, replicas: u32) -> Self {
        PlacementConfig { shard_count, replicas, load_bound: None }
    }

    /// This configuration with loads bounded by slack `epsilon_percent`.
    #[must_use]
    pub fn with_load_bound(self, epsilon_percent: u32) -> Self {
        PlacementConfig { load_bound: Some(LoadBound { epsilon_percent }), ..self }
    }
}

/// Error computing or building a [`Placement`].
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlacementError {
    /// The shard count is zero or above [`SHARD_COUNT_MAX`].
    #[error("shard count {shard_count} is out of range: it must be between 1 and {max}")]
    ShardCountOutOfRange {
        /// The shard count asked for.
        shard_count: u32,
        /// [`SHARD_COUNT_MAX`].
        max: u32,
    },
    /// The replication factor is zero or above [`REPLICAS_MAX`].
    #[error("{replicas} replicas per shard is out of range: it must be between 1 and {max}")]
    ReplicasOutOfRange {
        /// Replicas asked for.
        replicas: u32,
        /// [`REPLICAS_MAX`].
        max: u32,
    },
    /// Fewer nodes than replicas per shard: replicas must be on distinct nodes.
    #[error(
        "{replicas} replicas per shard need {replicas} distinct nodes but the ring has \
         {nodes}: add nodes or lower the replication factor"
    )]
    NotEnoughNodes {
        /// Replicas per shard.
        replicas: u32,
        /// Nodes in the ring.
        nodes: usize,
    },
    /// The load slack is zero or above [`EPSILON_PERCENT_MAX`].
    #[error("load slack of {epsilon_percent}% is out of range: it must be between 1% and {max}%")]
    EpsilonOutOfRange {
        /// Slack asked for.
        epsilon_percent: u32,
        /// [`EPSILON_PERCENT_MAX`].
        max: u32,
    },
    /// A shard of an explicit placement has a different replica count than
    /// the first shard.
    #[error(
        "shard {} has {replicas} replicas but shard 1 has {expected}: every shard must have \
         the same replication factor", .shard.0
    )]
    UnevenReplicas {
        /// The odd shard.
        shard: ShardId,
        /// Its replica count.
        replicas: usize,
        /// The first shard's replica count.
        expected: usize,
    },
    /// A shard of an explicit placement lists a node twice.
    #[error("shard {} lists node {} twice: replicas must be on distinct nodes", .shard.0, .node.0)]
    DuplicateReplica {
        /// The shard.
        shard: ShardId,
        /// The repeated node.
        node: NodeId,
    },
}

/// Every data shard's replicas: the preferred leader first, then the
/// followers in ascending id order.
///
/// Followers are kept sorted so that a placement is exactly "a replica set
/// plus a preferred leader per shard": two placements are equal when every
/// shard has the same set and the same leader, and a movement plan
/// reproduces one from the other exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Placement {
    /// Replicas per shard `R`. Invariant: `1 <= R <= REPLICAS_MAX`.
    replicas: u32,
    /// Shard `ShardId(i + 1)` owns `nodes[i·R .. (i+1)·R]`. Invariant: the
    /// length is `S·R` with `1 <= S <= SHARD_COUNT_MAX`; each shard's nodes
    /// are distinct and `nodes[i·R + 1 ..]` ascend.
    nodes: Vec<NodeId>,
}

impl Placement {
    /// A placement given explicitly, one replica list per shard from shard 1
    /// on, each with its preferred leader first (the followers' order does
    /// not matter: they are sorted).
    ///
    /// # Errors
    ///
    /// [`PlacementError`] if there are no shards or too many, a replica count
    /// is out of range or differs between shards, or a shard repeats a node.
    pub fn from_shards(shards: Vec<Vec<NodeId>>) -> Result<Self, PlacementError> {
        let shard_count = u32::try_from(shards.len()).unwrap_or(u32::MAX);
        if shards.is_empty() || shard_count > SHARD_COUNT_MAX {
            return Err(PlacementError::ShardCountOutOfRange { shard_count, max: SHARD_COUNT_MAX });
        }
        let expected = shards[0].len();
        let replicas = u32::try_from(expected).unwrap_or(u32::MAX);
        if replicas == 0 || replicas > REPLICAS_MAX {
            return Err(PlacementError::ReplicasOutOfRange { replicas, max: REPLICAS_MAX });
        }
        let mut nodes = Vec::with_capacity(shards.len() * expected);
        for (shard, mut list) in data_shards().zip(shards) {
            if list.len() != expected {
                return Err(PlacementError::UnevenReplicas {
                    shard,
                    replicas: list.len(),
                    expected,
                });
            }
            list[1..].sort_unstable();
            let mut sorted = list.clone();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(PlacementError::DuplicateReplica { shard, node: pair[0] });
            }
            nodes.extend(list);
        }
        let placement = Placement { replicas, nodes };
        placement.check_invariants();
        Ok(placement)
    }

    /// Number of data shards.
    pub fn shard_count(&self) -> u32 {
        u32::try_from(self.nodes.len() / self.replicas as usize).expect("S <= SHARD_COUNT_MAX")
    }

    /// Replicas per shard.
    pub fn replicas_per_shard(&self) -> u32 {
        self.replicas
    }

    /// The replicas of `shard`, preferred leader first; `None` for the
    /// metadata shard or a shard beyond the shard count.
    pub fn replicas(&self, shard: ShardId) -> Option<&[NodeId]> {
        let index = usize::try_from(shard.0.checked_sub(FIRST_DATA_SHARD.0)?).ok()?;
        let r = self.replicas as usize;
        self.nodes.get(index * r..(index + 1) * r)
    }

    /// The preferred leader of `shard`.
    pub fn leader(&self, shard: ShardId) -> Option<NodeId> {
        self.replicas(shard).map(|replicas| replicas[0])
    }

    /// Every shard with its replicas, by ascending shard id.
    pub fn iter(&self) -> impl Iterator<Item = (ShardId, &[NodeId])> + '_ {
        data_shards().zip(self.nodes.chunks_exact(self.replicas as usize))
    }

    /// The shards that have a replica on `node`, ascending.
    pub fn shards_on(&self, node: NodeId) -> impl Iterator<Item = ShardId> + '_ {
        self.iter().filter(move |(_, replicas)| replicas.contains(&node)).map(|(shard, _)| shard)
    }

    /// Replicas held by each node that holds any.
    pub fn loads(&self) -> BTreeMap<NodeId, u32> {
        let mut loads = BTreeMap::new();
        for &node in &self.nodes {
            *loads.entry(node).or_insert(0) += 1;
        }
        loads
    }

    /// Shards each node is the preferred leader of (nodes leading none are
    /// left out).
    pub fn leader_counts(&self) -> BTreeMap<NodeId, u32> {
        let mut counts = BTreeMap::new();
        for (_, replicas) in self.iter() {
            *counts.entry(replicas[0]).or_insert(0) += 1;
        }
        counts
    }

    /// Checks the structural invariants; cheap enough to keep on in release.
    fn check_invariants(&self) {
        let r = self.replicas as usize;
        assert!((1..=REPLICAS_MAX).contains(&self.replicas));
        assert!(!self.nodes.is_empty() && self.nodes.len().is_multiple_of(r));
        assert!(self.nodes.len() / r <= SHARD_COUNT_MAX as usize);
        for replicas in self.nodes.chunks_exact(r) {
            assert!(replicas[1..].is_sorted(), "followers are kept sorted");
            assert!(!replicas[1..].contains(&replicas[0]), "the leader is not also a follower");
            assert!(replicas[1..].windows(2).all(|pair| pair[0] < pair[1]), "distinct replicas");
        }
    }
}

/// Data shard ids from the first one up.
fn data_shards() -> impl Iterator<Item = ShardId> {
    (FIRST_DATA_SHARD.0..).map(ShardId)
}

impl Ring {
    /// The placement of `config.shard_count` data shards on this ring.
    ///
    /// A pure function of the ring (that is, of the node set) and `config`.
    ///
    /// # Errors
    ///
    /// [`PlacementError`] when the configuration is out of range or the ring
    /// has fewer nodes than `config.replicas`.
    pub fn place(&self, config: &PlacementConfig) -> Result<Placement, PlacementError> {
        self.check_config(config)?;
        let mut loads = match config.load_bound {
            None => Loads::unbounded(self, config.replicas),
            Some(bound) => Loads::bounded(self, config, bound),
        };
        let mut walk = Walk::new(self, config.replicas);
        let r = config.replicas as usize;
        let mut nodes = Vec::with_capacity(config.shard_count as usize * r);
        for shard in data_shards().take(config.shard_count as usize) {
            walk.select(self, &loads, Ring::shard_point(shard));
            for pick in &walk.chosen {
                loads.add(self, pick.node);
            }
            walk.append_replicas(self, &mut nodes);
        }
        let placement = Placement { replicas: config.replicas, nodes };
        placement.check_invariants();
        Ok(placement)
    }

    /// The replicas of one shard under plain consistent hashing (no load
    /// bound), preferred leader first. This is how the metadata group
    /// ([`crate::METADATA_SHARD`]) is placed, and it agrees with
    /// [`Ring::place`] without a load bound for every data shard.
    ///
    /// # Errors
    ///
    /// [`PlacementError::ReplicasOutOfRange`] or
    /// [`PlacementError::NotEnoughNodes`].
    pub fn replicas_of(
        &self,
        shard: ShardId,
        replicas: u32,
    ) -> Result<Vec<NodeId>, PlacementError> {
        self.check_config(&PlacementConfig::new(1, replicas))?;
        let loads = Loads::unbounded(self, replicas);
        let mut walk = Walk::new(self, replicas);
        walk.select(self, &loads, Ring::shard_point(shard));
        let mut nodes = Vec::with_capacity(replicas as usize);
        walk.append_replicas(self, &mut nodes);
        Ok(nodes)
    }

    /// The most replicas `node` may hold under `config`'s load bound, or
    /// `None` without a bound or for a node not in the ring.
    ///
    /// The bound holds for every node whenever the zone rule leaves room for
    /// it; see the crate docs for when it provably does.
    pub fn capacity(&self, node: NodeId, config: &PlacementConfig) -> Option<u32> {
        let bound = config.load_bound?;
        let spec = self.node(node)?;
        Some(capacity(config, bound, u64::from(spec.weight), self.total_weight()))
    }

    fn check_config(&self, config: &PlacementConfig) -> Result<(), PlacementError> {
        let PlacementConfig { shard_count, replicas, load_bound } = *config;
        if shard_count == 0 || shard_count > SHARD_COUNT_MAX {
            return Err(PlacementError::ShardCountOutOfRange { shard_count, max: SHARD_COUNT_MAX });
        }
        if replicas == 0 || replicas > REPLICAS_MAX {
            return Err(PlacementError::ReplicasOutOfRange { replicas, max: REPLICAS_MAX });
        }
        if replicas as usize > self.node_count() {
            return Err(PlacementError::NotEnoughNodes { replicas, nodes: self.node_count() });
        }
        if let Some(LoadBound { epsilon_percent }) = load_bound
            && (epsilon_percent == 0 || epsilon_percent > EPSILON_PERCENT_MAX)
        {
            return Err(PlacementError::EpsilonOutOfRange {
                epsilon_percent,
                max: EPSILON_PERCENT_MAX,
            });
        }
        Ok(())
    }
}

/// `⌈(100 + ε%) · R · S · weight / (100 · total weight)⌉`, exactly, in
/// integers (no float rounding can differ between machines).
fn capacity(config: &PlacementConfig, bound: LoadBound, weight: u64, total_weight: u64) -> u32 {
    let numerator = u128::from(100 + bound.epsilon_percent)
        * u128::from(config.replicas)
        * u128::from(config.shard_count)
        * u128::from(weight);
    let denominator = 100 * u128::from(total_weight);
    // At most (1 + EPSILON_PERCENT_MAX/100) · R · S, far inside u32.
    u32::try_from(numerator.div_ceil(denominator)).expect("capacity fits in u32")
}

/// The zone rule's rounds for `R` replicas: every node of zone rank below
/// `round` is taken, plus the `need` best nodes of rank `round`.
///
/// A node's zone rank is the number of nodes of its zone before it in the
/// shard's order, so rank 0 is the first node of every zone, rank 1 the
/// second, and so on: with at least `R` zones the rule takes `R` distinct
/// zones (`round == 0`); with fewer, it spreads replicas over zones round by
/// round, as evenly as the zones' sizes allow.
#[derive(Copy, Clone, Debug)]
struct Rounds {
    /// The partial round. Invariant: `below < R <= below + zones_in_round`.
    round: u32,
    /// Nodes of rank below `round`: `Σ_{k < round} #{zones of size > k}`.
    below: u32,
    /// Nodes of rank `round` to take: `R - below`, at least 1.
    need: u32,
    /// Zones with a node of rank `round`: `#{zones of size > round}`.
    zones_in_round: u32,
}

impl Rounds {
    fn new(zone_sizes: &[u32], replicas: u32) -> Self {
        let mut below = 0u32;
        let largest = zone_sizes.iter().copied().max().unwrap_or(0);
        for round in 0..largest {
            let zones_in_round = count_u32(zone_sizes.iter().filter(|&&size| size > round));
            if below + zones_in_round >= replicas {
                return Rounds { round, below, need: replicas - below, zones_in_round };
            }
            below += zones_in_round;
        }
        unreachable!("checked: the ring has at least R = {replicas} nodes");
    }
}

fn count_u32<T>(items: impl Iterator<Item = T>) -> u32 {
    u32::try_from(items.count()).expect("NODES_MAX fits in u32")
}

/// Replica counts so far, and which nodes are full, while shards are placed
/// one after another in shard-id order.
struct Loads {
    /// Replicas placed on each node index.
    load: Vec<u32>,
    /// Cap of each node index (`u32::MAX` without a bound).
    cap: Vec<u32>,
    /// Whether each node index is at its cap. Invariant: `full[n] == (load[n] >= cap[n])`.
    full: Vec<bool>,
    /// Nodes not full in each zone.
    zone_open: Vec<u32>,
    /// Zones with more than `rounds.round` nodes not full: the zones whose
    /// rank-`round` node is one that is not full.
    open_zones_in_round: u32,
    /// The zone rule's rounds (fixed for a ring and `R`).
    rounds: Rounds,
}

impl Loads {
    fn unbounded(ring: &Ring, replicas: u32) -> Self {
        let rounds = Rounds::new(ring.zone_sizes(), replicas);
        Loads {
            load: vec![0; ring.node_count()],
            cap: vec![u32::MAX; ring.node_count()],
            full: vec![false; ring.node_count()],
            zone_open: ring.zone_sizes().to_vec(),
            open_zones_in_round: rounds.zones_in_round,
            rounds,
        }
    }

    fn bounded(ring: &Ring, config: &PlacementConfig, bound: LoadBound) -> Self {
        let total_weight = ring.total_weight();
        let cap = ring
            .nodes()
            .iter()
            .map(|node| capacity(config, bound, u64::from(node.weight), total_weight))
            .collect();
        Loads { cap, ..Loads::unbounded(ring, config.replicas) }
    }

    fn add(&mut self, ring: &Ring, node: usize) {
        self.load[node] += 1;
        if !self.full[node] && self.load[node] >= self.cap[node] {
            self.full[node] = true;
            let zone = ring.zone_of(node);
            self.zone_open[zone] -= 1;
            if self.zone_open[zone] == self.rounds.round {
                self.open_zones_in_round -= 1;
            }
        }
    }
}

/// A node met on a shard's walk.
#[derive(Copy, Clone, Debug)]
struct Pick {
    /// Its order of first appearance clockwise from the shard's point.
    position: u32,
    /// Its node index.
    node: usize,
}

/// Scratch space for one shard's walk, reused across shards. Per-node and
/// per-zone counters are valid only where their stamp equals `stamp`, which
/// saves clearing them for every shard.
struct Walk {
    stamp: u32,
    node_stamp: Vec<u32>,
    zone_stamp: Vec<u32>,
    /// Open (not full) nodes of each zone met so far.
    zone_open_seen: Vec<u32>,
    /// Full nodes of each zone met so far.
    zone_full_seen: Vec<u32>,
    /// Nodes of rank below the partial round, then the chosen ones of it.
    chosen: Vec<Pick>,
    /// Open nodes of the partial round's rank, by position.
    open_candidates: Vec<Pick>,
    /// Full nodes of the partial round's rank, by position.
    full_candidates: Vec<Pick>,
}

impl Walk {
    fn new(ring: &Ring, replicas: u32) -> Self {
        Walk {
            stamp: 0,
            node_stamp: vec![0; ring.node_count()],
            zone_stamp: vec![0; ring.zone_count()],
            zone_open_seen: vec![0; ring.zone_count()],
            zone_full_seen: vec![0; ring.zone_count()],
            chosen: Vec::with_capacity(replicas as usize),
            open_candidates: Vec::with_capacity(replicas as usize),
            full_candidates: Vec::with_capacity(replicas as usize),
        }
    }

    /// Chooses the replicas of the shard at `point` into `self.chosen`.
    ///
    /// Nodes are met in clockwise order. Within its zone, a node's rank counts
    /// the open nodes met before it, and a full node ranks after all of its
    /// zone's open nodes. The choice is the `R` smallest `(rank, full,
    /// position)`: all nodes of rank below the partial round, then that
    /// round's open nodes, then its full ones, each by position. Without a
    /// load bound no node is full and this is "the first `R` nodes by
    /// (zone rank, position)".
    fn select(&mut self, ring: &Ring, loads: &Loads, point: u64) {
        let Rounds { round, below, need, .. } = loads.rounds;
        self.stamp += 1;
        self.chosen.clear();
        self.open_candidates.clear();
        self.full_candidates.clear();
        let open_in_round = loads.open_zones_in_round as usize;
        let mut position = 0u32;
        for node in ring.clockwise(point) {
            if self.node_stamp[node] == self.stamp {
                continue;
            }
            self.node_stamp[node] = self.stamp;
            let zone = ring.zone_of(node);
            if self.zone_stamp[zone] != self.stamp {
                self.zone_stamp[zone] = self.stamp;
                self.zone_open_seen[zone] = 0;
                self.zone_full_seen[zone] = 0;
            }
            let full = loads.full[node];
            let rank = if full {
                self.zone_full_seen[zone] += 1;
                loads.zone_open[zone] + self.zone_full_seen[zone] - 1
            } else {
                self.zone_open_seen[zone] += 1;
                self.zone_open_seen[zone] - 1
            };
            let pick = Pick { position, node };
            position += 1;
            if rank < round {
                self.chosen.push(pick);
            } else if rank == round {
                if full { &mut self.full_candidates } else { &mut self.open_candidates }.push(pick);
            }
            // Nodes not met yet come later clockwise, so they lose every tie
            // on position: stop as soon as no later node can be chosen.
            let open = self.open_candidates.len();
            if self.chosen.len() == below as usize
                && (open >= need as usize
                    || (open == open_in_round
                        && open + self.full_candidates.len() >= need as usize))
            {
                break;
            }
        }
        let best = self.open_candidates.iter().chain(&self.full_candidates).take(need as usize);
        self.chosen.extend(best);
        assert_eq!(
            self.chosen.len(),
            (below + need) as usize,
            "a full walk meets every node, so it always completes R picks"
        );
    }

    /// Appends the chosen nodes' ids: the first clockwise (the preferred
    /// leader), then the others by ascending id.
    fn append_replicas(&mut self, ring: &Ring, out: &mut Vec<NodeId>) {
        let leader = (0..self.chosen.len())
            .min_by_key(|&i| self.chosen[i].position)
            .expect("R >= 1 nodes are chosen");
        self.chosen.swap(0, leader);
        // Node indices ascend with node ids.
        self.chosen[1..].sort_unstable_by_key(|pick| pick.node);
        out.extend(self.chosen.iter().map(|pick| ring.nodes()[pick.node].id));
    }
}

#[cfg(test)]
mod tests;
