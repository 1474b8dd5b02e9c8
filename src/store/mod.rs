//! The durable span store: a write-ahead log with group commit.
//!
//! Receivers hand an encoded OTLP export to [`Store::append`]; one writer
//! thread takes everything that is queued, writes it with one `write`, makes
//! it durable with one `fdatasync`, and only then answers each caller. The
//! queue between them is bounded, so a store that cannot keep up makes callers
//! wait (and the receivers turn a long wait into 429/`RESOURCE_EXHAUSTED`).
//! After each commit, every record is passed in log order to a listener (the
//! AGL view) together with a small summary `M` computed by the receiver.

pub mod wal;

mod record {
    include!(concat!(env!("OUT_DIR"), "/oclagl.store.v1.rs"));
}

use std::io;
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};

pub use record::Record;
pub use wal::{Pos, RecoveryStats, WalReader};

/// Most records one commit takes (and most bytes, below).
const MAX_BATCH: usize = 4096;
const MAX_BATCH_BYTES: usize = 32 << 20;

/// Why the store could not take or keep a record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The log's folder or a segment cannot be opened.
    #[error("cannot open the store in {path}: {error}")]
    Open {
        /// The folder.
        path: String,
        /// The I/O error.
        error: io::Error,
    },
    /// Another process holds the store's lock.
    #[error("the store in {path} is in use by another oclagl process: stop it, pass another --data-dir, or send to it (OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 for `oclagl serve` on its default port)")]
    Locked {
        /// The folder.
        path: String,
    },
    /// Appending or syncing the log failed; the records queued with it are not
    /// stored.
    #[error("store write failed: {0}")]
    Write(Arc<io::Error>),
    /// The store has shut down and takes nothing more.
    #[error("the store is shut down")]
    Closed,
}

/// A record after its commit, as the listener sees it.
pub struct Committed<M> {
    /// Where the record is in the log.
    pub pos: Pos,
    /// When the receiver got it (Unix nanoseconds).
    pub received_unix_nano: u64,
    /// What the appender attached to it (the index's summary of its spans).
    pub meta: M,
}

struct Append<M> {
    received_unix_nano: u64,
    request: Bytes,
    meta: M,
    done: oneshot::Sender<Result<Pos, StoreError>>,
}

/// Handle for appending; cheap to clone. The writer thread ends when the last
/// handle is dropped, after committing what was queued.
pub struct Store<M> {
    tx: mpsc::Sender<Append<M>>,
    end: watch::Receiver<Pos>,
}

impl<M> Clone for Store<M> {
    fn clone(&self) -> Self {
        Store {
            tx: self.tx.clone(),
            end: self.end.clone(),
        }
    }
}

impl<M> Store<M> {
    /// The end of the committed log: every record before it is durable. It
    /// changes after each commit and closes when the writer ends.
    pub fn committed_end(&self) -> watch::Receiver<Pos> {
        self.end.clone()
    }
}

impl<M: Send + 'static> Store<M> {
    /// Opens the log under `dir`, replays every intact record through
    /// `on_recovered` (in log order), then starts the writer thread, which
    /// hands each committed record to `committed`.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        sync: bool,
        queue_capacity: usize,
        mut on_recovered: impl FnMut(Pos, Record),
        committed: SyncSender<Committed<M>>,
    ) -> Result<(Store<M>, JoinHandle<()>, RecoveryStats), StoreError> {
        let lock = lock(dir)?;
        let (wal, stats) = wal::Wal::open(dir, segment_bytes, sync, |pos, payload| {
            match Record::decode(payload.as_slice()) {
                Ok(record) => on_recovered(pos, record),
                // A frame with a valid checksum that is not a Record was not
                // written by this program; say so and go on.
                Err(e) => tracing::warn!(%pos, error = %e, "skipping undecodable store record"),
            }
        })
        .map_err(|source| StoreError::Open {
            path: dir.display().to_string(),
            error: source,
        })?;
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let (end_tx, end) = watch::channel(wal.end());
        let writer = std::thread::Builder::new()
            .name("oclagl-store".into())
            .spawn(move || {
                write_loop(wal, rx, committed, end_tx);
                drop(lock);
            })
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                error: source,
            })?;
        Ok((Store { tx, end }, writer, stats))
    }

    /// Appends one export; resolves once it is on disk.
    pub async fn append(
        &self,
        received_unix_nano: u64,
        request: Bytes,
        meta: M,
    ) -> Result<Pos, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Append {
                received_unix_nano,
                request,
                meta,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Takes the folder's exclusive lock (released when the file is dropped, or
/// by the OS when the process dies).
fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = dir.display().to_string();
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Open {
        path: path.clone(),
        error: source,
    })?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(|source| StoreError::Open {
            path: path.clone(),
            error: source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Open {
            path,
            error: source,
        }),
    }
}

fn write_loop<M>(
    mut wal: wal::Wal,
    mut rx: mpsc::Receiver<Append<M>>,
    committed: SyncSender<Committed<M>>,
    end: watch::Sender<Pos>,
) {
    let mut batch: Vec<Append<M>> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut bytes = first.request.len();
        batch.push(first);
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += next.request.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let result = wal.append_batch(&batch, |a, out| {
            let record = Record {
                received_unix_nano: a.received_unix_nano,
                export_trace_request: a.request.clone(),
            };
            // Encoding into a Vec cannot run out of room.
            let _ = record.encode(out);
        });
        match result {
            Ok(positions) => {
                for (append, pos) in batch.drain(..).zip(positions) {
                    let _ = committed.send(Committed {
                        pos,
                        received_unix_nano: append.received_unix_nano,
                        meta: append.meta,
                    });
                    let _ = append.done.send(Ok(pos));
                }
                end.send_replace(wal.end());
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "store write failed");
                let e = Arc::new(e);
                for append in batch.drain(..) {
                    let _ = append.done.send(Err(StoreError::Write(e.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_committed_in_log_order_and_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, crx) = std::sync::mpsc::sync_channel(1024);
        let (store, writer, _) =
            Store::<u32>::open(dir.path(), 1 << 20, true, 64, |_, _| {}, ctx).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append(i as u64, Bytes::from(i.to_le_bytes().to_vec()), i)
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (other, _) = std::sync::mpsc::sync_channel(1);
        let again = Store::<u32>::open(dir.path(), 1 << 20, true, 1, |_, _| {}, other);
        assert!(matches!(again, Err(StoreError::Locked { .. })));
        drop(store);
        writer.join().unwrap();
        let committed: Vec<_> = crx.try_iter().collect();
        assert_eq!(committed.len(), 200);
        assert!(committed.windows(2).all(|w| w[0].pos < w[1].pos));

        let (ctx, _crx) = std::sync::mpsc::sync_channel(1);
        let mut replayed = Vec::new();
        Store::<u32>::open(
            dir.path(),
            1 << 20,
            true,
            1,
            |pos, rec| replayed.push((pos, rec)),
            ctx,
        )
        .unwrap();
        assert_eq!(replayed.len(), 200);
        for (c, (pos, rec)) in committed.iter().zip(&replayed) {
            assert_eq!(c.pos, *pos);
            assert_eq!(rec.received_unix_nano, c.meta as u64);
            assert_eq!(&rec.export_trace_request[..], &c.meta.to_le_bytes());
        }
    }
}
