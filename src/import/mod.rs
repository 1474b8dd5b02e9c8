//! `oclagl import`: OpenClaw's own recorded runs become rollouts.
//!
//! OpenClaw records every agent run (trajectory capture) and exports a
//! session as a redacted bundle (`openclaw sessions export-trajectory`);
//! older releases left `*.trajectory.jsonl` files beside the sessions. This
//! command reads bundles, folders of bundles and legacy files ([`bundle`]),
//! or has the `openclaw` CLI export every session first ([`sessions`]), and
//! records each run as a rollout ([`record`]): into the sidecar that the
//! usual `OTEL_*` variables name, or, with none, into the local store, as
//! `collect` does.
//!
//! Ids derive from the session and run, and a journal in the data folder
//! (`import.journal`, one rollout id a line, synced once the store has
//! acknowledged the run) lists what is in, so importing a bundle again, or
//! going on after an interruption, adds each run once.

pub mod bundle;
pub mod record;
pub mod sessions;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::Serialize;
use tokio::sync::watch;

use crate::forward::dest::Destination;
use crate::forward::{Outcome, Sender};
use crate::local::{running_sidecar, LocalSidecar, LocalStore};
use crate::serve::ServeError;
use crate::store::StoreError;

/// `oclagl import` options: what to import and where the rollouts go.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// Trajectory bundle folders (openclaw sessions export-trajectory),
    /// folders holding bundles, or legacy *.trajectory.jsonl files.
    pub paths: Vec<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long, env = "OCLAGL_IMPORT_JSON")]
    pub json: bool,
    /// Sessions exported through the openclaw CLI.
    #[command(flatten)]
    pub sessions: sessions::SessionArgs,
    /// Where rollouts are stored without an OTLP endpoint.
    #[command(flatten)]
    pub local: LocalStore,
}

/// Why the import could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Nothing to import was named.
    #[error("name trajectory bundles, folders of bundles or *.trajectory.jsonl files, or pass --sessions to export every session through the openclaw CLI")]
    Nothing,
    /// The OTLP settings are unusable.
    #[error("{0}")]
    Endpoint(String),
    /// The local store cannot be opened.
    #[error("cannot open the local store: {0}")]
    Store(#[from] ServeError),
    /// The journal, or the folder for exported sessions, cannot be read
    /// or written.
    #[error("{path}: {error}; check the --data-dir folder")]
    Folder {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The destination refused or did not take a run (what was imported
    /// before it stays; run the import again to go on).
    #[error("{destination} did not take rollout {rollout_id} from {source_path}: {reason}; what was imported before stays, run the same import again to go on")]
    Delivery {
        /// Where it went.
        destination: String,
        /// The rollout.
        rollout_id: String,
        /// Its bundle or file.
        source_path: String,
        /// Why.
        reason: String,
    },
}

/// What an import did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    /// Bundles and legacy files read whole.
    pub sources: u64,
    /// Runs recorded as rollouts by this import.
    pub imported: u64,
    /// Runs already imported before (in the journal).
    pub already: u64,
    /// Sources skipped, one line each: what was wrong and the fix.
    pub skipped: Vec<String>,
    /// Bytes of the sources read.
    pub bytes: u64,
    /// How long it took.
    pub seconds: f64,
    /// Where the rollouts went.
    pub destination: String,
    /// Stopped by a signal before the end.
    pub interrupted: bool,
}

impl Summary {
    /// The one-line report.
    pub fn line(&self) -> String {
        let secs = self.seconds.max(1e-9);
        let mut s = format!(
            "imported {} from {} to {}",
            crate::util::count(self.imported, "run", "runs"),
            crate::util::count(self.sources, "source", "sources"),
            self.destination
        );
        if self.already > 0 {
            s.push_str(&format!("; {} already imported", self.already));
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!("; {} skipped", self.skipped.len()));
        }
        s.push_str(&format!(
            " ({:.0} runs/s, {:.1} MB/s)",
            (self.imported + self.already) as f64 / secs,
            self.bytes as f64 / 1e6 / secs
        ));
        if self.interrupted {
            s.push_str("; interrupted: run it again to go on");
        }
        s
    }
}

/// Where the rollouts go.
enum Sink {
    /// The store, in this process.
    Local(LocalSidecar),
    /// A running sidecar or collector, over OTLP.
    Remote(Sender),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The OTLP destination the standard variables name, if they name one.
fn otlp_destination() -> Result<Option<Destination>, String> {
    let traces = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base = env("OTEL_EXPORTER_OTLP_ENDPOINT");
    let (name, endpoint) = match (traces, base) {
        (Some(t), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", t),
        (None, Some(b)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", b),
        (None, None) => return Ok(None),
    };
    let protocol =
        env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
    let endpoint = endpoint.trim().trim_end_matches('/').to_string();
    let url = match protocol.as_deref().map(str::trim) {
        None | Some("http/protobuf") if name.contains("TRACES") => endpoint,
        None | Some("http/protobuf") => format!("{endpoint}/v1/traces"),
        Some("grpc") => match endpoint.split_once("://") {
            Some((_, rest)) => format!("grpc://{rest}"),
            None => format!("grpc://{endpoint}"),
        },
        Some(other) => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL {other:?}: oclagl import sends grpc or http/protobuf"
            ))
        }
    };
    let mut spec = url;
    if let Some(h) =
        env("OTEL_EXPORTER_OTLP_TRACES_HEADERS").or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
    {
        spec.push_str(";headers=");
        spec.push_str(&h);
    }
    spec.push_str(";name=import");
    Destination::from_str(&spec)
        .map(Some)
        .map_err(|e| format!("{name}: {e}"))
}

fn sender(dest: &Destination) -> Result<Sender, ImportError> {
    Sender::new(dest).map_err(|e| ImportError::Endpoint(e.to_string()))
}

impl Sink {
    /// To `remote` when the OTLP variables name one, else to the local
    /// store (or the sidecar that holds it).
    async fn open(
        remote: Option<Destination>,
        local: &LocalStore,
    ) -> Result<(Sink, String), ImportError> {
        if let Some(dest) = remote {
            let name = dest.url.clone();
            return Ok((Sink::Remote(sender(&dest)?), name));
        }
        match LocalSidecar::start(local).await {
            Ok(sidecar) => Ok((
                Sink::Local(sidecar),
                format!(
                    "{} (store {})",
                    local.traces_dir.display(),
                    local.data_dir.display()
                ),
            )),
            Err(ServeError::Store(StoreError::Locked { .. })) => {
                let running = running_sidecar(local).map_err(ImportError::Endpoint)?;
                let dest = Destination::from_str(&running).map_err(ImportError::Endpoint)?;
                Ok((Sink::Remote(sender(&dest)?), running))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Delivers one export; `Err` says why it was not taken.
    async fn send(&self, request: ExportTraceServiceRequest) -> Result<(), String> {
        match self {
            Sink::Local(sidecar) => match sidecar.ingest.export(request, None).await {
                Ok(a) if a.rejected_spans == 0 => Ok(()),
                Ok(a) => Err(a.error_message),
                Err(e) => Err(e.to_string()),
            },
            Sink::Remote(sender) => {
                let body = Bytes::from(request.encode_to_vec());
                let mut attempt = 0;
                loop {
                    match sender.send(body.clone()).await {
                        Outcome::Delivered { rejected: 0 } => return Ok(()),
                        Outcome::Delivered { rejected } => {
                            return Err(format!("it rejected {rejected} span(s)"))
                        }
                        Outcome::Refused { reason } => return Err(reason),
                        Outcome::Retry { reason, .. } if attempt >= 4 => return Err(reason),
                        Outcome::Retry { after, .. } => {
                            tokio::time::sleep(crate::forward::backoff(attempt, after)).await;
                            attempt += 1;
                        }
                    }
                }
            }
        }
    }

    async fn close(self) -> Result<(), ImportError> {
        match self {
            Sink::Local(sidecar) => Ok(sidecar.stop().await?),
            Sink::Remote(_) => Ok(()),
        }
    }
}

/// The journal of imported rollouts: one id a line.
struct Journal {
    path: PathBuf,
    done: HashSet<String>,
    file: std::fs::File,
}

impl Journal {
    fn open(data_dir: &Path) -> Result<Journal, ImportError> {
        let path = data_dir.join("import.journal");
        let err = |error| ImportError::Folder {
            path: path.clone(),
            error,
        };
        std::fs::create_dir_all(data_dir).map_err(err)?;
        let (done, torn) = match std::fs::read_to_string(&path) {
            // A line cut short by a crash names no rollout: it is ignored.
            Ok(text) => (
                text.lines()
                    .filter(|l| l.len() == 15 && l.starts_with("ro-"))
                    .map(str::to_string)
                    .collect(),
                !text.is_empty() && !text.ends_with('\n'),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (HashSet::new(), false),
            Err(e) => return Err(err(e)),
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        if torn {
            // The next id starts a line of its own.
            file.write_all(b"\n").map_err(err)?;
        }
        Ok(Journal { path, done, file })
    }

    fn add(&mut self, ids: &[String]) -> Result<(), ImportError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for id in ids {
            text.push_str(id);
            text.push('\n');
        }
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|error| ImportError::Folder {
                path: self.path.clone(),
                error,
            })?;
        self.done.extend(ids.iter().cloned());
        Ok(())
    }
}

/// Imports what `args` names until done or `interrupt` resolves.
pub async fn run(
    args: ImportArgs,
    interrupt: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Summary, ImportError> {
    if args.paths.is_empty() && !args.sessions.sessions {
        return Err(ImportError::Nothing);
    }
    let started = Instant::now();
    let (flag, stop) = watch::channel(false);
    let watcher = tokio::spawn(async move {
        interrupt.await;
        let _ = flag.send(true);
    });
    let mut summary = Summary::default();
    let mut sources = Vec::new();
    for path in &args.paths {
        match bundle::sources(path) {
            Ok(found) if found.is_empty() => summary.skipped.push(format!(
                "{}: no trajectory bundles or *.trajectory.jsonl files in it; export some with `openclaw sessions export-trajectory`",
                path.display()
            )),
            Ok(found) => sources.extend(found),
            Err(e) => summary.skipped.push(e.to_string()),
        }
    }
    if sources.is_empty() && !args.sessions.sessions {
        // Nothing to import: no store is opened, no folder made.
        summary.destination = "nowhere (nothing to import)".into();
        summary.seconds = started.elapsed().as_secs_f64();
        watcher.abort();
        return Ok(summary);
    }
    // A bad endpoint is refused before any folder is made.
    let remote = otlp_destination().map_err(ImportError::Endpoint)?;
    let mut journal = Journal::open(&args.local.data_dir)?;
    // Bundles exported for --sessions live here until imported.
    let workspace = args
        .local
        .data_dir
        .join(format!("import-sessions-{}", std::process::id()));
    if args.sessions.sessions {
        // openclaw resolves the workspace: it must exist.
        let workspace = std::fs::create_dir_all(&workspace)
            .and_then(|()| workspace.canonicalize())
            .map_err(|error| ImportError::Folder {
                path: workspace.clone(),
                error,
            })?;
        match args.sessions.list().await {
            Ok(keys) => {
                for key in keys {
                    if *stop.borrow() {
                        break;
                    }
                    match args.sessions.export(&key, &workspace).await {
                        Ok(source) => sources.push(source),
                        Err(e) => summary.skipped.push(format!("session {key}: {e}")),
                    }
                }
            }
            Err(e) => summary.skipped.push(e.to_string()),
        }
    }
    let (sink, destination) = Sink::open(remote, &args.local).await?;
    summary.destination = destination;
    let bar = crate::util::progress::bar(sources.len() as u64);
    let result = import_all(&sources, &sink, &mut journal, &mut summary, stop, &bar).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    watcher.abort();
    let closed = sink.close().await;
    let _ = std::fs::remove_dir_all(&workspace);
    result?;
    closed?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn import_all(
    sources: &[bundle::Source],
    sink: &Sink,
    journal: &mut Journal,
    summary: &mut Summary,
    mut stop: watch::Receiver<bool>,
    bar: &Option<indicatif::ProgressBar>,
) -> Result<(), ImportError> {
    let mut batch = Batch::default();
    for source in sources {
        if *stop.borrow() {
            summary.interrupted = true;
            break;
        }
        let path = source.path().to_path_buf();
        // Read and check the whole source before anything of it is sent.
        let read = match tokio::task::spawn_blocking({
            let source = source.clone();
            move || source.read()
        })
        .await
        {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                summary.skipped.push(e.to_string());
                tick(bar, summary);
                continue;
            }
            Err(e) => {
                summary
                    .skipped
                    .push(format!("{}: reading failed: {e}", path.display()));
                tick(bar, summary);
                continue;
            }
        };
        summary.sources += 1;
        summary.bytes += read.bytes;
        for run in &read.runs {
            let ids = record::Ids::of(&run.session_id, &run.run_id);
            if journal.done.contains(&ids.rollout_id) || batch.has(&ids.rollout_id) {
                summary.already += 1;
                continue;
            }
            if batch.bytes >= BATCH_BYTES && !batch.flush(sink, journal, summary, &mut stop).await?
            {
                summary.interrupted = true;
                return Ok(());
            }
            batch.add(record::export(run), ids.rollout_id, &path);
        }
        // A source's runs go in one store write when they fit in one: a
        // bundle is then in whole or not at all.
        if !batch.flush(sink, journal, summary, &mut stop).await? {
            summary.interrupted = true;
            break;
        }
        tick(bar, summary);
    }
    Ok(())
}

/// Exports waiting to be sent together: one store write (one `fdatasync`)
/// for many runs.
#[derive(Default)]
struct Batch {
    request: ExportTraceServiceRequest,
    /// The rollouts in it, and their sources.
    rollouts: Vec<(String, PathBuf)>,
    bytes: usize,
}

/// A batch is sent at the end of each source, or before it grows past this
/// (well under a sidecar's `--max-body`, 16 MiB by default).
const BATCH_BYTES: usize = 4 << 20;

impl Batch {
    fn has(&self, rollout_id: &str) -> bool {
        self.rollouts.iter().any(|(id, _)| id == rollout_id)
    }

    fn add(&mut self, export: ExportTraceServiceRequest, rollout_id: String, source: &Path) {
        self.bytes += export.encoded_len();
        self.request.resource_spans.extend(export.resource_spans);
        self.rollouts.push((rollout_id, source.to_path_buf()));
    }

    /// Sends what it holds and, once the destination has it, journals it;
    /// `false` when `stop` turned true first (then nothing is journaled).
    async fn flush(
        &mut self,
        sink: &Sink,
        journal: &mut Journal,
        summary: &mut Summary,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, ImportError> {
        if self.rollouts.is_empty() {
            return Ok(true);
        }
        let batch = std::mem::take(self);
        let sent = tokio::select! {
            sent = sink.send(batch.request) => sent,
            _ = stop.wait_for(|s| *s) => return Ok(false),
        };
        if let Err(reason) = sent {
            let (rollout_id, source) = &batch.rollouts[0];
            return Err(ImportError::Delivery {
                destination: summary.destination.clone(),
                rollout_id: rollout_id.clone(),
                source_path: source.display().to_string(),
                reason,
            });
        }
        let ids: Vec<String> = batch.rollouts.into_iter().map(|(id, _)| id).collect();
        journal.add(&ids)?;
        summary.imported += ids.len() as u64;
        Ok(true)
    }
}

fn tick(bar: &Option<indicatif::ProgressBar>, summary: &Summary) {
    if let Some(bar) = bar {
        bar.inc(1);
        bar.set_message(format!(
            "{} runs, {} skipped",
            summary.imported + summary.already,
            summary.skipped.len()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_what_was_acknowledged_and_ignores_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("oclagl-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut j = Journal::open(&dir).unwrap();
        j.add(&["ro-aaaaaaaaaaaa".into(), "ro-bbbbbbbbbbbb".into()])
            .unwrap();
        drop(j);
        // A crash in the middle of a write leaves part of a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("import.journal"))
            .unwrap();
        f.write_all(b"ro-cccc").unwrap();
        let mut j = Journal::open(&dir).unwrap();
        let mut done: Vec<_> = j.done.iter().cloned().collect();
        done.sort();
        assert_eq!(done, ["ro-aaaaaaaaaaaa", "ro-bbbbbbbbbbbb"]);
        j.add(&["ro-dddddddddddd".into()]).unwrap();
        drop(j);
        assert!(Journal::open(&dir)
            .unwrap()
            .done
            .contains("ro-dddddddddddd"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
