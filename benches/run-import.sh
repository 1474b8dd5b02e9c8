#!/usr/bin/env bash
# `oclagl import` throughput on generated trajectory bundles: copies of the
# real bundles in tests/data/trajectory (one two-tool run; one session of two
# runs) with fresh session and run ids, imported into a fresh local store
# (BENCH_RUNS runs, each printed), against the least any reader must do, in the
# same run: Python's json.loads of every line of every events.jsonl.
# Knobs: BENCH_BUNDLES (300), BENCH_RUNS (3), OCLAGL_BIN (the release build).
# Figures also go to target/bench-import.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLES=${BENCH_BUNDLES:-300}
RUNS=${BENCH_RUNS:-3}
if [ -z "${OCLAGL_BIN:-}" ]; then
  cargo build --release --locked
  OCLAGL_BIN=$PWD/target/release/oclagl
fi
WORK=target/bench-import
rm -rf "$WORK" && mkdir -p "$WORK/bundles"
python3 - "$WORK/bundles" "$BUNDLES" <<'EOF'
import os, pathlib, sys
out, n = pathlib.Path(sys.argv[1]), int(sys.argv[2])
fixtures = pathlib.Path("tests/data/trajectory")
# The first 8 hex digits of each session and run id, replaced by the copy's
# number: the ids stay unique and every file keeps its size (the manifest's).
ids = ["9860304b", "107e4efd", "5329d7a2", "821e93f0", "9a185399"]
for i in range(n):
    src = fixtures / ("openclaw-trajectory-two" if i % 2 == 0 else "openclaw-trajectory-multi")
    dst = out / f"openclaw-trajectory-{i:05d}"
    dst.mkdir()
    for f in src.iterdir():
        text = f.read_text()
        for j, old in enumerate(ids):
            text = text.replace(old, f"{i:05x}{j:03x}")
        (dst / f.name).write_text(text)
EOF
MB=$(du -sb "$WORK/bundles" | cut -f1)
{
  echo "oclagl import: $BUNDLES bundles, $((MB / 1000000)) MB, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
  for r in $(seq "$RUNS"); do
    rm -rf "$WORK/store" && mkdir -p "$WORK/store"
    (cd "$WORK/store" && "$OCLAGL_BIN" import --json ../bundles 2>/dev/null) |
      python3 -c 'import json,sys; s=json.load(sys.stdin); n,t,b=s["imported"],s["seconds"],s["bytes"]; print(f"import: {n} runs in {t:.3f} s: {n/t:.0f} runs/s, {b/1e6/t:.1f} MB/s")'
  done
  python3 - "$WORK/bundles" <<'EOF'
import json, pathlib, sys, time
files = sorted(pathlib.Path(sys.argv[1]).glob("*/events.jsonl"))
t = time.perf_counter()
size, runs = 0, set()
for f in files:
    data = f.read_bytes()
    size += len(data)
    for line in data.splitlines():
        e = json.loads(line)
        if "runId" in e:
            runs.add((e["sessionId"], e["runId"]))
t = time.perf_counter() - t
print(f"peer, json.loads of every event: {len(runs)} runs in {t:.3f} s: {len(runs)/t:.0f} runs/s, {size/1e6/t:.1f} MB/s of events.jsonl")
EOF
} | tee target/bench-import.txt
