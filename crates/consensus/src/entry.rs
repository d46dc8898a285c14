//! Log entries, the durable hard state and snapshots.

use bytes::Bytes;

use crate::membership::Membership;
use crate::types::{Epoch, LogIndex, NodeId};

/// What an entry carries. The state machine applies `Command`s; engines
/// interpret `Membership` entries themselves and ignore `Noop`s.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An opaque command for the state machine.
    Command,
    /// A leader's no-op: a Raft leader's first entry of its term, or a Paxos
    /// gap filler. Applied as nothing.
    Noop,
    /// A new cluster configuration; the payload is an encoded [`Membership`].
    Membership,
}

/// One entry of a replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log; never zero.
    pub index: LogIndex,
    /// The term or ballot of the leader that created (Raft) or last accepted
    /// (Paxos) this entry.
    pub epoch: Epoch,
    /// How to interpret `payload`.
    pub kind: EntryKind,
    /// The command, the encoded membership, or empty for a no-op.
    pub payload: Bytes,
}

impl Entry {
    /// Bytes this entry counts for in size budgets (payload plus a fixed
    /// header estimate), so empty entries are never free.
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 24;
        self.payload.len() as u64 + HEADER_BYTES
    }
}

/// The state an engine must have on disk before it sends any message that
/// promises it (a vote, a promise, an append acknowledgement).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Highest epoch seen (Raft: current term; Paxos: highest promised ballot).
    pub epoch: Epoch,
    /// Raft: the candidate voted for in `epoch`. Paxos: unused (`None`).
    pub vote: Option<NodeId>,
    /// Highest index known committed. Persisting it is an optimisation (faster
    /// restart), never required for safety.
    pub commit: LogIndex,
}

/// What a snapshot covers: every entry up to and including `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes.
    pub index: LogIndex,
    /// The epoch of the entry at `index`.
    pub epoch: Epoch,
    /// The configuration in effect at `index`.
    pub membership: Membership,
}

/// A state-machine snapshot: the shard's applied state at `meta.index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The state machine's own serialisation; opaque to engines.
    pub data: Bytes,
}
