//! Every error a client can see, with etcd's gRPC status code and message.
//!
//! Clients do not read error types, they read `(code, message)`: clientv3
//! turns a status back into a typed error by its message
//! (`rpctypes.errStringToError`), Kubernetes and Patroni compare the text,
//! and the gRPC retry logic of the Go client looks at the code. So the
//! messages here are etcd's exactly, byte for byte, and so are the codes.
//! [`EtcdError`] is the one place where they are written; every layer that
//! refuses a client request (API validation, the MVCC store, later the node
//! and the router) turns its error into an `EtcdError` and then into a
//! [`tonic::Status`] with [`EtcdError::to_status`].
//!
//! # Which etcd
//!
//! The catalog is etcd's `rpctypes` (server-side errors) as of 3.5, the API
//! version of `ringkv-api`, plus the entries 3.6 added (each marked) and the
//! two errors etcd's election service answers unmapped. Two codes
//! changed in 3.6 and are kept at their 3.4/3.5 value, which the Go clients
//! of those versions rely on to fail over to another endpoint:
//! `etcdserver: not capable` and `etcdserver: rpc not supported for learner`
//! are `Unavailable` here (3.6: `FailedPrecondition`).
//!
//! # Adding the errors of another layer
//!
//! A layer with its own error type (the node loop, the router) gets an
//! `impl From<ItsError> for EtcdError` in this crate, mapping each variant to
//! the catalog entry etcd would answer with, as [`From<MvccError>`] does
//! here. An error etcd has no entry for becomes [`EtcdError::Unknown`]: etcd
//! answers its unmapped errors with `Unknown` and the error's text too.

use std::borrow::Cow;
use std::fmt;

use ringkv_node::{MemberError, NodeError};
use ringkv_storage::mvcc::MvccError;
use tonic::Code;

/// Defines [`EtcdError`]'s catalog variants, their codes and their messages
/// from one list, so the three cannot drift apart.
macro_rules! catalog {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident => $code:ident, $message:literal;
    )*) => {
        /// A client-visible error: etcd's gRPC code and exact message.
        ///
        /// Every variant but [`EtcdError::InvalidEnum`],
        /// [`EtcdError::Unknown`] and the sharding refusals is an error
        /// etcd answers with: an entry of
        /// its `rpctypes` catalog, or one of the election service's two
        /// errors. Its doc line is the message.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum EtcdError {
            $(
                $(#[doc = $doc])*
                $variant,
            )*
            /// A request carried an enum value etcd's protocol does not
            /// define (a sort order, sort target, compare result or compare
            /// target). etcd lets these through (an unknown sort target
            /// crashes an etcd member); ringkv refuses them before they go
            /// further. `InvalidArgument`, ringkv's own message.
            InvalidEnum {
                /// The field, as `Message.field`, e.g. `RangeRequest.sort_target`.
                field: &'static str,
                /// The value received.
                value: i32,
                /// The largest value the protocol defines (the smallest is 0).
                max: i32,
            },
            /// An error etcd has no catalog entry for: `Unknown`, with the
            /// error's own text, as etcd answers its unmapped errors.
            Unknown {
                /// The text the client sees.
                message: String,
            },
            /// A request the shard layout does not allow (ADR 0002): a
            /// transaction whose keys live on several shards, or a request
            /// on one shard's history (Compact, HashKV) on a cluster of
            /// several; or a member drain refused. `FailedPrecondition`,
            /// with the node's message naming the shards or member and
            /// the remedy.
            ShardRefused {
                /// The text the client sees.
                message: String,
            },
            /// A read (or a watch) at a revision over several shards, whose
            /// revisions are not comparable (ADR 0002): `InvalidArgument`,
            /// [`REVISION_SPANS_SHARDS`].
            RevisionSpansShards,
            /// A request for a data shard this member holds no replica of,
            /// answered by this member itself (a call another member
            /// forwarded, which must not travel further): `Unavailable`,
            /// with the node's message naming the members that hold it, and
            /// [`NOT_HOSTED_METADATA`] in the status metadata so that the
            /// forwarding member knows the request was not applied and
            /// tries another.
            NotHosted {
                /// The shard.
                shard: ringkv_consensus::ShardId,
                /// The members holding it, as this member knows them (may
                /// be stale or empty).
                hosts: Vec<ringkv_consensus::NodeId>,
                /// The text the client sees.
                message: String,
            },
        }

        impl EtcdError {
            /// Every catalog variant (all but [`EtcdError::InvalidEnum`] and
            /// [`EtcdError::Unknown`]), in etcd's order.
            pub const CATALOG: &'static [EtcdError] = &[$(EtcdError::$variant,)*];

            /// The gRPC status code etcd answers this error with.
            pub fn code(&self) -> Code {
                match self {
                    $(EtcdError::$variant => Code::$code,)*
                    EtcdError::InvalidEnum { .. } => Code::InvalidArgument,
                    EtcdError::Unknown { .. } => Code::Unknown,
                    EtcdError::ShardRefused { .. } => Code::FailedPrecondition,
                    EtcdError::RevisionSpansShards => Code::InvalidArgument,
                    EtcdError::NotHosted { .. } => Code::Unavailable,
                }
            }

            /// The catalog message, or `None` for the two variants whose
            /// message is built from their fields.
            const fn catalog_message(&self) -> Option<&'static str> {
                match self {
                    $(EtcdError::$variant => Some($message),)*
                    EtcdError::InvalidEnum { .. }
                    | EtcdError::Unknown { .. }
                    | EtcdError::ShardRefused { .. }
                    | EtcdError::RevisionSpansShards
                    | EtcdError::NotHosted { .. } => None,
                }
            }
        }
    };
}

catalog! {
    /// `etcdserver: key is not provided`
    EmptyKey => InvalidArgument, "etcdserver: key is not provided";
    /// `etcdserver: key not found` (also: a txn operation with no request set)
    KeyNotFound => InvalidArgument, "etcdserver: key not found";
    /// `etcdserver: value is provided`
    ValueProvided => InvalidArgument, "etcdserver: value is provided";
    /// `etcdserver: lease is provided`
    LeaseProvided => InvalidArgument, "etcdserver: lease is provided";
    /// `etcdserver: too many operations in txn request`
    TooManyOps => InvalidArgument, "etcdserver: too many operations in txn request";
    /// `etcdserver: duplicate key given in txn request`
    DuplicateKey => InvalidArgument, "etcdserver: duplicate key given in txn request";
    /// `etcdserver: mvcc: required revision has been compacted`
    Compacted => OutOfRange, "etcdserver: mvcc: required revision has been compacted";
    /// `etcdserver: mvcc: required revision is a future revision`
    FutureRev => OutOfRange, "etcdserver: mvcc: required revision is a future revision";
    /// `etcdserver: mvcc: database space exceeded`
    NoSpace => ResourceExhausted, "etcdserver: mvcc: database space exceeded";

    /// `etcdserver: requested lease not found`
    LeaseNotFound => NotFound, "etcdserver: requested lease not found";
    /// `etcdserver: lease already exists`
    LeaseExist => FailedPrecondition, "etcdserver: lease already exists";
    /// `etcdserver: too large lease TTL`
    LeaseTtlTooLarge => OutOfRange, "etcdserver: too large lease TTL";

    /// `etcdserver: watch canceled` (3.6)
    WatchCanceled => Cancelled, "etcdserver: watch canceled";

    /// `etcdserver: member ID already exist`
    MemberExist => FailedPrecondition, "etcdserver: member ID already exist";
    /// `etcdserver: Peer URLs already exists`
    PeerUrlExist => FailedPrecondition, "etcdserver: Peer URLs already exists";
    /// `etcdserver: re-configuration failed due to not enough started members`
    MemberNotEnoughStarted => FailedPrecondition,
        "etcdserver: re-configuration failed due to not enough started members";
    /// `etcdserver: given member URLs are invalid`
    MemberBadUrls => InvalidArgument, "etcdserver: given member URLs are invalid";
    /// `etcdserver: member not found`
    MemberNotFound => NotFound, "etcdserver: member not found";
    /// `etcdserver: can only promote a learner member`
    MemberNotLearner => FailedPrecondition, "etcdserver: can only promote a learner member";
    /// `etcdserver: can only promote a learner member which is in sync with leader`
    LearnerNotReady => FailedPrecondition,
        "etcdserver: can only promote a learner member which is in sync with leader";
    /// `etcdserver: too many learner members in cluster`
    TooManyLearners => FailedPrecondition, "etcdserver: too many learner members in cluster";

    /// `etcdserver: request is too large`
    RequestTooLarge => InvalidArgument, "etcdserver: request is too large";
    /// `etcdserver: too many requests`
    TooManyRequests => ResourceExhausted, "etcdserver: too many requests";

    /// `etcdserver: root user does not exist`
    RootUserNotExist => FailedPrecondition, "etcdserver: root user does not exist";
    /// `etcdserver: root user does not have root role`
    RootRoleNotExist => FailedPrecondition, "etcdserver: root user does not have root role";
    /// `etcdserver: user name already exists`
    UserAlreadyExist => FailedPrecondition, "etcdserver: user name already exists";
    /// `etcdserver: user name is empty`
    UserEmpty => InvalidArgument, "etcdserver: user name is empty";
    /// `etcdserver: user name not found`
    UserNotFound => FailedPrecondition, "etcdserver: user name not found";
    /// `etcdserver: role name already exists`
    RoleAlreadyExist => FailedPrecondition, "etcdserver: role name already exists";
    /// `etcdserver: role name not found`
    RoleNotFound => FailedPrecondition, "etcdserver: role name not found";
    /// `etcdserver: role name is empty`
    RoleEmpty => InvalidArgument, "etcdserver: role name is empty";
    /// `etcdserver: authentication failed, invalid user ID or password`
    AuthFailed => InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password";
    /// `etcdserver: permission not given` (3.6)
    PermissionNotGiven => InvalidArgument, "etcdserver: permission not given";
    /// `etcdserver: permission denied`
    PermissionDenied => PermissionDenied, "etcdserver: permission denied";
    /// `etcdserver: role is not granted to the user`
    RoleNotGranted => FailedPrecondition, "etcdserver: role is not granted to the user";
    /// `etcdserver: permission is not granted to the role`
    PermissionNotGranted => FailedPrecondition,
        "etcdserver: permission is not granted to the role";
    /// `etcdserver: authentication is not enabled`
    AuthNotEnabled => FailedPrecondition, "etcdserver: authentication is not enabled";
    /// `etcdserver: invalid auth token`
    InvalidAuthToken => Unauthenticated, "etcdserver: invalid auth token";
    /// `etcdserver: invalid auth management`
    InvalidAuthMgmt => InvalidArgument, "etcdserver: invalid auth management";
    /// `etcdserver: revision of auth store is old`
    AuthOldRevision => InvalidArgument, "etcdserver: revision of auth store is old";

    /// `etcdserver: no leader`
    NoLeader => Unavailable, "etcdserver: no leader";
    /// `etcdserver: not leader`
    NotLeader => FailedPrecondition, "etcdserver: not leader";
    /// `etcdserver: leader changed`
    LeaderChanged => Unavailable, "etcdserver: leader changed";
    /// `etcdserver: not capable` (`Unavailable` as in 3.4/3.5; 3.6: `FailedPrecondition`)
    NotCapable => Unavailable, "etcdserver: not capable";
    /// `etcdserver: server stopped`
    Stopped => Unavailable, "etcdserver: server stopped";
    /// `etcdserver: request timed out`
    Timeout => Unavailable, "etcdserver: request timed out";
    /// `etcdserver: request timed out, possibly due to previous leader failure`
    TimeoutDueToLeaderFail => Unavailable,
        "etcdserver: request timed out, possibly due to previous leader failure";
    /// `etcdserver: request timed out, possibly due to connection lost`
    TimeoutDueToConnectionLost => Unavailable,
        "etcdserver: request timed out, possibly due to connection lost";
    /// `etcdserver: request timed out, waiting for the applied index took too long`
    TimeoutWaitAppliedIndex => Unavailable,
        "etcdserver: request timed out, waiting for the applied index took too long";
    /// `etcdserver: unhealthy cluster`
    Unhealthy => Unavailable, "etcdserver: unhealthy cluster";
    /// `etcdserver: corrupt cluster`
    Corrupt => DataLoss, "etcdserver: corrupt cluster";
    /// `etcdserver: rpc not supported for learner` (`Unavailable` as in
    /// 3.4/3.5; 3.6: `FailedPrecondition`)
    NotSupportedForLearner => Unavailable, "etcdserver: rpc not supported for learner";
    /// `etcdserver: bad leader transferee`
    BadLeaderTransferee => FailedPrecondition, "etcdserver: bad leader transferee";

    /// `etcdserver: cluster version not found during downgrade`
    ClusterVersionUnavailable => Unavailable,
        "etcdserver: cluster version not found during downgrade";
    /// `etcdserver: wrong downgrade target version format`
    WrongDowngradeVersionFormat => InvalidArgument,
        "etcdserver: wrong downgrade target version format";
    /// `etcdserver: invalid downgrade target version`
    InvalidDowngradeTargetVersion => InvalidArgument,
        "etcdserver: invalid downgrade target version";
    /// `etcdserver: cluster has a downgrade job in progress`
    DowngradeInProcess => FailedPrecondition, "etcdserver: cluster has a downgrade job in progress";
    /// `etcdserver: no inflight downgrade job`
    NoInflightDowngrade => FailedPrecondition, "etcdserver: no inflight downgrade job";

    /// `etcdserver: request canceled` (3.6; 3.5 lets gRPC say `context canceled`)
    Canceled => Cancelled, "etcdserver: request canceled";
    /// `etcdserver: context deadline exceeded` (3.6; 3.5 lets gRPC say
    /// `context deadline exceeded`)
    DeadlineExceeded => DeadlineExceeded, "etcdserver: context deadline exceeded";

    /// `election: no leader`: the election service's `Leader` on an election
    /// nobody campaigns in. Not in `rpctypes`: etcd's election service
    /// returns its own error unmapped, so the code is `Unknown`.
    ElectionNoLeader => Unknown, "election: no leader";
    /// `election: not leader`: `Proclaim` or `Resign` with a leader key that
    /// is no longer the leader. `Unknown`, as `ElectionNoLeader`.
    ElectionNotLeader => Unknown, "election: not leader";
}

/// The status metadata key of [`EtcdError::NotHosted`]: the shard this
/// member does not host. Its presence tells a forwarding member that the
/// request was refused before it reached any shard.
pub const NOT_HOSTED_METADATA: &str = "ringkv-not-hosted";

/// The message of [`EtcdError::RevisionSpansShards`] (ADR 0002).
pub const REVISION_SPANS_SHARDS: &str = "a revision names one shard's history; narrow the range to \
                                         one shard or use --shards 1";

impl EtcdError {
    /// The message the client sees: etcd's exactly for catalog variants.
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            EtcdError::InvalidEnum { field, value, max } => Cow::Owned(format!(
                "ringkv: {field} has no value {value} in etcd's protocol (known values: 0 to {max})"
            )),
            EtcdError::Unknown { message }
            | EtcdError::ShardRefused { message }
            | EtcdError::NotHosted { message, .. } => Cow::Owned(message.clone()),
            EtcdError::RevisionSpansShards => Cow::Borrowed(REVISION_SPANS_SHARDS),
            catalog => Cow::Borrowed(
                catalog.catalog_message().expect("every other variant is a catalog entry"),
            ),
        }
    }

    /// The gRPC status to answer with.
    pub fn to_status(&self) -> tonic::Status {
        let mut status = tonic::Status::new(self.code(), self.message());
        if let EtcdError::NotHosted { shard, .. } = self {
            status
                .metadata_mut()
                .insert(NOT_HOSTED_METADATA, tonic::metadata::MetadataValue::from(shard.0));
        }
        status
    }

    /// The catalog entry with exactly this message, as clientv3 maps a
    /// status back to a typed error; `None` for any other text.
    pub fn from_message(message: &str) -> Option<EtcdError> {
        EtcdError::CATALOG.iter().find(|e| e.catalog_message() == Some(message)).cloned()
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for EtcdError {}

impl From<EtcdError> for tonic::Status {
    fn from(e: EtcdError) -> tonic::Status {
        e.to_status()
    }
}

impl From<MvccError> for EtcdError {
    /// The store's refusals are etcd's (its `Display` strings are the
    /// catalog's); the structured details stay behind for logs.
    fn from(e: MvccError) -> EtcdError {
        match e {
            MvccError::Compacted { .. } => EtcdError::Compacted,
            MvccError::FutureRevision { .. } => EtcdError::FutureRev,
            MvccError::LeaseNotFound { .. } => EtcdError::LeaseNotFound,
            MvccError::LeaseExists { .. } => EtcdError::LeaseExist,
            MvccError::LeaseTtlTooLarge { .. } => EtcdError::LeaseTtlTooLarge,
            MvccError::DuplicateKey { .. } => EtcdError::DuplicateKey,
            MvccError::TooManyOps { .. } => EtcdError::TooManyOps,
            MvccError::KeyNotFound { .. } => EtcdError::KeyNotFound,
            MvccError::EmptyKey => EtcdError::EmptyKey,
            MvccError::ValueProvided => EtcdError::ValueProvided,
            MvccError::LeaseProvided => EtcdError::LeaseProvided,
            // A variant added to the store later: its text is etcd's too,
            // so keep it, with etcd's code for an unmapped error.
            other => EtcdError::Unknown { message: other.to_string() },
        }
    }
}

impl From<NodeError> for EtcdError {
    /// The node's client-visible errors are etcd's (its `Display` strings
    /// are the catalog's). Errors etcd has no entry for (a storage failure,
    /// a corrupt log) keep their text with etcd's code for an unmapped
    /// error, `Unknown`, as etcd answers its own unmapped errors.
    fn from(e: NodeError) -> EtcdError {
        match e {
            NodeError::NoLeader => EtcdError::NoLeader,
            NodeError::LeaderChanged => EtcdError::LeaderChanged,
            NodeError::Timeout => EtcdError::Timeout,
            NodeError::TooManyRequests { .. } => EtcdError::TooManyRequests,
            NodeError::NoSpace => EtcdError::NoSpace,
            NodeError::RequestTooLarge { .. } => EtcdError::RequestTooLarge,
            NodeError::NotLeader { .. } => EtcdError::NotLeader,
            NodeError::BadTransferee { .. } => EtcdError::BadLeaderTransferee,
            NodeError::Removed | NodeError::Stopped { .. } => EtcdError::Stopped,
            NodeError::Mvcc(e) => e.into(),
            NodeError::Member(e) => e.into(),
            NodeError::Auth(e) => e.into(),
            e @ (NodeError::SpansShards { .. }
            | NodeError::ShardRequired { .. }
            | NodeError::RemoveStrandsShard { .. }
            | NodeError::RemoveWhileMoving { .. }
            | NodeError::DrainUnknownMember { .. }
            | NodeError::DrainLearner { .. }
            | NodeError::DrainTooFewMembers { .. }
            | NodeError::DrainNeedsPlacementMoves) => {
                EtcdError::ShardRefused { message: e.to_string() }
            }
            NodeError::NotHosted { shard, hosts } => {
                let message = NodeError::NotHosted { shard, hosts: hosts.clone() }.to_string();
                EtcdError::NotHosted { shard, hosts, message }
            }
            other => EtcdError::Unknown { message: other.to_string() },
        }
    }
}

impl From<ringkv_node::AuthError> for EtcdError {
    /// etcd's auth errors (the node's `Display` strings are the catalog's).
    fn from(e: ringkv_node::AuthError) -> EtcdError {
        use ringkv_node::AuthError as A;
        match e {
            A::RootUserNotExist => EtcdError::RootUserNotExist,
            A::RootRoleNotExist => EtcdError::RootRoleNotExist,
            A::UserAlreadyExist { .. } => EtcdError::UserAlreadyExist,
            A::UserEmpty => EtcdError::UserEmpty,
            A::UserNotFound { .. } => EtcdError::UserNotFound,
            A::RoleAlreadyExist { .. } => EtcdError::RoleAlreadyExist,
            A::RoleNotFound { .. } => EtcdError::RoleNotFound,
            A::RoleEmpty => EtcdError::RoleEmpty,
            A::AuthFailed => EtcdError::AuthFailed,
            A::PermissionNotGiven => EtcdError::PermissionNotGiven,
            A::PermissionDenied => EtcdError::PermissionDenied,
            A::RoleNotGranted { .. } => EtcdError::RoleNotGranted,
            A::PermissionNotGranted { .. } => EtcdError::PermissionNotGranted,
            A::AuthNotEnabled => EtcdError::AuthNotEnabled,
            A::InvalidAuthToken => EtcdError::InvalidAuthToken,
            A::InvalidAuthMgmt => EtcdError::InvalidAuthMgmt,
            A::OldRevision { .. } => EtcdError::AuthOldRevision,
            other => EtcdError::Unknown { message: other.to_string() },
        }
    }
}

impl From<MemberError> for EtcdError {
    /// etcd's membership errors; a removed id is answered as `member not
    /// found`, as etcd's API layer maps `ErrIDRemoved`.
    fn from(e: MemberError) -> EtcdError {
        match e {
            MemberError::IdExists { .. } => EtcdError::MemberExist,
            MemberError::IdRemoved { .. } | MemberError::NotFound { .. } => {
                EtcdError::MemberNotFound
            }
            MemberError::PeerUrlExists { .. } => EtcdError::PeerUrlExist,
            MemberError::NotLearner { .. } => EtcdError::MemberNotLearner,
            MemberError::LearnerNotReady { .. } => EtcdError::LearnerNotReady,
            MemberError::TooManyLearners { .. } => EtcdError::TooManyLearners,
            MemberError::BadUrls => EtcdError::MemberBadUrls,
            other => EtcdError::Unknown { message: other.to_string() },
        }
    }
}

#[cfg(test)]
mod tests;
