//! `oclagl export-sft`: SFT datasets (JSONL) from stored spans.
//!
//! ```text
//! source (trace files | store) ─> read: last conversation span ─> filter ─> write (format) ─> split ─> JSONL
//! ```
//!
//! Rollouts are read one at a time ([`read`]), in trace-file name order, and
//! their rows streamed into temporary files that replace the outputs only
//! when the export completes ([`crate::util::fs::ResultFile`]), so
//! memory does not grow with the input (beyond 16 bytes a row for
//! `--dedupe`) and an interrupted export leaves the previous dataset intact.
//! A file that cannot be read, or whose conversation is malformed, is
//! reported and skipped.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     export: oclagl::export::ExportArgs,
//! }
//! let cli = Cli::parse_from(["x", "--format", "openai", "--split", "0.9", "--out", "data"]);
//! let report = oclagl::export::export(&cli.export, &AtomicBool::new(false), &mut |w| eprintln!("{w}"))?;
//! println!("{} rows", report.stats.rows);
//! # Ok::<(), oclagl::export::ExportError>(())
//! ```

pub mod filter;
pub mod group;
pub mod manifest;
pub mod read;
pub mod redact;
pub mod split;
pub mod stats;
pub mod system;
pub mod write;

use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::agl::trace_file::parse_file_name;
use crate::conversation::Conversation;
use crate::util::count;
use crate::util::fs::{ResultFile, STDOUT};
use crate::util::ids::random_hex;
use filter::{Dedupe, Filter};
use read::agl_v1::{self, AglV1, AglV1Error};
use read::store::{is_data_dir, Store, StoreReadError};
use read::trace_file::{self, Doc};
use redact::Redactor;
use split::{parse_fraction, Side, Splitter};
use stats::{Dropped, Stats};
use write::{write_row, Format, TrainOn};

/// Where AGL v1's own tools keep its server's key; `--agl-key` overrides.
pub const AGL_KEY_VAR: &str = "AGL_KEY";

/// The seed's output file name.
pub const DEFAULT_OUT: &str = "sft_dataset.jsonl";

/// `oclagl export-sft` options, in the sections of its `--help`.
#[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
pub struct ExportArgs {
    /// Where spans are read.
    #[command(flatten)]
    pub input: SourceArgs,
    /// What is written, and how.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Which rollouts become rows.
    #[command(flatten)]
    pub filter: Filter,
    /// The train/validation split.
    #[command(flatten)]
    pub split: SplitArgs,
    /// How the attempts of one task become rows.
    #[command(flatten)]
    pub attempts: AttemptArgs,
    /// Run the export a manifest records again, from the same sources and
    /// settings, and say what differs (exit 0: nothing; 1: something).
    #[arg(long, env = "OCLAGL_EXPORT_VERIFY", value_name = "MANIFEST")]
    #[serde(skip)]
    pub verify: Option<PathBuf>,
}

/// How `export-sft` makes rows of the attempts of one task (rollouts that
/// share an `oclagl.task_id`, as `collect --samples` records them).
#[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
#[command(next_help_heading = "Attempts of one task")]
pub struct AttemptArgs {
    /// Keep only each task's highest-reward attempt (first read on a tie);
    /// attempts without a reward are dropped.
    #[arg(long, env = "OCLAGL_EXPORT_BEST_OF")]
    pub best_of: bool,
    /// With --format dpo: the least reward margin between the chosen and the
    /// rejected attempt [default: any margin above 0; ties never pair].
    #[arg(long, env = "OCLAGL_EXPORT_MIN_MARGIN", value_name = "REWARD", value_parser = parse_reward)]
    pub min_margin: Option<f64>,
    /// With --format dpo: the most pairs of a task (best against worst, then
    /// second best against second worst, …) [default: 1].
    #[arg(long, env = "OCLAGL_EXPORT_PAIRS_PER_TASK", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pairs_per_task: Option<u32>,
}

impl AttemptArgs {
    /// The grouping these flags ask for with `format`, if any.
    fn mode(&self, format: Format) -> Result<Option<group::Mode>, ExportError> {
        let dpo = format == Format::Dpo;
        if self.best_of && dpo {
            return Err(ExportError::Usage(
                "--best-of keeps one attempt a task, --format dpo pairs two: use one of them"
                    .into(),
            ));
        }
        if !dpo && (self.min_margin.is_some() || self.pairs_per_task.is_some()) {
            return Err(ExportError::Usage(
                "--min-margin and --pairs-per-task shape preference pairs: use them with --format dpo".into(),
            ));
        }
        if self.min_margin.is_some_and(|m| m < 0.0) {
            return Err(ExportError::Usage(
                "--min-margin is a difference of rewards: give 0 or more".into(),
            ));
        }
        Ok(if dpo {
            Some(group::Mode::Pairs {
                pairs: self.pairs_per_task.unwrap_or(1) as usize,
                min_margin: self.min_margin.unwrap_or(0.0),
            })
        } else {
            self.best_of.then_some(group::Mode::BestOf)
        })
    }
}

/// Where `export-sft` reads spans.
#[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
#[command(next_help_heading = "Sources")]
pub struct SourceArgs {
    /// Where to read spans: a folder of trace files (`rollout_*.json`), one
    /// trace file, an `oclagl serve` data folder (its store is read
    /// directly, also while the sidecar runs), or an AGL v1 server's URL
    /// (its terminal rollouts; `?after=N` from that cursor on). Repeat for
    /// several.
    #[arg(
        long,
        env = "OCLAGL_EXPORT_SOURCE",
        value_name = "PATH|URL",
        default_value = "traces"
    )]
    pub source: Vec<PathBuf>,
    /// The key of an AGL v1 server given as --source [default: $AGL_KEY].
    #[arg(
        long,
        env = "OCLAGL_EXPORT_AGL_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    #[serde(skip)]
    pub agl_key: Option<String>,
}

/// What `export-sft` writes.
#[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// The dataset file [default: sft_dataset.jsonl]; with --split, the
    /// folder for train.jsonl and val.jsonl [default: .].
    #[arg(long, short, env = "OCLAGL_EXPORT_OUT", value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Dataset format.
    #[arg(long, env = "OCLAGL_EXPORT_FORMAT", value_enum, default_value_t = Format::Messages)]
    pub format: Format,
    /// Assistant messages to train on (`last` writes OpenAI `weight`s;
    /// --format openai only).
    #[arg(long, env = "OCLAGL_EXPORT_TRAIN_ON", value_enum, default_value_t = TrainOn::All)]
    pub train_on: TrainOn,
    /// The system message of a conversation that has none: `default` (the
    /// seed's: the file OPENCLAW_SYSTEM_PROMPT_PATH names, else its built-in
    /// text), a file's text, or `none` [default: `default` with --format
    /// messages, `none` otherwise].
    #[arg(
        long,
        env = "OCLAGL_EXPORT_SYSTEM_PROMPT",
        value_name = "default|none|FILE"
    )]
    pub system_prompt: Option<String>,
    /// Write identical rows once.
    #[arg(long, env = "OCLAGL_EXPORT_DEDUPE")]
    pub dedupe: bool,
    /// Replace credentials in messages, tool-call arguments and tool results
    /// with typed placeholders (`<REDACTED:aws_access_key>`); `pii` also
    /// e-mail addresses and phone numbers.
    #[arg(
        long,
        env = "OCLAGL_EXPORT_REDACT",
        value_enum,
        default_value_t = redact::Level::Secrets,
        conflicts_with = "no_redact"
    )]
    pub redact: redact::Level,
    /// Keep rows as they are, credentials included.
    #[arg(long, env = "OCLAGL_EXPORT_NO_REDACT")]
    pub no_redact: bool,
    /// Print statistics (rows, turns, tool calls, tokens by model, rows
    /// dropped and why, values redacted by kind) on stdout.
    #[arg(long, env = "OCLAGL_EXPORT_STATS")]
    pub stats: bool,
}

/// How `export-sft` splits rows into train and validation files.
#[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
#[command(next_help_heading = "Split")]
pub struct SplitArgs {
    /// Split by session into train.jsonl (this fraction of sessions) and
    /// val.jsonl; a session is never on both sides.
    #[arg(long = "split", env = "OCLAGL_EXPORT_SPLIT", value_name = "FRACTION", value_parser = parse_fraction)]
    pub fraction: Option<f64>,
    /// Seed of the split.
    #[arg(long, env = "OCLAGL_EXPORT_SEED", default_value_t = 0)]
    pub seed: u64,
}

/// A reward given on the command line: a finite number.
pub fn parse_reward(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite())
        .ok_or_else(|| format!("{s:?} is not a reward (a number such as 0.5)"))
}

/// Why an export failed; nothing was written then.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A `--source` cannot be read.
    #[error("cannot read {path}: {reason} (pass --source <traces folder | trace file | oclagl data folder | AGL v1 URL>)")]
    Source {
        /// The source.
        path: String,
        /// The error.
        reason: String,
    },
    /// A store given as `--source` cannot be read.
    #[error(transparent)]
    Store(#[from] StoreReadError),
    /// An AGL v1 server given as `--source` cannot be read.
    #[error(transparent)]
    AglV1(#[from] AglV1Error),
    /// An output file cannot be written.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        error: io::Error,
    },
    /// The flags contradict each other.
    #[error("{0}")]
    Usage(String),
    /// The system message asked for cannot be read.
    #[error(transparent)]
    SystemPrompt(#[from] system::SystemPromptError),
    /// No rollout became a row.
    #[error("nothing to export: {why}")]
    NothingToExport {
        /// Where the export looked and why nothing passed.
        why: String,
        /// What was read and dropped.
        stats: Box<Stats>,
    },
    /// Ctrl-C or SIGTERM stopped the export.
    #[error("interrupted; no dataset written")]
    Interrupted,
    /// The export's thread panicked.
    #[error("export failed: {0}")]
    Crashed(String),
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Report {
    /// The files written (train and, with --split, validation).
    pub outputs: Vec<PathBuf>,
    /// What was read, written and dropped.
    pub stats: Stats,
    /// The manifest written beside the dataset, if it is a regular file.
    pub manifest: Option<PathBuf>,
}

impl Report {
    /// The one line printed when an export completes.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let shown = |p: &PathBuf| {
            if p.as_os_str() == STDOUT {
                "standard output".to_string()
            } else {
                p.display().to_string()
            }
        };
        let written = match self.outputs.as_slice() {
            [train, val] => format!(
                "wrote {} to {} and {} to {}",
                count(s.train_rows, "row", "rows"),
                shown(train),
                s.val_rows,
                shown(val)
            ),
            _ => format!(
                "wrote {} to {}",
                count(s.rows, "row", "rows"),
                self.outputs.first().map_or(String::new(), shown)
            ),
        };
        let mut line = format!(
            "{written} from {}",
            count(s.rollouts, "rollout", "rollouts")
        );
        if s.dropped_total() > 0 {
            line.push_str(&format!(
                " ({} dropped: {})",
                s.dropped_total(),
                s.dropped_summary()
            ));
        }
        if let Some(m) = &self.manifest {
            line.push_str(&format!("; manifest {}", m.display()));
        }
        line
    }
}

enum Source {
    Folder(PathBuf),
    File(PathBuf),
    Store(PathBuf),
    AglV1(AglV1),
}

fn resolve(path: &Path, agl_key: Option<&str>) -> Result<Source, ExportError> {
    if let Some(url) = path.to_str().filter(|s| agl_v1::is_url(s)) {
        let key = agl_key
            .map(str::to_string)
            .or_else(|| std::env::var(AGL_KEY_VAR).ok());
        return Ok(Source::AglV1(AglV1::open(url, key)?));
    }
    let meta = std::fs::metadata(path).map_err(|e| ExportError::Source {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(if !meta.is_dir() {
        Source::File(path.to_path_buf())
    } else if is_data_dir(path) {
        Source::Store(path.to_path_buf())
    } else {
        Source::Folder(path.to_path_buf())
    })
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Write {
        path: path.display().to_string(),
        error: source,
    }
}

/// The output files: one, or train and validation; `--out -` is
/// standard output (see [`ResultFile`]).
fn create_outputs(args: &ExportArgs) -> Result<Vec<ResultFile>, ExportError> {
    let stdout = args.output.out.as_deref() == Some(Path::new(STDOUT));
    let paths: Vec<PathBuf> = match (&args.output.out, args.split.fraction) {
        (_, Some(_)) if stdout => {
            return Err(ExportError::Usage(
                "with --split, --out names a folder for train.jsonl and val.jsonl, not standard output (-)".into(),
            ))
        }
        (out, Some(_)) => {
            let dir = out.clone().unwrap_or_else(|| PathBuf::from("."));
            if dir.extension().is_some_and(|e| e == "jsonl") {
                return Err(ExportError::Usage(format!(
                    "with --split, --out names a folder for train.jsonl and val.jsonl, not a file ({})",
                    dir.display()
                )));
            }
            vec![dir.join("train.jsonl"), dir.join("val.jsonl")]
        }
        (Some(out), None) if out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/') => {
            vec![out.join(DEFAULT_OUT)]
        }
        (out, None) => {
            let path = out.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_OUT));
            if !stdout && path.file_name().is_none() {
                return Err(ExportError::Usage(format!(
                    "--out {} names no file",
                    path.display()
                )));
            }
            vec![path]
        }
    };
    paths
        .iter()
        .map(|path| {
            // An empty folder is the working directory (and names print as given).
            if let Some(dir) = path.parent().filter(|_| !stdout) {
                std::fs::create_dir_all(dir).map_err(write_err(dir))?;
            }
            ResultFile::create(path).map_err(write_err(path))
        })
        .collect()
}

/// One export in progress.
struct Exporter<'a> {
    format: Format,
    train_on: TrainOn,
    /// The system message of conversations that have none.
    system_prompt: Option<String>,
    /// The attempts kept for `--best-of` and `--format dpo`, by task.
    groups: Option<group::Groups>,
    /// The digests of what was read and written.
    manifest: manifest::Recorder,
    filter: Filter,
    splitter: Option<Splitter>,
    dedupe: Option<Dedupe>,
    /// `None` with `--no-redact`.
    redactor: Option<Redactor>,
    outputs: Vec<ResultFile>,
    line: Vec<u8>,
    stats: Stats,
    warn: &'a mut dyn FnMut(&str),
}

impl Exporter<'_> {
    fn skip(&mut self, origin: &str, why: Dropped, reason: &str) {
        self.stats.drop(why);
        (self.warn)(&format!("skipped {origin}: {reason}"));
    }

    /// One rollout, from its trace file's bytes.
    fn rollout(
        &mut self,
        origin: &str,
        fallback_id: &str,
        bytes: &[u8],
    ) -> Result<(), ExportError> {
        self.stats.rollouts += 1;
        self.stats.bytes_read += bytes.len() as u64;
        self.manifest.read(fallback_id, bytes);
        let rollout = match Doc::parse(bytes) {
            Err(e) => {
                self.skip(
                    origin,
                    Dropped::Unreadable,
                    &format!("not a whole trace file ({e})"),
                );
                return Ok(());
            }
            Ok(doc) => match read::rollout(&doc, fallback_id) {
                Ok(r) => r,
                Err(e) => {
                    self.skip(origin, Dropped::Malformed, &e.0);
                    return Ok(());
                }
            },
        };
        if let Some(why) = self.filter.reject(&rollout) {
            self.stats.drop(why);
            return Ok(());
        }
        let Some(chosen) = &rollout.chosen else {
            self.stats.drop(Dropped::NoConversation);
            return Ok(());
        };
        let mut conversation = match chosen.read() {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("malformed {} span: {e}", chosen.convention.name());
                self.skip(origin, Dropped::Malformed, &reason);
                return Ok(());
            }
        };
        if conversation.messages.is_empty() {
            self.stats.drop(Dropped::Empty);
            return Ok(());
        }
        if let Some(text) = &self.system_prompt {
            system::prepend(&mut conversation, text);
        }
        if let Some(redactor) = &self.redactor {
            redactor.redact(&mut conversation, &mut self.stats.redacted);
        }
        let split_key = rollout
            .session
            .clone()
            .unwrap_or_else(|| rollout.id.clone());
        if let Some(groups) = &mut self.groups {
            let Some(reward) = rollout.reward else {
                self.stats.drop(Dropped::Unranked);
                return Ok(());
            };
            let task = rollout.task.unwrap_or_else(|| split_key.clone());
            let attempt = group::Attempt {
                rollout: rollout.id,
                reward,
                seq: 0,
                split_key,
                model: rollout.model,
                usage: rollout.usage,
                conversation,
            };
            groups.add(&task, attempt, &mut self.stats);
            return Ok(());
        }
        self.line.clear();
        if let Err(e) = write_row(self.format, self.train_on, &conversation, &mut self.line) {
            let reason = format!("--format {} cannot hold it: {e}", self.format.name());
            self.skip(origin, Dropped::Unrepresentable, &reason);
            return Ok(());
        }
        self.emit(
            &split_key,
            vec![rollout.id],
            &conversation,
            rollout.model.as_deref(),
            rollout.usage,
        )
    }

    /// Writes the row in `self.line` (unless `--dedupe` saw it), on the side
    /// of the split `split_key` falls on, and counts it.
    fn emit(
        &mut self,
        split_key: &str,
        rollouts: Vec<String>,
        conversation: &Conversation,
        model: Option<&str>,
        usage: read::Usage,
    ) -> Result<(), ExportError> {
        if let Some(seen) = &mut self.dedupe {
            if !seen.first(&self.line) {
                self.stats.drop(Dropped::Duplicate);
                return Ok(());
            }
        }
        self.line.push(b'\n');
        let side = match self.splitter {
            None => Side::Train,
            Some(s) => s.side(split_key),
        };
        let file = match side {
            Side::Train => 0,
            Side::Val => 1,
        };
        let out = &mut self.outputs[file];
        if let Err(e) = out.write_all(&self.line) {
            return Err(write_err(out.named())(e));
        }
        self.manifest.row(file, &self.line, rollouts);
        if self.splitter.is_some() {
            match side {
                Side::Train => self.stats.train_rows += 1,
                Side::Val => self.stats.val_rows += 1,
            }
        }
        self.stats.row(conversation, model, usage);
        Ok(())
    }

    /// The rows of the attempts `--best-of` or `--format dpo` kept.
    fn grouped(&mut self) -> Result<(), ExportError> {
        let Some(groups) = self.groups.take() else {
            return Ok(());
        };
        for row in groups.rows(&mut self.stats) {
            self.line.clear();
            let (written, rollouts, kept) = match row {
                group::Row::Best(a) => (
                    write_row(self.format, self.train_on, &a.conversation, &mut self.line),
                    vec![a.rollout.clone()],
                    a,
                ),
                group::Row::Pair { chosen, rejected } => {
                    let shared = group::shared_prompt(&chosen.conversation, &rejected.conversation)
                        .unwrap_or(0);
                    let written = write::dpo::write_pair(
                        &chosen.conversation,
                        &rejected.conversation,
                        shared,
                        &mut self.line,
                    );
                    (
                        written,
                        vec![chosen.rollout.clone(), rejected.rollout],
                        chosen,
                    )
                }
            };
            if let Err(e) = written {
                let reason = format!("--format {} cannot hold it: {e}", self.format.name());
                self.skip(
                    &format!("task attempt {}", kept.split_key),
                    Dropped::Unrepresentable,
                    &reason,
                );
                continue;
            }
            self.emit(
                &kept.split_key,
                rollouts,
                &kept.conversation,
                kept.model.as_deref(),
                kept.usage,
            )?;
        }
        Ok(())
    }

    fn folder(&mut self, dir: &Path, cancel: &AtomicBool) -> Result<(), ExportError> {
        let files = trace_file::list(dir).map_err(|e| ExportError::Source {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut buf = Vec::new();
        for path in files {
            if cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.file(&path, &mut buf)?;
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, buf: &mut Vec<u8>) -> Result<(), ExportError> {
        let origin = path.display().to_string();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let fallback = parse_file_name(&name)
            .or_else(|| name.strip_suffix(".json"))
            .unwrap_or(&name)
            .to_string();
        match trace_file::read_into(path, buf) {
            Ok(()) => self.rollout(&origin, &fallback, buf),
            Err(e) => {
                self.stats.rollouts += 1;
                self.manifest.read(&fallback, b"");
                self.skip(&origin, Dropped::Unreadable, &e.to_string());
                Ok(())
            }
        }
    }

    fn agl_v1(
        &mut self,
        server: &AglV1,
        origin: &str,
        cancel: &AtomicBool,
    ) -> Result<(), ExportError> {
        let mut result = Ok(());
        let pages = server.for_each(|r| {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            let origin = format!("{origin} (rollout {})", r.id);
            result = match r.json {
                Ok(bytes) => self.rollout(&origin, &r.id, &bytes),
                Err(e) => {
                    self.stats.rollouts += 1;
                    self.manifest.read(&r.id, b"");
                    self.skip(&origin, Dropped::Unreadable, &e);
                    Ok(())
                }
            };
            result.is_ok()
        })?;
        result?;
        self.manifest.cursor(pages.next_after);
        Ok(())
    }

    fn store(&mut self, data_dir: &Path, cancel: &AtomicBool) -> Result<(), ExportError> {
        let store = Store::open(data_dir)?;
        let origin = data_dir.join("wal").display().to_string();
        if store.undecodable > 0 {
            (self.warn)(&format!(
                "{origin}: {} not decode; skipped",
                count(store.undecodable, "record does", "records do")
            ));
        }
        if store.stats.damaged_segments > 0 {
            (self.warn)(&format!(
                "{origin}: {} in a damaged record; read up to it",
                count(
                    store.stats.damaged_segments as u64,
                    "segment ends",
                    "segments end"
                )
            ));
        }
        let mut result = Ok(());
        store.for_each(|r| {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            let origin = format!("{origin} (rollout {})", r.name);
            let fallback = parse_file_name(&r.name).unwrap_or(&r.name).to_string();
            result = match r.json {
                Ok(bytes) => self.rollout(&origin, &fallback, &bytes),
                Err(e) => {
                    self.stats.rollouts += 1;
                    self.manifest.read(&fallback, b"");
                    self.skip(&origin, Dropped::Unreadable, &e);
                    Ok(())
                }
            };
            result.is_ok()
        });
        result
    }
}

/// Runs one export. `cancel` stops it between rollouts (nothing is
/// written then); `warn` receives a line for each skipped file.
pub fn export(
    args: &ExportArgs,
    cancel: &AtomicBool,
    warn: &mut dyn FnMut(&str),
) -> Result<Report, ExportError> {
    let started = Instant::now();
    let (output, filter) = (&args.output, &args.filter);
    if output.train_on == TrainOn::Last && output.format != Format::Openai {
        return Err(ExportError::Usage(
            "--train-on last writes OpenAI weights: use it with --format openai".into(),
        ));
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until) {
        if since >= until {
            return Err(ExportError::Usage("--since must be before --until".into()));
        }
    }
    let sources = args
        .input
        .source
        .iter()
        .map(|p| resolve(p, args.input.agl_key.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let system_prompt = system::resolve(
        output.system_prompt.as_deref(),
        output.format == Format::Messages,
        std::env::var_os(system::PATH_VAR).as_deref().map(Path::new),
    )?;
    let groups = args.attempts.mode(output.format)?.map(group::Groups::new);
    let mut ex = Exporter {
        format: output.format,
        train_on: output.train_on,
        system_prompt,
        groups,
        filter: filter.clone(),
        splitter: args.split.fraction.map(|train_fraction| Splitter {
            train_fraction,
            seed: args.split.seed,
        }),
        dedupe: output.dedupe.then(Dedupe::default),
        manifest: manifest::Recorder::new(if args.split.fraction.is_some() { 2 } else { 1 }),
        redactor: (!output.no_redact).then(|| Redactor::new(output.redact)),
        outputs: create_outputs(args)?,
        line: Vec::with_capacity(64 << 10),
        stats: Stats {
            redaction: (!output.no_redact).then(|| output.redact.name()),
            ..Stats::default()
        },
        warn,
    };
    for (source, path) in sources.iter().zip(&args.input.source) {
        ex.manifest.source(path);
        match source {
            Source::Folder(dir) => ex.folder(dir, cancel)?,
            Source::File(path) => ex.file(path, &mut Vec::new())?,
            Source::Store(dir) => ex.store(dir, cancel)?,
            Source::AglV1(server) => ex.agl_v1(server, &path.display().to_string(), cancel)?,
        }
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(ExportError::Interrupted);
    }
    ex.grouped()?;
    let mut stats = ex.stats;
    stats.seconds = started.elapsed().as_secs_f64();
    if stats.rows == 0 {
        let places: Vec<String> = args
            .input
            .source
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let why = if stats.rollouts == 0 {
            format!(
                "no rollouts in {} (trace files are named rollout_*.json; run `oclagl serve`, or pass --source <traces folder | oclagl data folder>)",
                places.join(", ")
            )
        } else {
            format!(
                "none of the {} in {} became a row ({})",
                count(stats.rollouts, "rollout", "rollouts"),
                places.join(", "),
                stats.dropped_summary()
            )
        };
        return Err(ExportError::NothingToExport {
            why,
            stats: Box::new(stats),
        });
    }
    if stats.rows > 0
        && args.split.fraction.is_some()
        && (stats.train_rows == 0 || stats.val_rows == 0)
    {
        (ex.warn)(&format!(
            "the split put every row on one side ({} train, {} validation): there are few sessions; try another --seed or --split",
            stats.train_rows, stats.val_rows
        ));
    }
    let mut outputs = Vec::new();
    for file in ex.outputs {
        let named = file.named().to_path_buf();
        outputs.push(file.commit().map_err(write_err(&named))?);
    }
    let manifest = match manifest::path_for(&outputs) {
        Some(path) => {
            let m = ex.manifest.finish(args, &outputs, &stats);
            Some(manifest::write(&m, &path).map_err(write_err(&path))?)
        }
        None => None,
    };
    Ok(Report {
        outputs,
        stats,
        manifest,
    })
}

/// What `--verify` found.
#[derive(Debug)]
pub struct Verified {
    /// The manifest verified.
    pub manifest: PathBuf,
    /// Rows it records.
    pub rows: u64,
    /// What differs from it when the export runs again (nothing: the
    /// dataset is re-derived exactly).
    pub differences: Vec<String>,
}

/// Runs the export a manifest records again, from its sources and settings,
/// into a temporary folder, and compares the outcome with the manifest.
pub fn verify(
    recorded_at: &Path,
    cancel: &AtomicBool,
    warn: &mut dyn FnMut(&str),
) -> Result<Verified, ExportError> {
    let recorded = manifest::read(recorded_at).map_err(ExportError::Usage)?;
    let tmp = std::env::temp_dir().join(format!("oclagl-verify-{}", random_hex::<8>()));
    // A fresh folder of its own: create_dir fails on anything already there.
    std::fs::create_dir(&tmp).map_err(write_err(&tmp))?;
    let mut settings = recorded.settings.clone();
    settings.output.stats = false;
    settings.output.out = Some(match settings.split.fraction {
        Some(_) => tmp.clone(),
        None => tmp.join(DEFAULT_OUT),
    });
    let differences = match export(&settings, cancel, warn) {
        Ok(report) => match report.manifest.as_deref().map(manifest::read) {
            Some(Ok(again)) => Ok(manifest::differences(&recorded, &again)),
            Some(Err(e)) => Err(ExportError::Usage(e)),
            None => Err(ExportError::Usage(format!(
                "the export wrote no manifest in {}",
                tmp.display()
            ))),
        },
        Err(ExportError::NothingToExport { why, .. }) => {
            Ok(vec![format!("the export now writes nothing: {why}")])
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(Verified {
        manifest: recorded_at.to_path_buf(),
        rows: recorded.counts.rows,
        differences: differences?,
    })
}

enum Ran {
    Exported(Report),
    Verified(Verified),
}

/// Prints at most this many skipped-file lines, then a count.
const WARNINGS_SHOWN: usize = 20;

/// `oclagl export-sft`: runs the export off the async runtime, stops it on
/// `shutdown`, prints the summary (and `--stats`); returns the exit code:
/// 0, 1 when there was nothing to export, 130 when interrupted.
pub async fn run_cli(
    args: ExportArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<i32, ExportError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let show_stats = args.output.stats;
    if args.output.no_redact {
        eprintln!("oclagl export-sft: --no-redact: rows keep any credentials they hold");
    }
    // With the rows on standard output, the statistics go to stderr.
    let stats_on_stdout = args.output.out.as_deref() != Some(Path::new(STDOUT));
    let print_stats = move |stats: &Stats| {
        if stats_on_stdout {
            print!("{stats}");
        } else {
            eprint!("{stats}");
        }
    };
    let mut job = tokio::task::spawn_blocking(move || {
        let mut shown = 0usize;
        let mut warn = |line: &str| {
            shown += 1;
            if shown <= WARNINGS_SHOWN {
                eprintln!("oclagl export-sft: {line}");
            }
        };
        let result = match &args.verify {
            Some(recorded) => verify(recorded, &flag, &mut warn).map(Ran::Verified),
            None => export(&args, &flag, &mut warn).map(Ran::Exported),
        };
        if shown > WARNINGS_SHOWN {
            eprintln!(
                "oclagl export-sft: … and {} more skipped (see --stats)",
                shown - WARNINGS_SHOWN
            );
        }
        result
    });
    let joined = tokio::select! {
        r = &mut job => r,
        () = shutdown => {
            cancel.store(true, Ordering::Relaxed);
            job.await
        }
    };
    match joined.map_err(|e| ExportError::Crashed(e.to_string()))? {
        Ok(Ran::Verified(v)) if v.differences.is_empty() => {
            eprintln!(
                "oclagl export-sft: {} re-derived exactly: the same {} from the same sources",
                v.manifest.display(),
                count(v.rows, "row", "rows")
            );
            Ok(0)
        }
        Ok(Ran::Verified(v)) => {
            eprintln!(
                "oclagl export-sft: {} is not re-derived as recorded:",
                v.manifest.display()
            );
            for d in &v.differences {
                eprintln!("  {d}");
            }
            Ok(1)
        }
        Ok(Ran::Exported(report)) => {
            if show_stats {
                print_stats(&report.stats);
            }
            eprintln!("oclagl export-sft: {}", report.summary());
            Ok(0)
        }
        Err(e @ ExportError::NothingToExport { .. }) => {
            if let (true, ExportError::NothingToExport { stats, .. }) = (show_stats, &e) {
                print_stats(stats);
            }
            eprintln!("oclagl export-sft: {e}");
            Ok(1)
        }
        // `--out - | head`: the reader has what it wanted; end quietly.
        Err(ExportError::Write { path, error })
            if path == STDOUT && error.kind() == io::ErrorKind::BrokenPipe =>
        {
            Ok(0)
        }
        Err(ExportError::Interrupted) => {
            eprintln!("oclagl export-sft: interrupted; no dataset written");
            Ok(130)
        }
        Err(e) => Err(e),
    }
}
