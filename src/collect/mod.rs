//! `oclagl collect` (many prompts) and `oclagl run` (one task): drive the
//! gateway and record each rollout through [`crate::rollout::Emitter`].

pub mod harness;
pub mod prompts;
pub mod score;

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;
use tokio::sync::{watch, Semaphore};

use crate::args::parse_duration;
use crate::gateway::{Gateway, GatewayConfig, GatewayError, Mode, Secret};
use crate::local::{self, LocalStore};
use crate::rollout::otel::TelemetryError;
use crate::rollout::{Emitter, Outcome, RolloutStatus, RunOptions, Task};
use crate::util::count;

/// How `collect` and `run` reach the gateway, and how long a turn may take.
/// The seed's variable names are still read ([`crate::args::FALLBACK_ENV`]).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Gateway")]
pub struct GatewayArgs {
    /// How a turn reaches the gateway. Default: internal when
    /// --internal-secret is set, else ws when --token is set.
    #[arg(long = "gateway", env = "OCLAGL_GATEWAY", value_enum)]
    pub mode: Option<Mode>,
    /// Gateway base URL.
    #[arg(
        long,
        env = "OCLAGL_GATEWAY_URL",
        default_value = "http://127.0.0.1:18789"
    )]
    pub gateway_url: String,
    /// The fork's gateway.agl.internalAgentRunSecret (internal mode).
    #[arg(long, env = "OCLAGL_INTERNAL_SECRET", hide_env_values = true)]
    pub internal_secret: Option<String>,
    /// The upstream gateway.auth.token (ws, openai and cli modes).
    #[arg(long, env = "OCLAGL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Session each rollout's own session is named after: a rollout runs in
    /// `<session-key>:<rollout id>`, so no task sees another's messages.
    #[arg(long, env = "OCLAGL_SESSION_KEY", default_value = "agent:main:main")]
    pub session_key: String,
    /// Run every rollout in --session-key itself, as the seed did (each
    /// prompt then sees the earlier ones' messages).
    #[arg(long, env = "OCLAGL_SHARED_SESSION")]
    pub shared_session: bool,
    /// Agent id (ws/openai/cli modes), when not the default agent.
    #[arg(long, env = "OCLAGL_AGENT")]
    pub agent: Option<String>,
    /// The openclaw command (cli mode).
    #[arg(long, env = "OCLAGL_OPENCLAW_BIN", default_value = "openclaw")]
    pub openclaw_bin: PathBuf,
    /// Per-rollout timeout.
    #[arg(long, env = "OCLAGL_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Retries of a rollout on connection errors, 429 and 503 (same idempotency key).
    #[arg(long, env = "OCLAGL_RETRIES", default_value_t = 3)]
    pub retries: u32,
}

/// `oclagl collect` options: the prompts file, how many at once, scoring, the
/// gateway and the local store.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectArgs {
    /// Prompts: one per line, or JSONL {"prompt", "id"?, "metadata"?,
    /// "expected"?, "session"?} (a prompt naming a session runs in it).
    #[arg(default_value = "prompts.txt")]
    pub file: PathBuf,
    /// Rollouts run at once.
    #[arg(
        long,
        short = 'c',
        env = "OCLAGL_COLLECT_CONCURRENCY",
        default_value_t = 4
    )]
    pub concurrency: usize,
    /// Run every prompt this many times: rollouts that share the prompt's
    /// task id (`oclagl.task_id`), numbered by `oclagl.sample`.
    #[arg(long, env = "OCLAGL_COLLECT_SAMPLES", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub samples: u32,
    /// Skip the samples of prompts that already have a succeeded rollout in
    /// the traces folder.
    #[arg(long, env = "OCLAGL_COLLECT_RESUME")]
    pub resume: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long, env = "OCLAGL_COLLECT_JSON")]
    pub json: bool,
    /// How each rollout gets its rewards.
    #[command(flatten)]
    pub scoring: score::ScoreArgs,
    /// The gateway that runs the prompts.
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Where rollouts are stored without an OTLP endpoint.
    #[command(flatten)]
    pub local: LocalStore,
}

/// `oclagl run` options: the task, scoring, Agent Lightning v1, the gateway
/// and the local store.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The task (prompt) to run; as AGL's harness, from the environment
    /// (AGL's `config.local.env_map`: {"OCLAGL_RUN_PROMPT": "input.prompt"}).
    #[arg(env = "OCLAGL_RUN_PROMPT")]
    pub prompt: Option<String>,
    /// The expected answer, for --score.
    #[arg(long, env = "OCLAGL_RUN_EXPECTED")]
    pub expected: Option<String>,
    /// Print the outcome as JSON on stdout instead of the reply.
    #[arg(long, env = "OCLAGL_RUN_JSON")]
    pub json: bool,
    /// How the rollout gets its reward.
    #[command(flatten)]
    pub scoring: score::ScoreArgs,
    /// Running as Agent Lightning v1's harness.
    #[command(flatten)]
    pub agl: harness::AglArgs,
    /// The gateway that runs the task.
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Where the rollout is stored without an OTLP endpoint.
    #[command(flatten)]
    pub local: LocalStore,
}

/// Why a collection or a run could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The prompts file is missing or malformed.
    #[error(transparent)]
    Prompts(#[from] prompts::PromptsError),
    /// A setting is missing or wrong (credentials, an unreachable gateway, an
    /// empty task).
    #[error("{0}")]
    Config(String),
    /// The gateway refused every rollout the same way (bad credentials, a
    /// command that cannot start): stopped at once.
    #[error("{0}")]
    Gateway(GatewayError),
    /// The spans could not be recorded or delivered.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// Scoring cannot work (a pattern that does not compile).
    #[error(transparent)]
    Score(#[from] score::ScoreError),
    /// `--concurrency 0`.
    #[error("--concurrency must be at least 1")]
    Concurrency,
    /// Agent Lightning v1 refused the harness (its key, its rollout) or
    /// its reward.
    #[error("{0}")]
    Agl(String),
    /// `run`'s turn ran, but its spans could not be recorded: the outcome
    /// (the agent's reply) is still the caller's.
    #[error("rollout {} is not recorded: {cause}", outcome.rollout_id)]
    Unrecorded {
        /// What the turn gave.
        outcome: Box<Outcome>,
        /// Why its spans are lost.
        cause: TelemetryError,
    },
}

/// What a collection did.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Rollouts asked for: prompts in the file times `--samples`.
    pub total: usize,
    /// Rollouts that succeeded.
    pub succeeded: usize,
    /// Rollouts that failed.
    pub failed: usize,
    /// Of those, skipped by `--resume` (a succeeded rollout exists).
    pub skipped: usize,
    /// Rollouts that got rewards from --score / --score-cmd.
    pub scored: usize,
    /// Rollouts whose scoring failed (they have no reward).
    pub score_errors: usize,
    /// True when Ctrl-C or SIGTERM stopped the collection early.
    pub interrupted: bool,
    /// How long it took.
    pub seconds: f64,
    /// Where the spans went: the OTLP endpoint, or the in-process store and
    /// traces folder.
    pub destination: String,
    /// Each rollout's outcome, in the order they finished.
    pub rollouts: Vec<Outcome>,
}

impl GatewayArgs {
    /// Resolves the mode and checks that what it needs is there.
    pub fn config(&self) -> Result<GatewayConfig, CollectError> {
        let secret = Secret::new(self.internal_secret.clone().unwrap_or_default());
        let token = Secret::new(self.token.clone().unwrap_or_default());
        let mode = match self.mode {
            Some(m) => m,
            None if !secret.is_empty() => Mode::Internal,
            None if !token.is_empty() => Mode::Ws,
            None => {
                return Err(CollectError::Config(
                    "no gateway credentials: set INTERNAL_SECRET (fork gateway, gateway.agl.internalAgentRunSecret) or OPENCLAW_GATEWAY_TOKEN (upstream gateway), or choose --gateway".into(),
                ))
            }
        };
        if mode == Mode::Internal && secret.is_empty() {
            return Err(CollectError::Config(
                "--gateway internal needs INTERNAL_SECRET (the fork's gateway.agl.internalAgentRunSecret)".into(),
            ));
        }
        if mode == Mode::Ws && token.is_empty() {
            return Err(CollectError::Config(
                "--gateway ws needs OPENCLAW_GATEWAY_TOKEN (the gateway's gateway.auth.token)"
                    .into(),
            ));
        }
        if self.session_key.trim().is_empty() {
            return Err(CollectError::Config(
                "SESSION_KEY is empty: set it, e.g. agent:main:main".into(),
            ));
        }
        Ok(GatewayConfig {
            mode,
            base_url: self.gateway_url.trim_end_matches('/').to_string(),
            internal_secret: secret,
            token,
            openclaw_bin: self.openclaw_bin.clone(),
            agent_id: self.agent.clone(),
        })
    }

    fn options(&self) -> RunOptions {
        RunOptions {
            session_key: self.session_key.clone(),
            fresh_session: !self.shared_session,
            timeout: self.timeout,
            retries: self.retries,
            idempotency_key: None,
        }
    }
}

/// Checks that the gateway's port answers, so a wrong URL is one clear line.
async fn preflight(cfg: &GatewayConfig) -> Result<(), CollectError> {
    if cfg.mode == Mode::Cli {
        return Ok(());
    }
    let unreachable = |why: String| {
        CollectError::Config(format!(
            "cannot reach the gateway at {} ({why}): is it running? set GATEWAY_BASE_URL",
            cfg.base_url
        ))
    };
    let rest = cfg
        .base_url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(&cfg.base_url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let default_port = if cfg.base_url.starts_with("https") || cfg.base_url.starts_with("wss") {
        443
    } else {
        80
    };
    let hostport = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable("connect timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(())
}

/// An error that would fail every rollout the same way: stop at once.
fn fatal(e: &GatewayError) -> bool {
    matches!(
        e,
        GatewayError::Unauthorized { .. } | GatewayError::Spawn { .. }
    )
}

/// Runs every prompt of `args.file` as a rollout.
pub async fn collect(
    args: CollectArgs,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<Summary, CollectError> {
    if args.concurrency == 0 {
        return Err(CollectError::Concurrency);
    }
    let cfg = args.gateway.config()?;
    let prompts = prompts::load(&args.file)?;
    let done = match args.resume {
        true => prompts::collected(&args.local.traces_dir),
        false => Default::default(),
    };
    let tasks = prompts::attempts(&prompts, args.samples, &done);
    let total = prompts.len() * args.samples as usize;
    let skipped = total - tasks.len();
    let scorer = Arc::new(score::Scorer::new(
        args.scoring.score,
        args.scoring.score_cmd.clone(),
        &tasks,
    )?);
    preflight(&cfg).await?;
    let telemetry = local::telemetry(&args.local).await?;
    let destination = telemetry.destination.clone();
    let emitter = Arc::new(Emitter::new(telemetry.tracer(), Gateway::new(cfg)));
    let options = Arc::new(args.gateway.options());
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tally = Tally::new(tasks.len());
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let mut running = tokio::task::JoinSet::new();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(tasks.len());
    let mut fatal_error: Option<GatewayError> = None;
    let mut interrupted = false;
    tokio::pin!(interrupt);
    let mut pending = tasks.into_iter();
    let mut permits = None;
    loop {
        // Start the next prompt as soon as a running one is answered by the
        // gateway (its permit comes back before its spans are recorded).
        let starting = fatal_error.is_none() && !interrupted && pending.len() > 0;
        if starting && permits.is_none() {
            permits = Some(Box::pin(limit.clone().acquire_owned()));
        }
        if !starting && running.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(permit) = async { permits.as_mut()?.await.ok() }, if starting => {
                permits = None;
                let Some(task) = pending.next() else { continue };
                let (emitter, options, cancel) = (emitter.clone(), options.clone(), cancel_rx.clone());
                let scorer = scorer.clone();
                running.spawn(async move {
                    let ready = |_| std::future::ready(Ok(()));
                    run_and_score(&emitter, &scorer, &task, &options, cancel, || drop(permit), ready).await
                });
            }
            Some(joined) = running.join_next() => {
                let Ok((outcome, score_error)) = joined else { continue };
                tally.ended(&outcome, score_error);
                if let Some(e) = &outcome.gateway_error {
                    if fatal(e) && fatal_error.is_none() {
                        fatal_error = Some(e.clone());
                        let _ = cancel_tx.send(true);
                    }
                }
                outcomes.push(outcome);
            }
            _ = &mut interrupt, if !interrupted => {
                interrupted = true;
                eprintln!("interrupted: stopping the running rollouts and flushing their spans");
                let _ = cancel_tx.send(true);
            }
        }
    }
    if let Some(bar) = &tally.bar {
        bar.finish_and_clear();
    }
    telemetry.shutdown().await?;
    if let Some(e) = fatal_error {
        return Err(CollectError::Gateway(e));
    }
    Ok(Summary {
        total,
        succeeded: tally.ok,
        failed: tally.failed,
        skipped,
        scored: tally.scored,
        score_errors: tally.score_errors,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
        destination,
        rollouts: outcomes,
    })
}

impl Summary {
    /// The closing line for people.
    pub fn line(&self) -> String {
        let done = self.succeeded + self.failed;
        // A rate of one rollout, or of less than a second, says nothing.
        let rate = if done >= 2 && self.seconds >= 1.0 {
            format!(" ({:.1}/s)", done as f64 / self.seconds)
        } else {
            String::new()
        };
        let mut s = format!(
            "collected {}: {} succeeded, {} failed in {:.1}s{rate} -> {}",
            count(done as u64, "rollout", "rollouts"),
            self.succeeded,
            self.failed,
            self.seconds,
            self.destination
        );
        if self.skipped > 0 {
            s.push_str(&format!("; {} skipped (--resume)", self.skipped));
        }
        if self.scored + self.score_errors > 0 {
            let rewards: Vec<f64> = self
                .rollouts
                .iter()
                .filter_map(|o| o.rewards.first().map(|r| r.value))
                .collect();
            let mean = rewards.iter().sum::<f64>() / rewards.len().max(1) as f64;
            s.push_str(&format!("; {} scored (mean reward {mean:.3})", self.scored));
            if self.score_errors > 0 {
                s.push_str(&format!(", {} not scored", self.score_errors));
            }
        }
        if self.interrupted {
            s.push_str("; interrupted");
        }
        s
    }
}

/// Writes a finished line to stderr in one write (`eprintln!` makes one
/// per piece of its format, six for a progress line).
/// Runs one task as a rollout, then scores it and records its rewards;
/// `answered` runs once the gateway has answered, `prepare` before the turn
/// is sent (see [`Emitter::run_prepared`]).
async fn run_and_score<F, P>(
    emitter: &Emitter,
    scorer: &score::Scorer,
    task: &Task,
    options: &RunOptions,
    cancel: watch::Receiver<bool>,
    answered: impl FnOnce(),
    prepare: P,
) -> (Outcome, Option<score::ScoreError>)
where
    P: FnOnce([u8; 16]) -> F,
    F: std::future::Future<Output = Result<(), String>>,
{
    let mut outcome = emitter
        .run_prepared(task, options, cancel, answered, prepare)
        .await;
    let scored = scorer.score(task, &outcome).await;
    if let (Ok(rewards), Some(root)) = (&scored, &outcome.root) {
        if !rewards.is_empty() {
            emitter.reward(&outcome.rollout_id, &outcome.attempt_id, root, rewards);
            outcome.rewards = rewards.clone();
        }
    }
    (outcome, scored.err())
}

/// What has ended so far, counted and shown: on a progress bar when stderr
/// is a terminal, else a line per rollout.
struct Tally {
    bar: Option<ProgressBar>,
    todo: usize,
    ok: usize,
    failed: usize,
    scored: usize,
    score_errors: usize,
}

impl Tally {
    fn new(todo: usize) -> Tally {
        Tally {
            bar: crate::util::progress::bar(todo as u64),
            todo,
            ok: 0,
            failed: 0,
            scored: 0,
            score_errors: 0,
        }
    }

    fn ended(&mut self, outcome: &Outcome, score_error: Option<score::ScoreError>) {
        if let Some(e) = score_error {
            self.score_errors += 1;
            let line = format!("{}: no reward: {e}", outcome.rollout_id);
            match &self.bar {
                Some(bar) => bar.println(line),
                None => say(format!("{line}\n")),
            }
        }
        self.scored += usize::from(!outcome.rewards.is_empty());
        match outcome.status {
            RolloutStatus::Succeeded => self.ok += 1,
            RolloutStatus::Failed => self.failed += 1,
        }
        let rewards: String = outcome
            .rewards
            .iter()
            .map(|r| format!(" {}={}", r.name, r.value))
            .collect();
        let line = match &outcome.error {
            None => format!(
                "{} succeeded in {:.1}s{rewards}",
                outcome.rollout_id, outcome.seconds
            ),
            Some(e) => format!("{} failed: {e}{rewards}", outcome.rollout_id),
        };
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(format!("ok {} failed {}", self.ok, self.failed));
                if outcome.error.is_some() {
                    bar.println(line);
                }
            }
            None => say(format!(
                "[{}/{}] {line}\n",
                self.ok + self.failed,
                self.todo
            )),
        }
    }
}

fn say(line: String) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Runs one task as a rollout.
pub async fn run(
    args: RunArgs,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<Outcome, CollectError> {
    let cfg = args.gateway.config()?;
    let prompt = args.prompt.clone().unwrap_or_default();
    if prompt.trim().is_empty() {
        return Err(CollectError::Config(
            "the task is empty: oclagl run \"your prompt\", or set OCLAGL_RUN_PROMPT (AGL's config.local.env_map)".into(),
        ));
    }
    let task = Task {
        prompt,
        expected: args.expected.clone(),
        ..Default::default()
    };
    let scorer = score::Scorer::new(
        args.scoring.score,
        args.scoring.score_cmd.clone(),
        std::slice::from_ref(&task),
    )?;
    let agl = harness::Harness::new(&args.agl, &args.local)?;
    if agl.is_some() && cfg.mode != Mode::Ws {
        return Err(CollectError::Config(format!(
            "as AGL's harness, run needs --gateway ws (OCLAGL_GATEWAY=ws), the mode that passes the rollout's traceparent to its model calls, not {}",
            cfg.mode.as_str()
        )));
    }
    preflight(&cfg).await?;
    if let Some(agl) = &agl {
        agl.check().await?;
    }
    let telemetry = local::telemetry(&args.local).await?;
    let emitter = Emitter::new(telemetry.tracer(), Gateway::new(cfg));
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let options = args.gateway.options();
    let agl_ref = agl.as_ref();
    let bind = |trace| async move {
        match agl_ref {
            Some(agl) => agl.bind(trace).await,
            None => Ok(()),
        }
    };
    let (outcome, score_error) = {
        let work = run_and_score(&emitter, &scorer, &task, &options, cancel_rx, || {}, bind);
        tokio::pin!(work);
        tokio::select! {
            o = &mut work => o,
            _ = interrupt => {
                let _ = cancel_tx.send(true);
                work.await
            }
        }
    };
    let reported = match &agl {
        Some(agl) => {
            let trace = outcome.root.as_ref().map(|r| r.trace_id().to_bytes());
            agl.finish(trace, &outcome.rewards).await
        }
        None => Ok(()),
    };
    if let Err(cause) = telemetry.shutdown().await {
        // The turn ran: its reply is the caller's even though the rollout's
        // spans are lost.
        return Err(CollectError::Unrecorded {
            outcome: Box::new(outcome),
            cause,
        });
    }
    if let Some(e) = outcome.gateway_error.as_ref().filter(|e| fatal(e)) {
        return Err(CollectError::Gateway(e.clone()));
    }
    if let Some(e) = score_error {
        return Err(e.into());
    }
    reported?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(succeeded: usize, failed: usize, seconds: f64) -> Summary {
        Summary {
            total: succeeded + failed,
            succeeded,
            failed,
            skipped: 0,
            scored: 0,
            score_errors: 0,
            interrupted: false,
            seconds,
            destination: "traces".into(),
            rollouts: Vec::new(),
        }
    }

    #[test]
    fn the_summary_gives_a_rate_only_when_it_means_something() {
        let one = summary(0, 1, 0.006).line();
        assert!(
            one.starts_with("collected 1 rollout: 0 succeeded, 1 failed in 0.0s -> "),
            "{one}"
        );
        assert!(!one.contains("/s"), "{one}");
        assert!(!summary(0, 0, 3.0).line().contains("/s"));
        assert!(!summary(5, 0, 0.5).line().contains("/s"));
        let many = summary(8, 2, 4.0).line();
        assert!(
            many.contains("collected 10 rollouts: ") && many.contains("(2.5/s)"),
            "{many}"
        );
    }
}
