//! KV end to end: put, get, range options, txn, compact, errors with
//! etcd's exact codes and strings, the `hasleader` rule, oversize requests.

use ringkv_api::etcdserverpb::{
    self as pb, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, compare, range_request, request_op, response_op,
};
use tonic::Code;

use crate::common::*;

fn range(key: &str) -> RangeRequest {
    RangeRequest { key: key.into(), ..Default::default() }
}

fn keys(resp: &pb::RangeResponse) -> Vec<String> {
    resp.kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_semantics_end_to_end() {
    let m = single().await;
    let mut kv = m.kv().await;
    let state = m.server().state();

    // Put and get, with etcd's revisions and header.
    let first = put(&m, "a", "1").await;
    assert_eq!(first, 2, "a fresh store is at revision 1; the first write makes 2");
    for (k, v) in [("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")] {
        put(&m, k, v).await;
    }
    let resp = kv.range(range("a")).await.unwrap().into_inner();
    let header = resp.header.unwrap();
    assert_eq!(header.revision, 6);
    assert_eq!(header.member_id, m.server().member_id().0);
    assert_eq!(header.cluster_id, state.cluster_id());
    assert!(header.cluster_id != 0 && header.raft_term >= 2);
    assert_eq!(resp.kvs[0].value, b"1");
    assert_eq!(
        (resp.kvs[0].create_revision, resp.kvs[0].mod_revision, resp.kvs[0].version),
        (2, 2, 1)
    );

    // Range options: prefix/range, limit + more + count, sort, keys_only,
    // count_only, serializable, revision, min/max filters, from-key.
    let all = RangeRequest { key: b"a".to_vec(), range_end: b"f".to_vec(), ..Default::default() };
    let resp = kv.range(RangeRequest { limit: 2, ..all.clone() }).await.unwrap().into_inner();
    assert_eq!((keys(&resp), resp.more, resp.count), (vec!["a".into(), "b".into()], true, 5));
    let desc = RangeRequest {
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Key as i32,
        limit: 2,
        ..all.clone()
    };
    assert_eq!(keys(&kv.range(desc).await.unwrap().into_inner()), ["e", "d"]);
    let keys_only =
        kv.range(RangeRequest { keys_only: true, ..all.clone() }).await.unwrap().into_inner();
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()) && keys_only.kvs.len() == 5);
    let count_only =
        kv.range(RangeRequest { count_only: true, ..all.clone() }).await.unwrap().into_inner();
    assert_eq!((count_only.kvs.len(), count_only.count), (0, 5));
    let serializable =
        kv.range(RangeRequest { serializable: true, ..all.clone() }).await.unwrap().into_inner();
    assert_eq!(serializable.count, 5);
    let at_3 = kv.range(RangeRequest { revision: 3, ..all.clone() }).await.unwrap().into_inner();
    assert_eq!(keys(&at_3), ["a", "b"], "the store as of revision 3");
    let filtered = RangeRequest { min_mod_revision: 4, max_mod_revision: 5, ..all.clone() };
    assert_eq!(keys(&kv.range(filtered).await.unwrap().into_inner()), ["c", "d"]);
    let from_key = RangeRequest { key: b"c".to_vec(), range_end: vec![0], ..Default::default() };
    assert_eq!(keys(&kv.range(from_key).await.unwrap().into_inner()), ["c", "d", "e"]);

    // Put with prev_kv; delete with prev_kv.
    let resp = kv
        .put(PutRequest {
            key: b"a".to_vec(),
            value: b"1b".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.prev_kv.unwrap().value, b"1");
    let resp = kv
        .delete_range(DeleteRangeRequest {
            key: b"d".to_vec(),
            range_end: b"f".to_vec(),
            prev_kv: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.deleted, resp.prev_kvs.len()), (2, 2));
    let rev_after_delete = resp.header.unwrap().revision;

    // Txn: compare on mod revision (Kubernetes' optimistic update).
    let cas = |expected: i64, value: &str| TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"a".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(expected)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"a".to_vec(),
                value: value.into(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp { request: Some(request_op::Request::RequestRange(range("a"))) }],
    };
    let a_mod = kv.range(range("a")).await.unwrap().into_inner().kvs[0].mod_revision;
    let ok = kv.txn(cas(a_mod, "won")).await.unwrap().into_inner();
    assert!(ok.succeeded);
    assert_eq!(ok.header.unwrap().revision, rev_after_delete + 1);
    let lost = kv.txn(cas(a_mod, "lost")).await.unwrap().into_inner();
    assert!(!lost.succeeded);
    match &lost.responses[0].response {
        Some(response_op::Response::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b"won"),
        other => panic!("{other:?}"),
    }

    // Errors, with etcd's codes and messages.
    let err = kv.range(range("")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "etcdserver: key is not provided")
    );
    let err = kv.range(RangeRequest { revision: 1000, ..range("a") }).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision")
    );
    let dup = TxnRequest {
        success: vec![
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"x".to_vec(),
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"x".to_vec(),
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    let err = kv.txn(dup).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "etcdserver: duplicate key given in txn request")
    );
    let err = kv
        .put(PutRequest { key: b"nope".to_vec(), ignore_value: true, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "etcdserver: key not found"));
    let err = kv
        .put(PutRequest { key: b"k".to_vec(), lease: 12345, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );

    // Compact: reads below it fail as compacted, at it still work.
    let current = kv.range(range("a")).await.unwrap().into_inner().header.unwrap().revision;
    kv.compact(CompactionRequest { revision: current - 1, physical: true }).await.unwrap();
    let err = kv.range(RangeRequest { revision: 2, ..range("a") }).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
    );
    kv.range(RangeRequest { revision: current - 1, ..range("a") }).await.unwrap();
    let err =
        kv.compact(CompactionRequest { revision: current - 2, physical: false }).await.unwrap_err();
    assert_eq!(err.message(), "etcdserver: mvcc: required revision has been compacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_ops_and_oversize_requests_are_refused_with_etcds_errors() {
    let m = single_with(&["--max-txn-ops=4", "--max-request-bytes=1024"]).await;
    let mut kv = m.kv().await;
    let puts = |n: usize| TxnRequest {
        success: (0..n)
            .map(|i| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: format!("k{i}").into_bytes(),
                    ..Default::default()
                })),
            })
            .collect(),
        ..Default::default()
    };
    kv.txn(puts(4)).await.unwrap();
    let err = kv.txn(puts(5)).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "etcdserver: too many operations in txn request")
    );
    // Over --max-request-bytes but under the transport limit: etcd's error.
    let big = PutRequest { key: b"big".to_vec(), value: vec![b'x'; 2048], ..Default::default() };
    let err = kv.put(big).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "etcdserver: request is too large")
    );
    // Far over it: the gRPC transport refuses the message itself.
    let huge =
        PutRequest { key: b"huge".to_vec(), value: vec![b'x'; 1024 * 1024], ..Default::default() };
    let err = kv.put(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // The server still works.
    put(&m, "after", "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hasleader_calls_fail_without_a_leader() {
    // A member of a two-member cluster whose peer is gone has no leader.
    let mut members = cluster_with(2, &[]).await;
    wait_leader(&members).await;
    // A stream opened with `hasleader` while there is a leader is ended
    // with `no leader` once the leader is lost.
    let mut lease =
        ringkv_api::etcdserverpb::lease_client::LeaseClient::connect(members[0].endpoint.clone())
            .await
            .unwrap();
    let mut open = tonic::Request::new(futures_util::stream::pending::<
        ringkv_api::etcdserverpb::LeaseKeepAliveRequest,
    >());
    open.metadata_mut().insert("hasleader", "true".parse().unwrap());
    let mut stream = lease.lease_keep_alive(open).await.unwrap().into_inner();
    members[1].stop().await;
    let ended = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream was not ended when the leader was lost")
        .unwrap_err();
    assert_eq!((ended.code(), ended.message()), (Code::Unavailable, "etcdserver: no leader"));
    let lonely = &members[0];
    let state = lonely.server().state();
    eventually("the lonely member knows no leader", || async { !state.has_leader() }).await;
    let mut kv = lonely.kv().await;
    // With `hasleader`, even a read the member could serve alone fails.
    let mut request = tonic::Request::new(RangeRequest { serializable: true, ..range("a") });
    request.metadata_mut().insert("hasleader", "true".parse().unwrap());
    let err = kv.range(request).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unavailable, "etcdserver: no leader"));
    // Without it, the serializable read is served from the local replica.
    let resp = kv.range(RangeRequest { serializable: true, ..range("a") }).await.unwrap();
    assert_eq!(resp.into_inner().kvs.len(), 0);
}

/// Serializable ranges are served off the node thread; the node serves
/// them too (with direct reads off, or with auth on). Both must give the
/// same answer, header and errors included, and those must be etcd's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_reads_answer_alike_on_and_off_the_node_thread() {
    let m = single().await;
    let mut kv = m.kv().await;
    let state = m.server().state();
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("a", "4")] {
        put(&m, k, v).await;
    }
    kv.compact(CompactionRequest { revision: 3, physical: true }).await.unwrap();
    let ser = |r: RangeRequest| RangeRequest { serializable: true, ..r };
    let all = RangeRequest { key: b"a".to_vec(), range_end: b"z".to_vec(), ..Default::default() };
    let requests = [
        ser(range("a")),
        ser(range("missing")),
        ser(all.clone()),
        ser(RangeRequest { revision: 4, ..all.clone() }),
        ser(RangeRequest { count_only: true, ..all.clone() }),
        ser(RangeRequest { revision: 2, ..range("a") }),
        ser(RangeRequest { revision: 100, ..range("a") }),
    ];
    let mut answers = Vec::new();
    for direct in [true, false] {
        state.set_direct_serializable_reads(direct);
        let mut got = Vec::new();
        for r in &requests {
            let answer = kv.range(r.clone()).await;
            got.push(
                answer.map(|r| r.into_inner()).map_err(|s| (s.code(), s.message().to_owned())),
            );
        }
        answers.push(got);
    }
    state.set_direct_serializable_reads(true);
    assert_eq!(answers[0], answers[1], "direct (left) and through the node (right)");

    // Alike, and right: etcd's header and errors.
    let direct = &answers[0];
    let first = direct[0].as_ref().unwrap();
    let header = first.header.unwrap();
    assert_eq!(header.revision, 5);
    assert_eq!(header.member_id, m.server().member_id().0);
    assert!(header.cluster_id != 0 && header.cluster_id == state.cluster_id());
    let linearizable = kv.range(range("a")).await.unwrap().into_inner().header.unwrap();
    assert_eq!(header, linearizable, "no write or election between them");
    assert_eq!(first.kvs[0].value, b"4");
    assert_eq!(keys(direct[2].as_ref().unwrap()), ["a", "b", "c"]);
    assert_eq!(keys(direct[3].as_ref().unwrap()), ["a", "b", "c"]);
    assert_eq!(direct[3].as_ref().unwrap().kvs[0].value, b"1", "a as of revision 4");
    assert_eq!(direct[4].as_ref().unwrap().count, 3);
    let compacted = "etcdserver: mvcc: required revision has been compacted";
    assert_eq!(direct[5].as_ref().unwrap_err(), &(Code::OutOfRange, compacted.to_owned()));
    let future = "etcdserver: mvcc: required revision is a future revision";
    assert_eq!(direct[6].as_ref().unwrap_err(), &(Code::OutOfRange, future.to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_client_crate_works_unchanged() {
    use etcd_client::{Compare as C, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
    let m = single().await;
    let mut client = m.etcd().await;
    client.put("/app/a", "1", None).await.unwrap();
    client.put("/app/b", "2", None).await.unwrap();
    client.put("/other", "3", None).await.unwrap();
    let resp = client
        .get(
            "/app/",
            Some(GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Descend)),
        )
        .await
        .unwrap();
    let got: Vec<(&str, &str)> =
        resp.kvs().iter().map(|kv| (kv.key_str().unwrap(), kv.value_str().unwrap())).collect();
    assert_eq!(got, [("/app/b", "2"), ("/app/a", "1")]);
    let txn = Txn::new()
        .when([C::value("/app/a", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("/app/a", "10", None)])
        .or_else([TxnOp::get("/app/a", None)]);
    assert!(client.txn(txn).await.unwrap().succeeded());
    let resp = client.get("/app/a", None).await.unwrap();
    assert_eq!(resp.kvs()[0].value_str().unwrap(), "10");
    let deleted = client
        .delete("/app/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(deleted.deleted(), 2);
    let err = client.get("", None).await.unwrap_err();
    match err {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!(s.message(), "etcdserver: key is not provided");
        }
        other => panic!("{other:?}"),
    }
}
