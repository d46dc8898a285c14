//! Which data shards this node holds a replica of, once placement acts
//! (ADR 0002, step 2): a node creates an empty replica of a shard whose
//! target names it (the shard's leader then adds it as a learner and
//! catches it up by snapshot), and drops its replica of a shard that no
//! longer names it once the metadata group records a configuration of
//! the shard without it (reported by the shard's leader, so committed in
//! the shard: nothing the shard counts on is lost with the replica).
//!
//! A dropped replica is tombstoned on the node's disk with its
//! incarnation: that replica id must never vote again. A node a target
//! names again later holds a new replica under its next incarnation's id
//! (`ClusterTables::incarnations`; the incarnation of a replica past 0 is
//! a node record, so that it reopens under the same id). A replica the
//! shard never removed keeps its id: while the shard's configuration holds
//! it, the node keeps it, whatever the targets did in between. A replica
//! that never joined its shard (created for a target that moved on before
//! the leader added it, or a joining node's before any target named it)
//! is unloaded without a tombstone.

use std::collections::BTreeMap;
use std::time::Duration;

use ringkv_consensus::{LogIndex, LogStorage, NodeId, Replica, ShardId, SoftState};
use ringkv_storage::mvcc::MvccStore;
use ringkv_storage::{Disk, Wal};

use super::{HostedShard, Node};
use crate::config::{META_SHARD, NodeConfig};
use crate::engine::Engine;
use crate::error::NodeError;
use crate::io::{Clock, Transport};
use crate::proposal::{ProposalBody, ShardConfig};

/// Prefix of the node records naming the data shards this node dropped,
/// each with the incarnation it dropped (a one-byte record, written before
/// incarnations existed, dropped incarnation 0).
const TOMBSTONE_PREFIX: &str = "dropped_shard/";

/// Prefix of the node records naming the incarnation of a data-shard
/// replica this node created past incarnation 0.
const INCARNATION_PREFIX: &str = "replica_incarnation/";

fn tombstone_record(shard: ShardId) -> String {
    format!("{TOMBSTONE_PREFIX}{}", shard.0)
}

fn incarnation_record(shard: ShardId) -> String {
    format!("{INCARNATION_PREFIX}{}", shard.0)
}

/// Removes whatever `wal` and `store` hold of `shard`, durably (see
/// `Node::clear_shard`).
pub(super) fn clear_shard<D: Disk>(
    wal: &mut Wal<D>,
    store: &MvccStore,
    shard: ShardId,
) -> Result<(), NodeError> {
    if wal.shards().contains(&shard) {
        wal.remove_shard(shard)?;
        wal.sync()?;
    }
    if store.shards().contains(&shard) {
        store.remove_shard(shard)?;
    }
    if store.node_record(&super::snapshot_record(shard))?.is_some() {
        store.set_node_record(&super::snapshot_record(shard), None)?;
    }
    Ok(())
}

/// Reads a tombstone or incarnation record: a little-endian `u32`, or
/// the one-byte tombstone of incarnation 0.
fn decode_incarnation(shard: ShardId, what: &str, v: &[u8]) -> Result<u32, NodeError> {
    match v.len() {
        1 => Ok(0),
        4 => Ok(u32::from_le_bytes([v[0], v[1], v[2], v[3]])),
        n => Err(NodeError::Corrupt { shard, what: format!("{what} record of {n} bytes") }),
    }
}

/// What a node's disk says of its data-shard replicas' incarnations.
#[derive(Debug, Default)]
pub(super) struct Incarnations {
    /// Shards whose replica this node dropped and has not been given
    /// again, with the incarnation dropped.
    pub(super) dropped: BTreeMap<ShardId, u32>,
    /// The incarnation of every replica it created past incarnation 0.
    pub(super) created: BTreeMap<ShardId, u32>,
}

/// The incarnation records of `cfg`'s keyspace (see the module docs).
pub(super) fn load_tombstones(
    store: &MvccStore,
    cfg: &NodeConfig,
) -> Result<Incarnations, NodeError> {
    let mut out = Incarnations::default();
    if !cfg.is_sharded() {
        return Ok(out);
    }
    for shard in cfg.keyspace.shard_ids().map(|s| ShardId(s.0)) {
        let k = match store.node_record(&incarnation_record(shard))? {
            Some(v) => decode_incarnation(shard, "replica incarnation", &v)?,
            None => 0,
        };
        if k > 0 {
            out.created.insert(shard, k);
        }
        if let Some(v) = store.node_record(&tombstone_record(shard))? {
            let d = decode_incarnation(shard, "dropped replica", &v)?;
            // A tombstone older than the replica created after it is spent.
            if d >= k {
                out.dropped.insert(shard, d);
            }
        }
    }
    Ok(out)
}

/// The shards a node starts replicas of when it opens: every shard of its
/// keyspace it has not dropped. With placement moves on, of a node that
/// held data before only the metadata shard and the data shards its WAL
/// or store holds (a new cluster's bootstrap wrote every data shard into
/// the WAL; the others are created as placement names the node); an empty
/// node (a joining one) opens them all, as it needs to hear from whichever
/// its cluster has (a one-shard cluster's only shard tells it the cluster
/// is not sharded), and drops those placement does not give it once it
/// knows.
pub(super) fn opened_shards<D: Disk>(
    cfg: &NodeConfig,
    wal: &Wal<D>,
    store: &MvccStore,
    tombstones: &BTreeMap<ShardId, u32>,
) -> Vec<ShardId> {
    let in_wal = wal.shards();
    let in_store = store.shards();
    if !cfg.is_sharded() || !cfg.placement_moves || (in_wal.is_empty() && in_store.is_empty()) {
        return cfg.hosted_shards().into_iter().filter(|s| !tombstones.contains_key(s)).collect();
    }
    cfg.hosted_shards()
        .into_iter()
        .filter(|s| {
            *s == META_SHARD
                || (!tombstones.contains_key(s) && (in_wal.contains(s) || in_store.contains(s)))
        })
        .collect()
}

/// What a node does with its replica of a shard its target no longer
/// names.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Leave {
    /// Keep it: the shard may still count on it.
    Keep,
    /// Drop it for good (tombstone): the shard removed it.
    Drop,
    /// Forget it: it never joined the shard (nothing to tombstone).
    Unload,
}

/// The rule for a replica whose target left it out: `joined` says whether
/// it ever took part (a log, an applied entry, or a configuration naming
/// it), `recorded` is the shard's configuration as its leader last
/// reported it, `last` the replica's last log index.
///
/// The recorded configuration must leave `me` out *and* be at least as new
/// as everything in the replica's log: the entry (or snapshot) that added
/// the replica is in that log, so a newer configuration without it was
/// made by removing it. An older one may predate its joining (a report
/// made before the replica was added, still recorded while it votes).
fn leave(joined: bool, recorded: Option<&ShardConfig>, me: NodeId, last: LogIndex) -> Leave {
    if !joined {
        return Leave::Unload;
    }
    match recorded {
        Some(c) if !c.holds(me) && c.applied >= last => Leave::Drop,
        _ => Leave::Keep,
    }
}

impl<E: Engine, D: Disk, T: Transport, C: Clock> Node<E, D, T, C> {
    /// Creates and drops data-shard replicas as the metadata group's
    /// targets and reported configurations say (see the module docs); at
    /// most once per tick interval. Only from metadata tables this node
    /// applied, so only from committed decisions.
    pub(super) fn sync_hosting(&mut self, now: Duration) -> Result<(), NodeError> {
        if !self.is_sharded() || now < self.next_hosting_check {
            return Ok(());
        }
        self.next_hosting_check = now + self.cfg.tick_interval;
        self.remap_leaders(now);
        let me = self.id;
        let Some(m) = self.shards.get(&META_SHARD) else { return Ok(()) };
        // Decide from a metadata shard that has applied what it knows
        // committed (after a start: the bootstrap's initial placement).
        if m.applied < m.replica.commit_index() {
            return Ok(());
        }
        let t = &m.tables;
        if t.cluster_id.is_none() || !t.members.contains_key(&me) || t.removed.contains(&me) {
            return Ok(());
        }
        let mut create = Vec::new();
        let mut drop = Vec::new();
        let mut unload = Vec::new();
        for shard in self.cfg.keyspace.shard_ids().map(|s| ShardId(s.0)) {
            // Without moves every member holds every shard (a joining
            // node creates them here).
            let wanted = !self.cfg.placement_moves || t.targets_node(shard, me);
            // The incarnation a replica created now would have.
            let k = t.incarnation(shard, me);
            let spent = self.tombstones.get(&shard).is_some_and(|&d| d >= k);
            match self.shards.get(&shard) {
                None if wanted && !spent => create.push((shard, k)),
                // Held under an older incarnation while the target names
                // this node again: kept while the shard still counts it
                // (the leader keeps it then), else dropped for a new one.
                Some(s) if !wanted || s.incarnation != k => {
                    let last = s.replica.storage().last_index();
                    let joined = s.applied > LogIndex::ZERO
                        || last > LogIndex::ZERO
                        || s.replica.membership().contains(s.rid);
                    match leave(joined, t.configs.get(&shard), s.rid, last) {
                        Leave::Drop => drop.push(shard),
                        Leave::Unload => unload.push(shard),
                        Leave::Keep => {}
                    }
                }
                _ => {}
            }
        }
        for (shard, k) in create {
            // Left over by a drop the process did not finish (a replica
            // that never joined leaves nothing).
            self.clear_shard(shard)?;
            if k > 0 {
                // Durable before the replica exists, so that it reopens
                // under the same id.
                self.store.set_node_record(&incarnation_record(shard), Some(&k.to_le_bytes()))?;
            }
            let hosted: HostedShard<E, D> =
                HostedShard::open(&self.cfg, me, k, shard, &self.store, &self.wal, now)?;
            self.shards.insert(shard, hosted);
            self.provide_snapshot_data(shard)?;
        }
        for shard in unload {
            self.release(shard);
        }
        for shard in drop {
            self.drop_replica(shard)?;
        }
        Ok(())
    }

    /// Maps each shard's leader to its node again where the metadata
    /// tables now know a replica id they did not when the engine named it
    /// (a replica added from a newer table than this node had applied).
    fn remap_leaders(&mut self, now: Duration) {
        let stale: Vec<(ShardId, SoftState)> = self
            .shards
            .values()
            .filter_map(|s| {
                let raw = s.raw_leader?;
                (s.soft.leader != Some(self.node_of(raw)))
                    .then_some((s.id, SoftState { leader: Some(raw), ..s.soft }))
            })
            .collect();
        for (shard, soft) in stale {
            self.on_soft_state(shard, soft, now);
        }
    }

    /// Drops this node's replica of `shard` for good: tombstone first
    /// (durable), then the replica, its WAL records and its store rows. A
    /// crash part way is finished by the next open.
    fn drop_replica(&mut self, shard: ShardId) -> Result<(), NodeError> {
        let Some(k) = self.shards.get(&shard).map(|s| s.incarnation) else { return Ok(()) };
        self.store.set_node_record(&tombstone_record(shard), Some(&k.to_le_bytes()))?;
        self.tombstones.insert(shard, k);
        self.release(shard);
        self.clear_shard(shard)
    }

    /// Removes whatever the WAL and the store hold of `shard`, durably: a
    /// replica created later must not reopen over an earlier one's log,
    /// nor over its record of a restored snapshot (the next open would
    /// take it for an install the WAL missed: the churn simulation's
    /// Multi-Paxos seed 14).
    fn clear_shard(&mut self, shard: ShardId) -> Result<(), NodeError> {
        clear_shard(&mut self.wal, &self.store, shard)
    }

    /// Forgets the replica of `shard` and answers whoever waits on it
    /// here: a client is told the shard is elsewhere.
    fn release(&mut self, shard: ShardId) {
        self.shards.remove(&shard);
        let hosts = self.shard_replica_nodes(shard);
        let not_hosted = || NodeError::NotHosted { shard, hosts: hosts.clone() };
        let proposals: Vec<_> = self
            .proposals
            .iter()
            .filter(|(_, p)| {
                p.shard == shard && matches!(p.placement, super::Placement::Local { .. })
            })
            .map(|(&id, _)| id)
            .collect();
        for id in proposals {
            // Appended here, not known to have committed: ambiguous.
            self.fail_proposal(id, NodeError::LeaderChanged);
        }
        let reads: Vec<u64> =
            self.reads.iter().filter(|(_, r)| r.shard == shard).map(|(&k, _)| k).collect();
        for k in reads {
            let r = self.reads.remove(&k).expect("listed");
            self.complete(r.token, shard, Err(not_hosted()));
        }
        let calls: Vec<u64> =
            self.calls.iter().filter(|(_, c)| c.shard == shard).map(|(&k, _)| k).collect();
        for k in calls {
            let c = self.calls.remove(&k).expect("listed");
            self.complete(c.token, shard, Err(not_hosted()));
        }
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.transfers).into_iter().partition(|t| t.shard == shard);
        self.transfers = kept;
        for t in gone {
            self.complete(t.token, shard, Err(not_hosted()));
        }
    }

    /// A data shard's leader reports its configuration to the metadata
    /// group when the recorded one differs, once the configuration is
    /// committed: every entry of earlier leaders is applied (one of them
    /// may change it) and so is this leader's own last change.
    ///
    /// A request timeout after a new configuration is recorded, the leader
    /// reports it once more at its applied index then: a replica the
    /// change removed drops itself only on a report at least as new as its
    /// own log, and a Multi-Paxos replica keeps accepting slots until the
    /// change takes effect, α slots after the one the first report names
    /// (the moves simulation's fifth-member scenario, Multi-Paxos, kept
    /// such a replica for good).
    pub(super) fn report_config(&mut self, shard: ShardId, now: Duration) {
        if !self.is_data_shard(shard) {
            return;
        }
        let Some(s) = self.shards.get(&shard) else { return };
        if !s.is_leader()
            || s.applied < s.leases_ready_at
            || s.config_change_at.is_some_and(|at| s.applied < at)
        {
            return;
        }
        let m = s.replica.membership();
        if m.is_joint() {
            return;
        }
        // Runs every round for every shard this node leads: compare
        // before building anything.
        let recorded = self.meta_tables().and_then(|t| t.configs.get(&shard));
        if let Some(c) =
            recorded.filter(|c| c.voters.iter().eq(&m.voters) && c.learners.iter().eq(&m.learners))
        {
            let confirm = s.confirm_report_at.is_some_and(|at| now >= at) && s.applied > c.applied;
            if !confirm {
                return;
            }
            let config = ShardConfig { applied: s.applied, ..c.clone() };
            let s = self.shards.get_mut(&shard).expect("checked above");
            s.confirm_report_at = None;
            self.propose_internal(META_SHARD, ProposalBody::ShardConfig(config), now);
            return;
        }
        // The same report again only after a request timeout (it may be
        // in flight); a new configuration at once: a recorded configuration
        // that lags lets a member removal strand the shard.
        let same = s
            .reported
            .as_ref()
            .is_some_and(|(v, l)| v.iter().eq(&m.voters) && l.iter().eq(&m.learners));
        if same && now < s.retry_report_at {
            return;
        }
        let voters: Vec<NodeId> = m.voters.iter().copied().collect();
        let learners: Vec<NodeId> = m.learners.iter().copied().collect();
        let applied = s.applied;
        let retry = self.cfg.request_timeout;
        let s = self.shards.get_mut(&shard).expect("checked above");
        s.retry_report_at = now + retry;
        s.confirm_report_at = Some(now + retry);
        s.reported = Some((voters.clone(), learners.clone()));
        let config = ShardConfig { shard, applied, voters, learners };
        self.propose_internal(META_SHARD, ProposalBody::ShardConfig(config), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(applied: u64, voters: &[u64]) -> ShardConfig {
        ShardConfig {
            shard: ShardId(1),
            applied: LogIndex(applied),
            voters: voters.iter().copied().map(NodeId).collect(),
            learners: Vec::new(),
        }
    }

    #[test]
    fn a_replica_is_dropped_only_by_a_configuration_newer_than_its_log() {
        let me = NodeId(4);
        // Removed at 20; the replica's log ends at 12 (it missed the
        // removal): dropped.
        assert_eq!(leave(true, Some(&config(20, &[1, 2, 3])), me, LogIndex(12)), Leave::Drop);
        // A report from before the replica joined (at 2) while its log
        // holds the entries that added it (up to 7): kept, it may vote.
        assert_eq!(leave(true, Some(&config(2, &[1, 2, 3])), me, LogIndex(7)), Leave::Keep);
        // Still listed: kept.
        assert_eq!(leave(true, Some(&config(30, &[1, 2, 4])), me, LogIndex(7)), Leave::Keep);
        // Nothing reported yet: kept.
        assert_eq!(leave(true, None, me, LogIndex(7)), Leave::Keep);
        // Never joined: forgotten, not tombstoned.
        assert_eq!(leave(false, Some(&config(2, &[1, 2, 3])), me, LogIndex(0)), Leave::Unload);
    }
}
