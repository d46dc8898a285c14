//! Differential test: one script of writes and watch requests run against
//! etcd 3.4 (Debian's `etcd-server`, installed by `scripts/setup`) and
//! against ringkv's watch service; every step must draw the same watch
//! responses from both, field for field.
//!
//! What is compared, per step: the store's revision after a write, and
//! every response the step causes on the watch stream (header revision,
//! watch id, created / canceled, compact revision, cancel reason, events
//! with kinds, keys, values, revisions, versions and `prev_kv`). Only what
//! names the member is blanked (cluster id, member id, raft term), and a
//! step's responses are ordered by watch id (stably), because etcd hands
//! one revision to its watchers in map order.
//!
//! The script runs one step at a time and lets each settle, so response
//! boundaries are deterministic on both sides: ringkv runs first, and a
//! step is over when every watcher is synced and a progress request is
//! answered (ringkv answers only then, after everything queued); etcd then
//! runs the same step until it has sent as many responses as ringkv did,
//! and an extra etcd response shows up as a mismatch of a later step.
//! Every history watcher in the script has history to send, so that etcd,
//! which syncs watchers in the background, has moved it to its live set
//! before the next write.
//!
//! Not scripted, because they differ on purpose (see the `watch` module
//! docs) or are impractical on a one-member etcd: negative watch ids and
//! start revisions, progress requests while a watcher catches up (etcd 3.4
//! answers them at once, ahead of events in flight, the bug etcd 3.5
//! fixed; ringkv gives 3.5's answer), `progress_notify` (etcd's interval is
//! ten minutes), fragmentation (etcd splits at 2 MiB), `hasleader`.
//!
//! The test fails, loudly, when `etcd` is not installed.

use std::net::TcpListener;
use std::process::{self, Child, Stdio};

use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_api::etcdserverpb::watch_create_request::FilterType;
use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_api::etcdserverpb::{
    self as pb, RangeRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
};
use ringkv_api::mvccpb::event::EventType;
use tonic::transport::Channel;

use super::service::{Client, Server, serve};
use super::*;
use crate::watch::stream::INVALID_WATCH_ID;

/// Readiness polls of a starting etcd, and the pause between them.
const START_POLLS: u32 = 600;
const START_POLL_PAUSE: Duration = Duration::from_millis(100);

/// How long etcd may take to send what ringkv sent for one step before the
/// test fails (etcd syncs catching-up watchers every 100 ms; the machine is
/// shared, so the bound is generous and nothing asserts on time).
const STEP_WAIT: Duration = Duration::from_secs(30);

/// Pause between looks at the hub while ringkv's watchers catch up.
const SYNC_POLL: Duration = Duration::from_millis(2);

/// An etcd 3.4 member on loopback ports, killed on drop (so also when the
/// test panics).
struct Etcd {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Etcd {
    async fn start() -> (Etcd, KvClient<Channel>) {
        let version = process::Command::new("etcd").arg("--version").output().unwrap_or_else(|e| {
            panic!(
                "cannot run `etcd` ({e}): this test needs etcd 3.4 on PATH; run scripts/setup, \
                 which installs Debian's etcd-server"
            )
        });
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        assert!(version.contains("etcd Version: 3.4."), "expected etcd 3.4, found: {version}");
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = process::Command::new("etcd")
            .args(["--name", "watch-differential"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster=watch-differential=http://127.0.0.1:{peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let mut etcd = Etcd { child, endpoint: format!("http://127.0.0.1:{client}"), dir };
        let kv = etcd.wait_ready().await;
        (etcd, kv)
    }

    async fn wait_ready(&mut self) -> KvClient<Channel> {
        for _ in 0..START_POLLS {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("etcd exited ({status}) while starting:\n{}", self.log());
            }
            let probe = async {
                let mut kv = KvClient::connect(self.endpoint.clone()).await.ok()?;
                let req = RangeRequest { key: b"probe".to_vec(), ..RangeRequest::default() };
                kv.range(req).await.ok()?;
                Some(kv)
            };
            if let Ok(Some(kv)) = tokio::time::timeout(START_POLL_PAUSE * 10, probe).await {
                return kv;
            }
            tokio::time::sleep(START_POLL_PAUSE).await;
        }
        panic!("etcd did not become ready:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Only the child this test started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One step of the script.
#[derive(Clone, Debug)]
enum Step {
    Put(&'static str, &'static str),
    /// `DeleteRange(key, range_end)`.
    Delete(&'static str, &'static str),
    /// One revision doing every operation, in this order.
    Txn(&'static [Op]),
    /// Physical compaction at this revision.
    Compact(i64),
    Create(WatchCreateRequest),
    Cancel(i64),
    Progress,
}

impl Step {
    /// What the step sends on the watch stream.
    fn request(&self) -> Option<RequestUnion> {
        match self {
            Step::Create(req) => Some(RequestUnion::CreateRequest(req.clone())),
            Step::Cancel(watch_id) => {
                Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: *watch_id }))
            }
            Step::Progress => Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
            Step::Put(..) | Step::Delete(..) | Step::Txn(_) | Step::Compact(_) => None,
        }
    }
}

/// An operation of a [`Step::Txn`].
#[derive(Clone, Copy, Debug)]
enum Op {
    Put(&'static str, &'static str),
    /// Deletes one key.
    Delete(&'static str),
}

/// The script. Revisions start at 1 (an empty store), as in etcd; the
/// comments give each write's revision and what each step must show.
fn script() -> Vec<Step> {
    use Step::{Cancel, Compact, Create, Delete, Progress, Put, Txn};
    let prev_kv = |req| WatchCreateRequest { prev_kv: true, ..req };
    let filter = |f: FilterType, req| WatchCreateRequest { filters: vec![f as i32], ..req };
    let with_id = |watch_id, req| WatchCreateRequest { watch_id, ..req };
    vec![
        // History.
        Put("k1", "v1"),  // 2
        Put("k2", "v2"),  // 3
        Put("k1", "v3"),  // 4
        Delete("k2", ""), // 5
        // Events of one revision come in the order of the writes (k4 first).
        Txn(&[Op::Put("k4", "t4"), Op::Put("k3", "t3")]), // 6
        Put("other", "o"),                                // 7
        Put("k3", "v5"),                                  // 8
        // A range delete: k1, k3, k4, in key order.
        Delete("k", "l"), // 9
        // Re-created: a create event, version 1, no prev_kv.
        Put("k2", "v6"), // 10
        Compact(4),
        // The stream's first request: answered even without watchers.
        Progress,
        // id 0: history from the compacted revision itself (still there);
        // the event at 4 has no prev_kv (its previous revision is gone).
        Create(prev_kv(create("k", "l", 4))),
        // id 1: live only.
        Create(prev_kv(create("k1", "", 0))),
        // id 10, chosen by the client; deletes only (the puts at 6, 7 and
        // 8 are filtered out), from key k3 on.
        Create(with_id(10, filter(FilterType::Noput, create("k3", "\0", 5)))),
        // id 2: created, then canceled with compact_revision 4.
        Create(create("k", "l", 2)),
        // Refused: id 10 is taken; then an empty range.
        Create(with_id(10, create("x", "", 0))),
        Create(create("b", "a", 0)),
        // id 3: every key (empty key, "\0" end), puts only.
        Create(filter(FilterType::Nodelete, create("", "\0", 0))),
        // id 4: [k2, k4) from 9: the delete of k3 with its prev_kv, and
        // k2's re-creation.
        Create(prev_kv(create("k2", "k4", 9))),
        Progress,
        // Live. 11: ids 0, 1 (creates: no prev_kv) and 3.
        Put("k1", "live1"),
        // 12: id 10 only.
        Delete("other", ""),
        // 13: ids 0, 1 and 3.
        Txn(&[Op::Put("z", "tz"), Op::Put("k4", "t4b"), Op::Put("k1", "t1")]),
        // 14: ids 0, 3 and 4.
        Put("k2", "live2"),
        Progress,
        Cancel(1),
        // An unknown id: no answer.
        Cancel(1),
        Put("k1", "after-cancel"), // 15: ids 0, 3
        // k1, k2, k4: id 0 all three, id 10 k4, id 4 k2 with prev_kv.
        Delete("k1", "k5"), // 16
        // Deletes nothing: no revision, no event.
        Delete("nope", ""),
        // id 5 (auto ids go on from 4, whatever was canceled).
        Create(create("k", "l", 15)),
        Put("k3", "back"), // 17: ids 0, 3, 4, 5
        // A revision the filters split: id 10 gets the delete of k3 only,
        // id 3 the puts only.
        Txn(&[Op::Put("k4", "again"), Op::Delete("k3"), Op::Put("a", "first")]), // 18
        Progress,
    ]
}

/// Where the script's writes go.
enum Store {
    Etcd(KvClient<Channel>),
    Ringkv(Server),
}

impl Store {
    /// Applies a write step; returns the store's revision after it, as the
    /// store reports it (`None` for other steps and for compaction).
    async fn write(&mut self, step: &Step) -> Option<i64> {
        match self {
            Store::Ringkv(server) => {
                let w = &mut server.writer;
                match *step {
                    Step::Put(key, value) => Some(w.put(key, value).0),
                    Step::Delete(key, end) => Some(w.delete(key, end).0),
                    Step::Txn(ops) => Some(w.run(ringkv_txn(ops)).0),
                    Step::Compact(revision) => {
                        w.compact(Revision(revision));
                        None
                    }
                    Step::Create(_) | Step::Cancel(_) | Step::Progress => None,
                }
            }
            Store::Etcd(kv) => {
                let bytes = |s: &str| s.as_bytes().to_vec();
                let put = |key, value| pb::PutRequest {
                    key: bytes(key),
                    value: bytes(value),
                    ..pb::PutRequest::default()
                };
                let call = async {
                    let header = match *step {
                        Step::Put(key, value) => kv.put(put(key, value)).await?.into_inner().header,
                        Step::Delete(key, end) => {
                            let req = pb::DeleteRangeRequest {
                                key: bytes(key),
                                range_end: bytes(end),
                                ..pb::DeleteRangeRequest::default()
                            };
                            kv.delete_range(req).await?.into_inner().header
                        }
                        Step::Txn(ops) => {
                            use pb::request_op::Request;
                            let op = |op: &Op| match *op {
                                Op::Put(key, value) => Request::RequestPut(put(key, value)),
                                Op::Delete(key) => {
                                    Request::RequestDeleteRange(pb::DeleteRangeRequest {
                                        key: bytes(key),
                                        ..pb::DeleteRangeRequest::default()
                                    })
                                }
                            };
                            let success = ops
                                .iter()
                                .map(|o| pb::RequestOp { request: Some(op(o)) })
                                .collect();
                            let req = pb::TxnRequest { success, ..pb::TxnRequest::default() };
                            kv.txn(req).await?.into_inner().header
                        }
                        Step::Compact(revision) => {
                            let req = pb::CompactionRequest { revision, physical: true };
                            kv.compact(req).await?;
                            None
                        }
                        Step::Create(_) | Step::Cancel(_) | Step::Progress => None,
                    };
                    Ok::<_, tonic::Status>(header.map(|h| h.revision))
                };
                let answer = tokio::time::timeout(WAIT, call).await;
                answer.unwrap_or_else(|_| panic!("etcd did not answer {step:?}")).unwrap()
            }
        }
    }
}

/// The store command of a [`Step::Txn`].
fn ringkv_txn(ops: &[Op]) -> Command {
    let op = |op: &Op| match *op {
        Op::Put(key, value) => RequestOp::Put(put_request(key, value)),
        Op::Delete(key) => RequestOp::DeleteRange(DeleteRangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::new(),
            prev_kv: false,
        }),
    };
    Command::Txn(TxnRequest {
        compare: Vec::new(),
        success: ops.iter().map(op).collect(),
        failure: Vec::new(),
    })
}

/// What one step drew from one side.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// The store's revision after a write.
    revision: Option<i64>,
    /// The watch responses the step caused, normalized.
    responses: Vec<WatchResponse>,
}

/// Blanks what names the member, and orders by watch id (stably: one
/// watcher's responses keep their order).
fn normalize(mut responses: Vec<WatchResponse>) -> Vec<WatchResponse> {
    for resp in &mut responses {
        let header = resp.header.as_mut().expect("every watch response has a header");
        header.cluster_id = 0;
        header.member_id = 0;
        header.raft_term = 0;
    }
    responses.sort_by_key(|r| r.watch_id);
    responses
}

/// A stream-wide progress response (a refused create also carries id -1,
/// but is `created`).
fn is_progress(resp: &WatchResponse) -> bool {
    resp.watch_id == INVALID_WATCH_ID && !resp.created && !resp.canceled
}

/// Waits until ringkv has said everything `step` causes, and returns it:
/// the create's answer first (so the hub knows the watcher), then every
/// watcher synced (history queued or canceled), then a progress request,
/// which ringkv answers after everything already queued.
async fn settle_ringkv(hub: &WatchHub, client: &mut Client, step: &Step) -> Vec<WatchResponse> {
    let mut responses = Vec::new();
    if let Step::Create(_) = step {
        loop {
            let resp = client.next().await;
            let created = resp.created;
            responses.push(resp);
            if created {
                break;
            }
        }
    }
    let synced = async {
        while hub.stats().synced < hub.stats().watchers {
            tokio::time::sleep(SYNC_POLL).await;
        }
    };
    tokio::time::timeout(WAIT, synced).await.expect("ringkv's watchers caught up");
    client.send(RequestUnion::ProgressRequest(WatchProgressRequest {})).await;
    // A scripted progress request was answered first.
    let mut barrier = if let Step::Progress = step { 2 } else { 1 };
    loop {
        let resp = client.next().await;
        if is_progress(&resp) {
            barrier -= 1;
            if barrier == 0 {
                return responses;
            }
        }
        responses.push(resp);
    }
}

/// Takes `count` responses from etcd; fails after [`STEP_WAIT`].
async fn take_etcd(client: &mut Client, count: usize, step: &Step) -> Vec<WatchResponse> {
    let mut responses = Vec::new();
    let took = tokio::time::timeout(STEP_WAIT, async {
        while responses.len() < count {
            responses.push(client.next().await);
        }
    })
    .await;
    assert!(took.is_ok(), "etcd sent {responses:#?} for {step:?}, where ringkv sent {count}");
    responses
}

/// Runs the script against `store`, watching through `endpoint`. ringkv
/// (`reference` is `None`) settles each step itself; etcd takes as many
/// responses per step as ringkv gave, and each step is compared at once.
async fn run(store: &mut Store, endpoint: &str, reference: Option<&[Outcome]>) -> Vec<Outcome> {
    let mut client: Option<Client> = None;
    let mut outcomes = Vec::new();
    for (i, step) in script().iter().enumerate() {
        let revision = store.write(step).await;
        if let Some(request) = step.request() {
            match &client {
                Some(c) => c.send(request).await,
                None => {
                    let open = Client::open_with(endpoint, false, Some(request));
                    let opened = tokio::time::timeout(WAIT, open).await;
                    client = Some(opened.expect("the watch stream opened in time").unwrap());
                }
            }
        }
        let responses = match (&mut client, &*store, reference) {
            (None, ..) => Vec::new(),
            (Some(c), Store::Ringkv(server), None) => settle_ringkv(&server.hub, c, step).await,
            (Some(c), Store::Etcd(_), Some(reference)) => {
                take_etcd(c, reference[i].responses.len(), step).await
            }
            _ => unreachable!("ringkv is the reference, etcd is compared with it"),
        };
        let outcome = Outcome { revision, responses: normalize(responses) };
        if let Some(reference) = reference {
            assert_eq!(
                outcome, reference[i],
                "step {i}, {step:?}: etcd (left) and ringkv (right) differ"
            );
        }
        outcomes.push(outcome);
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_say_what_etcd_34_says() {
    let (etcd, kv) = Etcd::start().await;
    let server = serve(WatchConfig::default()).await;
    let endpoint = server.endpoint.clone();
    let ours = run(&mut Store::Ringkv(server), &endpoint, None).await;
    let theirs = run(&mut Store::Etcd(kv), &etcd.endpoint, Some(&ours)).await;
    assert_eq!(theirs, ours);

    // The script reaches what it means to, so the comparison is not vacuous.
    let all: Vec<&WatchResponse> = ours.iter().flat_map(|o| &o.responses).collect();
    let events = || all.iter().flat_map(|r| &r.events);
    let has = |f: &dyn Fn(&WatchResponse) -> bool| all.iter().any(|r| f(r));
    assert!(has(&|r| r.canceled && r.compact_revision == 4), "a compaction cancel");
    assert!(has(&|r| r.cancel_reason.contains("duplicate watch ID")));
    assert!(has(&|r| r.cancel_reason.contains("range is empty")));
    assert!(has(&|r| r.canceled && r.watch_id == 1 && r.compact_revision == 0));
    assert!(has(&|r| r.events.len() > 1), "a response with several events");
    assert!(has(&|r| r.watch_id == 10 && !r.events.is_empty()), "a client-chosen id");
    assert!(has(&|r| r.watch_id == 5 && !r.events.is_empty()), "auto ids go on after a cancel");
    assert!(events().any(|e| e.prev_kv.is_some()));
    assert!(events().any(|e| e.r#type == EventType::Delete as i32));
    assert_eq!(all.iter().filter(|r| is_progress(r)).count(), 4, "every progress answered");
    assert_eq!(ours.last().unwrap().responses[0].header.as_ref().unwrap().revision, 18);
}
