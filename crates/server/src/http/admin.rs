//! ringkv's own administrative calls, which etcd's API has no room for,
//! on the HTTP side of the client port. Each answers JSON; a refusal is
//! `{"error": "<message>", "code": <gRPC code>}` with the HTTP status
//! etcd's gateway gives that code ([`http_status`]).
//!
//! | path | what |
//! | --- | --- |
//! | `GET /ringkv/v1/drain` | every member's data-shard replicas and drain flag ([`DrainStatus`]) |
//! | `POST /ringkv/v1/drain/<member id in hex>` | starts the member's drain |
//! | `DELETE /ringkv/v1/drain/<member id in hex>` | stops it |
//!
//! A drain makes placement leave the member out, so that every data shard
//! it holds moves to the other members (a learner added, caught up,
//! promoted; then the member's replica removed) before `MemberRemove`
//! (`ringkv ctl node decommission` starts one, waits for its replicas to
//! reach none, then removes the member). A member that does not move
//! replicas (no `--placement-moves`, or one shard) refuses all three:
//! every member holds every shard there.
//!
//! With auth enabled every call needs an administrator (the root role),
//! as `MemberRemove` does: the token `Authenticate` returned, in the
//! `Authorization` header (as the JSON gateway takes it). Without it the
//! answer is 401 or 403 with etcd's auth message. Starting and stopping
//! go through the metadata group's log (`ProposalBody::Drain`), checked
//! again by every replica; the status is this member's view of the
//! metadata group as applied (a follower may trail by a round trip).

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::routing::{get, post};
use ringkv_consensus::NodeId;
use ringkv_node::auth::{AccessCheck, AuthQuery};
use ringkv_node::{Credential, NodeError, Request as NodeRequest};
use serde::{Deserialize, Serialize};
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::api::EtcdError;
use crate::gateway::{AUTHORIZATION_HEADER, http_status};
use crate::services::Context;

/// The path of the drain status, and the prefix of a member's drain.
pub const DRAIN_PATH: &str = "/ringkv/v1/drain";

/// [`AdminError::reason`] of a member that does not move replicas, so
/// that a client can tell it from other refusals and carry on without a
/// drain.
pub const NO_PLACEMENT_MOVES: &str = "no_placement_moves";

/// Every member's data-shard replicas: `GET` [`DRAIN_PATH`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// The members, in id order.
    pub members: Vec<MemberDrain>,
}

/// One member's data-shard replicas and drain flag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDrain {
    /// The member id, 16 hex digits (as `ringkv ctl` prints ids).
    pub id: String,
    /// Its name (empty until it has started once).
    pub name: String,
    /// Whether it is being drained.
    pub draining: bool,
    /// The data shards it still holds a replica of, by the configurations
    /// their leaders last reported (a shard not reported yet counts).
    pub shards: Vec<u64>,
}

/// A refusal's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    /// What went wrong and what to do.
    pub error: String,
    /// The gRPC code the same refusal has on the etcd API.
    pub code: i32,
    /// A machine-readable reason where a client may act on it:
    /// [`NO_PLACEMENT_MOVES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The admin routes over the services' `ctx`.
pub fn router(ctx: Context) -> axum::Router {
    let status_ctx = ctx.clone();
    let stop_ctx = ctx.clone();
    axum::Router::new()
        .route(DRAIN_PATH, get(move |headers: HeaderMap| drain_status(status_ctx.clone(), headers)))
        .route(
            &format!("{DRAIN_PATH}/{{member}}"),
            post(move |headers: HeaderMap, Path(member): Path<String>| {
                drain(ctx.clone(), headers, member, true)
            })
            .delete(move |headers: HeaderMap, Path(member): Path<String>| {
                drain(stop_ctx.clone(), headers, member, false)
            }),
        )
}

/// What the request presents, as the gRPC services read it from metadata.
fn credential(ctx: &Context, headers: &HeaderMap) -> Credential {
    let mut metadata = MetadataMap::new();
    if let Some(token) = headers
        .get(AUTHORIZATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<MetadataValue<_>>().ok())
    {
        metadata.insert(crate::auth::AUTHORIZATION_METADATA, token);
    }
    ctx.authenticator().credential(&metadata, &tonic::Extensions::default())
}

/// The answer to a member that does not move replicas.
fn moves_off() -> Response<Body> {
    let status = Status::from(EtcdError::from(NodeError::DrainNeedsPlacementMoves));
    refusal_with(status, Some(NO_PLACEMENT_MOVES))
}

async fn drain_status(ctx: Context, headers: HeaderMap) -> Response<Body> {
    let Some(status) = ctx.state().drain_status() else { return moves_off() };
    if ctx.state().auth_enabled() {
        let check = NodeRequest::AuthQuery(AuthQuery::Check(AccessCheck::Admin));
        if let Err(e) = ctx.node().call_as(credential(&ctx, &headers), check).await {
            return refusal(Status::from(e));
        }
    }
    let names = ctx.state().members();
    let name = |id: NodeId| names.iter().find(|m| m.id == id).map(|m| m.name.clone());
    let members = status
        .into_iter()
        .map(|m| MemberDrain {
            id: format!("{:016x}", m.member.0),
            name: name(m.member).unwrap_or_default(),
            draining: m.draining,
            shards: m.shards.iter().map(|s| s.0).collect(),
        })
        .collect();
    json(StatusCode::OK, &DrainStatus { members })
}

async fn drain(ctx: Context, headers: HeaderMap, member: String, draining: bool) -> Response<Body> {
    if ctx.state().drain_status().is_none() {
        return moves_off();
    }
    let id = match u64::from_str_radix(member.trim_start_matches("0x"), 16) {
        Ok(id) if id != 0 => NodeId(id),
        _ => {
            let message = format!(
                "{member:?} is not a member id: give the id in hex, as `ringkv ctl node list` \
                 prints it"
            );
            return refusal(Status::invalid_argument(message));
        }
    };
    let request = NodeRequest::Drain { member: id, draining };
    match ctx.node().call_as(credential(&ctx, &headers), request).await {
        Ok(_) => json(
            StatusCode::OK,
            &serde_json::json!({ "id": format!("{:016x}", id.0), "draining": draining }),
        ),
        Err(e) => refusal(Status::from(e)),
    }
}

fn refusal(status: Status) -> Response<Body> {
    refusal_with(status, None)
}

fn refusal_with(status: Status, reason: Option<&str>) -> Response<Body> {
    let code = StatusCode::from_u16(http_status(status.code()))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = AdminError {
        error: status.message().to_owned(),
        code: status.code() as i32,
        reason: reason.map(str::to_owned),
    };
    json(code, &body)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("strings, numbers and lists serialize");
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
