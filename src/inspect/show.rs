//! `oclagl show <rollout>`: one rollout's span tree from its trace file, with
//! each span's start and duration as a bar on the rollout's timeline, model
//! calls with their model, tokens, reply and requested tool calls (read with
//! the conversation readers), tool calls with their arguments, rewards,
//! and errors highlighted. `--json` prints the AGL trace file itself.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{duration, number, InspectError, Paint};
use crate::agl::span::Span;
use crate::agl::summary::{is_model_call, preview, span_rewards, summarize, tool_name, Summary};
use crate::agl::trace_file::{datetime, file_stem, parse_file_name, TraceFile};
use crate::conversation::attrs::{first_count, first_str};
use crate::conversation::{Convention, Role};
use crate::export::read::Chosen;
use crate::semconv::{COMPLETION_TOKENS, MODEL_ATTRS, PROMPT_TOKENS};
use crate::util::count;

/// `oclagl show` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// The rollout (`ro-…`).
    pub rollout_id: String,
    /// Folder of the trace files.
    #[arg(long, env = "OCLAGL_TRACES_DIR", default_value = "./traces")]
    pub traces_dir: PathBuf,
    /// Print the AGL trace file (JSON) instead of the tree.
    #[arg(long, env = "OCLAGL_SHOW_JSON")]
    pub json: bool,
}

/// Width of the timeline bars.
const BAR: usize = 24;
/// Longest text shown for a reply or tool arguments.
const TEXT: usize = 100;

/// The trace file of a rollout in `dir`; an id given without its `ro-`
/// prefix (`68a3eef4d456`) is also looked for with it.
pub fn find(dir: &Path, rollout_id: &str) -> Result<PathBuf, InspectError> {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| InspectError::Read {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?
        .flatten()
        .collect();
    let prefixed = (!rollout_id.starts_with("ro-")).then(|| format!("ro-{rollout_id}"));
    for id in std::iter::once(rollout_id).chain(prefixed.as_deref()) {
        let stem = file_stem(id);
        if let Some(entry) = entries
            .iter()
            .find(|e| e.file_name().to_str().and_then(parse_file_name) == Some(stem.as_str()))
        {
            return Ok(entry.path());
        }
    }
    Err(InspectError::NotFound(match prefixed {
        Some(with) => format!(
            "no trace file for rollout {rollout_id} or {with} in {} (rollout ids start with ro-; `oclagl ls` lists them; pass --traces-dir)",
            dir.display()
        ),
        None => format!(
            "no trace file for rollout {rollout_id} in {} (a rollout's file is written once it has been quiet for serve's --quiet; pass --traces-dir)",
            dir.display()
        ),
    }))
}

/// Prints the rollout on stdout.
pub fn run(args: &ShowArgs) -> Result<(), InspectError> {
    let path = find(&args.traces_dir, &args.rollout_id)?;
    let read_err = |reason: String| InspectError::Read {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(&path).map_err(|e| read_err(e.to_string()))?;
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        out.write_all(&bytes)?;
        if !bytes.ends_with(b"\n") {
            writeln!(out)?;
        }
    } else {
        let trace: TraceFile =
            serde_json::from_slice(&bytes).map_err(|e| read_err(e.to_string()))?;
        let name = path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        render(&mut out, &trace, &name, Paint::for_stdout())?;
    }
    out.flush()?;
    Ok(())
}

/// The rollout's lines above its span tree.
fn write_header(
    out: &mut impl Write,
    trace: &TraceFile,
    summary: &Summary,
    file: &str,
    paint: Paint,
) -> io::Result<()> {
    writeln!(
        out,
        "{} {}  attempt {}  {}  started {}  took {}",
        paint.bold("rollout"),
        paint.bold(&trace.rollout_id),
        trace.attempt_id,
        paint.status(&trace.status, 0),
        summary.start.map_or_else(|| "-".into(), datetime),
        summary.duration().map_or_else(|| "-".into(), duration),
    )?;
    if let Some(prompt) = &summary.prompt {
        writeln!(out, "prompt   {prompt}")?;
    }
    if let Some(session) = &summary.session {
        writeln!(out, "session  {session}")?;
    }
    let rewards = rewards_text(&summary.rewards);
    writeln!(
        out,
        "rewards  {}",
        if rewards.is_empty() {
            "none".into()
        } else {
            rewards
        }
    )?;
    writeln!(
        out,
        "spans    {} ({}, {})  file {file}\n",
        summary.spans,
        count(summary.model_calls as u64, "model call", "model calls"),
        count(summary.tool_calls as u64, "tool call", "tool calls")
    )?;

    Ok(())
}

/// Children by parent index, in start order; the roots under `None`.
fn span_tree(trace: &TraceFile) -> HashMap<Option<usize>, Vec<usize>> {
    let ids: HashMap<&str, usize> = trace
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let parent_of = |s: &Span| s.parent_id.as_deref().and_then(|p| ids.get(p).copied());
    // A span whose parent is not in the file (the proxy's call under a
    // span the gateway did not export) goes under the innermost span of its
    // trace whose time encloses it, among the spans placed by their ids.
    let placed: Vec<usize> = (0..trace.spans.len())
        .filter(|i| {
            let s = &trace.spans[*i];
            s.parent_id.is_none() || parent_of(s).is_some()
        })
        .collect();
    let enclosing = |s: &Span| -> Option<usize> {
        let (start, end) = (s.start_time?, s.end_time?);
        placed
            .iter()
            .copied()
            .filter(|p| {
                let o = &trace.spans[*p];
                o.trace_id == s.trace_id
                    && o.start_time.is_some_and(|t| t <= start)
                    && o.end_time.is_some_and(|t| t >= end)
            })
            .max_by(|a, b| {
                let t = |i: usize| trace.spans[i].start_time.unwrap_or(f64::NEG_INFINITY);
                t(*a).total_cmp(&t(*b))
            })
    };
    let mut children: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for (i, s) in trace.spans.iter().enumerate() {
        let parent = match (s.parent_id.is_some(), parent_of(s)) {
            (true, None) => enclosing(s),
            (_, found) => found,
        };
        children
            .entry(parent.filter(|p| *p != i))
            .or_default()
            .push(i);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| {
            let start = |i: usize| trace.spans[i].start_time.unwrap_or(f64::INFINITY);
            start(*a).total_cmp(&start(*b))
        });
    }
    children
}

/// Writes the tree of `trace` (its file named `file`).
pub fn render(out: &mut impl Write, trace: &TraceFile, file: &str, paint: Paint) -> io::Result<()> {
    let summary = summarize(trace, file);
    let (t0, t1) = (summary.start.unwrap_or(0.0), summary.end.unwrap_or(0.0));
    write_header(out, trace, &summary, file, paint)?;
    let children = span_tree(trace);
    let timeline = Timeline { t0, t1 };
    let mut stack: Vec<(usize, String, bool)> = children
        .get(&None)
        .map(|roots| {
            roots
                .iter()
                .rev()
                .enumerate()
                .map(|(n, i)| (*i, String::new(), n == 0))
                .collect()
        })
        .unwrap_or_default();
    let mut shown = 0;
    while let Some((i, indent, last)) = stack.pop() {
        shown += 1;
        if shown > trace.spans.len() {
            break; // a cycle of parent ids: each span once is enough
        }
        let span = &trace.spans[i];
        let is_root = children.get(&None).is_some_and(|roots| roots.contains(&i));
        let branch = if is_root {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let detail_indent = format!(
            "{indent}{}",
            if is_root {
                ""
            } else if last {
                "   "
            } else {
                "│  "
            }
        );
        let kids: &[usize] = children.get(&Some(i)).map_or(&[], Vec::as_slice);
        write_span(
            out,
            span,
            &timeline,
            &indent,
            branch,
            &detail_indent,
            !kids.is_empty(),
            trace,
            paint,
        )?;
        for (n, k) in kids.iter().enumerate().rev() {
            stack.push((*k, detail_indent.clone(), n + 1 == kids.len()));
        }
    }
    Ok(())
}

fn rewards_text(rewards: &[crate::reward::Reward]) -> String {
    rewards
        .iter()
        .map(|r| format!("{}={}", r.name, number(r.value)))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Timeline {
    t0: f64,
    t1: f64,
}

impl Timeline {
    /// `+0.120s   1.500s  [   ████      ]`
    fn columns(&self, span: &Span) -> String {
        let (Some(s), Some(e)) = (span.start_time, span.end_time) else {
            return format!("{:>9}  {:>9}  [{}]", "-", "-", " ".repeat(BAR));
        };
        let total = (self.t1 - self.t0).max(1e-9);
        let pos = |t: f64| (((t - self.t0) / total) * BAR as f64).clamp(0.0, BAR as f64);
        let from = (pos(s).floor() as usize).min(BAR - 1);
        let to = (pos(e).ceil() as usize).clamp(from + 1, BAR);
        let bar = format!(
            "{}{}{}",
            " ".repeat(from),
            "█".repeat(to - from),
            " ".repeat(BAR - to)
        );
        format!(
            "{:>9}  {:>9}  [{bar}]",
            format!("+{:.3}s", (s - self.t0).max(0.0)),
            duration((e - s).max(0.0))
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn write_span(
    out: &mut impl Write,
    span: &Span,
    timeline: &Timeline,
    indent: &str,
    branch: &str,
    detail_indent: &str,
    has_children: bool,
    trace: &TraceFile,
    paint: Paint,
) -> io::Result<()> {
    let attrs = &span.attributes;
    let failed = span.status.status_code == "ERROR";
    let name = if failed {
        paint.red(&span.name)
    } else {
        paint.bold(&span.name)
    };
    let mut facts = Vec::new();
    let mut details = Vec::new();
    if let Some(tool) = tool_name(attrs) {
        let args = first_str(
            attrs,
            &[
                "tool.parameters",
                "gen_ai.tool.call.arguments",
                "tool.arguments",
            ],
        );
        facts.push(format!(
            "tool {tool}({})",
            preview(args.as_deref().unwrap_or(""), TEXT)
        ));
    } else if is_model_call(attrs) {
        if let Some(model) = first_str(attrs, &MODEL_ATTRS) {
            facts.push(format!("model {model}"));
        }
        let (inp, outp) = (
            first_count(attrs, &PROMPT_TOKENS),
            first_count(attrs, &COMPLETION_TOKENS),
        );
        if inp + outp > 0 {
            facts.push(format!("tokens {inp} in / {outp} out"));
        }
        details.extend(model_call_details(span, trace));
    }
    let rewards = span_rewards(span);
    if !rewards.is_empty() {
        facts.push(paint.green(&format!("reward {}", rewards_text(&rewards))));
    }
    if failed {
        let why = span
            .status
            .description
            .clone()
            .or_else(|| {
                span.events.iter().find_map(|e| {
                    e.attributes
                        .get("exception.message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
            })
            .unwrap_or_default();
        facts.push(paint.red(&format!("ERROR {}", preview(&why, TEXT))));
    }
    writeln!(
        out,
        "{}  {indent}{branch}{name}{}{}",
        timeline.columns(span),
        if facts.is_empty() { "" } else { "  " },
        facts.join("  ")
    )?;
    let pad = " ".repeat(9 + 2 + 9 + 2 + BAR + 2 + 2);
    let bar = if has_children { "│  " } else { "   " };
    for d in details {
        writeln!(out, "{pad}{detail_indent}{bar}{}", paint.dim(&d))?;
    }
    Ok(())
}

/// The reply and requested tool calls of a model call, read with the
/// conversation readers (any span convention).
fn model_call_details(span: &Span, trace: &TraceFile) -> Vec<String> {
    let Some(convention) = span
        .attributes
        .keys()
        .filter_map(|k| Convention::of_key(k))
        .min()
    else {
        return Vec::new();
    };
    let children: Vec<Map<String, Value>> = trace
        .spans
        .iter()
        .filter(|c| c.parent_id.as_deref() == Some(span.span_id.as_str()))
        .map(|c| c.attributes.clone())
        .collect();
    let chosen = Chosen {
        convention,
        attrs: span.attributes.clone(),
        children,
    };
    let conversation = match chosen.read() {
        Ok(c) => c,
        Err(e) => return vec![format!("(messages unreadable: {e})")],
    };
    let Some(reply) = conversation
        .messages
        .last()
        .filter(|m| m.role == Role::Assistant)
    else {
        return vec![format!(
            "{} in, no reply recorded",
            count(conversation.messages.len() as u64, "message", "messages")
        )];
    };
    let mut out = vec![format!(
        "{} in → {}",
        count(
            conversation.messages.len() as u64 - 1,
            "message",
            "messages"
        ),
        reply
            .content
            .as_deref()
            .map_or_else(|| "(no text)".into(), |t| format!("{:?}", preview(t, TEXT)))
    )];
    for call in &reply.tool_calls {
        out.push(format!(
            "calls {}({})",
            call.name,
            preview(&call.arguments_text(), TEXT)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn span(
        id: &str,
        parent: Option<&str>,
        name: &str,
        start: f64,
        end: f64,
        attrs: Value,
    ) -> Value {
        json!({
            "rollout_id": "ro-1", "attempt_id": "at-1", "sequence_id": 1,
            "trace_id": "t", "span_id": id, "parent_id": parent, "name": name,
            "status": {"status_code": if name == "boom" {"ERROR"} else {"OK"},
                       "description": if name == "boom" {Some("it broke")} else {None}},
            "attributes": attrs, "start_time": start, "end_time": end,
            "context": null, "parent": null,
            "resource": {"attributes": {}, "schema_url": ""}
        })
    }

    #[test]
    fn the_tree_shows_timing_calls_rewards_and_errors() {
        let trace: TraceFile = serde_json::from_value(json!({
            "rollout_id": "ro-1", "attempt_id": "at-1", "status": "failed",
            "task_input": {"prompt": "list files"}, "span_count": 5,
            "spans": [
                span("r", None, "oclagl.rollout", 100.0, 104.0, json!({"oclagl.session_key": "s"})),
                span("g", Some("r"), "gen_ai", 101.0, 102.0, json!({
                    "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "list files",
                    "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "calling ls",
                    "gen_ai.completion.0.tool_calls.0.id": "c1",
                    "gen_ai.completion.0.tool_calls.0.name": "ls",
                    "gen_ai.completion.0.tool_calls.0.arguments": "{\"path\": \".\"}",
                    "gen_ai.response.model": "m-1", "gen_ai.usage.prompt_tokens": 12,
                    "gen_ai.usage.completion_tokens": 3})),
                span("t", Some("g"), "tool", 102.0, 103.0, json!({"tool.name": "ls", "tool.call.id": "c1", "tool.parameters": "{\"path\": \".\"}"})),
                span("b", Some("r"), "boom", 103.0, 104.0, json!({})),
                span("a", Some("r"), "agentlightning.annotation", 104.0, 104.0,
                     json!({"agentlightning.reward.0.name": "exact", "agentlightning.reward.0.value": 0.0}))
            ]
        }))
        .unwrap();
        let mut out = Vec::new();
        render(&mut out, &trace, "f.json", Paint { on: false }).unwrap();
        let text = String::from_utf8(out).unwrap();
        let has = |needle: &str| assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        has("rollout ro-1  attempt at-1  failed  started 1970-01-01 00:01:40  took 4.000s");
        has("prompt   list files");
        has("rewards  exact=0");
        has("spans    5 (1 model call, 1 tool call)");
        has("+0.000s     4.000s  [████████████████████████]  oclagl.rollout");
        has("+1.000s     1.000s  [      ██████            ]  ├─ gen_ai  model m-1  tokens 12 in / 3 out");
        has("│  │  1 message in → \"calling ls\"");
        has("calls ls({\"path\": \".\"})");
        has("│  └─ tool  tool ls({\"path\": \".\"})");
        has("├─ boom  ERROR it broke");
        has("└─ agentlightning.annotation  reward exact=0");
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            find(dir.path(), "ro-1"),
            Err(InspectError::NotFound(_))
        ));
        std::fs::write(dir.path().join("rollout_ro-1_20260212T160713Z.json"), "{}").unwrap();
        assert!(find(dir.path(), "ro-1").is_ok());
    }

    #[test]
    fn a_span_whose_parent_was_not_exported_sits_in_the_span_enclosing_it() {
        // The proxy's calls name the gateway's own span as parent, which the
        // gateway did not export: they go under `run`, in time order.
        let trace: TraceFile = serde_json::from_value(json!({
            "rollout_id": "ro-1", "attempt_id": "at-1", "status": "succeeded",
            "task_input": {}, "span_count": 5,
            "spans": [
                span("c2", Some("gw"), "chat two", 105.0, 106.0, json!({})),
                span("r", None, "oclagl.rollout", 100.0, 110.0, json!({})),
                span("w", Some("r"), "run", 101.0, 109.0, json!({})),
                span("c1", Some("gw"), "chat one", 102.0, 103.0, json!({})),
                span("m", Some("r"), "message", 109.5, 109.5, json!({})),
            ]
        }))
        .unwrap();
        let mut out = Vec::new();
        render(&mut out, &trace, "f.json", Paint { on: false }).unwrap();
        let text = String::from_utf8(out).unwrap();
        let tree: Vec<&str> = text.lines().filter_map(|l| l.split("]  ").nth(1)).collect();
        assert_eq!(
            tree,
            [
                "oclagl.rollout",
                "├─ run",
                "│  ├─ chat one",
                "│  └─ chat two",
                "└─ message",
            ],
            "{text}"
        );
    }
}
