//! [`NodeState`]: what the services read about the node without asking its
//! thread (ids, term, leader, revision), refreshed by the node thread.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use ringkv_api::etcdserverpb::ResponseHeader;
use std::collections::BTreeMap;

use ringkv_consensus::{NodeId, ShardId};
use ringkv_node::{AlarmMember, Header, Member, MemberReplicas, ShardStatus};
use ringkv_storage::mvcc::Revision;
use tokio::sync::watch;

use crate::api::HeaderInfo;
use crate::watch::WatchContext;

/// One shard as the node thread last published it: its status and who
/// replicates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardReport {
    /// The shard's status.
    pub status: ShardStatus,
    /// Its voting replicas, in id order (both configurations while a
    /// membership change is joint).
    pub voters: Vec<NodeId>,
    /// Its learners (replicas catching up before they vote), in id order.
    pub learners: Vec<NodeId>,
}

impl ShardReport {
    /// The report of a shard whose engine reports `replica` (`None`: the
    /// replicas are unknown, and listed empty).
    pub fn new(status: ShardStatus, replica: Option<&ringkv_consensus::Status>) -> ShardReport {
        let (voters, learners) = match replica {
            Some(r) => {
                let m = &r.membership;
                let voters: std::collections::BTreeSet<NodeId> =
                    m.voters.iter().chain(&m.outgoing).copied().collect();
                (voters.into_iter().collect(), m.learners.iter().copied().collect())
            }
            None => (Vec::new(), Vec::new()),
        };
        ShardReport { status, voters, learners }
    }
}

/// The node's state as last published by its thread.
///
/// Readers see each field on its own (a header may combine a term and a
/// revision from two neighbouring rounds), which is what etcd's headers
/// promise too: the revision is the store's when the answer was made, the
/// term the member's at about that time.
#[derive(Debug)]
pub struct NodeState {
    member_id: NodeId,
    cluster_id: AtomicU64,
    raft_term: AtomicU64,
    revision: AtomicI64,
    stopped: AtomicBool,
    /// Whether auth is enabled in the store as applied here: set every
    /// round, so a service that skips work while it is off (the watch
    /// service's permission check) lags the node by at most a round.
    auth_enabled: AtomicBool,
    /// The node thread has ended: nothing is served any more, not even
    /// the reads that never reach it ([`crate::runtime::NodeHandle::range_serializable`]).
    closed: AtomicBool,
    /// Whether serializable ranges are served from the store on the
    /// request's task; off, they go through the node thread as every
    /// other request does (see [`NodeState::set_direct_serializable_reads`]).
    direct_serializable_reads: AtomicBool,
    /// The data shard's leader as this node knows it; a watch so streams
    /// can end when it is lost (etcd's `hasleader` rule).
    leader: watch::Sender<Option<NodeId>>,
    shards: Mutex<Vec<ShardReport>>,
    /// Whether the node thread has published `shards` at least once: until
    /// then [`NodeState::hosts`] is false for every shard, which says
    /// nothing about where shards are.
    published: AtomicBool,
    alarms: Mutex<Vec<AlarmMember>>,
    members: Mutex<Vec<Member>>,
    /// Each data shard's target replica set the metadata shard records, as
    /// applied here (empty while every member holds every shard).
    targets: Mutex<BTreeMap<ShardId, Vec<NodeId>>>,
    /// Every member's data-shard replicas and drain flag as the metadata
    /// shard records them, as applied here; `None` when this member does
    /// not move replicas (no `--placement-moves`, or one shard).
    drains: Mutex<Option<Vec<MemberReplicas>>>,
    /// Whether this member is a learner in its member table: read on
    /// every client call (etcd refuses most of them on a learner), so
    /// kept apart from `members` and its lock.
    learner: AtomicBool,
}

impl NodeState {
    /// The state of a node that just opened.
    pub fn new(member_id: NodeId, cluster_id: u64, revision: Revision) -> NodeState {
        NodeState {
            member_id,
            cluster_id: AtomicU64::new(cluster_id),
            raft_term: AtomicU64::new(0),
            revision: AtomicI64::new(revision.0),
            stopped: AtomicBool::new(false),
            auth_enabled: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            direct_serializable_reads: AtomicBool::new(true),
            leader: watch::Sender::new(None),
            shards: Mutex::new(Vec::new()),
            published: AtomicBool::new(false),
            alarms: Mutex::new(Vec::new()),
            members: Mutex::new(Vec::new()),
            targets: Mutex::new(BTreeMap::new()),
            drains: Mutex::new(None),
            learner: AtomicBool::new(false),
        }
    }

    /// This member's id.
    pub fn member_id(&self) -> NodeId {
        self.member_id
    }

    /// Whether this member is a learner (not yet promoted) as its member
    /// table last said; `false` while the table does not list it. Lags the
    /// table by up to [`crate::runtime::STATUS_REFRESH_INTERVAL`]: a member
    /// just promoted refuses for that long more, and its clients retry.
    pub fn is_learner(&self) -> bool {
        self.learner.load(Ordering::Relaxed)
    }

    /// The cluster's id (0 while a joining member has not learned it).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Relaxed)
    }

    /// The data shard's current term.
    pub fn raft_term(&self) -> u64 {
        self.raft_term.load(Ordering::Relaxed)
    }

    /// Whether auth is enabled (as of the node's last round).
    pub fn auth_enabled(&self) -> bool {
        self.auth_enabled.load(Ordering::Acquire)
    }

    /// Records whether auth is enabled.
    pub(crate) fn set_auth_enabled(&self, enabled: bool) {
        self.auth_enabled.store(enabled, Ordering::Release);
    }

    /// Whether the node thread has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn set_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether serializable ranges skip the node thread (on by default).
    pub fn direct_serializable_reads(&self) -> bool {
        self.direct_serializable_reads.load(Ordering::Relaxed)
    }

    /// Turns the direct serializable reads on or off: both paths answer
    /// alike, so this exists to compare them (tests) and to rule the
    /// direct path out when chasing a problem.
    pub fn set_direct_serializable_reads(&self, on: bool) {
        self.direct_serializable_reads.store(on, Ordering::Relaxed);
    }

    /// The header fields of an answer made now, as the node makes them
    /// (cluster, member and term as of its last round).
    pub fn node_header(&self) -> Header {
        Header {
            cluster_id: self.cluster_id(),
            member_id: self.member_id,
            raft_term: self.raft_term(),
        }
    }

    /// The store's revision as of the last applied round.
    pub fn current_revision(&self) -> Revision {
        Revision(self.revision.load(Ordering::Acquire))
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        *self.leader.borrow()
    }

    /// Whether the node knows a leader and still serves (etcd's `hasleader`).
    pub fn has_leader(&self) -> bool {
        self.leader().is_some() && !self.stopped.load(Ordering::Relaxed)
    }

    /// Whether the node stopped (storage failure or removal).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Follows leader changes.
    pub fn watch_leader(&self) -> watch::Receiver<Option<NodeId>> {
        self.leader.subscribe()
    }

    /// Every shard's state, as of the last refresh.
    pub fn shards(&self) -> Vec<ShardStatus> {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        shards.iter().map(|s| s.status.clone()).collect()
    }

    /// Every shard's state and replicas, as of the last refresh.
    pub fn shard_reports(&self) -> Vec<ShardReport> {
        self.shards.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Active alarms, as of the last refresh.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The member table as applied here, as of the last refresh.
    pub fn members(&self) -> Vec<Member> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The header fields besides the revision.
    pub fn header_info(&self) -> HeaderInfo {
        HeaderInfo {
            cluster_id: self.cluster_id(),
            member_id: self.member_id.0,
            raft_term: self.raft_term(),
        }
    }

    /// A response header at `revision`.
    pub fn header(&self, revision: Revision) -> ResponseHeader {
        self.header_info().header(revision)
    }

    /// A response header at the current revision (for answers that are
    /// not about one revision: lease, cluster and maintenance calls).
    pub fn current_header(&self) -> ResponseHeader {
        self.header(self.current_revision())
    }

    pub(crate) fn set_cluster_id(&self, id: u64) {
        self.cluster_id.store(id, Ordering::Relaxed);
    }

    pub(crate) fn set_raft_term(&self, term: u64) {
        self.raft_term.store(term, Ordering::Relaxed);
    }

    pub(crate) fn advance_revision(&self, revision: Revision) {
        self.revision.fetch_max(revision.0, Ordering::AcqRel);
    }

    pub(crate) fn set_stopped(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.leader.send_replace(None);
    }

    pub(crate) fn set_leader(&self, leader: Option<NodeId>) {
        self.leader.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
    }

    /// Whether this node holds a replica of `shard`, as of the last
    /// refresh.
    pub fn hosts(&self, shard: ShardId) -> bool {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        shards.iter().any(|r| r.status.shard == shard)
    }

    /// The nodes holding `shard`, ascending, as of the last refresh: the
    /// voters and learners of this node's replica of it, or, for a shard
    /// it does not hold, the metadata shard's target for it (every member
    /// while there is none). The caller checks that `shard` is one of the
    /// cluster's.
    pub fn shard_replica_nodes(&self, shard: ShardId) -> Vec<NodeId> {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = shards.iter().find(|r| r.status.shard == shard) {
            let mut nodes: Vec<NodeId> = r.voters.iter().chain(&r.learners).copied().collect();
            nodes.sort_unstable();
            nodes.dedup();
            return nodes;
        }
        drop(shards);
        if let Some(target) = self.shard_target(shard) {
            return target;
        }
        let mut nodes: Vec<NodeId> = self.members().iter().map(|m| m.id).collect();
        nodes.sort_unstable();
        nodes
    }

    /// The target replica set the metadata shard records for `shard`, as
    /// of the last refresh: `None` while it has none.
    pub fn shard_target(&self, shard: ShardId) -> Option<Vec<NodeId>> {
        self.targets.lock().unwrap_or_else(PoisonError::into_inner).get(&shard).cloned()
    }

    /// Every member's data-shard replicas and whether it is being drained,
    /// as of the last refresh: `None` when this member does not move
    /// replicas (nothing is ever drained).
    pub fn drain_status(&self) -> Option<Vec<MemberReplicas>> {
        self.drains.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set_drain_status(&self, status: Option<Vec<MemberReplicas>>) {
        *self.drains.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }

    pub(crate) fn set_targets(&self, targets: BTreeMap<ShardId, Vec<NodeId>>) {
        *self.targets.lock().unwrap_or_else(PoisonError::into_inner) = targets;
    }

    pub(crate) fn set_shards(&self, shards: Vec<ShardReport>) {
        *self.shards.lock().unwrap_or_else(PoisonError::into_inner) = shards;
        self.published.store(true, Ordering::Release);
    }

    /// Whether the node thread has published the shards it holds at least
    /// once: before that, [`NodeState::hosts`] knows nothing.
    pub fn published(&self) -> bool {
        self.published.load(Ordering::Acquire)
    }

    /// Publishes whether this member is a learner: every loop iteration, so
    /// that a promoted member serves as soon as it has applied its promotion.
    pub(crate) fn set_learner(&self, learner: bool) {
        self.learner.store(learner, Ordering::Relaxed);
    }

    pub(crate) fn set_members(&self, members: Vec<Member>) {
        let learner = members.iter().any(|m| m.id == self.member_id && m.is_learner);
        self.learner.store(learner, Ordering::Relaxed);
        *self.members.lock().unwrap_or_else(PoisonError::into_inner) = members;
    }

    pub(crate) fn set_alarms(&self, alarms: Vec<AlarmMember>) {
        *self.alarms.lock().unwrap_or_else(PoisonError::into_inner) = alarms;
    }
}

impl WatchContext for NodeState {
    fn header(&self, revision: Revision) -> ResponseHeader {
        NodeState::header(self, revision)
    }

    fn has_leader(&self) -> bool {
        NodeState::has_leader(self)
    }
}
