//! OTLP export requests for tests, benchmarks and fuzz seeds: one copy,
//! used by the black-box tests (through `support`), the benchmarks' load
//! generator (`benches/common/load.rs`) and the fuzz seed writer
//! (`fuzz/examples/seeds.rs`), which include this file by path.
#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// A string value.
pub fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// An attribute of any value.
pub fn attr(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    attr(key, s(value))
}

/// A span with the given ids and times, and nothing else set.
pub fn span_between(
    trace: [u8; 16],
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &str,
    attributes: Vec<KeyValue>,
    (start, end): (u64, u64),
) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        ..Default::default()
    }
}

/// A finished internal span with status OK (parent `None` for a root); it
/// starts `id` nanoseconds after a fixed instant and lasts a second.
pub fn span(
    trace: [u8; 16],
    id: u64,
    parent: Option<u64>,
    name: &str,
    attrs: Vec<KeyValue>,
) -> Span {
    let start = 1_770_000_000_000_000_000 + id;
    Span {
        kind: 1,
        status: Some(Status {
            message: String::new(),
            code: 1,
        }),
        ..span_between(
            trace,
            id.to_be_bytes(),
            parent.map(u64::to_be_bytes),
            name,
            attrs,
            (start, start + 1_000_000_000),
        )
    }
}

/// One request: `spans` under one resource and one scope.
pub fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
