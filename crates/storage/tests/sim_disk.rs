//! What `SimDisk` promises beyond the conformance suite: its crash, tearing
//! and fault model, which the WAL's crash tests rely on.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;

use ringkv_storage::disk::{CrashMode, Disk, DiskFile, FaultKind, FaultOp, SimDisk};

/// A synced file "........" overwritten (unsynced) with "ABCDEFGH", then a
/// crash: what survives?
fn crash_after_unsynced_overwrite(seed: u64, mode: CrashMode) -> Vec<u8> {
    let d = SimDisk::new(seed);
    let f = d.create("f").unwrap();
    f.write_at(0, b"........").unwrap();
    f.sync_data().unwrap();
    d.sync_dir().unwrap();
    f.write_at(0, b"ABCDEFGH").unwrap();
    d.crash_with(mode);
    d.open("f").unwrap().read_vec(0, 100).unwrap()
}

#[test]
fn crash_loses_or_keeps_unsynced_writes_as_asked() {
    assert_eq!(crash_after_unsynced_overwrite(1, CrashMode::LoseUnsynced), b"........");
    assert_eq!(crash_after_unsynced_overwrite(1, CrashMode::KeepUnsynced), b"ABCDEFGH");
}

#[test]
fn random_crash_keeps_a_prefix_of_the_write_and_shows_every_outcome() {
    let (mut lost, mut kept, mut torn) = (0, 0, 0);
    for seed in 0..300 {
        let got = crash_after_unsynced_overwrite(seed, CrashMode::Random);
        assert_eq!(got.len(), 8);
        let new = got.iter().take_while(|&&b| b != b'.').count();
        assert_eq!(&got[..new], &b"ABCDEFGH"[..new], "seed {seed}: {got:?}");
        assert!(got[new..].iter().all(|&b| b == b'.'), "seed {seed}: not a prefix: {got:?}");
        match new {
            0 => lost += 1,
            8 => kept += 1,
            _ => torn += 1,
        }
    }
    assert!(lost > 0 && kept > 0 && torn > 0, "lost {lost} kept {kept} torn {torn}");
}

#[test]
fn same_seed_same_outcome() {
    for seed in 0..50 {
        assert_eq!(
            crash_after_unsynced_overwrite(seed, CrashMode::Random),
            crash_after_unsynced_overwrite(seed, CrashMode::Random)
        );
    }
}

#[test]
fn unsynced_directory_changes_may_be_lost() {
    let d = SimDisk::new(3);
    let f = d.create("new").unwrap();
    f.write_at(0, b"x").unwrap();
    f.sync_data().unwrap();
    d.crash_with(CrashMode::LoseUnsynced);
    assert!(d.list().unwrap().is_empty(), "a create without a directory fsync is not durable");

    let f = d.create("new").unwrap();
    f.write_at(0, b"x").unwrap();
    f.sync_data().unwrap();
    d.sync_dir().unwrap();
    d.remove("new").unwrap();
    d.crash_with(CrashMode::LoseUnsynced);
    assert_eq!(d.list().unwrap(), ["new"], "a remove without a directory fsync is not durable");
    assert_eq!(d.open("new").unwrap().read_vec(0, 1).unwrap(), b"x");
}

#[test]
fn handles_go_stale_after_a_crash() {
    let d = SimDisk::new(4);
    let f = d.create("f").unwrap();
    d.sync_dir().unwrap();
    d.crash();
    assert!(f.write_at(0, b"x").is_err());
    assert!(f.sync_data().is_err());
    assert!(f.read_vec(0, 1).is_err());
    assert!(d.open("f").unwrap().write_at(0, b"x").is_ok());
}

/// After a failed fdatasync, a later successful one does not make the
/// earlier write durable (the pages were marked clean): retrying is unsafe.
#[test]
fn failed_sync_is_not_fixed_by_a_later_sync() {
    let mut lost_despite_later_sync = 0;
    for seed in 0..100 {
        let d = SimDisk::new(seed);
        let f = d.create("f").unwrap();
        f.write_at(0, b"old!").unwrap();
        f.sync_data().unwrap();
        d.sync_dir().unwrap();
        f.write_at(0, b"new!").unwrap();
        d.fail_next(FaultOp::SyncData, FaultKind::Eio);
        let err = f.sync_data().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(5));
        assert_eq!(f.read_vec(0, 4).unwrap(), b"new!", "reads still see the write");
        f.sync_data().unwrap();
        d.crash_with(CrashMode::LoseUnsynced);
        if d.open("f").unwrap().read_vec(0, 4).unwrap() != b"new!" {
            lost_despite_later_sync += 1;
        }
    }
    assert!(lost_despite_later_sync > 0);
}

#[test]
fn injected_write_error_and_crash() {
    let d = SimDisk::new(5);
    let f = d.create("f").unwrap();
    d.fail_next(FaultOp::Write, FaultKind::Eio);
    assert_eq!(f.write_at(0, b"abc").unwrap_err().raw_os_error(), Some(5));
    f.write_at(0, b"abc").unwrap();
    d.fail_next(FaultOp::Write, FaultKind::Crash);
    assert!(f.write_at(3, b"def").is_err());
    assert!(f.len().is_err(), "the crash made the handle stale");
    assert_eq!(d.stats().crashes, 1);
}

#[test]
fn capacity_limits_growth_but_not_overwrites() {
    let d = SimDisk::new(6);
    d.set_capacity(Some(100));
    let f = d.create("f").unwrap();
    f.allocate(80).unwrap();
    let g = d.create("g").unwrap();
    let err = g.allocate(30).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StorageFull);
    let err = g.write_at(0, &[1u8; 30]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StorageFull);
    assert_eq!(g.len().unwrap(), 20, "a short write up to the capacity");
    f.write_at(0, &[2u8; 80]).unwrap();
    drop(f);
    d.remove("f").unwrap();
    d.sync_dir().unwrap();
    g.write_at(20, &[1u8; 30]).unwrap();
    assert_eq!(d.used_bytes(), 50);
}
