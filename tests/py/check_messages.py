"""Validate trace files with AGL and print, per rollout, what AGL's
TraceToMessages makes of its gen_ai spans (the seed exporter's logic: the
last span named gen_ai).

usage: check_messages.py TRACES_DIR  -> JSON {prompt: {"status", "messages", "n_gen_ai"}}
"""
import glob
import json
import os
import sys

from agentlightning.adapter.messages import TraceToMessages
from agentlightning.types import Span

out = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "rollout_*.json"))):
    with open(path) as f:
        doc = json.load(f)
    spans = [Span.model_validate(s) for s in doc["spans"]]
    gen_ai = [s for s in spans if s.name == "gen_ai"]
    messages = TraceToMessages().adapt(gen_ai[-1:]) if gen_ai else []
    key = (doc["task_input"] or {}).get("prompt", doc["rollout_id"])
    out[key] = {
        "status": doc["status"],
        "rollout_id": doc["rollout_id"],
        "attempt_id": doc["attempt_id"],
        "n_gen_ai": len(gen_ai),
        "messages": messages[0]["messages"] if messages else None,
        "span_names": sorted(s.name for s in spans),
    }
print(json.dumps(out))
