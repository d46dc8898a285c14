//! The tokio shell around the ringkv node: peer transport, the etcd v3 gRPC
//! API and its JSON gateway, the watch hub, configuration, health and
//! metrics.
//!
//! | module | what |
//! | --- | --- |
//! | [`server`] | a whole member: [`server::Server::start`] |
//! | [`runtime`] | the node on its thread, its inbox, [`runtime::NodeHandle`] |
//! | [`services`] | the etcd v3 gRPC services, one per file |
//! | [`shards`] | which shards a KV request touches; merging scatter-gather answers |
//! | [`http`] | the HTTP side of the client port: gateway, `/health`, `/version`, `/metrics` |
//! | [`dashboard`] | the built-in web dashboard (`/dashboard`) and the JSON it polls |
//! | [`api`] | wire ⇄ node conversions, limits, etcd's error catalog |
//! | [`auth`] | credentials, passwords, tokens (JWT), login rate limits |
//! | [`gateway`] | the JSON gateway's routes and codec |
//! | [`peer`] | the TCP peer transport |
//! | [`remote`] | reaching the members that host a shard this one does not: locality, dialer |
//! | [`compactor`] | auto-compaction (`--auto-compaction-*`), per data shard, on the leader |
//! | [`config`] | etcd's flags, `RINGKV_*` variables and a TOML file |
//! | [`metrics`] | Prometheus metrics |
//! | [`tls`] | TLS of the client and peer ports: rustls (`ring`), reloaded files, client certificate names |
//! | [`watch`] | etcd's Watch: the hub fed by applied changes and the gRPC service |

pub mod api;
pub mod auth;
pub mod compactor;
pub mod config;
pub mod dashboard;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod remote;
pub mod runtime;
pub mod server;
pub mod services;
pub mod shards;
pub mod tls;
pub mod watch;
