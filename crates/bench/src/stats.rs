//! What one run measured: per-client recorders (HDR latency histograms by
//! operation kind, errors by gRPC code), merged into one [`RunStats`].
//!
//! Each client records into its own [`Recorder`] with no sharing on the hot
//! path; the run merges them when the clients finish. Histograms are in
//! nanoseconds with three significant digits (a 0.1 % error at any
//! magnitude) and grow to the largest latency seen, so an idle client
//! costs a few kilobytes.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant decimal digits the latency histograms keep.
const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;

/// Latencies are clamped to this (an hour): beyond it a request is a hang,
/// and the request timeout ends it long before.
const LATENCY_MAX: Duration = Duration::from_secs(3_600);

/// Nanoseconds per microsecond, for reports in microseconds.
const NANOS_PER_MICRO: f64 = 1_000.0;

/// The kinds of operation a workload issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// `KV.Put`.
    Put,
    /// `KV.Range` of one key.
    Get,
    /// `KV.Range` of several keys.
    Range,
    /// `KV.Txn` (compare-and-set).
    Txn,
    /// A watch event: from the put's send to the event's arrival.
    Watch,
}

impl OpKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Range => "range",
            OpKind::Txn => "txn",
            OpKind::Watch => "watch",
        }
    }
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest latency recorded.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Percentiles {
    /// The percentiles of a non-empty histogram of nanoseconds.
    fn of(histogram: &Histogram<u64>) -> Option<Percentiles> {
        if histogram.is_empty() {
            return None;
        }
        #[allow(clippy::cast_precision_loss, reason = "latencies well below 2^53 ns")]
        let us = |nanos: u64| nanos as f64 / NANOS_PER_MICRO;
        Some(Percentiles {
            p50_us: us(histogram.value_at_quantile(0.5)),
            p90_us: us(histogram.value_at_quantile(0.9)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
            mean_us: histogram.mean() / NANOS_PER_MICRO,
        })
    }
}

/// One client's measurements.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    latencies: BTreeMap<OpKind, Histogram<u64>>,
    errors_by_code: BTreeMap<String, u64>,
    /// The first error seen, as `code: message`, for error reports.
    first_error: Option<String>,
    txn_succeeded: u64,
    txn_failed: u64,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Records one successful operation of `kind` that took `latency`.
    pub fn record(&mut self, kind: OpKind, latency: Duration) {
        let histogram = self.latencies.entry(kind).or_insert_with(new_histogram);
        let nanos = u64::try_from(latency.min(LATENCY_MAX).as_nanos()).unwrap_or(u64::MAX);
        if histogram.record(nanos).is_err() {
            // Only a resize past `usize` fails, which LATENCY_MAX rules out;
            // clamping keeps the count right regardless.
            histogram.saturating_record(nanos);
        }
    }

    /// Records a failed request, by its gRPC code.
    pub fn record_error(&mut self, status: &tonic::Status) {
        let code = ringkv_api::grpc_code_name(status.code());
        *self.errors_by_code.entry(code.to_owned()).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{code}: {}", status.message()));
        }
    }

    /// Records the outcome of a compare-and-set transaction (both are
    /// successful requests; a failed compare is the store's answer).
    pub fn record_txn_outcome(&mut self, succeeded: bool) {
        if succeeded {
            self.txn_succeeded += 1;
        } else {
            self.txn_failed += 1;
        }
    }

    /// Adds `other`'s measurements to these.
    pub fn merge(&mut self, other: Recorder) {
        for (kind, histogram) in other.latencies {
            match self.latencies.get_mut(&kind) {
                Some(mine) => {
                    mine.add(&histogram).expect("auto-resizing histograms take any other");
                }
                None => {
                    self.latencies.insert(kind, histogram);
                }
            }
        }
        for (code, count) in other.errors_by_code {
            *self.errors_by_code.entry(code).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.txn_succeeded += other.txn_succeeded;
        self.txn_failed += other.txn_failed;
    }

    /// Successful operations of `kind`.
    pub fn count(&self, kind: OpKind) -> u64 {
        self.latencies.get(&kind).map_or(0, Histogram::len)
    }

    /// Failed requests.
    pub fn errors(&self) -> u64 {
        self.errors_by_code.values().sum()
    }

    /// The first error recorded, as `code: message`.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// The latency percentiles of `kinds` together.
    pub fn percentiles(&self, kinds: &[OpKind]) -> Option<Percentiles> {
        let mut all = new_histogram();
        for kind in kinds {
            if let Some(histogram) = self.latencies.get(kind) {
                all.add(histogram).expect("auto-resizing histograms take any other");
            }
        }
        Percentiles::of(&all)
    }

    /// Turns these measurements into a run's figures.
    ///
    /// `primary` is what the run's latency means: for most workloads every
    /// kind of request it made; for the watch workload the event delivery
    /// only (its puts are the load, reported by kind). `ops` counts the
    /// successful requests of the `load` kinds.
    pub fn into_stats(self, run: RunFacts) -> RunStats {
        let ops: u64 = run.load.iter().map(|&kind| self.count(kind)).sum();
        let latency = self.percentiles(run.primary);
        let elapsed_s = run.elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "op counts well below 2^53")]
        let throughput_ops_s = if elapsed_s > 0.0 { ops as f64 / elapsed_s } else { 0.0 };
        let by_kind = self
            .latencies
            .iter()
            .filter_map(|(&kind, histogram)| {
                Percentiles::of(histogram)
                    .map(|latency| (kind, KindStats { ops: histogram.len(), latency }))
            })
            .collect();
        #[allow(clippy::cast_precision_loss, reason = "op counts well below 2^53")]
        let per_op = |cpu: Option<Duration>| {
            cpu.filter(|_| ops > 0).map(|cpu| cpu.as_secs_f64() * 1e6 / ops as f64)
        };
        let txn = (self.txn_succeeded + self.txn_failed > 0)
            .then_some(TxnStats { succeeded: self.txn_succeeded, failed: self.txn_failed });
        RunStats {
            ops,
            errors: self.errors(),
            errors_by_code: self.errors_by_code,
            first_error: self.first_error,
            elapsed_s,
            throughput_ops_s,
            latency,
            by_kind,
            server_cpu_us_per_op: per_op(run.server_cpu),
            client_cpu_us_per_op: per_op(run.client_cpu),
            txn,
            watch: run.watch,
        }
    }
}

/// What a run knows besides its recorders.
#[derive(Clone, Debug)]
pub struct RunFacts {
    /// The kinds the run's operation count and throughput count.
    pub load: &'static [OpKind],
    /// The kinds the run's latency figures cover.
    pub primary: &'static [OpKind],
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// CPU the servers spent during the run, when their processes are known.
    pub server_cpu: Option<Duration>,
    /// CPU this process spent during the run.
    pub client_cpu: Option<Duration>,
    /// The watch workload's delivery counts.
    pub watch: Option<WatchStats>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new(HISTOGRAM_SIGNIFICANT_DIGITS).expect("3 significant digits are valid")
}

/// Count and latency of one kind of operation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KindStats {
    /// Successful operations.
    pub ops: u64,
    /// Their latency.
    pub latency: Percentiles,
}

/// Outcomes of compare-and-set transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnStats {
    /// Transactions whose compare held (the put was done).
    pub succeeded: u64,
    /// Transactions whose compare failed (another client wrote first).
    pub failed: u64,
}

/// Watch delivery counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStats {
    /// Watch streams.
    pub watchers: u64,
    /// Acknowledged puts times watchers: the events that must arrive.
    pub events_expected: u64,
    /// Put events that arrived.
    pub events_received: u64,
    /// Events of acknowledged puts some watcher never saw (summed over
    /// watchers). Must be 0.
    pub events_missing: u64,
}

/// The figures of one run against one endpoint set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Successful operations (for the watch workload: acknowledged puts).
    pub ops: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by gRPC code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// The first error, as `code: message`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_error: Option<String>,
    /// Seconds from the first send to the last answer.
    pub elapsed_s: f64,
    /// `ops / elapsed_s`.
    pub throughput_ops_s: f64,
    /// Latency of the workload's operations (for the watch workload: of
    /// event delivery). `None` when nothing succeeded.
    pub latency: Option<Percentiles>,
    /// Count and latency by kind of operation.
    pub by_kind: BTreeMap<OpKind, KindStats>,
    /// Server CPU (user + system) per operation, in microseconds, summed
    /// over the server processes; `None` when they are not known.
    pub server_cpu_us_per_op: Option<f64>,
    /// This benchmark's own CPU per operation, in microseconds.
    pub client_cpu_us_per_op: Option<f64>,
    /// Compare-and-set outcomes (txn workload).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub txn: Option<TxnStats>,
    /// Delivery counts (watch workload).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub watch: Option<WatchStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[OpKind] = &[OpKind::Put, OpKind::Get];

    fn facts(elapsed: Duration) -> RunFacts {
        RunFacts {
            load: ALL,
            primary: ALL,
            elapsed,
            server_cpu: Some(Duration::from_millis(30)),
            client_cpu: None,
            watch: None,
        }
    }

    #[test]
    fn merged_recorders_count_and_rank_every_sample() {
        // Two clients: one saw 1..=100 µs, the other 101..=1000 µs.
        let mut a = Recorder::new();
        for us in 1..=100 {
            a.record(OpKind::Put, Duration::from_micros(us));
        }
        let mut b = Recorder::new();
        for us in 101..=1_000 {
            b.record(OpKind::Put, Duration::from_micros(us));
        }
        b.record_error(&tonic::Status::unavailable("leader lost"));
        b.record_error(&tonic::Status::unavailable("again"));
        b.record_error(&tonic::Status::deadline_exceeded("slow"));
        a.merge(b);
        assert_eq!(a.count(OpKind::Put), 1_000);
        assert_eq!(a.errors(), 3);
        assert_eq!(a.first_error(), Some("Unavailable: leader lost"));
        let p = a.percentiles(&[OpKind::Put]).unwrap();
        // Within the histogram's 0.1 % of the exact ranks of 1..=1000 µs.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(p.p50_us, 500.0), "{p:?}");
        assert!(close(p.p90_us, 900.0), "{p:?}");
        assert!(close(p.p99_us, 990.0), "{p:?}");
        assert!(close(p.p999_us, 999.0), "{p:?}");
        assert!(close(p.max_us, 1_000.0), "{p:?}");
        assert!(close(p.mean_us, 500.5), "{p:?}");
    }

    #[test]
    fn stats_split_by_kind_and_count_the_load() {
        let mut r = Recorder::new();
        for _ in 0..30 {
            r.record(OpKind::Put, Duration::from_micros(900));
        }
        for _ in 0..70 {
            r.record(OpKind::Get, Duration::from_micros(100));
        }
        r.record_error(&tonic::Status::unavailable("x"));
        let stats = r.into_stats(facts(Duration::from_secs(2)));
        assert_eq!(stats.ops, 100);
        assert_eq!(stats.errors, 1);
        assert_eq!(stats.errors_by_code["Unavailable"], 1);
        assert!((stats.throughput_ops_s - 50.0).abs() < 1e-9);
        assert_eq!(stats.by_kind[&OpKind::Put].ops, 30);
        assert_eq!(stats.by_kind[&OpKind::Get].ops, 70);
        // 70 % of samples are gets: the median is a get's latency, p90 a put's.
        let latency = stats.latency.unwrap();
        assert!((latency.p50_us - 100.0).abs() < 0.1, "{latency:?}");
        assert!((latency.p90_us - 900.0).abs() < 1.0, "{latency:?}");
        // 30 ms of server CPU over 100 operations.
        assert!((stats.server_cpu_us_per_op.unwrap() - 300.0).abs() < 1e-9);
        assert_eq!(stats.client_cpu_us_per_op, None);
    }

    #[test]
    fn the_primary_latency_can_exclude_the_load() {
        // The watch workload: puts are the load, events the latency.
        let mut r = Recorder::new();
        r.record(OpKind::Put, Duration::from_micros(500));
        r.record(OpKind::Watch, Duration::from_micros(800));
        r.record(OpKind::Watch, Duration::from_micros(800));
        let stats = r.into_stats(RunFacts {
            load: &[OpKind::Put],
            primary: &[OpKind::Watch],
            ..facts(Duration::from_secs(1))
        });
        assert_eq!(stats.ops, 1);
        assert!((stats.latency.unwrap().max_us - 800.0).abs() < 1.0);
    }

    #[test]
    fn nothing_succeeded_means_no_latency_and_no_cpu_per_op() {
        let mut r = Recorder::new();
        r.record_error(&tonic::Status::unimplemented("no watch"));
        let stats = r.into_stats(facts(Duration::from_secs(1)));
        assert_eq!((stats.ops, stats.errors), (0, 1));
        assert_eq!(stats.latency, None);
        assert_eq!(stats.server_cpu_us_per_op, None);
        assert_eq!(stats.throughput_ops_s, 0.0);
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut r = Recorder::new();
        r.record(OpKind::Get, Duration::from_secs(10 * 3_600));
        assert_eq!(r.count(OpKind::Get), 1);
        let p = r.percentiles(&[OpKind::Get]).unwrap();
        assert!(p.max_us <= LATENCY_MAX.as_secs_f64() * 1e6 * 1.001);
    }
}
