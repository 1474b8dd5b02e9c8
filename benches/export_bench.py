"""Export benchmark driver (run by benches/run-export.sh).

Generates seed-shaped trace files (one `gen_ai` span per assistant turn whose
prompt repeats the conversation so far, tool results, unicode, a root span
with the session key, a reply and a reward span) under target/bench-export/,
then measures:

  * `oclagl export-sft` over all of them (default ~1 GB), pinned to one CPU:
    wall time, MB/s, peak RSS, with redaction (the default) and with
    `--no-redact`, in alternating runs;
  * the same on a smaller code-shaped set (paths, hashes, URLs, JSON, `key =`
    and `token_count=` in the text), where every message gets past the
    redactor's prose filter to its keyword and pattern passes: its worst case;
  * the seed's pipeline (AGL `TraceToMessages` in Python, tests/py/export_seed.py)
    and oclagl on a ~10 MB slice of the same files: MB/s of both, the ratio,
    and that both wrote the same rows.

Environment: BENCH_EXPORT_GB (default 1), BENCH_CODE_GB (0.3; 0 skips the
code-shaped set), BENCH_SLICE_MB (10), BENCH_RUNS (3), BENCH_CPU (the CPU every
measured process is pinned to, 1), OCLAGL_BIN (target/release/oclagl),
AGL_PYTHON (interpreter with agentlightning).
"""

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
WORK = os.path.join(TARGET, "bench-export")
GEN_VERSION = "1"
CPU = int(os.environ.get("BENCH_CPU", "1"))

WORDS = ("the agent reads files plans edits runs tests and reports results to the user "
         "while keeping a log of every step résumé naïve café 東京 データ 🚀 ✅ Δx ≤ ε").split()
# No credential, but tokens a credential could hide in, and the keywords that
# make the redactor run its patterns (key, token, auth, ://), never as
# `name = value` (so nothing in it is redacted).
CODE_WORDS = ("the agent reads src/export/redact.rs:120:5 and runs cargo build --release -p oclagl "
              "let k = key_of(&id)?; token_count=4096 Authorization: header "
              "3f786850e387550fdab836ed7e6dc881de23001b https://github.com/org/repo/pull/42 "
              '{"path": "/home/ada/project/Cargo.toml", "size": 18231} '
              "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 "
              "résumé 東京 🚀 ✅ Δx ≤ ε").split()


def text(rng, n_words, words=WORDS):
    return " ".join(rng.choice(words) for _ in range(n_words))


def span(n, name, attrs, parent, start):
    trace = "b8a6b7ce4da026f9dd81d8d248a40d85"
    sid = f"{n:016x}"
    return {
        "rollout_id": "", "attempt_id": "", "sequence_id": n, "trace_id": trace, "span_id": sid,
        "parent_id": parent, "name": name, "status": {"status_code": "OK", "description": None},
        "attributes": attrs, "events": [], "links": [], "start_time": start + n, "end_time": start + n + 0.5,
        "context": {"trace_id": trace, "span_id": sid, "is_remote": False, "trace_state": {}},
        "parent": None if parent is None else {"trace_id": trace, "span_id": parent, "is_remote": False, "trace_state": {}},
        "resource": {"attributes": {"service.name": "oclagl", "agentlightning.rollout_id": ""}, "schema_url": ""},
    }


def rollout(rng, i, words=WORDS):
    rid = f"ro-{i:012x}"
    start = 1_770_000_000.0 + i * 60
    history = [{"role": "system", "content": text(rng, 300, words)},
               {"role": "user", "content": text(rng, rng.randint(20, 200), words)}]
    spans = [span(1, "oclagl.rollout", {"oclagl.session_key": f"agent:main:s{i % 97}",
                                        "oclagl.task_input": json.dumps({"prompt": history[1]["content"]})},
                  None, start)]
    n = 2
    answer = ""
    for _turn in range(rng.randint(1, 10)):
        answer = text(rng, rng.randint(30, 400), words)
        attrs = {}
        for k, m in enumerate(history):
            attrs[f"gen_ai.prompt.{k}.role"] = m["role"]
            attrs[f"gen_ai.prompt.{k}.content"] = m["content"]
            if m["role"] == "toolResult":
                attrs[f"gen_ai.prompt.{k}.tool_call_id"] = m["tool_call_id"]
        attrs.update({"gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": answer,
                      "gen_ai.completion.0.finish_reason": "stop", "gen_ai.request.model": "claude-sonnet-4",
                      "gen_ai.response.model": "claude-sonnet-4", "gen_ai.usage.prompt_tokens": rng.randint(500, 9000),
                      "gen_ai.usage.completion_tokens": rng.randint(20, 900)})
        spans.append(span(n, "gen_ai", attrs, "0000000000000001", start))
        n += 1
        history.append({"role": "assistant", "content": answer})
        if rng.random() < 0.5:
            history.append({"role": "toolResult", "content": text(rng, rng.randint(50, 800), words),
                            "tool_call_id": f"call_{len(history)}"})
        history.append({"role": "user", "content": text(rng, rng.randint(5, 80), words)})
    spans.append(span(n, "agentlightning.message", {"agentlightning.message.body": answer}, "0000000000000001", start))
    spans.append(span(n + 1, "agentlightning.annotation", {"agentlightning.reward.0.name": "primary",
                                                          "agentlightning.reward.0.value": round(rng.random(), 3)},
                      "0000000000000001", start))
    doc = {"rollout_id": rid, "attempt_id": "at-00000001", "status": "succeeded",
           "task_input": {"prompt": history[1]["content"]}, "span_count": len(spans), "spans": spans}
    return f"rollout_{rid}_20260212T160713Z.json", json.dumps(doc, indent=2, ensure_ascii=False)


def generate(traces, goal_bytes, words=WORDS, tag=""):
    marker = os.path.join(WORK, f"generated-{GEN_VERSION}{tag}-{goal_bytes}")
    if os.path.exists(marker):
        return
    shutil.rmtree(traces, ignore_errors=True)
    os.makedirs(traces)
    rng = random.Random(42)
    total, i, t0 = 0, 0, time.time()
    while total < goal_bytes:
        name, body = rollout(rng, i, words)
        data = body.encode()
        with open(os.path.join(traces, name), "wb") as f:
            f.write(data)
        total += len(data)
        i += 1
    print(f"generated {i} trace files, {total / 1e6:.0f} MB, in {time.time() - t0:.0f} s", flush=True)
    open(marker, "w").close()


def run_measured(cmd, cwd=None, env=None):
    """Runs `cmd` on CPU `CPU`; returns (seconds, peak RSS in MiB from wait4, stdout, stderr)."""
    with open(os.path.join(WORK, "stdout"), "w+b") as out, open(os.path.join(WORK, "stderr"), "w+b") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err,
                             preexec_fn=lambda: os.sched_setaffinity(0, {CPU}))
        _, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{cmd} failed ({code}):\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout, stderr


def folder_bytes(d):
    return sum(e.stat().st_size for e in os.scandir(d) if e.is_file())


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def on_and_off(oclagl, cwd, runs):
    """`runs` alternating runs of export-sft with redaction (the default) and
    with --no-redact; returns the seconds, peak RSS and last stderr of each,
    keyed "on" and "off"."""
    times, rss, last = {"on": [], "off": []}, {"on": [], "off": []}, {}
    for _ in range(runs):
        for key, extra in (("on", []), ("off", ["--no-redact"])):
            s, peak, _, err = run_measured([oclagl, "export-sft", *extra], cwd=cwd)
            times[key].append(s)
            rss[key].append(peak)
            last[key] = err
    return times, rss, last


def describe(label, times, rss, total):
    med = statistics.median(times)
    return (f"{label}: median {med:.2f} s (best {min(times):.2f} s of {len(times)}) "
            f"= {total / 1e6 / med:.0f} MB/s, peak RSS {max(rss):.0f} MiB")


def main():
    gb = float(os.environ.get("BENCH_EXPORT_GB", "1"))
    code_gb = float(os.environ.get("BENCH_CODE_GB", "0.3"))
    slice_mb = float(os.environ.get("BENCH_SLICE_MB", "10"))
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    oclagl = os.path.abspath(os.environ.get("OCLAGL_BIN", os.path.join(TARGET, "release", "oclagl")))
    agl_python = os.environ.get("AGL_PYTHON", sys.executable)

    full = os.path.join(WORK, "full")
    traces = os.path.join(full, "traces")
    os.makedirs(full, exist_ok=True)
    generate(traces, int(gb * 1e9))
    total = folder_bytes(traces)
    files = sorted(os.listdir(traces))

    # The whole set, one core, warm page cache (best and median of `runs`),
    # with and without redaction in alternating runs.
    times, rss, last = on_and_off(oclagl, full, runs)
    summary = last["on"].strip().splitlines()[-1]
    summary_off = last["off"].strip().splitlines()[-1]
    s_opt, peak_opt, _, _ = run_measured(
        [oclagl, "export-sft", "--format", "openai", "--dedupe", "--split", "0.9", "--min-reward", "0.2",
         "--out", "split", "--stats"], cwd=full)

    # The code-shaped set: every message gets past the prose filter.
    code_lines = []
    if code_gb > 0:
        code = os.path.join(WORK, "code")
        code_traces = os.path.join(code, "traces")
        os.makedirs(code, exist_ok=True)
        generate(code_traces, int(code_gb * 1e9), CODE_WORDS, "-code2")
        code_total = folder_bytes(code_traces)
        c_times, c_rss, c_last = on_and_off(oclagl, code, runs)
        _, _, c_stats, _ = run_measured([oclagl, "export-sft", "--stats", "--out", "stats.jsonl"], cwd=code)
        redacted = [l.strip() for l in c_stats.splitlines() if l.startswith("redacted")]
        code_lines = [
            f"code-shaped set: {len(os.listdir(code_traces))} trace files, {code_total / 1e6:.0f} MB "
            f"(every message holds paths, hashes, URLs, `key_of(`, `token_count=`)",
            "  " + describe("oclagl export-sft (redaction on)", c_times["on"], c_rss["on"], code_total),
            "  " + describe("oclagl export-sft --no-redact", c_times["off"], c_rss["off"], code_total),
            f"  redaction costs {statistics.median(c_times['on']) / statistics.median(c_times['off']) - 1:+.0%} "
            f"of the time; {redacted[0] if redacted else 'no redacted line in --stats'}",
        ]

    # The slice: the first files (in name order) up to slice_mb, copied.
    sl = os.path.join(WORK, "slice")
    shutil.rmtree(sl, ignore_errors=True)
    os.makedirs(os.path.join(sl, "traces"))
    size = 0
    for name in files:
        if size >= slice_mb * 1e6:
            break
        shutil.copyfile(os.path.join(traces, name), os.path.join(sl, "traces", name))
        size += os.path.getsize(os.path.join(traces, name))
    s_slice, peak_slice, _, _ = run_measured([oclagl, "export-sft"], cwd=sl)
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    seed_script = os.path.join(ROOT, "tests", "py", "export_seed.py")
    s_py, peak_py, out_py, _ = run_measured(
        [agl_python, seed_script, "reference", os.path.join(sl, "traces"), os.path.join(sl, "seed.jsonl")],
        env=env)
    # Python's start-up (importing agentlightning) is not export work: time it alone and take it off.
    s_import, _, _, _ = run_measured(
        [agl_python, "-c", "import agentlightning.adapter.messages, agentlightning.types"], env=env)
    same = rows(os.path.join(sl, "seed.jsonl")) == rows(os.path.join(sl, "sft_dataset.jsonl"))

    mbps = total / 1e6 / statistics.median(times["on"])
    py_mbps = size / 1e6 / max(s_py - s_import, 1e-9)
    py_e2e = size / 1e6 / s_py
    slice_mbps = size / 1e6 / s_slice
    lines = [
        f"input: {len(files)} trace files, {total / 1e6:.0f} MB (seed-shaped, pretty-printed); "
        f"one CPU (sched_setaffinity to CPU {CPU})",
        describe("oclagl export-sft, all files (redaction on, the default)", times["on"], rss["on"], total),
        f"  {summary}",
        describe("oclagl export-sft --no-redact, all files", times["off"], rss["off"], total),
        f"  {summary_off}",
        f"  redaction costs {statistics.median(times['on']) / statistics.median(times['off']) - 1:+.0%} of the time",
        f"oclagl export-sft --format openai --dedupe --split 0.9 --min-reward 0.2 --stats: {s_opt:.2f} s "
        f"= {total / 1e6 / s_opt:.0f} MB/s, peak RSS {peak_opt:.0f} MiB",
        *code_lines,
        f"slice: {size / 1e6:.1f} MB (first files by name)",
        f"  oclagl export-sft: {s_slice:.3f} s = {slice_mbps:.0f} MB/s, peak RSS {peak_slice:.0f} MiB",
        f"  seed pipeline (AGL TraceToMessages, Python): {s_py:.1f} s = {py_e2e:.2f} MB/s end to end; "
        f"without the {s_import:.1f} s of importing agentlightning {py_mbps:.2f} MB/s; "
        f"peak RSS {peak_py:.0f} MiB; {json.loads(out_py)['rows']} rows",
        f"  same rows as oclagl: {'yes' if same else 'NO'}",
        f"ratio oclagl (all files) / seed pipeline: {mbps / py_e2e:.0f}x end to end, "
        f"{mbps / py_mbps:.0f}x without Python's import",
    ]
    print("\n".join(lines))
    if not same:
        sys.exit("oclagl and the seed pipeline wrote different rows")


if __name__ == "__main__":
    main()
