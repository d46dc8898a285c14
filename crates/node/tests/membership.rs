//! etcd's Cluster API: add a learner, let it join and catch up, promote it
//! (refused while it lags), remove a member; the consensus group follows
//! the member table.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use ringkv_consensus::NodeId;
use ringkv_node::Engine;
use ringkv_node::testing::{Cluster, test_config};
use ringkv_node::{DATA_SHARD, Member, Reply, Request};

fn members<E: Engine>(
    c: &mut Cluster<E>,
    on: NodeId,
    request: Request,
) -> (Option<Member>, Vec<Member>) {
    match c.call(on, request, STEPS).unwrap() {
        Reply::Members { member, members } => (member, members),
        other => panic!("{other:?}"),
    }
}

fn voters<E: Engine>(c: &Cluster<E>, on: NodeId) -> Vec<NodeId> {
    c.node(on).replica_status(DATA_SHARD).unwrap().membership.voters.into_iter().collect()
}

fn learners<E: Engine>(c: &Cluster<E>, on: NodeId) -> Vec<NodeId> {
    c.node(on).replica_status(DATA_SHARD).unwrap().membership.learners.into_iter().collect()
}

fn add_learner_catch_up_promote_remove<E: Engine>() {
    let mut c = cluster::<E>(3, 31);
    let leader = c.wait_leader(100);
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    for i in 0..30 {
        put(&mut c, leader, &format!("k{i}"), "v").unwrap();
    }
    let (_, list) = members(&mut c, follower, Request::MemberList { linearizable: true });
    assert_eq!(list.len(), 3);

    // Add a learner (through a follower: forwarded, answered there).
    let add = Request::MemberAdd { peer_urls: vec!["http://n4:2380".into()], is_learner: true };
    let (added, list) = members(&mut c, follower, add);
    let added = added.unwrap();
    assert!(added.is_learner && added.name.is_empty());
    assert_eq!(list.len(), 4);
    // The same peer URL again is refused; so is a second learner.
    let again = Request::MemberAdd { peer_urls: vec!["http://n4:2380".into()], is_learner: false };
    let err = c.call(leader, again, STEPS).unwrap_err();
    assert_eq!(err.etcd_message(), "etcdserver: Peer URLs already exists");
    let second = Request::MemberAdd { peer_urls: vec!["http://n5:2380".into()], is_learner: true };
    let err = c.call(leader, second, STEPS).unwrap_err();
    assert_eq!(err.etcd_message(), "etcdserver: too many learner members in cluster");

    // The leader makes it a learner of the group.
    assert!(c.run_until(STEPS, |c| learners(c, leader) == vec![added.id]));

    // Before the node runs, promotion is refused: it has nothing.
    let err = c.call(follower, Request::MemberPromote(added.id), STEPS).unwrap_err();
    assert_eq!(
        err.etcd_message(),
        "etcdserver: can only promote a learner member which is in sync with leader"
    );

    // The node starts, joins, catches up and publishes its name.
    c.add_joining(added.id, test_config(4, 3, 31)).unwrap();
    settle(&mut c);
    assert!(c.run_until(STEPS, |c| c.node(leader).members().iter().any(|m| m.name == "n4")));
    for i in 0..30 {
        assert!(local_value(&c, added.id, &format!("k{i}")).is_some());
    }

    // Promote.
    let (promoted, _) = members(&mut c, leader, Request::MemberPromote(added.id));
    assert!(!promoted.unwrap().is_learner);
    assert!(c.run_until(STEPS, |c| voters(c, leader).contains(&added.id)));
    let err = c.call(leader, Request::MemberPromote(added.id), STEPS).unwrap_err();
    assert_eq!(err.etcd_message(), "etcdserver: can only promote a learner member");

    // Remove an original follower.
    let (_, list) = members(&mut c, leader, Request::MemberRemove(follower));
    assert_eq!(list.len(), 3);
    assert!(c.run_until(STEPS, |c| !voters(c, leader).contains(&follower)));
    let err = c.call(leader, Request::MemberRemove(follower), STEPS).unwrap_err();
    assert_eq!(err.etcd_message(), "etcdserver: member not found");
    // The removed member stops by itself and serves nothing more.
    assert!(c.run_until(STEPS, |c| c.node(follower).stopped().is_some()));
    assert!(c.node(follower).stopped().unwrap().contains("removed"));
    let err = put(&mut c, follower, "from", "removed").unwrap_err();
    assert_eq!(err.etcd_message(), "etcdserver: server stopped");
    c.crash(follower);

    // The new group works and agrees.
    let leader = c.wait_leader(STEPS);
    put(&mut c, leader, "after", "membership").unwrap();
    settle(&mut c);
    assert_eq!(voters(&c, leader).len(), 3);
    assert_same_state(&c);
}

fn update_changes_peer_urls<E: Engine>() {
    let mut c = cluster::<E>(3, 32);
    let leader = c.wait_leader(100);
    let other = c.running().into_iter().find(|&id| id != leader).unwrap();
    let update = Request::MemberUpdate { id: other, peer_urls: vec!["http://new:2380".into()] };
    let (m, _) = members(&mut c, leader, update);
    assert_eq!(m.unwrap().peer_urls, vec!["http://new:2380".to_owned()]);
    let bad = Request::MemberUpdate { id: NodeId(12345), peer_urls: vec!["http://x".into()] };
    assert_eq!(
        c.call(leader, bad, STEPS).unwrap_err().etcd_message(),
        "etcdserver: member not found"
    );
    settle(&mut c);
    // Every member published its name and client URLs.
    for m in c.node(leader).members() {
        assert!(!m.name.is_empty() && !m.client_urls.is_empty(), "{m:?}");
    }
}

fn a_member_removed_while_away_is_told_and_stops<E: Engine>() {
    let mut c = cluster::<E>(3, 33);
    let leader = c.wait_leader(100);
    let away = c.running().into_iter().find(|&id| id != leader).unwrap();
    let others: Vec<_> = c.running().into_iter().filter(|&id| id != away).collect();
    c.net.partition(&[away], &others);
    let (_, list) = members(&mut c, leader, Request::MemberRemove(away));
    assert_eq!(list.len(), 2);
    assert!(c.run_until(STEPS, |c| !voters(c, leader).contains(&away)));
    assert!(c.node(away).stopped().is_none(), "it cannot know yet");
    c.net.heal();
    assert!(c.run_until(STEPS, |c| c.node(away).stopped().is_some()), "never told");
    assert!(c.node(away).members().iter().any(|m| m.id == away), "it never applied its removal");
    put(&mut c, leader, "still", "working").unwrap();
}

/// Two removals submitted back to back on a four-member cluster: each
/// removed member stops as soon as it applies its removal, so had the
/// second left the member table before the consensus group dropped the
/// first, the group would wait on two stopped voters of four, without a
/// quorum, for good (under Multi-Paxos a change takes effect only α slots
/// after it is chosen). The leader holds the second back until the first
/// has taken effect.
fn back_to_back_removals_keep_a_quorum<E: Engine>() {
    let mut c = cluster::<E>(4, 34);
    let leader = c.wait_leader(100);
    let others: Vec<NodeId> = c.running().into_iter().filter(|&id| id != leader).collect();
    let (a, b2) = (others[0], others[1]);
    let first = c.submit(leader, Request::MemberRemove(a));
    let second = c.submit(others[2], Request::MemberRemove(b2));
    let answered = c.run_until(STEPS * 2, |c| {
        c.running().contains(&leader) && c.node(leader).members().len() == 2
    });
    assert!(answered, "both removals applied");
    for (on, token) in [(leader, first), (others[2], second)] {
        let r = c.take_result(on, token).expect("answered");
        assert!(matches!(r, Ok(Reply::Members { .. })), "{r:?}");
    }
    assert!(c.run_until(STEPS, |c| voters(c, leader).len() == 2), "the group follows");
    for id in [a, b2] {
        assert!(c.node(id).stopped().is_some());
        c.crash(id);
    }
    put(&mut c, leader, "still", "a quorum").unwrap();
    settle(&mut c);
    assert_same_state(&c);
}

engine_tests!(
    back_to_back_removals_keep_a_quorum,
    add_learner_catch_up_promote_remove,
    update_changes_peer_urls,
    a_member_removed_while_away_is_told_and_stops,
);
