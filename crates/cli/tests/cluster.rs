//! Three `ringkv server` processes: etcdctl writes through a follower,
//! the leader is killed with SIGKILL, writes resume under a new leader,
//! and the killed member restarts from its data directory and catches up.
//! Needs `etcdctl` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{ProcessCluster, wait_until};

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
fn kill_the_leader_and_writes_resume() {
    let mut cluster = ProcessCluster::start(3).unwrap();
    let leader = cluster.wait_leader(WAIT).unwrap();
    let follower = (leader + 1) % 3;
    let urls: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    let url = |i: usize| urls[i].clone();

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
}
