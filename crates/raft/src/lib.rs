//! The Raft consensus engine of ringkv, as a pure (sans-IO) state machine.
//!
//! [`Raft`] implements [`ringkv_consensus::Replica`]: time arrives as
//! `tick()`, peer messages ([`Message`]) through `step()`, requests through
//! `propose()`, `read_index()`, `transfer_leadership()` and
//! `change_membership()`; everything the engine wants done comes back as a
//! numbered `Ready`. It does no I/O, reads no clock and draws randomness only
//! from a generator seeded by [`ringkv_consensus::Config::seed`].
//!
//! Module map:
//! * `raft` ([`Raft`]) — roles, elections, replication, commit, reads,
//!   transfer, membership; the rules of Figure 2 of the Raft paper and of
//!   the thesis, cited where applied;
//! * `progress` — the leader's per-follower tracker (probe / replicate /
//!   snapshot) with its in-flight window;
//! * `log` — storage plus the unstable tail; commit, apply and persist
//!   cursors;
//! * `membership_log` — the configuration in effect at each log position;
//! * `read_only` — ReadIndex and lease reads;
//! * `snapshot` — receiving InstallSnapshot in chunks;
//! * [`message`] — the peer messages and their wire codec.
//!
//! Choices the contract leaves open, and what this engine does:
//! * **Batching.** Appends are sent when the caller takes a Ready, not on
//!   each `propose()`: every proposal since the last Ready travels in one
//!   message per follower (split at `max_message_bytes`, at most
//!   `max_inflight_messages` in flight).
//! * **Followers' reads** are forwarded to the leader, which confirms them
//!   like its own and answers with the read index, so followers serve
//!   linearizable reads; proposals are not forwarded (`NotLeader` names the
//!   leader). A forwarded read that is lost is simply not answered.
//! * **Membership changes** take effect when appended; while one is
//!   uncommitted, or before the leader's no-op commits, another is refused
//!   with `MembershipChangeInProgress` (the new leader cannot yet rule out
//!   an uncommitted change of its predecessor). A leader that removed or
//!   demoted itself may still campaign while that change is uncommitted.
//! * **Leases** (opt-in) require check-quorum, are void for the rest of a
//!   term once `TimeoutNow` was sent, and a replica that boots in lease
//!   mode refuses votes for one election timeout, honouring any lease it
//!   may have granted before a crash.
//! * **Snapshots** are taken by the caller (compacting its storage); the
//!   engine sends the storage's latest one in `snapshot_chunk_bytes` chunks
//!   and offers [`Raft::membership_at`] to build snapshot metadata.
//!
//! Testing hooks: [`Raft::check_invariants`] (run after every input in
//! debug builds), [`Raft::campaign`], and with the `planted-bugs` feature,
//! `PlantedBugs` switches that each break one safety rule.

mod log;
mod membership_log;
pub mod message;
mod options;
mod progress;
mod raft;
mod read_only;
mod snapshot;

pub use message::{Body, Message, RejectHint};
#[cfg(feature = "planted-bugs")]
pub use options::PlantedBugs;
pub use options::{RaftError, RaftOptions};
pub use raft::Raft;
