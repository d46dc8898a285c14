//! End-to-end tests of ringkv members in this process, on loopback, with
//! real clients: the generated tonic clients of `ringkv-api`, the
//! `etcd-client` crate, and HTTP requests as curl sends them.
//!
//! One test binary (with modules) rather than one per file: each binary
//! links the whole server, and CI has two cores.
#![allow(clippy::unwrap_used, clippy::too_many_lines, unreachable_pub)]

#[path = "e2e/auth.rs"]
mod auth;
#[path = "e2e/cluster_api.rs"]
mod cluster_api;
#[path = "e2e/common.rs"]
mod common;
#[path = "e2e/concurrency.rs"]
mod concurrency;
#[path = "e2e/failover.rs"]
mod failover;
#[path = "e2e/http.rs"]
mod http;
#[path = "e2e/kv.rs"]
mod kv;
#[path = "e2e/kv_forward.rs"]
mod kv_forward;
#[path = "e2e/lease.rs"]
mod lease;
#[path = "e2e/observability.rs"]
mod observability;
#[path = "e2e/watch_relay.rs"]
mod watch_relay;
