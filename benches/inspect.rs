//! `oclagl ls` on a store of 100,000 rollouts, against a plain `ls -l` of
//! the same rollouts' trace files measured in the same run.
//!
//! Run: `benches/run-inspect.sh` (or `cargo bench --bench inspect`). The store
//! is generated once under `target/bench-inspect/` (the generator of
//! `tests/support/rollouts.rs`, sent to `oclagl serve --fsync false`) and
//! reused while it holds `BENCH_ROLLOUTS` rollouts. Settings:
//!
//! | variable         | default | meaning                          |
//! |------------------|---------|----------------------------------|
//! | `BENCH_ROLLOUTS` | 100000  | rollouts in the generated store  |
//! | `BENCH_RUNS`     | 5       | runs of each command (median)    |

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::rollouts::{generate, summarised, wait_summarised};
use support::{Server, BIN};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median wall time of `runs` runs of a command, its output discarded.
fn median(runs: u64, program: &str, args: &[&str], dir: &Path) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let status = Command::new(program)
                .args(args)
                .current_dir(dir)
                .env("NO_COLOR", "1")
                .env("OCLAGL_DATA_DIR", "data")
                .stdout(Stdio::null())
                .status()
                .expect("run");
            assert!(status.success(), "{program} {args:?} failed");
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_ROLLOUTS", 100_000);
    let runs = env_or("BENCH_RUNS", 5).max(1);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-inspect");
    let data = dir.join("data");
    if summarised(&data) != n as usize {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench folder");
        eprintln!("generating {n} rollouts in {}", dir.display());
        let started = Instant::now();
        let server = Server::start_in(&dir, &["--fsync", "false", "--quiet", "50ms"]);
        generate(&server, n, 50).await;
        wait_summarised(&data, n as usize, Duration::from_secs(3600));
        assert!(server.terminate().success());
        eprintln!("generated in {:.1}s", started.elapsed().as_secs_f64());
    }
    let traces = dir.join("traces");
    let files = std::fs::read_dir(&traces).expect("traces").count();
    println!("store: {n} rollouts, {files} trace files, oclagl {BIN}");
    let peer = median(
        runs,
        "ls",
        &["-l", traces.to_str().expect("utf-8 path")],
        &dir,
    );
    println!(
        "{:<58} {:>8.3}s  (peer)",
        "ls -l traces/",
        peer.as_secs_f64()
    );
    for args in [
        &["ls"][..],
        &["ls", "--json"],
        &["ls", "--status", "failed", "--sort", "reward", "-r"],
        &[
            "ls",
            "--since",
            "2026-02-02T02:00:00Z",
            "--min-reward",
            "0.5",
            "-n",
            "20",
        ],
    ] {
        let t = median(runs, BIN, args, &dir);
        println!(
            "{:<58} {:>8.3}s  {:.2}x the peer",
            format!("oclagl {}", args.join(" ")),
            t.as_secs_f64(),
            t.as_secs_f64() / peer.as_secs_f64()
        );
    }
}
