//! WAL throughput with 1, 16 and 256 concurrent appenders, against the raw
//! fdatasync rate of the same disk measured in the same run.
//!
//! ```text
//! cargo bench -p ringkv-storage --bench wal
//! RINGKV_BENCH_DIR=/mnt/nvme RINGKV_BENCH_RUNS=7 RINGKV_BENCH_SECS=3 cargo bench -p ringkv-storage --bench wal
//! RINGKV_BENCH_APPENDERS=256 cargo bench -p ringkv-storage --bench wal   # one configuration
//! ```
//!
//! Every appender thread owns a shard and appends one ~200-byte entry at a
//! time, waiting until it is durable before the next ([`SharedWal`] group
//! commit). Each figure is the median of several runs; every WAL run is
//! paired with raw-fsync runs right before it (CPU idle, and CPU kept busy;
//! see [`raw_fsyncs_per_sec`]), and each ratio is the median of the paired
//! ratios, because this disk's fsync latency drifts. The
//! directory must be on the disk being measured (not a tmpfs, where fsync
//! is free): it defaults to the system temporary directory.

// A benchmark reports on stdout.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_consensus::{Entry, EntryKind, Epoch, LogIndex, Membership, NodeId, ShardId};
use ringkv_storage::disk::{Disk, DiskFile};
use ringkv_storage::{FsDisk, SharedWal, Wal, WalOptions};

/// Appender counts measured.
const APPENDERS: [usize; 3] = [1, 16, 256];
/// Payload bytes per entry (records are about 230 bytes with headers).
const PAYLOAD_BYTES: usize = 200;
/// Each appender compacts its shard every this many entries, as a node
/// would after snapshots, so memory stays flat and segments get deleted.
const COMPACT_EVERY: u64 = 5_000;
/// Size of the raw-fsync file, preallocated like a WAL segment.
const RAW_FILE_BYTES: u64 = 64 << 20;
/// Bytes written before each raw fdatasync.
const RAW_WRITE_BYTES: usize = 4096;
/// The ratio the 256-appender run must reach over raw fsyncs per second.
const TARGET_RATIO: f64 = 20.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// fdatasyncs per second of 4 KiB writes into a preallocated file, with
/// the CPU left idle or kept busy by a spinning thread.
///
/// On a virtual machine an idle vCPU halts, and waking it when the fsync
/// completes can cost milliseconds (a host scheduler tick): the idle figure
/// then measures that, not the disk. A busy CPU takes the wake-up out, which
/// is the situation the WAL's appenders are in; both are reported.
fn raw_fsyncs_per_sec(dir: &Path, secs: f64, busy: bool) -> f64 {
    if !busy {
        return raw_loop(dir, secs);
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let rate = raw_loop(dir, secs);
        stop.store(true, Ordering::Relaxed);
        rate
    })
}

fn raw_loop(dir: &Path, secs: f64) -> f64 {
    let disk = FsDisk::open(dir).unwrap();
    let f = disk.create("raw").unwrap();
    f.allocate(RAW_FILE_BYTES).unwrap();
    f.sync_data().unwrap();
    disk.sync_dir().unwrap();
    let buf = vec![0x5au8; RAW_WRITE_BYTES];
    let start = Instant::now();
    let mut n = 0u64;
    let mut offset = 0;
    while start.elapsed().as_secs_f64() < secs {
        f.write_at(offset, &buf).unwrap();
        f.sync_data().unwrap();
        offset = (offset + RAW_WRITE_BYTES as u64) % RAW_FILE_BYTES;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    disk.remove("raw").unwrap();
    rate
}

struct WalRun {
    records_per_sec: f64,
    mb_per_sec: f64,
    fsyncs_per_sec: f64,
}

fn entry(index: u64) -> Entry {
    Entry {
        index: LogIndex(index),
        epoch: Epoch::term(1),
        kind: EntryKind::Command,
        payload: Bytes::from(vec![(index % 251) as u8; PAYLOAD_BYTES]),
    }
}

fn appender(wal: &SharedWal<FsDisk>, shard: ShardId, start: &Barrier, stop: &AtomicBool) -> u64 {
    let members = Membership::new([NodeId(1)]);
    start.wait();
    let mut index = 0;
    while !stop.load(Ordering::Relaxed) {
        index += 1;
        wal.append_durably(shard, &[entry(index)]).unwrap();
        if index % COMPACT_EVERY == 0 {
            wal.compact(shard, LogIndex(index - 100), members.clone()).unwrap();
        }
    }
    index
}

fn wal_run(dir: &Path, appenders: usize, secs: f64) -> WalRun {
    let _ = std::fs::remove_dir_all(dir);
    let wal = Wal::open(FsDisk::open(dir).unwrap(), WalOptions::default()).unwrap().into_shared();
    let start = Barrier::new(appenders + 1);
    let stop = AtomicBool::new(false);
    let (records, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..appenders)
            .map(|t| {
                let (wal, start, stop) = (&wal, &start, &stop);
                s.spawn(move || appender(wal, ShardId(t as u64 + 1), start, stop))
            })
            .collect();
        start.wait();
        let began = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        let records: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        (records, began.elapsed().as_secs_f64())
    });
    let stats = wal.stats();
    drop(wal);
    let _ = std::fs::remove_dir_all(dir);
    WalRun {
        records_per_sec: records as f64 / elapsed,
        mb_per_sec: stats.bytes as f64 / elapsed / 1e6,
        fsyncs_per_sec: stats.batches as f64 / elapsed,
    }
}

fn main() {
    // `cargo test --benches` runs benchmarks with no `--bench` flag: stay quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("wal benchmark: run with `cargo bench -p ringkv-storage --bench wal`");
        return;
    }
    let base: PathBuf = std::env::var_os("RINGKV_BENCH_DIR")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(format!("ringkv-wal-bench-{}", std::process::id()));
    let runs: usize = env_or("RINGKV_BENCH_RUNS", 5);
    // Only one appender count (for profiling), if set.
    let only: Option<usize> =
        std::env::var("RINGKV_BENCH_APPENDERS").ok().and_then(|v| v.parse().ok());
    let secs: f64 = env_or("RINGKV_BENCH_SECS", 2.0);
    std::fs::create_dir_all(&base).unwrap();
    println!(
        "WAL benchmark in {} — {runs} runs of {secs} s per configuration, medians",
        base.display()
    );

    // Each WAL run is paired with a raw-fsync run just before it: the disk's
    // fsync latency drifts (other tenants, journal state), and a ratio of two
    // measurements taken seconds apart is steadier than one of minutes apart.
    let mut raw: Vec<Vec<f64>> = APPENDERS.iter().map(|_| Vec::new()).collect();
    let mut raw_busy: Vec<Vec<f64>> = APPENDERS.iter().map(|_| Vec::new()).collect();
    let mut results: Vec<Vec<WalRun>> = APPENDERS.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for (k, &n) in APPENDERS.iter().enumerate() {
            if only.is_some_and(|o| o != n) {
                continue;
            }
            raw[k].push(raw_fsyncs_per_sec(&base.join("raw"), secs, false));
            raw_busy[k].push(raw_fsyncs_per_sec(&base.join("raw"), secs, true));
            results[k].push(wal_run(&base.join("wal"), n, secs));
        }
        println!("  run {}/{runs} done", run + 1);
    }
    let _ = std::fs::remove_dir_all(&base);

    let all = |v: &[Vec<f64>]| median(v.iter().flatten().copied().collect());
    println!();
    println!(
        "raw fdatasync baseline, {RAW_WRITE_BYTES} B writes into a preallocated file in the same \
         directory (median of {} runs each):",
        runs * APPENDERS.len()
    );
    println!("  CPU idle: {:>7.0} fsyncs/s", all(&raw));
    println!(
        "  CPU busy: {:>7.0} fsyncs/s   (a spinning thread hides vCPU wake-up latency)",
        all(&raw_busy)
    );
    println!();
    println!(
        "{:>9} | {:>10} | {:>6} | {:>8} | {:>9} | {:>8} | {:>8} | {:>10} | {:>10}",
        "appenders",
        "records/s",
        "MB/s",
        "fsyncs/s",
        "rec/fsync",
        "raw idle",
        "raw busy",
        "÷ raw idle",
        "÷ raw busy"
    );
    println!("{}", "-".repeat(101));
    let mut ratio_256 = (0.0, 0.0);
    for (k, &n) in APPENDERS.iter().enumerate() {
        let runs = &results[k];
        if runs.is_empty() {
            continue;
        }
        let records = median(runs.iter().map(|r| r.records_per_sec).collect());
        let mb = median(runs.iter().map(|r| r.mb_per_sec).collect());
        let fsyncs = median(runs.iter().map(|r| r.fsyncs_per_sec).collect());
        let per_fsync =
            median(runs.iter().map(|r| r.records_per_sec / r.fsyncs_per_sec.max(1e-9)).collect());
        let paired = |base: &[f64]| {
            median(runs.iter().zip(base).map(|(r, raw)| r.records_per_sec / raw).collect())
        };
        let (idle, busy) = (paired(&raw[k]), paired(&raw_busy[k]));
        if n == 256 {
            ratio_256 = (idle, busy);
        }
        println!(
            "{n:>9} | {records:>10.0} | {mb:>6.2} | {fsyncs:>8.0} | {per_fsync:>9.1} | {:>8.0} | \
             {:>8.0} | {idle:>9.2}x | {busy:>9.2}x",
            median(raw[k].clone()),
            median(raw_busy[k].clone())
        );
    }
    println!();
    let verdict = |r: f64| if r >= TARGET_RATIO { "met" } else { "NOT met" };
    println!(
        "target: with 256 appenders, at least {TARGET_RATIO}x more records/s than raw fsyncs/s \
         (median of paired runs): {:.1}x the idle-CPU baseline ({}), {:.1}x the busy-CPU one ({})",
        ratio_256.0,
        verdict(ratio_256.0),
        ratio_256.1,
        verdict(ratio_256.1)
    );
}
