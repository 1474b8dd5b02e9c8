#!/usr/bin/env bash
# `oclagl ls` on a generated store of 100,000 rollouts (median of 5 runs per
# command) against `ls -l` of the same trace files, in the same run; the
# store is generated once under target/bench-inspect/. Figures also go to
# target/bench-inspect.txt. BENCH_ROLLOUTS and BENCH_RUNS: see benches/inspect.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
cargo bench --locked --bench inspect 2>/dev/null | tee target/bench-inspect.txt
