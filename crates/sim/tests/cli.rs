//! The `ringkv-sim` command line: a sweep prints a summary and exits 0, a
//! traced seed prints its events, bad arguments (an unknown engine, a bug
//! the engine lacks) are refused with a clear message and exit status 2.

use std::process::Command;

fn sim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv-sim"))
        .args(args)
        .output()
        .expect("the ringkv-sim binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sweep_prints_a_summary() {
    let (code, out, err) = sim(&["--engine", "raft", "--seeds", "0..3"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("engine raft: 3 seeds, 0 failed"), "{out}");
    assert!(out.contains("seeds/s"), "{out}");
    assert!(out.contains("operations checked"), "{out}");
    assert!(out.contains("faults injected"), "{out}");
}

#[test]
fn traced_seed_prints_readable_events() {
    let (code, out, err) = sim(&["--seed", "5", "--trace"]);
    assert_eq!(code, 0, "stderr:\n{err}");
    let first = out.lines().next().unwrap_or_default();
    assert!(first.contains("0.000ms world start"), "{first}");
    assert!(
        out.lines().any(|l| l.contains(" role ") && l.contains("Leader")),
        "no election traced"
    );
    assert!(out.lines().any(|l| l.contains(" recv ") && l.contains("Append")), "no append traced");
}

#[test]
fn paxos_sweep_prints_a_summary() {
    let (code, out, err) = sim(&["--engine", "paxos", "--seeds", "0..3"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("engine paxos: 3 seeds, 0 failed"), "{out}");
    let (code, out, err) = sim(&["--engine", "paxos", "--seed", "5", "--trace"]);
    assert_eq!(code, 0, "stderr:\n{err}");
    assert!(out.lines().any(|l| l.contains(" recv ") && l.contains("Promise")), "no phase 1");
    assert!(out.lines().any(|l| l.contains(" recv ") && l.contains("Accept")), "no phase 2");
}

#[test]
fn a_failure_prints_the_command_that_replays_it_exactly() {
    let (code, out, _) =
        sim(&["--engine", "raft", "--bug", "apply-before-commit", "--seeds", "0..1"]);
    assert_eq!(code, 1, "{out}");
    let failed = out.lines().find(|l| l.starts_with("seed 0 FAILED")).expect("a failure line");
    let replay = out.lines().find_map(|l| l.strip_prefix("replay: ")).expect("a replay line");
    let args = replay.strip_prefix("cargo run --release -p ringkv-sim --features planted-bugs -- ");
    let args: Vec<&str> = args.expect("the replay runs the simulator").split(' ').collect();
    assert_eq!(
        args,
        ["--engine", "raft", "--seed", "0", "--trace", "--bug", "apply-before-commit"]
    );
    let (code, again, _) = sim(&args);
    assert_eq!(code, 1);
    assert!(again.lines().any(|l| l == failed), "the replay failed differently:\n{again}");
    assert!(again.lines().any(|l| l.contains("FAILURE")), "the replay has no trace");
}

#[test]
fn a_bug_the_engine_lacks_is_refused() {
    let (code, _, err) =
        sim(&["--engine", "paxos", "--seed", "1", "--bug", "vote-without-log-check"]);
    assert_eq!(code, 2);
    assert!(err.contains("the paxos engine has no planted bug vote-without-log-check"), "{err}");
    let (code, _, err) = sim(&["--seed", "1", "--bug", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("adopt-lowest-ballot"), "{err}");
}

#[test]
fn bad_arguments_are_refused() {
    let (code, _, err) = sim(&["--seeds", "5..2"]);
    assert_eq!(code, 2);
    assert!(err.contains("is empty"), "{err}");
    let (code, _, err) = sim(&["--engine", "zab"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown engine"), "{err}");
    let (code, _, err) = sim(&["--seed", "1", "--disable-checker", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown checker \"nope\"") && err.contains("log-matching"), "{err}");
}
