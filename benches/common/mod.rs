//! Setup shared by the benchmarks that drive the `oclagl` binary against the
//! fake fork gateway of `tests/support/fake_fork.rs`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A number from the environment, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The concurrency levels to run (`CONCURRENCY="1,8,64"`), or `default`.
pub fn levels(default: &str) -> Vec<usize> {
    std::env::var("CONCURRENCY")
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// `OCLAGL_BIN`, or the release binary of this checkout.
pub fn oclagl_bin() -> PathBuf {
    std::env::var("OCLAGL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/oclagl"))
}

/// Percentile `p` (0..1) of sorted latencies, in milliseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Starts `cmd` and waits for the stderr line holding `marker`; returns the
/// child and that line. Later stderr is read and dropped.
pub fn spawn_ready(cmd: &mut Command, marker: &'static str) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start oclagl");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(marker) {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("oclagl did not log {marker:?}"));
    (child, line)
}

/// The value of ` name=` in a log line.
pub fn field(line: &str, name: &str) -> String {
    let rest = line.split(&format!(" {name}=")).nth(1).unwrap_or("");
    rest.split_whitespace().next().unwrap_or("").to_string()
}

/// Starts `oclagl serve` in `dir` with its LLM proxy in front of
/// `upstream` (`http://<upstream>/v1`), logging at `log`; returns the child
/// and its OTLP/HTTP and LLM proxy addresses.
pub fn serve_llm_proxy(
    dir: &Path,
    upstream: std::net::SocketAddr,
    log: &str,
) -> (Child, String, String) {
    let (child, ready) = spawn_ready(
        Command::new(oclagl_bin())
            .current_dir(dir)
            .args([
                "serve",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(["--llm-proxy", "127.0.0.1:0", "--llm-upstream"])
            .arg(format!("http://{upstream}/v1"))
            .env("OCLAGL_LOG", log),
        "oclagl serve ready",
    );
    let (http, proxy) = (field(&ready, "http"), field(&ready, "llm_proxy"));
    (child, http, proxy)
}

/// The HTTP client of the latency benchmarks: one for the whole run, so
/// every row finds its connections open; no compression, no Nagle.
pub fn latency_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()
        .expect("client")
}

/// The latencies of clients that each timed calls of two kinds, together
/// and sorted, kind by kind.
pub async fn sorted_latencies(
    workers: Vec<tokio::task::JoinHandle<[Vec<Duration>; 2]>>,
) -> [Vec<Duration>; 2] {
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

/// Serves `app` on an ephemeral loopback port (a fake provider); its address.
pub async fn serve_local(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("local server") });
    addr
}

/// The table cells of a comparison: p50 / p99 of `direct`, of `other`, and
/// what `other` adds (ms).
pub fn compared(direct: &[Duration], other: &[Duration]) -> String {
    format!(
        "{:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3}",
        pct(direct, 0.5),
        pct(direct, 0.99),
        pct(other, 0.5),
        pct(other, 0.99),
        pct(other, 0.5) - pct(direct, 0.5),
        pct(other, 0.99) - pct(direct, 0.99)
    )
}
