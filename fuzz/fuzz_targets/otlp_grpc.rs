//! The OTLP/gRPC receiver as `oclagl serve` mounts it
//! (`ingest::grpc::routes`): a request's body through tonic's message
//! framing and decompression (gzip, zstd) under the body limit, the
//! `TraceService/Export` handler (`ExportTraceServiceRequest` decoded from
//! the raw bytes, then `Ingest::export`: span validation, the index summary,
//! the append to a real store in a temporary folder), and the metrics and
//! logs services.
//!
//! The first input byte picks the method (bits 0-1: trace, trace, metrics,
//! logs), the `grpc-encoding` (bits 2-3: none, gzip, zstd, deflate, which
//! oclagl does not accept) and whether the target frames the rest itself
//! (bit 4: the 5-byte gRPC prefix, the message compressed with the chosen
//! encoding), so that the decoders behind the framing see valid messages as
//! well as broken ones; otherwise the rest is the body as sent.
//!
//! What it looks for: panics, overflows, and allocations sized by a number in
//! the input (the frame's length prefix, a decompressed size, field lengths
//! and counts). And on every export the target framed itself: a message that
//! decodes is answered `OK`, with the rejected spans in the partial success
//! and the receiver's counters moved by the spans kept and rejected, and the
//! forwarder's `count_spans` (which walks the stored bytes by hand) counts
//! as many spans as prost decoded; one that does not decode is
//! `INVALID_ARGUMENT`.
#![no_main]

#[path = "../common/grpc_frame.rs"]
mod grpc_frame;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use oclagl::agl::index::RecordSummary;
use oclagl::forward::count_spans;
use oclagl::ingest::{grpc, retain_valid_spans, Counters, Ingest, Limits};
use oclagl::store::Store;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::{Code, Status};
use tower_service::Service;

const PATHS: [&str; 4] = [
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
];
const ENCODINGS: [Option<&str>; 4] = [None, Some("gzip"), Some("zstd"), Some("deflate")];
/// Small, so that compression bombs reach the limit quickly (and above the
/// largest input, so that every message the target frames fits).
const LIMIT: usize = 1 << 20;
/// The store is started afresh once its log holds this much.
const STORE_BYTES: u64 = 4 << 20;

/// A receiver over a store in a folder of its own.
struct Receiver {
    runtime: tokio::runtime::Runtime,
    routes: tonic::service::Routes,
    counters: Arc<Counters>,
    store: Store<RecordSummary>,
    writer: JoinHandle<()>,
    dir: PathBuf,
}

impl Receiver {
    fn start(generation: u32) -> Receiver {
        let dir = std::env::temp_dir().join(format!(
            "oclagl-fuzz-otlp-grpc-{}-{generation}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        // Nobody listens for commits (the view is not under test here).
        let (committed, _) = std::sync::mpsc::sync_channel(1);
        let (store, writer, _) =
            Store::open(&dir, 64 << 20, false, 64, |_, _| {}, committed).expect("open store");
        let counters = Arc::new(Counters::default());
        let limits = Limits {
            max_body: LIMIT,
            max_inflight: 64 << 20,
            queue_wait: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
        };
        let ingest = Arc::new(Ingest::new(store.clone(), limits, counters.clone()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        Receiver {
            runtime,
            routes: grpc::routes(ingest),
            counters,
            store,
            writer,
            dir,
        }
    }

    /// Bytes in the log (one segment: it rolls at 64 MiB).
    fn log_bytes(&self) -> u64 {
        self.store.committed_end().borrow().offset
    }

    fn stop(self) {
        let Receiver {
            routes,
            store,
            writer,
            dir,
            ..
        } = self;
        drop((routes, store));
        let _ = writer.join();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The gRPC status and the answer's message bytes.
    fn call(&mut self, path: &str, encoding: Option<&str>, body: Bytes) -> (Status, Bytes) {
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://oclagl{path}"))
            .version(http::Version::HTTP_2)
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(e) = encoding {
            req = req.header("grpc-encoding", e);
        }
        let req = req.body(Full::new(body)).expect("request");
        let routes = &mut self.routes;
        self.runtime.block_on(async move {
            std::future::poll_fn(|cx| {
                Service::<http::Request<Full<Bytes>>>::poll_ready(routes, cx)
            })
            .await
            .expect("routes are always ready");
            let resp = routes.call(req).await.expect("infallible");
            let head = Status::from_header_map(resp.headers());
            let body = resp.into_body().collect().await.expect("answer body");
            let status = head
                .or_else(|| body.trailers().and_then(Status::from_header_map))
                .expect("a gRPC answer has a status");
            (status, body.to_bytes())
        })
    }
}

static RECEIVER: Mutex<Option<(u32, Receiver)>> = Mutex::new(None);

/// The message of a unary answer (one uncompressed frame).
fn message(mut body: Bytes) -> Bytes {
    assert!(body.len() >= 5, "an OK answer holds a message");
    assert_eq!(body.get_u8(), 0, "the answer is not compressed");
    let len = body.get_u32() as usize;
    assert_eq!(body.len(), len, "the answer is one frame");
    body
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let method = mode as usize & 3;
    let encoding = ENCODINGS[(mode as usize >> 2) & 3];
    let framed = mode & 0x10 != 0;
    let body = if framed {
        grpc_frame::frame(rest, encoding)
    } else {
        Bytes::copy_from_slice(rest)
    };

    let mut guard = RECEIVER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((generation, receiver)) = guard.take_if(|(_, r)| r.log_bytes() > STORE_BYTES) {
        receiver.stop();
        *guard = Some((generation + 1, Receiver::start(generation + 1)));
    }
    let (_, receiver) = guard.get_or_insert_with(|| (0, Receiver::start(0)));
    let (accepted0, rejected0) = (
        receiver.counters.accepted_spans.get(),
        receiver.counters.rejected_spans.get(),
    );
    let (status, answer) = receiver.call(PATHS[method], encoding, body);
    if status.code() == Code::Ok {
        message(answer.clone());
    }
    if !framed || encoding == Some("deflate") {
        return;
    }
    match method {
        0 | 1 => match ExportTraceServiceRequest::decode(rest) {
            Ok(mut request) => {
                assert_eq!(status.code(), Code::Ok, "{status:?}");
                let (kept, rejected) = retain_valid_spans(&mut request);
                assert_eq!(count_spans(rest), (kept + rejected) as u64);
                let answer = ExportTraceServiceResponse::decode(message(answer))
                    .expect("the answer decodes");
                let reported = answer.partial_success.map_or(0, |p| p.rejected_spans);
                assert_eq!(reported, rejected as i64);
                let counters = &receiver.counters;
                assert_eq!(
                    counters.accepted_spans.get() - accepted0,
                    kept as u64
                );
                assert_eq!(
                    counters.rejected_spans.get() - rejected0,
                    rejected as u64
                );
            }
            Err(_) => assert_eq!(status.code(), Code::InvalidArgument, "{status:?}"),
        },
        2 => {
            if ExportMetricsServiceRequest::decode(rest).is_ok() {
                assert_eq!(status.code(), Code::Ok, "{status:?}");
            }
        }
        _ => {}
    }
});
