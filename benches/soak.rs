//! Soak test: `oclagl serve` under mixed load for a long time, killed with
//! SIGKILL and restarted now and then, forwarding to a second `oclagl serve`
//! that is killed and restarted more often (a flapping destination). At the
//! end, a reconciliation of what the clients were told against what is on
//! disk.
//!
//! Run: `benches/soak.sh` (builds the release binary, then this). Settings,
//! from the environment:
//!
//! | variable            | default        | meaning                                          |
//! |---------------------|----------------|--------------------------------------------------|
//! | `SOAK_DURATION`     | `1800`         | seconds of load                                  |
//! | `SOAK_CLIENTS`      | 2              | clients per protocol (gRPC and HTTP)             |
//! | `SOAK_RATE`         | 2              | requests per second per client (paced)           |
//! | `SOAK_SPANS`        | 50             | spans per request                                |
//! | `SOAK_SPANS_PER_TRACE` | 10          | spans per trace (one rollout per trace)          |
//! | `SOAK_KILL_EVERY`   | `120`          | seconds between SIGKILLs of the sidecar          |
//! | `SOAK_FLAP_EVERY`   | `40`           | seconds the destination stays up, then down      |
//! | `SOAK_SAMPLE_EVERY` | `5`            | seconds between RSS samples of the sidecar       |
//! | `SOAK_DIR`          | `target/soak`  | work folder (emptied first)                      |
//! | `OCLAGL_BIN`        | `target/release/oclagl` | the binary                              |
//!
//! Every request carries fresh trace ids with the request's number in them
//! (the ingest benchmark's template), so a span on disk tells which request
//! it came from. A request counts as acknowledged when it was answered with
//! success (HTTP 2xx / gRPC OK) and no rejected spans; those spans must all
//! be in the sidecar's store and in its trace files, and (delivery is at
//! least once) in the destination's store. Exits 1 when any is missing.

#[path = "common/load.rs"]
mod load;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use load::{
    build_template, env_num, env_secs, env_str, free_addrs, status_kib, tail, Conn, Outcome,
    Protocol, Template, MAX_BACKOFF, REQUEST_TIMEOUT,
};
use oclagl::export::read::trace_file::{self, Doc};
use oclagl::store::{wal, Record};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::sync::watch;

struct Config {
    duration: Duration,
    clients: usize,
    rate: f64,
    spans: usize,
    spans_per_trace: usize,
    kill_every: Duration,
    flap_every: Duration,
    sample_every: Duration,
    dir: PathBuf,
    bin: PathBuf,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let target = env_str("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
        let spans = env_num("SOAK_SPANS", 50)?;
        Ok(Config {
            duration: env_secs("SOAK_DURATION", 1800.0)?,
            clients: env_num("SOAK_CLIENTS", 2)?,
            rate: env_num("SOAK_RATE", 2)? as f64,
            spans,
            spans_per_trace: env_num("SOAK_SPANS_PER_TRACE", 10)?.min(spans),
            kill_every: env_secs("SOAK_KILL_EVERY", 120.0)?,
            flap_every: env_secs("SOAK_FLAP_EVERY", 40.0)?,
            sample_every: env_secs("SOAK_SAMPLE_EVERY", 5.0)?,
            dir: env_str("SOAK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&target).join("soak")),
            bin: env_str("OCLAGL_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&target).join("release/oclagl")),
        })
    }
}

// ---------------------------------------------------------------- processes

/// One `oclagl serve`, restartable on the same ports and folders.
struct Server {
    name: &'static str,
    dir: PathBuf,
    grpc: SocketAddr,
    http: SocketAddr,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Server {
    fn new(name: &'static str, root: &Path, extra: Vec<String>) -> Result<Server, String> {
        let (grpc, http) = free_addrs().map_err(|e| format!("no free port: {e}"))?;
        Ok(Server {
            name,
            dir: root.join(name),
            grpc,
            http,
            extra,
            child: None,
        })
    }

    fn log(&self) -> PathBuf {
        self.dir.join("serve.log")
    }

    /// Starts it and waits until both ports listen; returns how long that took.
    fn start(&mut self, bin: &Path) -> Result<Duration, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let began = Instant::now();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--grpc-addr")
            .arg(self.grpc.to_string())
            .arg("--http-addr")
            .arg(self.http.to_string())
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--traces-dir")
            .arg(self.dir.join("traces"))
            .args(&self.extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let up = |a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} exited at start ({status}):\n{}",
                    self.name,
                    tail(&self.log())
                ));
            }
            if up(self.grpc) && up(self.http) {
                self.child = Some(child);
                return Ok(began.elapsed());
            }
            if began.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not listen within 300 s", self.name));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no shutdown of any kind.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (SIGKILL after a minute); false if it had to be killed.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

// ---------------------------------------------------------------- clients

#[derive(Default)]
struct ClientLog {
    /// Numbers of the requests answered with success and nothing rejected.
    acked: Vec<u64>,
    /// Answered with success but with spans rejected (none should be).
    partial: u64,
    throttled: u64,
    failed: u64,
}

/// Sends one request every `1 / rate` seconds until `stop`, each with a new
/// number; a request in flight at `stop` is abandoned and not counted.
async fn client(
    mut conn: Conn,
    template: Arc<Template>,
    next: Arc<AtomicU64>,
    rate: f64,
    mut stop: watch::Receiver<bool>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let n = next.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            r = tokio::time::timeout(REQUEST_TIMEOUT, conn.once(template.request(n, true))) => {
                r.unwrap_or_else(|_| Outcome::Failed("timed out".into()))
            }
        };
        match outcome {
            Outcome::Accepted(0) => log.acked.push(n),
            Outcome::Accepted(_) => log.partial += 1,
            Outcome::Throttled(wait) => {
                log.throttled += 1;
                tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
            }
            Outcome::Failed(_) => log.failed += 1,
        }
    }
    log
}

// ---------------------------------------------------------------- disk

/// The request number a template trace id carries (its first 8 bytes).
fn request_number(trace_id: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(trace_id.get(..8)?.try_into().ok()?))
}

/// Spans per request number in a data folder's store.
fn store_counts(data_dir: &Path) -> Result<(HashMap<u64, u64>, u64), String> {
    let mut counts: HashMap<u64, u64> = HashMap::new();
    let mut undecodable = 0;
    wal::scan(&data_dir.join("wal"), |_, payload| {
        let request = Record::decode(payload.as_slice())
            .ok()
            .and_then(|r| ExportTraceServiceRequest::decode(r.export_trace_request).ok());
        let Some(request) = request else {
            undecodable += 1;
            return;
        };
        for span in request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            if let Some(n) = request_number(&span.trace_id) {
                *counts.entry(n).or_default() += 1;
            }
        }
    })
    .map_err(|e| format!("cannot scan {}: {e}", data_dir.display()))?;
    Ok((counts, undecodable))
}

/// Spans per request number in a folder of trace files (the rollout id
/// `ro-<number as 16 hex digits>-<trace>` names the request).
fn trace_file_counts(dir: &Path) -> Result<(HashMap<u64, u64>, u64), String> {
    let mut counts: HashMap<u64, u64> = HashMap::new();
    let mut unreadable = 0;
    let mut buf = Vec::new();
    let files = trace_file::list(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for path in files {
        let n = trace_file::read_into(&path, &mut buf).ok().and_then(|()| {
            let doc = Doc::parse(&buf).ok()?;
            let id = doc.rollout_id.as_deref()?;
            let hex = id.strip_prefix("ro-")?.get(..16)?;
            Some((u64::from_str_radix(hex, 16).ok()?, doc.spans.len() as u64))
        });
        match n {
            Some((n, spans)) => *counts.entry(n).or_default() += spans,
            None => unreadable += 1,
        }
    }
    Ok((counts, unreadable))
}

/// How many acknowledged requests lack some of their spans in `counts`.
fn missing(acked: &[u64], counts: &HashMap<u64, u64>, spans: u64) -> Vec<u64> {
    acked
        .iter()
        .copied()
        .filter(|n| counts.get(n).copied().unwrap_or(0) < spans)
        .collect()
}

// ---------------------------------------------------------------- metrics

/// The sum of a metric's series in a Prometheus text page.
fn metric_sum(page: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = page
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Waits until the sidecar reports no forwarding backlog; false on timeout.
async fn drained(http: SocketAddr, timeout: Duration) -> bool {
    let client = reqwest::Client::new();
    let began = Instant::now();
    while began.elapsed() < timeout {
        let page = match client.get(format!("http://{http}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if metric_sum(&page, "oclagl_forward_backlog_bytes") == Some(0.0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

// ---------------------------------------------------------------- main

/// RSS samples of one run of the sidecar (between two kills).
struct Segment {
    started_s: f64,
    listen_s: f64,
    rss_kib: Vec<u64>,
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<bool, String> {
    let cfg = Config::from_env()?;
    if !cfg.bin.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release` or set OCLAGL_BIN",
            cfg.bin.display()
        ));
    }
    let _ = std::fs::remove_dir_all(&cfg.dir);
    std::fs::create_dir_all(&cfg.dir).map_err(|e| e.to_string())?;
    let mut dest = Server::new("destination", &cfg.dir, Vec::new())?;
    let forward = format!("grpc://{}", dest.grpc);
    let mut sut = Server::new("sidecar", &cfg.dir, vec!["--forward".into(), forward])?;
    let template = Arc::new(build_template(cfg.spans, cfg.spans_per_trace));
    let spans = cfg.spans as u64;
    println!("oclagl soak test");
    println!(
        "  load: {} gRPC + {} HTTP clients, {} requests/s each, {} spans/request ({} bytes), \
         {} spans/trace, for {:.0} s",
        cfg.clients,
        cfg.clients,
        cfg.rate,
        cfg.spans,
        template.bytes.len(),
        cfg.spans_per_trace,
        cfg.duration.as_secs_f64()
    );
    println!(
        "  chaos: sidecar SIGKILLed and restarted every {:.0} s; destination (--forward grpc) \
         SIGKILLed / restarted every {:.0} s",
        cfg.kill_every.as_secs_f64(),
        cfg.flap_every.as_secs_f64()
    );
    println!(
        "  binary: {}; folder: {}",
        cfg.bin.display(),
        cfg.dir.display()
    );

    dest.start(&cfg.bin)?;
    let began = Instant::now();
    let first_listen = sut.start(&cfg.bin)?;
    let mut segments = vec![Segment {
        started_s: 0.0,
        listen_s: first_listen.as_secs_f64(),
        rss_kib: Vec::new(),
    }];

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicU64::new(1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    {
        let _guard = rt.enter();
        for protocol in [Protocol::Grpc, Protocol::Http] {
            let addr = match protocol {
                Protocol::Grpc => sut.grpc,
                Protocol::Http => sut.http,
            };
            for _ in 0..cfg.clients {
                let conn = Conn::new(protocol, addr)?;
                tasks.push((
                    protocol,
                    rt.spawn(client(
                        conn,
                        template.clone(),
                        next.clone(),
                        cfg.rate,
                        stop_rx.clone(),
                    )),
                ));
            }
        }
    }

    // Chaos and sampling, on this thread, once a 100 ms tick.
    let (mut next_kill, mut next_flap, mut next_sample) =
        (cfg.kill_every, cfg.flap_every, Duration::ZERO);
    let (mut kills, mut flaps) = (0, 0);
    while began.elapsed() < cfg.duration {
        let now = began.elapsed();
        if now >= next_sample {
            next_sample = now + cfg.sample_every;
            if let Some(kib) = sut
                .pid()
                .and_then(|pid| status_kib(&pid.to_string(), "VmRSS"))
            {
                if let Some(segment) = segments.last_mut() {
                    segment.rss_kib.push(kib);
                }
            }
        }
        if now >= next_kill {
            next_kill = now + cfg.kill_every;
            sut.kill();
            kills += 1;
            let listen = sut.start(&cfg.bin)?;
            segments.push(Segment {
                started_s: now.as_secs_f64(),
                listen_s: listen.as_secs_f64(),
                rss_kib: Vec::new(),
            });
        }
        if now >= next_flap {
            next_flap = now + cfg.flap_every;
            if dest.pid().is_some() {
                dest.kill();
                flaps += 1;
            } else {
                dest.start(&cfg.bin)?;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = stop_tx.send(true);
    let load_s = began.elapsed().as_secs_f64();
    let mut by_protocol: HashMap<&str, ClientLog> = HashMap::new();
    for (protocol, task) in tasks {
        let log = rt.block_on(task).map_err(|e| e.to_string())?;
        let total = by_protocol.entry(protocol.name()).or_default();
        total.acked.extend(log.acked);
        total.partial += log.partial;
        total.throttled += log.throttled;
        total.failed += log.failed;
    }
    if dest.pid().is_none() {
        dest.start(&cfg.bin)?;
    }
    let drain_began = Instant::now();
    let drained = rt.block_on(drained(sut.http, Duration::from_secs(300)));
    let drain_s = drain_began.elapsed().as_secs_f64();
    let sut_clean = sut.stop();
    let dest_clean = dest.stop();

    // ------------------------------------------------------------ reconcile
    let acked: Vec<u64> = by_protocol
        .values()
        .flat_map(|l| l.acked.iter().copied())
        .collect();
    let (stored, sut_undecodable) = store_counts(&sut.dir.join("data"))?;
    let (in_files, unreadable) = trace_file_counts(&sut.dir.join("traces"))?;
    let (delivered, dest_undecodable) = store_counts(&dest.dir.join("data"))?;
    let lost_store = missing(&acked, &stored, spans);
    let lost_files = missing(&acked, &in_files, spans);
    let lost_dest = missing(&acked, &delivered, spans);
    let stored_spans: u64 = stored.values().sum();
    let delivered_spans: u64 = delivered.values().sum();
    let duplicates: u64 = delivered
        .iter()
        .map(|(n, c)| c.saturating_sub(stored.get(n).copied().unwrap_or(0)))
        .sum();

    println!();
    println!("load ({load_s:.0} s):");
    let mut acked_spans_total = 0;
    for (name, log) in &by_protocol {
        let acked_spans = log.acked.len() as u64 * spans;
        acked_spans_total += acked_spans;
        println!(
            "  {name:<4}: {} requests acknowledged ({acked_spans} spans, {:.0} spans/s), \
             {} failed (sidecar down or restarting), {} throttled, {} partially rejected",
            log.acked.len(),
            acked_spans as f64 / load_s,
            log.failed,
            log.throttled,
            log.partial
        );
    }
    println!(
        "  total: {acked_spans_total} spans acknowledged, {:.0} spans/s over the run",
        acked_spans_total as f64 / load_s
    );
    println!("  chaos: {kills} SIGKILLs of the sidecar, {flaps} of the destination");
    println!();
    println!(
        "sidecar RSS per run (MiB; sampled every {:.0} s):",
        cfg.sample_every.as_secs_f64()
    );
    println!(
        "  {:>3} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7}",
        "run", "from s", "listen s", "first", "last", "max", "samples"
    );
    let mib = |k: u64| k as f64 / 1024.0;
    for (i, s) in segments.iter().enumerate() {
        let first = s.rss_kib.first().copied().unwrap_or(0);
        let last = s.rss_kib.last().copied().unwrap_or(0);
        let max = s.rss_kib.iter().copied().max().unwrap_or(0);
        println!(
            "  {:>3} {:>8.0} {:>9.2} {:>7.1} {:>7.1} {:>7.1} {:>7}",
            i + 1,
            s.started_s,
            s.listen_s,
            mib(first),
            mib(last),
            mib(max),
            s.rss_kib.len()
        );
    }
    println!();
    println!("reconciliation:");
    println!(
        "  sidecar store: {stored_spans} spans of {} requests ({sut_undecodable} undecodable records)",
        stored.len()
    );
    println!(
        "  acknowledged spans lost: store {}, trace files {} ({} unreadable trace files)",
        lost_store.len() as u64 * spans,
        lost_files.len() as u64 * spans,
        unreadable
    );
    println!(
        "  destination: {delivered_spans} spans delivered ({duplicates} duplicates, at least once; \
         {dest_undecodable} undecodable records); acknowledged spans never delivered: {}",
        lost_dest.len() as u64 * spans
    );
    println!(
        "  forwarding backlog drained after the load: {} ({drain_s:.1} s); final SIGTERM clean: \
         sidecar {sut_clean}, destination {dest_clean}",
        if drained { "yes" } else { "NO" }
    );
    for (what, lost) in [
        ("store", &lost_store),
        ("trace files", &lost_files),
        ("destination", &lost_dest),
    ] {
        if let Some(n) = lost.first() {
            println!("  first request missing from the {what}: #{n}");
        }
    }
    let ok = lost_store.is_empty()
        && lost_files.is_empty()
        && lost_dest.is_empty()
        && !acked.is_empty()
        && drained;
    println!("verdict: {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}
