//! Sends an encoded `ExportTraceServiceRequest` to one OTLP destination and
//! sorts the answer the way the OTLP specification does: delivered, worth
//! retrying (with the server's requested delay), or refused for good.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use futures_util::FutureExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstDecoder;
use tonic_types::StatusExt;

use super::dest::{Destination, Protocol};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What became of one send.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Stored by the destination; it may report some spans it rejected.
    Delivered {
        /// Spans the destination reported it rejected.
        rejected: u64,
    },
    /// Try again later (after at least `after`, when the server said so).
    Retry {
        /// The server's `Retry-After`, when it gave one.
        after: Option<Duration>,
        /// Why the send failed.
        reason: String,
    },
    /// Refused for good (bad data, unknown path, …): retrying cannot help.
    Refused {
        /// Why the destination refused it.
        reason: String,
    },
}

/// Why a destination's sender could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Its URL, headers or TLS settings are unusable.
    #[error("destination {name}: {reason}")]
    Setup {
        /// The destination.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// A connection to one OTLP destination, over HTTP or gRPC.
pub enum Sender {
    /// OTLP/HTTP.
    Http {
        /// Its HTTP client (and connection pool).
        client: reqwest::Client,
        /// The full traces URL.
        url: String,
        /// Headers sent with every request.
        headers: reqwest::header::HeaderMap,
        /// Compress bodies with gzip.
        gzip: bool,
    },
    /// OTLP/gRPC.
    Grpc {
        /// The connection to the server.
        channel: Channel,
        /// Metadata sent with every call.
        headers: Vec<(
            MetadataKey<tonic::metadata::Ascii>,
            MetadataValue<tonic::metadata::Ascii>,
        )>,
        /// Compress messages with gzip.
        gzip: bool,
    },
}

impl Sender {
    /// Sets up the connection `dest` describes (lazily: nothing is dialled yet).
    pub fn new(dest: &Destination) -> Result<Sender, SendError> {
        let setup = |reason: String| SendError::Setup {
            name: dest.name.clone(),
            reason,
        };
        match dest.protocol {
            Protocol::Grpc => {
                let channel = Endpoint::from_shared(dest.url.clone())
                    .map_err(|e| setup(e.to_string()))?
                    .timeout(dest.timeout)
                    .connect_timeout(dest.timeout)
                    .connect_lazy();
                let mut headers = Vec::new();
                for (k, v) in &dest.headers {
                    let key = MetadataKey::from_bytes(k.as_bytes())
                        .map_err(|_| setup(format!("{k:?} is not a gRPC metadata key")))?;
                    let value = MetadataValue::try_from(v.as_str())
                        .map_err(|_| setup(format!("the value of {k} is not valid metadata")))?;
                    headers.push((key, value));
                }
                Ok(Sender::Grpc {
                    channel,
                    headers,
                    gzip: dest.gzip,
                })
            }
            Protocol::HttpProtobuf | Protocol::AglStore => {
                let (client, headers) = http_client(dest)?;
                let url = match dest.protocol {
                    Protocol::AglStore => format!("{}/v1/traces", dest.url),
                    _ => dest.url.clone(),
                };
                Ok(Sender::Http {
                    client,
                    url,
                    headers,
                    gzip: dest.gzip,
                })
            }
        }
    }

    /// Sends one encoded export.
    pub async fn send(&self, body: Bytes) -> Outcome {
        match self {
            Sender::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let mut req = client
                    .post(url)
                    .headers(headers.clone())
                    .header("content-type", "application/x-protobuf");
                req = if *gzip {
                    match gzip_bytes(&body) {
                        Ok(z) => req.header("content-encoding", "gzip").body(z),
                        Err(e) => {
                            return Outcome::Refused {
                                reason: format!("cannot compress: {e}"),
                            }
                        }
                    }
                } else {
                    req.body(body)
                };
                match req.send().await {
                    Ok(resp) => http_outcome(resp).await,
                    Err(e) => Outcome::Retry {
                        after: None,
                        reason: crate::util::error_chain(&e),
                    },
                }
            }
            Sender::Grpc {
                channel,
                headers,
                gzip,
            } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                if *gzip {
                    grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                grpc = grpc.accept_compressed(tonic::codec::CompressionEncoding::Gzip);
                if let Err(e) = grpc.ready().await {
                    return Outcome::Retry {
                        after: None,
                        reason: format!("not connected: {}", crate::util::error_chain(&e)),
                    };
                }
                let mut request = tonic::Request::new(body);
                for (k, v) in headers {
                    request.metadata_mut().insert(k.clone(), v.clone());
                }
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
                // tonic (0.14) panics reading a `grpc-status-details-bin`
                // that is not base64 (grpc/grpc-rust#2618), which ended the
                // forwarding task. Such an answer says nothing readable, so
                // it is retried like a broken connection.
                match AssertUnwindSafe(grpc.unary(request, path, BytesCodec))
                    .catch_unwind()
                    .await
                {
                    Ok(answer) => grpc_answer(answer.map(tonic::Response::into_inner)),
                    Err(panic) => Outcome::Retry {
                        after: None,
                        reason: format!(
                            "gRPC answer the client cannot read: {}",
                            panic_message(panic.as_ref())
                        ),
                    },
                }
            }
        }
    }
}

/// A reqwest client with the destination's timeout, and its headers (marked
/// sensitive, so they are never printed); shared with the AGL destination.
pub fn http_client(
    dest: &Destination,
) -> Result<(reqwest::Client, reqwest::header::HeaderMap), SendError> {
    let setup = |reason: String| SendError::Setup {
        name: dest.name.clone(),
        reason,
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &dest.headers {
        let key = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| setup(format!("{k:?} is not a header name")))?;
        let mut value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| setup(format!("the value of {k} is not a valid header")))?;
        value.set_sensitive(true);
        headers.insert(key, value);
    }
    let client = reqwest::Client::builder()
        .timeout(dest.timeout)
        .build()
        .map_err(|e| setup(e.to_string()))?;
    Ok((client, headers))
}

fn rejected_of(resp: &ExportTraceServiceResponse) -> u64 {
    resp.partial_success
        .as_ref()
        .map_or(0, |p| p.rejected_spans.max(0) as u64)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

fn gzip_bytes(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(body)?;
    z.finish()
}

async fn http_outcome(resp: reqwest::Response) -> Outcome {
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").cloned();
    let body = resp.bytes().await.unwrap_or_default();
    http_answer(status, retry_after.as_ref(), &body)
}

/// OTLP/HTTP: 2xx delivered (a protobuf partial success in the body counts
/// rejected spans); 429, 502, 503, 504 retryable (honouring `Retry-After` in
/// seconds); everything else refused.
pub fn http_answer(
    status: reqwest::StatusCode,
    retry_after: Option<&reqwest::header::HeaderValue>,
    body: &[u8],
) -> Outcome {
    let after = retry_after
        .and_then(|v| v.to_str().ok())
        .and_then(crate::util::retry_after);
    if status.is_success() {
        let rejected = ExportTraceServiceResponse::decode(body).map_or(0, |r| rejected_of(&r));
        return Outcome::Delivered { rejected };
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    let reason = format!("HTTP {status}: {}", text.trim());
    match status.as_u16() {
        429 | 502 | 503 | 504 => Outcome::Retry { after, reason },
        _ => Outcome::Refused { reason },
    }
}

/// OTLP/gRPC: the answer, or the status tonic read from the trailers.
pub fn grpc_answer(answer: Result<ExportTraceServiceResponse, Status>) -> Outcome {
    match answer {
        Ok(resp) => Outcome::Delivered {
            rejected: rejected_of(&resp),
        },
        Err(status) => grpc_outcome(&status),
    }
}

/// The retryable codes of the specification; `RESOURCE_EXHAUSTED`
/// only when the server sent `RetryInfo` (it can recover). A status the
/// server never sent (tonic makes one, `UNKNOWN` or `INTERNAL`, with the cause
/// as its source, when the connection breaks mid-call because the
/// destination died) is retried like a refused connection: nothing refused
/// the data.
fn grpc_outcome(status: &Status) -> Outcome {
    let after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    if std::error::Error::source(status).is_some() {
        return Outcome::Retry { after, reason };
    }
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Outcome::Retry { after, reason },
        Code::ResourceExhausted if after.is_some() => Outcome::Retry { after, reason },
        _ => Outcome::Refused { reason },
    }
}

/// Sends the stored bytes as they are; decodes the answer with prost.
#[derive(Clone, Copy)]
struct BytesCodec;

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<ExportTraceServiceResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_sort_as_the_spec_says() {
        assert!(matches!(
            grpc_outcome(&Status::unavailable("down")),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(
            grpc_outcome(&Status::invalid_argument("bad")),
            Outcome::Refused { .. }
        ));
        assert!(matches!(
            grpc_outcome(&Status::resource_exhausted("full")),
            Outcome::Refused { .. }
        ));
        let with_retry = Status::with_error_details(
            Code::ResourceExhausted,
            "full",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        assert_eq!(
            grpc_outcome(&with_retry),
            Outcome::Retry {
                after: Some(Duration::from_secs(3)),
                reason: "gRPC ResourceExhausted: full".into()
            }
        );
    }

    /// Found by the `forward_answers` fuzz target: tonic panics reading a
    /// `grpc-status-details-bin` that is not base64, and the panic ended the
    /// destination's forwarding task, so nothing more was forwarded to it
    /// (and nothing said so until shutdown).
    #[tokio::test]
    async fn an_answer_tonic_cannot_read_is_retried() {
        /// Answers every call `UNAVAILABLE` with details that are not base64.
        #[derive(Clone)]
        struct Garbled;

        impl tonic::server::NamedService for Garbled {
            const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
        }

        impl tower_service::Service<tonic::codegen::http::Request<tonic::body::Body>> for Garbled {
            type Response = tonic::codegen::http::Response<tonic::body::Body>;
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

            fn poll_ready(
                &mut self,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(
                &mut self,
                _: tonic::codegen::http::Request<tonic::body::Body>,
            ) -> Self::Future {
                let resp = tonic::codegen::http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "14")
                    .header("grpc-status-details-bin", "not base64!")
                    .body(tonic::body::Body::empty())
                    .expect("a response");
                std::future::ready(Ok(resp))
            }
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::new(Garbled))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let dest: Destination = format!("grpc://{addr}").parse().unwrap();
        let sender = Sender::new(&dest).unwrap();
        for _ in 0..2 {
            let outcome = sender.send(Bytes::new()).await;
            assert!(
                matches!(&outcome, Outcome::Retry { after: None, reason } if reason.contains("base64")),
                "{outcome:?}"
            );
        }
    }

    /// Found by the soak test (benches/soak.rs): a destination killed while
    /// a call was in flight gave "gRPC Unknown: transport error", which was
    /// refused for good, so acknowledged spans never reached it.
    #[test]
    fn a_broken_connection_is_retried_not_refused() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let broken = Status::from_error(Box::new(reset));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(matches!(
            grpc_outcome(&broken),
            Outcome::Retry { after: None, .. }
        ));
        // The same code sent by the server is still its answer.
        assert!(matches!(
            grpc_outcome(&Status::unknown("no")),
            Outcome::Refused { .. }
        ));
    }
}
