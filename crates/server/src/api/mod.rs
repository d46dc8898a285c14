//! The etcd v3 API: mapping between the wire types and the node's types,
//! the checks etcd makes before a request reaches consensus, and the one
//! catalog of client-visible errors.
//!
//! | module | what |
//! | --- | --- |
//! | [`convert`] | prost messages ⇄ MVCC store types, with etcd's API-layer validation |
//! | [`limits`] | request limits (`--max-txn-ops`, `--max-request-bytes`, lease TTL minimum) |
//! | [`status`] | [`EtcdError`]: etcd's gRPC codes and exact messages |
//!
//! The gRPC service implementations that drive the node build on these.

pub mod convert;
pub mod limits;
pub mod status;

pub use convert::HeaderInfo;
pub use limits::RequestLimits;
pub use status::EtcdError;
