//! `ringkv playground`: a local cluster in one command.
//!
//! Starts `--nodes` child `ringkv server` processes (this same executable)
//! on free loopback ports, each with its own directory under a temporary
//! directory (or `--data-dir`, which is kept and reused: a second run on it
//! restarts the same cluster on the same ports). Once the members agree on
//! a leader it prints the endpoints, an `etcdctl` line and the dashboard
//! address, then streams the children's logs, one compact line each.
//!
//! Lifecycle:
//!
//! ```text
//! start children ──▶ wait for an agreed leader ──▶ banner ──▶ serve
//!      │                  │ a child exits: its log tail, exit 1   │ a child exits: say so, go on
//!      │                  │ Ctrl-C / SIGTERM ───────────────┐     │ Ctrl-C / SIGTERM
//!      ▼                  ▼                                 ▼     ▼
//!                 stop: SIGTERM each child, SIGKILL after STOP_GRACE_PERIOD (or a
//!                 second Ctrl-C), reap them all, then remove the temporary directory
//! ```
//!
//! Children run in their own process group, so a terminal's Ctrl-C reaches
//! the playground alone and the children stop in order. If the playground
//! itself is killed with SIGKILL its children are orphaned (stop them with
//! the pids the banner prints).

mod log;

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringkv_server::config::{EngineKind, LogLevel};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ctl::Clients;
use log::Style;

/// Most nodes a playground starts (loopback, one machine).
pub(crate) const NODES_MAX: u16 = 9;

/// Default `--shards` of the playground: several, so that a newcomer sees
/// keys spread over shards (issue #7); `--shards 1` is exactly an etcd.
const PLAYGROUND_SHARDS: u64 = 8;

/// Default `--hash-key-segments` of the playground: a key's first segment
/// picks its shard, so that etcdctl's lock and election recipes (keys
/// `NAME/<lease>` read back by prefix) stay on one shard.
const PLAYGROUND_HASH_KEY_SEGMENTS: u32 = 1;

/// How long the members may take to agree on a leader before the
/// playground gives up (bounds a hang; elections take about a second).
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a child may take to stop after SIGTERM before SIGKILL: the
/// server's own grace period for open client streams, plus margin.
pub(crate) const STOP_GRACE_PERIOD: Duration =
    ringkv_server::server::SHUTDOWN_GRACE_PERIOD.saturating_add(Duration::from_secs(5));

/// How long to wait for a child to be reaped after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long to wait, once every child is gone, for their last log lines.
const LOG_DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Pause between two leader polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Timeout of one leader poll (connect, then `Maintenance.Status`).
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// Lines of each child's output kept for error reports.
const LOG_TAIL_LINES: usize = 30;

/// Longest output line read from a child at once; a longer one is split.
const LINE_BYTES_MAX: u64 = 64 * 1024;

/// Exit status when the cluster could not start or every node died.
const EXIT_FAILED: u8 = 1;

/// The file in the data directory that records the cluster's ports.
const STATE_FILE: &str = "playground.json";

/// `ringkv playground`'s flags.
#[derive(clap::Args, Debug)]
pub(crate) struct PlaygroundArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=i64::from(NODES_MAX)))]
    nodes: u16,

    /// Number of data shards, passed to every node's --shards (1 is exactly
    /// an etcd: one revision for the whole store).
    #[arg(long, value_name = "N", default_value_t = PLAYGROUND_SHARDS)]
    shards: u64,

    /// Leading `/`-separated segments of a key that pick its shard, passed to
    /// every node's --hash-key-segments when there are several shards (0:
    /// the whole key). With 1, the keys of one `etcdctl lock` or `elect`
    /// name share a shard, so those recipes work.
    #[arg(long, value_name = "K", default_value_t = PLAYGROUND_HASH_KEY_SEGMENTS)]
    hash_key_segments: u32,

    /// Consensus engine of every node.
    #[arg(long, value_enum, default_value_t)]
    engine: EngineKind,

    /// Keep the nodes' data here (reused by the next run) instead of in a temporary directory
    /// removed at exit.
    #[arg(long, value_name = "PATH")]
    data_dir: Option<PathBuf>,

    /// The nodes' log level.
    #[arg(long, value_enum, default_value_t)]
    log_level: LogLevel,

    /// Color the log: auto (when stdout is a terminal and NO_COLOR is unset), always, never.
    #[arg(long, value_enum, default_value_t)]
    color: ColorChoice,
}

/// `--color`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// Why the playground could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PlaygroundError {
    /// The data directory could not be prepared.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// `--data-dir` holds a playground of another size.
    #[error(
        "{} holds a {found}-node playground, not {asked}: run with --nodes {found}, or use \
         another --data-dir",
        .path.display()
    )]
    SizeMismatch {
        /// The data directory.
        path: PathBuf,
        /// Nodes recorded there.
        found: usize,
        /// `--nodes`.
        asked: usize,
    },
    /// The recorded ports could not be read.
    #[error("{} is not a playground state file: {source}; remove it or use another --data-dir", .path.display())]
    BadState {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The executable to start the nodes with could not be found.
    #[error("cannot find this executable to start the nodes with: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// A child could not be started.
    #[error("cannot start node {name}: {source}")]
    Spawn {
        /// The node.
        name: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A child exited before the cluster was up.
    #[error("node {name} exited during startup ({status}); its last log lines:\n{tail}")]
    DiedAtStartup {
        /// The node.
        name: String,
        /// How it exited.
        status: ExitStatus,
        /// Its last output lines.
        tail: String,
    },
    /// No agreed leader in time.
    #[error("the nodes agreed on no leader within {waited:?}; their last log lines:\n{tails}")]
    NoLeader {
        /// How long we waited.
        waited: Duration,
        /// Every node's last lines.
        tails: String,
    },
    /// Signal handlers could not be installed.
    #[error("cannot handle signals: {0}")]
    Signals(#[source] std::io::Error),
}

/// One node's fixed facts, recorded in [`STATE_FILE`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NodeSpec {
    name: String,
    client_port: u16,
    peer_port: u16,
}

impl NodeSpec {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// What [`STATE_FILE`] holds.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    token: String,
    nodes: Vec<NodeSpec>,
}

/// Where the data lives, and whether it goes away at exit.
enum DataDir {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Temporary(dir) => dir.path(),
            DataDir::Kept(path) => path,
        }
    }
}

/// A started child.
struct Node {
    spec: NodeSpec,
    pid: Pid,
    /// Its last output lines, uncolored.
    tail: Arc<Mutex<VecDeque<String>>>,
    /// How it ended, once it has.
    exited: Option<ExitStatus>,
}

impl Node {
    fn tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Writes `text` to stdout as one write, so lines of different children
/// never interleave. A closed stdout is ignored: the cluster still stops
/// cleanly.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Runs `ringkv playground`; returns the process's exit status.
pub(crate) fn main(args: PlaygroundArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    #[allow(clippy::print_stderr, reason = "the playground's failure report")]
    {
        eprintln!("ringkv playground: {message}");
    }
    ExitCode::from(EXIT_FAILED)
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PlaygroundError {
    let path = path.to_owned();
    move |source| PlaygroundError::Io { action, path, source }
}

/// Distinct free loopback ports: all bound at once (so no two are the
/// same), then released for the children to bind.
fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// The data directory and the cluster's layout: recorded there by an
/// earlier run, or new.
fn prepare(args: &PlaygroundArgs) -> Result<(DataDir, State), PlaygroundError> {
    let data = match &args.data_dir {
        Some(path) => {
            std::fs::create_dir_all(path).map_err(io("create", path))?;
            DataDir::Kept(path.clone())
        }
        None => DataDir::Temporary(
            tempfile::Builder::new()
                .prefix("ringkv-playground-")
                .tempdir()
                .map_err(io("create a temporary directory in", &std::env::temp_dir()))?,
        ),
    };
    let state_path = data.path().join(STATE_FILE);
    let asked = usize::from(args.nodes);
    if state_path.exists() {
        let text = std::fs::read_to_string(&state_path).map_err(io("read", &state_path))?;
        let state: State = serde_json::from_str(&text)
            .map_err(|source| PlaygroundError::BadState { path: state_path.clone(), source })?;
        if state.nodes.len() != asked {
            return Err(PlaygroundError::SizeMismatch {
                path: data.path().to_owned(),
                found: state.nodes.len(),
                asked,
            });
        }
        return Ok((data, state));
    }
    let ports = free_ports(2 * asked).map_err(io("find free ports on", Path::new("127.0.0.1")))?;
    let nodes = (0..asked)
        .map(|i| NodeSpec {
            name: format!("n{}", i + 1),
            client_port: ports[2 * i],
            peer_port: ports[2 * i + 1],
        })
        .collect();
    let state = State { token: format!("playground-{}", std::process::id()), nodes };
    let text = serde_json::to_string_pretty(&state).expect("the state serializes");
    std::fs::write(&state_path, text).map_err(io("write", &state_path))?;
    Ok((data, state))
}

/// The command line of one child.
fn server_args(args: &PlaygroundArgs, state: &State, spec: &NodeSpec, data: &Path) -> Vec<String> {
    let initial: Vec<String> =
        state.nodes.iter().map(|n| format!("{}={}", n.name, n.peer_url())).collect();
    let mut out = vec![
        "server".to_owned(),
        format!("--name={}", spec.name),
        format!("--data-dir={}", data.join(&spec.name).display()),
        format!("--listen-client-urls={}", spec.client_url()),
        format!("--listen-peer-urls={}", spec.peer_url()),
        format!("--initial-cluster={}", initial.join(",")),
        format!("--initial-cluster-token={}", state.token),
        format!("--log-level={}", args.log_level.as_str()),
        // Rendered compactly by the playground (see `log`).
        "--log-format=json".to_owned(),
        format!(
            "--engine={}",
            match args.engine {
                EngineKind::Raft => "raft",
                EngineKind::Paxos => "paxos",
            }
        ),
    ];
    out.push(format!("--shards={}", args.shards));
    if args.shards > 1 && args.hash_key_segments > 0 {
        out.push(format!("--hash-key-segments={}", args.hash_key_segments));
    }
    out
}

/// Copies a child's output to the terminal, rendered, and into its tail.
async fn pump(
    output: impl AsyncRead + Unpin,
    prefix: String,
    style: Style,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(LINE_BYTES_MAX).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        say(&format!("{prefix}{}\n", log::render(text, style)));
        let plain = log::render(text, Style { color: false });
        let mut tail = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tail.len() == LOG_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(plain);
    }
}

/// The running cluster: its children, their exit reports and log pumps.
struct Cluster {
    nodes: Vec<Node>,
    exits: mpsc::UnboundedReceiver<(usize, ExitStatus)>,
    pumps: JoinSet<()>,
    /// Owns the children; dropping it (a panic) kills them.
    waiters: JoinSet<()>,
}

impl Cluster {
    fn start(
        args: &PlaygroundArgs,
        state: &State,
        data: &Path,
        style: Style,
    ) -> Result<Cluster, PlaygroundError> {
        let exe = std::env::current_exe().map_err(PlaygroundError::CurrentExe)?;
        let width = state.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
        let (exit_tx, exits) = mpsc::unbounded_channel();
        let mut cluster =
            Cluster { nodes: Vec::new(), exits, pumps: JoinSet::new(), waiters: JoinSet::new() };
        for (i, spec) in state.nodes.iter().enumerate() {
            let mut command = Command::new(&exe);
            command
                .args(server_args(args, state, spec, data))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Ctrl-C in a terminal reaches the playground only; it
                // stops the children itself, in order.
                .process_group(0)
                .kill_on_drop(true);
            // The playground sets every setting itself: a RINGKV_* variable
            // (RINGKV_CONFIG_FILE, say) must not reach the nodes.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with(ringkv_server::config::ENV_PREFIX) {
                    command.env_remove(key);
                }
            }
            let spawned = command
                .spawn()
                .map_err(|source| PlaygroundError::Spawn { name: spec.name.clone(), source });
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    cluster.kill_all(Signal::SIGKILL);
                    return Err(e);
                }
            };
            let pid = child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw)
                .expect("a child just spawned has a pid");
            let tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL_LINES)));
            let prefix = style.prefix(&spec.name, i, width);
            if let Some(stdout) = child.stdout.take() {
                cluster.pumps.spawn(pump(stdout, prefix.clone(), style, Arc::clone(&tail)));
            }
            if let Some(stderr) = child.stderr.take() {
                cluster.pumps.spawn(pump(stderr, prefix, style, Arc::clone(&tail)));
            }
            let exit_tx = exit_tx.clone();
            cluster.waiters.spawn(async move {
                // A wait error means there is no child to wait for any more.
                let status = child.wait().await.unwrap_or_else(|_| exit_status_unknown());
                let _ = exit_tx.send((i, status));
            });
            cluster.nodes.push(Node { spec: spec.clone(), pid, tail, exited: None });
        }
        Ok(cluster)
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.exited.is_none())
    }

    fn kill_all(&self, signal: Signal) {
        for node in self.running() {
            // The child may have exited and not yet been reported: ESRCH is fine.
            let _ = kill(node.pid, signal);
        }
    }

    /// Records an exit report; returns the node.
    fn exited(&mut self, (i, status): (usize, ExitStatus)) -> &Node {
        let node = &mut self.nodes[i];
        node.exited = Some(status);
        node
    }

    /// Waits until the members agree on a leader; returns its name.
    async fn wait_leader(&mut self, stop: &mut Stop) -> Result<Option<String>, PlaygroundError> {
        let endpoints: Vec<String> = self.nodes.iter().map(|n| n.spec.client_url()).collect();
        let clients = Clients::new(&endpoints, POLL_TIMEOUT, POLL_TIMEOUT)
            .expect("the playground's own endpoints are well formed");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            tokio::select! {
                exit = self.exits.recv() => {
                    let Some(exit) = exit else { continue };
                    let node = self.exited(exit);
                    // Give its last lines a moment to arrive.
                    tokio::time::sleep(POLL_INTERVAL).await;
                    return Err(PlaygroundError::DiedAtStartup {
                        name: node.spec.name.clone(),
                        status: exit.1,
                        tail: node.tail(),
                    });
                }
                () = stop.requested() => return Ok(None),
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            if let Some(name) = self.agreed_leader(&clients, &endpoints).await {
                return Ok(Some(name));
            }
            if Instant::now() > deadline {
                let tails: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- {}:\n{}", n.spec.name, n.tail()))
                    .collect();
                return Err(PlaygroundError::NoLeader {
                    waited: STARTUP_TIMEOUT,
                    tails: tails.join("\n"),
                });
            }
        }
    }

    /// The leader's name, if every node names the same one.
    async fn agreed_leader(&self, clients: &Clients, endpoints: &[String]) -> Option<String> {
        let mut leader = None;
        let mut leader_name = None;
        for (node, endpoint) in self.nodes.iter().zip(endpoints) {
            let status = clients.status_of(endpoint).await.ok()?;
            if status.leader == 0 || leader.is_some_and(|l| l != status.leader) {
                return None;
            }
            leader = Some(status.leader);
            if status.header.is_some_and(|h| h.member_id == status.leader) {
                leader_name = Some(node.spec.name.clone());
            }
        }
        leader_name
    }

    /// Stops every child: SIGTERM, then SIGKILL after [`STOP_GRACE_PERIOD`]
    /// or at a second stop request; reaps them all, then lets the log
    /// pumps finish.
    async fn stop(&mut self, stop: &mut Stop) {
        if self.running().next().is_none() {
            return self.drain().await;
        }
        let names: Vec<&str> = self.running().map(|n| n.spec.name.as_str()).collect();
        say(&format!("Stopping {}...\n", names.join(", ")));
        self.kill_all(Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE_PERIOD;
        while self.running().next().is_some() {
            tokio::select! {
                exit = self.exits.recv() => match exit {
                    Some(exit) => { self.exited(exit); }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = stop.requested() => break,
            }
        }
        if self.running().next().is_some() {
            let names: Vec<&str> = self.running().map(|n| n.spec.name.as_str()).collect();
            say(&format!("Killing {} (SIGKILL)\n", names.join(", ")));
            self.kill_all(Signal::SIGKILL);
            let deadline = Instant::now() + KILL_WAIT;
            while self.running().next().is_some() {
                tokio::select! {
                    exit = self.exits.recv() => match exit {
                        Some(exit) => { self.exited(exit); }
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        self.drain().await;
    }

    /// Waits (briefly) for the children's last output lines.
    async fn drain(&mut self) {
        let pumps = async { while self.pumps.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(LOG_DRAIN_WAIT, pumps).await;
        self.pumps.abort_all();
    }
}

/// An exit status for a child whose wait failed (it was reaped elsewhere).
fn exit_status_unknown() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt as _;
    ExitStatus::from_raw(0xff00)
}

/// SIGINT and SIGTERM, either of which asks the playground to stop.
struct Stop {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    fn install() -> Result<Stop, PlaygroundError> {
        Ok(Stop {
            interrupt: signal(SignalKind::interrupt()).map_err(PlaygroundError::Signals)?,
            terminate: signal(SignalKind::terminate()).map_err(PlaygroundError::Signals)?,
        })
    }

    async fn requested(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

fn style(choice: ColorChoice) -> Style {
    use std::io::IsTerminal as _;
    let color = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    Style { color }
}

fn banner(args: &PlaygroundArgs, cluster: &Cluster, data: &DataDir, leader: &str) -> String {
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.spec.client_url()).collect();
    let endpoints = endpoints.join(",");
    let engine = match args.engine {
        EngineKind::Raft => "raft",
        EngineKind::Paxos => "paxos",
    };
    let shards = match (args.shards, args.hash_key_segments) {
        (1, _) => "1 shard".to_owned(),
        (n, 0) => format!("{n} shards"),
        (n, k) => format!("{n} shards (a key's first {k} '/' segment(s) pick its shard)"),
    };
    let mut text = format!(
        "\nringkv playground is up: {} nodes, {engine}, {shards}, leader {leader}\n",
        cluster.nodes.len()
    );
    for node in &cluster.nodes {
        text.push_str(&format!(
            "  {}  client {}  peer {}  pid {}\n",
            node.spec.name,
            node.spec.client_url(),
            node.spec.peer_url(),
            node.pid
        ));
    }
    let first = &cluster.nodes[0].spec;
    let kept = match data {
        DataDir::Temporary(_) => "removed at exit",
        DataDir::Kept(_) => "kept; run again with the same --data-dir to restart this cluster",
    };
    text.push_str(&format!(
        "Client endpoints: {endpoints}\n\
         Try:       etcdctl --endpoints={endpoints} put hello world\n\
         \x20          ringkv ctl --endpoints={endpoints} status\n\
         Dashboard: http://127.0.0.1:{}/dashboard\n\
         Data:      {} ({kept})\n\
         Press Ctrl-C to stop the cluster.\n",
        first.client_port,
        data.path().display(),
    ));
    if args.shards > 1 {
        // What differs from one etcd, said where a newcomer looks first.
        text.push_str(
            "Sharded:   each shard has its own revisions; a txn's keys must share a shard, \
             and `etcdctl compact` is refused (auto-compaction works). \
             --shards 1 is exactly an etcd.\n",
        );
    }
    text.push('\n');
    text
}

async fn run(args: PlaygroundArgs) -> Result<ExitCode, PlaygroundError> {
    let mut stop = Stop::install()?;
    let (data, state) = prepare(&args)?;
    let style = style(args.color);
    let mut cluster = Cluster::start(&args, &state, data.path(), style)?;
    let started = cluster.wait_leader(&mut stop).await;
    let leader = match started {
        Ok(Some(leader)) => leader,
        Ok(None) => {
            cluster.stop(&mut stop).await;
            finish(data);
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            cluster.stop(&mut stop).await;
            finish(data);
            return Err(e);
        }
    };
    say(&banner(&args, &cluster, &data, &leader));

    let mut code = ExitCode::SUCCESS;
    loop {
        tokio::select! {
            () = stop.requested() => break,
            exit = cluster.exits.recv() => {
                let Some(exit) = exit else { break };
                let node = cluster.exited(exit);
                say(&format!(
                    "Node {} (pid {}) exited ({}); the others keep running.\n",
                    node.spec.name, node.pid, exit.1
                ));
                if cluster.running().next().is_none() {
                    say("Every node has exited.\n");
                    code = ExitCode::from(EXIT_FAILED);
                    break;
                }
            }
        }
    }
    cluster.stop(&mut stop).await;
    finish(data);
    Ok(code)
}

/// Removes a temporary data directory (saying so), keeps a given one.
fn finish(data: DataDir) {
    match data {
        DataDir::Temporary(dir) => {
            let path = dir.path().to_owned();
            match dir.close() {
                Ok(()) => say(&format!("Removed {}\n", path.display())),
                Err(e) => say(&format!("Could not remove {}: {e}\n", path.display())),
            }
        }
        DataDir::Kept(path) => say(&format!("Data kept in {}\n", path.display())),
    }
}
