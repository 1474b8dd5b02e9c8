//! Recording a call on the side of its forwarding: the bodies as they pass
//! (up to the cap), and, once the call is over, its span built and stored
//! from a thread that runs only on idle CPU.

use std::sync::{Arc, Mutex};

use super::span::{Call, Captured, End};
use super::ProxyError;
use crate::conversation::openai;
use crate::ingest::Ingest;
use crate::util::clock::now_unix_nanos;

/// Calls waiting for their span to be built; past it, a call's span is built
/// on the runtime instead (this bounds the memory of waiting calls).
pub(super) const RECORDER_QUEUE: usize = 256;

/// Calls stored together at most.
pub(super) const RECORDER_BATCH: usize = 64;

/// Turns finished calls into spans and hands them to the store.
#[derive(Clone)]
pub(super) struct Recorder {
    pub(super) queue: std::sync::mpsc::SyncSender<Call>,
    pub(super) ingest: Arc<Ingest>,
    pub(super) runtime: tokio::runtime::Handle,
    /// The most reading one call's bodies may take (a multiple of the
    /// recording cap; see [`openai::parse_budget`]).
    pub(super) budget: usize,
}

impl Recorder {
    /// Starts the recorder thread; it ends when the last handle is dropped.
    pub(super) fn start(ingest: Arc<Ingest>, record_max: usize) -> Result<Recorder, ProxyError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| ProxyError::Recorder(e.to_string()))?;
        let budget = record_max.saturating_mul(openai::PARSE_BUDGET_FACTOR);
        let (queue, calls) = std::sync::mpsc::sync_channel::<Call>(RECORDER_QUEUE);
        let (store, handle) = (ingest.clone(), runtime.clone());
        std::thread::Builder::new()
            .name("oclagl-llm-rec".into())
            .spawn(move || {
                // Only idle CPU: unlike a low nice value, SCHED_IDLE never
                // preempts the thread that just handed a call over, so the
                // end of the answer is written before any of this runs.
                let idle = libc::sched_param { sched_priority: 0 };
                // SAFETY: sched_setscheduler on this thread (0) with a valid param.
                unsafe {
                    libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle);
                }
                // The calls that ended meanwhile are stored together: their
                // appends reach the store at once and share one write and
                // one sync, and none of this runs on the runtime.
                while let Ok(first) = calls.recv() {
                    let batch: Vec<_> = std::iter::once(first)
                        .chain(std::iter::from_fn(|| calls.try_recv().ok()))
                        .take(RECORDER_BATCH)
                        .map(|call| store_export(&store, record(&store, &call, budget)))
                        .collect();
                    handle.block_on(futures_util::future::join_all(batch));
                }
            })
            .map_err(|e| ProxyError::Recorder(e.to_string()))?;
        Ok(Recorder {
            queue,
            ingest,
            runtime,
            budget,
        })
    }

    pub(super) fn record(&self, call: Call) {
        if let Err(full_or_gone) = self.queue.try_send(call) {
            let call = match full_or_gone {
                std::sync::mpsc::TrySendError::Full(c)
                | std::sync::mpsc::TrySendError::Disconnected(c) => c,
            };
            let (ingest, budget) = (self.ingest.clone(), self.budget);
            self.runtime.spawn(async move {
                let export = record(&ingest, &call, budget);
                store_export(&ingest, export).await
            });
        }
    }
}

/// A call's span; one recorded without its conversation is counted and
/// logged (once: the span carries the reason too).
pub(super) fn record(
    ingest: &Ingest,
    call: &Call,
    budget: usize,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let (export, unreadable) = call.record(budget);
    ingest.counters.recorded_llm_calls.inc();
    if let Some(why) = unreadable {
        ingest.counters.unrecorded_llm_calls.inc();
        tracing::warn!(
            trace_id = %hex::encode(call.trace_id),
            "LLM call recorded without its conversation: {why}"
        );
    }
    export
}

pub(super) async fn store_export(
    ingest: &Ingest,
    export: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    if let Err(e) = ingest.export(export, None).await {
        tracing::warn!(error = %e, "LLM call not recorded");
    }
}

pub(super) fn lock(c: &Mutex<Captured>) -> std::sync::MutexGuard<'_, Captured> {
    c.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Captured {
    /// Appends what fits under `limit` bytes.
    pub(super) fn push(&mut self, data: &[u8], limit: usize) {
        let room = limit.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// At most this much of a recording buffer is set aside before the bytes
/// arrive (from a body's stated length); past it, it grows as they do.
pub(super) const PRESIZE_MAX: usize = 256 << 10;

/// A call being recorded; its span is stored when this is dropped (the call
/// is over then, whichever way it ended).
pub(super) struct Recording {
    call: Option<Call>,
    recorder: Recorder,
    request: Arc<Mutex<Captured>>,
    record_max: usize,
    /// The response's `Content-Length`, when it has one (the server may
    /// stop reading the body once that much is sent).
    expected: Option<u64>,
    seen: u64,
}

impl Recording {
    /// Starts recording `call`, whose request body is captured in `request`.
    pub(super) fn begin(
        call: Call,
        recorder: Recorder,
        request: Arc<Mutex<Captured>>,
        record_max: usize,
    ) -> Recording {
        Recording {
            call: Some(call),
            recorder,
            request,
            record_max,
            expected: None,
            seen: 0,
        }
    }

    /// The upstream's answer began: its status, whether it is an event
    /// stream, and its length when it says.
    pub(super) fn answered(
        &mut self,
        status: hyper::StatusCode,
        headers: &hyper::HeaderMap,
        expected: Option<u64>,
    ) {
        self.expected = expected;
        self.reserve();
        if let Some(call) = &mut self.call {
            call.status = Some(status.as_u16());
            call.event_stream = headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        }
        if expected == Some(0) {
            self.ended(End::Complete);
        }
    }

    pub(super) fn response_chunk(&mut self, data: &[u8]) {
        self.seen += data.len() as u64;
        let used = lock(&self.request).bytes.len();
        if let Some(call) = &mut self.call {
            call.response
                .push(data, self.record_max.saturating_sub(used));
            if self.expected == Some(self.seen) {
                call.end = End::Complete;
            }
        }
    }

    /// Room for the answer as long as it says it is, within what the request
    /// left of the cap and [`PRESIZE_MAX`].
    fn reserve(&mut self) {
        let room = self
            .record_max
            .saturating_sub(lock(&self.request).bytes.len());
        let expected = self
            .expected
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        if let Some(call) = &mut self.call {
            call.response
                .bytes
                .reserve(expected.min(room).min(PRESIZE_MAX));
        }
    }

    pub(super) fn ended(&mut self, end: End) {
        if let Some(call) = &mut self.call {
            call.end = end;
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        call.end_unix_nano = now_unix_nanos();
        call.request = std::mem::take(&mut *lock(&self.request));
        self.recorder.record(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_stops_at_the_limit() {
        let mut c = Captured::default();
        c.push(b"abc", 5);
        assert!(!c.truncated);
        c.push(b"def", 5);
        assert_eq!((c.bytes.as_slice(), c.truncated), (&b"abcde"[..], true));
    }
}
