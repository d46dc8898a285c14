use std::cell::Cell;

use bytes::Bytes;
use ringkv_api::etcdserverpb::{
    self as pb, ResponseHeader, compare::TargetUnion, request_op::Request, response_op::Response,
};
use ringkv_api::mvccpb;
use ringkv_storage::mvcc::{
    self, CompareResult, CompareTarget, EventKind, LeaseId, Revision, SortOrder, SortTarget,
};

use super::{HeaderInfo, from_pb, to_pb};
use crate::api::limits::RequestLimits;
use crate::api::status::EtcdError;

const INFO: HeaderInfo = HeaderInfo {
    cluster_id: 14_841_639_068_965_178_418,
    member_id: 10_276_657_743_932_975_437,
    raft_term: 2,
};

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn op(request: Request) -> pb::RequestOp {
    pb::RequestOp { request: Some(request) }
}

fn pb_compare(result: i32, target: i32, key: &str, union: TargetUnion) -> pb::Compare {
    pb::Compare { result, target, key: b(key), range_end: Vec::new(), target_union: Some(union) }
}

/// A transaction touching every request kind, every compare target and
/// result, both branches and a nested transaction with both branches.
fn rich_pb_txn() -> pb::TxnRequest {
    let nested = pb::TxnRequest {
        compare: vec![pb_compare(3, 4, "n", TargetUnion::Lease(9))],
        success: vec![op(Request::RequestPut(pb::PutRequest {
            key: b("n1"),
            value: b("v"),
            ..Default::default()
        }))],
        failure: vec![op(Request::RequestPut(pb::PutRequest {
            // The same key in the other branch: exclusive branches may.
            key: b("n1"),
            value: b("w"),
            ignore_lease: true,
            ..Default::default()
        }))],
    };
    pb::TxnRequest {
        compare: vec![
            pb_compare(0, 0, "a", TargetUnion::Version(3)),
            pb_compare(1, 1, "b", TargetUnion::CreateRevision(4)),
            pb::Compare { range_end: b("d"), ..pb_compare(2, 2, "c", TargetUnion::ModRevision(5)) },
            pb_compare(3, 3, "e", TargetUnion::Value(b("val"))),
            pb_compare(0, 4, "f", TargetUnion::Lease(7)),
        ],
        success: vec![
            op(Request::RequestRange(pb::RangeRequest {
                key: b("r"),
                range_end: b("s"),
                limit: 10,
                revision: 40,
                sort_order: 2,
                sort_target: 3,
                serializable: true,
                keys_only: false,
                count_only: false,
                min_mod_revision: 1,
                max_mod_revision: 2,
                min_create_revision: 3,
                max_create_revision: 4,
            })),
            op(Request::RequestPut(pb::PutRequest {
                key: b("p"),
                value: b("pv"),
                lease: 7,
                prev_kv: true,
                ignore_value: false,
                ignore_lease: false,
            })),
            op(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b("x"),
                range_end: b("y"),
                prev_kv: true,
            })),
            op(Request::RequestTxn(nested)),
        ],
        failure: vec![
            op(Request::RequestPut(pb::PutRequest {
                key: b("k"),
                ignore_value: true,
                ..Default::default()
            })),
            // Each boolean alone, so that swapping two of them shows.
            op(Request::RequestRange(pb::RangeRequest {
                key: b("k1"),
                keys_only: true,
                ..Default::default()
            })),
            op(Request::RequestRange(pb::RangeRequest {
                key: b("k2"),
                count_only: true,
                ..Default::default()
            })),
        ],
    }
}

fn rich_mvcc_txn() -> mvcc::TxnRequest {
    let put = |key: &'static str, value: &'static str| mvcc::PutRequest {
        key: Bytes::from(key),
        value: Bytes::from(value),
        ..Default::default()
    };
    mvcc::TxnRequest {
        compare: vec![
            mvcc::Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Version(3),
                key: Bytes::from("a"),
                range_end: Bytes::new(),
            },
            mvcc::Compare {
                result: CompareResult::Greater,
                target: CompareTarget::Create(Revision(4)),
                key: Bytes::from("b"),
                range_end: Bytes::new(),
            },
            mvcc::Compare {
                result: CompareResult::Less,
                target: CompareTarget::Mod(Revision(5)),
                key: Bytes::from("c"),
                range_end: Bytes::from("d"),
            },
            mvcc::Compare {
                result: CompareResult::NotEqual,
                target: CompareTarget::Value(Bytes::from("val")),
                key: Bytes::from("e"),
                range_end: Bytes::new(),
            },
            mvcc::Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Lease(LeaseId(7)),
                key: Bytes::from("f"),
                range_end: Bytes::new(),
            },
        ],
        success: vec![
            mvcc::RequestOp::Range(mvcc::RangeRequest {
                key: Bytes::from("r"),
                range_end: Bytes::from("s"),
                limit: 10,
                revision: Revision(40),
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Mod,
                serializable: true,
                keys_only: false,
                count_only: false,
                min_mod_revision: Revision(1),
                max_mod_revision: Revision(2),
                min_create_revision: Revision(3),
                max_create_revision: Revision(4),
            }),
            mvcc::RequestOp::Put(mvcc::PutRequest {
                key: Bytes::from("p"),
                value: Bytes::from("pv"),
                lease: LeaseId(7),
                prev_kv: true,
                ignore_value: false,
                ignore_lease: false,
            }),
            mvcc::RequestOp::DeleteRange(mvcc::DeleteRangeRequest {
                key: Bytes::from("x"),
                range_end: Bytes::from("y"),
                prev_kv: true,
            }),
            mvcc::RequestOp::Txn(mvcc::TxnRequest {
                compare: vec![mvcc::Compare {
                    result: CompareResult::NotEqual,
                    target: CompareTarget::Lease(LeaseId(9)),
                    key: Bytes::from("n"),
                    range_end: Bytes::new(),
                }],
                success: vec![mvcc::RequestOp::Put(put("n1", "v"))],
                failure: vec![mvcc::RequestOp::Put(mvcc::PutRequest {
                    ignore_lease: true,
                    ..put("n1", "w")
                })],
            }),
        ],
        failure: vec![
            mvcc::RequestOp::Put(mvcc::PutRequest {
                key: Bytes::from("k"),
                ignore_value: true,
                ..Default::default()
            }),
            mvcc::RequestOp::Range(mvcc::RangeRequest {
                key: Bytes::from("k1"),
                keys_only: true,
                ..Default::default()
            }),
            mvcc::RequestOp::Range(mvcc::RangeRequest {
                key: Bytes::from("k2"),
                count_only: true,
                ..Default::default()
            }),
        ],
    }
}

#[test]
fn txn_request_converts_to_the_exact_store_request_and_back() {
    let limits = RequestLimits::default();
    let converted = from_pb::txn_request(rich_pb_txn(), &limits).unwrap();
    assert_eq!(converted, rich_mvcc_txn());
    assert_eq!(to_pb::txn_request(converted), rich_pb_txn());
}

#[test]
fn single_requests_round_trip() {
    let limits = RequestLimits::default();
    let put = pb::PutRequest {
        key: b("k"),
        value: b("v"),
        lease: 5,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: false,
    };
    assert_eq!(to_pb::put_request(from_pb::put_request(put.clone(), &limits).unwrap()), put);
    let del = pb::DeleteRangeRequest { key: b("a"), range_end: vec![0], prev_kv: true };
    let converted = from_pb::delete_range_request(del.clone(), &limits).unwrap();
    assert_eq!(converted.range_end, Bytes::from_static(b"\0"));
    assert_eq!(to_pb::delete_range_request(converted), del);
    let compaction = pb::CompactionRequest { revision: 42, physical: true };
    let converted = from_pb::compaction_request(compaction);
    assert_eq!(converted, mvcc::CompactionRequest { revision: Revision(42), physical: true });
    assert_eq!(to_pb::compaction_request(converted), compaction);
    let revoke = pb::LeaseRevokeRequest { id: -3 };
    assert_eq!(to_pb::lease_revoke_request(from_pb::lease_revoke_request(revoke).unwrap()), revoke);
}

#[test]
fn negative_limits_and_revisions_pass_through_as_etcd_reads_them() {
    let req = pb::RangeRequest { key: b("k"), limit: -1, revision: -5, ..Default::default() };
    let converted = from_pb::range_request(req).unwrap();
    assert_eq!((converted.limit, converted.revision), (-1, Revision(-5)));
}

#[test]
fn a_compare_union_that_does_not_match_its_target_reads_as_the_default() {
    let mismatched = |target: i32| pb::TxnRequest {
        compare: vec![pb_compare(0, target, "k", TargetUnion::Value(b("x")))],
        ..Default::default()
    };
    let target_of = |target: i32| {
        from_pb::txn_request(mismatched(target), &RequestLimits::default()).unwrap().compare[0]
            .target
            .clone()
    };
    assert_eq!(target_of(0), CompareTarget::Version(0));
    assert_eq!(target_of(1), CompareTarget::Create(Revision(0)));
    assert_eq!(target_of(2), CompareTarget::Mod(Revision(0)));
    assert_eq!(target_of(4), CompareTarget::Lease(LeaseId::NONE));
    // No union at all: a value compare against the empty value.
    let no_union = pb::TxnRequest {
        compare: vec![pb::Compare { target: 3, key: b("k"), ..Default::default() }],
        ..Default::default()
    };
    let converted = from_pb::txn_request(no_union, &RequestLimits::default()).unwrap();
    assert_eq!(converted.compare[0].target, CompareTarget::Value(Bytes::new()));
    // Back on the wire the union names the target's field.
    let back = to_pb::txn_request(converted);
    assert_eq!(back.compare[0].target_union, Some(TargetUnion::Value(Vec::new())));
}

fn txn_error(req: pb::TxnRequest) -> String {
    from_pb::txn_request(req, &RequestLimits::default()).unwrap_err().to_string()
}

fn puts(keys: &[&str]) -> Vec<pb::RequestOp> {
    keys.iter()
        .map(|k| op(Request::RequestPut(pb::PutRequest { key: b(k), ..Default::default() })))
        .collect()
}

#[test]
fn empty_keys_are_refused_everywhere_with_etcds_message() {
    let limits = RequestLimits::default();
    let empty = "etcdserver: key is not provided";
    let range = pb::RangeRequest::default();
    assert_eq!(from_pb::range_request(range).unwrap_err().to_string(), empty);
    let put = pb::PutRequest { value: b("v"), ..Default::default() };
    assert_eq!(from_pb::put_request(put, &limits).unwrap_err().to_string(), empty);
    let del = pb::DeleteRangeRequest { range_end: b("z"), ..Default::default() };
    assert_eq!(from_pb::delete_range_request(del, &limits).unwrap_err().to_string(), empty);
    let compare = pb::TxnRequest { compare: vec![pb::Compare::default()], ..Default::default() };
    assert_eq!(txn_error(compare), empty);
    let in_op = pb::TxnRequest {
        failure: vec![op(Request::RequestRange(pb::RangeRequest::default()))],
        ..Default::default()
    };
    assert_eq!(txn_error(in_op), empty);
    let nested = pb::TxnRequest {
        success: vec![op(Request::RequestTxn(pb::TxnRequest {
            success: vec![op(Request::RequestDeleteRange(pb::DeleteRangeRequest::default()))],
            ..Default::default()
        }))],
        ..Default::default()
    };
    assert_eq!(txn_error(nested), empty);
}

#[test]
fn put_flags_are_checked_as_etcd_does() {
    let limits = RequestLimits::default();
    let value =
        pb::PutRequest { key: b("k"), value: b("v"), ignore_value: true, ..Default::default() };
    assert_eq!(
        from_pb::put_request(value.clone(), &limits).unwrap_err().to_string(),
        "etcdserver: value is provided"
    );
    let lease = pb::PutRequest { key: b("k"), lease: 3, ignore_lease: true, ..Default::default() };
    assert_eq!(
        from_pb::put_request(lease.clone(), &limits).unwrap_err().to_string(),
        "etcdserver: lease is provided"
    );
    // The same checks inside a transaction (done by the store's validation).
    let txn = |p: pb::PutRequest| pb::TxnRequest {
        success: vec![op(Request::RequestPut(p))],
        ..Default::default()
    };
    assert_eq!(txn_error(txn(value)), "etcdserver: value is provided");
    assert_eq!(txn_error(txn(lease)), "etcdserver: lease is provided");
}

#[test]
fn an_operation_with_no_request_is_key_not_found() {
    let req =
        pb::TxnRequest { success: vec![pb::RequestOp { request: None }], ..Default::default() };
    assert_eq!(txn_error(req), "etcdserver: key not found");
}

#[test]
fn too_many_operations_counts_as_etcd_does() {
    let many = |n: usize| -> Vec<String> { (0..n).map(|i| format!("k{i}")).collect() };
    let ops = |n: usize| puts(&many(n).iter().map(String::as_str).collect::<Vec<_>>());
    let too_many = "etcdserver: too many operations in txn request";
    let at_limit = pb::TxnRequest { success: ops(128), ..Default::default() };
    assert!(from_pb::txn_request(at_limit, &RequestLimits::default()).is_ok());
    assert_eq!(txn_error(pb::TxnRequest { failure: ops(129), ..Default::default() }), too_many);
    let compares = (0..129).map(|_| pb_compare(0, 0, "k", TargetUnion::Version(0))).collect();
    assert_eq!(txn_error(pb::TxnRequest { compare: compares, ..Default::default() }), too_many);
    // A nested transaction gets what its parent leaves: 128 - 100 = 28.
    let nested = |n: usize| {
        let mut success: Vec<pb::RequestOp> = puts(&["outer0"]);
        success.extend((1..100).map(|i| {
            op(Request::RequestRange(pb::RangeRequest {
                key: b(&format!("r{i}")),
                ..Default::default()
            }))
        }));
        success.push(op(Request::RequestTxn(pb::TxnRequest {
            success: ops(n),
            ..Default::default()
        })));
        pb::TxnRequest { success, ..Default::default() }
    };
    // 101 operations at the outer level leave 27 for the nested one.
    assert!(from_pb::txn_request(nested(27), &RequestLimits::default()).is_ok());
    assert_eq!(txn_error(nested(28)), too_many);
    // The limit is the server's flag.
    let limits = RequestLimits { txn_ops_max: 2, ..RequestLimits::default() };
    let three = pb::TxnRequest { success: ops(3), ..Default::default() };
    assert_eq!(from_pb::txn_request(three, &limits).unwrap_err(), EtcdError::TooManyOps);
}

#[test]
fn duplicate_keys_in_a_txn_are_refused() {
    let dup = "etcdserver: duplicate key given in txn request";
    assert_eq!(txn_error(pb::TxnRequest { success: puts(&["a", "a"]), ..Default::default() }), dup);
    let mut put_in_deleted_range = puts(&["b"]);
    put_in_deleted_range.push(op(Request::RequestDeleteRange(pb::DeleteRangeRequest {
        key: b("a"),
        range_end: b("c"),
        prev_kv: false,
    })));
    assert_eq!(
        txn_error(pb::TxnRequest { success: put_in_deleted_range, ..Default::default() }),
        dup
    );
    let mut nested = puts(&["a"]);
    nested.push(op(Request::RequestTxn(pb::TxnRequest {
        success: puts(&["a"]),
        ..Default::default()
    })));
    assert_eq!(txn_error(pb::TxnRequest { failure: nested, ..Default::default() }), dup);
    // The two branches of one level are exclusive: the same key is fine.
    let branches =
        pb::TxnRequest { success: puts(&["a"]), failure: puts(&["a"]), ..Default::default() };
    assert!(from_pb::txn_request(branches, &RequestLimits::default()).is_ok());
}

#[test]
fn enum_values_outside_the_protocol_are_refused() {
    let range = |sort_order, sort_target| pb::RangeRequest {
        key: b("k"),
        sort_order,
        sort_target,
        ..Default::default()
    };
    assert_eq!(
        from_pb::range_request(range(3, 0)).unwrap_err(),
        EtcdError::InvalidEnum { field: "RangeRequest.sort_order", value: 3, max: 2 }
    );
    assert_eq!(
        from_pb::range_request(range(0, -1)).unwrap_err(),
        EtcdError::InvalidEnum { field: "RangeRequest.sort_target", value: -1, max: 4 }
    );
    assert_eq!(
        from_pb::range_request(range(0, 5)).unwrap_err().to_string(),
        "ringkv: RangeRequest.sort_target has no value 5 in etcd's protocol (known values: 0 to 4)"
    );
    let in_txn = pb::TxnRequest {
        success: vec![op(Request::RequestRange(range(9, 0)))],
        ..Default::default()
    };
    assert_eq!(
        from_pb::txn_request(in_txn, &RequestLimits::default()).unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let compare = |result, target| pb::TxnRequest {
        compare: vec![pb_compare(result, target, "k", TargetUnion::Version(0))],
        ..Default::default()
    };
    assert_eq!(
        from_pb::txn_request(compare(4, 0), &RequestLimits::default()).unwrap_err(),
        EtcdError::InvalidEnum { field: "Compare.result", value: 4, max: 3 }
    );
    assert_eq!(
        from_pb::txn_request(compare(0, 5), &RequestLimits::default()).unwrap_err(),
        EtcdError::InvalidEnum { field: "Compare.target", value: 5, max: 4 }
    );
}

#[test]
fn proposals_over_the_size_limit_are_refused_and_reads_are_not() {
    let limits = RequestLimits { request_bytes_max: 64, ..RequestLimits::default() };
    let big = vec![b'x'; 64];
    let put = pb::PutRequest { key: b("k"), value: big.clone(), ..Default::default() };
    assert_eq!(
        from_pb::put_request(put, &limits).unwrap_err().to_string(),
        "etcdserver: request is too large"
    );
    let fits = pb::PutRequest { key: b("k"), value: vec![b'x'; 50], ..Default::default() };
    assert!(from_pb::put_request(fits, &limits).is_ok());
    let del = pb::DeleteRangeRequest { key: big.clone(), ..Default::default() };
    assert_eq!(
        from_pb::delete_range_request(del, &limits).unwrap_err(),
        EtcdError::RequestTooLarge
    );
    let write_txn = pb::TxnRequest {
        success: vec![op(Request::RequestPut(pb::PutRequest {
            key: big.clone(),
            ..Default::default()
        }))],
        ..Default::default()
    };
    assert_eq!(from_pb::txn_request(write_txn, &limits).unwrap_err(), EtcdError::RequestTooLarge);
    // A read-only transaction is served without a proposal, so no limit.
    let read_txn = pb::TxnRequest {
        success: vec![op(Request::RequestRange(pb::RangeRequest {
            key: big.clone(),
            ..Default::default()
        }))],
        failure: vec![op(Request::RequestTxn(pb::TxnRequest {
            success: vec![op(Request::RequestRange(pb::RangeRequest {
                key: big,
                ..Default::default()
            }))],
            ..Default::default()
        }))],
        ..Default::default()
    };
    let converted = from_pb::txn_request(read_txn, &limits).unwrap();
    assert!(from_pb::txn_is_read_only(&converted));
    assert!(!from_pb::txn_is_read_only(&rich_mvcc_txn()));
    assert_eq!(RequestLimits::default().grpc_message_bytes_max(), 3 * 1024 * 1024 / 2 + 512 * 1024);
}

#[test]
fn lease_grant_chooses_an_id_only_for_zero_and_raises_short_ttls() {
    let limits = RequestLimits { lease_ttl_min_seconds: 5, ..RequestLimits::default() };
    let called = Cell::new(false);
    let new_id = || {
        called.set(true);
        LeaseId(77)
    };
    let chosen =
        from_pb::lease_grant_request(pb::LeaseGrantRequest { ttl: 60, id: 0 }, &limits, new_id);
    assert_eq!(chosen.unwrap(), mvcc::LeaseGrantRequest { id: LeaseId(77), ttl: 60 });
    assert!(called.replace(false));
    let given =
        from_pb::lease_grant_request(pb::LeaseGrantRequest { ttl: 1, id: 9 }, &limits, || {
            called.set(true);
            LeaseId(1)
        });
    assert_eq!(given.unwrap(), mvcc::LeaseGrantRequest { id: LeaseId(9), ttl: 5 });
    assert!(!called.get(), "a requested id is kept");
    let negative =
        from_pb::lease_grant_request(pb::LeaseGrantRequest { ttl: -10, id: 9 }, &limits, || {
            LeaseId(1)
        });
    assert_eq!(negative.unwrap().ttl, 5);
    let max = ringkv_storage::mvcc::LEASE_TTL_MAX_SECONDS;
    let at_max =
        from_pb::lease_grant_request(pb::LeaseGrantRequest { ttl: max, id: 9 }, &limits, || {
            LeaseId(1)
        });
    assert_eq!(at_max.unwrap().ttl, max);
    let too_large = from_pb::lease_grant_request(
        pb::LeaseGrantRequest { ttl: max + 1, id: 9 },
        &limits,
        || LeaseId(1),
    );
    assert_eq!(too_large.unwrap_err().to_string(), "etcdserver: too large lease TTL");
    let back = to_pb::lease_grant_request(mvcc::LeaseGrantRequest { id: LeaseId(9), ttl: 5 });
    assert_eq!(back, pb::LeaseGrantRequest { ttl: 5, id: 9 });
}

#[test]
#[should_panic(expected = "the lease id generator returned 0")]
fn a_lease_id_generator_returning_zero_is_a_bug() {
    let _ = from_pb::lease_grant_request(
        pb::LeaseGrantRequest { ttl: 5, id: 0 },
        &RequestLimits::default(),
        || LeaseId::NONE,
    );
}

#[test]
fn revoking_lease_zero_is_lease_not_found() {
    assert_eq!(
        from_pb::lease_revoke_request(pb::LeaseRevokeRequest { id: 0 }).unwrap_err().to_string(),
        "etcdserver: requested lease not found"
    );
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
        lease: LeaseId(0),
    }
}

#[test]
fn key_values_convert_field_by_field_both_ways() {
    let store = mvcc::KeyValue { lease: LeaseId(-4), ..kv("foo", 2, 5, 4, "bar") };
    let wire = to_pb::key_value(store.clone());
    assert_eq!(
        wire,
        mvccpb::KeyValue {
            key: b("foo"),
            create_revision: 2,
            mod_revision: 5,
            version: 4,
            value: b("bar"),
            lease: -4,
        }
    );
    assert_eq!(from_pb::key_value(wire), store);
}

#[test]
fn range_response_gets_a_full_header() {
    let resp = mvcc::RangeResponse {
        revision: Revision(5),
        kvs: vec![kv("foo", 2, 5, 4, "bar")],
        more: true,
        count: 3,
    };
    let wire = to_pb::range_response(resp, &INFO);
    assert_eq!(
        wire.header,
        Some(ResponseHeader {
            cluster_id: INFO.cluster_id,
            member_id: INFO.member_id,
            revision: 5,
            raft_term: 2,
        })
    );
    assert_eq!(wire.kvs.len(), 1);
    assert_eq!(wire.kvs[0].key, b("foo"));
    assert!(wire.more);
    assert_eq!(wire.count, 3);
}

#[test]
fn txn_response_headers_inside_carry_only_their_revision() {
    let resp = mvcc::TxnResponse {
        revision: Revision(8),
        succeeded: true,
        responses: vec![
            mvcc::ResponseOp::Range(mvcc::RangeResponse {
                revision: Revision(7),
                kvs: vec![kv("a", 1, 7, 2, "x")],
                more: false,
                count: 1,
            }),
            mvcc::ResponseOp::Put(mvcc::PutResponse {
                revision: Revision(8),
                prev_kv: Some(kv("p", 3, 3, 1, "old")),
            }),
            mvcc::ResponseOp::DeleteRange(mvcc::DeleteRangeResponse {
                revision: Revision(8),
                deleted: 2,
                prev_kvs: vec![kv("d", 4, 4, 1, "")],
            }),
            mvcc::ResponseOp::Txn(mvcc::TxnResponse {
                revision: Revision(8),
                succeeded: false,
                responses: vec![mvcc::ResponseOp::Put(mvcc::PutResponse {
                    revision: Revision(8),
                    prev_kv: None,
                })],
            }),
        ],
    };
    let wire = to_pb::txn_response(resp, &INFO);
    assert_eq!(wire.header, Some(INFO.header(Revision(8))));
    assert!(wire.succeeded);
    let revision_only = |r| Some(ResponseHeader { revision: r, ..Default::default() });
    let responses: Vec<_> = wire.responses.into_iter().map(|r| r.response.unwrap()).collect();
    let [
        Response::ResponseRange(range),
        Response::ResponsePut(put),
        Response::ResponseDeleteRange(del),
        Response::ResponseTxn(nested),
    ] = responses.as_slice()
    else {
        panic!("unexpected response kinds: {responses:?}");
    };
    assert_eq!(range.header, revision_only(7));
    assert_eq!(range.kvs[0].mod_revision, 7);
    assert_eq!(put.header, revision_only(8));
    assert_eq!(put.prev_kv.as_ref().map(|kv| kv.value.clone()), Some(b("old")));
    assert_eq!(del.header, revision_only(8));
    assert_eq!((del.deleted, del.prev_kvs.len()), (2, 1));
    assert_eq!(nested.header, Some(ResponseHeader::default()), "etcd leaves it empty");
    assert!(!nested.succeeded);
    assert_eq!(
        nested.responses[0].response,
        Some(Response::ResponsePut(pb::PutResponse { header: revision_only(8), prev_kv: None }))
    );
}

#[test]
fn write_responses_carry_the_store_revision() {
    let put =
        to_pb::put_response(mvcc::PutResponse { revision: Revision(3), prev_kv: None }, &INFO);
    assert_eq!(put, pb::PutResponse { header: Some(INFO.header(Revision(3))), prev_kv: None });
    let del = to_pb::delete_range_response(
        mvcc::DeleteRangeResponse { revision: Revision(4), deleted: 0, prev_kvs: vec![] },
        &INFO,
    );
    assert_eq!(del.header, Some(INFO.header(Revision(4))));
    let compaction =
        to_pb::compaction_response(mvcc::CompactionResponse { revision: Revision(6) }, &INFO);
    assert_eq!(compaction.header, Some(INFO.header(Revision(6))));
    let grant = to_pb::lease_grant_response(
        mvcc::LeaseGrantResponse { revision: Revision(6), id: LeaseId(7), ttl: 30 },
        &INFO,
    );
    assert_eq!((grant.id, grant.ttl, grant.error.as_str()), (7, 30, ""));
    let revoke =
        to_pb::lease_revoke_response(mvcc::LeaseRevokeResponse { revision: Revision(9) }, &INFO);
    assert_eq!(revoke.header, Some(INFO.header(Revision(9))));
}

#[test]
fn events_drop_the_previous_version_unless_asked() {
    let put = mvcc::Event {
        kind: EventKind::Put,
        kv: kv("k", 2, 6, 2, "new"),
        prev_kv: Some(kv("k", 2, 2, 1, "old")),
    };
    let with = to_pb::event(put.clone(), true);
    assert_eq!(with.r#type, mvccpb::event::EventType::Put as i32);
    assert_eq!(with.prev_kv.map(|kv| kv.value), Some(b("old")));
    assert_eq!(to_pb::event(put, false).prev_kv, None);
    let delete = mvcc::Event {
        kind: EventKind::Delete,
        kv: mvcc::KeyValue {
            key: Bytes::from("k"),
            mod_revision: Revision(7),
            ..Default::default()
        },
        prev_kv: None,
    };
    let wire = to_pb::event(delete, true);
    assert_eq!(wire.r#type, mvccpb::event::EventType::Delete as i32);
    assert_eq!(
        wire.kv,
        Some(mvccpb::KeyValue { key: b("k"), mod_revision: 7, ..Default::default() })
    );
}

#[test]
fn lease_answers_for_missing_leases_are_etcds_not_errors() {
    let gone = to_pb::lease_keep_alive_response(&INFO, Revision(4), LeaseId(10), None);
    assert_eq!((gone.id, gone.ttl), (10, 0));
    let alive = to_pb::lease_keep_alive_response(&INFO, Revision(4), LeaseId(9), Some(30));
    assert_eq!((alive.id, alive.ttl, alive.header), (9, 30, Some(INFO.header(Revision(4)))));
    let missing = to_pb::lease_time_to_live_response(&INFO, Revision(4), LeaseId(8), None);
    assert_eq!((missing.id, missing.ttl, missing.granted_ttl), (8, -1, 0));
    let found = to_pb::lease_time_to_live_response(
        &INFO,
        Revision(4),
        LeaseId(7),
        Some(to_pb::LeaseTimeToLive {
            remaining_seconds: 29,
            granted_seconds: 30,
            keys: vec![Bytes::from("a"), Bytes::from("b")],
        }),
    );
    assert_eq!((found.ttl, found.granted_ttl, found.keys), (29, 30, vec![b("a"), b("b")]));
    let leases = to_pb::lease_leases_response(&INFO, Revision(4), [LeaseId(7), LeaseId(9)]);
    assert_eq!(leases.leases, vec![pb::LeaseStatus { id: 7 }, pb::LeaseStatus { id: 9 }]);
}
