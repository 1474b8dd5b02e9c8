//! Writes the generated part of the seed corpora (`fuzz/seeds.sh` runs it):
//! a few OTLP export requests covering the three conversation conventions,
//! nested attribute values, events, links and malformed ids, as HTTP bodies
//! (`otlp_http`), gRPC requests (`otlp_grpc`), protobuf (`agl_view`) and the
//! trace files the view builds from them (`export_read`); and the answers
//! of forward destinations (`forward_answers`) and of the OpenClaw gateway
//! (`gateway_answers`), in the shapes the clients and their tests know.

#[path = "../common/grpc_frame.rs"]
mod grpc_frame;
#[path = "../common/http_answer.rs"]
mod http_answer;
#[path = "../../tests/support/otlp.rs"]
mod otlp;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use grpc_frame::frame;
use http_answer::join;
use oclagl::agl::index::{summarize, Change, Index};
use oclagl::agl::view::build_trace_file;
use oclagl::store::Pos;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use otlp::{attr, request, s, span_between};
use prost::Message;
use serde_json::json;
use tonic_types::StatusExt;

fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, attributes: Vec<KeyValue>) -> Span {
    let start = 1_771_000_000_000_000_000 + id as u64 * 1_000_000;
    let (trace, parent) = ([trace; 16], parent.map(|p| [p; 8]));
    let times = (start, start + 500_000_000);
    span_between(trace, [id; 8], parent, name, attributes, times)
}

/// A collected rollout: AGL/OpenLLMetry messages, a tool call, a reward.
fn agl_rollout() -> ExportTraceServiceRequest {
    let mut root = span(
        1,
        1,
        None,
        "oclagl.rollout",
        vec![
            attr("agentlightning.rollout_id", s("ro-3f2a9c1b7d4e")),
            attr("agentlightning.attempt_id", s("at-9c1b7d4e")),
            attr("oclagl.task_input", s(r#"{"prompt":"What is 2+2?"}"#)),
            attr("oclagl.session_key", s("agent:main:main")),
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
            attr("gen_ai.request.model", s("gpt-4o-mini")),
            attr("gen_ai.prompt.0.role", s("system")),
            attr("gen_ai.prompt.0.content", s("You are terse.")),
            attr("gen_ai.prompt.1.role", s("user")),
            attr("gen_ai.prompt.1.content", s("What is 2+2?")),
            attr("gen_ai.completion.0.role", s("assistant")),
            attr("gen_ai.completion.0.content", s("")),
            attr("gen_ai.completion.0.tool_calls.0.id", s("call_1")),
            attr("gen_ai.completion.0.tool_calls.0.name", s("calc")),
            attr(
                "gen_ai.completion.0.tool_calls.0.arguments",
                s(r#"{"expr":"2+2"}"#),
            ),
            attr("gen_ai.request.functions.0.name", s("calc")),
            attr(
                "gen_ai.request.functions.0.parameters",
                s(r#"{"type":"object"}"#),
            ),
            attr("gen_ai.usage.prompt_tokens", Value::IntValue(12)),
            attr("gen_ai.usage.completion_tokens", Value::IntValue(3)),
        ],
    );
    let tool = span(
        1,
        3,
        Some(2),
        "tool",
        vec![
            attr("tool.name", s("calc")),
            attr("tool.parameters", s(r#"{"expr":"2+2"}"#)),
            attr("tool.call.id", s("call_1")),
        ],
    );
    let reward = span(
        1,
        4,
        Some(1),
        "agentlightning.annotation",
        vec![
            attr("agentlightning.reward.0.name", s("primary")),
            attr("agentlightning.reward.0.value", Value::DoubleValue(1.0)),
        ],
    );
    request(
        vec![attr("service.name", s("oclagl"))],
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
                    attr("role", s("user")),
                    attr(
                        "parts",
                        Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(Value::KvlistValue(KeyValueList {
                                    values: vec![
                                        attr("type", s("text")),
                                        attr("content", s("hi ✓")),
                                    ],
                                })),
                            }],
                        }),
                    ),
                ],
            })),
        }],
    });
    let mut root = span(
        2,
        1,
        None,
        "invoke_agent",
        vec![attr("session.id", s("s-1"))],
    );
    root.status = Some(Status {
        code: 2,
        message: "boom".into(),
    });
    root.events = vec![Event {
        time_unix_nano: 1_771_000_000_100_000_000,
        name: "exception".into(),
        attributes: vec![attr("exception.message", s("boom"))],
        ..Default::default()
    }];
    root.trace_state = "vendor=a,other=b".into();
    let mut chat = span(
        2,
        2,
        Some(1),
        "chat",
        vec![
            attr("gen_ai.input.messages", messages),
            attr(
                "gen_ai.output.messages",
                s(
                    r#"[{"role":"assistant","parts":[{"type":"text","content":"hello"}],"finish_reason":"stop"}]"#,
                ),
            ),
            attr(
                "gen_ai.system_instructions",
                s(r#"[{"type":"text","content":"be kind"}]"#),
            ),
            attr("gen_ai.response.model", s("m-1")),
            attr("bytes", Value::BytesValue(vec![0, 255])),
            attr("nan", Value::DoubleValue(f64::NAN)),
            attr(
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
        attributes: vec![attr("link.kind", s("follows"))],
        ..Default::default()
    }];
    request(vec![attr("service.name", s("openclaw"))], vec![root, chat])
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
            attr("llm.model_name", s("claude")),
            attr("llm.input_messages.0.message.role", s("user")),
            attr("llm.input_messages.0.message.content", s("list files")),
            attr("llm.output_messages.0.message.role", s("assistant")),
            attr(
                "llm.output_messages.0.message.tool_calls.0.tool_call.id",
                s("c1"),
            ),
            attr(
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name",
                s("ls"),
            ),
            attr(
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments",
                s("{}"),
            ),
            attr(
                "llm.tools.0.tool.json_schema",
                s(r#"{"type":"function","function":{"name":"ls","parameters":{}}}"#),
            ),
            attr("agentlightning.span_sequence_id", Value::IntValue(7)),
        ],
    );
    let mut bad_trace = span(4, 2, None, "bad", vec![]);
    bad_trace.trace_id = vec![0; 16];
    let mut bad_parent = span(3, 3, Some(1), "bad parent", vec![]);
    bad_parent.parent_span_id = vec![1, 2, 3];
    request(
        vec![attr("agentlightning.rollout_id", s("../../etc/passwd"))],
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

/// `otlp_grpc`: each request framed by the target (plain, gzip, zstd) and
/// as sent on the wire; a metrics and a logs export; and the framings a
/// client can get wrong (two messages, a length beyond the limit, an
/// encoding oclagl does not take). Mode bytes as fuzz_targets/otlp_grpc.rs
/// reads them.
fn otlp_grpc_seeds(dir: &Path, name: &str, proto: &[u8]) {
    let seed = |mode: u8, rest: &[u8]| [&[mode][..], rest].concat();
    write(dir, &format!("{name}-framed-by-target"), &seed(0x10, proto));
    write(dir, &format!("{name}-gzip-by-target"), &seed(0x14, proto));
    write(dir, &format!("{name}-zstd-by-target"), &seed(0x18, proto));
    write(
        dir,
        &format!("{name}-frame"),
        &seed(0x00, &frame(proto, None)),
    );
    write(
        dir,
        &format!("{name}-gzip-frame"),
        &seed(0x04, &frame(proto, Some("gzip"))),
    );
    if name != "agl" {
        return;
    }
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "gen_ai.client.token.usage".into(),
                    unit: "{token}".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: 1_771_000_000_000_000_000,
                            value: Some(number_data_point::Value::AsInt(15)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    write(
        dir,
        "metrics-framed-by-target",
        &seed(0x12, &metrics.encode_to_vec()),
    );
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_771_000_000_000_000_000,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(s("agent run started")),
                    }),
                    trace_id: vec![1; 16],
                    span_id: vec![1; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    write(
        dir,
        "logs-frame",
        &seed(0x03, &frame(&logs.encode_to_vec(), None)),
    );
    write(
        dir,
        "two-messages",
        &seed(0x00, &[frame(proto, None), frame(proto, None)].concat()),
    );
    let mut huge = frame(proto, None).to_vec();
    huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    write(dir, "length-beyond-limit", &seed(0x00, &huge));
    write(dir, "deflate-framed-by-target", &seed(0x1c, proto));
    // An empty group in an unknown field (99) before the spans: prost skips
    // it, forward::count_spans stopped at it and counted none.
    write(
        dir,
        "unknown-group-before-spans",
        &seed(0x10, &[&b"\x9b\x06\x9c\x06"[..], proto].concat()),
    );
}

/// `forward_answers`: OTLP/HTTP answers (mode 0), OTLP/gRPC answer
/// messages (1) and trailers (2, bit 2: the target base64-encodes the
/// details), AGL store answers (3, bits 2-3: the path); see
/// fuzz_targets/forward_answers.rs.
fn forward_seeds(dir: &Path) {
    let seed = |mode: u8, rest: &[u8]| [&[mode][..], rest].concat();
    let partial = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 2,
            error_message: "2 span(s) rejected: trace_id must be 16 bytes and span_id 8 bytes, not all zero; parent_span_id empty or 8 bytes".into(),
        }),
    }
    .encode_to_vec();
    write(dir, "http-200-empty", &seed(0, &join(200, None, b"")));
    write(
        dir,
        "http-200-partial",
        &seed(0, &join(200, None, &partial)),
    );
    write(
        dir,
        "http-400-text",
        &seed(
            0,
            &join(
                400,
                None,
                b"cannot decode the request body: protobuf: invalid wire type",
            ),
        ),
    );
    write(
        dir,
        "http-429-retry-after",
        &seed(0x10, &join(429, Some("3"), b"")),
    );
    write(
        dir,
        "http-503-html",
        &seed(
            0x30,
            &join(
                503,
                Some(" 120 "),
                b"<html><body><h1>503 Service Unavailable</h1></body></html>",
            ),
        ),
    );
    write(
        dir,
        "http-404-json",
        &seed(0, &join(404, None, br#"{"code":5,"message":"Not Found"}"#)),
    );
    write(dir, "grpc-message-empty", &seed(1, b""));
    write(dir, "grpc-message-partial", &seed(1, &partial));
    let trailers = |code: u8, message: &str, details: &[u8]| {
        [
            &[code, message.len() as u8][..],
            message.as_bytes(),
            details,
        ]
        .concat()
    };
    write(
        dir,
        "grpc-unavailable",
        &seed(2, &trailers(14, "the store cannot accept data now", b"")),
    );
    write(
        dir,
        "grpc-invalid-argument",
        &seed(
            2,
            &trailers(
                3,
                "cannot decode the request body: protobuf: buffer underflow",
                b"",
            ),
        ),
    );
    // What an oclagl receiver sends when it is busy.
    let busy = tonic::Status::with_error_details(
        tonic::Code::ResourceExhausted,
        "the server is busy; retry later",
        tonic_types::ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(1))),
    );
    write(
        dir,
        "grpc-busy-retry-info",
        &seed(0x26, &trailers(8, busy.message(), busy.details())),
    );
    let mut on_the_wire = http::HeaderMap::new();
    busy.add_header(&mut on_the_wire).expect("status headers");
    write(
        dir,
        "grpc-busy-details-as-sent",
        &seed(
            0x02,
            &trailers(
                8,
                "the%20server%20is%20busy%3B%20retry%20later",
                on_the_wire["grpc-status-details-bin"].as_bytes(),
            ),
        ),
    );
    // Found by the fuzzer: details that are not base64 (tonic panics on
    // them; Sender::send contains it, the target leaves them out).
    write(
        dir,
        "grpc-details-not-base64",
        b"\x02\x0e t\x02\x0e the sthe store ore cannot acccept datannot accept daa tnao noww",
    );
    // An Agent Lightning store's answers (agentlightning 0.3 models).
    let rollout = json!({
        "rollout_id": "ro-7f3c2a1b9e4d", "input": {"prompt": "What is 2+2?"},
        "start_time": 1771000000.25, "end_time": null, "mode": "train", "resources_id": null,
        "status": "queuing",
        "config": {"timeout_seconds": null, "unresponsive_seconds": null, "max_attempts": 1, "retry_condition": []},
        "metadata": {"oclagl.rollout_id": "ro-3f2a9c1b7d4e", "oclagl.attempt_id": "at-9c1b7d4e"},
        "attempt": {"rollout_id": "ro-7f3c2a1b9e4d", "attempt_id": "at-5d8e2f1a", "sequence_id": 1,
            "start_time": 1771000000.25, "end_time": null, "status": "preparing", "worker_id": null,
            "last_heartbeat_time": null, "metadata": null},
    });
    let json = |v: &serde_json::Value| serde_json::to_vec(v).expect("JSON");
    write(
        dir,
        "agl-rollout-created",
        &seed(0x03, &join(200, None, &json(&rollout))),
    );
    let span = json!({
        "rollout_id": "ro-7f3c2a1b9e4d", "attempt_id": "at-5d8e2f1a", "sequence_id": 1,
        "trace_id": "01010101010101010101010101010101", "span_id": "0202020202020202",
        "parent_id": "0101010101010101", "name": "gen_ai", "status": {"status_code": "OK", "description": null},
        "attributes": {"gen_ai.request.model": "gpt-4o-mini"}, "events": [], "links": [],
        "start_time": 1771000000.0, "end_time": 1771000000.5, "context": null, "parent": null, "resource": {"attributes": {}, "schema_url": ""},
    });
    write(
        dir,
        "agl-span-added",
        &seed(0x07, &join(200, None, &json(&span))),
    );
    let mut done = rollout.clone();
    done["status"] = json!("succeeded");
    write(
        dir,
        "agl-status-updated",
        &seed(0x0b, &join(200, None, &json(&done))),
    );
    write(
        dir,
        "agl-422-validation",
        &seed(
            0x03,
            &join(
                422,
                None,
                br#"{"detail":[{"type":"missing","loc":["body","input"],"msg":"Field required","input":{}}]}"#,
            ),
        ),
    );
    write(
        dir,
        "agl-404-attempt",
        &seed(
            0x0f,
            &join(404, None, br#"{"detail":"Attempt at-5d8e2f1a not found"}"#),
        ),
    );
    write(
        dir,
        "agl-500",
        &seed(0x07, &join(500, None, b"Internal Server Error")),
    );
}

/// `gateway_answers`: each client mode's answers (mode bytes as
/// fuzz_targets/gateway_answers.rs reads them).
fn gateway_seeds(dir: &Path) {
    let seed = |mode: u8, rest: &[u8]| [&[mode][..], rest].concat();
    let json = |v: serde_json::Value| serde_json::to_vec(&v).expect("JSON");
    // internal: tests/support/fake_fork.rs.
    write(
        dir,
        "internal-ok",
        &seed(
            0,
            &json(json!({
                "ok": true, "responseText": "echo: What is 2+2?", "runId": "run-k-1",
                "messages": [
                    {"role": "system", "content": "You are a helpful agent."},
                    {"role": "user", "content": "What is 2+2?"},
                    {"role": "assistant", "content": [{"type": "text", "text": "Let me "}, {"type": "text", "text": "check."}]},
                    {"role": "toolResult", "content": "prompts.txt"},
                    {"role": "assistant", "content": "echo: What is 2+2?"},
                ],
            })),
        ),
    );
    write(
        dir,
        "internal-failed",
        &seed(0, &json(json!({"ok": false, "error": "Gateway not ready"}))),
    );
    // openai: a chat completion.
    let completion = json!({
        "id": "chatcmpl-7", "object": "chat.completion", "created": 1_770_000_000, "model": "openclaw",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    });
    write(dir, "openai-completion", &seed(1, &json(completion)));
    write(
        dir,
        "openai-tool-calls",
        &seed(
            1,
            &json(json!({
                "id": "chatcmpl-8", "object": "chat.completion", "model": "openclaw",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]},
                    "finish_reason": "tool_calls"}],
            })),
        ),
    );
    // cli and ws: the `agent` method's result.
    let result = json!({
        "runId": "run-k-1", "status": "ok", "summary": "completed",
        "result": {
            "payloads": [{"text": "4", "mediaUrl": null}, {"text": "(from the calculator)"}],
            "meta": {"durationMs": 1234, "agentMeta": {"sessionId": "s-1", "provider": "openai",
                "model": "gpt-4o-mini", "usage": {"input": 12, "output": 3, "total": 15}}},
        },
    });
    let mut printed = b"[agents] running agent main\n".to_vec();
    printed.extend(serde_json::to_vec_pretty(&result).expect("JSON"));
    printed.push(b'\n');
    write(dir, "cli-ok", &seed(2, &printed));
    write(
        dir,
        "cli-timeout",
        &seed(
            2,
            &json(
                json!({"runId": "run-k-2", "status": "timeout", "error": "agent did not finish in 600s"}),
            ),
        ),
    );
    let frames = |frames: &[serde_json::Value]| {
        frames
            .iter()
            .map(|f| serde_json::to_string(f).expect("JSON"))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    };
    let challenge = json!({"type": "event", "event": "connect.challenge",
        "payload": {"nonce": "3b0f6c1e-9d2a-4f7e-8c55-1a2b3c4d5e6f", "ts": 1_771_000_000_000u64}});
    let hello = json!({"type": "res", "id": "connect", "ok": true, "payload": {"type": "hello-ok", "protocol": 4,
        "server": {"version": "2026.9.6", "connId": "c-1"},
        "features": {"methods": ["agent"], "events": ["agent", "tick"]}}});
    let accepted = json!({"type": "res", "id": "agent", "ok": true,
        "payload": {"runId": "run-k-1", "status": "accepted", "acceptedAt": 1_771_000_000_100u64}});
    write(
        dir,
        "ws-run",
        &seed(
            3,
            &frames(&[
                challenge.clone(),
                hello.clone(),
                accepted,
                json!({"type": "event", "event": "agent", "seq": 3,
                "payload": {"runId": "run-k-1", "stream": "assistant", "data": {"text": "4"}}}),
                json!({"type": "event", "event": "tick", "payload": {"ts": 1_771_000_001_000u64}}),
                json!({"type": "res", "id": "agent", "ok": true, "payload": result}),
            ]),
        ),
    );
    write(
        dir,
        "ws-unauthorized",
        &seed(
            3,
            &frames(&[
                challenge.clone(),
                json!({"type": "res", "id": "connect", "ok": false,
                "error": {"code": "INVALID_REQUEST", "message": "unauthorized: gateway token mismatch"}}),
            ]),
        ),
    );
    write(
        dir,
        "ws-unavailable",
        &seed(
            3,
            &frames(&[
                challenge,
                hello,
                json!({"type": "res", "id": "agent", "ok": false,
                "error": {"code": "UNAVAILABLE", "message": "gateway is draining", "retryable": true, "retryAfterMs": 1500}}),
            ]),
        ),
    );
    // HTTP errors of the internal and openai modes.
    write(
        dir,
        "status-503-retry-after",
        &seed(
            4,
            &join(
                503,
                Some("0"),
                &json(json!({"ok": false, "error": "Gateway not ready"})),
            ),
        ),
    );
    write(
        dir,
        "status-429-date",
        &seed(4, &join(429, Some("Wed, 21 Oct 2026 07:28:00 GMT"), b"")),
    );
    write(
        dir,
        "status-400-openai-error",
        &seed(
            4,
            &join(
                400,
                None,
                &json(json!({"error": {
            "message": "messages must not be empty", "type": "invalid_request_error", "param": "messages", "code": null}})),
            ),
        ),
    );
    write(
        dir,
        "status-401",
        &seed(4, &join(401, None, b"Unauthorized")),
    );
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
        otlp_grpc_seeds(&root.join("otlp_grpc"), name, &proto);

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
    forward_seeds(&root.join("forward_answers"));
    gateway_seeds(&root.join("gateway_answers"));
    credentials_seed(&root.join("export_read"));
    agl_v1_seed(&root.join("export_read"));
}

/// `export_read`: an AGL v1 rollout and its events (two model requests as
/// its proxy records them, one with a tool call; a reward), as
/// `export-sft --source <AGL URL>` reads them.
fn agl_v1_seed(dir: &Path) {
    let request = |messages: serde_json::Value| {
        serde_json::json!({"model": "mock-1", "messages": messages, "temperature": 1.0,
            "return_token_ids": true, "logprobs": true,
            "tools": [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}]})
    };
    let asked = serde_json::json!([{"role": "system", "content": "be brief"},
        {"role": "user", "content": "list the folder"}]);
    let call = serde_json::json!({"id": "call_1", "type": "function",
        "function": {"name": "ls", "arguments": "{\"path\":\".\"}"}});
    let answered = serde_json::json!([{"role": "system", "content": "be brief"},
        {"role": "user", "content": "list the folder"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"}]);
    let response = |message: serde_json::Value, finish: &str| {
        serde_json::json!({"id": "c-1", "model": "mock-1", "prompt_token_ids": [1, 2, 3],
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "token_ids": [4, 5],
                "logprobs": {"content": [{"token": "a", "logprob": -0.5}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
    };
    let event = |t: f64, request: serde_json::Value, response: serde_json::Value| {
        serde_json::json!({"event_type": "model_request", "rollout_id": "r-1", "attempt_id": "0",
            "timestamp": t, "data": {"model": "mock-1", "model_version": 1, "request": request,
            "response": response, "latency_ms": 120.5, "http_status": 200, "status": "ok",
            "retry_count": 0, "finish_reason": "stop"}})
    };
    let answers = serde_json::json!({
        "rollout": {"rollout_id": "r-1", "input": {"prompt": "list the folder", "data_id": "t-1"},
            "is_train": true, "config": {"timeout_seconds": 3600}, "metadata": {},
            "status": {"state": "succeeded", "last_attempt_id": "0", "version": 3,
                "created_at": 1_770_000_000.0, "updated_at": 1_770_000_002.0}},
        "events": [
            event(1_770_000_000.5, request(asked), response(serde_json::json!({"role": "assistant", "content": null, "tool_calls": [call]}), "tool_calls")),
            event(1_770_000_001.5, request(answered), response(serde_json::json!({"role": "assistant", "content": "a.txt"}), "stop")),
            {"event_type": "reward", "rollout_id": "r-1", "attempt_id": "0", "timestamp": 1_770_000_002.0,
             "data": {"value": 1.0, "source": "agent"}},
        ],
    });
    write(
        dir,
        "agl-v1-rollout.json",
        &serde_json::to_vec_pretty(&answers).expect("serialises"),
    );
}

/// `export_read`: a trace file whose conversation holds made-up credentials
/// of several kinds (in a user message, JSON-text tool arguments with
/// escapes, a tool result), an e-mail address and a phone number, so the
/// fuzzer starts from inputs that reach every step of redaction.
fn credentials_seed(dir: &Path) {
    let arguments = serde_json::json!({
        "cmd": "gh auth login --with-token ghp_Yww42sgX7YUVZk0VEdFMW4SNsGVyxLEnV6od",
        "env": {"API_KEY": "8f3kL0qZ7mW2xR9tB4vN", "DATABASE_URL": "postgres://app:mzEGXIleiq6h9jXY9q@db:5432/prod"},
        "key_file": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5eJjO6TgGMUbKoAoGCCqGSM49\n-----END EC PRIVATE KEY-----",
    })
    .to_string();
    let attributes = serde_json::json!({
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "deploy with AKIAPGRYGR6KG2JMO37K, mail ada@example.org or call +44 20 7946 0958",
        "gen_ai.prompt.1.role": "assistant",
        "gen_ai.prompt.1.tool_calls.0.id": "call_1",
        "gen_ai.prompt.1.tool_calls.0.name": "exec",
        "gen_ai.prompt.1.tool_calls.0.arguments": arguments,
        "gen_ai.prompt.2.role": "toolResult",
        "gen_ai.prompt.2.tool_call_id": "call_1",
        "gen_ai.prompt.2.content": "Authorization: Bearer TzPKV-x1UmbOSvg2zPSRXXhrSJWNyFxPXA_omy2l\nAKIAPGRYGR6KG2JMO37K",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Deployed.",
        "gen_ai.request.model": "m-1",
    });
    let span = |n: u64, parent: Option<&str>, name: &str, attributes: serde_json::Value| {
        let id = format!("{n:016x}");
        serde_json::json!({
            "rollout_id": "", "attempt_id": "", "sequence_id": n,
            "trace_id": "b8a6b7ce4da026f9dd81d8d248a40d85", "span_id": id, "parent_id": parent,
            "name": name, "status": {"status_code": "OK", "description": null},
            "attributes": attributes, "events": [], "links": [],
            "start_time": 1_770_000_000.0 + n as f64, "end_time": 1_770_000_000.5 + n as f64,
            "context": {"trace_id": "b8a6b7ce4da026f9dd81d8d248a40d85", "span_id": id,
                        "is_remote": false, "trace_state": {}},
            "parent": null, "resource": {"attributes": {}, "schema_url": ""},
        })
    };
    let spans = [
        span(
            1,
            None,
            "oclagl.rollout",
            serde_json::json!({"oclagl.session_key": "agent:main:s1"}),
        ),
        span(2, Some("0000000000000001"), "gen_ai", attributes),
    ];
    let file = serde_json::json!({
        "rollout_id": "ro-credentials", "attempt_id": "at-00000001", "status": "succeeded",
        "task_input": null, "span_count": spans.len(), "spans": spans,
    });
    let json = serde_json::to_vec_pretty(&file).expect("serialises");
    write(dir, "credentials.json", &json);
}
