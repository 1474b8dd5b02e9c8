//! `--format dpo`: Hugging Face TRL conversational preference rows,
//! `{"prompt", "chosen", "rejected", "tools"?}`, from two attempts of one
//! task: `prompt` the messages both saw, `chosen` and `rejected` each
//! attempt's continuation from the model's first answer on, in TRL's
//! message shape (`--format trl`).

use serde::Serialize;
use serde_json::Value;

use super::{trl, Msg, ToolDef, Unrepresentable};
use crate::conversation::Conversation;

#[derive(Serialize)]
struct PairRow<'a> {
    prompt: Vec<Msg<'a, Value>>,
    chosen: Vec<Msg<'a, Value>>,
    rejected: Vec<Msg<'a, Value>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
}

/// Appends one JSONL row (without the newline) for a pair whose first
/// `shared` messages are the prompt.
pub fn write_pair(
    chosen: &Conversation,
    rejected: &Conversation,
    shared: usize,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let mut better = trl::row(chosen)?;
    let mut worse = trl::row(rejected)?;
    if shared > better.messages.len() || shared > worse.messages.len() {
        return Err(Unrepresentable(
            "the pair's prompt is longer than an attempt".into(),
        ));
    }
    let chosen_part = better.messages.split_off(shared);
    let rejected_part = worse.messages.split_off(shared);
    let row = PairRow {
        prompt: better.messages,
        chosen: chosen_part,
        rejected: rejected_part,
        tools: better.tools,
    };
    serde_json::to_writer(&mut *out, &row).map_err(|e| Unrepresentable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;
    use crate::conversation::{Message, Role};
    use serde_json::json;

    #[test]
    fn trl_preference_shape() {
        let chosen = sample();
        let mut rejected = sample();
        rejected.messages.truncate(2);
        rejected
            .messages
            .push(Message::new(Role::Assistant, Some("No idea.".into())));
        let mut out = Vec::new();
        write_pair(&chosen, &rejected, 2, &mut out).unwrap();
        let row: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            row["prompt"],
            json!([{"role": "system", "content": "be brief"},
                   {"role": "user", "content": "weather in Paris?"}])
        );
        assert_eq!(row["chosen"].as_array().unwrap().len(), 3);
        assert_eq!(
            row["chosen"][0]["tool_calls"][0]["function"]["arguments"],
            json!({"city": "Paris"})
        );
        assert_eq!(
            row["rejected"],
            json!([{"role": "assistant", "content": "No idea."}])
        );
        assert_eq!(row["tools"][0]["function"]["name"], "weather");
    }
}
