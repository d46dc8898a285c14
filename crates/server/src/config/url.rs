//! `http://host:port` URLs, as etcd's `--*-urls` flags spell them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Longest DNS name accepted as a host (RFC 1035, section 2.3.4).
pub const HOST_NAME_BYTES_MAX: usize = 253;

/// Longest label of a DNS name (RFC 1035, section 2.3.4).
const HOST_LABEL_BYTES_MAX: usize = 63;

/// An `http://host:port` URL naming a listener or an advertised endpoint.
///
/// Only the `http` scheme is accepted: TLS is not implemented yet, and
/// refusing `https://` up front is better than silently speaking plaintext.
/// The peer port speaks our own framed TCP protocol, not HTTP, but keeps the
/// `http://` spelling so etcd's flags and tooling carry over unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpUrl {
    host: Host,
    port: u16,
}

/// The host part of an [`HttpUrl`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name (RFC 1123 syntax), resolved when dialing: Kubernetes-style
    /// stable names keep working when a pod's address changes.
    Name(String),
}

impl fmt::Display for Host {
    /// The host as a resolver takes it: IPv6 without brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Why a string is not an acceptable URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// No `scheme://` prefix.
    #[error("URL {url:?} has no scheme: write it as http://host:port")]
    MissingScheme {
        /// The rejected text.
        url: String,
    },
    /// `https://` (or `unixs://`) given.
    #[error("URL {url:?} asks for TLS, which ringkv does not support yet: use http://host:port")]
    TlsUnsupported {
        /// The rejected text.
        url: String,
    },
    /// A scheme other than `http`.
    #[error("URL {url:?} has scheme {scheme:?}: only http://host:port is supported")]
    UnsupportedScheme {
        /// The rejected text.
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// A path, query, fragment or user part after the authority.
    #[error("URL {url:?} has a path, query or user part: give only http://host:port")]
    UnexpectedPart {
        /// The rejected text.
        url: String,
    },
    /// No `:port`.
    #[error("URL {url:?} has no port: write it as http://host:port")]
    MissingPort {
        /// The rejected text.
        url: String,
    },
    /// A port that is not a number in 0..=65535.
    #[error("URL {url:?} has an invalid port {port:?}: expected a number from 1 to 65535")]
    InvalidPort {
        /// The rejected text.
        url: String,
        /// The port text found.
        port: String,
    },
    /// A host that is neither an IP literal nor a DNS name.
    #[error("URL {url:?} has an invalid host {host:?}: expected an IP address or a DNS name")]
    InvalidHost {
        /// The rejected text.
        url: String,
        /// The host text found.
        host: String,
    },
    /// A DNS name where an address to bind is needed.
    #[error(
        "URL {url} cannot be listened on: a listen URL needs an IP address (or localhost), \
         not a host name"
    )]
    NotBindable {
        /// The rejected URL.
        url: String,
    },
}

impl HttpUrl {
    /// A URL for an IP address and port.
    pub fn from_socket_addr(addr: SocketAddr) -> HttpUrl {
        HttpUrl { host: Host::Ip(addr.ip()), port: addr.port() }
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port (0 asks the OS for any free port when listening).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address to listen on: the IP literal, or loopback for `localhost`.
    ///
    /// # Errors
    ///
    /// [`UrlError::NotBindable`] for any other host name: which of its
    /// addresses to bind would be a guess.
    pub fn bind_addr(&self) -> Result<SocketAddr, UrlError> {
        match &self.host {
            Host::Ip(ip) => Ok(SocketAddr::new(*ip, self.port)),
            Host::Name(name) if name.eq_ignore_ascii_case("localhost") => {
                Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port))
            }
            Host::Name(_) => Err(UrlError::NotBindable { url: self.to_string() }),
        }
    }

    /// Whether the host is the "any address" (`0.0.0.0` or `::`), which can
    /// be listened on but names no host anyone could reach.
    pub fn is_unspecified(&self) -> bool {
        matches!(self.host, Host::Ip(ip) if ip.is_unspecified())
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "http://[{ip}]:{}", self.port),
            host => write!(f, "http://{host}:{}", self.port),
        }
    }
}

impl FromStr for HttpUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<HttpUrl, UrlError> {
        let url = || text.to_owned();
        let (scheme, rest) =
            text.split_once("://").ok_or_else(|| UrlError::MissingScheme { url: url() })?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {}
            "https" | "unixs" => return Err(UrlError::TlsUnsupported { url: url() }),
            _ => return Err(UrlError::UnsupportedScheme { url: url(), scheme: scheme.to_owned() }),
        }
        // etcd accepts a bare trailing slash; anything else after the
        // authority would be silently ignored there, so refuse it here.
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(UrlError::UnexpectedPart { url: url() });
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| UrlError::InvalidHost { url: url(), host: authority.to_owned() })?;
            let port =
                after.strip_prefix(':').ok_or_else(|| UrlError::MissingPort { url: url() })?;
            let ip = Ipv6Addr::from_str(host)
                .map_err(|_| UrlError::InvalidHost { url: url(), host: host.to_owned() })?;
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) =
                authority.rsplit_once(':').ok_or_else(|| UrlError::MissingPort { url: url() })?;
            (
                parse_host(host)
                    .ok_or_else(|| UrlError::InvalidHost { url: url(), host: host.to_owned() })?,
                port,
            )
        };
        if port.is_empty() {
            return Err(UrlError::MissingPort { url: url() });
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| UrlError::InvalidPort { url: url(), port: port.to_owned() })?;
        Ok(HttpUrl { host, port })
    }
}

/// An IPv4 literal or an RFC 1123 host name (IPv6 must be bracketed).
fn parse_host(host: &str) -> Option<Host> {
    if let Ok(ip) = Ipv4Addr::from_str(host) {
        return Some(Host::Ip(IpAddr::V4(ip)));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= HOST_LABEL_BYTES_MAX
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let valid =
        !host.is_empty() && host.len() <= HOST_NAME_BYTES_MAX && host.split('.').all(label_ok);
    valid.then(|| Host::Name(host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HttpUrl, UrlError> {
        text.parse()
    }

    #[test]
    fn accepts_ip_literals_names_and_a_trailing_slash() {
        let url = parse("http://10.0.1.10:2380").unwrap();
        assert_eq!(url.host(), &Host::Ip("10.0.1.10".parse().unwrap()));
        assert_eq!(url.port(), 2380);
        assert_eq!(url.to_string(), "http://10.0.1.10:2380");

        let url = parse("HTTP://Infra0.Example.com:2380/").unwrap();
        assert_eq!(url.host(), &Host::Name("infra0.example.com".into()));
        assert_eq!(url.to_string(), "http://infra0.example.com:2380");

        let url = parse("http://[::1]:2379").unwrap();
        assert_eq!(url.to_string(), "http://[::1]:2379");
        assert_eq!(url.bind_addr().unwrap(), "[::1]:2379".parse().unwrap());
    }

    #[test]
    fn refuses_what_it_cannot_serve_with_the_reason() {
        assert!(matches!(parse("10.0.0.1:2380"), Err(UrlError::MissingScheme { .. })));
        assert!(matches!(parse("https://a:2380"), Err(UrlError::TlsUnsupported { .. })));
        assert!(matches!(parse("unix://sock:1"), Err(UrlError::UnsupportedScheme { .. })));
        assert!(matches!(parse("http://a:2380/path"), Err(UrlError::UnexpectedPart { .. })));
        assert!(matches!(parse("http://u@a:2380"), Err(UrlError::UnexpectedPart { .. })));
        assert!(matches!(parse("http://a"), Err(UrlError::MissingPort { .. })));
        assert!(matches!(parse("http://a:"), Err(UrlError::MissingPort { .. })));
        assert!(matches!(parse("http://[::1]"), Err(UrlError::MissingPort { .. })));
        assert!(matches!(parse("http://a:99999"), Err(UrlError::InvalidPort { .. })));
        assert!(matches!(parse("http://a:x"), Err(UrlError::InvalidPort { .. })));
        assert!(matches!(parse("http://::1:2379"), Err(UrlError::InvalidHost { .. })));
        assert!(matches!(parse("http://-a:1"), Err(UrlError::InvalidHost { .. })));
        assert!(matches!(parse("http://a_b:1"), Err(UrlError::InvalidHost { .. })));
        assert!(matches!(parse("http://:1"), Err(UrlError::InvalidHost { .. })));
        assert!(matches!(parse("http://[zz]:1"), Err(UrlError::InvalidHost { .. })));
    }

    #[test]
    fn only_addresses_and_localhost_can_be_bound() {
        assert_eq!(
            parse("http://localhost:2379").unwrap().bind_addr().unwrap(),
            "127.0.0.1:2379".parse().unwrap()
        );
        assert_eq!(
            parse("http://0.0.0.0:2379").unwrap().bind_addr().unwrap(),
            "0.0.0.0:2379".parse().unwrap()
        );
        assert!(parse("http://0.0.0.0:2379").unwrap().is_unspecified());
        assert!(matches!(
            parse("http://db.example:2379").unwrap().bind_addr(),
            Err(UrlError::NotBindable { .. })
        ));
    }
}
