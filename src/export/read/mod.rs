//! From a rollout's spans to one conversation.
//!
//! A rollout's row is built from its *last conversation-bearing span* (file
//! order): the last span carrying messages in any convention the readers
//! know. Model calls recorded by the LLM proxy come first: when a rollout has
//! an answered one, the last of them is the row (it is exactly what the
//! provider received and answered, system prompt and tools included). Each convention has its own reader ([`agl`], [`genai`],
//! [`openinference`]); all of them produce the one model of
//! [`crate::conversation`]. The rollout's facts that filters need (status,
//! time, session, model, reward, tokens) come from the root, reward and chosen
//! spans, so a rollout that is filtered out is never converted.

pub mod agl_v1;
pub mod store;
pub mod trace_file;

use serde_json::{Map, Value};

use crate::conversation::attrs::{first_count, first_str};
use crate::conversation::{agl, genai, openinference, Convention, Conversation, Malformed};
use crate::reward::reward_of;
use crate::semconv::llm_proxy::UPSTREAM as PROXY_UPSTREAM;
use crate::semconv::{
    COMPLETION_TOKENS, MODEL_ATTRS, PROMPT_TOKENS, REWARD_SPANS, SESSION_ATTRS, TASK_ID,
};
use trace_file::{for_each_key, Doc, SpanDoc};

/// Token counts of the exported call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, as the span reports them.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
}

/// The span a row is built from.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// Which convention's attributes hold the messages.
    pub convention: Convention,
    /// The span's attributes, flattened as in a trace file.
    pub attrs: Map<String, Value>,
    /// Attributes of the span's children (AGL's tool-call spans).
    pub children: Vec<Map<String, Value>>,
}

impl Chosen {
    /// The conversation, read with the span's convention.
    pub fn read(&self) -> Result<Conversation, Malformed> {
        match self.convention {
            Convention::Agl => agl::read(&self.attrs, &self.children),
            Convention::GenAi => genai::read(&self.attrs),
            Convention::OpenInference => openinference::read(&self.attrs),
        }
    }
}

/// What export knows of a rollout before converting its conversation.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    /// The rollout (`ro-…`).
    pub id: String,
    /// `succeeded`, `failed` or `running`, when the file says.
    pub status: Option<String>,
    /// Earliest span start (Unix seconds).
    pub start_time: Option<f64>,
    /// The session key, from the root span, else from the chosen span.
    pub session: Option<String>,
    /// The task it attempts (the root span's `oclagl.task_id`).
    pub task: Option<String>,
    /// The model of the exported call.
    pub model: Option<String>,
    /// The primary reward of the last reward span.
    pub reward: Option<f64>,
    /// Token counts of the exported call.
    pub usage: Usage,
    /// The span the row is built from; `None` when no span carries messages.
    pub chosen: Option<Chosen>,
}

impl Rollout {
    /// Whether the rollout has not ended as far as its file says: its root
    /// span never arrived (AGL's `running`, or another status before a
    /// rollout runs). A file that says no status is taken as it is.
    pub fn incomplete(&self) -> bool {
        matches!(
            self.status.as_deref(),
            Some("running" | "queuing" | "preparing" | "requeuing")
        )
    }
}

fn attributes(span: &SpanDoc, n: usize) -> Result<Map<String, Value>, Malformed> {
    match span.attributes {
        None => Ok(Map::new()),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| Malformed(format!("span {n} attributes are not an object: {e}"))),
    }
}

/// What a span's attribute keys say about it.
#[derive(Debug, Default, Clone, Copy)]
struct Keys {
    /// The best convention of the messages it carries.
    convention: Option<Convention>,
    /// A model call the LLM proxy recorded with its answer.
    proxy_answer: bool,
}

fn keys_of(span: &SpanDoc, n: usize) -> Result<Keys, Malformed> {
    let Some(raw) = span.attributes else {
        return Ok(Keys::default());
    };
    let (mut best, mut proxy, mut answered) = (None::<Convention>, false, false);
    for_each_key(raw, |k| {
        if let Some(c) = Convention::of_key(k) {
            best = Some(best.map_or(c, |b| b.min(c)));
        }
        proxy |= k == PROXY_UPSTREAM;
        answered |= k.starts_with("gen_ai.completion.");
    })
    .map_err(|e| Malformed(format!("span {n} attributes are not an object: {e}")))?;
    Ok(Keys {
        convention: best,
        proxy_answer: proxy && answered,
    })
}

/// Reads what export needs of one trace file's rollout. `fallback_id` names
/// it when the file does not.
pub fn rollout(doc: &Doc, fallback_id: &str) -> Result<Rollout, Malformed> {
    let mut out = Rollout {
        id: doc.rollout_id.as_deref().unwrap_or(fallback_id).to_string(),
        status: doc.status.as_deref().map(str::to_string),
        start_time: doc
            .spans
            .iter()
            .filter_map(|s| s.start_time.0)
            .min_by(f64::total_cmp),
        ..Rollout::default()
    };
    for (n, span) in doc.spans.iter().enumerate() {
        if span
            .name
            .as_deref()
            .is_some_and(|n| REWARD_SPANS.contains(&n))
        {
            if let Some(r) = reward_of(&attributes(span, n)?) {
                out.reward = Some(r);
            }
        }
    }
    if let Some((n, root)) = doc
        .spans
        .iter()
        .enumerate()
        .find(|(_, s)| s.parent_id.0.is_none())
    {
        let attrs = attributes(root, n)?;
        out.session = first_str(&attrs, &SESSION_ATTRS);
        out.task = first_str(&attrs, &[TASK_ID]);
    }
    let keys = doc
        .spans
        .iter()
        .enumerate()
        .map(|(n, span)| keys_of(span, n))
        .collect::<Result<Vec<_>, _>>()?;
    let prefer_proxy = keys.iter().any(|k| k.proxy_answer);
    for (n, span) in doc.spans.iter().enumerate().rev() {
        let Some(convention) = keys[n].convention else {
            continue;
        };
        if prefer_proxy && !keys[n].proxy_answer {
            continue;
        }
        let attrs = attributes(span, n)?;
        let children = match span.span_id.as_deref() {
            Some(id) => doc
                .spans
                .iter()
                .enumerate()
                .filter(|(_, c)| c.parent_id.as_deref() == Some(id))
                .map(|(m, c)| attributes(c, m))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        if out.session.is_none() {
            out.session = first_str(&attrs, &SESSION_ATTRS);
        }
        out.model = first_str(&attrs, &MODEL_ATTRS);
        out.usage = Usage {
            prompt: first_count(&attrs, &PROMPT_TOKENS),
            completion: first_count(&attrs, &COMPLETION_TOKENS),
        };
        out.chosen = Some(Chosen {
            convention,
            attrs,
            children,
        });
        break;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc_bytes(spans: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"rollout_id": "ro-1", "status": "succeeded", "spans": spans}))
            .unwrap()
    }

    #[test]
    fn picks_last_conversation_span_and_rollout_facts() {
        let bytes = doc_bytes(json!([
            {"name": "oclagl.rollout", "span_id": "r", "parent_id": null, "start_time": 20.0,
             "attributes": {"oclagl.session_key": "agent:main:main"}},
            {"name": "gen_ai", "span_id": "a", "parent_id": "r", "start_time": 21.0,
             "attributes": {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "first"}},
            {"name": "chat m", "span_id": "b", "parent_id": "r", "start_time": 10.0,
             "attributes": {"gen_ai.input.messages": "[]", "gen_ai.response.model": "m-1",
                            "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": "3"}},
            {"name": "gen_ai", "span_id": "c", "parent_id": "r", "attributes": {}},
            {"name": "agentlightning.annotation", "span_id": "d", "parent_id": "r",
             "attributes": {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 0.5}},
            {"name": "agentlightning.annotation", "span_id": "e", "parent_id": "r",
             "attributes": {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 1,
                            "agentlightning.reward.1.name": "aux", "agentlightning.reward.1.value": 0.0}},
            {"name": "child", "span_id": "f", "parent_id": "b", "attributes": {"tool.name": "x"}}
        ]));
        let doc = Doc::parse(&bytes).unwrap();
        let r = rollout(&doc, "fallback").unwrap();
        assert_eq!(r.id, "ro-1");
        assert_eq!(r.status.as_deref(), Some("succeeded"));
        assert_eq!(r.start_time, Some(10.0));
        assert_eq!(r.session.as_deref(), Some("agent:main:main"));
        assert_eq!(r.model.as_deref(), Some("m-1"));
        assert_eq!(r.reward, Some(1.0));
        assert_eq!(
            r.usage,
            Usage {
                prompt: 7,
                completion: 3
            }
        );
        let chosen = r.chosen.unwrap();
        assert_eq!(chosen.convention, Convention::GenAi);
        assert_eq!(
            chosen.children,
            vec![json!({"tool.name": "x"}).as_object().unwrap().clone()]
        );
    }

    #[test]
    fn answered_proxy_calls_win_over_later_conversation_spans() {
        let proxy = |id: &str, answer: bool| {
            let mut attrs = json!({"oclagl.llm_proxy.upstream": "http://up/v1",
                "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": id});
            if answer {
                attrs["gen_ai.completion.0.role"] = json!("assistant");
                attrs["gen_ai.completion.0.content"] = json!("ok");
            }
            json!({"name": "chat m", "span_id": id, "parent_id": "x", "attributes": attrs})
        };
        let bytes = doc_bytes(json!([
            proxy("first", true),
            proxy("second", true),
            proxy("failed", false),
            {"name": "gen_ai", "span_id": "seed", "parent_id": "r",
             "attributes": {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "seed"}}
        ]));
        let doc = Doc::parse(&bytes).unwrap();
        let chosen = rollout(&doc, "f").unwrap().chosen.unwrap();
        assert_eq!(chosen.attrs["gen_ai.prompt.0.content"], "second");
        // Without an answered proxy call, the last conversation span is used.
        let bytes = doc_bytes(
            json!([proxy("failed", false), {"name": "gen_ai", "span_id": "seed",
            "attributes": {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "seed"}}]),
        );
        let doc = Doc::parse(&bytes).unwrap();
        let chosen = rollout(&doc, "f").unwrap().chosen.unwrap();
        assert_eq!(chosen.attrs["gen_ai.prompt.0.content"], "seed");
    }

    #[test]
    fn legacy_reward_and_session_from_conversation_span() {
        let bytes = doc_bytes(json!([
            {"name": "gen_ai", "span_id": "a", "parent_id": "elsewhere",
             "attributes": {"gen_ai.prompt.0.role": "user", "gen_ai.conversation.id": "s-9"}},
            {"name": "agentlightning.reward", "attributes": {"reward": 0.25}}
        ]));
        let doc = Doc::parse(&bytes).unwrap();
        let r = rollout(&doc, "fallback").unwrap();
        assert_eq!(r.reward, Some(0.25));
        assert_eq!(r.session.as_deref(), Some("s-9"));
        assert_eq!(r.chosen.unwrap().convention, Convention::Agl);
    }

    #[test]
    fn no_conversation_and_bad_attributes() {
        let bytes =
            doc_bytes(json!([{"name": "gen_ai", "attributes": {"gen_ai.request.model": "m"}}]));
        let doc = Doc::parse(&bytes).unwrap();
        let r = rollout(&doc, "ro-file").unwrap();
        assert!(r.chosen.is_none());
        let bytes = br#"{"spans": [{"name": "gen_ai", "attributes": [1, 2]}]}"#;
        let doc = Doc::parse(bytes).unwrap();
        let err = rollout(&doc, "ro-file").unwrap_err();
        assert!(err.0.contains("span 0 attributes"), "{err}");
    }
}
