//! A model call the LLM proxy recorded, as its trace-file span shows it.
//!
//! The store keeps each call's request and answer once, as the bodies the
//! proxy forwarded. AGL's adapters (`TraceToMessages`,
//! `TracerTraceToTriplet`) read messages from `gen_ai.prompt.<i>.*`,
//! `gen_ai.completion.<i>.*`, `gen_ai.request.functions.<i>.*`,
//! `prompt_token_ids` and `response_token_ids`, so the trace-file builder
//! derives those from the bodies and leaves out the bodies it read: a trace
//! file too holds the call once. A body that cannot be read (cut at the
//! recording cap, not JSON, a failed call's error answer) stays as it is.

use serde_json::{Map, Value};

use crate::conversation::openai::{self, parse_budget, Api, Request, Response};
use crate::conversation::Message;
use crate::semconv::llm_proxy::{EVENT_STREAM, REQUEST_BODY, RESPONSE_BODY};

/// Writes AGL's message attributes of a proxy-recorded call into its
/// flattened `attrs`, in place of the bodies they come from, exactly as the
/// proxy reads them when it records the call (each body on its own, the
/// answer only of a call that was answered). Leaves alone a span that is not
/// the proxy's or that already holds AGL's attributes (as spans stored by
/// earlier releases do), and a body that does not read. Never panics: a
/// reader that does leaves the bodies in place.
pub fn expand(attrs: &mut Map<String, Value>) {
    let readable = !attrs
        .keys()
        .any(|k| k.starts_with("gen_ai.prompt.") || k.starts_with("gen_ai.completion."));
    let Some(api) = attrs
        .get("url.path")
        .and_then(Value::as_str)
        .and_then(|p| p.strip_prefix("/v1"))
        .and_then(Api::of_path)
        .filter(|_| readable)
    else {
        return;
    };
    let (Some(Value::String(request)), Some(Value::String(response))) =
        (attrs.get(REQUEST_BODY), attrs.get(RESPONSE_BODY))
    else {
        return;
    };
    let answered = attrs
        .get("http.response.status_code")
        .and_then(Value::as_u64)
        .is_some_and(|s| (200..300).contains(&s))
        && !attrs.contains_key("error.type");
    let event_stream = attrs.get(EVENT_STREAM) == Some(&Value::Bool(true));
    let budget = parse_budget(request.len() + response.len());
    let read = std::panic::catch_unwind(|| {
        let request = openai::request(api, request.as_bytes(), budget).ok();
        let response = answered
            .then(|| openai::response(api, response.as_bytes(), event_stream, budget).ok())
            .flatten();
        (request, response)
    });
    let Ok((request, response)) = read else {
        return;
    };
    // A body is left out only when what it says is in the attributes: one
    // that reads as no messages (an event stream of something else) stays.
    if let Some(r) = request.filter(|r| !r.messages.is_empty()) {
        attrs.remove(REQUEST_BODY);
        request_attrs(&r, attrs);
    }
    if let Some(r) = response.filter(|r| !r.choices.is_empty()) {
        attrs.remove(RESPONSE_BODY);
        response_attrs(&r, attrs);
    }
}

fn put(attrs: &mut Map<String, Value>, key: String, value: impl Into<Value>) {
    attrs.insert(key, value.into());
}

/// `prefix.*` of one chat message, AGL's way.
fn message(prefix: &str, m: &Message, attrs: &mut Map<String, Value>) {
    put(attrs, format!("{prefix}.role"), m.role.as_str());
    if let Some(content) = &m.content {
        put(attrs, format!("{prefix}.content"), content.as_str());
    }
    if let Some(name) = &m.name {
        put(attrs, format!("{prefix}.name"), name.as_str());
    }
    if let Some(id) = &m.tool_call_id {
        put(attrs, format!("{prefix}.tool_call_id"), id.as_str());
    }
    for (j, call) in m.tool_calls.iter().enumerate() {
        let p = format!("{prefix}.tool_calls.{j}");
        if let Some(id) = &call.id {
            put(attrs, format!("{p}.id"), id.as_str());
        }
        put(attrs, format!("{p}.name"), call.name.as_str());
        put(attrs, format!("{p}.arguments"), call.arguments_text());
    }
}

fn request_attrs(r: &Request, attrs: &mut Map<String, Value>) {
    for (i, m) in r.messages.iter().enumerate() {
        message(&format!("gen_ai.prompt.{i}"), m, attrs);
    }
    for (i, t) in r.tools.iter().enumerate() {
        let p = format!("gen_ai.request.functions.{i}");
        put(attrs, format!("{p}.name"), t.name.as_str());
        if let Some(d) = &t.description {
            put(attrs, format!("{p}.description"), d.as_str());
        }
        if let Some(params) = &t.parameters {
            put(attrs, format!("{p}.parameters"), params.to_string());
        }
    }
}

fn response_attrs(r: &Response, attrs: &mut Map<String, Value>) {
    for (i, c) in r.choices.iter().enumerate() {
        let p = format!("gen_ai.completion.{i}");
        message(&p, &c.message, attrs);
        if let Some(reason) = &c.finish_reason {
            put(attrs, format!("{p}.finish_reason"), reason.as_str());
        }
    }
    for (key, ids) in [
        ("prompt_token_ids", &r.prompt_token_ids),
        ("response_token_ids", &r.response_token_ids),
    ] {
        if let Some(ids) = ids {
            put(attrs, key.to_string(), ids.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::agl;
    use crate::semconv::llm_proxy::TRUNCATED;
    use serde_json::json;

    fn recorded(request: Value, response: &str, event_stream: bool) -> Map<String, Value> {
        let attrs = json!({
            "gen_ai.operation.name": "chat", "url.path": "/v1/chat/completions",
            REQUEST_BODY: request.to_string(), RESPONSE_BODY: response,
            EVENT_STREAM: event_stream, TRUNCATED: false,
            "http.response.status_code": 200, "gen_ai.request.model": "m-1"});
        attrs.as_object().cloned().unwrap_or_default()
    }

    fn sample() -> Map<String, Value> {
        let request = json!({"model": "m-1", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "list files"}],
            "tools": [{"type": "function", "function": {"name": "ls", "description": "list",
                       "parameters": {"type": "object"}}}]});
        let response = json!({"id": "c-1", "model": "m-1", "prompt_token_ids": [1, 2],
            "choices": [{"index": 0, "finish_reason": "tool_calls", "token_ids": [3],
              "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]}}]});
        recorded(request, &response.to_string(), false)
    }

    #[test]
    fn bodies_become_agl_attributes_once() {
        let mut attrs = sample();
        expand(&mut attrs);
        assert!(!attrs.contains_key(REQUEST_BODY) && !attrs.contains_key(RESPONSE_BODY));
        assert_eq!(attrs["gen_ai.prompt.1.content"], "list files");
        assert_eq!(
            attrs["gen_ai.request.functions.0.parameters"],
            "{\"type\":\"object\"}"
        );
        assert_eq!(attrs["gen_ai.completion.0.tool_calls.0.id"], "call_1");
        assert_eq!(attrs["gen_ai.completion.0.finish_reason"], "tool_calls");
        assert_eq!(attrs["prompt_token_ids"], json!([1, 2]));
        assert_eq!(attrs["response_token_ids"], json!([3]));
        let c = agl::read(&attrs, &[]).unwrap();
        assert_eq!(c.messages.len(), 3);
        assert_eq!(c.tools[0].description.as_deref(), Some("list"));
    }

    #[test]
    fn a_streamed_answer_is_reassembled() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hel\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let mut attrs = recorded(
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            stream,
            true,
        );
        expand(&mut attrs);
        assert_eq!(attrs["gen_ai.completion.0.content"], "hello");
        assert!(!attrs.contains_key(RESPONSE_BODY));
    }

    #[test]
    fn what_cannot_be_read_stays_as_recorded() {
        // A failed call keeps its error answer; its request is still read.
        let mut failed = sample();
        failed.insert("error.type".into(), json!("500"));
        expand(&mut failed);
        assert!(failed.contains_key(RESPONSE_BODY));
        assert!(!failed.contains_key("gen_ai.completion.0.role"));
        assert_eq!(failed["gen_ai.prompt.0.content"], "be brief");

        let unchanged = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut attrs = sample();
            edit(&mut attrs);
            let before = attrs.clone();
            expand(&mut attrs);
            assert_eq!(attrs, before);
        };
        // A body cut at the recording cap does not read.
        unchanged(&|a| {
            let cut = a[REQUEST_BODY].as_str().unwrap()[..40].to_string();
            a.insert(REQUEST_BODY.into(), json!(cut));
            a.insert("error.type".into(), json!("cancelled"));
        });
        unchanged(&|a| {
            a.insert("gen_ai.prompt.0.role".into(), json!("user"));
        });
        unchanged(&|a| {
            a.insert("url.path".into(), json!("/v1/models"));
        });
        unchanged(&|a| {
            a.insert(REQUEST_BODY.into(), json!("{\"messages\": []}"));
            a.insert(RESPONSE_BODY.into(), json!("data: {\"n\":0}\n\n"));
            a.insert(EVENT_STREAM.into(), json!(true));
        });
        // Bodies that do not read (a forged span) stay too.
        unchanged(&|a| {
            a.insert(REQUEST_BODY.into(), json!("{\"messages\": 7}"));
            a.insert(RESPONSE_BODY.into(), json!("[1,"));
        });
    }
}
