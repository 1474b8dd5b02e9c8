//! `oclagl ls`: a table of rollouts from the view's summaries
//! ([`crate::agl::summary`]), filtered and sorted; `--json` for programs.
//! Reads one file, so 100,000 rollouts list in well under a second, also
//! while `oclagl serve` runs (the file is replaced atomically).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{duration, number, InspectError, Paint};
use crate::agl::summary::{self, Summary};
use crate::agl::trace_file::datetime;
use crate::args::parse_duration;
use crate::export::filter::parse_time;
use crate::export::parse_reward;
use crate::semconv::ROLLOUT_STATUSES;

/// `oclagl ls` options, in the sections of its `--help`.
#[derive(Debug, Clone, clap::Args)]
pub struct LsArgs {
    /// The sidecar's data folder (where the view keeps rollout summaries).
    #[arg(long, env = "OCLAGL_DATA_DIR", default_value = "./oclagl-data")]
    pub data_dir: PathBuf,
    /// Which rollouts are listed.
    #[command(flatten)]
    pub filter: LsFilter,
    /// In which order, how many, and as a table or JSON.
    #[command(flatten)]
    pub output: LsOutput,
}

/// Which rollouts `oclagl ls` lists (empty lists and `None` let all pass).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Filters")]
pub struct LsFilter {
    /// Only rollouts with these statuses (succeeded, failed, running).
    #[arg(
        long,
        env = "OCLAGL_LS_STATUS",
        value_delimiter = ',',
        value_parser = clap::builder::PossibleValuesParser::new(ROLLOUT_STATUSES)
    )]
    pub status: Vec<String>,
    /// Only rollouts that started since: a time back from now (30m, 1h, 2d)
    /// or a point in time (2026-02-12, RFC 3339, Unix seconds).
    #[arg(long, env = "OCLAGL_LS_SINCE", value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<f64>,
    /// Only rollouts of these sessions (session key; repeatable).
    #[arg(long, env = "OCLAGL_LS_SESSION", value_delimiter = ',')]
    pub session: Vec<String>,
    /// Only rollouts whose primary reward is at least this.
    #[arg(long, env = "OCLAGL_LS_MIN_REWARD", value_name = "REWARD", value_parser = parse_reward)]
    pub min_reward: Option<f64>,
}

/// How `oclagl ls` shows the rollouts it lists.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Output")]
pub struct LsOutput {
    /// Sort by this column.
    #[arg(long, env = "OCLAGL_LS_SORT", value_enum, default_value_t = SortKey::Start)]
    pub sort: SortKey,
    /// Reverse the order.
    #[arg(long, short = 'r', env = "OCLAGL_LS_REVERSE")]
    pub reverse: bool,
    /// Show at most this many rollouts (after sorting).
    #[arg(long, short = 'n', env = "OCLAGL_LS_LIMIT")]
    pub limit: Option<usize>,
    /// A JSON array of the rollouts' summaries instead of the table.
    #[arg(long, env = "OCLAGL_LS_JSON")]
    pub json: bool,
    /// One line per task (the attempts of one prompt, `collect --samples`):
    /// attempts, succeeded, best, mean and worst primary reward; a rollout
    /// that names no task is a task of its own. --limit counts tasks.
    #[arg(long, env = "OCLAGL_LS_BY_TASK")]
    pub by_task: bool,
}

/// The attempts of one task, as `ls --by-task` shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskGroup {
    /// The task id (or the rollout id of a rollout that names no task).
    pub task: String,
    /// Its rollouts, in listing order.
    pub rollouts: Vec<String>,
    /// How many of them succeeded.
    pub succeeded: usize,
    /// The highest primary reward among them.
    pub best: Option<f64>,
    /// The mean primary reward of those that have one.
    pub mean: Option<f64>,
    /// The lowest primary reward.
    pub worst: Option<f64>,
    /// The prompt, cut to a preview.
    pub prompt: Option<String>,
}

/// Groups rollouts by task, in the order each task first appears.
pub fn by_task(rows: &[Summary]) -> Vec<TaskGroup> {
    let mut groups: Vec<TaskGroup> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut rewards: Vec<Vec<f64>> = Vec::new();
    for s in rows {
        let key = s.task.as_deref().unwrap_or(&s.rollout_id);
        let n = *index.entry(key).or_insert_with(|| {
            groups.push(TaskGroup {
                task: key.to_string(),
                rollouts: Vec::new(),
                succeeded: 0,
                best: None,
                mean: None,
                worst: None,
                prompt: s.prompt.clone(),
            });
            rewards.push(Vec::new());
            groups.len() - 1
        });
        let g = &mut groups[n];
        g.rollouts.push(s.rollout_id.clone());
        g.succeeded += usize::from(s.status == "succeeded");
        rewards[n].extend(s.reward());
    }
    for (g, r) in groups.iter_mut().zip(&rewards) {
        g.best = r.iter().copied().reduce(f64::max);
        g.worst = r.iter().copied().reduce(f64::min);
        g.mean = (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64);
    }
    groups
}

/// A column `oclagl ls --sort` orders by; ties go by rollout id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// When the rollout started (oldest first).
    Start,
    /// How long it ran.
    Duration,
    /// Its primary reward (rollouts without one first).
    Reward,
    /// How many spans it has.
    Spans,
    /// Its status, alphabetically.
    Status,
    /// The rollout id.
    Id,
}

/// `--since`: a duration (`1h`: that long ago) or a time.
pub fn parse_since(s: &str) -> Result<f64, String> {
    let t = s.trim();
    if !t.contains('-') && t.ends_with(|c: char| c.is_ascii_alphabetic()) {
        let back = parse_duration(t)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        return Ok(now.saturating_sub(back).as_secs_f64());
    }
    parse_time(t)
}

impl LsFilter {
    fn keeps(&self, s: &Summary) -> bool {
        (self.status.is_empty() || self.status.contains(&s.status))
            && self.since.is_none_or(|t| s.start.is_some_and(|st| st >= t))
            && (self.session.is_empty()
                || s.session.as_ref().is_some_and(|x| self.session.contains(x)))
            && self
                .min_reward
                .is_none_or(|m| s.reward().is_some_and(|r| r >= m))
    }
}

impl LsOutput {
    fn order(&self, a: &Summary, b: &Summary) -> Ordering {
        let num = |x: Option<f64>, y: Option<f64>| {
            x.unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&y.unwrap_or(f64::NEG_INFINITY))
        };
        let primary = match self.sort {
            SortKey::Start => num(a.start, b.start),
            SortKey::Duration => num(a.duration(), b.duration()),
            SortKey::Reward => num(a.reward(), b.reward()),
            SortKey::Spans => a.spans.cmp(&b.spans),
            SortKey::Status => a.status.cmp(&b.status),
            SortKey::Id => Ordering::Equal,
        };
        primary.then_with(|| a.rollout_id.cmp(&b.rollout_id))
    }
}

/// The rollouts `args` selects, in order.
pub fn select(args: &LsArgs) -> Result<Vec<Summary>, InspectError> {
    let path = args.data_dir.join(summary::FILE);
    let all = summary::load(&args.data_dir)
        .map_err(|e| InspectError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| {
            InspectError::NotFound(format!(
                "no rollouts in {}: not an oclagl data folder, or no rollout was recorded yet (pass --data-dir; oclagl serve, collect, run and bridge write {})",
                args.data_dir.display(),
                summary::FILE
            ))
        })?;
    let mut kept: Vec<Summary> = all.into_iter().filter(|s| args.filter.keeps(s)).collect();
    kept.sort_unstable_by(|a, b| args.output.order(a, b));
    if args.output.reverse {
        kept.reverse();
    }
    if let Some(n) = args.output.limit.filter(|_| !args.output.by_task) {
        kept.truncate(n);
    }
    Ok(kept)
}

/// Prints the listing on stdout; returns how many rollouts it shows.
pub fn run(args: &LsArgs) -> Result<usize, InspectError> {
    let rows = select(args)?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    if args.output.by_task {
        let mut groups = by_task(&rows);
        if let Some(n) = args.output.limit {
            groups.truncate(n);
        }
        if args.output.json {
            serde_json::to_writer(&mut out, &groups).map_err(io::Error::from)?;
            writeln!(out)?;
        } else {
            write_task_table(&mut out, &groups, Paint::for_stdout())?;
        }
        out.flush()?;
        return Ok(groups.len());
    }
    if args.output.json {
        serde_json::to_writer(&mut out, &rows).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &rows, Paint::for_stdout())?;
    }
    out.flush()?;
    Ok(rows.len())
}

/// The table: id, status, start (UTC), duration, spans, model calls, tool
/// calls, primary reward, prompt preview.
pub fn write_table(out: &mut impl Write, rows: &[Summary], paint: Paint) -> io::Result<()> {
    let id_width = rows
        .iter()
        .map(|s| s.rollout_id.chars().count())
        .max()
        .unwrap_or(2)
        .max(2);
    let header = format!(
        "{:<id_width$}  {:<9}  {:<19}  {:>9}  {:>5}  {:>4}  {:>5}  {:>6}  PROMPT",
        "ID", "STATUS", "START (UTC)", "DURATION", "SPANS", "LLM", "TOOLS", "REWARD"
    );
    writeln!(out, "{}", paint.bold(&header))?;
    for s in rows {
        writeln!(
            out,
            "{:<id_width$}  {}  {:<19}  {:>9}  {:>5}  {:>4}  {:>5}  {:>6}  {}",
            s.rollout_id,
            paint.status(&s.status, 9),
            s.start.map_or_else(|| "-".into(), datetime),
            s.duration().map_or_else(|| "-".into(), duration),
            s.spans,
            s.model_calls,
            s.tool_calls,
            s.reward().map_or_else(|| "-".into(), number),
            s.prompt.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// The `--by-task` table: task, attempts, succeeded, best, mean and worst
/// reward, prompt preview.
pub fn write_task_table(
    out: &mut impl Write,
    groups: &[TaskGroup],
    paint: Paint,
) -> io::Result<()> {
    let width = groups
        .iter()
        .map(|g| g.task.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let header = format!(
        "{:<width$}  {:>8}  {:>9}  {:>6}  {:>6}  {:>6}  PROMPT",
        "TASK", "ATTEMPTS", "SUCCEEDED", "BEST", "MEAN", "WORST"
    );
    writeln!(out, "{}", paint.bold(&header))?;
    let shown = |r: Option<f64>| r.map_or_else(|| "-".into(), number);
    for g in groups {
        writeln!(
            out,
            "{:<width$}  {:>8}  {:>9}  {:>6}  {:>6}  {:>6}  {}",
            g.task,
            g.rollouts.len(),
            g.succeeded,
            shown(g.best),
            shown(g.mean),
            shown(g.worst),
            g.prompt.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ls: LsArgs,
    }

    fn summary(id: &str, status: &str, start: f64, reward: Option<f64>, session: &str) -> Summary {
        Summary {
            rollout_id: id.into(),
            attempt_id: "at-1".into(),
            status: status.into(),
            start: Some(start),
            end: Some(start + 2.0),
            spans: 4,
            model_calls: 1,
            tool_calls: 2,
            rewards: reward
                .map(|value| crate::reward::Reward {
                    name: "primary".into(),
                    value,
                })
                .into_iter()
                .collect(),
            session: Some(session.into()),
            task: None,
            sample: None,
            prompt: Some("What is 2+2?".into()),
            file: format!("rollout_{id}_x.json"),
        }
    }

    #[test]
    fn filters_sorting_and_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let all = [
            summary("ro-a", "failed", 100.0, None, "s1"),
            summary("ro-b", "succeeded", 300.0, Some(1.0), "s2"),
            summary("ro-c", "succeeded", 200.0, Some(0.25), "s1"),
        ];
        let mut log = summary::Log::open(dir.path(), false, |_, _| {}).unwrap();
        for s in &all {
            log.push(&summary::summary_line(s, &Default::default()));
        }
        log.commit().unwrap();
        let d = dir.path().to_str().unwrap();
        let ids = |extra: &[&str]| -> Vec<String> {
            let mut argv = vec!["ls", "--data-dir", d];
            argv.extend(extra);
            select(&Cli::parse_from(argv).ls)
                .unwrap()
                .into_iter()
                .map(|s| s.rollout_id)
                .collect()
        };
        assert_eq!(ids(&[]), ["ro-a", "ro-c", "ro-b"]);
        assert_eq!(ids(&["--status", "succeeded"]), ["ro-c", "ro-b"]);
        assert_eq!(ids(&["--min-reward", "0.5"]), ["ro-b"]);
        assert_eq!(ids(&["--session", "s1", "-r"]), ["ro-c", "ro-a"]);
        assert_eq!(ids(&["--since", "150"]), ["ro-c", "ro-b"]);
        assert_eq!(
            ids(&["--sort", "reward", "-r", "-n", "2"]),
            ["ro-b", "ro-c"]
        );
        assert!(ids(&["--since", "1h"]).is_empty());

        let mut out = Vec::new();
        write_table(&mut out, &all[..1], Paint { on: false }).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID    STATUS"), "{text}");
        assert_eq!(
            lines[1],
            "ro-a  failed     1970-01-01 00:01:40     2.000s      4     1      2       -  What is 2+2?"
        );
        let missing = Cli::parse_from(["ls", "--data-dir", "/nonexistent"]).ls;
        assert!(matches!(select(&missing), Err(InspectError::NotFound(_))));
    }

    #[test]
    fn tasks_group_their_attempts() {
        let mut rows = vec![
            summary("ro-a", "succeeded", 1.0, Some(1.0), "s"),
            summary("ro-b", "failed", 2.0, None, "s"),
            summary("ro-c", "succeeded", 3.0, Some(0.0), "s"),
            summary("ro-d", "succeeded", 4.0, Some(0.5), "s"),
        ];
        for (s, task) in rows
            .iter_mut()
            .zip([Some("t1"), Some("t1"), Some("t1"), None])
        {
            s.task = task.map(str::to_string);
        }
        let groups = by_task(&rows);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].rollouts, ["ro-a", "ro-b", "ro-c"]);
        assert_eq!(groups[0].succeeded, 2);
        assert_eq!(
            (groups[0].best, groups[0].mean, groups[0].worst),
            (Some(1.0), Some(0.5), Some(0.0))
        );
        assert_eq!(groups[1].task, "ro-d");
        let mut out = Vec::new();
        write_task_table(&mut out, &groups, Paint { on: false }).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.lines().nth(1),
            Some("t1           3          2       1     0.5       0  What is 2+2?")
        );
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let hour_ago = parse_since("1h").unwrap();
        assert!((now - 3600.0 - hour_ago).abs() < 5.0);
        assert_eq!(parse_since("2026-02-12").unwrap(), 1_770_854_400.0);
        assert_eq!(parse_since("1000").unwrap(), 1000.0);
        assert!(parse_since("soon").is_err());
    }
}
