//! Differential test: etcd 3.4's own JSON gateway against ringkv's gateway
//! codec, error catalog and response conversions.
//!
//! One etcd (Debian's `etcd-server`, installed by `scripts/setup`) runs on
//! loopback ports with a temporary data directory. Every request is sent
//! to etcd as JSON; then
//! - ringkv must decode the same request body;
//! - ringkv, given the message etcd answered, must print it byte for byte
//!   as etcd did (field names, order, 64-bit integers, base64, enums,
//!   omitted defaults, stream framing);
//! - where etcd refuses a request, ringkv's [`EtcdError`] for that case
//!   must give the same HTTP status and the same body;
//! - ringkv's conversions of store answers must give the header shapes
//!   etcd gives (inner transaction headers, lease answers).
//!
//! The test fails, loudly, when `etcd` is not installed.

#![allow(clippy::unwrap_used, reason = "a test: a failed step should stop it")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use ringkv_api::etcdserverpb::{self as pb, response_op::Response};
use ringkv_server::api::convert::{HeaderInfo, from_pb, to_pb};
use ringkv_server::api::{EtcdError, RequestLimits};
use ringkv_server::gateway::{
    GatewayError, GatewayResponse, HttpReply, RequestStream, Rpc, decode_request, decode_response,
    encode_error, encode_response, encode_stream_message, route,
};
use ringkv_storage::mvcc::{self, LeaseId, Revision};

/// How long one read from etcd may block before the test gives up (a
/// hang, not a slow answer: answers take milliseconds).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a request that changes nothing is sent again after etcd
/// reset the connection.
const RESET_RETRIES: u32 = 3;

/// Readiness polls of a starting etcd, and the pause between them.
const START_POLLS: u32 = 600;
const START_POLL_PAUSE: Duration = Duration::from_millis(100);

/// An etcd 3.4 member on loopback ports, killed on drop.
struct Etcd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let version = Command::new("etcd").arg("--version").output().unwrap_or_else(|e| {
            panic!(
                "cannot run `etcd` ({e}): this test needs etcd 3.4 on PATH; run scripts/setup, \
                 which installs Debian's etcd-server"
            )
        });
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        assert!(version.contains("etcd Version: 3.4."), "expected etcd 3.4, found: {version}");
        let dir = tempfile::tempdir().unwrap();
        // Both held until both are chosen: one port twice would stop etcd.
        let (a, b) =
            (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let (client, peer) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
        drop((a, b));
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "differential"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster=differential=http://127.0.0.1:{peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let mut etcd = Etcd { child, port: client, dir };
        etcd.wait_ready();
        etcd
    }

    fn wait_ready(&mut self) {
        for _ in 0..START_POLLS {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("etcd exited ({status}) while starting:\n{}", self.log());
            }
            if let Ok(reply) = self.try_request("GET", "/health", b"")
                && reply.status == 200
                && reply.body.windows(6).any(|w| w == b"\"true\"")
            {
                return;
            }
            thread::sleep(START_POLL_PAUSE);
        }
        panic!("etcd did not become healthy:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    fn connect(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<TcpStream> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        // One write, so the body arrives with the head: etcd answers some
        // routes (404, 405) without reading the body, and a body segment
        // landing after it closed would be answered with a reset that
        // discards the reply.
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request)?;
        Ok(stream)
    }

    fn try_request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Reply> {
        let mut raw = Vec::new();
        self.connect(method, path, body)?.read_to_end(&mut raw)?;
        Ok(Reply::parse(&raw).expect("a complete HTTP response"))
    }

    /// Sends a request that changes nothing, again if etcd reset the
    /// connection: it may close one whose body it never read, and the
    /// reset can overtake its reply on a loaded machine.
    fn request_idempotent(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let mut attempt = 0;
        loop {
            match self.try_request(method, path, body) {
                Ok(reply) => return reply,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionReset
                        && attempt < RESET_RETRIES =>
                {
                    attempt += 1;
                }
                Err(e) => panic!("{method} {path}: {e}"),
            }
        }
    }

    fn post(&self, path: &str, body: &[u8]) -> Reply {
        self.try_request("POST", path, body).unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POSTs to a streaming route and reads until `messages` newline-ended
    /// messages arrived or etcd ended the response.
    fn post_stream(&self, path: &str, body: &[u8], messages: usize) -> Reply {
        let mut stream = self.connect("POST", path, body).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0_u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).unwrap_or_else(|e| panic!("reading {path}: {e}"));
            raw.extend_from_slice(&buf[..n]);
            if let Some(reply) = Reply::parse(&raw)
                && (n == 0 || reply.body.iter().filter(|&&b| b == b'\n').count() >= messages)
            {
                return reply;
            }
            assert!(
                n > 0,
                "etcd closed {path} before answering: {}",
                String::from_utf8_lossy(&raw)
            );
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Only the child this test started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response: status, lowercased headers, de-chunked body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    /// Parses as much of `raw` as has arrived; `None` before the headers
    /// are complete.
    fn parse(raw: &[u8]) -> Option<Reply> {
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let rest = &raw[head_end + 4..];
        let body =
            if head.contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_vec() };
        Some(Reply { status, headers: head, body })
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// The data of the complete chunks in `raw` (trailers are dropped).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_field = String::from_utf8_lossy(&raw[..line_end]);
        let Ok(size) = usize::from_str_radix(size_field.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        let start = line_end + 2;
        if size == 0 || raw.len() < start + size + 2 {
            break;
        }
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
    body
}

/// Checks that ringkv reads `json` as a request to `path`, that etcd
/// answers it with 200, and that ringkv prints etcd's answer exactly as
/// etcd did. Returns etcd's answer.
fn unary(etcd: &Etcd, path: &str, json: &str) -> GatewayResponse {
    let rpc = route("POST", path).unwrap();
    decode_request(rpc, json.as_bytes())
        .unwrap_or_else(|e| panic!("ringkv refuses {path} {json}: {e}"));
    let reply = etcd.post(path, json.as_bytes());
    assert_eq!(reply.status, 200, "etcd refused {path} {json}: {}", reply.text());
    assert!(reply.headers.contains("content-type: application/json"), "{}", reply.headers);
    let response = decode_response(rpc, &reply.body)
        .unwrap_or_else(|e| panic!("ringkv cannot read etcd's answer {}: {e}", reply.text()));
    let ours = String::from_utf8(encode_response(&response).unwrap()).unwrap();
    assert_eq!(ours, reply.text(), "{path} {json}");
    response
}

/// Checks that etcd refuses `json` at `path` exactly as ringkv answers
/// `expected`: same HTTP status, same body.
fn refused(etcd: &Etcd, path: &str, json: &[u8], expected: &EtcdError) {
    let rpc = route("POST", path).unwrap();
    decode_request(rpc, json).unwrap_or_else(|e| panic!("ringkv cannot read {path}: {e}"));
    let reply = etcd.post(path, json);
    let ours = encode_error(expected.code(), &expected.message());
    assert_eq!(
        (reply.status, reply.text()),
        (ours.status, String::from_utf8(ours.body).unwrap()),
        "{path}"
    );
}

/// Checks a streaming route: ringkv reads the request body, and prints
/// each of the first `messages` messages etcd sent exactly as etcd did.
fn streamed(etcd: &Etcd, path: &str, json: &str, messages: usize) -> Vec<GatewayResponse> {
    let rpc = route("POST", path).unwrap();
    let mut requests = RequestStream::new(rpc, RequestLimits::default().grpc_message_bytes_max());
    assert!(!requests.push(json.as_bytes()).unwrap().is_empty(), "{json}");
    requests.finish().unwrap();
    let reply = etcd.post_stream(path, json.as_bytes(), messages);
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    let mut responses = Vec::new();
    for line in reply.body.split_inclusive(|&b| b == b'\n').take(messages) {
        let envelope: serde_json::Value = serde_json::from_slice(line).unwrap();
        let result = serde_json::to_vec(&envelope["result"]).unwrap();
        let response = decode_response(rpc, &result).unwrap();
        let ours = encode_stream_message(&response).unwrap();
        assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8_lossy(line), "{path}");
        responses.push(response);
    }
    assert_eq!(responses.len(), messages, "{path}: {}", reply.text());
    responses
}

/// Standard base64 with padding, as the gateway carries bytes.
fn b64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let bytes = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn info(header: &pb::ResponseHeader) -> HeaderInfo {
    HeaderInfo {
        cluster_id: header.cluster_id,
        member_id: header.member_id,
        raft_term: header.raft_term,
    }
}

/// The store's answer that an etcd transaction answer stands for: inner
/// revisions from the inner headers, a nested transaction at the outer
/// revision (etcd prints no revision for it).
fn store_txn(resp: &pb::TxnResponse, revision: i64) -> mvcc::TxnResponse {
    let inner = |header: &Option<pb::ResponseHeader>| Revision(header.unwrap().revision);
    let kvs = |kvs: &[ringkv_api::mvccpb::KeyValue]| {
        kvs.iter().cloned().map(from_pb::key_value).collect()
    };
    mvcc::TxnResponse {
        revision: Revision(revision),
        succeeded: resp.succeeded,
        responses: resp
            .responses
            .iter()
            .map(|op| match op.response.as_ref().unwrap() {
                Response::ResponseRange(r) => mvcc::ResponseOp::Range(mvcc::RangeResponse {
                    revision: inner(&r.header),
                    kvs: kvs(&r.kvs),
                    more: r.more,
                    count: r.count,
                }),
                Response::ResponsePut(p) => mvcc::ResponseOp::Put(mvcc::PutResponse {
                    revision: inner(&p.header),
                    prev_kv: p.prev_kv.clone().map(from_pb::key_value),
                }),
                Response::ResponseDeleteRange(d) => {
                    mvcc::ResponseOp::DeleteRange(mvcc::DeleteRangeResponse {
                        revision: inner(&d.header),
                        deleted: d.deleted,
                        prev_kvs: kvs(&d.prev_kvs),
                    })
                }
                Response::ResponseTxn(t) => mvcc::ResponseOp::Txn(store_txn(t, revision)),
            })
            .collect(),
    }
}

#[test]
fn etcds_gateway_and_ringkvs_codec_agree() {
    let etcd = Etcd::start();
    let (foo, bar, baz) = (b64("foo"), b64("bar"), b64("baz"));

    // --- KV -------------------------------------------------------------
    unary(&etcd, "/v3/kv/put", &format!(r#"{{"key":"{foo}","value":"{bar}"}}"#));
    let GatewayResponse::KvPut(put) =
        unary(&etcd, "/v3/kv/put", &format!(r#"{{"key":"{foo}","value":"{baz}","prev_kv":true}}"#))
    else {
        panic!("not a put")
    };
    let header = put.header.unwrap();
    let store = mvcc::PutResponse {
        revision: Revision(header.revision),
        prev_kv: put.prev_kv.clone().map(from_pb::key_value),
    };
    assert_eq!(to_pb::put_response(store, &info(&header)), put);
    for key in ["a", "b", "c"] {
        let lease_free =
            format!(r#"{{"key":"{}","value":"{}"}}"#, b64(&format!("p/{key}")), b64(key));
        unary(&etcd, "/v3/kv/put", &lease_free);
    }
    let GatewayResponse::KvRange(range) =
        unary(&etcd, "/v3/kv/range", &format!(r#"{{"key":"{foo}"}}"#))
    else {
        panic!("not a range")
    };
    let header = range.header.unwrap();
    let store = mvcc::RangeResponse {
        revision: Revision(header.revision),
        kvs: range.kvs.iter().cloned().map(from_pb::key_value).collect(),
        more: range.more,
        count: range.count,
    };
    assert_eq!(to_pb::range_response(store, &info(&header)), range);
    let prefix = format!(r#""key":"{}","range_end":"{}""#, b64("p/"), b64("p0"));
    unary(
        &etcd,
        "/v3/kv/range",
        &format!(r#"{{{prefix},"limit":"2","sortOrder":"DESCEND","sort_target":"VALUE"}}"#),
    );
    unary(&etcd, "/v3/kv/range", &format!(r#"{{{prefix},"keys_only":true,"limit":1}}"#));
    unary(&etcd, "/v3/kv/range", &format!(r#"{{{prefix},"count_only":true}}"#));
    unary(&etcd, "/v3beta/kv/range", r#"{"key":"AA==","range_end":"AA==","serializable":true}"#);
    unary(&etcd, "/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b64("missing")));

    let txn = format!(
        r#"{{"compare":[{{"target":"MOD","key":"{foo}","result":"GREATER","modRevision":"1"}}],
            "success":[{{"requestPut":{{"key":"{foo}","value":"{bar}","prev_kv":true}}}},
                       {{"request_range":{{"key":"{foo}"}}}},
                       {{"request_delete_range":{{"key":"{}","range_end":"{}","prev_kv":true}}}}],
            "failure":[{{"request_range":{{"key":"{foo}"}}}}]}}"#,
        b64("p/a"),
        b64("p/b")
    );
    let nested = format!(
        r#"{{"compare":[{{"target":"VALUE","result":"NOT_EQUAL","key":"{foo}","value":"{bar}"}}],
            "failure":[{{"request_txn":{{"compare":[{{"target":"VERSION","key":"{foo}","version":"100"}}],
                "failure":[{{"request_delete_range":{{"key":"{}","prev_kv":true}}}},
                           {{"request_put":{{"key":"{}","value":"{baz}"}}}}]}}}}]}}"#,
        b64("nothing"),
        b64("n/1")
    );
    for body in [txn, nested] {
        let GatewayResponse::KvTxn(answer) = unary(&etcd, "/v3/kv/txn", &body) else {
            panic!("not a txn")
        };
        let header = answer.header.unwrap();
        let store = store_txn(&answer, header.revision);
        assert_eq!(to_pb::txn_response(store, &info(&header)), answer, "{body}");
    }
    unary(
        &etcd,
        "/v3/kv/deleterange",
        &format!(r#"{{"key":"{}","range_end":"AA==","prev_kv":true}}"#, b64("p/")),
    );

    // --- Watch ----------------------------------------------------------
    let watch =
        format!(r#"{{"create_request":{{"key":"{foo}","start_revision":"1","prev_kv":true}}}}"#);
    streamed(&etcd, "/v3/watch", &watch, 2);

    // --- Lease ----------------------------------------------------------
    let GatewayResponse::LeaseGrant(grant) =
        unary(&etcd, "/v3/lease/grant", r#"{"TTL":30,"ID":7}"#)
    else {
        panic!("not a grant")
    };
    let header = grant.header.unwrap();
    let store =
        mvcc::LeaseGrantResponse { revision: Revision(header.revision), id: LeaseId(7), ttl: 30 };
    assert_eq!(to_pb::lease_grant_response(store, &info(&header)), grant);
    unary(
        &etcd,
        "/v3/kv/put",
        &format!(r#"{{"key":"{}","value":"{bar}","lease":"7"}}"#, b64("leased")),
    );
    unary(&etcd, "/v3/lease/timetolive", r#"{"ID":"7","keys":true}"#);
    let GatewayResponse::LeaseTimeToLive(missing) =
        unary(&etcd, "/v3/kv/lease/timetolive", r#"{"ID":8}"#)
    else {
        panic!("not a time-to-live")
    };
    let header = missing.header.unwrap();
    let ours = to_pb::lease_time_to_live_response(
        &info(&header),
        Revision(header.revision),
        LeaseId(8),
        None,
    );
    assert_eq!(ours, missing);
    unary(&etcd, "/v3/lease/leases", "{}");
    unary(&etcd, "/v3/kv/lease/leases", "");
    let GatewayResponse::LeaseKeepAlive(gone) =
        streamed(&etcd, "/v3/lease/keepalive", r#"{"ID":8}"#, 1).remove(0)
    else {
        panic!("not a keep-alive")
    };
    let header = gone.header.unwrap();
    let ours = to_pb::lease_keep_alive_response(
        &info(&header),
        Revision(header.revision),
        LeaseId(8),
        None,
    );
    assert_eq!(ours, gone);
    streamed(&etcd, "/v3/lease/keepalive", r#"{"ID":7} {"ID":"7"}"#, 2);

    // --- Lock and election ------------------------------------------------
    unary(&etcd, "/v3/lock/lock", &format!(r#"{{"name":"{}","lease":"7"}}"#, b64("l")));
    unary(
        &etcd,
        "/v3/election/campaign",
        &format!(r#"{{"name":"{}","lease":"7","value":"{bar}"}}"#, b64("e")),
    );
    unary(&etcd, "/v3/election/leader", &format!(r#"{{"name":"{}"}}"#, b64("e")));
    streamed(&etcd, "/v3/election/observe", &format!(r#"{{"name":"{}"}}"#, b64("e")), 1);
    unary(&etcd, "/v3/lease/revoke", r#"{"ID":"7"}"#);

    // --- Cluster, maintenance, auth ---------------------------------------
    unary(&etcd, "/v3/cluster/member/list", "{}");
    unary(&etcd, "/v3/maintenance/status", "");
    unary(&etcd, "/v3/maintenance/alarm", r#"{"action":"GET"}"#);
    unary(&etcd, "/v3/maintenance/hash", "{}");
    unary(&etcd, "/v3/maintenance/defragment", "{}");
    unary(&etcd, "/v3/auth/user/add", r#"{"name":"alice","password":"pw"}"#);
    unary(&etcd, "/v3/auth/role/add", r#"{"name":"reader"}"#);
    let grant = format!(
        r#"{{"name":"reader","perm":{{"permType":"READWRITE","key":"{foo}","range_end":"AA=="}}}}"#
    );
    unary(&etcd, "/v3/auth/role/grant", &grant);
    unary(&etcd, "/v3/auth/user/grant", r#"{"user":"alice","role":"reader"}"#);
    unary(&etcd, "/v3/auth/role/get", r#"{"role":"reader"}"#);
    unary(&etcd, "/v3/auth/user/get", r#"{"name":"alice"}"#);
    unary(&etcd, "/v3/auth/user/list", "{}");
    unary(&etcd, "/v3/auth/role/list", "{}");

    // --- Refusals: etcd's and ringkv's catalog agree ----------------------
    let put = |key: &str| format!(r#"{{"request_put":{{"key":"{}"}}}}"#, b64(key));
    refused(&etcd, "/v3/kv/range", br#"{"key":""}"#, &EtcdError::EmptyKey);
    refused(&etcd, "/v3/kv/put", br#"{"value":"YQ=="}"#, &EtcdError::EmptyKey);
    refused(
        &etcd,
        "/v3/kv/put",
        format!(r#"{{"key":"{foo}","value":"{bar}","ignore_value":true}}"#).as_bytes(),
        &EtcdError::ValueProvided,
    );
    refused(
        &etcd,
        "/v3/kv/put",
        format!(r#"{{"key":"{foo}","lease":"5","ignore_lease":true}}"#).as_bytes(),
        &EtcdError::LeaseProvided,
    );
    refused(
        &etcd,
        "/v3/kv/put",
        format!(r#"{{"key":"{}","ignore_value":true}}"#, b64("absent")).as_bytes(),
        &EtcdError::KeyNotFound,
    );
    refused(
        &etcd,
        "/v3/kv/put",
        format!(r#"{{"key":"{foo}","lease":"12345"}}"#).as_bytes(),
        &EtcdError::LeaseNotFound,
    );
    refused(&etcd, "/v3/kv/txn", br#"{"success":[{}]}"#, &EtcdError::KeyNotFound);
    refused(
        &etcd,
        "/v3/kv/txn",
        format!(r#"{{"success":[{},{}]}}"#, put("d"), put("d")).as_bytes(),
        &EtcdError::DuplicateKey,
    );
    let many: Vec<String> = (0..129).map(|i| put(&format!("m{i}"))).collect();
    refused(
        &etcd,
        "/v3/kv/txn",
        format!(r#"{{"success":[{}]}}"#, many.join(",")).as_bytes(),
        &EtcdError::TooManyOps,
    );
    refused(
        &etcd,
        "/v3/kv/range",
        format!(r#"{{"key":"{foo}","revision":"100000"}}"#).as_bytes(),
        &EtcdError::FutureRev,
    );
    unary(&etcd, "/v3/kv/compaction", r#"{"revision":"3","physical":true}"#);
    refused(
        &etcd,
        "/v3/kv/range",
        format!(r#"{{"key":"{foo}","revision":"2"}}"#).as_bytes(),
        &EtcdError::Compacted,
    );
    refused(&etcd, "/v3/kv/compaction", br#"{"revision":"2"}"#, &EtcdError::Compacted);
    unary(&etcd, "/v3/lease/grant", r#"{"TTL":30,"ID":9}"#);
    refused(&etcd, "/v3/lease/grant", br#"{"TTL":30,"ID":9}"#, &EtcdError::LeaseExist);
    refused(&etcd, "/v3/lease/grant", br#"{"TTL":"9000000001"}"#, &EtcdError::LeaseTtlTooLarge);
    refused(&etcd, "/v3/lease/revoke", br#"{"ID":8}"#, &EtcdError::LeaseNotFound);
    refused(&etcd, "/v3/cluster/member/remove", br#"{"ID":"1"}"#, &EtcdError::MemberNotFound);
    refused(&etcd, "/v3/cluster/member/promote", br#"{"ID":"1"}"#, &EtcdError::MemberNotFound);
    refused(
        &etcd,
        "/v3/cluster/member/add",
        br#"{"peerURLs":["not a url"]}"#,
        &EtcdError::MemberBadUrls,
    );
    refused(
        &etcd,
        "/v3/maintenance/transfer-leadership",
        br#"{"targetID":"5"}"#,
        &EtcdError::BadLeaderTransferee,
    );
    refused(
        &etcd,
        "/v3/auth/authenticate",
        br#"{"name":"alice","password":"pw"}"#,
        &EtcdError::AuthNotEnabled,
    );
    refused(&etcd, "/v3/auth/user/get", br#"{"name":"nobody"}"#, &EtcdError::UserNotFound);
    refused(
        &etcd,
        "/v3/auth/user/add",
        br#"{"name":"alice","password":"pw"}"#,
        &EtcdError::UserAlreadyExist,
    );
    refused(&etcd, "/v3/auth/user/add", br#"{"name":"","password":"pw"}"#, &EtcdError::UserEmpty);
    refused(&etcd, "/v3/auth/role/get", br#"{"role":"nobody"}"#, &EtcdError::RoleNotFound);
    refused(&etcd, "/v3/auth/role/add", br#"{"name":"reader"}"#, &EtcdError::RoleAlreadyExist);
    refused(&etcd, "/v3/auth/enable", b"{}", &EtcdError::RootUserNotExist);
    refused(
        &etcd,
        "/v3/election/leader",
        format!(r#"{{"name":"{}"}}"#, b64("nobody")).as_bytes(),
        &EtcdError::ElectionNoLeader,
    );
    let value = "x".repeat(1_600_000);
    refused(
        &etcd,
        "/v3/kv/put",
        format!(r#"{{"key":"{foo}","value":"{}"}}"#, b64(&value)).as_bytes(),
        &EtcdError::RequestTooLarge,
    );
    unary(
        &etcd,
        "/v3/maintenance/alarm",
        r#"{"action":"ACTIVATE","memberID":"1","alarm":"NOSPACE"}"#,
    );
    refused(&etcd, "/v3/kv/put", format!(r#"{{"key":"{foo}"}}"#).as_bytes(), &EtcdError::NoSpace);
    unary(
        &etcd,
        "/v3/maintenance/alarm",
        r#"{"action":"DEACTIVATE","memberID":"1","alarm":"NOSPACE"}"#,
    );
    unary(&etcd, "/v3/kv/put", &format!(r#"{{"key":"{foo}"}}"#));

    // --- Malformed JSON: same status, same body shape and code ------------
    for body in [
        &br#"{"key":"Zm9v""#[..],
        br#"{"key":"Zm9v","sort_order":"WHAT"}"#,
        b"[]",
        br#"{"key":"Zm9v","limit":"abc"}"#,
        br#"{"key":"!!"}"#,
    ] {
        let reply = etcd.request_idempotent("POST", "/v3/kv/range", body);
        let err = decode_request(Rpc::KvRange, body).unwrap_err();
        assert!(matches!(err, GatewayError::MalformedJson { .. }), "{err:?}");
        let ours = err.reply();
        assert_eq!(reply.status, ours.status, "{}", String::from_utf8_lossy(body));
        let shape = |body: &[u8]| {
            let value: serde_json::Value = serde_json::from_slice(body).unwrap();
            let keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
            (keys, value["code"].clone(), value["error"] == value["message"])
        };
        assert_eq!(shape(&reply.body), shape(&ours.body), "{}", reply.text());
    }
    // An unknown field is ignored by both, whatever its value; an unknown
    // enum number is accepted by both.
    unary(
        &etcd,
        "/v3/kv/range",
        &format!(r#"{{"key":"{foo}","bogus":{{"x":[1]}},"lease":"abc"}}"#),
    );
    unary(&etcd, "/v3/kv/range", &format!(r#"{{"key":"{foo}","sort_order":7}}"#));

    // --- Routing ------------------------------------------------------------
    let reply = etcd.request_idempotent("POST", "/v3/kv/nope", b"{}");
    let HttpReply { status, body, .. } = route("POST", "/v3/kv/nope").unwrap_err().reply();
    assert_eq!((reply.status, reply.body), (status, body));
    let reply = etcd.request_idempotent("GET", "/v3/kv/range", b"");
    let HttpReply { status, body, .. } = route("GET", "/v3/kv/range").unwrap_err().reply();
    assert_eq!((reply.status, reply.body), (status, body));
}
