//! The nemesis: faults on a schedule, each healed before the next.
//!
//! The schedule is drawn from the run's seed: a quiet period uniform in
//! `[I/2, I]`, then one fault from the enabled families held for a time
//! uniform in `[I/2, 3I/2]` (`I` is `--nemesis-interval`), then its heal,
//! and again, until the clients' phase ends. Then everything is healed
//! (see [`Ctx::quiesce`]). Every start and end goes to the fault timeline.
//!
//! | family | faults | heal |
//! | --- | --- | --- |
//! | `kill` | SIGKILL the leader, a follower, a random node, or a majority | restart them |
//! | `kill-leader` | SIGKILL the leader | restart it |
//! | `pause` | SIGSTOP the leader or a random node | SIGCONT |
//! | `partition` | isolate one node or the leader; majority/minority halves; a bridge (two sides that only one node joins); one node deaf to the others (one-way) | flush the rules |
//! | `loss` | drop a random share (10–50 %) of packets between every pair of nodes | flush the rules |
//! | `disk` | fill the small tmpfs under one node's data directory, then write 8 MiB (which every node's state machine must store) | free it, restart the node, disarm NOSPACE |
//! | `clock` | move one node's clock 5–60 s (libfaketime): on even nodes the wall clock alone, forward or back; on odd nodes the monotonic clock too, forward only | move the wall clock back; a monotonic jump stays (clocks never run backwards) |
//! | `clock-back` | move both clocks of one node 5–60 s either way (harsher than real clocks: a monotonic clock never goes back; lease expiry is delayed by the jump) | move them back |
//! | `member` | SIGKILL a follower and remove it (`MemberRemove`) | wipe it, `MemberAdd` it, start it joining |
//! | `wal` | SIGKILL a node, tear or bit-flip its last WAL batch | restart it |
//! | `rolling-restart` | restart every member one at a time, the leader too, in an order drawn from the seed; each stopped by SIGTERM (graceful, SIGKILL after [`GRACEFUL_STOP_TIMEOUT`]) or SIGKILL, drawn from the seed, started again, and healthy (its status, a linearizable member list and a linearizable read over every shard answered) before the next | none: every node runs again |
//!
//! A rolling restart is one fault per node in the timeline
//! (`rolling-restart-term` or `rolling-restart-kill`, ending when the node
//! is healthy again); it takes as long as it takes, with no hold after it.
//! Its detail names the node `leader` when it led the metadata group (the
//! leader `Status` reports); on several shards the data shards' leaders
//! are spread over the nodes, and each round restarts every node.
//! A node not healthy within [`RESTART_HEALTHY_TIMEOUT`] is an
//! `unhealthy-after-restart` anomaly and ends the round (restarting the
//! next node then could take a quorum away). The end of the clients'
//! phase cuts a round short: the node being restarted is left to the
//! final heal.
//!
//! What it catches: recovery bugs a restart exposes. Planted once in the
//! node (an applied index restored up to 5 entries ahead of the state
//! machine, as when it is persisted before the data it covers), the CI run
//! on 8 shards was found not linearizable by both engines about a second
//! after the first restart. What it cannot catch: a missing fsync (a
//! SIGKILLed process leaves its writes in the page cache; the `wal`
//! nemesis and the simulator's disk model cover torn and lost writes),
//! nor one node losing its log tail while a quorum stays up (consensus
//! repairs it from the others; losing a quorum's copies needs `kill`'s
//! majority variant).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use ringkv_api::etcdserverpb::{
    AlarmRequest, MemberAddRequest, MemberListRequest, MemberRemoveRequest, PutRequest,
    alarm_request,
};

use crate::client::{OpError, call};
use crate::cluster::{fakes_monotonic, write_clock_offset};
use crate::config::NemesisKind;
use crate::error::ChaosError;
use crate::net::{Layout, NAME_PREFIX, Netns};
use crate::report::Anomaly;
use crate::run::{Ctx, POLL_INTERVAL};
use crate::sys;
use crate::wal::{self, Damage};
use crate::workload::{KEY_PREFIX, range_prefix};

/// Size of the tmpfs the disk nemesis puts under its node's data
/// directory: room for one preallocated 64 MiB WAL segment, the state
/// machine, and a second segment.
pub const DISK_TMPFS_BYTES: u64 = 256 << 20;

/// Large writes the disk nemesis makes once the disk is full.
pub const DISK_TRIGGER_WRITES: usize = 8;

/// Size of each of them (within etcd's default request limit of 1.5 MiB).
pub const DISK_TRIGGER_VALUE_BYTES: usize = 1 << 20;

/// Smallest clock jump, in seconds.
pub const CLOCK_JUMP_SECONDS_MIN: i64 = 5;
/// Largest clock jump, in seconds.
pub const CLOCK_JUMP_SECONDS_MAX: i64 = 60;

/// Packet-loss probabilities the loss nemesis picks from.
pub const LOSS_PROBABILITIES: [f64; 3] = [0.1, 0.25, 0.5];

/// How long a membership request may take.
pub const MEMBER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a node sent SIGTERM by the rolling restart may take to exit
/// before it is SIGKILLed (a graceful stop drains its connections).
pub const GRACEFUL_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a restarted node may take to be healthy again (its status, a
/// linearizable member list and a linearizable read answered) before the
/// rolling restart reports it.
pub const RESTART_HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one health probe request may take.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The node the disk nemesis fills: always the same one, since its tmpfs
/// is mounted before it starts.
pub fn disk_node(nodes: usize) -> usize {
    nodes - 1
}

/// A tmpfs mounted under a node's directory for the disk nemesis;
/// unmounted on drop.
#[derive(Debug)]
pub struct DiskMount {
    handle: DiskHandle,
}

/// What the nemesis needs to know of the disk mount.
#[derive(Clone, Debug)]
pub struct DiskHandle {
    /// The mount point.
    pub mount: PathBuf,
    /// The data directory inside it.
    pub data_dir: PathBuf,
    /// The node.
    pub node: usize,
}

impl DiskMount {
    /// Mounts a [`DISK_TMPFS_BYTES`] tmpfs at `<node dir>/disk` and returns
    /// it; the node's data directory is to be `<mount>/data`.
    ///
    /// # Errors
    /// [`ChaosError::NotRoot`] or a failed `mount`.
    pub fn mount(node_dir: &Path, node: usize) -> Result<DiskMount, ChaosError> {
        if !sys::is_root() {
            return Err(ChaosError::Config {
                setting: "--nemesis",
                why: "disk needs root to mount a tmpfs".to_owned(),
            });
        }
        let mount = node_dir.join("disk");
        std::fs::create_dir_all(&mount).map_err(ChaosError::io("creating", &mount))?;
        let source = format!("{NAME_PREFIX}{}disk", std::process::id());
        let size = format!("size={DISK_TMPFS_BYTES}");
        let target = mount.display().to_string();
        sys::run("mount", &["-t", "tmpfs", "-o", &size, &source, &target])?;
        let data_dir = mount.join("data");
        Ok(DiskMount { handle: DiskHandle { mount, data_dir, node } })
    }

    /// The handle for the nemesis.
    pub fn handle(&self) -> DiskHandle {
        self.handle.clone()
    }
}

impl Drop for DiskMount {
    fn drop(&mut self) {
        let target = self.handle.mount.display().to_string();
        if let Err(e) = sys::run("umount", &["-l", &target]) {
            tracing::warn!("teardown: {e}");
        }
    }
}

/// A fault in force, with what it takes to heal it.
#[derive(Debug)]
enum Active {
    Killed(Vec<usize>),
    Paused(Vec<usize>),
    Network,
    DiskFull(usize),
    Clock(usize),
    Removed { node: usize, removed: bool },
    WalDamaged(usize),
}

/// How a restarted node's wait for health ended.
#[derive(Debug)]
enum Health {
    /// It passed the probe.
    Healthy,
    /// The clients' phase ended first.
    Stopped,
    /// Its process exited by itself.
    Exited,
    /// It did not pass within [`RESTART_HEALTHY_TIMEOUT`]; the last error.
    TimedOut(OpError),
}

/// The fault injector of a run.
#[derive(Debug)]
pub struct Nemesis {
    ctx: Arc<Ctx>,
    layout: Arc<Layout>,
    disk: Option<DiskHandle>,
    kinds: Vec<NemesisKind>,
    rng: ChaCha8Rng,
    /// The name of the fault in force.
    current: Option<String>,
    /// Each node's clock offset when no clock fault is in force, seconds:
    /// 0, or what forward monotonic jumps added up to.
    clock_offsets: Vec<i64>,
}

/// The generator stream of the nemesis (workers use their index).
const NEMESIS_RNG_STREAM: u64 = 1 << 32;

impl Nemesis {
    /// A nemesis injecting faults of `kinds`.
    pub fn new(
        ctx: Arc<Ctx>,
        layout: Arc<Layout>,
        disk: Option<DiskHandle>,
        kinds: Vec<NemesisKind>,
    ) -> Nemesis {
        let rng = ctx.rng(NEMESIS_RNG_STREAM);
        let nodes = ctx.nodes();
        Nemesis { ctx, layout, disk, kinds, rng, current: None, clock_offsets: vec![0; nodes] }
    }

    fn netns(&self) -> Option<&Netns> {
        self.layout.netns()
    }

    /// Injects faults until `stop` turns true, then heals everything.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let interval = self.ctx.args.nemesis_interval;
        while !self.kinds.is_empty() {
            let quiet = self.between(interval / 2, interval);
            if sleep_or_stop(quiet, &mut stop).await {
                break;
            }
            let kind = *self.kinds.choose(&mut self.rng).expect("not empty");
            if kind == NemesisKind::RollingRestart {
                // Nothing stays broken: no hold, no heal.
                if self.rolling_restart(&mut stop).await {
                    break;
                }
                continue;
            }
            let active = match self.inject(kind).await {
                Ok(active) => active,
                Err(e) => {
                    self.harness_error(kind.as_str(), &e);
                    None
                }
            };
            let hold = self.between(interval / 2, interval * 3 / 2);
            let stopped = sleep_or_stop(hold, &mut stop).await;
            if let Some(active) = active {
                self.heal(active).await;
            }
            if stopped {
                break;
            }
        }
        self.heal_all().await;
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let (low, high) =
            (low.as_millis() as u64, high.as_millis().max(low.as_millis() + 1) as u64);
        Duration::from_millis(self.rng.random_range(low..high))
    }

    fn harness_error(&self, fault: &str, e: &dyn std::fmt::Display) {
        self.ctx.recorder.fault("error", fault, &[], e.to_string());
        self.ctx.anomaly(Anomaly::new("harness", format!("the {fault} nemesis failed: {e}")));
    }

    /// Nodes running and not paused.
    fn up(&self) -> Vec<usize> {
        self.ctx.cluster.lock().expect("no panic while holding the lock").up()
    }

    async fn leader(&self) -> Option<usize> {
        let up = self.up();
        self.ctx.clients.likely_leader(&up).await.filter(|l| up.contains(l))
    }

    async fn inject(&mut self, kind: NemesisKind) -> Result<Option<Active>, ChaosError> {
        let n = self.ctx.nodes();
        let up = self.up();
        if up.is_empty() {
            return Ok(None);
        }
        let leader = self.leader().await;
        match kind {
            // Run by `rolling_restart`, which needs the stop signal.
            NemesisKind::None | NemesisKind::RollingRestart => Ok(None),
            NemesisKind::Kill | NemesisKind::KillLeader => {
                let variants: &[&str] = if kind == NemesisKind::KillLeader {
                    &["leader"]
                } else {
                    &["leader", "follower", "random", "majority"]
                };
                let variant = *variants.choose(&mut self.rng).expect("not empty");
                let targets = match variant {
                    "leader" => leader.into_iter().collect(),
                    "follower" => {
                        let f: Vec<usize> =
                            up.iter().copied().filter(|&i| Some(i) != leader).collect();
                        f.choose(&mut self.rng).into_iter().copied().collect()
                    }
                    "majority" => {
                        let mut all: Vec<usize> = (0..n).collect();
                        all.shuffle(&mut self.rng);
                        all.truncate(n / 2 + 1);
                        all.sort_unstable();
                        all
                    }
                    _ => up.choose(&mut self.rng).into_iter().copied().collect::<Vec<_>>(),
                };
                if targets.is_empty() {
                    return Ok(None);
                }
                {
                    let mut c = self.ctx.cluster.lock().expect("no panic while holding the lock");
                    for &i in &targets {
                        c.kill(i);
                    }
                }
                self.started(&format!("kill-{variant}"), &targets, String::new());
                Ok(Some(Active::Killed(targets)))
            }
            NemesisKind::Pause => {
                let (variant, target) = if self.rng.random_bool(0.5) && leader.is_some() {
                    ("leader", leader)
                } else {
                    ("random", up.choose(&mut self.rng).copied())
                };
                let Some(target) = target else { return Ok(None) };
                self.ctx.cluster.lock().expect("no panic while holding the lock").pause(target);
                self.started(&format!("pause-{variant}"), &[target], String::new());
                Ok(Some(Active::Paused(vec![target])))
            }
            NemesisKind::Partition => {
                let layout = Arc::clone(&self.layout);
                let Some(netns) = layout.netns() else { return Ok(None) };
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut self.rng);
                let variant = *["isolate", "isolate-leader", "halves", "bridge", "one-way"]
                    .choose(&mut self.rng)
                    .expect("not empty");
                let mut cuts: Vec<(usize, usize)> = Vec::new();
                // The nodes named in the timeline: the smaller side (or the bridge).
                let named: Vec<usize>;
                let both = |a: &[usize], b: &[usize], cuts: &mut Vec<(usize, usize)>| {
                    for &x in a {
                        for &y in b {
                            cuts.push((x, y));
                            cuts.push((y, x));
                        }
                    }
                };
                let described;
                match variant {
                    "isolate" | "isolate-leader" | "one-way" => {
                        let lone = if variant == "isolate-leader" {
                            leader.unwrap_or(order[0])
                        } else {
                            order[0]
                        };
                        let rest: Vec<usize> = (0..n).filter(|&i| i != lone).collect();
                        if variant == "one-way" {
                            // The lone node hears nobody; the others still hear it.
                            for &r in &rest {
                                cuts.push((lone, r));
                            }
                            described = format!("n{lone} drops everything from {rest:?}");
                            named = vec![lone];
                        } else {
                            both(&[lone], &rest, &mut cuts);
                            described = format!("n{lone} | {rest:?}");
                            named = vec![lone];
                        }
                    }
                    "halves" => {
                        let (minority, majority) = order.split_at(n / 2);
                        both(minority, majority, &mut cuts);
                        described = format!("{minority:?} | {majority:?}");
                        named = minority.to_vec();
                    }
                    _ => {
                        // bridge: two sides that only the bridge node sees both of.
                        let bridge = order[0];
                        let rest = &order[1..];
                        let (a, b) = rest.split_at(rest.len() / 2);
                        both(a, b, &mut cuts);
                        described = format!("{a:?} | {b:?}, bridged by n{bridge}");
                        named = vec![bridge];
                    }
                }
                for &(at, from) in &cuts {
                    netns.drop_from(at, from, None)?;
                }
                self.started(&format!("partition-{variant}"), &named, described);
                Ok(Some(Active::Network))
            }
            NemesisKind::Loss => {
                let layout = Arc::clone(&self.layout);
                let Some(netns) = layout.netns() else { return Ok(None) };
                let p = *LOSS_PROBABILITIES.choose(&mut self.rng).expect("not empty");
                for at in 0..n {
                    for from in (0..n).filter(|&f| f != at) {
                        netns.drop_from(at, from, Some(p))?;
                    }
                }
                self.started("loss", &(0..n).collect::<Vec<_>>(), format!("p={p}"));
                Ok(Some(Active::Network))
            }
            NemesisKind::Disk => {
                let Some(disk) = self.disk.clone() else { return Ok(None) };
                let filled = fill_disk(&disk.mount)?;
                // The WAL writes into preallocated space and would not
                // notice: large writes make every node's state machine
                // grow, which on the full disk fails.
                let via = leader.unwrap_or(up[0]);
                let mut kv = self.ctx.clients.node(via).kv.clone();
                let mut acknowledged = 0;
                for i in 0..DISK_TRIGGER_WRITES {
                    self.ctx.note_foreign_write();
                    let req = PutRequest {
                        key: format!("{KEY_PREFIX}disk-trigger/{i}").into_bytes(),
                        value: vec![b'x'; DISK_TRIGGER_VALUE_BYTES],
                        ..PutRequest::default()
                    };
                    if call(self.ctx.args.op_timeout, kv.put(req)).await.is_ok() {
                        acknowledged += 1;
                    }
                }
                let detail = format!(
                    "{filled}; {acknowledged} of {DISK_TRIGGER_WRITES} writes of {DISK_TRIGGER_VALUE_BYTES} bytes acknowledged"
                );
                self.started("disk-full", &[disk.node], detail);
                Ok(Some(Active::DiskFull(disk.node)))
            }
            NemesisKind::Clock => {
                let node = *up.choose(&mut self.rng).expect("not empty");
                let magnitude =
                    self.rng.random_range(CLOCK_JUMP_SECONDS_MIN..=CLOCK_JUMP_SECONDS_MAX);
                let mode = self
                    .ctx
                    .cluster
                    .lock()
                    .expect("no panic while holding the lock")
                    .spec()
                    .faketime;
                let (offset, name) = if fakes_monotonic(mode, node) {
                    // Forward only, and for good: see `fakes_monotonic`.
                    self.clock_offsets[node] += magnitude;
                    (self.clock_offsets[node], "clock-jump-monotonic")
                } else if self.rng.random_bool(0.5) {
                    (magnitude, "clock-jump-wall")
                } else {
                    (-magnitude, "clock-jump-wall")
                };
                write_clock_offset(
                    &self.ctx.cluster.lock().expect("no panic while holding the lock").spec().dir,
                    node,
                    offset,
                )?;
                self.started(name, &[node], format!("{offset:+} s"));
                Ok(Some(Active::Clock(node)))
            }
            NemesisKind::ClockBack => {
                let node = *up.choose(&mut self.rng).expect("not empty");
                let magnitude =
                    self.rng.random_range(CLOCK_JUMP_SECONDS_MIN..=CLOCK_JUMP_SECONDS_MAX);
                let offset = if self.rng.random_bool(0.5) { magnitude } else { -magnitude };
                let dir = self
                    .ctx
                    .cluster
                    .lock()
                    .expect("no panic while holding the lock")
                    .spec()
                    .dir
                    .clone();
                write_clock_offset(&dir, node, offset)?;
                self.started("clock-back", &[node], format!("{offset:+} s, monotonic too"));
                Ok(Some(Active::Clock(node)))
            }
            NemesisKind::Member => {
                let members: Vec<usize> = {
                    let c = self.ctx.cluster.lock().expect("no panic while holding the lock");
                    up.iter().copied().filter(|&i| c.is_member(i)).collect()
                };
                let followers: Vec<usize> =
                    members.iter().copied().filter(|&i| Some(i) != leader).collect();
                let Some(&node) = followers.choose(&mut self.rng) else { return Ok(None) };
                let Some(id) = self.ctx.clients.member_of(node) else { return Ok(None) };
                self.ctx.cluster.lock().expect("no panic while holding the lock").kill(node);
                let via = leader.unwrap_or(members[0]);
                let mut cl = self.ctx.clients.node(via).cluster.clone();
                let answer =
                    call(MEMBER_CALL_TIMEOUT, cl.member_remove(MemberRemoveRequest { id })).await;
                let removed = match &answer {
                    Ok(_) => true,
                    Err(_) => !self.is_listed(id).await.unwrap_or(true),
                };
                if removed {
                    self.ctx
                        .cluster
                        .lock()
                        .expect("no panic while holding the lock")
                        .mark_removed(node);
                }
                let detail = match answer {
                    Ok(_) => format!("member {id:x} removed"),
                    Err(e) => format!("MemberRemove {id:x}: {e}; removed: {removed}"),
                };
                self.started("member-remove", &[node], detail);
                Ok(Some(Active::Removed { node, removed }))
            }
            NemesisKind::Wal => {
                let node = *up.choose(&mut self.rng).expect("not empty");
                let how = if self.rng.random_bool(0.5) { Damage::Torn } else { Damage::BitFlip };
                let data_dir = {
                    let mut c = self.ctx.cluster.lock().expect("no panic while holding the lock");
                    c.kill(node);
                    c.data_dir(node)
                };
                let mut rng =
                    self.ctx.rng(NEMESIS_RNG_STREAM + 1 + self.rng.random_range(0..1u64 << 20));
                let done =
                    wal::damage_last_batch(&data_dir, how, |n| rng.random_range(0..n.max(1)))?;
                let detail =
                    done.unwrap_or_else(|| "no batch in the last segment: killed only".to_owned());
                self.started(how.name(), &[node], detail);
                Ok(Some(Active::WalDamaged(node)))
            }
        }
    }

    /// One round of the rolling restart (see the module docs). Returns
    /// true when `stop` cut it short.
    async fn rolling_restart(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        let mut order: Vec<usize> = {
            let c = self.ctx.cluster.lock().expect("no panic while holding the lock");
            (0..c.len()).filter(|&i| c.is_member(i) && c.is_running(i)).collect()
        };
        order.shuffle(&mut self.rng);
        // Drawn before any restart, so the schedule does not depend on timing.
        let graceful: Vec<bool> = order.iter().map(|_| self.rng.random_bool(0.5)).collect();
        for (step, (&node, &graceful)) in order.iter().zip(&graceful).enumerate() {
            let role = if self.leader().await == Some(node) { "leader" } else { "follower" };
            let name = if graceful { "rolling-restart-term" } else { "rolling-restart-kill" };
            self.started(
                name,
                &[node],
                format!("{role}, step {} of {} in order {order:?}", step + 1, order.len()),
            );
            let stopped = if graceful {
                self.stop_gracefully(node).await
            } else {
                self.ctx.cluster.lock().expect("no panic while holding the lock").kill(node);
                "SIGKILL".to_owned()
            };
            if let Err(e) = self.start_nodes(&[node]) {
                self.current = None;
                self.ctx.recorder.fault("end", name, &[node], format!("{stopped}; start: {e}"));
                self.harness_error(name, &e);
                return false;
            }
            let since = Instant::now();
            let health = self.wait_healthy(node, stop).await;
            self.current = None;
            let took = since.elapsed();
            match health {
                Health::Healthy => {
                    self.ctx.recorder.fault(
                        "end",
                        name,
                        &[node],
                        format!("{stopped}; healthy again after {} ms", took.as_millis()),
                    );
                }
                Health::Stopped => {
                    self.ctx.recorder.fault(
                        "end",
                        name,
                        &[node],
                        format!("{stopped}; the clients' phase ended before it was healthy"),
                    );
                    return true;
                }
                Health::Exited => {
                    // The crash watcher reports the exit itself.
                    self.ctx.recorder.fault(
                        "end",
                        name,
                        &[node],
                        format!("{stopped}; it exited by itself after the restart"),
                    );
                    return false;
                }
                Health::TimedOut(last) => {
                    let detail = format!(
                        "n{node} ({role}) was restarted ({stopped}) but not healthy within \
                         {RESTART_HEALTHY_TIMEOUT:?}: {last}"
                    );
                    self.ctx.recorder.fault("end", name, &[node], detail.clone());
                    let mut a = Anomaly::new("unhealthy-after-restart", detail);
                    a.at_ns = Some(self.ctx.recorder.now_ns());
                    self.ctx.anomaly(a);
                    return false;
                }
            }
        }
        false
    }

    /// SIGTERMs `node` and waits until it exits, SIGKILLing it after
    /// [`GRACEFUL_STOP_TIMEOUT`]; describes what happened.
    async fn stop_gracefully(&self, node: usize) -> String {
        self.ctx.cluster.lock().expect("no panic while holding the lock").terminate(node);
        let since = Instant::now();
        loop {
            let exited = self
                .ctx
                .cluster
                .lock()
                .expect("no panic while holding the lock")
                .reap_terminated(node);
            if let Some(status) = exited {
                return format!(
                    "SIGTERM, exited ({status}) after {} ms",
                    since.elapsed().as_millis()
                );
            }
            if since.elapsed() > GRACEFUL_STOP_TIMEOUT {
                self.ctx.cluster.lock().expect("no panic while holding the lock").kill(node);
                tracing::warn!(node, "still running {GRACEFUL_STOP_TIMEOUT:?} after SIGTERM");
                return format!("SIGTERM, still running after {GRACEFUL_STOP_TIMEOUT:?}: SIGKILL");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls `node` until [`Nemesis::probe_health`] passes.
    async fn wait_healthy(
        &self,
        node: usize,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Health {
        let since = Instant::now();
        loop {
            if !self.ctx.cluster.lock().expect("no panic while holding the lock").is_running(node) {
                return Health::Exited;
            }
            let last = match self.probe_health(node).await {
                Ok(()) => return Health::Healthy,
                Err(e) => e,
            };
            if since.elapsed() > RESTART_HEALTHY_TIMEOUT {
                return Health::TimedOut(last);
            }
            if sleep_or_stop(POLL_INTERVAL, stop).await {
                return Health::Stopped;
            }
        }
    }

    /// Whether `node` serves again: it answers its status (which also
    /// relearns its member id), a linearizable member list (the metadata
    /// group has a leader it reaches), and a linearizable count of the
    /// harness's keys, a range every data shard answers a part of (unless
    /// `--hash-key-segments` pins the prefix to one shard).
    async fn probe_health(&self, node: usize) -> Result<(), OpError> {
        self.ctx.clients.status(node).await?;
        let client = self.ctx.clients.node(node);
        let mut cluster = client.cluster.clone();
        call(HEALTH_PROBE_TIMEOUT, cluster.member_list(MemberListRequest { linearizable: true }))
            .await?;
        let mut kv = client.kv.clone();
        let mut count = range_prefix(KEY_PREFIX.as_bytes());
        count.count_only = true;
        call(HEALTH_PROBE_TIMEOUT, kv.range(count)).await?;
        Ok(())
    }

    async fn is_listed(&self, id: u64) -> Result<bool, OpError> {
        for i in self.up() {
            let mut cl = self.ctx.clients.node(i).cluster.clone();
            if let Ok(list) =
                call(MEMBER_CALL_TIMEOUT, cl.member_list(MemberListRequest { linearizable: true }))
                    .await
            {
                return Ok(list.members.iter().any(|m| m.id == id));
            }
        }
        Err(OpError::timeout(MEMBER_CALL_TIMEOUT))
    }

    /// Records the start of a fault; its end is recorded under the same name.
    fn started(&mut self, name: &str, nodes: &[usize], detail: String) {
        self.ctx.recorder.fault("start", name, nodes, detail);
        self.current = Some(name.to_owned());
    }

    async fn heal(&mut self, active: Active) {
        let rec = Arc::clone(&self.ctx.recorder);
        let name = self.current.take().unwrap_or_default();
        match active {
            Active::Killed(nodes) => {
                let result = self.start_nodes(&nodes);
                rec.fault(
                    "end",
                    &name,
                    &nodes,
                    result.err().map(|e| e.to_string()).unwrap_or_default(),
                );
            }
            Active::WalDamaged(node) => {
                let result = self.start_nodes(&[node]);
                rec.fault(
                    "end",
                    &name,
                    &[node],
                    result.err().map(|e| e.to_string()).unwrap_or_default(),
                );
            }
            Active::Paused(nodes) => {
                let mut c = self.ctx.cluster.lock().expect("no panic while holding the lock");
                for &i in &nodes {
                    c.resume(i);
                }
                drop(c);
                rec.fault("end", &name, &nodes, String::new());
            }
            Active::Network => {
                if let Some(netns) = self.netns() {
                    let result = netns.heal();
                    rec.fault(
                        "end",
                        &name,
                        &[],
                        result.err().map(|e| e.to_string()).unwrap_or_default(),
                    );
                }
            }
            Active::DiskFull(node) => {
                let detail = match self.free_disk(node).await {
                    Ok(d) => d,
                    Err(e) => {
                        self.harness_error("disk", &e);
                        e.to_string()
                    }
                };
                rec.fault("end", &name, &[node], detail);
            }
            Active::Clock(node) => {
                let dir = self
                    .ctx
                    .cluster
                    .lock()
                    .expect("no panic while holding the lock")
                    .spec()
                    .dir
                    .clone();
                let result = write_clock_offset(&dir, node, self.clock_offsets[node]);
                rec.fault(
                    "end",
                    &name,
                    &[node],
                    result.err().map(|e| e.to_string()).unwrap_or_default(),
                );
            }
            Active::Removed { node, removed } => {
                let detail = match self.readd(node, removed).await {
                    Ok(d) => d,
                    Err(e) => {
                        self.harness_error("member", &e);
                        e.to_string()
                    }
                };
                rec.fault("end", &name, &[node], detail);
            }
        }
    }

    fn start_nodes(&self, nodes: &[usize]) -> Result<(), ChaosError> {
        let mut c = self.ctx.cluster.lock().expect("no panic while holding the lock");
        for &i in nodes {
            if c.is_member(i) {
                c.start(i)?;
            }
        }
        Ok(())
    }

    /// Frees the full disk: the ballast goes, the node (whose WAL a failed
    /// write poisons) restarts, and NOSPACE alarms are disarmed, as an
    /// operator would.
    async fn free_disk(&self, node: usize) -> Result<String, ChaosError> {
        let Some(disk) = &self.disk else { return Ok(String::new()) };
        for name in BALLAST_FILES {
            let path = disk.mount.join(name);
            if path.exists() {
                std::fs::remove_file(&path).map_err(ChaosError::io("removing", &path))?;
            }
        }
        {
            let mut c = self.ctx.cluster.lock().expect("no panic while holding the lock");
            c.kill(node);
            c.start(node)?;
        }
        let mut disarmed = Vec::new();
        // The node needs a moment to rejoin; alarms are cluster-wide, so any member can disarm.
        for _ in 0..ALARM_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some(leader) = self.leader().await else { continue };
            let mut m = self.ctx.clients.node(leader).maintenance.clone();
            let get = AlarmRequest {
                action: alarm_request::AlarmAction::Get as i32,
                member_id: 0,
                alarm: 0,
            };
            let Ok(list) = call(MEMBER_CALL_TIMEOUT, m.alarm(get)).await else { continue };
            let mut ok = true;
            for a in list.alarms {
                let off = AlarmRequest {
                    action: alarm_request::AlarmAction::Deactivate as i32,
                    member_id: a.member_id,
                    alarm: a.alarm,
                };
                match call(MEMBER_CALL_TIMEOUT, m.alarm(off)).await {
                    Ok(_) => disarmed.push(format!("{:x}/{}", a.member_id, a.alarm)),
                    Err(_) => ok = false,
                }
            }
            if ok {
                break;
            }
        }
        Ok(format!("ballast removed, n{node} restarted, alarms disarmed: {disarmed:?}"))
    }

    /// Adds a removed node back as a new member and starts it joining.
    async fn readd(&self, node: usize, removed: bool) -> Result<String, ChaosError> {
        if !removed {
            self.start_nodes(&[node])?;
            return Ok("not removed: restarted".to_owned());
        }
        let peer_url =
            self.ctx.cluster.lock().expect("no panic while holding the lock").spec().addrs[node]
                .peer_url();
        let mut last = String::new();
        for _ in 0..ALARM_ATTEMPTS {
            let Some(leader) = self.leader().await else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let mut cl = self.ctx.clients.node(leader).cluster.clone();
            let req = MemberAddRequest { peer_urls: vec![peer_url.clone()], is_learner: false };
            match call(MEMBER_CALL_TIMEOUT, cl.member_add(req)).await {
                Ok(answer) => {
                    let id = answer.member.map_or(0, |m| m.id);
                    let initial = {
                        let c = self.ctx.cluster.lock().expect("no panic while holding the lock");
                        (0..c.len())
                            .filter(|&i| i == node || c.is_member(i))
                            .map(|i| c.initial_cluster_entry(i))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    let mut c = self.ctx.cluster.lock().expect("no panic while holding the lock");
                    c.prepare_join(node, initial)?;
                    c.start(node)?;
                    return Ok(format!("added back as member {id:x}"));
                }
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Err(ChaosError::Config {
            setting: "--nemesis member",
            why: format!("MemberAdd of n{node} kept failing: {last}"),
        })
    }

    /// Heals whatever may still be broken: every paused node resumes, every
    /// rule goes, the disk is freed, clocks are reset, removed members come
    /// back and every member runs.
    async fn heal_all(&mut self) {
        let n = self.ctx.nodes();
        {
            let mut c = self.ctx.cluster.lock().expect("no panic while holding the lock");
            for i in 0..n {
                if c.is_paused(i) {
                    c.resume(i);
                }
            }
        }
        if let Some(netns) = self.netns()
            && let Err(e) = netns.heal()
        {
            self.harness_error("heal", &e);
        }
        if self.kinds.contains(&NemesisKind::Clock) || self.kinds.contains(&NemesisKind::ClockBack)
        {
            let dir = self
                .ctx
                .cluster
                .lock()
                .expect("no panic while holding the lock")
                .spec()
                .dir
                .clone();
            for i in 0..n {
                if let Err(e) = write_clock_offset(&dir, i, self.clock_offsets[i]) {
                    self.harness_error("heal", &e);
                }
            }
        }
        let removed: Vec<usize> = {
            let c = self.ctx.cluster.lock().expect("no panic while holding the lock");
            (0..n).filter(|&i| !c.is_member(i)).collect()
        };
        for node in removed {
            if let Err(e) = self.readd(node, true).await {
                self.harness_error("heal", &e);
            }
        }
        let all: Vec<usize> = (0..n).collect();
        if let Err(e) = self.start_nodes(&all) {
            self.harness_error("heal", &e);
        }
        self.ctx.recorder.fault("end", "all", &all, "healed".to_owned());
    }
}

/// Attempts at disarming alarms and re-adding members.
const ALARM_ATTEMPTS: usize = 20;

/// Files the disk nemesis fills its tmpfs with.
const BALLAST_FILES: [&str; 2] = ["ballast", "ballast-rest"];

/// Fills the filesystem at `mount` to the last byte.
fn fill_disk(mount: &Path) -> Result<String, ChaosError> {
    let target = mount.display().to_string();
    let avail = sys::run("df", &["-B1", "--output=avail", &target])?;
    let avail: u64 = avail.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    let ballast = mount.join(BALLAST_FILES[0]).display().to_string();
    if avail > 0 {
        sys::run("fallocate", &["-l", &avail.to_string(), &ballast])?;
    }
    // Whatever fallocate's rounding left: dd writes until ENOSPC (and then fails, as expected).
    let rest = format!("of={}", mount.join(BALLAST_FILES[1]).display());
    let _ = sys::run("dd", &["if=/dev/zero", &rest, "bs=4096"]);
    Ok(format!("{avail} bytes of ballast"))
}

/// Sleeps `d`, returning early (true) when `stop` turns true.
async fn sleep_or_stop(d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
