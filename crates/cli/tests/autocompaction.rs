//! etcd's auto-compaction through etcdctl: on a one-shard node in both
//! modes, and on a three-process `--shards 8` cluster, where it is the only
//! way to compact (`Compact` by revision is refused there). The revision
//! tests run `--auto-compaction-mode revision --auto-compaction-retention
//! 10`, with the hidden `--auto-compaction-revision-interval` shortening
//! etcd's 5-minute check; the periodic one a 2 s retention.
//!
//! Needs `etcdctl` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used, reason = "a test")]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{ProcessCluster, ctl, ctl_json, etcdctl, wait_until};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(30);

/// Writes of each watched key: well past the retention of 10.
const WRITES: usize = 25;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

const FLAGS: [&str; 3] = [
    "--auto-compaction-mode=revision",
    "--auto-compaction-retention=10",
    "--auto-compaction-revision-interval=200ms",
];

fn header_revision(json: &Value) -> i64 {
    json["header"]["revision"].as_i64().unwrap()
}

/// Puts `key` [`WRITES`] times; returns the revision of its first write
/// and of its last (its shard's revisions).
fn write_history(url: &str, key: &str) -> (i64, i64) {
    let mut revisions = Vec::new();
    for n in 0..WRITES {
        revisions.push(header_revision(&ctl_json(url, &["put", key, &format!("v{n}")])));
    }
    (revisions[0], revisions[WRITES - 1])
}

/// Whether a read of `key` at `rev` fails as compacted.
fn compacted(url: &str, key: &str, rev: i64) -> bool {
    let out = etcdctl(url, &["get", key, &format!("--rev={rev}")]);
    !out.ok && out.stderr.contains(COMPACTED)
}

/// The compacted key's history is gone, but its current value and the
/// last 10 revisions of its shard are still there.
fn assert_compacted_to_retention(url: &str, key: &str, (first, last): (i64, i64)) {
    assert!(
        wait_until(WAIT, || compacted(url, key, first)),
        "{key}: revision {first} was never compacted (its shard is at {last})"
    );
    let value = format!("v{}\n", WRITES - 1);
    assert_eq!(ctl(url, &["get", key, "--print-value-only"]), value);
    // current − 10 is the compaction revision itself: still readable.
    let kept = last - 10;
    assert_eq!(
        ctl(url, &["get", key, &format!("--rev={kept}"), "--print-value-only"]),
        format!("v{}\n", WRITES - 11)
    );
}

#[test]
fn revision_auto_compaction_on_one_shard() {
    let cluster = ProcessCluster::start_with(1, &FLAGS).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let url = cluster.members[0].client_url();
    let history = write_history(&url, "ac/one");
    assert_compacted_to_retention(&url, "ac/one", history);
    assert!(cluster.full_log(0).contains("finished scheduled compaction"), "{}", cluster.log(0));
}

#[test]
fn revision_auto_compaction_per_shard_on_a_sharded_cluster() {
    let shards = "--shards=8";
    let flags = [shards, FLAGS[0], FLAGS[1], FLAGS[2]];
    let cluster = ProcessCluster::start_with(3, &flags).unwrap();
    let leader = cluster.wait_leader(WAIT).unwrap();
    let url = cluster.members[(leader + 1) % 3].client_url();

    // Two keys on two different shards, each with its own history.
    let config =
        ringkv_server::config::parse_from(["ringkv", shards], Vec::<(String, String)>::new())
            .unwrap();
    let keyspace = config.keyspace();
    let first = "ac/a";
    let shard_of = |key: &str| keyspace.shard_of(key.as_bytes()).0;
    let second =
        (0..).map(|i| format!("ac/b{i}")).find(|k| shard_of(k) != shard_of(first)).unwrap();
    let histories = [(first, write_history(&url, first)), (&second, write_history(&url, &second))];
    // Compaction by revision is still refused: the compactor is the way.
    let refused = etcdctl(&url, &["compaction", "2"]);
    assert!(!refused.ok && refused.stderr.contains("refused"), "{}", refused.stderr);
    for (key, history) in histories {
        for i in 0..3 {
            assert_compacted_to_retention(&cluster.members[i].client_url(), key, history);
        }
    }
    let logged = (0..3).any(|i| cluster.full_log(i).contains("finished scheduled compaction"));
    assert!(logged, "no member logged a scheduled compaction");
}

#[test]
fn periodic_auto_compaction_on_one_shard() {
    // Retention 2 s: a sample every 200 ms, compaction every 2 s to the
    // revision seen 2 s before.
    let flags = ["--auto-compaction-mode=periodic", "--auto-compaction-retention=2s"];
    let cluster = ProcessCluster::start_with(1, &flags).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let url = cluster.members[0].client_url();
    let (first, last) = write_history(&url, "ac/periodic");
    assert!(
        wait_until(WAIT, || compacted(&url, "ac/periodic", first)),
        "revision {first} was never compacted (the shard is at {last})"
    );
    let value = format!("v{}\n", WRITES - 1);
    assert_eq!(ctl(&url, &["get", "ac/periodic", "--print-value-only"]), value);
}
