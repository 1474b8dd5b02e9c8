//! The one conversation model every reader produces and every consumer
//! (export's writers, the LLM proxy, `oclagl show`) uses, and the readers of
//! each span convention that carries messages ([`agl`], [`genai`],
//! [`openinference`]), and of the OpenAI-compatible bodies the LLM proxy
//! records ([`openai`]).
//!
//! The model keeps what a training row needs and nothing is flattened to
//! text: tool calls keep their ids and arguments, tool results the id of the
//! call they answer, tools their JSON schemas.

pub mod agl;
pub mod attrs;
pub mod genai;
pub mod openai;
pub mod openinference;

use serde_json::Value;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions from the application (OpenAI's `system`).
    System,
    /// Instructions from the developer (OpenAI's newer name for `system`).
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result, answering a call of the assistant.
    Tool,
}

impl Role {
    /// The chat role a span names. OpenClaw transcripts call tool results
    /// `toolResult`; AGL's adapter knows only the OpenAI roles (its `function`
    /// role cannot be validated without a name, so it is not accepted either).
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" | "toolResult" => Role::Tool,
            _ => return None,
        })
    }

    /// The role's name in OpenAI-style chat messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One call of a tool by the assistant.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call id as the model produced it (`None` if the span did not say).
    pub id: Option<String>,
    /// The tool called.
    pub name: String,
    /// The arguments as recorded: usually a JSON text (OpenAI style), or a
    /// JSON value when the span carried them structured.
    pub arguments: Value,
}

impl ToolCall {
    /// The arguments as a JSON text (OpenAI's `function.arguments`).
    pub fn arguments_text(&self) -> String {
        match &self.arguments {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// The arguments as a JSON value (TRL's `function.arguments`); `None` when
    /// they are a text that is not JSON.
    pub fn arguments_value(&self) -> Option<Value> {
        match &self.arguments {
            Value::String(s) => serde_json::from_str(s).ok(),
            other => Some(other.clone()),
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// `None` is a message without content (an assistant turn that only
    /// calls tools, or a completion that recorded none).
    pub content: Option<String>,
    /// The participant's name, or for a tool message the tool's name.
    pub name: Option<String>,
    /// The tools the assistant calls in this message.
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message with only a role and content.
    pub fn new(role: Role, content: Option<String>) -> Message {
        Message {
            role,
            content,
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool the assistant could call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The tool's name, as the model calls it.
    pub name: String,
    /// What the tool does, as offered to the model.
    pub description: Option<String>,
    /// JSON schema of the arguments, when the span recorded one.
    pub parameters: Option<Value>,
}

/// A conversation: the messages of one training row and the tools offered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// The tools the model was offered (empty when the span recorded none).
    pub tools: Vec<Tool>,
}

impl Conversation {
    /// Assistant messages (turns the model produced).
    pub fn turns(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count()
    }

    /// Tool calls across all messages.
    pub fn tool_calls(&self) -> usize {
        self.messages.iter().map(|m| m.tool_calls.len()).sum()
    }

    /// The name of the tool a call id refers to, from the calls made so far.
    pub fn tool_name_of(&self, call_id: &str) -> Option<&str> {
        self.messages
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|c| c.id.as_deref() == Some(call_id))
            .map(|c| c.name.as_str())
    }
}

/// Why a span's messages could not be read (a malformed span, as AGL would
/// also refuse it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// The span conventions that carry messages, in order of preference when a
/// span carries several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Convention {
    /// AGL / OpenLLMetry: `gen_ai.prompt.<i>.*`, `gen_ai.completion.<i>.*`.
    Agl,
    /// OTel GenAI: `gen_ai.input.messages`, `gen_ai.output.messages`.
    GenAi,
    /// OpenInference: `llm.input_messages.<i>.*`, `llm.output_messages.<i>.*`.
    OpenInference,
}

fn under(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl Convention {
    /// The convention whose messages an attribute key holds, if any.
    pub fn of_key(key: &str) -> Option<Convention> {
        let (head, _) = key.split_once('.')?;
        match head {
            "gen_ai" => {
                if key.starts_with("gen_ai.prompt.") || key.starts_with("gen_ai.completion.") {
                    Some(Convention::Agl)
                } else if under(key, "gen_ai.input.messages")
                    || under(key, "gen_ai.output.messages")
                {
                    Some(Convention::GenAi)
                } else {
                    None
                }
            }
            "llm"
                if key.starts_with("llm.input_messages.")
                    || key.starts_with("llm.output_messages.") =>
            {
                Some(Convention::OpenInference)
            }
            _ => None,
        }
    }

    /// The attributes this convention reads, for messages to the user.
    pub fn name(self) -> &'static str {
        match self {
            Convention::Agl => "gen_ai.prompt/completion",
            Convention::GenAi => "gen_ai.input/output.messages",
            Convention::OpenInference => "llm.input/output_messages",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_map_to_conventions() {
        assert_eq!(
            Convention::of_key("gen_ai.prompt.0.role"),
            Some(Convention::Agl)
        );
        assert_eq!(
            Convention::of_key("gen_ai.completion.0.content"),
            Some(Convention::Agl)
        );
        assert_eq!(
            Convention::of_key("gen_ai.input.messages"),
            Some(Convention::GenAi)
        );
        assert_eq!(
            Convention::of_key("gen_ai.output.messages.0.role"),
            Some(Convention::GenAi)
        );
        assert_eq!(
            Convention::of_key("llm.input_messages.0.message.role"),
            Some(Convention::OpenInference)
        );
        for other in [
            "gen_ai.request.model",
            "gen_ai.input.messages_count",
            "gen_ai.prompt",
            "llm.model_name",
            "tool.name",
            "plain",
        ] {
            assert_eq!(Convention::of_key(other), None, "{other}");
        }
    }

    #[test]
    fn roles_round_trip_and_tool_result_is_tool() {
        for r in ["system", "developer", "user", "assistant", "tool"] {
            assert_eq!(Role::parse(r).map(Role::as_str), Some(r));
        }
        assert_eq!(Role::parse("toolResult"), Some(Role::Tool));
        assert_eq!(Role::parse("function"), None);
        assert_eq!(Role::parse("User"), None);
    }

    #[test]
    fn arguments_convert_both_ways() {
        let text = ToolCall {
            id: Some("c1".into()),
            name: "f".into(),
            arguments: json!("{\"city\": \"Paris\"}"),
        };
        assert_eq!(text.arguments_text(), "{\"city\": \"Paris\"}");
        assert_eq!(text.arguments_value(), Some(json!({"city": "Paris"})));
        let structured = ToolCall {
            arguments: json!({"n": 1}),
            ..text.clone()
        };
        assert_eq!(structured.arguments_text(), "{\"n\":1}");
        let broken = ToolCall {
            arguments: json!("{not json"),
            ..text
        };
        assert_eq!(broken.arguments_value(), None);
    }

    #[test]
    fn counts_and_tool_name_lookup() {
        let mut call = Message::new(Role::Assistant, None);
        call.tool_calls.push(ToolCall {
            id: Some("c1".into()),
            name: "weather".into(),
            arguments: json!("{}"),
        });
        let c = Conversation {
            messages: vec![
                Message::new(Role::User, Some("hi".into())),
                call,
                Message::new(Role::Assistant, Some("done".into())),
            ],
            tools: vec![],
        };
        assert_eq!(c.turns(), 2);
        assert_eq!(c.tool_calls(), 1);
        assert_eq!(c.tool_name_of("c1"), Some("weather"));
        assert_eq!(c.tool_name_of("c2"), None);
    }
}
