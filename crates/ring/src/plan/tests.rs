use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::testing::{node_set, ring};
use crate::{MovementPlan, NodeId, Placement, PlacementConfig, PlanError, ShardId, Step};

fn placement(shards: &[&[u64]]) -> Placement {
    Placement::from_shards(shards.iter().map(|s| s.iter().map(|&n| NodeId(n)).collect()).collect())
        .unwrap()
}

fn plan(old: &Placement, new: &Placement) -> Vec<Step> {
    MovementPlan::between(old, new).unwrap().steps().to_vec()
}

const S1: ShardId = ShardId(1);

#[test]
fn equal_placements_need_no_steps() {
    let p = placement(&[&[1, 2, 3], &[2, 3, 4]]);
    assert!(MovementPlan::between(&p, &p).unwrap().is_empty());
    // The followers' order is not part of a placement.
    assert_eq!(p, placement(&[&[1, 3, 2], &[2, 4, 3]]));
}

#[test]
fn a_move_off_the_leader_hands_the_leadership_to_its_replacement() {
    let old = placement(&[&[1, 2, 3]]);
    let new = placement(&[&[4, 2, 3]]);
    assert_eq!(plan(&old, &new), [Step::Move { shard: S1, from: NodeId(1), to: NodeId(4) }]);
}

#[test]
fn a_follower_that_becomes_leader_needs_a_transfer() {
    let old = placement(&[&[1, 2, 3]]);
    let new = placement(&[&[2, 3, 4]]);
    assert_eq!(
        plan(&old, &new),
        [
            Step::Move { shard: S1, from: NodeId(1), to: NodeId(4) },
            Step::TransferLeader { shard: S1, from: NodeId(4), to: NodeId(2) },
        ]
    );
    let new = placement(&[&[3, 1, 2]]);
    assert_eq!(
        plan(&old, &new),
        [Step::TransferLeader { shard: S1, from: NodeId(1), to: NodeId(3) }]
    );
}

#[test]
fn a_shrinking_shard_moves_the_leadership_before_removing_it() {
    let old = placement(&[&[1, 2, 3]]);
    let new = placement(&[&[2, 3]]);
    assert_eq!(
        plan(&old, &new),
        [
            Step::TransferLeader { shard: S1, from: NodeId(1), to: NodeId(2) },
            Step::Remove { shard: S1, node: NodeId(1) },
        ]
    );
    let grown = placement(&[&[1, 2, 3, 5, 6]]);
    assert_eq!(
        plan(&old, &grown),
        [Step::Add { shard: S1, node: NodeId(5) }, Step::Add { shard: S1, node: NodeId(6) }]
    );
}

#[test]
fn plans_refuse_placements_they_were_not_made_for() {
    let old = placement(&[&[1, 2, 3]]);
    let new = placement(&[&[4, 2, 3]]);
    let plan = MovementPlan::between(&old, &new).unwrap();
    assert_eq!(
        plan.apply(&placement(&[&[5, 2, 3]])),
        Err(PlanError::NotAReplica { shard: S1, node: NodeId(1) })
    );
    assert_eq!(
        plan.apply(&placement(&[&[1, 2, 4]])),
        Err(PlanError::AlreadyAReplica { shard: S1, node: NodeId(4) })
    );
    assert_eq!(
        MovementPlan::between(&old, &placement(&[&[1, 2, 3], &[1, 2, 3]])),
        Err(PlanError::ShardCountMismatch { old: 1, new: 2 })
    );
    let two = placement(&[&[1, 2, 3], &[1, 2, 3]]);
    let moved = placement(&[&[1, 2, 3], &[4, 2, 3]]);
    let plan = MovementPlan::between(&two, &moved).unwrap();
    assert_eq!(plan.apply(&old), Err(PlanError::UnknownShard { shard: ShardId(2) }));
    let shrink = MovementPlan::between(&placement(&[&[1, 2]]), &placement(&[&[1]])).unwrap();
    assert_eq!(
        shrink.apply(&placement(&[&[2, 1]])),
        Err(PlanError::WrongLeader { shard: S1, node: NodeId(2) })
    );
}

/// Two placements of the same shard count from unrelated rings and
/// replication factors.
fn placement_pair() -> impl Strategy<Value = (Placement, Placement)> {
    (node_set(1, 10), node_set(1, 10), 1u32..=40, 1u32..=5, 1u32..=5, any::<bool>()).prop_map(
        |(a, b, shards, ra, rb, bounded)| {
            let config = |r: u32, n: usize| {
                let config = PlacementConfig::new(shards, r.min(n as u32));
                if bounded { config.with_load_bound(25) } else { config }
            };
            (
                ring(&a).place(&config(ra, a.len())).unwrap(),
                ring(&b).place(&config(rb, b.len())).unwrap(),
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn applying_the_plan_gives_the_new_placement((old, new) in placement_pair()) {
        let plan = MovementPlan::between(&old, &new).unwrap();
        prop_assert_eq!(plan.apply(&old).unwrap(), new.clone());

        // Minimal: per shard, max(lost, gained) replica steps, and a leader
        // transfer only where no move could carry the leadership.
        for ((shard, before), (_, after)) in old.iter().zip(new.iter()) {
            let (b, a): (BTreeSet<_>, BTreeSet<_>) =
                (before.iter().copied().collect(), after.iter().copied().collect());
            let lost = b.difference(&a).count();
            let gained = a.difference(&b).count();
            let steps: Vec<&Step> = plan.steps().iter().filter(|s| s.shard() == shard).collect();
            let transfers =
                steps.iter().filter(|s| matches!(s, Step::TransferLeader { .. })).count();
            prop_assert_eq!(steps.len() - transfers, lost.max(gained));
            let carried = !a.contains(&before[0]) && !b.contains(&after[0]) && gained > 0;
            let needed = before[0] != after[0] && !carried;
            prop_assert_eq!(transfers, usize::from(needed), "shard {:?}: {:?}", shard, steps);
        }
    }
}
