//! `--format openai`: OpenAI chat fine-tuning JSONL. Tool calls carry their
//! ids and `arguments` as a JSON string, tool results their `tool_call_id`,
//! tools their JSON schemas; `--train-on last` sets `weight` on assistant
//! messages. `developer` messages are written as `system`.

use super::{tool_defs, Call, Msg, Row, TrainOn, Unrepresentable};
use crate::conversation::{Conversation, Role};

pub(super) fn row(c: &Conversation, train_on: TrainOn) -> Result<Row<'_, String>, Unrepresentable> {
    let last_assistant = c.messages.iter().rposition(|m| m.role == Role::Assistant);
    let mut messages = Vec::with_capacity(c.messages.len());
    for (i, m) in c.messages.iter().enumerate() {
        let role = match m.role {
            Role::Developer => "system",
            other => other.as_str(),
        };
        let text = m.content.as_deref();
        let mut out = Msg::new(role, Some(Some(text.unwrap_or(""))));
        match m.role {
            Role::Assistant => {
                if text.is_none() && !m.tool_calls.is_empty() {
                    out.content = Some(None);
                }
                for t in &m.tool_calls {
                    let id = t.id.as_deref().ok_or_else(|| {
                        Unrepresentable(format!("tool call {:?} has no id", t.name))
                    })?;
                    out.tool_calls
                        .push(Call::new(Some(id), &t.name, t.arguments_text()));
                }
                if train_on == TrainOn::Last {
                    out.weight = Some(u8::from(Some(i) == last_assistant));
                }
                out.name = m.name.as_deref();
            }
            Role::Tool => {
                out.tool_call_id = Some(m.tool_call_id.as_deref().ok_or_else(|| {
                    Unrepresentable("a tool result has no tool_call_id".to_string())
                })?);
            }
            _ => out.name = m.name.as_deref(),
        }
        messages.push(out);
    }
    let tools = tool_defs(&c.tools, None);
    let parallel = (!tools.is_empty()).then(|| c.messages.iter().any(|m| m.tool_calls.len() > 1));
    Ok(Row {
        messages,
        tools,
        parallel_tool_calls: parallel,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{row_json, sample};
    use super::super::{Format, TrainOn};
    use serde_json::json;

    #[test]
    fn openai_fine_tuning_shape() {
        let row = row_json(Format::Openai, TrainOn::Last, &sample()).unwrap();
        assert_eq!(
            row,
            json!({
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "weather in Paris?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}],
                     "weight": 0},
                    {"role": "tool", "content": "18°C", "tool_call_id": "call_1"},
                    {"role": "assistant", "content": "18°C in Paris.", "weight": 1}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "weather", "parameters": {"type": "object"}}}],
                "parallel_tool_calls": false
            })
        );
        let all = row_json(Format::Openai, TrainOn::All, &sample()).unwrap();
        assert!(all["messages"][4].get("weight").is_none());
    }

    #[test]
    fn structured_arguments_become_json_text() {
        let mut c = sample();
        c.messages[2].tool_calls[0].arguments = json!({"city": "Paris"});
        let row = row_json(Format::Openai, TrainOn::All, &c).unwrap();
        assert_eq!(
            row["messages"][2]["tool_calls"][0]["function"]["arguments"],
            json!("{\"city\":\"Paris\"}")
        );
    }

    #[test]
    fn ids_are_required() {
        let mut c = sample();
        c.messages[3].tool_call_id = None;
        assert!(row_json(Format::Openai, TrainOn::All, &c).is_err());
        let mut c = sample();
        c.messages[2].tool_calls[0].id = None;
        assert!(row_json(Format::Openai, TrainOn::All, &c).is_err());
    }
}
