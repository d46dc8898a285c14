//! Storage failures: a full disk raises NOSPACE through the leader and the
//! cluster refuses writes with etcd's error while losing nothing
//! acknowledged; an fdatasync error stops the node for good (never
//! retried), hands leadership over and fails its waiters; the quota raises
//! NOSPACE too; disarming the alarm lets writes in again.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use ringkv_consensus::NodeId;
use ringkv_node::Engine;
use ringkv_node::testing::Cluster;
use ringkv_node::{AlarmAction, AlarmMember, AlarmType, NodeError, Reply, Request};
use ringkv_storage::disk::{FaultKind, FaultOp};
use ringkv_storage::mvcc::DeleteRangeRequest;

fn alarms<E: Engine>(c: &mut Cluster<E>, on: NodeId) -> Vec<AlarmMember> {
    let req =
        Request::Alarm { action: AlarmAction::Get, member: NodeId(0), alarm: AlarmType::NoSpace };
    match c.call(on, req, STEPS).unwrap() {
        Reply::Alarms(a) => a,
        other => panic!("{other:?}"),
    }
}

fn big(i: usize) -> String {
    format!("{i}-{}", "x".repeat(2000))
}

/// Writes until one is refused for space; returns the acknowledged keys.
fn fill<E: Engine>(c: &mut Cluster<E>, on_any: &[NodeId], max: usize) -> (Vec<String>, NodeError) {
    let mut acked = Vec::new();
    for i in 0..max {
        let key = format!("k{i:04}");
        let Some(on) = c.leader().or(on_any.first().copied()) else { panic!("no node") };
        match put(c, on, &key, &big(i)) {
            Ok(_) => acked.push(key),
            Err(NodeError::NoSpace) => return (acked, NodeError::NoSpace),
            // Leadership may move while the full node stops.
            Err(NodeError::LeaderChanged | NodeError::Timeout | NodeError::NoLeader) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    panic!("never refused for space after {max} writes");
}

fn a_full_disk_raises_nospace_and_loses_nothing_acknowledged<E: Engine>() {
    for full_leader in [false, true] {
        let mut c = cluster::<E>(3, 51 + u64::from(full_leader));
        let leader = c.wait_leader(100);
        let full = if full_leader {
            leader
        } else {
            c.running().into_iter().find(|&id| id != leader).unwrap()
        };
        let used = c.disk(full).used_bytes();
        c.disk(full).set_capacity(Some(used + (256 << 10)));
        let healthy: Vec<_> = c.running().into_iter().filter(|&id| id != full).collect();
        let (acked, _) = fill(&mut c, &healthy, 2000);
        assert!(c.node(full).stopped().is_some(), "the full node stopped");
        let raised = AlarmMember { member: full, alarm: AlarmType::NoSpace };
        let all =
            c.run_until(STEPS, |c| healthy.iter().all(|&id| c.node(id).alarms().contains(&raised)));
        assert!(all, "the alarm did not reach every healthy node");
        assert!(alarms(&mut c, healthy[0]).contains(&raised));
        assert!(alarms(&mut c, full).contains(&raised), "the stopped node lists its own alarm");
        // Writes are refused on every node, with etcd's message; deletes pass.
        for &id in &healthy {
            let err = put(&mut c, id, "more", "data").unwrap_err();
            assert_eq!(err.etcd_message(), "etcdserver: mvcc: database space exceeded");
        }
        let del =
            Request::DeleteRange(DeleteRangeRequest { key: b("k0000"), ..Default::default() });
        c.call(healthy[0], del, STEPS).unwrap();
        // The stopped node refuses writes too, but still answers status.
        let err = put(&mut c, full, "x", "y").unwrap_err();
        assert_eq!(err.etcd_message(), "etcdserver: mvcc: database space exceeded");
        match c.call(full, Request::Status, STEPS).unwrap() {
            Reply::Status(s) => assert!(!s.errors.is_empty()),
            other => panic!("{other:?}"),
        }

        // Free space, restart, disarm: nothing acknowledged was lost.
        c.disk(full).set_capacity(None);
        c.crash(full);
        c.restart(full).unwrap();
        let leader = c.wait_leader(300);
        let disarm = Request::Alarm {
            action: AlarmAction::Deactivate,
            member: full,
            alarm: AlarmType::NoSpace,
        };
        c.call(leader, disarm, STEPS).unwrap();
        put(&mut c, leader, "after", "disarm").unwrap();
        settle(&mut c);
        for id in c.running() {
            for key in acked.iter().skip(1) {
                assert!(local_value(&c, id, key).is_some(), "acked {key} lost on {id}");
            }
        }
        assert_same_state(&c);
    }
}

fn an_fsync_error_stops_the_node_and_is_never_retried<E: Engine>() {
    let mut c = cluster::<E>(3, 53);
    let leader = c.wait_leader(100);
    for i in 0..5 {
        put(&mut c, leader, &format!("k{i}"), "v").unwrap();
    }
    c.disk(leader).fail_next(FaultOp::SyncData, FaultKind::Eio);
    let token = c.submit(leader, put_req("doomed", "v"));
    assert!(c.run_until(STEPS, |c| c.node(leader).stopped().is_some()));
    let syncs = c.disk(leader).stats().syncs;
    c.run(5);
    let result = c.take_result(leader, token);
    let err = result.expect("the waiter was answered").unwrap_err();
    assert_eq!(err.etcd_message(), "etcdserver: server stopped");
    // Leadership moved to a caught-up voter; the old leader syncs no more.
    let new_leader =
        c.wait_leader_among(&c.running().into_iter().filter(|&i| i != leader).collect::<Vec<_>>());
    assert_ne!(new_leader, leader);
    c.run(20);
    assert_eq!(c.disk(leader).stats().syncs, syncs, "a stopped node fsynced again");
    let err = put(&mut c, leader, "x", "y").unwrap_err();
    assert!(matches!(err, NodeError::Stopped { .. }));
    put(&mut c, new_leader, "k9", "v").unwrap();

    c.crash(leader);
    c.restart(leader).unwrap();
    settle(&mut c);
    for id in c.running() {
        for i in 0..5 {
            assert!(local_value(&c, id, &format!("k{i}")).is_some());
        }
    }
    assert_same_state(&c);
}

fn the_quota_raises_nospace<E: Engine>() {
    let mut c = cluster_with::<E>(3, 54, &|cfg| cfg.quota_backend_bytes = 1 << 20);
    let leader = c.wait_leader(100);
    let (acked, _) = fill(&mut c, &[leader], 3000);
    assert!(!acked.is_empty());
    let raised = |c: &Cluster<E>| {
        c.running()
            .iter()
            .all(|&id| c.node(id).alarms().iter().any(|a| a.alarm == AlarmType::NoSpace))
    };
    assert!(c.run_until(STEPS, raised), "the quota alarm did not reach every node");
    let a = alarms(&mut c, leader);
    assert!(a.iter().any(|m| m.alarm == AlarmType::NoSpace), "{a:?}");
    // Nobody stopped: the quota is a policy, not a failure.
    for id in c.running() {
        assert!(c.node(id).stopped().is_none());
    }
    let del = Request::DeleteRange(DeleteRangeRequest { key: b("k0001"), ..Default::default() });
    c.call(leader, del, STEPS).unwrap();
}

engine_tests!(
    a_full_disk_raises_nospace_and_loses_nothing_acknowledged,
    an_fsync_error_stops_the_node_and_is_never_retried,
    the_quota_raises_nospace,
);
