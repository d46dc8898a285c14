//! Authentication and role-based access control: etcd's auth store.
//!
//! # What is replicated, and where
//!
//! The auth store (users, roles, permissions, the `enabled` flag and the
//! **auth revision**) is replicated state, like the member table: every
//! change is an [`AuthChange`] in a [`crate::Proposal`], applied by every
//! replica into records of the data shard's store
//! ([`ringkv_storage::mvcc::ApplyBatch::set_record`]), so it survives
//! restarts, travels in snapshots, and every node enforces the same rules.
//! The node keeps a mirror of it ([`AuthStore`]) for the checks.
//!
//! On a sharded cluster the auth store is the metadata shard's, and each
//! data shard holds a copy of it ([`AuthSnapshot`], recorded with the
//! metadata log index it is as of in `auth/synced`), so that a data
//! shard's replicas check writes against the same rules and revision (see
//! the crate docs, "Auth across shards").
//!
//! | record | holds |
//! | --- | --- |
//! | `auth/state` | enabled flag and auth revision |
//! | `auth/synced` | on a data shard of a sharded cluster: the metadata log index of its copy |
//! | `auth/user/<name>` | a [`User`] (name, password hash, options, roles) |
//! | `auth/role/<name>` | a [`Role`] (name, permissions sorted by key) |
//!
//! The auth revision starts at [`AUTH_REVISION_INITIAL`] and grows by one
//! with every change that succeeds, except enabling (as in etcd, where
//! `AuthEnable` keeps the revision).
//!
//! # Passwords
//!
//! The node never hashes nor verifies a password: both are slow on
//! purpose, and the node thread must never stall. The server hashes a new
//! password *before* proposing (the hash is in the log, as in etcd 3.5),
//! and verifies a password on `Authenticate` on its own threads, against a
//! hash it reads with a linearizable read ([`AuthQuery::Login`]). The node
//! stores hashes as opaque strings.
//!
//! # Who is asking
//!
//! Each request carries a [`Credential`], which the node resolves into an
//! [`AuthInfo`] (user and auth revision) with its mirror and its token
//! table, as etcd's `AuthInfoFromCtx` does:
//!
//! * a **simple token** is looked up in the node's [`TokenTable`]; tokens
//!   are issued through the log ([`AuthChange::IssueToken`]), so every
//!   member knows every token (a client may send its next request to any
//!   endpoint), but each member times them out on its own clock and keeps
//!   them only in memory (a restarted member has forgotten them; clients
//!   re-authenticate on `invalid auth token`). A token resolves to its user
//!   at the current auth revision, as etcd's simple tokens do;
//! * a **signed token** (JWT), verified by the server, carries the auth
//!   revision it was issued at: after any change of users or roles it
//!   fails with `revision of auth store is old`, and the client
//!   authenticates again;
//! * a **client certificate**'s common name is the user, at the current
//!   revision (with `--client-cert-auth`, when no token is sent).
//!
//! # When the rules are checked
//!
//! etcd's rules ([`AuthStore::check_range`], [`AuthStore::check_admin`],
//! …), at etcd's points:
//!
//! * **writes** (Put, DeleteRange, Txn, lease grant and revoke, member,
//!   alarm and auth changes) are checked when every replica *applies* them,
//!   against the replicated store, with the caller's [`AuthInfo`] carried
//!   in the proposal: a permission revoked just before a write commits is
//!   in force for it, on every replica alike. The node also checks at
//!   submit time to refuse early what is bound to fail;
//! * **reads** (Range) are checked once the read index is applied (so a
//!   revocation acknowledged before the read started is seen), and the
//!   read fails with `revision of auth store is old` if the auth store
//!   changed between the check and the read's snapshot of the store;
//! * **leader calls** (keep-alive, time-to-live, lease list) and
//!   **admin-only calls** (maintenance, watch creation through
//!   [`AuthQuery::Check`]) are checked when the node takes them.
//!
//! The node's own housekeeping proposals (lease expiry, checkpoints,
//! publishing its attributes, alarms) carry no [`AuthInfo`] and are never
//! checked.

mod codec;
mod perm;
mod store;
mod tokens;

#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use perm::{KeyInterval, covers};
pub(crate) use store::stored_revision;
pub use store::{AuthStore, stored_enabled};
pub use tokens::{TOKENS_MAX, TokenTable};

/// The user who may do everything once auth is enabled.
pub const ROOT_USER: &str = "root";

/// The role that makes a user an administrator.
pub const ROOT_ROLE: &str = "root";

/// The auth revision of a store that never changed (etcd starts at 1, so
/// that revision 0 can mean "no user").
pub const AUTH_REVISION_INITIAL: u64 = 1;

/// The metadata shard's whole auth store as of one of its log indexes,
/// proposed to a data shard of a sharded cluster so that its replicas
/// check rights against the same rules (see [`crate::Node`]'s docs on
/// auth across shards). Applying one is idempotent and never goes back:
/// a data shard installs it only if `meta_index` is past the index of the
/// copy it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSnapshot {
    /// The metadata shard's applied log index the store is as of.
    pub meta_index: u64,
    /// The store.
    pub store: AuthStore,
}

/// etcd's `authpb.Permission.Type`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PermissionType {
    /// May read (Range, Watch, compares).
    Read,
    /// May write (Put, DeleteRange).
    Write,
    /// Both.
    ReadWrite,
}

impl PermissionType {
    /// The value on etcd's wire (`READ` 0, `WRITE` 1, `READWRITE` 2).
    pub fn wire_value(self) -> i32 {
        match self {
            PermissionType::Read => 0,
            PermissionType::Write => 1,
            PermissionType::ReadWrite => 2,
        }
    }

    /// The type etcd's wire value names.
    pub fn from_wire(v: i32) -> Option<PermissionType> {
        match v {
            0 => Some(PermissionType::Read),
            1 => Some(PermissionType::Write),
            2 => Some(PermissionType::ReadWrite),
            _ => None,
        }
    }

    /// Whether a permission of this type allows an operation needing `want`
    /// ([`PermissionType::Read`] or [`PermissionType::Write`]).
    pub fn allows(self, want: PermissionType) -> bool {
        self == PermissionType::ReadWrite || self == want
    }
}

/// A permission on a key or a key range, as etcd's `authpb.Permission`:
/// `range_end` empty for the single key `key`, `"\0"` for every key from
/// `key` on, otherwise `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// What it allows.
    pub kind: PermissionType,
    /// The key, or the start of the range.
    pub key: Bytes,
    /// The end of the range (see above).
    pub range_end: Bytes,
}

/// A user of the auth store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// The name (etcd's user names are strings).
    pub name: String,
    /// The password hash the server made (opaque to the node); `None` for a
    /// user created with `no_password`, who can only present a client
    /// certificate.
    pub password_hash: Option<String>,
    /// etcd's `UserAddOptions.no_password`.
    pub no_password: bool,
    /// Role names, sorted.
    pub roles: std::collections::BTreeSet<String>,
}

impl User {
    /// Whether the user holds the root role.
    pub fn is_root(&self) -> bool {
        self.roles.contains(ROOT_ROLE)
    }
}

/// A role: a name and key permissions, sorted by key and unique by
/// `(key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// The name.
    pub name: String,
    /// The permissions.
    pub permissions: Vec<Permission>,
}

/// Who a request runs as, after the credential is resolved: etcd's
/// `AuthInfo`.
///
/// `revision` 0 means no user (etcd's convention): allowed everything while
/// auth is disabled, refused with `user name is empty` once it is enabled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AuthInfo {
    /// The user; empty for nobody.
    pub user: String,
    /// The auth revision the user's rights were established at.
    pub revision: u64,
}

impl AuthInfo {
    /// Nobody: no token, no certificate.
    pub fn anonymous() -> AuthInfo {
        AuthInfo::default()
    }

    /// Whether this names no user.
    pub fn is_anonymous(&self) -> bool {
        self.revision == 0 || self.user.is_empty()
    }
}

/// What a client presented, before the node resolves it into an
/// [`AuthInfo`] (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credential {
    /// No token and no usable certificate.
    #[default]
    Anonymous,
    /// A simple token, looked up in the node's token table.
    SimpleToken(String),
    /// A signed token the server verified: the user and the auth revision
    /// it was issued at.
    Signed(AuthInfo),
    /// The common name of a verified client certificate.
    Certificate(String),
    /// A token that failed verification (bad signature, expired,
    /// malformed): `invalid auth token` once auth is enabled, ignored
    /// while it is not (as etcd ignores tokens then).
    Invalid,
}

/// A change of the auth store, proposed through the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthChange {
    /// `AuthEnable`: needs `root` holding role `root`.
    Enable,
    /// `AuthDisable`.
    Disable,
    /// `UserAdd`, the password already hashed by the server.
    UserAdd {
        /// The user.
        name: String,
        /// The hash; `None` with `no_password`.
        password_hash: Option<String>,
        /// etcd's `UserAddOptions.no_password`.
        no_password: bool,
    },
    /// `UserDelete`.
    UserDelete {
        /// The user.
        name: String,
    },
    /// `UserChangePassword`, hashed by the server.
    UserChangePassword {
        /// The user.
        name: String,
        /// The new hash (ignored for a `no_password` user, as in etcd).
        password_hash: Option<String>,
    },
    /// `UserGrantRole`.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// `UserRevokeRole`.
    UserRevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// `RoleAdd`.
    RoleAdd {
        /// The role.
        name: String,
    },
    /// `RoleDelete` (also revoked from every user).
    RoleDelete {
        /// The role.
        name: String,
    },
    /// `RoleGrantPermission` (replaces the type of an existing permission
    /// on the same range).
    RoleGrantPermission {
        /// The role.
        role: String,
        /// The permission.
        permission: Permission,
    },
    /// `RoleRevokePermission`.
    RoleRevokePermission {
        /// The role.
        role: String,
        /// The permission's key.
        key: Bytes,
        /// The permission's range end.
        range_end: Bytes,
    },
    /// `Authenticate` with simple tokens: every replica learns the token.
    /// The server verified the password at auth revision
    /// `checked_revision`; if the store moved on since, the token is not
    /// issued (the password may have changed) and the server tries again.
    IssueToken {
        /// The user.
        user: String,
        /// The token (random, chosen by the server).
        token: String,
        /// The auth revision the password was verified at.
        checked_revision: u64,
    },
}

impl AuthError {
    /// The gRPC status class etcd answers with.
    pub fn class(&self) -> crate::ErrorClass {
        use crate::ErrorClass;
        match self {
            AuthError::UserEmpty
            | AuthError::RoleEmpty
            | AuthError::AuthFailed
            | AuthError::PermissionNotGiven
            | AuthError::InvalidAuthMgmt
            | AuthError::OldRevision { .. } => ErrorClass::InvalidArgument,
            AuthError::PermissionDenied => ErrorClass::PermissionDenied,
            AuthError::InvalidAuthToken => ErrorClass::Unauthenticated,
            AuthError::RootUserNotExist
            | AuthError::RootRoleNotExist
            | AuthError::UserAlreadyExist { .. }
            | AuthError::UserNotFound { .. }
            | AuthError::RoleAlreadyExist { .. }
            | AuthError::RoleNotFound { .. }
            | AuthError::RoleNotGranted { .. }
            | AuthError::PermissionNotGranted { .. }
            | AuthError::AuthNotEnabled => ErrorClass::FailedPrecondition,
        }
    }
}

impl AuthChange {
    /// Whether applying it needs the caller to be an administrator
    /// (etcd's `needAdminPermission`); the others need nothing.
    pub fn needs_admin(&self) -> bool {
        !matches!(self, AuthChange::IssueToken { .. })
    }
}

/// A question about the auth store, answered once the read index is
/// applied (etcd sends these through its log for the same linearizability).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthQuery {
    /// `AuthStatus` (admin).
    Status,
    /// `UserGet` (admin, or the user asking about itself).
    UserGet {
        /// The user.
        name: String,
    },
    /// `UserList` (admin).
    UserList,
    /// `RoleGet` (admin, or a user holding the role).
    RoleGet {
        /// The role.
        name: String,
    },
    /// `RoleList` (admin).
    RoleList,
    /// What `Authenticate` needs to verify a password: no permission
    /// needed, and the answer never leaves the server.
    Login {
        /// The user.
        name: String,
    },
    /// Whether the caller may do something the node does not execute
    /// itself (open a watch, stream a snapshot), checked now.
    Check(AccessCheck),
}

/// What [`AuthQuery::Check`] asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessCheck {
    /// An administrator's call (`Maintenance.Snapshot`).
    Admin,
    /// Reading a key or range (`Watch` creation).
    Read {
        /// The key.
        key: Bytes,
        /// The range end, as in a Range.
        range_end: Bytes,
    },
}

/// What the server needs to verify a password ([`AuthQuery::Login`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginInfo {
    /// Whether auth is enabled.
    pub enabled: bool,
    /// The auth revision the answer holds at.
    pub revision: u64,
    /// The user's password hash; `None` when the user does not exist or
    /// has no password (both fail alike, after a dummy verification).
    pub password_hash: Option<String>,
}

/// An auth request's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthReply {
    /// A change was applied.
    Changed,
    /// `AuthStatus`.
    Status {
        /// Whether auth is enabled.
        enabled: bool,
        /// The auth revision.
        revision: u64,
    },
    /// `UserGet`: the user's roles, sorted.
    User {
        /// Role names.
        roles: Vec<String>,
    },
    /// `UserList`, sorted.
    Users(Vec<String>),
    /// `RoleGet`: the role's permissions, sorted by key.
    Role {
        /// The permissions.
        permissions: Vec<Permission>,
    },
    /// `RoleList`, sorted.
    Roles(Vec<String>),
    /// [`AuthQuery::Login`].
    Login(LoginInfo),
    /// A simple token was issued.
    Token(String),
    /// [`AuthQuery::Check`] passed.
    Allowed,
}

/// Why an auth request or a permission check failed: etcd's auth errors,
/// each displayed as etcd's exact message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// AuthEnable without a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while `root` lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of an existing user.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist {
        /// The user.
        name: String,
    },
    /// No user given (an empty name, or a request without credentials
    /// once auth is enabled).
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// No such user.
    #[error("etcdserver: user name not found")]
    UserNotFound {
        /// The user.
        name: String,
    },
    /// RoleAdd of an existing role.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist {
        /// The role.
        name: String,
    },
    /// No such role.
    #[error("etcdserver: role name not found")]
    RoleNotFound {
        /// The role.
        name: String,
    },
    /// RoleAdd with an empty name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Wrong user or password (or a `no_password` user, or a user without
    /// a password hash): the same answer for all, so it reveals nothing.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// RoleGrantPermission without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// The user lacks the right.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// UserRevokeRole of a role the user does not hold.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// RoleRevokePermission of a permission the role does not hold.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted {
        /// The role.
        role: String,
    },
    /// An auth call that needs auth enabled (Authenticate).
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A token that is unknown, expired, forged or malformed.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A change that would lock the administrator out (deleting `root`,
    /// the `root` role, or revoking `root` from `root` while enabled).
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// The caller's rights were established at an older auth revision:
    /// authenticate again.
    #[error("etcdserver: revision of auth store is old")]
    OldRevision {
        /// The revision the caller's rights were established at.
        request: u64,
        /// The store's.
        store: u64,
    },
}
