//! etcd v3's gRPC wire format for ringkv: our own `.proto` files and the Rust
//! code generated from them.
//!
//! ringkv speaks etcd's client API so that `etcdctl`, Kubernetes and every
//! etcd client library work unchanged. This crate holds that API and nothing
//! else: no I/O, no behaviour. The server implements the generated service
//! traits; tests and tools use the generated clients. It is its own crate so
//! that editing a `.proto` file rebuilds only what depends on it.
//!
//! # Which API
//!
//! etcd **3.5**: every client-facing service, RPC, message, field number,
//! field type and enum value of etcd 3.5's `etcdserverpb`, `mvccpb`,
//! `authpb`, `v3lockpb` and `v3electionpb` packages. Clients of etcd 3.4
//! (Debian's `etcdctl`) and 3.6 speak it too: protobuf skips fields it does
//! not know, and 3.4 → 3.5 → 3.6 only added fields and RPCs.
//!
//! # Layout
//!
//! | module | proto file | what |
//! | --- | --- | --- |
//! | [`etcdserverpb`] | `proto/etcdserverpb/rpc.proto` | services `KV`, `Watch`, `Lease`, `Cluster`, `Maintenance`, `Auth` and their messages |
//! | [`mvccpb`] | `proto/mvccpb/kv.proto` | `KeyValue`, `Event` |
//! | [`authpb`] | `proto/authpb/auth.proto` | `User`, `Role`, `Permission`, `UserAddOptions` |
//! | [`v3lockpb`] | `proto/v3lockpb/v3lock.proto` | service `Lock` (`Lock`, `Unlock`) |
//! | [`v3electionpb`] | `proto/v3electionpb/v3election.proto` | service `Election` (`Campaign`, `Proclaim`, `Leader`, `Observe`, `Resign`), `LeaderKey` |
//!
//! Modules are named after the proto packages because the generated code
//! refers across them by package name (`super::mvccpb::KeyValue`). Each
//! service `Foo` generates `foo_server::{Foo, FooServer}` (the trait to
//! implement and the tower service to mount) and `foo_client::FooClient`.
//! Every RPC has a default body that answers `UNIMPLEMENTED` ("Not yet
//! implemented"), so a server can implement services one RPC at a time.
//! The price of those defaults: a server-streaming RPC returns the boxed
//! `tonic::codegen::BoxStream<Response>` rather than an associated stream
//! type of the implementer's choosing (one allocation per stream, not per
//! message). Implementations are written with `#[tonic::async_trait]`.
//!
//! The code is generated at build time (`build.rs`) by `protox`, a pure-Rust
//! protobuf compiler, and `tonic-prost-build`: no `protoc` binary is needed.
//!
//! # What differs from etcd's own `.proto` files
//!
//! Nothing that reaches the wire. The files are ours, written from etcd's
//! published field list, and:
//!
//! - drop the `gogoproto` options (they only steer Go code generation);
//! - drop the `google.api.http` and OpenAPI annotations: the JSON gateway is
//!   written by hand, and each RPC's comment names its gateway route
//!   (`POST /v3/kv/range`, …);
//! - drop etcd's `versionpb` annotations; comments say which etcd version
//!   added a field, as "(3.x)";
//! - leave out the messages etcd uses only inside its Raft log
//!   (`LeaseCheckpoint*`) and what etcd added after 3.5 (`KV/RangeStream`,
//!   `HashKVResponse.hash_revision`, `SnapshotResponse.version`,
//!   `StatusResponse.storageVersion`/`dbSizeQuota`/`downgradeInfo`);
//! - import each other as `mvccpb/kv.proto`, `etcdserverpb/rpc.proto`, …
//!   rather than etcd's Go module paths (file names never reach the wire).
//!
//! Proto field names are etcd's exactly, irregular capitals included
//! (`TTL`, `ID`, `peerURLs`, `isLearner`), because the JSON gateway prints
//! them. In Rust they are snake case as prost makes them (`ttl`, `id`,
//! `is_learner`), except that `peerURLs`/`clientURLs` become `peer_urls` and
//! `client_urls` rather than prost's `peer_ur_ls` and `client_ur_ls`.
//!
//! # JSON
//!
//! No serde derives: etcd's gateway JSON (base64 bytes, 64-bit integers as
//! strings, proto field names on output, camelCase accepted on input) is
//! mapped by hand in the gateway. [`FILE_DESCRIPTOR_SET`] carries the
//! descriptors for anything that wants reflection instead.

/// Messages and services of etcd's main API: `KV`, `Watch`, `Lease`,
/// `Cluster`, `Maintenance` and `Auth` (proto package `etcdserverpb`).
#[allow(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    reason = "generated code"
)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// Versioned key-value pairs and watch events (proto package `mvccpb`).
#[allow(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    reason = "generated code"
)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// Users, roles and permissions of the auth store (proto package `authpb`).
#[allow(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    reason = "generated code"
)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// The server-side lock service `Lock` (proto package `v3lockpb`).
#[allow(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    reason = "generated code"
)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

/// The server-side election service `Election` (proto package
/// `v3electionpb`).
#[allow(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    reason = "generated code"
)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of every `.proto` file in
/// this crate (imports included, source comments stripped), for reflection,
/// e.g. `prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET)`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// The name of a gRPC status code as grpc-go (and so etcd, etcdctl and
/// Prometheus labels such as etcd's `grpc_server_handled_total`) spells it.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
