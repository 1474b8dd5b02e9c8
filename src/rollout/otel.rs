//! The OpenTelemetry SDK pipeline that carries rollouts out of the process.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set, spans go
//! there over `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf` by default, the
//! spec's default; `grpc`; `http/json`) with `OTEL_EXPORTER_OTLP_HEADERS`.
//! Without one, the sidecar's receiver and store run in this process, so a
//! single command still leaves `traces/`; the SDK then hands its batches to
//! the store directly ([`InProcess`]), with no OTLP round trip.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
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
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::ingest::Ingest;
use crate::serve::{serve, ServeArgs, ServeError};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "unsupported OTEL_EXPORTER_OTLP_PROTOCOL {0:?} (use grpc, http/protobuf or http/json)"
    )]
    Protocol(String),
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
    #[error("cannot start the in-process sidecar: {0}")]
    Sidecar(#[from] ServeError),
}

/// Where rollouts are stored when no OTLP endpoint is configured (the
/// in-process sidecar); flattened into the commands that emit rollouts.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalStore {
    /// Store used in-process when no OTLP endpoint is configured.
    #[arg(long, env = "OCLAGL_DATA_DIR", default_value = "./oclagl-data")]
    pub data_dir: PathBuf,
    /// Trace files folder (also what `collect --resume` reads).
    #[arg(long, env = "OCLAGL_TRACES_DIR", default_value = "./traces")]
    pub traces_dir: PathBuf,
}

/// The sidecar's receiver and store run in this process, on an ephemeral
/// loopback port, over a [`LocalStore`].
pub struct LocalSidecar {
    /// Its OTLP/HTTP address.
    pub http: SocketAddr,
    /// Its intake, for spans made in this process.
    pub ingest: Arc<Ingest>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl LocalSidecar {
    /// Starts it; fails (with [`crate::store::StoreError::Locked`]) when
    /// another process holds the store.
    pub async fn start(local: &LocalStore) -> Result<LocalSidecar, ServeError> {
        let args = ServeArgs {
            grpc_addr: "127.0.0.1:0".parse().expect("literal address"),
            http_addr: "127.0.0.1:0".parse().expect("literal address"),
            data_dir: local.data_dir.clone(),
            traces_dir: local.traces_dir.clone(),
            // Rollouts end for good when the gateway answers, so files can
            // be written soon, while the command mostly waits on the
            // gateway, instead of all at exit.
            quiet: Duration::from_millis(100),
            ..ServeArgs::default()
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            args,
            async move {
                let _ = stop_rx.await;
            },
            move |bound| {
                let _ = ready_tx.send(bound);
            },
        ));
        match ready_rx.await {
            Ok(bound) => Ok(LocalSidecar {
                http: bound.http,
                ingest: bound.ingest,
                stop,
                task,
            }),
            Err(_) => Err(match task.await {
                Ok(Err(e)) => e,
                _ => ServeError::Server("the in-process sidecar stopped".into()),
            }),
        }
    }

    /// Stops it after it has stored what it received and written every
    /// pending trace file.
    pub async fn stop(self) -> Result<(), ServeError> {
        let LocalSidecar {
            stop, task, ingest, ..
        } = self;
        // The store closes once every intake handle is gone.
        drop(ingest);
        let _ = stop.send(());
        match task.await {
            Ok(result) => result,
            Err(e) => Err(ServeError::Server(e.to_string())),
        }
    }
}

/// The SDK provider, and the in-process sidecar when there is one.
pub struct Telemetry {
    provider: SdkTracerProvider,
    sidecar: Option<LocalSidecar>,
    /// The in-process exports not yet known to be stored.
    in_flight: Option<InFlight>,
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
    /// Starts the pipeline (and the in-process sidecar if needed).
    pub async fn start(local: &LocalStore) -> Result<Telemetry, TelemetryError> {
        let configured = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let (processor, sidecar, in_flight, destination) = match configured {
            Some(endpoint) => {
                let protocol = protocol()?;
                let builder = opentelemetry_otlp::SpanExporter::builder();
                let exporter = match protocol {
                    Protocol::Grpc => builder.with_tonic().with_protocol(protocol).build(),
                    _ => builder.with_http().with_protocol(protocol).build(),
                }
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
                (batch(exporter), None, None, endpoint)
            }
            None => {
                let sidecar = LocalSidecar::start(local).await?;
                let in_flight = InFlight::default();
                let exporter = InProcess {
                    ingest: Mutex::new(Some(sidecar.ingest.clone())),
                    resource: ResourceAttributesWithSchema::default(),
                    runtime: tokio::runtime::Handle::current(),
                    in_flight: in_flight.clone(),
                };
                (
                    batch(exporter),
                    Some(sidecar),
                    Some(in_flight),
                    format!(
                        "{} (in-process store {})",
                        local.traces_dir.display(),
                        local.data_dir.display()
                    ),
                )
            }
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
            sidecar,
            in_flight,
            destination,
        })
    }

    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("oclagl")
    }

    /// Flushes every span (stored, with the in-process sidecar), then stops
    /// the in-process sidecar (which writes every pending trace file).
    /// Returns the first error met.
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
        if let Some(in_flight) = self.in_flight {
            if let Err(e) = in_flight.wait_all().await {
                result = result.and(Err(TelemetryError::Exporter(format!("storing spans: {e}"))));
            }
        }
        if let Some(sidecar) = self.sidecar {
            if let Err(e) = sidecar.stop().await {
                result = result.and(Err(e.into()));
            }
        }
        result
    }
}

/// The SDK's batching, with defaults for rollouts; the standard
/// `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY` and
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` override them.
fn batch<E: SpanExporter + 'static>(exporter: E) -> BatchSpanProcessor {
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
    BatchSpanProcessor::builder(exporter)
        .with_batch_config(config.build())
        .build()
}

/// Hands the SDK's batches to the in-process sidecar's intake: validated and
/// stored exactly as an OTLP export would be, without encoding, a socket and
/// an HTTP server in between. The SDK exports one batch at a time; here a
/// batch's store sync overlaps the next batches (up to [`IN_FLIGHT`]), so
/// batches that leave together, as all do at exit, share one sync.
struct InProcess {
    /// Let go at shutdown, so that the store can close.
    ingest: Mutex<Option<Arc<Ingest>>>,
    resource: ResourceAttributesWithSchema,
    /// The SDK calls `export` from its own thread: exports run here.
    runtime: tokio::runtime::Handle,
    in_flight: InFlight,
}

/// Batches handed to the store at once, at most: a bound on the memory
/// of spans not yet stored.
const IN_FLIGHT: usize = 8;

/// In-process exports under way, oldest first, and the first that failed.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<Exports>>);

#[derive(Default)]
struct Exports {
    running: VecDeque<JoinHandle<OTelSdkResult>>,
    failed: Option<String>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Exports> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an export; first waits for the oldest ones while [`IN_FLIGHT`]
    /// run, or while the oldest has ended. Returns the failure of one that
    /// it waited for (the SDK logs it; [`Self::wait_all`] reports it too).
    async fn push(&self, export: JoinHandle<OTelSdkResult>) -> OTelSdkResult {
        let mut result = Ok(());
        loop {
            let oldest = {
                let mut exports = self.lock();
                let full = exports.running.len() >= IN_FLIGHT;
                if !full && !exports.running.front().is_some_and(|h| h.is_finished()) {
                    exports.running.push_back(export);
                    return result;
                }
                exports.running.pop_front()
            };
            if let Some(oldest) = oldest {
                result = result.and(self.ended(oldest.await));
            }
        }
    }

    /// Waits for every export; the first failure of all, if any.
    async fn wait_all(&self) -> OTelSdkResult {
        loop {
            let oldest = self.lock().running.pop_front();
            let Some(oldest) = oldest else {
                break;
            };
            let _ = self.ended(oldest.await);
        }
        match self.lock().failed.take() {
            Some(e) => Err(OTelSdkError::InternalFailure(e)),
            None => Ok(()),
        }
    }

    fn ended(&self, joined: Result<OTelSdkResult, tokio::task::JoinError>) -> OTelSdkResult {
        let result = joined.unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())));
        if let Err(e) = &result {
            self.lock().failed.get_or_insert_with(|| e.to_string());
        }
        result
    }
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
        let export = self.runtime.spawn(async move {
            let accepted = ingest
                .export(request, None)
                .await
                .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
            if accepted.rejected_spans > 0 {
                return Err(OTelSdkError::InternalFailure(accepted.error_message));
            }
            Ok(())
        });
        self.in_flight.push(export).await
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

    /// An export that ends when `gate` opens.
    fn export(fails: bool, gate: &tokio::sync::watch::Sender<bool>) -> JoinHandle<OTelSdkResult> {
        let mut gate = gate.subscribe();
        tokio::spawn(async move {
            let _ = gate.wait_for(|open| *open).await;
            match fails {
                true => Err(OTelSdkError::InternalFailure("disk full".into())),
                false => Ok(()),
            }
        })
    }

    #[tokio::test]
    async fn exports_overlap_up_to_the_bound_and_a_failure_is_reported_at_the_end() {
        let in_flight = InFlight::default();
        let (closed, open) = (
            tokio::sync::watch::channel(false).0,
            tokio::sync::watch::channel(true).0,
        );
        // Exports that cannot end yet pile up to the bound without waiting...
        for _ in 0..IN_FLIGHT {
            let push = in_flight.push(export(false, &closed));
            let pushed = tokio::time::timeout(Duration::from_secs(10), push).await;
            assert!(pushed.expect("no wait below the bound").is_ok());
        }
        assert_eq!(in_flight.lock().running.len(), IN_FLIGHT);
        // ...one more waits for the oldest (and takes every ended one).
        let push = in_flight.push(export(true, &open));
        tokio::pin!(push);
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut push)
            .await
            .is_err());
        closed.send_replace(true);
        assert!(push.await.is_ok());
        assert_eq!(in_flight.lock().running.len(), 1);
        // The next export hears of the failure (the SDK logs it)...
        tokio::task::yield_now().await;
        while !in_flight.lock().running[0].is_finished() {
            tokio::task::yield_now().await;
        }
        assert!(in_flight.push(export(false, &open)).await.is_err());
        // ...and the end reports it again, for the command's exit code.
        let failure = in_flight.wait_all().await.expect_err("the failed export");
        assert!(failure.to_string().contains("disk full"), "{failure}");
        assert!(in_flight.lock().running.is_empty());
        assert!(in_flight.wait_all().await.is_ok(), "reported once");
    }
}
