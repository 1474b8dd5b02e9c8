#!/usr/bin/env bash
# Export benchmark: `oclagl export-sft` over ~1 GB of generated seed-shaped
# trace files (time, MB/s, peak RSS, one CPU) with redaction (the default)
# and with --no-redact in alternating runs, the same on ~0.3 GB of
# code-shaped files (the redactor's worst case: every message gets past its
# prose filter), and the seed's pipeline (AGL's TraceToMessages in Python) on
# a ~10 MB slice of the same files in the same run: MB/s of both, the ratio,
# and a check that both wrote the same rows.
# Keeps a copy of the figures in target/bench-export.txt. Not run by CI.
#
#   benches/run-export.sh                              # 1 GB, 10 MB slice, 3 runs
#   BENCH_EXPORT_GB=0.2 BENCH_SLICE_MB=2 benches/run-export.sh
#   BENCH_CODE_GB=0 (no code-shaped set), BENCH_RUNS=5, BENCH_CPU=0 (default 1)
#
# Needs Rust and Python 3.11 with venv; installs agentlightning==0.3.0 into
# target/bench-agl-venv unless target/venv (made by tests/run.sh) has it.
# Data goes to target/bench-export/ (generated once, ~1 GB; delete to redo).
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"

python="${PYTHON:-python3}"
agl_python=""
for venv in "$target/venv" "$target/bench-agl-venv"; do
    if [ -x "$venv/bin/python" ] && LITELLM_LOCAL_MODEL_COST_MAP=True \
        "$venv/bin/python" -c "import agentlightning.adapter.messages" 2>/dev/null; then
        agl_python="$venv/bin/python"
        break
    fi
done
if [ -z "$agl_python" ]; then
    venv="$target/bench-agl-venv"
    echo "installing agentlightning==0.3.0 into $venv (first run only)" >&2
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check agentlightning==0.3.0
    agl_python="$venv/bin/python"
fi

cargo build --release --bin oclagl
export OCLAGL_BIN="${OCLAGL_BIN:-$target/release/oclagl}"
export AGL_PYTHON="$agl_python"

out="$target/bench-export.txt"
echo "command: $0 (BENCH_EXPORT_GB=${BENCH_EXPORT_GB:-1} BENCH_CODE_GB=${BENCH_CODE_GB:-0.3} BENCH_SLICE_MB=${BENCH_SLICE_MB:-10} BENCH_RUNS=${BENCH_RUNS:-3} BENCH_CPU=${BENCH_CPU:-1}) on $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs" | tee "$out"
"$python" benches/export_bench.py 2>&1 | tee -a "$out"
echo "(saved to $out)"
