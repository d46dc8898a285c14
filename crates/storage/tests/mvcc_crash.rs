//! Crash test on real processes: a child applies the numbered workload to a
//! file-backed store and reports every durable checkpoint; the parent
//! SIGKILLs it at a random point, reopens the store and checks that the
//! applied index is at least the last reported durable one and that the
//! data is exactly the state after entries `1..=applied`. The same store
//! goes through every kill, so recovery from recovery is tested too.
//!
//! `RINGKV_MVCC_CRASH_KILLS=<n>` sets the number of kills (default 3);
//! `RINGKV_MVCC_CRASH_SEED=<n>` picks the kill points.
#![allow(clippy::unwrap_used)]

mod mvcc_common;

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};

use mvcc_common::*;
use ringkv_consensus::{DetRng, LogIndex, ShardId};
use ringkv_storage::mvcc::*;

const SHARD: ShardId = ShardId(9);
/// Set (to the store's path) in the child process only.
const CHILD_ENV: &str = "RINGKV_MVCC_CRASH_CHILD";
/// The child stops here if it is not killed first.
const LAST_ENTRY: u64 = 1_000_000;
/// A durable checkpoint every this many entries: small, so kills land
/// between checkpoints as well as just after them.
const CHECKPOINT_ENTRIES: u64 = 40;

fn options() -> StoreOptions {
    StoreOptions { checkpoint_interval_applies: CHECKPOINT_ENTRIES, ..StoreOptions::default() }
}

/// The child's body; a no-op test in a normal run.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let store = MvccStore::open(&path, options()).unwrap();
    let mut next = store.applied_index(SHARD).0 + 1;
    // libtest may print its own text on the same line: mark ours.
    println!("\n@@start {}", next - 1);
    let mut rng = DetRng::new(next);
    while next <= LAST_ENTRY {
        // Batches of varying size, so kills land at varying offsets.
        let end = (next + rng.range(1, 30)).min(LAST_ENTRY);
        let entries: Vec<_> = (next..=end).map(|i| (LogIndex(i), numbered_command(i))).collect();
        let (_, info) = store
            .write(|b| {
                entries.iter().map(|(i, c)| b.apply(SHARD, *i, c)).collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        if info.durable {
            println!("@@durable {end}");
        } else if rng.chance(1, 8) {
            // An explicit checkpoint, as the node does before truncating the WAL.
            store.checkpoint().unwrap();
            println!("@@durable {end}");
        } else {
            println!("@@applied {end}");
        }
        next = end + 1;
    }
}

#[test]
fn sigkill_keeps_applied_index_and_data_consistent() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let kills: u64 = std::env::var("RINGKV_MVCC_CRASH_KILLS").map_or(3, |v| v.parse().unwrap());
    let seed: u64 = std::env::var("RINGKV_MVCC_CRASH_SEED").map_or(7, |v| v.parse().unwrap());
    let mut rng = DetRng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sm.redb");
    let exe = std::env::current_exe().unwrap();
    for kill in 0..kills {
        let mut child = Process::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut start = None;
        let mut durable = 0;
        // Kill after a random number of commits, durable or not, so the kill
        // lands anywhere between checkpoints.
        let wanted = rng.range(1, 40);
        let mut seen = 0;
        while seen < wanted {
            let line = lines.next().expect("child exited early").unwrap();
            let Some((_, line)) = line.split_once("@@") else { continue };
            if let Some(n) = line.strip_prefix("start ") {
                start = Some(n.parse::<u64>().unwrap());
            } else if let Some(n) = line.strip_prefix("durable ") {
                durable = n.parse().unwrap();
                seen += 1;
            } else if line.starts_with("applied ") {
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let start = start.expect("child reported its start");

        let store = MvccStore::open(&path, options()).unwrap();
        let applied = store.applied_index(SHARD).0;
        assert!(
            applied >= durable && applied >= start,
            "kill {kill} (seed {seed}): applied {applied} < reported durable {durable} / start {start}"
        );
        assert_eq!(
            dump(&store, SHARD),
            dump(&reference(SHARD, applied), SHARD),
            "kill {kill} (seed {seed}): data differs from the state after entries 1..={applied}"
        );
    }
}
