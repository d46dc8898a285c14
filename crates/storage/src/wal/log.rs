//! [`ShardLog`]: one shard's durable log as its consensus engine reads it.

use bytes::Bytes;
use ringkv_consensus::{
    Entry, Epoch, HardState, LogError, LogIndex, LogStorage, ShardId, Snapshot, SnapshotMeta,
};

use super::core::{SharedIndex, read_index};
use super::format::{Op, decode_record};
use super::index::{Index, Loc, ShardIndex};
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
/// lagging followers; [`ShardLog::set_snapshot_data`] does the same after a
/// local snapshot.
pub struct ShardLog<D: Disk> {
    shard: ShardId,
    index: SharedIndex<D::File>,
    disk: D,
    /// Data of the snapshot at the given index, if the caller provided it.
    snapshot_data: Option<(LogIndex, Bytes)>,
}

impl<D: Disk> std::fmt::Debug for ShardLog<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLog").field("shard", &self.shard).finish_non_exhaustive()
    }
}

impl<D: Disk> ShardLog<D> {
    pub(crate) fn new(shard: ShardId, index: SharedIndex<D::File>, disk: D) -> ShardLog<D> {
        ShardLog { shard, index, disk, snapshot_data: None }
    }

    /// The shard this view belongs to.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Provides the state machine's data for the snapshot at `index`, served
    /// by [`LogStorage::snapshot`] while that is the latest snapshot.
    pub fn set_snapshot_data(&mut self, index: LogIndex, data: Bytes) {
        self.snapshot_data = Some((index, data));
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
            Some((index, data)) if *index == meta.index => {
                Ok(Snapshot { meta, data: data.clone() })
            }
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
        self.snapshot_data = Some((snapshot.meta.index, snapshot.data));
    }
}
