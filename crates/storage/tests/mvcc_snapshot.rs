//! Snapshots: a consistent export while writes continue, restore into a
//! fresh store, and refusal of corrupt, truncated or reordered streams.
#![allow(clippy::unwrap_used)]

mod mvcc_common;

use bytes::Bytes;
use mvcc_common::*;
use ringkv_consensus::{LogIndex, ShardId};
use ringkv_storage::mvcc::*;

const SHARD: ShardId = ShardId(5);

/// A store whose shard spans several snapshot chunks.
fn big_store(entries: u64) -> MvccStore {
    big_store_of(entries, b'v')
}

fn big_store_of(entries: u64, fill: u8) -> MvccStore {
    let store = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
    let value = Bytes::from(vec![fill; 1000]);
    let mut i = 1;
    while i <= entries {
        let end = entries.min(i + 499);
        let batch: Vec<_> = (i..=end)
            .map(|j| {
                let key = Bytes::from(format!("big/{:06}", j % 2000));
                (
                    LogIndex(j),
                    Command::Put(PutRequest { key, value: value.clone(), ..Default::default() }),
                )
            })
            .collect();
        store.apply_batch(SHARD, &batch).unwrap();
        i = end + 1;
    }
    store
}

#[test]
fn export_while_writing_equals_the_state_at_its_index() {
    let store = big_store(3000);
    apply_numbered_after(&store, 3000, 3300);
    let mut export = store.snapshot(SHARD).unwrap();
    let at = export.state();
    assert_eq!(at.applied_index, LogIndex(3300));
    let expected = {
        // The same history, built independently.
        let fresh = big_store(3000);
        apply_numbered_after(&fresh, 3000, 3300);
        dump(&fresh, SHARD)
    };

    // Interleave: a chunk, then more writes (including a compaction and a
    // lease revoke), then the next chunk...
    let mut chunks = vec![];
    let mut next = 3301;
    for chunk in export.by_ref() {
        chunks.push(chunk.unwrap());
        apply_numbered_after(&store, next - 1, next + 49);
        store
            .apply(
                SHARD,
                LogIndex(next + 50),
                &Command::Compaction(CompactionRequest {
                    revision: Revision(
                        store.read().unwrap().shard_state(SHARD).unwrap().revision.0 - 10,
                    ),
                    physical: true,
                }),
            )
            .unwrap();
        next += 51;
    }
    assert!(chunks.len() >= 4, "export spans several data chunks: {}", chunks.len());
    assert_eq!(chunks, expected, "the export is the state at its applied index");

    let target = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
    let restored = target.restore(SHARD, chunks).unwrap();
    assert_eq!(restored, at);
    assert_eq!(target.applied_index(SHARD), LogIndex(3300));
    assert_eq!(target.durable_applied_index(SHARD), LogIndex(3300));
    assert_eq!(dump(&target, SHARD), expected);
    // The restored shard goes on applying where the snapshot ended.
    apply_numbered_after(&target, 3300, 3400);
    let reference = big_store(3000);
    apply_numbered_after(&reference, 3000, 3400);
    assert_eq!(dump(&target, SHARD), dump(&reference, SHARD));
}

/// Applies `numbered_command(from + 1..=to)` at those indexes.
fn apply_numbered_after(store: &MvccStore, from: u64, to: u64) {
    apply_numbered(store, SHARD, from + 1, to);
}

#[test]
fn restore_replaces_existing_state_and_leaves_other_shards() {
    let source = reference(SHARD, 400);
    let chunks = dump(&source, SHARD);
    let target = reference(SHARD, 900);
    apply_numbered(&target, ShardId(6), 1, 50);
    let other = dump(&target, ShardId(6));
    target.restore(SHARD, chunks.clone()).unwrap();
    assert_eq!(dump(&target, SHARD), chunks);
    assert_eq!(dump(&target, ShardId(6)), other);
    // Into a different shard id too.
    target.restore(ShardId(77), chunks).unwrap();
    let read = |s| target.range(s, &range("\0", "\0")).unwrap();
    assert_eq!(read(ShardId(77)), read(SHARD));
}

fn refused(chunks: Vec<Bytes>) -> SnapshotError {
    let target = reference(SHARD, 300);
    let before = dump(&target, SHARD);
    let e = target.restore(SHARD, chunks).expect_err("restore must refuse");
    assert_eq!(dump(&target, SHARD), before, "a refused restore changes nothing");
    assert_eq!(target.applied_index(SHARD), LogIndex(300));
    e
}

#[test]
fn corrupt_snapshots_are_refused() {
    let good = dump(&big_store(2500), SHARD);
    assert!(good.len() >= 4);

    // A flipped bit in a data chunk.
    let mut bad = good.clone();
    let mut chunk = bad[1].to_vec();
    let mid = chunk.len() / 2;
    chunk[mid] ^= 0x10;
    bad[1] = Bytes::from(chunk);
    let e = refused(bad);
    assert!(matches!(e, SnapshotError::ChecksumMismatch { chunk: 1, .. }), "{e}");
    assert!(e.to_string().contains("corrupt"), "{e}");

    // A flipped bit in the header and in the trailer.
    for i in [0, good.len() - 1] {
        let mut bad = good.clone();
        let mut chunk = bad[i].to_vec();
        chunk[1] ^= 0x01;
        bad[i] = Bytes::from(chunk);
        assert!(matches!(refused(bad), SnapshotError::ChecksumMismatch { .. }));
    }

    // A missing chunk, two swapped chunks, a missing trailer, an extra chunk.
    let mut bad = good.clone();
    bad.remove(2);
    assert!(matches!(refused(bad), SnapshotError::Malformed { chunk: 2, .. }));
    let mut bad = good.clone();
    bad.swap(1, 2);
    assert!(matches!(refused(bad), SnapshotError::Malformed { chunk: 1, .. }));
    let mut bad = good.clone();
    bad.pop();
    assert!(matches!(refused(bad), SnapshotError::Truncated { .. }));
    assert!(matches!(refused(vec![]), SnapshotError::Truncated { chunks: 0 }));
    let mut bad = good.clone();
    bad.push(good[1].clone());
    assert!(matches!(refused(bad), SnapshotError::Malformed { .. }));

    // A data chunk replaced by a well-formed chunk of another snapshot:
    // each chunk checks out, the trailer's digest does not.
    let other = dump(&big_store_of(2500, b'w'), SHARD);
    let mut bad = good.clone();
    bad[1] = other[1].clone();
    let e = refused(bad);
    assert!(matches!(e, SnapshotError::TotalsMismatch { .. }), "{e}");

    // Not a snapshot at all.
    assert!(matches!(
        refused(vec![Bytes::from_static(b"hello world")]),
        SnapshotError::ChecksumMismatch { .. }
    ));
}

#[test]
fn empty_shard_snapshot_roundtrips() {
    let empty = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
    let chunks = dump(&empty, SHARD);
    assert_eq!(chunks.len(), 2, "header and trailer");
    let target = reference(SHARD, 50);
    target.restore(SHARD, chunks).unwrap();
    assert_eq!(target.applied_index(SHARD), LogIndex(0));
    assert!(target.range(SHARD, &range("\0", "\0")).unwrap().kvs.is_empty());
    assert!(target.read().unwrap().leases(SHARD).unwrap().is_empty());
}
