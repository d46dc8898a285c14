//! The log as an engine sees it: [`LogStorage`], and [`MemoryLog`] for tests.
//!
//! The engine keeps entries it has not yet seen persisted in memory itself;
//! everything acknowledged through `on_persisted` is read back from here.
//! The caller (node, simulator, tests) writes to the storage after the data
//! is durable, then acknowledges.

use bytes::Bytes;

use crate::entry::{Entry, HardState, Snapshot, SnapshotMeta};
use crate::membership::Membership;
use crate::types::{Epoch, LogIndex};

/// Why the log could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The index lies in the prefix replaced by a snapshot.
    #[error("log index {index} is compacted (first available index is {first})")]
    Compacted {
        /// The index asked for.
        index: LogIndex,
        /// The first index still in the log.
        first: LogIndex,
    },
    /// The index is past the end of the log.
    #[error("log index {index} is unavailable (last index is {last})")]
    Unavailable {
        /// The index asked for.
        index: LogIndex,
        /// The last index in the log.
        last: LogIndex,
    },
    /// No snapshot can be produced right now; the engine retries later.
    #[error("no snapshot is available yet; retry later")]
    SnapshotTemporarilyUnavailable,
    /// The underlying storage failed (I/O, corruption).
    #[error("log storage failed: {reason}")]
    Failed {
        /// What failed, for operators.
        reason: String,
    },
}

/// Read access to a replica's durable log, plus the writes its caller makes
/// after persisting a Ready.
///
/// Invariants: `first_index() == snapshot_meta().index + 1`;
/// `last_index() >= snapshot_meta().index`; `epoch(snapshot_meta().index)`
/// answers even though that entry is compacted.
pub trait LogStorage {
    /// The durable hard state.
    fn hard_state(&self) -> HardState;

    /// Metadata of the latest snapshot (index 0 and the initial membership
    /// for a fresh replica).
    fn snapshot_meta(&self) -> SnapshotMeta;

    /// The first index still present as an entry.
    fn first_index(&self) -> LogIndex {
        self.snapshot_meta().index.next()
    }

    /// The last index in the log (the snapshot index if there are no entries).
    fn last_index(&self) -> LogIndex;

    /// The epoch of the entry at `index`.
    ///
    /// # Errors
    /// `Compacted` below the snapshot index, `Unavailable` past the end.
    fn epoch(&self, index: LogIndex) -> Result<Epoch, LogError>;

    /// Entries in `[lo, hi)`, stopping once their total `size_bytes` exceeds
    /// `max_bytes` — but always at least one entry when `lo < hi`.
    ///
    /// # Errors
    /// `Compacted` if `lo` is compacted, `Unavailable` if `hi - 1` is past the end.
    fn entries(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, LogError>;

    /// The latest snapshot with its data, to send to a lagging follower.
    ///
    /// # Errors
    /// `SnapshotTemporarilyUnavailable` while one is being made.
    fn snapshot(&self) -> Result<Snapshot, LogError>;

    /// Appends entries after they are durable, first dropping every entry at
    /// or after `entries[0].index`.
    ///
    /// # Panics
    /// If the entries would leave a gap or overwrite the snapshot.
    fn append(&mut self, entries: &[Entry]);

    /// Records the durable hard state.
    fn set_hard_state(&mut self, hard_state: HardState);

    /// Replaces the log with a snapshot received from the leader: every entry
    /// up to the snapshot index is dropped, and so is the rest unless it
    /// agrees with the snapshot's last entry.
    fn install_snapshot(&mut self, snapshot: Snapshot);
}

/// A [`LogStorage`] held entirely in memory, for tests and the simulator's
/// reference runs.
#[derive(Clone, Debug, Default)]
pub struct MemoryLog {
    hard_state: HardState,
    snapshot: Snapshot,
    /// `entries[i].index == snapshot.meta.index + 1 + i`.
    entries: Vec<Entry>,
}

impl MemoryLog {
    /// A fresh log whose initial configuration is `membership`.
    pub fn new(membership: Membership) -> MemoryLog {
        MemoryLog {
            snapshot: Snapshot {
                meta: SnapshotMeta { membership, ..SnapshotMeta::default() },
                data: Bytes::new(),
            },
            ..MemoryLog::default()
        }
    }

    /// Takes a snapshot of the applied state at `index` (which must be in the
    /// log) and drops the entries it covers.
    ///
    /// # Errors
    /// `Compacted` if `index` is at or below the current snapshot,
    /// `Unavailable` if it is past the end.
    pub fn compact(
        &mut self,
        index: LogIndex,
        membership: Membership,
        data: Bytes,
    ) -> Result<(), LogError> {
        if index <= self.snapshot.meta.index {
            return Err(LogError::Compacted { index, first: self.first_index() });
        }
        let epoch = self.epoch(index)?;
        let keep_from = (index.0 - self.snapshot.meta.index.0) as usize;
        self.entries.drain(..keep_from);
        self.snapshot = Snapshot { meta: SnapshotMeta { index, epoch, membership }, data };
        Ok(())
    }

    /// Every entry still present, for assertions.
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    fn offset(&self, index: LogIndex) -> usize {
        (index.0 - self.snapshot.meta.index.0 - 1) as usize
    }
}

impl LogStorage for MemoryLog {
    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.meta.clone()
    }

    // Overridden because the default clones the snapshot's membership, and
    // engines ask for the first index on their hot path.
    fn first_index(&self) -> LogIndex {
        self.snapshot.meta.index.next()
    }

    fn last_index(&self) -> LogIndex {
        self.snapshot.meta.index.plus(self.entries.len() as u64)
    }

    fn epoch(&self, index: LogIndex) -> Result<Epoch, LogError> {
        let snap = &self.snapshot.meta;
        if index == snap.index {
            return Ok(snap.epoch);
        }
        if index < snap.index {
            return Err(LogError::Compacted { index, first: self.first_index() });
        }
        if index > self.last_index() {
            return Err(LogError::Unavailable { index, last: self.last_index() });
        }
        Ok(self.entries[self.offset(index)].epoch)
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>, LogError> {
        if lo < self.first_index() {
            return Err(LogError::Compacted { index: lo, first: self.first_index() });
        }
        if hi > self.last_index().next() {
            return Err(LogError::Unavailable { index: hi.prev(), last: self.last_index() });
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for e in &self.entries[self.offset(lo)..self.offset(hi).max(self.offset(lo))] {
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn snapshot(&self) -> Result<Snapshot, LogError> {
        Ok(self.snapshot.clone())
    }

    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.snapshot.meta.index,
            "append at {} would overwrite the snapshot at {}",
            first.index,
            self.snapshot.meta.index
        );
        assert!(
            first.index <= self.last_index().next(),
            "append at {} leaves a gap after {}",
            first.index,
            self.last_index()
        );
        debug_assert!(
            entries.windows(2).all(|w| w[1].index == w[0].index.next()),
            "entries must be contiguous"
        );
        let keep = self.offset(first.index);
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = &snapshot.meta;
        let agrees = self.epoch(meta.index).ok() == Some(meta.epoch);
        if agrees && meta.index > self.snapshot.meta.index {
            let drop = self.offset(meta.index) + 1;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.snapshot = snapshot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryKind;
    use crate::types::NodeId;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            epoch: Epoch::term(term),
            kind: EntryKind::Command,
            payload: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut log = MemoryLog::new(Membership::new([NodeId(1)]));
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        log.append(&[entry(2, 2)]);
        assert_eq!(log.last_index(), LogIndex(2));
        assert_eq!(log.epoch(LogIndex(2)), Ok(Epoch::term(2)));
        assert_eq!(
            log.epoch(LogIndex(3)),
            Err(LogError::Unavailable { index: LogIndex(3), last: LogIndex(2) })
        );
    }

    #[test]
    fn entries_respect_byte_limit_but_return_one() {
        let mut log = MemoryLog::new(Membership::new([NodeId(1)]));
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        assert_eq!(log.entries(LogIndex(1), LogIndex(4), 0).unwrap().len(), 1);
        assert_eq!(log.entries(LogIndex(1), LogIndex(4), u64::MAX).unwrap().len(), 3);
        assert_eq!(log.entries(LogIndex(2), LogIndex(2), u64::MAX).unwrap().len(), 0);
    }

    #[test]
    fn compaction_keeps_snapshot_epoch() {
        let mut log = MemoryLog::new(Membership::new([NodeId(1)]));
        log.append(&[entry(1, 1), entry(2, 2), entry(3, 2)]);
        log.compact(LogIndex(2), Membership::new([NodeId(1)]), Bytes::new()).unwrap();
        assert_eq!(log.first_index(), LogIndex(3));
        assert_eq!(log.epoch(LogIndex(2)), Ok(Epoch::term(2)));
        assert!(matches!(log.epoch(LogIndex(1)), Err(LogError::Compacted { .. })));
        assert!(matches!(
            log.entries(LogIndex(2), LogIndex(4), 10),
            Err(LogError::Compacted { .. })
        ));
    }

    #[test]
    fn install_snapshot_keeps_agreeing_suffix_only() {
        let mut log = MemoryLog::new(Membership::new([NodeId(1)]));
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        let meta = SnapshotMeta {
            index: LogIndex(2),
            epoch: Epoch::term(1),
            membership: Membership::new([NodeId(1)]),
        };
        log.install_snapshot(Snapshot { meta: meta.clone(), data: Bytes::new() });
        assert_eq!(log.last_index(), LogIndex(3));
        let other = SnapshotMeta { index: LogIndex(3), epoch: Epoch::term(5), ..meta };
        log.install_snapshot(Snapshot { meta: other, data: Bytes::new() });
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.all_entries().len(), 0);
    }
}
