//! The tokio shell around the ringkv node: peer transport, the etcd v3 gRPC
//! API and its JSON gateway, configuration, health and metrics.
//!
//! | module | what |
//! | --- | --- |
//! | [`server`] | a whole member: [`server::Server::start`] |
//! | [`runtime`] | the node on its thread, its inbox, [`runtime::NodeHandle`] |
//! | [`services`] | the etcd v3 gRPC services, one per file |
//! | [`http`] | the HTTP side of the client port: gateway, `/health`, `/version`, `/metrics` |
//! | [`api`] | wire ⇄ node conversions, limits, etcd's error catalog |
//! | [`gateway`] | the JSON gateway's routes and codec |
//! | [`peer`] | the TCP peer transport |
//! | [`config`] | etcd's flags, `RINGKV_*` variables and a TOML file |
//! | [`metrics`] | Prometheus metrics |

pub mod api;
pub mod config;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod runtime;
pub mod server;
pub mod services;
