//! OpenInference (Arize Phoenix) spans: `llm.input_messages.<i>.message.role|
//! content|name|tool_call_id`, `…message.contents.<k>.message_content.type|
//! text`, `…message.tool_calls.<k>.tool_call.id|function.name|
//! function.arguments`, `llm.output_messages.*` alike, and tools as
//! `llm.tools.<i>.tool.json_schema` (JSON text).

use serde_json::{Map, Value};

use super::attrs::{array, object, opt_str, req_str, structured, tool_call, tool_definition};
use super::{Conversation, Malformed, Message, Role};

/// Reads the conversation of an OpenInference span (`attrs` flattened, as in a
/// trace file).
pub fn read(attrs: &Map<String, Value>) -> Result<Conversation, Malformed> {
    let mut messages = Vec::new();
    for key in ["llm.input_messages", "llm.output_messages"] {
        if let Some(list) = structured(attrs, key)? {
            for (i, m) in array(&list, key)?.iter().enumerate() {
                messages.push(message(m, &format!("{key}.{i}"))?);
            }
        }
    }
    let mut tools = Vec::new();
    if let Some(list) = structured(attrs, "llm.tools")? {
        for (i, t) in array(&list, "llm.tools")?.iter().enumerate() {
            let what = format!("llm.tools.{i}.tool.json_schema");
            let schema = object(t, &what)?
                .get("tool")
                .and_then(|t| t.get("json_schema"))
                .ok_or_else(|| Malformed(format!("{what} is missing")))?;
            let schema = match schema {
                Value::String(text) => serde_json::from_str(text)
                    .map_err(|e| Malformed(format!("{what} is not JSON: {e}")))?,
                other => other.clone(),
            };
            tools.push(tool_definition(&schema, &what)?);
        }
    }
    Ok(Conversation { messages, tools })
}

fn message(v: &Value, what: &str) -> Result<Message, Malformed> {
    let outer = object(v, what)?;
    let what = format!("{what}.message");
    let m = match outer.get("message") {
        Some(inner) => object(inner, &what)?,
        None => outer,
    };
    let role_name = req_str(m, "role", &what)?;
    let role = Role::parse(&role_name)
        .ok_or_else(|| Malformed(format!("{what}.role {role_name:?} is not a chat role")))?;
    let mut content = opt_str(m, "content", &what)?;
    if let Some(parts) = m.get("contents") {
        for (k, part) in array(parts, &format!("{what}.contents"))?
            .iter()
            .enumerate()
        {
            let what = format!("{what}.contents.{k}.message_content");
            let part = object(part, &what)?;
            let part = match part.get("message_content") {
                Some(inner) => object(inner, &what)?,
                None => part,
            };
            match req_str(part, "type", &what)?.as_str() {
                "text" => content
                    .get_or_insert_with(String::new)
                    .push_str(&req_str(part, "text", &what)?),
                other => {
                    return Err(Malformed(format!(
                        "{what} is a {other:?} part, which a text dataset cannot hold"
                    )))
                }
            }
        }
    }
    let tool_calls = match m.get("tool_calls") {
        None => Vec::new(),
        Some(calls) => {
            let what = format!("{what}.tool_calls");
            array(calls, &what)?
                .iter()
                .enumerate()
                .map(|(k, c)| tool_call(c, &format!("{what}.{k}")))
                .collect::<Result<_, _>>()?
        }
    };
    if content.is_none() && tool_calls.is_empty() {
        content = Some(String::new());
    }
    let mut out = Message::new(role, content);
    out.name = opt_str(m, "name", &what)?;
    out.tool_calls = tool_calls;
    if role == Role::Tool {
        out.tool_call_id = opt_str(m, "tool_call_id", &what)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattened_openinference_span() {
        let attrs = json!({
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o",
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "be brief",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.contents.0.message_content.type": "text",
            "llm.input_messages.1.message.contents.0.message_content.text": "weather?",
            "llm.input_messages.2.message.role": "assistant",
            "llm.input_messages.2.message.tool_calls.0.tool_call.id": "call_1",
            "llm.input_messages.2.message.tool_calls.0.tool_call.function.name": "weather",
            "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments": "{\"city\":\"Paris\"}",
            "llm.input_messages.3.message.role": "tool",
            "llm.input_messages.3.message.tool_call_id": "call_1",
            "llm.input_messages.3.message.content": "18",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "18°C",
            "llm.tools.0.tool.json_schema": "{\"type\":\"function\",\"function\":{\"name\":\"weather\",\"parameters\":{\"type\":\"object\"}}}"
        });
        let c = read(attrs.as_object().unwrap()).unwrap();
        let roles: Vec<_> = c.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "assistant"]);
        assert_eq!(c.messages[1].content.as_deref(), Some("weather?"));
        assert_eq!(c.messages[2].content, None);
        assert_eq!(c.messages[2].tool_calls[0].name, "weather");
        assert_eq!(c.messages[2].tool_calls[0].id.as_deref(), Some("call_1"));
        assert_eq!(c.messages[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(c.messages[4].content.as_deref(), Some("18°C"));
        assert_eq!(c.tools[0].name, "weather");
        assert_eq!(c.tools[0].parameters, Some(json!({"type": "object"})));
    }

    #[test]
    fn refuses_images_and_unknown_roles() {
        for (attrs, why) in [
            (
                json!({"llm.input_messages.0.message.role": "user",
                    "llm.input_messages.0.message.contents.0.message_content.type": "image"}),
                "\"image\" part",
            ),
            (
                json!({"llm.input_messages.0.message.role": "oracle"}),
                "not a chat role",
            ),
            (
                json!({"llm.input_messages.0.message.content": "x"}),
                "has no role",
            ),
            (
                json!({"llm.input_messages.0.message.role": "user", "llm.tools.0.tool.json_schema": "{"}),
                "not JSON",
            ),
        ] {
            let err = read(attrs.as_object().unwrap()).expect_err(&attrs.to_string());
            assert!(err.0.contains(why), "{attrs}: {err}");
        }
    }
}
