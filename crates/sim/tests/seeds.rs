//! The seed sweep CI runs: `RINGKV_SIM_SEEDS` seeds from 0 (default
//! [`SEEDS_DEFAULT`]), Raft, with each seed's own fault mix, every checker
//! on and the client history checked for linearizability at the end.
//!
//! The sweep is split over [`SHARDS`] tests so the test harness runs them
//! on every core. A failure names the seed and the command that replays it
//! with a trace; add the seed to `tests/regressions.rs` once understood.

// The summary and the first failing seed are this test's report.
#![allow(clippy::print_stderr)]

use ringkv_sim::{EngineKind, RaftEngine, RunOptions, Summary, replay_command, run_seed};

/// Seeds run by default: at least 2,000 per engine (the CI floor), sized so
/// the sweep takes a minute or two on two cores in the test profile.
const SEEDS_DEFAULT: u64 = 2_000;
/// Tests the sweep is split into.
const SHARDS: u64 = 4;

fn seeds() -> u64 {
    std::env::var("RINGKV_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(SEEDS_DEFAULT)
}

fn sweep(shard: u64) {
    let options = RunOptions::default();
    let mut summary = Summary::default();
    for seed in (0..seeds()).filter(|s| s % SHARDS == shard) {
        let report = run_seed::<RaftEngine>(seed, &options);
        summary.add(&report);
    }
    eprint!("{}", summary.render("raft", None));
    let failures: Vec<String> = summary
        .failures
        .iter()
        .map(|(seed, f)| {
            format!(
                "seed {seed}: {} at {}: {}\n  replay: {}",
                f.checker,
                f.at,
                f.what,
                replay_command(EngineKind::Raft, *seed, &options)
            )
        })
        .collect();
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(summary.undecided, 0, "linearizability checks ran out of budget");
}

#[test]
fn raft_seeds_shard_0() {
    sweep(0);
}

#[test]
fn raft_seeds_shard_1() {
    sweep(1);
}

#[test]
fn raft_seeds_shard_2() {
    sweep(2);
}

#[test]
fn raft_seeds_shard_3() {
    sweep(3);
}
