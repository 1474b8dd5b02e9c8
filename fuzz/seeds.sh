#!/usr/bin/env bash
# Regenerates the seed corpora under fuzz/corpus/: OTLP requests and the trace
# files the view builds from them (examples/seeds.rs), and the export test
# corpus of tests/py/export_seed.py as trace-file seeds, and the proxy's
# OpenAI bodies (proxy_seeds.py).
set -euo pipefail
cd "$(dirname "$0")"
rm -rf corpus
CARGO_TARGET_DIR=../target/fuzz-seeds cargo run --quiet --release --example seeds
python3 ../tests/py/export_seed.py corpus corpus/export_read >/dev/null
python3 proxy_seeds.py corpus/proxy_sse
ls corpus | while read -r t; do echo "$t: $(ls "corpus/$t" | wc -l) seeds"; done
