//! Wire compatibility with etcd: messages encode to the exact bytes etcd's
//! Go code produces, and bytes as etcd sends them decode to the right values.
//!
//! Every expected byte string is worked out by hand from etcd's field
//! numbers and types (shared/reference/etcd-v3-api.md) and the protobuf
//! encoding rules: a tag is `field_number << 3 | wire_type` as a varint
//! (wire type 0 = varint, 2 = length-delimited), proto3 omits fields at their
//! zero value, and fields go out in field-number order (as Go's encoder
//! writes them). The large varints were computed with a separate
//! seven-bits-per-byte encoder, not with prost.

use prost::Message;
use ringkv_api::authpb::{Permission, permission};
use ringkv_api::etcdserverpb;
use ringkv_api::etcdserverpb::{
    AlarmRequest, AuthRoleGrantPermissionRequest, Compare, DeleteRangeRequest, HashKvResponse,
    LeaseGrantRequest, LeaseKeepAliveResponse, Member, MemberListResponse, PutRequest,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, SnapshotResponse, StatusResponse,
    TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse, alarm_request, compare,
    range_request, request_op, watch_create_request, watch_request,
};
use ringkv_api::mvccpb::{Event, KeyValue, event};
use ringkv_api::v3electionpb::{LeaderKey, ProclaimRequest};
use ringkv_api::v3lockpb::LockRequest;

/// etcd's default cluster ID for a single member named "default".
const CLUSTER_ID: u64 = 14_841_639_068_965_178_418;
/// Its varint encoding.
const CLUSTER_ID_VARINT: [u8; 10] = [0xb2, 0x98, 0xea, 0xf1, 0x94, 0x83, 0x86, 0xfc, 0xcd, 0x01];
/// A member ID with the top bit set (uint64 above i64::MAX).
const MEMBER_ID: u64 = 10_276_657_743_932_975_437;
/// Its varint encoding.
const MEMBER_ID_VARINT: [u8; 10] = [0xcd, 0xd2, 0x91, 0x8b, 0xd2, 0xb8, 0x81, 0xcf, 0x8e, 0x01];
/// A lease ID as etcd's lessor hands them out.
const LEASE_ID: i64 = 7_587_862_072_907_401_989;
/// Its varint encoding.
const LEASE_ID_VARINT: [u8; 9] = [0x85, 0x96, 0xb8, 0xa2, 0xa6, 0x8b, 0xe0, 0xa6, 0x69];
/// -1 as an int64 varint: sign-extended to 64 bits, so ten bytes.
const MINUS_ONE_VARINT: [u8; 10] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Encodes `message`, checks the bytes, and checks they decode back to it.
fn assert_encodes<M: Message + Default + PartialEq + std::fmt::Debug>(
    message: &M,
    expected: &[u8],
) {
    let bytes = message.encode_to_vec();
    assert_eq!(bytes, expected, "encoding of {message:?}");
    assert_eq!(&M::decode(expected).expect("decodes"), message, "decoding of {expected:02x?}");
}

#[test]
fn put_request() {
    let put = PutRequest {
        key: b"foo".to_vec(),
        value: b"bar".to_vec(),
        lease: 5,
        prev_kv: true,
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x03, b'f', b'o', b'o', // 1 key: bytes
        0x12, 0x03, b'b', b'a', b'r', // 2 value: bytes
        0x18, 0x05,                   // 3 lease: int64
        0x20, 0x01,                   // 4 prev_kv: bool
    ];
    assert_encodes(&put, &expected);

    let ignore = PutRequest {
        key: b"k".to_vec(),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    };
    assert_encodes(&ignore, &[0x0a, 0x01, b'k', 0x28, 0x01, 0x30, 0x01]);
}

#[test]
fn range_request_every_field() {
    let range = RangeRequest {
        key: b"a".to_vec(),
        range_end: vec![0],
        limit: 10,
        revision: 7,
        sort_order: range_request::SortOrder::Descend.into(),
        sort_target: range_request::SortTarget::Mod.into(),
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x01, b'a', // 1 key
        0x12, 0x01, 0x00, // 2 range_end "\0"
        0x18, 0x0a,       // 3 limit 10
        0x20, 0x07,       // 4 revision 7
        0x28, 0x02,       // 5 sort_order DESCEND
        0x30, 0x03,       // 6 sort_target MOD
        0x38, 0x01,       // 7 serializable
        0x40, 0x01,       // 8 keys_only
        0x48, 0x01,       // 9 count_only
        0x50, 0x01,       // 10 min_mod_revision
        0x58, 0x02,       // 11 max_mod_revision
        0x60, 0x03,       // 12 min_create_revision
        0x68, 0x04,       // 13 max_create_revision
    ];
    assert_encodes(&range, &expected);
}

#[test]
fn delete_range_request() {
    let delete = DeleteRangeRequest { key: b"a".to_vec(), range_end: b"b".to_vec(), prev_kv: true };
    assert_encodes(&delete, &[0x0a, 0x01, b'a', 0x12, 0x01, b'b', 0x18, 0x01]);
}

#[test]
fn compare_with_far_range_end_tag() {
    let cmp = Compare {
        result: compare::CompareResult::NotEqual.into(),
        target: compare::CompareTarget::Lease.into(),
        key: b"k".to_vec(),
        target_union: Some(compare::TargetUnion::Lease(9)),
        range_end: b"z".to_vec(),
    };
    #[rustfmt::skip]
    let expected = [
        0x08, 0x03,             // 1 result NOT_EQUAL
        0x10, 0x04,             // 2 target LEASE
        0x1a, 0x01, b'k',       // 3 key
        0x40, 0x09,             // 8 lease (oneof target_union)
        0x82, 0x04, 0x01, b'z', // 64 range_end: tag 64 << 3 | 2 = 514 = varint 0x82 0x04
    ];
    assert_encodes(&cmp, &expected);
}

#[test]
fn txn_request_with_zero_oneof_and_nested_ops() {
    // Kubernetes' create: If(ModRevision(key) == 0) Then(Put) Else(Get).
    // A oneof member set to zero is still sent (0x30 0x00); a server must
    // also read an absent target_union as 0.
    let txn = TxnRequest {
        compare: vec![Compare {
            target: compare::CompareTarget::Mod.into(),
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![
            RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                })),
            },
            RequestOp { request: Some(request_op::Request::RequestTxn(TxnRequest::default())) },
        ],
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x07,                         // 1 compare, 7 bytes
        0x10, 0x02,                         //   2 target MOD (result EQUAL = 0 omitted)
        0x1a, 0x01, b'k',                   //   3 key
        0x30, 0x00,                         //   6 mod_revision 0 (oneof: sent although zero)
        0x12, 0x08,                         // 2 success[0], 8 bytes
        0x12, 0x06,                         //   2 request_put, 6 bytes
        0x0a, 0x01, b'k', 0x12, 0x01, b'v', //     key, value
        0x1a, 0x05,                         // 3 failure[0], 5 bytes
        0x0a, 0x03, 0x0a, 0x01, b'k',       //   1 request_range { key }
        0x1a, 0x02,                         // 3 failure[1], 2 bytes
        0x22, 0x00,                         //   4 request_txn {} (empty, but present)
    ];
    assert_encodes(&txn, &expected);
}

#[test]
fn watch_create_request_packs_filters() {
    let watch = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision: 100,
            progress_notify: true,
            filters: vec![
                watch_create_request::FilterType::Noput.into(),
                watch_create_request::FilterType::Nodelete.into(),
            ],
            prev_kv: true,
            watch_id: 3,
            fragment: true,
        })),
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x14,             // 1 create_request, 20 bytes
        0x0a, 0x01, b'k',       //   1 key
        0x12, 0x01, b'l',       //   2 range_end
        0x18, 0x64,             //   3 start_revision 100
        0x20, 0x01,             //   4 progress_notify
        0x2a, 0x02, 0x00, 0x01, //   5 filters, packed: NOPUT, NODELETE
        0x30, 0x01,             //   6 prev_kv
        0x38, 0x03,             //   7 watch_id 3
        0x40, 0x01,             //   8 fragment
    ];
    assert_encodes(&watch, &expected);

    // The same request with filters unpacked (one tag per value, wire type
    // 0), as an older encoder may send: must decode identically.
    #[rustfmt::skip]
    let unpacked = [
        0x0a, 0x14,             // 1 create_request, still 20 bytes
        0x0a, 0x01, b'k', 0x12, 0x01, b'l', 0x18, 0x64, 0x20, 0x01,
        0x28, 0x00, 0x28, 0x01, // 5 filters, unpacked
        0x30, 0x01, 0x38, 0x03, 0x40, 0x01,
    ];
    assert_eq!(WatchRequest::decode(&unpacked[..]).expect("decodes"), watch);

    let cancel = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(
            etcdserverpb::WatchCancelRequest { watch_id: 3 },
        )),
    };
    assert_encodes(&cancel, &[0x12, 0x02, 0x08, 0x03]);
    let progress = WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(
            etcdserverpb::WatchProgressRequest {},
        )),
    };
    assert_encodes(&progress, &[0x1a, 0x00]);
}

#[test]
fn decodes_etcd_range_response() {
    // What etcd answers to `get foo` after `put foo bar` on a fresh member.
    #[rustfmt::skip]
    let bytes = concat(&[
        &[0x0a, 0x1a],                       // 1 header, 26 bytes
        &[0x08], &CLUSTER_ID_VARINT,         //   1 cluster_id
        &[0x10], &MEMBER_ID_VARINT,          //   2 member_id
        &[0x18, 0x02],                       //   3 revision 2
        &[0x20, 0x03],                       //   4 raft_term 3
        &[0x12, 0x10],                       // 2 kvs[0], 16 bytes
        &[0x0a, 0x03, b'f', b'o', b'o'],     //   1 key
        &[0x10, 0x02],                       //   2 create_revision
        &[0x18, 0x02],                       //   3 mod_revision
        &[0x20, 0x01],                       //   4 version
        &[0x2a, 0x03, b'b', b'a', b'r'],     //   5 value
        &[0x20, 0x01],                       // 4 count 1
    ]);
    let expected = RangeResponse {
        header: Some(ResponseHeader {
            cluster_id: CLUSTER_ID,
            member_id: MEMBER_ID,
            revision: 2,
            raft_term: 3,
        }),
        kvs: vec![KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: b"bar".to_vec(),
            lease: 0,
        }],
        more: false,
        count: 1,
    };
    assert_encodes(&expected, &bytes);
}

#[test]
fn decodes_etcd_watch_responses() {
    // Events for a delete of "k" at revision 5 and its re-creation at 6.
    #[rustfmt::skip]
    let events = [
        0x0a, 0x02, 0x18, 0x05,             // 1 header { revision 5 }
        0x10, 0x01,                         // 2 watch_id 1
        0x5a, 0x09,                         // 11 events[0], 9 bytes: tag 11 << 3 | 2 = 0x5a
        0x08, 0x01,                         //   1 type DELETE
        0x12, 0x05,                         //   2 kv, 5 bytes
        0x0a, 0x01, b'k', 0x18, 0x05,       //     key, mod_revision 5
        0x5a, 0x0e,                         // 11 events[1], 14 bytes (type PUT = 0 omitted)
        0x12, 0x0c,                         //   2 kv, 12 bytes
        0x0a, 0x01, b'k', 0x10, 0x06, 0x18, 0x06, 0x20, 0x01, 0x2a, 0x01, b'v',
    ];
    let expected = WatchResponse {
        header: Some(ResponseHeader { revision: 5, ..Default::default() }),
        watch_id: 1,
        events: vec![
            Event {
                r#type: event::EventType::Delete.into(),
                kv: Some(KeyValue { key: b"k".to_vec(), mod_revision: 5, ..Default::default() }),
                prev_kv: None,
            },
            Event {
                r#type: event::EventType::Put.into(),
                kv: Some(KeyValue {
                    key: b"k".to_vec(),
                    create_revision: 6,
                    mod_revision: 6,
                    version: 1,
                    value: b"v".to_vec(),
                    lease: 0,
                }),
                prev_kv: None,
            },
        ],
        ..Default::default()
    };
    assert_encodes(&expected, &events);

    // A progress response (watch_id -1) and a compacted watcher.
    let progress = concat(&[&[0x0a, 0x02, 0x18, 0x09, 0x10], &MINUS_ONE_VARINT]);
    assert_encodes(
        &WatchResponse {
            header: Some(ResponseHeader { revision: 9, ..Default::default() }),
            watch_id: -1,
            ..Default::default()
        },
        &progress,
    );
    #[rustfmt::skip]
    let compacted = [
        0x10, 0x02, 0x20, 0x01, 0x28, 0x04, // watch_id 2, canceled, compact_revision 4
        0x32, 0x03, b'c', b'm', b'p',       // 6 cancel_reason
    ];
    assert_encodes(
        &WatchResponse {
            watch_id: 2,
            canceled: true,
            compact_revision: 4,
            cancel_reason: "cmp".into(),
            ..Default::default()
        },
        &compacted,
    );
}

#[test]
fn lease_messages() {
    let grant = LeaseGrantRequest { ttl: 60, id: LEASE_ID };
    assert_encodes(&grant, &concat(&[&[0x08, 0x3c, 0x10], &LEASE_ID_VARINT]));

    let keep_alive = LeaseKeepAliveResponse {
        header: Some(ResponseHeader { raft_term: 2, ..Default::default() }),
        id: LEASE_ID,
        ttl: 0,
    };
    // TTL 0 (lease not found) is the zero value, so it is absent.
    assert_encodes(&keep_alive, &concat(&[&[0x0a, 0x02, 0x20, 0x02, 0x10], &LEASE_ID_VARINT]));
}

#[test]
fn decodes_etcd_member_list() {
    #[rustfmt::skip]
    let bytes = concat(&[
        &[0x12, 0x24],                   // 2 members[0], 36 bytes
        &[0x08], &MEMBER_ID_VARINT,      //   1 ID
        &[0x12, 0x01, b'n'],             //   2 name
        &[0x1a, 0x08], b"http://p",      //   3 peerURLs[0]
        &[0x22, 0x08], b"http://c",      //   4 clientURLs[0]
        &[0x28, 0x01],                   //   5 isLearner
    ]);
    let expected = MemberListResponse {
        header: None,
        members: vec![Member {
            id: MEMBER_ID,
            name: "n".into(),
            peer_urls: vec!["http://p".into()],
            client_urls: vec!["http://c".into()],
            is_learner: true,
        }],
    };
    assert_encodes(&expected, &bytes);
}

#[test]
fn maintenance_messages() {
    let status = StatusResponse {
        header: None,
        version: "3.5.13".into(),
        db_size: 20,
        leader: 1,
        raft_index: 2,
        raft_term: 3,
        raft_applied_index: 4,
        errors: vec!["e".into()],
        db_size_in_use: 5,
        is_learner: true,
    };
    #[rustfmt::skip]
    let expected = concat(&[
        &[0x12, 0x06], b"3.5.13", // 2 version
        &[0x18, 0x14],            // 3 dbSize 20
        &[0x20, 0x01],            // 4 leader
        &[0x28, 0x02],            // 5 raftIndex
        &[0x30, 0x03],            // 6 raftTerm
        &[0x38, 0x04],            // 7 raftAppliedIndex
        &[0x42, 0x01, b'e'],      // 8 errors[0]
        &[0x48, 0x05],            // 9 dbSizeInUse
        &[0x50, 0x01],            // 10 isLearner
    ]);
    assert_encodes(&status, &expected);

    let alarm = AlarmRequest {
        action: alarm_request::AlarmAction::Deactivate.into(),
        member_id: 7,
        alarm: etcdserverpb::AlarmType::Nospace.into(),
    };
    assert_encodes(&alarm, &[0x08, 0x02, 0x10, 0x07, 0x18, 0x01]);

    let hash = HashKvResponse { header: None, hash: u32::MAX, compact_revision: 3 };
    assert_encodes(&hash, &[0x10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x18, 0x03]);

    let chunk = SnapshotResponse { header: None, remaining_bytes: 300, blob: b"xy".to_vec() };
    assert_encodes(&chunk, &[0x10, 0xac, 0x02, 0x1a, 0x02, b'x', b'y']);
}

#[test]
fn auth_lock_and_election_messages() {
    let grant = AuthRoleGrantPermissionRequest {
        name: "r".into(),
        perm: Some(Permission {
            perm_type: permission::Type::Readwrite.into(),
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        }),
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x01, b'r',                              // 1 name
        0x12, 0x08,                                    // 2 perm, 8 bytes
        0x08, 0x02, 0x12, 0x01, b'a', 0x1a, 0x01, b'b', //   permType READWRITE, key, range_end
    ];
    assert_encodes(&grant, &expected);

    assert_encodes(&LockRequest { name: b"l".to_vec(), lease: 1 }, &[0x0a, 0x01, b'l', 0x10, 0x01]);

    let proclaim = ProclaimRequest {
        leader: Some(LeaderKey { name: b"e".to_vec(), key: b"e/1".to_vec(), rev: 5, lease: 9 }),
        value: b"v".to_vec(),
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x0c,                                  // 1 leader, 12 bytes
        0x0a, 0x01, b'e',                            //   1 name
        0x12, 0x03, b'e', b'/', b'1',                //   2 key
        0x18, 0x05, 0x20, 0x09,                      //   3 rev, 4 lease
        0x12, 0x01, b'v',                            // 2 value
    ];
    assert_encodes(&proclaim, &expected);
}

#[test]
fn unknown_fields_from_newer_etcd_are_skipped() {
    // etcd 3.6 adds HashKVResponse.hash_revision (field 4) and
    // SnapshotResponse.version (field 4); a 3.5 decoder must skip them.
    let hash = HashKvResponse::decode(&[0x10, 0x07, 0x20, 0x09][..]).expect("decodes");
    assert_eq!(hash, HashKvResponse { header: None, hash: 7, compact_revision: 0 });
    let chunk = SnapshotResponse::decode(&[0x22, 0x03, b'3', b'.', b'6'][..]).expect("decodes");
    assert_eq!(chunk, SnapshotResponse::default());
}

#[test]
fn member_url_fields_have_readable_rust_names() {
    // build.rs renames prost's `peer_ur_ls`/`client_ur_ls`; this stops
    // compiling if the rename stops applying.
    let add = etcdserverpb::MemberAddRequest { peer_urls: vec!["a".into()], is_learner: false };
    assert_eq!(add.encode_to_vec(), [0x0a, 0x01, b'a']);
    let member = Member { client_urls: vec!["b".into()], ..Default::default() };
    assert_eq!(member.encode_to_vec(), [0x22, 0x01, b'b']);
}
