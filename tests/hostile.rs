//! Hostile input against every listener of `oclagl serve`: OTLP/HTTP,
//! OTLP/gRPC, the reward endpoint and the LLM proxy. For each input: the
//! documented status, the process alive; at the end: memory bounded and
//! every span accepted before still there.

mod support;

use std::io::Write;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use support::bridge::Bridge;
use support::fake_fork::FakeFork;
use support::{kv, request, span, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROTOBUF: &str = "application/x-protobuf";
const BRIDGE_SECRET: &str = "hostile-bridge-secret-9c1d";

/// A realistic export: 20 spans with attributes, events and a nested value.
fn valid_request() -> ExportTraceServiceRequest {
    let spans = (1..=20u64)
        .map(|i| {
            let mut s = span(
                [0x5a; 16],
                i,
                (i > 1).then_some(1),
                "step",
                vec![
                    kv("agentlightning.rollout_id", "ro-hostile0001"),
                    kv("k", "v"),
                ],
            );
            s.events
                .push(opentelemetry_proto::tonic::trace::v1::span::Event {
                    name: "e".into(),
                    ..Default::default()
                });
            s
        })
        .collect();
    request(vec![kv("service.name", "hostile")], spans)
}

/// Truncations at 100 points and single-byte corruptions at 100 points of
/// an encoded export, each with what a correct decoder makes of it.
fn damaged_protobuf() -> Vec<(String, Vec<u8>)> {
    let good = valid_request().encode_to_vec();
    let mut out = Vec::new();
    for k in 0..100 {
        let cut = 1 + k * (good.len() - 2) / 100;
        out.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    for k in 0..100 {
        let at = k * (good.len() - 1) / 100 + 1;
        let mut bad = good.clone();
        bad[at] ^= [0xff, 0x80, 0x07, 0x40][k % 4];
        out.push((format!("byte {at} flipped"), bad));
    }
    out
}

fn decodes(body: &[u8]) -> bool {
    ExportTraceServiceRequest::decode(body).is_ok()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Nested OTLP/JSON `kvlistValue`s, `depth` deep.
fn deep_json(depth: usize) -> String {
    let mut v = r#"{"stringValue":"x"}"#.to_string();
    for _ in 0..depth {
        v = format!(r#"{{"kvlistValue":{{"values":[{{"key":"k","value":{v}}}]}}}}"#);
    }
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a","spanId":"00000000000000ff","name":"deep","attributes":[{{"key":"d","value":{v}}}]}}]}}]}}]}}"#
    )
}

/// JSON bodies of the wrong shape, and what each must get.
fn bad_json() -> Vec<(String, Vec<u8>, &'static [u16])> {
    let span = |fields: &str| {
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{fields}}}]}}]}}]}}"#)
    };
    let ids = r#""traceId":"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a","spanId":"00000000000000aa""#;
    let rejected: &[u16] = &[400];
    let mut out: Vec<(String, String, &'static [u16])> = vec![
        ("not JSON".into(), "{nope".into(), rejected),
        ("empty body".into(), String::new(), rejected),
        ("array".into(), "[]".into(), rejected),
        ("number".into(), "42".into(), rejected),
        (
            "resourceSpans a number".into(),
            r#"{"resourceSpans":5}"#.into(),
            rejected,
        ),
        (
            "resourceSpans a string".into(),
            r#"{"resourceSpans":"x"}"#.into(),
            rejected,
        ),
        (
            "scopeSpans an object".into(),
            r#"{"resourceSpans":[{"scopeSpans":{}}]}"#.into(),
            rejected,
        ),
        (
            "spans null entries".into(),
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[null]}]}]}"#.into(),
            rejected,
        ),
        (
            "traceId a number".into(),
            span(r#""traceId":12,"spanId":"00000000000000aa""#),
            rejected,
        ),
        (
            "name an object".into(),
            span(&format!(r#"{ids},"name":{{}}"#)),
            rejected,
        ),
        (
            "kind a string".into(),
            span(&format!(r#"{ids},"kind":"SERVER""#)),
            rejected,
        ),
        (
            "kind an enum name".into(),
            span(&format!(r#"{ids},"kind":"SPAN_KIND_SERVER""#)),
            rejected,
        ),
        (
            "startTimeUnixNano negative".into(),
            span(&format!(r#"{ids},"startTimeUnixNano":"-5""#)),
            rejected,
        ),
        (
            "startTimeUnixNano a word".into(),
            span(&format!(r#"{ids},"startTimeUnixNano":"soon""#)),
            rejected,
        ),
        (
            "startTimeUnixNano too big".into(),
            span(&format!(
                r#"{ids},"startTimeUnixNano":"99999999999999999999999""#
            )),
            rejected,
        ),
        (
            "attributes an object".into(),
            span(&format!(r#"{ids},"attributes":{{"k":"v"}}"#)),
            rejected,
        ),
        (
            "attribute value a bare string".into(),
            span(&format!(
                r#"{ids},"attributes":[{{"key":"k","value":"v"}}]"#
            )),
            rejected,
        ),
        (
            "intValue a float".into(),
            span(&format!(
                r#"{ids},"attributes":[{{"key":"k","value":{{"intValue":1.5}}}}]"#
            )),
            rejected,
        ),
        (
            "status code a word".into(),
            span(&format!(r#"{ids},"status":{{"code":"bad"}}"#)),
            rejected,
        ),
        (
            "events a string".into(),
            span(&format!(r#"{ids},"events":"e""#)),
            rejected,
        ),
        ("deeply nested (1000)".into(), deep_json(1000), rejected),
        (
            "invalid UTF-8 escape".into(),
            span(&format!(r#"{ids},"name":"\udc00""#)),
            rejected,
        ),
    ];
    // Ids the OTLP/JSON way are hex; base64, short or odd ids are refused
    // (the whole request, or the span as a partial success).
    let id_cases: &[u16] = &[200, 400];
    for (what, trace, span_id) in [
        ("base64 ids", "WlpaWlpaWlpaWlpaWlpaWg==", "AAAAAAAAAKo="),
        ("short trace id", "5a5a", "00000000000000aa"),
        (
            "odd-length span id",
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
            "0000000000000aa",
        ),
        (
            "non-hex ids",
            "zz5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
            "zz000000000000aa",
        ),
        (
            "zero ids",
            "00000000000000000000000000000000",
            "0000000000000000",
        ),
    ] {
        out.push((
            what.into(),
            span(&format!(r#""traceId":"{trace}","spanId":"{span_id}""#)),
            id_cases,
        ));
    }
    let mut out: Vec<(String, Vec<u8>, &'static [u16])> = out
        .into_iter()
        .map(|(w, b, s)| (w, b.into_bytes(), s))
        .collect();
    out.push((
        "invalid UTF-8 bytes".into(),
        b"{\"resourceSpans\":[\xff\xfe]}".to_vec(),
        rejected,
    ));
    // A huge attribute value under the body limit is stored; one over it is 413.
    let huge = |n: usize| span(&format!(r#"{ids},"name":"{}""#, "x".repeat(n))).into_bytes();
    out.push(("8 MiB attribute".into(), huge(8 << 20), &[200]));
    // 413 is answered from Content-Length at once; a client still writing
    // 17 MiB may see the connection closed before it reads the answer.
    out.push(("17 MiB attribute".into(), huge(17 << 20), &[413, 0]));
    out
}

async fn post(client: &reqwest::Client, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> u16 {
    let mut req = client.post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// A body sent a few bytes at a time, slower than `--body-timeout`.
async fn slowloris(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 100000\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 256];
    for _ in 0..40 {
        if s.write_all(b"\x0a").await.is_err() {
            break;
        }
        tokio::select! {
            n = s.read(&mut answer) => {
                let n = n.unwrap_or(0);
                return String::from_utf8_lossy(&answer[..n]).to_string();
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    String::new()
}

#[derive(Clone, Copy)]
struct RawCodec;
struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<ExportTraceServiceResponse>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(tonic::codec::BufferSettings::default())
    }
}

async fn grpc_raw(
    channel: &tonic::transport::Channel,
    path: &'static str,
    body: Vec<u8>,
) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone()).max_encoding_message_size(64 << 20);
    if grpc.ready().await.is_err() {
        return tonic::Code::Unavailable;
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    match grpc
        .unary(tonic::Request::new(Bytes::from(body)), path, RawCodec)
        .await
    {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_bad_inputs_get_their_status_and_lose_nothing() {
    let (server, _tmp) = Server::start(&["--body-timeout", "1s", "--max-body", "16MiB"]);
    // The proxy's upstream is the sidecar's own OTLP/HTTP receiver, a real
    // server that validates what it gets: through the proxy, every answer
    // must be the one a direct call gets.
    let upstream = format!("http://{}/v1", server.http);
    let (proxied, _tmp2) =
        Server::start(&["--llm-proxy", "127.0.0.1:0", "--llm-upstream", &upstream]);
    let proxy_addr = proxied.llm_proxy.expect("the proxy listens");
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let traces = server.url("/v1/traces");

    // What was accepted before must survive all of it.
    let before = valid_request();
    assert_eq!(
        post(
            &client,
            &traces,
            &[("content-type", PROTOBUF)],
            before.encode_to_vec()
        )
        .await,
        200
    );
    let tried = std::cell::Cell::new(0usize);
    let check = |what: &str, got: u16, want: &[u16]| {
        tried.set(tried.get() + 1);
        assert!(want.contains(&got), "{what}: got {got}, want {want:?}");
    };

    // OTLP/HTTP: damaged protobuf.
    for (what, body) in damaged_protobuf() {
        let want: &[u16] = if decodes(&body) { &[200] } else { &[400] };
        let got = post(&client, &traces, &[("content-type", PROTOBUF)], body).await;
        check(&format!("http protobuf {what}"), got, want);
    }
    // OTLP/HTTP: JSON of the wrong shape.
    for (what, body, want) in bad_json() {
        let got = post(
            &client,
            &traces,
            &[("content-type", "application/json")],
            body,
        )
        .await;
        check(&format!("http json {what}"), got, want);
    }
    // Content types and encodings.
    let good = before.encode_to_vec();
    for ct in [
        "text/plain",
        "application/xml",
        "application/grpc",
        "multipart/form-data",
        "",
        "application/x-protobufx",
        "application/jsonp",
        "image/png",
        "application/octet-stream",
        "*/*",
    ] {
        let headers: Vec<(&str, &str)> = if ct.is_empty() {
            vec![]
        } else {
            vec![("content-type", ct)]
        };
        check(
            &format!("content type {ct:?}"),
            post(&client, &traces, &headers, good.clone()).await,
            &[415],
        );
    }
    for enc in ["br", "zstd", "deflate", "gzip, br", "compress"] {
        let got = post(
            &client,
            &traces,
            &[("content-type", PROTOBUF), ("content-encoding", enc)],
            good.clone(),
        )
        .await;
        check(&format!("content encoding {enc}"), got, &[415]);
    }
    let bomb = gzip(&vec![0u8; 1 << 30]);
    let got = post(
        &client,
        &traces,
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        bomb,
    )
    .await;
    check("gzip bomb (1 GiB of zeros)", got, &[413]);
    let got = post(
        &client,
        &traces,
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        b"\x1f\x8b\x08garbage".to_vec(),
    )
    .await;
    check("corrupt gzip", got, &[400]);
    let got = post(
        &client,
        &traces,
        &[
            ("content-type", PROTOBUF),
            ("content-length", "99999999999"),
        ],
        vec![],
    )
    .await;
    check("lying content-length", got, &[0, 400, 413]);
    // Headers share hyper's 400 kB read buffer: past it, 431 (or a close).
    let big_header = "x".repeat(1 << 20);
    let got = post(
        &client,
        &traces,
        &[("content-type", PROTOBUF), ("x-big", &big_header)],
        good.clone(),
    )
    .await;
    check("1 MiB header", got, &[0, 431]);
    let answer = slowloris(server.http).await;
    check(
        "slowloris body",
        answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        &[408],
    );

    // The reward endpoint: unknown and hostile rollout ids, bad bodies.
    for id in [
        "..%2F..%2Fetc%2Fpasswd",
        "ro-nope",
        "%00",
        "a%2Fb",
        "..",
        "ro-hostile0001%0a",
        &"r".repeat(5000),
    ] {
        let url = server.url(&format!("/v1/rollouts/{id}/reward"));
        let got = post(
            &client,
            &url,
            &[("content-type", "application/json")],
            br#"{"value":1}"#.to_vec(),
        )
        .await;
        check(&format!("reward for {id:.40}"), got, &[404]);
    }
    let reward = server.url("/v1/rollouts/ro-hostile0001/reward");
    for body in [
        &b"{"[..],
        b"[]",
        b"{\"value\":\"high\"}",
        b"{\"rewards\":5}",
        b"\xff",
        b"{\"value\":1e999}",
    ] {
        let got = post(
            &client,
            &reward,
            &[("content-type", "application/json")],
            body.to_vec(),
        )
        .await;
        check(
            &format!("reward body {:?}", String::from_utf8_lossy(body)),
            got,
            &[400],
        );
    }

    // OTLP/gRPC: the same damaged protobuf, a wrong method, an oversized message.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for (what, body) in damaged_protobuf() {
        let want = if decodes(&body) {
            tonic::Code::Ok
        } else {
            tonic::Code::InvalidArgument
        };
        let got = grpc_raw(&channel, EXPORT, body).await;
        tried.set(tried.get() + 1);
        assert_eq!(got, want, "grpc {what}");
    }
    let got = grpc_raw(
        &channel,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
        good.clone(),
    )
    .await;
    assert_eq!(got, tonic::Code::Unimplemented);
    let got = grpc_raw(&channel, EXPORT, vec![0x0a; 17 << 20]).await;
    assert!(
        matches!(
            got,
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{got:?}"
    );
    tried.set(tried.get() + 2);

    // The LLM proxy: each damaged body gets, through the proxy, exactly the
    // status the upstream gives it directly.
    let chat = serde_json::to_vec(&serde_json::json!({
        "model": "m", "stream": true,
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}]
    }))
    .unwrap();
    let proxy_bodies = damaged(&chat, [b'"', b'{', 0xff, 0x00]);
    let direct = format!("{upstream}/chat/completions");
    let via = format!("http://{proxy_addr}/v1/chat/completions");
    for (what, body) in proxy_bodies {
        let headers = [
            ("content-type", "application/json"),
            ("authorization", "Bearer sk-provider-key"),
        ];
        let want = post(&client, &direct, &headers, body.clone()).await;
        let got = post(&client, &via, &headers, body).await;
        check(&format!("proxy {what}"), got, &[want]);
    }

    // The bridge (its own listener, `oclagl bridge`), before a fake of the
    // fork gateway: 200 damaged chat bodies. Not JSON: 400; JSON: one of
    // the contract's answers (a body that still holds a valid chat runs it).
    let fork = FakeFork::start(BRIDGE_SECRET, Duration::ZERO).await;
    let bridge_dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::start(
        bridge_dir.path(),
        &fork.url(),
        BRIDGE_SECRET,
        &["--max-body", "64KiB"],
    );
    let chat = serde_json::to_vec(&serde_json::json!({
        "sessionKey": "agent:main:main", "message": "hello", "attachments": [],
        "internalSecret": BRIDGE_SECRET
    }))
    .unwrap();
    let mut bodies = damaged(&chat, [b'"', b'}', 0xff, b'x']);
    bodies.push(("over --max-body".into(), vec![b' '; 65 << 10]));
    let url = bridge.url("/chat");
    for (what, body) in bodies {
        let json = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
        let want: &[u16] = if what.starts_with("over") {
            &[413]
        } else if json {
            &[200, 400, 401, 403]
        } else {
            &[400]
        };
        let got = post(&client, &url, &[("content-type", "application/json")], body).await;
        check(&format!("bridge {what}"), got, want);
    }
    bridge.assert_alive();

    // Alive, bounded, and nothing accepted before was lost.
    let mut server = server;
    server.assert_alive();
    let mut proxied = proxied;
    proxied.assert_alive();
    assert!(tried.get() >= 800, "{} inputs", tried.get());
    for s in [&server, &proxied] {
        let peak = s.peak_rss_kib() / 1024;
        assert!(peak < 512, "peak RSS {peak} MiB");
    }
    let files = support::wait_for_files(&server.traces_dir(), "the rollout sent first", |f| {
        f.iter()
            .any(|(n, _)| n.starts_with("rollout_ro-hostile0001_"))
    });
    let ids = support::span_ids(&files);
    for s in &before.resource_spans[0].scope_spans[0].spans {
        assert!(
            ids.contains(&hex::encode(&s.span_id)),
            "span {} lost",
            hex::encode(&s.span_id)
        );
    }
    assert!(!support::disk_contains(bridge_dir.path(), BRIDGE_SECRET));
    assert!(
        !support::disk_contains(&proxied.dir, "sk-provider-key"),
        "the provider key reached the disk"
    );
    assert_eq!(
        post(&client, &traces, &[("content-type", PROTOBUF)], good).await,
        200,
        "still serving"
    );
}

/// 100 truncations and 100 one-byte corruptions of a JSON body (the bad byte
/// cycles through `bad`).
fn damaged(body: &[u8], bad: [u8; 4]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = (0..100)
        .map(|k| {
            let cut = k * body.len() / 100;
            (format!("truncated at {cut}"), body[..cut].to_vec())
        })
        .collect();
    out.extend((0..100).map(|k| {
        let mut b = body.to_vec();
        let at = k * (body.len() - 1) / 100;
        b[at] = bad[k % 4];
        (format!("byte {at} replaced"), b)
    }));
    out
}

/// A model provider that answers every way a broken or hostile one can: it
/// speaks HTTP/1.1 by hand over TCP, so it can break off mid-event, never
/// end, or send one event of 100 MB. The scenario is the request's
/// `x-scenario` header; every answer is chunked, `Connection: close`.
mod hostile_provider {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A chat completion chunk with `delta`.
    fn event(delta: &str) -> String {
        format!("data: {{\"id\":\"c-1\",\"choices\":[{{\"index\":0,\"delta\":{delta}}}]}}\n\n")
    }

    pub const MIB: usize = 1 << 20;
    /// The size of the one huge event's content.
    pub const HUGE: usize = 100 * MIB;

    /// The answer of a scenario, in the pieces it is written in; `None` for
    /// the endless one, and whether the connection is dropped before the
    /// body's end.
    pub fn answer(scenario: &str) -> (Vec<Vec<u8>>, bool) {
        let normal = [
            event(r#"{"role":"assistant","content":"Hel"}"#),
            event(r#"{"content":"lo"}"#),
            "data: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
                .to_string(),
            "data: [DONE]\n\n".to_string(),
        ];
        let pieces: Vec<String> = match scenario {
            "normal" => normal.to_vec(),
            "huge-index" => vec![
                event(r#"{"role":"assistant","content":null}"#),
                event(
                    r#"{"tool_calls":[{"index":8888888888881,"id":"call_1","type":"function","function":{"name":"ls","arguments":"{}"}}]}"#,
                ),
                "data: [DONE]\n\n".to_string(),
            ],
            "no-done" => normal[..3].to_vec(),
            "dropped" => vec![
                event(r#"{"role":"assistant","content":"Hel"}"#),
                "data: {\"id\":\"c-1\",\"choices\":[{\"ind".to_string(),
            ],
            "small-values" => {
                // Not streamed: 8 MiB of small JSON values.
                let zeros = "0,".repeat(4 * MIB);
                vec![format!("{{\"choices\":[{zeros}0]}}")]
            }
            "huge-event" => {
                let mut pieces = vec![
                    "data: {\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\""
                        .to_string(),
                ];
                pieces.extend(
                    (0..HUGE / MIB)
                        .map(|i| char::from(b'a' + (i % 26) as u8).to_string().repeat(MIB)),
                );
                pieces.push("\"}}]}\n\ndata: [DONE]\n\n".to_string());
                pieces
            }
            other => panic!("no scenario {other}"),
        };
        let bytes = pieces.into_iter().map(String::into_bytes).collect();
        (bytes, scenario == "dropped")
    }

    /// The endless scenario's event, sent until the client hangs up.
    pub fn endless_event() -> Vec<u8> {
        event(r#"{"content":"and on "}"#).into_bytes()
    }

    pub async fn start() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp));
            }
        });
        addr
    }

    async fn serve(mut tcp: TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_string())
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if tcp.read_exact(&mut body).await.is_err() {
            return;
        }
        let scenario = header("x-scenario").unwrap_or_default();
        let kind = if scenario == "small-values" {
            "application/json"
        } else {
            "text/event-stream"
        };
        let start = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        if tcp.write_all(start.as_bytes()).await.is_err() {
            return;
        }
        let chunk = |piece: &[u8]| {
            let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
            c.extend_from_slice(piece);
            c.extend_from_slice(b"\r\n");
            c
        };
        if scenario == "endless" {
            let piece = chunk(&endless_event().repeat(64));
            while tcp.write_all(&piece).await.is_ok() {}
            return;
        }
        let (pieces, dropped) = answer(&scenario);
        if dropped {
            // Gone mid-event, without the body's last chunk: the pieces
            // and the end in one write, so they reach the proxy together.
            let all: Vec<u8> = pieces.iter().flat_map(|p| chunk(p)).collect();
            let _ = tcp.write_all(&all).await;
            return;
        }
        for piece in pieces {
            if tcp.write_all(&chunk(&piece)).await.is_err() {
                return;
            }
        }
        let _ = tcp.write_all(b"0\r\n\r\n").await;
        let _ = tcp.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_model_provider_cannot_take_the_sidecar_down() {
    use hostile_provider::{answer, endless_event, MIB};
    use support::{metric, proxy_span, traceparent};

    let provider = hostile_provider::start().await;
    let upstream = format!("http://{provider}/v1");
    // The default --llm-record-max (4 MiB).
    let (mut server, _tmp) =
        Server::start(&["--llm-proxy", "127.0.0.1:0", "--llm-upstream", &upstream]);
    let proxy = format!("http://{}/v1/chat/completions", server.llm_proxy.unwrap());
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let chat = |scenario: &str, trace: u8| {
        client
            .post(&proxy)
            .header("x-scenario", scenario)
            .header("traceparent", traceparent(trace))
            .header("content-type", "application/json")
            .body(r#"{"model":"m-1","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
    };
    let health = || async {
        let got = client.get(server.url("/health")).send().await.unwrap();
        got.status().as_u16()
    };

    // Each answer reaches the client as the provider sent it: the same
    // bytes, counted and summed as they stream, so 100 MB is never held.
    let scenarios = [
        ("huge-index", 1),
        ("huge-event", 2),
        ("no-done", 3),
        ("small-values", 4),
        ("dropped", 5),
    ];
    for (scenario, trace) in scenarios {
        let (pieces, dropped) = answer(scenario);
        let want_len: usize = pieces.iter().map(Vec::len).sum();
        let mut want = crc32fast::Hasher::new();
        pieces.iter().for_each(|p| want.update(p));
        drop(pieces);
        let mut got = chat(scenario, trace).send().await.unwrap();
        assert_eq!(got.status(), 200, "{scenario}");
        let (mut len, mut sum, mut broke) = (0, crc32fast::Hasher::new(), false);
        loop {
            match got.chunk().await {
                Ok(Some(piece)) => {
                    len += piece.len();
                    sum.update(&piece);
                }
                Ok(None) => break,
                Err(_) => {
                    broke = true;
                    break;
                }
            }
        }
        assert_eq!(
            (len, sum.finalize()),
            (want_len, want.finalize()),
            "{scenario}: the bytes"
        );
        assert_eq!(
            broke, dropped,
            "{scenario}: the answer breaks off only when the provider's did"
        );
        assert_eq!(health().await, 200, "{scenario}: /health");
        eprintln!("{scenario}: peak {} MiB", server.peak_rss_kib() / 1024);
    }

    // A stream that never ends: the client hangs up after 64 MiB.
    let mut endless = chat("endless", 6).send().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 64 * MIB {
        let piece = endless.chunk().await.unwrap().expect("the stream goes on");
        seen.extend_from_slice(&piece);
    }
    let event = endless_event();
    assert!(
        seen.chunks(event.len())
            .all(|e| e.len() < event.len() || e == event),
        "events, as sent"
    );
    drop(seen);
    drop(endless);
    assert_eq!(health().await, 200, "endless: /health");

    // The calls are recorded, marked where their answer could not be read.
    let traces = server.traces_dir();
    let span = proxy_span(&traces, 1);
    let why = span["attributes"]["oclagl.llm_proxy.unreadable"]
        .as_str()
        .unwrap();
    assert!(
        why.contains("tool call index 8888888888881 is past 1024"),
        "{why}"
    );
    assert_eq!(span["attributes"]["gen_ai.prompt.0.content"], "hi");
    let span = proxy_span(&traces, 2);
    assert_eq!(span["attributes"]["oclagl.llm_proxy.truncated"], true);
    let span = proxy_span(&traces, 4);
    let why = span["attributes"]["oclagl.llm_proxy.unreadable"]
        .as_str()
        .unwrap();
    assert!(why.contains("JSON values, more than the"), "{why}");
    let span = proxy_span(&traces, 5);
    assert_eq!(span["attributes"]["error.type"], "upstream_broke_off");
    let span = proxy_span(&traces, 6);
    assert_eq!(span["attributes"]["error.type"], "cancelled");
    assert_eq!(span["attributes"]["oclagl.llm_proxy.truncated"], true);
    let page = client.get(server.url("/metrics")).send().await.unwrap();
    let page = page.text().await.unwrap();
    let unrecorded = metric(&page, "oclagl_llm_proxy_unrecorded_calls_total");
    assert!(unrecorded >= Some(3.0), "{unrecorded:?}");
    // Every call made a span (six so far), conversation or not.
    let recorded = metric(&page, "oclagl_llm_proxy_recorded_calls_total");
    assert_eq!(recorded, Some(6.0), "{page}");

    // The next call is recorded normally.
    let normal = chat("normal", 7)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(normal.contains("[DONE]"));
    let span = proxy_span(&traces, 7);
    assert_eq!(span["attributes"]["gen_ai.completion.0.content"], "Hello");
    assert!(span["attributes"]
        .get("oclagl.llm_proxy.unreadable")
        .is_none());

    // Memory stayed bounded through 100 MB events, 8 MiB of small values,
    // a 1e13 index and a stream without end.
    server.assert_alive();
    let peak = server.peak_rss_kib() / 1024;
    eprintln!("peak RSS of the sidecar: {peak} MiB");
    assert!(
        peak < RSS_BOUND_MIB,
        "peak RSS {peak} MiB, over {RSS_BOUND_MIB} MiB"
    );
}

/// What the sidecar may take at its peak through the hostile provider's
/// answers, with the default 4 MiB recording cap.
const RSS_BOUND_MIB: u64 = 160;
