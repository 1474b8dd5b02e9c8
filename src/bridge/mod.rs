//! `oclagl bridge`: web UI chat through the sidecar.
//!
//! The fork gateway (with `gateway.agl.bridgeUrl` set) posts every web UI
//! message to `POST /chat`; the bridge runs it as one rollout through the
//! shared [`Emitter`] (calling the gateway back on its internal endpoint) and
//! answers `{"ok":true,"responseText","runId"}` or `{"ok":false,"error"}`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use opentelemetry_sdk::trace::SdkTracer;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::args::{parse_duration, parse_size};
use crate::gateway::{Gateway, GatewayConfig, GatewayError, Mode, Secret};
use crate::local::{self, LocalStore};
use crate::rollout::otel::TelemetryError;
use crate::rollout::{Emitter, RunOptions, Task};

/// `oclagl bridge` options, in the sections of its `--help`.
#[derive(Debug, Clone, clap::Args)]
pub struct BridgeArgs {
    /// Where the bridge listens, and what it accepts.
    #[command(flatten)]
    pub listener: BridgeListener,
    /// The gateway the bridge calls back.
    #[command(flatten)]
    pub gateway: BridgeGateway,
    /// Where rollouts are stored without an OTLP endpoint.
    #[command(flatten)]
    pub local: LocalStore,
}

/// Where `oclagl bridge` listens for the fork's `POST /chat`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Listener")]
pub struct BridgeListener {
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, env = "OCLAGL_BRIDGE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "OCLAGL_BRIDGE_PORT", default_value_t = 8765)]
    pub port: u16,
    /// Largest request body (413 above).
    #[arg(long, env = "OCLAGL_BRIDGE_MAX_BODY", default_value = "4MiB", value_parser = parse_size)]
    pub max_body: usize,
    /// On SIGTERM, how long running chats may take to finish.
    #[arg(long, env = "OCLAGL_BRIDGE_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
}

/// The gateway `oclagl bridge` calls back for each chat. The same
/// variables as [`crate::collect::GatewayArgs`], with the bridge's defaults.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Gateway")]
pub struct BridgeGateway {
    /// When set, a request's internalSecret must equal it (else 401).
    #[arg(long, env = "OCLAGL_INTERNAL_SECRET", hide_env_values = true)]
    pub internal_secret: Option<String>,
    /// The gateway to call back; also allowed as a request's gatewayBaseUrl.
    #[arg(long, env = "OCLAGL_GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// More gateway base URLs a request may name (loopback ones always may).
    #[arg(
        long = "allow-gateway",
        env = "OCLAGL_BRIDGE_ALLOW_GATEWAY",
        value_delimiter = ','
    )]
    pub allow_gateways: Vec<String>,
    /// Per-chat timeout (504 after it).
    #[arg(long, env = "OCLAGL_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Retries of the gateway call on connection errors, 429 and 503.
    #[arg(long, env = "OCLAGL_RETRIES", default_value_t = 1)]
    pub retries: u32,
}

/// Why the bridge could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The listener cannot bind its address.
    #[error("cannot listen on {addr}: {error}; pass another --port (OCLAGL_BRIDGE_PORT) or --host (OCLAGL_BRIDGE_HOST)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The rollouts' spans cannot be recorded or delivered.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The HTTP server failed while running.
    #[error("bridge server error: {0}")]
    Server(String),
}

/// The fork's request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChatRequest {
    session_key: String,
    message: String,
    #[serde(default)]
    attachments: Option<Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    gateway_base_url: Option<String>,
    #[serde(default)]
    internal_secret: Option<String>,
}

/// A finished chat's answer, shared with duplicates that waited for it.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn fail(status: StatusCode, error: impl Into<String>) -> Answer {
    Answer {
        status,
        body: json!({"ok": false, "error": error.into()}),
    }
}

struct Bridge {
    args: BridgeArgs,
    secret: Option<Secret>,
    tracer: SdkTracer,
    http: reqwest::Client,
    /// Chats running now, by idempotency key.
    inflight: Mutex<HashMap<String, watch::Receiver<Option<Answer>>>>,
    cancel: watch::Receiver<bool>,
}

fn normalize(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Is `url` a gateway the bridge may call back?
fn allowed(url: &str, configured: Option<&str>, extra: &[String]) -> bool {
    let wanted = normalize(url);
    if configured.is_some_and(|c| normalize(c) == wanted)
        || extra.iter().any(|e| normalize(e) == wanted)
    {
        return true;
    }
    let Some(rest) = wanted
        .strip_prefix("http://")
        .or_else(|| wanted.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Bridge {
    async fn chat(&self, body: Body) -> Answer {
        let bytes = match axum::body::to_bytes(body, self.args.listener.max_body).await {
            Ok(b) => b,
            Err(_) => {
                return fail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body over {} bytes", self.args.listener.max_body),
                )
            }
        };
        let req: ChatRequest = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => return fail(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
        };
        if req.session_key.trim().is_empty() || req.message.trim().is_empty() {
            return fail(StatusCode::BAD_REQUEST, "sessionKey and message required");
        }
        let given = req.internal_secret.as_deref().unwrap_or("");
        if let Some(secret) = &self.secret {
            if !secret.matches(given) {
                return fail(StatusCode::UNAUTHORIZED, "Unauthorized");
            }
        }
        let callback_secret = self.secret.clone().unwrap_or_else(|| Secret::new(given));
        if callback_secret.is_empty() {
            return fail(
                StatusCode::BAD_REQUEST,
                "internalSecret required (or start the bridge with INTERNAL_SECRET)",
            );
        }
        let configured = self.args.gateway.gateway_url.as_deref();
        let Some(gateway_url) = req
            .gateway_base_url
            .as_deref()
            .or(configured)
            .map(str::to_string)
        else {
            return fail(
                StatusCode::BAD_REQUEST,
                "gatewayBaseUrl required (or start the bridge with GATEWAY_BASE_URL)",
            );
        };
        if !allowed(&gateway_url, configured, &self.args.gateway.allow_gateways) {
            return fail(
                StatusCode::FORBIDDEN,
                "gatewayBaseUrl is not an allowed gateway (see --allow-gateway)",
            );
        }

        // A repeated idempotency key while the first chat runs waits for it.
        let mut publish = None;
        if let Some(key) = &req.idempotency_key {
            let existing = {
                let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                match inflight.get(key) {
                    Some(rx) => Some(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        inflight.insert(key.clone(), rx);
                        publish = Some(tx);
                        None
                    }
                }
            };
            if let Some(mut rx) = existing {
                return match rx.wait_for(Option::is_some).await {
                    Ok(answer) => answer
                        .clone()
                        .unwrap_or_else(|| fail(StatusCode::BAD_GATEWAY, "duplicate lost")),
                    Err(_) => fail(
                        StatusCode::BAD_GATEWAY,
                        "the first request with this idempotencyKey ended without an answer",
                    ),
                };
            }
        }
        let answer = self.run(&req, gateway_url, callback_secret).await;
        if let (Some(tx), Some(key)) = (publish, &req.idempotency_key) {
            let _ = tx.send(Some(answer.clone()));
            self.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
        }
        answer
    }

    async fn run(&self, req: &ChatRequest, gateway_url: String, secret: Secret) -> Answer {
        let gateway = Gateway::with_client(
            GatewayConfig {
                mode: Mode::Internal,
                base_url: gateway_url.trim_end_matches('/').to_string(),
                internal_secret: secret,
                token: Secret::default(),
                openclaw_bin: "openclaw".into(),
                agent_id: None,
            },
            self.http.clone(),
        );
        let emitter = Emitter::new(self.tracer.clone(), gateway);
        let attachments = req
            .attachments
            .as_ref()
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let task = Task {
            prompt: req.message.clone(),
            id: req.idempotency_key.clone(),
            metadata: Some(
                json!({"source": "bridge", "sessionKey": req.session_key, "attachments": attachments}),
            ),
            ..Task::default()
        };
        // The caller's chat is the user's conversation: its turns stay in it.
        let options = RunOptions {
            session_key: req.session_key.clone(),
            fresh_session: false,
            timeout: self.args.gateway.timeout,
            retries: self.args.gateway.retries,
            idempotency_key: req.idempotency_key.clone(),
        };
        let outcome = emitter.run(&task, &options, self.cancel.clone()).await;
        match (outcome.reply, outcome.gateway_error) {
            (Some(text), _) => Answer {
                status: StatusCode::OK,
                body: json!({
                    "ok": true,
                    "responseText": text,
                    "runId": req.idempotency_key.clone().or(outcome.run_id),
                }),
            },
            (None, Some(GatewayError::Timeout(_))) => fail(
                StatusCode::GATEWAY_TIMEOUT,
                "the gateway did not answer in time",
            ),
            (None, error) => fail(
                StatusCode::BAD_GATEWAY,
                error.map_or_else(|| "the agent run failed".to_string(), |e| e.to_string()),
            ),
        }
    }
}

/// Each chat runs in its own task, so a caller that hangs up does not abort
/// the rollout (it is still recorded, and duplicates still get its answer).
async fn chat(State(bridge): State<Arc<Bridge>>, body: Body) -> Answer {
    tokio::spawn(async move { bridge.chat(body).await })
        .await
        .unwrap_or_else(|_| fail(StatusCode::INTERNAL_SERVER_ERROR, "the chat task failed"))
}

async fn health(State(bridge): State<Arc<Bridge>>) -> Json<Value> {
    let inflight = bridge.inflight.lock().map(|m| m.len()).unwrap_or(0);
    Json(json!({"ok": true, "status": "live", "inflight_keyed": inflight}))
}

/// Serves until `shutdown`, then stops accepting, lets running chats finish
/// for `--grace`, interrupts the rest, and flushes every span.
pub async fn run(
    args: BridgeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BridgeError> {
    let addr = SocketAddr::new(args.listener.host, args.listener.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BridgeError::Bind {
            addr,
            error: source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|e| BridgeError::Server(e.to_string()))?;
    if !args.listener.host.is_loopback() {
        tracing::warn!(%bound, "the bridge listens beyond loopback");
    }
    let telemetry = local::telemetry(&args.local).await?;
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let bridge = Arc::new(Bridge {
        secret: args
            .gateway
            .internal_secret
            .clone()
            .filter(|s| !s.is_empty())
            .map(Secret::new),
        tracer: telemetry.tracer(),
        http: reqwest::Client::new(),
        inflight: Mutex::new(HashMap::new()),
        cancel: cancel_rx,
        args,
    });
    let grace = bridge.args.listener.grace;
    let app = Router::new()
        .route("/chat", post(chat))
        .route("/health", get(health))
        .with_state(bridge);
    tracing::info!(addr = %bound, traces = %telemetry.destination, "oclagl bridge listening");
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let mut rx = stopping_rx;
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });
    tokio::select! {
        _ = shutdown => {}
        r = &mut server => return Err(BridgeError::Server(format!("{r:?}"))),
    }
    tracing::info!(grace = ?grace, "stopping: no new chats; waiting for running ones");
    let _ = stopping_tx.send(true);
    if tokio::time::timeout(grace, &mut server).await.is_err() {
        tracing::warn!("grace period over: interrupting running chats");
        let _ = cancel_tx.send(true);
        let _ = server.await;
    }
    telemetry.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn only_configured_or_loopback_gateways() {
        let cfg = Some("http://gw.internal:18789");
        assert!(allowed("http://gw.internal:18789/", cfg, &[]));
        assert!(allowed("http://127.0.0.1:18789", None, &[]));
        assert!(allowed("http://localhost:1234", None, &[]));
        assert!(allowed("http://[::1]:18789", None, &[]));
        assert!(!allowed("http://169.254.169.254/latest", cfg, &[]));
        assert!(!allowed("http://127.0.0.1@evil.example:80", None, &[]));
        assert!(!allowed("http://127.0.0.1.evil.example", None, &[]));
        assert!(!allowed("file:///etc/passwd", None, &[]));
        assert!(allowed(
            "https://other:1",
            None,
            &["https://other:1".into()]
        ));
    }
}
