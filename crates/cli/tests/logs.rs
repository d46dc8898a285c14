//! Structured logs: `--log-format json` (or `RINGKV_LOG_FORMAT=json`) makes
//! every log line one JSON object with the event's fields at the top level;
//! the default stays human-readable.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{RINGKV, free_port, wait_until};

/// Bounds the wait for the server's first lines.
const WAIT: Duration = Duration::from_secs(60);

/// Runs a one-node server with `flags` and `env` until it logs that it
/// serves, then stops it with SIGTERM; returns its log lines.
fn server_lines(flags: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let peer = free_port();
    let mut command = Command::new(RINGKV);
    command
        .arg("server")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{}", free_port()))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
        .args(flags)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let serving = wait_until(WAIT, || read().contains("serving clients on"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(serving, "the server never said it serves:\n{}", read());
    assert!(status.success(), "{status}:\n{}", read());
    read().lines().map(str::to_owned).collect()
}

fn assert_json_lines(lines: &[String]) {
    assert!(lines.len() >= 3, "{lines:?}");
    for line in lines {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(event["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&event["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(event["message"].is_string() && event["target"].is_string(), "{line}");
    }
    let serving = lines.iter().find(|l| l.contains("ringkv member serving")).unwrap();
    let serving: Value = serde_json::from_str(serving).unwrap();
    assert_eq!(serving["name"], "default", "fields sit beside the message: {serving}");
    assert_eq!(serving["restart"], false);
}

#[test]
fn json_logs_by_flag_and_by_environment_human_by_default() {
    assert_json_lines(&server_lines(&["--log-format=json"], &[]));
    assert_json_lines(&server_lines(&[], &[("RINGKV_LOG_FORMAT", "json")]));
    let human = server_lines(&[], &[]);
    let serving = human.iter().find(|l| l.contains("ringkv member serving")).unwrap();
    assert!(serde_json::from_str::<Value>(serving).is_err(), "{serving}");
    assert!(serving.contains(" INFO ") && serving.contains("name=default"), "{serving}");
}
