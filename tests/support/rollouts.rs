//! A generated store of many rollouts with known facts (status, times,
//! session, model and tool calls, reward), for `oclagl ls` tests and the
//! `inspect` benchmark.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message;

use super::{kv, request, span, Server};

/// Rollout `i` starts at this Unix time plus `i` seconds.
pub const BASE_SECS: u64 = 1_770_000_000;

pub fn rollout_id(i: u64) -> String {
    format!("ro-{i:012x}")
}

pub fn failed(i: u64) -> bool {
    i.is_multiple_of(10)
}

pub fn session(i: u64) -> String {
    format!("agent:main:s{}", i % 7)
}

pub fn tool_calls(i: u64) -> usize {
    (i % 3) as usize
}

/// Every fourth rollout has no reward; the others 0, 1/8, …, 7/8.
pub fn reward(i: u64) -> Option<f64> {
    (!i.is_multiple_of(4)).then(|| (i % 8) as f64 / 8.0)
}

pub fn duration_secs(i: u64) -> u64 {
    1 + i % 5
}

fn double(key: &str, v: f64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(v)),
        }),
        ..Default::default()
    }
}

fn timed(mut s: Span, start: u64, end: u64) -> Span {
    s.start_time_unix_nano = start;
    s.end_time_unix_nano = end;
    s
}

/// The spans of rollout `i`: a root, a model call, its tool calls, and a
/// reward span when it has a reward.
pub fn spans(i: u64) -> Vec<Span> {
    let mut trace = [0xab; 16];
    trace[..8].copy_from_slice(&i.to_be_bytes());
    let t0 = (BASE_SECS + i) * 1_000_000_000;
    let t1 = t0 + duration_secs(i) * 1_000_000_000;
    let id = rollout_id(i);
    let prompt = format!("task {i}: what is {i} + 1?");
    let mut root = span(
        trace,
        1,
        None,
        "oclagl.rollout",
        vec![
            kv("agentlightning.rollout_id", &id),
            kv("agentlightning.attempt_id", "at-00000001"),
            kv("oclagl.session_key", &session(i)),
            kv(
                "oclagl.task_input",
                &serde_json::json!({ "prompt": prompt }).to_string(),
            ),
        ],
    );
    if failed(i) {
        root.status = Some(Status {
            message: "gateway failed".into(),
            code: 2,
        });
    }
    let mut out = vec![timed(root, t0, t1)];
    let model = span(
        trace,
        2,
        Some(1),
        "gen_ai",
        vec![
            kv("gen_ai.prompt.0.role", "user"),
            kv("gen_ai.prompt.0.content", &prompt),
            kv("gen_ai.completion.0.role", "assistant"),
            kv("gen_ai.completion.0.content", &format!("{}", i + 1)),
            kv("gen_ai.response.model", "model-a"),
        ],
    );
    out.push(timed(model, t0 + 1000, t1 - 1000));
    for k in 0..tool_calls(i) as u64 {
        let tool = span(
            trace,
            3 + k,
            Some(2),
            "tool",
            vec![
                kv("tool.name", "calc"),
                kv("tool.call.id", &format!("call_{k}")),
                kv("tool.parameters", "{\"x\": 1}"),
            ],
        );
        out.push(timed(tool, t0 + 2000, t0 + 3000));
    }
    if let Some(r) = reward(i) {
        let mut annotation = span(
            trace,
            9,
            Some(1),
            "agentlightning.annotation",
            vec![
                kv("agentlightning.rollout_id", &id),
                kv("agentlightning.reward.0.name", "primary"),
            ],
        );
        annotation
            .attributes
            .push(double("agentlightning.reward.0.value", r));
        out.push(timed(annotation, t1, t1));
    }
    out
}

/// Sends rollouts `0..n` to a running sidecar over OTLP/HTTP, `per_request`
/// rollouts per export.
pub async fn generate(server: &Server, n: u64, per_request: u64) {
    let client = reqwest::Client::new();
    let mut first = 0;
    while first < n {
        let last = (first + per_request).min(n);
        let all: Vec<Span> = (first..last).flat_map(spans).collect();
        let body = request(vec![kv("service.name", "generated")], all).encode_to_vec();
        let status = client
            .post(server.url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .expect("send generated rollouts")
            .status();
        assert!(status.is_success(), "{status}");
        first = last;
    }
}

/// How many rollouts the view has summarised so far (distinct rollout ids
/// of its file's summary lines).
pub fn summarised(data_dir: &std::path::Path) -> usize {
    // Summary lines start with the rollout id; merge lines name where the
    // rollout went. Plain string work stays fast in a debug build.
    let text = std::fs::read_to_string(data_dir.join("rollouts.jsonl")).unwrap_or_default();
    let ids: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.contains("\"merged_into\""))
        .filter_map(|l| l.strip_prefix("{\"rollout_id\":\"")?.split('"').next())
        .collect();
    ids.len()
}

/// Waits until the view has summarised `n` rollouts.
pub fn wait_summarised(data_dir: &std::path::Path, n: usize, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while summarised(data_dir) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} rollouts summarised",
            summarised(data_dir)
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// An export the OTLP/HTTP receiver accepts, for one rollout.
pub fn one(i: u64) -> ExportTraceServiceRequest {
    request(vec![kv("service.name", "generated")], spans(i))
}
