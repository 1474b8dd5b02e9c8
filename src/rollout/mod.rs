//! One rollout = one agent turn on the gateway, recorded as OTel spans.
//!
//! This is the only rollout emitter: `collect`, `run` and `bridge` all call
//! [`Emitter::run`]. A rollout's spans (all in one trace):
//! - `oclagl.rollout` (root): `agentlightning.rollout_id` / `attempt_id`, the
//!   task input, prompt, gateway mode and session key; status OK or ERROR.
//! - `gateway.agent_run` (CLIENT), one per try: the gateway call.
//! - `gen_ai`, one per assistant turn the gateway reports, in the seed's
//!   convention: `gen_ai.prompt.<i>.*` is the conversation before the turn,
//!   `gen_ai.completion.0.*` the turn (AGL's `TraceToMessages` reads these).
//! - `agentlightning.message` with the reply.

pub mod otel;
pub mod reward;

use std::time::{Duration, Instant};

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::gateway::{Gateway, GatewayError, Message, Reply, Turn};
use crate::reward::Reward;
use crate::semconv::{SAMPLE, TASK_ID, TASK_INPUT};
use crate::util::ids::random_hex;

/// One task to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Task {
    /// The message sent to the agent.
    pub prompt: String,
    /// The prompt's id in a JSONL prompts file; recorded in the task input, and
    /// what `collect --resume` matches on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Free-form metadata from a JSONL prompts file, recorded in the task input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The expected answer, for `collect --score`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// The gateway session to run in, when the task names its own (a JSONL
    /// prompt's `session`); it then shares that session with every task
    /// naming the same one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The task this rollout attempts, shared by all its attempts
    /// ([`crate::semconv::TASK_ID`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Which attempt of the task this is, from 0 ([`crate::semconv::SAMPLE`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<u32>,
}

/// How a rollout is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The gateway session the turn runs in, or (with `fresh_session`) the
    /// one each rollout's own session is named after.
    pub session_key: String,
    /// Each rollout runs in a session of its own, `<session_key>:<rollout
    /// id>`, so no task sees another's messages; `false` runs every rollout
    /// in `session_key` itself (the seed's behaviour).
    pub fresh_session: bool,
    /// How long one try may take.
    pub timeout: Duration,
    /// Tries after the first on retryable errors.
    pub retries: u32,
    /// Idempotency key to use (the bridge passes the caller's); a fresh one
    /// otherwise. Retries reuse it so the gateway never runs a turn twice.
    pub idempotency_key: Option<String>,
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutStatus {
    /// The gateway answered.
    Succeeded,
    /// The gateway failed or did not answer, after the retries.
    Failed,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The rollout's id (`ro-…`), on all its spans.
    pub rollout_id: String,
    /// Its attempt's id (`at-…`).
    pub attempt_id: String,
    /// Whether the gateway answered.
    pub status: RolloutStatus,
    /// The agent's reply, when it answered.
    pub reply: Option<String>,
    /// The gateway's id of the run, when it reported one.
    pub run_id: Option<String>,
    /// Why it failed, in words.
    pub error: Option<String>,
    /// How many times the turn was sent.
    pub tries: u32,
    /// How long the rollout took, retries included.
    pub seconds: f64,
    /// Why it failed, for the caller to tell errors apart (not serialized).
    #[serde(skip)]
    pub gateway_error: Option<GatewayError>,
    /// The rollout's root span, for spans added afterwards (rewards).
    #[serde(skip)]
    pub root: Option<opentelemetry::trace::SpanContext>,
    /// Rewards given when it ended (`collect --score`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewards: Vec<Reward>,
}

impl RunOptions {
    /// The session rollout `rollout_id` of `task` runs in.
    pub fn session_of(&self, task: &Task, rollout_id: &str) -> String {
        match &task.session {
            Some(named) => named.clone(),
            None if self.fresh_session => format!("{}:{rollout_id}", self.session_key),
            None => self.session_key.clone(),
        }
    }
}

/// `ro-` + 12 hex and `at-` + 8 hex, like AGL's store.
pub fn new_ids() -> (String, String) {
    (
        format!("ro-{}", random_hex::<6>()),
        format!("at-{}", random_hex::<4>()),
    )
}

/// How a span says it failed with `e`: an OTel `exception` event's
/// attributes, and the error status.
fn exception(e: &GatewayError) -> (Vec<KeyValue>, Status) {
    let attributes = vec![
        KeyValue::new("exception.type", "GatewayError"),
        KeyValue::new("exception.message", e.to_string()),
    ];
    (attributes, Status::error(e.to_string()))
}

/// W3C `traceparent` of a span context.
fn traceparent(cx: &Context) -> String {
    let sc = cx.span().span_context().clone();
    format!("00-{}-{}-01", sc.trace_id(), sc.span_id())
}

/// Backoff before retry `n` (1-based): 0.5 s doubling up to 8 s, and never
/// less than what the gateway asked for (`Retry-After`).
fn backoff(n: u32, asked: Option<Duration>) -> Duration {
    let step = Duration::from_millis(500u64 << (n - 1).min(4));
    asked.map_or(step, |asked| asked.max(step))
}

/// The conversation turns to record: from the transcript when the gateway
/// returned one, else the prompt and the reply.
fn turns(prompt: &str, reply: &Reply) -> Vec<(Vec<Message>, Message)> {
    let mut transcript = reply.transcript.clone();
    if transcript.is_empty() {
        transcript = vec![
            Message {
                role: "user".into(),
                content: prompt.into(),
            },
            Message {
                role: "assistant".into(),
                content: reply.text.clone(),
            },
        ];
    }
    transcript
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == "assistant")
        .map(|(i, m)| (transcript[..i].to_vec(), m.clone()))
        .collect()
}

/// The OpenAI chat role for a role of the gateway's transcript.
fn openai_role(role: &str) -> &str {
    match role {
        "toolResult" | "tool_result" | "toolresult" => "tool",
        other => other,
    }
}

/// Runs tasks on a gateway as rollouts and records each as OTel spans (root,
/// gateway call, messages, rewards), the one emitter of collect, run and
/// bridge.
pub struct Emitter {
    tracer: SdkTracer,
    gateway: Gateway,
}

impl Emitter {
    /// An emitter recording with `tracer` and running turns on `gateway`.
    pub fn new(tracer: SdkTracer, gateway: Gateway) -> Emitter {
        Emitter { tracer, gateway }
    }

    /// The gateway the turns run on.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Runs one rollout and records it; `cancel` turning true aborts it (the
    /// rollout is then recorded as failed, "interrupted").
    pub async fn run(
        &self,
        task: &Task,
        opts: &RunOptions,
        cancel: watch::Receiver<bool>,
    ) -> Outcome {
        self.run_then(task, opts, cancel, || {}).await
    }

    /// [`Emitter::run`], calling `answered` as soon as the gateway is done
    /// with the rollout (before its spans are recorded), so a collector can
    /// start the next prompt without waiting for the bookkeeping.
    pub async fn run_then(
        &self,
        task: &Task,
        opts: &RunOptions,
        cancel: watch::Receiver<bool>,
        answered: impl FnOnce(),
    ) -> Outcome {
        let ready = |_| std::future::ready(Ok(()));
        self.run_prepared(task, opts, cancel, answered, ready).await
    }

    /// [`Emitter::run_then`], calling `prepare` with the rollout's trace id
    /// before the turn is sent (`oclagl run` binds the trace to AGL there);
    /// when it fails, the rollout fails with its reason and is not sent.
    pub async fn run_prepared<F, P>(
        &self,
        task: &Task,
        opts: &RunOptions,
        mut cancel: watch::Receiver<bool>,
        answered: impl FnOnce(),
        prepare: P,
    ) -> Outcome
    where
        P: FnOnce([u8; 16]) -> F,
        F: std::future::Future<Output = Result<(), String>>,
    {
        let started = Instant::now();
        let (rollout_id, attempt_id) = new_ids();
        let session = opts.session_of(task, &rollout_id);
        let root_cx = self.start_root(task, &session, &rollout_id, &attempt_id);
        let trace_id = root_cx.span().span_context().trace_id().to_bytes();
        let prepared = prepare(trace_id).await;
        let turn = Turn {
            message: task.prompt.clone(),
            session_key: session,
            idempotency_key: opts
                .idempotency_key
                .clone()
                .unwrap_or_else(|| format!("oclagl-{}", random_hex::<8>())),
            traceparent: None,
            timeout: opts.timeout,
        };
        let mut tries = 0;
        let result = loop {
            if let Err(why) = &prepared {
                break Err(GatewayError::RunFailed(why.clone()));
            }
            tries += 1;
            let result = self.try_turn(&turn, &root_cx, tries, &mut cancel).await;
            match result {
                Err(e) if e.retryable() && tries <= opts.retries && !*cancel.borrow() => {
                    let wait = backoff(tries, e.retry_after());
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.wait_for(|c| *c) => break Err(GatewayError::RunFailed("interrupted".into())),
                    }
                }
                other => break other,
            }
        };
        answered();

        let root_span = root_cx.span();
        let mut outcome = Outcome {
            rollout_id,
            attempt_id,
            status: RolloutStatus::Failed,
            reply: None,
            run_id: None,
            error: None,
            tries,
            seconds: started.elapsed().as_secs_f64(),
            gateway_error: None,
            root: Some(root_span.span_context().clone()),
            rewards: Vec::new(),
        };
        match result {
            Ok(reply) => {
                self.record_turns(&root_cx, &task.prompt, &reply);
                let mut message = self
                    .tracer
                    .span_builder("agentlightning.message")
                    .with_attributes([KeyValue::new(
                        "agentlightning.message.body",
                        reply.text.clone(),
                    )])
                    .start_with_context(&self.tracer, &root_cx);
                message.end();
                root_span.set_status(Status::Ok);
                outcome.status = RolloutStatus::Succeeded;
                outcome.reply = Some(reply.text);
                outcome.run_id = reply.run_id;
            }
            Err(e) => {
                let (event, status) = exception(&e);
                root_span.add_event("exception".to_string(), event);
                root_span.set_status(status);
                outcome.error = Some(e.to_string());
                outcome.gateway_error = Some(e);
            }
        }
        root_span.end();
        outcome
    }

    /// The rollout's root span, with AGL's ids and the task, as a context.
    fn start_root(
        &self,
        task: &Task,
        session: &str,
        rollout_id: &str,
        attempt_id: &str,
    ) -> Context {
        let task_input = serde_json::to_string(task).unwrap_or_default();
        let mut attributes = vec![
            KeyValue::new("agentlightning.rollout_id", rollout_id.to_string()),
            KeyValue::new("agentlightning.attempt_id", attempt_id.to_string()),
            KeyValue::new(TASK_INPUT, task_input),
            KeyValue::new("oclagl.prompt", task.prompt.clone()),
            KeyValue::new("oclagl.mode", self.gateway.config().mode.as_str()),
            KeyValue::new("oclagl.session_key", session.to_string()),
        ];
        if let Some(id) = &task.task_id {
            attributes.push(KeyValue::new(TASK_ID, id.clone()));
        }
        if let Some(n) = task.sample {
            attributes.push(KeyValue::new(SAMPLE, i64::from(n)));
        }
        let root = self
            .tracer
            .span_builder("oclagl.rollout")
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &Context::new());
        Context::new().with_span(root)
    }

    /// One try of the turn through the gateway, as a `gateway.agent_run`
    /// span under the root; a cancel ends it as interrupted.
    async fn try_turn(
        &self,
        turn: &Turn,
        root_cx: &Context,
        tries: u32,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Reply, GatewayError> {
        let mut call = self
            .tracer
            .span_builder("gateway.agent_run")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("oclagl.mode", self.gateway.config().mode.as_str()),
                KeyValue::new("oclagl.try", i64::from(tries)),
                KeyValue::new("oclagl.idempotency_key", turn.idempotency_key.clone()),
                KeyValue::new("server.address", self.gateway.config().base_url.clone()),
            ])
            .start_with_context(&self.tracer, root_cx);
        let call_cx = root_cx.with_span_context_of(&call);
        let turn = Turn {
            traceparent: Some(traceparent(&call_cx)),
            ..turn.clone()
        };
        let result = tokio::select! {
            r = self.gateway.run(&turn) => r,
            _ = cancel.wait_for(|c| *c) => Err(GatewayError::RunFailed("interrupted".into())),
        };
        match &result {
            Ok(reply) => {
                if let Some(run_id) = &reply.run_id {
                    call.set_attribute(KeyValue::new("oclagl.run_id", run_id.clone()));
                }
                call.set_status(Status::Ok);
            }
            Err(e) => {
                let (event, status) = exception(e);
                call.add_event("exception", event);
                call.set_status(status);
            }
        }
        call.end();
        result
    }

    fn record_turns(&self, parent: &Context, prompt: &str, reply: &Reply) {
        let all = turns(prompt, reply);
        let last = all.len().saturating_sub(1);
        for (n, (history, answer)) in all.into_iter().enumerate() {
            let mut attrs = Vec::with_capacity(history.len() * 2 + 8);
            for (i, m) in history.iter().enumerate() {
                let role = openai_role(&m.role);
                if role == "tool" {
                    // The fork's transcript flattens tool calls to text, so
                    // the real call id is unknown; the LLM proxy records it.
                    attrs.push(KeyValue::new(
                        format!("gen_ai.prompt.{i}.tool_call_id"),
                        format!("call_{i}"),
                    ));
                }
                attrs.push(KeyValue::new(
                    format!("gen_ai.prompt.{i}.role"),
                    role.to_string(),
                ));
                attrs.push(KeyValue::new(
                    format!("gen_ai.prompt.{i}.content"),
                    m.content.clone(),
                ));
            }
            attrs.push(KeyValue::new("gen_ai.completion.0.role", answer.role));
            attrs.push(KeyValue::new("gen_ai.completion.0.content", answer.content));
            if let Some(model) = &reply.model {
                attrs.push(KeyValue::new("gen_ai.request.model", model.clone()));
                attrs.push(KeyValue::new("gen_ai.response.model", model.clone()));
            }
            if let Some(provider) = &reply.provider {
                attrs.push(KeyValue::new("gen_ai.system", provider.clone()));
            }
            if n == last {
                let usage = [
                    ("gen_ai.usage.prompt_tokens", reply.usage.input),
                    ("gen_ai.usage.completion_tokens", reply.usage.output),
                    ("gen_ai.usage.total_tokens", reply.usage.total),
                ];
                for (key, value) in usage {
                    if let Some(v) = value {
                        attrs.push(KeyValue::new(key, v));
                    }
                }
            }
            let mut span = self
                .tracer
                .span_builder("gen_ai")
                .with_kind(SpanKind::Client)
                .with_attributes(attrs)
                .start_with_context(&self.tracer, parent);
            span.end();
        }
    }
}

trait WithSpanContextOf {
    fn with_span_context_of(&self, span: &opentelemetry_sdk::trace::Span) -> Context;
}

impl WithSpanContextOf for Context {
    /// A context whose current span context is `span`'s (for `traceparent`).
    fn with_span_context_of(&self, span: &opentelemetry_sdk::trace::Span) -> Context {
        self.with_remote_span_context(span.span_context().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_agl_shape() {
        let (r, a) = new_ids();
        assert!(
            r.starts_with("ro-") && r.len() == 15 && r[3..].chars().all(|c| c.is_ascii_hexdigit())
        );
        assert!(a.starts_with("at-") && a.len() == 11);
        assert_ne!(new_ids().0, r);
    }

    #[test]
    fn every_assistant_turn_gets_the_conversation_before_it() {
        let m = |role: &str, content: &str| Message {
            role: role.into(),
            content: content.into(),
        };
        let reply = Reply {
            text: "done".into(),
            transcript: vec![
                m("system", "sys"),
                m("user", "hi"),
                m("assistant", "calling ls"),
                m("toolResult", "a.txt"),
                m("assistant", "done"),
            ],
            ..Default::default()
        };
        let t = turns("hi", &reply);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].0.len(), 2);
        assert_eq!(t[1].0.len(), 4);
        assert_eq!(t[1].1.content, "done");
        let plain = turns(
            "q",
            &Reply {
                text: "a".into(),
                ..Default::default()
            },
        );
        assert_eq!(plain, vec![(vec![m("user", "q")], m("assistant", "a"))]);
    }

    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        assert_eq!(backoff(1, None), Duration::from_millis(500));
        assert_eq!(backoff(3, None), Duration::from_secs(2));
        assert_eq!(backoff(9, None), Duration::from_secs(8));
        assert_eq!(
            backoff(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
