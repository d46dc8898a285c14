//! [`ShardLog`]: one shard's durable log as its consensus engine reads it.

use std::io;

use bytes::Bytes;
use ringkv_consensus::{
    Entry, Epoch, HardState, LogError, LogIndex, LogStorage, ShardId, Snapshot, SnapshotMeta,
    decode_exact,
};

use super::core::{SharedIndex, read_index};
use super::format::{Op, decode_record};
use super::index::{Index, Loc, ShardIndex};
use super::spool::SnapshotSpool;
use crate::disk::{Disk, DiskFile};

/// One shard's view of the WAL, implementing [`LogStorage`] for its engine.
///
/// The view shows exactly what is durable: the WAL applies records to it
/// when the batch holding them has been fdatasynced, never before. Recent
/// entries come from a per-shard in-memory cache
/// ([`super::WalOptions::cache_bytes_per_shard`]); older ones are read back
/// from their segment and checked against their CRC.
///
/// The WAL is the only writer: [`LogStorage::append`] and
/// [`LogStorage::set_hard_state`], which a node calls after persisting a
/// Ready, find the records already applied and do nothing.
/// [`LogStorage::install_snapshot`] keeps the snapshot's data (the WAL
/// stores only its metadata) so [`LogStorage::snapshot`] can hand it to
/// lagging followers, spooled to a file ([`SnapshotSpool`]) so that it
/// does not stay resident; [`ShardLog::set_snapshot_spool`] (or
/// [`ShardLog::set_snapshot_data`], in memory) does the same after a local
/// snapshot.
pub struct ShardLog<D: Disk> {
    shard: ShardId,
    index: SharedIndex<D::File>,
    disk: D,
    /// Data of the snapshot at the given index, if the caller provided it.
    snapshot_data: Option<(LogIndex, SnapshotData<D>)>,
    /// Spools this view created, to name the next one apart.
    spools_created: u64,
}

/// Where the data of the latest snapshot is.
enum SnapshotData<D: Disk> {
    /// In memory.
    Memory(Bytes),
    /// In a scratch file, read back when a follower is sent a snapshot.
    Spooled(SnapshotSpool<D>),
}

impl<D: Disk> std::fmt::Debug for ShardLog<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLog").field("shard", &self.shard).finish_non_exhaustive()
    }
}

impl<D: Disk> ShardLog<D> {
    pub(crate) fn new(shard: ShardId, index: SharedIndex<D::File>, disk: D) -> ShardLog<D> {
        ShardLog { shard, index, disk, snapshot_data: None, spools_created: 0 }
    }

    /// The shard this view belongs to.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Provides the state machine's data for the snapshot at `index`, served
    /// by [`LogStorage::snapshot`] while that is the latest snapshot.
    pub fn set_snapshot_data(&mut self, index: LogIndex, data: Bytes) {
        self.snapshot_data = Some((index, SnapshotData::Memory(data)));
    }

    /// An empty spool on this log's disk for this shard's snapshot at
    /// `index`, to fill and hand to [`ShardLog::set_snapshot_spool`].
    ///
    /// # Errors
    /// The spool file cannot be created.
    pub fn create_snapshot_spool(&mut self, index: LogIndex) -> io::Result<SnapshotSpool<D>> {
        self.spools_created += 1;
        SnapshotSpool::create(&self.disk, self.shard, index, self.spools_created)
    }

    /// As [`ShardLog::set_snapshot_data`], with the data in a spool file:
    /// read back only when a follower is sent this snapshot.
    pub fn set_snapshot_spool(&mut self, index: LogIndex, spool: SnapshotSpool<D>) {
        self.snapshot_data = Some((index, SnapshotData::Spooled(spool)));
    }

    /// Whether the latest snapshot's data is spooled to a file (rather than
    /// held in memory or missing).
    pub fn snapshot_spooled(&self) -> bool {
        matches!(self.snapshot_data, Some((_, SnapshotData::Spooled(_))))
    }

    fn with_shard<T>(&self, f: impl FnOnce(Option<&ShardIndex>) -> T) -> T {
        let index = read_index(&self.index);
        f(index.shards.get(&self.shard))
    }

    /// Reads entry `index` back from its segment.
    fn read_entry(
        &self,
        idx: &Index<D::File>,
        loc: Loc,
        index: LogIndex,
    ) -> Result<Entry, LogError> {
        let seg = idx.segments.get(&loc.segment).expect("live entries sit in live segments");
        let failed = |what: String| LogError::Failed {
            reason: format!(
                "reading entry {index} of shard {} from {} at byte {}: {what}",
                self.shard,
                self.disk.describe(&seg.name),
                loc.offset
            ),
        };
        let bytes = seg
            .file
            .read_vec(loc.offset, loc.len as usize)
            .map_err(|e| failed(format!("I/O error: {e}")))?;
        let record = decode_record(&bytes).map_err(|e| failed(format!("bad record: {e:?}")))?;
        match record.op {
            Op::Entry(e) if record.shard == self.shard && e.index == index => Ok(e),
            _ => Err(failed("the record there is not this entry".into())),
        }
    }
}

impl<D: Disk> LogStorage for ShardLog<D> {
    fn hard_state(&self) -> HardState {
        self.with_shard(|s| s.map(|s| s.shape.hard_state).unwrap_or_default())
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.with_shard(|s| s.map(|s| s.shape.snapshot.clone()).unwrap_or_default())
    }

    fn last_index(&self) -> LogIndex {
        self.with_shard(|s| s.map_or(LogIndex::ZERO, |s| s.shape.last_index()))
    }

    fn epoch(&self, index: LogIndex) -> Result<Epoch, LogError> {
        self.with_shard(|s| {
            let default = ShardIndex::default();
            let shape = &s.unwrap_or(&default).shape;
            let snap = &shape.snapshot;
            if index < snap.index {
                return Err(LogError::Compacted { index, first: snap.index.next() });
            }
            shape.epoch_at(index).ok_or(LogError::Unavailable { index, last: shape.last_index() })
        })
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, LogError> {
        let idx = read_index(&self.index);
        let default = ShardIndex::default();
        let s = idx.shards.get(&self.shard).unwrap_or(&default);
        let first = s.shape.snapshot.index.next();
        let last = s.shape.last_index();
        if lo < first {
            return Err(LogError::Compacted { index: lo, first });
        }
        if hi > last.next() {
            return Err(LogError::Unavailable { index: hi.prev(), last });
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut i = lo;
        while i < hi {
            let pos = s.shape.position(i).expect("within first..=last");
            let e = match s.cached(pos) {
                Some(e) => e.clone(),
                None => self.read_entry(&idx, s.locs[pos], i)?,
            };
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e);
            i = i.next();
        }
        Ok(out)
    }

    fn snapshot(&self) -> Result<Snapshot, LogError> {
        let meta = self.snapshot_meta();
        match &self.snapshot_data {
            Some((index, SnapshotData::Memory(data))) if *index == meta.index => {
                Ok(Snapshot { meta, data: data.clone() })
            }
            // A failed read is retried by the engine on a later heartbeat.
            Some((index, SnapshotData::Spooled(spool))) if *index == meta.index => spool
                .read()
                .map(|data| Snapshot { meta, data })
                .map_err(|_| LogError::SnapshotTemporarilyUnavailable),
            _ if meta.index == LogIndex::ZERO => Ok(Snapshot { meta, data: Bytes::new() }),
            _ => Err(LogError::SnapshotTemporarilyUnavailable),
        }
    }

    fn append(&mut self, _entries: &[Entry]) {
        // Applied by the WAL when its batch became durable.
    }

    fn set_hard_state(&mut self, _hard_state: HardState) {
        // Applied by the WAL when its batch became durable.
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        // Spooled so that a follower does not keep a copy of its whole
        // state in memory; in memory if the disk refuses (full, failing).
        let spooled = self.create_snapshot_spool(index).and_then(|mut spool| {
            let chunks = decode_exact::<Vec<Bytes>>(snapshot.data.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            for chunk in &chunks {
                spool.push(chunk)?;
            }
            Ok(spool)
        });
        self.snapshot_data = Some((
            index,
            match spooled {
                Ok(spool) => SnapshotData::Spooled(spool),
                Err(_) => SnapshotData::Memory(snapshot.data),
            },
        ));
    }
}
