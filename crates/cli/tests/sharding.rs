//! A sharded cluster through etcdctl: three `ringkv server` processes with
//! `--shards 64`, once with each consensus engine. Keys spread over the
//! shards; ranges, deletes and watches over a prefix span them (ADR 0002);
//! a txn must keep its keys in one shard (`{tag}` hash keys); leases reach
//! every shard; and the cluster keeps serving once its leader is killed.
//!
//! Needs `etcdctl` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "a test")]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Background, ProcessCluster, b64_str, ctl, ctl_json, etcdctl, etcdctl_stdin};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(30);

/// The cluster's data shards.
const SHARDS: u32 = 64;

/// Keys written over the shards.
const KEYS: usize = 200;

#[test]
fn sharded_cluster_raft() {
    sharded_cluster("raft");
}

#[test]
fn sharded_cluster_paxos() {
    sharded_cluster("paxos");
}

/// The key space the servers run with, to tell which shard a key is on.
fn keyspace_shard_of() -> impl Fn(&str) -> u64 {
    let args = ["ringkv".to_owned(), format!("--shards={SHARDS}")];
    let config = ringkv_server::config::parse_from(args, Vec::<(String, String)>::new()).unwrap();
    let keyspace = config.keyspace();
    move |key: &str| keyspace.shard_of(key.as_bytes()).0
}

fn keys_of(json: &Value) -> Vec<String> {
    json["kvs"]
        .as_array()
        .map_or(Vec::new(), |kvs| kvs.iter().map(|kv| b64_str(&kv["key"])).collect())
}

fn count_of(json: &Value) -> i64 {
    json["count"].as_i64().unwrap_or(0)
}

fn sharded_cluster(engine: &str) {
    let started = Instant::now();
    let shard_of = keyspace_shard_of();
    let engine_flag = format!("--engine={engine}");
    let shards_flag = format!("--shards={SHARDS}");
    let mut cluster = ProcessCluster::start_with(3, &[&engine_flag, &shards_flag]).unwrap();
    let leader = cluster.wait_leader(WAIT).unwrap();
    let url = cluster.members[(leader + 1) % 3].client_url();

    // Keys over many shards, through every member.
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k/{i:03}")).collect();
    let shards: BTreeSet<u64> = keys.iter().map(|k| shard_of(k)).collect();
    assert!(shards.len() > SHARDS as usize / 2, "{KEYS} keys hash onto {} shards", shards.len());
    for (i, key) in keys.iter().enumerate() {
        let member = cluster.members[i % 3].client_url();
        ctl(&member, &["put", key, &format!("v{i}")]);
    }

    // A prefix over every shard: all keys, in order, with the count.
    let got = ctl_json(&url, &["get", "k/", "--prefix"]);
    assert_eq!(keys_of(&got), keys);
    assert_eq!(count_of(&got), KEYS as i64);
    assert!(got.get("more").is_none_or(|m| m == false), "{got}");
    // A limit applies to the merged keys: the first ten, and more.
    let got = ctl_json(&url, &["get", "k/", "--prefix", "--limit=10"]);
    assert_eq!(keys_of(&got), keys[..10]);
    assert_eq!(got["more"], true, "{got}");
    assert_eq!(count_of(&got), KEYS as i64);
    // The JSON gateway serves the same merge.
    let addr = cluster.members[(leader + 1) % 3].client_addr();
    // `k/` to `k0`, base64.
    let raw =
        support::http_post(addr, "/v3/kv/range", r#"{"key":"ay8=","range_end":"azA=","limit":3}"#);
    let body: Value = serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(keys_of(&body), keys[..3], "{raw}");
    assert_eq!(body["count"], KEYS.to_string(), "{raw}");
    assert_eq!(body["more"], true, "{raw}");
    // Descending across shards.
    let got =
        ctl_json(&url, &["get", "k/", "--prefix", "--sort-by=KEY", "--order=DESCEND", "--limit=5"]);
    let last: Vec<String> = keys.iter().rev().take(5).cloned().collect();
    assert_eq!(keys_of(&got), last);
    // Serializable ranges read each shard's part locally, and a single key
    // from its own shard.
    let got = ctl_json(&url, &["get", "k/", "--prefix", "--consistency=s", "--keys-only"]);
    assert_eq!(keys_of(&got), keys);
    for (i, key) in keys.iter().enumerate().filter(|(_, k)| shard_of(k) != 1).take(5) {
        let value = ctl(&url, &["get", key, "--consistency=s", "--print-value-only"]);
        assert_eq!(value, format!("v{i}\n"), "{key} on shard {}", shard_of(key));
    }

    // A txn over keys of two shards is refused, naming them.
    let other = keys.iter().find(|k| shard_of(k) != shard_of(&keys[0])).unwrap();
    let script = format!("value(\"{}\") = \"v0\"\n\nput {other} changed\n\n\n", keys[0]);
    let out = etcdctl_stdin(&url, &["txn"], &script);
    assert!(!out.ok, "{out:?}");
    assert!(out.stderr.contains("txn spans shards"), "{}", out.stderr);
    assert!(out.stderr.contains("{tag}"), "{}", out.stderr);
    // One hash tag keeps a txn's keys in one shard.
    let script = "create(\"{user1}/a\") = \"0\"\n\nput {user1}/a 1\nput {user1}/b 2\n\n\n";
    let out = etcdctl_stdin(&url, &["txn"], script);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "SUCCESS\n\nOK\n\nOK\n");
    assert_eq!(ctl(&url, &["get", "{user1}/b", "--print-value-only"]), "2\n");
    // A watch in one shard starts from that shard's revisions, as in etcd.
    let from = ctl_json(&url, &["get", "{user1}/a"])["kvs"][0]["mod_revision"].as_i64().unwrap();
    let history =
        Background::etcdctl(&url, &["watch", "{user1}/", "--prefix", &format!("--rev={from}")]);
    let both = |out: &str| out.contains("{user1}/a\n1") && out.contains("{user1}/b\n2");
    assert!(history.wait_for(WAIT, both), "{}{}", history.stdout(), history.stderr());
    drop(history);

    // etcd's lock recipe (a txn over the lock's key and its prefix) keeps
    // to one shard when the lock's name is a hash tag; any other name
    // spans shards and is refused.
    let out = etcdctl(&url, &["lock", "{job}", "echo", "held"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "held\n");
    let out = etcdctl(&url, &["lock", "job", "echo", "held"]);
    assert!(!out.ok && out.stderr.contains("txn spans shards"), "{out:?}");

    // A prefix watch hears puts on several shards.
    let watch = Background::etcdctl(&url, &["watch", "w/", "--prefix"]);
    // The watch is set up once it hears a put made after it started.
    assert!(
        support::wait_until(WAIT, || {
            ctl(&url, &["put", "w/ready", "x"]);
            watch.stdout().contains("w/ready")
        }),
        "{}",
        watch.stderr()
    );
    let watched: Vec<String> = (0..20).map(|i| format!("w/{i}")).collect();
    assert!(watched.iter().map(|k| shard_of(k)).collect::<BTreeSet<_>>().len() > 1);
    for key in &watched {
        ctl(&url, &["put", key, "seen"]);
    }
    assert!(
        watch.wait_for(WAIT, |out| watched.iter().all(|k| out.contains(&format!("{k}\nseen")))),
        "{}",
        watch.stdout()
    );
    drop(watch);

    // A lease reaches every shard: revoking it deletes its keys on each.
    let lease = ctl(&url, &["lease", "grant", "60"]);
    let id = lease.split_whitespace().nth(1).unwrap().to_owned();
    let leased: Vec<String> = (0..20).map(|i| format!("l/{i}")).collect();
    assert!(leased.iter().map(|k| shard_of(k)).collect::<BTreeSet<_>>().len() > 1);
    for key in &leased {
        ctl(&url, &["put", key, "v", &format!("--lease={id}")]);
    }
    assert_eq!(count_of(&ctl_json(&url, &["get", "l/", "--prefix", "--keys-only"])), 20);
    ctl(&url, &["lease", "revoke", &id]);
    assert_eq!(count_of(&ctl_json(&url, &["get", "l/", "--prefix", "--keys-only"])), 0);

    // A revision names one shard's history: no compaction by revision.
    let out = etcdctl(&url, &["compact", "2"]);
    assert!(!out.ok && out.stderr.contains("compaction by revision is refused"), "{out:?}");

    // A prefix delete over every shard.
    assert_eq!(ctl(&url, &["del", "k/", "--prefix"]), format!("{KEYS}\n"));
    assert_eq!(count_of(&ctl_json(&url, &["get", "k/", "--prefix", "--keys-only"])), 0);

    // The leader dies; the others elect and serve every shard.
    cluster.kill(leader);
    cluster.wait_leader(WAIT).unwrap();
    let alive: Vec<String> =
        (0..3).filter(|&i| i != leader).map(|i| cluster.members[i].client_url()).collect();
    let after: Vec<String> = (0..30).map(|i| format!("after/{i}")).collect();
    for key in &after {
        let out = support::wait_until(WAIT, || etcdctl(&alive[0], &["put", key, "v"]).ok);
        assert!(out, "put {key} after the leader died");
    }
    let got = ctl_json(&alive[1], &["get", "after/", "--prefix", "--keys-only"]);
    let mut sorted = after.clone();
    sorted.sort();
    assert_eq!(keys_of(&got), sorted);
    println!("{engine}: sharded cluster done in {:?}", started.elapsed());
}
