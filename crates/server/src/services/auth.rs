//! `etcdserverpb.Auth`: enable, disable, status, authenticate, and user
//! and role management.
//!
//! Changes go through the log ([`ringkv_node::AuthChange`]) and queries are
//! answered linearizably ([`ringkv_node::AuthQuery`]); the node checks the
//! caller's rights (root for everything but `Authenticate`, a user's own
//! record and roles). Passwords are hashed here before a change is
//! proposed, and verified here on `Authenticate`; see [`crate::auth`].

use std::time::Instant;

use bytes::Bytes;
use ringkv_api::authpb;
use ringkv_api::etcdserverpb::{self as pb, auth_server::Auth};
use ringkv_node::auth::{AuthQuery, LoginInfo, Permission, PermissionType};
use ringkv_node::{AuthChange, AuthReply, Header, Reply, Request};
use tonic::{Response, Status};
use tracing::{info, warn};

use super::{Context, header_info, unexpected};
use crate::api::EtcdError;
use crate::auth::{AUTH_FAILURE_ANSWER_MIN, AUTHENTICATE_ATTEMPTS_MAX, Authenticator, password};

/// The Auth service.
#[derive(Clone, Debug)]
pub struct AuthService {
    ctx: Context,
}

impl AuthService {
    /// The service over `ctx`.
    pub fn new(ctx: Context) -> AuthService {
        AuthService { ctx }
    }

    fn header(&self, answer: &crate::runtime::Answer) -> Option<pb::ResponseHeader> {
        Some(header_info(&answer.header).header(self.ctx.state().current_revision()))
    }

    /// Proposes a change for the caller of `request`; returns the header.
    async fn change<T>(
        &self,
        request: &tonic::Request<T>,
        change: AuthChange,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        let what = change_name(&change);
        let answer = self.ctx.for_request(request).call(Request::AuthChange(change)).await?;
        match &answer.reply {
            Reply::Auth(AuthReply::Changed) => Ok(self.header(&answer)),
            other => Err(unexpected(what, other)),
        }
    }

    /// Asks a question for the caller of `request`.
    async fn query<T>(
        &self,
        request: &tonic::Request<T>,
        query: AuthQuery,
    ) -> Result<(Option<pb::ResponseHeader>, AuthReply), Status> {
        let answer = self.ctx.for_request(request).call(Request::AuthQuery(query)).await?;
        let header = self.header(&answer);
        match answer.reply {
            Reply::Auth(reply) => Ok((header, reply)),
            other => Err(unexpected("an auth query", &other)),
        }
    }

    /// The hash to store for a new password: the client's own bcrypt hash
    /// (etcd 3.5's `hashedPassword`), or the password hashed here.
    async fn password_hash(&self, password: String, hashed: &str) -> Result<String, Status> {
        if !hashed.is_empty() {
            return Ok(password::from_client(hashed)?);
        }
        Ok(self.ctx.authenticator().hash_password(password).await?)
    }

    /// One attempt at `Authenticate` once the password verified: the token
    /// (and the header of the answer that issued it, if one did).
    async fn issue(
        &self,
        login: &LoginInfo,
        name: &str,
    ) -> Result<(String, Option<Header>), EtcdError> {
        let auth = self.ctx.authenticator();
        if let Some(signed) = auth.sign(name, login.revision) {
            return signed
                .map(|t| (t, None))
                .map_err(|e| EtcdError::Unknown { message: format!("ringkv: {e}") });
        }
        let change = AuthChange::IssueToken {
            user: name.to_owned(),
            token: Authenticator::new_simple_token(),
            checked_revision: login.revision,
        };
        // Issued anonymously: the token is what this call is for.
        let answer = self.ctx.node().call(Request::AuthChange(change)).await?;
        match answer.reply {
            Reply::Auth(AuthReply::Token(t)) => Ok((t, Some(answer.header))),
            other => Err(EtcdError::Unknown {
                message: format!("ringkv: internal error: Authenticate answered {other:?}"),
            }),
        }
    }

    async fn login(&self, name: &str) -> Result<(LoginInfo, Header), EtcdError> {
        let q = Request::AuthQuery(AuthQuery::Login { name: name.to_owned() });
        let answer = self.ctx.node().call(q).await?;
        match answer.reply {
            Reply::Auth(AuthReply::Login(l)) => Ok((l, answer.header)),
            other => Err(EtcdError::Unknown {
                message: format!("ringkv: internal error: a login lookup answered {other:?}"),
            }),
        }
    }

    async fn authenticate_once(
        &self,
        name: &str,
        password: &str,
        addr: Option<std::net::IpAddr>,
    ) -> Result<Result<(String, Header), EtcdError>, EtcdError> {
        let auth = self.ctx.authenticator();
        let (login, header) = self.login(name).await?;
        if !login.enabled {
            return Err(EtcdError::AuthNotEnabled);
        }
        auth.prepare().await;
        let matched = auth.verify_password(password.to_owned(), login.password_hash.clone()).await;
        auth.login_done(name, addr, matched);
        if !matched {
            warn!(user = %name, client = ?addr, "authentication failed: wrong user or password");
            return Err(EtcdError::AuthFailed);
        }
        match self.issue(&login, name).await {
            // The store changed since the check (the password may have):
            // check again.
            Err(EtcdError::AuthOldRevision) => Ok(Err(EtcdError::AuthOldRevision)),
            Err(e) => Err(e),
            Ok((token, issued)) => Ok(Ok((token, issued.unwrap_or(header)))),
        }
    }
}

fn change_name(change: &AuthChange) -> &'static str {
    match change {
        AuthChange::Enable => "AuthEnable",
        AuthChange::Disable => "AuthDisable",
        AuthChange::UserAdd { .. } => "UserAdd",
        AuthChange::UserDelete { .. } => "UserDelete",
        AuthChange::UserChangePassword { .. } => "UserChangePassword",
        AuthChange::UserGrantRole { .. } => "UserGrantRole",
        AuthChange::UserRevokeRole { .. } => "UserRevokeRole",
        AuthChange::RoleAdd { .. } => "RoleAdd",
        AuthChange::RoleDelete { .. } => "RoleDelete",
        AuthChange::RoleGrantPermission { .. } => "RoleGrantPermission",
        AuthChange::RoleRevokePermission { .. } => "RoleRevokePermission",
        AuthChange::IssueToken { .. } => "Authenticate",
    }
}

/// A permission as etcd's API shows it.
fn permission_to_pb(p: Permission) -> authpb::Permission {
    authpb::Permission {
        perm_type: p.kind.wire_value(),
        key: p.key.to_vec(),
        range_end: p.range_end.to_vec(),
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: tonic::Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let header = self.change(&request, AuthChange::Enable).await?;
        info!("authentication enabled");
        Ok(Response::new(pb::AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        request: tonic::Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let header = self.change(&request, AuthChange::Disable).await?;
        info!("authentication disabled");
        Ok(Response::new(pb::AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        request: tonic::Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        match self.query(&request, AuthQuery::Status).await? {
            (header, AuthReply::Status { enabled, revision }) => {
                Ok(Response::new(pb::AuthStatusResponse {
                    header,
                    enabled,
                    auth_revision: revision,
                }))
            }
            (_, other) => Err(unexpected("AuthStatus", &Reply::Auth(other))),
        }
    }

    async fn authenticate(
        &self,
        request: tonic::Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let started = Instant::now();
        let tls_remote = || request.extensions().get::<crate::tls::ClientConn>()?.remote;
        let addr = request.remote_addr().or_else(tls_remote).map(|a| a.ip());
        let pb::AuthenticateRequest { name, password } = request.into_inner();
        let auth = self.ctx.authenticator();
        let result = if let Some(wait) = auth.login_blocked_for(&name, addr) {
            warn!(user = %name, client = ?addr, retry_in = ?wait, "authentication refused: too many failures");
            Err(EtcdError::Unknown {
                message: format!(
                    "ringkv: too many failed authentications for user {name:?} from this \
                     address; retry in {} s",
                    wait.as_secs().max(1)
                ),
            })
        } else {
            let mut outcome = Err(EtcdError::AuthOldRevision);
            for _ in 0..AUTHENTICATE_ATTEMPTS_MAX {
                match self.authenticate_once(&name, &password, addr).await {
                    Ok(Err(EtcdError::AuthOldRevision)) => continue,
                    Ok(Ok(token)) => {
                        outcome = Ok(token);
                        break;
                    }
                    Ok(Err(e)) | Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            outcome
        };
        match result {
            Ok((token, header)) => {
                info!(user = %name, client = ?addr, "authenticated");
                let header = Some(header_info(&header).header(self.ctx.state().current_revision()));
                Ok(Response::new(pb::AuthenticateResponse { header, token }))
            }
            Err(e) => {
                // Failures answer no sooner than the floor, whatever failed.
                let floor = started + AUTH_FAILURE_ANSWER_MIN;
                tokio::time::sleep_until(tokio::time::Instant::from_std(floor)).await;
                Err(e.into())
            }
        }
    }

    async fn user_add(
        &self,
        request: tonic::Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let r = request.get_ref();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        if r.name.is_empty() {
            return Err(EtcdError::UserEmpty.into());
        }
        let password_hash = if no_password {
            None
        } else {
            Some(self.password_hash(r.password.clone(), &r.hashed_password).await?)
        };
        let change = AuthChange::UserAdd { name: r.name.clone(), password_hash, no_password };
        let header = self.change(&request, change).await?;
        Ok(Response::new(pb::AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        request: tonic::Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let name = request.get_ref().name.clone();
        match self.query(&request, AuthQuery::UserGet { name }).await? {
            (header, AuthReply::User { roles }) => {
                Ok(Response::new(pb::AuthUserGetResponse { header, roles }))
            }
            (_, other) => Err(unexpected("UserGet", &Reply::Auth(other))),
        }
    }

    async fn user_list(
        &self,
        request: tonic::Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        match self.query(&request, AuthQuery::UserList).await? {
            (header, AuthReply::Users(users)) => {
                Ok(Response::new(pb::AuthUserListResponse { header, users }))
            }
            (_, other) => Err(unexpected("UserList", &Reply::Auth(other))),
        }
    }

    async fn user_delete(
        &self,
        request: tonic::Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let name = request.get_ref().name.clone();
        let header = self.change(&request, AuthChange::UserDelete { name }).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        request: tonic::Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let r = request.get_ref();
        let hash = self.password_hash(r.password.clone(), &r.hashed_password).await?;
        let change =
            AuthChange::UserChangePassword { name: r.name.clone(), password_hash: Some(hash) };
        let header = self.change(&request, change).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        request: tonic::Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = request.get_ref();
        let change = AuthChange::UserGrantRole { user: r.user.clone(), role: r.role.clone() };
        let header = self.change(&request, change).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: tonic::Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = request.get_ref();
        let change = AuthChange::UserRevokeRole { user: r.name.clone(), role: r.role.clone() };
        let header = self.change(&request, change).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        request: tonic::Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let name = request.get_ref().name.clone();
        let header = self.change(&request, AuthChange::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        request: tonic::Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let name = request.get_ref().role.clone();
        match self.query(&request, AuthQuery::RoleGet { name }).await? {
            (header, AuthReply::Role { permissions }) => {
                Ok(Response::new(pb::AuthRoleGetResponse {
                    header,
                    perm: permissions.into_iter().map(permission_to_pb).collect(),
                }))
            }
            (_, other) => Err(unexpected("RoleGet", &Reply::Auth(other))),
        }
    }

    async fn role_list(
        &self,
        request: tonic::Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        match self.query(&request, AuthQuery::RoleList).await? {
            (header, AuthReply::Roles(roles)) => {
                Ok(Response::new(pb::AuthRoleListResponse { header, roles }))
            }
            (_, other) => Err(unexpected("RoleList", &Reply::Auth(other))),
        }
    }

    async fn role_delete(
        &self,
        request: tonic::Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let name = request.get_ref().role.clone();
        let header = self.change(&request, AuthChange::RoleDelete { name }).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: tonic::Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = request.get_ref();
        let Some(perm) = &r.perm else {
            return Err(EtcdError::PermissionNotGiven.into());
        };
        let kind = PermissionType::from_wire(perm.perm_type).ok_or(EtcdError::InvalidEnum {
            field: "Permission.permType",
            value: perm.perm_type,
            max: PermissionType::ReadWrite.wire_value(),
        })?;
        let permission = Permission {
            kind,
            key: Bytes::copy_from_slice(&perm.key),
            range_end: Bytes::copy_from_slice(&perm.range_end),
        };
        let change = AuthChange::RoleGrantPermission { role: r.name.clone(), permission };
        let header = self.change(&request, change).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        request: tonic::Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = request.get_ref();
        let change = AuthChange::RoleRevokePermission {
            role: r.role.clone(),
            key: Bytes::copy_from_slice(&r.key),
            range_end: Bytes::copy_from_slice(&r.range_end),
        };
        let header = self.change(&request, change).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse { header }))
    }
}
