//! The upstream WebSocket protocol: `connect`, then the `agent` method, whose
//! request frame carries the caller's `traceparent`.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::{agent_result, GatewayConfig, GatewayError, Reply, Turn};

/// Gateway wire protocol version spoken (openclaw 2026.9: 4).
const PROTOCOL: u32 = 4;

fn ws_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    }
}

/// The error of a failed `res` frame: `{code, message, retryable?, retryAfterMs?}`.
fn response_error(frame: &Value, handshake: bool) -> GatewayError {
    let err = &frame["error"];
    let code = err["code"].as_str().unwrap_or("");
    let message = format!("{code} {}", err["message"].as_str().unwrap_or(""))
        .trim()
        .to_string();
    if err["retryable"] == true || code == "UNAVAILABLE" {
        return GatewayError::Busy {
            status: 503,
            retry_after: err["retryAfterMs"]
                .as_u64()
                .map(std::time::Duration::from_millis),
        };
    }
    // An upstream gateway answers a connect without a valid token with
    // NOT_PAIRED ("device identity required").
    let auth =
        code.contains("AUTH") || code == "NOT_PAIRED" || message.to_lowercase().contains("token");
    if handshake && auth {
        return GatewayError::Unauthorized {
            hint: "OPENCLAW_GATEWAY_TOKEN (gateway.auth.token)",
        };
    }
    GatewayError::Rejected { status: 0, message }
}

/// What one text frame from the gateway asks of the client.
#[derive(Debug)]
pub enum Step {
    /// The challenge: send `connect`.
    Connect,
    /// Connected: send the `agent` request.
    Agent,
    /// Nothing to do (another event, the run accepted): read on.
    Wait,
    /// The run's result: close the connection.
    Done(Result<Reply, GatewayError>),
}

/// Reads one text frame; `connected` once `connect` succeeded.
pub fn read_frame(text: &str, connected: bool) -> Result<Step, GatewayError> {
    let frame: Value = serde_json::from_str(text)
        .map_err(|e| GatewayError::Protocol(format!("frame is not JSON: {e}")))?;
    Ok(match (frame["type"].as_str(), frame["id"].as_str()) {
        (Some("event"), _) if frame["event"] == "connect.challenge" && !connected => Step::Connect,
        (Some("res"), Some("connect")) => {
            if frame["ok"] != true {
                return Err(response_error(&frame, true));
            }
            Step::Agent
        }
        (Some("res"), Some("agent")) => {
            if frame["ok"] != true {
                return Err(response_error(&frame, false));
            }
            let payload = &frame["payload"];
            if payload["status"] == "accepted" {
                Step::Wait
            } else {
                Step::Done(agent_result(payload))
            }
        }
        _ => Step::Wait,
    })
}

pub(super) async fn run(cfg: &GatewayConfig, turn: &Turn) -> Result<Reply, GatewayError> {
    let url = ws_url(&cfg.base_url);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| GatewayError::Connect {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let connect = json!({
        "type": "req", "id": "connect", "method": "connect",
        "params": {
            "minProtocol": PROTOCOL, "maxProtocol": PROTOCOL,
            "client": {"id": "gateway-client", "version": env!("CARGO_PKG_VERSION"), "platform": std::env::consts::OS, "mode": "backend"},
            "role": "operator",
            "scopes": ["operator.read", "operator.write"],
            "caps": [],
            "auth": {"token": cfg.token.expose()},
        }
    });
    let mut params = json!({
        "message": turn.message,
        "idempotencyKey": turn.idempotency_key,
        "sessionKey": turn.session_key,
        "timeout": turn.timeout.as_secs().max(1),
    });
    if let Some(agent) = &cfg.agent_id {
        params["agentId"] = json!(agent);
    }
    let mut agent = json!({"type": "req", "id": "agent", "method": "agent", "params": params});
    if let Some(tp) = &turn.traceparent {
        agent["traceparent"] = json!(tp);
    }
    let closed = || GatewayError::Protocol("the gateway closed the connection".into());
    let mut connected = false;
    loop {
        let msg = socket
            .next()
            .await
            .ok_or_else(closed)?
            .map_err(|e| GatewayError::Protocol(e.to_string()))?;
        let text = match msg {
            Frame::Text(t) => t.to_string(),
            Frame::Close(_) => return Err(closed()),
            _ => continue,
        };
        match read_frame(&text, connected)? {
            Step::Connect => {
                socket
                    .send(Frame::text(connect.to_string()))
                    .await
                    .map_err(|e| GatewayError::Protocol(e.to_string()))?;
            }
            Step::Agent => {
                connected = true;
                socket
                    .send(Frame::text(agent.to_string()))
                    .await
                    .map_err(|e| GatewayError::Protocol(e.to_string()))?;
            }
            Step::Wait => {}
            Step::Done(result) => {
                let _ = socket.close(None).await;
                return result;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_switch_scheme() {
        assert_eq!(
            super::ws_url("http://127.0.0.1:18789/"),
            "ws://127.0.0.1:18789"
        );
        assert_eq!(super::ws_url("https://gw.example"), "wss://gw.example");
    }

    /// What an upstream gateway answers a `connect` without a token.
    #[test]
    fn not_paired_at_connect_names_the_token() {
        let frame = r#"{"type":"res","id":"connect","ok":false,
            "error":{"code":"NOT_PAIRED","message":"device identity required"}}"#;
        let err = super::read_frame(frame, false).unwrap_err();
        assert!(
            matches!(err, super::GatewayError::Unauthorized { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("OPENCLAW_GATEWAY_TOKEN"), "{err}");
    }
}
