//! `etcdserverpb.Maintenance`: Status, Alarm, Hash, HashKV, Snapshot (a
//! server stream), MoveLeader, Defragment. (Downgrade answers
//! `UNIMPLEMENTED`: there is only one ringkv version.)

use ringkv_api::etcdserverpb::maintenance_server::Maintenance;
use ringkv_api::etcdserverpb::{self as pb, alarm_request::AlarmAction as PbAction};
use ringkv_consensus::NodeId;
use ringkv_node::{AlarmAction, AlarmMember, AlarmType, DATA_SHARD, Reply, Request};
use ringkv_storage::mvcc::Revision;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Response, Status};

use super::lease::receiver_stream;
use super::{Context, header_info, unexpected, until_leader_lost};
use crate::api::EtcdError;

/// The etcd server version ringkv reports (`Status.version`, `GET
/// /version`). Clients gate features on it: Kubernetes uses watch progress
/// requests only from 3.5.13 (or 3.4.31) on, and ringkv answers them as
/// those versions do.
pub const ETCD_VERSION: &str = "3.5.13";

/// The cluster version ringkv reports (`GET /version`'s `etcdcluster`;
/// Patroni picks its gateway prefix from it).
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";

/// A snapshot stream's length before its SHA-256 trailer is a multiple of
/// this (etcd's streams are bbolt pages; etcdctl checks the alignment).
pub const SNAPSHOT_ALIGN_BYTES: usize = 512;

/// Snapshot chunks read ahead of a slow client: the read holds a store
/// snapshot open, so a stalled client must not make it buffer the store.
pub const SNAPSHOT_CHUNKS_QUEUED_MAX: usize = 4;

/// The Maintenance service.
#[derive(Clone, Debug)]
pub struct MaintenanceService {
    ctx: Context,
}

impl MaintenanceService {
    /// The service over `ctx`.
    pub fn new(ctx: Context) -> MaintenanceService {
        MaintenanceService { ctx }
    }

    /// Streams the data shard's snapshot. Used by the gRPC method and the
    /// gateway.
    ///
    /// The stream is laid out as etcd's: the snapshot, zero padding to a
    /// multiple of [`SNAPSHOT_ALIGN_BYTES`], then the SHA-256 of everything
    /// before it, so `etcdctl snapshot save` accepts it (it checks that the
    /// size is 32 past a 512-byte boundary; the hash is for restores). The
    /// snapshot itself is ringkv's format (checksummed chunks, which a
    /// ringkv restore reads), not a bbolt file: `etcdctl snapshot status`
    /// and `restore` cannot read it. `remaining_bytes` is an estimate (the
    /// store's live size less what was sent, never 0 before the trailer),
    /// since the exact size is known only at the end; it is 0 on the
    /// trailer.
    pub fn snapshot_stream(&self) -> BoxStream<pb::SnapshotResponse> {
        let (tx, rx) =
            mpsc::channel::<Result<pb::SnapshotResponse, Status>>(SNAPSHOT_CHUNKS_QUEUED_MAX);
        let store = std::sync::Arc::clone(self.ctx.node().store());
        let state = std::sync::Arc::clone(self.ctx.state());
        tokio::task::spawn_blocking(move || {
            let failed = |e: &dyn std::fmt::Display| -> Result<pb::SnapshotResponse, Status> {
                Err(EtcdError::Unknown { message: format!("snapshot failed: {e}") }.into())
            };
            let export = match store.snapshot(DATA_SHARD) {
                Ok(export) => export,
                Err(e) => {
                    let _ = tx.blocking_send(failed(&e));
                    return;
                }
            };
            let header = state.header(export.state().revision);
            let estimate = store.size_in_use_bytes().unwrap_or(0);
            let mut hasher = Sha256::new();
            let mut sent = 0u64;
            for chunk in export {
                let message = match chunk {
                    Ok(blob) => {
                        hasher.update(&blob);
                        sent += blob.len() as u64;
                        Ok(pb::SnapshotResponse {
                            header: Some(header),
                            remaining_bytes: estimate.saturating_sub(sent).max(1),
                            blob: blob.to_vec(),
                        })
                    }
                    Err(e) => failed(&e),
                };
                let stop = message.is_err();
                if tx.blocking_send(message).is_err() || stop {
                    return;
                }
            }
            let align = SNAPSHOT_ALIGN_BYTES as u64;
            let padding = ((align - sent % align) % align) as usize;
            let mut trailer = vec![0u8; padding];
            hasher.update(&trailer);
            trailer.extend_from_slice(hasher.finalize().as_slice());
            let _ = tx.blocking_send(Ok(pb::SnapshotResponse {
                header: Some(header),
                remaining_bytes: 0,
                blob: trailer,
            }));
        });
        Box::pin(receiver_stream(rx))
    }
}

fn alarm_type(value: i32) -> Option<AlarmType> {
    match value {
        1 => Some(AlarmType::NoSpace),
        2 => Some(AlarmType::Corrupt),
        _ => None,
    }
}

fn alarm_to_pb(a: AlarmMember) -> pb::AlarmMember {
    pb::AlarmMember { member_id: a.member.0, alarm: a.alarm.wire_value() }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: tonic::Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let req = request.into_inner();
        let action = match PbAction::try_from(req.action) {
            Ok(PbAction::Get) => AlarmAction::Get,
            Ok(PbAction::Activate) => AlarmAction::Activate,
            Ok(PbAction::Deactivate) => AlarmAction::Deactivate,
            Err(_) => {
                return Err(EtcdError::InvalidEnum {
                    field: "AlarmRequest.action",
                    value: req.action,
                    max: PbAction::Deactivate as i32,
                }
                .into());
            }
        };
        let filter = alarm_type(req.alarm);
        let header = self.ctx.state().current_header();
        let alarm = match (action, filter) {
            (AlarmAction::Get, _) => AlarmType::NoSpace,
            (_, Some(alarm)) => alarm,
            // etcd changes nothing for alarm NONE (or an unknown type).
            (_, None) => {
                return Ok(Response::new(pb::AlarmResponse {
                    header: Some(header),
                    alarms: vec![],
                }));
            }
        };
        let answer =
            self.ctx.call(Request::Alarm { action, member: NodeId(req.member_id), alarm }).await?;
        match answer.reply {
            Reply::Alarms(alarms) => {
                let alarms = alarms
                    .into_iter()
                    // GET lists every alarm, or those of the type asked for.
                    .filter(|a| action != AlarmAction::Get || filter.is_none_or(|f| a.alarm == f))
                    .map(alarm_to_pb)
                    .collect();
                let header =
                    header_info(&answer.header).header(self.ctx.state().current_revision());
                Ok(Response::new(pb::AlarmResponse { header: Some(header), alarms }))
            }
            other => Err(unexpected("Alarm", &other)),
        }
    }

    async fn status(
        &self,
        request: tonic::Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let answer = self.ctx.call(Request::Status).await?;
        match answer.reply {
            Reply::Status(s) => {
                let revision = s
                    .shards
                    .iter()
                    .find(|sh| sh.shard == DATA_SHARD)
                    .map_or(self.ctx.state().current_revision(), |sh| sh.revision);
                Ok(Response::new(pb::StatusResponse {
                    header: Some(header_info(&answer.header).header(revision)),
                    version: ETCD_VERSION.to_owned(),
                    db_size: s.db_size as i64,
                    leader: s.leader.map_or(0, |l| l.0),
                    raft_index: s.raft_index,
                    raft_term: s.raft_term,
                    raft_applied_index: s.raft_applied_index,
                    errors: s.errors,
                    db_size_in_use: s.db_size_in_use as i64,
                    is_learner: s.is_learner,
                }))
            }
            other => Err(unexpected("Status", &other)),
        }
    }

    async fn defragment(
        &self,
        request: tonic::Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let answer = self.ctx.call(Request::Defragment).await?;
        match answer.reply {
            Reply::Done => Ok(Response::new(pb::DefragmentResponse {
                header: Some(
                    header_info(&answer.header).header(self.ctx.state().current_revision()),
                ),
            })),
            other => Err(unexpected("Defragment", &other)),
        }
    }

    async fn hash(
        &self,
        request: tonic::Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let answer = self.ctx.call(Request::Hash).await?;
        match answer.reply {
            Reply::Hash { hash, revision } => Ok(Response::new(pb::HashResponse {
                header: Some(header_info(&answer.header).header(revision)),
                hash,
            })),
            other => Err(unexpected("Hash", &other)),
        }
    }

    async fn hash_kv(
        &self,
        request: tonic::Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let revision = Revision(request.into_inner().revision);
        let answer = self.ctx.call(Request::HashKv(revision)).await?;
        match answer.reply {
            Reply::HashKv(h) => Ok(Response::new(pb::HashKvResponse {
                header: Some(header_info(&answer.header).header(h.revision)),
                hash: h.hash,
                compact_revision: h.compact_revision.0,
            })),
            other => Err(unexpected("HashKV", &other)),
        }
    }

    async fn snapshot(
        &self,
        request: tonic::Request<pb::SnapshotRequest>,
    ) -> Result<Response<BoxStream<pb::SnapshotResponse>>, Status> {
        self.ctx.check_leader(&request)?;
        let leader_lost = self.ctx.leader_lost(&request);
        Ok(Response::new(until_leader_lost(self.snapshot_stream(), leader_lost)))
    }

    async fn move_leader(
        &self,
        request: tonic::Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.ctx.check_leader(&request)?;
        let target = NodeId(request.into_inner().target_id);
        let answer = self.ctx.call(Request::MoveLeader(target)).await?;
        match answer.reply {
            Reply::Done => Ok(Response::new(pb::MoveLeaderResponse {
                header: Some(
                    header_info(&answer.header).header(self.ctx.state().current_revision()),
                ),
            })),
            other => Err(unexpected("MoveLeader", &other)),
        }
    }
}
