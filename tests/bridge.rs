//! Black-box tests of `oclagl bridge` against a fake of the fork gateway.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::fake_fork::FakeFork;
use support::{trace_files, BIN};

const SECRET: &str = "bridge-secret-0b7f";

struct Bridge {
    child: Child,
    addr: SocketAddr,
}

impl Bridge {
    fn start(dir: &Path, gateway: &str, extra: &[&str]) -> Bridge {
        let mut child = Command::new(BIN)
            .current_dir(dir)
            .args(["bridge", "--port", "0"])
            .args(extra)
            .env("INTERNAL_SECRET", SECRET)
            .env("GATEWAY_BASE_URL", gateway)
            // Every log line there is, kept in the folder the secret checks read.
            .env("OCLAGL_LOG", "debug")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bridge");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut log = std::fs::File::create(dir.join("bridge.log")).expect("bridge.log");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Some(rest) = line.split("oclagl bridge listening addr=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("bridge ready")
            .parse()
            .unwrap();
        Bridge { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "bridge did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chat_body(message: &str, key: Option<&str>, gateway: &str, secret: &str) -> Value {
    let mut body = json!({"sessionKey": "agent:main:main", "message": message, "attachments": [],
        "gatewayBaseUrl": gateway, "internalSecret": secret});
    if let Some(key) = key {
        body["idempotencyKey"] = json!(key);
    }
    body
}

async fn post(bridge: &Bridge, body: impl Into<reqwest::Body>) -> (u16, Value) {
    post_to(bridge.url("/chat"), body).await
}

/// POSTs a chat; owns its arguments so it can run in a spawned task.
async fn post_to(url: String, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_of_the_contract_and_no_secret_on_disk() {
    let fork = FakeFork::start(SECRET, Duration::ZERO).await;
    let slow = FakeFork::start(SECRET, Duration::from_secs(5)).await;
    let tmp = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(
        tmp.path(),
        &fork.url(),
        &["--timeout", "1500ms", "--max-body", "64KiB"],
    );
    let gw = fork.url();

    let (status, body) = post(
        &bridge,
        chat_body("hi", Some("idem-1"), &gw, SECRET).to_string(),
    )
    .await;
    assert_eq!(
        (status, &body),
        (
            200,
            &json!({"ok": true, "responseText": "echo: hi", "runId": "idem-1"})
        )
    );
    let (status, body) = post(&bridge, chat_body("no key", None, &gw, SECRET).to_string()).await;
    assert_eq!(status, 200);
    assert!(
        body["runId"]
            .as_str()
            .is_some_and(|r| r.starts_with("run-")),
        "{body}"
    );
    let called = fork.requests().len();
    assert_eq!(called, 2);

    let cases: Vec<(String, u16)> = vec![
        ("{not json".into(), 400),
        (json!({"sessionKey": "agent:main:main"}).to_string(), 400),
        (chat_body("", None, &gw, SECRET).to_string(), 400),
        (chat_body("hi", None, &gw, "wrong-secret").to_string(), 401),
        (
            chat_body("hi", None, "http://10.1.2.3:18789", SECRET).to_string(),
            403,
        ),
        (
            chat_body(&"x".repeat(70 * 1024), None, &gw, SECRET).to_string(),
            413,
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = post(&bridge, body).await;
        assert_eq!(status, expected, "{answer}");
        assert_eq!(answer["ok"], false, "{answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(
        fork.requests().len(),
        called,
        "rejected requests ran nothing"
    );

    // The gateway fails: 502. The gateway is too slow: 504.
    fork.state.script.lock().unwrap().push_back(500);
    let (status, _) = post(&bridge, chat_body("boom", None, &gw, SECRET).to_string()).await;
    assert_eq!(status, 502);
    let (status, _) = post(
        &bridge,
        chat_body("slow", None, &slow.url(), SECRET).to_string(),
    )
    .await;
    assert_eq!(status, 504);

    let health: Value = reqwest::get(bridge.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["ok"], true);

    assert!(bridge.terminate().success());
    let files = trace_files(&tmp.path().join("traces"));
    assert_eq!(files.len(), 4, "one rollout per chat that ran");
    let statuses: Vec<_> = files
        .iter()
        .map(|f| f.1["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "succeeded").count(),
        2,
        "{statuses:?}"
    );
    for (_, doc) in &files {
        assert!(!doc["task_input"].to_string().contains(SECRET));
    }
    assert!(
        !support::disk_contains(tmp.path(), SECRET),
        "the secret reached the disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_chats_take_about_one_gateway_latency_and_duplicates_run_once() {
    let fork = FakeFork::start(SECRET, Duration::from_secs(1)).await;
    let tmp = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(tmp.path(), &fork.url(), &[]);
    let gw = fork.url();
    let started = Instant::now();
    let mut chats = Vec::new();
    for i in 0..50 {
        let body = chat_body(&format!("chat {i}"), Some(&format!("k{i}")), &gw, SECRET).to_string();
        let url = bridge.url("/chat");
        chats.push(tokio::spawn(async move { post_to(url, body).await.0 }));
    }
    // The same idempotency key twice while the first is running.
    let dup = chat_body("once", Some("same-key"), &gw, SECRET).to_string();
    let (a, b) = tokio::join!(post(&bridge, dup.clone()), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        post(&bridge, dup.clone()).await
    });
    for chat in chats {
        assert_eq!(chat.await.unwrap(), 200);
    }
    let elapsed = started.elapsed();
    // Serially this is 50 s; concurrently about one latency (1 s).
    assert!(
        elapsed < Duration::from_secs(10),
        "50 chats took {elapsed:?}"
    );
    assert_eq!(a, b, "the duplicate gets the first one's answer");
    assert_eq!(a.1["runId"], "same-key");
    let runs_of_key = fork
        .requests()
        .iter()
        .filter(|(k, _)| k.as_deref() == Some("same-key"))
        .count();
    assert_eq!(
        runs_of_key, 1,
        "a repeated idempotency key must not start a second run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_running_chats_then_flushes_and_exits() {
    let fork = FakeFork::start(SECRET, Duration::from_secs(2)).await;
    let tmp = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(tmp.path(), &fork.url(), &["--grace", "20s"]);
    let url = bridge.url("/chat");
    let body = chat_body("finish me", None, &fork.url(), SECRET).to_string();
    let running = tokio::spawn(async move { post_to(url, body).await });
    while fork.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = bridge.addr;
    let pid = bridge.child.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "stopped accepting"
    );
    let (status, body) = running.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["responseText"], "echo: finish me");
    assert!(bridge.terminate().success());
    let files = trace_files(&tmp.path().join("traces"));
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].1["status"], "succeeded");
}
