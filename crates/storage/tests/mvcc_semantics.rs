//! etcd v3 semantics of the MVCC store, one behaviour per test.
#![allow(clippy::unwrap_used)]

mod mvcc_common;

use bytes::Bytes;
use mvcc_common::*;
use ringkv_storage::mvcc::*;

#[test]
fn revisions_and_versions_across_put_delete_recreate() {
    let mut t = Shard::in_memory();
    assert_eq!(t.revision(), 1, "a fresh store is at revision 1, as etcd");
    assert_eq!(t.put("a", "1").revision, Revision(2));
    assert_eq!(t.put("a", "2").revision, Revision(3));
    let kv = t.get("a").unwrap();
    assert_eq!((kv.create_revision.0, kv.mod_revision.0, kv.version), (2, 3, 2));
    assert_eq!(kv.value, b("2"));

    let d = t.delete("a", "");
    assert_eq!((d.revision.0, d.deleted), (4, 1));
    assert!(t.get("a").is_none());

    t.put("a", "3");
    let kv = t.get("a").unwrap();
    assert_eq!((kv.create_revision.0, kv.mod_revision.0, kv.version), (5, 5, 1), "new generation");

    // Deleting nothing does not take a revision.
    let d = t.delete("zzz", "");
    assert_eq!((d.revision.0, d.deleted), (5, 0));
    assert_eq!(t.revision(), 5);
}

#[test]
fn events_carry_prev_kv_and_share_the_revision() {
    let mut t = Shard::in_memory();
    let a = t.apply(Command::Put(put("a", "1")));
    assert_eq!(a.events.len(), 1);
    assert_eq!(a.events[0].kind, EventKind::Put);
    assert_eq!(a.events[0].prev_kv, None);
    assert_eq!(a.events[0].kv.version, 1);
    let a = t.apply(Command::Put(put("a", "2")));
    assert_eq!(a.events[0].prev_kv.as_ref().unwrap().value, b("1"));
    t.put("b", "x");
    let a = t.apply(Command::DeleteRange(DeleteRangeRequest {
        key: b("a"),
        range_end: b("c"),
        prev_kv: false,
    }));
    assert_eq!(a.events.len(), 2);
    for e in &a.events {
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.kv.mod_revision, Revision(5));
        assert_eq!((e.kv.create_revision.0, e.kv.version, e.kv.value.len()), (0, 0, 0));
        assert!(e.prev_kv.is_some(), "delete events always carry the previous version");
    }
    assert_eq!(a.events[1].prev_kv.as_ref().unwrap().value, b("x"));
}

fn fill(t: &mut Shard) {
    // rev 2..=6
    for (k, v) in [("a", "5"), ("b", "4"), ("c", "3"), ("d", "2"), ("e", "1")] {
        t.put(k, v);
    }
    t.put("b", "44"); // rev 7: b version 2
}

#[test]
fn range_single_prefix_from_key_and_whole_keyspace() {
    let mut t = Shard::in_memory();
    fill(&mut t);
    t.put("ab", "x"); // rev 8
    assert_eq!(t.keys(&range("a", "")), ["a"]);
    assert_eq!(t.keys(&range("a", "b")), ["a", "ab"], "prefix a");
    assert_eq!(t.keys(&range("b", "d")), ["b", "c"]);
    assert_eq!(t.keys(&range("c", "\0")), ["c", "d", "e"], "from-key");
    assert_eq!(t.keys(&range("\0", "\0")), ["a", "ab", "b", "c", "d", "e"], "whole keyspace");
    assert_eq!(t.keys(&range("d", "b")), Vec::<String>::new(), "end before start");
    assert!(t.keys(&range("zz", "")).is_empty());
    assert_eq!(t.range(&range("", "")).unwrap_err(), MvccError::EmptyKey);
}

#[test]
fn range_limit_more_and_count() {
    let mut t = Shard::in_memory();
    fill(&mut t);
    let r = t.range(&RangeRequest { limit: 2, ..range("\0", "\0") }).unwrap();
    assert_eq!(r.kvs.len(), 2);
    assert!(r.more);
    assert_eq!(r.count, 5);
    let r = t.range(&RangeRequest { limit: 5, ..range("\0", "\0") }).unwrap();
    assert!(!r.more);
    let r = t.range(&RangeRequest { limit: -1, ..range("\0", "\0") }).unwrap();
    assert_eq!((r.kvs.len(), r.more), (5, false), "a negative limit is no limit");
    assert_eq!(r.revision, Revision(7));
}

#[test]
fn range_sort_orders_and_targets() {
    let mut t = Shard::in_memory();
    fill(&mut t);
    let sorted = |order, target| {
        t.keys(&RangeRequest { sort_order: order, sort_target: target, ..range("\0", "\0") })
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(None, Key), ["a", "b", "c", "d", "e"]);
    assert_eq!(sorted(Ascend, Key), ["a", "b", "c", "d", "e"]);
    assert_eq!(sorted(Descend, Key), ["e", "d", "c", "b", "a"]);
    assert_eq!(sorted(Ascend, Value), ["e", "d", "c", "b", "a"], "values 1,2,3,44,5");
    assert_eq!(sorted(None, Value), ["e", "d", "c", "b", "a"], "no order + non-key target ascends");
    assert_eq!(sorted(Descend, Value), ["a", "b", "c", "d", "e"]);
    assert_eq!(sorted(Descend, Mod), ["b", "e", "d", "c", "a"]);
    assert_eq!(sorted(Ascend, Create), ["a", "b", "c", "d", "e"]);
    assert_eq!(sorted(Descend, Create), ["e", "d", "c", "b", "a"]);
    // Ties keep key order.
    assert_eq!(sorted(Descend, Version), ["b", "a", "c", "d", "e"]);
    assert_eq!(sorted(Ascend, Version), ["a", "c", "d", "e", "b"]);
    // Sort before limit: the top of the sorted list, with `more`.
    let r = t
        .range(&RangeRequest {
            sort_order: Descend,
            sort_target: Mod,
            limit: 1,
            ..range("\0", "\0")
        })
        .unwrap();
    assert_eq!((s(&r.kvs[0].key), r.more, r.count), ("b".into(), true, 5));
}

#[test]
fn range_keys_only_and_count_only() {
    let mut t = Shard::in_memory();
    fill(&mut t);
    let r = t.range(&RangeRequest { keys_only: true, ..range("a", "c") }).unwrap();
    assert_eq!(r.kvs.len(), 2);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version > 0));
    let r = t
        .range(&RangeRequest { keys_only: true, sort_target: SortTarget::Value, ..range("a", "c") })
        .unwrap();
    assert_eq!(r.kvs.iter().map(|kv| s(&kv.key)).collect::<Vec<_>>(), ["b", "a"]);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    let r = t.range(&RangeRequest { count_only: true, limit: 1, ..range("\0", "\0") }).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 5, false));
}

#[test]
fn range_mod_and_create_revision_filters() {
    let mut t = Shard::in_memory();
    fill(&mut t); // a@2 b@3(mod 7) c@4 d@5 e@6
    let f = |req: RangeRequest| {
        let r = t.range(&RangeRequest { ..req }).unwrap();
        assert_eq!(r.count, 5, "count ignores filters");
        r.kvs.iter().map(|kv| s(&kv.key)).collect::<Vec<_>>()
    };
    let all = range("\0", "\0");
    assert_eq!(f(RangeRequest { min_mod_revision: Revision(5), ..all.clone() }), ["b", "d", "e"]);
    assert_eq!(f(RangeRequest { max_mod_revision: Revision(4), ..all.clone() }), ["a", "c"]);
    assert_eq!(
        f(RangeRequest { min_create_revision: Revision(4), ..all.clone() }),
        ["c", "d", "e"]
    );
    assert_eq!(f(RangeRequest { max_create_revision: Revision(3), ..all.clone() }), ["a", "b"]);
    assert_eq!(
        f(RangeRequest {
            min_create_revision: Revision(3),
            max_mod_revision: Revision(5),
            ..all.clone()
        }),
        ["c", "d"]
    );
    // A filter with a limit: the limit applies after filtering.
    let r =
        t.range(&RangeRequest { min_mod_revision: Revision(5), limit: 2, ..all.clone() }).unwrap();
    assert_eq!((r.kvs.len(), r.more), (2, true));
    assert_eq!(s(&r.kvs[1].key), "d");
}

#[test]
fn historical_reads() {
    let mut t = Shard::in_memory();
    t.put("a", "1"); // 2
    t.put("a", "2"); // 3
    t.put("b", "1"); // 4
    t.delete("a", ""); // 5
    t.put("a", "3"); // 6
    let at = |rev| {
        t.range(&RangeRequest { revision: Revision(rev), ..range("\0", "\0") })
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| format!("{}={}@{}v{}", s(&kv.key), s(&kv.value), kv.mod_revision, kv.version))
            .collect::<Vec<_>>()
    };
    assert!(at(1).is_empty());
    assert_eq!(at(2), ["a=1@2v1"]);
    assert_eq!(at(3), ["a=2@3v2"]);
    assert_eq!(at(4), ["a=2@3v2", "b=1@4v1"]);
    assert_eq!(at(5), ["b=1@4v1"]);
    assert_eq!(at(6), ["a=3@6v1", "b=1@4v1"]);
    assert_eq!(at(0), at(6), "revision 0 is the current one");
    let r = t.range(&RangeRequest { revision: Revision(3), ..range("a", "") }).unwrap();
    assert_eq!(r.revision, Revision(6), "the header carries the current revision");
    assert_eq!(
        t.range(&RangeRequest { revision: Revision(7), ..range("a", "") }).unwrap_err(),
        MvccError::FutureRevision { requested: Revision(7), current: Revision(6) }
    );
}

#[test]
fn compaction() {
    let mut t = Shard::in_memory();
    t.put("a", "1"); // 2
    t.put("a", "2"); // 3
    t.put("b", "1"); // 4
    t.delete("b", ""); // 5
    t.put("c", "1"); // 6
    t.put("a", "3"); // 7
    let r = t.ok(Command::Compaction(CompactionRequest { revision: Revision(5), physical: true }));
    assert_eq!(r, Response::Compaction(CompactionResponse { revision: Revision(7) }));

    let read =
        |t: &Shard, rev| t.range(&RangeRequest { revision: Revision(rev), ..range("\0", "\0") });
    let err = read(&t, 4).unwrap_err();
    assert_eq!(err, MvccError::Compacted { requested: Revision(4), compacted: Revision(5) });
    assert_eq!(err.to_string(), "etcdserver: mvcc: required revision has been compacted");
    // At the compacted revision itself the latest versions are still there.
    let kvs = read(&t, 5).unwrap().kvs;
    assert_eq!(kvs.len(), 1);
    assert_eq!((s(&kvs[0].key), s(&kvs[0].value), kvs[0].version), ("a".into(), "2".into(), 2));
    assert_eq!(read(&t, 7).unwrap().kvs.len(), 2);

    // Compacting again at or below is refused; above current too.
    assert_eq!(
        t.err(Command::Compaction(CompactionRequest { revision: Revision(5), physical: false })),
        MvccError::Compacted { requested: Revision(5), compacted: Revision(5) }
    );
    let e =
        t.err(Command::Compaction(CompactionRequest { revision: Revision(99), physical: false }));
    assert_eq!(e.to_string(), "etcdserver: mvcc: required revision is a future revision");

    // Compact everything: old versions and tombstones go, live keys stay.
    t.delete("c", ""); // 8
    t.put("d", "1"); // 9
    t.delete("d", ""); // 10
    t.ok(Command::Compaction(CompactionRequest { revision: Revision(8), physical: true }));
    // Revision 8 stays replayable until the next compaction.
    t.ok(Command::Compaction(CompactionRequest { revision: Revision(10), physical: true }));
    t.delete("a", ""); // 11
    t.put("a", "3"); // 12: a new generation
    t.ok(Command::Compaction(CompactionRequest { revision: Revision(12), physical: true }));
    let kvs = read(&t, 12).unwrap().kvs;
    assert_eq!(kvs.len(), 1);
    assert_eq!((s(&kvs[0].value), kvs[0].version, kvs[0].create_revision.0), ("3".into(), 1, 12));
    // Physically: the snapshot holds exactly one version record (a@12) and
    // its change record, no tombstones.
    let export: Vec<Bytes> = t.store.snapshot(t.shard).unwrap().map(Result::unwrap).collect();
    let fresh = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
    fresh.restore(t.shard, export.clone()).unwrap();
    assert_eq!(export.len(), 3, "header, one data chunk, trailer");
    let data_len = export[1].len();
    assert!(data_len < 40, "two small records expected, data chunk is {data_len} bytes");
    // Writing on continues with the same counters.
    t.put("a", "4");
    assert_eq!(t.get("a").unwrap().version, 2);
}

#[test]
fn put_prev_kv_ignore_value_and_ignore_lease() {
    let mut t = Shard::in_memory();
    let r = t.ok(Command::Put(PutRequest { prev_kv: true, ..put("a", "1") }));
    assert_eq!(r, Response::Put(PutResponse { revision: Revision(2), prev_kv: None }));
    let r = t.ok(Command::Put(PutRequest { prev_kv: true, ..put("a", "2") }));
    let Response::Put(r) = r else { panic!() };
    assert_eq!(r.prev_kv.unwrap().value, b("1"));

    t.ok(Command::LeaseGrant(LeaseGrantRequest { id: LeaseId(7), ttl: 60 }));
    t.ok(Command::Put(PutRequest { lease: LeaseId(7), ..put("a", "3") }));
    // ignore_value keeps the value, takes the new lease (none here).
    t.ok(Command::Put(PutRequest { ignore_value: true, ..put("a", "") }));
    let kv = t.get("a").unwrap();
    assert_eq!((s(&kv.value), kv.lease), ("3".into(), LeaseId::NONE));
    t.ok(Command::Put(PutRequest { lease: LeaseId(7), ..put("a", "4") }));
    // ignore_lease keeps the lease, takes the new value.
    t.ok(Command::Put(PutRequest { ignore_lease: true, ..put("a", "5") }));
    let kv = t.get("a").unwrap();
    assert_eq!((s(&kv.value), kv.lease), ("5".into(), LeaseId(7)));

    let rev = t.revision();
    let e = t.err(Command::Put(PutRequest { ignore_value: true, ..put("missing", "") }));
    assert_eq!(e, MvccError::KeyNotFound { key: b("missing") });
    assert_eq!(e.to_string(), "etcdserver: key not found");
    let e = t.err(Command::Put(PutRequest { ignore_lease: true, ..put("missing", "v") }));
    assert_eq!(e.to_string(), "etcdserver: key not found");
    let e = t.err(Command::Put(PutRequest { ignore_value: true, ..put("a", "v") }));
    assert_eq!(e.to_string(), "etcdserver: value is provided");
    let e =
        t.err(Command::Put(PutRequest { ignore_lease: true, lease: LeaseId(7), ..put("a", "") }));
    assert_eq!(e.to_string(), "etcdserver: lease is provided");
    assert_eq!(t.err(Command::Put(put("", "v"))).to_string(), "etcdserver: key is not provided");
    assert_eq!(t.revision(), rev, "refused puts take no revision");
}

#[test]
fn leases_attach_revoke_and_unknown() {
    let mut t = Shard::in_memory();
    let e = t.err(Command::Put(PutRequest { lease: LeaseId(9), ..put("a", "1") }));
    assert_eq!(e, MvccError::LeaseNotFound { lease: LeaseId(9) });
    assert_eq!(e.to_string(), "etcdserver: requested lease not found");

    let r = t.ok(Command::LeaseGrant(LeaseGrantRequest { id: LeaseId(9), ttl: 30 }));
    assert_eq!(
        r,
        Response::LeaseGrant(LeaseGrantResponse { revision: Revision(1), id: LeaseId(9), ttl: 30 })
    );
    let e = t.err(Command::LeaseGrant(LeaseGrantRequest { id: LeaseId(9), ttl: 30 }));
    assert_eq!(e.to_string(), "etcdserver: lease already exists");
    let e = t.err(Command::LeaseGrant(LeaseGrantRequest {
        id: LeaseId(3),
        ttl: LEASE_TTL_MAX_SECONDS + 1,
    }));
    assert_eq!(e.to_string(), "etcdserver: too large lease TTL");
    t.ok(Command::LeaseGrant(LeaseGrantRequest { id: LeaseId(10), ttl: 5 }));

    for k in ["a", "b", "c"] {
        t.ok(Command::Put(PutRequest { lease: LeaseId(9), ..put(k, "v") }));
    }
    t.ok(Command::Put(PutRequest { lease: LeaseId(10), ..put("c", "moved") })); // re-attach
    t.put("d", "no lease");
    let view = t.store.read().unwrap();
    let info = view.lease(t.shard, LeaseId(9), true).unwrap();
    assert_eq!(info.keys, [b("a"), b("b")]);
    assert_eq!(info.granted_ttl, 30);
    assert_eq!(view.leases(t.shard).unwrap().iter().map(|l| l.id.0).collect::<Vec<_>>(), [9, 10]);
    drop(view);

    // Checkpoint the remaining TTL (unknown ids are skipped).
    t.ok(Command::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![
            LeaseCheckpoint { id: LeaseId(9), remaining_ttl: 12 },
            LeaseCheckpoint { id: LeaseId(404), remaining_ttl: 1 },
        ],
    }));
    let info = t.store.read().unwrap().lease(t.shard, LeaseId(9), false).unwrap();
    assert_eq!((info.remaining_ttl, info.keys.len()), (Some(12), 0));

    let rev = t.revision();
    let a = t.apply(Command::LeaseRevoke(LeaseRevokeRequest { id: LeaseId(9) }));
    assert_eq!(a.result.unwrap().revision(), Revision(rev + 1), "one revision for all keys");
    assert_eq!(a.events.len(), 2);
    assert!(a.events.iter().all(|e| e.kind == EventKind::Delete && e.kv.mod_revision.0 == rev + 1));
    assert!(t.get("a").is_none() && t.get("b").is_none());
    assert_eq!(t.get("c").unwrap().lease, LeaseId(10));
    let e = t.store.read().unwrap().lease(t.shard, LeaseId(9), true).unwrap_err();
    assert!(matches!(e, ReadError::Request(MvccError::LeaseNotFound { .. })));
    assert_eq!(
        t.err(Command::LeaseRevoke(LeaseRevokeRequest { id: LeaseId(9) })),
        MvccError::LeaseNotFound { lease: LeaseId(9) }
    );

    // Deleting a key detaches it; revoking an empty lease takes no revision.
    t.delete("c", "");
    let rev = t.revision();
    let a = t.apply(Command::LeaseRevoke(LeaseRevokeRequest { id: LeaseId(10) }));
    assert!(a.events.is_empty());
    assert_eq!(a.result.unwrap().revision(), Revision(rev));
}

fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare { result, target, key: b(key), range_end: Bytes::new() }
}

fn txn_succeeds(t: &mut Shard, c: Compare) -> bool {
    t.txn(TxnRequest { compare: vec![c], ..Default::default() }).succeeded
}

#[test]
fn txn_compare_targets_and_results() {
    use CompareResult::*;
    use CompareTarget as T;
    let mut t = Shard::in_memory();
    t.ok(Command::LeaseGrant(LeaseGrantRequest { id: LeaseId(5), ttl: 10 }));
    t.put("a", "m"); // rev 2
    t.ok(Command::Put(PutRequest { lease: LeaseId(5), ..put("a", "n") })); // rev 3, version 2
    let cases = [
        (T::Version(2), [true, false, false, false]),
        (T::Version(1), [false, true, false, true]),
        (T::Create(Revision(3)), [false, false, true, true]),
        (T::Mod(Revision(3)), [true, false, false, false]),
        (T::Value(b("n")), [true, false, false, false]),
        (T::Value(b("m")), [false, true, false, true]),
        (T::Value(b("o")), [false, false, true, true]),
        (T::Lease(LeaseId(5)), [true, false, false, false]),
        (T::Lease(LeaseId(0)), [false, true, false, true]),
    ];
    for (target, expected) in cases {
        for (result, want) in [Equal, Greater, Less, NotEqual].into_iter().zip(expected) {
            let got = txn_succeeds(&mut t, cmp("a", result, target.clone()));
            assert_eq!(got, want, "{result:?} {target:?}");
        }
    }
    // A missing key compares as zero, except its value, which never matches.
    assert!(txn_succeeds(&mut t, cmp("zz", Equal, T::Create(Revision(0)))));
    assert!(txn_succeeds(&mut t, cmp("zz", Equal, T::Version(0))));
    assert!(txn_succeeds(&mut t, cmp("zz", Equal, T::Lease(LeaseId(0)))));
    assert!(!txn_succeeds(&mut t, cmp("zz", Equal, T::Value(Bytes::new()))));
    assert!(!txn_succeeds(&mut t, cmp("zz", NotEqual, T::Value(b("x")))));
    // A range compare must hold for every key in it.
    t.put("ab", "n");
    let ranged = |result, target| Compare { range_end: b("b"), ..cmp("a", result, target) };
    assert!(txn_succeeds(&mut t, ranged(Equal, T::Value(b("n")))));
    assert!(!txn_succeeds(&mut t, ranged(Equal, T::Version(2))));
    assert!(txn_succeeds(&mut t, ranged(Greater, T::Mod(Revision(2)))));
    assert_eq!(t.revision(), 4, "read-only txns take no revision");
}

#[test]
fn txn_branches_share_one_revision_and_see_own_writes() {
    let mut t = Shard::in_memory();
    t.put("x", "1"); // 2
    let a = t.apply(Command::Txn(TxnRequest {
        compare: vec![cmp("x", CompareResult::Equal, CompareTarget::Value(b("1")))],
        success: vec![
            RequestOp::Range(range("\0", "\0")),
            RequestOp::Put(put("a", "1")),
            RequestOp::Put(PutRequest { prev_kv: true, ..put("x", "2") }),
            RequestOp::Range(range("\0", "\0")),
        ],
        failure: vec![RequestOp::Put(put("never", "1"))],
    }));
    assert_eq!(a.events.len(), 2);
    assert!(a.events.iter().all(|e| e.kv.mod_revision == Revision(3)));
    let Ok(Response::Txn(r)) = a.result else { panic!() };
    assert!(r.succeeded);
    assert_eq!(r.revision, Revision(3));
    let ResponseOp::Range(before) = &r.responses[0] else { panic!() };
    assert_eq!((before.kvs.len(), before.revision), (1, Revision(2)), "read before the writes");
    let ResponseOp::Range(read) = &r.responses[3] else { panic!() };
    assert_eq!(read.kvs.len(), 2, "a range in a txn sees the txn's earlier writes");
    assert_eq!(read.revision, Revision(3));
    let ResponseOp::Put(p) = &r.responses[2] else { panic!() };
    assert_eq!(p.prev_kv.as_ref().unwrap().value, b("1"));
    assert_eq!(p.revision, Revision(3));

    let r = t.txn(TxnRequest {
        compare: vec![cmp("x", CompareResult::Equal, CompareTarget::Value(b("1")))],
        success: vec![RequestOp::Put(put("never", "1"))],
        failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: b("a"),
            range_end: Bytes::new(),
            prev_kv: true,
        })],
    });
    assert!(!r.succeeded);
    let ResponseOp::DeleteRange(d) = &r.responses[0] else { panic!() };
    assert_eq!((d.deleted, r.revision), (1, Revision(4)));
    assert!(t.get("never").is_none());
}

#[test]
fn nested_txns_decide_on_the_state_before_the_outer_txn() {
    let mut t = Shard::in_memory();
    t.put("k", "old"); // 2
    let r = t.txn(TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(put("k", "new")),
            RequestOp::Txn(TxnRequest {
                // Evaluated before the outer put: "old" holds.
                compare: vec![cmp("k", CompareResult::Equal, CompareTarget::Value(b("old")))],
                success: vec![RequestOp::Put(put("nested", "then"))],
                failure: vec![RequestOp::Put(put("nested", "else"))],
            }),
        ],
        failure: vec![],
    });
    let ResponseOp::Txn(inner) = &r.responses[1] else { panic!() };
    assert!(inner.succeeded);
    assert_eq!(inner.revision, Revision(3));
    assert_eq!(t.get("nested").unwrap().value, b("then"));
    assert_eq!(t.get("k").unwrap().mod_revision, Revision(3));
}

#[test]
fn txn_duplicate_keys_are_refused() {
    let mut t = Shard::in_memory();
    let dup = |t: &mut Shard, success: Vec<RequestOp>| {
        let rev = t.revision();
        let e = t.err(Command::Txn(TxnRequest { success, ..Default::default() }));
        assert_eq!(t.revision(), rev);
        e
    };
    let del = |k: &str, end: &str| {
        RequestOp::DeleteRange(DeleteRangeRequest { key: b(k), range_end: b(end), prev_kv: false })
    };
    let nested =
        |success, failure| RequestOp::Txn(TxnRequest { compare: vec![], success, failure });
    let e = dup(&mut t, vec![RequestOp::Put(put("a", "1")), RequestOp::Put(put("a", "2"))]);
    assert_eq!(e, MvccError::DuplicateKey { key: b("a") });
    assert_eq!(e.to_string(), "etcdserver: duplicate key given in txn request");
    dup(&mut t, vec![del("a", "c"), RequestOp::Put(put("b", "1"))]);
    dup(&mut t, vec![RequestOp::Put(put("b", "1")), del("a", "c")]);
    dup(&mut t, vec![del("a", "\0"), RequestOp::Put(put("zzz", "1"))]);
    dup(
        &mut t,
        vec![RequestOp::Put(put("a", "1")), nested(vec![RequestOp::Put(put("a", "2"))], vec![])],
    );
    dup(&mut t, vec![del("a", "b"), nested(vec![], vec![RequestOp::Put(put("a", "2"))])]);
    dup(&mut t, vec![nested(vec![del("a", "b")], vec![]), RequestOp::Put(put("a", "2"))]);
    // With several duplicates, the smallest key is reported, on every replica.
    let e = dup(
        &mut t,
        vec![
            nested(vec![], vec![RequestOp::Put(put("b", "1")), RequestOp::Put(put("ab", "1"))]),
            del("ab", "\0"),
        ],
    );
    assert_eq!(e, MvccError::DuplicateKey { key: b("ab") });

    // Allowed: overlapping deletes, a put outside deleted ranges, the same
    // key in the two exclusive branches of a nested txn.
    let ok = vec![
        del("a", "c"),
        del("b", "d"),
        RequestOp::Put(put("d", "1")),
        nested(vec![RequestOp::Put(put("e", "1"))], vec![RequestOp::Put(put("e", "2"))]),
    ];
    assert!(t.txn(TxnRequest { success: ok, ..Default::default() }).succeeded);
}

#[test]
fn txn_op_limit() {
    let mut t = Shard::in_memory();
    let puts =
        |n: usize| (0..n).map(|i| RequestOp::Put(put(&format!("k{i}"), "v"))).collect::<Vec<_>>();
    let r = t.txn(TxnRequest { success: puts(TXN_OPS_MAX), ..Default::default() });
    assert_eq!(r.responses.len(), TXN_OPS_MAX);
    let e =
        t.err(Command::Txn(TxnRequest { failure: puts(TXN_OPS_MAX + 1), ..Default::default() }));
    assert_eq!(e, MvccError::TooManyOps { count: TXN_OPS_MAX + 1, max: TXN_OPS_MAX });
    assert_eq!(e.to_string(), "etcdserver: too many operations in txn request");
    let compares = (0..=TXN_OPS_MAX)
        .map(|_| cmp("a", CompareResult::Equal, CompareTarget::Version(0)))
        .collect();
    t.err(Command::Txn(TxnRequest { compare: compares, ..Default::default() }));
    // A nested txn gets the budget its parent left: 100 + 29 > 128.
    let e = t.err(Command::Txn(TxnRequest {
        success: {
            let mut ops = puts(100);
            ops.push(RequestOp::Txn(TxnRequest { success: puts(29), ..Default::default() }));
            ops
        },
        ..Default::default()
    }));
    assert_eq!(e, MvccError::TooManyOps { count: 29, max: TXN_OPS_MAX - 101 });
}

#[test]
fn txn_refusals_leave_no_trace() {
    let mut t = Shard::in_memory();
    t.put("a", "1");
    t.ok(Command::Compaction(CompactionRequest { revision: Revision(2), physical: false }));
    let rev = t.revision();
    // Unknown lease in the taken branch.
    let e = t.err(Command::Txn(TxnRequest {
        success: vec![
            RequestOp::Put(put("b", "1")),
            RequestOp::Put(PutRequest { lease: LeaseId(1), ..put("c", "1") }),
        ],
        ..Default::default()
    }));
    assert_eq!(e, MvccError::LeaseNotFound { lease: LeaseId(1) });
    // A range at a compacted revision.
    let e = t.err(Command::Txn(TxnRequest {
        success: vec![
            RequestOp::Put(put("b", "1")),
            RequestOp::Range(RangeRequest { revision: Revision(1), ..range("a", "") }),
        ],
        ..Default::default()
    }));
    assert!(matches!(e, MvccError::Compacted { .. }));
    // ignore_value on a missing key, inside a nested txn.
    let e = t.err(Command::Txn(TxnRequest {
        success: vec![RequestOp::Txn(TxnRequest {
            success: vec![RequestOp::Put(PutRequest { ignore_value: true, ..put("zz", "") })],
            ..Default::default()
        })],
        ..Default::default()
    }));
    assert!(matches!(e, MvccError::KeyNotFound { .. }));
    // A refused op in the branch not taken does not matter.
    let r = t.txn(TxnRequest {
        failure: vec![RequestOp::Put(PutRequest { lease: LeaseId(1), ..put("c", "1") })],
        ..Default::default()
    });
    assert!(r.succeeded);
    assert_eq!(t.revision(), rev);
    assert!(t.get("b").is_none());
}

#[test]
fn shards_are_independent() {
    let store = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
    let mut one = Shard::on(store, ringkv_consensus::ShardId(1));
    one.put("a", "1");
    one.put("a", "2");
    let mut two = Shard::on(one.store, ringkv_consensus::ShardId(2));
    assert!(two.get("a").is_none());
    assert_eq!(two.put("a", "x").revision, Revision(2));
    let one = Shard::on(two.store, ringkv_consensus::ShardId(1));
    assert_eq!(one.get("a").unwrap().value, b("2"));
    assert_eq!(one.keys(&range("\0", "\0")), ["a"]);
}

#[test]
fn out_of_order_entries_are_refused() {
    let store = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
    let shard = ringkv_consensus::ShardId(1);
    let cmd = Command::Put(put("a", "1"));
    let e = store.apply(shard, ringkv_consensus::LogIndex(2), &cmd).unwrap_err();
    assert!(matches!(e, StoreError::OutOfOrder { .. }), "{e}");
    store.apply(shard, ringkv_consensus::LogIndex(1), &cmd).unwrap();
    assert!(store.apply(shard, ringkv_consensus::LogIndex(1), &cmd).is_err(), "replayed twice");
    // A failed batch applies nothing.
    let batch =
        [(ringkv_consensus::LogIndex(2), cmd.clone()), (ringkv_consensus::LogIndex(4), cmd)];
    assert!(store.apply_batch(shard, &batch).is_err());
    assert_eq!(store.applied_index(shard), ringkv_consensus::LogIndex(1));
    assert_eq!(store.read().unwrap().shard_state(shard).unwrap().revision, Revision(2));
}

#[test]
fn watch_replay_from_a_revision() {
    let mut t = Shard::in_memory();
    t.put("a", "1"); // 2
    t.put("b", "1"); // 3
    t.txn(TxnRequest {
        success: vec![
            RequestOp::Put(put("b", "2")),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b("a"),
                range_end: Bytes::new(),
                prev_kv: false,
            }),
        ],
        ..Default::default()
    }); // 4
    t.put("c", "1"); // 5
    let all = b("\0");
    let replay = |t: &Shard, start| {
        let view = t.store.read().unwrap();
        view.events(t.shard, Revision(start), &all, &all, usize::MAX).map(|(events, resume)| {
            let events = events
                .iter()
                .map(|e| format!("{:?} {}@{}", e.kind, s(&e.kv.key), e.kv.mod_revision))
                .collect::<Vec<_>>();
            (events, resume.0)
        })
    };
    let (events, resume) = replay(&t, 3).unwrap();
    assert_eq!(events, ["Put b@3", "Put b@4", "Delete a@4", "Put c@5"]);
    assert_eq!(resume, 6);
    assert_eq!(replay(&t, 9).unwrap(), (vec![], 9), "a future start waits");

    // Revision 4 is compacted: replay from it still works (as etcd), from
    // before it does not.
    t.ok(Command::Compaction(CompactionRequest { revision: Revision(4), physical: true }));
    let (events, _) = replay(&t, 4).unwrap();
    assert_eq!(events, ["Put b@4", "Delete a@4", "Put c@5"]);
    let e = replay(&t, 3).unwrap_err();
    assert!(matches!(e, ReadError::Request(MvccError::Compacted { .. })), "{e}");

    // The next compaction drops what revision 4 kept for replay; reads are
    // unaffected throughout.
    t.ok(Command::Compaction(CompactionRequest { revision: Revision(5), physical: true }));
    assert_eq!(replay(&t, 5).unwrap().0, ["Put c@5"]);
    assert_eq!(t.keys(&range("\0", "\0")), ["b", "c"]);
}

#[test]
fn ranges_over_long_histories() {
    // Enough versions per key that scans seek over them rather than step.
    let mut t = Shard::in_memory();
    for round in 0..40 {
        for k in ["a", "b", "c"] {
            t.put(k, &format!("{k}{round}"));
        }
        if round % 10 == 4 {
            t.delete("b", "");
        }
    }
    t.put("d", "d");
    let at = |t: &Shard, rev: i64| {
        t.range(&RangeRequest { revision: Revision(rev), ..range("\0", "\0") })
            .unwrap()
            .kvs
            .iter()
            .map(|kv| format!("{}={}v{}", s(&kv.key), s(&kv.value), kv.version))
            .collect::<Vec<_>>()
    };
    // Round r puts "a" at revision 2 + 3r + (deletes in earlier rounds).
    assert_eq!(at(&t, 0), ["a=a39v40", "b=b39v5", "c=c39v40", "d=dv1"]);
    assert_eq!(at(&t, 2), ["a=a0v1"]);
    assert_eq!(at(&t, 33), ["a=a10v11", "b=b9v5", "c=c9v10"]);
    assert_eq!(at(&t, 34), ["a=a10v11", "b=b10v6", "c=c9v10"]);
    assert_eq!(at(&t, 64), ["a=a20v21", "b=b19v5", "c=c19v20"]);
    let last = t.revision();
    assert_eq!(at(&t, last - 1), ["a=a39v40", "b=b39v5", "c=c39v40"]);
    assert_eq!(t.range(&range("b", "")).unwrap().kvs[0].create_revision, Revision(2 + 105 + 4 + 1));
    let r =
        t.range(&RangeRequest { revision: Revision(64), limit: 2, ..range("\0", "\0") }).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (2, true, 3));
}
