//! `ringkv chaos` on real processes, a short mix for CI: the register
//! workload under kill + pause + partition, the set workload under
//! partition, the watch workload under kill, and the register workload on
//! 8 shards under a rolling restart, with each engine. Each run's verdict
//! must be valid (the watch run may instead be skipped while the server
//! has no Watch service).
//!
//! Network namespaces need root. Without it the runs fall back to
//! `--no-netns` with the kill and pause nemeses only, and say so. The runs
//! take turns (one cluster at a time: the machine has few cores); their
//! seeds are fixed (`RINGKV_CHAOS_SEED` overrides them) and a failing run
//! keeps its output directory and prints the command that reruns it.
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code that reports what it ran")]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The binary under test.
const RINGKV: &str = env!("CARGO_BIN_EXE_ringkv");

/// One cluster at a time.
static TURN: Mutex<()> = Mutex::new(());

/// Node timeouts of the CI runs: short, so failovers fit in a short run.
const NODE_FLAGS: [&str; 4] = ["--heartbeat-interval", "50", "--election-timeout", "500"];

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

struct Run {
    verdict: serde_json::Value,
    out: PathBuf,
    stdout: String,
}

/// Runs `ringkv chaos` with `args` and reads its verdict.
fn chaos(name: &str, seed: u64, args: &[&str]) -> Run {
    let seed = std::env::var("RINGKV_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(seed);
    let out =
        std::env::temp_dir().join(format!("ringkv-chaos-{name}-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(RINGKV);
    cmd.arg("chaos")
        .args(args)
        .args(NODE_FLAGS)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--out")
        .arg(&out);
    if !is_root() {
        cmd.arg("--no-netns");
    }
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let verdict = std::fs::read_to_string(out.join("verdict.json")).unwrap_or_else(|e| {
        panic!(
            "{name}: no verdict ({e}); exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Run { verdict: serde_json::from_str(&verdict).unwrap(), out, stdout }
}

fn nemesis(with_root: &'static str, without: &'static str) -> &'static str {
    if is_root() {
        with_root
    } else {
        eprintln!(
            "not root: no network namespaces; running on loopback with `--nemesis {without}` instead of `{with_root}`"
        );
        without
    }
}

fn assert_valid(name: &str, run: &Run) {
    let ok = run.verdict["verdict"] == "valid";
    assert!(ok, "{name}: {}\noutput kept in {}", run.stdout, run.out.display());
    assert!(
        run.verdict["checked"].as_u64().unwrap() > 0,
        "{name} checked nothing:\n{}",
        run.stdout
    );
    eprintln!("{name}:\n{}", run.stdout);
    let _ = std::fs::remove_dir_all(&run.out);
}

#[test]
fn register_under_kill_pause_and_partition() {
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = nemesis("kill,pause,partition", "kill,pause");
    let run = chaos(
        "register",
        1,
        &[
            "--workload",
            "register",
            "--nemesis",
            n,
            "--time-limit",
            "30s",
            "--nemesis-interval",
            "3s",
        ],
    );
    assert_valid("register", &run);
    // The nemesis did inject faults.
    assert!(!run.verdict["faults"].as_object().unwrap().is_empty(), "{}", run.stdout);
}

#[test]
fn set_under_partition() {
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = nemesis("partition", "kill");
    let run = chaos(
        "set",
        2,
        &["--workload", "set", "--nemesis", n, "--time-limit", "20s", "--nemesis-interval", "3s"],
    );
    assert_valid("set", &run);
}

#[test]
fn watch_under_kill() {
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let run = chaos(
        "watch",
        3,
        &[
            "--workload",
            "watch",
            "--nemesis",
            "kill",
            "--time-limit",
            "20s",
            "--nemesis-interval",
            "3s",
        ],
    );
    let skipped = run.verdict["skipped"].as_str().unwrap_or_default();
    if run.verdict["verdict"] == "unknown" && skipped.starts_with("watch unimplemented") {
        // Not a pass: the server under test has no Watch service yet.
        eprintln!("watch: skipped: {skipped}");
        let _ = std::fs::remove_dir_all(&run.out);
        return;
    }
    assert_valid("watch", &run);
}

/// Nodes of the CI clusters.
const NODES: u64 = 3;

/// Register workload on `--shards 8` while every node is restarted one at
/// a time (issue #7): valid, writes acknowledged while nodes restarted,
/// every node restarted and healthy again, keys on several shards.
fn register_under_rolling_restart(engine: &str, seed: u64) {
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let name = format!("rolling-restart-{engine}");
    // Rounds of 3 restarts take about 5 s here; 20 s leaves room for a
    // slow machine to finish at least one.
    let run = chaos(
        &name,
        seed,
        &[
            "--workload",
            "register",
            "--nemesis",
            "rolling-restart",
            "--engine",
            engine,
            "--shards",
            "8",
            "--keys",
            "8",
            "--time-limit",
            "20s",
            "--nemesis-interval",
            "2s",
        ],
    );
    let lines = |file: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.out.join(file))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (faults, ops) = (lines("faults.jsonl"), lines("ops.jsonl"));
    // Each node's restart, from its start to its healthy end.
    let mut restarted = std::collections::BTreeSet::new();
    let mut windows = Vec::new();
    let mut open = None;
    for f in &faults {
        let fault = f["fault"].as_str().unwrap();
        if !fault.starts_with("rolling-restart-") {
            continue;
        }
        match f["phase"].as_str().unwrap() {
            "start" => open = Some(f["at_ns"].as_u64().unwrap()),
            "end" if f["detail"].as_str().unwrap().contains("healthy again") => {
                restarted.insert(f["nodes"][0].as_u64().unwrap());
                windows.push((open.take().unwrap(), f["at_ns"].as_u64().unwrap()));
            }
            _ => {}
        }
    }
    let written = |o: &&serde_json::Value| {
        o["outcome"] == "ok"
            && (o["f"] == "write" || (o["f"] == "cas" && o["value"]["answer"]["succeeded"] == true))
    };
    let writes = ops.iter().filter(written).count();
    let during = ops
        .iter()
        .filter(written)
        .filter(|o| {
            let t = o["completed_ns"].as_u64().unwrap();
            windows.iter().any(|&(a, b)| a <= t && t <= b)
        })
        .count();
    let spread = run.verdict["keys_per_shard"].as_object().unwrap().len();
    let report = format!("{}\noutput kept in {}", run.stdout, run.out.display());
    assert_eq!(run.verdict["shards"], 8, "{report}");
    assert!(spread >= 2, "the 8 keys are on {spread} shard(s): {report}");
    assert_eq!(
        restarted,
        (0..NODES).collect(),
        "not every node was restarted and healthy again: {report}"
    );
    // The seeds draw both ways of stopping a node (SIGTERM and SIGKILL).
    for how in ["rolling-restart-term", "rolling-restart-kill"] {
        assert!(run.verdict["faults"][how].as_u64().unwrap_or(0) > 0, "no {how}: {report}");
    }
    assert!(
        writes > 0 && during > 0,
        "{writes} writes acknowledged, {during} of them while a node restarted: {report}"
    );
    eprintln!(
        "{name}: {} restarts, {writes} writes acknowledged, {during} while a node restarted, keys on {spread} shards",
        windows.len()
    );
    assert_valid(&name, &run);
}

#[test]
fn register_on_8_shards_under_rolling_restart_raft() {
    register_under_rolling_restart("raft", 5);
}

#[test]
fn register_on_8_shards_under_rolling_restart_paxos() {
    register_under_rolling_restart("paxos", 6);
}

#[test]
#[ignore = "flaky: on a fast run the 1-key history grows past lincheck's step budget (verdict \
            unknown, not invalid; seen 2026-11-26 with 9,831 ops, 18 unknown); bound the history \
            before re-enabling"]
fn the_checker_catches_stale_serializable_reads() {
    // Serializable reads may be stale by etcd's contract; with a node paused
    // or cut off, lincheck must find the history not linearizable. This
    // proves the whole pipeline (clients, history, checker, verdict) can fail.
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !is_root() {
        // A paused node catches up within a heartbeat of resuming: too
        // seldom stale to make a reliable test without partitions.
        eprintln!("not root: no partitions; the stale-read check of the checker is not run");
        return;
    }
    let run = chaos(
        "stale",
        4,
        &[
            "--workload",
            "register",
            "--nemesis",
            "partition",
            "--time-limit",
            "20s",
            "--nemesis-interval",
            "2s",
            "--serializable-reads",
            "--keys",
            "1",
        ],
    );
    assert_eq!(run.verdict["verdict"], "invalid", "{}", run.stdout);
    assert_eq!(run.verdict["anomalies"][0]["kind"], "not-linearizable", "{}", run.stdout);
    assert!(run.out.join("anomaly.svg").exists() && run.out.join("lincheck.txt").exists());
    assert!(run.stdout.contains("rerun: ringkv chaos --workload register"), "{}", run.stdout);
    let _ = std::fs::remove_dir_all(&run.out);
}
