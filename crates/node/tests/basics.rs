//! A cluster elects a leader, commits writes, forwards writes and reads
//! from followers, and times requests out without a quorum.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use ringkv_node::Engine;
use ringkv_node::NodeError;
use ringkv_node::{Reply, Request};
use ringkv_storage::mvcc::RangeRequest;

fn three_nodes_elect_a_leader_and_commit_puts<E: Engine>() {
    let mut c = cluster::<E>(3, 1);
    let leader = c.wait_leader(100);
    let r1 = put(&mut c, leader, "a", "1").unwrap();
    let r2 = put(&mut c, leader, "b", "2").unwrap();
    assert_eq!(r2.0, r1.0 + 1, "one revision per put");
    settle(&mut c);
    for id in c.running() {
        assert_eq!(local_value(&c, id, "a").as_deref(), Some(&b"1"[..]), "on {id}");
        assert_eq!(local_value(&c, id, "b").as_deref(), Some(&b"2"[..]), "on {id}");
    }
    assert_same_state(&c);
}

fn a_put_on_a_follower_is_forwarded_and_answered_there<E: Engine>() {
    let mut c = cluster::<E>(3, 2);
    let leader = c.wait_leader(100);
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    let rev = put(&mut c, follower, "k", "v").unwrap();
    assert!(rev.0 >= 2);
    // The follower answered after applying the entry itself.
    assert_eq!(local_value(&c, follower, "k").as_deref(), Some(&b"v"[..]));
}

fn a_linearizable_read_on_a_follower_sees_an_acknowledged_write<E: Engine>() {
    let mut c = cluster::<E>(3, 3);
    let leader = c.wait_leader(100);
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    // Cut the follower off from new appends only after it knows the leader:
    // then write on the leader, and heal; the read must wait for the entry.
    put(&mut c, leader, "x", "old").unwrap();
    settle(&mut c);
    let others: Vec<_> = c.running().into_iter().filter(|&id| id != follower).collect();
    c.net.partition(&[follower], &others);
    put(&mut c, leader, "x", "new").unwrap();
    assert_eq!(local_value(&c, follower, "x").as_deref(), Some(&b"old"[..]));
    c.net.heal();
    let kv = get_on(&mut c, follower, "x", false).unwrap().unwrap();
    assert_eq!(kv.value, b("new"), "a linearizable read returned a stale value");
}

/// Linearizable reads a follower takes in one round share one read-index
/// request to the leader, and each is served at an index covering every
/// write acknowledged before it arrived.
fn a_followers_reads_of_one_round_share_one_read_index<E: Engine>() {
    const READS: usize = 64;
    let mut c = cluster::<E>(3, 5);
    let leader = c.wait_leader(100);
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    for i in 0..READS {
        put(&mut c, leader, &format!("k{i}"), &format!("v{i}")).unwrap();
    }
    settle(&mut c);
    let before = c.traffic;
    let tokens: Vec<_> = (0..READS)
        .map(|i| {
            let req = RangeRequest { key: b(&format!("k{i}")), ..RangeRequest::default() };
            c.submit(follower, Request::Range(req))
        })
        .collect();
    let mut answers: Vec<Option<Result<Reply, NodeError>>> = (0..READS).map(|_| None).collect();
    for _ in 0..STEPS {
        if answers.iter().all(Option::is_some) {
            break;
        }
        c.step();
        for (i, t) in tokens.iter().enumerate() {
            if answers[i].is_none() {
                answers[i] = c.take_result(follower, *t);
            }
        }
    }
    let sent = c.traffic.since(before);
    for (i, a) in answers.into_iter().enumerate() {
        let Some(Ok(Reply::Range(r))) = a else { panic!("read {i}: {a:?}") };
        assert_eq!(r.kvs[0].value, b(&format!("v{i}")), "read {i}");
    }
    // One request and its answer, plus the leader's heartbeat round and
    // whatever the ticks sent meanwhile; one request per read would be at
    // least 2 * READS.
    assert!(
        sent.consensus_messages < READS as u64,
        "{READS} reads took {} consensus messages",
        sent.consensus_messages
    );
}

fn requests_time_out_without_a_quorum<E: Engine>() {
    let mut c = cluster::<E>(3, 4);
    let leader = c.wait_leader(100);
    let others: Vec<_> = c.running().into_iter().filter(|&id| id != leader).collect();
    c.net.isolate(leader, &others);
    let err = put(&mut c, leader, "k", "v").unwrap_err();
    assert!(
        matches!(err, NodeError::Timeout | NodeError::LeaderChanged | NodeError::NoLeader),
        "{err:?}"
    );
    // The minority side serves no linearizable read either.
    let err = get_on(&mut c, leader, "k", false).unwrap_err();
    assert!(
        matches!(err, NodeError::Timeout | NodeError::NoLeader | NodeError::LeaderChanged),
        "{err:?}"
    );
    // A serializable read is served locally even so.
    assert_eq!(get_on(&mut c, leader, "k", true).unwrap(), None);
    // The majority elected a leader of its own and goes on.
    let new_leader = c.leader().unwrap();
    assert!(others.contains(&new_leader));
    put(&mut c, others[0], "k", "v2").unwrap();
    c.net.heal();
    let leader = c.wait_leader(200);
    put(&mut c, leader, "k", "v3").unwrap();
    settle(&mut c);
    assert_same_state(&c);
}

/// `ringkv` with no arguments is one node: it leads alone, serves
/// linearizable reads, and comes back after a crash with its data.
fn a_single_node_cluster_serves_alone<E: Engine>() {
    let mut c = cluster::<E>(1, 5);
    let me = c.wait_leader(100);
    put(&mut c, me, "solo", "1").unwrap();
    assert_eq!(get_on(&mut c, me, "solo", false).unwrap().unwrap().value, b("1"));
    c.crash(me);
    c.restart(me).unwrap();
    let me = c.wait_leader(100);
    assert_eq!(get_on(&mut c, me, "solo", false).unwrap().unwrap().value, b("1"));
    put(&mut c, me, "solo", "2").unwrap();
}

#[test]
fn the_node_and_its_outputs_cross_threads() {
    // The server runs the node on a dedicated thread and hands completions
    // and events to others, whichever the engine.
    fn send<T: Send>() {}
    send::<ringkv_node::testing::TestNode<ringkv_node::RaftEngine>>();
    send::<ringkv_node::testing::TestNode<ringkv_node::PaxosEngine>>();
    send::<
        ringkv_node::Node<
            ringkv_node::RaftEngine,
            ringkv_storage::FsDisk,
            ringkv_node::testing::MemTransport,
            ringkv_node::testing::ManualClock,
        >,
    >();
    send::<
        ringkv_node::Node<
            ringkv_node::PaxosEngine,
            ringkv_storage::FsDisk,
            ringkv_node::testing::MemTransport,
            ringkv_node::testing::ManualClock,
        >,
    >();
    send::<ringkv_node::RoundOutput>();
    send::<ringkv_node::NodeError>();
}

engine_tests!(
    a_single_node_cluster_serves_alone,
    three_nodes_elect_a_leader_and_commit_puts,
    a_put_on_a_follower_is_forwarded_and_answered_there,
    a_linearizable_read_on_a_follower_sees_an_acknowledged_write,
    a_followers_reads_of_one_round_share_one_read_index,
    requests_time_out_without_a_quorum,
);
