//! The `ringkv-sim` command line: a sweep prints a summary and exits 0, a
//! traced seed prints its events, an unavailable engine is refused with a
//! clear message and exit status 2.

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
fn paxos_is_not_yet_available() {
    let (code, _, err) = sim(&["--engine", "paxos", "--seeds", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("paxos engine is not yet available"), "{err}");
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
