//! Clients for the four ways to run an agent turn on an OpenClaw gateway.
//!
//! - `internal`: the fork's `POST /_openclaw/internal/agent-run` (the seed's path).
//! - `ws`: the upstream WebSocket `agent` method; carries the caller's
//!   `traceparent`, so the gateway's spans and model calls join the rollout.
//! - `openai`: the upstream `POST /v1/chat/completions`.
//! - `cli`: `openclaw agent --message … --json`.

pub mod cli;
pub mod internal;
pub mod openai;
pub mod ws;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A secret (internal secret, gateway token): never printed, compared in
/// constant time.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, to put on the wire; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret was given (an empty value counts as none).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison (time depends only on the lengths).
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        let mut diff = (a.len() ^ b.len()) as u64;
        for i in 0..a.len().max(b.len()) {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            diff |= u64::from(x ^ y);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How a turn reaches the gateway (`--gateway`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The fork's `POST /_openclaw/internal/agent-run`, with the internal secret.
    Internal,
    /// The upstream WebSocket `agent` method, with the gateway token; passes
    /// the rollout's `traceparent`.
    Ws,
    /// The upstream `POST /v1/chat/completions`, with the gateway token (no
    /// `traceparent`).
    Openai,
    /// `openclaw agent --json`, run as a child process.
    Cli,
}

impl Mode {
    /// The mode's name on the command line and in span attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Internal => "internal",
            Mode::Ws => "ws",
            Mode::Openai => "openai",
            Mode::Cli => "cli",
        }
    }
}

/// Everything needed to reach a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Which client runs the turns.
    pub mode: Mode,
    /// The gateway's base URL, without a trailing slash.
    pub base_url: String,
    /// The fork's `gateway.agl.internalAgentRunSecret` (internal mode).
    pub internal_secret: Secret,
    /// The upstream `gateway.auth.token` (ws, openai and cli modes).
    pub token: Secret,
    /// The `openclaw` command (cli mode).
    pub openclaw_bin: PathBuf,
    /// The agent to run, when not the gateway's default agent (ws, openai and
    /// cli modes).
    pub agent_id: Option<String>,
}

/// One agent turn to run.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The user message (the task's prompt).
    pub message: String,
    /// The gateway session the turn runs in.
    pub session_key: String,
    /// Key under which the gateway runs a turn once, so a retry does not run it
    /// twice.
    pub idempotency_key: String,
    /// W3C `traceparent` of the calling span (sent where the gateway adopts it).
    pub traceparent: Option<String>,
    /// How long one try may take; past it the turn fails with
    /// [`GatewayError::Timeout`].
    pub timeout: Duration,
}

/// A message of the run's transcript, as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `user`, `assistant`, `tool` or `system`.
    pub role: String,
    /// The message's text (text parts joined when the gateway sends a list).
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
}

/// Transcript content may be a string or a list of `{type:"text", text}` parts.
fn content_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()).or(p.as_str()))
            .collect::<Vec<_>>()
            .join(""),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// Token counts the gateway reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input: Option<i64>,
    /// Completion tokens.
    pub output: Option<i64>,
    /// Prompt and completion tokens together, when reported.
    pub total: Option<i64>,
}

/// What the gateway answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// The agent's final answer.
    pub text: String,
    /// The gateway's id of the run, when it reports one.
    pub run_id: Option<String>,
    /// The run's transcript when the gateway returns one (internal mode);
    /// otherwise empty and the conversation is the prompt and the reply.
    pub transcript: Vec<Message>,
    /// The model provider the gateway used, when reported.
    pub provider: Option<String>,
    /// The model the gateway used, when reported.
    pub model: Option<String>,
    /// Token counts the gateway reported (all `None` when it reports none).
    pub usage: Usage,
}

/// Why a gateway turn failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum GatewayError {
    /// The gateway refused the credentials (401 or 403).
    #[error("the gateway rejected the credentials (401): check {hint}")]
    Unauthorized {
        /// The setting to check (the secret's or the token's name).
        hint: &'static str,
    },
    /// The gateway refused the request for another reason (4xx/5xx).
    #[error("the gateway rejected the request ({status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The gateway's error message, or the body's beginning.
        message: String,
    },
    /// The gateway is overloaded (429, 502, 503, 504): retryable.
    #[error("the gateway is busy ({status}); retry after {retry_after:?}")]
    Busy {
        /// The HTTP status.
        status: u16,
        /// How long the gateway asked to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The gateway could not be reached: retryable.
    #[error("cannot reach the gateway at {url}: {reason}")]
    Connect {
        /// The address tried.
        url: String,
        /// The connection error.
        reason: String,
    },
    /// The turn took longer than its timeout.
    #[error("the gateway did not answer within {0:?}")]
    Timeout(Duration),
    /// The gateway answered something the client does not understand.
    #[error("unexpected answer from the gateway: {0}")]
    Protocol(String),
    /// The gateway ran the agent, and the run failed.
    #[error("the agent run failed: {0}")]
    RunFailed(String),
    /// The `openclaw` command (cli mode) could not be started.
    #[error("cannot run {bin}: {reason}")]
    Spawn {
        /// The command.
        bin: String,
        /// Why it could not start.
        reason: String,
    },
}

impl GatewayError {
    /// Worth retrying with the same idempotency key.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            GatewayError::Busy { .. } | GatewayError::Connect { .. }
        )
    }

    /// How long a busy gateway asked to wait before a retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Parses `Retry-After` (seconds; HTTP dates are treated as one second).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    Some(crate::util::retry_after(v).unwrap_or(Duration::from_secs(1)))
}

/// Maps an HTTP error status to a gateway error.
pub fn status_error(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    hint: &'static str,
) -> GatewayError {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .map(|e| e.get("message").unwrap_or(e).clone())
                .and_then(|e| e.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    match status.as_u16() {
        401 | 403 => GatewayError::Unauthorized { hint },
        429 | 502 | 503 | 504 => GatewayError::Busy {
            status: status.as_u16(),
            retry_after: retry_after(headers),
        },
        code => GatewayError::Rejected {
            status: code,
            message,
        },
    }
}

/// Sends an HTTP request to the gateway and returns the body of a 2xx answer;
/// other answers become the matching [`GatewayError`] (`hint` names the
/// credential to check on a 401).
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    url: &str,
    timeout: Duration,
    hint: &'static str,
) -> Result<String, GatewayError> {
    let resp = req
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| connect_error(url, &e, timeout))?;
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp
        .text()
        .await
        .map_err(|e| connect_error(url, &e, timeout))?;
    if !status.is_success() {
        return Err(status_error(status, &headers, &text, hint));
    }
    Ok(text)
}

fn connect_error(url: &str, e: &reqwest::Error, timeout: Duration) -> GatewayError {
    if e.is_timeout() {
        GatewayError::Timeout(timeout)
    } else {
        GatewayError::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        }
    }
}

/// A client for one gateway; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Gateway {
    cfg: GatewayConfig,
    http: reqwest::Client,
}

impl Gateway {
    /// A client for `cfg`, with its own HTTP connection pool.
    pub fn new(cfg: GatewayConfig) -> Gateway {
        // A plain-HTTP gateway needs no TLS roots, and reading the system's
        // certificates costs about 15 ms at every start of a command.
        let builder = reqwest::Client::builder();
        let builder = match cfg.base_url.starts_with("http://") {
            true => builder.tls_certs_only([]),
            false => builder,
        };
        let http = builder.build().unwrap_or_else(|_| reqwest::Client::new());
        Gateway::with_client(cfg, http)
    }

    /// A gateway that shares an HTTP connection pool with others.
    pub fn with_client(cfg: GatewayConfig, http: reqwest::Client) -> Gateway {
        Gateway { cfg, http }
    }

    /// What this client was made with.
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Runs one agent turn.
    pub async fn run(&self, turn: &Turn) -> Result<Reply, GatewayError> {
        let work = async {
            match self.cfg.mode {
                Mode::Internal => internal::run(&self.http, &self.cfg, turn).await,
                Mode::Ws => ws::run(&self.cfg, turn).await,
                Mode::Openai => openai::run(&self.http, &self.cfg, turn).await,
                Mode::Cli => cli::run(&self.cfg, turn).await,
            }
        };
        tokio::time::timeout(turn.timeout, work)
            .await
            .unwrap_or(Err(GatewayError::Timeout(turn.timeout)))
    }
}

/// Reads the final `agent` result shared by the WebSocket method and the CLI:
/// `{runId, status, result:{payloads:[{text}], meta:{agentMeta:{provider, model, usage}}}}`.
pub fn agent_result(v: &serde_json::Value) -> Result<Reply, GatewayError> {
    let status = v["status"].as_str().unwrap_or("");
    if status != "ok" {
        let detail = v
            .get("error")
            .or_else(|| v.pointer("/result/error"))
            .map(|e| {
                e.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            })
            .unwrap_or_default();
        return Err(match status {
            "timeout" => GatewayError::RunFailed(
                format!("the agent run timed out {detail}")
                    .trim()
                    .to_string(),
            ),
            _ => GatewayError::RunFailed(format!("status {status:?} {detail}").trim().to_string()),
        });
    }
    let text = v
        .pointer("/result/payloads")
        .and_then(|p| p.as_array())
        .map(|payloads| {
            payloads
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let meta = v.pointer("/result/meta/agentMeta");
    let s = |k: &str| meta.and_then(|m| m[k].as_str()).map(str::to_string);
    let n = |k: &str| meta.and_then(|m| m["usage"][k].as_i64());
    Ok(Reply {
        text,
        run_id: v["runId"].as_str().map(str::to_string),
        transcript: Vec::new(),
        provider: s("provider"),
        model: s("model"),
        usage: Usage {
            input: n("input"),
            output: n("output"),
            total: n("total"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_and_never_print() {
        let s = Secret::new("hunter2");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3"));
        assert!(!s.matches("hunter22"));
        assert!(!s.matches(""));
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn transcript_content_parts_become_text() {
        let m: Message =
            serde_json::from_str(r#"{"role":"assistant","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#)
                .unwrap();
        assert_eq!(m.content, "ab");
    }

    #[test]
    fn statuses_map_to_retryable_or_not() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        let e = status_error(
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            &h,
            "{\"ok\":false,\"error\":\"Gateway not ready\"}",
            "x",
        );
        assert!(e.retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let e = status_error(
            reqwest::StatusCode::BAD_REQUEST,
            &h,
            "{\"ok\":false,\"error\":\"sessionKey and message required\"}",
            "x",
        );
        assert_eq!(
            e,
            GatewayError::Rejected {
                status: 400,
                message: "sessionKey and message required".into()
            }
        );
        assert!(!status_error(reqwest::StatusCode::UNAUTHORIZED, &h, "", "x").retryable());
    }
}
