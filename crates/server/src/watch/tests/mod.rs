//! Tests of the watch hub and service, on a real in-memory MVCC store whose
//! changes are published the way the node does: apply a command, then hand
//! the hub the entry's events.

mod etcd;
mod hub;
mod random;
mod service;
mod sharded;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ringkv_api::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use ringkv_api::mvccpb;
use ringkv_consensus::{LogIndex, ShardId};
use ringkv_node::WatchEvents;
use ringkv_storage::mvcc::{
    Command, CompactionRequest, DeleteRangeRequest, MvccStore, PutRequest, RequestOp, Revision,
    StoreOptions, TxnRequest,
};

use super::{WatchConfig, WatchContext, WatchHub, WatchStream};
use crate::api::convert::to_pb;

/// The shard the tests watch.
const SHARD: ShardId = ShardId(1);

/// Bounds every wait, so a bug shows as a failure rather than a hung test.
/// Generous: the machine is shared and slow; nothing asserts on time.
const WAIT: Duration = Duration::from_secs(60);

/// Header fields the test context reports.
const CLUSTER_ID: u64 = 0xC1;
const MEMBER_ID: u64 = 0xA1;
const RAFT_TERM: u64 = 5;

/// A runtime stand-in with a switchable leader.
#[derive(Debug)]
struct TestContext {
    leader: AtomicBool,
}

impl TestContext {
    fn new() -> Arc<TestContext> {
        Arc::new(TestContext { leader: AtomicBool::new(true) })
    }

    fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }
}

impl WatchContext for TestContext {
    fn header(&self, revision: Revision) -> ResponseHeader {
        ResponseHeader {
            cluster_id: CLUSTER_ID,
            member_id: MEMBER_ID,
            revision: revision.0,
            raft_term: RAFT_TERM,
        }
    }

    fn has_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }
}

/// Applies commands to the store as the node loop does and publishes each
/// entry's events.
struct Writer {
    store: Arc<MvccStore>,
    hub: Arc<WatchHub>,
    index: u64,
    /// Everything published, in order.
    log: Vec<WatchEvents>,
}

impl Writer {
    /// Applies `command` as the next entry without publishing it.
    fn apply(&mut self, command: Command) -> Option<WatchEvents> {
        self.index += 1;
        let applied = self.store.apply(SHARD, LogIndex(self.index), &command).unwrap();
        let revision = applied.result.unwrap().revision();
        (!applied.events.is_empty()).then(|| WatchEvents {
            shard: SHARD,
            index: LogIndex(self.index),
            revision,
            events: applied.events,
        })
    }

    /// Applies and publishes `command`; returns the store's revision after it.
    fn run(&mut self, command: Command) -> Revision {
        if let Some(batch) = self.apply(command) {
            self.hub.publish(&batch);
            self.log.push(batch);
        }
        self.revision()
    }

    fn revision(&self) -> Revision {
        self.store.read().unwrap().shard_state(SHARD).unwrap().revision
    }

    fn put(&mut self, key: &str, value: &str) -> Revision {
        self.run(put(key, value))
    }

    fn delete(&mut self, key: &str, range_end: &str) -> Revision {
        self.run(Command::DeleteRange(DeleteRangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(range_end.as_bytes()),
            prev_kv: false,
        }))
    }

    fn compact(&mut self, revision: Revision) {
        self.run(Command::Compaction(CompactionRequest { revision, physical: true }));
    }

    /// Every published event in `[key, range_end)` from revision `from` on,
    /// as the wire would carry it.
    fn expected(
        &self,
        key: &str,
        range_end: &str,
        from: Revision,
        prev_kv: bool,
    ) -> Vec<mvccpb::Event> {
        expected_events(&self.log, key, range_end, from, prev_kv)
    }
}

/// The events of `log` a watcher on `[key, range_end)` from `from` must get.
fn expected_events(
    log: &[WatchEvents],
    key: &str,
    range_end: &str,
    from: Revision,
    prev_kv: bool,
) -> Vec<mvccpb::Event> {
    let range =
        super::index::WatchRange::new(Bytes::copy_from_slice(key.as_bytes()), range_end.as_bytes())
            .unwrap();
    log.iter()
        .filter(|b| b.revision >= from)
        .flat_map(|b| b.events.iter())
        .filter(|e| range.contains(&e.kv.key))
        .map(|e| to_pb::event(e.clone(), prev_kv))
        .collect()
}

fn put(key: &str, value: &str) -> Command {
    Command::Put(put_request(key, value))
}

fn put_request(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..PutRequest::default()
    }
}

/// One revision putting every `(key, value)`.
fn txn(puts: &[(&str, &str)]) -> Command {
    Command::Txn(TxnRequest {
        compare: Vec::new(),
        success: puts.iter().map(|(k, v)| RequestOp::Put(put_request(k, v))).collect(),
        failure: Vec::new(),
    })
}

/// A store, a hub on it with `config`, and a writer.
fn setup(config: WatchConfig) -> (Arc<TestContext>, Arc<WatchHub>, Writer) {
    let store = Arc::new(MvccStore::open_in_memory(StoreOptions::default()).unwrap());
    let ctx = TestContext::new();
    let hub = WatchHub::new(Arc::clone(&store), SHARD, ctx.clone(), config).unwrap();
    let writer = Writer { store, hub: Arc::clone(&hub), index: 0, log: Vec::new() };
    (ctx, hub, writer)
}

/// A create request on `[key, range_end)` from `start`.
fn create(key: &str, range_end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.as_bytes().to_vec(),
        start_revision: start,
        ..WatchCreateRequest::default()
    }
}

/// The stream's next response, or a failure after [`WAIT`].
async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(WAIT, stream.next_response())
        .await
        .expect("the stream answered within the test's bound")
}

/// Creates a watcher and returns its id, checking the `created` answer.
async fn created(stream: &mut WatchStream, req: WatchCreateRequest) -> i64 {
    stream.create(req);
    let resp = next(stream).await;
    assert!(resp.created && !resp.canceled, "{resp:?}");
    assert_eq!(resp.header.as_ref().unwrap().cluster_id, CLUSTER_ID);
    resp.watch_id
}

/// Collects watcher `watch_id`'s events until `count` arrived, checking
/// every response on the way: only this watcher's, none empty, revisions
/// never split and never going back.
async fn collect(stream: &mut WatchStream, watch_id: i64, count: usize) -> Vec<mvccpb::Event> {
    let mut events: Vec<mvccpb::Event> = Vec::new();
    while events.len() < count {
        let resp = next(stream).await;
        assert_eq!(resp.watch_id, watch_id, "{resp:?}");
        check_events_response(&resp, events.last());
        events.extend(resp.events);
    }
    assert_eq!(events.len(), count, "no more than expected");
    events
}

/// The rules of a non-fragmented events response.
fn check_events_response(resp: &WatchResponse, before: Option<&mvccpb::Event>) {
    assert!(!resp.created && !resp.canceled && !resp.fragment, "{resp:?}");
    assert!(!resp.events.is_empty(), "an events response has events: {resp:?}");
    let revisions: Vec<i64> = resp.events.iter().map(revision_of).collect();
    assert!(revisions.windows(2).all(|w| w[0] <= w[1]), "in revision order: {revisions:?}");
    if let Some(before) = before {
        assert!(
            revision_of(before) < revisions[0],
            "a revision is never split across responses: {} then {revisions:?}",
            revision_of(before)
        );
    }
    let header = resp.header.as_ref().unwrap().revision;
    assert!(header >= *revisions.last().unwrap(), "header {header} covers {revisions:?}");
}

fn revision_of(e: &mvccpb::Event) -> i64 {
    e.kv.as_ref().unwrap().mod_revision
}

/// Small limits that make every path (paging, overflow, coalescing) run in
/// small tests.
fn tight_config() -> WatchConfig {
    WatchConfig {
        events_buffered_per_watcher_max: 8,
        events_buffered_per_stream_max: 24,
        events_per_response_max: 5,
        replay_page_events: 4,
        ..WatchConfig::default()
    }
}
