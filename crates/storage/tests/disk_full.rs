//! Disk full on a real (small, test-made) file system: the WAL fails with a
//! clear `NoSpace` error, poisons itself, corrupts nothing, and after space
//! is freed and the WAL reopened everything acknowledged is there.
//!
//! The real variant mounts a 2 MiB tmpfs, which needs root; where mounting
//! is not permitted it says so and runs the same scenario on `SimDisk`.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{all_entries, entry_sized};
use ringkv_consensus::{LogStorage, ShardId};
use ringkv_storage::disk::{Disk, SimDisk};
use ringkv_storage::{FsDisk, Wal, WalError, WalOptions};

const A: ShardId = ShardId(1);
const ENTRY_BYTES: usize = 1000;

/// A tmpfs mounted for the test, unmounted when dropped (also on panic).
struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    fn new(path: &Path, size: &str) -> Result<TmpfsMount, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(TmpfsMount { path: path.to_owned() })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !ok {
            // Something still holds it open: detach it lazily rather than leak it.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn options() -> WalOptions {
    WalOptions { segment_bytes: 256 << 10, ..WalOptions::default() }
}

/// Fills the WAL until the disk is full, then frees space with `free` and
/// checks recovery. `disk` opens a fresh handle on the WAL's directory.
fn fill_free_recover<D: Disk>(disk: impl Fn() -> D, free: impl FnOnce()) {
    let mut wal = Wal::open(disk(), options()).unwrap();
    let mut acked = 0u64;
    let err = loop {
        let i = acked + 1;
        wal.append(A, &[entry_sized(i, 1, ENTRY_BYTES)]).unwrap();
        match wal.sync() {
            Ok(_) => acked = i,
            Err(e) => break e,
        }
        assert!(i < 100_000, "the disk never filled up");
    };
    assert!(acked > 100, "some data fit before the disk filled: {acked}");
    match &err {
        WalError::NoSpace { file, .. } => assert!(file.contains(".wal"), "{err}"),
        other => panic!("expected NoSpace, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("no space left") && message.contains("Free space"), "{message}");
    let later = wal.append(A, &[entry_sized(acked + 1, 1, ENTRY_BYTES)]).unwrap_err();
    assert!(
        matches!(&later, WalError::Poisoned { cause } if matches!(**cause, WalError::NoSpace { .. })),
        "{later}"
    );
    drop(wal);

    free();
    let mut wal = Wal::open(disk(), options()).unwrap();
    let last = wal.log(A).last_index().0;
    assert!(last == acked || last == acked + 1, "acknowledged {acked}, recovered {last}");
    let want: Vec<_> = (1..=last).map(|i| entry_sized(i, 1, ENTRY_BYTES)).collect();
    assert_eq!(all_entries(&wal.log(A)), want);
    // And it takes writes again, across a new segment.
    for i in last + 1..last + 300 {
        wal.append(A, &[entry_sized(i, 1, ENTRY_BYTES)]).unwrap();
        wal.sync().unwrap();
    }
}

#[test]
fn disk_full_on_a_real_file_system() {
    let root = tempfile::tempdir().unwrap();
    let mount = match TmpfsMount::new(root.path(), "2m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "SKIPPED the real-file-system variant (cannot mount a tmpfs: {why}); running the \
                 same scenario on SimDisk's ENOSPC instead"
            );
            disk_full_on_the_simulated_disk();
            return;
        }
    };
    // Ballast outside the WAL directory, removed to free space.
    let ballast = mount.path.join("ballast");
    std::fs::write(&ballast, vec![1u8; 600 << 10]).unwrap();
    let dir = mount.path.join("wal");
    fill_free_recover(|| FsDisk::open(&dir).unwrap(), || std::fs::remove_file(&ballast).unwrap());
    drop(mount);
}

#[test]
fn disk_full_on_the_simulated_disk() {
    let disk = SimDisk::new(11);
    disk.set_capacity(Some(2 << 20));
    let d = disk.clone();
    fill_free_recover(|| disk.clone(), move || d.set_capacity(Some(3 << 20)));
}
