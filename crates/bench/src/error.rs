//! Why a benchmark could not run.
//!
//! Failed requests during a run are not errors here: they are counted by
//! gRPC code in the report. These are the reasons no figures could be
//! produced at all.

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Keys too short to tell the key space apart.
    #[error(
        "--key-size {key_size} cannot hold {key_space} distinct keys (they need {needed} bytes): \
         raise --key-size or lower --key-space"
    )]
    KeySizeTooSmall {
        /// `--key-size`.
        key_size: usize,
        /// `--key-space`.
        key_space: u64,
        /// Bytes the key space needs.
        needed: usize,
    },

    /// A zipfian exponent out of range.
    #[error("--zipf-exponent {exponent} is out of range: give a number above 0 and at most {max}")]
    BadZipfExponent {
        /// `--zipf-exponent`.
        exponent: f64,
        /// The largest accepted.
        max: f64,
    },

    /// A txn key space too large for its revision table.
    #[error(
        "--key-space {key_space} is too large for the txn workload (at most {max}: it keeps \
         each key's latest revision in memory)"
    )]
    TxnKeySpaceTooLarge {
        /// `--key-space`.
        key_space: u64,
        /// The largest accepted.
        max: u64,
    },

    /// Values too short for the watch workload's timestamps.
    #[error(
        "--value-size {value_size} is too small for the watch workload: each value carries its \
         put's send time in {needed} bytes; use --value-size {needed} or more"
    )]
    ValueTooSmallForWatch {
        /// `--value-size`.
        value_size: usize,
        /// Bytes needed.
        needed: usize,
    },

    /// An endpoint that is not an `http://host:port` URL.
    #[error(
        "endpoint {endpoint:?} is not usable: {reason}; give URLs such as http://127.0.0.1:2379"
    )]
    BadEndpoint {
        /// The endpoint as given (with `http://` added if it had no scheme).
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An empty endpoint list.
    #[error("no endpoints given: pass --endpoints http://HOST:PORT[,...]")]
    NoEndpoints,

    /// Both sides of a comparison share a name.
    #[error(
        "--label and --compare-label are both {label:?}: give the two endpoint sets different names"
    )]
    SameLabels {
        /// The shared label.
        label: String,
    },

    /// `--duration 0`.
    #[error("--duration must be above zero (or bound the run by --total)")]
    ZeroDuration,

    /// `--timeout 0`.
    #[error("--timeout must be above zero")]
    ZeroTimeout,

    /// No connection could be made.
    #[error("cannot connect to {endpoint}: {source}; is a server listening there?")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },

    /// Writing the key space before the run failed.
    #[error(
        "preloading {key_space} keys into {target} failed ({failed} of them): {first_error}; \
         the read workloads need every key to exist (or pass --no-preload)"
    )]
    Preload {
        /// The endpoint set's label.
        target: String,
        /// Keys to write.
        key_space: u64,
        /// Puts that failed.
        failed: u64,
        /// The first failure, as `code: message`.
        first_error: String,
    },

    /// A watch stream could not be started.
    #[error(
        "cannot start a watch on {endpoint}: {}: {}; the watch workload needs etcd's Watch service",
        ringkv_api::grpc_code_name(status.code()),
        status.message()
    )]
    WatchStart {
        /// The endpoint.
        endpoint: String,
        /// The server's answer.
        status: Box<tonic::Status>,
    },

    /// A watch stream was opened but the server never confirmed the watch.
    #[error("{endpoint} did not confirm the watch (no `created` response): {what}")]
    WatchNotCreated {
        /// The endpoint.
        endpoint: String,
        /// What came instead.
        what: String,
    },

    /// Server pids given by `--server-pids` cannot be read.
    #[error(
        "cannot read the CPU time of server process {pid} (/proc/{pid}/stat): {source}; check \
         --server-pids, or pass --server-pids none"
    )]
    ServerPid {
        /// The process id.
        pid: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// `--json-out` could not be written.
    #[error("cannot write the JSON report to {}: {source}", path.display())]
    WriteReport {
        /// `--json-out`.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}
