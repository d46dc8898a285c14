//! Conversions between etcd's wire types (`ringkv_api`'s prost messages)
//! and the MVCC store's types (`ringkv_storage::mvcc`).
//!
//! [`from_pb`] turns client requests into store requests and checks on the
//! way what etcd checks at its API layer before proposing (empty keys, the
//! put flags, transaction size and duplicate keys, request size), so a
//! refused request never costs a consensus round. [`to_pb`] turns the
//! store's answers into responses, filling the header from [`HeaderInfo`];
//! it also converts requests back (for forwarding and for tests).
//!
//! # Mapping rules (etcd's)
//!
//! - Bytes and integers map one to one; revision `<= 0` means "latest" and
//!   lease `0` means "none" on both sides, so neither side rewrites them.
//!   Negative limits and revisions are not errors: etcd reads them as
//!   "no limit" and "latest" (a negative revision inside a transaction is
//!   refused by the store as compacted, as in etcd).
//! - A `Compare` whose `target_union` holds a different field than its
//!   `target` names compares against that field's default (0 or empty),
//!   as etcd's generated getters do.
//! - A `RequestOp` with no request set is refused with etcd's
//!   `etcdserver: key not found`.
//! - Enum values outside etcd's protocol (sort order and target, compare
//!   result and target) are refused with [`EtcdError::InvalidEnum`]; etcd
//!   would ignore some and crash on an unknown sort target.
//! - Inside a transaction, every response's header carries only its
//!   revision, and a nested transaction's header is empty: etcd fills
//!   cluster id, member id and term only on the outermost response.
//!
//! [`EtcdError::InvalidEnum`]: super::status::EtcdError::InvalidEnum

pub mod from_pb;
pub mod to_pb;

use ringkv_api::etcdserverpb::ResponseHeader;
use ringkv_storage::mvcc::Revision;

/// What a response header says besides the revision: who answered, in
/// which cluster, in which consensus term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HeaderInfo {
    /// The cluster's id.
    pub cluster_id: u64,
    /// The answering member's id.
    pub member_id: u64,
    /// The consensus term of the shard that served the request (etcd's
    /// Raft term; a Paxos ballot's round for the Paxos engine).
    pub raft_term: u64,
}

impl HeaderInfo {
    /// The header of a response served at store revision `revision`.
    pub fn header(&self, revision: Revision) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: revision.0,
            raft_term: self.raft_term,
        }
    }
}

#[cfg(test)]
mod tests;
