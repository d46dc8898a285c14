//! Placement recorded by the metadata group (ADR 0002, step 2): with at
//! most R voting members nothing is recorded (every member holds every
//! shard); beyond R the metadata leader records, per data shard, a target
//! of R members as the ring places them; the replication factor is fixed
//! at creation; a shard may be targeted back onto a node it was moved off
//! (the replica it gets there is a new one, under a fresh id).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::BTreeMap;

use common::*;
use ringkv_consensus::{NodeId, ShardId};
use ringkv_node::testing::{Cluster, test_config};
use ringkv_node::{Engine, META_SHARD, NodeError, Reply, Request};
use ringkv_ring::{NodeSpec, PlacementConfig, Ring};

/// Replicas per data shard in these scenarios (the default).
const R: u32 = 3;

/// Every data shard's replicas as the ring places them on `members`,
/// ascending: computed here from the ring crate, not by the node.
fn ring_placement(members: &[NodeId]) -> BTreeMap<ShardId, Vec<NodeId>> {
    let ring = Ring::new(members.iter().map(|m| NodeSpec::new(ringkv_ring::NodeId(m.0)))).unwrap();
    let placement = ring.place(&PlacementConfig::new(SHARDS, R)).unwrap();
    data_shards()
        .into_iter()
        .map(|s| {
            let mut nodes: Vec<NodeId> = placement
                .replicas(ringkv_ring::ShardId(s.0))
                .unwrap()
                .iter()
                .map(|n| NodeId(n.0))
                .collect();
            nodes.sort_unstable();
            (s, nodes)
        })
        .collect()
}

/// Whether every running node's metadata replica records `want` as the
/// targets.
fn everyone_records<E: Engine>(c: &Cluster<E>, want: &BTreeMap<ShardId, Vec<NodeId>>) -> bool {
    c.running().iter().all(|&n| c.node(n).shard_targets() == *want)
}

fn three_members_record_no_target<E: Engine>() {
    let mut c = sharded::<E>(3, 91);
    let leader = wait_leaders(&mut c);
    put(&mut c, leader, "k", "v").unwrap();
    // Several placement passes.
    c.run(STEPS);
    let members = c.running();
    for &n in &members {
        let node = c.node(n);
        assert!(node.shard_targets().is_empty(), "{n} records targets");
        for s in data_shards() {
            assert!(node.hosts(s));
            assert_eq!(node.shard_replica_nodes(s), members, "{s} on {n}");
        }
        assert!(node.hosts(META_SHARD));
        assert!(!node.hosts(ShardId(u64::from(SHARDS) + 1)));
        assert!(node.shard_replica_nodes(ShardId(u64::from(SHARDS) + 1)).is_empty());
    }
}

fn four_members_record_r_replicas_per_shard_as_the_ring_places_them<E: Engine>() {
    let mut c = sharded::<E>(4, 92);
    wait_leaders(&mut c);
    let members = c.running();
    let want = ring_placement(&members);
    assert!(want.values().all(|n| n.len() == R as usize));
    assert!(c.run_until(STEPS * 4, |c| everyone_records(c, &want)), "targets not recorded");
    // Recorded, not yet acted on: every node still holds every shard and
    // answers for it.
    for &n in &members {
        for s in data_shards() {
            assert!(c.node(n).hosts(s));
        }
        put(&mut c, n, &format!("through-{n}"), "v").unwrap();
    }
}

fn a_shard_is_targeted_back_onto_a_node_it_left<E: Engine>() {
    let mut c = sharded::<E>(4, 93);
    wait_leaders(&mut c);
    let founders = c.running();
    let four = ring_placement(&founders);
    assert!(c.run_until(STEPS * 4, |c| everyone_records(c, &four)));
    // A fifth voter: shards move towards it.
    let fifth = add_voter(&mut c, 5, 93, |_| {});
    let mut five_members = founders.clone();
    five_members.push(fifth);
    five_members.sort_unstable();
    let five = ring_placement(&five_members);
    assert_ne!(five, four, "the fifth member takes some replicas (else pick another seed)");
    assert!(c.run_until(STEPS * 8, |c| everyone_records(c, &five)), "five-member targets");
    // Removed again: the four-member placement comes back whole, shards
    // that went to the fifth member back onto the founders they left
    // (a replica added there is a new one, under a fresh id).
    let leader = c.wait_leader(STEPS);
    let remover = if leader == fifth { founders[0] } else { leader };
    c.call(remover, Request::MemberRemove(fifth), STEPS).unwrap();
    let returning = four.iter().filter(|(s, nodes)| nodes.iter().any(|n| !five[*s].contains(n)));
    assert!(returning.count() > 0, "some shard moved to the fifth member");
    // (The removed member stops; the others record.)
    let ok = c.run_until(STEPS * 8, |c| {
        c.running().iter().filter(|&&n| n != fifth).all(|&n| c.node(n).shard_targets() == four)
    });
    assert!(ok, "four-member targets again");
}

fn a_node_with_another_replication_factor_refuses_to_start<E: Engine>() {
    let mut c = sharded::<E>(3, 94);
    let leader = wait_leaders(&mut c);
    put(&mut c, leader, "k", "v").unwrap();
    let victim = c.running().into_iter().find(|&id| id != leader).unwrap();
    c.crash(victim);
    c.config_mut(victim).replicas = 5;
    let err = c.restart(victim).unwrap_err();
    assert!(matches!(err, NodeError::ReplicasMismatch { stored: 3, configured: 5 }), "{err:?}");
    assert!(err.to_string().contains("--replicas 3"), "{err}");
    c.config_mut(victim).replicas = R;
    c.restart(victim).unwrap();

    // A joining member with another factor stops once it learns the
    // cluster's from the metadata log.
    let leader = c.wait_leader(STEPS);
    let add = Request::MemberAdd { peer_urls: vec!["http://n4:2380".into()], is_learner: true };
    let Reply::Members { member: Some(added), .. } = c.call(leader, add, STEPS).unwrap() else {
        panic!("no member")
    };
    let mut cfg = test_config(4, 3, 94);
    cfg.keyspace = keyspace();
    cfg.replicas = 5;
    c.add_joining(added.id, cfg).unwrap();
    assert!(c.run_until(STEPS * 2, |c| c.node(added.id).stopped().is_some()));
    let reason = c.node(added.id).stopped().unwrap().to_owned();
    assert!(reason.contains("--replicas 3") && reason.contains("--replicas 5"), "{reason}");
}

engine_tests!(
    three_members_record_no_target,
    four_members_record_r_replicas_per_shard_as_the_ring_places_them,
    a_shard_is_targeted_back_onto_a_node_it_left,
    a_node_with_another_replication_factor_refuses_to_start,
);
