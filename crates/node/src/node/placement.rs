//! Placement of data shards on a subset of the members (ADR 0002, step 2):
//! the metadata leader's choice of each data shard's target replica set,
//! and what a node tells its callers about where a shard is.
//!
//! While a sharded cluster has at most R voting members (`--replicas`)
//! every member holds every shard and no target is recorded. Beyond R,
//! the metadata leader places the data shards on the ring of voting
//! members (`Ring::place`, weight 1 each) and records, through the
//! metadata log ([`ProposalBody::ShardTargets`]), the target of each
//! shard whose recorded target differs: at most
//! [`NodeConfig::max_concurrent_moves`](crate::NodeConfig) shards per
//! pass, one pass per election timeout while the previous change is in
//! flight or applied. The metadata group itself stays on every node, as a
//! voter.
//!
//! A replica's consensus id is its node's id, so a shard must never come
//! back to a node a target once moved it off (see
//! `ClusterTables::retired`): when the ring would put it back, the leader
//! reports it ([`Node::placement_blocked`]) and keeps the live members of
//! its target, filling in for departed ones with other members (or leaves
//! the target as it is when too few are left); every replica refuses a
//! target naming a retired node when it applies, whoever proposed it.
//!
//! Targets are acted on by the data shards' leaders (membership changes
//! toward the target: `housekeeping::reconcile_membership`) and by every
//! node (creating and dropping replicas: [`hosting`](super::hosting)); a
//! move counts against `--max-concurrent-moves` until the shard's leader
//! reports the target as its configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ringkv_consensus::{NodeId, Replica, ShardId};
use ringkv_ring::{NodeSpec, PlacementConfig, Ring};
use ringkv_storage::Disk;

use super::Node;
use crate::cluster::ClusterTables;
use crate::config::META_SHARD;
use crate::engine::Engine;
use crate::io::{Clock, Transport};
use crate::proposal::{ProposalBody, ShardTarget};

/// Every data shard's ideal replica set given the member table: every
/// member while at most `replicas` members vote, else the ring placement
/// of the voting members (ascending node ids per shard). `None` when the
/// table cannot be placed (no voter, or a keyspace the ring refuses).
///
/// Members in `down` are left out while the others still number at least
/// `replicas` (their shards are re-created on the others); with fewer up,
/// leaving them out would only shrink every shard, so they count. Members
/// being drained (`ClusterTables::draining`) are left out the same way,
/// and before down ones: a drain is what an operator asked for.
pub(crate) fn ideal_targets(
    tables: &ClusterTables,
    shard_count: u32,
    replicas: u32,
    down: &BTreeSet<NodeId>,
) -> Option<BTreeMap<ShardId, Vec<NodeId>>> {
    let all: Vec<NodeId> =
        tables.members.values().filter(|m| !m.is_learner).map(|m| m.id).collect();
    let draining = |n: &NodeId| tables.draining.contains(n);
    let mut up: Vec<NodeId> =
        all.iter().copied().filter(|n| !down.contains(n) && !draining(n)).collect();
    if up.len() < replicas as usize {
        up = all.iter().copied().filter(|n| !draining(n)).collect();
    }
    let excluding = up.len() >= replicas as usize && up.len() < all.len();
    let voters = if excluding { up } else { all };
    if voters.is_empty() {
        return None;
    }
    let shards = (1..=u64::from(shard_count)).map(ShardId);
    if excluding && voters.len() == replicas as usize {
        // Members are down: exactly R up voters hold every shard.
        return Some(shards.map(|s| (s, voters.clone())).collect());
    }
    if voters.len() <= replicas as usize {
        let all: Vec<NodeId> = tables.members.keys().copied().collect();
        return Some(shards.map(|s| (s, all.clone())).collect());
    }
    let ring = Ring::new(voters.iter().map(|id| NodeSpec::new(ringkv_ring::NodeId(id.0)))).ok()?;
    let placement = ring.place(&PlacementConfig::new(shard_count, replicas)).ok()?;
    let mut out = BTreeMap::new();
    for shard in shards {
        let mut nodes: Vec<NodeId> = placement
            .replicas(ringkv_ring::ShardId(shard.0))?
            .iter()
            .map(|n| NodeId(n.0))
            .collect();
        nodes.sort_unstable();
        out.insert(shard, nodes);
    }
    Some(out)
}

/// The target changes one placement pass proposes, at most `max` of them
/// in ascending shard order, and the shards held back by the retired-node
/// rule (each with a retired node its ideal target names).
pub(crate) fn next_targets(
    tables: &ClusterTables,
    ideal: &BTreeMap<ShardId, Vec<NodeId>>,
    max: usize,
) -> (Vec<ShardTarget>, BTreeMap<ShardId, NodeId>) {
    let mut changes = Vec::new();
    let mut blocked = BTreeMap::new();
    for (&shard, nodes) in ideal {
        if tables.target_of(shard) == *nodes {
            continue;
        }
        let retired = tables.retired.get(&shard);
        let nodes = match nodes.iter().find(|n| retired.is_some_and(|r| r.contains(n))) {
            None => nodes.clone(),
            Some(&node) => {
                blocked.insert(shard, node);
                match fallback(tables, shard, nodes) {
                    Some(other) if other != tables.target_of(shard) => other,
                    _ => continue,
                }
            }
        };
        if changes.len() < max {
            changes.push(ShardTarget { shard, nodes });
        }
    }
    (changes, blocked)
}

/// A target for `shard` of as many nodes as its `ideal` one, none of
/// them retired for it, when the ideal names a retired node: the members
/// of its current target first (no move), then the ideal's, then the
/// other voting members by id. `None` if too few members are left.
fn fallback(tables: &ClusterTables, shard: ShardId, ideal: &[NodeId]) -> Option<Vec<NodeId>> {
    let retired = tables.retired.get(&shard);
    let usable =
        |n: &NodeId| tables.members.contains_key(n) && !retired.is_some_and(|r| r.contains(n));
    let voters = tables.members.values().filter(|m| !m.is_learner).map(|m| m.id);
    let current = tables.target_of(shard);
    let mut out: Vec<NodeId> = Vec::with_capacity(ideal.len());
    for n in current.into_iter().chain(ideal.iter().copied()).chain(voters) {
        if out.len() == ideal.len() {
            break;
        }
        if usable(&n) && !out.contains(&n) {
            out.push(n);
        }
    }
    out.sort_unstable();
    (out.len() == ideal.len()).then_some(out)
}

/// A member's data-shard replicas as the metadata group knows them: what
/// a drain waits to see reach none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberReplicas {
    /// The member.
    pub member: NodeId,
    /// Whether it is being drained.
    pub draining: bool,
    /// The data shards it holds a replica of, ascending, by the
    /// configurations their leaders last reported (a shard not reported
    /// yet counts as held: where it is is not known).
    pub shards: Vec<ShardId>,
}

impl<E: Engine, D: Disk, T: Transport, C: Clock> Node<E, D, T, C> {
    /// Whether this node moves replicas to their targets
    /// (`--placement-moves`, on a sharded cluster): what a drain needs.
    pub fn moves_replicas(&self) -> bool {
        self.cfg.placement_moves && self.is_sharded()
    }

    /// Every member's data-shard replicas and whether it is being drained,
    /// in id order, from the metadata shard as applied here (a follower's
    /// view may trail the leader's by a round trip). Empty on a one-shard
    /// cluster and before the metadata shard is open.
    pub fn drain_status(&self) -> Vec<MemberReplicas> {
        let Some(t) = self.meta_tables().filter(|_| self.is_sharded()) else {
            return Vec::new();
        };
        let shard_count = self.cfg.keyspace.shard_count();
        t.members
            .keys()
            .map(|&member| MemberReplicas {
                member,
                draining: t.draining.contains(&member),
                shards: t.shards_held_by(member, shard_count),
            })
            .collect()
    }

    /// The metadata leader's placement pass, at most once per election
    /// timeout and one target change in flight at a time; only once it
    /// has applied everything it knows committed, so that it compares
    /// against the targets and retired nodes every replica will check.
    pub(super) fn plan_placement(&mut self, now: Duration) {
        if now < self.next_placement {
            return;
        }
        if let Some(id) = self.placement_proposal
            && self.proposals.contains_key(&id)
        {
            return;
        }
        let Some(m) = self.shards.get(&META_SHARD) else { return };
        let caught_up = m.applied >= m.replica.commit_index() && m.applied >= m.leases_ready_at;
        if !m.is_leader() || !caught_up || m.tables.keyspace.is_none() {
            return;
        }
        self.next_placement = now + self.cfg.election_timeout();
        let shard_count = self.cfg.keyspace.shard_count();
        let down = self.down_members(now);
        let Some(ideal) = ideal_targets(&m.tables, shard_count, self.cfg.replicas, &down) else {
            return;
        };
        // Moves under way (a shard whose reported configuration is not
        // yet its target) count against the limit.
        let moving = if self.cfg.placement_moves {
            ideal.keys().filter(|&&s| !m.tables.shard_settled(s)).count()
        } else {
            0
        };
        let max = (self.cfg.max_concurrent_moves as usize).saturating_sub(moving);
        let (changes, blocked) = next_targets(&m.tables, &ideal, max);
        self.placement_blocked = blocked;
        if changes.is_empty() {
            return;
        }
        let id = self.propose_internal(META_SHARD, ProposalBody::ShardTargets(changes), now);
        self.placement_proposal = Some(id);
    }

    /// Members the metadata leader places no shard on: with placement
    /// moves on, voting members other than this node it has not heard a
    /// node-level heartbeat from for `--down-timeout` (counted from this
    /// node's start for one never heard). Empty on other nodes.
    pub fn down_members(&self, now: Duration) -> BTreeSet<NodeId> {
        let Some(m) = self.shards.get(&META_SHARD) else { return BTreeSet::new() };
        if !self.cfg.placement_moves || !m.is_leader() {
            return BTreeSet::new();
        }
        let timeout = self.cfg.down_timeout;
        m.replica
            .membership()
            .voters
            .iter()
            .copied()
            .filter(|&n| n != self.id)
            .filter(|&n| {
                let heard = self.quiet.heard_at(n).unwrap_or(self.started_at).max(self.started_at);
                now.saturating_sub(heard) >= timeout
            })
            .collect()
    }

    /// Whether this node holds a replica of `shard` (the metadata shard
    /// included).
    pub fn hosts(&self, shard: ShardId) -> bool {
        self.shards.contains_key(&shard)
    }

    /// The shards this node holds a replica of, ascending.
    pub fn hosted_shards(&self) -> Vec<ShardId> {
        self.shards.keys().copied().collect()
    }

    /// The nodes holding `shard`, ascending: the voters and learners of
    /// the shard's configuration as this node's replica knows it, or,
    /// for a shard it does not hold, the configuration its leader last
    /// reported to the metadata group (its target before any report;
    /// every member while there is none), as applied here. Empty for a
    /// shard that is not the cluster's.
    pub fn shard_replica_nodes(&self, shard: ShardId) -> Vec<NodeId> {
        if let Some(s) = self.shards.get(&shard) {
            return s.replica.membership().members().into_iter().collect();
        }
        let in_keyspace = (1..=u64::from(self.cfg.keyspace.shard_count())).contains(&shard.0);
        match self.meta_tables() {
            Some(t) if in_keyspace => t.holders_of(shard),
            _ => Vec::new(),
        }
    }

    /// Data shards whose replicas are not yet where their target puts
    /// them (as the metadata group last heard from their leaders).
    pub fn shards_moving(&self) -> Vec<ShardId> {
        let Some(t) = self.meta_tables() else { return Vec::new() };
        t.targets.keys().copied().filter(|&s| !t.shard_settled(s)).collect()
    }

    /// The target replica set the metadata shard records for data shard
    /// `shard`, as applied here: `None` while it has none (it belongs on
    /// every member).
    pub fn shard_target(&self, shard: ShardId) -> Option<Vec<NodeId>> {
        self.meta_tables().and_then(|t| t.targets.get(&shard).cloned())
    }

    /// Every recorded target, as applied here.
    pub fn shard_targets(&self) -> BTreeMap<ShardId, Vec<NodeId>> {
        self.meta_tables().map(|t| t.targets.clone()).unwrap_or_default()
    }

    /// Data shards whose ideal placement would put them back on a node a
    /// target once moved them off, with that node: their target stays as
    /// it is (see the module docs). Known on the metadata leader, and on
    /// any node whose replica saw such a target refused.
    pub fn placement_blocked(&self) -> &BTreeMap<ShardId, NodeId> {
        &self.placement_blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proposal::Member;

    fn tables(ids: &[u64]) -> ClusterTables {
        let mut t = ClusterTables::default();
        for &id in ids {
            let m = Member { id: NodeId(id), ..Member::default() };
            t.members.insert(m.id, m);
        }
        t
    }

    #[test]
    fn at_most_r_voters_hold_every_shard() {
        let t = tables(&[1, 2, 3]);
        let ideal = ideal_targets(&t, 8, 3, &BTreeSet::new()).unwrap();
        assert_eq!(ideal.len(), 8);
        assert!(ideal.values().all(|n| n == &[NodeId(1), NodeId(2), NodeId(3)]));
        let (changes, blocked) = next_targets(&t, &ideal, 4);
        assert!(changes.is_empty() && blocked.is_empty(), "nothing to record");
    }

    #[test]
    fn beyond_r_voters_each_shard_gets_r_of_them_as_the_ring_places_it() {
        let t = tables(&[1, 2, 3, 4, 5]);
        let ideal = ideal_targets(&t, 16, 3, &BTreeSet::new()).unwrap();
        let ring = Ring::new((1..=5).map(|i| NodeSpec::new(ringkv_ring::NodeId(i)))).unwrap();
        let placement = ring.place(&PlacementConfig::new(16, 3)).unwrap();
        for (shard, nodes) in &ideal {
            assert_eq!(nodes.len(), 3);
            let mut want: Vec<NodeId> = placement
                .replicas(ringkv_ring::ShardId(shard.0))
                .unwrap()
                .iter()
                .map(|n| NodeId(n.0))
                .collect();
            want.sort_unstable();
            assert_eq!(nodes, &want, "{shard}");
        }
        // Throttled: at most `max` shards per pass.
        let (changes, _) = next_targets(&t, &ideal, 4);
        assert_eq!(changes.len(), 4);
        assert_eq!(changes[0].shard, ShardId(1));
    }

    #[test]
    fn a_down_member_is_left_out_only_while_r_others_are_up() {
        let t = tables(&[1, 2, 3, 4, 5]);
        let down: BTreeSet<NodeId> = [NodeId(5)].into();
        let ideal = ideal_targets(&t, 16, 3, &down).unwrap();
        assert!(ideal.values().all(|n| n.len() == 3 && !n.contains(&NodeId(5))));
        // Exactly R up: they hold every shard.
        let t = tables(&[1, 2, 3, 4]);
        let down: BTreeSet<NodeId> = [NodeId(4)].into();
        let ideal = ideal_targets(&t, 8, 3, &down).unwrap();
        assert!(ideal.values().all(|n| n == &[NodeId(1), NodeId(2), NodeId(3)]));
        // Fewer than R up: leaving them out would only shrink every shard.
        let down: BTreeSet<NodeId> = [NodeId(3), NodeId(4)].into();
        let with = ideal_targets(&t, 8, 3, &down).unwrap();
        assert_eq!(with, ideal_targets(&t, 8, 3, &BTreeSet::new()).unwrap());
    }

    #[test]
    fn a_draining_member_is_left_out_as_a_down_one_is() {
        let mut t = tables(&[1, 2, 3, 4, 5]);
        t.draining.insert(NodeId(5));
        let none = BTreeSet::new();
        let down: BTreeSet<NodeId> = [NodeId(5)].into();
        let drained = ideal_targets(&t, 16, 3, &none).unwrap();
        assert!(drained.values().all(|n| n.len() == 3 && !n.contains(&NodeId(5))));
        let mut plain = t.clone();
        plain.draining.clear();
        assert_eq!(drained, ideal_targets(&plain, 16, 3, &down).unwrap());
        // Four members, one drained: the other three hold every shard.
        let mut t = tables(&[1, 2, 3, 4]);
        t.draining.insert(NodeId(4));
        let ideal = ideal_targets(&t, 8, 3, &none).unwrap();
        assert!(ideal.values().all(|n| n == &[NodeId(1), NodeId(2), NodeId(3)]));
        // A down member too: leaving both out leaves two, so only the
        // drained one is left out (the down one may come back).
        let down: BTreeSet<NodeId> = [NodeId(3)].into();
        assert_eq!(ideal_targets(&t, 8, 3, &down).unwrap(), ideal);
        // Five, one draining and one down: both left out.
        let mut t = tables(&[1, 2, 3, 4, 5]);
        t.draining.insert(NodeId(5));
        let ideal = ideal_targets(&t, 8, 3, &[NodeId(4)].into()).unwrap();
        assert!(ideal.values().all(|n| n == &[NodeId(1), NodeId(2), NodeId(3)]));
    }

    #[test]
    fn learners_are_not_placed_on() {
        let mut t = tables(&[1, 2, 3, 4]);
        t.members.get_mut(&NodeId(4)).unwrap().is_learner = true;
        let ideal = ideal_targets(&t, 4, 3, &BTreeSet::new()).unwrap();
        // Three voters: every member, the learner too, holds every shard.
        assert!(ideal.values().all(|n| n.len() == 4));
        let mut t = tables(&[1, 2, 3, 4, 5]);
        t.members.get_mut(&NodeId(5)).unwrap().is_learner = true;
        let ideal = ideal_targets(&t, 16, 3, &BTreeSet::new()).unwrap();
        assert!(ideal.values().all(|n| n.len() == 3 && !n.contains(&NodeId(5))));
    }

    /// Members `members`; shard 1 targeted at 1, 2 and `third`, having left
    /// node 3, which the ring would pick again (the returned ideal).
    fn shard_1_left_node_3(
        members: &[u64],
        third: u64,
    ) -> (ClusterTables, BTreeMap<ShardId, Vec<NodeId>>) {
        let mut t = tables(members);
        t.targets.insert(ShardId(1), vec![NodeId(1), NodeId(2), NodeId(third)]);
        t.retired.insert(ShardId(1), [NodeId(3)].into());
        let ideal = [(ShardId(1), vec![NodeId(1), NodeId(2), NodeId(3)])].into();
        (t, ideal)
    }

    /// A shard whose ideal target names a node it left keeps the live
    /// members of its target and takes another member in place of a
    /// removed one, never the retired node.
    #[test]
    fn a_blocked_shard_is_placed_on_other_members_when_its_own_are_gone() {
        let (mut t, ideal) = shard_1_left_node_3(&[1, 2, 3, 4, 5], 5);
        // Its replicas live: it stays where it is.
        let (changes, blocked) = next_targets(&t, &ideal, 4);
        assert!(changes.is_empty());
        assert_eq!(blocked, [(ShardId(1), NodeId(3))].into());
        // Node 5 removed: 4 replaces it, not the retired 3.
        t.members.remove(&NodeId(5));
        let (changes, _) = next_targets(&t, &ideal, 4);
        let want = ShardTarget { shard: ShardId(1), nodes: vec![NodeId(1), NodeId(2), NodeId(4)] };
        assert_eq!(changes, vec![want]);
        // And 4 retired too: too few members left, the target stays.
        t.retired.get_mut(&ShardId(1)).unwrap().insert(NodeId(4));
        let (changes, blocked) = next_targets(&t, &ideal, 4);
        assert!(changes.is_empty());
        assert_eq!(blocked.len(), 1);
    }

    #[test]
    fn a_shard_is_never_targeted_back_onto_a_node_it_left() {
        let (t, ideal) = shard_1_left_node_3(&[1, 2, 3, 4], 4);
        let (changes, blocked) = next_targets(&t, &ideal, 4);
        assert!(changes.is_empty());
        assert_eq!(blocked, [(ShardId(1), NodeId(3))].into());
    }
}
