//! The tokio shell around the ringkv node: peer transport, the etcd v3 gRPC
//! API and its JSON gateway, the watch hub, configuration, health and
//! metrics.

pub mod api;
pub mod config;
pub mod gateway;
pub mod peer;
pub mod watch;
