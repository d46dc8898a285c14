//! Each planted bug breaks one safety rule of the engine; the simulator's
//! checkers must catch each within a stated number of seeds, or they
//! prove nothing. Seeds are tried from 0 in order; the first failing seed
//! is printed (run with `--nocapture` to see it) and must be caught by a
//! property checker, not by the liveness bound or a message storm.
//!
//! The bounds leave room over the first failing seed measured when the
//! bound was set (noted next to each), so that a change to the simulator's
//! random draws does not make the test flaky; a bug caught much later than
//! before means the simulator lost power, which is worth a look.

// The summary and the first failing seed are this test's report.
#![allow(clippy::print_stderr)]

use ringkv_sim::{PlantedBug, RaftEngine, RunOptions, run_seed};

/// Checkers that prove a safety property (or linearizability).
const PROPERTY_CHECKERS: [&str; 9] = [
    "election-safety",
    "log-matching",
    "leader-completeness",
    "state-machine-safety",
    "durability",
    "commit-monotonicity",
    "read-index",
    "linearizability",
    "replica-contract",
];

fn assert_caught(bug: PlantedBug, seeds_max: u64) {
    let options = RunOptions { bugs: vec![bug], ..RunOptions::default() };
    let mut other = Vec::new();
    for seed in 0..seeds_max {
        let report = run_seed::<RaftEngine>(seed, &options);
        let Some(f) = report.failure else { continue };
        if PROPERTY_CHECKERS.contains(&f.checker) {
            eprintln!(
                "planted bug {bug}: caught at seed {seed} by {} at {}: {}",
                f.checker,
                f.at,
                f.what.lines().next().unwrap_or_default()
            );
            return;
        }
        // Side effects of the bug (a cluster it wedged, a storm) are not
        // what this test is after; keep looking.
        other.push(format!("seed {seed}: {}", f.checker));
    }
    panic!(
        "planted bug {bug} was not caught by a property checker in {seeds_max} seeds \
         (other failures: {other:?})"
    );
}

#[test]
fn vote_without_log_check_is_caught() {
    assert_caught(PlantedBug::VoteWithoutLogCheck, 200);
}

#[test]
fn commit_previous_term_by_counting_is_caught() {
    assert_caught(PlantedBug::CommitPreviousTermByCounting, 2_000);
}

#[test]
fn ack_before_persist_is_caught() {
    assert_caught(PlantedBug::AckBeforePersist, 1_000);
}

#[test]
fn apply_before_commit_is_caught() {
    assert_caught(PlantedBug::ApplyBeforeCommit, 200);
}

#[test]
fn read_without_quorum_is_caught() {
    assert_caught(PlantedBug::ReadWithoutQuorum, 500);
}
