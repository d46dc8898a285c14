//! A sharded cluster (`--shards 4`): every node hosts the metadata shard
//! and four data shards. Keys land in their own shard with its own
//! revision; a transaction spanning shards is refused and changes nothing;
//! `submit_to` reads one shard; acknowledged writes survive a leader
//! crash; a member added or removed reaches every group; leases reach
//! every data shard by marker; a node restarted with another shard count
//! refuses to start.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use ringkv_consensus::{NodeId, ShardId};
use ringkv_node::testing::{Cluster, test_config};
use ringkv_node::{
    AlarmAction, AlarmType, Credential, DATA_SHARD, Engine, META_SHARD, NodeError, Reply, Request,
    SpanningRequest, Token,
};
use ringkv_ring::{HashKeyRule, Keyspace};
use ringkv_storage::mvcc::{
    CompactionRequest, Compare, CompareResult, CompareTarget, LeaseId, PutRequest, RangeRequest,
    RequestOp, Response, Revision, TxnRequest,
};

fn shard_of(key: &str) -> ShardId {
    ShardId(keyspace().shard_of(key.as_bytes()).0)
}

/// `per_shard` keys of each data shard, by shard.
fn keys_by_shard(per_shard: usize) -> BTreeMap<ShardId, Vec<String>> {
    let mut out: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        let key = format!("key{i}");
        let keys = out.entry(shard_of(&key)).or_default();
        if keys.len() < per_shard {
            keys.push(key);
        }
        if out.len() == SHARDS as usize && out.values().all(|k| k.len() == per_shard) {
            return out;
        }
    }
    unreachable!()
}

/// The value of `key` in `shard` of `on`'s store.
fn value_in<E: Engine>(c: &Cluster<E>, on: NodeId, shard: ShardId, key: &str) -> Option<String> {
    let req = RangeRequest { key: b(key), ..RangeRequest::default() };
    let kv = c.node(on).store().range(shard, &req).unwrap().kvs.pop()?;
    Some(String::from_utf8(kv.value.to_vec()).unwrap())
}

fn revision_of<E: Engine>(c: &Cluster<E>, on: NodeId, shard: ShardId) -> Revision {
    c.node(on).shard_status(shard).unwrap().revision
}

/// Steps until every running node has applied every shard as far as any
/// node committed it.
fn settle_all<E: Engine>(c: &mut Cluster<E>) {
    let ok = c.run_until(STEPS * 4, |c| {
        std::iter::once(META_SHARD).chain(data_shards()).all(|shard| {
            let st = |id| c.node(id).shard_status(shard).unwrap();
            let max = c.running().iter().map(|&id| st(id).commit_index).max().unwrap();
            c.running().iter().all(|&id| st(id).applied_index == max)
        })
    });
    assert!(ok, "shards did not converge");
}

fn lease_grant<E: Engine>(c: &mut Cluster<E>, on: NodeId, ttl: i64) -> LeaseId {
    match c.call(on, Request::LeaseGrant { id: LeaseId(0), ttl }, STEPS).unwrap() {
        Reply::Kv(Response::LeaseGrant(g)) => g.id,
        other => panic!("{other:?}"),
    }
}

fn put_with_lease<E: Engine>(c: &mut Cluster<E>, on: NodeId, key: &str, lease: LeaseId) {
    let put = PutRequest { key: b(key), value: b("v"), lease, ..PutRequest::default() };
    c.call(on, Request::Put(put), STEPS).unwrap();
}

fn has_lease<E: Engine>(c: &Cluster<E>, on: NodeId, shard: ShardId, id: LeaseId) -> bool {
    c.node(on).store().read().unwrap().lease(shard, id, false).is_ok()
}

fn keys_land_in_their_own_shard_with_their_own_revision<E: Engine>() {
    let mut c = sharded::<E>(3, 71);
    let leader = wait_leaders(&mut c);
    let on = c.running().into_iter().find(|&id| id != leader).unwrap();
    let keys = keys_by_shard(2);
    let before: BTreeMap<ShardId, Revision> =
        data_shards().into_iter().map(|s| (s, revision_of(&c, on, s))).collect();

    // Each shard counts its own revisions: the n-th put into a shard gets
    // that shard's revision + n, whatever the other shards did.
    for round in 0..2 {
        for (&shard, ks) in &keys {
            let rev = put(&mut c, on, &ks[round], "v").unwrap();
            assert_eq!(rev.0, before[&shard].0 + round as i64 + 1, "{} in {shard}", ks[round]);
        }
    }
    settle_all(&mut c);
    for n in c.running() {
        for (&shard, ks) in &keys {
            assert_eq!(revision_of(&c, n, shard).0, before[&shard].0 + 2, "{shard} on {n}");
            for k in ks {
                assert_eq!(value_in(&c, n, shard, k).as_deref(), Some("v"), "{k} on {n}");
                for other in data_shards().into_iter().filter(|&s| s != shard) {
                    assert_eq!(value_in(&c, n, other, k), None, "{k} also in {other} on {n}");
                }
                assert_eq!(value_in(&c, n, META_SHARD, k), None, "a key in the metadata shard");
            }
        }
    }
    // Status: every shard listed; its revision is the largest data shard's.
    let status = c.node(on).status();
    let listed: Vec<ShardId> = status.shards.iter().map(|s| s.shard).collect();
    assert_eq!(listed, std::iter::once(META_SHARD).chain(data_shards()).collect::<Vec<_>>());
    let max = data_shards().into_iter().map(|s| revision_of(&c, on, s)).max().unwrap();
    assert_eq!(status.revision, max);

    // A linearizable get is served by the key's shard, with its header.
    let ks = keys.values().last().unwrap();
    assert_eq!(get_on(&mut c, on, &ks[0], false).unwrap().unwrap().value, b("v"));

    // A range over one shard with submit_to returns exactly its keys.
    let all = RangeRequest { key: b("\0"), range_end: b("\0"), ..RangeRequest::default() };
    for (&shard, ks) in &keys {
        let reply = c.call_to(on, shard, Request::Range(all.clone()), STEPS).unwrap();
        let Reply::Range(r) = reply else { panic!("{reply:?}") };
        let got: BTreeSet<String> =
            r.kvs.iter().map(|kv| String::from_utf8(kv.key.to_vec()).unwrap()).collect();
        assert_eq!(got, ks.iter().cloned().collect(), "keys of {shard}");
        assert_eq!(r.revision, revision_of(&c, on, shard));
    }
    // The same range routed by key spans every shard: refused.
    match c.call(on, Request::Range(all), STEPS) {
        Err(NodeError::SpansShards { request: SpanningRequest::Range, shards }) => {
            assert_eq!(shards, data_shards());
        }
        other => panic!("{other:?}"),
    }
}

fn a_txn_spanning_shards_is_refused_and_changes_nothing<E: Engine>() {
    let mut c = sharded::<E>(3, 72);
    let leader = wait_leaders(&mut c);
    let keys = keys_by_shard(1);
    let (a, b_) = (&keys[&ShardId(2)][0], &keys[&ShardId(4)][0]);
    let before: Vec<Revision> = data_shards().iter().map(|&s| revision_of(&c, leader, s)).collect();
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: b(a),
            range_end: bytes::Bytes::new(),
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: b(b_),
            value: b("x"),
            ..PutRequest::default()
        })],
        failure: vec![],
    };
    let err = c.call(leader, Request::Txn(txn), STEPS).unwrap_err();
    assert!(
        matches!(&err, NodeError::SpansShards { request: SpanningRequest::Txn, shards }
            if *shards == vec![ShardId(2), ShardId(4)]),
        "{err:?}"
    );
    assert_eq!(
        err.etcd_message(),
        "etcdserver: txn spans shards 2 and 4; keys of one txn must share a hash key (use {tag} \
         in the key)"
    );
    assert_eq!(err.class(), ringkv_node::ErrorClass::FailedPrecondition);
    settle_all(&mut c);
    let after: Vec<Revision> = data_shards().iter().map(|&s| revision_of(&c, leader, s)).collect();
    assert_eq!(before, after, "a refused txn changed a shard");
    assert_eq!(value_in(&c, leader, ShardId(4), b_), None);

    // Keys sharing a hash tag share a shard: that txn runs.
    let tagged = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest { key: b("{t}a"), value: b("1"), ..PutRequest::default() }),
            RequestOp::Put(PutRequest { key: b("{t}b"), value: b("2"), ..PutRequest::default() }),
        ],
        failure: vec![],
    };
    c.call(leader, Request::Txn(tagged), STEPS).unwrap();
    assert_eq!(value_in(&c, leader, shard_of("{t}a"), "{t}b").as_deref(), Some("2"));

    // Compact names its shard; an unknown shard or a non-KV request is refused.
    let compact = Request::Compact(CompactionRequest { revision: Revision(1), physical: false });
    assert!(matches!(
        c.call(leader, compact.clone(), STEPS),
        Err(NodeError::ShardRequired { shard_count: SHARDS, .. })
    ));
    c.call_to(leader, ShardId(1), compact.clone(), STEPS).unwrap();
    let node = c.node_mut(leader);
    let refused = node.submit_to(Token(9_999), ShardId(5), compact.clone(), Credential::Anonymous);
    assert!(matches!(refused, Err(NodeError::WrongShard { shard: ShardId(5), .. })), "{refused:?}");
    let refused = node.submit_to(Token(9_999), META_SHARD, compact, Credential::Anonymous);
    assert!(matches!(refused, Err(NodeError::WrongShard { .. })), "{refused:?}");
    let misplaced = put_req(b_, "x");
    let refused = node.submit_to(Token(9_999), ShardId(2), misplaced, Credential::Anonymous);
    assert!(matches!(refused, Err(NodeError::WrongShard { shard: ShardId(2), .. })), "{refused:?}");
    let list = Request::MemberList { linearizable: true };
    let refused = node.submit_to(Token(9_999), DATA_SHARD, list, Credential::Anonymous);
    assert!(matches!(refused, Err(NodeError::WrongShard { .. })), "{refused:?}");

    // A NOSPACE alarm, raised in the metadata shard, stops puts to every
    // data shard; deletes still go through.
    let alarm = |action| Request::Alarm { action, member: leader, alarm: AlarmType::NoSpace };
    c.call(leader, alarm(AlarmAction::Activate), STEPS).unwrap();
    for ks in keys.values() {
        let err = put(&mut c, leader, &ks[0], "x").unwrap_err();
        assert!(matches!(err, NodeError::NoSpace), "{err:?}");
    }
    let delete = ringkv_storage::mvcc::DeleteRangeRequest { key: b(a), ..Default::default() };
    c.call(leader, Request::DeleteRange(delete), STEPS).unwrap();
    c.call(leader, alarm(AlarmAction::Deactivate), STEPS).unwrap();
    put(&mut c, leader, a, "y").unwrap();
}

fn a_leader_crash_keeps_every_acknowledged_write<E: Engine>() {
    let mut c = sharded::<E>(3, 73);
    let leader = wait_leaders(&mut c);
    let keys = keys_by_shard(3);
    let mut acked = Vec::new();
    for ks in keys.values() {
        put(&mut c, leader, &ks[0], "before").unwrap();
        acked.push((ks[0].clone(), "before"));
    }
    // Crash the node leading the metadata shard (and whatever it leads).
    c.crash(leader);
    let survivors = c.running();
    let new = c.wait_leader_among(&survivors);
    assert!(c.run_until(STEPS * 2, |c| {
        data_shards().iter().all(|&s| c.leader_of(s).is_some_and(|l| l != leader))
    }));
    for ks in keys.values() {
        put(&mut c, new, &ks[1], "after").unwrap();
        acked.push((ks[1].clone(), "after"));
    }
    c.restart(leader).unwrap();
    for ks in keys.values() {
        put(&mut c, leader, &ks[2], "restarted").unwrap();
        acked.push((ks[2].clone(), "restarted"));
    }
    settle_all(&mut c);
    for n in c.running() {
        for (k, v) in &acked {
            assert_eq!(value_in(&c, n, shard_of(k), k).as_deref(), Some(*v), "{k} on {n}");
        }
    }
}

fn membership<E: Engine>(c: &Cluster<E>, on: NodeId, shard: ShardId) -> (Vec<NodeId>, Vec<NodeId>) {
    let m = c.node(on).replica_status(shard).unwrap().membership;
    (m.voters.into_iter().collect(), m.learners.into_iter().collect())
}

fn a_member_added_or_removed_reaches_every_group<E: Engine>() {
    let mut c = sharded::<E>(3, 74);
    let leader = wait_leaders(&mut c);
    let founders = c.running();
    let keys = keys_by_shard(2);
    for ks in keys.values() {
        put(&mut c, leader, &ks[0], "v").unwrap();
    }
    let add = Request::MemberAdd { peer_urls: vec!["http://n4:2380".into()], is_learner: true };
    let Reply::Members { member: Some(added), .. } = c.call(leader, add, STEPS).unwrap() else {
        panic!("no member")
    };
    let new = added.id;
    let all_groups = || std::iter::once(META_SHARD).chain(data_shards());
    // Every group makes it a learner, following the metadata table.
    assert!(c.run_until(STEPS * 2, |c| {
        all_groups().all(|s| founders.iter().all(|&n| membership(c, n, s).1 == vec![new]))
    }));

    let mut cfg = test_config(4, 3, 74);
    cfg.keyspace = keyspace();
    c.add_joining(new, cfg).unwrap();
    for ks in keys.values() {
        put(&mut c, leader, &ks[1], "v").unwrap();
    }
    settle_all(&mut c);
    for ks in keys.values() {
        for k in ks {
            assert_eq!(
                value_in(&c, new, shard_of(k), k).as_deref(),
                Some("v"),
                "{k} on the new node"
            );
        }
    }
    // Promoted in the metadata table, it becomes a voter of every group.
    let leader = c.wait_leader(STEPS);
    c.call(leader, Request::MemberPromote(new), STEPS).unwrap();
    assert!(c.run_until(STEPS * 2, |c| {
        all_groups().all(|s| c.running().iter().all(|&n| membership(c, n, s).0.contains(&new)))
    }));

    // Removed, it leaves every group and stops.
    let leader = c.wait_leader(STEPS);
    let remover = if leader == new { founders[0] } else { leader };
    c.call(remover, Request::MemberRemove(new), STEPS).unwrap();
    assert!(c.run_until(STEPS * 2, |c| all_groups().all(|s| founders.iter().all(|&n| {
        let (voters, learners) = membership(c, n, s);
        !voters.contains(&new) && !learners.contains(&new)
    }))));
    assert!(c.run_until(STEPS, |c| c.node(new).stopped().is_some()));
    for ks in keys.values() {
        put(&mut c, founders[0], &ks[0], "w").unwrap();
    }
}

fn leases_reach_every_data_shard_by_marker<E: Engine>() {
    let mut c = sharded::<E>(3, 75);
    let leader = wait_leaders(&mut c);
    let on = c.running().into_iter().find(|&id| id != leader).unwrap();
    let keys = keys_by_shard(1);
    let (k2, k3) = (keys[&ShardId(2)][0].clone(), keys[&ShardId(3)][0].clone());

    // Revoked by a client: its keys go from both shards.
    let id = lease_grant(&mut c, on, 60);
    for s in data_shards() {
        assert!(has_lease(&c, on, s, id), "acknowledged before {s} has the lease");
    }
    assert!(!has_lease(&c, on, ShardId(9), id));
    put_with_lease(&mut c, on, &k2, id);
    put_with_lease(&mut c, on, &k3, id);
    match c.call(on, Request::LeaseTimeToLive { id, keys: true }, STEPS).unwrap() {
        Reply::LeaseTimeToLive(t) => {
            let mut want = vec![b(&k2), b(&k3)];
            want.sort();
            assert_eq!(t.keys, want, "keys gathered from both shards");
        }
        other => panic!("{other:?}"),
    }
    // Kept alive by the metadata shard's leader, through a follower.
    match c.call(on, Request::LeaseKeepAlive(id), STEPS).unwrap() {
        Reply::LeaseKeepAlive { ttl, .. } => assert_eq!(ttl, 60),
        other => panic!("{other:?}"),
    }
    let listed = c.call(on, Request::LeaseLeases, STEPS).unwrap();
    assert_eq!(listed, Reply::LeaseLeases(vec![id]));
    c.call(on, Request::LeaseRevoke(id), STEPS).unwrap();
    assert_eq!(
        value_in(&c, on, ShardId(2), &k2),
        None,
        "revoke acknowledged before shard 2 deleted"
    );
    assert_eq!(
        value_in(&c, on, ShardId(3), &k3),
        None,
        "revoke acknowledged before shard 3 deleted"
    );
    for s in data_shards() {
        assert!(!has_lease(&c, on, s, id), "{s} still has the revoked lease");
    }
    // A put with the revoked lease is refused in any shard.
    let put = PutRequest { key: b(&k2), value: b("v"), lease: id, ..PutRequest::default() };
    let err = c.call(on, Request::Put(put), STEPS).unwrap_err();
    assert_eq!(err.etcd_message(), "etcdserver: requested lease not found");

    // Expired by the metadata leader: its keys go from both shards too.
    let id = lease_grant(&mut c, on, 2);
    put_with_lease(&mut c, on, &k2, id);
    put_with_lease(&mut c, on, &k3, id);
    c.run(40);
    settle_all(&mut c);
    for n in c.running() {
        assert_eq!(value_in(&c, n, ShardId(2), &k2), None, "{k2} of the expired lease on {n}");
        assert_eq!(value_in(&c, n, ShardId(3), &k3), None, "{k3} of the expired lease on {n}");
        for s in std::iter::once(META_SHARD).chain(data_shards()) {
            assert!(!has_lease(&c, n, s, id), "{s} on {n} still has the expired lease");
        }
    }
}

/// The node carrying a grant or a revoke to the data shards crashes right
/// after the metadata shard applied it: the metadata leader brings every
/// data shard in line with its lease table (`sync_lease_markers`).
fn the_metadata_leader_repairs_markers_lost_in_a_crash<E: Engine>() {
    let mut c = sharded::<E>(3, 78);
    let leader = wait_leaders(&mut c);
    let carrier = c.running().into_iter().find(|&id| id != leader).unwrap();
    let in_meta = |c: &Cluster<E>, id| {
        c.node(carrier)
            .store()
            .read()
            .unwrap()
            .leases(META_SHARD)
            .unwrap()
            .iter()
            .any(|l| l.id == id)
    };

    let id = LeaseId(4242);
    c.submit(carrier, Request::LeaseGrant { id, ttl: 600 });
    assert!(c.run_until(STEPS, |c| in_meta(c, id)), "the grant never applied");
    c.crash_with(carrier, ringkv_storage::disk::CrashMode::LoseUnsynced);
    let everywhere = |c: &Cluster<E>, id, want: bool| {
        c.running().iter().all(|&n| data_shards().iter().all(|&s| has_lease(c, n, s, id) == want))
    };
    assert!(
        c.run_until(STEPS * 2, |c| everywhere(c, id, true)),
        "a data shard never got the lease"
    );

    // A revoke cut short the same way: the data shards drop the lease.
    c.restart(carrier).unwrap();
    settle_all(&mut c);
    let key = keys_by_shard(1)[&ShardId(3)][0].clone();
    put_with_lease(&mut c, leader, &key, id);
    c.submit(carrier, Request::LeaseRevoke(id));
    assert!(c.run_until(STEPS, |c| !in_meta(c, id)), "the revoke never applied");
    c.crash_with(carrier, ringkv_storage::disk::CrashMode::LoseUnsynced);
    assert!(c.run_until(STEPS * 2, |c| everywhere(c, id, false)), "a data shard kept the lease");
    for n in c.running() {
        assert_eq!(value_in(&c, n, ShardId(3), &key), None, "{key} of the revoked lease on {n}");
    }
}

fn a_node_restarted_with_another_shard_count_refuses_to_start<E: Engine>() {
    let mut c = sharded::<E>(3, 76);
    let leader = wait_leaders(&mut c);
    put(&mut c, leader, "k", "v").unwrap();
    let victim = c.running().into_iter().find(|&id| id != leader).unwrap();
    c.crash(victim);
    c.config_mut(victim).keyspace = Keyspace::new(8, HashKeyRule::WholeKey).unwrap();
    let err = c.restart(victim).unwrap_err();
    assert!(matches!(err, NodeError::KeyspaceMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("--shards 4") && text.contains("--shards 8"), "{text}");
    c.config_mut(victim).keyspace = ringkv_node::single_shard_keyspace();
    let err = c.restart(victim).unwrap_err();
    assert!(err.to_string().contains("--shards 1"), "{err}");
    // With its own keyspace it starts and catches up.
    c.config_mut(victim).keyspace = keyspace();
    c.restart(victim).unwrap();
    settle_all(&mut c);
    assert_eq!(value_in(&c, victim, shard_of("k"), "k").as_deref(), Some("v"));

    // A member joining with another shard count stops once it learns the
    // cluster's.
    let leader = c.wait_leader(STEPS);
    let add = Request::MemberAdd { peer_urls: vec!["http://n4:2380".into()], is_learner: true };
    let Reply::Members { member: Some(added), .. } = c.call(leader, add, STEPS).unwrap() else {
        panic!("no member")
    };
    let mut cfg = test_config(4, 3, 76);
    cfg.keyspace = Keyspace::new(2, HashKeyRule::WholeKey).unwrap();
    c.add_joining(added.id, cfg).unwrap();
    assert!(c.run_until(STEPS * 2, |c| c.node(added.id).stopped().is_some()));
    let reason = c.node(added.id).stopped().unwrap().to_owned();
    assert!(reason.contains("--shards 4") && reason.contains("--shards 2"), "{reason}");

    // A one-shard node joining stops too; the members go on.
    let leader = c.wait_leader(STEPS);
    let first = added.id;
    c.call(leader, Request::MemberRemove(first), STEPS).unwrap();
    let add = Request::MemberAdd { peer_urls: vec!["http://n5:2380".into()], is_learner: true };
    let Reply::Members { member: Some(added), .. } = c.call(leader, add, STEPS).unwrap() else {
        panic!("no member")
    };
    let mut cfg = test_config(5, 3, 76);
    cfg.keyspace = ringkv_node::single_shard_keyspace();
    c.add_joining(added.id, cfg).unwrap();
    assert!(c.run_until(STEPS * 2, |c| c.node(added.id).stopped().is_some()));
    let reason = c.node(added.id).stopped().unwrap().to_owned();
    assert!(reason.contains("--shards 1") && reason.contains("several shards"), "{reason}");
    let leader = c.wait_leader(STEPS);
    put(&mut c, leader, "k", "w").unwrap();
    let founders = c.running().into_iter().filter(|&n| n != added.id && n != first);
    assert!(founders.into_iter().all(|n| c.node(n).stopped().is_none()));

    // A one-shard node restarted with four shards refuses too.
    let mut one = cluster::<E>(1, 77);
    let id = one.wait_leader(100);
    one.crash(id);
    one.config_mut(id).keyspace = keyspace();
    let err = one.restart(id).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("--shards 1") && text.contains("--shards 4"), "{text}");
}

/// A node configured with several shards joining a one-shard cluster
/// stops once it applies the cluster's first entry; the members go on.
fn a_sharded_node_joining_a_one_shard_cluster_stops<E: Engine>() {
    let mut c = cluster::<E>(3, 79);
    let leader = c.wait_leader(100);
    let add = Request::MemberAdd { peer_urls: vec!["http://n4:2380".into()], is_learner: true };
    let Reply::Members { member: Some(added), .. } = c.call(leader, add, STEPS).unwrap() else {
        panic!("no member")
    };
    let mut cfg = test_config(4, 3, 79);
    cfg.keyspace = keyspace();
    c.add_joining(added.id, cfg).unwrap();
    assert!(c.run_until(STEPS * 2, |c| c.node(added.id).stopped().is_some()));
    let reason = c.node(added.id).stopped().unwrap().to_owned();
    assert!(reason.contains("--shards 1") && reason.contains("--shards 4"), "{reason}");
    put(&mut c, leader, "k", "v").unwrap();
    let founders = c.running().into_iter().filter(|&n| n != added.id);
    assert!(founders.into_iter().all(|n| c.node(n).stopped().is_none()));
}

engine_tests!(
    keys_land_in_their_own_shard_with_their_own_revision,
    a_txn_spanning_shards_is_refused_and_changes_nothing,
    a_leader_crash_keeps_every_acknowledged_write,
    a_member_added_or_removed_reaches_every_group,
    leases_reach_every_data_shard_by_marker,
    the_metadata_leader_repairs_markers_lost_in_a_crash,
    a_node_restarted_with_another_shard_count_refuses_to_start,
    a_sharded_node_joining_a_one_shard_cluster_stops,
);
