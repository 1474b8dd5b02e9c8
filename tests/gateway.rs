//! `oclagl collect` / `run` against the real OpenClaw gateway (npm), whose
//! model is a scripted provider served here. One gateway serves every
//! scenario of this file, so they run in one test, one after another.

mod support;

use std::path::Path;

use serde_json::Value;
use support::gateway::{oclagl_async, start_provider, Gateway, TOKEN};
use support::trace_files;

fn trace_id_of(doc: &Value) -> String {
    doc["spans"][0]["trace_id"].as_str().unwrap().to_string()
}

fn messages(traces: &Path) -> Value {
    serde_json::from_str(&support::run_py(
        "check_messages.py",
        &[traces.to_str().unwrap()],
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_openai_and_cli_modes_against_the_real_gateway() {
    let (provider_addr, provider) = start_provider().await;
    let gateway =
        tokio::task::spawn_blocking(move || Gateway::start(&format!("http://{provider_addr}/v1")))
            .await
            .unwrap();
    let url = gateway.url();
    let base_env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("OPENCLAW_GATEWAY_TOKEN", TOKEN),
    ];

    // --- ws: two prompts, one of which makes the model call a tool.
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(
        ws.path().join("prompts.txt"),
        "Say hello\nPlease use the ls tool to list the files\nTell me a joke\n",
    )
    .unwrap();
    oclagl_async(
        ws.path(),
        &base_env,
        &["collect", "--gateway", "ws", "--timeout", "120s"],
    )
    .await;
    let files = trace_files(&ws.path().join("traces"));
    assert_eq!(files.len(), 3, "gateway log:\n{}", gateway.log());
    let calls = provider.calls.lock().unwrap().clone();
    let prompts = [
        "Say hello",
        "Please use the ls tool to list the files",
        "Tell me a joke",
    ];
    // One prompt, one independent example: each rollout runs in a session
    // of its own, so no model call carries another prompt's messages.
    for call in &calls {
        let users = support::gateway::user_texts(&call.body);
        let of_prompts: Vec<_> = prompts
            .iter()
            .filter(|p| users.iter().any(|u| u.contains(**p)))
            .collect();
        assert_eq!(of_prompts.len(), 1, "one prompt per model call: {users:#?}");
    }
    for (_, doc) in &files {
        assert_eq!(doc["status"], "succeeded");
        let trace = trace_id_of(doc);
        let prompt = doc["task_input"]["prompt"].as_str().unwrap();
        let mine: Vec<_> = calls
            .iter()
            .filter(|c| support::gateway::prompt_of(&c.body, &prompts) == Some(prompt))
            .collect();
        let expected_calls = if prompt.contains("ls tool") { 2 } else { 1 };
        let seen: Vec<_> = calls
            .iter()
            .map(|c| support::gateway::user_texts(&c.body))
            .collect();
        assert_eq!(
            mine.len(),
            expected_calls,
            "provider calls for {prompt:?}; user texts seen: {seen:#?}"
        );
        for call in mine {
            let tp = call
                .traceparent
                .as_deref()
                .expect("the gateway sends traceparent to the provider");
            assert_eq!(
                tp.split('-').nth(1),
                Some(trace.as_str()),
                "the model call joins the rollout's trace"
            );
        }
    }
    // So `--split` has a session per row to spread (a seed that leaves a
    // side empty is possible with three sessions, not with all of 20).
    let spread = (0..20).any(|seed| {
        let out = support::gateway::oclagl(
            ws.path(),
            &[],
            &[
                "export-sft",
                "--split",
                "0.5",
                "--seed",
                &seed.to_string(),
                "--out",
                "split",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = |f: &str| {
            std::fs::read_to_string(ws.path().join("split").join(f))
                .unwrap_or_default()
                .lines()
                .count()
        };
        let (train, val) = (rows("train.jsonl"), rows("val.jsonl"));
        assert_eq!(train + val, 3, "three prompts, three rows");
        train > 0 && val > 0
    });
    assert!(
        spread,
        "--split put all three rows on one side for every seed"
    );
    let tool_round = calls
        .iter()
        .find(|c| {
            c.body["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"))
        })
        .expect("the gateway ran the tool and called the model again");
    assert!(
        tool_round.body["messages"].to_string().contains("call"),
        "tool result follows the tool call"
    );
    let checked = messages(&ws.path().join("traces"));
    let hello = &checked["Say hello"];
    assert_eq!(hello["messages"][0]["role"], "user");
    assert_eq!(hello["messages"][0]["content"], "Say hello");
    assert_eq!(
        hello["messages"][1]["content"],
        "Hello from the mock model."
    );
    let tool = &checked["Please use the ls tool to list the files"];
    assert_eq!(
        tool["messages"][1]["content"],
        "The folder listing is done."
    );

    // --- openai: one run through /v1/chat/completions.
    let oa = tempfile::tempdir().unwrap();
    let out = oclagl_async(
        oa.path(),
        &base_env,
        &["run", "--gateway", "openai", "Say hello over HTTP"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Hello from the mock model."
    );
    let checked = messages(&oa.path().join("traces"));
    assert_eq!(checked["Say hello over HTTP"]["status"], "succeeded");
    assert_eq!(
        checked["Say hello over HTTP"]["messages"][1]["content"],
        "Hello from the mock model."
    );

    // --- cli: `openclaw agent --json` against the same gateway.
    let cli = tempfile::tempdir().unwrap();
    let wrapper = gateway.cli_wrapper();
    let wrapper = wrapper.display().to_string();
    let env = [base_env[0], base_env[1], ("OPENCLAW_BIN", wrapper.as_str())];
    let args = [
        "run",
        "--gateway",
        "cli",
        "--agent",
        "main",
        "Say hello from the CLI",
    ];
    let out = oclagl_async(cli.path(), &env, &args).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Hello from the mock model."
    );
    let checked = messages(&cli.path().join("traces"));
    assert_eq!(checked["Say hello from the CLI"]["status"], "succeeded");

    // The gateway token is in no file oclagl wrote.
    for dir in [ws.path(), oa.path(), cli.path()] {
        for (name, doc) in trace_files(&dir.join("traces")) {
            assert!(!doc.to_string().contains(TOKEN), "token in {name}");
        }
    }
}
