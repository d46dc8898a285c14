//! The Maintenance API the server maps: status, hash, hash-kv, move-leader,
//! defragment; and the watch events a write produces on every replica.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use ringkv_consensus::NodeId;
use ringkv_node::Engine;
use ringkv_node::testing::Cluster;
use ringkv_node::{ErrorClass, NodeError, NodeStatus, Reply, Request};
use ringkv_storage::mvcc::{EventKind, PutRequest, Revision};

fn status<E: Engine>(c: &mut Cluster<E>, on: NodeId) -> NodeStatus {
    match c.call(on, Request::Status, STEPS).unwrap() {
        Reply::Status(s) => *s,
        other => panic!("{other:?}"),
    }
}

fn status_and_hashes_agree_across_members<E: Engine>() {
    let mut c = cluster::<E>(3, 61);
    let leader = c.wait_leader(100);
    for i in 0..10 {
        put(&mut c, leader, &format!("k{i}"), "v").unwrap();
    }
    settle(&mut c);
    let mut hashes = Vec::new();
    for id in c.running() {
        let s = status(&mut c, id);
        assert_eq!(s.member_id, id);
        assert_eq!(s.leader, Some(leader));
        assert!(s.cluster_id != 0 && s.cluster_id == c.node(leader).cluster_id());
        assert!(s.raft_term >= 2 && s.raft_applied_index == s.raft_index);
        assert!(s.db_size > 0 && s.db_size_in_use > 0 && s.db_size_in_use <= s.db_size);
        assert!(!s.is_learner && s.errors.is_empty());
        assert_eq!(s.engine, E::NAME);
        let hash = match c.call(id, Request::Hash, STEPS).unwrap() {
            Reply::Hash { hash, revision } => (hash, revision),
            other => panic!("{other:?}"),
        };
        let kv = match c.call(id, Request::HashKv(Revision(5)), STEPS).unwrap() {
            Reply::HashKv(h) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(kv.hash_revision, Revision(5));
        hashes.push((hash, kv));
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    let err = c.call(leader, Request::HashKv(Revision(1000)), STEPS).unwrap_err();
    assert_eq!(err.etcd_message(), "etcdserver: mvcc: required revision is a future revision");
    assert_eq!(err.class(), ErrorClass::OutOfRange);
    assert!(matches!(c.call(leader, Request::Defragment, STEPS).unwrap(), Reply::Done));
}

fn move_leader_hands_leadership_to_the_target<E: Engine>() {
    let mut c = cluster::<E>(3, 62);
    let leader = c.wait_leader(100);
    let target = c.running().into_iter().find(|&id| id != leader).unwrap();
    let err = c.call(target, Request::MoveLeader(leader), STEPS).unwrap_err();
    assert!(matches!(err, NodeError::NotLeader { leader: Some(l) } if l == leader));
    assert_eq!(err.etcd_message(), "etcdserver: not leader");
    let err = c.call(leader, Request::MoveLeader(NodeId(4242)), STEPS).unwrap_err();
    assert_eq!(err.etcd_message(), "etcdserver: bad leader transferee");
    assert!(matches!(c.call(leader, Request::MoveLeader(target), STEPS).unwrap(), Reply::Done));
    assert_eq!(c.wait_leader(STEPS), target);
    put(&mut c, target, "after", "move").unwrap();
}

fn every_replica_emits_the_same_watch_events<E: Engine>() {
    let mut c = cluster::<E>(3, 63);
    let leader = c.wait_leader(100);
    put(&mut c, leader, "w", "1").unwrap();
    let put2 = PutRequest { key: b("w"), value: b("2"), prev_kv: true, ..PutRequest::default() };
    c.call(leader, Request::Put(put2), STEPS).unwrap();
    settle(&mut c);
    let mut seen = Vec::new();
    for id in c.running() {
        let events: Vec<_> = c.events[&id].iter().flat_map(|w| w.events.clone()).collect();
        assert_eq!(events.len(), 2, "on {id}");
        assert_eq!(events[1].kind, EventKind::Put);
        assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b("1"), "prev_kv carried");
        let revs: Vec<_> = c.events[&id].iter().map(|w| w.revision).collect();
        seen.push((events, revs));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
}

engine_tests!(
    status_and_hashes_agree_across_members,
    move_leader_hands_leadership_to_the_target,
    every_replica_emits_the_same_watch_events,
);
