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
//! * [`raft`](crate::Raft) — roles, elections, replication, commit; the rules of
//!   Figure 2 of the Raft paper and of the thesis, cited where applied;
//! * `progress` — the leader's per-follower tracker (probe / replicate /
//!   snapshot, in-flight window);
//! * `log` — storage plus the unstable tail, commit/apply/persist cursors;
//! * `membership_log` — the configuration in effect at each log position;
//! * `read_only` — ReadIndex and lease reads;
//! * `snapshot` — receiving InstallSnapshot in chunks;
//! * [`message`] — the peer messages and their wire codec.

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
