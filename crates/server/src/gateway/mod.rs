//! etcd's JSON gateway (`POST /v3/...`): the route table and the codec
//! between JSON bodies and the prost messages of the gRPC services.
//!
//! The HTTP server and the dispatch to the services are built on top of
//! this; the shapes here are what they need:
//!
//! ```text
//! route(method, path) ─▶ Rpc, then by rpc.kind():
//!   Unary            decode_request(rpc, body) ─▶ service ─▶ encode_response
//!                    (200, application/json); a failed call: encode_error
//!   ServerStreaming  decode_request ─▶ service ─▶ per message encode_stream_message;
//!                    a failure: encode_stream_error
//!   BidiStreaming    RequestStream::push(chunk) ─▶ requests ─▶ service;
//!                    responses as ServerStreaming
//! ```
//!
//! # etcd's gateway JSON, as checked against etcd 3.4.23
//!
//! Output (grpc-gateway's `JSONPb{OrigName: true}`):
//! - Field names are the `.proto` names, irregular ones included: `kvs`,
//!   `create_revision`, `raft_term`, `response_put`, `TTL`, `ID`,
//!   `grantedTTL`, `peerURLs`, `clientURLs`, `isLearner`, `dbSize`,
//!   `raftIndex`, `memberID`, `targetID`.
//! - 64-bit integers (`int64`, `uint64`) are JSON strings (`"revision":"5"`,
//!   `"ID":"7"`); 32-bit ones are numbers (`"hash":1095656784`).
//! - `bytes` are standard base64 with padding (`foo` → `"Zm9v"`).
//! - Enums are names (`"type":"DELETE"`, `"alarm":"NOSPACE"`).
//! - A field at its default (0, `false`, `""`, empty list, `PUT`) is left
//!   out; a message that is present is printed even when empty
//!   (`"header":{}` of a nested transaction's response).
//! - Fields appear in field-number order; a unary body has no trailing
//!   newline, a stream message is `{"result":…}` plus `\n`.
//!
//! Input (proto3 JSON):
//! - Field names may be the `.proto` names or lowerCamelCase
//!   (`create_revision` or `createRevision`, `request_put` or `requestPut`).
//! - 64-bit integers may be numbers or strings; enums names or numbers.
//! - `null` is the default; unknown fields are ignored; a field given twice
//!   keeps its last value; an empty body is the empty request.
//! - An unknown enum name is an error (`"sort_order":"DESC"`), as in etcd;
//!   an unknown enum number passes (etcd's API layer, here
//!   [`crate::api::convert`], refuses it where it matters).
//! - ringkv also accepts URL-safe and unpadded base64 (etcd does not), and
//!   refuses data after the object (etcd reads the first object and
//!   ignores the rest).
//!
//! Errors: see [`error`]. Paths: `/v3/...`, and `/v3beta/...` as an alias
//! (etcd rewrites it); `/v3alpha/` is not served (etcd ≥ 3.5 neither).
//! Every answer carries [`CORS_HEADERS`], and an `OPTIONS` request to any
//! path is answered 200 with an empty body, as etcd does. The auth token
//! arrives in the [`AUTHORIZATION_HEADER`].

mod codec;
pub mod error;
mod routes;

pub use codec::{
    RequestStream, decode_request, decode_response, encode_request, encode_response,
    encode_stream_message,
};
pub use error::{
    CONTENT_TYPE_JSON, CONTENT_TYPE_TEXT, GatewayError, HttpReply, encode_error,
    encode_stream_error, http_status,
};
pub use routes::{GatewayRequest, GatewayResponse, METHOD, Rpc, RpcKind, route};

/// Headers etcd's HTTP server adds to every gateway answer (its CORS
/// handler, with no `--cors` origins configured).
pub const CORS_HEADERS: [(&str, &str); 3] = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
];

/// The HTTP header that carries the auth token from `Authenticate` (the
/// gateway's counterpart of the gRPC `token` metadata).
pub const AUTHORIZATION_HEADER: &str = "authorization";

#[cfg(test)]
mod tests;
