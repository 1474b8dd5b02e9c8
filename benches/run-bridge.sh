#!/usr/bin/env bash
# Benchmark of `oclagl bridge` against direct calls to a fake fork gateway.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
cargo bench --locked --bench bridge 2>/dev/null | tee target/bench-bridge.txt
