//! The summary of a sweep over many seeds.

use std::fmt::Write as _;

use crate::faults::FaultCounts;
use crate::world::{Failure, RunReport};

/// Most failures listed in full in a rendered summary.
pub const FAILURES_SHOWN_MAX: usize = 20;

/// Totals over the seeds of a sweep.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Failing seeds with what failed.
    pub failures: Vec<(u64, Failure)>,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// Client operations recorded (and checked for linearizability).
    pub ops: u64,
    /// Of which acknowledged.
    pub ops_ok: u64,
    /// Of which of unknown outcome.
    pub ops_unknown: u64,
    /// Events processed.
    pub events: u64,
    /// Epochs that had a leader.
    pub elections: u64,
    /// Entries committed.
    pub committed: u64,
    /// Writes acknowledged.
    pub acked: u64,
    /// Node restarts.
    pub restarts: u64,
    /// Local snapshots.
    pub snapshots: u64,
    /// Snapshots installed from a leader.
    pub snapshot_installs: u64,
    /// Seeds whose linearizability check ran out of budget.
    pub undecided: u64,
    /// Simulated microseconds.
    pub virtual_us: u64,
    /// Most packets delivered within one tick in any run.
    pub packets_per_tick_max: u64,
    /// Most ticks any run needed to meet its liveness goal after healing.
    pub liveness_ticks_max: u64,
    /// Replica moves carried out (sharded runs).
    pub moves: u64,
    /// Replicas the ring's plans moved (sharded runs).
    pub replicas_moved: u64,
    /// Their ideal share, `R·S/N` per ring change, in thousandths.
    pub replicas_moved_ideal_milli: u64,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, r: &RunReport) {
        self.seeds += 1;
        if let Some(f) = &r.failure {
            self.failures.push((r.seed, f.clone()));
        }
        self.faults.merge(&r.faults);
        let s = &r.stats;
        self.ops += s.ops;
        self.ops_ok += s.ops_ok;
        self.ops_unknown += s.ops_unknown;
        self.events += s.events;
        self.elections += s.elections;
        self.committed += s.committed;
        self.acked += s.acked;
        self.restarts += s.restarts;
        self.snapshots += s.snapshots;
        self.snapshot_installs += s.snapshot_installs;
        self.undecided += u64::from(s.lincheck_undecided);
        self.virtual_us += r.ended_at.0;
        self.packets_per_tick_max = self.packets_per_tick_max.max(s.packets_per_tick_max);
        self.liveness_ticks_max = self.liveness_ticks_max.max(s.liveness_ticks);
        self.moves += s.moves;
        self.replicas_moved += s.replicas_moved;
        self.replicas_moved_ideal_milli += s.replicas_moved_ideal_milli;
    }

    /// Adds every run of `other`.
    pub fn merge(&mut self, other: &Summary) {
        self.seeds += other.seeds;
        self.failures.extend(other.failures.iter().cloned());
        self.faults.merge(&other.faults);
        self.ops += other.ops;
        self.ops_ok += other.ops_ok;
        self.ops_unknown += other.ops_unknown;
        self.events += other.events;
        self.elections += other.elections;
        self.committed += other.committed;
        self.acked += other.acked;
        self.restarts += other.restarts;
        self.snapshots += other.snapshots;
        self.snapshot_installs += other.snapshot_installs;
        self.undecided += other.undecided;
        self.virtual_us += other.virtual_us;
        self.packets_per_tick_max = self.packets_per_tick_max.max(other.packets_per_tick_max);
        self.liveness_ticks_max = self.liveness_ticks_max.max(other.liveness_ticks_max);
        self.moves += other.moves;
        self.replicas_moved += other.replicas_moved;
        self.replicas_moved_ideal_milli += other.replicas_moved_ideal_milli;
    }

    /// The summary as text; `elapsed_secs` (wall clock, measured by the
    /// caller) adds rates.
    pub fn render(&self, engine: &str, elapsed_secs: Option<f64>) -> String {
        let mut s = String::new();
        let _ =
            writeln!(s, "engine {engine}: {} seeds, {} failed", self.seeds, self.failures.len());
        if let Some(secs) = elapsed_secs.filter(|t| *t > 0.0) {
            let _ = writeln!(
                s,
                "  {:.1} s wall, {:.1} seeds/s, {:.0} events/s, {:.0}x real time",
                secs,
                self.seeds as f64 / secs,
                self.events as f64 / secs,
                self.virtual_us as f64 / 1e6 / secs
            );
        }
        let _ = writeln!(
            s,
            "  operations checked {} (ok {}, unknown {}), linearizability undecided in {} seeds",
            self.ops, self.ops_ok, self.ops_unknown, self.undecided
        );
        let _ = writeln!(
            s,
            "  elections {}, entries committed {}, writes acknowledged {}, restarts {}, \
             snapshots {} taken / {} installed, events {}, most packets in one tick {}, \
             most ticks to liveness {}",
            self.elections,
            self.committed,
            self.acked,
            self.restarts,
            self.snapshots,
            self.snapshot_installs,
            self.events,
            self.packets_per_tick_max,
            self.liveness_ticks_max
        );
        if self.replicas_moved > 0 {
            let _ = writeln!(
                s,
                "  replica moves carried out {}; replicas the ring moved {} vs ideal R·S/N {:.1}",
                self.moves,
                self.replicas_moved,
                self.replicas_moved_ideal_milli as f64 / 1_000.0
            );
        }
        let _ = writeln!(s, "  faults injected {}:", self.faults.total());
        for (kind, n) in self.faults.iter() {
            let _ = writeln!(s, "    {:<22} {n}", kind.name());
        }
        for (seed, f) in self.failures.iter().take(FAILURES_SHOWN_MAX) {
            let first = f.what.lines().next().unwrap_or_default();
            let _ = writeln!(s, "  FAILED seed {seed}: {} at {}: {first}", f.checker, f.at);
        }
        if self.failures.len() > FAILURES_SHOWN_MAX {
            let _ = writeln!(s, "  … and {} more", self.failures.len() - FAILURES_SHOWN_MAX);
        }
        s
    }
}
