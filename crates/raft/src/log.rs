//! The replica's log as the engine sees it: durable entries in the caller's
//! [`LogStorage`] plus an *unstable* tail (and possibly a snapshot) that has
//! not yet been acknowledged as persisted.
//!
//! ```text
//!   storage (durable)            unstable (in memory)
//!   [snap] 1 2 3 4 5 6 ......... 7 8 9 10 11 12
//!                                ^offset   ^emitted_to   ^last_index
//!                   persisted ^           (7..=10 handed out in a Ready,
//!                                          11..=12 not yet)
//! ```
//!
//! Index arithmetic and invariants:
//! * `unstable.entries[i].index == unstable.offset + i`;
//! * with an unstable snapshot, `unstable.offset == snapshot.index + 1` and
//!   nothing below the snapshot is readable;
//! * only storage entries below `unstable.offset` are part of the log (the
//!   storage may still hold a stale suffix that an in-flight Ready will
//!   truncate);
//! * `applied <= applying <= committed <= last_index()`;
//! * `persisted <= last_index()`: every entry up to `persisted` is durable
//!   and agrees with this log. Committed entries are handed out only up to
//!   `persisted` ("`Ready::committed` holds only locally durable entries").
//!
//! A committed entry is never truncated (Raft, Fig. 3 "Leader
//! Append-Only" and "State Machine Safety"); [`RaftLog::maybe_append`]
//! asserts it.

use ringkv_consensus::{Entry, Epoch, LogError, LogIndex, LogStorage, Snapshot};

/// Entries (and a snapshot) not yet acknowledged as durable.
#[derive(Debug)]
struct Unstable {
    /// A snapshot received from the leader, until persisted.
    snapshot: Option<Snapshot>,
    /// Whether `snapshot` has been handed out in a Ready.
    snapshot_emitted: bool,
    /// Entries from `offset` on.
    entries: Vec<Entry>,
    /// Index of `entries[0]` (or of the next entry when empty).
    offset: LogIndex,
    /// Highest index handed out in a Ready; later ones are still to emit.
    emitted_to: LogIndex,
}

/// The log view: storage plus unstable, with commit and apply cursors.
#[derive(Debug)]
pub(crate) struct RaftLog<S> {
    pub(crate) storage: S,
    unstable: Unstable,
    /// Highest index known committed (Fig. 2 `commitIndex`).
    pub(crate) committed: LogIndex,
    /// Highest index handed out for applying (in `Ready::committed` or as a
    /// snapshot).
    pub(crate) applying: LogIndex,
    /// Highest index the caller reported applied (Fig. 2 `lastApplied`).
    pub(crate) applied: LogIndex,
    /// Highest index known durable and agreeing with this log.
    pub(crate) persisted: LogIndex,
}

impl<S: LogStorage> RaftLog<S> {
    /// The log as recovered from `storage`, whose state machine has applied
    /// up to `applied` (at least the snapshot).
    pub(crate) fn new(storage: S, committed: LogIndex, applied: LogIndex) -> RaftLog<S> {
        let last = storage.last_index();
        let snap_index = storage.snapshot_meta().index;
        let applied = applied.max(snap_index).min(committed);
        RaftLog {
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

    pub(crate) fn last_index(&self) -> LogIndex {
        if let Some(last) = self.unstable.entries.last() {
            return last.index;
        }
        match &self.unstable.snapshot {
            Some(s) => s.meta.index,
            None => self.unstable.offset.prev(),
        }
    }

    /// The term of the entry at `index` (index 0 has term 0).
    pub(crate) fn term(&self, index: LogIndex) -> Result<Epoch, LogError> {
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

    pub(crate) fn last_term(&self) -> Epoch {
        self.term(self.last_index()).expect("the last index of the log always has a term")
    }

    pub(crate) fn match_term(&self, index: LogIndex, term: Epoch) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Whether a candidate's log ending at `(last_index, last_term)` is at
    /// least as up-to-date as ours (Raft §5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Epoch) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
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
            // Entirely from storage, or the byte limit stopped us there.
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

    /// The largest index at or below `index` whose term is at most `term`,
    /// with that term (thesis §5.3 fast backtracking). Stops at the first
    /// compacted index, reporting term 0 there.
    pub(crate) fn find_conflict_by_term(&self, index: LogIndex, term: Epoch) -> (LogIndex, Epoch) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t <= term => return (i, t),
                Ok(_) if i > LogIndex::ZERO => i = i.prev(),
                Ok(t) => return (i, t),
                Err(_) => return (i, Epoch::ZERO),
            }
        }
    }

    /// The index of the first entry of `entries` that is not already in the
    /// log with the same term, if any.
    fn find_conflict(&self, entries: &[Entry]) -> Option<usize> {
        let last = self.last_index();
        // Fast path: everything is new.
        if entries.first().is_some_and(|e| e.index > last) {
            return Some(0);
        }
        entries.iter().position(|e| !self.match_term(e.index, e.epoch))
    }

    /// AppendEntries receiver steps 2-4 (Fig. 2). If the log holds
    /// `prev_index` with `prev_term`, stores `entries` (dropping a
    /// conflicting suffix) and returns the index of the last entry of the
    /// message plus the index of the first entry actually written, if any
    /// (entries already present are skipped; a write at or below the old
    /// last index truncated the log there).
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Epoch,
        mut entries: Vec<Entry>,
    ) -> Option<(LogIndex, Option<LogIndex>)> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index.plus(entries.len() as u64);
        let written = match self.find_conflict(&entries) {
            None => None,
            Some(at) => {
                let first = entries[at].index;
                assert!(
                    first > self.committed,
                    "append would overwrite committed entry {first} (commit {}): \
                     the leader's log lacks a committed entry",
                    self.committed
                );
                entries.drain(..at);
                self.truncate_and_append(entries);
                Some(first)
            }
        };
        Some((last_new, written))
    }

    /// Appends entries at the end of the log (the leader's own proposals).
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
            // The new entries replace part of the durable log too; the
            // caller truncates storage at `first` when it persists them.
            assert!(
                u.snapshot.as_ref().is_none_or(|s| first > s.meta.index),
                "append below the unstable snapshot"
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

    /// Raises the commit index (never lowers it).
    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        if index <= self.committed {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit index {index} is past the last index {}",
            self.last_index()
        );
        self.committed = index;
        true
    }

    /// Replaces the log by a snapshot from the leader (thesis §5.3
    /// InstallSnapshot receiver), unless the log already holds the entry the
    /// snapshot ends with, in which case only the commit index moves.
    /// Returns whether the snapshot was taken.
    pub(crate) fn restore(&mut self, snapshot: Snapshot) -> bool {
        let (index, epoch) = (snapshot.meta.index, snapshot.meta.epoch);
        assert!(index > self.committed, "restoring a snapshot at or below the commit index");
        if self.match_term(index, epoch) {
            self.commit_to(index);
            return false;
        }
        self.unstable = Unstable {
            snapshot: Some(snapshot),
            snapshot_emitted: false,
            entries: Vec::new(),
            offset: index.next(),
            emitted_to: index,
        };
        self.committed = index;
        self.applying = index;
        self.persisted = self.persisted.min(index);
        true
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

    /// The entries through `(index, epoch)` are durable: drop them from the
    /// unstable tail unless they were replaced since.
    pub(crate) fn stable_to(&mut self, index: LogIndex, epoch: Epoch) {
        if !self.match_term(index, epoch) {
            return;
        }
        self.persisted = self.persisted.max(index);
        let u = &mut self.unstable;
        if index >= u.offset && u.snapshot.is_none() {
            let n = (index.0 - u.offset.0 + 1) as usize;
            u.entries.drain(..n.min(u.entries.len()));
            u.offset = index.next();
        }
    }

    /// The snapshot at `index` is durable.
    pub(crate) fn stable_snapshot_to(&mut self, index: LogIndex) {
        if self.unstable.snapshot.as_ref().is_some_and(|s| s.meta.index == index) {
            self.unstable.snapshot = None;
            self.unstable.snapshot_emitted = false;
            self.persisted = self.persisted.max(index);
        }
    }

    /// The highest index that may be handed out for applying.
    fn apply_limit(&self, before_commit: bool) -> LogIndex {
        if before_commit {
            // Planted bug: hand out entries as soon as they are appended.
            return self.last_index();
        }
        self.committed.min(self.persisted)
    }

    /// Whether committed entries wait to be handed out.
    pub(crate) fn has_next_committed(&self, before_commit: bool) -> bool {
        self.apply_limit(before_commit) > self.applying
            && self.unstable.snapshot.is_none()
            && self.applying.next() >= self.first_index()
    }

    /// The next committed, durable entries to apply, at most `max_bytes`
    /// of them (but at least one), advancing the `applying` cursor.
    pub(crate) fn take_next_committed(
        &mut self,
        max_bytes: u64,
        before_commit: bool,
    ) -> Result<Vec<Entry>, LogError> {
        if !self.has_next_committed(before_commit) {
            return Ok(Vec::new());
        }
        let hi = self.apply_limit(before_commit).next();
        let entries = self.entries(self.applying.next(), hi, max_bytes)?;
        if let Some(last) = entries.last() {
            self.applying = last.index;
        }
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
        let u = &self.unstable;
        if let Some(first) = u.entries.first() {
            assert_eq!(first.index, u.offset, "unstable offset mismatch");
        }
        if let Some(s) = &u.snapshot {
            assert_eq!(u.offset, s.meta.index.next(), "unstable snapshot offset mismatch");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_consensus::{EntryKind, Membership, MemoryLog, NodeId, SnapshotMeta};

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            epoch: Epoch::term(term),
            kind: EntryKind::Command,
            payload: Bytes::from_static(b"x"),
        }
    }

    fn log_with(terms: &[u64]) -> RaftLog<MemoryLog> {
        let mut storage = MemoryLog::new(Membership::new([NodeId(1)]));
        let entries: Vec<Entry> =
            terms.iter().enumerate().map(|(i, &t)| e(i as u64 + 1, t)).collect();
        storage.append(&entries);
        RaftLog::new(storage, LogIndex::ZERO, LogIndex::ZERO)
    }

    #[test]
    fn reads_span_storage_and_unstable() {
        let mut log = log_with(&[1, 1, 2]);
        log.append(e(4, 2));
        log.append(e(5, 3));
        let got = log.entries(LogIndex(2), LogIndex(6), u64::MAX).unwrap();
        assert_eq!(got.iter().map(|e| e.index.0).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
        assert_eq!(log.term(LogIndex(5)), Ok(Epoch::term(3)));
        assert_eq!(log.term(LogIndex(0)), Ok(Epoch::ZERO));
        // The byte limit stops in storage without reading the unstable part.
        let one = log.entries(LogIndex(2), LogIndex(6), 1).unwrap();
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn conflicting_append_truncates_durable_suffix() {
        let mut log = log_with(&[1, 1, 1, 1]);
        let (last, written) = log.maybe_append(LogIndex(2), Epoch::term(1), vec![e(3, 2)]).unwrap();
        assert_eq!((last, written), (LogIndex(3), Some(LogIndex(3))));
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.persisted, LogIndex(2));
        let (_, entries) = log.take_unemitted();
        assert_eq!(entries, vec![e(3, 2)]);
    }

    #[test]
    fn duplicate_append_changes_nothing() {
        let mut log = log_with(&[1, 1, 1]);
        let (last, written) = log.maybe_append(LogIndex(1), Epoch::term(1), vec![e(2, 1)]).unwrap();
        assert_eq!((last, written), (LogIndex(2), None));
        assert_eq!(log.last_index(), LogIndex(3), "a shorter duplicate must not truncate");
        assert!(!log.has_unemitted());
    }

    #[test]
    fn mismatched_prev_is_refused() {
        let mut log = log_with(&[1, 2]);
        assert!(log.maybe_append(LogIndex(2), Epoch::term(1), vec![e(3, 3)]).is_none());
        assert!(log.maybe_append(LogIndex(5), Epoch::term(2), vec![]).is_none());
    }

    #[test]
    #[should_panic(expected = "overwrite committed")]
    fn overwriting_a_committed_entry_panics() {
        let mut log = log_with(&[1, 1, 1]);
        log.commit_to(LogIndex(3));
        log.maybe_append(LogIndex(1), Epoch::term(1), vec![e(2, 2)]);
    }

    #[test]
    fn conflict_by_term_skips_whole_terms() {
        let log = log_with(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(
            log.find_conflict_by_term(LogIndex(6), Epoch::term(3)),
            (LogIndex(5), Epoch::term(2))
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(5), Epoch::term(1)),
            (LogIndex(2), Epoch::term(1))
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(9), Epoch::term(9)),
            (LogIndex(6), Epoch::term(4))
        );
    }

    #[test]
    fn committed_entries_wait_for_persistence() {
        let mut log = log_with(&[1]);
        log.append(e(2, 1));
        log.commit_to(LogIndex(2));
        let got = log.take_next_committed(u64::MAX, false).unwrap();
        assert_eq!(got, vec![e(1, 1)], "entry 2 is committed but not durable here");
        let (_, entries) = log.take_unemitted();
        log.storage.append(&entries);
        log.stable_to(LogIndex(2), Epoch::term(1));
        assert_eq!(log.take_next_committed(u64::MAX, false).unwrap(), vec![e(2, 1)]);
    }

    #[test]
    fn stale_persist_ack_is_ignored_after_truncation() {
        let mut log = log_with(&[1]);
        log.append(e(2, 1));
        let _ = log.take_unemitted();
        log.maybe_append(LogIndex(1), Epoch::term(1), vec![e(2, 2)]);
        log.stable_to(LogIndex(2), Epoch::term(1));
        assert_eq!(log.persisted, LogIndex(1));
        assert_eq!(log.term(LogIndex(2)), Ok(Epoch::term(2)));
    }

    #[test]
    fn restore_replaces_the_log() {
        let mut log = log_with(&[1, 1]);
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(5),
                epoch: Epoch::term(3),
                membership: Membership::new([NodeId(1)]),
            },
            data: Bytes::new(),
        };
        assert!(log.restore(snap));
        assert_eq!(log.first_index(), LogIndex(6));
        assert_eq!(log.last_index(), LogIndex(5));
        assert_eq!(log.term(LogIndex(5)), Ok(Epoch::term(3)));
        assert!(matches!(log.term(LogIndex(2)), Err(LogError::Compacted { .. })));
        let (s, entries) = log.take_unemitted();
        assert!(s.is_some() && entries.is_empty());
        log.maybe_append(LogIndex(5), Epoch::term(3), vec![e(6, 3)]).unwrap();
        assert_eq!(log.last_index(), LogIndex(6));
    }
}
