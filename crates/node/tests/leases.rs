//! Leases: grant, keep-alive (also through a follower), expiry driven by
//! the leader revoking the lease and deleting its keys everywhere, and the
//! remaining TTL kept across a leader change by checkpoints.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use ringkv_node::Engine;
use ringkv_node::testing::Cluster;
use ringkv_node::{EngineKind, Reply, Request};
use ringkv_storage::mvcc::{EventKind, LeaseId, PutRequest, Response};

fn grant<E: Engine>(c: &mut Cluster<E>, on: ringkv_consensus::NodeId, ttl: i64) -> (LeaseId, i64) {
    match c.call(on, Request::LeaseGrant { id: LeaseId(0), ttl }, STEPS).unwrap() {
        Reply::Kv(Response::LeaseGrant(g)) => (g.id, g.ttl),
        other => panic!("{other:?}"),
    }
}

fn ttl<E: Engine>(
    c: &mut Cluster<E>,
    on: ringkv_consensus::NodeId,
    id: LeaseId,
) -> (i64, i64, usize) {
    match c.call(on, Request::LeaseTimeToLive { id, keys: true }, STEPS).unwrap() {
        Reply::LeaseTimeToLive(t) => (t.ttl, t.granted_ttl, t.keys.len()),
        other => panic!("{other:?}"),
    }
}

fn expiry_revokes_the_lease_and_deletes_its_keys_everywhere<E: Engine>() {
    let mut c = cluster::<E>(3, 21);
    let leader = c.wait_leader(100);
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    // Below the minimum: raised to ceil(1.5 × 1 s election timeout) = 2 s.
    let (id, granted) = grant(&mut c, follower, 1);
    assert_eq!(granted, 2);
    assert!(id.0 > 0);
    let put = PutRequest { key: b("owned"), value: b("v"), lease: id, ..PutRequest::default() };
    c.call(follower, Request::Put(put), STEPS).unwrap();
    assert_eq!(ttl(&mut c, follower, id).2, 1, "one key attached");

    // Kept alive through the follower for 5 s, more than twice the TTL.
    for _ in 0..10 {
        match c.call(follower, Request::LeaseKeepAlive(id), STEPS).unwrap() {
            Reply::LeaseKeepAlive { ttl, .. } => assert_eq!(ttl, 2),
            other => panic!("{other:?}"),
        }
        c.run(5);
    }
    settle(&mut c);
    assert!(local_value(&c, follower, "owned").is_some(), "kept alive, must still exist");

    // Then left to expire.
    c.run(40);
    settle(&mut c);
    for n in c.running() {
        assert_eq!(local_value(&c, n, "owned"), None, "key of the expired lease still on {n}");
        let deleted = c.events[&n]
            .iter()
            .flat_map(|w| &w.events)
            .any(|e| e.kind == EventKind::Delete && e.kv.key == b("owned"));
        assert!(deleted, "no delete event on {n}");
    }
    assert_eq!(ttl(&mut c, leader, id).0, -1, "the lease is gone");
    match c.call(leader, Request::LeaseKeepAlive(id), STEPS).unwrap() {
        Reply::LeaseKeepAlive { ttl, .. } => assert_eq!(ttl, 0, "unknown lease renews to 0"),
        other => panic!("{other:?}"),
    }
    assert_same_state(&c);
}

fn remaining_ttl_survives_a_leader_change<E: Engine>() {
    let mut c = cluster_with::<E>(3, 22, &|cfg| {
        cfg.lease_checkpoint_interval = Duration::from_secs(5);
    });
    let leader = c.wait_leader(100);
    let (id, _) = grant(&mut c, leader, 100);
    c.run(300); // 30 s
    let (left, granted, _) = ttl(&mut c, leader, id);
    assert_eq!(granted, 100);
    assert!((69..=70).contains(&left), "remaining {left}");
    c.crash(leader);
    let new_leader = c.wait_leader(300);
    let (left, _, _) = ttl(&mut c, new_leader, id);
    // Restarted from the last checkpoint (at most 5 s old) plus one
    // election timeout, never from the full 100 s.
    assert!(left > 55 && left <= 77, "remaining after the leader change: {left}");
    let listed = match c.call(new_leader, Request::LeaseLeases, STEPS).unwrap() {
        Reply::LeaseLeases(ids) => ids,
        other => panic!("{other:?}"),
    };
    assert_eq!(listed, vec![id]);
}

fn a_revoked_lease_deletes_its_keys_at_once<E: Engine>() {
    let mut c = cluster::<E>(3, 23);
    let leader = c.wait_leader(100);
    let (id, _) = grant(&mut c, leader, 60);
    for k in ["a", "b"] {
        let put = PutRequest { key: b(k), value: b("v"), lease: id, ..PutRequest::default() };
        c.call(leader, Request::Put(put), STEPS).unwrap();
    }
    let r = c.call(leader, Request::LeaseRevoke(id), STEPS).unwrap();
    assert!(matches!(r, Reply::Kv(Response::LeaseRevoke(_))));
    settle(&mut c);
    for n in c.running() {
        assert_eq!(local_value(&c, n, "a"), None);
        assert_eq!(local_value(&c, n, "b"), None);
    }
    let err = c.call(leader, Request::LeaseRevoke(id), STEPS).unwrap_err();
    assert_eq!(err.etcd_message(), "etcdserver: requested lease not found");
}

/// A keep-alive that reaches a new leader before it has applied its
/// predecessor's grant must not be told the lease is gone. The grant
/// commits on the old leader with one follower's ack; that follower never
/// hears that it committed (its link from the leader is cut once it
/// stored the entry), the third node saw nothing; then the old leader
/// dies. Under Raft the follower that holds the entry leads; under
/// Multi-Paxos either survivor may, the other adopting the grant from the
/// holder's promise in phase 1: whoever leads must know the lease.
fn a_new_leader_answers_keep_alives_only_once_it_knows_every_lease<E: Engine>() {
    for seed in 0..3u64 {
        let mut c = cluster::<E>(3, 24 + seed * 7);
        let leader = c.wait_leader(100);
        let followers: Vec<_> = c.running().into_iter().filter(|&id| id != leader).collect();
        let (holder, behind) = (followers[0], followers[1]);
        c.net.partition(&[behind], &[leader, holder]);
        let token = c.submit(leader, Request::LeaseGrant { id: LeaseId(0), ttl: 60 });
        let last = |c: &Cluster<E>, id| {
            c.node(id).replica_status(ringkv_node::DATA_SHARD).unwrap().last_index
        };
        assert!(c.run_until(STEPS, |c| last(c, holder) >= last(c, leader)));
        c.net.cut_one_way(leader, holder);
        let granted = loop {
            if let Some(r) = c.take_result(leader, token) {
                break r.unwrap();
            }
            c.step();
        };
        let Reply::Kv(Response::LeaseGrant(g)) = granted else { panic!("{granted:?}") };
        c.crash(leader);
        c.net.heal();
        let token = c.submit(holder, Request::LeaseKeepAlive(g.id));
        let r = loop {
            if let Some(r) = c.take_result(holder, token) {
                break r;
            }
            c.step();
        };
        if E::KIND == EngineKind::Raft {
            // Raft elects only a node whose log holds every committed entry.
            assert_eq!(c.leader(), Some(holder), "seed {seed}: the node holding the grant leads");
        } else {
            let l = c.leader();
            assert!(l == Some(holder) || l == Some(behind), "seed {seed}: leader {l:?}");
        }
        match r.unwrap() {
            Reply::LeaseKeepAlive { ttl, .. } => {
                assert_eq!(ttl, 60, "seed {seed}: the new leader did not know the lease")
            }
            other => panic!("{other:?}"),
        }
    }
}

engine_tests!(
    expiry_revokes_the_lease_and_deletes_its_keys_everywhere,
    remaining_ttl_survives_a_leader_change,
    a_revoked_lease_deletes_its_keys_at_once,
    a_new_leader_answers_keep_alives_only_once_it_knows_every_lease,
);
