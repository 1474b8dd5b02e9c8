//! Forwarding (`oclagl serve --forward`) against real receivers: another
//! oclagl, rotel (a Rust OTLP collector) between two sidecars, and
//! Agent Lightning's own store.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::Value;
use support::{free_port, kv, metric, request, span, trace_files, Server};

fn rotel_agent() -> PathBuf {
    let python = support::python();
    let venv = python.parent().and_then(Path::parent).expect("venv");
    let bin = venv.join("lib/python3.11/site-packages/rotel/rotel-agent");
    assert!(
        bin.exists(),
        "{} is missing: run tests/run.sh",
        bin.display()
    );
    bin
}

/// Kills the child when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(url: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::get(url).await.ok()?;
        resp.text().await.ok()
    })
}

fn metrics(server: &Server) -> String {
    get(&server.url("/metrics")).expect("GET /metrics")
}

fn post_export(
    server: &Server,
    req: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(server.url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{status}");
}

/// Spans of rollout `ro-fwd<n>`, in trace `n` (ids `n*100 + 1..`).
fn rollout(
    n: u8,
    spans: u64,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let rid = format!("ro-fwd{n:08}");
    let base = n as u64 * 100;
    let spans = (1..=spans)
        .map(|i| {
            let attrs = if i == 1 {
                vec![
                    kv("agentlightning.rollout_id", &rid),
                    kv("pad", &"x".repeat(300)),
                ]
            } else {
                vec![kv("pad", &"y".repeat(300))]
            };
            span(
                [n; 16],
                base + i,
                (i > 1).then_some(base + 1),
                "step",
                attrs,
            )
        })
        .collect();
    request(vec![kv("service.name", "fwd-test")], spans)
}

/// Trace files keyed by rollout id, each span without its `sequence_id`
/// (a receiver numbers spans in the order it got them), sorted by span id.
fn normalized(dir: &Path) -> BTreeMap<String, Value> {
    trace_files(dir)
        .into_iter()
        .map(|(_, mut f)| {
            let mut spans: Vec<Value> = f["spans"].as_array().cloned().unwrap_or_default();
            for s in &mut spans {
                s.as_object_mut().unwrap().remove("sequence_id");
            }
            spans.sort_by(|a, b| a["span_id"].as_str().cmp(&b["span_id"].as_str()));
            f["spans"] = Value::Array(spans);
            (f["rollout_id"].as_str().unwrap().to_string(), f)
        })
        .collect()
}

#[test]
fn a_chain_through_rotel_delivers_exactly_what_the_first_sidecar_received() {
    let (b, _tb) = Server::start(&[]);
    let (rotel_grpc, rotel_http) = (free_port(), free_port());
    let _rotel = Process(
        Command::new(rotel_agent())
            .args([
                "start",
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{rotel_grpc}"),
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{rotel_http}"),
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                &format!("http://{}", b.grpc),
                "--otlp-exporter-protocol",
                "grpc",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rotel-agent"),
    );
    let forward = format!("grpc://127.0.0.1:{rotel_grpc};name=rotel");
    // A dead destination beside it has its own queue and slows nothing.
    let dead = format!("http://127.0.0.1:{};name=dead", free_port());
    let (a, ta) = Server::start(&["--forward", &forward, "--forward", &dead]);
    let m = ta.path().join("m.json");
    // The OpenTelemetry Python SDK sends 16 spans over HTTP into A.
    support::run_py(
        "send_spans.py",
        &["http", &a.url(""), m.to_str().unwrap(), "c"],
    );
    support::wait_for_files(&a.traces_dir(), "A's 4 trace files", |f| {
        support::span_ids(f).len() == 8
    });
    // rotel may be still starting: A retries until it takes the spans.
    wait_until(
        "B to hold what A received",
        Duration::from_secs(120),
        || {
            normalized(&b.traces_dir()) == normalized(&a.traces_dir())
                && support::span_ids(&trace_files(&b.traces_dir())).len() == 8
        },
    );
    let page = metrics(&a);
    // OpenMetrics: one descriptor per family, whatever the destinations.
    assert!(page.ends_with("# EOF\n"), "{page}");
    let types: Vec<_> = page.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let unique: std::collections::HashSet<_> = types.iter().collect();
    assert_eq!(types.len(), unique.len(), "{page}");
    assert_eq!(
        metric(
            &page,
            "oclagl_forward_sent_spans_total{destination=\"rotel\"}"
        ),
        Some(8.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "oclagl_forward_backlog_bytes{destination=\"rotel\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&page, "oclagl_receiver_accepted_spans_total"),
        Some(8.0)
    );
    let dead_sent = metric(
        &page,
        "oclagl_forward_sent_spans_total{destination=\"dead\"}",
    );
    assert_eq!(dead_sent, Some(0.0));
    assert!(metric(&page, "oclagl_forward_backlog_bytes{destination=\"dead\"}").unwrap() > 0.0);
}

#[test]
fn a_destination_down_across_a_restart_gets_everything_when_it_returns() {
    let port = free_port();
    let forward = format!(
        "http://127.0.0.1:{port};name=b;compression=gzip;headers=x-tenant=t%201;timeout=2s"
    );
    let tmp = tempfile::tempdir().unwrap();
    let a = Server::start_in(tmp.path(), &["--forward", &forward]);
    for n in 1..=3 {
        post_export(&a, &rollout(n, 4));
    }
    wait_until("a failed send", Duration::from_secs(20), || {
        metric(
            &metrics(&a),
            "oclagl_forward_failed_attempts_total{destination=\"b\"}",
        )
        .is_some_and(|v| v >= 1.0)
    });
    let page = metrics(&a);
    assert!(
        metric(&page, "oclagl_forward_backlog_bytes{destination=\"b\"}").unwrap() > 0.0,
        "{page}"
    );
    assert!(metric(&page, "oclagl_forward_lag_seconds{destination=\"b\"}").is_some());
    // kill -9 while the destination is down: the backlog is the log itself.
    a.kill();
    let a = Server::start_in(tmp.path(), &["--forward", &forward]);
    for n in 4..=5 {
        post_export(&a, &rollout(n, 4));
    }
    let b_dir = tempfile::tempdir().unwrap();
    let b = Server::start_in(b_dir.path(), &["--http-addr", &format!("127.0.0.1:{port}")]);
    let files = support::wait_for_files(&a.traces_dir(), "A's 20 spans", |f| {
        support::span_ids(f).len() == 20
    });
    let want = support::span_ids(&files);
    wait_until("B to hold all 20 spans", Duration::from_secs(60), || {
        support::span_ids(&trace_files(&b.traces_dir())) == want
    });
    wait_until("an empty backlog", Duration::from_secs(10), || {
        metric(
            &metrics(&a),
            "oclagl_forward_backlog_bytes{destination=\"b\"}",
        ) == Some(0.0)
    });
    assert_eq!(normalized(&b.traces_dir()), normalized(&a.traces_dir()));
    // At least once: every span arrived; a batch sent just before a crash
    // and not yet recorded as delivered may arrive twice, never zero times.
    let sent = metric(
        &metrics(&a),
        "oclagl_forward_sent_spans_total{destination=\"b\"}",
    )
    .unwrap();
    assert!(sent >= 8.0, "the restarted A delivered the backlog: {sent}");
}

#[test]
fn the_backlog_cap_drops_the_oldest_and_counts_it() {
    let port = free_port();
    let forward = format!("http://127.0.0.1:{port};name=b;max-backlog=4KiB");
    let (a, _ta) = Server::start(&["--forward", &forward]);
    for n in 1..=8 {
        post_export(&a, &rollout(n, 4));
    }
    wait_until("drops at the cap", Duration::from_secs(20), || {
        metric(
            &metrics(&a),
            "oclagl_forward_dropped_spans_total{destination=\"b\"}",
        )
        .is_some_and(|v| v > 0.0)
    });
    let page = metrics(&a);
    assert!(
        metric(&page, "oclagl_forward_backlog_bytes{destination=\"b\"}").unwrap() <= 4096.0,
        "{page}"
    );
    assert!(a.log().contains("backlog over its cap"), "{}", a.log());
    let b_dir = tempfile::tempdir().unwrap();
    let b = Server::start_in(b_dir.path(), &["--http-addr", &format!("127.0.0.1:{port}")]);
    wait_until("the rest delivered", Duration::from_secs(60), || {
        metric(
            &metrics(&a),
            "oclagl_forward_backlog_bytes{destination=\"b\"}",
        ) == Some(0.0)
    });
    let page = metrics(&a);
    let sent = metric(&page, "oclagl_forward_sent_spans_total{destination=\"b\"}").unwrap();
    let dropped = metric(
        &page,
        "oclagl_forward_dropped_spans_total{destination=\"b\"}",
    )
    .unwrap();
    assert_eq!(
        sent + dropped,
        32.0,
        "every span is either delivered or counted as dropped"
    );
    wait_until("B's files", Duration::from_secs(10), || {
        support::span_ids(&trace_files(&b.traces_dir())).len() == sent as usize
    });
    // The newest rollout survived, the oldest was dropped.
    let ids = support::span_ids(&trace_files(&b.traces_dir()));
    assert!(ids.contains(&format!("{:016x}", 801u64)), "{ids:?}");
    assert!(!ids.contains(&format!("{:016x}", 101u64)));
}

#[test]
fn a_permanent_refusal_is_counted_and_not_retried() {
    let (b, _tb) = Server::start(&[]);
    // B answers 404 for a path that is not an OTLP endpoint.
    let forward = format!("{};name=wrong", b.url("/not-otlp"));
    let (a, _ta) = Server::start(&["--forward", &forward]);
    post_export(&a, &rollout(1, 3));
    wait_until("the refusal", Duration::from_secs(20), || {
        metric(
            &metrics(&a),
            "oclagl_forward_refused_spans_total{destination=\"wrong\"}",
        ) == Some(3.0)
    });
    std::thread::sleep(Duration::from_millis(500));
    let page = metrics(&a);
    assert_eq!(
        metric(
            &page,
            "oclagl_forward_failed_attempts_total{destination=\"wrong\"}"
        ),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "oclagl_forward_backlog_bytes{destination=\"wrong\"}"),
        Some(0.0)
    );
    assert!(a.log().contains("refused the export for good"));
}

#[test]
fn bad_forward_values_stop_the_sidecar_with_a_clear_error() {
    for (value, want) in [
        ("tempo:4318", "is not a URL"),
        ("ftp://h:1", "unknown scheme"),
        ("http://h:1;timeout=forever", "not a duration"),
        (
            "grpc://a:1 grpc://a:1",
            "two --forward destinations are named",
        ),
    ] {
        support::serve_refuses(&[], &[("OCLAGL_FORWARD", value)], want);
    }
}

/// `agl store` from agentlightning 0.3.0, on a free port.
fn agl_store() -> (Process, String) {
    let python = support::python();
    let agl = python.with_file_name("agl");
    let port = free_port();
    let child = Command::new(agl)
        .args(["store", "--host", "127.0.0.1", "--port", &port.to_string()])
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agl store");
    let base = format!("http://127.0.0.1:{port}");
    let process = Process(child);
    wait_until("agl store to start", Duration::from_secs(90), || {
        get(&format!("{base}/v1/agl/health")).is_some()
    });
    (process, base)
}

fn get_json(url: &str) -> Value {
    serde_json::from_str(&get(url).expect(url)).expect("JSON")
}

/// AGL's rollouts by the oclagl rollout id in their metadata.
fn agl_rollouts(base: &str) -> BTreeMap<String, Value> {
    get_json(&format!("{base}/v1/agl/rollouts?limit=1000"))["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| Some((r["metadata"]["oclagl.rollout_id"].as_str()?.to_string(), r)))
        .collect()
}

fn agl_spans(base: &str, agl_rollout: &str) -> Vec<Value> {
    get_json(&format!(
        "{base}/v1/agl/spans?rollout_id={agl_rollout}&limit=1000"
    ))["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every rollout of the trace files is at the AGL store under its own ids,
/// with exactly the file's spans (each once) and the file's status.
fn agl_matches_files(base: &str, traces: &Path) -> Result<usize, String> {
    let rollouts = agl_rollouts(base);
    let files = trace_files(traces);
    for (_, f) in &files {
        let id = f["rollout_id"].as_str().unwrap();
        let r = rollouts.get(id).ok_or(format!("{id} missing"))?;
        if r["status"] != f["status"] {
            return Err(format!("{id}: status {} vs {}", r["status"], f["status"]));
        }
        let agl_id = r["rollout_id"].as_str().unwrap();
        let spans = agl_spans(base, agl_id);
        let mut got: Vec<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
        let mut want: Vec<&str> = f["spans"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["span_id"].as_str())
            .collect();
        got.sort();
        want.sort();
        if got != want {
            return Err(format!("{id}: spans {got:?} vs {want:?}"));
        }
        for s in &spans {
            assert_eq!(s["rollout_id"], r["rollout_id"]);
            assert_eq!(s["attempt_id"], r["attempt"]["attempt_id"]);
            assert_eq!(s["attributes"]["oclagl.rollout_id"], id);
        }
    }
    Ok(files.len())
}

#[test]
fn rollouts_reach_an_agent_lightning_store_under_its_own_ids() {
    let (_agl, base) = agl_store();
    let forward = format!("agl+{base};name=agl;hold=1s");
    let tmp = tempfile::tempdir().unwrap();
    let a = Server::start_in(tmp.path(), &["--forward", &forward]);
    let m = tmp.path().join("m.json");
    // 2 named rollouts and 2 trace-derived ones, from the Python SDK.
    support::run_py(
        "send_spans.py",
        &["http", &a.url(""), m.to_str().unwrap(), "s"],
    );
    support::wait_for_files(&a.traces_dir(), "4 rollouts", |f| f.len() == 4);
    wait_until(
        "AGL to hold all 4 rollouts",
        Duration::from_secs(60),
        || agl_matches_files(&base, &a.traces_dir()) == Ok(4),
    );
    let r = &agl_rollouts(&base)["ro-sa0000000000"];
    assert_eq!(r["input"], serde_json::json!({"prompt": "What is 2+2?"}));
    assert_eq!(r["status"], "succeeded");
    assert_eq!(agl_rollouts(&base)["ro-sb0000000000"]["status"], "failed");

    // After a restart nothing is sent twice; a later rollout still goes.
    assert!(a.terminate().success());
    let a = Server::start_in(tmp.path(), &["--forward", &forward]);
    post_export(&a, &rollout(7, 3));
    wait_until("the new rollout at AGL", Duration::from_secs(60), || {
        agl_matches_files(&base, &a.traces_dir()) == Ok(5)
    });

    // A trace-derived rollout that a named one claims later is cancelled at
    // AGL, and its spans go on under the named rollout.
    let trace = [9u8; 16];
    let unnamed = request(
        vec![kv("service.name", "gateway")],
        vec![span(trace, 901, Some(900), "model call", vec![])],
    );
    post_export(&a, &unnamed);
    let derived = format!("ro-{}", "09".repeat(6));
    wait_until(
        "the derived rollout at AGL",
        Duration::from_secs(60),
        || agl_rollouts(&base).contains_key(&derived),
    );
    let named = request(
        vec![kv("service.name", "oclagl")],
        vec![span(
            trace,
            900,
            None,
            "oclagl.rollout",
            vec![kv("agentlightning.rollout_id", "ro-claim0000001")],
        )],
    );
    post_export(&a, &named);
    wait_until("the claim", Duration::from_secs(60), || {
        let all = agl_rollouts(&base);
        all.get(&derived)
            .is_some_and(|r| r["status"] == "cancelled")
            && agl_matches_files(&base, &a.traces_dir()) == Ok(6)
    });
    let all = agl_rollouts(&base);
    assert_eq!(
        all[&derived]["metadata"]["oclagl.merged_into"],
        "ro-claim0000001"
    );
    let claimed = agl_spans(
        &base,
        all["ro-claim0000001"]["rollout_id"].as_str().unwrap(),
    );
    assert_eq!(claimed.len(), 2);
    let page = metrics(&a);
    assert_eq!(
        metric(&page, "oclagl_forward_backlog_bytes{destination=\"agl\"}"),
        Some(0.0),
        "{page}"
    );
}
