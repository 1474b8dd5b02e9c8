//! One line per rollout: what `oclagl ls` shows, kept by the view.
//!
//! The view computes a rollout's [`Summary`] from its trace file each time it
//! writes that file, and saves all of them in `<data>/rollouts.jsonl`
//! (replaced atomically, just before the checkpoint moves), so listing
//! 100,000 rollouts reads one small file instead of 100,000 trace files or
//! the whole store.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::span::Span;
use super::trace_file::{AtomicFile, TraceFile};
use crate::export::read::{
    first_str, rewards_of, Convention, MODEL_ATTRS, REWARD_SPANS, SESSION_ATTRS,
};
use crate::rollout::reward::Reward;

/// The summaries' file in the data folder.
pub const FILE: &str = "rollouts.jsonl";
/// Longest prompt preview kept (characters).
const PREVIEW: usize = 160;

/// What `ls` shows of one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub rollout_id: String,
    pub attempt_id: String,
    pub status: String,
    /// Earliest span start and latest span end (Unix seconds).
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub spans: usize,
    pub model_calls: usize,
    pub tool_calls: usize,
    /// The rewards of the last reward span (the first is the primary one).
    pub rewards: Vec<Reward>,
    pub session: Option<String>,
    /// The task's prompt, cut to a preview.
    pub prompt: Option<String>,
    /// The rollout's trace file name.
    pub file: String,
}

impl Summary {
    /// Seconds from the first span's start to the last span's end.
    pub fn duration(&self) -> Option<f64> {
        Some(self.end? - self.start?).filter(|d| *d >= 0.0)
    }

    /// The primary reward.
    pub fn reward(&self) -> Option<f64> {
        self.rewards.first().map(|r| r.value)
    }
}

/// Does a span record a model call (messages or a model in any convention)?
pub fn is_model_call(attrs: &Map<String, Value>) -> bool {
    attrs
        .keys()
        .any(|k| MODEL_ATTRS.contains(&k.as_str()) || Convention::of_key(k).is_some())
}

/// The tool a span records a call of (AGL's `tool.name`, OTel GenAI's
/// `gen_ai.tool.name`).
pub fn tool_name(attrs: &Map<String, Value>) -> Option<&str> {
    ["tool.name", "gen_ai.tool.name"]
        .iter()
        .find_map(|k| attrs.get(*k)?.as_str())
}

/// The rewards a span records, if it is a reward span.
pub fn span_rewards(span: &Span) -> Vec<Reward> {
    if REWARD_SPANS.contains(&span.name.as_str()) {
        rewards_of(&span.attributes)
    } else {
        Vec::new()
    }
}

/// A one-line preview of a text.
pub fn preview(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    for (n, word) in text.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > max * 4 {
            break;
        }
    }
    match out.char_indices().nth(max) {
        Some((cut, _)) => {
            let mut cut_text = out[..cut].to_string();
            cut_text.pop();
            cut_text.push('…');
            cut_text
        }
        None => out,
    }
}

/// Summarises a rollout's trace file (named `file`).
pub fn summarize(trace: &TraceFile, file: &str) -> Summary {
    let mut s = Summary {
        rollout_id: trace.rollout_id.clone(),
        attempt_id: trace.attempt_id.clone(),
        status: trace.status.clone(),
        start: None,
        end: None,
        spans: trace.spans.len(),
        model_calls: 0,
        tool_calls: 0,
        rewards: Vec::new(),
        session: None,
        prompt: trace.task_input["prompt"].as_str().map(str::to_string),
        file: file.to_string(),
    };
    for span in &trace.spans {
        if let Some(t) = span.start_time {
            s.start = Some(s.start.map_or(t, |x: f64| x.min(t)));
        }
        if let Some(t) = span.end_time {
            s.end = Some(s.end.map_or(t, |x: f64| x.max(t)));
        }
        if tool_name(&span.attributes).is_some() {
            s.tool_calls += 1;
        } else if is_model_call(&span.attributes) {
            s.model_calls += 1;
        }
        let rewards = span_rewards(span);
        if !rewards.is_empty() {
            s.rewards = rewards;
        }
        if span.parent_id.is_none() {
            if s.session.is_none() {
                s.session = first_str(&span.attributes, &SESSION_ATTRS);
            }
            if s.prompt.is_none() {
                s.prompt = first_str(&span.attributes, &["oclagl.prompt"]);
            }
        }
    }
    s.prompt = s.prompt.map(|p| preview(&p, PREVIEW));
    s
}

/// Saves every summary (atomically replacing the file).
pub fn save<'a>(data_dir: &Path, all: impl Iterator<Item = &'a Summary>) -> io::Result<()> {
    let mut file = AtomicFile::create(data_dir, FILE)?;
    for s in all {
        serde_json::to_writer(&mut file, s)?;
        file.write_all(b"\n")?;
    }
    file.commit().map(drop)
}

/// Reads the saved summaries; `Ok(None)` when there is no file yet. Lines
/// that do not parse are skipped (the file is replaced whole, so there are
/// none unless someone edited it).
pub fn load(data_dir: &Path) -> io::Result<Option<Vec<Summary>>> {
    let file = match std::fs::File::open(data_dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if let Ok(s) = serde_json::from_slice::<Summary>(&line) {
            out.push(s);
        }
    }
    Ok(Some(out))
}

/// The saved summaries by rollout id (for the view to keep up to date).
pub fn load_map(data_dir: &Path) -> io::Result<Option<HashMap<String, Summary>>> {
    Ok(load(data_dir)?.map(|all| all.into_iter().map(|s| (s.rollout_id.clone(), s)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn span(name: &str, parent: Option<&str>, start: f64, end: f64, attrs: Value) -> Span {
        serde_json::from_value(json!({
            "rollout_id": "ro-1", "attempt_id": "at-1", "sequence_id": 1,
            "trace_id": "t", "span_id": name, "parent_id": parent, "name": name,
            "status": {"status_code": "OK", "description": null},
            "attributes": attrs, "start_time": start, "end_time": end,
            "context": null, "parent": null,
            "resource": {"attributes": {}, "schema_url": ""}
        }))
        .unwrap()
    }

    #[test]
    fn a_trace_file_summarises_to_counts_times_rewards_and_prompt() {
        let trace = TraceFile {
            rollout_id: "ro-1".into(),
            attempt_id: "at-1".into(),
            status: "succeeded".into(),
            task_input: json!({"prompt": "What   is\n2+2?"}),
            span_count: 6,
            spans: vec![
                span(
                    "oclagl.rollout",
                    None,
                    10.0,
                    14.0,
                    json!({"oclagl.session_key": "s1"}),
                ),
                span(
                    "gen_ai",
                    Some("oclagl.rollout"),
                    11.0,
                    12.0,
                    json!({"gen_ai.prompt.0.role": "user", "gen_ai.response.model": "m"}),
                ),
                span(
                    "chat",
                    Some("oclagl.rollout"),
                    12.0,
                    13.0,
                    json!({"gen_ai.request.model": "m"}),
                ),
                span(
                    "exec",
                    Some("chat"),
                    12.5,
                    15.5,
                    json!({"tool.name": "ls", "gen_ai.request.model": "m"}),
                ),
                span(
                    "agentlightning.annotation",
                    Some("oclagl.rollout"),
                    14.0,
                    14.0,
                    json!({"agentlightning.reward.0.name": "a", "agentlightning.reward.0.value": 0.5}),
                ),
                span(
                    "agentlightning.annotation",
                    Some("oclagl.rollout"),
                    14.0,
                    14.0,
                    json!({"agentlightning.reward.0.name": "exact", "agentlightning.reward.0.value": 1.0,
                            "agentlightning.reward.1.name": "b", "agentlightning.reward.1.value": 0}),
                ),
            ],
        };
        let s = summarize(&trace, "rollout_ro-1_x.json");
        assert_eq!((s.spans, s.model_calls, s.tool_calls), (6, 2, 1));
        assert_eq!(
            (s.start, s.end, s.duration()),
            (Some(10.0), Some(15.5), Some(5.5))
        );
        assert_eq!(s.reward(), Some(1.0));
        assert_eq!(s.rewards.len(), 2);
        assert_eq!(s.session.as_deref(), Some("s1"));
        assert_eq!(s.prompt.as_deref(), Some("What is 2+2?"));
    }

    #[test]
    fn previews_are_one_line_and_cut() {
        assert_eq!(preview("a\n b\tc", 10), "a b c");
        assert_eq!(preview("abcdefghijkl", 5), "abcd…");
        assert_eq!(preview("ééééééé", 3), "éé…");
    }

    #[test]
    fn summaries_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let trace = TraceFile {
            rollout_id: "ro-2".into(),
            attempt_id: "at-2".into(),
            status: "running".into(),
            task_input: Value::Null,
            span_count: 0,
            spans: vec![],
        };
        let s = summarize(&trace, "f.json");
        save(dir.path(), [&s, &s].into_iter()).unwrap();
        assert_eq!(
            load(dir.path()).unwrap().unwrap(),
            vec![s.clone(), s.clone()]
        );
        assert_eq!(load_map(dir.path()).unwrap().unwrap().len(), 1);
    }
}
