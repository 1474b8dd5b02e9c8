//! Added latency of the oclagl hop in front of Agent Lightning v1's
//! per-rollout proxy (`oclagl serve --llm-proxy`, the calls' trace bound to
//! an AGL rollout) over calling AGL's proxy directly, in the same run: the
//! real AGL v1 server (`target/venv-agl1`, see `tests/install-agl1.sh`) in
//! front of a local model server that answers at once, 1 and 64 calls at a
//! time. Each client alternates direct and oclagl calls through one HTTP
//! client whose connections are opened before measuring, so both see the
//! same load. Two rows a level: the same non-streamed call both ways, and a
//! streamed call through oclagl (de-streamed: sent to AGL without streaming,
//! answered as events) against its non-streamed twin sent directly (AGL
//! refuses streams), both timed to the answer's last byte.
//!
//! Run: `bash benches/run-agl.sh`. Knobs: REQUESTS (1000 per kind and
//! level), CONCURRENCY ("1,64"), OCLAGL_BIN.

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::{
    compared, env_or, latency_client, levels, serve_llm_proxy, serve_local, sorted_latencies,
};

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

const KEY: &str = "bench-agl-key";
const ROLLOUT: &str = "bench-1";

/// The model server behind AGL: a small chat completion with token ids, as
/// vLLM answers AGL, made once.
async fn model(_body: Bytes) -> axum::response::Response {
    static ANSWER: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let answer = ANSWER.get_or_init(|| {
        let answer = json!({"id": "chatcmpl-b", "object": "chat.completion", "model": "m-1",
            "prompt_token_ids": (0..900).collect::<Vec<u32>>(),
            "choices": [{"index": 0, "finish_reason": "stop", "token_ids": [1, 2, 3],
                         "message": {"role": "assistant", "content": "Hello there."}}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 3, "total_tokens": 903}});
        Bytes::from(answer.to_string())
    });
    ([("content-type", "application/json")], answer.clone()).into_response()
}

/// A request like a gateway's: a long system prompt, tools, a user turn.
fn request_body(stream: bool) -> Bytes {
    let tools: Vec<Value> = (0..12)
        .map(|i| {
            json!({"type": "function", "function": {"name": format!("tool_{i}"),
            "description": "Does one thing to a file or folder.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}})
        })
        .collect();
    let mut body = json!({"model": "m-1", "stream": stream, "messages": [
        {"role": "system", "content": "You are a helpful assistant. ".repeat(100)},
        {"role": "user", "content": "Say hello."}], "tools": tools});
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    Bytes::from(body.to_string())
}

/// The trace of client `worker`'s calls (bound to the rollout).
fn trace(worker: usize) -> String {
    format!("{:032x}", worker + 1)
}

/// Sorted latencies of `n` calls of each of `[direct, via oclagl]`, `c` at
/// a time, each client alternating between them.
async fn drive(
    client: &reqwest::Client,
    targets: &Arc<[(String, Bytes); 2]>,
    n: usize,
    c: usize,
) -> [Vec<Duration>; 2] {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..c {
        let (client, next, targets) = (client.clone(), next.clone(), targets.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = [Vec::with_capacity(n), Vec::with_capacity(n)];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 2 * n {
                    break;
                }
                let which = i % 2;
                let (url, body) = &targets[which];
                let t = Instant::now();
                let resp = client
                    .post(url)
                    .header(
                        "traceparent",
                        format!("00-{}-{:016x}-01", trace(worker), i + 1),
                    )
                    .header("content-type", "application/json")
                    .bearer_auth(KEY)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("request");
                assert!(resp.status().is_success(), "status {}", resp.status());
                let _ = resp.bytes().await.expect("body");
                lat[which].push(t.elapsed());
            }
            lat
        }));
    }
    sorted_latencies(workers).await
}

/// Starts the AGL v1 server on a free port; its address.
fn start_agl() -> (std::process::Child, String, tempfile::TempDir) {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv-agl1/bin/agl-server");
    assert!(
        bin.exists(),
        "{} is missing: run `bash tests/install-agl1.sh`",
        bin.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(bin)
        .current_dir(dir.path())
        .args([
            format!("port={port}"),
            "host=127.0.0.1".into(),
            format!("key={KEY}"),
            "default_proxy.model_name=m-1".into(),
            format!("hydra.run.dir={}", dir.path().display()),
            "hydra.output_subdir=null".into(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agl-server");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "agl-server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, format!("http://127.0.0.1:{port}"), dir)
}

async fn ok(request: reqwest::RequestBuilder) {
    let resp = request.send().await.expect("request");
    let status = resp.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        resp.text().await.unwrap_or_default()
    );
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("REQUESTS", 1000);
    let levels = levels("1,64");
    let upstream = serve_local(Router::new().route("/v1/chat/completions", post(model))).await;

    let client = latency_client();
    let (mut agl, agl_url, _agl_dir) = start_agl();
    ok(client
        .post(format!("{agl_url}/api/models"))
        .bearer_auth(KEY)
        .json(&json!([{"model": "m-1", "endpoint": format!("http://{upstream}/v1")}])))
    .await;
    ok(client
        .post(format!("{agl_url}/api/rollouts"))
        .bearer_auth(KEY)
        .json(&json!([{"rollout_id": ROLLOUT, "input": {"prompt": "bench"}}])))
    .await;
    let base_url = format!("{agl_url}/proxy/rollout/{ROLLOUT}/attempt/0/mode/train/openai/v1");

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut oclagl, http, proxy) =
        serve_llm_proxy(dir.path(), upstream, "warn,oclagl::serve=info");
    let most = levels.iter().copied().max().unwrap_or(1);
    for worker in 0..most {
        ok(client
            .put(format!("http://{http}/v1/agl/bindings/{}", trace(worker)))
            .json(&json!({"base_url": base_url, "key": KEY})))
        .await;
    }

    println!(
        "oclagl's LLM proxy in front of AGL v1's per-rollout proxy vs calling AGL's proxy directly \
         (agentlightning 1.0.2, one uvicorn worker; model server answers at once): {n} calls of each per row, \
         request body {} bytes, each call recorded by AGL and by oclagl (durable store, fsync on)",
        request_body(false).len()
    );
    println!();
    println!("| calls | concurrency | direct p50 / p99 (ms) | via oclagl p50 / p99 (ms) | added p50 / p99 (ms) |");
    println!("|---|---:|---:|---:|---:|");
    let direct = (format!("{base_url}/chat/completions"), request_body(false));
    for &c in &levels {
        let plain = Arc::new([
            direct.clone(),
            (
                format!("http://{proxy}/v1/chat/completions"),
                request_body(false),
            ),
        ]);
        drive(&client, &plain, (4 * c).max(50), c).await;
        let streamed = Arc::new([
            direct.clone(),
            (
                format!("http://{proxy}/v1/chat/completions"),
                request_body(true),
            ),
        ]);
        for (label, targets) in [
            ("non-streamed, full answer", &plain),
            ("streamed via oclagl (de-streamed), full answer", &streamed),
        ] {
            let [d, p] = drive(&client, targets, n, c).await;
            println!("| {label} | {c} | {} |", compared(&d, &p));
        }
    }
    for child in [&mut oclagl, &mut agl] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
