//! `ringkv playground` as a new user runs it: three nodes come up, the
//! printed endpoints serve etcdctl and `ringkv ctl`, and SIGINT stops every
//! child and removes the temporary directory. A node that cannot start
//! fails the playground with its log. Needs `etcdctl` (`scripts/setup`).
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::RINGKV;

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(90);

/// A running `ringkv playground` and the lines it printed so far.
struct Playground {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Playground {
    fn start(args: &[&str], cwd: &std::path::Path) -> Playground {
        let mut child = Command::new(RINGKV)
            .arg("playground")
            .args(["--color", "never"])
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for output in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Playground { child, lines, seen: Vec::new() }
    }

    /// Reads lines until one starts with `prefix`; returns it.
    fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!("no line starting {prefix:?}; output:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits for the process to exit; returns its status and every line.
    fn wait_exit(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "still running:\n{}", self.seen.join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader threads end with the pipes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl runs (scripts/setup installs it)");
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn three_nodes_start_serve_and_stop_on_sigint() {
    let cwd = tempfile::tempdir().unwrap();
    let mut playground = Playground::start(&["--nodes", "3"], cwd.path());
    let up = playground.wait_line("ringkv playground is up");
    assert!(
        up.contains("3 nodes, raft, 8 shards (a key's first 1 '/' segment(s) pick its shard)"),
        "{up}"
    );
    let mut pids = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let line = playground.wait_line(&format!("  {name}  client http://127.0.0.1:"));
        let pid = line.rsplit("pid ").next().unwrap().trim().parse::<i32>().unwrap();
        pids.push(Pid::from_raw(pid));
    }
    let endpoints_line = playground.wait_line("Client endpoints: ");
    let endpoints: Vec<String> =
        endpoints_line["Client endpoints: ".len()..].split(',').map(str::to_owned).collect();
    assert_eq!(endpoints.len(), 3, "{endpoints_line}");
    let all = endpoints.join(",");
    let try_line = playground.wait_line("Try:");
    assert!(try_line.contains(&format!("etcdctl --endpoints={all} put hello world")), "{try_line}");
    let dashboard = playground.wait_line("Dashboard: ");
    assert_eq!(dashboard, format!("Dashboard: {}/dashboard", endpoints[0]));
    let data_line = playground.wait_line("Data: ");
    assert!(data_line.ends_with("(removed at exit)"), "{data_line}");
    let data_dir = PathBuf::from(data_line["Data: ".len()..].trim().split(" (").next().unwrap());
    assert!(data_dir.join("n1").is_dir(), "{}", data_dir.display());
    playground.wait_line("Press Ctrl-C to stop the cluster.");
    let sharded = playground.wait_line("Sharded: ");
    assert!(sharded.contains("--shards 1 is exactly an etcd"), "{sharded}");

    // etcdctl writes through one member and reads through another; our
    // client reads it back through the third.
    assert_eq!(etcdctl(&endpoints[1], &["put", "hello", "world"]), "OK\n");
    assert_eq!(etcdctl(&endpoints[2], &["get", "hello", "--print-value-only"]), "world\n");
    let out = Command::new(RINGKV)
        .args(["ctl", "--endpoints", &endpoints[0], "-w", "json", "get", "hello"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["kvs"][0]["value"], "world");
    // Keys spread over the shards, and etcdctl's lock recipe (a txn on
    // `NAME/<lease>` with a read of the `NAME/` prefix) still works: the
    // playground's first-segment hash key keeps one lock on one shard.
    // (One store would be at revision 8 after these 7 puts; each shard
    // counts only its own.)
    let keys = ["a", "b", "c", "d", "e", "f"];
    for key in keys {
        assert_eq!(etcdctl(&endpoints[0], &["put", key, "v"]), "OK\n");
    }
    let revisions: Vec<i64> = keys
        .iter()
        .map(|key| {
            let out = etcdctl(&endpoints[0], &["get", key, "-w", "json"]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v["header"]["revision"].as_i64().unwrap()
        })
        .collect();
    assert!(
        revisions.iter().all(|&r| r < 8),
        "the keys share one revision sequence: {revisions:?}"
    );
    let locked = etcdctl(&endpoints[1], &["lock", "build", "echo", "held"]);
    assert_eq!(locked, "held\n");

    for &pid in &pids {
        assert_eq!(kill(pid, None), Ok(()), "node pid {pid} runs");
    }
    kill(Pid::from_raw(playground.child.id() as i32), Signal::SIGINT).unwrap();
    let (status, lines) = playground.wait_exit();
    let output = lines.join("\n");
    assert!(status.success(), "{status}:\n{output}");
    assert!(output.contains("Stopping n1, n2, n3..."), "{output}");
    assert!(!output.contains("SIGKILL"), "every node stopped on SIGTERM:\n{output}");
    for name in ["n1", "n2", "n3"] {
        let stopped = lines
            .iter()
            .any(|l| l.starts_with(&format!("{name} │ ")) && l.contains("ringkv member stopped"));
        assert!(stopped, "{name} logged its clean stop:\n{output}");
    }
    for pid in pids {
        assert_eq!(kill(pid, None), Err(Errno::ESRCH), "node pid {pid} is gone");
    }
    assert!(!data_dir.exists(), "{} was removed", data_dir.display());
    assert!(output.contains(&format!("Removed {}", data_dir.display())), "{output}");
}

#[test]
fn a_node_that_cannot_start_fails_the_playground_with_its_log() {
    let data = tempfile::tempdir().unwrap();
    // n2's data directory cannot be created: a file holds its name.
    std::fs::write(data.path().join("n2"), b"not a directory").unwrap();
    let playground = Playground::start(&["--data-dir", data.path().to_str().unwrap()], data.path());
    let (status, lines) = playground.wait_exit();
    let output = lines.join("\n");
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("ringkv playground: node n2 exited during startup (exit status: 1)"),
        "{output}"
    );
    let tail_start = output.find("its last log lines:").unwrap();
    assert!(
        output[tail_start..]
            .contains(&format!("cannot open data directory {}", data.path().join("n2").display())),
        "the report carries n2's own error:\n{output}"
    );
    assert!(output.contains("Stopping n1, n3..."), "the others are stopped:\n{output}");
    assert!(data.path().join("playground.json").is_file(), "a given directory is kept");
    assert!(!output.contains("ringkv playground is up"), "{output}");
}
