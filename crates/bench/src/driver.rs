//! Runs a [`Plan`]: connects to each endpoint set, preloads, then runs the
//! measured repetitions, alternating between the endpoint sets.
//!
//! One phase (preload, warmup or a measured repetition) is a set of client
//! tasks sharing an operation counter: a client takes the next operation
//! number ("ticket"), waits for its due time on an open-loop schedule,
//! sends one request over its connection and records the answer in its
//! own [`Recorder`]. Clients are spread round-robin over the connections;
//! connections round-robin over the endpoints.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng as _};
use ringkv_api::etcdserverpb::cluster_client::ClusterClient;
use ringkv_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_api::etcdserverpb::request_op::Request as TxnOp;
use ringkv_api::etcdserverpb::response_op::Response as TxnAnswer;
use ringkv_api::etcdserverpb::watch_client::WatchClient;
use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_api::etcdserverpb::{
    Compare, MemberListRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use ringkv_api::mvccpb::event::EventType;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use crate::args::{Bound, Consistency, Plan, ServerPids, TargetSpec, WATCH_STAMP_BYTES, Workload};
use crate::cpu::{CpuMeter, listening_pids, own_cpu, process_cpu};
use crate::error::BenchError;
use crate::keys::{Distribution, KeyChooser, KeySpace};
use crate::report::{Ratios, Report, Summary, TargetReport};
use crate::schedule::{Dispatch, Schedule};
use crate::stats::{OpKind, Recorder, RunFacts, RunStats, WatchStats};

/// How long to wait for a TCP connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the progress bar is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// After the last put of a watch run, how long watchers may take to see
/// the events still in flight before the missing ones are counted as such.
const WATCH_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two checks of whether the watchers have caught up.
const WATCH_DRAIN_POLL: Duration = Duration::from_millis(2);

/// Byte the values are filled with (after the watch stamp).
const VALUE_FILL: u8 = b'v';

/// One endpoint set, connected.
struct Target {
    spec: TargetSpec,
    channels: Vec<Channel>,
    meter: CpuMeter,
    /// Txn workload: the latest mod revision known of each key (0: none
    /// known, as for a missing key), shared by all clients and kept across
    /// repetitions; filled by the preload's answers, then by each txn's.
    /// A stale entry costs one failed compare, which refreshes it.
    revisions: Option<Arc<[AtomicI64]>>,
}

/// Runs `plan` to its report.
pub(crate) async fn run_plan(plan: Plan) -> Result<Report, BenchError> {
    let mut targets = Vec::new();
    for spec in &plan.targets {
        targets.push(connect(spec, &plan).await?);
    }
    if plan.preload {
        for target in &targets {
            preload(target, &plan).await?;
        }
    }
    let mut runs: Vec<Vec<RunStats>> = vec![Vec::new(); targets.len()];
    for repetition in 0..plan.repeat {
        // A, B, A, B, …: drift on the machine (other load, page cache,
        // compaction) spreads over both rather than favouring one.
        for (target, runs) in targets.iter().zip(&mut runs) {
            runs.push(measure(target, &plan, repetition).await?);
        }
    }
    let reports: Vec<TargetReport> = targets
        .into_iter()
        .zip(runs)
        .map(|(target, repetitions)| TargetReport {
            label: target.spec.label,
            endpoints: target.spec.endpoints,
            server_pids: target.meter.pids().to_vec(),
            median: Summary::of(&repetitions),
            repetitions,
        })
        .collect();
    let ratios = match reports.as_slice() {
        [a, b] => Some(Ratios::of(&a.median, &b.median)),
        _ => None,
    };
    Ok(Report { config: plan.config(), targets: reports, ratios })
}

/// Opens `plan.conns` connections to `spec`'s endpoints and finds its
/// server processes.
async fn connect(spec: &TargetSpec, plan: &Plan) -> Result<Target, BenchError> {
    let mut channels = Vec::new();
    for url in spec.endpoints.iter().cycle().take(conns(plan)) {
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| BenchError::BadEndpoint { endpoint: url.clone(), reason: e.to_string() })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| BenchError::Connect { endpoint: url.clone(), source })?;
        channels.push(channel);
    }
    let pids = match &spec.server_pids {
        ServerPids::None => Vec::new(),
        ServerPids::List(pids) => {
            for &pid in pids {
                process_cpu(pid).map_err(|source| BenchError::ServerPid { pid, source })?;
            }
            pids.clone()
        }
        ServerPids::Auto => {
            // Every member's client URL, not only the ones given: a put
            // costs CPU on the followers too.
            let mut urls = spec.endpoints.clone();
            let mut cluster = ClusterClient::new(channels[0].clone());
            if let Ok(Ok(members)) = tokio::time::timeout(
                plan.timeout,
                cluster.member_list(MemberListRequest::default()),
            )
            .await
            {
                urls.extend(members.into_inner().members.into_iter().flat_map(|m| m.client_urls));
            }
            urls.sort();
            urls.dedup();
            tokio::task::spawn_blocking(move || listening_pids(&urls)).await.unwrap_or_default()
        }
    };
    let revisions = (plan.workload == Workload::Txn).then(|| {
        (0..plan.key_space.size()).map(|_| AtomicI64::new(0)).collect::<Arc<[AtomicI64]>>()
    });
    Ok(Target { spec: spec.clone(), channels, meter: CpuMeter::new(pids), revisions })
}

fn conns(plan: &Plan) -> usize {
    usize::try_from(plan.conns).expect("bounded by CONNS_MAX")
}

/// Writes every key of the space once, unmeasured.
async fn preload(target: &Target, plan: &Plan) -> Result<(), BenchError> {
    let ctx = Ctx {
        workload: Workload::Put,
        chooser: KeyChooser::new(Distribution::Sequential, plan.key_space.size(), 1.0)?,
        ..Ctx::new(plan)?
    };
    let label = format!("{} preload", target.spec.label);
    let bound = Bound::Count(plan.key_space.size());
    let outcome = run_phase(target, plan, &ctx, bound, None, u64::MAX, &label).await?;
    let failed = outcome.recorder.errors();
    if failed > 0 {
        return Err(BenchError::Preload {
            target: target.spec.label.clone(),
            key_space: plan.key_space.size(),
            failed,
            first_error: outcome.recorder.first_error().unwrap_or_default().to_owned(),
        });
    }
    Ok(())
}

/// One measured repetition (after its warmup).
async fn measure(target: &Target, plan: &Plan, repetition: u32) -> Result<RunStats, BenchError> {
    let ctx = Ctx::new(plan)?;
    let schedule = plan.rate.map(Schedule::new);
    let of = format!("{}/{}", repetition + 1, plan.repeat);
    if !plan.warmup.is_zero() {
        let label = format!("{} warmup {of}", target.spec.label);
        let phase_seed = u64::from(plan.repeat) + u64::from(repetition);
        run_phase(target, plan, &ctx, Bound::Time(plan.warmup), schedule, phase_seed, &label)
            .await?;
    }
    let label = format!("{} {} {of}", target.spec.label, plan.workload.name());
    let outcome =
        run_phase(target, plan, &ctx, plan.bound, schedule, u64::from(repetition), &label).await?;
    let (load, primary): (&'static [OpKind], &'static [OpKind]) = match plan.workload {
        Workload::Put => (&[OpKind::Put], &[OpKind::Put]),
        Workload::Get => (&[OpKind::Get], &[OpKind::Get]),
        Workload::Range => (&[OpKind::Range], &[OpKind::Range]),
        Workload::Txn => (&[OpKind::Txn], &[OpKind::Txn]),
        Workload::Watch => (&[OpKind::Put], &[OpKind::Watch]),
        Workload::Mixed => (&[OpKind::Get, OpKind::Put], &[OpKind::Get, OpKind::Put]),
    };
    Ok(outcome.recorder.into_stats(RunFacts {
        load,
        primary,
        elapsed: outcome.elapsed,
        server_cpu: outcome.server_cpu,
        client_cpu: outcome.client_cpu,
        watch: outcome.watch,
    }))
}

/// What every client of a phase needs to know.
#[derive(Clone, Debug)]
struct Ctx {
    workload: Workload,
    keys: KeySpace,
    chooser: KeyChooser,
    value_size: usize,
    consistency: Consistency,
    range_keys: u64,
    read_ratio: f64,
    timeout: Duration,
    clients: u64,
    watchers: u64,
    seed: u64,
}

impl Ctx {
    fn new(plan: &Plan) -> Result<Ctx, BenchError> {
        Ok(Ctx {
            workload: plan.workload,
            keys: plan.key_space.clone(),
            chooser: KeyChooser::new(plan.distribution, plan.key_space.size(), plan.zipf_exponent)?,
            value_size: plan.value_size,
            consistency: plan.consistency,
            range_keys: plan.range_keys,
            read_ratio: plan.read_ratio,
            timeout: plan.timeout,
            clients: plan.clients,
            watchers: plan.watchers,
            seed: plan.seed,
        })
    }
}

/// The operation counter and clock of one phase, shared by its clients.
struct Phase {
    /// When the phase began (the schedule's zero).
    start: Instant,
    bound: Bound,
    schedule: Option<Schedule>,
    /// The next operation number. May overshoot the bound by one per
    /// client: a client that draws past it stops.
    tickets: AtomicU64,
    /// Operations answered (or failed), for the progress bar.
    answered: AtomicU64,
    /// Failed requests, for the progress bar.
    errors: AtomicU64,
}

impl Phase {
    /// The next operation and where its latency is measured from; `None`
    /// once the phase is over.
    async fn next(&self) -> Option<(u64, Instant)> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        match self.bound {
            Bound::Count(n) if ticket >= n => return None,
            Bound::Time(d) if now >= self.start + d => return None,
            _ => {}
        }
        let Some(schedule) = self.schedule else { return Some((ticket, now)) };
        match schedule.plan(ticket, now - self.start) {
            Dispatch::Late { measure_from } => Some((ticket, self.start + measure_from)),
            Dispatch::Wait { due } => {
                if let Bound::Time(d) = self.bound
                    && due >= d
                {
                    return None;
                }
                tokio::time::sleep_until((self.start + due).into()).await;
                Some((ticket, Instant::now()))
            }
        }
    }
}

/// What a phase measured.
struct PhaseOutcome {
    recorder: Recorder,
    elapsed: Duration,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
    watch: Option<WatchStats>,
}

/// Runs one phase of `ctx.workload` against `target` until `bound`.
async fn run_phase(
    target: &Target,
    plan: &Plan,
    ctx: &Ctx,
    bound: Bound,
    schedule: Option<Schedule>,
    phase_seed: u64,
    label: &str,
) -> Result<PhaseOutcome, BenchError> {
    // Watch stamps count from `base`, known to putters and watchers alike.
    let base = Instant::now();
    let watchers = if ctx.workload == Workload::Watch {
        Some(Watchers::start(target, ctx, base).await?)
    } else {
        None
    };
    let bar = progress_bar(plan, label, bound);
    let (cpu_before, own_before) = (target.meter.sample(), own_cpu());
    let phase = Arc::new(Phase {
        start: Instant::now(),
        bound,
        schedule,
        tickets: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let ctx = Arc::new(ctx.clone());
    let mut clients = JoinSet::new();
    for i in 0..ctx.clients {
        let channel =
            target.channels[usize::try_from(i).expect("bounded") % target.channels.len()].clone();
        let client = Client {
            kv: KvClient::new(channel),
            rng: SmallRng::seed_from_u64(client_seed(ctx.seed, phase_seed, i)),
            recorder: Recorder::new(),
            revisions: target.revisions.clone(),
            base,
        };
        clients.spawn(client.run(Arc::clone(&phase), Arc::clone(&ctx)));
    }
    let ticker = tokio::spawn(tick_progress(bar.clone(), Arc::clone(&phase)));
    let mut recorder = Recorder::new();
    while let Some(done) = clients.join_next().await {
        recorder.merge(done.expect("a client task does not panic"));
    }
    let elapsed = phase.start.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let watch = match watchers {
        Some(watchers) => {
            let acknowledged = recorder.count(OpKind::Put);
            let (watch_recorder, stats) = watchers.finish(acknowledged).await;
            recorder.merge(watch_recorder);
            Some(stats)
        }
        None => None,
    };
    let server_cpu = cpu_before.zip(target.meter.sample()).map(|(b, a)| a.saturating_sub(b));
    let client_cpu = own_before.zip(own_cpu()).map(|(b, a)| a.saturating_sub(b));
    Ok(PhaseOutcome { recorder, elapsed, server_cpu, client_cpu, watch })
}

/// A seed per client and phase, the same for every endpoint set, so that
/// both sides of a comparison draw the same keys.
fn client_seed(seed: u64, phase: u64, client: u64) -> u64 {
    // SplitMix64's finalizer over the three: nearby inputs, unrelated seeds.
    let mut z = seed
        ^ phase.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ client.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One client: one request in flight at a time.
struct Client {
    kv: KvClient<Channel>,
    rng: SmallRng,
    recorder: Recorder,
    /// The target's revision table (txn workload and its preload).
    revisions: Option<Arc<[AtomicI64]>>,
    /// Zero of the watch stamps.
    base: Instant,
}

impl Client {
    async fn run(mut self, phase: Arc<Phase>, ctx: Arc<Ctx>) -> Recorder {
        while let Some((ticket, measure_from)) = phase.next().await {
            let ok = self.one(&ctx, ticket, measure_from).await;
            if !ok {
                phase.errors.fetch_add(1, Ordering::Relaxed);
            }
            phase.answered.fetch_add(1, Ordering::Relaxed);
        }
        self.recorder
    }

    /// Sends operation `ticket` and records its answer; false on an error.
    async fn one(&mut self, ctx: &Ctx, ticket: u64, measure_from: Instant) -> bool {
        let index = ctx.chooser.next(&mut self.rng, ticket);
        let key = ctx.keys.key(index);
        let serializable = ctx.consistency == Consistency::Serializable;
        let kind = match ctx.workload {
            Workload::Put | Workload::Watch => OpKind::Put,
            Workload::Get => OpKind::Get,
            Workload::Range => OpKind::Range,
            Workload::Txn => OpKind::Txn,
            Workload::Mixed if self.rng.random_bool(ctx.read_ratio) => OpKind::Get,
            Workload::Mixed => OpKind::Put,
        };
        let result = match kind {
            OpKind::Put => {
                let value = self.value(ctx, measure_from);
                let request = PutRequest { key, value, ..PutRequest::default() };
                deadline(ctx.timeout, self.kv.put(request)).await.map(|answer| {
                    // The txn workload's preload: its compares start from
                    // the revisions written here.
                    if let Some(revisions) = &self.revisions {
                        let revision = answer.into_inner().header.map_or(0, |h| h.revision);
                        revisions[slot(index)].store(revision, Ordering::Relaxed);
                    }
                })
            }
            OpKind::Get => {
                let request = RangeRequest { key, serializable, ..RangeRequest::default() };
                deadline(ctx.timeout, self.kv.range(request)).await.map(drop)
            }
            OpKind::Range => {
                let end = (index + ctx.range_keys).min(ctx.keys.size());
                let range_end = ctx.keys.key(end);
                let request =
                    RangeRequest { key, range_end, serializable, ..RangeRequest::default() };
                deadline(ctx.timeout, self.kv.range(request)).await.map(drop)
            }
            OpKind::Txn => self.compare_and_set(ctx, index, key, measure_from).await,
            OpKind::Watch => unreachable!("watch events are recorded by watchers"),
        };
        match result {
            Ok(()) => {
                self.recorder.record(kind, measure_from.elapsed());
                true
            }
            Err(status) => {
                self.recorder.record_error(&status);
                false
            }
        }
    }

    /// The value to write: `value_size` bytes, the first eight the send
    /// time for the watch workload.
    fn value(&self, ctx: &Ctx, measure_from: Instant) -> Vec<u8> {
        let mut value = vec![VALUE_FILL; ctx.value_size];
        if ctx.workload == Workload::Watch {
            let stamp = u64::try_from(measure_from.saturating_duration_since(self.base).as_nanos())
                .unwrap_or(u64::MAX);
            value[..WATCH_STAMP_BYTES].copy_from_slice(&stamp.to_le_bytes());
        }
        value
    }

    /// If the key's mod revision is the latest known, put; else read the
    /// key, to learn its current revision for the next try.
    async fn compare_and_set(
        &mut self,
        ctx: &Ctx,
        index: u64,
        key: Vec<u8>,
        measure_from: Instant,
    ) -> Result<(), tonic::Status> {
        let revisions = Arc::clone(self.revisions.as_ref().expect("txn targets keep revisions"));
        let known = &revisions[slot(index)];
        let expected = known.load(Ordering::Relaxed);
        let request = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal.into(),
                target: CompareTarget::Mod.into(),
                key: key.clone(),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::ModRevision(expected)),
            }],
            success: vec![RequestOp {
                request: Some(TxnOp::RequestPut(PutRequest {
                    key: key.clone(),
                    value: self.value(ctx, measure_from),
                    ..PutRequest::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(TxnOp::RequestRange(RangeRequest { key, ..RangeRequest::default() })),
            }],
        };
        let answer = deadline(ctx.timeout, self.kv.txn(request)).await?.into_inner();
        let revision = if answer.succeeded {
            answer.header.map_or(0, |h| h.revision)
        } else {
            match answer.responses.into_iter().next().and_then(|r| r.response) {
                Some(TxnAnswer::ResponseRange(range)) => {
                    range.kvs.first().map_or(0, |kv| kv.mod_revision)
                }
                _ => 0,
            }
        };
        known.store(revision, Ordering::Relaxed);
        self.recorder.record_txn_outcome(answer.succeeded);
        Ok(())
    }
}

/// A key index as a position in the revision table (which has one entry
/// per key, so the index fits).
fn slot(index: u64) -> usize {
    usize::try_from(index).expect("key indices of a txn space are below TXN_KEY_SPACE_MAX")
}

/// Awaits `call` for at most `timeout`.
async fn deadline<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| {
        Err(tonic::Status::deadline_exceeded(format!("no answer within --timeout {timeout:?}")))
    })
}

/// The watch streams of one watch phase.
struct Watchers {
    tasks: JoinSet<(Recorder, u64)>,
    received: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    count: u64,
}

impl Watchers {
    /// Opens `ctx.watchers` streams over the whole key space and waits
    /// until the server confirms each.
    async fn start(target: &Target, ctx: &Ctx, base: Instant) -> Result<Watchers, BenchError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let received = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for w in 0..ctx.watchers {
            let slot = usize::try_from(w).expect("bounded") % target.channels.len();
            let endpoint = target.spec.endpoints[slot % target.spec.endpoints.len()].clone();
            let create = WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: ctx.keys.key(0),
                    range_end: ctx.keys.key(ctx.keys.size()),
                    ..WatchCreateRequest::default()
                })),
            };
            let requests = watch_requests(create, stopped.clone());
            let mut client = WatchClient::new(target.channels[slot].clone());
            let opened = tokio::time::timeout(ctx.timeout, client.watch(requests)).await;
            let mut stream = match opened {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => {
                    return Err(BenchError::WatchStart { endpoint, status: Box::new(status) });
                }
                Err(_) => {
                    return Err(BenchError::WatchNotCreated {
                        endpoint,
                        what: format!("no answer within --timeout {:?}", ctx.timeout),
                    });
                }
            };
            match tokio::time::timeout(ctx.timeout, stream.message()).await {
                Ok(Ok(Some(first))) if first.created && !first.canceled => {}
                Ok(Ok(Some(other))) => {
                    return Err(BenchError::WatchNotCreated {
                        endpoint,
                        what: format!("{other:?}"),
                    });
                }
                Ok(Ok(None)) => {
                    return Err(BenchError::WatchNotCreated {
                        endpoint,
                        what: "the stream ended".to_owned(),
                    });
                }
                Ok(Err(status)) => {
                    return Err(BenchError::WatchStart { endpoint, status: Box::new(status) });
                }
                Err(_) => {
                    return Err(BenchError::WatchNotCreated {
                        endpoint,
                        what: format!("nothing within --timeout {:?}", ctx.timeout),
                    });
                }
            }
            tasks.spawn(watch_loop(stream, base, stopped.clone(), Arc::clone(&received)));
        }
        Ok(Watchers { tasks, received, stop, count: ctx.watchers })
    }

    /// Waits until every watcher saw the events of the `acknowledged` puts
    /// (or [`WATCH_DRAIN_TIMEOUT`] passed), then closes the streams.
    async fn finish(mut self, acknowledged: u64) -> (Recorder, WatchStats) {
        let expected = acknowledged * self.count;
        let deadline = Instant::now() + WATCH_DRAIN_TIMEOUT;
        while self.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(WATCH_DRAIN_POLL).await;
        }
        // Receivers are owned by the tasks; an error here only means every
        // task has ended already.
        let _ = self.stop.send(true);
        let mut recorder = Recorder::new();
        let (mut received, mut missing) = (0, 0);
        while let Some(done) = self.tasks.join_next().await {
            let (watcher, seen) = done.expect("a watcher task does not panic");
            recorder.merge(watcher);
            received += seen;
            missing += acknowledged.saturating_sub(seen);
        }
        let stats = WatchStats {
            watchers: self.count,
            events_expected: expected,
            events_received: received,
            events_missing: missing,
        };
        (recorder, stats)
    }
}

/// A watch's request stream: `create`, then nothing until `stop` turns
/// true (or its sender is gone), then its end. Ending it lets the watcher
/// task's drop of the response leave no handle to the HTTP/2 stream, which
/// is then reset (CANCEL) and the server closes the watch. A request
/// stream that never ended kept every phase's watchers open on the
/// server, which then delivered each event to the warmup's and every
/// earlier repetition's streams too.
fn watch_requests(
    create: WatchRequest,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = WatchRequest> + Send + 'static {
    futures_util::stream::iter([create]).chain(
        futures_util::stream::once(async move {
            // An error only means the sender is gone: end too.
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .filter_map(|()| std::future::ready(None::<WatchRequest>)),
    )
}

/// Records each put event's latency from its stamp until `stop`; returns
/// the recorder and the number of put events seen.
async fn watch_loop(
    mut stream: tonic::Streaming<ringkv_api::etcdserverpb::WatchResponse>,
    base: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
    received: Arc<AtomicU64>,
) -> (Recorder, u64) {
    let mut recorder = Recorder::new();
    let mut seen = 0;
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.changed() => break,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(response)) => {
                if response.canceled {
                    recorder.record_error(&tonic::Status::aborted(format!(
                        "watch canceled by the server: {}",
                        response.cancel_reason
                    )));
                    break;
                }
                let now = Instant::now();
                for event in response.events {
                    if event.r#type != i32::from(EventType::Put) {
                        continue;
                    }
                    let Some(stamp) = event
                        .kv
                        .as_ref()
                        .and_then(|kv| kv.value.get(..WATCH_STAMP_BYTES))
                        .and_then(|b| <[u8; WATCH_STAMP_BYTES]>::try_from(b).ok())
                    else {
                        continue;
                    };
                    let sent = base + Duration::from_nanos(u64::from_le_bytes(stamp));
                    recorder.record(OpKind::Watch, now.saturating_duration_since(sent));
                    seen += 1;
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(None) => {
                recorder.record_error(&tonic::Status::unavailable("the server ended the watch"));
                break;
            }
            Err(status) => {
                recorder.record_error(&status);
                break;
            }
        }
    }
    (recorder, seen)
}

/// A progress bar on stderr, hidden unless stdout and stderr are terminals
/// (a report piped to a file or a script stays clean).
fn progress_bar(plan: &Plan, label: &str, bound: Bound) -> ProgressBar {
    let visible =
        plan.progress && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let length = match bound {
        Bound::Count(n) => n,
        Bound::Time(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    };
    let style = ProgressStyle::with_template("{prefix:>20} [{bar:30}] {percent:>3}% {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(length), target)
        .with_style(style)
        .with_prefix(label.to_owned())
}

async fn tick_progress(bar: ProgressBar, phase: Arc<Phase>) {
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        interval.tick().await;
        let answered = phase.answered.load(Ordering::Relaxed);
        let errors = phase.errors.load(Ordering::Relaxed);
        let elapsed = phase.start.elapsed();
        let position = match phase.bound {
            Bound::Count(_) => answered,
            Bound::Time(_) => u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        };
        #[allow(clippy::cast_precision_loss, reason = "a display figure")]
        let rate = answered as f64 / elapsed.as_secs_f64().max(1e-3);
        bar.set_position(position);
        bar.set_message(format!("{answered} ops, {rate:.0}/s, {errors} errors"));
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    // `now_or_never` polls once: a stream that fails to end fails the
    // test instead of hanging it.

    #[tokio::test]
    async fn watch_requests_end_once_the_phase_stops() {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest::default())),
        };
        let mut requests = Box::pin(watch_requests(create.clone(), stopped));
        assert_eq!(requests.next().now_or_never(), Some(Some(create)));
        // Still open while the phase runs: the server must keep the watch.
        assert_eq!(requests.next().now_or_never(), None);
        stop.send(true).unwrap();
        assert_eq!(requests.next().now_or_never(), Some(None));
    }

    #[tokio::test]
    async fn watch_requests_end_when_the_stop_sender_is_gone() {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut requests = Box::pin(watch_requests(WatchRequest::default(), stopped));
        assert!(requests.next().now_or_never().is_some_and(|r| r.is_some()));
        drop(stop);
        assert_eq!(requests.next().now_or_never(), Some(None));
    }
}
