//! Server configuration: etcd's flag names, `RINGKV_*` environment variables and a TOML file.
