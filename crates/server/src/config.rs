//! Server configuration: etcd's flag names, `RINGKV_*` environment variables and a TOML file.

mod url;

pub use url::{HOST_NAME_BYTES_MAX, Host, HttpUrl, UrlError};
