//! Cluster configurations, membership changes and quorum arithmetic.
//!
//! A configuration is either *simple* (one voter set) or *joint* (the
//! incoming `voters` and the `outgoing` voters of the previous configuration,
//! both of whose majorities are needed for any decision; Raft thesis §4.3).
//! Learners receive the log but never vote.
//!
//! ```text
//!   simple C_old ──enter(change)──▶ joint C_old,new ──leave_joint()──▶ simple C_new
//!          └──────enter(change that moves ≤ 1 voter)──────▶ simple C_new
//! ```
//!
//! A change that adds or removes at most one voter may skip the joint phase
//! (thesis §4.1): any majority of the old and the new voter set intersect.
//! Engines must still commit an entry of the current term before proposing
//! such a change (the single-server-change fix posted by Ongaro in 2015).

use std::collections::BTreeSet;

use crate::types::{LogIndex, NodeId};

/// One cluster configuration.
///
/// Invariants (checked by [`Membership::validate`]): `voters` is non-empty;
/// `voters ∩ learners = ∅`; no id is `NodeId(0)`. A node may be both an
/// outgoing voter and a learner: that is a voter being demoted through a
/// joint configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// Voters of the (incoming) configuration.
    pub voters: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration; empty unless joint.
    pub outgoing: BTreeSet<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: BTreeSet<NodeId>,
}

/// One step of a [`MembershipChange`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChangeOp {
    /// Make the node a voter (adding it, or promoting a learner).
    AddVoter(NodeId),
    /// Make the node a learner (adding it, or demoting a voter).
    AddLearner(NodeId),
    /// Remove the node, whatever its role.
    Remove(NodeId),
}

impl ChangeOp {
    /// The node the operation is about.
    pub const fn node(self) -> NodeId {
        match self {
            ChangeOp::AddVoter(n) | ChangeOp::AddLearner(n) | ChangeOp::Remove(n) => n,
        }
    }
}

/// A requested change of configuration: applied atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MembershipChange {
    /// The operations, each naming a distinct node.
    pub ops: Vec<ChangeOp>,
}

/// Why a membership change or configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// The change has no operations.
    #[error("membership change is empty: name at least one node to add, promote, demote or remove")]
    Empty,
    /// `NodeId(0)` is reserved.
    #[error("node id 0 is reserved and cannot be a member")]
    InvalidNode,
    /// The same node appears twice in one change.
    #[error("node {node} appears more than once in one membership change: combine the operations")]
    DuplicateNode {
        /// The repeated node.
        node: NodeId,
    },
    /// A new change was requested while a joint configuration is in place.
    #[error(
        "a joint configuration is still in effect: wait for it to be left before changing membership again"
    )]
    InJoint,
    /// Leaving a joint configuration was requested but the configuration is simple.
    #[error("the configuration is not joint, so there is nothing to leave")]
    NotJoint,
    /// Removing or adding would change nothing.
    #[error("node {node} is already {role}: the change would do nothing")]
    NoOp {
        /// The node.
        node: NodeId,
        /// Its current role ("a voter", "a learner", "not a member").
        role: &'static str,
    },
    /// The change would leave no voter.
    #[error("the change would leave no voters: a shard needs at least one")]
    NoVoters,
    /// A configuration violates an invariant (corrupt input).
    #[error("invalid configuration: node {node} is both a voter and a learner")]
    VoterAndLearner {
        /// The node in both sets.
        node: NodeId,
    },
}

/// Outcome of counting votes (or promises) in a configuration.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum granted.
    Won,
    /// A quorum can no longer be reached.
    Lost,
    /// Neither yet.
    Pending,
}

impl Membership {
    /// A simple configuration of the given voters.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership { voters: voters.into_iter().collect(), ..Membership::default() }
    }

    /// Whether this is a joint configuration.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// Whether `id` is a learner and votes in neither half.
    pub fn is_learner_only(&self, id: NodeId) -> bool {
        self.learners.contains(&id) && !self.is_voter(id)
    }

    /// Whether `id` is a member in any role.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member (voters of both halves and learners), ascending, once each.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.voters.iter().chain(&self.outgoing).chain(&self.learners).copied().collect()
    }

    /// Checks the invariants of a configuration (for decoded or restored input).
    ///
    /// # Errors
    /// The first invariant found broken.
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if self.members().contains(&NodeId(0)) {
            return Err(MembershipError::InvalidNode);
        }
        if let Some(&node) = self.voters.intersection(&self.learners).next() {
            return Err(MembershipError::VoterAndLearner { node });
        }
        Ok(())
    }

    /// The configuration that `change` leads to from this one: simple when
    /// at most one voter is added or removed, joint otherwise.
    ///
    /// # Errors
    /// The change is empty, repeats a node, changes nothing for some node,
    /// would leave no voters, or this configuration is joint.
    pub fn enter(&self, change: &MembershipChange) -> Result<Membership, MembershipError> {
        if self.is_joint() {
            return Err(MembershipError::InJoint);
        }
        if change.ops.is_empty() {
            return Err(MembershipError::Empty);
        }
        let mut seen = BTreeSet::new();
        let mut voters = self.voters.clone();
        let mut learners = self.learners.clone();
        for &op in &change.ops {
            let node = op.node();
            if !node.is_valid() {
                return Err(MembershipError::InvalidNode);
            }
            if !seen.insert(node) {
                return Err(MembershipError::DuplicateNode { node });
            }
            match op {
                ChangeOp::AddVoter(n) => {
                    if !voters.insert(n) {
                        return Err(MembershipError::NoOp { node: n, role: "a voter" });
                    }
                    learners.remove(&n);
                }
                ChangeOp::AddLearner(n) => {
                    if !learners.insert(n) {
                        return Err(MembershipError::NoOp { node: n, role: "a learner" });
                    }
                    voters.remove(&n);
                }
                ChangeOp::Remove(n) => {
                    if !voters.remove(&n) && !learners.remove(&n) {
                        return Err(MembershipError::NoOp { node: n, role: "not a member" });
                    }
                }
            }
        }
        if voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        let voters_changed = voters.symmetric_difference(&self.voters).count();
        let outgoing = if voters_changed <= 1 { BTreeSet::new() } else { self.voters.clone() };
        let next = Membership { voters, outgoing, learners };
        debug_assert_eq!(next.validate(), Ok(()));
        Ok(next)
    }

    /// The simple configuration that ends this joint one.
    ///
    /// # Errors
    /// [`MembershipError::NotJoint`] when the configuration is simple.
    pub fn leave_joint(&self) -> Result<Membership, MembershipError> {
        if !self.is_joint() {
            return Err(MembershipError::NotJoint);
        }
        Ok(Membership {
            voters: self.voters.clone(),
            outgoing: BTreeSet::new(),
            learners: self.learners.clone(),
        })
    }

    /// The highest index replicated on a quorum, given each voter's highest
    /// matched index. In a joint configuration both halves must agree.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> LogIndex) -> LogIndex {
        let incoming = majority_index(&self.voters, &matched);
        if self.is_joint() {
            incoming.min(majority_index(&self.outgoing, &matched))
        } else {
            incoming
        }
    }

    /// Counts votes: `granted(id)` is `Some(true)` for a grant, `Some(false)`
    /// for a rejection and `None` when the voter has not answered.
    pub fn vote_result(&self, granted: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let incoming = majority_vote(&self.voters, &granted);
        if !self.is_joint() {
            return incoming;
        }
        match (incoming, majority_vote(&self.outgoing, &granted)) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether the given set of nodes contains a quorum (both halves if joint).
    pub fn is_quorum(&self, nodes: &BTreeSet<NodeId>) -> bool {
        self.vote_result(|id| Some(nodes.contains(&id))) == VoteResult::Won
    }
}

/// Size of a majority of `n` voters.
pub const fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The largest index that a majority of `voters` has matched. An empty set
/// imposes no constraint (`u64::MAX`), as the empty half of a joint config.
fn majority_index(voters: &BTreeSet<NodeId>, matched: &impl Fn(NodeId) -> LogIndex) -> LogIndex {
    if voters.is_empty() {
        return LogIndex(u64::MAX);
    }
    let mut indexes: Vec<LogIndex> = voters.iter().map(|&id| matched(id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[majority(indexes.len()) - 1]
}

fn majority_vote(
    voters: &BTreeSet<NodeId>,
    granted: &impl Fn(NodeId) -> Option<bool>,
) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut yes, mut missing) = (0, 0);
    for &id in voters {
        match granted(id) {
            Some(true) => yes += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let need = majority(voters.len());
    if yes >= need {
        VoteResult::Won
    } else if yes + missing >= need {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(v: &[u64]) -> BTreeSet<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn committed_index_is_the_majority_position() {
        let m = Membership::new([NodeId(1), NodeId(2), NodeId(3)]);
        let matched = |id: NodeId| LogIndex([0, 5, 7, 9][id.0 as usize]);
        assert_eq!(m.committed_index(matched), LogIndex(7));
    }

    #[test]
    fn joint_commit_needs_both_halves() {
        let m =
            Membership { voters: ids(&[4, 5, 6]), outgoing: ids(&[1, 2, 3]), learners: ids(&[]) };
        // Old half has matched 10, new half only 2.
        let matched = |id: NodeId| if id.0 <= 3 { LogIndex(10) } else { LogIndex(2) };
        assert_eq!(m.committed_index(matched), LogIndex(2));
        let granted = |id: NodeId| Some(id.0 <= 3);
        assert_eq!(m.vote_result(granted), VoteResult::Lost);
    }

    #[test]
    fn single_voter_change_is_simple_and_two_are_joint() {
        let m = Membership::new(ids(&[1, 2, 3]));
        let one = m.enter(&MembershipChange { ops: vec![ChangeOp::AddVoter(NodeId(4))] }).unwrap();
        assert!(!one.is_joint());
        let two = m
            .enter(&MembershipChange {
                ops: vec![ChangeOp::AddVoter(NodeId(4)), ChangeOp::Remove(NodeId(1))],
            })
            .unwrap();
        assert!(two.is_joint());
        assert_eq!(two.outgoing, ids(&[1, 2, 3]));
        assert_eq!(two.voters, ids(&[2, 3, 4]));
        assert_eq!(two.leave_joint().unwrap(), Membership::new(ids(&[2, 3, 4])));
        assert_eq!(
            two.enter(&MembershipChange { ops: vec![ChangeOp::Remove(NodeId(2))] }),
            Err(MembershipError::InJoint)
        );
    }

    #[test]
    fn demotion_through_joint_keeps_the_outgoing_vote() {
        let m = Membership::new(ids(&[1, 2, 3]));
        let change = MembershipChange {
            ops: vec![
                ChangeOp::AddLearner(NodeId(1)),
                ChangeOp::AddLearner(NodeId(2)),
                ChangeOp::AddVoter(NodeId(4)),
            ],
        };
        let joint = m.enter(&change).unwrap();
        assert!(joint.is_voter(NodeId(1)));
        assert!(!joint.is_learner_only(NodeId(1)));
        let done = joint.leave_joint().unwrap();
        assert!(done.is_learner_only(NodeId(1)));
        assert_eq!(done.voters, ids(&[3, 4]));
    }

    #[test]
    fn bad_changes_are_refused() {
        let m = Membership::new(ids(&[1]));
        let e = |ops: Vec<ChangeOp>| m.enter(&MembershipChange { ops }).unwrap_err();
        assert_eq!(e(vec![]), MembershipError::Empty);
        assert_eq!(e(vec![ChangeOp::Remove(NodeId(1))]), MembershipError::NoVoters);
        assert_eq!(
            e(vec![ChangeOp::AddVoter(NodeId(1))]),
            MembershipError::NoOp { node: NodeId(1), role: "a voter" }
        );
        assert_eq!(
            e(vec![ChangeOp::Remove(NodeId(9))]),
            MembershipError::NoOp { node: NodeId(9), role: "not a member" }
        );
        assert_eq!(e(vec![ChangeOp::AddVoter(NodeId(0))]), MembershipError::InvalidNode);
        assert_eq!(
            e(vec![ChangeOp::AddVoter(NodeId(2)), ChangeOp::Remove(NodeId(2))]),
            MembershipError::DuplicateNode { node: NodeId(2) }
        );
    }

    proptest! {
        /// The committed index is matched by a majority and is the largest such.
        #[test]
        fn committed_index_is_largest_with_majority(matched in prop::collection::vec(0u64..20, 1..8)) {
            let m = Membership::new((1..=matched.len() as u64).map(NodeId));
            let get = |id: NodeId| LogIndex(matched[id.0 as usize - 1]);
            let c = m.committed_index(get).0;
            let at_least = |x: u64| matched.iter().filter(|&&v| v >= x).count();
            prop_assert!(at_least(c) >= majority(matched.len()));
            prop_assert!(at_least(c + 1) < majority(matched.len()));
        }

        /// Any two quorums of a configuration intersect; across a single-voter
        /// change, a quorum of the old and one of the new config intersect.
        #[test]
        fn quorums_intersect(n in 1u64..7, a in any::<u64>(), b in any::<u64>(), add in any::<bool>()) {
            let old = Membership::new((1..=n).map(NodeId));
            let op = if add || n == 1 { ChangeOp::AddVoter(NodeId(n + 1)) } else { ChangeOp::Remove(NodeId(n)) };
            let new = old.enter(&MembershipChange { ops: vec![op] }).unwrap();
            let all: Vec<NodeId> = old.members().union(&new.members()).copied().collect();
            let pick = |mask: u64| -> BTreeSet<NodeId> {
                all.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, &id)| id).collect()
            };
            let (qa, qb) = (pick(a), pick(b));
            if old.is_quorum(&qa) && new.is_quorum(&qb) {
                prop_assert!(qa.intersection(&qb).next().is_some());
            }
            if old.is_quorum(&qa) && old.is_quorum(&qb) {
                prop_assert!(qa.intersection(&qb).next().is_some());
            }
        }

        /// A joint configuration's quorums intersect those of both its halves.
        #[test]
        fn joint_quorums_intersect_both_halves(old_n in 1u64..6, new_lo in 1u64..6, new_n in 1u64..6, a in any::<u64>(), b in any::<u64>()) {
            let old = Membership::new((1..=old_n).map(NodeId));
            let new = Membership::new((new_lo..new_lo + new_n).map(NodeId));
            let joint = Membership { voters: new.voters.clone(), outgoing: old.voters.clone(), learners: BTreeSet::new() };
            let all: Vec<NodeId> = joint.members().into_iter().collect();
            let pick = |mask: u64| -> BTreeSet<NodeId> {
                all.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, &id)| id).collect()
            };
            let (qa, qb) = (pick(a), pick(b));
            if joint.is_quorum(&qa) {
                if old.is_quorum(&qb) { prop_assert!(qa.intersection(&qb).next().is_some()); }
                if new.is_quorum(&qb) { prop_assert!(qa.intersection(&qb).next().is_some()); }
            }
        }
    }
}
