//! Membership under load, through etcdctl: a three-member cluster grows to
//! five (one member added as a learner and promoted, one added directly as
//! a voter, each a real process joining with `--initial-cluster-state
//! existing`) and shrinks back to three by removing two founders, the
//! leader first, while clients keep reading and writing. At the end every
//! remaining member holds every acknowledged write, the removed members
//! refuse requests, and the recorded history is linearizable. Once with
//! each consensus engine.
//! Needs `etcdctl` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "a test")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_api::etcdserverpb::RangeRequest;
use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_lincheck::{CheckResult, Options, check};
use support::load::{Recorder, Worker};
use support::{
    ProcessCluster, ctl, ctl_json, etcdctl, http_post, initial_cluster, promote, wait_until,
};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(60);

/// Clients on the shared keys (gets, puts, compare-and-set).
const MIXED_WORKERS: u64 = 2;

/// The keys they fight over.
const KEYS: &[&str] = &["m/0", "m/1", "m/2"];

/// Lincheck id of the writer of fresh keys (after the mixed workers').
const WRITER: u64 = MIXED_WORKERS;

/// Lincheck id of the final reader.
const READER: u64 = MIXED_WORKERS + 1;

/// Where the writer of fresh keys writes: `PREFIX<n>`.
const PREFIX: &str = "fresh/";

/// The two engines' runs of [`grow_to_five_and_shrink_to_three_under_load`]
/// take turns: on a 2-core machine, the other run's processes would stall
/// the writes the test waits for.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn raft_grow_to_five_and_shrink_to_three_under_load() {
    grow_to_five_and_shrink_to_three_under_load("raft");
}

#[test]
fn paxos_grow_to_five_and_shrink_to_three_under_load() {
    grow_to_five_and_shrink_to_three_under_load("paxos");
}

fn grow_to_five_and_shrink_to_three_under_load(engine: &str) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = Instant::now();
    let mut cluster = ProcessCluster::start_with(3, &[&format!("--engine={engine}")]).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    for i in 0..3 {
        assert!(cluster.runs_engine(i, engine), "m{i} is not on {engine}:\n{}", cluster.log(i));
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let recorder = Recorder::new(cluster.client_urls());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks: Vec<_> = (0..MIXED_WORKERS)
        .map(|id| {
            let worker = Worker::new(recorder.clone(), id, KEYS);
            let stop = Arc::clone(&stop);
            runtime.spawn(async move {
                worker.run(stop).await;
            })
        })
        .collect();
    // The writer of fresh keys: each acknowledged key must survive.
    let acked: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    {
        let (recorder, stop, acked) = (recorder.clone(), Arc::clone(&stop), Arc::clone(&acked));
        tasks.push(runtime.spawn(async move {
            let mut writer = Worker::new(recorder, WRITER, KEYS);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("{PREFIX}{n:06}"), format!("v{n}"));
                if writer.put_key(Bytes::from(key.clone()), Bytes::from(value.clone())).await {
                    acked.lock().unwrap().push((key, value));
                }
                n += 1;
            }
        }));
    }
    let acked_now = || acked.lock().unwrap().len();
    let progressed = |since: usize| wait_until(WAIT, || acked_now() > since + 10);

    // Grow: m3 as a learner, then promoted; m4 directly as a voter.
    let seen = acked_now();
    let m3 = add_member(&mut cluster, "m3", true);
    let m3_id = member_id(&cluster, m3);
    promote(&cluster.endpoints(), &m3_id, WAIT).unwrap();
    recorder.endpoints.lock().unwrap().push(cluster.members[m3].client_url());
    assert!(progressed(seen), "writes stalled while m3 joined");
    let seen = acked_now();
    let m4 = add_member(&mut cluster, "m4", false);
    recorder.endpoints.lock().unwrap().push(cluster.members[m4].client_url());
    assert!(progressed(seen), "writes stalled while m4 joined");
    let list = ctl_json(&cluster.endpoints(), &["member", "list"]);
    let members = list["members"].as_array().unwrap();
    assert_eq!(members.len(), 5, "{list}");
    assert!(members.iter().all(|m| m.get("isLearner").is_none()), "all voters: {list}");
    assert!(members.iter().all(|m| !m["name"].as_str().unwrap().is_empty()), "all started: {list}");
    let grown_at = started.elapsed();

    // Shrink: remove the leader (a founder), then another founder.
    let leader = cluster.wait_leader(WAIT).unwrap();
    let other = (0..3).find(|&i| i != leader).unwrap();
    for gone in [leader, other] {
        let seen = acked_now();
        remove_member(&mut cluster, gone);
        let url = cluster.members[gone].client_url();
        recorder.endpoints.lock().unwrap().retain(|u| *u != url);
        assert!(progressed(seen), "writes stalled after removing m{gone}");
    }
    let list = ctl_json(&cluster.endpoints(), &["member", "list"]);
    let mut names: Vec<&str> =
        list["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    let survivor = (0..3).find(|&i| i != leader && i != other).unwrap();
    let mut expected = vec![format!("m{survivor}"), "m3".to_owned(), "m4".to_owned()];
    expected.sort_unstable();
    assert_eq!(names, expected);

    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        runtime.block_on(task).unwrap();
    }

    // Every acknowledged write, on every remaining member, once it applied
    // the leader's head; a final linearizable read of each shared key
    // joins the history.
    let acked = acked.lock().unwrap().clone();
    let mut reader = Worker::new(recorder.clone(), READER, KEYS);
    let shared: Vec<Option<Bytes>> = runtime.block_on(async {
        let mut values = Vec::new();
        for key in KEYS {
            let found = loop {
                if let Some(found) = reader.get_key(Bytes::from_static(key.as_bytes())).await {
                    break found;
                }
            };
            values.push(found.map(|f| f.value));
        }
        values
    });
    let remaining: Vec<usize> =
        (0..cluster.members.len()).filter(|&i| cluster.is_running(i)).collect();
    assert_eq!(remaining.len(), 3);
    for &i in &remaining {
        let url = cluster.members[i].client_url();
        let mut last = (Vec::new(), Vec::new());
        let converged = wait_until(WAIT, || {
            let Ok(state) = runtime.block_on(member_state(&url)) else { return false };
            last = state;
            last.1 == shared && acked.iter().all(|kv| last.0.binary_search(kv).is_ok())
        });
        let missing: Vec<_> =
            acked.iter().filter(|kv| last.0.binary_search(kv).is_err()).take(5).collect();
        assert!(
            converged,
            "m{i} lacks acknowledged writes (first: {missing:?}) or has other shared values \
             ({:?} vs {shared:?}):\n{}",
            last.1,
            cluster.log(i)
        );
    }

    let history = recorder.history();
    println!(
        "{engine} membership: {} operations, {} fresh keys acknowledged; grown to 5 at \
         {grown_at:?}, test took {:?}",
        history.len(),
        acked.len(),
        started.elapsed()
    );
    match check(&history, &Options::default()) {
        CheckResult::Linearizable => {}
        CheckResult::NotLinearizable(cx) => {
            panic!("{engine}: the history is not linearizable:\n{cx}\n{}", cx.timeline())
        }
        CheckResult::Undecided(u) => panic!("{engine}: lincheck undecided: {u:?}"),
    }
}

/// etcd's documented way to add a member: `etcdctl member add`, then start
/// it with the `ETCD_*` settings etcdctl printed, which carry no cluster
/// token (etcd learns the cluster id from the running members). ringkv's
/// peer handshake compares an id derived from `--initial-cluster-token`
/// alone, so a member joining a cluster founded with a token of its own,
/// without that token, is refused ("cluster id mismatch") and never
/// catches up.
#[test]
#[ignore = "bug: a joining member must repeat the cluster's --initial-cluster-token (etcd ignores it)"]
fn a_member_joins_without_the_clusters_token() {
    let mut cluster = ProcessCluster::start(3).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let endpoints = cluster.endpoints();
    let i = cluster.reserve("m3");
    let peer = cluster.members[i].peer_url();
    let initial =
        initial_cluster(&ctl(&endpoints, &["member", "add", "m3", &format!("--peer-urls={peer}")]));
    ctl(&endpoints, &["put", "k", "v"]);
    cluster.join_without_token(i, &initial).unwrap();
    let url = cluster.members[i].client_url();
    let caught_up = wait_until(WAIT, || {
        etcdctl(&url, &["get", "k", "--consistency=s", "--print-value-only"]).stdout == "v\n"
    });
    assert!(caught_up, "the new member never caught up:\n{}", cluster.log(i));
}

/// etcd answers a learner's clients only with serializable ranges and
/// status (`isRPCSupportedForLearner`); everything else, streams included,
/// gets `Unavailable "etcdserver: rpc not supported for learner"`, which
/// clientv3 takes as a cue to use another endpoint. Its JSON gateway
/// forwards to that gRPC server, so the gateway refuses the same.
#[test]
fn a_learner_refuses_what_etcd_refuses() {
    let mut cluster = ProcessCluster::start(3).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let i = add_member(&mut cluster, "m3", true);
    let url = cluster.members[i].client_url();
    // Allowed: serializable reads (add_member did one) and status.
    ctl_json(&cluster.members[i].client_addr().to_string(), &["endpoint", "status"]);
    for args in [&["put", "k", "v"][..], &["get", "k"][..], &["member", "list"][..]] {
        let out = etcdctl(&url, &[&["--command-timeout=2s"][..], args].concat());
        assert!(
            !out.ok && out.stderr.contains("etcdserver: rpc not supported for learner"),
            "etcdctl {args:?} on a learner: {out:?}"
        );
    }
    // The JSON gateway applies the same rule.
    let addr = cluster.members[i].client_addr();
    let status = http_post(addr, "/v3/maintenance/status", "{}");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let put = http_post(addr, "/v3/kv/put", r#"{"key":"aw==","value":"dg=="}"#);
    assert!(
        put.contains(r#""code":14"#) && put.contains("etcdserver: rpc not supported for learner"),
        "{put}"
    );
}

/// `etcdctl member add` (as a learner or a voter), then the process joins
/// with what etcdctl printed; returns the member's index once it serves.
fn add_member(cluster: &mut ProcessCluster, name: &str, learner: bool) -> usize {
    let endpoints = cluster.endpoints();
    let i = cluster.reserve(name);
    let peer = cluster.members[i].peer_url();
    let mut args = vec!["member", "add", name];
    if learner {
        args.push("--learner");
    }
    let peer_flag = format!("--peer-urls={peer}");
    args.push(&peer_flag);
    let initial = initial_cluster(&ctl(&endpoints, &args));
    // With the cluster's token: see `a_member_joins_without_the_clusters_token`.
    cluster.join(i, &initial).unwrap();
    let url = cluster.members[i].client_url();
    // Caught up: it has a write made after it was added.
    let marker = format!("joined/{name}");
    ctl(&endpoints, &["put", &marker, "yes"]);
    let caught_up = wait_until(WAIT, || {
        etcdctl(&url, &["get", &marker, "--consistency=s", "--print-value-only"]).stdout == "yes\n"
    });
    assert!(caught_up, "{name} never caught up:\n{}", cluster.log(i));
    let status = ctl_json(&cluster.members[i].client_addr().to_string(), &["endpoint", "status"]);
    assert_eq!(status[0]["Status"].get("isLearner").is_some(), learner, "{status}");
    i
}

/// `etcdctl member remove` through the other members; the removed member
/// then refuses requests and is stopped.
fn remove_member(cluster: &mut ProcessCluster, i: usize) {
    let id = member_id(cluster, i);
    let url = cluster.members[i].client_url();
    let others: Vec<String> = (0..cluster.members.len())
        .filter(|&j| j != i && cluster.is_running(j))
        .map(|j| cluster.members[j].client_url())
        .collect();
    let removed = ctl(&others.join(","), &["member", "remove", &id]);
    assert!(removed.starts_with(&format!("Member {id:>16} removed from cluster ")), "{removed}");
    let refused = wait_until(WAIT, || {
        let out = etcdctl(&url, &["--command-timeout=2s", "get", "m/0"]);
        !out.ok && out.stderr.contains("etcdserver: server stopped")
    });
    assert!(refused, "m{i} still serves after its removal:\n{}", cluster.log(i));
    cluster.kill(i);
    let leader = cluster.wait_leader(WAIT).unwrap();
    assert_ne!(leader, i);
}

/// Member `i`'s id as etcdctl prints it.
fn member_id(cluster: &ProcessCluster, i: usize) -> String {
    let status = ctl_json(&cluster.members[i].client_addr().to_string(), &["endpoint", "status"]);
    format!("{:x}", status[0]["Status"]["header"]["member_id"].as_u64().unwrap())
}

/// A member's own store (serializable reads): the fresh keys, sorted, and
/// the shared keys' values.
async fn member_state(url: &str) -> anyhow::Result<(Vec<(String, String)>, Vec<Option<Bytes>>)> {
    let mut kv = KvClient::connect(url.to_owned()).await?;
    let fresh = kv
        .range(RangeRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: b"fresh0".to_vec(),
            serializable: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let fresh = fresh
        .kvs
        .into_iter()
        .map(|kv| (String::from_utf8(kv.key).unwrap(), String::from_utf8(kv.value).unwrap()))
        .collect();
    let mut shared = Vec::new();
    for key in KEYS {
        let reply = kv
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                serializable: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        shared.push(reply.kvs.first().map(|kv| Bytes::from(kv.value.clone())));
    }
    Ok((fresh, shared))
}
