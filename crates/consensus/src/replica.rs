//! The engine-agnostic contract: the [`Replica`] trait, its configuration,
//! its status report and its errors.

use bytes::Bytes;

use crate::codec::Wire;
use crate::membership::{Membership, MembershipChange, MembershipError};
use crate::ready::{Envelope, Ready, Role};
use crate::rng::DetRng;
use crate::storage::{LogError, LogStorage};
use crate::types::{Epoch, LogIndex, NodeId, ReadyNumber, RequestId, ShardId};

/// A consensus engine as a pure state machine: no clock, no RNG, no I/O.
///
/// Time arrives through [`Replica::tick`], messages through
/// [`Replica::step`], requests through `propose`/`read_index`/...; everything
/// the engine wants done comes back from [`Replica::ready`]. The engine
/// reads its durable log through a [`crate::LogStorage`] it owns, which the
/// caller updates when it persists a Ready.
pub trait Replica {
    /// The engine's peer message type.
    type Message: Wire + Clone + std::fmt::Debug;

    /// The log storage the engine reads through.
    type Storage: LogStorage;

    /// This replica's node.
    fn id(&self) -> NodeId;

    /// The shard this replica belongs to.
    fn shard(&self) -> ShardId;

    /// Advances logical time by one tick (elections, heartbeats, leases).
    fn tick(&mut self);

    /// Feeds one message from a peer.
    ///
    /// # Errors
    /// The message is not for this replica or is malformed; stale messages
    /// are ignored without error.
    fn step(&mut self, message: Envelope<Self::Message>) -> Result<(), StepError>;

    /// Proposes a command for the log. On success the command is appended
    /// locally at the returned position; it is committed only if a later
    /// Ready lists it in `committed` at that index with that epoch.
    ///
    /// # Errors
    /// Not the leader, a leadership transfer is in flight, the uncommitted
    /// budget is exhausted, or the command is too large.
    fn propose(&mut self, command: Bytes) -> Result<Proposal, ProposeError>;

    /// Asks for a linearizable read. A [`crate::ReadState`] with the same id
    /// arrives in a later Ready once leadership is confirmed; if leadership
    /// is lost first, the read is dropped and the caller retries (a change of
    /// `soft_state` tells it).
    ///
    /// # Errors
    /// Not the leader, or too many reads pending.
    fn read_index(&mut self, id: RequestId) -> Result<(), ProposeError>;

    /// Asks the leader to hand leadership to `to`.
    ///
    /// # Errors
    /// Not the leader, `to` is not a voter, or a transfer is already running.
    fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError>;

    /// Proposes a membership change. It enters a joint configuration when
    /// needed and leaves it automatically once the joint entry commits.
    ///
    /// # Errors
    /// Not the leader, another change is in flight, or the change is invalid.
    fn change_membership(&mut self, change: MembershipChange) -> Result<Proposal, ProposeError>;

    /// Whether [`Replica::ready`] would return something.
    fn has_ready(&self) -> bool;

    /// Takes the next batch of work, if any.
    fn ready(&mut self) -> Option<Ready<Self::Message>>;

    /// Reports that every Ready up to and including `number` is durable (and
    /// its entries and snapshot are now readable from the log storage).
    fn on_persisted(&mut self, number: ReadyNumber);

    /// Reports that the state machine has applied every entry up to `index`.
    fn on_applied(&mut self, index: LogIndex);

    /// Reports that a message to `to` could not be delivered, or that the
    /// connection to `to` was closed, reset or refused, so the engine can
    /// slow down or fall back to probing.
    ///
    /// For a follower, `to` being its leader is also a *leader-down hint*:
    /// a killed process's sockets are closed by its kernel at once, long
    /// before an election timeout passes without heartbeats. With pre-vote
    /// (Raft) or check-quorum (Paxos) on and [`ReadMode::ReadIndex`], the
    /// follower then (1) campaigns after a wait drawn from
    /// `[1, LEADER_DOWN_CAMPAIGN_TICKS_MAX]` ticks, once it has also missed
    /// [`LEADER_DOWN_MISSED_HEARTBEATS`] heartbeats, instead of waiting out
    /// its election timeout, and (2) stops
    /// defending the leader's lease: it grants pre-votes and votes (Paxos:
    /// promises) as if it had not heard from the leader for an election
    /// timeout. Hearing from the leader again, or granting another
    /// candidate's pre-vote or promise first, cancels (1); hearing from the
    /// leader cancels (2). A hint can be wrong (a flapping connection to a
    /// live leader): the voters that still hear from the leader refuse the
    /// campaign, so a lone wrong hint changes nothing. Safety never depends
    /// on it: elections are safe whenever they happen. With
    /// [`ReadMode::Lease`] the hint is ignored, since the lease promises not
    /// to vote for an election timeout.
    fn report_unreachable(&mut self, to: NodeId);

    /// A snapshot of the replica's state for metrics, routing and tests.
    fn status(&self) -> Status;

    /// Highest index known committed: [`Status::commit`] without building
    /// a whole status (which clones the configuration and the progress).
    fn commit_index(&self) -> LogIndex;

    /// The configuration in effect: [`Status::membership`], borrowed. A
    /// node hosting many shards asks for it every round.
    fn membership(&self) -> &Membership;

    /// The log storage, for reads by the caller (e.g. to build snapshots).
    fn storage(&self) -> &Self::Storage;

    /// The log storage, for the caller to record what it has persisted
    /// (append entries, hard state, installed snapshots) before calling
    /// [`Replica::on_persisted`], and to compact after a snapshot.
    fn storage_mut(&mut self) -> &mut Self::Storage;
}

/// Most ticks a follower waits, after a leader-down hint (see
/// [`Replica::report_unreachable`]), before it campaigns. Each follower
/// draws its wait from `[1, LEADER_DOWN_CAMPAIGN_TICKS_MAX]`, so the
/// survivors of a crash rarely campaign at the same moment (a split vote
/// costs a whole election timeout), while the wait stays a small part of
/// one (3 of the default 10 ticks).
pub const LEADER_DOWN_CAMPAIGN_TICKS_MAX: u32 = 3;

/// Heartbeat intervals a follower with a leader-down hint must also have
/// gone without hearing from its leader before it campaigns: a live leader
/// behind a connection that merely flapped reaches it first and cancels
/// the hint (Multi-Paxos has no pre-vote to stop a wrong campaign).
pub const LEADER_DOWN_MISSED_HEARTBEATS: u32 = 2;

/// A follower's leader-down hint (see [`Replica::report_unreachable`]),
/// kept the same way by both engines: once the transport reports our
/// leader unreachable we no longer defend its lease, and we campaign at a
/// drawn `election_elapsed` unless the leader or another candidate reaches
/// us first.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum LeaderDownHint {
    /// No hint: the leader, if any, is presumed alive.
    #[default]
    None,
    /// The leader was reported unreachable since we last heard from it.
    Down {
        /// The `election_elapsed` at which we campaign; `None` once another
        /// survivor campaigns first (ours would split the vote).
        campaign_at: Option<u32>,
    },
}

impl LeaderDownHint {
    /// Whether the leader was reported unreachable since we last heard from it.
    pub fn is_down(&self) -> bool {
        matches!(self, LeaderDownHint::Down { .. })
    }

    /// Takes the hint now: the campaign is drawn by the rule of
    /// [`Replica::report_unreachable`], shared by both engines — a wait from
    /// `[1, LEADER_DOWN_CAMPAIGN_TICKS_MAX]`, and no earlier than
    /// [`LEADER_DOWN_MISSED_HEARTBEATS`] heartbeats of silence
    /// (`election_elapsed` counts ticks since the leader's last message, and
    /// a message cancels the hint).
    pub fn suspect(&mut self, rng: &mut DetRng, election_elapsed: u32, heartbeat_ticks: u32) {
        let wait = rng.range(1, u64::from(LEADER_DOWN_CAMPAIGN_TICKS_MAX) + 1) as u32;
        let silence = LEADER_DOWN_MISSED_HEARTBEATS.saturating_mul(heartbeat_ticks);
        let at = election_elapsed.saturating_add(wait).max(silence);
        *self = LeaderDownHint::Down { campaign_at: Some(at) };
    }

    /// Another survivor campaigns already: keep the hint, drop our campaign.
    pub fn give_way(&mut self) {
        if let LeaderDownHint::Down { campaign_at } = self {
            *campaign_at = None;
        }
    }

    /// The `election_elapsed` at which to campaign: the hinted campaign if
    /// it comes before the regular `election_timeout`.
    pub fn campaign_due(&self, election_timeout: u32) -> u32 {
        match self {
            LeaderDownHint::Down { campaign_at: Some(at) } => (*at).min(election_timeout),
            _ => election_timeout,
        }
    }
}

/// Where a proposal was placed in the log.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The log index the entry was appended at.
    pub index: LogIndex,
    /// The epoch of the entry; if the committed entry at `index` has another
    /// epoch, the proposal was lost to a leader change.
    pub epoch: Epoch,
}

/// How a leader confirms it may serve a linearizable read.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Confirm leadership with a heartbeat round to a quorum per batch of
    /// reads (Raft thesis §6.4). Safe regardless of clocks.
    ReadIndex,
    /// Serve reads locally while a quorum has answered within the last
    /// election timeout minus `drift_ticks` (thesis §6.4.1). Safe only if
    /// clocks drift by less than `drift_ticks` per election timeout.
    Lease {
        /// Safety margin subtracted from the election timeout.
        drift_ticks: u32,
    },
}

/// Engine configuration shared by Raft and Multi-Paxos.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This replica's node id (never zero).
    pub id: NodeId,
    /// The shard this replica serves.
    pub shard: ShardId,
    /// Base election timeout; the actual timeout is drawn uniformly from
    /// `[election_ticks, 2 * election_ticks)` on every reset.
    pub election_ticks: u32,
    /// Leader heartbeat interval; must be less than `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Run a pre-vote round before a real election (thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout
    /// steps down (thesis §6.2).
    pub check_quorum: bool,
    /// How linearizable reads are confirmed.
    pub read_mode: ReadMode,
    /// Most entry bytes in one append message.
    pub max_message_bytes: u64,
    /// Most append messages in flight to one follower in replicate state.
    pub max_inflight_messages: usize,
    /// Most bytes of proposed but uncommitted entries; further proposals get
    /// [`ProposeError::Busy`].
    pub max_uncommitted_bytes: u64,
    /// Most bytes of committed entries handed out in one Ready.
    pub max_committed_bytes_per_ready: u64,
    /// Largest single command accepted.
    pub max_command_bytes: u64,
    /// Most reads waiting for confirmation.
    pub max_pending_reads: usize,
    /// Snapshot bytes per InstallSnapshot chunk.
    pub snapshot_chunk_bytes: u64,
    /// Seed of the engine's own deterministic generator (election jitter).
    pub seed: u64,
}

impl Config {
    /// Defaults for `id` in `shard`, in etcd's proportions: an election
    /// timeout of 10 ticks and a heartbeat every tick (the node chooses the
    /// tick length).
    pub fn new(id: NodeId, shard: ShardId) -> Config {
        Config {
            id,
            shard,
            election_ticks: 10,
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::ReadIndex,
            max_message_bytes: 1 << 20,
            max_inflight_messages: 256,
            max_uncommitted_bytes: 64 << 20,
            max_committed_bytes_per_ready: 16 << 20,
            max_command_bytes: 2 << 20,
            max_pending_reads: 65_536,
            snapshot_chunk_bytes: 1 << 20,
            seed: id.0 ^ shard.0.rotate_left(32),
        }
    }

    /// Checks the configuration for values that cannot work.
    ///
    /// # Errors
    /// The first invalid field, named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, why: &'static str| Err(ConfigError { field, why });
        if !self.id.is_valid() {
            return bad("id", "node id 0 is reserved");
        }
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat_ticks", "must be at least 1");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return bad("election_ticks", "must be greater than heartbeat_ticks");
        }
        if let ReadMode::Lease { drift_ticks } = self.read_mode
            && drift_ticks >= self.election_ticks
        {
            return bad("read_mode", "lease drift margin must be less than election_ticks");
        }
        if self.max_inflight_messages == 0 {
            return bad("max_inflight_messages", "must be at least 1");
        }
        if self.max_message_bytes == 0 || self.snapshot_chunk_bytes == 0 {
            return bad("max_message_bytes", "message and chunk sizes must be positive");
        }
        if self.max_command_bytes > self.max_uncommitted_bytes {
            return bad("max_command_bytes", "must not exceed max_uncommitted_bytes");
        }
        Ok(())
    }
}

/// An invalid engine configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid consensus configuration: {field} {why}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub why: &'static str,
}

/// A replica's state, as reported by [`Replica::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// This shard.
    pub shard: ShardId,
    /// Current role.
    pub role: Role,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Current term or ballot.
    pub epoch: Epoch,
    /// Highest index known committed.
    pub commit: LogIndex,
    /// Highest index the caller reported applied.
    pub applied: LogIndex,
    /// Last index in the log (including entries not yet persisted).
    pub last_index: LogIndex,
    /// The configuration in effect.
    pub membership: Membership,
    /// Replication progress of every other member (leader only; else empty).
    pub progress: Vec<PeerProgress>,
}

/// How a leader is replicating to one peer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// The peer.
    pub id: NodeId,
    /// Highest index known replicated on the peer.
    pub matched: LogIndex,
    /// Next index to send.
    pub next: LogIndex,
    /// Replication state.
    pub state: ProgressState,
    /// Heard from within the last election timeout.
    pub recently_active: bool,
}

/// Replication state of one peer, as seen by the leader.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding the match point: one message at a time.
    Probe,
    /// Streaming entries optimistically within the in-flight window.
    Replicate,
    /// Receiving a snapshot; entries wait.
    Snapshot,
}

/// Why a message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// The envelope names another shard.
    #[error("message for shard {got} delivered to a replica of shard {expected}")]
    WrongShard {
        /// This replica's shard.
        expected: ShardId,
        /// The envelope's shard.
        got: ShardId,
    },
    /// The envelope names another recipient.
    #[error("message for node {got} delivered to node {expected}")]
    WrongRecipient {
        /// This replica's node.
        expected: NodeId,
        /// The envelope's recipient.
        got: NodeId,
    },
    /// The message contradicts itself (e.g. entries out of order).
    #[error("malformed message from {from}: {why}")]
    Malformed {
        /// The sender.
        from: NodeId,
        /// What is wrong.
        why: &'static str,
    },
    /// Reading the local log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why a request (proposal, read, transfer, membership change) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// Only the leader takes requests; retry at `leader` if known.
    #[error("this replica is not the leader (leader: {leader:?}): send the request to the leader")]
    NotLeader {
        /// The leader this replica knows of.
        leader: Option<NodeId>,
    },
    /// Leadership is being transferred; retry when the new leader is known.
    #[error("leadership is being transferred to {to}: retry once the new leader is elected")]
    TransferInProgress {
        /// The transfer target.
        to: NodeId,
    },
    /// Too much work is queued; retry later.
    #[error("too many uncommitted or pending requests ({pending} of at most {limit}): retry later")]
    Busy {
        /// What is pending now (bytes or requests).
        pending: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The command alone exceeds the size limit.
    #[error("command of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the command.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A membership change is already in flight.
    #[error("a membership change is already in progress: wait for it to finish")]
    MembershipChangeInProgress,
    /// The membership change is invalid.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// A transfer target that cannot lead.
    #[error("node {to} cannot take leadership: {why}")]
    InvalidTransferTarget {
        /// The requested target.
        to: NodeId,
        /// Why not.
        why: &'static str,
    },
}
