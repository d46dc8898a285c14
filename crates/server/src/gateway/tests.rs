//! Golden tests of the gateway's JSON. The expected bodies are what etcd
//! 3.4.23's gateway sent for the same messages (captured by hand with curl
//! against a local etcd; `tests/gateway_etcd.rs` repeats the comparison
//! live), or follow from its rules where etcd was not asked.

use std::collections::HashSet;

use bytes::Bytes;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, Value};
use ringkv_api::etcdserverpb::{
    self as pb, compare::TargetUnion, request_op::Request, watch_request::RequestUnion,
};
use ringkv_api::{mvccpb, v3electionpb as election};
use ringkv_storage::mvcc::{self, EventKind, LeaseId, Revision};
use tonic::Code;

use super::*;
use crate::api::EtcdError;
use crate::api::convert::{HeaderInfo, to_pb};

/// The ids of the etcd member the goldens were captured from.
const ETCD: HeaderInfo = HeaderInfo {
    cluster_id: 15_118_495_548_433_857_066,
    member_id: 13_668_033_151_171_901_709,
    raft_term: 2,
};

/// `ETCD`'s header as etcd prints it, at `revision`.
fn header_json(revision: i64) -> String {
    format!(
        r#"{{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"{revision}","raft_term":"2"}}"#
    )
}

fn decode(rpc: Rpc, json: &str) -> GatewayRequest {
    decode_request(rpc, json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn encode(response: GatewayResponse) -> String {
    String::from_utf8(encode_response(&response).unwrap()).unwrap()
}

fn kv(
    key: &'static str,
    create: i64,
    modified: i64,
    version: i64,
    value: &'static str,
) -> mvcc::KeyValue {
    mvcc::KeyValue {
        key: Bytes::from(key),
        create_revision: Revision(create),
        mod_revision: Revision(modified),
        version,
        value: Bytes::from(value),
        lease: LeaseId::NONE,
    }
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

#[test]
fn every_route_of_etcds_gateway_maps_to_its_rpc() {
    let table = [
        ("/v3/kv/range", "etcdserverpb.KV", "Range"),
        ("/v3/kv/put", "etcdserverpb.KV", "Put"),
        ("/v3/kv/deleterange", "etcdserverpb.KV", "DeleteRange"),
        ("/v3/kv/txn", "etcdserverpb.KV", "Txn"),
        ("/v3/kv/compaction", "etcdserverpb.KV", "Compact"),
        ("/v3/watch", "etcdserverpb.Watch", "Watch"),
        ("/v3/lease/grant", "etcdserverpb.Lease", "LeaseGrant"),
        ("/v3/lease/revoke", "etcdserverpb.Lease", "LeaseRevoke"),
        ("/v3/kv/lease/revoke", "etcdserverpb.Lease", "LeaseRevoke"),
        ("/v3/lease/keepalive", "etcdserverpb.Lease", "LeaseKeepAlive"),
        ("/v3/lease/timetolive", "etcdserverpb.Lease", "LeaseTimeToLive"),
        ("/v3/kv/lease/timetolive", "etcdserverpb.Lease", "LeaseTimeToLive"),
        ("/v3/lease/leases", "etcdserverpb.Lease", "LeaseLeases"),
        ("/v3/kv/lease/leases", "etcdserverpb.Lease", "LeaseLeases"),
        ("/v3/cluster/member/add", "etcdserverpb.Cluster", "MemberAdd"),
        ("/v3/cluster/member/remove", "etcdserverpb.Cluster", "MemberRemove"),
        ("/v3/cluster/member/update", "etcdserverpb.Cluster", "MemberUpdate"),
        ("/v3/cluster/member/list", "etcdserverpb.Cluster", "MemberList"),
        ("/v3/cluster/member/promote", "etcdserverpb.Cluster", "MemberPromote"),
        ("/v3/maintenance/alarm", "etcdserverpb.Maintenance", "Alarm"),
        ("/v3/maintenance/status", "etcdserverpb.Maintenance", "Status"),
        ("/v3/maintenance/defragment", "etcdserverpb.Maintenance", "Defragment"),
        ("/v3/maintenance/hash", "etcdserverpb.Maintenance", "Hash"),
        ("/v3/maintenance/hashkv", "etcdserverpb.Maintenance", "HashKV"),
        ("/v3/maintenance/snapshot", "etcdserverpb.Maintenance", "Snapshot"),
        ("/v3/maintenance/transfer-leadership", "etcdserverpb.Maintenance", "MoveLeader"),
        ("/v3/maintenance/downgrade", "etcdserverpb.Maintenance", "Downgrade"),
        ("/v3/auth/enable", "etcdserverpb.Auth", "AuthEnable"),
        ("/v3/auth/disable", "etcdserverpb.Auth", "AuthDisable"),
        ("/v3/auth/status", "etcdserverpb.Auth", "AuthStatus"),
        ("/v3/auth/authenticate", "etcdserverpb.Auth", "Authenticate"),
        ("/v3/auth/user/add", "etcdserverpb.Auth", "UserAdd"),
        ("/v3/auth/user/get", "etcdserverpb.Auth", "UserGet"),
        ("/v3/auth/user/list", "etcdserverpb.Auth", "UserList"),
        ("/v3/auth/user/delete", "etcdserverpb.Auth", "UserDelete"),
        ("/v3/auth/user/changepw", "etcdserverpb.Auth", "UserChangePassword"),
        ("/v3/auth/user/grant", "etcdserverpb.Auth", "UserGrantRole"),
        ("/v3/auth/user/revoke", "etcdserverpb.Auth", "UserRevokeRole"),
        ("/v3/auth/role/add", "etcdserverpb.Auth", "RoleAdd"),
        ("/v3/auth/role/get", "etcdserverpb.Auth", "RoleGet"),
        ("/v3/auth/role/list", "etcdserverpb.Auth", "RoleList"),
        ("/v3/auth/role/delete", "etcdserverpb.Auth", "RoleDelete"),
        ("/v3/auth/role/grant", "etcdserverpb.Auth", "RoleGrantPermission"),
        ("/v3/auth/role/revoke", "etcdserverpb.Auth", "RoleRevokePermission"),
        ("/v3/lock/lock", "v3lockpb.Lock", "Lock"),
        ("/v3/lock/unlock", "v3lockpb.Lock", "Unlock"),
        ("/v3/election/campaign", "v3electionpb.Election", "Campaign"),
        ("/v3/election/proclaim", "v3electionpb.Election", "Proclaim"),
        ("/v3/election/leader", "v3electionpb.Election", "Leader"),
        ("/v3/election/observe", "v3electionpb.Election", "Observe"),
        ("/v3/election/resign", "v3electionpb.Election", "Resign"),
    ];
    for (path, service, method) in table {
        let rpc = route("POST", path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((rpc.service(), rpc.method()), (service, method), "{path}");
        let beta = path.replacen("/v3/", "/v3beta/", 1);
        assert_eq!(route("POST", &beta), Ok(rpc), "{beta}");
    }
    let paths: usize = Rpc::ALL.iter().map(|rpc| rpc.paths().len()).sum();
    assert_eq!(paths, table.len(), "every path of the table is in the test");
}

#[test]
fn streaming_rpcs_are_marked() {
    let streaming: Vec<(Rpc, RpcKind)> =
        Rpc::ALL.iter().map(|&r| (r, r.kind())).filter(|(_, k)| *k != RpcKind::Unary).collect();
    assert_eq!(
        streaming,
        [
            (Rpc::Watch, RpcKind::BidiStreaming),
            (Rpc::LeaseKeepAlive, RpcKind::BidiStreaming),
            (Rpc::Snapshot, RpcKind::ServerStreaming),
            (Rpc::Observe, RpcKind::ServerStreaming),
        ]
    );
}

#[test]
fn unknown_paths_and_methods_get_etcds_plain_text_answers() {
    assert_eq!(route("POST", "/v3/kv/range?pretty=1"), Ok(Rpc::KvRange));
    for path in ["/v3/kv/nope", "/v3/kv/range/", "/v3alpha/kv/range", "/v2/keys", "/", "/v3/"] {
        let err = route("POST", path).unwrap_err();
        assert_eq!(err, GatewayError::UnknownPath { path: path.to_owned() });
        assert_eq!(
            err.reply(),
            HttpReply {
                status: 404,
                content_type: CONTENT_TYPE_TEXT,
                body: b"Not Found\n".to_vec()
            }
        );
    }
    let err = route("GET", "/v3/kv/range").unwrap_err();
    assert_eq!(err, GatewayError::MethodNotAllowed { method: "GET".into(), rpc: Rpc::KvRange });
    assert_eq!(
        err.reply(),
        HttpReply {
            status: 405,
            content_type: CONTENT_TYPE_TEXT,
            body: b"Method Not Allowed\n".to_vec()
        }
    );
    assert!(matches!(route("GET", "/v3/nope"), Err(GatewayError::UnknownPath { .. })));
}

// ---------------------------------------------------------------------------
// Every RPC's Rust types against its descriptors
// ---------------------------------------------------------------------------

/// A message of `descriptor` with every field set to a value that is not
/// its default (lists of two; the first field of each oneof), nested
/// messages filled down to `depth`.
fn filled(descriptor: &MessageDescriptor, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    let mut oneofs = HashSet::new();
    for field in descriptor.fields() {
        assert!(!field.is_map(), "etcd's protocol has no map fields");
        if let Some(oneof) = field.containing_oneof()
            && !oneofs.insert(oneof.full_name().to_owned())
        {
            continue;
        }
        let value = match field.kind() {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(-7),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(-(1 << 40)),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(u32::MAX),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(u64::MAX),
            Kind::Bool => Value::Bool(true),
            Kind::String => Value::String("s\"{}".into()),
            Kind::Bytes => Value::Bytes(Bytes::from_static(b"\x00\xff{")),
            Kind::Enum(e) => Value::EnumNumber(e.values().map(|v| v.number()).max().unwrap()),
            Kind::Message(m) if depth == 0 => Value::Message(DynamicMessage::new(m)),
            Kind::Message(m) => Value::Message(filled(&m, depth - 1)),
            Kind::Float | Kind::Double => panic!("etcd's protocol has no floats"),
        };
        let value = if field.is_list() { Value::List(vec![value.clone(), value]) } else { value };
        message.set_field(&field, value);
    }
    message
}

#[test]
fn every_rpcs_rust_types_carry_every_field_of_its_descriptors() {
    for &rpc in Rpc::ALL {
        let request = filled(rpc.request_descriptor(), 3);
        let typed = GatewayRequest::from_dynamic(rpc, &request).unwrap();
        assert_eq!(typed.rpc(), rpc);
        let mut back = DynamicMessage::new(rpc.request_descriptor().clone());
        typed.to_dynamic(&mut back).unwrap();
        assert_eq!(back, request, "{rpc:?}'s request type loses fields");
        // And through JSON.
        let json = encode_request(&typed).unwrap();
        assert_eq!(decode_request(rpc, &json).unwrap(), typed, "{rpc:?} request JSON round trip");

        let response = filled(rpc.response_descriptor(), 3);
        let typed = GatewayResponse::from_dynamic(rpc, &response).unwrap();
        assert_eq!(typed.rpc(), rpc);
        let mut back = DynamicMessage::new(rpc.response_descriptor().clone());
        typed.to_dynamic(&mut back).unwrap();
        assert_eq!(back, response, "{rpc:?}'s response type loses fields");
        let json = encode_response(&typed).unwrap();
        assert_eq!(decode_response(rpc, &json).unwrap(), typed, "{rpc:?} response JSON round trip");
    }
}

#[test]
fn descriptors_are_the_services_messages() {
    assert_eq!(Rpc::KvRange.request_descriptor().full_name(), "etcdserverpb.RangeRequest");
    assert_eq!(Rpc::KvCompact.response_descriptor().full_name(), "etcdserverpb.CompactionResponse");
    assert_eq!(Rpc::HashKv.request_descriptor().full_name(), "etcdserverpb.HashKVRequest");
    assert_eq!(Rpc::Observe.request_descriptor().full_name(), "v3electionpb.LeaderRequest");
    assert_eq!(Rpc::Unlock.response_descriptor().full_name(), "v3lockpb.UnlockResponse");
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[test]
fn requests_decode_from_etcds_documented_examples() {
    assert_eq!(
        decode(Rpc::KvPut, r#"{"key":"Zm9v","value":"YmFy"}"#),
        GatewayRequest::KvPut(pb::PutRequest {
            key: b"foo".to_vec(),
            value: b"bar".to_vec(),
            ..Default::default()
        })
    );
    // lowerCamelCase names and a 64-bit integer as a string, as etcd's docs send.
    let txn = r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],
                  "success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}]}"#;
    assert_eq!(
        decode(Rpc::KvTxn, txn),
        GatewayRequest::KvTxn(pb::TxnRequest {
            compare: vec![pb::Compare {
                result: 0,
                target: 1,
                key: b"foo".to_vec(),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::CreateRevision(2)),
            }],
            success: vec![pb::RequestOp {
                request: Some(Request::RequestPut(pb::PutRequest {
                    key: b"foo".to_vec(),
                    value: b"bar".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        })
    );
    assert_eq!(
        decode(Rpc::Watch, r#"{"create_request":{"key":"Zm9v"}}"#),
        GatewayRequest::Watch(pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: b"foo".to_vec(),
                ..Default::default()
            })),
        })
    );
}

#[test]
fn requests_decode_as_patroni_sends_them() {
    // Patroni: {"TTL": ttl} as a number, keepalive {"ID": id}, snake_case
    // txn with a nested request_txn in failure, watch with filters.
    assert_eq!(
        decode(Rpc::LeaseGrant, r#"{"TTL": 30}"#),
        GatewayRequest::LeaseGrant(pb::LeaseGrantRequest { ttl: 30, id: 0 })
    );
    assert_eq!(
        decode(Rpc::LeaseKeepAlive, r#"{"ID": "7587861231217090566"}"#),
        GatewayRequest::LeaseKeepAlive(pb::LeaseKeepAliveRequest { id: 7_587_861_231_217_090_566 })
    );
    let txn = r#"{"compare":[{"key":"bGVhZGVy","result":"EQUAL","target":"MOD","mod_revision":"12"}],
                  "failure":[{"request_txn":{"success":[{"request_delete_range":{"key":"eA==","prev_kv":true}}]}}]}"#;
    let GatewayRequest::KvTxn(txn) = decode(Rpc::KvTxn, txn) else { panic!("not a txn") };
    assert_eq!(txn.compare[0].target, 2);
    assert_eq!(txn.compare[0].target_union, Some(TargetUnion::ModRevision(12)));
    let Some(Request::RequestTxn(nested)) = &txn.failure[0].request else { panic!("not nested") };
    assert_eq!(
        nested.success[0].request,
        Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: b"x".to_vec(),
            range_end: Vec::new(),
            prev_kv: true,
        }))
    );
    let watch = r#"{"create_request":{"key":"Zm9v","range_end":"Zm9w","start_revision":"5","filters":["NOPUT",1],"prev_kv":true}}"#;
    assert_eq!(
        decode(Rpc::Watch, watch),
        GatewayRequest::Watch(pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: b"foo".to_vec(),
                range_end: b"fop".to_vec(),
                start_revision: 5,
                filters: vec![0, 1],
                prev_kv: true,
                ..Default::default()
            })),
        })
    );
}

#[test]
fn request_fields_accept_every_form_etcd_accepts() {
    let range = r#"{"key":"AA==","range_end":"AA==","limit":"1","revision":99,"sortOrder":"DESCEND",
                    "sort_target":4,"serializable":true,"keysOnly":true,"bogus":{"x":[1]},"count_only":null}"#;
    assert_eq!(
        decode(Rpc::KvRange, range),
        GatewayRequest::KvRange(pb::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            limit: 1,
            revision: 99,
            sort_order: 2,
            sort_target: 4,
            serializable: true,
            keys_only: true,
            ..Default::default()
        })
    );
    // An enum number etcd does not define is accepted here (etcd too); the
    // API layer refuses it.
    let GatewayRequest::KvRange(odd) = decode(Rpc::KvRange, r#"{"key":"YQ==","sort_order":7}"#)
    else {
        panic!("not a range")
    };
    assert_eq!(odd.sort_order, 7);
    assert_eq!(
        decode(Rpc::MemberAdd, r#"{"peerURLs":["http://10.0.0.1:2380"],"isLearner":true}"#),
        GatewayRequest::MemberAdd(pb::MemberAddRequest {
            peer_urls: vec!["http://10.0.0.1:2380".into()],
            is_learner: true,
        })
    );
    assert_eq!(
        decode(Rpc::Alarm, r#"{"action":"DEACTIVATE","memberID":"1","alarm":"NOSPACE"}"#),
        GatewayRequest::Alarm(pb::AlarmRequest { action: 2, member_id: 1, alarm: 1 })
    );
    assert_eq!(
        decode(Rpc::MoveLeader, r#"{"targetID":"18446744073709551615"}"#),
        GatewayRequest::MoveLeader(pb::MoveLeaderRequest { target_id: u64::MAX })
    );
    // ringkv is more lenient with base64 than etcd: URL-safe and unpadded.
    assert_eq!(
        decode(Rpc::KvPut, r#"{"key":"-_8","value":"YQ"}"#),
        GatewayRequest::KvPut(pb::PutRequest {
            key: vec![0xfb, 0xff],
            value: b"a".to_vec(),
            ..Default::default()
        })
    );
}

#[test]
fn an_empty_body_is_the_empty_request() {
    for body in ["", "  \n\t\r "] {
        assert_eq!(decode(Rpc::Status, body), GatewayRequest::Status(pb::StatusRequest {}));
        assert_eq!(
            decode(Rpc::KvRange, body),
            GatewayRequest::KvRange(pb::RangeRequest::default())
        );
    }
    assert_eq!(
        decode(Rpc::MemberList, "{}"),
        GatewayRequest::MemberList(pb::MemberListRequest::default())
    );
}

#[test]
fn malformed_json_is_refused_with_invalid_argument_and_says_why() {
    let cases = [
        (Rpc::KvRange, r#"{"key":"Zm9v""#, "EOF"),
        (Rpc::KvRange, r#"{"key":"Zm9v","sort_order":"WHAT"}"#, "WHAT"),
        (Rpc::KvPut, r#"[]"#, ""),
        (Rpc::KvPut, r#""x""#, ""),
        (Rpc::KvPut, r#"{"key":"YQ==","lease":"abc"}"#, ""),
        (Rpc::KvPut, r#"{"key":"YQ==","prev_kv":"true"}"#, ""),
        (Rpc::KvPut, r#"{"key":"!!!"}"#, "base64"),
        (Rpc::KvPut, r#"{"key":"YQ=="} {"key":"Yg=="}"#, "trailing"),
        (Rpc::KvRange, r#"{"limit":"9223372036854775808"}"#, ""),
        (Rpc::MemberRemove, r#"{"ID":-1}"#, ""),
        (Rpc::Watch, r#"{"create_request":{"key":"YQ=="},"cancel_request":{"watch_id":1}}"#, ""),
    ];
    for (rpc, body, mentions) in cases {
        let err = decode_request(rpc, body.as_bytes()).expect_err(body);
        let GatewayError::MalformedJson { message_type, detail } = &err else {
            panic!("{body}: {err:?}")
        };
        assert_eq!(message_type, rpc.request_descriptor().full_name(), "{body}");
        assert!(detail.contains(mentions), "{body}: {detail}");
        assert_eq!(err.code(), Some(Code::InvalidArgument));
        let reply = err.reply();
        assert_eq!((reply.status, reply.content_type), (400, CONTENT_TYPE_JSON), "{body}");
        let message = err.to_string();
        assert!(
            message.starts_with("ringkv gateway: the body is not a valid etcdserverpb."),
            "{message}"
        );
        let expected = serde_json::json!({"error": message, "message": message, "code": 3});
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&reply.body).unwrap(), expected);
    }
}

// ---------------------------------------------------------------------------
// Responses (bodies as etcd 3.4.23 sent them)
// ---------------------------------------------------------------------------

#[test]
fn range_response_golden() {
    let info = HeaderInfo {
        cluster_id: 14_841_639_068_965_178_418,
        member_id: 10_276_657_743_932_975_437,
        raft_term: 2,
    };
    let resp = mvcc::RangeResponse {
        revision: Revision(5),
        kvs: vec![kv("foo", 2, 5, 4, "bar")],
        more: false,
        count: 1,
    };
    assert_eq!(
        encode(GatewayResponse::KvRange(to_pb::range_response(resp, &info))),
        r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"5","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"5","version":"4","value":"YmFy"}],"count":"1"}"#
    );
    // keys_only: no value; an empty range: no kvs, no count.
    let empty = mvcc::RangeResponse { revision: Revision(11), kvs: vec![], more: false, count: 0 };
    assert_eq!(
        encode(GatewayResponse::KvRange(to_pb::range_response(empty, &ETCD))),
        format!(r#"{{"header":{}}}"#, header_json(11))
    );
}

#[test]
fn put_and_delete_goldens() {
    let put = mvcc::PutResponse { revision: Revision(2), prev_kv: None };
    assert_eq!(
        encode(GatewayResponse::KvPut(to_pb::put_response(put, &ETCD))),
        format!(r#"{{"header":{}}}"#, header_json(2))
    );
    let del = mvcc::DeleteRangeResponse {
        revision: Revision(4),
        deleted: 1,
        prev_kvs: vec![kv("foo", 2, 3, 2, "bar")],
    };
    assert_eq!(
        encode(GatewayResponse::KvDeleteRange(to_pb::delete_range_response(del, &ETCD))),
        format!(
            r#"{{"header":{},"deleted":"1","prev_kvs":[{{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFy"}}]}}"#,
            header_json(4)
        )
    );
}

#[test]
fn txn_response_goldens() {
    let txn = mvcc::TxnResponse {
        revision: Revision(3),
        succeeded: true,
        responses: vec![
            mvcc::ResponseOp::Put(mvcc::PutResponse { revision: Revision(3), prev_kv: None }),
            mvcc::ResponseOp::Range(mvcc::RangeResponse {
                revision: Revision(3),
                kvs: vec![kv("foo", 2, 3, 2, "bar")],
                more: false,
                count: 1,
            }),
        ],
    };
    assert_eq!(
        encode(GatewayResponse::KvTxn(to_pb::txn_response(txn, &ETCD))),
        format!(
            r#"{{"header":{},"succeeded":true,"responses":[{{"response_put":{{"header":{{"revision":"3"}}}}}},{{"response_range":{{"header":{{"revision":"3"}},"kvs":[{{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFy"}}],"count":"1"}}}}]}}"#,
            header_json(3)
        )
    );
    // A failed compare running a nested transaction: the nested header is
    // printed empty, `succeeded: false` is left out.
    let nested = mvcc::TxnResponse {
        revision: Revision(3),
        succeeded: false,
        responses: vec![mvcc::ResponseOp::Txn(mvcc::TxnResponse {
            revision: Revision(3),
            succeeded: true,
            responses: vec![mvcc::ResponseOp::DeleteRange(mvcc::DeleteRangeResponse {
                revision: Revision(3),
                deleted: 0,
                prev_kvs: vec![],
            })],
        })],
    };
    assert_eq!(
        encode(GatewayResponse::KvTxn(to_pb::txn_response(nested, &ETCD))),
        format!(
            r#"{{"header":{},"responses":[{{"response_txn":{{"header":{{}},"succeeded":true,"responses":[{{"response_delete_range":{{"header":{{"revision":"3"}}}}}}]}}}}]}}"#,
            header_json(3)
        )
    );
}

fn stream(response: GatewayResponse) -> String {
    String::from_utf8(encode_stream_message(&response).unwrap()).unwrap()
}

#[test]
fn watch_stream_goldens() {
    let created = pb::WatchResponse {
        header: Some(ETCD.header(Revision(4))),
        created: true,
        ..Default::default()
    };
    assert_eq!(
        stream(GatewayResponse::Watch(created)),
        format!("{{\"result\":{{\"header\":{},\"created\":true}}}}\n", header_json(4))
    );
    let put = mvcc::Event { kind: EventKind::Put, kv: kv("foo", 5, 5, 1, "bar"), prev_kv: None };
    let delete = mvcc::Event {
        kind: EventKind::Delete,
        kv: mvcc::KeyValue {
            key: Bytes::from("foo"),
            mod_revision: Revision(7),
            ..Default::default()
        },
        prev_kv: Some(kv("foo", 5, 6, 2, "baz")),
    };
    let events = pb::WatchResponse {
        header: Some(ETCD.header(Revision(7))),
        events: vec![to_pb::event(put, true), to_pb::event(delete, true)],
        ..Default::default()
    };
    assert_eq!(
        stream(GatewayResponse::Watch(events)),
        format!(
            "{{\"result\":{{\"header\":{},\"events\":[{}]}}}}\n",
            header_json(7),
            concat!(
                r#"{"kv":{"key":"Zm9v","create_revision":"5","mod_revision":"5","version":"1","value":"YmFy"}},"#,
                r#"{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"7"},"prev_kv":{"key":"Zm9v","create_revision":"5","mod_revision":"6","version":"2","value":"YmF6"}}"#,
            )
        )
    );
    let refused = pb::WatchResponse {
        header: Some(ETCD.header(Revision(9))),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: "etcdserver: permission denied".into(),
        ..Default::default()
    };
    assert_eq!(
        stream(GatewayResponse::Watch(refused)),
        format!(
            "{{\"result\":{{\"header\":{},\"watch_id\":\"-1\",\"created\":true,\"canceled\":true,\"cancel_reason\":\"etcdserver: permission denied\"}}}}\n",
            header_json(9)
        )
    );
}

#[test]
fn lease_goldens() {
    let grant = mvcc::LeaseGrantResponse { revision: Revision(4), id: LeaseId(7), ttl: 30 };
    assert_eq!(
        encode(GatewayResponse::LeaseGrant(to_pb::lease_grant_response(grant, &ETCD))),
        format!(r#"{{"header":{},"ID":"7","TTL":"30"}}"#, header_json(4))
    );
    let alive = to_pb::lease_keep_alive_response(&ETCD, Revision(7), LeaseId(9), Some(30));
    assert_eq!(
        stream(GatewayResponse::LeaseKeepAlive(alive)),
        format!("{{\"result\":{{\"header\":{},\"ID\":\"9\",\"TTL\":\"30\"}}}}\n", header_json(7))
    );
    let gone = to_pb::lease_keep_alive_response(&ETCD, Revision(7), LeaseId(10), None);
    assert_eq!(
        stream(GatewayResponse::LeaseKeepAlive(gone)),
        format!("{{\"result\":{{\"header\":{},\"ID\":\"10\"}}}}\n", header_json(7))
    );
    let ttl = to_pb::lease_time_to_live_response(
        &ETCD,
        Revision(4),
        LeaseId(7),
        Some(to_pb::LeaseTimeToLive { remaining_seconds: 29, granted_seconds: 30, keys: vec![] }),
    );
    assert_eq!(
        encode(GatewayResponse::LeaseTimeToLive(ttl)),
        format!(r#"{{"header":{},"ID":"7","TTL":"29","grantedTTL":"30"}}"#, header_json(4))
    );
    let missing = to_pb::lease_time_to_live_response(&ETCD, Revision(4), LeaseId(8), None);
    assert_eq!(
        encode(GatewayResponse::LeaseTimeToLive(missing)),
        format!(r#"{{"header":{},"ID":"8","TTL":"-1"}}"#, header_json(4))
    );
    let leases = to_pb::lease_leases_response(&ETCD, Revision(4), [LeaseId(7)]);
    assert_eq!(
        encode(GatewayResponse::LeaseLeases(leases)),
        format!(r#"{{"header":{},"leases":[{{"ID":"7"}}]}}"#, header_json(4))
    );
}

#[test]
fn cluster_and_maintenance_goldens() {
    let no_revision = pb::ResponseHeader { revision: 0, ..ETCD.header(Revision(0)) };
    let probe = pb::Member {
        id: 13_668_033_151_171_901_709,
        name: "probe".into(),
        peer_urls: vec!["http://127.0.0.1:23801".into()],
        client_urls: vec!["http://127.0.0.1:23791".into()],
        is_learner: false,
    };
    let learner = pb::Member {
        id: 7_159_811_625_862_215_612,
        name: String::new(),
        peer_urls: vec!["http://127.0.0.1:23999".into()],
        client_urls: vec![],
        is_learner: true,
    };
    let add = pb::MemberAddResponse {
        header: Some(no_revision),
        member: Some(learner.clone()),
        members: vec![learner, probe],
    };
    assert_eq!(
        encode(GatewayResponse::MemberAdd(add)),
        r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","raft_term":"2"},"member":{"ID":"7159811625862215612","peerURLs":["http://127.0.0.1:23999"],"isLearner":true},"members":[{"ID":"7159811625862215612","peerURLs":["http://127.0.0.1:23999"],"isLearner":true},{"ID":"13668033151171901709","name":"probe","peerURLs":["http://127.0.0.1:23801"],"clientURLs":["http://127.0.0.1:23791"]}]}"#
    );
    let status = pb::StatusResponse {
        header: Some(ETCD.header(Revision(4))),
        version: "3.4.23".into(),
        db_size: 20480,
        leader: 13_668_033_151_171_901_709,
        raft_index: 17,
        raft_term: 2,
        raft_applied_index: 17,
        errors: vec![],
        db_size_in_use: 16384,
        is_learner: false,
    };
    assert_eq!(
        encode(GatewayResponse::Status(status)),
        format!(
            r#"{{"header":{},"version":"3.4.23","dbSize":"20480","leader":"13668033151171901709","raftIndex":"17","raftTerm":"2","raftAppliedIndex":"17","dbSizeInUse":"16384"}}"#,
            header_json(4)
        )
    );
    let hash = pb::HashResponse { header: Some(ETCD.header(Revision(4))), hash: 1_095_656_784 };
    assert_eq!(
        encode(GatewayResponse::Hash(hash)),
        format!(r#"{{"header":{},"hash":1095656784}}"#, header_json(4))
    );
    let alarm = pb::AlarmResponse {
        header: None,
        alarms: vec![pb::AlarmMember { member_id: 1, alarm: pb::AlarmType::Nospace as i32 }],
    };
    assert_eq!(
        encode(GatewayResponse::Alarm(alarm)),
        r#"{"alarms":[{"memberID":"1","alarm":"NOSPACE"}]}"#
    );
    assert_eq!(encode(GatewayResponse::Defragment(pb::DefragmentResponse { header: None })), "{}");
    let chunk = pb::SnapshotResponse { header: None, remaining_bytes: 0, blob: vec![0, 0, 0] };
    assert_eq!(stream(GatewayResponse::Snapshot(chunk)), "{\"result\":{\"blob\":\"AAAA\"}}\n");
}

#[test]
fn auth_lock_and_election_goldens() {
    let token = pb::AuthenticateResponse {
        header: Some(ETCD.header(Revision(9))),
        token: "pDAIjIwsEwiZojMH.35".into(),
    };
    assert_eq!(
        encode(GatewayResponse::Authenticate(token)),
        format!(r#"{{"header":{},"token":"pDAIjIwsEwiZojMH.35"}}"#, header_json(9))
    );
    let lock = ringkv_api::v3lockpb::LockResponse {
        header: Some(ETCD.header(Revision(8))),
        key: b"l/9".to_vec(),
    };
    assert_eq!(
        encode(GatewayResponse::Lock(lock)),
        format!(r#"{{"header":{},"key":"bC85"}}"#, header_json(8))
    );
    let campaign = election::CampaignResponse {
        header: Some(ETCD.header(Revision(9))),
        leader: Some(election::LeaderKey {
            name: b"e".to_vec(),
            key: b"e/9".to_vec(),
            rev: 9,
            lease: 9,
        }),
    };
    assert_eq!(
        encode(GatewayResponse::Campaign(campaign)),
        format!(
            r#"{{"header":{},"leader":{{"name":"ZQ==","key":"ZS85","rev":"9","lease":"9"}}}}"#,
            header_json(9)
        )
    );
    let leader = election::LeaderResponse {
        header: Some(ETCD.header(Revision(9))),
        kv: Some(mvccpb::KeyValue {
            key: b"e/9".to_vec(),
            create_revision: 9,
            mod_revision: 9,
            version: 1,
            value: b"v".to_vec(),
            lease: 9,
        }),
    };
    assert_eq!(
        stream(GatewayResponse::Observe(leader)),
        format!(
            "{{\"result\":{{\"header\":{},\"kv\":{{\"key\":\"ZS85\",\"create_revision\":\"9\",\"mod_revision\":\"9\",\"version\":\"1\",\"value\":\"dg==\",\"lease\":\"9\"}}}}}}\n",
            header_json(9)
        )
    );
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn unary_errors_have_etcds_status_and_body() {
    let cases = [
        (
            EtcdError::EmptyKey,
            400,
            r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#,
        ),
        (
            EtcdError::FutureRev,
            400,
            r#"{"error":"etcdserver: mvcc: required revision is a future revision","message":"etcdserver: mvcc: required revision is a future revision","code":11}"#,
        ),
        (
            EtcdError::LeaseExist,
            412,
            r#"{"error":"etcdserver: lease already exists","message":"etcdserver: lease already exists","code":9}"#,
        ),
        (
            EtcdError::LeaseNotFound,
            404,
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        ),
        (
            EtcdError::NoSpace,
            429,
            r#"{"error":"etcdserver: mvcc: database space exceeded","message":"etcdserver: mvcc: database space exceeded","code":8}"#,
        ),
        (
            EtcdError::ElectionNoLeader,
            500,
            r#"{"error":"election: no leader","message":"election: no leader","code":2}"#,
        ),
        (
            EtcdError::NoLeader,
            503,
            r#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#,
        ),
    ];
    for (error, status, body) in cases {
        let status_of_error = error.to_status();
        let reply = encode_error(status_of_error.code(), status_of_error.message());
        assert_eq!(reply.status, status, "{error:?}");
        assert_eq!(reply.content_type, CONTENT_TYPE_JSON);
        assert_eq!(String::from_utf8(reply.body).unwrap(), body);
    }
}

#[test]
fn stream_errors_have_etcds_shape() {
    let body = encode_stream_error(Code::Unknown, "auth: user name is empty");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"error":{"grpc_code":2,"http_code":500,"message":"auth: user name is empty","http_status":"Internal Server Error"}}"#
    );
    let body = encode_stream_error(Code::FailedPrecondition, "etcdserver: not leader");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"error":{"grpc_code":9,"http_code":412,"message":"etcdserver: not leader","http_status":"Precondition Failed"}}"#
    );
}

#[test]
fn http_status_of_every_grpc_code() {
    let table = [
        (Code::Ok, 200),
        (Code::Cancelled, 408),
        (Code::Unknown, 500),
        (Code::InvalidArgument, 400),
        (Code::DeadlineExceeded, 504),
        (Code::NotFound, 404),
        (Code::AlreadyExists, 409),
        (Code::PermissionDenied, 403),
        (Code::ResourceExhausted, 429),
        (Code::FailedPrecondition, 412),
        (Code::Aborted, 409),
        (Code::OutOfRange, 400),
        (Code::Unimplemented, 501),
        (Code::Internal, 500),
        (Code::Unavailable, 503),
        (Code::DataLoss, 500),
        (Code::Unauthenticated, 401),
    ];
    for (code, status) in table {
        assert_eq!(http_status(code), status, "{code:?}");
    }
}

// ---------------------------------------------------------------------------
// Request streams
// ---------------------------------------------------------------------------

fn keep_alive(id: i64) -> GatewayRequest {
    GatewayRequest::LeaseKeepAlive(pb::LeaseKeepAliveRequest { id })
}

#[test]
fn a_request_stream_yields_each_object_as_it_completes() {
    let mut requests = RequestStream::new(Rpc::LeaseKeepAlive, 1024);
    assert_eq!(requests.push(br#"{"ID":9}{"ID":9}"#).unwrap(), [keep_alive(9), keep_alive(9)]);
    assert_eq!(requests.push(b"\n {\"I").unwrap(), []);
    assert_eq!(requests.push(b"D\":\"10\"}\r\n\t").unwrap(), [keep_alive(10)]);
    requests.finish().unwrap();
}

#[test]
fn a_request_stream_splits_the_same_wherever_the_chunks_break() {
    // Brackets and quotes inside strings do not end an object.
    let body = br#" {"create_request":{"key":"Zm9v","bogus":"}{\"]\\"}} {"cancel_request":{"watch_id":"3"}}
{"progress_request":{}}"#;
    let expected = vec![
        GatewayRequest::Watch(pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: b"foo".to_vec(),
                ..Default::default()
            })),
        }),
        GatewayRequest::Watch(pb::WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
                watch_id: 3,
            })),
        }),
        GatewayRequest::Watch(pb::WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
        }),
    ];
    for split in 0..=body.len() {
        for second in split..=body.len() {
            let mut requests = RequestStream::new(Rpc::Watch, 1024);
            let mut got = requests.push(&body[..split]).unwrap();
            got.extend(requests.push(&body[split..second]).unwrap());
            got.extend(requests.push(&body[second..]).unwrap());
            requests.finish().unwrap();
            assert_eq!(got, expected, "chunks broken at {split} and {second}");
        }
    }
}

#[test]
fn a_broken_request_stream_is_refused() {
    let mut requests = RequestStream::new(Rpc::LeaseKeepAlive, 1024);
    assert!(matches!(requests.push(b"[1]"), Err(GatewayError::MalformedJson { .. })));
    let mut requests = RequestStream::new(Rpc::LeaseKeepAlive, 1024);
    let err = requests.push(br#"{"ID":"x"}"#).unwrap_err();
    let keep_alive_type = "etcdserverpb.LeaseKeepAliveRequest";
    assert!(
        matches!(&err, GatewayError::MalformedJson { message_type, .. } if message_type == keep_alive_type),
        "{err:?}"
    );
    let mut requests = RequestStream::new(Rpc::LeaseKeepAlive, 1024);
    assert_eq!(requests.push(br#"{"ID":1}{"ID""#).unwrap(), [keep_alive(1)]);
    let err = requests.finish().unwrap_err();
    assert!(err.to_string().contains("ended inside a JSON object"), "{err}");
    // One object may not grow past the limit; whitespace between objects
    // is not buffered.
    let mut requests = RequestStream::new(Rpc::LeaseKeepAlive, 16);
    assert_eq!(requests.push(&[b' '; 100]).unwrap(), []);
    assert_eq!(requests.push(br#"{"ID": 1}"#).unwrap(), [keep_alive(1)]);
    let at_limit = br#"{"ID":          "#;
    assert_eq!(at_limit.len(), 16);
    assert_eq!(requests.push(at_limit).unwrap(), [], "at the limit");
    let err = requests.push(b" ").unwrap_err();
    assert_eq!(err, GatewayError::BodyTooLarge { limit_bytes: 16 });
    assert_eq!(err.reply().status, 429);
}
