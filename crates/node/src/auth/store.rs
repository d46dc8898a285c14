//! [`AuthStore`]: the node's mirror of the replicated auth store, how
//! changes apply to it, and etcd's permission rules.

use std::collections::BTreeMap;

use bytes::Bytes;
use ringkv_consensus::codec::{CodecError, Decoder, Wire, put_varint};
use ringkv_consensus::{ShardId, decode_exact, encode_to_vec};
use ringkv_storage::mvcc::{ApplyBatch, ReadView, RequestOp, StoreError, TxnRequest};

use super::codec::{decode_state, encode_state};
use super::perm::{KeyInterval, covers};
use super::{
    AUTH_REVISION_INITIAL, AuthChange, AuthError, AuthInfo, AuthQuery, AuthReply, LoginInfo,
    Permission, PermissionType, ROOT_ROLE, ROOT_USER, Role, User,
};
use crate::error::NodeError;

/// Record holding the enabled flag and the auth revision.
pub(crate) const STATE_RECORD: &str = "auth/state";
/// Record holding, on a data shard of a sharded cluster, the metadata
/// shard's log index whose auth store this shard's copy is (see
/// [`AuthStore::install`]).
const SYNCED_RECORD: &str = "auth/synced";
/// Prefix of user records: `auth/user/<name>`.
const USER_PREFIX: &str = "auth/user/";
/// Prefix of role records: `auth/role/<name>`.
const ROLE_PREFIX: &str = "auth/role/";

fn corrupt(shard: ShardId, what: String) -> NodeError {
    NodeError::Corrupt { shard, what }
}

/// The auth store as applied so far (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// On a data shard of a sharded cluster: the metadata shard's log
    /// index whose store this is a copy of (0: never installed).
    synced_at: u64,
}

impl Default for AuthStore {
    fn default() -> Self {
        AuthStore {
            enabled: false,
            revision: AUTH_REVISION_INITIAL,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            synced_at: 0,
        }
    }
}

/// The auth revision recorded in `view` (the initial one if none is).
///
/// # Errors
/// The store failed, or the record is corrupt.
pub(crate) fn stored_revision(view: &ReadView, shard: ShardId) -> Result<u64, NodeError> {
    match view.record(shard, STATE_RECORD)? {
        Some(v) => decode_state(v)
            .map(|(_, revision)| revision)
            .map_err(|e| corrupt(shard, format!("auth state record: {e}"))),
        None => Ok(AUTH_REVISION_INITIAL),
    }
}

/// Whether auth is enabled in `view` (off if the state record was never
/// written): what a reader outside the node checks before serving a read
/// without the node's rights check.
///
/// # Errors
/// The store failed, or the record is corrupt.
pub fn stored_enabled(view: &ReadView, shard: ShardId) -> Result<bool, NodeError> {
    match view.record(shard, STATE_RECORD)? {
        Some(v) => decode_state(v)
            .map(|(enabled, _)| enabled)
            .map_err(|e| corrupt(shard, format!("auth state record: {e}"))),
        None => Ok(false),
    }
}

impl AuthStore {
    /// Reads the auth store of `shard`.
    ///
    /// # Errors
    /// The store failed, or a record is corrupt.
    pub fn load(view: &ReadView, shard: ShardId) -> Result<AuthStore, NodeError> {
        let mut s = AuthStore::default();
        if let Some(v) = view.record(shard, STATE_RECORD)? {
            let (enabled, revision) =
                decode_state(v).map_err(|e| corrupt(shard, format!("auth state record: {e}")))?;
            s.enabled = enabled;
            s.revision = revision;
        }
        for (name, v) in view.records(shard, USER_PREFIX)? {
            let u = decode_exact::<User>(v)
                .map_err(|e| corrupt(shard, format!("user record {name}: {e}")))?;
            s.users.insert(u.name.clone(), u);
        }
        for (name, v) in view.records(shard, ROLE_PREFIX)? {
            let r = decode_exact::<Role>(v)
                .map_err(|e| corrupt(shard, format!("role record {name}: {e}")))?;
            s.roles.insert(r.name.clone(), r);
        }
        if let Some(v) = view.record(shard, SYNCED_RECORD)? {
            s.synced_at = decode_exact::<u64>(v)
                .map_err(|e| corrupt(shard, format!("auth synced record: {e}")))?;
        }
        Ok(s)
    }

    /// Whether auth is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The metadata shard's log index whose auth store this data shard's
    /// copy is (0 if none was ever installed; always 0 on the metadata
    /// shard and on a one-shard cluster).
    pub fn synced_at(&self) -> u64 {
        self.synced_at
    }

    /// Whether both stores hold the same rules: flag, revision, users and
    /// roles (not where a copy came from).
    pub fn same_rules(&self, other: &AuthStore) -> bool {
        self.enabled == other.enabled
            && self.revision == other.revision
            && self.users == other.users
            && self.roles == other.roles
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// A role.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    // ---- permission rules (etcd's `authStore.isOpPermitted` and friends)

    /// May `who` do an operation needing `want` on `[key, range_end)`?
    ///
    /// # Errors
    /// `user name is empty` without a user, `revision of auth store is old`
    /// when `who`'s rights predate the store's (or, in a data shard's
    /// copy, are newer than it), `permission denied`.
    pub fn check_op(
        &self,
        who: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
        want: PermissionType,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if who.is_anonymous() {
            return Err(AuthError::UserEmpty);
        }
        // A data shard's copy behind the caller's rights (resolved against
        // a newer metadata store) has not received a change yet: checking
        // with it could let through what the change forbids, after a
        // client saw the change in the metadata shard. The caller retries,
        // as on etcd's "old revision".
        let copy_behind = self.synced_at > 0 && who.revision > self.revision;
        if who.revision < self.revision || copy_behind {
            return Err(AuthError::OldRevision { request: who.revision, store: self.revision });
        }
        let Some(user) = self.users.get(&who.user) else {
            return Err(AuthError::PermissionDenied);
        };
        if user.is_root() {
            return Ok(());
        }
        let granted = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.permissions.iter())
            .filter(|p| p.kind.allows(want))
            .map(|p| KeyInterval::of(&p.key, &p.range_end));
        if covers(granted, &KeyInterval::of(key, range_end)) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Read permission on a key or range (`range_end` as in a Range).
    ///
    /// # Errors
    /// See [`AuthStore::check_op`].
    pub fn check_range(
        &self,
        who: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.check_op(who, key, range_end, PermissionType::Read)
    }

    /// Write permission on one key.
    ///
    /// # Errors
    /// See [`AuthStore::check_op`].
    pub fn check_put(&self, who: &AuthInfo, key: &[u8]) -> Result<(), AuthError> {
        self.check_op(who, key, &[], PermissionType::Write)
    }

    /// Write permission on a key or range.
    ///
    /// # Errors
    /// See [`AuthStore::check_op`].
    pub fn check_delete(
        &self,
        who: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.check_op(who, key, range_end, PermissionType::Write)
    }

    /// Whether `who` is an administrator (etcd's `IsAdminPermitted`; no
    /// revision check, as in etcd).
    ///
    /// # Errors
    /// `user name is empty`, `user name not found`, `permission denied`.
    pub fn check_admin(&self, who: &AuthInfo) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if who.is_anonymous() {
            return Err(AuthError::UserEmpty);
        }
        match self.users.get(&who.user) {
            None => Err(AuthError::UserNotFound { name: who.user.clone() }),
            Some(u) if !u.is_root() => Err(AuthError::PermissionDenied),
            Some(_) => Ok(()),
        }
    }

    /// Whether `who` names a user at all once auth is enabled (etcd's
    /// `requireAuthInfo`, for lease grants and compactions).
    ///
    /// # Errors
    /// `user name is empty`.
    pub fn check_user(&self, who: &AuthInfo) -> Result<(), AuthError> {
        if self.enabled && who.is_anonymous() { Err(AuthError::UserEmpty) } else { Ok(()) }
    }

    /// Every permission a transaction needs: read on every compare's range,
    /// and on every operation of both branches (nested ones too) what it
    /// needs, whichever branch runs (etcd's `checkTxnPermission`).
    ///
    /// # Errors
    /// The first refusal.
    pub fn check_txn(&self, who: &AuthInfo, txn: &TxnRequest) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        for c in &txn.compare {
            self.check_range(who, &c.key, &c.range_end)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Range(r) => self.check_range(who, &r.key, &r.range_end)?,
                RequestOp::Put(p) => {
                    self.check_put(who, &p.key)?;
                    if p.prev_kv {
                        self.check_range(who, &p.key, &[])?;
                    }
                }
                RequestOp::DeleteRange(d) => {
                    if d.prev_kv {
                        self.check_range(who, &d.key, &d.range_end)?;
                    }
                    self.check_delete(who, &d.key, &d.range_end)?;
                }
                RequestOp::Txn(t) => self.check_txn(who, t)?,
            }
        }
        Ok(())
    }

    /// Write permission on every key attached to a lease, for revoking it
    /// or attaching a key to it (revoking deletes them all). Administrators
    /// pass without looking.
    ///
    /// # Errors
    /// The first refusal.
    pub fn check_lease_keys<'k>(
        &self,
        who: &AuthInfo,
        keys: impl IntoIterator<Item = &'k Bytes>,
    ) -> Result<(), AuthError> {
        if !self.enabled || self.check_admin(who).is_ok() {
            return Ok(());
        }
        keys.into_iter().try_for_each(|k| self.check_put(who, k))
    }

    /// Read permission on every key attached to a lease (LeaseTimeToLive
    /// with keys, LeaseLeases). Administrators pass without looking.
    ///
    /// # Errors
    /// The first refusal.
    pub fn check_lease_reads<'k>(
        &self,
        who: &AuthInfo,
        keys: impl IntoIterator<Item = &'k Bytes>,
    ) -> Result<(), AuthError> {
        if !self.enabled || self.check_admin(who).is_ok() {
            return Ok(());
        }
        self.check_user(who)?;
        keys.into_iter().try_for_each(|k| self.check_range(who, k, &[]))
    }

    // ---- queries

    /// Answers a query for `who` (the Check query is the caller's).
    ///
    /// # Errors
    /// The refusal etcd would give.
    pub fn answer(&self, who: &AuthInfo, query: &AuthQuery) -> Result<AuthReply, AuthError> {
        match query {
            AuthQuery::Status => {
                self.check_admin(who)?;
                Ok(AuthReply::Status { enabled: self.enabled, revision: self.revision })
            }
            AuthQuery::UserGet { name } => {
                // A user may read its own roles (etcd's UserGet rule).
                if let Err(e) = self.check_admin(who)
                    && (who.is_anonymous() || who.user != *name)
                {
                    return Err(e);
                }
                let u =
                    self.users.get(name).ok_or(AuthError::UserNotFound { name: name.clone() })?;
                Ok(AuthReply::User { roles: u.roles.iter().cloned().collect() })
            }
            AuthQuery::UserList => {
                self.check_admin(who)?;
                Ok(AuthReply::Users(self.users.keys().cloned().collect()))
            }
            AuthQuery::RoleGet { name } => {
                // A user may read a role it holds (etcd's RoleGet rule).
                if let Err(e) = self.check_admin(who)
                    && !self.users.get(&who.user).is_some_and(|u| u.roles.contains(name))
                {
                    return Err(e);
                }
                let r =
                    self.roles.get(name).ok_or(AuthError::RoleNotFound { name: name.clone() })?;
                let permissions = if r.name == ROOT_ROLE {
                    // etcd shows the root role as read-write on everything.
                    vec![Permission {
                        kind: PermissionType::ReadWrite,
                        key: Bytes::new(),
                        range_end: Bytes::from_static(&[0]),
                    }]
                } else {
                    r.permissions.clone()
                };
                Ok(AuthReply::Role { permissions })
            }
            AuthQuery::RoleList => {
                self.check_admin(who)?;
                Ok(AuthReply::Roles(self.roles.keys().cloned().collect()))
            }
            AuthQuery::Login { name } => {
                let password_hash = self
                    .users
                    .get(name)
                    .filter(|u| !u.no_password)
                    .and_then(|u| u.password_hash.clone());
                Ok(AuthReply::Login(LoginInfo {
                    enabled: self.enabled,
                    revision: self.revision,
                    password_hash,
                }))
            }
            AuthQuery::Check(check) => {
                match check {
                    super::AccessCheck::Admin => self.check_admin(who)?,
                    super::AccessCheck::Read { key, range_end } => {
                        self.check_range(who, key, range_end)?;
                    }
                }
                Ok(AuthReply::Allowed)
            }
        }
    }

    // ---- changes

    fn commit_revision(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
    ) -> Result<(), StoreError> {
        self.revision += 1;
        self.write_state(b, shard)
    }

    fn write_state(&self, b: &mut ApplyBatch<'_>, shard: ShardId) -> Result<(), StoreError> {
        b.set_record(shard, STATE_RECORD, Some(&encode_state(self.enabled, self.revision)))
    }

    fn put_user(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        u: User,
    ) -> Result<(), StoreError> {
        b.set_record(shard, &format!("{USER_PREFIX}{}", u.name), Some(&encode_to_vec(&u)))?;
        self.users.insert(u.name.clone(), u);
        Ok(())
    }

    fn put_role(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        r: Role,
    ) -> Result<(), StoreError> {
        b.set_record(shard, &format!("{ROLE_PREFIX}{}", r.name), Some(&encode_to_vec(&r)))?;
        self.roles.insert(r.name.clone(), r);
        Ok(())
    }

    /// Replaces this store by `from`, the metadata shard's store as of its
    /// log index `meta_index` (a data shard's copy, see
    /// [`crate::AuthSnapshot`]): records of users and roles `from` lacks
    /// are deleted, every other record rewritten. A copy no newer than the
    /// one held changes nothing (copies proposed by different nodes may
    /// commit out of order, and a copy must never take a shard back).
    /// Returns whether it installed `from`.
    pub(crate) fn install(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        from: &AuthStore,
        meta_index: u64,
    ) -> Result<bool, StoreError> {
        if meta_index <= self.synced_at {
            return Ok(false);
        }
        for name in self.users.keys().filter(|n| !from.users.contains_key(*n)) {
            b.set_record(shard, &format!("{USER_PREFIX}{name}"), None)?;
        }
        for name in self.roles.keys().filter(|n| !from.roles.contains_key(*n)) {
            b.set_record(shard, &format!("{ROLE_PREFIX}{name}"), None)?;
        }
        self.users.clear();
        self.roles.clear();
        for u in from.users.values() {
            self.put_user(b, shard, u.clone())?;
        }
        for r in from.roles.values() {
            self.put_role(b, shard, r.clone())?;
        }
        self.enabled = from.enabled;
        self.revision = from.revision;
        self.write_state(b, shard)?;
        self.synced_at = meta_index;
        b.set_record(shard, SYNCED_RECORD, Some(&encode_to_vec(&meta_index)))?;
        Ok(true)
    }

    /// Applies a change (the caller's rights already checked): the outer
    /// error is the store failing, the inner one the change refused,
    /// deterministically on every replica. The revision grows by one with
    /// every change that succeeds, but enabling and issuing a token.
    pub(crate) fn apply(
        &mut self,
        b: &mut ApplyBatch<'_>,
        shard: ShardId,
        change: &AuthChange,
    ) -> Result<Result<AuthReply, AuthError>, StoreError> {
        let refused = |e: AuthError| Ok(Err(e));
        match change {
            AuthChange::Enable => {
                if self.enabled {
                    return Ok(Ok(AuthReply::Changed));
                }
                match self.users.get(ROOT_USER) {
                    None => return refused(AuthError::RootUserNotExist),
                    Some(u) if !u.is_root() => return refused(AuthError::RootRoleNotExist),
                    Some(_) => {}
                }
                self.enabled = true;
                self.write_state(b, shard)?;
            }
            AuthChange::Disable => {
                if !self.enabled {
                    return Ok(Ok(AuthReply::Changed));
                }
                self.enabled = false;
                self.commit_revision(b, shard)?;
            }
            AuthChange::UserAdd { name, password_hash, no_password } => {
                if name.is_empty() {
                    return refused(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return refused(AuthError::UserAlreadyExist { name: name.clone() });
                }
                let user = User {
                    name: name.clone(),
                    password_hash: if *no_password { None } else { password_hash.clone() },
                    no_password: *no_password,
                    roles: Default::default(),
                };
                self.put_user(b, shard, user)?;
                self.commit_revision(b, shard)?;
            }
            AuthChange::UserDelete { name } => {
                if self.enabled && name == ROOT_USER {
                    return refused(AuthError::InvalidAuthMgmt);
                }
                if self.users.remove(name).is_none() {
                    return refused(AuthError::UserNotFound { name: name.clone() });
                }
                b.set_record(shard, &format!("{USER_PREFIX}{name}"), None)?;
                self.commit_revision(b, shard)?;
            }
            AuthChange::UserChangePassword { name, password_hash } => {
                let Some(mut user) = self.users.get(name).cloned() else {
                    return refused(AuthError::UserNotFound { name: name.clone() });
                };
                if !user.no_password {
                    user.password_hash = password_hash.clone();
                }
                self.put_user(b, shard, user)?;
                self.commit_revision(b, shard)?;
            }
            AuthChange::UserGrantRole { user, role } => {
                let Some(mut u) = self.users.get(user).cloned() else {
                    return refused(AuthError::UserNotFound { name: user.clone() });
                };
                // The root role needs no record to be granted (etcd's rule,
                // so `auth enable` can bootstrap with it).
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    return refused(AuthError::RoleNotFound { name: role.clone() });
                }
                if !u.roles.insert(role.clone()) {
                    // Already held: succeeds without a change, as in etcd.
                    return Ok(Ok(AuthReply::Changed));
                }
                self.put_user(b, shard, u)?;
                self.commit_revision(b, shard)?;
            }
            AuthChange::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT_USER && role == ROOT_ROLE {
                    return refused(AuthError::InvalidAuthMgmt);
                }
                let Some(mut u) = self.users.get(user).cloned() else {
                    return refused(AuthError::UserNotFound { name: user.clone() });
                };
                if !u.roles.remove(role) {
                    return refused(AuthError::RoleNotGranted {
                        user: user.clone(),
                        role: role.clone(),
                    });
                }
                self.put_user(b, shard, u)?;
                self.commit_revision(b, shard)?;
            }
            AuthChange::RoleAdd { name } => {
                if name.is_empty() {
                    return refused(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return refused(AuthError::RoleAlreadyExist { name: name.clone() });
                }
                self.put_role(b, shard, Role { name: name.clone(), permissions: Vec::new() })?;
                self.commit_revision(b, shard)?;
            }
            AuthChange::RoleDelete { name } => {
                if self.enabled && name == ROOT_ROLE {
                    return refused(AuthError::InvalidAuthMgmt);
                }
                if self.roles.remove(name).is_none() {
                    return refused(AuthError::RoleNotFound { name: name.clone() });
                }
                b.set_record(shard, &format!("{ROLE_PREFIX}{name}"), None)?;
                let holders: Vec<User> =
                    self.users.values().filter(|u| u.roles.contains(name)).cloned().collect();
                for mut u in holders {
                    u.roles.remove(name);
                    self.put_user(b, shard, u)?;
                }
                self.commit_revision(b, shard)?;
            }
            AuthChange::RoleGrantPermission { role, permission } => {
                let Some(mut r) = self.roles.get(role).cloned() else {
                    return refused(AuthError::RoleNotFound { name: role.clone() });
                };
                match r
                    .permissions
                    .iter_mut()
                    .find(|p| p.key == permission.key && p.range_end == permission.range_end)
                {
                    Some(p) => p.kind = permission.kind,
                    None => {
                        r.permissions.push(permission.clone());
                        r.permissions
                            .sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                    }
                }
                self.put_role(b, shard, r)?;
                self.commit_revision(b, shard)?;
            }
            AuthChange::RoleRevokePermission { role, key, range_end } => {
                let Some(mut r) = self.roles.get(role).cloned() else {
                    return refused(AuthError::RoleNotFound { name: role.clone() });
                };
                let before = r.permissions.len();
                r.permissions.retain(|p| !(p.key == *key && p.range_end == *range_end));
                if r.permissions.len() == before {
                    return refused(AuthError::PermissionNotGranted { role: role.clone() });
                }
                self.put_role(b, shard, r)?;
                self.commit_revision(b, shard)?;
            }
            AuthChange::IssueToken { user, token, checked_revision } => {
                if !self.enabled {
                    return refused(AuthError::AuthNotEnabled);
                }
                match self.users.get(user) {
                    Some(u) if !u.no_password && u.password_hash.is_some() => {}
                    _ => return refused(AuthError::AuthFailed),
                }
                if *checked_revision != self.revision {
                    // The password was verified against an older store (it
                    // may have changed since): verify again.
                    return refused(AuthError::OldRevision {
                        request: *checked_revision,
                        store: self.revision,
                    });
                }
                return Ok(Ok(AuthReply::Token(token.clone())));
            }
        }
        Ok(Ok(AuthReply::Changed))
    }
}

/// The rules travel whole (a data shard's copy; `synced_at` is the
/// receiver's own bookkeeping and does not travel).
impl Wire for AuthStore {
    fn encode(&self, out: &mut Vec<u8>) {
        self.enabled.encode(out);
        self.revision.encode(out);
        let users: Vec<&User> = self.users.values().collect();
        put_varint(out, users.len() as u64);
        for u in users {
            u.encode(out);
        }
        put_varint(out, self.roles.len() as u64);
        for r in self.roles.values() {
            r.encode(out);
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let enabled = d.bool()?;
        let revision = u64::decode(d)?;
        let users: Vec<User> = Vec::decode(d)?;
        let roles: Vec<Role> = Vec::decode(d)?;
        Ok(AuthStore {
            enabled,
            revision,
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            roles: roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
            synced_at: 0,
        })
    }
}
