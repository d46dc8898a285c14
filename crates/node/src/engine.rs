//! [`Engine`]: how the node builds a consensus replica, whatever the engine.
//!
//! The node loop is written against [`Replica`] only; this trait adds what
//! the trait cannot say: how to construct a replica over the node's WAL
//! ([`ShardLog`]) and which configuration was in effect at a log index
//! (the metadata a snapshot and a WAL compaction record). Raft implements
//! it now ([`RaftEngine`]); Multi-Paxos will implement it too, and the
//! cluster picks one for all its nodes (`--engine raft|paxos`).

use ringkv_consensus::{Config, LogIndex, Membership, Replica, ShardId, Wire};
use ringkv_raft::{Raft, RaftOptions};
use ringkv_storage::{Disk, ShardLog};

/// Why a replica could not be constructed.
#[derive(Debug, thiserror::Error)]
#[error("the {engine} engine could not start its replica of shard {shard}: {source}")]
pub struct EngineError {
    /// The engine's name.
    pub engine: &'static str,
    /// The shard.
    pub shard: ShardId,
    /// The engine's own error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A consensus engine the node can host replicas of.
pub trait Engine: 'static {
    /// The engine's name, for logs, status and `--engine`.
    const NAME: &'static str;

    /// The engine's peer message, carried in [`crate::PeerFrame`]s.
    type Message: Wire + Clone + std::fmt::Debug + Send + 'static;

    /// A replica of one shard over the node's WAL.
    type Replica<D: Disk>: Replica<Message = Self::Message, Storage = ShardLog<D>>;

    /// Builds (or recovers, from what `log` holds) a replica. Committed
    /// entries up to `applied` are already in the state machine and are not
    /// handed out again.
    ///
    /// # Errors
    /// Invalid configuration, or a log that contradicts itself.
    fn create<D: Disk>(
        config: Config,
        applied: LogIndex,
        log: ShardLog<D>,
    ) -> Result<Self::Replica<D>, EngineError>;

    /// The configuration in effect at `index`, to record with a snapshot
    /// taken there; `None` if the replica no longer (or never) knew it.
    fn membership_at<D: Disk>(replica: &Self::Replica<D>, index: LogIndex) -> Option<Membership>;
}

/// The Raft engine ([`ringkv_raft::Raft`]).
#[derive(Copy, Clone, Debug, Default)]
pub struct RaftEngine;

impl Engine for RaftEngine {
    const NAME: &'static str = "raft";

    type Message = ringkv_raft::Message;

    type Replica<D: Disk> = Raft<ShardLog<D>>;

    fn create<D: Disk>(
        config: Config,
        applied: LogIndex,
        log: ShardLog<D>,
    ) -> Result<Raft<ShardLog<D>>, EngineError> {
        let shard = config.shard;
        let mut options = RaftOptions::new(config);
        options.applied = applied;
        Raft::new(options, log).map_err(|e| EngineError {
            engine: Self::NAME,
            shard,
            source: Box::new(e),
        })
    }

    fn membership_at<D: Disk>(replica: &Raft<ShardLog<D>>, index: LogIndex) -> Option<Membership> {
        replica.membership_at(index)
    }
}
