"""Check trace files written by oclagl against AGL's own model and an oracle.

usage: check_agl.py TRACES_DIR MANIFEST [MANIFEST ...]

Every trace file must have exactly the seed's shape and every span must pass
agentlightning 0.3.0's `Span.model_validate`. Every span of each manifest (AGL's
own conversion of the spans the SDK sent) must be found with the same ids,
times, attributes, events, links, status and resource attributes; sequence ids
count 1..n per attempt; rollout statuses are as expected.
"""
import glob
import json
import math
import os
import sys
from collections import defaultdict

from agentlightning.types import Span

traces_dir, manifests = sys.argv[1], sys.argv[2:]
found = {}
files = sorted(glob.glob(os.path.join(traces_dir, "rollout_*.json")))
assert files, "no trace files"
rollout_status = {}
for path in files:
    with open(path) as f:
        doc = json.load(f)
    assert list(doc) == ["rollout_id", "attempt_id", "status", "task_input", "span_count", "spans"], (path, list(doc))
    assert doc["attempt_id"] and doc["attempt_id"].startswith("at-"), path
    assert doc["span_count"] == len(doc["spans"]), path
    assert os.path.basename(path).startswith(f"rollout_{doc['rollout_id']}_"), path
    rollout_status[doc["rollout_id"]] = doc["status"]
    seq = defaultdict(list)
    for raw in doc["spans"]:
        span = Span.model_validate(raw)
        assert span.rollout_id == doc["rollout_id"], path
        seq[span.attempt_id].append(span.sequence_id)
        found[span.span_id] = (raw, span, doc)
    for attempt, ids in seq.items():
        assert sorted(ids) == list(range(1, len(ids) + 1)), (path, attempt, ids)

def close(a, b):
    if a is None or b is None:
        return a == b
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-6)

checked = 0
for manifest in manifests:
    with open(manifest) as f:
        m = json.load(f)
    for want in m["spans"]:
        assert want["span_id"] in found, f"span {want['name']} {want['span_id']} missing"
        raw, got, doc = found[want["span_id"]]
        for key in ("rollout_id", "attempt_id", "trace_id", "parent_id", "name", "attributes"):
            assert raw[key] == want[key], (want["name"], key, raw[key], want[key])
        assert raw["status"]["status_code"] == want["status"]["status_code"], want["name"]
        assert raw["status"]["description"] == want["status"]["description"], want["name"]
        assert close(raw["start_time"], want["start_time"]) and close(raw["end_time"], want["end_time"]), want["name"]
        assert len(raw["events"]) == len(want["events"]), want["name"]
        for e, w in zip(raw["events"], want["events"]):
            assert e["name"] == w["name"] and e["attributes"] == w["attributes"] and close(e["timestamp"], w["timestamp"])
        assert [l["context"]["span_id"] for l in raw["links"]] == [l["context"]["span_id"] for l in want["links"]]
        assert [l["attributes"] for l in raw["links"]] == [l["attributes"] for l in want["links"]]
        assert raw["context"]["trace_id"] == want["context"]["trace_id"]
        assert raw["context"]["span_id"] == want["context"]["span_id"]
        if want["parent"]:
            assert raw["parent"]["span_id"] == want["parent"]["span_id"]
        else:
            assert raw["parent"] is None
        for k, v in want["resource"]["attributes"].items():
            assert raw["resource"]["attributes"].get(k) == v, (k, raw["resource"]["attributes"].get(k), v)
        checked += 1
    for rollout, status in m["statuses"].items():
        assert rollout_status.get(rollout) == status, (rollout, rollout_status.get(rollout), status)
print(f"ok: {len(files)} files, {len(found)} spans validated, {checked} compared with AGL's conversion")
