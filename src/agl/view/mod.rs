//! Keeps `traces/` in step with the store.
//!
//! The view runs on its own thread. It receives every committed record in log
//! order, updates the rollout index, and writes a rollout's trace file once the
//! rollout has been quiet for a while (rewriting it, atomically and under the
//! same name, when late spans arrive). Each file written adds a line to the
//! rollouts' summaries ([`summary`]), which also carry the checkpoint: the log
//! position below which every record is reflected in the files. A restart
//! reads the summaries and replays only the records from the checkpoint on,
//! rewriting what a crash may have left stale.
//!
//! Memory stays flat however many rollouts the store holds: once a rollout's
//! file and summary line are on disk, the index evicts it (see
//! [`super::index`]).
//!
//! This file is the event loop; `writer` is the thread that writes and syncs
//! the files, and `build` makes a rollout's file from its records.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prost::Message;

mod build;
mod writer;

pub use self::build::build_trace_file;
use self::build::read_export;
use self::writer::{Done, FileWriter, Job};
use super::index::{summarize, Change, Index, RecordSummary};
use super::summary::{self, Line};
use super::trace_file::{self, TraceFile};
use crate::store::{Committed, Pos, Record, WalReader};

/// Where earlier versions kept the checkpoint (removed when found).
const LEGACY_CHECKPOINT: &str = "agl-view.checkpoint";
/// Rollouts written per batch; records decoded for a batch are shared.
const BATCH: usize = 256;

/// Why the view could not start.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The traces folder cannot be created or written.
    #[error("cannot use the traces folder {path}: {error}")]
    TracesDir {
        /// The folder.
        path: String,
        /// What the filesystem said.
        error: io::Error,
    },
    /// The rollout summaries (the index of evicted rollouts) cannot be opened.
    #[error("cannot open the rollout summaries in {path}: {error}")]
    Summaries {
        /// The data folder holding them.
        path: String,
        /// What the filesystem said.
        error: io::Error,
    },
}

/// Where the view reads and writes, and how eagerly.
pub struct ViewConfig {
    /// Where trace files are written.
    pub traces_dir: PathBuf,
    /// The sidecar's data folder (checkpoint and rollout summaries).
    pub data_dir: PathBuf,
    /// The store's log, read back when a rollout's file is (re)built.
    pub wal_dir: PathBuf,
    /// How long a rollout must be quiet before its file is (re)written.
    pub quiet: Duration,
    /// Told the name of every trace file written (for forwarding to AGL).
    pub written: Vec<tokio::sync::mpsc::UnboundedSender<String>>,
    /// fdatasync trace files before the checkpoint passes them (`--fsync`).
    pub sync: bool,
}

/// At most one report of failed trace-file writes per this long.
const FAILURE_REPORT: Duration = Duration::from_secs(10);

/// How often the view looks for the writer's answer while a batch is out.
const WRITER_POLL: Duration = Duration::from_millis(5);

/// Saving the summaries may take at most 1/SAVE_SHARE of the view's time.
const SAVE_SHARE: u32 = 20;

/// The sidecar's rollouts, shared by the view (which adds to them) and the
/// HTTP API (which looks them up).
#[derive(Clone)]
pub struct Rollouts {
    index: Arc<Mutex<Index>>,
    wal_dir: PathBuf,
    files_written: Counter,
}

fn locked(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    index
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Rollouts {
    /// Trace files the view has written since the sidecar started.
    pub fn files_written(&self) -> u64 {
        self.files_written.get()
    }

    /// The rollout's trace file as the view would write it now, from the
    /// store; `None` for a rollout the sidecar does not know.
    pub fn trace_file(&self, id: &str) -> Option<TraceFile> {
        let rollout = locked(&self.index).lookup(id)?;
        let mut reader = WalReader::new(&self.wal_dir);
        let requests: Vec<_> = rollout
            .records
            .iter()
            .filter_map(|pos| read_export(&mut reader, *pos))
            .collect();
        Some(build_trace_file(id, &rollout, &requests))
    }
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts").finish_non_exhaustive()
    }
}

/// On `/metrics`: rollouts held in memory and evicted ones, read at each
/// scrape.
impl Collector for Rollouts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let (held, evicted) = {
            let index = locked(&self.index);
            (index.len(), index.evicted())
        };
        for (name, help, value) in [
            (
                "oclagl_view_rollouts_in_memory",
                "Rollouts whose trace file or summary line is still to be written.",
                held,
            ),
            (
                "oclagl_view_rollouts_evicted",
                "Rollouts read back from their summary line when late spans arrive.",
                evicted,
            ),
        ] {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        self.files_written.encode(encoder.encode_descriptor(
            "oclagl_view_trace_files_written",
            "Trace files written (a rollout's file is rewritten when late spans arrive).",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

struct Dirty {
    since: Pos,
    last_activity: Instant,
    /// Bumped on every change, so a write started before a change does not
    /// mark the rollout clean.
    generation: u64,
}

/// Keeps one AGL trace file per rollout up to date with the committed
/// records of the store (see the module documentation).
pub struct View {
    cfg: ViewConfig,
    index: Arc<Mutex<Index>>,
    /// Trace files written since start.
    files_written: Counter,
    /// The summaries' file (what `oclagl ls` shows, and the checkpoint).
    log: summary::Log,
    /// Rollouts to evict once their summary line (at this offset) is on disk.
    evict: HashMap<Arc<str>, u64>,
    /// Summaries or checkpoint wait to be saved (at `next_save`).
    save_pending: bool,
    next_save: Instant,
    dirty: HashMap<Arc<str>, Dirty>,
    /// Trace files found on disk, by file stem, when the summaries were
    /// missing (so a rebuild keeps their names); empty otherwise.
    legacy_files: HashMap<String, String>,
    /// Files of trace-derived rollouts merged away, deleted once the rollout
    /// they joined is written.
    stale: HashMap<Arc<str>, Vec<String>>,
    /// Which named rollout each trace-derived rollout was folded into.
    merged: HashMap<Arc<str>, Arc<str>>,
    checkpoint: Pos,
    /// Failed writes not reported yet, and when the last report was.
    failures: usize,
    failure_reported: Option<Instant>,
    /// Dirty rollouts in the order they were last touched, with the
    /// generation of that touch; entries whose generation is no longer the
    /// rollout's are skipped. Makes finding due rollouts cost what is due,
    /// not what is dirty.
    due: VecDeque<(Instant, Arc<str>, u64)>,
    next_pos: Pos,
    changes: Vec<Change>,
}

impl View {
    /// Opens the traces folder, the checkpoint and the rollout summaries;
    /// records are fed with `recover` and then `run`.
    pub fn new(cfg: ViewConfig) -> Result<View, ViewError> {
        let dir_err = |source| ViewError::TracesDir {
            path: cfg.traces_dir.display().to_string(),
            error: source,
        };
        std::fs::create_dir_all(&cfg.traces_dir).map_err(dir_err)?;
        let summaries_err = |source| ViewError::Summaries {
            path: cfg.data_dir.display().to_string(),
            error: source,
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(summaries_err)?;
        let mut index = Index::default();
        let mut checkpoint = None;
        let log = summary::Log::open(&cfg.data_dir, cfg.sync, |offset, line| match line {
            Line::Summary { rollout_id, saved } => {
                index.saved_at(&rollout_id, saved.trace_ids(), offset)
            }
            Line::Merged { rollout_id } => index.forget_saved(&rollout_id),
            Line::Checkpoint(pos) => checkpoint = Some(pos),
            Line::Other => {}
        })
        .map_err(summaries_err)?;
        index.set_saved_file(log.reader().map_err(summaries_err)?);
        // Without a checkpoint every rollout is rebuilt from the store; the
        // files already there keep their names.
        let legacy_files = match checkpoint {
            Some(_) => HashMap::new(),
            None => trace_file::scan(&cfg.traces_dir).map_err(dir_err)?,
        };
        let _ = std::fs::remove_file(cfg.data_dir.join(LEGACY_CHECKPOINT));
        let checkpoint = checkpoint.unwrap_or_default();
        Ok(View {
            cfg,
            index: Arc::new(Mutex::new(index)),
            files_written: Counter::default(),
            log,
            evict: HashMap::new(),
            save_pending: false,
            next_save: Instant::now(),
            dirty: HashMap::new(),
            legacy_files,
            stale: HashMap::new(),
            merged: HashMap::new(),
            checkpoint,
            failures: 0,
            failure_reported: None,
            due: VecDeque::new(),
            next_pos: checkpoint,
            changes: Vec::new(),
        })
    }

    /// The rollouts, for lookups from other threads.
    pub fn rollouts(&self) -> Rollouts {
        Rollouts {
            index: self.index.clone(),
            wal_dir: self.cfg.wal_dir.clone(),
            files_written: self.files_written.clone(),
        }
    }

    /// Feeds a record found while opening the store.
    /// Records below the checkpoint are in the summaries already.
    pub fn recover(&mut self, pos: Pos, record: &Record) {
        if pos < self.checkpoint {
            return;
        }
        match ExportTraceServiceRequest::decode(record.export_trace_request.clone()) {
            Ok(request) => {
                let summary = summarize(&request);
                self.observe(pos, record.received_unix_nano, &summary);
            }
            Err(e) => tracing::warn!(%pos, error = %e, "skipping undecodable export in store"),
        }
    }

    /// Marks a rollout as needing its file (re)written.
    fn touch(&mut self, id: Arc<str>, pos: Pos) {
        let now = Instant::now();
        let d = self.dirty.entry(id.clone()).or_insert(Dirty {
            since: pos,
            last_activity: now,
            generation: 0,
        });
        d.last_activity = now;
        d.generation += 1;
        self.due.push_back((now, id, d.generation));
    }

    fn observe(&mut self, pos: Pos, received: u64, summary: &RecordSummary) {
        let mut changes = std::mem::take(&mut self.changes);
        changes.clear();
        locked(&self.index).observe(pos, received, summary, &mut changes);
        for change in changes.drain(..) {
            match change {
                Change::Touched(id) => self.touch(id, pos),
                Change::Merged { gone, into, file } => {
                    self.dirty.remove(&gone);
                    self.evict.remove(&gone);
                    self.log.push(&summary::merged_line(&gone, &into));
                    let legacy = || self.legacy_files.remove(&trace_file::file_stem(&gone));
                    if let Some(file) = file.or_else(legacy) {
                        self.stale.entry(into.clone()).or_default().push(file);
                        self.touch(into.clone(), pos);
                    }
                    self.merged.insert(gone, into);
                }
            }
        }
        self.changes = changes;
        self.next_pos = Pos {
            segment: pos.segment,
            offset: pos.offset + 1,
        };
    }

    /// Runs until the store closes the channel. The index is updated here,
    /// at once; trace files are written by a second thread in batches, so a
    /// slow disk or many small rollouts never hold back the store (and with
    /// it the acknowledgements). On close, pending rollouts are written for
    /// at most `shutdown_deadline`; whatever is left is rewritten from the
    /// log at the next start (the checkpoint says from where).
    pub fn run(
        mut self,
        committed: Receiver<Committed<RecordSummary>>,
        shutdown_deadline: Duration,
    ) {
        let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Vec<Job>>(1);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Vec<Done>>();
        let writer = FileWriter {
            reader: WalReader::new(&self.cfg.wal_dir),
            traces_dir: self.cfg.traces_dir.clone(),
            sync: self.cfg.sync,
        };
        let writer = match std::thread::Builder::new()
            .name("oclagl-trace-files".into())
            .spawn(move || writer.run(job_rx, done_tx))
        {
            Ok(handle) => handle,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the trace file writer");
                return;
            }
        };
        let mut busy = false;
        loop {
            // Sleep until something is due (a quiet rollout, a save, the
            // writer's answer), or until the next record: an idle or
            // waiting view costs no wake-ups.
            let wake = self.next_wake(busy);
            let received = match wake {
                None => committed.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => committed.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match received {
                Ok(c) => {
                    self.observe(c.pos, c.received_unix_nano, &c.meta);
                    if wake.is_none_or(|at| Instant::now() < at) {
                        continue;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if let Ok(done) = done_rx.try_recv() {
                let _ = self.finish(done);
                busy = false;
            }
            if !busy {
                busy = self.dispatch(&job_tx, false);
            }
            if self.save_pending {
                self.save_checkpoint(false);
            }
        }
        // Shutdown: write what is pending, within the deadline.
        let deadline = Instant::now() + shutdown_deadline;
        loop {
            if busy {
                match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    // A failed write (a full disk, say) is not retried now:
                    // the next start rewrites it from the store.
                    Ok(done) => {
                        if self.finish(done) > 0 {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            if self.dirty.is_empty() || Instant::now() >= deadline {
                break;
            }
            busy = self.dispatch(&job_tx, true);
            if !busy {
                break;
            }
        }
        self.save_checkpoint(true);
        if !self.dirty.is_empty() {
            tracing::warn!(
                rollouts = self.dirty.len(),
                "trace files not written at shutdown; they are rewritten from the store at the next start"
            );
        }
        drop(job_tx);
        let _ = writer.join();
    }

    /// When the loop has work next: the writer's answer while a batch is
    /// out (nothing else can be dispatched meanwhile, so due rollouts wait),
    /// otherwise the first rollout to go quiet; and the next save.
    fn next_wake(&self, busy: bool) -> Option<Instant> {
        let next = match busy {
            true => Some(Instant::now() + WRITER_POLL),
            false => self.due.front().map(|(at, _, _)| *at + self.cfg.quiet),
        };
        let save = self.save_pending.then_some(self.next_save);
        [next, save].into_iter().flatten().min()
    }

    /// Hands the due rollouts (every pending one if `all`) to the writer;
    /// returns whether a batch was sent.
    fn dispatch(&mut self, jobs: &std::sync::mpsc::SyncSender<Vec<Job>>, all: bool) -> bool {
        let now = Instant::now();
        let quiet = self.cfg.quiet;
        let due: Vec<Arc<str>> = if all {
            let mut due: Vec<(Pos, Arc<str>)> = self
                .dirty
                .iter()
                .map(|(id, d)| (d.since, id.clone()))
                .collect();
            due.sort_unstable();
            due.truncate(BATCH);
            due.into_iter().map(|(_, id)| id).collect()
        } else {
            let mut due = Vec::new();
            while due.len() < BATCH {
                match self.due.front() {
                    Some((at, _, _)) if now.duration_since(*at) >= quiet => {}
                    _ => break,
                }
                let Some((_, id, generation)) = self.due.pop_front() else {
                    break;
                };
                if self
                    .dirty
                    .get(&id)
                    .is_some_and(|d| d.generation == generation)
                {
                    due.push(id);
                }
            }
            due
        };
        if due.is_empty() {
            return false;
        }
        let batch: Vec<Job> = due
            .into_iter()
            .filter_map(|id| {
                let Some(rollout) = locked(&self.index).get(&id).cloned() else {
                    self.dirty.remove(&id);
                    return None;
                };
                let stem = trace_file::file_stem(&id);
                let name = rollout
                    .file
                    .clone()
                    .or_else(|| self.legacy_files.get(&stem).cloned())
                    .unwrap_or_else(|| trace_file::file_name(&stem, rollout.first_received));
                Some(Job {
                    generation: self.dirty.get(&id).map_or(0, |d| d.generation),
                    stale: self.stale.remove(&id).unwrap_or_default(),
                    id,
                    rollout,
                    name,
                })
            })
            .collect();
        !batch.is_empty() && jobs.send(batch).is_ok()
    }

    /// Takes the writer's results: a written rollout is clean unless it got
    /// spans meanwhile; then the checkpoint moves up. Returns how many
    /// writes failed (they are retried once quiet again).
    fn finish(&mut self, done: Vec<Done>) -> usize {
        let mut failed = 0;
        let mut first_failure: Option<(Arc<str>, String)> = None;
        for d in done {
            match d.error {
                None if locked(&self.index).get(&d.id).is_none() => {
                    // Merged into a named rollout while being written: the
                    // file is stale, to delete when that rollout is written.
                    match self.merged.get(&d.id).cloned() {
                        Some(into) => {
                            self.stale.entry(into.clone()).or_default().push(d.name);
                            self.touch(into, self.next_pos);
                        }
                        None => {
                            let _ = std::fs::remove_file(self.cfg.traces_dir.join(&d.name));
                        }
                    }
                }
                None => {
                    self.files_written.inc();
                    for listener in &self.cfg.written {
                        let _ = listener.send(d.name.clone());
                    }
                    let line = d.line.map(|line| self.log.push(&line));
                    self.legacy_files.remove(&trace_file::file_stem(&d.id));
                    locked(&self.index).set_file(&d.id, &d.name);
                    let unchanged = self
                        .dirty
                        .get(&d.id)
                        .is_some_and(|x| x.generation == d.generation);
                    match (unchanged, line) {
                        (true, Some(offset)) => {
                            self.dirty.remove(&d.id);
                            self.evict.insert(d.id, offset);
                        }
                        _ => {
                            self.evict.remove(&d.id);
                        }
                    }
                }
                Some(e) => {
                    failed += 1;
                    first_failure.get_or_insert((d.id.clone(), e));
                    if let Some(x) = self.dirty.get(&d.id) {
                        self.due
                            .push_back((Instant::now(), d.id.clone(), x.generation));
                    }
                    if !d.stale.is_empty() {
                        self.stale.entry(d.id).or_default().extend(d.stale);
                    }
                }
            }
        }
        // Merges that happened while this batch was out mattered only to it.
        self.merged.clear();
        self.save_checkpoint(false);
        let Some((first, error)) = first_failure else {
            return 0;
        };
        // A full disk fails every batch at every retry: one line per
        // FAILURE_REPORT, with the count since the last one.
        self.failures += failed;
        if self
            .failure_reported
            .is_none_or(|at| at.elapsed() >= FAILURE_REPORT)
        {
            tracing::error!(rollouts = self.failures, first = %first, %error, "cannot write trace files; will retry");
            self.failures = 0;
            self.failure_reported = Some(Instant::now());
        }
        failed
    }

    /// Appends the new summary lines and, after them, the checkpoint (so it
    /// never passes a summary that is not on disk), then evicts the rollouts
    /// whose lines are now durable. Unless `now`, at most one save per
    /// SAVE_SHARE times the last save's duration: with many dirty rollouts,
    /// saves get rarer instead of taking over the thread.
    fn save_checkpoint(&mut self, now: bool) {
        // Finding the checkpoint costs a pass over every dirty rollout: only
        // when a save is due.
        if !now && Instant::now() < self.next_save {
            self.save_pending = true;
            return;
        }
        let low = self
            .dirty
            .values()
            .map(|d| d.since)
            .min()
            .unwrap_or(self.next_pos);
        if low != self.checkpoint {
            self.log.push(&summary::checkpoint_line(low));
        }
        self.save_pending = self.log.has_pending();
        if !self.save_pending {
            return;
        }
        let started = Instant::now();
        if let Err(e) = self.log.commit() {
            tracing::warn!(error = %e, "cannot save the rollout summaries");
            self.next_save = Instant::now() + Duration::from_secs(1);
            return;
        }
        self.save_pending = false;
        self.checkpoint = low;
        let mut index = locked(&self.index);
        for (id, offset) in self.evict.drain() {
            if !self.dirty.contains_key(&id) {
                index.evict(&id, offset);
            }
        }
        drop(index);
        // At most one save a second: each costs a pass over the dirty
        // rollouts and an fsync, and a late save only means a longer replay
        // after a crash (or `ls` a second behind).
        self.next_save =
            Instant::now() + (started.elapsed() * SAVE_SHARE).max(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(dir: &std::path::Path) -> View {
        View::new(ViewConfig {
            traces_dir: dir.join("traces"),
            data_dir: dir.to_path_buf(),
            wal_dir: dir.join("wal"),
            quiet: Duration::from_millis(100),
            written: Vec::new(),
            sync: true,
        })
        .expect("view")
    }

    #[test]
    fn an_idle_view_sleeps_until_something_is_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut v = view(dir.path());
        assert_eq!(
            v.next_wake(false),
            None,
            "nothing pending: wait for records"
        );
        let touched = Instant::now() - Duration::from_secs(5);
        v.touch(Arc::from("ro-a"), Pos::default());
        v.due[0].0 = touched;
        assert_eq!(v.next_wake(false), Some(touched + v.cfg.quiet));
    }

    #[test]
    fn a_due_rollout_does_not_spin_the_loop_while_the_writer_is_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut v = view(dir.path());
        v.touch(Arc::from("ro-a"), Pos::default());
        v.due[0].0 = Instant::now() - Duration::from_secs(5);
        // Due long ago, but nothing can be dispatched until the writer
        // answers: the loop polls the writer, it does not wake at once.
        let before = Instant::now();
        let wake = v.next_wake(true).expect("a wake-up");
        assert!(wake >= before + WRITER_POLL);
    }
}
