//! ringkv's Jepsen-style chaos harness: docs completed below.

pub mod client;
pub mod cluster;
pub mod config;
pub mod elle;
pub mod error;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod run;
pub mod svg;
pub mod sys;
pub mod wal;
pub mod workload;

use std::process::ExitCode;

pub use config::{ChaosArgs, NemesisKind, WorkloadKind};
pub use error::ChaosError;
pub use report::{Report, Verdict};
pub use run::run;

/// Exit status of a run that found an anomaly.
pub const EXIT_INVALID: u8 = 1;
/// Exit status of a run the harness could not carry out.
pub const EXIT_HARNESS_ERROR: u8 = 2;
/// Exit status of a run that found nothing but could not check everything.
pub const EXIT_UNKNOWN: u8 = 3;

/// `ringkv chaos`: runs, prints the report (seed and rerun command
/// included), and exits 0 (valid), 1 (anomaly), 2 (harness error) or 3
/// (unknown: skipped or undecided).
#[allow(clippy::print_stdout, clippy::print_stderr, reason = "the command's output")]
pub fn main(args: ChaosArgs) -> ExitCode {
    if args.cleanup {
        return match net::cleanup_stale() {
            Ok(c) => {
                println!(
                    "removed namespaces {:?}, bridges {:?}, mounts {:?}",
                    c.namespaces, c.bridges, c.mounts
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringkv chaos --cleanup: {e}");
                ExitCode::from(EXIT_HARNESS_ERROR)
            }
        };
    }
    init_logs();
    match run(args) {
        Ok(report) => {
            println!("{report}");
            match report.verdict {
                Verdict::Valid => ExitCode::SUCCESS,
                Verdict::Invalid => ExitCode::from(EXIT_INVALID),
                Verdict::Unknown => ExitCode::from(EXIT_UNKNOWN),
            }
        }
        Err(e) => {
            eprintln!("ringkv chaos: {e}");
            ExitCode::from(EXIT_HARNESS_ERROR)
        }
    }
}

/// Logs go to standard error at `info` (`RUST_LOG` refines it).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A subscriber set already (a test, an embedding program) stays.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
