//! The HTTP side of the client port, served on the same listener as gRPC
//! (requests whose `content-type` is `application/grpc…` go to the gRPC
//! services, everything else here), as etcd serves both on one port:
//!
//! | path | what |
//! | --- | --- |
//! | `POST /v3/…`, `/v3beta/…` | the JSON gateway ([`gateway`]) |
//! | `GET /health` | `{"health":"true","reason":""}` (503 and `"false"` with a reason when unhealthy) |
//! | `GET /version` | `{"etcdserver":"3.5.13","etcdcluster":"3.5.0"}` |
//! | `GET /metrics` | Prometheus text ([`crate::metrics`]) |
//! | `GET /dashboard…` | the web dashboard and its JSON ([`crate::dashboard`]) |
//! | `/ringkv/v1/drain…` | ringkv's own admin calls: member drains ([`admin`]) |

pub mod admin;
pub mod admin_client;
pub(crate) mod exchange;
pub mod gateway;

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use axum::routing::{any, get};
use ringkv_node::Request as NodeRequest;
use ringkv_storage::mvcc::RangeRequest;
use serde::Serialize;

use crate::api::EtcdError;
use crate::services::{Context, ETCD_CLUSTER_VERSION, ETCD_VERSION};

/// Longest a `/health` check waits for its linearizable read (etcd waits
/// about as long before it reports the member unhealthy).
pub const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The key `/health` reads, as etcd's health check does (and `etcdctl
/// endpoint health`).
pub const HEALTH_KEY: &[u8] = b"health";

/// `Content-Type` of the Prometheus text format.
const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The HTTP routes (everything but gRPC), over the services' `ctx` and
/// `gateway`'s dispatch.
pub fn router(ctx: Context, services: gateway::Services) -> axum::Router {
    let health_ctx = ctx.clone();
    let metrics_ctx = ctx.clone();
    let gateway = services;
    admin::router(ctx)
        .route("/health", get(move || health(health_ctx.clone())))
        .route("/version", get(version))
        .route("/metrics", get(move || metrics(metrics_ctx.clone())))
        .route(
            "/v3/{*rest}",
            any({
                let gateway = gateway.clone();
                move |request: Request<Body>| gateway::serve(gateway.clone(), request)
            }),
        )
        .route(
            "/v3beta/{*rest}",
            any(move |request: Request<Body>| gateway::serve(gateway.clone(), request)),
        )
}

#[derive(Serialize)]
struct Health {
    health: &'static str,
    reason: String,
}

/// etcd's `/health`: unhealthy without a leader, with an active alarm, or
/// when a linearizable read of [`HEALTH_KEY`] fails.
async fn health(ctx: Context) -> Response<Body> {
    let state = ctx.state();
    let reason = if !state.has_leader() {
        Some("RAFT NO LEADER".to_owned())
    } else if let Some(alarm) = state.alarms().first() {
        Some(format!("ALARM {}", alarm.alarm.name()))
    } else {
        let read = NodeRequest::Range(RangeRequest {
            key: bytes::Bytes::from_static(HEALTH_KEY),
            ..RangeRequest::default()
        });
        match tokio::time::timeout(HEALTH_READ_TIMEOUT, ctx.node().call(read)).await {
            Ok(Ok(_)) => None,
            // With auth enabled an anonymous read is refused, which still
            // proves the member serves (etcd's health check says the same).
            Ok(Err(EtcdError::UserEmpty | EtcdError::PermissionDenied)) => None,
            Ok(Err(e)) => Some(format!("QGET ERROR:{e}")),
            Err(_) => Some("QGET ERROR:timed out".to_owned()),
        }
    };
    let (status, body) = match reason {
        None => (StatusCode::OK, Health { health: "true", reason: String::new() }),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, Health { health: "false", reason }),
    };
    json_response(status, &body)
}

#[derive(Serialize)]
struct Version {
    etcdserver: &'static str,
    etcdcluster: &'static str,
}

async fn version() -> Response<Body> {
    json_response(
        StatusCode::OK,
        &Version { etcdserver: ETCD_VERSION, etcdcluster: ETCD_CLUSTER_VERSION },
    )
}

async fn metrics(ctx: Context) -> Response<Body> {
    let text = ctx.node().metrics().render();
    let mut response = Response::new(Body::from(text));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_PROMETHEUS));
    response
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("a struct of strings serializes");
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// What an unknown path gets: gRPC's `UNIMPLEMENTED` for a gRPC request,
/// Go's plain `404 page not found` otherwise (etcd's answer).
pub async fn fallback(request: Request<Body>) -> Response<Body> {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented("").into_http::<()>().into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let mut response = Response::new(Body::from("404 page not found\n"));
    *response.status_mut() =
        if request.method() == Method::OPTIONS { StatusCode::OK } else { StatusCode::NOT_FOUND };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
