//! Failover on real processes, with the binary's default timeouts.
//!
//! - Under a load of concurrent clients (gets, puts, compare-and-set txns
//!   on a few keys, every operation recorded), the leader is killed with
//!   SIGKILL; writes resume under a new leader; the old leader restarts
//!   and catches up; the recorded history must be linearizable
//!   (`ringkv-lincheck`), so no acknowledged write was lost and no read
//!   was stale. An etcdctl watch on a surviving member goes on through
//!   the failover. The longest pause between acknowledged writes around the
//!   kill is printed (a figure for the README, not asserted: the machine
//!   is noisy).
//! - A follower down while enough writes happen for the others to compact
//!   their logs catches up from a snapshot when it restarts.
//!
//! Both tests run once with each consensus engine, one at a time.
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "a test")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_api::etcdserverpb::{PutRequest, RangeRequest};
use ringkv_lincheck::{CheckResult, Options, check};
use support::load::{Recorder, Tally, Worker, gaps};
use support::{Background, ProcessCluster, Timing, wait_until};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(60);

/// Concurrent clients of the load.
const WORKERS: u64 = 5;

/// The keys they fight over.
const KEYS: &[&str] = &["f/0", "f/1", "f/2", "f/3"];

/// Load before the kill.
const WARMUP: Duration = Duration::from_secs(2);

/// Load after writes resumed, before and after the old leader restarts.
const AFTER_RESUME: Duration = Duration::from_millis(1500);

/// The tests of this file run one at a time: on a 2-core machine, a
/// concurrent test's processes would stretch the failover pause measured.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn raft_leader_killed_under_load_history_is_linearizable() {
    leader_killed_under_load("raft");
}

#[test]
fn paxos_leader_killed_under_load_history_is_linearizable() {
    leader_killed_under_load("paxos");
}

fn leader_killed_under_load(engine: &str) {
    let _serial = one_at_a_time();
    let started = Instant::now();
    let mut cluster =
        ProcessCluster::start_timed(3, &[&format!("--engine={engine}")], Timing::Default).unwrap();
    let leader = cluster.wait_leader(WAIT).unwrap();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let recorder = Recorder::new(cluster.client_urls());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            let worker = Worker::new(recorder.clone(), id, KEYS);
            runtime.spawn(worker.run(Arc::clone(&stop)))
        })
        .collect();

    // etcdctl's watch asks for a leader (`hasleader`): the failover must
    // not end it on a member that survives.
    let survivor = (leader + 1) % 3;
    let mut watcher =
        Background::etcdctl(&cluster.members[survivor].client_url(), &["watch", "f/", "--prefix"]);

    std::thread::sleep(WARMUP);
    let before = recorder.write_times().len();
    assert!(before > 0, "no write succeeded before the kill");
    let killed_at = recorder.now();
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(WAIT).unwrap();
    assert_ne!(new_leader, leader);
    let resumed =
        wait_until(WAIT, || recorder.write_times().last().is_some_and(|t| *t > killed_at));
    assert!(resumed, "no write succeeded after the leader was killed");
    std::thread::sleep(AFTER_RESUME);

    let printed = watcher.stdout().len();
    assert!(
        watcher.wait_for(WAIT, |out| out.len() > printed),
        "the watcher saw nothing after the failover: {}",
        watcher.stderr()
    );
    assert!(watcher.wait_exit(Duration::ZERO).is_none(), "the watcher ended: {}", watcher.stderr());

    // The old leader comes back while the load goes on.
    cluster.restart(leader).unwrap();
    std::thread::sleep(AFTER_RESUME);
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = workers.into_iter().map(|w| runtime.block_on(w).unwrap()).collect();

    // Every member, the restarted one included, converges on the same
    // store; a final linearizable read of each key joins the history.
    let mut reader = Worker::new(recorder.clone(), WORKERS, KEYS);
    let head = runtime.block_on(async {
        let mut latest = Vec::new();
        for key in KEYS {
            let found = loop {
                if let Some(found) = reader.get_key(Bytes::from_static(key.as_bytes())).await {
                    break found;
                }
            };
            latest.push(found.map(|f| f.value));
        }
        latest
    });
    for (i, m) in cluster.members.iter().enumerate() {
        let url = m.client_url();
        let same = wait_until(WAIT, || {
            runtime.block_on(serializable_values(&url, KEYS)).is_ok_and(|v| v == head)
        });
        assert!(same, "member {i} never caught up to {head:?}:\n{}", cluster.log(i));
    }

    let history = recorder.history();
    let verdict = check(&history, &Options::default());
    let times = recorder.write_times();
    let (longest, failover) = gaps(&times, killed_at);
    let total: Tally = tallies.iter().fold(Tally::default(), |a, t| Tally {
        ok: a.ok + t.ok,
        unknown: a.unknown + t.unknown,
        failed: a.failed + t.failed,
    });
    println!(
        "{engine}: {} operations ({} ok, {} unknown, {} refused), {} acknowledged writes; \
         leader killed at {killed_at:?}: longest pause in acknowledged writes after the kill \
         {failover:?} (of the whole run {longest:?}); test took {:?}",
        history.len(),
        total.ok,
        total.unknown,
        total.failed,
        times.len(),
        started.elapsed(),
    );
    match verdict {
        CheckResult::Linearizable => {}
        CheckResult::NotLinearizable(cx) => {
            panic!("{engine}: the history is not linearizable:\n{cx}\n{}", cx.timeline())
        }
        CheckResult::Undecided(u) => panic!("{engine}: lincheck undecided: {u:?}"),
    }
}

/// Each key's value as `url`'s member has it (a serializable read).
async fn serializable_values(url: &str, keys: &[&str]) -> anyhow::Result<Vec<Option<Bytes>>> {
    let mut kv = KvClient::connect(url.to_owned()).await?;
    let mut values = Vec::new();
    for key in keys {
        let reply = kv
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                serializable: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        values.push(reply.kvs.first().map(|kv| Bytes::from(kv.value.clone())));
    }
    Ok(values)
}

/// `--snapshot-count` of the snapshot test: a snapshot every this many
/// entries.
const SNAPSHOT_COUNT: u64 = 100;

/// Entries the members keep behind a snapshot before compacting their log
/// (the node's `SNAPSHOT_CATCH_UP_ENTRIES_DEFAULT`; the binary has no flag
/// for it, as etcd 3.4 has none): the downed follower must fall further
/// behind than this for the leader to have only a snapshot to send.
const CATCH_UP_ENTRIES: u64 = 5_000;

/// Attempts at one put of the snapshot test before it fails.
const PUT_TRIES_MAX: u32 = 50;

/// Clients writing concurrently in the snapshot test (the node batches
/// concurrent proposals into one fsync, so many writers fill the log fast).
const SNAPSHOT_WRITERS: u64 = 32;

#[test]
fn raft_follower_down_during_compaction_catches_up_by_snapshot() {
    follower_down_during_compaction_catches_up_by_snapshot("raft");
}

#[test]
fn paxos_follower_down_during_compaction_catches_up_by_snapshot() {
    follower_down_during_compaction_catches_up_by_snapshot("paxos");
}

fn follower_down_during_compaction_catches_up_by_snapshot(engine: &str) {
    let _serial = one_at_a_time();
    let started = Instant::now();
    // The default timing: with one member down, the fast one lets a busy
    // machine start needless elections.
    let snapshot_count = format!("--snapshot-count={SNAPSHOT_COUNT}");
    let flags = [snapshot_count.as_str(), &format!("--engine={engine}")];
    let mut cluster = ProcessCluster::start_timed(3, &flags, Timing::Default).unwrap();
    let leader = cluster.wait_leader(WAIT).unwrap();
    let down = (leader + 1) % 3;
    let up = (leader + 2) % 3;
    cluster.kill(down);

    // Enough entries for the others to snapshot and drop the log the
    // downed member would need.
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let url = cluster.members[leader].client_url();
    let entries = CATCH_UP_ENTRIES + 4 * SNAPSHOT_COUNT;
    let per_writer = entries / SNAPSHOT_WRITERS + 1;
    let writers: Vec<_> = (0..SNAPSHOT_WRITERS)
        .map(|w| {
            let url = url.clone();
            runtime.spawn(async move {
                let mut kv = KvClient::connect(url).await.unwrap();
                for n in 0..per_writer {
                    let put = PutRequest {
                        key: format!("snap/{w}/{n}").into_bytes(),
                        value: format!("v{w}-{n}").into_bytes(),
                        ..Default::default()
                    };
                    // A busy two-member quorum may change leaders; the put
                    // is idempotent, so retry it (this test is about the
                    // catch-up, not availability).
                    let mut tries = 0;
                    while let Err(status) = kv.put(put.clone()).await {
                        tries += 1;
                        assert!(tries < PUT_TRIES_MAX, "put keeps failing: {status}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        runtime.block_on(w).unwrap();
    }
    let written = SNAPSHOT_WRITERS * per_writer;
    println!("{engine}: wrote {written} keys in {:?}", started.elapsed());

    cluster.restart(down).unwrap();
    let down_url = cluster.members[down].client_url();
    let count = |url: &str| {
        runtime.block_on(async {
            let mut kv = KvClient::connect(url.to_owned()).await?;
            let reply = kv
                .range(RangeRequest {
                    key: b"snap/".to_vec(),
                    range_end: b"snap0".to_vec(),
                    serializable: true,
                    count_only: true,
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(u64::try_from(reply.into_inner().count)?)
        })
    };
    let caught_up = wait_until(WAIT, || count(&down_url).is_ok_and(|n| n == written));
    assert!(
        caught_up,
        "the restarted member has {:?} of {written} keys:\n{}",
        count(&down_url),
        cluster.log(down)
    );
    assert_eq!(count(&cluster.members[up].client_url()).unwrap(), written);
    // Every key and value, not only the count.
    let all = |url: &str| {
        runtime.block_on(async {
            let mut kv = KvClient::connect(url.to_owned()).await.unwrap();
            let reply = kv
                .range(RangeRequest {
                    key: b"snap/".to_vec(),
                    range_end: b"snap0".to_vec(),
                    serializable: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            reply.kvs.into_iter().map(|kv| (kv.key, kv.value, kv.mod_revision)).collect::<Vec<_>>()
        })
    };
    assert!(all(&down_url) == all(&url), "the restarted member's keys differ from the leader's");
    // The member logs the install at its next status refresh.
    let installed = wait_until(WAIT, || {
        cluster.full_log(down).contains("installed a snapshot from the leader")
    });
    assert!(installed, "the member caught up without a snapshot:\n{}", cluster.log(down));
    println!("{engine}: snapshot catch-up test took {:?}", started.elapsed());
}
