//! Determinism self-check: a run is a function of its seed. Two runs of
//! one seed give the same event-trace hash, whether or not the readable
//! trace is kept; different seeds give different runs.

use ringkv_sim::{RaftEngine, RunOptions, run_seed};

/// Seeds checked (each run three times).
const SEEDS: std::ops::Range<u64> = 0..24;

#[test]
fn same_seed_same_trace_hash() {
    let mut hashes = Vec::new();
    for seed in SEEDS {
        let a = run_seed::<RaftEngine>(seed, &RunOptions::default());
        let b = run_seed::<RaftEngine>(seed, &RunOptions::default());
        let traced =
            run_seed::<RaftEngine>(seed, &RunOptions { trace: true, ..RunOptions::default() });
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} replays differently");
        assert_eq!(a.trace_hash, traced.trace_hash, "keeping the trace changed seed {seed}'s run");
        assert_eq!(a.stats, b.stats, "seed {seed}: counters differ between runs");
        // Every delivered packet (peer message, request, response) gets a
        // line; ticks are hashed but not printed.
        let lines = traced.trace.map_or(0, |t| t.lines().count() as u64);
        assert!(
            lines >= a.stats.packets,
            "seed {seed}: {lines} trace lines for {} packets",
            a.stats.packets
        );
        hashes.push(a.trace_hash);
    }
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), SEEDS.count(), "different seeds should give different runs");
}

#[test]
fn no_fault_runs_replay_too() {
    let options = RunOptions { no_faults: true, ..RunOptions::default() };
    let a = run_seed::<RaftEngine>(3, &options);
    let b = run_seed::<RaftEngine>(3, &options);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert!(a.failure.is_none(), "{:?}", a.failure);
    assert_eq!(a.faults.total(), 0, "a run without faults injected some");
}
