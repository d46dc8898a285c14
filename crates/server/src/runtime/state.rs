//! [`NodeState`]: what the services read about the node without asking its
//! thread (ids, term, leader, revision), refreshed by the node thread.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use ringkv_api::etcdserverpb::ResponseHeader;
use ringkv_consensus::NodeId;
use ringkv_node::{AlarmMember, Member, ShardStatus};
use ringkv_storage::mvcc::Revision;
use tokio::sync::watch;

use crate::api::HeaderInfo;

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
    /// The data shard's leader as this node knows it; a watch so streams
    /// can end when it is lost (etcd's `hasleader` rule).
    leader: watch::Sender<Option<NodeId>>,
    shards: Mutex<Vec<ShardStatus>>,
    alarms: Mutex<Vec<AlarmMember>>,
    members: Mutex<Vec<Member>>,
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
            leader: watch::Sender::new(None),
            shards: Mutex::new(Vec::new()),
            alarms: Mutex::new(Vec::new()),
            members: Mutex::new(Vec::new()),
        }
    }

    /// This member's id.
    pub fn member_id(&self) -> NodeId {
        self.member_id
    }

    /// The cluster's id (0 while a joining member has not learned it).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Relaxed)
    }

    /// The data shard's current term.
    pub fn raft_term(&self) -> u64 {
        self.raft_term.load(Ordering::Relaxed)
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

    pub(crate) fn set_shards(&self, shards: Vec<ShardStatus>) {
        *self.shards.lock().unwrap_or_else(PoisonError::into_inner) = shards;
    }

    pub(crate) fn set_members(&self, members: Vec<Member>) {
        *self.members.lock().unwrap_or_else(PoisonError::into_inner) = members;
    }

    pub(crate) fn set_alarms(&self, alarms: Vec<AlarmMember>) {
        *self.alarms.lock().unwrap_or_else(PoisonError::into_inner) = alarms;
    }
}
