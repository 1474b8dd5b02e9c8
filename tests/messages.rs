//! Black-box tests of what the commands say when they fail or end early
//! (#22, "a newcomer's first hour"): one line naming the fix, the right exit
//! code, nothing said twice, and no folders left behind by a failed start.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::traces::{qa, write_rollout};
use support::{Server, BIN};

/// Runs `oclagl <args>` in `dir`, with none of the settings a developer's
/// shell may have exported.
fn oclagl(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("run oclagl")
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args).env("NO_COLOR", "1");
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OCLAGL_DATA_DIR",
        "OCLAGL_TRACES_DIR",
        "OCLAGL_TOKEN",
        "OPENCLAW_GATEWAY_TOKEN",
        "OCLAGL_INTERNAL_SECRET",
        "INTERNAL_SECRET",
        "OCLAGL_GATEWAY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The lines of `oclagl`'s own error messages (not the log).
fn error_lines(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("oclagl:"))
        .map(str::to_string)
        .collect()
}

/// `dir` holds nothing.
fn assert_empty(dir: &Path, what: &str) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{what} left {left:?} behind");
}

/// Says `needle` once in all of stderr.
fn assert_said_once(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(
        err.matches(needle).count(),
        1,
        "{needle:?} not said once:\n{err}"
    );
}

#[test]
fn serve_on_a_port_in_use_says_so_once_names_the_flag_and_leaves_no_folders() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = oclagl(
        dir.path(),
        &["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", &addr],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("--http-addr") && lines[0].contains("OCLAGL_HTTP_ADDR"),
        "{lines:?}"
    );
    assert_said_once(&out, "in use");
    assert_empty(dir.path(), "serve on a port in use");
}

#[test]
fn a_locked_store_is_one_line_naming_the_fix() {
    let (server, tmp) = Server::start(&[]);
    let data = tmp.path().join("data");
    // A process that holds the store without serving it (as `collect` does
    // with its sidecar in-process): `serve` without its address file.
    std::fs::remove_file(data.join("listening.json")).unwrap();
    // `run` passes its gateway check (the port answers), then finds the
    // store locked.
    let out = oclagl(
        tmp.path(),
        &[
            "run",
            "--gateway",
            "internal",
            "--internal-secret",
            "s",
            "--gateway-url",
            &server.url(""),
            "--data-dir",
            data.to_str().unwrap(),
            "hello",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--data-dir"), "{lines:?}");
    assert_said_once(&out, "another process holds the store");
    assert!(
        lines[0].contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{lines:?}"
    );
}

#[test]
fn failing_at_start_leaves_no_folders() {
    let dir = tempfile::tempdir().unwrap();
    let out = oclagl(dir.path(), &["reward", "ro-nope", "1.0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("ro-nope"), "{}", stderr(&out));
    assert_empty(dir.path(), "reward of an unknown rollout");
    let out = oclagl(dir.path(), &["run", "--gateway", "ws", "hello"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_empty(dir.path(), "run without credentials");
}

/// Runs `oclagl <args>` with its standard output already closed, as in
/// `oclagl show … | head` once head has read enough.
fn with_stdout_closed(dir: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    command(dir, args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run oclagl")
}

#[test]
fn a_closed_stdout_ends_quietly_with_0() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    write_rollout(
        &traces,
        "ro-68a3eef4d456",
        "succeeded",
        "s",
        1.0,
        vec![("gen_ai", qa("hi", "m"))],
    );
    for args in [
        &["show", "ro-68a3eef4d456"][..],
        &["export-sft", "--out", "-"],
    ] {
        let out = with_stdout_closed(dir.path(), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("Broken pipe"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn an_unknown_status_is_refused_with_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["ls", "export-sft"] {
        let out = oclagl(dir.path(), &[command, "--status", "done"]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        let err = stderr(&out);
        for valid in ["succeeded", "failed", "running"] {
            assert!(err.contains(valid), "{command}: {err}");
        }
    }
}

#[test]
fn show_takes_an_id_without_its_ro_prefix() {
    let dir = tempfile::tempdir().unwrap();
    write_rollout(
        &dir.path().join("traces"),
        "ro-68a3eef4d456",
        "succeeded",
        "s",
        1.0,
        vec![("gen_ai", qa("hi", "m"))],
    );
    let out = oclagl(dir.path(), &["show", "68a3eef4d456"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("ro-68a3eef4d456"), "{shown}");
    // One message in, one reply: said in the singular.
    assert!(shown.contains("1 message in"), "{shown}");
    assert!(shown.contains("1 model call,"), "{shown}");
    let out = oclagl(dir.path(), &["show", "0123456789ab"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("ro-0123456789ab"), "{}", stderr(&out));
    assert!(stderr(&out).contains("start with ro-"), "{}", stderr(&out));
}

#[test]
fn one_row_is_said_in_the_singular() {
    let dir = tempfile::tempdir().unwrap();
    write_rollout(
        &dir.path().join("traces"),
        "ro-1",
        "succeeded",
        "s",
        1.0,
        vec![("gen_ai", qa("hi", "m"))],
    );
    let out = oclagl(dir.path(), &["export-sft"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("wrote 1 row to sft_dataset.jsonl from 1 rollout"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ws_without_a_token_names_openclaw_gateway_token_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = oclagl(dir.path(), &["run", "--gateway", "ws", "hello"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("OPENCLAW_GATEWAY_TOKEN"), "{lines:?}");
}
