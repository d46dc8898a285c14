//! The README's first command: `ringkv` with no arguments in an empty
//! directory, then Debian's `etcdctl` (3.4) with no flags at all.
//!
//! Uses etcd's default ports (2379, 2380), so it is the only test in this
//! binary; it fails with the server's log if they are taken. Needs
//! `etcdctl` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{log_tail, spawn_ringkv, wait_until};

/// How long the server may take to elect itself; generous, the machine is
/// shared (this bounds a hang, it is not a speed check).
const START_WITHIN: Duration = Duration::from_secs(60);

fn etcdctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("etcdctl")
        .args(args)
        .env_remove("ETCDCTL_ENDPOINTS")
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl runs (scripts/setup installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_arguments_serves_etcdctl_with_no_flags() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ringkv.log");
    let mut child = spawn_ringkv(&[], dir.path(), &log).unwrap();
    let ready = wait_until(START_WITHIN, || etcdctl(&["endpoint", "health"]).0);
    if !ready {
        let _ = child.kill();
        panic!("ringkv never became healthy on 127.0.0.1:2379:\n{}", log_tail(&log));
    }

    let (ok, out, err) = etcdctl(&["put", "foo", "bar"]);
    assert!(ok, "put failed: {err}");
    assert_eq!(out, "OK\n");
    let (ok, out, err) = etcdctl(&["get", "foo"]);
    assert!(ok, "get failed: {err}");
    assert_eq!(out, "foo\nbar\n");

    let (ok, out, err) = etcdctl(&["endpoint", "status", "-w", "json"]);
    assert!(ok, "endpoint status failed: {err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let status = &status[0]["Status"];
    assert_eq!(status["version"], "3.5.13");
    let member = status["header"]["member_id"].as_u64().unwrap();
    assert_eq!(status["leader"].as_u64().unwrap(), member, "a single node leads itself");
    assert!(status["header"]["revision"].as_i64().unwrap() >= 2, "the put made a revision");

    let (ok, out, err) = etcdctl(&["member", "list"]);
    assert!(ok, "member list failed: {err}");
    // `<id hex>, started, default, http://127.0.0.1:2380, http://127.0.0.1:2379, false`
    let fields: Vec<&str> = out.trim().split(", ").collect();
    assert_eq!(fields.len(), 6, "{out}");
    assert_eq!(u64::from_str_radix(fields[0], 16).unwrap(), member);
    assert_eq!(
        &fields[1..],
        ["started", "default", "http://127.0.0.1:2380", "http://127.0.0.1:2379", "false"]
    );

    // `snapshot save` accepts the stream (size and SHA-256 trailer as etcd's).
    let snap = dir.path().join("snap.db");
    let (ok, _, err) = etcdctl(&["snapshot", "save", snap.to_str().unwrap()]);
    assert!(ok, "snapshot save failed: {err}");
    assert_eq!(std::fs::metadata(&snap).unwrap().len() % 512, 32);

    // The data went to ./ringkv-data of the working directory.
    assert!(dir.path().join("ringkv-data").is_dir());

    // SIGTERM stops it gracefully.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}:\n{}", log_tail(&log));

    // Started again in the same directory, it recovers its data.
    let mut child = spawn_ringkv(&[], dir.path(), &log).unwrap();
    let ready = wait_until(START_WITHIN, || etcdctl(&["endpoint", "health"]).0);
    let (ok, out, err) = etcdctl(&["get", "foo"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready && ok, "no answer after a restart: {err}\n{}", log_tail(&log));
    assert_eq!(out, "foo\nbar\n");
}

#[test]
fn a_bad_configuration_exits_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(support::RINGKV)
        .args(["server", "--heartbeat-interval=300", "--election-timeout=1000"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--election-timeout (1000 ms) must be at least 5 times --heartbeat-interval"),
        "{err}"
    );
    assert!(!dir.path().join("ringkv-data").exists(), "nothing was started");
}
