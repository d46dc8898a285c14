//! `etcdctl watch` through the watch relay (issue #7): three `ringkv
//! server` processes with `--shards 8 --debug-relay-watches` (hidden, test
//! only), so that every data shard's watch is served by an etcd `Watch`
//! stream to another member. The members the relay reads from are killed
//! (SIGKILL) one after the other while watches run: each event still
//! arrives exactly once.
//!
//! Needs `etcdctl` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "a test")]

mod support;

use std::time::{Duration, Instant};

use support::{Background, ProcessCluster, ctl_json, etcdctl};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(30);

/// Puts `key` through `url` until a put succeeds (a kill makes shards
/// elect); returns the value that was put, unique per attempt so that an
/// attempt that failed but was applied is told apart.
fn put(url: &str, key: &str, tag: &str) -> String {
    let deadline = Instant::now() + WAIT;
    for attempt in 0.. {
        let value = format!("{tag}{attempt}");
        let out = etcdctl(url, &["put", key, &value]);
        if out.ok {
            return value;
        }
        assert!(Instant::now() < deadline, "put {key} kept failing: {}", out.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!("the loop returns or fails")
}

/// How often `etcdctl watch` printed the put of `key` = `value`.
fn times(out: &str, key: &str, value: &str) -> usize {
    out.matches(&format!("PUT\n{key}\n{value}\n")).count()
}

/// The relay's log lines of the watched member (member 0).
fn relay_log(cluster: &ProcessCluster) -> String {
    let log = cluster.full_log(0);
    log.lines().filter(|l| l.contains("watch relay")).collect::<Vec<_>>().join("\n")
}

/// Waits until `watch` printed every put in `puts`, then checks each came
/// exactly once.
fn expect_once(cluster: &ProcessCluster, watch: &Background, puts: &[(String, String)]) {
    let all = |out: &str| puts.iter().all(|(k, v)| times(out, k, v) >= 1);
    let relay = || relay_log(cluster);
    assert!(watch.wait_for(WAIT, all), "missing events:\n{}\n{}", watch.stdout(), relay());
    let out = watch.stdout();
    for (key, value) in puts {
        assert_eq!(times(&out, key, value), 1, "{key}={value} not once:\n{out}\n{}", relay());
    }
}

/// The watches and what they must have printed.
struct Watches {
    spread: Background,
    one: Background,
    spread_puts: Vec<(String, String)>,
    one_puts: Vec<(String, String)>,
}

impl Watches {
    /// Puts 16 keys under the spread watch's prefix and one under the
    /// one-shard watch's through `url`; checks each watch printed each
    /// put so far exactly once.
    fn round(&mut self, cluster: &ProcessCluster, name: &str, url: &str) {
        for i in 0..16 {
            let key = format!("w/{name}{i}");
            let value = put(url, &key, name);
            self.spread_puts.push((key, value));
        }
        let key = format!("{{u}}/{name}");
        let value = put(url, &key, name);
        self.one_puts.push((key, value));
        expect_once(cluster, &self.spread, &self.spread_puts);
        expect_once(cluster, &self.one, &self.one_puts);
    }
}

#[test]
fn etcdctl_watches_through_the_relay_survive_killed_upstreams() {
    let flags = ["--shards=8", "--debug-relay-watches"];
    let mut cluster = ProcessCluster::start_with(3, &flags).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    let urls = cluster.client_urls();
    let (watched, writer) = (urls[0].clone(), urls[1].clone());

    // History for a one-shard watch from a revision.
    let mut history = Vec::new();
    for i in 0..5 {
        let key = format!("{{u}}/{i}");
        let value = put(&writer, &key, "h");
        history.push((key, value));
    }
    let from = ctl_json(&writer, &["get", "{u}/2"])["kvs"][0]["mod_revision"].as_i64().unwrap();
    let one =
        Background::etcdctl(&watched, &["watch", "{u}/", "--prefix", &format!("--rev={from}")]);
    expect_once(&cluster, &one, &history[2..]);
    assert_eq!(times(&one.stdout(), &history[1].0, &history[1].1), 0, "before --rev");

    let spread = Background::etcdctl(&watched, &["watch", "w/", "--prefix"]);
    // Set up once it hears a put made after it started.
    assert!(
        support::wait_until(WAIT, || {
            put(&writer, "w/ready", "r");
            spread.stdout().contains("PUT\nw/ready\n")
        }),
        "{}",
        spread.stderr()
    );

    let one_puts = history[2..].to_vec();
    let mut watches = Watches { spread, one, spread_puts: Vec::new(), one_puts };
    watches.round(&cluster, "a", &writer);
    // Each watched shard is relayed from member 1 or 2: killing each in
    // turn (the other one running) takes every upstream away once.
    cluster.kill(1);
    watches.round(&cluster, "b", &watched);
    cluster.restart(1).unwrap();
    cluster.wait_leader(WAIT).unwrap();
    cluster.kill(2);
    watches.round(&cluster, "c", &watched);
    // The kills did take the relay's upstreams away (the watched member
    // logs each loss).
    assert!(
        relay_log(&cluster).contains("watch relay lost its upstream"),
        "{}",
        relay_log(&cluster)
    );
}
