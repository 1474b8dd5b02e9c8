//! Added latency of the LLM proxy (`oclagl serve --llm-proxy`) over a direct
//! connection to the same local fake provider, in the same run: full
//! response time of non-streamed calls and time to first byte of streamed
//! ones, at 1 and 64 concurrent calls. Each client alternates direct and
//! proxied calls, so both see the same machine load.
//!
//! Like a gateway's, each client's calls carry a `traceparent`, ten calls
//! per trace (a rollout of ten model calls), so the proxy's spans land in
//! rollouts as they do in use.
//!
//! Run: `bash benches/run-proxy.sh`. Knobs: REQUESTS (4000 per kind and
//! level), CONCURRENCY ("1,64"), LATENCY_MS (0: the provider's delay before
//! it answers), OCLAGL_BIN.

mod common;

use common::{env_or, field, levels, oclagl_bin, pct, spawn_ready};

use std::convert::Infallible;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// The fake provider: a small chat completion, or the same as five events,
/// after `LATENCY_MS`.
async fn provider(body: Bytes) -> Response {
    let latency = env_or("LATENCY_MS", 0u64);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let streamed = serde_json::from_slice::<Value>(&body).is_ok_and(|b| b["stream"] == true);
    if !streamed {
        let answer = json!({"id": "chatcmpl-b", "object": "chat.completion", "model": "m-1",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello there."}}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 3, "total_tokens": 903}});
        return ([("content-type", "application/json")], answer.to_string()).into_response();
    }
    let events = ["Hel", "lo ", "there", "."]
        .iter()
        .map(|t| {
            json!({"id": "chatcmpl-b", "model": "m-1",
                   "choices": [{"index": 0, "delta": {"content": t}}]})
        })
        .chain([json!({"id": "chatcmpl-b", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})])
        .map(|e| Ok::<_, Infallible>(Bytes::from(format!("data: {e}\n\n"))))
        .chain([Ok(Bytes::from_static(b"data: [DONE]\n\n"))]);
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(futures_util::stream::iter(events)),
    )
        .into_response()
}

/// A request like a gateway's: a long system prompt, tools, a user turn.
fn request_body(stream: bool) -> String {
    let tools: Vec<Value> = (0..12)
        .map(|i| json!({"type": "function", "function": {"name": format!("tool_{i}"),
            "description": "Does one thing to a file or folder.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}))
        .collect();
    json!({"model": "m-1", "stream": stream, "messages": [
        {"role": "system", "content": "You are a helpful assistant. ".repeat(100)},
        {"role": "user", "content": "Say hello."}], "tools": tools})
    .to_string()
}

/// Latencies (sorted) of `n` calls of each of two targets, `c` at a time,
/// each client alternating between them; `first_byte` stops the clock at
/// the first body bytes instead of the last.
async fn drive(
    targets: [String; 2],
    body: String,
    n: usize,
    c: usize,
    first_byte: bool,
) -> [Vec<Duration>; 2] {
    let client = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let targets = Arc::new(targets);
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let mut workers = Vec::new();
    for worker in 0..c {
        let (client, next, targets, body) =
            (client.clone(), next.clone(), targets.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = [Vec::new(), Vec::new()];
            for call in 0usize.. {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 2 * n {
                    break;
                }
                let which = i % 2;
                let t = Instant::now();
                let traceparent = format!(
                    "00-{:08x}{:08x}{:016x}-{:016x}-01",
                    run + 1,
                    worker + 1,
                    call / 10 + 1,
                    call + 1
                );
                let mut resp = client
                    .post(&targets[which])
                    .header("traceparent", traceparent)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer bench-key")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("request");
                assert!(resp.status().is_success(), "status {}", resp.status());
                if first_byte {
                    let first = resp.chunk().await.expect("first chunk");
                    assert!(first.is_some(), "an empty stream");
                    lat[which].push(t.elapsed());
                    while resp.chunk().await.expect("chunk").is_some() {}
                } else {
                    let _ = resp.bytes().await.expect("body");
                    lat[which].push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = [Vec::new(), Vec::new()];
    for w in workers {
        let [a, b] = w.await.expect("worker");
        all[0].extend(a);
        all[1].extend(b);
    }
    for l in &mut all {
        l.sort();
    }
    all
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("REQUESTS", 4000);
    let levels = levels("1,64");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let app = Router::new().route("/v1/chat/completions", post(provider));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("provider") });

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, ready) = spawn_ready(
        Command::new(oclagl_bin())
            .current_dir(dir.path())
            .args([
                "serve",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(["--llm-proxy", "127.0.0.1:0", "--llm-upstream"])
            .arg(format!("http://{upstream}/v1"))
            .env("OCLAGL_LOG", "info"),
        "oclagl serve ready",
    );
    let (http, proxy) = (field(&ready, "http"), field(&ready, "llm_proxy"));
    let targets = [
        format!("http://{upstream}/v1/chat/completions"),
        format!("http://{proxy}/v1/chat/completions"),
    ];
    // Warm both paths (connections, allocator) before measuring.
    drive(targets.clone(), request_body(false), 200, 8, false).await;

    println!(
        "LLM proxy vs direct calls to the same fake provider ({} ms latency): {n} calls of each per row, \
         request body {} bytes, each call recorded as a span (durable store, fsync on)",
        env_or("LATENCY_MS", 0u64),
        request_body(false).len()
    );
    println!("| calls | concurrency | calls/s (both) | direct p50 / p99 (ms) | proxy p50 / p99 (ms) | added p50 / p99 (ms) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for &c in &levels {
        for (label, stream) in [
            ("non-streamed, full answer", false),
            ("streamed, first byte", true),
        ] {
            let started = Instant::now();
            let [d, p] = drive(targets.clone(), request_body(stream), n, c, stream).await;
            let rate = (2 * n) as f64 / started.elapsed().as_secs_f64();
            println!(
                "| {label} | {c} | {rate:.0} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} |",
                pct(&d, 0.5),
                pct(&d, 0.99),
                pct(&p, 0.5),
                pct(&p, 0.99),
                pct(&p, 0.5) - pct(&d, 0.5),
                pct(&p, 0.99) - pct(&d, 0.99)
            );
        }
    }
    // Every proxied call became a span (plus the warm-up's).
    let calls = 200 + 2 * n * levels.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    let recorded = loop {
        let health: Value = reqwest::get(format!("http://{http}/health"))
            .await
            .expect("health")
            .json()
            .await
            .expect("health JSON");
        let spans = health["accepted_spans"].as_u64().unwrap_or(0);
        if spans as usize >= calls || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("spans recorded: {recorded} of {calls} proxied calls");
    let _ = child.kill();
    let _ = child.wait();
}
