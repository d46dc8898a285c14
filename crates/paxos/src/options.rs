//! Construction options of a Multi-Paxos replica and the errors of construction.

use ringkv_consensus::{Config, ConfigError, LogError, LogIndex, ReadMode};

/// Default α: a configuration chosen at slot `s` governs slots `s + α` and
/// later, and a leader never has more than α slots past its commit point in
/// phase 2 (the pipeline window), so no slot is ever proposed under a
/// configuration that is not yet decided (Lamport, "Paxos Made Simple" §3,
/// and "Reconfiguring a State Machine", 2010).
///
/// 1024 keeps a three-replica pipeline full at batches of a thousand
/// commands; the price is that a membership change is padded with up to
/// α - 1 no-ops so that it takes effect without waiting for traffic.
pub const CONFIG_DELAY_SLOTS: u64 = 1024;

/// Everything needed to construct a [`crate::Paxos`] besides its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaxosOptions {
    /// The engine-agnostic configuration.
    pub config: Config,
    /// Highest index the caller's state machine has already applied (when it
    /// keeps its own durable state); committed entries are handed out from
    /// the next one. `LogIndex::ZERO` means "from the storage's snapshot".
    pub applied: LogIndex,
    /// α, the configuration delay in slots (see [`CONFIG_DELAY_SLOTS`]).
    ///
    /// Part of the protocol: every replica of a shard must use the same
    /// value for the shard's whole life, or replicas disagree on which
    /// configuration decides a slot.
    pub config_delay_slots: u64,
    /// Deliberate safety bugs for testing the checkers (all off by default).
    #[cfg(feature = "planted-bugs")]
    pub planted_bugs: PlantedBugs,
}

impl PaxosOptions {
    /// Options with `config`, the default α and nothing applied beyond the
    /// snapshot.
    pub fn new(config: Config) -> PaxosOptions {
        PaxosOptions {
            config,
            applied: LogIndex::ZERO,
            config_delay_slots: CONFIG_DELAY_SLOTS,
            #[cfg(feature = "planted-bugs")]
            planted_bugs: PlantedBugs::default(),
        }
    }

    /// Checks the configuration, including Multi-Paxos' own rules on top of
    /// [`Config::validate`].
    ///
    /// # Errors
    /// The first invalid field, named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.config.validate()?;
        if matches!(self.config.read_mode, ReadMode::Lease { .. }) && !self.config.check_quorum {
            // Acceptors honour a leader's lease only by ignoring prepares
            // while they hear from it, which is the check-quorum rule.
            return Err(ConfigError {
                field: "read_mode",
                why: "lease reads need check_quorum, which makes acceptors honour the lease",
            });
        }
        if self.config_delay_slots == 0 {
            return Err(ConfigError {
                field: "config_delay_slots",
                why: "must be at least 1: a configuration cannot govern its own slot",
            });
        }
        Ok(())
    }
}

/// Switches that each break exactly one Multi-Paxos safety rule, so that
/// the checkers can be shown to catch it. Compiled only with the
/// `planted-bugs` feature; all off by default.
#[cfg(feature = "planted-bugs")]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Acceptors take phase-2 accepts (and commit notifications) of any
    /// ballot, even below the ballot they promised (breaks phase 2b).
    pub accept_without_promise_check: bool,
    /// A new leader adopts the *lowest*-ballot accepted value of each slot
    /// instead of the highest (breaks phase 2a's value rule).
    pub adopt_lowest_ballot: bool,
    /// Promises and accepted answers leave before the state they promise is
    /// durable (they go in `Ready::messages` instead of
    /// `Ready::after_persist`).
    pub ack_before_persist: bool,
}

/// Why a replica could not be constructed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PaxosError {
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
    /// A slot at or below the stored commit point holds no accepted value.
    #[error(
        "log index {index} is at or below the stored commit point but holds no accepted value; restore this replica from a snapshot"
    )]
    VacantCommitted {
        /// The vacant slot.
        index: LogIndex,
    },
    /// A stored entry was accepted in a ballot above the promised one, which
    /// a correct acceptor never writes: the log and hard state disagree.
    #[error(
        "the entry at log index {index} was accepted in a ballot above the stored promise; the log and hard state disagree: restore this replica from a snapshot"
    )]
    AcceptedAbovePromise {
        /// Where the entry is.
        index: LogIndex,
    },
}
