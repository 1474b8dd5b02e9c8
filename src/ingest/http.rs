//! OTLP/HTTP receiver: `POST /v1/traces` (stored), `/v1/metrics` and
//! `/v1/logs` (decoded, counted, not stored), and `GET /health`; and
//! `POST /v1/rollouts/{id}/reward` (an AGL reward span, stored like any
//! other).

use std::io::Read;
use std::sync::atomic::Ordering;
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
use crate::rollout::reward::{annotation_request, Parent, RewardBody, Rewarded};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    Protobuf,
    Json,
}

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
        "accepted_spans": c.accepted_spans.load(Ordering::Relaxed),
        "rejected_spans": c.rejected_spans.load(Ordering::Relaxed),
        "throttled_requests": c.throttled_requests.load(Ordering::Relaxed),
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
            match ingest.reserve(admission, seen).await {
                Ok(()) => buf.extend_from_slice(&data),
                Err(e) => {
                    *admission = ingest.admission();
                    buf = BytesMut::new();
                    throttled = Some(e);
                }
            }
        }
        match throttled {
            Some(e) => Err(e),
            None => Ok(buf.freeze()),
        }
    };
    let raw = tokio::time::timeout(ingest.limits.body_timeout, read)
        .await
        .map_err(|_| IngestError::BodyTimeout)??;
    if !gzip {
        return Ok(raw);
    }
    let mut decoder = flate2::read::MultiGzDecoder::new(&raw[..]);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = decoder
            .read(&mut chunk)
            .map_err(|e| IngestError::Decode(format!("gzip: {e}")))?;
        if n == 0 {
            break;
        }
        if out.len() + n > limit {
            return Err(IngestError::TooLarge { limit });
        }
        ingest.reserve(admission, raw.len() + out.len() + n).await?;
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Bytes::from(out))
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
            ingest
                .counters
                .metrics_requests
                .fetch_add(1, Ordering::Relaxed);
            encode(encoding, &ExportMetricsServiceResponse::default())
        }
        Err((encoding, e)) => error_response(encoding, &e),
    }
}

async fn logs(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let mut admission = ingest.admission();
    match receive::<ExportLogsServiceRequest>(&ingest, &headers, body, &mut admission).await {
        Ok((encoding, _, _)) => {
            ingest
                .counters
                .logs_requests
                .fetch_add(1, Ordering::Relaxed);
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

fn json_error(status: StatusCode, message: String) -> Response {
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
