//! Signed tokens: `--auth-token jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>[,ttl=<dur>]`,
//! etcd's JWT provider.
//!
//! A token is a JWT whose claims are etcd's: `username`, `revision` (the
//! auth revision when it was issued) and `exp`. Any member verifies it with
//! the public key; only members holding the private key issue them (a
//! member started with `pub-key` alone verifies only, as in etcd). Keys are
//! PEM files: RSA for `RS*`/`PS*`, EC for `ES256`/`ES384`, Ed25519 for
//! `EdDSA`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ringkv_node::AuthInfo;

/// The `--auth-token jwt` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtOptions {
    /// `pub-key`: the PEM file of the verification key.
    pub public_key: PathBuf,
    /// `priv-key`: the PEM file of the signing key; without it the member
    /// verifies tokens but issues none.
    pub private_key: Option<PathBuf>,
    /// `sign-method`: the JWT algorithm name (`RS256`, `ES256`, `EdDSA`, …).
    pub sign_method: String,
    /// `ttl`: a token's lifetime (default: `--auth-token-ttl`).
    pub ttl: Option<Duration>,
}

/// Why the JWT options or keys are unusable, or a token cannot be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The `--auth-token` value is malformed.
    #[error("invalid --auth-token {value:?}: {why}")]
    Options {
        /// The flag's value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A key file could not be read.
    #[error("cannot read the JWT key {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A key file does not hold a key for the sign method.
    #[error("the JWT key {path} is not a {method} key in PEM form: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The sign method.
        method: String,
        /// Why it was refused.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// This member has no private key, so it cannot issue tokens.
    #[error("this member verifies JWTs only (no priv-key in --auth-token) and cannot issue one")]
    VerifyOnly,
    /// Signing failed.
    #[error("cannot sign a JWT: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// A presented token did not verify (bad signature, expired, malformed).
    #[error("invalid JWT: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

impl JwtOptions {
    /// Parses the options after `jwt,` in etcd's `key=value,...` form.
    ///
    /// # Errors
    /// An unknown or repeated option, a missing `pub-key` or
    /// `sign-method`, an unknown method or a bad `ttl`.
    pub fn parse(options: &str) -> Result<JwtOptions, JwtError> {
        let bad = |why: String| JwtError::Options { value: format!("jwt,{options}"), why };
        let (mut public_key, mut private_key, mut sign_method, mut ttl) = (None, None, None, None);
        for pair in options.split(',').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(bad(format!("{pair:?} is not key=value")));
            };
            let slot_taken = match k {
                "pub-key" => public_key.replace(PathBuf::from(v)).is_some(),
                "priv-key" => private_key.replace(PathBuf::from(v)).is_some(),
                "sign-method" => sign_method.replace(v.to_owned()).is_some(),
                "ttl" => {
                    let d = parse_go_duration(v).ok_or_else(|| {
                        bad(format!("ttl {v:?} is not a duration such as 5m or 300s"))
                    })?;
                    ttl.replace(d).is_some()
                }
                other => {
                    return Err(bad(format!(
                        "unknown option {other:?} (known: pub-key, priv-key, sign-method, ttl)"
                    )));
                }
            };
            if slot_taken {
                return Err(bad(format!("{k} is given twice")));
            }
        }
        let sign_method = sign_method.ok_or_else(|| bad("sign-method is required".to_owned()))?;
        algorithm(&sign_method)
            .ok_or_else(|| bad(format!("unknown sign-method {sign_method:?}")))?;
        let public_key = public_key.ok_or_else(|| bad("pub-key is required".to_owned()))?;
        Ok(JwtOptions { public_key, private_key, sign_method, ttl })
    }
}

/// A duration as Go writes it (etcd's `ttl=5m`): numbers with units `h`,
/// `m`, `s`, `ms`, `us`, `ns`, e.g. `1h30m`, `300s`, `1.5h`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "\u{b5}s" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// etcd's JWT claims.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// Loaded JWT keys.
pub struct JwtKeys {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.algorithm)
            .field("signs", &self.encoding.is_some())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Loads the keys `options` name; tokens live `options.ttl`, or
    /// `default_ttl`.
    ///
    /// # Errors
    /// A key file cannot be read or is not a key for the method.
    pub fn load(options: &JwtOptions, default_ttl: Duration) -> Result<JwtKeys, JwtError> {
        let algorithm = algorithm(&options.sign_method).ok_or_else(|| JwtError::Options {
            value: options.sign_method.clone(),
            why: "unknown sign-method".to_owned(),
        })?;
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| JwtError::KeyFile { path: path.clone(), source })
        };
        let key_error = |path: &PathBuf| {
            let (path, method) = (path.clone(), options.sign_method.clone());
            move |source| JwtError::Key { path, method, source }
        };
        let pem = read(&options.public_key)?;
        let decoding = match algorithm {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            _ => DecodingKey::from_rsa_pem(&pem),
        }
        .map_err(key_error(&options.public_key))?;
        let encoding = match &options.private_key {
            None => None,
            Some(path) => {
                let pem = read(path)?;
                Some(
                    match algorithm {
                        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
                        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                        _ => EncodingKey::from_rsa_pem(&pem),
                    }
                    .map_err(key_error(path))?,
                )
            }
        };
        Ok(JwtKeys { algorithm, decoding, encoding, ttl: options.ttl.unwrap_or(default_ttl) })
    }

    /// A token for `user` at auth revision `revision`, expiring after the
    /// TTL.
    ///
    /// # Errors
    /// No private key, or signing failed.
    pub fn sign(&self, user: &str, revision: u64) -> Result<String, JwtError> {
        let key = self.encoding.as_ref().ok_or(JwtError::VerifyOnly)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims =
            Claims { username: user.to_owned(), revision, exp: (now + self.ttl).as_secs() };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).map_err(JwtError::Sign)
    }

    /// The user and auth revision a valid token names.
    ///
    /// # Errors
    /// A bad signature, another algorithm, a missing claim, an expired token.
    pub fn verify(&self, token: &str) -> Result<AuthInfo, JwtError> {
        let mut validation = Validation::new(self.algorithm);
        // Expired means expired: no grace period.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(JwtError::Invalid)?;
        Ok(AuthInfo { user: data.claims.username, revision: data.claims.revision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_as_etcd_writes_them() {
        let o = JwtOptions::parse("pub-key=/k.pub,priv-key=/k,sign-method=RS256,ttl=10m").unwrap();
        assert_eq!(o.public_key, PathBuf::from("/k.pub"));
        assert_eq!(o.private_key, Some(PathBuf::from("/k")));
        assert_eq!(o.ttl, Some(Duration::from_secs(600)));
        assert!(JwtOptions::parse("pub-key=/k,sign-method=HS999").is_err());
        assert!(JwtOptions::parse("sign-method=RS256").is_err(), "pub-key is required");
        assert!(JwtOptions::parse("pub-key=/a,pub-key=/b,sign-method=RS256").is_err());
        assert!(JwtOptions::parse("pub-key=/a,sign-method=RS256,colour=blue").is_err());
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
