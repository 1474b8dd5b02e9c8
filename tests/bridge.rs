//! Black-box tests of `oclagl bridge` against a fake of the fork gateway.

mod support;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::bridge::Bridge;
use support::fake_fork::FakeFork;
use support::trace_files;

const SECRET: &str = "bridge-secret-0b7f";

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
        SECRET,
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
async fn fifty_chats_run_concurrently_and_duplicates_run_once() {
    let fork = FakeFork::start(SECRET, Duration::from_secs(1)).await;
    let tmp = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(tmp.path(), &fork.url(), SECRET, &[]);
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
    // Concurrency is counted where the runs happen, not timed: each run
    // holds the fork for a second, so a bridge that ran chats one after
    // another would never have more than one there at once.
    let peak = fork.state.peak_running.load(Ordering::SeqCst);
    eprintln!(
        "50 chats in {:?}, at most {peak} at once",
        started.elapsed()
    );
    assert!(
        peak >= 25,
        "the bridge ran at most {peak} of 50 chats at once"
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
    let bridge = Bridge::start(tmp.path(), &fork.url(), SECRET, &["--grace", "20s"]);
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
