//! The client side of [`super::admin`], for `ringkv ctl`: one HTTP/1.1
//! exchange per call on a fresh connection (`super::exchange`), plain
//! `http://` only, as the dashboard's fetch.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, StatusCode};

use super::admin::{AdminError, DRAIN_PATH, DrainStatus, NO_PLACEMENT_MOVES};
use super::exchange::ExchangeError;
use crate::config::HttpUrl;

/// Largest answer read from an admin call, in bytes (a status lists every
/// member's shards: a few KiB for 64 members of 1,000 shards each is far
/// below it).
pub const ADMIN_ANSWER_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminCallError {
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
    #[error("{url} did not answer {method} {path} within {timeout:?}")]
    Timeout {
        /// The member's client URL.
        url: HttpUrl,
        /// The method.
        method: Method,
        /// The path.
        path: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The member refused the call and said why.
    #[error("{url} refused {method} {path}: {error}")]
    Refused {
        /// The member's client URL.
        url: HttpUrl,
        /// The method.
        method: Method,
        /// The path.
        path: String,
        /// The HTTP status.
        status: StatusCode,
        /// The member's reason.
        error: String,
        /// Its machine-readable reason, if it gave one.
        reason: Option<String>,
    },
    /// An answer that is not what the call answers (an older ringkv, or
    /// not ringkv), or too long.
    #[error("{url} answered {method} {path} with something unexpected: {why}")]
    Malformed {
        /// The member's client URL.
        url: HttpUrl,
        /// The method.
        method: Method,
        /// The path.
        path: String,
        /// What is wrong.
        why: String,
    },
}

impl AdminCallError {
    /// Whether the member refused because it does not move replicas
    /// (every member holds every shard: there is nothing to drain).
    pub fn no_placement_moves(&self) -> bool {
        matches!(self, AdminCallError::Refused { reason: Some(r), .. } if r == NO_PLACEMENT_MOVES)
    }
}

/// Every member's data-shard replicas and drain flag as the member at
/// `url` knows them.
///
/// # Errors
/// See [`AdminCallError`]; `Refused` when the member does not move
/// replicas (nothing to drain) or the caller is not an administrator.
pub async fn drain_status(url: &HttpUrl, timeout: Duration) -> Result<DrainStatus, AdminCallError> {
    let bytes = call(url, Method::GET, DRAIN_PATH.to_owned(), timeout).await?;
    serde_json::from_slice(&bytes).map_err(|e| AdminCallError::Malformed {
        url: url.clone(),
        method: Method::GET,
        path: DRAIN_PATH.to_owned(),
        why: e.to_string(),
    })
}

/// Starts (`draining`) or stops the drain of member `member`, through the
/// member at `url`; answers once the metadata group has applied it.
///
/// # Errors
/// See [`AdminCallError`]; `Refused` with the node's reason (unknown
/// member, a learner, too few other members, no placement moves).
pub async fn set_drain(
    url: &HttpUrl,
    member: u64,
    draining: bool,
    timeout: Duration,
) -> Result<(), AdminCallError> {
    let method = if draining { Method::POST } else { Method::DELETE };
    call(url, method, format!("{DRAIN_PATH}/{member:016x}"), timeout).await.map(drop)
}

async fn call(
    url: &HttpUrl,
    method: Method,
    path: String,
    timeout: Duration,
) -> Result<Bytes, AdminCallError> {
    let exchange = exchange(url, method.clone(), path.clone());
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(AdminCallError::Timeout { url: url.clone(), method, path, timeout }),
    }
}

async fn exchange(url: &HttpUrl, method: Method, path: String) -> Result<Bytes, AdminCallError> {
    let answer =
        super::exchange::exchange(url, method.clone(), &path, ADMIN_ANSWER_BYTES_MAX).await;
    let (status, body) = answer.map_err(|e| match e {
        ExchangeError::Io(source) => AdminCallError::Io { url: url.clone(), source },
        ExchangeError::Http(source) => AdminCallError::Http { url: url.clone(), source },
        ExchangeError::Malformed(why) => AdminCallError::Malformed {
            url: url.clone(),
            method: method.clone(),
            path: path.clone(),
            why,
        },
    })?;
    if status == StatusCode::OK {
        return Ok(body);
    }
    let (error, reason) = match serde_json::from_slice::<AdminError>(&body) {
        Ok(e) => (e.error, e.reason),
        Err(_) => (format!("HTTP {status} (does it run this ringkv version?)"), None),
    };
    Err(AdminCallError::Refused { url: url.clone(), method, path, status, error, reason })
}
