//! Added latency and throughput of `oclagl bridge` over a direct call to the
//! same (fake) fork gateway, at 1 and 64 concurrent chats.
//!
//! Run: `bash benches/run-bridge.sh`. Knobs: REQUESTS (2000), LATENCY_MS (0),
//! CONCURRENCY ("1,64"), OCLAGL_BIN.

mod common;
#[path = "../tests/support/fake_fork.rs"]
mod fake_fork;

use common::{env_or, field, levels, oclagl_bin, pct, spawn_ready};

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

const SECRET: &str = "bench-secret";

/// Builds request `i`: extra headers and the JSON body.
type MakeRequest = Arc<dyn Fn(usize) -> (Vec<(&'static str, String)>, String) + Send + Sync>;

/// Sends `n` requests with `c` at a time; returns (requests/s, sorted latencies).
async fn drive(url: String, body: MakeRequest, n: usize, c: usize) -> (f64, Vec<Duration>) {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..c {
        let (client, url, next, body) = (client.clone(), url.clone(), next.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return lat;
                }
                let (headers, payload) = body(i);
                let mut req = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(payload);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let t = Instant::now();
                let resp = req.send().await.expect("request");
                assert!(resp.status().is_success(), "status {}", resp.status());
                let _ = resp.bytes().await;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let rps = n as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (rps, all)
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("REQUESTS", 2000);
    let latency = Duration::from_millis(env_or("LATENCY_MS", 0));
    let levels = levels("1,64");
    let bin = oclagl_bin();
    let fork = fake_fork::FakeFork::start(SECRET, latency).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, ready) = spawn_ready(
        Command::new(&bin)
            .current_dir(dir.path())
            .args(["bridge", "--port", "0"])
            .env("INTERNAL_SECRET", SECRET)
            .env("GATEWAY_BASE_URL", fork.url())
            .env("OCLAGL_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "oclagl bridge listening",
    );
    let bridge = field(&ready, "addr");
    let gw = fork.url();

    println!(
        "oclagl bridge vs direct gateway call: {n} requests per run, fake fork latency {} ms",
        latency.as_millis()
    );
    println!("| concurrency | direct req/s | bridge req/s | direct p50 / p99 (ms) | bridge p50 / p99 (ms) | added p50 / p99 (ms) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &c in &levels {
        let direct_body: MakeRequest = Arc::new(|i| {
            (
                vec![("x-openclaw-internal-secret", SECRET.to_string()), ("x-openclaw-idempotency-key", format!("d{i}"))],
                json!({"sessionKey": "agent:main:main", "message": format!("m{i}"), "idempotencyKey": format!("d{i}"), "mode": "cli"}).to_string(),
            )
        });
        let gw2 = gw.clone();
        let bridge_body: MakeRequest = Arc::new(move |i| {
            (
                vec![],
                json!({"sessionKey": "agent:main:main", "message": format!("m{i}"), "attachments": [],
                    "idempotencyKey": format!("b{c}-{i}"), "gatewayBaseUrl": gw2, "internalSecret": SECRET})
                .to_string(),
            )
        });
        let (d_rps, d) = drive(
            format!("{gw}/_openclaw/internal/agent-run"),
            direct_body,
            n,
            c,
        )
        .await;
        let (b_rps, b) = drive(format!("http://{bridge}/chat"), bridge_body, n, c).await;
        println!(
            "| {c} | {d_rps:.0} | {b_rps:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            pct(&d, 0.5),
            pct(&d, 0.99),
            pct(&b, 0.5),
            pct(&b, 0.99),
            pct(&b, 0.5) - pct(&d, 0.5),
            pct(&b, 0.99) - pct(&d, 0.99)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
