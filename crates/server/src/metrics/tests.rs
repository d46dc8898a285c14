use std::net::SocketAddr;

use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_api::etcdserverpb::kv_server::{Kv, KvServer};
use ringkv_api::etcdserverpb::{
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest,
};
use ringkv_consensus::LogIndex;
use ringkv_node::ShardStatus;
use ringkv_storage::mvcc::Revision;
use tonic::{Request, Response, Status};

use super::*;

/// The value of the series `name` whose labels include every one of
/// `labels`, from Prometheus text; `None` if no such line.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| series_labels.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if all { value.parse().ok() } else { None }
    })
}

fn status(term: u64, leader: Option<u64>, me: u64, commit: u64, applied: u64) -> ShardStatus {
    ShardStatus {
        shard: ShardId(1),
        leader: leader.map(NodeId),
        is_leader: leader == Some(me),
        is_learner: false,
        term,
        commit_index: LogIndex(commit),
        applied_index: LogIndex(applied),
        revision: Revision(7),
        compacted_revision: Revision(0),
        snapshot_index: LogIndex(0),
        snapshots_installed: 0,
    }
}

fn report(status: ShardStatus, voters: &[u64], learners: &[u64]) -> ShardReport {
    ShardReport {
        status,
        voters: voters.iter().copied().map(NodeId).collect(),
        learners: learners.iter().copied().map(NodeId).collect(),
    }
}

const SHARD: (&str, &str) = ("shard", "1");

#[test]
fn shard_series_follow_the_reports() {
    let metrics = Metrics::new();
    metrics.observe_shards(&[report(status(2, Some(1), 1, 10, 7), &[1, 2, 3], &[])]);
    let text = metrics.render();
    let get = |name| sample(&text, name, &[SHARD]);
    assert_eq!(get("ringkv_shard_is_leader"), Some(1.0));
    assert_eq!(get("ringkv_shard_has_leader"), Some(1.0));
    assert_eq!(get("ringkv_shard_term"), Some(2.0));
    assert_eq!(get("ringkv_shard_commit_index"), Some(10.0));
    assert_eq!(get("ringkv_shard_applied_index"), Some(7.0));
    assert_eq!(get("ringkv_shard_apply_lag_entries"), Some(3.0));
    assert_eq!(get("ringkv_shard_revision"), Some(7.0));
    assert_eq!(get("ringkv_shard_voters"), Some(3.0));
    assert_eq!(get("ringkv_shard_learners"), Some(0.0));
    assert_eq!(get("ringkv_shard_leader_changes_total"), Some(1.0), "the first election counts");
    assert!(text.contains("# TYPE ringkv_shard_leader_changes_total counter"), "{text}");
    assert!(text.contains("# HELP ringkv_shard_apply_lag_entries"), "{text}");

    // Follower of another leader, then no leader, then the same leader back.
    metrics.observe_shards(&[report(status(3, Some(2), 1, 12, 12), &[1, 2, 3], &[])]);
    metrics.observe_shards(&[report(status(4, None, 1, 12, 12), &[1, 2, 3], &[])]);
    metrics.observe_shards(&[report(status(4, None, 1, 12, 12), &[1, 2, 3], &[])]);
    metrics.observe_shards(&[report(status(5, Some(2), 1, 13, 13), &[1, 2, 3], &[])]);
    let text = metrics.render();
    assert_eq!(sample(&text, "ringkv_shard_is_leader", &[SHARD]), Some(0.0));
    assert_eq!(sample(&text, "ringkv_shard_apply_lag_entries", &[SHARD]), Some(0.0));
    assert_eq!(sample(&text, "ringkv_shard_leader_changes_total", &[SHARD]), Some(3.0));
    let kinds: Vec<EventKind> = metrics.events().into_iter().map(|e| e.kind).collect();
    let id = |n| hex_id(NodeId(n));
    assert_eq!(
        kinds,
        vec![
            EventKind::LeaderElected { leader: id(1), previous: None },
            EventKind::LeaderElected { leader: id(2), previous: Some(id(1)) },
            EventKind::LeaderLost { previous: id(2) },
            EventKind::LeaderElected { leader: id(2), previous: None },
        ]
    );
    assert_eq!(metrics.snapshot().leader_changes, 3);
}

#[test]
fn replica_changes_are_logged_as_moves() {
    let metrics = Metrics::new();
    let at = |voters: &[u64], learners: &[u64]| {
        metrics.observe_shards(&[report(status(2, Some(1), 1, 5, 5), voters, learners)]);
    };
    at(&[], &[]); // a member that has not learned its shard yet
    at(&[1, 2, 3], &[]); // the starting point, not a change
    at(&[1, 2, 3], &[4]);
    at(&[1, 2, 3, 4], &[]);
    at(&[1, 2, 4], &[]);
    let kinds: Vec<EventKind> = metrics.events().into_iter().skip(1).map(|e| e.kind).collect();
    let id = |n| hex_id(NodeId(n));
    assert_eq!(
        kinds,
        vec![
            EventKind::LearnerAdded { node: id(4) },
            EventKind::ReplicaAdded { node: id(4) },
            EventKind::ReplicaRemoved { node: id(3) },
        ]
    );
    let text = metrics.render();
    assert_eq!(sample(&text, "ringkv_shard_voters", &[SHARD]), Some(3.0));
}

#[test]
fn disk_writes_and_fsyncs_are_split_by_file() {
    assert_eq!(FileKind::of(ringkv_node::STORE_FILE), FileKind::Store);
    assert_eq!(FileKind::of("0000000000000001.wal"), FileKind::Wal);
    assert_eq!(FileKind::of("0000000000000002.wal.tmp"), FileKind::Wal);
    let metrics = Metrics::new();
    metrics.record_write(FileKind::Wal, 100);
    metrics.record_write(FileKind::Wal, 28);
    metrics.record_write(FileKind::Store, 4096);
    metrics.record_fsync(FileKind::Wal, Duration::from_micros(1500));
    metrics.upkeep();
    let text = metrics.render();
    let written = |file| sample(&text, "ringkv_disk_written_bytes_total", &[("file", file)]);
    assert_eq!(written("wal"), Some(128.0));
    assert_eq!(written("store"), Some(4096.0));
    let fsyncs =
        |file| sample(&text, "ringkv_disk_fsync_duration_seconds_count", &[("file", file)]);
    assert_eq!(fsyncs("wal"), Some(1.0));
    let le_2ms = [("file", "wal"), ("le", "0.002")];
    assert_eq!(sample(&text, "ringkv_disk_fsync_duration_seconds_bucket", &le_2ms), Some(1.0));
    let le_1ms = [("file", "wal"), ("le", "0.001")];
    assert_eq!(sample(&text, "ringkv_disk_fsync_duration_seconds_bucket", &le_1ms), Some(0.0));
    assert_eq!(metrics.snapshot().wal_written_bytes, 128);
}

#[test]
fn data_dir_bytes_sum_the_files_below() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub").join("b"), [0u8; 23]).unwrap();
    assert_eq!(dir_bytes(dir.path()).unwrap(), 123);
    assert!(dir_bytes(&dir.path().join("missing")).is_err());
    let metrics = Metrics::new();
    metrics.set_data_dir_bytes(123);
    metrics.set_leases(ShardId(1), 4);
    let text = metrics.render();
    assert_eq!(sample(&text, "ringkv_disk_data_dir_bytes", &[]), Some(123.0));
    assert_eq!(sample(&text, "ringkv_shard_leases", &[SHARD]), Some(4.0));
    assert_eq!(metrics.snapshot().leases, 4);
}

#[cfg(target_os = "linux")]
#[test]
fn process_series_are_rendered() {
    let text = Metrics::new().render();
    assert!(sample(&text, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));
    assert!(sample(&text, "process_cpu_seconds_total", &[]).is_some_and(|v| v >= 0.0));
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"), "{text}");
    assert!(sample(&text, "process_open_fds", &[]).is_some_and(|v| v >= 1.0));
}

#[test]
fn proposals_count_each_outcome() {
    let metrics = Metrics::new();
    metrics.proposal_submitted();
    metrics.proposal_submitted();
    metrics.proposal_applied();
    metrics.proposal_failed();
    let text = metrics.render();
    assert_eq!(sample(&text, "ringkv_proposals_submitted_total", &[]), Some(2.0));
    assert_eq!(sample(&text, "ringkv_proposals_applied_total", &[]), Some(1.0));
    assert_eq!(sample(&text, "ringkv_proposals_failed_total", &[]), Some(1.0));
}

/// A KV service that answers Put and fails Range; the rest are the
/// generated defaults (`UNIMPLEMENTED`).
struct FakeKv;

#[tonic::async_trait]
impl Kv for FakeKv {
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(PutResponse { header: Some(ResponseHeader::default()), prev_kv: None }))
    }

    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Err(Status::not_found("no such thing"))
    }
}

/// Serves `FakeKv` through [`Metrics::instrument_grpc`] on loopback.
async fn serve_fake(metrics: &Metrics) -> SocketAddr {
    let mut routes = tonic::service::Routes::builder();
    routes.add_service(KvServer::new(FakeKv));
    let router = metrics.instrument_grpc(routes.routes().into_axum_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::from(router))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    addr
}

#[test]
fn grpc_methods_come_from_the_descriptors_and_unknown_paths_share_a_label() {
    let grpc = GrpcMetrics::new();
    let put = grpc.method_index("/etcdserverpb.KV/Put");
    let watch = grpc.method_index("/etcdserverpb.Watch/Watch");
    let bogus = grpc.method_index("/etcdserverpb.KV/Bogus");
    assert_ne!(put, bogus);
    assert_eq!(bogus, grpc.method_index("/anything/else"));
    assert!(!grpc.methods[put].streaming);
    assert!(grpc.methods[watch].streaming);
    assert_eq!(grpc.methods[bogus].name, grpc::UNKNOWN_LABEL);
    let observe = grpc.method_index("/v3electionpb.Election/Observe");
    assert!(grpc.methods[observe].streaming, "server streaming counts as streaming");
}

#[tokio::test]
async fn grpc_calls_are_counted_by_method_and_code() {
    let metrics = Metrics::new();
    let addr = serve_fake(&metrics).await;
    let mut client = KvClient::connect(format!("http://{addr}")).await.unwrap();
    client.put(PutRequest::default()).await.unwrap();
    client.put(PutRequest::default()).await.unwrap();
    let range = client.range(RangeRequest::default()).await.unwrap_err();
    assert_eq!(range.code(), tonic::Code::NotFound);
    let txn = client.txn(TxnRequest::default()).await.unwrap_err();
    assert_eq!(txn.code(), tonic::Code::Unimplemented);

    // A call is recorded when its response body ends, which may be just
    // after the client has its answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metrics.snapshot().grpc_unary_calls < 4 {
        assert!(std::time::Instant::now() < deadline, "calls never recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    metrics.upkeep();
    let text = metrics.render();
    let calls = |method, code| {
        let labels = [("service", "etcdserverpb.KV"), ("method", method), ("code", code)];
        sample(&text, GRPC_REQUESTS, &labels)
    };
    assert_eq!(calls("Put", "OK"), Some(2.0), "{text}");
    assert_eq!(calls("Range", "NotFound"), Some(1.0), "{text}");
    assert_eq!(calls("Txn", "Unimplemented"), Some(1.0), "{text}");
    assert_eq!(calls("Put", "NotFound"), None);
    let put = [("service", "etcdserverpb.KV"), ("method", "Put")];
    let put_count = format!("{GRPC_DURATION_HISTOGRAM}_count");
    assert_eq!(sample(&text, &put_count, &put), Some(2.0), "{text}");
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.grpc_unary_calls, 4);
    assert_eq!(snapshot.grpc_unary_errors, 2);
    assert_eq!(snapshot.latency_buckets.iter().sum::<u64>(), 4);
    assert_eq!(snapshot.latency_buckets.len(), snapshot.latency_bounds_seconds.len() + 1);
}

#[test]
fn the_history_keeps_the_newest_samples() {
    let metrics = Metrics::new();
    metrics.proposal_submitted();
    for _ in 0..HISTORY_SAMPLES_MAX + 3 {
        metrics.record_sample();
    }
    metrics.proposal_submitted();
    metrics.record_sample();
    let history = metrics.history();
    assert_eq!(history.len(), HISTORY_SAMPLES_MAX);
    assert_eq!(history[0].proposals_submitted, 1);
    assert_eq!(history[HISTORY_SAMPLES_MAX - 1].proposals_submitted, 2);
    assert!(history.windows(2).all(|w| w[0].at_unix_ms <= w[1].at_unix_ms));
    let buckets = GRPC_DURATION_BUCKETS_SECONDS.len() + 1;
    assert!(history.iter().all(|s| s.latency_buckets.len() == buckets));
}
