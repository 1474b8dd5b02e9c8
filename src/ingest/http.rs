//! OTLP/HTTP receiver: `POST /v1/traces` (stored), `/v1/metrics` and
//! `/v1/logs` (decoded, counted, not stored), and `GET /health`; and
//! `POST /v1/rollouts/{id}/reward` (an AGL reward span, stored like any
//! other).

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Admission, Ingest, IngestError, RETRY_AFTER};
use crate::agl::view::Rollouts;
use crate::reward::{annotation_request, Parent, RewardBody, Rewarded};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    Protobuf,
    Json,
}

/// The OTLP/HTTP routes (`/v1/traces`, and `/v1/metrics` and `/v1/logs`, which
/// are counted only) and `/health`, over the shared intake.
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::disable())
        .with_state(ingest)
}

async fn health(State(ingest): State<Arc<Ingest>>) -> Json<serde_json::Value> {
    let c = &ingest.counters;
    Json(serde_json::json!({
        "status": "ok",
        "accepted_spans": c.accepted_spans.get(),
        "rejected_spans": c.rejected_spans.get(),
        "throttled_requests": c.throttled_requests.get(),
    }))
}

fn media_type(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/x-protobuf") {
        Ok(Encoding::Protobuf)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Ok(Encoding::Json)
    } else {
        Err(IngestError::Unsupported {
            what: "content type",
            value: value.into(),
        })
    }
}

fn gzipped(headers: &HeaderMap) -> Result<bool, IngestError> {
    let value = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match value.as_deref() {
        None | Some("") | Some("identity") => Ok(false),
        Some("gzip") | Some("x-gzip") => Ok(true),
        Some(other) => Err(IngestError::Unsupported {
            what: "content encoding",
            value: other.into(),
        }),
    }
}

/// Most a multi-piece body's buffer is sized up front from Content-Length.
const PRESIZE_MAX: usize = 1 << 20;

/// Reads the whole body (decompressed), charging it to the in-flight budget.
async fn read_body(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
    admission: &mut Admission,
) -> Result<Bytes, IngestError> {
    let limit = ingest.limits.max_body;
    let gzip = gzipped(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(IngestError::TooLarge { limit });
    }
    let read = async {
        let mut body = body;
        // A body that arrives in one piece is kept as it is; one in several
        // pieces is copied into one buffer, sized from Content-Length (up
        // to PRESIZE_MAX) so that it is not regrown piece by piece.
        let mut first: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        // Once throttled, the rest of the body is read and dropped, so the
        // client gets its 429 on a healthy connection instead of a reset.
        let mut throttled = None;
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| IngestError::Decode(format!("body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len();
            if seen > limit {
                return Err(IngestError::TooLarge { limit });
            }
            if throttled.is_some() {
                continue;
            }
            // The second piece: the buffer for them all is allocated now.
            let presize = first.as_ref().map_or(0, |_| {
                declared.map_or(0, |n| n.min(PRESIZE_MAX as u64) as usize)
            });
            match ingest.reserve(admission, seen.max(presize)).await {
                Ok(()) if first.is_none() && buf.is_empty() => first = Some(data),
                Ok(()) => {
                    if let Some(first) = first.take() {
                        buf.reserve(presize.max(seen));
                        buf.extend_from_slice(&first);
                    }
                    buf.extend_from_slice(&data);
                }
                Err(e) => {
                    *admission = ingest.admission();
                    (first, buf) = (None, BytesMut::new());
                    throttled = Some(e);
                }
            }
        }
        match (throttled, first) {
            (Some(e), _) => Err(e),
            (None, Some(first)) => Ok(first),
            (None, None) => Ok(buf.freeze()),
        }
    };
    let raw = tokio::time::timeout(ingest.limits.body_timeout, read)
        .await
        .map_err(|_| IngestError::BodyTimeout)??;
    if !gzip {
        return Ok(raw);
    }
    let mut gunzip = Gunzip::new(&raw, limit);
    loop {
        let n = gunzip.read()?;
        if n == 0 {
            return Ok(gunzip.finish());
        }
        ingest
            .reserve(admission, raw.len() + gunzip.len() + n)
            .await?;
        gunzip.keep(n);
    }
}

/// A gzip body inflated piece by piece, so that each piece can be charged to
/// the in-flight budget before it is kept; never more than `limit` bytes.
struct Gunzip<'a> {
    decoder: flate2::read::MultiGzDecoder<&'a [u8]>,
    piece: Vec<u8>,
    out: Vec<u8>,
    limit: usize,
}

impl<'a> Gunzip<'a> {
    fn new(raw: &'a [u8], limit: usize) -> Gunzip<'a> {
        Gunzip {
            decoder: flate2::read::MultiGzDecoder::new(raw),
            piece: vec![0u8; 64 * 1024],
            out: Vec::new(),
            limit,
        }
    }

    /// Inflates the next piece without keeping it; its length, 0 at the end.
    fn read(&mut self) -> Result<usize, IngestError> {
        let n = self
            .decoder
            .read(&mut self.piece)
            .map_err(|e| IngestError::Decode(format!("gzip: {e}")))?;
        if self.out.len() + n > self.limit {
            return Err(IngestError::TooLarge { limit: self.limit });
        }
        Ok(n)
    }

    /// Keeps the first `n` bytes of the piece just read.
    fn keep(&mut self, n: usize) {
        self.out.extend_from_slice(&self.piece[..n]);
    }

    fn len(&self) -> usize {
        self.out.len()
    }

    fn finish(self) -> Bytes {
        Bytes::from(self.out)
    }
}

/// What the `/v1/traces` handler makes of a body already read: the content
/// type and encoding checks, gzip and the decode, without the in-flight
/// budget or the store (the fuzz target `otlp_http` drives this).
pub fn decode_traces(
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
) -> Result<ExportTraceServiceRequest, IngestError> {
    let encoding = media_type(headers)?;
    if body.len() > limit {
        return Err(IngestError::TooLarge { limit });
    }
    let body = if gzipped(headers)? {
        let mut gunzip = Gunzip::new(&body, limit);
        loop {
            match gunzip.read()? {
                0 => break gunzip.finish(),
                n => gunzip.keep(n),
            }
        }
    } else {
        body
    };
    decode(encoding, &body)
}

fn decode<T: Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &Bytes,
) -> Result<T, IngestError> {
    match encoding {
        Encoding::Protobuf => {
            T::decode(body.clone()).map_err(|e| IngestError::Decode(format!("protobuf: {e}")))
        }
        Encoding::Json => {
            // serde would also read a struct from a JSON array; an OTLP/JSON
            // request is an object.
            if body.trim_ascii_start().first() != Some(&b'{') {
                return Err(IngestError::Decode(
                    "OTLP/JSON: the body is not a JSON object".into(),
                ));
            }
            serde_json::from_slice(body).map_err(|e| IngestError::Decode(format!("OTLP/JSON: {e}")))
        }
    }
}

fn encode<T: Message + Serialize>(encoding: Encoding, msg: &T) -> Response {
    let (ct, body) = match encoding {
        Encoding::Protobuf => ("application/x-protobuf", msg.encode_to_vec()),
        Encoding::Json => (
            "application/json",
            serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec()),
        ),
    };
    ([(header::CONTENT_TYPE, ct)], body).into_response()
}

/// An error answer: a `google.rpc.Status` in the request's encoding.
fn error_response(encoding: Encoding, err: &IngestError) -> Response {
    let (status, code) = match err {
        IngestError::Decode(_) => (StatusCode::BAD_REQUEST, 3),
        IngestError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, 11),
        IngestError::Unsupported { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 3),
        IngestError::Busy => (StatusCode::TOO_MANY_REQUESTS, 8),
        IngestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, 14),
        IngestError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, 4),
    };
    let message = err.to_string();
    let (ct, body) = match encoding {
        Encoding::Protobuf => (
            "application/x-protobuf",
            tonic_types::pb::Status {
                code,
                message,
                details: vec![],
            }
            .encode_to_vec(),
        ),
        Encoding::Json => (
            "application/json",
            serde_json::to_vec(&serde_json::json!({ "code": code, "message": message }))
                .unwrap_or_default(),
        ),
    };
    let mut response = (status, [(header::CONTENT_TYPE, ct)], body).into_response();
    if matches!(err, IngestError::Busy | IngestError::Unavailable(_)) {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER.as_secs()),
        );
    }
    response
}

/// The steps every signal shares: content type, body, decode.
async fn receive<T: Message + Default + DeserializeOwned>(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
    admission: &mut Admission,
) -> Result<(Encoding, T, Bytes), (Encoding, IngestError)> {
    let encoding = media_type(headers).map_err(|e| (Encoding::Protobuf, e))?;
    let bytes = read_body(ingest, headers, body, admission)
        .await
        .map_err(|e| (encoding, e))?;
    let msg = decode::<T>(encoding, &bytes).map_err(|e| (encoding, e))?;
    Ok((encoding, msg, bytes))
}

async fn traces(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let mut admission = ingest.admission();
    let (encoding, request, bytes) =
        match receive::<ExportTraceServiceRequest>(&ingest, &headers, body, &mut admission).await {
            Ok(x) => x,
            Err((encoding, e)) => return error_response(encoding, &e),
        };
    let raw = (encoding == Encoding::Protobuf).then_some(bytes);
    match ingest.export(request, raw).await {
        Ok(accepted) => encode(encoding, &accepted.into_response()),
        Err(e) => error_response(encoding, &e),
    }
}

async fn metrics(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let mut admission = ingest.admission();
    match receive::<ExportMetricsServiceRequest>(&ingest, &headers, body, &mut admission).await {
        Ok((encoding, _, _)) => {
            ingest.counters.metrics_requests.inc();
            encode(encoding, &ExportMetricsServiceResponse::default())
        }
        Err((encoding, e)) => error_response(encoding, &e),
    }
}

async fn logs(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let mut admission = ingest.admission();
    match receive::<ExportLogsServiceRequest>(&ingest, &headers, body, &mut admission).await {
        Ok((encoding, _, _)) => {
            ingest.counters.logs_requests.inc();
            encode(encoding, &ExportLogsServiceResponse::default())
        }
        Err((encoding, e)) => error_response(encoding, &e),
    }
}

/// State of the reward endpoint: the receivers and the view's rollouts.
#[derive(Clone)]
struct RewardState {
    ingest: Arc<Ingest>,
    rollouts: Rollouts,
}

/// Largest reward request body.
const MAX_REWARD_BODY: usize = 64 << 10;

/// `POST /v1/rollouts/{id}/reward`: stores an AGL reward span for a rollout
/// the sidecar knows (404 for any other).
pub fn reward_router(ingest: Arc<Ingest>, rollouts: Rollouts) -> Router {
    Router::new()
        .route("/v1/rollouts/{id}/reward", post(reward))
        .layer(DefaultBodyLimit::max(MAX_REWARD_BODY))
        .with_state(RewardState { ingest, rollouts })
}

/// A JSON error answer, `{"error": message}`, of the sidecar's endpoints.
pub(crate) fn json_error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn reward(State(state): State<RewardState>, Path(id): Path<String>, body: Bytes) -> Response {
    let body: RewardBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a reward ({e}): send {{\"value\": 1.0}} or {{\"rewards\": [{{\"name\": \"…\", \"value\": 1.0}}]}}"),
            )
        }
    };
    let rewards = match body.rewards() {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let rollouts = state.rollouts.clone();
    let lookup = id.clone();
    let trace = match tokio::task::spawn_blocking(move || rollouts.trace_file(&lookup)).await {
        Ok(Some(t)) => t,
        Ok(None) => return json_error(StatusCode::NOT_FOUND, format!("rollout {id} not found")),
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let attempt_id = body.attempt_id.clone().unwrap_or(trace.attempt_id);
    // Under the root span (else any span), so the reward joins the
    // rollout's trace and is never taken for a root itself.
    let parent = trace
        .spans
        .iter()
        .find(|s| s.parent_id.is_none())
        .or(trace.spans.first())
        .and_then(|s| {
            Some(Parent {
                trace_id: hex::decode(&s.trace_id).ok()?.try_into().ok()?,
                span_id: hex::decode(&s.span_id).ok()?.try_into().ok()?,
            })
        });
    let request = annotation_request(&id, &attempt_id, parent, &rewards);
    match state.ingest.export(request, None).await {
        Ok(_) => Json(Rewarded {
            rollout_id: id,
            attempt_id,
            rewards,
        })
        .into_response(),
        Err(e) => {
            let status = match e {
                IngestError::Busy => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            json_error(status, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn headers(content_type: &str, encoding: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        if let Some(e) = encoding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
        }
        h
    }

    fn gzip(bytes: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        Bytes::from(enc.finish().unwrap())
    }

    fn one_span() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "s".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn decode_traces_reads_protobuf_json_and_gzip() {
        let request = one_span();
        let proto = Bytes::from(request.encode_to_vec());
        let json = Bytes::from(serde_json::to_vec(&request).unwrap());
        let pb = headers("application/x-protobuf", None);
        assert_eq!(decode_traces(&pb, proto.clone(), 1 << 20).unwrap(), request);
        let gz = headers("application/x-protobuf", Some("gzip"));
        assert_eq!(decode_traces(&gz, gzip(&proto), 1 << 20).unwrap(), request);
        let js = headers("application/json; charset=utf-8", Some("identity"));
        assert_eq!(decode_traces(&js, json, 1 << 20).unwrap(), request);
    }

    #[test]
    fn decode_traces_refuses_what_the_handler_refuses() {
        let proto = Bytes::from(one_span().encode_to_vec());
        let text = headers("text/plain", None);
        assert!(matches!(
            decode_traces(&text, proto.clone(), 1 << 20),
            Err(IngestError::Unsupported { .. })
        ));
        let brotli = headers("application/x-protobuf", Some("br"));
        assert!(matches!(
            decode_traces(&brotli, proto.clone(), 1 << 20),
            Err(IngestError::Unsupported { .. })
        ));
        // A gzip bomb: 4 MiB of zeros in a few KiB stops at the limit.
        let bomb = gzip(&vec![0u8; 4 << 20]);
        assert!(bomb.len() < 64 << 10);
        let gz = headers("application/x-protobuf", Some("gzip"));
        assert!(matches!(
            decode_traces(&gz, bomb, 1 << 20),
            Err(IngestError::TooLarge { .. })
        ));
        let mut corrupt = gzip(&proto).to_vec();
        let crc = corrupt.len() - 8;
        corrupt[crc] ^= 0xff;
        assert!(matches!(
            decode_traces(&gz, Bytes::from(corrupt), 1 << 20),
            Err(IngestError::Decode(_))
        ));
        let pb = headers("application/x-protobuf", None);
        assert!(matches!(
            decode_traces(&pb, proto.slice(..proto.len() - 1), 1 << 20),
            Err(IngestError::Decode(_))
        ));
    }
}
