//! The cluster's replicated tables: members (etcd's Cluster API) and
//! alarms; and how member and cluster ids are made.
//!
//! Both tables live in the log and state machine of the metadata shard
//! (the data shard of a one-shard cluster, [`crate::META_SHARD`] of a
//! sharded one): every change is a [`crate::Proposal`], applied on every
//! replica into records of the MVCC store
//! ([`ringkv_storage::mvcc::ApplyBatch::set_record`]), so they are in the
//! shard's snapshots and survive restarts. A sharded cluster's metadata
//! shard also records its keyspace. Data shards keep no tables: their
//! consensus membership follows the metadata shard's member table.
//!
//! The member table is the *desired* configuration; the consensus group's
//! membership follows it: the leader compares the two every round and
//! proposes one engine membership change at a time until they agree
//! (see `Node::reconcile_membership`). How long that takes depends on the
//! engine: a Raft change is in effect once appended, a Multi-Paxos change
//! α slots after it is chosen (the leader pads the gap with no-ops). So
//! the leader appends a table change that moves a voter or learner
//! (MemberAdd, MemberRemove, MemberPromote) only once the two agree with
//! nothing under way; until then such a request waits, and times out as
//! any request would (see `Node::reconfiguration_settled`). A member
//! applying its own removal stops at once, so letting table changes run
//! ahead could leave the group waiting on stopped voters. Every check that decides whether a
//! change is accepted runs at apply time, on state every replica shares,
//! so every replica decides the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use ringkv_consensus::{NodeId, ShardId, decode_exact, encode_to_vec};
use ringkv_ring::Keyspace;
use ringkv_storage::mvcc::{ApplyBatch, ReadView, StoreError};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{MemberError, NodeError};
use crate::proposal::{AlarmChange, AlarmMember, AlarmType, ClusterInit, Member, MemberChange};

/// Most learners a cluster may have at once (etcd's `--max-learners`
/// default): a learner costs the leader replication work without adding
/// fault tolerance.
pub const LEARNERS_MAX: usize = 1;

/// Record holding the cluster id.
const CLUSTER_RECORD: &str = "cluster";
/// Record holding a sharded cluster's keyspace (metadata group only).
const KEYSPACE_RECORD: &str = "keyspace";
/// Prefix of member records: `member/<id as 16 hex digits>`.
const MEMBER_PREFIX: &str = "member/";
/// Prefix of alarm records: `alarm/<member as 16 hex digits>/<type>`.
const ALARM_PREFIX: &str = "alarm/";
/// Prefix of removed-member records: `removed/<id as 16 hex digits>`.
const REMOVED_PREFIX: &str = "removed/";
/// Record holding a sharded cluster's replicas per data shard (metadata
/// group only; absent on clusters made before `--replicas`).
const REPLICAS_RECORD: &str = "replicas";
/// Prefix of target records: `target/<data shard as 16 hex digits>`.
const TARGET_PREFIX: &str = "target/";
/// Prefix of reported-configuration records: `config/<data shard as 16
/// hex digits>`, the shard's configuration as its leader last reported it.
const CONFIG_PREFIX: &str = "config/";
/// Prefix of retired-holder records: `retired/<data shard as 16 hex
/// digits>`, the nodes a target once dropped from the shard. Written
/// before replica incarnations existed; read as incarnation 1 of each
/// node it names.
const RETIRED_PREFIX: &str = "retired/";
/// Prefix of incarnation records: `incarnation/<data shard as 16 hex
/// digits>`, each node's current replica incarnation in that shard.
const INCARNATION_PREFIX: &str = "incarnation/";
/// Bytes of one (node, incarnation) pair in an incarnation record.
const INCARNATION_PAIR_BYTES: usize = 12;
/// Prefix of draining-member records: `draining/<id as 16 hex digits>`,
/// members whose replicas placement moves off before their removal.
const DRAINING_PREFIX: &str = "draining/";

/// The replicas per data shard of a sharded cluster created before
/// `--replicas` existed (every node held every shard; 3 was the number
/// the design named).
pub(crate) const REPLICAS_BEFORE_RECORD: u32 = crate::config::REPLICAS_DEFAULT;

fn hash_parts(domain: &str, parts: &[&[u8]]) -> u64 {
    let mut buf = Vec::new();
    for p in std::iter::once(domain.as_bytes()).chain(parts.iter().copied()) {
        buf.extend_from_slice(&(p.len() as u64).to_le_bytes());
        buf.extend_from_slice(p);
    }
    xxh3_64(&buf)
}

fn nonzero(v: u64) -> u64 {
    if v == 0 { 1 } else { v }
}

fn sorted(urls: &[String]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = urls.iter().map(|u| u.as_bytes()).collect();
    v.sort_unstable();
    v
}

/// The id of a founding member, the same on every node that reads the same
/// `--initial-cluster`: a hash of the cluster token, the member's name and
/// its peer URLs (etcd derives it from the same facts).
pub fn member_id(cluster_token: &str, name: &str, peer_urls: &[String]) -> NodeId {
    let mut parts = vec![cluster_token.as_bytes(), name.as_bytes()];
    parts.extend(sorted(peer_urls));
    NodeId(nonzero(hash_parts("ringkv-member", &parts)))
}

/// The id of a member added at run time (MemberAdd has no name yet): the
/// cluster token, its peer URLs and the adding node's clock, as etcd mixes
/// the time in. The adding node chooses it before proposing, so every
/// replica applies the same id.
pub fn added_member_id(cluster_token: &str, peer_urls: &[String], now: Duration) -> NodeId {
    let nanos = now.as_nanos().to_le_bytes();
    let mut parts = vec![cluster_token.as_bytes(), &nanos[..]];
    parts.extend(sorted(peer_urls));
    NodeId(nonzero(hash_parts("ringkv-added-member", &parts)))
}

/// The consensus id of node `node`'s replica of data shard `shard` in its
/// `incarnation`: the node id itself for incarnation 0 (every replica a
/// cluster had before its placement ever dropped a node, and every
/// replica of a cluster without placement moves), a hash of the three
/// after. A node that left a shard and comes back holds a new, empty
/// replica: under a fresh id no vote or promise its predecessor made can
/// be counted for it (the simulator's seed 18, ADR 0002).
pub fn replica_id(node: NodeId, shard: ShardId, incarnation: u32) -> NodeId {
    if incarnation == 0 {
        return node;
    }
    let parts: [&[u8]; 3] =
        [&node.0.to_le_bytes(), &shard.0.to_le_bytes(), &incarnation.to_le_bytes()];
    NodeId(nonzero(hash_parts("ringkv-replica", &parts)))
}

/// The cluster id: a hash of the token and the founding members' ids.
pub fn cluster_id(cluster_token: &str, member_ids: &BTreeSet<NodeId>) -> u64 {
    let ids: Vec<[u8; 8]> = member_ids.iter().map(|id| id.0.to_le_bytes()).collect();
    let mut parts: Vec<&[u8]> = vec![cluster_token.as_bytes()];
    parts.extend(ids.iter().map(|b| &b[..]));
    nonzero(hash_parts("ringkv-cluster", &parts))
}

fn member_record(id: NodeId) -> String {
    format!("{MEMBER_PREFIX}{:016x}", id.0)
}

fn removed_record(id: NodeId) -> String {
    format!("{REMOVED_PREFIX}{:016x}", id.0)
}

fn target_record(shard: ShardId) -> String {
    format!("{TARGET_PREFIX}{:016x}", shard.0)
}

fn config_record(shard: ShardId) -> String {
    format!("{CONFIG_PREFIX}{:016x}", shard.0)
}

fn incarnation_record(shard: ShardId) -> String {
    format!("{INCARNATION_PREFIX}{:016x}", shard.0)
}

fn encode_incarnations(of: &BTreeMap<NodeId, u32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(of.len() * INCARNATION_PAIR_BYTES);
    for (node, k) in of {
        out.extend_from_slice(&node.0.to_le_bytes());
        out.extend_from_slice(&k.to_le_bytes());
    }
    out
}

fn decode_incarnations(v: &[u8]) -> Option<BTreeMap<NodeId, u32>> {
    if !v.len().is_multiple_of(INCARNATION_PAIR_BYTES) {
        return None;
    }
    v.chunks_exact(INCARNATION_PAIR_BYTES)
        .map(|c| {
            let node = u64::from_le_bytes(c[..8].try_into().ok()?);
            let k = u32::from_le_bytes(c[8..].try_into().ok()?);
            Some((NodeId(node), k))
        })
        .collect()
}

fn draining_record(id: NodeId) -> String {
    format!("{DRAINING_PREFIX}{:016x}", id.0)
}

fn alarm_record(a: AlarmMember) -> String {
    format!("{ALARM_PREFIX}{:016x}/{}", a.member.0, a.alarm.name())
}

fn corrupt(shard: ShardId, what: String) -> NodeError {
    NodeError::Corrupt { shard, what }
}

/// The member table and the alarms of one shard, as applied so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClusterTables {
    /// Set once the cluster's initial entry is applied (or restored).
    pub(crate) cluster_id: Option<u64>,
    pub(crate) members: BTreeMap<NodeId, Member>,
    pub(crate) alarms: BTreeSet<AlarmMember>,
    /// Members removed from the cluster: their frames are refused and they
    /// are told to stop (etcd refuses removed members' messages the same way).
    pub(crate) removed: BTreeSet<NodeId>,
    /// A sharded cluster's keyspace, once its record is applied (`None`
    /// for a one-shard cluster, which never records one).
    pub(crate) keyspace: Option<Keyspace>,
    /// A sharded cluster's replicas per data shard, once its layout is
    /// applied (`None` before, on a one-shard cluster, and on sharded
    /// clusters made before `--replicas`: see [`REPLICAS_BEFORE_RECORD`]).
    pub(crate) replicas: Option<u32>,
    /// Each data shard's target replica set, as the metadata leader last
    /// chose it. A shard without one belongs on every member (the cluster
    /// never had more members than replicas since it was created).
    pub(crate) targets: BTreeMap<ShardId, Vec<NodeId>>,
    /// Per data shard, each node's current replica incarnation (absent:
    /// 0), raised every time a target drops the node from the shard. A
    /// replica added to the shard later is a new, empty one and gets the
    /// fresh id of the raised incarnation ([`replica_id`]); a replica the
    /// shard never removed keeps its id whatever the targets did.
    pub(crate) incarnations: BTreeMap<ShardId, BTreeMap<NodeId, u32>>,
    /// Every replica id of an incarnation past 0 these tables have given
    /// out, to its node (derived from `incarnations`).
    pub(crate) replica_nodes: HashMap<NodeId, NodeId>,
    /// Each data shard's configuration as its leader last reported it
    /// (absent until the first report): where the shard really is, while
    /// its target says where it is going.
    pub(crate) configs: BTreeMap<ShardId, crate::proposal::ShardConfig>,
    /// Voting members being drained: placement leaves them out (as it
    /// leaves out down members) so that their replicas move to the others
    /// before they are removed. Invariant: every one is a voting member;
    /// removing a member clears it.
    pub(crate) draining: BTreeSet<NodeId>,
}

/// Why a target change was refused when it applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TargetRefusal {
    /// The shard is not one of the cluster's data shards.
    NotADataShard(ShardId),
}

impl ClusterTables {
    /// Reads the tables of `shard` from the store.
    pub(crate) fn load(view: &ReadView, shard: ShardId) -> Result<ClusterTables, NodeError> {
        let mut t = ClusterTables::default();
        if let Some(v) = view.record(shard, CLUSTER_RECORD)? {
            let id = decode_exact::<u64>(v)
                .map_err(|e| corrupt(shard, format!("cluster record: {e}")))?;
            t.cluster_id = Some(id);
        }
        if let Some(v) = view.record(shard, KEYSPACE_RECORD)? {
            let mut d = ringkv_consensus::codec::Decoder::new(v);
            let k = crate::proposal::decode_keyspace(&mut d)
                .map_err(|e| corrupt(shard, format!("keyspace record: {e}")))?;
            t.keyspace = Some(k);
        }
        for (name, v) in view.records(shard, MEMBER_PREFIX)? {
            let m = decode_exact::<Member>(v)
                .map_err(|e| corrupt(shard, format!("member record {name}: {e}")))?;
            t.members.insert(m.id, m);
        }
        for (name, v) in view.records(shard, REMOVED_PREFIX)? {
            let id = decode_exact::<NodeId>(v)
                .map_err(|e| corrupt(shard, format!("removed-member record {name}: {e}")))?;
            t.removed.insert(id);
        }
        if let Some(v) = view.record(shard, REPLICAS_RECORD)? {
            let r = decode_exact::<u64>(v)
                .map_err(|e| corrupt(shard, format!("replicas record: {e}")))?;
            let r = u32::try_from(r).map_err(|_| corrupt(shard, format!("replicas record {r}")))?;
            t.replicas = Some(r);
        }
        for (name, v) in view.records(shard, TARGET_PREFIX)? {
            let target = decode_exact::<crate::proposal::ShardTarget>(v)
                .map_err(|e| corrupt(shard, format!("target record {name}: {e}")))?;
            t.targets.insert(target.shard, target.nodes);
        }
        for (name, v) in view.records(shard, RETIRED_PREFIX)? {
            let target = decode_exact::<crate::proposal::ShardTarget>(v)
                .map_err(|e| corrupt(shard, format!("retired record {name}: {e}")))?;
            let of = t.incarnations.entry(target.shard).or_default();
            for node in target.nodes {
                let k = of.entry(node).or_default();
                *k = (*k).max(1);
            }
        }
        for (name, v) in view.records(shard, INCARNATION_PREFIX)? {
            let hex = name.strip_prefix(INCARNATION_PREFIX).unwrap_or(&name);
            let data = u64::from_str_radix(hex, 16)
                .map_err(|e| corrupt(shard, format!("incarnation record {name}: {e}")))?;
            let of = decode_incarnations(&v)
                .ok_or_else(|| corrupt(shard, format!("incarnation record {name}: bad length")))?;
            let have = t.incarnations.entry(ShardId(data)).or_default();
            for (node, k) in of {
                let e = have.entry(node).or_default();
                *e = (*e).max(k);
            }
        }
        t.index_replicas();
        for (name, v) in view.records(shard, CONFIG_PREFIX)? {
            let c = decode_exact::<crate::proposal::ShardConfig>(v)
                .map_err(|e| corrupt(shard, format!("shard configuration record {name}: {e}")))?;
            t.configs.insert(c.shard, c);
        }
        for (name, v) in view.records(shard, DRAINING_PREFIX)? {
            let id = decode_exact::<NodeId>(v)
                .map_err(|e| corrupt(shard, format!("draining-member record {name}: {e}")))?;
            t.draining.insert(id);
        }
        for (name, v) in view.records(shard, ALARM_PREFIX)? {
            let a = decode_exact::<AlarmMember>(v)
                .map_err(|e| corrupt(shard, format!("alarm record {name}: {e}")))?;
            t.alarms.insert(a);
        }
        Ok(t)
    }

    /// Members in id order.
    pub(crate) fn member_list(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    /// Whether a NOSPACE alarm is active anywhere in the cluster.
    pub(crate) fn no_space(&self) -> bool {
        self.alarms.iter().any(|a| a.alarm == AlarmType::NoSpace)
    }

    fn write_member(b: &mut ApplyBatch<'_>, shard: ShardId, m: &Member) -> Result<(), StoreError> {
        b.set_record(shard, &member_record(m.id), Some(&encode_to_vec(m)))
    }

    /// Applies a new cluster's initial entry.
    pub(crate) fn apply_init(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        init: &ClusterInit,
    ) -> Result<(), StoreError> {
        b.set_record(shard, CLUSTER_RECORD, Some(&encode_to_vec(&init.cluster_id)))?;
        self.cluster_id = Some(init.cluster_id);
        for m in &init.members {
            Self::write_member(b, shard, m)?;
            self.members.insert(m.id, m.clone());
        }
        Ok(())
    }

    /// Applies a sharded cluster's keyspace record.
    pub(crate) fn apply_keyspace(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        keyspace: &Keyspace,
    ) -> Result<(), StoreError> {
        let mut v = Vec::new();
        crate::proposal::encode_keyspace(keyspace, &mut v);
        b.set_record(shard, KEYSPACE_RECORD, Some(&v))?;
        self.keyspace = Some(*keyspace);
        Ok(())
    }

    /// Applies a sharded cluster's layout: its keyspace and replicas.
    pub(crate) fn apply_layout(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        layout: &crate::proposal::Layout,
    ) -> Result<(), StoreError> {
        self.apply_keyspace(b, shard, &layout.keyspace)?;
        let r = u64::from(layout.replicas);
        b.set_record(shard, REPLICAS_RECORD, Some(&encode_to_vec(&r)))?;
        self.replicas = Some(layout.replicas);
        Ok(())
    }

    /// The replicas per data shard this cluster places with.
    pub(crate) fn replicas_per_shard(&self) -> u32 {
        self.replicas.unwrap_or(REPLICAS_BEFORE_RECORD)
    }

    /// Rebuilds the replica-id index from `incarnations`.
    fn index_replicas(&mut self) {
        self.replica_nodes.clear();
        for (&shard, of) in &self.incarnations {
            for (&node, &k) in of {
                for i in 1..=k {
                    self.replica_nodes.insert(replica_id(node, shard, i), node);
                }
            }
        }
    }

    /// `node`'s current incarnation in data shard `shard`.
    pub(crate) fn incarnation(&self, shard: ShardId, node: NodeId) -> u32 {
        self.incarnations.get(&shard).and_then(|of| of.get(&node)).copied().unwrap_or(0)
    }

    /// The id a replica of `shard` added on `node` now gets.
    pub(crate) fn fresh_replica(&self, shard: ShardId, node: NodeId) -> NodeId {
        replica_id(node, shard, self.incarnation(shard, node))
    }

    /// The node a replica id belongs to: an id these tables gave out for a
    /// later incarnation maps to its node; any other id is a node's own
    /// (incarnation 0, and every metadata-group replica).
    pub(crate) fn node_of(&self, replica: NodeId) -> NodeId {
        self.replica_nodes.get(&replica).copied().unwrap_or(replica)
    }

    /// The nodes `shard` belongs on: its target, or every member while it
    /// has none.
    pub(crate) fn target_of(&self, shard: ShardId) -> Vec<NodeId> {
        match self.targets.get(&shard) {
            Some(nodes) => nodes.clone(),
            None => self.members.keys().copied().collect(),
        }
    }

    /// Whether `shard` belongs on `node` (as [`Self::target_of`] says,
    /// without building the list).
    pub(crate) fn targets_node(&self, shard: ShardId, node: NodeId) -> bool {
        match self.targets.get(&shard) {
            Some(nodes) => nodes.contains(&node),
            None => self.members.contains_key(&node),
        }
    }

    /// The nodes holding `shard` as far as the metadata group knows: its
    /// reported configuration, else its target (every member while it has
    /// none).
    pub(crate) fn holders_of(&self, shard: ShardId) -> Vec<NodeId> {
        match self.configs.get(&shard) {
            Some(c) => {
                let mut nodes: Vec<NodeId> =
                    c.nodes().into_iter().map(|r| self.node_of(r)).collect();
                nodes.sort_unstable();
                nodes.dedup();
                nodes
            }
            None => self.target_of(shard),
        }
    }

    /// Whether a data shard's reported configuration holds its target's
    /// nodes, one replica each (a learner member's as a learner), and no
    /// other (the target's nodes that are
    /// still members: a target naming a removed member cannot be met, and
    /// must not hold a move slot forever): no move is under way. A shard
    /// never reported counts as settled while it has no target.
    pub(crate) fn shard_settled(&self, shard: ShardId) -> bool {
        match (self.configs.get(&shard), self.targets.get(&shard)) {
            (Some(c), Some(t)) => {
                // A learner member holds its shards as a learner.
                let live = |learner: bool| {
                    t.iter().filter(move |n| {
                        !self.removed.contains(n)
                            && self.members.get(n).is_some_and(|m| m.is_learner == learner)
                    })
                };
                let held = |replicas: &[NodeId]| {
                    let mut nodes: Vec<NodeId> =
                        replicas.iter().map(|&r| self.node_of(r)).collect();
                    nodes.sort_unstable();
                    nodes
                };
                held(&c.voters).iter().eq(live(false)) && held(&c.learners).iter().eq(live(true))
            }
            (None, Some(_)) => false,
            (_, None) => true,
        }
    }

    /// Records a data shard's reported configuration unless the recorded
    /// one is as new or newer (reports of different leaders may commit out
    /// of order). Returns whether it was taken.
    pub(crate) fn apply_config(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        config: &crate::proposal::ShardConfig,
    ) -> Result<bool, StoreError> {
        let count = self.keyspace.map_or(0, |k| u64::from(k.shard_count()));
        let newer = self.configs.get(&config.shard).is_none_or(|c| config.applied > c.applied);
        if config.shard.0 == 0 || config.shard.0 > count || !newer {
            return Ok(false);
        }
        b.set_record(shard, &config_record(config.shard), Some(&encode_to_vec(config)))?;
        self.configs.insert(config.shard, config.clone());
        Ok(true)
    }

    /// Applies a new cluster's initial placement: targets for shards that
    /// have none, retiring nobody (no founder held a shard its target
    /// leaves out).
    pub(crate) fn apply_initial_targets(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        targets: &[crate::proposal::ShardTarget],
    ) -> Result<(), StoreError> {
        let count = self.keyspace.map_or(0, |k| u64::from(k.shard_count()));
        for t in targets {
            if t.shard.0 == 0 || t.shard.0 > count || self.targets.contains_key(&t.shard) {
                continue;
            }
            b.set_record(shard, &target_record(t.shard), Some(&encode_to_vec(t)))?;
            self.targets.insert(t.shard, t.nodes.clone());
        }
        Ok(())
    }

    /// Applies target changes, each on its own: one for a shard that is
    /// not a data shard is refused (the others apply). Each node a new
    /// target drops from its shard's current one moves to its next
    /// incarnation there, so that a replica it is given later is a fresh
    /// one. Returns the refusals.
    pub(crate) fn apply_targets(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        targets: &[crate::proposal::ShardTarget],
    ) -> Result<Vec<TargetRefusal>, StoreError> {
        let mut refused = Vec::new();
        let count = self.keyspace.map_or(0, |k| u64::from(k.shard_count()));
        for t in targets {
            if t.shard.0 == 0 || t.shard.0 > count {
                refused.push(TargetRefusal::NotADataShard(t.shard));
                continue;
            }
            let dropped: Vec<NodeId> =
                self.target_of(t.shard).into_iter().filter(|n| !t.nodes.contains(n)).collect();
            if !dropped.is_empty() {
                let of = self.incarnations.entry(t.shard).or_default();
                for node in dropped {
                    let k = of.entry(node).or_default();
                    *k = k.checked_add(1).expect("a node leaves a shard fewer than 2^32 times");
                    self.replica_nodes.insert(replica_id(node, t.shard, *k), node);
                }
                let record = encode_incarnations(of);
                b.set_record(shard, &incarnation_record(t.shard), Some(&record))?;
            }
            b.set_record(shard, &target_record(t.shard), Some(&encode_to_vec(t)))?;
            self.targets.insert(t.shard, t.nodes.clone());
        }
        Ok(refused)
    }

    fn url_taken(&self, by_other_than: NodeId, urls: &[String]) -> Option<String> {
        self.members
            .values()
            .filter(|m| m.id != by_other_than)
            .flat_map(|m| m.peer_urls.iter())
            .find(|u| urls.contains(u))
            .cloned()
    }

    fn get(&self, id: NodeId) -> Result<&Member, MemberError> {
        self.members.get(&id).ok_or(MemberError::NotFound { id })
    }

    /// Applies a member change: the outer error is the store failing, the
    /// inner one the change refused (deterministically, on every replica).
    /// On success returns the member concerned, as it now is (or was, for
    /// a removal).
    pub(crate) fn apply_member(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        change: &MemberChange,
    ) -> Result<Result<Member, MemberError>, StoreError> {
        let checked = match change {
            MemberChange::Add(m) => self.check_add(m).map(|()| m.clone()),
            MemberChange::Remove(id) => self.get(*id).cloned(),
            MemberChange::Update { id, peer_urls } => self.check_update(*id, peer_urls),
            MemberChange::Promote(id) => match self.get(*id) {
                Ok(m) if !m.is_learner => Err(MemberError::NotLearner { id: *id }),
                Ok(m) => Ok(Member { is_learner: false, ..m.clone() }),
                Err(e) => Err(e),
            },
            MemberChange::Publish { id, name, client_urls, zone } => {
                self.get(*id).map(|m| Member {
                    name: name.clone(),
                    client_urls: client_urls.clone(),
                    zone: zone.clone(),
                    ..m.clone()
                })
            }
        };
        let member = match checked {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        if let MemberChange::Remove(id) = change {
            b.set_record(shard, &member_record(*id), None)?;
            b.set_record(shard, &removed_record(*id), Some(&encode_to_vec(id)))?;
            self.members.remove(id);
            self.removed.insert(*id);
            if self.draining.remove(id) {
                b.set_record(shard, &draining_record(*id), None)?;
            }
        } else {
            Self::write_member(b, shard, &member)?;
            self.members.insert(member.id, member.clone());
        }
        Ok(Ok(member))
    }

    /// Applies the start or stop of a member's drain: the outer error is
    /// the store failing, the inner one the change refused (on every
    /// replica alike). Starting is refused for a member the table does not
    /// have, a learner, or when the voting members neither draining nor
    /// this one would number fewer than the replicas per data shard
    /// (placement could not leave it out). Stopping a drain that is not
    /// under way changes nothing.
    pub(crate) fn apply_drain(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        change: &crate::proposal::DrainChange,
    ) -> Result<Result<(), NodeError>, StoreError> {
        let member = change.member;
        let Some(m) = self.members.get(&member) else {
            return Ok(Err(NodeError::DrainUnknownMember { member }));
        };
        if !change.draining {
            if self.draining.remove(&member) {
                b.set_record(shard, &draining_record(member), None)?;
            }
            return Ok(Ok(()));
        }
        if m.is_learner {
            return Ok(Err(NodeError::DrainLearner { member }));
        }
        if self.draining.contains(&member) {
            return Ok(Ok(()));
        }
        let replicas = self.replicas_per_shard();
        let left = self
            .members
            .values()
            .filter(|m| !m.is_learner && m.id != member && !self.draining.contains(&m.id))
            .count();
        if left < replicas as usize {
            return Ok(Err(NodeError::DrainTooFewMembers { member, left, replicas }));
        }
        b.set_record(shard, &draining_record(member), Some(&encode_to_vec(&member)))?;
        self.draining.insert(member);
        Ok(Ok(()))
    }

    /// The data shards `member` holds a replica of as the metadata group
    /// knows it, ascending, among shards `1..=shard_count`: those whose
    /// reported configuration names it, and every shard not reported yet
    /// (where it is is not known, so it may be there). What a drain waits
    /// to see reach nothing.
    pub(crate) fn shards_held_by(&self, member: NodeId, shard_count: u32) -> Vec<ShardId> {
        (1..=u64::from(shard_count))
            .map(ShardId)
            .filter(|s| self.configs.get(s).is_none_or(|c| c.holds(member)))
            .collect()
    }

    fn check_add(&self, m: &Member) -> Result<(), MemberError> {
        if m.peer_urls.is_empty() || m.peer_urls.iter().any(String::is_empty) {
            return Err(MemberError::BadUrls);
        }
        if self.members.contains_key(&m.id) {
            return Err(MemberError::IdExists { id: m.id });
        }
        if self.removed.contains(&m.id) {
            return Err(MemberError::IdRemoved { id: m.id });
        }
        if let Some(url) = self.url_taken(m.id, &m.peer_urls) {
            return Err(MemberError::PeerUrlExists { url });
        }
        if m.is_learner && self.members.values().filter(|x| x.is_learner).count() >= LEARNERS_MAX {
            return Err(MemberError::TooManyLearners { max: LEARNERS_MAX });
        }
        Ok(())
    }

    fn check_update(&self, id: NodeId, urls: &[String]) -> Result<Member, MemberError> {
        let m = self.get(id)?;
        if urls.is_empty() || urls.iter().any(String::is_empty) {
            return Err(MemberError::BadUrls);
        }
        if let Some(url) = self.url_taken(id, urls) {
            return Err(MemberError::PeerUrlExists { url });
        }
        Ok(Member { peer_urls: urls.to_vec(), ..m.clone() })
    }

    /// Applies an alarm change; returns the alarms it concerned (etcd
    /// answers ACTIVATE and DEACTIVATE with the alarm changed).
    pub(crate) fn apply_alarm(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        change: &AlarmChange,
    ) -> Result<Vec<AlarmMember>, StoreError> {
        match *change {
            AlarmChange::Activate(a) => {
                b.set_record(shard, &alarm_record(a), Some(&encode_to_vec(&a)))?;
                self.alarms.insert(a);
                Ok(vec![a])
            }
            AlarmChange::Deactivate(a) => {
                if self.alarms.remove(&a) {
                    b.set_record(shard, &alarm_record(a), None)?;
                    Ok(vec![a])
                } else {
                    Ok(Vec::new())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proposal::{Layout, ShardTarget};
    use ringkv_storage::SimDisk;
    use ringkv_storage::mvcc::{MvccStore, StoreOptions};

    /// A move is under way until the reported configuration is the
    /// target, less the target's nodes that are no longer members.
    #[test]
    fn a_shard_is_settled_once_its_reported_configuration_is_its_live_target() {
        let mut t = ClusterTables::default();
        for id in [1, 2, 3, 4] {
            t.members.insert(NodeId(id), Member { id: NodeId(id), ..Member::default() });
        }
        let s = ShardId(1);
        assert!(t.shard_settled(s), "no target: nothing to move");
        t.targets.insert(s, vec![NodeId(1), NodeId(2), NodeId(4)]);
        assert!(!t.shard_settled(s), "a target and no report yet");
        let report = |voters: &[u64], learners: &[u64]| crate::proposal::ShardConfig {
            shard: s,
            applied: ringkv_consensus::LogIndex(9),
            voters: voters.iter().copied().map(NodeId).collect(),
            learners: learners.iter().copied().map(NodeId).collect(),
        };
        t.configs.insert(s, report(&[1, 2, 3], &[4]));
        assert!(!t.shard_settled(s), "4 still a learner");
        t.configs.insert(s, report(&[1, 2, 4], &[]));
        assert!(t.shard_settled(s));
        // Node 4 removed from the cluster: the shard without it is settled.
        t.members.remove(&NodeId(4));
        t.removed.insert(NodeId(4));
        t.configs.insert(s, report(&[1, 2], &[]));
        assert!(t.shard_settled(s));
    }

    /// A target that drops a node raises its incarnation in that shard
    /// (on every replica, whoever proposed it), so a target naming it
    /// again gets it a fresh replica id; the index from replica ids to
    /// nodes covers every incarnation, and the tables reload as applied.
    #[test]
    fn a_node_a_target_drops_gets_a_fresh_replica_id_when_it_returns() {
        let shard = crate::config::META_SHARD;
        let store =
            MvccStore::open_on(&SimDisk::new(1), crate::STORE_FILE, StoreOptions::default())
                .unwrap();
        let mut t = ClusterTables::default();
        let members: Vec<Member> =
            (1..=4).map(|i| Member { id: NodeId(i), ..Member::default() }).collect();
        let init = ClusterInit { cluster_id: 9, members };
        let target = |s: u64, nodes: &[u64]| ShardTarget {
            shard: ShardId(s),
            nodes: nodes.iter().copied().map(NodeId).collect(),
        };
        let keyspace = Keyspace::new(2, ringkv_ring::HashKeyRule::WholeKey).unwrap();
        let (refused, _) = store
            .write(|b| {
                t.apply_init(b, shard, &init)?;
                t.apply_layout(b, shard, &Layout { keyspace, replicas: 3 })?;
                // Every member held shard 1: the first target drops node 4.
                let first = t.apply_targets(b, shard, &[target(1, &[1, 2, 3])])?;
                assert!(first.is_empty());
                // Back onto 4 (dropping 3); shard 2 (no target yet) and an
                // unknown shard 3 in the same batch are judged alone.
                t.apply_targets(
                    b,
                    shard,
                    &[target(1, &[1, 2, 4]), target(2, &[2, 3, 4]), target(3, &[1, 2, 3])],
                )
            })
            .unwrap();
        assert_eq!(refused, vec![TargetRefusal::NotADataShard(ShardId(3))]);
        let (s1, s2) = (ShardId(1), ShardId(2));
        assert_eq!(t.target_of(s1), vec![NodeId(1), NodeId(2), NodeId(4)]);
        assert_eq!(t.target_of(s2), vec![NodeId(2), NodeId(3), NodeId(4)]);
        for shard in [s1, s2, ShardId(3)] {
            for node in (0..6).map(NodeId) {
                let listed = t.target_of(shard).contains(&node);
                assert_eq!(t.targets_node(shard, node), listed, "{shard} {node}");
            }
        }
        assert_eq!((t.incarnation(s1, NodeId(4)), t.incarnation(s1, NodeId(3))), (1, 1));
        assert_eq!((t.incarnation(s2, NodeId(1)), t.incarnation(s2, NodeId(4))), (1, 0));
        // Node 4 comes back to shard 1 under a fresh id, which maps back to
        // it; a node never dropped keeps its own id.
        let back = t.fresh_replica(s1, NodeId(4));
        assert_ne!(back, NodeId(4));
        assert_ne!(back, replica_id(NodeId(4), s2, 1), "ids differ per shard");
        assert_eq!(t.node_of(back), NodeId(4));
        assert_eq!(t.fresh_replica(s1, NodeId(1)), NodeId(1));
        assert_eq!(t.node_of(NodeId(1)), NodeId(1));
        // Dropped again and back: incarnation 2, a third id; the second
        // still maps to the node (a configuration may still hold it).
        store
            .write(|b| {
                t.apply_targets(b, shard, &[target(1, &[1, 2, 3])])?;
                t.apply_targets(b, shard, &[target(1, &[1, 2, 4])])
            })
            .unwrap();
        let again = t.fresh_replica(s1, NodeId(4));
        assert!(again != back && again != NodeId(4));
        assert_eq!((t.node_of(again), t.node_of(back)), (NodeId(4), NodeId(4)));
        // A shard's settled state counts nodes, whatever their replica ids.
        let report = |voters: Vec<NodeId>| crate::proposal::ShardConfig {
            shard: s1,
            applied: ringkv_consensus::LogIndex(9),
            voters,
            learners: Vec::new(),
        };
        t.configs.insert(s1, report(vec![NodeId(1), NodeId(2), back]));
        assert!(t.shard_settled(s1));
        assert_eq!(t.holders_of(s1), vec![NodeId(1), NodeId(2), NodeId(4)]);
        t.configs.insert(s1, report(vec![NodeId(1), NodeId(2), NodeId(3)]));
        assert!(!t.shard_settled(s1));
        t.configs.clear();
        assert_eq!(t.replicas_per_shard(), 3);
        let reloaded = ClusterTables::load(&store.read().unwrap(), shard).unwrap();
        assert_eq!(reloaded, t);
    }

    /// Tables written before incarnations existed name the nodes a target
    /// dropped in `retired/` records: each reads as incarnation 1.
    #[test]
    fn retired_records_read_as_a_first_incarnation() {
        let shard = crate::config::META_SHARD;
        let store =
            MvccStore::open_on(&SimDisk::new(1), crate::STORE_FILE, StoreOptions::default())
                .unwrap();
        let old = ShardTarget { shard: ShardId(5), nodes: vec![NodeId(3), NodeId(7)] };
        store
            .write(|b| {
                b.set_record(
                    shard,
                    &format!("{RETIRED_PREFIX}{:016x}", 5),
                    Some(&encode_to_vec(&old)),
                )
            })
            .unwrap();
        let t = ClusterTables::load(&store.read().unwrap(), shard).unwrap();
        assert_eq!(t.incarnation(ShardId(5), NodeId(3)), 1);
        assert_eq!(t.incarnation(ShardId(5), NodeId(7)), 1);
        assert_eq!(t.incarnation(ShardId(5), NodeId(4)), 0);
        let r = replica_id(NodeId(7), ShardId(5), 1);
        assert_eq!(t.node_of(r), NodeId(7));
    }

    /// A member's zone is what it last published (a restart with another
    /// zone, or none, replaces it), and it survives a reload.
    #[test]
    fn a_published_zone_is_recorded_and_replaced_by_the_next_publish() {
        let shard = crate::config::META_SHARD;
        let store =
            MvccStore::open_on(&SimDisk::new(1), crate::STORE_FILE, StoreOptions::default())
                .unwrap();
        let mut t = ClusterTables::default();
        let members =
            vec![Member { id: NodeId(1), peer_urls: vec!["p".into()], ..Member::default() }];
        let publish = |zone: Option<&str>| MemberChange::Publish {
            id: NodeId(1),
            name: "m1".into(),
            client_urls: vec!["c".into()],
            zone: zone.map(str::to_owned),
        };
        let zone_after = |t: &mut ClusterTables, zone: Option<&str>| {
            store.write(|b| t.apply_member(b, shard, &publish(zone))).unwrap().0.unwrap();
            let reloaded = ClusterTables::load(&store.read().unwrap(), shard).unwrap();
            assert_eq!(&reloaded, t);
            t.members[&NodeId(1)].zone.clone()
        };
        store.write(|b| t.apply_init(b, shard, &ClusterInit { cluster_id: 9, members })).unwrap();
        assert_eq!(t.members[&NodeId(1)].zone, None);
        assert_eq!(zone_after(&mut t, Some("a")).as_deref(), Some("a"));
        assert_eq!(zone_after(&mut t, Some("b")).as_deref(), Some("b"));
        assert_eq!(zone_after(&mut t, None), None);
        assert_eq!(t.members[&NodeId(1)].name, "m1");
    }

    /// A drain starts only for a voting member that R others can replace,
    /// stops idempotently, survives a reload, and ends with the member.
    #[test]
    fn a_drain_is_refused_unless_r_other_voters_remain_and_ends_with_the_member() {
        use crate::proposal::DrainChange;
        let shard = crate::config::META_SHARD;
        let store =
            MvccStore::open_on(&SimDisk::new(1), crate::STORE_FILE, StoreOptions::default())
                .unwrap();
        let mut t = ClusterTables::default();
        let mut members: Vec<Member> =
            (1..=5).map(|i| Member { id: NodeId(i), ..Member::default() }).collect();
        members[4].is_learner = true;
        let init = ClusterInit { cluster_id: 9, members };
        let keyspace = Keyspace::new(4, ringkv_ring::HashKeyRule::WholeKey).unwrap();
        let start = |id: u64| DrainChange { member: NodeId(id), draining: true };
        let stop = |id: u64| DrainChange { member: NodeId(id), draining: false };
        store
            .write(|b| {
                t.apply_init(b, shard, &init)?;
                t.apply_layout(b, shard, &Layout { keyspace, replicas: 3 })?;
                let refused = t.apply_drain(b, shard, &start(9))?.unwrap_err();
                assert!(matches!(refused, NodeError::DrainUnknownMember { member: NodeId(9) }));
                let refused = t.apply_drain(b, shard, &start(5))?.unwrap_err();
                assert!(matches!(refused, NodeError::DrainLearner { member: NodeId(5) }));
                // Four voters, R = 3: one may drain (twice is once) ...
                t.apply_drain(b, shard, &start(4))?.unwrap();
                t.apply_drain(b, shard, &start(4))?.unwrap();
                // ... a second would leave two.
                let refused = t.apply_drain(b, shard, &start(3))?.unwrap_err();
                let NodeError::DrainTooFewMembers { member, left, replicas } = refused else {
                    panic!("{refused:?}")
                };
                assert_eq!((member, left, replicas), (NodeId(3), 2, 3));
                assert!(refused.to_string().contains("add 1 more members"), "{refused}");
                Ok(())
            })
            .unwrap();
        assert_eq!(t.draining, [NodeId(4)].into());
        assert_eq!(ClusterTables::load(&store.read().unwrap(), shard).unwrap(), t);
        store
            .write(|b| {
                // Stopped, then stopping again, changes nothing more.
                t.apply_drain(b, shard, &stop(4))?.unwrap();
                t.apply_drain(b, shard, &stop(4))?.unwrap();
                assert!(t.draining.is_empty());
                t.apply_drain(b, shard, &start(3))?.unwrap();
                t.apply_member(b, shard, &MemberChange::Remove(NodeId(3)))?.unwrap();
                Ok(())
            })
            .unwrap();
        assert!(t.draining.is_empty(), "removal ends the drain");
        assert_eq!(ClusterTables::load(&store.read().unwrap(), shard).unwrap(), t);
    }

    /// A member holds the shards whose reported configuration names it
    /// (learner or voter), and every shard not reported yet.
    #[test]
    fn a_member_holds_the_reported_shards_naming_it_and_the_unreported_ones() {
        let mut t = ClusterTables::default();
        let report = |s: u64, voters: &[u64], learners: &[u64]| crate::proposal::ShardConfig {
            shard: ShardId(s),
            applied: ringkv_consensus::LogIndex(3),
            voters: voters.iter().copied().map(NodeId).collect(),
            learners: learners.iter().copied().map(NodeId).collect(),
        };
        for c in [report(1, &[1, 2, 3], &[]), report(2, &[1, 2], &[4]), report(3, &[2, 3, 4], &[])]
        {
            t.configs.insert(c.shard, c);
        }
        assert_eq!(t.shards_held_by(NodeId(4), 4), vec![ShardId(2), ShardId(3), ShardId(4)]);
        assert_eq!(t.shards_held_by(NodeId(1), 3), vec![ShardId(1), ShardId(2)]);
        assert_eq!(t.shards_held_by(NodeId(9), 3), Vec::<ShardId>::new());
    }

    #[test]
    fn ids_are_stable_and_depend_on_every_input() {
        let urls = vec!["http://a:2380".to_owned(), "http://b:2380".to_owned()];
        let swapped = vec![urls[1].clone(), urls[0].clone()];
        let id = member_id("tok", "n1", &urls);
        assert_eq!(id, member_id("tok", "n1", &swapped), "URL order must not matter");
        assert_ne!(id, member_id("tok2", "n1", &urls));
        assert_ne!(id, member_id("tok", "n2", &urls));
        assert_ne!(id, member_id("tok", "n1", &urls[..1]));
        // Length-prefixed parts: moving a byte between name and token changes the id.
        assert_ne!(member_id("to", "kn1", &urls), id);
        let t1 = added_member_id("tok", &urls, Duration::from_millis(1));
        assert_ne!(t1, added_member_id("tok", &urls, Duration::from_millis(2)));
        let ids: BTreeSet<NodeId> = [NodeId(1), NodeId(2)].into();
        assert_ne!(cluster_id("tok", &ids), cluster_id("tok", &[NodeId(1)].into()));
        assert!(id.is_valid() && cluster_id("", &BTreeSet::new()) != 0);
    }
}
