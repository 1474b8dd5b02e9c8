//! `oclagl collect` against a fake fork gateway with a fixed latency:
//! wall time against the ideal (prompts × latency ÷ concurrency) and the
//! collector's CPU time per rollout, at several concurrencies.
//!
//! Run: `bash benches/run-collect.sh` (or `cargo bench --bench collect`).
//! Knobs: PROMPTS (500), LATENCY_MS (200), CONCURRENCY ("1,8,64"), OCLAGL_BIN.

mod common;
#[path = "../tests/support/fake_fork.rs"]
mod fake_fork;

use common::{env_or, levels, oclagl_bin};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// CPU seconds (user + system) of all waited-for children so far.
fn children_cpu() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[tokio::main]
async fn main() {
    let prompts: usize = env_or("PROMPTS", 500);
    let latency = Duration::from_millis(env_or("LATENCY_MS", 200));
    let levels = levels("1,8,64");
    let bin = oclagl_bin();
    let fork = fake_fork::FakeFork::start("bench-secret", latency).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lines: Vec<String> = (0..prompts)
        .map(|i| format!("benchmark prompt number {i}"))
        .collect();
    std::fs::write(dir.path().join("prompts.txt"), lines.join("\n")).expect("write prompts");

    println!(
        "oclagl collect: {prompts} prompts, fake gateway latency {} ms",
        latency.as_millis()
    );
    println!("| concurrency | wall (s) | ideal (s) | wall / ideal | CPU per rollout (ms) |");
    println!("|---:|---:|---:|---:|---:|");
    for &c in &levels {
        let direct = direct_client(&fork.url(), prompts, c).await;
        println!(
            "| {c}, bare HTTP client | {direct:.2} | {:.2} | {:.3} | |",
            prompts as f64 * latency.as_secs_f64() / c as f64,
            direct / (prompts as f64 * latency.as_secs_f64() / c as f64)
        );
        let run_dir = dir.path().join(format!("c{c}"));
        std::fs::create_dir_all(&run_dir).expect("run dir");
        std::fs::copy(dir.path().join("prompts.txt"), run_dir.join("prompts.txt")).expect("copy");
        let cpu_before = children_cpu();
        let started = Instant::now();
        let url = fork.url();
        let bin = bin.clone();
        let status = tokio::task::spawn_blocking(move || {
            Command::new(&bin)
                .current_dir(&run_dir)
                .args(["collect", "--concurrency", &c.to_string()])
                .env("GATEWAY_BASE_URL", url)
                .env("INTERNAL_SECRET", "bench-secret")
                .env("OCLAGL_LOG", "warn")
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        })
        .await
        .expect("join")
        .expect("run oclagl");
        let wall = started.elapsed().as_secs_f64();
        let cpu = children_cpu() - cpu_before;
        assert!(status.success(), "collect failed at concurrency {c}");
        let ideal = prompts as f64 * latency.as_secs_f64() / c as f64;
        println!(
            "| {c} | {wall:.2} | {ideal:.2} | {:.3} | {:.3} |",
            wall / ideal,
            cpu * 1000.0 / prompts as f64
        );
    }
}

/// The same calls from a bare HTTP client (no spans, no store): the floor
/// that this machine and the fake gateway allow, measured in the same run.
async fn direct_client(url: &str, prompts: usize, concurrency: usize) -> f64 {
    let client = reqwest::Client::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next) = (client.clone(), next.clone());
            let url = format!("{url}/_openclaw/internal/agent-run");
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < prompts {
                    let body = serde_json::json!({
                        "sessionKey": "agent:dev:main",
                        "message": "benchmark prompt",
                        "idempotencyKey": "k",
                        "mode": "agent",
                    });
                    let answer = client
                        .post(&url)
                        .header("X-OpenClaw-Internal-Secret", "bench-secret")
                        .json(&body)
                        .send()
                        .await
                        .expect("fake gateway answers");
                    assert!(answer.status().is_success(), "fake gateway refused");
                    answer.bytes().await.expect("answer body");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    started.elapsed().as_secs_f64()
}
