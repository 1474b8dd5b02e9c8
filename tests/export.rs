//! Black-box tests of `oclagl export-sft`: the real binary on trace files
//! and on the sidecar's store, with AGL 0.3's own `TraceToMessages` as the
//! oracle for the seed's format.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::{json, Value};
use support::traces::{qa, write_rollout};
use support::{kv, request, rows, run_py, run_py_with, span, wait_for_files, Server, BIN};

/// Runs `oclagl export-sft` in `dir`.
fn export(dir: &Path, args: &[&str]) -> Output {
    export_with(dir, args, &[])
}

/// [`export`] with these environment variables set.
fn export_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("export-sft")
        .args(args)
        .current_dir(dir)
        .env_remove("OPENCLAW_SYSTEM_PROMPT_PATH")
        .envs(env.iter().copied())
        .output()
        .expect("run oclagl export-sft")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "export-sft failed ({}):\n{}{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

fn reward(value: f64) -> (&'static str, Value) {
    (
        "agentlightning.annotation",
        json!({"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": value}),
    )
}

/// The first user message of each row (tests name rollouts by it).
fn users(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r["messages"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["role"] == "user"))
                .and_then(|m| m["content"].as_str())
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

#[test]
fn seed_export_matches_agl_trace_to_messages_line_for_line() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    let manifest: Value = serde_json::from_str(&run_py(
        "export_seed.py",
        &["corpus", traces.to_str().unwrap()],
    ))
    .unwrap();
    let reference = dir.path().join("reference.jsonl");
    let summary: Value = serde_json::from_str(&run_py(
        "export_seed.py",
        &[
            "reference",
            traces.to_str().unwrap(),
            reference.to_str().unwrap(),
        ],
    ))
    .unwrap();

    // The seed's defaults: traces/rollout_*.json -> sft_dataset.jsonl.
    let out = export(dir.path(), &[]);
    assert_ok(&out);
    let ours = rows(&dir.path().join("sft_dataset.jsonl"));
    let theirs = rows(&reference);

    // The corpus is not vacuous: AGL converts every "row" case and skips every "skip" case.
    let expected_rows = manifest["row"].as_array().unwrap().len();
    assert!(expected_rows >= 14, "{manifest}");
    assert_eq!(summary["rows"], json!(expected_rows), "{summary}");
    assert_eq!(summary["skipped"], manifest["skip"], "{summary}");

    assert_eq!(
        ours.len(),
        theirs.len(),
        "row counts differ\n{}",
        stderr(&out)
    );
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(
            a, b,
            "row {i} differs from AGL's (file {})",
            manifest["row"][i]
        );
    }
    // Every file AGL cannot convert is named, with a reason, and did not stop the export.
    let log = stderr(&out);
    for name in manifest["skip"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let line = log
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not reported:\n{log}"));
        assert!(
            line.contains("skipped") && line.len() > name.len() + 30,
            "{line}"
        );
    }
    assert!(
        log.contains(&format!("wrote {expected_rows} rows to sft_dataset.jsonl")),
        "{log}"
    );
    // The corpus covers what it claims: tools, tool calls, tool results, unicode, multi-turn.
    let text = std::fs::read_to_string(dir.path().join("sft_dataset.jsonl")).unwrap();
    for needle in [
        "\"tools\"",
        "\"tool_calls\"",
        "\"tool_call_id\":\"call_3\"",
        "\"tool_call_id\":\"call_placeholder\"",
        "\"content\":\"You are a personal assistant running inside OpenClaw",
        "## Rule 259",
        "世界",
        "🎉",
        "The end.",
    ] {
        assert!(text.contains(needle), "{needle} missing from the dataset");
    }

    // With the seed's variable naming a prompt file, both take its text.
    let file = dir.path().join("system_prompt.txt");
    std::fs::write(&file, "\n  You are OpenClaw, under test.\t\n").unwrap();
    let env = [("OPENCLAW_SYSTEM_PROMPT_PATH", file.to_str().unwrap())];
    let reference = dir.path().join("reference-with-file.jsonl");
    run_py_with(
        "export_seed.py",
        &[
            "reference",
            traces.to_str().unwrap(),
            reference.to_str().unwrap(),
        ],
        &env,
    );
    assert_ok(&export_with(
        dir.path(),
        &["--out", "with-file.jsonl"],
        &env,
    ));
    let ours = rows(&dir.path().join("with-file.jsonl"));
    assert_eq!(ours, rows(&reference), "rows with the prompt file");
    assert!(ours.iter().all(|r| r["messages"][0]["role"] == "system"));
    assert!(ours
        .iter()
        .any(|r| r["messages"][0]["content"] == "You are OpenClaw, under test."));
}

#[test]
fn richer_formats_add_a_system_message_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    write_rollout(
        &traces,
        "ro-nosystem",
        "succeeded",
        "s-1",
        1_770_000_000.0,
        vec![("gen_ai", qa("hi", "m-1"))],
    );
    let first_role = |args: &[&str]| {
        let out = export_with(dir.path(), args, &[]);
        assert_ok(&out);
        let rows = rows(&dir.path().join("sft_dataset.jsonl"));
        rows[0]["messages"][0].clone()
    };
    assert_eq!(first_role(&["--format", "openai"])["role"], "user");
    assert_eq!(first_role(&["--format", "trl"])["role"], "user");
    let added = first_role(&["--format", "openai", "--system-prompt", "default"]);
    assert_eq!(added["role"], "system");
    assert!(added["content"]
        .as_str()
        .unwrap()
        .starts_with("You are a personal assistant"));
    assert_eq!(first_role(&["--system-prompt", "none"])["role"], "user");
    std::fs::write(dir.path().join("p.txt"), "Mine.").unwrap();
    assert_eq!(
        first_role(&["--system-prompt", "p.txt"])["content"],
        "Mine."
    );
    // A prompt file that is not there stops the export with the fix.
    let out = export_with(dir.path(), &["--system-prompt", "gone.txt"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--system-prompt names gone.txt"),
        "{}",
        stderr(&out)
    );
}

/// The same conversation, with a tool call and its result, in each span
/// convention a user's spans may carry.
fn same_conversation_in_every_convention() -> Vec<(&'static str, Value)> {
    let tool_json = r#"{"type":"object","properties":{"city":{"type":"string"}}}"#;
    let openllmetry = json!({
        "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "be brief",
        "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "Weather in Paris?",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.id": "call_1", "gen_ai.completion.0.tool_calls.0.name": "weather",
        "gen_ai.completion.0.tool_calls.0.arguments": "{\"city\":\"Paris\"}",
        "gen_ai.request.model": "m-1",
        "gen_ai.request.functions.0.name": "weather", "gen_ai.request.functions.0.description": "Weather now",
        "gen_ai.request.functions.0.parameters": tool_json
    });
    let messages = json!([
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}
    ]);
    let output = json!([{"role": "assistant", "finish_reason": "tool_call", "parts": [
        {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}]}]);
    let definitions = json!([{"type": "function", "name": "weather", "description": "Weather now",
                              "parameters": serde_json::from_str::<Value>(tool_json).unwrap()}]);
    let genai_text = json!({
        "gen_ai.system_instructions": json!([{"type": "text", "content": "be brief"}]).to_string(),
        "gen_ai.input.messages": messages.to_string(),
        "gen_ai.output.messages": output.to_string(),
        "gen_ai.tool.definitions": definitions.to_string(),
        "gen_ai.request.model": "m-1"
    });
    // A structured value, as trace files hold it: flattened into dotted keys.
    let genai_flat = json!({
        "gen_ai.system_instructions.0.type": "text", "gen_ai.system_instructions.0.content": "be brief",
        "gen_ai.input.messages.0.role": "user",
        "gen_ai.input.messages.0.parts.0.type": "text",
        "gen_ai.input.messages.0.parts.0.content": "Weather in Paris?",
        "gen_ai.output.messages.0.role": "assistant",
        "gen_ai.output.messages.0.parts.0.type": "tool_call",
        "gen_ai.output.messages.0.parts.0.id": "call_1",
        "gen_ai.output.messages.0.parts.0.name": "weather",
        "gen_ai.output.messages.0.parts.0.arguments.city": "Paris",
        "gen_ai.tool.definitions.0.type": "function", "gen_ai.tool.definitions.0.name": "weather",
        "gen_ai.tool.definitions.0.description": "Weather now",
        "gen_ai.tool.definitions.0.parameters.type": "object",
        "gen_ai.tool.definitions.0.parameters.properties.city.type": "string",
        "gen_ai.response.model": "m-1"
    });
    let openinference = json!({
        "openinference.span.kind": "LLM", "llm.model_name": "m-1",
        "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "be brief",
        "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": "Weather in Paris?",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "weather",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": "{\"city\": \"Paris\"}",
        "llm.tools.0.tool.json_schema": json!({"type": "function", "function": {"name": "weather",
            "description": "Weather now", "parameters": serde_json::from_str::<Value>(tool_json).unwrap()}}).to_string()
    });
    vec![
        ("ro-openllmetry", openllmetry),
        ("ro-genai-text", genai_text),
        ("ro-genai-flat", genai_flat),
        ("ro-openinference", openinference),
    ]
}

#[test]
fn every_convention_reads_into_the_same_rows_in_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    for (id, attrs) in same_conversation_in_every_convention() {
        write_rollout(
            &traces,
            id,
            "succeeded",
            id,
            1_770_000_000.0,
            vec![("chat m-1", attrs)],
        );
    }
    let tools = json!([{"type": "function", "function": {"name": "weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let expected = [
        (
            "openai",
            json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}],
            "tools": tools, "parallel_tool_calls": false}),
        ),
        (
            "trl",
            json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "weather", "arguments": {"city": "Paris"}}}]}],
            "tools": tools}),
        ),
    ];
    for (format, want) in expected {
        let out = export(dir.path(), &["--format", format, "--out", "rows.jsonl"]);
        assert_ok(&out);
        let got = rows(&dir.path().join("rows.jsonl"));
        assert_eq!(got.len(), 4, "{}", stderr(&out));
        for (row, (id, _)) in got.iter().zip(same_conversation_in_every_convention()) {
            let mut row = row.clone();
            // JSON text arguments keep the sender's spacing; compare them as JSON.
            if let Some(args) =
                row["messages"][2]["tool_calls"][0]["function"]["arguments"].as_str()
            {
                let v: Value = serde_json::from_str(args).unwrap();
                row["messages"][2]["tool_calls"][0]["function"]["arguments"] = json!(v.to_string());
            }
            assert_eq!(row, want, "--format {format}, {id}");
        }
    }
}

#[test]
fn tool_results_keep_ids_and_names_in_openai_and_trl() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    write_rollout(
        &traces,
        "ro-tools",
        "succeeded",
        "s",
        1.0,
        vec![(
            "gen_ai",
            json!({
                "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "go",
                "gen_ai.prompt.1.role": "assistant", "gen_ai.prompt.1.content": "Checking.",
                "gen_ai.prompt.1.tool_calls.0.id": "call_7", "gen_ai.prompt.1.tool_calls.0.name": "lookup",
                "gen_ai.prompt.1.tool_calls.0.arguments": "{\"q\": 1}",
                "gen_ai.prompt.2.role": "toolResult", "gen_ai.prompt.2.content": "found",
                "gen_ai.prompt.2.tool_call_id": "call_7",
                "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "Found it."
            }),
        )],
    );
    let out = export(
        dir.path(),
        &[
            "--format",
            "openai",
            "--train-on",
            "last",
            "--out",
            "o.jsonl",
        ],
    );
    assert_ok(&out);
    let openai = &rows(&dir.path().join("o.jsonl"))[0]["messages"];
    assert_eq!(
        openai[1],
        json!({"role": "assistant", "content": "Checking.", "weight": 0, "tool_calls": [
        {"id": "call_7", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]})
    );
    assert_eq!(
        openai[2],
        json!({"role": "tool", "tool_call_id": "call_7", "content": "found"})
    );
    assert_eq!(
        openai[3],
        json!({"role": "assistant", "content": "Found it.", "weight": 1})
    );
    let out = export(dir.path(), &["--format", "trl", "--out", "t.jsonl"]);
    assert_ok(&out);
    let trl = &rows(&dir.path().join("t.jsonl"))[0]["messages"];
    assert_eq!(
        trl[1]["tool_calls"][0]["function"]["arguments"],
        json!({"q": 1})
    );
    assert_eq!(
        trl[2],
        json!({"role": "tool", "name": "lookup", "tool_call_id": "call_7", "content": "found"})
    );
    // Weights are an OpenAI notion.
    let out = export(dir.path(), &["--format", "trl", "--train-on", "last"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--format openai"), "{}", stderr(&out));
}

#[test]
fn filters_drop_rollouts_and_stats_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    let day = 86_400.0;
    let feb1 = 1_769_904_000.0; // 2026-02-01T00:00:00Z
    write_rollout(
        &traces,
        "ro-a",
        "succeeded",
        "s1",
        feb1,
        vec![("gen_ai", qa("a", "m-1")), reward(0.9)],
    );
    write_rollout(
        &traces,
        "ro-b",
        "succeeded",
        "s1",
        feb1 + day,
        vec![("gen_ai", qa("b", "m-2")), reward(0.2)],
    );
    write_rollout(
        &traces,
        "ro-c",
        "failed",
        "s2",
        feb1 + 2.0 * day,
        vec![("gen_ai", qa("c", "m-1")), reward(1.0)],
    );
    // No reward at all, and an older AGL reward span.
    write_rollout(
        &traces,
        "ro-d",
        "succeeded",
        "s3",
        feb1 + 3.0 * day,
        vec![("gen_ai", qa("d", "m-1"))],
    );
    write_rollout(
        &traces,
        "ro-e",
        "succeeded",
        "s3",
        feb1 + 4.0 * day,
        vec![
            ("gen_ai", qa("e", "m-1")),
            ("agentlightning.reward", json!({"reward": 0.7})),
        ],
    );
    // Primary reward is index 0, and the last reward span counts.
    write_rollout(
        &traces,
        "ro-f",
        "succeeded",
        "s4",
        feb1 + 5.0 * day,
        vec![
            ("gen_ai", qa("f", "m-1")),
            reward(0.1),
            (
                "agentlightning.annotation",
                json!({"agentlightning.reward.0.name": "primary",
            "agentlightning.reward.0.value": 0.6, "agentlightning.reward.1.name": "aux",
            "agentlightning.reward.1.value": 0.0}),
            ),
        ],
    );

    // A rollout whose root span never arrived (the proxy recorded its call,
    // the command's own spans were lost): not training data by default.
    write_rollout(
        &traces,
        "ro-g",
        "running",
        "s5",
        feb1 + 6.0 * day,
        vec![("gen_ai", qa("g", "m-1"))],
    );

    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["a", "b", "c", "d", "e", "f"]),
        (
            &["--include-incomplete"],
            &["a", "b", "c", "d", "e", "f", "g"],
        ),
        (&["--min-reward", "0.5"], &["a", "c", "e", "f"]),
        (&["--min-reward", "0.65"], &["a", "c", "e"]),
        (&["--status", "succeeded"], &["a", "b", "d", "e", "f"]),
        (&["--status", "failed,running"], &["c", "g"]),
        (
            &["--since", "2026-02-02", "--until", "2026-02-04"],
            &["b", "c"],
        ),
        (&["--since", "2026-02-05T00:00:00Z"], &["e", "f"]),
        (
            &["--session", "s1", "--session", "s3"],
            &["a", "b", "d", "e"],
        ),
        (&["--model", "m-2"], &["b"]),
        (
            &[
                "--min-reward",
                "0.5",
                "--status",
                "succeeded",
                "--model",
                "m-1",
            ],
            &["a", "e", "f"],
        ),
    ];
    for (args, want) in cases {
        let mut full = args.to_vec();
        full.extend(["--out", "f.jsonl"]);
        let out = export(dir.path(), &full);
        assert_ok(&out);
        assert_eq!(users(&rows(&dir.path().join("f.jsonl"))), *want, "{args:?}");
    }

    let out = export(
        dir.path(),
        &["--min-reward", "0.5", "--model", "m-1", "--stats"],
    );
    assert_ok(&out);
    let stats = stdout(&out);
    for line in [
        "rollouts read      7",
        "rows               4",
        "turns (assistant)  4",
        "  m-1  4 40 12",
        "dropped            3",
    ] {
        assert!(stats.contains(line), "{line:?} not in\n{stats}");
    }
    assert!(
        stats
            .lines()
            .any(|l| l.contains("--include-incomplete") && l.ends_with(" 1")),
        "{stats}"
    );
    assert!(
        stats
            .lines()
            .any(|l| l.contains("model not selected") && l.ends_with(" 1")),
        "{stats}"
    );
    assert!(
        stats
            .lines()
            .any(|l| l.contains("no reward") && l.ends_with(" 1")),
        "{stats}"
    );
}

#[test]
fn dedupe_writes_identical_conversations_once() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    for (id, text) in [("ro-1", "x"), ("ro-2", "y"), ("ro-3", "x"), ("ro-4", "x")] {
        write_rollout(
            &traces,
            id,
            "succeeded",
            id,
            1.0,
            vec![("gen_ai", qa(text, "m"))],
        );
    }
    let out = export(dir.path(), &["--dedupe", "--stats"]);
    assert_ok(&out);
    assert_eq!(
        users(&rows(&dir.path().join("sft_dataset.jsonl"))),
        ["x", "y"]
    );
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.contains("duplicate") && l.ends_with(" 2")),
        "{}",
        stdout(&out)
    );
    let out = export(dir.path(), &[]);
    assert_ok(&out);
    assert_eq!(rows(&dir.path().join("sft_dataset.jsonl")).len(), 4);
    // One trace file as the source, several sources in one export.
    let one = "traces/rollout_ro-2_20260212T160713Z.json";
    let out = export(
        dir.path(),
        &["--source", one, "--source", one, "--out", "one.jsonl"],
    );
    assert_ok(&out);
    assert_eq!(users(&rows(&dir.path().join("one.jsonl"))), ["y", "y"]);
}

#[test]
fn split_keeps_each_session_on_one_side() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    let mut session_of = BTreeMap::new();
    for i in 0..120 {
        let session = format!("agent:main:{}", i % 40);
        let text = format!("q{i:03}");
        write_rollout(
            &traces,
            &format!("ro-{i:03}"),
            "succeeded",
            &session,
            1.0,
            vec![("gen_ai", qa(&text, "m"))],
        );
        session_of.insert(text, session);
    }
    let split = |seed: &str, out: &str| {
        let o = export(
            dir.path(),
            &["--split", "0.75", "--seed", seed, "--out", out],
        );
        assert_ok(&o);
        let d = dir.path().join(out);
        (
            users(&rows(&d.join("train.jsonl"))),
            users(&rows(&d.join("val.jsonl"))),
        )
    };
    let (train, val) = split("3", "data");
    assert_eq!(train.len() + val.len(), 120);
    assert!(
        (60..110).contains(&train.len()),
        "{} train rows",
        train.len()
    );
    let sessions = |rows: &[String]| {
        rows.iter()
            .map(|r| session_of[r].clone())
            .collect::<BTreeSet<_>>()
    };
    let (train_sessions, val_sessions) = (sessions(&train), sessions(&val));
    assert!(
        train_sessions.is_disjoint(&val_sessions),
        "a session straddles the split"
    );
    assert_eq!(train_sessions.len() + val_sessions.len(), 40);
    // Deterministic for a seed; another seed splits differently.
    assert_eq!(split("3", "again"), (train.clone(), val.clone()));
    assert_ne!(split("4", "other").0, train);
    // --out names a folder with --split.
    let o = export(dir.path(), &["--split", "0.9", "--out", "x.jsonl"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("folder"), "{}", stderr(&o));
}

#[test]
fn nothing_to_export_is_a_clear_non_zero_exit_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("traces")).unwrap();
    std::fs::write(dir.path().join("sft_dataset.jsonl"), "previous\n").unwrap();

    let out = export(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains("nothing to export") && log.contains("traces"),
        "{log}"
    );

    write_rollout(
        &dir.path().join("traces"),
        "ro-1",
        "failed",
        "s",
        1.0,
        vec![("gen_ai", qa("x", "m"))],
    );
    let out = export(dir.path(), &["--status", "succeeded"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("1 status not selected"),
        "{}",
        stderr(&out)
    );

    let out = export(dir.path(), &["--source", "no-such-folder"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no-such-folder") && stderr(&out).contains("--source"),
        "{}",
        stderr(&out)
    );

    // The previous dataset is untouched and no temporary file is left behind.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sft_dataset.jsonl")).unwrap(),
        "previous\n"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn interrupted_export_leaves_the_previous_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    for i in 0..5 {
        write_rollout(
            &traces,
            &format!("ro-{i}"),
            "succeeded",
            "s",
            1.0,
            vec![("gen_ai", qa("x", "m"))],
        );
    }
    std::fs::write(dir.path().join("sft_dataset.jsonl"), "previous\n").unwrap();
    // A FIFO sorted last: the export blocks on it after writing the other rows.
    let fifo = traces.join("rollout_zz_20260212T160713Z.json");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let child = Command::new(BIN)
        .arg("export-sft")
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tmp = dir.path().join(".sft_dataset.jsonl.tmp");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tmp.exists() {
        assert!(Instant::now() < deadline, "export did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    support::interrupt(child.id());
    std::thread::sleep(Duration::from_millis(200));
    // Unblock the read; the export sees the interruption before the next file.
    std::fs::write(&fifo, "{").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sft_dataset.jsonl")).unwrap(),
        "previous\n"
    );
    assert!(!tmp.exists());
}

/// OTLP spans of one rollout: a root with the session key, then `turns` LLM
/// calls in the AGL convention (the last one holds the whole conversation).
fn rollout_spans(
    rollout: &str,
    trace: u8,
    turns: usize,
) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    let mut spans = vec![span(
        [trace; 16],
        1,
        None,
        "oclagl.rollout",
        vec![
            kv("agentlightning.rollout_id", rollout),
            kv("oclagl.session_key", &format!("agent:main:{rollout}")),
        ],
    )];
    for t in 0..turns {
        let mut attrs = vec![kv("gen_ai.request.model", "m-1")];
        for i in 0..=t {
            attrs.push(kv(&format!("gen_ai.prompt.{}.role", 2 * i), "user"));
            attrs.push(kv(
                &format!("gen_ai.prompt.{}.content", 2 * i),
                &format!("{rollout} q{i}"),
            ));
            if i < t {
                attrs.push(kv(
                    &format!("gen_ai.prompt.{}.role", 2 * i + 1),
                    "assistant",
                ));
                attrs.push(kv(
                    &format!("gen_ai.prompt.{}.content", 2 * i + 1),
                    &format!("a{i}"),
                ));
            }
        }
        attrs.push(kv("gen_ai.completion.0.role", "assistant"));
        attrs.push(kv("gen_ai.completion.0.content", &format!("a{t}")));
        spans.push(span([trace; 16], 2 + t as u64, Some(1), "gen_ai", attrs));
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_source_reads_the_running_sidecar_like_its_trace_files() {
    let (server, tmp) = Server::start(&[]);
    let client = reqwest::Client::new();
    for (n, rollout) in ["ro-aaaaaaaaaaaa", "ro-bbbbbbbbbbbb", "ro-cccccccccccc"]
        .iter()
        .enumerate()
    {
        let body = request(
            vec![kv("service.name", "test")],
            rollout_spans(rollout, n as u8 + 1, n + 1),
        );
        let resp = client
            .post(server.url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    // A trace without any rollout id becomes its own rollout in both views.
    let stray = request(
        vec![],
        vec![span(
            [9; 16],
            1,
            None,
            "gen_ai",
            vec![
                kv("gen_ai.prompt.0.role", "user"),
                kv("gen_ai.prompt.0.content", "stray"),
            ],
        )],
    );
    client
        .post(server.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(stray.encode_to_vec())
        .send()
        .await
        .unwrap();
    wait_for_files(&server.traces_dir(), "4 trace files", |f| f.len() == 4);

    let data: PathBuf = tmp.path().join("data");
    let wal_sizes = || -> Vec<u64> {
        let mut v: Vec<_> = std::fs::read_dir(data.join("wal"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        v.sort();
        v
    };
    let before = wal_sizes();
    // While the sidecar runs: the store is read, not opened for writing.
    let from_store = export(
        tmp.path(),
        &[
            "--source",
            "data",
            "--format",
            "openai",
            "--out",
            "store.jsonl",
            "--stats",
        ],
    );
    assert_ok(&from_store);
    let from_files = export(
        tmp.path(),
        &[
            "--source",
            "traces",
            "--format",
            "openai",
            "--out",
            "files.jsonl",
        ],
    );
    assert_ok(&from_files);
    assert_eq!(wal_sizes(), before);
    let store_rows = rows(&tmp.path().join("store.jsonl"));
    assert_eq!(store_rows, rows(&tmp.path().join("files.jsonl")));
    assert_eq!(store_rows.len(), 4);
    let conversations: BTreeSet<String> = store_rows
        .iter()
        .map(|r| r["messages"].to_string())
        .collect();
    assert!(
        conversations
            .iter()
            .any(|m| m.contains("ro-cccccccccccc q2") && m.contains("a2")),
        "{conversations:?}"
    );
    assert!(
        stdout(&from_store).contains("  m-1  3 "),
        "{}",
        stdout(&from_store)
    );
    let mut server = server;
    server.assert_alive();
}

/// Two succeeded rollouts in `dir/traces`, users "a" and "b".
fn two_rollouts(dir: &Path) {
    for (id, text) in [("ro-1", "a"), ("ro-2", "b")] {
        write_rollout(
            &dir.join("traces"),
            id,
            "succeeded",
            id,
            1.0,
            vec![("gen_ai", qa(text, "m"))],
        );
    }
}

#[test]
fn out_dash_writes_rows_to_stdout_and_no_file() {
    let dir = tempfile::tempdir().unwrap();
    two_rollouts(dir.path());
    let out = export(dir.path(), &["--out", "-", "--stats"]);
    assert_ok(&out);
    let rows: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a row {l}: {e}")))
        .collect();
    assert_eq!(users(&rows), ["a", "b"]);
    assert!(!dir.path().join("-").exists());
    // The statistics went to stderr, with the summary.
    let err = stderr(&out);
    assert!(err.contains("wrote 2 rows to standard output"), "{err}");
    assert!(err.contains("rows               2"), "{err}");
    // --split writes two files: standard output is refused.
    let out = export(dir.path(), &["--out", "-", "--split", "0.5"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not standard output"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn out_through_a_symlink_replaces_the_target_and_keeps_the_link() {
    let dir = tempfile::tempdir().unwrap();
    two_rollouts(dir.path());
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::write(dir.path().join("real/data.jsonl"), "old\n").unwrap();
    std::os::unix::fs::symlink("real/data.jsonl", dir.path().join("link.jsonl")).unwrap();
    let out = export(dir.path(), &["--out", "link.jsonl"]);
    assert_ok(&out);
    let link = std::fs::symlink_metadata(dir.path().join("link.jsonl")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    assert_eq!(
        users(&rows(&dir.path().join("real/data.jsonl"))),
        ["a", "b"]
    );
    // No temporary file left next to the link or the target.
    let names = |d: &Path| -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    // The manifest sits beside the name the user gave.
    assert_eq!(
        names(dir.path()),
        ["link.jsonl", "link.jsonl.manifest.json", "real", "traces"]
    );
    assert_eq!(names(&dir.path().join("real")), ["data.jsonl"]);
    assert!(
        stderr(&out).contains("wrote 2 rows to link.jsonl"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn out_fifo_is_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    two_rollouts(dir.path());
    let fifo = dir.path().join("rows.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).expect("read the FIFO"))
    };
    // The test holds the FIFO open for writing too, so the reader ends when
    // the test lets go, also when the export never opened the FIFO.
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open the FIFO");
    let out = export(dir.path(), &["--out", "rows.fifo"]);
    drop(held);
    let text = reader.join().unwrap();
    assert_ok(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(kind.is_fifo(), "the FIFO was replaced: {kind:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// A character device like `/dev/null` (1:3) at `path`, made with `mknod`
/// (as root); false when it cannot be made. Tests write to such a copy,
/// never to `/dev/null` itself: a regression that replaced the device would
/// break the machine's `/dev/null`.
fn null_device(path: &Path) -> bool {
    Command::new("mknod")
        .arg(path)
        .args(["c", "1", "3"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn out_device_stays_a_device() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    two_rollouts(dir.path());
    let device = dir.path().join("null");
    if !null_device(&device) {
        eprintln!("skipped: mknod needs root");
        return;
    }
    let out = export(dir.path(), &["--out", "null"]);
    assert_ok(&out);
    let kind = std::fs::symlink_metadata(&device).unwrap().file_type();
    assert!(kind.is_char_device(), "the device was replaced: {kind:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// A trace file of one attempt of `task`: the question, the model's answer
/// and, when given, its reward.
fn write_attempt(traces: &Path, id: &str, task: &str, answer: &str, reward: Option<f64>) {
    use support::traces::agl_span;
    let root =
        json!({"oclagl.session_key": format!("agent:main:main:{id}"), "oclagl.task_id": task});
    let call = json!({"gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "be right",
        "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": format!("question {task}"),
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": answer});
    let mut spans = vec![
        agl_span(1, None, "oclagl.rollout", 1_770_000_000.0, root),
        agl_span(2, Some(1), "gen_ai", 1_770_000_001.0, call),
    ];
    if let Some(r) = reward {
        spans.push(agl_span(
            3,
            Some(1),
            "agentlightning.annotation",
            1_770_000_002.0,
            json!({"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": r}),
        ));
    }
    let file = json!({"rollout_id": id, "attempt_id": "at-1", "status": "succeeded",
                      "task_input": null, "span_count": spans.len(), "spans": spans});
    std::fs::create_dir_all(traces).unwrap();
    std::fs::write(
        traces.join(format!("rollout_{id}_20260212T160713Z.json")),
        serde_json::to_vec_pretty(&file).unwrap(),
    )
    .unwrap();
}

#[test]
fn attempts_of_a_task_become_preference_pairs_or_the_best_row() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    for (id, task, answer, reward) in [
        ("ro-a1", "t1", "good", Some(1.0)),
        ("ro-a2", "t1", "bad", Some(0.0)),
        ("ro-a3", "t1", "meh", Some(0.5)),
        ("ro-b1", "t2", "alone", Some(0.7)),
        ("ro-c1", "t3", "tie one", Some(0.5)),
        ("ro-c2", "t3", "tie two", Some(0.5)),
        ("ro-d1", "t4", "unscored", None),
        ("ro-d2", "t4", "unscored too", None),
    ] {
        write_attempt(&traces, id, task, answer, reward);
    }
    let answer = |m: &Value| {
        m.as_array().unwrap()[0]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // DPO: t1's best against its worst; one attempt, a tie or no reward make no pair.
    let out = export(
        dir.path(),
        &["--format", "dpo", "--out", "dpo.jsonl", "--stats"],
    );
    assert_ok(&out);
    let pairs = rows(&dir.path().join("dpo.jsonl"));
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    assert_eq!(
        pairs[0]["prompt"],
        json!([{"role": "system", "content": "be right"}, {"role": "user", "content": "question t1"}])
    );
    assert_eq!(
        (answer(&pairs[0]["chosen"]), answer(&pairs[0]["rejected"])),
        ("good".into(), "bad".into())
    );
    let stats = stdout(&out);
    assert!(
        stats.contains("in no preference pair (--format dpo) 4"),
        "{stats}"
    );
    assert!(
        stats.contains("no reward to rank its task's attempts by 2"),
        "{stats}"
    );

    // A margin no pair reaches: nothing to export.
    let out = export(
        dir.path(),
        &["--format", "dpo", "--min-margin", "1.5", "--out", "x.jsonl"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Best-of: one row a task, its highest reward, the first read on a tie.
    let out = export(
        dir.path(),
        &["--best-of", "--format", "trl", "--out", "best.jsonl"],
    );
    assert_ok(&out);
    let best: Vec<String> = rows(&dir.path().join("best.jsonl"))
        .iter()
        .map(|r| r["messages"][2]["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(best, ["good", "alone", "tie one"]);

    // Flags that do not go together are refused with the fix.
    for (args, says) in [
        (&["--best-of", "--format", "dpo"][..], "use one of them"),
        (&["--min-margin", "0.2"][..], "with --format dpo"),
        (&["--format", "dpo", "--min-margin=-1"][..], "0 or more"),
    ] {
        let out = export(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_manifest_records_the_export_and_verify_re_derives_it() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    for (id, task, answer) in [
        ("ro-m1", "t1", "one"),
        ("ro-m2", "t2", "two"),
        ("ro-m3", "t3", "three: AKIAPGRYGR6KG2JMO37K"),
    ] {
        write_attempt(&traces, id, task, answer, Some(1.0));
    }
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let manifest = |name: &str| -> Value { serde_json::from_slice(&read(name)).unwrap() };

    assert_ok(&export(dir.path(), &["--format", "openai"]));
    let first = manifest("sft_dataset.jsonl.manifest.json");
    let dataset = read("sft_dataset.jsonl");
    // Each file and row by its digest, each row with its rollout.
    assert_eq!(
        first["files"][0]["sha256"],
        hex::encode(Sha256::digest(&dataset))
    );
    let lines: Vec<&[u8]> = dataset
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(first["rows"].as_array().unwrap().len(), 3);
    for (row, line) in first["rows"].as_array().unwrap().iter().zip(&lines) {
        assert_eq!(row["sha256"], hex::encode(Sha256::digest(line)));
    }
    assert_eq!(first["rows"][1]["rollouts"], json!(["ro-m2"]));
    assert_eq!(first["counts"]["rows"], 3);
    assert_eq!(first["counts"]["redacted"], json!({"aws_access_key": 1}));
    assert_eq!(first["settings"]["output"]["format"], "openai");
    assert_eq!(first["settings"]["output"]["redact"], "secrets");
    assert_eq!(first["oclagl"], env!("CARGO_PKG_VERSION"));
    assert!(first["sources"][0]["path"]
        .as_str()
        .unwrap()
        .starts_with('/'));

    // The same export again: the same bytes, the same manifest but its time.
    assert_ok(&export(dir.path(), &["--format", "openai"]));
    assert_eq!(read("sft_dataset.jsonl"), dataset);
    let mut second = manifest("sft_dataset.jsonl.manifest.json");
    second["created"] = first["created"].clone();
    assert_eq!(second, first);

    // --verify re-derives it, from anywhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("sft_dataset.jsonl.manifest.json");
    let out = export(elsewhere.path(), &["--verify", recorded.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("re-derived exactly: the same 3 rows"),
        "{}",
        stderr(&out)
    );

    // A changed rollout is named.
    write_attempt(&traces, "ro-m2", "t2", "two, changed", Some(1.0));
    let out = export(elsewhere.path(), &["--verify", recorded.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("changed") && said.contains("row 2 (ro-m2)"),
        "{said}"
    );
    assert_eq!(
        read("sft_dataset.jsonl"),
        dataset,
        "verify leaves the dataset alone"
    );

    // A split's manifest sits in its folder; standard output gets none.
    assert_ok(&export(dir.path(), &["--split", "0.5", "--out", "split"]));
    assert_eq!(
        manifest("split/manifest.json")["files"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let out = export(dir.path(), &["--out", "-"]);
    assert_ok(&out);
    assert!(!dir.path().join("-.manifest.json").exists());
}
