//! What an engine hands its caller: messages, entries to persist, entries to apply.

use crate::entry::{Entry, HardState, Snapshot};
use crate::types::{Epoch, LogIndex, NodeId, ReadyNumber, RequestId, ShardId};

/// A message addressed between two replicas of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<M> {
    /// The consensus group the message belongs to.
    pub shard: ShardId,
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The engine's own message.
    pub body: M,
}

/// The role a replica plays in its group.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one). Learners are always followers.
    Follower,
    /// Raft pre-vote phase: asking whether an election could be won, without
    /// disturbing the term.
    PreCandidate,
    /// Campaigning: Raft candidate, or a Paxos proposer running phase 1.
    Candidate,
    /// The leader (Raft) or distinguished proposer (Paxos).
    Leader,
}

/// Volatile state the caller may want to observe: changes are reported in
/// [`Ready::soft_state`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// This replica's role.
    pub role: Role,
    /// The leader this replica knows of, if any.
    pub leader: Option<NodeId>,
    /// The epoch the role and leader belong to.
    pub epoch: Epoch,
}

/// A linearizable read that may now be served: once the state machine has
/// applied `index`, reading it reflects every write acknowledged before the
/// read was requested.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id from [`crate::Replica::read_index`].
    pub id: RequestId,
    /// The commit index the read must wait for.
    pub index: LogIndex,
}

/// Everything an engine asks its caller to do, as one numbered batch.
///
/// The caller must, in this order:
/// 1. send `messages` (they may leave at once, even before the disk write);
/// 2. if `snapshot` is set, install it (state machine and log), then append
///    `entries` (first dropping every stored entry with index ≥
///    `entries[0].index`: see [`Ready::truncates_from`]) and persist
///    `hard_state`, all durably (one fsync may cover many Readys and shards);
/// 3. call [`crate::Replica::on_persisted`] with `number`, and only then send
///    `after_persist` (votes and acknowledgements that promise durable state);
/// 4. apply `committed` in order (these are always durable locally already),
///    and report progress with [`crate::Replica::on_applied`];
/// 5. serve `read_states` once their index is applied.
///
/// Several Readys may be outstanding; persisting must happen in `number`
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready<M> {
    /// Sequence number to hand back to `on_persisted`.
    pub number: ReadyNumber,
    /// Set when the role or known leader changed since the last Ready.
    pub soft_state: Option<SoftState>,
    /// Set when the hard state changed; persist it with `entries`.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader, to install before `entries`.
    pub snapshot: Option<Snapshot>,
    /// Entries to append, contiguous and ascending.
    pub entries: Vec<Entry>,
    /// Committed entries to apply, contiguous, ascending, already durable here.
    pub committed: Vec<Entry>,
    /// Messages that may be sent immediately.
    pub messages: Vec<Envelope<M>>,
    /// Messages that may be sent only after this Ready is persisted.
    pub after_persist: Vec<Envelope<M>>,
    /// Reads confirmed since the last Ready.
    pub read_states: Vec<ReadState>,
}

impl<M> Ready<M> {
    /// An empty Ready with the given number.
    pub fn new(number: ReadyNumber) -> Ready<M> {
        Ready {
            number,
            soft_state: None,
            hard_state: None,
            snapshot: None,
            entries: Vec::new(),
            committed: Vec::new(),
            messages: Vec::new(),
            after_persist: Vec::new(),
            read_states: Vec::new(),
        }
    }

    /// The index from which the stored log must be dropped before `entries`
    /// are appended (the index of the first new entry), if any entries.
    pub fn truncates_from(&self) -> Option<LogIndex> {
        self.entries.first().map(|e| e.index)
    }

    /// Whether anything must be written to disk before `on_persisted`.
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }

    /// Whether the Ready carries nothing at all.
    pub fn is_empty(&self) -> bool {
        !self.needs_persist()
            && self.soft_state.is_none()
            && self.committed.is_empty()
            && self.messages.is_empty()
            && self.after_persist.is_empty()
            && self.read_states.is_empty()
    }
}
