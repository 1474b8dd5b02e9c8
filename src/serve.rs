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

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agl::index::RecordSummary;
use crate::agl::view::{Rollouts, View, ViewConfig, ViewError};
use crate::args::{parse_duration, parse_size};
use crate::forward::{self, Destination, ForwardError, Forwarder, Protocol};
use crate::gateway::Secret;
use crate::ingest::auth::{self, AuthError, Tls, Tokens};
use crate::ingest::proxy::binding::{self, BindingError, Bindings};
use crate::ingest::proxy::{parse_upstream, LlmProxy, ProxyConfig, Upstream};
use crate::ingest::{self, Counters, Ingest, Limits};
use crate::store::{Pos, Store, StoreError};
use crate::util::fs::write_atomic;

/// The file in the data folder that says where a running sidecar listens
/// (`{"http": "…", "grpc": "…"}`), so commands that find the folder's
/// store locked can send to it instead; removed when the sidecar stops.
pub const ADDRESS_FILE: &str = "listening.json";

/// Where the sidecar holding `data_dir` takes OTLP/HTTP, as its address
/// file says: an unspecified address (`0.0.0.0`) is reached on loopback.
pub fn running_http(data_dir: &std::path::Path) -> Option<SocketAddr> {
    let text = std::fs::read(data_dir.join(ADDRESS_FILE)).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let mut addr: SocketAddr = value["http"].as_str()?.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Some(addr)
}

/// Options of `oclagl serve`, in the sections of its `--help`; every flag
/// can also be set from the environment.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct ServeArgs {
    /// Where the OTLP receivers listen.
    #[command(flatten)]
    pub listen: ListenArgs,
    /// The durable store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The AGL trace files.
    #[command(flatten)]
    pub traces: TraceFileArgs,
    /// How much the receivers take in at once.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// The LLM proxy.
    #[command(flatten)]
    pub proxy: LlmProxyArgs,
    /// Other receivers that get every stored span.
    #[command(flatten)]
    pub forwarding: ForwardArgs,
    /// Who may send, and over what.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// How often to log a line of what was stored since start (spans,
    /// model calls recorded, trace files written), when anything was;
    /// 0 never.
    #[arg(long, env = "OCLAGL_SUMMARY_EVERY", default_value = "60s", value_parser = parse_duration)]
    pub summary_every: Duration,
}

/// Where `oclagl serve`'s OTLP receivers listen.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Listeners")]
#[non_exhaustive]
pub struct ListenArgs {
    /// OTLP/gRPC listen address.
    #[arg(long, env = "OCLAGL_GRPC_ADDR", default_value = "127.0.0.1:4317")]
    pub grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address (also serves GET /health).
    #[arg(long, env = "OCLAGL_HTTP_ADDR", default_value = "127.0.0.1:4318")]
    pub http_addr: SocketAddr,
}

/// `oclagl serve`'s durable store: where, and how durable.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Store")]
#[non_exhaustive]
pub struct StoreArgs {
    /// Folder of the durable store (write-ahead log and view checkpoint).
    #[arg(long, env = "OCLAGL_DATA_DIR", default_value = "./oclagl-data")]
    pub data_dir: PathBuf,
    /// Size at which the write-ahead log starts a new segment file.
    #[arg(long, env = "OCLAGL_SEGMENT_SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub segment_size: usize,
    /// Make every acknowledged export durable with fdatasync before answering.
    /// `false` still writes the log (a killed process loses nothing) but an OS
    /// crash or power cut may lose the last acknowledged exports.
    #[arg(long, env = "OCLAGL_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
}

/// Where and when `oclagl serve` writes AGL trace files.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Trace files")]
#[non_exhaustive]
pub struct TraceFileArgs {
    /// Folder where AGL trace files (`rollout_<id>_<ts>.json`) are written.
    #[arg(long, env = "OCLAGL_TRACES_DIR", default_value = "./traces")]
    pub traces_dir: PathBuf,
    /// A rollout's trace file is (re)written once no span arrived for this long.
    #[arg(long, env = "OCLAGL_QUIET", default_value = "2s", value_parser = parse_duration)]
    pub quiet: Duration,
    /// On shutdown, how long to keep writing pending trace files; the rest is
    /// rewritten from the store at the next start.
    #[arg(long, env = "OCLAGL_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// How much `oclagl serve`'s receivers take in at once, and how long they
/// wait for it.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits")]
#[non_exhaustive]
pub struct LimitArgs {
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
}

/// `oclagl serve`'s LLM proxy: where it listens, where it forwards, how
/// much it records.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "LLM proxy")]
#[non_exhaustive]
pub struct LlmProxyArgs {
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
    /// How long a model call of a rollout bound to Agent Lightning v1 waits
    /// out AGL's pauses (429 with `X-Agl-Paused: true`, during weight
    /// updates) before the 429 reaches the gateway; 0 never waits.
    #[arg(long, env = "OCLAGL_LLM_AGL_MAX_PAUSE", default_value = "10m", value_parser = parse_duration)]
    pub llm_agl_max_pause: Duration,
}

/// The OTLP receivers and AGL stores `oclagl serve` forwards to.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Forwarding")]
#[non_exhaustive]
pub struct ForwardArgs {
    /// Also send every stored span to this OTLP receiver (repeatable; in the
    /// environment, separate several with spaces): `grpc://host:4317`,
    /// `http://host:4318` or `agl+http://host:4747` (an Agent Lightning
    /// store), with options `;headers=k=v,k2=v2;timeout=10s;compression=gzip;max-backlog=1GiB;name=x`.
    #[arg(long = "forward", env = "OCLAGL_FORWARD", value_delimiter = ' ')]
    pub forward: Vec<Destination>,
}

/// Who may send to `oclagl serve`, and whether over TLS.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Security")]
#[non_exhaustive]
pub struct SecurityArgs {
    /// Require `Authorization: Bearer <token>` (gRPC: the same metadata) on
    /// every receiver and endpoint but /health. Repeatable, or
    /// comma-separated in the environment, so tokens can be rotated.
    #[arg(long = "auth-token", env = "OCLAGL_AUTH_TOKEN", value_delimiter = ',', hide_env_values = true, value_parser = parse_secret)]
    pub auth_token: Vec<Secret>,
    /// Allow listening beyond loopback without --auth-token.
    #[arg(long, env = "OCLAGL_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Serve the receivers over TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "OCLAGL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "OCLAGL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s.trim()))
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

/// Why the sidecar could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The flags contradict each other or are unsafe (listening beyond loopback
    /// without a token…).
    #[error("invalid settings: {0}")]
    Config(String),
    /// The data folder cannot be created.
    #[error("cannot create {path}: {error}")]
    Dir {
        /// The folder.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A listener cannot bind its address.
    #[error("cannot listen on {addr}: {error}; pass another {flag}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The flag that sets it, with its variable.
        flag: &'static str,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The store cannot be opened (locked by another process, unreadable…).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The view cannot start (the traces folder cannot be created…).
    #[error(transparent)]
    View(#[from] ViewError),
    /// A forwarding destination cannot be set up or fed.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// The TLS certificate or key cannot be loaded.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The AGL bindings cannot be read.
    #[error(transparent)]
    Bindings(#[from] BindingError),
    /// A listener or a worker thread failed while running.
    #[error("server error: {0}")]
    Server(String),
}

/// Where a running sidecar listens (the real ports when 0 was asked for).
#[derive(Clone)]
pub struct Bound {
    /// The OTLP/gRPC address.
    pub grpc: SocketAddr,
    /// The OTLP/HTTP address.
    pub http: SocketAddr,
    /// The receivers' shared intake, for spans made in this process.
    pub ingest: Arc<Ingest>,
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
    let tokens = Tokens::new(args.security.auth_token.clone());
    check_settings(&args, &tokens)?;
    let tls = match (&args.security.tls_cert, &args.security.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
        _ => None,
    };
    // Listening first: a port in use leaves no folders behind.
    let listeners = listen(&args).await?;
    std::fs::create_dir_all(&args.store.data_dir).map_err(|source| ServeError::Dir {
        path: args.store.data_dir.display().to_string(),
        error: source,
    })?;
    let wal_dir = args.store.data_dir.join("wal");
    let (written, written_rx) = trace_file_feeds(&args);
    let Opened {
        store,
        store_writer,
        view_thread,
        rollouts,
    } = open_store(&args, &wal_dir, written)?;
    let committed_end = store.committed_end();
    let destinations = Destinations::start_at(&args, written_rx, *committed_end.borrow())?;
    let counters = Arc::new(Counters::default());
    let ingest = Arc::new(Ingest::new(
        store,
        Limits {
            max_body: args.limits.max_body,
            max_inflight: args.limits.max_inflight,
            queue_wait: args.limits.queue_wait,
            body_timeout: args.limits.body_timeout,
        },
        counters.clone(),
    ));
    let bindings = match args.proxy.llm_proxy {
        Some(_) => Some(Arc::new(Bindings::open(&args.store.data_dir)?)),
        None => None,
    };
    let llm_app = match args.proxy.llm_proxy {
        Some(_) => Some(llm_proxy(&args, &ingest, bindings.clone())?),
        None => None,
    };
    let bound = listeners.bound(ingest.clone())?;
    let llm_shown = bound.llm_proxy.map_or("off".to_string(), |a| a.to_string());
    let address =
        serde_json::json!({"http": bound.http.to_string(), "grpc": bound.grpc.to_string()});
    if let Err(e) = write_atomic(
        &args.store.data_dir,
        ADDRESS_FILE,
        address.to_string().as_bytes(),
    ) {
        tracing::warn!(error = %e, "cannot write {ADDRESS_FILE}: other commands will not find this sidecar by its data folder");
    }
    // Ready once other commands can find it.
    tracing::info!(grpc = %bound.grpc, http = %bound.http, llm_proxy = %llm_shown, data = %args.store.data_dir.display(), traces = %args.traces.traces_dir.display(), "oclagl serve ready");
    on_ready(bound);

    let (stop_tx, stop_rx) = watch::channel(false);
    let registry = registry(&counters, &destinations.forwarders, rollouts.clone());
    let forwarding = destinations.spawn(&args, wal_dir, committed_end, &stop_rx);
    if !args.summary_every.is_zero() {
        let (counters, rollouts) = (counters.clone(), rollouts.clone());
        tokio::spawn(log_summaries(
            args.summary_every,
            counters,
            rollouts,
            stop_rx.clone(),
        ));
    }
    let router = ingest::http::router(ingest.clone())
        .merge(ingest::http::reward_router(ingest.clone(), rollouts))
        .merge(binding::router(bindings))
        .merge(
            axum::Router::new()
                .route("/metrics", axum::routing::get(metrics))
                .with_state(Arc::new(registry)),
        )
        .layer(axum::middleware::from_fn_with_state(
            tokens.clone(),
            auth::require_http,
        ));
    let mut servers = vec![
        serve_http(
            listeners.http,
            router,
            tls.as_ref(),
            stopped(stop_rx.clone()),
        )?,
        serve_grpc(
            &args,
            listeners.grpc,
            &ingest,
            tokens,
            tls.as_ref(),
            stop_rx.clone(),
        )?,
    ];
    if let (Some(listener), Some(proxy)) = (listeners.llm_proxy, llm_app) {
        let serving = proxy.serve(listener, stopped(stop_rx.clone()));
        servers.push(tokio::spawn(async move {
            serving.await;
            Ok(())
        }));
    }
    drop(ingest);
    shutdown.await;
    tracing::info!("shutting down: finishing requests, flushing the store and trace files");
    let _ = stop_tx.send(true);
    let finished = finish(servers, forwarding, store_writer, view_thread).await;
    let _ = std::fs::remove_file(args.store.data_dir.join(ADDRESS_FILE));
    finished
}

/// Every `every`, until `stop`: one line of what was stored since start,
/// when something new was.
async fn log_summaries(
    every: Duration,
    counters: Arc<Counters>,
    rollouts: Rollouts,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = (
            counters.accepted_spans.get(),
            counters.recorded_llm_calls.get(),
            rollouts.files_written(),
        );
        if last != Some(now) && now != (0, 0, 0) {
            let (spans, calls, files) = now;
            tracing::info!(
                spans,
                model_calls = calls,
                trace_files = files,
                "since start: {spans} span{} stored, {calls} model call{} recorded, {files} trace file{} written",
                plural(spans),
                plural(calls),
                plural(files)
            );
        }
        last = Some(now);
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The LLM proxy of `--llm-proxy`, recording into `ingest`.
fn llm_proxy(
    args: &ServeArgs,
    ingest: &Arc<Ingest>,
    bindings: Option<Arc<Bindings>>,
) -> Result<LlmProxy, ServeError> {
    let config = ProxyConfig {
        upstreams: args.proxy.llm_upstream.clone(),
        record_max: args.proxy.llm_record_max,
        bindings,
        max_pause: args.proxy.llm_agl_max_pause,
    };
    ingest::proxy::new(ingest.clone(), config).map_err(|e| ServeError::Config(e.to_string()))
}

/// Once told to stop: waits for the servers to finish their requests and
/// the destinations their batch, then for the store's writer to commit
/// what is queued and the view to write every pending trace file.
async fn finish(
    servers: Vec<Serving>,
    forwarding: Vec<tokio::task::JoinHandle<Result<(), ForwardError>>>,
    store_writer: std::thread::JoinHandle<()>,
    view_thread: std::thread::JoinHandle<()>,
) -> Result<(), ServeError> {
    let mut results = Vec::new();
    for server in servers {
        results.push(server.await);
    }
    for f in forwarding {
        match f.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "forwarding stopped with an error"),
            Err(e) => tracing::error!(error = %e, "forwarding task failed"),
        }
    }
    // Every store handle is gone now, so the writer drains and ends, which
    // ends the view after it has written what is pending.
    let joined = tokio::task::spawn_blocking(move || {
        let _ = store_writer.join();
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

type WrittenFeed = tokio::sync::mpsc::UnboundedReceiver<String>;

/// AGL store destinations follow the trace files the view writes: for each
/// one, a channel on which the view names every file it wrote (the senders
/// for the view; per destination, in order, its receiver or `None`).
fn trace_file_feeds(
    args: &ServeArgs,
) -> (
    Vec<tokio::sync::mpsc::UnboundedSender<String>>,
    Vec<Option<WrittenFeed>>,
) {
    let mut senders = Vec::new();
    let receivers = args
        .forwarding
        .forward
        .iter()
        .map(|d| {
            (d.protocol == Protocol::AglStore).then(|| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                senders.push(tx);
                rx
            })
        })
        .collect();
    (senders, receivers)
}

/// The forward destinations and where each one starts.
struct Destinations {
    forwarders: Arc<Vec<Forwarder>>,
    starts: Vec<Pos>,
    written: Vec<Option<WrittenFeed>>,
}

impl Destinations {
    /// Fixes where each destination starts, before anything is accepted:
    /// its saved cursor, or `committed_end` for a new one.
    fn start_at(
        args: &ServeArgs,
        written: Vec<Option<WrittenFeed>>,
        committed_end: Pos,
    ) -> Result<Destinations, ServeError> {
        let forwarders: Arc<Vec<Forwarder>> = Arc::new(
            args.forwarding
                .forward
                .iter()
                .cloned()
                .map(Forwarder::new)
                .collect(),
        );
        let state_dir = forward::state_dir(&args.store.data_dir);
        let starts = forwarders
            .iter()
            .map(|f| match f.dest.protocol {
                // An AGL store follows trace files, not the log.
                Protocol::AglStore => Ok(Pos::default()),
                _ => forward::start_position(&state_dir, &f.dest, committed_end),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Destinations {
            forwarders,
            starts,
            written,
        })
    }

    /// One task per destination, until `stop`.
    fn spawn(
        self,
        args: &ServeArgs,
        wal_dir: PathBuf,
        committed_end: watch::Receiver<Pos>,
        stop: &watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<Result<(), ForwardError>>> {
        let state_dir = forward::state_dir(&args.store.data_dir);
        let tasks = self.starts.into_iter().zip(self.written).enumerate();
        tasks
            .map(|(i, (start, written))| {
                let (all, wal_dir, state_dir) =
                    (self.forwarders.clone(), wal_dir.clone(), state_dir.clone());
                let (end, stop) = (committed_end.clone(), stop.clone());
                let traces_dir = args.traces.traces_dir.clone();
                tokio::spawn(async move {
                    let f = &all[i];
                    match written {
                        Some(written) => {
                            forward::agl::run(f, traces_dir, state_dir, written, stop).await
                        }
                        None => forward::run(f, start, wal_dir, state_dir, end, stop).await,
                    }
                })
            })
            .collect()
    }
}

/// Refuses settings that cannot work, or that would expose the sidecar.
fn check_settings(args: &ServeArgs, tokens: &Tokens) -> Result<(), ServeError> {
    if args.limits.max_inflight < args.limits.max_body {
        return Err(ServeError::Config(format!(
            "--max-inflight ({}) must be at least --max-body ({})",
            args.limits.max_inflight, args.limits.max_body
        )));
    }
    if args.proxy.llm_proxy.is_none() && !args.proxy.llm_upstream.is_empty() {
        return Err(ServeError::Config(
            "--llm-upstream needs --llm-proxy (the address the proxy listens on)".into(),
        ));
    }
    for addr in [args.listen.grpc_addr, args.listen.http_addr] {
        if !addr.ip().is_loopback() && !tokens.required() && !args.security.insecure_no_auth {
            return Err(ServeError::Config(format!(
                "refusing to listen on {addr} without authentication: set --auth-token (OCLAGL_AUTH_TOKEN), or --insecure-no-auth if the network is trusted"
            )));
        }
    }
    // The proxy's `Authorization` belongs to the model provider, so it cannot
    // check a token of ours: beyond loopback anyone could record spans.
    if let Some(addr) = args.proxy.llm_proxy {
        if !addr.ip().is_loopback() && !args.security.insecure_no_auth {
            return Err(ServeError::Config(format!(
                "refusing to run the LLM proxy on {addr}: it cannot authenticate its callers (their Authorization is the provider's key); keep it on loopback beside the gateway, or give --insecure-no-auth if the network is trusted"
            )));
        }
    }
    let mut names = std::collections::HashSet::new();
    for d in &args.forwarding.forward {
        if !names.insert(d.name.as_str()) {
            return Err(ServeError::Config(format!(
                "two --forward destinations are named {:?}; give one a `;name=` option",
                d.name
            )));
        }
    }
    Ok(())
}

/// The store, open, and the view that keeps the trace files in step.
struct Opened {
    store: Store<RecordSummary>,
    /// The store's writer thread: it ends once every store handle is gone.
    store_writer: std::thread::JoinHandle<()>,
    /// The view's thread: it ends after the store's writer.
    view_thread: std::thread::JoinHandle<()>,
    rollouts: Rollouts,
}

/// Opens the store, replaying its log into the view, and starts the view's
/// thread; `written` hears the name of every trace file the view writes.
fn open_store(
    args: &ServeArgs,
    wal_dir: &std::path::Path,
    written: Vec<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<Opened, ServeError> {
    let mut view = View::new(ViewConfig {
        traces_dir: args.traces.traces_dir.clone(),
        data_dir: args.store.data_dir.clone(),
        wal_dir: wal_dir.to_path_buf(),
        quiet: args.traces.quiet,
        written,
        sync: args.store.fsync,
    })?;
    let rollouts = view.rollouts();
    let (committed_tx, committed_rx) = std::sync::mpsc::sync_channel(4096);
    let (store, writer, stats) = Store::open(
        wal_dir,
        args.store.segment_size as u64,
        args.store.fsync,
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
    let shutdown_timeout = args.traces.shutdown_timeout;
    let view_thread = std::thread::Builder::new()
        .name("oclagl-view".into())
        .spawn(move || view.run(committed_rx, shutdown_timeout))
        .map_err(|e| ServeError::Server(e.to_string()))?;
    Ok(Opened {
        store,
        store_writer: writer,
        view_thread,
        rollouts,
    })
}

/// The listeners of a sidecar.
struct Listeners {
    grpc: TcpListener,
    http: TcpListener,
    llm_proxy: Option<TcpListener>,
}

/// Binds every listener.
async fn listen(args: &ServeArgs) -> Result<Listeners, ServeError> {
    let bind = |addr: SocketAddr, flag: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr,
                flag,
                error: source,
            })
    };
    Ok(Listeners {
        grpc: bind(args.listen.grpc_addr, "--grpc-addr (OCLAGL_GRPC_ADDR)").await?,
        http: bind(args.listen.http_addr, "--http-addr (OCLAGL_HTTP_ADDR)").await?,
        llm_proxy: match args.proxy.llm_proxy {
            Some(addr) => Some(bind(addr, "--llm-proxy (OCLAGL_LLM_PROXY)").await?),
            None => None,
        },
    })
}

impl Listeners {
    /// Where they are, with the intake they feed.
    fn bound(&self, ingest: Arc<Ingest>) -> Result<Bound, ServeError> {
        let server = |e: std::io::Error| ServeError::Server(e.to_string());
        Ok(Bound {
            grpc: self.grpc.local_addr().map_err(server)?,
            http: self.http.local_addr().map_err(server)?,
            llm_proxy: self
                .llm_proxy
                .as_ref()
                .map(|l| l.local_addr())
                .transpose()
                .map_err(server)?,
            ingest,
        })
    }
}

/// Resolves once `rx` says stop.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

type Serving = tokio::task::JoinHandle<Result<(), String>>;

/// Serves OTLP/HTTP, `/health`, rewards and `/metrics` until `stop`.
fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<&Tls>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<Serving, ServeError> {
    Ok(match tls {
        Some(tls) => {
            let listener = auth::TlsListener::new(listener, tls)
                .map_err(|e| ServeError::Server(e.to_string()))?;
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
        None => tokio::spawn(async move {
            // Answers are small writes after the request: Nagle would hold
            // them for the client's delayed ACK (~40 ms).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
                .map_err(|e| e.to_string())
        }),
    })
}

/// Serves OTLP/gRPC until `stop` says so.
fn serve_grpc(
    args: &ServeArgs,
    listener: TcpListener,
    ingest: &Arc<Ingest>,
    tokens: Tokens,
    tls: Option<&Tls>,
    stop: watch::Receiver<bool>,
) -> Result<Serving, ServeError> {
    // OTLP exports are often larger than HTTP/2's default 64 KiB window;
    // with it each request would wait a round trip for a window update.
    let mut grpc = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(args.limits.max_body.min(8 << 20) as u32))
        .initial_connection_window_size(Some(16 << 20));
    if let Some(tls) = tls {
        let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
        grpc = grpc
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServeError::Server(format!("gRPC TLS: {e}")))?;
    }
    let grpc = grpc
        .layer(tonic::service::InterceptorLayer::new(
            auth::grpc_interceptor(tokens),
        ))
        .add_routes(ingest::grpc::routes(ingest.clone()))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stopped(stop),
        );
    Ok(tokio::spawn(async move {
        grpc.await.map_err(|e| e.to_string())
    }))
}

/// Every metric of the sidecar, for `/metrics`.
fn registry(counters: &Counters, forwarders: &Arc<Vec<Forwarder>>, rollouts: Rollouts) -> Registry {
    let mut registry = Registry::default();
    counters.register(&mut registry);
    registry.register_collector(Box::new(forward::Metrics(forwarders.clone())));
    registry.register_collector(Box::new(rollouts));
    registry
}

/// `GET /metrics`: the receivers' and every destination's counters and the
/// view's rollouts, in the OpenMetrics text format.
async fn metrics(
    axum::extract::State(registry): axum::extract::State<Arc<Registry>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        let status = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        return (status, format!("cannot encode the metrics: {e}\n")).into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
