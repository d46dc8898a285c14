//! What the Lock and Election services share: KV calls through the node,
//! and waiting until keys are deleted, on etcd's recipes (`clientv3/
//! concurrency`), which etcd's own v3lock and v3election services run
//! server side. A call on keys of a shard this member does not hold goes,
//! whole, to a member that does ([`remote_home`]).
//!
//! # Waiting for deletions
//!
//! A waiter subscribes to the runtime's broadcast of applied changes
//! ([`crate::runtime::NodeHandle::subscribe_events`]) *before* it reads, so
//! no deletion after its read can be missed: any change with a revision
//! above the read's is applied after the subscription and arrives on it.
//! If the waiter falls behind the broadcast (it lags), it reads again,
//! which is always safe: the condition is re-checked against the store.

use bytes::Bytes;
use ringkv_consensus::ShardId;
use ringkv_node::{Reply, Request};
use ringkv_storage::mvcc::{
    DeleteRangeRequest, DeleteRangeResponse, EventKind, KeyValue, LeaseId, RangeRequest,
    RangeResponse, Response as MvccResponse, Revision, SortOrder, SortTarget, TxnRequest,
    TxnResponse,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tonic::Status;

use super::{Context, unexpected};
use crate::api::{EtcdError, HeaderInfo};
use crate::remote::RelayCandidate;
use crate::shards::{Targets, range_targets};

/// TTL of the lease a Lock or Campaign without a lease gets, in seconds
/// (etcd's session default: its services grant one the same way).
pub const SESSION_TTL_DEFAULT_SECONDS: i64 = 60;

/// The key of `lease`'s entry under `prefix` (etcd's `<prefix><lease in hex>`).
pub(super) fn lease_key(prefix: &[u8], lease: LeaseId) -> Bytes {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{:x}", lease.0).as_bytes());
    Bytes::from(key)
}

/// `<name>/`, the prefix of a lock's or an election's keys.
pub(super) fn name_prefix(name: &[u8]) -> Bytes {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    Bytes::from(prefix)
}

/// The end of the range of keys starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`): `"\0"`, every key, when no byte can be incremented.
pub(super) fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

/// The lease to hold a lock or candidacy with: `lease`, or a new one with
/// [`SESSION_TTL_DEFAULT_SECONDS`] when the caller gave none.
pub(super) async fn session_lease(ctx: &Context, lease: i64) -> Result<LeaseId, Status> {
    if lease != 0 {
        return Ok(LeaseId(lease));
    }
    let answer = ctx
        .call(Request::LeaseGrant { id: LeaseId::NONE, ttl: SESSION_TTL_DEFAULT_SECONDS })
        .await?;
    match answer.reply {
        Reply::Kv(MvccResponse::LeaseGrant(r)) => Ok(r.id),
        other => Err(unexpected("LeaseGrant", &other)),
    }
}

/// A transaction through the node.
pub(super) async fn txn(
    ctx: &Context,
    txn: TxnRequest,
) -> Result<(HeaderInfo, TxnResponse), Status> {
    let answer = ctx.call(Request::Txn(txn)).await?;
    match answer.reply {
        Reply::Kv(MvccResponse::Txn(r)) => Ok((super::header_info(&answer.header), r)),
        other => Err(unexpected("Txn", &other)),
    }
}

/// A linearizable range through the node.
pub(super) async fn range(
    ctx: &Context,
    req: RangeRequest,
) -> Result<(HeaderInfo, RangeResponse), Status> {
    let answer = ctx.call(Request::Range(req)).await?;
    match answer.reply {
        Reply::Range(r) => Ok((super::header_info(&answer.header), r)),
        other => Err(unexpected("Range", &other)),
    }
}

/// Deletes one key through the node.
pub(super) async fn delete(
    ctx: &Context,
    key: Bytes,
) -> Result<(HeaderInfo, DeleteRangeResponse), Status> {
    let req = DeleteRangeRequest { key, range_end: Bytes::new(), prev_kv: false };
    let answer = ctx.call(Request::DeleteRange(req)).await?;
    match answer.reply {
        Reply::Kv(MvccResponse::DeleteRange(r)) => Ok((super::header_info(&answer.header), r)),
        other => Err(unexpected("DeleteRange", &other)),
    }
}

/// Where a Lock or Election call on the keys `key..range_end` is served:
/// `None` here (one shard, or this member holds the keys' shard, or the
/// call was forwarded to it), else the one data shard that holds them all
/// (a lock's or election's keys share a shard under a hash tag or
/// `--hash-key-segments`), the members holding it, and the call's
/// deadline. The whole call is sent there: its keys, and the deletions it
/// waits for, are that member's.
///
/// # Errors
/// A forwarded call for a shard this member does not hold.
pub(super) fn remote_home(
    ctx: &Context,
    key: &[u8],
    range_end: &[u8],
) -> Result<Option<(ShardId, Vec<RelayCandidate>, Instant)>, Status> {
    let keyspace = ctx.node().keyspace();
    if keyspace.shard_count() <= 1 {
        return Ok(None);
    }
    let Targets::One(shard) = range_targets(keyspace, key, range_end) else { return Ok(None) };
    Ok(ctx.concurrency_home(shard)?.map(|(candidates, deadline)| (shard, candidates, deadline)))
}

/// Sends a Lock or Election call whole to the members of `home` (see
/// [`remote_home`]): `call(channel, request)` makes the call on one.
///
/// # Errors
/// As [`Context::forward_with`].
pub(super) async fn forward_whole<Req, Resp, F, Fut>(
    ctx: &Context,
    home: (ShardId, Vec<RelayCandidate>, Instant),
    write: bool,
    req: Req,
    call: F,
) -> Result<tonic::Response<Resp>, Status>
where
    Req: Clone,
    F: Fn(tonic::transport::Channel, tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let (shard, candidates, deadline) = home;
    let send = |channel, metadata, timeout| {
        let sent = call(channel, super::forward::forwarded_call(req.clone(), metadata, timeout));
        async move { sent.await.map(tonic::Response::into_inner) }
    };
    ctx.forward_with(shard, candidates, write, deadline, send).await.map(tonic::Response::new)
}

/// The oldest key under `prefix` (etcd's `WithFirstCreate`).
pub(super) fn first_created(prefix: &Bytes) -> RangeRequest {
    RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..RangeRequest::default()
    }
}

/// Waits until no key under `prefix` has a create revision at or below
/// `max_create`: the lock's and the election's queue ahead of a caller
/// (etcd's `waitDeletes`).
///
/// # Errors
/// The node failed a read, or stopped.
pub(super) async fn wait_deletes(
    ctx: &Context,
    prefix: &Bytes,
    max_create: Revision,
) -> Result<(), Status> {
    loop {
        let mut events = ctx.node().subscribe_events();
        let last_before = RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Create,
            max_create_revision: max_create,
            ..RangeRequest::default()
        };
        let (_, found) = range(ctx, last_before).await?;
        let Some(waiting_on) = found.kvs.into_iter().next() else { return Ok(()) };
        wait_for_delete(&mut events, &waiting_on).await?;
    }
}

/// Waits for the deletion of `kv` (or for a lag, after which the caller
/// reads again).
async fn wait_for_delete(
    events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<[ringkv_node::WatchEvents]>>,
    kv: &KeyValue,
) -> Result<(), Status> {
    loop {
        match events.recv().await {
            Ok(rounds) => {
                let deleted = rounds.iter().flat_map(|r| r.events.iter()).any(|e| {
                    e.kind == EventKind::Delete
                        && e.kv.key == kv.key
                        && e.kv.mod_revision > kv.mod_revision
                });
                if deleted {
                    return Ok(());
                }
            }
            Err(RecvError::Lagged(_)) => return Ok(()),
            Err(RecvError::Closed) => return Err(EtcdError::Stopped.into()),
        }
    }
}

/// Deletes a key if dropped while armed: a Lock or Campaign whose caller
/// went away while it waited gives up its place in the queue, as etcd's
/// recipes do when their context is canceled.
pub(super) struct GiveUpOnDrop {
    ctx: Context,
    key: Bytes,
    /// Only delete the key if its create revision is still this one.
    create_revision: Revision,
    armed: bool,
}

impl GiveUpOnDrop {
    pub(super) fn new(ctx: &Context, key: Bytes, create_revision: Revision) -> GiveUpOnDrop {
        GiveUpOnDrop { ctx: ctx.clone(), key, create_revision, armed: true }
    }

    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let ctx = self.ctx.clone();
        let key = self.key.clone();
        let create_revision = self.create_revision;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = delete_if_created_at(&ctx, key, create_revision).await;
            });
        }
    }
}

/// Deletes `key` if it is still the generation created at
/// `create_revision`; returns the transaction's answer.
pub(super) async fn delete_if_created_at(
    ctx: &Context,
    key: Bytes,
    create_revision: Revision,
) -> Result<(HeaderInfo, TxnResponse), Status> {
    use ringkv_storage::mvcc::{Compare, CompareResult, CompareTarget, RequestOp};
    let txn_req = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Create(create_revision),
            key: key.clone(),
            range_end: Bytes::new(),
        }],
        success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key,
            range_end: Bytes::new(),
            prev_kv: false,
        })],
        failure: vec![],
    };
    txn(ctx, txn_req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"foo"), Bytes::from_static(b"fop"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Bytes::from_static(b"\0"));
        assert_eq!(lease_key(b"lock/", LeaseId(0x694d)), Bytes::from_static(b"lock/694d"));
        assert_eq!(name_prefix(b"lock"), Bytes::from_static(b"lock/"));
    }
}
