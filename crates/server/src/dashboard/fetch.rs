//! Fetches another member's view (`GET /dashboard/api/node` on its client
//! port) over plain HTTP/1.1, one connection per fetch
//! (`crate::http::exchange`).

use std::time::Duration;

use axum::http::{Method, StatusCode};

use super::NODE_VIEW_BYTES_MAX;
use super::view::NodeView;
use crate::config::HttpUrl;
use crate::http::exchange::{ExchangeError, exchange};

/// The path fetched.
pub const NODE_VIEW_PATH: &str = "/dashboard/api/node";

/// Why a member's view could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No connection, or it broke.
    #[error("cannot reach {url}: {source}")]
    Io {
        /// The member's client URL.
        url: HttpUrl,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("{url} broke off the HTTP exchange: {source}")]
    Http {
        /// The member's client URL.
        url: HttpUrl,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("{url} did not answer within {timeout:?}")]
    Timeout {
        /// The member's client URL.
        url: HttpUrl,
        /// The time allowed.
        timeout: Duration,
    },
    /// An answer other than 200 (an older ringkv, or not ringkv).
    #[error("{url} answered {status} to GET {NODE_VIEW_PATH} (does it run this ringkv version?)")]
    Status {
        /// The member's client URL.
        url: HttpUrl,
        /// The status.
        status: StatusCode,
    },
    /// An answer that is not a member view, or too long.
    #[error("{url} answered GET {NODE_VIEW_PATH} with something that is not a member view: {why}")]
    Malformed {
        /// The member's client URL.
        url: HttpUrl,
        /// What is wrong.
        why: String,
    },
}

/// Fetches the view of the member at client URL `url`, within `timeout`.
///
/// # Errors
/// See [`FetchError`].
pub async fn fetch_node_view(url: &HttpUrl, timeout: Duration) -> Result<NodeView, FetchError> {
    match tokio::time::timeout(timeout, fetch(url)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout { url: url.clone(), timeout }),
    }
}

async fn fetch(url: &HttpUrl) -> Result<NodeView, FetchError> {
    let answer = exchange(url, Method::GET, NODE_VIEW_PATH, NODE_VIEW_BYTES_MAX).await;
    let (status, bytes) = answer.map_err(|e| match e {
        ExchangeError::Io(source) => FetchError::Io { url: url.clone(), source },
        ExchangeError::Http(source) => FetchError::Http { url: url.clone(), source },
        ExchangeError::Malformed(why) => FetchError::Malformed { url: url.clone(), why },
    })?;
    if status != StatusCode::OK {
        return Err(FetchError::Status { url: url.clone(), status });
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| FetchError::Malformed { url: url.clone(), why: e.to_string() })
}
