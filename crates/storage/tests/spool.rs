//! Snapshot spools: the data of a shard's latest snapshot in a scratch file
//! of the WAL's disk instead of memory, read back exactly as the node layer
//! encoded it, removed when dropped or when the WAL next opens.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use ringkv_consensus::{LogIndex, LogStorage, ShardId, Snapshot, encode_to_vec};
use ringkv_storage::wal::{SNAPSHOT_SPOOL_SUFFIX, SnapshotSpool};
use ringkv_storage::{Disk, SimDisk, Wal};

const A: ShardId = ShardId(1);

/// Chunks with an empty one and lengths past one varint byte.
fn chunks() -> Vec<Bytes> {
    vec![Bytes::from_static(b"first"), Bytes::new(), Bytes::from(vec![7u8; 300])]
}

fn spools(disk: &SimDisk) -> Vec<String> {
    disk.list().unwrap().into_iter().filter(|n| n.ends_with(SNAPSHOT_SPOOL_SUFFIX)).collect()
}

/// A WAL on `disk` whose shard A has entries 1..=5 compacted up to 2.
fn compacted_wal(disk: &SimDisk) -> Wal<SimDisk> {
    let mut wal = Wal::open(disk.clone(), test_options()).unwrap();
    wal.append(A, &entries(1, 6, 1)).unwrap();
    wal.sync().unwrap();
    wal.compact(A, LogIndex(2), members()).unwrap();
    wal.sync().unwrap();
    wal
}

#[test]
fn a_spool_reads_back_the_encoded_chunks_and_is_removed_when_dropped() {
    let disk = SimDisk::new(1);
    let mut spool = SnapshotSpool::create(&disk, A, LogIndex(9), 1).unwrap();
    assert_eq!(spool.read().unwrap(), encode_to_vec(&Vec::<Bytes>::new()));
    for chunk in chunks() {
        spool.push(&chunk).unwrap();
    }
    let expected = encode_to_vec(&chunks());
    assert_eq!(spool.read().unwrap(), expected);
    assert_eq!((spool.chunks(), spool.data_bytes()), (3, expected.len() as u64));
    assert_eq!(spools(&disk).len(), 1);
    drop(spool);
    assert_eq!(spools(&disk), Vec::<String>::new());
}

#[test]
fn the_shard_log_serves_a_spooled_snapshot() {
    let disk = SimDisk::new(2);
    let wal = compacted_wal(&disk);
    let mut log = wal.log(A);
    let mut spool = log.create_snapshot_spool(LogIndex(2)).unwrap();
    for chunk in chunks() {
        spool.push(&chunk).unwrap();
    }
    log.set_snapshot_spool(LogIndex(2), spool);
    assert!(log.snapshot_spooled());
    let snap = log.snapshot().unwrap();
    assert_eq!((snap.meta.index, snap.data), (LogIndex(2), Bytes::from(encode_to_vec(&chunks()))));
    // Replaced: the old spool's file goes.
    let next = log.create_snapshot_spool(LogIndex(2)).unwrap();
    assert_eq!(spools(&disk).len(), 2);
    log.set_snapshot_spool(LogIndex(2), next);
    assert_eq!(spools(&disk).len(), 1);
}

#[test]
fn an_installed_snapshot_is_spooled_unless_its_data_is_not_chunks() {
    let disk = SimDisk::new(3);
    let wal = compacted_wal(&disk);
    let mut log = wal.log(A);
    let meta = log.snapshot_meta();
    let data = Bytes::from(encode_to_vec(&chunks()));
    log.install_snapshot(Snapshot { meta: meta.clone(), data: data.clone() });
    assert!(log.snapshot_spooled());
    assert_eq!(log.snapshot().unwrap().data, data);
    // Not the node layer's format: kept in memory, served as given.
    let odd = Bytes::from_static(b"\xffnot chunks");
    log.install_snapshot(Snapshot { meta, data: odd.clone() });
    assert!(!log.snapshot_spooled());
    assert_eq!(log.snapshot().unwrap().data, odd);
    assert_eq!(spools(&disk), Vec::<String>::new());
}

#[test]
fn spools_left_by_a_crash_are_removed_when_the_wal_opens() {
    let disk = SimDisk::new(4);
    let wal = compacted_wal(&disk);
    let mut spool = wal.log(A).create_snapshot_spool(LogIndex(2)).unwrap();
    spool.push(b"chunk").unwrap();
    // A crash runs no destructor.
    std::mem::forget(spool);
    drop(wal);
    assert_eq!(spools(&disk).len(), 1);
    let _wal = Wal::open(disk.clone(), test_options()).unwrap();
    assert_eq!(spools(&disk), Vec::<String>::new());
}
