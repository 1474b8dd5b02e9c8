"""Read the LLM proxy's spans with AGL 0.3.0 itself.

usage: check_proxy_spans.py TRACES_DIR -> JSON {rollout_id: {...}} with, per
rollout, what AGL's TraceToMessages makes of the last `chat <model>` span (and
its tool-call children) and how many triplets TracerTraceToTriplet finds with
llm_call_match=r"^chat ".
"""
import glob
import json
import os
import sys

from agentlightning.adapter.messages import TraceToMessages
from agentlightning.adapter.triplet import TracerTraceToTriplet
from agentlightning.types import Span

out = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "rollout_*.json"))):
    with open(path) as f:
        doc = json.load(f)
    spans = [Span.model_validate(s) for s in doc["spans"]]
    calls = [s for s in spans if s.name.startswith("chat ")]
    last = calls[-1:]
    children = [s for s in spans if last and s.parent_id == last[0].span_id]
    adapted = TraceToMessages().adapt(last + children) if last else []
    triplets = TracerTraceToTriplet(llm_call_match=r"^chat ").adapt(spans)
    out[doc["rollout_id"]] = {
        "messages": adapted[0]["messages"] if adapted else None,
        "tools": adapted[0]["tools"] if adapted else None,
        "triplets": len(triplets),
        "response_ids": [t.metadata.get("response_id") for t in triplets],
    }
print(json.dumps(out, default=str))
