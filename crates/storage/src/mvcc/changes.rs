//! The change log (`mvcc_changes`): which keys each revision wrote, in
//! write order, for compaction and for watchers that replay by revision.
//!
//! Logically the log is a sequence of entries `(revision, sub, key)`, `sub`
//! counting the writes of one revision from 0. Physically a row holds
//! either one entry or many:
//!
//! | row key | value |
//! | --- | --- |
//! | `(shard, revision, sub)`, `sub < PACKED_SUB` | the key (one entry; stores written before packing) |
//! | `(shard, first revision, PACKED_SUB)` | [`PackedChanges`]: the entries of consecutive revisions |
//!
//! An apply batch writes one packed row per shard it touched, instead of a
//! row per write: the change log was half of the B-tree inserts of a put
//! (issue 10's profile). Rows never overlap in revisions, so the row that
//! holds a revision is the last row starting at or before it. Readers see
//! only entries, through [`for_each_change`], whatever the rows: stores
//! with one-entry rows keep working, and a shard's hashes and snapshots
//! are the same whichever way its log was batched (replicas batch their
//! applies differently).
//!
//! Compaction at `rev` deletes the rows wholly below `rev` and keeps a
//! packed row reaching `rev` whole; readers skip its entries below the
//! compacted revision, which a one-entry-row store would have deleted.

use redb::{ReadableTable, Table};
use ringkv_consensus::ShardId;
use ringkv_consensus::codec::put_varint;

use super::error::StoreError;
use super::tables::read_varint;

/// The `sub` of a packed row's key (one-entry rows have smaller ones: a
/// revision cannot hold 2^32 - 1 writes).
pub(crate) const PACKED_SUB: u32 = u32::MAX;

/// Format byte opening a packed row's value.
const PACKED_FORMAT: u8 = 1;

/// A change log position: (revision, sub).
pub(crate) type ChangePos = (u64, u32);

/// The entries an apply batch has logged for one shard and not yet written.
///
/// Value layout: `PACKED_FORMAT`, varint `last - first` revision, then per
/// entry varint revision delta (from `first`, then from the previous
/// entry), varint sub, varint key length, key.
#[derive(Debug, Default)]
pub(crate) struct PackedChanges {
    first: u64,
    last: u64,
    entries: Vec<u8>,
}

impl PackedChanges {
    /// Logs a write of `key` at (`rev`, `sub`); positions must ascend.
    pub(crate) fn push(&mut self, rev: u64, sub: u32, key: &[u8]) {
        debug_assert!(sub < PACKED_SUB, "sub {sub} collides with the packed marker");
        if self.entries.is_empty() {
            self.first = rev;
            self.last = rev;
        }
        debug_assert!(rev >= self.last, "change at {rev} after {}", self.last);
        put_varint(&mut self.entries, rev - self.last);
        put_varint(&mut self.entries, u64::from(sub));
        put_varint(&mut self.entries, key.len() as u64);
        self.entries.extend_from_slice(key);
        self.last = rev;
    }

    /// Writes the logged entries as one row of `shard` and starts over.
    pub(crate) fn flush(
        &mut self,
        table: &mut Table<'_, (u64, u64, u32), &'static [u8]>,
        shard: u64,
    ) -> Result<(), StoreError> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let mut value = Vec::with_capacity(self.entries.len() + 11);
        value.push(PACKED_FORMAT);
        put_varint(&mut value, self.last - self.first);
        value.extend_from_slice(&self.entries);
        let replaced = table
            .insert((shard, self.first, PACKED_SUB), value.as_slice())
            .map_err(StoreError::engine("write changes"))?
            .is_some();
        if replaced {
            // Revisions only grow, so a row starting here cannot exist.
            return Err(corrupt(shard, format!("a packed row at {} already existed", self.first)));
        }
        self.entries.clear();
        Ok(())
    }
}

fn corrupt(shard: u64, detail: String) -> StoreError {
    StoreError::Corrupt { table: "mvcc_changes", shard: ShardId(shard), detail }
}

/// The last revision a packed row starting at `first` holds.
pub(crate) fn packed_last(shard: u64, first: u64, value: &[u8]) -> Result<u64, StoreError> {
    match value.split_first() {
        Some((&PACKED_FORMAT, rest)) => {
            let (span, _) = read_varint(rest)
                .ok_or_else(|| corrupt(shard, format!("packed row at {first}: bad header")))?;
            first
                .checked_add(span)
                .ok_or_else(|| corrupt(shard, format!("packed row at {first}: span {span}")))
        }
        _ => Err(corrupt(shard, format!("packed row at {first}: unknown format"))),
    }
}

/// Calls `visit(revision, sub, key)` for every entry of `shard`'s change
/// log at or after `from` and at or below revision `upto`, in log order,
/// until it returns `false`.
pub(crate) fn for_each_change<T>(
    table: &T,
    shard: u64,
    from: ChangePos,
    upto: u64,
    mut visit: impl FnMut(u64, u32, &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError>
where
    T: ReadableTable<(u64, u64, u32), &'static [u8]>,
{
    if from.0 > upto {
        return Ok(());
    }
    let e = |during| StoreError::engine(during);
    // A packed row starting before `from` may still hold entries at or
    // after it: then it is the last row before `from`'s revision.
    let mut start = (shard, from.0, 0);
    if let Some(item) = table
        .range((shard, 0u64, 0u32)..(shard, from.0, 0u32))
        .map_err(e("range changes"))?
        .next_back()
    {
        let (k, _) = item.map_err(e("read changes"))?;
        let (_, rev, sub) = k.value();
        if sub == PACKED_SUB {
            start = (shard, rev, sub);
        }
    }
    let rows = table.range(start..=(shard, upto, PACKED_SUB)).map_err(e("range changes"))?;
    for item in rows {
        let (k, v) = item.map_err(e("read changes"))?;
        let (_, rev, sub) = k.value();
        let value = v.value();
        if sub != PACKED_SUB {
            if (rev, sub) >= from && !visit(rev, sub, value)? {
                return Ok(());
            }
            continue;
        }
        let bad = |what: &str| corrupt(shard, format!("packed row at {rev}: {what}"));
        let last = packed_last(shard, rev, value)?;
        let mut rest = &value[1..];
        let take = |rest: &mut &[u8]| -> Result<u64, StoreError> {
            let (n, used) = read_varint(rest).ok_or_else(|| bad("bad varint"))?;
            *rest = &rest[used..];
            Ok(n)
        };
        take(&mut rest)?; // the span, read by `packed_last`
        let mut at = rev;
        while !rest.is_empty() {
            at = at.checked_add(take(&mut rest)?).ok_or_else(|| bad("revision overflow"))?;
            let sub = u32::try_from(take(&mut rest)?).map_err(|_| bad("sub out of range"))?;
            let len = usize::try_from(take(&mut rest)?).map_err(|_| bad("key length"))?;
            if len > rest.len() || at > last || sub == PACKED_SUB {
                return Err(bad("entry past the row"));
            }
            let (key, tail) = rest.split_at(len);
            rest = tail;
            if at > upto {
                return Ok(());
            }
            if (at, sub) >= from && !visit(at, sub, key)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Deletes the change log of `shard` below revision `rev`, keeping a
/// packed row that reaches `rev` whole (see the module docs).
pub(crate) fn compact_changes(
    table: &mut Table<'_, (u64, u64, u32), &'static [u8]>,
    shard: u64,
    rev: u64,
) -> Result<(), StoreError> {
    let mut damage = None;
    table
        .retain_in::<(u64, u64, u32), _>((shard, 0, 0)..(shard, rev, 0), |(_, first, sub), v| {
            if sub != PACKED_SUB {
                return false;
            }
            match packed_last(shard, first, v) {
                Ok(last) => last >= rev,
                Err(err) => {
                    damage.get_or_insert(err);
                    true
                }
            }
        })
        .map_err(StoreError::engine("compact changes"))?;
    match damage {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use redb::ReadableDatabase;
    use ringkv_consensus::{LogIndex, ShardId};

    use super::*;
    use crate::mvcc::tables::CHANGES;
    use crate::mvcc::{
        Command, CompactionRequest, DeleteRangeRequest, MvccStore, PutRequest, Revision,
        StoreOptions,
    };

    const SHARD: ShardId = ShardId(4);

    fn put(key: &str, value: &str) -> Command {
        Command::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..PutRequest::default()
        })
    }

    fn delete(key: &str, end: &str) -> Command {
        Command::DeleteRange(DeleteRangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
            ..DeleteRangeRequest::default()
        })
    }

    fn compact(revision: i64) -> Command {
        Command::Compaction(CompactionRequest { revision: Revision(revision), physical: true })
    }

    /// Applies `cmds` in batches of `batch`, after index `after`.
    fn apply(store: &MvccStore, after: u64, cmds: &[Command], batch: usize) {
        for (n, chunk) in cmds.chunks(batch).enumerate() {
            let first = after + (n * batch) as u64 + 1;
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, c)| (LogIndex(first + i as u64), c.clone()))
                .collect();
            for a in store.apply_batch(SHARD, &entries).unwrap() {
                assert!(a.result.is_ok(), "{a:?}");
            }
        }
    }

    /// Everything a reader can see of the change log.
    fn observe(store: &MvccStore) -> (u32, Vec<crate::mvcc::Event>, Vec<Bytes>) {
        let view = store.read().unwrap();
        let all = Bytes::from_static(b"\0");
        let compacted = view.shard_state(SHARD).unwrap().compacted_revision;
        let (events, _) = view.events(SHARD, compacted, &all, &all, usize::MAX).unwrap();
        let chunks = store.snapshot(SHARD).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        (view.hash(SHARD).unwrap(), events, chunks)
    }

    /// Rewrites the shard's change log as the store wrote it before packing:
    /// one row per entry.
    fn unpack(store: &MvccStore) {
        let txn = store.database().begin_write().unwrap();
        {
            let mut table = txn.open_table(CHANGES).unwrap();
            let mut entries = vec![];
            for_each_change(&table, SHARD.0, (0, 0), u64::MAX, |rev, sub, key| {
                entries.push((rev, sub, key.to_vec()));
                Ok(true)
            })
            .unwrap();
            table
                .retain_in::<(u64, u64, u32), _>(
                    (SHARD.0, 0, 0)..=(SHARD.0, u64::MAX, u32::MAX),
                    |_, _| false,
                )
                .unwrap();
            for (rev, sub, key) in &entries {
                table.insert((SHARD.0, *rev, *sub), key.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn rows(store: &MvccStore) -> Vec<(u64, u32)> {
        let txn = store.database().begin_read().unwrap();
        let table = txn.open_table(CHANGES).unwrap();
        table
            .range((SHARD.0, 0u64, 0u32)..=(SHARD.0, u64::MAX, u32::MAX))
            .unwrap()
            .map(|r| {
                let (k, _) = r.unwrap();
                (k.value().1, k.value().2)
            })
            .collect()
    }

    #[test]
    fn a_store_with_one_entry_rows_reads_and_compacts_the_same() {
        let first: Vec<Command> = (0..40)
            .map(|i| put(&format!("k{}", i % 7), &format!("v{i}")))
            .chain([delete("k2", "k4"), put("k3", "back")])
            .collect();
        let (packed, legacy) = (
            MvccStore::open_in_memory(StoreOptions::default()).unwrap(),
            MvccStore::open_in_memory(StoreOptions::default()).unwrap(),
        );
        apply(&packed, 0, &first, 16);
        apply(&legacy, 0, &first, 16);
        assert_eq!(rows(&packed).len(), 3, "one packed row per batch");
        unpack(&legacy);
        assert_eq!(rows(&legacy).len(), 43, "one row per write (the delete wrote two)");
        assert_eq!(observe(&packed), observe(&legacy));

        // New packed rows follow the old ones; a compaction falls inside a
        // packed row of the first store and between rows of the second.
        let more: Vec<Command> = (0..20)
            .map(|i| put(&format!("k{}", i % 5), &format!("w{i}")))
            .chain([compact(30), put("k9", "after")])
            .collect();
        apply(&packed, first.len() as u64, &more, 9);
        apply(&legacy, first.len() as u64, &more, 9);
        assert_eq!(observe(&packed), observe(&legacy));
        assert!(
            rows(&packed).first().is_some_and(|&(rev, sub)| rev < 30 && sub == PACKED_SUB),
            "the packed row reaching the compacted revision stays whole: {:?}",
            rows(&packed)
        );
        assert!(rows(&legacy).first().is_some_and(|&(rev, _)| rev == 30), "{:?}", rows(&legacy));
    }

    #[test]
    fn entries_are_visited_in_order_from_any_position() {
        let store = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
        let cmds: Vec<Command> = (0..30).map(|i| put(&format!("k{i:02}"), "v")).collect();
        apply(&store, 0, &cmds, 7);
        let txn = store.database().begin_read().unwrap();
        let table = txn.open_table(CHANGES).unwrap();
        let visit = |from: ChangePos, upto: u64, stop: usize| {
            let mut seen = vec![];
            for_each_change(&table, SHARD.0, from, upto, |rev, sub, key| {
                seen.push((rev, sub, String::from_utf8(key.to_vec()).unwrap()));
                Ok(seen.len() < stop)
            })
            .unwrap();
            seen
        };
        // Revision 1 is the store's initial one: the puts write 2..=31.
        let all = visit((0, 0), u64::MAX, usize::MAX);
        let expect: Vec<_> = (0..30).map(|i| (i as u64 + 2, 0, format!("k{i:02}"))).collect();
        assert_eq!(all, expect);
        for from in 0..34 {
            for upto in [from, from + 3, 40] {
                let want: Vec<_> =
                    expect.iter().filter(|e| e.0 >= from && e.0 <= upto).cloned().collect();
                assert_eq!(visit((from, 0), upto, usize::MAX), want, "from {from} upto {upto}");
            }
        }
        assert_eq!(visit((5, 1), u64::MAX, usize::MAX)[0].0, 6, "past (5, 0)");
        assert_eq!(visit((0, 0), u64::MAX, 3).len(), 3, "stops when told");
    }

    #[test]
    fn a_damaged_packed_row_is_an_error() {
        let store = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
        let txn = store.database().begin_write().unwrap();
        {
            let mut table = txn.open_table(CHANGES).unwrap();
            let mut good = PackedChanges::default();
            good.push(5, 0, b"a");
            good.push(6, 0, b"b");
            good.flush(&mut table, SHARD.0).unwrap();
            // Claims to end at 7 but holds an entry at 9.
            let bad = [PACKED_FORMAT, 0, 2, 0, 1, b'x'];
            table.insert((SHARD.0, 7, PACKED_SUB), &bad[..]).unwrap();
            let unknown = [9u8, 0];
            table.insert((SHARD.0 + 1, 1, PACKED_SUB), &unknown[..]).unwrap();
            let mut seen = 0;
            let r = for_each_change(&table, SHARD.0, (0, 0), u64::MAX, |_, _, _| {
                seen += 1;
                Ok(true)
            });
            assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
            assert_eq!(seen, 2, "the good row is read first");
            let r = for_each_change(&table, SHARD.0 + 1, (0, 0), u64::MAX, |_, _, _| Ok(true));
            assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
            let r = compact_changes(&mut table, SHARD.0 + 1, 5);
            assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
        }
        txn.abort().unwrap();
    }
}
