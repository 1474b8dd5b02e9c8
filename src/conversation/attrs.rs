//! Helpers every convention reader shares: rebuilding structured values from
//! flat dotted attribute keys, and the tool-call and tool-definition shapes
//! the conventions have in common.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Malformed, Tool, ToolCall};

/// A key segment that is a list index (`0`, `12`, also `01` as AGL's
/// `str.isdigit()` + `int()` reads it).
fn index(segment: &str) -> Option<u128> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(segment.parse().unwrap_or(u128::MAX))
}

fn split_head(key: &str) -> (&str, Option<&str>) {
    match key.split_once('.') {
        Some((head, tail)) => (head, Some(tail)),
        None => (key, None),
    }
}

/// The attributes under `prefix.`, regrouped into the structure they were
/// flattened from; `None` when there are none.
///
/// The rules are AGL's `group_genai_dict` (what `TraceToMessages` applies):
/// if any key's first segment is a number the level is a list, ordered by
/// index, and keys without an index are dropped; otherwise it is an object,
/// where a nested group overrides a plain value of the same name. A value
/// sitting directly at an index becomes `{"": value}`.
pub fn unflatten(attrs: &Map<String, Value>, prefix: &str) -> Option<Value> {
    let entries: Vec<(&str, &Value)> = attrs
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
            Some((rest, v))
        })
        .collect();
    (!entries.is_empty()).then(|| group(&entries))
}

fn group(entries: &[(&str, &Value)]) -> Value {
    if entries
        .iter()
        .any(|(k, _)| index(split_head(k).0).is_some())
    {
        let mut items: BTreeMap<u128, Vec<(&str, &Value)>> = BTreeMap::new();
        for (key, value) in entries {
            let (head, tail) = split_head(key);
            if let Some(i) = index(head) {
                items
                    .entry(i)
                    .or_default()
                    .push((tail.unwrap_or(""), *value));
            }
        }
        Value::Array(items.values().map(|g| group(g)).collect())
    } else {
        let mut out = Map::new();
        let mut nested: Vec<(&str, Vec<(&str, &Value)>)> = Vec::new();
        for (key, value) in entries {
            match split_head(key) {
                (head, Some(tail)) => match nested.iter_mut().find(|(h, _)| *h == head) {
                    Some((_, group)) => group.push((tail, *value)),
                    None => nested.push((head, vec![(tail, *value)])),
                },
                (leaf, None) => {
                    out.insert(leaf.to_string(), (*value).clone());
                }
            }
        }
        for (head, sub) in nested {
            out.insert(head.to_string(), group(&sub));
        }
        Value::Object(out)
    }
}

/// A structured attribute that may arrive either as JSON text at `key` or,
/// when the sender set a structured value, flattened into `key.…` keys.
pub fn structured(attrs: &Map<String, Value>, key: &str) -> Result<Option<Value>, Malformed> {
    match attrs.get(key) {
        Some(Value::String(text)) => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| Malformed(format!("{key} is not JSON: {e}"))),
        Some(other) => Ok(Some(other.clone())),
        None => Ok(unflatten(attrs, key)),
    }
}

/// `v` as an array (`what` names it in the error).
pub fn array<'a>(v: &'a Value, what: &str) -> Result<&'a [Value], Malformed> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| Malformed(format!("{what} is not a list")))
}

/// `v` as an object (`what` names it in the error).
pub fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, Malformed> {
    v.as_object()
        .ok_or_else(|| Malformed(format!("{what} is not an object")))
}

/// An optional string field; present but not a string is an error.
pub fn opt_str(
    obj: &Map<String, Value>,
    field: &str,
    what: &str,
) -> Result<Option<String>, Malformed> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Malformed(format!("{what}.{field} is not a string"))),
    }
}

/// A required string field.
pub fn req_str(obj: &Map<String, Value>, field: &str, what: &str) -> Result<String, Malformed> {
    opt_str(obj, field, what)?.ok_or_else(|| Malformed(format!("{what} has no {field}")))
}

/// A tool call in any of the shapes the conventions use: flat
/// `{id, name, arguments}` (OpenLLMetry/AGL), OpenAI's
/// `{id, type, function: {name, arguments}}`, OTel GenAI's
/// `{type: "tool_call", id, name, arguments}` or OpenInference's
/// `{tool_call: {id, function: {name, arguments}}}`.
pub fn tool_call(v: &Value, what: &str) -> Result<ToolCall, Malformed> {
    let obj = object(v, what)?;
    let obj = match obj.get("tool_call") {
        Some(inner) => object(inner, what)?,
        None => obj,
    };
    let id = opt_str(obj, "id", what)?;
    let function = match obj.get("function") {
        Some(f) => object(f, what)?,
        None => obj,
    };
    let name = req_str(function, "name", what)?;
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(a) => a.clone(),
    };
    Ok(ToolCall {
        id,
        name,
        arguments,
    })
}

/// A tool definition: OpenAI's `{type: "function", function: {name,
/// description, parameters}}` or the flat `{name, description, parameters}`
/// (OTel GenAI, AGL). Parameters given as JSON text are parsed.
pub fn tool_definition(v: &Value, what: &str) -> Result<Tool, Malformed> {
    let obj = object(v, what)?;
    let obj = match obj.get("function") {
        Some(f) => object(f, what)?,
        None => obj,
    };
    let parameters = match obj.get("parameters") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(
            serde_json::from_str(text)
                .map_err(|e| Malformed(format!("{what}.parameters is not JSON: {e}")))?,
        ),
        Some(p) => Some(p.clone()),
    };
    Ok(Tool {
        name: req_str(obj, "name", what)?,
        description: opt_str(obj, "description", what)?,
        parameters,
    })
}

/// A tool result's content as text: strings as they are, anything else as
/// its JSON text.
pub fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first of `keys` holding a non-empty string.
pub fn first_str(attrs: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| attrs.get(*k)?.as_str().filter(|s| !s.is_empty()))
        .map(str::to_string)
}

/// The first of `keys` holding a count (a number or a numeric string); 0 if none.
pub fn first_count(attrs: &Map<String, Value>, keys: &[&str]) -> u64 {
    keys.iter()
        .find_map(|k| match attrs.get(*k)? {
            Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unflatten_follows_agl_grouping() {
        let a = attrs(json!({
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "be brief",
            "gen_ai.prompt.1.tool_calls.0.id": "c1",
            "gen_ai.prompt.10.role": "tool",
            "gen_ai.prompt.note": "dropped: not indexed",
            "gen_ai.prompt_tokens": 3,
            "gen_ai.completion.0.role": "assistant"
        }));
        assert_eq!(
            unflatten(&a, "gen_ai.prompt"),
            Some(json!([
                {"role": "system", "content": "be brief"},
                {"role": "user", "tool_calls": [{"id": "c1"}]},
                {"role": "tool"}
            ]))
        );
        assert_eq!(unflatten(&a, "gen_ai.request"), None);
    }

    #[test]
    fn unflatten_objects_nested_wins_and_index_leaf() {
        let a = attrs(json!({
            "p.x": 1,
            "p.x.y": 2,
            "p.z": [1, 2],
            "q.0": "leaf",
            "q.01.a": "merged with 1",
            "q.1.b": "b"
        }));
        assert_eq!(
            unflatten(&a, "p"),
            Some(json!({"x": {"y": 2}, "z": [1, 2]}))
        );
        assert_eq!(
            unflatten(&a, "q"),
            Some(json!([{"": "leaf"}, {"a": "merged with 1", "b": "b"}]))
        );
    }

    #[test]
    fn structured_reads_json_text_or_flattened_keys() {
        let text = attrs(json!({"m": "[{\"role\":\"user\"}]"}));
        assert_eq!(
            structured(&text, "m").unwrap(),
            Some(json!([{"role": "user"}]))
        );
        let flat = attrs(json!({"m.0.role": "user", "m.0.parts.0.type": "text"}));
        assert_eq!(
            structured(&flat, "m").unwrap(),
            Some(json!([{"role": "user", "parts": [{"type": "text"}]}]))
        );
        assert!(structured(&attrs(json!({"m": "{oops"})), "m").is_err());
        assert_eq!(structured(&attrs(json!({})), "m").unwrap(), None);
    }

    #[test]
    fn tool_calls_in_every_shape() {
        let expect = ToolCall {
            id: Some("c1".into()),
            name: "get".into(),
            arguments: json!("{\"a\":1}"),
        };
        for v in [
            json!({"id": "c1", "name": "get", "arguments": "{\"a\":1}"}),
            json!({"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{\"a\":1}"}}),
            json!({"tool_call": {"id": "c1", "function": {"name": "get", "arguments": "{\"a\":1}"}}}),
        ] {
            assert_eq!(tool_call(&v, "call").unwrap(), expect);
        }
        let no_args = tool_call(&json!({"type": "tool_call", "name": "x"}), "c").unwrap();
        assert_eq!((no_args.id, no_args.arguments), (None, json!({})));
        assert!(tool_call(&json!({"id": "c1"}), "c").is_err());
        assert!(tool_call(&json!("c1"), "c").is_err());
    }

    #[test]
    fn tool_definitions_in_both_shapes() {
        let flat = json!({"name": "f", "description": "d", "parameters": "{\"type\":\"object\"}"});
        let openai = json!({"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}});
        for v in [flat, openai] {
            let t = tool_definition(&v, "tool").unwrap();
            assert_eq!(t.name, "f");
            assert_eq!(t.description.as_deref(), Some("d"));
            assert_eq!(t.parameters, Some(json!({"type": "object"})));
        }
        assert!(tool_definition(&json!({"name": "f", "parameters": "{"}), "t").is_err());
        assert!(tool_definition(&json!({"description": "no name"}), "t").is_err());
    }
}
