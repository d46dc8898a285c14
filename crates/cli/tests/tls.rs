//! Three `ringkv server` processes with TLS on both ports, certificates
//! made at run time: etcdctl 3.4 talks to them over `https://` with a
//! client certificate, one without a certificate or with one from another
//! CA is refused, the certificate's common name is the user once auth is
//! enabled, and the peer port refuses a dialer without a certificate.
//! Needs `etcdctl` on `PATH` (`scripts/setup` installs it).
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use support::{free_port, log_tail, spawn_ringkv, wait_until};

/// Bounds each wait (a hang fails the test; this is not a speed check).
const WAIT: Duration = Duration::from_secs(60);

/// A CA and what it signs, written as PEM files under `dir`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn ca(&self, name: &str) -> (Issuer<'static, KeyPair>, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        let cert = params.self_signed(&key).unwrap();
        let path = self.dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).unwrap();
        (Issuer::new(params, key), path)
    }

    /// A certificate for `cn`, valid for 127.0.0.1 and localhost: (cert, key).
    fn issue(&self, ca: &Issuer<'_, KeyPair>, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, ca).unwrap();
        let (c, k) =
            (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

struct Members {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn etcdctl(endpoints: &str, tls: &[String], args: &[&str]) -> Result<String, String> {
    etcdctl_dial(endpoints, tls, args, "3s")
}

/// etcdctl where the connection is expected to be refused: a short dial
/// timeout, since a refused handshake looks like a slow one to etcdctl.
fn etcdctl_refused(endpoints: &str, tls: &[String], args: &[&str]) -> String {
    match etcdctl_dial(endpoints, tls, args, "1s") {
        Ok(out) => panic!("etcdctl {args:?} on {endpoints} succeeded: {out}"),
        Err(e) => e,
    }
}

fn etcdctl_dial(
    endpoints: &str,
    tls: &[String],
    args: &[&str],
    dial: &str,
) -> Result<String, String> {
    let out = Command::new("etcdctl")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--dial-timeout={dial}"))
        .arg(format!("--command-timeout={}", if dial == "1s" { "2s" } else { "10s" }))
        .args(tls)
        .args(args)
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_CACERT")
        .env_remove("ETCDCTL_CERT")
        .env_remove("ETCDCTL_KEY")
        .output()
        .expect("etcdctl runs (scripts/setup installs it)");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn tls_flags(ca: &Path, cert: Option<&(PathBuf, PathBuf)>) -> Vec<String> {
    let mut flags = vec![format!("--cacert={}", ca.display())];
    if let Some((c, k)) = cert {
        flags.push(format!("--cert={}", c.display()));
        flags.push(format!("--key={}", k.display()));
    }
    flags
}

/// `GET /members` on a peer port over TLS, presenting `client` (or no
/// certificate): the answer's first line, or the error.
fn peer_get(port: u16, ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((c, k)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c).unwrap().map(Result::unwrap).collect(),
                PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
    };
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let request =
        format!("GET /members HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    if answer.is_empty() {
        return Err("closed without an answer".to_owned());
    }
    Ok(String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned())
}

#[test]
fn a_tls_cluster_serves_etcdctl_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki { dir: dir.path().to_owned() };
    let (ca, ca_pem) = pki.ca("ringkv");
    let (evil, _) = pki.ca("evil");
    let server = pki.issue(&ca, "server", "ringkv-member");
    let root = pki.issue(&ca, "root", "root");
    let alice = pki.issue(&ca, "alice", "alice");
    let stranger = pki.issue(&evil, "stranger", "root");

    let n = 3;
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, p))| format!("m{i}=https://127.0.0.1:{p}")).collect();
    let mut members = Members { children: Vec::new(), logs: Vec::new() };
    for (i, (client, peer)) in ports.iter().enumerate() {
        let args: Vec<String> = vec![
            "server".into(),
            format!("--name=m{i}"),
            format!("--data-dir={}", dir.path().join(format!("m{i}")).display()),
            format!("--listen-client-urls=https://127.0.0.1:{client}"),
            format!("--listen-peer-urls=https://127.0.0.1:{peer}"),
            format!("--initial-cluster={}", initial.join(",")),
            "--initial-cluster-token=tls-test".into(),
            format!("--heartbeat-interval={}", support::TEST_HEARTBEAT_MS),
            format!("--election-timeout={}", support::TEST_ELECTION_MS),
            format!("--cert-file={}", server.0.display()),
            format!("--key-file={}", server.1.display()),
            format!("--trusted-ca-file={}", ca_pem.display()),
            "--client-cert-auth".into(),
            format!("--peer-cert-file={}", server.0.display()),
            format!("--peer-key-file={}", server.1.display()),
            format!("--peer-trusted-ca-file={}", ca_pem.display()),
            "--peer-client-cert-auth".into(),
            "--bcrypt-cost=4".into(),
        ];
        let log = dir.path().join(format!("m{i}.log"));
        members.children.push(spawn_ringkv(&args, dir.path(), &log).unwrap());
        members.logs.push(log);
    }
    let endpoints: Vec<String> =
        ports.iter().map(|(c, _)| format!("https://127.0.0.1:{c}")).collect();
    let all = endpoints.join(",");
    let with_root = tls_flags(&ca_pem, Some(&root));
    let logs = || members.logs.iter().map(|l| log_tail(l)).collect::<Vec<_>>().join("\n---\n");
    let up = wait_until(WAIT, || etcdctl(&endpoints[0], &with_root, &["put", "k", "v"]).is_ok());
    assert!(up, "the TLS cluster never took a write:\n{}", logs());

    // Every member serves over https, with the write replicated.
    for ep in &endpoints {
        let got = etcdctl(ep, &with_root, &["get", "k", "--print-value-only"]);
        assert_eq!(got.as_deref(), Ok("v\n"), "on {ep}");
    }
    // No client certificate, or one from another CA: refused.
    etcdctl_refused(&endpoints[1], &tls_flags(&ca_pem, None), &["get", "k"]);
    etcdctl_refused(&endpoints[1], &tls_flags(&ca_pem, Some(&stranger)), &["get", "k"]);
    // Plaintext on a TLS port: refused.
    let plain = format!("http://127.0.0.1:{}", ports[2].0);
    etcdctl_refused(&plain, &[], &["get", "k"]);
    let log = log_tail(&members.logs[1]);
    assert!(log.contains("TLS handshake refused"), "the refusals are logged: {log}");

    // With auth enabled, the certificate's common name is the user.
    assert_eq!(
        etcdctl(&all, &with_root, &["user", "add", "root:pw"]).unwrap(),
        "User root created\n"
    );
    assert_eq!(etcdctl(&all, &with_root, &["auth", "enable"]).unwrap(), "Authentication Enabled\n");
    assert_eq!(etcdctl(&all, &with_root, &["put", "k", "v2"]).unwrap(), "OK\n");
    let refused =
        etcdctl(&all, &tls_flags(&ca_pem, Some(&alice)), &["put", "k", "v3"]).unwrap_err();
    assert!(refused.contains("etcdserver: permission denied"), "{refused}");

    // The peer port: a dialer without a certificate is refused, one with a
    // certificate from the cluster's CA is answered.
    let refused = peer_get(ports[0].1, &ca_pem, None);
    assert!(refused.is_err(), "a peer without a certificate got {refused:?}");
    assert_eq!(peer_get(ports[0].1, &ca_pem, Some(&server)).unwrap(), "HTTP/1.1 200 OK");
    let log = log_tail(&members.logs[0]);
    assert!(log.contains("refused a peer connection: TLS handshake failed"), "{log}");
}
