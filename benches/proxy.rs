//! Added latency of the LLM proxy (`oclagl serve --llm-proxy`) over a direct
//! connection to the same local fake provider, in the same run: full
//! response time of non-streamed calls and time to first byte of streamed
//! ones, at 1 and 64 concurrent calls. Each client alternates direct and
//! proxied calls through one HTTP client whose connections are opened
//! before measuring, so both see the same machine load and neither pays for
//! connecting. The provider and the clients share the cores with the proxy,
//! so they spend as little CPU as they can.
//!
//! Like a gateway's, each client's calls carry a `traceparent`, ten calls
//! per trace (a rollout of ten model calls), so the proxy's spans land in
//! rollouts as they do in use.
//!
//! The same calls then go through a bare TCP relay in the proxy's place:
//! the least any process in between adds on this machine (the floor).
//!
//! Run: `bash benches/run-proxy.sh`. Knobs: REQUESTS (4000 per kind and
//! level), CONCURRENCY ("1,64"), LATENCY_MS (0: the provider's delay before
//! it answers), STAGGER (1: with a delay, client `i` of `c` starts `i/c` of
//! it late, so that calls do not all arrive in the same instant; 0: they
//! do), FLOOR (1: also measure the relay), OCLAGL_BIN.

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::{
    compared, env_or, field, latency_client, levels, serve_llm_proxy, serve_local,
    sorted_latencies, spawn_ready,
};

use std::convert::Infallible;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// The provider's delay before it answers (`LATENCY_MS`).
fn latency() -> Duration {
    static LATENCY: OnceLock<Duration> = OnceLock::new();
    *LATENCY.get_or_init(|| Duration::from_millis(env_or("LATENCY_MS", 0u64)))
}

/// The fake provider: a small chat completion, or the same as five events,
/// after `LATENCY_MS`. The request is not parsed, only searched for
/// `"stream":true`, and the answers are made once.
async fn provider(body: Bytes) -> Response {
    static ANSWER: OnceLock<Bytes> = OnceLock::new();
    static EVENTS: OnceLock<Vec<Bytes>> = OnceLock::new();
    if !latency().is_zero() {
        // Not tokio's sleep: it ends on a millisecond tick, which would tie
        // each call's timing to where the last one ended.
        let delay = latency();
        tokio::task::spawn_blocking(move || std::thread::sleep(delay))
            .await
            .expect("delay");
    }
    let streamed = body.windows(14).any(|w| w == br#""stream":true"#);
    if !streamed {
        let answer = ANSWER.get_or_init(|| {
            let answer = json!({"id": "chatcmpl-b", "object": "chat.completion", "model": "m-1",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Hello there."}}],
                "usage": {"prompt_tokens": 900, "completion_tokens": 3, "total_tokens": 903}});
            Bytes::from(answer.to_string())
        });
        return ([("content-type", "application/json")], answer.clone()).into_response();
    }
    let events = EVENTS.get_or_init(|| {
        ["Hel", "lo ", "there", "."]
            .iter()
            .map(|t| {
                json!({"id": "chatcmpl-b", "model": "m-1",
                       "choices": [{"index": 0, "delta": {"content": t}}]})
            })
            .chain([json!({"id": "chatcmpl-b", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})])
            .map(|e| Bytes::from(format!("data: {e}\n\n")))
            .chain([Bytes::from_static(b"data: [DONE]\n\n")])
            .collect()
    });
    let events = events.iter().cloned().map(Ok::<_, Infallible>);
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
/// the first body bytes instead of the last. With `stagger`, client `w`
/// starts `w * stagger` late, so that against a provider with a fixed delay
/// the calls do not all arrive at the same instant.
async fn drive(
    client: &reqwest::Client,
    targets: &Arc<[String; 2]>,
    body: Bytes,
    n: usize,
    c: usize,
    first_byte: bool,
    stagger: Duration,
) -> [Vec<Duration>; 2] {
    let next = Arc::new(AtomicUsize::new(0));
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let mut workers = Vec::new();
    for worker in 0..c {
        let (client, next, targets, body) =
            (client.clone(), next.clone(), targets.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            tokio::time::sleep(stagger * worker as u32).await;
            let mut lat = [Vec::with_capacity(n), Vec::with_capacity(n)];
            for call in 0usize.. {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 2 * n {
                    break;
                }
                let which = i % 2;
                let traceparent = format!(
                    "00-{:08x}{:08x}{:016x}-{:016x}-01",
                    run + 1,
                    worker + 1,
                    call / 10 + 1,
                    call + 1
                );
                let t = Instant::now();
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
    sorted_latencies(workers).await
}

/// The floor: a bare TCP relay to `upstream` in a process of its own (this
/// program again), the least any proxy in between costs on this machine.
async fn relay(upstream: String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    eprintln!("relay ready addr={}", listener.local_addr().expect("addr"));
    loop {
        let (mut client, _) = listener.accept().await.expect("accept");
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let mut server = tokio::net::TcpStream::connect(upstream)
                .await
                .expect("connect");
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

/// Runs both kinds of call at each level against `[direct, other]` and
/// prints a row for each; returns the calls that went to `other`.
async fn pass(
    client: &reqwest::Client,
    targets: [String; 2],
    levels: &[usize],
    n: usize,
    staggered: bool,
) -> usize {
    let targets = Arc::new(targets);
    let mut calls = 0;
    for &c in levels {
        let stagger = match staggered {
            true => latency() / c as u32,
            false => Duration::ZERO,
        };
        // Warm both paths at this concurrency (connections on both sides of
        // a proxy, allocator) before measuring.
        let warm = (4 * c).max(50);
        let body = Bytes::from(request_body(false));
        drive(client, &targets, body, warm, c, false, stagger).await;
        calls += warm;
        for (label, stream) in [
            ("non-streamed, full answer", false),
            ("streamed, first byte", true),
        ] {
            let body = Bytes::from(request_body(stream));
            let started = Instant::now();
            let [d, p] = drive(client, &targets, body, n, c, stream, stagger).await;
            let rate = (2 * n) as f64 / started.elapsed().as_secs_f64();
            calls += n;
            println!("| {label} | {c} | {rate:.0} | {} |", compared(&d, &p));
        }
    }
    calls
}

#[tokio::main]
async fn main() {
    if let Ok(upstream) = std::env::var("PROXY_BENCH_RELAY_TO") {
        return relay(upstream).await;
    }
    let n: usize = env_or("REQUESTS", 4000);
    let levels = levels("1,64");
    let upstream = serve_local(Router::new().route("/v1/chat/completions", post(provider))).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, http, proxy) = serve_llm_proxy(dir.path(), upstream, "info");
    let (mut relay, relay_ready) = spawn_ready(
        Command::new(std::env::current_exe().expect("this program"))
            .env("PROXY_BENCH_RELAY_TO", upstream.to_string()),
        "relay ready",
    );
    let relayed = field(&relay_ready, "addr");
    let url = |addr: &dyn std::fmt::Display| format!("http://{addr}/v1/chat/completions");
    let client = latency_client();
    let staggered =
        env_or("STAGGER", 1u8) == 1 && !latency().is_zero() && levels.iter().any(|&c| c > 1);

    println!(
        "LLM proxy vs direct calls to the same fake provider ({} ms latency{}): {n} calls of each per row, \
         request body {} bytes, each call recorded as a span (durable store, fsync on)",
        latency().as_millis(),
        if staggered { ", clients staggered over it" } else { "" },
        request_body(false).len()
    );
    println!();
    println!("| calls | concurrency | calls/s (both) | direct p50 / p99 (ms) | proxy p50 / p99 (ms) | added p50 / p99 (ms) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let proxied = pass(
        &client,
        [url(&upstream), url(&proxy)],
        &levels,
        n,
        staggered,
    )
    .await;
    println!();
    // Every proxied call became a span; how long the recording lagged the
    // last call.
    let last_call = Instant::now();
    let deadline = last_call + Duration::from_secs(60);
    let recorded = loop {
        let health: Value = client
            .get(format!("http://{http}/health"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("health JSON");
        let spans = health["accepted_spans"].as_u64().unwrap_or(0);
        if spans as usize >= proxied || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "spans recorded: {recorded} of {proxied} proxied calls (warm-up included), \
         the last {:.2} s after the last call ended",
        last_call.elapsed().as_secs_f64()
    );
    if env_or("FLOOR", 1u8) == 1 {
        println!();
        println!("The floor: a bare TCP relay (tokio, copy_bidirectional) in the proxy's place, same calls:");
        println!();
        println!("| calls | concurrency | calls/s (both) | direct p50 / p99 (ms) | relay p50 / p99 (ms) | added p50 / p99 (ms) |");
        println!("|---|---:|---:|---:|---:|---:|");
        pass(
            &client,
            [url(&upstream), url(&relayed)],
            &levels,
            n,
            staggered,
        )
        .await;
    }
    for c in [&mut child, &mut relay] {
        let _ = c.kill();
        let _ = c.wait();
    }
}
