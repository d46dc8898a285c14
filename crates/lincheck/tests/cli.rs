//! The `ringkv-lincheck` binary on fixture files: verdicts, exit codes and
//! line-numbered input errors.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringkv-lincheck"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn linearizable_history_exits_0() {
    let out = run(&[&fixture("linearizable.jsonl")]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "linearizable: 7 operations (5 ok, 1 failed, 1 unknown)\n");
}

#[test]
fn stale_read_exits_1_with_a_counterexample_and_svg() {
    let svg = format!("{}/stale_read.svg", env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::remove_file(&svg);
    let out = run(&["--svg", &svg, &fixture("stale_read.jsonl")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("not linearizable: key \"x\""), "{stdout}");
    assert!(
        stdout.contains("#4     p3   t=25..30        get \"x\" -> \"1\" (mod_revision 2)"),
        "{stdout}"
    );
    assert!(stdout.contains("why: \"x\" is \"2\" here, but the read returned \"1\""), "{stdout}");
    assert!(
        stdout.contains("#3     p2   t=21..40        put \"x\" = \"3\" -> unknown"),
        "{stdout}"
    );
    let drawn = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(drawn.starts_with("<svg "), "{drawn}");
}

#[test]
fn malformed_history_exits_2_naming_the_line() {
    let out = run(&[&fixture("malformed.jsonl")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("malformed.jsonl: line 4: process p1 invoked an operation at t=3"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn exhausted_budget_exits_3() {
    let out = run(&["--budget", "1", &fixture("linearizable.jsonl")]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stdout).starts_with("undecided: budget exhausted"), "{}", text(&out.stdout));
}

#[test]
fn bad_arguments_and_missing_files_exit_2() {
    for args in [
        &["--frobnicate", "x"][..],
        &[][..],
        &["--budget", "many", "x"][..],
        &["/nonexistent/history.jsonl"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).starts_with("ringkv-lincheck: "),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn reads_standard_input() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv-lincheck"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let history = std::fs::read(fixture("stale_read.jsonl")).expect("fixture exists");
    child.stdin.take().expect("piped").write_all(&history).expect("write stdin");
    let out = child.wait_with_output().expect("the binary exits");
    assert_eq!(out.status.code(), Some(1));
}
