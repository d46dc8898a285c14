//! [`SimDisk`]: a deterministic in-memory disk that loses, tears and fails writes.
//!
//! The model keeps two images of every file and of the directory: what
//! reads see now (the page cache) and what is on the platter. Every change
//! is logged until a sync moves it to the platter. A crash keeps, for each
//! file, a random prefix of its unsynced changes, the last kept write
//! possibly torn (only a prefix of its bytes lands), and likewise a random
//! prefix of the unsynced directory changes. Every random choice is drawn
//! from one [`DetRng`] seeded by the caller, so a simulation replays exactly.
//!
//! Faults are injected one-shot ([`SimDisk::fail_next`]) or at random rates
//! ([`SimDisk::set_fault_rates`]):
//!
//! - `Eio` on a write: a random prefix of the write lands (unsynced), then
//!   the call fails.
//! - `Eio` on `sync_data`: a random prefix of the unsynced changes reaches the
//!   platter and the rest is dropped from the log *but stays visible to
//!   reads*, so a later successful sync does not persist it — the Linux
//!   "fsyncgate" behaviour that makes retrying a failed fsync unsafe.
//! - `NoSpace`: the call fails with `ENOSPC` and changes nothing (a write
//!   may land partly, as a short write would). A capacity limit
//!   ([`SimDisk::set_capacity`]) produces the same error naturally.
//! - `Crash`: the operation happens (a write lands unsynced), then the disk
//!   crashes as [`SimDisk::crash`] does, and the call fails.
//!
//! After a crash every file handle opened before it fails with a "stale
//! handle" error: the process that held it is dead. Open the disk's files
//! again (reopen the WAL) to see the surviving state.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use ringkv_consensus::DetRng;

use super::{Disk, DiskFile, check_name};

/// `EIO`.
const EIO: i32 = 5;
/// `ENOSPC`.
const ENOSPC: i32 = 28;
/// Rates are expressed per this many operations.
const PPM: u64 = 1_000_000;

/// An operation a fault can be injected into.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// [`DiskFile::read_at`].
    Read,
    /// [`DiskFile::write_at`].
    Write,
    /// [`DiskFile::sync_data`].
    SyncData,
    /// [`Disk::sync_dir`].
    SyncDir,
    /// [`Disk::create`].
    Create,
    /// [`Disk::rename`].
    Rename,
    /// [`Disk::remove`].
    Remove,
    /// [`DiskFile::allocate`].
    Allocate,
    /// [`DiskFile::set_len`].
    SetLen,
}

/// What an injected fault does.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The operation fails with `EIO`.
    Eio,
    /// The operation fails with `ENOSPC`.
    NoSpace,
    /// The disk crashes during the operation (see [`SimDisk::crash`]).
    Crash,
}

/// Random fault rates, in faults per million operations of each kind. All
/// random faults are `EIO`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultRates {
    /// Failed `write_at` calls.
    pub write_ppm: u32,
    /// Failed `sync_data` and `sync_dir` calls.
    pub sync_ppm: u32,
    /// Failed `create`, `rename`, `remove`, `allocate` and `set_len` calls.
    pub metadata_ppm: u32,
    /// Failed `read_at` calls.
    pub read_ppm: u32,
}

/// Counters of what a [`SimDisk`] has done.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    /// `read_at` calls that succeeded (what a cache above the disk saves).
    pub reads: u64,
    /// Bytes those reads returned.
    pub bytes_read: u64,
    /// `write_at` calls that succeeded.
    pub writes: u64,
    /// Bytes those writes carried.
    pub bytes_written: u64,
    /// `sync_data` calls that succeeded.
    pub syncs: u64,
    /// `sync_dir` calls that succeeded.
    pub dir_syncs: u64,
    /// Crashes, requested or injected.
    pub crashes: u64,
    /// Faults injected (one-shot or random).
    pub faults: u64,
}

/// How much of the unsynced state a crash keeps.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// A random prefix of each file's and the directory's unsynced changes,
    /// the last kept write possibly torn.
    Random,
    /// Nothing unsynced survives.
    LoseUnsynced,
    /// Everything unsynced survives (a crash right after the kernel wrote
    /// all dirty pages back).
    KeepUnsynced,
}

/// A simulated disk: cheap to clone (clones share the disk).
#[derive(Clone, Debug)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    rng: DetRng,
    /// Bumped by every crash; handles from an older generation are stale.
    generation: u64,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    /// The directory as reads see it.
    dir: BTreeMap<String, u64>,
    /// The directory as of the last `sync_dir`.
    durable_dir: BTreeMap<String, u64>,
    /// Directory changes since the last `sync_dir`, in order.
    dir_log: Vec<DirOp>,
    /// One-shot faults: the first entry for an operation lets `skip` more
    /// of them pass, then fires.
    one_shot: Vec<OneShot>,
    rates: FaultRates,
    capacity_bytes: Option<u64>,
    stats: SimDiskStats,
}

#[derive(Copy, Clone, Debug)]
struct OneShot {
    op: FaultOp,
    kind: FaultKind,
    skip: u64,
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a crash for sure.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    log: Vec<DataOp>,
    /// Open handles of the current generation.
    handles: usize,
}

#[derive(Clone, Debug)]
enum DataOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug)]
enum DirOp {
    Link { name: String, ino: u64 },
    Unlink { name: String },
    Rename { from: String, to: String },
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn stale() -> io::Error {
    io::Error::other("stale file handle: the simulated disk crashed since this file was opened")
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash during this operation")
}

fn apply_data_op(image: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[start..end].copy_from_slice(data);
        }
        DataOp::SetLen(len) => image.resize(*len as usize, 0),
    }
}

fn apply_dir_op(dir: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link { name, ino } => {
            dir.insert(name.clone(), *ino);
        }
        DirOp::Unlink { name } => {
            dir.remove(name);
        }
        DirOp::Rename { from, to } => {
            if let Some(ino) = dir.remove(from) {
                dir.insert(to.clone(), ino);
            }
        }
    }
}

impl State {
    /// Draws how many of `n` logged changes survive, and whether the last
    /// kept one is torn (returned as the number of its bytes that land).
    fn draw_kept(&mut self, mode: CrashMode, log: &[DataOp]) -> (usize, Option<usize>) {
        let n = log.len();
        match mode {
            CrashMode::LoseUnsynced => (0, None),
            CrashMode::KeepUnsynced => (n, None),
            CrashMode::Random => {
                let keep = self.rng.range(0, n as u64 + 1) as usize;
                if keep < n
                    && let DataOp::Write { data, .. } = &log[keep]
                    && !data.is_empty()
                    && self.rng.chance(1, 2)
                {
                    return (keep, Some(self.rng.range(0, data.len() as u64) as usize));
                }
                (keep, None)
            }
        }
    }

    /// Moves a drawn prefix of `ino`'s unsynced changes to the platter and
    /// forgets the rest.
    fn settle(&mut self, ino: u64, mode: CrashMode) {
        let log = match self.inodes.get_mut(&ino) {
            Some(inode) => std::mem::take(&mut inode.log),
            None => return,
        };
        let (keep, torn) = self.draw_kept(mode, &log);
        let inode = self.inodes.get_mut(&ino).expect("inode exists: just read");
        for op in &log[..keep] {
            apply_data_op(&mut inode.durable, op);
        }
        if let (Some(bytes), Some(DataOp::Write { offset, data })) = (torn, log.get(keep)) {
            let op = DataOp::Write { offset: *offset, data: data[..bytes].to_vec() };
            apply_data_op(&mut inode.durable, &op);
        }
    }

    fn crash(&mut self, mode: CrashMode) {
        let inos: Vec<u64> = self.inodes.keys().copied().collect();
        for ino in inos {
            self.settle(ino, mode);
        }
        let dir_log = std::mem::take(&mut self.dir_log);
        let keep = match mode {
            CrashMode::LoseUnsynced => 0,
            CrashMode::KeepUnsynced => dir_log.len(),
            CrashMode::Random => self.rng.range(0, dir_log.len() as u64 + 1) as usize,
        };
        for op in &dir_log[..keep] {
            apply_dir_op(&mut self.durable_dir, op);
        }
        self.dir = self.durable_dir.clone();
        self.generation += 1;
        let live: Vec<u64> = self.dir.values().copied().collect();
        self.inodes.retain(|ino, _| live.contains(ino));
        for inode in self.inodes.values_mut() {
            inode.data = inode.durable.clone();
            inode.handles = 0;
        }
        self.stats.crashes += 1;
    }

    /// The fault to inject into `op`, if any.
    fn fault(&mut self, op: FaultOp) -> Option<FaultKind> {
        if let Some(at) = self.one_shot.iter().position(|f| f.op == op) {
            if self.one_shot[at].skip > 0 {
                self.one_shot[at].skip -= 1;
            } else {
                self.stats.faults += 1;
                return Some(self.one_shot.remove(at).kind);
            }
        }
        let ppm = match op {
            FaultOp::Write => self.rates.write_ppm,
            FaultOp::SyncData | FaultOp::SyncDir => self.rates.sync_ppm,
            FaultOp::Read => self.rates.read_ppm,
            FaultOp::Create
            | FaultOp::Rename
            | FaultOp::Remove
            | FaultOp::Allocate
            | FaultOp::SetLen => self.rates.metadata_ppm,
        };
        if ppm > 0 && self.rng.chance(u64::from(ppm), PPM) {
            self.stats.faults += 1;
            return Some(FaultKind::Eio);
        }
        None
    }

    /// Bytes held by files that are visible or open.
    fn used_bytes(&self) -> u64 {
        self.inodes
            .iter()
            .filter(|(ino, inode)| inode.handles > 0 || self.dir.values().any(|i| i == *ino))
            .map(|(_, inode)| inode.data.len() as u64)
            .sum()
    }

    /// The largest size `ino` may grow to within the capacity.
    fn max_len(&self, ino: u64) -> u64 {
        let Some(cap) = self.capacity_bytes else { return u64::MAX };
        let current = self.inodes.get(&ino).map_or(0, |i| i.data.len() as u64);
        cap.saturating_sub(self.used_bytes().saturating_sub(current))
    }

    /// Drops an inode nothing can reach any more.
    fn collect(&mut self, ino: u64) {
        let referenced = self.dir.values().any(|i| *i == ino)
            || self.durable_dir.values().any(|i| *i == ino)
            || self.dir_log.iter().any(|op| matches!(op, DirOp::Link { ino: i, .. } if *i == ino))
            || self.inodes.get(&ino).is_some_and(|i| i.handles > 0);
        if !referenced {
            self.inodes.remove(&ino);
        }
    }

    fn lookup(&self, name: &str) -> io::Result<u64> {
        self.dir.get(name).copied().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no file named {name:?}"))
        })
    }
}

impl SimDisk {
    /// An empty disk whose random choices (crash outcomes, random faults)
    /// all come from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                rng: DetRng::new(seed),
                generation: 0,
                next_inode: 1,
                inodes: BTreeMap::new(),
                dir: BTreeMap::new(),
                durable_dir: BTreeMap::new(),
                dir_log: Vec::new(),
                one_shot: Vec::new(),
                rates: FaultRates::default(),
                capacity_bytes: None,
                stats: SimDiskStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("sim disk lock poisoned: a thread panicked while holding it")
    }

    /// Crashes the disk: unsynced changes survive only in part (see
    /// [`CrashMode::Random`]) and every open handle goes stale.
    pub fn crash(&self) {
        self.crash_with(CrashMode::Random);
    }

    /// Crashes the disk keeping as much unsynced state as `mode` says.
    pub fn crash_with(&self, mode: CrashMode) {
        self.lock().crash(mode);
    }

    /// Makes the next `op` fail with `kind` (faults queue up in order).
    pub fn fail_next(&self, op: FaultOp, kind: FaultKind) {
        self.fail_nth(op, 0, kind);
    }

    /// Lets `skip` calls of `op` succeed, then makes the next one fail with
    /// `kind`.
    pub fn fail_nth(&self, op: FaultOp, skip: u64, kind: FaultKind) {
        self.lock().one_shot.push(OneShot { op, kind, skip });
    }

    /// Removes every queued one-shot fault.
    pub fn clear_faults(&self) {
        self.lock().one_shot.clear();
    }

    /// Sets the random fault rates (zero disables them).
    pub fn set_fault_rates(&self, rates: FaultRates) {
        self.lock().rates = rates;
    }

    /// Limits the bytes all files may hold; growing past it fails with
    /// `ENOSPC`. `None` removes the limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity_bytes = bytes;
    }

    /// Bytes held by the files that exist or are open.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// What the disk has done so far.
    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats
    }

    /// Whether any file or directory change is not yet durable.
    pub fn has_unsynced(&self) -> bool {
        let st = self.lock();
        !st.dir_log.is_empty()
            || st.inodes.values().any(|i| !i.log.is_empty() || i.data != i.durable)
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    fn create(&self, name: &str) -> io::Result<SimFile> {
        check_name(name)?;
        let mut st = self.lock();
        if st.dir.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("file {name:?} already exists"),
            ));
        }
        let fault = st.fault(FaultOp::Create);
        match fault {
            Some(FaultKind::Eio) => return Err(os_error(EIO)),
            Some(FaultKind::NoSpace) => return Err(os_error(ENOSPC)),
            Some(FaultKind::Crash) | None => {}
        }
        let ino = st.next_inode;
        st.next_inode += 1;
        st.inodes.insert(ino, Inode::default());
        st.dir.insert(name.to_owned(), ino);
        st.dir_log.push(DirOp::Link { name: name.to_owned(), ino });
        if fault == Some(FaultKind::Crash) {
            st.crash(CrashMode::Random);
            return Err(crashed());
        }
        st.inodes.get_mut(&ino).expect("just inserted").handles += 1;
        Ok(SimFile { state: Arc::clone(&self.state), ino, generation: st.generation })
    }

    fn open(&self, name: &str) -> io::Result<SimFile> {
        check_name(name)?;
        let mut st = self.lock();
        let ino = st.lookup(name)?;
        st.inodes.get_mut(&ino).expect("directory entries point at inodes").handles += 1;
        Ok(SimFile { state: Arc::clone(&self.state), ino, generation: st.generation })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let mut st = self.lock();
        let ino = st.lookup(name)?;
        let fault = st.fault(FaultOp::Remove);
        match fault {
            Some(FaultKind::Eio) => return Err(os_error(EIO)),
            Some(FaultKind::NoSpace) => return Err(os_error(ENOSPC)),
            Some(FaultKind::Crash) | None => {}
        }
        st.dir.remove(name);
        st.dir_log.push(DirOp::Unlink { name: name.to_owned() });
        if fault == Some(FaultKind::Crash) {
            st.crash(CrashMode::Random);
            return Err(crashed());
        }
        st.collect(ino);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        let mut st = self.lock();
        let ino = st.lookup(from)?;
        let fault = st.fault(FaultOp::Rename);
        match fault {
            Some(FaultKind::Eio) => return Err(os_error(EIO)),
            Some(FaultKind::NoSpace) => return Err(os_error(ENOSPC)),
            Some(FaultKind::Crash) | None => {}
        }
        let replaced = st.dir.insert(to.to_owned(), ino);
        st.dir.remove(from);
        st.dir_log.push(DirOp::Rename { from: from.to_owned(), to: to.to_owned() });
        if fault == Some(FaultKind::Crash) {
            st.crash(CrashMode::Random);
            return Err(crashed());
        }
        if let Some(old) = replaced.filter(|old| *old != ino) {
            st.collect(old);
        }
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().dir.keys().cloned().collect())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.lock();
        match st.fault(FaultOp::SyncDir) {
            Some(FaultKind::Eio) => return Err(os_error(EIO)),
            Some(FaultKind::NoSpace) => return Err(os_error(ENOSPC)),
            Some(FaultKind::Crash) => {
                st.crash(CrashMode::Random);
                return Err(crashed());
            }
            None => {}
        }
        st.durable_dir = st.dir.clone();
        st.dir_log.clear();
        // Files unlinked (and closed) are gone for good now.
        let inos: Vec<u64> = st.inodes.keys().copied().collect();
        for ino in inos {
            st.collect(ino);
        }
        st.stats.dir_syncs += 1;
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("sim:{name}")
    }
}

/// A file of a [`SimDisk`].
#[derive(Debug)]
pub struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    generation: u64,
}

impl SimFile {
    fn lock(&self) -> io::Result<MutexGuard<'_, State>> {
        let st =
            self.state.lock().expect("sim disk lock poisoned: a thread panicked while holding it");
        if st.generation != self.generation {
            return Err(stale());
        }
        Ok(st)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let Ok(mut st) = self.state.lock() else { return };
        if st.generation != self.generation {
            return;
        }
        if let Some(inode) = st.inodes.get_mut(&self.ino) {
            inode.handles -= 1;
        }
        st.collect(self.ino);
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.lock()?;
        if let Some(kind) = st.fault(FaultOp::Read) {
            return Err(match kind {
                FaultKind::NoSpace => os_error(ENOSPC),
                FaultKind::Eio | FaultKind::Crash => os_error(EIO),
            });
        }
        let data = &st.inodes.get(&self.ino).expect("open handles keep their inode").data;
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        st.stats.reads += 1;
        st.stats.bytes_read += n as u64;
        Ok(n)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.lock()?;
        let fault = st.fault(FaultOp::Write);
        let end = offset + data.len() as u64;
        let current = st.inodes.get(&self.ino).expect("open handles keep their inode").data.len();
        let max_len = st.max_len(self.ino);
        let (landed, error) = match fault {
            Some(FaultKind::Eio) => {
                (st.rng.range(0, data.len() as u64 + 1) as usize, Some(os_error(EIO)))
            }
            Some(FaultKind::NoSpace) => (0, Some(os_error(ENOSPC))),
            Some(FaultKind::Crash) => (data.len(), Some(crashed())),
            None if end > current as u64 && end > max_len => {
                // A short write up to the capacity, then ENOSPC.
                let fits = max_len.saturating_sub(offset).min(data.len() as u64);
                (fits as usize, Some(os_error(ENOSPC)))
            }
            None => (data.len(), None),
        };
        if landed > 0 {
            let op = DataOp::Write { offset, data: data[..landed].to_vec() };
            let inode = st.inodes.get_mut(&self.ino).expect("open handles keep their inode");
            apply_data_op(&mut inode.data, &op);
            inode.log.push(op);
        }
        if fault == Some(FaultKind::Crash) {
            st.crash(CrashMode::Random);
        }
        if let Some(e) = error {
            return Err(e);
        }
        st.stats.writes += 1;
        st.stats.bytes_written += data.len() as u64;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.lock()?;
        match st.fault(FaultOp::SyncData) {
            Some(kind @ (FaultKind::Eio | FaultKind::NoSpace)) => {
                // Some of the dirty pages may have reached the platter; the
                // rest are dropped from the log (marked clean) but stay
                // visible to reads until the next crash.
                st.settle(self.ino, CrashMode::Random);
                return Err(os_error(if kind == FaultKind::Eio { EIO } else { ENOSPC }));
            }
            Some(FaultKind::Crash) => {
                st.crash(CrashMode::Random);
                return Err(crashed());
            }
            None => {}
        }
        let inode = st.inodes.get_mut(&self.ino).expect("open handles keep their inode");
        for op in std::mem::take(&mut inode.log) {
            apply_data_op(&mut inode.durable, &op);
        }
        st.stats.syncs += 1;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let st = self.lock()?;
        Ok(st.inodes.get(&self.ino).expect("open handles keep their inode").data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.resize(FaultOp::SetLen, len, true)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.resize(FaultOp::Allocate, len, false)
    }
}

impl SimFile {
    /// `set_len` (may shrink) and `allocate` (only grows).
    fn resize(&self, op: FaultOp, len: u64, may_shrink: bool) -> io::Result<()> {
        let mut st = self.lock()?;
        match st.fault(op) {
            Some(FaultKind::Eio) => return Err(os_error(EIO)),
            Some(FaultKind::NoSpace) => return Err(os_error(ENOSPC)),
            Some(FaultKind::Crash) => {
                st.crash(CrashMode::Random);
                return Err(crashed());
            }
            None => {}
        }
        let current = st.inodes.get(&self.ino).expect("open handles keep their inode").data.len();
        let len_usize = len as usize;
        if len_usize == current || (len_usize < current && !may_shrink) {
            return Ok(());
        }
        if len_usize > current && len > st.max_len(self.ino) {
            return Err(os_error(ENOSPC));
        }
        let op = DataOp::SetLen(len);
        let inode = st.inodes.get_mut(&self.ino).expect("open handles keep their inode");
        apply_data_op(&mut inode.data, &op);
        inode.log.push(op);
        Ok(())
    }
}
