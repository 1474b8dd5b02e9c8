//! Writes the generated part of the seed corpora (`fuzz/seeds.sh` runs it):
//! a few OTLP export requests covering the three conversation conventions,
//! nested attribute values, events, links and malformed ids, as HTTP bodies
//! (`otlp_http`), protobuf (`agl_view`) and the trace files the view builds
//! from them (`export_read`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use oclagl::agl::index::{summarize, Change, Index};
use oclagl::agl::view::build_trace_file;
use oclagl::store::Pos;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: 1_771_000_000_000_000_000 + id as u64 * 1_000_000,
        end_time_unix_nano: 1_771_000_000_500_000_000 + id as u64 * 1_000_000,
        attributes,
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
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

/// A collected rollout: AGL/OpenLLMetry messages, a tool call, a reward.
fn agl_rollout() -> ExportTraceServiceRequest {
    let mut root = span(
        1,
        1,
        None,
        "oclagl.rollout",
        vec![
            kv("agentlightning.rollout_id", s("ro-3f2a9c1b7d4e")),
            kv("agentlightning.attempt_id", s("at-9c1b7d4e")),
            kv("oclagl.task_input", s(r#"{"prompt":"What is 2+2?"}"#)),
            kv("oclagl.session_key", s("agent:main:main")),
        ],
    );
    root.status = Some(Status {
        code: 1,
        message: String::new(),
    });
    let llm = span(
        1,
        2,
        Some(1),
        "gen_ai",
        vec![
            kv("gen_ai.request.model", s("gpt-4o-mini")),
            kv("gen_ai.prompt.0.role", s("system")),
            kv("gen_ai.prompt.0.content", s("You are terse.")),
            kv("gen_ai.prompt.1.role", s("user")),
            kv("gen_ai.prompt.1.content", s("What is 2+2?")),
            kv("gen_ai.completion.0.role", s("assistant")),
            kv("gen_ai.completion.0.content", s("")),
            kv("gen_ai.completion.0.tool_calls.0.id", s("call_1")),
            kv("gen_ai.completion.0.tool_calls.0.name", s("calc")),
            kv(
                "gen_ai.completion.0.tool_calls.0.arguments",
                s(r#"{"expr":"2+2"}"#),
            ),
            kv("gen_ai.request.functions.0.name", s("calc")),
            kv(
                "gen_ai.request.functions.0.parameters",
                s(r#"{"type":"object"}"#),
            ),
            kv("gen_ai.usage.prompt_tokens", Value::IntValue(12)),
            kv("gen_ai.usage.completion_tokens", Value::IntValue(3)),
        ],
    );
    let tool = span(
        1,
        3,
        Some(2),
        "tool",
        vec![
            kv("tool.name", s("calc")),
            kv("tool.parameters", s(r#"{"expr":"2+2"}"#)),
            kv("tool.call.id", s("call_1")),
        ],
    );
    let reward = span(
        1,
        4,
        Some(1),
        "agentlightning.annotation",
        vec![
            kv("agentlightning.reward.0.name", s("primary")),
            kv("agentlightning.reward.0.value", Value::DoubleValue(1.0)),
        ],
    );
    request(
        vec![kv("service.name", s("oclagl"))],
        vec![root, llm, tool, reward],
    )
}

/// A trace that names no rollout, in the OTel GenAI convention, with
/// structured values, events, links and a failed root.
fn genai_trace() -> ExportTraceServiceRequest {
    let messages = Value::ArrayValue(ArrayValue {
        values: vec![AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: vec![
                    kv("role", s("user")),
                    kv(
                        "parts",
                        Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(Value::KvlistValue(KeyValueList {
                                    values: vec![kv("type", s("text")), kv("content", s("hi ✓"))],
                                })),
                            }],
                        }),
                    ),
                ],
            })),
        }],
    });
    let mut root = span(2, 1, None, "invoke_agent", vec![kv("session.id", s("s-1"))]);
    root.status = Some(Status {
        code: 2,
        message: "boom".into(),
    });
    root.events = vec![Event {
        time_unix_nano: 1_771_000_000_100_000_000,
        name: "exception".into(),
        attributes: vec![kv("exception.message", s("boom"))],
        ..Default::default()
    }];
    root.trace_state = "vendor=a,other=b".into();
    let mut chat = span(
        2,
        2,
        Some(1),
        "chat",
        vec![
            kv("gen_ai.input.messages", messages),
            kv(
                "gen_ai.output.messages",
                s(
                    r#"[{"role":"assistant","parts":[{"type":"text","content":"hello"}],"finish_reason":"stop"}]"#,
                ),
            ),
            kv(
                "gen_ai.system_instructions",
                s(r#"[{"type":"text","content":"be kind"}]"#),
            ),
            kv("gen_ai.response.model", s("m-1")),
            kv("bytes", Value::BytesValue(vec![0, 255])),
            kv("nan", Value::DoubleValue(f64::NAN)),
            kv(
                "mixed",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(Value::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(s("x")),
                        },
                    ],
                }),
            ),
        ],
    );
    chat.flags = 0x300;
    chat.links = vec![Link {
        trace_id: vec![9; 16],
        span_id: vec![9; 8],
        trace_state: "k=v".into(),
        attributes: vec![kv("link.kind", s("follows"))],
        ..Default::default()
    }];
    request(vec![kv("service.name", s("openclaw"))], vec![root, chat])
}

/// OpenInference messages under a resource-level rollout id, plus spans with
/// malformed ids (dropped by validation).
fn openinference_rollout() -> ExportTraceServiceRequest {
    let chat = span(
        3,
        1,
        None,
        "llm",
        vec![
            kv("llm.model_name", s("claude")),
            kv("llm.input_messages.0.message.role", s("user")),
            kv("llm.input_messages.0.message.content", s("list files")),
            kv("llm.output_messages.0.message.role", s("assistant")),
            kv(
                "llm.output_messages.0.message.tool_calls.0.tool_call.id",
                s("c1"),
            ),
            kv(
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name",
                s("ls"),
            ),
            kv(
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments",
                s("{}"),
            ),
            kv(
                "llm.tools.0.tool.json_schema",
                s(r#"{"type":"function","function":{"name":"ls","parameters":{}}}"#),
            ),
            kv("agentlightning.span_sequence_id", Value::IntValue(7)),
        ],
    );
    let mut bad_trace = span(4, 2, None, "bad", vec![]);
    bad_trace.trace_id = vec![0; 16];
    let mut bad_parent = span(3, 3, Some(1), "bad parent", vec![]);
    bad_parent.parent_span_id = vec![1, 2, 3];
    request(
        vec![kv("agentlightning.rollout_id", s("../../etc/passwd"))],
        vec![chat, bad_trace, bad_parent],
    )
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create corpus folder");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let cases = [
        ("agl", agl_rollout()),
        ("genai", genai_trace()),
        ("openinference", openinference_rollout()),
    ];
    for (name, req) in &cases {
        let proto = req.encode_to_vec();
        let json = serde_json::to_vec(req).expect("OTLP/JSON");
        // Mode bytes as fuzz_targets/otlp_http.rs reads them.
        let http = root.join("otlp_http");
        write(
            &http,
            &format!("{name}-protobuf"),
            &[&[0u8][..], &proto].concat(),
        );
        write(
            &http,
            &format!("{name}-json"),
            &[&[1u8][..], &json].concat(),
        );
        write(
            &http,
            &format!("{name}-gzip"),
            &[&[0x04u8][..], &gzip(&proto)].concat(),
        );
        write(
            &http,
            &format!("{name}-json-gzipped-by-target"),
            &[&[0x15u8][..], &json].concat(),
        );
        write(&root.join("agl_view"), name, &proto);

        let mut index = Index::default();
        let mut changes = Vec::new();
        let pos = Pos {
            segment: 1,
            offset: 0,
        };
        index.observe(
            pos,
            1_771_000_000_000_000_000,
            &summarize(req),
            &mut changes,
        );
        let requests = [Arc::new(req.clone())];
        for change in changes {
            if let Change::Touched(id) = change {
                let rollout = index.get(&id).expect("indexed");
                let file = build_trace_file(&id, rollout, &requests);
                let json = serde_json::to_vec_pretty(&file).expect("serialises");
                write(
                    &root.join("export_read"),
                    &format!("{name}-view.json"),
                    &json,
                );
            }
        }
    }
}
