//! Durable storage for ringkv: the node write-ahead log, snapshots and the MVCC state machine.

pub mod mvcc;
