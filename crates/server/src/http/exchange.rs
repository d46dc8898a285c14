//! One plain-HTTP/1.1 request on a fresh connection, the answer's status
//! and body: what `ringkv ctl`'s admin calls and the dashboard's fetch of
//! another member's view both do (a poll every few hundred milliseconds to
//! a handful of members needs no connection pool). `http://` only.

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::HttpUrl;

/// Why an exchange gave no answer.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// No connection, or it broke.
    Io(std::io::Error),
    /// The HTTP exchange failed.
    Http(hyper::Error),
    /// The request could not be built, the body was too long or broke
    /// off, or the connection closed before the answer.
    Malformed(String),
}

/// Sends `method path` (no body, JSON accepted) to the member at `url`
/// and reads the answer's body, at most `max_bytes`. The connection is
/// driven beside the request and dropped with it: nothing outlives the
/// call (or a timeout around it).
pub(crate) async fn exchange(
    url: &HttpUrl,
    method: Method,
    path: &str,
    max_bytes: usize,
) -> Result<(StatusCode, Bytes), ExchangeError> {
    let stream = TcpStream::connect((url.host().to_string(), url.port()))
        .await
        .map_err(ExchangeError::Io)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ExchangeError::Http)?;
    let authority = url.to_string();
    let authority = authority.trim_start_matches("http://").to_owned();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .map_err(|e| ExchangeError::Malformed(format!("cannot build the request: {e}")))?;
    let answer = async {
        let response = sender.send_request(request).await.map_err(ExchangeError::Http)?;
        let status = response.status();
        let body = axum::body::to_bytes(Body::new(response.into_body()), max_bytes)
            .await
            .map_err(|e| ExchangeError::Malformed(e.to_string()))?;
        Ok((status, body))
    };
    tokio::select! {
        result = answer => result,
        ended = connection => {
            ended.map_err(ExchangeError::Http)?;
            Err(ExchangeError::Malformed("the connection closed before the answer".to_owned()))
        }
    }
}
