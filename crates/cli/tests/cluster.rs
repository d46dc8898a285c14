//! Three `ringkv server` processes, with each engine: etcdctl writes
//! through a follower while a watcher follows the key, the leader is killed
//! with SIGKILL, writes resume under a new leader, the killed member
//! restarts from its data directory and catches up, and the watcher saw
//! every write exactly once, in order.
//! Needs `etcdctl` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{ProcessCluster, strip_ansi, wait_until};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(60);

fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("etcdctl")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl runs (scripts/setup installs it)");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn raft_kill_the_leader_and_writes_resume() {
    kill_the_leader_and_writes_resume("raft");
}

#[test]
fn paxos_kill_the_leader_and_writes_resume() {
    kill_the_leader_and_writes_resume("paxos");
}

fn kill_the_leader_and_writes_resume(engine: &str) {
    let mut cluster = ProcessCluster::start_with(3, &[&format!("--engine={engine}")]).unwrap();
    let leader = cluster.wait_leader(WAIT).unwrap();
    let follower = (leader + 1) % 3;
    let urls: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    let url = |i: usize| urls[i].clone();

    let log = strip_ansi(&cluster.log(leader));
    assert!(log.contains(&format!("consensus engine engine={engine}")), "{log}");
    let watcher = Watcher::start(&url(follower), "k");
    assert_eq!(etcdctl(&url(follower), &["put", "k", "before"]).unwrap(), "OK\n");
    let list = etcdctl(&url(leader), &["member", "list"]).unwrap();
    assert_eq!(list.lines().count(), 3, "{list}");

    cluster.kill(leader);
    let new_leader = cluster.wait_leader(WAIT).unwrap();
    assert_ne!(new_leader, leader);
    let survivor = (0..3).find(|&i| i != leader).unwrap();
    assert_eq!(etcdctl(&url(survivor), &["put", "k", "after"]).unwrap(), "OK\n");

    cluster.restart(leader).unwrap();
    let caught_up = wait_until(WAIT, || {
        etcdctl(&url(leader), &["get", "k", "--consistency=s", "--print-value-only"]).as_deref()
            == Ok("after\n")
    });
    assert!(caught_up, "the restarted member never caught up:\n{}", cluster.log(leader));

    // The watcher's member was never killed (it may have become leader).
    let expected = "PUT\nk\nbefore\nPUT\nk\nafter\n";
    let seen = watcher.wait_for(expected);
    assert_eq!(
        seen,
        expected,
        "the watcher missed, repeated or reordered events; it said: {}",
        watcher.errors.lock().unwrap()
    );
}

/// `etcdctl watch KEY --rev=1` in the background, its output collected.
struct Watcher {
    child: std::process::Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    /// Its stderr (why it stopped, if it did).
    errors: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Watcher {
    fn start(endpoint: &str, key: &str) -> Watcher {
        let mut child = Command::new("etcdctl")
            .arg(format!("--endpoints={endpoint}"))
            .args(["watch", key, "--rev=1"])
            .env("ETCDCTL_API", "3")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("etcdctl runs (scripts/setup installs it)");
        let output = collect(child.stdout.take().unwrap());
        let errors = collect(child.stderr.take().unwrap());
        Watcher { child, output, errors }
    }

    /// What the watcher printed once it printed at least `expected`'s
    /// length (or the wait ran out).
    fn wait_for(&self, expected: &str) -> String {
        wait_until(WAIT, || self.output.lock().unwrap().len() >= expected.len());
        // Anything extra (a duplicate) arrives with the same flush.
        std::thread::sleep(Duration::from_millis(200));
        self.output.lock().unwrap().clone()
    }
}

/// What `from` yields, collected by a thread as it comes.
fn collect(
    mut from: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<String>> {
    let sink = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let to = std::sync::Arc::clone(&sink);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            to.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    sink
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
