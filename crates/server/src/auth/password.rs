//! Password hashing and verification: bcrypt, as etcd, always off the
//! async workers and never on the node thread (a verification takes tens
//! of milliseconds by design).

use base64::Engine as _;

use crate::api::EtcdError;

/// Default bcrypt cost (etcd's `--bcrypt-cost` default): 2^10 rounds, about
/// 50–100 ms per hash or verification on a server core.
pub const BCRYPT_COST_DEFAULT: u32 = 10;

/// Smallest bcrypt cost accepted (bcrypt's own minimum; etcd's too).
pub const BCRYPT_COST_MIN: u32 = 4;

/// Largest bcrypt cost accepted (bcrypt's own maximum; etcd's too).
pub const BCRYPT_COST_MAX: u32 = 31;

/// Longest password hashed, in bytes: bcrypt reads only the first 72 bytes,
/// so a longer password would be accepted by its first 72 alone; refused
/// instead of silently truncated.
pub const PASSWORD_BYTES_MAX: usize = 72;

/// Hashes `password` with `cost`.
///
/// # Errors
/// A password longer than [`PASSWORD_BYTES_MAX`], or the hasher failed.
pub async fn hash(password: String, cost: u32) -> Result<String, EtcdError> {
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(EtcdError::Unknown {
            message: format!(
                "ringkv: the password is {} bytes long; bcrypt uses at most {PASSWORD_BYTES_MAX}",
                password.len()
            ),
        });
    }
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| EtcdError::Unknown {
            message: format!("ringkv: password hashing failed: {e}"),
        })?
        .map_err(|e| EtcdError::Unknown {
            message: format!("ringkv: password hashing failed: {e}"),
        })
}

/// Whether `password` matches `hash`. Without a hash (no such user, or a
/// user without a password) a dummy hash of the same cost is verified, so
/// the answer takes as long whether the user exists or not.
pub async fn verify(password: String, hash: Option<String>, dummy: &str) -> bool {
    let (target, real) = match hash {
        Some(h) => (h, true),
        None => (dummy.to_owned(), false),
    };
    let matched = tokio::task::spawn_blocking(move || bcrypt::verify(password, &target))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    matched && real
}

/// A hash of a random password at `cost`, made once at start: what a login
/// for an unknown user is verified against.
///
/// # Errors
/// The hasher failed.
pub fn dummy_hash(cost: u32) -> Result<String, bcrypt::BcryptError> {
    let random: [u8; 16] = rand::random();
    bcrypt::hash(random, cost)
}

/// The bcrypt hash an etcd 3.5 client sent in `hashedPassword` (base64 of
/// the hash, as etcd's API takes it).
///
/// # Errors
/// Not base64, or not a bcrypt hash.
pub fn from_client(hashed: &str) -> Result<String, EtcdError> {
    let bad = || EtcdError::Unknown {
        message: "ringkv: hashedPassword must be a base64-encoded bcrypt hash".to_owned(),
    };
    let raw = base64::engine::general_purpose::STANDARD.decode(hashed).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    // A well-formed hash verifies (to false) without error.
    bcrypt::verify("", &text).map_err(|_| bad())?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let h = hash("s3cret".to_owned(), BCRYPT_COST_MIN).await.unwrap();
        let dummy = dummy_hash(BCRYPT_COST_MIN).unwrap();
        assert!(verify("s3cret".to_owned(), Some(h.clone()), &dummy).await);
        assert!(!verify("wrong".to_owned(), Some(h.clone()), &dummy).await);
        assert!(!verify("s3cret".to_owned(), None, &dummy).await, "no user never matches");
        assert!(hash("x".repeat(PASSWORD_BYTES_MAX + 1), BCRYPT_COST_MIN).await.is_err());
        let sent = base64::engine::general_purpose::STANDARD.encode(&h);
        assert_eq!(from_client(&sent).unwrap(), h);
        assert!(from_client("not base64!").is_err());
        assert!(from_client(&base64::engine::general_purpose::STANDARD.encode("plain")).is_err());
    }
}
