//! What callers hand the node ([`Request`]) and what they get back
//! ([`Completion`], inside a [`RoundOutput`]).
//!
//! Reads are not executed by the node loop: once a linearizable read's
//! index is applied (or at once for a serializable read) the node emits
//! [`Completion::ReadReady`], and the caller runs [`execute_read`] on a
//! [`ReadView`] of the store, on whatever thread it likes. Reads thus scale
//! across the server's threads while the loop only orders them.

use ringkv_consensus::{LogIndex, NodeId, ShardId};
use ringkv_storage::mvcc::{
    CompactionRequest, DeleteRangeRequest, Event, HashKv, LeaseId, PutRequest, RangeRequest,
    RangeResponse, ReadError, ReadView, Response, Revision, TxnRequest,
};

use crate::auth::{AuthChange, AuthError, AuthQuery, AuthReply};
use crate::cluster::ClusterTables;
use crate::error::NodeError;
use crate::frame::LeaseTtl;
use crate::proposal::{AlarmMember, AlarmType, Member};

/// The caller's handle on a request, echoed in its completion.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u64);

/// etcd's `AlarmRequest.AlarmAction`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AlarmAction {
    /// List the active alarms.
    Get,
    /// Raise an alarm.
    Activate,
    /// Clear an alarm.
    Deactivate,
}

/// A client request, in the terms of etcd's API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `KV.Range`: linearizable unless `serializable`.
    Range(RangeRequest),
    /// `KV.Put`.
    Put(PutRequest),
    /// `KV.DeleteRange`.
    DeleteRange(DeleteRangeRequest),
    /// `KV.Txn` (replicated even when read-only, so it sees one revision).
    Txn(TxnRequest),
    /// `KV.Compact`.
    Compact(CompactionRequest),
    /// `Lease.LeaseGrant`; `id` 0 lets the node choose.
    LeaseGrant {
        /// The id asked for, or 0.
        id: LeaseId,
        /// TTL in seconds (raised to the minimum).
        ttl: i64,
    },
    /// `Lease.LeaseRevoke`.
    LeaseRevoke(LeaseId),
    /// One request of a `Lease.LeaseKeepAlive` stream.
    LeaseKeepAlive(LeaseId),
    /// `Lease.LeaseTimeToLive`.
    LeaseTimeToLive {
        /// The lease.
        id: LeaseId,
        /// Also list its keys.
        keys: bool,
    },
    /// `Lease.LeaseLeases`.
    LeaseLeases,
    /// `Cluster.MemberAdd`.
    MemberAdd {
        /// The new member's peer URLs.
        peer_urls: Vec<String>,
        /// Add it as a learner.
        is_learner: bool,
    },
    /// `Cluster.MemberRemove`.
    MemberRemove(NodeId),
    /// `Cluster.MemberUpdate`.
    MemberUpdate {
        /// The member.
        id: NodeId,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
    /// `Cluster.MemberPromote`.
    MemberPromote(NodeId),
    /// `Cluster.MemberList`.
    MemberList {
        /// Confirm with the leader first (etcd 3.5's `linearizable`).
        linearizable: bool,
    },
    /// `Maintenance.Alarm`.
    Alarm {
        /// What to do.
        action: AlarmAction,
        /// The member (ACTIVATE / DEACTIVATE).
        member: NodeId,
        /// The alarm (ACTIVATE / DEACTIVATE).
        alarm: AlarmType,
    },
    /// `Maintenance.Status`.
    Status,
    /// `Maintenance.Hash`.
    Hash,
    /// `Maintenance.HashKV` at a revision (0 = current).
    HashKv(Revision),
    /// `Maintenance.MoveLeader`.
    MoveLeader(NodeId),
    /// `Maintenance.Defragment`.
    Defragment,
    /// A change of the auth store (every `Auth` RPC that writes, and the
    /// simple token `Authenticate` issues).
    AuthChange(AuthChange),
    /// A question about the auth store, answered linearizably.
    AuthQuery(AuthQuery),
    /// Starts (`draining`) or stops a member's drain: with placement
    /// moves on, its data-shard replicas move to the other members before
    /// it is removed (ringkv's own; etcd has no such call). Progress:
    /// [`crate::Node::drain_status`].
    Drain {
        /// The member.
        member: NodeId,
        /// `true` to start, `false` to stop.
        draining: bool,
    },
}

/// A read the caller runs on a [`ReadView`] once the node says it may.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadRequest {
    /// A range.
    Range(RangeRequest),
    /// The member list.
    MemberList,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The state machine's answer to a replicated KV or lease command.
    Kv(Response),
    /// A range's answer.
    Range(RangeResponse),
    /// A keep-alive's answer: the TTL from now (0: no such lease).
    LeaseKeepAlive {
        /// The lease.
        id: LeaseId,
        /// Seconds.
        ttl: i64,
    },
    /// LeaseTimeToLive's answer.
    LeaseTimeToLive(LeaseTtl),
    /// LeaseLeases' answer.
    LeaseLeases(Vec<LeaseId>),
    /// A member change's or list's answer.
    Members {
        /// The member added, removed, updated or promoted.
        member: Option<Member>,
        /// Every member, in id order.
        members: Vec<Member>,
    },
    /// An alarm request's answer: the alarms listed or changed.
    Alarms(Vec<AlarmMember>),
    /// Status's answer.
    Status(Box<NodeStatus>),
    /// Hash's answer.
    Hash {
        /// CRC-32C of the shard's whole state.
        hash: u32,
        /// The shard's revision.
        revision: Revision,
    },
    /// HashKV's answer.
    HashKv(HashKv),
    /// MoveLeader or Defragment succeeded.
    Done,
    /// An auth request's answer.
    Auth(AuthReply),
}

/// The header fields of every etcd response besides the revision.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// The cluster (0 while a joining member has not learned it).
    pub cluster_id: u64,
    /// This member.
    pub member_id: NodeId,
    /// The current term.
    pub raft_term: u64,
}

/// The node's answer to one request.
#[derive(Debug)]
pub enum Completion {
    /// The request is finished.
    Done {
        /// The request.
        token: Token,
        /// Header fields.
        header: Header,
        /// The answer.
        result: Result<Reply, NodeError>,
    },
    /// The read may run now: run [`execute_read`] on a fresh [`ReadView`].
    ReadReady {
        /// The request.
        token: Token,
        /// Header fields.
        header: Header,
        /// The shard to read.
        shard: ShardId,
        /// What to read.
        read: ReadRequest,
        /// The auth revision the caller's rights were checked at, when auth
        /// is enabled: the read fails with `revision of auth store is old`
        /// if the view it runs on holds another (a change of the auth store
        /// applied between the check and the read).
        auth_revision: Option<u64>,
    },
}

impl Completion {
    /// The request this completes.
    pub fn token(&self) -> Token {
        match self {
            Completion::Done { token, .. } | Completion::ReadReady { token, .. } => *token,
        }
    }
}

/// Runs a read on `view`: what a [`Completion::ReadReady`] asks for, with
/// its `auth_revision`.
///
/// # Errors
/// etcd's read errors (compacted or future revision, empty key), `revision
/// of auth store is old` when the view's auth revision is not
/// `auth_revision`, or the store failed.
pub fn execute_read(
    view: &ReadView,
    shard: ShardId,
    read: &ReadRequest,
    auth_revision: Option<u64>,
) -> Result<Reply, NodeError> {
    if let Some(checked) = auth_revision {
        let store = crate::auth::stored_revision(view, shard)?;
        if store != checked {
            return Err(AuthError::OldRevision { request: checked, store }.into());
        }
    }
    match read {
        ReadRequest::Range(req) => view.range(shard, req).map(Reply::Range).map_err(read_error),
        ReadRequest::MemberList => {
            let tables = ClusterTables::load(view, shard)?;
            Ok(Reply::Members { member: None, members: tables.member_list() })
        }
    }
}

/// The node's error for a failed read.
pub(crate) fn read_error(e: ReadError) -> NodeError {
    match e {
        ReadError::Request(e) => NodeError::Mvcc(e),
        ReadError::Store(e) => NodeError::Store(e),
        other => NodeError::Stopped { reason: other.to_string() },
    }
}

/// The changes one applied entry made, for watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvents {
    /// The shard.
    pub shard: ShardId,
    /// The entry's log index.
    pub index: LogIndex,
    /// The revision the changes share.
    pub revision: Revision,
    /// The changes, in the order they were made, each with its previous
    /// version.
    pub events: Vec<Event>,
}

/// What one round produced.
#[derive(Debug, Default)]
pub struct RoundOutput {
    /// Requests answered or ready to read.
    pub completions: Vec<Completion>,
    /// Changes applied, in apply order, for the watch hub.
    pub events: Vec<WatchEvents>,
    /// More work is waiting: run another round without sleeping.
    pub more: bool,
}

/// One shard's state, for Status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatus {
    /// The shard.
    pub shard: ShardId,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Whether this node leads it.
    pub is_leader: bool,
    /// Whether this node is a learner in it.
    pub is_learner: bool,
    /// Current term (or ballot round).
    pub term: u64,
    /// Highest index known committed.
    pub commit_index: LogIndex,
    /// Highest index applied to the store.
    pub applied_index: LogIndex,
    /// The store's revision.
    pub revision: Revision,
    /// The compacted revision.
    pub compacted_revision: Revision,
    /// The index of the latest snapshot in the WAL.
    pub snapshot_index: LogIndex,
    /// Snapshots received from the leader and installed since the node
    /// opened: how a follower too far behind the compacted log catches up.
    pub snapshots_installed: u64,
}

/// The node's state, for `Maintenance.Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// This member.
    pub member_id: NodeId,
    /// The cluster (0 until known).
    pub cluster_id: u64,
    /// The consensus engine.
    pub engine: &'static str,
    /// The metadata shard's leader (the data shard's on a one-shard
    /// cluster), as this node knows it.
    pub leader: Option<NodeId>,
    /// The metadata shard's term.
    pub raft_term: u64,
    /// The metadata shard's commit index.
    pub raft_index: u64,
    /// The metadata shard's applied index.
    pub raft_applied_index: u64,
    /// Bytes of the store's file.
    pub db_size: u64,
    /// Bytes of it holding live data.
    pub db_size_in_use: u64,
    /// The NOSPACE quota.
    pub db_size_quota: u64,
    /// Whether this member is a learner.
    pub is_learner: bool,
    /// The revision for Status's header: the data shard's; on a sharded
    /// cluster the largest of the data shards' revisions, which are not
    /// comparable with each other (no watch may start from it across
    /// shards).
    pub revision: Revision,
    /// Active alarms (as etcd lists them in `errors`) and the failure that
    /// stopped the node, if one did.
    pub errors: Vec<String>,
    /// Every shard.
    pub shards: Vec<ShardStatus>,
}
