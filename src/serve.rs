//! `oclagl serve`: the OTLP endpoint, the durable store and the AGL view,
//! wired together.
//!
//! Data flow: receivers (`ingest`) → write-ahead log (`store`, acknowledged
//! after fsync) → rollout index and trace files (`agl::view`). Shutdown runs in
//! the same order: the listeners stop and finish their requests, the store
//! commits what is queued, the view writes every pending trace file.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agl::view::{View, ViewConfig, ViewError};
use crate::args::{parse_duration, parse_size};
use crate::ingest::proxy::{parse_upstream, ProxyConfig, Upstream};
use crate::ingest::{self, Counters, Ingest, Limits};
use crate::store::{Store, StoreError};

/// Options of `oclagl serve`; every flag can also be set from the environment.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct ServeArgs {
    /// OTLP/gRPC listen address.
    #[arg(long, env = "OCLAGL_GRPC_ADDR", default_value = "127.0.0.1:4317")]
    pub grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address (also serves GET /health).
    #[arg(long, env = "OCLAGL_HTTP_ADDR", default_value = "127.0.0.1:4318")]
    pub http_addr: SocketAddr,
    /// Folder of the durable store (write-ahead log and view checkpoint).
    #[arg(long, env = "OCLAGL_DATA_DIR", default_value = "./oclagl-data")]
    pub data_dir: PathBuf,
    /// Folder where AGL trace files (rollout_<id>_<ts>.json) are written.
    #[arg(long, env = "OCLAGL_TRACES_DIR", default_value = "./traces")]
    pub traces_dir: PathBuf,
    /// A rollout's trace file is (re)written once no span arrived for this long.
    #[arg(long, env = "OCLAGL_QUIET", default_value = "2s", value_parser = parse_duration)]
    pub quiet: Duration,
    /// Largest request body, compressed or decompressed.
    #[arg(long, env = "OCLAGL_MAX_BODY", default_value = "16MiB", value_parser = parse_size)]
    pub max_body: usize,
    /// Memory for requests in flight; past it, clients are throttled (429).
    #[arg(long, env = "OCLAGL_MAX_INFLIGHT", default_value = "256MiB", value_parser = parse_size)]
    pub max_inflight: usize,
    /// How long a request may wait for room before it is throttled.
    #[arg(long, env = "OCLAGL_QUEUE_WAIT", default_value = "500ms", value_parser = parse_duration)]
    pub queue_wait: Duration,
    /// How long reading one request body may take (slow clients get 408).
    #[arg(long, env = "OCLAGL_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Size at which the write-ahead log starts a new segment file.
    #[arg(long, env = "OCLAGL_SEGMENT_SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub segment_size: usize,
    /// Make every acknowledged export durable with fdatasync before answering.
    /// `false` still writes the log (a killed process loses nothing) but an OS
    /// crash or power cut may lose the last acknowledged exports.
    #[arg(long, env = "OCLAGL_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// On shutdown, how long to keep writing pending trace files; the rest is
    /// rewritten from the store at the next start.
    #[arg(long, env = "OCLAGL_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Listen address of the LLM proxy (off unless given): an
    /// OpenAI-compatible pass-through that records every model call.
    #[arg(long, env = "OCLAGL_LLM_PROXY")]
    pub llm_proxy: Option<SocketAddr>,
    /// Where the LLM proxy forwards: a base URL (the default upstream), or
    /// `<model-prefix>=<url>` for models whose name starts with the prefix.
    /// Repeatable (comma-separated in the environment).
    #[arg(long, env = "OCLAGL_LLM_UPSTREAM", value_delimiter = ',', value_parser = parse_upstream)]
    pub llm_upstream: Vec<Upstream>,
    /// Bytes of request and response body the LLM proxy records per call;
    /// past it the span keeps the beginning and says it was truncated.
    #[arg(long, env = "OCLAGL_LLM_RECORD_MAX", default_value = "4MiB", value_parser = parse_size)]
    pub llm_record_max: usize,
}

impl Default for ServeArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        Wrapper::parse_from(["oclagl"]).args
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid settings: {0}")]
    Config(String),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("server error: {0}")]
    Server(String),
}

/// Where a running sidecar listens (the real ports when 0 was asked for).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The LLM proxy, when `--llm-proxy` is given.
    pub llm_proxy: Option<SocketAddr>,
}

/// Runs the sidecar until `shutdown` resolves, then drains and returns.
/// `on_ready` is called once both listeners are bound.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    if args.max_inflight < args.max_body {
        return Err(ServeError::Config(format!(
            "--max-inflight ({}) must be at least --max-body ({})",
            args.max_inflight, args.max_body
        )));
    }
    if args.llm_proxy.is_none() && !args.llm_upstream.is_empty() {
        return Err(ServeError::Config(
            "--llm-upstream needs --llm-proxy (the address the proxy listens on)".into(),
        ));
    }
    std::fs::create_dir_all(&args.data_dir).map_err(|source| ServeError::Dir {
        path: args.data_dir.display().to_string(),
        source,
    })?;
    let wal_dir = args.data_dir.join("wal");
    let mut view = View::new(ViewConfig {
        traces_dir: args.traces_dir.clone(),
        data_dir: args.data_dir.clone(),
        wal_dir: wal_dir.clone(),
        quiet: args.quiet,
    })?;
    let (committed_tx, committed_rx) = std::sync::mpsc::sync_channel(4096);
    let (store, writer, stats) = Store::open(
        &wal_dir,
        args.segment_size as u64,
        args.fsync,
        8192,
        |pos, record| view.recover(pos, &record),
        committed_tx,
    )?;
    tracing::info!(
        records = stats.records,
        segments = stats.segments,
        truncated_bytes = stats.truncated_bytes,
        damaged_segments = stats.damaged_segments,
        "store opened"
    );
    if stats.truncated_bytes > 0 {
        tracing::warn!(
            bytes = stats.truncated_bytes,
            "dropped a torn record at the end of the log (it was never acknowledged)"
        );
    }
    let view_thread = std::thread::Builder::new()
        .name("oclagl-view".into())
        .spawn(move || view.run(committed_rx, args.shutdown_timeout))
        .map_err(|e| ServeError::Server(e.to_string()))?;

    let ingest = Arc::new(Ingest::new(
        store,
        Limits {
            max_body: args.max_body,
            max_inflight: args.max_inflight,
            queue_wait: args.queue_wait,
            body_timeout: args.body_timeout,
        },
        Arc::new(Counters::default()),
    ));
    let llm_app = match args.llm_proxy {
        Some(_) => {
            let config = ProxyConfig {
                upstreams: args.llm_upstream.clone(),
                record_max: args.llm_record_max,
            };
            Some(
                ingest::proxy::router(ingest.clone(), config)
                    .map_err(|e| ServeError::Config(e.to_string()))?,
            )
        }
        None => None,
    };
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let grpc_listener = bind(args.grpc_addr).await?;
    let http_listener = bind(args.http_addr).await?;
    let llm_listener = match args.llm_proxy {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let bound = Bound {
        grpc: grpc_listener
            .local_addr()
            .map_err(|e| ServeError::Server(e.to_string()))?,
        http: http_listener
            .local_addr()
            .map_err(|e| ServeError::Server(e.to_string()))?,
        llm_proxy: llm_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()
            .map_err(|e| ServeError::Server(e.to_string()))?,
    };
    let llm_shown = bound.llm_proxy.map_or("off".to_string(), |a| a.to_string());
    tracing::info!(grpc = %bound.grpc, http = %bound.http, llm_proxy = %llm_shown, data = %args.data_dir.display(), traces = %args.traces_dir.display(), "oclagl serve ready");
    on_ready(bound);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http = axum::serve(http_listener, ingest::http::router(ingest.clone()))
        .with_graceful_shutdown(stopped(stop_rx.clone()));
    let grpc = tonic::transport::Server::builder()
        .add_routes(ingest::grpc::routes(ingest.clone()))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc_listener),
            stopped(stop_rx.clone()),
        );
    let llm = match (llm_listener, llm_app) {
        (Some(listener), Some(app)) => {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let serving =
                axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone()));
            Some(tokio::spawn(async move {
                serving.await.map_err(|e| e.to_string())
            }))
        }
        _ => None,
    };
    drop(ingest);
    let http = tokio::spawn(async move { http.await.map_err(|e| e.to_string()) });
    let grpc = tokio::spawn(async move { grpc.await.map_err(|e| e.to_string()) });
    shutdown.await;
    tracing::info!("shutting down: finishing requests, flushing the store and trace files");
    let _ = stop_tx.send(true);
    let mut results = vec![http.await, grpc.await];
    if let Some(llm) = llm {
        results.push(llm.await);
    }
    // Every store handle is gone now, so the writer drains and ends, which
    // ends the view after it has written what is pending.
    let joined = tokio::task::spawn_blocking(move || {
        let _ = writer.join();
        let _ = view_thread.join();
    })
    .await;
    for r in results {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServeError::Server(e)),
            Err(e) => return Err(ServeError::Server(e.to_string())),
        }
    }
    joined.map_err(|e| ServeError::Server(e.to_string()))?;
    tracing::info!("stopped");
    Ok(())
}
