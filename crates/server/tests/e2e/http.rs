//! The HTTP side of the client port: the JSON gateway (as curl would call
//! it), `/health`, `/version`, `/metrics`, the drain admin routes.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// An HTTP/1.1 answer.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`), as curl sends
/// it; the body read to the end, chunked encoding undone.
pub async fn http(endpoint: &str, method: &str, path: &str, body: &str) -> Answer {
    http_as(endpoint, method, path, body, None).await
}

/// [`http`] with an `Authorization` header carrying `token`, if any.
pub async fn http_as(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Answer {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let authorization = token.map(|t| format!("Authorization: {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {authorization}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Answer { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_health_version_metrics() {
    let m = single().await;
    let ep = m.endpoint.as_str();

    // KV through the gateway: base64 bytes, 64-bit integers as strings.
    let put = http(ep, "POST", "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#).await;
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(put.header("access-control-allow-origin"), Some("*"));
    let header = &put.json()["header"];
    assert_eq!(header["revision"], "2");
    assert_eq!(header["member_id"], m.server().member_id().0.to_string());
    let range = http(ep, "POST", "/v3/kv/range", r#"{"key":"Zm9v"}"#).await;
    let body = range.json();
    assert_eq!(body["kvs"][0]["value"], "YmFy");
    assert_eq!(body["kvs"][0]["create_revision"], "2");
    assert_eq!(body["count"], "1");
    // The 3.3 prefix is an alias.
    let beta = http(ep, "POST", "/v3beta/kv/range", r#"{"key":"Zm9v"}"#).await;
    assert_eq!(beta.json()["kvs"][0]["key"], "Zm9v");
    // Txn with camelCase input, as etcd's documentation writes it.
    let txn = http(
        ep,
        "POST",
        "/v3/kv/txn",
        r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],
            "success":[{"requestPut":{"key":"Zm9v","value":"YmF6"}}]}"#,
    )
    .await;
    let body = txn.json();
    assert_eq!(body["succeeded"], true);
    assert_eq!(body["responses"][0]["response_put"]["header"]["revision"], "3");

    // Errors in the gateway's shape.
    let empty = http(ep, "POST", "/v3/kv/range", r#"{"key":""}"#).await;
    assert_eq!(empty.status, 400);
    assert_eq!(
        empty.json(),
        json!({"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3})
    );
    let malformed = http(ep, "POST", "/v3/kv/put", "{not json").await;
    assert_eq!(malformed.status, 400);
    assert_eq!(http(ep, "POST", "/v3/nope", "{}").await.status, 404);
    assert_eq!(http(ep, "GET", "/v3/kv/range", "").await.status, 405);

    // Leases and the keep-alive stream, as Patroni uses them.
    let grant = http(ep, "POST", "/v3/lease/grant", r#"{"TTL":30}"#).await.json();
    let id = grant["ID"].as_str().unwrap().to_owned();
    assert_eq!(grant["TTL"], "30");
    let keepalive = http(ep, "POST", "/v3/lease/keepalive", &format!(r#"{{"ID":"{id}"}}"#)).await;
    assert_eq!(keepalive.status, 200);
    let line: Value =
        serde_json::from_slice(keepalive.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["result"]["TTL"], "30");
    assert_eq!(line["result"]["ID"], id);

    // Cluster and maintenance.
    let members = http(ep, "POST", "/v3/cluster/member/list", "{}").await.json();
    assert_eq!(members["members"][0]["clientURLs"][0], m.endpoint);
    let status = http(ep, "POST", "/v3/maintenance/status", "{}").await.json();
    assert_eq!(status["version"], "3.5.13");

    // Lock and election through the gateway.
    let lease_id = &id;
    let lock = http(
        ep,
        "POST",
        "/v3/lock/lock",
        &format!(r#"{{"name":"bG9jaw==","lease":"{lease_id}"}}"#),
    )
    .await;
    assert_eq!(lock.status, 200, "{}", String::from_utf8_lossy(&lock.body));
    assert!(lock.json()["key"].is_string());

    // /version, /health, /metrics.
    let version = http(ep, "GET", "/version", "").await;
    assert_eq!(version.json(), json!({"etcdserver":"3.5.13","etcdcluster":"3.5.0"}));
    let health = http(ep, "GET", "/health", "").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"health":"true","reason":""}));
    // Shard gauges follow the node's periodic status refresh: a fast run
    // can scrape before the first one, so wait for it (bounded).
    let mut text = String::new();
    for _ in 0..100 {
        let metrics = http(ep, "GET", "/metrics", "").await;
        assert_eq!(metrics.status, 200);
        text = String::from_utf8(metrics.body).unwrap();
        if text.contains("ringkv_shard_is_leader{shard=\"1\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(text.contains("ringkv_shard_is_leader{shard=\"1\"} 1"), "{text}");
    assert!(text.contains("ringkv_proposals_submitted_total"), "{text}");
    assert!(text.contains("ringkv_disk_fsync_duration_seconds_bucket"), "{text}");
    assert_eq!(http(ep, "GET", "/nothing-here", "").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_false_without_a_leader() {
    let mut members = cluster_with(2, &[]).await;
    members[1].stop().await;
    let health = http(&members[0].endpoint, "GET", "/health", "").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json(), json!({"health":"false","reason":"RAFT NO LEADER"}));
}

/// The drain routes: refused where replicas do not move; else a member id
/// in hex, the node's refusals as JSON with etcd's gateway statuses, and
/// with auth enabled only for the root role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_routes_need_placement_moves_and_an_administrator() {
    // The refusal's reason, or the whole body when it is not a refusal.
    let error = |a: &Answer| {
        let body = a.json();
        body["error"].as_str().map_or_else(|| body.to_string(), str::to_owned)
    };
    let plain = single().await;
    for method in ["GET", "POST"] {
        let path = if method == "GET" { "/ringkv/v1/drain" } else { "/ringkv/v1/drain/1" };
        let a = http(&plain.endpoint, method, path, "").await;
        assert_eq!(a.status, 412, "{method}");
        assert!(error(&a).contains("--placement-moves"), "{}", error(&a));
        assert_eq!(a.json()["reason"], "no_placement_moves");
    }

    let m = single_with(&["--shards=4", "--placement-moves", "--bcrypt-cost=4"]).await;
    let ep = m.endpoint.as_str();
    let me = format!("{:016x}", m.server().state().member_id().0);
    eventually("the drain status is published", || async {
        let a = http(ep, "GET", "/ringkv/v1/drain", "").await;
        a.status == 200 && a.json()["members"].as_array().is_some_and(|m| m.len() == 1)
    })
    .await;
    let a = http(ep, "GET", "/ringkv/v1/drain", "").await;
    let only = &a.json()["members"][0];
    assert_eq!(
        (only["id"].as_str().unwrap(), only["draining"].as_bool()),
        (me.as_str(), Some(false))
    );
    assert_eq!(only["shards"], json!([1, 2, 3, 4]), "one member holds every shard");
    let a = http(ep, "POST", "/ringkv/v1/drain/m0", "").await;
    assert_eq!(a.status, 400, "{}", error(&a));
    let a = http(ep, "POST", "/ringkv/v1/drain/dead", "").await;
    assert_eq!(a.status, 412);
    assert!(error(&a).contains("not a member of the cluster"), "{}", error(&a));
    let a = http(ep, "POST", &format!("/ringkv/v1/drain/{me}"), "").await;
    assert_eq!((a.status, a.json()["code"].as_i64()), (412, Some(9)));
    assert!(error(&a).contains("add 3 more members"), "{}", error(&a));

    auth_setup(&m).await;
    let c = m.etcd().await;
    let root = c.auth_client().authenticate("root".into(), "rootpw".into()).await.unwrap();
    let alice = c.auth_client().authenticate("alice".into(), "alicepw".into()).await.unwrap();
    let a = http(ep, "GET", "/ringkv/v1/drain", "").await;
    assert_eq!(a.status, 400, "anonymous: {}", error(&a));
    assert!(error(&a).contains("user name is empty"), "{}", error(&a));
    for method in ["GET", "POST", "DELETE"] {
        let path = if method == "GET" {
            "/ringkv/v1/drain".to_owned()
        } else {
            format!("/ringkv/v1/drain/{me}")
        };
        let a = http_as(ep, method, &path, "", Some(alice.token())).await;
        assert_eq!(a.status, 403, "{method} as alice: {}", error(&a));
    }
    let a = http_as(ep, "GET", "/ringkv/v1/drain", "", Some(root.token())).await;
    assert_eq!(a.status, 200);
    let a = http_as(ep, "DELETE", &format!("/ringkv/v1/drain/{me}"), "", Some(root.token())).await;
    assert_eq!((a.status, a.json()["draining"].as_bool()), (200, Some(false)));
    let a = http_as(ep, "POST", &format!("/ringkv/v1/drain/{me}"), "", Some(root.token())).await;
    assert!(error(&a).contains("add 3 more members"), "as root: {}", error(&a));
}
