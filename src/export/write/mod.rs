//! Dataset writers, one per format, all from the one conversation model.
//!
//! The formats share OpenAI's chat shapes (messages with `tool_calls`,
//! tools as `{"type": "function", "function": {...}}`); the row types here
//! are those shapes, and each writer fills them by its format's rules.

pub mod dpo;
pub mod messages;
pub mod openai;
pub mod trl;

use serde::Serialize;
use serde_json::Value;

use crate::conversation::{Conversation, Tool};

/// Dataset formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The seed's rows: AGL `TraceToMessages` output, `{"messages", "tools"?}`.
    Messages,
    /// OpenAI chat fine-tuning JSONL (arguments as JSON text, `weight`).
    Openai,
    /// Hugging Face TRL conversational (arguments as objects, tool names).
    Trl,
    /// TRL conversational preference pairs (`prompt`, `chosen`, `rejected`)
    /// from the attempts of one task.
    Dpo,
}

impl Format {
    /// The format's name on the command line (`--format`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Messages => "messages",
            Format::Openai => "openai",
            Format::Trl => "trl",
            Format::Dpo => "dpo",
        }
    }
}

/// Which assistant messages a row trains on (OpenAI's per-message `weight`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TrainOn {
    /// Every assistant message (no `weight` written).
    #[default]
    All,
    /// Only the last assistant message (`weight` 0 on the others, 1 on it).
    Last,
}

/// A conversation the format cannot express (the row is dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unrepresentable(pub String);

/// Appends one JSONL row (without the newline) for `conversation`.
pub fn write_row(
    format: Format,
    train_on: TrainOn,
    conversation: &Conversation,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let written = match format {
        Format::Messages => serde_json::to_writer(&mut *out, &messages::row(conversation)),
        Format::Openai => serde_json::to_writer(&mut *out, &openai::row(conversation, train_on)?),
        Format::Trl => serde_json::to_writer(&mut *out, &trl::row(conversation)?),
        Format::Dpo => {
            return Err(Unrepresentable(
                "--format dpo writes pairs of attempts (dpo::write_pair)".into(),
            ))
        }
    };
    // Serializing borrowed strings and JSON values into memory cannot fail.
    written.map_err(|e| Unrepresentable(e.to_string()))
}

#[derive(Serialize)]
struct Row<'a, A: Serialize> {
    messages: Vec<Msg<'a, A>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
}

#[derive(Serialize)]
struct Msg<'a, A: Serialize> {
    role: &'static str,
    /// Outer `None`: no `content` key; `Some(None)`: `"content": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<Call<'a, A>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u8>,
}

impl<'a, A: Serialize> Msg<'a, A> {
    fn new(role: &'static str, content: Option<Option<&'a str>>) -> Self {
        Msg {
            role,
            content,
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            weight: None,
        }
    }
}

#[derive(Serialize)]
struct Call<'a, A: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a, A>,
}

impl<'a, A: Serialize> Call<'a, A> {
    fn new(id: Option<&'a str>, name: &'a str, arguments: A) -> Self {
        Call {
            id,
            kind: "function",
            function: Function { name, arguments },
        }
    }
}

#[derive(Serialize)]
struct Function<'a, A: Serialize> {
    name: &'a str,
    arguments: A,
}

#[derive(Serialize)]
struct ToolDef<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: ToolFn<'a>,
}

#[derive(Serialize)]
struct ToolFn<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Value>,
}

/// Tools in OpenAI's shape; `default_description` fills a missing one.
fn tool_defs<'a>(tools: &'a [Tool], default_description: Option<&'a str>) -> Vec<ToolDef<'a>> {
    tools
        .iter()
        .map(|t| ToolDef {
            kind: "function",
            function: ToolFn {
                name: &t.name,
                description: t.description.as_deref().or(default_description),
                parameters: t.parameters.as_ref(),
            },
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::conversation::{Message, Role, ToolCall};
    use serde_json::json;

    /// system, user, assistant calling a tool, the tool's result, answer.
    pub fn sample() -> Conversation {
        let mut call = Message::new(Role::Assistant, None);
        call.tool_calls.push(ToolCall {
            id: Some("call_1".into()),
            name: "weather".into(),
            arguments: json!("{\"city\":\"Paris\"}"),
        });
        let mut result = Message::new(Role::Tool, Some("18°C".into()));
        result.tool_call_id = Some("call_1".into());
        Conversation {
            messages: vec![
                Message::new(Role::Developer, Some("be brief".into())),
                Message::new(Role::User, Some("weather in Paris?".into())),
                call,
                result,
                Message::new(Role::Assistant, Some("18°C in Paris.".into())),
            ],
            tools: vec![Tool {
                name: "weather".into(),
                description: None,
                parameters: Some(json!({"type": "object"})),
            }],
        }
    }

    pub fn row_json(
        format: Format,
        train_on: TrainOn,
        c: &Conversation,
    ) -> Result<Value, Unrepresentable> {
        let mut out = Vec::new();
        write_row(format, train_on, c, &mut out)?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn rows_are_single_lines() {
        let mut c = sample();
        c.messages[1].content = Some("two\nlines".into());
        for format in [Format::Messages, Format::Openai, Format::Trl] {
            let mut out = Vec::new();
            write_row(format, TrainOn::All, &c, &mut out).unwrap();
            assert!(!out.contains(&b'\n'), "{}", format.name());
        }
    }
}
