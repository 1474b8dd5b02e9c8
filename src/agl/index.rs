//! Which rollout each span belongs to, AGL's way.
//!
//! A span's rollout is its `agentlightning.rollout_id` (span attribute over
//! resource attribute). A span without one joins the rollout of the first span
//! of its trace that has one, even if that span arrives later; until then, and
//! for traces that never name a rollout, the trace forms a rollout of its own
//! whose ids are derived from the trace id. The index keeps, per rollout, only
//! the log positions of the records that hold its spans; the spans themselves
//! are read back from the log when a trace file is written.
//!
//! Only rollouts still changing are held in memory. Once a rollout's trace
//! file is written and its summary line, which carries what the index knows
//! of it ([`Saved`]), is on disk, the view evicts it: the index then keeps
//! just where that line is, by a 128-bit keyed hash of the rollout id and by
//! trace id (about 60 bytes a rollout instead of kilobytes), and reads the
//! rollout back from the line when a late span arrives.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::BuildHasher;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::{Deserialize, Serialize};

use super::span::rollout_id;
use super::summary;
use crate::store::Pos;

/// An OTLP trace id: 16 bytes.
pub type TraceId = [u8; 16];

/// What the index needs of one record: its (trace, explicit rollout) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSummary {
    /// Each distinct (trace, rollout id the span names, if any) of the record,
    /// in first-seen order.
    pub keys: Vec<(TraceId, Option<Arc<str>>)>,
}

/// Computes the summary of a validated export (every trace id is 16 bytes).
pub fn summarize(request: &ExportTraceServiceRequest) -> RecordSummary {
    let mut keys: Vec<(TraceId, Option<Arc<str>>)> = Vec::new();
    let mut seen: HashSet<(TraceId, Option<Arc<str>>)> = HashSet::new();
    for rs in &request.resource_spans {
        let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let Ok(trace) = TraceId::try_from(span.trace_id.as_slice()) else {
                    continue;
                };
                let key = (trace, rollout_id(&span.attributes, resource).map(Arc::from));
                if seen.insert(key.clone()) {
                    keys.push(key);
                }
            }
        }
    }
    RecordSummary { keys }
}

/// The rollout id given to a trace that names none: `ro-` and the last 12 hex
/// digits of the trace id (its random part under W3C trace context).
pub fn derived_rollout_id(trace: &TraceId) -> String {
    format!("ro-{}", &hex::encode(trace)[20..])
}

/// The attempt id of a trace-derived rollout.
pub fn derived_attempt_id(trace: &TraceId) -> String {
    format!("at-{}", &hex::encode(trace)[12..20])
}

/// An attempt id for a rollout whose spans name none (FNV-1a of the id).
pub fn fallback_attempt_id(rollout: &str) -> String {
    format!("at-{:08x}", (fnv1a(rollout.as_bytes()) >> 32) as u32)
}

/// 64-bit FNV-1a: a hash that stays the same across runs and machines, for ids
/// derived from names.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What the index knows of one rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Records holding spans of this rollout, in log order.
    pub records: Vec<Pos>,
    /// Traces whose spans without a rollout id belong here.
    pub traces: Vec<TraceId>,
    /// Set for trace-derived rollouts.
    pub derived_from: Option<TraceId>,
    /// When its first record was received (Unix nanoseconds).
    pub first_received: u64,
    /// Its trace file's name, once written.
    pub file: Option<String>,
}

/// What the index knows of a rollout, as saved in its summary line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// `[segment, offset]` of each record.
    pub records: Vec<[u64; 2]>,
    /// Hex trace ids.
    pub traces: Vec<String>,
    /// True for a rollout derived from a trace that named none.
    pub derived: bool,
    /// When its first record was received (Unix nanoseconds).
    pub first_received: u64,
}

impl Saved {
    /// The summary-line form of `rollout`.
    pub fn of(rollout: &Rollout) -> Saved {
        Saved {
            records: rollout
                .records
                .iter()
                .map(|p| [p.segment, p.offset])
                .collect(),
            traces: rollout.traces.iter().map(hex::encode).collect(),
            derived: rollout.derived_from.is_some(),
            first_received: rollout.first_received,
        }
    }

    /// The trace ids (malformed ones, which this program never writes, are
    /// dropped).
    pub fn trace_ids(&self) -> impl Iterator<Item = TraceId> + '_ {
        self.traces.iter().filter_map(|t| {
            let mut id = [0u8; 16];
            hex::decode_to_slice(t, &mut id).ok().map(|()| id)
        })
    }

    fn into_rollout(self, file: String) -> Rollout {
        let traces: Vec<TraceId> = self.trace_ids().collect();
        Rollout {
            records: self
                .records
                .iter()
                .map(|&[segment, offset]| Pos { segment, offset })
                .collect(),
            derived_from: if self.derived {
                traces.first().copied()
            } else {
                None
            },
            traces,
            first_received: self.first_received,
            file: Some(file),
        }
    }
}

/// Evicted rollouts: where the summary line of each is.
struct Evicted {
    file: Option<File>,
    keys: (RandomState, RandomState),
    ids: HashMap<u128, u64>,
    traces: HashMap<TraceId, u64>,
}

impl Default for Evicted {
    fn default() -> Evicted {
        Evicted {
            file: None,
            keys: (RandomState::new(), RandomState::new()),
            ids: HashMap::new(),
            traces: HashMap::new(),
        }
    }
}

impl Evicted {
    /// Two independent keyed 64-bit hashes: no two ids meet by chance, and
    /// nobody can pick ids that do (the keys are random per process).
    fn key(&self, id: &str) -> u128 {
        ((self.keys.0.hash_one(id) as u128) << 64) | self.keys.1.hash_one(id) as u128
    }

    /// Reads the rollout saved at `offset`, if the line there is `id`'s (or
    /// any rollout's, when `id` is `None`).
    fn read(&self, offset: u64, id: Option<&str>) -> Option<(Arc<str>, Rollout)> {
        let file = self.file.as_ref()?;
        match summary::read_saved(file, offset) {
            Ok((rollout_id, name, saved)) if id.is_none_or(|id| id == rollout_id) => {
                Some((Arc::from(rollout_id), saved.into_rollout(name)))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::error!(offset, error = %e, "cannot read an evicted rollout back from its summary line");
                None
            }
        }
    }
}

impl Rollout {
    /// Does a span of `trace` that names `explicit` (or nothing) belong here?
    pub fn owns(&self, id: &str, trace: &TraceId, explicit: Option<&str>) -> bool {
        match explicit {
            Some(r) => r == id,
            None => self.traces.contains(trace),
        }
    }
}

struct TraceLink {
    rollout: Arc<str>,
    explicit: bool,
}

/// A change the view must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The rollout got spans.
    Touched(Arc<str>),
    /// A trace-derived rollout was folded into a named one and no longer
    /// exists; `file` is the trace file it had.
    Merged {
        /// The derived rollout that went away.
        gone: Arc<str>,
        /// The named rollout it joined.
        into: Arc<str>,
        /// The trace file the derived rollout had, if one was written.
        file: Option<String>,
    },
}

/// Which rollout each span belongs to, and where their records are in the log
/// (see the module's documentation).
#[derive(Default)]
pub struct Index {
    rollouts: HashMap<Arc<str>, Rollout>,
    traces: HashMap<TraceId, TraceLink>,
    evicted: Evicted,
}

fn merge_sorted(a: &mut Vec<Pos>, b: Vec<Pos>) {
    a.extend(b);
    a.sort_unstable();
    a.dedup();
}

impl Index {
    /// A rollout held in memory (one not evicted).
    pub fn get(&self, id: &str) -> Option<&Rollout> {
        self.rollouts.get(id)
    }

    /// Any rollout, evicted ones read back from their summary line.
    pub fn lookup(&self, id: &str) -> Option<Rollout> {
        if let Some(r) = self.rollouts.get(id) {
            return Some(r.clone());
        }
        let offset = *self.evicted.ids.get(&self.evicted.key(id))?;
        self.evicted.read(offset, Some(id)).map(|(_, r)| r)
    }

    /// Rollouts held in memory.
    pub fn len(&self) -> usize {
        self.rollouts.len()
    }

    /// True when no rollout is held in memory.
    pub fn is_empty(&self) -> bool {
        self.rollouts.is_empty()
    }

    /// Rollouts evicted to their summary lines.
    pub fn evicted(&self) -> usize {
        self.evicted.ids.len()
    }

    /// Gives the index the summaries' file, to read evicted rollouts from.
    pub fn set_saved_file(&mut self, file: File) {
        self.evicted.file = Some(file);
    }

    /// Records that `id`'s last summary line, at `offset`, holds it (`traces`
    /// are its traces); used when reading the file at start.
    pub fn saved_at(&mut self, id: &str, traces: impl Iterator<Item = TraceId>, offset: u64) {
        let key = self.evicted.key(id);
        self.evicted.ids.insert(key, offset);
        for trace in traces {
            self.evicted.traces.insert(trace, offset);
        }
    }

    /// Forgets an evicted rollout that was merged away.
    pub fn forget_saved(&mut self, id: &str) {
        let key = self.evicted.key(id);
        self.evicted.ids.remove(&key);
    }

    /// Records the trace file written for a rollout held in memory.
    pub fn set_file(&mut self, id: &str, name: &str) {
        if let Some(r) = self.rollouts.get_mut(id) {
            r.file = Some(name.to_string());
        }
    }

    /// Drops a rollout from memory, to be read back from its summary line
    /// at `offset` when needed. The caller makes sure that line is on disk
    /// and holds every record of the rollout.
    pub fn evict(&mut self, id: &str, offset: u64) {
        let Some(rollout) = self.rollouts.remove(id) else {
            return;
        };
        for trace in &rollout.traces {
            if self.traces.get(trace).is_some_and(|l| *l.rollout == *id) {
                self.traces.remove(trace);
                self.evicted.traces.insert(*trace, offset);
            }
        }
        let key = self.evicted.key(id);
        self.evicted.ids.insert(key, offset);
    }

    /// Brings back the evicted rollouts that a span of `trace` naming
    /// `explicit` (or nothing) may belong to. Records at or after `pos` are
    /// not taken from the line: they are being observed again (a replay
    /// after a restart), in order.
    fn restore(&mut self, trace: &TraceId, explicit: Option<&Arc<str>>, pos: Pos) {
        if self.evicted.ids.is_empty() {
            return;
        }
        let known = self.traces.contains_key(trace);
        let by_trace = match known {
            true => None,
            false => self.evicted.traces.get(trace).copied(),
        };
        // A new trace naming no rollout joins the one its derived id names,
        // in memory or not: two traces whose random parts end alike share it.
        let derived = (explicit.is_none() && !known && by_trace.is_none())
            .then(|| Arc::<str>::from(derived_rollout_id(trace)));
        let by_id = explicit
            .or(derived.as_ref())
            .filter(|id| !self.rollouts.contains_key(&***id))
            .and_then(|id| Some((*self.evicted.ids.get(&self.evicted.key(id))?, id.clone())));
        if let Some(offset) = by_trace {
            self.evicted.traces.remove(trace);
            self.bring_back(offset, None, pos);
        }
        if let Some((offset, id)) = by_id {
            self.bring_back(offset, Some(&id), pos);
        }
    }

    fn bring_back(&mut self, offset: u64, id: Option<&str>, pos: Pos) {
        let Some((id, mut rollout)) = self.evicted.read(offset, id) else {
            return;
        };
        if self.rollouts.contains_key(&id) {
            return;
        }
        let key = self.evicted.key(&id);
        if self.evicted.ids.get(&key) == Some(&offset) {
            self.evicted.ids.remove(&key);
        }
        rollout.records.retain(|r| *r < pos);
        for trace in &rollout.traces {
            if self.evicted.traces.get(trace) == Some(&offset) {
                self.evicted.traces.remove(trace);
            }
            self.traces.entry(*trace).or_insert_with(|| TraceLink {
                rollout: id.clone(),
                explicit: rollout.derived_from.is_none(),
            });
        }
        self.rollouts.insert(id, rollout);
    }

    fn rollout_mut(&mut self, id: &Arc<str>, received: u64) -> &mut Rollout {
        self.rollouts.entry(id.clone()).or_insert_with(|| Rollout {
            records: Vec::new(),
            traces: Vec::new(),
            derived_from: None,
            first_received: received,
            file: None,
        })
    }

    /// Adds a committed record; pushes what changed onto `changes`.
    pub fn observe(
        &mut self,
        pos: Pos,
        received: u64,
        summary: &RecordSummary,
        changes: &mut Vec<Change>,
    ) {
        for (trace, explicit) in &summary.keys {
            self.restore(trace, explicit.as_ref(), pos);
            let id = match explicit {
                Some(named) => {
                    self.bind_trace(trace, named, received, changes);
                    named.clone()
                }
                None => match self.traces.get(trace) {
                    Some(link) => link.rollout.clone(),
                    None => {
                        let id: Arc<str> = Arc::from(derived_rollout_id(trace));
                        self.traces.insert(
                            *trace,
                            TraceLink {
                                rollout: id.clone(),
                                explicit: false,
                            },
                        );
                        let rollout = self.rollout_mut(&id, received);
                        rollout.derived_from = Some(*trace);
                        rollout.traces.push(*trace);
                        id
                    }
                },
            };
            let rollout = self.rollout_mut(&id, received);
            if rollout.records.last() != Some(&pos) {
                rollout.records.push(pos);
            }
            // Keys are distinct, so a rollout is touched once per trace of it
            // in this record; the view's handling is idempotent.
            changes.push(Change::Touched(id));
        }
    }

    /// A span of `trace` names rollout `named`: the first such span binds the
    /// trace (and everything it had so far) to that rollout.
    fn bind_trace(
        &mut self,
        trace: &TraceId,
        named: &Arc<str>,
        received: u64,
        changes: &mut Vec<Change>,
    ) {
        let previous = match self.traces.get_mut(trace) {
            Some(link) if link.explicit => return,
            Some(link) => {
                link.explicit = true;
                Some(std::mem::replace(&mut link.rollout, named.clone()))
            }
            None => {
                self.traces.insert(
                    *trace,
                    TraceLink {
                        rollout: named.clone(),
                        explicit: true,
                    },
                );
                None
            }
        };
        match previous {
            Some(derived) if derived != *named => {
                let gone = self.rollouts.remove(&derived);
                let into = self.rollout_mut(named, received);
                into.traces.push(*trace);
                let mut file = None;
                if let Some(gone) = gone {
                    into.first_received = into.first_received.min(gone.first_received);
                    merge_sorted(&mut into.records, gone.records);
                    file = gone.file;
                }
                changes.push(Change::Merged {
                    gone: derived,
                    into: named.clone(),
                    file,
                });
            }
            // The sender named the very id we derived: it is a named rollout now.
            Some(_) => self.rollout_mut(named, received).derived_from = None,
            None => self.rollout_mut(named, received).traces.push(*trace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(o: u64) -> Pos {
        Pos {
            segment: 1,
            offset: o,
        }
    }

    fn summary(keys: &[(u8, Option<&str>)]) -> RecordSummary {
        RecordSummary {
            keys: keys
                .iter()
                .map(|(t, r)| ([*t; 16], r.map(Arc::from)))
                .collect(),
        }
    }

    #[test]
    fn unnamed_spans_that_arrive_first_join_the_named_rollout() {
        let mut index = Index::default();
        let mut changes = Vec::new();
        index.observe(pos(1), 10, &summary(&[(7, None)]), &mut changes);
        let derived = derived_rollout_id(&[7; 16]);
        assert!(index.get(&derived).is_some());
        changes.clear();
        index.observe(
            pos(2),
            20,
            &summary(&[(7, Some("ro-aaaaaaaaaaaa"))]),
            &mut changes,
        );
        assert!(index.get(&derived).is_none());
        let r = index.get("ro-aaaaaaaaaaaa").unwrap();
        assert_eq!(r.records, vec![pos(1), pos(2)]);
        assert_eq!(r.first_received, 10);
        assert!(r.owns("ro-aaaaaaaaaaaa", &[7; 16], None));
        assert!(changes.contains(&Change::Merged {
            gone: Arc::from(derived.as_str()),
            into: Arc::from("ro-aaaaaaaaaaaa"),
            file: None,
        }));
        // Later unnamed spans of the trace go to the named rollout too.
        index.observe(pos(3), 30, &summary(&[(7, None)]), &mut changes);
        assert_eq!(index.get("ro-aaaaaaaaaaaa").unwrap().records.len(), 3);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn one_record_can_touch_a_derived_rollout_then_merge_it_away() {
        // Found by the agl_view fuzz target: a record whose spans of one
        // trace are unnamed and named. The derived rollout is touched, then
        // merged into the named one; readers of the changes (the view, the
        // store reader) drop it at the merge.
        let mut index = Index::default();
        let mut changes = Vec::new();
        index.observe(
            pos(1),
            10,
            &summary(&[(7, None), (7, Some("ro-aaaaaaaaaaaa"))]),
            &mut changes,
        );
        let derived: Arc<str> = Arc::from(derived_rollout_id(&[7; 16]).as_str());
        let named: Arc<str> = Arc::from("ro-aaaaaaaaaaaa");
        assert_eq!(
            changes,
            vec![
                Change::Touched(derived.clone()),
                Change::Merged {
                    gone: derived.clone(),
                    into: named.clone(),
                    file: None,
                },
                Change::Touched(named.clone()),
            ]
        );
        assert!(index.get(&derived).is_none());
        assert_eq!(index.get(&named).unwrap().records, vec![pos(1)]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_trace_stays_with_the_first_rollout_that_named_it() {
        let mut index = Index::default();
        let mut changes = Vec::new();
        index.observe(
            pos(1),
            1,
            &summary(&[(1, Some("ro-a")), (1, Some("ro-b"))]),
            &mut changes,
        );
        index.observe(pos(2), 2, &summary(&[(1, None)]), &mut changes);
        assert_eq!(index.get("ro-a").unwrap().records, vec![pos(1), pos(2)]);
        assert_eq!(index.get("ro-b").unwrap().records, vec![pos(1)]);
        assert!(!index.get("ro-b").unwrap().owns("ro-b", &[1; 16], None));
    }

    #[test]
    fn summaries_list_each_trace_and_rollout_pair_once_in_order() {
        use crate::agl::span::tests::{kv, s};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let span = |t: u8, attrs| Span {
            trace_id: vec![t; 16],
            span_id: vec![1; 8],
            attributes: attrs,
            ..Default::default()
        };
        // 20,000 single-span traces stay linear; duplicates collapse.
        let mut spans: Vec<Span> = (0..20_000u32)
            .map(|i| Span {
                trace_id: [i.to_be_bytes().to_vec(), vec![9; 12]].concat(),
                span_id: vec![1; 8],
                ..Default::default()
            })
            .collect();
        spans.push(span(3, vec![kv("agentlightning.rollout_id", s("ro-x"))]));
        spans.push(span(3, vec![]));
        spans.push(span(3, vec![kv("agentlightning.rollout_id", s("ro-x"))]));
        spans.push(span(4, vec![]));
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("agentlightning.rollout_id", s("ro-res"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let keys = summarize(&request).keys;
        assert_eq!(keys.len(), 20_003);
        let tail: Vec<_> = keys[20_000..]
            .iter()
            .map(|(t, r)| (t[0], r.as_deref().map(str::to_string)))
            .collect();
        // The span attribute overrides the resource's rollout id.
        let named = |t: u8, r: &str| (t, Some(r.to_string()));
        assert_eq!(
            tail,
            vec![named(3, "ro-x"), named(3, "ro-res"), named(4, "ro-res")]
        );
    }

    /// Saves `id`'s summary line as the view does and evicts the rollout.
    fn evict(index: &mut Index, log: &mut summary::Log, id: &str, file: &str) {
        let trace = crate::agl::trace_file::TraceFile {
            rollout_id: id.into(),
            attempt_id: "at-1".into(),
            status: "succeeded".into(),
            task_input: serde_json::Value::Null,
            span_count: 0,
            spans: vec![],
        };
        let saved = Saved::of(index.get(id).expect("held"));
        let at = log.push(&summary::summary_line(
            &summary::summarize(&trace, file),
            &saved,
        ));
        log.commit().expect("commit");
        index.evict(id, at);
        assert!(index.get(id).is_none());
    }

    /// An empty index with its summaries' log, as the view sets it up.
    fn evicting() -> (tempfile::TempDir, summary::Log, Index) {
        let dir = tempfile::tempdir().unwrap();
        let log = summary::Log::open(dir.path(), true, |_, _| {}).unwrap();
        let mut index = Index::default();
        index.set_saved_file(log.reader().unwrap());
        (dir, log, index)
    }

    #[test]
    fn evicted_rollouts_come_back_for_late_spans_whole() {
        let (dir, mut log, mut index) = evicting();
        let mut changes = Vec::new();
        index.observe(pos(1), 10, &summary(&[(1, Some("ro-a"))]), &mut changes);
        evict(&mut index, &mut log, "ro-a", "a.json");
        assert_eq!((index.len(), index.evicted()), (0, 1));
        let back = index.lookup("ro-a").expect("read back");
        assert_eq!(
            (back.records, back.file),
            (vec![pos(1)], Some("a.json".into()))
        );
        assert!(index.lookup("ro-zz").is_none());

        // An unnamed span of its trace brings it back, and joins it.
        changes.clear();
        index.observe(pos(2), 20, &summary(&[(1, None)]), &mut changes);
        assert_eq!(changes, vec![Change::Touched(Arc::from("ro-a"))]);
        let a = index.get("ro-a").expect("back in memory");
        assert_eq!(
            (a.records.clone(), a.first_received),
            (vec![pos(1), pos(2)], 10)
        );
        assert_eq!(index.evicted(), 0);

        // So does a span naming it, from another trace.
        evict(&mut index, &mut log, "ro-a", "a.json");
        index.observe(pos(3), 30, &summary(&[(9, Some("ro-a"))]), &mut changes);
        let a = index.get("ro-a").unwrap();
        assert_eq!(a.records, vec![pos(1), pos(2), pos(3)]);
        assert_eq!(a.traces, vec![[1; 16], [9; 16]]);

        // A replay after a restart observes records the line has already:
        // they are taken in log order, once.
        evict(&mut index, &mut log, "ro-a", "a.json");
        index.observe(pos(2), 20, &summary(&[(1, None)]), &mut changes);
        assert_eq!(index.get("ro-a").unwrap().records, vec![pos(1), pos(2)]);
        index.observe(pos(3), 30, &summary(&[(9, Some("ro-a"))]), &mut changes);
        assert_eq!(
            index.get("ro-a").unwrap().records,
            vec![pos(1), pos(2), pos(3)]
        );

        // An evicted trace-derived rollout is merged when its trace is named.
        index.observe(pos(4), 40, &summary(&[(5, None)]), &mut changes);
        let derived = derived_rollout_id(&[5; 16]);
        evict(&mut index, &mut log, &derived, "d.json");
        changes.clear();
        index.observe(pos(5), 50, &summary(&[(5, Some("ro-b"))]), &mut changes);
        assert!(changes.contains(&Change::Merged {
            gone: Arc::from(derived.as_str()),
            into: Arc::from("ro-b"),
            file: Some("d.json".into()),
        }));
        let b = index.get("ro-b").unwrap();
        assert_eq!(
            (b.records.clone(), b.first_received),
            (vec![pos(4), pos(5)], 40)
        );
        assert!(index.lookup(&derived).is_none());

        // At a restart, the lines say where every rollout is.
        drop(log);
        let mut again = Index::default();
        let log = summary::Log::open(dir.path(), true, |offset, line| {
            if let summary::Line::Summary { rollout_id, saved } = line {
                again.saved_at(&rollout_id, saved.trace_ids(), offset);
            }
        })
        .unwrap();
        again.set_saved_file(log.reader().unwrap());
        assert_eq!(again.lookup("ro-a").unwrap().records.len(), 3);
        again.observe(pos(6), 60, &summary(&[(9, None)]), &mut changes);
        assert_eq!(again.get("ro-a").unwrap().records.len(), 4);
    }

    #[test]
    fn a_new_trace_joins_the_evicted_rollout_of_its_derived_id() {
        let (_dir, mut log, mut index) = evicting();
        // Two traces that differ only before their last 12 hex digits.
        let (first, mut second) = ([1u8; 16], [1u8; 16]);
        second[0] = 2;
        let id = derived_rollout_id(&first);
        assert_eq!(id, derived_rollout_id(&second));
        let keys = |trace| RecordSummary {
            keys: vec![(trace, None)],
        };
        let mut changes = Vec::new();
        index.observe(pos(1), 10, &keys(first), &mut changes);
        evict(&mut index, &mut log, &id, "d.json");
        // As if it had stayed in memory: the second trace joins it, and its
        // file keeps its name (a fresh rollout would have lost the first
        // trace's spans from the file, or made a second file of the id).
        index.observe(pos(2), 20, &keys(second), &mut changes);
        let r = index.get(&id).expect("back in memory");
        assert_eq!(
            (&r.records, &r.traces, r.first_received, r.file.as_deref()),
            (
                &vec![pos(1), pos(2)],
                &vec![first, second],
                10,
                Some("d.json")
            )
        );
        assert_eq!(index.evicted(), 0);
    }

    #[test]
    fn traces_without_any_rollout_form_their_own() {
        let mut index = Index::default();
        let mut changes = Vec::new();
        index.observe(pos(1), 1, &summary(&[(1, None), (2, None)]), &mut changes);
        assert_eq!(index.len(), 2);
        let trace = [0x0fu8; 16];
        assert_eq!(derived_rollout_id(&trace), "ro-0f0f0f0f0f0f");
        assert_eq!(derived_attempt_id(&trace), "at-0f0f0f0f");
        assert!(fallback_attempt_id("ro-x").starts_with("at-"));
        assert_eq!(fallback_attempt_id("ro-x").len(), 11);
    }
}
