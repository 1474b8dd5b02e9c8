//! The real Agent Lightning v1 (`agentlightning==1.0.2`, installed by
//! `tests/install-agl1.sh` into `target/venv-agl1`): its server and its
//! local controller on loopback, and a scripted vLLM-like model server
//! behind AGL's proxy.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The model name AGL's proxy sends every call with (its
/// `default_proxy.model_name`), and registers the scripted server under.
pub const MODEL: &str = "mock-1";

/// A program of `target/venv-agl1/bin`.
pub fn venv_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/venv-agl1/bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run `bash tests/run.sh` (it runs tests/install-agl1.sh)",
        p.display()
    );
    p
}

/// A process that is killed when dropped, with its output in a file.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    fn spawn(mut cmd: Command, what: &str) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(format!("{what}.log"));
        let out = std::fs::File::create(&log).unwrap();
        cmd.current_dir(dir.path())
            .arg(format!(
                "hydra.run.dir={}",
                dir.path().join("hydra").display()
            ))
            .arg("hydra.output_subdir=null")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
        Process {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running AGL v1 server with its key.
pub struct Agl {
    pub server: Process,
    pub port: u16,
    pub key: String,
    pub http: reqwest::Client,
}

impl Agl {
    /// Starts `agl-server` on a free loopback port, with `key`.
    pub fn start(key: &str) -> Agl {
        let port = super::free_port();
        let mut cmd = Command::new(venv_bin("agl-server"));
        cmd.args([
            format!("port={port}"),
            "host=127.0.0.1".into(),
            format!("key={key}"),
            format!("default_proxy.model_name={MODEL}"),
        ]);
        let agl = Agl {
            server: Process::spawn(cmd, "agl-server"),
            port,
            key: key.into(),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "agl-server did not start:\n{}",
                agl.server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        agl
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The per-rollout model URL AGL's controller hands a harness.
    pub fn base_url(&self, rollout: &str) -> String {
        self.url(&format!(
            "/proxy/rollout/{rollout}/attempt/0/mode/train/openai/v1"
        ))
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        assert!(status.is_success(), "AGL {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Registers the model server AGL's proxy forwards to.
    pub async fn register_model(&self, endpoint: &str) {
        self.post(
            "/api/models",
            json!([{"model": MODEL, "endpoint": endpoint, "version": 1}]),
        )
        .await;
    }

    /// The events of a rollout, of one type.
    pub async fn events(&self, rollout: &str, event_type: &str) -> Vec<Value> {
        let events = self
            .get(&format!(
                "/api/rollouts/{rollout}/events?event_type={event_type}"
            ))
            .await;
        events.as_array().cloned().unwrap_or_default()
    }

    /// The state of a rollout once it is terminal.
    pub async fn wait_terminal(&self, rollout: &str, log: impl Fn() -> String) -> String {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let detail = self.get(&format!("/api/rollouts/{rollout}")).await;
            let state = detail["rollout"]["status"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if state == "succeeded" || state == "failed" {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "rollout {rollout} is still {state}:\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts AGL's local controller on this server, with `env` added to
    /// what its harnesses inherit.
    pub fn controller(&self, env: &[(&str, &str)]) -> Process {
        let mut cmd = Command::new(venv_bin("agl-controller"));
        cmd.args([
            "runner_type=local".to_string(),
            format!("agl_server.url=http://127.0.0.1:{}", self.port),
            format!("agl_server.key={}", self.key),
            "local_runner.poll_interval=0.3".into(),
        ])
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("python"),
        )
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .envs(env.iter().copied());
        Process::spawn(cmd, "agl-controller")
    }
}

/// One call the scripted model server received.
#[derive(Debug, Clone)]
pub struct ModelCall {
    pub body: Value,
}

/// A scripted vLLM-like model server: JSON answers only (AGL never
/// streams), with `prompt_token_ids`, `choices[].token_ids` and logprobs
/// when asked (`return_token_ids`, `logprobs`), as vLLM gives them.
#[derive(Default)]
pub struct Vllm {
    pub calls: Mutex<Vec<ModelCall>>,
}

/// The two-tool task: `ls`, then `read`, then the answer.
pub const ANSWER: &str = "Done: the folder is listed and the notes are read.";

/// What every task of these tests starts with.
pub const TASK_MARK: &str = "Task ";

/// How many tool results the request's last turn holds: those after the
/// latest user message holding a task (the gateway adds user messages of
/// its own around it).
fn tool_results(body: &Value) -> usize {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let turn = messages
        .iter()
        .rposition(|m| m["role"] == "user" && m["content"].to_string().contains(TASK_MARK))
        .unwrap_or(0);
    messages[turn..]
        .iter()
        .filter(|m| m["role"] == "tool")
        .count()
}

/// The scripted answer's message for a request.
pub fn message_for(body: &Value, n: usize) -> Value {
    let call = |name: &str, args: Value| {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{name}_{n}"),
            "type": "function", "function": {"name": name, "arguments": args.to_string()}}]})
    };
    match tool_results(body) {
        0 => call("ls", json!({"path": "."})),
        1 => call("read", json!({"path": "notes.txt"})),
        _ => json!({"role": "assistant", "content": ANSWER}),
    }
}

async fn completions(State(v): State<Arc<Vllm>>, Json(body): Json<Value>) -> Response {
    if body["stream"] == true {
        let error = json!({"error": {"message": "this scripted server answers JSON only"}});
        return (axum::http::StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let mut calls = v.calls.lock().unwrap();
    let n = calls.len() + 1;
    let message = message_for(&body, n);
    let finish = if message["tool_calls"].is_array() {
        "tool_calls"
    } else {
        "stop"
    };
    let mut choice = json!({"index": 0, "message": message, "finish_reason": finish});
    let mut answer = json!({"id": format!("chatcmpl-vllm-{n}"), "object": "chat.completion",
        "created": 1_770_000_000, "model": body["model"], "choices": [],
        "usage": {"prompt_tokens": 40 + n, "completion_tokens": 3, "total_tokens": 43 + n}});
    if body["return_token_ids"] == true {
        answer["prompt_token_ids"] = json!((0..40 + n as u64).collect::<Vec<_>>());
        choice["token_ids"] = json!([900 + n, 901, 902]);
    }
    if body["logprobs"] == true {
        choice["logprobs"] = json!({"content": [{"token": "a", "logprob": -0.5},
            {"token": "b", "logprob": -0.25}, {"token": "c", "logprob": -0.125}]});
    }
    answer["choices"] = json!([choice]);
    calls.push(ModelCall { body });
    Json(answer).into_response()
}

/// Starts the scripted model server; its base URL is `http://<addr>/v1`.
pub async fn start_vllm() -> (SocketAddr, Arc<Vllm>) {
    let state = Arc::new(Vllm::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(state.clone());
    let addr = super::serve_on_loopback(app).await;
    (addr, state)
}
