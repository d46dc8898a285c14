//! Auth on a sharded cluster (`--shards 4`): every auth change reaches
//! every data shard's copy of the auth store before its client is
//! answered, so each data shard's replicas check a write against the same
//! rules and the same auth revision as the metadata shard; a crash of the
//! metadata leader in the middle of carrying a change converges, and
//! restarts keep the copies.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::BTreeMap;

use common::*;
use ringkv_consensus::{NodeId, ShardId};
use ringkv_node::testing::Cluster;
use ringkv_node::{
    AuthChange, AuthError, AuthInfo, Credential, Engine, META_SHARD, NodeError, Reply, Request,
};
use ringkv_storage::mvcc::RangeRequest;

/// One key under `prefix` in each data shard.
fn key_per_shard(prefix: &str) -> BTreeMap<ShardId, String> {
    let mut out = BTreeMap::new();
    for i in 0.. {
        let key = format!("{prefix}k{i}");
        out.entry(ShardId(keyspace().shard_of(key.as_bytes()).0)).or_insert(key);
        if out.len() == SHARDS as usize {
            return out;
        }
    }
    unreachable!()
}

fn user(name: &str) -> Credential {
    Credential::Certificate(name.into())
}

/// Whether every data shard's copy on `on` holds the metadata shard's
/// rules as applied there, at its auth revision.
fn copies_agree<E: Engine>(c: &Cluster<E>, on: NodeId) -> bool {
    let n = c.node(on);
    let meta = n.auth_store().unwrap();
    data_shards().into_iter().all(|s| {
        let copy = n.shard_auth_store(s).unwrap();
        copy.same_rules(meta) && copy.revision() == meta.revision() && copy.synced_at() > 0
    })
}

fn get_as<E: Engine>(
    c: &mut Cluster<E>,
    on: NodeId,
    who: &Credential,
    key: &str,
    serializable: bool,
) -> Result<Reply, NodeError> {
    let req = RangeRequest { key: b(key), serializable, ..RangeRequest::default() };
    c.call_as(on, Request::Range(req), who.clone(), STEPS)
}

fn every_data_shard_enforces_the_metadata_shards_rules<E: Engine>() {
    let mut c = sharded::<E>(3, 91);
    let leader = wait_leaders(&mut c);
    let on = c.running().into_iter().find(|&id| id != leader).unwrap();
    auth_setup(&mut c, on, &["bob"]);
    // Answered only once every data shard holds the change: the node that
    // answered has applied every copy already.
    assert!(copies_agree(&c, on), "setup answered before every data shard had it");

    let keys = key_per_shard("/app/");
    let (alice, bob, root) = (user("alice"), user("bob"), user("root"));
    for id in c.running() {
        for (shard, key) in &keys {
            let put = |c: &mut Cluster<E>, who: &Credential| {
                c.call_as(id, put_req(key, "v"), who.clone(), STEPS)
            };
            put(&mut c, &alice).unwrap_or_else(|e| panic!("alice's put of {key} on {id}: {e}"));
            for serializable in [false, true] {
                get_as(&mut c, id, &alice, key, serializable).unwrap();
                let denied = auth_err(get_as(&mut c, id, &bob, key, serializable));
                assert_eq!(denied, AuthError::PermissionDenied, "bob's get in {shard}");
            }
            assert_eq!(auth_err(put(&mut c, &bob)), AuthError::PermissionDenied, "{shard}");
            assert_eq!(auth_err(put(&mut c, &Credential::Anonymous)), AuthError::UserEmpty);
            put(&mut c, &root).unwrap();
        }
    }
    // Rights resolved against a newer metadata store than a data shard's
    // copy (taken between a change in the metadata shard and its arrival
    // in the data shard) are refused there as old, never checked against
    // the rules the change replaced.
    let now = c.node(on).auth_store().unwrap().revision();
    let ahead = Credential::Signed(AuthInfo { user: "root".into(), revision: now + 1 });
    for (shard, key) in &keys {
        let r = c.call_as(on, put_req(key, "v"), ahead.clone(), STEPS);
        let expected = AuthError::OldRevision { request: now + 1, store: now };
        assert_eq!(auth_err(r), expected, "rights ahead of {shard}'s copy");
    }
    // Outside her prefix alice is refused on every shard too.
    for (shard, key) in key_per_shard("/etc/") {
        let r = c.call_as(on, put_req(&key, "v"), alice.clone(), STEPS);
        assert_eq!(auth_err(r), AuthError::PermissionDenied, "/etc/ in {shard}");
    }

    // Revoking her role: every later put fails on every shard, and rights
    // resolved at the older auth revision fail with etcd's "revision of
    // auth store is old" in every data shard (their revision agrees).
    let before = c.node(on).auth_store().unwrap().revision();
    let root = user("root");
    auth_change(
        &mut c,
        leader,
        &root,
        AuthChange::UserRevokeRole { user: "alice".into(), role: "app".into() },
    );
    assert!(copies_agree(&c, leader), "the revoke answered before every data shard had it");
    let stale = Credential::Signed(AuthInfo { user: "root".into(), revision: before });
    for id in c.running() {
        for (shard, key) in &keys {
            let r = c.call_as(id, put_req(key, "w"), alice.clone(), STEPS);
            assert_eq!(auth_err(r), AuthError::PermissionDenied, "alice in {shard} on {id}");
            let r = c.call_as(id, put_req(key, "w"), stale.clone(), STEPS);
            let expected = AuthError::OldRevision { request: before, store: before + 1 };
            assert_eq!(auth_err(r), expected, "stale rights in {shard} on {id}");
        }
    }
}

fn a_metadata_leader_crash_mid_fan_out_converges<E: Engine>() {
    let mut c = sharded::<E>(3, 93);
    wait_leaders(&mut c);
    let meta_leader = c.leader_of(META_SHARD).unwrap();
    auth_setup(&mut c, meta_leader, &["bob"]);
    let keys = key_per_shard("/app/");
    let alice = user("alice");
    for key in keys.values() {
        c.call_as(meta_leader, put_req(key, "v"), alice.clone(), STEPS).unwrap();
    }

    // The metadata leader takes the revoke; once its followers hold the
    // entry, everything it sends is lost: it applies the revoke (and
    // proposes its copies to the data shards) alone, then crashes. No
    // copy ever left it, and nobody else answers for the change: only the
    // next metadata leader's repair brings the data shards in line.
    let before = c.node(meta_leader).auth_store().unwrap().revision();
    let others: Vec<NodeId> = c.running().into_iter().filter(|&id| id != meta_leader).collect();
    let last = |c: &Cluster<E>, id| c.node(id).replica_status(META_SHARD).unwrap().last_index;
    let appended: Vec<_> = others.iter().map(|&id| last(&c, id)).collect();
    let revoke = AuthChange::UserRevokeRole { user: "alice".into(), role: "app".into() };
    let token = c.submit_as(meta_leader, Request::AuthChange(revoke), user("root"));
    let held =
        c.run_until(STEPS, |c| others.iter().zip(&appended).all(|(&id, &was)| last(c, id) > was));
    assert!(held, "the followers never appended the revoke");
    for &id in &others {
        c.net.cut_one_way(meta_leader, id);
    }
    let applied =
        c.run_until(STEPS, |c| c.node(meta_leader).auth_store().unwrap().revision() == before + 1);
    assert!(applied, "the revoke never applied on the metadata leader");
    // Not answered while a data shard lacks it.
    let answer = c.take_result(meta_leader, token);
    assert!(answer.is_none(), "answered before the data shards had it: {answer:?}");
    c.crash(meta_leader);
    c.net.heal();
    let survivors = c.running();
    for &id in &survivors {
        assert_eq!(c.node(id).auth_store().unwrap().revision(), before, "applied on {id}");
    }
    // The next metadata leader repairs every lagging data shard.
    c.wait_leader_among(&survivors);
    let converged = c.run_until(STEPS * 10, |c| {
        c.running().iter().all(|&id| {
            c.node(id).auth_store().unwrap().revision() == before + 1 && copies_agree(c, id)
        })
    });
    assert!(converged, "data shards never caught up with the metadata shard's auth store");
    let on = survivors[0];
    for (shard, key) in &keys {
        let r = c.call_as(on, put_req(key, "w"), alice.clone(), STEPS);
        assert_eq!(auth_err(r), AuthError::PermissionDenied, "alice in {shard}");
    }

    // Restarts keep every copy: the crashed node catches up, and a
    // survivor restarted from its store loads the same copies.
    c.restart(meta_leader).unwrap();
    // A durable checkpoint first: the restart then replays nothing, and the
    // copies (and where each came from) must come from the store.
    c.node(on).store().checkpoint().unwrap();
    c.crash(on);
    c.restart(on).unwrap();
    let converged = c.run_until(STEPS * 10, |c| {
        c.running().len() == 3
            && c.running().iter().all(|&id| {
                c.node(id).auth_store().unwrap().revision() == before + 1 && copies_agree(c, id)
            })
    });
    assert!(converged, "copies lost or stale after restarts");
    wait_leaders(&mut c);
    for (shard, key) in &keys {
        let r = c.call_as(meta_leader, put_req(key, "x"), alice.clone(), STEPS);
        assert_eq!(auth_err(r), AuthError::PermissionDenied, "alice in {shard} after restarts");
        c.call_as(on, put_req(key, "x"), user("root"), STEPS).unwrap();
    }
}

engine_tests!(
    every_data_shard_enforces_the_metadata_shards_rules,
    a_metadata_leader_crash_mid_fan_out_converges,
);
