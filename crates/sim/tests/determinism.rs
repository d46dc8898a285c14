//! Determinism self-check: a run is a function of its seed. Two runs of
//! one seed give the same event-trace hash, whether or not the readable
//! trace is kept; different seeds give different runs. For both engines.

use ringkv_sim::{PaxosEngine, RaftEngine, RunOptions, SimEngine, run_seed};

/// Seeds checked per engine (each run three times).
const SEEDS: std::ops::Range<u64> = 0..24;

fn same_seed_same_trace_hash<E: SimEngine>() {
    let mut hashes = Vec::new();
    for seed in SEEDS {
        let a = run_seed::<E>(seed, &RunOptions::default());
        let b = run_seed::<E>(seed, &RunOptions::default());
        let traced = run_seed::<E>(seed, &RunOptions { trace: true, ..RunOptions::default() });
        let engine = E::NAME;
        assert_eq!(a.trace_hash, b.trace_hash, "{engine} seed {seed} replays differently");
        assert_eq!(
            a.trace_hash, traced.trace_hash,
            "keeping the trace changed {engine} seed {seed}'s run"
        );
        assert_eq!(a.stats, b.stats, "{engine} seed {seed}: counters differ between runs");
        assert_eq!(a.faults, b.faults, "{engine} seed {seed}: faults differ between runs");
        // Every delivered packet (peer message, request, response) gets a
        // line; ticks are hashed but not printed.
        let lines = traced.trace.map_or(0, |t| t.lines().count() as u64);
        assert!(
            lines >= a.stats.packets,
            "{engine} seed {seed}: {lines} trace lines for {} packets",
            a.stats.packets
        );
        hashes.push(a.trace_hash);
    }
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), SEEDS.count(), "different seeds should give different runs");
}

#[test]
fn raft_same_seed_same_trace_hash() {
    same_seed_same_trace_hash::<RaftEngine>();
}

#[test]
fn paxos_same_seed_same_trace_hash() {
    same_seed_same_trace_hash::<PaxosEngine>();
}

#[test]
fn the_engines_run_one_seed_differently() {
    let raft = run_seed::<RaftEngine>(7, &RunOptions::default());
    let paxos = run_seed::<PaxosEngine>(7, &RunOptions::default());
    assert_ne!(raft.trace_hash, paxos.trace_hash);
}

#[test]
fn no_fault_runs_replay_too() {
    let options = RunOptions { no_faults: true, ..RunOptions::default() };
    for (a, b) in [
        (run_seed::<RaftEngine>(3, &options), run_seed::<RaftEngine>(3, &options)),
        (run_seed::<PaxosEngine>(3, &options), run_seed::<PaxosEngine>(3, &options)),
    ] {
        assert_eq!(a.trace_hash, b.trace_hash, "{}", a.engine);
        assert!(a.failure.is_none(), "{}: {:?}", a.engine, a.failure);
        assert_eq!(a.faults.total(), 0, "a {} run without faults injected some", a.engine);
        assert!(a.stats.acked > 0, "a {} run without faults acknowledged nothing", a.engine);
    }
}
