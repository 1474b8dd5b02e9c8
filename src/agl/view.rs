//! Keeps `traces/` in step with the store.
//!
//! The view runs on its own thread. It receives every committed record in log
//! order, updates the rollout index, and writes a rollout's trace file once the
//! rollout has been quiet for a while (rewriting it, atomically and under the
//! same name, when late spans arrive). A checkpoint in the data folder records
//! the log position below which every record is reflected in the files, so a
//! restart rewrites only what the crash may have left stale.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

use super::index::{
    derived_attempt_id, fallback_attempt_id, summarize, Change, Index, RecordSummary, Rollout,
};
use super::span::{self, flatten_attributes, str_attr, Resource, SpanIds};
use super::trace_file::{self, TraceFile};
use crate::store::{Committed, Pos, Record, WalReader};

/// Root-span attribute holding the task input (JSON) of a rollout.
pub const TASK_INPUT: &str = "oclagl.task_input";

const CHECKPOINT: &str = "agl-view.checkpoint";
/// Rollouts written per batch; records decoded for a batch are shared.
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("cannot use the traces folder {path}: {source}")]
    TracesDir { path: String, source: io::Error },
    #[error("cannot read the view checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
}

pub struct ViewConfig {
    pub traces_dir: PathBuf,
    pub data_dir: PathBuf,
    pub wal_dir: PathBuf,
    /// How long a rollout must be quiet before its file is (re)written.
    pub quiet: Duration,
}

struct Dirty {
    since: Pos,
    last_activity: Instant,
}

pub struct View {
    cfg: ViewConfig,
    index: Index,
    reader: WalReader,
    dirty: HashMap<Arc<str>, Dirty>,
    /// Trace files on disk, by file stem.
    files: HashMap<String, String>,
    /// Files of trace-derived rollouts merged away, deleted once the rollout
    /// they joined is written.
    stale: HashMap<Arc<str>, Vec<String>>,
    checkpoint: Pos,
    next_pos: Pos,
    changes: Vec<Change>,
}

fn read_checkpoint(path: &Path) -> Result<Pos, ViewError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Pos::default()),
        Err(e) => {
            return Err(ViewError::Checkpoint {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Ok(Pos { segment, offset }),
        // An unreadable checkpoint only costs a full rewrite.
        _ => Ok(Pos::default()),
    }
}

impl View {
    pub fn new(cfg: ViewConfig) -> Result<View, ViewError> {
        let dir_err = |source| ViewError::TracesDir {
            path: cfg.traces_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&cfg.traces_dir).map_err(dir_err)?;
        let files = trace_file::scan(&cfg.traces_dir).map_err(dir_err)?;
        let checkpoint = read_checkpoint(&cfg.data_dir.join(CHECKPOINT))?;
        Ok(View {
            reader: WalReader::new(&cfg.wal_dir),
            cfg,
            index: Index::default(),
            dirty: HashMap::new(),
            files,
            stale: HashMap::new(),
            checkpoint,
            next_pos: Pos::default(),
            changes: Vec::new(),
        })
    }

    /// Feeds a record found while opening the store.
    pub fn recover(&mut self, pos: Pos, record: &Record) {
        match ExportTraceServiceRequest::decode(record.export_trace_request.clone()) {
            Ok(request) => {
                let summary = summarize(&request);
                let changed = pos >= self.checkpoint;
                self.observe(pos, record.received_unix_nano, &summary, changed);
            }
            Err(e) => tracing::warn!(%pos, error = %e, "skipping undecodable export in store"),
        }
    }

    fn observe(&mut self, pos: Pos, received: u64, summary: &RecordSummary, changed: bool) {
        let mut changes = std::mem::take(&mut self.changes);
        changes.clear();
        self.index.observe(pos, received, summary, &mut changes);
        let now = Instant::now();
        for change in changes.drain(..) {
            match change {
                Change::Touched(id) if changed => {
                    self.dirty
                        .entry(id)
                        .or_insert(Dirty {
                            since: pos,
                            last_activity: now,
                        })
                        .last_activity = now;
                }
                Change::Touched(_) => {}
                Change::Merged { gone, into } => {
                    self.dirty.remove(&gone);
                    if let Some(file) = self.files.remove(&trace_file::file_stem(&gone)) {
                        self.stale.entry(into.clone()).or_default().push(file);
                    }
                    if self.stale.contains_key(&into) {
                        self.dirty.entry(into).or_insert(Dirty {
                            since: pos,
                            last_activity: now,
                        });
                    }
                }
            }
        }
        self.changes = changes;
        self.next_pos = Pos {
            segment: pos.segment,
            offset: pos.offset + 1,
        };
    }

    /// Runs until the store closes the channel, then writes every pending
    /// rollout at once.
    pub fn run(mut self, committed: Receiver<Committed<RecordSummary>>) {
        let tick =
            (self.cfg.quiet / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match committed.recv_timeout(wait) {
                Ok(c) => self.observe(c.pos, c.received_unix_nano, &c.meta, true),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                self.write_due(false);
                next_tick = Instant::now() + tick;
            }
        }
        self.write_due(true);
    }

    /// Writes the rollouts that have been quiet long enough (all if `all`).
    pub fn write_due(&mut self, all: bool) {
        let now = Instant::now();
        let quiet = self.cfg.quiet;
        let mut due: Vec<(Pos, Arc<str>)> = self
            .dirty
            .iter()
            .filter(|(_, d)| all || now.duration_since(d.last_activity) >= quiet)
            .map(|(id, d)| (d.since, id.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_unstable();
        for chunk in due.chunks(BATCH) {
            let mut decoded: HashMap<Pos, Option<Arc<ExportTraceServiceRequest>>> = HashMap::new();
            for (_, id) in chunk {
                match self.write_rollout(id, &mut decoded) {
                    Ok(()) => {
                        self.dirty.remove(id);
                    }
                    Err(e) => {
                        tracing::error!(rollout = %id, error = %e, "cannot write trace file; will retry")
                    }
                }
            }
        }
        if let Ok(dir) = std::fs::File::open(&self.cfg.traces_dir) {
            let _ = dir.sync_all();
        }
        self.save_checkpoint();
    }

    fn save_checkpoint(&mut self) {
        let low = self
            .dirty
            .values()
            .map(|d| d.since)
            .min()
            .unwrap_or(self.next_pos);
        if low == self.checkpoint {
            return;
        }
        let text = format!("{} {}\n", low.segment, low.offset);
        match trace_file::write_atomic(&self.cfg.data_dir, CHECKPOINT, text.as_bytes()) {
            Ok(_) => self.checkpoint = low,
            Err(e) => tracing::warn!(error = %e, "cannot save view checkpoint"),
        }
    }

    fn write_rollout(
        &mut self,
        id: &Arc<str>,
        decoded: &mut HashMap<Pos, Option<Arc<ExportTraceServiceRequest>>>,
    ) -> io::Result<()> {
        let Some(rollout) = self.index.get(id) else {
            return Ok(());
        };
        let mut requests = Vec::with_capacity(rollout.records.len());
        for pos in &rollout.records {
            let request = match decoded.get(pos) {
                Some(r) => r.clone(),
                None => {
                    let r = read_export(&mut self.reader, *pos);
                    decoded.insert(*pos, r.clone());
                    r
                }
            };
            requests.extend(request);
        }
        let file = build_trace_file(id, rollout, &requests);
        let stem = trace_file::file_stem(id);
        let name = self
            .files
            .get(&stem)
            .cloned()
            .unwrap_or_else(|| trace_file::file_name(&stem, rollout.first_received));
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        trace_file::write_atomic(&self.cfg.traces_dir, &name, &bytes)?;
        self.files.insert(stem, name);
        for old in self.stale.remove(id).unwrap_or_default() {
            let _ = std::fs::remove_file(self.cfg.traces_dir.join(old));
        }
        Ok(())
    }
}

fn read_export(reader: &mut WalReader, pos: Pos) -> Option<Arc<ExportTraceServiceRequest>> {
    let payload = reader
        .read(pos)
        .map_err(|e| tracing::error!(%pos, error = %e, "cannot read store record"))
        .ok()?;
    let record = Record::decode(payload.as_slice()).ok()?;
    ExportTraceServiceRequest::decode(record.export_trace_request)
        .map(Arc::new)
        .map_err(|e| tracing::error!(%pos, error = %e, "cannot decode store record"))
        .ok()
}

/// Builds the file of one rollout from the exports that hold its spans.
pub fn build_trace_file(
    id: &str,
    rollout: &Rollout,
    requests: &[Arc<ExportTraceServiceRequest>],
) -> TraceFile {
    struct Picked<'a> {
        span: &'a opentelemetry_proto::tonic::trace::v1::Span,
        resource: usize,
        ids: SpanIds,
    }
    let mut resources: Vec<Resource> = Vec::new();
    let mut picked: Vec<Picked> = Vec::new();
    for request in requests {
        for rs in &request.resource_spans {
            let attrs = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let mut resource_index = None;
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let Ok(trace) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else {
                        continue;
                    };
                    let ids = SpanIds::of(&span.attributes, attrs);
                    if !rollout.owns(id, &trace, ids.rollout.as_deref()) {
                        continue;
                    }
                    let resource = *resource_index.get_or_insert_with(|| {
                        resources.push(Resource {
                            attributes: flatten_attributes(attrs),
                            schema_url: rs.schema_url.clone(),
                        });
                        resources.len() - 1
                    });
                    picked.push(Picked {
                        span,
                        resource,
                        ids,
                    });
                }
            }
        }
    }
    let attempt = picked
        .iter()
        .rev()
        .find_map(|p| p.ids.attempt.clone())
        .unwrap_or_else(|| match &rollout.derived_from {
            Some(trace) => derived_attempt_id(trace),
            None => fallback_attempt_id(id),
        });
    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut spans = Vec::with_capacity(picked.len());
    let (mut any_root, mut failed, mut task_input) = (false, false, Value::Null);
    for p in &picked {
        let attempt_id = p.ids.attempt.clone().unwrap_or_else(|| attempt.clone());
        let counter = counters.entry(attempt_id.clone()).or_insert(0);
        *counter += 1;
        let sequence = p.ids.sequence.unwrap_or(*counter);
        if p.span.parent_span_id.is_empty() {
            any_root = true;
            failed |= p.span.status.as_ref().is_some_and(|s| s.code == 2);
            if let (Value::Null, Some(input)) =
                (&task_input, str_attr(&p.span.attributes, TASK_INPUT))
            {
                task_input =
                    serde_json::from_str(input).unwrap_or_else(|_| Value::String(input.into()));
            }
        }
        spans.push(span::to_agl(
            p.span,
            &resources[p.resource],
            id,
            &attempt_id,
            sequence,
        ));
    }
    let status = match (any_root, failed) {
        (false, _) => "running",
        (true, true) => "failed",
        (true, false) => "succeeded",
    };
    TraceFile {
        rollout_id: id.to_string(),
        attempt_id: attempt,
        status: status.to_string(),
        task_input,
        span_count: spans.len(),
        spans,
    }
}
