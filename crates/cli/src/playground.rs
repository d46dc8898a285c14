//! `ringkv playground` (placeholder while ctl compiles).

/// Flags.
#[derive(clap::Args, Debug)]
pub(crate) struct PlaygroundArgs {}

/// Runs it.
pub(crate) fn main(_args: PlaygroundArgs) -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}
