//! Errors on the gateway, in the shapes etcd's gateway sends them.
//!
//! etcd 3.4/3.5 serve the gateway with grpc-gateway v1, and these are its
//! shapes, checked against etcd 3.4.23 (the etcd this project can run in
//! its tests):
//!
//! - a unary call that fails: the HTTP status of the gRPC code
//!   ([`http_status`]) and `{"error":<msg>,"message":<msg>,"code":<n>}`;
//! - a stream that fails: `{"error":{"grpc_code":<n>,"http_code":<status>,
//!   "message":<msg>,"http_status":<reason>}}` in the stream (and as the
//!   HTTP status if nothing was sent yet);
//! - no route for the path: 404, `text/plain`, `Not Found`; a route with
//!   another method than `POST`: 405, `Method Not Allowed`.

use serde::Serialize;
use tonic::Code;

use super::routes::Rpc;

/// `Content-Type` of every JSON answer.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// `Content-Type` of the plain-text answers (404, 405).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";

/// A complete HTTP answer: status, content type, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

/// Why the gateway could not take a request, or could not encode an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No route has this path (whatever the method).
    #[error("no gateway route serves {path}; the routes are etcd's /v3/... paths")]
    UnknownPath {
        /// The path asked for, without its query string.
        path: String,
    },
    /// The path has a route, but the method is not `POST`.
    #[error("{rpc:?} is served for POST only, not {method}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The route's RPC.
        rpc: Rpc,
    },
    /// The body is not the JSON form of the RPC's request message.
    #[error("ringkv gateway: the body is not a valid {message_type} in JSON: {detail}")]
    MalformedJson {
        /// The message expected, e.g. `etcdserverpb.RangeRequest`.
        message_type: String,
        /// What is wrong, with the position in the body.
        detail: String,
    },
    /// A body, or one message of a request stream, is larger than the
    /// gateway buffers.
    #[error(
        "ringkv gateway: the request is larger than {limit_bytes} bytes; etcd's limit is \
         --max-request-bytes"
    )]
    BodyTooLarge {
        /// The limit.
        limit_bytes: usize,
    },
    /// A response could not be put into JSON (a server bug, e.g. nesting
    /// deeper than protobuf decoding allows).
    #[error("ringkv gateway: cannot encode {message_type} as JSON: {detail}")]
    Encode {
        /// The message, e.g. `etcdserverpb.TxnResponse`.
        message_type: String,
        /// What failed.
        detail: String,
    },
}

impl GatewayError {
    /// The gRPC code a client of the gateway sees, or `None` for the two
    /// routing errors, which are plain HTTP.
    pub fn code(&self) -> Option<Code> {
        match self {
            GatewayError::UnknownPath { .. } | GatewayError::MethodNotAllowed { .. } => None,
            GatewayError::MalformedJson { .. } => Some(Code::InvalidArgument),
            GatewayError::BodyTooLarge { .. } => Some(Code::ResourceExhausted),
            GatewayError::Encode { .. } => Some(Code::Internal),
        }
    }

    /// The answer to a unary call (or to a stream that failed before it
    /// started) that failed with this error.
    pub fn reply(&self) -> HttpReply {
        match self {
            GatewayError::UnknownPath { .. } => text_reply(404),
            GatewayError::MethodNotAllowed { .. } => text_reply(405),
            other => {
                let code = other.code().expect("every other error has a gRPC code");
                encode_error(code, &other.to_string())
            }
        }
    }
}

/// The HTTP status etcd 3.4's gateway (grpc-gateway v1) answers a gRPC
/// code with.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 408,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        // etcd 3.4's grpc-gateway sends 412 (e.g. for "lease already
        // exists"), as checked; grpc-gateway 1.9.5 and later, which etcd 3.5
        // is built with, send 400. Clients read the body's code, not this.
        Code::FailedPrecondition => 412,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// The reason phrase Go's `http.StatusText` gives each status of
/// [`http_status`] (the `http_status` field of a stream error).
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

/// The body of a failed unary call, field order as etcd sends it.
#[derive(Serialize)]
struct UnaryError<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    code: i32,
}

/// A failure inside a stream: `{"error": StreamError}`.
#[derive(Serialize)]
struct StreamErrorEnvelope<'a> {
    error: StreamError<'a>,
}

/// grpc-gateway's `StreamError`, with proto names and empty fields left
/// out, as its JSON marshaler prints it.
#[derive(Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    http_status: &'static str,
}

/// The answer to a unary call that failed with gRPC `code` and `message`
/// (an [`EtcdError`]'s, or any `tonic::Status`'s).
///
/// [`EtcdError`]: crate::api::EtcdError
pub fn encode_error(code: Code, message: &str) -> HttpReply {
    let body = UnaryError { error: message, message, code: code as i32 };
    HttpReply {
        status: http_status(code),
        content_type: CONTENT_TYPE_JSON,
        body: serde_json::to_vec(&body).expect("a struct of strings and integers serializes"),
    }
}

/// The message that ends a stream which failed with gRPC `code` and
/// `message`. If the stream has sent nothing yet, the HTTP status is
/// [`http_status`]`(code)`; otherwise it stays 200. Unlike a stream's
/// results, it is not followed by a newline (as in etcd).
pub fn encode_stream_error(code: Code, message: &str) -> Vec<u8> {
    let status = http_status(code);
    let body = StreamErrorEnvelope {
        error: StreamError {
            grpc_code: code as i32,
            http_code: status,
            message,
            http_status: reason_phrase(status),
        },
    };
    serde_json::to_vec(&body).expect("a struct of strings and integers serializes")
}

/// A plain-text answer with Go's wording (`http.Error`).
fn text_reply(status: u16) -> HttpReply {
    HttpReply {
        status,
        content_type: CONTENT_TYPE_TEXT,
        body: format!("{}\n", reason_phrase(status)).into_bytes(),
    }
}
