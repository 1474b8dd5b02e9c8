//! OTel GenAI semantic conventions: `gen_ai.input.messages`,
//! `gen_ai.output.messages`, `gen_ai.system_instructions` and
//! `gen_ai.tool.definitions`, each either JSON text or a structured value
//! (which trace files hold flattened into dotted keys).
//!
//! A message is `{"role", "parts": [...], "name"?, "finish_reason"?}` with
//! parts `text`, `tool_call` (`id`, `name`, `arguments`),
//! `tool_call_response` (`id`, `response` or `result`) and `reasoning`
//! (left out of the row). Media parts (`blob`, `uri`, `file`) cannot be
//! represented in a text dataset, so such a span is refused, not truncated.

use serde_json::{Map, Value};

use super::attrs::{
    array, content_text, object, opt_str, req_str, structured, tool_call, tool_definition,
};
use super::{Conversation, Malformed, Message, Role};

/// Reads the conversation from a span's GenAI attributes (flattened, as in a
/// trace file).
pub fn read(attrs: &Map<String, Value>) -> Result<Conversation, Malformed> {
    let mut messages = Vec::new();
    if let Some(text) = system_instructions(attrs)? {
        messages.push(Message::new(Role::System, Some(text)));
    }
    for key in ["gen_ai.input.messages", "gen_ai.output.messages"] {
        if let Some(list) = structured(attrs, key)? {
            for (i, m) in array(&list, key)?.iter().enumerate() {
                message(m, &format!("{key}.{i}"), &mut messages)?;
            }
        }
    }
    let tools = match structured(attrs, "gen_ai.tool.definitions")? {
        None => Vec::new(),
        Some(defs) => array(&defs, "gen_ai.tool.definitions")?
            .iter()
            .enumerate()
            .map(|(i, d)| tool_definition(d, &format!("gen_ai.tool.definitions.{i}")))
            .collect::<Result<_, _>>()?,
    };
    Ok(Conversation { messages, tools })
}

/// `gen_ai.system_instructions`: a list of parts (plain text is accepted too).
fn system_instructions(attrs: &Map<String, Value>) -> Result<Option<String>, Malformed> {
    const KEY: &str = "gen_ai.system_instructions";
    let parts = match attrs.get(KEY) {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Array(_)) => v,
            _ => return Ok(Some(s.clone())),
        },
        _ => match structured(attrs, KEY)? {
            Some(v) => v,
            None => return Ok(None),
        },
    };
    let mut text = String::new();
    for (i, part) in array(&parts, KEY)?.iter().enumerate() {
        let what = format!("{KEY}.{i}");
        let part = object(part, &what)?;
        match req_str(part, "type", &what)?.as_str() {
            "text" => text.push_str(&req_str(part, "content", &what)?),
            other => return Err(unsupported(other, &what)),
        }
    }
    Ok(Some(text))
}

fn unsupported(kind: &str, what: &str) -> Malformed {
    Malformed(format!(
        "{what} is a {kind:?} part, which a text dataset cannot hold"
    ))
}

/// One message; tool responses become tool messages of their own.
fn message(v: &Value, what: &str, out: &mut Vec<Message>) -> Result<(), Malformed> {
    let m = object(v, what)?;
    let role_name = req_str(m, "role", what)?;
    let role = Role::parse(&role_name)
        .ok_or_else(|| Malformed(format!("{what}.role {role_name:?} is not a chat role")))?;
    let name = opt_str(m, "name", what)?;
    let mut text: Option<String> = opt_str(m, "content", what)?;
    let mut calls = Vec::new();
    let mut responses = Vec::new();
    if let Some(parts) = m.get("parts") {
        for (j, part) in array(parts, &format!("{what}.parts"))?.iter().enumerate() {
            let what = format!("{what}.parts.{j}");
            let obj = object(part, &what)?;
            match req_str(obj, "type", &what)?.as_str() {
                "text" => text
                    .get_or_insert_with(String::new)
                    .push_str(&req_str(obj, "content", &what)?),
                "tool_call" => calls.push(tool_call(part, &what)?),
                "tool_call_response" => {
                    let result = obj.get("response").or_else(|| obj.get("result"));
                    let mut r = Message::new(
                        Role::Tool,
                        Some(result.map(content_text).unwrap_or_default()),
                    );
                    r.tool_call_id = opt_str(obj, "id", &what)?;
                    r.name = name.clone();
                    responses.push(r);
                }
                "reasoning" => {}
                other => return Err(unsupported(other, &what)),
            }
        }
    }
    let had_responses = !responses.is_empty();
    out.append(&mut responses);
    if had_responses && text.is_none() && calls.is_empty() {
        return Ok(());
    }
    if text.is_none() && calls.is_empty() {
        text = Some(String::new());
    }
    let mut msg = Message::new(role, text);
    msg.name = name;
    msg.tool_calls = calls;
    out.push(msg);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_json(v: Value) -> Result<Conversation, Malformed> {
        read(v.as_object().unwrap())
    }

    #[test]
    fn json_text_messages_with_tool_round_trip() {
        let input = json!([
            {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
            {"role": "assistant", "parts": [
                {"type": "reasoning", "content": "need a tool"},
                {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": {"temp": 18}}]}
        ]);
        let output = json!([{"role": "assistant", "finish_reason": "stop",
            "parts": [{"type": "text", "content": "18°C."}]}]);
        let tools = json!([{"type": "function", "name": "weather", "description": "d",
            "parameters": {"type": "object"}}]);
        let c = read_json(json!({
            "gen_ai.system_instructions": "[{\"type\":\"text\",\"content\":\"be brief\"}]",
            "gen_ai.input.messages": input.to_string(),
            "gen_ai.output.messages": output.to_string(),
            "gen_ai.tool.definitions": tools.to_string()
        }))
        .unwrap();
        let roles: Vec<_> = c.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "assistant"]);
        assert_eq!(c.messages[0].content.as_deref(), Some("be brief"));
        assert_eq!(c.messages[2].content, None);
        assert_eq!(
            c.messages[2].tool_calls[0].arguments,
            json!({"city": "Paris"})
        );
        assert_eq!(c.messages[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(c.messages[3].content.as_deref(), Some("{\"temp\":18}"));
        assert_eq!(c.messages[4].content.as_deref(), Some("18°C."));
        assert_eq!(c.tools[0].name, "weather");
    }

    #[test]
    fn flattened_structured_values_read_the_same() {
        let c = read_json(json!({
            "gen_ai.input.messages.0.role": "user",
            "gen_ai.input.messages.0.parts.0.type": "text",
            "gen_ai.input.messages.0.parts.0.content": "hi",
            "gen_ai.input.messages.1.role": "tool",
            "gen_ai.input.messages.1.parts.0.type": "tool_call_response",
            "gen_ai.input.messages.1.parts.0.id": "c1",
            "gen_ai.input.messages.1.parts.0.result": "done",
            "gen_ai.output.messages.0.role": "assistant",
            "gen_ai.output.messages.0.parts.0.type": "text",
            "gen_ai.output.messages.0.parts.0.content": "hello",
            "gen_ai.system_instructions": "plain system text",
            "gen_ai.tool.definitions.0.name": "f",
            "gen_ai.tool.definitions.0.parameters.type": "object"
        }))
        .unwrap();
        assert_eq!(c.messages[0].content.as_deref(), Some("plain system text"));
        assert_eq!(c.messages[1].content.as_deref(), Some("hi"));
        assert_eq!(c.messages[2].content.as_deref(), Some("done"));
        assert_eq!(c.messages[2].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(c.messages[3].content.as_deref(), Some("hello"));
        assert_eq!(c.tools[0].parameters, Some(json!({"type": "object"})));
    }

    #[test]
    fn refuses_media_and_bad_shapes() {
        for (attrs, why) in [
            (
                json!({"gen_ai.input.messages": "[{\"role\":\"user\",\"parts\":[{\"type\":\"blob\",\"content\":\"AA==\"}]}]"}),
                "\"blob\" part",
            ),
            (json!({"gen_ai.input.messages": "not json"}), "not JSON"),
            (
                json!({"gen_ai.input.messages": "{\"role\":\"user\"}"}),
                "not a list",
            ),
            (
                json!({"gen_ai.input.messages": "[{\"parts\":[]}]"}),
                "has no role",
            ),
            (
                json!({"gen_ai.input.messages": "[{\"role\":\"robot\"}]"}),
                "not a chat role",
            ),
        ] {
            let err = read_json(attrs.clone()).expect_err(&attrs.to_string());
            assert!(err.0.contains(why), "{attrs}: {err}");
        }
    }
}
