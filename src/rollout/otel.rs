//! The OpenTelemetry SDK pipeline that carries rollouts out of the process.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set, spans go
//! there over `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf` by default, the
//! spec's default; `grpc`; `http/json`) with `OTEL_EXPORTER_OTLP_HEADERS`.
//! Without one, the sidecar's receiver and store run in this process (the
//! command starts them and hands them in as a [`Sidecar`]), so a single
//! command still leaves `traces/`; the SDK then hands its batches to the
//! store directly ([`InProcess`]), with no OTLP round trip.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use crate::ingest::Ingest;

/// Why a command's spans could not be recorded or delivered.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` names a protocol the exporter does not speak.
    #[error(
        "unsupported OTEL_EXPORTER_OTLP_PROTOCOL {0:?} (use grpc, http/protobuf or http/json)"
    )]
    Protocol(String),
    /// The OTLP exporter could not be built (a bad endpoint or header).
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
    /// The in-process sidecar could not start (its store is locked, a folder
    /// cannot be created…).
    #[error("cannot start the in-process sidecar: {0}")]
    Sidecar(SidecarError),
    /// Spans were lost at shutdown.
    #[error("{spans} span(s) could not be exported to {destination} and are lost: {error}; {fix}")]
    Undelivered {
        /// How many.
        spans: u64,
        /// Where they were going.
        destination: String,
        /// Why they could not be delivered.
        error: String,
        /// What to do about it, as far as the error tells.
        fix: String,
    },
}

/// What a sidecar run in this process fails with.
pub type SidecarError = Box<dyn std::error::Error + Send + Sync>;

/// Stops a sidecar run in this process.
pub type StopSidecar = Pin<Box<dyn Future<Output = Result<(), SidecarError>> + Send>>;

/// A sidecar running in this process, for when no OTLP endpoint is
/// configured: the SDK hands its batches to `ingest`, and
/// [`Telemetry::shutdown`] awaits `stop` once the last one is in.
pub struct Sidecar {
    /// Its intake, for the spans made in this process.
    pub ingest: Arc<Ingest>,
    /// Stops it after it has stored what it received and written every
    /// pending trace file.
    pub stop: StopSidecar,
    /// Where it keeps the spans, for messages to the user.
    pub destination: String,
}

/// Where a command's spans go when no OTLP endpoint is configured.
pub enum Local {
    /// A sidecar started in this process.
    InProcess(Sidecar),
    /// The sidecar already running over the command's store, at this
    /// OTLP/HTTP base URL.
    Running(String),
}

/// The SDK provider, and the in-process sidecar when there is one.
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// The protocol spans are sent with; `None` to the in-process sidecar.
    protocol: Option<Protocol>,
    stop_sidecar: Option<StopSidecar>,
    undelivered: Arc<Undelivered>,
    /// Where spans are sent, for messages to the user.
    pub destination: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn protocol() -> Result<Protocol, TelemetryError> {
    let value =
        env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match value.as_deref().map(str::trim) {
        None | Some("http/protobuf") => Ok(Protocol::HttpBinary),
        Some("grpc") => Ok(Protocol::Grpc),
        Some("http/json") => Ok(Protocol::HttpJson),
        Some(other) => Err(TelemetryError::Protocol(other.to_string())),
    }
}

impl Telemetry {
    /// Starts the pipeline: to the OTLP endpoint the environment names, or
    /// else to the sidecar that `start_sidecar` starts in this process.
    pub async fn start<F>(start_sidecar: impl FnOnce() -> F) -> Result<Telemetry, TelemetryError>
    where
        F: Future<Output = Result<Local, SidecarError>>,
    {
        let configured = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let undelivered = Arc::new(Undelivered::default());
        let mut sent_with = None;
        let (processor, stop_sidecar, destination) = match configured {
            Some(endpoint) => {
                let protocol = protocol()?;
                sent_with = Some(protocol);
                let builder = opentelemetry_otlp::SpanExporter::builder();
                let exporter = match protocol {
                    Protocol::Grpc => builder.with_tonic().with_protocol(protocol).build(),
                    _ => builder.with_http().with_protocol(protocol).build(),
                }
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
                (batch(exporter, undelivered.clone()), None, endpoint)
            }
            None => match start_sidecar().await.map_err(TelemetryError::Sidecar)? {
                Local::Running(endpoint) => {
                    let protocol = Protocol::HttpBinary;
                    sent_with = Some(protocol);
                    let exporter = opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_protocol(protocol)
                        .with_endpoint(format!("{endpoint}/v1/traces"))
                        .build()
                        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
                    (batch(exporter, undelivered.clone()), None, endpoint)
                }
                Local::InProcess(sidecar) => {
                    let exporter = InProcess {
                        ingest: Mutex::new(Some(sidecar.ingest)),
                        resource: ResourceAttributesWithSchema::default(),
                    };
                    (
                        batch(exporter, undelivered.clone()),
                        Some(sidecar.stop),
                        sidecar.destination,
                    )
                }
            },
        };
        let mut resource = Resource::builder();
        if env("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("oclagl");
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource.build())
            .build();
        Ok(Telemetry {
            provider,
            protocol: sent_with,
            stop_sidecar,
            undelivered,
            destination,
        })
    }

    /// The tracer the command's spans are made with.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("oclagl")
    }

    /// Flushes every span, then stops the in-process sidecar (which writes
    /// every pending trace file). Returns the first error met.
    pub async fn shutdown(self) -> Result<(), TelemetryError> {
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || {
            let flush = provider.force_flush();
            let shut = provider.shutdown();
            flush.and(shut)
        })
        .await;
        let mut result = match flushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TelemetryError::Exporter(format!("flushing spans: {e}"))),
            Err(e) => Err(TelemetryError::Exporter(e.to_string())),
        };
        let losses = std::mem::take(&mut *self.undelivered.lock());
        if losses.spans > 0 {
            let error = losses.first_error.unwrap_or_default();
            result = Err(TelemetryError::Undelivered {
                spans: losses.spans,
                fix: likely_fix(&self.destination, self.protocol),
                destination: self.destination.clone(),
                error,
            });
        }
        if let Some(stop) = self.stop_sidecar {
            if let Err(e) = stop.await {
                result = result.and(Err(TelemetryError::Sidecar(e)));
            }
        }
        result
    }
}

/// What to do about spans `endpoint` did not take: the usual causes are no
/// receiver there, and the port of one OTLP protocol used with the other.
/// Whether anything listens is tried once, now.
fn likely_fix(endpoint: &str, protocol: Option<Protocol>) -> String {
    let Some(protocol) = protocol else {
        return "the rollouts' spans are not stored; see the error above".into();
    };
    let authority = endpoint
        .split("://")
        .last()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    let port = authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok());
    let (grpc, wrong_port, right_port) = match protocol {
        Protocol::Grpc => (true, 4318, 4317),
        _ => (false, 4317, 4318),
    };
    let named = if grpc { "grpc" } else { "http/protobuf" };
    if port == Some(wrong_port) {
        return format!(
            "port {wrong_port} is the other OTLP protocol's while OTEL_EXPORTER_OTLP_PROTOCOL is {named}: use port {right_port}, or change the protocol"
        );
    }
    let listening = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
    match listening {
        Some(false) => format!(
            "nothing listens at {endpoint}: start `oclagl serve` there, or unset OTEL_EXPORTER_OTLP_ENDPOINT to store rollouts in ./oclagl-data"
        ),
        _ => format!(
            "something at {endpoint} did not take OTLP over {named}: `oclagl serve` takes http/protobuf on its HTTP port (4318) and grpc on its gRPC port (4317); set OTEL_EXPORTER_OTLP_PROTOCOL to match"
        ),
    }
}

/// The SDK's batching, with defaults for rollouts; the standard
/// `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY` and
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` override them.
fn batch<E: SpanExporter + 'static>(
    exporter: E,
    undelivered: Arc<Undelivered>,
) -> BatchSpanProcessor {
    // The SDK allocates and touches the whole queue up front (352 bytes a
    // span): 8,192 spans are minutes of rollouts at any real gateway's pace,
    // where 65,536 cost 23 MiB and a measurable share of a short command's
    // CPU.
    let mut config = BatchConfigBuilder::default();
    if env("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        config = config.with_max_queue_size(8_192);
    }
    // A rollout's spans leave within a second of its end (all of them at
    // exit): a longer delay than 100 ms puts several rollouts in one export
    // at a gateway's pace, so the store syncs and the trace files are
    // written once for all of them, and an idle command wakes once a second.
    if env("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        config = config.with_scheduled_delay(Duration::from_secs(1));
    }
    if env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none() {
        config = config.with_max_export_batch_size(64);
    }
    let exporter = Noting {
        inner: exporter,
        undelivered,
    };
    BatchSpanProcessor::builder(exporter)
        .with_batch_config(config.build())
        .build()
}

/// Spans the exporter could not deliver. The SDK drops a batch whose export
/// failed and, built without its internal logs, says nothing: the command
/// reports them when it ends instead of exiting as if all were stored, and a
/// long-running one (`bridge`) warns as they happen.
#[derive(Debug, Default)]
struct Undelivered(Mutex<Losses>);

#[derive(Debug, Default)]
struct Losses {
    spans: u64,
    first_error: Option<String>,
    warned_at: Option<std::time::Instant>,
    since_warning: u64,
}

/// At most one warning about lost spans per this long.
const LOSS_REPORT: Duration = Duration::from_secs(10);

impl Undelivered {
    fn lock(&self) -> std::sync::MutexGuard<'_, Losses> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, spans: u64, error: &dyn std::fmt::Display) {
        let mut losses = self.lock();
        losses.spans += spans;
        losses.first_error.get_or_insert_with(|| error.to_string());
        losses.since_warning += spans;
        if losses
            .warned_at
            .is_none_or(|at| at.elapsed() >= LOSS_REPORT)
        {
            let spans = losses.since_warning;
            tracing::warn!(spans, %error, "spans could not be exported and are lost");
            losses.warned_at = Some(std::time::Instant::now());
            losses.since_warning = 0;
        }
    }
}

/// An exporter that notes in [`Undelivered`] what it could not deliver.
#[derive(Debug)]
struct Noting<E> {
    inner: E,
    undelivered: Arc<Undelivered>,
}

impl<E: SpanExporter> SpanExporter for Noting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.undelivered.note(spans, e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Hands the SDK's batches to the in-process sidecar's intake: validated and
/// stored exactly as an OTLP export would be, without encoding, a socket and
/// an HTTP server in between.
struct InProcess {
    /// Let go at shutdown, so that the store can close.
    ingest: Mutex<Option<Arc<Ingest>>>,
    resource: ResourceAttributesWithSchema,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcess")
    }
}

impl SpanExporter for InProcess {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let ingest = self
            .ingest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(OTelSdkError::AlreadyShutdown)?;
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let accepted = ingest
            .export(request, None)
            .await
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        if accepted.rejected_spans > 0 {
            return Err(OTelSdkError::InternalFailure(accepted.error_message));
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.ingest.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_spans_are_counted_and_warned_about_at_most_once_per_period() {
        let lost = Undelivered::default();
        lost.note(3, &"HTTP 400");
        lost.note(2, &"HTTP 503");
        let losses = lost.lock();
        assert_eq!(losses.spans, 5);
        assert_eq!(losses.first_error.as_deref(), Some("HTTP 400"));
        // The first loss was reported; the second waits for the next period.
        assert!(losses.warned_at.is_some());
        assert_eq!(losses.since_warning, 2);
    }
}
