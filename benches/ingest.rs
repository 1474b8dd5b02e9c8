//! Ingest benchmark: many concurrent OTLP clients against `oclagl serve`
//! (durable, and with `--fsync false`) and against rotel with the blackhole
//! exporter, all in one run, so the figures are ratios against a peer measured
//! on the same machine with the same load generator.
//!
//! Run: `cargo bench --bench ingest` (or `benches/run-ingest.sh`, which also
//! installs rotel). Settings, all from the environment:
//!
//! | variable                | default                  | meaning                                   |
//! |-------------------------|--------------------------|-------------------------------------------|
//! | `OCLAGL_BIN`            | `target/release/oclagl`  | the sidecar binary                        |
//! | `ROTEL_BIN`             | unset: rotel is skipped  | the `rotel-agent` binary                  |
//! | `BENCH_CLIENTS`         | 32                       | concurrent clients (one connection each)  |
//! | `BENCH_SPANS`           | 100                      | spans per request                         |
//! | `BENCH_DURATION`        | 10                       | measured seconds per server and protocol  |
//! | `BENCH_WARMUP`          | 2                        | seconds of load before measuring          |
//! | `BENCH_SPANS_PER_TRACE` | 20                       | spans per trace (one rollout per trace)   |
//! | `BENCH_UNIQUE`          | 1                        | 0: resend identical bytes (same trace ids)|
//! | `BENCH_PROTOCOLS`       | `grpc,http`              | which receivers to drive                  |
//! | `BENCH_SERVERS`         | `durable,nofsync,rotel`  | which servers to run                      |
//! | `BENCH_ROUNDS`          | 1                        | repeat everything; ratios use the median  |
//! | `BENCH_THREADS`         | number of cores          | generator worker threads                  |
//! | `BENCH_TMPDIR`          | `target/bench-tmp`       | where the servers' fresh folders go       |
//! | `BENCH_STOP_TIMEOUT`    | 60                       | seconds from SIGTERM to SIGKILL           |
//! | `OCLAGL_ARGS`           |                          | extra `oclagl serve` flags                |
//! | `ROTEL_ARGS`            |                          | extra `rotel-agent start` flags           |
//!
//! Only spans of requests answered with success count (minus any spans the
//! answer reports as rejected). A throttled answer (HTTP 429/503, gRPC
//! `RESOURCE_EXHAUSTED`/`UNAVAILABLE`) counts as not accepted, and the client
//! waits as the server asks (Retry-After / RetryInfo, at most 5 s) before its
//! next request. Every request is the same pre-encoded template with its trace
//! ids and rollout ids patched in place, so each carries new traces at the
//! cost of one memcpy.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tokio::sync::watch;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic_types::StatusExt;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Placeholder for the per-request number in trace ids (binary) and rollout
/// ids (hex); bytes that appear nowhere else in an encoded request.
const MAGIC: u64 = 0xb7c3_6f63_6c61_91e5;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

// ---------------------------------------------------------------- settings

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    Durable,
    NoFsync,
    Rotel,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Durable => "oclagl durable",
            Server::NoFsync => "oclagl --fsync false",
            Server::Rotel => "rotel blackhole",
        }
    }
}

struct Config {
    clients: usize,
    spans: usize,
    spans_per_trace: usize,
    duration: Duration,
    warmup: Duration,
    stop_timeout: Duration,
    unique: bool,
    rounds: usize,
    threads: usize,
    protocols: Vec<Protocol>,
    servers: Vec<Server>,
    oclagl_bin: PathBuf,
    rotel_bin: Option<PathBuf>,
    tmp_root: PathBuf,
    oclagl_args: Vec<String>,
    rotel_args: Vec<String>,
}

fn env_str(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_num(name: &str, default: usize) -> Result<usize, String> {
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
fn env_secs(name: &str, default: f64) -> Result<Duration, String> {
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

fn env_list<T>(
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

impl Config {
    fn from_env() -> Result<Config, String> {
        let target = env_str("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
        let oclagl_bin = env_str("OCLAGL_BIN")
            .map(PathBuf::from)
            .or_else(|| option_env!("CARGO_BIN_EXE_oclagl").map(PathBuf::from))
            .unwrap_or_else(|| Path::new(&target).join("release/oclagl"));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cfg = Config {
            clients: env_num("BENCH_CLIENTS", 32)?,
            spans: env_num("BENCH_SPANS", 100)?,
            spans_per_trace: env_num("BENCH_SPANS_PER_TRACE", 20)?,
            duration: env_secs("BENCH_DURATION", 10.0)?,
            warmup: env_secs("BENCH_WARMUP", 2.0)?,
            stop_timeout: env_secs("BENCH_STOP_TIMEOUT", 60.0)?,
            unique: env_str("BENCH_UNIQUE").is_none_or(|v| v.trim() != "0"),
            rounds: env_num("BENCH_ROUNDS", 1)?,
            threads: env_num("BENCH_THREADS", cores)?,
            protocols: env_list("BENCH_PROTOCOLS", "grpc,http", |s| match s {
                "grpc" => Some(Protocol::Grpc),
                "http" => Some(Protocol::Http),
                _ => None,
            })?,
            servers: env_list("BENCH_SERVERS", "durable,nofsync,rotel", |s| match s {
                "durable" => Some(Server::Durable),
                "nofsync" => Some(Server::NoFsync),
                "rotel" => Some(Server::Rotel),
                _ => None,
            })?,
            oclagl_bin,
            rotel_bin: env_str("ROTEL_BIN").map(PathBuf::from),
            tmp_root: env_str("BENCH_TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&target).join("bench-tmp")),
            oclagl_args: env_str("OCLAGL_ARGS")
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default(),
            rotel_args: env_str("ROTEL_ARGS")
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default(),
        };
        if cfg.duration.is_zero() {
            return Err("BENCH_DURATION must be more than 0".into());
        }
        Ok(cfg)
    }
}

// ---------------------------------------------------------------- payload

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

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
struct Template {
    bytes: Bytes,
    /// Offsets of the 8 placeholder bytes inside trace ids.
    binary: Vec<usize>,
    /// Offsets of the 16 placeholder hex digits inside rollout ids.
    hex: Vec<usize>,
}

fn build_template(spans: usize, per_trace: usize) -> Template {
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
                    kv("gen_ai.operation.name", s("invoke_agent")),
                    kv("gen_ai.agent.name", s("openclaw-coder")),
                    kv(
                        "oclagl.task_input",
                        s(&format!("{{\"task\":\"{}\"}}", text(200, i))),
                    ),
                    kv("session.id", s("sess-4f2a9c")),
                    kv("user.id", s("u-1029")),
                    kv("openclaw.turns", Value::IntValue(per_trace as i64)),
                    kv(
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
                    kv("gen_ai.operation.name", s("chat")),
                    kv("gen_ai.system", s("openai")),
                    kv("gen_ai.request.model", s("gpt-4o-mini-2024-07-18")),
                    kv(
                        "gen_ai.usage.input_tokens",
                        Value::IntValue(812 + pos as i64),
                    ),
                    kv(
                        "gen_ai.usage.output_tokens",
                        Value::IntValue(97 + pos as i64),
                    ),
                    kv("gen_ai.prompt.0.content", s(&text(200, i))),
                    kv("gen_ai.completion.0.content", s(&text(200, i + 1))),
                ],
            )
        } else {
            (
                "execute_tool web_search".to_string(),
                SpanKind::Internal,
                vec![
                    kv("gen_ai.operation.name", s("execute_tool")),
                    kv("gen_ai.tool.name", s("web_search")),
                    kv("gen_ai.tool.call.id", s(&format!("call_{i:020}"))),
                    kv("tool.arguments", s(&text(200, i + 2))),
                    kv("tool.result", s(&text(200, i + 3))),
                    kv("tool.duration_ms", Value::DoubleValue(12.5 + pos as f64)),
                    kv("http.response.status_code", Value::IntValue(200)),
                ],
            )
        };
        // The rollout id on a subset of spans: the root and every LLM call;
        // tool spans join their trace's rollout.
        if pos == 0 || pos % 2 == 1 {
            attributes.push(kv(
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
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("openclaw-agent")),
                    kv("service.version", s("1.4.2")),
                    kv("host.name", s("bench-host")),
                    kv("process.pid", Value::IntValue(4242)),
                    kv("telemetry.sdk.name", s("opentelemetry")),
                    kv("telemetry.sdk.language", s("nodejs")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "openclaw.tracing".into(),
                    version: "0.9.0".into(),
                    ..Default::default()
                }),
                spans: out,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
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
    fn request(&self, n: u64, unique: bool) -> Bytes {
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

// ---------------------------------------------------------------- clients

enum Outcome {
    /// Spans accepted.
    Accepted(u64),
    /// Throttled; wait this long.
    Throttled(Duration),
    Failed(String),
}

#[derive(Default)]
struct ClientStats {
    ok: u64,
    spans: u64,
    throttled: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

struct Shared {
    phase: AtomicU8,
    next: AtomicU64,
    template: Arc<Template>,
    spans: u64,
    unique: bool,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn body(&self) -> Bytes {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.template.request(n, self.unique)
    }

    fn accepted(&self, rejected: i64) -> u64 {
        self.spans.saturating_sub(rejected.max(0) as u64)
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
}

async fn http_once(client: &reqwest::Client, url: &str, shared: &Shared) -> Outcome {
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(shared.body())
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
            Outcome::Accepted(shared.accepted(rejected))
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
    shared: &Shared,
) -> Outcome {
    if let Err(e) = grpc.ready().await {
        return Outcome::Failed(format!("grpc connect: {e}"));
    }
    let request = tonic::Request::new(shared.body());
    let path = PathAndQuery::from_static(EXPORT_PATH);
    match grpc.unary(request, path, RawCodec).await {
        Ok(answer) => Outcome::Accepted(shared.accepted(answer.into_inner())),
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

enum Conn {
    Http {
        client: reqwest::Client,
        url: String,
    },
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
}

impl Conn {
    fn new(protocol: Protocol, addr: SocketAddr) -> Result<Conn, String> {
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

    async fn once(&mut self, shared: &Shared) -> Outcome {
        match self {
            Conn::Http { client, url } => http_once(client, url, shared).await,
            Conn::Grpc(grpc) => grpc_once(grpc, shared).await,
        }
    }
}

/// Sends requests back to back until `stop`; a request still in flight then
/// is abandoned (it is not counted either way).
async fn client_loop(
    mut conn: Conn,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    while !*stop.borrow() {
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            r = tokio::time::timeout(REQUEST_TIMEOUT, conn.once(&shared)) => match r {
                Ok(o) => o,
                Err(_) => Outcome::Failed("request timed out".into()),
            },
        };
        let mut pause = Duration::ZERO;
        let measuring = shared.phase.load(Ordering::Acquire) == MEASURE;
        match outcome {
            Outcome::Accepted(spans) => {
                if measuring {
                    stats.ok += 1;
                    stats.spans += spans;
                    let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    stats.latencies_us.push(us);
                }
            }
            Outcome::Throttled(wait) => {
                if measuring {
                    stats.throttled += 1;
                }
                pause = wait.min(MAX_BACKOFF);
            }
            Outcome::Failed(message) => {
                if measuring {
                    stats.errors += 1;
                }
                shared
                    .first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(message);
                pause = Duration::from_millis(20);
            }
        }
        if !pause.is_zero() {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
    stats
}

// ---------------------------------------------------------------- processes

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn free_addrs() -> std::io::Result<(SocketAddr, SocketAddr)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?, b.local_addr()?))
}

struct Running {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
}

fn tail(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn start(server: Server, cfg: &Config, dir: &Path) -> Result<Running, String> {
    let (grpc, http) = free_addrs().map_err(|e| format!("no free port: {e}"))?;
    let log = dir.join("server.log");
    let out = File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = match server {
        Server::Durable | Server::NoFsync => {
            let mut c = Command::new(&cfg.oclagl_bin);
            c.arg("serve")
                .arg("--grpc-addr")
                .arg(grpc.to_string())
                .arg("--http-addr")
                .arg(http.to_string())
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--traces-dir")
                .arg(dir.join("traces"))
                .arg("--fsync")
                .arg(if server == Server::Durable {
                    "true"
                } else {
                    "false"
                })
                .args(&cfg.oclagl_args);
            c
        }
        Server::Rotel => {
            let bin = cfg.rotel_bin.as_ref().ok_or("ROTEL_BIN is not set")?;
            let mut c = Command::new(bin);
            c.arg("start")
                .arg("--otlp-grpc-endpoint")
                .arg(grpc.to_string())
                .arg("--otlp-http-endpoint")
                .arg(http.to_string())
                .arg("--exporter")
                .arg("blackhole")
                .arg("--pid-file")
                .arg(dir.join("rotel.pid"))
                .arg("--log-file")
                .arg(dir.join("rotel.log"))
                .args(&cfg.rotel_args);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", server.name()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} exited early ({status}):\n{}",
                server.name(),
                tail(&log)
            ));
        }
        let up = |a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok();
        if up(grpc) && up(http) {
            return Ok(Running {
                child,
                grpc,
                http,
                log,
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} did not listen within 30s:\n{}",
                server.name(),
                tail(&log)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then SIGKILL after `timeout`; returns how long the shutdown took.
fn stop(running: &mut Running, timeout: Duration) -> (Duration, bool) {
    let began = Instant::now();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(running.child.id().to_string())
        .status();
    while began.elapsed() < timeout {
        if let Ok(Some(_)) = running.child.try_wait() {
            return (began.elapsed(), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = running.child.kill();
    let _ = running.child.wait();
    (began.elapsed(), false)
}

// ---------------------------------------------------------------- one run

struct RunResult {
    protocol: Protocol,
    server: Server,
    spans_per_s: f64,
    requests_per_s: f64,
    throttled: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    server_cpu: f64,
    generator_cpu: f64,
    hwm_mib: f64,
    rss_max_mib: f64,
    rss_mean_mib: f64,
    stop_s: f64,
    note: String,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn run_one(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    template: &Arc<Template>,
    protocol: Protocol,
    server: Server,
    ticks: f64,
) -> Result<RunResult, String> {
    std::fs::create_dir_all(&cfg.tmp_root).map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("ingest-")
        .tempdir_in(&cfg.tmp_root)
        .map_err(|e| e.to_string())?;
    let mut running = start(server, cfg, dir.path())?;
    let pid = running.child.id().to_string();
    let addr = match protocol {
        Protocol::Grpc => running.grpc,
        Protocol::Http => running.http,
    };
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        next: AtomicU64::new(1),
        template: template.clone(),
        spans: cfg.spans as u64,
        unique: cfg.unique,
        first_error: Mutex::new(None),
    });

    // VmRSS sampled every 100 ms while the load runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let pid = pid.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(&pid, "VmRSS") {
                    samples.push(kib);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };

    let mut clients = Vec::with_capacity(cfg.clients);
    let conns: Result<Vec<Conn>, String> = {
        // Channels spawn their workers on the runtime.
        let _guard = rt.enter();
        (0..cfg.clients)
            .map(|_| Conn::new(protocol, addr))
            .collect()
    };
    let conns = match conns {
        Ok(c) => c,
        Err(e) => {
            sampling.store(false, Ordering::Relaxed);
            let _ = sampler.join();
            stop(&mut running, cfg.stop_timeout);
            return Err(e);
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    for conn in conns {
        clients.push(rt.spawn(client_loop(conn, shared.clone(), stop_rx.clone())));
    }
    std::thread::sleep(cfg.warmup);
    let cpu0 = cpu_ticks(&pid);
    let self0 = cpu_ticks("self");
    let t0 = Instant::now();
    shared.phase.store(MEASURE, Ordering::Release);
    std::thread::sleep(cfg.duration);
    shared.phase.store(STOP, Ordering::Release);
    let _ = stop_tx.send(true);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_ticks(&pid);
    let self1 = cpu_ticks("self");
    let hwm = status_kib(&pid, "VmHWM").unwrap_or(0);
    let mut total = ClientStats::default();
    for c in clients {
        let s = rt.block_on(c).map_err(|e| e.to_string())?;
        total.ok += s.ok;
        total.spans += s.spans;
        total.throttled += s.throttled;
        total.errors += s.errors;
        total.latencies_us.extend(s.latencies_us);
    }
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let alive = matches!(running.child.try_wait(), Ok(None));
    let (stop_took, clean) = stop(&mut running, cfg.stop_timeout);
    total.latencies_us.sort_unstable();
    let cpu = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / ticks / elapsed * 100.0,
        _ => f64::NAN,
    };
    let mut note = String::new();
    if let Some(e) = shared
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        let _ = write!(note, "first error: {e}; ");
    }
    if !alive {
        let _ = write!(
            note,
            "server died during the run:\n{}\n",
            tail(&running.log)
        );
    }
    if !clean {
        let _ = write!(
            note,
            "server still stopping {:.0}s after SIGTERM, killed; ",
            cfg.stop_timeout.as_secs_f64()
        );
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(RunResult {
        protocol,
        server,
        spans_per_s: total.spans as f64 / elapsed,
        requests_per_s: total.ok as f64 / elapsed,
        throttled: total.throttled,
        errors: total.errors,
        p50_ms: percentile(&total.latencies_us, 0.50),
        p99_ms: percentile(&total.latencies_us, 0.99),
        server_cpu: cpu(cpu0, cpu1),
        generator_cpu: cpu(self0, self1),
        hwm_mib: mib(hwm),
        rss_max_mib: mib(samples.iter().copied().max().unwrap_or(0)),
        rss_mean_mib: if samples.is_empty() {
            0.0
        } else {
            mib(samples.iter().sum::<u64>() / samples.len() as u64)
        },
        stop_s: stop_took.as_secs_f64(),
        note,
    })
}

// ---------------------------------------------------------------- report

fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

fn fs_type(dir: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("ingest bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let mut cfg = Config::from_env()?;
    if !cfg.oclagl_bin.exists()
        && cfg
            .servers
            .iter()
            .any(|s| matches!(s, Server::Durable | Server::NoFsync))
    {
        return Err(format!(
            "{} not found: run `cargo build --release` or set OCLAGL_BIN",
            cfg.oclagl_bin.display()
        ));
    }
    if cfg.servers.contains(&Server::Rotel) {
        match &cfg.rotel_bin {
            None => {
                println!(
                    "NOTE: ROTEL_BIN is not set, so rotel is SKIPPED and no ratios are printed \
                     (benches/run-ingest.sh installs it; or `pip install --pre rotel` and point \
                     ROTEL_BIN at site-packages/rotel/rotel-agent)."
                );
                cfg.servers.retain(|s| *s != Server::Rotel);
            }
            Some(bin) if !bin.exists() => {
                return Err(format!("ROTEL_BIN={} does not exist", bin.display()));
            }
            Some(_) => {}
        }
    }
    std::fs::create_dir_all(&cfg.tmp_root).map_err(|e| e.to_string())?;
    let template = Arc::new(build_template(
        cfg.spans,
        cfg.spans_per_trace.min(cfg.spans),
    ));
    let ticks = clock_ticks();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("OTLP ingest benchmark");
    println!(
        "  load: {} clients x {} spans/request ({} bytes protobuf, {} spans/trace, {} ids), \
         {:.0}s warm-up + {:.1}s measured, {} round(s)",
        cfg.clients,
        cfg.spans,
        template.bytes.len(),
        cfg.spans_per_trace.min(cfg.spans),
        if cfg.unique { "fresh" } else { "repeated" },
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64(),
        cfg.rounds
    );
    println!(
        "  machine: {cores} cores, generator and server share them ({} generator threads)",
        cfg.threads
    );
    println!(
        "  oclagl: {} ({}){}",
        cfg.oclagl_bin.display(),
        version(&cfg.oclagl_bin),
        if cfg.oclagl_args.is_empty() {
            String::new()
        } else {
            format!(" extra args: {}", cfg.oclagl_args.join(" "))
        }
    );
    if let Some(bin) = &cfg.rotel_bin {
        println!("  rotel: {} ({})", bin.display(), version(bin));
    }
    println!(
        "  server folders in {} ({})",
        cfg.tmp_root.display(),
        fs_type(&cfg.tmp_root)
    );
    println!();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut results: Vec<RunResult> = Vec::new();
    let header = format!(
        "{:<5} {:<21} {:>11} {:>8} {:>6} {:>5} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>6}",
        "proto",
        "server",
        "spans/s",
        "req/s",
        "thrtl",
        "err",
        "p50 ms",
        "p99 ms",
        "srv cpu",
        "gen cpu",
        "HWM MiB",
        "RSS max",
        "RSS mean",
        "stop s"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for _round in 0..cfg.rounds {
        for &protocol in &cfg.protocols {
            for &server in &cfg.servers {
                let r = run_one(&rt, &cfg, &template, protocol, server, ticks)?;
                println!(
                    "{:<5} {:<21} {:>11.0} {:>8.0} {:>6} {:>5} {:>8.2} {:>8.2} {:>6.0}% {:>6.0}% {:>9.1} {:>9.1} {:>9.1} {:>6.1}",
                    protocol.name(),
                    server.name(),
                    r.spans_per_s,
                    r.requests_per_s,
                    r.throttled,
                    r.errors,
                    r.p50_ms,
                    r.p99_ms,
                    r.server_cpu,
                    r.generator_cpu,
                    r.hwm_mib,
                    r.rss_max_mib,
                    r.rss_mean_mib,
                    r.stop_s
                );
                if !r.note.is_empty() {
                    println!("      note: {}", r.note.trim_end());
                }
                let _ = std::io::stdout().flush();
                results.push(r);
            }
        }
    }
    println!();
    println!(
        "spans/s counts only spans in requests answered with success; srv/gen cpu = % of one core"
    );
    println!("during the measured window; HWM = server VmHWM (peak RSS); RSS max/mean = VmRSS sampled every 100 ms.");
    println!();

    let med = |p: Protocol, s: Server, f: fn(&RunResult) -> f64| {
        median(
            results
                .iter()
                .filter(|r| r.protocol == p && r.server == s)
                .map(f)
                .collect(),
        )
    };
    if !cfg.servers.contains(&Server::Rotel) {
        println!("no rotel run: no ratios (set ROTEL_BIN)");
        return Ok(());
    }
    println!(
        "ratios against rotel blackhole, same run, same generator (>1.00x = more than rotel):"
    );
    for &p in &cfg.protocols {
        let rotel_tp = med(p, Server::Rotel, |r| r.spans_per_s);
        let rotel_hwm = med(p, Server::Rotel, |r| r.hwm_mib);
        let rotel_eff = med(p, Server::Rotel, |r| r.spans_per_s / r.server_cpu);
        for s in [Server::Durable, Server::NoFsync] {
            if !cfg.servers.contains(&s) {
                continue;
            }
            let tp = med(p, s, |r| r.spans_per_s);
            let hwm = med(p, s, |r| r.hwm_mib);
            let eff = med(p, s, |r| r.spans_per_s / r.server_cpu);
            println!(
                "  {:<4} {:<21} / rotel: throughput {:.2}x, spans per server CPU-second {:.2}x, peak RSS {:.2}x",
                p.name(),
                s.name(),
                tp / rotel_tp,
                eff / rotel_eff,
                hwm / rotel_hwm
            );
        }
    }
    if cfg.servers.contains(&Server::Durable) {
        let verdicts: Vec<String> = cfg
            .protocols
            .iter()
            .map(|&p| {
                let r = med(p, Server::Durable, |r| r.spans_per_s)
                    / med(p, Server::Rotel, |r| r.spans_per_s);
                format!("{} {}", p.name(), if r >= 1.0 { "met" } else { "NOT met" })
            })
            .collect();
        println!(
            "target (durable oclagl >= rotel blackhole throughput): {}",
            verdicts.join(", ")
        );
    }
    Ok(())
}
