//! The store on the `Disk` trait: simulated crashes (unsynced writes lost
//! or torn) bring it back to a state that is exactly entries `1..=applied`
//! for some `applied` at least the last durable checkpoint; the node
//! layer's records travel with the data, with snapshots and with hashes.
#![allow(clippy::unwrap_used)]

mod mvcc_common;

use bytes::Bytes;
use mvcc_common::*;
use ringkv_consensus::{DetRng, LogIndex, ShardId};
use ringkv_storage::disk::CrashMode;
use ringkv_storage::mvcc::*;
use ringkv_storage::{Disk, SimDisk};

const SHARD: ShardId = ShardId(3);
const FILE: &str = "state.redb";

fn options() -> StoreOptions {
    // Small checkpoint intervals and cache, so crashes land between
    // checkpoints and redb writes pages out between them too.
    StoreOptions {
        checkpoint_interval_applies: 25,
        cache_bytes: 256 << 10,
        ..StoreOptions::default()
    }
}

/// Applies entries `from..=to` with a record naming the last index of each
/// batch; returns the highest index known durable.
fn apply_with_records(store: &MvccStore, from: u64, to: u64, rng: &mut DetRng) -> u64 {
    let mut durable = store.durable_applied_index(SHARD).0;
    let mut i = from;
    while i <= to {
        let end = to.min(i + rng.range(0, 12));
        let (_, info) = store
            .write(|b| {
                for j in i..=end {
                    b.apply(SHARD, LogIndex(j), &numbered_command(j))?;
                }
                b.set_record(SHARD, "last", Some(&end.to_le_bytes()))
            })
            .unwrap();
        if info.durable {
            durable = end;
        } else if rng.chance(1, 10) {
            store.checkpoint().unwrap();
            durable = end;
        }
        i = end + 1;
    }
    durable
}

#[test]
fn crashes_keep_applied_index_data_and_records_consistent() {
    for seed in 0..12u64 {
        let disk = SimDisk::new(seed);
        let mut rng = DetRng::new(seed ^ 0xd15c);
        let mut next = 1;
        for crash in 0..4 {
            let store = MvccStore::open_on(&disk, FILE, options()).unwrap();
            let applied = store.applied_index(SHARD).0;
            assert_eq!(applied + 1, next, "seed {seed}: reopening again changed the state");
            let to = applied + rng.range(20, 120);
            let durable = apply_with_records(&store, applied + 1, to, &mut rng);
            let mode = [CrashMode::Random, CrashMode::LoseUnsynced, CrashMode::KeepUnsynced]
                [rng.range(0, 3) as usize];
            disk.crash_with(mode);
            drop(store);

            let store = MvccStore::open_on(&disk, FILE, options()).unwrap();
            let back = store.applied_index(SHARD).0;
            assert!(
                back >= durable && back <= to,
                "seed {seed} crash {crash} ({mode:?}): applied {back}, durable {durable}, wrote to {to}"
            );
            let expected = reference(SHARD, back);
            if back > 0 {
                expected.write(|b| b.set_record(SHARD, "last", Some(&back.to_le_bytes()))).unwrap();
            }
            assert_eq!(
                dump(&store, SHARD),
                dump(&expected, SHARD),
                "seed {seed} crash {crash}: data or records differ from entries 1..={back}"
            );
            next = back + 1;
        }
    }
}

#[test]
fn a_new_store_file_survives_a_crash_before_any_checkpoint() {
    let disk = SimDisk::new(1);
    let store = MvccStore::open_on(&disk, FILE, options()).unwrap();
    store.apply(SHARD, LogIndex(1), &numbered_command(1)).unwrap();
    disk.crash_with(CrashMode::LoseUnsynced);
    drop(store);
    assert!(disk.list().unwrap().contains(&FILE.to_owned()), "file creation must be durable");
    let store = MvccStore::open_on(&disk, FILE, options()).unwrap();
    assert_eq!(store.applied_index(SHARD), LogIndex::ZERO);
}

#[test]
fn node_records_are_durable_and_stay_out_of_snapshots() {
    let disk = SimDisk::new(2);
    let store = MvccStore::open_on(&disk, FILE, options()).unwrap();
    store.set_node_record("member_id", Some(b"42")).unwrap();
    store
        .write(|b| {
            b.apply(SHARD, LogIndex(1), &numbered_command(1))?;
            b.set_record(SHARD, "members/1", Some(b"alpha"))?;
            b.set_record(SHARD, "members/2", Some(b"beta"))?;
            b.set_record(SHARD, "alarms", Some(b"none"))
        })
        .unwrap();
    disk.crash_with(CrashMode::LoseUnsynced);
    drop(store);
    let store = MvccStore::open_on(&disk, FILE, options()).unwrap();
    assert_eq!(store.node_record("member_id").unwrap().as_deref(), Some(&b"42"[..]));

    // The unsynced apply was lost; apply again and move the shard by snapshot.
    store
        .write(|b| {
            b.apply(SHARD, LogIndex(1), &numbered_command(1))?;
            b.set_record(SHARD, "members/1", Some(b"alpha"))?;
            b.set_record(SHARD, "members/2", Some(b"beta"))
        })
        .unwrap();
    let chunks: Vec<Bytes> = store.snapshot(SHARD).unwrap().map(Result::unwrap).collect();
    let other = MvccStore::open_in_memory(StoreOptions::default()).unwrap();
    other
        .write(|b| {
            b.skip(SHARD, LogIndex(1))?;
            b.set_record(SHARD, "stale", Some(b"gone after restore"))
        })
        .unwrap();
    other.restore_with_node_records(SHARD, chunks, &[("snapshot/3", b"meta")]).unwrap();
    let view = other.read().unwrap();
    let records = view.records(SHARD, "").unwrap();
    let names: Vec<_> = records.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["members/1", "members/2"]);
    assert_eq!(view.records(SHARD, "members/").unwrap().len(), 2);
    assert_eq!(view.record(SHARD, "members/2").unwrap().as_deref(), Some(&b"beta"[..]));
    assert_eq!(other.node_record("snapshot/3").unwrap().as_deref(), Some(&b"meta"[..]));
    assert_eq!(other.node_record("member_id").unwrap(), None, "node records never travel");
    assert_eq!(view.hash(SHARD).unwrap(), store.read().unwrap().hash(SHARD).unwrap());
}

#[test]
fn hash_kv_agrees_between_equal_replicas_and_differs_otherwise() {
    let a = reference(SHARD, 300);
    let b = reference(SHARD, 300);
    let c = reference(SHARD, 301);
    let (va, vb, vc) = (a.read().unwrap(), b.read().unwrap(), c.read().unwrap());
    let ha = va.hash_kv(SHARD, Revision::ZERO).unwrap();
    assert_eq!(ha, vb.hash_kv(SHARD, Revision::ZERO).unwrap());
    assert_eq!(va.hash(SHARD).unwrap(), vb.hash(SHARD).unwrap());
    let state = va.shard_state(SHARD).unwrap();
    assert_eq!(ha.hash_revision, state.revision);
    assert_eq!(ha.compact_revision, state.compacted_revision);
    let hc = vc.hash_kv(SHARD, Revision::ZERO).unwrap();
    if hc.revision != ha.revision {
        assert_ne!(hc.hash, ha.hash, "a write must change the hash");
        // Up to the older revision, the longer history hashes the same,
        // unless entry 301 compacted.
        if hc.compact_revision == ha.compact_revision {
            assert_eq!(vc.hash_kv(SHARD, ha.revision).unwrap().hash, ha.hash);
        }
    }
    let future = Revision(state.revision.0 + 1);
    assert!(matches!(
        va.hash_kv(SHARD, future),
        Err(ReadError::Request(MvccError::FutureRevision { .. }))
    ));
    if state.compacted_revision.0 > 1 {
        let old = Revision(state.compacted_revision.0 - 1);
        assert!(matches!(
            va.hash_kv(SHARD, old),
            Err(ReadError::Request(MvccError::Compacted { .. }))
        ));
    }
}

#[test]
fn sizes_are_reported() {
    let disk = SimDisk::new(3);
    let store = MvccStore::open_on(&disk, FILE, options()).unwrap();
    apply_numbered(&store, SHARD, 1, 200);
    store.checkpoint().unwrap();
    let size = store.size_bytes().unwrap();
    let in_use = store.size_in_use_bytes().unwrap();
    assert!(size > 0 && in_use > 0 && in_use <= size, "size {size}, in use {in_use}");
    assert_eq!(
        MvccStore::open_in_memory(StoreOptions::default()).unwrap().size_bytes().unwrap(),
        0
    );
}
