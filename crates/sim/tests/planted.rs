//! Each planted bug breaks one safety rule of an engine; the simulator's
//! checkers must catch each within a stated number of seeds, or they
//! prove nothing. Seeds are tried from 0 in order; the first failing seed
//! is printed (run with `--nocapture` to see it) and must be caught by a
//! property checker, not by the liveness bound or a message storm.
//!
//! Each bound leaves room over the first failing seed measured when it was
//! set (noted next to it), so that a change to the simulator's random
//! draws does not make the test flaky; a bug caught much later than before
//! means the simulator lost power, which is worth a look.

// The first failing seed is this test's report.
#![allow(clippy::print_stderr)]

use ringkv_sim::{EngineKind, PlantedBug, RunOptions};

/// Checkers that prove a safety property (or linearizability).
const PROPERTY_CHECKERS: [&str; 11] = [
    "election-safety",
    "log-matching",
    "leader-completeness",
    "state-machine-safety",
    "durability",
    "durability-at-end",
    "commit-monotonicity",
    "read-index",
    "wal-recovery",
    "linearizability",
    "replica-contract",
];

fn assert_caught(engine: EngineKind, bug: PlantedBug, seeds_max: u64) {
    let options = RunOptions { bugs: vec![bug], ..RunOptions::default() };
    let mut other = Vec::new();
    for seed in 0..seeds_max {
        let report = ringkv_sim::run(engine, seed, &options).expect("the bug can be planted");
        let Some(f) = report.failure else { continue };
        if PROPERTY_CHECKERS.contains(&f.checker) {
            eprintln!(
                "planted bug {bug} in {engine}: caught at seed {seed} by {} at {}: {}",
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
        "planted bug {bug} in {engine} was not caught by a property checker in {seeds_max} \
         seeds (other failures: {other:?})"
    );
}

#[test]
fn raft_vote_without_log_check_is_caught() {
    // First caught at seed 1 (leader-completeness).
    assert_caught(EngineKind::Raft, PlantedBug::VoteWithoutLogCheck, 200);
}

#[test]
fn raft_commit_previous_term_by_counting_is_caught() {
    // First caught at seed 196 (leader-completeness): it needs Figure 8,
    // which only leader-churn seeds with one entry per message produce.
    assert_caught(EngineKind::Raft, PlantedBug::CommitPreviousTermByCounting, 2_000);
}

#[test]
fn raft_ack_before_persist_is_caught() {
    // First caught at seed 15 (leader-completeness).
    assert_caught(EngineKind::Raft, PlantedBug::AckBeforePersist, 500);
}

#[test]
fn raft_apply_before_commit_is_caught() {
    // First caught at seed 0 (durability).
    assert_caught(EngineKind::Raft, PlantedBug::ApplyBeforeCommit, 200);
}

#[test]
fn raft_read_without_quorum_is_caught() {
    // First caught at seed 38 (read-index).
    assert_caught(EngineKind::Raft, PlantedBug::ReadWithoutQuorum, 500);
}

#[test]
fn paxos_accept_without_promise_check_is_caught() {
    // First caught at seed 0 (commit-monotonicity).
    assert_caught(EngineKind::Paxos, PlantedBug::AcceptWithoutPromiseCheck, 200);
}

#[test]
fn paxos_adopt_lowest_ballot_is_caught() {
    // First caught at seed 25 (leader-completeness).
    assert_caught(EngineKind::Paxos, PlantedBug::AdoptLowestBallot, 500);
}

#[test]
fn paxos_ack_before_persist_is_caught() {
    // First caught at seed 51 (leader-completeness).
    assert_caught(EngineKind::Paxos, PlantedBug::AckBeforePersist, 1_000);
}

/// `--disable-checker`: a disabled checker's findings are ignored, and the
/// others still judge the run (what the first catch hid shows up).
#[test]
fn a_disabled_checker_is_ignored_and_the_others_still_catch() {
    let bugs = vec![PlantedBug::ApplyBeforeCommit];
    let options = RunOptions { bugs: bugs.clone(), ..RunOptions::default() };
    let first = ringkv_sim::run(EngineKind::Raft, 0, &options).unwrap();
    let first = first.failure.expect("seed 0 catches apply-before-commit");
    let options = RunOptions { bugs, disabled_checkers: vec![first.checker], ..options };
    let next = ringkv_sim::run(EngineKind::Raft, 0, &options).unwrap();
    let next = next.failure.expect("another checker catches it too");
    assert_ne!(next.checker, first.checker);
    assert!(PROPERTY_CHECKERS.contains(&next.checker), "{next:?}");
}
