//! The server's Prometheus metrics (`GET /metrics` on the client port).
//!
//! Each server owns its own recorder rather than installing a process-wide
//! one, so that several servers in one process (tests, `ringkv
//! playground`) never mix their numbers. Handles are registered once and
//! updated from the node thread (shard gauges, every
//! [`crate::runtime::STATUS_REFRESH_INTERVAL`]), from the disk (fsync
//! latency) and from the services (proposals).
//!
//! | metric | kind | what |
//! | --- | --- | --- |
//! | `ringkv_shard_is_leader{shard}` | gauge | 1 if this node leads the shard |
//! | `ringkv_shard_has_leader{shard}` | gauge | 1 if the shard has a known leader |
//! | `ringkv_shard_term{shard}` | gauge | the shard's consensus term |
//! | `ringkv_shard_commit_index{shard}` | gauge | highest index known committed |
//! | `ringkv_shard_applied_index{shard}` | gauge | highest index applied to the store |
//! | `ringkv_shard_revision{shard}` | gauge | the shard's MVCC revision |
//! | `ringkv_proposals_submitted_total` | counter | writes handed to the node |
//! | `ringkv_proposals_failed_total` | counter | writes that failed |
//! | `ringkv_requests_pending` | gauge | requests waiting for the node |
//! | `ringkv_disk_fsync_duration_seconds` | histogram | each fdatasync of the WAL or store |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use ringkv_consensus::ShardId;
use ringkv_node::ShardStatus;

/// Name of the fsync latency histogram.
pub const FSYNC_HISTOGRAM: &str = "ringkv_disk_fsync_duration_seconds";

/// Bucket bounds of [`FSYNC_HISTOGRAM`], in seconds: etcd's
/// `wal_fsync_duration_seconds` buckets (1 ms doubling to about 8 s).
pub const FSYNC_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

const METADATA: Metadata<'static> = Metadata::new("ringkv", Level::INFO, Some(module_path!()));

/// One shard's gauges.
#[derive(Clone)]
struct ShardGauges {
    is_leader: Gauge,
    has_leader: Gauge,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    revision: Gauge,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    fsync: Histogram,
    proposals_submitted: Counter,
    proposals_failed: Counter,
    requests_pending: Gauge,
    shards: Mutex<BTreeMap<ShardId, ShardGauges>>,
}

/// The server's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own recorder.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(FSYNC_HISTOGRAM.to_owned()),
                &FSYNC_BUCKETS_SECONDS,
            )
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let describe =
            |name: &'static str, unit: Option<Unit>, help: &'static str| (name, unit, help);
        let descriptions = [
            describe("ringkv_shard_is_leader", None, "1 if this node leads the shard"),
            describe("ringkv_shard_has_leader", None, "1 if the shard has a known leader"),
            describe("ringkv_shard_term", None, "The shard's consensus term"),
            describe("ringkv_shard_commit_index", None, "Highest log index known committed"),
            describe("ringkv_shard_applied_index", None, "Highest log index applied to the store"),
            describe("ringkv_shard_revision", None, "The shard's MVCC revision"),
            describe("ringkv_proposals_submitted_total", None, "Writes handed to the node"),
            describe("ringkv_proposals_failed_total", None, "Writes that failed"),
            describe("ringkv_requests_pending", None, "Requests waiting for the node"),
            describe(
                FSYNC_HISTOGRAM,
                Some(Unit::Seconds),
                "Duration of each fdatasync of the WAL or the store",
            ),
        ];
        for (name, unit, help) in descriptions {
            if name == FSYNC_HISTOGRAM {
                recorder.describe_histogram(name.into(), unit, help.into());
            } else if name.ends_with("_total") {
                recorder.describe_counter(name.into(), unit, help.into());
            } else {
                recorder.describe_gauge(name.into(), unit, help.into());
            }
        }
        let plain = |name: &'static str| Key::from_static_name(name);
        let fsync = recorder.register_histogram(&plain(FSYNC_HISTOGRAM), &METADATA);
        let proposals_submitted =
            recorder.register_counter(&plain("ringkv_proposals_submitted_total"), &METADATA);
        let proposals_failed =
            recorder.register_counter(&plain("ringkv_proposals_failed_total"), &METADATA);
        let requests_pending =
            recorder.register_gauge(&plain("ringkv_requests_pending"), &METADATA);
        Metrics {
            inner: Arc::new(Inner {
                recorder,
                handle,
                fsync,
                proposals_submitted,
                proposals_failed,
                requests_pending,
                shards: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Records one fdatasync.
    pub fn record_fsync(&self, took: Duration) {
        self.inner.fsync.record(took.as_secs_f64());
    }

    /// Counts a write handed to the node.
    pub fn proposal_submitted(&self) {
        self.inner.proposals_submitted.increment(1);
    }

    /// Counts a write that failed.
    pub fn proposal_failed(&self) {
        self.inner.proposals_failed.increment(1);
    }

    /// Sets the number of requests waiting for the node.
    pub fn set_requests_pending(&self, pending: usize) {
        self.inner.requests_pending.set(pending as f64);
    }

    /// Updates every shard's gauges.
    pub fn set_shards(&self, shards: &[ShardStatus]) {
        let mut gauges = self.inner.shards.lock().unwrap_or_else(PoisonError::into_inner);
        for s in shards {
            let g = gauges.entry(s.shard).or_insert_with(|| self.shard_gauges(s.shard));
            g.is_leader.set(f64::from(u8::from(s.is_leader)));
            g.has_leader.set(f64::from(u8::from(s.leader.is_some())));
            g.term.set(s.term as f64);
            g.commit_index.set(s.commit_index.0 as f64);
            g.applied_index.set(s.applied_index.0 as f64);
            g.revision.set(s.revision.0 as f64);
        }
    }

    fn shard_gauges(&self, shard: ShardId) -> ShardGauges {
        let gauge = |name: &'static str| {
            let key = Key::from_parts(name, vec![Label::new("shard", shard.0.to_string())]);
            self.inner.recorder.register_gauge(&key, &METADATA)
        };
        ShardGauges {
            is_leader: gauge("ringkv_shard_is_leader"),
            has_leader: gauge("ringkv_shard_has_leader"),
            term: gauge("ringkv_shard_term"),
            commit_index: gauge("ringkv_shard_commit_index"),
            applied_index: gauge("ringkv_shard_applied_index"),
            revision: gauge("ringkv_shard_revision"),
        }
    }

    /// Drains histogram samples into their buckets; call now and then so
    /// that samples do not pile up between scrapes.
    pub fn upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }
}
