//! Server configuration: etcd's flag names, `RINGKV_*` environment variables
//! and a TOML file, validated into a typed [`ServerConfig`].
//!
//! Every setting has one name, spelled three ways:
//!
//! | flag                       | environment                  | `--config-file` key      |
//! | -------------------------- | ---------------------------- | ------------------------ |
//! | `--data-dir /var/lib/kv`   | `RINGKV_DATA_DIR=/var/lib/kv`| `data-dir = "/var/lib/kv"` |
//!
//! **Precedence: flag > environment > file > default**, setting by setting.
//! (etcd itself ignores every flag once `--config-file` is given; ringkv
//! layers them instead, so one file can hold the shared settings and a flag
//! can override one of them on one node.)
//!
//! Flag names, meanings and defaults follow etcd's, so an etcd command line
//! works unchanged, with these differences: the data directory defaults to
//! `./ringkv-data`, URLs default to `127.0.0.1` rather than `localhost`,
//! `--listen-peer-urls` are all `http://` or all `https://`, and `--engine`,
//! `--shards` and `--hash-key-segments` are ringkv's own.
//!
//! The environment is read from the map passed to [`parse_from`], never from
//! the process directly, so that tests need no global state (and clap's own
//! `env` support, which reads the process environment, is not used).

mod url;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use std::num::NonZeroU32;

use clap::{CommandFactory, Parser};
use ringkv_ring::{HashKeyRule, Keyspace};
use serde::Deserialize;

pub use url::{HOST_NAME_BYTES_MAX, Host, HttpUrl, UrlError};

use crate::compactor::{
    AutoCompactionMode, DEFAULT_AUTO_COMPACTION_RETENTION, Policy, RetentionError,
    policy_from_flags,
};
use crate::peer::FRAME_BYTES_MAX;

/// Default `--name`.
pub const DEFAULT_NAME: &str = "default";
/// Default `--data-dir` (etcd's is `<name>.etcd`; the README promises this one).
pub const DEFAULT_DATA_DIR: &str = "./ringkv-data";
/// Default `--listen-client-urls` and `--advertise-client-urls`.
pub const DEFAULT_CLIENT_URL: &str = "http://127.0.0.1:2379";
/// Default `--listen-peer-urls` and `--initial-advertise-peer-urls`.
pub const DEFAULT_PEER_URL: &str = "http://127.0.0.1:2380";
/// Default `--initial-cluster-token`.
pub const DEFAULT_INITIAL_CLUSTER_TOKEN: &str = "ringkv-cluster";
/// Default `--heartbeat-interval`, in milliseconds (etcd's).
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Default `--election-timeout`, in milliseconds (etcd's).
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1000;
/// Default `--snapshot-count`: applied entries between snapshots (etcd's).
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// Default `--quota-backend-bytes` (etcd's: 2 GiB). `0` also means this.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Default `--backend-cache-bytes`: the store engine's page cache (redb's),
/// the largest resident memory that grows with the data. 256 MiB keeps a
/// million keys of 256 B under etcd's resident memory with the same data
/// (`scripts/memory-vs-etcd`) while serving a working set of that size
/// from memory.
pub const DEFAULT_BACKEND_CACHE_BYTES: u64 = ringkv_storage::mvcc::ENGINE_CACHE_BYTES as u64;
/// Smallest `--backend-cache-bytes`: redb needs room for the pages of one
/// B-tree path, and less than this only trades memory for disk reads.
pub const BACKEND_CACHE_BYTES_MIN: u64 = 1024 * 1024;
/// Default `--max-request-bytes` (etcd's: 1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1024 * 1024 + 512 * 1024;
/// Default `--max-txn-ops` (etcd's).
pub const DEFAULT_MAX_TXN_OPS: u64 = 128;
/// Default `--shards`: one shard is exactly an etcd.
pub const DEFAULT_SHARDS: u64 = 1;
/// Default `--replicas`: replicas per data shard once a sharded cluster has
/// more members than that.
pub const DEFAULT_REPLICAS: u64 = ringkv_node::REPLICAS_DEFAULT as u64;
/// Largest `--replicas` (the ring's limit).
pub const REPLICAS_MAX: u64 = ringkv_ring::REPLICAS_MAX as u64;
/// Default `--placement-moves`: data shards move to where the ring places
/// them (a shard can return to a member it left, under a fresh replica id).
pub const DEFAULT_PLACEMENT_MOVES: bool = true;
/// Default `--max-concurrent-moves`.
pub const DEFAULT_MAX_CONCURRENT_MOVES: u64 = ringkv_node::MAX_CONCURRENT_MOVES_DEFAULT as u64;
/// Largest `--max-concurrent-moves`: more shards moving at once than any
/// cluster has would only turn the throttle off, which a large number
/// below this says as plainly.
pub const MAX_CONCURRENT_MOVES_LIMIT: u64 = ringkv_ring::SHARD_COUNT_MAX as u64;
/// Default `--move-bytes-per-second`: 64 MiB/s (see
/// [`ringkv_node::MOVE_BYTES_PER_SECOND_DEFAULT`]); 0 means no limit.
pub const DEFAULT_MOVE_BYTES_PER_SECOND: u64 = ringkv_node::MOVE_BYTES_PER_SECOND_DEFAULT;
/// Default `--hash-key-segments`: 0, the whole key (or its `{tag}`)
/// decides its shard.
pub const DEFAULT_HASH_KEY_SEGMENTS: u64 = 0;
/// Largest `--hash-key-segments`: more segments than any key layout has
/// would only make every key its own hash key, which 0 says plainly.
pub const HASH_KEY_SEGMENTS_MAX: u64 = 64;

/// The election timeout must be at least this many heartbeat intervals, as
/// etcd requires: fewer, and one delayed heartbeat starts an election.
pub const ELECTION_TIMEOUT_HEARTBEATS_MIN: u64 = 5;
/// Longest `--election-timeout`, in milliseconds (etcd's limit: 50 s).
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 50_000;
/// Largest `--max-request-bytes`: a request travels to the other replicas in
/// one peer frame, so it must fit in one with room for its envelope.
pub const MAX_REQUEST_BYTES_LIMIT: u64 = (FRAME_BYTES_MAX / 2) as u64;
/// Largest `--max-txn-ops`; bounds the work of one transaction.
pub const MAX_TXN_OPS_LIMIT: u64 = 65_536;
/// Largest `--shards` (the ring's limit).
pub const SHARDS_MAX: u64 = ringkv_ring::SHARD_COUNT_MAX as u64;
/// `--quota-backend-bytes` above this is accepted with a warning, as etcd
/// does: larger backends make compaction and snapshots slow.
pub const QUOTA_BACKEND_BYTES_WARN: u64 = 8 * 1024 * 1024 * 1024;
/// Longest `--name`, in bytes.
pub const NAME_BYTES_MAX: usize = 255;
/// Largest `--config-file` read; a larger one is surely a wrong path.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Prefix of the environment variable for each flag: `--data-dir` is
/// `RINGKV_DATA_DIR`.
pub const ENV_PREFIX: &str = "RINGKV_";

const AFTER_HELP: &str = "\
Every flag can also be set in the environment as RINGKV_<FLAG> (upper case, dashes as \
underscores: --data-dir is RINGKV_DATA_DIR) or in the --config-file TOML file (keys as \
the flag names: data-dir = \"/var/lib/ringkv\"). Precedence: flag > environment > file > default.";

/// The server's flags as given, before defaults and validation. Also the
/// shape of the `--config-file` TOML file and of the `RINGKV_*` environment.
///
/// `None` means "not given here", so the layers can be merged setting by
/// setting. The CLI may `#[command(flatten)]` this into its own parser and
/// hand the result to [`ServerConfig::from_args`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Parser, Deserialize)]
#[command(name = "ringkv", about = "ringkv server: an etcd v3 compatible store", after_help = AFTER_HELP)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerArgs {
    /// TOML file with any of these settings, keys named as the flags.
    #[arg(long, value_name = "PATH")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,

    /// Human-readable name of this member; must appear in --initial-cluster. [default: default]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Directory for the write-ahead log, snapshots and state. [default: ./ringkv-data]
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,

    /// Comma-separated URLs to serve clients on. [default: http://127.0.0.1:2379]
    #[arg(long, value_name = "URLS")]
    #[serde(default, deserialize_with = "url_list")]
    pub listen_client_urls: Option<String>,

    /// Comma-separated client URLs to advertise to the cluster. [default: the listen URLs]
    #[arg(long, value_name = "URLS")]
    #[serde(default, deserialize_with = "url_list")]
    pub advertise_client_urls: Option<String>,

    /// Comma-separated URLs to accept peer connections on. [default: http://127.0.0.1:2380]
    #[arg(long, value_name = "URLS")]
    #[serde(default, deserialize_with = "url_list")]
    pub listen_peer_urls: Option<String>,

    /// Comma-separated peer URLs other members reach this one at. [default: the listen URLs]
    #[arg(long, value_name = "URLS")]
    #[serde(default, deserialize_with = "url_list")]
    pub initial_advertise_peer_urls: Option<String>,

    /// Initial members as name=peer-url pairs, comma-separated; a name may repeat for several
    /// URLs. [default: this member's name with its advertised peer URLs]
    #[arg(long, value_name = "NAME=URL,...")]
    #[serde(default, deserialize_with = "url_list")]
    pub initial_cluster: Option<String>,

    /// Whether this member creates a cluster or joins a running one. [default: new]
    #[arg(long, value_name = "STATE")]
    pub initial_cluster_state: Option<ClusterState>,

    /// Cluster token: nodes with different tokens never talk to each other. [default:
    /// ringkv-cluster]
    #[arg(long, value_name = "TOKEN")]
    pub initial_cluster_token: Option<String>,

    /// Time between leader heartbeats, in milliseconds. [default: 100]
    #[arg(long, value_name = "MS")]
    pub heartbeat_interval: Option<u64>,

    /// Time without a leader before an election, in milliseconds. [default: 1000]
    #[arg(long, value_name = "MS")]
    pub election_timeout: Option<u64>,

    /// Applied entries between two snapshots of a shard. [default: 100000]
    #[arg(long, value_name = "N")]
    pub snapshot_count: Option<u64>,

    /// Storage size at which writes are refused with NOSPACE; 0 means the default. [default:
    /// 2147483648]
    #[arg(long, value_name = "BYTES")]
    pub quota_backend_bytes: Option<u64>,

    /// Memory for the store engine's page cache, in bytes: a bound on
    /// resident memory that grows with the data; reads of pages outside it
    /// go to the file (the OS page cache). [default: 268435456]
    #[arg(long, value_name = "BYTES")]
    pub backend_cache_bytes: Option<u64>,

    /// Largest client request accepted, in bytes. [default: 1572864]
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<u64>,

    /// Largest number of operations in one transaction. [default: 128]
    #[arg(long, value_name = "N")]
    pub max_txn_ops: Option<u64>,

    /// Log level. [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,

    /// Log format: human (one readable line per event) or json (one JSON object per line,
    /// for log collectors). [default: human]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Consensus engine of every shard. [default: raft]
    #[arg(long, value_name = "ENGINE")]
    pub engine: Option<EngineKind>,

    /// Number of data shards, fixed at cluster creation. [default: 1]
    #[arg(long, value_name = "N")]
    pub shards: Option<u64>,

    /// Replicas per data shard once a sharded cluster has more members than that (with fewer, every member holds every shard), fixed at cluster creation. [default: 3]
    #[arg(long, value_name = "R")]
    pub replicas: Option<u64>,

    /// Most data shards whose placement the metadata leader changes at once. [default: 4]
    #[arg(long, value_name = "N")]
    pub max_concurrent_moves: Option<u64>,

    /// With --placement-moves: how long a member goes unheard before the metadata leader places its data shards on the other members (while at least --replicas others are up). [default: 5m]
    #[arg(long, value_name = "DURATION")]
    pub down_timeout: Option<String>,

    /// Move data shards to the members placement targets: beyond --replicas members each shard lives on R of them, placed by the ring, and joining or leaving members move about 1/N of the replicas. With false every member holds every shard (docs/adr/0002-sharding.md). [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub placement_moves: Option<bool>,

    /// Snapshot bytes per second this member sends to replicas of data shards being caught up (moves, far-behind followers), so that moves do not starve client traffic; 0 means no limit. [default: 67108864 (64 MiB)]
    #[arg(long, value_name = "BYTES")]
    pub move_bytes_per_second: Option<u64>,

    /// This member's failure domain (rack, zone, region): each data shard's replicas go to distinct zones first. At most 64 bytes, printable, no spaces; empty means none. [default: none]
    #[arg(long, value_name = "LABEL")]
    pub zone: Option<String>,

    /// Auto compaction mode: `periodic` (the retention is a time) or `revision` (a number of revisions). [default: periodic]
    #[arg(long, value_name = "MODE")]
    pub auto_compaction_mode: Option<AutoCompactionMode>,

    /// Auto compaction retention: periodic: hours as an integer, or a duration such as `30m`, `5s`; revision: the number of revisions kept. `0` turns it off. The only way to compact a sharded cluster: every data shard is compacted at its own revision. [default: 0]
    #[arg(long, value_name = "RETENTION")]
    pub auto_compaction_retention: Option<String>,

    /// How often `revision` auto compaction checks (etcd's fixed 5 minutes; a knob for tests). [default: 5m]
    #[arg(long, value_name = "DURATION", hide = true)]
    pub auto_compaction_revision_interval: Option<String>,

    /// Hash key of a key: its first N `/`-separated segments decide its shard (0: the whole key); a `{tag}` in them wins, as in Redis Cluster. Fixed at cluster creation. [default: 0]
    #[arg(long, value_name = "N")]
    pub hash_key_segments: Option<u64>,

    /// Auth token type: `simple`, or `jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>[,ttl=<dur>]`. [default: simple]
    #[arg(long, value_name = "TYPE")]
    pub auth_token: Option<String>,

    /// Seconds a simple auth token stays valid since its last use. [default: 300]
    #[arg(long, value_name = "SECONDS")]
    pub auth_token_ttl: Option<u64>,

    /// bcrypt cost of new password hashes (4 to 31). [default: 10]
    #[arg(long, value_name = "COST")]
    pub bcrypt_cost: Option<u32>,

    /// Certificate (PEM) served on https:// client URLs.
    #[arg(long, value_name = "PATH")]
    pub cert_file: Option<PathBuf>,

    /// Private key (PEM) of --cert-file.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// CAs (PEM) that client certificates must chain to.
    #[arg(long, value_name = "PATH")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Require client certificates from --trusted-ca-file; their common name is the user when no token is sent.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub client_cert_auth: Option<bool>,

    /// Certificate (PEM) served on https:// peer URLs and presented to peers.
    #[arg(long, value_name = "PATH")]
    pub peer_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --peer-cert-file.
    #[arg(long, value_name = "PATH")]
    pub peer_key_file: Option<PathBuf>,

    /// CAs (PEM) that peer certificates must chain to.
    #[arg(long, value_name = "PATH")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Require a certificate from --peer-trusted-ca-file of every dialing peer.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub peer_client_cert_auth: Option<bool>,

    /// TEST ONLY: treat every data shard as hosted elsewhere for this member's clients: every
    /// watch on one is relayed from another member and every KV request for one is forwarded
    /// to another member (exercises the relay and the forwarding while every member hosts
    /// every shard). `--debug-relay-watches` is its former name. Hidden: never for production.
    /// [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        hide = true,
        alias = "debug-relay-watches"
    )]
    pub debug_remote_shards: Option<bool>,

    /// TEST ONLY: with --debug-remote-shards, also refuse every relayed watch and forwarded KV
    /// call on a data shard, as a member that hosts none would (NotHosted). Hidden: never for
    /// production. [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", hide = true)]
    pub debug_refuse_forwarded: Option<bool>,

    /// TEST ONLY: with --debug-remote-shards, these data shards (comma-separated numbers) stay
    /// served here, so that a request spans local and forwarded parts. Hidden: never for
    /// production. [default: none]
    #[arg(long, value_name = "SHARDS", value_delimiter = ',', hide = true)]
    pub debug_local_shards: Option<Vec<u64>>,
}

/// Whether this member creates the cluster or joins an existing one
/// (`--initial-cluster-state`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    #[default]
    New,
    /// Join a cluster that is already running.
    Existing,
}

/// The consensus engine every shard runs (`--engine`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Raft.
    #[default]
    Raft,
    /// Multi-Paxos.
    Paxos,
}

/// Log verbosity (`--log-level`). etcd's `panic` and `fatal` are accepted
/// and mean `error`.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-message traces.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Problems the node works around.
    Warn,
    /// Problems that lose availability or data.
    #[value(alias = "panic", alias = "fatal")]
    #[serde(alias = "panic", alias = "fatal")]
    Error,
}

/// How log lines are written (`--log-format`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event: time, level, target, message, fields.
    #[default]
    Human,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message`
    /// and the event's own fields), for log collectors and `ringkv
    /// playground`.
    Json,
}

impl LogLevel {
    /// The level's name as `tracing` filters spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// The initial members (`--initial-cluster`): each name with its peer URLs,
/// in name order, each name's URLs in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialCluster {
    /// Invariant: every name has at least one URL, and no URL appears twice
    /// in the whole map.
    members: BTreeMap<String, Vec<HttpUrl>>,
}

/// Why an `--initial-cluster` value is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InitialClusterError {
    /// No member at all.
    #[error("no member given: expected name=http://host:port,...")]
    Empty,
    /// An entry without `=`.
    #[error("entry {entry:?} is not name=http://host:port")]
    MissingEquals {
        /// The entry.
        entry: String,
    },
    /// An entry with an empty name.
    #[error("entry {entry:?} has an empty name")]
    EmptyName {
        /// The entry.
        entry: String,
    },
    /// An entry whose URL does not parse.
    #[error("member {name:?}: {source}")]
    Url {
        /// The member.
        name: String,
        /// Why the URL is refused.
        #[source]
        source: UrlError,
    },
    /// One URL given twice (for one member or two).
    #[error(
        "peer URL {url} is given for both {first:?} and {second:?}; every member needs its own"
    )]
    DuplicateUrl {
        /// The URL.
        url: HttpUrl,
        /// The member it was first given for.
        first: String,
        /// The member it was given for again.
        second: String,
    },
}

impl InitialCluster {
    /// The peer URLs of `name`, if it is a member.
    pub fn urls(&self, name: &str) -> Option<&[HttpUrl]> {
        self.members.get(name).map(Vec::as_slice)
    }

    /// Members and their URLs, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[HttpUrl])> {
        self.members.iter().map(|(name, urls)| (name.as_str(), urls.as_slice()))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no member (never true of a validated configuration).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn insert(&mut self, name: &str, url: HttpUrl) -> Result<(), InitialClusterError> {
        if let Some((first, _)) = self.iter().find(|(_, urls)| urls.contains(&url)) {
            return Err(InitialClusterError::DuplicateUrl {
                url,
                first: first.to_owned(),
                second: name.to_owned(),
            });
        }
        self.members.entry(name.to_owned()).or_default().push(url);
        Ok(())
    }
}

impl FromStr for InitialCluster {
    type Err = InitialClusterError;

    /// Parses etcd's form: `a=http://10.0.0.1:2380,b=http://10.0.0.2:2380`,
    /// where a name may repeat to give a member several URLs.
    fn from_str(text: &str) -> Result<InitialCluster, InitialClusterError> {
        let mut cluster = InitialCluster::default();
        for entry in split_list(text) {
            let (name, url) = entry
                .split_once('=')
                .ok_or_else(|| InitialClusterError::MissingEquals { entry: entry.to_owned() })?;
            let name = name.trim();
            if name.is_empty() {
                return Err(InitialClusterError::EmptyName { entry: entry.to_owned() });
            }
            let url = url
                .trim()
                .parse()
                .map_err(|source| InitialClusterError::Url { name: name.to_owned(), source })?;
            cluster.insert(name, url)?;
        }
        if cluster.is_empty() {
            return Err(InitialClusterError::Empty);
        }
        Ok(cluster)
    }
}

impl fmt::Display for InitialCluster {
    /// etcd's form, one `name=url` pair per URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, urls) in self.iter() {
            for url in urls {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                write!(f, "{name}={url}")?;
            }
        }
        Ok(())
    }
}

/// The validated server configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// This member's name (`--name`).
    pub name: String,
    /// Where the node keeps its WAL, snapshots and state (`--data-dir`).
    pub data_dir: PathBuf,
    /// Addresses to serve clients on (`--listen-client-urls`).
    pub listen_client_addrs: Vec<SocketAddr>,
    /// Client URLs advertised to the cluster (`--advertise-client-urls`).
    pub advertise_client_urls: Vec<HttpUrl>,
    /// Addresses to accept peer connections on (`--listen-peer-urls`).
    pub listen_peer_addrs: Vec<SocketAddr>,
    /// This member's peer URLs (`--initial-advertise-peer-urls`); the same
    /// set as `initial_cluster.urls(&name)`.
    pub advertise_peer_urls: Vec<HttpUrl>,
    /// The initial members, this one included (`--initial-cluster`).
    pub initial_cluster: InitialCluster,
    /// Create or join (`--initial-cluster-state`).
    pub initial_cluster_state: ClusterState,
    /// The cluster token (`--initial-cluster-token`).
    pub initial_cluster_token: String,
    /// Leader heartbeat period (`--heartbeat-interval`).
    ///
    /// Invariant: `heartbeat_interval * ELECTION_TIMEOUT_HEARTBEATS_MIN <= election_timeout`.
    pub heartbeat_interval: Duration,
    /// Time without a leader before an election (`--election-timeout`).
    pub election_timeout: Duration,
    /// Applied entries between snapshots (`--snapshot-count`), at least 1.
    pub snapshot_count: u64,
    /// Storage quota in bytes (`--quota-backend-bytes`), never 0.
    pub quota_backend_bytes: u64,
    /// The store engine's page cache in bytes (`--backend-cache-bytes`),
    /// at least `BACKEND_CACHE_BYTES_MIN`.
    pub backend_cache_bytes: u64,
    /// Largest client request in bytes (`--max-request-bytes`), in
    /// `1..=MAX_REQUEST_BYTES_LIMIT`.
    pub max_request_bytes: u64,
    /// Largest number of operations per transaction (`--max-txn-ops`), in
    /// `1..=MAX_TXN_OPS_LIMIT`.
    pub max_txn_ops: u64,
    /// Log level (`--log-level`).
    pub log_level: LogLevel,
    /// Log format (`--log-format`).
    pub log_format: LogFormat,
    /// Consensus engine (`--engine`).
    pub engine: EngineKind,
    /// Number of data shards (`--shards`), in `1..=SHARDS_MAX`.
    pub shards: u64,
    /// Replicas per data shard (`--replicas`), in `1..=REPLICAS_MAX`.
    pub replicas: u32,
    /// Most shards moving at once (`--max-concurrent-moves`).
    pub max_concurrent_moves: u32,
    /// Whether data shards move to their targets (`--placement-moves`).
    pub placement_moves: bool,
    /// Snapshot bytes per second sent for data shards
    /// (`--move-bytes-per-second`); 0: no limit.
    pub move_bytes_per_second: u64,
    /// This member's zone (`--zone`); `None` when not given or empty.
    /// Invariant: passes [`ringkv_node::check_zone`].
    pub zone: Option<String>,
    /// How long a member goes unheard before its shards are placed
    /// elsewhere (`--down-timeout`).
    pub down_timeout: Duration,
    /// Which part of a key decides its shard (`--hash-key-segments`).
    pub hash_key_rule: HashKeyRule,
    /// Auto-compaction (`--auto-compaction-mode`,
    /// `--auto-compaction-retention`); `None`: off.
    pub auto_compaction: Option<Policy>,
    /// Authentication settings (`--auth-token`, `--auth-token-ttl`,
    /// `--bcrypt-cost`; `--client-cert-auth` with TLS).
    pub auth: crate::auth::AuthOptions,
    /// The client URLs listened on, in the order of `listen_client_addrs`
    /// (which of them are `https://`).
    pub listen_client_urls: Vec<HttpUrl>,
    /// The peer URLs listened on, in the order of `listen_peer_addrs`.
    pub listen_peer_urls: Vec<HttpUrl>,
    /// TLS of the client port (`--cert-file`, ...), if configured.
    pub client_tls: Option<crate::tls::TlsFiles>,
    /// TLS of the peer port (`--peer-cert-file`, ...), if configured.
    pub peer_tls: Option<crate::tls::TlsFiles>,
    /// Test only (`--debug-remote-shards`, hidden): every data shard is
    /// served by another member for this member's clients (watches
    /// relayed, KV requests forwarded; [`crate::remote::DebugRemoteShards`]).
    pub debug_remote_shards: bool,
    /// Test only (`--debug-refuse-forwarded`, hidden): with
    /// `debug_remote_shards`, this member also refuses other members'
    /// relayed watches and forwarded calls, as one hosting no data shard.
    pub debug_refuse_forwarded: bool,
    /// Test only (`--debug-local-shards`, hidden): with
    /// `debug_remote_shards`, the data shards still served here.
    pub debug_local_shards: Vec<u64>,
    /// Things worth a log line once logging is up (unknown `RINGKV_*`
    /// variables, shadowed variables, a very large quota).
    pub warnings: Vec<ConfigWarning>,
}

/// Something accepted, but probably not what the user meant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigWarning {
    /// A `RINGKV_*` variable that names no flag.
    #[error("environment variable {var} names no ringkv flag and is ignored")]
    UnknownEnv {
        /// The variable.
        var: String,
    },
    /// A variable whose flag was also given; the flag wins.
    #[error("environment variable {var} is ignored: --{flag} was given on the command line")]
    ShadowedEnv {
        /// The variable.
        var: String,
        /// The flag.
        flag: String,
    },
    /// A quota above [`QUOTA_BACKEND_BYTES_WARN`].
    #[error(
        "--quota-backend-bytes {bytes} is above the suggested maximum {QUOTA_BACKEND_BYTES_WARN}: \
         compaction and snapshots will be slow"
    )]
    LargeQuota {
        /// The quota.
        bytes: u64,
    },
}

/// Why the configuration was refused. Each message names the flag (or the
/// variable, or the file) and what would fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A malformed command line, or `--help`/`--version`: print it with
    /// `clap::Error::exit`, which also picks the exit code.
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// A `RINGKV_*` variable that does not parse as its flag's value.
    #[error("environment variable {var}: {}", first_line(.source))]
    Env {
        /// The variable.
        var: String,
        /// clap's verdict on the value.
        #[source]
        source: clap::Error,
    },
    /// A `RINGKV_*` variable that is not valid UTF-8.
    #[error("environment variable {var} is not valid UTF-8")]
    EnvNotUtf8 {
        /// The variable.
        var: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The config file is implausibly large.
    #[error("config file {} is larger than {CONFIG_FILE_BYTES_MAX} bytes; is it the right file?", .path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The config file is not valid TOML, has an unknown key or a bad value.
    #[error("config file {}: {source}", .path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// Where and why parsing failed.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A URL that does not parse or cannot serve its purpose.
    #[error("--{flag}: {source}")]
    Url {
        /// The flag.
        flag: &'static str,
        /// What is wrong with the URL.
        #[source]
        source: UrlError,
    },
    /// An empty URL list.
    #[error("--{flag} is empty: give at least one http://host:port URL")]
    NoUrls {
        /// The flag.
        flag: &'static str,
    },
    /// An advertised URL on the "any" address, which nobody can dial.
    #[error("--{flag}: {url} is not an address others can connect to; advertise a real host or IP")]
    UnspecifiedAdvertise {
        /// The flag.
        flag: &'static str,
        /// The URL.
        url: HttpUrl,
    },
    /// An advertised URL with port 0.
    #[error("--{flag}: {url} has port 0, which nobody can connect to; give the real port")]
    ZeroPortAdvertise {
        /// The flag.
        flag: &'static str,
        /// The URL.
        url: HttpUrl,
    },
    /// Listening on the "any" address without saying what to advertise.
    #[error(
        "--{advertise_flag} must be given when --{listen_flag} listens on {url}: \
         say which address others should connect to"
    )]
    AdvertiseRequired {
        /// The missing flag.
        advertise_flag: &'static str,
        /// The listen flag.
        listen_flag: &'static str,
        /// The unspecified listen URL.
        url: HttpUrl,
    },
    /// A malformed `--initial-cluster`.
    #[error("--initial-cluster: {0}")]
    InitialCluster(#[from] InitialClusterError),
    /// `--initial-cluster` does not list this member.
    #[error(
        "--initial-cluster ({cluster}) has no member named {name:?}, this node's --name: \
         add {name}=<its peer URL> or fix --name"
    )]
    NameNotInCluster {
        /// This member's name.
        name: String,
        /// The cluster as given.
        cluster: String,
    },
    /// `--initial-cluster` and `--initial-advertise-peer-urls` disagree.
    #[error(
        "--initial-cluster gives {name:?} the peer URLs {in_cluster} but \
         --initial-advertise-peer-urls is {advertised}: they must list the same URLs"
    )]
    PeerUrlsMismatch {
        /// This member's name.
        name: String,
        /// Its URLs in `--initial-cluster`.
        in_cluster: String,
        /// Its advertised peer URLs.
        advertised: String,
    },
    /// An unusable `--name`.
    #[error("--name {name:?} is invalid: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An unusable `--zone`.
    #[error("--zone {zone:?} is invalid: {source}")]
    InvalidZone {
        /// The label.
        zone: String,
        /// What is wrong with it.
        source: ringkv_node::ZoneError,
    },
    /// `--auth-token` is malformed.
    #[error("--auth-token: {0}")]
    AuthToken(String),
    /// An `https://` URL without the files TLS needs.
    #[error("--{flag} has an https:// URL: give {needs}")]
    TlsFilesMissing {
        /// The URL flag.
        flag: &'static str,
        /// The flags to give.
        needs: &'static str,
    },
    /// A TLS flag that needs another.
    #[error("--{flag} needs --{needs}")]
    TlsFlagNeeds {
        /// The flag given.
        flag: &'static str,
        /// The flag missing.
        needs: &'static str,
    },
    /// A flag that must not be empty.
    #[error("--{flag} must not be empty")]
    Empty {
        /// The flag.
        flag: &'static str,
    },
    /// A number outside its range.
    #[error("--{flag} is {value}, outside the allowed range {min}..={max}")]
    OutOfRange {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A bad `--down-timeout`.
    #[error(
        "--down-timeout is {value:?}: give a duration such as 5m or 30s, at least the election \
         timeout ({election_ms} ms)"
    )]
    BadDownTimeout {
        /// The value given.
        value: String,
        /// The election timeout it must not be below.
        election_ms: u64,
    },
    /// A bad `--auto-compaction-mode` / `--auto-compaction-retention`.
    #[error(transparent)]
    AutoCompaction(#[from] RetentionError),
    /// Heartbeats too sparse for the election timeout.
    #[error(
        "--election-timeout ({election_ms} ms) must be at least {ELECTION_TIMEOUT_HEARTBEATS_MIN} \
         times --heartbeat-interval ({heartbeat_ms} ms), or one late heartbeat starts an election"
    )]
    ElectionTimeoutTooShort {
        /// The election timeout.
        election_ms: u64,
        /// The heartbeat interval.
        heartbeat_ms: u64,
    },
}

fn first_line(error: &clap::Error) -> String {
    let rendered = error.to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// Parses a command line (`args[0]` is the program name) and a process
/// environment into a validated configuration; see the module docs for the
/// precedence. The binary calls it with `std::env::args_os()` and
/// `std::env::vars_os()`; tests pass their own.
///
/// # Errors
///
/// [`ConfigError::Usage`] for a bad command line or `--help`; any other
/// variant for a bad environment variable, file or value.
pub fn parse_from<I, T, E, K, V>(args: I, env: E) -> Result<ServerConfig, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
    E: IntoIterator<Item = (K, V)>,
    K: Into<OsString>,
    V: Into<OsString>,
{
    ServerConfig::from_args(ServerArgs::try_parse_from(args)?, env)
}

impl ServerConfig {
    /// The cluster's key space: `--shards` data shards and the
    /// `--hash-key-segments` rule.
    pub fn keyspace(&self) -> Keyspace {
        let shards = u32::try_from(self.shards).expect("--shards is checked against SHARDS_MAX");
        Keyspace::new(shards, self.hash_key_rule).expect("--shards is checked against SHARDS_MAX")
    }

    /// Completes already-parsed flags with the environment, the config file
    /// and the defaults, then validates.
    ///
    /// # Errors
    ///
    /// As [`parse_from`], except [`ConfigError::Usage`].
    pub fn from_args<E, K, V>(flags: ServerArgs, env: E) -> Result<ServerConfig, ConfigError>
    where
        E: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let mut warnings = Vec::new();
        let from_env = env_layer(&flags, env, &mut warnings)?;
        let config_file = flags.config_file.clone().or_else(|| from_env.config_file.clone());
        let from_file = match config_file {
            Some(path) => file_layer(&path)?,
            None => ServerArgs::default(),
        };
        validate(flags.or(from_env).or(from_file), warnings)
    }
}

impl ServerArgs {
    /// Each setting from `self` if given there, else from `lower`.
    fn or(self, lower: ServerArgs) -> ServerArgs {
        // Destructured so that a new field cannot be forgotten here.
        let ServerArgs {
            config_file,
            name,
            data_dir,
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_state,
            initial_cluster_token,
            heartbeat_interval,
            election_timeout,
            snapshot_count,
            quota_backend_bytes,
            backend_cache_bytes,
            max_request_bytes,
            max_txn_ops,
            log_level,
            log_format,
            engine,
            shards,
            replicas,
            max_concurrent_moves,
            placement_moves,
            move_bytes_per_second,
            zone,
            down_timeout,
            auto_compaction_mode,
            auto_compaction_retention,
            auto_compaction_revision_interval,
            hash_key_segments,
            auth_token,
            auth_token_ttl,
            bcrypt_cost,
            cert_file,
            key_file,
            trusted_ca_file,
            client_cert_auth,
            peer_cert_file,
            peer_key_file,
            peer_trusted_ca_file,
            peer_client_cert_auth,
            debug_remote_shards,
            debug_refuse_forwarded,
            debug_local_shards,
        } = self;
        ServerArgs {
            config_file: config_file.or(lower.config_file),
            name: name.or(lower.name),
            data_dir: data_dir.or(lower.data_dir),
            listen_client_urls: listen_client_urls.or(lower.listen_client_urls),
            advertise_client_urls: advertise_client_urls.or(lower.advertise_client_urls),
            listen_peer_urls: listen_peer_urls.or(lower.listen_peer_urls),
            initial_advertise_peer_urls: initial_advertise_peer_urls
                .or(lower.initial_advertise_peer_urls),
            initial_cluster: initial_cluster.or(lower.initial_cluster),
            initial_cluster_state: initial_cluster_state.or(lower.initial_cluster_state),
            initial_cluster_token: initial_cluster_token.or(lower.initial_cluster_token),
            heartbeat_interval: heartbeat_interval.or(lower.heartbeat_interval),
            election_timeout: election_timeout.or(lower.election_timeout),
            snapshot_count: snapshot_count.or(lower.snapshot_count),
            quota_backend_bytes: quota_backend_bytes.or(lower.quota_backend_bytes),
            backend_cache_bytes: backend_cache_bytes.or(lower.backend_cache_bytes),
            max_request_bytes: max_request_bytes.or(lower.max_request_bytes),
            max_txn_ops: max_txn_ops.or(lower.max_txn_ops),
            log_level: log_level.or(lower.log_level),
            log_format: log_format.or(lower.log_format),
            engine: engine.or(lower.engine),
            shards: shards.or(lower.shards),
            replicas: replicas.or(lower.replicas),
            max_concurrent_moves: max_concurrent_moves.or(lower.max_concurrent_moves),
            placement_moves: placement_moves.or(lower.placement_moves),
            move_bytes_per_second: move_bytes_per_second.or(lower.move_bytes_per_second),
            zone: zone.or(lower.zone),
            down_timeout: down_timeout.or(lower.down_timeout),
            auto_compaction_mode: auto_compaction_mode.or(lower.auto_compaction_mode),
            auto_compaction_retention: auto_compaction_retention
                .or(lower.auto_compaction_retention),
            auto_compaction_revision_interval: auto_compaction_revision_interval
                .or(lower.auto_compaction_revision_interval),
            hash_key_segments: hash_key_segments.or(lower.hash_key_segments),
            auth_token: auth_token.or(lower.auth_token),
            auth_token_ttl: auth_token_ttl.or(lower.auth_token_ttl),
            bcrypt_cost: bcrypt_cost.or(lower.bcrypt_cost),
            cert_file: cert_file.or(lower.cert_file),
            key_file: key_file.or(lower.key_file),
            trusted_ca_file: trusted_ca_file.or(lower.trusted_ca_file),
            client_cert_auth: client_cert_auth.or(lower.client_cert_auth),
            peer_cert_file: peer_cert_file.or(lower.peer_cert_file),
            peer_key_file: peer_key_file.or(lower.peer_key_file),
            peer_trusted_ca_file: peer_trusted_ca_file.or(lower.peer_trusted_ca_file),
            peer_client_cert_auth: peer_client_cert_auth.or(lower.peer_client_cert_auth),
            debug_remote_shards: debug_remote_shards.or(lower.debug_remote_shards),
            debug_refuse_forwarded: debug_refuse_forwarded.or(lower.debug_refuse_forwarded),
            debug_local_shards: debug_local_shards.or(lower.debug_local_shards),
        }
    }
}

/// The environment variable for a flag's long name: `data-dir` is
/// `RINGKV_DATA_DIR`.
pub fn env_var_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// The long names of every flag that takes a value.
fn value_flags() -> Vec<String> {
    ServerArgs::command()
        .get_arguments()
        .filter(|arg| arg.get_action().takes_values())
        .filter_map(|arg| arg.get_long().map(str::to_owned))
        .collect()
}

/// The settings given as `RINGKV_*` variables. Each value is parsed by clap
/// exactly as the flag's would be, so both spellings accept the same values.
fn env_layer<E, K, V>(
    flags: &ServerArgs,
    env: E,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<ServerArgs, ConfigError>
where
    E: IntoIterator<Item = (K, V)>,
    K: Into<OsString>,
    V: Into<OsString>,
{
    let by_var: BTreeMap<String, String> =
        value_flags().into_iter().map(|long| (env_var_name(&long), long)).collect();
    let mut layer = ServerArgs::default();
    // Sorted, so warnings come out in a stable order.
    let env: BTreeMap<OsString, OsString> =
        env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    for (var, value) in env {
        let Some(var) = var.to_str().filter(|var| var.starts_with(ENV_PREFIX)) else { continue };
        let Some(long) = by_var.get(var) else {
            warnings.push(ConfigWarning::UnknownEnv { var: var.to_owned() });
            continue;
        };
        let value =
            value.into_string().map_err(|_| ConfigError::EnvNotUtf8 { var: var.to_owned() })?;
        let parsed = ServerArgs::try_parse_from([
            OsString::from("ringkv"),
            format!("--{long}={value}").into(),
        ])
        .map_err(|source| ConfigError::Env { var: var.to_owned(), source })?;
        if flag_given(flags, &parsed) {
            warnings.push(ConfigWarning::ShadowedEnv { var: var.to_owned(), flag: long.clone() });
        }
        layer = parsed.or(layer);
    }
    Ok(layer)
}

/// Whether `flags` already sets the one setting `single` sets.
fn flag_given(flags: &ServerArgs, single: &ServerArgs) -> bool {
    // `single` sets exactly one field: overlaying `flags` on it gives back
    // `flags` exactly when `flags` sets that field too.
    flags.clone().or(single.clone()) == *flags
}

/// The settings in the TOML file at `path`.
fn file_layer(path: &Path) -> Result<ServerArgs, ConfigError> {
    let read_error = |source| ConfigError::ReadFile { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(CONFIG_FILE_BYTES_MAX + 1).read_to_string(&mut text).map_err(read_error)?;
    if text.len() as u64 > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::FileTooLarge { path: path.to_owned() });
    }
    toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// A URL list in the file: a comma-separated string, as on the command line,
/// or a TOML array of strings.
fn url_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match List::deserialize(deserializer)? {
        List::One(text) => text,
        List::Many(items) => items.join(","),
    }))
}

/// Comma-separated items, trimmed, empty ones skipped.
fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|item| !item.is_empty())
}

fn parse_urls(flag: &'static str, text: &str) -> Result<Vec<HttpUrl>, ConfigError> {
    let urls = split_list(text)
        .map(|item| item.parse().map_err(|source| ConfigError::Url { flag, source }))
        .collect::<Result<Vec<HttpUrl>, _>>()?;
    if urls.is_empty() {
        return Err(ConfigError::NoUrls { flag });
    }
    Ok(urls)
}

fn bind_addrs(flag: &'static str, urls: &[HttpUrl]) -> Result<Vec<SocketAddr>, ConfigError> {
    urls.iter()
        .map(|url| url.bind_addr().map_err(|source| ConfigError::Url { flag, source }))
        .collect()
}

/// The advertised URLs: as given, or the listen URLs when those can be
/// dialed as they are.
fn advertised(
    advertise_flag: &'static str,
    given: Option<&str>,
    listen_flag: &'static str,
    listen: &[HttpUrl],
) -> Result<Vec<HttpUrl>, ConfigError> {
    let urls = match given {
        Some(text) => parse_urls(advertise_flag, text)?,
        None => {
            if let Some(url) = listen.iter().find(|url| url.is_unspecified()) {
                return Err(ConfigError::AdvertiseRequired {
                    advertise_flag,
                    listen_flag,
                    url: url.clone(),
                });
            }
            listen.to_vec()
        }
    };
    for url in &urls {
        if url.is_unspecified() {
            return Err(ConfigError::UnspecifiedAdvertise {
                flag: advertise_flag,
                url: url.clone(),
            });
        }
        if url.port() == 0 {
            return Err(ConfigError::ZeroPortAdvertise { flag: advertise_flag, url: url.clone() });
        }
    }
    Ok(urls)
}

fn in_range(flag: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange { flag, value, min, max })
    }
}

fn join_urls(urls: &[HttpUrl]) -> String {
    urls.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn validate(
    raw: ServerArgs,
    mut warnings: Vec<ConfigWarning>,
) -> Result<ServerConfig, ConfigError> {
    let mut auth = auth_options(&raw)?;
    auth.client_cert_auth = raw.client_cert_auth.unwrap_or(false);
    let client_tls = tls_files(
        ["cert-file", "key-file", "trusted-ca-file", "client-cert-auth"],
        (raw.cert_file.clone(), raw.key_file.clone(), raw.trusted_ca_file.clone()),
        auth.client_cert_auth,
    )?;
    let peer_tls = tls_files(
        ["peer-cert-file", "peer-key-file", "peer-trusted-ca-file", "peer-client-cert-auth"],
        (raw.peer_cert_file.clone(), raw.peer_key_file.clone(), raw.peer_trusted_ca_file.clone()),
        raw.peer_client_cert_auth.unwrap_or(false),
    )?;
    let name = raw.name.unwrap_or_else(|| DEFAULT_NAME.to_owned());
    let name_problem = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > NAME_BYTES_MAX {
        Some("it is longer than 255 bytes")
    } else if name.contains(['=', ',']) || name.chars().any(char::is_whitespace) {
        Some("it contains '=', ',' or whitespace, which --initial-cluster cannot spell")
    } else {
        None
    };
    if let Some(reason) = name_problem {
        return Err(ConfigError::InvalidName { name, reason });
    }

    let zone = raw.zone.clone().filter(|z| !z.is_empty());
    if let Some(zone) = &zone {
        ringkv_node::check_zone(zone)
            .map_err(|source| ConfigError::InvalidZone { zone: zone.clone(), source })?;
    }

    let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        return Err(ConfigError::Empty { flag: "data-dir" });
    }

    let listen_client = parse_urls(
        "listen-client-urls",
        raw.listen_client_urls.as_deref().unwrap_or(DEFAULT_CLIENT_URL),
    )?;
    let listen_client_addrs = bind_addrs("listen-client-urls", &listen_client)?;
    let advertise_client_urls = advertised(
        "advertise-client-urls",
        raw.advertise_client_urls.as_deref(),
        "listen-client-urls",
        &listen_client,
    )?;

    let listen_peer = parse_urls(
        "listen-peer-urls",
        raw.listen_peer_urls.as_deref().unwrap_or(DEFAULT_PEER_URL),
    )?;
    let listen_peer_addrs = bind_addrs("listen-peer-urls", &listen_peer)?;
    let advertise_peer_urls = advertised(
        "initial-advertise-peer-urls",
        raw.initial_advertise_peer_urls.as_deref(),
        "listen-peer-urls",
        &listen_peer,
    )?;

    let initial_cluster = match raw.initial_cluster.as_deref() {
        Some(text) => text.parse::<InitialCluster>()?,
        None => {
            let mut cluster = InitialCluster::default();
            for url in &advertise_peer_urls {
                cluster.insert(&name, url.clone())?;
            }
            cluster
        }
    };
    let Some(own_urls) = initial_cluster.urls(&name) else {
        return Err(ConfigError::NameNotInCluster { name, cluster: initial_cluster.to_string() });
    };
    let as_set = |urls: &[HttpUrl]| urls.iter().cloned().collect::<BTreeSet<_>>();
    if as_set(own_urls) != as_set(&advertise_peer_urls) {
        return Err(ConfigError::PeerUrlsMismatch {
            in_cluster: join_urls(own_urls),
            advertised: join_urls(&advertise_peer_urls),
            name,
        });
    }
    for (_, urls) in initial_cluster.iter() {
        for url in urls {
            if url.is_unspecified() {
                return Err(ConfigError::UnspecifiedAdvertise {
                    flag: "initial-cluster",
                    url: url.clone(),
                });
            }
            if url.port() == 0 {
                return Err(ConfigError::ZeroPortAdvertise {
                    flag: "initial-cluster",
                    url: url.clone(),
                });
            }
        }
    }

    let initial_cluster_token =
        raw.initial_cluster_token.unwrap_or_else(|| DEFAULT_INITIAL_CLUSTER_TOKEN.to_owned());
    if initial_cluster_token.is_empty() {
        return Err(ConfigError::Empty { flag: "initial-cluster-token" });
    }

    let heartbeat_ms = in_range(
        "heartbeat-interval",
        raw.heartbeat_interval.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS),
        1,
        ELECTION_TIMEOUT_MS_MAX / ELECTION_TIMEOUT_HEARTBEATS_MIN,
    )?;
    let election_ms = in_range(
        "election-timeout",
        raw.election_timeout.unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS),
        1,
        ELECTION_TIMEOUT_MS_MAX,
    )?;
    if election_ms < heartbeat_ms * ELECTION_TIMEOUT_HEARTBEATS_MIN {
        return Err(ConfigError::ElectionTimeoutTooShort { election_ms, heartbeat_ms });
    }

    let snapshot_count = in_range(
        "snapshot-count",
        raw.snapshot_count.unwrap_or(DEFAULT_SNAPSHOT_COUNT),
        1,
        u64::MAX,
    )?;
    let quota_backend_bytes = match raw.quota_backend_bytes.unwrap_or(0) {
        0 => DEFAULT_QUOTA_BACKEND_BYTES,
        bytes => bytes,
    };
    if quota_backend_bytes > QUOTA_BACKEND_BYTES_WARN {
        warnings.push(ConfigWarning::LargeQuota { bytes: quota_backend_bytes });
    }
    let backend_cache_bytes = in_range(
        "backend-cache-bytes",
        raw.backend_cache_bytes.unwrap_or(DEFAULT_BACKEND_CACHE_BYTES),
        BACKEND_CACHE_BYTES_MIN,
        u64::try_from(usize::MAX).unwrap_or(u64::MAX),
    )?;
    let max_request_bytes = in_range(
        "max-request-bytes",
        raw.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
        1,
        MAX_REQUEST_BYTES_LIMIT,
    )?;
    let max_txn_ops = in_range(
        "max-txn-ops",
        raw.max_txn_ops.unwrap_or(DEFAULT_MAX_TXN_OPS),
        1,
        MAX_TXN_OPS_LIMIT,
    )?;
    let shards = in_range("shards", raw.shards.unwrap_or(DEFAULT_SHARDS), 1, SHARDS_MAX)?;
    let replicas = in_range("replicas", raw.replicas.unwrap_or(DEFAULT_REPLICAS), 1, REPLICAS_MAX)?;
    let max_concurrent_moves = in_range(
        "max-concurrent-moves",
        raw.max_concurrent_moves.unwrap_or(DEFAULT_MAX_CONCURRENT_MOVES),
        1,
        MAX_CONCURRENT_MOVES_LIMIT,
    )?;
    let segments = in_range(
        "hash-key-segments",
        raw.hash_key_segments.unwrap_or(DEFAULT_HASH_KEY_SEGMENTS),
        0,
        HASH_KEY_SEGMENTS_MAX,
    )?;
    let auto_compaction = policy_from_flags(
        raw.auto_compaction_mode.unwrap_or_default(),
        raw.auto_compaction_retention.as_deref().unwrap_or(DEFAULT_AUTO_COMPACTION_RETENTION),
        raw.auto_compaction_revision_interval.as_deref(),
    )?;
    let down_timeout = match raw.down_timeout.as_deref() {
        None => ringkv_node::DOWN_TIMEOUT_DEFAULT,
        Some(text) => crate::compactor::parse_duration(text)
            .filter(|d| *d >= Duration::from_millis(election_ms))
            .ok_or_else(|| ConfigError::BadDownTimeout { value: text.to_owned(), election_ms })?,
    };
    let hash_key_rule = u32::try_from(segments)
        .ok()
        .and_then(NonZeroU32::new)
        .map_or(HashKeyRule::WholeKey, HashKeyRule::Segments);

    Ok(ServerConfig {
        name,
        data_dir,
        listen_client_addrs,
        advertise_client_urls,
        listen_peer_addrs,
        advertise_peer_urls,
        initial_cluster,
        initial_cluster_state: raw.initial_cluster_state.unwrap_or_default(),
        initial_cluster_token,
        heartbeat_interval: Duration::from_millis(heartbeat_ms),
        election_timeout: Duration::from_millis(election_ms),
        snapshot_count,
        quota_backend_bytes,
        backend_cache_bytes,
        max_request_bytes,
        max_txn_ops,
        log_level: raw.log_level.unwrap_or_default(),
        log_format: raw.log_format.unwrap_or_default(),
        engine: raw.engine.unwrap_or_default(),
        shards,
        replicas: u32::try_from(replicas).expect("--replicas is checked against REPLICAS_MAX"),
        max_concurrent_moves: u32::try_from(max_concurrent_moves)
            .expect("--max-concurrent-moves is checked against MAX_CONCURRENT_MOVES_LIMIT"),
        hash_key_rule,
        auto_compaction,
        auth,
        listen_client_urls: needs_tls(
            listen_client,
            "listen-client-urls",
            client_tls.is_some(),
            "--cert-file and --key-file",
        )?,
        listen_peer_urls: needs_tls(
            listen_peer,
            "listen-peer-urls",
            peer_tls.is_some(),
            "--peer-cert-file, --peer-key-file and --peer-trusted-ca-file",
        )?,
        client_tls,
        peer_tls,
        placement_moves: raw.placement_moves.unwrap_or(DEFAULT_PLACEMENT_MOVES),
        move_bytes_per_second: raw.move_bytes_per_second.unwrap_or(DEFAULT_MOVE_BYTES_PER_SECOND),
        zone,
        down_timeout,
        debug_remote_shards: raw.debug_remote_shards.unwrap_or(false),
        debug_refuse_forwarded: raw.debug_refuse_forwarded.unwrap_or(false),
        debug_local_shards: raw.debug_local_shards.unwrap_or_default(),
        warnings,
    })
}

/// `urls`, checked that TLS files are given if one of them is `https://`.
fn needs_tls(
    urls: Vec<HttpUrl>,
    flag: &'static str,
    have: bool,
    needs: &'static str,
) -> Result<Vec<HttpUrl>, ConfigError> {
    if !have && urls.iter().any(HttpUrl::is_tls) {
        return Err(ConfigError::TlsFilesMissing { flag, needs });
    }
    Ok(urls)
}

/// One side's TLS files from its flags (`flags`: cert, key, CA, require).
fn tls_files(
    flags: [&'static str; 4],
    (cert, key, ca): (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
    require: bool,
) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
    let [cert_flag, key_flag, ca_flag, require_flag] = flags;
    if require && ca.is_none() {
        return Err(ConfigError::TlsFlagNeeds { flag: require_flag, needs: ca_flag });
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            Ok(Some(crate::tls::TlsFiles { cert, key, trusted_ca: ca, client_cert_auth: require }))
        }
        (Some(_), None) => Err(ConfigError::TlsFlagNeeds { flag: cert_flag, needs: key_flag }),
        (None, Some(_)) => Err(ConfigError::TlsFlagNeeds { flag: key_flag, needs: cert_flag }),
        (None, None) if require || ca.is_some() => {
            Err(ConfigError::TlsFlagNeeds { flag: ca_flag, needs: cert_flag })
        }
        (None, None) => Ok(None),
    }
}

/// Longest `--auth-token-ttl`, in seconds (a day: a token that lives
/// longer is a password in disguise).
pub const AUTH_TOKEN_TTL_SECONDS_MAX: u64 = 86_400;

fn auth_options(raw: &ServerArgs) -> Result<crate::auth::AuthOptions, ConfigError> {
    use crate::auth::{AuthOptions, TokenOptions, password};
    let defaults = AuthOptions::default();
    let token = match raw.auth_token.as_deref() {
        None => TokenOptions::Simple,
        Some(text) => {
            TokenOptions::parse(text).map_err(|e| ConfigError::AuthToken(e.to_string()))?
        }
    };
    let ttl = in_range(
        "auth-token-ttl",
        raw.auth_token_ttl.unwrap_or(defaults.token_ttl.as_secs()),
        1,
        AUTH_TOKEN_TTL_SECONDS_MAX,
    )?;
    let cost = in_range(
        "bcrypt-cost",
        u64::from(raw.bcrypt_cost.unwrap_or(defaults.bcrypt_cost)),
        u64::from(password::BCRYPT_COST_MIN),
        u64::from(password::BCRYPT_COST_MAX),
    )?;
    Ok(AuthOptions {
        token,
        token_ttl: Duration::from_secs(ttl),
        bcrypt_cost: u32::try_from(cost).expect("checked against BCRYPT_COST_MAX"),
        ..defaults
    })
}
