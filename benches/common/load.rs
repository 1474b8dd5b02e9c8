//! OTLP load generation shared by the ingest and soak benchmarks (each
//! includes this file as a module and uses a different part of it): one
//! pre-encoded request template with per-request trace and rollout ids, and
//! gRPC and HTTP clients that send raw bytes and classify the answer.

#![allow(dead_code)]

use std::fs::File;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic_types::StatusExt;

#[path = "../../tests/support/otlp.rs"]
mod otlp;
use otlp::{attr, request, s};

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Placeholder for the per-request number in trace ids (binary) and rollout
/// ids (hex); bytes that appear nowhere else in an encoded request.
pub const MAGIC: u64 = 0xb7c3_6f63_6c61_91e5;
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

pub fn env_str(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn env_num(name: &str, default: usize) -> Result<usize, String> {
    match env_str(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name}={v:?} is not a positive whole number")),
    }
}

/// Seconds, optionally with an `s` or `ms` suffix.
pub fn env_secs(name: &str, default: f64) -> Result<Duration, String> {
    let Some(v) = env_str(name) else {
        return Ok(Duration::from_secs_f64(default));
    };
    let t = v.trim();
    let (num, scale) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = t.strip_suffix('s') {
        (s, 1.0)
    } else {
        (t, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .map(|x| Duration::from_secs_f64(x * scale))
        .ok_or_else(|| format!("{name}={v:?} is not a duration (try 10 or 10s)"))
}

pub fn env_list<T>(
    name: &str,
    default: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, String> {
    let raw = env_str(name).unwrap_or_else(|| default.to_string());
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).ok_or_else(|| format!("{name}: unknown value {s:?}")))
        .collect()
}

// ---------------------------------------------------------------- payload

/// Filler text of exactly `len` bytes, varied by `seed`.
fn text(len: usize, seed: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "agent",
        "called",
        "search",
        "tool",
        "with",
        "query",
        "about",
        "rust",
        "async",
        "runtime",
        "and",
        "then",
        "summarised",
        "results",
        "for",
        "user",
        "request",
        "in",
        "detail",
        "including",
        "citations",
        "from",
        "docs",
    ];
    let mut out = String::with_capacity(len + 16);
    let mut i = seed;
    while out.len() < len {
        out.push_str(WORDS[i % WORDS.len()]);
        out.push(' ');
        i = i.wrapping_mul(7).wrapping_add(3);
    }
    out.truncate(len);
    out
}

/// The encoded request every client sends, with where to patch in the
/// per-request number.
pub struct Template {
    pub bytes: Bytes,
    /// Offsets of the 8 placeholder bytes inside trace ids.
    binary: Vec<usize>,
    /// Offsets of the 16 placeholder hex digits inside rollout ids.
    hex: Vec<usize>,
}

pub fn build_template(spans: usize, per_trace: usize) -> Template {
    let salt = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos()) as u32)
        .to_be_bytes();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut out = Vec::with_capacity(spans);
    for i in 0..spans {
        let trace = i / per_trace;
        let pos = i % per_trace;
        let mut trace_id = Vec::with_capacity(16);
        trace_id.extend_from_slice(&MAGIC.to_be_bytes());
        trace_id.extend_from_slice(&(trace as u32).to_be_bytes());
        trace_id.extend_from_slice(&salt);
        let span_id = |p: usize| {
            ((trace as u64) << 32 | (p as u64 + 1))
                .to_be_bytes()
                .to_vec()
        };
        let start = now + (pos as u64) * 1_000_000;
        let (name, kind, mut attributes) = if pos == 0 {
            (
                "openclaw.agent.run".to_string(),
                SpanKind::Server,
                vec![
                    attr("gen_ai.operation.name", s("invoke_agent")),
                    attr("gen_ai.agent.name", s("openclaw-coder")),
                    attr(
                        "oclagl.task_input",
                        s(&format!("{{\"task\":\"{}\"}}", text(200, i))),
                    ),
                    attr("session.id", s("sess-4f2a9c")),
                    attr("user.id", s("u-1029")),
                    attr("openclaw.turns", Value::IntValue(per_trace as i64)),
                    attr(
                        "agentlightning.attempt_id",
                        s(&format!("at-{:016x}-{trace:04}", MAGIC)),
                    ),
                ],
            )
        } else if pos % 2 == 1 {
            (
                "chat gpt-4o-mini".to_string(),
                SpanKind::Client,
                vec![
                    attr("gen_ai.operation.name", s("chat")),
                    attr("gen_ai.system", s("openai")),
                    attr("gen_ai.request.model", s("gpt-4o-mini-2024-07-18")),
                    attr(
                        "gen_ai.usage.input_tokens",
                        Value::IntValue(812 + pos as i64),
                    ),
                    attr(
                        "gen_ai.usage.output_tokens",
                        Value::IntValue(97 + pos as i64),
                    ),
                    attr("gen_ai.prompt.0.content", s(&text(200, i))),
                    attr("gen_ai.completion.0.content", s(&text(200, i + 1))),
                ],
            )
        } else {
            (
                "execute_tool web_search".to_string(),
                SpanKind::Internal,
                vec![
                    attr("gen_ai.operation.name", s("execute_tool")),
                    attr("gen_ai.tool.name", s("web_search")),
                    attr("gen_ai.tool.call.id", s(&format!("call_{i:020}"))),
                    attr("tool.arguments", s(&text(200, i + 2))),
                    attr("tool.result", s(&text(200, i + 3))),
                    attr("tool.duration_ms", Value::DoubleValue(12.5 + pos as f64)),
                    attr("http.response.status_code", Value::IntValue(200)),
                ],
            )
        };
        // The rollout id on a subset of spans: the root and every LLM call;
        // tool spans join their trace's rollout.
        if pos == 0 || pos % 2 == 1 {
            attributes.push(attr(
                "agentlightning.rollout_id",
                s(&format!("ro-{:016x}-{trace:04}", MAGIC)),
            ));
        }
        out.push(Span {
            trace_id,
            span_id: span_id(pos),
            parent_span_id: if pos == 0 { vec![] } else { span_id(0) },
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 750_000,
            attributes,
            status: Some(Status {
                code: StatusCode::Ok as i32,
                message: String::new(),
            }),
            ..Default::default()
        });
    }
    let mut request = request(
        vec![
            attr("service.name", s("openclaw-agent")),
            attr("service.version", s("1.4.2")),
            attr("host.name", s("bench-host")),
            attr("process.pid", Value::IntValue(4242)),
            attr("telemetry.sdk.name", s("opentelemetry")),
            attr("telemetry.sdk.language", s("nodejs")),
        ],
        out,
    );
    request.resource_spans[0].scope_spans[0].scope = Some(InstrumentationScope {
        name: "openclaw.tracing".into(),
        version: "0.9.0".into(),
        ..Default::default()
    });
    let bytes = request.encode_to_vec();
    let find = |needle: &[u8]| -> Vec<usize> {
        bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect()
    };
    let binary = find(&MAGIC.to_be_bytes());
    let hex = find(format!("{MAGIC:016x}").as_bytes());
    assert_eq!(
        binary.len(),
        spans,
        "every trace id holds the placeholder once"
    );
    Template {
        bytes: Bytes::from(bytes),
        binary,
        hex,
    }
}

impl Template {
    /// The request body for request number `n`: fresh trace and rollout ids.
    pub fn request(&self, n: u64, unique: bool) -> Bytes {
        if !unique {
            return self.bytes.clone();
        }
        let mut buf = BytesMut::with_capacity(self.bytes.len());
        buf.extend_from_slice(&self.bytes);
        let bin = n.to_be_bytes();
        for &at in &self.binary {
            buf[at..at + 8].copy_from_slice(&bin);
        }
        let mut hex = [0u8; 16];
        for (i, d) in hex.iter_mut().enumerate() {
            *d = b"0123456789abcdef"[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        for &at in &self.hex {
            buf[at..at + 16].copy_from_slice(&hex);
        }
        buf.freeze()
    }
}

// ---------------------------------------------------------------- gRPC codec

/// Sends pre-encoded request bytes; decodes the answer's rejected-span count.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RejectedDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = i64;
    type Encoder = RawEncoder;
    type Decoder = RejectedDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RejectedDecoder {
        RejectedDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RejectedDecoder {
    type Item = i64;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<i64>, tonic::Status> {
        let answer = ExportTraceServiceResponse::decode(src)
            .map_err(|e| tonic::Status::internal(format!("bad answer: {e}")))?;
        Ok(Some(answer.partial_success.map_or(0, |p| p.rejected_spans)))
    }
}

pub enum Outcome {
    /// Answered with success; how many spans the answer reports rejected.
    Accepted(u64),
    /// Throttled; wait this long.
    Throttled(Duration),
    Failed(String),
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
}

async fn http_once(client: &reqwest::Client, url: &str, body: Bytes) -> Outcome {
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("http: {e}")),
    };
    let status = response.status();
    let wait = retry_after(response.headers());
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("http body: {e}")),
    };
    match status.as_u16() {
        200..=299 => {
            let rejected = ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|a| a.partial_success)
                .map_or(0, |p| p.rejected_spans);
            Outcome::Accepted(rejected.max(0) as u64)
        }
        429 | 503 => Outcome::Throttled(wait),
        other => Outcome::Failed(format!(
            "http {other}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
    }
}

async fn grpc_once(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    body: Bytes,
) -> Outcome {
    if let Err(e) = grpc.ready().await {
        return Outcome::Failed(format!("grpc connect: {e}"));
    }
    let request = tonic::Request::new(body);
    let path = PathAndQuery::from_static(EXPORT_PATH);
    match grpc.unary(request, path, RawCodec).await {
        Ok(answer) => Outcome::Accepted(answer.into_inner().max(0) as u64),
        Err(status) => {
            let hint = status.get_details_retry_info().and_then(|r| r.retry_delay);
            match status.code() {
                tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                    if hint.is_some() || status.code() == tonic::Code::ResourceExhausted =>
                {
                    Outcome::Throttled(hint.unwrap_or(Duration::from_secs(1)))
                }
                code => Outcome::Failed(format!("grpc {code:?}: {}", status.message())),
            }
        }
    }
}

pub enum Conn {
    Http {
        client: reqwest::Client,
        url: String,
    },
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
}

impl Conn {
    pub fn new(protocol: Protocol, addr: SocketAddr) -> Result<Conn, String> {
        Ok(match protocol {
            Protocol::Http => Conn::Http {
                client: reqwest::Client::builder()
                    .http1_only()
                    .no_proxy()
                    .no_gzip()
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(1)
                    .build()
                    .map_err(|e| e.to_string())?,
                url: format!("http://{addr}/v1/traces"),
            },
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| e.to_string())?
                    .tcp_nodelay(true)
                    .connect_lazy();
                Conn::Grpc(tonic::client::Grpc::new(channel))
            }
        })
    }

    pub async fn once(&mut self, body: Bytes) -> Outcome {
        match self {
            Conn::Http { client, url } => http_once(client, url, body).await,
            Conn::Grpc(grpc) => grpc_once(grpc, body).await,
        }
    }
}

/// A `/proc/<pid>/status` field in KiB.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn free_addrs() -> std::io::Result<(SocketAddr, SocketAddr)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?, b.local_addr()?))
}

pub fn tail(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
