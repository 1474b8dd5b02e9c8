//! Scoring during collection: each rollout gets its rewards as it finishes.
//!
//! - `--score exact|contains|regex` compares the reply with the prompt's
//!   `expected` (JSONL): exact (equal after trimming whitespace), contains
//!   (the expected text appears in the reply, ignoring case), regex
//!   (`expected` is a pattern found in the reply). 1 on a match, 0 otherwise
//!   (also for a failed rollout); prompts without `expected` get no reward.
//! - `--score-cmd <program>` runs the program once per rollout with the
//!   rollout as JSON on stdin (`rollout_id`, `attempt_id`, `status`, `reply`,
//!   `error`, `seconds`, …, and the `task` with its `expected`); it prints
//!   one number, the reward.
//!
//! With both, the comparison's reward is the primary one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use regex::Regex;
use tokio::io::AsyncWriteExt;

use crate::reward::Reward;
use crate::rollout::{Outcome, RolloutStatus, Task};

/// The scoring flags of `oclagl collect` and `oclagl run`: how each
/// rollout gets its rewards.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Scoring")]
pub struct ScoreArgs {
    /// Reward each rollout by comparing its reply with the expected answer
    /// (collect: the prompt's "expected" in JSONL; run: --expected).
    #[arg(long, env = "OCLAGL_SCORE", value_enum)]
    pub score: Option<Compare>,
    /// Reward each rollout with this program's answer: it reads the rollout
    /// as JSON on stdin and prints a number.
    #[arg(long, env = "OCLAGL_SCORE_CMD", value_name = "PROGRAM")]
    pub score_cmd: Option<PathBuf>,
}

/// How `--score` compares a reply with the expected answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compare {
    /// The reply equals `expected` after trimming whitespace (reward
    /// `exact_match`).
    Exact,
    /// The reply contains `expected`, ignoring case (reward `contains`).
    Contains,
    /// `expected` is a regular expression found in the reply (reward
    /// `regex_match`).
    Regex,
}

impl Compare {
    /// The reward's name.
    pub fn reward_name(self) -> &'static str {
        match self {
            Compare::Exact => "exact_match",
            Compare::Contains => "contains",
            Compare::Regex => "regex_match",
        }
    }
}

/// Why a rollout could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// A prompt's `expected` does not compile (`--score regex`).
    #[error("prompt {n}: \"expected\" is not a regular expression: {reason}")]
    Pattern {
        /// The prompt's number, from 1.
        n: usize,
        /// The regex error.
        reason: String,
    },
    /// `--score-cmd` failed or did not print a number.
    #[error("--score-cmd {cmd}: {reason}")]
    Command {
        /// The program.
        cmd: String,
        /// What went wrong.
        reason: String,
    },
}

/// Longest a `--score-cmd` run may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The rewards to give each rollout.
#[derive(Debug, Clone, Default)]
pub struct Scorer {
    compare: Option<Compare>,
    cmd: Option<PathBuf>,
}

impl Scorer {
    /// Checks what scoring needs up front (regex patterns compile).
    pub fn new(
        compare: Option<Compare>,
        cmd: Option<PathBuf>,
        tasks: &[Task],
    ) -> Result<Scorer, ScoreError> {
        if compare == Some(Compare::Regex) {
            for (n, t) in tasks.iter().enumerate() {
                if let Some(p) = &t.expected {
                    Regex::new(p).map_err(|e| ScoreError::Pattern {
                        n: n + 1,
                        reason: e.to_string(),
                    })?;
                }
            }
        }
        Ok(Scorer { compare, cmd })
    }

    /// True when no scoring was asked for.
    pub fn is_empty(&self) -> bool {
        self.compare.is_none() && self.cmd.is_none()
    }

    /// The rewards of a finished rollout (empty when nothing applies).
    pub async fn score(&self, task: &Task, outcome: &Outcome) -> Result<Vec<Reward>, ScoreError> {
        let mut rewards = Vec::new();
        if let (Some(compare), Some(expected)) = (self.compare, &task.expected) {
            let reply = match outcome.status {
                RolloutStatus::Succeeded => outcome.reply.as_deref().unwrap_or(""),
                RolloutStatus::Failed => "",
            };
            let hit =
                outcome.status == RolloutStatus::Succeeded && matches(compare, expected, reply);
            rewards.push(Reward {
                name: compare.reward_name().into(),
                value: if hit { 1.0 } else { 0.0 },
            });
        }
        if let Some(cmd) = &self.cmd {
            let mut input = serde_json::to_value(outcome).unwrap_or_default();
            input["task"] = serde_json::to_value(task).unwrap_or_default();
            let value = run_cmd(cmd, &input.to_string()).await?;
            rewards.push(Reward {
                name: "score".into(),
                value,
            });
        }
        Ok(rewards)
    }
}

fn matches(compare: Compare, expected: &str, reply: &str) -> bool {
    match compare {
        Compare::Exact => reply.trim() == expected.trim(),
        Compare::Contains => reply
            .to_lowercase()
            .contains(&expected.trim().to_lowercase()),
        // Checked in Scorer::new.
        Compare::Regex => Regex::new(expected).is_ok_and(|re| re.is_match(reply)),
    }
}

async fn run_cmd(cmd: &Path, input: &str) -> Result<f64, ScoreError> {
    let fail = |reason: String| ScoreError::Command {
        cmd: cmd.display().to_string(),
        reason,
    };
    let mut child = tokio::process::Command::new(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start it: {e}")))?;
    let mut stdin = child.stdin.take().ok_or_else(|| fail("no stdin".into()))?;
    let run = async {
        // A program that does not read its input is fine.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        child.wait_with_output().await
    };
    let output = tokio::time::timeout(CMD_TIMEOUT, run)
        .await
        .map_err(|_| fail(format!("no answer within {}s", CMD_TIMEOUT.as_secs())))?
        .map_err(|e| fail(e.to_string()))?;
    if !output.status.success() {
        return Err(fail(format!("exited with {}", output.status)));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| fail(format!("printed {:?}, not a number", text.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: RolloutStatus, reply: Option<&str>) -> Outcome {
        Outcome {
            rollout_id: "ro-1".into(),
            attempt_id: "at-1".into(),
            status,
            reply: reply.map(str::to_string),
            run_id: None,
            error: None,
            tries: 1,
            seconds: 0.5,
            gateway_error: None,
            root: None,
            rewards: Vec::new(),
        }
    }

    fn task(expected: Option<&str>) -> Task {
        Task {
            prompt: "2+2?".into(),
            expected: expected.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn comparisons() {
        assert!(matches(Compare::Exact, " 4\n", "4 "));
        assert!(!matches(Compare::Exact, "4", "It is 4"));
        assert!(matches(Compare::Contains, "paris", "The capital is Paris."));
        assert!(matches(Compare::Regex, r"^\D*4\D*$", "It is 4."));
        assert!(!matches(Compare::Regex, r"^\d+$", "It is 4."));
        assert!(Scorer::new(Some(Compare::Regex), None, &[task(Some("("))]).is_err());
    }

    #[tokio::test]
    async fn rewards_follow_the_reply_and_the_command() {
        let exact = Scorer::new(Some(Compare::Exact), None, &[]).unwrap();
        let ok = outcome(RolloutStatus::Succeeded, Some("4"));
        let reward = |v: f64| {
            vec![Reward {
                name: "exact_match".into(),
                value: v,
            }]
        };
        assert_eq!(
            exact.score(&task(Some("4")), &ok).await.unwrap(),
            reward(1.0)
        );
        assert_eq!(
            exact.score(&task(Some("5")), &ok).await.unwrap(),
            reward(0.0)
        );
        assert!(exact.score(&task(None), &ok).await.unwrap().is_empty());
        let failed = outcome(RolloutStatus::Failed, None);
        assert_eq!(
            exact.score(&task(Some("")), &failed).await.unwrap(),
            reward(0.0)
        );

        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("score.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\nin=$(cat)\necho \"$in\" | grep -q '\"expected\":\"4\"' && echo \"$in\" | grep -q '\"reply\":\"4\"' && echo 0.75 || echo oops\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let both = Scorer::new(Some(Compare::Exact), Some(script), &[]).unwrap();
        let got = both.score(&task(Some("4")), &ok).await.unwrap();
        assert_eq!(
            got[1],
            Reward {
                name: "score".into(),
                value: 0.75
            }
        );
        let err = both.score(&task(Some("5")), &ok).await.unwrap_err();
        assert!(err.to_string().contains("printed \"oops\""), "{err}");
        let missing = Scorer::new(None, Some(dir.path().join("nope")), &[]).unwrap();
        assert!(missing.score(&task(None), &ok).await.is_err());
    }
}
