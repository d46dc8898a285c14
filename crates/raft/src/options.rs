//! Construction options of a Raft replica and the errors of construction.

use ringkv_consensus::{Config, ConfigError, LogError, LogIndex, ReadMode};

/// Everything needed to construct a [`crate::Raft`] besides its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftOptions {
    /// The engine-agnostic configuration.
    pub config: Config,
    /// Highest index the caller's state machine has already applied (when it
    /// keeps its own durable state); committed entries are handed out from
    /// the next one. `LogIndex::ZERO` means "from the storage's snapshot".
    pub applied: LogIndex,
    /// Deliberate safety bugs for testing the checkers (all off by default).
    #[cfg(feature = "planted-bugs")]
    pub planted_bugs: PlantedBugs,
}

impl RaftOptions {
    /// Options with `config` and nothing applied beyond the snapshot.
    pub fn new(config: Config) -> RaftOptions {
        RaftOptions {
            config,
            applied: LogIndex::ZERO,
            #[cfg(feature = "planted-bugs")]
            planted_bugs: PlantedBugs::default(),
        }
    }

    /// Checks the configuration, including Raft's own rules on top of
    /// [`Config::validate`].
    ///
    /// # Errors
    /// The first invalid field, named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.config.validate()?;
        if matches!(self.config.read_mode, ReadMode::Lease { .. }) && !self.config.check_quorum {
            // Followers honour a leader's lease only by ignoring votes while
            // they hear from it, which is the check-quorum rule (thesis §6.4.1).
            return Err(ConfigError {
                field: "read_mode",
                why: "lease reads need check_quorum, which makes followers honour the lease",
            });
        }
        Ok(())
    }
}

/// Switches that each break exactly one Raft safety rule, so that the
/// simulator's checkers can be shown to catch it. Compiled only with the
/// `planted-bugs` feature; all off by default.
#[cfg(feature = "planted-bugs")]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Grant votes without the up-to-date-log check (breaks §5.4.1, so
    /// leader completeness).
    pub vote_without_log_check: bool,
    /// Commit an entry of a previous term by counting replicas (breaks
    /// §5.4.2, the Figure 8 scenario).
    pub commit_previous_term_by_counting: bool,
    /// Acknowledge an append before it is durable (the ack goes in
    /// `Ready::messages` instead of `Ready::after_persist`).
    pub ack_before_persist: bool,
    /// Hand out entries for applying as soon as they are appended, before
    /// they are committed.
    pub apply_before_commit: bool,
    /// Serve a read at once with the commit index, without confirming
    /// leadership (breaks §6.4 linearizable reads).
    pub read_without_quorum: bool,
}

/// Why a replica could not be constructed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaftError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading the log storage failed.
    #[error("reading the log storage failed while recovering: {0}")]
    Log(#[from] LogError),
    /// A membership entry in the log does not decode.
    #[error(
        "the membership entry at log index {index} is corrupt; restore this replica from a snapshot"
    )]
    CorruptMembership {
        /// Where the entry is.
        index: LogIndex,
    },
    /// The stored hard state claims a commit index past the end of the log.
    #[error(
        "stored commit index {commit} is past the last log index {last}: the log lost entries it had acknowledged; restore this replica from a snapshot"
    )]
    CommitPastLog {
        /// The stored commit index.
        commit: LogIndex,
        /// The last index in the log.
        last: LogIndex,
    },
}
