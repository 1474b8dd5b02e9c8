//! What one model call said, read from the OpenAI-compatible bodies the proxy
//! forwarded: `POST /v1/chat/completions` and `POST /v1/responses`, answered
//! as JSON or as a server-sent event stream (reassembled here).
//!
//! Both APIs are read into the conversation model export uses
//! ([`crate::conversation`]), so a recorded call and an exported row mean
//! the same thing. The proxy reads a call's bodies when it records the call
//! (for the model, usage and whether they can be read at all), and the
//! trace-file builder reads them again to write AGL's message attributes:
//! the bodies are the one copy of the call's request and answer the store
//! keeps. Fields the model has no place for stay in those bodies.

use serde_json::{Map, Value};

use crate::conversation::attrs::{
    array, content_text, object, opt_str, req_str, tool_call, tool_definition,
};
use crate::conversation::{Malformed, Message, Role, Tool, ToolCall};

/// The two model-call APIs the proxy records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/responses`.
    Responses,
}

impl Api {
    /// The API a request path (after `/v1`) names, if it is one of the two.
    pub fn of_path(rest: &str) -> Option<Api> {
        match rest {
            "/chat/completions" => Some(Api::Chat),
            "/responses" => Some(Api::Responses),
            _ => None,
        }
    }
}

/// What reading a call's bodies may spend (a parse tree), as a multiple of
/// their size or of [`PARSE_BUDGET_FLOOR`], whichever is larger.
pub const PARSE_BUDGET_FACTOR: usize = 4;

/// Bodies smaller than this (the default `--llm-record-max`) may still
/// spend as much as bodies of this size: token ids and other small values
/// take many times their text as a tree.
pub const PARSE_BUDGET_FLOOR: usize = 4 << 20;

/// What reading bodies of `len` bytes together may spend. The proxy spends
/// at most this (and at most its recording cap's multiple), and whoever
/// reads the stored bodies again may spend this much, so a call the proxy
/// could read can always be read again.
pub fn parse_budget(len: usize) -> usize {
    PARSE_BUDGET_FACTOR.saturating_mul(len.max(PARSE_BUDGET_FLOOR))
}

/// The request of a call.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Request {
    /// The model asked for.
    pub model: Option<String>,
    /// The conversation the model saw, system prompt included.
    pub messages: Vec<Message>,
    /// The tool definitions offered.
    pub tools: Vec<Tool>,
    /// Sampling parameters as `gen_ai.request.*` attributes.
    pub params: Vec<(&'static str, Value)>,
}

/// One answer of a call (a chat completion has one per choice).
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The assistant message: text and tool calls.
    pub message: Message,
    /// Why the model stopped (`stop`, `tool_calls`, `length`…).
    pub finish_reason: Option<String>,
}

/// The answer of a call.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Response {
    /// The provider's id of the answer.
    pub id: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// The answers, in choice order.
    pub choices: Vec<Choice>,
    /// Prompt tokens, from the usage block.
    pub input_tokens: Option<u64>,
    /// Completion tokens, from the usage block.
    pub output_tokens: Option<u64>,
    /// Total tokens, from the usage block.
    pub total_tokens: Option<u64>,
    /// Prompt tokens served from the provider's cache.
    pub cached_tokens: Option<u64>,
    /// Token ids of the prompt, when the provider returns them (vLLM's
    /// `return_token_ids`).
    pub prompt_token_ids: Option<Vec<i64>>,
    /// Token ids of the first choice's answer, likewise.
    pub response_token_ids: Option<Vec<i64>>,
}

/// The model a request body names, if it is a JSON object that names one.
pub fn model_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        model: String,
    }
    serde_json::from_slice::<Named>(body).ok().map(|n| n.model)
}

/// The most tool calls, or choices, one answer may hold: a stream's `index`
/// at or past it is no real answer's, and is refused rather than made room
/// for.
pub const MAX_INDEX: u64 = 1024;

/// What one JSON value of a parse tree may take at most: the value itself,
/// and, in an object, its key and the map's entry around them.
const VALUE_COST: usize =
    std::mem::size_of::<Value>() + std::mem::size_of::<String>() + 4 * std::mem::size_of::<usize>();

/// An upper bound of the values a JSON text holds: every value but the first
/// follows a `[`, `{`, `,` or `:` outside strings.
fn json_values(text: &[u8]) -> usize {
    let (mut values, mut in_string, mut escaped) = (1, false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' | b',' | b':' => values += 1,
                _ => {}
            }
        }
    }
    values
}

/// Parses one JSON document whose parse tree fits in `budget` bytes (checked
/// before anything is built: a body of small values can take tens of times
/// its size as a tree).
fn json(body: &[u8], what: &str, budget: usize) -> Result<Value, Malformed> {
    let values = json_values(body);
    let cost = values.saturating_mul(VALUE_COST).saturating_add(body.len());
    if cost > budget {
        return Err(Malformed(format!(
            "the {what} holds up to {values} JSON values, more than the {budget} bytes \
             a recording may spend reading one body can hold"
        )));
    }
    serde_json::from_slice(body).map_err(|e| Malformed(format!("the {what} is not JSON: {e}")))
}

/// Reads a request body; its parse tree may take `budget` bytes.
pub fn request(api: Api, body: &[u8], budget: usize) -> Result<Request, Malformed> {
    let body = json(body, "request", budget)?;
    let obj = object(&body, "the request")?;
    let mut out = Request {
        model: opt_str(obj, "model", "the request")?,
        params: params(obj),
        ..Request::default()
    };
    match api {
        Api::Chat => {
            let messages = obj
                .get("messages")
                .ok_or_else(|| Malformed("the request has no messages".into()))?;
            for (i, m) in array(messages, "messages")?.iter().enumerate() {
                out.messages
                    .push(chat_message(m, &format!("messages.{i}"))?);
            }
        }
        Api::Responses => {
            if let Some(text) = opt_str(obj, "instructions", "the request")? {
                out.messages.push(Message::new(Role::System, Some(text)));
            }
            match obj.get("input") {
                Some(Value::String(text)) => out
                    .messages
                    .push(Message::new(Role::User, Some(text.clone()))),
                Some(items) => {
                    items_to_messages(array(items, "input")?, "input", &mut out.messages)?
                }
                None => {}
            }
        }
    }
    if let Some(tools) = obj.get("tools").filter(|t| !t.is_null()) {
        for (i, t) in array(tools, "tools")?.iter().enumerate() {
            out.tools.push(tool_definition(t, &format!("tools.{i}"))?);
        }
    }
    Ok(out)
}

/// Request fields that are OTel GenAI `gen_ai.request.*` attributes.
fn params(obj: &Map<String, Value>) -> Vec<(&'static str, Value)> {
    const MAP: [(&str, &str); 11] = [
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("top_k", "gen_ai.request.top_k"),
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("max_completion_tokens", "gen_ai.request.max_tokens"),
        ("max_output_tokens", "gen_ai.request.max_tokens"),
        ("seed", "gen_ai.request.seed"),
        ("frequency_penalty", "gen_ai.request.frequency_penalty"),
        ("presence_penalty", "gen_ai.request.presence_penalty"),
        ("n", "gen_ai.request.choice.count"),
        ("stream", "gen_ai.request.stream"),
    ];
    let mut out: Vec<(&'static str, Value)> = MAP
        .iter()
        .filter_map(|(field, key)| {
            let v = obj.get(*field)?;
            (v.is_number() || v.is_boolean()).then(|| (*key, v.clone()))
        })
        .collect();
    match obj.get("stop") {
        Some(Value::String(s)) => out.push((
            "gen_ai.request.stop_sequences",
            Value::from(vec![s.clone()]),
        )),
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            out.push(("gen_ai.request.stop_sequences", Value::Array(list.clone())))
        }
        _ => {}
    }
    out
}

/// Message content as text: a string, or a list of text parts joined.
fn text_content(v: Option<&Value>, what: &str) -> Result<Option<String>, Malformed> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let what = format!("{what}.content.{j}");
                let part = object(part, &what)?;
                match req_str(part, "type", &what)?.as_str() {
                    "text" | "input_text" | "output_text" => {
                        text.push_str(&req_str(part, "text", &what)?)
                    }
                    "refusal" => text.push_str(&req_str(part, "refusal", &what)?),
                    other => {
                        return Err(Malformed(format!(
                            "{what} is a {other:?} part, which the conversation model cannot hold"
                        )))
                    }
                }
            }
            Ok(Some(text))
        }
        Some(_) => Err(Malformed(format!(
            "{what}.content is neither text nor parts"
        ))),
    }
}

fn role(m: &Map<String, Value>, what: &str) -> Result<Role, Malformed> {
    let name = req_str(m, "role", what)?;
    Role::parse(&name).ok_or_else(|| Malformed(format!("{what}.role {name:?} is not a chat role")))
}

/// A chat completions message (request `messages[i]` or response `message`).
fn chat_message(v: &Value, what: &str) -> Result<Message, Malformed> {
    let m = object(v, what)?;
    let mut out = Message::new(role(m, what)?, text_content(m.get("content"), what)?);
    out.name = opt_str(m, "name", what)?;
    out.tool_call_id = opt_str(m, "tool_call_id", what)?;
    if let Some(calls) = m.get("tool_calls").filter(|c| !c.is_null()) {
        for (j, c) in array(calls, &format!("{what}.tool_calls"))?
            .iter()
            .enumerate()
        {
            out.tool_calls
                .push(tool_call(c, &format!("{what}.tool_calls.{j}"))?);
        }
    }
    Ok(out)
}

/// Responses API items (`input` or `output`) as chat messages: a
/// `function_call` joins the assistant message before it (or starts one), a
/// `function_call_output` is a tool message; reasoning is left out.
fn items_to_messages(items: &[Value], what: &str, out: &mut Vec<Message>) -> Result<(), Malformed> {
    for (i, item) in items.iter().enumerate() {
        let what = format!("{what}.{i}");
        let obj = object(item, &what)?;
        let kind = opt_str(obj, "type", &what)?.unwrap_or_else(|| "message".into());
        match kind.as_str() {
            "message" => out.push(Message::new(
                role(obj, &what)?,
                text_content(obj.get("content"), &what)?,
            )),
            "function_call" => {
                let call = ToolCall {
                    id: Some(req_str(obj, "call_id", &what)?),
                    name: req_str(obj, "name", &what)?,
                    arguments: obj.get("arguments").cloned().unwrap_or(Value::Null),
                };
                match out.last_mut() {
                    Some(m) if m.role == Role::Assistant => m.tool_calls.push(call),
                    _ => {
                        let mut m = Message::new(Role::Assistant, None);
                        m.tool_calls.push(call);
                        out.push(m);
                    }
                }
            }
            "function_call_output" => {
                let mut m = Message::new(
                    Role::Tool,
                    Some(obj.get("output").map(content_text).unwrap_or_default()),
                );
                m.tool_call_id = Some(req_str(obj, "call_id", &what)?);
                out.push(m);
            }
            "reasoning" => {}
            other => {
                return Err(Malformed(format!(
                    "{what} is a {other:?} item, which the conversation model cannot hold"
                )))
            }
        }
    }
    Ok(())
}

/// Reads a response body, JSON or an event stream. Each parse tree (the
/// body's, or one event's) may take `budget` bytes; a stream is folded event
/// by event into the answer, which keeps only what the answer says, so the
/// fold takes about the size of the text it holds.
pub fn response(
    api: Api,
    body: &[u8],
    event_stream: bool,
    budget: usize,
) -> Result<Response, Malformed> {
    match (api, event_stream) {
        (Api::Chat, true) => {
            let mut stream = ChatStream::default();
            for_each_event(body, budget, |n, event| stream.add(n, event))?;
            stream.finish()
        }
        (Api::Responses, true) => {
            // The last event that carries the whole response
            // (`response.completed`, `.incomplete` or `.failed`).
            let mut last = None;
            for_each_event(body, budget, |_, mut event| {
                if let Some(r) = event
                    .get_mut("response")
                    .filter(|r| r.get("output").is_some())
                {
                    last = Some(r.take());
                }
                Ok(())
            })?;
            let last =
                last.ok_or_else(|| Malformed("the event stream has no final response".into()))?;
            responses_response(&last)
        }
        (Api::Chat, false) => chat_response(&json(body, "response", budget)?),
        (Api::Responses, false) => responses_response(&json(body, "response", budget)?),
    }
}

/// Hands each `data` payload of an event stream, parsed, to `f` with its
/// number, up to `[DONE]`.
fn for_each_event(
    body: &[u8],
    budget: usize,
    mut f: impl FnMut(usize, Value) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    let text =
        std::str::from_utf8(body).map_err(|_| Malformed("the event stream is not UTF-8".into()))?;
    let mut lines = text.split('\n');
    let (mut data, mut n) = (String::new(), 0);
    loop {
        let line = lines.next().map(|l| l.strip_suffix('\r').unwrap_or(l));
        if let Some(line) = line.filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            }
            continue;
        }
        // A blank line, or the end: the event is complete.
        if !data.is_empty() {
            let payload = std::mem::take(&mut data);
            if payload.trim() == "[DONE]" {
                return Ok(());
            }
            f(n, json(payload.as_bytes(), "stream event", budget)?)?;
            n += 1;
        }
        if line.is_none() {
            return Ok(());
        }
    }
}

fn append_str(target: &mut Map<String, Value>, key: &str, piece: &str) {
    match target.get_mut(key) {
        Some(Value::String(s)) => s.push_str(piece),
        _ => {
            target.insert(key.to_string(), Value::String(piece.to_string()));
        }
    }
}

/// Token ids that arrive in pieces.
#[derive(Debug, Default)]
enum TokenIds {
    #[default]
    Absent,
    Ids(Vec<i64>),
    /// A piece was not a list of integers.
    Broken,
}

impl TokenIds {
    /// Adds a piece; one that is not a list is ignored.
    fn extend(&mut self, piece: &Value) {
        if !piece.is_array() {
            return;
        }
        match (ids(Some(piece)), &mut *self) {
            (_, TokenIds::Broken) => {}
            (None, _) => *self = TokenIds::Broken,
            (Some(new), TokenIds::Absent) => *self = TokenIds::Ids(new),
            (Some(new), TokenIds::Ids(have)) => have.extend(new),
        }
    }

    fn into_ids(self) -> Option<Vec<i64>> {
        match self {
            TokenIds::Ids(ids) => Some(ids),
            TokenIds::Absent | TokenIds::Broken => None,
        }
    }
}

/// `chat.completion.chunk` events folded so far into the `chat.completion`
/// a non-streamed call would have answered: text and arguments are
/// concatenated, tool calls grouped by index, usage and ids kept. Only the
/// fields [`chat_response`] reads are kept.
#[derive(Debug, Default)]
struct ChatStream {
    /// `id`, `model`, `usage`, `response_token_ids`: the last value sent.
    head: Map<String, Value>,
    prompt_token_ids: TokenIds,
    /// By `index`, in the order first seen; fewer than [`MAX_INDEX`].
    choices: Vec<(u64, StreamChoice)>,
}

#[derive(Debug, Default)]
struct StreamChoice {
    /// `role`, `content`, `name`, `tool_call_id`.
    message: Map<String, Value>,
    /// By `index`; fewer than [`MAX_INDEX`].
    tool_calls: Vec<Map<String, Value>>,
    finish_reason: Option<Value>,
    token_ids: TokenIds,
}

/// The index of a choice or tool call in a stream event, refused past
/// [`MAX_INDEX`].
fn stream_index(v: &Map<String, Value>, n: usize, what: &str) -> Result<u64, Malformed> {
    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
    if index >= MAX_INDEX {
        return Err(Malformed(format!(
            "stream event {n}: {what} index {index} is past {MAX_INDEX}: \
             no real answer holds that many {what}s"
        )));
    }
    Ok(index)
}

impl ChatStream {
    fn add(&mut self, n: usize, event: Value) -> Result<(), Malformed> {
        let Value::Object(mut event) = event else {
            return Err(Malformed(format!("stream event {n} is not an object")));
        };
        if let Some(ids) = event.get("prompt_token_ids") {
            self.prompt_token_ids.extend(ids);
        }
        for key in ["id", "model", "usage", "response_token_ids"] {
            if let Some(v) = event.remove(key).filter(|v| !v.is_null()) {
                self.head.insert(key.to_string(), v);
            }
        }
        let Some(Value::Array(list)) = event.get("choices") else {
            return Ok(());
        };
        for c in list {
            let Some(c) = c.as_object() else { continue };
            let index = stream_index(c, n, "choice")?;
            let slot = match self.choices.iter().position(|(i, _)| *i == index) {
                Some(p) => p,
                None => {
                    self.choices.push((index, StreamChoice::default()));
                    self.choices.len() - 1
                }
            };
            let choice = &mut self.choices[slot].1;
            if let Some(reason) = c.get("finish_reason").filter(|r| !r.is_null()) {
                choice.finish_reason = Some(reason.clone());
            }
            if let Some(ids) = c.get("token_ids") {
                choice.token_ids.extend(ids);
            }
            if let Some(delta) = c.get("delta").and_then(Value::as_object) {
                choice.merge(n, delta)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Response, Malformed> {
        let ChatStream {
            mut head,
            prompt_token_ids,
            mut choices,
        } = self;
        choices.sort_by_key(|(i, _)| *i);
        let mut first_token_ids = None;
        let mut list = Vec::with_capacity(choices.len());
        for (_, c) in choices {
            if first_token_ids.is_none() {
                first_token_ids = Some(c.token_ids);
            }
            let mut choice = Map::new();
            if let Some(reason) = c.finish_reason {
                choice.insert("finish_reason".into(), reason);
            }
            let mut message = c.message;
            if !c.tool_calls.is_empty() {
                let calls = c.tool_calls.into_iter().map(Value::Object).collect();
                message.insert("tool_calls".into(), Value::Array(calls));
            }
            choice.insert("message".into(), Value::Object(message));
            list.push(Value::Object(choice));
        }
        head.insert("choices".into(), Value::Array(list));
        let mut out = chat_response(&Value::Object(head))?;
        out.prompt_token_ids = prompt_token_ids.into_ids();
        if out.response_token_ids.is_none() {
            out.response_token_ids = first_token_ids.and_then(TokenIds::into_ids);
        }
        Ok(out)
    }
}

impl StreamChoice {
    fn merge(&mut self, n: usize, delta: &Map<String, Value>) -> Result<(), Malformed> {
        for (k, v) in delta {
            match (k.as_str(), v) {
                (_, Value::Null) => {}
                ("tool_calls", Value::Array(calls)) => {
                    for call in calls.iter().filter_map(Value::as_object) {
                        self.merge_call(n, call)?;
                    }
                }
                ("tool_calls", _) => {
                    return Err(Malformed(format!(
                        "stream event {n}: tool_calls is not a list"
                    )))
                }
                ("content", Value::String(s)) => append_str(&mut self.message, k, s),
                ("role" | "content" | "name" | "tool_call_id", _) => {
                    self.message.insert(k.clone(), v.clone());
                }
                // Reasoning and fields no message reads are not kept.
                _ => {}
            }
        }
        Ok(())
    }

    fn merge_call(&mut self, n: usize, call: &Map<String, Value>) -> Result<(), Malformed> {
        // Below MAX_INDEX, so it fits a usize and bounds the list.
        let index = stream_index(call, n, "tool call")? as usize;
        if self.tool_calls.len() <= index {
            self.tool_calls.resize_with(index + 1, Map::new);
        }
        let slot = &mut self.tool_calls[index];
        for (k, v) in call {
            match (k.as_str(), v) {
                (_, Value::Null) => {}
                ("function", Value::Object(f)) => {
                    let func = slot
                        .entry("function")
                        .or_insert_with(|| Value::Object(Map::new()));
                    let Some(func) = func.as_object_mut() else {
                        continue;
                    };
                    for (fk, fv) in f {
                        match (fk.as_str(), fv) {
                            ("arguments", Value::String(s)) => append_str(func, fk, s),
                            ("name" | "arguments", v) if !v.is_null() => {
                                func.insert(fk.clone(), fv.clone());
                            }
                            _ => {}
                        }
                    }
                }
                ("id" | "type" | "name" | "arguments" | "function", _) => {
                    slot.insert(k.clone(), v.clone());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn count(v: &Value, key: &str) -> Option<u64> {
    v.get(key)?.as_u64()
}

fn ids(v: Option<&Value>) -> Option<Vec<i64>> {
    let list = v?.as_array()?;
    // AGL's vLLM patch answers a list per choice; keep the first.
    let list = match list.first() {
        Some(Value::Array(first)) => first,
        _ => list,
    };
    list.iter().map(Value::as_i64).collect()
}

/// A response's id, model and token counts; `[input, output, details]`
/// name its API's usage fields.
fn response_head(obj: &Map<String, Value>, names: [&str; 3]) -> Result<Response, Malformed> {
    let [input, output, details] = names;
    let usage = obj.get("usage").cloned().unwrap_or(Value::Null);
    Ok(Response {
        id: opt_str(obj, "id", "the response")?,
        model: opt_str(obj, "model", "the response")?,
        input_tokens: count(&usage, input),
        output_tokens: count(&usage, output),
        total_tokens: count(&usage, "total_tokens"),
        cached_tokens: usage.get(details).and_then(|d| count(d, "cached_tokens")),
        ..Response::default()
    })
}

fn chat_response(v: &Value) -> Result<Response, Malformed> {
    let obj = object(v, "the response")?;
    let mut out = Response {
        prompt_token_ids: ids(obj.get("prompt_token_ids")),
        response_token_ids: ids(obj.get("response_token_ids")),
        ..response_head(
            obj,
            [
                "prompt_tokens",
                "completion_tokens",
                "prompt_tokens_details",
            ],
        )?
    };
    let choices = obj.get("choices").cloned().unwrap_or(Value::Array(vec![]));
    for (i, c) in array(&choices, "choices")?.iter().enumerate() {
        let what = format!("choices.{i}");
        let c = object(c, &what)?;
        let mut message = c
            .get("message")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        // A stream's deltas may never have named the role.
        if let Some(m) = message.as_object_mut() {
            m.entry("role").or_insert_with(|| "assistant".into());
        }
        out.choices.push(Choice {
            message: chat_message(&message, &format!("{what}.message"))?,
            finish_reason: opt_str(c, "finish_reason", &what)?,
        });
        if i == 0 && out.response_token_ids.is_none() {
            out.response_token_ids = ids(c.get("token_ids"));
        }
    }
    Ok(out)
}

fn responses_response(v: &Value) -> Result<Response, Malformed> {
    let obj = object(v, "the response")?;
    let mut messages = Vec::new();
    let output = obj.get("output").cloned().unwrap_or(Value::Array(vec![]));
    items_to_messages(array(&output, "output")?, "output", &mut messages)?;
    let mut message = Message::new(Role::Assistant, None);
    for m in messages {
        if let Some(text) = m.content {
            message
                .content
                .get_or_insert_with(String::new)
                .push_str(&text);
        }
        message.tool_calls.extend(m.tool_calls);
    }
    let finish_reason = match obj.get("status").and_then(Value::as_str) {
        Some("completed") if !message.tool_calls.is_empty() => Some("tool_calls".to_string()),
        Some("completed") => Some("stop".to_string()),
        Some("incomplete") => Some(
            match obj
                .get("incomplete_details")
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
            {
                Some("max_output_tokens") => "length".to_string(),
                Some(other) => other.to_string(),
                None => "incomplete".to_string(),
            },
        ),
        Some("failed") => Some("error".to_string()),
        _ => None,
    };
    Ok(Response {
        choices: vec![Choice {
            message,
            finish_reason,
        }],
        ..response_head(
            obj,
            ["input_tokens", "output_tokens", "input_tokens_details"],
        )?
    })
}

/// A chat request that asks for a stream, made into one that does not: its
/// body with `"stream": false` and without `stream_options`, and whether the
/// client asked for the usage in the stream (`stream_options.include_usage`).
/// `None` for a body that is not a JSON object asking for a stream.
pub fn without_streaming(body: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut obj: Map<String, Value> = serde_json::from_slice(body).ok()?;
    if obj.get("stream") != Some(&Value::Bool(true)) {
        return None;
    }
    obj.insert("stream".into(), Value::Bool(false));
    let usage = obj
        .remove("stream_options")
        .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
        .unwrap_or(false);
    serde_json::to_vec(&obj).ok().map(|b| (b, usage))
}

/// The server-sent events a streaming provider would have sent for a chat
/// completion answered as JSON: per choice, a chunk with the role, text and
/// tool calls (ids, names, whole arguments) and logprobs, then one with its
/// `finish_reason`; with `include_usage`, the usage in a last chunk without
/// choices; then `[DONE]`. [`response`] reads them back as the same answer.
pub fn chat_chunks(completion: &Value, include_usage: bool) -> Result<String, Malformed> {
    let obj = object(completion, "the response")?;
    let choices = obj.get("choices").cloned().unwrap_or(Value::Array(vec![]));
    let mut head = Map::new();
    for key in ["id", "created", "model", "system_fingerprint"] {
        if let Some(v) = obj.get(key) {
            head.insert(key.into(), v.clone());
        }
    }
    head.insert("object".into(), "chat.completion.chunk".into());
    let event = |choices: Value, usage: Option<&Value>| {
        let mut chunk = head.clone();
        chunk.insert("choices".into(), choices);
        if let Some(usage) = usage {
            chunk.insert("usage".into(), usage.clone());
        }
        format!("data: {}\n\n", Value::Object(chunk))
    };
    let mut out = String::new();
    for (n, choice) in array(&choices, "choices")?.iter().enumerate() {
        let what = format!("choices.{n}");
        let choice = object(choice, &what)?;
        let index = choice.get("index").cloned().unwrap_or_else(|| n.into());
        let empty = Value::Object(Map::new());
        let message = object(choice.get("message").unwrap_or(&empty), &what)?;
        let mut delta = Map::new();
        delta.insert(
            "role".into(),
            message.get("role").cloned().unwrap_or("assistant".into()),
        );
        for (key, v) in message {
            if key != "role" && key != "tool_calls" && !v.is_null() {
                delta.insert(key.clone(), v.clone());
            }
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls = calls.iter().enumerate().map(|(i, call)| {
                let mut call = call.as_object().cloned().unwrap_or_default();
                call.insert("index".into(), i.into());
                Value::Object(call)
            });
            delta.insert("tool_calls".into(), calls.collect());
        }
        let mut first = Map::new();
        first.insert("index".into(), index.clone());
        first.insert("delta".into(), Value::Object(delta));
        if let Some(logprobs) = choice.get("logprobs").filter(|v| !v.is_null()) {
            first.insert("logprobs".into(), logprobs.clone());
        }
        first.insert("finish_reason".into(), Value::Null);
        out.push_str(&event(Value::Array(vec![Value::Object(first)]), None));
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        let last = serde_json::json!([{"index": index, "delta": {}, "finish_reason": finish}]);
        out.push_str(&event(last, None));
    }
    if let Some(usage) = obj.get("usage").filter(|_| include_usage) {
        out.push_str(&event(Value::Array(vec![]), Some(usage)));
    }
    out.push_str("data: [DONE]\n\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A parse budget no test body comes near.
    const B: usize = 64 << 20;

    fn chunk(v: Value) -> String {
        format!("data: {v}\n\n")
    }

    #[test]
    fn chat_request_keeps_system_tools_calls_and_params() {
        let body = json!({
            "model": "m-1", "stream": true, "temperature": 0.2, "max_completion_tokens": 64,
            "stop": "END", "unknown_field": {"kept": "in the raw body"},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "list "}, {"type": "text", "text": "files"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{\"path\":\".\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"}
            ],
            "tools": [{"type": "function", "function": {"name": "ls", "description": "list",
                       "parameters": {"type": "object"}}}]
        });
        let r = request(Api::Chat, body.to_string().as_bytes(), B).unwrap();
        assert_eq!(r.model.as_deref(), Some("m-1"));
        let roles: Vec<_> = r.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(r.messages[1].content.as_deref(), Some("list files"));
        assert_eq!(r.messages[2].content, None);
        assert_eq!(r.messages[2].tool_calls[0].id.as_deref(), Some("call_1"));
        assert_eq!(
            r.messages[2].tool_calls[0].arguments,
            json!("{\"path\":\".\"}")
        );
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(r.tools[0].parameters, Some(json!({"type": "object"})));
        assert!(r
            .params
            .contains(&("gen_ai.request.temperature", json!(0.2))));
        assert!(r.params.contains(&("gen_ai.request.max_tokens", json!(64))));
        assert!(r.params.contains(&("gen_ai.request.stream", json!(true))));
        assert!(r
            .params
            .contains(&("gen_ai.request.stop_sequences", json!(["END"]))));
        assert_eq!(
            model_of(body.to_string().as_bytes()).as_deref(),
            Some("m-1")
        );
    }

    #[test]
    fn unreadable_requests_say_why() {
        for (body, why) in [
            ("not json", "not JSON"),
            ("[1]", "not an object"),
            ("{\"model\":\"m\"}", "no messages"),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
                "\"image_url\" part",
            ),
            (
                r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
                "not a chat role",
            ),
        ] {
            let err = request(Api::Chat, body.as_bytes(), B).unwrap_err();
            assert!(err.0.contains(why), "{body}: {err}");
        }
        assert_eq!(model_of(b"{\"messages\":[]}"), None);
    }

    #[test]
    fn streamed_chat_is_reassembled_like_a_plain_answer() {
        let mut body = String::new();
        body.push_str(&chunk(json!({"id": "c-1", "model": "m-1", "prompt_token_ids": [1, 2],
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "token_ids": [7]}]})));
        body.push_str(&chunk(json!({"id": "c-1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_9", "type": "function", "function": {"name": "ls", "arguments": "{\"pa"}}]},
            "token_ids": [8]}]})));
        body.push_str(
            "data: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":\r\n",
        );
        body.push_str("data: [{\"index\":0,\"function\":{\"arguments\":\"th\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\r\n\r\n");
        body.push_str(&chunk(json!({"id": "c-1", "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16,
                      "prompt_tokens_details": {"cached_tokens": 3}}})));
        body.push_str("data: [DONE]\n\n");
        let r = response(Api::Chat, body.as_bytes(), true, B).unwrap();
        assert_eq!(r.id.as_deref(), Some("c-1"));
        assert_eq!(r.model.as_deref(), Some("m-1"));
        assert_eq!(
            (
                r.input_tokens,
                r.output_tokens,
                r.total_tokens,
                r.cached_tokens
            ),
            (Some(11), Some(5), Some(16), Some(3))
        );
        assert_eq!(r.prompt_token_ids, Some(vec![1, 2]));
        assert_eq!(r.response_token_ids, Some(vec![7, 8]));
        let c = &r.choices[0];
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(c.message.content.as_deref(), Some(""));
        assert_eq!(c.message.tool_calls[0].id.as_deref(), Some("call_9"));
        assert_eq!(c.message.tool_calls[0].arguments, json!("{\"path\":1}"));
    }

    #[test]
    fn plain_chat_answer_with_agl_token_ids() {
        let body = json!({"id": "c-2", "model": "m", "prompt_token_ids": [1],
            "response_token_ids": [[5, 6], [9]],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi"}}]});
        let r = response(Api::Chat, body.to_string().as_bytes(), false, B).unwrap();
        assert_eq!(r.choices[0].message.content.as_deref(), Some("hi"));
        assert_eq!(r.response_token_ids, Some(vec![5, 6]));
        assert!(response(Api::Chat, b"data: {oops\n\n", true, B).is_err());
        assert!(response(Api::Chat, b"<html>", false, B).is_err());
    }

    #[test]
    fn responses_api_both_ways() {
        let req = json!({"model": "m", "instructions": "be brief", "max_output_tokens": 9,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "list files"}]},
                {"type": "reasoning", "summary": []},
                {"type": "function_call", "call_id": "fc_1", "name": "ls", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "fc_1", "output": "a.txt"}
            ],
            "tools": [{"type": "function", "name": "ls", "parameters": {"type": "object"}}]});
        let r = request(Api::Responses, req.to_string().as_bytes(), B).unwrap();
        let roles: Vec<_> = r.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(r.messages[2].tool_calls[0].id.as_deref(), Some("fc_1"));
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("fc_1"));
        assert_eq!(r.tools[0].name, "ls");
        assert!(r.params.contains(&("gen_ai.request.max_tokens", json!(9))));
        let plain = request(Api::Responses, br#"{"model":"m","input":"hi"}"#, B).unwrap();
        assert_eq!(plain.messages[0].content.as_deref(), Some("hi"));

        let done = json!({"id": "resp_1", "model": "m", "status": "completed",
            "output": [
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a.txt"}]},
                {"type": "function_call", "call_id": "fc_2", "name": "cat", "arguments": "{\"f\":\"a.txt\"}"}
            ],
            "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}});
        let stream = format!(
            "event: response.created\ndata: {}\n\nevent: response.completed\ndata: {}\n\n",
            json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
            json!({"type": "response.completed", "response": done})
        );
        for r in [
            response(Api::Responses, done.to_string().as_bytes(), false, B).unwrap(),
            response(Api::Responses, stream.as_bytes(), true, B).unwrap(),
        ] {
            assert_eq!(r.id.as_deref(), Some("resp_1"));
            assert_eq!(r.input_tokens, Some(4));
            let c = &r.choices[0];
            assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
            assert_eq!(c.message.content.as_deref(), Some("a.txt"));
            assert_eq!(c.message.tool_calls[0].name, "cat");
        }
    }

    /// What `fuzz/run.sh 300` found: a streamed tool-call index that made
    /// the reassembly push empty objects until memory ran out.
    #[test]
    fn an_index_no_real_answer_can_hold_is_malformed_not_made_room_for() {
        let call = |index: &str| {
            format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":{index},\
                 \"id\":\"call_1\",\"function\":{{\"name\":\"ls\",\"arguments\":\"{{}}\"}}}}]}}}}]}}\n\n"
            )
        };
        let err = response(Api::Chat, call("8888888888881").as_bytes(), true, B).unwrap_err();
        assert!(
            err.0.contains("tool call index 8888888888881 is past 1024"),
            "{err}"
        );
        let err = response(Api::Chat, call("1024").as_bytes(), true, B).unwrap_err();
        assert!(err.0.contains("past 1024"), "{err}");
        // The last index a real answer may use is read as before.
        let last = response(Api::Chat, call("1023").as_bytes(), true, B);
        assert!(
            last.unwrap_err().0.contains("has no name"),
            "the 1,023 before it are empty"
        );
        let choice =
            "data: {\"choices\":[{\"index\":99999999999,\"delta\":{\"content\":\"x\"}}]}\n\n";
        let err = response(Api::Chat, choice.as_bytes(), true, B).unwrap_err();
        assert!(
            err.0.contains("choice index 99999999999 is past 1024"),
            "{err}"
        );
    }

    #[test]
    fn a_parse_tree_past_the_budget_is_refused_before_it_is_built() {
        assert_eq!(json_values(b"{}"), 2);
        assert_eq!(json_values(br#"{"a":[1,2],"b":{"c":null}}"#), 9);
        // Brackets, commas and escaped quotes inside strings are text.
        assert_eq!(json_values(br#"["a,b:[{", "\",]"]"#), 3);
        // A body of small values would take tens of times its size as a
        // tree of `Value`s.
        let zeros = format!("{{\"messages\":[{}0]}}", "0,".repeat(100_000));
        let budget = 4 * zeros.len();
        let err = request(Api::Chat, zeros.as_bytes(), budget).unwrap_err();
        assert!(err.0.contains("JSON values, more than the"), "{err}");
        let stream = format!("data: {zeros}\n\n");
        let err = response(Api::Chat, stream.as_bytes(), true, budget).unwrap_err();
        assert!(err.0.contains("the stream event holds up to"), "{err}");
        // Text-heavy bodies, as real ones are, fit in a few times their size.
        let text =
            json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(100_000)}]})
                .to_string();
        assert!(request(Api::Chat, text.as_bytes(), 2 * text.len()).is_ok());
    }

    #[test]
    fn a_stream_keeps_only_what_the_answer_says() {
        let mut body = String::new();
        for i in 0..50 {
            body.push_str(&chunk(
                json!({"id": "c", "model": "m", "x_vendor": "y".repeat(1000),
                "prompt_token_ids": if i == 0 { json!([1, 2]) } else { Value::Null },
                "choices": [{"index": 0, "token_ids": [i], "x_logprobs": [{"t": "z".repeat(100)}],
                             "delta": {"content": "a", "reasoning_content": "r".repeat(100)}}]}),
            ));
        }
        body.push_str("data: [DONE]\n\ndata: {not read}\n\n");
        let mut stream = ChatStream::default();
        for_each_event(body.as_bytes(), B, |n, e| stream.add(n, e)).unwrap();
        let kept = format!("{:?}", stream);
        assert!(kept.len() < 2_000, "{} bytes kept: {kept}", kept.len());
        let r = stream.finish().unwrap();
        assert_eq!(
            r.choices[0].message.content.as_deref(),
            Some(&*"a".repeat(50))
        );
        assert_eq!(r.prompt_token_ids, Some(vec![1, 2]));
        assert_eq!(r.response_token_ids, Some((0..50).collect()));
        // Ids that are not all integers are none at all, as in a plain answer.
        let odd = chunk(json!({"choices": [{"index": 0, "token_ids": [1, "x"], "delta": {}}]}));
        let r = response(Api::Chat, odd.as_bytes(), true, B).unwrap();
        assert_eq!(r.response_token_ids, None);
    }

    #[test]
    fn a_plain_chat_answer_streams_back_as_the_same_answer() {
        let answer = json!({"id": "c-3", "object": "chat.completion", "created": 7, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": {"content": []},
                "message": {"role": "assistant", "content": "let me look", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{\"path\":\".\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "read", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}});
        let plain = response(Api::Chat, answer.to_string().as_bytes(), false, B).unwrap();
        let events = chat_chunks(&answer, true).unwrap();
        assert!(events.ends_with("data: [DONE]\n\n"), "{events}");
        assert_eq!(
            response(Api::Chat, events.as_bytes(), true, B).unwrap(),
            plain
        );
        let first: Value = serde_json::from_str(
            events
                .lines()
                .next()
                .unwrap()
                .strip_prefix("data: ")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["tool_calls"][1]["index"], 1);
        assert_eq!(first["choices"][0]["logprobs"], json!({"content": []}));
        let without_usage = chat_chunks(&answer, false).unwrap();
        assert!(!without_usage.contains("\"usage\""), "{without_usage}");
        assert!(chat_chunks(&json!([1]), false).is_err());
        assert!(chat_chunks(&json!({"choices": [1]}), false).is_err());

        let asked = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": []});
        let (body, usage) = without_streaming(asked.to_string().as_bytes()).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, json!({"model": "m", "stream": false, "messages": []}));
        assert!(usage);
        assert_eq!(without_streaming(br#"{"stream": false}"#), None);
        assert_eq!(without_streaming(b"not json"), None);
    }
}
