//! Authentication and TLS of the sidecar's receivers and endpoints.

mod support;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use support::{kv, metric, request, span, Server};

const TOKEN_OLD: &str = "tok-old-3f9a1c";
const TOKEN_NEW: &str = "tok-new-b27e44";

fn one_span(n: u8) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    request(
        vec![kv("service.name", "auth-test")],
        vec![span(
            [n; 16],
            n as u64,
            None,
            "s",
            vec![kv("agentlightning.rollout_id", &format!("ro-auth{n:08}"))],
        )],
    )
}

async fn post(client: &reqwest::Client, url: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(one_span(1).encode_to_vec());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

async fn grpc_export(
    endpoint: tonic::transport::Endpoint,
    token: Option<&str>,
    n: u8,
) -> Result<(), tonic::Status> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = TraceServiceClient::new(channel);
    let mut req = tonic::Request::new(one_span(n));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    client.export(req).await.map(|_| ())
}

#[tokio::test]
async fn every_endpoint_but_health_needs_one_of_the_tokens() {
    let (server, _tmp) = Server::start(&["--auth-token", TOKEN_OLD, "--auth-token", TOKEN_NEW]);
    let http = reqwest::Client::new();
    let traces = server.url("/v1/traces");
    for bad in [
        None,
        Some("Bearer wrong"),
        Some(TOKEN_NEW),
        Some("Basic dG9rOm5ldw=="),
    ] {
        let resp = post(&http, &traces, bad).await;
        assert_eq!(resp.status(), 401, "{bad:?}");
        assert!(
            resp.bytes().await.unwrap().is_empty(),
            "no detail in a refusal"
        );
    }
    for good in [TOKEN_OLD, TOKEN_NEW] {
        let resp = post(&http, &traces, Some(&format!("Bearer {good}"))).await;
        assert_eq!(resp.status(), 200);
    }
    for path in [
        "/v1/metrics",
        "/v1/logs",
        "/metrics",
        "/v1/rollouts/ro-auth00000001/reward",
    ] {
        let resp = http.post(server.url(path)).body("{}").send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
    }
    // Binding a rollout to AGL v1 (its model calls and key) too.
    let binding = server.url(&format!("/v1/agl/bindings/{}", "ab".repeat(16)));
    let body = r#"{"base_url": "http://127.0.0.1:9/v1", "key": "k"}"#;
    let resp = http.put(&binding).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 401, "binding without a token");
    let page = http
        .get(server.url("/metrics"))
        .bearer_auth(TOKEN_NEW)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&page, "oclagl_receiver_accepted_spans_total"),
        Some(2.0),
        "{page}"
    );
    let health = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "probes need no token");

    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc)).unwrap();
    let refused = grpc_export(endpoint.clone(), None, 2).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let wrong = grpc_export(endpoint.clone(), Some("nope"), 2)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(wrong.message(), "unauthenticated");
    grpc_export(endpoint, Some(TOKEN_OLD), 2).await.unwrap();
    support::wait_for_files(&server.traces_dir(), "2 rollouts", |f| f.len() == 2);
    // Tokens are never logged.
    let log = server.log();
    assert!(
        !log.contains(TOKEN_OLD) && !log.contains(TOKEN_NEW),
        "{log}"
    );
}

#[test]
fn listening_beyond_loopback_needs_a_token_or_an_explicit_opt_out() {
    support::serve_refuses(
        &["--http-addr", "0.0.0.0:0"],
        &[],
        "refusing to listen on 0.0.0.0:0 without authentication",
    );
    support::serve_refuses(
        &[
            "--llm-proxy",
            "0.0.0.0:0",
            "--llm-upstream",
            "http://127.0.0.1:9/v1",
            "--auth-token",
            "t0ken",
        ],
        &[],
        "refusing to run the LLM proxy on 0.0.0.0:0",
    );
    for extra in [["--insecure-no-auth", ""], ["--auth-token", "t0ken"]] {
        let args: Vec<&str> = ["--http-addr", "0.0.0.0:0"]
            .into_iter()
            .chain(extra.into_iter().filter(|a| !a.is_empty()))
            .collect();
        let (mut server, _tmp) = Server::start(&args);
        server.assert_alive();
    }
}

#[tokio::test]
async fn tls_receivers_serve_https_and_grpc_over_tls_only() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = Server::start_in(
        tmp.path(),
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
            "--auth-token",
            TOKEN_NEW,
        ],
    );
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(root)
        .resolve("localhost", server.http)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/v1/traces", server.http.port());
    let resp = post(&https, &url, Some(&format!("Bearer {TOKEN_NEW}"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(post(&https, &url, None).await.status(), 401);
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(post_result(&plain, &server.url("/v1/traces"))
        .await
        .is_err());

    let ca = tonic::transport::Certificate::from_pem(cert.cert.pem());
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("localhost");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", server.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    grpc_export(endpoint, Some(TOKEN_NEW), 3).await.unwrap();
    support::wait_for_files(&server.traces_dir(), "2 rollouts", |f| f.len() == 2);

    // A missing or broken key is a clear startup error.
    std::fs::write(&key_path, "not a key").unwrap();
    support::serve_refuses(
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        &[],
        "not a PEM private key",
    );
}

async fn post_result(
    client: &reqwest::Client,
    url: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(one_span(4).encode_to_vec())
        .send()
        .await
}

#[test]
fn forwarding_sends_each_destinations_own_headers() {
    let (b, _tb) = Server::start(&["--auth-token", TOKEN_NEW]);
    let good = format!(
        "{};name=good;headers=authorization=Bearer%20{TOKEN_NEW}",
        b.url("")
    );
    let bad = format!(
        "{};name=bad;headers=authorization=Bearer%20wrong",
        b.url("")
    );
    let (a, _ta) = Server::start(&["--forward", &good, "--forward", &bad]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        post(&reqwest::Client::new(), &a.url("/v1/traces"), None)
            .await
            .status()
    });
    assert_eq!(status, 200);
    support::wait_for_files(&b.traces_dir(), "the forwarded rollout", |f| f.len() == 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page = rt.block_on(async {
            reqwest::get(a.url("/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        let good_sent = metric(
            &page,
            "oclagl_forward_sent_spans_total{destination=\"good\"}",
        );
        let bad_refused = metric(
            &page,
            "oclagl_forward_refused_spans_total{destination=\"bad\"}",
        );
        if good_sent == Some(1.0) && bad_refused == Some(1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!a.log().contains(TOKEN_NEW), "header values are not logged");
}
