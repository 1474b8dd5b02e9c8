//! One imported run as the spans of a rollout, in the shapes the rest of
//! oclagl already reads: a root `oclagl.rollout` span (AGL's ids, the task
//! input, the session key, status, timing) and, per model call, the LLM
//! proxy's conversation span ([`crate::ingest::proxy::span::Call`]) holding
//! the call as Chat Completions request and response bodies rebuilt from the
//! record, so trace files, `ls`/`show`, `export-sft`, rewards and forwarding
//! treat an imported call like a proxied one. Ids derive from the session
//! and run ids, so a run imported twice is the same rollout.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status, Span, Status};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::bundle::{Run, RunStatus};
use crate::conversation::openai::{parse_budget, Api};
use crate::ingest::proxy::span::{export_of, kv, text, Call, Captured, End};
use crate::rollout::Task;
use crate::semconv::{ATTEMPT_ID, ROLLOUT_ID, SESSION_KEY, TASK_INPUT};

/// The `oclagl.mode` of an imported rollout.
pub const MODE: &str = "import";
/// Root-span attribute naming the bundle or file a rollout came from.
pub const SOURCE: &str = "oclagl.import.source";
/// Root-span attribute listing what the record did not hold whole
/// (`system_prompt`, `tools`), so a row's lack is visible per rollout.
pub const LACKS: &str = "oclagl.import.lacks";
/// What the spans of imported calls name as their upstream.
pub const UPSTREAM: &str = "openclaw-trajectory";

/// A run's ids: trace, root span, rollout and attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// The rollout's trace.
    pub trace_id: [u8; 16],
    /// Its root span.
    pub root: [u8; 8],
    /// `ro-` + 12 hex.
    pub rollout_id: String,
    /// `at-` + 8 hex.
    pub attempt_id: String,
    seed: [u8; 32],
}

impl Ids {
    /// The ids of run `run_id` of session `session_id`: the same for the
    /// same run, whatever bundle it is read from.
    pub fn of(session_id: &str, run_id: &str) -> Ids {
        let seed: [u8; 32] = Sha256::new()
            .chain_update(b"oclagl-import\0")
            .chain_update(session_id.as_bytes())
            .chain_update(b"\0")
            .chain_update(run_id.as_bytes())
            .finalize()
            .into();
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(&seed[..16]);
        trace_id[0] |= 1;
        let mut root = [0u8; 8];
        root.copy_from_slice(&seed[16..24]);
        root[0] |= 1;
        Ids {
            trace_id,
            root,
            rollout_id: format!("ro-{}", hex::encode(&seed[24..30])),
            attempt_id: format!("at-{}", hex::encode(&seed[28..32])),
            seed,
        }
    }

    /// The span id of the run's `n`th model call (never the root's).
    fn call(&self, n: usize) -> [u8; 8] {
        let h = Sha256::new()
            .chain_update(self.seed)
            .chain_update((n as u64).to_le_bytes())
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&h[..8]);
        id[0] |= 1;
        id
    }
}

/// The text of OpenClaw content: a string, or the text of its `text` blocks.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            (!texts.is_empty()).then(|| texts.concat())
        }
        _ => None,
    }
}

/// An OpenClaw transcript message as an OpenAI chat message.
pub fn openai_message(m: &Value) -> Option<Value> {
    let content = content_text(&m["content"]);
    Some(match m["role"].as_str()? {
        "user" => json!({"role": "user", "content": content.unwrap_or_default()}),
        "system" => json!({"role": "system", "content": content.unwrap_or_default()}),
        "assistant" => {
            let calls: Vec<Value> = m["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["type"] == "toolCall")
                .map(|b| {
                    let arguments = match &b["arguments"] {
                        Value::String(s) => s.clone(),
                        Value::Null => "{}".into(),
                        other => other.to_string(),
                    };
                    json!({"id": b["id"], "type": "function",
                        "function": {"name": b["name"], "arguments": arguments}})
                })
                .collect();
            let mut out = Map::new();
            out.insert("role".into(), json!("assistant"));
            out.insert("content".into(), content.map_or(Value::Null, Value::String));
            if !calls.is_empty() {
                out.insert("tool_calls".into(), Value::Array(calls));
            }
            Value::Object(out)
        }
        "toolResult" | "tool" => json!({"role": "tool",
            "tool_call_id": m["toolCallId"], "content": content.unwrap_or_default()}),
        _ => return None,
    })
}

/// A tool definition of the record as an OpenAI `tools` entry.
fn openai_tool(t: &Value) -> Value {
    let mut function = Map::new();
    for key in ["name", "description", "parameters"] {
        if let Some(v) = t.get(key) {
            function.insert(key.into(), v.clone());
        }
    }
    json!({"type": "function", "function": function})
}

/// OpenAI's `finish_reason` for OpenClaw's `stopReason`.
fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("toolUse") => "tool_calls",
        Some("length") => "length",
        _ => "stop",
    }
}

/// The request body of a call: the system prompt, the conversation before
/// the answer, the tools.
fn request_body(run: &Run, before: &[&Value], model: &str) -> Value {
    let mut messages = Vec::with_capacity(before.len() + 1);
    if let Some(s) = &run.system_prompt {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.extend(before.iter().filter_map(|m| openai_message(m)));
    let mut body = json!({"model": model, "messages": messages});
    if !run.tools.is_empty() {
        body["tools"] = Value::Array(run.tools.iter().map(openai_tool).collect());
    }
    body
}

/// The response body of a call: the answer, its finish reason, its usage.
fn response_body(answer: &Value, model: &str) -> Value {
    let message = openai_message(answer).unwrap_or_else(|| json!({"role": "assistant"}));
    let usage = &answer["usage"];
    let mut body = json!({"object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": message,
            "finish_reason": finish_reason(answer["stopReason"].as_str())}]});
    if let Some(id) = answer["responseId"].as_str() {
        body["id"] = json!(id);
    }
    if usage.is_object() {
        let input = usage["input"].as_u64().unwrap_or(0);
        let cached = usage["cacheRead"].as_u64().unwrap_or(0);
        let output = usage["output"].as_u64().unwrap_or(0);
        let total = usage["totalTokens"]
            .as_u64()
            .unwrap_or(input + cached + output);
        body["usage"] = json!({"prompt_tokens": input + cached, "completion_tokens": output,
            "total_tokens": total, "prompt_tokens_details": {"cached_tokens": cached}});
    }
    body
}

/// The model call spans of a run: one per assistant message.
fn calls(run: &Run, ids: &Ids) -> Vec<Call> {
    let all: Vec<&Value> = run.history.iter().chain(&run.messages).collect();
    let offset = run.history.len();
    let mut out = Vec::new();
    let mut previous = run.start_unix_nano;
    for (i, m) in run.messages.iter().enumerate() {
        let at = m["timestamp"]
            .as_u64()
            .map(|ms| ms.saturating_mul(1_000_000))
            .filter(|&t| {
                t >= run.start_unix_nano && t <= run.end_unix_nano.max(run.start_unix_nano)
            })
            .unwrap_or(previous);
        if m["role"] != "assistant" {
            previous = at;
            continue;
        }
        let model = m["model"]
            .as_str()
            .or(run.model.as_deref())
            .unwrap_or("unknown")
            .to_string();
        let request = request_body(run, &all[..offset + i], &model);
        let mut call = Call::begin(Api::Chat, ids.trace_id, ids.call(out.len()), previous);
        call.parent_span_id = Some(ids.root);
        call.end_unix_nano = at.max(previous);
        call.upstream = match &run.provider {
            Some(p) => format!("{UPSTREAM}:{p}"),
            None => UPSTREAM.into(),
        };
        call.path = "/v1/chat/completions".into();
        call.request = Captured {
            bytes: request.to_string().into_bytes(),
            truncated: false,
        };
        call.end = End::Complete;
        if m["stopReason"] == "error" {
            let status = m["errorCode"]
                .as_str()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            call.status = Some(status);
            call.response = Captured {
                bytes: m["errorBody"]
                    .as_str()
                    .or(m["errorMessage"].as_str())
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec(),
                truncated: false,
            };
        } else {
            call.status = Some(200);
            call.response = Captured {
                bytes: response_body(m, &model).to_string().into_bytes(),
                truncated: false,
            };
        }
        previous = call.end_unix_nano;
        out.push(call);
    }
    out
}

/// The export holding run `run`'s rollout: its root span, its model calls
/// and the reply.
pub fn export(run: &Run) -> ExportTraceServiceRequest {
    let ids = Ids::of(&run.session_id, &run.run_id);
    let task = Task {
        prompt: run.prompt.clone(),
        session: run.session_key.clone(),
        ..Task::default()
    };
    let mut attributes = vec![
        kv(ROLLOUT_ID, text(ids.rollout_id.clone())),
        kv(ATTEMPT_ID, text(ids.attempt_id.clone())),
        kv(
            TASK_INPUT,
            text(serde_json::to_string(&task).unwrap_or_default()),
        ),
        kv("oclagl.prompt", text(run.prompt.clone())),
        kv("oclagl.mode", text(MODE)),
        kv("oclagl.run_id", text(run.run_id.clone())),
        kv("oclagl.session_id", text(run.session_id.clone())),
        kv(SOURCE, text(run.source.display().to_string())),
    ];
    if let Some(key) = &run.session_key {
        attributes.push(kv(SESSION_KEY, text(key.clone())));
    }
    let lacks: Vec<AnyValue> = [
        ("system_prompt", run.system_prompt.is_none()),
        ("tools", run.tools.is_empty()),
    ]
    .into_iter()
    .filter(|(_, lacking)| *lacking)
    .map(|(what, _)| AnyValue {
        value: Some(text(what)),
    })
    .collect();
    if !lacks.is_empty() {
        attributes.push(kv(
            LACKS,
            any_value::Value::ArrayValue(ArrayValue { values: lacks }),
        ));
    }
    let status = match &run.status {
        RunStatus::Succeeded => Status {
            code: status::StatusCode::Ok as i32,
            message: String::new(),
        },
        RunStatus::Failed(why) => Status {
            code: status::StatusCode::Error as i32,
            message: why.clone(),
        },
    };
    let mut spans = vec![Span {
        trace_id: ids.trace_id.to_vec(),
        span_id: ids.root.to_vec(),
        name: "oclagl.rollout".into(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: run.start_unix_nano,
        end_time_unix_nano: run.end_unix_nano,
        attributes,
        status: Some(status),
        ..Default::default()
    }];
    let reply = run
        .messages
        .iter()
        .rev()
        .filter(|m| m["role"] == "assistant")
        .find_map(|m| content_text(&m["content"]));
    if let (RunStatus::Succeeded, Some(reply)) = (&run.status, reply) {
        let mut id = ids.call(usize::MAX);
        id[1] ^= 0xa5;
        spans.push(Span {
            trace_id: ids.trace_id.to_vec(),
            span_id: id.to_vec(),
            parent_span_id: ids.root.to_vec(),
            name: "agentlightning.message".into(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: run.end_unix_nano,
            end_time_unix_nano: run.end_unix_nano,
            attributes: vec![kv("agentlightning.message.body", text(reply))],
            ..Default::default()
        });
    }
    for call in calls(run, &ids) {
        let budget = parse_budget(call.request.bytes.len() + call.response.bytes.len());
        let (export, _) = call.record(budget);
        spans.extend(
            export
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans),
        );
    }
    export_of(spans, "oclagl.import")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agl::span::flatten_attributes;
    use crate::conversation::agl;
    use std::path::PathBuf;

    fn run() -> Run {
        Run {
            source: PathBuf::from("b"),
            session_id: "s".into(),
            session_key: Some("agent:main:k".into()),
            run_id: "r".into(),
            prompt: "list".into(),
            status: RunStatus::Succeeded,
            start_unix_nano: 1_000_000_000,
            end_unix_nano: 5_000_000_000,
            system_prompt: Some("sys".into()),
            tools: vec![
                json!({"name": "ls", "description": "list", "parameters": {"type": "object"}}),
            ],
            history: vec![],
            messages: vec![
                json!({"role": "user", "content": [{"type": "text", "text": "list"}], "timestamp": 1000}),
                json!({"role": "assistant", "content": [{"type": "toolCall", "id": "c1", "name": "ls", "arguments": {"path": "."}}],
                    "model": "m", "stopReason": "toolUse", "responseId": "x1", "timestamp": 2000,
                    "usage": {"input": 7, "output": 2, "cacheRead": 0, "totalTokens": 9}}),
                json!({"role": "toolResult", "toolCallId": "c1", "content": [{"type": "text", "text": "a b"}], "timestamp": 3000}),
                json!({"role": "assistant", "content": [{"type": "text", "text": "done"}], "model": "m",
                    "stopReason": "stop", "timestamp": 4000}),
            ],
            provider: Some("p".into()),
            model: Some("m".into()),
        }
    }

    #[test]
    fn ids_depend_on_session_and_run_only() {
        assert_eq!(Ids::of("s", "r"), Ids::of("s", "r"));
        assert_ne!(Ids::of("s", "r").rollout_id, Ids::of("s", "r2").rollout_id);
        assert_ne!(Ids::of("s", "r").trace_id, Ids::of("s2", "r").trace_id);
        let ids = Ids::of("s", "r");
        assert_ne!(ids.call(0), ids.root);
        assert_ne!(ids.call(0), ids.call(1));
    }

    #[test]
    fn each_answer_is_a_proxy_shaped_call_the_trace_file_reads() {
        let export = export(&run());
        assert_eq!(export, super::export(&run()), "deterministic");
        let spans = &export.resource_spans[0].scope_spans[0].spans;
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "oclagl.rollout",
                "agentlightning.message",
                "chat m",
                "tool_call ls",
                "chat m"
            ]
        );
        let root = flatten_attributes(&spans[0].attributes);
        assert_eq!(root[SESSION_KEY], "agent:main:k");
        assert_eq!(root["oclagl.mode"], "import");
        assert!(!root.contains_key(LACKS), "the run has both");
        let second = flatten_attributes(&spans[4].attributes);
        let mut expanded = second.clone();
        crate::agl::call::expand(&mut expanded);
        let read = agl::read(&expanded, &[]).unwrap();
        let roles: Vec<&str> = read.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "assistant"]);
        assert_eq!(read.messages[2].tool_calls[0].id.as_deref(), Some("c1"));
        assert_eq!(
            read.messages[2].tool_calls[0].arguments_text(),
            "{\"path\":\".\"}"
        );
        assert_eq!(read.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(read.messages[4].content.as_deref(), Some("done"));
        assert_eq!(read.tools[0].name, "ls");
        let first = flatten_attributes(&spans[2].attributes);
        assert_eq!(first["gen_ai.usage.input_tokens"], 7);
        assert_eq!(first["gen_ai.response.id"], "x1");
        assert_eq!(spans[2].parent_span_id, spans[0].span_id);
        assert_eq!(spans[2].start_time_unix_nano, 1_000_000_000);
        assert_eq!(spans[2].end_time_unix_nano, 2_000_000_000);
    }

    #[test]
    fn a_failed_call_is_an_error_span_and_a_failed_root() {
        let mut r = run();
        r.messages.truncate(1);
        r.messages.push(
            json!({"role": "assistant", "content": [], "stopReason": "error",
            "errorMessage": "500 boom", "errorCode": "500", "errorBody": "{\"message\":\"boom\"}"}),
        );
        r.status = RunStatus::Failed("500 boom".into());
        r.system_prompt = None;
        r.tools.clear();
        let export = export(&r);
        let spans = &export.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 2, "root and the call, no reply");
        assert_eq!(spans[0].status.as_ref().unwrap().message, "500 boom");
        let root = flatten_attributes(&spans[0].attributes);
        assert_eq!(root[LACKS], json!(["system_prompt", "tools"]));
        let call = flatten_attributes(&spans[1].attributes);
        assert_eq!(call["error.type"], "500");
        assert_eq!(call["http.response.status_code"], 500);
    }
}
