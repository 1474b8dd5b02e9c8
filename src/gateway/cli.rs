//! `openclaw agent --message … --json` (the seed's `openclaw_agent`).

use tokio::process::Command;

use super::{agent_result, GatewayConfig, GatewayError, Reply, Turn};

pub(super) async fn run(cfg: &GatewayConfig, turn: &Turn) -> Result<Reply, GatewayError> {
    let bin = cfg.openclaw_bin.display().to_string();
    let mut cmd = Command::new(&cfg.openclaw_bin);
    cmd.arg("agent")
        .arg("--message")
        .arg(&turn.message)
        .arg("--json");
    match &cfg.agent_id {
        Some(agent) => cmd.arg("--agent").arg(agent),
        None => cmd.arg("--session-id").arg(&turn.session_key),
    };
    if !cfg.token.is_empty() {
        cmd.env("OPENCLAW_GATEWAY_TOKEN", cfg.token.expose());
    }
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = cmd.output().await.map_err(|e| GatewayError::Spawn {
        bin: bin.clone(),
        reason: format!("{e} (set OPENCLAW_BIN or put openclaw on PATH)"),
    })?;
    match output_result(&out.stdout) {
        Some(result) => result,
        None => Err(GatewayError::RunFailed(format!(
            "{bin} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(400)
                .collect::<String>()
        ))),
    }
}

/// The run's result in what the CLI printed: the JSON object from the first
/// `{` to the end. `None` when there is none.
pub fn output_result(stdout: &[u8]) -> Option<Result<Reply, GatewayError>> {
    let stdout = String::from_utf8_lossy(stdout);
    let json = stdout
        .find('{')
        .and_then(|start| serde_json::from_str::<serde_json::Value>(stdout[start..].trim()).ok())?;
    Some(agent_result(&json))
}
