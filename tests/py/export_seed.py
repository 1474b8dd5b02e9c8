"""The seed's SFT export, run with agentlightning==0.3.0, and the corpus it is
compared on.

    export_seed.py corpus <traces_dir>            writes the trace files; prints a JSON manifest
    export_seed.py reference <traces_dir> <out>   the seed's pipeline; prints {"rows", "skipped"}

The reference is the seed's `export_sft_dataset.py` logic: for every
`rollout_*.json` (sorted by name), keep the LAST span named `gen_ai`, map the
OpenClaw transcript role `toolResult` to `tool` (with the call id
`call_placeholder` when it names none), run AGL's own
`TraceToMessages().adapt([span])`, prepend a system message to a
conversation that has none (the stripped text of the file
OPENCLAW_SYSTEM_PROMPT_PATH names, an empty file counting as none, else the
seed's built-in text), and write `{"messages": ...}` plus `"tools"` when
non-empty, one line per result. A file AGL cannot convert (an exception
anywhere, including JSON encoding) is skipped and named.
"""

import glob
import json
import os
import re
import sys

ROLE_KEY = re.compile(r"gen_ai\.prompt\.(\d+)\.role")
DEFAULT_SYSTEM = ("You are a personal assistant running inside OpenClaw with access to tools. "
                  "Follow the user's instructions.")


def system_text():
    path = os.environ.get("OPENCLAW_SYSTEM_PROMPT_PATH")
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
        if text:
            return text
    return DEFAULT_SYSTEM


def seed_attributes(attrs):
    """toolResult -> tool, with a placeholder call id when there is none."""
    out = dict(attrs)
    for k, v in attrs.items():
        m = ROLE_KEY.fullmatch(k)
        if m and v == "toolResult":
            out[k] = "tool"
            out.setdefault(f"gen_ai.prompt.{m.group(1)}.tool_call_id", "call_placeholder")
    return out


def reference(traces_dir, out_path):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from agentlightning.adapter.messages import TraceToMessages
    from agentlightning.types import Span

    rows, skipped, system = 0, [], system_text()
    with open(out_path, "w", encoding="utf-8") as out:
        for path in sorted(glob.glob(os.path.join(traces_dir, "rollout_*.json"))):
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
                gen_ai = [s for s in data.get("spans", []) if s.get("name") == "gen_ai"]
                if not gen_ai:
                    continue
                span = dict(gen_ai[-1])
                span["attributes"] = seed_attributes(span["attributes"])
                lines = []
                for result in TraceToMessages().adapt([Span.model_validate(span)]):
                    messages = result["messages"]
                    if not any(m.get("role") == "system" for m in messages):
                        messages = [{"role": "system", "content": system}] + messages
                    row = {"messages": messages}
                    if result["tools"]:
                        row["tools"] = result["tools"]
                    lines.append(json.dumps(row, ensure_ascii=False))
            except Exception as e:  # the seed would have stopped; we name the file and go on
                skipped.append(os.path.basename(path))
                print(f"skipped {path}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
                continue
            for line in lines:
                out.write(line + "\n")
                rows += 1
    print(json.dumps({"rows": rows, "skipped": skipped}))


# ---------------------------------------------------------------- corpus

TRACE = "b8a6b7ce4da026f9dd81d8d248a40d85"


def span(n, name, attrs, parent="1000000000000000", start=1770912433.0):
    span_id = f"{n:016x}"
    return {
        "rollout_id": "", "attempt_id": "", "sequence_id": n,
        "trace_id": TRACE, "span_id": span_id, "parent_id": parent,
        "name": name, "status": {"status_code": "OK", "description": None},
        "attributes": attrs, "events": [], "links": [],
        "start_time": start + n, "end_time": start + n + 0.5,
        "context": {"trace_id": TRACE, "span_id": span_id, "is_remote": False, "trace_state": {}},
        "parent": None if parent is None else
        {"trace_id": TRACE, "span_id": parent, "is_remote": False, "trace_state": {}},
        "resource": {"attributes": {"service.name": "oclagl"}, "schema_url": ""},
    }


def prompt(messages, completion=None, extra=None):
    """gen_ai.prompt.<i>.* (and gen_ai.completion.0.*) for a list of dicts."""
    attrs = {}
    for i, m in enumerate(messages):
        for k, v in m.items():
            if k == "tool_calls":
                for j, call in enumerate(v):
                    for ck, cv in call.items():
                        attrs[f"gen_ai.prompt.{i}.tool_calls.{j}.{ck}"] = cv
            else:
                attrs[f"gen_ai.prompt.{i}.{k}"] = v
    if completion is not None:
        for k, v in completion.items():
            attrs[f"gen_ai.completion.0.{k}"] = v
    attrs.update({"gen_ai.request.model": "claude-sonnet", "gen_ai.response.model": "claude-sonnet"})
    attrs.update(extra or {})
    return attrs


def turns(history, answers):
    """One gen_ai span per assistant turn, as the seed's gateway agent wrote them."""
    spans, so_far = [], list(history)
    for answer in answers:
        spans.append(prompt(so_far, {"role": "assistant", "content": answer, "finish_reason": "stop"}))
        so_far = so_far + [{"role": "assistant", "content": answer}, {"role": "user", "content": "and then?"}]
    return spans


SYSTEM = {"role": "system", "content": "You are a helpful agent."}


def real_length(with_system):
    """A session as long as OpenClaw's: a 10-20 kB system prompt, tool results
    of several kB, up to 20 messages, one span per model call."""
    system = {"role": "system", "content": "\n".join(
        f"## Rule {i}: when the user asks about topic {i}, answer with care — «{i}» ✓" for i in range(260))}
    history = ([system] if with_system else []) + [{"role": "user", "content": "Tidy my notes folder."}]
    spans = []
    for turn in range(6):
        call = {"id": f"call_{turn}", "name": "read_file", "arguments": json.dumps({"path": f"notes/{turn}.md"})}
        spans.append(prompt(history, {"role": "assistant", "content": "", "finish_reason": "tool_calls"}))
        listing = "\n".join(f"- [{turn}.{j}] note line with tabs\tand \"quotes\" and ünïcode" for j in range(90))
        history = history + [{"role": "assistant", "tool_calls": [call]},
                             {"role": "toolResult", "content": listing, **({"tool_call_id": call["id"]} if turn % 2 else {})},
                             {"role": "user", "content": f"Next ({turn})."}]
    spans.append(prompt(history[:20], {"role": "assistant", "content": "All tidy.", "finish_reason": "stop"}))
    return spans
UNICODE = "Grüße, 世界! 🎉 مرحبا — naïve café; tab\there \"quoted\" back\\slash\nnew line \u0007 \u2028"

CASES = [
    # (name, spans as (name, attrs), expectation) — expectation: "row", "none" or "skip"
    ("single_turn", [("gen_ai", prompt([SYSTEM, {"role": "user", "content": "What is 2+2?"}],
                                       {"role": "assistant", "content": "4"}))], "row"),
    ("multi_turn", [("gen_ai", a) for a in turns([SYSTEM, {"role": "user", "content": "Tell me a story."}],
                                                 ["Once upon a time…", "They lived happily.", "The end."])]
     + [("agentlightning.message", {"agentlightning.message.body": "The end."})], "row"),
    ("tool_result_seed", [("gen_ai", prompt(
        [SYSTEM, {"role": "user", "content": "List files"},
         {"role": "assistant", "content": "[tool call] ls {\"path\": \".\"}"},
         {"role": "toolResult", "content": "a.txt\nb.txt", "tool_call_id": "call_3"},
         {"role": "user", "content": "Which is bigger?"}],
        {"role": "assistant", "content": "b.txt"}))], "row"),
    ("tool_calls_structured", [("gen_ai", prompt(
        [{"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "tool_calls": [
             {"id": "call_abc", "name": "weather", "arguments": "{\"city\": \"Paris\"}"},
             {"id": "call_def", "name": "time", "arguments": "{}"}]},
         {"role": "tool", "content": "18°C", "tool_call_id": "call_abc"},
         {"role": "tool", "content": "14:00", "tool_call_id": "call_def"}],
        {"role": "assistant", "content": "It is 18°C at 14:00."}))], "row"),
    ("functions", [("gen_ai", prompt(
        [{"role": "user", "content": "hi"}], {"role": "assistant", "content": "hello"},
        {"gen_ai.request.functions.0.name": "weather",
         "gen_ai.request.functions.0.description": "Current weather",
         "gen_ai.request.functions.0.parameters": "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}",
         "gen_ai.request.functions.1.name": "noop",
         "gen_ai.request.functions.1.parameters.type": "object"}))], "row"),
    ("unicode", [("gen_ai", prompt([{"role": "system", "content": UNICODE, "name": "ignored"},
                                    {"role": "developer", "content": "ℝ∀∃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"},
                                    {"role": "user", "content": "日本語で答えて"}],
                                   {"role": "assistant", "content": "はい、🍣 です。"}))], "row"),
    ("empty_then_full", [("gen_ai", {}),
                         ("gen_ai", prompt([{"role": "user", "content": "q"}], {"role": "assistant", "content": "a"}))],
     "row"),
    ("only_empty_span", [("gen_ai", {})], "none"),
    ("no_gen_ai", [("agentlightning.message", {"agentlightning.message.body": "hi"}),
                   ("agentlightning.annotation", {"agentlightning.reward.0.name": "primary",
                                                  "agentlightning.reward.0.value": 1.0})], "none"),
    ("defaults", [("gen_ai", prompt([{"role": "user"}, {"role": "assistant", "content": "earlier"}],
                                    {"role": "assistant", "finish_reason": "length"}))], "row"),
    ("non_assistant_completion", [("gen_ai", prompt([{"role": "user", "content": "x"}],
                                                    {"role": "user", "content": "dropped"}))], "row"),
    ("sparse_and_ten_plus", [("gen_ai", {
        **{f"gen_ai.prompt.{i}.role": ("user" if i % 2 == 0 else "assistant") for i in [0, 1, 2, 5, 9, 10, 11]},
        **{f"gen_ai.prompt.{i}.content": f"m{i}" for i in [0, 1, 2, 5, 9, 10, 11]},
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "done"})], "row"),
    ("long", [("gen_ai", prompt([SYSTEM] + [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 20}
                                            for i in range(150)], {"role": "assistant", "content": "fin"}))], "row"),
    ("structured_arguments", [("gen_ai", {
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "go",
        "gen_ai.prompt.1.role": "assistant", "gen_ai.prompt.1.tool_calls.0.id": "c1",
        "gen_ai.prompt.1.tool_calls.0.name": "move", "gen_ai.prompt.1.tool_calls.0.arguments.x": 1,
        "gen_ai.prompt.1.tool_calls.0.arguments.y": "two",
        "gen_ai.prompt.2.role": "tool", "gen_ai.prompt.2.content": "moved", "gen_ai.prompt.2.tool_call_id": "c1",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "ok"})], "row"),
    ("real_length_with_system", [("gen_ai", a) for a in real_length(with_system=True)], "row"),
    ("real_length_without_system", [("gen_ai", a) for a in real_length(with_system=False)], "row"),
    ("duplicate_a", [("gen_ai", prompt([{"role": "user", "content": "same"}], {"role": "assistant", "content": "same"}))], "row"),
    ("duplicate_b", [("gen_ai", prompt([{"role": "user", "content": "same"}], {"role": "assistant", "content": "same"}))], "row"),
    ("malformed_no_role", [("gen_ai", {"gen_ai.prompt.0.content": "who am I"})], "skip"),
    ("malformed_unknown_role", [("gen_ai", prompt([{"role": "wizard", "content": "abracadabra"}]))], "skip"),
    ("tool_result_without_id", [("gen_ai", prompt([{"role": "user", "content": "ls"},
                                                   {"role": "toolResult", "content": "r"}],
                                                  {"role": "assistant", "content": "a"}))], "row"),
    ("malformed_tool_without_id", [("gen_ai", prompt([{"role": "tool", "content": "r"}],
                                                     {"role": "assistant", "content": "a"}))], "skip"),
    ("malformed_int_content", [("gen_ai", prompt([{"role": "user", "content": 42}]))], "skip"),
    ("malformed_list_content", [("gen_ai", prompt([{"role": "user", "content": ["a", "b"]}]))], "skip"),
    ("malformed_function_without_parameters", [("gen_ai", prompt(
        [{"role": "user", "content": "x"}], None, {"gen_ai.request.functions.0.name": "f"}))], "skip"),
    ("malformed_not_indexed", [("gen_ai", {"gen_ai.prompt.text": "hello"})], "skip"),
    ("malformed_last_after_good", [("gen_ai", prompt([{"role": "user", "content": "fine"}], {"role": "assistant", "content": "ok"})),
                                   ("gen_ai", {"gen_ai.prompt.0.content": "no role"})], "skip"),
]


def corpus(traces_dir):
    os.makedirs(traces_dir, exist_ok=True)
    expect = {"row": [], "none": [], "skip": []}
    for n, (case, spans, expectation) in enumerate(CASES):
        rollout_id = f"ro-{n:04d}{case[:8].replace('_', '')}"
        file_spans = [span(1, "oclagl.rollout", {"oclagl.session_key": f"agent:main:{case}"}, parent=None)]
        file_spans += [span(i + 2, name, attrs) for i, (name, attrs) in enumerate(spans)]
        doc = {"rollout_id": rollout_id, "attempt_id": "at-00000001", "status": "succeeded",
               "task_input": {"prompt": case}, "span_count": len(file_spans), "spans": file_spans}
        name = f"rollout_{rollout_id}_20260212T16{n // 60:02d}{n % 60:02d}Z.json"
        with open(os.path.join(traces_dir, name), "w", encoding="utf-8") as f:
            # Half the files escape non-ASCII, half write it raw.
            json.dump(doc, f, indent=2, ensure_ascii=(n % 2 == 0))
        expect[expectation].append(name)
    broken = {
        "rollout_ro-9001truncated_20260212T170000Z.json": lambda: json.dumps(
            {"rollout_id": "ro-9001", "spans": [span(2, "gen_ai", prompt([{"role": "user", "content": "cut"}]))]},
            indent=2)[:300],
        "rollout_ro-9002empty_20260212T170001Z.json": lambda: "",
        "rollout_ro-9003array_20260212T170002Z.json": lambda: "[1, 2, 3]",
        "rollout_ro-9004spansobject_20260212T170003Z.json": lambda: json.dumps({"spans": {"name": "gen_ai"}}),
        "rollout_ro-9005garbage_20260212T170004Z.json": lambda: "\x00\x01 not json at all",
    }
    for name, content in broken.items():
        with open(os.path.join(traces_dir, name), "w", encoding="utf-8") as f:
            f.write(content())
        expect["skip"].append(name)
    print(json.dumps(expect))


if __name__ == "__main__":
    if sys.argv[1:2] == ["corpus"]:
        corpus(sys.argv[2])
    elif sys.argv[1:2] == ["reference"]:
        reference(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
