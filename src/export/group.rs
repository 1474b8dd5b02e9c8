//! Rows from the attempts of one task (`collect --samples`, or one prompt
//! collected again): `--best-of` keeps each task's highest-reward attempt,
//! `--format dpo` pairs its best attempts against its worst.
//!
//! Attempts are ranked by their primary reward; an attempt without one is
//! not ranked (dropped). A rollout that names no task (`oclagl.task_id`) is a
//! task of its own. Ties go to the attempt read first (trace-file name
//! order). Memory: per task, only the attempts that can still be written
//! (the best one, or the `k` best and `k` worst for `k` pairs), so it grows
//! with the tasks, not with the attempts.

use std::collections::HashMap;

use super::read::Usage;
use super::stats::{Dropped, Stats};
use crate::conversation::{Conversation, Role};

/// One attempt that may become (part of) a row.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The rollout.
    pub rollout: String,
    /// Its primary reward.
    pub reward: f64,
    /// The order it was read in (ties go to the earlier).
    pub seq: u64,
    /// What the split sorts it by (its session, else its rollout id).
    pub split_key: String,
    /// Its model and tokens, for the statistics.
    pub model: Option<String>,
    /// See `model`.
    pub usage: Usage,
    /// The conversation.
    pub conversation: Conversation,
}

/// What to make of a task's attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// The best attempt, as an SFT row.
    BestOf,
    /// Up to `pairs` preference pairs, best against worst, each with a reward
    /// margin of at least `min_margin` (and more than 0).
    Pairs {
        /// Most pairs per task.
        pairs: usize,
        /// Least reward margin of a pair.
        min_margin: f64,
    },
}

/// A row to write: one attempt, or a chosen and a rejected one.
#[derive(Debug)]
pub enum Row {
    /// `--best-of`.
    Best(Attempt),
    /// `--format dpo`.
    Pair {
        /// The better attempt.
        chosen: Attempt,
        /// The worse one.
        rejected: Attempt,
    },
}

/// The attempts kept, by task, in the order tasks were first seen.
#[derive(Debug)]
pub struct Groups {
    mode: Mode,
    order: Vec<String>,
    /// Each task's kept attempts, best first.
    tasks: HashMap<String, Vec<Attempt>>,
    seq: u64,
}

fn better(a: &Attempt, b: &Attempt) -> std::cmp::Ordering {
    b.reward.total_cmp(&a.reward).then(a.seq.cmp(&b.seq))
}

impl Groups {
    /// Empty groups for `mode`.
    pub fn new(mode: Mode) -> Groups {
        Groups {
            mode,
            order: Vec::new(),
            tasks: HashMap::new(),
            seq: 0,
        }
    }

    /// How many attempts of a task are kept: the best, or the `k` best and
    /// the `k` worst.
    fn keep(&self) -> usize {
        match self.mode {
            Mode::BestOf => 1,
            Mode::Pairs { pairs, .. } => pairs.saturating_mul(2),
        }
    }

    /// Adds an attempt of `task`; counts in `stats` an attempt that can no
    /// longer be written.
    pub fn add(&mut self, task: &str, mut attempt: Attempt, stats: &mut Stats) {
        attempt.seq = self.seq;
        self.seq += 1;
        let keep = self.keep();
        if !self.tasks.contains_key(task) {
            self.order.push(task.to_string());
        }
        let kept = self.tasks.entry(task.to_string()).or_default();
        let at = kept
            .binary_search_by(|k| better(k, &attempt))
            .unwrap_or_else(|i| i);
        kept.insert(at, attempt);
        if kept.len() > keep {
            // Past the best `keep / 2` and the worst `keep / 2`: the middle
            // one goes (for best-of, everything after the best).
            let middle = match self.mode {
                Mode::BestOf => 1,
                Mode::Pairs { pairs, .. } => pairs,
            };
            kept.remove(middle);
            stats.drop(match self.mode {
                Mode::BestOf => Dropped::NotBest,
                Mode::Pairs { .. } => Dropped::Unpaired,
            });
        }
    }

    /// The rows, task by task in the order tasks were first seen; counts in
    /// `stats` the attempts that make none.
    pub fn rows(mut self, stats: &mut Stats) -> Vec<Row> {
        let mut rows = Vec::new();
        for task in std::mem::take(&mut self.order) {
            let Some(kept) = self.tasks.remove(&task) else {
                continue;
            };
            match self.mode {
                Mode::BestOf => {
                    let mut kept = kept.into_iter();
                    rows.extend(kept.next().map(Row::Best));
                    kept.for_each(|_| stats.drop(Dropped::NotBest));
                }
                Mode::Pairs { pairs, min_margin } => {
                    let used = pair_up(kept, pairs, min_margin, stats);
                    rows.extend(used);
                }
            }
        }
        rows
    }
}

/// Index of the first assistant message.
fn first_answer(c: &Conversation) -> Option<usize> {
    c.messages.iter().position(|m| m.role == Role::Assistant)
}

/// How many messages two attempts share before the model first answered
/// (the pair's prompt): `None` when they differ before that (they did not
/// see the same prompt) or not after it (nothing to prefer).
pub fn shared_prompt(chosen: &Conversation, rejected: &Conversation) -> Option<usize> {
    let a = first_answer(chosen)?;
    (first_answer(rejected) == Some(a)
        && chosen.messages[..a] == rejected.messages[..a]
        && chosen.messages[a..] != rejected.messages[a..])
        .then_some(a)
}

/// Pairs the `i`-th best with the `i`-th worst attempt while the margin
/// holds; counts the rest as unpaired.
fn pair_up(kept: Vec<Attempt>, pairs: usize, min_margin: f64, stats: &mut Stats) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut kept: std::collections::VecDeque<Attempt> = kept.into();
    while rows.len() < pairs && kept.len() >= 2 {
        let (Some(best), Some(worst)) = (kept.pop_front(), kept.pop_back()) else {
            break;
        };
        let margin = best.reward - worst.reward;
        let usable = margin > 0.0
            && margin >= min_margin
            && shared_prompt(&best.conversation, &worst.conversation).is_some();
        if usable {
            rows.push(Row::Pair {
                chosen: best,
                rejected: worst,
            });
        } else {
            stats.drop(Dropped::Unpaired);
            stats.drop(Dropped::Unpaired);
        }
    }
    for _ in kept {
        stats.drop(Dropped::Unpaired);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::Message;

    fn attempt(reward: f64, answer: &str) -> Attempt {
        Attempt {
            rollout: format!("ro-{answer}"),
            reward,
            seq: 0,
            split_key: format!("s-{answer}"),
            model: None,
            usage: Usage::default(),
            conversation: Conversation {
                messages: vec![
                    Message::new(Role::System, Some("sys".into())),
                    Message::new(Role::User, Some("q".into())),
                    Message::new(Role::Assistant, Some(answer.into())),
                ],
                tools: vec![],
            },
        }
    }

    fn answer(a: &Attempt) -> &str {
        a.conversation.messages[2].content.as_deref().unwrap_or("")
    }

    #[test]
    fn best_of_keeps_the_first_highest_reward() {
        let mut stats = Stats::default();
        let mut g = Groups::new(Mode::BestOf);
        for (task, r, a) in [
            ("t1", 0.2, "a"),
            ("t2", 0.5, "x"),
            ("t1", 0.9, "b"),
            ("t1", 0.9, "c"),
        ] {
            g.add(task, attempt(r, a), &mut stats);
        }
        let rows = g.rows(&mut stats);
        let best: Vec<&str> = rows
            .iter()
            .map(|r| match r {
                Row::Best(a) => answer(a),
                Row::Pair { .. } => "pair",
            })
            .collect();
        assert_eq!(best, ["b", "x"]);
        assert_eq!(stats.dropped[&Dropped::NotBest], 2);
    }

    #[test]
    fn pairs_go_best_against_worst_within_the_margin() {
        let mut stats = Stats::default();
        let mut g = Groups::new(Mode::Pairs {
            pairs: 2,
            min_margin: 0.3,
        });
        for (r, a) in [
            (0.5, "m"),
            (1.0, "best"),
            (0.0, "worst"),
            (0.6, "m2"),
            (0.4, "m3"),
        ] {
            g.add("t", attempt(r, a), &mut stats);
        }
        g.add("alone", attempt(1.0, "solo"), &mut stats);
        let rows = g.rows(&mut stats);
        let pairs: Vec<(&str, &str)> = rows
            .iter()
            .filter_map(|r| match r {
                Row::Pair { chosen, rejected } => Some((answer(chosen), answer(rejected))),
                Row::Best(_) => None,
            })
            .collect();
        // 1.0 vs 0.0, then 0.6 vs 0.4 is below the margin.
        assert_eq!(pairs, [("best", "worst")]);
        assert_eq!(stats.dropped[&Dropped::Unpaired], 4);

        let mut stats = Stats::default();
        let mut tie = Groups::new(Mode::Pairs {
            pairs: 1,
            min_margin: 0.0,
        });
        tie.add("t", attempt(0.5, "a"), &mut stats);
        tie.add("t", attempt(0.5, "b"), &mut stats);
        assert!(tie.rows(&mut stats).is_empty(), "ties are skipped");
    }

    #[test]
    fn a_pair_needs_the_same_prompt() {
        let (a, b) = (attempt(1.0, "x"), attempt(0.0, "y"));
        assert_eq!(shared_prompt(&a.conversation, &b.conversation), Some(2));
        let mut other = attempt(0.0, "y");
        other.conversation.messages[1].content = Some("another question".into());
        assert_eq!(shared_prompt(&a.conversation, &other.conversation), None);
        let same = attempt(0.0, "x");
        assert_eq!(shared_prompt(&a.conversation, &same.conversation), None);
    }
}
