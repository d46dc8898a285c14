//! Injected disk faults (simulated disk): an fsync or write error poisons
//! the WAL, disk full is a clear error, and recovery keeps every
//! acknowledged record.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ringkv_consensus::{Epoch, HardState, LogIndex, LogStorage, NodeId, ShardId};
use ringkv_storage::disk::{CrashMode, FaultKind, FaultOp, SimDisk};
use ringkv_storage::wal::{DiskOp as WalDiskOp, WalError};
use ringkv_storage::{Wal, WalOptions};

const A: ShardId = ShardId(1);

/// A WAL on a fresh simulated disk holding entries 1..=5 of shard A, synced.
fn wal_with_five(seed: u64, options: WalOptions) -> (SimDisk, Wal<SimDisk>) {
    let disk = SimDisk::new(seed);
    let mut wal = Wal::open(disk.clone(), options).unwrap();
    wal.append(A, &entries(1, 6, 1)).unwrap();
    wal.sync().unwrap();
    (disk, wal)
}

fn assert_poisoned_by(err: &WalError, op: WalDiskOp) {
    match err {
        WalError::Poisoned { cause } => match &**cause {
            WalError::Io { op: o, .. } | WalError::NoSpace { op: o, .. } => assert_eq!(*o, op),
            other => panic!("poisoned by {other}, expected a failed {op}"),
        },
        other => panic!("expected Poisoned, got {other}"),
    }
}

#[test]
fn fsync_error_poisons_and_nothing_is_retried() {
    let (disk, mut wal) = wal_with_five(1, test_options());
    wal.append(A, &entries(6, 8, 1)).unwrap();
    disk.fail_next(FaultOp::SyncData, FaultKind::Eio);
    let err = wal.sync().unwrap_err();
    assert!(matches!(err, WalError::Io { op: WalDiskOp::SyncData, .. }), "{err}");
    assert!(err.to_string().contains("fdatasync"), "{err}");
    assert!(err.to_string().contains("restart"), "says what to do: {err}");
    let writes_before = disk.stats().writes;
    // Every later write fails fast, without touching the disk.
    let later = wal.append(A, &entries(8, 9, 1)).unwrap_err();
    assert_poisoned_by(&later, WalDiskOp::SyncData);
    assert!(later.to_string().contains("fdatasync"), "names the cause: {later}");
    assert_poisoned_by(&wal.sync().unwrap_err(), WalDiskOp::SyncData);
    assert_poisoned_by(
        &wal.set_hard_state(A, HardState::default()).unwrap_err(),
        WalDiskOp::SyncData,
    );
    assert_poisoned_by(&wal.compact(A, LogIndex(2), members()).unwrap_err(), WalDiskOp::SyncData);
    assert_eq!(disk.stats().writes, writes_before);
    assert!(wal.poisoned().is_some());
    assert!(later.is_environmental());
    // The durable state stays readable, and the failed batch is not in it.
    assert_eq!(all_entries(&wal.log(A)), entries(1, 6, 1));
    drop(wal);
    disk.crash();
    let wal = Wal::open(disk, test_options()).unwrap();
    let got = all_entries(&wal.log(A));
    assert!(got == entries(1, 6, 1) || got == entries(1, 8, 1), "{got:?}");
}

#[test]
fn write_error_poisons() {
    let (disk, mut wal) = wal_with_five(2, test_options());
    wal.append(A, &entries(6, 8, 1)).unwrap();
    disk.fail_next(FaultOp::Write, FaultKind::Eio);
    let err = wal.sync().unwrap_err();
    assert!(matches!(err, WalError::Io { op: WalDiskOp::Write, .. }), "{err}");
    assert_poisoned_by(&wal.append(A, &entries(6, 7, 2)).unwrap_err(), WalDiskOp::Write);
    drop(wal);
    disk.crash();
    let wal = Wal::open(disk, test_options()).unwrap();
    let got = all_entries(&wal.log(A));
    assert!(got == entries(1, 6, 1) || got == entries(1, 8, 1), "{got:?}");
}

/// Faults while rotating to a new segment poison too, and recovery copes
/// with whatever the crash left (no segment, a temporary file, an empty one).
#[test]
fn segment_creation_faults_poison_and_recover() {
    for (k, op) in [
        FaultOp::Create,
        FaultOp::Allocate,
        FaultOp::Write,
        FaultOp::SyncData,
        FaultOp::Rename,
        FaultOp::SyncDir,
    ]
    .into_iter()
    .enumerate()
    {
        for kind in [FaultKind::Eio, FaultKind::Crash] {
            let (disk, mut wal) = wal_with_five(10 + k as u64, small_options());
            let mut acked = 5;
            let mut failed = None;
            // Fill the first segment; arm the fault just before the sync
            // that must rotate.
            for i in 6..200u64 {
                wal.append(A, &[entry_sized(i, 1, 200)]).unwrap();
                let rotating = wal.segment_ids().len() == 1 && wal.stats().bytes > 3600;
                if rotating {
                    disk.fail_next(op, kind);
                }
                match wal.sync() {
                    Ok(_) => acked = i,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let err = failed.unwrap_or_else(|| panic!("{op:?}/{kind:?}: no sync failed"));
            assert!(err.is_environmental(), "{err}");
            assert!(wal.append(A, &[entry(acked + 1, 2)]).is_err());
            drop(wal);
            disk.clear_faults();
            disk.crash();
            let wal = Wal::open(disk, small_options())
                .unwrap_or_else(|e| panic!("{op:?}/{kind:?}: recovery failed: {e}"));
            let last = wal.log(A).last_index().0;
            assert!(last == acked || last == acked + 1, "{op:?}/{kind:?}: {last} vs {acked}");
            let want: Vec<_> = (1..=last)
                .map(|i| if i <= 5 { entry(i, 1) } else { entry_sized(i, 1, 200) })
                .collect();
            assert_eq!(all_entries(&wal.log(A)), want, "{op:?}/{kind:?}");
        }
    }
}

#[test]
fn failed_segment_deletion_poisons_after_reporting_the_durable_batch() {
    let (disk, mut wal) = wal_with_five(3, small_options());
    for i in 6..60u64 {
        wal.append(A, &[entry_sized(i, 1, 200)]).unwrap();
        wal.sync().unwrap();
    }
    assert!(wal.segment_ids().len() > 1);
    wal.compact(A, LogIndex(59), members()).unwrap();
    disk.fail_next(FaultOp::Remove, FaultKind::Eio);
    let seq = wal.sync().expect("the compaction itself is durable");
    assert_eq!(wal.durable(), seq);
    assert_poisoned_by(&wal.sync().unwrap_err(), WalDiskOp::Remove);
    drop(wal);
    let wal = Wal::open(disk, small_options()).unwrap();
    assert_eq!(wal.log(A).snapshot_meta().index, LogIndex(59));
}

/// A crash in the middle of a batch write (a torn write) loses only that
/// batch, for many seeds; the torn tail is found and cleaned.
#[test]
fn crash_during_a_batch_write_keeps_every_acknowledged_record() {
    let mut torn_tails = 0;
    for seed in 0..60 {
        let (disk, mut wal) = wal_with_five(100 + seed, test_options());
        wal.set_hard_state(
            A,
            HardState { epoch: Epoch::term(1), vote: Some(NodeId(1)), commit: LogIndex(5) },
        )
        .unwrap();
        wal.sync().unwrap();
        wal.append(A, &(6..30).map(|i| entry_sized(i, 2, 100)).collect::<Vec<_>>()).unwrap();
        disk.fail_next(
            if seed % 2 == 0 { FaultOp::Write } else { FaultOp::SyncData },
            FaultKind::Crash,
        );
        assert!(wal.sync().is_err());
        drop(wal);
        let wal = Wal::open(disk.clone(), test_options()).unwrap();
        torn_tails += usize::from(wal.recovery_report().torn_tail.is_some());
        let got = all_entries(&wal.log(A));
        assert!(got.len() == 5 || got.len() == 29, "seed {seed}: a batch is atomic: {}", got.len());
        assert_eq!(got[..5], entries(1, 6, 1)[..], "seed {seed}");
        assert_eq!(wal.log(A).hard_state().commit, LogIndex(5), "seed {seed}");
        drop(wal);
        // A second recovery finds a clean log.
        disk.crash_with(CrashMode::LoseUnsynced);
        let wal = Wal::open(disk, test_options()).unwrap();
        assert_eq!(wal.recovery_report().torn_tail, None, "seed {seed}");
        assert_eq!(all_entries(&wal.log(A)), got, "seed {seed}");
    }
    assert!(torn_tails > 0, "some crash tore the batch");
}

#[test]
fn disk_full_is_a_clear_error_and_loses_nothing_acknowledged() {
    let disk = SimDisk::new(7);
    disk.set_capacity(Some(6 * 4096));
    let mut wal = Wal::open(disk.clone(), small_options()).unwrap();
    let mut acked = 0;
    let err = loop {
        let i = acked + 1;
        wal.append(A, &[entry_sized(i, 1, 300)]).unwrap();
        match wal.sync() {
            Ok(_) => acked = i,
            Err(e) => break e,
        }
        assert!(i < 1000, "the disk never filled up");
    };
    assert!(matches!(err, WalError::NoSpace { .. }), "{err}");
    assert!(err.to_string().contains("no space left"), "{err}");
    assert!(err.to_string().contains("Free space"), "says what to do: {err}");
    let later = wal.append(A, &[entry(acked + 1, 1)]).unwrap_err();
    assert!(
        matches!(&later, WalError::Poisoned { cause } if matches!(**cause, WalError::NoSpace { .. }))
    );
    drop(wal);
    // Space is freed; the log reopens with everything acknowledged.
    disk.set_capacity(None);
    let mut wal = Wal::open(disk.clone(), small_options()).unwrap();
    let last = wal.log(A).last_index().0;
    assert!(last == acked || last == acked + 1);
    assert_eq!(
        all_entries(&wal.log(A)),
        (1..=last).map(|i| entry_sized(i, 1, 300)).collect::<Vec<_>>()
    );
    wal.append(A, &[entry_sized(last + 1, 1, 300)]).unwrap();
    wal.sync().unwrap();
}

#[test]
fn random_faults_never_lose_acknowledged_records() {
    use ringkv_storage::disk::FaultRates;
    for seed in 0..20 {
        let disk = SimDisk::new(seed);
        let mut acked = 0u64;
        let mut restarts = 0;
        while acked < 150 && restarts < 50 {
            disk.set_fault_rates(FaultRates::default());
            let Ok(mut wal) = Wal::open(disk.clone(), small_options()) else {
                panic!("seed {seed}: recovery failed");
            };
            let last = wal.log(A).last_index().0;
            assert!(last >= acked, "seed {seed}: acknowledged {acked}, recovered {last}");
            assert_eq!(
                all_entries(&wal.log(A))[..acked as usize],
                (1..=acked).map(|i| entry_sized(i, 1, 150)).collect::<Vec<_>>()[..],
                "seed {seed}"
            );
            disk.set_fault_rates(FaultRates {
                write_ppm: 20_000,
                sync_ppm: 20_000,
                metadata_ppm: 50_000,
                read_ppm: 0,
            });
            let mut next = last + 1;
            loop {
                if wal.append(A, &[entry_sized(next, 1, 150)]).is_err() {
                    break;
                }
                match wal.sync() {
                    Ok(_) => {
                        acked = next;
                        next += 1;
                    }
                    Err(_) => break,
                }
            }
            drop(wal);
            disk.crash();
            restarts += 1;
        }
        assert!(acked >= 150, "seed {seed}: only {acked} acknowledged after {restarts} restarts");
    }
}

/// A segment whose entries are all compacted still holds the latest hard
/// states until a checkpoint in a later segment is durable. Here the batch
/// that would have carried that checkpoint is lost to a crash right after
/// the new segment was created (for the seeds where the crash loses it).
#[test]
fn hard_state_survives_a_lost_checkpoint_batch() {
    const C: ShardId = ShardId(3);
    let mut lost = 0;
    for seed in 0..16 {
        let disk = SimDisk::new(seed);
        let mut wal = Wal::open(disk.clone(), small_options()).unwrap();
        let vote = HardState { epoch: Epoch::term(9), vote: Some(NodeId(2)), commit: LogIndex(0) };
        wal.set_hard_state(C, vote).unwrap();
        wal.sync().unwrap();
        // Fill the first segment with entries of A, then compact them away.
        let mut i = 0;
        while wal.stats().bytes < 3000 {
            i += 1;
            wal.append(A, &[entry_sized(i, 1, 200)]).unwrap();
            wal.sync().unwrap();
        }
        wal.compact(A, LogIndex(i), members()).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.segment_ids(), [1]);
        let batches = wal.stats().batches;
        // The next batch rotates; a crash during its write (the first write
        // is segment 2's header, the second the batch) may lose it.
        let next: Vec<_> = (i + 1..i + 12).map(|j| entry_sized(j, 1, 200)).collect();
        wal.append(A, &next).unwrap();
        disk.fail_nth(FaultOp::Write, 1, FaultKind::Crash);
        assert!(wal.sync().is_err());
        drop(wal);
        for round in 0..3 {
            let mut wal = Wal::open(disk.clone(), small_options()).unwrap();
            if round == 0 && wal.recovery_report().batches == batches {
                lost += 1;
                assert_eq!(wal.segment_ids().last(), Some(&2), "seed {seed}: segment 2 exists");
            }
            assert_eq!(wal.log(C).hard_state(), vote, "seed {seed} round {round}");
            // Writing on (into the empty segment, then beyond) keeps it too.
            let last = wal.log(A).last_index().0;
            wal.append(A, &[entry_sized(last + 1, 1, 200)]).unwrap();
            wal.sync().unwrap();
            drop(wal);
            disk.crash_with(CrashMode::LoseUnsynced);
        }
    }
    assert!(lost > 0, "no seed lost the rotating batch");
}

/// With many threads waiting on a group commit, a failed fdatasync reaches
/// every one of them (none hangs, none is told its record is durable), and
/// what they were told was durable survives.
#[test]
fn shared_wal_failure_reaches_every_waiter() {
    const THREADS: u64 = 8;
    let disk = SimDisk::new(31);
    let wal = Wal::open(disk.clone(), test_options()).unwrap().into_shared();
    let acked: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (wal, disk) = (wal.clone(), disk.clone());
                s.spawn(move || {
                    let shard = ShardId(t + 1);
                    let mut acked = 0;
                    loop {
                        if t == 0 && acked == 20 {
                            disk.fail_next(FaultOp::SyncData, FaultKind::Eio);
                        }
                        match wal.append_durably(shard, &[entry(acked + 1, 1)]) {
                            Ok(_) => acked += 1,
                            Err(e) => {
                                assert!(e.is_environmental(), "{e}");
                                return acked;
                            }
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(wal.sync().is_err(), "poisoned for good");
    drop(wal);
    disk.crash();
    let wal = Wal::open(disk, test_options()).unwrap();
    for (t, &n) in acked.iter().enumerate() {
        let log = wal.log(ShardId(t as u64 + 1));
        assert!(
            log.last_index().0 >= n,
            "thread {t}: acknowledged {n}, recovered {}",
            log.last_index()
        );
        assert_eq!(all_entries(&log)[..n as usize], entries(1, n + 1, 1)[..]);
    }
}
