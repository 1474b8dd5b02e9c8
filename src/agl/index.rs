//! Which rollout each span belongs to, AGL's way.
//!
//! A span's rollout is its `agentlightning.rollout_id` (span attribute over
//! resource attribute). A span without one joins the rollout of the first span
//! of its trace that has one, even if that span arrives later; until then, and
//! for traces that never name a rollout, the trace forms a rollout of its own
//! whose ids are derived from the trace id. The index keeps, per rollout, only
//! the log positions of the records that hold its spans; the spans themselves
//! are read back from the log when a trace file is written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::span::rollout_id;
use crate::store::Pos;

pub type TraceId = [u8; 16];

/// What the index needs of one record: its (trace, explicit rollout) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSummary {
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

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[derive(Debug, Clone)]
pub struct Rollout {
    /// Records holding spans of this rollout, in log order.
    pub records: Vec<Pos>,
    /// Traces whose spans without a rollout id belong here.
    pub traces: Vec<TraceId>,
    /// Set for trace-derived rollouts.
    pub derived_from: Option<TraceId>,
    /// When its first record was received (Unix nanoseconds).
    pub first_received: u64,
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
    /// A trace-derived rollout was folded into a named one and no longer exists.
    Merged { gone: Arc<str>, into: Arc<str> },
}

#[derive(Default)]
pub struct Index {
    rollouts: HashMap<Arc<str>, Rollout>,
    traces: HashMap<TraceId, TraceLink>,
}

fn merge_sorted(a: &mut Vec<Pos>, b: Vec<Pos>) {
    a.extend(b);
    a.sort_unstable();
    a.dedup();
}

impl Index {
    pub fn get(&self, id: &str) -> Option<&Rollout> {
        self.rollouts.get(id)
    }

    pub fn len(&self) -> usize {
        self.rollouts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rollouts.is_empty()
    }

    fn rollout_mut(&mut self, id: &Arc<str>, received: u64) -> &mut Rollout {
        self.rollouts.entry(id.clone()).or_insert_with(|| Rollout {
            records: Vec::new(),
            traces: Vec::new(),
            derived_from: None,
            first_received: received,
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
                if let Some(gone) = gone {
                    into.first_received = into.first_received.min(gone.first_received);
                    merge_sorted(&mut into.records, gone.records);
                }
                changes.push(Change::Merged {
                    gone: derived,
                    into: named.clone(),
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
            into: Arc::from("ro-aaaaaaaaaaaa")
        }));
        // Later unnamed spans of the trace go to the named rollout too.
        index.observe(pos(3), 30, &summary(&[(7, None)]), &mut changes);
        assert_eq!(index.get("ro-aaaaaaaaaaaa").unwrap().records.len(), 3);
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
