//! AGL v0.x `Span` JSON and its mapping from OTLP.
//!
//! The mapping follows Agent Lightning's own store (`agentlightning.utils.otlp`
//! in 0.3.0): ids as lowercase hex, times as float epoch seconds, status codes
//! as `"UNSET" | "OK" | "ERROR"`, attributes flattened the way its
//! `flatten_attributes` does (maps become dotted keys, lists of one primitive
//! type stay lists, other lists become indexed keys, bytes become hex).

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Link as OtlpLink;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::semconv::{ATTEMPT_ID, ROLLOUT_ID, SPAN_SEQUENCE_ID};

/// OTLP `Span.flags` bits saying whether the parent is remote.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// One span as AGL's pydantic `Span.model_dump()` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// The rollout the span belongs to (`ro-…`).
    pub rollout_id: String,
    /// The attempt of that rollout (`at-…`).
    pub attempt_id: String,
    /// The span's number within its attempt, from 1 (AGL orders spans by it).
    pub sequence_id: u64,
    /// The trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// The span id, 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id, or `None` for a root span.
    pub parent_id: Option<String>,
    /// The span's name (`openai.chat.completion`, `agentlightning.reward`…).
    pub name: String,
    /// OK, ERROR or UNSET, with the error's description.
    pub status: Status,
    /// The span's attributes, flattened to dotted keys.
    pub attributes: Map<String, Value>,
    /// Events in the span (exceptions, logs), as OTLP sent them.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Links to other spans.
    #[serde(default)]
    pub links: Vec<Link>,
    /// Start, in float seconds since the Unix epoch.
    pub start_time: Option<f64>,
    /// End, in float seconds since the Unix epoch.
    pub end_time: Option<f64>,
    /// The span's own trace and span ids.
    pub context: Option<SpanContext>,
    /// The parent's ids, when the span has a parent.
    pub parent: Option<SpanContext>,
    /// The resource (service) that made the span.
    pub resource: Resource,
}

/// A span's status, as AGL writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `"UNSET"`, `"OK"` or `"ERROR"`.
    pub status_code: String,
    /// The error's description, when there is one.
    pub description: Option<String>,
}

/// A timestamped event inside a span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's name (`exception`…).
    pub name: String,
    /// The event's attributes, flattened like a span's.
    pub attributes: Map<String, Value>,
    /// When it happened, in float seconds since the Unix epoch.
    pub timestamp: Option<f64>,
}

/// A link from a span to another span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// The linked span.
    pub context: SpanContext,
    /// The link's attributes, or `None` when it has none.
    pub attributes: Option<Map<String, Value>>,
}

/// A span's identity within its trace, as AGL writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanContext {
    /// The trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// The span id, 16 lowercase hex digits.
    pub span_id: String,
    /// True when the span was made in another process (propagated).
    pub is_remote: bool,
    /// W3C `tracestate` entries.
    pub trace_state: Map<String, Value>,
}

/// The resource (service, host…) a span came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Its attributes, flattened like a span's.
    pub attributes: Map<String, Value>,
    /// The schema URL OTLP sent with it (empty when none).
    pub schema_url: String,
}

/// Where a span says it belongs: span attributes override resource ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanIds {
    /// `agentlightning.rollout_id`, when set.
    pub rollout: Option<String>,
    /// `agentlightning.attempt_id`, when set.
    pub attempt: Option<String>,
    /// `agentlightning.span_sequence_id`, when set to a positive integer.
    pub sequence: Option<u64>,
}

/// A span's rollout id alone (the hot path of ingest needs only this).
pub fn rollout_id(span_attrs: &[KeyValue], resource_attrs: &[KeyValue]) -> Option<String> {
    id_value(span_attrs, ROLLOUT_ID).or_else(|| id_value(resource_attrs, ROLLOUT_ID))
}

impl SpanIds {
    /// Reads the ids from a span's attributes, falling back to its resource's.
    pub fn of(span_attrs: &[KeyValue], resource_attrs: &[KeyValue]) -> SpanIds {
        let get = |key: &str| id_value(span_attrs, key).or_else(|| id_value(resource_attrs, key));
        SpanIds {
            rollout: rollout_id(span_attrs, resource_attrs),
            attempt: get(ATTEMPT_ID),
            sequence: get(SPAN_SEQUENCE_ID)
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|&n| n > 0),
        }
    }
}

/// An id-like attribute as a string (AGL applies `str()`); empty means absent.
fn id_value(attrs: &[KeyValue], key: &str) -> Option<String> {
    let value = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    let s = match value.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// The value of a string attribute, if present.
pub fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?
    {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// OTLP nanoseconds as AGL's float seconds; `None` for 0 (unset).
pub fn nanos_to_seconds(ns: u64) -> Option<f64> {
    (ns != 0).then(|| ns as f64 / 1e9)
}

fn status_code(code: i32) -> &'static str {
    match code {
        1 => "OK",
        2 => "ERROR",
        _ => "UNSET",
    }
}

fn trace_state(s: &str) -> Map<String, Value> {
    s.split(',')
        .filter_map(|member| {
            let (k, v) = member.trim().split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), Value::String(v.to_string())))
        })
        .collect()
}

/// OTLP attributes as AGL's flat attribute map.
pub fn flatten_attributes(kvs: &[KeyValue]) -> Map<String, Value> {
    let mut out = Map::new();
    for kv in kvs {
        if let Some(v) = &kv.value {
            flatten_into(&kv.key, v, &mut out);
        }
    }
    out
}

fn primitive(v: &AnyValue) -> Option<(u8, Value)> {
    Some(match v.value.as_ref()? {
        any_value::Value::StringValue(s) => (0, Value::String(s.clone())),
        any_value::Value::BoolValue(b) => (1, Value::Bool(*b)),
        any_value::Value::IntValue(i) => (2, Value::from(*i)),
        any_value::Value::DoubleValue(d) => (3, double(*d)),
        any_value::Value::BytesValue(b) => (0, Value::String(hex::encode(b))),
        _ => return None,
    })
}

/// JSON has no NaN or infinity; write them as Python's `str()` does.
fn double(d: f64) -> Value {
    serde_json::Number::from_f64(d)
        .map(Value::Number)
        .unwrap_or_else(|| {
            Value::String(
                if d.is_nan() {
                    "nan"
                } else if d > 0.0 {
                    "inf"
                } else {
                    "-inf"
                }
                .to_string(),
            )
        })
}

fn flatten_into(prefix: &str, v: &AnyValue, out: &mut Map<String, Value>) {
    match v.value.as_ref() {
        None => {}
        Some(any_value::Value::KvlistValue(list)) => {
            for kv in &list.values {
                if let Some(inner) = &kv.value {
                    flatten_into(&format!("{prefix}.{}", kv.key), inner, out);
                }
            }
        }
        Some(any_value::Value::ArrayValue(array)) => {
            let items: Option<Vec<(u8, Value)>> = array.values.iter().map(primitive).collect();
            match items {
                Some(items)
                    if items
                        .iter()
                        .all(|(kind, _)| Some(kind) == items.first().map(|x| &x.0)) =>
                {
                    out.insert(
                        prefix.to_string(),
                        Value::Array(items.into_iter().map(|(_, v)| v).collect()),
                    );
                }
                _ => {
                    for (i, item) in array.values.iter().enumerate() {
                        flatten_into(&format!("{prefix}.{i}"), item, out);
                    }
                }
            }
        }
        Some(_) => {
            if let Some((_, value)) = primitive(v) {
                out.insert(prefix.to_string(), value);
            }
        }
    }
}

fn context(trace_id: &[u8], span_id: &[u8], is_remote: bool, state: &str) -> SpanContext {
    SpanContext {
        trace_id: hex::encode(trace_id),
        span_id: hex::encode(span_id),
        is_remote,
        trace_state: trace_state(state),
    }
}

fn link(l: &OtlpLink) -> Link {
    let attributes = flatten_attributes(&l.attributes);
    Link {
        context: context(&l.trace_id, &l.span_id, true, &l.trace_state),
        attributes: (!attributes.is_empty()).then_some(attributes),
    }
}

/// Converts one OTLP span; `resource` is its already flattened resource. A
/// model call the LLM proxy recorded gets AGL's message attributes from its
/// bodies ([`crate::agl::call`]).
pub fn to_agl(
    span: &OtlpSpan,
    resource: &Resource,
    rollout_id: &str,
    attempt_id: &str,
    sequence_id: u64,
) -> Span {
    let parent_id = (!span.parent_span_id.is_empty()).then(|| hex::encode(&span.parent_span_id));
    let parent_remote = span.flags & FLAG_HAS_IS_REMOTE != 0 && span.flags & FLAG_IS_REMOTE != 0;
    Span {
        rollout_id: rollout_id.to_string(),
        attempt_id: attempt_id.to_string(),
        sequence_id,
        trace_id: hex::encode(&span.trace_id),
        span_id: hex::encode(&span.span_id),
        parent: parent_id
            .as_ref()
            .map(|_| context(&span.trace_id, &span.parent_span_id, parent_remote, "")),
        parent_id,
        name: span.name.clone(),
        status: Status {
            status_code: status_code(span.status.as_ref().map_or(0, |s| s.code)).to_string(),
            description: span
                .status
                .as_ref()
                .map(|s| s.message.clone())
                .filter(|m| !m.is_empty()),
        },
        attributes: {
            let mut attributes = flatten_attributes(&span.attributes);
            crate::agl::call::expand(&mut attributes);
            attributes
        },
        events: span
            .events
            .iter()
            .map(|e| Event {
                name: e.name.clone(),
                attributes: flatten_attributes(&e.attributes),
                timestamp: nanos_to_seconds(e.time_unix_nano),
            })
            .collect(),
        links: span.links.iter().map(link).collect(),
        start_time: nanos_to_seconds(span.start_time_unix_nano),
        end_time: nanos_to_seconds(span.end_time_unix_nano),
        context: Some(context(
            &span.trace_id,
            &span.span_id,
            false,
            &span.trace_state,
        )),
        resource: resource.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    pub fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn arr(values: Vec<any_value::Value>) -> any_value::Value {
        any_value::Value::ArrayValue(ArrayValue {
            values: values
                .into_iter()
                .map(|v| AnyValue { value: Some(v) })
                .collect(),
        })
    }

    #[test]
    fn attributes_flatten_like_agl() {
        use any_value::Value::*;
        let attrs = vec![
            kv("s", s("x")),
            kv("i", IntValue(-3)),
            kv("d", DoubleValue(0.5)),
            kv("nan", DoubleValue(f64::NAN)),
            kv("b", BoolValue(true)),
            kv("bytes", BytesValue(vec![0xde, 0xad])),
            kv("list", arr(vec![s("a"), s("b")])),
            kv("mixed", arr(vec![s("a"), IntValue(1)])),
            kv(
                "map",
                KvlistValue(KeyValueList {
                    values: vec![kv("k", IntValue(1)), kv("deep", arr(vec![IntValue(2)]))],
                }),
            ),
            KeyValue {
                key: "empty".into(),
                value: None,
                ..Default::default()
            },
        ];
        let got = Value::Object(flatten_attributes(&attrs));
        assert_eq!(
            got,
            serde_json::json!({
                "s": "x", "i": -3, "d": 0.5, "nan": "nan", "b": true, "bytes": "dead",
                "list": ["a", "b"], "mixed.0": "a", "mixed.1": 1,
                "map.k": 1, "map.deep": [2]
            })
        );
    }

    #[test]
    fn span_attributes_override_resource_ids() {
        let res = vec![kv(ROLLOUT_ID, s("ro-res")), kv(ATTEMPT_ID, s("at-res"))];
        let span = vec![kv(ROLLOUT_ID, s("ro-span")), kv(SPAN_SEQUENCE_ID, s("7"))];
        let ids = SpanIds::of(&span, &res);
        assert_eq!(ids.rollout.as_deref(), Some("ro-span"));
        assert_eq!(ids.attempt.as_deref(), Some("at-res"));
        assert_eq!(ids.sequence, Some(7));
        let empty = SpanIds::of(&[kv(ROLLOUT_ID, s(""))], &[]);
        assert_eq!(empty.rollout, None);
    }

    #[test]
    fn span_maps_ids_times_status_and_parent() {
        let span = OtlpSpan {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            parent_span_id: vec![0x02; 8],
            flags: FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE,
            trace_state: "vendor=x, other=y".into(),
            name: "gen_ai".into(),
            start_time_unix_nano: 1_770_912_433_611_477_000,
            end_time_unix_nano: 1_770_912_433_611_486_000,
            status: Some(opentelemetry_proto::tonic::trace::v1::Status {
                message: "boom".into(),
                code: 2,
            }),
            ..Default::default()
        };
        let resource = Resource {
            attributes: Map::new(),
            schema_url: String::new(),
        };
        let agl = to_agl(&span, &resource, "ro-1", "at-1", 3);
        assert_eq!(agl.trace_id, "ab".repeat(16));
        assert_eq!(agl.parent_id.as_deref(), Some("0202020202020202"));
        assert!(agl.parent.as_ref().unwrap().is_remote);
        assert_eq!(agl.status.status_code, "ERROR");
        assert_eq!(agl.status.description.as_deref(), Some("boom"));
        assert!((agl.start_time.unwrap() - 1_770_912_433.611_477).abs() < 1e-6);
        let ctx = agl.context.unwrap();
        assert_eq!(ctx.trace_state["other"], "y");
        assert!(!ctx.is_remote);
    }
}
