//! The Multi-Paxos consensus engine of ringkv, as a pure (sans-IO) state
//! machine.
//!
//! [`Paxos`] implements [`ringkv_consensus::Replica`] exactly as the Raft
//! engine does, so the node loop and the simulator drive either one: time
//! arrives as `tick()`, peer messages ([`Message`]) through `step()`,
//! requests through `propose()`, `read_index()`, `transfer_leadership()`
//! and `change_membership()`; everything the engine wants done comes back
//! as a numbered `Ready`. It does no I/O, reads no clock and draws
//! randomness only from a generator seeded by
//! [`ringkv_consensus::Config::seed`].
//!
//! # The protocol
//!
//! Multi-Paxos with a stable leader (distinguished proposer). Ballots are
//! [`ringkv_consensus::Epoch::ballot`]`(round, node)`, unique per proposer.
//! A candidate runs phase 1 once for every slot above its commit point,
//! learning every value accepted there from a quorum; it re-proposes, per
//! slot, the value of the highest ballot reported and fills holes with
//! no-ops; from then on it runs only phase 2, one slot per proposal,
//! pipelined up to α slots past the commit point. Acceptors answer only
//! after the promise or acceptance is durable. The leader learns a slot
//! chosen from a quorum of acceptances in its ballot and announces its
//! commit point to every replica. See [`paxos`](crate::Paxos) for the rules
//! by source.
//!
//! # How the log holds a Paxos acceptor's state
//!
//! [`ringkv_consensus::LogStorage`] holds one entry per slot, contiguous
//! from the snapshot; `Entry::epoch` is the ballot the value was accepted
//! in; `HardState::epoch` is the promised ballot (`vote` is unused). Slots
//! accepted out of order leave **vacant** entries before them (`Noop`,
//! ballot zero, empty payload: no real ballot is zero). Invariants, checked
//! by [`Paxos::check_invariants`] and on recovery:
//!
//! 1. Every non-vacant entry's ballot is at most the promised ballot (an
//!    acceptance raises the promise in the same Ready).
//! 2. An accepted value of a slot is replaced only by a value of a higher
//!    (or equal: the same) ballot for the same slot, never dropped: a
//!    rewrite in the middle of the log re-emits the old suffix behind the
//!    new value, and a snapshot install re-emits the acceptor's slots after
//!    the snapshot. This relies on **each Ready's writes becoming durable
//!    all or nothing** (snapshot, entries and hard state), which the ringkv
//!    WAL guarantees by writing a Ready in one atomic batch.
//! 3. No slot at or below the commit point is vacant, and such slots are
//!    never rewritten.
//! 4. The commit point only covers slots whose value this replica knows
//!    chosen: a leader's own count, or a leader's announcement in ballot
//!    `b` for slots that hold a value of ballot `b`.
//!
//! Replicas may hold one chosen value under different ballots (a lagging
//! replica receives chosen values re-proposed in the current ballot), so
//! compare committed entries by kind and payload, not by epoch.
//!
//! # Choices the contract leaves open
//!
//! * **α** ([`CONFIG_DELAY_SLOTS`], [`PaxosOptions::config_delay_slots`]):
//!   a configuration chosen at slot `s` decides slots from `s + α`; the
//!   leader pipelines at most α slots past its commit point; a change is
//!   padded with α - 1 no-ops so it takes effect promptly; one change at a
//!   time; no joint phase (each slot has one configuration, and phase 1
//!   gathers a quorum of every configuration in play).
//! * **Phase 1 refusal**: an acceptor that knows more slots chosen than the
//!   candidate refuses its prepare (`PromiseRejected`), so promises never
//!   need compacted slots and stay small; the best-informed voter of any
//!   live quorum can always win.
//! * **Disruption and leases**: with `check_quorum`, acceptors ignore
//!   prepares while they hear from a leader (this also gives what Raft's
//!   pre-vote gives, so `Config::pre_vote` is not used); leases (opt-in)
//!   rest on that rule and need `check_quorum`.
//! * **Batching**: accepts are sent when the caller takes a Ready: every
//!   proposal since the last Ready travels in one message per peer.
//! * **Reads on followers** are forwarded to the leader, as in Raft.
//! * **Proposal outcome**: `Proposal::epoch` is the leader's ballot; a new
//!   leader re-proposes an adopted value in its own ballot, so a committed
//!   entry with another epoch at the proposal's index may still carry the
//!   proposed command (the outcome is unknown, not failed).
//!
//! Testing hooks: [`Paxos::check_invariants`], [`Paxos::campaign`], and
//! with the `planted-bugs` feature, `PlantedBugs` switches that each break
//! one safety rule.

mod log;
mod membership;
pub mod message;
mod options;
mod paxos;
mod progress;
mod read_only;
mod snapshot;

pub use message::{Body, Message};
#[cfg(feature = "planted-bugs")]
pub use options::PlantedBugs;
pub use options::{CONFIG_DELAY_SLOTS, PaxosError, PaxosOptions};
pub use paxos::Paxos;
