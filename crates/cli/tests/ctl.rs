//! `ringkv ctl` against real clusters: three `ringkv server` processes for
//! status, shards, keys and membership, and three with `--shards 4` for
//! the per-shard rows and counts (and, with `--replicas 2`, the targets
//! the metadata leader records); a snapshot saved from one cluster
//! and restored into another; the KV commands against Debian's etcd 3.4.
//! Every output is read as `-w json` and checked. Needs `etcd` and
//! `etcdctl` on `PATH` (`scripts/setup` installs them).
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{ProcessCluster, RINGKV, free_port, log_tail, spawn_ringkv, wait_until};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(60);

/// Runs `ringkv ctl --endpoints=E ARGS`; stdout on success, stderr on failure.
fn ctl(endpoints: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(RINGKV)
        .args(["ctl", "--endpoints", endpoints])
        .args(args)
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `ringkv ctl -w json ARGS`, parsed.
fn ctl_json(endpoints: &str, args: &[&str]) -> Value {
    let mut all = vec!["-w", "json"];
    all.extend_from_slice(args);
    let out = ctl(endpoints, &all).unwrap_or_else(|e| panic!("ctl {args:?} failed: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?} printed {out:?}: {e}"))
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        list.as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

#[test]
fn status_shards_keys_and_membership_on_three_processes() {
    let cluster = ProcessCluster::start(3).unwrap();
    let leader = cluster.wait_leader(WAIT).unwrap();
    let leader_name = cluster.members[leader].name.clone();
    let all: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    let all = all.join(",");
    // One endpoint is enough: the member list names the others.
    let one = cluster.members[(leader + 1) % 3].client_url();

    // A member's role is published every round, the shards it holds and
    // leads every `STATUS_REFRESH_INTERVAL` (50 ms): right after the
    // election the two can disagree for a refresh (seen under a loaded CI
    // run: the leader's row said 0 shards led).
    let mut status = Value::Null;
    let settled = wait_until(WAIT, || {
        status = ctl_json(&one, &["status"]);
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["role"] == "leader" && m["shards_led"] == 1)
    });
    assert!(settled, "no member reported leading the shard: {status}");
    let members = status["members"].as_array().unwrap();
    assert_eq!(names(&status["members"]), ["m0", "m1", "m2"]);
    for m in members {
        assert_eq!(m["health"], "healthy", "{m}");
        assert!(m["raft_term"].as_u64().unwrap() >= 1, "{m}");
        assert!(m["raft_applied_index"].as_u64().unwrap() >= 1, "{m}");
        assert!(m["db_size_bytes"].as_i64().unwrap() > 0, "{m}");
        assert_eq!(m["version"], "3.5.13");
        assert_eq!(m["shards_held"], 1);
        assert_eq!(m["leader"], status["leader"], "every member names the same leader");
    }
    let leaders: Vec<&Value> = members.iter().filter(|m| m["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "{status}");
    assert_eq!(leaders[0]["name"], leader_name.as_str());
    assert_eq!(leaders[0]["shards_led"], 1);
    assert_eq!(leaders[0]["id"], status["leader"]);

    let table = ctl(&one, &["status"]).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("NAME  ID  "), "{table}");
    assert!(lines[0].contains("HEALTH") && lines[0].contains("SHARDS HELD/LED"), "{table}");
    let leader_row = lines.iter().find(|l| l.starts_with(&leader_name)).unwrap();
    assert!(leader_row.contains(" healthy ") && leader_row.contains(" leader "), "{table}");

    let shards = ctl_json(&all, &["shards"]);
    let shard = &shards["shards"][0];
    assert_eq!(shards["shards"].as_array().unwrap().len(), 1, "{shards}");
    assert_eq!(shard["id"], 1);
    assert_eq!(shard["replicas"], serde_json::json!(["m0", "m1", "m2"]));
    assert_eq!(shard["leader"], leader_name.as_str());
    assert!(shard["term"].as_u64().unwrap() >= 1 && shard["size_bytes"].as_i64().unwrap() > 0);

    // Keys, through every endpoint (the first answers).
    let put = ctl_json(&all, &["put", "greeting", "hello"]);
    let put_revision = put["header"]["revision"].as_i64().unwrap();
    assert!(put_revision >= 2, "{put}");
    assert_eq!(ctl(&all, &["put", "greeting/2", "hi"]).unwrap(), "OK\n");
    let got = ctl_json(&one, &["get", "greeting"]);
    assert_eq!(got["count"], 1);
    assert_eq!(got["kvs"][0]["key"], "greeting");
    assert_eq!(got["kvs"][0]["value"], "hello");
    assert_eq!(got["kvs"][0]["mod_revision"], put_revision);
    assert_eq!(
        ctl(&one, &["get", "greeting", "--prefix"]).unwrap(),
        "greeting\nhello\ngreeting/2\nhi\n"
    );
    let deleted = ctl_json(&one, &["del", "greeting", "--prefix", "--prev-kv"]);
    assert_eq!(deleted["deleted"], 2);
    assert_eq!(deleted["prev_kvs"][1]["value"], "hi");
    assert_eq!(ctl_json(&one, &["get", "greeting", "--prefix"])["count"], 0);

    // Watch: either it works, or the refusal says why (this server may not
    // serve watches yet).
    let mut watch = Command::new(RINGKV)
        .args(["ctl", "--endpoints", &one, "-w", "json", "watch", "w", "--max-events", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let served = wait_until(WAIT, || {
        ctl(&one, &["put", "w", "x"]).unwrap();
        watch.try_wait().unwrap().is_some()
    });
    assert!(served, "watch neither printed an event nor failed");
    let out = watch.wait_with_output().unwrap();
    if out.status.success() {
        let event: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(event["type"], "PUT", "{event}");
        assert_eq!(event["key"], "w", "{event}");
        assert_eq!(event["kv"]["value"], "x", "{event}");
    } else {
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(
            error.contains("does not serve Watch.Watch (gRPC status UNIMPLEMENTED)"),
            "{error}"
        );
    }

    // A fourth member: added, started with the settings ctl printed, healthy.
    let peer_port = free_port();
    let client_port = free_port();
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let added = ctl_json(&one, &["node", "add", "m3", "--peer-urls", &peer_url]);
    assert_eq!(added["member"]["peer_urls"], serde_json::json!([peer_url]));
    assert_eq!(added["members"].as_array().unwrap().len(), 4);
    let listed = ctl_json(&one, &["node", "list"]);
    assert_eq!(listed["members"].as_array().unwrap().len(), 4);
    let initial_cluster = added["initial_cluster"].as_str().unwrap();
    assert!(initial_cluster.contains(&format!("m3={peer_url}")), "{initial_cluster}");
    let m3_dir = cluster.dir.path().join("m3");
    let m3_log = cluster.dir.path().join("m3.log");
    let _m3 = KillOnDrop(
        spawn_ringkv(
            &[
                "server".into(),
                "--name=m3".into(),
                format!("--data-dir={}", m3_dir.display()),
                format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-cluster={initial_cluster}"),
                "--initial-cluster-state=existing".into(),
                format!("--initial-cluster-token={}", cluster.token),
                format!("--heartbeat-interval={}", support::TEST_HEARTBEAT_MS),
                format!("--election-timeout={}", support::TEST_ELECTION_MS),
            ],
            cluster.dir.path(),
            &m3_log,
        )
        .unwrap(),
    );
    let joined = wait_until(WAIT, || {
        let status = ctl_json(&one, &["status"]);
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "m3" && m["health"] == "healthy")
    });
    assert!(joined, "m3 never became healthy:\n{}", log_tail(&m3_log));

    // Decommission the leader: leadership moves first, then it is removed
    // (no drain: without placement moves every member holds every shard).
    let gone = ctl_json(&one, &["node", "decommission", &leader_name]);
    assert_eq!(gone["removed"]["name"], leader_name.as_str());
    assert!(gone["drain"].is_null(), "{gone}");
    let successor = gone["leadership_moved_to"].as_str().unwrap().to_owned();
    assert_ne!(successor, leader_name);
    let status = ctl_json(&one, &["status"]);
    let left = names(&status["members"]);
    assert_eq!(left.len(), 3, "{status}");
    assert!(!left.contains(&leader_name), "{status}");
    let new_leader = status["members"].as_array().unwrap().iter().find(|m| m["role"] == "leader");
    assert!(new_leader.is_some_and(|m| m["name"] != leader_name.as_str()), "{status}");

    // Remove m3 by its id.
    let m3_id = added["member"]["id"].as_str().unwrap();
    let removed = ctl_json(&one, &["node", "remove", m3_id]);
    assert_eq!(removed["removed"]["name"], "m3");
    let listed = ctl_json(&one, &["node", "list"]);
    assert_eq!(listed["members"].as_array().unwrap().len(), 2, "{listed}");
    let unknown = ctl(&one, &["node", "remove", "m9"]).unwrap_err();
    assert!(unknown.contains("no member named or numbered \"m9\""), "{unknown}");
}

/// A process killed (and reaped) when the test ends, even by a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Data shards of the sharded cluster `ctl shards` and `ctl status` are
/// checked on.
const DATA_SHARDS: u64 = 4;

/// Every shard of a cluster: the metadata shard 0 and the data shards.
const ALL_SHARDS: u64 = DATA_SHARDS + 1;

#[test]
fn shards_and_status_show_every_shard_of_a_sharded_cluster() {
    let shards_flag = format!("--shards={DATA_SHARDS}");
    let mut cluster = ProcessCluster::start_with(3, &[&shards_flag]).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let one = cluster.members[0].client_url();

    // Shard leaders are elected one by one, and then balanced over the
    // members: wait until every shard shows its leader's own view.
    let mut shards = Value::Null;
    let all_led = wait_until(WAIT, || {
        shards = ctl_json(&one, &["shards"]);
        shards["shards"].as_array().unwrap().iter().all(|s| {
            s["leader"].is_string() && s["view_of"] == s["leader"] && s["leader_reachable"] == true
        })
    });
    assert!(all_led, "not every shard got a leader: {shards}");
    let rows = shards["shards"].as_array().unwrap();
    let ids: Vec<u64> = rows.iter().map(|s| s["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (0..ALL_SHARDS).collect::<Vec<_>>(), "{shards}");
    for row in rows {
        assert_eq!(row["metadata"], row["id"] == 0, "{row}");
        assert_eq!(row["replicas"], serde_json::json!(["m0", "m1", "m2"]), "{row}");
        assert_eq!(row["learners"], serde_json::json!([]), "{row}");
        // Three members, three replicas: every member holds every shard,
        // no target is recorded.
        assert_eq!(row["target"], serde_json::json!([]), "{row}");
        assert_eq!(row["moving"], false, "{row}");
        assert_eq!(row["leader_reachable"], true, "{row}");
        assert_eq!(row["view_of"], row["leader"], "the leader's own view is shown: {row}");
        assert!(row["term"].as_u64().unwrap() >= 1, "{row}");
        assert!(row["applied_index"].as_u64().unwrap() >= 1, "{row}");
    }
    let table = ctl(&one, &["shards"]).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + ALL_SHARDS as usize, "{table}");
    assert!(lines[1].starts_with("0 (meta) "), "{table}");

    // Each member counts the shards it leads by its own view, asked at
    // slightly different moments: a leadership moving between two asks
    // can be counted twice or not at all, so wait for a settled count.
    let mut status = Value::Null;
    let led = |status: &Value| -> u64 {
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["shards_led"].as_u64().unwrap())
            .sum()
    };
    let settled = wait_until(WAIT, || {
        status = ctl_json(&one, &["status"]);
        led(&status) == ALL_SHARDS
    });
    assert!(settled, "every shard is led by exactly one member: {status}");
    for m in status["members"].as_array().unwrap() {
        assert_eq!(m["shards_held"], ALL_SHARDS, "{m}");
    }

    // A member that is down: its shards show what the others see, and
    // neither command fails.
    cluster.kill(2);
    let shards = ctl_json(&one, &["shards"]);
    assert_eq!(shards["shards"].as_array().unwrap().len(), ALL_SHARDS as usize, "{shards}");
    assert_eq!(shards["unreachable"], serde_json::json!(["m2"]), "{shards}");
    let status = ctl_json(&one, &["status"]);
    let down = status["members"].as_array().unwrap().iter().find(|m| m["name"] == "m2").unwrap();
    assert_eq!(down["health"], "unreachable", "{status}");
    assert!(down["shards_held"].is_null(), "{status}");
    let table = ctl(&one, &["shards"]).unwrap();
    assert!(table.contains("m2: unreachable"), "{table}");
}

/// Three members and `--replicas 2`: the metadata leader records a target
/// of two members for every data shard (none for the metadata shard,
/// which stays on every member), and `ctl shards` shows it. With
/// placement moves off replicas do not move, so every data shard still
/// has three and shows as moving.
#[test]
fn shards_shows_each_data_shards_target_beyond_the_replication_factor() {
    let shards_flag = format!("--shards={DATA_SHARDS}");
    let flags = [shards_flag.as_str(), "--replicas=2", "--placement-moves=false"];
    let cluster = ProcessCluster::start_with(3, &flags).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let one = cluster.members[0].client_url();
    let mut shards = Value::Null;
    let recorded = wait_until(WAIT, || {
        shards = ctl_json(&one, &["shards"]);
        let rows = shards["shards"].as_array().unwrap();
        rows.len() == ALL_SHARDS as usize
            && rows.iter().all(|s| {
                let targets = s["target"].as_array().unwrap().len();
                if s["metadata"] == true { targets == 0 } else { targets == 2 }
            })
    });
    assert!(recorded, "targets not recorded: {shards}");
    let mut used = std::collections::BTreeSet::new();
    for row in shards["shards"].as_array().unwrap() {
        let members = serde_json::json!(["m0", "m1", "m2"]);
        assert_eq!(row["replicas"], members, "{row}");
        let target: Vec<&str> =
            row["target"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert!(target.windows(2).all(|w| w[0] != w[1]), "{row}");
        assert!(target.iter().all(|t| ["m0", "m1", "m2"].contains(t)), "{row}");
        assert_eq!(row["moving"], row["metadata"] == false, "{row}");
        used.extend(target);
    }
    assert!(used.len() >= 2, "{shards}");
    let table = ctl(&one, &["shards"]).unwrap();
    assert!(table.lines().next().unwrap().contains("TARGET"), "{table}");
    assert!(table.contains("(pending)"), "{table}");
}

#[test]
fn a_snapshot_is_saved_checked_and_restored_into_another_cluster() {
    let source = ProcessCluster::start(3).unwrap();
    let leader = source.wait_leader(WAIT).unwrap();
    let from = source.members[leader].client_url();
    for i in 0..50 {
        ctl(&from, &["put", &format!("key/{i:02}"), &format!("value {i}")]).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    let file_arg = file.to_str().unwrap();
    // The first endpoint is down: the next one serves the snapshot.
    let endpoints = format!("127.0.0.1:{},{from}", free_port());
    let saved = ctl_json(&endpoints, &["snapshot", "save", file_arg]);
    assert_eq!(saved["endpoint"], from.as_str());
    let size = std::fs::metadata(&file).unwrap().len();
    assert_eq!(saved["size_bytes"], size);
    assert_eq!(saved["sha256"].as_str().unwrap().len(), 64);
    assert!(saved["revision"].as_i64().unwrap() >= 51, "{saved}");
    assert!(!dir.path().join("backup.db.part").exists());
    assert_eq!((size - 32) % 512, 0, "etcd's layout: 512-byte blocks, then the SHA-256");

    let status = ctl_json("unused:1", &["snapshot", "status", file_arg]);
    assert_eq!(status["keys"], 50);
    assert_eq!(status["revision"], saved["revision"]);
    assert_eq!(status["sha256"], saved["sha256"]);

    // A damaged copy is refused before anything is read from it.
    let damaged = dir.path().join("damaged.db");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    let error = ctl("unused:1", &["snapshot", "status", damaged.to_str().unwrap()]).unwrap_err();
    assert!(error.contains("is damaged: its SHA-256 is"), "{error}");

    let target = ProcessCluster::start(1).unwrap();
    target.wait_leader(WAIT).unwrap();
    let to = target.members[0].client_url();
    let restored = ctl_json(&to, &["snapshot", "restore", file_arg]);
    assert_eq!(restored["keys"], 50);
    let got = ctl_json(&to, &["get", "key/", "--prefix"]);
    assert_eq!(got["count"], 50);
    assert_eq!(got["kvs"][7]["key"], "key/07");
    assert_eq!(got["kvs"][7]["value"], "value 7");
    let again = ctl(&to, &["snapshot", "restore", file_arg]).unwrap_err();
    assert!(again.contains("already holds 50 key(s)"), "{again}");
}

/// An etcd 3.4 server on free loopback ports, killed when dropped.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new("etcd")
            .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd is not installed: run scripts/setup (Debian's etcd-server package)");
        Etcd { child, url, _dir: dir }
    }

    fn log(&self) -> String {
        log_tail(&self._dir.path().join("etcd.log"))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_kv_commands_work_against_etcd() {
    let etcd = Etcd::start();
    let url = etcd.url.clone();
    let up = wait_until(WAIT, || ctl(&url, &["get", "x"]).is_ok());
    assert!(up, "etcd never served:\n{}", etcd.log());

    let put = ctl_json(&url, &["put", "k", "v1"]);
    assert!(put["header"]["revision"].as_i64().unwrap() >= 2, "{put}");
    let put = ctl_json(&url, &["put", "k", "v2", "--prev-kv"]);
    assert_eq!(put["prev_kv"]["value"], "v1");
    let got = ctl_json(&url, &["get", "k"]);
    assert_eq!(got["kvs"][0]["value"], "v2");
    assert_eq!(got["kvs"][0]["version"], 2);

    // A watch started now sees the next change.
    let mut watch = Command::new(RINGKV)
        .args(["ctl", "--endpoints", &url, "-w", "json", "watch", "k", "--max-events", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut events = BufReader::new(watch.stdout.take().unwrap()).lines();
    let seen = wait_until(WAIT, || {
        ctl(&url, &["put", "k", "v3"]).unwrap();
        watch.try_wait().unwrap().is_some()
    });
    assert!(seen, "the watch saw no change");
    let event: Value = serde_json::from_str(&events.next().unwrap().unwrap()).unwrap();
    assert_eq!(event["type"], "PUT");
    assert_eq!(event["kv"]["value"], "v3");

    let deleted = ctl_json(&url, &["del", "k"]);
    assert_eq!(deleted["deleted"], 1);
    assert_eq!(ctl_json(&url, &["get", "k"])["count"], 0);
    assert_eq!(ctl(&url, &["get", "k"]).unwrap(), "", "etcdctl prints nothing for no key");

    // A snapshot from etcd saves and checks, but is not ours to read.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd.db");
    ctl_json(&url, &["snapshot", "save", file.to_str().unwrap()]);
    let error = ctl("unused:1", &["snapshot", "status", file.to_str().unwrap()]).unwrap_err();
    assert!(error.contains("is not a ringkv snapshot"), "{error}");
    assert!(Path::new(&file).is_file());
}

#[test]
fn an_unreachable_endpoint_is_named_in_the_error() {
    let port = free_port();
    let error =
        ctl(&format!("127.0.0.1:{port}"), &["--dial-timeout", "1s", "get", "k"]).unwrap_err();
    assert!(error.starts_with("ringkv ctl: no endpoint answered KV.Range: "), "{error}");
    assert!(error.contains(&format!("cannot connect to http://127.0.0.1:{port}")), "{error}");
}
