//! OTLP receivers (gRPC and HTTP) and what they share: admission control,
//! span validation, and the hand-off to the durable store.
//!
//! Memory is bounded by one budget of in-flight bytes: a request holds its
//! share from the moment its body is read until its spans are on disk. A
//! request that cannot get its share within `queue_wait` is turned away as
//! throttled (HTTP 429 / gRPC `RESOURCE_EXHAUSTED`, retry after a second);
//! a store that fails to write answers 503 / `UNAVAILABLE`.
//!
//! The LLM proxy ([`proxy`]) is a receiver too: it records the model calls
//! it forwards as spans and hands them to [`Ingest::export`] in-process.

pub mod auth;
pub mod grpc;
pub mod http;
pub mod proxy;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::agl::index::{summarize, RecordSummary};
use crate::store::{Store, StoreError};
use crate::util::clock::now_unix_nanos;

/// How long a throttled client is asked to wait before retrying.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why an export was not stored; each maps to an HTTP status and a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not a valid OTLP request (400, INVALID_ARGUMENT).
    #[error("cannot decode the request body: {0}")]
    Decode(String),
    /// The body is over `--max-body`, compressed or decompressed (413).
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request uses an encoding or content type the receivers do not take.
    #[error("unsupported {what}: {value:?}")]
    Unsupported {
        /// What is unsupported (`Content-Encoding`, `Content-Type`).
        what: &'static str,
        /// The value the request sent.
        value: String,
    },
    /// No room in the in-flight budget within `--queue-wait` (429,
    /// RESOURCE_EXHAUSTED).
    #[error("the server is busy; retry later")]
    Busy,
    /// The store cannot take data: shutting down, or a write failed (503,
    /// UNAVAILABLE).
    #[error("the store cannot accept data now: {0}")]
    Unavailable(String),
    /// Reading the body took longer than `--body-timeout` (408).
    #[error("timed out reading the request body")]
    BodyTimeout,
}

/// Counters of the receivers, shared by both protocols (and the LLM proxy).
#[derive(Debug, Default)]
pub struct Counters {
    /// Spans stored.
    pub accepted_spans: Counter,
    /// Spans rejected for bad ids (OTLP partial success).
    pub rejected_spans: Counter,
    /// Requests throttled: 429 / RESOURCE_EXHAUSTED.
    pub throttled_requests: Counter,
    /// Requests the store could not take: 503 / UNAVAILABLE.
    pub failed_requests: Counter,
    /// OTLP metrics requests, counted and not stored.
    pub metrics_requests: Counter,
    /// OTLP logs requests, counted and not stored.
    pub logs_requests: Counter,
    /// Model calls the LLM proxy recorded (with their conversation or not).
    pub recorded_llm_calls: Counter,
    /// Model calls the LLM proxy recorded without their conversation.
    pub unrecorded_llm_calls: Counter,
}

impl Counters {
    /// Registers the counters for `/metrics` (each sample's name ends in
    /// `_total`).
    pub fn register(&self, registry: &mut Registry) {
        // The registry ends each help text with a period.
        let series = [
            (
                "oclagl_receiver_accepted_spans",
                "Spans stored",
                &self.accepted_spans,
            ),
            (
                "oclagl_receiver_rejected_spans",
                "Spans rejected for bad ids (partial success)",
                &self.rejected_spans,
            ),
            (
                "oclagl_receiver_throttled_requests",
                "Requests answered 429/RESOURCE_EXHAUSTED",
                &self.throttled_requests,
            ),
            (
                "oclagl_receiver_failed_requests",
                "Requests the store could not take (503/UNAVAILABLE)",
                &self.failed_requests,
            ),
            (
                "oclagl_receiver_metrics_requests",
                "OTLP metrics requests (counted, not stored)",
                &self.metrics_requests,
            ),
            (
                "oclagl_receiver_logs_requests",
                "OTLP logs requests (counted, not stored)",
                &self.logs_requests,
            ),
            (
                "oclagl_llm_proxy_recorded_calls",
                "Model calls the LLM proxy recorded as spans",
                &self.recorded_llm_calls,
            ),
            (
                "oclagl_llm_proxy_unrecorded_calls",
                "Model calls recorded without their conversation (bodies unreadable, \
                 too large to read, or reading them failed); oclagl.llm_proxy.unreadable says why",
                &self.unrecorded_llm_calls,
            ),
        ];
        for (name, help, counter) in series {
            registry.register(name, help, counter.clone());
        }
    }
}

/// Limits of the receivers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, before and after decompression.
    pub max_body: usize,
    /// Bytes of requests in flight (read, queued, being written) at once.
    pub max_inflight: usize,
    /// How long a request may wait for room before it is throttled.
    pub queue_wait: Duration,
    /// How long reading one request body may take.
    pub body_timeout: Duration,
}

/// What a successful export reports back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Spans rejected for bad ids (0 when all were stored).
    pub rejected_spans: i64,
    /// Why they were rejected.
    pub error_message: String,
}

impl Accepted {
    /// The OTLP answer: `partial_success` only when spans were rejected.
    pub fn into_response(self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.rejected_spans > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: self.rejected_spans,
                error_message: self.error_message,
            }),
        }
    }
}

/// The receivers' shared intake: checks limits, validates exports and appends
/// them to the store.
pub struct Ingest {
    store: Store<RecordSummary>,
    budget: Arc<Semaphore>,
    budget_kib: u32,
    /// The limits the receivers enforce.
    pub limits: Limits,
    /// Counters shown on `/metrics`.
    pub counters: Arc<Counters>,
}

/// Reserved room in the in-flight budget; released when dropped.
pub struct Admission {
    permit: Option<OwnedSemaphorePermit>,
    kib: u32,
}

impl Ingest {
    /// An intake writing to `store`, with an in-flight budget of
    /// `limits.max_inflight`.
    pub fn new(store: Store<RecordSummary>, limits: Limits, counters: Arc<Counters>) -> Ingest {
        let budget_kib = (limits.max_inflight / 1024).clamp(1, u32::MAX as usize >> 1) as u32;
        Ingest {
            store,
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
            limits,
            counters,
        }
    }

    /// An empty reservation, to grow with [`Ingest::reserve`].
    pub fn admission(&self) -> Admission {
        Admission {
            permit: None,
            kib: 0,
        }
    }

    /// Grows `admission` to cover `bytes`, waiting at most `queue_wait`.
    pub async fn reserve(
        &self,
        admission: &mut Admission,
        bytes: usize,
    ) -> Result<(), IngestError> {
        let want = (bytes.div_ceil(1024).max(1) as u64).min(self.budget_kib as u64) as u32;
        if want <= admission.kib {
            return Ok(());
        }
        let more = want - admission.kib;
        let acquired = tokio::time::timeout(
            self.limits.queue_wait,
            self.budget.clone().acquire_many_owned(more),
        )
        .await;
        let permit = match acquired {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(IngestError::Unavailable("shutting down".into())),
            Err(_) => {
                self.counters.throttled_requests.inc();
                return Err(IngestError::Busy);
            }
        };
        match &mut admission.permit {
            Some(p) => p.merge(permit),
            None => admission.permit = Some(permit),
        }
        admission.kib = want;
        Ok(())
    }

    /// Validates an export, stores its valid spans durably, and reports the
    /// rejected ones. `raw` is the request's protobuf encoding when the caller
    /// has it (saves re-encoding when nothing is rejected).
    pub async fn export(
        &self,
        mut request: ExportTraceServiceRequest,
        raw: Option<Bytes>,
    ) -> Result<Accepted, IngestError> {
        let (kept, rejected) = retain_valid_spans(&mut request);
        let accepted = Accepted {
            rejected_spans: rejected as i64,
            error_message: if rejected > 0 {
                format!("{rejected} span(s) rejected: trace_id must be 16 bytes and span_id 8 bytes, not all zero; parent_span_id empty or 8 bytes")
            } else {
                String::new()
            },
        };
        self.counters.rejected_spans.inc_by(rejected as u64);
        if kept == 0 {
            return Ok(accepted);
        }
        let bytes = match raw {
            Some(raw) if rejected == 0 => raw,
            _ => Bytes::from(request.encode_to_vec()),
        };
        let summary = summarize(&request);
        drop(request);
        match self.store.append(now_unix_nanos(), bytes, summary).await {
            Ok(_) => {
                self.counters.accepted_spans.inc_by(kept as u64);
                Ok(accepted)
            }
            Err(e) => {
                self.counters.failed_requests.inc();
                Err(IngestError::Unavailable(match e {
                    StoreError::Closed => "shutting down".into(),
                    other => other.to_string(),
                }))
            }
        }
    }
}

fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|&b| b != 0)
}

/// Drops spans whose ids are malformed; returns (kept, rejected).
pub fn retain_valid_spans(request: &mut ExportTraceServiceRequest) -> (usize, usize) {
    let (mut kept, mut rejected) = (0, 0);
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| {
                let ok = valid_id(&span.trace_id, 16)
                    && valid_id(&span.span_id, 8)
                    && (span.parent_span_id.is_empty() || span.parent_span_id.len() == 8);
                if ok {
                    kept += 1;
                } else {
                    rejected += 1;
                }
                ok
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    request
        .resource_spans
        .retain(|rs| !rs.scope_spans.is_empty());
    (kept, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn span(trace: Vec<u8>, id: Vec<u8>, parent: Vec<u8>) -> Span {
        Span {
            trace_id: trace,
            span_id: id,
            parent_span_id: parent,
            ..Default::default()
        }
    }

    #[test]
    fn malformed_ids_are_rejected_individually() {
        let mut req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span(vec![1; 16], vec![1; 8], vec![]),
                        span(vec![1; 16], vec![2; 8], vec![1; 8]),
                        span(vec![0; 16], vec![1; 8], vec![]),
                        span(vec![1; 15], vec![1; 8], vec![]),
                        span(vec![1; 16], vec![0; 8], vec![]),
                        span(vec![1; 16], vec![1; 8], vec![1; 3]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(retain_valid_spans(&mut req), (2, 4));
        let mut none = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(vec![], vec![], vec![])],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(retain_valid_spans(&mut none), (0, 1));
        assert!(none.resource_spans.is_empty());
    }
}
