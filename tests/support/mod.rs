//! Shared helpers for black-box tests: start the real `oclagl` binary on
//! ephemeral ports in a temporary folder, build OTLP spans, read trace files.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod agl;
pub mod bridge;
pub mod fake_fork;
pub mod gateway;
pub mod otlp;
pub mod rollouts;
pub mod traces;

pub use otlp::{kv, request, span};

pub const BIN: &str = env!("CARGO_BIN_EXE_oclagl");

/// Rows of a JSONL file, parsed.
pub fn rows(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad row {l}: {e}")))
        .collect()
}

/// Sends SIGINT (what Ctrl-C sends) to process `pid`.
pub fn interrupt(pid: u32) {
    let sent = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -INT {pid}");
}

/// Serves `app` on an ephemeral loopback port for the rest of the test.
pub async fn serve_on_loopback(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A running `oclagl serve` with its own data and traces folders.
pub struct Server {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The LLM proxy, when started with `--llm-proxy`.
    pub llm_proxy: Option<SocketAddr>,
    pub dir: PathBuf,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts in a fresh temporary folder (kept in `dir`).
    pub fn start(extra: &[&str]) -> (Server, tempfile::TempDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let server = Server::start_in(tmp.path(), extra);
        (server, tmp)
    }

    /// Starts (or restarts) on the data in `dir`, with a short quiet period.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        Server::start_logged(dir, extra, "info")
    }

    /// Like [`Server::start`], with these environment variables set too.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let server = Server::spawn(tmp.path(), extra, "info", env);
        (server, tmp)
    }

    /// Like [`Server::start_in`], with `OCLAGL_LOG` set to `log`.
    pub fn start_logged(dir: &Path, extra: &[&str], log: &str) -> Server {
        Server::spawn(dir, extra, log, &[])
    }

    fn spawn(dir: &Path, extra: &[&str], log: &str, env: &[(&str, &str)]) -> Server {
        let mut args = vec!["serve".to_string()];
        for flag in ["--grpc-addr", "--http-addr"] {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), "127.0.0.1:0".to_string()]);
            }
        }
        args.push("--data-dir".into());
        args.push(dir.join("data").display().to_string());
        args.push("--traces-dir".into());
        args.push(dir.join("traces").display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(BIN)
            .args(&args)
            .env("OCLAGL_LOG", log)
            // Flags given in `extra` override this (also checks env support).
            .env("OCLAGL_QUIET", "200ms")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn oclagl");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("oclagl serve ready") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line.clone());
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let ready = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("oclagl did not start:\n{}", log.lock().unwrap());
            }
        };
        let field = |name: &str| -> Option<SocketAddr> {
            let start = ready
                .find(&format!(" {name}="))
                .expect("addr in ready line")
                + name.len()
                + 2;
            let rest = &ready[start..];
            rest.split_whitespace().next().unwrap().parse().ok()
        };
        Server {
            grpc: field("grpc").expect("grpc address"),
            http: field("http").expect("http address"),
            llm_proxy: field("llm_proxy"),
            child,
            dir: dir.to_path_buf(),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn traces_dir(&self) -> PathBuf {
        self.dir.join("traces")
    }

    /// The bytes of the records the store holds.
    pub fn stored_bytes(&self) -> usize {
        let mut total = 0;
        oclagl::store::wal::scan(&self.dir.join("data").join("wal"), |_, payload| {
            total += payload.len()
        })
        .expect("the store scans");
        total
    }

    /// The attributes of the LLM proxy's span of trace `[n; 16]` as the
    /// store holds them (read while the server runs; the span is stored
    /// before its trace file is written, so wait for that first).
    pub fn stored_proxy_span(&self, n: u8) -> serde_json::Map<String, Value> {
        use oclagl::store::Record;
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        let mut found = None;
        oclagl::store::wal::scan(&self.dir.join("data").join("wal"), |_, payload| {
            let record = Record::decode(payload.as_slice()).expect("a store record");
            let export = ExportTraceServiceRequest::decode(record.export_trace_request)
                .expect("an OTLP export");
            for span in export
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                if span.trace_id == [n; 16] && span.name.starts_with("chat") {
                    found = Some(oclagl::agl::span::flatten_attributes(&span.attributes));
                }
            }
        })
        .expect("the store scans");
        found.unwrap_or_else(|| panic!("no stored proxy span of trace {n}"))
    }

    /// `kill -9`.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        terminate(&mut self.child, "oclagl serve")
    }

    /// Peak resident memory of the server process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("oclagl exited ({status}):\n{}", self.log());
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM to `child`, then its exit status (at most 30 s later).
pub fn terminate(child: &mut Child, what: &str) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn trace_files(dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("rollout_") && name.ends_with(".json") {
            let text = std::fs::read_to_string(entry.path()).expect("read trace file");
            out.push((
                name,
                serde_json::from_str(&text).expect("trace file is JSON"),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Waits until `check` holds for the trace files in `dir`.
pub fn wait_for_files(
    dir: &Path,
    what: &str,
    check: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    // Generous: only a failing test waits it out, and a loaded machine (CI
    // beside other work) can take tens of seconds to write big files.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let files = trace_files(dir);
        if check(&files) {
            return files;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; files: {:#?}",
                files.iter().map(|f| &f.0).collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The spans of a trace file whose name passes `pred`.
pub fn spans_named<'a>(doc: &'a Value, pred: impl Fn(&str) -> bool + 'a) -> Vec<&'a Value> {
    doc["spans"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|s| s["name"].as_str().is_some_and(&pred))
                .collect()
        })
        .unwrap_or_default()
}

/// `00-<trace>-<span>-01` with the trace id `n` repeated.
pub fn traceparent(n: u8) -> String {
    format!("00-{}-{}-01", hex::encode([n; 16]), hex::encode([0x77; 8]))
}

/// The LLM proxy's span of trace `n` (see [`traceparent`]), once its trace
/// file is written.
pub fn proxy_span(traces: &Path, n: u8) -> Value {
    let trace = hex::encode([n; 16]);
    let find = |files: &[(String, Value)]| {
        files.iter().find_map(|(_, d)| {
            spans_named(d, |name| name.starts_with("chat"))
                .into_iter()
                .find(|s| s["trace_id"] == trace.as_str())
                .cloned()
        })
    };
    let files = wait_for_files(traces, &format!("the span of trace {n}"), |f| {
        find(f).is_some()
    });
    find(&files).unwrap()
}

/// The span ids found across trace files.
pub fn span_ids(files: &[(String, Value)]) -> std::collections::HashSet<String> {
    files
        .iter()
        .flat_map(|(_, f)| f["spans"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["span_id"].as_str().map(str::to_string))
        .collect()
}

/// The Python interpreter of the test venv (made by `tests/run.sh`).
pub fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `bash tests/run.sh`, which installs the Python peers (OpenTelemetry SDK, agentlightning 0.3.0)",
        p.display()
    );
    p
}

pub fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// Runs a Python script of `tests/py` and returns its stdout; fails the test
/// with its output when it exits non-zero.
pub fn run_py(script: &str, args: &[&str]) -> String {
    run_py_with(script, args, &[])
}

/// [`run_py`] with these environment variables set.
pub fn run_py_with(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(python())
        .arg(py_script(script))
        .args(args)
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .envs(env.iter().copied())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} failed:\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every byte of every file under `dir` (recursively), to look for secrets.
pub fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
    out
}

/// Does any file under `dir` contain `needle`?
pub fn disk_contains(dir: &Path, needle: &str) -> bool {
    all_bytes(dir)
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A loopback port that was free a moment ago (for a server started later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The value of one series of a Prometheus text page (`name{labels}`).
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs `oclagl serve` (on ephemeral loopback ports unless `args` names
/// them) in a fresh data folder and checks that it refuses to start, with
/// exit code 2 and a message containing `want`.
pub fn serve_refuses(args: &[&str], env: &[(&str, &str)], want: &str) {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve");
    for flag in ["--grpc-addr", "--http-addr"] {
        if !args.contains(&flag) {
            cmd.args([flag, "127.0.0.1:0"]);
        }
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .env("OCLAGL_DATA_DIR", data.path())
        .output()
        .expect("run oclagl serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
    assert!(err.contains(want), "{args:?} {env:?}: {err}");
}
