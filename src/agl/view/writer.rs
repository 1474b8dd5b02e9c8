//! The trace-file writer thread: it builds each batch's files from the
//! store's records, writes them atomically and syncs them together, and
//! answers the view with each file's summary line.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::build::build_trace_file;
use super::read_export;
use crate::agl::index::Rollout;
use crate::agl::index::Saved;
use crate::agl::summary::{self};
use crate::store::{Pos, WalReader};

/// A rollout to (re)write, with what the writer needs for it.
pub(super) struct Job {
    pub(super) id: Arc<str>,
    pub(super) rollout: Rollout,
    pub(super) name: String,
    /// Files of trace-derived rollouts folded into this one, to delete.
    pub(super) stale: Vec<String>,
    pub(super) generation: u64,
}

pub(super) struct Done {
    pub(super) id: Arc<str>,
    pub(super) name: String,
    pub(super) generation: u64,
    /// Files still to delete (given back when the write failed).
    pub(super) stale: Vec<String>,
    pub(super) error: Option<String>,
    /// The written file's summary line.
    pub(super) line: Option<Vec<u8>>,
}

/// The trace file writer thread.
pub(super) struct FileWriter {
    pub(super) reader: WalReader,
    pub(super) traces_dir: PathBuf,
    pub(super) sync: bool,
}

impl FileWriter {
    pub(super) fn run(
        mut self,
        jobs: Receiver<Vec<Job>>,
        done: std::sync::mpsc::Sender<Vec<Done>>,
    ) {
        // Trace files are a view that may lag; acknowledgements may not. On
        // a busy machine the receivers get the CPU first.
        // SAFETY: setpriority on this thread's own id (Linux: per-thread nice).
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
        }
        while let Ok(batch) = jobs.recv() {
            let results = self.write_batch(batch);
            if done.send(results).is_err() {
                return;
            }
        }
    }

    /// Writes every file of the batch to a temporary name, then syncs them
    /// (the disk overlaps the flushes), renames them over their targets and
    /// syncs the folder once: each file is replaced atomically, and all are
    /// durable before the checkpoint may pass them.
    fn write_batch(&mut self, batch: Vec<Job>) -> Vec<Done> {
        // A store record often holds spans of several rollouts: it is read
        // once per batch, and dropped after the last file that needs it, so
        // a batch holds little more than the record of the file at hand.
        let mut last_use = HashMap::new();
        for (i, job) in batch.iter().enumerate() {
            for pos in &job.rollout.records {
                last_use.insert(*pos, i);
            }
        }
        let mut decoded = HashMap::new();
        let mut written = Vec::with_capacity(batch.len());
        let mut results = Vec::with_capacity(batch.len());
        for (i, job) in batch.into_iter().enumerate() {
            let file = self.write_tmp(&job, &mut decoded);
            for pos in &job.rollout.records {
                if last_use.get(pos) == Some(&i) {
                    decoded.remove(pos);
                }
            }
            match file {
                Ok(file) => written.push((job, file)),
                Err(e) => results.push(Done::of(job, Some(e))),
            }
        }
        let synced = match self.sync {
            true => sync_data_all(written.iter().map(|(_, (file, _, _))| file).collect()),
            false => written.iter().map(|_| Ok(())).collect(),
        };
        let mut renamed = Vec::with_capacity(written.len());
        for ((job, (_file, tmp, summary)), synced) in written.into_iter().zip(synced) {
            let target = self.traces_dir.join(&job.name);
            match synced.and_then(|()| std::fs::rename(&tmp, target)) {
                Ok(()) => renamed.push((job, summary)),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    results.push(Done::of(job, Some(e)));
                }
            }
        }
        let dir = match self.sync {
            true => std::fs::File::open(&self.traces_dir).and_then(|d| d.sync_all()),
            false => Ok(()),
        };
        for (job, summary) in renamed {
            match &dir {
                Ok(()) => {
                    for old in job.stale.iter().filter(|old| **old != job.name) {
                        let _ = std::fs::remove_file(self.traces_dir.join(old));
                    }
                    let line = summary::summary_line(&summary, &Saved::of(&job.rollout));
                    results.push(Done {
                        line: Some(line),
                        ..Done::of(job, None)
                    });
                }
                Err(e) => {
                    results.push(Done::of(job, Some(io::Error::new(e.kind(), e.to_string()))))
                }
            }
        }
        results
    }

    /// Builds a rollout's file and writes it under a temporary name.
    fn write_tmp(
        &mut self,
        job: &Job,
        decoded: &mut HashMap<Pos, Option<Arc<ExportTraceServiceRequest>>>,
    ) -> io::Result<(std::fs::File, PathBuf, summary::Summary)> {
        let mut requests = Vec::with_capacity(job.rollout.records.len());
        for pos in &job.rollout.records {
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
        let trace_file = build_trace_file(&job.id, &job.rollout, &requests);
        let bytes = serde_json::to_vec_pretty(&trace_file).map_err(io::Error::other)?;
        let tmp = self.traces_dir.join(format!(".{}.tmp", job.name));
        let mut file = std::fs::File::create(&tmp)?;
        if let Err(e) = std::io::Write::write_all(&mut file, &bytes) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok((file, tmp, summary::summarize(&trace_file, &job.name)))
    }
}

/// Threads that sync a batch's files at once, at most.
pub(super) const SYNC_THREADS: usize = 8;
/// Files per sync thread, at least: a thread costs more than it saves on a
/// batch of two or three.
pub(super) const SYNCS_PER_THREAD: usize = 4;

/// fdatasyncs the files, several at a time: the disk takes their writes
/// together and the file system covers them with fewer journal commits than
/// one sync after another would need. Results are in the files' order.
pub(super) fn sync_data_all(files: Vec<&std::fs::File>) -> Vec<io::Result<()>> {
    let threads = (files.len() / SYNCS_PER_THREAD).clamp(1, SYNC_THREADS);
    let mut results: Vec<Option<io::Result<()>>> = files.iter().map(|_| None).collect();
    let sync_share = |t: usize| -> Vec<(usize, io::Result<()>)> {
        (t..files.len())
            .step_by(threads.max(1))
            .map(|i| (i, files[i].sync_data()))
            .collect()
    };
    std::thread::scope(|scope| {
        let mut spawned = Vec::new();
        for t in 1..threads {
            let builder = std::thread::Builder::new().name("oclagl-sync".into());
            match builder.spawn_scoped(scope, move || sync_share(t)) {
                Ok(handle) => spawned.push(handle),
                // No thread: this one syncs that share too.
                Err(_) => record(&mut results, sync_share(t)),
            }
        }
        record(&mut results, sync_share(0));
        for handle in spawned {
            if let Ok(done) = handle.join() {
                record(&mut results, done);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("the sync thread failed"))))
        .collect()
}

pub(super) fn record(results: &mut [Option<io::Result<()>>], done: Vec<(usize, io::Result<()>)>) {
    for (i, r) in done {
        results[i] = Some(r);
    }
}

impl Done {
    pub(super) fn of(job: Job, error: Option<io::Error>) -> Done {
        Done {
            stale: if error.is_some() {
                job.stale
            } else {
                Vec::new()
            },
            error: error.map(|e| e.to_string()),
            id: job.id,
            name: job.name,
            generation: job.generation,
            line: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_syncs_answer_once_for_every_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [0, 1, 3, SYNC_THREADS * SYNCS_PER_THREAD * 2 + 1] {
            let files: Vec<std::fs::File> = (0..n)
                .map(|i| {
                    std::fs::File::create(dir.path().join(format!("{n}-{i}"))).expect("create")
                })
                .collect();
            let results = sync_data_all(files.iter().collect());
            assert_eq!(results.len(), n);
            assert!(results.iter().all(|r| r.is_ok()));
        }
    }
}
