//! `oclagl collect` against a fake fork gateway with a fixed latency:
//! wall time against the ideal (prompts × latency ÷ concurrency) and the
//! collector's CPU time per rollout, at several concurrencies. The peer, in
//! the same run: a bare HTTP client (this program run again as a process of
//! its own) making the same calls, with no spans and no store.
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

/// Set in the bare client's process: the fake gateway's URL.
const BARE_CLIENT: &str = "BENCH_BARE_CLIENT_URL";

#[tokio::main]
async fn main() {
    if let Ok(url) = std::env::var(BARE_CLIENT) {
        let (prompts, concurrency) = (env_or("PROMPTS", 500), env_or("BARE_CONCURRENCY", 1));
        direct_client(&url, prompts, concurrency).await;
        return;
    }
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
    println!("| concurrency | wall (ms) | ideal (ms) | wall / ideal | CPU per rollout (ms) | start to first call (ms) | last answer to exit (ms) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &c in &levels {
        let ideal = prompts as f64 * latency.as_secs_f64() / c as f64;
        let mut bare = Command::new(std::env::current_exe().expect("this program"));
        bare.env(BARE_CLIENT, fork.url())
            .env("BARE_CONCURRENCY", c.to_string());
        let bare = timed(bare, &fork).await;
        println!("| {c}, bare HTTP client | {} |", bare.row(ideal, prompts));
        let run_dir = dir.path().join(format!("c{c}"));
        std::fs::create_dir_all(&run_dir).expect("run dir");
        std::fs::copy(dir.path().join("prompts.txt"), run_dir.join("prompts.txt")).expect("copy");
        let mut collect = Command::new(&bin);
        collect
            .current_dir(&run_dir)
            .args(["collect", "--concurrency", &c.to_string()])
            .env("GATEWAY_BASE_URL", fork.url())
            .env("INTERNAL_SECRET", "bench-secret")
            .env("OCLAGL_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        let collect = timed(collect, &fork).await;
        println!("| {c} | {} |", collect.row(ideal, prompts));
    }
}

/// One client run: wall and CPU seconds, and how the wall time splits
/// around the gateway's calls.
struct Timing {
    wall: f64,
    cpu: f64,
    /// From the process's start to the gateway's first request.
    start: Duration,
    /// From the gateway's last answer to the process's exit.
    exit: Duration,
}

impl Timing {
    fn row(&self, ideal: f64, prompts: usize) -> String {
        format!(
            "{:.0} | {:.0} | {:.3} | {:.3} | {:.1} | {:.1}",
            self.wall * 1000.0,
            ideal * 1000.0,
            self.wall / ideal,
            self.cpu * 1000.0 / prompts as f64,
            self.start.as_secs_f64() * 1000.0,
            self.exit.as_secs_f64() * 1000.0
        )
    }
}

/// Runs the command to its end against the fake gateway.
async fn timed(mut command: Command, fork: &fake_fork::FakeFork) -> Timing {
    command.stdout(Stdio::null()).stderr(Stdio::null());
    *fork.state.busy.lock().unwrap() = (None, None);
    let cpu_before = children_cpu();
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .expect("join")
        .expect("run the command");
    let ended = Instant::now();
    assert!(status.success(), "{status}");
    let (first, last) = *fork.state.busy.lock().unwrap();
    let (first, last) = (first.expect("a call"), last.expect("an answer"));
    Timing {
        wall: (ended - started).as_secs_f64(),
        cpu: children_cpu() - cpu_before,
        start: first - started,
        exit: ended - last,
    }
}

/// The same calls from a bare HTTP client (no spans, no store): the floor
/// that this machine and the fake gateway allow, measured in the same run.
async fn direct_client(url: &str, prompts: usize, concurrency: usize) {
    let client = reqwest::Client::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
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
}
