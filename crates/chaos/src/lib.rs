//! ringkv's Jepsen-style chaos harness: real `ringkv server` processes,
//! real sockets, disks and signals; a workload of etcd v3 clients; a
//! nemesis injecting faults on a schedule; checkers; a verdict.
//!
//! ```text
//! ringkv chaos --workload register --nemesis kill,pause,partition --nodes 3 --time-limit 60s --seed 7
//! ringkv chaos --workload set --nemesis partition,loss --nodes 5 --time-limit 10m       # a longer soak
//! ringkv chaos --workload append --nemesis kill,partition,clock,member,wal,disk --time-limit 5m
//! ringkv chaos --cleanup                  # remove what a harness killed with SIGKILL left behind
//! ```
//!
//! The long rolling-restart soak (issue #7; not in CI, which runs 20 s of
//! it on 8 shards per engine in `crates/cli/tests/chaos.rs`): every
//! node restarted in turn, by SIGTERM or SIGKILL, mixed with plain kills,
//! on 64 shards, for ten minutes, once per engine:
//!
//! ```text
//! ringkv chaos --workload register --nemesis rolling-restart,kill --shards 64 --keys 64 --time-limit 10m --ops 1000000 --engine raft
//! ringkv chaos --workload register --nemesis rolling-restart,kill --shards 64 --keys 64 --time-limit 10m --ops 1000000 --engine paxos
//! ringkv chaos --workload set --nemesis rolling-restart --shards 64 --keys 16 --time-limit 10m --ops 1000000
//! ```
//!
//! # A run
//!
//! 1. **Layout** ([`net`]): a bridge and one network namespace per node,
//!    each node on its own address, clients in the root namespace
//!    (`--no-netns`: every node on loopback, for machines without root;
//!    partitions and loss are then refused).
//! 2. **Cluster** ([`cluster`]): `--nodes` processes of the binary
//!    (`--binary`, default this one) with etcd's flags, `--engine`,
//!    `--shards` and `--hash-key-segments` (see [`workload`] for what each
//!    workload checks on a sharded cluster), and the node timeouts given
//!    (default: the binary's own). Every process is
//!    killed, every namespace, rule and mount removed when the run ends:
//!    normally, on an error, on a panic (drop guards) or on Ctrl-C/SIGTERM.
//! 3. **Clients** ([`workload`]): workers (`--clients`, default two per
//!    node), each bound to one node, issue operations until `--time-limit`
//!    or `--ops`, whichever comes first; every operation is recorded with
//!    its invocation and completion time and an outcome ([`client`]):
//!    *ok*, *fail* (certainly no effect: no connection, or an error ringkv
//!    gives before proposing) or *unknown* (a timeout, a lost connection,
//!    `Unavailable`: it may have happened).
//! 4. **Nemesis** ([`nemesis`]): faults from `--nemesis`, one at a time,
//!    about every `--nemesis-interval`, each healed before the next.
//! 5. **Recovery**: faults end with the clients' phase; everything is
//!    healed and the members must agree on a leader again within
//!    [`run::RECOVERY_TIMEOUT`] (else a `no-recovery` anomaly). Final reads.
//! 6. **Checks** and **report** ([`report`]): the verdict is *valid*,
//!    *invalid* (an anomaly in ringkv: the checkers', or a node that exited
//!    by itself, a `crash`) or *unknown* (skipped, undecided, or a harness
//!    problem). The seed and the command that reruns the run are printed.
//!
//! | workload | checks |
//! | --- | --- |
//! | `register` | reads, writes, CAS on a few keys: linearizability with `ringkv-lincheck`, revisions included (per key, so on any number of shards) |
//! | `set` | CAS-appended unique elements: none acknowledged lost, none unexpected or duplicated, none definitely failed yet present |
//! | `lease` | keys on expired or revoked leases are gone, never resurrected, and every lease expires |
//! | `watch` | watchers on every node see the same dense, ordered revisions across reconnects, every acknowledged put among them (one shard only) |
//! | `append` | list-append transactions: G0, G1a, G1c, G-single, G2, and their real-time variants (strict serializability), with [`elle`] (one shard only) |
//!
//! The nemeses are listed in [`nemesis`]: `kill`, `kill-leader`, `pause`,
//! `partition`, `loss`, `disk`, `clock`, `clock-back`, `member`, `wal`,
//! `rolling-restart`.
//!
//! # Output
//!
//! `--out DIR` (default `chaos-runs/<workload>-<seed>`) receives
//! `verdict.json`, `ops.jsonl`, `faults.jsonl`, the workload's own files
//! (`history.jsonl` in `ringkv-lincheck`'s format for the register
//! workload, `txns.jsonl` for append), `anomaly.svg` on a failure, and each
//! node's log under `nodes/`. See [`report`].
//!
//! Exit status: 0 valid, 1 invalid, 2 the harness could not run, 3 unknown.
//!
//! # Limits
//!
//! * `--engine` is passed to the nodes; a binary whose runtime refuses
//!   `paxos` stops the run at start-up with the node's message. (A binary
//!   that serves it can be tested with `--binary`.)
//! * A server without the Watch service makes the watch workload report
//!   "skipped: watch unimplemented" (verdict unknown, exit status 3).
//! * One fault at a time; the schedule is drawn from the seed, but the
//!   timing of real processes is not reproducible, so a rerun repeats the
//!   schedule, not the exact interleaving.
//! * Faults that need root (namespaces, the disk's tmpfs) are refused
//!   without it; `clock` needs Debian's `faketime` package.

pub mod client;
pub mod cluster;
pub mod config;
pub mod elle;
pub mod error;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod run;
pub mod svg;
pub mod sys;
pub mod wal;
pub mod workload;

use std::process::ExitCode;

pub use config::{ChaosArgs, NemesisKind, WorkloadKind};
pub use error::ChaosError;
pub use report::{Report, Verdict};
pub use run::run;

/// Exit status of a run that found an anomaly.
pub const EXIT_INVALID: u8 = 1;
/// Exit status of a run the harness could not carry out.
pub const EXIT_HARNESS_ERROR: u8 = 2;
/// Exit status of a run that found nothing but could not check everything.
pub const EXIT_UNKNOWN: u8 = 3;

/// `ringkv chaos`: runs, prints the report (seed and rerun command
/// included), and exits 0 (valid), 1 (anomaly), 2 (harness error) or 3
/// (unknown: skipped or undecided).
#[allow(clippy::print_stdout, clippy::print_stderr, reason = "the command's output")]
pub fn main(args: ChaosArgs) -> ExitCode {
    if args.cleanup {
        return match net::cleanup_stale() {
            Ok(c) => {
                println!(
                    "removed namespaces {:?}, bridges {:?}, mounts {:?}",
                    c.namespaces, c.bridges, c.mounts
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringkv chaos --cleanup: {e}");
                ExitCode::from(EXIT_HARNESS_ERROR)
            }
        };
    }
    init_logs();
    match run(args) {
        Ok(report) => {
            println!("{report}");
            match report.verdict {
                Verdict::Valid => ExitCode::SUCCESS,
                Verdict::Invalid => ExitCode::from(EXIT_INVALID),
                Verdict::Unknown => ExitCode::from(EXIT_UNKNOWN),
            }
        }
        Err(e) => {
            eprintln!("ringkv chaos: {e}");
            ExitCode::from(EXIT_HARNESS_ERROR)
        }
    }
}

/// Logs go to standard error at `info` (`RUST_LOG` refines it).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A subscriber set already (a test, an embedding program) stays.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
