//! The MVCC state machine: etcd's data model on an embedded engine.
//!
//! Every shard is an etcd keyspace: a revision counter, every key with its
//! `create_revision`, `mod_revision`, `version`, value and lease, deletes
//! that leave tombstones, history kept until compaction, and a lease
//! table. The node loop applies committed log entries with
//! [`MvccStore::write`] / [`MvccStore::apply_batch`] and gets back each
//! client's answer and the change [`Event`]s for watchers; reads
//! ([`MvccStore::read`]) run beside it on a consistent view, which also
//! replays past changes for watchers that start behind
//! ([`ReadView::events`]).
//!
//! ```text
//!   committed entries ──▶ write(|batch| batch.apply(shard, index, &cmd)...)
//!                           │ one redb write transaction for the whole batch:
//!                           │ data + every touched shard's applied index
//!                           ▼
//!                         commit: non-durable, or a durable checkpoint every
//!                         CHECKPOINT_INTERVAL_APPLIES entries / _BYTES bytes
//!   Applied { result, events } ◀┘
//!
//!   reads ──▶ read() ──▶ ReadView (redb read transaction: one revision per shard)
//! ```
//!
//! # Durability contract
//!
//! The WAL is the durability point; the state machine commits without
//! fsync and makes a durable checkpoint every
//! [`CHECKPOINT_INTERVAL_APPLIES`] entries or [`CHECKPOINT_INTERVAL_BYTES`]
//! bytes (or on [`MvccStore::checkpoint`]). Each shard's applied index is
//! written in the same engine transaction as the data it covers, so after
//! a crash the store is exactly the state after entries `1..=applied` for
//! some `applied >= durable_applied_index`, and the node replays the WAL
//! from `applied + 1`. The WAL may drop a shard's entries up to
//! [`MvccStore::durable_applied_index`], never further.
//!
//! # One store per node, not one per shard
//!
//! A node hosts up to thousands of shards. One redb file per shard would
//! mean thousands of files, page caches and fsyncs per checkpoint; one
//! database keyed by shard id gives one fsync per checkpoint for every
//! shard (the same group commit the WAL does), one cache, and group apply
//! across shards in one transaction. A shard's rows are one key range, so
//! snapshot, restore and removal stay per shard. The price: redb has one
//! writer at a time, which is what the single-threaded node loop does anyway.
//!
//! # Layout
//!
//! See `tables.rs`: versions are keyed `(shard, key, !revision)`, newest
//! first, so a point read at any revision is one seek and a range is one
//! forward scan; a `(shard, revision, sub)` change log makes compaction
//! touch only the keys written since the previous compaction. An apply
//! batch writes its change log entries as one row per shard (see
//! `changes.rs`), so a put costs one B-tree insert, not two; stores written
//! with one row per entry read the same.
//!
//! # Why redb (engine comparison)
//!
//! Measured on this project's 2-core machine kind (Rust 1.95, redb 4.6.0,
//! fjall 3.1.13) with a throwaway harness kept out of the repository
//! (release build; batches of 1,000 puts of 8-byte keys and 256-byte
//! values, a non-durable commit per batch and a durable one every 10
//! batches; 1,000,000 keys; one database per engine):
//!
//! | | redb 4 | fjall 3 |
//! | --- | --- | --- |
//! | batched puts, random key order | 26,000 – 44,000 /s | 108,000 – 307,000 /s |
//! | batched puts, ascending keys | 316,000 – 357,000 /s | 205,000 – 344,000 /s |
//! | reopen after clean close, 1M keys | 0.004 – 0.014 s | 0.7 – 1.4 s |
//! | reopen after kill -9, 1M keys | 1.23 s (0.02 s with quick-repair) | 1.2 – 2.7 s |
//! | clean build, debug, `-j1` | 7.9 CPU-s, 2 crates | 22.5 CPU-s, 47 crates |
//! | clean build, release, `-j1` | 23.4 CPU-s | 41.8 CPU-s |
//!
//! fjall (an LSM tree) writes random keys 3–7x faster; redb (a
//! copy-on-write B-tree) reopens in milliseconds where fjall replays its
//! journal for 0.7–2.7 s, builds 2–3x faster from 2 crates instead of 47,
//! and runs no background threads. We chose **redb**:
//!
//! - Write speed matters less here than in a primary store: every entry
//!   is already fsynced in the WAL and replicated before it is applied,
//!   in batches, off the client's latency path once committed. redb's
//!   random-order rate is the one number where it loses; the benchmark
//!   below puts this store at 29,000–104,000 puts/s on this machine kind,
//!   and group apply grows batches when apply falls behind.
//! - Recovery time is availability: a restarted node serves its shards
//!   only after the engine opens. With quick-repair on durable
//!   checkpoints redb opens in ~20 ms after a crash, independent of size.
//! - redb runs on a pluggable `StorageBackend` (we use its in-memory one
//!   for tests and the simulator), no background threads: the simulator
//!   stays deterministic and could drive it through the `Disk` trait.
//! - Non-durable commits with periodic durable ones are exactly redb's
//!   `Durability::None` / `Durability::Immediate` (checked in redb 4.6's
//!   API: `WriteTransaction::set_durability`, `set_quick_repair`).
//! - A smaller dependency tree and a faster CI build.
//!
//! The cost of redb's random-write rate is reduced by the layout (one
//! versions table, no separate "latest" table: one random B-tree insert
//! per put) and by group apply. fjall stays the fallback behind the same
//! [`MvccStore`] API. The decision record is `docs/adr/0001-state-machine-engine.md`.
//!
//! # Benchmark
//!
//! `cargo bench -p ringkv-storage --bench mvcc` (release, file-backed,
//! default checkpoints; medians; ranges over runs on the shared, loaded
//! 2-core machine):
//!
//! | | median |
//! | --- | --- |
//! | batches of 1,000 puts (random 8-byte keys, 256-byte values), ~10k–50k keys | 50,000 – 104,000 puts/s |
//! | the same at 500,000 keys | 29,000 – 73,000 puts/s |
//! | range scan returning 10,000 keys (of 110,000) | 2.6 – 3.6 ms (2.8M – 3.8M keys/s) |
//!
//! # Files
//!
//! [`MvccStore::open_on`] keeps the database in one file of the node's
//! [`crate::Disk`], through a redb storage backend over [`crate::DiskFile`]:
//! the simulator's [`crate::SimDisk`] then crashes the store and the WAL
//! alike. [`MvccStore::open`] opens a file by path with redb's own file
//! backend (file locking included); [`MvccStore::open_in_memory`] keeps
//! everything in memory.
//!
//! # Records for the node layer
//!
//! Besides etcd's data, a shard holds named records the node layer
//! replicates through its log (the member table, alarms):
//! [`ApplyBatch::set_record`] writes them in the apply transaction, read
//! views read them, and snapshots carry them. Node-local facts (the node's
//! own identity, what a restored snapshot stands for) live apart, in
//! [`MvccStore::set_node_record`], and never leave the node.
//!
//! # Snapshots
//!
//! [`MvccStore::snapshot`] streams a shard as checksummed chunks from a
//! read transaction while writes continue; [`MvccStore::restore`] verifies
//! and installs one atomically (see `snapshot.rs` for the format).

mod apply;
mod backend;
mod changes;
mod codec;
mod error;
mod hash;
mod read;
mod snapshot;
mod store;
mod tables;
mod types;

pub use error::{MvccError, ReadError, SnapshotError, StoreError};
pub use hash::HashKv;
pub use snapshot::SnapshotExport;
pub use store::{Applied, ApplyBatch, CommitInfo, MvccStore, ReadView, ShardState, StoreOptions};
pub use types::{
    Command, CompactionRequest, CompactionResponse, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyValue, LeaseCheckpoint,
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseId, LeaseInfo, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, Response, ResponseOp, Revision, SortOrder, SortTarget,
    TxnRequest, TxnResponse,
};

/// Default most compares, or operations per branch, in a transaction
/// (etcd's `--max-txn-ops` default).
pub const TXN_OPS_MAX: usize = 128;

/// Deepest transaction nesting a decoded command may have. With
/// [`TXN_OPS_MAX`] operations a valid transaction cannot nest deeper; the
/// bound keeps hostile input from exhausting the stack.
pub const NESTED_TXN_DEPTH_MAX: usize = 128;

/// Largest lease TTL in seconds (etcd's `MaxLeaseTTL`).
pub const LEASE_TTL_MAX_SECONDS: i64 = 9_000_000_000;

/// A durable checkpoint after this many applied entries: bounds WAL replay
/// after a crash to about this many entries per node (about a second of
/// apply), half of what etcd replays at its default `--snapshot-count`.
/// Each checkpoint writes out every page dirtied since the last one, so a
/// longer interval writes hot pages once instead of several times: 10,000
/// cost 20-25 % more apply CPU than 30,000 in the `apply` bench
/// (docs/perf/apply-cost.md).
pub const CHECKPOINT_INTERVAL_APPLIES: u64 = 50_000;

/// A durable checkpoint after this many bytes written: bounds replay for
/// large values.
pub const CHECKPOINT_INTERVAL_BYTES: u64 = 64 << 20;

/// redb's page cache for the node's store.
pub const ENGINE_CACHE_BYTES: usize = 256 << 20;

/// Target size of one snapshot chunk (a chunk holds whole records, so one
/// can exceed it by at most one record).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
