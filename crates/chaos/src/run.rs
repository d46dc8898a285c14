//! One chaos run, start to end: layout, cluster, workload and nemesis,
//! recovery, checks, report. See [`run`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::task::JoinHandle;

use crate::client::Clients;
use crate::cluster::{Cluster, ClusterSpec, FakeClock};
use crate::config::{ChaosArgs, NemesisKind};
use crate::error::ChaosError;
use crate::history::Recorder;
use crate::nemesis::{self, DiskMount, Nemesis};
use crate::net::Layout;
use crate::report::{self, Anomaly, Report};
use crate::workload::{self, WorkloadOutcome};

/// How long a new cluster may take to elect a leader every node agrees on.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the healed cluster may take to agree on a leader again; past
/// it, the run reports a liveness failure.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between two polls of the cluster's state.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often the crash watcher looks for nodes that exited on their own.
pub const CRASH_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Worker threads of the harness's runtime (the machine has few cores, and
/// the nodes need them more).
pub const RUNTIME_WORKER_THREADS: usize = 2;

/// Everything the workload's clients and the nemesis share.
#[derive(Debug)]
pub struct Ctx {
    /// The flags.
    pub args: ChaosArgs,
    /// The seed of every random choice.
    pub seed: u64,
    /// The clients of every node.
    pub clients: Clients,
    /// The log of operations and faults.
    pub recorder: Arc<Recorder>,
    /// The processes.
    pub cluster: Arc<Mutex<Cluster>>,
    /// When clients stop issuing operations.
    pub deadline: Instant,
    ops_issued: AtomicU64,
    stopping: AtomicBool,
    stop_nemesis: tokio::sync::watch::Sender<bool>,
    nemesis: Mutex<Option<JoinHandle<()>>>,
    anomalies: Mutex<Vec<Anomaly>>,
    recovery: Mutex<Option<Duration>>,
    /// When the clients' phase ended (ns since the run started), once it has.
    clients_end_ns: AtomicU64,
    /// Writes the nemesis made itself (they take revisions too).
    foreign_writes: AtomicU64,
}

impl Ctx {
    /// Whether a client may issue one more operation (and counts it).
    pub fn next_op(&self) -> bool {
        if self.stopping.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            return false;
        }
        self.ops_issued.fetch_add(1, Ordering::Relaxed) < self.args.ops
    }

    /// Whether the clients' phase is over.
    pub fn is_over(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
            || Instant::now() >= self.deadline
            || self.ops_issued.load(Ordering::Relaxed) >= self.args.ops
    }

    /// A generator for worker `w` (or any other stream), derived from the seed.
    pub fn rng(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }

    /// When the clients' phase ended (ns since the run started; the
    /// current time while it runs).
    pub fn clients_end_ns(&self) -> u64 {
        self.clients_end_ns.load(Ordering::Relaxed).min(self.recorder.now_ns())
    }

    /// Notes a write the nemesis makes (it takes a revision).
    pub fn note_foreign_write(&self) {
        self.foreign_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the nemesis made so far.
    pub fn foreign_writes(&self) -> u64 {
        self.foreign_writes.load(Ordering::Relaxed)
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.args.nodes
    }

    /// Records an anomaly (a checker's or the crash watcher's finding).
    pub fn anomaly(&self, anomaly: Anomaly) {
        tracing::error!(kind = %anomaly.kind, "{}", anomaly.detail);
        self.anomalies.lock().expect("no panic while holding the lock").push(anomaly);
    }

    /// Ends the faults: stops the nemesis, which heals everything (restarts
    /// killed nodes, resumes paused ones, removes every rule, frees the
    /// disk, resets clocks, re-adds removed members), then waits until every
    /// member agrees on a leader. Records a liveness anomaly when that takes
    /// longer than [`RECOVERY_TIMEOUT`]. Idempotent.
    pub async fn quiesce(&self) -> bool {
        self.stopping.store(true, Ordering::Relaxed);
        let now = self.recorder.now_ns();
        let _ = self.clients_end_ns.compare_exchange(
            u64::MAX,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let _ = self.stop_nemesis.send(true);
        let handle = self.nemesis.lock().expect("no panic while holding the lock").take();
        if let Some(handle) = handle {
            if let Err(e) = handle.await {
                self.anomaly(Anomaly::new("harness", format!("the nemesis task failed: {e}")));
            }
        } else if self.recovery.lock().expect("no panic while holding the lock").is_some() {
            return true;
        }
        let start = Instant::now();
        let members: Vec<usize> = {
            let c = self.cluster.lock().expect("no panic while holding the lock");
            (0..c.len()).filter(|&i| c.is_member(i)).collect()
        };
        loop {
            if self.clients.unanimous_leader(&members).await.is_some() {
                let took = start.elapsed();
                tracing::info!(?took, "cluster recovered");
                *self.recovery.lock().expect("no panic while holding the lock") = Some(took);
                return true;
            }
            if start.elapsed() > RECOVERY_TIMEOUT {
                self.anomaly(Anomaly::new(
                    "no-recovery",
                    format!(
                        "every fault was healed, but the members did not agree on a leader within \
                         {RECOVERY_TIMEOUT:?} (see the node logs)"
                    ),
                ));
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Runs one chaos test as `args` says and writes its output directory.
///
/// # Errors
/// A [`ChaosError`] when the harness cannot do its job (no root for
/// namespaces, a cluster that never starts, an unwritable directory). What
/// the checkers find is in the [`Report`], not an error.
pub fn run(args: ChaosArgs) -> Result<Report, ChaosError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKER_THREADS)
        .enable_all()
        .build()
        .map_err(ChaosError::Runtime)?;
    let result = runtime.block_on(async {
        tokio::select! {
            result = run_async(args) => result,
            () = interrupted() => Err(ChaosError::Interrupted),
        }
    });
    // Dropping the runtime drops every task and, with them, the last
    // handles of the cluster: nodes die, then the guards below unwound.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::warn!("interrupted: tearing down the cluster");
}

/// Kills every node when the run ends, however it ends.
struct KillOnDrop(Arc<Mutex<Cluster>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // A panic elsewhere may have poisoned the lock; the processes must die anyway.
        let mut cluster = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cluster.kill_all();
    }
}

async fn run_async(mut args: ChaosArgs) -> Result<Report, ChaosError> {
    let seed = args.seed.unwrap_or_else(rand::random);
    args.seed = Some(seed);
    let nemeses = args.nemeses();
    let netns = !args.no_netns;
    if !netns && let Some(k) = nemeses.iter().find(|k| k.needs_netns()) {
        return Err(ChaosError::Config {
            setting: "--nemesis",
            why: format!(
                "{} needs network namespaces: drop it, or run as root without --no-netns",
                k.as_str()
            ),
        });
    }
    if args.shards > 1
        && let Some(why) = workload::unsharded_only(args.workload)
    {
        return Err(ChaosError::Config {
            setting: "--shards",
            why: format!(
                "the {} workload runs on one shard only: {why}; use --shards 1, or the register, \
                 set or lease workload",
                args.workload.as_str()
            ),
        });
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => PathBuf::from("chaos-runs").join(format!("{}-{seed}", args.workload.as_str())),
    };
    prepare_out(&out)?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(ChaosError::io("finding", "the ringkv binary"))?,
    };
    tracing::info!(seed, out = %out.display(), "chaos run: {}", args.rerun_command(seed));

    // Drop order (reverse of declaration): nodes die, then the disk is
    // unmounted, then the namespaces go.
    let layout = Layout::create(args.nodes, netns)?;
    let disk_node = nemeses.contains(&NemesisKind::Disk).then(|| nemesis::disk_node(args.nodes));
    let mut disk = None;
    let spec = ClusterSpec {
        binary,
        dir: out.clone(),
        addrs: layout.addrs(),
        engine: args.engine,
        heartbeat_ms: args.heartbeat_interval,
        election_ms: args.election_timeout,
        snapshot_count: args.snapshot_count,
        shards: args.shards,
        hash_key_segments: args.hash_key_segments,
        placement_moves: args.placement_moves,
        down_timeout: args.down_timeout,
        faketime: if nemeses.contains(&NemesisKind::ClockBack) {
            FakeClock::Everything
        } else if nemeses.contains(&NemesisKind::Clock) {
            FakeClock::Split
        } else {
            FakeClock::Off
        },
        token: format!("chaos-{seed}-{}", std::process::id()),
    };
    let mut cluster = Cluster::new(spec)?;
    if let Some(node) = disk_node {
        let mount = DiskMount::mount(&crate::cluster::node_dir(&out, node), node)?;
        cluster.set_data_dir(node, mount.handle().data_dir)?;
        disk = Some(mount);
    }
    let cluster = Arc::new(Mutex::new(cluster));
    let _kill = KillOnDrop(Arc::clone(&cluster));
    let urls: Vec<String> = layout.addrs().iter().map(|a| a.client_url()).collect();
    let clients = Clients::new(&urls)?;
    start_cluster(&cluster, &clients, &out).await?;

    let recorder = Arc::new(Recorder::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(Ctx {
        seed,
        clients: clients.clone(),
        recorder: Arc::clone(&recorder),
        cluster: Arc::clone(&cluster),
        deadline: Instant::now() + args.time_limit,
        ops_issued: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
        stop_nemesis: stop_tx,
        nemesis: Mutex::new(None),
        anomalies: Mutex::default(),
        recovery: Mutex::new(None),
        clients_end_ns: AtomicU64::new(u64::MAX),
        foreign_writes: AtomicU64::new(0),
        args: args.clone(),
    });
    let layout = Arc::new(layout);
    let nemesis = Nemesis::new(
        Arc::clone(&ctx),
        Arc::clone(&layout),
        disk.as_ref().map(DiskMount::handle),
        nemeses.clone(),
    );
    *ctx.nemesis.lock().expect("no panic while holding the lock") =
        Some(tokio::spawn(nemesis.run(stop_rx)));
    let watcher = tokio::spawn(watch_crashes(Arc::clone(&ctx)));

    let outcome = workload::run(Arc::clone(&ctx)).await;
    // The workload normally quiesced already (before its final reads).
    ctx.quiesce().await;
    watcher.abort();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            let mut o = WorkloadOutcome::default();
            o.anomalies
                .push(Anomaly::new("harness", format!("the workload could not finish: {e}")));
            o
        }
    };
    let mut anomalies =
        std::mem::take(&mut *ctx.anomalies.lock().expect("no panic while holding the lock"));
    anomalies.extend(outcome.anomalies.iter().cloned());
    let recovery = *ctx.recovery.lock().expect("no panic while holding the lock");
    let report = report::write(&out, &ctx, &outcome, anomalies, recovery)?;
    drop(disk);
    Ok(report)
}

/// Makes `out` (refusing one that holds files of an earlier run, whose
/// history would be mixed with this one's).
fn prepare_out(out: &Path) -> Result<(), ChaosError> {
    if out.join("verdict.json").exists() || out.join("nodes").exists() {
        return Err(ChaosError::Config {
            setting: "--out",
            why: format!(
                "{} holds an earlier run; choose another directory or remove it",
                out.display()
            ),
        });
    }
    std::fs::create_dir_all(out).map_err(ChaosError::io("creating", out))
}

/// Starts every node and waits until they agree on a leader.
async fn start_cluster(
    cluster: &Arc<Mutex<Cluster>>,
    clients: &Clients,
    out: &Path,
) -> Result<(), ChaosError> {
    let n = {
        let mut c = cluster.lock().expect("no panic while holding the lock");
        for i in 0..c.len() {
            c.start(i)?;
        }
        c.len()
    };
    let all: Vec<usize> = (0..n).collect();
    let start = Instant::now();
    loop {
        {
            let mut c = cluster.lock().expect("no panic while holding the lock");
            if let Some((node, status)) = c.reap_exited().into_iter().next() {
                return Err(ChaosError::NodeExited { node, status, log_tail: c.log_tail(node) });
            }
        }
        // Every node must answer (member ids are learned from the answers).
        if clients.unanimous_leader(&all).await.is_some() {
            tracing::info!(took = ?start.elapsed(), "cluster up");
            return Ok(());
        }
        if start.elapsed() > STARTUP_TIMEOUT {
            return Err(ChaosError::NoLeader { within: STARTUP_TIMEOUT, logs: out.join("nodes") });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Reports every node that exits without the nemesis killing it: a crash.
async fn watch_crashes(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(CRASH_POLL_INTERVAL).await;
        let exited = ctx.cluster.lock().expect("no panic while holding the lock").reap_exited();
        for (node, status) in exited {
            let tail = ctx.cluster.lock().expect("no panic while holding the lock").log_tail(node);
            let mut a = Anomaly::new(
                "crash",
                format!("node n{node} exited by itself ({status}); its log ends with:\n{tail}"),
            );
            a.at_ns = Some(ctx.recorder.now_ns());
            ctx.recorder.fault("start", "crash", &[node], status);
            ctx.anomaly(a);
        }
    }
}
