//! The `ringkv server` processes of a run: start, kill, pause, restart.
//!
//! Each node has a directory `<out>/nodes/n<i>/` with its data directory
//! (`data/`), its log (`log`, appended across restarts) and, when the clock
//! nemesis is on, the offset file libfaketime reads (`faketime`). In the
//! namespace layout a node runs as `ip netns exec <ns> ringkv server …`
//! (`ip` executes the binary in place, so the child's pid is the node's).
//!
//! Every process is SIGKILLed and reaped when the [`Cluster`] drops: a
//! failure or a panic of the harness leaves no node behind.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::ChaosError;
use crate::net::NodeAddr;
use crate::sys::{self, Signal};

/// Lines of a node's log quoted in an error.
pub const LOG_TAIL_LINES: usize = 30;

/// Where Debian's `libfaketime` package puts the preload library.
pub const LIBFAKETIME_PATH: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// How often (seconds) libfaketime re-reads a node's offset file: the
/// clock nemesis's jumps land within this long.
pub const FAKETIME_CACHE_SECONDS: u32 = 1;

/// The consensus engine the cluster is created with (`--engine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Raft (the default).
    Raft,
    /// Multi-Paxos.
    Paxos,
}

impl Engine {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Raft => "raft",
            Engine::Paxos => "paxos",
        }
    }
}

/// How the nodes are configured.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `ringkv` binary.
    pub binary: PathBuf,
    /// The run's output directory; nodes live under `nodes/`.
    pub dir: PathBuf,
    /// The nodes' addresses.
    pub addrs: Vec<NodeAddr>,
    /// `--engine`.
    pub engine: Engine,
    /// `--heartbeat-interval` in ms; `None` keeps the binary's default.
    pub heartbeat_ms: Option<u64>,
    /// `--election-timeout` in ms; `None` keeps the binary's default.
    pub election_ms: Option<u64>,
    /// `--snapshot-count`; `None` keeps the binary's default.
    pub snapshot_count: Option<u64>,
    /// `--shards`: data shards of the cluster (1 is not passed, so a
    /// binary without sharding runs too).
    pub shards: u32,
    /// `--hash-key-segments` (0, the whole key, is not passed).
    pub hash_key_segments: u32,
    /// `--placement-moves` (passed on sharded clusters, so that a binary
    /// without it runs unsharded): data shards move to the members
    /// placement targets, so with more members than replicas each member
    /// holds some shards only.
    pub placement_moves: bool,
    /// `--down-timeout` when placement moves are on; `None` keeps the
    /// binary's default.
    pub down_timeout: Option<std::time::Duration>,
    /// Whether and how nodes run under libfaketime, so the clock nemesis
    /// can move their clocks.
    pub faketime: FakeClock,
    /// `--initial-cluster-token`: unique per run.
    pub token: String,
}

/// One node's process state.
#[derive(Debug)]
struct Node {
    child: Option<Child>,
    paused: bool,
    /// Sent SIGTERM by the harness and not yet reaped: its exit is not a crash.
    terminating: bool,
    /// `Some` once the node has been removed and is to join again as a new
    /// member: the `--initial-cluster` it joins with.
    join: Option<String>,
    /// Whether it is a member (a removed node is not, until re-added).
    member: bool,
    /// Its data directory (`nodes/n<i>/data`, or inside its own tmpfs).
    data_dir: PathBuf,
}

/// The `ringkv server` processes of a run.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    nodes: Vec<Node>,
}

impl Cluster {
    /// A cluster of stopped nodes; [`Cluster::start`] starts each.
    ///
    /// # Errors
    /// [`ChaosError::Io`] when a node directory cannot be made.
    pub fn new(spec: ClusterSpec) -> Result<Cluster, ChaosError> {
        for i in 0..spec.addrs.len() {
            let dir = node_dir(&spec.dir, i);
            std::fs::create_dir_all(dir.join("data")).map_err(ChaosError::io("creating", &dir))?;
            if spec.faketime != FakeClock::Off {
                write_clock_offset(&spec.dir, i, 0)?;
            }
        }
        let nodes = (0..spec.addrs.len())
            .map(|i| Node {
                child: None,
                paused: false,
                terminating: false,
                join: None,
                member: true,
                data_dir: node_dir(&spec.dir, i).join("data"),
            })
            .collect();
        Ok(Cluster { spec, nodes })
    }

    /// The spec.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Number of nodes (members or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.clone()
    }

    /// Moves node `i`'s data directory (before it first starts: the disk
    /// nemesis puts it on a small filesystem of its own).
    ///
    /// # Errors
    /// [`ChaosError::Io`] when it cannot be made.
    pub fn set_data_dir(&mut self, i: usize, dir: PathBuf) -> Result<(), ChaosError> {
        std::fs::create_dir_all(&dir).map_err(ChaosError::io("creating", &dir))?;
        self.nodes[i].data_dir = dir;
        Ok(())
    }

    /// Node `i`'s log file.
    pub fn log_path(&self, i: usize) -> PathBuf {
        node_dir(&self.spec.dir, i).join("log")
    }

    /// The last lines of node `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        log_tail(&self.log_path(i))
    }

    fn initial_cluster(&self) -> String {
        self.spec
            .addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={}", node_name(i), a.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server flags of node `i`.
    pub fn args(&self, i: usize) -> Vec<String> {
        let a = &self.spec.addrs[i];
        let mut args = vec![
            "server".to_owned(),
            format!("--name={}", node_name(i)),
            format!("--data-dir={}", self.data_dir(i).display()),
            format!("--listen-client-urls={}", a.client_url()),
            format!("--advertise-client-urls={}", a.client_url()),
            format!("--listen-peer-urls={}", a.peer_url()),
            format!("--initial-advertise-peer-urls={}", a.peer_url()),
            format!("--initial-cluster-token={}", self.spec.token),
            format!("--engine={}", self.spec.engine.as_str()),
        ];
        match &self.nodes[i].join {
            Some(initial) => {
                args.push(format!("--initial-cluster={initial}"));
                args.push("--initial-cluster-state=existing".to_owned());
            }
            None => {
                args.push(format!("--initial-cluster={}", self.initial_cluster()));
                args.push("--initial-cluster-state=new".to_owned());
            }
        }
        if let Some(ms) = self.spec.heartbeat_ms {
            args.push(format!("--heartbeat-interval={ms}"));
        }
        if let Some(ms) = self.spec.election_ms {
            args.push(format!("--election-timeout={ms}"));
        }
        if let Some(n) = self.spec.snapshot_count {
            args.push(format!("--snapshot-count={n}"));
        }
        // Every node of a cluster must agree on both: each is passed to all.
        if self.spec.shards != 1 {
            args.push(format!("--shards={}", self.spec.shards));
        }
        if self.spec.hash_key_segments != 0 {
            args.push(format!("--hash-key-segments={}", self.spec.hash_key_segments));
        }
        if self.spec.shards > 1 {
            args.push(format!("--placement-moves={}", self.spec.placement_moves));
        }
        if self.spec.placement_moves
            && let Some(d) = self.spec.down_timeout
        {
            args.push(format!("--down-timeout={}ms", d.as_millis()));
        }
        args
    }

    /// Starts node `i` on its data directory (founding, restarting or
    /// joining, as its state says). A running node is left alone.
    ///
    /// # Errors
    /// [`ChaosError::StartNode`] or [`ChaosError::Io`].
    pub fn start(&mut self, i: usize) -> Result<(), ChaosError> {
        if self.nodes[i].child.is_some() {
            return Ok(());
        }
        let log_path = self.log_path(i);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(ChaosError::io("opening", &log_path))?;
        let err = log.try_clone().map_err(ChaosError::io("opening", &log_path))?;
        let mut cmd = match &self.spec.addrs[i].netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.spec.binary);
                c
            }
            None => Command::new(&self.spec.binary),
        };
        cmd.args(self.args(i)).env_remove("RUST_LOG").stdin(Stdio::null()).stdout(log).stderr(err);
        if self.spec.faketime != FakeClock::Off {
            cmd.env("LD_PRELOAD", LIBFAKETIME_PATH)
                .env("FAKETIME_TIMESTAMP_FILE", clock_offset_path(&self.spec.dir, i))
                .env("FAKETIME_CACHE_DURATION", FAKETIME_CACHE_SECONDS.to_string());
            if !fakes_monotonic(self.spec.faketime, i) {
                cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
        }
        let child = cmd.spawn().map_err(|source| ChaosError::StartNode {
            node: i,
            binary: self.spec.binary.clone(),
            source,
        })?;
        tracing::debug!(node = i, pid = child.id(), "started");
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
        self.nodes[i].terminating = false;
        Ok(())
    }

    /// SIGKILLs node `i` and reaps it (a paused node dies too).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            sys::signal(child.id(), Signal::Kill);
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
        self.nodes[i].terminating = false;
    }

    /// SIGTERMs node `i`: a graceful stop, which [`Cluster::reap_terminated`]
    /// collects (the crash watcher leaves it alone). A paused node is
    /// resumed first, or it could not act on the signal.
    pub fn terminate(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child {
            let pid = child.id();
            if self.nodes[i].paused {
                sys::signal(pid, Signal::Cont);
                self.nodes[i].paused = false;
            }
            sys::signal(pid, Signal::Term);
            self.nodes[i].terminating = true;
        }
    }

    /// The exit status of node `i` once it has exited after
    /// [`Cluster::terminate`] (it is then reaped and down); `None` while it
    /// still runs.
    pub fn reap_terminated(&mut self, i: usize) -> Option<String> {
        let node = &mut self.nodes[i];
        let Some(child) = &mut node.child else {
            node.terminating = false;
            return Some("already down".to_owned());
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                node.child = None;
                node.paused = false;
                node.terminating = false;
                Some(status.to_string())
            }
            Ok(None) => None,
            Err(e) => {
                // It cannot be waited for: make sure it is gone.
                self.kill(i);
                Some(format!("could not be waited for ({e}): SIGKILLed"))
            }
        }
    }

    /// SIGSTOPs node `i`.
    pub fn pause(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child {
            sys::signal(child.id(), Signal::Stop);
            self.nodes[i].paused = true;
        }
    }

    /// SIGCONTs node `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child {
            sys::signal(child.id(), Signal::Cont);
        }
        self.nodes[i].paused = false;
    }

    /// Whether node `i` has a process (running or paused).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Whether node `i` is paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// Whether node `i` is a member of the cluster.
    pub fn is_member(&self, i: usize) -> bool {
        self.nodes[i].member
    }

    /// Nodes that run and are not paused.
    pub fn up(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.is_running(i) && !self.is_paused(i)).collect()
    }

    /// Marks node `i` removed from the membership (its process must be
    /// stopped by the caller).
    pub fn mark_removed(&mut self, i: usize) {
        self.nodes[i].member = false;
    }

    /// Prepares node `i` to join again as a new member: its data directory
    /// is wiped and its next start joins with `initial_cluster`.
    ///
    /// # Errors
    /// [`ChaosError::Io`] when the data directory cannot be wiped.
    pub fn prepare_join(&mut self, i: usize, initial_cluster: String) -> Result<(), ChaosError> {
        let data = self.data_dir(i);
        clear_dir(&data)?;
        self.nodes[i].join = Some(initial_cluster);
        self.nodes[i].member = true;
        Ok(())
    }

    /// The `name=peer-url` entry of node `i` for `--initial-cluster`.
    pub fn initial_cluster_entry(&self, i: usize) -> String {
        format!("{}={}", node_name(i), self.spec.addrs[i].peer_url())
    }

    /// Nodes whose process exited by itself since the last call (a crash:
    /// the harness stops a node only with SIGKILL through [`Cluster::kill`]
    /// or SIGTERM through [`Cluster::terminate`], whose exits are not
    /// listed), with their exit status. They are reaped and marked down.
    pub fn reap_exited(&mut self) -> Vec<(usize, String)> {
        let mut exited = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if node.terminating {
                continue;
            }
            if let Some(child) = &mut node.child
                && let Ok(Some(status)) = child.try_wait()
            {
                exited.push((i, status.to_string()));
                node.child = None;
                node.paused = false;
            }
        }
        exited
    }

    /// SIGKILLs and reaps every node.
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Whether the clock nemesis moves node `i`'s monotonic clock too, or
/// only its wall clock. Odd nodes: both, and only forward (a monotonic
/// clock never goes back; a forward jump is what a suspended VM sees).
/// Even nodes: the wall clock alone, either way (an NTP step), which no
/// timeout of a correct node depends on.
/// With [`FakeClock::Everything`], every node's monotonic clock is faked.
pub fn fakes_monotonic(mode: FakeClock, i: usize) -> bool {
    match mode {
        FakeClock::Off => false,
        FakeClock::Split => i % 2 == 1,
        FakeClock::Everything => true,
    }
}

/// Which clocks libfaketime moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeClock {
    /// None: the nodes run on real time.
    Off,
    /// Wall clocks on even nodes, monotonic clocks too on odd nodes (see
    /// [`fakes_monotonic`]).
    Split,
    /// Both clocks on every node, either way (the `clock-back` nemesis).
    Everything,
}

/// Node `i`'s member name.
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// Node `i`'s directory under the run's output directory.
pub fn node_dir(out: &Path, i: usize) -> PathBuf {
    out.join("nodes").join(node_name(i))
}

/// The file libfaketime reads node `i`'s clock offset from.
pub fn clock_offset_path(out: &Path, i: usize) -> PathBuf {
    node_dir(out, i).join("faketime")
}

/// Sets node `i`'s clock offset (seconds, may be negative); it takes effect
/// within [`FAKETIME_CACHE_SECONDS`].
///
/// # Errors
/// [`ChaosError::Io`].
pub fn write_clock_offset(out: &Path, i: usize, seconds: i64) -> Result<(), ChaosError> {
    let path = clock_offset_path(out, i);
    std::fs::write(&path, format!("{seconds:+}\n")).map_err(ChaosError::io("writing", path))
}

/// Removes everything inside `dir`, keeping `dir` (it may be a mount point).
///
/// # Errors
/// [`ChaosError::Io`].
pub fn clear_dir(dir: &Path) -> Result<(), ChaosError> {
    for entry in std::fs::read_dir(dir).map_err(ChaosError::io("listing", dir))? {
        let path = entry.map_err(ChaosError::io("listing", dir))?.path();
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(ChaosError::io("removing", &path))?;
    }
    Ok(())
}

/// The last [`LOG_TAIL_LINES`] lines of a log file.
pub fn log_tail(path: &Path) -> String {
    let text =
        std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn spec(dir: &Path) -> ClusterSpec {
        let addr = |i: u8| NodeAddr {
            ip: Ipv4Addr::new(10, 201, 7, 11 + i),
            client_port: 2379,
            peer_port: 2380,
            netns: Some(format!("rkv1n{i}")),
        };
        ClusterSpec {
            binary: PathBuf::from("/bin/ringkv"),
            dir: dir.to_path_buf(),
            addrs: vec![addr(0), addr(1), addr(2)],
            engine: Engine::Raft,
            heartbeat_ms: Some(50),
            election_ms: None,
            snapshot_count: None,
            shards: 8,
            hash_key_segments: 0,
            placement_moves: false,
            down_timeout: None,
            faketime: FakeClock::Split,
            token: "t".to_owned(),
        }
    }

    #[test]
    fn founders_list_everyone_and_a_rejoining_node_joins() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cluster::new(spec(dir.path())).unwrap();
        let args = c.args(1);
        assert!(args.contains(&"--name=n1".to_owned()));
        assert!(args.contains(&"--listen-client-urls=http://10.201.7.12:2379".to_owned()));
        assert!(args.contains(&"--initial-cluster-state=new".to_owned()));
        assert!(args.contains(
            &"--initial-cluster=n0=http://10.201.7.11:2380,n1=http://10.201.7.12:2380,n2=http://10.201.7.13:2380"
                .to_owned()
        ));
        assert!(args.contains(&"--heartbeat-interval=50".to_owned()));
        assert!(
            !args.iter().any(|a| a.starts_with("--election-timeout")),
            "the binary's default is kept"
        );
        assert!(args.contains(&"--shards=8".to_owned()));
        assert!(!args.iter().any(|a| a.starts_with("--hash-key-segments")), "0 is the default");
        // The clock nemesis's offset files exist from the start.
        assert_eq!(std::fs::read_to_string(clock_offset_path(dir.path(), 2)).unwrap(), "+0\n");

        std::fs::write(c.data_dir(1).join("old"), b"state").unwrap();
        c.mark_removed(1);
        assert!(!c.is_member(1));
        c.prepare_join(1, "n0=http://10.201.7.11:2380,n1=http://10.201.7.12:2380".to_owned())
            .unwrap();
        assert!(c.is_member(1));
        assert_eq!(
            std::fs::read_dir(c.data_dir(1)).unwrap().count(),
            0,
            "the data directory is wiped"
        );
        let args = c.args(1);
        assert!(args.contains(&"--initial-cluster-state=existing".to_owned()));
        assert!(args.contains(
            &"--initial-cluster=n0=http://10.201.7.11:2380,n1=http://10.201.7.12:2380".to_owned()
        ));
    }

    /// Polls of 25 ms before a scripted node is declared stuck (a minute:
    /// a bound for a broken test, not a speed requirement).
    const WAIT_POLLS: usize = 2400;

    /// A cluster of one "node" that is a shell script: it ignores the
    /// server flags and exits with `term_status` on SIGTERM, or by itself
    /// at once when `crash` is set.
    fn scripted(dir: &Path, term_status: u8, crash: bool) -> Cluster {
        let script = dir.join("node.sh");
        let body = if crash {
            "exit 3".to_owned()
        } else {
            let ready = dir.join("ready");
            let _ = std::fs::remove_file(&ready);
            format!(
                "trap 'exit {term_status}' TERM\ntouch {}\nwhile :; do sleep 0.05; done",
                ready.display()
            )
        };
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut spec = spec(dir);
        spec.binary = script;
        spec.faketime = FakeClock::Off;
        spec.addrs.truncate(1);
        spec.addrs[0].netns = None;
        Cluster::new(spec).unwrap()
    }

    /// Waits until the script has set its SIGTERM trap.
    fn wait_ready(dir: &Path) {
        for _ in 0..WAIT_POLLS {
            if dir.join("ready").exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the scripted node never started");
    }

    fn wait_terminated(c: &mut Cluster) -> String {
        for _ in 0..WAIT_POLLS {
            // The crash watcher's call first: once the node has exited, it
            // must leave it to `reap_terminated`.
            assert!(c.reap_exited().is_empty(), "a terminated node is not a crash");
            if let Some(status) = c.reap_terminated(0) {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the node did not exit within a minute of SIGTERM");
    }

    #[test]
    fn a_terminated_node_is_reaped_as_a_graceful_stop_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = scripted(dir.path(), 0, false);
        c.start(0).unwrap();
        wait_ready(dir.path());
        c.pause(0);
        // A paused node is resumed so that it can act on SIGTERM.
        c.terminate(0);
        assert_eq!(wait_terminated(&mut c), "exit status: 0");
        assert!(!c.is_running(0));
        // It starts again, and its unclean exit status is reported too.
        let mut c = scripted(dir.path(), 7, false);
        c.start(0).unwrap();
        wait_ready(dir.path());
        c.terminate(0);
        assert_eq!(wait_terminated(&mut c), "exit status: 7");
    }

    #[test]
    fn a_node_that_exits_by_itself_is_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = scripted(dir.path(), 0, true);
        c.start(0).unwrap();
        for _ in 0..WAIT_POLLS {
            let exited = c.reap_exited();
            if !exited.is_empty() {
                assert_eq!(exited, vec![(0, "exit status: 3".to_owned())]);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the crashing node was never reaped");
    }

    #[test]
    fn only_odd_nodes_fake_the_monotonic_clock_in_split_mode() {
        assert!(!fakes_monotonic(FakeClock::Split, 0));
        assert!(fakes_monotonic(FakeClock::Split, 1));
        assert!(fakes_monotonic(FakeClock::Everything, 0));
        assert!(!fakes_monotonic(FakeClock::Off, 1));
    }
}
