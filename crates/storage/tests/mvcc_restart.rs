//! Restart: the applied index always matches the data, with or without a
//! durable checkpoint, and replaying the entries after it reproduces the
//! state.
#![allow(clippy::unwrap_used)]

mod mvcc_common;

use mvcc_common::*;
use ringkv_consensus::{LogIndex, ShardId};
use ringkv_storage::mvcc::*;

const SHARD: ShardId = ShardId(4);
const ENTRIES: u64 = 600;

fn no_auto_checkpoint() -> StoreOptions {
    StoreOptions {
        checkpoint_interval_applies: u64::MAX,
        checkpoint_interval_bytes: u64::MAX,
        ..StoreOptions::default()
    }
}

/// Reopens `path`, checks the applied index against the data, replays the
/// rest and checks the final state. Returns the applied index found.
fn reopen_and_check(path: &std::path::Path) -> u64 {
    let store = MvccStore::open(path, no_auto_checkpoint()).unwrap();
    let applied = store.applied_index(SHARD).0;
    assert_eq!(store.durable_applied_index(SHARD).0, applied, "reopened state is durable");
    assert_eq!(
        dump(&store, SHARD),
        dump(&reference(SHARD, applied), SHARD),
        "state at applied index {applied}"
    );
    apply_numbered(&store, SHARD, applied + 1, ENTRIES);
    assert_eq!(dump(&store, SHARD), dump(&reference(SHARD, ENTRIES), SHARD), "after replay");
    applied
}

#[test]
fn restart_without_a_durable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sm.redb");
    {
        let store = MvccStore::open(&path, no_auto_checkpoint()).unwrap();
        apply_numbered(&store, SHARD, 1, ENTRIES);
        assert_eq!(store.applied_index(SHARD), LogIndex(ENTRIES));
        assert_eq!(store.durable_applied_index(SHARD), LogIndex::ZERO);
    }
    // Whatever a close without checkpoint kept, it is a consistent prefix.
    let applied = reopen_and_check(&path);
    assert!(applied <= ENTRIES);
}

#[test]
fn restart_after_a_checkpoint_keeps_at_least_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sm.redb");
    {
        let store = MvccStore::open(&path, no_auto_checkpoint()).unwrap();
        apply_numbered(&store, SHARD, 1, 250);
        store.checkpoint().unwrap();
        assert_eq!(store.durable_applied_index(SHARD), LogIndex(250));
        apply_numbered(&store, SHARD, 251, 400);
        assert_eq!(store.durable_applied_index(SHARD), LogIndex(250));
    }
    let applied = reopen_and_check(&path);
    assert!((250..=400).contains(&applied), "applied {applied}");
}

#[test]
fn restart_after_a_final_checkpoint_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sm.redb");
    {
        let store = MvccStore::open(&path, no_auto_checkpoint()).unwrap();
        apply_numbered(&store, SHARD, 1, ENTRIES);
        store.checkpoint().unwrap();
    }
    assert_eq!(reopen_and_check(&path), ENTRIES);
}

#[test]
fn automatic_checkpoints_follow_the_entry_budget() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { checkpoint_interval_applies: 100, ..StoreOptions::default() };
    let store = MvccStore::open(dir.path().join("sm.redb"), options).unwrap();
    let mut durable = vec![];
    for i in 1..=350u64 {
        let (_, info) = store.write(|b| b.apply(SHARD, LogIndex(i), &numbered_command(i))).unwrap();
        if info.durable {
            durable.push(i);
            assert_eq!(store.durable_applied_index(SHARD), LogIndex(i));
        }
    }
    assert_eq!(durable, [100, 200, 300]);
    assert_eq!(store.durable_applied_index(SHARD), LogIndex(300));
}

#[test]
fn skipped_entries_advance_the_applied_index() {
    let store = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
    store
        .write(|b| {
            b.skip(SHARD, LogIndex(1))?;
            b.apply(SHARD, LogIndex(2), &numbered_command(2))?;
            b.skip(SHARD, LogIndex(3))
        })
        .unwrap();
    assert_eq!(store.applied_index(SHARD), LogIndex(3));
    assert_eq!(store.read().unwrap().shard_state(SHARD).unwrap().applied_index, LogIndex(3));
}
