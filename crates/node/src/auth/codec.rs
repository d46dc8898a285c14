//! Encodings of the auth store's records and of [`AuthChange`] in
//! proposals ([`Wire`]).

use bytes::Bytes;
use ringkv_consensus::codec::{CodecError, Decoder, Wire, put_bytes, put_str, put_varint};

use super::{
    AuthChange, AuthInfo, AuthSnapshot, AuthStore, Permission, PermissionType, Role, User,
};

impl Wire for PermissionType {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.wire_value() as u8);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        let at = d.position();
        let tag = d.u8()?;
        PermissionType::from_wire(i32::from(tag)).ok_or(CodecError::BadTag {
            what: "permission type",
            tag,
            at,
        })
    }
}

impl Wire for Permission {
    fn encode(&self, out: &mut Vec<u8>) {
        self.kind.encode(out);
        put_bytes(out, &self.key);
        put_bytes(out, &self.range_end);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(Permission { kind: PermissionType::decode(d)?, key: d.bytes()?, range_end: d.bytes()? })
    }
}

impl Wire for User {
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.name);
        self.password_hash.encode(out);
        self.no_password.encode(out);
        self.roles.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(User {
            name: d.string()?,
            password_hash: Option::<String>::decode(d)?,
            no_password: d.bool()?,
            roles: Wire::decode(d)?,
        })
    }
}

impl Wire for Role {
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.name);
        self.permissions.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(Role { name: d.string()?, permissions: Vec::decode(d)? })
    }
}

impl Wire for AuthInfo {
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.user);
        put_varint(out, self.revision);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(AuthInfo { user: d.string()?, revision: d.varint()? })
    }
}

/// The `auth/state` record: enabled flag, then revision.
pub(super) fn encode_state(enabled: bool, revision: u64) -> Vec<u8> {
    let mut out = Vec::new();
    enabled.encode(&mut out);
    put_varint(&mut out, revision);
    out
}

/// Decodes the `auth/state` record.
pub(super) fn decode_state(bytes: Bytes) -> Result<(bool, u64), CodecError> {
    let mut d = Decoder::new(bytes);
    let enabled = d.bool()?;
    let revision = d.varint()?;
    if d.remaining() != 0 {
        return Err(d.invalid("auth state (trailing bytes)"));
    }
    Ok((enabled, revision))
}

impl Wire for AuthChange {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AuthChange::Enable => out.push(0),
            AuthChange::Disable => out.push(1),
            AuthChange::UserAdd { name, password_hash, no_password } => {
                out.push(2);
                put_str(out, name);
                password_hash.encode(out);
                no_password.encode(out);
            }
            AuthChange::UserDelete { name } => {
                out.push(3);
                put_str(out, name);
            }
            AuthChange::UserChangePassword { name, password_hash } => {
                out.push(4);
                put_str(out, name);
                password_hash.encode(out);
            }
            AuthChange::UserGrantRole { user, role } => {
                out.push(5);
                put_str(out, user);
                put_str(out, role);
            }
            AuthChange::UserRevokeRole { user, role } => {
                out.push(6);
                put_str(out, user);
                put_str(out, role);
            }
            AuthChange::RoleAdd { name } => {
                out.push(7);
                put_str(out, name);
            }
            AuthChange::RoleDelete { name } => {
                out.push(8);
                put_str(out, name);
            }
            AuthChange::RoleGrantPermission { role, permission } => {
                out.push(9);
                put_str(out, role);
                permission.encode(out);
            }
            AuthChange::RoleRevokePermission { role, key, range_end } => {
                out.push(10);
                put_str(out, role);
                put_bytes(out, key);
                put_bytes(out, range_end);
            }
            AuthChange::IssueToken { user, token, checked_revision } => {
                out.push(11);
                put_str(out, user);
                put_str(out, token);
                put_varint(out, *checked_revision);
            }
        }
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(match d.tag("auth change", 11)? {
            0 => AuthChange::Enable,
            1 => AuthChange::Disable,
            2 => AuthChange::UserAdd {
                name: d.string()?,
                password_hash: Option::<String>::decode(d)?,
                no_password: d.bool()?,
            },
            3 => AuthChange::UserDelete { name: d.string()? },
            4 => AuthChange::UserChangePassword {
                name: d.string()?,
                password_hash: Option::<String>::decode(d)?,
            },
            5 => AuthChange::UserGrantRole { user: d.string()?, role: d.string()? },
            6 => AuthChange::UserRevokeRole { user: d.string()?, role: d.string()? },
            7 => AuthChange::RoleAdd { name: d.string()? },
            8 => AuthChange::RoleDelete { name: d.string()? },
            9 => AuthChange::RoleGrantPermission {
                role: d.string()?,
                permission: Permission::decode(d)?,
            },
            10 => AuthChange::RoleRevokePermission {
                role: d.string()?,
                key: d.bytes()?,
                range_end: d.bytes()?,
            },
            _ => AuthChange::IssueToken {
                user: d.string()?,
                token: d.string()?,
                checked_revision: d.varint()?,
            },
        })
    }
}

impl Wire for AuthSnapshot {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.meta_index);
        self.store.encode(out);
    }

    fn decode(d: &mut Decoder) -> Result<Self, CodecError> {
        Ok(AuthSnapshot { meta_index: d.varint()?, store: AuthStore::decode(d)? })
    }
}
