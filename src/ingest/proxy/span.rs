//! One model call as an OTLP span of the OTel GenAI semantic conventions
//! (`chat <model>`, kind CLIENT, `gen_ai.request.*`, `gen_ai.response.*`,
//! `gen_ai.usage.*`), holding the call's request and answer once: as the
//! bodies the proxy forwarded (up to the recording cap), so fields no
//! convention names, and bodies that are not JSON at all, are on record
//! too. The messages are not copied into attributes here; the trace-file
//! builder derives AGL's `gen_ai.prompt.<i>.*` and `gen_ai.completion.<i>.*`
//! from the bodies ([`crate::agl::call`]). The tool calls of the answer are
//! AGL's child spans (`tool.name`, `tool.parameters`, `tool.call.id`).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status, ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::Value;

use crate::conversation::openai::{self, parse_budget, Api, Request, Response};
use crate::semconv::llm_proxy::{
    EVENT_STREAM, REQUEST_BODY, RESPONSE_BODY, TRUNCATED, UNREADABLE, UPSTREAM,
};

/// A recorded body: its first bytes, up to the cap.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    /// The bytes kept.
    pub bytes: Vec<u8>,
    /// Whether the body was longer than what was kept.
    pub truncated: bool,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The whole answer reached the client.
    Complete,
    /// The client went away first; the upstream call was cancelled.
    ClientGone,
    /// The upstream could not be reached or broke off its answer.
    Upstream(String),
}

/// Everything known about a finished call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Which API the call used.
    pub api: Api,
    /// The caller's trace (from `traceparent`), or a fresh one.
    pub trace_id: [u8; 16],
    /// The call's own span.
    pub span_id: [u8; 8],
    /// The caller's span (from its `traceparent`), if it sent one.
    pub parent_span_id: Option<[u8; 8]>,
    /// When the request arrived.
    pub start_unix_nano: u64,
    /// When the answer's last byte left (or the call broke off).
    pub end_unix_nano: u64,
    /// The upstream's base URL the call went to.
    pub upstream: String,
    /// The request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The upstream's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Whether the answer was a server-sent event stream.
    pub event_stream: bool,
    /// The request body as sent.
    pub request: Captured,
    /// The answer body as received.
    pub response: Captured,
    /// How the call ended.
    pub end: End,
}

/// An attribute.
pub fn kv(key: impl Into<String>, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A string attribute value.
pub fn text(v: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn int(v: u64) -> any_value::Value {
    any_value::Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A JSON scalar (or list of scalars) as an attribute value.
fn scalar(v: &Value) -> Option<any_value::Value> {
    Some(match v {
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        Value::String(s) => text(s.clone()),
        Value::Array(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items
                .iter()
                .map(|i| scalar(i).map(|v| AnyValue { value: Some(v) }))
                .collect::<Option<_>>()?,
        }),
        _ => return None,
    })
}

/// A body as recorded: text when it is UTF-8 (cut at a character boundary
/// when truncated), bytes otherwise.
fn body(c: &Captured) -> any_value::Value {
    match std::str::from_utf8(&c.bytes) {
        Ok(s) => text(s),
        Err(e) if c.truncated && e.error_len().is_none() => {
            text(String::from_utf8_lossy(&c.bytes[..e.valid_up_to()]))
        }
        Err(_) => any_value::Value::BytesValue(c.bytes.clone()),
    }
}

fn request_attrs(r: &Request, out: &mut Vec<KeyValue>) {
    if let Some(model) = &r.model {
        out.push(kv("gen_ai.request.model", text(model.clone())));
    }
    for (key, value) in &r.params {
        if let Some(v) = scalar(value) {
            out.push(kv(*key, v));
        }
    }
}

fn response_attrs(r: &Response, out: &mut Vec<KeyValue>) {
    if let Some(id) = &r.id {
        out.push(kv("gen_ai.response.id", text(id.clone())));
    }
    if let Some(model) = &r.model {
        out.push(kv("gen_ai.response.model", text(model.clone())));
    }
    let reasons: Vec<Value> = r
        .choices
        .iter()
        .filter_map(|c| c.finish_reason.clone().map(Value::String))
        .collect();
    if !reasons.is_empty() {
        if let Some(v) = scalar(&Value::Array(reasons)) {
            out.push(kv("gen_ai.response.finish_reasons", v));
        }
    }
    let usage = [
        (
            ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"],
            r.input_tokens,
        ),
        (
            [
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
            ],
            r.output_tokens,
        ),
    ];
    for (keys, value) in usage {
        if let Some(n) = value {
            for key in keys {
                out.push(kv(key, int(n)));
            }
        }
    }
    if let Some(n) = r.total_tokens {
        out.push(kv("gen_ai.usage.total_tokens", int(n)));
    }
    if let Some(n) = r.cached_tokens {
        out.push(kv("gen_ai.usage.cache_read.input_tokens", int(n)));
    }
}

/// The tool calls of the answer as AGL's child spans.
fn tool_call_spans(call: &Call, response: &Response) -> Vec<Span> {
    let calls = response
        .choices
        .first()
        .map_or(&[][..], |c| &c.message.tool_calls[..]);
    calls
        .iter()
        .enumerate()
        .map(|(j, t)| {
            let mut span_id = call.span_id;
            // Distinct from the call's id and from each other.
            span_id[7] ^= (j as u8).wrapping_add(1);
            span_id[6] ^= 0x5a;
            let mut attributes = vec![
                kv("tool.name", text(t.name.clone())),
                kv("tool.parameters", text(t.arguments_text())),
                kv("tool.call.type", text("function")),
            ];
            if let Some(id) = &t.id {
                attributes.push(kv("tool.call.id", text(id.clone())));
            }
            Span {
                trace_id: call.trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: call.span_id.to_vec(),
                name: format!("tool_call {}", t.name),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: call.end_unix_nano,
                end_time_unix_nano: call.end_unix_nano,
                attributes,
                ..Default::default()
            }
        })
        .collect()
}

/// What the bodies of a call say, as span attributes.
#[derive(Default)]
struct Reading {
    model: Option<String>,
    /// What the bodies say besides the messages: model, parameters, usage.
    attrs: Vec<KeyValue>,
    /// The answer's tool calls, as AGL's child spans.
    children: Vec<Span>,
    /// Why the bodies could not be read, if so.
    unreadable: Option<String>,
}

impl Call {
    /// A call that has just begun: no answer yet, and ending as
    /// [`End::ClientGone`] unless its answer says otherwise.
    pub fn begin(api: Api, trace_id: [u8; 16], span_id: [u8; 8], start_unix_nano: u64) -> Call {
        Call {
            api,
            trace_id,
            span_id,
            parent_span_id: None,
            start_unix_nano,
            end_unix_nano: start_unix_nano,
            upstream: String::new(),
            path: String::new(),
            status: None,
            event_stream: false,
            request: Captured::default(),
            response: Captured::default(),
            end: End::ClientGone,
        }
    }

    /// The export holding this call's span (and its tool-call children), and
    /// why the call's conversation is not in it, if it is not: a body that
    /// could not be read (within `budget` bytes per parse tree, and within
    /// [`parse_budget`] of the bodies' size, so that the trace-file builder
    /// can always read them again), or a panic while reading them. Never panics itself: then the span holds only what
    /// the proxy saw of the call (timing, status, upstream), marked.
    pub fn record(&self, budget: usize) -> (ExportTraceServiceRequest, Option<String>) {
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read(budget)));
        let reading = read.unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Reading {
                unreadable: Some(format!("reading the bodies failed: {why}")),
                ..Reading::default()
            }
        });
        let unreadable = reading.unreadable.clone();
        (self.export(reading), unreadable)
    }

    fn read(&self, budget: usize) -> Reading {
        // A stand-in for a bug in the readers, for the test that a panic
        // loses only this call's conversation.
        #[cfg(test)]
        if self.path == "/v1/panic" {
            panic!("injected");
        }
        let answered =
            self.status.is_some_and(|s| (200..300).contains(&s)) && self.end == End::Complete;
        let budget = budget.min(parse_budget(
            self.request.bytes.len() + self.response.bytes.len(),
        ));
        let request = openai::request(self.api, &self.request.bytes, budget)
            .map_err(|e| format!("request: {e}"));
        let response = answered.then(|| {
            openai::response(self.api, &self.response.bytes, self.event_stream, budget)
                .map_err(|e| format!("response: {e}"))
        });
        let problems: Vec<String> = [
            request.as_ref().err(),
            response.as_ref().and_then(|r| r.as_ref().err()),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        let (request, response) = (request.ok(), response.and_then(Result::ok));
        let mut reading = Reading {
            model: request
                .as_ref()
                .and_then(|r| r.model.clone())
                .or_else(|| response.as_ref().and_then(|r| r.model.clone())),
            unreadable: (!problems.is_empty()).then(|| problems.join("; ")),
            ..Reading::default()
        };
        if let Some(r) = &request {
            request_attrs(r, &mut reading.attrs);
        }
        if let Some(r) = &response {
            response_attrs(r, &mut reading.attrs);
            reading.children = tool_call_spans(self, r);
        }
        reading
    }

    /// The export of the call's span, with what its bodies say.
    fn export(&self, reading: Reading) -> ExportTraceServiceRequest {
        let Reading {
            model,
            attrs: mut conversation,
            children,
            unreadable,
        } = reading;
        let mut attrs = vec![
            kv("gen_ai.operation.name", text("chat")),
            kv(UPSTREAM, text(self.upstream.clone())),
            kv("url.path", text(self.path.clone())),
            kv(REQUEST_BODY, body(&self.request)),
            kv(RESPONSE_BODY, body(&self.response)),
            kv(EVENT_STREAM, any_value::Value::BoolValue(self.event_stream)),
            kv(
                TRUNCATED,
                any_value::Value::BoolValue(self.request.truncated || self.response.truncated),
            ),
        ];
        if let Some(status) = self.status {
            attrs.push(kv("http.response.status_code", int(u64::from(status))));
        }
        let model = model.or_else(|| openai::model_of(&self.request.bytes));
        attrs.append(&mut conversation);
        if let Some(why) = unreadable {
            attrs.push(kv(UNREADABLE, text(why)));
        }
        let error = match (&self.end, self.status) {
            (End::ClientGone, _) => Some((
                "cancelled".to_string(),
                "the client disconnected before the answer ended".to_string(),
            )),
            (End::Upstream(e), status) => Some((
                status.map_or("upstream_unreachable".to_string(), |_| {
                    "upstream_broke_off".to_string()
                }),
                e.clone(),
            )),
            (End::Complete, Some(s)) if s >= 400 => {
                Some((s.to_string(), format!("the upstream answered {s}")))
            }
            _ => None,
        };
        let status = match &error {
            Some((kind, message)) => {
                attrs.push(kv("error.type", text(kind.clone())));
                Status {
                    code: status::StatusCode::Error as i32,
                    message: message.clone(),
                }
            }
            None => Status {
                code: status::StatusCode::Unset as i32,
                message: String::new(),
            },
        };
        let name = match &model {
            Some(m) => format!("chat {m}"),
            None => "chat".to_string(),
        };
        let mut spans = vec![Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            name,
            kind: SpanKind::Client as i32,
            start_time_unix_nano: self.start_unix_nano,
            end_time_unix_nano: self.end_unix_nano,
            attributes: attrs,
            status: Some(status),
            ..Default::default()
        }];
        spans.extend(children);
        export_of(spans, "oclagl.llm_proxy")
    }
}

/// An export of `spans` from oclagl (`service.name`), in instrumentation
/// scope `scope`.
pub fn export_of(spans: Vec<Span>, scope: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", text("oclagl"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agl::span::flatten_attributes;
    use crate::conversation::agl;
    use serde_json::json;

    fn call(request: Value, response: &str, event_stream: bool) -> Call {
        Call {
            api: Api::Chat,
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            start_unix_nano: 10,
            end_unix_nano: 20,
            upstream: "http://up/v1".into(),
            path: "/v1/chat/completions".into(),
            status: Some(200),
            event_stream,
            request: Captured {
                bytes: request.to_string().into_bytes(),
                truncated: false,
            },
            response: Captured {
                bytes: response.as_bytes().to_vec(),
                truncated: false,
            },
            end: End::Complete,
        }
    }

    fn sample() -> Call {
        let request = json!({"model": "m-1", "temperature": 0.5, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "list files"}],
            "tools": [{"type": "function", "function": {"name": "ls", "description": "list",
                       "parameters": {"type": "object"}}}]});
        let response = json!({"id": "c-1", "model": "m-1", "prompt_token_ids": [1, 2],
            "choices": [{"index": 0, "finish_reason": "tool_calls", "token_ids": [3],
              "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}});
        call(request, &response.to_string(), false)
    }

    #[test]
    fn span_holds_the_bodies_once_and_the_trace_file_reads_them() {
        let export = sample().record(1 << 26).0;
        let spans = &export.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 2, "the call and its tool-call child");
        let span = &spans[0];
        assert_eq!(span.name, "chat m-1");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.parent_span_id, vec![3; 8]);
        assert_eq!(
            span.status.as_ref().unwrap().code,
            status::StatusCode::Unset as i32
        );
        let attrs = flatten_attributes(&span.attributes);
        assert_eq!(attrs["gen_ai.request.model"], "m-1");
        assert_eq!(attrs["gen_ai.request.temperature"], 0.5);
        assert_eq!(attrs["gen_ai.response.id"], "c-1");
        assert_eq!(
            attrs["gen_ai.response.finish_reasons"],
            json!(["tool_calls"])
        );
        assert_eq!(attrs["gen_ai.usage.input_tokens"], 7);
        assert_eq!(attrs["gen_ai.usage.completion_tokens"], 2);
        assert_eq!(attrs[TRUNCATED], false);
        assert_eq!(attrs[EVENT_STREAM], false);
        assert!(!attrs.contains_key(UNREADABLE));
        // The call's request and answer are held once, as the bodies.
        assert!(attrs[REQUEST_BODY].as_str().unwrap().contains("list files"));
        assert!(attrs[RESPONSE_BODY].as_str().unwrap().contains("call_1"));
        assert!(!attrs.keys().any(|k| k.starts_with("gen_ai.prompt")
            || k.starts_with("gen_ai.completion")
            || k.starts_with("gen_ai.input")
            || k.starts_with("gen_ai.output")
            || k.ends_with("token_ids")));
        // The trace file's view reads them back as the call's conversation.
        let mut expanded = attrs.clone();
        crate::agl::call::expand(&mut expanded);
        let read = agl::read(&expanded, &[]).unwrap();
        assert_eq!(read.messages.len(), 3);
        assert_eq!(read.messages[2].tool_calls[0].id.as_deref(), Some("call_1"));
        assert_eq!(read.tools[0].description.as_deref(), Some("list"));
        assert_eq!(expanded["prompt_token_ids"], json!([1, 2]));
        let child = flatten_attributes(&spans[1].attributes);
        assert_eq!(child["tool.call.id"], "call_1");
        assert_eq!(spans[1].parent_span_id, vec![2; 8]);
        assert_ne!(spans[1].span_id, span.span_id);
    }

    #[test]
    fn errors_and_unreadable_bodies_are_flagged() {
        let mut gone = sample();
        gone.end = End::ClientGone;
        let export = gone.record(1 << 26).0;
        let span = &export.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            span.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        let attrs = flatten_attributes(&span.attributes);
        assert_eq!(attrs["error.type"], "cancelled");
        let mut expanded = attrs.clone();
        crate::agl::call::expand(&mut expanded);
        assert!(!expanded.contains_key("gen_ai.completion.0.role"));
        assert_eq!(expanded["gen_ai.prompt.1.content"], "list files");

        let mut odd = call(json!("x"), "\u{1F600}", false);
        odd.request.bytes = b"\xff\xfe binary".to_vec();
        odd.response.bytes.truncate(2);
        odd.response.truncated = true;
        odd.status = Some(500);
        let export = odd.record(1 << 26).0;
        let span = &export.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "chat");
        let attrs = flatten_attributes(&span.attributes);
        assert_eq!(attrs["error.type"], "500");
        assert_eq!(attrs[TRUNCATED], true);
        assert_eq!(attrs[REQUEST_BODY], hex::encode(b"\xff\xfe binary"));
        assert_eq!(attrs[RESPONSE_BODY], "");
        assert!(attrs[UNREADABLE].as_str().unwrap().contains("not JSON"));
    }

    #[test]
    fn a_panic_while_reading_leaves_a_marked_span_of_the_call() {
        let mut call = sample();
        call.path = "/v1/panic".into();
        let (export, unreadable) = call.record(1 << 26);
        assert_eq!(
            unreadable.as_deref(),
            Some("reading the bodies failed: injected")
        );
        let spans = &export.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 1, "no tool-call children");
        let attrs = flatten_attributes(&spans[0].attributes);
        assert_eq!(attrs[UNREADABLE], "reading the bodies failed: injected");
        assert_eq!(spans[0].name, "chat m-1", "the model the request names");
        assert_eq!(attrs["http.response.status_code"], 200);
        assert!(attrs[REQUEST_BODY].as_str().unwrap().contains("list files"));
        assert!(!attrs.contains_key("gen_ai.prompt.0.role"));
        assert_eq!(spans[0].parent_span_id, vec![3; 8]);
    }
}
