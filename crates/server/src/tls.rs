//! TLS for the client port and the peer port: rustls with the `ring`
//! provider, certificates and keys in PEM files named by etcd's flags.
//!
//! | flag | here |
//! | --- | --- |
//! | `--cert-file`, `--key-file` | the client port's certificate and key ([`TlsFiles`]) |
//! | `--trusted-ca-file` | CAs client certificates must chain to |
//! | `--client-cert-auth` | a client must present a certificate from those CAs; its common name is the user when no token is sent |
//! | `--peer-cert-file`, `--peer-key-file` | this member's certificate, served and presented to peers |
//! | `--peer-trusted-ca-file` | CAs peer certificates (both ways) must chain to |
//! | `--peer-client-cert-auth` | a dialing peer must present a certificate from those CAs |
//!
//! Only listeners whose URL is `https://` speak TLS, as in etcd.
//!
//! # Reloading
//!
//! A [`ReloadingServerConfig`] looks at its files' modification times and
//! sizes at most every [`CERT_RELOAD_CHECK_INTERVAL`], and builds a new
//! configuration when one changed: a renewed certificate (or CA) is served
//! to new connections without a restart. A file that does not load (half
//! written, wrong key) keeps the previous configuration in force and is
//! logged; the next check tries again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::warn;

use crate::auth::PeerCertificate;

/// How often the files of a [`ReloadingServerConfig`] are looked at (on a
/// new connection; never more often).
pub const CERT_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Longest a TLS handshake may take before the connection is dropped: a
/// client that opens connections and never finishes them costs little.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// ALPN protocols the client port offers: gRPC (HTTP/2) and the gateway's
/// HTTP/1.1.
pub const CLIENT_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The files of one side's TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CAs (PEM) that the other side's certificates must chain to.
    pub trusted_ca: Option<PathBuf>,
    /// Require the other side's certificate (it is verified when given
    /// anyway, if `trusted_ca` is set).
    pub client_cert_auth: bool,
}

/// Why TLS material is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind needed.
    #[error("{path} holds no {what} in PEM form")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
    },
    /// rustls refused the material (a key that does not match the
    /// certificate, an unsupported key type, a CA that is not one).
    #[error("{what}: {source}")]
    Refused {
        /// What was being set up.
        what: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// Client certificates are required, but no CA to verify them is given.
    #[error("{flag} needs {ca_flag}: the CAs client certificates must chain to")]
    NoClientCa {
        /// The requiring flag.
        flag: &'static str,
        /// The missing flag.
        ca_flag: &'static str,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// The certificates of a PEM file.
///
/// # Errors
/// Unreadable, or no certificate in it.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::Missing { path: path.to_owned(), what: "certificate" });
    }
    Ok(certs)
}

/// The private key of a PEM file.
///
/// # Errors
/// Unreadable, or no key in it.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| TlsError::Missing { path: path.to_owned(), what: "private key" })
}

/// The CAs of a PEM file.
///
/// # Errors
/// Unreadable, no certificate, or one that is no usable CA.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::Refused {
            what: format!("CA certificate in {}", path.display()),
            source,
        })?;
    }
    Ok(roots)
}

/// A server configuration from `files` (`flag` and `ca_flag` name them in
/// errors).
///
/// # Errors
/// See [`TlsError`].
pub fn server_config(
    files: &TlsFiles,
    alpn: &[&[u8]],
    flags: (&'static str, &'static str),
) -> Result<rustls::ServerConfig, TlsError> {
    let refused = |what: &str| {
        let what = what.to_owned();
        move |source| TlsError::Refused { what, source }
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(refused("TLS protocol versions"))?;
    let builder = match (&files.trusted_ca, files.client_cert_auth) {
        (None, true) => return Err(TlsError::NoClientCa { flag: flags.0, ca_flag: flags.1 }),
        (None, false) => builder.with_no_client_auth(),
        (Some(ca), require) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if require { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier.build().map_err(|e| TlsError::Refused {
                what: format!("client certificate verifier for {}", ca.display()),
                source: rustls::Error::General(e.to_string()),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(refused(&format!(
            "certificate {} with key {}",
            files.cert.display(),
            files.key.display()
        )))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration presenting `files`' certificate and trusting
/// its CAs (for dialing peers).
///
/// # Errors
/// See [`TlsError`].
pub fn client_config(
    files: &TlsFiles,
    ca_flag: &'static str,
) -> Result<rustls::ClientConfig, TlsError> {
    let Some(ca) = &files.trusted_ca else {
        return Err(TlsError::NoClientCa { flag: "dialing peers over https", ca_flag });
    };
    let roots = load_roots(ca)?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Refused { what: "TLS protocol versions".into(), source })?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|source| TlsError::Refused {
            what: format!("client certificate {}", files.cert.display()),
            source,
        })
}

/// What identifies a version of a file: modification time and size.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A server configuration that follows its files (see the module docs).
#[derive(Debug)]
pub struct ReloadingServerConfig {
    files: TlsFiles,
    alpn: Vec<&'static [u8]>,
    flags: (&'static str, &'static str),
    check_interval: Duration,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    config: Arc<rustls::ServerConfig>,
    stamps: Vec<Stamp>,
    checked_at: Instant,
}

impl ReloadingServerConfig {
    /// Loads `files` now.
    ///
    /// # Errors
    /// See [`TlsError`]: a server does not start with unusable TLS files.
    pub fn new(
        files: TlsFiles,
        alpn: &[&'static [u8]],
        flags: (&'static str, &'static str),
    ) -> Result<ReloadingServerConfig, TlsError> {
        let stamps = Self::stamps(&files);
        let config = Arc::new(server_config(&files, alpn, flags)?);
        Ok(ReloadingServerConfig {
            files,
            alpn: alpn.to_vec(),
            flags,
            check_interval: CERT_RELOAD_CHECK_INTERVAL,
            state: Mutex::new(Loaded { config, stamps, checked_at: Instant::now() }),
        })
    }

    fn stamps(files: &TlsFiles) -> Vec<Stamp> {
        std::iter::once(&files.cert)
            .chain(std::iter::once(&files.key))
            .chain(files.trusted_ca.iter())
            .map(|p| stamp(p))
            .collect()
    }

    /// The configuration in force, reloaded first if a file changed.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked_at.elapsed() >= self.check_interval {
            state.checked_at = Instant::now();
            let stamps = Self::stamps(&self.files);
            if stamps != state.stamps {
                match server_config(&self.files, &self.alpn, self.flags) {
                    Ok(config) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS files changed: reloaded");
                        state.config = Arc::new(config);
                        state.stamps = stamps;
                    }
                    Err(error) => {
                        // Keep serving the last good files; try again at
                        // the next check.
                        warn!(%error, "TLS files changed but do not load; keeping the previous ones");
                    }
                }
            }
        }
        Arc::clone(&state.config)
    }
}

/// What the client port knows about a connection, in every request's
/// extensions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientConn {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// Its verified certificate, if it presented one.
    pub certificate: Option<PeerCertificate>,
}

/// A client connection over TLS, as tonic serves it.
#[derive(Debug)]
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: ClientConn,
}

impl TlsConn {
    /// Wraps an accepted TLS stream.
    pub fn new(inner: tokio_rustls::server::TlsStream<TcpStream>, remote: SocketAddr) -> TlsConn {
        let certificate = inner
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|leaf| PeerCertificate { common_name: common_name(leaf) });
        TlsConn { inner, info: ClientConn { remote: Some(remote), certificate } }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ClientConn;

    fn connect_info(&self) -> ClientConn {
        self.info.clone()
    }
}

/// The subject common name of a DER certificate (one rustls has verified).
///
/// Reads only what it needs: `Certificate ::= SEQUENCE { tbsCertificate
/// SEQUENCE { [0] version OPTIONAL, serial, signature, issuer, validity,
/// subject, ... } ... }`, then the first `commonName` (2.5.4.3) attribute
/// of `subject` whose value is a UTF8String, PrintableString or IA5String.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (cert, _) = der_item(der, 0x30)?;
    let (mut tbs, _) = der_item(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_item(tbs, 0xa0)?.1;
    }
    // serial, signature, issuer, validity
    for tag in [0x02, 0x30, 0x30, 0x30] {
        tbs = der_item(tbs, tag)?.1;
    }
    let (mut subject, _) = der_item(tbs, 0x30)?;
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while !subject.is_empty() {
        let (set, rest) = der_item(subject, 0x31)?;
        subject = rest;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, rest) = der_item(attrs, 0x30)?;
            attrs = rest;
            let (oid, value) = der_item(attr, 0x06)?;
            if oid == CN {
                let tag = *value.first()?;
                if matches!(tag, 0x0c | 0x13 | 0x16) {
                    let (text, _) = der_item(value, tag)?;
                    return String::from_utf8(text.to_vec()).ok();
                }
            }
        }
    }
    None
}

/// Splits one DER item with tag `tag` off `data`: (its contents, the rest).
fn der_item(data: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = data.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, cn: &str) -> TlsFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            trusted_ca: None,
            client_cert_auth: false,
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_changed_certificate_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_cert(dir.path(), "first");
        let flags = ("--client-cert-auth", "--trusted-ca-file");
        let mut reloading = ReloadingServerConfig::new(files.clone(), &CLIENT_ALPN, flags).unwrap();
        reloading.check_interval = Duration::ZERO;
        let first = reloading.current();
        assert!(Arc::ptr_eq(&first, &reloading.current()), "unchanged files, same config");
        // Half written: the previous configuration stays in force.
        std::fs::write(&files.cert, b"-----BEGIN CERTIFICATE-----\ngarbage").unwrap();
        assert!(Arc::ptr_eq(&first, &reloading.current()));
        write_cert(dir.path(), "second");
        let second = reloading.current();
        assert!(!Arc::ptr_eq(&first, &second), "a renewed certificate is loaded");
        assert!(Arc::ptr_eq(&second, &reloading.current()));
        // Requiring client certificates without CAs cannot work.
        let no_ca = TlsFiles { client_cert_auth: true, ..files };
        assert!(matches!(
            ReloadingServerConfig::new(no_ca, &CLIENT_ALPN, flags),
            Err(TlsError::NoClientCa { .. })
        ));
    }

    #[test]
    fn reads_the_common_name_of_real_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["node1.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "ringkv");
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("alice"));
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), None, "no common name");
        assert_eq!(common_name(&cert.der()[..20]), None, "truncated");
        assert_eq!(common_name(b""), None);
    }
}
