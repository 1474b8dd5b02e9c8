//! `--format trl`: Hugging Face TRL conversational rows. Tool-call
//! `arguments` are JSON objects (not text), a tool message carries the
//! tool's `name` (from the call it answers when the span did not name it),
//! and the `tools` column holds the tools' JSON schemas. Ids are kept.
//! `developer` messages are written as `system`.

use serde_json::Value;

use super::{tool_defs, Call, Msg, Row, Unrepresentable};
use crate::conversation::{Conversation, Role};

pub(super) fn row(c: &Conversation) -> Result<Row<'_, Value>, Unrepresentable> {
    let mut messages = Vec::with_capacity(c.messages.len());
    for m in &c.messages {
        let role = match m.role {
            Role::Developer => "system",
            other => other.as_str(),
        };
        let mut out = Msg::new(role, Some(Some(m.content.as_deref().unwrap_or(""))));
        for t in &m.tool_calls {
            let arguments = t.arguments_value().ok_or_else(|| {
                Unrepresentable(format!("arguments of tool call {:?} are not JSON", t.name))
            })?;
            out.tool_calls
                .push(Call::new(t.id.as_deref(), &t.name, arguments));
        }
        if m.role == Role::Tool {
            out.tool_call_id = m.tool_call_id.as_deref();
            out.name = m
                .name
                .as_deref()
                .or_else(|| c.tool_name_of(m.tool_call_id.as_deref()?));
        }
        messages.push(out);
    }
    Ok(Row {
        messages,
        tools: tool_defs(&c.tools, None),
        parallel_tool_calls: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{row_json, sample};
    use super::super::{Format, TrainOn};
    use serde_json::json;

    #[test]
    fn trl_conversational_shape() {
        let row = row_json(Format::Trl, TrainOn::All, &sample()).unwrap();
        assert_eq!(
            row,
            json!({
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "weather in Paris?"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
                    {"role": "tool", "content": "18°C", "name": "weather", "tool_call_id": "call_1"},
                    {"role": "assistant", "content": "18°C in Paris."}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "weather", "parameters": {"type": "object"}}}]
            })
        );
    }

    #[test]
    fn unparseable_arguments_are_refused() {
        let mut c = sample();
        c.messages[2].tool_calls[0].arguments = json!("{city: Paris");
        let err = row_json(Format::Trl, TrainOn::All, &c).unwrap_err();
        assert!(err.0.contains("not JSON"), "{err}");
    }
}
