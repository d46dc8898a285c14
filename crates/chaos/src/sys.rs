//! Running the system commands the harness drives (`ip`, `iptables`,
//! `mount`) and sending signals to nodes.

use std::process::{Command, Stdio};

use crate::error::ChaosError;

/// Most bytes of a failed command's standard error kept in the error.
pub const STDERR_KEPT_BYTES_MAX: usize = 2048;

/// Runs `program args…`, returning its standard output.
///
/// # Errors
/// [`ChaosError::Spawn`] when it cannot start, [`ChaosError::Command`] when
/// it exits with a failure.
pub fn run(program: &str, args: &[&str]) -> Result<String, ChaosError> {
    let command = command_line(program, args);
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ChaosError::Spawn { command: command.clone(), source })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let start = stderr.len().saturating_sub(STDERR_KEPT_BYTES_MAX);
    let start = (start..stderr.len()).find(|&i| stderr.is_char_boundary(i)).unwrap_or(0);
    Err(ChaosError::Command {
        command,
        status: out.status,
        stderr: stderr[start..].trim().to_owned(),
    })
}

/// Runs a command inside network namespace `ns` (`ip netns exec`).
///
/// # Errors
/// As [`run`].
pub fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<String, ChaosError> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ")
}

/// Whether this process runs as root (network namespaces, iptables and
/// mounts need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A signal the nemeses send to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL: a crash.
    Kill,
    /// SIGSTOP: a pause (a long GC, a stalled VM).
    Stop,
    /// SIGCONT: the end of a pause.
    Cont,
    /// SIGTERM: a graceful stop.
    Term,
}

/// Sends `signal` to process `pid`. A process already gone is not an error.
pub fn signal(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return;
    };
    let sig = match signal {
        Signal::Kill => rustix::process::Signal::KILL,
        Signal::Stop => rustix::process::Signal::STOP,
        Signal::Cont => rustix::process::Signal::CONT,
        Signal::Term => rustix::process::Signal::TERM,
    };
    // ESRCH (already reaped) is the only expected failure, and harmless.
    let _ = rustix::process::kill_process(pid, sig);
}

/// Whether a process with this id exists (it may be a zombie).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
