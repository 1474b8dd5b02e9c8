//! `export-sft --source <AGL v1 server>`: the real AGL v1 server
//! (`agentlightning==1.0.2`), its model proxy in front of the scripted
//! vLLM-like model server, rollouts driven through its own API as a harness
//! drives them; the rows must be what the model received and answered.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use support::agl::{start_vllm, Agl, Vllm, ANSWER};
use support::rows;

const KEY: &str = "agl-test-key-5f1c";

fn export(dir: &Path, key: &str, args: &[&str]) -> Output {
    Command::new(support::BIN)
        .arg("export-sft")
        .args(args)
        .current_dir(dir)
        .env("AGL_KEY", key)
        .env_remove("OCLAGL_EXPORT_AGL_KEY")
        .output()
        .expect("run oclagl export-sft")
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "export-sft failed: {err}");
    err
}

/// Runs one rollout as a harness would: its task through AGL's per-rollout
/// proxy until the model answers without a tool call (or after `calls`),
/// then its reward and its end state. Returns the last request the model
/// server received for it.
async fn run(
    agl: &Agl,
    vllm: &Vllm,
    id: &str,
    calls: usize,
    reward: Option<f64>,
    state: &str,
) -> Value {
    let path = format!("/api/rollouts/{id}");
    let patch = |state: &str| {
        agl.call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"status": {"state": state}})),
        )
    };
    patch("running").await;
    let tool = |name: &str| {
        json!({"type": "function", "function": {"name": name,
        "description": format!("{name} a path"), "parameters": {"type": "object",
        "properties": {"path": {"type": "string"}}}}})
    };
    let mut messages = vec![
        json!({"role": "system", "content": "You are a careful assistant."}),
        json!({"role": "user", "content": format!("Task {id}: list the folder, then read notes.txt")}),
    ];
    let http = reqwest::Client::new();
    for _ in 0..calls {
        let answer: Value = http
            .post(format!("{}/chat/completions", agl.base_url(id)))
            .bearer_auth(KEY)
            .json(
                &json!({"model": "any", "messages": messages, "tools": [tool("ls"), tool("read")]}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let message = answer["choices"][0]["message"].clone();
        let tool_calls = message["tool_calls"].as_array().cloned();
        messages.push(message);
        let Some(tool_calls) = tool_calls else { break };
        for c in tool_calls {
            messages.push(json!({"role": "tool", "tool_call_id": c["id"],
                "content": format!("output of {}", c["function"]["name"])}));
        }
    }
    if let Some(value) = reward {
        agl.post(
            &format!("/api/rollouts/{id}/attempt/0/events"),
            json!({"event_type": "reward", "data": {"value": value, "source": "test"}}),
        )
        .await;
    }
    patch(state).await;
    vllm.calls.lock().unwrap().last().unwrap().body.clone()
}

/// The row's messages are the request's, then the answer, field by field.
fn assert_row_is(row: &Value, request: &Value) {
    let sent = request["messages"].as_array().unwrap();
    let got = row["messages"].as_array().unwrap();
    assert_eq!(got.len(), sent.len() + 1, "{row:#}");
    for (g, s) in got.iter().zip(sent) {
        assert_eq!(g["role"], s["role"], "{row:#}");
        if s["content"].is_string() {
            assert_eq!(g["content"], s["content"], "{row:#}");
        }
        assert_eq!(g.get("tool_call_id"), s.get("tool_call_id"), "{row:#}");
        if let Some(calls) = s["tool_calls"].as_array() {
            for (gc, sc) in g["tool_calls"].as_array().unwrap().iter().zip(calls) {
                assert_eq!(gc["id"], sc["id"]);
                assert_eq!(gc["function"]["name"], sc["function"]["name"]);
                assert_eq!(gc["function"]["arguments"], sc["function"]["arguments"]);
            }
        }
    }
    assert_eq!(got.last().unwrap()["content"], ANSWER);
    let tools: Vec<&Value> = row["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["function"]["name"])
        .collect();
    assert_eq!(tools, ["ls", "read"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agl_v1_server_is_a_source_like_any_other() {
    let agl = Agl::start(KEY);
    let (vllm_addr, vllm) = start_vllm().await;
    agl.register_model(&format!("http://{vllm_addr}/v1")).await;
    let input = |task: &str| json!({"prompt": "list and read", "data_id": task});
    agl.post(
        "/api/rollouts",
        json!([
            {"rollout_id": "r-two-tools", "input": input("t-1")},
            {"rollout_id": "r-a", "input": input("t-2")},
            {"rollout_id": "r-b", "input": input("t-2")},
            {"rollout_id": "r-failed", "input": input("t-3")},
            {"rollout_id": "r-late", "input": input("t-4")},
            {"rollout_id": "r-queued", "input": input("t-5")},
        ]),
    )
    .await;
    let two_tools = run(&agl, &vllm, "r-two-tools", 5, Some(1.0), "succeeded").await;
    run(&agl, &vllm, "r-a", 5, Some(0.2), "succeeded").await;
    let b = run(&agl, &vllm, "r-b", 5, Some(0.9), "succeeded").await;
    run(&agl, &vllm, "r-failed", 1, None, "failed").await;
    // The model server received what AGL's proxy makes of a call: token ids
    // asked for, the training temperature.
    assert_eq!(two_tools["return_token_ids"], true);
    assert_eq!(two_tools["temperature"], 1.0);

    let dir = tempfile::tempdir().unwrap();
    let url = agl.url("");
    let out = export(
        dir.path(),
        KEY,
        &["--source", &url, "--format", "openai", "--out", "all.jsonl"],
    );
    ok(&out);
    // Terminal rollouts only, in the order they ended; the failed one too
    // (a status filter drops it), its answer a tool call.
    let all = rows(&dir.path().join("all.jsonl"));
    assert_eq!(all.len(), 4);
    assert_row_is(&all[0], &two_tools);
    assert_row_is(&all[2], &b);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("all.jsonl.manifest.json")).unwrap())
            .unwrap();
    let rollouts: Vec<&Value> = manifest["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["rollouts"][0])
        .collect();
    assert_eq!(rollouts, ["r-two-tools", "r-a", "r-b", "r-failed"]);
    assert_eq!(manifest["sources"][0]["path"], url.as_str());
    assert_eq!(manifest["sources"][0]["next_after"], 4);
    let text = std::fs::read_to_string(dir.path().join("all.jsonl.manifest.json")).unwrap();
    assert!(!text.contains(KEY), "the key stays out of the manifest");

    // Filters and attempts work as on any source: the attempts of a task
    // share AGL's data_id; the reward is the reward event's value.
    let out = export(
        dir.path(),
        KEY,
        &[
            "--source",
            &url,
            "--status",
            "succeeded",
            "--best-of",
            "--out",
            "best.jsonl",
        ],
    );
    ok(&out);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("best.jsonl.manifest.json")).unwrap(),
    )
    .unwrap();
    let kept: Vec<&Value> = manifest["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["rollouts"][0])
        .collect();
    assert_eq!(kept, ["r-two-tools", "r-b"]);
    let out = export(
        dir.path(),
        KEY,
        &[
            "--source",
            &url,
            "--min-reward",
            "0.5",
            "--out",
            "good.jsonl",
        ],
    );
    ok(&out);
    assert_eq!(rows(&dir.path().join("good.jsonl")).len(), 2);

    // The cursor: a later export reads only the rollouts that ended since.
    let late = run(&agl, &vllm, "r-late", 5, Some(0.5), "succeeded").await;
    let since = format!("{url}?after=4");
    let out = export(
        dir.path(),
        KEY,
        &[
            "--source",
            &since,
            "--format",
            "openai",
            "--out",
            "late.jsonl",
        ],
    );
    ok(&out);
    let later = rows(&dir.path().join("late.jsonl"));
    assert_eq!(later.len(), 1);
    assert_row_is(&later[0], &late);

    // A wrong key, a server that is not there: one line naming the fix.
    let out = export(dir.path(), "wrong", &["--source", &url, "--out", "x.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the key (401)") && err.contains("AGL_KEY"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let nowhere = format!("http://127.0.0.1:{}", support::free_port());
    let out = export(dir.path(), KEY, &["--source", &nowhere, "--out", "x.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the AGL v1 server"), "{err}");
    assert!(!dir.path().join("x.jsonl").exists());
}
