//! An Agent Lightning v1 server as an export source.
//!
//! AGL v1 keeps no spans: a rollout is its input and lifecycle, and its
//! trajectory is a list of events. Its model proxy records every call as a
//! `model_request` event (the request body as forwarded, the full answer,
//! usage, latency), and an agent's score arrives as a `reward` event
//! (`{value, …}`). This reader pages through the server's terminal rollouts
//! (`GET /api/rollouts/terminal?after=N`, an append-only completion log, so a
//! cursor resumes exactly), reads each rollout and its events, and writes
//! them as the trace file the sidecar would have written for the same calls:
//! a root span, a `chat <model>` span per model request holding AGL's
//! message attributes (derived from the bodies by the same code as for the
//! proxy's own calls), an annotation span per reward. Everything after that
//! (formats, filters, attempts, redaction, the manifest) is export's usual
//! path.

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::agl::call;
use crate::reward::PRIMARY;
use crate::semconv::llm_proxy::{REQUEST_BODY, RESPONSE_BODY, UPSTREAM};
use crate::semconv::{ANNOTATION, REWARD_PREFIX, ROLLOUT_ID, TASK_ID, TASK_INPUT};

/// The most bytes one answer of the server may take (a rollout's events).
const MAX_ANSWER: u64 = 512 << 20;

/// Terminal rollouts asked for a page.
const PAGE: u64 = 200;

/// Why an AGL v1 server could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AglV1Error {
    /// The source is not a usable URL.
    #[error("{0}")]
    Url(String),
    /// No server answered.
    #[error("cannot reach the AGL v1 server at {url} ({reason}): is agl-server running there?")]
    Unreachable {
        /// The server.
        url: String,
        /// The connection error.
        reason: String,
    },
    /// The server refused the key.
    #[error("the AGL v1 server at {url} refused the key ({status}): set AGL_KEY (or --agl-key) to its key")]
    Unauthorized {
        /// The server.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// The server answered something else than AGL v1's API.
    #[error("{url} answered {what}: is it an AGL v1 server (agentlightning 1.x)?")]
    NotAgl {
        /// The request.
        url: String,
        /// What came back.
        what: String,
    },
}

/// A source URL, `http(s)://host[:port][/prefix][?after=N]`.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// A connection to an AGL v1 server.
pub struct AglV1 {
    base: String,
    after: u64,
    key: Option<String>,
    http: reqwest::blocking::Client,
}

/// One terminal rollout, as a trace file's JSON (or why it could not be
/// read).
pub struct AglRollout {
    /// The rollout id.
    pub id: String,
    /// The trace file's JSON.
    pub json: Result<Vec<u8>, String>,
}

/// What reading the server found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pages {
    /// The cursor read from (`?after=`).
    pub from: u64,
    /// The cursor after the last terminal rollout read: `?after=` this to
    /// read only the rollouts that end later.
    pub next_after: u64,
}

impl AglV1 {
    /// Checks the URL; `key` is the server's `key` (sent as a bearer token).
    pub fn open(source: &str, key: Option<String>) -> Result<AglV1, AglV1Error> {
        let bad = |why: &str| AglV1Error::Url(format!("--source {source}: {why}"));
        let (base, query) = source.split_once('?').unwrap_or((source, ""));
        let mut after = 0;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("after", n)) => {
                    after = n
                        .parse()
                        .map_err(|_| bad("?after= takes a cursor (a whole number, the next_after of an earlier export)"))?;
                }
                _ => return Err(bad("the only query an AGL v1 source takes is ?after=N")),
            }
        }
        let host = base.split_once("://").map_or("", |(_, rest)| rest);
        if host.is_empty() || host.starts_with('/') {
            return Err(bad("an AGL v1 source is http(s)://host:port"));
        }
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(AglV1 {
            base: base.trim_end_matches('/').to_string(),
            after,
            key: key.filter(|k| !k.is_empty()),
            http,
        })
    }

    /// Reads every terminal rollout from the cursor on, in completion order,
    /// until `each` returns false. A rollout that cannot be read is passed
    /// with the reason; a server that cannot be read at all is an error.
    pub fn for_each(&self, mut each: impl FnMut(AglRollout) -> bool) -> Result<Pages, AglV1Error> {
        let mut after = self.after;
        loop {
            let page = self.get(&format!(
                "/api/rollouts/terminal?after={after}&limit={PAGE}"
            ))?;
            let items = page.get("items").and_then(Value::as_array);
            let next = page.get("next_after").and_then(Value::as_u64);
            let (Some(items), Some(next)) = (items, next) else {
                return Err(self.not_agl("/api/rollouts/terminal", "no items and next_after"));
            };
            for item in items {
                let Some(id) = item.get("rollout_id").and_then(Value::as_str) else {
                    continue;
                };
                if !each(self.rollout(id)) {
                    return Ok(Pages {
                        from: self.after,
                        next_after: after,
                    });
                }
            }
            if next <= after {
                return Ok(Pages {
                    from: self.after,
                    next_after: after,
                });
            }
            after = next;
        }
    }

    fn rollout(&self, id: &str) -> AglRollout {
        let path = crate::util::percent::percent_encode(id);
        let read = || -> Result<Vec<u8>, String> {
            let detail = self
                .get(&format!("/api/rollouts/{path}"))
                .map_err(|e| e.to_string())?;
            let events = self
                .get(&format!("/api/rollouts/{path}/events"))
                .map_err(|e| e.to_string())?;
            let rollout = detail.get("rollout").unwrap_or(&Value::Null);
            let events = events.as_array().map(Vec::as_slice).unwrap_or_default();
            Ok(trace_file(rollout, events, &self.base)
                .to_string()
                .into_bytes())
        };
        AglRollout {
            id: id.to_string(),
            json: read(),
        }
    }

    fn not_agl(&self, path: &str, what: &str) -> AglV1Error {
        AglV1Error::NotAgl {
            url: format!("{}{path}", self.base),
            what: what.to_string(),
        }
    }

    /// A GET of the API, its JSON answer.
    fn get(&self, path: &str) -> Result<Value, AglV1Error> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.get(&url);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let answer = request.send().map_err(|e| AglV1Error::Unreachable {
            url: self.base.clone(),
            reason: crate::util::error_chain(&e),
        })?;
        let status = answer.status().as_u16();
        if status == 401 || status == 403 {
            return Err(AglV1Error::Unauthorized {
                url: self.base.clone(),
                status,
            });
        }
        if status != 200 {
            return Err(self.not_agl(path, &format!("HTTP {status}")));
        }
        let mut body = Vec::new();
        answer
            .take(MAX_ANSWER + 1)
            .read_to_end(&mut body)
            .map_err(|e| AglV1Error::Unreachable {
                url: self.base.clone(),
                reason: e.to_string(),
            })?;
        if body.len() as u64 > MAX_ANSWER {
            return Err(self.not_agl(path, &format!("more than {} MiB", MAX_ANSWER >> 20)));
        }
        serde_json::from_slice(&body).map_err(|e| self.not_agl(path, &format!("no JSON ({e})")))
    }
}

/// The id AGL v1 gives a rollout's task: its input's `data_id` (else
/// `instance_id`), as in its terminal log; attempts of one task share it.
fn task_of(input: &Value) -> Option<&str> {
    ["data_id", "instance_id"]
        .iter()
        .find_map(|k| input.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

/// A rollout (`GET /api/rollouts/{id}`'s `rollout`) and its events as the
/// trace file the sidecar writes; `server` names the AGL server as the
/// calls' upstream.
pub fn trace_file(rollout: &Value, events: &[Value], server: &str) -> Value {
    let id = rollout
        .get("rollout_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let status = &rollout["status"];
    let attempt = status
        .get("last_attempt_id")
        .and_then(Value::as_str)
        .unwrap_or("0");
    let input = rollout.get("input").unwrap_or(&Value::Null);
    let mut root = Map::new();
    root.insert(ROLLOUT_ID.into(), id.into());
    root.insert(TASK_INPUT.into(), input.to_string().into());
    if let Some(task) = task_of(input) {
        root.insert(TASK_ID.into(), task.into());
    }
    let mut spans = vec![json!({
        "name": "agl.rollout", "span_id": "r", "parent_id": null,
        "start_time": status.get("created_at"), "end_time": status.get("updated_at"),
        "attributes": root,
    })];
    for (n, event) in events.iter().enumerate() {
        let data = &event["data"];
        let at = event.get("timestamp").and_then(Value::as_f64);
        let (name, attrs, start) = match event["event_type"].as_str() {
            Some("model_request") => {
                let latency = data
                    .get("latency_ms")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let model = data.get("model").and_then(Value::as_str).unwrap_or("");
                (
                    format!("chat {model}"),
                    model_call(data, server),
                    at.map(|t| t - latency / 1e3),
                )
            }
            Some("reward") => match data.get("value").and_then(Value::as_f64) {
                Some(value) => {
                    let mut attrs = Map::new();
                    attrs.insert(format!("{REWARD_PREFIX}.0.name"), PRIMARY.into());
                    attrs.insert(format!("{REWARD_PREFIX}.0.value"), value.into());
                    (ANNOTATION.to_string(), attrs, at)
                }
                None => continue,
            },
            _ => continue,
        };
        spans.push(json!({
            "name": name, "span_id": format!("e{n}"), "parent_id": "r",
            "start_time": start, "end_time": at, "attributes": attrs,
        }));
    }
    json!({
        "rollout_id": id, "attempt_id": attempt,
        "status": status.get("state"), "task_input": input,
        "span_count": spans.len(), "spans": spans,
    })
}

/// A `model_request` event's attributes: the bodies, read as the proxy's own
/// recorded calls are.
fn model_call(data: &Value, server: &str) -> Map<String, Value> {
    let request = data.get("request").unwrap_or(&Value::Null);
    let path = if request.get("prompt").is_some() && request.get("messages").is_none() {
        "/v1/completions"
    } else {
        "/v1/chat/completions"
    };
    let status = data
        .get("http_status")
        .and_then(Value::as_u64)
        .unwrap_or(200);
    let mut attrs = Map::new();
    attrs.insert(UPSTREAM.into(), server.into());
    attrs.insert("url.path".into(), path.into());
    attrs.insert("http.response.status_code".into(), status.into());
    if data
        .get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| s != "ok")
    {
        attrs.insert("error.type".into(), status.to_string().into());
    }
    if let Some(model) = data.get("model").and_then(Value::as_str) {
        attrs.insert("gen_ai.request.model".into(), model.into());
    }
    attrs.insert(REQUEST_BODY.into(), request.to_string().into());
    let response = data.get("response").unwrap_or(&Value::Null);
    attrs.insert(RESPONSE_BODY.into(), response.to_string().into());
    call::expand(&mut attrs);
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_request(content: &str, tool_calls: Option<Value>) -> Value {
        let mut message = json!({"role": "assistant", "content": content});
        if let Some(calls) = tool_calls {
            message["tool_calls"] = calls;
        }
        json!({"event_type": "model_request", "timestamp": 100.5, "data": {
            "model": "Qwen/Qwen2.5-7B-Instruct", "latency_ms": 500.0, "http_status": 200, "status": "ok",
            "request": {"model": "Qwen/Qwen2.5-7B-Instruct", "messages": [
                {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                "temperature": 1.0, "return_token_ids": true},
            "response": {"id": "c-1", "model": "Qwen/Qwen2.5-7B-Instruct", "prompt_token_ids": [1, 2],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "token_ids": [3]}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1}}}})
    }

    #[test]
    fn events_become_the_spans_a_trace_file_holds() {
        let rollout = json!({"rollout_id": "r-1", "input": {"prompt": "hi", "data_id": "t-7"},
            "status": {"state": "succeeded", "last_attempt_id": "0", "created_at": 99.0, "updated_at": 101.0}});
        let events = [
            model_request("Hello", None),
            json!({"event_type": "reward", "timestamp": 101.0, "data": {"value": 0.75, "source": "agent"}}),
            json!({"event_type": "reward", "timestamp": 101.0, "data": {"message": "no value"}}),
            json!({"event_type": "custom", "timestamp": 101.0, "data": {}}),
        ];
        let doc = trace_file(&rollout, &events, "http://agl:8080");
        assert_eq!(doc["rollout_id"], "r-1");
        assert_eq!(doc["status"], "succeeded");
        let spans = doc["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 3, "root, call, reward: {doc:#}");
        assert_eq!(spans[0]["attributes"][TASK_ID], "t-7");
        let call = &spans[1];
        assert_eq!(call["name"], "chat Qwen/Qwen2.5-7B-Instruct");
        assert_eq!(call["start_time"], 100.0);
        let attrs = &call["attributes"];
        assert_eq!(attrs["gen_ai.prompt.0.content"], "be brief");
        assert_eq!(attrs["gen_ai.completion.0.content"], "Hello");
        assert_eq!(attrs["prompt_token_ids"], json!([1, 2]));
        assert!(
            attrs.get(REQUEST_BODY).is_none(),
            "read bodies are not kept twice"
        );
        assert_eq!(
            spans[2]["attributes"]["agentlightning.reward.0.value"],
            0.75
        );
    }

    #[test]
    fn a_failed_call_keeps_its_bodies_and_says_so() {
        let mut event = model_request("", None);
        event["data"]["http_status"] = json!(502);
        event["data"]["status"] = json!("error");
        event["data"]["response"] = json!({"detail": "Upstream model server request failed"});
        let attrs = model_call(&event["data"], "http://agl");
        assert_eq!(attrs["error.type"], "502");
        assert!(attrs.get("gen_ai.completion.0.content").is_none());
        assert!(attrs[RESPONSE_BODY].as_str().unwrap().contains("Upstream"));
    }

    #[test]
    fn urls_and_cursors() {
        assert!(is_url("http://127.0.0.1:8080") && is_url("https://agl"));
        assert!(!is_url("traces") && !is_url("/srv/http://x"));
        let s = AglV1::open("http://agl:8080/?after=12", Some(String::new())).unwrap();
        assert_eq!(
            (s.base.as_str(), s.after, s.key.is_none()),
            ("http://agl:8080", 12, true)
        );
        for (bad, says) in [
            ("http://agl?after=x", "a whole number"),
            ("http://agl?limit=3", "only query"),
            ("http://", "http(s)://host:port"),
        ] {
            let err = AglV1::open(bad, None).err().unwrap().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
