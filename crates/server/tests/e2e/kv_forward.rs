//! KV requests for shards a member does not host, forwarded to a member
//! that does (ADR 0002, "Routing"), in three-member clusters with
//! `--shards 8 --debug-remote-shards`: every member treats every data
//! shard as hosted elsewhere for its own clients, so every KV request
//! through member A travels to B or C as the same etcd RPC.

use std::time::{Duration, Instant};

use ringkv_api::etcdserverpb::auth_client::AuthClient;
use ringkv_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ringkv_api::etcdserverpb::kv_client::KvClient;
use ringkv_api::etcdserverpb::lease_client::LeaseClient;
use ringkv_api::etcdserverpb::request_op::Request as Op;
use ringkv_api::etcdserverpb::{
    AuthStatusRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest,
    RequestOp, ResponseHeader, TxnRequest,
};
use ringkv_api::mvccpb::KeyValue;
use ringkv_ring::{HashKeyRule, Keyspace};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{Member, WAIT, auth_setup, cluster_with, eventually, wait_leader};

/// Data shards of the test clusters.
const SHARDS: u32 = 8;

/// Every member serves its clients' KV requests through another member.
const REMOTE: [&str; 2] = ["--shards=8", "--debug-remote-shards"];

/// Every member also refuses the calls other members forward, as a member
/// that hosts no data shard does.
const REFUSING: [&str; 3] = ["--shards=8", "--debug-remote-shards", "--debug-refuse-forwarded"];

fn shard_of(key: &str) -> u64 {
    Keyspace::new(SHARDS, HashKeyRule::WholeKey).unwrap().shard_of(key.as_bytes()).0
}

/// Starts a cluster and waits until every member knows every member's
/// client URLs (a member publishes them once it runs): until then a member
/// has nobody to send a request on to, and says so.
async fn cluster(flags: &[&str]) -> Vec<Member> {
    let members = cluster_with(3, flags).await;
    wait_leader(&members).await;
    for m in &members {
        eventually("every client URL is known", || async {
            let known = m.server().state().members();
            known.len() == members.len() && known.iter().all(|k| !k.client_urls.is_empty())
        })
        .await;
    }
    members
}

/// Sends `$request` with `$client.$method` until it succeeds (shards
/// elect their leaders after the cluster's first leader; a refusal then is
/// the client's to retry), and gives the answer.
macro_rules! retried {
    ($client:expr, $method:ident, $request:expr) => {{
        let deadline = Instant::now() + WAIT;
        loop {
            match $client.$method($request.clone()).await {
                Ok(response) => break response.into_inner(),
                Err(status) if Instant::now() < deadline => {
                    tracing::debug!(%status, "refused; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("{}: {status:?}", stringify!($method)),
            }
        }
    }};
}

/// `message` with alice's `token`.
fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("token", token.parse().unwrap());
    request
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    end
}

/// What a client sees of an answer, less what differs between two
/// clusters (ids, terms, the lease id chosen at grant).
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Header { revision: i64 },
    Kvs { kvs: Vec<(String, String, i64, i64, i64, bool)>, more: bool, count: i64 },
    Deleted { deleted: i64, prev: Vec<(String, String, i64)> },
    Txn { succeeded: bool, responses: usize },
}

fn header(h: Option<&ResponseHeader>) -> Seen {
    Seen::Header { revision: h.unwrap().revision }
}

fn kvs(kvs: &[KeyValue], more: bool, count: i64) -> Seen {
    let kvs = kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key.clone()).unwrap(),
                String::from_utf8(kv.value.clone()).unwrap(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease != 0,
            )
        })
        .collect();
    Seen::Kvs { kvs, more, count }
}

/// The same requests, through member 0, on one cluster: what its client
/// saw, and the member ids of the answers to single-shard requests.
async fn workload(members: &[Member]) -> (Vec<Seen>, Vec<u64>) {
    let mut kv: KvClient<Channel> = members[0].kv().await;
    let mut seen = Vec::new();
    let mut answered_by = Vec::new();
    for i in 0..40 {
        let request = PutRequest {
            key: format!("f/{i:02}").into(),
            value: format!("v{i}").into(),
            ..Default::default()
        };
        let r = retried!(kv, put, request);
        answered_by.push(r.header.as_ref().unwrap().member_id);
        seen.push(header(r.header.as_ref()));
    }
    let keys: std::collections::BTreeSet<u64> =
        (0..40).map(|i| shard_of(&format!("f/{i:02}"))).collect();
    assert_eq!(keys.len(), SHARDS as usize, "the keys span every shard");

    // A get, linearizable then serializable (after the linearizable one,
    // the serving replica has applied every put).
    for serializable in [false, true] {
        let request = RangeRequest { key: "f/07".into(), serializable, ..Default::default() };
        let r = retried!(kv, range, request);
        answered_by.push(r.header.as_ref().unwrap().member_id);
        seen.push(header(r.header.as_ref()));
        seen.push(kvs(&r.kvs, r.more, r.count));
    }
    // Prefix ranges over every shard: with a limit, sorted, counted.
    let ranges = [
        RangeRequest {
            key: "f/".into(),
            range_end: prefix_end("f/"),
            limit: 5,
            ..Default::default()
        },
        RangeRequest {
            key: "f/".into(),
            range_end: prefix_end("f/"),
            limit: 3,
            sort_order: 2,  // descend
            sort_target: 3, // mod revision
            serializable: true,
            ..Default::default()
        },
        RangeRequest {
            key: "f/".into(),
            range_end: prefix_end("f/"),
            keys_only: true,
            ..Default::default()
        },
        RangeRequest {
            key: "f/".into(),
            range_end: prefix_end("f/"),
            count_only: true,
            ..Default::default()
        },
    ];
    for request in ranges {
        let r = retried!(kv, range, request);
        seen.push(kvs(&r.kvs, r.more, r.count));
    }
    // Deletes: one key, then a prefix over several shards.
    let spread: std::collections::BTreeSet<u64> =
        (20..30).map(|i| shard_of(&format!("f/{i}"))).collect();
    assert!(spread.len() > 1, "f/2* spans shards");
    for (key, end) in [("f/01", Vec::new()), ("f/2", prefix_end("f/2"))] {
        let request = DeleteRangeRequest { key: key.into(), range_end: end, prev_kv: true };
        let r = retried!(kv, delete_range, request);
        let mut prev: Vec<(String, String, i64)> = r
            .prev_kvs
            .iter()
            .map(|kv| {
                let key = String::from_utf8(kv.key.clone()).unwrap();
                (key, String::from_utf8(kv.value.clone()).unwrap(), kv.mod_revision)
            })
            .collect();
        prev.sort();
        seen.push(Seen::Deleted { deleted: r.deleted, prev });
    }
    // A compare-and-set, taken then refused.
    let cas = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: "f/05".into(),
            target_union: Some(TargetUnion::Value(b"v5".to_vec())),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: "f/05".into(),
                value: "swapped".into(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                key: "f/05".into(),
                ..Default::default()
            })),
        }],
    };
    for expect in [true, false] {
        let r = retried!(kv, txn, cas);
        assert_eq!(r.succeeded, expect, "{r:?}");
        answered_by.push(r.header.as_ref().unwrap().member_id);
        seen.push(header(r.header.as_ref()));
        seen.push(Seen::Txn { succeeded: r.succeeded, responses: r.responses.len() });
    }
    // A put attached to a lease.
    let mut leases = LeaseClient::connect(members[0].endpoint.clone()).await.unwrap();
    let grant = LeaseGrantRequest { ttl: 60, id: 0 };
    let lease = retried!(leases, lease_grant, grant).id;
    let request =
        PutRequest { key: "f/leased".into(), value: "l".into(), lease, ..Default::default() };
    let r = retried!(kv, put, request);
    seen.push(header(r.header.as_ref()));
    let request = RangeRequest { key: "f/leased".into(), ..Default::default() };
    let r = retried!(kv, range, request);
    assert_eq!(r.kvs[0].lease, lease, "{r:?}");
    seen.push(kvs(&r.kvs, r.more, r.count));
    // Everything that is left.
    let request =
        RangeRequest { key: "f/".into(), range_end: prefix_end("f/"), ..Default::default() };
    let r = retried!(kv, range, request);
    seen.push(kvs(&r.kvs, r.more, r.count));
    (seen, answered_by)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_kv_requests_answer_as_local_ones() {
    let mut plain = cluster(&["--shards=8"]).await;
    let (expected, served) = workload(&plain).await;
    let me = plain[0].server().member_id().0;
    assert!(served.iter().all(|&m| m == me), "without the flag member 0 serves: {served:?}");
    for m in &mut plain {
        m.stop().await;
    }

    let mut remote = cluster(&REMOTE).await;
    let (seen, served) = workload(&remote).await;
    let me = remote[0].server().member_id().0;
    assert!(
        served.iter().all(|&m| m != me),
        "each single-shard answer is the hosting member's, as it sent it: {served:?}"
    );
    assert_eq!(seen.len(), expected.len());
    for (i, (seen, expected)) in seen.iter().zip(&expected).enumerate() {
        assert_eq!(seen, expected, "answer {i} (every shard remote)");
    }
    for m in &mut remote {
        m.stop().await;
    }

    // Half the shards here, half elsewhere: ranges and deletes over every
    // shard merge local and forwarded parts.
    let mixed =
        cluster(&["--shards=8", "--debug-remote-shards", "--debug-local-shards=1,3,5,7"]).await;
    let (seen, served) = workload(&mixed).await;
    let me = mixed[0].server().member_id().0;
    assert!(served.contains(&me) && served.iter().any(|&m| m != me), "{served:?}");
    assert_eq!(seen.len(), expected.len());
    for (i, (seen, expected)) in seen.iter().zip(&expected).enumerate() {
        assert_eq!(seen, expected, "answer {i} (odd shards local)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_carries_the_clients_token() {
    let members = cluster(&REMOTE).await;
    auth_setup(&members[0]).await;
    let c = members[0].etcd().await;
    let token = c.auth_client().authenticate("alice".into(), "alicepw".into()).await.unwrap();
    let token = token.token().to_owned();
    // Every member knows the token once it applied its issue: asked of the
    // auth service, which every member serves itself, it is no longer an
    // invalid token (alice may not see the auth status: refused for rights).
    for m in &members {
        eventually("the token is known everywhere", || async {
            let mut auth = AuthClient::connect(m.endpoint.clone()).await.unwrap();
            match auth.auth_status(with_token(&token, AuthStatusRequest {})).await {
                Ok(_) => true,
                Err(e) => e.code() == Code::PermissionDenied,
            }
        })
        .await;
    }
    let mut kv = members[0].kv().await;
    let put = |key: &str| PutRequest { key: key.into(), value: "v".into(), ..Default::default() };
    // Alice may write /app/: the hosting member checks her token.
    let r = kv.put(with_token(&token, put("/app/x"))).await.unwrap().into_inner();
    assert_ne!(r.header.unwrap().member_id, members[0].server().member_id().0);
    // Not elsewhere: refused with etcd's error, by the hosting member.
    let e = kv.put(with_token(&token, put("/other/x"))).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::PermissionDenied, "etcdserver: permission denied"));
    let e = kv
        .range(with_token(&token, RangeRequest { key: "/other/x".into(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::PermissionDenied, "etcdserver: permission denied"));
    // Without a token nobody may write, here or there.
    let e = kv.put(put("/app/y")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "etcdserver: user name is empty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_host_is_skipped_for_the_next() {
    let mut members = cluster(&REMOTE).await;
    let mut kv = members[0].kv().await;
    let request = PutRequest { key: "s/1".into(), value: "a".into(), ..Default::default() };
    retried!(kv, put, request);
    // Member 0 tries the others in id order: stop the first one.
    let (first, next) = if members[1].server().member_id() < members[2].server().member_id() {
        (1, 2)
    } else {
        (2, 1)
    };
    let next_id = members[next].server().member_id().0;
    members[first].stop().await;
    // Once the shard has a leader again (a put through the other member
    // takes), ...
    let mut other = members[next].kv().await;
    let request = PutRequest { key: "s/1".into(), value: "b".into(), ..Default::default() };
    retried!(other, put, request);
    // ... a write through member 0 takes at the first attempt: the stopped
    // member refused the connection, so it was never sent there, and may
    // go to the next (a write that reached a member is never sent again).
    let request = PutRequest { key: "s/1".into(), value: "c".into(), ..Default::default() };
    let r = kv.put(request).await.unwrap().into_inner();
    assert_eq!(r.header.unwrap().member_id, next_id);
    for serializable in [false, true] {
        let request = RangeRequest { key: "s/1".into(), serializable, ..Default::default() };
        let r = kv.range(request).await.unwrap().into_inner();
        assert_eq!(r.header.unwrap().member_id, next_id);
        assert_eq!(r.kvs[0].value, b"c");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_call_is_never_forwarded_again() {
    let members = cluster(&REFUSING).await;
    let mut kv = members[0].kv().await;
    let request = PutRequest { key: "n/1".into(), value: "a".into(), ..Default::default() };
    // Both other members refuse: the client hears it, once, as a member
    // that does not host the shard says it (no member sends it further).
    let e = kv.put(request.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let shard = shard_of("n/1");
    assert!(e.message().starts_with(&format!("shard s{shard} is not on this member")), "{e:?}");
    let e = kv
        .range(RangeRequest { key: "n/".into(), range_end: prefix_end("n/"), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("is not on this member"), "{e:?}");
    // A call marked as forwarded is refused by the member itself.
    let mut direct = members[1].kv().await;
    let mut call = tonic::Request::new(request);
    call.metadata_mut().insert("ringkv-forwarded-shard", shard.to_string().parse().unwrap());
    let e = direct.put(call).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(
        e.metadata().get("ringkv-not-hosted").and_then(|v| v.to_str().ok()),
        Some(shard.to_string().as_str()),
        "{e:?}"
    );
}

/// The Lock and Election services on a member that does not hold the
/// name's shard send the whole call to a member that does (with
/// `--hash-key-segments 1` every key of one lock or election shares a
/// shard): exclusion, hand-over on unlock, campaign, leader, proclaim,
/// observe and resign all work through it, and a member refusing
/// forwarded calls shows the call did travel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_calls_go_whole_to_a_member_holding_the_names_shard() {
    use ringkv_api::v3electionpb::election_client::ElectionClient;
    use ringkv_api::v3electionpb::{
        CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest,
    };
    use ringkv_api::v3lockpb::lock_client::LockClient;
    use ringkv_api::v3lockpb::{LockRequest, UnlockRequest};

    let members = cluster(&["--shards=8", "--hash-key-segments=1", "--debug-remote-shards"]).await;
    let grant = |m: &Member| {
        let endpoint = m.endpoint.clone();
        async move {
            let mut lease = LeaseClient::connect(endpoint).await.unwrap();
            retried!(lease, lease_grant, LeaseGrantRequest { ttl: 60, id: 0 }).id
        }
    };
    let (l1, l2) = (grant(&members[0]).await, grant(&members[2]).await);
    let mut lock_a = LockClient::connect(members[0].endpoint.clone()).await.unwrap();
    let first = retried!(lock_a, lock, LockRequest { name: b"job".to_vec(), lease: l1 });
    assert_eq!(first.key, format!("job/{l1:x}").into_bytes());
    // Through another member, a second caller waits while the first holds it.
    let mut lock_c = LockClient::connect(members[2].endpoint.clone()).await.unwrap();
    let mut second =
        tokio::spawn(
            async move { lock_c.lock(LockRequest { name: b"job".to_vec(), lease: l2 }).await },
        );
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(waited.is_err(), "the lock is held: the second caller must still wait");
    lock_a.unlock(UnlockRequest { key: first.key.clone() }).await.unwrap();
    let second = second.await.unwrap().unwrap().into_inner();
    assert_eq!(second.key, format!("job/{l2:x}").into_bytes());

    let mut election = ElectionClient::connect(members[0].endpoint.clone()).await.unwrap();
    // An observer through member A, which sends the stream on too.
    let mut observer =
        election.observe(LeaderRequest { name: b"boss".to_vec() }).await.unwrap().into_inner();
    let l3 = grant(&members[1]).await;
    let campaign = CampaignRequest { name: b"boss".to_vec(), lease: l3, value: b"a".to_vec() };
    let won = election.campaign(campaign).await.unwrap().into_inner();
    let leader = won.leader.unwrap();
    let mut other = ElectionClient::connect(members[1].endpoint.clone()).await.unwrap();
    let ask = LeaderRequest { name: b"boss".to_vec() };
    let now = other.leader(ask.clone()).await.unwrap().into_inner();
    assert_eq!(now.kv.unwrap().value, b"a");
    let seen = tokio::time::timeout(WAIT, observer.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(seen.kv.unwrap().value, b"a");
    let proclaim = ProclaimRequest { leader: Some(leader.clone()), value: b"b".to_vec() };
    election.proclaim(proclaim).await.unwrap();
    let seen = tokio::time::timeout(WAIT, observer.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(seen.kv.unwrap().value, b"b");
    assert_eq!(other.leader(ask.clone()).await.unwrap().into_inner().kv.unwrap().value, b"b");
    election.resign(ResignRequest { leader: Some(leader) }).await.unwrap();
    let gone = other.leader(ask).await.unwrap_err();
    assert_eq!(gone.message(), "election: no leader", "{gone:?}");

    // Members that refuse forwarded calls: the lock call was sent on.
    let refusing = cluster(&[
        "--shards=8",
        "--hash-key-segments=1",
        "--debug-remote-shards",
        "--debug-refuse-forwarded",
    ])
    .await;
    let l4 = grant(&refusing[0]).await;
    let mut lock = LockClient::connect(refusing[0].endpoint.clone()).await.unwrap();
    let e = lock.lock(LockRequest { name: b"job".to_vec(), lease: l4 }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("is not on this member"), "{e:?}");
    let mut election = ElectionClient::connect(refusing[0].endpoint.clone()).await.unwrap();
    let e = election.observe(LeaderRequest { name: b"boss".to_vec() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("is not on this member"), "{e:?}");
}
