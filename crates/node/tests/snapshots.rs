//! Snapshots: a follower that was away while the WAL compacted catches up
//! from a snapshot (InstallSnapshot through the engine, restored into its
//! store), also from a leader that restarted after compacting.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::*;
use ringkv_consensus::NodeId;
use ringkv_node::DATA_SHARD;
use ringkv_node::Engine;
use ringkv_node::testing::Cluster;
use ringkv_storage::Disk;
use ringkv_storage::wal::SNAPSHOT_SPOOL_SUFFIX;

fn small_snapshots<E: Engine>(seed: u64) -> Cluster<E> {
    cluster_with::<E>(3, seed, &|cfg| {
        cfg.snapshot_count = 20;
        cfg.snapshot_catch_up_entries = 5;
        // One chunk per round: every snapshot is read over several rounds
        // while applies go on.
        cfg.snapshot_chunks_per_round = 1;
    })
}

fn restored_snapshot<E: Engine>(c: &Cluster<E>, id: NodeId) -> bool {
    c.node(id)
        .store()
        .node_record(&format!("restored_snapshot/{}", DATA_SHARD.0))
        .unwrap()
        .is_some()
}

fn snapshot_index<E: Engine>(c: &Cluster<E>, id: NodeId) -> u64 {
    c.node(id).shard_status(DATA_SHARD).unwrap().snapshot_index.0
}

fn snapshots_installed<E: Engine>(c: &Cluster<E>, id: NodeId) -> u64 {
    c.node(id).shard_status(DATA_SHARD).unwrap().snapshots_installed
}

/// Snapshot spool files on `id`'s disk: where a snapshot's data waits for a
/// follower, instead of memory.
fn spools<E: Engine>(c: &Cluster<E>, id: NodeId) -> usize {
    c.disk(id).list().unwrap().iter().filter(|n| n.ends_with(SNAPSHOT_SPOOL_SUFFIX)).count()
}

fn a_follower_behind_the_compacted_log_catches_up_by_snapshot<E: Engine>() {
    let mut c = small_snapshots::<E>(41);
    let leader = c.wait_leader(100);
    let away = c.running().into_iter().find(|&id| id != leader).unwrap();
    let others: Vec<_> = c.running().into_iter().filter(|&id| id != away).collect();
    c.net.partition(&[away], &others);
    for i in 0..120 {
        put(&mut c, leader, &format!("k{:03}", i % 50), &format!("v{i}")).unwrap();
    }
    settle_nodes(&mut c, &others);
    assert!(snapshot_index(&c, leader) > 50, "the leader compacted its WAL");
    // The latest snapshot's data, and the one being taken at most.
    assert!((1..=2).contains(&spools(&c, leader)), "{} spools", spools(&c, leader));
    assert!(!restored_snapshot(&c, away));
    assert_eq!(snapshots_installed(&c, away), 0);
    c.net.heal();
    settle(&mut c);
    assert!(restored_snapshot(&c, away), "the follower caught up without a snapshot");
    assert!(spools(&c, away) >= 1, "the installed snapshot is spooled, not kept in memory");
    assert_eq!(snapshots_installed(&c, away), 1, "the status counts the install");
    assert_eq!(snapshots_installed(&c, leader), 0, "a leader sends, it installs none");
    assert_same_state(&c);
    // It goes on from there with the log.
    put(&mut c, leader, "after", "snapshot").unwrap();
    settle(&mut c);
    assert_same_state(&c);
}

fn a_restarted_leader_can_send_its_snapshot<E: Engine>() {
    let mut c = small_snapshots::<E>(42);
    let leader = c.wait_leader(100);
    let away = c.running().into_iter().find(|&id| id != leader).unwrap();
    let others: Vec<_> = c.running().into_iter().filter(|&id| id != away).collect();
    c.net.partition(&[away], &others);
    for i in 0..80 {
        put(&mut c, leader, &format!("k{i}"), "v").unwrap();
    }
    settle_nodes(&mut c, &others);
    // Both nodes that compacted restart: snapshot data is scratch (the
    // WAL's reopening removes its spool), so whoever leads next must
    // rebuild it from its store.
    for &id in &others {
        c.crash(id);
    }
    for &id in &others {
        c.restart(id).unwrap();
    }
    c.net.heal();
    c.wait_leader(300);
    settle(&mut c);
    assert!(restored_snapshot(&c, away));
    for i in 0..80 {
        assert!(local_value(&c, away, &format!("k{i}")).is_some());
    }
    assert_same_state(&c);
}

fn settle_nodes<E: Engine>(c: &mut Cluster<E>, ids: &[NodeId]) {
    let ids = ids.to_vec();
    let ok = c.run_until(STEPS, |c| {
        let applied: Vec<u64> =
            ids.iter().map(|&id| c.node(id).status().raft_applied_index).collect();
        applied.windows(2).all(|w| w[0] == w[1])
    });
    assert!(ok);
}

/// A crash between restoring a snapshot into the store (durable first)
/// and recording it in the WAL leaves the store ahead of its log. The test
/// builds exactly that disk: the lagging node is down, and its store gets
/// the leader's snapshot the way `install_snapshot` writes it, without the
/// WAL record. The restarted node must repair its WAL from the store's
/// record and go on from there.
fn a_crash_between_store_restore_and_wal_record_is_repaired<E: Engine>() {
    use bytes::Bytes;
    use ringkv_consensus::{LogIndex, SnapshotMeta, encode_to_vec};
    use ringkv_storage::mvcc::{MvccStore, StoreOptions};

    let mut c = small_snapshots::<E>(43);
    let leader = c.wait_leader(100);
    let away = c.running().into_iter().find(|&id| id != leader).unwrap();
    let others: Vec<_> = c.running().into_iter().filter(|&id| id != away).collect();
    c.net.partition(&[away], &others);
    for i in 0..30 {
        put(&mut c, leader, &format!("k{i}"), "v").unwrap();
    }
    settle_nodes(&mut c, &others);
    c.crash(away);

    let status = c.node(leader).replica_status(DATA_SHARD).unwrap();
    let export = c.node(leader).store().snapshot(DATA_SHARD).unwrap();
    let index = export.state().applied_index;
    let chunks: Vec<Bytes> = export.map(Result::unwrap).collect();
    let meta = SnapshotMeta { index, epoch: status.epoch, membership: status.membership.clone() };
    assert!(index > LogIndex(20));
    let store =
        MvccStore::open_on(c.disk(away), ringkv_node::STORE_FILE, StoreOptions::default()).unwrap();
    let record = encode_to_vec(&meta);
    let name = format!("restored_snapshot/{}", DATA_SHARD.0);
    store.restore_with_node_records(DATA_SHARD, chunks, &[(name.as_str(), &record)]).unwrap();
    drop(store);

    c.restart(away).unwrap();
    let s = c.node(away).status();
    assert_eq!(s.raft_applied_index, index.0, "the store's state");
    assert_eq!(s.shards[0].snapshot_index, index, "the WAL now records the snapshot");
    c.net.heal();
    c.wait_leader(300);
    put(&mut c, leader, "after", "repair").unwrap();
    settle(&mut c);
    assert!(local_value(&c, away, "after").is_some());
    assert_same_state(&c);
}

engine_tests!(
    a_follower_behind_the_compacted_log_catches_up_by_snapshot,
    a_restarted_leader_can_send_its_snapshot,
    a_crash_between_store_restore_and_wal_record_is_repaired,
);
