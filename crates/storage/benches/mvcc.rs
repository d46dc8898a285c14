//! MVCC store throughput: `cargo bench -p ringkv-storage --bench mvcc`.
//!
//! A plain timing harness (medians of repeated samples) rather than
//! criterion: the figures we track are two medians, and keeping criterion
//! out of the crate's dev-dependencies keeps `cargo test` builds light.
//!
//! - puts: batches of 1,000 puts (random 8-byte keys, 256-byte values)
//!   applied in one engine transaction each, on a file-backed store with
//!   the default checkpoint policy (non-durable commits, a durable one
//!   every `CHECKPOINT_INTERVAL_APPLIES` entries); measured on a small store (~10,000 keys) and
//!   again at 500,000 keys.
//! - range: a prefix scan returning 10,000 keys out of 110,000.
//! - get: point reads of one key out of 100,000, through
//!   [`MvccStore::range`] as the servers' reads go. `get/shared_view`:
//!   reads with no commit between them, which share one read view (a read
//!   load, or the reads of one round); `get/after_commit`: the first read
//!   after a commit, which opens the view (a redb read transaction and its
//!   tables). Wall-clock median per read, and thread CPU per read of the
//!   shared-view reads.
//! - apply: what the node does per round (issue 10): batches of 256, 32
//!   and 4 puts (8-byte keys, 256-byte values) applied in one engine
//!   transaction each, on a file-backed store loaded with 100,000 keys:
//!   overwrites of keys drawn uniformly from all 100,000, then from 10,000
//!   of them (`ringkv bench`'s default key space), then keys the store has
//!   never held (spread over the key range like the others). A put costs
//!   a share of its transaction's fixed cost plus its own; the three batch
//!   sizes separate the two. The wall-clock median per batch, and the
//!   thread's CPU time per put over all samples (the scheduler counts it
//!   in ticks, too coarse for one batch): on the shared machine the CPU
//!   time is the steadier figure. `MVCC_APPLY_SAMPLES=n` runs `n` batches
//!   per case instead of 300 (for profiles).
//!
//! Arguments other than flags select benchmarks by name
//! (`cargo bench -p ringkv-storage --bench mvcc -- apply`).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_consensus::{DetRng, LogIndex, ShardId};
use ringkv_storage::mvcc::{Command, MvccStore, PutRequest, RangeRequest, StoreOptions};

const BATCH: usize = 1_000;
const VALUE_BYTES: usize = 256;
const PUT_SAMPLES: usize = 40;
const WARMUP_BATCHES: usize = 10;
const LARGE_STORE_KEYS: usize = 500_000;
const SCAN_KEYS: usize = 10_000;
const OTHER_KEYS: usize = 100_000;
const SCAN_SAMPLES: usize = 30;
/// Point reads measured in `get/shared_view`.
const GET_SHARED_SAMPLES: usize = 50_000;
/// Commits, each followed by one measured read, in `get/after_commit`.
const GET_AFTER_COMMIT_SAMPLES: usize = 3_000;
/// Puts per engine transaction in the apply benchmark: a loaded round,
/// and a round of a node serving fewer clients (where the per-transaction
/// cost weighs more).
const APPLY_BATCHES: [usize; 3] = [256, 32, 4];
const APPLY_STORE_KEYS: u64 = 100_000;
const APPLY_HOT_KEYS: u64 = 10_000;
const APPLY_SAMPLES: usize = 300;
/// Names the environment variable that overrides [`APPLY_SAMPLES`]:
/// a profile of one case needs a longer run than the figures do.
const APPLY_SAMPLES_ENV: &str = "MVCC_APPLY_SAMPLES";
const APPLY_WARMUP_BATCHES: usize = 50;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

struct Writer {
    store: MvccStore,
    shard: ShardId,
    next: u64,
}

impl Writer {
    fn batch(&mut self, cmds: Vec<Command>) {
        let entries: Vec<_> = cmds
            .into_iter()
            .map(|c| {
                self.next += 1;
                (LogIndex(self.next), c)
            })
            .collect();
        let applied = self.store.apply_batch(self.shard, &entries).unwrap();
        assert!(applied.iter().all(|a| a.result.is_ok()));
    }
}

fn put(key: Vec<u8>, value: &Bytes) -> Command {
    Command::Put(PutRequest { key: Bytes::from(key), value: value.clone(), ..Default::default() })
}

/// Applies one batch of fresh random puts; returns how long it took.
fn put_batch(w: &mut Writer, rng: &mut DetRng, value: &Bytes) -> Duration {
    let cmds = (0..BATCH).map(|_| put(rng.next_u64().to_be_bytes().to_vec(), value)).collect();
    let start = Instant::now();
    w.batch(cmds);
    start.elapsed()
}

fn report_puts(w: &mut Writer, rng: &mut DetRng, value: &Bytes, label: &str) {
    let samples: Vec<_> = (0..PUT_SAMPLES).map(|_| put_batch(w, rng, value)).collect();
    let m = median(samples);
    println!(
        "mvcc/put_batch_1000/{label}: median {:.2} ms per batch = {:.0} puts/s \
         ({PUT_SAMPLES} batches, {} keys in store after)",
        m.as_secs_f64() * 1e3,
        BATCH as f64 / m.as_secs_f64(),
        w.next,
    );
}

fn bench_puts(dir: &std::path::Path) {
    let store = MvccStore::open(dir.join("puts.redb"), StoreOptions::default()).unwrap();
    let mut w = Writer { store, shard: ShardId(1), next: 0 };
    let value = Bytes::from(vec![0x5a; VALUE_BYTES]);
    let mut rng = DetRng::new(1);
    for _ in 0..WARMUP_BATCHES {
        put_batch(&mut w, &mut rng, &value);
    }
    report_puts(&mut w, &mut rng, &value, "small");
    // Random inserts into a B-tree slow down as it outgrows the cache of
    // hot pages: measure again at a realistic size.
    while (w.next as usize) < LARGE_STORE_KEYS {
        put_batch(&mut w, &mut rng, &value);
    }
    report_puts(&mut w, &mut rng, &value, "large");
}

fn bench_range(dir: &std::path::Path) {
    let store = MvccStore::open(dir.join("range.redb"), StoreOptions::default()).unwrap();
    let mut w = Writer { store, shard: ShardId(1), next: 0 };
    let value = Bytes::from(vec![0x5a; VALUE_BYTES]);
    let keys = (0..SCAN_KEYS)
        .map(|i| format!("scan/{i:08}").into_bytes())
        .chain((0..OTHER_KEYS).map(|i| format!("zother/{i:08}").into_bytes()))
        .collect::<Vec<_>>();
    for chunk in keys.chunks(BATCH) {
        w.batch(chunk.iter().map(|k| put(k.clone(), &value)).collect());
    }
    let req = RangeRequest {
        key: Bytes::from_static(b"scan/"),
        range_end: Bytes::from_static(b"scan0"),
        ..Default::default()
    };
    let samples: Vec<_> = (0..SCAN_SAMPLES)
        .map(|_| {
            let start = Instant::now();
            let r = w.store.range(w.shard, &req).unwrap();
            let t = start.elapsed();
            assert_eq!(r.kvs.len(), SCAN_KEYS);
            t
        })
        .collect();
    let m = median(samples);
    println!(
        "mvcc/range_10000: median {:.2} ms per scan = {:.0} keys/s ({} samples)",
        m.as_secs_f64() * 1e3,
        SCAN_KEYS as f64 / m.as_secs_f64(),
        SCAN_SAMPLES
    );
}

/// A file-backed store named `name` in `dir`, loaded with the
/// [`APPLY_STORE_KEYS`] keys of [`apply_key`] (values of `value`).
fn loaded_store(dir: &std::path::Path, name: &str, value: &Bytes) -> Writer {
    let store = MvccStore::open(dir.join(name), StoreOptions::default()).unwrap();
    let mut w = Writer { store, shard: ShardId(1), next: 0 };
    let all: Vec<u64> = (0..APPLY_STORE_KEYS).collect();
    for chunk in all.chunks(BATCH) {
        w.batch(chunk.iter().map(|&i| put(apply_key(i), value)).collect());
    }
    w
}

fn bench_get(dir: &std::path::Path) {
    let value = Bytes::from(vec![0x5a; VALUE_BYTES]);
    let mut w = loaded_store(dir, "get.redb", &value);
    let mut rng = DetRng::new(11);
    let get = |w: &Writer, rng: &mut DetRng| -> Duration {
        let req = RangeRequest {
            key: Bytes::from(apply_key(rng.next_u64() % APPLY_STORE_KEYS)),
            ..Default::default()
        };
        let start = Instant::now();
        let r = w.store.range(w.shard, &req).unwrap();
        let t = start.elapsed();
        assert_eq!(r.kvs.len(), 1);
        t
    };
    let report = |label: &str, walls: Vec<Duration>, cpu: Option<Duration>| {
        let n = walls.len();
        println!(
            "mvcc/get/{label}: median {:.2} us per read; thread CPU {} ({n} reads)",
            median(walls).as_secs_f64() * 1e6,
            cpu.map_or("n/a".to_owned(), |c| format!(
                "{:.2} us per read",
                c.as_secs_f64() * 1e6 / n as f64
            )),
        );
    };
    let cpu_before = thread_cpu();
    let walls: Vec<_> = (0..GET_SHARED_SAMPLES).map(|_| get(&w, &mut rng)).collect();
    let cpu = cpu_before.zip(thread_cpu()).map(|(a, b)| b.saturating_sub(a));
    report("shared_view", walls, cpu);
    // The commit before each read is not timed. No CPU figure: the
    // scheduler's accounting is too coarse for one read at a time.
    let mut walls = Vec::with_capacity(GET_AFTER_COMMIT_SAMPLES);
    for _ in 0..GET_AFTER_COMMIT_SAMPLES {
        let key = apply_key(rng.next_u64() % APPLY_STORE_KEYS);
        w.batch(vec![put(key, &value)]);
        walls.push(get(&w, &mut rng));
    }
    report("after_commit", walls, None);
}

/// The key of index `i` of the apply benchmark's key space: 8 bytes,
/// spread over the whole key range as random keys would be.
fn apply_key(i: u64) -> Vec<u8> {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes().to_vec()
}

/// CPU time this thread has run, from the scheduler's accounting (user and
/// system): on a shared machine it moves only while this thread runs,
/// unlike the wall clock. `None` where `/proc` does not offer it.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok().map(Duration::from_nanos)
}

fn bench_apply(dir: &std::path::Path, batch: usize) {
    let samples_per_case = std::env::var(APPLY_SAMPLES_ENV)
        .ok()
        .map(|v| v.parse().expect("MVCC_APPLY_SAMPLES is a number of batches"))
        .unwrap_or(APPLY_SAMPLES)
        .max(1);
    let value = Bytes::from(vec![0x5a; VALUE_BYTES]);
    let mut w = loaded_store(dir, &format!("apply_{batch}.redb"), &value);
    let mut rng = DetRng::new(7);
    let mut fresh = APPLY_STORE_KEYS;
    // Overwrites of keys drawn from the first `hot` of the store's keys
    // (all of them, and the 10,000 that `ringkv bench put` writes by
    // default); then keys the store has never held (last, since they grow
    // the store).
    for (label, hot) in [
        ("100k_keys", Some(APPLY_STORE_KEYS)),
        ("hot_10k_of_100k_keys", Some(APPLY_HOT_KEYS)),
        ("fresh_keys", None),
    ] {
        let mut next_key = || match hot {
            Some(hot) => apply_key(rng.next_u64() % hot),
            None => {
                fresh += 1;
                apply_key(fresh)
            }
        };
        let mut batches = |n: usize| -> Vec<Vec<Command>> {
            (0..n).map(|_| (0..batch).map(|_| put(next_key(), &value)).collect()).collect()
        };
        for cmds in batches(APPLY_WARMUP_BATCHES) {
            w.batch(cmds);
        }
        let samples = batches(samples_per_case);
        let cpu_before = thread_cpu();
        let walls: Vec<_> = samples
            .into_iter()
            .map(|cmds| {
                let start = Instant::now();
                w.batch(cmds);
                start.elapsed()
            })
            .collect();
        let cpu = cpu_before.zip(thread_cpu()).map(|(a, b)| b.saturating_sub(a));
        let wall = median(walls);
        let per_put = |d: Duration| d.as_secs_f64() * 1e6 / batch as f64;
        println!(
            "mvcc/apply_{batch}/{label}: median {:.3} ms per batch = {:.2} us per put; \
             thread CPU {} ({samples_per_case} batches)",
            wall.as_secs_f64() * 1e3,
            per_put(wall),
            cpu.map_or("n/a".to_owned(), |c| {
                format!("{:.2} us per put", per_put(c) / samples_per_case as f64)
            }),
        );
    }
}

fn main() {
    // `cargo test --benches` runs bench targets with no `--bench` flag:
    // stay quick there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let names: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let selected = |name: &str| names.is_empty() || names.iter().any(|n| name.contains(n.as_str()));
    let dir = tempfile::tempdir().unwrap();
    for batch in APPLY_BATCHES {
        if selected(&format!("apply_{batch}")) {
            bench_apply(dir.path(), batch);
        }
    }
    if selected("put_batch") {
        bench_puts(dir.path());
    }
    if selected("range") {
        bench_range(dir.path());
    }
    if selected("get") {
        bench_get(dir.path());
    }
}
