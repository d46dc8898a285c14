//! Serves etcd's JSON gateway: routes a `POST /v3/…` request with
//! [`crate::gateway::route`], decodes its body, calls the same service
//! implementation the gRPC clients reach, and encodes the answer (see
//! [`crate::gateway`] for the JSON rules and error shapes).
//!
//! Streaming RPCs answer with one `{"result":…}` line per message.
//! Bidirectional ones (watch, lease keep-alive) read requests from the
//! request body as it arrives (consecutive JSON objects) and hand them to
//! the service as a gRPC request stream, so every implementation of the
//! service trait works here unchanged, the watch module's included.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use ringkv_api::etcdserverpb::auth_server::Auth;
use ringkv_api::etcdserverpb::cluster_server::Cluster;
use ringkv_api::etcdserverpb::kv_server::Kv;
use ringkv_api::etcdserverpb::lease_server::Lease;
use ringkv_api::etcdserverpb::maintenance_server::Maintenance;
use ringkv_api::etcdserverpb::watch_server::Watch;
use ringkv_api::v3electionpb::election_server::Election;
use ringkv_api::v3lockpb::lock_server::Lock;
use tokio::sync::mpsc;
use tonic::codec::Codec;
use tonic::codegen::BoxStream;
use tonic::{Code, Status};

use crate::gateway::{
    AUTHORIZATION_HEADER, CORS_HEADERS, GatewayError, GatewayRequest as Req,
    GatewayResponse as Resp, HttpReply, RequestStream, Rpc, RpcKind, decode_request, encode_error,
    encode_response, encode_stream_error, encode_stream_message, http_status, route,
};
use crate::runtime::NodeState;
use crate::services::{
    AuthService, ClusterService, ElectionService, KvService, LeaseService, LockService,
    MaintenanceService, check_learner,
};

/// Requests a bidirectional gateway stream buffers ahead of the service.
pub const GATEWAY_STREAM_REQUESTS_QUEUED_MAX: usize = 16;

/// The service implementations the gateway dispatches to.
#[derive(Clone)]
pub struct Services {
    /// `etcdserverpb.KV`.
    pub kv: Arc<KvService>,
    /// `etcdserverpb.Lease`.
    pub lease: Arc<LeaseService>,
    /// `etcdserverpb.Cluster`.
    pub cluster: Arc<ClusterService>,
    /// `etcdserverpb.Maintenance`.
    pub maintenance: Arc<MaintenanceService>,
    /// `v3lockpb.Lock`.
    pub lock: Arc<LockService>,
    /// `v3electionpb.Election`.
    pub election: Arc<ElectionService>,
    /// `etcdserverpb.Auth`.
    pub auth: Arc<AuthService>,
    /// `etcdserverpb.Watch`.
    pub watch: Arc<dyn Watch>,
    /// Largest request body (or streamed request object), in bytes.
    pub body_bytes_max: usize,
    /// The node's published state: whether this member is a learner.
    pub state: Arc<NodeState>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// Answers one gateway request.
pub async fn serve(services: Services, request: Request<Body>) -> Response<Body> {
    if request.method() == Method::OPTIONS {
        return with_cors(Response::new(Body::empty()));
    }
    let rpc = match route(request.method().as_str(), request.uri().path()) {
        Ok(rpc) => rpc,
        Err(e) => return reply(e.reply()),
    };
    // etcd's gateway forwards to its gRPC server, whose interceptor
    // applies the learner rule; these calls skip the gRPC routes.
    if let Err(refused) = check_learner(&services.state, rpc.service(), rpc.method()) {
        let status = Status::from(refused);
        return with_cors(reply(encode_error(status.code(), status.message())));
    }
    let token = request.headers().get(AUTHORIZATION_HEADER).cloned();
    let body = request.into_body();
    let response = match rpc.kind() {
        RpcKind::Unary => unary(&services, rpc, body, token).await,
        RpcKind::ServerStreaming => match read_body(body, services.body_bytes_max, rpc).await {
            Err(e) => reply(e.reply()),
            Ok(req) => stream_response(server_stream(&services, req, token).await).await,
        },
        RpcKind::BidiStreaming => {
            stream_response(bidi_stream(&services, rpc, body, token).await).await
        }
    };
    with_cors(response)
}

async fn read_body(body: Body, limit: usize, rpc: Rpc) -> Result<Req, GatewayError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| GatewayError::BodyTooLarge { limit_bytes: limit })?;
    decode_request(rpc, &bytes)
}

fn grpc_request<T>(message: T, token: Option<&HeaderValue>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token.and_then(|t| t.to_str().ok()).and_then(|t| t.parse().ok()) {
        request.metadata_mut().insert("token", token);
    }
    request
}

async fn unary(
    services: &Services,
    rpc: Rpc,
    body: Body,
    token: Option<HeaderValue>,
) -> Response<Body> {
    let req = match read_body(body, services.body_bytes_max, rpc).await {
        Ok(req) => req,
        Err(e) => return reply(e.reply()),
    };
    match call_unary(services, req, token.as_ref()).await {
        Ok(resp) => match encode_response(&resp) {
            Ok(json) => reply(HttpReply {
                status: 200,
                content_type: crate::gateway::CONTENT_TYPE_JSON,
                body: json,
            }),
            Err(e) => reply(e.reply()),
        },
        Err(status) => reply(encode_error(status.code(), status.message())),
    }
}

/// Calls the service a unary request is for.
async fn call_unary(s: &Services, req: Req, token: Option<&HeaderValue>) -> Result<Resp, Status> {
    macro_rules! call {
        ($service:expr, $method:ident, $message:expr, $variant:ident) => {
            $service
                .$method(grpc_request($message, token))
                .await
                .map(|r| Resp::$variant(r.into_inner()))
        };
    }
    match req {
        Req::KvRange(m) => call!(s.kv, range, m, KvRange),
        Req::KvPut(m) => call!(s.kv, put, m, KvPut),
        Req::KvDeleteRange(m) => call!(s.kv, delete_range, m, KvDeleteRange),
        Req::KvTxn(m) => call!(s.kv, txn, m, KvTxn),
        Req::KvCompact(m) => call!(s.kv, compact, m, KvCompact),
        Req::LeaseGrant(m) => call!(s.lease, lease_grant, m, LeaseGrant),
        Req::LeaseRevoke(m) => call!(s.lease, lease_revoke, m, LeaseRevoke),
        Req::LeaseTimeToLive(m) => call!(s.lease, lease_time_to_live, m, LeaseTimeToLive),
        Req::LeaseLeases(m) => call!(s.lease, lease_leases, m, LeaseLeases),
        Req::MemberAdd(m) => call!(s.cluster, member_add, m, MemberAdd),
        Req::MemberRemove(m) => call!(s.cluster, member_remove, m, MemberRemove),
        Req::MemberUpdate(m) => call!(s.cluster, member_update, m, MemberUpdate),
        Req::MemberList(m) => call!(s.cluster, member_list, m, MemberList),
        Req::MemberPromote(m) => call!(s.cluster, member_promote, m, MemberPromote),
        Req::Alarm(m) => call!(s.maintenance, alarm, m, Alarm),
        Req::Status(m) => call!(s.maintenance, status, m, Status),
        Req::Defragment(m) => call!(s.maintenance, defragment, m, Defragment),
        Req::Hash(m) => call!(s.maintenance, hash, m, Hash),
        Req::HashKv(m) => call!(s.maintenance, hash_kv, m, HashKv),
        Req::MoveLeader(m) => call!(s.maintenance, move_leader, m, MoveLeader),
        Req::Downgrade(m) => call!(s.maintenance, downgrade, m, Downgrade),
        Req::Lock(m) => call!(s.lock, lock, m, Lock),
        Req::Unlock(m) => call!(s.lock, unlock, m, Unlock),
        Req::Campaign(m) => call!(s.election, campaign, m, Campaign),
        Req::Proclaim(m) => call!(s.election, proclaim, m, Proclaim),
        Req::Leader(m) => call!(s.election, leader, m, Leader),
        Req::Resign(m) => call!(s.election, resign, m, Resign),
        Req::AuthEnable(m) => call!(s.auth, auth_enable, m, AuthEnable),
        Req::AuthDisable(m) => call!(s.auth, auth_disable, m, AuthDisable),
        Req::AuthStatus(m) => call!(s.auth, auth_status, m, AuthStatus),
        Req::Authenticate(m) => call!(s.auth, authenticate, m, Authenticate),
        Req::UserAdd(m) => call!(s.auth, user_add, m, UserAdd),
        Req::UserGet(m) => call!(s.auth, user_get, m, UserGet),
        Req::UserList(m) => call!(s.auth, user_list, m, UserList),
        Req::UserDelete(m) => call!(s.auth, user_delete, m, UserDelete),
        Req::UserChangePassword(m) => call!(s.auth, user_change_password, m, UserChangePassword),
        Req::UserGrantRole(m) => call!(s.auth, user_grant_role, m, UserGrantRole),
        Req::UserRevokeRole(m) => call!(s.auth, user_revoke_role, m, UserRevokeRole),
        Req::RoleAdd(m) => call!(s.auth, role_add, m, RoleAdd),
        Req::RoleGet(m) => call!(s.auth, role_get, m, RoleGet),
        Req::RoleList(m) => call!(s.auth, role_list, m, RoleList),
        Req::RoleDelete(m) => call!(s.auth, role_delete, m, RoleDelete),
        Req::RoleGrantPermission(m) => {
            call!(s.auth, role_grant_permission, m, RoleGrantPermission)
        }
        Req::RoleRevokePermission(m) => {
            call!(s.auth, role_revoke_permission, m, RoleRevokePermission)
        }
        other => Err(Status::unimplemented(format!(
            "ringkv does not implement {} yet",
            other.rpc().method()
        ))),
    }
}

type ResponseStream = BoxStream<Resp>;

fn mapped<T: Send + 'static>(stream: BoxStream<T>, wrap: fn(T) -> Resp) -> ResponseStream {
    Box::pin(stream.map(move |item| item.map(wrap)))
}

async fn server_stream(
    s: &Services,
    req: Req,
    token: Option<HeaderValue>,
) -> Result<ResponseStream, Status> {
    let token = token.as_ref();
    match req {
        Req::Snapshot(m) => {
            let stream = s.maintenance.snapshot(grpc_request(m, token)).await?.into_inner();
            Ok(mapped(stream, Resp::Snapshot))
        }
        Req::Observe(m) => {
            let stream = s.election.observe(grpc_request(m, token)).await?.into_inner();
            Ok(mapped(stream, Resp::Observe))
        }
        other => Err(Status::internal(format!("{:?} is not a server stream", other.rpc()))),
    }
}

/// Starts a bidirectional stream: the body's JSON objects become the
/// service's request stream.
async fn bidi_stream(
    s: &Services,
    rpc: Rpc,
    body: Body,
    token: Option<HeaderValue>,
) -> Result<ResponseStream, Status> {
    let (tx, rx) = mpsc::channel::<Req>(GATEWAY_STREAM_REQUESTS_QUEUED_MAX);
    let (error_tx, mut error_rx) = mpsc::channel::<GatewayError>(1);
    let limit = s.body_bytes_max;
    tokio::spawn(async move {
        let mut parser = RequestStream::new(rpc, limit);
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let Ok(chunk) = chunk else { return };
            match parser.push(&chunk) {
                Ok(requests) => {
                    for request in requests {
                        if tx.send(request).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = error_tx.send(e).await;
                    return;
                }
            }
        }
        if let Err(e) = parser.finish() {
            let _ = error_tx.send(e).await;
        }
    });
    let token = token.as_ref();
    let stream: ResponseStream = match rpc {
        Rpc::LeaseKeepAlive => {
            let requests = grpc_streaming(rx, |r| match r {
                Req::LeaseKeepAlive(m) => Some(m),
                _ => None,
            });
            let stream =
                s.lease.lease_keep_alive(grpc_request(requests, token)).await?.into_inner();
            mapped(stream, Resp::LeaseKeepAlive)
        }
        Rpc::Watch => {
            let requests = grpc_streaming(rx, |r| match r {
                Req::Watch(m) => Some(m),
                _ => None,
            });
            let stream = s.watch.watch(grpc_request(requests, token)).await?.into_inner();
            mapped(stream, Resp::Watch)
        }
        other => return Err(Status::internal(format!("{other:?} is not a bidirectional stream"))),
    };
    // A malformed request object ends the stream with its error.
    let errors = futures_util::stream::once(async move { error_rx.recv().await })
        .filter_map(|e| async move { e.map(|e| Err(gateway_status(&e))) });
    Ok(Box::pin(futures_util::stream::select(stream, errors)))
}

fn gateway_status(e: &GatewayError) -> Status {
    Status::new(e.code().unwrap_or(Code::InvalidArgument), e.to_string())
}

/// A gRPC request stream (as tonic hands it to a service) carrying what
/// `rx` receives: each message framed as on the wire and decoded by
/// tonic's own decoder, so the service cannot tell it from a gRPC client.
fn grpc_streaming<T>(rx: mpsc::Receiver<Req>, pick: fn(Req) -> Option<T>) -> tonic::Streaming<T>
where
    T: prost::Message + Default + Send + 'static,
{
    let frames = futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            let request = rx.recv().await?;
            let Some(message) = pick(request) else { continue };
            let len = message.encoded_len();
            let mut frame = BytesMut::with_capacity(5 + len);
            frame.put_u8(0);
            frame.put_u32(u32::try_from(len).expect("gateway requests are far below 4 GiB"));
            message.encode(&mut frame).expect("the buffer has room for the message");
            return Some((Ok::<Bytes, Infallible>(frame.freeze()), rx));
        }
    });
    let mut codec = tonic_prost::ProstCodec::<T, T>::default();
    tonic::Streaming::new_request(codec.decoder(), Body::from_stream(frames), None, None)
}

/// Sends a response stream as newline-separated `{"result":…}` objects; a
/// failure becomes the stream's last object (and the HTTP status, if it is
/// the first thing to send).
async fn stream_response(stream: Result<ResponseStream, Status>) -> Response<Body> {
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(status) => return stream_error_response(&status),
    };
    let first = stream.next().await;
    let first = match first {
        None => return chunked(Box::pin(futures_util::stream::empty())),
        Some(Err(status)) => return stream_error_response(&status),
        Some(Ok(first)) => first,
    };
    let rest = futures_util::stream::unfold((stream, false), |(mut stream, done)| async move {
        if done {
            return None;
        }
        match stream.next().await? {
            Ok(message) => Some((encode_line(&message), (stream, false))),
            Err(status) => {
                Some((encode_stream_error(status.code(), status.message()), (stream, true)))
            }
        }
    });
    let all = futures_util::stream::once(async move { encode_line(&first) }).chain(rest);
    chunked(Box::pin(all))
}

fn encode_line(message: &Resp) -> Vec<u8> {
    encode_stream_message(message).unwrap_or_else(|e| {
        let code = e.code().unwrap_or(Code::Internal);
        encode_stream_error(code, &e.to_string())
    })
}

fn chunked(body: std::pin::Pin<Box<dyn Stream<Item = Vec<u8>> + Send>>) -> Response<Body> {
    let body = Body::from_stream(body.map(Ok::<Vec<u8>, Infallible>));
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::gateway::CONTENT_TYPE_JSON));
    response
}

fn stream_error_response(status: &Status) -> Response<Body> {
    let body = encode_stream_error(status.code(), status.message());
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(http_status(status.code()))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::gateway::CONTENT_TYPE_JSON));
    response
}

fn reply(r: HttpReply) -> Response<Body> {
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    response
}

fn with_cors(mut response: Response<Body>) -> Response<Body> {
    for (name, value) in CORS_HEADERS {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    response
}
