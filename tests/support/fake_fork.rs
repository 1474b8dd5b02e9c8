//! A fake of the fork gateway's internal run endpoint, following its
//! documented contract (shared/reference/openclaw.md): `POST
//! /_openclaw/internal/agent-run` with `X-OpenClaw-Internal-Secret`, body
//! `{sessionKey, message, idempotencyKey, mode}`, answers `{ok, responseText,
//! runId, messages}` or `401/400/503 {ok:false, error}`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
pub struct Fork {
    pub secret: String,
    pub latency: Duration,
    /// Statuses to answer (in order) before answering normally.
    pub script: Mutex<VecDeque<u16>>,
    /// Every request body received, with its idempotency-key header.
    pub seen: Mutex<Vec<(Option<String>, Value)>>,
    /// When the first request arrived and the last answer left (benchmarks
    /// split a client's wall time with them); `None` until then.
    pub busy: Mutex<(Option<Instant>, Option<Instant>)>,
    /// Runs in progress now, and the most there ever were at once.
    pub running: AtomicUsize,
    pub peak_running: AtomicUsize,
}

pub struct FakeFork {
    pub addr: SocketAddr,
    pub state: Arc<Fork>,
}

impl FakeFork {
    pub async fn start(secret: &str, latency: Duration) -> FakeFork {
        let state = Arc::new(Fork {
            secret: secret.into(),
            latency,
            ..Default::default()
        });
        let app = Router::new()
            .route("/_openclaw/internal/agent-run", post(agent_run))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeFork { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<(Option<String>, Value)> {
        self.state.seen.lock().unwrap().clone()
    }
}

fn err(status: u16, message: &str) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({"ok": false, "error": message})),
    )
        .into_response();
    if status == 503 {
        resp.headers_mut()
            .insert("retry-after", "0".parse().unwrap());
    }
    resp
}

/// The transcript the fork returns: system prompt first, a tool call
/// flattened into text, its result, and the final answer.
pub fn transcript(message: &str) -> Value {
    json!([
        {"role": "system", "content": "You are a helpful agent."},
        {"role": "user", "content": message},
        {"role": "assistant", "content": "Let me check with ls."},
        {"role": "toolResult", "content": "prompts.txt"},
        {"role": "assistant", "content": format!("echo: {message}")},
    ])
}

async fn agent_run(State(fork): State<Arc<Fork>>, headers: HeaderMap, body: String) -> Response {
    fork.busy.lock().unwrap().0.get_or_insert_with(Instant::now);
    let secret = headers
        .get("x-openclaw-internal-secret")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if secret != fork.secret {
        return err(401, "Unauthorized");
    }
    let key = headers
        .get("x-openclaw-idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    fork.seen.lock().unwrap().push((key, body.clone()));
    if let Some(status) = fork.script.lock().unwrap().pop_front() {
        return err(
            status,
            if status == 503 {
                "Gateway not ready"
            } else {
                "scripted failure"
            },
        );
    }
    let (Some(session), Some(message)) = (body["sessionKey"].as_str(), body["message"].as_str())
    else {
        return err(400, "sessionKey and message required");
    };
    if session.is_empty() || message.is_empty() {
        return err(400, "sessionKey and message required");
    }
    let now = fork.running.fetch_add(1, Ordering::SeqCst) + 1;
    fork.peak_running.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(fork.latency).await;
    fork.running.fetch_sub(1, Ordering::SeqCst);
    let answer = Json(json!({
        "ok": true,
        "responseText": format!("echo: {message}"),
        "runId": format!("run-{}", body["idempotencyKey"].as_str().unwrap_or("")),
        "messages": transcript(message),
    }))
    .into_response();
    fork.busy.lock().unwrap().1 = Some(Instant::now());
    answer
}
