//! Sends an encoded `ExportTraceServiceRequest` to one OTLP destination and
//! sorts the answer the way the OTLP specification does: delivered, worth
//! retrying (with the server's requested delay), or refused for good.

use std::io::Write;
use std::time::Duration;

use bytes::{BufMut, Bytes};
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
                        reason: error_chain(&e),
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
                        reason: format!("not connected: {}", error_chain(&e)),
                    };
                }
                let mut request = tonic::Request::new(body);
                for (k, v) in headers {
                    request.metadata_mut().insert(k.clone(), v.clone());
                }
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
                match grpc.unary(request, path, BytesCodec).await {
                    Ok(resp) => Outcome::Delivered {
                        rejected: rejected_of(&resp.into_inner()),
                    },
                    Err(status) => grpc_outcome(&status),
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn gzip_bytes(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(body)?;
    z.finish()
}

/// OTLP/HTTP: 2xx delivered; 429, 502, 503, 504 retryable (honouring
/// `Retry-After` in seconds); everything else refused.
async fn http_outcome(resp: reqwest::Response) -> Outcome {
    let status = resp.status();
    let after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.bytes().await.unwrap_or_default();
    if status.is_success() {
        let rejected =
            ExportTraceServiceResponse::decode(body.as_ref()).map_or(0, |r| rejected_of(&r));
        return Outcome::Delivered { rejected };
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    let reason = format!("HTTP {status}: {}", text.trim());
    match status.as_u16() {
        429 | 502 | 503 | 504 => Outcome::Retry { after, reason },
        _ => Outcome::Refused { reason },
    }
}

/// OTLP/gRPC: the retryable codes of the specification; `RESOURCE_EXHAUSTED`
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
