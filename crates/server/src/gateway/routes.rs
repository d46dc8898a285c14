//! The route table: HTTP path → gRPC service and method, and the typed
//! request and response of each.
//!
//! One list ([`rpcs!`]) defines [`Rpc`], its paths, its gRPC names, and the
//! variants of [`GatewayRequest`] and [`GatewayResponse`], so they cannot
//! drift apart. The message descriptors come from `ringkv_api`'s
//! descriptor set by service and method name, so the JSON field names are
//! the `.proto` file's, never a copy.

use ringkv_api::{etcdserverpb as pb, v3electionpb as election, v3lockpb as lock};

use super::error::GatewayError;

/// How an RPC's messages flow, which decides its HTTP framing.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RpcKind {
    /// One request, one response: the body is the response message.
    Unary,
    /// One request, a stream of responses, each `{"result": …}` on a line.
    ServerStreaming,
    /// Requests are consecutive JSON objects in the request body; responses
    /// stream as for [`RpcKind::ServerStreaming`].
    BidiStreaming,
}

macro_rules! rpcs {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident {
            paths: [$($path:literal),+ $(,)?],
            service: $service:literal,
            method: $method:literal,
            kind: $kind:ident,
            request: $request:ty,
            response: $response:ty $(,)?
        }
    )*) => {
        /// An RPC the gateway serves.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Rpc {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Rpc {
            /// Every RPC the gateway serves.
            pub const ALL: &'static [Rpc] = &[$(Rpc::$variant,)*];

            /// Its HTTP paths (under `/v3/`; the first is the canonical
            /// one, the others etcd's aliases).
            pub fn paths(self) -> &'static [&'static str] {
                match self {
                    $(Rpc::$variant => &[$($path),+],)*
                }
            }

            /// The gRPC service's full name, e.g. `etcdserverpb.KV`.
            pub fn service(self) -> &'static str {
                match self {
                    $(Rpc::$variant => $service,)*
                }
            }

            /// The gRPC method's name, e.g. `Range`.
            pub fn method(self) -> &'static str {
                match self {
                    $(Rpc::$variant => $method,)*
                }
            }

            /// How its messages flow.
            pub fn kind(self) -> RpcKind {
                match self {
                    $(Rpc::$variant => RpcKind::$kind,)*
                }
            }
        }

        /// A decoded gateway request: the RPC's prost request message.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        pub enum GatewayRequest {
            $($(#[doc = $doc])* $variant($request),)*
        }

        impl GatewayRequest {
            /// The RPC this request is for.
            pub fn rpc(&self) -> Rpc {
                match self {
                    $(GatewayRequest::$variant(_) => Rpc::$variant,)*
                }
            }

            /// Converts a reflected message of `rpc`'s request type.
            pub(super) fn from_dynamic(
                rpc: Rpc,
                message: &prost_reflect::DynamicMessage,
            ) -> Result<GatewayRequest, prost::DecodeError> {
                Ok(match rpc {
                    $(Rpc::$variant => GatewayRequest::$variant(message.transcode_to()?),)*
                })
            }

            /// Copies this request into `message`, of this RPC's request type.
            pub(super) fn to_dynamic(
                &self,
                message: &mut prost_reflect::DynamicMessage,
            ) -> Result<(), prost::DecodeError> {
                match self {
                    $(GatewayRequest::$variant(m) => message.transcode_from(m),)*
                }
            }
        }

        /// A gateway response (or one message of a response stream): the
        /// RPC's prost response message.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        pub enum GatewayResponse {
            $($(#[doc = $doc])* $variant($response),)*
        }

        impl GatewayResponse {
            /// The RPC this response answers.
            pub fn rpc(&self) -> Rpc {
                match self {
                    $(GatewayResponse::$variant(_) => Rpc::$variant,)*
                }
            }

            /// Converts a reflected message of `rpc`'s response type.
            pub(super) fn from_dynamic(
                rpc: Rpc,
                message: &prost_reflect::DynamicMessage,
            ) -> Result<GatewayResponse, prost::DecodeError> {
                Ok(match rpc {
                    $(Rpc::$variant => GatewayResponse::$variant(message.transcode_to()?),)*
                })
            }

            /// Copies this response into `message`, of this RPC's response type.
            pub(super) fn to_dynamic(
                &self,
                message: &mut prost_reflect::DynamicMessage,
            ) -> Result<(), prost::DecodeError> {
                match self {
                    $(GatewayResponse::$variant(m) => message.transcode_from(m),)*
                }
            }
        }
    };
}

rpcs! {
    /// `KV.Range`
    KvRange {
        paths: ["/v3/kv/range"], service: "etcdserverpb.KV", method: "Range", kind: Unary,
        request: pb::RangeRequest, response: pb::RangeResponse,
    }
    /// `KV.Put`
    KvPut {
        paths: ["/v3/kv/put"], service: "etcdserverpb.KV", method: "Put", kind: Unary,
        request: pb::PutRequest, response: pb::PutResponse,
    }
    /// `KV.DeleteRange`
    KvDeleteRange {
        paths: ["/v3/kv/deleterange"], service: "etcdserverpb.KV", method: "DeleteRange",
        kind: Unary, request: pb::DeleteRangeRequest, response: pb::DeleteRangeResponse,
    }
    /// `KV.Txn`
    KvTxn {
        paths: ["/v3/kv/txn"], service: "etcdserverpb.KV", method: "Txn", kind: Unary,
        request: pb::TxnRequest, response: pb::TxnResponse,
    }
    /// `KV.Compact`
    KvCompact {
        paths: ["/v3/kv/compaction"], service: "etcdserverpb.KV", method: "Compact",
        kind: Unary, request: pb::CompactionRequest, response: pb::CompactionResponse,
    }
    /// `Watch.Watch`
    Watch {
        paths: ["/v3/watch"], service: "etcdserverpb.Watch", method: "Watch",
        kind: BidiStreaming, request: pb::WatchRequest, response: pb::WatchResponse,
    }
    /// `Lease.LeaseGrant`
    LeaseGrant {
        paths: ["/v3/lease/grant"], service: "etcdserverpb.Lease", method: "LeaseGrant",
        kind: Unary, request: pb::LeaseGrantRequest, response: pb::LeaseGrantResponse,
    }
    /// `Lease.LeaseRevoke`
    LeaseRevoke {
        paths: ["/v3/lease/revoke", "/v3/kv/lease/revoke"], service: "etcdserverpb.Lease",
        method: "LeaseRevoke", kind: Unary,
        request: pb::LeaseRevokeRequest, response: pb::LeaseRevokeResponse,
    }
    /// `Lease.LeaseKeepAlive`
    LeaseKeepAlive {
        paths: ["/v3/lease/keepalive"], service: "etcdserverpb.Lease",
        method: "LeaseKeepAlive", kind: BidiStreaming,
        request: pb::LeaseKeepAliveRequest, response: pb::LeaseKeepAliveResponse,
    }
    /// `Lease.LeaseTimeToLive`
    LeaseTimeToLive {
        paths: ["/v3/lease/timetolive", "/v3/kv/lease/timetolive"],
        service: "etcdserverpb.Lease", method: "LeaseTimeToLive", kind: Unary,
        request: pb::LeaseTimeToLiveRequest, response: pb::LeaseTimeToLiveResponse,
    }
    /// `Lease.LeaseLeases`
    LeaseLeases {
        paths: ["/v3/lease/leases", "/v3/kv/lease/leases"], service: "etcdserverpb.Lease",
        method: "LeaseLeases", kind: Unary,
        request: pb::LeaseLeasesRequest, response: pb::LeaseLeasesResponse,
    }
    /// `Cluster.MemberAdd`
    MemberAdd {
        paths: ["/v3/cluster/member/add"], service: "etcdserverpb.Cluster",
        method: "MemberAdd", kind: Unary,
        request: pb::MemberAddRequest, response: pb::MemberAddResponse,
    }
    /// `Cluster.MemberRemove`
    MemberRemove {
        paths: ["/v3/cluster/member/remove"], service: "etcdserverpb.Cluster",
        method: "MemberRemove", kind: Unary,
        request: pb::MemberRemoveRequest, response: pb::MemberRemoveResponse,
    }
    /// `Cluster.MemberUpdate`
    MemberUpdate {
        paths: ["/v3/cluster/member/update"], service: "etcdserverpb.Cluster",
        method: "MemberUpdate", kind: Unary,
        request: pb::MemberUpdateRequest, response: pb::MemberUpdateResponse,
    }
    /// `Cluster.MemberList`
    MemberList {
        paths: ["/v3/cluster/member/list"], service: "etcdserverpb.Cluster",
        method: "MemberList", kind: Unary,
        request: pb::MemberListRequest, response: pb::MemberListResponse,
    }
    /// `Cluster.MemberPromote`
    MemberPromote {
        paths: ["/v3/cluster/member/promote"], service: "etcdserverpb.Cluster",
        method: "MemberPromote", kind: Unary,
        request: pb::MemberPromoteRequest, response: pb::MemberPromoteResponse,
    }
    /// `Maintenance.Alarm`
    Alarm {
        paths: ["/v3/maintenance/alarm"], service: "etcdserverpb.Maintenance",
        method: "Alarm", kind: Unary, request: pb::AlarmRequest, response: pb::AlarmResponse,
    }
    /// `Maintenance.Status`
    Status {
        paths: ["/v3/maintenance/status"], service: "etcdserverpb.Maintenance",
        method: "Status", kind: Unary, request: pb::StatusRequest, response: pb::StatusResponse,
    }
    /// `Maintenance.Defragment`
    Defragment {
        paths: ["/v3/maintenance/defragment"], service: "etcdserverpb.Maintenance",
        method: "Defragment", kind: Unary,
        request: pb::DefragmentRequest, response: pb::DefragmentResponse,
    }
    /// `Maintenance.Hash`
    Hash {
        paths: ["/v3/maintenance/hash"], service: "etcdserverpb.Maintenance",
        method: "Hash", kind: Unary, request: pb::HashRequest, response: pb::HashResponse,
    }
    /// `Maintenance.HashKV` (etcd 3.5's route; 3.4 mapped it to `/hash` too)
    HashKv {
        paths: ["/v3/maintenance/hashkv"], service: "etcdserverpb.Maintenance",
        method: "HashKV", kind: Unary, request: pb::HashKvRequest, response: pb::HashKvResponse,
    }
    /// `Maintenance.Snapshot`
    Snapshot {
        paths: ["/v3/maintenance/snapshot"], service: "etcdserverpb.Maintenance",
        method: "Snapshot", kind: ServerStreaming,
        request: pb::SnapshotRequest, response: pb::SnapshotResponse,
    }
    /// `Maintenance.MoveLeader`
    MoveLeader {
        paths: ["/v3/maintenance/transfer-leadership"], service: "etcdserverpb.Maintenance",
        method: "MoveLeader", kind: Unary,
        request: pb::MoveLeaderRequest, response: pb::MoveLeaderResponse,
    }
    /// `Maintenance.Downgrade` (3.5)
    Downgrade {
        paths: ["/v3/maintenance/downgrade"], service: "etcdserverpb.Maintenance",
        method: "Downgrade", kind: Unary,
        request: pb::DowngradeRequest, response: pb::DowngradeResponse,
    }
    /// `Auth.AuthEnable`
    AuthEnable {
        paths: ["/v3/auth/enable"], service: "etcdserverpb.Auth", method: "AuthEnable",
        kind: Unary, request: pb::AuthEnableRequest, response: pb::AuthEnableResponse,
    }
    /// `Auth.AuthDisable`
    AuthDisable {
        paths: ["/v3/auth/disable"], service: "etcdserverpb.Auth", method: "AuthDisable",
        kind: Unary, request: pb::AuthDisableRequest, response: pb::AuthDisableResponse,
    }
    /// `Auth.AuthStatus` (3.5)
    AuthStatus {
        paths: ["/v3/auth/status"], service: "etcdserverpb.Auth", method: "AuthStatus",
        kind: Unary, request: pb::AuthStatusRequest, response: pb::AuthStatusResponse,
    }
    /// `Auth.Authenticate`
    Authenticate {
        paths: ["/v3/auth/authenticate"], service: "etcdserverpb.Auth",
        method: "Authenticate", kind: Unary,
        request: pb::AuthenticateRequest, response: pb::AuthenticateResponse,
    }
    /// `Auth.UserAdd`
    UserAdd {
        paths: ["/v3/auth/user/add"], service: "etcdserverpb.Auth", method: "UserAdd",
        kind: Unary, request: pb::AuthUserAddRequest, response: pb::AuthUserAddResponse,
    }
    /// `Auth.UserGet`
    UserGet {
        paths: ["/v3/auth/user/get"], service: "etcdserverpb.Auth", method: "UserGet",
        kind: Unary, request: pb::AuthUserGetRequest, response: pb::AuthUserGetResponse,
    }
    /// `Auth.UserList`
    UserList {
        paths: ["/v3/auth/user/list"], service: "etcdserverpb.Auth", method: "UserList",
        kind: Unary, request: pb::AuthUserListRequest, response: pb::AuthUserListResponse,
    }
    /// `Auth.UserDelete`
    UserDelete {
        paths: ["/v3/auth/user/delete"], service: "etcdserverpb.Auth", method: "UserDelete",
        kind: Unary, request: pb::AuthUserDeleteRequest, response: pb::AuthUserDeleteResponse,
    }
    /// `Auth.UserChangePassword`
    UserChangePassword {
        paths: ["/v3/auth/user/changepw"], service: "etcdserverpb.Auth",
        method: "UserChangePassword", kind: Unary,
        request: pb::AuthUserChangePasswordRequest,
        response: pb::AuthUserChangePasswordResponse,
    }
    /// `Auth.UserGrantRole`
    UserGrantRole {
        paths: ["/v3/auth/user/grant"], service: "etcdserverpb.Auth",
        method: "UserGrantRole", kind: Unary,
        request: pb::AuthUserGrantRoleRequest, response: pb::AuthUserGrantRoleResponse,
    }
    /// `Auth.UserRevokeRole`
    UserRevokeRole {
        paths: ["/v3/auth/user/revoke"], service: "etcdserverpb.Auth",
        method: "UserRevokeRole", kind: Unary,
        request: pb::AuthUserRevokeRoleRequest, response: pb::AuthUserRevokeRoleResponse,
    }
    /// `Auth.RoleAdd`
    RoleAdd {
        paths: ["/v3/auth/role/add"], service: "etcdserverpb.Auth", method: "RoleAdd",
        kind: Unary, request: pb::AuthRoleAddRequest, response: pb::AuthRoleAddResponse,
    }
    /// `Auth.RoleGet`
    RoleGet {
        paths: ["/v3/auth/role/get"], service: "etcdserverpb.Auth", method: "RoleGet",
        kind: Unary, request: pb::AuthRoleGetRequest, response: pb::AuthRoleGetResponse,
    }
    /// `Auth.RoleList`
    RoleList {
        paths: ["/v3/auth/role/list"], service: "etcdserverpb.Auth", method: "RoleList",
        kind: Unary, request: pb::AuthRoleListRequest, response: pb::AuthRoleListResponse,
    }
    /// `Auth.RoleDelete`
    RoleDelete {
        paths: ["/v3/auth/role/delete"], service: "etcdserverpb.Auth", method: "RoleDelete",
        kind: Unary, request: pb::AuthRoleDeleteRequest, response: pb::AuthRoleDeleteResponse,
    }
    /// `Auth.RoleGrantPermission`
    RoleGrantPermission {
        paths: ["/v3/auth/role/grant"], service: "etcdserverpb.Auth",
        method: "RoleGrantPermission", kind: Unary,
        request: pb::AuthRoleGrantPermissionRequest,
        response: pb::AuthRoleGrantPermissionResponse,
    }
    /// `Auth.RoleRevokePermission`
    RoleRevokePermission {
        paths: ["/v3/auth/role/revoke"], service: "etcdserverpb.Auth",
        method: "RoleRevokePermission", kind: Unary,
        request: pb::AuthRoleRevokePermissionRequest,
        response: pb::AuthRoleRevokePermissionResponse,
    }
    /// `Lock.Lock`
    Lock {
        paths: ["/v3/lock/lock"], service: "v3lockpb.Lock", method: "Lock", kind: Unary,
        request: lock::LockRequest, response: lock::LockResponse,
    }
    /// `Lock.Unlock`
    Unlock {
        paths: ["/v3/lock/unlock"], service: "v3lockpb.Lock", method: "Unlock", kind: Unary,
        request: lock::UnlockRequest, response: lock::UnlockResponse,
    }
    /// `Election.Campaign`
    Campaign {
        paths: ["/v3/election/campaign"], service: "v3electionpb.Election",
        method: "Campaign", kind: Unary,
        request: election::CampaignRequest, response: election::CampaignResponse,
    }
    /// `Election.Proclaim`
    Proclaim {
        paths: ["/v3/election/proclaim"], service: "v3electionpb.Election",
        method: "Proclaim", kind: Unary,
        request: election::ProclaimRequest, response: election::ProclaimResponse,
    }
    /// `Election.Leader`
    Leader {
        paths: ["/v3/election/leader"], service: "v3electionpb.Election", method: "Leader",
        kind: Unary, request: election::LeaderRequest, response: election::LeaderResponse,
    }
    /// `Election.Observe`
    Observe {
        paths: ["/v3/election/observe"], service: "v3electionpb.Election",
        method: "Observe", kind: ServerStreaming,
        request: election::LeaderRequest, response: election::LeaderResponse,
    }
    /// `Election.Resign`
    Resign {
        paths: ["/v3/election/resign"], service: "v3electionpb.Election", method: "Resign",
        kind: Unary, request: election::ResignRequest, response: election::ResignResponse,
    }
}

/// The prefix of every route.
const PREFIX: &str = "/v3/";

/// etcd 3.3's prefix, which etcd still accepts by rewriting it to
/// [`PREFIX`]. (3.2's `/v3alpha/` is gone since 3.5 and not served.)
const PREFIX_BETA: &str = "/v3beta/";

/// The HTTP method of every route.
pub const METHOD: &str = "POST";

/// The RPC served at `path` for HTTP `method`. A query string is ignored;
/// `/v3beta/...` is served as `/v3/...`, as etcd does.
///
/// # Errors
/// [`GatewayError::UnknownPath`] if no route has the path (whatever the
/// method), [`GatewayError::MethodNotAllowed`] if one has but the method is
/// not `POST`. A CORS preflight (`OPTIONS`) is the HTTP layer's to answer
/// before routing; see [`super::CORS_HEADERS`].
pub fn route(method: &str, path: &str) -> Result<Rpc, GatewayError> {
    let path = path.split_once('?').map_or(path, |(path, _query)| path);
    let rest = path.strip_prefix(PREFIX).or_else(|| path.strip_prefix(PREFIX_BETA));
    let rpc = rest.and_then(|rest| {
        Rpc::ALL
            .iter()
            .copied()
            .find(|rpc| rpc.paths().iter().any(|p| p.strip_prefix(PREFIX) == Some(rest)))
    });
    let Some(rpc) = rpc else {
        return Err(GatewayError::UnknownPath { path: path.to_owned() });
    };
    if method != METHOD {
        return Err(GatewayError::MethodNotAllowed { method: method.to_owned(), rpc });
    }
    Ok(rpc)
}
