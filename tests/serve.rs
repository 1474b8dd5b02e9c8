//! Black-box tests of `oclagl serve`: the real binary on ephemeral ports.

mod support;

use std::io::Write;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::{json, Value};
use support::{kv, request, span, span_ids, trace_files, wait_for_files, Server};

const PROTOBUF: &str = "application/x-protobuf";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().build().unwrap()
}

async fn post(server: &Server, path: &str, ct: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(server.url(path))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn rollout_request(
    rollout: &str,
    trace: u8,
    ids: std::ops::Range<u64>,
) -> ExportTraceServiceRequest {
    let spans = ids
        .map(|id| {
            let root = id % 4 == 0;
            let attrs = if root {
                vec![kv("agentlightning.rollout_id", rollout)]
            } else {
                vec![]
            };
            span(
                [trace; 16],
                id + 1,
                (!root).then_some(id - id % 4 + 1),
                "s",
                attrs,
            )
        })
        .collect();
    request(vec![kv("service.name", "test")], spans)
}

#[test]
fn python_sdk_spans_over_grpc_and_http_become_agl_trace_files() {
    let (server, _tmp) = Server::start(&[]);
    let manifests = _tmp.path();
    let m_http = manifests.join("http.json");
    let m_grpc = manifests.join("grpc.json");
    support::run_py(
        "send_spans.py",
        &["http", &server.url(""), m_http.to_str().unwrap(), "h"],
    );
    support::run_py(
        "send_spans.py",
        &[
            "grpc",
            &format!("http://{}", server.grpc),
            m_grpc.to_str().unwrap(),
            "g",
        ],
    );
    // 2 named rollouts and 2 trace-derived ones per protocol.
    wait_for_files(
        &server.traces_dir(),
        "8 trace files with all 16 spans",
        |f| f.len() == 8 && span_ids(f).len() == 16,
    );
    let out = support::run_py(
        "check_agl.py",
        &[
            server.traces_dir().to_str().unwrap(),
            m_http.to_str().unwrap(),
            m_grpc.to_str().unwrap(),
        ],
    );
    assert!(out.contains("16 compared"), "{out}");
    let files = trace_files(&server.traces_dir());
    let a = files
        .iter()
        .find(|(n, _)| n.starts_with("rollout_ro-ha0000000000_"))
        .expect("rollout A file");
    assert_eq!(a.1["task_input"], json!({"prompt": "What is 2+2?"}));
}

#[tokio::test]
async fn otlp_json_with_hex_ids_and_string_int64_is_stored() {
    let (server, _tmp) = Server::start(&[]);
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-client"}}]},
        "scopeSpans": [{"scope": {"name": "t"}, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "name": "rollout",
            "kind": 1,
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": "1544712661000000000",
            "attributes": [
                {"key": "agentlightning.rollout_id", "value": {"stringValue": "ro-0123456789ab"}},
                {"key": "count", "value": {"intValue": "42"}},
                {"key": "ratio", "value": {"doubleValue": 0.5}},
                {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "inner", "value": {"boolValue": true}}]}}}
            ],
            "status": {"code": 2, "message": "bad"}
        }]}]
    }]});
    let resp = post(
        &server,
        "/v1/traces",
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let files = wait_for_files(&server.traces_dir(), "json rollout", |f| f.len() == 1);
    let (name, doc) = &files[0];
    assert!(name.starts_with("rollout_ro-0123456789ab_"), "{name}");
    assert_eq!(doc["status"], "failed");
    let s = &doc["spans"][0];
    assert_eq!(s["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(s["span_id"], "eee19b7ec3c1b174");
    assert_eq!(s["start_time"], json!(1544712660.0));
    assert_eq!(s["attributes"]["count"], 42);
    assert_eq!(s["attributes"]["ratio"], 0.5);
    assert_eq!(s["attributes"]["kv.inner"], true);
    assert_eq!(
        s["status"],
        json!({"status_code": "ERROR", "description": "bad"})
    );
}

#[tokio::test]
async fn bad_requests_get_the_documented_status() {
    let (server, _tmp) = Server::start(&["--max-body", "64KiB", "--max-inflight", "1MiB"]);
    let good = rollout_request("ro-aaaaaaaaaaaa", 1, 0..4).encode_to_vec();

    // Unknown content type: 415, before the body is read.
    assert_eq!(
        post(&server, "/v1/traces", "text/plain", good.clone())
            .await
            .status(),
        415
    );
    // Undecodable protobuf: 400 with a google.rpc.Status body.
    let resp = post(
        &server,
        "/v1/traces",
        PROTOBUF,
        vec![0xff, 0xff, 0xff, 0x01],
    )
    .await;
    assert_eq!(resp.status(), 400);
    let status = tonic_types::pb::Status::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, 3);
    assert!(status.message.contains("protobuf"), "{}", status.message);
    // Enum names are not OTLP/JSON: 400 with a JSON status.
    let bad_json = json!({"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","kind":"SPAN_KIND_CLIENT"}]}]}]});
    let resp = post(
        &server,
        "/v1/traces",
        "application/json",
        bad_json.to_string().into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 3);
    // Over the body limit: 413 from Content-Length alone.
    assert_eq!(
        post(&server, "/v1/traces", PROTOBUF, vec![0; 65 * 1024])
            .await
            .status(),
        413
    );
    // A gzip bomb: tiny on the wire, over the limit decompressed.
    let bomb = gzip(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let resp = client()
        .post(server.url("/v1/traces"))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Unknown content encoding: 415.
    let resp = client()
        .post(server.url("/v1/traces"))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "br")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    // Corrupt gzip: 400.
    let resp = client()
        .post(server.url("/v1/traces"))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 8, 0, 1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Gzip'd valid request: 200.
    let resp = client()
        .post(server.url("/v1/traces"))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "gzip")
        .body(gzip(&good))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Spans with bad ids are rejected one by one, with partial_success.
    let mut mixed = rollout_request("ro-bbbbbbbbbbbb", 2, 0..2);
    let spans = &mut mixed.resource_spans[0].scope_spans[0].spans;
    spans.push(span([0; 16], 9, None, "zero trace id", vec![]));
    spans.push(span([3; 16], 10, None, "short span id", vec![]));
    spans.last_mut().unwrap().span_id.truncate(4);
    let resp = post(&server, "/v1/traces", PROTOBUF, mixed.encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    let body = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    let partial = body.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(!partial.error_message.is_empty());
    // Metrics and logs are accepted and not stored.
    for path in ["/v1/metrics", "/v1/logs"] {
        assert_eq!(
            post(&server, path, PROTOBUF, vec![]).await.status(),
            200,
            "{path}"
        );
        assert_eq!(
            post(&server, path, PROTOBUF, vec![0xff, 0xff])
                .await
                .status(),
            400,
            "{path}"
        );
    }
    // Health.
    let health: Value = client()
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["rejected_spans"], 2);
    // What was accepted is all there.
    let files = wait_for_files(&server.traces_dir(), "two rollouts", |f| f.len() == 2);
    let counts: Vec<_> = files.iter().map(|f| f.1["span_count"].clone()).collect();
    assert_eq!(counts, vec![json!(4), json!(2)]);
    let mut server = server;
    server.assert_alive();
}

#[tokio::test]
async fn grpc_export_with_gzip_and_bad_spans() {
    let (server, _tmp) = Server::start(&[]);
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let mut req = rollout_request("ro-cccccccccccc", 4, 0..4);
    req.resource_spans[0].scope_spans[0]
        .spans
        .push(span([0; 16], 77, None, "bad", vec![]));
    let resp = client.export(req).await.unwrap().into_inner();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 1);
    let files = wait_for_files(&server.traces_dir(), "grpc rollout", |f| f.len() == 1);
    assert_eq!(files[0].1["span_count"], 4);
    assert_eq!(files[0].1["status"], "succeeded");

    // Metrics and logs are accepted (and not stored) over gRPC too.
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    let url = format!("http://{}", server.grpc);
    MetricsServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::default())
        .await
        .unwrap();
    LogsServiceClient::connect(url)
        .await
        .unwrap()
        .export(
            opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(trace_files(&server.traces_dir()).len(), 1);
}

#[tokio::test]
async fn a_full_budget_throttles_with_retry_after_on_both_protocols() {
    let (server, _tmp) = Server::start(&[
        "--max-body",
        "512KiB",
        "--max-inflight",
        "512KiB",
        "--queue-wait",
        "50ms",
    ]);
    // A slow client holds the whole in-flight budget with a half-sent body.
    let mut slow = std::net::TcpStream::connect(server.http).unwrap();
    write!(
        slow,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        512 * 1024
    )
    .unwrap();
    slow.write_all(&vec![0u8; 512 * 1024 - 1]).unwrap();
    slow.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let body = rollout_request("ro-dddddddddddd", 5, 0..4).encode_to_vec();
    let resp = post(&server, "/v1/traces", PROTOBUF, body.clone()).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let mut grpc = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let err = grpc
        .export(rollout_request("ro-dddddddddddd", 5, 0..4))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let details = tonic_types::StatusExt::get_error_details(&err);
    assert_eq!(
        details.retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(1))
    );

    // Once the slow client goes away, the same request goes through.
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        post(&server, "/v1/traces", PROTOBUF, body).await.status(),
        200
    );
}

#[tokio::test]
async fn late_spans_rewrite_the_file_under_the_same_name() {
    let (server, _tmp) = Server::start(&["--summary-every", "100ms"]);
    let first = rollout_request("ro-eeeeeeeeeeee", 6, 0..4);
    assert_eq!(
        post(&server, "/v1/traces", PROTOBUF, first.encode_to_vec())
            .await
            .status(),
        200
    );
    let files = wait_for_files(&server.traces_dir(), "first write", |f| f.len() == 1);
    let name = files[0].0.clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = rollout_request("ro-eeeeeeeeeeee", 6, 4..8);
    assert_eq!(
        post(&server, "/v1/traces", PROTOBUF, late.encode_to_vec())
            .await
            .status(),
        200
    );
    let files = wait_for_files(&server.traces_dir(), "rewrite", |f| {
        f.len() == 1 && f[0].1["span_count"] == 8
    });
    assert_eq!(files[0].0, name);
    let seq: Vec<u64> = files[0].1["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sequence_id"].as_u64().unwrap())
        .collect();
    assert_eq!(seq, (1..=8).collect::<Vec<_>>());
    let leftovers: Vec<_> = std::fs::read_dir(server.traces_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
    // Now and then one line says what was stored since start.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let want = "since start: 8 spans stored, 0 model calls recorded, 2 trace files written";
    while !server.log().contains(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "{want:?} not in:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.log().matches(want).count(),
        1,
        "said once while nothing changes"
    );
}

/// The view's gauges: rollouts held in memory and evicted ones.
async fn held_and_evicted(server: &Server) -> (u64, u64) {
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let gauge = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    (
        gauge("oclagl_view_rollouts_in_memory "),
        gauge("oclagl_view_rollouts_evicted "),
    )
}

async fn wait_held_and_evicted(server: &Server, want: (u64, u64)) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while held_and_evicted(server).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "rollouts in memory and evicted: {:?}, want {want:?}",
            held_and_evicted(server).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stored(server: &Server, request: ExportTraceServiceRequest) {
    let status = post(server, "/v1/traces", PROTOBUF, request.encode_to_vec())
        .await
        .status();
    assert_eq!(status, 200);
}

fn span_count(files: &[(String, Value)], name: &str) -> Option<u64> {
    files.iter().find(|f| f.0 == name)?.1["span_count"].as_u64()
}

#[tokio::test]
async fn written_rollouts_leave_memory_and_come_back_whole_for_late_spans() {
    let (server, tmp) = Server::start(&["--quiet", "200ms"]);
    stored(&server, rollout_request("ro-aaaaaaaaaaa1", 0xa1, 0..4)).await;
    stored(&server, rollout_request("ro-bbbbbbbbbbb2", 0xb2, 0..4)).await;
    // Spans of a trace that names no rollout (yet).
    let unnamed = |ids: std::ops::Range<u64>| rollout_request("-", 0x77, ids);
    let orphan = unnamed(1..3);
    stored(&server, orphan).await;
    let files = wait_for_files(&server.traces_dir(), "three files", |f| f.len() == 3);
    wait_held_and_evicted(&server, (0, 3)).await;
    let name = |prefix: &str| {
        files
            .iter()
            .find(|f| f.0.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} file"))
            .0
            .clone()
    };
    let (a, b) = (
        name("rollout_ro-aaaaaaaaaaa1_"),
        name("rollout_ro-bbbbbbbbbbb2_"),
    );
    let derived = name("rollout_ro-777777777777_");

    // Unnamed late spans of ro-a's trace bring it back with all it had.
    stored(&server, rollout_request("ro-aaaaaaaaaaa1", 0xa1, 5..8)).await;
    wait_for_files(&server.traces_dir(), "ro-a rewritten", |f| {
        span_count(f, &a) == Some(7)
    });
    wait_held_and_evicted(&server, (0, 3)).await;

    // After a kill -9, the summaries say where each rollout is.
    server.kill();
    let server = Server::start_in(tmp.path(), &["--quiet", "200ms"]);
    wait_held_and_evicted(&server, (0, 3)).await;
    // A reward finds an evicted rollout.
    let rewarded = client()
        .post(server.url("/v1/rollouts/ro-bbbbbbbbbbb2/reward"))
        .json(&json!({"value": 0.5}))
        .send()
        .await
        .expect("reward");
    assert_eq!(rewarded.status(), 200);
    wait_for_files(&server.traces_dir(), "ro-b rewarded", |f| {
        span_count(f, &b) == Some(5)
    });
    // A span that names a rollout for the orphan trace folds the evicted
    // trace-derived rollout into it.
    stored(&server, rollout_request("ro-ccccccccccc3", 0x77, 0..1)).await;
    let files = wait_for_files(&server.traces_dir(), "orphan folded", |f| {
        f.len() == 3 && f.iter().all(|f| f.0 != derived)
    });
    let c = files
        .iter()
        .find(|f| f.0.starts_with("rollout_ro-ccccccccccc3_"))
        .expect("ro-c file");
    assert_eq!(c.1["span_count"], 3);
    assert_eq!(span_count(&files, &a), Some(7));
    wait_held_and_evicted(&server, (0, 3)).await;
    let listed = support::gateway::oclagl(tmp.path(), &[], &["ls", "--data-dir", "data", "--json"]);
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).expect("ls --json");
    let mut ids: Vec<&str> = listed
        .iter()
        .filter_map(|r| r["rollout_id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["ro-aaaaaaaaaaa1", "ro-bbbbbbbbbbb2", "ro-ccccccccccc3"]
    );
}

#[tokio::test]
async fn hostile_rollout_ids_stay_inside_the_traces_folder() {
    let (server, tmp) = Server::start(&[]);
    for (i, id) in ["../../escape", "a/b", "..", "x\u{1}y"].iter().enumerate() {
        let req = request(
            vec![],
            vec![span(
                [10 + i as u8; 16],
                1,
                None,
                "r",
                vec![kv("agentlightning.rollout_id", id)],
            )],
        );
        assert_eq!(
            post(&server, "/v1/traces", PROTOBUF, req.encode_to_vec())
                .await
                .status(),
            200
        );
    }
    let files = wait_for_files(&server.traces_dir(), "4 files", |f| f.len() == 4);
    let ids: std::collections::HashSet<_> = files
        .iter()
        .map(|f| f.1["rollout_id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains("../../escape") && ids.contains("x\u{1}y"));
    for (name, _) in &files {
        assert!(
            !name.contains("..") && !name.contains('/') && !name.contains('\u{1}'),
            "{name}"
        );
    }
    let outside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        outside.len(),
        2,
        "only data/ and traces/ expected: {outside:?}"
    );
}

#[tokio::test]
async fn sigterm_writes_pending_files_and_restart_keeps_names() {
    let (server, tmp) = Server::start(&["--quiet", "1h"]);
    let req = rollout_request("ro-ffffffffffff", 7, 0..4);
    assert_eq!(
        post(&server, "/v1/traces", PROTOBUF, req.encode_to_vec())
            .await
            .status(),
        200
    );
    assert!(
        trace_files(&server.traces_dir()).is_empty(),
        "quiet period is an hour"
    );
    assert!(server.terminate().success());
    let files = trace_files(&tmp.path().join("traces"));
    assert_eq!(files.len(), 1, "SIGTERM flushes pending rollouts");
    let name = files[0].0.clone();

    // A restart recovers the store; a late span rewrites the same file.
    let server = Server::start_in(tmp.path(), &[]);
    let late = rollout_request("ro-ffffffffffff", 7, 4..8);
    assert_eq!(
        post(&server, "/v1/traces", PROTOBUF, late.encode_to_vec())
            .await
            .status(),
        200
    );
    let files = wait_for_files(&server.traces_dir(), "rewrite after restart", |f| {
        f.len() == 1 && f[0].1["span_count"] == 8
    });
    assert_eq!(files[0].0, name);
}

#[tokio::test]
async fn a_trace_file_of_unnamed_spans_is_folded_into_the_rollout_that_claims_the_trace() {
    let (server, _tmp) = Server::start(&[]);
    // The gateway's own spans arrive first and name no rollout.
    let native = request(
        vec![kv("service.name", "openclaw")],
        vec![span([0x42; 16], 2, Some(1), "openclaw.model.call", vec![])],
    );
    assert_eq!(
        post(&server, "/v1/traces", PROTOBUF, native.encode_to_vec())
            .await
            .status(),
        200
    );
    let files = wait_for_files(&server.traces_dir(), "trace-derived file", |f| f.len() == 1);
    assert!(
        files[0].0.starts_with("rollout_ro-424242424242_"),
        "{}",
        files[0].0
    );
    assert_eq!(files[0].1["attempt_id"], "at-42424242");
    assert_eq!(files[0].1["status"], "running", "its root has not arrived");

    // Then the rollout's root span names the rollout for the whole trace.
    let root = request(
        vec![kv("service.name", "oclagl")],
        vec![span(
            [0x42; 16],
            1,
            None,
            "rollout",
            vec![
                kv("agentlightning.rollout_id", "ro-0000000000aa"),
                kv("agentlightning.attempt_id", "at-000000aa"),
            ],
        )],
    );
    assert_eq!(
        post(&server, "/v1/traces", PROTOBUF, root.encode_to_vec())
            .await
            .status(),
        200
    );
    let files = wait_for_files(&server.traces_dir(), "merged file", |f| {
        f.len() == 1 && f[0].1["rollout_id"] == "ro-0000000000aa"
    });
    let doc = &files[0].1;
    assert_eq!(doc["span_count"], 2);
    assert_eq!(doc["status"], "succeeded");
    for s in doc["spans"].as_array().unwrap() {
        assert_eq!(s["rollout_id"], "ro-0000000000aa");
        assert_eq!(s["attempt_id"], "at-000000aa");
    }
    assert_eq!(doc["spans"][0]["name"], "openclaw.model.call");
    assert_eq!(doc["spans"][0]["sequence_id"], 1);
}
