//! [`MemberDialer`]: gRPC channels to other members' client URLs, cached
//! per URL and shared by every caller on this member (the watch relay, the
//! KV forwarding).
//!
//! A cached channel multiplexes every call and stream to its member over
//! one HTTP/2 connection and reconnects by itself when that connection is
//! lost. A caller that sees a transport failure evicts the channel
//! ([`MemberDialer::evict`]) so that the next call dials afresh, within
//! its own connect timeout, instead of waiting on a half-dead connection.
//!
//! # TLS
//!
//! `https://` client URLs are dialed with this member's client TLS files:
//! the peer's certificate must chain to `--trusted-ca-file` and name the
//! URL's host; `--cert-file` / `--key-file` are presented as the client
//! certificate, for members that require one (`--client-cert-auth`).
//! `https://` without `--trusted-ca-file` cannot be dialed: the dial fails
//! with [`DialError::NoTls`] and the caller tries the next member.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::auth::{AUTHORIZATION_METADATA, TOKEN_METADATA};
use crate::config::{Host, HttpUrl};
use crate::services::HAS_LEADER_METADATA;
use crate::tls::TlsFiles;

/// The client's metadata a call to another member carries on the client's
/// behalf: its credentials (the other member checks its rights) and its
/// `hasleader` request. A client certificate cannot travel: see the
/// [`crate::remote`] docs.
pub const FORWARDED_METADATA: [&str; 3] =
    [TOKEN_METADATA, AUTHORIZATION_METADATA, HAS_LEADER_METADATA];

/// How long one dial (TCP, TLS and the HTTP/2 handshake) may take before
/// the caller tries the next member.
pub const MEMBER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 ping period on a connection to another member: a member that
/// vanished without closing (partitioned, frozen) is noticed within this
/// plus [`MEMBER_KEEPALIVE_TIMEOUT`].
pub const MEMBER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// How long an HTTP/2 ping may go unanswered before the connection is
/// considered lost.
pub const MEMBER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most channels cached: far more client URLs than a cluster has members.
/// Past it the cache is emptied and refilled on demand (a redial, not an
/// error), so a member table that churns cannot grow it without bound.
pub const DIALED_URLS_MAX: usize = 1024;

/// Why a member's client URL could not be dialed. Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The URL is not an `http(s)://host:port` URL.
    #[error("{url}: not a client URL: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL is `https://` and this member has no client TLS files.
    #[error(
        "{url}: the URL is https:// but this member has no client TLS files (--cert-file, \
         --key-file, --trusted-ca-file)"
    )]
    NoTls {
        /// The URL.
        url: String,
    },
    /// The client TLS files cannot be used to dial.
    #[error("{url}: cannot use the client TLS files to dial: {source}")]
    Tls {
        /// The URL.
        url: String,
        /// What was wrong with them.
        #[source]
        source: crate::tls::TlsError,
    },
    /// The connection could not be made in [`MEMBER_CONNECT_TIMEOUT`].
    #[error("{url}: cannot connect: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// What the transport said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The connection was not made within [`MEMBER_CONNECT_TIMEOUT`].
    #[error("{url}: connecting timed out")]
    Timeout {
        /// The URL.
        url: String,
    },
}

/// Channels to other members' client URLs (see the module docs).
#[derive(Debug)]
pub struct MemberDialer {
    /// This member's client TLS files, for `https://` URLs.
    tls: Option<TlsFiles>,
    /// Invariant: at most [`DIALED_URLS_MAX`] entries.
    channels: Mutex<HashMap<String, Channel>>,
}

impl MemberDialer {
    /// A dialer presenting `tls` (this member's client TLS files) to
    /// `https://` URLs.
    pub fn new(tls: Option<TlsFiles>) -> Arc<MemberDialer> {
        Arc::new(MemberDialer { tls, channels: Mutex::new(HashMap::new()) })
    }

    /// A channel to `url`: the cached one, else a new connection, made
    /// within [`MEMBER_CONNECT_TIMEOUT`].
    ///
    /// # Errors
    /// [`DialError`]: the URL cannot be dialed; nothing was sent.
    pub async fn channel(&self, url: &str) -> Result<Channel, DialError> {
        if let Some(channel) = self.lock().get(url) {
            return Ok(channel.clone());
        }
        let channel = match tokio::time::timeout(MEMBER_CONNECT_TIMEOUT, self.dial(url)).await {
            Ok(dialed) => dialed?,
            Err(_) => return Err(DialError::Timeout { url: url.to_owned() }),
        };
        let mut channels = self.lock();
        if channels.len() >= DIALED_URLS_MAX {
            channels.clear();
        }
        // Two callers may have dialed at once: the first one cached wins,
        // the other connection is dropped.
        Ok(channels.entry(url.to_owned()).or_insert(channel).clone())
    }

    /// Forgets the channel to `url` (its connection failed): the next call
    /// dials again.
    pub fn evict(&self, url: &str) {
        self.lock().remove(url);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn dial(&self, url: &str) -> Result<Channel, DialError> {
        let bad = |reason: String| DialError::BadUrl { url: url.to_owned(), reason };
        let parsed: HttpUrl = url.parse().map_err(|e| bad(format!("{e}")))?;
        // tonic dials plain HTTP/2; TLS, when the URL asks, is the
        // connector's.
        let endpoint =
            Endpoint::from_shared(format!("http://{}:{}", host_port(&parsed), parsed.port()))
                .map_err(|e| bad(e.to_string()))?
                .connect_timeout(MEMBER_CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(MEMBER_KEEPALIVE_INTERVAL)
                .keep_alive_timeout(MEMBER_KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true);
        let connect = |source| DialError::Connect { url: url.to_owned(), source };
        if !parsed.is_tls() {
            return endpoint.connect().await.map_err(connect);
        }
        let Some(files) = &self.tls else {
            return Err(DialError::NoTls { url: url.to_owned() });
        };
        let mut config = crate::tls::client_config(files, "--trusted-ca-file")
            .map_err(|source| DialError::Tls { url: url.to_owned(), source })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsDial { config: Arc::new(config), url: parsed };
        endpoint.connect_with_connector(connector).await.map_err(connect)
    }
}

/// The metadata of [`FORWARDED_METADATA`] that `metadata` carries: what a
/// call made for this client sends on.
pub fn forwarded_metadata(metadata: &MetadataMap) -> MetadataMap {
    let mut forward = MetadataMap::new();
    for key in FORWARDED_METADATA {
        if let Some(value) = metadata.get(key) {
            forward.insert(key, value.clone());
        }
    }
    forward
}

/// The host of `url` as it goes in an authority (IPv6 in brackets).
fn host_port(url: &HttpUrl) -> String {
    match url.host() {
        Host::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        host => host.to_string(),
    }
}

/// Dials one `https://` URL: TCP, then TLS verified for the URL's host.
#[derive(Clone)]
struct TlsDial {
    config: Arc<rustls::ClientConfig>,
    url: HttpUrl,
}

impl tonic::codegen::Service<Uri> for TlsDial {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let (config, url) = (Arc::clone(&self.config), self.url.clone());
        Box::pin(async move {
            let name = match url.host() {
                Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
                Host::Name(name) => rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            };
            let tcp = TcpStream::connect((url.host().to_string(), url.port())).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
