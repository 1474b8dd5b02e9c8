//! AGL / OpenLLMetry spans: `gen_ai.prompt.<i>.role|content|tool_call_id|
//! tool_calls.<j>.id|name|arguments`, `gen_ai.completion.<i>.*`, tools in
//! `gen_ai.request.functions.<i>.name|description|parameters` (OpenLLMetry's
//! `llm.request.functions.<i>` too), and tool calls as child spans with
//! `tool.name`, `tool.parameters`, `tool.call.id`.
//!
//! The reading is AGL 0.3's `TraceToMessages` (what the seed's exporter ran):
//! the same grouping of dotted keys and the same refusals (a message without
//! a role, an unknown role, non-text content, a `tool` message without a
//! call id, a function without parameters…), so a span AGL cannot convert is
//! reported as malformed rather than half-exported; an OpenClaw `toolResult`
//! without a call id gets [`PLACEHOLDER_CALL_ID`], as the seed's exporter
//! gave it. Where AGL silently drops
//! data, the reader keeps it: tool calls of completions, and the text of an
//! assistant message that also calls tools.

use serde_json::{Map, Value};

use super::attrs::{self, array, object, unflatten};
use super::{Conversation, Malformed, Message, Role, Tool, ToolCall};

/// The call id of an OpenClaw `toolResult` that names none, as the seed's
/// exporter wrote it.
pub const PLACEHOLDER_CALL_ID: &str = "call_placeholder";

/// Reads the conversation of a span; `children` are its child spans'
/// attributes (AGL records an LLM call's tool calls there).
pub fn read(
    attrs: &Map<String, Value>,
    children: &[Map<String, Value>],
) -> Result<Conversation, Malformed> {
    let prompt = list(attrs, "gen_ai.prompt")?;
    let completion = list(attrs, "gen_ai.completion")?;
    let request = dict(attrs, "gen_ai.request")?;
    dict(attrs, "gen_ai.response")?;
    let child_calls = child_tool_calls(children)?;

    let mut messages = Vec::with_capacity(prompt.len() + completion.len());
    for (i, m) in prompt.iter().enumerate() {
        messages.push(prompt_message(m, &format!("gen_ai.prompt.{i}"))?);
    }
    for (i, c) in completion.iter().enumerate() {
        let what = format!("gen_ai.completion.{i}");
        let c = object(c, &what)?;
        if c.get("role").and_then(Value::as_str) != Some("assistant") {
            continue;
        }
        let content = match c.get("content") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Malformed(format!("{what}.content is not text"))),
        };
        let mut m = Message::new(Role::Assistant, content);
        m.tool_calls = match c.get("tool_calls") {
            Some(calls) => tool_calls(calls, &what)?,
            None => child_calls.clone(),
        };
        messages.push(m);
    }
    Ok(Conversation {
        messages,
        tools: functions(attrs, &request)?,
    })
}

/// `prefix.<i>.…` as a list (AGL refuses anything else).
fn list(attrs: &Map<String, Value>, prefix: &str) -> Result<Vec<Value>, Malformed> {
    match unflatten(attrs, prefix) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(Malformed(format!("{prefix}.* is not indexed by message"))),
    }
}

fn dict(attrs: &Map<String, Value>, prefix: &str) -> Result<Map<String, Value>, Malformed> {
    match unflatten(attrs, prefix) {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(Malformed(format!("{prefix}.* is indexed, not named"))),
    }
}

fn prompt_message(v: &Value, what: &str) -> Result<Message, Malformed> {
    let m = object(v, what)?;
    let role = match m.get("role") {
        None => return Err(Malformed(format!("{what} has no role"))),
        Some(Value::String(r)) => Role::parse(r)
            .ok_or_else(|| Malformed(format!("{what}.role {r:?} is not a chat role")))?,
        Some(_) => return Err(Malformed(format!("{what}.role is not text"))),
    };
    let text = || match m.get("content") {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Malformed(format!("{what}.content is not text"))),
    };
    let mut out = if role == Role::Assistant && m.contains_key("tool_calls") {
        let mut out = Message::new(
            role,
            m.get("content").and_then(Value::as_str).map(str::to_string),
        );
        out.tool_calls = tool_calls(&m["tool_calls"], what)?;
        out
    } else {
        Message::new(role, Some(text()?))
    };
    out.name = m.get("name").and_then(Value::as_str).map(str::to_string);
    if role == Role::Tool {
        out.tool_call_id = Some(match (m.get("role"), m.get("tool_call_id")) {
            // OpenClaw's transcripts may not say which call a `toolResult`
            // answers; the seed's exporter gave it a placeholder id.
            (Some(r), None) if r == "toolResult" => PLACEHOLDER_CALL_ID.to_string(),
            _ => attrs::req_str(m, "tool_call_id", what)?,
        });
    }
    Ok(out)
}

/// `…tool_calls.<j>.id|name|arguments` (all three required, as AGL reads them).
fn tool_calls(v: &Value, what: &str) -> Result<Vec<ToolCall>, Malformed> {
    let what = format!("{what}.tool_calls");
    array(v, &what)?
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let what = format!("{what}.{j}");
            let obj = object(call, &what)?;
            for field in ["id", "name", "arguments"] {
                if !obj.contains_key(field) {
                    return Err(Malformed(format!("{what} has no {field}")));
                }
            }
            let call = attrs::tool_call(call, &what)?;
            if call.id.is_none() {
                return Err(Malformed(format!("{what}.id is not text")));
            }
            Ok(call)
        })
        .collect()
}

/// Tool calls recorded as child spans (`tool.name`, `tool.parameters`,
/// `tool.call.id`), AGL's `get_tool_calls`.
fn child_tool_calls(children: &[Map<String, Value>]) -> Result<Vec<ToolCall>, Malformed> {
    let mut calls = Vec::new();
    for child in children {
        let Some(tool) = unflatten(child, "tool") else {
            continue;
        };
        let what = "tool-call child span";
        let tool = object(&tool, what)?;
        let call = tool
            .get("call")
            .map(|c| object(c, what))
            .transpose()?
            .ok_or_else(|| Malformed(format!("{what} has no tool.call.id")))?;
        calls.push(ToolCall {
            id: Some(attrs::req_str(call, "id", "tool.call")?),
            name: attrs::req_str(tool, "name", "tool")?,
            arguments: tool
                .get("parameters")
                .cloned()
                .ok_or_else(|| Malformed(format!("{what} has no tool.parameters")))?,
        });
    }
    Ok(calls)
}

/// `gen_ai.request.functions.<i>` (or OpenLLMetry's `llm.request.functions`).
fn functions(
    attrs: &Map<String, Value>,
    request: &Map<String, Value>,
) -> Result<Vec<Tool>, Malformed> {
    let (what, functions) = match request.get("functions") {
        Some(f) => ("gen_ai.request.functions", f.clone()),
        None => match unflatten(attrs, "llm.request.functions") {
            Some(f) => ("llm.request.functions", f),
            None => return Ok(Vec::new()),
        },
    };
    array(&functions, what)?
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let what = format!("{what}.{i}");
            if !object(f, &what)?.contains_key("parameters") {
                return Err(Malformed(format!("{what} has no parameters")));
            }
            attrs::tool_definition(f, &what)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_json(v: Value) -> Result<Conversation, Malformed> {
        read(v.as_object().unwrap(), &[])
    }

    #[test]
    fn multi_turn_with_tool_results_and_functions() {
        let c = read_json(json!({
            "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "be brief",
            "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "weather in Paris?",
            "gen_ai.prompt.2.role": "assistant",
            "gen_ai.prompt.2.tool_calls.0.id": "call_1",
            "gen_ai.prompt.2.tool_calls.0.name": "weather",
            "gen_ai.prompt.2.tool_calls.0.arguments": "{\"city\":\"Paris\"}",
            "gen_ai.prompt.3.role": "toolResult", "gen_ai.prompt.3.content": "18°C",
            "gen_ai.prompt.3.tool_call_id": "call_1",
            "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "18°C in Paris.",
            "gen_ai.completion.0.finish_reason": "stop",
            "gen_ai.request.model": "m",
            "gen_ai.request.functions.0.name": "weather",
            "gen_ai.request.functions.0.parameters": "{\"type\":\"object\"}"
        }))
        .unwrap();
        let roles: Vec<_> = c.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "assistant"]);
        assert_eq!(c.messages[2].content, None);
        assert_eq!(c.messages[2].tool_calls[0].id.as_deref(), Some("call_1"));
        assert_eq!(
            c.messages[2].tool_calls[0].arguments,
            json!("{\"city\":\"Paris\"}")
        );
        assert_eq!(c.messages[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(c.messages[4].content.as_deref(), Some("18°C in Paris."));
        assert_eq!(c.tools.len(), 1);
        assert_eq!(c.tools[0].parameters, Some(json!({"type": "object"})));
    }

    #[test]
    fn an_openclaw_tool_result_without_a_call_id_gets_the_seeds_placeholder() {
        let c = read_json(json!({
            "gen_ai.prompt.0.role": "toolResult", "gen_ai.prompt.0.content": "a.txt",
            "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "ok"
        }))
        .unwrap();
        assert_eq!(c.messages[0].role, Role::Tool);
        assert_eq!(
            c.messages[0].tool_call_id.as_deref(),
            Some(PLACEHOLDER_CALL_ID)
        );
    }

    #[test]
    fn keeps_what_agl_drops() {
        let c = read_json(json!({
            "gen_ai.prompt.0.role": "assistant", "gen_ai.prompt.0.content": "let me check",
            "gen_ai.prompt.0.tool_calls.0.id": "c0", "gen_ai.prompt.0.tool_calls.0.name": "f",
            "gen_ai.prompt.0.tool_calls.0.arguments": "{}",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.tool_calls.0.id": "c1",
            "gen_ai.completion.0.tool_calls.0.name": "g",
            "gen_ai.completion.0.tool_calls.0.arguments.x": 1
        }))
        .unwrap();
        assert_eq!(c.messages[0].content.as_deref(), Some("let me check"));
        assert_eq!(c.messages[1].content, None);
        assert_eq!(c.messages[1].tool_calls[0].arguments, json!({"x": 1}));
    }

    #[test]
    fn defaults_like_agl() {
        let c = read_json(json!({
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.name": "ann",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.1.role": "user", "gen_ai.completion.1.content": "skipped"
        }))
        .unwrap();
        assert_eq!(c.messages.len(), 2);
        assert_eq!(c.messages[0].content.as_deref(), Some(""));
        assert_eq!(c.messages[0].name.as_deref(), Some("ann"));
        assert_eq!(c.messages[1].content, None);
    }

    #[test]
    fn tool_calls_from_child_spans() {
        let child = json!({"tool.name": "search", "tool.parameters": "{\"q\":\"x\"}",
                           "tool.call.id": "call_9", "tool.call.type": "function"});
        let c = read(
            json!({"gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "ok"})
                .as_object()
                .unwrap(),
            &[child.as_object().unwrap().clone(), Map::new()],
        )
        .unwrap();
        assert_eq!(c.messages[0].tool_calls.len(), 1);
        assert_eq!(c.messages[0].tool_calls[0].name, "search");
        assert_eq!(c.messages[0].tool_calls[0].id.as_deref(), Some("call_9"));
    }

    #[test]
    fn refuses_what_agl_refuses() {
        for (attrs, why) in [
            (json!({"gen_ai.prompt.0.content": "x"}), "has no role"),
            (json!({"gen_ai.prompt.0.role": "wizard"}), "not a chat role"),
            (
                json!({"gen_ai.prompt.0.role": "function", "gen_ai.prompt.0.content": "x"}),
                "not a chat role",
            ),
            (
                json!({"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": 5}),
                "not text",
            ),
            (
                json!({"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": ["a"]}),
                "not text",
            ),
            (
                json!({"gen_ai.prompt.0.role": "tool", "gen_ai.prompt.0.content": "r"}),
                "no tool_call_id",
            ),
            (
                json!({"gen_ai.prompt.0.role": "toolResult", "gen_ai.prompt.0.content": "r",
                    "gen_ai.prompt.0.tool_call_id": 3}),
                "not a string",
            ),
            (json!({"gen_ai.prompt.text": "hi"}), "not indexed"),
            (json!({"gen_ai.prompt.0": "hi"}), "has no role"),
            (
                json!({"gen_ai.prompt.0.role": "assistant", "gen_ai.prompt.0.tool_calls.0.id": "c"}),
                "has no name",
            ),
            (
                json!({"gen_ai.prompt.0.role": "assistant", "gen_ai.prompt.0.tool_calls": "c"}),
                "not a list",
            ),
            (json!({"gen_ai.completion.0.0": "x"}), "not an object"),
            (
                json!({"gen_ai.prompt.0.role": "user", "gen_ai.request.0": "x"}),
                "indexed",
            ),
            (
                json!({"gen_ai.prompt.0.role": "user", "gen_ai.request.functions.0.name": "f"}),
                "no parameters",
            ),
            (
                json!({"gen_ai.prompt.0.role": "user", "gen_ai.request.functions.0.name": "f",
                    "gen_ai.request.functions.0.parameters": "{"}),
                "not JSON",
            ),
            (
                json!({"gen_ai.prompt.0.role": "user", "gen_ai.request.functions": "f"}),
                "not a list",
            ),
        ] {
            let err = read_json(attrs.clone()).expect_err(&attrs.to_string());
            assert!(err.0.contains(why), "{attrs}: {err}");
        }
    }
}
