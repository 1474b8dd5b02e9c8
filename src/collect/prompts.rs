//! Prompt files: plain text (one prompt per line) or JSONL
//! (`{"prompt", "id"?, "metadata"?, "expected"?, "session"?}` per line).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::rollout::Task;

/// Why a prompts file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PromptsError {
    /// The file does not exist.
    #[error("prompts file {path} not found: pass one (oclagl collect my-prompts.txt) or create it with one prompt per line")]
    Missing {
        /// The file.
        path: String,
    },
    /// The file cannot be read.
    #[error("cannot read prompts file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The file holds no prompt.
    #[error("{path} has no prompts: add one prompt per line (or JSONL lines {{\"prompt\": …}})")]
    Empty {
        /// The file.
        path: String,
    },
    /// A JSONL line is malformed.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Deserialize)]
struct JsonPrompt {
    prompt: String,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    expected: Option<Value>,
    #[serde(default)]
    session: Option<String>,
}

/// Reads a prompts file.
pub fn load(path: &Path) -> Result<Vec<Task>, PromptsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PromptsError::Missing {
            path: shown.clone(),
        },
        _ => PromptsError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        },
    })?;
    parse(&text, &shown)
}

/// Reads prompts from `text`: JSONL when `path` ends in `.jsonl` or the first
/// line starts with `{`, else one prompt a line. `path` names the file in
/// errors.
pub fn parse(text: &str, path: &str) -> Result<Vec<Task>, PromptsError> {
    let jsonl = path.ends_with(".jsonl")
        || text
            .lines()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| l.trim_start().starts_with('{'));
    let mut tasks = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !jsonl {
            tasks.push(Task {
                task_id: Some(task_id(None, line)),
                prompt: line.to_string(),
                ..Default::default()
            });
            continue;
        }
        let p: JsonPrompt = serde_json::from_str(line).map_err(|e| PromptsError::Line {
            path: path.to_string(),
            line: n + 1,
            reason: format!(
                "expected {{\"prompt\": \"…\", \"id\"?, \"metadata\"?, \"expected\"?, \"session\"?}}: {e}"
            ),
        })?;
        if p.prompt.trim().is_empty() {
            return Err(PromptsError::Line {
                path: path.to_string(),
                line: n + 1,
                reason: "empty prompt".into(),
            });
        }
        let id = p.id.map(json_text);
        tasks.push(Task {
            task_id: Some(task_id(id.as_deref(), &p.prompt)),
            prompt: p.prompt,
            id,
            metadata: p.metadata,
            expected: p.expected.filter(|v| !v.is_null()).map(json_text),
            session: p.session.filter(|s| !s.trim().is_empty()),
            sample: None,
        });
    }
    if tasks.is_empty() {
        return Err(PromptsError::Empty {
            path: path.to_string(),
        });
    }
    Ok(tasks)
}

/// A JSON string as it is, any other value as JSON text (`7`, `true`).
fn json_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The task a prompt is: its JSONL id, else `p-` and a digest of its text,
/// so the same prompt collected again is the same task.
pub fn task_id(id: Option<&str>, prompt: &str) -> String {
    match id {
        Some(id) => id.to_string(),
        None => format!(
            "p-{}",
            &hex::encode(Sha256::digest(prompt.as_bytes()))[..16]
        ),
    }
}

/// The key `--resume` matches on: the task id, else the prompt.
pub fn resume_key(id: Option<&str>, prompt: &str) -> String {
    match id {
        Some(id) => format!("id:{id}"),
        None => format!("prompt:{prompt}"),
    }
}

/// Each task `samples` times, numbered from 0, without the samples `done`
/// (by [`resume_key`]) already holds.
pub fn attempts(tasks: &[Task], samples: u32, done: &HashMap<String, HashSet<u32>>) -> Vec<Task> {
    let mut out = Vec::new();
    for task in tasks {
        let held = done.get(&resume_key(task.id.as_deref(), &task.prompt));
        for n in 0..samples {
            if held.is_some_and(|h| h.contains(&n)) {
                continue;
            }
            out.push(Task {
                sample: (samples > 1).then_some(n),
                ..task.clone()
            });
        }
    }
    out
}

/// The samples of each task (by [`resume_key`]) that have a succeeded
/// rollout among the trace files in `dir` (a file from before samples counts
/// as sample 0).
pub fn collected(dir: &Path) -> HashMap<String, HashSet<u32>> {
    let mut done: HashMap<String, HashSet<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return done;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if crate::agl::trace_file::parse_file_name(name).is_none() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(doc) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if doc["status"] != "succeeded" {
            continue;
        }
        let input = &doc["task_input"];
        if let Some(prompt) = input["prompt"].as_str() {
            let sample = input["sample"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0);
            done.entry(resume_key(input["id"].as_str(), prompt))
                .or_default()
                .insert(sample);
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_jsonl() {
        let t = parse("What is 2+2?\n\n  Explain recursion.  \n", "p.txt").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].prompt, "Explain recursion.");
        let j = parse(
            "{\"prompt\":\"a\",\"id\":7,\"metadata\":{\"k\":1},\"expected\":4}\n{\"prompt\":\"b\",\"id\":\"x\",\"expected\":\"B\"}\n",
            "p.jsonl",
        )
        .unwrap();
        assert_eq!(j[0].expected.as_deref(), Some("4"));
        assert_eq!(j[1].expected.as_deref(), Some("B"));
        assert_eq!(j[0].id.as_deref(), Some("7"));
        assert_eq!(j[1].id.as_deref(), Some("x"));
        assert_eq!(j[0].metadata, Some(serde_json::json!({"k": 1})));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        assert_eq!(
            parse("\n \n", "p.txt"),
            Err(PromptsError::Empty {
                path: "p.txt".into()
            })
        );
        let e = parse("{\"prompt\":\"a\"}\n{\"promt\":\"b\"}\n", "p.jsonl").unwrap_err();
        assert!(e.to_string().starts_with("p.jsonl:2: "), "{e}");
        let e = load(Path::new("/nonexistent/prompts.txt")).unwrap_err();
        assert!(e.to_string().contains("not found"));
    }

    #[test]
    fn tasks_have_stable_ids_and_samples_skip_what_is_done() {
        let t = parse("same\nother\nsame\n", "p.txt").unwrap();
        assert_eq!(t[0].task_id, t[2].task_id);
        assert_ne!(t[0].task_id, t[1].task_id);
        assert!(t[0].task_id.as_deref().unwrap().starts_with("p-"));
        let j = parse("{\"prompt\":\"a\",\"id\":\"q1\"}\n", "p.jsonl").unwrap();
        assert_eq!(j[0].task_id.as_deref(), Some("q1"));

        let tasks = &t[..2];
        assert_eq!(attempts(tasks, 1, &HashMap::new())[0].sample, None);
        let all = attempts(tasks, 3, &HashMap::new());
        assert_eq!(all.len(), 6);
        assert_eq!(
            all.iter().map(|t| t.sample).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2].map(Some)
        );
        let done = HashMap::from([(resume_key(None, "same"), HashSet::from([0, 2]))]);
        let rest = attempts(tasks, 3, &done);
        assert_eq!(rest.len(), 4);
        assert_eq!((rest[0].prompt.as_str(), rest[0].sample), ("same", Some(1)));
    }
}
