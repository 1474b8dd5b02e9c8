//! `oclagl import --sessions`: the real `openclaw` CLI lists an agent's
//! sessions (`openclaw sessions --json --limit all`) and exports each as a
//! bundle (`openclaw sessions export-trajectory --session-key … --workspace
//! … --json`), which is then imported like any other.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::process::Command;

use super::bundle::Source;

/// Which sessions to export, and with what.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "OpenClaw sessions")]
pub struct SessionArgs {
    /// Export every session the openclaw CLI lists (with the user's HOME)
    /// and import them.
    #[arg(long, env = "OCLAGL_IMPORT_SESSIONS")]
    pub sessions: bool,
    /// Agent id whose sessions to list (openclaw's --agent).
    #[arg(long, env = "OCLAGL_AGENT")]
    pub agent: Option<String>,
    /// Session store to read (openclaw's --store).
    #[arg(long, env = "OCLAGL_IMPORT_STORE")]
    pub store: Option<PathBuf>,
    /// The openclaw command.
    #[arg(long, env = "OCLAGL_OPENCLAW_BIN", default_value = "openclaw")]
    pub openclaw_bin: PathBuf,
}

/// The openclaw CLI could not list or export sessions.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` {what}")]
pub struct CliError {
    /// The command line run.
    pub command: String,
    /// What went wrong, and the fix.
    pub what: String,
}

impl SessionArgs {
    fn command(&self, args: &[&str]) -> (Command, String) {
        let mut cmd = Command::new(&self.openclaw_bin);
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Some(agent) = &self.agent {
            all.extend(["--agent".into(), agent.clone()]);
        }
        if let Some(store) = &self.store {
            all.extend(["--store".into(), store.display().to_string()]);
        }
        cmd.args(&all)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        let line = format!("{} {}", self.openclaw_bin.display(), all.join(" "));
        (cmd, line)
    }

    /// Runs the CLI and reads the JSON object it prints.
    async fn json(&self, args: &[&str]) -> Result<Value, CliError> {
        let (mut cmd, line) = self.command(args);
        let fail = |what: String| CliError {
            command: line.clone(),
            what,
        };
        let out = cmd.output().await.map_err(|e| {
            fail(format!(
                "cannot start: {e} (set --openclaw-bin or OPENCLAW_BIN, or put openclaw on PATH)"
            ))
        })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(fail(format!(
                "failed ({}): {}",
                out.status,
                last.chars().take(300).collect::<String>()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let json = text.find('{').map(|i| &text[i..]).unwrap_or("");
        serde_json::from_str(json).map_err(|e| {
            fail(format!(
                "printed no JSON object ({e}); is it OpenClaw 2026.9 or newer?"
            ))
        })
    }

    /// The session keys the CLI lists.
    pub async fn list(&self) -> Result<Vec<String>, CliError> {
        let v = self.json(&["sessions", "--json", "--limit", "all"]).await?;
        let Some(sessions) = v["sessions"].as_array() else {
            let (_, line) = self.command(&["sessions", "--json", "--limit", "all"]);
            return Err(CliError {
                command: line,
                what: "printed no \"sessions\" list".into(),
            });
        };
        Ok(sessions
            .iter()
            .filter_map(|s| s["key"].as_str().map(str::to_string))
            .collect())
    }

    /// Exports session `key` into `workspace`; the bundle's folder.
    pub async fn export(&self, key: &str, workspace: &Path) -> Result<Source, CliError> {
        let ws = workspace.display().to_string();
        let args = [
            "sessions",
            "export-trajectory",
            "--session-key",
            key,
            "--workspace",
            &ws,
            "--json",
        ];
        let v = self.json(&args).await?;
        match v["outputDir"].as_str() {
            Some(dir) => Ok(Source::Bundle(PathBuf::from(dir))),
            None => Err(CliError {
                command: self.command(&args).1,
                what: "printed no outputDir".into(),
            }),
        }
    }
}
