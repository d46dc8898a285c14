//! The acceptor's log: durable slots in the caller's [`LogStorage`] plus an
//! *unstable* tail (and possibly a snapshot) not yet acknowledged as
//! persisted.
//!
//! # Holes
//!
//! A Paxos acceptor accepts slots in any order, but [`LogStorage`] holds a
//! contiguous run of entries. A slot with nothing accepted is stored as a
//! **vacant** entry: [`EntryKind::Noop`], [`Epoch::ZERO`], empty payload.
//! No real ballot is zero (ballots start at round 1 and carry a valid node
//! id), so vacancy is unambiguous. A vacant slot is never reported in a
//! promise, never acknowledged, never committed and never applied.
//!
//! # Rewrites
//!
//! Filling a hole, or accepting a higher ballot's value in the middle of the
//! log, writes from that slot on. Storage drops every entry at or after the
//! first written one, so a rewrite re-emits the whole old suffix unchanged
//! behind the new value ([`PaxosLog::replace`]): an accepted value is only
//! ever replaced by another accepted value of the same slot, never dropped.
//! This needs each Ready's writes to become durable all or nothing (the
//! ringkv WAL writes a Ready in one atomic batch); see the crate docs.
//!
//! ```text
//!   storage (durable)            unstable (in memory)
//!   [snap] 1 2 3 4 5 6 ......... 7 8 9 10 11 12
//!                                ^offset   ^emitted_to   ^last_index
//!                   persisted ^
//! ```
//!
//! Index arithmetic and invariants:
//! * `unstable.entries[i].index == unstable.offset + i`;
//! * with an unstable snapshot, `unstable.offset == snapshot.index + 1`;
//! * only storage entries below `unstable.offset` are part of the log;
//! * `applied <= applying <= committed <= last_index()`;
//! * `persisted <= last_index()`: every slot up to `persisted` is durable in
//!   the form the log holds now; committed entries are handed out only up
//!   to `persisted`;
//! * no slot at or below `committed` is vacant or ever rewritten.

use ringkv_consensus::{Entry, EntryKind, Epoch, LogError, LogIndex, LogStorage, Snapshot};

/// A vacant slot: nothing accepted there.
pub(crate) fn vacant(index: LogIndex) -> Entry {
    Entry { index, epoch: Epoch::ZERO, kind: EntryKind::Noop, payload: bytes::Bytes::new() }
}

/// Whether `e` stands for a vacant slot.
pub(crate) fn is_vacant(e: &Entry) -> bool {
    e.epoch == Epoch::ZERO
}

/// Entries (and a snapshot) not yet acknowledged as durable.
#[derive(Debug)]
struct Unstable {
    snapshot: Option<Snapshot>,
    /// Whether `snapshot` has been handed out in a Ready.
    snapshot_emitted: bool,
    /// Entries from `offset` on.
    entries: Vec<Entry>,
    /// Index of `entries[0]` (or of the next entry when empty).
    offset: LogIndex,
    /// Highest index handed out in a Ready in its current form.
    emitted_to: LogIndex,
}

/// The log view: storage plus unstable, with commit and apply cursors.
#[derive(Debug)]
pub(crate) struct PaxosLog<S> {
    pub(crate) storage: S,
    unstable: Unstable,
    /// The commit point: every slot up to it is chosen and holds the chosen
    /// value here.
    pub(crate) committed: LogIndex,
    /// Highest index handed out for applying.
    pub(crate) applying: LogIndex,
    /// Highest index the caller reported applied.
    pub(crate) applied: LogIndex,
    /// Highest index durable in its current form (see the module docs).
    pub(crate) persisted: LogIndex,
}

impl<S: LogStorage> PaxosLog<S> {
    /// The log as recovered from `storage`, whose state machine has applied
    /// up to `applied` (at least the snapshot).
    pub(crate) fn new(storage: S, committed: LogIndex, applied: LogIndex) -> PaxosLog<S> {
        let last = storage.last_index();
        let snap_index = storage.snapshot_meta().index;
        let applied = applied.max(snap_index).min(committed);
        PaxosLog {
            unstable: Unstable {
                snapshot: None,
                snapshot_emitted: false,
                entries: Vec::new(),
                offset: last.next(),
                emitted_to: last,
            },
            storage,
            committed,
            applying: applied,
            applied,
            persisted: last,
        }
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        match &self.unstable.snapshot {
            Some(s) => s.meta.index.next(),
            None => self.storage.first_index(),
        }
    }

    /// The index of the snapshot the log starts after.
    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.first_index().prev()
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        if let Some(last) = self.unstable.entries.last() {
            return last.index;
        }
        match &self.unstable.snapshot {
            Some(s) => s.meta.index,
            None => self.unstable.offset.prev(),
        }
    }

    pub(crate) fn emitted_to(&self) -> LogIndex {
        self.unstable.emitted_to
    }

    /// The ballot the entry at `index` was accepted in (zero for a vacant
    /// slot and for index 0).
    pub(crate) fn epoch(&self, index: LogIndex) -> Result<Epoch, LogError> {
        if index == LogIndex::ZERO {
            return Ok(Epoch::ZERO);
        }
        if let Some(s) = &self.unstable.snapshot {
            if index == s.meta.index {
                return Ok(s.meta.epoch);
            }
            if index < s.meta.index {
                return Err(LogError::Compacted { index, first: self.first_index() });
            }
        }
        if index >= self.unstable.offset {
            let i = (index.0 - self.unstable.offset.0) as usize;
            return match self.unstable.entries.get(i) {
                Some(e) => Ok(e.epoch),
                None => Err(LogError::Unavailable { index, last: self.last_index() }),
            };
        }
        self.storage.epoch(index)
    }

    /// Entries in `[lo, hi)`, at most `max_bytes` of them but at least one.
    pub(crate) fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogError> {
        if lo < self.first_index() {
            return Err(LogError::Compacted { index: lo, first: self.first_index() });
        }
        let last = self.last_index();
        if hi > last.next() {
            return Err(LogError::Unavailable { index: hi.prev(), last });
        }
        if lo >= hi {
            return Ok(Vec::new());
        }
        let offset = self.unstable.offset;
        let mut out = if lo < offset {
            self.storage.entries(lo, hi.min(offset), max_bytes)?
        } else {
            Vec::new()
        };
        if hi <= offset || (lo < offset && out.last().is_some_and(|e| e.index.next() < offset)) {
            return Ok(out);
        }
        let mut bytes: u64 = out.iter().map(Entry::size_bytes).sum();
        let from = (lo.max(offset).0 - offset.0) as usize;
        let to = (hi.0 - offset.0) as usize;
        for e in &self.unstable.entries[from..to] {
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    /// Every entry in `[lo, hi)`, whatever its size.
    pub(crate) fn all_entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::new();
        let mut at = lo;
        while at < hi {
            let batch = self.entries(at, hi, u64::MAX)?;
            let Some(last) = batch.last() else { break };
            at = last.index.next();
            out.extend(batch);
        }
        Ok(out)
    }

    /// Writes `run` (contiguous, starting at most one past the end) over the
    /// log, keeping every old entry after the run: the old suffix is
    /// re-emitted unchanged behind it.
    ///
    /// # Errors
    /// Reading the old suffix from storage failed; nothing changed.
    ///
    /// # Panics
    /// If the run would touch a committed slot or leave a gap.
    pub(crate) fn replace(&mut self, mut run: Vec<Entry>) -> Result<(), LogError> {
        let (Some(first), Some(end)) = (run.first(), run.last()) else { return Ok(()) };
        let (lo, hi) = (first.index, end.index);
        assert!(lo > self.committed, "rewriting committed slot {lo} (commit {})", self.committed);
        let last = self.last_index();
        assert!(lo <= last.next(), "write at {lo} leaves a gap after {last}");
        if hi < last {
            run.extend(self.all_entries(hi.next(), last.next())?);
        }
        self.truncate_and_append(run);
        Ok(())
    }

    /// Appends one entry at the end (a leader's own proposal).
    pub(crate) fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index().next());
        if self.unstable.entries.is_empty() {
            self.unstable.offset = entry.index;
        }
        self.unstable.entries.push(entry);
    }

    /// Replaces everything from `entries[0].index` on with `entries`.
    fn truncate_and_append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first().map(|e| e.index) else { return };
        assert!(first > LogIndex::ZERO && first <= self.last_index().next(), "gap in the log");
        let u = &mut self.unstable;
        if u.entries.is_empty() && u.snapshot.is_none() {
            u.offset = first;
            u.entries = entries;
        } else if first == u.offset.plus(u.entries.len() as u64) {
            u.entries.extend(entries);
        } else if first <= u.offset {
            // The run replaces part of the durable log too; the caller drops
            // storage from `first` when it persists it.
            assert!(
                u.snapshot.as_ref().is_none_or(|s| first > s.meta.index),
                "write below the unstable snapshot"
            );
            u.offset = first;
            u.entries = entries;
        } else {
            u.entries.truncate((first.0 - u.offset.0) as usize);
            u.entries.extend(entries);
        }
        u.emitted_to = u.emitted_to.min(first.prev());
        self.persisted = self.persisted.min(first.prev());
    }

    /// Raises the commit point (never lowers it).
    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        if index <= self.committed {
            return;
        }
        assert!(
            index <= self.last_index(),
            "commit point {index} is past the last index {}",
            self.last_index()
        );
        self.committed = index;
    }

    /// Replaces the log by a snapshot of the chosen prefix, keeping `suffix`
    /// (this acceptor's slots after the snapshot, re-emitted after it so no
    /// accepted value is lost).
    pub(crate) fn restore(&mut self, snapshot: Snapshot, suffix: Vec<Entry>) {
        let index = snapshot.meta.index;
        assert!(index > self.committed, "restoring a snapshot at or below the commit point");
        debug_assert!(suffix.first().is_none_or(|e| e.index == index.next()));
        self.unstable = Unstable {
            snapshot: Some(snapshot),
            snapshot_emitted: false,
            entries: suffix,
            offset: index.next(),
            emitted_to: index,
        };
        self.committed = index;
        self.applying = index;
        self.persisted = self.persisted.min(index);
    }

    /// Whether a snapshot from the leader is not yet durable.
    pub(crate) fn has_unstable_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some()
    }

    /// Whether there is a snapshot or entries not yet handed out.
    pub(crate) fn has_unemitted(&self) -> bool {
        (self.unstable.snapshot.is_some() && !self.unstable.snapshot_emitted)
            || self.last_index() > self.unstable.emitted_to
    }

    /// The snapshot and entries to hand out in the next Ready.
    pub(crate) fn take_unemitted(&mut self) -> (Option<Snapshot>, Vec<Entry>) {
        let u = &mut self.unstable;
        let snapshot = match &u.snapshot {
            Some(s) if !u.snapshot_emitted => {
                u.snapshot_emitted = true;
                Some(s.clone())
            }
            _ => None,
        };
        let from = u.emitted_to.next().max(u.offset);
        let skip = (from.0 - u.offset.0) as usize;
        let entries = u.entries.get(skip..).map(<[Entry]>::to_vec).unwrap_or_default();
        if let Some(last) = entries.last() {
            u.emitted_to = last.index;
        }
        (snapshot, entries)
    }

    /// Everything up to `index` is durable in its current form (the caller
    /// computed it from the Readys persisted): drop it from the unstable
    /// tail, and the snapshot if it is covered.
    pub(crate) fn stable_to(&mut self, index: LogIndex, snapshot: Option<LogIndex>) {
        if let Some(at) = snapshot
            && self.unstable.snapshot.as_ref().is_some_and(|s| s.meta.index == at)
        {
            self.unstable.snapshot = None;
            self.unstable.snapshot_emitted = false;
        }
        if self.unstable.snapshot.is_some() {
            return;
        }
        self.persisted = self.persisted.max(index.min(self.last_index()));
        let u = &mut self.unstable;
        if self.persisted >= u.offset {
            let n = (self.persisted.0 - u.offset.0 + 1) as usize;
            u.entries.drain(..n.min(u.entries.len()));
            u.offset = self.persisted.next();
        }
    }

    /// Whether committed entries wait to be handed out.
    pub(crate) fn has_next_committed(&self) -> bool {
        self.committed.min(self.persisted) > self.applying
            && self.unstable.snapshot.is_none()
            && self.applying.next() >= self.first_index()
    }

    /// The next committed, durable entries to apply, at most `max_bytes`
    /// of them (but at least one), advancing the `applying` cursor.
    pub(crate) fn take_next_committed(&mut self, max_bytes: u64) -> Result<Vec<Entry>, LogError> {
        if !self.has_next_committed() {
            return Ok(Vec::new());
        }
        let hi = self.committed.min(self.persisted).next();
        let entries = self.entries(self.applying.next(), hi, max_bytes)?;
        if let Some(last) = entries.last() {
            self.applying = last.index;
        }
        debug_assert!(entries.iter().all(|e| !is_vacant(e)), "a vacant slot was committed");
        Ok(entries)
    }

    /// Records what the caller has applied.
    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        if index > self.applied {
            self.applied = index.min(self.applying.max(self.committed));
        }
    }

    /// Checks the index invariants in the module docs.
    pub(crate) fn check_invariants(&self) {
        let last = self.last_index();
        assert!(self.committed <= last, "commit {} past last {last}", self.committed);
        assert!(self.persisted <= last, "persisted {} past last {last}", self.persisted);
        assert!(self.applied <= self.applying, "applied past applying");
        assert!(self.applying <= self.committed, "applying past the commit point");
        let u = &self.unstable;
        if let Some(first) = u.entries.first() {
            assert_eq!(first.index, u.offset, "unstable offset mismatch");
        }
        if let Some(s) = &u.snapshot {
            assert_eq!(u.offset, s.meta.index.next(), "unstable snapshot offset mismatch");
        }
        // Committed slots in the unstable tail are real acceptances.
        for e in &u.entries {
            if e.index > self.committed {
                break;
            }
            assert!(!is_vacant(e), "committed slot {} is vacant", e.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_consensus::{Membership, MemoryLog, NodeId, SnapshotMeta};

    fn b(round: u64) -> Epoch {
        Epoch::ballot(round, NodeId(1))
    }

    fn e(index: u64, round: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            epoch: b(round),
            kind: EntryKind::Command,
            payload: Bytes::from(format!("v{index}.{round}")),
        }
    }

    fn log_with(rounds: &[u64]) -> PaxosLog<MemoryLog> {
        let mut storage = MemoryLog::new(Membership::new([NodeId(1)]));
        let entries: Vec<Entry> =
            rounds.iter().enumerate().map(|(i, &r)| e(i as u64 + 1, r)).collect();
        storage.append(&entries);
        PaxosLog::new(storage, LogIndex::ZERO, LogIndex::ZERO)
    }

    #[test]
    fn replacing_a_middle_slot_keeps_the_suffix() {
        let mut log = log_with(&[1, 1, 1, 1]);
        log.replace(vec![e(2, 3)]).unwrap();
        assert_eq!(log.persisted, LogIndex(1));
        let (_, entries) = log.take_unemitted();
        assert_eq!(entries, vec![e(2, 3), e(3, 1), e(4, 1)], "old suffix re-emitted unchanged");
        assert_eq!(log.last_index(), LogIndex(4));
    }

    #[test]
    fn writing_past_the_end_needs_vacant_fill_by_the_caller() {
        let mut log = log_with(&[1]);
        log.replace(vec![vacant(LogIndex(2)), e(3, 2)]).unwrap();
        assert_eq!(log.epoch(LogIndex(2)), Ok(Epoch::ZERO));
        assert_eq!(log.epoch(LogIndex(3)), Ok(b(2)));
    }

    #[test]
    #[should_panic(expected = "rewriting committed")]
    fn committed_slots_are_never_rewritten() {
        let mut log = log_with(&[1, 1]);
        log.commit_to(LogIndex(2));
        let _ = log.replace(vec![e(2, 2)]);
    }

    #[test]
    fn committed_entries_wait_for_persistence() {
        let mut log = log_with(&[1]);
        log.append(e(2, 1));
        log.commit_to(LogIndex(2));
        assert_eq!(log.take_next_committed(u64::MAX).unwrap(), vec![e(1, 1)]);
        let (_, entries) = log.take_unemitted();
        log.storage.append(&entries);
        log.stable_to(LogIndex(2), None);
        assert_eq!(log.take_next_committed(u64::MAX).unwrap(), vec![e(2, 1)]);
    }

    #[test]
    fn restore_keeps_the_accepted_suffix() {
        let mut log = log_with(&[1, 1, 2, 2]);
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(2),
                epoch: b(5),
                membership: Membership::new([NodeId(1)]),
            },
            data: Bytes::new(),
        };
        let suffix = log.all_entries(LogIndex(3), LogIndex(5)).unwrap();
        log.restore(snap, suffix);
        assert_eq!(log.first_index(), LogIndex(3));
        let (s, entries) = log.take_unemitted();
        assert!(s.is_some());
        assert_eq!(entries, vec![e(3, 2), e(4, 2)]);
        assert_eq!(log.committed, LogIndex(2));
    }
}
