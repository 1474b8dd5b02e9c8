//! The LLM proxy of `oclagl serve`: the real OpenClaw gateway calling its
//! model through the proxy, and the proxy's pass-through and recording
//! against a scripted upstream.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::gateway::{decide, oclagl_async, start_provider, Gateway, TOKEN};
use support::{proxy_span, run_py, spans_named, traceparent, wait_for_files, Server};

/// Message content as the dataset holds it: text (a list of text parts is
/// their concatenation).
fn text_of(content: &Value) -> Value {
    match content {
        Value::Array(parts) => Value::String(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>(),
        ),
        other => other.clone(),
    }
}

/// What an OpenAI fine-tuning row must hold for a request the provider
/// received and the answer it gave: every message field for field, the
/// answer last, and the tools.
fn expected_row(body: &Value) -> (Vec<Value>, Value) {
    let mut messages: Vec<Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut out = json!({"role": m["role"], "content": text_of(&m["content"])});
            for field in ["tool_calls", "tool_call_id", "name"] {
                if let Some(v) = m.get(field).filter(|v| !v.is_null()) {
                    out[field] = v.clone();
                }
            }
            out
        })
        .collect();
    let mut answer = decide(body);
    answer["role"] = json!("assistant");
    messages.push(answer);
    (messages, body["tools"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_gateway_model_calls_join_their_rollouts_and_export_exactly() {
    let (provider_addr, provider) = start_provider().await;
    let upstream = format!("http://{provider_addr}/v1");
    // Every secret of a real deployment is in play (the sidecar's auth token,
    // the gateway token, the provider's key), with every log line there is.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_logged(
        dir.path(),
        &[
            "--llm-proxy",
            "127.0.0.1:0",
            "--llm-upstream",
            &upstream,
            "--auth-token",
            AUTH_TOKEN,
        ],
        "debug",
    );
    let proxy = server
        .llm_proxy
        .expect("the ready line names the LLM proxy");
    let gateway =
        tokio::task::spawn_blocking(move || Gateway::start(&format!("http://{proxy}/v1")))
            .await
            .unwrap();
    let prompts = [
        "Please use the ls tool to list the files",
        "Now use the ls tool once more",
    ];
    std::fs::write(dir.path().join("prompts.txt"), prompts.join("\n")).unwrap();
    let otlp = format!("http://{}", server.http);
    let url = gateway.url();
    let otlp_headers = format!("authorization=Bearer%20{AUTH_TOKEN}");
    let env = [
        ("GATEWAY_BASE_URL", url.as_str()),
        ("OPENCLAW_GATEWAY_TOKEN", TOKEN),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_EXPORTER_OTLP_HEADERS", otlp_headers.as_str()),
        ("OCLAGL_LOG", "debug"),
    ];
    let args = [
        "collect",
        "--gateway",
        "ws",
        "-c",
        "1",
        "--timeout",
        "120s",
        "prompts.txt",
    ];
    let collected = oclagl_async(dir.path(), &env, &args).await;

    // Each rollout's file holds its rollout span and both model calls.
    let traces = server.traces_dir();
    let files = wait_for_files(&traces, "two rollouts with two model calls each", |files| {
        files.len() == 2
            && files.iter().all(|(_, d)| {
                d["status"] == "succeeded" && spans_named(d, |n| n.starts_with("chat ")).len() == 2
            })
    });
    let calls = provider.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "gateway log:\n{}", gateway.log());
    let mut expected_rows = Vec::new();
    for (name, doc) in &files {
        assert_eq!(
            spans_named(doc, |n| n == "oclagl.rollout").len(),
            1,
            "{name}"
        );
        let trace = doc["spans"][0]["trace_id"].as_str().unwrap();
        let model_calls = spans_named(doc, |n| n == "chat mock-1");
        for span in &model_calls {
            assert_eq!(
                span["trace_id"], trace,
                "{name}: the call joins the rollout's trace"
            );
            let attrs = &span["attributes"];
            assert_eq!(attrs["gen_ai.operation.name"], "chat");
            assert!(attrs["gen_ai.response.id"]
                .as_str()
                .is_some_and(|id| id.starts_with("chatcmpl-mock-")));
            assert_eq!(attrs["gen_ai.usage.input_tokens"], 11);
            assert_eq!(attrs["oclagl.llm_proxy.truncated"], false);
            assert!(attrs["gen_ai.prompt.0.role"] == "system", "{attrs:#}");
        }
        let mine: Vec<_> = calls
            .iter()
            .filter(|c| c.traceparent.as_deref().and_then(|tp| tp.split('-').nth(1)) == Some(trace))
            .collect();
        assert_eq!(
            mine.len(),
            2,
            "{name}: the provider saw this rollout's two calls"
        );
        // The first call was answered with the tool call, recorded as such.
        let first = model_calls
            .iter()
            .find(|s| s["attributes"]["gen_ai.completion.0.finish_reason"] == "tool_calls")
            .expect("the tool-call answer is recorded");
        assert_eq!(
            first["attributes"]["gen_ai.completion.0.tool_calls.0.id"],
            "call_abc"
        );
        assert_eq!(
            first["attributes"]["gen_ai.completion.0.tool_calls.0.arguments"],
            "{\"path\":\".\"}"
        );
        expected_rows.push(expected_row(&mine[1].body));
        // The file holds each call's request and answer once: at most 1.2x
        // the bytes the provider received and sent (pretty-printed JSON,
        // the rollout span and AGL's span fields included).
        let file = std::fs::metadata(traces.join(name)).unwrap().len() as f64;
        let wire: usize = mine.iter().map(|c| c.request_bytes + c.answer_bytes).sum();
        let ratio = file / wire as f64;
        eprintln!("{name}: {file} bytes for {wire} bytes of model calls ({ratio:.2}x)");
        assert!(ratio <= 1.2, "{name}: {ratio:.2}x the calls' bytes");
    }
    // So does the store.
    let (stored, wire) = (
        server.stored_bytes(),
        calls
            .iter()
            .map(|c| c.request_bytes + c.answer_bytes)
            .sum::<usize>(),
    );
    let ratio = stored as f64 / wire as f64;
    eprintln!("store: {stored} bytes for {wire} bytes of model calls ({ratio:.2}x)");
    assert!(ratio <= 1.2, "the store holds {ratio:.2}x the calls' bytes");

    // The provider's key went upstream and nowhere else.
    assert!(calls
        .iter()
        .all(|c| c.authorization.as_deref() == Some("Bearer mock-provider-key")));
    // No secret in any file oclagl wrote (store, trace files, summaries,
    // cursors) nor in any of its logs at debug level.
    let logs = format!(
        "{}{}",
        server.log(),
        String::from_utf8_lossy(&collected.stderr)
    );
    assert!(logs.contains("DEBUG"), "debug logging is on");
    for secret in ["mock-provider-key", TOKEN, AUTH_TOKEN] {
        assert!(
            !support::disk_contains(dir.path(), secret),
            "{secret} on disk"
        );
        assert!(!logs.contains(secret), "{secret} in a log");
    }

    let out = oclagl_async(
        dir.path(),
        &[("OCLAGL_LOG", "debug")],
        &[
            "export-sft",
            "--format",
            "openai",
            "--source",
            traces.to_str().unwrap(),
            "--out",
            "sft.jsonl",
        ],
    )
    .await;
    assert!(out.status.success());
    let export_log = String::from_utf8_lossy(&out.stderr);
    for secret in ["mock-provider-key", TOKEN, AUTH_TOKEN] {
        assert!(!export_log.contains(secret), "{secret} in export-sft's log");
        assert!(
            !support::disk_contains(dir.path(), secret),
            "{secret} in the dataset"
        );
    }
    let rows: Vec<Value> = std::fs::read_to_string(dir.path().join("sft.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for (messages, tools) in &expected_rows {
        let row = rows
            .iter()
            .find(|r| r["messages"].as_array() == Some(messages))
            .unwrap_or_else(|| {
                panic!(
                    "no row equals the provider's last request + answer:\nexpected {}\nrows {rows:#?}",
                    Value::Array(messages.clone())
                )
            });
        // The row holds the system prompt, the tool call with its real id and
        // arguments, its result and the final answer.
        assert_eq!(messages[0]["role"], "system");
        let call = messages
            .iter()
            .rev()
            .find_map(|m| m["tool_calls"].get(0))
            .expect("an assistant tool call");
        assert_eq!(call["function"]["arguments"], "{\"path\":\".\"}");
        assert!(messages
            .iter()
            .any(|m| m["role"] == "tool" && m["tool_call_id"] == call["id"]));
        assert_eq!(
            messages.last().unwrap()["content"],
            "The folder listing is done."
        );
        let exported_tools: Vec<Value> = row["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"].clone())
            .collect();
        let sent: Vec<Value> = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut out = json!({"name": f["name"], "parameters": f["parameters"]});
                if let Some(d) = f.get("description") {
                    out["description"] = d.clone();
                }
                out
            })
            .collect();
        assert_eq!(exported_tools, sent, "tool definitions, field for field");
    }

    // AGL 0.3.0 reads the proxy's spans: messages with the real tool call,
    // tools, and one triplet per model call.
    let agl: Value =
        serde_json::from_str(&run_py("check_proxy_spans.py", &[traces.to_str().unwrap()])).unwrap();
    for (_, doc) in &files {
        let seen = &agl[doc["rollout_id"].as_str().unwrap()];
        assert_eq!(seen["triplets"], 2, "{seen:#}");
        let messages = seen["messages"].as_array().unwrap();
        assert_eq!(messages[0]["role"], "system");
        assert!(messages
            .iter()
            .any(|m| m["tool_calls"][0]["function"]["arguments"] == "{\"path\":\".\"}"));
        assert_eq!(
            messages.last().unwrap()["content"],
            "The folder listing is done."
        );
        assert!(!seen["tools"].as_array().unwrap().is_empty());
    }
}

/// A scripted upstream for the pass-through checks; `x-scenario` picks the
/// answer.
mod fake {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::{Body, Bytes};
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{any, get};
    use axum::Router;
    use futures_util::StreamExt;
    use tokio::sync::mpsc;

    pub const STREAM: &str = concat!(
        "data: {\"id\":\"s-1\",\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n",
        "data: {\"id\":\"s-1\",\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n"
    );

    /// The `slow` scenario's events, sent 300 ms apart.
    pub const SLOW: [&str; 3] = [
        "data: {\"n\":0}\n\n",
        "data: {\"n\":1}\n\n",
        "data: {\"n\":2}\n\n",
    ];

    #[derive(Default)]
    pub struct Seen {
        pub requests: Mutex<Vec<(HeaderMap, Bytes)>>,
    }

    /// Sends on the channel when dropped (the upstream's answer was dropped:
    /// its connection closed).
    struct Guard(mpsc::UnboundedSender<()>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    type AppState = (Arc<Seen>, mpsc::UnboundedSender<()>);

    async fn call(
        State((seen, closed)): State<AppState>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        seen.requests
            .lock()
            .unwrap()
            .push((headers.clone(), body.clone()));
        let scenario = headers
            .get("x-scenario")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match scenario {
            "echo" => {
                let ct = headers
                    .get("content-type")
                    .cloned()
                    .unwrap_or_else(|| "application/octet-stream".parse().unwrap());
                (
                    StatusCode::OK,
                    [("content-type", ct), ("x-upstream", "yes".parse().unwrap())],
                    body,
                )
                    .into_response()
            }
            "error" => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "7"), ("content-type", "application/json")],
                r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
            )
                .into_response(),
            "stream" => ([("content-type", "text/event-stream")], STREAM).into_response(),
            "responses" => (
                [("content-type", "application/json")],
                r#"{"id":"resp_1","model":"m-1","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4}}"#,
            )
                .into_response(),
            "slow" => {
                // Three events 300 ms apart: each must reach the client
                // before the next is sent.
                let events = futures_util::stream::unfold(0usize, |n| async move {
                    let event = SLOW.get(n)?;
                    if n > 0 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    Some((Ok::<_, Infallible>(Bytes::from_static(event.as_bytes())), n + 1))
                });
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(events),
                )
                    .into_response()
            }
            "endless" => {
                // One event every 20 ms until the reader goes away.
                let guard = Guard(closed);
                let events = futures_util::stream::unfold(0u64, |n| async move {
                    if n > 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let event = format!(
                        "data: {{\"id\":\"e\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{n} \"}}}}]}}\n\n"
                    );
                    Some((Ok::<_, Infallible>(Bytes::from(event)), n + 1))
                })
                .map(move |e| {
                    let _ = &guard;
                    e
                });
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(events),
                )
                    .into_response()
            }
            other => (StatusCode::NOT_FOUND, format!("no scenario {other:?}")).into_response(),
        }
    }

    async fn models() -> &'static str {
        r#"{"object":"list","data":[{"id":"m-1","object":"model"}]}"#
    }

    fn app() -> (Router, Arc<Seen>, mpsc::UnboundedReceiver<()>) {
        let seen = Arc::new(Seen::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new()
            .route("/v1/models", get(models))
            .route("/v1/{*rest}", any(call))
            .with_state((seen.clone(), tx));
        (app, seen, rx)
    }

    /// Starts the upstream; the receiver gets one message per dropped
    /// endless answer.
    pub async fn start() -> (std::net::SocketAddr, Arc<Seen>, mpsc::UnboundedReceiver<()>) {
        let (app, seen, rx) = app();
        let addr = crate::support::serve_on_loopback(app).await;
        (addr, seen, rx)
    }

    /// The same upstream over HTTPS, with the certificate and key in these
    /// PEM files.
    pub async fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> (std::net::SocketAddr, Arc<Seen>) {
        use oclagl::ingest::auth::{Tls, TlsListener};
        let (app, seen, _) = app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = TlsListener::new(listener, &Tls::load(cert, key).unwrap()).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, seen)
    }
}

/// A forward proxy for the environment's `HTTP_PROXY`/`HTTPS_PROXY`: `CONNECT`
/// tunnels, and requests in absolute form passed on as they are (servers
/// take that form too); it keeps the head of each request it gets.
mod env_proxy {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub async fn start() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = heads.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                tokio::spawn(relay(client, seen.clone()));
            }
        });
        (addr, heads)
    }

    async fn relay(mut client: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            if client.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        heads.lock().unwrap().push(text.clone());
        let target = text.split_whitespace().nth(1).unwrap_or_default();
        let (authority, connect) = match target.strip_prefix("http://") {
            Some(rest) => (rest.split('/').next().unwrap_or_default(), false),
            None => (target, true),
        };
        let Ok(mut upstream) = TcpStream::connect(authority).await else {
            return;
        };
        if connect {
            let _ = client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await;
        } else {
            let _ = upstream.write_all(&head).await;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// A chat request body for model `m-1`.
fn chat(content: &str, stream: bool) -> Vec<u8> {
    json!({"model": "m-1", "stream": stream, "messages": [{"role": "user", "content": content}]})
        .to_string()
        .into_bytes()
}

const KEY: &str = "Bearer sk-proxy-test-5e1f";
const AUTH_TOKEN: &str = "oclagl-auth-token-71d2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_is_transparent_and_every_call_is_recorded() {
    let (upstream, seen, mut closed) = fake::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let default = format!("http://{upstream}/v1");
    let dead = format!("dead-=http://{dead}/v1");
    let (server, dir) = Server::start(&[
        "--llm-proxy",
        "127.0.0.1:0",
        "--llm-upstream",
        &default,
        "--llm-upstream",
        &dead,
        "--llm-record-max",
        "64KiB",
    ]);
    let proxy = format!("http://{}/v1", server.llm_proxy.unwrap());
    let direct = default.clone();
    let client = reqwest::Client::new();
    let post = |base: &str, scenario: &str, trace: u8, body: Vec<u8>| {
        client
            .post(format!("{base}/chat/completions"))
            .header("authorization", KEY)
            .header("x-scenario", scenario)
            .header("traceparent", traceparent(trace))
            .body(body)
    };
    let traces = server.traces_dir();

    // Not JSON: passed through untouched both ways, and still recorded.
    let binary = b"\x00\xffnot json at all\x01".to_vec();
    let answer = post(&proxy, "echo", 1, binary.clone())
        .header("content-type", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-upstream"], "yes");
    assert_eq!(answer.bytes().await.unwrap().to_vec(), binary);
    {
        let requests = seen.requests.lock().unwrap();
        let (headers, body) = requests.last().unwrap();
        assert_eq!(body.to_vec(), binary, "the upstream got the body as sent");
        assert_eq!(
            headers["authorization"], KEY,
            "the provider's key is forwarded"
        );
        assert_eq!(headers["traceparent"], traceparent(1).as_str());
    }
    let span = proxy_span(&traces, 1);
    assert_eq!(
        span["attributes"]["oclagl.llm_proxy.request.body"],
        hex::encode(&binary)
    );
    assert!(span["attributes"]["oclagl.llm_proxy.unreadable"]
        .as_str()
        .unwrap()
        .contains("not JSON"));
    assert_eq!(span["parent_id"], hex::encode([0x77; 8]));

    // Unknown fields: untouched on the wire, kept in the recorded body.
    let request = json!({"model": "m-1", "x_vendor_field": {"keep": [1, 2]},
        "messages": [{"role": "user", "content": "hi", "x_part_field": true}]});
    let bytes = request.to_string().into_bytes();
    let via_proxy = post(&proxy, "echo", 2, bytes.clone()).send().await.unwrap();
    assert_eq!(via_proxy.bytes().await.unwrap().to_vec(), bytes);
    let span = proxy_span(&traces, 2);
    let attrs = &span["attributes"];
    assert_eq!(span["name"], "chat m-1");
    assert_eq!(attrs["gen_ai.prompt.0.content"], "hi");
    // The trace file holds the request once, as AGL's attributes; the store
    // holds it once, as the body.
    assert_eq!(attrs["oclagl.llm_proxy.request.body"], Value::Null);
    let stored = server.stored_proxy_span(2);
    assert!(!stored.contains_key("gen_ai.prompt.0.content"));
    let recorded: Value =
        serde_json::from_str(stored["oclagl.llm_proxy.request.body"].as_str().unwrap()).unwrap();
    assert_eq!(recorded, request);

    // Upstream errors: status, headers and body as the upstream sent them.
    let (direct_answer, proxied) = (
        post(&direct, "error", 3, b"{}".to_vec())
            .send()
            .await
            .unwrap(),
        post(&proxy, "error", 3, b"{}".to_vec())
            .send()
            .await
            .unwrap(),
    );
    assert_eq!(proxied.status(), 429);
    assert_eq!(proxied.headers()["retry-after"], "7");
    assert_eq!(
        proxied.bytes().await.unwrap(),
        direct_answer.bytes().await.unwrap()
    );
    let span = proxy_span(&traces, 3);
    assert_eq!(span["status"]["status_code"], "ERROR");
    assert_eq!(span["attributes"]["error.type"], "429");

    // An event stream arrives as the upstream sent it and is reassembled.
    let streamed = post(&proxy, "stream", 4, chat("hi", true))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.headers()["content-type"], "text/event-stream");
    assert_eq!(streamed.text().await.unwrap(), fake::STREAM);
    let span = proxy_span(&traces, 4);
    assert_eq!(span["attributes"]["gen_ai.completion.0.content"], "Hello");
    assert_eq!(
        span["attributes"]["gen_ai.response.finish_reasons"],
        json!(["stop"])
    );
    assert_eq!(span["status"]["status_code"], "UNSET");

    // Events reach the client as the upstream sends them, not when its
    // answer ends.
    let mut slow = post(&proxy, "slow", 9, chat("slowly", true))
        .send()
        .await
        .unwrap();
    let (mut text, mut arrivals) = (String::new(), Vec::new());
    while let Some(chunk) = slow.chunk().await.unwrap() {
        arrivals.push(Instant::now());
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let events = fake::SLOW.concat();
    assert_eq!(text, events);
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        spread >= Duration::from_millis(400),
        "the events arrived together, {spread:?} apart"
    );
    let span = proxy_span(&traces, 9);
    assert_eq!(span["attributes"]["oclagl.llm_proxy.response.body"], events);

    // The Responses API is recorded the same way.
    let answer = client
        .post(format!("{proxy}/responses"))
        .header("x-scenario", "responses")
        .header("traceparent", traceparent(8))
        .body(r#"{"model":"m-1","instructions":"be brief","input":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let span = proxy_span(&traces, 8);
    let attrs = &span["attributes"];
    assert_eq!(attrs["url.path"], "/v1/responses");
    assert_eq!(attrs["gen_ai.prompt.0.role"], "system");
    assert_eq!(attrs["gen_ai.prompt.1.content"], "hello");
    assert_eq!(attrs["gen_ai.completion.0.content"], "Hi");
    assert_eq!(attrs["gen_ai.usage.output_tokens"], 1);

    // Other routes pass through unrecorded.
    let models = client.get(format!("{proxy}/models")).send().await.unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(
        models.text().await.unwrap(),
        client
            .get(format!("{direct}/models"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    );

    // A model routed to an upstream that is down: 502, recorded as an error.
    let down = post(
        &proxy,
        "echo",
        5,
        json!({"model": "dead-1", "messages": []})
            .to_string()
            .into_bytes(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(down.status(), 502);
    let error: Value = down.json().await.unwrap();
    assert_eq!(error["error"]["type"], "upstream_unreachable");
    let span = proxy_span(&traces, 5);
    assert_eq!(span["attributes"]["error.type"], "upstream_unreachable");
    assert_eq!(span["name"], "chat dead-1");

    // Over the recording cap: the client gets everything, the span the
    // beginning and a flag.
    let bytes = chat(&"x".repeat(200_000), false);
    let echoed = post(&proxy, "echo", 6, bytes.clone()).send().await.unwrap();
    assert_eq!(echoed.bytes().await.unwrap().to_vec(), bytes);
    let span = proxy_span(&traces, 6);
    assert_eq!(span["attributes"]["oclagl.llm_proxy.truncated"], true);
    let kept = span["attributes"]["oclagl.llm_proxy.request.body"]
        .as_str()
        .unwrap();
    assert_eq!(kept.len(), 64 * 1024);
    assert!(bytes.starts_with(kept.as_bytes()));

    // A client that hangs up mid-stream cancels the upstream call.
    let mut endless = post(&proxy, "endless", 7, chat("go on", true))
        .send()
        .await
        .unwrap();
    assert!(endless.chunk().await.unwrap().is_some());
    drop(endless);
    tokio::time::timeout(Duration::from_secs(30), closed.recv())
        .await
        .expect("the upstream saw its connection closed")
        .unwrap();
    let span = proxy_span(&traces, 7);
    assert_eq!(span["status"]["status_code"], "ERROR");
    assert_eq!(span["attributes"]["error.type"], "cancelled");

    // The provider's key is on no disk.
    assert!(!support::disk_contains(dir.path(), "sk-proxy-test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_environment_proxies_and_url_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let (tls_addr, tls_seen) = fake::start_tls(&cert_path, &key_path).await;
    let (plain_addr, plain_seen, _closed) = fake::start().await;
    let https = format!("https://localhost:{}/v1", tls_addr.port());
    let trusted = cert_path.to_str().unwrap();
    let client = reqwest::Client::new();
    // The request for `model`, which the echo scenario answers with.
    let echoed = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
    };
    let call = |proxy: SocketAddr, model: &str, scenario: &str, trace: u8| {
        client
            .post(format!("http://{proxy}/v1/chat/completions"))
            .header("x-scenario", scenario)
            .header("traceparent", traceparent(trace))
            .body(echoed(model))
    };

    // An https upstream, its certificate trusted through SSL_CERT_FILE; an
    // http one whose URL holds credentials.
    let with_user = format!("basic-=http://us%20er:pw@{plain_addr}/v1");
    let (server, dir) = Server::start_with_env(
        &[
            "--llm-proxy",
            "127.0.0.1:0",
            "--llm-upstream",
            &https,
            "--llm-upstream",
            &with_user,
        ],
        &[("SSL_CERT_FILE", trusted)],
    );
    let proxy = server.llm_proxy.unwrap();
    let answer = call(proxy, "m-1", "echo", 20)
        .header("authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), echoed("m-1"));
    assert_eq!(
        tls_seen.requests.lock().unwrap().last().unwrap().0["authorization"],
        KEY
    );
    let streamed = call(proxy, "m-1", "stream", 21).send().await.unwrap();
    assert_eq!(streamed.text().await.unwrap(), fake::STREAM);
    let span = proxy_span(&server.traces_dir(), 21);
    assert_eq!(span["attributes"]["oclagl.llm_proxy.upstream"], https);
    assert_eq!(span["attributes"]["gen_ai.completion.0.content"], "Hello");
    // No Authorization from the caller: the URL's, as Basic.
    let answer = call(proxy, "basic-1", "echo", 22).send().await.unwrap();
    assert_eq!(answer.text().await.unwrap(), echoed("basic-1"));
    assert_eq!(
        plain_seen.requests.lock().unwrap().last().unwrap().0["authorization"],
        "Basic dXMgZXI6cHc="
    );
    let span = proxy_span(&server.traces_dir(), 22);
    assert_eq!(
        span["attributes"]["oclagl.llm_proxy.upstream"],
        format!("http://{plain_addr}/v1")
    );
    assert!(!support::disk_contains(dir.path(), "dXMgZXI6cHc"));
    assert!(!support::disk_contains(dir.path(), "er:pw"));

    // Without the trust, the upstream's certificate is refused.
    let (untrusting, _dir) =
        Server::start(&["--llm-proxy", "127.0.0.1:0", "--llm-upstream", &https]);
    let seen_before = tls_seen.requests.lock().unwrap().len();
    let refused = call(untrusting.llm_proxy.unwrap(), "m-1", "echo", 23)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 502);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["type"], "upstream_unreachable");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{error}"
    );
    assert_eq!(tls_seen.requests.lock().unwrap().len(), seen_before);

    // Through the proxies the environment names: a CONNECT tunnel to the
    // https upstream, the absolute form with the proxy's credentials to the
    // http one.
    let (env_proxy, heads) = env_proxy::start().await;
    let (via, via_with_user) = (
        format!("http://{env_proxy}"),
        format!("http://pu:pp@{env_proxy}"),
    );
    let plain = format!("plain-=http://{plain_addr}/v1");
    let (proxied, _dir) = Server::start_with_env(
        &[
            "--llm-proxy",
            "127.0.0.1:0",
            "--llm-upstream",
            &https,
            "--llm-upstream",
            &plain,
        ],
        &[
            ("SSL_CERT_FILE", trusted),
            ("HTTPS_PROXY", &via),
            ("HTTP_PROXY", &via_with_user),
            ("NO_PROXY", ""),
        ],
    );
    let proxy = proxied.llm_proxy.unwrap();
    let answer = call(proxy, "m-1", "echo", 24).send().await.unwrap();
    assert_eq!(answer.text().await.unwrap(), echoed("m-1"));
    let answer = call(proxy, "plain-1", "echo", 25).send().await.unwrap();
    assert_eq!(answer.text().await.unwrap(), echoed("plain-1"));
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads[0].starts_with(&format!(
            "CONNECT localhost:{} HTTP/1.1\r\n",
            tls_addr.port()
        )),
        "{heads:?}"
    );
    assert!(
        heads[1].starts_with(&format!(
            "POST http://{plain_addr}/v1/chat/completions HTTP/1.1\r\n"
        )),
        "{heads:?}"
    );
    assert!(
        heads[1].to_ascii_lowercase().contains(
            "\r\nproxy-authorization: basic chu6chA=\r\n"
                .to_ascii_lowercase()
                .as_str()
        ),
        "{heads:?}"
    );
    assert_eq!(heads.len(), 2, "{heads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_calls_in_flight_finish() {
    let (upstream, _seen, _closed) = fake::start().await;
    let (server, _dir) = Server::start(&[
        "--llm-proxy",
        "127.0.0.1:0",
        "--llm-upstream",
        &format!("http://{upstream}/v1"),
    ]);
    let proxy = format!("http://{}/v1/chat/completions", server.llm_proxy.unwrap());
    let traces = server.traces_dir();
    let mut slow = reqwest::Client::new()
        .post(&proxy)
        .header("x-scenario", "slow")
        .header("traceparent", traceparent(30))
        .body(chat("slowly", true))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let first = slow.chunk().await.unwrap().unwrap();
    text.push_str(std::str::from_utf8(&first).unwrap());
    // SIGTERM with the answer half sent: it is finished, then recorded.
    let stopping = tokio::task::spawn_blocking(move || server.terminate());
    while let Some(chunk) = slow.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(text, fake::SLOW.concat());
    assert!(stopping.await.unwrap().success());
    let span = proxy_span(&traces, 30);
    assert_eq!(span["status"]["status_code"], "UNSET");
    assert_eq!(
        span["attributes"]["oclagl.llm_proxy.response.body"],
        fake::SLOW.concat()
    );
    assert!(reqwest::Client::new()
        .post(&proxy)
        .body(chat("too late", false))
        .send()
        .await
        .is_err());
}
