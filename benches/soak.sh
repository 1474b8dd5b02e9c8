#!/usr/bin/env bash
# Soak test: `oclagl serve` (release build) for 30 minutes under paced gRPC
# and HTTP load, SIGKILLed and restarted every 2 minutes, forwarding to a
# second `oclagl serve` that is SIGKILLed / restarted every 40 s; then a
# reconciliation of every acknowledged span against the sidecar's store, its
# trace files and the destination's store. Prints throughput, RSS per run of
# the sidecar and the reconciliation, keeps a copy in target/soak.txt, and
# exits 1 if an acknowledged span is missing.
#
#   benches/soak.sh                  # 30 minutes
#   SOAK_DURATION=120 benches/soak.sh
#
# Every SOAK_* setting is documented in benches/soak.rs. The work folder
# (target/soak, a few GB after 30 minutes, with each server's log) is
# removed after a passing run unless SOAK_KEEP=1, and kept after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin oclagl
cargo bench --bench soak --no-run
export OCLAGL_BIN="${OCLAGL_BIN:-$target/release/oclagl}"
out="$target/soak.txt"
echo "command: $0 (SOAK_DURATION=${SOAK_DURATION:-1800}) on $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores" | tee "$out"
status=0
cargo bench --bench soak 2>&1 | tee -a "$out" || status=$?
if [ "$status" = 0 ] && [ "${SOAK_KEEP:-0}" != 1 ]; then
    rm -rf "${SOAK_DIR:-$target/soak}"
fi
echo "(saved to $out)"
exit "$status"
