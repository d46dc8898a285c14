//! [`NodeError`]: every way a request or the node itself can fail, with
//! etcd's exact message for each error a client can see.
//!
//! Clients (clientv3, Kubernetes, Patroni) compare messages, so for every
//! client-visible variant `Display` is etcd's string and never changes; the
//! fields carry the details for logs. [`NodeError::class`] tells the server
//! which gRPC code etcd uses; the server maps classes to codes in one place.

use ringkv_consensus::{CodecError, NodeId, ShardId};
use ringkv_storage::WalError;
use ringkv_storage::mvcc::{MvccError, SnapshotError, StoreError};

use crate::engine::{EngineError, EngineKind};

/// The gRPC status class etcd answers an error with.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// `codes.InvalidArgument`.
    InvalidArgument,
    /// `codes.NotFound`.
    NotFound,
    /// `codes.FailedPrecondition`.
    FailedPrecondition,
    /// `codes.ResourceExhausted`.
    ResourceExhausted,
    /// `codes.OutOfRange`.
    OutOfRange,
    /// `codes.Unavailable`.
    Unavailable,
    /// `codes.Internal`.
    Internal,
    /// `codes.PermissionDenied`.
    PermissionDenied,
    /// `codes.Unauthenticated`.
    Unauthenticated,
}

/// Why a member change was refused (etcd's membership errors).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// MemberAdd chose an id already in the table.
    #[error("etcdserver: member ID already exist")]
    IdExists {
        /// The id.
        id: NodeId,
    },
    /// MemberAdd chose the id of a member removed before.
    #[error("etcdserver: member ID has been removed")]
    IdRemoved {
        /// The id.
        id: NodeId,
    },
    /// MemberAdd/MemberUpdate named a peer URL another member has.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists {
        /// The URL.
        url: String,
    },
    /// No member has this id.
    #[error("etcdserver: member not found")]
    NotFound {
        /// The id.
        id: NodeId,
    },
    /// MemberPromote of a member that is already a voter.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner {
        /// The member.
        id: NodeId,
    },
    /// MemberPromote of a learner that has not caught up with the leader.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady {
        /// The learner.
        id: NodeId,
        /// The last index it is known to hold.
        matched: u64,
        /// The leader's last index.
        leader_index: u64,
    },
    /// MemberAdd of a learner beyond the allowed number.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners {
        /// The limit ([`crate::LEARNERS_MAX`]).
        max: usize,
    },
    /// MemberAdd or MemberUpdate without a peer URL.
    #[error("etcdserver: given member URLs are invalid")]
    BadUrls,
}

impl MemberError {
    fn class(&self) -> ErrorClass {
        match self {
            MemberError::NotFound { .. } => ErrorClass::NotFound,
            MemberError::BadUrls => ErrorClass::InvalidArgument,
            _ => ErrorClass::FailedPrecondition,
        }
    }
}

/// A kind of KV request that may span shards.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SpanningRequest {
    /// `KV.Txn`: refused when it spans shards.
    Txn,
    /// `KV.Range`: scatter-gathered by the caller.
    Range,
    /// `KV.DeleteRange`: scattered by the caller.
    DeleteRange,
}

/// The refusal of a request spanning `shards`: the ADR's text for a
/// transaction (clients see it), a hint to scatter for ranges.
fn spans_message(request: SpanningRequest, shards: &[ShardId]) -> String {
    match request {
        SpanningRequest::Txn => {
            let names: Vec<String> = shards.iter().map(|s| s.0.to_string()).collect();
            let list = match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
                _ => names.join(""),
            };
            format!(
                "etcdserver: txn spans shards {list}; keys of one txn must share a hash key (use \
                 {{tag}} in the key)"
            )
        }
        SpanningRequest::Range | SpanningRequest::DeleteRange => {
            let what = if request == SpanningRequest::Range { "range" } else { "delete range" };
            format!(
                "etcdserver: {what} spans {} shards; ask each shard with submit_to",
                shards.len()
            )
        }
    }
}

/// Everything that can go wrong in the node, for a request or for the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The shard has no known leader, so the request could not be placed
    /// before its deadline.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// Leadership moved while the request waited; it may or may not have
    /// taken effect. Retry (a read) or check (a write).
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The request was not answered within the request timeout (no quorum,
    /// or a slow cluster); a write may still take effect.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// A bounded queue is full, or apply lags too far behind commit.
    #[error("etcdserver: too many requests")]
    TooManyRequests {
        /// What is pending.
        pending: u64,
        /// The limit.
        limit: u64,
    },
    /// A NOSPACE alarm is active (a member ran out of disk, or the store
    /// passed its quota): writes are refused until it is cleared.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// The request is larger than `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge {
        /// Its encoded size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The request must go to the leader (MoveLeader).
    #[error("etcdserver: not leader")]
    NotLeader {
        /// The leader this member knows of.
        leader: Option<NodeId>,
    },
    /// MoveLeader to a member that cannot lead.
    #[error("etcdserver: bad leader transferee")]
    BadTransferee {
        /// The requested target.
        target: NodeId,
    },
    /// This member was removed from the cluster and stopped; it serves
    /// nothing more (clients see etcd's `server stopped`). Wipe its data
    /// directory before adding it back.
    #[error("etcdserver: server stopped")]
    Removed,
    /// The node stopped serving after a storage failure (see
    /// [`crate::NodeStatus::errors`] for the cause); restart it.
    #[error("etcdserver: server stopped")]
    Stopped {
        /// The failure, for operators.
        reason: String,
    },
    /// The state machine refused the request (etcd's MVCC and lease errors).
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// The member table refused the change.
    #[error(transparent)]
    Member(#[from] MemberError),
    /// The auth store refused the change, or the caller lacks the right.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A request names a shard this node does not host.
    #[error("shard {shard} is not hosted on this node: send the request to a node that hosts it")]
    UnknownShard {
        /// The shard.
        shard: ShardId,
    },
    /// A member removal refused because a data shard would lose its
    /// quorum: the member is one of too few voters of that shard.
    #[error(
        "member {member:x} is one of {voters} voters of shard {shard}; removing it now would leave \
         that shard without a quorum: add a member first, or drain it so that its replicas move \
         before it goes (ringkv ctl node decommission)",
        member = member.0
    )]
    RemoveStrandsShard {
        /// The member.
        member: NodeId,
        /// The shard.
        shard: ShardId,
        /// How many voters the shard has.
        voters: usize,
    },
    /// A member removal refused while a data shard that holds (or is to
    /// hold) a replica on the member is moving: until the shard's leader
    /// reports its new configuration, whether the removal leaves it a
    /// quorum is not known.
    #[error(
        "member {member:x} holds a replica of shard {shard}, which is moving; removing the member \
         now could leave that shard without a quorum: retry once the shard's replicas are where \
         its target puts them (ringkv ctl shards)",
        member = member.0
    )]
    RemoveWhileMoving {
        /// The member.
        member: NodeId,
        /// The shard.
        shard: ShardId,
    },
    /// A drain names a member the cluster does not have (never added,
    /// or already removed).
    #[error(
        "member {member:x} is not a member of the cluster: nothing to drain (ringkv ctl node list \
         shows the members)",
        member = member.0
    )]
    DrainUnknownMember {
        /// The id given.
        member: NodeId,
    },
    /// A drain names a learner: no data shard is placed on a learner, so
    /// there is nothing to move off it.
    #[error(
        "member {member:x} is a learner, which holds no data shard: remove it directly",
        member = member.0
    )]
    DrainLearner {
        /// The learner.
        member: NodeId,
    },
    /// Draining the member would leave fewer voting members than the
    /// replicas each data shard needs.
    #[error(
        "draining member {member:x} would leave {left} voting members that are not draining, \
         fewer than the {replicas} replicas each data shard needs: add {needed} more members \
         (or stop another drain) first",
        member = member.0,
        needed = (*replicas as usize).saturating_sub(*left)
    )]
    DrainTooFewMembers {
        /// The member.
        member: NodeId,
        /// Voting members left that are not draining.
        left: usize,
        /// Replicas per data shard (`--replicas`).
        replicas: u32,
    },
    /// A drain asked of a cluster whose replicas do not move: without
    /// `--placement-moves` (or with one shard) every member holds every
    /// shard, and there is nothing to move.
    #[error(
        "this cluster does not move replicas (it runs without --placement-moves, or with one \
         shard): every member holds every shard, so there is nothing to drain; remove the member \
         directly"
    )]
    DrainNeedsPlacementMoves,
    /// A request for a data shard this member holds no replica of (the
    /// shard is placed on other members): the server sends it on to one of
    /// `hosts`.
    #[error(
        "shard {shard} is not on this member (it is on members {}); send the request to one of them",
        fmt_hosts(hosts)
    )]
    NotHosted {
        /// The shard.
        shard: ShardId,
        /// The members holding it, as this member knows them (may be stale
        /// or empty while placement changes).
        hosts: Vec<NodeId>,
    },
    /// A KV request whose keys live on several data shards, refused: a
    /// transaction must stay within one shard, and a multi-shard range is
    /// the caller's to scatter over the shards ([`crate::Node::submit_to`]).
    #[error("{}", spans_message(*request, shards))]
    SpansShards {
        /// What kind of request it is.
        request: SpanningRequest,
        /// The data shards its keys live on, ascending.
        shards: Vec<ShardId>,
    },
    /// A request that acts on one data shard's history (Compact, HashKV)
    /// was sent without naming the shard on a cluster of several.
    #[error(
        "{request} on a cluster of {shard_count} shards applies to one shard at a time: name \
         the shard (submit_to), or use --shards 1"
    )]
    ShardRequired {
        /// The request.
        request: &'static str,
        /// The cluster's data shards.
        shard_count: u32,
    },
    /// A request submitted to a shard that cannot serve it: not a data shard
    /// of this cluster, or not a KV request.
    #[error("{request} cannot be sent to shard {shard}: {why}")]
    WrongShard {
        /// The request.
        request: &'static str,
        /// The shard named.
        shard: ShardId,
        /// Why not.
        why: &'static str,
    },
    /// A feature that does not work across shards yet.
    #[error(
        "{what} on a sharded cluster (--shards {shard_count}) is not available yet; use \
         --shards 1"
    )]
    NotShardable {
        /// The feature.
        what: &'static str,
        /// The cluster's data shards.
        shard_count: u32,
    },
    /// The node's keyspace (`--shards`, hash-key rule) differs from the one
    /// its cluster was created with: serving with another mapping of keys to
    /// shards would look for keys where they are not.
    #[error(
        "the cluster was created with {stored}, but this node is configured with {configured}: \
         start it with the cluster's --shards (the shard count is fixed at creation)"
    )]
    KeyspaceMismatch {
        /// The cluster's keyspace, as recorded.
        stored: String,
        /// The node's configured keyspace.
        configured: String,
    },
    /// The node's replicas per data shard (`--replicas`) differ from the
    /// cluster's: nodes placing shards with another replication factor
    /// would disagree about where every shard belongs.
    #[error(
        "the cluster was created with --replicas {stored}, but this node is configured with \
         --replicas {configured}: start it with the cluster's --replicas (fixed at creation)"
    )]
    ReplicasMismatch {
        /// The cluster's replication factor, as recorded.
        stored: u32,
        /// The node's configured one.
        configured: u32,
    },
    /// The node's configuration cannot work.
    #[error("invalid node configuration: {field} {why}")]
    Config {
        /// The offending setting.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The state machine store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A snapshot could not be taken or installed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A consensus replica could not be started.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Bytes from a peer or from disk did not decode.
    #[error("malformed {what}: {source}")]
    Codec {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: CodecError,
    },
    /// A peer frame was refused (misaddressed, or the inbox is full); it is
    /// dropped, as the network may drop any frame.
    #[error("peer frame refused: {why}")]
    FrameRefused {
        /// Why.
        why: &'static str,
    },
    /// The data directory was created with another consensus engine than
    /// the one configured; the node refuses to open it (one engine per
    /// cluster, for its whole life).
    #[error(
        "this data directory was created with the {stored} consensus engine, but the node is \
         configured to run {configured}: start it with --engine {stored}, or wipe the data \
         directory to join a {configured} cluster"
    )]
    EngineMismatch {
        /// The engine the data directory was created with.
        stored: String,
        /// The engine configured now.
        configured: EngineKind,
    },
    /// Durable state contradicts itself; the node refuses to go on.
    #[error(
        "inconsistent durable state of shard {shard}: {what}; restore this member from a snapshot or remove and re-add it"
    )]
    Corrupt {
        /// The shard.
        shard: ShardId,
        /// What disagrees.
        what: String,
    },
}

impl NodeError {
    /// The message a client sees: etcd's exact string for every error
    /// etcd has, this error's own text otherwise.
    pub fn etcd_message(&self) -> String {
        self.to_string()
    }

    /// The gRPC status class etcd answers this error with.
    pub fn class(&self) -> ErrorClass {
        match self {
            NodeError::NoLeader
            | NodeError::LeaderChanged
            | NodeError::Timeout
            | NodeError::Stopped { .. }
            | NodeError::Removed
            | NodeError::UnknownShard { .. }
            | NodeError::NotHosted { .. } => ErrorClass::Unavailable,
            NodeError::DrainUnknownMember { .. } => ErrorClass::NotFound,
            NodeError::TooManyRequests { .. } | NodeError::NoSpace => ErrorClass::ResourceExhausted,
            NodeError::RequestTooLarge { .. } => ErrorClass::InvalidArgument,
            NodeError::NotLeader { .. }
            | NodeError::BadTransferee { .. }
            | NodeError::SpansShards { .. }
            | NodeError::RemoveStrandsShard { .. }
            | NodeError::RemoveWhileMoving { .. }
            | NodeError::DrainLearner { .. }
            | NodeError::DrainTooFewMembers { .. }
            | NodeError::DrainNeedsPlacementMoves
            | NodeError::ShardRequired { .. }
            | NodeError::NotShardable { .. } => ErrorClass::FailedPrecondition,
            NodeError::WrongShard { .. } => ErrorClass::InvalidArgument,
            NodeError::Mvcc(e) => match e {
                MvccError::Compacted { .. }
                | MvccError::FutureRevision { .. }
                | MvccError::LeaseTtlTooLarge { .. } => ErrorClass::OutOfRange,
                MvccError::LeaseNotFound { .. } => ErrorClass::NotFound,
                MvccError::LeaseExists { .. } => ErrorClass::FailedPrecondition,
                _ => ErrorClass::InvalidArgument,
            },
            NodeError::Member(e) => e.class(),
            NodeError::Auth(e) => e.class(),
            NodeError::Config { .. }
            | NodeError::Wal(_)
            | NodeError::Store(_)
            | NodeError::Snapshot(_)
            | NodeError::Engine(_)
            | NodeError::Codec { .. }
            | NodeError::FrameRefused { .. }
            | NodeError::EngineMismatch { .. }
            | NodeError::KeyspaceMismatch { .. }
            | NodeError::ReplicasMismatch { .. }
            | NodeError::Corrupt { .. } => ErrorClass::Internal,
        }
    }

    /// Whether the request may have taken effect although it failed (the
    /// client must check before retrying a non-idempotent write).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, NodeError::LeaderChanged | NodeError::Timeout)
    }
}

/// An error a leader sends back to the node that forwarded a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteError {
    /// The receiver is not the shard's leader (it names the one it knows).
    NotLeader {
        /// The leader the receiver knows of.
        leader: Option<NodeId>,
    },
    /// The leader's queues are full.
    TooManyRequests,
    /// The leader has stopped after a storage failure.
    Stopped,
    /// MemberPromote of a learner that has not caught up.
    LearnerNotReady {
        /// The learner.
        id: NodeId,
        /// What it holds.
        matched: u64,
        /// What the leader holds.
        leader_index: u64,
    },
    /// MemberPromote of a member that is not a learner.
    NotLearner {
        /// The member.
        id: NodeId,
    },
    /// No such member.
    MemberNotFound {
        /// The id.
        id: NodeId,
    },
    /// The proposal is larger than the engine accepts.
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The forwarded bytes are not a proposal (or not a call).
    Malformed,
    /// The new leader has not yet applied its predecessors' entries, so it
    /// cannot answer about leases yet; ask again.
    Retry,
}

impl RemoteError {
    /// The error the forwarding node gives its client.
    pub fn into_node_error(self) -> NodeError {
        match self {
            RemoteError::NotLeader { .. } => NodeError::LeaderChanged,
            RemoteError::TooManyRequests => NodeError::TooManyRequests { pending: 0, limit: 0 },
            RemoteError::Stopped => NodeError::LeaderChanged,
            RemoteError::LearnerNotReady { id, matched, leader_index } => {
                MemberError::LearnerNotReady { id, matched, leader_index }.into()
            }
            RemoteError::NotLearner { id } => MemberError::NotLearner { id }.into(),
            RemoteError::MemberNotFound { id } => MemberError::NotFound { id }.into(),
            RemoteError::TooLarge { bytes, limit } => NodeError::RequestTooLarge { bytes, limit },
            RemoteError::Malformed => NodeError::Codec {
                what: "forwarded proposal",
                source: CodecError::Invalid { what: "proposal", at: 0 },
            },
            RemoteError::Retry => NodeError::NoLeader,
        }
    }
}

/// Member ids as a comma-separated list (`none known` when empty).
fn fmt_hosts(hosts: &[NodeId]) -> String {
    if hosts.is_empty() {
        return "none known".to_string();
    }
    hosts.iter().map(|h| format!("{:x}", h.0)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spanning_request_names_its_shards() {
        let txn = |shards: &[u64]| NodeError::SpansShards {
            request: SpanningRequest::Txn,
            shards: shards.iter().map(|&s| ShardId(s)).collect(),
        };
        assert_eq!(
            txn(&[2, 5]).to_string(),
            "etcdserver: txn spans shards 2 and 5; keys of one txn must share a hash key (use \
             {tag} in the key)"
        );
        assert!(
            txn(&[1, 3, 4]).to_string().starts_with("etcdserver: txn spans shards 1, 3 and 4;")
        );
        let range = NodeError::SpansShards {
            request: SpanningRequest::Range,
            shards: vec![ShardId(1), ShardId(2)],
        };
        assert_eq!(
            range.to_string(),
            "etcdserver: range spans 2 shards; ask each shard with submit_to"
        );
        assert_eq!(range.class(), ErrorClass::FailedPrecondition);
    }
}
