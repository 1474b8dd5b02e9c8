//! The sidecar's store read directly, as trace files.
//!
//! The write-ahead log is scanned read-only ([`crate::store::wal::scan`]),
//! so this works while `oclagl serve` is running. Spans are grouped into
//! rollouts by the same index the sidecar uses, and each rollout's trace file
//! is built by the same code that writes `traces/`, so exporting from the
//! store and from the trace files it produced gives the same rows, in the same
//! order (the order of the trace files' names). Memory: the index keeps only
//! record positions; records are read back one rollout at a time.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::agl::index::{summarize, Change, Index};
use crate::agl::trace_file::{file_name, file_stem};
use crate::agl::view::build_trace_file;
use crate::store::wal::{self, Pos, RecoveryStats, WalReader};
use crate::store::Record;

/// Decoded records kept for rollouts that share them (bounded).
const CACHE: usize = 512;

/// Why a store could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreReadError {
    /// Its write-ahead log could not be scanned.
    #[error("cannot read the store in {path}: {error}")]
    Scan {
        /// The data folder.
        path: String,
        /// The I/O error.
        error: io::Error,
    },
}

/// Is `dir` an `oclagl serve` data folder (it holds the `wal/` store)?
pub fn is_data_dir(dir: &Path) -> bool {
    dir.join("wal").is_dir()
}

/// A scanned store: its rollouts, in trace-file name order.
pub struct Store {
    wal_dir: PathBuf,
    index: Index,
    rollouts: Vec<(String, Arc<str>)>,
    /// What reading the log found (records, segments, torn or damaged ends).
    pub stats: RecoveryStats,
    /// Records whose checksum held but which do not decode.
    pub undecodable: u64,
}

/// One rollout of the store, as its trace file's JSON.
pub struct StoreRollout {
    /// The name the sidecar gives its trace file.
    pub name: String,
    /// The trace file's JSON, or why it could not be built.
    pub json: Result<Vec<u8>, String>,
}

fn decode(payload: &[u8]) -> Option<(u64, ExportTraceServiceRequest)> {
    let record = Record::decode(payload).ok()?;
    let request = ExportTraceServiceRequest::decode(record.export_trace_request).ok()?;
    Some((record.received_unix_nano, request))
}

impl Store {
    /// Scans the store of a data folder.
    pub fn open(data_dir: &Path) -> Result<Store, StoreReadError> {
        let wal_dir = data_dir.join("wal");
        let mut index = Index::default();
        let mut live: HashSet<Arc<str>> = HashSet::new();
        let mut changes = Vec::new();
        let mut undecodable = 0;
        let stats = wal::scan(&wal_dir, |pos, payload| match decode(&payload) {
            Some((received, request)) => {
                changes.clear();
                index.observe(pos, received, &summarize(&request), &mut changes);
                for change in changes.drain(..) {
                    match change {
                        Change::Touched(id) => {
                            live.insert(id);
                        }
                        Change::Merged { gone, .. } => {
                            live.remove(&gone);
                        }
                    }
                }
            }
            None => undecodable += 1,
        })
        .map_err(|source| StoreReadError::Scan {
            path: wal_dir.display().to_string(),
            error: source,
        })?;
        let mut rollouts: Vec<(String, Arc<str>)> = live
            .into_iter()
            .filter_map(|id| {
                let r = index.get(&id)?;
                Some((file_name(&file_stem(&id), r.first_received), id))
            })
            .collect();
        rollouts.sort();
        Ok(Store {
            wal_dir,
            index,
            rollouts,
            stats,
            undecodable,
        })
    }

    /// Rollouts in the store.
    pub fn len(&self) -> usize {
        self.rollouts.len()
    }

    /// True when the store holds no rollout.
    pub fn is_empty(&self) -> bool {
        self.rollouts.is_empty()
    }

    /// Each rollout's trace file, in name order; stops when `f` says so.
    pub fn for_each(&self, mut f: impl FnMut(StoreRollout) -> bool) {
        let mut reader = WalReader::new(&self.wal_dir);
        let mut cache: HashMap<Pos, Arc<ExportTraceServiceRequest>> = HashMap::new();
        for (name, id) in &self.rollouts {
            let Some(rollout) = self.index.get(id) else {
                continue;
            };
            if cache.len() > CACHE {
                cache.clear();
            }
            let mut requests = Vec::with_capacity(rollout.records.len());
            let mut failed = None;
            for pos in &rollout.records {
                if let Some(r) = cache.get(pos) {
                    requests.push(r.clone());
                    continue;
                }
                match reader.read(*pos).ok().and_then(|p| decode(&p)) {
                    Some((_, r)) => {
                        let r = Arc::new(r);
                        cache.insert(*pos, r.clone());
                        requests.push(r);
                    }
                    None => {
                        failed = Some(format!("cannot read store record {pos}"));
                        break;
                    }
                }
            }
            let json = match failed {
                Some(e) => Err(e),
                None => serde_json::to_vec(&build_trace_file(id, rollout, &requests))
                    .map_err(|e| e.to_string()),
            };
            if !f(StoreRollout {
                name: name.clone(),
                json,
            }) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agl::span::tests::{kv, s};
    use crate::export::read::trace_file::Doc;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn export_of(spans: Vec<Span>) -> Vec<u8> {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Record {
            received_unix_nano: 1_770_912_433_000_000_000,
            export_trace_request: request.encode_to_vec().into(),
        }
        .encode_to_vec()
    }

    fn llm_span(trace: u8, id: u8, rollout: Option<&str>, text: &str) -> Span {
        let mut attributes = vec![
            kv("gen_ai.prompt.0.role", s("user")),
            kv("gen_ai.prompt.0.content", s(text)),
        ];
        if let Some(r) = rollout {
            attributes.push(kv("agentlightning.rollout_id", s(r)));
        }
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: "gen_ai".into(),
            attributes,
            ..Default::default()
        }
    }

    #[test]
    fn rollouts_come_back_as_trace_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        let (mut wal, _) = wal::Wal::open(&wal_dir, 1 << 20, false, |_, _| {}).unwrap();
        let records = [
            export_of(vec![llm_span(2, 1, Some("ro-b"), "first of b")]),
            // Unnamed span first, then the span that names its trace's rollout.
            export_of(vec![llm_span(1, 2, None, "early a")]),
            export_of(vec![llm_span(1, 3, Some("ro-a"), "named a")]),
            b"not a record".to_vec(),
        ];
        wal.append_batch(&records, |r, out| out.extend_from_slice(r))
            .unwrap();
        drop(wal);
        assert!(is_data_dir(dir.path()));
        let store = Store::open(dir.path()).unwrap();
        assert_eq!((store.len(), store.undecodable), (2, 1));
        let mut seen = Vec::new();
        store.for_each(|r| {
            let json = r.json.unwrap();
            let doc = Doc::parse(&json).unwrap();
            seen.push((
                r.name,
                doc.rollout_id.as_deref().unwrap().to_string(),
                doc.spans.len(),
            ));
            true
        });
        assert_eq!(
            seen,
            [
                (
                    "rollout_ro-a_20260212T160713Z.json".to_string(),
                    "ro-a".to_string(),
                    2
                ),
                (
                    "rollout_ro-b_20260212T160713Z.json".to_string(),
                    "ro-b".to_string(),
                    1
                ),
            ]
        );
        let mut calls = 0;
        store.for_each(|_| {
            calls += 1;
            false
        });
        assert_eq!(calls, 1);
        assert!(Store::open(&dir.path().join("nothing")).is_err());
    }
}
