//! What `oclagl ls` shows of each rollout, kept by the view in
//! `<data>/rollouts.jsonl`, so listing 100,000 rollouts reads one small file
//! instead of 100,000 trace files or the whole store.
//!
//! The file is only ever appended to. Its lines are:
//! - a [`Summary`] of a trace file the view wrote, computed from that file,
//!   with `"store"`: what the rollout index knows of the rollout ([`Saved`]),
//!   so the view can drop the rollout from memory and read it back from this
//!   line;
//! - `{"rollout_id", "merged_into"}`: a trace-derived rollout that was folded
//!   into a named one (no longer listed);
//! - `{"checkpoint": [segment, offset]}`: every store record below that
//!   position is reflected in the trace files and in the lines before.
//!
//! A rollout's last summary line is the one that counts. The view appends
//! lines in batches, each made durable with one `fdatasync` before the next
//! checkpoint line; a batch cut short by a crash is cut off at the next start.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::index::Saved;
use super::span::Span;
use super::trace_file::TraceFile;
use crate::conversation::attrs::first_str;
use crate::conversation::Convention;
use crate::reward::{rewards_of, Reward};
use crate::semconv::llm_proxy::UPSTREAM;
use crate::semconv::{MODEL_ATTRS, REWARD_SPANS, SESSION_ATTRS};
use crate::store::Pos;

/// The summaries' file in the data folder.
pub const FILE: &str = "rollouts.jsonl";
/// Longest prompt preview kept (characters).
const PREVIEW: usize = 160;

/// What `ls` shows of one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The rollout (`ro-…`).
    pub rollout_id: String,
    /// Its attempt (`at-…`).
    pub attempt_id: String,
    /// `succeeded`, `failed` (the root span failed) or `running` (no root span
    /// yet).
    pub status: String,
    /// Earliest span start and latest span end (Unix seconds).
    pub start: Option<f64>,
    /// See `start`.
    pub end: Option<f64>,
    /// Spans in the trace file.
    pub spans: usize,
    /// Spans that are model calls (any span convention).
    pub model_calls: usize,
    /// Spans that are tool calls.
    pub tool_calls: usize,
    /// The rewards of the last reward span (the first is the primary one).
    pub rewards: Vec<Reward>,
    /// The session key the rollout ran in, when a span names it.
    pub session: Option<String>,
    /// The task the rollout attempts (`oclagl.task_id`), when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Which attempt of its task it is (`oclagl.sample`), when one of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<u32>,
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
        task: trace.task_input["task_id"].as_str().map(str::to_string),
        sample: trace.task_input["sample"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok()),
        prompt: trace.task_input["prompt"].as_str().map(str::to_string),
        file: file.to_string(),
    };
    // The LLM proxy records every model call exactly; where it saw the
    // rollout's calls, other spans of them (the gateway's transcript turns)
    // are not counted again.
    let proxied = trace
        .spans
        .iter()
        .any(|span| span.attributes.contains_key(UPSTREAM));
    for span in &trace.spans {
        let rewards = span_rewards(span);
        // A reward annotates the rollout, often much later: it does not
        // stretch the rollout's time.
        if rewards.is_empty() {
            if let Some(t) = span.start_time {
                s.start = Some(s.start.map_or(t, |x: f64| x.min(t)));
            }
            if let Some(t) = span.end_time {
                s.end = Some(s.end.map_or(t, |x: f64| x.max(t)));
            }
        } else {
            s.rewards = rewards;
        }
        if tool_name(&span.attributes).is_some() {
            s.tool_calls += 1;
        } else if is_model_call(&span.attributes)
            && (!proxied || span.attributes.contains_key(UPSTREAM))
        {
            s.model_calls += 1;
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

/// A summary line: the summary and what the index knows of its rollout.
pub fn summary_line(summary: &Summary, saved: &Saved) -> Vec<u8> {
    #[derive(Serialize)]
    struct Line<'a> {
        #[serde(flatten)]
        summary: &'a Summary,
        store: &'a Saved,
    }
    json_line(&Line {
        summary,
        store: saved,
    })
}

/// The line saying that `gone` was merged into `into`.
pub fn merged_line(gone: &str, into: &str) -> Vec<u8> {
    json_line(&serde_json::json!({"rollout_id": gone, "merged_into": into}))
}

/// The line saying that every record below `pos` is reflected.
pub fn checkpoint_line(pos: Pos) -> Vec<u8> {
    json_line(&serde_json::json!({"checkpoint": [pos.segment, pos.offset]}))
}

fn json_line(value: &impl Serialize) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

/// A line of the file, as the view reads it at start.
pub enum Line {
    /// A rollout's summary, with what the index knows of it.
    Summary {
        /// The rollout.
        rollout_id: String,
        /// The index's record of it.
        saved: Saved,
    },
    /// A trace-derived rollout folded into a named one.
    Merged {
        /// The derived rollout that went away.
        rollout_id: String,
    },
    /// Every store record before this position is reflected in the lines before.
    Checkpoint(Pos),
    /// A summary written before lines carried the index, or not a line of
    /// this program's.
    Other,
}

impl Line {
    fn parse(bytes: &[u8]) -> Line {
        #[derive(Deserialize)]
        struct Head {
            rollout_id: Option<String>,
            merged_into: Option<String>,
            checkpoint: Option<[u64; 2]>,
            store: Option<Saved>,
        }
        let Ok(head) = serde_json::from_slice::<Head>(bytes) else {
            return Line::Other;
        };
        match head {
            Head {
                checkpoint: Some([segment, offset]),
                ..
            } => Line::Checkpoint(Pos { segment, offset }),
            Head {
                rollout_id: Some(rollout_id),
                merged_into: Some(_),
                ..
            } => Line::Merged { rollout_id },
            Head {
                rollout_id: Some(rollout_id),
                store: Some(saved),
                ..
            } => Line::Summary { rollout_id, saved },
            _ => Line::Other,
        }
    }
}

/// The file, as the view appends to it.
pub struct Log {
    file: File,
    /// Bytes of whole lines on disk.
    len: u64,
    /// Lines waiting for [`Log::commit`].
    pending: Vec<u8>,
    /// A failed commit may have left part of its lines.
    torn: bool,
    sync: bool,
}

impl Log {
    /// Opens (or creates) the file in `data_dir`, calls `on_line` with the
    /// offset and meaning of every whole line, and cuts off a last line that
    /// a crash left incomplete.
    pub fn open(
        data_dir: &Path,
        sync: bool,
        mut on_line: impl FnMut(u64, Line),
    ) -> io::Result<Log> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(data_dir.join(FILE))?;
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut line = Vec::new();
        let mut len = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            on_line(len, Line::parse(&line));
            len += n as u64;
        }
        drop(reader);
        let mut log = Log {
            file,
            len,
            pending: Vec::new(),
            torn: line.last().is_some_and(|b| *b != b'\n'),
            sync,
        };
        log.cut()?;
        Ok(log)
    }

    /// Another handle on the file, to read lines back from.
    pub fn reader(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Queues a line; returns the offset it will have once committed.
    pub fn push(&mut self, line: &[u8]) -> u64 {
        let at = self.len + self.pending.len() as u64;
        self.pending.extend_from_slice(line);
        at
    }

    /// True when lines are queued but not yet committed.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the queued lines and makes them durable. On failure they stay
    /// queued, at the same offsets, and what reached the file is cut off.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.cut()?;
        self.torn = true;
        let mut file = &self.file;
        file.write_all(&self.pending)?;
        if self.sync {
            self.file.sync_data()?;
        }
        self.torn = false;
        self.len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    fn cut(&mut self) -> io::Result<()> {
        if self.torn {
            self.file.set_len(self.len)?;
            if self.sync {
                self.file.sync_data()?;
            }
            self.torn = false;
        }
        Ok(())
    }
}

/// Reads back the summary line at `offset`: its rollout id, trace file name
/// and what the index knew of the rollout.
pub fn read_saved(file: &File, offset: u64) -> io::Result<(String, String, Saved)> {
    #[derive(Deserialize)]
    struct Back {
        rollout_id: String,
        file: String,
        store: Saved,
    }
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, offset + line.len() as u64)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "summary line cut short",
            ));
        }
        match chunk[..n].iter().position(|b| *b == b'\n') {
            Some(end) => {
                line.extend_from_slice(&chunk[..end]);
                break;
            }
            None => line.extend_from_slice(&chunk[..n]),
        }
    }
    let back: Back = serde_json::from_slice(&line).map_err(io::Error::other)?;
    Ok((back.rollout_id, back.file, back.store))
}

/// Reads the rollouts' summaries, the last one of each rollout, without
/// those merged away; `Ok(None)` when there is no file yet. Lines that do not
/// parse (one being appended right now, say) are skipped.
pub fn load(data_dir: &Path) -> io::Result<Option<Vec<Summary>>> {
    #[derive(Deserialize)]
    struct Merged {
        rollout_id: String,
        // Required, so that only merge lines parse as one.
        #[serde(rename = "merged_into")]
        _into: serde::de::IgnoredAny,
    }
    let file = match File::open(data_dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out: Vec<Option<Summary>> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.starts_with(b"{\"checkpoint\"") {
            continue;
        }
        if let Ok(s) = serde_json::from_slice::<Summary>(&line) {
            match at.get(&s.rollout_id) {
                Some(&i) => out[i] = Some(s),
                None => {
                    at.insert(s.rollout_id.clone(), out.len());
                    out.push(Some(s));
                }
            }
        } else if let Ok(m) = serde_json::from_slice::<Merged>(&line) {
            if let Some(&i) = at.get(&m.rollout_id) {
                out[i] = None;
            }
        }
    }
    Ok(Some(out.into_iter().flatten().collect()))
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
    fn proxied_calls_count_once_and_a_late_reward_does_not_stretch_the_rollout() {
        let proxied = |name: &str, start: f64| {
            span(
                name,
                Some("run"),
                start,
                start + 1.0,
                json!({"gen_ai.request.model": "m", "oclagl.llm_proxy.upstream": "http://p/v1"}),
            )
        };
        let trace = TraceFile {
            rollout_id: "ro-1".into(),
            attempt_id: "at-1".into(),
            status: "succeeded".into(),
            task_input: json!({}),
            span_count: 6,
            spans: vec![
                span("oclagl.rollout", None, 10.0, 18.0, json!({})),
                span("run", Some("oclagl.rollout"), 10.5, 17.5, json!({})),
                proxied("chat-1", 11.0),
                proxied("chat-2", 13.0),
                proxied("chat-3", 15.0),
                // The gateway's transcript turn of the same calls.
                span(
                    "gen_ai",
                    Some("oclagl.rollout"),
                    17.5,
                    17.5,
                    json!({"gen_ai.prompt.0.role": "user", "gen_ai.completion.0.content": "x"}),
                ),
                // A reward given a minute later.
                span(
                    "agentlightning.annotation",
                    Some("oclagl.rollout"),
                    78.0,
                    78.0,
                    json!({"agentlightning.reward.0.name": "r", "agentlightning.reward.0.value": 1.0}),
                ),
            ],
        };
        let s = summarize(&trace, "f.json");
        assert_eq!(s.model_calls, 3, "what the provider received");
        assert_eq!((s.start, s.end), (Some(10.0), Some(18.0)));
        assert_eq!(s.reward(), Some(1.0));
    }

    #[test]
    fn previews_are_one_line_and_cut() {
        assert_eq!(preview("a\n b\tc", 10), "a b c");
        assert_eq!(preview("abcdefghijkl", 5), "abcd…");
        assert_eq!(preview("ééééééé", 3), "éé…");
    }

    #[test]
    fn the_last_line_of_a_rollout_counts_and_merged_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let trace = |id: &str, status: &str| TraceFile {
            rollout_id: id.into(),
            attempt_id: "at-2".into(),
            status: status.into(),
            task_input: Value::Null,
            span_count: 0,
            spans: vec![],
        };
        let running = summarize(&trace("ro-2", "running"), "f.json");
        let done = summarize(&trace("ro-2", "succeeded"), "f.json");
        let derived = summarize(&trace("ro-d", "running"), "d.json");
        let saved = Saved {
            records: vec![[1, 8], [2, 8]],
            traces: vec!["ab".repeat(16)],
            derived: false,
            first_received: 7,
        };
        let mut log = Log::open(dir.path(), true, |_, _| {}).unwrap();
        let first = log.push(&summary_line(&running, &saved));
        log.push(&summary_line(&derived, &Saved::default()));
        log.push(&checkpoint_line(Pos {
            segment: 1,
            offset: 9,
        }));
        let last = log.push(&summary_line(&done, &saved));
        log.push(&merged_line("ro-d", "ro-2"));
        assert!(
            load(dir.path()).unwrap().unwrap().is_empty(),
            "not committed yet"
        );
        log.commit().unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap(), vec![done]);
        let (id, file, back) = read_saved(&log.reader().unwrap(), last).unwrap();
        assert_eq!(
            (id.as_str(), file.as_str(), &back),
            ("ro-2", "f.json", &saved)
        );
        assert_eq!(back.trace_ids().collect::<Vec<_>>(), vec![[0xab; 16]]);
        assert!(read_saved(&log.reader().unwrap(), first + 1).is_err());

        // A line cut short by a crash is cut off at the next open; the
        // others read as they were written.
        drop(log);
        let path = dir.path().join(FILE);
        let whole = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"rollout_id\":\"ro-3\",\"sta")
            .unwrap();
        let mut seen = Vec::new();
        let log = Log::open(dir.path(), true, |offset, line| {
            seen.push(match line {
                Line::Summary { rollout_id, saved } => {
                    format!("{offset} {rollout_id} {}", saved.records.len())
                }
                Line::Merged { rollout_id } => format!("{offset} merged {rollout_id}"),
                Line::Checkpoint(pos) => format!("{offset} checkpoint {pos}"),
                Line::Other => format!("{offset} other"),
            })
        })
        .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], format!("{first} ro-2 2"));
        assert!(seen[2].ends_with("checkpoint 1:9"), "{seen:?}");
        assert_eq!(seen[3], format!("{last} ro-2 2"));
        assert!(seen[4].ends_with("merged ro-d"), "{seen:?}");
        drop(log);
    }
}
