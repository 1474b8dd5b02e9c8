//! Black-box tests of `oclagl collect` and `oclagl run` in internal mode,
//! against a fake of the fork gateway (the one gateway that cannot be
//! installed here). The real upstream gateway is exercised in `gateway.rs`.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::fake_fork::{transcript, FakeFork};
use support::{span_ids, trace_files, Server, BIN};

const SECRET: &str = "s3cret-internal-value";

fn oclagl(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Child {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args);
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "INTERNAL_SECRET",
        "OPENCLAW_GATEWAY_TOKEN",
        "GATEWAY_BASE_URL",
        "SESSION_KEY",
        "MAX_CONCURRENT",
        "OCLAGL_INTERNAL_SECRET",
        "OCLAGL_TOKEN",
        "OCLAGL_GATEWAY_URL",
        "OCLAGL_SESSION_KEY",
        "OCLAGL_COLLECT_CONCURRENCY",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("spawn oclagl")
}

async fn run_oclagl(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let child = oclagl(dir, env, args);
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_records_one_agl_rollout_per_prompt_without_secrets() {
    let fork = FakeFork::start(SECRET, Duration::from_millis(20)).await;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("prompts.txt"),
        "What is 2+2?\nExplain recursion in one sentence.\nSay ünïcødé ✓\n",
    )
    .unwrap();
    let env = [
        ("GATEWAY_BASE_URL", fork.url()),
        ("INTERNAL_SECRET", SECRET.to_string()),
        ("SESSION_KEY", "agent:dev:main".to_string()),
        // Every log line there is, so the secret check below covers them.
        ("OCLAGL_LOG", "debug".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // No file argument: prompts.txt, as the seed did.
    let out = run_oclagl(tmp.path(), &env, &["collect", "--json"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3 succeeded, 0 failed"), "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["succeeded"], 3);

    let files = trace_files(&tmp.path().join("traces"));
    assert_eq!(files.len(), 3, "one trace file per prompt");
    for (_, doc) in &files {
        let rollout = doc["rollout_id"].as_str().unwrap();
        let attempt = doc["attempt_id"].as_str().unwrap();
        assert!(
            rollout.starts_with("ro-") && rollout.len() == 15,
            "{rollout}"
        );
        assert!(
            attempt.starts_with("at-") && attempt.len() == 11,
            "{attempt}"
        );
        assert_eq!(doc["status"], "succeeded");
        let names: Vec<_> = doc["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        for expected in [
            "oclagl.rollout",
            "gateway.agent_run",
            "gen_ai",
            "agentlightning.message",
        ] {
            assert!(names.contains(&expected), "{names:?}");
        }
        let root = doc["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "oclagl.rollout")
            .unwrap();
        // Each rollout in a session of its own, named after the configured one.
        assert_eq!(
            root["attributes"]["oclagl.session_key"],
            format!("agent:dev:main:{rollout}")
        );
        assert_eq!(root["attributes"]["oclagl.mode"], "internal");
        assert_eq!(
            doc["task_input"]["prompt"],
            root["attributes"]["oclagl.prompt"]
        );
    }
    // The fork got the seed's request, idempotency key in header and body.
    let seen = fork.requests();
    assert_eq!(seen.len(), 3);
    let sessions: std::collections::HashSet<_> =
        seen.iter().map(|(_, b)| b["sessionKey"].clone()).collect();
    assert_eq!(sessions.len(), 3, "one session per rollout: {sessions:?}");
    for (key, body) in &seen {
        let session = body["sessionKey"].as_str().unwrap();
        assert!(session.starts_with("agent:dev:main:ro-"), "{session}");
        assert_eq!(body["mode"], "cli");
        assert_eq!(key.as_deref(), body["idempotencyKey"].as_str());
    }

    // AGL reads every file and TraceToMessages rebuilds the conversation.
    let checked: Value = serde_json::from_str(&support::run_py(
        "check_messages.py",
        &[tmp.path().join("traces").to_str().unwrap()],
    ))
    .unwrap();
    let r = &checked["Explain recursion in one sentence."];
    assert_eq!(r["n_gen_ai"], 2, "one gen_ai span per assistant turn");
    let mut expected: Vec<Value> = transcript("Explain recursion in one sentence.")
        .as_array()
        .unwrap()
        .clone();
    let msgs = r["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), expected.len());
    for (got, want) in msgs.iter().zip(expected.iter_mut()) {
        if want["role"] == "toolResult" {
            want["role"] = json!("tool");
        }
        assert_eq!(got["role"], want["role"]);
        assert_eq!(got["content"], want["content"]);
    }

    // The secret is nowhere: not in trace files, the store, or the output.
    assert!(
        !support::disk_contains(tmp.path(), SECRET),
        "secret written to disk"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_session_and_a_prompt_naming_its_own_session() {
    let fork = FakeFork::start(SECRET, Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("p.jsonl"),
        "{\"prompt\":\"one\"}\n{\"prompt\":\"two\",\"session\":\"agent:main:mine\"}\n{\"prompt\":\"three\"}\n",
    )
    .unwrap();
    let url = fork.url();
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("INTERNAL_SECRET", SECRET),
    ];
    let out = run_oclagl(
        tmp.path(),
        &env,
        &["collect", "p.jsonl", "--shared-session"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let mut sessions: Vec<(String, String)> = fork
        .requests()
        .iter()
        .map(|(_, b)| {
            (
                b["message"].as_str().unwrap().into(),
                b["sessionKey"].as_str().unwrap().into(),
            )
        })
        .collect();
    sessions.sort();
    let want = [
        ("one", "agent:main:main"),
        ("three", "agent:main:main"),
        ("two", "agent:main:mine"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(sessions, want);
    // The session the prompt named is part of its recorded task.
    let files = trace_files(&tmp.path().join("traces"));
    let two = files
        .iter()
        .find(|(_, d)| d["task_input"]["prompt"] == "two")
        .unwrap();
    assert_eq!(two.1["task_input"]["session"], "agent:main:mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_reuse_the_idempotency_key_and_failures_are_recorded() {
    let fork = FakeFork::start(SECRET, Duration::ZERO).await;
    // The first call gets 503 and is retried.
    fork.state.script.lock().unwrap().push_back(503);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("p.jsonl"),
        "{\"prompt\":\"first\",\"id\":\"a\"}\n",
    )
    .unwrap();
    let url = fork.url();
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("INTERNAL_SECRET", SECRET),
    ];
    let out = run_oclagl(
        tmp.path(),
        &env,
        &["collect", "p.jsonl", "--concurrency", "1"],
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let seen = fork.requests();
    assert_eq!(seen.len(), 2, "one retry after 503");
    assert_eq!(seen[0].0, seen[1].0, "the retry reuses the idempotency key");

    // A 400 fails the rollout; it is still recorded, and the exit code says so.
    fork.state.script.lock().unwrap().push_back(400);
    std::fs::write(
        tmp.path().join("p.jsonl"),
        "{\"prompt\":\"second\",\"id\":\"b\"}\n{\"prompt\":\"first\",\"id\":\"a\"}\n",
    )
    .unwrap();
    let out = run_oclagl(
        tmp.path(),
        &env,
        &["collect", "p.jsonl", "--concurrency", "1", "--resume"],
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("0 succeeded, 1 failed") && stderr.contains("1 skipped"),
        "{stderr}"
    );
    let files = trace_files(&tmp.path().join("traces"));
    let failed: Vec<_> = files.iter().filter(|f| f.1["status"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].1["task_input"],
        json!({"prompt": "second", "id": "b", "task_id": "b"})
    );
    let root = failed[0].1["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "oclagl.rollout")
        .unwrap();
    assert_eq!(root["status"]["status_code"], "ERROR");
    assert!(root["status"]["description"]
        .as_str()
        .unwrap()
        .contains("400"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_one_clear_line() {
    let fork = FakeFork::start(SECRET, Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    let url = fork.url();
    let ok_env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("INTERNAL_SECRET", SECRET),
    ];
    std::fs::write(tmp.path().join("empty.txt"), "\n\n").unwrap();
    std::fs::write(tmp.path().join("p.txt"), "hi\n").unwrap();
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Env, Vec<&str>, &str)> = vec![
        (
            ok_env.to_vec(),
            vec!["collect", "missing.txt"],
            "missing.txt not found",
        ),
        (
            ok_env.to_vec(),
            vec!["collect", "empty.txt"],
            "has no prompts",
        ),
        (
            vec![("GATEWAY_BASE_URL", url.as_str())],
            vec!["collect", "p.txt"],
            "INTERNAL_SECRET",
        ),
        (
            vec![
                ("GATEWAY_BASE_URL", "http://127.0.0.1:9"),
                ("INTERNAL_SECRET", SECRET),
            ],
            vec!["collect", "p.txt"],
            "cannot reach the gateway",
        ),
        (
            vec![
                ("GATEWAY_BASE_URL", url.as_str()),
                ("INTERNAL_SECRET", "wrong"),
            ],
            vec!["collect", "p.txt"],
            "401",
        ),
        (
            ok_env.to_vec(),
            vec!["collect", "p.txt", "--concurrency", "0"],
            "--concurrency",
        ),
        // The OCLAGL_ twins are read, and win over the seed's names.
        (
            vec![
                ("OCLAGL_GATEWAY_URL", url.as_str()),
                ("OCLAGL_INTERNAL_SECRET", "wrong"),
            ],
            vec!["collect", "p.txt"],
            "401",
        ),
        (
            vec![
                ("OCLAGL_GATEWAY_URL", "http://127.0.0.1:9"),
                ("GATEWAY_BASE_URL", url.as_str()),
                ("INTERNAL_SECRET", SECRET),
            ],
            vec!["collect", "p.txt"],
            "cannot reach the gateway",
        ),
    ];
    for (env, args, expected) in cases {
        let out = run_oclagl(tmp.path(), &env, &args).await;
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<_> = stderr
            .lines()
            .filter(|l| l.starts_with("oclagl:"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("wrong") || expected != "401",
            "the secret was echoed: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_collect_export_through_otlp_to_a_running_sidecar() {
    let fork = FakeFork::start(SECRET, Duration::ZERO).await;
    let (server, _srv) = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let url = fork.url();
    for (protocol, endpoint) in [
        ("http/protobuf", server.url("")),
        ("grpc", format!("http://{}", server.grpc)),
    ] {
        let env = [
            ("GATEWAY_BASE_URL", url.as_str()),
            ("INTERNAL_SECRET", SECRET),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ];
        let out = run_oclagl(tmp.path(), &env, &["run", &format!("via {protocol}")]).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(stdout.trim(), format!("echo: via {protocol}"));
    }
    assert!(
        !tmp.path().join("traces").exists(),
        "with an endpoint, nothing is stored locally"
    );
    let files = support::wait_for_files(&server.traces_dir(), "two rollouts", |f| {
        f.len() == 2 && f.iter().all(|x| x.1["status"] == "succeeded")
    });
    assert!(span_ids(&files).len() >= 10);
}

/// An OTLP endpoint that refuses its first export and takes the rest.
async fn flaky_collector() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move || {
            let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                match first {
                    true => axum::http::StatusCode::BAD_REQUEST,
                    false => axum::http::StatusCode::OK,
                }
            }
        }),
    );
    let addr = support::serve_on_loopback(app).await;
    (format!("http://{addr}"), calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_the_reply_when_no_sidecar_takes_its_spans() {
    let fork = FakeFork::start(SECRET, Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    let url = fork.url();
    // A port where nothing listens.
    let nowhere = format!("http://127.0.0.1:{}", support::free_port());
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("INTERNAL_SECRET", SECRET),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", nowhere.as_str()),
    ];
    let out = run_oclagl(tmp.path(), &env, &["run", "What is 2+2?"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The gateway ran the task: its reply is printed all the same.
    assert_eq!(stdout.trim(), "echo: What is 2+2?", "{stderr}");
    // One line says what was lost and what to do.
    assert!(stderr.contains("is not recorded"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "nothing listens at {nowhere}: start `oclagl serve` there"
        )),
        "{stderr}"
    );

    // A sidecar's gRPC port with the HTTP protocol (the default).
    let (server, _data) = Server::start(&[]);
    let grpc = format!("http://{}", server.grpc);
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("INTERNAL_SECRET", SECRET),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()),
    ];
    let out = run_oclagl(tmp.path(), &env, &["run", "What is 2+2?"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stdout.trim(), "echo: What is 2+2?", "{stderr}");
    assert!(
        stderr.contains("did not take OTLP over http/protobuf")
            && stderr.contains("gRPC port (4317)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_finds_the_sidecar_that_holds_its_store() {
    let fork = FakeFork::start(SECRET, Duration::ZERO).await;
    // A sidecar on ephemeral ports holds <tmp>/data; run is given only the
    // folder, no OTEL_EXPORTER_OTLP_ENDPOINT.
    let (server, tmp) = Server::start(&[]);
    let url = fork.url();
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("INTERNAL_SECRET", SECRET),
    ];
    let out = run_oclagl(
        tmp.path(),
        &env,
        &[
            "run",
            "--data-dir",
            "data",
            "--traces-dir",
            "elsewhere",
            "What is 2+2?",
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "echo: What is 2+2?");
    // The sidecar wrote the rollout, into its own traces folder.
    support::wait_for_files(&server.traces_dir(), "the run's rollout", |f| {
        f.iter()
            .any(|(_, d)| d["task_input"]["prompt"] == "What is 2+2?")
    });
    let mut server = server;
    server.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_an_endpoint_refused_fail_the_command() {
    let fork = FakeFork::start(SECRET, Duration::from_millis(100)).await;
    let (endpoint, calls) = flaky_collector().await;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("prompts.txt"), "one\ntwo\nthree\n").unwrap();
    let url = fork.url();
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("INTERNAL_SECRET", SECRET),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Each rollout's spans leave while the next one runs.
        ("OTEL_BSP_SCHEDULE_DELAY", "10"),
    ];
    let out = run_oclagl(tmp.path(), &env, &["collect", "--concurrency", "1"]).await;
    let (_, stderr) = text(&out);
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "{stderr}"
    );
    // The rollouts succeeded, but the first export's spans are lost: the
    // command must not end as if every span had been delivered.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("could not be exported to {endpoint}")),
        "{stderr}"
    );
    // Said when it happened too, for long-running commands.
    assert!(
        stderr.contains("spans could not be exported and are lost"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_flushes_and_records_interrupted_rollouts() {
    let fork = FakeFork::start(SECRET, Duration::from_secs(30)).await;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("prompts.txt"),
        "slow one\nslow two\nslow three\n",
    )
    .unwrap();
    let url = fork.url();
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("INTERNAL_SECRET", SECRET),
    ];
    let child = oclagl(tmp.path(), &env, &["collect", "--concurrency", "2"]);
    let started = Instant::now();
    while fork.requests().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "rollouts did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    support::interrupt(child.id());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "Ctrl-C must not wait for the gateway"
    );
    let files = trace_files(&tmp.path().join("traces"));
    assert_eq!(
        files.len(),
        2,
        "the two running rollouts are flushed: {stderr}"
    );
    for (_, doc) in &files {
        assert_eq!(doc["status"], "failed");
    }
}

/// An executable `--score-cmd` in `dir`: a shell script that reads the
/// rollout's JSON into `$in`, then runs `body`.
fn score_script(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let script = dir.join("score.sh");
    std::fs::write(&script, format!("#!/bin/sh\nin=$(cat)\n{body}\n")).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_attaches_rewards_that_export_sft_filters_on() {
    let fork = FakeFork::start(SECRET, Duration::from_millis(5)).await;
    let tmp = tempfile::tempdir().unwrap();
    // The fake fork answers "echo: <prompt>".
    std::fs::write(
        tmp.path().join("prompts.jsonl"),
        concat!(
            "{\"prompt\": \"hello\", \"expected\": \"echo: hello\"}\n",
            "{\"prompt\": \"bye\", \"expected\": \"nope\"}\n",
            "{\"prompt\": \"free\"}\n",
        ),
    )
    .unwrap();
    let script = score_script(
        tmp.path(),
        "case \"$in\" in *'\"reply\":\"echo: bye\"'*) echo 0.25 ;; *) echo 0.5 ;; esac",
    );
    let url = fork.url();
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("INTERNAL_SECRET", SECRET),
    ];
    let args = [
        "collect",
        "prompts.jsonl",
        "--score",
        "exact",
        "--score-cmd",
        script.to_str().unwrap(),
        "--json",
    ];
    let out = run_oclagl(tmp.path(), &env, &args).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3 scored"), "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    let mut given: Vec<(String, Value)> = summary["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["reply"].as_str().unwrap().to_string(),
                o["rewards"].clone(),
            )
        })
        .collect();
    given.sort_by(|a, b| a.0.cmp(&b.0));
    let r = |name: &str, value: f64| json!({"name": name, "value": value});
    assert_eq!(
        given,
        [
            (
                "echo: bye".to_string(),
                json!([r("exact_match", 0.0), r("score", 0.25)])
            ),
            ("echo: free".to_string(), json!([r("score", 0.5)])),
            (
                "echo: hello".to_string(),
                json!([r("exact_match", 1.0), r("score", 0.5)])
            ),
        ]
    );
    // Each reward is an AGL reward span under the rollout's root.
    for (_, doc) in trace_files(&tmp.path().join("traces")) {
        let spans = doc["spans"].as_array().unwrap();
        let root = spans.iter().find(|s| s["parent_id"].is_null()).unwrap();
        let rewards: Vec<&Value> = spans
            .iter()
            .filter(|s| s["name"] == "agentlightning.annotation")
            .collect();
        assert_eq!(rewards.len(), 1, "{doc:#}");
        assert_eq!(rewards[0]["parent_id"], root["span_id"]);
        assert_eq!(rewards[0]["attempt_id"], doc["attempt_id"]);
        assert_eq!(
            doc["task_input"]["expected"].is_string(),
            doc["task_input"]["prompt"] != "free"
        );
    }
    // The primary reward is what export-sft --min-reward keeps.
    let out = run_oclagl(
        tmp.path(),
        &[],
        &["export-sft", "--min-reward", "0.5", "--out", "sft.jsonl"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let rows = std::fs::read_to_string(tmp.path().join("sft.jsonl")).unwrap();
    assert_eq!(
        rows.lines().count(),
        2,
        "hello (exact 1) and free (score 0.5): {rows}"
    );
    assert!(!rows.contains("echo: bye"), "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_share_a_task_and_resume_counts_them() {
    let fork = FakeFork::start(SECRET, Duration::from_millis(5)).await;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("prompts.txt"), "hello\nbye\n").unwrap();
    // Each attempt gets its own reward: the second sample scores higher.
    let script = score_script(
        tmp.path(),
        "case \"$in\" in *'\"sample\":1'*) echo 0.8 ;; *) echo 0.2 ;; esac",
    );
    let url = fork.url();
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("INTERNAL_SECRET", SECRET),
    ];
    let score = script.to_str().unwrap();
    let out = run_oclagl(
        tmp.path(),
        &env,
        &["collect", "--samples", "2", "--score-cmd", score, "--json"],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (summary["total"].clone(), summary["succeeded"].clone()),
        (json!(4), json!(4))
    );

    // Two tasks, two numbered attempts each, on the root spans too.
    let attempts = |files: &[(String, Value)]| {
        let mut seen: Vec<(String, String, u64, f64)> = files
            .iter()
            .map(|(_, doc)| {
                let spans = doc["spans"].as_array().unwrap();
                let root = spans.iter().find(|s| s["parent_id"].is_null()).unwrap();
                let input = &doc["task_input"];
                assert_eq!(root["attributes"]["oclagl.task_id"], input["task_id"]);
                assert_eq!(root["attributes"]["oclagl.sample"], input["sample"]);
                let reward = spans
                    .iter()
                    .find(|s| s["name"] == "agentlightning.annotation")
                    .map(|s| {
                        s["attributes"]["agentlightning.reward.0.value"]
                            .as_f64()
                            .unwrap()
                    })
                    .unwrap();
                (
                    input["prompt"].as_str().unwrap().to_string(),
                    input["task_id"].as_str().unwrap().to_string(),
                    input["sample"].as_u64().unwrap(),
                    reward,
                )
            })
            .collect();
        seen.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
        seen
    };
    let seen = attempts(&trace_files(&tmp.path().join("traces")));
    let samples: Vec<(&str, u64, f64)> = seen.iter().map(|s| (s.0.as_str(), s.2, s.3)).collect();
    assert_eq!(
        samples,
        [
            ("bye", 0, 0.2),
            ("bye", 1, 0.8),
            ("hello", 0, 0.2),
            ("hello", 1, 0.8)
        ]
    );
    assert_eq!(
        seen[0].1, seen[1].1,
        "the attempts of a prompt share its task"
    );
    assert_ne!(seen[0].1, seen[2].1);

    // --resume with more samples runs only the missing ones.
    let out = run_oclagl(
        tmp.path(),
        &env,
        &[
            "collect",
            "--samples",
            "3",
            "--resume",
            "--score-cmd",
            score,
            "--json",
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            summary["total"].clone(),
            summary["skipped"].clone(),
            summary["succeeded"].clone()
        ),
        (json!(6), json!(4), json!(2))
    );
    let seen = attempts(&trace_files(&tmp.path().join("traces")));
    assert_eq!(seen.len(), 6);
    assert_eq!(seen.iter().filter(|s| s.2 == 2).count(), 2);

    // ls groups them by task.
    let out = run_oclagl(tmp.path(), &[], &["ls", "--by-task", "--json"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let groups: Value = serde_json::from_str(&stdout).unwrap();
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    for g in groups {
        assert_eq!(g["rollouts"].as_array().unwrap().len(), 3, "{g}");
        assert_eq!(
            (g["best"].clone(), g["worst"].clone()),
            (json!(0.8), json!(0.2)),
            "{g}"
        );
    }

    // --best-of writes one row a task, from the store as from the trace files.
    for source in ["oclagl-data", "traces"] {
        let out = run_oclagl(
            tmp.path(),
            &[],
            &[
                "export-sft",
                "--source",
                source,
                "--best-of",
                "--stats",
                "--out",
                "best.jsonl",
            ],
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{source}: {stderr}");
        let rows = std::fs::read_to_string(tmp.path().join("best.jsonl")).unwrap();
        assert_eq!(rows.lines().count(), 2, "{source}: {rows}");
        assert!(
            stdout.contains("not its task's best attempt (--best-of) 4"),
            "{source}: {stdout}"
        );
    }
}
