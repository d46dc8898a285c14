//! A client load on a cluster, recorded for `ringkv-lincheck`.
//!
//! Each [`Worker`] is one client connection at a time (over gRPC, with a
//! per-request timeout), doing gets, puts and compare-and-set txns on a few
//! keys and recording every operation with its interval and outcome. An
//! error after the request may have left is an *unknown* outcome (the write
//! may still take effect); the worker then continues as a new lincheck
//! process, as Jepsen does, and moves to the next endpoint. Only a refused
//! connection is a definite failure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_api::etcdserverpb::request_op::Request;
use ringkv_api::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use ringkv_lincheck::{
    Call, Compare as CasCompare, Found, History, Operation, Outcome, ProcessId, Ret, Revision,
    Timestamp,
};
use tonic::transport::{Channel, Endpoint};

/// How long a worker waits for one answer before calling it unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a worker waits for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Pause after an error before the next request (the cluster may be
/// electing).
pub const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Lincheck process ids of one worker: worker `w` uses `w * SPAN + n`.
const PROCESS_SPAN: u64 = 1_000_000;

/// What the workers share: the endpoints to use, the clock, the history.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    history: Arc<Mutex<History>>,
    /// Client URLs; workers pick them round-robin (may change while
    /// running, e.g. when members join).
    pub endpoints: Arc<Mutex<Vec<String>>>,
    /// Completion times of acknowledged writes (puts and successful CAS).
    writes: Arc<Mutex<Vec<Duration>>>,
}

impl Recorder {
    /// A recorder for a load on these endpoints.
    pub fn new(endpoints: Vec<String>) -> Recorder {
        Recorder {
            start: Instant::now(),
            history: Arc::new(Mutex::new(History::new())),
            endpoints: Arc::new(Mutex::new(endpoints)),
            writes: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Time since the recorder started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn stamp(&self) -> Timestamp {
        Timestamp(u64::try_from(self.start.elapsed().as_nanos()).unwrap())
    }

    /// The history so far.
    pub fn history(&self) -> History {
        self.history.lock().unwrap().clone()
    }

    /// Completion times of acknowledged writes, sorted.
    pub fn write_times(&self) -> Vec<Duration> {
        let mut times = self.writes.lock().unwrap().clone();
        times.sort_unstable();
        times
    }

    fn record(&self, op: Operation) {
        self.history.lock().unwrap().push(op).unwrap();
    }
}

/// Counts of what a worker saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Operations answered.
    pub ok: u64,
    /// Operations of unknown outcome.
    pub unknown: u64,
    /// Operations refused before they were sent.
    pub failed: u64,
}

/// One client.
pub struct Worker {
    recorder: Recorder,
    id: u64,
    generation: u64,
    endpoint: usize,
    client: Option<KvClient<Channel>>,
    keys: Vec<Bytes>,
    rng: u64,
    written: u64,
    /// The mod revision this worker last saw per key (for its CAS).
    seen: Vec<u64>,
    /// What happened so far.
    pub tally: Tally,
}

impl Worker {
    /// Worker `id`, on `keys` (a few: they must conflict).
    pub fn new(recorder: Recorder, id: u64, keys: &[&str]) -> Worker {
        Worker {
            recorder,
            id,
            generation: 0,
            endpoint: usize::try_from(id).unwrap(),
            client: None,
            keys: keys.iter().map(|k| Bytes::from(k.to_string())).collect(),
            rng: 0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0xff51_afd7_ed55_8ccd),
            written: 0,
            seen: vec![0; keys.len()],
            tally: Tally::default(),
        }
    }

    fn process(&self) -> ProcessId {
        ProcessId(self.id * PROCESS_SPAN + self.generation)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: a fixed, seeded sequence per worker.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn client(&mut self) -> KvClient<Channel> {
        if let Some(client) = &self.client {
            return client.clone();
        }
        let endpoints = self.recorder.endpoints.lock().unwrap().clone();
        let url = endpoints[self.endpoint % endpoints.len()].clone();
        let channel = Endpoint::from_shared(url)
            .unwrap()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .connect_lazy();
        let client = KvClient::new(channel);
        self.client = Some(client.clone());
        client
    }

    /// After an error: another endpoint, and for an unknown outcome a new
    /// lincheck process (the old one's operation may still be in flight).
    async fn after_error(&mut self, unknown: bool) {
        self.client = None;
        self.endpoint += 1;
        if unknown {
            self.generation += 1;
        }
        tokio::time::sleep(ERROR_BACKOFF).await;
    }

    /// Runs operations until `stop` is set.
    pub async fn run(mut self, stop: Arc<std::sync::atomic::AtomicBool>) -> Tally {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            self.step().await;
        }
        self.tally
    }

    /// One operation: 30% get, 40% put, 30% compare-and-set.
    pub async fn step(&mut self) {
        let k = usize::try_from(self.next_random() % self.keys.len() as u64).unwrap();
        let dice = self.next_random() % 10;
        match dice {
            0..=2 => self.get(k).await,
            3..=6 => {
                let value = self.fresh_value();
                self.put(k, value).await;
            }
            _ => self.cas(k).await,
        }
    }

    fn fresh_value(&mut self) -> Bytes {
        self.written += 1;
        Bytes::from(format!("w{}-{}", self.id, self.written))
    }

    fn finish(&mut self, call: Call, invoked_at: Timestamp, outcome: Outcome) {
        match &outcome {
            Outcome::Ok(_) => self.tally.ok += 1,
            Outcome::Unknown => self.tally.unknown += 1,
            Outcome::Fail => self.tally.failed += 1,
        }
        let completed_at = self.recorder.stamp();
        let acked_write = matches!(
            outcome,
            Outcome::Ok(Ret::Put { .. } | Ret::CompareAndSet { succeeded: true, .. })
        );
        if acked_write {
            self.recorder.writes.lock().unwrap().push(self.recorder.now());
        }
        self.recorder.record(Operation {
            process: self.process(),
            call,
            outcome,
            invoked_at,
            completed_at: Some(completed_at),
        });
    }

    async fn put(&mut self, k: usize, value: Bytes) -> bool {
        self.put_key(self.keys[k].clone(), value).await
    }

    /// Writes `key = value`, recorded. Returns whether it was acknowledged.
    pub async fn put_key(&mut self, key: Bytes, value: Bytes) -> bool {
        let call = Call::Put { key: key.clone(), value: value.clone() };
        let mut client = self.client();
        let invoked_at = self.recorder.stamp();
        let answer = client.put(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        });
        match answer.await {
            Ok(reply) => {
                let revision = reply.into_inner().header.map(|h| Revision(as_u64(h.revision)));
                self.finish(call, invoked_at, Outcome::Ok(Ret::Put { revision }));
                true
            }
            Err(status) => {
                let outcome = classify(&status);
                let unknown = matches!(outcome, Outcome::Unknown);
                self.finish(call, invoked_at, outcome);
                self.after_error(unknown).await;
                false
            }
        }
    }

    async fn get(&mut self, k: usize) {
        if let Some(found) = self.get_key(self.keys[k].clone()).await {
            self.seen[k] = found.as_ref().and_then(|f| f.mod_revision).map_or(0, |r| r.0);
        }
    }

    /// Reads `key` linearizably, recorded: `None` if the read failed,
    /// `Some(None)` if the key is absent.
    pub async fn get_key(&mut self, key: Bytes) -> Option<Option<Found>> {
        let call = Call::Get { key: key.clone() };
        let mut client = self.client();
        let invoked_at = self.recorder.stamp();
        match client.range(RangeRequest { key: key.to_vec(), ..Default::default() }).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                let found = reply.kvs.first().map(|kv| Found {
                    value: Bytes::from(kv.value.clone()),
                    mod_revision: Some(Revision(as_u64(kv.mod_revision))),
                });
                self.finish(call, invoked_at, Outcome::Ok(Ret::Get(found.clone())));
                Some(found)
            }
            Err(status) => {
                let outcome = classify(&status);
                let unknown = matches!(outcome, Outcome::Unknown);
                self.finish(call, invoked_at, outcome);
                self.after_error(unknown).await;
                None
            }
        }
    }

    /// `if mod_revision(key) == last seen { put }`: etcd's usual CAS.
    async fn cas(&mut self, k: usize) {
        let key = self.keys[k].clone();
        let expected = self.seen[k];
        let value = self.fresh_value();
        let call = Call::CompareAndSet {
            key: key.clone(),
            compare: CasCompare::ModRevision(Revision(expected)),
            value: value.clone(),
        };
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.to_vec(),
                target_union: Some(TargetUnion::ModRevision(i64::try_from(expected).unwrap())),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        let mut client = self.client();
        let invoked_at = self.recorder.stamp();
        match client.txn(txn).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                let revision = reply.header.map(|h| as_u64(h.revision));
                if reply.succeeded
                    && let Some(r) = revision
                {
                    self.seen[k] = r;
                }
                let ret = Ret::CompareAndSet {
                    succeeded: reply.succeeded,
                    revision: revision.map(Revision),
                };
                self.finish(call, invoked_at, Outcome::Ok(ret));
            }
            Err(status) => {
                let outcome = classify(&status);
                let unknown = matches!(outcome, Outcome::Unknown);
                self.finish(call, invoked_at, outcome);
                self.after_error(unknown).await;
            }
        }
    }
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap()
}

/// A refused connection never carried the request: a definite failure.
/// Anything else may have reached the leader.
fn classify(status: &tonic::Status) -> Outcome {
    let mut text = status.message().to_owned();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    if text.contains("Connection refused") { Outcome::Fail } else { Outcome::Unknown }
}

/// The longest pause between two consecutive acknowledged writes in
/// `times` (sorted), and the longest one that ends after `at` (a write
/// in flight when the leader was killed may still be acknowledged just
/// after `at`, so the failover pause is the longest one after it).
pub fn gaps(times: &[Duration], at: Duration) -> (Duration, Duration) {
    let pause = |w: &[Duration]| w[1] - w[0];
    let longest = times.windows(2).map(pause).max().unwrap_or_default();
    let after = times.windows(2).filter(|w| w[1] > at).map(pause).max().unwrap_or_default();
    (longest, after)
}
