//! OTLP/gRPC receiver: `TraceService/Export` stored; the metrics and logs
//! services are accepted and counted so that a client exporting every signal
//! sees no errors.

use std::sync::atomic::Ordering;
use std::sync::Arc;

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
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Ingest, IngestError, RETRY_AFTER};

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

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        let mut admission = self.0.admission();
        self.0
            .reserve(&mut admission, request.encoded_len())
            .await
            .map_err(status)?;
        let accepted = self.0.export(request, None).await.map_err(status)?;
        Ok(Response::new(accepted.into_response()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        _request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0
            .counters
            .metrics_requests
            .fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        _request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.0
            .counters
            .logs_requests
            .fetch_add(1, Ordering::Relaxed);
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
    tonic::service::Routes::new(configure!(TraceServiceServer))
        .add_service(configure!(MetricsServiceServer))
        .add_service(configure!(LogsServiceServer))
}
