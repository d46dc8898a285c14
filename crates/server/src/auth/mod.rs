//! The server's side of authentication: what a request presents, password
//! hashing and verification, tokens, and brute-force protection.
//!
//! The auth store itself (users, roles, permissions, the rules) is
//! replicated state and lives in the node ([`ringkv_node::auth`]); every
//! node enforces it. This module does what must not run on the node
//! thread or needs secrets the log must not carry:
//!
//! * **credentials** ([`Authenticator::credential`]): the `token` gRPC
//!   metadata (the gateway passes its `Authorization` header there), then,
//!   with `--client-cert-auth`, the common name of the verified client
//!   certificate, as etcd's `AuthInfoFromCtx`. A simple token is handed to
//!   the node to look up; a JWT is verified here and handed over as its
//!   user and auth revision ([`jwt`]);
//! * **passwords** ([`password`]): bcrypt as in etcd, hashed here before a
//!   `UserAdd` or `UserChangePassword` is proposed (the log carries the
//!   hash only), verified here on `Authenticate` on the blocking pool;
//! * **failed logins**: a wrong password, an unknown user and a user
//!   without a password are verified alike (against a dummy hash of the
//!   same cost), answered alike, and no sooner than
//!   [`AUTH_FAILURE_ANSWER_MIN`]; each is logged with the user name and
//!   address but never a secret; and [`limiter`] refuses a user from an
//!   address after repeated failures.
//!
//! # Tokens
//!
//! `--auth-token simple` (the default): a token is [`SIMPLE_TOKEN_CHARS`]
//! random characters, issued through the log so that every member knows
//! it, valid for `--auth-token-ttl` since its last use, held in memory
//! only. `--auth-token jwt,...`: a signed JWT ([`jwt`]) carrying the user,
//! the auth revision and an expiry; any member verifies it with the public
//! key, and it goes stale with the first change of the auth store
//! (`revision of auth store is old`: authenticate again).

pub mod jwt;
pub mod limiter;
pub mod password;

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringkv_node::Credential;
use tonic::metadata::MetadataMap;

use self::jwt::{JwtError, JwtKeys};
use self::limiter::LoginLimiter;

/// The gRPC metadata key of a token (etcd's `TokenFieldNameGRPC`).
pub const TOKEN_METADATA: &str = "token";

/// The metadata key etcd also accepts (`TokenFieldNameSwagger`, the
/// gateway's `Authorization` header).
pub const AUTHORIZATION_METADATA: &str = "authorization";

/// Characters of a simple token: 32 from an alphabet of 62 is about 190
/// bits, beyond guessing.
pub const SIMPLE_TOKEN_CHARS: usize = 32;

/// A failed `Authenticate` is answered no sooner than this after it
/// arrived, whatever failed: the answer's timing tells nothing, and each
/// guess costs the guesser.
pub const AUTH_FAILURE_ANSWER_MIN: Duration = Duration::from_millis(250);

/// Times `Authenticate` verifies a password again when the auth store
/// changed between the check and the token's issue (etcd retries the same
/// way).
pub const AUTHENTICATE_ATTEMPTS_MAX: usize = 3;

/// How tokens are made (`--auth-token`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TokenOptions {
    /// Random tokens the members look up (`simple`).
    #[default]
    Simple,
    /// Signed JWTs (`jwt,pub-key=...,priv-key=...,sign-method=...`).
    Jwt(jwt::JwtOptions),
}

impl TokenOptions {
    /// Parses `--auth-token`: `simple`, or `jwt,` and the JWT options.
    ///
    /// # Errors
    /// Another provider, or bad JWT options.
    pub fn parse(text: &str) -> Result<TokenOptions, JwtError> {
        match text.split_once(',').map_or((text, ""), |(kind, rest)| (kind, rest)) {
            ("simple", "") => Ok(TokenOptions::Simple),
            ("jwt", options) => Ok(TokenOptions::Jwt(jwt::JwtOptions::parse(options)?)),
            _ => Err(JwtError::Options {
                value: text.to_owned(),
                why: "expected simple or jwt,pub-key=...,priv-key=...,sign-method=...".to_owned(),
            }),
        }
    }
}

/// The auth settings of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthOptions {
    /// How tokens are made.
    pub token: TokenOptions,
    /// A simple token's lifetime since its last use; a JWT's lifetime
    /// unless its options set `ttl`.
    pub token_ttl: Duration,
    /// bcrypt cost of new password hashes.
    pub bcrypt_cost: u32,
    /// Take a verified client certificate's common name as the user when
    /// no token is sent (`--client-cert-auth`).
    pub client_cert_auth: bool,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            token: TokenOptions::Simple,
            token_ttl: ringkv_node::AUTH_TOKEN_TTL_DEFAULT,
            bcrypt_cost: password::BCRYPT_COST_DEFAULT,
            client_cert_auth: false,
        }
    }
}

/// Why the auth settings cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// `--bcrypt-cost` out of bcrypt's range.
    #[error(
        "--bcrypt-cost {cost} is out of range: bcrypt takes {min} to {max}",
        min = password::BCRYPT_COST_MIN,
        max = password::BCRYPT_COST_MAX
    )]
    BcryptCost {
        /// The cost given.
        cost: u32,
    },
    /// The JWT keys could not be loaded.
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

/// The verified client certificate of a connection (the TLS acceptor puts
/// it in every request's extensions, inside [`crate::tls::ClientConn`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
}

/// Credentials, passwords and tokens for the services (see the module
/// docs). Shared by every service through [`crate::services::Context`].
#[derive(Debug)]
pub struct Authenticator {
    options: AuthOptions,
    jwt: Option<JwtKeys>,
    /// A hash of a random password, what unknown users are verified
    /// against; made on the blocking pool once (see
    /// [`Authenticator::prepare`]), not on the start-up path.
    dummy_hash: tokio::sync::OnceCell<String>,
    limiter: Mutex<LoginLimiter>,
}

impl Authenticator {
    /// Prepares authentication with `options` (loads JWT keys, makes the
    /// dummy hash).
    ///
    /// # Errors
    /// See [`AuthSetupError`].
    pub fn new(options: AuthOptions) -> Result<Authenticator, AuthSetupError> {
        let cost = options.bcrypt_cost;
        if !(password::BCRYPT_COST_MIN..=password::BCRYPT_COST_MAX).contains(&cost) {
            return Err(AuthSetupError::BcryptCost { cost });
        }
        let jwt = match &options.token {
            TokenOptions::Simple => None,
            TokenOptions::Jwt(o) => Some(JwtKeys::load(o, options.token_ttl)?),
        };
        Ok(Authenticator {
            options,
            jwt,
            dummy_hash: tokio::sync::OnceCell::new(),
            limiter: Mutex::new(LoginLimiter::default()),
        })
    }

    /// Makes the dummy hash if it is not made yet. `Authenticate` calls it
    /// before every verification, whoever logs in, so that the first
    /// failed login for an unknown user takes as long as one for a known
    /// user. Made on first use rather than at start: a member that never
    /// authenticates anyone never pays for it.
    pub async fn prepare(&self) {
        self.dummy().await;
    }

    async fn dummy(&self) -> &str {
        let cost = self.options.bcrypt_cost;
        self.dummy_hash
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || password::dummy_hash(cost))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    // Never fails for a valid cost; an empty hash verifies
                    // nothing, and fails as fast, which only a broken
                    // hasher would allow.
                    .unwrap_or_default()
            })
            .await
    }

    /// The settings.
    pub fn options(&self) -> &AuthOptions {
        &self.options
    }

    /// What a request presents (see the module docs).
    pub fn credential(&self, metadata: &MetadataMap, extensions: &tonic::Extensions) -> Credential {
        let token = metadata
            .get(TOKEN_METADATA)
            .or_else(|| metadata.get(AUTHORIZATION_METADATA))
            .and_then(|v| v.to_str().ok());
        if let Some(token) = token {
            return match &self.jwt {
                None => Credential::SimpleToken(token.to_owned()),
                Some(keys) => match keys.verify(token) {
                    Ok(info) => Credential::Signed(info),
                    Err(e) => {
                        tracing::debug!(error = %e, "refused a JWT");
                        Credential::Invalid
                    }
                },
            };
        }
        if self.options.client_cert_auth
            && let Some(crate::tls::ClientConn {
                certificate: Some(PeerCertificate { common_name: Some(cn) }),
                ..
            }) = extensions.get()
        {
            return Credential::Certificate(cn.clone());
        }
        Credential::Anonymous
    }

    /// Hashes a new password.
    ///
    /// # Errors
    /// Too long, or the hasher failed.
    pub async fn hash_password(&self, password: String) -> Result<String, crate::api::EtcdError> {
        password::hash(password, self.options.bcrypt_cost).await
    }

    /// Whether `password` matches `hash` (a dummy hash when `None`, so the
    /// time taken does not tell whether the user exists).
    pub async fn verify_password(&self, password: String, hash: Option<String>) -> bool {
        let dummy = self.dummy().await.to_owned();
        password::verify(password, hash, &dummy).await
    }

    /// How long `user` from `addr` must still wait before trying again.
    pub fn login_blocked_for(&self, user: &str, addr: Option<IpAddr>) -> Option<Duration> {
        self.limiter().blocked_for(user, addr, Instant::now())
    }

    /// Records a login's outcome for the brute-force limiter.
    pub fn login_done(&self, user: &str, addr: Option<IpAddr>, ok: bool) {
        let mut l = self.limiter();
        if ok { l.succeeded(user, addr) } else { l.failed(user, addr, Instant::now()) }
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, LoginLimiter> {
        // A panic while holding it leaves plain counters, still usable.
        self.limiter.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A signed token for `user` at auth revision `revision`, when tokens
    /// are JWTs; `None` for simple tokens.
    ///
    /// # Errors
    /// Signing failed.
    pub fn sign(&self, user: &str, revision: u64) -> Option<Result<String, JwtError>> {
        self.jwt.as_ref().map(|k| k.sign(user, revision))
    }

    /// A new random simple token.
    pub fn new_simple_token() -> String {
        use rand::RngExt as _;
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        (0..SIMPLE_TOKEN_CHARS)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect()
    }
}
