//! Durable storage for ringkv: the node write-ahead log, snapshots and the MVCC state machine.
//!
//! - [`disk`]: the [`Disk`] trait every file access goes through, with the
//!   real [`FsDisk`] and the simulator's [`SimDisk`].
//! - [`wal`]: the node's write-ahead log ([`Wal`]), shared by every shard on
//!   the node, with group commit, segment recovery and per-shard
//!   [`ShardLog`] views for the consensus engines.
//! - [`mvcc`]: the MVCC state machine (etcd's data model) on redb.

pub mod disk;
pub mod mvcc;
pub mod wal;

pub use disk::{Disk, DiskFile, FsDisk, SimDisk};
pub use wal::{BatchSeq, ShardLog, SharedWal, Wal, WalError, WalOptions};
