//! Deterministic simulator for ringkv clusters: virtual time, simulated
//! network and disks, faults, checkers.
//!
//! One run simulates one shard replicated on N nodes, in one thread, as a
//! pure function of a seed (FoundationDB's and TigerBeetle's approach):
//!
//! * **Nodes** ([`host`]) each run a consensus engine ([`SimEngine`]: Raft
//!   or Multi-Paxos, see below) over the real WAL ([`ringkv_storage::Wal`])
//!   on a simulated disk ([`ringkv_storage::SimDisk`]: writes survive a
//!   crash only once fsynced, a crash mid-write tears it), apply committed
//!   entries to a small key-value state machine ([`kv`]), take snapshots
//!   and compact.
//! * **The network** ([`network`]) delays, loses, duplicates and reorders
//!   packets, and the nemesis partitions it (symmetrically, asymmetrically,
//!   one node isolated) and clogs links.
//! * **The nemesis** ([`world`]) also crashes and restarts nodes, makes
//!   fsyncs fail (`EIO`), fills disks (`ENOSPC`), crashes disks in the
//!   middle of a write, fails reads, adds, removes and replaces replicas
//!   and transfers leadership. Which of these a seed uses, and how often,
//!   is drawn from the seed ([`faults`], swarm testing).
//! * **Clients** ([`client`]) run a key-value workload with retries and
//!   timeouts, as real clients do, and record a history for
//!   [`ringkv_lincheck`].
//! * **Checkers** ([`checkers`], one property per file) watch every write,
//!   commit, application and election as it happens.
//!
//! A run has a safety phase (faults on), a liveness phase (everything
//! healed: a new write must commit everywhere within a bound) and a drain;
//! then the client history must be linearizable. Two runs of one seed give
//! the same trace hash ([`RunReport::trace_hash`]).
//!
//! ```text
//!   seed ─▶ Scenario (cluster, workload, fault mix)
//!            │
//!   EventQueue (virtual µs) ─▶ World ─▶ Host::{tick, receive, request, wake}
//!            ▲                   │            │ Effects: sends, replies, timers, observations
//!            └── Network ◀───────┴────────────┘
//!                                └─▶ Checkers ─▶ RunReport (+ lincheck at the end)
//! ```
//!
//! # Two engines, one proof
//!
//! `--engine raft` ([`RaftEngine`], `ringkv_raft`) and `--engine paxos`
//! ([`PaxosEngine`], `ringkv_paxos`) run under the same host, the same
//! fault mixes (a seed draws the same scenario for both) and the same
//! checkers. Where the engines differ, the checkers follow the engine's
//! [`checkers::Identity`]:
//!
//! | property | Raft | Multi-Paxos |
//! | --- | --- | --- |
//! | election safety | one leader per term | one leader per ballot |
//! | log matching | same `(index, term)` ⇒ same entry and same prefix | same `(slot, ballot)` ⇒ same value; no prefix (holes and re-accepted values are legal) |
//! | leader completeness, durability, commit monotonicity, state-machine safety | entries compared by term (and contents) | entries compared by kind and payload: a chosen value is re-proposed under each new leader's ballot |
//! | read index, WAL recovery, linearizability | unchanged | unchanged |
//!
//! Multi-Paxos' α (the configuration delay, also its pipeline window) is
//! drawn per seed from [`scenario::CONFIG_DELAY_SLOTS_CHOICES`], up to the
//! engine's default of 1024. Each engine has its own planted bugs
//! ([`PlantedBug`], [`EngineKind::bugs`]): Raft's vote without the log
//! check, commit of a previous term by counting, acknowledgement before
//! persisting, apply before commit and read without ReadIndex; Paxos'
//! accept without the promise check, adoption of the lowest-ballot value
//! and acknowledgement before persisting. `tests/planted.rs` shows each is
//! caught within a stated number of seeds.
//!
//! Command line: `cargo run --release -p ringkv-sim -- --engine raft --seeds 0..10000`
//! (or `--engine paxos`) prints seeds run, seeds per second, faults
//! injected by kind, operations checked and failures; a failure prints the
//! command that replays it with a trace (`--seed N --trace`).
//!
//! # Figures
//!
//! `cargo run --release -p ringkv-sim -- --engine E --seeds 0..10000`, one
//! thread on a two-core machine shared with other builds (so wall-clock
//! rates are low bounds; CPU time from `/usr/bin/time`):
//!
//! | | raft | paxos |
//! | --- | --- | --- |
//! | seeds run | 10,000 | 10,000 |
//! | wall clock, seeds/s | 330.9 s, 30.2 | 255.3 s, 39.2 |
//! | CPU time | 96.5 s | 101.6 s |
//! | faults injected | 1,895,838 | 1,824,984 |
//! | operations checked (ok / unknown) | 673,137 (662,863 / 10,274) | 651,727 (641,971 / 9,756) |
//! | entries committed | 379,469 | 1,448,007 |
//! | failures | 0 | 39, all one engine bug (below) |
//!
//! Faults by kind, raft / paxos: loss 179,447 / 181,183; duplicate
//! 138,523 / 127,920; delay 220,098 / 203,428; reorder 1,043,676 /
//! 915,536; partition 38,983 / 38,419; asymmetric partition 37,700 /
//! 37,430; isolate 44,731 / 46,023; clog 32,645 / 30,574; crash 35,019 /
//! 35,461; crash during sync 34,322 / 31,933; fsync `EIO` 34,493 / 31,368;
//! `ENOSPC` 32,517 / 30,666; read `EIO` 8,541 / 97,468; add replica 3,170 /
//! 3,666; remove replica 1,244 / 1,419; replace replica 3,121 / 3,756;
//! transfer leader 4,504 / 5,078; leader churn 3,104 / 3,656.
//!
//! The 39 Multi-Paxos failures are one engine bug, listed with its seeds
//! in `tests/seeds.rs`: a leader's `has_ready()` stays true for a peer
//! behind its first log index while no snapshot can be sent yet (a local
//! compaction is buffered), but `ready()` returns nothing.
//!
//! Planted bugs, first failing seed scanning from 0 (`tests/planted.rs`):
//! raft vote-without-log-check 1, commit-previous-term-by-counting 196,
//! ack-before-persist 15, apply-before-commit 0, read-without-quorum 38;
//! paxos accept-without-promise-check 0, adopt-lowest-ballot 25,
//! ack-before-persist 51.
//!
//! CI (`cargo test --workspace`) runs 2,000 seeds per engine
//! (`tests/seeds.rs`) in the dev profile, which the workspace optimises
//! for this crate and the crates it spends its time in
//! (`[profile.dev.package.ringkv-sim]` and neighbours in the root
//! `Cargo.toml`), with debug assertions on: 48 s of CPU for both
//! sweeps and the regression seeds, 67 s wall on the shared two-core
//! machine above.

//! # Many shards
//!
//! `--sharded` runs [`sharded::ShardedWorld`] instead: 2 to 8 shards of 3
//! replicas placed on 4 to 6 nodes by the consistent-hash ring
//! (`ringkv_ring`), one host per node carrying every group the placement
//! gives it over shared links (a partition or a crash hits all of a
//! node's groups at once), clients routing each key to its shard's
//! leader, and nodes joining and leaving the ring while the faults go on:
//! each move of the ring's [`ringkv_ring::MovementPlan`] runs as
//! membership changes through the shard's own engine (learner, catch up,
//! promote, remove the old replica, drop its state), at most a drawn
//! number at once. See the module for what is checked and for what is
//! left to single-shard runs (disk faults, each replica keeps its own
//! WAL). `cargo run --release -p ringkv-sim -- --engine paxos --sharded
//! --seeds 0..1000`; `--move-bug NAME` plants a move-protocol bug
//! (`tests/sharded.rs`).
//!
//! `ringkv-sim --engine E --sharded --seeds 0..1000` (the dev-profile
//! binary, optimised as the tests are; CPU time from `/usr/bin/time` on the
//! shared two-core machine):
//!
//! | | raft | paxos |
//! | --- | --- | --- |
//! | seeds run, failures | 1,000, 0 | 1,000, 0 |
//! | CPU time | 26.1 s | 25.6 s |
//! | ring changes (joins / leaves) | 1,472 / 1,172 | 1,364 / 1,046 |
//! | replica moves carried out | 8,267 | 7,667 |
//! | replicas the ring moved vs the ideal R·S/N per change | 8,267 vs 8,189.0 | 7,667 vs 7,563.1 |
//! | operations checked (ok / unknown) | 120,364 (120,089 / 275) | 117,189 (116,913 / 276) |
//! | crashes, partitions + isolations + clogs | 3,617, 17,238 | 3,496, 17,160 |
//!
//! CI runs 150 sharded seeds per engine (`tests/sharded.rs`: 12 s of CPU
//! for the whole file, planted move bugs included).
pub mod checkers;
pub mod client;
pub mod engine;
pub mod faults;
pub mod host;
pub mod kv;
pub mod network;
pub mod protocol;
pub mod scenario;
pub mod sharded;
pub mod summary;
pub mod time;
pub mod trace;
pub mod world;

pub use engine::{
    EngineError, EngineKind, EngineOptions, PaxosEngine, PlantedBug, RaftEngine, SimEngine,
};
pub use faults::{FaultCounts, FaultKind};
pub use sharded::{Layout, MoveBug, ShardedWorld};
pub use summary::Summary;
pub use world::{Failure, RunOptions, RunReport, RunStats};

use host::ReplicaHost;
use world::World;

/// Runs one seed with engine `E`.
///
/// # Panics
/// The planted bugs asked for cannot be planted in `E` (see [`run`] for
/// the checked form).
pub fn run_seed<E: SimEngine>(seed: u64, options: &RunOptions) -> RunReport {
    if let Err(e) = E::check_bugs(&options.bugs) {
        panic!("{e}");
    }
    if options.sharded {
        return ShardedWorld::<ReplicaHost<E>>::new(seed, options).run();
    }
    World::<ReplicaHost<E>>::new(seed, options).run()
}

/// Runs one seed with the engine named by `engine`.
///
/// # Errors
/// The engine is not available, or the planted bugs asked for cannot be
/// planted in it.
pub fn run(engine: EngineKind, seed: u64, options: &RunOptions) -> Result<RunReport, EngineError> {
    match engine {
        EngineKind::Raft => {
            RaftEngine::check_bugs(&options.bugs)?;
            Ok(run_seed::<RaftEngine>(seed, options))
        }
        EngineKind::Paxos => {
            PaxosEngine::check_bugs(&options.bugs)?;
            Ok(run_seed::<PaxosEngine>(seed, options))
        }
    }
}

/// The command that replays `seed` with a readable trace.
pub fn replay_command(engine: EngineKind, seed: u64, options: &RunOptions) -> String {
    let mut cmd = String::from("cargo run --release -p ringkv-sim");
    if !options.bugs.is_empty() {
        cmd.push_str(" --features planted-bugs");
    }
    cmd.push_str(&format!(" -- --engine {engine} --seed {seed} --trace"));
    for b in &options.bugs {
        cmd.push_str(&format!(" --bug {b}"));
    }
    if options.no_faults {
        cmd.push_str(" --no-faults");
    }
    if options.sharded {
        cmd.push_str(" --sharded");
    }
    if let Some(b) = options.move_bug {
        cmd.push_str(&format!(" --move-bug {b}"));
    }
    for c in &options.disabled_checkers {
        cmd.push_str(&format!(" --disable-checker {c}"));
    }
    cmd
}
