//! Newtypes shared by every engine, the WAL, the state machine and the simulator.

use std::fmt;

/// A node (server process) in the cluster. `NodeId(0)` is never a valid node:
/// it is reserved so that encodings can use zero for "none".
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl NodeId {
    /// Whether this id may name a real node (it is not the reserved zero).
    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A consensus group. Shard 0 is the metadata group; data shards start at 1.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u64);

impl ShardId {
    /// The metadata group's shard id.
    pub const METADATA: ShardId = ShardId(0);
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// A position in a replicated log. Index 0 is the empty prefix: the first
/// real entry has index 1.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The index before the first entry.
    pub const ZERO: LogIndex = LogIndex(0);

    /// The next index. Panics on overflow, which would take 2^64 entries.
    #[must_use]
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The previous index, saturating at zero.
    #[must_use]
    pub const fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// `self + n`.
    #[must_use]
    pub const fn plus(self, n: u64) -> LogIndex {
        LogIndex(self.0 + n)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The ordered "era" an entry was created in: a Raft term or a Paxos ballot.
///
/// Ordering is lexicographic on `(round, node)`. Raft uses `node = NodeId(0)`
/// always, so its epochs compare as plain terms; Multi-Paxos ballots use the
/// proposer's id to make every ballot unique. The WAL, the state machine and
/// the simulator never need to know which engine made an epoch.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch {
    /// The term (Raft) or ballot round (Paxos).
    pub round: u64,
    /// Zero for Raft; the proposer for a Paxos ballot.
    pub node: NodeId,
}

impl Epoch {
    /// The epoch before any election.
    pub const ZERO: Epoch = Epoch { round: 0, node: NodeId(0) };

    /// A Raft term.
    pub const fn term(term: u64) -> Epoch {
        Epoch { round: term, node: NodeId(0) }
    }

    /// A Paxos ballot `(round, node)`.
    pub const fn ballot(round: u64, node: NodeId) -> Epoch {
        Epoch { round, node }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.node.0 == 0 {
            write!(f, "{}", self.round)
        } else {
            write!(f, "{}.{}", self.round, self.node.0)
        }
    }
}

/// Sequence number of a [`crate::Ready`]. Acknowledging number `n` through
/// [`crate::Replica::on_persisted`] acknowledges every earlier `Ready` too.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadyNumber(pub u64);

/// Caller-chosen identifier of a read request, echoed in its [`crate::ReadState`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);
