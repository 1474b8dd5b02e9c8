//! A rollout's trace file, built from the exports in the store that hold
//! its spans.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

use crate::agl::index::{derived_attempt_id, fallback_attempt_id, Rollout};
use crate::agl::span::{self, flatten_attributes, str_attr, Resource, SpanIds};
use crate::agl::trace_file::TraceFile;
use crate::semconv::TASK_INPUT;
use crate::store::{Pos, Record, WalReader};

/// The export a store record holds; `None`, logged, when it cannot be read.
pub(super) fn read_export(
    reader: &mut WalReader,
    pos: Pos,
) -> Option<Arc<ExportTraceServiceRequest>> {
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
