//! `ringkv`: the ringkv binary.
//!
//! - `ringkv` with no arguments: a single-node server for development,
//!   clients on `127.0.0.1:2379`, peers on `127.0.0.1:2380`, data in
//!   `./ringkv-data`; `etcdctl put foo bar` then works with no flags.
//! - `ringkv server [etcd's flags]`: a member of a cluster, configured as
//!   an etcd member is (flags, `RINGKV_*` variables, `--config-file`).
//!
//! Both stop gracefully on SIGINT or SIGTERM. A bad configuration exits
//! with status 2 and a message naming the flag; a failure to start (a port
//! in use, a locked or corrupt data directory) with status 1.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringkv_server::config::{ConfigError, LogLevel, ServerArgs, ServerConfig};
use ringkv_server::server::{Server, shutdown_signal};
use tracing::{info, warn};

/// Exit status for a configuration the server refuses (clap's own status
/// for a usage error).
const EXIT_BAD_CONFIG: u8 = 2;

/// The client URL etcdctl uses when given no `--endpoints`.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// How long the exit waits for tasks still running after the server shut
/// down (connections past their grace period).
const RUNTIME_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Exit status for a failure to start or serve.
const EXIT_FAILED: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "ringkv",
    version,
    about = "ringkv: a distributed key-value store that speaks etcd's v3 API",
    long_about = "ringkv: a distributed key-value store that speaks etcd's v3 API.\n\n\
        With no command, runs a single-node server for development: clients on \
        127.0.0.1:2379, peers on 127.0.0.1:2380, data in ./ringkv-data.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a cluster member, configured with etcd's flags.
    Server(Box<ServerArgs>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let (args, dev) = match cli.command {
        Some(Command::Server(args)) => (*args, false),
        None => (ServerArgs::default(), true),
    };
    let config = match ServerConfig::from_args(args, std::env::vars_os()) {
        Ok(config) => config,
        Err(ConfigError::Usage(e)) => e.exit(),
        Err(e) => {
            // Logging is not up yet: the message goes to stderr as is.
            #[allow(clippy::print_stderr, reason = "the one place a CLI reports a bad config")]
            {
                eprintln!("ringkv: invalid configuration: {e}");
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    init_logs(config.log_level);
    for warning in &config.warnings {
        warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(serve(config, dev));
    // Connections the graceful shutdown gave up on must not delay the exit.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn init_logs(level: LogLevel) {
    // RUST_LOG, when set, refines the level (e.g. `ringkv_server::peer=debug`).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.as_str()));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn serve(config: ServerConfig, dev: bool) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let server = Server::start(config).await?;
    let endpoints: Vec<String> =
        server.client_addrs().iter().map(|a| format!("http://{a}")).collect();
    info!(data_dir = %data_dir.display(), "data directory");
    if dev {
        // etcdctl's default endpoint is the default client URL.
        let try_it = if endpoints == [DEFAULT_ENDPOINT] {
            "etcdctl put foo bar".to_owned()
        } else {
            format!("etcdctl --endpoints={} put foo bar", endpoints.join(","))
        };
        info!(
            "single-node ringkv for development: clients on {}; try `{try_it}`",
            endpoints.join(",")
        );
    } else {
        info!("serving clients on {}", endpoints.join(","));
    }
    shutdown_signal().await?;
    server.shutdown().await;
    Ok(())
}
