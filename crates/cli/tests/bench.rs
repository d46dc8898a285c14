//! `ringkv bench` against real servers: every workload, count-bounded,
//! against a single-node `ringkv server`; the report must count the
//! operations with no errors, and the data must really be in the store
//! afterwards. Then a `--compare` of two ringkv nodes, and the watch
//! workload against etcd 3.4 (ringkv's Watch service is not merged yet).
//! Needs `etcd` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ringkv_api::etcdserverpb::RangeRequest;
use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_bench::Report;
use ringkv_bench::keys::KeySpace;
use ringkv_bench::stats::OpKind;
use support::{ProcessCluster, free_port, wait_until};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(60);

/// Runs `ringkv bench ARGS -w json` and returns its report; panics with
/// its stderr if it fails.
fn bench(args: &[&str]) -> Report {
    let out = Command::new(support::RINGKV)
        .arg("bench")
        .args(args)
        .args(["-w", "json"])
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ringkv bench {args:?} failed: {stderr}\n{stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not a JSON report ({e}): {stdout}"))
}

/// Checks a single-target report: `ops` operations, no error.
fn assert_clean(report: &Report, ops: u64) {
    assert_eq!(report.targets.len(), 1);
    let run = &report.targets[0].repetitions[0];
    assert_eq!(run.errors, 0, "{:?}", run.first_error);
    assert_eq!(run.ops, ops);
    assert!(run.throughput_ops_s > 0.0);
    let latency = run.latency.unwrap();
    assert!(latency.p50_us > 0.0 && latency.p50_us <= latency.p99_us);
    assert!(latency.p99_us <= latency.max_us);
}

/// Every key of `[space.key(0), space.key(space.size()))` in the store.
fn read_back(url: &str, space: &KeySpace) -> Vec<ringkv_api::mvccpb::KeyValue> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut kv = KvClient::connect(url.to_owned()).await.unwrap();
        let request = RangeRequest {
            key: space.key(0),
            range_end: space.key(space.size()),
            ..RangeRequest::default()
        };
        kv.range(request).await.unwrap().into_inner().kvs
    })
}

#[test]
fn every_workload_runs_against_one_node_and_the_writes_are_real() {
    let cluster = ProcessCluster::start(1).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let url = cluster.members[0].client_url();
    let endpoints = format!("--endpoints={url}");

    // put: 200 sequential puts write each of 200 keys exactly once.
    let report = bench(&[
        "put",
        &endpoints,
        "--total=200",
        "--key-space=200",
        "--distribution=sequential",
        "--clients=8",
        "--conns=2",
    ]);
    assert_clean(&report, 200);
    assert_eq!(report.targets[0].server_pids.len(), 1, "the node is found by its port");
    assert!(report.targets[0].repetitions[0].server_cpu_us_per_op.is_some());
    let space = KeySpace::new(200, 8).unwrap();
    let kvs = read_back(&url, &space);
    assert_eq!(kvs.len(), 200, "every key put is in the store");
    for (i, kv) in kvs.iter().enumerate() {
        assert_eq!(kv.key, space.key(i as u64));
        assert_eq!(kv.value.len(), 256);
        assert_eq!(kv.version, 1, "sequential: each key once");
    }

    // get, both consistencies: the key space is preloaded first.
    for consistency in ["linearizable", "serializable"] {
        let report = bench(&[
            "get",
            &endpoints,
            "--total=200",
            "--key-space=300",
            "--clients=16",
            "--conns=2",
            &format!("--consistency={consistency}"),
        ]);
        assert_clean(&report, 200);
        assert!(report.config.preload);
    }
    assert_eq!(read_back(&url, &KeySpace::new(300, 8).unwrap()).len(), 300, "preloaded");

    // range, zipfian.
    let report = bench(&[
        "range",
        &endpoints,
        "--total=200",
        "--key-space=300",
        "--range-keys=10",
        "--distribution=zipfian",
        "--clients=16",
        "--conns=2",
    ]);
    assert_clean(&report, 200);

    // mixed: gets and puts add up.
    let report = bench(&[
        "mixed",
        &endpoints,
        "--total=200",
        "--key-space=300",
        "--clients=16",
        "--conns=2",
    ]);
    assert_clean(&report, 200);
    let by_kind = &report.targets[0].repetitions[0].by_kind;
    let (gets, puts) = (by_kind[&OpKind::Get].ops, by_kind[&OpKind::Put].ops);
    assert_eq!(gets + puts, 200);
    assert!(gets > 0 && puts > 0, "{by_kind:?}");

    // txn: 9-byte keys, a space of its own, preloaded (each key at version
    // 1). Each success is one put, so the versions add up to the space
    // plus the successes; contention among 16 clients on 10 keys makes
    // some compares fail.
    let report = bench(&[
        "txn",
        &endpoints,
        "--total=200",
        "--key-size=9",
        "--key-space=10",
        "--clients=16",
    ]);
    assert_clean(&report, 200);
    assert!(report.config.preload);
    let txn = report.targets[0].repetitions[0].txn.unwrap();
    assert_eq!(txn.succeeded + txn.failed, 200);
    assert!(txn.succeeded > 0, "{txn:?}");
    let kvs = read_back(&url, &KeySpace::new(10, 9).unwrap());
    let versions: u64 = kvs.iter().map(|kv| u64::try_from(kv.version).unwrap()).sum();
    assert_eq!(versions, 10 + txn.succeeded, "{txn:?}");
    // One client alone never loses a race: it knows every key's revision
    // from the preload and its own answers, so every compare holds, on
    // keys other runs have written before.
    let report = bench(&["txn", &endpoints, "--total=50", "--key-size=9", "--key-space=10"]);
    assert_clean(&report, 50);
    let txn = report.targets[0].repetitions[0].txn.unwrap();
    assert_eq!((txn.succeeded, txn.failed), (50, 0));

    // An open loop at a rate: same counts; the text report renders, and
    // --json-out writes the same report as JSON alongside.
    let dir = tempfile::tempdir().unwrap();
    let json_out = dir.path().join("report.json");
    let out = Command::new(support::RINGKV)
        .args(["bench", "put", &endpoints, "--total=50", "--rate=500", "--clients=4"])
        .arg("--json-out")
        .arg(&json_out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("500 ops/s"), "{text}");
    let ops_line = text.lines().find(|l| l.starts_with("operations")).unwrap();
    assert!(ops_line.ends_with(" 50"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("p99.9 (ms)")), "{text}");
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    assert_clean(&report, 50);
    assert_eq!(report.config.rate_ops_s, Some(500.0));
}

#[test]
fn compare_runs_both_sides_alternately_and_gives_ratios() {
    let a = ProcessCluster::start(1).unwrap();
    let b = ProcessCluster::start(1).unwrap();
    a.wait_leader(WAIT).unwrap();
    b.wait_leader(WAIT).unwrap();
    let (a_url, b_url) = (a.members[0].client_url(), b.members[0].client_url());
    let report = bench(&[
        "put",
        "--compare",
        &a_url,
        &b_url,
        "--repeat=2",
        "--total=100",
        "--clients=4",
        "--label=first",
        "--compare-label=second",
    ]);
    assert_eq!(report.targets.len(), 2);
    for (target, url) in report.targets.iter().zip([&a_url, &b_url]) {
        assert_eq!(target.endpoints, [url.as_str()]);
        assert_eq!(target.repetitions.len(), 2);
        assert_eq!(target.median.repetitions, 2);
        assert_eq!(target.median.ops, 200);
        assert_eq!(target.median.errors, 0);
        assert_eq!(target.server_pids.len(), 1);
    }
    assert_ne!(report.targets[0].server_pids, report.targets[1].server_pids);
    assert_eq!(report.targets[0].label, "first");
    let ratios = report.ratios.unwrap();
    let want =
        report.targets[1].median.throughput_ops_s / report.targets[0].median.throughput_ops_s;
    assert!((ratios.throughput.unwrap() - want).abs() < 1e-9);
    assert!(ratios.p50.unwrap() > 0.0);
    // Both stores got their writes.
    let space = KeySpace::new(10_000, 8).unwrap();
    assert!(!read_back(&a_url, &space).is_empty());
    assert!(!read_back(&b_url, &space).is_empty());
}

#[test]
fn an_unreachable_endpoint_fails_with_a_clear_message() {
    let port = free_port();
    let out = Command::new(support::RINGKV)
        .args(["bench", "put", &format!("--endpoints=127.0.0.1:{port}"), "--total=10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot connect to http://127.0.0.1:{port}")), "{err}");
    assert!(out.stdout.is_empty());
}

/// An etcd 3.4 member on free loopback ports, killed on drop.
struct Etcd {
    child: Child,
    client_url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "bench"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=bench={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd runs (scripts/setup installs Debian's etcd-server)");
        let etcd = Etcd { child, client_url, _dir: dir };
        let ready = wait_until(WAIT, || etcd.healthy());
        assert!(ready, "etcd never became healthy:\n{}", log_of(etcd._dir.path()));
        etcd
    }

    fn healthy(&self) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let Ok(mut kv) = KvClient::connect(self.client_url.clone()).await else {
                return false;
            };
            kv.range(RangeRequest { key: b"health".to_vec(), ..RangeRequest::default() })
                .await
                .is_ok()
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
}

#[test]
fn watch_latency_against_etcd_misses_no_event() {
    let etcd = Etcd::start();
    let report = bench(&[
        "watch",
        &format!("--endpoints={}", etcd.client_url),
        "--total=200",
        "--clients=4",
        "--watchers=3",
        "--conns=2",
    ]);
    assert_clean(&report, 200);
    let run = &report.targets[0].repetitions[0];
    let watch = run.watch.unwrap();
    assert_eq!(watch.watchers, 3);
    assert_eq!(watch.events_expected, 600);
    assert_eq!(watch.events_received, 600);
    assert_eq!(watch.events_missing, 0);
    assert_eq!(report.targets[0].median.watch_events_missing, Some(0));
    // The latency is the events' (one per watcher per put), not the puts'.
    let kinds: Vec<(OpKind, u64)> = run.by_kind.iter().map(|(k, s)| (*k, s.ops)).collect();
    assert_eq!(kinds, [(OpKind::Put, 200), (OpKind::Watch, 600)]);
    assert_eq!(report.targets[0].server_pids, [etcd.child.id()]);
}

#[test]
fn watch_latency_against_ringkv_misses_no_event() {
    let cluster = ProcessCluster::start(1).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let report = bench(&[
        "watch",
        &format!("--endpoints={}", cluster.members[0].client_url()),
        "--total=200",
        "--clients=4",
        "--watchers=3",
    ]);
    assert_clean(&report, 200);
    assert_eq!(report.targets[0].median.watch_events_missing, Some(0));
}
