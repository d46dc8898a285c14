//! The state machine's requests, responses and events: etcd's `etcdserverpb` /
//! `mvccpb` messages as Rust types.
//!
//! Field names and meanings follow etcd v3 (`rpc.proto`, `kv.proto`); the
//! gRPC layer maps the protobufs to these one to one. Where etcd uses a
//! magic number (revision `<= 0` = "latest", lease `0` = "none") so do we,
//! so the mapping stays trivial and cannot drift.

use std::fmt;

use bytes::Bytes;

/// A store revision: etcd's logical clock, one per write request.
///
/// A fresh shard is at revision 1 and its first write creates revision 2,
/// exactly as etcd. In requests, `Revision(0)` (or any value `<= 0`) means
/// "the current revision" or "no filter", as in etcd.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub i64);

impl Revision {
    /// "Latest" in a request; "none" in a filter.
    pub const ZERO: Revision = Revision(0);
    /// The revision of a fresh shard, before any write.
    pub const INITIAL: Revision = Revision(1);
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A lease identifier. `LeaseId(0)` means "no lease", as in etcd.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl LeaseId {
    /// No lease.
    pub const NONE: LeaseId = LeaseId(0);

    /// Whether this names a lease (is not [`LeaseId::NONE`]).
    pub const fn is_some(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One version of a key (`mvccpb.KeyValue`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key; never empty.
    pub key: Bytes,
    /// Revision of the put that created this generation of the key.
    pub create_revision: Revision,
    /// Revision of the last modification.
    pub mod_revision: Revision,
    /// Puts in this generation, starting at 1; a delete ends the generation.
    pub version: i64,
    /// The value; empty in `keys_only` ranges.
    pub value: Bytes,
    /// The lease the key is attached to, or [`LeaseId::NONE`].
    pub lease: LeaseId,
}

/// Whether an event is a put or a delete (`mvccpb.Event.EventType`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A key was created or modified.
    Put,
    /// A key was deleted (by DeleteRange, a txn, or a lease revoke).
    Delete,
}

/// A change produced by applying a command, for watchers (`mvccpb.Event`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put, the new version. For a delete, only `key` and
    /// `mod_revision` (the deletion's revision) are set, as in etcd.
    pub kv: KeyValue,
    /// The version before the change, if the key existed. Always filled:
    /// the watch layer drops it for watchers that did not ask for it.
    pub prev_kv: Option<KeyValue>,
}

/// Result order of a range (`RangeRequest.SortOrder`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// Natural (key-ascending) order, unless a non-key target is given.
    #[default]
    None,
    /// Ascending by the target.
    Ascend,
    /// Descending by the target.
    Descend,
}

/// What a range sorts by (`RangeRequest.SortTarget`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value bytes.
    Value,
}

/// Reads `[key, range_end)` (`etcdserverpb.RangeRequest`).
///
/// `range_end` empty: the single key. `range_end == "\0"`: every key
/// `>= key` (so `key == "\0"` too means the whole keyspace). Otherwise the
/// half-open interval, e.g. a prefix and its successor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key (or the only key).
    pub key: Bytes,
    /// End of the range, exclusive; see the type docs.
    pub range_end: Bytes,
    /// At most this many keys; `<= 0` means no limit.
    pub limit: i64,
    /// Read at this revision; `<= 0` means the current one.
    pub revision: Revision,
    /// Result order.
    pub sort_order: SortOrder,
    /// What to sort by.
    pub sort_target: SortTarget,
    /// Serve from the local replica without a quorum round (the node's
    /// concern; the store ignores it).
    pub serializable: bool,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Only keys with `mod_revision >=` this (0 = no bound).
    pub min_mod_revision: Revision,
    /// Only keys with `mod_revision <=` this (0 = no bound).
    pub max_mod_revision: Revision,
    /// Only keys with `create_revision >=` this (0 = no bound).
    pub min_create_revision: Revision,
    /// Only keys with `create_revision <=` this (0 = no bound).
    pub max_create_revision: Revision,
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store's revision when the read was served (the header revision).
    pub revision: Revision,
    /// The keys, after filters, sort and limit.
    pub kvs: Vec<KeyValue>,
    /// Whether the limit cut off more keys that passed the filters.
    pub more: bool,
    /// Keys in the range at the read revision, before filters and limit.
    pub count: i64,
}

/// Writes one key (`etcdserverpb.PutRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key; must not be empty.
    pub key: Bytes,
    /// The new value; must be empty with `ignore_value`.
    pub value: Bytes,
    /// Attach to this lease ([`LeaseId::NONE`] for none); must be none with
    /// `ignore_lease`.
    pub lease: LeaseId,
    /// Return the previous version.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

/// The answer to a [`PutRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The store's revision after the put.
    pub revision: Revision,
    /// The previous version, if asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// Deletes `[key, range_end)` (`etcdserverpb.DeleteRangeRequest`); the
/// range has the same conventions as [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// First key (or the only key).
    pub key: Bytes,
    /// End of the range, exclusive.
    pub range_end: Bytes,
    /// Return the deleted versions.
    pub prev_kv: bool,
}

/// The answer to a [`DeleteRangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// The store's revision after the delete (unchanged if nothing was deleted).
    pub revision: Revision,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted versions, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a [`Compare`] relates the key's field to the given value.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum CompareResult {
    /// Field == value.
    #[default]
    Equal,
    /// Field > value.
    Greater,
    /// Field < value.
    Less,
    /// Field != value.
    NotEqual,
}

/// The field a [`Compare`] looks at, with the value to compare it to
/// (etcd's `target` plus the `target_union` oneof).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The version (0 for a missing key).
    Version(i64),
    /// The create revision (0 for a missing key).
    Create(Revision),
    /// The mod revision (0 for a missing key).
    Mod(Revision),
    /// The value (a compare on a missing key always fails).
    Value(Bytes),
    /// The lease (0 for a missing key or no lease).
    Lease(LeaseId),
}

/// One condition of a transaction (`etcdserverpb.Compare`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The relation that must hold.
    pub result: CompareResult,
    /// The field and the value.
    pub target: CompareTarget,
    /// The key; must not be empty.
    pub key: Bytes,
    /// If not empty, the compare must hold for every key in `[key, range_end)`.
    pub range_end: Bytes,
}

/// One operation of a transaction branch (`etcdserverpb.RequestOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A read (sees the transaction's earlier writes).
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction (its compares see the state before the outer one).
    Txn(TxnRequest),
}

/// The answer to one [`RequestOp`] (`etcdserverpb.ResponseOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// A read's answer.
    Range(RangeResponse),
    /// A put's answer.
    Put(PutResponse),
    /// A delete's answer.
    DeleteRange(DeleteRangeResponse),
    /// A nested transaction's answer.
    Txn(TxnResponse),
}

/// `if all(compare) then success else failure` (`etcdserverpb.TxnRequest`).
///
/// All writes share one revision; a key may be written at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// Conditions, all of which must hold for `success` to run.
    pub compare: Vec<Compare>,
    /// Operations run when every compare holds.
    pub success: Vec<RequestOp>,
    /// Operations run otherwise.
    pub failure: Vec<RequestOp>,
}

/// The answer to a [`TxnRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// The store's revision after the transaction.
    pub revision: Revision,
    /// Whether the compares held (and `success` ran).
    pub succeeded: bool,
    /// One answer per operation of the branch that ran. Each carries the
    /// revision as it stood right after that operation (as in etcd: a read
    /// before the transaction's first write reports the previous revision).
    pub responses: Vec<ResponseOp>,
}

/// Drops history below `revision` (`etcdserverpb.CompactionRequest`).
///
/// Unlike etcd, which removes old versions in the background, the store
/// removes them inside the apply, so every replica's store holds the same
/// rows at the same index. The work is proportional to the keys written
/// since the previous compaction: compact regularly (Kubernetes does every
/// five minutes) rather than rarely.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionRequest {
    /// Reads below this revision fail afterwards; reads at it still work.
    pub revision: Revision,
    /// Wait for physical removal. The store always removes within the
    /// apply, so this only matters to the API layer.
    pub physical: bool,
}

/// The answer to a [`CompactionRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionResponse {
    /// The store's revision (compaction does not create one).
    pub revision: Revision,
}

/// Creates a lease (`etcdserverpb.LeaseGrantRequest`). Unlike etcd's
/// request, the id is always chosen (by the leader, before proposing), so
/// every replica applies the same one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantRequest {
    /// The new lease's id; must not be [`LeaseId::NONE`].
    pub id: LeaseId,
    /// Time to live in seconds, already raised to the cluster's minimum by
    /// the proposer; at most [`crate::mvcc::LEASE_TTL_MAX_SECONDS`].
    pub ttl: i64,
}

/// The answer to a [`LeaseGrantRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    /// The store's revision (a grant does not create one).
    pub revision: Revision,
    /// The lease's id.
    pub id: LeaseId,
    /// The granted TTL in seconds.
    pub ttl: i64,
}

/// Revokes a lease and deletes its keys in one revision
/// (`etcdserverpb.LeaseRevokeRequest`; also what expiry proposes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRevokeRequest {
    /// The lease.
    pub id: LeaseId,
}

/// The answer to a [`LeaseRevokeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRevokeResponse {
    /// The store's revision after the revoke (new only if keys were deleted).
    pub revision: Revision,
}

/// A lease's remaining TTL as the leader saw it (etcd's lease checkpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseCheckpoint {
    /// The lease.
    pub id: LeaseId,
    /// Seconds left when the leader proposed the checkpoint.
    pub remaining_ttl: i64,
}

/// Records remaining TTLs so that a new leader does not hand every lease
/// its full TTL again (etcd's `LeaseCheckpointRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseCheckpointRequest {
    /// One entry per lease; unknown (already revoked) leases are skipped.
    pub checkpoints: Vec<LeaseCheckpoint>,
}

/// The answer to a [`LeaseCheckpointRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseCheckpointResponse {
    /// The store's revision (a checkpoint does not create one).
    pub revision: Revision,
}

/// A command replicated through the shard's log: what the state machine applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `KV.Put`.
    Put(PutRequest),
    /// `KV.DeleteRange`.
    DeleteRange(DeleteRangeRequest),
    /// `KV.Txn`.
    Txn(TxnRequest),
    /// `KV.Compact`.
    Compaction(CompactionRequest),
    /// `Lease.LeaseGrant`.
    LeaseGrant(LeaseGrantRequest),
    /// `Lease.LeaseRevoke`, or the leader's expiry of a lease.
    LeaseRevoke(LeaseRevokeRequest),
    /// The leader's record of remaining lease TTLs.
    LeaseCheckpoint(LeaseCheckpointRequest),
}

/// The answer to a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// To [`Command::Put`].
    Put(PutResponse),
    /// To [`Command::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// To [`Command::Txn`].
    Txn(TxnResponse),
    /// To [`Command::Compaction`].
    Compaction(CompactionResponse),
    /// To [`Command::LeaseGrant`].
    LeaseGrant(LeaseGrantResponse),
    /// To [`Command::LeaseRevoke`].
    LeaseRevoke(LeaseRevokeResponse),
    /// To [`Command::LeaseCheckpoint`].
    LeaseCheckpoint(LeaseCheckpointResponse),
}

impl Response {
    /// The header revision of the answer.
    pub fn revision(&self) -> Revision {
        match self {
            Response::Put(r) => r.revision,
            Response::DeleteRange(r) => r.revision,
            Response::Txn(r) => r.revision,
            Response::Compaction(r) => r.revision,
            Response::LeaseGrant(r) => r.revision,
            Response::LeaseRevoke(r) => r.revision,
            Response::LeaseCheckpoint(r) => r.revision,
        }
    }
}

/// What the store knows about a lease (for `LeaseTimeToLive`).
///
/// Expiry timing is the leader's job: it keeps a deadline per lease in
/// memory. When a node becomes leader it starts each lease's clock at
/// `remaining_ttl` if a checkpoint recorded one, else at `granted_ttl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease.
    pub id: LeaseId,
    /// The TTL it was granted, in seconds.
    pub granted_ttl: i64,
    /// The remaining TTL recorded by the last checkpoint, if any.
    pub remaining_ttl: Option<i64>,
    /// Keys attached to the lease, in key order (empty unless asked for).
    pub keys: Vec<Bytes>,
}
