//! The harness's errors: what went wrong, to what, and what the user can do.
//!
//! These are failures of the *harness* (a command that would not run, a
//! cluster that never elected a leader, an output directory that cannot be
//! written). Anomalies the checkers find in ringkv are not errors: they are
//! part of the [`crate::Verdict`].

use std::path::PathBuf;
use std::time::Duration;

/// Why a chaos run could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    /// A system command (`ip`, `iptables`, `mount`) could not be started.
    #[error(
        "cannot run `{command}`: {source} (is it installed? scripts/setup installs iproute2 and iptables)"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A system command ran and failed.
    #[error("`{command}` failed with {status}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// Network namespaces need CAP_NET_ADMIN.
    #[error(
        "network namespaces need root (CAP_NET_ADMIN); run as root, or pass --no-netns to run \
         every node on loopback (partitions and packet loss are then unavailable)"
    )]
    NotRoot,
    /// No free /24 was found for the run's bridge.
    #[error(
        "no free 10.201.x.0/24 subnet for the bridge: every candidate is in use; remove stale \
         runs with `ringkv chaos --cleanup`"
    )]
    NoSubnet,
    /// A file or directory of the run could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A `ringkv` process could not be started.
    #[error("cannot start node {node} ({binary}): {source}")]
    StartNode {
        /// The node's index.
        node: usize,
        /// The binary.
        binary: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A node exited on its own during start-up.
    #[error("node {node} exited during start-up ({status}); its log ends with:\n{log_tail}")]
    NodeExited {
        /// The node's index.
        node: usize,
        /// Its exit status.
        status: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The cluster did not agree on a leader in time.
    #[error("the cluster did not agree on a leader within {within:?}; node logs are in {logs}")]
    NoLeader {
        /// How long the harness waited.
        within: Duration,
        /// Where the node logs are.
        logs: PathBuf,
    },
    /// A setting of the run cannot work.
    #[error("invalid chaos setting {setting}: {why}")]
    Config {
        /// The flag.
        setting: &'static str,
        /// Why.
        why: String,
    },
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The run was interrupted (Ctrl-C or SIGTERM); everything was torn down.
    #[error("interrupted: the cluster, its namespaces and its rules were torn down")]
    Interrupted,
    /// A gRPC endpoint URL was malformed (a harness bug).
    #[error("bad endpoint {url}: {source}")]
    Endpoint {
        /// The URL.
        url: String,
        /// Why tonic refused it.
        #[source]
        source: tonic::transport::Error,
    },
}

impl ChaosError {
    /// An [`ChaosError::Io`] builder for `map_err`.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ChaosError {
        let path = path.into();
        move |source| ChaosError::Io { what, path, source }
    }
}
