#!/usr/bin/env bash
# The whole test suite, on a fresh machine with only Rust, Python 3.11 (and
# 3.12, e.g. from pyenv) and Node.
# Installs the peers the black-box tests use (the OpenTelemetry SDK as a real
# OTLP client, agentlightning 0.3.0 as the reference for AGL's span model and
# its store, rotel as a real OTLP collector between two sidecars,
# into target/venv; Agent Lightning v1, agentlightning 1.0.2, into
# target/venv-agl1; the real OpenClaw gateway from npm into target/openclaw),
# then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/venv
peers=(agentlightning==0.3.0 opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp==1.45.2 rotel==0.0.1a15)
if ! "$venv/bin/python" -c "import agentlightning, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http, rotel" 2>/dev/null; then
  echo "tests/run.sh: installing Python test peers into $venv (first run only)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "${peers[@]}"
fi

# Agent Lightning v1 for tests/aglv1.rs.
bash tests/install-agl1.sh

# The real OpenClaw gateway for tests/gateway.rs.
bash tests/install-openclaw.sh

cargo test --locked "$@"
