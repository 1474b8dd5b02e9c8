//! The LLM proxy: an OpenAI-compatible pass-through between a gateway and its
//! model provider that records every model call as a span.
//!
//! It is a receiver like the OTLP ones: what it ingests is the exact request
//! a model received and the answer it gave. Requests under `/v1/` are
//! forwarded to the upstream named by their model (`--llm-upstream
//! <prefix>=<url>`, longest prefix wins) or to the default upstream, with
//! status, headers (hop-by-hop ones aside) and bodies passed through as they
//! stream: nothing is buffered on the way, so server-sent events reach the
//! client as they arrive. `POST /v1/chat/completions` and `POST
//! /v1/responses` are recorded on the side, each body up to the recording
//! cap, and when the call ends the span ([`span`]) goes to the store
//! in-process, a child of the request's `traceparent`. A client that hangs up
//! drops the upstream call with it, and the span records the cancellation.
//! Spans are built and stored from a thread of their own that runs only on
//! idle CPU (the calls that ended meanwhile together, so they share one write
//! and one sync of the store): nothing of the recording runs on the runtime
//! that forwards, or before a call's answer is written, unless the recorder
//! falls 256 calls behind (then calls build their own spans).
//!
//! Two deliberate departures from byte-for-byte transparency: the client's
//! `Accept-Encoding` is not forwarded (so the answer can be recorded; the
//! client then gets it uncompressed), and with model routes configured a
//! request is held until its model is known (at most the cap), since the
//! model is in the body.

pub mod openai;
pub mod span;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use self::openai::Api;
use self::span::{Call, Captured, End};
use super::{now_unix_nanos, Ingest};

/// Where calls go: the default upstream (`prefix` `None`) or the one for
/// models whose name starts with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub prefix: Option<String>,
    /// Base URL; a request for `/v1/<rest>` goes to `<url>/<rest>`.
    pub url: reqwest::Url,
}

/// Parses `--llm-upstream`: `https://host/v1` or `<model-prefix>=https://host/v1`.
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let s = s.trim();
    let (prefix, url) = if s.starts_with("http://") || s.starts_with("https://") {
        (None, s)
    } else {
        match s.split_once('=') {
            Some((p, u)) if !p.is_empty() => (Some(p.to_string()), u.trim()),
            _ => {
                return Err(format!(
                "{s:?} is not an upstream (use https://host/v1 or <model-prefix>=https://host/v1)"
            ))
            }
        }
    };
    let url = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{url} is not an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{url}: an upstream URL takes no query or fragment"));
    }
    Ok(Upstream { prefix, url })
}

/// The upstream as recorded: no user info (it may hold credentials).
fn display_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.as_str().trim_end_matches('/').to_string()
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub upstreams: Vec<Upstream>,
    /// Bytes of request and response body recorded per call, together.
    pub record_max: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the LLM proxy needs at least one --llm-upstream")]
    NoUpstream,
    #[error("cannot set up the LLM proxy's HTTP client: {0}")]
    Client(String),
    #[error("cannot start the LLM proxy's recorder: {0}")]
    Recorder(String),
}

struct Proxy {
    client: reqwest::Client,
    /// Never empty.
    upstreams: Vec<Upstream>,
    by_model: bool,
    record_max: usize,
    recorder: Recorder,
}

/// Calls waiting for their span to be built; past it, a call's span is built
/// on the runtime instead (this bounds the memory of waiting calls).
const RECORDER_QUEUE: usize = 256;

/// Calls stored together at most.
const RECORDER_BATCH: usize = 64;

/// Turns finished calls into spans and hands them to the store.
#[derive(Clone)]
struct Recorder {
    queue: std::sync::mpsc::SyncSender<Call>,
    ingest: Arc<Ingest>,
    runtime: tokio::runtime::Handle,
}

impl Recorder {
    /// Starts the recorder thread; it ends when the last handle is dropped.
    fn start(ingest: Arc<Ingest>) -> Result<Recorder, ProxyError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| ProxyError::Recorder(e.to_string()))?;
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
                        .map(|call| store_export(&store, call.to_export()))
                        .collect();
                    handle.block_on(futures_util::future::join_all(batch));
                }
            })
            .map_err(|e| ProxyError::Recorder(e.to_string()))?;
        Ok(Recorder {
            queue,
            ingest,
            runtime,
        })
    }

    fn record(&self, call: Call) {
        if let Err(full_or_gone) = self.queue.try_send(call) {
            let call = match full_or_gone {
                std::sync::mpsc::TrySendError::Full(c)
                | std::sync::mpsc::TrySendError::Disconnected(c) => c,
            };
            let ingest = self.ingest.clone();
            self.runtime
                .spawn(async move { store_export(&ingest, call.to_export()).await });
        }
    }
}

async fn store_export(
    ingest: &Ingest,
    export: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    if let Err(e) = ingest.export(export, None).await {
        tracing::warn!(error = %e, "LLM call not recorded");
    }
}

/// The upstream for a model: the longest matching prefix, else the default
/// (the one without a prefix, or the first one listed). `None` if there are
/// no upstreams.
fn pick<'a>(upstreams: &'a [Upstream], model: Option<&str>) -> Option<&'a Upstream> {
    model
        .and_then(|m| {
            upstreams
                .iter()
                .filter(|u| u.prefix.as_deref().is_some_and(|p| m.starts_with(p)))
                .max_by_key(|u| u.prefix.as_ref().map_or(0, String::len))
        })
        .or_else(|| upstreams.iter().find(|u| u.prefix.is_none()))
        .or_else(|| upstreams.first())
}

/// The proxy's routes: everything under `/v1/`.
pub fn router(ingest: Arc<Ingest>, config: ProxyConfig) -> Result<Router, ProxyError> {
    if config.upstreams.is_empty() {
        return Err(ProxyError::NoUpstream);
    }
    let client = reqwest::Client::builder()
        // Transparent: redirects and compression are the client's business.
        .redirect(reqwest::redirect::Policy::none())
        .no_gzip()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| ProxyError::Client(e.to_string()))?;
    let proxy = Proxy {
        client,
        by_model: config.upstreams.iter().any(|u| u.prefix.is_some()),
        upstreams: config.upstreams,
        record_max: config.record_max,
        recorder: Recorder::start(ingest)?,
    };
    Ok(Router::new().fallback(forward).with_state(Arc::new(proxy)))
}

/// An OpenAI-style error answer from the proxy itself.
fn error(status: StatusCode, kind: &str, message: String) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": kind}});
    (status, axum::Json(body)).into_response()
}

/// Headers that belong to one connection, not to the message (RFC 9110
/// 7.6.1), including those the `Connection` header names.
fn hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out = vec![
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    for value in headers.get_all(header::CONNECTION) {
        if let Ok(v) = value.to_str() {
            out.extend(
                v.split(',')
                    .filter_map(|n| HeaderName::try_from(n.trim()).ok()),
            );
        }
    }
    out
}

fn end_to_end(headers: &HeaderMap, also_drop: &[HeaderName]) -> HeaderMap {
    let mut out = headers.clone();
    for name in hop_by_hop(headers).iter().chain(also_drop) {
        out.remove(name);
    }
    out
}

/// The caller's span from a W3C `traceparent`: (trace id, span id).
fn traceparent(headers: &HeaderMap) -> Option<([u8; 16], [u8; 8])> {
    let value = headers.get("traceparent")?.to_str().ok()?.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace = hex::decode(parts.next()?).ok()?;
    let span = hex::decode(parts.next()?).ok()?;
    let flags = parts.next()?;
    let version_ok = version.len() == 2 && version != "ff" && hex::decode(version).is_ok();
    if !version_ok || flags.len() != 2 || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace: [u8; 16] = trace.try_into().ok()?;
    let span: [u8; 8] = span.try_into().ok()?;
    (trace != [0; 16] && span != [0; 8]).then_some((trace, span))
}

fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id;
        }
    }
}

/// The message of an error and of its causes (never the URL: a query may
/// hold a key).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn lock(c: &Mutex<Captured>) -> std::sync::MutexGuard<'_, Captured> {
    c.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Captured {
    /// Appends what fits under `limit` bytes.
    fn push(&mut self, data: &[u8], limit: usize) {
        let room = limit.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// A call being recorded; its span is stored when this is dropped (the call
/// is over then, whichever way it ended).
struct Recording {
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
    fn response_chunk(&mut self, data: &[u8]) {
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

    fn ended(&mut self, end: End) {
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

/// The upstream's answer body on its way to the client, recorded on the side.
struct Relay {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>,
    recording: Option<Recording>,
}

impl Stream for Relay {
    type Item = Result<Bytes, reqwest::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.poll_next_unpin(cx));
        if let Some(rec) = &mut self.recording {
            match &item {
                Some(Ok(data)) => rec.response_chunk(data),
                Some(Err(e)) => rec.ended(End::Upstream(format!("the answer broke off: {e}"))),
                None => rec.ended(End::Complete),
            }
        }
        if matches!(item, None | Some(Err(_))) {
            // Store the span now rather than when the server lets go.
            self.recording = None;
        }
        Poll::Ready(item)
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let start = now_unix_nanos();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let Some(rest) = path
        .strip_prefix("/v1")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the LLM proxy serves /v1/…, not {path}"),
        );
    };
    let api = match (&parts.method, rest) {
        (&Method::POST, "/chat/completions") => Some(Api::Chat),
        (&Method::POST, "/responses") => Some(Api::Responses),
        _ => None,
    };
    let empty = http_body::Body::size_hint(&body).exact() == Some(0);
    let captured = Arc::new(Mutex::new(Captured::default()));
    let limit = proxy.record_max;
    let mut incoming = body.into_data_stream();

    // With model routes, hold the request until its model is known.
    let mut head: Vec<Result<Bytes, axum::Error>> = Vec::new();
    let mut model = None;
    if api.is_some() && proxy.by_model {
        loop {
            if lock(&captured).bytes.len() >= limit {
                break;
            }
            match incoming.next().await {
                Some(Ok(data)) => {
                    lock(&captured).push(&data, limit);
                    head.push(Ok(data));
                }
                Some(Err(e)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        format!("cannot read the request body: {e}"),
                    )
                }
                None => break,
            }
        }
        model = openai::model_of(&lock(&captured).bytes);
    }
    let Some(upstream) = pick(&proxy.upstreams, model.as_deref()) else {
        return error(
            StatusCode::BAD_GATEWAY,
            "no_upstream",
            "no upstream configured".into(),
        );
    };
    let base = upstream.url.as_str().trim_end_matches('/');
    let url = match parts.uri.query() {
        Some(q) => format!("{base}{rest}?{q}"),
        None => format!("{base}{rest}"),
    };
    let headers = end_to_end(&parts.headers, &[header::HOST, header::ACCEPT_ENCODING]);
    let mut outgoing = proxy
        .client
        .request(parts.method.clone(), url)
        .headers(headers);
    if !empty || !head.is_empty() {
        let tee = captured.clone();
        let rest_of_body = incoming.inspect(move |chunk| {
            if let (Some(_), Ok(data)) = (api, chunk) {
                lock(&tee).push(data, limit);
            }
        });
        let stream = futures_util::stream::iter(head).chain(rest_of_body);
        outgoing = outgoing.body(reqwest::Body::wrap_stream(stream));
    }

    let mut recording = api.map(|api| {
        let (trace_id, parent_span_id) = match traceparent(&parts.headers) {
            Some((trace, span)) => (trace, Some(span)),
            None => (random_id(), None),
        };
        Recording {
            call: Some(Call {
                api,
                trace_id,
                span_id: random_id(),
                parent_span_id,
                start_unix_nano: start,
                end_unix_nano: start,
                upstream: display_url(&upstream.url),
                path: path.to_string(),
                status: None,
                event_stream: false,
                request: Captured::default(),
                response: Captured::default(),
                end: End::ClientGone,
            }),
            recorder: proxy.recorder.clone(),
            request: captured,
            record_max: limit,
            expected: None,
            seen: 0,
        }
    });

    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => {
            let why = describe(e);
            if let Some(rec) = &mut recording {
                rec.ended(End::Upstream(why.clone()));
            }
            return error(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!(
                    "the LLM proxy cannot reach {}: {why}",
                    display_url(&upstream.url)
                ),
            );
        }
    };
    let status = answer.status();
    let headers = end_to_end(answer.headers(), &[]);
    if let Some(rec) = &mut recording {
        rec.expected = answer.content_length();
        if let Some(call) = &mut rec.call {
            call.status = Some(status.as_u16());
            call.event_stream = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        }
        if rec.expected == Some(0) {
            rec.ended(End::Complete);
        }
    }
    let relay = Relay {
        inner: Box::pin(answer.bytes_stream()),
        recording,
    };
    let mut response = Response::new(Body::from_stream(relay));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn upstreams_parse_and_route_by_longest_prefix() {
        let plain = parse_upstream("https://api.example.com/v1").unwrap();
        assert_eq!(plain.prefix, None);
        let routed = parse_upstream("gpt-=http://127.0.0.1:9/v1/").unwrap();
        assert_eq!(routed.prefix.as_deref(), Some("gpt-"));
        let longer = parse_upstream("gpt-4o=http://127.0.0.1:8/v1").unwrap();
        for bad in [
            "",
            "api.example.com",
            "=http://x/v1",
            "m=ftp://x",
            "http://x/v1?key=1",
            "m=not a url",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad:?}");
        }
        let port = |upstreams: &[Upstream], model| pick(upstreams, model).map(|u| u.url.port());
        let all = [routed.clone(), plain, longer.clone()];
        assert_eq!(port(&all, Some("gpt-4o-mini")), Some(Some(8)));
        assert_eq!(port(&all, Some("gpt-3.5")), Some(Some(9)));
        assert_eq!(port(&all, Some("claude")), Some(None));
        assert_eq!(port(&all, None), Some(None));
        assert_eq!(port(&[routed, longer], None), Some(Some(9)));
        assert_eq!(port(&[], None), None);
        assert_eq!(
            display_url(&reqwest::Url::parse("https://user:pw@h.example/v1/").unwrap()),
            "https://h.example/v1"
        );
    }

    #[test]
    fn traceparent_is_checked() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_str(v).unwrap());
            traceparent(&h)
        };
        let ok = with("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(hex::encode(ok.0), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(hex::encode(ok.1), "b7ad6b7169203331");
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd-b7ad6b7169203331-01",
            "garbage",
        ] {
            assert_eq!(with(bad), None, "{bad}");
        }
        // A later version may add fields.
        assert!(with("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz").is_some());
        assert_eq!(traceparent(&HeaderMap::new()), None);
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let out = end_to_end(&h, &[header::ACCEPT_ENCODING]);
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["authorization"]);
    }

    #[test]
    fn capture_stops_at_the_limit() {
        let mut c = Captured::default();
        c.push(b"abc", 5);
        assert!(!c.truncated);
        c.push(b"def", 5);
        assert_eq!((c.bytes.as_slice(), c.truncated), (&b"abcde"[..], true));
    }
}
