//! Forwarding: every export the store holds goes on, unchanged, to other
//! OTLP receivers (Jaeger, Tempo, a collector, another oclagl) and to Agent
//! Lightning stores.
//!
//! Each destination has its own task and its own cursor: a position in the
//! write-ahead log up to which everything was delivered, kept in
//! `<data>/forward/<name>.cursor`. The backlog is the log itself, so a dead
//! destination costs no memory and nothing is copied; ingest never waits for
//! a destination. Delivery is at least once: the cursor moves (and is synced)
//! after the destination answered, so a crash between the two sends that
//! batch again. A new destination starts at the end of the log.

pub mod agl;
pub mod dest;
mod send;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prost::Message;
use tokio::sync::watch;

use crate::store::{Pos, Record, WalReader};
use crate::util::clock::now_unix_nanos;
use crate::util::fs::write_atomic;
pub use dest::{Destination, Protocol};
pub use send::{grpc_answer, http_answer, Outcome, SendError, Sender};

/// Most bytes (and records) sent in one request.
const MAX_BATCH_BYTES: usize = 4 << 20;
const MAX_BATCH_RECORDS: usize = 1024;
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A server's `Retry-After` is honoured up to this long.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);

/// Why forwarding to a destination stopped.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Its delivery cursor could not be read or written.
    #[error("forwarding to {name}: cannot read or write {path}: {error}")]
    Io {
        /// The destination.
        name: String,
        /// The cursor file.
        path: String,
        /// The I/O error.
        error: io::Error,
    },
    /// Its delivery cursor holds something else than a log position.
    #[error("forwarding to {name}: {path} is damaged ({content:?}); delete it to restart delivery at the end of the log")]
    BadCursor {
        /// The destination.
        name: String,
        /// The cursor file.
        path: String,
        /// What the file holds.
        content: String,
    },
    /// Its sender could not be set up.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The AGL store could not be fed.
    #[error("forwarding to {name}: {reason}")]
    Agl {
        /// The destination.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// Counters of one destination, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Spans the destination stored.
    pub sent_spans: AtomicU64,
    /// Requests it answered with success.
    pub sent_requests: AtomicU64,
    /// Spans the destination took but reported as rejected (partial success).
    pub rejected_spans: AtomicU64,
    /// Spans in batches the destination refused for good (not retried).
    pub refused_spans: AtomicU64,
    /// Sends that failed and will be retried.
    pub failed_attempts: AtomicU64,
    /// Spans dropped undelivered because the backlog passed its cap.
    pub dropped_spans: AtomicU64,
    /// Bytes of log dropped with those spans.
    pub dropped_bytes: AtomicU64,
    /// Bytes of log not yet delivered.
    pub backlog_bytes: AtomicU64,
    /// Age of the oldest undelivered export, in milliseconds (0 when caught up).
    pub lag_ms: AtomicU64,
}

/// One destination with its counters.
pub struct Forwarder {
    /// Where it sends.
    pub dest: Destination,
    /// Its counters, shared with `/metrics`.
    pub stats: Arc<Stats>,
}

impl Forwarder {
    /// A forwarder for `dest`, with zeroed counters.
    pub fn new(dest: Destination) -> Forwarder {
        Forwarder {
            dest,
            stats: Arc::default(),
        }
    }
}

/// The destinations' counters on `/metrics`, read at each scrape, with a
/// `destination` label.
pub struct Metrics(pub Arc<Vec<Forwarder>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("forward::Metrics").finish_non_exhaustive()
    }
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        type Get = fn(&Stats) -> u64;
        // Counters: each sample's name ends in `_total`.
        let counters: [(&str, &str, Get); 7] = [
            ("oclagl_forward_sent_spans", "Spans delivered.", |s| {
                s.sent_spans.load(Ordering::Relaxed)
            }),
            (
                "oclagl_forward_sent_requests",
                "Export requests delivered.",
                |s| s.sent_requests.load(Ordering::Relaxed),
            ),
            (
                "oclagl_forward_rejected_spans",
                "Spans the destination took but reported rejected.",
                |s| s.rejected_spans.load(Ordering::Relaxed),
            ),
            (
                "oclagl_forward_refused_spans",
                "Spans in requests refused for good (not retried).",
                |s| s.refused_spans.load(Ordering::Relaxed),
            ),
            (
                "oclagl_forward_failed_attempts",
                "Sends that failed and will be retried.",
                |s| s.failed_attempts.load(Ordering::Relaxed),
            ),
            (
                "oclagl_forward_dropped_spans",
                "Spans dropped undelivered at the backlog cap.",
                |s| s.dropped_spans.load(Ordering::Relaxed),
            ),
            (
                "oclagl_forward_dropped_bytes",
                "Log bytes dropped undelivered at the backlog cap.",
                |s| s.dropped_bytes.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for f in self.0.iter() {
                let labels = [("destination", f.dest.name.as_str())];
                ConstCounter::new(get(&f.stats)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "oclagl_forward_backlog_bytes",
            "Log bytes not yet delivered.",
            None,
            MetricType::Gauge,
        )?;
        for f in self.0.iter() {
            let labels = [("destination", f.dest.name.as_str())];
            let bytes = f.stats.backlog_bytes.load(Ordering::Relaxed);
            ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "oclagl_forward_lag_seconds",
            "Age of the oldest undelivered export.",
            None,
            MetricType::Gauge,
        )?;
        for f in self.0.iter() {
            let labels = [("destination", f.dest.name.as_str())];
            let seconds = f.stats.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0;
            ConstGauge::new(seconds).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The folder of delivery cursors and AGL id maps.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("forward")
}

fn cursor_name(dest: &Destination) -> String {
    format!("{}.cursor", dest.name)
}

/// Reads a destination's cursor; `None` when it has none yet.
fn load_cursor(dir: &Path, dest: &Destination) -> Result<Option<Pos>, ForwardError> {
    let path = dir.join(cursor_name(dest));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ForwardError::Io {
                name: dest.name.clone(),
                path: path.display().to_string(),
                error: source,
            })
        }
    };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset)), None) => Ok(Some(Pos { segment, offset })),
        _ => Err(ForwardError::BadCursor {
            name: dest.name.clone(),
            path: path.display().to_string(),
            content: text.chars().take(80).collect(),
        }),
    }
}

fn save_cursor(dir: &Path, dest: &Destination, pos: Pos) -> Result<(), ForwardError> {
    write_atomic(
        dir,
        &cursor_name(dest),
        format!("{} {}\n", pos.segment, pos.offset).as_bytes(),
    )
    .map(|_| ())
    .map_err(|source| ForwardError::Io {
        name: dest.name.clone(),
        path: dir.join(cursor_name(dest)).display().to_string(),
        error: source,
    })
}

/// Where a destination starts: its saved cursor, or the end of the log.
pub fn start_position(dir: &Path, dest: &Destination, end: Pos) -> Result<Pos, ForwardError> {
    std::fs::create_dir_all(dir).map_err(|source| ForwardError::Io {
        name: dest.name.clone(),
        path: dir.display().to_string(),
        error: source,
    })?;
    match load_cursor(dir, dest)? {
        Some(pos) if pos <= end => Ok(pos),
        Some(pos) => {
            tracing::warn!(destination = %dest.name, cursor = %pos, end = %end, "delivery cursor is past the end of the log (was the log replaced?); starting at the end");
            save_cursor(dir, dest, end)?;
            Ok(end)
        }
        None => {
            save_cursor(dir, dest, end)?;
            Ok(end)
        }
    }
}

/// Exports read from the log, joined into one request.
pub struct Batch {
    /// Concatenated `ExportTraceServiceRequest` encodings: protobuf merges
    /// repeated fields, so this is one request holding every resource span.
    pub body: Bytes,
    /// How many spans the body holds.
    pub spans: u64,
    /// Where the next batch starts in the log.
    pub next: Pos,
    /// When the oldest of the exports was received (Unix nanoseconds), for the lag.
    pub oldest_received_unix_nano: u64,
}

/// Counts the spans of an encoded `ExportTraceServiceRequest` without
/// decoding them (resource_spans = 1 → scope_spans = 2 → spans = 2).
pub fn count_spans(buf: &[u8]) -> u64 {
    use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
    fn fields(mut buf: &[u8], mut each: impl FnMut(u32, &[u8])) {
        while !buf.is_empty() {
            let Ok((field, wire)) = decode_key(&mut buf) else {
                return;
            };
            if wire != WireType::LengthDelimited {
                // Whatever else prost accepts, groups included.
                if skip_field(wire, field, &mut buf, DecodeContext::default()).is_err() {
                    return;
                }
                continue;
            }
            let Ok(len) = decode_varint(&mut buf) else {
                return;
            };
            let Some(body) = buf.get(..len as usize) else {
                return;
            };
            each(field, body);
            buf = &buf[len as usize..];
        }
    }
    let mut spans = 0;
    fields(buf, |f, rs| {
        if f == 1 {
            fields(rs, |f, ss| {
                if f == 2 {
                    fields(ss, |f, _| spans += u64::from(f == 2));
                }
            })
        }
    });
    spans
}

/// Reads exports from `from` up to `end`, at most about [`MAX_BATCH_BYTES`].
pub fn read_batch(reader: &mut WalReader, from: Pos, end: Pos) -> io::Result<Option<Batch>> {
    let mut body = BytesMut::new();
    let (mut spans, mut records, mut next, mut oldest) = (0, 0, from, 0);
    while records < MAX_BATCH_RECORDS && body.len() < MAX_BATCH_BYTES {
        let Some((_, payload, after)) = reader.next(next, end)? else {
            break;
        };
        next = after;
        let record = match Record::decode(payload.as_slice()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(pos = %next, error = %e, "skipping undecodable store record");
                continue;
            }
        };
        if records == 0 {
            oldest = record.received_unix_nano;
        }
        spans += count_spans(&record.export_trace_request);
        body.extend_from_slice(&record.export_trace_request);
        records += 1;
    }
    Ok((next != from).then(|| Batch {
        body: body.freeze(),
        spans,
        next,
        oldest_received_unix_nano: oldest,
    }))
}

/// Moves `cursor` forward until at most `cap` bytes are left before `end`;
/// returns the new cursor and the spans and bytes skipped.
pub fn enforce_cap(
    reader: &mut WalReader,
    cursor: Pos,
    end: Pos,
    cap: u64,
) -> io::Result<(Pos, u64, u64)> {
    let backlog = reader.bytes_between(cursor, end)?;
    if backlog <= cap {
        return Ok((cursor, 0, 0));
    }
    let (mut pos, mut dropped_bytes, mut dropped_spans) = (cursor, 0u64, 0u64);
    while backlog - dropped_bytes.min(backlog) > cap {
        let Some((_, payload, next)) = reader.next(pos, end)? else {
            break;
        };
        dropped_bytes += 8 + payload.len() as u64;
        if let Ok(record) = Record::decode(payload.as_slice()) {
            dropped_spans += count_spans(&record.export_trace_request);
        }
        pos = next;
    }
    Ok((pos, dropped_spans, dropped_bytes))
}

/// The wait before retry number `attempt` (from 0): doubling from 250 ms to
/// 30 s with ±20% jitter, and never less than what the server asked for.
pub fn backoff(attempt: u32, server_asked: Option<Duration>) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1 << attempt.min(16))
        .min(BACKOFF_MAX);
    let jitter = rand::random_range(0.8..1.2);
    let ours = base.mul_f64(jitter);
    match server_asked {
        Some(asked) => ours.max(asked.min(RETRY_AFTER_MAX)),
        None => ours,
    }
}

/// Runs blocking log reads off the async threads, keeping the reader.
async fn blocking<T: Send + 'static>(
    reader: &mut Option<WalReader>,
    f: impl FnOnce(&mut WalReader) -> T + Send + 'static,
) -> T {
    let Some(mut r) = reader.take() else {
        unreachable!("reader is put back after each use")
    };
    let (r, out) = tokio::task::spawn_blocking(move || {
        let out = f(&mut r);
        (r, out)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    *reader = Some(r);
    out
}

/// Delivers to one OTLP destination from `start` (see [`start_position`],
/// taken before the receivers accept anything) until `stop` turns true or
/// the store closes. `end` is the store's committed end.
pub async fn run(
    forwarder: &Forwarder,
    start: Pos,
    wal_dir: PathBuf,
    state_dir: PathBuf,
    mut end: watch::Receiver<Pos>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ForwardError> {
    let dest = &forwarder.dest;
    let stats = &forwarder.stats;
    let sender = Sender::new(dest)?;
    let mut cursor = start;
    let mut reader = Some(WalReader::new(&wal_dir));
    let io_err = |source: io::Error| ForwardError::Io {
        name: dest.name.clone(),
        path: wal_dir.display().to_string(),
        error: source,
    };
    let mut attempt = 0u32;
    tracing::info!(destination = %dest.name, url = %dest.url, cursor = %cursor, "forwarding");
    loop {
        if *stop.borrow() {
            break;
        }
        let end_pos = *end.borrow_and_update();
        let cap = dest.max_backlog;
        let (capped, dropped_spans, dropped_bytes) =
            blocking(&mut reader, move |r| enforce_cap(r, cursor, end_pos, cap))
                .await
                .map_err(io_err)?;
        if capped != cursor {
            count_dropped(forwarder, dropped_spans, dropped_bytes);
            cursor = capped;
            save_cursor(&state_dir, dest, cursor)?;
        }
        let backlog = blocking(&mut reader, move |r| r.bytes_between(cursor, end_pos))
            .await
            .map_err(io_err)?;
        stats.backlog_bytes.store(backlog, Ordering::Relaxed);
        let batch = blocking(&mut reader, move |r| read_batch(r, cursor, end_pos))
            .await
            .map_err(io_err)?;
        let Some(batch) = batch else {
            stats.lag_ms.store(0, Ordering::Relaxed);
            tokio::select! {
                changed = end.changed() => if changed.is_err() { break },
                _ = stop.wait_for(|s| *s) => break,
            }
            continue;
        };
        let lag = now_unix_nanos().saturating_sub(batch.oldest_received_unix_nano);
        stats.lag_ms.store(lag / 1_000_000, Ordering::Relaxed);
        let outcome = tokio::select! {
            o = sender.send(batch.body.clone()) => o,
            _ = stop.wait_for(|s| *s) => break,
        };
        match outcome {
            Outcome::Delivered { rejected } => {
                if attempt > 0 {
                    tracing::info!(destination = %dest.name, "destination is back; delivering the backlog");
                }
                attempt = 0;
                count_delivered(forwarder, batch.spans, rejected);
            }
            Outcome::Refused { reason } => {
                attempt = 0;
                tracing::error!(destination = %dest.name, spans = batch.spans, %reason, "destination refused the export for good; skipping it");
                stats
                    .refused_spans
                    .fetch_add(batch.spans, Ordering::Relaxed);
            }
            Outcome::Retry { after, reason } => {
                stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let wait = backoff(attempt, after);
                if attempt == 0 {
                    tracing::warn!(destination = %dest.name, %reason, "send failed; retrying with backoff while the backlog waits on disk");
                } else {
                    tracing::debug!(destination = %dest.name, %reason, ?wait, "send failed again");
                }
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {},
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            }
        }
        cursor = batch.next;
        save_cursor(&state_dir, dest, cursor)?;
    }
    Ok(())
}

/// A delivered batch of `spans`, `rejected` of them by the destination.
fn count_delivered(forwarder: &Forwarder, spans: u64, rejected: u64) {
    let stats = &forwarder.stats;
    let rejected = rejected.min(spans);
    if rejected > 0 {
        tracing::warn!(destination = %forwarder.dest.name, rejected, "destination rejected some spans");
    }
    stats
        .sent_spans
        .fetch_add(spans - rejected, Ordering::Relaxed);
    stats.rejected_spans.fetch_add(rejected, Ordering::Relaxed);
    stats.sent_requests.fetch_add(1, Ordering::Relaxed);
}

/// The oldest undelivered exports, dropped to keep the backlog under its cap.
fn count_dropped(forwarder: &Forwarder, spans: u64, bytes: u64) {
    tracing::warn!(destination = %forwarder.dest.name, spans, bytes, "backlog over its cap: dropped the oldest undelivered exports");
    let stats = &forwarder.stats;
    stats.dropped_spans.fetch_add(spans, Ordering::Relaxed);
    stats.dropped_bytes.fetch_add(bytes, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn request(spans_per_scope: &[usize]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: spans_per_scope
                    .iter()
                    .map(|&n| ScopeSpans {
                        spans: (0..n)
                            .map(|i| Span {
                                name: format!("s{i}"),
                                trace_id: vec![1; 16],
                                span_id: vec![2; 8],
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn spans_are_counted_without_decoding_and_batches_merge() {
        let a = request(&[3, 0, 2]).encode_to_vec();
        let b = request(&[4]).encode_to_vec();
        assert_eq!(count_spans(&a), 5);
        assert_eq!(count_spans(&b), 4);
        assert_eq!(count_spans(b"\xff\xff"), 0, "garbage counts nothing");
        let joined = [a.clone(), b.clone()].concat();
        let merged = ExportTraceServiceRequest::decode(joined.as_slice()).unwrap();
        assert_eq!(merged.resource_spans.len(), 2);
        assert_eq!(count_spans(&joined), 9);
    }

    /// Found with the `otlp_grpc` fuzz target's check: prost skips a group
    /// (wire type 3) in an unknown field, the count stopped at it, so the
    /// spans after it were missing from the forwarding counters.
    #[test]
    fn spans_after_a_group_are_counted() {
        // Field 99 as an empty group, and one holding a varint.
        let (empty, holding) = (b"\x9b\x06\x9c\x06", b"\x9b\x06\x08\x01\x9c\x06");
        let plain = request(&[2, 1]).encode_to_vec();
        let scope = ScopeSpans {
            spans: request(&[2]).resource_spans[0].scope_spans[0].spans.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        // A group at the top, before a resource's scope, before a span.
        let mut nested = Vec::new();
        prost::encoding::bytes::encode(2, &[&holding[..], &scope].concat(), &mut nested);
        let mut resource = Vec::new();
        prost::encoding::bytes::encode(1, &[&empty[..], &nested].concat(), &mut resource);
        for bytes in [
            [&empty[..], &plain].concat(),
            [&holding[..], &resource].concat(),
        ] {
            let decoded =
                ExportTraceServiceRequest::decode(bytes.as_slice()).expect("prost takes it");
            let spans: usize = decoded
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            assert_eq!(count_spans(&bytes), spans as u64);
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_the_server() {
        let first = backoff(0, None);
        assert!(first >= Duration::from_millis(200) && first <= Duration::from_millis(300));
        assert!(backoff(30, None) <= BACKOFF_MAX.mul_f64(1.2));
        assert!(backoff(0, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        assert!(backoff(0, Some(Duration::from_secs(1 << 40))) <= RETRY_AFTER_MAX);
    }

    #[test]
    fn batches_and_the_cap_walk_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) =
            crate::store::wal::Wal::open(dir.path(), 1 << 20, false, |_, _| {}).unwrap();
        let records: Vec<Record> = (0..10u64)
            .map(|i| Record {
                received_unix_nano: 100 + i,
                export_trace_request: Bytes::from(request(&[2]).encode_to_vec()),
            })
            .collect();
        let positions = wal
            .append_batch(&records, |r, out| r.encode(out).unwrap())
            .unwrap();
        let end = wal.end();
        let mut reader = WalReader::new(dir.path());
        let batch = read_batch(&mut reader, positions[0], end).unwrap().unwrap();
        assert_eq!(
            (batch.spans, batch.next, batch.oldest_received_unix_nano),
            (20, end, 100)
        );
        assert!(read_batch(&mut reader, end, end).unwrap().is_none());

        let per_record = reader.bytes_between(positions[0], positions[1]).unwrap();
        let (pos, spans, bytes) =
            enforce_cap(&mut reader, positions[0], end, 3 * per_record).unwrap();
        assert_eq!((pos, spans, bytes), (positions[7], 14, 7 * per_record));
        let unchanged = enforce_cap(&mut reader, pos, end, 3 * per_record).unwrap();
        assert_eq!(unchanged, (pos, 0, 0));
    }

    #[test]
    fn cursors_survive_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let dest: Destination = "grpc://h:1;name=d".parse().unwrap();
        let end = Pos {
            segment: 3,
            offset: 99,
        };
        assert_eq!(
            start_position(dir.path(), &dest, end).unwrap(),
            end,
            "new: at the end"
        );
        save_cursor(
            dir.path(),
            &dest,
            Pos {
                segment: 3,
                offset: 50,
            },
        )
        .unwrap();
        assert_eq!(
            start_position(dir.path(), &dest, end).unwrap(),
            Pos {
                segment: 3,
                offset: 50
            }
        );
        std::fs::write(dir.path().join("d.cursor"), "3 x").unwrap();
        assert!(matches!(
            start_position(dir.path(), &dest, end),
            Err(ForwardError::BadCursor { .. })
        ));
    }
}
