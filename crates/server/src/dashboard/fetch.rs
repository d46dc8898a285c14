//! Fetches another member's view (`GET /dashboard/api/node` on its client
//! port) over plain HTTP/1.1, one connection per fetch: a poll a second
//! to a handful of members needs no connection pool.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::NODE_VIEW_BYTES_MAX;
use super::view::NodeView;
use crate::config::HttpUrl;

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
    match tokio::time::timeout(timeout, exchange(url)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout { url: url.clone(), timeout }),
    }
}

async fn exchange(url: &HttpUrl) -> Result<NodeView, FetchError> {
    let stream = TcpStream::connect((url.host().to_string(), url.port()))
        .await
        .map_err(|source| FetchError::Io { url: url.clone(), source })?;
    let http = |source| FetchError::Http { url: url.clone(), source };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    // The connection is driven here, beside the request, and dropped with
    // it: nothing outlives the fetch (or its timeout).
    let authority = url.to_string();
    let authority = authority.trim_start_matches("http://").to_owned();
    let request = Request::get(NODE_VIEW_PATH)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .expect("a static path and a valid authority make a request");
    let call = async {
        let response = sender.send_request(request).await.map_err(http)?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status { url: url.clone(), status: response.status() });
        }
        axum::body::to_bytes(Body::new(response.into_body()), NODE_VIEW_BYTES_MAX)
            .await
            .map_err(|e| FetchError::Malformed { url: url.clone(), why: e.to_string() })
    };
    let bytes = tokio::select! {
        result = call => result?,
        ended = connection => {
            // The connection ended before the answer did.
            ended.map_err(http)?;
            return Err(FetchError::Malformed {
                url: url.clone(),
                why: "the connection closed before the answer".to_owned(),
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| FetchError::Malformed { url: url.clone(), why: e.to_string() })
}
