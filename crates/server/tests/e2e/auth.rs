//! Auth with a real etcd client (the `etcd-client` crate), covering what
//! etcdctl 3.4 cannot drive (auth status, watch, lock and lease rights,
//! etcd 3.5's hashed passwords, the gateway's `Authorization` header, the
//! login rate limit, JWTs on every member). The etcdctl side is in
//! `crates/cli/tests/auth.rs`.

use base64::Engine as _;
use etcd_client::{Client, ConnectOptions, GetOptions, LockOptions, Txn, TxnOp, WatchOptions};
use ringkv_api::etcdserverpb::auth_client::AuthClient;
use ringkv_api::etcdserverpb::{AuthStatusRequest, AuthUserAddRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::common::*;

/// Cheap hashes: the tests verify many passwords.
const FAST: &str = "--bcrypt-cost=4";

fn status(e: etcd_client::Error) -> tonic::Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn denied(e: etcd_client::Error) {
    let s = status(e);
    assert_eq!(
        (s.code(), s.message()),
        (Code::PermissionDenied, "etcdserver: permission denied"),
        "{s:?}"
    );
}

async fn as_user(m: &Member, user: &str, password: &str) -> Client {
    let options = ConnectOptions::new().with_user(user, password);
    Client::connect([m.endpoint.as_str()], Some(options)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_hold_for_every_kind_of_request() {
    let m = single_with(&[FAST]).await;
    auth_setup(&m).await;

    // Nobody: refused with etcd's message.
    let mut anon = m.etcd().await;
    let e = status(anon.put("/app/x", "v", None).await.unwrap_err());
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "etcdserver: user name is empty"));

    let mut root = as_user(&m, "root", "rootpw").await;
    let root_token = anon.auth_client().authenticate("root".into(), "rootpw".into()).await.unwrap();
    let alice_token =
        anon.auth_client().authenticate("alice".into(), "alicepw".into()).await.unwrap();
    // AuthStatus (etcd 3.5; neither etcdctl 3.4 nor the etcd-client crate has it).
    let auth_status = |token: String| {
        let endpoint = m.endpoint.clone();
        async move {
            let mut raw = AuthClient::connect(endpoint).await.unwrap();
            let mut req = tonic::Request::new(AuthStatusRequest {});
            req.metadata_mut().insert("token", token.parse().unwrap());
            raw.auth_status(req).await
        }
    };
    let st = auth_status(root_token.token().to_owned()).await.unwrap().into_inner();
    assert!(st.enabled);
    assert!(st.auth_revision > 1);
    let e = auth_status(alice_token.token().to_owned()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let mut alice = as_user(&m, "alice", "alicepw").await;
    alice.put("/app/x", "1", None).await.unwrap();
    assert_eq!(alice.get("/app/x", None).await.unwrap().kvs()[0].value(), b"1");
    alice.get("/app/", Some(GetOptions::new().with_prefix())).await.unwrap();
    denied(alice.put("/etc/x", "v", None).await.unwrap_err());
    denied(alice.get("/", Some(GetOptions::new().with_prefix())).await.unwrap_err());
    // Serializable reads are checked alike (the node serves them once auth
    // is on, not the direct path).
    let serializable = || GetOptions::new().with_serializable();
    assert_eq!(alice.get("/app/x", Some(serializable())).await.unwrap().kvs()[0].value(), b"1");
    denied(alice.get("/", Some(serializable().with_prefix())).await.unwrap_err());
    let e = status(anon.get("/app/x", Some(serializable())).await.unwrap_err());
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "etcdserver: user name is empty"));
    // Both branches of a transaction are checked.
    let txn = Txn::new()
        .and_then([TxnOp::put("/app/y", "v", None)])
        .or_else([TxnOp::put("/z", "v", None)]);
    denied(alice.txn(txn).await.unwrap_err());
    // Admin-only calls and lists.
    denied(alice.user_list().await.unwrap_err());
    assert_eq!(alice.user_get("alice").await.unwrap().roles(), ["app"]);
    denied(alice.user_get("root").await.unwrap_err());
    denied(alice.maintenance_client().hash_kv(0).await.unwrap_err());
    // A watch outside the role is created and canceled at once.
    let mut stream = alice.watch("/etc/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.canceled(), "{first:?}");
    assert!(first.cancel_reason().contains("etcdserver: permission denied"));
    // ... inside it, it works.
    let mut ok = alice.watch("/app/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    assert!(!ok.message().await.unwrap().unwrap().canceled());
    // Lock and election act with the caller's rights.
    let lease = alice.lease_grant(60, None).await.unwrap().id();
    let options = LockOptions::new().with_lease(lease);
    denied(alice.lock("/etc/lock", Some(options.clone())).await.unwrap_err());
    alice.lock("/app/lock", Some(options)).await.unwrap();
    // Lease: the keys attached count.
    root.put("/etc/owned", "v", Some(etcd_client::PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    denied(alice.lease_revoke(lease).await.unwrap_err());
    denied(
        alice
            .lease_time_to_live(lease, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap_err(),
    );

    // A revocation is in force at once.
    root.role_revoke_permission(
        "app",
        "/app/",
        Some(etcd_client::RoleRevokePermissionOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    let e = alice.get("/app/x", None).await.unwrap_err();
    let s = status(e);
    // The client refreshes its simple token by itself; either way, no read.
    assert!(matches!(s.code(), Code::PermissionDenied | Code::InvalidArgument), "{s:?}");

    // Disabling lets everyone in again.
    root.auth_disable().await.unwrap();
    anon.put("/etc/x", "v", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_fail_alike_and_are_rate_limited() {
    let m = single_with(&[FAST]).await;
    let c = m.etcd().await;
    let e = status(c.auth_client().authenticate("root".into(), "x".into()).await.unwrap_err());
    assert_eq!(e.message(), "etcdserver: authentication is not enabled");
    auth_setup(&m).await;
    let mut auth = c.auth_client();
    for (user, password) in [("alice", "wrong"), ("nobody", "alicepw")] {
        let e = status(auth.authenticate(user.into(), password.into()).await.unwrap_err());
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password"
            ),
            "the same answer for a wrong password and an unknown user"
        );
    }
    for _ in 1..ringkv_server::auth::limiter::LOGIN_FAILURES_MAX {
        auth.authenticate("alice".into(), "wrong".into()).await.unwrap_err();
    }
    // Blocked now, even with the right password...
    let e = status(auth.authenticate("alice".into(), "alicepw".into()).await.unwrap_err());
    assert!(e.message().contains("too many failed authentications"), "{e:?}");
    // ... but only this user from this address.
    auth.authenticate("root".into(), "rootpw".into()).await.unwrap();

    // etcd 3.5's hashedPassword: the client's own bcrypt hash.
    let hash = bcrypt::hash("bobpw", 4).unwrap();
    let root_token = auth.authenticate("root".into(), "rootpw".into()).await.unwrap();
    let mut raw = AuthClient::connect(m.endpoint.clone()).await.unwrap();
    let mut req = tonic::Request::new(AuthUserAddRequest {
        name: "bob".into(),
        hashed_password: base64::engine::general_purpose::STANDARD.encode(hash),
        ..Default::default()
    });
    req.metadata_mut().insert("token", root_token.token().parse().unwrap());
    raw.user_add(req).await.unwrap();
    auth.authenticate("bob".into(), "bobpw".into()).await.unwrap();

    // The gateway takes the token in its Authorization header.
    let body = r#"{"name":"root","password":"rootpw"}"#;
    let login = http_post(&m.endpoint, "/v3/auth/authenticate", body, None).await;
    let token = serde_json::from_str::<serde_json::Value>(&login).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let range = r#"{"key":"Zm9v"}"#;
    let ok = http_post(&m.endpoint, "/v3/kv/range", range, Some(&token)).await;
    assert!(ok.contains("header"), "{ok}");
    let refused = http_post(&m.endpoint, "/v3/kv/range", range, None).await;
    assert!(refused.contains("user name is empty"), "{refused}");
    // /health reads anonymously: refused by auth, the member is still healthy.
    let health = http_request(&m.endpoint, "GET", "/health", "", None).await;
    assert!(health.contains(r#""health":"true""#), "{health}");
}

/// A POST to the gateway; the body of the answer.
async fn http_post(endpoint: &str, path: &str, body: &str, token: Option<&str>) -> String {
    http_request(endpoint, "POST", path, body, token).await
}

/// An HTTP/1.1 request on a fresh connection; the body of the answer.
async fn http_request(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> String {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_verify_on_every_member_and_go_stale_with_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (private, public) = (dir.path().join("jwt.key"), dir.path().join("jwt.pub"));
    std::fs::write(&private, key.serialize_pem()).unwrap();
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let token_flag = format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=ES256",
        public.display(),
        private.display()
    );
    let members = cluster_with(3, &[FAST, &token_flag]).await;
    wait_leader(&members).await;
    auth_setup(&members[0]).await;
    let mut auth = members[0].etcd().await.auth_client();
    let token = auth.authenticate("alice".into(), "alicepw".into()).await.unwrap();
    let token = token.token().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let with_token = |m: &Member| {
        let mut kv = ringkv_api::etcdserverpb::kv_client::KvClient::new(
            tonic::transport::Channel::from_shared(m.endpoint.clone()).unwrap().connect_lazy(),
        );
        let token = token.clone();
        async move {
            let mut req = tonic::Request::new(ringkv_api::etcdserverpb::PutRequest {
                key: b"/app/k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            });
            req.metadata_mut().insert("token", token.parse().unwrap());
            kv.put(req).await
        }
    };
    for m in &members {
        with_token(m).await.unwrap();
    }
    // Any change of the auth store makes the token stale everywhere.
    let mut root = as_user(&members[1], "root", "rootpw").await;
    root.role_add("another").await.unwrap();
    for m in &members {
        eventually("the change reaches every member", || async {
            with_token(m)
                .await
                .is_err_and(|s| s.message() == "etcdserver: revision of auth store is old")
        })
        .await;
    }
    // A forged token is refused.
    let mut forged = token.clone();
    forged.push('x');
    let mut kv = members[2].kv().await;
    let mut req = tonic::Request::new(ringkv_api::etcdserverpb::RangeRequest {
        key: b"/app/k".to_vec(),
        ..Default::default()
    });
    req.metadata_mut().insert("token", forged.parse().unwrap());
    let e = kv.range(req).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "etcdserver: invalid auth token"));
}

/// The compactor's `Compact` is the server's own: it runs with auth
/// enabled although no client token comes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compaction_runs_with_auth_enabled() {
    let m = single_with(&[
        FAST,
        "--auto-compaction-mode=revision",
        "--auto-compaction-retention=5",
        "--auto-compaction-revision-interval=50ms",
    ])
    .await;
    auth_setup(&m).await;
    let mut root = as_user(&m, "root", "rootpw").await;
    let first = root.put("k", "v0", None).await.unwrap().header().unwrap().revision();
    for n in 1..20 {
        root.put("k", format!("v{n}"), None).await.unwrap();
    }
    eventually("auto-compaction past the first write", || {
        let mut root = root.clone();
        async move {
            match root.get("k", Some(GetOptions::new().with_revision(first))).await {
                Err(e) => {
                    status(e).message() == "etcdserver: mvcc: required revision has been compacted"
                }
                Ok(_) => false,
            }
        }
    })
    .await;
    let current = root.get("k", None).await.unwrap();
    assert_eq!(current.kvs()[0].value(), b"v19");
}
