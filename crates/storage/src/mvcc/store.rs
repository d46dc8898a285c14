//! The store: one redb database holding every shard of a node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use redb::backends::InMemoryBackend;
use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    WriteTransaction,
};
use ringkv_consensus::{LogIndex, ShardId};

use super::apply::{Limits, WriteTables, apply_command, lease_keys};
use super::backend::DiskBackend;
use super::changes::{PackedChanges, for_each_change};
use super::error::{MvccError, ReadError, StoreError};
use super::read::{KeyRange, check_range_request, get_at, range_at, read_revision};
use super::tables::{
    CHANGES, HISTORY, HistoryKey, LEASE_KEYS, LEASES, LeaseRecord, META, NODE, RECORDS, ShardMeta,
    VersionRecord, invert,
};
use super::types::{
    Command, Event, EventKind, KeyValue, LeaseId, LeaseInfo, RangeRequest, RangeResponse, Response,
    Revision,
};
use super::{
    CHECKPOINT_INTERVAL_APPLIES, CHECKPOINT_INTERVAL_BYTES, ENGINE_CACHE_BYTES, TXN_OPS_MAX,
};
use crate::disk::{Disk, DiskFile};

/// Settings of a store. Everything that shapes responses (`txn_ops_max`)
/// must be the same on every replica.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most compares, or operations per branch, in a transaction (etcd's
    /// `--max-txn-ops`).
    pub txn_ops_max: usize,
    /// A durable checkpoint after this many applied entries...
    pub checkpoint_interval_applies: u64,
    /// ...or after this many bytes written, whichever comes first.
    pub checkpoint_interval_bytes: u64,
    /// redb's page cache.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            txn_ops_max: TXN_OPS_MAX,
            checkpoint_interval_applies: CHECKPOINT_INTERVAL_APPLIES,
            checkpoint_interval_bytes: CHECKPOINT_INTERVAL_BYTES,
            cache_bytes: ENGINE_CACHE_BYTES,
        }
    }
}

/// A shard's counters as of one read or commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardState {
    /// The last log index applied.
    pub applied_index: LogIndex,
    /// The current revision.
    pub revision: Revision,
    /// The compacted revision (0 if never compacted).
    pub compacted_revision: Revision,
}

impl From<ShardMeta> for ShardState {
    fn from(m: ShardMeta) -> ShardState {
        ShardState {
            applied_index: m.applied,
            revision: m.revision,
            compacted_revision: m.compacted,
        }
    }
}

/// The result of applying one log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The entry's log index.
    pub index: LogIndex,
    /// The answer for the waiting client: a response or etcd's refusal.
    /// Either way the entry is applied (the applied index moved past it).
    pub result: Result<Response, MvccError>,
    /// Changes for watchers, in the order they were made; all share the
    /// response's revision. Empty if the command changed nothing.
    pub events: Vec<Event>,
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Whether the commit was a durable checkpoint (fsynced). Entries up to
    /// the applied index of every shard may then leave the WAL.
    pub durable: bool,
}

/// Bookkeeping of what is applied and what of it is durable.
#[derive(Debug, Default)]
struct Progress {
    applies_since_checkpoint: u64,
    bytes_since_checkpoint: u64,
    /// Applied index per shard as of the last commit.
    applied: HashMap<ShardId, LogIndex>,
    /// Applied index per shard as of the last durable commit.
    durable: HashMap<ShardId, LogIndex>,
}

/// The read view of the latest commit, shared by every read that starts
/// before the next one. Opening a view (a redb read transaction and its six
/// tables) was 12 % of a member's CPU under serializable gets at 256
/// clients (`docs/perf/README.md`); most reads now clone an `Arc`.
#[derive(Debug, Default)]
struct ViewCache {
    /// Commits so far. A view is cached only if no commit ended while it
    /// was being opened, so the cache never holds a view older than the
    /// latest commit.
    generation: u64,
    view: Option<Arc<ReadView>>,
}

/// Where the store's bytes live, to report its size.
#[derive(Debug)]
enum Location {
    /// A file of a [`Disk`].
    Disk(Arc<dyn DiskFile>),
    /// A file opened by path.
    Path(PathBuf),
    /// Memory: no file to measure.
    Memory,
}

/// The MVCC state machine of every shard a node hosts, in one redb database.
///
/// Writes go through [`MvccStore::write`] (group apply: many entries, of
/// many shards, in one engine transaction) or the one-shard shorthands
/// [`MvccStore::apply`] / [`MvccStore::apply_batch`]. Reads go through
/// [`MvccStore::read`], a consistent view that writes do not disturb.
/// All methods take `&self`; share the store in an `Arc`.
pub struct MvccStore {
    /// Before `db`: fields drop in order, and the cached view's read
    /// transaction must end before its database closes.
    views: Mutex<ViewCache>,
    db: Database,
    options: StoreOptions,
    progress: Mutex<Progress>,
    location: Location,
}

impl std::fmt::Debug for MvccStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MvccStore").field("options", &self.options).finish_non_exhaustive()
    }
}

impl MvccStore {
    /// Opens (or creates) the store in the file at `path`.
    ///
    /// After a crash this is the state of the last durable checkpoint; each
    /// shard's [`ShardState::applied_index`] says where WAL replay starts.
    ///
    /// # Errors
    /// The file cannot be opened or is not a store.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<MvccStore, StoreError> {
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path.as_ref())
            .map_err(StoreError::engine("open database"))?;
        MvccStore::init(db, options, Location::Path(path.as_ref().to_path_buf()))
    }

    /// Opens (or creates) the store in the file `name` of `disk`, so that
    /// every byte of it goes through the [`Disk`] trait: on a
    /// [`crate::SimDisk`], a simulated crash loses exactly what was not
    /// fdatasynced, as it does for the WAL.
    ///
    /// After a crash this is the state of the last durable checkpoint; each
    /// shard's [`ShardState::applied_index`] says where WAL replay starts.
    ///
    /// # Errors
    /// The file cannot be created or opened, or is not a store.
    pub fn open_on<D: Disk>(
        disk: &D,
        name: &str,
        options: StoreOptions,
    ) -> Result<MvccStore, StoreError> {
        let io = |during: &'static str| {
            move |e: std::io::Error| StoreError::engine(during)(redb::StorageError::Io(e))
        };
        let file = match disk.open(name) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = disk.create(name).map_err(io("create database file"))?;
                // The file must outlive a crash once redb commits into it.
                disk.sync_dir().map_err(io("sync database directory"))?;
                file
            }
            Err(e) => return Err(io("open database file")(e)),
        };
        let file = Arc::new(file);
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create_with_backend(DiskBackend::new(Arc::clone(&file)))
            .map_err(StoreError::engine("open database"))?;
        MvccStore::init(db, options, Location::Disk(file))
    }

    /// A store in memory, for tests, benchmarks and the simulator.
    ///
    /// # Errors
    /// The engine fails to initialise.
    pub fn open_in_memory(options: StoreOptions) -> Result<MvccStore, StoreError> {
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create_with_backend(InMemoryBackend::new())
            .map_err(StoreError::engine("open database"))?;
        MvccStore::init(db, options, Location::Memory)
    }

    fn init(
        db: Database,
        options: StoreOptions,
        location: Location,
    ) -> Result<MvccStore, StoreError> {
        let mut txn = db.begin_write().map_err(StoreError::engine("begin write"))?;
        txn.set_quick_repair(true);
        let mut progress = Progress::default();
        {
            let tables = WriteTables::open(&txn)?;
            tables.create_all()?;
            // Created here so that read views can open it before the first write.
            txn.open_table(NODE).map_err(StoreError::engine("open table"))?;
            for item in tables.meta.iter().map_err(StoreError::engine("scan meta"))? {
                let (k, v) = item.map_err(StoreError::engine("scan meta"))?;
                let shard = ShardId(k.value());
                let meta = ShardMeta::decode(shard, v.value())?;
                progress.applied.insert(shard, meta.applied);
                progress.durable.insert(shard, meta.applied);
            }
        }
        txn.commit().map_err(StoreError::engine("commit"))?;
        let views = Mutex::new(ViewCache::default());
        Ok(MvccStore { views, db, options, progress: Mutex::new(progress), location })
    }

    fn views(&self) -> MutexGuard<'_, ViewCache> {
        // Holds no invariant a panic could break halfway.
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits `txn` (see [`commit`]) and retires the cached read view,
    /// before anyone learns of the commit: every read that starts after
    /// this returns sees it. Retired even if the commit failed.
    fn commit(&self, txn: WriteTransaction, durable: bool) -> Result<(), StoreError> {
        let result = commit(txn, durable);
        let retired = {
            let mut views = self.views();
            views.generation += 1;
            views.view.take()
        };
        // Closing the retired view's read transaction (if this held its
        // last reference) happens outside the lock readers take.
        drop(retired);
        result
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        // A panic elsewhere cannot leave `Progress` half-updated in a way
        // that matters: it only schedules checkpoints.
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Bytes the store's file takes (etcd's `dbSize`; 0 in memory).
    ///
    /// # Errors
    /// The file's length cannot be read.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let io = |e| StoreError::engine("measure database file")(redb::StorageError::Io(e));
        match &self.location {
            Location::Disk(file) => file.len().map_err(io),
            Location::Path(path) => std::fs::metadata(path).map(|m| m.len()).map_err(io),
            Location::Memory => Ok(0),
        }
    }

    /// Bytes of the file holding live pages (etcd's `dbSizeInUse`): the
    /// rest is free pages redb reuses before it grows the file.
    ///
    /// Walks every table's tree and takes the write lock while it does:
    /// for status requests, not for hot paths.
    ///
    /// # Errors
    /// The engine failed.
    pub fn size_in_use_bytes(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::engine("begin write"))?;
        let stats = txn.stats().map_err(StoreError::engine("database stats"))?;
        let bytes = stats.allocated_pages() * stats.page_size() as u64;
        txn.abort().map_err(StoreError::engine("abort"))?;
        Ok(bytes)
    }

    /// A node-local record (see [`MvccStore::set_node_record`]).
    ///
    /// # Errors
    /// The engine failed.
    pub fn node_record(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::engine("begin read"))?;
        let table = txn.open_table(NODE).map_err(StoreError::engine("open table"))?;
        let value = table.get(name).map_err(StoreError::engine("read node record"))?;
        Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
    }

    /// Writes (or with `None` deletes) a node-local record, durably: the
    /// node's own identity and similar facts that belong to this node's
    /// disk, never to a shard's replicated state or its snapshots.
    ///
    /// # Errors
    /// The engine failed; the record may or may not be written.
    pub fn set_node_record(&self, name: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::engine("begin write"))?;
        {
            let mut table = txn.open_table(NODE).map_err(StoreError::engine("open table"))?;
            match value {
                Some(v) => table.insert(name, v).map(|_| ()),
                None => table.remove(name).map(|_| ()),
            }
            .map_err(StoreError::engine("write node record"))?;
        }
        let mut progress = self.progress();
        self.commit(txn, true)?;
        mark_durable(&mut progress);
        Ok(())
    }

    /// Runs `f` in one engine transaction and commits it: group apply.
    ///
    /// The transaction is durable (a checkpoint) when the entries or bytes
    /// applied since the last checkpoint reach the configured intervals;
    /// otherwise it is committed without fsync, since the WAL holds the
    /// entries. If `f` fails nothing of it is committed.
    ///
    /// # Errors
    /// `f`'s error, or the engine failed to commit.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut ApplyBatch<'_>) -> Result<R, StoreError>,
    ) -> Result<(R, CommitInfo), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::engine("begin write"))?;
        let (r, metas, applies, bytes) = {
            let mut batch = ApplyBatch {
                tables: WriteTables::open(&txn)?,
                changes: HashMap::new(),
                metas: HashMap::new(),
                limits: Limits { txn_ops_max: self.options.txn_ops_max },
                applies: 0,
                bytes: 0,
            };
            let r = f(&mut batch)?;
            for (shard, changes) in &mut batch.changes {
                changes.flush(&mut batch.tables.changes, shard.0)?;
            }
            for (shard, meta) in &batch.metas {
                batch
                    .tables
                    .meta
                    .insert(shard.0, meta.encode().as_slice())
                    .map_err(StoreError::engine("write meta"))?;
            }
            (r, batch.metas, batch.applies, batch.bytes)
        };
        let mut progress = self.progress();
        let durable = progress.applies_since_checkpoint + applies
            >= self.options.checkpoint_interval_applies
            || progress.bytes_since_checkpoint + bytes >= self.options.checkpoint_interval_bytes;
        self.commit(txn, durable)?;
        progress.applies_since_checkpoint += applies;
        progress.bytes_since_checkpoint += bytes;
        for (shard, meta) in metas {
            progress.applied.insert(shard, meta.applied);
        }
        if durable {
            mark_durable(&mut progress);
        }
        Ok((r, CommitInfo { durable }))
    }

    /// Applies one entry of `shard`.
    ///
    /// # Errors
    /// The index is not the next one, or the engine failed.
    pub fn apply(
        &self,
        shard: ShardId,
        index: LogIndex,
        command: &Command,
    ) -> Result<Applied, StoreError> {
        self.write(|b| b.apply(shard, index, command)).map(|(a, _)| a)
    }

    /// Applies consecutive entries of `shard` in one engine transaction.
    ///
    /// # Errors
    /// An index is not the next one, or the engine failed; then none of
    /// the entries is applied.
    pub fn apply_batch(
        &self,
        shard: ShardId,
        entries: &[(LogIndex, Command)],
    ) -> Result<Vec<Applied>, StoreError> {
        self.write(|b| entries.iter().map(|(i, c)| b.apply(shard, *i, c)).collect()).map(|(a, _)| a)
    }

    /// Makes everything committed so far durable (fsync), now.
    ///
    /// # Errors
    /// The engine failed; the store must not be trusted to have persisted
    /// anything since the last successful checkpoint.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::engine("begin write"))?;
        let mut progress = self.progress();
        self.commit(txn, true)?;
        mark_durable(&mut progress);
        Ok(())
    }

    /// The applied index of `shard` as of the last commit.
    pub fn applied_index(&self, shard: ShardId) -> LogIndex {
        self.progress().applied.get(&shard).copied().unwrap_or(LogIndex::ZERO)
    }

    /// The applied index of `shard` as of the last durable checkpoint: after
    /// a crash the store comes back at least this far, so the WAL may drop
    /// the shard's entries up to here (and no further).
    pub fn durable_applied_index(&self, shard: ShardId) -> LogIndex {
        self.progress().durable.get(&shard).copied().unwrap_or(LogIndex::ZERO)
    }

    /// Shards with any state in the store.
    pub fn shards(&self) -> Vec<ShardId> {
        let mut v: Vec<_> = self.progress().applied.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Deletes every trace of `shard` (after it moved away), durably.
    ///
    /// # Errors
    /// The engine failed; nothing was deleted.
    pub fn remove_shard(&self, shard: ShardId) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::engine("begin write"))?;
        {
            let mut tables = WriteTables::open(&txn)?;
            tables.clear_shard(shard.0)?;
            tables.meta.remove(shard.0).map_err(StoreError::engine("remove meta"))?;
        }
        let mut progress = self.progress();
        self.commit(txn, true)?;
        mark_durable(&mut progress);
        progress.applied.remove(&shard);
        progress.durable.remove(&shard);
        Ok(())
    }

    /// A consistent view of every shard as of now; later writes do not
    /// change it. Hold it briefly: it pins the pages it sees. Reads that
    /// start between two commits share one view.
    ///
    /// # Errors
    /// The engine failed.
    pub fn read(&self) -> Result<Arc<ReadView>, StoreError> {
        let generation = {
            let views = self.views();
            if let Some(view) = &views.view {
                return Ok(Arc::clone(view));
            }
            views.generation
        };
        let view = Arc::new(ReadView::new(
            self.db.begin_read().map_err(StoreError::engine("begin read"))?,
        )?);
        let mut views = self.views();
        if views.generation == generation && views.view.is_none() {
            views.view = Some(Arc::clone(&view));
        }
        Ok(view)
    }

    /// Shorthand for a range on a fresh [`ReadView`].
    ///
    /// # Errors
    /// See [`ReadView::range`].
    pub fn range(&self, shard: ShardId, req: &RangeRequest) -> Result<RangeResponse, ReadError> {
        self.read()?.range(shard, req)
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// Commits a snapshot restore of `shard` durably and records that the
    /// shard is now applied (and durable) up to `applied`.
    pub(crate) fn commit_restore(
        &self,
        txn: WriteTransaction,
        shard: ShardId,
        applied: LogIndex,
    ) -> Result<(), StoreError> {
        let mut progress = self.progress();
        self.commit(txn, true)?;
        mark_durable(&mut progress);
        progress.applied.insert(shard, applied);
        progress.durable.insert(shard, applied);
        Ok(())
    }
}

fn mark_durable(progress: &mut Progress) {
    progress.applies_since_checkpoint = 0;
    progress.bytes_since_checkpoint = 0;
    progress.durable.clone_from(&progress.applied);
}

/// Commits `txn`, durably (fsync, and quick-repair bookkeeping so that
/// reopening after a crash needs no full scan) or not.
pub(crate) fn commit(mut txn: WriteTransaction, durable: bool) -> Result<(), StoreError> {
    if durable {
        txn.set_quick_repair(true);
    } else {
        txn.set_durability(Durability::None).map_err(StoreError::engine("set durability"))?;
    }
    txn.commit().map_err(StoreError::engine("commit"))
}

/// One engine transaction of applies, possibly to many shards.
pub struct ApplyBatch<'t> {
    tables: WriteTables<'t>,
    /// Change log entries per shard, written as one row each at commit.
    changes: HashMap<ShardId, PackedChanges>,
    /// Counters of the shards touched, written back once at commit.
    metas: HashMap<ShardId, ShardMeta>,
    limits: Limits,
    applies: u64,
    bytes: u64,
}

impl std::fmt::Debug for ApplyBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyBatch").field("applies", &self.applies).finish_non_exhaustive()
    }
}

impl ApplyBatch<'_> {
    fn meta(&mut self, shard: ShardId) -> Result<&mut ShardMeta, StoreError> {
        if !self.metas.contains_key(&shard) {
            let meta =
                match self.tables.meta.get(shard.0).map_err(StoreError::engine("read meta"))? {
                    Some(v) => ShardMeta::decode(shard, v.value())?,
                    None => ShardMeta::default(),
                };
            self.metas.insert(shard, meta);
        }
        Ok(self.metas.get_mut(&shard).expect("inserted above"))
    }

    fn advance(&mut self, shard: ShardId, index: LogIndex) -> Result<ShardMeta, StoreError> {
        let meta = self.meta(shard)?;
        if index != meta.applied.next() {
            return Err(StoreError::OutOfOrder { shard, applied: meta.applied, index });
        }
        Ok(*meta)
    }

    /// Applies entry `index` of `shard`, which must follow the shard's
    /// applied index.
    ///
    /// # Errors
    /// [`StoreError::OutOfOrder`], or the engine failed.
    pub fn apply(
        &mut self,
        shard: ShardId,
        index: LogIndex,
        command: &Command,
    ) -> Result<Applied, StoreError> {
        let mut meta = self.advance(shard, index)?;
        let changes = self.changes.entry(shard).or_default();
        let outcome =
            apply_command(&mut self.tables, changes, shard.0, &mut meta, command, self.limits)?;
        meta.applied = index;
        self.metas.insert(shard, meta);
        self.applies += 1;
        self.bytes += outcome.bytes;
        Ok(Applied { index, result: outcome.result, events: outcome.events })
    }

    /// Marks entry `index` of `shard` applied without a command (a no-op or
    /// a membership entry), so a restart does not replay it.
    ///
    /// # Errors
    /// [`StoreError::OutOfOrder`], or the engine failed.
    pub fn skip(&mut self, shard: ShardId, index: LogIndex) -> Result<(), StoreError> {
        let mut meta = self.advance(shard, index)?;
        meta.applied = index;
        self.metas.insert(shard, meta);
        self.applies += 1;
        Ok(())
    }

    /// Writes (or with `None` deletes) the record `name` of `shard` in this
    /// batch: a fact the node layer replicates through the shard's log (its
    /// member table, alarms). Records travel with the shard's snapshots and
    /// are replaced by a restore.
    ///
    /// # Errors
    /// The engine failed.
    pub fn set_record(
        &mut self,
        shard: ShardId,
        name: &str,
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        match value {
            Some(v) => self.tables.records.open_mut()?.insert((shard.0, name), v).map(|_| ()),
            None => self.tables.records.open_mut()?.remove((shard.0, name)).map(|_| ()),
        }
        .map_err(StoreError::engine("write record"))?;
        self.bytes += name.len() as u64 + value.map_or(0, |v| v.len() as u64);
        Ok(())
    }

    /// The record `name` of `shard`, as this batch has left it so far.
    ///
    /// # Errors
    /// The engine failed.
    pub fn record(&self, shard: ShardId, name: &str) -> Result<Option<Bytes>, StoreError> {
        let value = self
            .tables
            .records
            .open()?
            .get((shard.0, name))
            .map_err(StoreError::engine("read record"))?;
        Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
    }

    /// The keys attached to lease `id` of `shard`, as this batch has left
    /// them so far, in key order (none for an unknown lease): for checks the
    /// node layer makes before applying a command (a user's right to
    /// revoke a lease, or to attach a key to it).
    ///
    /// # Errors
    /// The engine failed.
    pub fn lease_keys(&self, shard: ShardId, id: LeaseId) -> Result<Vec<Bytes>, StoreError> {
        super::apply::lease_keys(self.tables.lease_keys.open()?, shard.0, id)
    }

    /// The counters of `shard` including this batch's applies so far.
    ///
    /// # Errors
    /// The engine failed.
    pub fn shard_state(&mut self, shard: ShardId) -> Result<ShardState, StoreError> {
        Ok((*self.meta(shard)?).into())
    }
}

/// A consistent read-only view of the store (a redb read transaction).
pub struct ReadView {
    _txn: ReadTransaction,
    meta: ReadOnlyTable<u64, &'static [u8]>,
    pub(crate) history: ReadOnlyTable<HistoryKey, &'static [u8]>,
    pub(crate) changes: ReadOnlyTable<(u64, u64, u32), &'static [u8]>,
    pub(crate) leases: ReadOnlyTable<(u64, i64), &'static [u8]>,
    pub(crate) lease_keys: ReadOnlyTable<(u64, i64, &'static [u8]), ()>,
    pub(crate) records: ReadOnlyTable<(u64, &'static str), &'static [u8]>,
}

impl std::fmt::Debug for ReadView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadView").finish_non_exhaustive()
    }
}

impl ReadView {
    fn new(txn: ReadTransaction) -> Result<ReadView, StoreError> {
        let e = || StoreError::engine("open table");
        Ok(ReadView {
            meta: txn.open_table(META).map_err(e())?,
            history: txn.open_table(HISTORY).map_err(e())?,
            changes: txn.open_table(CHANGES).map_err(e())?,
            leases: txn.open_table(LEASES).map_err(e())?,
            lease_keys: txn.open_table(LEASE_KEYS).map_err(e())?,
            records: txn.open_table(RECORDS).map_err(e())?,
            _txn: txn,
        })
    }

    pub(crate) fn meta(&self, shard: ShardId) -> Result<ShardMeta, StoreError> {
        match self.meta.get(shard.0).map_err(StoreError::engine("read meta"))? {
            Some(v) => ShardMeta::decode(shard, v.value()),
            None => Ok(ShardMeta::default()),
        }
    }

    /// The record `name` of `shard` in this view (see [`ApplyBatch::set_record`]).
    ///
    /// # Errors
    /// The engine failed.
    pub fn record(&self, shard: ShardId, name: &str) -> Result<Option<Bytes>, StoreError> {
        let value = self.records.get((shard.0, name)).map_err(StoreError::engine("read record"))?;
        Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
    }

    /// Every record of `shard` whose name starts with `prefix`, in name order.
    ///
    /// # Errors
    /// The engine failed.
    pub fn records(
        &self,
        shard: ShardId,
        prefix: &str,
    ) -> Result<Vec<(String, Bytes)>, StoreError> {
        let lo: (u64, &str) = (shard.0, prefix);
        let iter = self
            .records
            .range::<(u64, &str)>((std::ops::Bound::Included(lo), std::ops::Bound::Unbounded))
            .map_err(StoreError::engine("range records"))?;
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(StoreError::engine("read records"))?;
            let (s, name) = k.value();
            if s != shard.0 || !name.starts_with(prefix) {
                break;
            }
            out.push((name.to_owned(), Bytes::copy_from_slice(v.value())));
        }
        Ok(out)
    }

    /// The shard's counters in this view.
    ///
    /// # Errors
    /// The engine failed or the record is corrupt.
    pub fn shard_state(&self, shard: ShardId) -> Result<ShardState, StoreError> {
        self.meta(shard).map(ShardState::from)
    }

    /// etcd's Range on `shard`.
    ///
    /// # Errors
    /// [`MvccError::EmptyKey`], [`MvccError::FutureRevision`],
    /// [`MvccError::Compacted`], or the store failed.
    pub fn range(&self, shard: ShardId, req: &RangeRequest) -> Result<RangeResponse, ReadError> {
        check_range_request(req)?;
        let meta = self.meta(shard)?;
        let rev = read_revision(&meta, meta.revision, req.revision)?;
        Ok(range_at(&self.history, shard.0, req, rev, meta.revision)?)
    }

    /// The changes to keys in `[key, range_end)` from revision `start` on,
    /// in revision order and, within a revision, in the order they were
    /// made: what a watcher starting at `start` must replay before it
    /// follows live events. Each event carries its previous version when
    /// that is still stored.
    ///
    /// Returns whole revisions only, stopping once at least `events_max`
    /// events are collected, and the revision to continue from.
    ///
    /// # Errors
    /// [`MvccError::Compacted`] if `start` is below the compacted revision
    /// (a watcher must then be canceled with the compacted revision, as in
    /// etcd), or the store failed.
    pub fn events(
        &self,
        shard: ShardId,
        start: Revision,
        key: &Bytes,
        range_end: &Bytes,
        events_max: usize,
    ) -> Result<(Vec<Event>, Revision), ReadError> {
        let meta = self.meta(shard)?;
        if start < meta.compacted {
            return Err(MvccError::Compacted { requested: start, compacted: meta.compacted }.into());
        }
        let range = KeyRange::new(key, range_end);
        let first = start.0.max(1) as u64;
        let mut events = Vec::new();
        let mut resume = Revision(meta.revision.0 + 1).max(start);
        for_each_change(&self.changes, shard.0, (first, 0), u64::MAX, |rev, _, changed| {
            let rev = rev as i64;
            if events.len() >= events_max
                && events.last().is_some_and(|e: &Event| e.kv.mod_revision.0 != rev)
            {
                resume = Revision(rev);
                return Ok(false);
            }
            if !range.contains(changed) {
                return Ok(true);
            }
            let record = self
                .history
                .get((shard.0, changed, invert(rev)))
                .map_err(StoreError::engine("read history"))?
                .ok_or_else(|| StoreError::Corrupt {
                    table: "mvcc_changes",
                    shard,
                    detail: format!("change of {changed:?} at {rev} has no version"),
                })?;
            let record = VersionRecord::decode(shard.0, record.value(), true)?;
            let prev_kv = get_at(&self.history, shard.0, changed, rev - 1, true)?;
            let (kind, kv) = if record.tombstone {
                let kv = KeyValue {
                    key: Bytes::copy_from_slice(changed),
                    mod_revision: Revision(rev),
                    ..KeyValue::default()
                };
                (EventKind::Delete, kv)
            } else {
                (EventKind::Put, record.to_kv(changed, rev))
            };
            events.push(Event { kind, kv, prev_kv });
            Ok(true)
        })?;
        Ok((events, resume))
    }

    /// A lease's TTLs, and its keys if `keys` (etcd's LeaseTimeToLive; the
    /// leader replaces the remaining TTL by its live deadline).
    ///
    /// # Errors
    /// [`MvccError::LeaseNotFound`], or the store failed.
    pub fn lease(&self, shard: ShardId, id: LeaseId, keys: bool) -> Result<LeaseInfo, ReadError> {
        let record =
            match self.leases.get((shard.0, id.0)).map_err(StoreError::engine("read lease"))? {
                Some(v) => LeaseRecord::decode(shard.0, v.value())?,
                None => return Err(MvccError::LeaseNotFound { lease: id }.into()),
            };
        let keys = if keys { lease_keys(&self.lease_keys, shard.0, id)? } else { Vec::new() };
        Ok(LeaseInfo {
            id,
            granted_ttl: record.granted_ttl,
            remaining_ttl: record.remaining_ttl,
            keys,
        })
    }

    /// Every lease of `shard`, in id order, without keys (etcd's
    /// LeaseLeases; the leader also uses it to rebuild its expiry clocks).
    ///
    /// # Errors
    /// The store failed.
    pub fn leases(&self, shard: ShardId) -> Result<Vec<LeaseInfo>, StoreError> {
        let iter = self
            .leases
            .range((shard.0, i64::MIN)..=(shard.0, i64::MAX))
            .map_err(StoreError::engine("range leases"))?;
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(StoreError::engine("read leases"))?;
            let record = LeaseRecord::decode(shard.0, v.value())?;
            out.push(LeaseInfo {
                id: LeaseId(k.value().1),
                granted_ttl: record.granted_ttl,
                remaining_ttl: record.remaining_ttl,
                keys: Vec::<Bytes>::new(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_views_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<MvccStore>();
        send::<ReadView>();
        send::<crate::mvcc::SnapshotExport>();
    }

    /// Apply batches open the lease and record tables only when they use
    /// them; a read view opens every table, so a new store must have
    /// created them all before its first write.
    #[test]
    fn a_new_store_reads_leases_and_records_before_any_were_written() {
        let store = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
        let shard = ShardId(3);
        let put = Command::Put(crate::mvcc::PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        });
        store.apply(shard, LogIndex(1), &put).unwrap();
        let view = store.read().unwrap();
        assert_eq!(view.record(shard, "members").unwrap(), None);
        assert!(view.leases(shard).unwrap().is_empty());
        view.hash(shard).unwrap();
    }
}
