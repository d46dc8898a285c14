//! Reaching the members that host a data shard this member does not
//! (ADR 0002, "Routing": any member accepts any request).
//!
//! - [`ShardLocality`]: where a shard is served from, and which members to
//!   ask when it is not here ([`NodeLocality`] in production).
//! - [`MemberDialer`]: one cached gRPC channel per member client URL,
//!   shared by the watch relay ([`crate::watch::WatchRelay`]) and the KV
//!   forwarding (`crate::services`).
//!
//! # Credentials
//!
//! A call made for a client carries the client's [`FORWARDED_METADATA`]
//! (its token, and `hasleader`), so the hosting member checks the
//! client's rights and leader rule itself. A client known by its TLS
//! certificate alone cannot be forwarded as itself: the hosting member
//! sees this member's own client certificate (or none over `http://`).
//! The services therefore check such a client's rights here first (the
//! local node authorizes a request before it answers `NotHosted`), and
//! the hosting member checks this member's certificate name on top.

mod dial;
mod locality;

pub use dial::{
    DIALED_URLS_MAX, DialError, FORWARDED_METADATA, MEMBER_CONNECT_TIMEOUT,
    MEMBER_KEEPALIVE_INTERVAL, MEMBER_KEEPALIVE_TIMEOUT, MemberDialer, forwarded_metadata,
};
pub use locality::{
    AllLocal, DebugRemoteShards, NodeLocality, RelayCandidate, ShardHome, ShardLocality, candidates,
};
