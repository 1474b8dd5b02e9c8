#!/usr/bin/env bash
# Benchmark of `oclagl collect` against a fake fork gateway with 200 ms
# latency: 500 prompts at concurrency 1, 8 and 64 (about two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
cargo bench --locked --bench collect 2>/dev/null | tee target/bench-collect.txt
