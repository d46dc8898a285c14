//! `ringkv-lincheck`: check a JSON-lines history for linearizability.
//!
//! Usage: `ringkv-lincheck [--budget STEPS] [--no-minimize] [--svg FILE] HISTORY`
//! where HISTORY is a file in the format of the `ringkv_lincheck` crate docs
//! (`-` reads standard input).
//!
//! Exit codes: 0 linearizable, 1 not linearizable, 2 input error (a bad
//! argument, an unreadable file, or a malformed line, named by number),
//! 3 undecided (the step budget ran out).

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use ringkv_lincheck::{CheckResult, Options, Outcome, check, parse_jsonl};

const USAGE: &str =
    "usage: ringkv-lincheck [--budget STEPS] [--no-minimize] [--svg FILE] HISTORY.jsonl
  HISTORY.jsonl   JSON-lines history (see the ringkv-lincheck crate docs); - for stdin
  --budget STEPS  search steps per partition before giving up (default: DEFAULT)
  --no-minimize   report the failure without cutting the history short first
  --svg FILE      also write the counterexample timeline as SVG to FILE
exit: 0 linearizable, 1 not linearizable, 2 input error, 3 undecided";

const EXIT_NOT_LINEARIZABLE: u8 = 1;
const EXIT_INPUT_ERROR: u8 = 2;
const EXIT_UNDECIDED: u8 = 3;

struct Args {
    path: String,
    options: Options,
    svg: Option<String>,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut options = Options::default();
    let mut path = None;
    let mut svg = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--budget" => {
                let value = args.next().context("--budget needs a number of steps")?;
                options.step_budget = value
                    .parse()
                    .with_context(|| format!("--budget {value:?} is not a number of steps"))?;
            }
            "--no-minimize" => options.minimize = false,
            "--svg" => svg = Some(args.next().context("--svg needs a file name")?),
            flag if flag.starts_with("--") => bail!("unknown option {flag}"),
            _ if path.is_some() => bail!("more than one history file given"),
            _ => path = Some(arg),
        }
    }
    let path = path.context("no history file given")?;
    Ok(Some(Args { path, options, svg }))
}

fn run() -> anyhow::Result<ExitCode> {
    let usage = USAGE.replace("DEFAULT", &ringkv_lincheck::DEFAULT_STEP_BUDGET.to_string());
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            writeln!(std::io::stdout(), "{usage}")?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            writeln!(std::io::stderr(), "ringkv-lincheck: {e:#}\n{usage}")?;
            return Ok(ExitCode::from(EXIT_INPUT_ERROR));
        }
    };
    let mut text = String::new();
    let read = if args.path == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(&args.path).map(|t| text = t)
    };
    if let Err(e) = read {
        writeln!(std::io::stderr(), "ringkv-lincheck: cannot read {}: {e}", args.path)?;
        return Ok(ExitCode::from(EXIT_INPUT_ERROR));
    }
    let history = match parse_jsonl(&text) {
        Ok(history) => history,
        Err(e) => {
            writeln!(std::io::stderr(), "ringkv-lincheck: {}: {e}", args.path)?;
            return Ok(ExitCode::from(EXIT_INPUT_ERROR));
        }
    };
    let mut out = std::io::stdout().lock();
    match check(&history, &args.options) {
        CheckResult::Linearizable => {
            let count =
                |f: fn(&Outcome) -> bool| history.ops().iter().filter(|op| f(&op.outcome)).count();
            writeln!(
                out,
                "linearizable: {} operations ({} ok, {} failed, {} unknown)",
                history.len(),
                count(|o| matches!(o, Outcome::Ok(_))),
                count(|o| matches!(o, Outcome::Fail)),
                count(|o| matches!(o, Outcome::Unknown)),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        CheckResult::NotLinearizable(cx) => {
            write!(out, "{cx}")?;
            if let Some(svg) = &args.svg {
                std::fs::write(svg, cx.svg()).with_context(|| format!("cannot write {svg}"))?;
                writeln!(out, "timeline written to {svg}")?;
            }
            Ok(ExitCode::from(EXIT_NOT_LINEARIZABLE))
        }
        CheckResult::Undecided(undecided) => {
            writeln!(out, "{undecided}")?;
            Ok(ExitCode::from(EXIT_UNDECIDED))
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ringkv-lincheck: {e:#}");
            ExitCode::from(EXIT_INPUT_ERROR)
        }
    }
}
