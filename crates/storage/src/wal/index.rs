//! The in-memory index of what the WAL holds: per shard its hard state,
//! snapshot metadata, and where each live entry sits in which segment; per
//! segment how many live entries it holds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ringkv_consensus::{Entry, Epoch, HardState, LogIndex, ShardId, SnapshotMeta};

use super::format::Op;

/// Whether an operation comes from a caller (and must obey the log rules)
/// or from replaying segments (which may start in the middle of history).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Refuse gaps and writes below the snapshot.
    Strict,
    /// Recovery: older segments may be deleted, so an entry may follow a
    /// gap whose entries were all compacted later; restart the run there
    /// and let the final check decide.
    Replay,
}

/// Why an operation does not fit the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ShapeError {
    /// The entry would leave a gap after `next - 1`.
    Gap { next: LogIndex },
    /// The entry is covered by the snapshot at `snapshot`.
    BelowSnapshot { snapshot: LogIndex },
}

/// Entries an operation dropped from the stored log: `front` from its
/// start, `back` from its end.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) front: usize,
    pub(crate) back: usize,
}

/// The shape of one shard's log: what validation and `LogStorage` answers
/// need, without entry contents or positions.
///
/// Invariant (outside replay): `epochs` is empty or `first ==
/// snapshot.index + 1`; `epochs[k]` is the epoch of entry `first + k`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogShape {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: SnapshotMeta,
    pub(crate) first: LogIndex,
    pub(crate) epochs: VecDeque<Epoch>,
}

impl Default for LogShape {
    fn default() -> LogShape {
        LogShape {
            hard_state: HardState::default(),
            snapshot: SnapshotMeta::default(),
            first: LogIndex(1),
            epochs: VecDeque::new(),
        }
    }
}

impl LogShape {
    pub(crate) fn last_index(&self) -> LogIndex {
        if self.epochs.is_empty() {
            self.snapshot.index
        } else {
            self.first.plus(self.epochs.len() as u64 - 1)
        }
    }

    /// The epoch of entry `index`, including the snapshot's last entry.
    pub(crate) fn epoch_at(&self, index: LogIndex) -> Option<Epoch> {
        if index == self.snapshot.index {
            return Some(self.snapshot.epoch);
        }
        let pos = index.0.checked_sub(self.first.0)?;
        self.epochs.get(usize::try_from(pos).ok()?).copied()
    }

    /// Position of `index` in `epochs`, if stored.
    pub(crate) fn position(&self, index: LogIndex) -> Option<usize> {
        let pos = usize::try_from(index.0.checked_sub(self.first.0)?).ok()?;
        (pos < self.epochs.len()).then_some(pos)
    }

    /// Drops every entry at or after `index`, then appends it.
    pub(crate) fn apply_entry(
        &mut self,
        index: LogIndex,
        epoch: Epoch,
        mode: Mode,
    ) -> Result<Dropped, ShapeError> {
        if index <= self.snapshot.index {
            return Err(ShapeError::BelowSnapshot { snapshot: self.snapshot.index });
        }
        let next = self.last_index().next();
        let dropped = if index > next {
            if mode == Mode::Strict {
                return Err(ShapeError::Gap { next });
            }
            let all = self.epochs.len();
            self.epochs.clear();
            self.first = index;
            Dropped { front: 0, back: all }
        } else if self.epochs.is_empty() {
            self.first = index;
            Dropped::default()
        } else if index < self.first {
            // Only in replay: the run restarted after a gap and this entry
            // rewrites part of the gap; nothing stored survives it.
            let all = self.epochs.len();
            self.epochs.clear();
            self.first = index;
            Dropped { front: 0, back: all }
        } else {
            let keep = (index.0 - self.first.0) as usize;
            let back = self.epochs.len() - keep;
            self.epochs.truncate(keep);
            Dropped { front: 0, back }
        };
        self.epochs.push_back(epoch);
        Ok(dropped)
    }

    /// Whether installing `meta` keeps the entries after it: only if the log
    /// holds the snapshot's last entry with the same epoch (the semantics of
    /// `LogStorage::install_snapshot`). The WAL decides this when it accepts
    /// the snapshot and records the outcome, because replay may no longer
    /// hold that entry.
    pub(crate) fn install_keeps_suffix(&self, meta: &SnapshotMeta) -> bool {
        meta.index > self.snapshot.index && self.epoch_at(meta.index) == Some(meta.epoch)
    }

    /// Drops every entry and takes the snapshot.
    pub(crate) fn apply_reset(&mut self, meta: &SnapshotMeta) -> Dropped {
        let all = self.epochs.len();
        self.epochs.clear();
        self.snapshot = meta.clone();
        self.first = meta.index.next();
        Dropped { front: 0, back: all }
    }

    /// Compacts after a local snapshot: drop entries up to `meta.index`.
    pub(crate) fn apply_compact(&mut self, meta: &SnapshotMeta) -> Dropped {
        let front = match meta.index.0.checked_sub(self.first.0) {
            Some(pos) => (pos as usize + 1).min(self.epochs.len()),
            None => 0,
        };
        self.epochs.drain(..front);
        self.snapshot = meta.clone();
        if self.epochs.is_empty() || front > 0 {
            self.first = meta.index.next();
        }
        Dropped { front, back: 0 }
    }

    /// Whether stored entries start right after the snapshot.
    pub(crate) fn is_contiguous(&self) -> bool {
        self.epochs.is_empty() || self.first == self.snapshot.index.next()
    }
}

/// Where an entry's record sits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u64,
    /// Byte offset of the record header in the segment.
    pub(crate) offset: u64,
    /// Bytes of the whole record.
    pub(crate) len: u32,
}

/// One shard's durable state.
#[derive(Debug, Default)]
pub(crate) struct ShardIndex {
    pub(crate) shape: LogShape,
    /// `locs[k]` is where entry `shape.first + k` is stored.
    pub(crate) locs: VecDeque<Loc>,
    /// The last `cache.len()` entries, kept in memory (bounded by
    /// `cache_bytes_per_shard`) so recent entries are read without I/O.
    pub(crate) cache: VecDeque<Entry>,
    pub(crate) cache_bytes: u64,
}

impl ShardIndex {
    /// The cached entry at position `pos` of `locs`, if cached.
    pub(crate) fn cached(&self, pos: usize) -> Option<&Entry> {
        let start = self.locs.len() - self.cache.len();
        pos.checked_sub(start).and_then(|k| self.cache.get(k))
    }
}

/// One live segment file.
#[derive(Debug)]
pub(crate) struct Segment<F> {
    pub(crate) name: String,
    pub(crate) file: Arc<F>,
    /// Entries stored in this segment that are still in some shard's log.
    pub(crate) live_entries: u64,
}

/// The durable state of every shard and the segments that hold it.
#[derive(Debug)]
pub(crate) struct Index<F> {
    pub(crate) shards: BTreeMap<ShardId, ShardIndex>,
    pub(crate) segments: BTreeMap<u64, Segment<F>>,
    pub(crate) cache_bytes_per_shard: u64,
}

impl<F> Index<F> {
    pub(crate) fn new(cache_bytes_per_shard: u64) -> Index<F> {
        Index { shards: BTreeMap::new(), segments: BTreeMap::new(), cache_bytes_per_shard }
    }

    /// Applies one record found (or written) at `loc`.
    pub(crate) fn apply(
        &mut self,
        shard: ShardId,
        op: Op,
        loc: Loc,
        mode: Mode,
    ) -> Result<(), ShapeError> {
        if op == Op::Remove {
            if let Some(s) = self.shards.remove(&shard) {
                for l in s.locs {
                    self.release(l);
                }
            }
            return Ok(());
        }
        let s = self.shards.entry(shard).or_default();
        let (dropped, entry) = match op {
            Op::Entry(e) => (s.shape.apply_entry(e.index, e.epoch, mode)?, Some(e)),
            Op::HardState(h) => {
                s.shape.hard_state = h;
                (Dropped::default(), None)
            }
            Op::Install(m) => (s.shape.apply_reset(&m), None),
            Op::Compact(m) => (s.shape.apply_compact(&m), None),
            Op::Remove => unreachable!("handled above"),
        };
        let mut released = Vec::new();
        let keep_after_front = s.locs.len() - dropped.front;
        while s.cache.len() > keep_after_front {
            let e = s.cache.pop_front().expect("cache is non-empty");
            s.cache_bytes -= e.size_bytes();
        }
        released.extend(s.locs.drain(..dropped.front));
        for _ in 0..dropped.back.min(s.cache.len()) {
            let e = s.cache.pop_back().expect("cache is non-empty");
            s.cache_bytes -= e.size_bytes();
        }
        let keep = s.locs.len() - dropped.back;
        released.extend(s.locs.drain(keep..));
        if let Some(e) = entry {
            s.locs.push_back(loc);
            s.cache_bytes += e.size_bytes();
            s.cache.push_back(e);
            while s.cache_bytes > self.cache_bytes_per_shard {
                let old = s.cache.pop_front().expect("over budget means non-empty");
                s.cache_bytes -= old.size_bytes();
            }
            self.segments
                .get_mut(&loc.segment)
                .expect("entries go to known segments")
                .live_entries += 1;
        }
        debug_assert_eq!(s.locs.len(), s.shape.epochs.len());
        for l in released {
            self.release(l);
        }
        Ok(())
    }

    fn release(&mut self, loc: Loc) {
        let seg = self.segments.get_mut(&loc.segment).expect("live entries sit in live segments");
        seg.live_entries -= 1;
    }

    /// Shards with live entries in `segment`.
    pub(crate) fn shards_in(&self, segment: u64) -> Vec<ShardId> {
        self.shards
            .iter()
            .filter(|(_, s)| s.locs.iter().any(|l| l.segment == segment))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Checks the index against itself (tests and debug builds).
    pub(crate) fn check_invariants(&self) {
        let mut live: BTreeMap<u64, u64> = BTreeMap::new();
        for (id, s) in &self.shards {
            assert_eq!(s.locs.len(), s.shape.epochs.len(), "shard {id}: locations and epochs");
            assert!(s.cache.len() <= s.locs.len(), "shard {id}: cache longer than the log");
            assert!(s.shape.is_contiguous(), "shard {id}: entries do not follow the snapshot");
            assert_eq!(
                s.cache_bytes,
                s.cache.iter().map(Entry::size_bytes).sum::<u64>(),
                "shard {id}: cache byte count"
            );
            let last = s.shape.last_index();
            for (k, e) in s.cache.iter().rev().enumerate() {
                assert_eq!(e.index, LogIndex(last.0 - k as u64), "shard {id}: cache alignment");
            }
            for l in &s.locs {
                *live.entry(l.segment).or_default() += 1;
            }
        }
        for (id, seg) in &self.segments {
            assert_eq!(
                seg.live_entries,
                live.get(id).copied().unwrap_or(0),
                "segment {id}: live entry count"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_consensus::EntryKind;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            epoch: Epoch::term(term),
            kind: EntryKind::Command,
            payload: Bytes::from(vec![0u8; 40]),
        }
    }

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta { index: LogIndex(index), epoch: Epoch::term(term), ..SnapshotMeta::default() }
    }

    /// An index with two segments and a cache of `cache` bytes per shard.
    fn index(cache: u64) -> Index<()> {
        let mut idx = Index::new(cache);
        for id in [1, 2] {
            idx.segments
                .insert(id, Segment { name: format!("{id}"), file: Arc::new(()), live_entries: 0 });
        }
        idx
    }

    fn put(idx: &mut Index<()>, segment: u64, e: Entry, mode: Mode) -> Result<(), ShapeError> {
        let loc = Loc { segment, offset: e.index.0 * 100, len: 10 };
        idx.apply(ShardId(1), Op::Entry(e), loc, mode)
    }

    #[test]
    fn truncation_releases_locations_and_cache() {
        let mut idx = index(u64::MAX);
        for i in 1..=5 {
            put(&mut idx, 1, entry(i, 1), Mode::Strict).unwrap();
        }
        put(&mut idx, 2, entry(3, 2), Mode::Strict).unwrap();
        idx.check_invariants();
        let s = &idx.shards[&ShardId(1)];
        assert_eq!(s.shape.last_index(), LogIndex(3));
        assert_eq!(s.shape.epoch_at(LogIndex(3)), Some(Epoch::term(2)));
        assert_eq!(s.cache.back().map(|e| e.epoch), Some(Epoch::term(2)));
        assert_eq!((idx.segments[&1].live_entries, idx.segments[&2].live_entries), (2, 1));
    }

    #[test]
    fn strict_mode_refuses_gaps_and_writes_below_the_snapshot() {
        let mut idx = index(u64::MAX);
        put(&mut idx, 1, entry(1, 1), Mode::Strict).unwrap();
        assert_eq!(
            put(&mut idx, 1, entry(3, 1), Mode::Strict),
            Err(ShapeError::Gap { next: LogIndex(2) })
        );
        let loc = Loc { segment: 1, offset: 0, len: 1 };
        idx.apply(ShardId(1), Op::Compact(meta(1, 1)), loc, Mode::Strict).unwrap();
        assert_eq!(
            put(&mut idx, 1, entry(1, 2), Mode::Strict),
            Err(ShapeError::BelowSnapshot { snapshot: LogIndex(1) })
        );
        idx.check_invariants();
    }

    #[test]
    fn replay_restarts_after_a_gap_and_a_later_compaction_closes_it() {
        let mut idx = index(u64::MAX);
        put(&mut idx, 2, entry(8, 1), Mode::Replay).unwrap();
        put(&mut idx, 2, entry(9, 1), Mode::Replay).unwrap();
        assert!(!idx.shards[&ShardId(1)].shape.is_contiguous());
        let loc = Loc { segment: 2, offset: 0, len: 1 };
        idx.apply(ShardId(1), Op::Compact(meta(7, 1)), loc, Mode::Replay).unwrap();
        assert!(idx.shards[&ShardId(1)].shape.is_contiguous());
        idx.check_invariants();
    }

    #[test]
    fn install_reset_and_compact() {
        let mut idx = index(u64::MAX);
        for i in 1..=6 {
            put(&mut idx, 1, entry(i, 1), Mode::Strict).unwrap();
        }
        let loc = Loc { segment: 2, offset: 0, len: 1 };
        let shape = &idx.shards[&ShardId(1)].shape;
        assert!(shape.install_keeps_suffix(&meta(4, 1)));
        assert!(!shape.install_keeps_suffix(&meta(4, 2)), "epoch disagrees");
        assert!(!shape.install_keeps_suffix(&meta(9, 1)), "past the end");
        idx.apply(ShardId(1), Op::Compact(meta(4, 1)), loc, Mode::Strict).unwrap();
        assert_eq!(idx.shards[&ShardId(1)].shape.first, LogIndex(5));
        assert_eq!(idx.segments[&1].live_entries, 2);
        idx.apply(ShardId(1), Op::Install(meta(5, 3)), loc, Mode::Strict).unwrap();
        let shape = &idx.shards[&ShardId(1)].shape;
        assert_eq!(
            (shape.last_index(), shape.epoch_at(LogIndex(5))),
            (LogIndex(5), Some(Epoch::term(3)))
        );
        assert_eq!(idx.segments[&1].live_entries, 0);
        idx.apply(ShardId(1), Op::Remove, loc, Mode::Strict).unwrap();
        assert!(idx.shards.is_empty());
        idx.check_invariants();
    }

    #[test]
    fn cache_keeps_the_newest_entries_within_budget() {
        let per_entry = entry(1, 1).size_bytes();
        let mut idx = index(3 * per_entry);
        for i in 1..=10 {
            put(&mut idx, 1, entry(i, 1), Mode::Strict).unwrap();
        }
        let s = &idx.shards[&ShardId(1)];
        assert_eq!(s.cache.iter().map(|e| e.index.0).collect::<Vec<_>>(), [8, 9, 10]);
        assert!(s.cached(6).is_none());
        assert_eq!(s.cached(7).map(|e| e.index), Some(LogIndex(8)));
        put(&mut idx, 1, entry(9, 2), Mode::Strict).unwrap();
        let s = &idx.shards[&ShardId(1)];
        assert_eq!(s.cache.iter().map(|e| e.index.0).collect::<Vec<_>>(), [8, 9]);
        idx.check_invariants();
    }
}
