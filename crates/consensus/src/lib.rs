//! The contract every ringkv consensus engine implements.
//!
//! Raft (`ringkv-raft`) and Multi-Paxos (`ringkv-paxos`) are both pure state
//! machines behind the [`Replica`] trait: time arrives as [`Replica::tick`],
//! messages through [`Replica::step`], randomness from a generator seeded by
//! the caller ([`Config::seed`]), and everything the engine wants done comes
//! back as a numbered [`Ready`]. The split between [`Ready::messages`] and
//! [`Ready::after_persist`] makes "never promise what is not on disk" a type
//! rule rather than a comment.
//!
//! Both engines speak in the same [`Entry`], [`HardState`] and [`Snapshot`]
//! types, with an ordered [`Epoch`] standing for a Raft term or a Paxos
//! ballot, so the WAL, the state machine, the node loop and the simulator
//! never care which engine produced an entry. [`codec`] gives all of them one
//! compact binary encoding.
//!
//! ```text
//!            tick / step / propose / read_index
//!   caller ─────────────────────────────────────▶ engine (pure)
//!     ▲                                              │
//!     │ on_persisted(n), on_applied(i)               │ ready() -> Ready #n
//!     └──────────────────────────────────────────────┘
//!  send messages → persist (one fsync) → on_persisted → send after_persist → apply
//! ```
//!
//! This crate does no I/O, reads no clock and draws no global randomness.

pub mod codec;
mod entry;
mod membership;
mod ready;
mod replica;
mod rng;
mod storage;
mod types;

pub use codec::{CodecError, Decoder, Wire, decode_exact, encode_to_vec};
pub use entry::{Entry, EntryKind, HardState, Snapshot, SnapshotMeta};
pub use membership::{
    ChangeOp, Membership, MembershipChange, MembershipError, VoteResult, majority,
};
pub use ready::{Envelope, ReadState, Ready, Role, SoftState};
pub use replica::{
    Config, ConfigError, LEADER_DOWN_CAMPAIGN_TICKS_MAX, LEADER_DOWN_MISSED_HEARTBEATS,
    LeaderDownHint, PeerProgress, ProgressState, Proposal, ProposeError, ReadMode, Replica, Status,
    StepError,
};
pub use rng::DetRng;
pub use storage::{LogError, LogStorage, MemoryLog};
pub use types::{Epoch, LogIndex, NodeId, ReadyNumber, RequestId, ShardId};
