//! The OpenTelemetry SDK pipeline that carries rollouts out of the process.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) set, spans go
//! there over `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf` by default, the
//! spec's default; `grpc`; `http/json`) with `OTEL_EXPORTER_OTLP_HEADERS`.
//! Without one, the sidecar's receiver and store run in this process on an
//! ephemeral loopback port, so a single command still leaves `traces/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tokio::sync::oneshot;

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
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
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
        let _ = self.stop.send(());
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ServeError::Server(e.to_string())),
        }
    }
}

/// The SDK provider, and the in-process sidecar when there is one.
pub struct Telemetry {
    provider: SdkTracerProvider,
    sidecar: Option<LocalSidecar>,
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
        let (exporter, sidecar, destination) = match configured {
            Some(endpoint) => {
                let protocol = protocol()?;
                let builder = opentelemetry_otlp::SpanExporter::builder();
                let exporter = match protocol {
                    Protocol::Grpc => builder.with_tonic().with_protocol(protocol).build(),
                    _ => builder.with_http().with_protocol(protocol).build(),
                }
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
                (exporter, None, endpoint)
            }
            None => {
                let sidecar = LocalSidecar::start(local).await?;
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(format!("http://{}/v1/traces", sidecar.http))
                    .build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
                (
                    exporter,
                    Some(sidecar),
                    format!(
                        "{} (in-process store {})",
                        local.traces_dir.display(),
                        local.data_dir.display()
                    ),
                )
            }
        };
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(65_536)
                    .with_max_export_batch_size(512)
                    .with_scheduled_delay(Duration::from_millis(100))
                    .build(),
            )
            .build();
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
            destination,
        })
    }

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
        if let Some(sidecar) = self.sidecar {
            if let Err(e) = sidecar.stop().await {
                result = result.and(Err(e.into()));
            }
        }
        result
    }
}
