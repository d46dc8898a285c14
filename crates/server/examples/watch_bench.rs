//! What publishing costs the node thread, and how fast events reach a
//! watcher. A measurement, not a test: `cargo run --release -p
//! ringkv-server --example watch_bench`.
//!
//! 1. Publish cost: single-key events published into a hub holding N
//!    single-key watchers on distinct keys plus 100 prefix watchers, spread
//!    over 10 streams (drained between timed batches, so no watcher falls
//!    behind). A hub that scanned its watchers would grow 100x from 100
//!    to 10,000 watchers; the index keeps it flat.
//! 2. Delivery: events per second reaching one prefix watcher while a
//!    plain thread publishes (as the node loop does), through the stream
//!    API, then through gRPC on loopback with our tonic client.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use ringkv_api::etcdserverpb::watch_client::WatchClient;
use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_api::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest};
use ringkv_consensus::{LogIndex, ShardId};
use ringkv_node::WatchEvents;
use ringkv_server::watch::{WatchConfig, WatchContext, WatchHub, WatchService, WatchStream};
use ringkv_storage::mvcc::{Event, EventKind, KeyValue, MvccStore, Revision, StoreOptions};

const SHARD: ShardId = ShardId(1);
const KEYS: u64 = 10_000;
const PREFIXES: u64 = 100;
const STREAMS: usize = 10;

struct Context;

impl WatchContext for Context {
    fn header(&self, revision: Revision) -> ResponseHeader {
        ResponseHeader { cluster_id: 1, member_id: 1, revision: revision.0, raft_term: 1 }
    }

    fn has_leader(&self) -> bool {
        true
    }
}

fn hub(config: WatchConfig) -> Arc<WatchHub> {
    let store = Arc::new(MvccStore::open_in_memory(StoreOptions::default()).unwrap());
    WatchHub::new(store, SHARD, Arc::new(Context), config).unwrap()
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("k/{i:04}"))
}

/// A key no watcher covers.
fn other_key(i: u64) -> Bytes {
    Bytes::from(format!("x/{i:04}"))
}

/// One put of `key` at `revision`, as the store reports it.
fn batch(revision: i64, key: Bytes) -> WatchEvents {
    let kv = KeyValue {
        key,
        create_revision: Revision(2),
        mod_revision: Revision(revision),
        version: revision - 1,
        value: Bytes::from_static(b"value-of-a-typical-size-for-kubernetes-objects-is-larger"),
        ..KeyValue::default()
    };
    WatchEvents {
        shard: SHARD,
        index: LogIndex(revision as u64),
        revision: Revision(revision),
        events: vec![Event { kind: EventKind::Put, kv, prev_kv: None }],
    }
}

/// A fixed pseudo-random sequence (xorshift64*).
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % KEYS
    }
}

async fn drain(stream: &mut WatchStream, events: &mut usize) {
    while let Ok(resp) = tokio::time::timeout(Duration::ZERO, stream.next_response()).await {
        *events += resp.events.len();
    }
}

/// Publishes `total` single-key events in timed batches into a hub with
/// `single` single-key watchers and `prefixes` prefix watchers.
async fn publish_cost(single: u64, prefixes: u64, total: usize) {
    let hub = hub(WatchConfig::default());
    let mut streams: Vec<WatchStream> = (0..STREAMS).map(|_| hub.open_stream()).collect();
    for i in 0..single {
        let k = key(i * (KEYS / single.max(1)));
        let req = WatchCreateRequest { key: k.to_vec(), ..WatchCreateRequest::default() };
        streams[i as usize % STREAMS].create(req);
    }
    for p in 0..prefixes {
        let prefix = format!("k/{p:02}").into_bytes();
        let mut range_end = prefix.clone();
        *range_end.last_mut().unwrap() += 1;
        let req = WatchCreateRequest { key: prefix, range_end, ..WatchCreateRequest::default() };
        streams[p as usize % STREAMS].create(req);
    }
    let mut delivered = 0;
    for s in &mut streams {
        drain(s, &mut delivered).await;
    }
    assert_eq!(hub.stats().synced as u64, single + prefixes);
    delivered = 0;
    let mut keys = Keys(0x9e37_79b9_7f4a_7c15);
    let batch_size = 2_000;
    let mut revision = 1;
    let mut timed = Duration::ZERO;
    let mut batches = Vec::new();
    let mut events = Vec::with_capacity(batch_size);
    for _ in 0..total / batch_size {
        events.clear();
        for _ in 0..batch_size {
            revision += 1;
            events.push(batch(revision, key(keys.next())));
        }
        let start = Instant::now();
        for b in &events {
            hub.publish(b);
        }
        let took = start.elapsed();
        timed += took;
        batches.push(took);
        for s in &mut streams {
            drain(s, &mut delivered).await;
        }
    }
    batches.sort();
    let per = |d: Duration| d.as_nanos() as f64 / batch_size as f64;
    // Events no watcher covers: the cost of the lookup alone.
    events.clear();
    for _ in 0..batch_size {
        revision += 1;
        events.push(batch(revision, other_key(keys.next())));
    }
    let start = Instant::now();
    for b in &events {
        hub.publish(b);
    }
    let miss = per(start.elapsed());
    let stats = hub.stats();
    println!(
        "{single:>6} single-key + {prefixes:>3} prefix watchers: {:>6.0} ns/publish mean, {:>6.0} p50, {:>6.0} p90 batch, {:>4.0} unmatched; {:.2} deliveries/event; {} of {} watchers still synced",
        timed.as_nanos() as f64 / (batches.len() * batch_size) as f64,
        per(batches[batches.len() / 2]),
        per(batches[batches.len() * 9 / 10]),
        miss,
        delivered as f64 / (batches.len() * batch_size) as f64,
        stats.synced,
        stats.watchers,
    );
}

/// Buffers large enough that the fabricated events (not in the store)
/// never need a history replay.
fn roomy() -> WatchConfig {
    WatchConfig {
        events_buffered_per_watcher_max: 1 << 22,
        events_buffered_per_stream_max: 1 << 22,
        ..WatchConfig::default()
    }
}

fn publisher(hub: Arc<WatchHub>, total: i64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut keys = Keys(7);
        for revision in 2..total + 2 {
            hub.publish(&batch(revision, key(keys.next())));
        }
    })
}

async fn delivery_stream(total: i64) {
    let hub = hub(roomy());
    let mut stream = hub.open_stream();
    stream.create(WatchCreateRequest {
        key: b"k/".to_vec(),
        range_end: b"k0".to_vec(),
        ..WatchCreateRequest::default()
    });
    let created = stream.next_response().await;
    assert!(created.created);
    let start = Instant::now();
    let writer = publisher(Arc::clone(&hub), total);
    let (mut events, mut responses) = (0i64, 0u64);
    while events < total {
        let resp = stream.next_response().await;
        events += resp.events.len() as i64;
        responses += 1;
    }
    let took = start.elapsed();
    writer.join().unwrap();
    println!(
        "one watcher, stream API: {total} events in {:.2} s = {:>9.0} events/s ({:.1} events/response)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        total as f64 / responses as f64
    );
}

async fn delivery_grpc(total: i64) {
    let hub = hub(roomy());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(WatchService::new(Arc::clone(&hub)).into_server())
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let server = tokio::spawn(server);
    let mut client = WatchClient::connect(endpoint).await.unwrap();
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"k/".to_vec(),
            range_end: b"k0".to_vec(),
            ..WatchCreateRequest::default()
        })),
    };
    // The request stream stays open (pending) after the create.
    let requests = futures_util::stream::iter([create]).chain(futures_util::stream::pending());
    let mut responses = client.watch(requests).await.unwrap().into_inner();
    assert!(responses.message().await.unwrap().unwrap().created);
    let start = Instant::now();
    let writer = publisher(Arc::clone(&hub), total);
    let (mut events, mut count) = (0i64, 0u64);
    while events < total {
        let resp = responses.message().await.unwrap().unwrap();
        events += resp.events.len() as i64;
        count += 1;
    }
    let took = start.elapsed();
    writer.join().unwrap();
    println!(
        "one watcher, gRPC loopback: {total} events in {:.2} s = {:>9.0} events/s ({:.1} events/response)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        total as f64 / count as f64
    );
    server.abort();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("publish cost (single-key events, 10 streams):");
    publish_cost(0, 0, 200_000).await;
    publish_cost(100, PREFIXES, 200_000).await;
    publish_cost(1_000, PREFIXES, 200_000).await;
    publish_cost(KEYS, PREFIXES, 200_000).await;
    println!("delivery:");
    delivery_stream(1_000_000).await;
    delivery_grpc(500_000).await;
}
