//! End to end: the real `etcdctl` (Debian's `etcd-client`, etcd 3.4) talks
//! to a tonic server built from our `.proto` files.
//!
//! The server here is test-only: an in-memory map behind `KV/Range` and
//! `KV/Put`, and a `Cluster/MemberList` that reports one member. Everything
//! else answers through the generated default stubs. That etcdctl's
//! requests arrive with the right fields and our answers print as etcd's
//! proves that service paths, field numbers and types match what a real etcd
//! client sends and expects.
//!
//! Needs `etcdctl` on `PATH` (`scripts/setup` installs it); fails, rather
//! than skips, without it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Mutex;

use ringkv_api::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use ringkv_api::etcdserverpb::kv_server::{Kv, KvServer};
use ringkv_api::etcdserverpb::{
    Member, MemberListRequest, MemberListResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseHeader,
};
use ringkv_api::mvccpb::KeyValue;
use serde_json::Value;
use tonic::{Request, Response, Status};

const CLUSTER_ID: u64 = 0x1234_5678_9abc_def0;
const MEMBER_ID: u64 = 0x0fed_cba9_8765_4321;
const RAFT_TERM: u64 = 7;

/// Bounds every etcdctl call, so a server that never answers fails the
/// test with etcdctl's own error instead of hanging it.
const ETCDCTL_TIMEOUTS: [&str; 2] = ["--dial-timeout=10s", "--command-timeout=20s"];

/// A minimal single-member store: enough of etcd's KV semantics for the
/// commands this test runs.
#[derive(Default)]
struct TestKv {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Current store revision; etcd starts at 1.
    revision: i64,
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    /// Every Put as received, to check what etcdctl put on the wire.
    puts: Vec<PutRequest>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: CLUSTER_ID,
        member_id: MEMBER_ID,
        revision,
        raft_term: RAFT_TERM,
    })
}

#[tonic::async_trait]
impl Kv for TestKv {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        if req.revision > 0 || req.sort_order != 0 || req.min_mod_revision != 0 {
            return Err(Status::unimplemented(
                "the test server reads only the latest revision, unsorted",
            ));
        }
        let state = self.state.lock().expect("no test thread panicked while holding the lock");
        let in_range = |key: &Vec<u8>| match req.range_end.as_slice() {
            [] => *key == req.key,
            [0] => *key >= req.key,
            end => *key >= req.key && key.as_slice() < end,
        };
        let matching: Vec<&KeyValue> =
            state.kvs.iter().filter(|(k, _)| in_range(k)).map(|(_, kv)| kv).collect();
        let count = i64::try_from(matching.len()).expect("few keys");
        let limit = usize::try_from(req.limit).expect("limit is not negative");
        let take = if limit == 0 { matching.len() } else { limit.min(matching.len()) };
        let kvs = if req.count_only {
            Vec::new()
        } else {
            matching[..take]
                .iter()
                .map(|kv| KeyValue {
                    value: if req.keys_only { Vec::new() } else { kv.value.clone() },
                    ..(*kv).clone()
                })
                .collect()
        };
        Ok(Response::new(RangeResponse {
            header: header(state.revision),
            kvs,
            more: take < matching.len(),
            count,
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        let mut state = self.state.lock().expect("no test thread panicked while holding the lock");
        state.puts.push(req.clone());
        state.revision += 1;
        let revision = state.revision;
        let prev = state.kvs.get(&req.key).cloned();
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: req.value,
            lease: req.lease,
        };
        state.kvs.insert(req.key, kv);
        let prev_kv = if req.prev_kv { prev } else { None };
        Ok(Response::new(PutResponse { header: header(revision), prev_kv }))
    }
}

struct TestCluster;

#[tonic::async_trait]
impl Cluster for TestCluster {
    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: header(0),
            members: vec![Member {
                id: MEMBER_ID,
                name: "test-member".into(),
                peer_urls: vec!["http://127.0.0.1:2380".into()],
                client_urls: vec!["http://127.0.0.1:2379".into()],
                is_learner: false,
            }],
        }))
    }
}

/// Runs `etcdctl` against `addr` off the async threads.
async fn etcdctl(addr: SocketAddr, args: &[&str]) -> Output {
    let endpoint = format!("--endpoints={addr}");
    let args: Vec<String> = [endpoint.as_str()]
        .iter()
        .chain(&ETCDCTL_TIMEOUTS)
        .chain(args)
        .map(|s| (*s).to_owned())
        .collect();
    let result = tokio::task::spawn_blocking(move || {
        let mut command = Command::new("etcdctl");
        command.args(&args).env("ETCDCTL_API", "3");
        // Nothing from the caller's environment may redirect etcdctl.
        for var in [
            "ETCDCTL_ENDPOINTS",
            "ETCDCTL_USER",
            "ETCDCTL_CACERT",
            "ETCDCTL_CERT",
            "ETCDCTL_KEY",
            "ETCDCTL_INSECURE_TRANSPORT",
        ] {
            command.env_remove(var);
        }
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "grpc_proxy",
        ] {
            command.env_remove(var);
        }
        command.output()
    })
    .await
    .expect("the etcdctl task did not panic");
    match result {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "etcdctl is not installed: this test needs Debian's etcd-client package. \
             Run scripts/setup (it installs it) or `apt-get install etcd-client`."
        ),
        Err(e) => panic!("could not run etcdctl: {e}"),
    }
}

/// Runs etcdctl, requires success, returns stdout.
async fn etcdctl_ok(addr: SocketAddr, args: &[&str]) -> String {
    let output = etcdctl(addr, args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_speaks_to_a_server_built_from_our_protos() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let kv = std::sync::Arc::new(TestKv::default());
    kv.state.lock().unwrap().revision = 1;
    let server = tonic::transport::Server::builder()
        .add_service(KvServer::from_arc(kv.clone()))
        .add_service(ClusterServer::new(TestCluster))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let server = tokio::spawn(server);

    // KV/Put: etcdctl prints OK once it decodes our PutResponse.
    assert_eq!(etcdctl_ok(addr, &["put", "foo", "bar"]).await, "OK\n");

    // KV/Range, printed by etcdctl as JSON from the decoded RangeResponse:
    // every header and KeyValue field makes the round trip.
    let json: Value =
        serde_json::from_str(&etcdctl_ok(addr, &["get", "foo", "-w", "json"]).await).unwrap();
    assert_eq!(json["header"]["cluster_id"], CLUSTER_ID);
    assert_eq!(json["header"]["member_id"], MEMBER_ID);
    assert_eq!(json["header"]["revision"], 2);
    assert_eq!(json["header"]["raft_term"], RAFT_TERM);
    assert_eq!(json["count"], 1);
    let kvs = json["kvs"].as_array().unwrap();
    assert_eq!(kvs.len(), 1, "{json}");
    assert_eq!(kvs[0]["key"], "Zm9v", "base64 of foo");
    assert_eq!(kvs[0]["value"], "YmFy", "base64 of bar");
    assert_eq!(kvs[0]["create_revision"], 2);
    assert_eq!(kvs[0]["mod_revision"], 2);
    assert_eq!(kvs[0]["version"], 1);

    // prev_kv and lease travel both ways (etcdctl takes lease IDs in hex).
    assert_eq!(etcdctl_ok(addr, &["put", "foo", "baz", "--prev-kv"]).await, "OK\nfoo\nbar\n");
    assert_eq!(etcdctl_ok(addr, &["put", "foo2", "x", "--lease=1234abcd"]).await, "OK\n");
    {
        let state = kv.state.lock().unwrap();
        let puts: Vec<_> = state
            .puts
            .iter()
            .map(|p| (p.key.as_slice(), p.value.as_slice(), p.lease, p.prev_kv))
            .collect();
        assert_eq!(
            puts,
            [
                (&b"foo"[..], &b"bar"[..], 0, false),
                (b"foo", b"baz", 0, true),
                (b"foo2", b"x", 0x1234_abcd, false)
            ]
        );
    }
    let json: Value =
        serde_json::from_str(&etcdctl_ok(addr, &["get", "foo2", "-w", "json"]).await).unwrap();
    assert_eq!(json["kvs"][0]["lease"], 0x1234_abcd);

    // A prefix read: etcdctl computes range_end "fop" from "foo".
    assert_eq!(etcdctl_ok(addr, &["get", "foo", "--prefix"]).await, "foo\nbaz\nfoo2\nx\n");
    assert_eq!(
        etcdctl_ok(addr, &["get", "foo", "--prefix", "--keys-only", "--limit=1"]).await,
        "foo\n\n"
    );

    // Cluster/MemberList routes to the Cluster service, and the Member
    // fields (ID, name, peerURLs, clientURLs, isLearner) decode.
    assert_eq!(
        etcdctl_ok(addr, &["member", "list"]).await,
        format!(
            "{MEMBER_ID:x}, started, test-member, http://127.0.0.1:2380, http://127.0.0.1:2379, false\n"
        )
    );

    // An RPC of a mounted service that the server does not implement answers
    // through the generated default stub.
    let output = etcdctl(addr, &["del", "foo"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "del must fail: {output:?}");
    assert!(stderr.contains("code = Unimplemented desc = Not yet implemented"), "stderr: {stderr}");

    server.abort();
}
