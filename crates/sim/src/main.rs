//! `ringkv-sim`: runs the deterministic simulator over a range of seeds and
//! prints a summary, or replays one seed with a readable trace.
//!
//! ```text
//! cargo run --release -p ringkv-sim -- --engine raft --seeds 0..10000
//! cargo run --release -p ringkv-sim -- --engine paxos --seed 42 --trace
//! cargo run --release -p ringkv-sim -- --engine raft --sharded --seeds 0..200
//! cargo run --release -p ringkv-sim --features planted-bugs -- --bug ack-before-persist --seeds 0..500
//! cargo run --release -p ringkv-sim --features planted-bugs -- --engine paxos --bug adopt-lowest-ballot --seeds 0..500
//! ```
//!
//! Exit status: 0 when every seed passed, 1 when some failed, 2 on a usage
//! error.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use ringkv_sim::{EngineKind, MoveBug, PlantedBug, RunOptions, Summary, replay_command};

/// Deterministic simulation of a ringkv shard under faults.
#[derive(Parser, Debug)]
#[command(name = "ringkv-sim", version)]
struct Args {
    /// Consensus engine: raft or paxos.
    #[arg(long, default_value = "raft")]
    engine: String,
    /// Seeds to run, as START..END (END excluded) or a count N (0..N).
    #[arg(long, default_value = "0..1000", conflicts_with = "seed")]
    seeds: String,
    /// Run one seed only.
    #[arg(long)]
    seed: Option<u64>,
    /// Print a readable trace of each run (use with --seed).
    #[arg(long)]
    trace: bool,
    /// Plant a bug in every replica (needs `--features planted-bugs`); repeatable.
    /// Raft: vote-without-log-check, commit-previous-term-by-counting,
    /// ack-before-persist, apply-before-commit, read-without-quorum. Paxos:
    /// accept-without-promise-check, adopt-lowest-ballot, ack-before-persist.
    #[arg(long = "bug")]
    bugs: Vec<String>,
    /// Run without faults (a perfect network and disks).
    #[arg(long)]
    no_faults: bool,
    /// Simulate many shards placed on the nodes by the consistent-hash
    /// ring, with nodes joining and leaving it (shard count, nodes and
    /// move throttle drawn from each seed).
    #[arg(long)]
    sharded: bool,
    /// Plant a bug in the sharded move protocol (implies --sharded):
    /// remove-before-promote or reuse-replica-id.
    #[arg(long)]
    move_bug: Option<String>,
    /// Ignore what this checker finds (to see what the others catch); repeatable.
    #[arg(long = "disable-checker")]
    disabled_checkers: Vec<String>,
    /// Run every seed twice and compare trace hashes (by default only the
    /// first seed of a sweep is run twice).
    #[arg(long)]
    check_determinism: bool,
    /// Stop at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
}

fn parse_seeds(s: &str) -> anyhow::Result<std::ops::Range<u64>> {
    if let Some((a, b)) = s.split_once("..") {
        let a: u64 = a.trim().parse().with_context(|| format!("bad start in --seeds {s:?}"))?;
        let b: u64 = b.trim().parse().with_context(|| format!("bad end in --seeds {s:?}"))?;
        if b <= a {
            bail!("--seeds {s:?} is empty: END must be greater than START");
        }
        Ok(a..b)
    } else {
        let n: u64 = s
            .trim()
            .parse()
            .with_context(|| format!("--seeds {s:?} is neither START..END nor a count"))?;
        Ok(0..n)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ringkv-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let engine: EngineKind = args.engine.parse()?;
    let bugs = args.bugs.iter().map(|b| b.parse::<PlantedBug>()).collect::<Result<Vec<_>, _>>()?;
    let mut disabled_checkers = Vec::new();
    for name in &args.disabled_checkers {
        match ringkv_sim::checkers::checker_named(name) {
            Some(c) => disabled_checkers.push(c),
            None => bail!(
                "unknown checker {name:?}: choose one of {}",
                ringkv_sim::checkers::NAMES.join(", ")
            ),
        }
    }
    let move_bug = args.move_bug.as_deref().map(str::parse::<MoveBug>).transpose()?;
    let options = RunOptions {
        bugs,
        trace: args.trace,
        no_faults: args.no_faults,
        disabled_checkers,
        sharded: args.sharded || move_bug.is_some(),
        move_bug,
    };
    let seeds = match args.seed {
        Some(s) => s..s + 1,
        None => parse_seeds(&args.seeds)?,
    };
    // Engine assertions are caught and reported per seed; the default hook
    // would print each one as it happens.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut summary = Summary::default();
    let first = seeds.start;
    for seed in seeds {
        let report = ringkv_sim::run(engine, seed, &options)?;
        if let Some(trace) = &report.trace {
            print!("{trace}");
        }
        if args.check_determinism || seed == first {
            let again =
                ringkv_sim::run(engine, seed, &RunOptions { trace: false, ..options.clone() })?;
            if again.trace_hash != report.trace_hash {
                bail!(
                    "seed {seed} is not deterministic: trace hashes {:016x} and {:016x} differ",
                    report.trace_hash,
                    again.trace_hash
                );
            }
        }
        if let Some(f) = &report.failure {
            println!("seed {seed} FAILED: {} at {}:\n{}", f.checker, f.at, f.what);
            println!("replay: {}", replay_command(engine, seed, &options));
        }
        let failed = report.failure.is_some();
        summary.add(&report);
        if failed && args.fail_fast {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    print!("{}", summary.render(&args.engine, Some(elapsed)));
    Ok(summary.failures.is_empty())
}
