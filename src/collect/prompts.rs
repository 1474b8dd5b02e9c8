//! Prompt files: plain text (one prompt per line) or JSONL
//! (`{"prompt", "id"?, "metadata"?, "expected"?, "session"?}` per line).

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

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
        tasks.push(Task {
            prompt: p.prompt,
            id: p.id.map(json_text),
            metadata: p.metadata,
            expected: p.expected.filter(|v| !v.is_null()).map(json_text),
            session: p.session.filter(|s| !s.trim().is_empty()),
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

/// The key `--resume` matches on: the task id, else the prompt.
pub fn resume_key(id: Option<&str>, prompt: &str) -> String {
    match id {
        Some(id) => format!("id:{id}"),
        None => format!("prompt:{prompt}"),
    }
}

/// Keys of tasks with a succeeded rollout among the trace files in `dir`.
pub fn collected(dir: &Path) -> HashSet<String> {
    let mut done = HashSet::new();
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
            done.insert(resume_key(input["id"].as_str(), prompt));
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
}
