#!/usr/bin/env bash
# Benchmark of the LLM proxy (oclagl serve --llm-proxy) against direct calls to
# the same local fake provider, same run, with a bare TCP relay as the floor;
# keeps a copy in target/bench-proxy.txt. Four runs:
#   - a provider that answers at once, 1 and 64 calls at a time (at 64 the
#     cores are saturated: every process in the path queues);
#   - a provider that takes 50 ms, 64 calls at a time, arriving spread over
#     the 50 ms, then all at the same instant (bursts of 64);
#   - the 50 ms provider, 1 call at a time (400 calls of each kind: 20 a second).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
cargo bench --locked --bench proxy --no-run 2>/dev/null
run() {
    echo
    echo "## $* (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    env "$@" cargo bench --locked --bench proxy 2>/dev/null
}
{
    run LATENCY_MS=0 CONCURRENCY=1,64
    run LATENCY_MS=50 CONCURRENCY=64
    run LATENCY_MS=50 CONCURRENCY=64 STAGGER=0
    run LATENCY_MS=50 CONCURRENCY=1 REQUESTS=400
} | tee target/bench-proxy.txt
