//! The fork's internal run endpoint: `POST /_openclaw/internal/agent-run`.

use serde::Deserialize;

use super::{send, GatewayConfig, GatewayError, Message, Reply, Turn};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    ok: bool,
    #[serde(default)]
    response_text: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    error: Option<String>,
}

pub(super) async fn run(
    http: &reqwest::Client,
    cfg: &GatewayConfig,
    turn: &Turn,
) -> Result<Reply, GatewayError> {
    let url = format!(
        "{}/_openclaw/internal/agent-run",
        cfg.base_url.trim_end_matches('/')
    );
    let body = serde_json::json!({
        "sessionKey": turn.session_key,
        "message": turn.message,
        "idempotencyKey": turn.idempotency_key,
        "mode": "cli",
    });
    let req = http
        .post(&url)
        .header("X-OpenClaw-Internal-Secret", cfg.internal_secret.expose())
        .header("X-OpenClaw-Idempotency-Key", &turn.idempotency_key)
        .json(&body);
    let text = send(
        req,
        &url,
        turn.timeout,
        "INTERNAL_SECRET (it must equal gateway.agl.internalAgentRunSecret)",
    )
    .await?;
    answer(&text)
}

/// Reads the endpoint's answer (the body of a 2xx).
pub fn answer(text: &str) -> Result<Reply, GatewayError> {
    let answer: Answer = serde_json::from_str(text)
        .map_err(|e| GatewayError::Protocol(format!("agent-run answer: {e}")))?;
    if !answer.ok {
        return Err(GatewayError::RunFailed(
            answer.error.unwrap_or_else(|| "ok:false".into()),
        ));
    }
    Ok(Reply {
        text: answer.response_text.unwrap_or_default(),
        run_id: answer.run_id,
        transcript: answer.messages,
        ..Default::default()
    })
}
