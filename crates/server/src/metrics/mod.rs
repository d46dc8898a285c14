//! The server's Prometheus metrics (`GET /metrics` on the client port) and
//! the numbers the dashboard shows.
//!
//! Each server owns its own recorder rather than installing a process-wide
//! one, so that several servers in one process (tests, `ringkv
//! playground`) never mix their numbers. Values arrive three ways:
//!
//! - pushed as they happen: fsyncs and writes (the disk), proposals (the
//!   node handle), gRPC calls ([`Metrics::instrument_grpc`]), peer batch
//!   writes (the transport's send observer);
//! - published by the node thread every
//!   [`crate::runtime::STATUS_REFRESH_INTERVAL`]: shard gauges, leader
//!   changes and replica changes ([`Metrics::observe_shards`]);
//! - read when scraped, being cheap: transport counters, watch hub counts,
//!   `/proc/self`; or refreshed every [`SLOW_REFRESH_INTERVAL`] by the
//!   server, being too costly per scrape: data directory size, leases.
//!
//! Names follow Prometheus' conventions: base units (`_seconds`,
//! `_bytes`), `_total` on counters, a `shard` label on every per-shard
//! series (one shard today; every shard a node hosts once sharding lands).
//!
//! | metric | kind | what |
//! | --- | --- | --- |
//! | `ringkv_server_info{member_id,name,engine,version}` | gauge | always 1; identifies the member |
//! | `ringkv_shard_is_leader{shard}` | gauge | 1 if this node leads the shard |
//! | `ringkv_shard_has_leader{shard}` | gauge | 1 if the shard has a known leader |
//! | `ringkv_shard_is_learner{shard}` | gauge | 1 if this node is a learner of the shard |
//! | `ringkv_shard_term{shard}` | gauge | the shard's consensus term (Paxos: ballot round) |
//! | `ringkv_shard_commit_index{shard}` | gauge | highest log index known committed |
//! | `ringkv_shard_applied_index{shard}` | gauge | highest log index applied to the store |
//! | `ringkv_shard_apply_lag_entries{shard}` | gauge | committed entries not yet applied here |
//! | `ringkv_shard_revision{shard}` | gauge | the shard's MVCC revision |
//! | `ringkv_shard_voters{shard}` | gauge | voting replicas of the shard |
//! | `ringkv_shard_learners{shard}` | gauge | learners of the shard |
//! | `ringkv_shard_leader_changes_total{shard}` | counter | new leaders this node saw (the first included) |
//! | `ringkv_shard_leases{shard}` | gauge | leases the shard holds |
//! | `ringkv_proposals_submitted_total` | counter | writes handed to the node |
//! | `ringkv_proposals_applied_total` | counter | of those, committed, applied and answered |
//! | `ringkv_proposals_failed_total` | counter | of those, failed (not leader, timeout, refused, …) |
//! | `ringkv_requests_pending` | gauge | requests waiting for the node |
//! | `ringkv_disk_fsync_duration_seconds{file}` | histogram | each fdatasync; `file` is `wal` or `store` |
//! | `ringkv_disk_written_bytes_total{file}` | counter | bytes written, `wal` or `store` |
//! | `ringkv_disk_data_dir_bytes` | gauge | sum of the sizes of the data directory's files |
//! | `ringkv_peer_sent_frames_total` | counter | frames written to peers |
//! | `ringkv_peer_sent_bytes_total` | counter | their payload bytes |
//! | `ringkv_peer_sent_batches_total` | counter | batches (one flush each) |
//! | `ringkv_peer_received_frames_total` | counter | frames received from peers |
//! | `ringkv_peer_received_bytes_total` | counter | their payload bytes |
//! | `ringkv_peer_dropped_frames_total{reason}` | counter | frames not delivered: `queue_full`, `unknown_peer`, `too_large`, `lost_in_flight`, `inbound` (node inbox full) |
//! | `ringkv_peer_connections_total{direction}` | counter | connections established, `outbound` (dials, so reconnects) or `inbound` |
//! | `ringkv_peer_dial_failures_total` | counter | dials that failed before the handshake |
//! | `ringkv_peer_protocol_errors_total` | counter | inbound connections closed for a protocol violation |
//! | `ringkv_peer_connected{peer,lane}` | gauge | 1 while the connection to a peer is up (links dial lazily: 0 to a peer this node has had nothing to send, as a follower to another follower) |
//! | `ringkv_peer_queued_frames{peer,lane}` | gauge | frames waiting to be sent to a peer |
//! | `ringkv_peer_send_duration_seconds{lane}` | histogram | time to write and flush one batch to a peer |
//! | `ringkv_grpc_requests_total{service,method,code}` | counter | finished gRPC calls by final status |
//! | `ringkv_grpc_request_duration_seconds{service,method}` | histogram | unary gRPC calls, request to last byte |
//! | `ringkv_watch_streams` | gauge | open Watch streams |
//! | `ringkv_watchers` | gauge | watchers on them |
//! | `ringkv_watchers_unsynced` | gauge | watchers still catching up from history |
//! | `process_resident_memory_bytes` | gauge | resident memory |
//! | `process_virtual_memory_bytes` | gauge | virtual memory |
//! | `process_cpu_seconds_total` | counter | user and system CPU time |
//! | `process_threads` | gauge | OS threads |
//! | `process_open_fds` | gauge | open file descriptors |
//! | `process_max_fds` | gauge | their limit (absent when unlimited) |
//! | `process_start_time_seconds` | gauge | start time, since the Unix epoch |
//!
//! Proposals carry no `shard` label yet: the node handle learns a
//! request's shard only once the router exists. Leader changes and replica
//! changes are seen at each refresh; a change undone within one refresh
//! interval is not counted.

pub mod events;
pub mod grpc;
pub mod process;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use ringkv_consensus::{NodeId, ShardId};
use ringkv_storage::mvcc::MvccStore;
use serde::{Deserialize, Serialize};

use crate::peer::{Lane, PeerTransport, SendObserver, TransportStats};
use crate::runtime::ShardReport;
use crate::watch::{WatchHubs, WatchStats};
use events::{EventKind, EventLog, hex_id};
use grpc::{GRPC_DURATION_BUCKETS_SECONDS, GRPC_DURATION_HISTOGRAM, GRPC_REQUESTS, GrpcMetrics};

/// Name of the fsync latency histogram.
pub const FSYNC_HISTOGRAM: &str = "ringkv_disk_fsync_duration_seconds";

/// Bucket bounds of [`FSYNC_HISTOGRAM`], in seconds: etcd's
/// `wal_fsync_duration_seconds` buckets (1 ms doubling to about 8 s).
pub const FSYNC_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// Name of the peer batch write histogram.
pub const PEER_SEND_HISTOGRAM: &str = "ringkv_peer_send_duration_seconds";

/// Bucket bounds of [`PEER_SEND_HISTOGRAM`], in seconds: 50 µs (a batch
/// into an idle socket buffer) to 5 s (a peer that has stopped reading).
pub const PEER_SEND_BUCKETS_SECONDS: [f64; 12] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1.0, 2.5, 5.0];

/// How often the server refreshes what is too costly to compute per
/// scrape: the data directory's size (a directory walk) and the lease
/// count (a scan of the lease table).
pub const SLOW_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// How often the server records a [`CounterSample`] for the dashboard's
/// charts.
pub const HISTORY_INTERVAL: Duration = Duration::from_secs(1);

/// Samples kept: two minutes at one a [`HISTORY_INTERVAL`], what the
/// dashboard's charts span.
pub const HISTORY_SAMPLES_MAX: usize = 120;

pub(crate) const METADATA: Metadata<'static> =
    Metadata::new("ringkv", Level::INFO, Some(module_path!()));

/// Which file a disk operation touched.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A WAL segment (or one being prepared).
    Wal,
    /// The state machine's store ([`ringkv_node::STORE_FILE`]).
    Store,
}

impl FileKind {
    /// The kind of the data directory file `name`: everything but the
    /// store is the WAL's.
    pub fn of(name: &str) -> FileKind {
        if name == ringkv_node::STORE_FILE { FileKind::Store } else { FileKind::Wal }
    }

    /// The `file` label.
    pub const fn label(self) -> &'static str {
        match self {
            FileKind::Wal => "wal",
            FileKind::Store => "store",
        }
    }

    const fn index(self) -> usize {
        match self {
            FileKind::Wal => 0,
            FileKind::Store => 1,
        }
    }

    const ALL: [FileKind; 2] = [FileKind::Wal, FileKind::Store];
}

/// One shard's series, and what was last seen of it.
struct ShardTracker {
    is_leader: Gauge,
    has_leader: Gauge,
    is_learner: Gauge,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    apply_lag: Gauge,
    revision: Gauge,
    voters: Gauge,
    learners: Gauge,
    leader_changes: Counter,
    leader_changes_seen: u64,
    /// The leader at the last observation (`None` at first).
    leader: Option<NodeId>,
    /// The last leader known, kept across a spell without one.
    known_leader: Option<NodeId>,
    /// Voters and learners at the last observation.
    replicas: Option<(Vec<NodeId>, Vec<NodeId>)>,
}

/// One peer's gauges.
struct PeerGauges {
    connected: [Gauge; 2],
    queued: [Gauge; 2],
}

/// Counters the transport keeps itself, copied in at each scrape.
struct TransportCounters {
    sent_frames: Counter,
    sent_bytes: Counter,
    sent_batches: Counter,
    received_frames: Counter,
    received_bytes: Counter,
    dropped: [Counter; 5],
    connections_outbound: Counter,
    connections_inbound: Counter,
    dial_failures: Counter,
    protocol_errors: Counter,
}

/// Reasons of `ringkv_peer_dropped_frames_total`, in `dropped` order.
const DROP_REASONS: [&str; 5] =
    ["queue_full", "unknown_peer", "too_large", "lost_in_flight", "inbound"];

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    fsync: [Histogram; 2],
    written: [Counter; 2],
    written_bytes: [AtomicU64; 2],
    proposals: [Counter; 3],
    proposal_counts: [AtomicU64; 3],
    requests_pending: Gauge,
    data_dir_bytes: Gauge,
    data_dir_bytes_value: AtomicU64,
    shards: Mutex<BTreeMap<ShardId, ShardTracker>>,
    leases: Mutex<BTreeMap<ShardId, (Gauge, u64)>>,
    grpc: GrpcMetrics,
    transport: OnceLock<PeerTransport>,
    transport_counters: TransportCounters,
    peers: Mutex<BTreeMap<NodeId, PeerGauges>>,
    peer_send: [Histogram; 2],
    hub: OnceLock<Arc<WatchHubs>>,
    watch: [Gauge; 3],
    events: EventLog,
    engine: OnceLock<&'static str>,
    /// Invariant: at most [`HISTORY_SAMPLES_MAX`], oldest first.
    history: Mutex<VecDeque<CounterSample>>,
}

const SUBMITTED: usize = 0;
const APPLIED: usize = 1;
const FAILED: usize = 2;

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

/// `(name, unit, help)` of every series the recorder renders, for their
/// `# HELP` lines; `process_*` are rendered by hand (see [`process`]).
const DESCRIPTIONS: &[(&str, Option<Unit>, &str)] = &[
    ("ringkv_server_info", None, "Identifies the member; always 1"),
    ("ringkv_shard_is_leader", None, "1 if this node leads the shard"),
    ("ringkv_shard_has_leader", None, "1 if the shard has a known leader"),
    ("ringkv_shard_is_learner", None, "1 if this node is a learner of the shard"),
    ("ringkv_shard_term", None, "The shard's consensus term (Paxos: ballot round)"),
    ("ringkv_shard_commit_index", None, "Highest log index known committed"),
    ("ringkv_shard_applied_index", None, "Highest log index applied to the store"),
    ("ringkv_shard_apply_lag_entries", None, "Committed entries not yet applied on this node"),
    ("ringkv_shard_revision", None, "The shard's MVCC revision"),
    ("ringkv_shard_voters", None, "Voting replicas of the shard"),
    ("ringkv_shard_learners", None, "Learners of the shard"),
    ("ringkv_shard_leader_changes_total", None, "New leaders this node saw, the first included"),
    ("ringkv_shard_leases", None, "Leases the shard holds"),
    ("ringkv_proposals_submitted_total", None, "Writes handed to the node"),
    ("ringkv_proposals_applied_total", None, "Writes committed, applied and answered"),
    ("ringkv_proposals_failed_total", None, "Writes that failed"),
    ("ringkv_requests_pending", None, "Requests waiting for the node"),
    (FSYNC_HISTOGRAM, Some(Unit::Seconds), "Duration of each fdatasync, by file (wal, store)"),
    ("ringkv_disk_written_bytes_total", Some(Unit::Bytes), "Bytes written, by file (wal, store)"),
    ("ringkv_disk_data_dir_bytes", Some(Unit::Bytes), "Sum of the data directory's file sizes"),
    ("ringkv_peer_sent_frames_total", None, "Frames written to peers"),
    ("ringkv_peer_sent_bytes_total", Some(Unit::Bytes), "Payload bytes written to peers"),
    ("ringkv_peer_sent_batches_total", None, "Batches written to peers, one flush each"),
    ("ringkv_peer_received_frames_total", None, "Frames received from peers"),
    ("ringkv_peer_received_bytes_total", Some(Unit::Bytes), "Payload bytes received from peers"),
    ("ringkv_peer_dropped_frames_total", None, "Frames not delivered, by reason"),
    ("ringkv_peer_connections_total", None, "Peer connections established, by direction"),
    ("ringkv_peer_dial_failures_total", None, "Dials to peers that failed before the handshake"),
    ("ringkv_peer_protocol_errors_total", None, "Inbound peer connections closed for a violation"),
    ("ringkv_peer_connected", None, "1 while the connection to the peer is up, by lane"),
    ("ringkv_peer_queued_frames", None, "Frames waiting to be sent to the peer, by lane"),
    (PEER_SEND_HISTOGRAM, Some(Unit::Seconds), "Time to write and flush one batch to a peer"),
    (GRPC_REQUESTS, None, "Finished gRPC calls by service, method and status code"),
    (GRPC_DURATION_HISTOGRAM, Some(Unit::Seconds), "Duration of unary gRPC calls"),
    ("ringkv_watch_streams", None, "Open Watch streams"),
    ("ringkv_watchers", None, "Watchers on the open streams"),
    ("ringkv_watchers_unsynced", None, "Watchers still catching up from history"),
];

/// The counters the dashboard charts, as they stood at one moment. Rates
/// are the differences between two samples: computed over a known span of
/// the server's time, so the charts hold however the page polls, and a
/// page just opened shows the last minutes at once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterSample {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Finished unary gRPC calls since start.
    pub grpc_unary_calls: u64,
    /// Those that did not end `OK`.
    pub grpc_unary_errors: u64,
    /// Writes handed to the node since start.
    pub proposals_submitted: u64,
    /// CPU time used since start, in seconds.
    pub cpu_seconds: f64,
    /// Unary calls per latency bucket since start (see
    /// [`MetricsSnapshot::latency_bounds_seconds`]).
    pub latency_buckets: Vec<u64>,
}

/// The numbers the dashboard shows for one node; counters since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Finished unary gRPC calls.
    pub grpc_unary_calls: u64,
    /// Those that did not end `OK`.
    pub grpc_unary_errors: u64,
    /// Upper bounds of the latency buckets, in seconds (the last bucket,
    /// past them, is unbounded).
    pub latency_bounds_seconds: Vec<f64>,
    /// Unary calls per latency bucket (not cumulative), one more than
    /// `latency_bounds_seconds`.
    pub latency_buckets: Vec<u64>,
    /// Sum of the unary call durations, in seconds.
    pub latency_sum_seconds: f64,
    /// Writes handed to the node.
    pub proposals_submitted: u64,
    /// Writes applied and answered.
    pub proposals_applied: u64,
    /// Writes that failed.
    pub proposals_failed: u64,
    /// Bytes written to the WAL.
    pub wal_written_bytes: u64,
    /// Size of the data directory, in bytes (as of the last refresh).
    pub data_dir_bytes: u64,
    /// Frames written to peers.
    pub peer_sent_frames: u64,
    /// Frames received from peers.
    pub peer_received_frames: u64,
    /// Frames not delivered to or from peers.
    pub peer_dropped_frames: u64,
    /// Open Watch streams.
    pub watch_streams: u64,
    /// Watchers on them.
    pub watchers: u64,
    /// Leases (every shard).
    pub leases: u64,
    /// Leader changes seen (every shard).
    pub leader_changes: u64,
    /// Resident memory, in bytes (0 where unknown).
    pub resident_memory_bytes: u64,
    /// CPU time used, in seconds.
    pub cpu_seconds: f64,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl Metrics {
    /// A fresh set of metrics with its own recorder.
    pub fn new() -> Metrics {
        let histograms: [(&str, &[f64]); 3] = [
            (FSYNC_HISTOGRAM, &FSYNC_BUCKETS_SECONDS),
            (PEER_SEND_HISTOGRAM, &PEER_SEND_BUCKETS_SECONDS),
            (GRPC_DURATION_HISTOGRAM, &GRPC_DURATION_BUCKETS_SECONDS),
        ];
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in histograms {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                .expect("the bucket lists are not empty");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        for &(name, unit, help) in DESCRIPTIONS {
            if histograms.iter().any(|(h, _)| *h == name) {
                recorder.describe_histogram(name.into(), unit, help.into());
            } else if name.ends_with("_total") {
                recorder.describe_counter(name.into(), unit, help.into());
            } else {
                recorder.describe_gauge(name.into(), unit, help.into());
            }
        }
        let key = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            Key::from_parts(name, labels.iter().map(|&(k, v)| Label::new(k, v)).collect::<Vec<_>>())
        };
        type Labels<'a> = &'a [(&'static str, &'static str)];
        let counter = |name: &'static str, labels: Labels<'_>| {
            recorder.register_counter(&key(name, labels), &METADATA)
        };
        let gauge = |name: &'static str, labels: Labels<'_>| {
            recorder.register_gauge(&key(name, labels), &METADATA)
        };
        let histogram = |name: &'static str, labels: Labels<'_>| {
            recorder.register_histogram(&key(name, labels), &METADATA)
        };
        let by_file = |f: FileKind| [("file", f.label())];
        let by_lane = |l: &'static str| [("lane", l)];
        let inner = Inner {
            fsync: FileKind::ALL.map(|f| histogram(FSYNC_HISTOGRAM, &by_file(f))),
            written: FileKind::ALL.map(|f| counter("ringkv_disk_written_bytes_total", &by_file(f))),
            written_bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            proposals: [
                counter("ringkv_proposals_submitted_total", &[]),
                counter("ringkv_proposals_applied_total", &[]),
                counter("ringkv_proposals_failed_total", &[]),
            ],
            proposal_counts: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            requests_pending: gauge("ringkv_requests_pending", &[]),
            data_dir_bytes: gauge("ringkv_disk_data_dir_bytes", &[]),
            data_dir_bytes_value: AtomicU64::new(0),
            shards: Mutex::new(BTreeMap::new()),
            leases: Mutex::new(BTreeMap::new()),
            grpc: GrpcMetrics::new(),
            transport: OnceLock::new(),
            transport_counters: TransportCounters {
                sent_frames: counter("ringkv_peer_sent_frames_total", &[]),
                sent_bytes: counter("ringkv_peer_sent_bytes_total", &[]),
                sent_batches: counter("ringkv_peer_sent_batches_total", &[]),
                received_frames: counter("ringkv_peer_received_frames_total", &[]),
                received_bytes: counter("ringkv_peer_received_bytes_total", &[]),
                dropped: DROP_REASONS
                    .map(|r| counter("ringkv_peer_dropped_frames_total", &[("reason", r)])),
                connections_outbound: counter(
                    "ringkv_peer_connections_total",
                    &[("direction", "outbound")],
                ),
                connections_inbound: counter(
                    "ringkv_peer_connections_total",
                    &[("direction", "inbound")],
                ),
                dial_failures: counter("ringkv_peer_dial_failures_total", &[]),
                protocol_errors: counter("ringkv_peer_protocol_errors_total", &[]),
            },
            peers: Mutex::new(BTreeMap::new()),
            // In `Lane::index` order.
            peer_send: [
                histogram(PEER_SEND_HISTOGRAM, &by_lane("regular")),
                histogram(PEER_SEND_HISTOGRAM, &by_lane("bulk")),
            ],
            hub: OnceLock::new(),
            watch: [
                gauge("ringkv_watch_streams", &[]),
                gauge("ringkv_watchers", &[]),
                gauge("ringkv_watchers_unsynced", &[]),
            ],
            events: EventLog::default(),
            engine: OnceLock::new(),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_SAMPLES_MAX)),
            recorder,
            handle,
        };
        Metrics { inner: Arc::new(inner) }
    }

    /// Sets `ringkv_server_info` once the member's identity is known.
    pub fn set_info(&self, member: NodeId, name: &str) {
        let labels = vec![
            Label::new("member_id", hex_id(member)),
            Label::new("name", name.to_owned()),
            Label::new("engine", self.engine()),
            Label::new("version", env!("CARGO_PKG_VERSION")),
        ];
        let key = Key::from_parts("ringkv_server_info", labels);
        self.inner.recorder.register_gauge(&key, &METADATA).set(1.0);
    }

    /// Records the consensus engine the node runs (set once, by the node
    /// thread once it has read the data directory).
    pub fn set_engine(&self, engine: &'static str) {
        let _ = self.inner.engine.set(engine);
    }

    /// The consensus engine the node runs (empty until known).
    pub fn engine(&self) -> &'static str {
        self.inner.engine.get().copied().unwrap_or_default()
    }

    /// Records one fdatasync of a file of `kind`.
    pub fn record_fsync(&self, kind: FileKind, took: Duration) {
        self.inner.fsync[kind.index()].record(took.as_secs_f64());
    }

    /// Records `bytes` written to a file of `kind`.
    pub fn record_write(&self, kind: FileKind, bytes: usize) {
        let bytes = bytes as u64;
        self.inner.written[kind.index()].increment(bytes);
        self.inner.written_bytes[kind.index()].fetch_add(bytes, Ordering::Relaxed);
    }

    fn count_proposal(&self, which: usize) {
        self.inner.proposals[which].increment(1);
        self.inner.proposal_counts[which].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write handed to the node.
    pub fn proposal_submitted(&self) {
        self.count_proposal(SUBMITTED);
    }

    /// Counts a write applied and answered.
    pub fn proposal_applied(&self) {
        self.count_proposal(APPLIED);
    }

    /// Counts a write that failed.
    pub fn proposal_failed(&self) {
        self.count_proposal(FAILED);
    }

    /// Sets the number of requests waiting for the node.
    pub fn set_requests_pending(&self, pending: usize) {
        self.inner.requests_pending.set(pending as f64);
    }

    /// Sets the data directory's size.
    pub fn set_data_dir_bytes(&self, bytes: u64) {
        self.inner.data_dir_bytes.set(bytes as f64);
        self.inner.data_dir_bytes_value.store(bytes, Ordering::Relaxed);
    }

    /// Sets the number of leases `shard` holds.
    pub fn set_leases(&self, shard: ShardId, leases: usize) {
        let mut all = self.inner.leases.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = all.entry(shard).or_insert_with(|| {
            let key = Key::from_parts("ringkv_shard_leases", vec![shard_label(shard)]);
            (self.inner.recorder.register_gauge(&key, &METADATA), 0)
        });
        entry.0.set(leases as f64);
        entry.1 = leases as u64;
    }

    /// Refreshes the data directory's size and the lease counts of
    /// `shards` (see [`SLOW_REFRESH_INTERVAL`]). A failed read leaves the
    /// last value and is logged at debug level: the next refresh retries.
    pub fn refresh_slow(&self, data_dir: &Path, store: &MvccStore, shards: &[ShardId]) {
        match dir_bytes(data_dir) {
            Ok(bytes) => self.set_data_dir_bytes(bytes),
            Err(error) => {
                tracing::debug!(dir = %data_dir.display(), %error, "cannot size the data directory")
            }
        }
        let view = match store.read() {
            Ok(view) => view,
            Err(error) => {
                tracing::debug!(%error, "cannot read the store to count leases");
                return;
            }
        };
        for &shard in shards {
            match view.leases(shard) {
                Ok(leases) => self.set_leases(shard, leases.len()),
                Err(error) => tracing::debug!(%shard, %error, "cannot count leases"),
            }
        }
    }

    /// Reads the transport's counters at each scrape, and times its batch
    /// writes.
    pub fn attach_transport(&self, transport: &PeerTransport) {
        let send = self.inner.peer_send.clone();
        let observer: SendObserver = Arc::new(move |lane: Lane, took: Duration| {
            send[lane.index()].record(took.as_secs_f64());
        });
        transport.observe_send_durations(observer);
        let _ = self.inner.transport.set(transport.clone());
    }

    /// Reads the watch hubs' counts (summed over the shards) at each
    /// scrape.
    pub fn attach_watch_hubs(&self, hubs: Arc<WatchHubs>) {
        let _ = self.inner.hub.set(hubs);
    }

    /// Updates every shard's series from the node thread's reports, and
    /// logs leader and replica changes since the last call.
    pub fn observe_shards(&self, shards: &[ShardReport]) {
        let mut trackers = self.inner.shards.lock().unwrap_or_else(PoisonError::into_inner);
        for report in shards {
            let s = &report.status;
            let t = trackers.entry(s.shard).or_insert_with(|| self.shard_tracker(s.shard));
            t.is_leader.set(f64::from(u8::from(s.is_leader)));
            t.has_leader.set(f64::from(u8::from(s.leader.is_some())));
            t.is_learner.set(f64::from(u8::from(s.is_learner)));
            t.term.set(s.term as f64);
            t.commit_index.set(s.commit_index.0 as f64);
            t.applied_index.set(s.applied_index.0 as f64);
            t.apply_lag.set(s.commit_index.0.saturating_sub(s.applied_index.0) as f64);
            t.revision.set(s.revision.0 as f64);
            t.voters.set(report.voters.len() as f64);
            t.learners.set(report.learners.len() as f64);
            self.observe_leader(t, s.shard, s.term, s.leader);
            self.observe_replicas(t, report);
        }
    }

    /// Counts a new leader as etcd's `leader_changes_seen_total` does: each
    /// time a leader is known that differs from the one last observed (no
    /// leader included), so the first election counts.
    fn observe_leader(&self, t: &mut ShardTracker, shard: ShardId, term: u64, now: Option<NodeId>) {
        if now == t.leader {
            return;
        }
        match now {
            Some(leader) => {
                t.leader_changes.increment(1);
                t.leader_changes_seen += 1;
                // The same leader back after a spell without one is no change of hands.
                let previous = t.known_leader.filter(|&p| p != leader).map(hex_id);
                self.inner.events.push(
                    shard,
                    term,
                    EventKind::LeaderElected { leader: hex_id(leader), previous },
                );
                t.known_leader = Some(leader);
            }
            None => {
                if let Some(previous) = t.leader {
                    let kind = EventKind::LeaderLost { previous: hex_id(previous) };
                    self.inner.events.push(shard, term, kind);
                }
            }
        }
        t.leader = now;
    }

    /// Logs replicas added, promoted and removed. The first observation,
    /// and one after an empty set (a member still learning its shard),
    /// are the starting point, not changes.
    fn observe_replicas(&self, t: &mut ShardTracker, report: &ShardReport) {
        let now = (report.voters.clone(), report.learners.clone());
        let Some((voters, learners)) = t.replicas.replace(now) else { return };
        if voters.is_empty() && learners.is_empty() {
            return;
        }
        let (shard, term) = (report.status.shard, report.status.term);
        for &node in report.voters.iter().filter(|n| !voters.contains(n)) {
            self.inner.events.push(shard, term, EventKind::ReplicaAdded { node: hex_id(node) });
        }
        for &node in report.learners.iter().filter(|n| !learners.contains(n)) {
            self.inner.events.push(shard, term, EventKind::LearnerAdded { node: hex_id(node) });
        }
        let gone = voters
            .iter()
            .chain(&learners)
            .filter(|n| !report.voters.contains(n) && !report.learners.contains(n));
        for &node in gone {
            self.inner.events.push(shard, term, EventKind::ReplicaRemoved { node: hex_id(node) });
        }
    }

    fn shard_tracker(&self, shard: ShardId) -> ShardTracker {
        let key = |name: &'static str| Key::from_parts(name, vec![shard_label(shard)]);
        let recorder = &self.inner.recorder;
        let gauge = |name| recorder.register_gauge(&key(name), &METADATA);
        ShardTracker {
            is_leader: gauge("ringkv_shard_is_leader"),
            has_leader: gauge("ringkv_shard_has_leader"),
            is_learner: gauge("ringkv_shard_is_learner"),
            term: gauge("ringkv_shard_term"),
            commit_index: gauge("ringkv_shard_commit_index"),
            applied_index: gauge("ringkv_shard_applied_index"),
            apply_lag: gauge("ringkv_shard_apply_lag_entries"),
            revision: gauge("ringkv_shard_revision"),
            voters: gauge("ringkv_shard_voters"),
            learners: gauge("ringkv_shard_learners"),
            leader_changes: recorder
                .register_counter(&key("ringkv_shard_leader_changes_total"), &METADATA),
            leader_changes_seen: 0,
            leader: None,
            known_leader: None,
            replicas: None,
        }
    }

    /// The recent leader and replica changes this node saw, oldest first.
    pub fn events(&self) -> Vec<events::Event> {
        self.inner.events.snapshot()
    }

    /// Wraps the gRPC routes so that every call is counted and timed (see
    /// [`grpc`]).
    pub fn instrument_grpc(&self, routes: axum::Router) -> axum::Router {
        routes.layer(axum::middleware::from_fn_with_state(self.clone(), grpc::observe))
    }

    /// Drains histogram samples into their buckets; call now and then so
    /// that samples do not pile up between scrapes.
    pub fn upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// Copies what others count (the transport, the watch hub) into the
    /// recorder.
    fn collect(&self) -> (Option<TransportStats>, Option<WatchStats>) {
        let transport = self.inner.transport.get().map(|transport| {
            let stats = transport.stats();
            self.collect_transport(&stats);
            self.collect_peers(transport);
            stats
        });
        let watch = self.inner.hub.get().map(|hub| {
            let stats = hub.stats();
            let [streams, watchers, unsynced] = &self.inner.watch;
            streams.set(stats.streams as f64);
            watchers.set(stats.watchers as f64);
            unsynced.set(stats.watchers.saturating_sub(stats.synced) as f64);
            stats
        });
        (transport, watch)
    }

    fn collect_transport(&self, s: &TransportStats) {
        let c = &self.inner.transport_counters;
        c.sent_frames.absolute(s.frames_sent);
        c.sent_bytes.absolute(s.bytes_sent);
        c.sent_batches.absolute(s.batches_sent);
        c.received_frames.absolute(s.frames_received);
        c.received_bytes.absolute(s.bytes_received);
        let dropped = [
            s.frames_dropped_queue_full,
            s.frames_dropped_unknown_peer,
            s.frames_dropped_too_large,
            s.frames_lost_in_flight,
            s.frames_dropped_inbound,
        ];
        for (counter, value) in c.dropped.iter().zip(dropped) {
            counter.absolute(value);
        }
        c.connections_outbound.absolute(s.connections_established);
        c.connections_inbound.absolute(s.inbound_accepted);
        c.dial_failures.absolute(s.dial_failures);
        c.protocol_errors.absolute(s.protocol_errors);
    }

    fn collect_peers(&self, transport: &PeerTransport) {
        let mut gauges = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let book: Vec<NodeId> = transport.peers().into_iter().map(|(id, _)| id).collect();
        for &peer in &book {
            let Some(stats) = transport.peer_stats(peer) else { continue };
            let g = gauges.entry(peer).or_insert_with(|| self.peer_gauges(peer));
            g.connected[0].set(f64::from(u8::from(stats.connected)));
            g.connected[1].set(f64::from(u8::from(stats.bulk_connected)));
            g.queued[0].set(stats.queued_frames as f64);
            g.queued[1].set(stats.bulk_queued_frames as f64);
        }
        // A peer removed from the address book is no longer connected;
        // the recorder cannot forget a series, so it reads 0.
        for (peer, g) in gauges.iter() {
            if !book.contains(peer) {
                g.connected.iter().chain(&g.queued).for_each(|g| g.set(0.0));
            }
        }
    }

    fn peer_gauges(&self, peer: NodeId) -> PeerGauges {
        let gauge = |name: &'static str, lane: &'static str| {
            let labels = vec![Label::new("peer", hex_id(peer)), Label::new("lane", lane)];
            self.inner.recorder.register_gauge(&Key::from_parts(name, labels), &METADATA)
        };
        PeerGauges {
            connected: [
                gauge("ringkv_peer_connected", "regular"),
                gauge("ringkv_peer_connected", "bulk"),
            ],
            queued: [
                gauge("ringkv_peer_queued_frames", "regular"),
                gauge("ringkv_peer_queued_frames", "bulk"),
            ],
        }
    }

    /// Records a [`CounterSample`] now (every [`HISTORY_INTERVAL`], by the
    /// server), dropping the oldest past [`HISTORY_SAMPLES_MAX`].
    pub fn record_sample(&self) {
        let unary = &self.inner.grpc.unary;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sample = CounterSample {
            at_unix_ms: events::now_unix_ms(),
            grpc_unary_calls: get(&unary.calls),
            grpc_unary_errors: get(&unary.errors),
            proposals_submitted: get(&self.inner.proposal_counts[SUBMITTED]),
            cpu_seconds: process::read().map_or(0.0, |p| p.cpu_seconds),
            latency_buckets: unary.buckets.iter().map(get).collect(),
        };
        let mut history = self.inner.history.lock().unwrap_or_else(PoisonError::into_inner);
        if history.len() == HISTORY_SAMPLES_MAX {
            history.pop_front();
        }
        history.push_back(sample);
        debug_assert!(history.len() <= HISTORY_SAMPLES_MAX);
    }

    /// The recorded samples, oldest first.
    pub fn history(&self) -> Vec<CounterSample> {
        self.inner.history.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// The numbers the dashboard shows (see [`MetricsSnapshot`]).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let (transport, watch) = self.collect();
        let transport = transport.unwrap_or_default();
        let watch = watch.unwrap_or_default();
        let unary = &self.inner.grpc.unary;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let process = process::read().unwrap_or_default();
        let leader_changes = {
            let shards = self.inner.shards.lock().unwrap_or_else(PoisonError::into_inner);
            shards.values().map(|t| t.leader_changes_seen).sum()
        };
        let leases = {
            let leases = self.inner.leases.lock().unwrap_or_else(PoisonError::into_inner);
            leases.values().map(|(_, n)| n).sum()
        };
        MetricsSnapshot {
            grpc_unary_calls: get(&unary.calls),
            grpc_unary_errors: get(&unary.errors),
            latency_bounds_seconds: GRPC_DURATION_BUCKETS_SECONDS.to_vec(),
            latency_buckets: unary.buckets.iter().map(get).collect(),
            latency_sum_seconds: get(&unary.duration_sum_micros) as f64 / 1e6,
            proposals_submitted: get(&self.inner.proposal_counts[SUBMITTED]),
            proposals_applied: get(&self.inner.proposal_counts[APPLIED]),
            proposals_failed: get(&self.inner.proposal_counts[FAILED]),
            wal_written_bytes: get(&self.inner.written_bytes[FileKind::Wal.index()]),
            data_dir_bytes: get(&self.inner.data_dir_bytes_value),
            peer_sent_frames: transport.frames_sent,
            peer_received_frames: transport.frames_received,
            peer_dropped_frames: transport.frames_dropped_queue_full
                + transport.frames_dropped_unknown_peer
                + transport.frames_dropped_too_large
                + transport.frames_lost_in_flight
                + transport.frames_dropped_inbound,
            watch_streams: watch.streams as u64,
            watchers: watch.watchers as u64,
            leases,
            leader_changes,
            resident_memory_bytes: process.resident_memory_bytes,
            cpu_seconds: process.cpu_seconds,
            start_time_seconds: process.start_time_seconds,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.collect();
        let mut text = self.inner.handle.render();
        if let Some(p) = process::read() {
            render_process(&mut text, &p);
        }
        text
    }
}

/// The sum of the sizes of the files under `dir` (symbolic links are not
/// followed).
///
/// # Errors
/// `dir` cannot be listed; a file that vanishes meanwhile (a WAL segment
/// removed by compaction) is skipped.
pub fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    let mut first = true;
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if first => return Err(e),
            Err(_) => continue,
        };
        first = false;
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Ok(total)
}

fn shard_label(shard: ShardId) -> Label {
    Label::new("shard", shard.0.to_string())
}

/// Appends the `process_*` series, which the recorder cannot hold (its
/// counters are integers; CPU seconds are not).
fn render_process(text: &mut String, p: &process::ProcessStats) {
    let mut series = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n");
    };
    series(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_memory_bytes as f64,
    );
    series(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_memory_bytes as f64,
    );
    series(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    series("process_threads", "gauge", "Number of OS threads in the process.", p.threads as f64);
    series("process_open_fds", "gauge", "Number of open file descriptors.", p.open_fds as f64);
    if let Some(max) = p.max_fds {
        series("process_max_fds", "gauge", "Maximum number of open file descriptors.", max as f64);
    }
    series(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    );
}
