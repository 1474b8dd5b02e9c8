//! The calls of a rollout bound to Agent Lightning v1: they go to its AGL
//! per-rollout proxy with the AGL key, whole (AGL reads them whole too).
//!
//! AGL's proxy refuses `"stream": true` (400), so a chat call that asks for a
//! stream is sent with `"stream": false` and without `stream_options`, and
//! its JSON answer goes back to the client as the `chat.completion.chunk`
//! events a streaming provider would have sent, then `[DONE]`: the client's
//! first byte then comes with the whole answer. The call is recorded as it
//! was exchanged with AGL (the request sent, the JSON answer).
//!
//! While AGL is paused for a weight update its proxy answers 429 with
//! `Retry-After` and `X-Agl-Paused: true`: the call waits as long as it says
//! and is sent again, for `--llm-agl-max-pause` in all; past that, and for
//! every other answer of AGL, the client gets what AGL answered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::binding::Binding;
use super::body::{error, Answer, Outgoing, Source};
use super::headers::{strip_hop_by_hop, to_upstream};
use super::recorder::{Recording, PRESIZE_MAX};
use super::span::{Call, Captured, End};
use super::{upstream_uri, Proxy};
use crate::conversation::openai::{self, Api};
use crate::util::error_chain;
use crate::util::ids::random_id;

/// The longest single wait of a pause (a `Retry-After` beyond it is read as
/// this, so a resumed AGL is noticed soon).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// What is known of a bound call before its body is read.
pub(super) struct BoundCall<'a> {
    pub(super) binding: &'a Binding,
    /// The caller's trace and span.
    pub(super) parent: ([u8; 16], [u8; 8]),
    /// The path after `/v1`.
    pub(super) rest: &'a str,
    pub(super) api: Option<Api>,
    pub(super) path: &'a str,
    pub(super) start: u64,
}

/// Reads a request body whole, up to `limit` bytes; else the status and
/// message of the answer that says why not.
async fn read_all(mut body: Incoming, limit: usize) -> Result<Bytes, (StatusCode, String)> {
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(limit);
    let mut bytes = Vec::with_capacity(expected.min(limit).min(PRESIZE_MAX));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > limit {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request is larger than --llm-record-max ({limit} bytes): a call of a rollout bound to AGL is read whole; raise --llm-record-max"),
                ));
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(bytes))
}

/// How long AGL asks to wait, when its answer says it is paused.
fn paused<B>(answer: &Response<B>) -> Option<Duration> {
    let headers = answer.headers();
    let is_paused = answer.status() == StatusCode::TOO_MANY_REQUESTS
        && headers
            .get("x-agl-paused")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    is_paused.then(|| {
        headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::util::retry_after)
            .unwrap_or(Duration::from_secs(1))
            .min(MAX_RETRY_AFTER)
            .max(Duration::from_millis(100))
    })
}

/// Forwards a call of a bound rollout to its AGL proxy.
pub(super) async fn forward(
    proxy: &Proxy,
    call: BoundCall<'_>,
    parts: hyper::http::request::Parts,
    body: Incoming,
) -> Response<Answer> {
    let limit = proxy.record_max;
    let request = match read_all(body, limit).await {
        Ok(bytes) => bytes,
        Err((status, message)) => return error(status, "invalid_request_error", message),
    };
    let destream = match call.api {
        Some(Api::Chat) => openai::without_streaming(&request),
        _ => None,
    };
    let (request, include_usage) = match destream {
        Some((rewritten, usage)) => (Bytes::from(rewritten), Some(usage)),
        None => (request, None),
    };
    let base = &call.binding.base_url;
    let (uri, route) = match upstream_uri(base, call.rest, parts.uri.query()) {
        Ok(uri) => match proxy.agl_route(&uri) {
            Ok(route) => (uri, route),
            Err(e) => {
                let message = format!("cannot reach AGL at {base}: {e}");
                return error(StatusCode::BAD_GATEWAY, "upstream_unreachable", message);
            }
        },
        Err(e) => {
            let message = format!("cannot make the AGL URL: {e}");
            return error(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        }
    };
    let mut headers = parts.headers;
    to_upstream(&mut headers, None, route.proxy_auth.as_ref());
    // The body may be rewritten; the provider's key is not AGL's.
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::AUTHORIZATION);
    headers.remove("x-api-key");
    if !call.binding.key.is_empty() {
        let bearer = format!("Bearer {}", call.binding.key.expose());
        if let Ok(mut value) = HeaderValue::try_from(bearer) {
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
    }
    let mut recording = call.api.map(|api| {
        let (trace_id, parent_span_id) = call.parent;
        let captured = Arc::new(Mutex::new(Captured {
            bytes: request.to_vec(),
            truncated: false,
        }));
        let recorded = Call {
            parent_span_id: Some(parent_span_id),
            upstream: base.clone(),
            path: call.path.to_string(),
            ..Call::begin(api, trace_id, random_id(), call.start)
        };
        Recording::begin(recorded, proxy.recorder.clone(), captured, limit)
    });

    let mut waited = Duration::ZERO;
    let answer = loop {
        let mut outgoing = Request::new(Outgoing {
            held: VecDeque::from([Frame::data(request.clone())]),
            rest: None,
            record: None,
        });
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = uri.clone();
        *outgoing.headers_mut() = headers.clone();
        let answer = match route.client.request(outgoing).await {
            Ok(answer) => answer,
            Err(e) => {
                let why = error_chain(&e);
                if let Some(rec) = &mut recording {
                    rec.ended(End::Upstream(why.clone()));
                }
                let message = format!("the LLM proxy cannot reach AGL at {base}: {why}");
                return error(StatusCode::BAD_GATEWAY, "upstream_unreachable", message);
            }
        };
        let Some(wait) = paused(&answer) else {
            break answer;
        };
        let trace_id = hex::encode(call.parent.0);
        if waited >= proxy.max_pause {
            tracing::warn!(%trace_id, "AGL stayed paused past --llm-agl-max-pause ({:?}): the call gets its 429", proxy.max_pause);
            break answer;
        }
        if waited.is_zero() {
            tracing::info!(%trace_id, "AGL is paused (a weight update): the model call waits and is sent again");
        }
        // Read to its end, so the connection is used again.
        let _ = answer.into_body().collect().await;
        let wait = wait.min(proxy.max_pause - waited);
        tokio::time::sleep(wait).await;
        waited += wait;
    };
    let (mut head, upstream) = answer.into_parts();
    strip_hop_by_hop(&mut head.headers);
    if let Some(rec) = &mut recording {
        rec.answered(head.status, &head.headers, upstream.size_hint().exact());
    }
    match include_usage {
        Some(usage) if head.status.is_success() => as_stream(upstream, recording, usage).await,
        _ => {
            let mut response = Response::new(Answer {
                from: Source::Upstream(upstream),
                recording,
            });
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            response
        }
    }
}

/// AGL's JSON answer, recorded, and sent on as the event stream the client
/// asked for.
async fn as_stream(
    upstream: Incoming,
    mut recording: Option<Recording>,
    include_usage: bool,
) -> Response<Answer> {
    let bytes = match upstream.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let why = format!("the answer broke off: {e}");
            if let Some(rec) = &mut recording {
                rec.ended(End::Upstream(why.clone()));
            }
            return error(StatusCode::BAD_GATEWAY, "upstream_error", why);
        }
    };
    if let Some(rec) = &mut recording {
        rec.response_chunk(&bytes);
        rec.ended(End::Complete);
    }
    // The call is over: its span goes to the recorder now.
    drop(recording);
    let events = serde_json::from_slice(&bytes)
        .map_err(|e| format!("not JSON: {e}"))
        .and_then(|v| openai::chat_chunks(&v, include_usage).map_err(|e| e.to_string()));
    match events {
        Ok(events) => {
            let mut response = Response::new(Answer {
                from: Source::Proxy(Some(Bytes::from(events))),
                recording: None,
            });
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("AGL's answer is not a chat completion ({e}), so it cannot be streamed back"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_agl_pauses_are_waited_out_for_as_long_as_they_say() {
        // A paused answer needs both the 429 and the header.
        let answer = |status: u16, paused: Option<&str>, after: Option<&str>| {
            let mut b = Response::builder().status(status);
            if let Some(p) = paused {
                b = b.header("x-agl-paused", p);
            }
            if let Some(a) = after {
                b = b.header("retry-after", a);
            }
            b.body(()).unwrap()
        };
        let wait = |r: Response<()>| paused(&r);
        assert_eq!(
            wait(answer(429, Some("true"), Some("5"))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            wait(answer(429, Some("True"), None)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            wait(answer(429, Some("true"), Some("0"))),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            wait(answer(429, Some("true"), Some("9999"))),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(wait(answer(429, None, Some("5"))), None);
        assert_eq!(wait(answer(503, Some("true"), Some("5"))), None);
    }
}
