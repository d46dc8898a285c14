//! The safety checkers, one property per file, each citing the rule it
//! checks; [`Checkers`] feeds them every [`Observation`] of a run.
//!
//! | file | property |
//! | --- | --- |
//! | [`election_safety`] | at most one leader per epoch |
//! | [`log_matching`] | same index and epoch ⇒ same entry and same prefix |
//! | [`leader_completeness`] | committed entries are in every later leader's log |
//! | [`state_machine_safety`] | every replica applies the same entry at an index |
//! | [`durability`] | acknowledged writes survive in every later leader's log and in the end state |
//! | [`commit_monotonicity`] | commit and apply cursors never go back; committed entries never change |
//! | [`read_index`] | a read's index covers everything committed before it was asked |
//! | [`wal_recovery`] | a replica that crashed between writes recovers exactly what it synced |
//! | [`linearizability`] | the client history passes `ringkv-lincheck` |

pub mod commit_monotonicity;
pub mod durability;
pub mod election_safety;
pub mod leader_completeness;
pub mod linearizability;
pub mod log_matching;
pub mod read_index;
pub mod state_machine_safety;
pub mod wal_recovery;

use std::hash::Hasher;

use ringkv_consensus::{Epoch, LogIndex, NodeId, Role};

use crate::host::{Host, Observation};
use crate::trace::mix;

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The checker (property) that caught it.
    pub checker: &'static str,
    /// What happened.
    pub what: String,
}

impl Violation {
    /// A violation found by `checker`.
    pub fn new(checker: &'static str, what: impl Into<String>) -> Violation {
        Violation { checker, what: what.into() }
    }
}

/// A hasher with no random state, so that maps iterate the same way in
/// every run (the simulator must be a function of its seed).
#[derive(Debug, Default, Clone, Copy)]
pub struct FixedHasher(u64);

impl Hasher for FixedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = mix(self.0, u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0, n);
    }
}

/// Every checker of a run.
#[derive(Debug, Default)]
pub struct Checkers {
    /// At most one leader per epoch.
    pub election: election_safety::ElectionSafety,
    /// Log matching.
    pub log_matching: log_matching::LogMatching,
    /// Leader completeness.
    pub completeness: leader_completeness::LeaderCompleteness,
    /// State-machine safety.
    pub state_machine: state_machine_safety::StateMachineSafety,
    /// Durability of acknowledged writes.
    pub durability: durability::Durability,
    /// Commit monotonicity.
    pub commit: commit_monotonicity::CommitMonotonicity,
    /// Read indexes.
    pub reads: read_index::ReadIndexSafety,
}

fn tag(checker: &'static str) -> impl Fn(String) -> Violation {
    move |what| Violation { checker, what }
}

impl Checkers {
    /// Feeds one observation of `node`; `host` is the node (for reading a
    /// new leader's log).
    ///
    /// # Errors
    /// The first property the observation breaks.
    pub fn observe<H: Host>(
        &mut self,
        node: NodeId,
        o: &Observation,
        host: Option<&H>,
    ) -> Result<(), Violation> {
        match o {
            Observation::Booted { applied, chain, commit, .. } => {
                self.commit.on_boot(node, *commit, *applied);
                self.reads.on_boot(node);
                self.reads.on_committed(*commit);
                self.state_machine
                    .on_snapshot(node, *applied, *chain)
                    .map_err(tag("state-machine-safety"))
            }
            Observation::Role { role: Role::Leader, epoch, .. } => {
                self.election.on_leader(node, *epoch).map_err(tag("election-safety"))?;
                if let Some(h) = host {
                    self.on_leader(node, *epoch, h)?;
                }
                Ok(())
            }
            Observation::Role { .. } | Observation::Compacted { .. } => Ok(()),
            Observation::Wrote { prev_epoch, entries } => {
                self.log_matching.on_write(node, *prev_epoch, entries).map_err(tag("log-matching"))
            }
            Observation::Committed { at, commit, entries } => {
                self.completeness.on_committed(*at, entries);
                self.reads.on_committed(*commit);
                self.commit.on_committed(node, *commit, entries).map_err(tag("commit-monotonicity"))
            }
            Observation::Applied { index, epoch, digest, chain } => {
                self.commit.on_applied(node, *index).map_err(tag("commit-monotonicity"))?;
                self.state_machine
                    .on_applied(node, *index, *epoch, *digest, *chain)
                    .map_err(tag("state-machine-safety"))
            }
            Observation::Restored { index, chain } => {
                self.commit.on_snapshot(node, *index).map_err(tag("commit-monotonicity"))?;
                self.state_machine
                    .on_snapshot(node, *index, *chain)
                    .map_err(tag("state-machine-safety"))
            }
            Observation::ReadAsked { id } => {
                self.reads.on_asked(node, *id);
                Ok(())
            }
            Observation::ReadConfirmed { id, index } => {
                self.reads.on_confirmed(node, *id, *index).map_err(tag("read-index"))
            }
            Observation::Acked { at, index, epoch, .. } => {
                self.durability.on_acked(node, *at, *index, *epoch).map_err(tag("durability"))
            }
            Observation::Violation { what } => {
                Err(Violation::new("replica-contract", what.clone()))
            }
        }
    }

    fn on_leader<H: Host>(&self, node: NodeId, epoch: Epoch, host: &H) -> Result<(), Violation> {
        let snapshot: LogIndex = host.snapshot_index();
        let epoch_at = |i| host.epoch_at(i);
        self.completeness
            .on_leader(node, epoch, snapshot, epoch_at)
            .map_err(tag("leader-completeness"))?;
        self.durability.on_leader(node, epoch, snapshot, epoch_at).map_err(tag("durability"))
    }
}
