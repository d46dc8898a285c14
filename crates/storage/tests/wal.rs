//! WAL behaviour, run on the real disk and on the simulated one.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use bytes::Bytes;
use common::*;
use ringkv_consensus::{
    Epoch, HardState, LogError, LogIndex, LogStorage, NodeId, ShardId, SnapshotMeta,
};
use ringkv_storage::disk::CrashMode;
use ringkv_storage::wal::{CompactionRefusal, WalError};
use ringkv_storage::{BatchSeq, Wal, WalOptions};

const A: ShardId = ShardId(1);
const B: ShardId = ShardId(2);
const C: ShardId = ShardId(3);

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { epoch: Epoch::term(term), vote: Some(NodeId(vote)), commit: LogIndex(commit) }
}

fn empty_wal_opens_and_reopens<H: Harness>(h: &H) {
    {
        let mut wal = open(h, test_options());
        assert_eq!(wal.durable(), BatchSeq(0));
        assert_eq!(wal.sync().unwrap(), BatchSeq(0));
        assert_eq!(wal.stats().batches, 0, "nothing buffered, nothing written");
        assert!(wal.shards().is_empty());
        assert_eq!(h.segment_files(), ["0000000000000001.wal"]);
    }
    let wal = open(h, test_options());
    assert_eq!(wal.recovery_report().segments, 1);
    assert_eq!(wal.recovery_report().torn_tail, None);
    assert_eq!(wal.log(A).last_index(), LogIndex::ZERO);
}

fn append_sync_reopen_roundtrip<H: Harness>(h: &H) {
    {
        let mut wal = open(h, test_options());
        assert_eq!(wal.append(A, &entries(1, 4, 1)).unwrap(), BatchSeq(1));
        assert_eq!(wal.append(B, &entries(1, 3, 2)).unwrap(), BatchSeq(1));
        wal.set_hard_state(A, hs(1, 1, 2)).unwrap();
        wal.append(A, &entries(4, 6, 1)).unwrap();
        let log_a = wal.log(A);
        assert_eq!(log_a.last_index(), LogIndex::ZERO, "nothing is visible before the sync");
        assert_eq!(wal.sync().unwrap(), BatchSeq(1));
        assert_eq!(wal.durable(), BatchSeq(1));
        assert_eq!(wal.stats().batches, 1, "one sync, one batch, whatever the shard count");
        assert_eq!(all_entries(&log_a), entries(1, 6, 1));
        assert_eq!(log_a.hard_state(), hs(1, 1, 2));
        wal.set_hard_state(B, hs(2, 3, 1)).unwrap();
        assert_eq!(wal.sync().unwrap(), BatchSeq(2));
    }
    let wal = open(h, test_options());
    assert_eq!(wal.durable(), BatchSeq(2));
    assert_eq!(wal.shards(), [A, B]);
    assert_eq!(all_entries(&wal.log(A)), entries(1, 6, 1));
    assert_eq!(all_entries(&wal.log(B)), entries(1, 3, 2));
    assert_eq!(wal.log(A).hard_state(), hs(1, 1, 2));
    assert_eq!(wal.log(B).hard_state(), hs(2, 3, 1));
    assert_eq!(wal.recovery_report().batches, 2);
}

fn unsynced_records_are_lost<H: Harness>(h: &H) {
    {
        let mut wal = open(h, test_options());
        wal.append(A, &entries(1, 3, 1)).unwrap();
        wal.sync().unwrap();
        wal.append(A, &entries(3, 5, 1)).unwrap();
        wal.set_hard_state(A, hs(1, 1, 4)).unwrap();
    }
    h.crash(CrashMode::KeepUnsynced);
    let wal = open(h, test_options());
    assert_eq!(all_entries(&wal.log(A)), entries(1, 3, 1));
    assert_eq!(wal.log(A).hard_state(), HardState::default());
}

fn truncation_replaces_the_suffix<H: Harness>(h: &H) {
    {
        let mut wal = open(h, small_options());
        wal.append(A, &entries(1, 11, 1)).unwrap();
        wal.sync().unwrap();
        // A new leader overwrites 6.. with its own entries.
        wal.append(A, &entries(6, 8, 2)).unwrap();
        wal.sync().unwrap();
        let mut expected = entries(1, 6, 1);
        expected.extend(entries(6, 8, 2));
        assert_eq!(all_entries(&wal.log(A)), expected);
        // Truncate and extend again within one batch.
        wal.append(A, &entries(7, 9, 3)).unwrap();
        wal.append(A, &entries(9, 10, 3)).unwrap();
        wal.sync().unwrap();
    }
    let wal = open(h, small_options());
    let mut expected = entries(1, 6, 1);
    expected.extend(entries(6, 7, 2));
    expected.extend(entries(7, 10, 3));
    assert_eq!(all_entries(&wal.log(A)), expected);
    assert_eq!(wal.log(A).epoch(LogIndex(6)), Ok(Epoch::term(2)));
}

/// Writes `n` entries to `shard` from `from`, one sync per `per_batch`.
fn fill<D: ringkv_storage::Disk>(wal: &mut Wal<D>, shard: ShardId, from: u64, n: u64, term: u64) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(4) {
        let es: Vec<_> = chunk.iter().map(|&i| entry_sized(i, term, 100)).collect();
        wal.append(shard, &es).unwrap();
        wal.sync().unwrap();
    }
}

fn compaction_deletes_segments_nobody_needs<H: Harness>(h: &H) {
    {
        let mut wal = open(h, small_options());
        fill(&mut wal, A, 1, 200, 1);
        fill(&mut wal, B, 1, 50, 1);
        let before = wal.segment_ids();
        assert!(before.len() > 5, "small segments rotate: {before:?}");
        wal.compact(A, LogIndex(190), members()).unwrap();
        wal.compact(B, LogIndex(40), members()).unwrap();
        wal.sync().unwrap();
        let after = wal.segment_ids();
        assert!(after.len() < before.len() / 2, "{before:?} -> {after:?}");
        assert_eq!(after.last(), before.last());
        assert!(wal.stats().segments_deleted > 0);
        assert_eq!(h.segment_files().len(), after.len());
        let log = wal.log(A);
        assert_eq!(log.first_index(), LogIndex(191));
        assert_eq!(log.snapshot_meta().index, LogIndex(190));
        assert_eq!(log.snapshot_meta().epoch, Epoch::term(1));
        assert_eq!(log.snapshot_meta().membership, members());
        assert!(matches!(
            log.entries(LogIndex(190), LogIndex(192), 100),
            Err(LogError::Compacted { .. })
        ));
        assert_eq!(log.epoch(LogIndex(190)), Ok(Epoch::term(1)));
    }
    let wal = open(h, small_options());
    let log = wal.log(A);
    assert_eq!(log.snapshot_meta().index, LogIndex(190));
    assert_eq!(all_entries(&log), (191..201).map(|i| entry_sized(i, 1, 100)).collect::<Vec<_>>());
    assert_eq!(
        all_entries(&wal.log(B)),
        (41..51).map(|i| entry_sized(i, 1, 100)).collect::<Vec<_>>()
    );
}

fn an_idle_shard_pins_the_oldest_segment<H: Harness>(h: &H) {
    let mut wal = open(h, small_options());
    fill(&mut wal, A, 1, 3, 1);
    fill(&mut wal, B, 1, 200, 1);
    wal.compact(B, LogIndex(200), members()).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.segment_ids()[0], 1);
    assert_eq!(wal.oldest_segment_pinned_by(), [A]);
    wal.compact(A, LogIndex(3), members()).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.segment_ids().len(), 1, "only the current segment remains");
    assert!(wal.oldest_segment_pinned_by().is_empty());
}

fn hard_states_and_snapshots_do_not_pin_segments<H: Harness>(h: &H) {
    {
        let mut wal = open(h, small_options());
        wal.set_hard_state(C, hs(7, 2, 0)).unwrap();
        let meta = SnapshotMeta { index: LogIndex(0), epoch: Epoch::ZERO, membership: members() };
        wal.install_snapshot(C, &meta).unwrap();
        wal.sync().unwrap();
        fill(&mut wal, B, 1, 200, 1);
        wal.compact(B, LogIndex(200), members()).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.segment_ids().len(), 1, "segment 1 held only C's hard state");
        assert!(wal.segment_ids()[0] > 1);
    }
    let wal = open(h, small_options());
    assert_eq!(wal.log(C).hard_state(), hs(7, 2, 0));
    assert_eq!(wal.log(C).snapshot_meta().membership, members());
    assert_eq!(wal.log(B).snapshot_meta().index, LogIndex(200));
    assert_eq!(wal.log(B).last_index(), LogIndex(200));
}

fn install_snapshot_keeps_only_an_agreeing_suffix<H: Harness>(h: &H) {
    {
        let mut wal = open(h, test_options());
        wal.append(A, &entries(1, 11, 2)).unwrap();
        wal.append(B, &entries(1, 11, 2)).unwrap();
        wal.sync().unwrap();
        // A's log agrees with the snapshot's last entry: keep 8..10.
        let agree =
            SnapshotMeta { index: LogIndex(7), epoch: Epoch::term(2), membership: members() };
        wal.install_snapshot(A, &agree).unwrap();
        // B's does not: drop everything.
        let other =
            SnapshotMeta { index: LogIndex(7), epoch: Epoch::term(3), membership: members() };
        wal.install_snapshot(B, &other).unwrap();
        wal.append(B, &entries(8, 9, 3)).unwrap();
        wal.sync().unwrap();
        assert_eq!(all_entries(&wal.log(A)), entries(8, 11, 2));
        assert_eq!(all_entries(&wal.log(B)), entries(8, 9, 3));
    }
    let wal = open(h, test_options());
    assert_eq!(all_entries(&wal.log(A)), entries(8, 11, 2));
    assert_eq!(wal.log(A).snapshot_meta().index, LogIndex(7));
    assert_eq!(all_entries(&wal.log(B)), entries(8, 9, 3));
    assert_eq!(wal.log(B).epoch(LogIndex(7)), Ok(Epoch::term(3)));
}

fn removed_shards_are_forgotten<H: Harness>(h: &H) {
    {
        let mut wal = open(h, small_options());
        fill(&mut wal, A, 1, 100, 1);
        wal.set_hard_state(A, hs(1, 1, 1)).unwrap();
        fill(&mut wal, B, 1, 4, 1);
        wal.remove_shard(A).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.shards(), [B]);
        assert_eq!(wal.log(A).last_index(), LogIndex::ZERO);
        assert_eq!(wal.log(A).hard_state(), HardState::default());
        assert!(wal.segment_ids().len() <= 2, "A's segments are gone: {:?}", wal.segment_ids());
        // Unknown shards: nothing to write.
        assert_eq!(wal.remove_shard(ShardId(99)).unwrap(), wal.durable());
        // Removing twice: the second waits for the first's batch.
        fill(&mut wal, C, 1, 2, 1);
        let first = wal.remove_shard(C).unwrap();
        assert!(first > wal.durable());
        assert_eq!(wal.remove_shard(C).unwrap(), first);
        assert_eq!(wal.sync().unwrap(), first);
    }
    let wal = open(h, small_options());
    assert_eq!(wal.shards(), [B]);
}

fn old_entries_are_read_back_from_segments<H: Harness>(h: &H) {
    let options = WalOptions { cache_bytes_per_shard: 0, ..small_options() };
    let expected: Vec<_> = (1..121).map(|i| entry_sized(i, 1, 100)).collect();
    {
        let mut wal = open(h, options);
        fill(&mut wal, A, 1, 120, 1);
        fill(&mut wal, B, 1, 10, 1);
        assert_eq!(all_entries(&wal.log(A)), expected);
    }
    let wal = open(h, options);
    let log = wal.log(A);
    assert_eq!(all_entries(&log), expected);
    // The byte budget stops early but always returns one entry.
    let some = log.entries(LogIndex(10), LogIndex(100), 300).unwrap();
    assert_eq!(some, expected[9..11].to_vec());
    assert_eq!(log.entries(LogIndex(10), LogIndex(100), 0).unwrap(), expected[9..10].to_vec());
    assert_eq!(log.entries(LogIndex(10), LogIndex(10), 0).unwrap(), vec![]);
}

fn log_storage_answers_like_memory_log<H: Harness>(h: &H) {
    let mut wal = open(h, test_options());
    wal.append(A, &entries(1, 6, 1)).unwrap();
    wal.sync().unwrap();
    wal.compact(A, LogIndex(2), members()).unwrap();
    wal.sync().unwrap();
    let log = wal.log(A);
    assert_eq!(log.first_index(), LogIndex(3));
    assert_eq!(log.last_index(), LogIndex(5));
    assert_eq!(log.epoch(LogIndex(2)), Ok(Epoch::term(1)));
    assert_eq!(
        log.epoch(LogIndex(1)),
        Err(LogError::Compacted { index: LogIndex(1), first: LogIndex(3) })
    );
    assert_eq!(
        log.epoch(LogIndex(6)),
        Err(LogError::Unavailable { index: LogIndex(6), last: LogIndex(5) })
    );
    assert_eq!(
        log.entries(LogIndex(2), LogIndex(4), 99),
        Err(LogError::Compacted { index: LogIndex(2), first: LogIndex(3) })
    );
    assert_eq!(
        log.entries(LogIndex(3), LogIndex(7), 99),
        Err(LogError::Unavailable { index: LogIndex(6), last: LogIndex(5) })
    );
    assert_eq!(log.snapshot(), Err(LogError::SnapshotTemporarilyUnavailable));
    let mut log = log;
    log.set_snapshot_data(LogIndex(2), Bytes::from_static(b"state"));
    let snap = log.snapshot().unwrap();
    assert_eq!((snap.meta.index, &snap.data[..]), (LogIndex(2), &b"state"[..]));
    // An empty shard has the empty snapshot.
    assert_eq!(wal.log(C).snapshot().unwrap().meta, SnapshotMeta::default());
}

fn refused_requests_change_nothing_and_do_not_poison<H: Harness>(h: &H) {
    let options = WalOptions { record_bytes_max: 1000, batch_bytes_max: 4000, ..small_options() };
    let mut wal = open(h, options);
    wal.append(A, &entries(1, 6, 1)).unwrap();
    wal.sync().unwrap();
    let gap = wal.append(A, &entries(7, 8, 1)).unwrap_err();
    assert!(matches!(gap, WalError::Gap { first: LogIndex(7), next: LogIndex(6), .. }), "{gap}");
    let mut holes = entries(6, 8, 1);
    holes[1].index = LogIndex(9);
    assert!(matches!(wal.append(A, &holes).unwrap_err(), WalError::Gap { first: LogIndex(9), .. }));
    wal.compact(A, LogIndex(3), members()).unwrap();
    let below = wal.append(A, &entries(2, 3, 1)).unwrap_err();
    assert!(matches!(below, WalError::BelowSnapshot { snapshot: LogIndex(3), .. }), "{below}");
    let refusal = |r: Result<BatchSeq, WalError>| match r {
        Err(WalError::CompactionRefused { why, .. }) => why,
        other => panic!("expected a refused compaction, got {other:?}"),
    };
    assert_eq!(
        refusal(wal.compact(A, LogIndex(3), members())),
        CompactionRefusal::AlreadyCompacted
    );
    assert_eq!(refusal(wal.compact(A, LogIndex(9), members())), CompactionRefusal::NotDurable);
    wal.append(A, &entries(5, 6, 2)).unwrap();
    assert_eq!(
        refusal(wal.compact(A, LogIndex(5), members())),
        CompactionRefusal::ConflictsWithPending
    );
    wal.compact(A, LogIndex(4), members()).unwrap();
    let stale = SnapshotMeta { index: LogIndex(2), ..SnapshotMeta::default() };
    assert!(matches!(wal.install_snapshot(A, &stale), Err(WalError::StaleSnapshot { .. })));
    let big = entry_sized(6, 2, 2000);
    assert!(matches!(wal.append(A, &[big]), Err(WalError::RecordTooLarge { .. })));
    let mut busy = None;
    for i in 6..100 {
        if let Err(e) = wal.append(A, &[entry_sized(i, 2, 500)]) {
            busy = Some((i, e));
            break;
        }
    }
    let (stopped_at, busy) = busy.expect("the buffer fills up");
    assert!(matches!(busy, WalError::Busy { max_bytes: 4000, .. }), "{busy}");
    assert!(wal.poisoned().is_none());
    wal.sync().unwrap();
    let log = wal.log(A);
    assert_eq!(log.snapshot_meta().index, LogIndex(4));
    assert_eq!(log.last_index(), LogIndex(stopped_at - 1));
    assert_eq!(log.epoch(LogIndex(5)), Ok(Epoch::term(2)));
}

fn batch_numbers_tell_what_is_durable<H: Harness>(h: &H) {
    let mut wal = open(h, test_options());
    let first = wal.append(A, &entries(1, 2, 1)).unwrap();
    let same = wal.set_hard_state(B, hs(1, 1, 0)).unwrap();
    assert_eq!(first, same, "records buffered together share a batch");
    assert_eq!(wal.sync().unwrap(), first);
    let second = wal.append(A, &entries(2, 3, 1)).unwrap();
    assert!(second > first);
    assert_eq!(wal.durable(), first);
    assert_eq!(wal.append(A, &[]).unwrap(), first, "nothing to write: already durable");
    assert_eq!(wal.sync().unwrap(), second);
}

fn shared_wal_commits_every_thread<H: Harness>(h: &H) {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 40;
    {
        let wal = open(h, small_options()).into_shared();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let wal = wal.clone();
                s.spawn(move || {
                    let shard = ShardId(t + 1);
                    for i in 1..=PER_THREAD {
                        let seq = wal.append_durably(shard, &[entry(i, 1)]).unwrap();
                        assert!(wal.durable() >= seq);
                        assert_eq!(
                            wal.log(shard).last_index(),
                            LogIndex(i),
                            "durable means visible"
                        );
                    }
                    wal.set_hard_state(shard, hs(1, t + 1, PER_THREAD)).unwrap();
                    wal.sync().unwrap();
                });
            }
        });
        let stats = wal.stats();
        assert!(stats.batches <= THREADS * (PER_THREAD + 1));
        assert!(stats.records >= THREADS * (PER_THREAD + 1));
    }
    let wal = open(h, small_options());
    for t in 0..THREADS {
        let shard = ShardId(t + 1);
        assert_eq!(all_entries(&wal.log(shard)), entries(1, PER_THREAD + 1, 1));
        assert_eq!(wal.log(shard).hard_state(), hs(1, t + 1, PER_THREAD));
    }
}

both_disks!(
    empty_wal_opens_and_reopens,
    append_sync_reopen_roundtrip,
    unsynced_records_are_lost,
    truncation_replaces_the_suffix,
    compaction_deletes_segments_nobody_needs,
    an_idle_shard_pins_the_oldest_segment,
    hard_states_and_snapshots_do_not_pin_segments,
    install_snapshot_keeps_only_an_agreeing_suffix,
    removed_shards_are_forgotten,
    old_entries_are_read_back_from_segments,
    log_storage_answers_like_memory_log,
    refused_requests_change_nothing_and_do_not_poison,
    batch_numbers_tell_what_is_durable,
    shared_wal_commits_every_thread,
);
