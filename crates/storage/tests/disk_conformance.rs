//! The `Disk` conformance suite: every implementation must pass it, so the
//! WAL behaves the same on the real disk and in the simulator.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::io::ErrorKind;

use common::Harness;
use ringkv_storage::disk::{Disk, DiskFile};

fn create_write_read_back<H: Harness>(h: &H) {
    let d = h.disk();
    let f = d.create("a").unwrap();
    assert_eq!(f.len().unwrap(), 0);
    assert!(f.is_empty().unwrap());
    f.write_at(0, b"hello").unwrap();
    f.write_at(3, b"p me").unwrap();
    assert_eq!(f.len().unwrap(), 7);
    assert_eq!(f.read_vec(0, 7).unwrap(), b"help me");
    // A short read only at the end of the file.
    let mut buf = [0u8; 10];
    assert_eq!(f.read_at(5, &mut buf).unwrap(), 2);
    assert_eq!(&buf[..2], b"me");
    assert_eq!(f.read_at(7, &mut buf).unwrap(), 0);
    assert_eq!(f.read_at(100, &mut buf).unwrap(), 0);
    f.sync_data().unwrap();
    // Another handle sees the same bytes.
    let g = d.open("a").unwrap();
    assert_eq!(g.read_vec(0, 100).unwrap(), b"help me");
}

fn writing_past_the_end_fills_with_zeros<H: Harness>(h: &H) {
    let d = h.disk();
    let f = d.create("sparse").unwrap();
    f.write_at(10, b"x").unwrap();
    assert_eq!(f.read_vec(0, 11).unwrap(), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'x']);
}

fn create_refuses_existing_and_open_refuses_missing<H: Harness>(h: &H) {
    let d = h.disk();
    d.create("a").unwrap();
    assert_eq!(d.create("a").unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert_eq!(d.open("missing").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(d.remove("missing").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(d.rename("missing", "b").unwrap_err().kind(), ErrorKind::NotFound);
}

fn bad_names_are_refused<H: Harness>(h: &H) {
    let d = h.disk();
    for bad in ["", ".", "..", "a/b", "/abs"] {
        assert_eq!(d.create(bad).unwrap_err().kind(), ErrorKind::InvalidInput, "{bad:?}");
        assert_eq!(d.open(bad).unwrap_err().kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
}

fn list_is_sorted_and_tracks_changes<H: Harness>(h: &H) {
    let d = h.disk();
    assert!(d.list().unwrap().is_empty());
    for n in ["c", "a", "b"] {
        d.create(n).unwrap();
    }
    assert_eq!(d.list().unwrap(), ["a", "b", "c"]);
    d.remove("b").unwrap();
    d.rename("c", "d").unwrap();
    assert_eq!(d.list().unwrap(), ["a", "d"]);
    d.sync_dir().unwrap();
    assert_eq!(d.list().unwrap(), ["a", "d"]);
}

fn rename_replaces_atomically<H: Harness>(h: &H) {
    let d = h.disk();
    d.create("old").unwrap().write_at(0, b"old").unwrap();
    d.create("new.tmp").unwrap().write_at(0, b"new").unwrap();
    d.rename("new.tmp", "old").unwrap();
    assert_eq!(d.list().unwrap(), ["old"]);
    assert_eq!(d.open("old").unwrap().read_vec(0, 3).unwrap(), b"new");
}

fn removed_file_stays_readable_through_open_handle<H: Harness>(h: &H) {
    let d = h.disk();
    let f = d.create("gone").unwrap();
    f.write_at(0, b"still here").unwrap();
    d.remove("gone").unwrap();
    d.sync_dir().unwrap();
    assert!(d.list().unwrap().is_empty());
    assert_eq!(f.read_vec(0, 10).unwrap(), b"still here");
    // The name is free again.
    d.create("gone").unwrap();
}

fn set_len_truncates_and_extends_with_zeros<H: Harness>(h: &H) {
    let d = h.disk();
    let f = d.create("t").unwrap();
    f.write_at(0, b"abcdef").unwrap();
    f.set_len(3).unwrap();
    assert_eq!(f.read_vec(0, 10).unwrap(), b"abc");
    f.set_len(5).unwrap();
    assert_eq!(f.read_vec(0, 10).unwrap(), b"abc\0\0");
}

fn allocate_extends_with_zeros_and_never_shrinks<H: Harness>(h: &H) {
    let d = h.disk();
    let f = d.create("p").unwrap();
    f.write_at(0, b"data").unwrap();
    f.allocate(64 * 1024).unwrap();
    assert_eq!(f.len().unwrap(), 64 * 1024);
    let all = f.read_vec(0, 64 * 1024).unwrap();
    assert_eq!(&all[..4], b"data");
    assert!(all[4..].iter().all(|&b| b == 0));
    f.allocate(10).unwrap();
    assert_eq!(f.len().unwrap(), 64 * 1024, "allocate never shrinks");
    f.write_at(1000, b"in the middle").unwrap();
    assert_eq!(f.len().unwrap(), 64 * 1024, "writes inside reserved space keep the size");
    f.sync_data().unwrap();
}

fn synced_data_survives_reopen<H: Harness>(h: &H) {
    {
        let d = h.disk();
        let f = d.create("durable").unwrap();
        f.write_at(0, b"kept").unwrap();
        f.sync_data().unwrap();
        d.sync_dir().unwrap();
    }
    h.crash(ringkv_storage::disk::CrashMode::LoseUnsynced);
    let d = h.disk();
    assert_eq!(d.list().unwrap(), ["durable"]);
    assert_eq!(d.open("durable").unwrap().read_vec(0, 4).unwrap(), b"kept");
}

both_disks!(
    create_write_read_back,
    writing_past_the_end_fills_with_zeros,
    create_refuses_existing_and_open_refuses_missing,
    bad_names_are_refused,
    list_is_sorted_and_tracks_changes,
    rename_replaces_atomically,
    removed_file_stays_readable_through_open_handle,
    set_len_truncates_and_extends_with_zeros,
    allocate_extends_with_zeros_and_never_shrinks,
    synced_data_survives_reopen,
);

#[test]
fn fs_disk_is_locked_against_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let first = ringkv_storage::FsDisk::open(dir.path()).unwrap();
    let err = ringkv_storage::FsDisk::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert!(err.to_string().contains("in use"), "{err}");
    let clone = first.clone();
    drop(first);
    assert!(ringkv_storage::FsDisk::open(dir.path()).is_err(), "a clone still holds the lock");
    drop(clone);
    ringkv_storage::FsDisk::open(dir.path()).unwrap();
}
