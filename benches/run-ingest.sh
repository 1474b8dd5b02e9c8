#!/usr/bin/env bash
# Ingest benchmark: oclagl (durable and --fsync false) against rotel's
# blackhole exporter, same load generator, same run; prints spans/s, peak RSS
# and the oclagl/rotel ratios, and keeps a copy in target/bench-ingest.txt.
#
#   benches/run-ingest.sh                 # 32 clients, 100 spans/request, 10 s
#   C=64 S=500 D=20 benches/run-ingest.sh # short names for the main knobs
#
# C, S, D map to BENCH_CLIENTS, BENCH_SPANS, BENCH_DURATION; every other
# BENCH_* / OCLAGL_ARGS / ROTEL_ARGS setting is documented in benches/ingest.rs.
# Needs Rust and Python 3 (with pip or venv); rotel comes from PyPI.
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"

if [ -n "${C:-}" ]; then export BENCH_CLIENTS="$C"; fi
if [ -n "${S:-}" ]; then export BENCH_SPANS="$S"; fi
if [ -n "${D:-}" ]; then export BENCH_DURATION="$D"; fi

python="${PYTHON:-python3}"
venv="$target/bench-venv"

# Where the installed rotel package keeps its rotel-agent binary.
find_rotel() {
    PYTHONPATH="$venv/site${PYTHONPATH:+:$PYTHONPATH}" "$1" - <<'EOF' 2>/dev/null
import os, rotel
path = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
print(path if os.access(path, os.X_OK) else "")
EOF
}

if [ -z "${ROTEL_BIN:-}" ]; then
    rotel_bin=""
    if [ -x "$venv/bin/python" ]; then
        rotel_bin="$(find_rotel "$venv/bin/python" || true)"
    elif [ -d "$venv/site" ]; then
        rotel_bin="$(find_rotel "$python" || true)"
    fi
    if [ -z "$rotel_bin" ]; then
        echo "installing rotel into $venv (pip install --pre rotel)" >&2
        if "$python" -m venv "$venv" >/dev/null 2>&1 && [ -x "$venv/bin/pip" ]; then
            "$venv/bin/pip" install --quiet --disable-pip-version-check --pre rotel
            rotel_bin="$(find_rotel "$venv/bin/python")"
        else
            # No working venv module (e.g. Debian without python3-venv):
            # install into a plain folder instead.
            rm -rf "$venv"
            "$python" -m pip install --quiet --disable-pip-version-check --pre \
                --target "$venv/site" rotel
            rotel_bin="$(find_rotel "$python")"
        fi
    fi
    if [ -z "$rotel_bin" ]; then
        echo "rotel installed, but its rotel-agent binary was not found" >&2
        exit 1
    fi
    ROTEL_BIN="$(cd "$(dirname "$rotel_bin")" && pwd)/$(basename "$rotel_bin")"
    export ROTEL_BIN
fi

cargo build --release --bin oclagl
cargo bench --bench ingest --no-run
export OCLAGL_BIN="${OCLAGL_BIN:-$target/release/oclagl}"

out="$target/bench-ingest.txt"
echo "command: ${0} (C=${BENCH_CLIENTS:-32} S=${BENCH_SPANS:-100} D=${BENCH_DURATION:-10}) on $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')" | tee "$out"
cargo bench --bench ingest 2>&1 | tee -a "$out"
echo "(saved to $out)"
