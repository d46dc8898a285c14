//! Crash tests on real processes: a child process (this test binary, run
//! again with an environment variable) writes to a WAL on the real disk and
//! announces each batch before syncing it and again once it is durable; the
//! parent SIGKILLs it at random points, reopens the WAL, and checks that it
//! holds exactly the last acknowledged state — or the one being synced when
//! the child died — never anything else.
//!
//! `RINGKV_CRASH_KILLS=200 cargo test -p ringkv-storage --test crash` kills
//! more often; `RINGKV_CRASH_SEED` picks another random schedule.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use ringkv_consensus::{
    DetRng, Entry, EntryKind, Epoch, HardState, LogIndex, LogStorage, MemoryLog, NodeId, ShardId,
    Snapshot, SnapshotMeta, Wire,
};
use ringkv_storage::{FsDisk, Wal, WalError, WalOptions};

/// Set (to the WAL directory) in the child process.
const CHILD_DIR_ENV: &str = "RINGKV_WAL_CRASH_CHILD";
/// Seed of the child's random operations.
const CHILD_SEED_ENV: &str = "RINGKV_WAL_CRASH_CHILD_SEED";
/// Kills per run unless `RINGKV_CRASH_KILLS` says otherwise.
const KILLS_DEFAULT: u64 = 20;
const SHARDS: u64 = 4;

fn options() -> WalOptions {
    // Small segments so kills land during rotations and deletions too.
    WalOptions { segment_bytes: 64 << 10, ..WalOptions::default() }
}

/// A digest of everything a shard's log says, in order.
fn digest<L: LogStorage>(log: &L) -> u32 {
    let mut bytes = Vec::new();
    log.hard_state().encode(&mut bytes);
    log.snapshot_meta().encode(&mut bytes);
    let (lo, hi) = (log.first_index(), log.last_index().next());
    if lo < hi {
        for e in log.entries(lo, hi, u64::MAX).unwrap() {
            e.encode(&mut bytes);
        }
    }
    crc32c::crc32c(&bytes)
}

/// One line describing every shard: `index:digest` pairs.
fn describe<L: LogStorage>(logs: &[L]) -> String {
    logs.iter()
        .map(|l| format!("{}:{:08x}", l.last_index(), digest(l)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn wal_state(wal: &Wal<FsDisk>) -> String {
    describe(&(1..=SHARDS).map(|s| wal.log(ShardId(s))).collect::<Vec<_>>())
}

/// The child: recover, then write forever, announcing `P <state>` before
/// each sync and `A <state>` once it returned.
fn run_child(dir: &str, seed: u64) -> ! {
    let mut wal = Wal::open(FsDisk::open(dir).unwrap(), options()).unwrap();
    // The model starts as what recovery found.
    let mut model: BTreeMap<ShardId, MemoryLog> = BTreeMap::new();
    for s in 1..=SHARDS {
        let shard = ShardId(s);
        let log = wal.log(shard);
        let mut m = MemoryLog::default();
        m.install_snapshot(Snapshot { meta: log.snapshot_meta(), data: Bytes::new() });
        if log.last_index() >= log.first_index() {
            m.append(&log.entries(log.first_index(), log.last_index().next(), u64::MAX).unwrap());
        }
        m.set_hard_state(log.hard_state());
        model.insert(shard, m);
    }
    let mut rng = DetRng::new(seed);
    let mut out = std::io::stdout();
    for step in 0u64.. {
        for _ in 0..rng.range(1, 6) {
            let shard = ShardId(rng.range(1, SHARDS + 1));
            let m = model.get_mut(&shard).unwrap();
            let snap = m.snapshot_meta().index.0;
            let last = m.last_index().0;
            let term = m.hard_state().epoch.round.max(1);
            match rng.range(0, 100) {
                0..70 => {
                    // Sometimes a new leader overwrites the last entries.
                    let (first, term) = if last > snap + 2 && rng.chance(1, 5) {
                        (last - rng.range(0, 2), term + 1)
                    } else {
                        (last + 1, term)
                    };
                    let es: Vec<Entry> = (first..first + rng.range(1, 6))
                        .map(|i| Entry {
                            index: LogIndex(i),
                            epoch: Epoch::term(term),
                            kind: EntryKind::Command,
                            payload: Bytes::from(vec![
                                (i + step) as u8;
                                rng.range(50, 400) as usize
                            ]),
                        })
                        .collect();
                    wal.append(shard, &es).unwrap();
                    m.append(&es);
                    let hs = HardState { epoch: Epoch::term(term), ..m.hard_state() };
                    wal.set_hard_state(shard, hs).unwrap();
                    m.set_hard_state(hs);
                }
                70..85 => {
                    let hs = HardState {
                        epoch: Epoch::term(term),
                        vote: Some(NodeId(rng.range(1, 4))),
                        commit: LogIndex(last),
                    };
                    wal.set_hard_state(shard, hs).unwrap();
                    m.set_hard_state(hs);
                }
                85..97 if last > snap + 5 => {
                    let upto = LogIndex(last - 3);
                    // Refused when this batch already changed the shard.
                    match wal.compact(shard, upto, common::members()) {
                        Ok(_) => m.compact(upto, common::members(), Bytes::new()).unwrap(),
                        Err(WalError::CompactionRefused { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                _ => {
                    let index = LogIndex(last + rng.range(0, 3));
                    let epoch = m.epoch(index).unwrap_or(Epoch::term(term + 1));
                    let meta = SnapshotMeta { index, epoch, membership: common::members() };
                    wal.install_snapshot(shard, &meta).unwrap();
                    m.install_snapshot(Snapshot { meta, data: Bytes::new() });
                }
            }
        }
        let state = describe(&model.values().cloned().collect::<Vec<_>>());
        writeln!(out, "P {state}").unwrap();
        out.flush().unwrap();
        wal.sync().unwrap();
        writeln!(out, "A {state}").unwrap();
        out.flush().unwrap();
    }
    unreachable!()
}

/// Entry point of the child process; skipped in normal runs.
#[test]
#[ignore = "runs only as the child process of kill_at_random_points"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by kill_at_random_points");
    let seed = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    run_child(&dir, seed);
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn kill_at_random_points() {
    let kills = env_u64("RINGKV_CRASH_KILLS", KILLS_DEFAULT);
    let seed = env_u64("RINGKV_CRASH_SEED", 1);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = DetRng::new(seed);
    let (mut in_flight_survived, mut torn_tails) = (0, 0);
    let mut acknowledged_total = 0;
    for kill in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_SEED_ENV, (seed << 32 | kill).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wait_for = rng.range(1, 40);
        let mut acked = 0;
        let mut last_acked: Option<String> = None;
        let mut in_flight: Option<String> = None;
        let mut take = |line: String| {
            if let Some(s) = line.strip_prefix("A ") {
                last_acked = Some(s.to_owned());
                in_flight = None;
                return true;
            }
            if let Some(s) = line.strip_prefix("P ") {
                in_flight = Some(s.to_owned());
            }
            false
        };
        for line in lines.by_ref() {
            if take(line.unwrap()) {
                acked += 1;
                if acked == wait_for {
                    break;
                }
            }
        }
        assert_eq!(acked, wait_for, "kill {kill}: the child stopped early: {:?}", child.wait());
        // Let it run on for a moment so the kill lands anywhere: in a write,
        // an fdatasync, a rotation or between batches.
        std::thread::sleep(Duration::from_micros(rng.range(0, 3000)));
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines written before the kill are still in the pipe.
        for line in lines.map_while(Result::ok) {
            take(line);
        }
        acknowledged_total += acked;

        let wal = Wal::open(FsDisk::open(dir.path()).unwrap(), options())
            .unwrap_or_else(|e| panic!("kill {kill} (seed {seed}): recovery failed: {e}"));
        torn_tails += usize::from(wal.recovery_report().torn_tail.is_some());
        let recovered = wal_state(&wal);
        let last_acked = last_acked.expect("at least one acknowledgement");
        if Some(&recovered) == in_flight.as_ref() {
            in_flight_survived += 1;
        } else {
            assert_eq!(
                recovered, last_acked,
                "kill {kill} (seed {seed}): recovered state is neither the acknowledged one nor \
                 the one in flight ({in_flight:?})"
            );
        }
    }
    eprintln!(
        "{kills} kills, {acknowledged_total} acknowledged batches seen; the in-flight batch \
         survived {in_flight_survived} times; {torn_tails} torn tails truncated"
    );
}
