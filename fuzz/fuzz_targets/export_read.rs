//! The trace-file reader of `export-sft`: any bytes as a trace file, through
//! the rollout reader, the conversation readers of every span convention,
//! redaction (every rule: `--redact pii`) and every output format, as
//! `export` runs them on one file; and, with its last message changed, the
//! conversation as a preference pair against itself (`--format dpo`). A
//! JSON object with `events` is first what an AGL v1 server answered (its
//! `rollout` and `events`), made into a trace file as `--source <AGL URL>`
//! does.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use oclagl::conversation::Conversation;
use oclagl::export::group::shared_prompt;
use oclagl::export::read::{self, agl_v1, trace_file::Doc};
use oclagl::export::redact::{Counts, Level, Redactor};
use oclagl::export::stats::Stats;
use oclagl::export::write::dpo::write_pair;
use oclagl::export::write::{write_row, Format, TrainOn};
use serde_json::Value;

const OUTPUTS: [(Format, TrainOn); 4] = [
    (Format::Messages, TrainOn::All),
    (Format::Openai, TrainOn::All),
    (Format::Openai, TrainOn::Last),
    (Format::Trl, TrainOn::All),
];

/// Built once: compiling its patterns takes milliseconds.
static REDACTOR: LazyLock<Redactor> = LazyLock::new(|| Redactor::new(Level::Pii));

/// Whether each tool call's arguments are JSON (a value, or a JSON text).
fn json_arguments(c: &Conversation) -> Vec<bool> {
    c.messages
        .iter()
        .flat_map(|m| &m.tool_calls)
        .map(|call| call.arguments_value().is_some())
        .collect()
}

/// The trace file an AGL v1 server's answers make, if `data` is one.
fn from_agl_v1(data: &[u8]) -> Option<Vec<u8>> {
    let answers: Value = serde_json::from_slice(data).ok()?;
    let events = answers.get("events")?.as_array()?;
    let doc = agl_v1::trace_file(&answers["rollout"], events, "http://agl:8080");
    Some(doc.to_string().into_bytes())
}

fuzz_target!(|data: &[u8]| {
    let converted = from_agl_v1(data);
    if let Some(bytes) = &converted {
        assert!(
            Doc::parse(bytes).is_ok(),
            "AGL v1 answers make a trace file"
        );
    }
    let Ok(doc) = Doc::parse(converted.as_deref().unwrap_or(data)) else {
        return;
    };
    let Ok(rollout) = read::rollout(&doc, "ro-fuzz") else {
        return;
    };
    let Some(chosen) = &rollout.chosen else {
        return;
    };
    let Ok(mut conversation) = chosen.read() else {
        return;
    };
    let before = json_arguments(&conversation);
    REDACTOR.redact(&mut conversation, &mut Counts::new());
    for (was, is) in before.iter().zip(json_arguments(&conversation)) {
        assert!(!was || is, "JSON arguments stay JSON after redaction");
    }
    let mut line = Vec::new();
    for (format, train_on) in OUTPUTS {
        line.clear();
        if write_row(format, train_on, &conversation, &mut line).is_ok() {
            assert!(!line.contains(&b'\n'), "a row is one line");
            serde_json::from_slice::<serde_json::Value>(&line).expect("a row is JSON");
        }
    }
    Stats::default().row(&conversation, rollout.model.as_deref(), rollout.usage);
    let mut other = conversation.clone();
    if let Some(last) = other.messages.last_mut() {
        last.content = Some(format!("{}.", last.content.as_deref().unwrap_or("")));
    }
    if let Some(shared) = shared_prompt(&conversation, &other) {
        line.clear();
        if write_pair(&conversation, &other, shared, &mut line).is_ok() {
            assert!(!line.contains(&b'\n'), "a pair is one line");
            serde_json::from_slice::<serde_json::Value>(&line).expect("a pair is JSON");
        }
    }
});
