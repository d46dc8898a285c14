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
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod load;

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

/// How a cluster's members time heartbeats and elections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// [`TEST_HEARTBEAT_MS`] and [`TEST_ELECTION_MS`]: elections well under
    /// a second, for tests about something else.
    Fast,
    /// No timing flags: the binary's defaults, what users run (failover
    /// figures are measured with these).
    Default,
}

/// `ringkv ctl -w json ARGS` against `endpoints`, parsed; `None` if it
/// failed.
#[allow(dead_code)]
pub fn ringkv_ctl_json(endpoints: &str, args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new(RINGKV)
        .args(["ctl", "--endpoints", endpoints, "-w", "json"])
        .args(args)
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// Ports not yet used by another test in this process: each is bound once
/// to make sure it is free, then released for the server to bind.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        // Released right away, a port may come back from the kernel on the
        // next bind: remember every one handed out and draw again.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
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
    /// Flags this member alone gets (e.g. `--zone=a`), after the cluster's.
    pub own_flags: Vec<String>,
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

    /// Where the member's process logs.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }
}

/// Runs a `ringkv` process and waits for it; its output goes to `log`.
/// A restart appends to the same log, so one file tells the member's
/// whole story.
pub fn spawn_ringkv(args: &[String], cwd: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
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

/// `text` without its ANSI escape sequences (the log's colours).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `ringkv server` processes forming one cluster.
pub struct ProcessCluster {
    /// Keeps the directories alive.
    pub dir: tempfile::TempDir,
    /// The members, in `--initial-cluster` order.
    pub members: Vec<MemberSpec>,
    children: Vec<Option<Child>>,
    /// `--initial-cluster-token`.
    pub token: String,
    /// More flags every member gets (e.g. `--engine=paxos`).
    extra: Vec<String>,
    /// Timing flags.
    timing: Timing,
    /// How many of `members` founded the cluster (the first ones).
    founders: usize,
    /// For members that joined later: how they join.
    joins: Vec<Option<Join>>,
}

/// How a member joins a running cluster.
#[derive(Clone, Debug)]
struct Join {
    /// Its `--initial-cluster` (with `--initial-cluster-state existing`).
    initial_cluster: String,
    /// Whether it is given the cluster's `--initial-cluster-token` (etcd
    /// ignores the token when joining; its docs do not pass one).
    token: bool,
}

impl ProcessCluster {
    /// Starts `n` members founding a new cluster.
    pub fn start(n: usize) -> anyhow::Result<ProcessCluster> {
        ProcessCluster::start_with(n, &[])
    }

    /// Starts `n` members founding a new cluster, each with `extra` flags.
    pub fn start_with(n: usize, extra: &[&str]) -> anyhow::Result<ProcessCluster> {
        ProcessCluster::start_timed(n, extra, Timing::Fast)
    }

    /// Starts `n` members founding a new cluster, each with `extra` flags
    /// and the given timing.
    pub fn start_timed(n: usize, extra: &[&str], timing: Timing) -> anyhow::Result<ProcessCluster> {
        ProcessCluster::start_each(n, extra, timing, |_| Vec::new())
    }

    /// Starts `n` members founding a new cluster, each with `extra` flags
    /// and then `own(i)`'s, with the given timing.
    pub fn start_each(
        n: usize,
        extra: &[&str],
        timing: Timing,
        own: impl Fn(usize) -> Vec<String>,
    ) -> anyhow::Result<ProcessCluster> {
        let dir = tempfile::tempdir()?;
        let token = format!("test-{}-{}", std::process::id(), free_port());
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut cluster = ProcessCluster {
            dir,
            children: Vec::new(),
            members: Vec::new(),
            token,
            extra,
            timing,
            founders: n,
            joins: Vec::new(),
        };
        for i in 0..n {
            let at = cluster.reserve(&format!("m{i}"));
            cluster.members[at].own_flags = own(i);
        }
        for i in 0..n {
            cluster.restart(i)?;
        }
        Ok(cluster)
    }

    /// Adds a member that does not run yet, with free ports and its own
    /// data directory; returns its index. Start it with [`Self::join`]
    /// once the cluster knows it (`member add`).
    pub fn reserve(&mut self, name: &str) -> usize {
        self.members.push(MemberSpec {
            name: name.to_owned(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: self.dir.path().join(name),
            own_flags: Vec::new(),
        });
        self.children.push(None);
        self.joins.push(None);
        self.members.len() - 1
    }

    /// Starts reserved member `i` joining the running cluster, with
    /// `--initial-cluster-state existing` and this `--initial-cluster`
    /// (what `etcdctl member add` printed).
    pub fn join(&mut self, i: usize, initial_cluster: &str) -> anyhow::Result<()> {
        self.joins[i] = Some(Join { initial_cluster: initial_cluster.to_owned(), token: true });
        self.restart(i)
    }

    /// As [`Self::join`], without `--initial-cluster-token`, as etcd's
    /// documentation adds a member.
    pub fn join_without_token(&mut self, i: usize, initial_cluster: &str) -> anyhow::Result<()> {
        self.joins[i] = Some(Join { initial_cluster: initial_cluster.to_owned(), token: false });
        self.restart(i)
    }

    fn args(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let founders: Vec<String> = self.members[..self.founders]
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        let mut args = vec![
            "server".into(),
            format!("--name={}", m.name),
            format!("--data-dir={}", m.data_dir.display()),
            format!("--listen-client-urls={}", m.client_url()),
            format!("--listen-peer-urls={}", m.peer_url()),
        ];
        match &self.joins[i] {
            None => {
                args.push(format!("--initial-cluster={}", founders.join(",")));
                args.push(format!("--initial-cluster-token={}", self.token));
            }
            Some(join) => {
                args.push(format!("--initial-cluster={}", join.initial_cluster));
                args.push("--initial-cluster-state=existing".into());
                if join.token {
                    args.push(format!("--initial-cluster-token={}", self.token));
                }
            }
        }
        if self.timing == Timing::Fast {
            args.push(format!("--heartbeat-interval={TEST_HEARTBEAT_MS}"));
            args.push(format!("--election-timeout={TEST_ELECTION_MS}"));
        }
        args.extend(self.extra.iter().cloned());
        args.extend(m.own_flags.iter().cloned());
        args
    }

    /// Every member's client URL, in member order.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(MemberSpec::client_url).collect()
    }

    /// The client URLs of the running members, comma-separated (for
    /// `etcdctl --endpoints`).
    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .map(|i| self.members[i].client_url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s whole log.
    pub fn full_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.members[i].log_path()).unwrap_or_default()
    }

    /// Stops member `i` gracefully (SIGTERM) and reaps it; SIGKILL if it
    /// has not exited within `within`.
    pub fn stop(&mut self, i: usize, within: Duration) {
        if let Some(mut child) = self.children[i].take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(POLL_INTERVAL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether member `i`'s process exited on its own (it runs no more).
    pub fn exited(&mut self, i: usize) -> bool {
        match self.children[i].as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
            None => false,
        }
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

    /// Whether member `i` logged that it runs `engine` (`raft`, `paxos`).
    pub fn runs_engine(&self, i: usize, engine: &str) -> bool {
        strip_ansi(&self.full_log(i)).contains(&format!("consensus engine engine={engine}"))
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

/// What one `etcdctl` run printed.
#[derive(Debug)]
pub struct CtlOutput {
    /// Whether it exited 0.
    pub ok: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (clientv3 logs its retries there).
    pub stderr: String,
}

fn etcdctl_command(endpoints: &str, args: &[&str]) -> Command {
    let mut command = Command::new("etcdctl");
    command
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS");
    command
}

/// Runs `etcdctl --endpoints=ENDPOINTS ARGS...` and collects its output.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> CtlOutput {
    etcdctl_stdin(endpoints, args, "")
}

/// Runs `etcdctl` with `stdin` as its standard input.
pub fn etcdctl_stdin(endpoints: &str, args: &[&str], stdin: &str) -> CtlOutput {
    let mut child = etcdctl_command(endpoints, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl runs (scripts/setup installs it)");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    CtlOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `etcdctl` and returns its standard output; panics with the
/// command and its standard error if it failed.
#[track_caller]
pub fn ctl(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args);
    assert!(out.ok, "etcdctl {} failed:\n{}", args.join(" "), out.stderr);
    out.stdout
}

/// Runs `etcdctl ... -w json` and parses what it printed.
#[track_caller]
pub fn ctl_json(endpoints: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-w", "json"]);
    let out = ctl(endpoints, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}: {out}"))
}

/// A long-running `etcdctl` (watch, lock, elect, make-mirror) whose output
/// is collected as it comes; killed when dropped.
pub struct Background {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The threads copying its output: joined once it exited, so that
    /// everything it printed is collected.
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    mut from: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let sink = Arc::new(Mutex::new(String::new()));
    let to = Arc::clone(&sink);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            to.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (sink, reader)
}

impl Background {
    /// Starts `etcdctl --endpoints=ENDPOINTS ARGS...` with a piped stdin.
    pub fn etcdctl(endpoints: &str, args: &[&str]) -> Background {
        let mut child = etcdctl_command(endpoints, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl runs (scripts/setup installs it)");
        let stdin = child.stdin.take();
        let (stdout, out_reader) = collect(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect(child.stderr.take().unwrap());
        Background { child, stdin, stdout, stderr, readers: vec![out_reader, err_reader] }
    }

    /// What it printed so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until its output satisfies `check`; false if `within` passed.
    pub fn wait_for(&self, within: Duration, check: impl Fn(&str) -> bool) -> bool {
        wait_until(within, || check(&self.stdout.lock().unwrap()))
    }

    /// Writes one line to its stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends it a signal by name (`INT`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} {}", self.child.id());
    }

    /// Waits for it to exit; `None` if it still runs after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST path` with a JSON `body` to the gateway on `addr`: the raw answer.
pub fn http_post(addr: SocketAddr, path: &str, body: &str) -> String {
    use std::io::Read as _;
    let wait = Duration::from_secs(30);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, wait).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    raw
}

/// Decodes standard base64 (etcdctl's JSON output encodes keys and
/// values so).
pub fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64 digit") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A base64 JSON string as text.
pub fn b64_str(value: &serde_json::Value) -> String {
    String::from_utf8(base64_decode(value.as_str().unwrap_or_default())).unwrap()
}

/// `etcdctl member promote ID` (ID in hex), retried while the leader
/// refuses because the learner is not yet in sync. An attempt whose answer
/// was lost (a timeout) may still have promoted it; a later attempt then
/// hears "can only promote a learner member", which counts as done only if
/// such an uncertain attempt came first and the member list agrees.
///
/// # Errors
/// Every attempt's outcome, if it was not promoted within `within`.
pub fn promote(endpoints: &str, id: &str, within: Duration) -> Result<(), String> {
    const NOT_READY: &str =
        "etcdserver: can only promote a learner member which is in sync with leader";
    const NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
    let mut attempts = Vec::new();
    let mut uncertain = false;
    let promoted = wait_until(within, || {
        let out = etcdctl(endpoints, &["member", "promote", id]);
        let error = out.stderr.lines().filter(|l| l.starts_with("Error: ")).collect::<Vec<_>>();
        attempts.push(format!("{} {}", out.stdout.trim(), error.join(" ")));
        // etcdctl prints member ids here as `%16x` (space-padded).
        if out.ok {
            return out.stdout.starts_with(&format!("Member {id:>16} promoted in cluster "));
        }
        if out.stderr.contains(NOT_READY) {
            return false;
        }
        if uncertain && out.stderr.contains(NOT_LEARNER) {
            let list = etcdctl(endpoints, &["member", "list"]).stdout;
            return list
                .lines()
                .any(|l| l.starts_with(&format!("{id}, ")) && l.ends_with(", false"));
        }
        uncertain = true;
        false
    });
    if promoted { Ok(()) } else { Err(attempts.join("\n")) }
}

/// The `ETCD_INITIAL_CLUSTER` that `etcdctl member add` printed (what the
/// new member starts with).
#[track_caller]
pub fn initial_cluster(added: &str) -> String {
    assert!(added.starts_with("Member ") && added.contains(" added to cluster "), "{added}");
    added
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{added}"))
        .to_owned()
}
