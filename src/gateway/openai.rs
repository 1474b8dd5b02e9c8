//! The upstream OpenAI-compatible endpoint: `POST /v1/chat/completions`.

use serde_json::Value;

use super::{send, GatewayConfig, GatewayError, Reply, Turn, Usage};

pub(super) async fn run(
    http: &reqwest::Client,
    cfg: &GatewayConfig,
    turn: &Turn,
) -> Result<Reply, GatewayError> {
    let url = format!("{}/v1/chat/completions", cfg.base_url.trim_end_matches('/'));
    let model = match &cfg.agent_id {
        Some(agent) => format!("openclaw/{agent}"),
        None => "openclaw".to_string(),
    };
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": turn.message}],
    });
    let mut req = http
        .post(&url)
        .header("x-openclaw-session-key", &turn.session_key)
        .json(&body);
    if !cfg.token.is_empty() {
        req = req.bearer_auth(cfg.token.expose());
    }
    let text = send(
        req,
        &url,
        turn.timeout,
        "OPENCLAW_GATEWAY_TOKEN (gateway.auth.token)",
    )
    .await?;
    completion(&text)
}

/// Reads the chat completion the endpoint answered (the body of a 2xx).
pub fn completion(text: &str) -> Result<Reply, GatewayError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| GatewayError::Protocol(format!("chat completion: {e}")))?;
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            GatewayError::Protocol("chat completion without choices[0].message.content".into())
        })?;
    let int = |p: &str| v.pointer(p).and_then(Value::as_i64);
    Ok(Reply {
        text: content.to_string(),
        run_id: v.get("id").and_then(Value::as_str).map(str::to_string),
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
        usage: Usage {
            input: int("/usage/prompt_tokens"),
            output: int("/usage/completion_tokens"),
            total: int("/usage/total_tokens"),
        },
        ..Default::default()
    })
}
