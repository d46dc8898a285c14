//! The built-in dashboard, served by every member on its client port: a
//! page of plain HTML, CSS and JavaScript compiled into the binary (no
//! build step, nothing fetched from the internet), and the JSON it polls.
//!
//! | path | what |
//! | --- | --- |
//! | `GET /dashboard` | the page ([`assets`]) |
//! | `GET /dashboard/app.js`, `/dashboard/style.css` | its script and style |
//! | `GET /dashboard/api/node` | this member's view ([`NodeView`]) |
//! | `GET /dashboard/api/cluster` | every member's view, gathered by this member ([`ClusterView`]) |
//!
//! The page asks only the member that served it: that member fetches the
//! others' `/dashboard/api/node` itself, in parallel, each bounded by
//! [`PEER_FETCH_TIMEOUT`] ([`fetch`]). A browser could not fetch them
//! itself without every member answering CORS requests from every other
//! origin; and a member that does not answer in time is shown as
//! unreachable rather than holding the page. One gathered view answers
//! every request for [`CLUSTER_VIEW_REUSE`], so the fan-out stays one
//! gather per half second however many pages are open.
//!
//! Throughput and latency are not computed here: each view carries the
//! member's counters since it started
//! ([`MetricsSnapshot`](crate::metrics::MetricsSnapshot)), and the page
//! turns the differences between two polls into rates and percentiles.

mod assets;
pub mod fetch;
mod view;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::routing::get;

use crate::services::Context;

pub use view::{
    ClusterView, MemberView, NodeEntry, NodeView, ShardView, cluster_view, keyspace_arc, node_view,
};

/// Longest the cluster view waits for one member's view; past it the
/// member is shown unreachable. Below the page's poll period, so that a
/// dead member never makes the polls pile up.
pub const PEER_FETCH_TIMEOUT: Duration = Duration::from_millis(800);

/// Most members whose views one cluster view fetches; the rest are listed
/// without their state. Bounds the fan-out of one poll.
pub const MEMBERS_FETCHED_MAX: usize = 64;

/// Largest member view read from another member, in bytes.
pub const NODE_VIEW_BYTES_MAX: usize = 1024 * 1024;

/// Most events the cluster view lists (newest kept).
pub const CLUSTER_EVENTS_MAX: usize = 100;

/// How long a gathered cluster view answers later requests: however many
/// pages are open on a member, it asks the others at most once per this
/// (the pages poll once a second).
pub const CLUSTER_VIEW_REUSE: Duration = Duration::from_millis(500);

/// The last gathered cluster view, encoded, and when it was gathered.
type CachedView = Option<(Instant, Bytes)>;

/// What the dashboard's handlers share.
#[derive(Clone, Debug)]
pub struct Dashboard {
    ctx: Context,
    shard_count: u32,
    /// Held while a view is gathered, so concurrent requests wait for that
    /// one rather than each asking every member.
    cluster: Arc<tokio::sync::Mutex<CachedView>>,
}

impl Dashboard {
    /// The dashboard of the member `ctx` serves, in a cluster of
    /// `shard_count` data shards.
    pub fn new(ctx: Context, shard_count: u32) -> Dashboard {
        let cluster = Arc::new(tokio::sync::Mutex::new(None));
        Dashboard { ctx, shard_count: shard_count.max(1), cluster }
    }

    /// The cluster view, gathered anew unless one younger than
    /// [`CLUSTER_VIEW_REUSE`] is at hand.
    async fn cluster_json(&self) -> Bytes {
        let mut cached = self.cluster.lock().await;
        if let Some((at, body)) = cached.as_ref()
            && at.elapsed() < CLUSTER_VIEW_REUSE
        {
            return body.clone();
        }
        let view = cluster_view(&self.ctx, self.shard_count).await;
        let body =
            Bytes::from(serde_json::to_vec(&view).expect("the views hold strings and numbers"));
        *cached = Some((Instant::now(), body.clone()));
        body
    }

    /// The routes of the module docs.
    pub fn router(self) -> axum::Router {
        let node = self.clone();
        let cluster = self;
        axum::Router::new()
            .route("/dashboard", get(|| async { asset(assets::INDEX_HTML, assets::HTML) }))
            .route("/dashboard/", get(|| async { asset(assets::INDEX_HTML, assets::HTML) }))
            .route("/dashboard/app.js", get(|| async { asset(assets::APP_JS, assets::JS) }))
            .route("/dashboard/style.css", get(|| async { asset(assets::STYLE_CSS, assets::CSS) }))
            .route(
                "/dashboard/api/node",
                get(move || {
                    let d = node.clone();
                    async move {
                        let view = node_view(&d.ctx, d.shard_count);
                        json(serde_json::to_vec(&view).expect("the views hold strings and numbers"))
                    }
                }),
            )
            .route(
                "/dashboard/api/cluster",
                get(move || {
                    let d = cluster.clone();
                    async move { json(d.cluster_json().await) }
                }),
            )
    }
}

/// Never cached: a new binary must not be paired with an old script.
fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Everything the page loads comes from this member.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:"),
    );
    response
}

fn json(body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
