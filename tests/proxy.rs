//! The LLM proxy of `oclagl serve`: the real OpenClaw gateway calling its
//! model through the proxy, and the proxy's pass-through and recording
//! against a scripted upstream.

mod support;

use serde_json::{json, Value};
use support::gateway::{decide, oclagl_async, start_provider, Gateway, TOKEN};
use support::{run_py, wait_for_files, Server};

fn spans_named<'a>(doc: &'a Value, pred: impl Fn(&str) -> bool + 'a) -> Vec<&'a Value> {
    doc["spans"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|s| s["name"].as_str().is_some_and(&pred))
                .collect()
        })
        .unwrap_or_default()
}

/// Message content as the dataset holds it: text (a list of text parts is
/// their concatenation).
fn text_of(content: &Value) -> Value {
    match content {
        Value::Array(parts) => Value::String(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>(),
        ),
        other => other.clone(),
    }
}

/// What an OpenAI fine-tuning row must hold for a request the provider
/// received and the answer it gave: every message field for field, the
/// answer last, and the tools.
fn expected_row(body: &Value) -> (Vec<Value>, Value) {
    let mut messages: Vec<Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut out = json!({"role": m["role"], "content": text_of(&m["content"])});
            for field in ["tool_calls", "tool_call_id", "name"] {
                if let Some(v) = m.get(field).filter(|v| !v.is_null()) {
                    out[field] = v.clone();
                }
            }
            out
        })
        .collect();
    let mut answer = decide(body);
    answer["role"] = json!("assistant");
    messages.push(answer);
    (messages, body["tools"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_gateway_model_calls_join_their_rollouts_and_export_exactly() {
    let (provider_addr, provider) = start_provider().await;
    let upstream = format!("http://{provider_addr}/v1");
    let (server, dir) = Server::start(&["--llm-proxy", "127.0.0.1:0", "--llm-upstream", &upstream]);
    let proxy = server
        .llm_proxy
        .expect("the ready line names the LLM proxy");
    let gateway =
        tokio::task::spawn_blocking(move || Gateway::start(&format!("http://{proxy}/v1")))
            .await
            .unwrap();
    let prompts = [
        "Please use the ls tool to list the files",
        "Now use the ls tool once more",
    ];
    std::fs::write(dir.path().join("prompts.txt"), prompts.join("\n")).unwrap();
    let otlp = format!("http://{}", server.http);
    let url = gateway.url();
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("OPENCLAW_GATEWAY_TOKEN", TOKEN),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
    ];
    let args = [
        "collect",
        "--gateway",
        "ws",
        "-c",
        "1",
        "--timeout",
        "120s",
        "prompts.txt",
    ];
    oclagl_async(dir.path(), &env, &args).await;

    // Each rollout's file holds its rollout span and both model calls.
    let traces = server.traces_dir();
    let files = wait_for_files(&traces, "two rollouts with two model calls each", |files| {
        files.len() == 2
            && files.iter().all(|(_, d)| {
                d["status"] == "succeeded" && spans_named(d, |n| n.starts_with("chat ")).len() == 2
            })
    });
    let calls = provider.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "gateway log:\n{}", gateway.log());
    let mut expected_rows = Vec::new();
    for (name, doc) in &files {
        assert_eq!(
            spans_named(doc, |n| n == "oclagl.rollout").len(),
            1,
            "{name}"
        );
        let trace = doc["spans"][0]["trace_id"].as_str().unwrap();
        let model_calls = spans_named(doc, |n| n == "chat mock-1");
        for span in &model_calls {
            assert_eq!(
                span["trace_id"], trace,
                "{name}: the call joins the rollout's trace"
            );
            let attrs = &span["attributes"];
            assert_eq!(attrs["gen_ai.operation.name"], "chat");
            assert!(attrs["gen_ai.response.id"]
                .as_str()
                .is_some_and(|id| id.starts_with("chatcmpl-mock-")));
            assert_eq!(attrs["gen_ai.usage.input_tokens"], 11);
            assert_eq!(attrs["oclagl.llm_proxy.truncated"], false);
            assert!(attrs["gen_ai.prompt.0.role"] == "system", "{attrs:#}");
        }
        let mine: Vec<_> = calls
            .iter()
            .filter(|c| c.traceparent.as_deref().and_then(|tp| tp.split('-').nth(1)) == Some(trace))
            .collect();
        assert_eq!(
            mine.len(),
            2,
            "{name}: the provider saw this rollout's two calls"
        );
        // The first call was answered with the tool call, recorded as such.
        let first = model_calls
            .iter()
            .find(|s| s["attributes"]["gen_ai.completion.0.finish_reason"] == "tool_calls")
            .expect("the tool-call answer is recorded");
        assert_eq!(
            first["attributes"]["gen_ai.completion.0.tool_calls.0.id"],
            "call_abc"
        );
        assert_eq!(
            first["attributes"]["gen_ai.completion.0.tool_calls.0.arguments"],
            "{\"path\":\".\"}"
        );
        expected_rows.push(expected_row(&mine[1].body));
    }

    // The provider's key went upstream and nowhere else.
    assert!(calls
        .iter()
        .all(|c| c.authorization.as_deref() == Some("Bearer mock-provider-key")));
    assert!(!support::disk_contains(dir.path(), "mock-provider-key"));

    let out = oclagl_async(
        dir.path(),
        &[],
        &[
            "export-sft",
            "--format",
            "openai",
            "--source",
            traces.to_str().unwrap(),
            "--out",
            "sft.jsonl",
        ],
    )
    .await;
    assert!(out.status.success());
    let rows: Vec<Value> = std::fs::read_to_string(dir.path().join("sft.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for (messages, tools) in &expected_rows {
        let row = rows
            .iter()
            .find(|r| r["messages"].as_array() == Some(messages))
            .unwrap_or_else(|| {
                panic!(
                    "no row equals the provider's last request + answer:\nexpected {}\nrows {rows:#?}",
                    Value::Array(messages.clone())
                )
            });
        // The row holds the system prompt, the tool call with its real id and
        // arguments, its result and the final answer.
        assert_eq!(messages[0]["role"], "system");
        let call = messages
            .iter()
            .rev()
            .find_map(|m| m["tool_calls"].get(0))
            .expect("an assistant tool call");
        assert_eq!(call["function"]["arguments"], "{\"path\":\".\"}");
        assert!(messages
            .iter()
            .any(|m| m["role"] == "tool" && m["tool_call_id"] == call["id"]));
        assert_eq!(
            messages.last().unwrap()["content"],
            "The folder listing is done."
        );
        let exported_tools: Vec<Value> = row["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"].clone())
            .collect();
        let sent: Vec<Value> = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut out = json!({"name": f["name"], "parameters": f["parameters"]});
                if let Some(d) = f.get("description") {
                    out["description"] = d.clone();
                }
                out
            })
            .collect();
        assert_eq!(exported_tools, sent, "tool definitions, field for field");
    }

    // AGL 0.3.0 reads the proxy's spans: messages with the real tool call,
    // tools, and one triplet per model call.
    let agl: Value =
        serde_json::from_str(&run_py("check_proxy_spans.py", &[traces.to_str().unwrap()])).unwrap();
    for (_, doc) in &files {
        let seen = &agl[doc["rollout_id"].as_str().unwrap()];
        assert_eq!(seen["triplets"], 2, "{seen:#}");
        let messages = seen["messages"].as_array().unwrap();
        assert_eq!(messages[0]["role"], "system");
        assert!(messages
            .iter()
            .any(|m| m["tool_calls"][0]["function"]["arguments"] == "{\"path\":\".\"}"));
        assert_eq!(
            messages.last().unwrap()["content"],
            "The folder listing is done."
        );
        assert!(!seen["tools"].as_array().unwrap().is_empty());
    }
}
