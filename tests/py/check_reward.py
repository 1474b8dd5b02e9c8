"""Read rewards from oclagl trace files the way agentlightning 0.3.0 does.

usage: check_reward.py TRACE_FILE [TRACE_FILE ...]

Prints one JSON object: rollout id -> {"final": find_final_reward(spans),
"rewards": [[name, value], ...] of every reward span (get_rewards_from_span),
"reward_parents": parent ids of those spans, "triplet_rewards": the rewards
TracerTraceToTriplet gives the rollout's LLM calls}. Every span goes through
Span.model_validate first, so a reward span AGL cannot read fails here. For
the triplet adapter, spans carrying gen_ai.prompt.* are presented as it
expects LLM calls (named openai.chat.completion, with token ids), since
oclagl records no token ids.
"""
import json
import sys

from agentlightning.adapter.triplet import TracerTraceToTriplet
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
    as_llm_calls = []
    for raw in doc["spans"]:
        if any(k.startswith("gen_ai.prompt.") for k in raw["attributes"]):
            raw = dict(raw, name="openai.chat.completion")
            raw["attributes"] = dict(raw["attributes"], prompt_token_ids=[1, 2], response_token_ids=[3])
        as_llm_calls.append(Span.model_validate(raw))
    triplets = TracerTraceToTriplet().adapt(as_llm_calls)
    out[doc["rollout_id"]] = {
        "final": find_final_reward(spans),
        "rewards": rewards,
        "reward_parents": parents,
        "triplet_rewards": [t.reward for t in triplets],
    }
print(json.dumps(out))
