#!/usr/bin/env bash
# Benchmark of the LLM proxy (oclagl serve --llm-proxy) against direct calls to
# the same local fake provider, same run; keeps a copy in target/bench-proxy.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
cargo bench --locked --bench proxy 2>/dev/null | tee target/bench-proxy.txt
