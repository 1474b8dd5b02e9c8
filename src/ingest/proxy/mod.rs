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
//! The proxy speaks HTTP through hyper itself, with no framework on the
//! call's path: hyper's server on the listener (HTTP/1.1, and HTTP/2 without
//! TLS), hyper-util's pooled HTTP/1.1 client upstream (`upstream.rs`: TCP
//! with `TCP_NODELAY`, rustls for https, the environment's proxies).
//!
//! Two deliberate departures from byte-for-byte transparency: the client's
//! `Accept-Encoding` is not forwarded (so the answer can be recorded; the
//! client then gets it uncompressed), and with model routes configured a
//! request is held until its model is known (at most the cap), since the
//! model is in the body.

pub mod openai;
pub mod span;
mod upstream;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};

use self::openai::Api;
use self::span::{Call, Captured, End};
use self::upstream::{Clients, Route};
use super::Ingest;
use crate::util::clock::now_unix_nanos;
use crate::util::ids::random_id;

/// Where calls go: the default upstream (`prefix` `None`) or the one for
/// models whose name starts with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub prefix: Option<String>,
    /// Base URL; a request for `/v1/<rest>` goes to `<url>/<rest>`.
    pub url: reqwest::Url,
}

impl AsRef<Upstream> for Upstream {
    fn as_ref(&self) -> &Upstream {
        self
    }
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

/// The `Authorization` the user info of an upstream URL stands for (Basic,
/// percent-decoded), sent when the caller sends none.
fn basic_auth(url: &reqwest::Url) -> Option<HeaderValue> {
    use base64::Engine;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    use crate::util::percent::percent_decode;
    let user = percent_decode(url.username())?;
    let password = match url.password() {
        Some(p) => percent_decode(p)?,
        None => String::new(),
    };
    let credentials = format!("{user}:{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
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

/// An upstream with its client and what its calls need.
struct Target {
    upstream: Upstream,
    /// The URL requests are made from (`<base><rest>`), without user info
    /// or a trailing slash; also what spans record.
    base: String,
    /// From the URL's user info.
    authorization: Option<HeaderValue>,
    route: Route<Outgoing>,
}

impl AsRef<Upstream> for Target {
    fn as_ref(&self) -> &Upstream {
        &self.upstream
    }
}

struct Proxy {
    /// Never empty.
    targets: Vec<Target>,
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
    /// What reading one body may take (see [`span::PARSE_BUDGET_FACTOR`]).
    budget: usize,
}

impl Recorder {
    /// Starts the recorder thread; it ends when the last handle is dropped.
    fn start(ingest: Arc<Ingest>, record_max: usize) -> Result<Recorder, ProxyError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| ProxyError::Recorder(e.to_string()))?;
        let budget = record_max.saturating_mul(span::PARSE_BUDGET_FACTOR);
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

    fn record(&self, call: Call) {
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
fn record(
    ingest: &Ingest,
    call: &Call,
    budget: usize,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let (export, unreadable) = call.record(budget);
    if let Some(why) = unreadable {
        ingest.counters.unrecorded_llm_calls.inc();
        tracing::warn!(
            trace_id = %hex::encode(call.trace_id),
            "LLM call recorded without its conversation: {why}"
        );
    }
    export
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
fn pick<'a, T: AsRef<Upstream>>(upstreams: &'a [T], model: Option<&str>) -> Option<&'a T> {
    fn prefix<T: AsRef<Upstream>>(t: &T) -> Option<&str> {
        t.as_ref().prefix.as_deref()
    }
    model
        .and_then(|m| {
            upstreams
                .iter()
                .filter(|t| prefix(t).is_some_and(|p| m.starts_with(p)))
                .max_by_key(|t| prefix(t).map_or(0, str::len))
        })
        .or_else(|| upstreams.iter().find(|t| prefix(t).is_none()))
        .or_else(|| upstreams.first())
}

/// The LLM proxy, ready to serve (see [`LlmProxy::serve`]).
#[derive(Clone)]
pub struct LlmProxy(Arc<Proxy>);

/// Sets up the proxy: a client per upstream, and the recorder.
pub fn new(ingest: Arc<Ingest>, config: ProxyConfig) -> Result<LlmProxy, ProxyError> {
    if config.upstreams.is_empty() {
        return Err(ProxyError::NoUpstream);
    }
    let clients = Clients::from_env().map_err(ProxyError::Client)?;
    let targets = config
        .upstreams
        .into_iter()
        .map(|upstream| {
            let base = display_url(&upstream.url);
            let uri = Uri::try_from(base.as_str())
                .map_err(|e| ProxyError::Client(format!("{base}: {e}")))?;
            Ok(Target {
                route: clients.route(&uri).map_err(ProxyError::Client)?,
                authorization: basic_auth(&upstream.url),
                upstream,
                base,
            })
        })
        .collect::<Result<Vec<_>, ProxyError>>()?;
    Ok(LlmProxy(Arc::new(Proxy {
        by_model: targets.iter().any(|t| t.upstream.prefix.is_some()),
        targets,
        record_max: config.record_max,
        recorder: Recorder::start(ingest, config.record_max)?,
    })))
}

impl LlmProxy {
    /// Serves HTTP/1.1 (and HTTP/2 without TLS) on `listener` until
    /// `shutdown` resolves, then lets the connections finish their calls.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Answers and events are small writes: Nagle would hold them
            // for the client's delayed ACK.
            let _ = tcp.set_nodelay(true);
            let proxy = self.0.clone();
            let service = hyper::service::service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(forward(&proxy, request).await) }
            });
            let connection = builder
                .serve_connection(TokioIo::new(tcp), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "LLM proxy connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
    }
}

/// After a failed accept: a connection that went away before it was taken
/// is nothing; anything else (out of file descriptors, …) is logged and
/// waited out for a second, as axum's server did.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "the LLM proxy cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// An OpenAI-style error answer from the proxy itself.
fn error(status: StatusCode, kind: &str, message: String) -> Response<Answer> {
    let body = serde_json::json!({"error": {"message": message, "type": kind}});
    let mut response = Response::new(Answer {
        from: Source::Proxy(Some(Bytes::from(body.to_string()))),
        recording: None,
    });
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Removes the headers that belong to one connection, not to the message
/// (RFC 9110 7.6.1), including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The caller's headers as the upstream gets them: end-to-end only, without
/// `Host` (the upstream's is set) and `Accept-Encoding` (answers must stay
/// readable to be recorded), with the upstream URL's credentials when the
/// caller sends no `Authorization`, and the credentials of the proxy in
/// between, if any.
fn to_upstream(
    headers: &mut HeaderMap,
    authorization: Option<&HeaderValue>,
    proxy_authorization: Option<&HeaderValue>,
) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::ACCEPT_ENCODING);
    if let Some(basic) = authorization {
        if !headers.contains_key(header::AUTHORIZATION) {
            headers.insert(header::AUTHORIZATION, basic.clone());
        }
    }
    if let Some(auth) = proxy_authorization {
        headers.insert(header::PROXY_AUTHORIZATION, auth.clone());
    }
}

/// The caller's span from a W3C `traceparent`: (trace id, span id).
fn traceparent(headers: &HeaderMap) -> Option<([u8; 16], [u8; 8])> {
    let value = headers.get("traceparent")?.to_str().ok()?.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let (mut trace, mut span, mut byte) = ([0; 16], [0; 8], [0; 1]);
    hex::decode_to_slice(parts.next()?, &mut trace).ok()?;
    hex::decode_to_slice(parts.next()?, &mut span).ok()?;
    let flags = parts.next()?;
    let version_ok = version != "ff" && hex::decode_to_slice(version, &mut byte).is_ok();
    if !version_ok || flags.len() != 2 || (version == "00" && parts.next().is_some()) {
        return None;
    }
    (trace != [0; 16] && span != [0; 8]).then_some((trace, span))
}

/// The message of an error and of its causes (hyper's never hold the URL,
/// whose query may hold a key).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
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

/// At most this much of a recording buffer is set aside before the bytes
/// arrive (from a body's stated length); past it, it grows as they do.
const PRESIZE_MAX: usize = 256 << 10;

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

/// The request body on its way upstream: what was read to find the model
/// first, then the rest as it arrives, recorded on the side.
struct Outgoing {
    held: VecDeque<Frame<Bytes>>,
    rest: Incoming,
    /// Where the recorded part goes, and its cap.
    record: Option<(Arc<Mutex<Captured>>, usize)>,
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(frame) = self.held.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let frame = std::task::ready!(Pin::new(&mut self.rest).poll_frame(cx));
        if let (Some(Ok(frame)), Some((captured, limit))) = (&frame, &self.record) {
            if let Some(data) = frame.data_ref() {
                lock(captured).push(data, *limit);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // What is held was read off the rest's length already.
        let rest = self.rest.size_hint();
        let held: u64 = self
            .held
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint.set_lower(rest.lower().saturating_add(held));
        hint
    }
}

/// An answer to the client: the upstream's, recorded on the side, or one of
/// the proxy's own.
struct Answer {
    from: Source,
    recording: Option<Recording>,
}

enum Source {
    Upstream(Incoming),
    Proxy(Option<Bytes>),
}

impl Body for Answer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let upstream = match &mut self.from {
            Source::Proxy(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Source::Upstream(upstream) => upstream,
        };
        let frame = std::task::ready!(Pin::new(upstream).poll_frame(cx));
        if let Some(rec) = &mut self.recording {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        rec.response_chunk(data);
                    }
                }
                Some(Err(e)) => rec.ended(End::Upstream(format!("the answer broke off: {e}"))),
                None => rec.ended(End::Complete),
            }
        }
        if matches!(frame, None | Some(Err(_))) {
            // Store the span now rather than when the server lets go.
            self.recording = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.from {
            Source::Upstream(upstream) => upstream.is_end_stream(),
            Source::Proxy(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.from {
            Source::Upstream(upstream) => upstream.size_hint(),
            Source::Proxy(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

async fn forward(proxy: &Proxy, request: Request<Incoming>) -> Response<Answer> {
    let start = now_unix_nanos();
    let (mut parts, mut body) = request.into_parts();
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
    let limit = proxy.record_max;
    // Room for the request as long as it says it is (a lie costs at most
    // PRESIZE_MAX).
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(limit);
    let captured = api.map(|_| {
        Arc::new(Mutex::new(Captured {
            bytes: Vec::with_capacity(expected.min(limit).min(PRESIZE_MAX)),
            truncated: false,
        }))
    });

    // With model routes, hold the request until its model is known.
    let mut held = VecDeque::new();
    let mut model = None;
    if let (Some(captured), true) = (&captured, proxy.by_model) {
        while lock(captured).bytes.len() < limit {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        lock(captured).push(data, limit);
                    }
                    held.push_back(frame);
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
        model = openai::model_of(&lock(captured).bytes);
    }
    let Some(target) = pick(&proxy.targets, model.as_deref()) else {
        return error(
            StatusCode::BAD_GATEWAY,
            "no_upstream",
            "no upstream configured".into(),
        );
    };
    let url = match parts.uri.query() {
        Some(q) => format!("{}{rest}?{q}", target.base),
        None => format!("{}{rest}", target.base),
    };
    let uri = match Uri::try_from(url) {
        Ok(uri) => uri,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("cannot make the upstream URL: {e}"),
            )
        }
    };
    let parent = traceparent(&parts.headers);
    let path = path.to_string();
    let mut headers = std::mem::take(&mut parts.headers);
    to_upstream(
        &mut headers,
        target.authorization.as_ref(),
        target.route.proxy_auth.as_ref(),
    );
    let mut outgoing = Request::new(Outgoing {
        held,
        rest: body,
        record: captured.clone().map(|c| (c, limit)),
    });
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = headers;

    let mut recording = api.zip(captured).map(|(api, captured)| {
        let (trace_id, parent_span_id) = match parent {
            Some((trace, span)) => (trace, Some(span)),
            None => (random_id(), None),
        };
        Recording {
            call: Some(Call {
                parent_span_id,
                upstream: target.base.clone(),
                path,
                ..Call::begin(api, trace_id, random_id(), start)
            }),
            recorder: proxy.recorder.clone(),
            request: captured,
            record_max: limit,
            expected: None,
            seen: 0,
        }
    });

    let answer = match target.route.client.request(outgoing).await {
        Ok(answer) => answer,
        Err(e) => {
            let why = describe(&e);
            if let Some(rec) = &mut recording {
                rec.ended(End::Upstream(why.clone()));
            }
            return error(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("the LLM proxy cannot reach {}: {why}", target.base),
            );
        }
    };
    let (mut head, upstream) = answer.into_parts();
    strip_hop_by_hop(&mut head.headers);
    if let Some(rec) = &mut recording {
        rec.expected = upstream.size_hint().exact();
        rec.reserve();
        if let Some(call) = &mut rec.call {
            call.status = Some(head.status.as_u16());
            call.event_stream = head
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        }
        if rec.expected == Some(0) {
            rec.ended(End::Complete);
        }
    }
    let mut response = Response::new(Answer {
        from: Source::Upstream(upstream),
        recording,
    });
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let with_user = reqwest::Url::parse("https://us%20er:p%3Aw@h.example/v1/").unwrap();
        assert_eq!(display_url(&with_user), "https://h.example/v1");
        // As curl and reqwest send it: Basic base64("us er:p:w").
        assert_eq!(basic_auth(&with_user).unwrap(), "Basic dXMgZXI6cDp3");
        let no_password = reqwest::Url::parse("https://key@h.example/v1").unwrap();
        assert_eq!(basic_auth(&no_password).unwrap(), "Basic a2V5Og==");
        assert_eq!(basic_auth(&all[1].url), None);
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
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4000"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic caller"),
        );
        let mut answer = h.clone();
        strip_hop_by_hop(&mut answer);
        let names = |h: &HeaderMap| {
            let mut names: Vec<_> = h.keys().map(|k| k.to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(names(&answer), ["accept-encoding", "authorization", "host"]);

        let basic = HeaderValue::from_static("Basic dTpw");
        let ours = HeaderValue::from_static("Basic cHJveHk6cA==");
        let mut request = h.clone();
        to_upstream(&mut request, Some(&basic), Some(&ours));
        assert_eq!(names(&request), ["authorization", "proxy-authorization"]);
        assert_eq!(
            request[header::AUTHORIZATION],
            "Bearer k",
            "the caller's key wins"
        );
        assert_eq!(request[header::PROXY_AUTHORIZATION], ours);
        h.remove(header::AUTHORIZATION);
        to_upstream(&mut h, Some(&basic), None);
        assert_eq!(h[header::AUTHORIZATION], basic);
        assert!(!h.contains_key(header::PROXY_AUTHORIZATION));
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
