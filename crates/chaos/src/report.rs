//! A run's output directory and verdict.
//!
//! | file | what |
//! | --- | --- |
//! | `verdict.json` | the verdict, the anomalies, counts, availability gaps, the seed and the rerun command |
//! | `ops.jsonl` | every client operation: worker, node, kind, interval (ns), outcome, call and answer, error |
//! | `faults.jsonl` | the fault timeline: every start and end, with nodes and details |
//! | `history.jsonl` | (register) the history in `ringkv-lincheck`'s format: `ringkv-lincheck history.jsonl` re-checks it |
//! | `lincheck.txt`, `lincheck.svg` | (register, on a violation) the checker's counterexample |
//! | `anomaly.svg` | (on a failure) operations and faults around the first anomaly |
//! | `nodes/n<i>/log` | each node's log, across restarts |

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::ChaosError;
use crate::history::{FaultEvent, OpOutcome, OpRecord};
use crate::run::Ctx;
use crate::svg;
use crate::workload::WorkloadOutcome;

/// Most time shown on each side of an anomaly in `anomaly.svg` (half the
/// anomaly's own span, within these bounds).
pub const ANOMALY_MARGIN: Duration = Duration::from_secs(2);

/// Least time shown on each side of an anomaly, in ns.
pub const ANOMALY_MARGIN_MIN_NS: u64 = 50_000_000;

/// Time after a fault ends within which the write gap around it is measured.
pub const AVAILABILITY_TAIL: Duration = Duration::from_secs(15);

/// Something a checker found wrong (or, kind `harness`, something that kept
/// the harness from checking everything).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// `not-linearizable`, `lost-write`, `crash`, `no-recovery`, `G0`, …
    pub kind: String,
    /// What exactly, in words.
    pub detail: String,
    /// When it shows (ns since the run started), if it has a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
    /// The window of the operations involved (ns), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ns: Option<(u64, u64)>,
    /// The operations involved, as (worker, invoked_ns), for the picture.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<(usize, u64)>,
}

impl Anomaly {
    /// An anomaly with no time attached.
    pub fn new(kind: &str, detail: String) -> Anomaly {
        Anomaly { kind: kind.to_owned(), detail, at_ns: None, window_ns: None, ops: Vec::new() }
    }

    /// Whether it is about the harness rather than ringkv.
    pub fn is_harness(&self) -> bool {
        self.kind == "harness"
    }
}

/// The verdict of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check passed.
    Valid,
    /// Some check found an anomaly in ringkv.
    Invalid,
    /// Nothing wrong was found, but not everything could be checked
    /// (a skipped workload, an undecided check, a harness problem).
    Unknown,
}

/// The longest gap between acknowledged writes around one fault.
#[derive(Clone, Debug, Serialize)]
pub struct Gap {
    /// The fault.
    pub fault: String,
    /// Its nodes.
    pub nodes: Vec<usize>,
    /// When it started, seconds since the run started.
    pub at_s: f64,
    /// The longest time without an acknowledged write, from the last one
    /// before the fault to the first one after it ended (ms).
    pub longest_ms: u64,
}

/// What a run found and where its files are.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// The output directory.
    pub out: PathBuf,
    /// The seed.
    pub seed: u64,
    /// The command that reruns this run.
    pub command: String,
    /// The workload.
    pub workload: String,
    /// The nemeses.
    pub nemesis: Vec<String>,
    /// Number of nodes.
    pub nodes: usize,
    /// Data shards of the cluster.
    pub shards: u32,
    /// How many of the workload's keys each data shard holds.
    pub keys_per_shard: BTreeMap<u64, usize>,
    /// Operations issued, by outcome.
    pub ops: OpCounts,
    /// Operations the checkers examined.
    pub checked: usize,
    /// Faults injected, by name.
    pub faults: BTreeMap<String, usize>,
    /// What was found.
    pub anomalies: Vec<Anomaly>,
    /// Why a workload was skipped, if it was.
    pub skipped: Option<String>,
    /// Why a check could not decide, if one could not.
    pub undecided: Option<String>,
    /// Write availability around each fault.
    pub availability: Vec<Gap>,
    /// How long the healed cluster took to agree on a leader (ms).
    pub recovery_ms: Option<u64>,
    /// The workload's own summary lines.
    pub summary: Vec<String>,
}

/// Operations by outcome.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct OpCounts {
    /// All.
    pub total: usize,
    /// Answered.
    pub ok: usize,
    /// Certainly without effect.
    pub fail: usize,
    /// Of unknown effect.
    pub unknown: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "verdict: {:?}", self.verdict)?;
        writeln!(
            f,
            "workload {} on {} nodes ({} shards), nemesis {}: {} ops ({} ok, {} fail, {} unknown), \
             {} checked",
            self.workload,
            self.nodes,
            self.shards,
            self.nemesis.join(","),
            self.ops.total,
            self.ops.ok,
            self.ops.fail,
            self.ops.unknown,
            self.checked
        )?;
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        writeln!(
            f,
            "faults: {}",
            if faults.is_empty() { "none".to_owned() } else { faults.join(", ") }
        )?;
        for line in &self.summary {
            writeln!(f, "{line}")?;
        }
        if let Some(longest) = self.availability.iter().max_by_key(|g| g.longest_ms) {
            writeln!(
                f,
                "longest write gap around a fault: {} ms ({} at {:.1}s)",
                longest.longest_ms, longest.fault, longest.at_s
            )?;
        }
        if let Some(s) = &self.skipped {
            writeln!(f, "skipped: {s}")?;
        }
        if let Some(u) = &self.undecided {
            writeln!(f, "undecided: {u}")?;
        }
        for a in &self.anomalies {
            writeln!(f, "ANOMALY {}: {}", a.kind, a.detail)?;
        }
        writeln!(f, "output: {}", self.out.display())?;
        writeln!(f, "seed: {}", self.seed)?;
        write!(f, "rerun: {}", self.command)
    }
}

/// Counts operations by outcome.
pub fn count(ops: &[OpRecord]) -> OpCounts {
    let mut c = OpCounts { total: ops.len(), ..OpCounts::default() };
    for o in ops {
        match o.outcome {
            OpOutcome::Ok => c.ok += 1,
            OpOutcome::Fail => c.fail += 1,
            OpOutcome::Unknown => c.unknown += 1,
        }
    }
    c
}

/// For each fault, the longest time between acknowledged writes from the
/// last one before it started to the first one after it ended (looking at
/// most [`AVAILABILITY_TAIL`] past its end, and not past `run_end_ns`, the
/// end of the clients' phase; faults after it are left out).
pub fn availability(ops: &[OpRecord], faults: &[FaultEvent], run_end_ns: u64) -> Vec<Gap> {
    let mut writes: Vec<u64> =
        ops.iter().filter(|o| o.is_acknowledged_write()).map(|o| o.completed_ns).collect();
    writes.sort_unstable();
    let tail = u64::try_from(AVAILABILITY_TAIL.as_nanos()).unwrap_or(u64::MAX);
    let mut gaps = Vec::new();
    for (start, end, _) in svg::fault_intervals(faults, run_end_ns) {
        let Some(event) = faults.iter().find(|f| f.phase == "start" && f.at_ns == start) else {
            continue;
        };
        let before = writes.partition_point(|&t| t < start);
        let from = if before > 0 { writes[before - 1] } else { start };
        let limit = end.saturating_add(tail).min(run_end_ns);
        let mut longest = 0;
        let mut last = from;
        let mut closed = false;
        for &t in &writes[before..] {
            longest = longest.max(t - last);
            last = t;
            if t > end {
                closed = true;
                break;
            }
        }
        if !closed {
            longest = longest.max(limit.saturating_sub(last));
        }
        gaps.push(Gap {
            fault: event.fault.clone(),
            nodes: event.nodes.clone(),
            at_s: start as f64 / 1e9,
            longest_ms: longest / 1_000_000,
        });
    }
    gaps
}

#[derive(Serialize)]
struct VerdictFile<'a> {
    #[serde(flatten)]
    report: &'a Report,
    engine: &'a str,
    time_limit_ms: u128,
}

/// Writes the output directory and returns the report.
///
/// # Errors
/// [`ChaosError::Io`].
pub fn write(
    out: &Path,
    ctx: &Ctx,
    outcome: &WorkloadOutcome,
    anomalies: Vec<Anomaly>,
    recovery: Option<Duration>,
) -> Result<Report, ChaosError> {
    let ops = ctx.recorder.ops();
    let faults = ctx.recorder.faults();
    let clients_end_ns = ctx.clients_end_ns();
    write_lines(&out.join("ops.jsonl"), &ops)?;
    write_lines(&out.join("faults.jsonl"), &faults)?;
    for (name, contents) in &outcome.artifacts {
        let path = out.join(name);
        std::fs::write(&path, contents).map_err(ChaosError::io("writing", &path))?;
    }
    let real = anomalies.iter().any(|a| !a.is_harness());
    let verdict = if real {
        Verdict::Invalid
    } else if outcome.skipped.is_some() || outcome.undecided.is_some() || !anomalies.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    if let Some(first) =
        anomalies.iter().find(|a| !a.is_harness() && (a.at_ns.is_some() || a.window_ns.is_some()))
    {
        let (a, b) = first.window_ns.unwrap_or_else(|| {
            let t = first.at_ns.unwrap_or(0);
            (t, t)
        });
        let margin_max = u64::try_from(ANOMALY_MARGIN.as_nanos()).unwrap_or(u64::MAX);
        let margin = ((b - a) / 2).clamp(ANOMALY_MARGIN_MIN_NS, margin_max);
        let picture = svg::Picture {
            ops: &ops,
            faults: &faults,
            window: (a.saturating_sub(margin), b.saturating_add(margin)),
            highlight: &first.ops,
            marker: first.at_ns.map(|t| (t, first.kind.clone())),
            title: format!("{}: {}", first.kind, first.detail.lines().next().unwrap_or_default()),
        };
        let path = out.join("anomaly.svg");
        std::fs::write(&path, svg::render(&picture)).map_err(ChaosError::io("writing", &path))?;
    }
    let mut fault_counts = BTreeMap::new();
    for f in faults.iter().filter(|f| f.phase == "start") {
        *fault_counts.entry(f.fault.clone()).or_insert(0) += 1;
    }
    let seed = ctx.seed;
    let report = Report {
        verdict,
        out: out.to_path_buf(),
        seed,
        command: ctx.args.rerun_command(seed),
        workload: ctx.args.workload.as_str().to_owned(),
        nemesis: ctx.args.nemeses().iter().map(|n| n.as_str().to_owned()).collect(),
        nodes: ctx.args.nodes,
        shards: ctx.args.shards,
        keys_per_shard: outcome.keys_per_shard.clone(),
        ops: count(&ops),
        checked: outcome.checked,
        faults: fault_counts,
        anomalies,
        skipped: outcome.skipped.clone(),
        undecided: outcome.undecided.clone(),
        availability: availability(&ops, &faults, clients_end_ns),
        recovery_ms: recovery.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        summary: outcome.summary.clone(),
    };
    let file = VerdictFile {
        report: &report,
        engine: ctx.args.engine.as_str(),
        time_limit_ms: ctx.args.time_limit.as_millis(),
    };
    let json = serde_json::to_string_pretty(&file).expect("a report serializes");
    let path = out.join("verdict.json");
    std::fs::write(&path, json + "\n").map_err(ChaosError::io("writing", &path))?;
    Ok(report)
}

fn write_lines<T: Serialize>(path: &Path, items: &[T]) -> Result<(), ChaosError> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(item).expect("records serialize"));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(ChaosError::io("writing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_op(completed_ms: u64) -> OpRecord {
        let t = completed_ms * 1_000_000;
        OpRecord {
            worker: 0,
            node: 0,
            f: "write",
            invoked_ns: t.saturating_sub(1000),
            completed_ns: t,
            outcome: OpOutcome::Ok,
            value: serde_json::Value::Null,
            error: None,
        }
    }

    fn fault(at_ms: u64, phase: &'static str) -> FaultEvent {
        FaultEvent {
            at_ns: at_ms * 1_000_000,
            phase,
            fault: "kill-leader".into(),
            nodes: vec![0],
            detail: String::new(),
        }
    }

    #[test]
    fn availability_measures_the_gap_across_a_fault() {
        // Writes every 0.1 s, none between 10.0 and 12.3; leader killed at 10.1, restarted at 15.
        let mut ops: Vec<OpRecord> = (0..=100).map(|i| write_op(i * 100)).collect();
        ops.extend((0..30).map(|i| write_op(12_300 + i * 100)));
        let faults = [fault(10_100, "start"), fault(15_000, "end")];
        let gaps = availability(&ops, &faults, 20_000_000_000);
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].longest_ms, 2300, "{gaps:?}");
        // Failed or unknown writes do not count.
        let mut ops2 = ops.clone();
        ops2.push(OpRecord { outcome: OpOutcome::Unknown, ..write_op(11_000) });
        assert_eq!(availability(&ops2, &faults, 20_000_000_000)[0].longest_ms, 2300);
        // No write after the fault: the gap runs to the end of the tail.
        let gaps = availability(&ops[..=100], &faults, 100_000_000_000);
        assert_eq!(gaps[0].longest_ms, 15_000 + 5_000);
    }
}
