//! The engine's page cache is bounded by `StoreOptions::cache_bytes`: a
//! store whose pages fit in its cache reads each from the disk once, a store
//! whose cache is smaller than its pages reads them again on every pass.
//! The node's resident memory depends on this bound (issue 10's memory
//! target), so a store that ignored it would show here, not only in RSS.
#![allow(clippy::unwrap_used)]

mod mvcc_common;

use mvcc_common::*;
use ringkv_consensus::ShardId;
use ringkv_storage::SimDisk;
use ringkv_storage::mvcc::*;

const SHARD: ShardId = ShardId(1);
const FILE: &str = "state.redb";
/// Keys written; with [`VALUE_BYTES`] about 2 MiB of pages.
const KEYS: usize = 2_000;
const VALUE_BYTES: usize = 1_024;

/// Disk reads of the second of two full scans of a reopened store (the
/// first fills the cache).
fn rereads(cache_bytes: usize) -> u64 {
    let disk = SimDisk::new(1);
    let options = StoreOptions { cache_bytes, ..StoreOptions::default() };
    let value = "v".repeat(VALUE_BYTES);
    let mut shard = Shard::on(MvccStore::open_on(&disk, FILE, options.clone()).unwrap(), SHARD);
    for i in 0..KEYS {
        shard.put(&format!("key-{i:05}"), &value);
    }
    shard.store.checkpoint().unwrap();
    drop(shard);

    // Reopened, so the cache starts empty whatever the writes left in it.
    let store = MvccStore::open_on(&disk, FILE, options).unwrap();
    let all = range("key-", "key.");
    assert_eq!(store.range(SHARD, &all).unwrap().kvs.len(), KEYS);
    let before = disk.stats().reads;
    assert_eq!(store.range(SHARD, &all).unwrap().kvs.len(), KEYS);
    disk.stats().reads - before
}

#[test]
fn a_cache_larger_than_the_data_serves_the_second_scan() {
    assert_eq!(rereads(64 << 20), 0);
}

#[test]
fn a_cache_smaller_than_the_data_rereads_it() {
    // 64 KiB of cache for about 2 MiB of pages: most of them again.
    let reads = rereads(64 << 10);
    assert!(reads > (KEYS / 8) as u64, "only {reads} reads: the cache held more than its bound");
}
