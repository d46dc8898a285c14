//! Watches over several shards ([`WatchHubs`], [`ClientStream`]), driven
//! directly on a real store whose shards are written as the node writes
//! them: each key to its shard, each shard with its own log and revisions.

use std::collections::{BTreeMap, HashMap};

use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_api::etcdserverpb::{WatchCancelRequest, WatchProgressRequest, WatchRequest};
use ringkv_ring::{HashKeyRule, Keyspace};
use tokio::sync::mpsc;
use tonic::Streaming;

use super::*;
use crate::api::status::REVISION_SPANS_SHARDS;
use crate::watch::stream::INVALID_WATCH_ID;
use crate::watch::{ClientStream, WatchHubs};

const SHARDS: u32 = 4;

/// Writes each key to its shard and publishes through the hubs.
struct ShardedWriter {
    store: Arc<MvccStore>,
    hubs: Arc<WatchHubs>,
    /// Last applied index of each shard.
    applied: BTreeMap<ShardId, u64>,
}

impl ShardedWriter {
    fn shard(&self, key: &str) -> ShardId {
        ShardId(self.hubs.keyspace().shard_of(key.as_bytes()).0)
    }

    /// Applies `command`, which only names keys of `shard`, as that
    /// shard's next entry and publishes its events; returns its revision.
    fn run_on(&mut self, shard: ShardId, command: Command) -> Revision {
        let index = self.applied.entry(shard).or_insert(0);
        *index += 1;
        let applied = self.store.apply(shard, LogIndex(*index), &command).unwrap();
        let revision = applied.result.unwrap().revision();
        if !applied.events.is_empty() {
            self.hubs.publish(&WatchEvents {
                shard,
                index: LogIndex(*index),
                revision,
                events: applied.events,
            });
        }
        revision
    }

    fn put(&mut self, key: &str, value: &str) -> Revision {
        self.run_on(self.shard(key), put(key, value))
    }
}

fn setup_sharded(config: WatchConfig) -> (Arc<WatchHubs>, ShardedWriter) {
    let store = Arc::new(MvccStore::open_in_memory(StoreOptions::default()).unwrap());
    let ctx: Arc<dyn WatchContext> = TestContext::new();
    let keyspace = Keyspace::new(SHARDS, HashKeyRule::WholeKey).unwrap();
    let hubs = WatchHubs::new(&store, keyspace, &ctx, &config).unwrap();
    let writer = ShardedWriter { store, hubs: Arc::clone(&hubs), applied: BTreeMap::new() };
    (hubs, writer)
}

/// `count` keys `prefix<i>` on at least two different shards.
fn spread_keys(w: &ShardedWriter, prefix: &str, count: usize) -> Vec<String> {
    let keys: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    let shards: std::collections::BTreeSet<ShardId> = keys.iter().map(|k| w.shard(k)).collect();
    assert!(shards.len() >= 2, "{count} keys all hash to one shard");
    keys
}

async fn next_of(stream: &mut ClientStream) -> WatchResponse {
    tokio::time::timeout(WAIT, stream.next_response())
        .await
        .expect("the stream answered within the test's bound")
}

fn create_request(req: WatchCreateRequest) -> WatchRequest {
    WatchRequest { request_union: Some(RequestUnion::CreateRequest(req)) }
}

fn cancel_request(watch_id: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
    }
}

/// Whether the stream has nothing to say. Paused time: the wait elapses at
/// once when every task is idle, so this decides, not a clock.
async fn is_silent(stream: &mut ClientStream) -> bool {
    tokio::time::timeout(Duration::from_secs(3600), stream.next_response()).await.is_err()
}

#[tokio::test]
async fn one_shard_is_the_hubs_own_stream() {
    let store = Arc::new(MvccStore::open_in_memory(StoreOptions::default()).unwrap());
    let ctx: Arc<dyn WatchContext> = TestContext::new();
    let keyspace = Keyspace::new(1, HashKeyRule::WholeKey).unwrap();
    let hubs = WatchHubs::new(&store, keyspace, &ctx, &WatchConfig::default()).unwrap();
    assert!(matches!(hubs.open_stream(), ClientStream::One(_)));
    assert_eq!(hubs.first().shard(), ShardId(1));
}

#[tokio::test(start_paused = true)]
async fn a_watch_in_one_shard_has_that_shards_revisions_and_history() {
    let (hubs, mut w) = setup_sharded(WatchConfig::default());
    // A hash tag keeps the prefix in one shard.
    let shard = w.shard("{user1}");
    let first = w.put("{user1}/a", "1");
    let second = w.put("{user1}/b", "2");
    w.put("elsewhere", "x");
    let mut s = hubs.open_stream();
    // From the shard's own revision `second`: history, then live.
    s.handle(create_request(create("{user1}/", "{user1}0", second.0)));
    let resp = next_of(&mut s).await;
    assert!(resp.created && resp.watch_id == 0, "{resp:?}");
    let resp = next_of(&mut s).await;
    assert_eq!(resp.events.len(), 1, "{resp:?}");
    assert_eq!(resp.events[0].kv.as_ref().unwrap().key, b"{user1}/b");
    assert_eq!(resp.header.unwrap().revision, second.0);
    let third = w.put("{user1}/c", "3");
    assert_eq!(third.0, second.0 + 1, "one shard's revisions are gapless");
    let resp = next_of(&mut s).await;
    assert_eq!(resp.events[0].kv.as_ref().unwrap().mod_revision, third.0);
    assert!(first < second);
    assert_eq!(w.shard("{user1}/c"), shard);
    assert!(is_silent(&mut s).await, "puts on other shards are not this watch's");
}

#[tokio::test(start_paused = true)]
async fn a_watch_over_shards_sees_every_shards_events_in_each_shards_order() {
    let (hubs, mut w) = setup_sharded(WatchConfig::default());
    let keys = spread_keys(&w, "k/", 24);
    let mut s = hubs.open_stream();
    s.handle(create_request(create("k/", "k0", 0)));
    let resp = next_of(&mut s).await;
    assert!(resp.created && !resp.canceled && resp.watch_id == 0, "{resp:?}");
    // Three rounds over every key: each shard's events come in its order.
    let mut written: HashMap<String, Vec<i64>> = HashMap::new();
    for round in 0..3 {
        for key in &keys {
            let revision = w.put(key, &round.to_string());
            written.entry(key.clone()).or_default().push(revision.0);
        }
    }
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut last_of_shard: HashMap<ShardId, i64> = HashMap::new();
    let mut events = 0;
    while events < keys.len() * 3 {
        let resp = next_of(&mut s).await;
        assert_eq!(resp.watch_id, 0, "{resp:?}");
        assert!(!resp.created && !resp.canceled, "{resp:?}");
        let header = resp.header.as_ref().unwrap().revision;
        for event in &resp.events {
            let kv = event.kv.as_ref().unwrap();
            let key = String::from_utf8(kv.key.clone()).unwrap();
            let shard = w.shard(&key);
            let last = last_of_shard.entry(shard).or_insert(0);
            assert!(kv.mod_revision > *last, "shard {shard:?} went back: {resp:?}");
            *last = kv.mod_revision;
            // The header is the event's own shard's revision.
            assert!(header >= kv.mod_revision, "{resp:?}");
            seen.entry(key).or_default().push(kv.mod_revision);
            events += 1;
        }
    }
    assert_eq!(seen, written, "every event exactly once");
    assert!(is_silent(&mut s).await);
}

#[tokio::test]
async fn a_start_revision_over_shards_is_refused_as_etcd_refuses_a_create() {
    let (hubs, mut w) = setup_sharded(WatchConfig::default());
    w.put("a", "1");
    let mut s = hubs.open_stream();
    s.handle(create_request(create("a", "b", 1)));
    let resp = next_of(&mut s).await;
    assert!(resp.created && resp.canceled, "{resp:?}");
    assert_eq!(resp.watch_id, INVALID_WATCH_ID);
    assert_eq!(resp.cancel_reason, REVISION_SPANS_SHARDS);
    // From now (0) is fine.
    s.handle(create_request(create("a", "b", 0)));
    let resp = next_of(&mut s).await;
    assert!(resp.created && !resp.canceled && resp.watch_id == 0, "{resp:?}");
}

#[tokio::test(start_paused = true)]
async fn a_canceled_watch_over_shards_is_canceled_once_and_ids_stay_unique() {
    let (hubs, mut w) = setup_sharded(WatchConfig::default());
    let keys = spread_keys(&w, "p/", 16);
    let mut s = hubs.open_stream();
    s.handle(create_request(create("p/", "p0", 0)));
    assert!(next_of(&mut s).await.created);
    // A one-shard watch gets the next id, not one a shard's stream chose.
    s.handle(create_request(create(&keys[0], "", 0)));
    let resp = next_of(&mut s).await;
    assert!(resp.created && resp.watch_id == 1, "{resp:?}");
    // A duplicate id is refused across shards.
    s.handle(create_request(WatchCreateRequest { watch_id: 0, ..create("q", "", 0) }));
    assert_eq!(next_of(&mut s).await.watch_id, 2);
    s.handle(create_request(WatchCreateRequest { watch_id: 2, ..create("p/", "p0", 0) }));
    let resp = next_of(&mut s).await;
    assert!(resp.canceled && resp.watch_id == INVALID_WATCH_ID, "{resp:?}");

    s.handle(cancel_request(0));
    let resp = next_of(&mut s).await;
    assert!(resp.canceled && resp.watch_id == 0, "{resp:?}");
    assert!(is_silent(&mut s).await, "one cancel, not one per shard");
    // Watch 0 is gone from every shard; watch 1 still hears its key.
    for key in &keys {
        w.put(key, "after");
    }
    let resp = next_of(&mut s).await;
    assert_eq!(resp.watch_id, 1, "{resp:?}");
    assert!(is_silent(&mut s).await);
    // Server-chosen ids go on from the last; a canceled id is free again.
    s.handle(create_request(create("p/", "p0", 0)));
    let resp = next_of(&mut s).await;
    assert!(resp.created && resp.watch_id == 3, "{resp:?}");
    s.handle(cancel_request(3));
    assert!(next_of(&mut s).await.canceled);
    s.handle(create_request(WatchCreateRequest { watch_id: 3, ..create("p/", "p0", 0) }));
    let resp = next_of(&mut s).await;
    assert!(resp.created && !resp.canceled && resp.watch_id == 3, "{resp:?}");
}

#[tokio::test(start_paused = true)]
async fn a_shard_that_cancels_its_part_cancels_the_watch_once() {
    let config = tight_config();
    let (hubs, mut w) = setup_sharded(config.clone());
    let keys = spread_keys(&w, "c/", 16);
    let mut s = hubs.open_stream();
    s.handle(create_request(create("c/", "c0", 0)));
    assert!(next_of(&mut s).await.created);
    // Without reading: one shard's part overflows its buffer and must
    // catch up from history, which is then compacted away.
    let busy = w.shard(&keys[0]);
    for i in 0..(config.events_buffered_per_watcher_max * 3) {
        w.put(&keys[0], &i.to_string());
    }
    for key in &keys {
        w.put(key, "x");
    }
    let revision = w.put(&keys[0], "last");
    w.run_on(busy, Command::Compaction(CompactionRequest { revision, physical: true }));
    let mut canceled = 0;
    loop {
        let resp = tokio::time::timeout(Duration::from_secs(3600), s.next_response()).await;
        let Ok(resp) = resp else { break };
        if resp.canceled {
            assert_eq!(resp.watch_id, 0, "{resp:?}");
            assert!(resp.compact_revision > 0, "{resp:?}");
            canceled += 1;
        }
    }
    assert_eq!(canceled, 1, "the client hears one cancel");
    // Nothing of the watch is left on any shard.
    for key in &keys {
        w.put(key, "after");
    }
    assert!(is_silent(&mut s).await);
}

#[tokio::test]
async fn a_progress_request_without_watchers_is_answered_once() {
    let (hubs, mut w) = setup_sharded(WatchConfig::default());
    let keys = spread_keys(&w, "r/", 8);
    let mut top = Revision::ZERO;
    for key in &keys {
        top = top.max(w.put(key, "v"));
    }
    let mut s = hubs.open_stream();
    s.handle(WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    });
    let resp = next_of(&mut s).await;
    assert_eq!(resp.watch_id, INVALID_WATCH_ID);
    assert_eq!(resp.header.unwrap().revision, top.0, "the largest shard revision");
}

#[tokio::test]
async fn the_counts_sum_over_the_shards() {
    let (hubs, w) = setup_sharded(WatchConfig::default());
    let keys = spread_keys(&w, "m/", 8);
    let mut s = hubs.open_stream();
    s.handle(create_request(create("m/", "m0", 0)));
    s.handle(create_request(create(&keys[0], "", 0)));
    assert!(next_of(&mut s).await.created);
    assert!(next_of(&mut s).await.created);
    let stats = hubs.stats();
    // One stream per shard, the spanning watch on each, the other on one.
    assert_eq!(stats.streams, SHARDS as usize);
    assert_eq!(stats.watchers, SHARDS as usize + 1);
    assert_eq!(stats.synced, stats.watchers);
}

/// A locality for the relay tests: shards in `remote` are relayed from
/// `candidates`; `hosted` answers `hosts`.
#[derive(Debug)]
struct FixedLocality {
    remote: Vec<ShardId>,
    candidates: Vec<String>,
    hosted: bool,
}

impl crate::remote::ShardLocality for FixedLocality {
    fn locate(&self, shard: ShardId) -> crate::remote::ShardHome {
        if !self.remote.contains(&shard) {
            return crate::remote::ShardHome::Local;
        }
        let candidates = self
            .candidates
            .iter()
            .enumerate()
            .map(|(i, url)| crate::remote::RelayCandidate {
                member: ringkv_consensus::NodeId(u64::try_from(i).unwrap() + 2),
                client_urls: vec![url.clone()],
            })
            .collect();
        crate::remote::ShardHome::Remote(candidates)
    }

    fn hosts(&self, _shard: ShardId) -> bool {
        self.hosted
    }
}

/// Serves `hubs` through a `WatchService` relaying with `locality`, on a
/// loopback port; returns its URL.
async fn serve_relaying(hubs: &Arc<WatchHubs>, locality: FixedLocality) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let relay =
        crate::watch::WatchRelay::new(Arc::new(locality), crate::remote::MemberDialer::new(None));
    let service = crate::watch::WatchService::from_hubs(Arc::clone(hubs)).with_relay(relay);
    let server = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_skips_a_dead_candidate_and_members_refuse_shards_they_do_not_host() {
    use ringkv_api::etcdserverpb::watch_client::WatchClient;
    let (hubs, mut w) = setup_sharded(WatchConfig::default());
    // A member that hosts nothing refuses to serve a relay.
    let idle = FixedLocality { remote: Vec::new(), candidates: Vec::new(), hosted: false };
    let idle_url = serve_relaying(&hubs, idle).await;
    let mut request = tonic::Request::new(futures_util::stream::pending::<WatchRequest>());
    request.metadata_mut().insert(crate::watch::RELAY_SHARD_METADATA, 1u64.into());
    let refused = WatchClient::connect(idle_url.clone()).await.unwrap().watch(request).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unavailable);

    // A member hosting every shard, and one relaying all of them from a
    // dead address first, then from it.
    let host = FixedLocality { remote: Vec::new(), candidates: Vec::new(), hosted: true };
    let host_url = serve_relaying(&hubs, host).await;
    let dead = format!("http://{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    });
    let all: Vec<ShardId> = (1..=u64::from(SHARDS)).map(ShardId).collect();
    let relaying = FixedLocality { remote: all, candidates: vec![dead, host_url], hosted: true };
    let relaying_url = serve_relaying(&hubs, relaying).await;

    let (tx, mut rx) = mpsc::unbounded_channel::<WatchRequest>();
    let requests = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut client = WatchClient::connect(relaying_url).await.unwrap();
    tx.send(create_request(WatchCreateRequest {
        key: b"k/".to_vec(),
        range_end: b"k0".to_vec(),
        ..WatchCreateRequest::default()
    }))
    .unwrap();
    let mut responses = client.watch(requests).await.unwrap().into_inner();
    let next = async |r: &mut Streaming<WatchResponse>| {
        tokio::time::timeout(WAIT, r.message()).await.unwrap().unwrap().unwrap()
    };
    let created = next(&mut responses).await;
    assert!(created.created && !created.canceled, "{created:?}");
    let keys = spread_keys(&w, "k/", 12);
    let mut expected = Vec::new();
    for key in &keys {
        expected.push((key.clone(), w.put(key, "v")));
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let response = next(&mut responses).await;
        assert_eq!(response.watch_id, created.watch_id, "{response:?}");
        for e in response.events {
            let kv = e.kv.unwrap();
            seen.push((String::from_utf8(kv.key).unwrap(), Revision(kv.mod_revision)));
        }
    }
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);
}
