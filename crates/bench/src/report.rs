//! The benchmark's result: per endpoint set, every repetition's figures and
//! their medians; with a comparison, the ratios B/A of the medians. Printed
//! as a text table or serialized as JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::args::{Consistency, Workload};
use crate::keys::Distribution;
use crate::stats::{OpKind, Percentiles, RunStats};

/// What was run, as the report states it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadConfig {
    /// The workload.
    pub workload: Workload,
    /// Read consistency (workloads that read).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub consistency: Option<Consistency>,
    /// Concurrent clients (for the watch workload: putters).
    pub clients: u64,
    /// gRPC connections per endpoint set; clients share them round-robin.
    pub conns: u64,
    /// Watch streams (watch workload).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub watchers: Option<u64>,
    /// Bytes per key.
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Distinct keys.
    pub key_space: u64,
    /// How keys are picked.
    pub distribution: Distribution,
    /// Zipf's exponent (zipfian distribution).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub zipf_exponent: Option<f64>,
    /// Keys per range (range workload).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub range_keys: Option<u64>,
    /// Fraction of reads (mixed workload).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub read_ratio: Option<f64>,
    /// Target rate in operations per second; `None` for a closed loop.
    pub rate_ops_s: Option<f64>,
    /// Operations per repetition, when bounded by count.
    pub total: Option<u64>,
    /// Seconds per repetition, when bounded by time.
    pub duration_s: Option<f64>,
    /// Seconds of unmeasured load before each repetition.
    pub warmup_s: f64,
    /// Whether the key space was written before the first repetition.
    pub preload: bool,
    /// Repetitions per endpoint set.
    pub repeat: u32,
    /// Seed of the key choices (the same for every endpoint set).
    pub seed: u64,
}

/// The whole result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// What was run.
    pub config: WorkloadConfig,
    /// One per endpoint set: A, then B with a comparison.
    pub targets: Vec<TargetReport>,
    /// B/A of the medians, with a comparison.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ratios: Option<Ratios>,
}

/// The result for one endpoint set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    /// Its name in the report (`--label`, `--compare-label`).
    pub label: String,
    /// Its endpoints.
    pub endpoints: Vec<String>,
    /// Server processes whose CPU was measured (empty: not measured).
    pub server_pids: Vec<u32>,
    /// Medians over the repetitions.
    pub median: Summary,
    /// Each repetition, in the order run.
    pub repetitions: Vec<RunStats>,
}

/// Medians over repetitions (counts are totals).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Repetitions summarized.
    pub repetitions: usize,
    /// Successful operations, all repetitions together.
    pub ops: u64,
    /// Failed requests, all repetitions together.
    pub errors: u64,
    /// Failed requests by gRPC code, all repetitions together.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Median throughput, operations per second.
    pub throughput_ops_s: f64,
    /// Each percentile's median.
    pub latency: Option<Percentiles>,
    /// Each kind's percentiles' medians.
    pub by_kind: BTreeMap<OpKind, Percentiles>,
    /// Median server CPU per operation, µs.
    pub server_cpu_us_per_op: Option<f64>,
    /// Median client CPU per operation, µs.
    pub client_cpu_us_per_op: Option<f64>,
    /// Median share of compare-and-sets that succeeded, percent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub txn_succeeded_pct: Option<f64>,
    /// Watch events missing, all repetitions together.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub watch_events_missing: Option<u64>,
}

impl Summary {
    /// The medians of `runs` (at least one).
    pub fn of(runs: &[RunStats]) -> Summary {
        assert!(!runs.is_empty(), "every endpoint set runs at least once");
        let mut errors_by_code = BTreeMap::new();
        for run in runs {
            for (code, count) in &run.errors_by_code {
                *errors_by_code.entry(code.clone()).or_default() += count;
            }
        }
        let latencies: Vec<Percentiles> = runs.iter().filter_map(|r| r.latency).collect();
        let mut kinds: BTreeMap<OpKind, Vec<Percentiles>> = BTreeMap::new();
        for run in runs {
            for (kind, stats) in &run.by_kind {
                kinds.entry(*kind).or_default().push(stats.latency);
            }
        }
        #[allow(clippy::cast_precision_loss, reason = "op counts well below 2^53")]
        let txn_pct = |run: &RunStats| {
            run.txn
                .filter(|t| t.succeeded + t.failed > 0)
                .map(|t| 100.0 * t.succeeded as f64 / (t.succeeded + t.failed) as f64)
        };
        let watch = runs.iter().filter_map(|r| r.watch).map(|w| w.events_missing);
        Summary {
            repetitions: runs.len(),
            ops: runs.iter().map(|r| r.ops).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            errors_by_code,
            throughput_ops_s: median(runs.iter().map(|r| r.throughput_ops_s)).unwrap_or(0.0),
            latency: median_percentiles(&latencies),
            by_kind: kinds
                .into_iter()
                .filter_map(|(kind, ps)| median_percentiles(&ps).map(|p| (kind, p)))
                .collect(),
            server_cpu_us_per_op: median(runs.iter().filter_map(|r| r.server_cpu_us_per_op)),
            client_cpu_us_per_op: median(runs.iter().filter_map(|r| r.client_cpu_us_per_op)),
            txn_succeeded_pct: median(runs.iter().filter_map(txn_pct)),
            watch_events_missing: runs.iter().any(|r| r.watch.is_some()).then(|| watch.sum()),
        }
    }
}

/// The median of some figures (the mean of the middle two for an even
/// count); `None` for none.
pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// Each percentile's median, taken separately.
fn median_percentiles(all: &[Percentiles]) -> Option<Percentiles> {
    let m = |f: fn(&Percentiles) -> f64| median(all.iter().map(f));
    Some(Percentiles {
        p50_us: m(|p| p.p50_us)?,
        p90_us: m(|p| p.p90_us)?,
        p99_us: m(|p| p.p99_us)?,
        p999_us: m(|p| p.p999_us)?,
        max_us: m(|p| p.max_us)?,
        mean_us: m(|p| p.mean_us)?,
    })
}

/// B/A of the medians: above 1 means B has more of it (for throughput,
/// B is faster; for latency and CPU, B is slower).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    /// Throughput B/A.
    pub throughput: Option<f64>,
    /// p50 latency B/A.
    pub p50: Option<f64>,
    /// p90 latency B/A.
    pub p90: Option<f64>,
    /// p99 latency B/A.
    pub p99: Option<f64>,
    /// p99.9 latency B/A.
    pub p999: Option<f64>,
    /// Maximum latency B/A.
    pub max: Option<f64>,
    /// Server CPU per operation B/A.
    pub server_cpu_per_op: Option<f64>,
    /// Client CPU per operation B/A.
    pub client_cpu_per_op: Option<f64>,
}

impl Ratios {
    /// B/A of each figure both have (and A's is not zero).
    pub fn of(a: &Summary, b: &Summary) -> Ratios {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if a > 0.0 => Some(b / a),
            _ => None,
        };
        let lat = |f: fn(&Percentiles) -> f64| {
            ratio(a.latency.as_ref().map(f), b.latency.as_ref().map(f))
        };
        Ratios {
            throughput: ratio(Some(a.throughput_ops_s), Some(b.throughput_ops_s)),
            p50: lat(|p| p.p50_us),
            p90: lat(|p| p.p90_us),
            p99: lat(|p| p.p99_us),
            p999: lat(|p| p.p999_us),
            max: lat(|p| p.max_us),
            server_cpu_per_op: ratio(a.server_cpu_us_per_op, b.server_cpu_us_per_op),
            client_cpu_per_op: ratio(a.client_cpu_us_per_op, b.client_cpu_us_per_op),
        }
    }
}

impl Report {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report is plain data")
    }

    /// Lines of the table: a label and one cell per target, plus the ratio.
    fn rows(&self) -> Vec<(String, Vec<String>, Option<String>)> {
        let ratios = self.ratios.as_ref();
        let mut rows = Vec::new();
        let cells = |f: &dyn Fn(&Summary) -> String| -> Vec<String> {
            self.targets.iter().map(|t| f(&t.median)).collect()
        };
        let ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}"));
        rows.push((
            "throughput (ops/s)".to_owned(),
            cells(&|s| format!("{:.0}", s.throughput_ops_s)),
            ratios.and_then(|r| ratio(r.throughput)).or_else(|| self.ratio_placeholder()),
        ));
        let what = if self.config.workload == Workload::Watch { "event " } else { "" };
        type Pick = fn(&Percentiles) -> f64;
        let latency_rows: [(&str, Pick, Option<f64>); 5] = [
            ("p50", |p| p.p50_us, ratios.and_then(|r| r.p50)),
            ("p90", |p| p.p90_us, ratios.and_then(|r| r.p90)),
            ("p99", |p| p.p99_us, ratios.and_then(|r| r.p99)),
            ("p99.9", |p| p.p999_us, ratios.and_then(|r| r.p999)),
            ("max", |p| p.max_us, ratios.and_then(|r| r.max)),
        ];
        for (name, pick, r) in latency_rows {
            rows.push((
                format!("{what}{name} (ms)"),
                cells(&|s| s.latency.as_ref().map_or("-".to_owned(), |p| ms(pick(p)))),
                ratio(r).or_else(|| self.ratio_placeholder()),
            ));
        }
        // Per kind, when the latency above mixes or excludes some.
        let kinds: Vec<OpKind> = self
            .targets
            .iter()
            .flat_map(|t| t.median.by_kind.keys().copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if kinds.len() > 1 {
            for kind in kinds {
                for (name, pick) in [("p50", (|p| p.p50_us) as Pick), ("p99", |p| p.p99_us)] {
                    let values: Vec<Option<f64>> = self
                        .targets
                        .iter()
                        .map(|t| t.median.by_kind.get(&kind).map(pick))
                        .collect();
                    let r = match values.as_slice() {
                        [Some(a), Some(b)] if *a > 0.0 => Some(format!("{:.2}", b / a)),
                        _ => self.ratio_placeholder(),
                    };
                    let cells = values.iter().map(|v| v.map_or("-".to_owned(), ms)).collect();
                    rows.push((format!("{} {name} (ms)", kind.name()), cells, r));
                }
            }
        }
        let optional = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        rows.push((
            "server CPU (µs/op)".to_owned(),
            cells(&|s| optional(s.server_cpu_us_per_op)),
            ratios.and_then(|r| ratio(r.server_cpu_per_op)).or_else(|| self.ratio_placeholder()),
        ));
        rows.push((
            "client CPU (µs/op)".to_owned(),
            cells(&|s| optional(s.client_cpu_us_per_op)),
            ratios.and_then(|r| ratio(r.client_cpu_per_op)).or_else(|| self.ratio_placeholder()),
        ));
        if self.config.workload == Workload::Txn {
            rows.push((
                "CAS succeeded (%)".to_owned(),
                cells(&|s| optional(s.txn_succeeded_pct)),
                self.ratio_placeholder(),
            ));
        }
        if self.config.workload == Workload::Watch {
            rows.push((
                "events missing".to_owned(),
                cells(&|s| s.watch_events_missing.unwrap_or(0).to_string()),
                self.ratio_placeholder(),
            ));
        }
        rows.push((
            "operations".to_owned(),
            cells(&|s| s.ops.to_string()),
            self.ratio_placeholder(),
        ));
        rows.push((
            "errors".to_owned(),
            cells(&|s| s.errors.to_string()),
            self.ratio_placeholder(),
        ));
        rows
    }

    /// An empty ratio cell in a comparison, none otherwise.
    fn ratio_placeholder(&self) -> Option<String> {
        self.ratios.is_some().then(String::new)
    }

    fn describe(&self) -> String {
        let c = &self.config;
        let plural = |n: u64, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let mut what = c.workload.name().to_owned();
        if let Some(consistency) = c.consistency {
            what += &format!(" ({})", consistency.name());
        }
        if let Some(keys) = c.range_keys {
            what += &format!(" of {keys} keys");
        }
        if let Some(ratio) = c.read_ratio {
            what += &format!(" ({:.0} % reads)", ratio * 100.0);
        }
        let clients = if c.workload == Workload::Watch {
            format!(
                "{} and {}",
                plural(c.clients, "putter"),
                plural(c.watchers.unwrap_or(0), "watcher")
            )
        } else {
            plural(c.clients, "client")
        };
        let distribution = match (c.distribution, c.zipf_exponent) {
            (Distribution::Zipfian, Some(s)) => format!("zipfian s={s}"),
            (d, _) => format!("{d:?}").to_lowercase(),
        };
        let rate = c.rate_ops_s.map_or("closed loop".to_owned(), |r| format!("{r} ops/s"));
        let bound = match (c.total, c.duration_s) {
            (Some(n), _) => plural(n, "op"),
            (None, Some(d)) => format!("{d} s"),
            (None, None) => String::new(),
        };
        format!(
            "{what}: {clients} over {}, keys {} B ({} keys, {distribution}), values {} B, {rate}, \
             {bound} per repetition after {} s of warmup{}; medians of {}",
            plural(c.conns, "connection"),
            c.key_size,
            c.key_space,
            c.value_size,
            c.warmup_s,
            if c.preload { ", key space preloaded" } else { "" },
            plural(u64::from(c.repeat), "repetition"),
        )
    }
}

/// Microseconds as milliseconds with three decimals.
fn ms(us: f64) -> String {
    format!("{:.3}", us / 1_000.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.describe())?;
        for t in &self.targets {
            let pids = if t.server_pids.is_empty() {
                "server CPU not measured".to_owned()
            } else {
                let pids: Vec<String> = t.server_pids.iter().map(u32::to_string).collect();
                format!("server pids {}", pids.join(","))
            };
            writeln!(f, "  {}: {} ({pids})", t.label, t.endpoints.join(","))?;
        }
        writeln!(f)?;
        let rows = self.rows();
        let label_width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let cell_width = rows
            .iter()
            .flat_map(|r| r.1.iter().map(|c| c.chars().count()))
            .chain(self.targets.iter().map(|t| t.label.chars().count()))
            .max()
            .unwrap_or(0)
            .max(8);
        write!(f, "{:label_width$}", "")?;
        for t in &self.targets {
            write!(f, "  {:>cell_width$}", t.label)?;
        }
        if self.ratios.is_some() {
            let (a, b) = (&self.targets[0].label, &self.targets[1].label);
            write!(f, "  {:>8}", format!("{b}/{a}"))?;
        }
        writeln!(f)?;
        for (label, cells, ratio) in rows {
            write!(f, "{label:label_width$}")?;
            for cell in cells {
                write!(f, "  {cell:>cell_width$}")?;
            }
            if let Some(ratio) = ratio {
                write!(f, "  {ratio:>8}")?;
            }
            writeln!(f)?;
        }
        for t in &self.targets {
            if t.median.errors > 0 {
                let codes: Vec<String> =
                    t.median.errors_by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
                write!(f, "\n{} errors by code: {}", t.label, codes.join(", "))?;
                if let Some(first) = t.repetitions.iter().find_map(|r| r.first_error.as_ref()) {
                    write!(f, "; first: {first}")?;
                }
                writeln!(f)?;
            }
            if let Some(rate) = self.config.rate_ops_s
                && t.median.throughput_ops_s < rate * RATE_SHORTFALL_WARNING
            {
                writeln!(
                    f,
                    "\n{}: {:.0} ops/s is short of the {rate} ops/s asked: the clients were \
                     busy, so latencies include queueing behind the schedule; add --clients",
                    t.label, t.median.throughput_ops_s
                )?;
            }
        }
        Ok(())
    }
}

/// An open-loop run whose throughput falls below this share of the rate
/// asked gets a warning: its clients could not keep to the schedule.
const RATE_SHORTFALL_WARNING: f64 = 0.95;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::{Recorder, RunFacts, WatchStats};

    fn run(latencies_us: &[u64], elapsed_s: u64, cpu_ms: u64) -> RunStats {
        let mut r = Recorder::new();
        for &us in latencies_us {
            r.record(OpKind::Put, Duration::from_micros(us));
        }
        r.into_stats(RunFacts {
            load: &[OpKind::Put],
            primary: &[OpKind::Put],
            elapsed: Duration::from_secs(elapsed_s),
            server_cpu: Some(Duration::from_millis(cpu_ms)),
            client_cpu: None,
            watch: None,
        })
    }

    fn config() -> WorkloadConfig {
        WorkloadConfig {
            workload: Workload::Put,
            consistency: None,
            clients: 256,
            conns: 16,
            watchers: None,
            key_size: 8,
            value_size: 256,
            key_space: 10_000,
            distribution: Distribution::Uniform,
            zipf_exponent: None,
            range_keys: None,
            read_ratio: None,
            rate_ops_s: None,
            total: Some(4),
            duration_s: None,
            warmup_s: 0.0,
            preload: false,
            repeat: 3,
            seed: 1,
        }
    }

    #[test]
    fn medians_take_each_figure_separately() {
        // Throughputs 4, 2 and 1 ops/s; p50s 100, 300 and 200 µs.
        let runs = [
            run(&[100, 100, 100, 100], 1, 4),
            run(&[300, 300, 300, 300], 2, 2),
            run(&[200, 200, 200, 200], 4, 8),
        ];
        let s = Summary::of(&runs);
        assert_eq!(s.repetitions, 3);
        assert_eq!(s.ops, 12);
        assert!((s.throughput_ops_s - 2.0).abs() < 1e-9);
        assert!((s.latency.unwrap().p50_us - 200.0).abs() < 0.5);
        // CPU per op: 1000, 500 and 2000 µs: the median is 1000.
        assert!((s.server_cpu_us_per_op.unwrap() - 1_000.0).abs() < 1e-9);
        assert_eq!(s.client_cpu_us_per_op, None);
        assert_eq!(s.watch_events_missing, None);
    }

    #[test]
    fn median_of_an_even_count_is_the_middle_mean() {
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), Some(2.5));
        assert_eq!(median([7.0].into_iter()), Some(7.0));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn ratios_are_b_over_a() {
        let a = Summary::of(&[run(&[100; 10], 1, 10)]);
        let b = Summary::of(&[run(&[50; 20], 1, 5)]);
        let r = Ratios::of(&a, &b);
        assert!((r.throughput.unwrap() - 2.0).abs() < 1e-9);
        assert!((r.p50.unwrap() - 0.5).abs() < 0.01);
        // A: 1000 µs/op, B: 250 µs/op.
        assert!((r.server_cpu_per_op.unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(r.client_cpu_per_op, None);
    }

    #[test]
    fn json_report_carries_config_medians_repetitions_and_ratios() {
        let a_runs = vec![run(&[100; 4], 1, 4), run(&[120; 4], 1, 4)];
        let mut b_run = run(&[50; 8], 1, 2);
        b_run.errors = 2;
        b_run.errors_by_code.insert("Unavailable".to_owned(), 2);
        b_run.watch = Some(WatchStats {
            watchers: 1,
            events_expected: 8,
            events_received: 8,
            events_missing: 0,
        });
        let a = TargetReport {
            label: "ringkv".to_owned(),
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            server_pids: vec![42],
            median: Summary::of(&a_runs),
            repetitions: a_runs,
        };
        let b = TargetReport {
            label: "etcd".to_owned(),
            endpoints: vec!["http://127.0.0.1:22379".to_owned()],
            server_pids: vec![],
            median: Summary::of(std::slice::from_ref(&b_run)),
            repetitions: vec![b_run],
        };
        let report = Report {
            config: config(),
            ratios: Some(Ratios::of(&a.median, &b.median)),
            targets: vec![a, b],
        };
        let json = report.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["config"]["workload"], "put");
        assert_eq!(value["config"]["distribution"], "uniform");
        assert_eq!(value["config"]["clients"], 256);
        assert_eq!(value["targets"][0]["label"], "ringkv");
        assert_eq!(value["targets"][0]["server_pids"][0], 42);
        assert_eq!(value["targets"][0]["repetitions"].as_array().unwrap().len(), 2);
        assert_eq!(value["targets"][0]["median"]["ops"], 8);
        assert!(
            (value["targets"][0]["median"]["latency"]["p50_us"].as_f64().unwrap() - 110.0).abs()
                < 0.5
        );
        assert_eq!(value["targets"][1]["median"]["errors_by_code"]["Unavailable"], 2);
        assert_eq!(value["targets"][1]["median"]["watch_events_missing"], 0);
        assert_eq!(value["targets"][1]["repetitions"][0]["by_kind"]["put"]["ops"], 8);
        assert!((value["ratios"]["throughput"].as_f64().unwrap() - 2.0).abs() < 1e-9);
        // The JSON reads back into a report (floats within parsing error).
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.config, report.config);
        assert_eq!(back.targets[1].repetitions[0].watch, report.targets[1].repetitions[0].watch);
        assert_eq!(back.targets[1].median.errors_by_code, report.targets[1].median.errors_by_code);
        let p50 = |r: &Report| r.targets[0].median.latency.unwrap().p50_us;
        assert!((p50(&back) - p50(&report)).abs() < 1e-9);
        // And the text names both, with their ratio column.
        let text = report.to_string();
        assert!(text.contains("etcd/ringkv"), "{text}");
        assert!(text.contains("etcd errors by code: Unavailable 2"), "{text}");
        let throughput = text.lines().find(|l| l.starts_with("throughput")).unwrap();
        assert!(throughput.ends_with("2.00"), "{text}");
    }
}
