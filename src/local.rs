//! The sidecar in this process: what the commands that record rollouts or
//! rewards (`collect`, `run`, `bridge`, `reward`) run over their local store
//! when no OTLP endpoint is configured, so a single command still leaves
//! `traces/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::ingest::Ingest;
use crate::rollout::otel::{Local, Sidecar, Telemetry, TelemetryError};
use crate::serve::{running_http, serve, ServeArgs, ServeError};
use crate::store::StoreError;

/// Where rollouts are stored when no OTLP endpoint is configured (the
/// in-process sidecar); flattened into the commands that emit rollouts.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Local store")]
pub struct LocalStore {
    /// Store used in-process when no OTLP endpoint is configured
    /// (OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://127.0.0.1:4318); when an
    /// `oclagl serve` holds it, rollouts go to that sidecar instead.
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
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl LocalSidecar {
    /// Starts it; fails (with [`crate::store::StoreError::Locked`]) when
    /// another process holds the store.
    pub async fn start(local: &LocalStore) -> Result<LocalSidecar, ServeError> {
        let mut args = ServeArgs::default();
        args.listen.grpc_addr = "127.0.0.1:0".parse().expect("literal address");
        args.listen.http_addr = "127.0.0.1:0".parse().expect("literal address");
        args.store.data_dir = local.data_dir.clone();
        args.traces.traces_dir = local.traces_dir.clone();
        // Rollouts end for good when the gateway answers, so files can be
        // written soon, while the command mostly waits on the gateway,
        // instead of all at exit.
        args.traces.quiet = Duration::from_millis(100);
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

/// The telemetry of a command that records rollouts: to the OTLP endpoint
/// the environment names, or else to a sidecar it runs in this process over
/// `local` (stopped by [`Telemetry::shutdown`]).
pub async fn telemetry(local: &LocalStore) -> Result<Telemetry, TelemetryError> {
    Telemetry::start(|| async {
        let sidecar = match LocalSidecar::start(local).await {
            Ok(sidecar) => sidecar,
            // `oclagl serve` holds the store: its spans go there.
            Err(ServeError::Store(StoreError::Locked { .. })) => {
                let running = running_sidecar(local)?;
                tracing::info!(endpoint = %running, "sending to the sidecar that holds {}", local.data_dir.display());
                return Ok(Local::Running(running));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Local::InProcess(Sidecar {
            ingest: sidecar.ingest.clone(),
            destination: format!(
                "{} (in-process store {})",
                local.traces_dir.display(),
                local.data_dir.display()
            ),
            stop: Box::pin(async move { Ok(sidecar.stop().await?) }),
        }))
    })
    .await
}

/// Where the sidecar holding `local`'s store takes OTLP/HTTP, as its
/// address file says; an error naming the variables to set when it says
/// nothing (a sidecar of an older version, or a file that cannot be read).
pub fn running_sidecar(local: &LocalStore) -> Result<String, String> {
    running_http(&local.data_dir)
        .map(|addr| format!("http://{addr}"))
        .ok_or_else(|| {
            format!(
                "another process holds the store {} and does not say where it listens: set OTEL_EXPORTER_OTLP_ENDPOINT to its OTLP/HTTP address (http://127.0.0.1:4318 by default), or use another --data-dir",
                local.data_dir.display()
            )
        })
}
