use ringkv_storage::mvcc::{LeaseId, MvccError, Revision};
use tonic::Code;

use super::EtcdError;

/// etcd's catalog as etcd writes it (`rpctypes/error.go`): numeric gRPC
/// code and message. Written out independently of the `catalog!` list so
/// that a typo in either fails here.
const EXPECTED: &[(EtcdError, i32, &str)] = &[
    (EtcdError::EmptyKey, 3, "etcdserver: key is not provided"),
    (EtcdError::KeyNotFound, 3, "etcdserver: key not found"),
    (EtcdError::ValueProvided, 3, "etcdserver: value is provided"),
    (EtcdError::LeaseProvided, 3, "etcdserver: lease is provided"),
    (EtcdError::TooManyOps, 3, "etcdserver: too many operations in txn request"),
    (EtcdError::DuplicateKey, 3, "etcdserver: duplicate key given in txn request"),
    (EtcdError::Compacted, 11, "etcdserver: mvcc: required revision has been compacted"),
    (EtcdError::FutureRev, 11, "etcdserver: mvcc: required revision is a future revision"),
    (EtcdError::NoSpace, 8, "etcdserver: mvcc: database space exceeded"),
    (EtcdError::LeaseNotFound, 5, "etcdserver: requested lease not found"),
    (EtcdError::LeaseExist, 9, "etcdserver: lease already exists"),
    (EtcdError::LeaseTtlTooLarge, 11, "etcdserver: too large lease TTL"),
    (EtcdError::WatchCanceled, 1, "etcdserver: watch canceled"),
    (EtcdError::MemberExist, 9, "etcdserver: member ID already exist"),
    (EtcdError::PeerUrlExist, 9, "etcdserver: Peer URLs already exists"),
    (
        EtcdError::MemberNotEnoughStarted,
        9,
        "etcdserver: re-configuration failed due to not enough started members",
    ),
    (EtcdError::MemberBadUrls, 3, "etcdserver: given member URLs are invalid"),
    (EtcdError::MemberNotFound, 5, "etcdserver: member not found"),
    (EtcdError::MemberNotLearner, 9, "etcdserver: can only promote a learner member"),
    (
        EtcdError::LearnerNotReady,
        9,
        "etcdserver: can only promote a learner member which is in sync with leader",
    ),
    (EtcdError::TooManyLearners, 9, "etcdserver: too many learner members in cluster"),
    (EtcdError::RequestTooLarge, 3, "etcdserver: request is too large"),
    (EtcdError::TooManyRequests, 8, "etcdserver: too many requests"),
    (EtcdError::RootUserNotExist, 9, "etcdserver: root user does not exist"),
    (EtcdError::RootRoleNotExist, 9, "etcdserver: root user does not have root role"),
    (EtcdError::UserAlreadyExist, 9, "etcdserver: user name already exists"),
    (EtcdError::UserEmpty, 3, "etcdserver: user name is empty"),
    (EtcdError::UserNotFound, 9, "etcdserver: user name not found"),
    (EtcdError::RoleAlreadyExist, 9, "etcdserver: role name already exists"),
    (EtcdError::RoleNotFound, 9, "etcdserver: role name not found"),
    (EtcdError::RoleEmpty, 3, "etcdserver: role name is empty"),
    (EtcdError::AuthFailed, 3, "etcdserver: authentication failed, invalid user ID or password"),
    (EtcdError::PermissionNotGiven, 3, "etcdserver: permission not given"),
    (EtcdError::PermissionDenied, 7, "etcdserver: permission denied"),
    (EtcdError::RoleNotGranted, 9, "etcdserver: role is not granted to the user"),
    (EtcdError::PermissionNotGranted, 9, "etcdserver: permission is not granted to the role"),
    (EtcdError::AuthNotEnabled, 9, "etcdserver: authentication is not enabled"),
    (EtcdError::InvalidAuthToken, 16, "etcdserver: invalid auth token"),
    (EtcdError::InvalidAuthMgmt, 3, "etcdserver: invalid auth management"),
    (EtcdError::AuthOldRevision, 3, "etcdserver: revision of auth store is old"),
    (EtcdError::NoLeader, 14, "etcdserver: no leader"),
    (EtcdError::NotLeader, 9, "etcdserver: not leader"),
    (EtcdError::LeaderChanged, 14, "etcdserver: leader changed"),
    (EtcdError::NotCapable, 14, "etcdserver: not capable"),
    (EtcdError::Stopped, 14, "etcdserver: server stopped"),
    (EtcdError::Timeout, 14, "etcdserver: request timed out"),
    (
        EtcdError::TimeoutDueToLeaderFail,
        14,
        "etcdserver: request timed out, possibly due to previous leader failure",
    ),
    (
        EtcdError::TimeoutDueToConnectionLost,
        14,
        "etcdserver: request timed out, possibly due to connection lost",
    ),
    (
        EtcdError::TimeoutWaitAppliedIndex,
        14,
        "etcdserver: request timed out, waiting for the applied index took too long",
    ),
    (EtcdError::Unhealthy, 14, "etcdserver: unhealthy cluster"),
    (EtcdError::Corrupt, 15, "etcdserver: corrupt cluster"),
    (EtcdError::NotSupportedForLearner, 14, "etcdserver: rpc not supported for learner"),
    (EtcdError::BadLeaderTransferee, 9, "etcdserver: bad leader transferee"),
    (
        EtcdError::ClusterVersionUnavailable,
        14,
        "etcdserver: cluster version not found during downgrade",
    ),
    (
        EtcdError::WrongDowngradeVersionFormat,
        3,
        "etcdserver: wrong downgrade target version format",
    ),
    (EtcdError::InvalidDowngradeTargetVersion, 3, "etcdserver: invalid downgrade target version"),
    (EtcdError::DowngradeInProcess, 9, "etcdserver: cluster has a downgrade job in progress"),
    (EtcdError::NoInflightDowngrade, 9, "etcdserver: no inflight downgrade job"),
    (EtcdError::Canceled, 1, "etcdserver: request canceled"),
    (EtcdError::DeadlineExceeded, 4, "etcdserver: context deadline exceeded"),
    (EtcdError::ElectionNoLeader, 2, "election: no leader"),
    (EtcdError::ElectionNotLeader, 2, "election: not leader"),
];

/// Fails to compile when a variant is added without a row in [`EXPECTED`]
/// (and this match): the catalog test would otherwise silently skip it.
fn covered(e: &EtcdError) -> bool {
    match e {
        EtcdError::EmptyKey
        | EtcdError::KeyNotFound
        | EtcdError::ValueProvided
        | EtcdError::LeaseProvided
        | EtcdError::TooManyOps
        | EtcdError::DuplicateKey
        | EtcdError::Compacted
        | EtcdError::FutureRev
        | EtcdError::NoSpace
        | EtcdError::LeaseNotFound
        | EtcdError::LeaseExist
        | EtcdError::LeaseTtlTooLarge
        | EtcdError::WatchCanceled
        | EtcdError::MemberExist
        | EtcdError::PeerUrlExist
        | EtcdError::MemberNotEnoughStarted
        | EtcdError::MemberBadUrls
        | EtcdError::MemberNotFound
        | EtcdError::MemberNotLearner
        | EtcdError::LearnerNotReady
        | EtcdError::TooManyLearners
        | EtcdError::RequestTooLarge
        | EtcdError::TooManyRequests
        | EtcdError::RootUserNotExist
        | EtcdError::RootRoleNotExist
        | EtcdError::UserAlreadyExist
        | EtcdError::UserEmpty
        | EtcdError::UserNotFound
        | EtcdError::RoleAlreadyExist
        | EtcdError::RoleNotFound
        | EtcdError::RoleEmpty
        | EtcdError::AuthFailed
        | EtcdError::PermissionNotGiven
        | EtcdError::PermissionDenied
        | EtcdError::RoleNotGranted
        | EtcdError::PermissionNotGranted
        | EtcdError::AuthNotEnabled
        | EtcdError::InvalidAuthToken
        | EtcdError::InvalidAuthMgmt
        | EtcdError::AuthOldRevision
        | EtcdError::NoLeader
        | EtcdError::NotLeader
        | EtcdError::LeaderChanged
        | EtcdError::NotCapable
        | EtcdError::Stopped
        | EtcdError::Timeout
        | EtcdError::TimeoutDueToLeaderFail
        | EtcdError::TimeoutDueToConnectionLost
        | EtcdError::TimeoutWaitAppliedIndex
        | EtcdError::Unhealthy
        | EtcdError::Corrupt
        | EtcdError::NotSupportedForLearner
        | EtcdError::BadLeaderTransferee
        | EtcdError::ClusterVersionUnavailable
        | EtcdError::WrongDowngradeVersionFormat
        | EtcdError::InvalidDowngradeTargetVersion
        | EtcdError::DowngradeInProcess
        | EtcdError::NoInflightDowngrade
        | EtcdError::Canceled
        | EtcdError::DeadlineExceeded
        | EtcdError::ElectionNoLeader
        | EtcdError::ElectionNotLeader => true,
        EtcdError::InvalidEnum { .. }
        | EtcdError::Unknown { .. }
        | EtcdError::ShardRefused { .. }
        | EtcdError::RevisionSpansShards
        | EtcdError::NotHosted { .. } => false,
    }
}

#[test]
fn the_sharding_refusals_have_the_adr_codes_and_messages() {
    let message = "etcdserver: txn spans shards 2 and 5; keys of one txn must share a hash key \
                   (use {tag} in the key)";
    let spans = EtcdError::ShardRefused { message: message.to_owned() };
    let status = spans.to_status();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message(), message);
    let revision = EtcdError::RevisionSpansShards.to_status();
    assert_eq!(revision.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        revision.message(),
        "a revision names one shard's history; narrow the range to one shard or use --shards 1"
    );
    // Neither is a catalog entry a client would map back.
    assert_eq!(EtcdError::from_message(message), None);
}

#[test]
fn the_nodes_shard_refusals_reach_the_client_with_its_message() {
    use ringkv_consensus::ShardId;
    use ringkv_node::{NodeError, SpanningRequest};
    let spans = NodeError::SpansShards {
        request: SpanningRequest::Txn,
        shards: vec![ShardId(2), ShardId(5)],
    };
    let status = EtcdError::from(spans).to_status();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "etcdserver: txn spans shards 2 and 5; keys of one txn must share a hash key (use {tag} \
         in the key)"
    );
    let required = NodeError::ShardRequired { request: "compact", shard_count: 64 };
    let text = required.to_string();
    let status = EtcdError::from(required).to_status();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message(), text);
}

#[test]
fn every_catalog_entry_has_etcds_code_and_message() {
    for (error, code, message) in EXPECTED {
        assert_eq!(error.code() as i32, *code, "code of {error:?}");
        assert_eq!(error.message(), *message, "message of {error:?}");
        assert_eq!(error.to_string(), *message, "Display of {error:?}");
        let status = error.to_status();
        assert_eq!(status.code() as i32, *code, "status code of {error:?}");
        assert_eq!(status.message(), *message, "status message of {error:?}");
        assert_eq!(EtcdError::from_message(message).as_ref(), Some(error), "from_message");
    }
}

#[test]
fn the_catalog_and_the_expected_table_list_the_same_errors() {
    let expected: Vec<&EtcdError> = EXPECTED.iter().map(|(e, _, _)| e).collect();
    let catalog: Vec<&EtcdError> = EtcdError::CATALOG.iter().collect();
    assert_eq!(catalog, expected);
    assert!(EtcdError::CATALOG.iter().all(covered));
}

#[test]
fn messages_are_unique_so_clients_can_map_them_back() {
    let mut messages: Vec<_> = EtcdError::CATALOG.iter().map(EtcdError::message).collect();
    messages.sort();
    let count = messages.len();
    messages.dedup();
    assert_eq!(messages.len(), count);
}

#[test]
fn non_catalog_errors() {
    let e = EtcdError::InvalidEnum { field: "RangeRequest.sort_target", value: 9, max: 4 };
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "ringkv: RangeRequest.sort_target has no value 9 in etcd's protocol (known values: 0 to 4)"
    );
    assert!(!covered(&e));
    let e = EtcdError::Unknown { message: "something broke".into() };
    assert_eq!(e.to_status().code(), Code::Unknown);
    assert_eq!(e.to_status().message(), "something broke");
    assert_eq!(EtcdError::from_message("something broke"), None);
}

#[test]
fn mvcc_errors_map_to_the_entry_with_the_same_text() {
    let cases = [
        (
            MvccError::Compacted { requested: Revision(1), compacted: Revision(5) },
            EtcdError::Compacted,
        ),
        (
            MvccError::FutureRevision { requested: Revision(9), current: Revision(5) },
            EtcdError::FutureRev,
        ),
        (MvccError::LeaseNotFound { lease: LeaseId(7) }, EtcdError::LeaseNotFound),
        (MvccError::LeaseExists { lease: LeaseId(7) }, EtcdError::LeaseExist),
        (MvccError::LeaseTtlTooLarge { ttl: 1 << 40 }, EtcdError::LeaseTtlTooLarge),
        (MvccError::DuplicateKey { key: "k".into() }, EtcdError::DuplicateKey),
        (MvccError::TooManyOps { count: 129, max: 128 }, EtcdError::TooManyOps),
        (MvccError::KeyNotFound { key: "k".into() }, EtcdError::KeyNotFound),
        (MvccError::EmptyKey, EtcdError::EmptyKey),
        (MvccError::ValueProvided, EtcdError::ValueProvided),
        (MvccError::LeaseProvided, EtcdError::LeaseProvided),
    ];
    for (mvcc, etcd) in cases {
        let text = mvcc.to_string();
        let mapped = EtcdError::from(mvcc);
        assert_eq!(mapped, etcd);
        assert_eq!(mapped.message(), text, "the store and the API agree on the text");
    }
}

#[test]
fn node_errors_map_to_the_entry_with_the_same_text_and_code() {
    use ringkv_consensus::NodeId;
    use ringkv_node::{ErrorClass, MemberError, NodeError};
    let cases = [
        (NodeError::NoLeader, EtcdError::NoLeader),
        (NodeError::LeaderChanged, EtcdError::LeaderChanged),
        (NodeError::Timeout, EtcdError::Timeout),
        (NodeError::TooManyRequests { pending: 9, limit: 8 }, EtcdError::TooManyRequests),
        (NodeError::NoSpace, EtcdError::NoSpace),
        (NodeError::RequestTooLarge { bytes: 9, limit: 8 }, EtcdError::RequestTooLarge),
        (NodeError::NotLeader { leader: None }, EtcdError::NotLeader),
        (NodeError::BadTransferee { target: NodeId(3) }, EtcdError::BadLeaderTransferee),
        (NodeError::Removed, EtcdError::Stopped),
        (NodeError::Stopped { reason: "disk".into() }, EtcdError::Stopped),
        (NodeError::Mvcc(MvccError::EmptyKey), EtcdError::EmptyKey),
        (MemberError::IdExists { id: NodeId(1) }.into(), EtcdError::MemberExist),
        (MemberError::PeerUrlExists { url: "u".into() }.into(), EtcdError::PeerUrlExist),
        (MemberError::NotFound { id: NodeId(1) }.into(), EtcdError::MemberNotFound),
        (MemberError::NotLearner { id: NodeId(1) }.into(), EtcdError::MemberNotLearner),
        (
            MemberError::LearnerNotReady { id: NodeId(1), matched: 1, leader_index: 9 }.into(),
            EtcdError::LearnerNotReady,
        ),
        (MemberError::TooManyLearners { max: 1 }.into(), EtcdError::TooManyLearners),
        (MemberError::BadUrls.into(), EtcdError::MemberBadUrls),
    ];
    use ringkv_node::AuthError as A;
    let auth: Vec<(NodeError, EtcdError)> = [
        (A::RootUserNotExist, EtcdError::RootUserNotExist),
        (A::RootRoleNotExist, EtcdError::RootRoleNotExist),
        (A::UserAlreadyExist { name: "u".into() }, EtcdError::UserAlreadyExist),
        (A::UserEmpty, EtcdError::UserEmpty),
        (A::UserNotFound { name: "u".into() }, EtcdError::UserNotFound),
        (A::RoleAlreadyExist { name: "r".into() }, EtcdError::RoleAlreadyExist),
        (A::RoleNotFound { name: "r".into() }, EtcdError::RoleNotFound),
        (A::RoleEmpty, EtcdError::RoleEmpty),
        (A::AuthFailed, EtcdError::AuthFailed),
        (A::PermissionNotGiven, EtcdError::PermissionNotGiven),
        (A::PermissionDenied, EtcdError::PermissionDenied),
        (A::RoleNotGranted { user: "u".into(), role: "r".into() }, EtcdError::RoleNotGranted),
        (A::PermissionNotGranted { role: "r".into() }, EtcdError::PermissionNotGranted),
        (A::AuthNotEnabled, EtcdError::AuthNotEnabled),
        (A::InvalidAuthToken, EtcdError::InvalidAuthToken),
        (A::InvalidAuthMgmt, EtcdError::InvalidAuthMgmt),
        (A::OldRevision { request: 1, store: 2 }, EtcdError::AuthOldRevision),
    ]
    .into_iter()
    .map(|(a, e)| (NodeError::from(a), e))
    .collect();
    let cases = cases.into_iter().chain(auth);
    for (node, etcd) in cases {
        let text = node.etcd_message();
        let class = node.class();
        let mapped = EtcdError::from(node);
        assert_eq!(mapped, etcd);
        assert_eq!(mapped.message(), text, "the node and the API agree on the text");
        let code = match class {
            ErrorClass::InvalidArgument => Code::InvalidArgument,
            ErrorClass::NotFound => Code::NotFound,
            ErrorClass::FailedPrecondition => Code::FailedPrecondition,
            ErrorClass::ResourceExhausted => Code::ResourceExhausted,
            ErrorClass::OutOfRange => Code::OutOfRange,
            ErrorClass::Unavailable => Code::Unavailable,
            ErrorClass::Internal => Code::Internal,
            ErrorClass::PermissionDenied => Code::PermissionDenied,
            ErrorClass::Unauthenticated => Code::Unauthenticated,
        };
        assert_eq!(mapped.code(), code, "{mapped:?}: the node and the API agree on the code");
    }
    // A removed id is answered as etcd answers it, not with the node's text.
    let removed = EtcdError::from(NodeError::from(MemberError::IdRemoved { id: NodeId(1) }));
    assert_eq!(removed, EtcdError::MemberNotFound);
    // Failures etcd has no entry for keep their text, code Unknown.
    let corrupt = NodeError::Corrupt { shard: ringkv_consensus::ShardId(1), what: "x".into() };
    let text = corrupt.to_string();
    let mapped = EtcdError::from(corrupt);
    assert_eq!((mapped.code(), mapped.message().into_owned()), (Code::Unknown, text));
}
