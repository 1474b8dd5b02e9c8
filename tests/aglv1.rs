//! Training OpenClaw with Agent Lightning v1 (issue #19, points 1 to 4),
//! against the real AGL v1 1.0.2 server and local controller, the real
//! OpenClaw gateway and a scripted vLLM-like model server behind AGL:
//! AGL's controller starts `oclagl run` through the Python harness class,
//! the rollout is bound at the sidecar, its model calls reach AGL's
//! per-rollout proxy de-streamed, pauses are waited out, rewards reach AGL;
//! and AGL's Kubernetes runner renders the Job template of `deploy/`.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::agl::{start_vllm, Agl, ANSWER, MODEL};
use support::gateway::{Gateway, TOKEN};
use support::{disk_contains, proxy_span, traceparent, Server, BIN};

const KEY: &str = "agl-key-7f3e9c21";

/// The rollout of a two-tool task, run by oclagl's harness class.
fn rollout(id: &str, n: usize) -> Value {
    json!({"rollout_id": id, "is_train": true,
        "input": {"prompt": format!("Task {n}: use the ls tool on the folder, then read notes.txt."),
                  "expected": "done"},
        "config": {"timeout_seconds": 90, "local": {
            "agent_class": "oclagl_agl.harness:OpenClawHarness",
            "env_map": {"OCLAGL_RUN_PROMPT": "input.prompt", "OCLAGL_RUN_EXPECTED": "input.expected"}}}})
}

/// `oclagl run` with `env` (nothing of the caller's gateway or OTLP
/// settings), on a blocking thread.
async fn run(env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.arg("run").stdin(Stdio::null());
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OCLAGL_TOKEN",
            "OCLAGL_GATEWAY_URL",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env).output().unwrap()
    })
    .await
    .unwrap()
}

fn envs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits until `log()` holds `needle`.
async fn wait_for_log(what: &str, needle: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !log().contains(needle) {
        assert!(Instant::now() < deadline, "no {what}:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agl_v1_runs_openclaw_rollouts_through_oclagl_and_gets_their_model_calls_and_rewards() {
    let (vllm_addr, vllm) = start_vllm().await;
    let vllm_url = format!("http://{vllm_addr}/v1");
    let agl = Agl::start(KEY);
    agl.register_model(&vllm_url).await;
    let pause_flags = ["--llm-agl-max-pause", "2m"];
    let (server, _dir) = Server::start(
        &[
            &["--llm-proxy", "127.0.0.1:0", "--llm-upstream", &vllm_url],
            &pause_flags[..],
        ]
        .concat(),
    );
    let proxy = server.llm_proxy.expect("the LLM proxy");
    let gw = Gateway::start(&format!("http://{proxy}/v1"));
    let (data, traces) = (server.dir.join("data"), server.traces_dir());
    let (data, traces) = (data.display().to_string(), traces.display().to_string());
    let harness_env = [
        ("OCLAGL_HARNESS_BIN", BIN),
        ("OCLAGL_GATEWAY", "ws"),
        ("OCLAGL_GATEWAY_URL", &gw.url()),
        ("OCLAGL_TOKEN", TOKEN),
        ("OCLAGL_DATA_DIR", &data),
        ("OCLAGL_TRACES_DIR", &traces),
        ("OCLAGL_SCORE", "contains"),
    ];
    let controller = agl.controller(&harness_env);
    let logs = || {
        format!(
            "controller:\n{}\nagl:\n{}\nsidecar:\n{}\ngateway:\n{}",
            controller.log(),
            agl.server.log(),
            server.log(),
            gw.log()
        )
    };

    let ids = ["oc-1", "oc-2", "oc-3"];
    let batch: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| rollout(id, n + 1))
        .collect();
    agl.post("/api/rollouts", json!(batch)).await;
    for id in ids {
        let state = agl.wait_terminal(id, logs).await;
        let detail = agl.get(&format!("/api/rollouts/{id}")).await;
        let first = vllm.calls.lock().unwrap().first().map(|c| c.body.clone());
        assert_eq!(
            state,
            "succeeded",
            "{id}: {detail}\n{}\nfirst call: {first:#?}",
            logs()
        );
    }
    for (n, id) in ids.iter().enumerate() {
        let calls = agl.events(id, "model_request").await;
        assert_eq!(calls.len(), 3, "{id}: {calls:#?}");
        for (k, call) in calls.iter().enumerate() {
            let data = &call["data"];
            assert_eq!(data["status"], "ok", "{id} call {k}");
            let request = &data["request"];
            // What the gateway sent, without streaming (AGL refuses it).
            assert_eq!(request["stream"], false, "{id} call {k}");
            assert!(request.get("stream_options").is_none());
            let messages = request["messages"].as_array().unwrap();
            assert_eq!(messages[0]["role"], "system");
            assert!(
                messages.iter().any(|m| m["role"] == "user"
                    && m["content"]
                        .to_string()
                        .contains(&format!("Task {}:", n + 1))),
                "{id} call {k} is another rollout's"
            );
            let tools: Vec<&str> = request["tools"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|t| t["function"]["name"].as_str())
                .collect();
            assert!(
                tools.contains(&"ls") && tools.contains(&"read"),
                "{tools:?}"
            );
            // The tool calls the model made reached it again, with their
            // results, as the gateway ran them.
            let called: Vec<String> = messages
                .iter()
                .filter_map(|m| m["tool_calls"].as_array())
                .flatten()
                .filter_map(|c| c["function"]["name"].as_str().map(str::to_string))
                .collect();
            assert_eq!(called, ["ls", "read"][..k], "{id} call {k}");
            let results = messages.iter().filter(|m| m["role"] == "tool").count();
            assert_eq!(results, k, "{id} call {k}");
            let response = &data["response"];
            assert!(response["prompt_token_ids"]
                .as_array()
                .is_some_and(|t| !t.is_empty()));
            assert!(response["choices"][0]["token_ids"].is_array());
            assert!(response["choices"][0]["logprobs"]["content"].is_array());
        }
        let last = &calls[2]["data"]["response"]["choices"][0]["message"]["content"];
        assert_eq!(last, ANSWER);
        let rewards = agl.events(id, "reward").await;
        assert_eq!(rewards.len(), 1, "{id}: {rewards:#?}");
        let reward = &rewards[0]["data"];
        assert_eq!(
            (&reward["value"], &reward["source"], &reward["reason"]),
            (&json!(1.0), &json!("oclagl"), &json!("contains"))
        );
    }
    assert_eq!(vllm.calls.lock().unwrap().len(), 9);
    assert!(vllm
        .calls
        .lock()
        .unwrap()
        .iter()
        .all(|c| c.body["model"] == MODEL && c.body["return_token_ids"] == true));

    // Paused for a weight update: the calls wait, then the turn completes.
    agl.post("/proxy/pause", json!({"retry_after_seconds": 1}))
        .await;
    agl.post("/api/rollouts", json!([rollout("oc-4", 4)])).await;
    wait_for_log("pause line", "AGL is paused", || server.log()).await;
    agl.post("/proxy/resume", json!({})).await;
    assert_eq!(agl.wait_terminal("oc-4", logs).await, "succeeded");
    assert_eq!(agl.events("oc-4", "model_request").await.len(), 3);
    assert_eq!(agl.events("oc-4", "reward").await.len(), 1);

    // A wrong key, a rollout AGL does not know, a gateway mode that does
    // not pass traceparent: one clear line, a failed exit, and the gateway
    // never runs the task.
    let before = vllm.calls.lock().unwrap().len();
    let gateway_url = gw.url();
    let common = [
        ("OCLAGL_RUN_PROMPT", "Task 9: use the ls tool."),
        ("OCLAGL_GATEWAY_URL", gateway_url.as_str()),
        ("OCLAGL_TOKEN", TOKEN),
        ("OCLAGL_DATA_DIR", data.as_str()),
        ("OCLAGL_TRACES_DIR", traces.as_str()),
    ];
    let events_url = agl.url("/api/rollouts/oc-1/attempt/0/events");
    for (rollout, key, mode, want) in [
        ("oc-1", "wrong-key", "ws", "AGL refused the key"),
        ("not-there", KEY, "ws", "AGL does not know the rollout"),
        ("oc-1", KEY, "openai", "needs --gateway ws"),
    ] {
        let base = agl.base_url(rollout);
        let mut env = envs(&common);
        env.extend(envs(&[
            ("OCLAGL_GATEWAY", mode),
            ("AGL_OPENAI_BASE_URL", &base),
            ("AGL_EVENT_URL", &events_url),
            ("AGL_KEY", key),
        ]));
        let out = run(env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{rollout}: {stderr}");
        assert!(stderr.contains(want), "{rollout}: {stderr}");
        assert!(
            !stderr.contains("wrong-key") && !stderr.contains(KEY),
            "{stderr}"
        );
    }
    assert_eq!(vllm.calls.lock().unwrap().len(), before);

    // The key is AGL's secret: nowhere in the sidecar's log, store or traces.
    assert!(!server.log().contains(KEY));
    assert!(!disk_contains(&server.traces_dir(), KEY));
    assert!(!disk_contains(&server.dir.join("data/wal"), KEY));
}

/// A chat request as the gateway sends it: streaming, with usage asked for.
fn streaming_request() -> Value {
    json!({"model": "gateway-model", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Task 1: use the ls tool."}],
        "tools": [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}]})
}

async fn chat(proxy: std::net::SocketAddr, trace: u8, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{proxy}/v1/chat/completions"))
        .header("traceparent", traceparent(trace))
        .bearer_auth("the-providers-key")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn bind(server: &Server, trace: u8, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(server.url(&format!("/v1/agl/bindings/{}", hex::encode([trace; 16]))))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_trace_goes_to_its_agl_rollout_de_streamed_across_a_restart_and_others_do_not() {
    let (vllm_addr, vllm) = start_vllm().await;
    let vllm_url = format!("http://{vllm_addr}/v1");
    let agl = Agl::start(KEY);
    agl.register_model(&vllm_url).await;
    agl.post(
        "/api/rollouts",
        json!([{"rollout_id": "bound-1", "input": {"prompt": "x"}}]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--llm-proxy",
        "127.0.0.1:0",
        "--llm-upstream",
        vllm_url.as_str(),
        "--llm-agl-max-pause",
        "1s",
    ];
    let server = Server::start_in(dir.path(), &args);
    let bound = bind(
        &server,
        7,
        json!({"base_url": agl.base_url("bound-1"), "key": KEY}),
    )
    .await;
    assert!(bound.status().is_success(), "{:?}", bound.text().await);
    let unknown = json!({"base_url": agl.base_url("not-there"), "key": KEY});
    assert!(bind(&server, 8, unknown).await.status().is_success());
    let wrong_key = json!({"base_url": agl.base_url("bound-1"), "key": "not-the-key"});
    assert!(bind(&server, 5, wrong_key).await.status().is_success());
    let refused = bind(&server, 6, json!({"base_url": "ftp://agl/v1"})).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("http(s)"));
    // A restart keeps the bindings.
    server.kill();
    let server = Server::start_in(dir.path(), &args);
    let proxy = server.llm_proxy.unwrap();

    let answer = chat(proxy, 7, &streaming_request()).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "text/event-stream");
    let events = answer.text().await.unwrap();
    assert!(events.ends_with("data: [DONE]\n\n"), "{events}");
    // The chunks say what the JSON answer said: read them back as a client.
    let chunks: Vec<Value> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let call = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (
            &call["id"],
            &call["function"]["name"],
            &call["function"]["arguments"]
        ),
        (
            &json!("call_ls_1"),
            &json!("ls"),
            &json!("{\"path\":\".\"}")
        )
    );
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[2]["usage"]["completion_tokens"], 3);
    // AGL got it as one non-streaming call and recorded it.
    let recorded = agl.events("bound-1", "model_request").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["data"]["request"]["stream"], false);
    assert_eq!(
        recorded[0]["data"]["request"]["messages"][0]["content"],
        "You are terse."
    );
    // The sidecar's span is the call as exchanged with AGL.
    let span = proxy_span(&server.traces_dir(), 7);
    assert!(span["attributes"]["oclagl.llm_proxy.upstream"]
        .as_str()
        .unwrap()
        .contains("/proxy/rollout/bound-1/"));
    let stored = server.stored_proxy_span(7);
    let sent: Value =
        serde_json::from_str(stored["oclagl.llm_proxy.request.body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["stream"], false);
    let got: Value =
        serde_json::from_str(stored["oclagl.llm_proxy.response.body"].as_str().unwrap()).unwrap();
    assert_eq!(got["choices"][0]["token_ids"], json!([901, 901, 902]));

    // AGL's own errors reach the client as they are: 404 for a rollout it
    // does not know.
    let missing = chat(proxy, 8, &streaming_request()).await;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("Rollout not found"));
    assert_eq!(chat(proxy, 5, &streaming_request()).await.status(), 401);
    // Paused past --llm-agl-max-pause (1s here): the client gets AGL's 429.
    agl.post("/proxy/pause", json!({"retry_after_seconds": 1}))
        .await;
    let paused = chat(proxy, 7, &streaming_request()).await;
    assert_eq!(paused.status(), 429);
    assert_eq!(paused.headers()["x-agl-paused"], "true");
    let past = "AGL stayed paused past --llm-agl-max-pause";
    wait_for_log("give-up line", past, || server.log()).await;
    agl.post("/proxy/resume", json!({})).await;

    // A trace no rollout is bound to goes to the default upstream as is.
    let mut plain = streaming_request();
    plain["stream"] = json!(false);
    plain.as_object_mut().unwrap().remove("stream_options");
    assert_eq!(chat(proxy, 9, &plain).await.status(), 200);
    let last = vllm.calls.lock().unwrap().last().unwrap().body.clone();
    assert_eq!(last["model"], "gateway-model");
    assert!(last.get("return_token_ids").is_none());

    // Unbound, the trace's calls go to the default upstream again.
    let unbound = reqwest::Client::new()
        .delete(server.url(&format!("/v1/agl/bindings/{}", hex::encode([7u8; 16]))))
        .send()
        .await
        .unwrap();
    assert_eq!(unbound.json::<Value>().await.unwrap()["unbound"], true);
    assert_eq!(chat(proxy, 7, &plain).await.status(), 200);
    assert_eq!(agl.events("bound-1", "model_request").await.len(), 1);

    assert!(!server.log().contains(KEY));
    assert!(!disk_contains(&server.traces_dir(), KEY));
    assert!(!disk_contains(&dir.path().join("data/wal"), KEY));
    assert!(Path::new(&dir.path().join("data/agl-bindings.jsonl")).exists());
}

/// AGL v1's Kubernetes runner (its own `build_job_spec`) renders the Job
/// template of `deploy/` into one Job that runs `oclagl run` with the task
/// and AGL's variables.
#[test]
fn agl_v1_renders_the_harness_job_template_into_a_job_running_oclagl_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prompt = "say \"hi\": {x} & y";
    let out = Command::new(support::agl::venv_bin("python"))
        .arg(support::py_script("agl1_render_job.py"))
        .arg(root.join("deploy/k8s/agl-harness-job.yaml.j2"))
        .arg(prompt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["metadata"]["name"], "agl-rollout-r-1");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], json!(["run"]));
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
            .unwrap_or_else(|| panic!("no {name} in {container:#}"))
    };
    assert_eq!(env("OCLAGL_RUN_PROMPT"), prompt);
    assert_eq!(env("OCLAGL_GATEWAY"), "ws");
    assert_eq!(
        env("AGL_OPENAI_BASE_URL"),
        "http://agl:8080/proxy/rollout/r-1/attempt/0/mode/train/openai/v1"
    );
    assert_eq!(
        env("AGL_EVENT_URL"),
        "http://agl:8080/api/rollouts/r-1/attempt/0/events"
    );
    assert_eq!(env("AGL_KEY"), "agl-key");
}
