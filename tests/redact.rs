//! Black-box tests of `oclagl export-sft`'s redaction (#21, point 4): the
//! real binary on trace files with credentials planted in a user message, a
//! tool call's arguments and a tool result.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use support::traces::write_rollout;
use support::BIN;

// Made up, in each provider's format.
const AWS: &str = "AKIAPGRYGR6KG2JMO37K";
const GITHUB: &str = "ghp_Yww42sgX7YUVZk0VEdFMW4SNsGVyxLEnV6od";
const STRIPE: &str = "sk_live_GWfTQUbqBDi8mlsbeEzskLcUHvsNdC1pAZY6CT7Gc2nsXivmZd8";
const EMAIL: &str = "ada.lovelace@example.org";

/// Runs `oclagl export-sft` in `dir` with none of its settings from the
/// developer's shell.
fn export(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("export-sft").args(args).current_dir(dir);
    for (var, _) in std::env::vars() {
        if var.starts_with("OCLAGL_EXPORT_") || var == "OPENCLAW_SYSTEM_PROMPT_PATH" {
            cmd.env_remove(var);
        }
    }
    cmd.output().expect("run oclagl export-sft")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "export-sft failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A folder with one rollout: the user pastes an AWS key and an e-mail
/// address, the assistant calls a tool with a GitHub token in its (JSON
/// text) arguments, the tool prints a Stripe key and the AWS key again.
fn planted() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let arguments = json!({"cmd": format!("gh auth login --with-token {GITHUB}")}).to_string();
    write_rollout(
        &dir.path().join("traces"),
        "ro-secrets",
        "succeeded",
        "agent:main:s1",
        1_770_000_000.0,
        vec![(
            "gen_ai",
            json!({
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": format!("deploy with {AWS}, then mail {EMAIL}"),
                "gen_ai.prompt.1.role": "assistant",
                "gen_ai.prompt.1.tool_calls.0.id": "call_1",
                "gen_ai.prompt.1.tool_calls.0.name": "exec",
                "gen_ai.prompt.1.tool_calls.0.arguments": arguments,
                "gen_ai.prompt.2.role": "toolResult",
                "gen_ai.prompt.2.tool_call_id": "call_1",
                "gen_ai.prompt.2.content": format!("STRIPE_KEY={STRIPE}\nAWS_ACCESS_KEY_ID={AWS}"),
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": "Deployed.",
                "gen_ai.request.model": "m-1",
            }),
        )],
    );
    dir
}

/// The one row written to `file`.
fn row(file: &Path) -> (String, Value) {
    let line = std::fs::read_to_string(file).unwrap();
    let row = serde_json::from_str(line.trim_end()).unwrap();
    (line, row)
}

#[test]
fn credentials_become_typed_placeholders_by_default() {
    let dir = planted();
    let out = export(dir.path(), &["--stats", "--format", "openai"]);
    assert_ok(&out);
    let (line, row) = row(&dir.path().join("sft_dataset.jsonl"));
    for secret in [AWS, GITHUB, STRIPE] {
        assert!(!line.contains(secret), "{secret} in {line}");
    }
    let messages = row["messages"].as_array().unwrap();
    let content = |i: usize| messages[i]["content"].as_str().unwrap_or_default();
    assert_eq!(
        content(0),
        format!("deploy with <REDACTED:aws_access_key>, then mail {EMAIL}")
    );
    let arguments = messages[1]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    let arguments: Value = serde_json::from_str(arguments).expect("arguments stay JSON");
    assert_eq!(
        arguments,
        json!({"cmd": "gh auth login --with-token <REDACTED:github_token>"})
    );
    assert_eq!(
        content(2),
        "STRIPE_KEY=<REDACTED:stripe_key>\nAWS_ACCESS_KEY_ID=<REDACTED:aws_access_key>"
    );
    let stats = text(&out.stdout);
    for line in [
        "redacted           4 (--redact secrets)",
        "  aws_access_key                   2",
        "  github_token                     1",
        "  stripe_key                       1",
    ] {
        assert!(stats.contains(line), "no {line:?} in\n{stats}");
    }
    assert!(!text(&out.stderr).contains("--no-redact"));
}

#[test]
fn redact_pii_also_replaces_email_addresses() {
    let dir = planted();
    let out = export(dir.path(), &["--redact", "pii", "--stats"]);
    assert_ok(&out);
    let (line, row) = row(&dir.path().join("sft_dataset.jsonl"));
    assert!(!line.contains(EMAIL), "{line}");
    // The messages format leads with the seed's system message.
    let user = row["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap();
    assert_eq!(
        user["content"],
        "deploy with <REDACTED:aws_access_key>, then mail <REDACTED:email>"
    );
    let stats = text(&out.stdout);
    assert!(
        stats.contains("redacted           5 (--redact pii)"),
        "{stats}"
    );
    assert!(
        stats.contains("  email                            1"),
        "{stats}"
    );
}

#[test]
fn no_redact_keeps_credentials_and_warns() {
    let dir = planted();
    let out = export(dir.path(), &["--no-redact", "--stats"]);
    assert_ok(&out);
    let (line, _) = row(&dir.path().join("sft_dataset.jsonl"));
    for secret in [AWS, GITHUB, STRIPE, EMAIL] {
        assert!(line.contains(secret), "{secret} not in {line}");
    }
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("--no-redact").count(),
        1,
        "one warning line:\n{stderr}"
    );
    assert!(
        stderr.contains("oclagl export-sft: --no-redact: rows keep any credentials they hold"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("redacted           off (--no-redact)"));
}

#[test]
fn redact_and_no_redact_conflict() {
    let dir = planted();
    let out = export(dir.path(), &["--redact", "pii", "--no-redact"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot be used with"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("sft_dataset.jsonl").exists());
}
