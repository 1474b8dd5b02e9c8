#!/usr/bin/env bash
# Installs Agent Lightning v1 (agentlightning 1.0.2, which needs Python >= 3.12)
# for tests/aglv1.rs into target/venv-agl1: pyenv's 3.12 when there is one,
# else a python3.12 on PATH. Skipped when it is there already.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/venv-agl1
if "$venv/bin/python" -c "import agentlightning, sys; assert agentlightning.__version__ == '1.0.2'" 2>/dev/null; then
  exit 0
fi
python=""
if command -v pyenv >/dev/null && [ -x "$(pyenv root)/versions/3.12.1/bin/python3.12" ]; then
  python="$(pyenv root)/versions/3.12.1/bin/python3.12"
elif command -v python3.12 >/dev/null; then
  python="$(command -v python3.12)"
else
  echo "tests/install-agl1.sh: agentlightning 1.0.2 needs Python 3.12: install it (pyenv install 3.12.1)" >&2
  exit 1
fi
echo "tests/install-agl1.sh: installing agentlightning==1.0.2 into $venv (first run only)"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet agentlightning==1.0.2
