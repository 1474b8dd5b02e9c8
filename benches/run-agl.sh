#!/usr/bin/env bash
# Benchmark of oclagl's LLM proxy in front of AGL v1's per-rollout proxy (the
# calls' trace bound to an AGL rollout) against calling AGL's proxy directly,
# same run, 1 and 64 calls at a time; keeps a copy in target/bench-agl.txt.
# Needs AGL v1 in target/venv-agl1 (tests/install-agl1.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-agl1.sh
cargo build --release --locked
cargo bench --locked --bench agl --no-run 2>/dev/null
{
    echo "## load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    cargo bench --locked --bench agl 2>/dev/null
} | tee target/bench-agl.txt
