//! Movement plans: the fewest replica changes that turn one placement into
//! another.

use thiserror::Error;

use crate::ids::{FIRST_DATA_SHARD, NodeId, ShardId};
use crate::placement::{Placement, PlacementError};

/// One change to one shard's replicas.
///
/// In Raft terms a `Move` is: add `to` as a learner, let it catch up, promote
/// it, then remove `from` (transferring leadership first if `from` leads).
/// Carrying those out, and throttling them, is the server's job.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Replace replica `from` by `to`; `to` takes over `from`'s role, so if
    /// `from` was the preferred leader, `to` becomes it.
    Move {
        /// The shard.
        shard: ShardId,
        /// The replica that leaves.
        from: NodeId,
        /// The node that gets the replica.
        to: NodeId,
    },
    /// Add a follower on `node` (the replication factor grows).
    Add {
        /// The shard.
        shard: ShardId,
        /// The node that gets a new replica.
        node: NodeId,
    },
    /// Remove the follower on `node` (the replication factor shrinks).
    Remove {
        /// The shard.
        shard: ShardId,
        /// The node whose replica leaves; never the preferred leader.
        node: NodeId,
    },
    /// Make replica `to` the preferred leader instead of `from`.
    TransferLeader {
        /// The shard.
        shard: ShardId,
        /// The current preferred leader.
        from: NodeId,
        /// The replica that becomes the preferred leader.
        to: NodeId,
    },
}

impl Step {
    /// The shard the step changes.
    pub fn shard(&self) -> ShardId {
        match *self {
            Step::Move { shard, .. }
            | Step::Add { shard, .. }
            | Step::Remove { shard, .. }
            | Step::TransferLeader { shard, .. } => shard,
        }
    }
}

/// Error computing or applying a [`MovementPlan`].
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    /// The two placements have different shard counts; the shard count is
    /// fixed when the cluster is created, so no plan connects them.
    #[error(
        "placements of {old} and {new} shards cannot be connected by a movement plan: the \
         shard count is fixed when the cluster is created"
    )]
    ShardCountMismatch {
        /// Shards of the first placement.
        old: u32,
        /// Shards of the second placement.
        new: u32,
    },
    /// A step names a shard the placement does not have.
    #[error("the plan changes shard {} but the placement has no such shard", .shard.0)]
    UnknownShard {
        /// The shard.
        shard: ShardId,
    },
    /// A step expects a replica on a node that has none.
    #[error(
        "the plan expects shard {} to have a replica on node {}, but it has none: the plan \
         was made for another placement", .shard.0, .node.0
    )]
    NotAReplica {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
    },
    /// A step adds a replica on a node that already has one.
    #[error(
        "the plan adds a replica of shard {} on node {}, which already has one: the plan was \
         made for another placement", .shard.0, .node.0
    )]
    AlreadyAReplica {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
    },
    /// A step expects a leader it is not, or removes the leader.
    #[error(
        "the plan expects node {} to be (or not to be) the preferred leader of shard {}, but \
         it is not (or it is): the plan was made for another placement", .node.0, .shard.0
    )]
    WrongLeader {
        /// The shard.
        shard: ShardId,
        /// The node.
        node: NodeId,
    },
    /// The plan leaves a placement that is not valid, e.g. with uneven
    /// replica counts.
    #[error("applying the plan gives an invalid placement: {0}")]
    Placement(#[from] PlacementError),
}

/// The steps that turn one placement into another, by ascending shard id;
/// per shard: additions, moves, a leader transfer, then removals.
///
/// Minimal: a shard whose replica set loses `a` nodes and gains `b` gets
/// `max(a, b)` replica steps (no step can change more than one member in and
/// one out), and a leader transfer only when no move could carry the
/// leadership (the old leader stays, or the new leader was a follower).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MovementPlan {
    steps: Vec<Step>,
}

impl MovementPlan {
    /// The plan from `old` to `new`.
    ///
    /// # Errors
    ///
    /// [`PlanError::ShardCountMismatch`] if the shard counts differ.
    pub fn between(old: &Placement, new: &Placement) -> Result<Self, PlanError> {
        if old.shard_count() != new.shard_count() {
            return Err(PlanError::ShardCountMismatch {
                old: old.shard_count(),
                new: new.shard_count(),
            });
        }
        let mut steps = Vec::new();
        for ((shard, before), (_, after)) in old.iter().zip(new.iter()) {
            plan_shard(shard, before, after, &mut steps);
        }
        Ok(MovementPlan { steps })
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Whether the two placements were equal.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Number of replicas created on a node: moves plus additions. Each one
    /// copies a shard's data to a node, which is what a plan costs.
    pub fn replicas_created(&self) -> usize {
        self.steps
            .iter()
            .filter(|step| matches!(step, Step::Move { .. } | Step::Add { .. }))
            .count()
    }

    /// The placement that results from carrying out every step on
    /// `placement`.
    ///
    /// # Errors
    ///
    /// [`PlanError`] if a step does not fit the placement (the plan was made
    /// from another one) or the result is not a valid placement.
    pub fn apply(&self, placement: &Placement) -> Result<Placement, PlanError> {
        let mut shards: Vec<Vec<NodeId>> =
            placement.iter().map(|(_, replicas)| replicas.to_vec()).collect();
        for step in &self.steps {
            let shard = step.shard();
            let replicas = usize::try_from(shard.0.wrapping_sub(FIRST_DATA_SHARD.0))
                .ok()
                .and_then(|index| shards.get_mut(index))
                .ok_or(PlanError::UnknownShard { shard })?;
            apply_step(step, replicas)?;
        }
        Ok(Placement::from_shards(shards)?)
    }
}

/// Appends the steps of one shard, `before` and `after` each leader first.
fn plan_shard(shard: ShardId, before: &[NodeId], after: &[NodeId], steps: &mut Vec<Step>) {
    let mut removed: Vec<NodeId> = before.iter().copied().filter(|n| !after.contains(n)).collect();
    let mut added: Vec<NodeId> = after.iter().copied().filter(|n| !before.contains(n)).collect();
    removed.sort_unstable();
    added.sort_unstable();
    let (old_leader, new_leader) = (before[0], after[0]);

    // Pair the old leader's replica first, with the new leader if it is new,
    // so that the move itself hands the leadership over.
    if let Some(at) = removed.iter().position(|&n| n == old_leader) {
        removed[..=at].rotate_right(1);
        if let Some(at) = added.iter().position(|&n| n == new_leader) {
            added[..=at].rotate_right(1);
        }
    }
    let paired = removed.len().min(added.len());
    let mut leader = old_leader;

    steps.extend(added[paired..].iter().map(|&node| Step::Add { shard, node }));
    for (&from, &to) in removed.iter().zip(&added) {
        if from == leader {
            leader = to;
        }
        steps.push(Step::Move { shard, from, to });
    }
    if leader != new_leader {
        steps.push(Step::TransferLeader { shard, from: leader, to: new_leader });
    }
    steps.extend(removed[paired..].iter().map(|&node| Step::Remove { shard, node }));
}

/// Carries out one step on one shard's replicas (leader first).
fn apply_step(step: &Step, replicas: &mut Vec<NodeId>) -> Result<(), PlanError> {
    let position = |replicas: &[NodeId], shard, node| {
        replicas.iter().position(|&n| n == node).ok_or(PlanError::NotAReplica { shard, node })
    };
    let absent = |replicas: &[NodeId], shard, node| {
        if replicas.contains(&node) {
            Err(PlanError::AlreadyAReplica { shard, node })
        } else {
            Ok(())
        }
    };
    match *step {
        Step::Move { shard, from, to } => {
            let at = position(replicas, shard, from)?;
            absent(replicas, shard, to)?;
            replicas[at] = to;
        }
        Step::Add { shard, node } => {
            absent(replicas, shard, node)?;
            replicas.push(node);
        }
        Step::Remove { shard, node } => {
            let at = position(replicas, shard, node)?;
            if at == 0 {
                return Err(PlanError::WrongLeader { shard, node });
            }
            replicas.remove(at);
        }
        Step::TransferLeader { shard, from, to } => {
            if replicas[0] != from {
                return Err(PlanError::WrongLeader { shard, node: from });
            }
            let at = position(replicas, shard, to)?;
            replicas.swap(0, at);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
