//! What an export did: rows, turns, tool calls, tokens by model, the
//! rollouts that did not become rows, by reason, and the values redacted,
//! by kind.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::Serialize;

use super::read::Usage;
use crate::conversation::Conversation;

/// Why a rollout did not become a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropped {
    /// The trace file (or store record) could not be read.
    Unreadable,
    /// The conversation span is malformed.
    Malformed,
    /// No span carries messages.
    NoConversation,
    /// The conversation has no messages.
    Empty,
    /// The format cannot express the conversation.
    Unrepresentable,
    /// Its root span never arrived (`--include-incomplete` keeps it).
    Incomplete,
    /// Its status was not selected (`--status`).
    Status,
    /// It started outside `--since`/`--until`, or has no start time.
    Time,
    /// Its session was not selected (`--session`).
    Session,
    /// Its model was not selected (`--model`).
    Model,
    /// It has no reward, and `--min-reward` asks for one.
    NoReward,
    /// Its primary reward is below `--min-reward`.
    LowReward,
    /// Its row was written already (`--dedupe`).
    Duplicate,
    /// It has no reward to rank its task's attempts by (`--best-of`,
    /// `--format dpo`).
    Unranked,
    /// Another attempt of its task has a higher reward (`--best-of`).
    NotBest,
    /// It is in no preference pair: its task has one attempt, or ties, or
    /// margins below `--min-margin`, or attempts that saw different prompts,
    /// or more attempts than `--pairs-per-task` pairs take (`--format dpo`).
    Unpaired,
}

impl Dropped {
    /// The reason in words, naming the flag that dropped the row.
    pub fn describe(self) -> &'static str {
        match self {
            Dropped::Unreadable => "unreadable trace file",
            Dropped::Malformed => "malformed conversation span",
            Dropped::NoConversation => "no conversation span",
            Dropped::Empty => "empty conversation",
            Dropped::Unrepresentable => "not expressible in the format",
            Dropped::Incomplete => "incomplete: its root span never arrived (--include-incomplete)",
            Dropped::Status => "status not selected (--status)",
            Dropped::Time => "outside --since/--until",
            Dropped::Session => "session not selected (--session)",
            Dropped::Model => "model not selected (--model)",
            Dropped::NoReward => "no reward (--min-reward)",
            Dropped::LowReward => "reward below --min-reward",
            Dropped::Duplicate => "duplicate (--dedupe)",
            Dropped::Unranked => "no reward to rank its task's attempts by",
            Dropped::NotBest => "not its task's best attempt (--best-of)",
            Dropped::Unpaired => "in no preference pair (--format dpo)",
        }
    }
}

/// Tokens of the exported calls of one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// Rows whose exported call used this model.
    pub rows: u64,
    /// Their prompt tokens, as the spans report them.
    pub prompt: u64,
    /// Their completion tokens.
    pub completion: u64,
}

/// What an export read, wrote and dropped (`--stats`, the summary line).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Rollouts looked at (trace files and store rollouts).
    pub rollouts: u64,
    /// Bytes of trace files and store records read.
    pub bytes_read: u64,
    /// Rows written, both sides of a split together.
    pub rows: u64,
    /// Rows written to `train.jsonl` (with `--split`).
    pub train_rows: u64,
    /// Rows written to `val.jsonl` (with `--split`).
    pub val_rows: u64,
    /// Messages in the rows written.
    pub messages: u64,
    /// Assistant messages.
    pub turns: u64,
    /// Tool calls in the rows written.
    pub tool_calls: u64,
    /// Tokens by model of the exported calls (`(unknown)` when a span names none).
    pub tokens_by_model: BTreeMap<String, Tokens>,
    /// Rollouts dropped, by reason.
    pub dropped: BTreeMap<Dropped, u64>,
    /// What was redacted (`secrets`, `pii`), `None` with `--no-redact`.
    pub redaction: Option<&'static str>,
    /// Values replaced by placeholders, by kind (every occurrence counts).
    pub redacted: BTreeMap<&'static str, u64>,
    /// How long the export took.
    pub seconds: f64,
}

impl Stats {
    /// Counts a rollout dropped for `why`.
    pub fn drop(&mut self, why: Dropped) {
        *self.dropped.entry(why).or_default() += 1;
    }

    /// Rollouts dropped, for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Counts a row written from `c`, with its call's model and token usage.
    pub fn row(&mut self, c: &Conversation, model: Option<&str>, usage: Usage) {
        self.rows += 1;
        self.messages += c.messages.len() as u64;
        self.turns += c.turns() as u64;
        self.tool_calls += c.tool_calls() as u64;
        let t = self
            .tokens_by_model
            .entry(model.unwrap_or("(unknown)").to_string())
            .or_default();
        t.rows += 1;
        t.prompt += usage.prompt;
        t.completion += usage.completion;
    }

    /// `3 no reward (--min-reward), 1 duplicate (--dedupe)`.
    pub fn dropped_summary(&self) -> String {
        let mut out = String::new();
        for (why, n) in &self.dropped {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(out, "{n} {}", why.describe());
        }
        out
    }
}

impl fmt::Display for Stats {
    /// The `--stats` table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = self.bytes_read as f64 / 1e6;
        writeln!(f, "rollouts read      {}", self.rollouts)?;
        writeln!(
            f,
            "bytes read         {mb:.1} MB in {:.2} s ({:.0} MB/s)",
            self.seconds,
            if self.seconds > 0.0 {
                mb / self.seconds
            } else {
                0.0
            }
        )?;
        writeln!(f, "rows               {}", self.rows)?;
        if self.train_rows + self.val_rows > 0 {
            writeln!(f, "  train            {}", self.train_rows)?;
            writeln!(f, "  validation       {}", self.val_rows)?;
        }
        writeln!(f, "messages           {}", self.messages)?;
        writeln!(f, "turns (assistant)  {}", self.turns)?;
        writeln!(f, "tool calls         {}", self.tool_calls)?;
        writeln!(f, "tokens by model    (rows, prompt, completion)")?;
        for (model, t) in &self.tokens_by_model {
            writeln!(f, "  {model}  {} {} {}", t.rows, t.prompt, t.completion)?;
        }
        writeln!(f, "dropped            {}", self.dropped_total())?;
        for (why, n) in &self.dropped {
            writeln!(f, "  {:<32} {n}", why.describe())?;
        }
        match self.redaction {
            None => writeln!(f, "redacted           off (--no-redact)")?,
            Some(level) => {
                let total: u64 = self.redacted.values().sum();
                writeln!(f, "redacted           {total} (--redact {level})")?;
                for (kind, n) in &self.redacted {
                    writeln!(f, "  {kind:<32} {n}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Message, Role};

    #[test]
    fn counts_rows_tokens_and_drops() {
        let mut s = Stats::default();
        let c = Conversation {
            messages: vec![
                Message::new(Role::User, Some("q".into())),
                Message::new(Role::Assistant, Some("a".into())),
            ],
            tools: vec![],
        };
        s.row(
            &c,
            Some("m"),
            Usage {
                prompt: 10,
                completion: 2,
            },
        );
        s.row(
            &c,
            Some("m"),
            Usage {
                prompt: 5,
                completion: 1,
            },
        );
        s.row(&c, None, Usage::default());
        s.drop(Dropped::LowReward);
        s.drop(Dropped::LowReward);
        s.drop(Dropped::Duplicate);
        assert_eq!((s.rows, s.messages, s.turns), (3, 6, 3));
        assert_eq!(
            s.tokens_by_model["m"],
            Tokens {
                rows: 2,
                prompt: 15,
                completion: 3
            }
        );
        assert_eq!(s.tokens_by_model["(unknown)"].rows, 1);
        assert_eq!(s.dropped_total(), 3);
        assert_eq!(
            s.dropped_summary(),
            "2 reward below --min-reward, 1 duplicate (--dedupe)"
        );
        let table = s.to_string();
        assert!(table.contains("rows               3"), "{table}");
        assert!(table.contains("  m  2 15 3"), "{table}");
    }
}
