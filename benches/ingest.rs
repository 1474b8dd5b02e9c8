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
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

#[path = "common/load.rs"]
mod load;

use load::{
    build_template, env_list, env_num, env_secs, env_str, free_addrs, status_kib, tail, Conn,
    Outcome, Protocol, Template, MAX_BACKOFF, REQUEST_TIMEOUT,
};

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

// ---------------------------------------------------------------- settings

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

// ---------------------------------------------------------------- clients

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

    fn accepted(&self, rejected: u64) -> u64 {
        self.spans.saturating_sub(rejected)
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
            r = tokio::time::timeout(REQUEST_TIMEOUT, conn.once(shared.body())) => match r {
                Ok(o) => o,
                Err(_) => Outcome::Failed("request timed out".into()),
            },
        };
        let mut pause = Duration::ZERO;
        let measuring = shared.phase.load(Ordering::Acquire) == MEASURE;
        match outcome {
            Outcome::Accepted(rejected) => {
                if measuring {
                    stats.ok += 1;
                    stats.spans += shared.accepted(rejected);
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

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

struct Running {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
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
