//! AGL trace files written by hand, for tests that read them (export-sft,
//! show): a root `oclagl.rollout` span and its children.

use std::path::Path;

use serde_json::{json, Value};

/// A span of a trace file (AGL `Span.model_dump()` shape).
pub fn agl_span(n: u64, parent: Option<u64>, name: &str, start: f64, attrs: Value) -> Value {
    let trace = "b8a6b7ce4da026f9dd81d8d248a40d85";
    let id = format!("{n:016x}");
    json!({
        "rollout_id": "", "attempt_id": "", "sequence_id": n, "trace_id": trace, "span_id": id,
        "parent_id": parent.map(|p| format!("{p:016x}")), "name": name,
        "status": {"status_code": "OK", "description": null}, "attributes": attrs,
        "events": [], "links": [], "start_time": start, "end_time": start + 1.0,
        "context": {"trace_id": trace, "span_id": id, "is_remote": false, "trace_state": {}},
        "parent": null, "resource": {"attributes": {}, "schema_url": ""}
    })
}

/// Writes `traces/rollout_<id>_<ts>.json` with a root span (session key,
/// start time) followed by `spans` (children of the root).
pub fn write_rollout(
    traces: &Path,
    id: &str,
    status: &str,
    session: &str,
    start: f64,
    spans: Vec<(&str, Value)>,
) {
    let mut all = vec![agl_span(
        1,
        None,
        "oclagl.rollout",
        start,
        json!({"oclagl.session_key": session}),
    )];
    for (i, (name, attrs)) in spans.into_iter().enumerate() {
        all.push(agl_span(
            i as u64 + 2,
            Some(1),
            name,
            start + 1.0 + i as f64,
            attrs,
        ));
    }
    let file = json!({"rollout_id": id, "attempt_id": "at-00000001", "status": status,
                      "task_input": null, "span_count": all.len(), "spans": all});
    std::fs::create_dir_all(traces).unwrap();
    std::fs::write(
        traces.join(format!("rollout_{id}_20260212T160713Z.json")),
        serde_json::to_vec_pretty(&file).unwrap(),
    )
    .unwrap();
}

/// An AGL-convention LLM span: the user says `text`, the assistant answers.
pub fn qa(text: &str, model: &str) -> Value {
    json!({"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": text,
           "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": format!("re: {text}"),
           "gen_ai.request.model": model, "gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 3})
}
