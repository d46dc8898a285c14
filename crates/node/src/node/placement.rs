//! Placement of data shards on a subset of the members (ADR 0002, step 2):
//! the metadata leader's choice of each data shard's target replica set,
//! and what a node tells its callers about where a shard is.
//!
//! While a sharded cluster has at most R voting members (`--replicas`)
//! every member holds every shard and no target is recorded. Beyond R,
//! the metadata leader places the data shards on the ring of voting
//! members (`Ring::place`, weight 1 each, each in the zone it published)
//! and records, through the metadata log ([`ProposalBody::ShardTargets`]), the target of each
//! shard whose recorded target differs: at most
//! [`NodeConfig::max_concurrent_moves`](crate::NodeConfig) shards per
//! pass, one pass per election timeout while the previous change is in
//! flight or applied. The metadata group itself stays on every node, as a
//! voter. Once any member carries a zone, no pass runs while a voting
//! member that is not down has yet to publish its own (see
//! `zones_pending`).
//!
//! A shard may go back to a node a target once moved it off: the replica
//! it gets there is a new one under a fresh consensus id
//! (`ClusterTables::incarnations`, [`crate::replica_id`]).
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
/// of the voting members, each in the zone it published (`--zone`), so
/// that a shard's replicas are in distinct zones as far as the zones
/// allow (the ring's zone rule); ascending node ids per shard. `None` when the
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
    let spec = |id: &NodeId| {
        let node = NodeSpec::new(ringkv_ring::NodeId(id.0));
        match tables.members.get(id).and_then(|m| m.zone.as_deref()) {
            Some(zone) => node.with_zone(zone),
            None => node,
        }
    };
    let ring = Ring::new(voters.iter().map(spec)).ok()?;
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

/// Whether a placement now would use zones not yet known: some member
/// carries a zone (the cluster uses them) while a voting member not in
/// `down` has not published yet (no client URLs: its zone is unknown).
/// Placing then would move shards once without that member's zone and
/// again with it.
fn zones_pending(tables: &ClusterTables, down: &BTreeSet<NodeId>) -> bool {
    let zoned = tables.members.values().any(|m| m.zone.is_some());
    zoned
        && tables
            .members
            .values()
            .any(|m| !m.is_learner && m.client_urls.is_empty() && !down.contains(&m.id))
}

/// The target changes one placement pass proposes: at most `max` of
/// them, in ascending shard order.
pub(crate) fn next_targets(
    tables: &ClusterTables,
    ideal: &BTreeMap<ShardId, Vec<NodeId>>,
    max: usize,
) -> Vec<ShardTarget> {
    ideal
        .iter()
        .filter(|&(&shard, nodes)| tables.target_of(shard) != *nodes)
        .take(max)
        .map(|(&shard, nodes)| ShardTarget { shard, nodes: nodes.clone() })
        .collect()
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
    /// against the targets every replica holds.
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
        if zones_pending(&m.tables, &down) {
            return;
        }
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
        let changes = next_targets(&m.tables, &ideal, max);
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
            let mut nodes: Vec<NodeId> =
                s.replica.membership().members().into_iter().map(|r| self.node_of(r)).collect();
            nodes.sort_unstable();
            nodes.dedup();
            return nodes;
        }
        let in_keyspace = (1..=u64::from(self.cfg.keyspace.shard_count())).contains(&shard.0);
        match self.meta_tables() {
            Some(t) if in_keyspace => t.holders_of(shard),
            _ => Vec::new(),
        }
    }

    /// This node's replica id in `shard`, if it holds one: its node id, or
    /// a later incarnation's own id ([`crate::replica_id`]).
    pub fn shard_replica_id(&self, shard: ShardId) -> Option<NodeId> {
        self.shards.get(&shard).map(|s| s.rid)
    }

    /// The node a replica id of a data shard belongs to, as the metadata
    /// tables applied here know it (an id they do not know is taken as a
    /// node's own).
    pub fn replica_node(&self, replica: NodeId) -> NodeId {
        self.node_of(replica)
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
        assert!(next_targets(&t, &ideal, 4).is_empty(), "nothing to record");
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
        let changes = next_targets(&t, &ideal, 4);
        assert_eq!(changes.len(), 4);
        assert_eq!(changes[0].shard, ShardId(1));
    }

    /// The placement as it was computed before members carried zones.
    fn ring_placement(ids: &[u64], shards: u32, r: u32) -> BTreeMap<ShardId, Vec<NodeId>> {
        let ring = Ring::new(ids.iter().map(|&i| NodeSpec::new(ringkv_ring::NodeId(i)))).unwrap();
        let placement = ring.place(&PlacementConfig::new(shards, r)).unwrap();
        (1..=u64::from(shards))
            .map(|s| {
                let mut nodes: Vec<NodeId> = placement
                    .replicas(ringkv_ring::ShardId(s))
                    .unwrap()
                    .iter()
                    .map(|n| NodeId(n.0))
                    .collect();
                nodes.sort_unstable();
                (ShardId(s), nodes)
            })
            .collect()
    }

    fn zoned(t: &mut ClusterTables, zones: &[(u64, &str)]) {
        for &(id, zone) in zones {
            t.members.get_mut(&NodeId(id)).unwrap().zone = Some(zone.to_owned());
        }
    }

    #[test]
    fn replicas_go_to_distinct_zones_when_members_carry_zones() {
        let ids = [1, 2, 3, 4, 5, 6];
        let mut t = tables(&ids);
        // Zones chosen so that the zoneless ring puts some shard's
        // replicas twice in one zone: the zones must change the result.
        zoned(&mut t, &[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]);
        let zone_of = |n: &NodeId| t.members[n].zone.clone().unwrap();
        let ideal = ideal_targets(&t, 64, 3, &BTreeSet::new()).unwrap();
        assert_eq!(ideal.len(), 64);
        for (shard, nodes) in &ideal {
            let zones: BTreeSet<String> = nodes.iter().map(zone_of).collect();
            assert_eq!(zones.len(), 3, "{shard}: {nodes:?}");
        }
        let without = ring_placement(&ids, 64, 3);
        let same_zone_twice = without
            .values()
            .any(|nodes| nodes.iter().map(zone_of).collect::<BTreeSet<_>>().len() < 3);
        assert!(same_zone_twice, "the zoneless placement already spans 3 zones everywhere");
    }

    #[test]
    fn fewer_zones_than_replicas_spread_round_robin() {
        let mut t = tables(&[1, 2, 3, 4, 5, 6]);
        zoned(&mut t, &[(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, "b")]);
        let ideal = ideal_targets(&t, 32, 3, &BTreeSet::new()).unwrap();
        for (shard, nodes) in &ideal {
            let in_a = nodes.iter().filter(|n| n.0 <= 3).count();
            assert!(nodes.len() == 3 && (in_a == 1 || in_a == 2), "{shard}: {nodes:?}");
        }
    }

    #[test]
    fn a_zoned_cluster_is_not_placed_while_a_member_has_not_published() {
        let mut t = tables(&[1, 2, 3, 4]);
        for m in t.members.values_mut() {
            m.client_urls = vec![format!("http://n{}", m.id.0)];
        }
        t.members.get_mut(&NodeId(4)).unwrap().client_urls.clear();
        let none = BTreeSet::new();
        assert!(!zones_pending(&t, &none), "no zones: nothing to wait for");
        zoned(&mut t, &[(1, "a")]);
        assert!(zones_pending(&t, &none), "4's zone is not known yet");
        assert!(!zones_pending(&t, &[NodeId(4)].into()), "unless it is down");
        t.members.get_mut(&NodeId(4)).unwrap().is_learner = true;
        assert!(!zones_pending(&t, &none), "learners are not placed on");
        t.members.get_mut(&NodeId(4)).unwrap().is_learner = false;
        t.members.get_mut(&NodeId(4)).unwrap().client_urls = vec!["http://n4".into()];
        assert!(!zones_pending(&t, &none));
    }

    #[test]
    fn without_zones_the_placement_is_the_zoneless_ring_s() {
        for n in 4..=9u64 {
            let ids: Vec<u64> = (1..=n).collect();
            let ideal = ideal_targets(&tables(&ids), 64, 3, &BTreeSet::new()).unwrap();
            assert_eq!(ideal, ring_placement(&ids, 64, 3), "{n} members");
        }
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

    /// A pass proposes the shards whose target differs from the ideal,
    /// at most `max`, lowest shard first, whoever held them before.
    #[test]
    fn a_pass_proposes_at_most_max_changed_targets() {
        let mut t = tables(&[1, 2, 3, 4]);
        t.targets.insert(ShardId(1), vec![NodeId(1), NodeId(2), NodeId(4)]);
        t.targets.insert(ShardId(2), vec![NodeId(1), NodeId(2), NodeId(3)]);
        let ideal: BTreeMap<ShardId, Vec<NodeId>> = [
            (ShardId(1), vec![NodeId(1), NodeId(2), NodeId(3)]),
            (ShardId(2), vec![NodeId(1), NodeId(2), NodeId(3)]),
            (ShardId(3), vec![NodeId(2), NodeId(3), NodeId(4)]),
        ]
        .into();
        let target = |s: u64, nodes: &[u64]| ShardTarget {
            shard: ShardId(s),
            nodes: nodes.iter().copied().map(NodeId).collect(),
        };
        // Shard 1 goes back onto node 3, which it may have left: the
        // replica it gets there is a fresh one (`ClusterTables::incarnations`).
        assert_eq!(next_targets(&t, &ideal, 4), vec![target(1, &[1, 2, 3]), target(3, &[2, 3, 4])]);
        assert_eq!(next_targets(&t, &ideal, 1), vec![target(1, &[1, 2, 3])]);
        assert!(next_targets(&t, &ideal, 0).is_empty());
    }
}
