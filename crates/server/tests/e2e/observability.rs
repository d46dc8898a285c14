//! `/metrics` and the dashboard's JSON, scraped from real members while
//! clients work on them.

use ringkv_api::etcdserverpb::{PutRequest, RangeRequest};
use ringkv_consensus::ShardId;
use serde_json::Value;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::http::http;

/// The value of the series `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let matches = series_name == name
            && labels
                .iter()
                .all(|(k, v)| series_labels.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if matches { value.parse().ok() } else { None }
    })
}

async fn scrape(member: &Member) -> String {
    let answer = http(&member.endpoint, "GET", "/metrics", "").await;
    assert_eq!(answer.status, 200);
    String::from_utf8(answer.body).unwrap()
}

/// Scrapes `member` until `done` holds of the text (fails after [`WAIT`]).
async fn scrape_until(member: &Member, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(member).await;
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never happened: {what}\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks `member` for the cluster view until `done` holds of it.
async fn cluster_until(member: &Member, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let view = cluster_json(member).await;
        if done(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "never happened: {what}\n{view:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const KV_PUT_OK: [(&str, &str); 3] =
    [("service", "etcdserverpb.KV"), ("method", "Put"), ("code", "OK")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_the_work_clients_do() {
    let m = single().await;
    let before = scrape(&m).await;
    let get = |text: &str, name: &str| sample(text, name, &[]).unwrap_or(0.0);
    let puts_before = sample(&before, "ringkv_grpc_requests_total", &KV_PUT_OK).unwrap_or(0.0);
    let wal_before =
        sample(&before, "ringkv_disk_written_bytes_total", &[("file", "wal")]).unwrap();

    put(&m, "a", "1").await;
    // A future revision: etcd answers OutOfRange.
    let future = m
        .kv()
        .await
        .range(RangeRequest { key: b"a".to_vec(), revision: 1000, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(future.code(), tonic::Code::OutOfRange);
    let mut etcd = m.etcd().await;
    let lease = etcd.lease_grant(60, None).await.unwrap().id();
    let _watch = etcd.watch("a", None).await.unwrap();

    // A call is counted when its response body ends: poll until it is.
    let range = [("method", "Range"), ("code", "OutOfRange")];
    let text = scrape_until(&m, "the put, the failed range and the watcher are counted", |text| {
        sample(text, "ringkv_grpc_requests_total", &KV_PUT_OK) == Some(puts_before + 1.0)
            && sample(text, "ringkv_grpc_requests_total", &range) == Some(1.0)
            && sample(text, "ringkv_watchers", &[]) == Some(1.0)
            // Published by the node thread every STATUS_REFRESH_INTERVAL,
            // which may not have passed since the election.
            && sample(text, "ringkv_shard_is_leader", &[("shard", "1")]) == Some(1.0)
    })
    .await;
    assert!(
        get(&text, "ringkv_proposals_submitted_total")
            >= get(&before, "ringkv_proposals_submitted_total") + 2.0
    );
    assert!(get(&text, "ringkv_proposals_applied_total") >= 2.0, "the put and the lease grant");
    assert_eq!(get(&text, "ringkv_proposals_failed_total"), 0.0);
    assert!(
        sample(&text, "ringkv_disk_written_bytes_total", &[("file", "wal")]).unwrap() > wal_before
    );
    assert_eq!(sample(&text, "ringkv_watch_streams", &[]), Some(1.0));
    let put_latency = [("service", "etcdserverpb.KV"), ("method", "Put")];
    assert!(sample(&text, "ringkv_grpc_request_duration_seconds_count", &put_latency) >= Some(1.0));
    assert_eq!(sample(&text, "ringkv_shard_leader_changes_total", &[("shard", "1")]), Some(1.0));
    assert!(get(&text, "process_resident_memory_bytes") > 0.0);
    let info = [("name", "m0"), ("engine", "raft")];
    assert_eq!(sample(&text, "ringkv_server_info", &info), Some(1.0), "{text}");

    // Sizes and leases are refreshed every few seconds; refresh now.
    let node = m.server().node();
    node.metrics().refresh_slow(&m.dir.path().join("data"), node.store(), &[ShardId(1)]);
    let text = scrape(&m).await;
    assert_eq!(sample(&text, "ringkv_shard_leases", &[("shard", "1")]), Some(1.0));
    assert!(get(&text, "ringkv_disk_data_dir_bytes") > 0.0);
    etcd.lease_revoke(lease).await.unwrap();
    node.metrics().refresh_slow(&m.dir.path().join("data"), node.store(), &[ShardId(1)]);
    let text = scrape(&m).await;
    assert_eq!(sample(&text, "ringkv_shard_leases", &[("shard", "1")]), Some(0.0));
}

async fn cluster_json(member: &Member) -> Value {
    let answer = http(&member.endpoint, "GET", "/dashboard/api/cluster", "").await;
    assert_eq!(answer.status, 200);
    answer.json()
}

fn reachable(view: &Value) -> usize {
    view["nodes"].as_array().unwrap().iter().filter(|n| n["reachable"] == true).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_gathers_every_member_and_follows_a_failover() {
    let mut members = cluster_with(3, &[]).await;
    let leader = wait_leader(&members).await;
    put(&members[leader], "k", "v").await;
    let asker = (leader + 1) % 3;

    let page = http(&members[asker].endpoint, "GET", "/dashboard", "").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'self'"));
    assert!(String::from_utf8(page.body).unwrap().contains("/dashboard/app.js"));
    for asset in ["/dashboard/app.js", "/dashboard/style.css"] {
        assert_eq!(http(&members[asker].endpoint, "GET", asset, "").await.status, 200, "{asset}");
    }

    let view = cluster_until(&members[asker], "every member reports the same leader", |view| {
        let leaders: Vec<&Value> = view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["view"]["shards"].get(0).map(|s| &s["leader"]))
            .collect();
        reachable(view) == 3 && leaders.len() == 3 && leaders.iter().all(|l| *l == leaders[0])
    })
    .await;
    let leader_id = format!("{:016x}", members[leader].server().member_id().0);
    assert_eq!(view["shard_count"], 1);
    let names: Vec<&str> =
        view["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["m0", "m1", "m2"]);
    for node in view["nodes"].as_array().unwrap() {
        let shard = &node["view"]["shards"][0];
        assert_eq!(shard["leader"], leader_id.as_str());
        assert_eq!(shard["voters"].as_array().unwrap().len(), 3);
        assert_eq!(shard["keyspace"], serde_json::json!([0.0, 1.0]));
        let role = if node["id"] == leader_id.as_str() { "leader" } else { "follower" };
        assert_eq!(shard["role"], role);
        assert_eq!(node["view"]["healthy"], true);
    }
    let elected = |view: &Value, leader: &str| {
        view["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "leader_elected" && e["leader"] == leader && e["shard"] == 1)
    };
    assert!(elected(&view, &leader_id), "{}", view["events"]);

    // Peers talk: the leader's transport sent and received frames.
    let text = scrape(&members[leader]).await;
    assert!(sample(&text, "ringkv_peer_sent_frames_total", &[]).unwrap() > 0.0);
    assert!(sample(&text, "ringkv_peer_received_frames_total", &[]).unwrap() > 0.0);
    let regular = [("lane", "regular")];
    assert!(sample(&text, "ringkv_peer_send_duration_seconds_count", &regular) > Some(0.0));
    let follower_id = format!("{:016x}", members[asker].server().member_id().0);
    let link = [("peer", follower_id.as_str()), ("lane", "regular")];
    assert_eq!(sample(&text, "ringkv_peer_connected", &link), Some(1.0), "{text}");
    assert!(
        sample(&text, "ringkv_peer_connections_total", &[("direction", "outbound")]) >= Some(1.0)
    );

    // The leader stops: the others elect another, the view shows the old
    // one unreachable and the change in its events.
    members[leader].stop().await;
    let view = cluster_until(&members[asker], "a new leader, the old one unreachable", |view| {
        let new_leader = &view["nodes"][asker]["view"]["shards"][0]["leader"];
        reachable(view) == 2 && new_leader.is_string() && *new_leader != leader_id.as_str()
    })
    .await;
    let gone =
        view["nodes"].as_array().unwrap().iter().find(|n| n["id"] == leader_id.as_str()).unwrap();
    assert_eq!(gone["reachable"], false);
    assert!(gone["error"].as_str().unwrap().contains("cannot reach"), "{gone}");
    let new_leader = view["nodes"][asker]["view"]["shards"][0]["leader"].as_str().unwrap();
    assert!(elected(&view, new_leader), "{}", view["events"]);
    let text = scrape(&members[asker]).await;
    assert!(sample(&text, "ringkv_shard_leader_changes_total", &[("shard", "1")]) >= Some(2.0));

    // Writes go on through the new leader; its Put counter shows them.
    let i = (0..3)
        .find(|&i| {
            format!("{:016x}", members[i].server.as_ref().map_or(0, |s| s.member_id().0))
                == new_leader
        })
        .unwrap();
    let mut kv = members[i].kv().await;
    kv.put(PutRequest { key: b"after".to_vec(), value: b"1".to_vec(), ..Default::default() })
        .await
        .unwrap();
    scrape_until(&members[i], "the new leader counts the put", |text| {
        sample(text, "ringkv_grpc_requests_total", &KV_PUT_OK) >= Some(1.0)
    })
    .await;
}
