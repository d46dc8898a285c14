//! [`Engine`]: how the node builds a consensus replica, whatever the engine;
//! [`EngineKind`]: which engine a cluster runs, as a value.
//!
//! The node loop is written against [`Replica`] only; this trait adds what
//! the trait cannot say: how to construct a replica over the node's WAL
//! ([`ShardLog`]) and which configuration was in effect at a log index
//! (the metadata a snapshot and a WAL compaction record). Raft
//! ([`RaftEngine`]) and Multi-Paxos ([`PaxosEngine`]) implement it.
//!
//! # One engine per cluster, for good
//!
//! The cluster picks its engine at creation (`--engine raft|paxos`, Raft by
//! default) and every node runs it: the two engines' logs, hard states and
//! peer messages mean different things. A node records the engine in its
//! data directory when it first opens it (the `engine` node record), and
//! [`crate::Node::open`] refuses, with [`crate::NodeError::EngineMismatch`],
//! to open a data directory created with another engine. Data directories
//! from before the record existed were all Raft's. [`stored_engine`] reads
//! the record without opening the node, so a server can default to it.
//! Peer frames name the sender's engine as well, and a node refuses another
//! engine's frames unread: a node started with the wrong engine for its
//! cluster (a joining one has no data directory to check) shows up as
//! refused frames, never as one engine's messages read as the other's.
//!
//! # What differs for the node
//!
//! Little, by design: proposals are matched by their request id, never by
//! epoch (a new Multi-Paxos leader re-proposes adopted values under its own
//! ballot). Two differences show through the trait: a Multi-Paxos
//! membership change takes effect α slots after it is chosen, so
//! [`Engine::membership_at`] may decline to name a configuration for a
//! snapshot; and a Multi-Paxos snapshot install keeps the slots accepted
//! after it ([`Engine::SNAPSHOT_KEEPS_LATER_ENTRIES`]). Multi-Paxos also
//! needs each Ready persisted all or nothing: the node writes every Ready
//! that fits in one WAL batch (`WalOptions::batch_bytes_max`, 16 MiB by
//! default) in one batch. A larger one is split so that every prefix still
//! recovers, but a crash between its batches could lose a suffix a
//! Multi-Paxos rewrite re-emitted; keep the batch limit well above the
//! largest Ready (a round's proposals, or one catch-up burst).
//!
//! The engine is a type parameter of [`crate::Node`]; a runtime that learns
//! it from its configuration turns the [`EngineKind`] back into a type with
//! [`EngineKind::dispatch`] and a [`WithEngine`] implementation.

use std::fmt;
use std::str::FromStr;

use ringkv_consensus::{
    Config, LogIndex, Membership, Replica, ShardId, Wire, decode_exact, encode_to_vec,
};
use ringkv_paxos::{Paxos, PaxosOptions};
use ringkv_raft::{Raft, RaftOptions};
use ringkv_storage::mvcc::{MvccStore, StoreOptions};
use ringkv_storage::{Disk, ShardLog};

use crate::config::STORE_FILE;
use crate::error::NodeError;

/// Node record naming the engine the data directory was created with.
pub(crate) const ENGINE_RECORD: &str = "engine";

/// The engine of data directories created before [`ENGINE_RECORD`] existed
/// (Raft was the only engine then).
const ENGINE_BEFORE_RECORD: EngineKind = EngineKind::Raft;

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

/// What the node needs to know of a snapshot chunk message to pace it
/// (`--move-bytes-per-second`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot's index (which snapshot the chunk belongs to).
    pub index: LogIndex,
    /// Where the chunk starts in the snapshot's data.
    pub offset: u64,
    /// The chunk's data bytes.
    pub bytes: u64,
}

/// A consensus engine the node can host replicas of.
pub trait Engine: 'static {
    /// Which engine this is, as a value (its name is `KIND.name()`).
    const KIND: EngineKind;

    /// The engine's name, for logs, status and `--engine`.
    const NAME: &'static str = Self::KIND.name();

    /// Whether installing a leader's snapshot keeps this replica's log
    /// entries after the snapshot's index even where the log disagrees
    /// with the snapshot's last entry: Multi-Paxos does (an accepted value
    /// is never dropped), Raft does not (a log that disagrees there holds
    /// only entries the leader will overwrite).
    const SNAPSHOT_KEEPS_LATER_ENTRIES: bool;

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
    /// taken there; `None` if the replica no longer (or never) knew it, or
    /// cannot yet say (a Paxos change chosen at or before `index` that takes
    /// effect only later): no snapshot is taken there then.
    fn membership_at<D: Disk>(replica: &Self::Replica<D>, index: LogIndex) -> Option<Membership>;

    /// The snapshot chunk `message` carries, if it is one.
    fn snapshot_chunk(message: &Self::Message) -> Option<SnapshotChunk>;
}

/// The Raft engine ([`ringkv_raft::Raft`]).
#[derive(Copy, Clone, Debug, Default)]
pub struct RaftEngine;

impl Engine for RaftEngine {
    const KIND: EngineKind = EngineKind::Raft;

    const SNAPSHOT_KEEPS_LATER_ENTRIES: bool = false;

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

    fn snapshot_chunk(message: &ringkv_raft::Message) -> Option<SnapshotChunk> {
        match &message.body {
            ringkv_raft::Body::Snapshot { meta, offset, data, .. } => {
                Some(SnapshotChunk { index: meta.index, offset: *offset, bytes: data.len() as u64 })
            }
            _ => None,
        }
    }
}

/// The Multi-Paxos engine ([`ringkv_paxos::Paxos`]).
///
/// α (the slots between a membership change being chosen and taking
/// effect) is [`ringkv_paxos::CONFIG_DELAY_SLOTS`] on every node: it is
/// part of the protocol, so it is not a node setting. A membership change
/// therefore costs α - 1 no-op entries, which the node applies (and
/// snapshots) like any other entry.
#[derive(Copy, Clone, Debug, Default)]
pub struct PaxosEngine;

impl Engine for PaxosEngine {
    const KIND: EngineKind = EngineKind::Paxos;

    const SNAPSHOT_KEEPS_LATER_ENTRIES: bool = true;

    type Message = ringkv_paxos::Message;

    type Replica<D: Disk> = Paxos<ShardLog<D>>;

    fn create<D: Disk>(
        config: Config,
        applied: LogIndex,
        log: ShardLog<D>,
    ) -> Result<Paxos<ShardLog<D>>, EngineError> {
        let shard = config.shard;
        let mut options = PaxosOptions::new(config);
        options.applied = applied;
        Paxos::new(options, log).map_err(|e| EngineError {
            engine: Self::NAME,
            shard,
            source: Box::new(e),
        })
    }

    fn membership_at<D: Disk>(replica: &Paxos<ShardLog<D>>, index: LogIndex) -> Option<Membership> {
        replica.membership_at(index)
    }

    fn snapshot_chunk(message: &ringkv_paxos::Message) -> Option<SnapshotChunk> {
        match &message.body {
            ringkv_paxos::Body::Snapshot { meta, offset, data, .. } => {
                Some(SnapshotChunk { index: meta.index, offset: *offset, bytes: data.len() as u64 })
            }
            _ => None,
        }
    }
}

/// The consensus engine a cluster runs (`--engine`), as a value.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EngineKind {
    /// Raft ([`RaftEngine`]), the default.
    #[default]
    Raft,
    /// Multi-Paxos ([`PaxosEngine`]).
    Paxos,
}

impl EngineKind {
    /// Every engine, in `--engine` help order.
    pub const ALL: [EngineKind; 2] = [EngineKind::Raft, EngineKind::Paxos];

    /// The name `--engine` takes and status reports.
    pub const fn name(self) -> &'static str {
        match self {
            EngineKind::Raft => "raft",
            EngineKind::Paxos => "paxos",
        }
    }

    /// Runs `work` with the engine this names as a type: how a runtime
    /// configured at run time builds a `Node<RaftEngine, ..>` or a
    /// `Node<PaxosEngine, ..>`.
    pub fn dispatch<W: WithEngine>(self, work: W) -> W::Output {
        match self {
            EngineKind::Raft => work.run::<RaftEngine>(),
            EngineKind::Paxos => work.run::<PaxosEngine>(),
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an engine's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown consensus engine {name:?}: use \"raft\" or \"paxos\"")]
pub struct UnknownEngine {
    /// The name given.
    pub name: String,
}

impl FromStr for EngineKind {
    type Err = UnknownEngine;

    fn from_str(s: &str) -> Result<EngineKind, UnknownEngine> {
        EngineKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownEngine { name: s.to_owned() })
    }
}

/// Work generic over the engine, for [`EngineKind::dispatch`].
pub trait WithEngine {
    /// What the work returns.
    type Output;

    /// Does the work with engine `E`.
    fn run<E: Engine>(self) -> Self::Output;
}

/// The engine a data directory was created with, read without opening the
/// node: `None` for a disk no node has opened yet. A server can use it as
/// the default `--engine` on restart.
///
/// # Errors
/// The disk cannot be listed, the store cannot be opened, or it names an
/// engine this release does not know.
pub fn stored_engine<D: Disk>(
    disk: &D,
    store: StoreOptions,
) -> Result<Option<EngineKind>, NodeError> {
    let listed = disk.list().map_err(|e| NodeError::Config {
        field: "data directory",
        why: format!("cannot list {}: {e}", disk.describe(STORE_FILE)),
    })?;
    if !listed.iter().any(|n| n == STORE_FILE) {
        return Ok(None);
    }
    let store = MvccStore::open_on(disk, STORE_FILE, store)?;
    let fresh = store.node_record(crate::node::MEMBER_ID_RECORD)?.is_none();
    match read_engine_record(&store)? {
        Some(name) => parse_stored(&name).map(Some),
        None if fresh => Ok(None),
        None => Ok(Some(ENGINE_BEFORE_RECORD)),
    }
}

/// The engine name recorded in the store, if any.
fn read_engine_record(store: &MvccStore) -> Result<Option<String>, NodeError> {
    let Some(bytes) = store.node_record(ENGINE_RECORD)? else { return Ok(None) };
    decode_exact::<String>(bytes)
        .map(Some)
        .map_err(|source| NodeError::Codec { what: "stored engine name", source })
}

fn parse_stored(name: &str) -> Result<EngineKind, NodeError> {
    name.parse().map_err(|_| NodeError::Config {
        field: "engine",
        why: format!(
            "the data directory was created with the {name:?} engine, which this release does \
             not know: run the release that created it"
        ),
    })
}

/// Checks that the data directory behind `store` belongs to `configured`,
/// recording it there if the directory is new. `fresh`: no node ever
/// opened this store (it has no member id yet).
///
/// # Errors
/// [`NodeError::EngineMismatch`] if it was created with another engine;
/// the store failing.
pub(crate) fn check_engine(
    store: &MvccStore,
    configured: EngineKind,
    fresh: bool,
) -> Result<(), NodeError> {
    let stored = match read_engine_record(store)? {
        Some(name) => name,
        None if fresh => {
            // Recorded before anything else the node writes, so a data
            // directory never holds state without its engine's name.
            let name = configured.name().to_owned();
            store.set_node_record(ENGINE_RECORD, Some(&encode_to_vec(&name)))?;
            name
        }
        None => ENGINE_BEFORE_RECORD.name().to_owned(),
    };
    if stored != configured.name() {
        return Err(NodeError::EngineMismatch { stored, configured });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for k in EngineKind::ALL {
            assert_eq!(k.name().parse::<EngineKind>(), Ok(k));
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!("PAXOS".parse::<EngineKind>(), Ok(EngineKind::Paxos));
        let err = "zab".parse::<EngineKind>().unwrap_err();
        assert!(err.to_string().contains("\"zab\""), "{err}");
        assert_eq!(EngineKind::default(), EngineKind::Raft);
        assert_eq!(RaftEngine::NAME, "raft");
        assert_eq!(PaxosEngine::NAME, "paxos");
    }

    #[test]
    fn dispatch_picks_the_named_engine() {
        struct Name;
        impl WithEngine for Name {
            type Output = EngineKind;
            fn run<E: Engine>(self) -> EngineKind {
                E::KIND
            }
        }
        for k in EngineKind::ALL {
            assert_eq!(k.dispatch(Name), k);
        }
    }
}
