//! Rewards, the AGL way: an `agentlightning.annotation` span whose
//! `agentlightning.reward.<i>.name` / `.value` attributes list the rewards
//! (index 0 is the primary one), carrying the rollout and attempt ids, as
//! AGL 0.3's `emit_reward` writes it. AGL's adapters (`find_final_reward`),
//! the trace files and `export-sft --min-reward` all read it.
//!
//! This is the shape every part shares: the [`Reward`] itself, its checks,
//! the annotation span's attributes ([`attributes`]) and how a span's
//! rewards are read back ([`rewards_of`]), the annotation span as an OTLP
//! export ([`annotation_request`], what the sidecar's
//! `POST /v1/rollouts/<id>/reward` stores) and that endpoint's body and
//! answer ([`RewardBody`], [`Rewarded`]). Rollouts record rewards through
//! the OTel SDK with the same attributes (`Emitter::reward`).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::conversation::attrs;
use crate::semconv::{ANNOTATION, ATTEMPT_ID, REWARD_PREFIX, ROLLOUT_ID};
use crate::util::clock::now_unix_nanos;
use crate::util::ids::random_id;

/// The name AGL gives a scalar reward.
pub const PRIMARY: &str = "primary";

/// One named reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    /// What is rewarded (`primary`, `exact_match`…).
    pub name: String,
    /// The reward; finite.
    pub value: f64,
}

/// Why a list of rewards cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidReward(pub String);

/// Checks a list of rewards: at least one, names non-empty and distinct,
/// values finite.
pub fn validate(rewards: &[Reward]) -> Result<(), InvalidReward> {
    if rewards.is_empty() {
        return Err(InvalidReward("no reward given".into()));
    }
    for (i, r) in rewards.iter().enumerate() {
        if r.name.trim().is_empty() {
            return Err(InvalidReward(format!("reward {i} has an empty name")));
        }
        if !r.value.is_finite() {
            return Err(InvalidReward(format!(
                "reward {:?} is not a finite number",
                r.name
            )));
        }
        if rewards[..i].iter().any(|o| o.name == r.name) {
            return Err(InvalidReward(format!("reward {:?} is given twice", r.name)));
        }
    }
    Ok(())
}

/// The rewards a span records, in order: AGL 0.3's
/// `agentlightning.reward.<i>.name/value` list (index 0 is primary; the list
/// ends at the first entry without a numeric value), or the older `reward`
/// attribute (named `primary`).
pub fn rewards_of(attrs: &Map<String, Value>) -> Vec<Reward> {
    if let Some(Value::Array(list)) = attrs::unflatten(attrs, REWARD_PREFIX) {
        return list
            .iter()
            .map_while(|r| {
                Some(Reward {
                    name: r.get("name").and_then(Value::as_str).unwrap_or("").into(),
                    value: r.get("value")?.as_f64()?,
                })
            })
            .collect();
    }
    let legacy = attrs.get("reward").and_then(Value::as_f64);
    legacy
        .map(|value| Reward {
            name: PRIMARY.into(),
            value,
        })
        .into_iter()
        .collect()
}

/// The primary reward a span records (see [`rewards_of`]).
pub fn reward_of(attrs: &Map<String, Value>) -> Option<f64> {
    rewards_of(attrs).first().map(|r| r.value)
}

/// An attribute value of the annotation span.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// A string attribute.
    Str(String),
    /// A float attribute.
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
    /// The rollout's trace.
    pub trace_id: [u8; 16],
    /// Its root span.
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

/// The body of `POST /v1/rollouts/<id>/reward`: `{"rewards": [{"name",
/// "value"}, …], "attempt_id"?}`, or `{"value", "name"?, "attempt_id"?}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RewardBody {
    /// Several named rewards; the first is the primary one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewards: Option<Vec<Reward>>,
    /// One reward, instead of `rewards`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The name of `value` (`primary` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The attempt rewarded; the rollout's latest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
}

impl RewardBody {
    /// The rewards it asks for, checked.
    pub fn rewards(&self) -> Result<Vec<Reward>, InvalidReward> {
        let rewards = match (&self.rewards, self.value) {
            (Some(list), None) if self.name.is_none() => list.clone(),
            (None, Some(value)) => vec![Reward {
                name: self.name.clone().unwrap_or_else(|| PRIMARY.to_string()),
                value,
            }],
            _ => {
                return Err(InvalidReward(
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
    /// The rollout rewarded.
    pub rollout_id: String,
    /// The attempt rewarded.
    pub attempt_id: String,
    /// The rewards recorded, the primary one first.
    pub rewards: Vec<Reward>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A reward, briefly.
    pub fn r(name: &str, value: f64) -> Reward {
        Reward {
            name: name.into(),
            value,
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
    }
}
