//! [`SimEngine`]: how the simulator builds a replica of any consensus
//! engine, and the planted bugs an engine can switch on.
//!
//! The simulator is written against [`Replica`] only; this trait adds what
//! the trait cannot say: how to construct (or recover) a replica over a
//! [`ShardLog`] of the simulated WAL, which configuration was in effect at
//! a log index (for snapshot metadata), how to read the engine's own view
//! of its log (for the checkers), what names an entry when replicas are
//! compared ([`Identity`]), and how to turn planted-bug names into engine
//! options. Raft ([`RaftEngine`]) and Multi-Paxos ([`PaxosEngine`])
//! implement it.

use std::fmt;
use std::str::FromStr;

use ringkv_consensus::{Config, Epoch, LogIndex, Membership, Replica};
use ringkv_paxos::{CONFIG_DELAY_SLOTS, Paxos, PaxosOptions};
use ringkv_raft::{Raft, RaftOptions};
use ringkv_storage::{ShardLog, SimDisk};

use crate::checkers::Identity;

/// One deliberately broken safety rule. Engine-neutral names: each engine
/// maps the ones it supports ([`SimEngine::BUGS`]) to its own switches.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// Raft: grant votes without the up-to-date log check (§5.4.1).
    VoteWithoutLogCheck,
    /// Raft: commit an entry of a previous term by counting replicas (§5.4.2).
    CommitPreviousTermByCounting,
    /// Both engines: acknowledge an append (Raft) or a promise or
    /// acceptance (Multi-Paxos) before it is durable.
    AckBeforePersist,
    /// Raft: hand out entries to apply before they are committed.
    ApplyBeforeCommit,
    /// Raft: serve a read on the leader without confirming leadership
    /// (ReadIndex, thesis §6.4).
    ReadWithoutQuorum,
    /// Multi-Paxos: acceptors take accepts of any ballot, even below the
    /// one they promised (breaks phase 2b).
    AcceptWithoutPromiseCheck,
    /// Multi-Paxos: a new leader adopts the lowest-ballot value reported
    /// for a slot instead of the highest (breaks phase 2a's value rule).
    AdoptLowestBallot,
}

impl PlantedBug {
    /// Every planted bug, in a fixed order.
    pub const ALL: [PlantedBug; 7] = [
        PlantedBug::VoteWithoutLogCheck,
        PlantedBug::CommitPreviousTermByCounting,
        PlantedBug::AckBeforePersist,
        PlantedBug::ApplyBeforeCommit,
        PlantedBug::ReadWithoutQuorum,
        PlantedBug::AcceptWithoutPromiseCheck,
        PlantedBug::AdoptLowestBallot,
    ];

    /// The name used on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            PlantedBug::VoteWithoutLogCheck => "vote-without-log-check",
            PlantedBug::CommitPreviousTermByCounting => "commit-previous-term-by-counting",
            PlantedBug::AckBeforePersist => "ack-before-persist",
            PlantedBug::ApplyBeforeCommit => "apply-before-commit",
            PlantedBug::ReadWithoutQuorum => "read-without-quorum",
            PlantedBug::AcceptWithoutPromiseCheck => "accept-without-promise-check",
            PlantedBug::AdoptLowestBallot => "adopt-lowest-ballot",
        }
    }

    /// Every name, comma-separated (for error messages).
    pub fn names() -> String {
        PlantedBug::ALL.map(PlantedBug::name).join(", ")
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
    /// [`PaxosEngine`].
    Paxos,
}

impl EngineKind {
    /// Both engines.
    pub const ALL: [EngineKind; 2] = [EngineKind::Raft, EngineKind::Paxos];

    /// The name used on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            EngineKind::Raft => RaftEngine::NAME,
            EngineKind::Paxos => PaxosEngine::NAME,
        }
    }

    /// The planted bugs this engine has switches for.
    pub const fn bugs(self) -> &'static [PlantedBug] {
        match self {
            EngineKind::Raft => RaftEngine::BUGS,
            EngineKind::Paxos => PaxosEngine::BUGS,
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<EngineKind, EngineError> {
        EngineKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| EngineError::UnknownEngine { name: s.to_owned() })
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
    /// No planted bug has that name.
    #[error("unknown planted bug {name:?}: choose one of {}", PlantedBug::names())]
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
    #[error(
        "the {engine} engine has no planted bug {bug}: it has {}",
        supported.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
    )]
    BugNotSupported {
        /// The engine's name.
        engine: &'static str,
        /// The bug.
        bug: PlantedBug,
        /// The bugs the engine does have.
        supported: &'static [PlantedBug],
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

/// How replicas are built, besides their [`Config`]: the same for every
/// replica of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Planted bugs to switch on.
    pub bugs: Vec<PlantedBug>,
    /// Multi-Paxos' α, the configuration delay in slots (part of the
    /// protocol: one value for the shard's whole life); 0 means the
    /// engine's default. Raft ignores it.
    pub config_delay_slots: u64,
}

/// A consensus engine the simulator can run.
pub trait SimEngine: 'static {
    /// The engine's name, for reports and `--engine`.
    const NAME: &'static str;

    /// What names an entry when the checkers compare replicas.
    const IDENTITY: Identity;

    /// The planted bugs this engine has switches for.
    const BUGS: &'static [PlantedBug];

    /// A replica of one shard over the simulated WAL.
    type Replica: Replica<Storage = ShardLog<SimDisk>>;

    /// Checks that every bug in `bugs` can be planted in this build.
    ///
    /// # Errors
    /// A bug the engine has no switch for, or switches not compiled in.
    fn check_bugs(bugs: &[PlantedBug]) -> Result<(), EngineError> {
        if let Some(&bug) = bugs.iter().find(|b| !Self::BUGS.contains(b)) {
            return Err(EngineError::BugNotSupported {
                engine: Self::NAME,
                bug,
                supported: Self::BUGS,
            });
        }
        if bugs.is_empty() || cfg!(feature = "planted-bugs") {
            Ok(())
        } else {
            Err(EngineError::BugsNotCompiled)
        }
    }

    /// Builds (or recovers, from what `log` holds) a replica. Committed
    /// entries up to `applied` are already in the state machine.
    ///
    /// # Errors
    /// Invalid configuration, unreadable storage, a log that contradicts
    /// itself, or a bug that cannot be planted.
    fn create(
        config: Config,
        applied: LogIndex,
        log: ShardLog<SimDisk>,
        options: &EngineOptions,
    ) -> Result<Self::Replica, EngineError>;

    /// The configuration in effect at `index`, to record with a snapshot
    /// taken there.
    fn membership_at(replica: &Self::Replica, index: LogIndex) -> Option<Membership>;

    /// The epoch of the entry at `index` in the replica's log, including
    /// entries not yet persisted; `None` if compacted or past the end. From
    /// memory: it never reads the disk (so never fails on a read error).
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

    const IDENTITY: Identity = Identity::Epoch;

    const BUGS: &'static [PlantedBug] = &[
        PlantedBug::VoteWithoutLogCheck,
        PlantedBug::CommitPreviousTermByCounting,
        PlantedBug::AckBeforePersist,
        PlantedBug::ApplyBeforeCommit,
        PlantedBug::ReadWithoutQuorum,
    ];

    type Replica = Raft<ShardLog<SimDisk>>;

    fn create(
        config: Config,
        applied: LogIndex,
        log: ShardLog<SimDisk>,
        options: &EngineOptions,
    ) -> Result<Self::Replica, EngineError> {
        Self::check_bugs(&options.bugs)?;
        let mut raft = RaftOptions::new(config);
        raft.applied = applied;
        #[cfg(feature = "planted-bugs")]
        for bug in &options.bugs {
            let b = &mut raft.planted_bugs;
            match bug {
                PlantedBug::VoteWithoutLogCheck => b.vote_without_log_check = true,
                PlantedBug::CommitPreviousTermByCounting => {
                    b.commit_previous_term_by_counting = true;
                }
                PlantedBug::AckBeforePersist => b.ack_before_persist = true,
                PlantedBug::ApplyBeforeCommit => b.apply_before_commit = true,
                PlantedBug::ReadWithoutQuorum => b.read_without_quorum = true,
                PlantedBug::AcceptWithoutPromiseCheck | PlantedBug::AdoptLowestBallot => {
                    unreachable!("check_bugs refuses {bug} for raft")
                }
            }
        }
        Raft::new(raft, log)
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

/// The Multi-Paxos engine ([`ringkv_paxos::Paxos`]).
#[derive(Copy, Clone, Debug, Default)]
pub struct PaxosEngine;

impl SimEngine for PaxosEngine {
    const NAME: &'static str = "paxos";

    const IDENTITY: Identity = Identity::Value;

    const BUGS: &'static [PlantedBug] = &[
        PlantedBug::AcceptWithoutPromiseCheck,
        PlantedBug::AdoptLowestBallot,
        PlantedBug::AckBeforePersist,
    ];

    type Replica = Paxos<ShardLog<SimDisk>>;

    fn create(
        config: Config,
        applied: LogIndex,
        log: ShardLog<SimDisk>,
        options: &EngineOptions,
    ) -> Result<Self::Replica, EngineError> {
        Self::check_bugs(&options.bugs)?;
        let mut paxos = PaxosOptions::new(config);
        paxos.applied = applied;
        paxos.config_delay_slots = match options.config_delay_slots {
            0 => CONFIG_DELAY_SLOTS,
            n => n,
        };
        #[cfg(feature = "planted-bugs")]
        for bug in &options.bugs {
            let b = &mut paxos.planted_bugs;
            match bug {
                PlantedBug::AcceptWithoutPromiseCheck => b.accept_without_promise_check = true,
                PlantedBug::AdoptLowestBallot => b.adopt_lowest_ballot = true,
                PlantedBug::AckBeforePersist => b.ack_before_persist = true,
                PlantedBug::VoteWithoutLogCheck
                | PlantedBug::CommitPreviousTermByCounting
                | PlantedBug::ApplyBeforeCommit
                | PlantedBug::ReadWithoutQuorum => {
                    unreachable!("check_bugs refuses {bug} for paxos")
                }
            }
        }
        Paxos::new(paxos, log)
            .map_err(|e| EngineError::Create { engine: Self::NAME, reason: e.to_string() })
    }

    fn membership_at(replica: &Self::Replica, index: LogIndex) -> Option<Membership> {
        replica.membership_at(index)
    }

    fn epoch_at(replica: &Self::Replica, index: LogIndex) -> Option<Epoch> {
        replica.epoch_at(index).ok()
    }

    fn check_invariants(replica: &Self::Replica) {
        replica.check_invariants();
    }

    fn describe(message: &ringkv_paxos::Message) -> String {
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
        for k in EngineKind::ALL {
            assert_eq!(k.to_string().parse::<EngineKind>(), Ok(k));
        }
    }

    #[test]
    fn every_bug_belongs_to_an_engine_and_others_are_refused() {
        for bug in PlantedBug::ALL {
            assert!(EngineKind::ALL.iter().any(|k| k.bugs().contains(&bug)), "{bug}");
        }
        let refused = PaxosEngine::check_bugs(&[PlantedBug::VoteWithoutLogCheck]);
        assert!(matches!(refused, Err(EngineError::BugNotSupported { engine: "paxos", .. })));
        let refused = RaftEngine::check_bugs(&[PlantedBug::AdoptLowestBallot]);
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains("raft engine has no planted bug adopt-lowest-ballot"),
            "{message}"
        );
        assert_eq!(RaftEngine::check_bugs(&[]), Ok(()));
    }
}
