//! `ringkv ctl`: operate a cluster from the command line.
//!
//! Every command speaks the etcd v3 gRPC API, so the KV commands (`put`,
//! `get`, `del`, `watch`) work against any etcd as well; the cluster
//! commands (`status`, `shards`, `node`, `snapshot`) use etcd's Cluster and
//! Maintenance services too, and show what ringkv adds (shards, zones)
//! where it exists; `status` and `shards` also read each member's own
//! view of its shards (`GET /dashboard/api/node` on its client URL). `-w json` prints one JSON document for scripts (see
//! [`output`] for its conventions). Failures print one line naming what
//! failed and where, and exit with status 1.

mod client;
mod error;
mod kv;
mod node;
mod output;
mod snapshot;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

pub(crate) use client::Clients;
use error::CtlError;
use output::OutputFormat;

/// Exit status of a failed command.
const EXIT_FAILED: u8 = 1;

/// `ringkv ctl`'s flags and command.
#[derive(Args, Debug)]
pub(crate) struct CtlArgs {
    /// Client URLs of cluster members, comma-separated; commands that need
    /// one member use the first that answers.
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    endpoints: Vec<String>,

    /// Output format: table (for people) or json (for scripts).
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value_t)]
    write_out: OutputFormat,

    /// Longest wait for a connection, e.g. 2s or 500ms (etcdctl's default).
    #[arg(long, global = true, value_parser = parse_duration, default_value = "2s")]
    dial_timeout: Duration,

    /// Longest wait for one request (etcdctl's default); watches and snapshots are not bound by
    /// it.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "5s")]
    command_timeout: Duration,

    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// A table of the members: health, role, term, applied index, disk
    /// use, shards held/led.
    Status,
    /// A table of the shards (metadata shard 0, then the data shards):
    /// replicas, learners, leader, term, applied index.
    Shards,
    /// Writes KEY = VALUE.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Attach the key to this lease (hex id, as `etcdctl lease grant` prints it).
        #[arg(long, value_parser = parse_lease, default_value = "0")]
        lease: i64,
        /// Print the previous value too.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Reads a key or a range of keys.
    Get {
        #[command(flatten)]
        range: kv::KeyRange,
        #[command(flatten)]
        options: kv::GetOptions,
    },
    /// Deletes a key or a range of keys; prints how many were deleted.
    Del {
        #[command(flatten)]
        range: kv::KeyRange,
        /// Print the deleted keys and values.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Prints changes to a key or a range of keys as they happen.
    Watch {
        #[command(flatten)]
        range: kv::KeyRange,
        #[command(flatten)]
        options: kv::WatchOptions,
    },
    /// Cluster membership.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Snapshots of a member's data.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Lists the members.
    List,
    /// Adds a member; prints the settings to start it with.
    Add {
        /// The new member's name (its --name).
        name: String,
        /// Its peer URLs, comma-separated (its --initial-advertise-peer-urls).
        #[arg(long, required = true, value_delimiter = ',')]
        peer_urls: Vec<String>,
        /// Add it as a learner (a non-voting member that catches up first).
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member at once (name or hex id).
    Remove {
        /// The member's name or hex id.
        member: String,
    },
    /// Takes a member out of service gently: with placement moves on,
    /// first moves its shard replicas to the other members (a progress
    /// bar counts the replicas left); then moves leadership away if it
    /// leads, and removes it.
    Decommission {
        /// The member's name or hex id.
        member: String,
        /// Longest wait for the member's replicas to move away, e.g. 30m;
        /// past it nothing is removed and the drain stays in place (run the
        /// command again to keep waiting).
        #[arg(long, value_parser = parse_duration, default_value = node::DRAIN_TIMEOUT_DEFAULT)]
        drain_timeout: Duration,
    },
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Saves a member's snapshot (the first endpoint that answers) to FILE, checking its
    /// SHA-256.
    Save {
        /// Where to write it (FILE.part until it is complete and checked).
        file: PathBuf,
    },
    /// Checks a saved ringkv snapshot and says what it holds.
    Status {
        /// The snapshot file.
        file: PathBuf,
    },
    /// Loads a saved ringkv snapshot's keys and leases into the running
    /// cluster (keys get new revisions).
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// Restore even if the cluster already holds keys (same-named keys
        /// are overwritten).
        #[arg(long)]
        force: bool,
    },
}

/// `5s`, `500ms`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration like 5s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

/// A lease id in hex, as etcdctl prints and takes them.
fn parse_lease(text: &str) -> Result<i64, String> {
    i64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{text:?} is not a lease id in hex"))
}

/// Runs `ringkv ctl`; returns the process's exit status.
pub(crate) fn main(args: CtlArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CtlError::Runtime)
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr, reason = "the command's one-line failure report")]
            {
                eprintln!("ringkv ctl: {e}");
            }
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn run(args: CtlArgs) -> Result<(), CtlError> {
    let format = args.write_out;
    // Snapshot files are read without a cluster.
    if let CtlCommand::Snapshot(SnapshotCommand::Status { file }) = &args.command {
        return snapshot::status(format, file);
    }
    let clients = Clients::new(&args.endpoints, args.dial_timeout, args.command_timeout)?;
    match &args.command {
        CtlCommand::Status => status::status(&clients, format).await,
        CtlCommand::Shards => status::shards(&clients, format).await,
        CtlCommand::Put { key, value, lease, prev_kv } => {
            kv::put(&clients, format, key, value, *lease, *prev_kv).await
        }
        CtlCommand::Get { range, options } => kv::get(&clients, format, range, options).await,
        CtlCommand::Del { range, prev_kv } => kv::del(&clients, format, range, *prev_kv).await,
        CtlCommand::Watch { range, options } => kv::watch(&clients, format, range, options).await,
        CtlCommand::Node(NodeCommand::List) => node::list(&clients, format).await,
        CtlCommand::Node(NodeCommand::Add { name, peer_urls, learner }) => {
            node::add(&clients, format, name, peer_urls, *learner).await
        }
        CtlCommand::Node(NodeCommand::Remove { member }) => {
            node::remove(&clients, format, member).await
        }
        CtlCommand::Node(NodeCommand::Decommission { member, drain_timeout }) => {
            node::decommission(&clients, format, member, *drain_timeout).await
        }
        CtlCommand::Snapshot(SnapshotCommand::Save { file }) => {
            snapshot::save(&clients, format, file).await
        }
        CtlCommand::Snapshot(SnapshotCommand::Status { file }) => snapshot::status(format, file),
        CtlCommand::Snapshot(SnapshotCommand::Restore { file, force }) => {
            snapshot::restore(&clients, format, file, *force).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_etcdctl_writes_them() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn endpoints_gain_a_scheme_and_lose_a_slash() {
        use client::normalize_endpoint;
        assert_eq!(normalize_endpoint("127.0.0.1:2379").unwrap(), "http://127.0.0.1:2379");
        assert_eq!(normalize_endpoint("http://h:1/").unwrap(), "http://h:1");
        assert!(normalize_endpoint("https://h:1").unwrap_err().to_string().contains("TLS"));
        assert!(normalize_endpoint("http://h").is_err());
        assert!(normalize_endpoint("http://h:1/v3").is_err());
    }
}
