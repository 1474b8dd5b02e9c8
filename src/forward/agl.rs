//! An Agent Lightning store (`agl store`) as a destination.
//!
//! AGL's store takes spans only for rollouts it created itself, under ids it
//! assigns. So this destination works per rollout, from the AGL view's trace
//! files rather than from raw exports: for each rollout file the view writes
//! (and, at start, for every file in the traces folder) it
//!
//! 1. registers the rollout once (`POST /v1/agl/rollouts`, the task input as
//!    input, oclagl's id in the metadata) and keeps the mapping between
//!    oclagl's ids and AGL's in `<data>/forward/<name>.agl.jsonl`, synced
//!    before any span is sent under the new ids;
//! 2. posts each span it has not sent yet (`POST /v1/agl/spans`) with AGL's
//!    rollout and attempt ids, oclagl's kept as `oclagl.rollout_id` and
//!    `oclagl.attempt_id` attributes;
//! 3. sets the rollout's status (and its attempt's) when it changes.
//!
//! A trace-derived rollout (spans that name no rollout) may later be claimed
//! by a named one, which folds it in. Its file is sent only once it has been
//! left alone for `hold` (option `hold=`, default 60s); if it was sent and is
//! claimed afterwards, its AGL rollout is marked `cancelled` (metadata
//! `oclagl.merged_into`) and its spans go on under the claiming rollout.
//!
//! Delivery is exactly once per span id and rollout unless oclagl dies
//! between a post and the sync of the mapping file; then that span is posted
//! again (at least once).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};

use super::{backoff, ForwardError, Forwarder};
use crate::agl::trace_file::parse_file_name;

/// How often held and failed files are looked at again.
const TICK: Duration = Duration::from_millis(250);

/// What is known about one oclagl rollout at the AGL store.
#[derive(Debug, Default)]
struct Mapped {
    agl_rollout: String,
    agl_attempt: String,
    sent: HashSet<String>,
    status: Option<String>,
}

/// The durable mapping: an append-only JSON-lines log, replayed at start.
struct Mapping {
    path: PathBuf,
    file: File,
    rollouts: HashMap<String, Mapped>,
}

impl Mapping {
    fn open(dir: &Path, name: &str) -> io::Result<Mapping> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.agl.jsonl"));
        let mut rollouts: HashMap<String, Mapped> = HashMap::new();
        if let Ok(f) = File::open(&path) {
            for line in io::BufReader::new(f).lines() {
                let line = line?;
                // A torn last line (a crash mid-append) was never relied on.
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let Some(id) = v["rollout"].as_str() else {
                    continue;
                };
                let m = rollouts.entry(id.to_string()).or_default();
                if let (Some(r), Some(a)) = (v["agl_rollout"].as_str(), v["agl_attempt"].as_str()) {
                    m.agl_rollout = r.to_string();
                    m.agl_attempt = a.to_string();
                }
                for s in v["sent"].as_array().into_iter().flatten() {
                    if let Some(s) = s.as_str() {
                        m.sent.insert(s.to_string());
                    }
                }
                if let Some(s) = v["status"].as_str() {
                    m.status = Some(s.to_string());
                }
            }
        }
        rollouts.retain(|_, m| !m.agl_rollout.is_empty());
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Mapping {
            path,
            file,
            rollouts,
        })
    }

    fn append(&mut self, entry: Value) -> io::Result<()> {
        let mut line = entry.to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()
    }
}

/// Why a rollout file could not be brought up to date.
#[derive(Debug)]
pub enum Failure {
    /// The store is unreachable or failing: try the file again later.
    Retry(String),
    /// The mapping file cannot be written: stop forwarding.
    Fatal(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Fatal(e)
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    headers: reqwest::header::HeaderMap,
}

impl Client {
    /// POSTs JSON; 2xx gives the answer, 4xx is refused (`Ok(Err)`), the rest
    /// is worth retrying.
    async fn post(&self, path: &str, body: &Value) -> Result<Result<Value, String>, Failure> {
        let resp = self
            .http
            .post(format!("{}/v1/agl{path}", self.base))
            .headers(self.headers.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("{path}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        store_answer(path, status, &text)
    }
}

/// The store's answer to a POST to `path`: 2xx gives its JSON (`null` when
/// it is not JSON), 4xx but 429 is refused (`Ok(Err)`), the rest is worth
/// retrying.
pub fn store_answer(
    path: &str,
    status: reqwest::StatusCode,
    text: &str,
) -> Result<Result<Value, String>, Failure> {
    if status.is_success() {
        return Ok(Ok(serde_json::from_str(text).unwrap_or(Value::Null)));
    }
    let reason = format!(
        "{path}: HTTP {status}: {}",
        text.chars().take(300).collect::<String>()
    );
    if status.is_client_error() && status.as_u16() != 429 {
        Ok(Err(reason))
    } else {
        Err(Failure::Retry(reason))
    }
}

/// AGL's ids in its answer to `POST /rollouts`: the rollout's and its first
/// attempt's.
pub fn created_ids(created: &Value) -> Option<(&str, &str)> {
    Some((
        created["rollout_id"].as_str()?,
        created["attempt"]["attempt_id"].as_str()?,
    ))
}

/// A rollout file as the view wrote it.
struct RolloutFile {
    rollout: String,
    attempt: String,
    status: String,
    task_input: Value,
    spans: Vec<Value>,
}

fn read_file(path: &Path) -> Option<RolloutFile> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(RolloutFile {
        rollout: v["rollout_id"].as_str()?.to_string(),
        attempt: v["attempt_id"].as_str().unwrap_or_default().to_string(),
        status: v["status"].as_str().unwrap_or("running").to_string(),
        task_input: v["task_input"].clone(),
        spans: v["spans"].as_array().cloned().unwrap_or_default(),
    })
}

/// `ro-` and the last 12 hex digits of a trace id (see `agl::index`).
fn derived_id(trace_hex: &str) -> Option<String> {
    trace_hex.get(20..).map(|tail| format!("ro-{tail}"))
}

fn trace_ids(spans: &[Value]) -> HashSet<&str> {
    spans
        .iter()
        .filter_map(|s| s["trace_id"].as_str())
        .collect()
}

fn is_derived(f: &RolloutFile) -> bool {
    let traces = trace_ids(&f.spans);
    !traces.is_empty()
        && traces
            .iter()
            .all(|t| derived_id(t).as_deref() == Some(f.rollout.as_str()))
}

struct Agl<'a> {
    forwarder: &'a Forwarder,
    client: Client,
    mapping: Mapping,
    traces_dir: PathBuf,
    hold: Duration,
}

impl Agl<'_> {
    /// Brings one rollout file up to date at the store. `Ok(false)`: held.
    async fn sync_file(&mut self, name: &str) -> Result<bool, Failure> {
        let path = self.traces_dir.join(name);
        let Some(file) = read_file(&path) else {
            // Gone (folded into a named rollout) or unreadable: nothing to send.
            return Ok(true);
        };
        if is_derived(&file) && !self.mapping.rollouts.contains_key(&file.rollout) {
            let age = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if age < self.hold {
                return Ok(false);
            }
        }
        if !self.mapping.rollouts.contains_key(&file.rollout) {
            self.register(&file).await?;
        }
        self.send_spans(&file).await?;
        if self.mapping.rollouts[&file.rollout].status.as_deref() != Some(file.status.as_str()) {
            self.set_status(&file.rollout, &file.status, None).await?;
        }
        if !is_derived(&file) {
            self.cancel_claimed(&file).await?;
        }
        Ok(true)
    }

    /// Creates the file's rollout in the AGL store and remembers AGL's ids.
    async fn register(&mut self, file: &RolloutFile) -> Result<(), Failure> {
        let input = match &file.task_input {
            Value::Null => json!({"oclagl.rollout_id": file.rollout}),
            other => other.clone(),
        };
        let body = json!({
            "input": input,
            "mode": "train",
            "metadata": {"oclagl.rollout_id": file.rollout, "oclagl.attempt_id": file.attempt},
        });
        let created = match self.client.post("/rollouts", &body).await? {
            Ok(v) => v,
            Err(reason) => return Err(Failure::Retry(reason)),
        };
        let Some((r, a)) = created_ids(&created) else {
            return Err(Failure::Retry(format!(
                "unexpected answer to POST /rollouts: {created}"
            )));
        };
        self.mapping
            .append(json!({"rollout": file.rollout, "agl_rollout": r, "agl_attempt": a}))?;
        self.mapping.rollouts.insert(
            file.rollout.clone(),
            Mapped {
                agl_rollout: r.to_string(),
                agl_attempt: a.to_string(),
                ..Default::default()
            },
        );
        Ok(())
    }

    /// Posts the file's spans not sent yet, under AGL's ids; what was sent
    /// (or refused for good) is recorded even when a later span fails.
    async fn send_spans(&mut self, file: &RolloutFile) -> Result<(), Failure> {
        let stats = &self.forwarder.stats;
        let (agl_rollout, agl_attempt) = {
            let m = &self.mapping.rollouts[&file.rollout];
            (m.agl_rollout.clone(), m.agl_attempt.clone())
        };
        let mut sent = Vec::new();
        let mut result = Ok(());
        for span in &file.spans {
            let Some(id) = span["span_id"].as_str() else {
                continue;
            };
            if self.mapping.rollouts[&file.rollout].sent.contains(id) {
                continue;
            }
            let mut span = span.clone();
            if let Some(obj) = span.as_object_mut() {
                obj.insert("rollout_id".into(), json!(agl_rollout));
                obj.insert("attempt_id".into(), json!(agl_attempt));
                let attrs = obj
                    .entry("attributes")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(attrs) = attrs.as_object_mut() {
                    attrs.insert("oclagl.rollout_id".into(), json!(file.rollout));
                    attrs.insert("oclagl.attempt_id".into(), json!(file.attempt));
                }
            }
            match self.client.post("/spans", &span).await {
                Ok(Ok(_)) => {
                    stats.sent_spans.fetch_add(1, Ordering::Relaxed);
                    sent.push(id.to_string());
                }
                Ok(Err(reason)) => {
                    tracing::error!(destination = %self.forwarder.dest.name, rollout = %file.rollout, span = id, %reason, "AGL store refused a span for good; skipping it");
                    stats.refused_spans.fetch_add(1, Ordering::Relaxed);
                    sent.push(id.to_string());
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if !sent.is_empty() {
            self.mapping
                .append(json!({"rollout": file.rollout, "sent": sent}))?;
            stats.sent_requests.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = self.mapping.rollouts.get_mut(&file.rollout) {
                m.sent.extend(sent);
            }
        }
        result
    }

    /// Trace-derived rollouts a named one has claimed are cancelled.
    async fn cancel_claimed(&mut self, file: &RolloutFile) -> Result<(), Failure> {
        for trace in trace_ids(&file.spans) {
            let Some(derived) = derived_id(trace) else {
                continue;
            };
            let cancel = derived != file.rollout
                && self
                    .mapping
                    .rollouts
                    .get(&derived)
                    .is_some_and(|m| m.status.as_deref() != Some("cancelled"));
            if cancel {
                self.set_status(&derived, "cancelled", Some(&file.rollout))
                    .await?;
            }
        }
        Ok(())
    }

    async fn set_status(
        &mut self,
        rollout: &str,
        status: &str,
        merged_into: Option<&str>,
    ) -> Result<(), Failure> {
        let Some(m) = self.mapping.rollouts.get(rollout) else {
            return Ok(());
        };
        let (agl_rollout, agl_attempt) = (m.agl_rollout.clone(), m.agl_attempt.clone());
        let mut body = json!({"status": status});
        if let Some(into) = merged_into {
            body["metadata"] = json!({"oclagl.rollout_id": rollout, "oclagl.merged_into": into});
        }
        let refused = |r: Result<Value, String>| {
            if let Err(reason) = r {
                tracing::warn!(rollout, %reason, "AGL store refused a status update");
            }
        };
        // The attempt first: AGL carries an attempt's end over to its
        // rollout, so the rollout's own status goes last. An attempt has no
        // `cancelled`; it ends as failed.
        let attempt_status = match status {
            "succeeded" => Some("succeeded"),
            "failed" | "cancelled" => Some("failed"),
            _ => None,
        };
        if let Some(s) = attempt_status {
            let path = format!("/rollouts/{agl_rollout}/attempts/{agl_attempt}");
            refused(self.client.post(&path, &json!({"status": s})).await?);
        }
        refused(
            self.client
                .post(&format!("/rollouts/{agl_rollout}"), &body)
                .await?,
        );
        self.mapping
            .append(json!({"rollout": rollout, "status": status}))?;
        if let Some(m) = self.mapping.rollouts.get_mut(rollout) {
            m.status = Some(status.to_string());
        }
        Ok(())
    }
}

/// The names of the rollout files in `dir`.
fn rollout_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                if let Some(name) = e?.file_name().to_str() {
                    if parse_file_name(name).is_some() {
                        out.push(name.to_string());
                    }
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// Keeps an AGL store up to date with the rollout files the view writes
/// (`written` gives their names) until `stop` turns true.
pub async fn run(
    forwarder: &Forwarder,
    traces_dir: PathBuf,
    state_dir: PathBuf,
    mut written: mpsc::UnboundedReceiver<String>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ForwardError> {
    let dest = &forwarder.dest;
    let io_err = |path: &Path, source: io::Error| ForwardError::Io {
        name: dest.name.clone(),
        path: path.display().to_string(),
        error: source,
    };
    let mapping = Mapping::open(&state_dir, &dest.name).map_err(|e| io_err(&state_dir, e))?;
    let (http, headers) = super::send::http_client(dest)?;
    let mut agl = Agl {
        forwarder,
        client: Client {
            http,
            base: dest.url.clone(),
            headers,
        },
        mapping,
        traces_dir: traces_dir.clone(),
        hold: dest.hold,
    };
    // Every file on disk is checked once at start (sent spans are skipped).
    let now = Instant::now();
    let mut pending: HashMap<String, Instant> = rollout_files(&traces_dir)
        .map_err(|e| io_err(&traces_dir, e))?
        .into_iter()
        .map(|n| (n, now))
        .collect();
    let mut attempt = 0u32;
    tracing::info!(destination = %dest.name, url = %dest.url, rollouts = agl.mapping.rollouts.len(), path = %agl.mapping.path.display(), "forwarding rollouts to an Agent Lightning store");
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            name = written.recv() => match name {
                Some(name) => { pending.insert(name, Instant::now()); }
                None => break,
            },
            _ = tick.tick() => {},
            _ = stop.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        let mut due: Vec<String> = pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        due.sort();
        for name in due {
            if *stop.borrow() {
                break;
            }
            match agl.sync_file(&name).await {
                Ok(true) => {
                    pending.remove(&name);
                    attempt = 0;
                }
                Ok(false) => {
                    pending.insert(name, now + TICK * 4);
                }
                Err(Failure::Retry(reason)) => {
                    forwarder
                        .stats
                        .failed_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    if attempt == 0 {
                        tracing::warn!(destination = %dest.name, %reason, "AGL store unavailable; retrying with backoff");
                    }
                    let wait = backoff(attempt, None);
                    attempt = attempt.saturating_add(1);
                    // Everything waits: the store is down, not this file.
                    for at in pending.values_mut() {
                        *at = (*at).max(now + wait);
                    }
                    break;
                }
                Err(Failure::Fatal(e)) => return Err(io_err(&agl.mapping.path, e)),
            }
        }
        report_backlog(forwarder, &pending, &traces_dir, now);
    }
    Ok(())
}

/// Backlog (bytes of trace files waiting) and lag (the oldest wait) of an
/// AGL store destination, for `/metrics`.
fn report_backlog(
    forwarder: &Forwarder,
    pending: &HashMap<String, Instant>,
    traces_dir: &Path,
    now: Instant,
) {
    let backlog: u64 = pending
        .keys()
        .filter_map(|n| std::fs::metadata(traces_dir.join(n)).ok())
        .map(|m| m.len())
        .sum();
    forwarder
        .stats
        .backlog_bytes
        .store(backlog, Ordering::Relaxed);
    let oldest = pending
        .values()
        .min()
        .map_or(Duration::ZERO, |at| now.saturating_duration_since(*at));
    forwarder
        .stats
        .lag_ms
        .store(oldest.as_millis() as u64, Ordering::Relaxed);
}
