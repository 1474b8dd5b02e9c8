//! `--format messages`: the seed's rows, as AGL 0.3's `TraceToMessages`
//! shapes them: `{"messages": [...], "tools": [...]}` (tools only when
//! known), tool-call arguments as recorded, `content` null on an assistant
//! message that has none, tool descriptions defaulting to `""`.

use serde_json::Value;

use super::{tool_defs, Call, Msg, Row};
use crate::conversation::{Conversation, Role};

pub(super) fn row(c: &Conversation) -> Row<'_, &Value> {
    Row {
        messages: c
            .messages
            .iter()
            .map(|m| {
                let mut out = Msg::new(m.role.as_str(), Some(m.content.as_deref()));
                out.tool_calls = m
                    .tool_calls
                    .iter()
                    .map(|t| Call::new(t.id.as_deref(), &t.name, &t.arguments))
                    .collect();
                if m.role == Role::Tool {
                    out.tool_call_id = m.tool_call_id.as_deref();
                }
                out
            })
            .collect(),
        tools: tool_defs(&c.tools, Some("")),
        parallel_tool_calls: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{row_json, sample};
    use super::super::{Format, TrainOn};
    use serde_json::json;

    #[test]
    fn agl_shape() {
        let row = row_json(Format::Messages, TrainOn::All, &sample()).unwrap();
        assert_eq!(
            row,
            json!({
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {"role": "user", "content": "weather in Paris?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "content": "18°C", "tool_call_id": "call_1"},
                    {"role": "assistant", "content": "18°C in Paris."}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "weather", "description": "", "parameters": {"type": "object"}}}]
            })
        );
    }

    #[test]
    fn no_tools_key_without_tools() {
        let mut c = sample();
        c.tools.clear();
        let row = row_json(Format::Messages, TrainOn::All, &c).unwrap();
        assert!(row.get("tools").is_none());
    }
}
