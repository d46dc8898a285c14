//! The seed sweep CI runs, and every seed that ever failed.
//!
//! The sweep: for each engine, [`SEEDS_PER_ENGINE`] seeds from 0 (or
//! `RINGKV_SIM_SEEDS`), each with its own fault mix, every checker on and
//! the client history checked for linearizability at the end, spread over
//! the machine's cores. Seeds failing on a known engine bug
//! ([`ENGINE_BUGS`]) are skipped and replaced by the next ones, so the
//! count checked stays the same. A failure names the seed and the command
//! that replays it with a trace; add the seed to [`FIXED`] (or
//! [`ENGINE_BUGS`]) once understood.

// The summary is this test's report.
#![allow(clippy::print_stderr)]

use std::sync::atomic::{AtomicUsize, Ordering};

use ringkv_sim::{EngineKind, RunOptions, Summary, replay_command};

/// Seeds checked per engine by default: the CI floor.
const SEEDS_PER_ENGINE: usize = 2_000;
/// Most threads one sweep uses (CI machines have two cores).
const THREADS_MAX: usize = 4;

/// Seeds that failed once, with why and what fixed it; each must pass now.
const FIXED: &[(EngineKind, u64, &str)] = &[
    // The leader-completeness checker read a new Multi-Paxos leader's log
    // through the disk's injected read errors and took a failed read for a
    // missing entry: the checker now reads with faults off.
    (EngineKind::Paxos, 3, "checker read a leader's log through an injected read error"),
    (EngineKind::Paxos, 32, "checker read a leader's log through an injected read error"),
    // α = 1024 with one slot per message and one message in flight: the
    // no-ops padding a membership change take one round trip and fsync
    // each, seconds of virtual time, past the liveness bound. Such seeds
    // now draw α ≤ 64.
    (EngineKind::Paxos, 9, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    (EngineKind::Paxos, 43, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    (EngineKind::Paxos, 564, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    (EngineKind::Paxos, 759, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    (EngineKind::Paxos, 955, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    (EngineKind::Paxos, 1024, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    (EngineKind::Paxos, 1067, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    (EngineKind::Paxos, 1335, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    (EngineKind::Paxos, 1400, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    (EngineKind::Paxos, 1708, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    (EngineKind::Paxos, 1935, "alpha 1024 padding at one slot per round trip outlasted liveness"),
    // The same with four messages in flight: a replica added late caught
    // up on 1,000 padding slots one per message. Seeds with one slot per
    // message now draw α ≤ 64 whatever their window.
    (EngineKind::Paxos, 8902, "alpha 1024, one slot per message: a late replica caught up slowly"),
    // Failed on the has_ready() engine bug below while it drew α = 1024;
    // it draws α ≤ 64 since and passes (the bug is fixed since, too).
    (EngineKind::Paxos, 1499, "has_ready() engine bug, before its alpha changed"),
    // Both engines keep has_ready() true when reading their log failed
    // inside ready() (they leave the work to a later Ready). The host
    // first asked again at once (spinning for minutes on paxos seed 191),
    // then took it for a broken contract; it now retries at the next input.
    (EngineKind::Raft, 10, "has_ready() stays true after a log read error in ready()"),
    (EngineKind::Raft, 24, "has_ready() stays true after a log read error in ready()"),
    (EngineKind::Raft, 73, "has_ready() stays true after a log read error in ready()"),
    (EngineKind::Raft, 130, "has_ready() stays true after a log read error in ready() (leader)"),
    (EngineKind::Paxos, 63, "has_ready() stays true after a log read error in ready()"),
    (EngineKind::Paxos, 191, "has_ready() stays true after log read errors: the host spun"),
    (EngineKind::Paxos, 95, "has_ready() stays true after a log read error in ready()"),
    (EngineKind::Paxos, 114, "has_ready() stays true after a log read error in ready() (leader)"),
    (EngineKind::Paxos, 217, "has_ready() stays true after a log read error in ready() (leader)"),
];

/// A bug in an engine that made seeds fail (listed in [`ENGINE_BUGS`] while unfixed).
struct EngineBug {
    engine: EngineKind,
    /// What the traces show.
    what: &'static str,
    /// Seeds of `0..10_000` it makes fail.
    seeds: &'static [u64],
}

/// Known engine bugs: their seeds are left out of the sweep, and each bug
/// has an ignored test below that replays them. None today; fixed ones
/// keep their seeds as regression tests (below).
const ENGINE_BUGS: &[EngineBug] = &[];

const PAXOS_HAS_READY_WITHOUT_SNAPSHOT: EngineBug = EngineBug {
    engine: EngineKind::Paxos,
    what: "a Multi-Paxos leader's has_ready() stays true for a peer behind its first log \
           index while the log storage has no snapshot to send (a local compaction is \
           buffered, not yet durable: SnapshotTemporarilyUnavailable), but ready() returns \
           nothing: wants_send() returns recent_active for such a peer, flush_accepts' \
           start_snapshot() gives up silently. A node loop asking has_ready() spins. \
           Fixed: wants_send() claims such a peer only when a snapshot can be sent.",
    seeds: &[
        848, 1151, 1206, 1443, 1458, 1632, 1682, 1945, 2423, 2619, 2729, 3034, 3131, 3234, 3496,
        3507, 4154, 4428, 4518, 4720, 5003, 5163, 5790, 6077, 6088, 6465, 7097, 7167, 7204, 7568,
        8333, 8513, 8530, 8551, 8791, 9000, 9055, 9377, 9793,
    ],
};

fn seeds_per_engine() -> usize {
    std::env::var("RINGKV_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(SEEDS_PER_ENGINE)
}

fn known_engine_bug(engine: EngineKind, seed: u64) -> bool {
    ENGINE_BUGS.iter().any(|b| b.engine == engine && b.seeds.contains(&seed))
}

fn failures(engine: EngineKind, summary: &Summary, options: &RunOptions) -> Vec<String> {
    let mut failures = summary.failures.clone();
    failures.sort_by_key(|(seed, _)| *seed);
    failures
        .iter()
        .map(|(seed, f)| {
            format!(
                "seed {seed}: {} at {}: {}\n  replay: {}",
                f.checker,
                f.at,
                f.what,
                replay_command(engine, *seed, options)
            )
        })
        .collect()
}

fn sweep(engine: EngineKind) {
    let options = RunOptions::default();
    let seeds: Vec<u64> =
        (0..).filter(|s| !known_engine_bug(engine, *s)).take(seeds_per_engine()).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(THREADS_MAX);
    let summary = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut summary = Summary::default();
                    while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                        summary.add(
                            &ringkv_sim::run(engine, seed, &options).expect("no bugs to plant"),
                        );
                    }
                    summary
                })
            })
            .collect();
        let mut total = Summary::default();
        for w in workers {
            total.merge(&w.join().expect("a sweep thread panicked"));
        }
        total
    });
    eprint!("{}", summary.render(engine.name(), None));
    assert_eq!(summary.seeds, seeds.len() as u64);
    let failures = failures(engine, &summary, &options);
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(summary.undecided, 0, "linearizability checks ran out of budget");
}

#[test]
fn raft_seeds() {
    sweep(EngineKind::Raft);
}

#[test]
fn paxos_seeds() {
    sweep(EngineKind::Paxos);
}

#[test]
fn fixed_seeds_pass() {
    let options = RunOptions::default();
    let mut failed = Vec::new();
    for &(engine, seed, why) in FIXED {
        let report = ringkv_sim::run(engine, seed, &options).unwrap();
        if let Some(f) = report.failure {
            failed.push(format!(
                "{engine} seed {seed} (once: {why}) fails again: {}: {}\n  replay: {}",
                f.checker,
                f.what.lines().next().unwrap_or_default(),
                replay_command(engine, seed, &options)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

fn assert_engine_bug_fixed(bug: &EngineBug) {
    let options = RunOptions::default();
    let mut failed = Vec::new();
    for &seed in bug.seeds {
        let report = ringkv_sim::run(bug.engine, seed, &options).expect("no bugs to plant");
        if let Some(f) = report.failure {
            failed.push(format!(
                "seed {seed}: {}: {}\n  replay: {}",
                f.checker,
                f.what.lines().next().unwrap_or_default(),
                replay_command(bug.engine, seed, &options)
            ));
        }
    }
    assert!(failed.is_empty(), "{} engine bug: {}\n{}", bug.engine, bug.what, failed.join("\n"));
}

/// Regression: the 39 seeds of the fixed Multi-Paxos `has_ready` bug.
#[test]
fn paxos_has_ready_without_snapshot() {
    assert_engine_bug_fixed(&PAXOS_HAS_READY_WITHOUT_SNAPSHOT);
}
