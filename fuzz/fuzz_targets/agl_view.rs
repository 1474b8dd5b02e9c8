//! The OTLP-to-AGL mapping: a protobuf export request, validated as ingest
//! does, grouped into rollouts by the index, and each rollout's trace file
//! built (`agl::view::build_trace_file`, which maps every span with
//! `agl::span::to_agl`) and serialised as the view writes it.
//!
//! Checked on every file: it serialises, reads back to the same file, export
//! can parse what the view wrote, and its name stays one plain file name.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use oclagl::agl::index::{summarize, Change, Index};
use oclagl::agl::trace_file::{file_name, file_stem, parse_file_name, TraceFile};
use oclagl::agl::view::build_trace_file;
use oclagl::export::read::{self, trace_file::Doc};
use oclagl::ingest::retain_valid_spans;
use oclagl::store::Pos;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

const RECEIVED: u64 = 1_771_000_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(mut request) = ExportTraceServiceRequest::decode(data) else {
        return;
    };
    retain_valid_spans(&mut request);
    let summary = summarize(&request);
    let mut index = Index::default();
    let mut changes = Vec::new();
    let pos = Pos {
        segment: 1,
        offset: 0,
    };
    index.observe(pos, RECEIVED, &summary, &mut changes);
    let requests = [Arc::new(request)];
    // As the view reads them: a rollout touched by one key of the record can
    // be merged into a named one by a later key of the same record.
    let mut touched: Vec<Arc<str>> = Vec::new();
    for change in changes {
        match change {
            Change::Touched(id) => touched.push(id),
            Change::Merged { gone, into, .. } => {
                touched.retain(|id| *id != gone);
                assert!(index.get(&into).is_some(), "a merged-into rollout is indexed");
            }
        }
    }
    for id in touched {
        let rollout = index.get(&id).expect("a touched rollout not merged away is indexed");
        let file = build_trace_file(&id, rollout, &requests);
        assert_eq!(file.span_count, file.spans.len());
        let json = serde_json::to_vec_pretty(&file).expect("a trace file serialises");
        let back: TraceFile = serde_json::from_slice(&json).expect("a trace file reads back");
        assert_eq!(
            serde_json::to_vec_pretty(&back).expect("a trace file serialises"),
            json
        );
        let doc = Doc::parse(&json).expect("export parses every file the view writes");
        assert_eq!(doc.spans.len(), file.spans.len());
        let _ = read::rollout(&doc, &id);
        let name = file_name(&file_stem(&id), RECEIVED);
        assert!(!name.contains('/') && !name.starts_with('.'), "{name:?}");
        assert!(parse_file_name(&name).is_some(), "{name:?}");
    }
});
