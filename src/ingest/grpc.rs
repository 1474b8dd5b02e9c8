//! OTLP/gRPC receiver: `TraceService/Export` stored; the metrics and logs
//! services are accepted and counted so that a client exporting every signal
//! sees no errors.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::{BufferSettings, Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::codegen::{http, BoxFuture};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};

use super::{Ingest, IngestError, RETRY_AFTER};

/// The OTLP/gRPC trace service, over the shared intake.
#[derive(Clone)]
pub struct Grpc(pub Arc<Ingest>);

fn status(err: IngestError) -> Status {
    let message = err.to_string();
    match err {
        IngestError::Busy => Status::with_error_details(
            Code::ResourceExhausted,
            message,
            ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
        ),
        IngestError::Unavailable(_) => Status::with_error_details(
            Code::Unavailable,
            message,
            ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
        ),
        IngestError::TooLarge { .. } => Status::resource_exhausted(message),
        _ => Status::invalid_argument(message),
    }
}

/// `TraceService/Export`, served by hand rather than by the generated
/// server so that the handler gets the request's bytes: they are validated
/// by decoding, then stored as received (no re-encoding), as on HTTP.
#[derive(Clone)]
pub struct RawTraceService(Arc<Ingest>);

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl NamedService for RawTraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// Decodes a gRPC message into its raw bytes; encodes responses with prost.
struct RawCodec;

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct Export(Arc<Ingest>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<ExportTraceServiceResponse>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            let raw = request.into_inner();
            let mut admission = ingest.admission();
            ingest
                .reserve(&mut admission, raw.len())
                .await
                .map_err(status)?;
            let decoded = ExportTraceServiceRequest::decode(raw.clone())
                .map_err(|e| status(IngestError::Decode(format!("protobuf: {e}"))))?;
            let accepted = ingest.export(decoded, Some(raw)).await.map_err(status)?;
            Ok(Response::new(accepted.into_response()))
        })
    }
}

impl<B> tower_service::Service<http::Request<B>> for RawTraceService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let ingest = self.0.clone();
        Box::pin(async move {
            let limit = ingest.limits.max_body;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit);
            Ok(grpc.unary(Export(ingest), req).await)
        })
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        _request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.counters.metrics_requests.inc();
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        _request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.0.counters.logs_requests.inc();
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// The three OTLP services, with compression and the body limit applied.
pub fn routes(ingest: Arc<Ingest>) -> tonic::service::Routes {
    let limit = ingest.limits.max_body;
    let svc = Grpc(ingest);
    macro_rules! configure {
        ($server:ident) => {
            $server::new(svc.clone())
                .max_decoding_message_size(limit)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
        };
    }
    tonic::service::Routes::new(RawTraceService(svc.0.clone()))
        .add_service(configure!(MetricsServiceServer))
        .add_service(configure!(LogsServiceServer))
}
