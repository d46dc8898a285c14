//! `GET /members` on the peer port, as etcd serves it there: how a member
//! that joins a running cluster (`--initial-cluster-state existing`) learns
//! the id `MemberAdd` gave it, and where the other members are, before its
//! node can start.
//!
//! The peer port speaks ringkv's framed protocol; a connection whose first
//! bytes are `GET ` instead of the handshake's magic is served this one
//! HTTP/1.1 answer and closed. The body is JSON, a list of
//! [`MemberInfo`] (etcd's field names), or 404 for any other path.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::HttpUrl;

/// The path served.
pub const MEMBERS_PATH: &str = "/members";

/// Largest HTTP request head read on the peer port.
pub const MEMBERS_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// Largest `/members` answer a joining member reads.
pub const MEMBERS_RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Longest a `/members` exchange may take, either side.
pub const MEMBERS_TIMEOUT: Duration = Duration::from_secs(5);

/// One member, as `/members` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member id, as 16 hex digits (etcd's form).
    pub id: String,
    /// Its name (empty until it started).
    pub name: String,
    /// Its peer URLs.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Its client URLs (empty until it started).
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
    /// Whether it is a learner.
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

impl MemberInfo {
    /// The id as a number, if well formed.
    pub fn id(&self) -> Option<u64> {
        u64::from_str_radix(&self.id, 16).ok()
    }
}

/// What produces the `/members` body: set on the transport by the server
/// once its node runs.
pub type MembersProvider = std::sync::Arc<dyn Fn() -> Vec<MemberInfo> + Send + Sync>;

/// Why `/members` could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MembersError {
    /// No connection, or it broke.
    #[error("cannot reach {url}: {source}")]
    Io {
        /// The peer URL.
        url: HttpUrl,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{url} did not answer GET /members within {MEMBERS_TIMEOUT:?}")]
    Timeout {
        /// The peer URL.
        url: HttpUrl,
    },
    /// An answer that is not a member list.
    #[error("{url} answered GET /members with something that is not a member list: {why}")]
    Malformed {
        /// The peer URL.
        url: HttpUrl,
        /// What is wrong.
        why: String,
    },
}

/// Serves one HTTP request whose first `head` bytes were already read;
/// returns whether it was a well-formed request for [`MEMBERS_PATH`]
/// (anything else on the peer port is a protocol error to count).
pub(crate) async fn serve(
    mut stream: TcpStream,
    addr: SocketAddr,
    head: &[u8],
    provider: Option<MembersProvider>,
) -> bool {
    let mut request = head.to_vec();
    let read_head = async {
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            if request.len() > MEMBERS_REQUEST_BYTES_MAX {
                return false;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(timeout(MEMBERS_TIMEOUT, read_head).await, Ok(true)) {
        tracing::debug!(%addr, "incomplete HTTP request on the peer port; closing");
        return false;
    }
    let path = request.split(|b| *b == b' ').nth(1).unwrap_or_default();
    let known = path == MEMBERS_PATH.as_bytes();
    let (status, body) = match (known, provider) {
        (true, Some(provider)) => {
            ("200 OK", serde_json::to_vec(&provider()).expect("strings and booleans serialize"))
        }
        (true, None) => ("503 Service Unavailable", b"the member is starting\n".to_vec()),
        (false, _) => ("404 Not Found", b"404 page not found\n".to_vec()),
    };
    let mut answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    let _ = timeout(MEMBERS_TIMEOUT, stream.write_all(&answer)).await;
    known
}

/// Fetches `/members` from the member at peer URL `url`.
///
/// # Errors
/// See [`MembersError`].
pub async fn fetch(url: &HttpUrl) -> Result<Vec<MemberInfo>, MembersError> {
    let io = |source| MembersError::Io { url: url.clone(), source };
    let malformed = |why: String| MembersError::Malformed { url: url.clone(), why };
    let exchange = async {
        let addr = format!("{}:{}", url.host(), url.port());
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        let request = format!(
            "GET {MEMBERS_PATH} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n",
            url.host(),
            url.port()
        );
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MEMBERS_RESPONSE_BYTES_MAX as u64)
            .read_to_end(&mut raw)
            .await
            .map_err(io)?;
        Ok(raw)
    };
    let raw = timeout(MEMBERS_TIMEOUT, exchange)
        .await
        .map_err(|_| MembersError::Timeout { url: url.clone() })??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("no HTTP header block".to_owned()))?;
    let status_line = raw[..split].split(|b| *b == b'\r').next().unwrap_or_default();
    if !status_line.starts_with(b"HTTP/1.1 200") {
        return Err(malformed(String::from_utf8_lossy(status_line).into_owned()));
    }
    serde_json::from_slice(&raw[split + 4..]).map_err(|e| malformed(e.to_string()))
}
