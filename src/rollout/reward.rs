//! Rewards, the AGL way: an `agentlightning.annotation` span whose
//! `agentlightning.reward.<i>.name` / `.value` attributes list the rewards
//! (index 0 is the primary one), carrying the rollout and attempt ids, as
//! AGL 0.3's `emit_reward` writes it. AGL's adapters (`find_final_reward`),
//! the trace files and `export-sft --min-reward` all read it.
//!
//! Three ways in, one span shape:
//! - [`Emitter::reward`]: through the OTel SDK, after a rollout ran
//!   (`collect --score`);
//! - [`annotation_request`]: as an OTLP export the sidecar stores itself
//!   (`POST /v1/rollouts/<id>/reward`);
//! - [`send`]: `oclagl reward`, a client of that endpoint, on the running
//!   sidecar or on an in-process one over the local store.

use std::time::Duration;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::Context;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span};
use serde::{Deserialize, Serialize};

use super::otel::{LocalSidecar, LocalStore};
use super::Emitter;
use crate::semconv::{ANNOTATION, ATTEMPT_ID, REWARD_PREFIX, ROLLOUT_ID};
use crate::serve::ServeError;
use crate::store::StoreError;
use crate::util::clock::now_unix_nanos;
use crate::util::ids::random_id;

/// The name AGL gives a scalar reward.
pub const PRIMARY: &str = "primary";

/// One named reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    pub name: String,
    pub value: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error("{0}")]
    Invalid(String),
    #[error("rollout {id} not found in {place}")]
    NotFound { id: String, place: String },
    #[error("cannot reach the sidecar at {url} ({reason}): is `oclagl serve` running there? set OTEL_EXPORTER_OTLP_ENDPOINT")]
    Unreachable { url: String, reason: String },
    #[error("the sidecar at {url} refused the reward ({status}): {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("cannot open the local store: {0}")]
    Local(#[from] ServeError),
}

/// Checks a list of rewards: at least one, names non-empty and distinct,
/// values finite.
pub fn validate(rewards: &[Reward]) -> Result<(), RewardError> {
    if rewards.is_empty() {
        return Err(RewardError::Invalid("no reward given".into()));
    }
    for (i, r) in rewards.iter().enumerate() {
        if r.name.trim().is_empty() {
            return Err(RewardError::Invalid(format!(
                "reward {i} has an empty name"
            )));
        }
        if !r.value.is_finite() {
            return Err(RewardError::Invalid(format!(
                "reward {:?} is not a finite number",
                r.name
            )));
        }
        if rewards[..i].iter().any(|o| o.name == r.name) {
            return Err(RewardError::Invalid(format!(
                "reward {:?} is given twice",
                r.name
            )));
        }
    }
    Ok(())
}

/// Parses `oclagl reward` values: each `VALUE` or `NAME=VALUE`. An unnamed
/// first value is named `first_name` (or `primary`, AGL's name for a scalar
/// reward); later values must be named.
pub fn parse_rewards(
    values: &[String],
    first_name: Option<&str>,
) -> Result<Vec<Reward>, RewardError> {
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let (name, number) = match v.split_once('=') {
            Some((n, x)) => (n.trim().to_string(), x),
            None if i == 0 => (first_name.unwrap_or(PRIMARY).to_string(), v.as_str()),
            None => {
                return Err(RewardError::Invalid(format!(
                    "{v:?}: name every reward after the first (NAME=VALUE)"
                )))
            }
        };
        let value = number.trim().parse::<f64>().map_err(|_| {
            RewardError::Invalid(format!("{v:?} is not a reward (a number, or NAME=NUMBER)"))
        })?;
        out.push(Reward { name, value });
    }
    validate(&out)?;
    Ok(out)
}

/// An attribute value of the annotation span.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    F64(f64),
}

/// The annotation span's attributes, in AGL's flattened form.
pub fn attributes(rollout_id: &str, attempt_id: &str, rewards: &[Reward]) -> Vec<(String, Attr)> {
    let mut out = vec![
        (ROLLOUT_ID.to_string(), Attr::Str(rollout_id.to_string())),
        (ATTEMPT_ID.to_string(), Attr::Str(attempt_id.to_string())),
    ];
    for (i, r) in rewards.iter().enumerate() {
        out.push((
            format!("{REWARD_PREFIX}.{i}.name"),
            Attr::Str(r.name.clone()),
        ));
        out.push((format!("{REWARD_PREFIX}.{i}.value"), Attr::F64(r.value)));
    }
    out
}

/// Where the annotation span hangs in the rollout's trace: its root span, so
/// it is never taken for a root itself (which would change the status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// The annotation span as an OTLP export (for the sidecar to store).
pub fn annotation_request(
    rollout_id: &str,
    attempt_id: &str,
    parent: Option<Parent>,
    rewards: &[Reward],
) -> ExportTraceServiceRequest {
    let kv = |key: &str, value: any_value::Value| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let now = now_unix_nanos();
    let span = Span {
        trace_id: parent.map_or_else(|| random_id::<16>().to_vec(), |p| p.trace_id.to_vec()),
        span_id: random_id::<8>().to_vec(),
        parent_span_id: parent.map(|p| p.span_id.to_vec()).unwrap_or_default(),
        name: ANNOTATION.to_string(),
        kind: 1,
        start_time_unix_nano: now,
        end_time_unix_nano: now,
        attributes: attributes(rollout_id, attempt_id, rewards)
            .into_iter()
            .map(|(k, v)| match v {
                Attr::Str(s) => kv(&k, any_value::Value::StringValue(s)),
                Attr::F64(x) => kv(&k, any_value::Value::DoubleValue(x)),
            })
            .collect(),
        status: Some(opentelemetry_proto::tonic::trace::v1::Status {
            code: status::StatusCode::Ok as i32,
            message: String::new(),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("oclagl".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "oclagl".into(),
                    ..Default::default()
                }),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

impl Emitter {
    /// Records rewards for a rollout this emitter ran, as a child of its
    /// root span (`root`, from [`super::Outcome::root`]).
    pub fn reward(
        &self,
        rollout_id: &str,
        attempt_id: &str,
        root: &SpanContext,
        rewards: &[Reward],
    ) {
        let attrs = attributes(rollout_id, attempt_id, rewards)
            .into_iter()
            .map(|(k, v)| match v {
                Attr::Str(s) => opentelemetry::KeyValue::new(k, s),
                Attr::F64(x) => opentelemetry::KeyValue::new(k, x),
            });
        let cx = Context::new().with_remote_span_context(root.clone());
        let mut span = self
            .tracer
            .span_builder(ANNOTATION)
            .with_kind(SpanKind::Internal)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &cx);
        span.set_status(Status::Ok);
        span.end();
    }
}

/// The body of `POST /v1/rollouts/<id>/reward`: `{"rewards": [{"name",
/// "value"}, …], "attempt_id"?}`, or `{"value", "name"?, "attempt_id"?}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RewardBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewards: Option<Vec<Reward>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
}

impl RewardBody {
    /// The rewards it asks for, checked.
    pub fn rewards(&self) -> Result<Vec<Reward>, RewardError> {
        let rewards = match (&self.rewards, self.value) {
            (Some(list), None) if self.name.is_none() => list.clone(),
            (None, Some(value)) => vec![Reward {
                name: self.name.clone().unwrap_or_else(|| PRIMARY.to_string()),
                value,
            }],
            _ => {
                return Err(RewardError::Invalid(
                    "give either \"rewards\": [{\"name\", \"value\"}, …] or \"value\" (with an optional \"name\")".into(),
                ))
            }
        };
        validate(&rewards)?;
        Ok(rewards)
    }
}

/// What the sidecar answers to a reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rewarded {
    pub rollout_id: String,
    pub attempt_id: String,
    pub rewards: Vec<Reward>,
}

/// `oclagl reward` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RewardArgs {
    /// The rollout to reward (`ro-…`).
    pub rollout_id: String,
    /// Rewards: `VALUE` or `NAME=VALUE`; the first is the primary one.
    #[arg(required = true, value_name = "REWARD", allow_negative_numbers = true)]
    pub rewards: Vec<String>,
    /// Name of the first reward when it is given as a bare number [default: primary].
    #[arg(long, env = "OCLAGL_REWARD_NAME")]
    pub name: Option<String>,
    /// The attempt rewarded [default: the rollout's latest attempt].
    #[arg(long, env = "OCLAGL_ATTEMPT_ID")]
    pub attempt: Option<String>,
    /// The running sidecar (its OTLP/HTTP address). Unset: the local store
    /// (--data-dir) in-process, or the sidecar on 127.0.0.1:4318 when
    /// `oclagl serve` holds that store.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub local: LocalStore,
}

/// Where `oclagl reward` goes when a sidecar holds the local store.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4318";

/// `oclagl reward`: sends the rewards to the sidecar's endpoint.
pub async fn send(args: &RewardArgs) -> Result<Rewarded, RewardError> {
    let rewards = parse_rewards(&args.rewards, args.name.as_deref())?;
    let body = RewardBody {
        rewards: Some(rewards),
        value: None,
        name: None,
        attempt_id: args.attempt.clone(),
    };
    if let Some(endpoint) = args.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        return post(endpoint, &args.rollout_id, &body, endpoint).await;
    }
    match LocalSidecar::start(&args.local).await {
        Ok(sidecar) => {
            let place = format!("the store {}", args.local.data_dir.display());
            let result = post(
                &format!("http://{}", sidecar.http),
                &args.rollout_id,
                &body,
                &place,
            )
            .await;
            // Stopping writes the rollout's trace file with the reward.
            let stopped = sidecar.stop().await;
            let rewarded = result?;
            stopped?;
            Ok(rewarded)
        }
        Err(ServeError::Store(StoreError::Locked { .. })) => {
            post(DEFAULT_ENDPOINT, &args.rollout_id, &body, DEFAULT_ENDPOINT).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn post(
    base: &str,
    rollout_id: &str,
    body: &RewardBody,
    place: &str,
) -> Result<Rewarded, RewardError> {
    let url = format!(
        "{}/v1/rollouts/{}/reward",
        base.trim_end_matches('/'),
        percent_encode(rollout_id)
    );
    let unreachable = |e: reqwest::Error| RewardError::Unreachable {
        url: base.to_string(),
        reason: e.to_string(),
    };
    let response = reqwest::Client::new()
        .post(&url)
        .timeout(Duration::from_secs(30))
        .json(body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let text = response.text().await.map_err(unreachable)?;
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|e| RewardError::Refused {
            url: url.clone(),
            status: status.as_u16(),
            message: format!("unexpected answer ({e}): {text}"),
        });
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(text);
    if status == reqwest::StatusCode::NOT_FOUND && message.contains(rollout_id) {
        return Err(RewardError::NotFound {
            id: rollout_id.to_string(),
            place: place.to_string(),
        });
    }
    Err(RewardError::Refused {
        url,
        status: status.as_u16(),
        message,
    })
}

/// Escapes a rollout id for a URL path segment.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, value: f64) -> Reward {
        Reward {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn values_parse_with_names_and_the_first_is_primary() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_rewards(&s(&["1.0"]), None).unwrap(),
            vec![r("primary", 1.0)]
        );
        assert_eq!(
            parse_rewards(&s(&["1", "brevity=0.5"]), Some("exact_match")).unwrap(),
            vec![r("exact_match", 1.0), r("brevity", 0.5)]
        );
        assert_eq!(
            parse_rewards(&s(&["a=-2"]), None).unwrap(),
            vec![r("a", -2.0)]
        );
        for bad in [
            &["x"][..],
            &["1", "2"],
            &["nan"],
            &["a=1", "a=2"],
            &["=1"],
            &[],
        ] {
            assert!(parse_rewards(&s(bad), None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bodies_give_rewards_one_way_or_the_other() {
        let body: RewardBody = serde_json::from_str(r#"{"value": 0.5}"#).unwrap();
        assert_eq!(body.rewards().unwrap(), vec![r("primary", 0.5)]);
        let body: RewardBody = serde_json::from_str(
            r#"{"rewards": [{"name": "a", "value": 1}], "attempt_id": "at-1"}"#,
        )
        .unwrap();
        assert_eq!(body.rewards().unwrap(), vec![r("a", 1.0)]);
        let both: RewardBody =
            serde_json::from_str(r#"{"rewards": [{"name": "a", "value": 1}], "value": 1}"#)
                .unwrap();
        assert!(both.rewards().is_err());
        let empty: RewardBody = serde_json::from_str(r#"{"rewards": []}"#).unwrap();
        assert!(empty.rewards().is_err());
        assert!(serde_json::from_str::<RewardBody>(r#"{"reward": 1}"#).is_err());
    }

    #[test]
    fn the_annotation_span_is_agls_reward_span_under_the_root() {
        let parent = Parent {
            trace_id: [7; 16],
            span_id: [8; 8],
        };
        let req = annotation_request("ro-1", "at-1", Some(parent), &[r("a", 1.0), r("b", 0.0)]);
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "agentlightning.annotation");
        assert_eq!(span.trace_id, vec![7; 16]);
        assert_eq!(span.parent_span_id, vec![8; 8]);
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "agentlightning.rollout_id",
                "agentlightning.attempt_id",
                "agentlightning.reward.0.name",
                "agentlightning.reward.0.value",
                "agentlightning.reward.1.name",
                "agentlightning.reward.1.value"
            ]
        );
        let orphan = annotation_request("ro-1", "at-1", None, &[r("a", 1.0)]);
        let span = &orphan.resource_spans[0].scope_spans[0].spans[0];
        assert!(span.parent_span_id.is_empty() && span.trace_id.iter().any(|b| *b != 0));
        assert_eq!(percent_encode("ro-1/..?"), "ro-1%2F..%3F");
    }
}
