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
//!
//! A call whose `traceparent` names a trace bound to Agent Lightning v1
//! ([`binding`]) goes to that rollout's AGL proxy instead (`bound`): read
//! whole, sent without streaming and answered back as a stream when the
//! client asked for one, and sent again while AGL is paused.
//!
//! The rooms: `config` (the upstreams and the one a model picks), `headers`
//! (what crosses and what does not), `body` (the bodies both ways),
//! `recorder` (recording on the side, storing when a call ends), [`span`] (a call as a span), `upstream` (the HTTP
//! client); this file serves and forwards.

pub mod binding;
mod body;
mod bound;
mod config;
mod headers;
mod recorder;
pub mod span;
mod upstream;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};

use self::body::{error, Answer, Outgoing, Source};
use self::config::{basic_auth, display_url, pick};
pub use self::config::{parse_upstream, ProxyConfig, Upstream};
use self::headers::{strip_hop_by_hop, to_upstream, traceparent};
use self::recorder::{lock, Recorder, Recording, PRESIZE_MAX};
use self::span::{Call, Captured, End};
use self::upstream::{Clients, Route};
use super::Ingest;
use crate::conversation::openai::{self, Api};
use crate::util::clock::now_unix_nanos;
use crate::util::ids::random_id;

/// Why the LLM proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No `--llm-upstream` was given.
    #[error("the LLM proxy needs at least one --llm-upstream")]
    NoUpstream,
    /// The HTTP client towards the upstreams cannot be built.
    #[error("cannot set up the LLM proxy's HTTP client: {0}")]
    Client(String),
    /// The recorder's thread cannot be started.
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
    /// The traces bound to AGL v1, when the sidecar keeps any.
    bindings: Option<Arc<binding::Bindings>>,
    /// How long a bound call waits out AGL's pauses at most.
    max_pause: Duration,
    clients: Clients,
    /// The clients of AGL servers, by scheme and authority.
    agl_routes: Mutex<std::collections::HashMap<String, Arc<Route<Outgoing>>>>,
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
        bindings: config.bindings,
        max_pause: config.max_pause,
        clients,
        agl_routes: Mutex::default(),
    })))
}

impl Proxy {
    /// The binding of `trace`, when it is bound to AGL.
    fn bound(&self, trace: &[u8; 16]) -> Option<Arc<binding::Binding>> {
        self.bindings.as_ref()?.get(trace)
    }

    /// The client of the AGL server at `base` (one per scheme and
    /// authority, so calls share its connections).
    fn agl_route(&self, base: &Uri) -> Result<Arc<Route<Outgoing>>, String> {
        let key = format!(
            "{}://{}",
            base.scheme_str().unwrap_or("http"),
            base.authority().map_or("", |a| a.as_str())
        );
        let mut routes = self.agl_routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(route) = routes.get(&key) {
            return Ok(route.clone());
        }
        let route = Arc::new(self.clients.route(base)?);
        routes.insert(key, route.clone());
        Ok(route)
    }
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

/// Reads the request body until its model is known (at most `limit`
/// bytes, recorded), for routing by model; the frames read are held for the
/// upstream.
async fn hold_until_model(
    body: &mut Incoming,
    captured: &Mutex<Captured>,
    limit: usize,
) -> Result<(VecDeque<Frame<Bytes>>, Option<String>), hyper::Error> {
    let mut held = VecDeque::new();
    while lock(captured).bytes.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    lock(captured).push(data, limit);
                }
                held.push_back(frame);
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    let model = openai::model_of(&lock(captured).bytes);
    Ok((held, model))
}

/// `<base><rest>?<query>`.
fn upstream_uri(
    base: &str,
    rest: &str,
    query: Option<&str>,
) -> Result<Uri, hyper::http::uri::InvalidUri> {
    Uri::try_from(match query {
        Some(q) => format!("{base}{rest}?{q}"),
        None => format!("{base}{rest}"),
    })
}

/// What a request path asks for: the part after `/v1`, and the API the
/// proxy records (`None` for calls it only passes on, such as `/v1/models`);
/// `None` for a path outside `/v1`.
fn endpoint<'p>(method: &Method, path: &'p str) -> Option<(&'p str, Option<Api>)> {
    let rest = path
        .strip_prefix("/v1")
        .filter(|r| r.is_empty() || r.starts_with('/'))?;
    let api = Api::of_path(rest).filter(|_| method == Method::POST);
    Some((rest, api))
}

async fn forward(proxy: &Proxy, request: Request<Incoming>) -> Response<Answer> {
    let start = now_unix_nanos();
    let (mut parts, mut body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let Some((rest, api)) = endpoint(&parts.method, &path) else {
        let message = format!("the LLM proxy serves /v1/…, not {path}");
        return error(StatusCode::NOT_FOUND, "not_found", message);
    };
    let parent = traceparent(&parts.headers);
    if let Some((binding, parent)) = parent.and_then(|p| Some((proxy.bound(&p.0)?, p))) {
        let call = bound::BoundCall {
            binding: &binding,
            parent,
            rest,
            api,
            path: &path,
            start,
        };
        return bound::forward(proxy, call, parts, body).await;
    }
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
    let (held, model) = match (&captured, proxy.by_model) {
        (Some(captured), true) => match hold_until_model(&mut body, captured, limit).await {
            Ok(held) => held,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    format!("cannot read the request body: {e}"),
                )
            }
        },
        _ => (VecDeque::new(), None),
    };
    let Some(target) = pick(&proxy.targets, model.as_deref()) else {
        return error(
            StatusCode::BAD_GATEWAY,
            "no_upstream",
            "no upstream configured".into(),
        );
    };
    let uri = match upstream_uri(&target.base, rest, parts.uri.query()) {
        Ok(uri) => uri,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("cannot make the upstream URL: {e}"),
            )
        }
    };
    let mut headers = std::mem::take(&mut parts.headers);
    to_upstream(
        &mut headers,
        target.authorization.as_ref(),
        target.route.proxy_auth.as_ref(),
    );
    let mut outgoing = Request::new(Outgoing {
        held,
        rest: Some(body),
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
        let call = Call {
            parent_span_id,
            upstream: target.base.clone(),
            path: path.clone(),
            ..Call::begin(api, trace_id, random_id(), start)
        };
        Recording::begin(call, proxy.recorder.clone(), captured, limit)
    });

    let answer = match target.route.client.request(outgoing).await {
        Ok(answer) => answer,
        Err(e) => {
            // hyper's errors never hold the URL, whose query may hold a key.
            let why = crate::util::error_chain(&e);
            if let Some(rec) = &mut recording {
                rec.ended(End::Upstream(why.clone()));
            }
            let message = format!("the LLM proxy cannot reach {}: {why}", target.base);
            return error(StatusCode::BAD_GATEWAY, "upstream_unreachable", message);
        }
    };
    let (mut head, upstream) = answer.into_parts();
    strip_hop_by_hop(&mut head.headers);
    if let Some(rec) = &mut recording {
        rec.answered(head.status, &head.headers, upstream.size_hint().exact());
    }
    let mut response = Response::new(Answer {
        from: Source::Upstream(upstream),
        recording,
    });
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    response
}
