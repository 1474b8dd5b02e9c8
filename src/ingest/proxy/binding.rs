//! Bindings to Agent Lightning v1: the traces whose model calls go to an AGL
//! v1 per-rollout proxy (`…/proxy/rollout/<rid>/attempt/<aid>/mode/<m>/openai/v1`,
//! the `AGL_OPENAI_BASE_URL` AGL's controller hands a harness) instead of the
//! default upstream, with the `AGL_KEY` that proxy wants.
//!
//! A binding is made by `oclagl run` (AGL's harness) before the rollout's
//! first model call, through `PUT /v1/agl/bindings/<trace id>` on the
//! sidecar's HTTP port (behind its `--auth-token`, loopback by default), and
//! dropped by `DELETE` on the same path when the rollout ends. Each change is
//! appended to `agl-bindings.jsonl` in the data folder (owner-only, synced
//! before the answer), so bindings survive a restart; the file is compacted
//! when the sidecar starts. The key is kept there and in memory only: it is
//! never logged, recorded or answered.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::gateway::Secret;
use crate::ingest::http::json_error;

/// The file of the data folder that holds the bindings.
pub const BINDINGS_FILE: &str = "agl-bindings.jsonl";

/// Why the bindings cannot be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// The bindings file cannot be read, written or synced.
    #[error("AGL bindings file {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// Where one rollout's model calls go.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The AGL v1 per-rollout base URL; a call for `/v1/<rest>` goes to
    /// `<base_url>/<rest>`.
    pub base_url: String,
    /// The `AGL_KEY`, sent as `Authorization: Bearer <key>` (none when empty).
    pub key: Secret,
}

/// One line of the bindings file: a binding, or its removal (no `base_url`).
#[derive(Serialize, Deserialize)]
struct Line {
    trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// The live bindings, by trace id, and the file that keeps them.
#[derive(Debug)]
pub struct Bindings {
    path: PathBuf,
    live: RwLock<HashMap<[u8; 16], Arc<Binding>>>,
    file: Mutex<File>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BindingError + '_ {
    move |error| BindingError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Opens (creating) `path` for appending, readable by its owner only.
fn append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Replaces `path` whole with `bytes`: written under a temporary name,
/// owner-only from the start, synced, then renamed over it.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = append(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

impl Bindings {
    /// Reads the bindings kept in `data_dir` (a line that cannot be read is
    /// skipped: a torn last write), writes them back compacted, and keeps
    /// the file open for the next changes.
    pub fn open(data_dir: &Path) -> Result<Bindings, BindingError> {
        let path = data_dir.join(BINDINGS_FILE);
        let mut live = HashMap::new();
        let mut lines = 0;
        match File::open(&path) {
            Ok(f) => {
                for line in std::io::BufReader::new(f).lines() {
                    let line = line.map_err(io(&path))?;
                    lines += 1;
                    let Ok(line) = serde_json::from_str::<Line>(&line) else {
                        continue;
                    };
                    let Some(trace) = parse_trace_id(&line.trace_id) else {
                        continue;
                    };
                    match line.base_url {
                        Some(base_url) => live.insert(
                            trace,
                            Arc::new(Binding {
                                base_url,
                                key: Secret::new(line.key.unwrap_or_default()),
                            }),
                        ),
                        None => live.remove(&trace),
                    };
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        if lines > live.len() {
            let text: String = live.iter().map(|(t, b)| line_of(t, Some(b))).collect();
            replace(&path, text.as_bytes()).map_err(io(&path))?;
        }
        let file = append(&path).map_err(io(&path))?;
        Ok(Bindings {
            path,
            live: RwLock::new(live),
            file: Mutex::new(file),
        })
    }

    /// Where the calls of trace `trace` go, when it is bound.
    pub fn get(&self, trace: &[u8; 16]) -> Option<Arc<Binding>> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        live.get(trace).cloned()
    }

    /// How many traces are bound.
    pub fn len(&self) -> usize {
        self.live.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no trace is bound.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Binds `trace` (replacing an earlier binding), durably.
    pub fn bind(&self, trace: [u8; 16], binding: Binding) -> Result<(), BindingError> {
        self.write(&line_of(&trace, Some(&binding)))?;
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        live.insert(trace, Arc::new(binding));
        Ok(())
    }

    /// Drops the binding of `trace`, durably; false when there was none.
    pub fn unbind(&self, trace: [u8; 16]) -> Result<bool, BindingError> {
        if self.get(&trace).is_none() {
            return Ok(false);
        }
        self.write(&line_of(&trace, None))?;
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        Ok(live.remove(&trace).is_some())
    }

    fn write(&self, line: &str) -> Result<(), BindingError> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(io(&self.path))
    }
}

fn line_of(trace: &[u8; 16], binding: Option<&Binding>) -> String {
    let line = Line {
        trace_id: hex::encode(trace),
        base_url: binding.map(|b| b.base_url.clone()),
        key: binding
            .filter(|b| !b.key.is_empty())
            .map(|b| b.key.expose().to_string()),
    };
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

/// A W3C trace id: 32 hex digits, not all zero.
pub fn parse_trace_id(s: &str) -> Option<[u8; 16]> {
    let mut trace = [0; 16];
    hex::decode_to_slice(s.trim(), &mut trace).ok()?;
    (trace != [0; 16]).then_some(trace)
}

/// Checks an AGL v1 base URL: http(s) with a host, no credentials, query or
/// fragment; given back without a trailing slash.
pub fn parse_base_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| {
        format!("{s:?} is not a URL ({e}): send the AGL_OPENAI_BASE_URL AGL's controller gave")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{url} is not an http(s) URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{} holds credentials: send the key as \"key\" instead",
            url.host_str().unwrap_or_default()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{url} has a query or fragment: a base URL takes neither"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The body of `PUT /v1/agl/bindings/<trace id>`.
#[derive(Deserialize)]
struct BindRequest {
    base_url: String,
    #[serde(default)]
    key: Option<String>,
}

/// `PUT` and `DELETE /v1/agl/bindings/{trace_id}`, over `bindings` (`None`
/// when the sidecar runs no LLM proxy: then every call says so).
pub fn router(bindings: Option<Arc<Bindings>>) -> Router {
    Router::new()
        .route(
            "/v1/agl/bindings/{trace_id}",
            put(bind_trace).delete(unbind_trace),
        )
        .with_state(bindings)
}

type Shared = State<Option<Arc<Bindings>>>;

/// The bindings and the trace of a request, or the answer that says why not.
fn target(
    bindings: Option<Arc<Bindings>>,
    trace: &str,
) -> Result<(Arc<Bindings>, [u8; 16]), (StatusCode, String)> {
    let bindings = bindings.ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            "this sidecar runs no LLM proxy, so nothing can be bound: start oclagl serve with --llm-proxy".into(),
        )
    })?;
    let trace = parse_trace_id(trace).ok_or_else(|| {
        (
            StatusCode::BAD_REQUEST,
            format!("{trace:?} is not a trace id (32 hex digits, not all zero)"),
        )
    })?;
    Ok((bindings, trace))
}

async fn bind_trace(
    State(bindings): Shared,
    UrlPath(trace): UrlPath<String>,
    body: Bytes,
) -> Response {
    let (bindings, trace) = match target(bindings, &trace) {
        Ok(t) => t,
        Err((status, message)) => return json_error(status, message),
    };
    let request: BindRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a binding ({e}): send {{\"base_url\": \"<AGL_OPENAI_BASE_URL>\", \"key\": \"<AGL_KEY>\"}}"),
            )
        }
    };
    let base_url = match parse_base_url(&request.base_url) {
        Ok(u) => u,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let binding = Binding {
        base_url: base_url.clone(),
        key: Secret::new(request.key.unwrap_or_default()),
    };
    let stored = tokio::task::spawn_blocking(move || bindings.bind(trace, binding)).await;
    match stored {
        Ok(Ok(())) => {
            tracing::info!(trace_id = %hex::encode(trace), base_url = %base_url, "bound to AGL");
            Json(serde_json::json!({"trace_id": hex::encode(trace), "base_url": base_url}))
                .into_response()
        }
        Ok(Err(e)) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn unbind_trace(State(bindings): Shared, UrlPath(trace): UrlPath<String>) -> Response {
    let (bindings, trace) = match target(bindings, &trace) {
        Ok(t) => t,
        Err((status, message)) => return json_error(status, message),
    };
    match tokio::task::spawn_blocking(move || bindings.unbind(trace)).await {
        Ok(Ok(was)) => Json(serde_json::json!({"trace_id": hex::encode(trace), "unbound": was}))
            .into_response(),
        Ok(Err(e)) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_survive_a_reopen_and_the_file_is_compacted_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ([1; 16], [2; 16]);
        let bound = |url: &str| Binding {
            base_url: url.into(),
            key: Secret::new("k-1"),
        };
        {
            let bindings = Bindings::open(dir.path()).unwrap();
            bindings.bind(a, bound("http://agl/a")).unwrap();
            bindings.bind(b, bound("http://agl/b")).unwrap();
            assert!(bindings.unbind(b).unwrap());
            assert!(!bindings.unbind(b).unwrap());
        }
        let path = dir.path().join(BINDINGS_FILE);
        // A torn last line is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"trace_id\":\"03")
            .unwrap();
        let bindings = Bindings::open(dir.path()).unwrap();
        let kept = bindings.get(&a).unwrap();
        assert_eq!(
            (kept.base_url.as_str(), kept.key.expose()),
            ("http://agl/a", "k-1")
        );
        assert!(bindings.get(&b).is_none());
        assert_eq!(bindings.len(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn base_urls_and_trace_ids_are_checked() {
        let url = "http://127.0.0.1:8080/proxy/rollout/r/attempt/0/mode/train/openai/v1/";
        assert_eq!(parse_base_url(url).unwrap(), url.trim_end_matches('/'));
        for bad in [
            "",
            "ftp://x/v1",
            "http://u:p@x/v1",
            "http://x/v1?k=1",
            "not a url",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_trace_id(&"ab".repeat(16)), Some([0xab; 16]));
        for bad in ["0".repeat(32), "ab".repeat(15), "zz".repeat(16)] {
            assert_eq!(parse_trace_id(&bad), None, "{bad}");
        }
    }
}
