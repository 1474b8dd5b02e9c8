"""Read rewards from oclagl trace files the way agentlightning 0.3.0 does.

usage: check_reward.py TRACE_FILE [TRACE_FILE ...]

Prints one JSON object: rollout id -> {"final": find_final_reward(spans),
"rewards": [[name, value], ...] of every reward span (get_rewards_from_span),
"reward_parents": parent ids of those spans}. Every span goes through
Span.model_validate first, so a reward span AGL cannot read fails here.
"""
import json
import sys

from agentlightning.emitter import find_final_reward, get_rewards_from_span
from agentlightning.types import Span

out = {}
for path in sys.argv[1:]:
    with open(path) as f:
        doc = json.load(f)
    spans = [Span.model_validate(raw) for raw in doc["spans"]]
    rewards, parents = [], []
    for span in spans:
        found = get_rewards_from_span(span)
        if found:
            rewards.append([[r.name, r.value] for r in found])
            parents.append(span.parent_id)
    out[doc["rollout_id"]] = {
        "final": find_final_reward(spans),
        "rewards": rewards,
        "reward_parents": parents,
    }
print(json.dumps(out))
