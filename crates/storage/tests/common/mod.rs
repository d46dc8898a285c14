//! Helpers shared by the integration tests: a harness per disk kind so the
//! same test runs on the real file system and on the simulated disk.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use ringkv_consensus::{Entry, EntryKind, Epoch, LogIndex, LogStorage, Membership, NodeId};
use ringkv_storage::disk::{CrashMode, Disk, DiskFile, FsDisk, SimDisk};
use ringkv_storage::{Wal, WalOptions};

/// A disk the tests can open, reopen and damage.
pub trait Harness {
    type D: Disk;
    /// A handle on the disk (for the real one, a fresh lock on the directory:
    /// drop every WAL and log of the previous handle first).
    fn disk(&self) -> Self::D;
    /// A process crash: what was written survives (page cache), only
    /// synced data is promised. For the simulated disk, unsynced changes are
    /// kept or lost as `mode` says.
    fn crash(&self, mode: CrashMode);
    /// A short name for messages.
    fn name(&self) -> &'static str;
    /// The segment files present, without taking the directory lock.
    fn segment_files(&self) -> Vec<String>;
}

pub struct FsHarness {
    pub dir: tempfile::TempDir,
}

impl FsHarness {
    pub fn new() -> FsHarness {
        FsHarness { dir: tempfile::tempdir().unwrap() }
    }
}

impl Harness for FsHarness {
    type D = FsDisk;
    fn disk(&self) -> FsDisk {
        FsDisk::open(self.dir.path()).unwrap()
    }
    fn crash(&self, _mode: CrashMode) {}
    fn name(&self) -> &'static str {
        "fs"
    }
    fn segment_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".wal"))
            .collect();
        names.sort();
        names
    }
}

pub struct SimHarness {
    pub disk: SimDisk,
}

impl SimHarness {
    pub fn new(seed: u64) -> SimHarness {
        SimHarness { disk: SimDisk::new(seed) }
    }
}

impl Harness for SimHarness {
    type D = SimDisk;
    fn disk(&self) -> SimDisk {
        self.disk.clone()
    }
    fn crash(&self, mode: CrashMode) {
        self.disk.crash_with(mode);
    }
    fn name(&self) -> &'static str {
        "sim"
    }
    fn segment_files(&self) -> Vec<String> {
        segment_files(&self.disk)
    }
}

/// Instantiates `$test::<H>` for both disks as `fs` and `sim` tests.
#[allow(unused_macros)]
macro_rules! both_disks {
    ($($test:ident),* $(,)?) => {
        mod fs {
            $(#[test] fn $test() { super::$test(&$crate::common::FsHarness::new()); })*
        }
        mod sim {
            $(#[test] fn $test() { super::$test(&$crate::common::SimHarness::new(0x5eed)); })*
        }
    };
}

/// A deterministic entry: the payload depends on every field, so a wrong
/// entry read back never looks right.
pub fn entry(index: u64, term: u64) -> Entry {
    entry_sized(index, term, 24)
}

pub fn entry_sized(index: u64, term: u64, bytes: usize) -> Entry {
    let mut payload = format!("i{index}t{term}:").into_bytes();
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ term;
    while payload.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.push(b'a' + (x % 26) as u8);
    }
    Entry {
        index: LogIndex(index),
        epoch: Epoch::term(term),
        kind: EntryKind::Command,
        payload: Bytes::from(payload),
    }
}

pub fn entries(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..hi).map(|i| entry(i, term)).collect()
}

pub fn members() -> Membership {
    Membership::new([NodeId(1), NodeId(2), NodeId(3)])
}

/// Segments big enough not to rotate in short tests, small enough that
/// recovery (which reads whole segments) stays fast in debug builds.
pub fn test_options() -> WalOptions {
    WalOptions { segment_bytes: 256 << 10, ..WalOptions::default() }
}

/// Small segments, so tests rotate and collect segments often.
pub fn small_options() -> WalOptions {
    WalOptions { segment_bytes: 4096, ..WalOptions::default() }
}

/// Every entry `log` holds, read through `LogStorage`.
pub fn all_entries<L: LogStorage>(log: &L) -> Vec<Entry> {
    let lo = log.first_index();
    let hi = log.last_index().next();
    if lo >= hi {
        return Vec::new();
    }
    let got = log.entries(lo, hi, u64::MAX).unwrap();
    assert_eq!(got.len() as u64, hi.0 - lo.0);
    got
}

pub fn open<H: Harness>(h: &H, options: WalOptions) -> Wal<H::D> {
    Wal::open(h.disk(), options).unwrap()
}

/// Names of the segment files on `disk`.
pub fn segment_files<D: Disk>(disk: &D) -> Vec<String> {
    disk.list().unwrap().into_iter().filter(|n| n.ends_with(".wal")).collect()
}

/// XORs `mask` into the byte at `offset` of file `name`.
pub fn flip_byte<D: Disk>(disk: &D, name: &str, offset: u64, mask: u8) {
    let f = disk.open(name).unwrap();
    let mut b = [0u8];
    assert_eq!(f.read_at(offset, &mut b).unwrap(), 1);
    b[0] ^= mask;
    f.write_at(offset, &b).unwrap();
    f.sync_data().unwrap();
}

/// Overwrites `len` bytes at `offset` of file `name` with zeros.
pub fn zero_range<D: Disk>(disk: &D, name: &str, offset: u64, len: usize) {
    let f = disk.open(name).unwrap();
    f.write_at(offset, &vec![0u8; len]).unwrap();
    f.sync_data().unwrap();
}
