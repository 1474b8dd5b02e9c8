//! The system message of a conversation that has none, as the seed's
//! exporter gave it: the text of the file `OPENCLAW_SYSTEM_PROMPT_PATH`
//! names (stripped; an empty file counts as none), else [`SEED_TEXT`].
//! `--system-prompt` picks it (`default`, a file, or `none`); unset, the
//! seed's `messages` format gets the default and the richer formats none.

use std::path::Path;

use crate::conversation::{Conversation, Message, Role};

/// The seed exporter's system message when no file names one.
pub const SEED_TEXT: &str = "You are a personal assistant running inside OpenClaw with access to tools. Follow the user's instructions.";

/// The variable the seed read the system prompt's file from.
pub const PATH_VAR: &str = "OPENCLAW_SYSTEM_PROMPT_PATH";

/// Why the system message cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SystemPromptError(pub String);

/// Python's `str.strip()`: Unicode white space and the four separators
/// Python counts too.
fn strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

fn read(path: &Path, named_by: &str) -> Result<String, SystemPromptError> {
    std::fs::read_to_string(path)
        .map(|text| strip(&text).to_string())
        .map_err(|e| {
            SystemPromptError(format!(
                "{named_by} names {}, which cannot be read as text: {e}; fix the path, or pass --system-prompt none",
                path.display()
            ))
        })
}

/// The text `--system-prompt` asks for; `None` adds none. `spec` is the
/// flag's value (`None` when not given), `seed_format` whether the format
/// is the seed's, `env_path` the value of [`PATH_VAR`].
pub fn resolve(
    spec: Option<&str>,
    seed_format: bool,
    env_path: Option<&Path>,
) -> Result<Option<String>, SystemPromptError> {
    match spec {
        None if !seed_format => Ok(None),
        Some("none") => Ok(None),
        None | Some("default") => {
            let text = match env_path.filter(|p| !p.as_os_str().is_empty()) {
                Some(path) => read(path, PATH_VAR)?,
                None => String::new(),
            };
            Ok(Some(if text.is_empty() {
                SEED_TEXT.to_string()
            } else {
                text
            }))
        }
        Some(file) => {
            let text = read(Path::new(file), "--system-prompt")?;
            if text.is_empty() {
                return Err(SystemPromptError(format!(
                    "--system-prompt names {file}, which is empty; name a file with the prompt, or pass default or none"
                )));
            }
            Ok(Some(text))
        }
    }
}

/// Puts `text` first as the system message when the conversation has no
/// system message (a `developer` message does not count, as in the seed).
pub fn prepend(conversation: &mut Conversation, text: &str) {
    if !conversation.messages.iter().any(|m| m.role == Role::System) {
        conversation
            .messages
            .insert(0, Message::new(Role::System, Some(text.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_format_gets_the_default_and_others_only_when_asked() {
        assert_eq!(resolve(None, true, None), Ok(Some(SEED_TEXT.into())));
        assert_eq!(resolve(None, false, None), Ok(None));
        assert_eq!(
            resolve(Some("default"), false, None),
            Ok(Some(SEED_TEXT.into()))
        );
        assert_eq!(resolve(Some("none"), true, None), Ok(None));
    }

    #[test]
    fn files_are_stripped_and_an_empty_one_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let (full, empty) = (dir.path().join("p.txt"), dir.path().join("e.txt"));
        std::fs::write(&full, "\n  Be terse.\t\x1f\n").unwrap();
        std::fs::write(&empty, " \n").unwrap();
        assert_eq!(
            resolve(None, true, Some(&full)),
            Ok(Some("Be terse.".into()))
        );
        assert_eq!(
            resolve(None, true, Some(&empty)),
            Ok(Some(SEED_TEXT.into()))
        );
        assert_eq!(
            resolve(Some(full.to_str().unwrap()), false, Some(&empty)),
            Ok(Some("Be terse.".into()))
        );
        let e = resolve(Some(empty.to_str().unwrap()), true, None).unwrap_err();
        assert!(e.0.contains("is empty"), "{e}");
        let gone = dir.path().join("gone.txt");
        let e = resolve(None, true, Some(&gone)).unwrap_err();
        assert!(
            e.0.starts_with(PATH_VAR) && e.0.contains("--system-prompt none"),
            "{e}"
        );
    }

    #[test]
    fn only_a_conversation_without_a_system_message_gets_one() {
        let mut c = Conversation {
            messages: vec![
                Message::new(Role::Developer, Some("dev".into())),
                Message::new(Role::User, Some("hi".into())),
            ],
            tools: vec![],
        };
        prepend(&mut c, "sys");
        assert_eq!(
            c.messages[0],
            Message::new(Role::System, Some("sys".into()))
        );
        prepend(&mut c, "again");
        assert_eq!(c.messages.len(), 3);
    }
}
