//! `ringkv bench`: a load generator over etcd's v3 gRPC API, so that it
//! measures ringkv and etcd alike, with the same client.
//!
//! - Workloads ([`Workload`]): put; get, linearizable or serializable;
//!   range; txn (compare-and-set on the mod revision); watch (latency from
//!   a put's send to each watcher's event, and a count of missing events);
//!   mixed reads and writes.
//! - Keys: fixed size, a key space of `--key-space` keys picked uniformly,
//!   by Zipf's law or sequentially ([`keys`]); the read workloads write the
//!   space first, unmeasured.
//! - Load: `--clients` concurrent requests multiplexed over `--conns` gRPC
//!   connections; a closed loop, or an open loop at `--rate` whose
//!   latencies count from each request's due time ([`schedule`]: no
//!   coordinated omission); bounded by `--total` or `--duration`, after a
//!   `--warmup`.
//! - Figures ([`Report`]): throughput, HDR-histogram percentiles (p50 to
//!   max), errors by gRPC code, server CPU per operation from
//!   `/proc/<pid>/stat` ([`cpu`]), as text or JSON.
//! - `--compare A B`: the same workload against two endpoint sets,
//!   alternating, `--repeat` times each; medians and the ratios B/A.
//!
//! The clients are ringkv's own generated tonic clients (`ringkv-api`), on
//! one multi-threaded tokio runtime: no client library stands between the
//! benchmark and the wire.
//!
//! ```no_run
//! use ringkv_bench::{BenchArgs, Workload};
//!
//! let mut args = BenchArgs::new(Workload::Put);
//! args.total = Some(1_000);
//! let report = ringkv_bench::run(args)?;
//! println!("{report}");
//! # Ok::<(), ringkv_bench::BenchError>(())
//! ```

pub mod args;
pub mod cpu;
mod driver;
mod error;
pub mod keys;
pub mod report;
pub mod schedule;
pub mod stats;

use std::process::ExitCode;
use std::time::Duration;

pub use args::{BenchArgs, Consistency, OutputFormat, Workload};
pub use error::BenchError;
pub use report::Report;

/// How long the exit waits for tasks still running after the report (a
/// watch stream the server has not closed yet).
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

/// Exit status when the benchmark could not run.
const EXIT_FAILED: u8 = 1;

/// Runs the benchmark `args` describe on a new multi-threaded tokio
/// runtime, and returns its report.
///
/// # Errors
///
/// When the arguments are inconsistent, an endpoint cannot be reached, the
/// preload or a watch cannot start: see [`BenchError`]. Failed requests
/// during the run are not errors: the report counts them.
pub fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let plan = args::Plan::from_args(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let report = runtime.block_on(driver::run_plan(plan));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    report
}

/// [`run`] on the caller's tokio runtime (which must have the time and I/O
/// drivers enabled).
///
/// # Errors
///
/// As [`run`].
pub async fn run_async(args: BenchArgs) -> Result<Report, BenchError> {
    driver::run_plan(args::Plan::from_args(&args)?).await
}

/// `ringkv bench` as a command: runs, prints the report to stdout in the
/// format asked for, and returns the exit status (1 when the benchmark
/// could not run, with the reason on stderr).
pub fn cli_main(args: BenchArgs) -> ExitCode {
    let format = args.format();
    let json_out = args.json_out.clone();
    let report = run(args).and_then(|report| {
        if let Some(path) = json_out {
            std::fs::write(&path, report.to_json() + "\n")
                .map_err(|source| BenchError::WriteReport { path, source })?;
        }
        Ok(report)
    });
    match report {
        #[allow(clippy::print_stdout, reason = "the command's output")]
        Ok(report) => {
            match format {
                OutputFormat::Text => print!("{report}"),
                OutputFormat::Json => println!("{}", report.to_json()),
            }
            ExitCode::SUCCESS
        }
        #[allow(clippy::print_stderr, reason = "the command's error")]
        Err(e) => {
            eprintln!("ringkv bench: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
