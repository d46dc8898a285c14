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

use std::fmt;
use std::hash::Hasher;

use ringkv_consensus::{Entry, EntryKind, Epoch, LogIndex, NodeId, Role};

use crate::host::{Host, Observation};
use crate::trace::{hash_bytes, mix};

/// What names an entry when the checkers compare two replicas' logs at one
/// index: it differs between the engines.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Identity {
    /// Raft: an index and a term name exactly one entry (Log Matching,
    /// §5.3), so replicas must agree on the epoch at an index (and the
    /// log-matching checker on what an `(index, epoch)` holds).
    #[default]
    Epoch,
    /// Multi-Paxos: a chosen value is re-accepted under every later
    /// leader's ballot (phase 2a re-proposes it), so replicas may hold one
    /// chosen value under different ballots; they must agree on the value
    /// (kind and payload) at a slot.
    Value,
}

impl Identity {
    /// The identity of an entry of `epoch` whose kind and payload have
    /// `digest` ([`entry_digest`]).
    pub fn id(self, epoch: Epoch, digest: u64) -> EntryId {
        match self {
            Identity::Epoch => EntryId::Epoch(epoch),
            Identity::Value => EntryId::Value(digest),
        }
    }
}

/// An entry as the checkers compare it (see [`Identity`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryId {
    /// The epoch it was created in.
    Epoch(Epoch),
    /// A digest of its kind and payload ([`entry_digest`]).
    Value(u64),
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryId::Epoch(e) => write!(f, "epoch {e}"),
            EntryId::Value(d) => write!(f, "value #{d:016x}"),
        }
    }
}

/// A digest of an entry's kind and payload (not its index or epoch).
pub fn entry_digest(e: &Entry) -> u64 {
    let kind = match e.kind {
        EntryKind::Command => 1,
        EntryKind::Noop => 2,
        EntryKind::Membership => 3,
    };
    mix(kind, hash_bytes(&e.payload))
}

/// The name of every checker a failure can come from: the properties
/// above, then the run-level ones (the liveness goal, a message storm, a
/// replica that cannot restart, an assertion inside an engine or the WAL,
/// a simulator defect).
pub const NAMES: [&str; 18] = [
    "election-safety",
    "log-matching",
    "leader-completeness",
    "state-machine-safety",
    "durability",
    "commit-monotonicity",
    "read-index",
    "wal-recovery",
    "linearizability",
    "replica-contract",
    "liveness",
    "message-storm",
    "recovery",
    "assertion",
    "simulator",
    "durability-at-end",
    "placement",
    "move-protocol",
];

/// The checker named `name`, as a `&'static str` (for
/// [`crate::RunOptions::disabled_checkers`]).
pub fn checker_named(name: &str) -> Option<&'static str> {
    NAMES.into_iter().find(|n| *n == name)
}

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
    /// What names an entry.
    pub identity: Identity,
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

impl Checkers {
    /// The checkers for an engine whose entries are named by `identity`.
    pub fn new(identity: Identity) -> Checkers {
        Checkers {
            identity,
            log_matching: log_matching::LogMatching::new(identity),
            ..Checkers::default()
        }
    }

    /// The identity of the entry `index@epoch` in some replica's log, whose
    /// contents the checkers know from its write (see
    /// [`log_matching::LogMatching::digest`]); `None` for a vacant
    /// Multi-Paxos slot or an entry never seen written.
    fn id_at(&self, index: LogIndex, epoch: Epoch) -> Option<EntryId> {
        match self.identity {
            Identity::Epoch => Some(EntryId::Epoch(epoch)),
            Identity::Value => self.log_matching.digest(index, epoch).map(EntryId::Value),
        }
    }

    /// Feeds one observation of `node` to every checker it concerns;
    /// `host` is the node (for reading a new leader's log). Every broken
    /// property is pushed to `out`, so that each checker sees every
    /// observation even when another one already failed.
    pub fn observe<H: Host>(
        &mut self,
        node: NodeId,
        o: &Observation,
        host: Option<&H>,
        out: &mut Vec<Violation>,
    ) {
        let mut note = |checker: &'static str, r: Result<(), String>| {
            if let Err(what) = r {
                out.push(Violation { checker, what });
            }
        };
        match o {
            Observation::Booted { applied, chain, commit, .. } => {
                self.commit.on_boot(node, *commit, *applied);
                self.reads.on_boot(node);
                self.reads.on_committed(*commit);
                note(
                    "state-machine-safety",
                    self.state_machine.on_snapshot(node, *applied, *chain),
                );
            }
            Observation::Role { role: Role::Leader, epoch, .. } => {
                note("election-safety", self.election.on_leader(node, *epoch));
                if let Some(h) = host {
                    let snapshot = h.snapshot_index();
                    let id_at = |i| h.epoch_at(i).and_then(|e| self.id_at(i, e));
                    let r = self.completeness.on_leader(node, *epoch, snapshot, id_at);
                    note("leader-completeness", r);
                    note("durability", self.durability.on_leader(node, *epoch, snapshot, id_at));
                }
            }
            Observation::Role { .. } | Observation::Compacted { .. } => {}
            Observation::Wrote { prev_epoch, entries } => {
                note("log-matching", self.log_matching.on_write(node, *prev_epoch, entries));
            }
            Observation::Committed { at, commit, entries } => {
                let mut ids = Vec::with_capacity(entries.len());
                for &(index, epoch) in entries {
                    match self.id_at(index, epoch) {
                        Some(id) => ids.push((index, id)),
                        None if epoch == Epoch::ZERO => note(
                            "commit-monotonicity",
                            Err(format!(
                                "node {node} committed slot {index}, which it holds vacant"
                            )),
                        ),
                        None => note(
                            "simulator",
                            Err(format!(
                                "node {node} committed {index}@{epoch}, which no replica was seen \
                                 writing"
                            )),
                        ),
                    }
                }
                self.completeness.on_committed(*at, &ids);
                self.reads.on_committed(*commit);
                note("commit-monotonicity", self.commit.on_committed(node, *commit, &ids));
            }
            Observation::Applied { index, epoch, digest, chain } => {
                note("commit-monotonicity", self.commit.on_applied(node, *index));
                let id = self.identity.id(*epoch, *digest);
                let r = self.state_machine.on_applied(node, *index, id, *digest, *chain);
                note("state-machine-safety", r);
            }
            Observation::Restored { index, chain } => {
                note("commit-monotonicity", self.commit.on_snapshot(node, *index));
                note("state-machine-safety", self.state_machine.on_snapshot(node, *index, *chain));
            }
            Observation::ReadAsked { id } => self.reads.on_asked(node, *id),
            Observation::ReadConfirmed { id, index } => {
                note("read-index", self.reads.on_confirmed(node, *id, *index));
            }
            Observation::Acked { at, index, epoch, digest, .. } => {
                let id = self.identity.id(*epoch, *digest);
                note("durability", self.durability.on_acked(node, *at, *index, id));
            }
            Observation::Violation { what } => note("replica-contract", Err(what.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_names_are_unique_and_found() {
        let mut names = NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NAMES.len());
        assert_eq!(checker_named("durability"), Some("durability"));
        assert_eq!(checker_named("Durability"), None);
    }
}
