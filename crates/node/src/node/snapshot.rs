//! Snapshots: taking them, compacting the WAL behind them, installing
//! them from the leader.
//!
//! A snapshot of a shard is its MVCC export (checksummed chunks, the node
//! layer's records included) at the shard's applied index, encoded as a
//! `Vec<Bytes>` of chunks. The engine sends the WAL's latest snapshot to
//! followers too far behind; [`ringkv_storage::ShardLog`] serves its data
//! from a spool file ([`SnapshotSpool`]) this module writes chunk by chunk
//! as it reads the export. The data is the size of the shard's whole state
//! (300 MB for a million keys of 256 B): kept in memory it made resident
//! memory grow with the data (issue 10's memory target); spooled, a node
//! holds about one chunk of it, and all of it only while a follower is sent
//! it. A spool that cannot be written (full or failing disk) abandons that
//! snapshot; the next one, [`crate::NodeConfig::snapshot_count`] entries
//! later, tries again.
//!
//! **Taking** (every [`crate::NodeConfig::snapshot_count`] applied
//! entries): make the store durable up to the applied index `s` (a
//! checkpoint: the WAL may drop entries only up to the store's durable
//! applied index), open an export at `s` and read it a few chunks per round
//! ([`crate::NodeConfig::snapshot_chunks_per_round`]) so a large shard never stalls the
//! loop (the export's read view keeps seeing `s` while applies go on);
//! then *stage* the snapshot. **Compacting**: once
//! [`crate::NodeConfig::snapshot_catch_up_entries`] more entries are
//! applied, compact the WAL up to `s` and hand the data to the shard log.
//! The WAL's snapshot index always equals the snapshot the data describes,
//! and a follower up to `catch_up_entries` behind still catches up from
//! the log.
//!
//! **Installing** (a follower's Ready carries a snapshot): restore the
//! store from it, durably, with a node record of the snapshot's metadata in
//! the same transaction; then record it in the WAL. A crash between the two
//! leaves a store ahead of its WAL, which `Node::open` repairs from that
//! record.
//!
//! **After a restart** the WAL's snapshot has no data in memory: the node
//! exports the store at its applied index (at or past the WAL's snapshot)
//! and compacts the WAL up to it, so peers can be sent a snapshot at once.

use bytes::Bytes;
use ringkv_consensus::{
    LogIndex, LogStorage, Membership, Replica, ShardId, Snapshot, decode_exact, encode_to_vec,
};
use ringkv_storage::mvcc::SnapshotExport;
use ringkv_storage::wal::SnapshotSpool;
use ringkv_storage::{Disk, WalError};

use super::{Node, snapshot_record};
use crate::cluster::ClusterTables;
use crate::engine::Engine;
use crate::error::NodeError;
use crate::io::{Clock, Transport};

/// A snapshot in the making.
#[derive(Debug)]
enum Taking<D: Disk> {
    /// Reading the export into the spool, a few chunks per round.
    Exporting {
        export: Box<SnapshotExport>,
        spool: SnapshotSpool<D>,
        index: LogIndex,
        membership: Membership,
    },
    /// Taken, waiting for the WAL to move far enough past it.
    Staged { index: LogIndex, membership: Membership, spool: SnapshotSpool<D> },
}

/// One shard's snapshot bookkeeping.
#[derive(Debug)]
pub(super) struct SnapshotState<D: Disk> {
    /// Applied index at the last snapshot started (or at open).
    taken_at: LogIndex,
    taking: Option<Taking<D>>,
}

impl<D: Disk> SnapshotState<D> {
    pub(super) fn new(applied: LogIndex) -> SnapshotState<D> {
        SnapshotState { taken_at: applied, taking: None }
    }

    /// Whether [`Node::maybe_snapshot`] has anything to do for a shard
    /// applied up to `applied`: a snapshot in progress, or one due every
    /// `count` entries. Cheap, so a round asks it of every shard.
    pub(super) fn has_work(&self, applied: LogIndex, count: u64) -> bool {
        self.taking.is_some() || applied.0.saturating_sub(self.taken_at.0) >= count
    }
}

impl<E: Engine, D: Disk, T: Transport, C: Clock> Node<E, D, T, C> {
    /// The shard's current state as snapshot data in a spool, with its
    /// index; `Ok(None)` if the spool cannot be written (the snapshot is
    /// then left without data: see the module docs).
    fn export(
        &mut self,
        shard: ShardId,
    ) -> Result<Option<(LogIndex, SnapshotSpool<D>)>, NodeError> {
        let export = self.store.snapshot(shard)?;
        let index = export.state().applied_index;
        let s = self.shards.get_mut(&shard).expect("the caller checked the shard is hosted");
        let Ok(mut spool) = s.replica.storage_mut().create_snapshot_spool(index) else {
            return Ok(None);
        };
        for chunk in export {
            if spool.push(&chunk?).is_err() {
                return Ok(None);
            }
        }
        Ok(Some((index, spool)))
    }

    /// Makes sure the shard log can hand out data for the WAL's snapshot
    /// (see the module docs: after a restart it cannot).
    pub(super) fn provide_snapshot_data(&mut self, shard: ShardId) -> Result<(), NodeError> {
        let Some(s) = self.shards.get(&shard) else { return Ok(()) };
        let wal_index = s.replica.storage().snapshot_meta().index;
        if wal_index == LogIndex::ZERO {
            return Ok(());
        }
        let Some((index, spool)) = self.export(shard)? else { return Ok(()) };
        if index > wal_index {
            let s = self.shards.get(&shard).expect("checked above");
            let Some(membership) = E::membership_at(&s.replica, index) else {
                // The replica cannot name the configuration there; the next
                // regular snapshot provides data instead.
                return Ok(());
            };
            self.store.checkpoint()?;
            self.wal.compact(shard, index, membership)?;
            self.wal.sync()?;
        } else if index < wal_index {
            return Err(NodeError::Corrupt {
                shard,
                what: format!(
                    "the store is applied up to {index}, behind the WAL's snapshot at {wal_index}"
                ),
            });
        }
        let s = self.shards.get_mut(&shard).expect("checked above");
        s.replica.storage_mut().set_snapshot_spool(index, spool);
        Ok(())
    }

    /// Starts a snapshot when enough entries were applied, reads some of
    /// it, and compacts the WAL behind a staged one once enough more were.
    pub(super) fn maybe_snapshot(&mut self, shard: ShardId) -> Result<(), NodeError> {
        let (count, margin) = (self.cfg.snapshot_count, self.cfg.snapshot_catch_up_entries);
        let Some(s) = self.shards.get(&shard) else { return Ok(()) };
        let applied = s.applied;
        let due = s.snapshot.taking.is_none() && s.snapshot.has_work(applied, count);
        if due && let Some(membership) = E::membership_at(&s.replica, applied) {
            self.store.checkpoint()?;
            let export = Box::new(self.store.snapshot(shard)?);
            let index = export.state().applied_index;
            debug_assert_eq!(index, applied, "the export sees every applied entry");
            let s = self.shards.get_mut(&shard).expect("checked above");
            // Without a spool this snapshot is skipped; the next is due
            // `snapshot_count` entries on.
            if let Ok(spool) = s.replica.storage_mut().create_snapshot_spool(index) {
                s.snapshot.taking = Some(Taking::Exporting { export, spool, index, membership });
            }
            s.snapshot.taken_at = index;
        }
        let s = self.shards.get_mut(&shard).expect("checked above");
        match s.snapshot.taking.take() {
            None => Ok(()),
            Some(Taking::Exporting { mut export, mut spool, index, membership }) => {
                let mut done = false;
                for _ in 0..self.cfg.snapshot_chunks_per_round {
                    match export.next() {
                        Some(chunk) => {
                            if spool.push(&chunk?).is_err() {
                                // Abandoned (dropping the spool removes it).
                                return Ok(());
                            }
                        }
                        None => {
                            done = true;
                            break;
                        }
                    }
                }
                s.snapshot.taking = Some(if done {
                    Taking::Staged { index, membership, spool }
                } else {
                    Taking::Exporting { export, spool, index, membership }
                });
                Ok(())
            }
            Some(Taking::Staged { index, membership, spool }) if applied.0 >= index.0 + margin => {
                match self.wal.compact(shard, index, membership) {
                    Ok(_) => {
                        s.replica.storage_mut().set_snapshot_spool(index, spool);
                        Ok(())
                    }
                    // Refusals change nothing: a snapshot installed
                    // meanwhile, or a conflicting record still buffered.
                    // The next snapshot will do.
                    Err(WalError::CompactionRefused { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            staged @ Some(Taking::Staged { .. }) => {
                s.snapshot.taking = staged;
                Ok(())
            }
        }
    }

    /// Restores the store from a snapshot the leader sent and records it in
    /// the WAL (buffered; the round's sync makes it durable).
    pub(super) fn install_snapshot(
        &mut self,
        shard: ShardId,
        snapshot: &Snapshot,
    ) -> Result<(), NodeError> {
        let meta = &snapshot.meta;
        let chunks = decode_exact::<Vec<Bytes>>(snapshot.data.clone())
            .map_err(|source| NodeError::Codec { what: "snapshot data", source })?;
        let record = encode_to_vec(meta);
        let name = snapshot_record(shard);
        let state =
            self.store.restore_with_node_records(shard, chunks, &[(name.as_str(), &record)])?;
        if state.applied_index != meta.index {
            return Err(NodeError::Corrupt {
                shard,
                what: format!(
                    "a snapshot for index {} holds the state at {}",
                    meta.index, state.applied_index
                ),
            });
        }
        self.wal.install_snapshot(shard, meta)?;
        let view = self.store.read()?;
        let tables = ClusterTables::load(&view, shard)?;
        let auth = crate::auth::AuthStore::load(&view, shard)?;
        drop(view);
        let s = self.shards.get_mut(&shard).expect("a Ready comes from a hosted shard");
        s.applied = meta.index;
        s.tables = tables;
        if !s.auth.enabled() || !auth.enabled() || s.auth.revision() != auth.revision() {
            // Users may be gone or changed: tokens are re-issued on demand.
            self.tokens.clear();
        }
        s.auth = auth;
        s.snapshot = SnapshotState::new(meta.index);
        s.snapshots_installed += 1;
        Ok(())
    }
}
