//! The etcdctl battery: Debian's `etcdctl` (3.4) against a three-member
//! ringkv cluster, once with each consensus engine (`--engine=raft`,
//! `--engine=paxos`: every step must pass the same), one step per etcdctl
//! feature, each checking what etcdctl printed (parsed from `-w json` where
//! that says more), not only its exit status. The steps share one cluster and run in order; each uses its own
//! keys. `make-mirror` copies into a second, single-member cluster.
//!
//! Covered: put/get (prefix, from-key, limit, sort, rev, keys-only,
//! count-only through gRPC since etcdctl 3.4 has no flag for it,
//! serializable), del (prefix, prev-kv), txn (stdin: compares, success and
//! failure branches), compaction, watch (prefix, rev, prev-kv, compacted
//! start, interactive `progress`), lease grant / keep-alive --once /
//! timetolive --keys / list / revoke / expiry, member list / update / add
//! --learner / promote / remove with a real fourth process, endpoint status / health /
//! hashkv, alarm list, defrag, snapshot save, move-leader, lock, elect,
//! make-mirror.
//!
//! Known gaps, checked so that a change shows up: `snapshot status`
//! cannot read ringkv's snapshot format (it is not etcd's bbolt file; the
//! snapshot step asserts etcdctl's "invalid database"), and etcdctl
//! commands that dial each member by its advertised URL (`endpoint status
//! --cluster`, and `endpoint` or `move-leader` given `http://` endpoints)
//! fail: grpc-go 1.26 sends the whole URL as HTTP/2 `:authority`, which the
//! `h2` crate refuses with `PROTOCOL_ERROR` (the ignored test below). The
//! battery gives those commands `host:port` endpoints.
//!
//! Needs `etcdctl` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "a test")]

mod support;

use std::time::{Duration, Instant};

use ringkv_api::etcdserverpb::RangeRequest;
use ringkv_api::etcdserverpb::kv_client::KvClient;
use serde_json::Value;
use support::{
    Background, ProcessCluster, b64_str, ctl, ctl_json, etcdctl, etcdctl_stdin, promote, wait_until,
};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(30);

/// The battery's cluster and what the steps need to reach it.
struct Battery {
    cluster: ProcessCluster,
    /// Every member's `host:port`, comma-separated (see [`Battery::addr`]).
    all: String,
    /// `--engine=...`: every cluster the battery starts runs the same engine.
    flag: String,
}

impl Battery {
    /// Member `i`'s client URL.
    fn url(&self, i: usize) -> String {
        self.cluster.members[i].client_url()
    }

    /// Member `i`'s `host:port`: what commands that dial each endpoint on
    /// its own (`endpoint`, `move-leader`) need, see the module docs.
    fn addr(&self, i: usize) -> String {
        self.cluster.members[i].client_addr().to_string()
    }

    /// The current leader's index.
    fn leader(&self) -> usize {
        self.cluster.wait_leader(WAIT).unwrap()
    }

    /// A member that is not the leader.
    fn follower(&self) -> usize {
        (self.leader() + 1) % 3
    }
}

/// One step of the battery: checks one etcdctl feature on the shared cluster.
type Step = fn(&Battery);

#[test]
fn etcdctl_battery_raft() {
    etcdctl_battery("raft");
}

#[test]
fn etcdctl_battery_paxos() {
    etcdctl_battery("paxos");
}

/// Every step, in order, on a three-member cluster running `engine`.
fn etcdctl_battery(engine: &str) {
    let started = Instant::now();
    let flag = format!("--engine={engine}");
    let cluster = ProcessCluster::start_with(3, &[&flag]).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    for i in 0..3 {
        assert!(
            cluster.runs_engine(i, engine),
            "member {i} is not on {engine}:\n{}",
            cluster.log(i)
        );
    }
    let all = (0..3).map(|i| cluster.members[i].client_addr().to_string()).collect::<Vec<_>>();
    let b = Battery { cluster, all: all.join(","), flag };
    let steps: &[(&str, Step)] = &[
        ("put/get", put_get),
        ("del", del),
        ("txn", txn),
        ("compaction", compaction),
        ("watch", watch),
        ("watch -i", watch_interactive),
        ("lease", lease),
        ("endpoint", endpoint),
        ("alarm/defrag", alarm_defrag),
        ("snapshot", snapshot),
        ("move-leader", move_leader),
        ("lock", lock),
        ("elect", elect),
        ("make-mirror", make_mirror),
    ];
    for (name, step) in steps {
        let at = Instant::now();
        step(&b);
        println!("{engine}: step {name}: ok in {:?}", at.elapsed());
    }
    // Membership last: it adds and removes a member.
    let mut b = b;
    let at = Instant::now();
    member(&mut b);
    println!("{engine}: step member: ok in {:?}", at.elapsed());
    println!("{engine}: battery done in {:?}", started.elapsed());
}

/// The header revision of a `-w json` answer.
fn revision(json: &Value) -> i64 {
    json["header"]["revision"].as_i64().unwrap()
}

/// `(key, value)` pairs of a `get -w json` answer.
fn kvs(json: &Value) -> Vec<(String, String)> {
    json["kvs"]
        .as_array()
        .map(|kvs| kvs.iter().map(|kv| (b64_str(&kv["key"]), b64_str(&kv["value"]))).collect())
        .unwrap_or_default()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn put_get(b: &Battery) {
    let leader = b.url(b.leader());
    let follower = b.url(b.follower());
    for (k, v) in [("kv/a", "1"), ("kv/b", "2"), ("kv/c", "3"), ("kv/d", "4"), ("kv/e", "5")] {
        assert_eq!(ctl(&follower, &["put", k, v]), "OK\n");
    }
    // Some key sorts after the prefix, so `--prefix` must stop.
    assert_eq!(ctl(&leader, &["put", "kw", "after"]), "OK\n");

    let all = ctl_json(&follower, &["get", "kv/", "--prefix"]);
    assert_eq!(
        kvs(&all),
        pairs(&[("kv/a", "1"), ("kv/b", "2"), ("kv/c", "3"), ("kv/d", "4"), ("kv/e", "5")])
    );
    assert_eq!(all["count"], 5);
    let kv_a = &all["kvs"][0];
    assert_eq!(kv_a["version"], 1);
    assert_eq!(kv_a["create_revision"], kv_a["mod_revision"]);
    assert_eq!(revision(&all), 7, "six puts on a fresh cluster: revision 1 + 6");

    // The simple format: key, value, one per line.
    assert_eq!(ctl(&leader, &["get", "kv/b"]), "kv/b\n2\n");
    assert_eq!(ctl(&leader, &["get", "kv/b", "--print-value-only"]), "2\n");
    assert_eq!(
        ctl(&leader, &["get", "kv/", "--prefix", "--keys-only", "--limit=2"]),
        "kv/a\n\nkv/b\n\n"
    );
    // A range [kv/b, kv/d).
    assert_eq!(
        kvs(&ctl_json(&leader, &["get", "kv/b", "kv/d"])),
        pairs(&[("kv/b", "2"), ("kv/c", "3")])
    );

    // --limit: `count` still counts the whole range, `more` says so.
    let limited = ctl_json(&leader, &["get", "kv/", "--prefix", "--limit=2"]);
    assert_eq!(kvs(&limited), pairs(&[("kv/a", "1"), ("kv/b", "2")]));
    assert_eq!(limited["count"], 5);
    assert_eq!(limited["more"], true);

    // --from-key: every key from kv/d on, the one after the prefix included.
    let from = ctl_json(&leader, &["get", "kv/d", "--from-key"]);
    assert_eq!(kvs(&from), pairs(&[("kv/d", "4"), ("kv/e", "5"), ("kw", "after")]));

    // --sort-by / --order.
    assert_eq!(
        ctl(&leader, &["get", "kv/", "--prefix", "--sort-by=KEY", "--order=DESCEND", "--limit=2"]),
        "kv/e\n5\nkv/d\n4\n"
    );
    assert_eq!(ctl(&follower, &["put", "kv/a", "9"]), "OK\n");
    let by_mod =
        ctl_json(&leader, &["get", "kv/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"]);
    assert_eq!(kvs(&by_mod)[0], ("kv/a".to_owned(), "9".to_owned()), "kv/a was written last");
    let by_version = ctl_json(
        &leader,
        &["get", "kv/", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--limit=1"],
    );
    assert_eq!(by_version["kvs"][0]["version"], 2);
    let by_value =
        ctl_json(&leader, &["get", "kv/", "--prefix", "--sort-by=VALUE", "--order=ASCEND"]);
    let values: Vec<String> = kvs(&by_value).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["2", "3", "4", "5", "9"]);
    let by_create = ctl_json(
        &leader,
        &["get", "kv/", "--prefix", "--sort-by=CREATE", "--order=DESCEND", "--limit=1"],
    );
    assert_eq!(kvs(&by_create), pairs(&[("kv/e", "5")]), "kv/e was created last");

    // --rev: the store as it was; kv/a was 1 at revision 2.
    assert_eq!(ctl(&leader, &["get", "kv/a", "--rev=2", "--print-value-only"]), "1\n");
    assert_eq!(ctl(&leader, &["get", "kv/e", "--rev=5"]), "", "kv/e did not exist at revision 5");

    // --keys-only: no values in the answer at all.
    let keys_only = ctl_json(&leader, &["get", "kv/", "--prefix", "--keys-only"]);
    assert_eq!(keys_only["kvs"].as_array().unwrap().len(), 5);
    assert!(
        keys_only["kvs"].as_array().unwrap().iter().all(|kv| kv.get("value").is_none()),
        "{keys_only}"
    );

    // count-only: etcdctl 3.4 has no --count-only flag (3.5 added it), so
    // the same RangeRequest goes through gRPC.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let counted = runtime.block_on(async {
        let mut kv = KvClient::connect(follower.clone()).await.unwrap();
        kv.range(RangeRequest {
            key: b"kv/".to_vec(),
            range_end: b"kv0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    });
    assert_eq!((counted.count, counted.kvs.len()), (5, 0));

    // --consistency=s: answered by each member from its own store, which
    // has every write once it caught up.
    for i in 0..3 {
        let url = b.url(i);
        let caught_up = wait_until(WAIT, || {
            etcdctl(&url, &["get", "kv/a", "--consistency=s", "--print-value-only"]).stdout == "9\n"
        });
        assert!(caught_up, "member {i} never served kv/a = 9 serializably");
        let s = ctl_json(&url, &["get", "kv/", "--prefix", "--consistency=s"]);
        assert_eq!(s["count"], 5);
        assert_eq!(s["header"]["member_id"], member_id(b, i), "answered by the member asked");
    }
}

/// Member `i`'s id, from its own status.
fn member_id(b: &Battery, i: usize) -> Value {
    ctl_json(&b.addr(i), &["endpoint", "status"])[0]["Status"]["header"]["member_id"].clone()
}

fn del(b: &Battery) {
    let url = b.url(b.follower());
    for k in ["a", "b", "c"] {
        ctl(&url, &["put", &format!("del/{k}"), &format!("v{k}")]);
    }
    ctl(&url, &["put", "dem", "outside the prefix"]);
    // --prev-kv: the count, then the deleted pair.
    assert_eq!(ctl(&url, &["del", "del/a", "--prev-kv"]), "1\ndel/a\nva\n");
    assert_eq!(ctl(&url, &["del", "del/a"]), "0\n", "already gone");
    let deleted = ctl_json(&url, &["del", "del/", "--prefix", "--prev-kv"]);
    assert_eq!(deleted["deleted"], 2);
    let prev: Vec<String> =
        deleted["prev_kvs"].as_array().unwrap().iter().map(|kv| b64_str(&kv["value"])).collect();
    assert_eq!(prev, ["vb", "vc"]);
    assert_eq!(ctl(&url, &["get", "del/", "--prefix"]), "");
    assert_eq!(ctl(&url, &["get", "dem", "--print-value-only"]), "outside the prefix\n");
}

fn txn(b: &Battery) {
    let url = b.url(b.follower());
    ctl(&url, &["put", "txn/k", "v1"]);
    // etcdctl's non-interactive txn reads compares, a blank line, success
    // operations, a blank line, failure operations, a blank line.
    let script = "value(\"txn/k\") = \"v1\"\nversion(\"txn/k\") = \"1\"\n\n\
                  put txn/k v2\nput txn/branch success\n\n\
                  put txn/branch failure\n\n";
    let out = etcdctl_stdin(&url, &["txn"], script);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "SUCCESS\n\nOK\n\nOK\n");
    assert_eq!(ctl(&url, &["get", "txn/branch", "--print-value-only"]), "success\n");

    // The same compares fail now (value v2, version 2): the failure
    // branch runs, with a get whose answer etcdctl prints.
    let script = "value(\"txn/k\") = \"v1\"\n\nput txn/branch success-again\n\n\
                  put txn/branch failure\nget txn/k\n\n";
    let out = etcdctl_stdin(&url, &["txn", "-w", "json"], script);
    assert!(out.ok, "{}", out.stderr);
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(json.get("succeeded").is_none_or(|s| s == false), "{json}");
    let responses = json["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 2);
    let got = &responses[1]["Response"]["ResponseRange"]["kvs"][0];
    assert_eq!(b64_str(&got["value"]), "v2");
    assert_eq!(ctl(&url, &["get", "txn/branch", "--print-value-only"]), "failure\n");

    // mod / create revision compares: `create("txn/absent") = "0"` holds
    // for a key that does not exist.
    let k = ctl_json(&url, &["get", "txn/k"]);
    let mod_rev = k["kvs"][0]["mod_revision"].as_i64().unwrap();
    let script = format!(
        "mod(\"txn/k\") = \"{mod_rev}\"\ncreate(\"txn/absent\") = \"0\"\n\n\
         del txn/k\nput txn/absent here\n\nput txn/branch wrong\n\n"
    );
    let out = etcdctl_stdin(&url, &["txn"], &script);
    assert_eq!(out.stdout, "SUCCESS\n\n1\n\nOK\n", "{}", out.stderr);
    // Two puts of one key in a branch: etcd's refusal.
    let out = etcdctl_stdin(&url, &["txn"], "\nput txn/dup 1\nput txn/dup 2\n\n\n");
    assert!(!out.ok);
    assert!(
        out.stderr.contains("Error: etcdserver: duplicate key given in txn request"),
        "{}",
        out.stderr
    );
    assert_eq!(
        ctl(&url, &["get", "txn/", "--prefix", "--keys-only"]),
        "txn/absent\n\ntxn/branch\n\n"
    );
}

fn compaction(b: &Battery) {
    let url = b.url(b.follower());
    let revs: Vec<i64> = (1..=3)
        .map(|n| {
            ctl(&url, &["put", "cmp/k", &format!("v{n}")]);
            revision(&ctl_json(&url, &["get", "cmp/k"]))
        })
        .collect();
    let compact_at = revs[1].to_string();
    assert_eq!(
        ctl(&url, &["compaction", &compact_at]),
        format!("compacted revision {compact_at}\n")
    );
    // Below the compaction: etcd's error, on every member.
    for i in 0..3 {
        let old = etcdctl(&b.url(i), &["get", "cmp/k", &format!("--rev={}", revs[0])]);
        assert!(!old.ok);
        assert!(
            old.stderr.contains("Error: etcdserver: mvcc: required revision has been compacted"),
            "member {i}: {}",
            old.stderr
        );
    }
    // At the compaction revision: still readable.
    assert_eq!(
        ctl(&url, &["get", "cmp/k", &format!("--rev={compact_at}"), "--print-value-only"]),
        "v2\n"
    );
    // Past the head: a future revision.
    let future = etcdctl(&url, &["get", "cmp/k", &format!("--rev={}", revs[2] + 1000)]);
    assert!(
        future.stderr.contains("Error: etcdserver: mvcc: required revision is a future revision"),
        "{}",
        future.stderr
    );
    // Compacting again at or below it is refused.
    let again = etcdctl(&url, &["compaction", &revs[0].to_string()]);
    assert!(
        again.stderr.contains("mvcc: required revision has been compacted"),
        "{}",
        again.stderr
    );
    // A watch from a compacted revision is canceled with the reason.
    let mut watch = Background::etcdctl(&url, &["watch", "cmp/k", &format!("--rev={}", revs[0])]);
    let status = watch.wait_exit(WAIT).expect("a watch on a compacted revision ends");
    assert!(!status.success());
    assert!(
        watch.stderr().starts_with(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n"
        ),
        "{}",
        watch.stderr()
    );
}

fn watch(b: &Battery) {
    let url = b.url(b.follower());
    let start = revision(&ctl_json(&url, &["get", "w/"])) + 1;
    // A live watcher, started before the writes, and one replaying them
    // from a revision afterwards: both must print the same.
    let live = Background::etcdctl(
        &url,
        &["watch", "w/", "--prefix", "--prev-kv", &format!("--rev={start}")],
    );
    ctl(&url, &["put", "w/1", "a"]);
    ctl(&url, &["put", "w/1", "b"]);
    ctl(&url, &["put", "wx", "outside the prefix"]);
    ctl(&url, &["put", "w/2", "c"]);
    ctl(&url, &["del", "w/1"]);
    // Each event: type, then the previous pair if any, then the pair (a
    // deleted key has an empty value).
    let expected = "PUT\nw/1\na\n\
                    PUT\nw/1\na\nw/1\nb\n\
                    PUT\nw/2\nc\n\
                    DELETE\nw/1\nb\nw/1\n\n";
    assert!(live.wait_for(WAIT, |out| out.len() >= expected.len()), "{}", live.stdout());
    let replay = Background::etcdctl(
        &b.url(b.leader()),
        &["watch", "w/", "--prefix", "--prev-kv", &format!("--rev={start}")],
    );
    assert!(replay.wait_for(WAIT, |out| out.len() >= expected.len()), "{}", replay.stdout());
    // Anything extra (a duplicate) would arrive with the same flush.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(live.stdout(), expected);
    assert_eq!(replay.stdout(), expected);

    // Without --prev-kv, a single key, from the second write on.
    let one = Background::etcdctl(&url, &["watch", "w/1", &format!("--rev={}", start + 1)]);
    let expected = "PUT\nw/1\nb\nDELETE\nw/1\n\n";
    assert!(one.wait_for(WAIT, |out| out.len() >= expected.len()), "{}", one.stdout());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(one.stdout(), expected);
}

fn watch_interactive(b: &Battery) {
    let url = b.url(b.follower());
    let mut w = Background::etcdctl(&url, &["watch", "-i"]);
    w.send("watch iw/ --prefix");
    // Progress is answered once every watcher on the stream is synced, with
    // the member's current revision: ask until the watch exists.
    let head = revision(&ctl_json(&url, &["get", "iw/"]));
    let first = format!("progress notify: {head}\n");
    let answered = wait_until(WAIT, || {
        w.send("progress");
        std::thread::sleep(Duration::from_millis(100));
        w.stdout().contains(&first)
    });
    assert!(answered, "no progress notification: {}\n{}", w.stdout(), w.stderr());
    let put = ctl_json(&url, &["put", "iw/x", "1"]);
    let at = revision(&put);
    assert!(w.wait_for(WAIT, |out| out.contains("PUT\niw/x\n1\n")), "{}", w.stdout());
    w.send("progress");
    let second = format!("progress notify: {at}\n");
    assert!(w.wait_for(WAIT, |out| out.contains(&second)), "{}", w.stdout());
    let out = w.stdout();
    let tail = &out[out.find("PUT").unwrap()..];
    assert!(tail.starts_with("PUT\niw/x\n1\n"), "{out}");
    assert!(
        tail.ends_with(&second),
        "no event after the put, then progress at its revision: {out}"
    );
}

fn lease(b: &Battery) {
    let url = b.url(b.follower());
    let granted = ctl_json(&url, &["lease", "grant", "600"]);
    assert_eq!(granted["TTL"], 600);
    // etcdctl prints lease ids as 16 hex digits, member ids without padding.
    let id = format!("{:016x}", granted["ID"].as_i64().unwrap());
    assert_eq!(ctl(&url, &["put", "lease/k", "v", &format!("--lease={id}")]), "OK\n");
    assert_eq!(
        ctl_json(&url, &["get", "lease/k"])["kvs"][0]["lease"].as_i64(),
        granted["ID"].as_i64()
    );

    let ttl = ctl_json(&url, &["lease", "timetolive", &id, "--keys"]);
    assert_eq!(ttl["granted-ttl"], 600);
    let left = ttl["ttl"].as_i64().unwrap();
    assert!((1..=600).contains(&left), "{ttl}");
    let keys: Vec<String> = ttl["keys"].as_array().unwrap().iter().map(b64_str).collect();
    assert_eq!(keys, ["lease/k"]);
    let simple = ctl(&url, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        simple.starts_with(&format!("lease {id} granted with TTL(600s), remaining(")),
        "{simple}"
    );
    assert!(simple.ends_with("attached keys([lease/k])\n"), "{simple}");

    assert_eq!(
        ctl(&url, &["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(600)\n")
    );
    // Through the leader too (the keep-alive stream is forwarded otherwise).
    assert_eq!(
        ctl(&b.url(b.leader()), &["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(600)\n")
    );

    let other = ctl_json(&url, &["lease", "grant", "600"]);
    let other_id = format!("{:016x}", other["ID"].as_i64().unwrap());
    let list = ctl(&url, &["lease", "list"]);
    let mut listed: Vec<&str> = list.lines().skip(1).collect();
    listed.sort_unstable();
    let mut expected = vec![id.as_str(), other_id.as_str()];
    expected.sort_unstable();
    assert_eq!(list.lines().next(), Some("found 2 leases"), "{list}");
    assert_eq!(listed, expected);

    assert_eq!(ctl(&url, &["lease", "revoke", &id]), format!("lease {id} revoked\n"));
    assert_eq!(ctl(&url, &["get", "lease/k"]), "", "revoking deletes the attached keys");
    assert_eq!(ctl(&url, &["lease", "timetolive", &id]), format!("lease {id} already expired\n"));
    let gone = etcdctl(&url, &["lease", "revoke", &id]);
    assert!(gone.stderr.contains("etcdserver: requested lease not found"), "{}", gone.stderr);
    let gone = etcdctl(&url, &["lease", "keep-alive", "--once", &id]);
    assert!(gone.stderr.contains("etcdserver: requested lease not found"), "{}", gone.stderr);
    assert_eq!(ctl(&url, &["lease", "list"]), format!("found 1 leases\n{other_id}\n"));

    // Expiry, driven by the leader: a short lease takes its key with it.
    let short = ctl_json(&url, &["lease", "grant", "1"]);
    let short_id = format!("{:016x}", short["ID"].as_i64().unwrap());
    ctl(&url, &["put", "lease/short", "v", &format!("--lease={short_id}")]);
    let expired = wait_until(WAIT, || ctl(&url, &["get", "lease/short"]).is_empty());
    assert!(expired, "the key of an expired lease is still there");
    assert_eq!(
        ctl(&url, &["lease", "timetolive", &short_id]),
        format!("lease {short_id} already expired\n")
    );
}

fn endpoint(b: &Battery) {
    let addrs: Vec<String> = (0..3).map(|i| b.addr(i)).collect();
    let endpoints = addrs.join(",");
    let status = ctl_json(&endpoints, &["endpoint", "status"]);
    let status = status.as_array().unwrap();
    assert_eq!(status.len(), 3);
    let leaders: Vec<u64> =
        status.iter().map(|s| s["Status"]["leader"].as_u64().unwrap()).collect();
    assert!(leaders.iter().all(|l| *l == leaders[0] && *l != 0), "{status:?}");
    let leading: Vec<&Value> = status
        .iter()
        .filter(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leaders[0]))
        .collect();
    assert_eq!(leading.len(), 1, "exactly one member is the leader they all name");
    for (s, addr) in status.iter().zip(&addrs) {
        assert_eq!(s["Endpoint"], addr.as_str());
        let version = s["Status"]["version"].as_str().unwrap();
        assert_eq!(version, "3.5.13");
        assert!(s["Status"]["dbSize"].as_i64().unwrap() > 0);
        assert!(s["Status"]["raftAppliedIndex"].as_u64().unwrap() > 0);
        assert_eq!(s["Status"]["raftTerm"], status[0]["Status"]["raftTerm"]);
    }
    let table = ctl(&endpoints, &["endpoint", "status", "-w", "table"]);
    assert!(
        table.contains("| IS LEADER |") && table.matches("|      true |").count() == 1,
        "{table}"
    );

    let health = ctl_json(&endpoints, &["endpoint", "health"]);
    let health = health.as_array().unwrap();
    assert_eq!(health.len(), 3);
    assert!(health.iter().all(|h| h["health"] == true), "{health:?}");
    // etcdctl 3.4 prints the simple form on stderr.
    let simple = etcdctl(&endpoints, &["endpoint", "health"]);
    assert!(simple.ok, "{}", simple.stderr);
    for addr in &addrs {
        assert!(
            simple.stderr.contains(&format!("{addr} is healthy: successfully committed proposal")),
            "{}",
            simple.stderr
        );
    }

    // hashkv: every member has the same hash at the same revision, once
    // each applied it (serializable reads show their head).
    let url = b.url(0);
    ctl(&url, &["put", "hash/k", "v"]);
    let rev = revision(&ctl_json(&url, &["get", "hash/k"]));
    for i in 0..3 {
        let at = b.url(i);
        let applied = wait_until(WAIT, || {
            revision(&ctl_json(&at, &["get", "hash/k", "--consistency=s"])) >= rev
        });
        assert!(applied, "member {i} never applied revision {rev}");
    }
    let hashes = ctl_json(&endpoints, &["endpoint", "hashkv", &format!("--rev={rev}")]);
    let hashes: Vec<u64> =
        hashes.as_array().unwrap().iter().map(|h| h["HashKV"]["hash"].as_u64().unwrap()).collect();
    assert_eq!(hashes.len(), 3);
    assert!(
        hashes.iter().all(|h| *h == hashes[0] && *h != 0),
        "hashes differ at revision {rev}: {hashes:?}"
    );
    // A write changes the hash at the new head, not at the old revision.
    ctl(&url, &["put", "hash/k", "w"]);
    let again = ctl_json(&b.addr(0), &["endpoint", "hashkv", &format!("--rev={rev}")]);
    assert_eq!(again[0]["HashKV"]["hash"].as_u64(), Some(hashes[0]));
    let head = ctl_json(&b.addr(0), &["endpoint", "hashkv"]);
    assert_ne!(head[0]["HashKV"]["hash"].as_u64(), Some(hashes[0]));
}

fn alarm_defrag(b: &Battery) {
    let url = b.url(0);
    assert_eq!(ctl(&url, &["alarm", "list"]), "", "no alarm on a healthy cluster");
    assert_eq!(ctl(&url, &["alarm", "disarm"]), "", "nothing to disarm");
    let defrag = ctl(&b.addr(1), &["defrag"]);
    assert_eq!(defrag, format!("Finished defragmenting etcd member[{}]\n", b.addr(1)));
}

fn snapshot(b: &Battery) {
    let url = b.url(b.follower());
    ctl(&url, &["put", "snap/marker", "in-the-snapshot"]);
    let path = b.cluster.dir.path().join("battery.snapshot");
    let path_str = path.to_str().unwrap();
    let out = ctl(&url, &["snapshot", "save", path_str]);
    assert_eq!(out, format!("Snapshot saved at {path_str}\n"));
    let bytes = std::fs::read(&path).unwrap();
    // etcd's stream format: the data, then its SHA-256 (what `snapshot
    // restore` checks).
    assert!(bytes.len() > 32);
    let (data, digest) = bytes.split_at(bytes.len() - 32);
    use sha2::Digest as _;
    assert_eq!(sha2::Sha256::digest(data).as_slice(), digest, "the trailer is the data's SHA-256");
    assert!(
        data.windows(b"in-the-snapshot".len()).any(|w| w == b"in-the-snapshot"),
        "the snapshot holds the latest write"
    );
    // ringkv's snapshot is its own format, not etcd's bbolt file: etcdctl
    // 3.4 cannot read it (documented in the module docs).
    let status = etcdctl(&url, &["snapshot", "status", path_str]);
    assert!(!status.ok);
    assert!(status.stderr.contains("Error: invalid database"), "{}", status.stderr);
}

fn move_leader(b: &Battery) {
    let leader = b.leader();
    let target = (leader + 1) % 3;
    let target_id = format!("{:x}", member_id(b, target).as_u64().unwrap());
    let leader_id = format!("{:x}", member_id(b, leader).as_u64().unwrap());
    // etcdctl finds the leader among the endpoints it is given.
    let out = ctl(&b.all, &["move-leader", &target_id]);
    assert_eq!(out, format!("Leadership transferred from {leader_id} to {target_id}\n"));
    assert_eq!(b.leader(), target);
    // A follower's endpoint alone is refused by etcdctl itself.
    let follower = (target + 1) % 3;
    let refused = etcdctl(&b.addr(follower), &["move-leader", &leader_id]);
    assert!(!refused.ok);
    assert!(refused.stderr.contains("no leader endpoint given"), "{}", refused.stderr);
    // Writes go on under the new leader.
    assert_eq!(ctl(&b.url(follower), &["put", "moved", "yes"]), "OK\n");
}

fn lock(b: &Battery) {
    let url = b.url(b.follower());
    // The command runs holding the lock; etcdctl tells it the key.
    let out = ctl(&url, &["lock", "lk", "--", "sh", "-c", "echo \"$ETCD_LOCK_KEY\""]);
    assert!(out.starts_with("lk/") && out.ends_with('\n'), "{out}");
    assert_eq!(ctl(&url, &["get", "lk", "--prefix"]), "", "the lock is released after the command");

    // Mutual exclusion: B asks while A holds it, and runs only after A.
    let file = b.cluster.dir.path().join("lock.order");
    let file = file.to_str().unwrap();
    let holder = format!("echo A1 >> {file}; sleep 1; echo A2 >> {file}");
    let mut a = Background::etcdctl(&url, &["lock", "lk", "--", "sh", "-c", &holder]);
    assert!(wait_until(WAIT, || std::fs::read_to_string(file).is_ok_and(|s| s.contains("A1"))));
    let waiter = format!("echo B1 >> {file}; echo B2 >> {file}");
    let mut bb =
        Background::etcdctl(&b.url(b.leader()), &["lock", "lk", "--", "sh", "-c", &waiter]);
    assert!(a.wait_exit(WAIT).unwrap().success(), "{}", a.stderr());
    assert!(bb.wait_exit(WAIT).unwrap().success(), "{}", bb.stderr());
    assert_eq!(std::fs::read_to_string(file).unwrap(), "A1\nA2\nB1\nB2\n");
    assert_eq!(ctl(&url, &["get", "lk", "--prefix"]), "");
}

fn elect(b: &Battery) {
    let url = b.url(b.follower());
    let alice = Background::etcdctl(&url, &["elect", "el", "alice"]);
    assert!(alice.wait_for(WAIT, |out| out.ends_with("\nalice\n")), "{}", alice.stdout());
    assert!(alice.stdout().starts_with("el/"), "the leader key: {}", alice.stdout());
    let bob = Background::etcdctl(&b.url(b.leader()), &["elect", "el", "bob"]);
    // The observer sees alice lead; bob waits.
    let observer = Background::etcdctl(&url, &["elect", "-l", "el"]);
    assert!(observer.wait_for(WAIT, |out| out.contains("alice\n")), "{}", observer.stdout());
    assert_eq!(bob.stdout(), "", "bob campaigns while alice leads");
    // Both candidates' keys, in creation order (bob's once his campaign
    // reached the server).
    let get_proposals =
        || ctl(&url, &["get", "el", "--prefix", "--sort-by=CREATE", "--print-value-only"]);
    let both = wait_until(WAIT, || get_proposals() == "alice\nbob\n");
    assert!(both, "{}", get_proposals());
    assert_eq!(bob.stdout(), "", "bob campaigns while alice leads");

    // Alice resigns (etcdctl resigns on SIGINT): bob leads, the observer
    // sees him.
    alice.signal("INT");
    assert!(bob.wait_for(WAIT, |out| out.ends_with("\nbob\n")), "{}", bob.stdout());
    assert!(observer.wait_for(WAIT, |out| out.ends_with("bob\n")), "{}", observer.stdout());
    assert_eq!(ctl(&url, &["get", "el", "--prefix", "--print-value-only"]), "bob\n");
    bob.signal("INT");
    assert!(wait_until(WAIT, || ctl(&url, &["get", "el", "--prefix"]).is_empty()));
}

fn make_mirror(b: &Battery) {
    let dest = ProcessCluster::start_with(1, &[&b.flag]).unwrap();
    dest.wait_leader(WAIT).unwrap();
    let dest_url = dest.members[0].client_url();
    let src = b.url(b.follower());
    ctl(&src, &["put", "mir/a", "1"]);
    ctl(&src, &["put", "unmirrored", "x"]);
    let mirror = Background::etcdctl(&src, &["make-mirror", "--prefix=mir/", &dest_url]);
    // The existing keys first, then the changes as they happen.
    let synced =
        wait_until(WAIT, || ctl(&dest_url, &["get", "mir/a", "--print-value-only"]) == "1\n");
    assert!(synced, "make-mirror never copied mir/a: {}", mirror.stderr());
    ctl(&src, &["put", "mir/b", "2"]);
    ctl(&src, &["put", "mir/a", "3"]);
    ctl(&src, &["del", "mir/b"]);
    ctl(&src, &["put", "mir/c", "4"]);
    let expected = pairs(&[("mir/a", "3"), ("mir/c", "4")]);
    let mirrored =
        wait_until(WAIT, || kvs(&ctl_json(&dest_url, &["get", "", "--from-key"])) == expected);
    assert!(
        mirrored,
        "destination: {:?}, mirror: {}",
        kvs(&ctl_json(&dest_url, &["get", "", "--from-key"])),
        mirror.stderr()
    );
}

fn member(b: &mut Battery) {
    let url = b.url(b.follower());
    let list = ctl_json(&url, &["member", "list"]);
    let members = list["members"].as_array().unwrap();
    let mut names: Vec<&str> = members.iter().map(|m| m["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["m0", "m1", "m2"]);
    for m in members {
        let i = b.cluster.members.iter().position(|s| s.name == m["name"]).unwrap();
        assert_eq!(m["peerURLs"][0], b.cluster.members[i].peer_url().as_str());
        assert_eq!(m["clientURLs"][0], b.cluster.members[i].client_url().as_str());
        assert!(m.get("isLearner").is_none_or(|l| l == false));
    }

    // update: a second peer URL, then back to one.
    let m0 = &b.cluster.members[0];
    let m0_id = format!("{:x}", member_id(b, 0).as_u64().unwrap());
    let two = format!("--peer-urls={},http://localhost:{}", m0.peer_url(), m0.peer_port);
    let updated = ctl(&url, &["member", "update", &m0_id, &two]);
    assert!(updated.starts_with(&format!("Member {m0_id:>16} updated in cluster ")), "{updated}");
    let listed = ctl_json(&url, &["member", "list"]);
    let entry = listed["members"].as_array().unwrap().iter().find(|m| m["name"] == "m0").unwrap();
    assert_eq!(entry["peerURLs"].as_array().unwrap().len(), 2, "{listed}");
    ctl(&url, &["member", "update", &m0_id, &format!("--peer-urls={}", m0.peer_url())]);
    // etcd's refusals.
    let unknown = etcdctl(&url, &["member", "remove", "1234"]);
    assert!(unknown.stderr.contains("Error: etcdserver: member not found"), "{}", unknown.stderr);
    let taken = etcdctl(&url, &["member", "add", "dup", &format!("--peer-urls={}", m0.peer_url())]);
    assert!(
        taken.stderr.contains("Error: etcdserver: Peer URLs already exists"),
        "{}",
        taken.stderr
    );

    // add --learner: etcdctl prints the new member's environment.
    let new = b.cluster.reserve("m3");
    let peer = b.cluster.members[new].peer_url();
    let added = ctl(&url, &["member", "add", "m3", "--learner", &format!("--peer-urls={peer}")]);
    let id = added
        .strip_prefix("Member ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{added}"))
        .to_owned();
    let initial = support::initial_cluster(&added);
    assert!(initial.contains(&format!("m3={peer}")), "{initial}");
    assert!(added.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "{added}");
    let listed = ctl(&url, &["member", "list"]);
    assert!(listed.contains(&format!("{id}, unstarted, , {peer}, , true")), "{listed}");

    // The fourth process joins with what etcdctl printed.
    ctl(&url, &["put", "member/before", "1"]);
    b.cluster.join(new, &initial).unwrap();
    let new_url = b.url(new);
    let caught_up = wait_until(WAIT, || {
        etcdctl(&new_url, &["get", "member/before", "--consistency=s", "--print-value-only"]).stdout
            == "1\n"
    });
    assert!(caught_up, "the learner never caught up:\n{}", b.cluster.log(new));
    let new_addr = b.addr(new);
    let status = ctl_json(&new_addr, &["endpoint", "status"]);
    assert_eq!(status[0]["Status"]["isLearner"], true, "{status}");
    let started = wait_until(WAIT, || {
        ctl(&url, &["member", "list"])
            .contains(&format!("{id}, started, m3, {peer}, {new_url}, true"))
    });
    assert!(started, "{}", ctl(&url, &["member", "list"]));

    // promote (retried: the leader refuses until the learner is in sync).
    promote(&url, &id, WAIT).unwrap();
    let listed = ctl(&url, &["member", "list"]);
    assert!(listed.contains(&format!("{id}, started, m3, {peer}, {new_url}, false")), "{listed}");
    assert_eq!(ctl_json(&new_addr, &["endpoint", "status"])[0]["Status"].get("isLearner"), None);
    // A voter now: it serves linearizable reads and writes.
    assert_eq!(ctl(&new_url, &["put", "member/voter", "2"]), "OK\n");
    assert_eq!(ctl(&url, &["get", "member/voter", "--print-value-only"]), "2\n");

    // remove: the member stops serving; the others go on with three.
    let removed = ctl(&url, &["member", "remove", &id]);
    assert!(removed.starts_with(&format!("Member {id:>16} removed from cluster ")), "{removed}");
    let listed = ctl_json(&url, &["member", "list"]);
    assert_eq!(listed["members"].as_array().unwrap().len(), 3);
    let refused = wait_until(WAIT, || {
        let out = etcdctl(&new_url, &["--command-timeout=2s", "get", "member/voter"]);
        !out.ok && out.stderr.contains("etcdserver: server stopped")
    });
    assert!(refused, "the removed member still serves:\n{}", b.cluster.log(new));
    b.cluster.kill(new);
    assert_eq!(ctl(&url, &["put", "member/after", "3"]), "OK\n");
    let leader = b.leader();
    assert_ne!(leader, new, "the removed member does not lead");
}

/// `endpoint status --cluster` dials every member by its advertised client
/// URL; grpc-go 1.26 (etcdctl 3.4) then sends `http://host:port` as the
/// HTTP/2 `:authority`, which the `h2` crate refuses with PROTOCOL_ERROR.
#[test]
#[ignore = "bug: h2 refuses grpc-go 1.26's `:authority` of `http://host:port` (PROTOCOL_ERROR)"]
fn endpoint_status_cluster() {
    let cluster = ProcessCluster::start(1).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let status = ctl_json(&cluster.endpoints(), &["endpoint", "status", "--cluster"]);
    assert_eq!(status.as_array().unwrap().len(), 1, "{status}");
}
