//! Reading OpenClaw's trajectory records: an exported bundle folder
//! (`openclaw sessions export-trajectory`) or a legacy `*.trajectory.jsonl`
//! runtime file, into the agent runs they hold.
//!
//! Both hold events of one envelope (`traceSchema: "openclaw-trajectory"`,
//! `schemaVersion: 1`, `type`, `ts`, `sessionId`, `sessionKey`, `runId` on
//! runtime events, `data`). A run is read from its runtime events, which
//! both sources carry: `session.started` (start), `context.compiled` (the
//! system prompt, the tools and the messages before the run), `model.completed`
//! (`messagesSnapshot`: the conversation as it stood when the run ended,
//! usage), `session.ended` (status). A bundle's `manifest.json` lists its
//! files and their sizes, which tells a partial bundle from a whole one;
//! its `tools.json` and `system-prompt.txt` stand in for what the events
//! left out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The schema marker every trajectory file carries.
pub const TRACE_SCHEMA: &str = "openclaw-trajectory";
/// The schema version this reader knows.
pub const SCHEMA_VERSION: u64 = 1;

/// A source that cannot be imported, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file cannot be read.
    #[error("{path}: cannot read: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A bundle is missing a file or holds a shorter one than its manifest
    /// says.
    #[error("{path}: partial bundle: {what}; export it again with `openclaw sessions export-trajectory`")]
    Partial {
        /// The bundle.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// A file is not what a trajectory file holds.
    #[error("{path}: corrupt: {what}; export it again with `openclaw sessions export-trajectory`")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, where.
        what: String,
    },
    /// Another schema, or a version this reader does not know.
    #[error("{path}: {what}; this oclagl reads traceSchema {TRACE_SCHEMA:?} version {SCHEMA_VERSION}: upgrade oclagl, or export with a matching OpenClaw")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What it says instead.
        what: String,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// It answered.
    Succeeded,
    /// It failed, timed out or was aborted: why.
    Failed(String),
}

/// One agent run (one user message and what the agent did about it).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The bundle or file it was read from.
    pub source: PathBuf,
    /// OpenClaw's session id.
    pub session_id: String,
    /// The session key (`agent:<id>:<key>`), when recorded.
    pub session_key: Option<String>,
    /// OpenClaw's run id.
    pub run_id: String,
    /// The user's message.
    pub prompt: String,
    /// How it ended.
    pub status: RunStatus,
    /// When it started and ended (Unix nanoseconds).
    pub start_unix_nano: u64,
    /// When it ended.
    pub end_unix_nano: u64,
    /// The system prompt, when the record holds it whole.
    pub system_prompt: Option<String>,
    /// The tool definitions (`{name, description, parameters}`).
    pub tools: Vec<Value>,
    /// The session's messages before the run, in OpenClaw's shape.
    pub history: Vec<Value>,
    /// The run's messages (its user message, the answers, the tool
    /// results), in OpenClaw's shape.
    pub messages: Vec<Value>,
    /// The provider and model the run used.
    pub provider: Option<String>,
    /// The model.
    pub model: Option<String>,
}

/// What a source holds: its runs and its size in bytes.
#[derive(Debug)]
pub struct Read {
    /// The runs, in the order they started.
    pub runs: Vec<Run>,
    /// Bytes read.
    pub bytes: u64,
}

fn read_file(path: &Path) -> Result<Vec<u8>, BundleError> {
    std::fs::read(path).map_err(|e| BundleError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn json_file(path: &Path) -> Result<Value, BundleError> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|e| BundleError::Corrupt {
        path: path.to_path_buf(),
        what: format!("not JSON ({e})"),
    })
}

/// Checks the schema marker of a file's header or event.
fn check_schema(path: &Path, v: &Value, where_: &str) -> Result<(), BundleError> {
    match (&v["traceSchema"], &v["schemaVersion"]) {
        (Value::String(s), Value::Number(n))
            if s == TRACE_SCHEMA && n.as_u64() == Some(SCHEMA_VERSION) =>
        {
            Ok(())
        }
        (Value::Null, _) if where_.starts_with("line") => Err(BundleError::Corrupt {
            path: path.to_path_buf(),
            what: format!("{where_} has no traceSchema"),
        }),
        (schema, version) => Err(BundleError::Schema {
            path: path.to_path_buf(),
            what: format!("{where_} says traceSchema {schema} schemaVersion {version}"),
        }),
    }
}

/// Reads a bundle folder: checks its manifest and files, then its runs.
pub fn read_bundle(dir: &Path) -> Result<Read, BundleError> {
    let manifest_path = dir.join("manifest.json");
    if !manifest_path.is_file() {
        return Err(BundleError::Partial {
            path: dir.to_path_buf(),
            what: "no manifest.json".into(),
        });
    }
    let manifest = json_file(&manifest_path)?;
    check_schema(&manifest_path, &manifest, "the manifest")?;
    let mut bytes = 0u64;
    for entry in manifest["contents"].as_array().into_iter().flatten() {
        let (Some(name), Some(size)) = (entry["path"].as_str(), entry["bytes"].as_u64()) else {
            return Err(BundleError::Corrupt {
                path: manifest_path.clone(),
                what: format!("a contents entry without path and bytes: {entry}"),
            });
        };
        if name.contains(['/', '\\']) || name == ".." {
            return Err(BundleError::Corrupt {
                path: manifest_path.clone(),
                what: format!("contents names a file outside the bundle: {name:?}"),
            });
        }
        match std::fs::metadata(dir.join(name)) {
            Ok(m) if m.len() == size => bytes += size,
            Ok(m) => {
                return Err(BundleError::Partial {
                    path: dir.to_path_buf(),
                    what: format!("{name} has {} bytes, the manifest says {size}", m.len()),
                })
            }
            Err(_) => {
                return Err(BundleError::Partial {
                    path: dir.to_path_buf(),
                    what: format!("{name} is missing"),
                })
            }
        }
    }
    let events_path = dir.join("events.jsonl");
    if !events_path.is_file() {
        return Err(BundleError::Partial {
            path: dir.to_path_buf(),
            what: "events.jsonl is missing".into(),
        });
    }
    let text = read_file(&events_path)?;
    let mut runs = runs_of(&events_path, &text)?;
    // What the events left out, from the bundle's own files.
    let tools = match dir.join("tools.json") {
        p if p.is_file() => whole_tools(&json_file(&p)?),
        _ => Vec::new(),
    };
    let system = std::fs::read_to_string(dir.join("system-prompt.txt")).ok();
    for run in &mut runs {
        run.source = dir.to_path_buf();
        if run.tools.is_empty() {
            run.tools = tools.clone();
        }
        if run.system_prompt.is_none() {
            run.system_prompt = system.clone();
        }
    }
    Ok(Read { runs, bytes })
}

/// The tool definitions of a recorded list when it holds them all: OpenClaw
/// caps the list (later entries become `"[Truncated]"`), and a part of the
/// tools is no record of what the model was offered, so none are kept then.
pub fn whole_tools(list: &Value) -> Vec<Value> {
    let Some(items) = list.as_array() else {
        return Vec::new();
    };
    if items.iter().all(|t| t["name"].is_string()) {
        items.clone()
    } else {
        Vec::new()
    }
}

/// Reads a legacy `*.trajectory.jsonl` runtime file.
pub fn read_legacy(path: &Path) -> Result<Read, BundleError> {
    let text = read_file(path)?;
    let runs = runs_of(path, &text)?;
    Ok(Read {
        runs,
        bytes: text.len() as u64,
    })
}

/// Unix nanoseconds of an RFC 3339 UTC time (`2026-12-05T07:46:11.128Z`).
pub fn parse_ts(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = match s.get(19..s.len() - 1)? {
        "" => 0,
        f if f.starts_with('.') && f.len() > 1 && f.len() <= 10 => {
            let digits = &f[1..];
            let n: u64 = digits.parse().ok()?;
            n * 10u64.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    u64::try_from(secs).ok().map(|s| s * 1_000_000_000 + frac)
}

/// What the runtime events of one run say, as they come.
#[derive(Default)]
struct Partial {
    session_id: String,
    session_key: Option<String>,
    start: Option<u64>,
    end: Option<u64>,
    prompt: Option<String>,
    final_prompt: Option<String>,
    system_prompt: Option<String>,
    tools: Vec<Value>,
    history: Vec<Value>,
    snapshot: Option<Vec<Value>>,
    ended: Option<Value>,
    provider: Option<String>,
    model: Option<String>,
}

/// The runs of a file of trajectory events.
fn runs_of(path: &Path, text: &[u8]) -> Result<Vec<Run>, BundleError> {
    let corrupt = |what: String| BundleError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    let text = std::str::from_utf8(text).map_err(|e| corrupt(format!("not UTF-8 ({e})")))?;
    let mut order: Vec<String> = Vec::new();
    let mut runs: HashMap<String, Partial> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let where_ = format!("line {}", n + 1);
        let e: Value = serde_json::from_str(line)
            .map_err(|err| corrupt(format!("{where_} is not JSON ({err})")))?;
        check_schema(path, &e, &where_)?;
        let (Some(kind), Some(ts)) = (e["type"].as_str(), e["ts"].as_str()) else {
            return Err(corrupt(format!("{where_} has no type or ts")));
        };
        let ts = parse_ts(ts)
            .ok_or_else(|| corrupt(format!("{where_}: ts {ts:?} is not a UTC time")))?;
        if e["source"] == "transcript" {
            continue;
        }
        let Some(run_id) = e["runId"].as_str() else {
            continue;
        };
        let run = runs.entry(run_id.to_string()).or_insert_with(|| {
            order.push(run_id.to_string());
            Partial::default()
        });
        if let Some(s) = e["sessionId"].as_str() {
            run.session_id = s.to_string();
        }
        if let Some(k) = e["sessionKey"].as_str() {
            run.session_key = Some(k.to_string());
        }
        if let Some(p) = e["provider"].as_str() {
            run.provider = Some(p.to_string());
        }
        if let Some(m) = e["modelId"].as_str() {
            run.model = Some(m.to_string());
        }
        run.start = Some(run.start.map_or(ts, |s| s.min(ts)));
        run.end = Some(run.end.map_or(ts, |s| s.max(ts)));
        let data = &e["data"];
        match kind {
            "context.compiled" => {
                // Whole strings only: a field over OpenClaw's size limit is
                // recorded as a `{truncated: true, …}` object.
                run.system_prompt = data["systemPrompt"].as_str().map(str::to_string);
                run.tools = whole_tools(&data["tools"]);
                run.history = data["messages"].as_array().cloned().unwrap_or_default();
            }
            // The first try's prompt: a retried run resubmits it wrapped.
            "prompt.submitted" if run.prompt.is_none() => {
                run.prompt = data["prompt"].as_str().map(str::to_string);
            }
            "model.completed" => {
                if let Some(s) = data["messagesSnapshot"].as_array() {
                    run.snapshot = Some(s.clone());
                }
                if let Some(p) = data["finalPromptText"].as_str() {
                    run.final_prompt = Some(p.to_string());
                }
            }
            "session.ended" => run.ended = Some(data.clone()),
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for run_id in order {
        let Some(p) = runs.remove(&run_id) else {
            continue;
        };
        let prompt = p.final_prompt.or(p.prompt).unwrap_or_default();
        let snapshot = p.snapshot.unwrap_or_default();
        // The snapshot is the whole conversation; the run's part follows the
        // history it was compiled with.
        let split = if snapshot.len() >= p.history.len()
            && snapshot
                .iter()
                .zip(&p.history)
                .all(|(a, b)| a["role"] == b["role"])
        {
            p.history.len()
        } else {
            snapshot
                .iter()
                .rposition(|m| m["role"] == "user")
                .unwrap_or(0)
        };
        let (history, messages) = snapshot.split_at(split.min(snapshot.len()));
        let status = match &p.ended {
            Some(d) if d["status"] == "success" => RunStatus::Succeeded,
            Some(d) => RunStatus::Failed(failure(d, messages)),
            None => RunStatus::Failed("the run did not end (no session.ended event)".into()),
        };
        out.push(Run {
            source: path.to_path_buf(),
            session_id: p.session_id,
            session_key: p.session_key,
            run_id,
            prompt,
            status,
            start_unix_nano: p.start.unwrap_or_default(),
            end_unix_nano: p.end.unwrap_or_default(),
            system_prompt: p.system_prompt,
            tools: p.tools,
            history: history.to_vec(),
            messages: messages.to_vec(),
            provider: p.provider,
            model: p.model,
        });
    }
    Ok(out)
}

/// Why a run failed, in words: the last answer's error, else how it ended.
fn failure(ended: &Value, messages: &[Value]) -> String {
    if let Some(e) = messages
        .iter()
        .rev()
        .find_map(|m| m["errorMessage"].as_str())
    {
        return e.to_string();
    }
    for flag in ["timedOut", "aborted", "externalAbort", "idleTimedOut"] {
        if ended[flag] == true {
            return flag.to_string();
        }
    }
    match ended["status"].as_str() {
        Some(s) => format!("status {s}"),
        None => "unknown".into(),
    }
}

/// The sources under `path`: itself when it is a bundle or a legacy file,
/// else the bundles and legacy files directly inside it (sorted).
pub fn sources(path: &Path) -> Result<Vec<Source>, BundleError> {
    if path.is_file() {
        return Ok(vec![Source::Legacy(path.to_path_buf())]);
    }
    if path.join("manifest.json").exists() || path.join("events.jsonl").exists() {
        return Ok(vec![Source::Bundle(path.to_path_buf())]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| BundleError::Read {
        path: path.to_path_buf(),
        reason: format!(
            "{e} (name a bundle folder, a folder of bundles or a *.trajectory.jsonl file)"
        ),
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if p.is_dir() && (p.join("manifest.json").exists() || p.join("events.jsonl").exists()) {
            out.push(Source::Bundle(p));
        } else if p.is_dir() && name.starts_with("openclaw-trajectory-") {
            // A bundle with neither file: partial, reported as such.
            out.push(Source::Bundle(p));
        } else if p.is_file() && name.ends_with(".trajectory.jsonl") {
            out.push(Source::Legacy(p));
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

/// One thing to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An exported bundle folder.
    Bundle(PathBuf),
    /// A legacy `*.trajectory.jsonl` runtime file.
    Legacy(PathBuf),
}

impl Source {
    /// Where it is.
    pub fn path(&self) -> &Path {
        match self {
            Source::Bundle(p) | Source::Legacy(p) => p,
        }
    }

    /// Its runs.
    pub fn read(&self) -> Result<Read, BundleError> {
        match self {
            Source::Bundle(p) => read_bundle(p),
            Source::Legacy(p) => read_legacy(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn utc_times_parse_to_nanoseconds() {
        assert_eq!(parse_ts("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_ts("2026-12-05T07:46:11.128Z"),
            Some(1_796_456_771_128_000_000)
        );
        assert_eq!(parse_ts("2026-12-05 07:46:11Z"), None);
        assert_eq!(parse_ts("2026-13-05T07:46:11Z"), None);
        assert_eq!(parse_ts("x"), None);
    }

    fn event(kind: &str, run: &str, ts: &str, data: Value) -> String {
        json!({"traceSchema": TRACE_SCHEMA, "schemaVersion": 1, "source": "runtime",
            "type": kind, "ts": ts, "sessionId": "s-1", "sessionKey": "agent:main:k",
            "runId": run, "provider": "p", "modelId": "m", "data": data})
        .to_string()
    }

    #[test]
    fn a_run_is_its_snapshot_after_the_compiled_history() {
        let hello = json!({"role": "user", "content": "hi"});
        let answer = json!({"role": "assistant", "content": [{"type": "text", "text": "yo"}]});
        let lines = [
            event("session.started", "r1", "2026-01-01T00:00:01Z", json!({})),
            event(
                "context.compiled",
                "r1",
                "2026-01-01T00:00:01Z",
                json!({"systemPrompt": "sys", "tools": [{"name": "ls"}], "messages": [hello, answer]}),
            ),
            event(
                "prompt.submitted",
                "r1",
                "2026-01-01T00:00:01Z",
                json!({"prompt": "again"}),
            ),
            event(
                "model.completed",
                "r1",
                "2026-01-01T00:00:02Z",
                json!({"messagesSnapshot": [hello, answer, {"role": "user", "content": "again"},
                    {"role": "assistant", "content": [], "stopReason": "error", "errorMessage": "500 boom"}]}),
            ),
            event(
                "session.ended",
                "r1",
                "2026-01-01T00:00:03Z",
                json!({"status": "error"}),
            ),
        ];
        let runs = runs_of(Path::new("f"), lines.join("\n").as_bytes()).unwrap();
        assert_eq!(runs.len(), 1);
        let r = &runs[0];
        assert_eq!(r.prompt, "again");
        assert_eq!(r.history.len(), 2);
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.status, RunStatus::Failed("500 boom".into()));
        assert_eq!(r.system_prompt.as_deref(), Some("sys"));
        assert_eq!(r.end_unix_nano - r.start_unix_nano, 2_000_000_000);
    }

    #[test]
    fn bad_lines_and_schemas_are_named() {
        let e = runs_of(Path::new("f"), b"{\"x\":1}\n").unwrap_err();
        assert!(e.to_string().contains("line 1 has no traceSchema"), "{e}");
        let e = runs_of(Path::new("f"), b"not json").unwrap_err();
        assert!(e.to_string().contains("line 1 is not JSON"), "{e}");
        let v2 = event("session.started", "r", "2026-01-01T00:00:01Z", json!({}))
            .replace("\"schemaVersion\":1", "\"schemaVersion\":2");
        let e = runs_of(Path::new("f"), v2.as_bytes()).unwrap_err();
        assert!(matches!(e, BundleError::Schema { .. }), "{e}");
        assert!(e.to_string().contains("upgrade oclagl"), "{e}");
        // A session without runs is no error: it has nothing to import.
        assert_eq!(runs_of(Path::new("f"), b"\n").unwrap(), vec![]);
    }
}
