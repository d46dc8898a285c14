//! [`SimEngine`]: how the simulator builds a replica of any consensus
//! engine, and the planted bugs an engine can switch on.
//!
//! The simulator is written against [`Replica`] only; this trait adds what
//! the trait cannot say: how to construct (or recover) a replica over a
//! [`ShardLog`] of the simulated WAL, which configuration was in effect at
//! a log index (for snapshot metadata), how to read the engine's own view
//! of its log (for the checkers), and how to turn planted-bug names into
//! engine options. Raft implements it ([`RaftEngine`]); Multi-Paxos will.

use std::fmt;
use std::str::FromStr;

use ringkv_consensus::{Config, Epoch, LogIndex, Membership, Replica};
use ringkv_raft::{Raft, RaftOptions};
use ringkv_storage::{ShardLog, SimDisk};

/// One deliberately broken safety rule. Engine-neutral names: each engine
/// maps the ones it supports to its own switches.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// Grant votes without the up-to-date log check (Raft §5.4.1).
    VoteWithoutLogCheck,
    /// Commit an entry of a previous term by counting replicas (Raft §5.4.2).
    CommitPreviousTermByCounting,
    /// Acknowledge an append before it is durable.
    AckBeforePersist,
    /// Hand out entries to apply before they are committed.
    ApplyBeforeCommit,
    /// Serve a read on the leader without confirming leadership (ReadIndex).
    ReadWithoutQuorum,
}

impl PlantedBug {
    /// Every planted bug, in a fixed order.
    pub const ALL: [PlantedBug; 5] = [
        PlantedBug::VoteWithoutLogCheck,
        PlantedBug::CommitPreviousTermByCounting,
        PlantedBug::AckBeforePersist,
        PlantedBug::ApplyBeforeCommit,
        PlantedBug::ReadWithoutQuorum,
    ];

    /// The name used on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            PlantedBug::VoteWithoutLogCheck => "vote-without-log-check",
            PlantedBug::CommitPreviousTermByCounting => "commit-previous-term-by-counting",
            PlantedBug::AckBeforePersist => "ack-before-persist",
            PlantedBug::ApplyBeforeCommit => "apply-before-commit",
            PlantedBug::ReadWithoutQuorum => "read-without-quorum",
        }
    }
}

impl fmt::Display for PlantedBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PlantedBug {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<PlantedBug, EngineError> {
        PlantedBug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| EngineError::UnknownBug { name: s.to_owned() })
    }
}

/// Which engine to simulate, as chosen on the command line.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// [`RaftEngine`].
    Raft,
    /// Multi-Paxos (not yet available).
    Paxos,
}

impl FromStr for EngineKind {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<EngineKind, EngineError> {
        match s {
            "raft" => Ok(EngineKind::Raft),
            "paxos" => Ok(EngineKind::Paxos),
            _ => Err(EngineError::UnknownEngine { name: s.to_owned() }),
        }
    }
}

/// Why an engine or a planted bug could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No engine has that name.
    #[error("unknown engine {name:?}: choose raft or paxos")]
    UnknownEngine {
        /// The name given.
        name: String,
    },
    /// The engine exists in the design but is not built yet.
    #[error("the {engine} engine is not yet available in this build: use --engine raft")]
    NotYetAvailable {
        /// The engine's name.
        engine: &'static str,
    },
    /// No planted bug has that name.
    #[error(
        "unknown planted bug {name:?}: choose one of vote-without-log-check, \
         commit-previous-term-by-counting, ack-before-persist, apply-before-commit, \
         read-without-quorum"
    )]
    UnknownBug {
        /// The name given.
        name: String,
    },
    /// Planted bugs were asked for but are not compiled in.
    #[error(
        "planted bugs are not compiled into this build: rebuild with `--features planted-bugs`"
    )]
    BugsNotCompiled,
    /// The engine has no switch for this bug.
    #[error("the {engine} engine has no planted bug {bug}")]
    BugNotSupported {
        /// The engine's name.
        engine: &'static str,
        /// The bug.
        bug: PlantedBug,
    },
    /// The engine refused to construct or recover a replica.
    #[error("the {engine} engine could not start a replica: {reason}")]
    Create {
        /// The engine's name.
        engine: &'static str,
        /// The engine's own error, rendered.
        reason: String,
    },
}

/// A consensus engine the simulator can run.
pub trait SimEngine: 'static {
    /// The engine's name, for reports and `--engine`.
    const NAME: &'static str;

    /// A replica of one shard over the simulated WAL.
    type Replica: Replica<Storage = ShardLog<SimDisk>>;

    /// Checks that every bug in `bugs` can be planted in this build.
    ///
    /// # Errors
    /// A bug the engine has no switch for, or switches not compiled in.
    fn check_bugs(bugs: &[PlantedBug]) -> Result<(), EngineError>;

    /// Builds (or recovers, from what `log` holds) a replica. Committed
    /// entries up to `applied` are already in the state machine.
    ///
    /// # Errors
    /// Invalid configuration, unreadable storage, or a log that
    /// contradicts itself.
    fn create(
        config: Config,
        applied: LogIndex,
        log: ShardLog<SimDisk>,
        bugs: &[PlantedBug],
    ) -> Result<Self::Replica, EngineError>;

    /// The configuration in effect at `index`, to record with a snapshot
    /// taken there.
    fn membership_at(replica: &Self::Replica, index: LogIndex) -> Option<Membership>;

    /// The epoch of the entry at `index` in the replica's log, including
    /// entries not yet persisted; `None` if compacted or past the end.
    fn epoch_at(replica: &Self::Replica, index: LogIndex) -> Option<Epoch>;

    /// Asserts the engine's internal invariants.
    ///
    /// # Panics
    /// If one is broken.
    fn check_invariants(replica: &Self::Replica);

    /// A one-line rendering of a peer message, for traces.
    fn describe(message: &<Self::Replica as Replica>::Message) -> String;
}

/// The Raft engine ([`ringkv_raft::Raft`]).
#[derive(Copy, Clone, Debug, Default)]
pub struct RaftEngine;

impl SimEngine for RaftEngine {
    const NAME: &'static str = "raft";

    type Replica = Raft<ShardLog<SimDisk>>;

    fn check_bugs(bugs: &[PlantedBug]) -> Result<(), EngineError> {
        if bugs.is_empty() || cfg!(feature = "planted-bugs") {
            Ok(())
        } else {
            Err(EngineError::BugsNotCompiled)
        }
    }

    fn create(
        config: Config,
        applied: LogIndex,
        log: ShardLog<SimDisk>,
        bugs: &[PlantedBug],
    ) -> Result<Self::Replica, EngineError> {
        Self::check_bugs(bugs)?;
        let mut options = RaftOptions::new(config);
        options.applied = applied;
        #[cfg(feature = "planted-bugs")]
        for bug in bugs {
            let b = &mut options.planted_bugs;
            match bug {
                PlantedBug::VoteWithoutLogCheck => b.vote_without_log_check = true,
                PlantedBug::CommitPreviousTermByCounting => {
                    b.commit_previous_term_by_counting = true;
                }
                PlantedBug::AckBeforePersist => b.ack_before_persist = true,
                PlantedBug::ApplyBeforeCommit => b.apply_before_commit = true,
                PlantedBug::ReadWithoutQuorum => b.read_without_quorum = true,
            }
        }
        Raft::new(options, log)
            .map_err(|e| EngineError::Create { engine: Self::NAME, reason: e.to_string() })
    }

    fn membership_at(replica: &Self::Replica, index: LogIndex) -> Option<Membership> {
        replica.membership_at(index)
    }

    fn epoch_at(replica: &Self::Replica, index: LogIndex) -> Option<Epoch> {
        replica.term_at(index).ok()
    }

    fn check_invariants(replica: &Self::Replica) {
        replica.check_invariants();
    }

    fn describe(message: &ringkv_raft::Message) -> String {
        message.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_names_round_trip() {
        for bug in PlantedBug::ALL {
            assert_eq!(bug.name().parse::<PlantedBug>(), Ok(bug));
        }
        assert!(matches!("nope".parse::<PlantedBug>(), Err(EngineError::UnknownBug { .. })));
    }

    #[test]
    fn engine_names() {
        assert_eq!("raft".parse::<EngineKind>(), Ok(EngineKind::Raft));
        assert_eq!("paxos".parse::<EngineKind>(), Ok(EngineKind::Paxos));
        assert!("zab".parse::<EngineKind>().is_err());
    }
}
