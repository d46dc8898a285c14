//! What clients and replicas say to each other over the simulated network.

use bytes::Bytes;
use ringkv_consensus::NodeId;

use crate::kv::{ClientId, KvOp, WriteResult};

/// A client's request to a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A write, proposed to the log; answered once applied at this replica.
    Write {
        /// The client.
        client: ClientId,
        /// The client's sequence number of the operation (the same on retries).
        seq: u64,
        /// The write.
        op: KvOp,
    },
    /// A linearizable read of `keys` (ReadIndex), answered once the read
    /// index is applied at this replica.
    Read {
        /// The client.
        client: ClientId,
        /// The client's sequence number of the operation.
        seq: u64,
        /// The keys read together.
        keys: Vec<Bytes>,
    },
}

impl Request {
    /// The client that sent it.
    pub fn client(&self) -> ClientId {
        match self {
            Request::Write { client, .. } | Request::Read { client, .. } => *client,
        }
    }

    /// Its sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Request::Write { seq, .. } | Request::Read { seq, .. } => *seq,
        }
    }
}

/// A replica's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The write was applied with this result.
    Written {
        /// The operation.
        seq: u64,
        /// What it did.
        result: WriteResult,
    },
    /// The read's values, one per key (value and mod revision, or absent).
    Read {
        /// The operation.
        seq: u64,
        /// One entry per requested key, in request order.
        values: Vec<Option<(Bytes, u64)>>,
    },
    /// This replica cannot take the request; try `leader` if known. Nothing
    /// was done.
    NotLeader {
        /// The operation.
        seq: u64,
        /// The leader this replica knows of.
        leader: Option<NodeId>,
    },
    /// The replica is overloaded or changing leaders; nothing was done.
    Busy {
        /// The operation.
        seq: u64,
    },
}

impl Response {
    /// The operation answered.
    pub fn seq(&self) -> u64 {
        match self {
            Response::Written { seq, .. }
            | Response::Read { seq, .. }
            | Response::NotLeader { seq, .. }
            | Response::Busy { seq } => *seq,
        }
    }
}
