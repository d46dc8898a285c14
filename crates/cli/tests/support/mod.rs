//! Test support: `ringkv` processes on loopback, each with free ports and
//! its own temporary data directory, that tests start, kill and restart.
//!
//! ```ignore
//! let mut cluster = ProcessCluster::start(3)?;
//! let leader = cluster.wait_leader(WAIT)?;       // index of the leader
//! cluster.kill(leader);                          // SIGKILL
//! cluster.restart(leader)?;                      // same ports, same data
//! ```
//!
//! Every process logs to a file in its directory; on failure the helpers'
//! errors include its tail. Processes are killed when the cluster drops.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test support, shared by test binaries that each use part of it"
)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ringkv_api::etcdserverpb::StatusRequest;
use ringkv_api::etcdserverpb::maintenance_client::MaintenanceClient;

/// The binary under test.
pub const RINGKV: &str = env!("CARGO_BIN_EXE_ringkv");

/// Heartbeat of test clusters, in milliseconds: short, so elections take
/// well under a second.
pub const TEST_HEARTBEAT_MS: u64 = 50;

/// Election timeout of test clusters, in milliseconds.
pub const TEST_ELECTION_MS: u64 = 500;

/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Ports not yet used by another test in this process: each is bound once
/// to make sure it is free, then released for the server to bind.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// One member's fixed facts.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// `--name`.
    pub name: String,
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// `--data-dir`.
    pub data_dir: PathBuf,
}

impl MemberSpec {
    /// `http://127.0.0.1:<client port>`.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:<peer port>`.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The client address.
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }
}

/// Runs a `ringkv` process and waits for it; its output goes to `log`.
pub fn spawn_ringkv(args: &[String], cwd: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    Command::new(RINGKV)
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawning {RINGKV}"))
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `ringkv server` processes forming one cluster.
pub struct ProcessCluster {
    /// Keeps the directories alive.
    pub dir: tempfile::TempDir,
    /// The members, in `--initial-cluster` order.
    pub members: Vec<MemberSpec>,
    children: Vec<Option<Child>>,
    token: String,
}

impl ProcessCluster {
    /// Starts `n` members founding a new cluster.
    pub fn start(n: usize) -> anyhow::Result<ProcessCluster> {
        let dir = tempfile::tempdir()?;
        let members: Vec<MemberSpec> = (0..n)
            .map(|i| MemberSpec {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("m{i}")),
            })
            .collect();
        let token = format!("test-{}", std::process::id());
        let mut cluster =
            ProcessCluster { dir, children: (0..n).map(|_| None).collect(), members, token };
        for i in 0..n {
            cluster.restart(i)?;
        }
        Ok(cluster)
    }

    fn args(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
        vec![
            "server".into(),
            format!("--name={}", m.name),
            format!("--data-dir={}", m.data_dir.display()),
            format!("--listen-client-urls={}", m.client_url()),
            format!("--listen-peer-urls={}", m.peer_url()),
            format!("--initial-cluster={}", initial.join(",")),
            format!("--initial-cluster-token={}", self.token),
            format!("--heartbeat-interval={TEST_HEARTBEAT_MS}"),
            format!("--election-timeout={TEST_ELECTION_MS}"),
        ]
    }

    /// Starts member `i` (again), on its ports and data directory.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.children[i].is_none(), "member {i} is running");
        let m = &self.members[i];
        let child = spawn_ringkv(&self.args(i), self.dir.path(), &m.log_path())?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Kills member `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether member `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    /// Member `i`'s log, last lines.
    pub fn log(&self, i: usize) -> String {
        log_tail(&self.members[i].log_path())
    }

    /// Waits until a running member reports itself leader, agreed by every
    /// running member; returns its index.
    pub fn wait_leader(&self, within: Duration) -> anyhow::Result<usize> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for (i, m) in self.members.iter().enumerate() {
                if !self.is_running(i) {
                    continue;
                }
                let leader = runtime.block_on(status_leader(m.client_addr())).ok().flatten();
                seen.push((i, leader));
            }
            let first = seen.first().and_then(|(_, l)| *l);
            if let Some(leader_id) = first
                && seen.iter().all(|(_, l)| *l == Some(leader_id))
            {
                for (i, m) in self.members.iter().enumerate() {
                    if self.is_running(i)
                        && runtime.block_on(status_member(m.client_addr())).ok() == Some(leader_id)
                    {
                        return Ok(i);
                    }
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = (0..self.members.len())
                    .map(|i| format!("--- m{i}:\n{}", self.log(i)))
                    .collect();
                bail!("no agreed leader within {within:?}: {seen:?}\n{}", logs.join("\n"));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// The leader a member reports in `Maintenance.Status` (`None` for 0).
pub async fn status_leader(addr: SocketAddr) -> anyhow::Result<Option<u64>> {
    let mut client = MaintenanceClient::connect(format!("http://{addr}")).await?;
    let status = client.status(StatusRequest {}).await?.into_inner();
    Ok((status.leader != 0).then_some(status.leader))
}

/// The member id a member reports in its `Maintenance.Status` header.
pub async fn status_member(addr: SocketAddr) -> anyhow::Result<u64> {
    let mut client = MaintenanceClient::connect(format!("http://{addr}")).await?;
    let status = client.status(StatusRequest {}).await?.into_inner();
    Ok(status.header.map_or(0, |h| h.member_id))
}

/// Polls `check` until it holds or `within` passes.
pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
