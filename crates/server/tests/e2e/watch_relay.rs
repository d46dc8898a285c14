//! The watch relay (issue #7) in three-member clusters with `--shards 8
//! --debug-remote-shards`: every watch on a data shard is served through
//! an etcd `Watch` stream to another member, as it will be for shards a
//! member does not host. Watches are opened with the raw tonic client to
//! see every response (ids, header revisions, `compact_revision`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ringkv_api::etcdserverpb::watch_client::WatchClient;
use ringkv_api::etcdserverpb::watch_request::RequestUnion;
use ringkv_api::etcdserverpb::{
    PutRequest, WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use ringkv_ring::{HashKeyRule, Keyspace};
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::common::{Member, WAIT, auth_setup, cluster_with, eventually, wait_leader};

/// Data shards of the test clusters.
const SHARDS: u32 = 8;

/// The flags of a relaying cluster.
const RELAY_FLAGS: [&str; 2] = ["--shards=8", "--debug-remote-shards"];

fn shard_of(key: &str) -> u64 {
    Keyspace::new(SHARDS, HashKeyRule::WholeKey).unwrap().shard_of(key.as_bytes()).0
}

/// One client watch stream.
struct Stream {
    tx: mpsc::UnboundedSender<WatchRequest>,
    rx: Streaming<WatchResponse>,
}

impl Stream {
    async fn open(member: &Member) -> Stream {
        Stream::open_as(member, None).await
    }

    /// A stream sending `token` (etcd's `token` metadata), if given.
    async fn open_as(member: &Member, token: Option<&str>) -> Stream {
        let (tx, queue) = mpsc::unbounded_channel::<WatchRequest>();
        let requests = futures_util::stream::unfold(queue, |mut queue| async move {
            queue.recv().await.map(|r| (r, queue))
        });
        let mut request = tonic::Request::new(requests);
        if let Some(token) = token {
            request.metadata_mut().insert("token", token.parse().unwrap());
        }
        let mut client = WatchClient::connect(member.endpoint.clone()).await.unwrap();
        let rx = client.watch(request).await.unwrap().into_inner();
        Stream { tx, rx }
    }

    fn create(&self, create: WatchCreateRequest) {
        let union = RequestUnion::CreateRequest(create);
        self.tx.send(WatchRequest { request_union: Some(union) }).unwrap();
    }

    fn cancel(&self, watch_id: i64) {
        let union = RequestUnion::CancelRequest(WatchCancelRequest { watch_id });
        self.tx.send(WatchRequest { request_union: Some(union) }).unwrap();
    }

    async fn next(&mut self) -> WatchResponse {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(response))) => response,
            other => panic!("watch stream: no response: {other:?}"),
        }
    }

    /// Creates a watch and returns its id once it is created.
    async fn created(&mut self, create: WatchCreateRequest) -> i64 {
        self.create(create);
        let response = self.next().await;
        assert!(response.created && !response.canceled, "{response:?}");
        response.watch_id
    }
}

fn prefix(key: &str) -> WatchCreateRequest {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    WatchCreateRequest { key: key.into(), range_end: end, ..Default::default() }
}

/// Puts `key` through `member`, retrying refusals while shards elect;
/// returns the put's revision (its shard's), or `None` if every attempt
/// failed (then it may or may not have been applied).
async fn put(member: &Member, key: &str, value: &str) -> Option<i64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let request = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        match member.kv().await.put(request).await {
            Ok(r) => return Some(r.into_inner().header.unwrap().revision),
            Err(status) if Instant::now() < deadline => {
                tracing::debug!(%status, key, "put refused; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => return None,
        }
    }
}

/// Starts a relaying cluster and waits until every data shard takes puts.
async fn relaying_cluster(extra: &[&str]) -> Vec<Member> {
    let mut flags: Vec<&str> = RELAY_FLAGS.to_vec();
    flags.extend(extra);
    let members = cluster_with(3, &flags).await;
    wait_leader(&members).await;
    members
}

/// What a watch received: (key, mod_revision) per event, in order.
#[derive(Default)]
struct Seen {
    events: Vec<(String, i64)>,
}

impl Seen {
    fn take(&mut self, response: &WatchResponse) {
        for e in &response.events {
            let kv = e.kv.as_ref().unwrap();
            self.events.push((String::from_utf8(kv.key.clone()).unwrap(), kv.mod_revision));
        }
    }

    /// Checks that every expected (key, revision) came exactly once, that
    /// nothing came twice, that every event is of a key in `keys`, and that
    /// each shard's events came in revision order.
    fn check(&self, expected: &BTreeSet<(String, i64)>, keys: &BTreeSet<String>) {
        let mut once = BTreeSet::new();
        for e in &self.events {
            assert!(once.insert(e.clone()), "event {e:?} delivered twice: {:?}", self.events);
            assert!(keys.contains(&e.0), "event {e:?} of a key never written");
        }
        for e in expected {
            assert!(once.contains(e), "event {e:?} missing: {:?}", self.events);
        }
        let mut last: BTreeMap<u64, i64> = BTreeMap::new();
        for (key, revision) in &self.events {
            let previous = last.insert(shard_of(key), *revision).unwrap_or(0);
            assert!(*revision > previous, "{key}@{revision} after @{previous} on its shard");
        }
    }
}

/// Reads `stream` until each watch's `seen` holds every event `expected`
/// of it.
async fn read_until(
    stream: &mut Stream,
    seen: &mut BTreeMap<i64, Seen>,
    expected: &BTreeMap<i64, BTreeSet<(String, i64)>>,
) {
    let done = |seen: &BTreeMap<i64, Seen>| {
        expected.iter().all(|(id, want)| want.iter().all(|e| seen[id].events.contains(e)))
    };
    while !done(seen) {
        let response = stream.next().await;
        assert!(!response.canceled, "watch canceled: {response:?}");
        if let Some(s) = seen.get_mut(&response.watch_id) {
            s.take(&response);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_watches_get_every_event_once_in_shard_order() {
    let members = relaying_cluster(&[]).await;
    // History for the one-shard watch from a revision: all of `{t}/` is
    // on one shard (its hash key is `t`).
    let mut tagged = Vec::new();
    for i in 0..10 {
        let key = format!("{{t}}/{i}");
        tagged.push((key.clone(), put(&members[1], &key, "old").await.unwrap()));
    }
    let mut stream = Stream::open(&members[0]).await;
    let all = stream.created(prefix("r/")).await;
    let from = tagged[3].1;
    let one = stream.created(WatchCreateRequest { start_revision: from, ..prefix("{t}/") }).await;
    assert_ne!(all, one);

    let mut expected_all = BTreeSet::new();
    let mut expected_one: BTreeSet<(String, i64)> = tagged[3..].iter().cloned().collect();
    let mut keys: BTreeSet<String> = tagged.iter().map(|(k, _)| k.clone()).collect();
    for i in 0..60 {
        let key = format!("r/{i}");
        keys.insert(key.clone());
        expected_all.insert((key.clone(), put(&members[1], &key, "v").await.unwrap()));
        if i % 6 == 0 {
            let key = format!("{{t}}/new{i}");
            keys.insert(key.clone());
            expected_one.insert((key.clone(), put(&members[2], &key, "v").await.unwrap()));
        }
    }
    let shards: BTreeSet<u64> = expected_all.iter().map(|(k, _)| shard_of(k)).collect();
    assert_eq!(shards.len(), SHARDS as usize, "the prefix watch spans every shard");

    let mut seen = BTreeMap::from([(all, Seen::default()), (one, Seen::default())]);
    let expected = BTreeMap::from([(all, expected_all), (one, expected_one)]);
    read_until(&mut stream, &mut seen, &expected).await;
    for id in [all, one] {
        seen[&id].check(&expected[&id], &keys);
        assert_eq!(seen[&id].events.len(), expected[&id].len());
    }
    assert!(seen[&all].events.iter().all(|(k, _)| k.starts_with("r/")));
    assert!(seen[&one].events.iter().all(|(k, _)| k.starts_with("{t}/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_watch_survives_the_loss_of_its_upstream() {
    let mut members = relaying_cluster(&[]).await;
    let mut stream = Stream::open(&members[0]).await;
    let all = stream.created(prefix("k/")).await;
    let one = stream.created(prefix("{o}/")).await;
    let mut keys = BTreeSet::new();
    let mut expected = BTreeMap::from([(all, BTreeSet::new()), (one, BTreeSet::new())]);
    let mut seen = BTreeMap::from([(all, Seen::default()), (one, Seen::default())]);
    // The relay dials one of m1 and m2 for each shard: stopping each in
    // turn (the other one back up) takes every upstream away once.
    for round in 0..3 {
        if round > 0 {
            let stopped = round;
            members[stopped].stop().await;
            if round == 2 {
                members[1].restart().await;
            }
        }
        for i in 0..16 {
            let key = format!("k/{round}-{i}");
            keys.insert(key.clone());
            if let Some(revision) = put(&members[0], &key, "v").await {
                expected.get_mut(&all).unwrap().insert((key, revision));
            }
            let key = format!("{{o}}/{round}-{i}");
            keys.insert(key.clone());
            if let Some(revision) = put(&members[0], &key, "v").await {
                expected.get_mut(&one).unwrap().insert((key, revision));
            }
        }
        read_until(&mut stream, &mut seen, &expected).await;
    }
    for id in [all, one] {
        seen[&id].check(&expected[&id], &keys);
    }
}

/// Watchers on the members' hubs (a relayed watch is one on the member it
/// is relayed from, per shard).
fn hub_watchers(member: &Member) -> usize {
    member.server().node().watch_hubs().stats().watchers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_a_relayed_watch_cancels_it_upstream() {
    let members = relaying_cluster(&[]).await;
    let mut stream = Stream::open(&members[0]).await;
    let spread = stream.created(prefix("c/")).await;
    let one = stream.created(prefix("{c}/")).await;
    let upstream = |members: &[Member]| hub_watchers(&members[1]) + hub_watchers(&members[2]);
    eventually("every part is upstream", || async { upstream(&members) == 9 }).await;
    assert_eq!(hub_watchers(&members[0]), 0, "nothing is served from the local hubs");

    stream.cancel(spread);
    stream.cancel(one);
    let mut canceled = BTreeSet::new();
    while canceled.len() < 2 {
        let response = stream.next().await;
        assert!(response.canceled && !response.created, "{response:?}");
        assert!(canceled.insert(response.watch_id), "one cancel per watch: {response:?}");
    }
    assert_eq!(canceled, BTreeSet::from([spread, one]));
    eventually("the upstream watchers are gone", || async { upstream(&members) == 0 }).await;

    // Nothing of the canceled watches follows: the next event is the new
    // watch's.
    put(&members[1], "c/after", "v").await.unwrap();
    put(&members[1], "{c}/after", "v").await.unwrap();
    let after = stream.created(prefix("z/")).await;
    let revision = put(&members[2], "z/1", "v").await.unwrap();
    let response = stream.next().await;
    assert_eq!(response.watch_id, after, "{response:?}");
    assert_eq!(response.events.len(), 1);
    assert_eq!(response.events[0].kv.as_ref().unwrap().mod_revision, revision);

    // A client that goes away takes its upstream streams with it.
    drop(stream);
    eventually("the upstream streams are gone", || async { upstream(&members) == 0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_watch_from_a_compacted_revision_is_canceled_as_etcd_does() {
    let members = relaying_cluster(&[
        "--auto-compaction-mode=revision",
        "--auto-compaction-retention=2",
        "--auto-compaction-revision-interval=50ms",
    ])
    .await;
    let mut first = 0;
    for i in 0..10 {
        let revision = put(&members[1], "{p}/k", &format!("v{i}")).await.unwrap();
        if i == 0 {
            first = revision;
        }
    }
    // Once the shard is compacted past `first`, a watch from it is created
    // and then canceled with the compacted revision.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut stream = Stream::open(&members[0]).await;
        let id =
            stream.created(WatchCreateRequest { start_revision: first, ..prefix("{p}/") }).await;
        let response = stream.next().await;
        if response.canceled {
            assert_eq!(response.watch_id, id);
            assert!(response.compact_revision > first, "{response:?}");
            assert!(response.events.is_empty());
            return;
        }
        // Not compacted yet: the history came instead.
        assert_eq!(response.watch_id, id);
        assert_eq!(response.events[0].kv.as_ref().unwrap().mod_revision, first);
        assert!(Instant::now() < deadline, "the shard was never compacted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_watch_carries_the_clients_credentials() {
    let members = relaying_cluster(&[]).await;
    auth_setup(&members[0]).await;
    let c = members[0].etcd().await;
    let token = c.auth_client().authenticate("alice".into(), "alicepw".into()).await.unwrap();
    let token = token.token().to_owned();
    // Every member knows the token once it applied its issue.
    for m in &members[1..] {
        eventually("the token is known everywhere", || async {
            let mut kv = m.kv().await;
            let mut request = tonic::Request::new(ringkv_api::etcdserverpb::RangeRequest {
                key: "/app/x".into(),
                serializable: true,
                ..Default::default()
            });
            request.metadata_mut().insert("token", token.parse().unwrap());
            kv.range(request).await.is_ok()
        })
        .await;
    }

    // The hosting members check alice's rights with her token: a watch she
    // may read is created there (without the token they would refuse it).
    let mut stream = Stream::open_as(&members[0], Some(&token)).await;
    let spread = stream.created(prefix("/app/")).await;
    let mut alice = etcd_client::Client::connect(
        [members[1].endpoint.as_str()],
        Some(etcd_client::ConnectOptions::new().with_user("alice", "alicepw")),
    )
    .await
    .unwrap();
    let revision = alice.put("/app/x", "1", None).await.unwrap().header().unwrap().revision();
    let response = stream.next().await;
    assert_eq!(response.watch_id, spread, "{response:?}");
    assert_eq!(response.events[0].kv.as_ref().unwrap().mod_revision, revision);
    // One she may not read is refused, as etcd refuses it.
    stream.create(prefix("/other/"));
    let response = stream.next().await;
    assert!(response.created && response.canceled && response.watch_id == -1, "{response:?}");
    assert!(response.cancel_reason.contains("permission denied"), "{response:?}");
}
